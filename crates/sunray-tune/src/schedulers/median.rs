//! Median stopping (Golovin et al., "Google Vizier", 2017), as Ray's
//! `MedianStoppingRule`: after the grace period, a trial whose best result is worse
//! than the median of the other trials' running means at the same time is stopped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{objective_setters, serde_restore, Decision, Objective, TrialScheduler};
use crate::result::{Mode, TrialResult};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MedianStopping {
    objective: Objective,
    grace_period: f64,
    min_samples_required: usize,
    /// Each trial's (time, score) history; scores are higher-is-better.
    history: BTreeMap<String, Vec<(f64, f64)>>,
    num_stopped: u64,
}

impl Default for MedianStopping {
    fn default() -> Self {
        Self::new()
    }
}

impl MedianStopping {
    /// Ray's defaults: `time_attr = time_total_s`, `grace_period = 60`,
    /// `min_samples_required = 3`.
    pub fn new() -> Self {
        MedianStopping {
            objective: Objective::new("time_total_s"),
            grace_period: 60.0,
            min_samples_required: 3,
            history: BTreeMap::new(),
            num_stopped: 0,
        }
    }
    objective_setters!();
    pub fn grace_period(mut self, t: f64) -> Self {
        self.grace_period = t;
        self
    }
    pub fn min_samples_required(mut self, n: usize) -> Self {
        self.min_samples_required = n;
        self
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl TrialScheduler for MedianStopping {
    fn name(&self) -> &'static str {
        "MedianStopping"
    }
    fn set_metric(&mut self, metric: &str, mode: Mode) {
        self.objective.default_to(metric, mode);
    }
    fn validate(&self) -> Result<(), String> {
        self.objective.require("MedianStopping")
    }
    fn on_trial_result(&mut self, trial: &str, r: &TrialResult) -> Decision {
        let Some((t, v)) = self.objective.read(r) else {
            return Decision::Continue;
        };
        self.history
            .entry(trial.to_string())
            .or_default()
            .push((t, v));
        if t < self.grace_period {
            return Decision::Continue;
        }
        let mut means: Vec<f64> = self
            .history
            .iter()
            .filter(|(id, _)| id.as_str() != trial)
            .filter_map(|(_, h)| {
                let upto: Vec<f64> = h
                    .iter()
                    .filter(|(ht, _)| *ht <= t)
                    .map(|(_, v)| *v)
                    .collect();
                (!upto.is_empty()).then(|| upto.iter().sum::<f64>() / upto.len() as f64)
            })
            .collect();
        if means.len() < self.min_samples_required {
            return Decision::Continue;
        }
        let med = median(&mut means);
        let best = self.history[trial]
            .iter()
            .map(|(_, v)| *v)
            .fold(f64::MIN, f64::max);
        // Scores are higher-is-better: a best below the others' median stops.
        if med > best {
            self.num_stopped += 1;
            Decision::Stop
        } else {
            Decision::Continue
        }
    }
    fn status(&self) -> Vec<String> {
        vec![format!(
            "Using MedianStoppingRule: num_stopped={}",
            self.num_stopped
        )]
    }
    fn save(&self) -> Value {
        serde_json::to_value(self).expect("plain data")
    }
    fn restore(&mut self, state: Value) -> Result<(), String> {
        serde_restore(self, state, "MedianStopping")
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::res;
    use super::*;

    fn rule() -> MedianStopping {
        MedianStopping::new()
            .time_attr("training_iteration")
            .grace_period(2.0)
            .min_samples_required(2)
            .metric("acc", Mode::Max)
    }

    #[test]
    fn a_trial_worse_than_the_median_of_running_means_stops_after_the_grace_period() {
        let mut m = rule();
        for (id, vals) in [("a", [0.5, 0.7, 0.9]), ("b", [0.4, 0.6, 0.8])] {
            for (i, v) in vals.iter().enumerate() {
                assert_eq!(
                    m.on_trial_result(id, &res(i as u64 + 1, "acc", *v)),
                    Decision::Continue
                );
            }
        }
        // c: iteration 1 is inside the grace period, whatever its value.
        assert_eq!(
            m.on_trial_result("c", &res(1, "acc", 0.0)),
            Decision::Continue
        );
        // At t=2 the others' running means are 0.6 and 0.5: median 0.55; c's best 0.5.
        assert_eq!(m.on_trial_result("c", &res(2, "acc", 0.5)), Decision::Stop);
        // d's best (0.56) beats the median: goes on.
        m.on_trial_result("d", &res(1, "acc", 0.56));
        assert_eq!(
            m.on_trial_result("d", &res(2, "acc", 0.1)),
            Decision::Continue
        );
    }

    #[test]
    fn too_few_other_trials_means_no_decision() {
        let mut m = rule();
        m.on_trial_result("a", &res(3, "acc", 0.9));
        assert_eq!(
            m.on_trial_result("b", &res(3, "acc", 0.0)),
            Decision::Continue
        );
    }

    #[test]
    fn min_mode_stops_the_higher_losses() {
        let mut m = MedianStopping::new()
            .time_attr("training_iteration")
            .grace_period(1.0)
            .min_samples_required(1)
            .metric("loss", Mode::Min);
        m.on_trial_result("a", &res(1, "loss", 1.0));
        assert_eq!(m.on_trial_result("b", &res(1, "loss", 2.0)), Decision::Stop);
        assert_eq!(
            m.on_trial_result("c", &res(1, "loss", 0.5)),
            Decision::Continue
        );
    }
}
