use std::io;

/// Errors of the runtime. Each says what went wrong and, where it can, what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach head at {address}: {source}")]
    Unreachable {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("head at {address} refused the connection: {reason}")]
    Refused { address: String, reason: String },
    #[error("lost the connection to the head at {address}: {reason}")]
    Disconnected { address: String, reason: String },
    #[error("protocol error with {peer}: {message}")]
    Protocol { peer: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("timed out: {0}")]
    Timeout(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
