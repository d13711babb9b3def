//! sunray-tune: Ray Tune in Rust. Search spaces, searchers and trial schedulers are
//! pure state machines; the controller runs trials as sunray tasks and keeps the
//! experiment on disk, laid out as Ray Tune lays it out.

pub mod result;
pub mod schedulers;
pub mod search;
pub mod space;

pub use result::{Mode, TrialId, TrialResult};
pub use space::*;
