use std::io;

/// Errors of the runtime. Each says what went wrong and, where it can, what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The cause is part of the message and not a `#[source]`, so that a report of the
    // whole chain (`{:#}`) says it once.
    #[error("cannot reach head at {address}: {cause}")]
    Unreachable { address: String, cause: io::Error },
    #[error("head at {address} refused the connection: {reason}")]
    Refused { address: String, reason: String },
    #[error("lost the connection to the head at {address}: {reason}")]
    Disconnected { address: String, reason: String },
    #[error("protocol error with {peer}: {message}")]
    Protocol { peer: String, message: String },
    #[error("{context}: {cause}")]
    Io { context: String, cause: io::Error },
    #[error("{0}")]
    Config(String),
    #[error("timed out: {0}")]
    Timeout(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            cause: source,
        }
    }
}
