//! The async shell of sunray: the head, the node agent, the worker loop and the driver's
//! client. Decisions are made by `sunray-sched`; this crate only moves messages between
//! that core, processes and sockets.

mod actors;
pub mod detect;
pub mod driver;
mod error;
pub mod head;
pub mod local;
mod logs;
pub mod node;
mod node_core;
pub mod objects;
mod results;
pub mod session;
pub mod wire;
pub mod worker;

pub use error::Error;

/// Environment variables that sunray reads or sets.
pub mod env {
    /// Address of the head a driver or node connects to ("host:port").
    pub const ADDRESS: &str = "SUNRAY_ADDRESS";
    /// The cluster token, when not found in a session directory.
    pub const TOKEN: &str = "SUNRAY_TOKEN";
    /// A session directory shared between hosts (holds `token` and `address`).
    pub const SESSION_DIR: &str = "SUNRAY_SESSION_DIR";
    /// Where per-user session directories live (default `/tmp/sunray-<uid>`).
    pub const TMPDIR: &str = "SUNRAY_TMPDIR";
    /// `0`: a driver on the head's host connects over TCP, not the head's Unix socket.
    pub const LOCAL_SOCKET: &str = "SUNRAY_LOCAL_SOCKET";
    /// Set by node agents in the processes they start as workers.
    pub const WORKER_SOCKET: &str = "SUNRAY_WORKER_SOCKET";
    pub const WORKER_ID: &str = "SUNRAY_WORKER_ID";
    /// Most workers a node keeps for tasks blocked in `get`/`wait` (default: 16 per
    /// CPU, at least 256, at most 4096); past it tasks wait for a worker to come free.
    pub const MAX_BLOCKED_WORKERS: &str = "SUNRAY_MAX_BLOCKED_WORKERS";
    /// The pipe a worker reads its start secrets from (never the secrets themselves).
    pub const WORKER_SECRET_FD: &str = "SUNRAY_WORKER_SECRET_FD";
    pub const WORKER_REGISTRY: &str = "SUNRAY_WORKER_REGISTRY";
    /// The head's address, for a worker whose task submits tasks.
    pub const WORKER_HEAD: &str = "SUNRAY_WORKER_HEAD";
    /// A worker's node's object server (where its large `put`s go).
    pub const WORKER_STORE: &str = "SUNRAY_WORKER_STORE";
    /// Seconds without a word from a peer after which it counts as gone (default 30):
    /// the head declares a silent node dead; a node or driver gives up on a silent head.
    pub const HEARTBEAT_TIMEOUT: &str = "SUNRAY_HEARTBEAT_TIMEOUT";
    /// Largest message, in MiB, an authenticated peer may send (default 1024).
    pub const MAX_MESSAGE_MB: &str = "SUNRAY_MAX_MESSAGE_MB";
    /// `0`: actor calls always go through the head (no direct calls); `tcp`: direct
    /// calls over TCP even to a node on the caller's host (both for comparison).
    pub const DIRECT_CALLS: &str = "SUNRAY_DIRECT_CALLS";
    /// Set by the Python package's `sunray` command to its `sys.path`: node agents it
    /// starts keep one Python worker per CPU started ahead (this interpreter, this
    /// path), which a Python driver with the same interpreter and path adopts.
    pub const PRESTART_PYTHON_PATH: &str = "SUNRAY_PRESTART_PYTHON_PATH";
}

/// Default of [`env::HEARTBEAT_TIMEOUT`].
pub const DEFAULT_HEARTBEAT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a peer may stay silent (see [`env::HEARTBEAT_TIMEOUT`]); heartbeats go every
/// second, so anything above a few seconds tolerates a busy peer.
pub fn heartbeat_timeout() -> std::time::Duration {
    std::env::var(env::HEARTBEAT_TIMEOUT)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| std::time::Duration::from_secs_f64(s.min(1e6)))
        .unwrap_or(DEFAULT_HEARTBEAT_TIMEOUT)
}

/// Returns the allocator's free memory to the system (glibc keeps it otherwise: a head
/// that ran a million tasks would hold their memory for good).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}
