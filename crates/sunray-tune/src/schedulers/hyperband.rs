//! Synchronous HyperBand (Li et al., "Hyperband", JMLR 2018): trials are grouped in
//! brackets; every trial of a bracket runs to the bracket's current milestone and
//! pauses there; when all have arrived, the best `1/eta` go on to the next milestone
//! (`eta` times longer) and the others stop.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{objective_setters, serde_restore, Decision, Objective, TrialScheduler};
use crate::result::{Mode, TrialResult};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
enum Slot {
    /// Running towards the current milestone.
    Running,
    /// Reached the milestone with this score; paused unless it is the reporter.
    Arrived(f64),
    /// Promoted to the next milestone while paused: waits to be resumed.
    Promoted,
    Done,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bracket {
    size: usize,
    milestone: f64,
    trials: BTreeMap<String, Slot>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HyperBand {
    objective: Objective,
    max_t: f64,
    eta: f64,
    brackets: Vec<Bracket>,
    /// Bracket index of each trial.
    of: BTreeMap<String, usize>,
    to_stop: Vec<String>,
    num_stopped: u64,
}

impl Default for HyperBand {
    fn default() -> Self {
        Self::new()
    }
}

impl HyperBand {
    /// Ray's defaults: `time_attr = training_iteration`, `max_t = 81`, `eta = 3`.
    pub fn new() -> Self {
        HyperBand {
            objective: Objective::new("training_iteration"),
            max_t: 81.0,
            eta: 3.0,
            brackets: Vec::new(),
            of: BTreeMap::new(),
            to_stop: Vec::new(),
            num_stopped: 0,
        }
    }
    objective_setters!();
    pub fn max_t(mut self, t: f64) -> Self {
        self.max_t = t;
        self
    }
    pub fn reduction_factor(mut self, eta: f64) -> Self {
        self.eta = eta;
        self
    }
    fn s_max(&self) -> usize {
        ((self.max_t.ln() / self.eta.ln()) + 1e-9).floor() as usize
    }
    /// Bracket number `k` (0, 1, ...) has s = s_max - (k mod (s_max+1)): n trials
    /// starting at r = max_t * eta^-s, as in the paper's Algorithm 1.
    fn new_bracket(&self, k: usize) -> Bracket {
        let s_max = self.s_max();
        let s = s_max - (k % (s_max + 1));
        let n = (((s_max + 1) as f64 / (s + 1) as f64) * self.eta.powi(s as i32)).ceil() as usize;
        Bracket {
            size: n,
            milestone: (self.max_t * self.eta.powi(-(s as i32))).max(1.0),
            trials: BTreeMap::new(),
        }
    }
    /// When every live trial of bracket `b` has arrived: keep the best 1/eta.
    fn maybe_halve(&mut self, b: usize) -> bool {
        let br = &mut self.brackets[b];
        let arrived: Vec<(String, f64)> = br
            .trials
            .iter()
            .filter_map(|(id, s)| match s {
                Slot::Arrived(v) => Some((id.clone(), *v)),
                _ => None,
            })
            .collect();
        let waiting = br
            .trials
            .values()
            .any(|s| matches!(s, Slot::Running | Slot::Promoted));
        if waiting || arrived.is_empty() {
            return false;
        }
        let mut ranked = arrived;
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let keep = ((ranked.len() as f64 / self.eta).floor() as usize).max(1);
        for (i, (id, _)) in ranked.iter().enumerate() {
            let slot = br.trials.get_mut(id).expect("listed");
            if i < keep {
                *slot = Slot::Promoted;
            } else {
                *slot = Slot::Done;
                self.to_stop.push(id.clone());
                self.num_stopped += 1;
            }
        }
        br.milestone = (br.milestone * self.eta).min(self.max_t);
        true
    }
}

impl TrialScheduler for HyperBand {
    fn name(&self) -> &'static str {
        "HyperBand"
    }
    fn set_metric(&mut self, metric: &str, mode: Mode) {
        self.objective.default_to(metric, mode);
    }
    fn validate(&self) -> Result<(), String> {
        if self.eta <= 1.0 || self.max_t < 1.0 {
            return Err("HyperBand: reduction_factor must be > 1 and max_t >= 1".into());
        }
        self.objective.require("HyperBand")
    }
    fn on_trial_add(&mut self, trial: &str, _: &crate::space::Config) {
        let full = self
            .brackets
            .last()
            .is_none_or(|b| b.trials.len() >= b.size);
        if full {
            let b = self.new_bracket(self.brackets.len());
            self.brackets.push(b);
        }
        let b = self.brackets.len() - 1;
        self.brackets[b]
            .trials
            .insert(trial.to_string(), Slot::Running);
        self.of.insert(trial.to_string(), b);
    }
    fn on_trial_result(&mut self, trial: &str, r: &TrialResult) -> Decision {
        let (Some(&b), Some((t, score))) = (self.of.get(trial), self.objective.read(r)) else {
            return Decision::Continue;
        };
        if t >= self.max_t {
            self.brackets[b]
                .trials
                .insert(trial.to_string(), Slot::Done);
            self.maybe_halve(b);
            return Decision::Stop;
        }
        if t < self.brackets[b].milestone {
            return Decision::Continue;
        }
        self.brackets[b]
            .trials
            .insert(trial.to_string(), Slot::Arrived(score));
        if self.maybe_halve(b) {
            // The reporter is running: it goes on now instead of pausing.
            if self.brackets[b].trials[trial] == Slot::Promoted {
                self.brackets[b]
                    .trials
                    .insert(trial.to_string(), Slot::Running);
                return Decision::Continue;
            }
            self.to_stop.retain(|t| t != trial);
            return Decision::Stop;
        }
        Decision::Pause
    }
    fn on_trial_complete(&mut self, trial: &str, _: Option<&TrialResult>) {
        self.on_trial_error(trial)
    }
    fn on_trial_error(&mut self, trial: &str) {
        if let Some(&b) = self.of.get(trial) {
            self.brackets[b]
                .trials
                .insert(trial.to_string(), Slot::Done);
            self.maybe_halve(b);
        }
    }
    fn choose_trial_to_run(&mut self, waiting: &[(String, bool)]) -> Option<String> {
        let promoted = waiting.iter().find(|(id, paused)| {
            *paused
                && self
                    .of
                    .get(id)
                    .is_some_and(|b| self.brackets[*b].trials[id] == Slot::Promoted)
        });
        if let Some((id, _)) = promoted {
            let b = self.of[id];
            self.brackets[b].trials.insert(id.clone(), Slot::Running);
            return Some(id.clone());
        }
        waiting
            .iter()
            .find(|(_, paused)| !paused)
            .map(|(id, _)| id.clone())
    }
    fn take_stopped(&mut self) -> Vec<String> {
        std::mem::take(&mut self.to_stop)
    }
    fn status(&self) -> Vec<String> {
        let mut out = vec![format!("Using HyperBand: num_stopped={}", self.num_stopped)];
        for (i, b) in self.brackets.iter().enumerate() {
            let live = b.trials.values().filter(|s| **s != Slot::Done).count();
            out.push(format!(
                "Bracket {i}: milestone {}, {live} live of {} trials",
                b.milestone,
                b.trials.len()
            ));
        }
        out
    }
    fn save(&self) -> Value {
        serde_json::to_value(self).expect("plain data")
    }
    fn restore(&mut self, state: Value) -> Result<(), String> {
        serde_restore(self, state, "HyperBand")
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::res;
    use super::*;
    use crate::space::Config;

    #[test]
    fn brackets_follow_the_papers_table_for_max_t_81_eta_3() {
        let hb = HyperBand::new();
        assert_eq!(hb.s_max(), 4);
        let shapes: Vec<(usize, f64)> = (0..5)
            .map(|k| {
                let b = hb.new_bracket(k);
                (b.size, b.milestone)
            })
            .collect();
        // Li et al., Table 1: (n, r) = (81,1) (34,3) (15,9) (8,27) (5,81).
        assert_eq!(
            shapes,
            vec![(81, 1.0), (34, 3.0), (15, 9.0), (8, 27.0), (5, 81.0)]
        );
    }

    /// Bracket of 9 trials, eta 3, max_t 9: milestones 1, 3, 9. Everyone pauses at 1
    /// until the last arrives; then the best 3 go on and 6 stop; at 3 the best one.
    #[test]
    fn trials_pause_at_the_milestone_and_the_best_third_go_on() {
        let mut hb = HyperBand::new().max_t(9.0).metric("acc", Mode::Max);
        let ids: Vec<String> = (0..9).map(|i| format!("t{i}")).collect();
        ids.iter()
            .for_each(|t| hb.on_trial_add(t, &Config::default()));
        assert_eq!(hb.brackets[0].size, 9);
        for (i, id) in ids.iter().enumerate().take(8) {
            assert_eq!(
                hb.on_trial_result(id, &res(1, "acc", i as f64)),
                Decision::Pause
            );
        }
        // The last arrival has the worst score: it stops; t5..t7 promoted, t0..t4 stop.
        assert_eq!(
            hb.on_trial_result("t8", &res(1, "acc", -1.0)),
            Decision::Stop
        );
        let mut stopped = hb.take_stopped();
        stopped.sort();
        assert_eq!(stopped, ["t0", "t1", "t2", "t3", "t4"]);
        let waiting: Vec<(String, bool)> = ids[..8].iter().map(|t| (t.clone(), true)).collect();
        let mut resumed = Vec::new();
        while let Some(t) = hb.choose_trial_to_run(&waiting) {
            if resumed.contains(&t) {
                break;
            }
            resumed.push(t);
        }
        assert_eq!(resumed, ["t5", "t6", "t7"]);
        assert_eq!(
            hb.on_trial_result("t5", &res(3, "acc", 1.0)),
            Decision::Pause
        );
        assert_eq!(
            hb.on_trial_result("t6", &res(3, "acc", 3.0)),
            Decision::Pause
        );
        assert_eq!(
            hb.on_trial_result("t7", &res(3, "acc", 2.0)),
            Decision::Stop
        );
        assert_eq!(hb.take_stopped(), ["t5"]);
        assert_eq!(
            hb.choose_trial_to_run(&[("t6".into(), true)]),
            Some("t6".into())
        );
        assert_eq!(
            hb.on_trial_result("t6", &res(9, "acc", 3.0)),
            Decision::Stop
        );
    }

    #[test]
    fn a_failed_trial_does_not_hold_its_bracket_back() {
        let mut hb = HyperBand::new().max_t(9.0).metric("acc", Mode::Max);
        for t in ["a", "b", "c"] {
            hb.on_trial_add(t, &Config::default());
        }
        assert_eq!(
            hb.on_trial_result("a", &res(1, "acc", 1.0)),
            Decision::Pause
        );
        assert_eq!(
            hb.on_trial_result("b", &res(1, "acc", 0.0)),
            Decision::Pause
        );
        hb.on_trial_error("c");
        assert_eq!(hb.take_stopped(), ["b"]);
        assert_eq!(
            hb.choose_trial_to_run(&[("a".into(), true), ("b".into(), true)]),
            Some("a".into())
        );
    }
}
