//! The scheduling core of sunray: plain data structures fed with events and asked for
//! decisions. No I/O, no clock, no async: the head and node agents drive it, tests drive it
//! with generated events.
//!
//! - [`ResourceSet`]: amounts in fixed point (1/10,000), so that fractions add up exactly.
//! - [`NodeLedger`]: what one node has free, and which GPU ids a task gets.
//! - [`Scheduler`]: the head's view: nodes, a queue per resource shape, placement, and
//!   pipelining of short tasks.
//! - [`plan_group`]: where a placement group's bundles go under each [`Strategy`].
//! - [`Successors`]: a node's view of pipelining: which task starts when another ends.

mod groups;
mod ledger;
mod resources;
mod scheduler;
mod successors;

pub use groups::{plan as plan_group, Strategy};
pub use ledger::{Allocation, NodeLedger};
pub use resources::{ResourceSet, UNIT};
pub use scheduler::{GroupId, InGroup, NodeId, Pipelining, Placement, Scheduler, TaskId};
pub use successors::Successors;
