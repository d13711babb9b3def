//! The async shell of sunray: the head, the node agent, the worker loop and the driver's
//! client. Decisions are made by `sunray-sched`; this crate only moves messages between
//! that core, processes and sockets.

pub mod detect;
pub mod driver;
mod error;
pub mod head;
pub mod local;
pub mod node;
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
    pub const WORKER_TOKEN: &str = "SUNRAY_WORKER_TOKEN";
    pub const WORKER_REGISTRY: &str = "SUNRAY_WORKER_REGISTRY";
}
