//! sunray's dashboard: a page served on loopback (by `sunray dashboard`, or a head
//! started with `--dashboard-port`) showing the cluster live and every Tune
//! experiment under the results directories: trials, learning curves with ASHA's
//! rungs, config against the metric. Self-contained (no CDN: clusters are often
//! offline); reached from a laptop through `ssh -L`.

pub mod experiments;
pub mod plot;
mod server;
pub mod throttle;

pub use server::{csp_hash, inline_hashes, serve, Options, CONTENT_SECURITY_POLICY, SESSION_TTL};
