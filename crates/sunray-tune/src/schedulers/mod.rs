//! Trial schedulers: pure state machines fed with trial events (no clock, no I/O) that
//! answer whether a trial goes on, stops, pauses or restarts from another's checkpoint.

mod asha;
mod hyperband;
mod median;
mod pbt;
#[cfg(test)]
pub(crate) mod sim;

pub use asha::Asha;
pub use hyperband::HyperBand;
pub use median::MedianStopping;
pub use pbt::{Mutation, Pbt};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::result::{Mode, TrialId, TrialResult};
use crate::space::Config;

/// What the scheduler wants done with a trial that just reported.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Continue,
    /// End the trial now (early stopping); it counts as terminated, not failed.
    Stop,
    /// End the task but keep the trial; it resumes from its last checkpoint when
    /// [`TrialScheduler::choose_trial_to_run`] picks it.
    Pause,
    /// PBT's exploit: go on with `config`, from the latest checkpoint of `from`.
    Restart {
        config: Config,
        from: TrialId,
    },
}

/// The interface the controller drives. Every method is a pure decision on the events
/// given so far.
pub trait TrialScheduler: Send {
    /// Short name for status lines and for checking a restored experiment.
    fn name(&self) -> &'static str;
    /// The experiment's metric and mode, for schedulers built without their own.
    fn set_metric(&mut self, metric: &str, mode: Mode);
    /// Wrong settings, said plainly.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    fn on_trial_add(&mut self, _trial: &str, _config: &Config) {}
    fn on_trial_result(&mut self, trial: &str, result: &TrialResult) -> Decision;
    /// The trial ended by itself (or by a stop criterion) after `last`.
    fn on_trial_complete(&mut self, _trial: &str, _last: Option<&TrialResult>) {}
    /// The trial failed for good.
    fn on_trial_error(&mut self, _trial: &str) {}
    /// Which of the waiting trials (`(id, paused)`, oldest first) to start now, if any.
    fn choose_trial_to_run(&mut self, waiting: &[(TrialId, bool)]) -> Option<TrialId> {
        waiting.first().map(|(t, _)| t.clone())
    }
    /// Paused trials the scheduler has decided to end (synchronous HyperBand).
    fn take_stopped(&mut self) -> Vec<TrialId> {
        Vec::new()
    }
    /// Lines for the status report (e.g. ASHA's rung cut-offs).
    fn status(&self) -> Vec<String> {
        Vec::new()
    }
    fn save(&self) -> Value;
    fn restore(&mut self, state: Value) -> Result<(), String>;
}

/// First in, first out: every trial runs to the end (or its stop criterion).
#[derive(Debug, Default, Clone)]
pub struct Fifo;

impl TrialScheduler for Fifo {
    fn name(&self) -> &'static str {
        "FIFO"
    }
    fn set_metric(&mut self, _: &str, _: Mode) {}
    fn on_trial_result(&mut self, _: &str, _: &TrialResult) -> Decision {
        Decision::Continue
    }
    fn save(&self) -> Value {
        Value::Null
    }
    fn restore(&mut self, _: Value) -> Result<(), String> {
        Ok(())
    }
}

/// What a scheduler judges by: when (`time_attr`) and how good (`metric`, `mode`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Objective {
    pub time_attr: String,
    pub metric: Option<String>,
    pub mode: Option<Mode>,
}

impl Objective {
    pub fn new(time_attr: &str) -> Self {
        Objective {
            time_attr: time_attr.into(),
            metric: None,
            mode: None,
        }
    }
    /// The experiment's metric, unless the scheduler was given its own.
    pub fn default_to(&mut self, metric: &str, mode: Mode) {
        if self.metric.is_none() {
            self.metric = Some(metric.into());
            self.mode = Some(mode);
        }
    }
    /// A result's time and score (higher is better), when it has both.
    pub fn read(&self, r: &TrialResult) -> Option<(f64, f64)> {
        let score = self.mode?.score(r.get(self.metric.as_deref()?)?);
        Some((r.get(&self.time_attr)?, score))
    }
    pub fn require(&self, scheduler: &str) -> Result<(), String> {
        match self.metric {
            Some(_) => Ok(()),
            None => Err(format!(
                "{scheduler} needs a metric and mode (set them in TuneConfig)"
            )),
        }
    }
}

/// The `time_attr` and `metric` builder methods of a scheduler with an `objective`.
macro_rules! objective_setters {
    () => {
        /// The result field that measures progress (`training_iteration`, `time_total_s`).
        pub fn time_attr(mut self, a: &str) -> Self {
            self.objective.time_attr = a.into();
            self
        }
        /// This scheduler's own metric and mode (default: the experiment's).
        pub fn metric(mut self, m: &str, mode: Mode) -> Self {
            self.objective.metric = Some(m.into());
            self.objective.mode = Some(mode);
            self
        }
    };
}
pub(crate) use objective_setters;

/// numpy's default (linear) percentile of unsorted values; None when empty.
pub(crate) fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN left"));
    let rank = p / 100.0 * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (rank - lo as f64))
}

pub(crate) fn serde_restore<T: serde::de::DeserializeOwned>(
    slot: &mut T,
    state: Value,
    name: &str,
) -> Result<(), String> {
    *slot = serde_json::from_value(state)
        .map_err(|e| format!("the saved {name} state does not fit this scheduler: {e}"))?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use std::collections::BTreeMap;

    pub fn res(iter: u64, metric: &str, v: f64) -> TrialResult {
        TrialResult {
            training_iteration: iter,
            time_total_s: iter as f64,
            metrics: BTreeMap::from([(metric.to_string(), v)]),
        }
    }

    #[test]
    fn percentile_interpolates_linearly_as_numpy() {
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.5));
        assert_eq!(percentile(&[4.0, 1.0, 3.0, 2.0], 75.0), Some(3.25));
        assert_eq!(percentile(&[7.0], 50.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
