//! sunray-tune: Ray Tune in Rust. Search spaces, searchers and trial schedulers are
//! pure state machines; the controller runs each trial as a sunray task and keeps the
//! experiment on disk, laid out as Ray Tune lays it out, so that it can be resumed.

mod cluster;
pub mod config;
mod controller;
mod reporter;
pub mod result;
mod result_grid;
pub mod schedulers;
pub mod search;
pub mod space;
mod storage;
mod trainable;

pub use cluster::TrialCluster;
pub use config::{CheckpointConfig, RunConfig, Stop, TuneConfig};
pub use controller::{Status, Tuner};
pub use result::{Mode, TrialId, TrialResult};
pub use result_grid::{ResultGrid, TrialRecord};
pub use schedulers::{
    Asha, Decision, Fifo, HyperBand, MedianStopping, Mutation, Pbt, TrialScheduler,
};
pub use search::{BasicVariantGenerator, ConcurrencyLimiter, Searcher, Suggestion, Tpe};
pub use space::*;
pub use trainable::{Checkpoint, Session, Stopped, TrainFn, TrainResult, TrainableEntry};

/// Re-exports for `register_trainable!`; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
}

/// Errors of a tuning run; each says what was wrong and what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TuneError {
    #[error("invalid tuning setup: {0}")]
    Config(String),
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("{0}")]
    Io(String),
    #[error("experiment files: {0}")]
    Corrupt(String),
}
