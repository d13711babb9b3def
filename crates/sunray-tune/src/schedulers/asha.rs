//! Asynchronous Successive Halving (Li et al., "A System for Massively Parallel
//! Hyperparameter Tuning", 2020), with Ray's `AsyncHyperBandScheduler` semantics:
//! a trial reaching a rung is stopped when its score is below the rung's
//! `1 - 1/reduction_factor` percentile of the scores recorded there before it.

use std::collections::{BTreeMap, HashMap};

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{objective_setters, percentile, serde_restore, Decision, Objective, TrialScheduler};
use crate::result::{rng_at, Mode, TrialResult};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rung {
    milestone: f64,
    /// Score (higher is better) of each trial that reached this rung.
    recorded: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bracket {
    /// Highest milestone first, as Ray checks them.
    rungs: Vec<Rung>,
}

impl Bracket {
    fn new(min_t: f64, max_t: f64, rf: f64, s: usize) -> Self {
        // Ray's expression to the letter, rounding included: `int(log(max_t / min_t) /
        // log(rf) - s + 1)`. So 243/1/3 has 5 rungs (log gives 4.999…, no rung at max_t)
        // while 729/1/3 has 7 (log gives 6.0 exactly).
        let rungs_here = ((max_t / min_t).ln() / rf.ln() - s as f64 + 1.0) as usize;
        let rungs = (0..rungs_here)
            .rev()
            .map(|k| Rung {
                milestone: min_t * rf.powi((k + s) as i32),
                recorded: BTreeMap::new(),
            })
            .collect();
        Bracket { rungs }
    }

    /// Records the trial at the highest rung it reached and has not recorded yet; stops
    /// it if it falls below that rung's cut-off.
    fn on_result(&mut self, trial: &str, t: f64, score: f64, rf: f64) -> Decision {
        for rung in &mut self.rungs {
            if t < rung.milestone || rung.recorded.contains_key(trial) {
                continue;
            }
            let values: Vec<f64> = rung.recorded.values().copied().collect();
            let cutoff = percentile(&values, (1.0 - 1.0 / rf) * 100.0);
            rung.recorded.insert(trial.to_string(), score);
            return match cutoff {
                Some(c) if score < c => Decision::Stop,
                _ => Decision::Continue,
            };
        }
        Decision::Continue
    }
}

/// ASHA; build with [`Asha::new`] and the setters (Ray's defaults otherwise).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Asha {
    objective: Objective,
    max_t: f64,
    grace_period: f64,
    reduction_factor: f64,
    num_brackets: usize,
    stop_last_trials: bool,
    seed: u64,
    brackets: Vec<Bracket>,
    trial_bracket: HashMap<String, usize>,
    added: u64,
    num_stopped: u64,
}

impl Default for Asha {
    fn default() -> Self {
        Self::new()
    }
}

impl Asha {
    /// Ray's defaults: `time_attr = training_iteration`, `max_t = 100`,
    /// `grace_period = 1`, `reduction_factor = 4`, one bracket.
    pub fn new() -> Self {
        Asha {
            objective: Objective::new("training_iteration"),
            max_t: 100.0,
            grace_period: 1.0,
            reduction_factor: 4.0,
            num_brackets: 1,
            stop_last_trials: true,
            seed: 0,
            brackets: Vec::new(),
            trial_bracket: HashMap::new(),
            added: 0,
            num_stopped: 0,
        }
    }
    objective_setters!();
    pub fn max_t(mut self, t: f64) -> Self {
        self.max_t = t;
        self
    }
    pub fn grace_period(mut self, t: f64) -> Self {
        self.grace_period = t;
        self
    }
    pub fn reduction_factor(mut self, rf: f64) -> Self {
        self.reduction_factor = rf;
        self
    }
    pub fn brackets(mut self, n: usize) -> Self {
        self.num_brackets = n;
        self
    }
    /// Stop trials at `max_t` (Ray's default: true).
    pub fn stop_last_trials(mut self, yes: bool) -> Self {
        self.stop_last_trials = yes;
        self
    }
    /// Seed of the bracket draws (several brackets only).
    pub fn seed(mut self, s: u64) -> Self {
        self.seed = s;
        self
    }
    fn ensure_brackets(&mut self) {
        if self.brackets.is_empty() {
            self.brackets = (0..self.num_brackets)
                .map(|s| Bracket::new(self.grace_period, self.max_t, self.reduction_factor, s))
                .collect();
        }
    }
    /// Milestones of bracket 0, lowest first (for tests and the status line).
    pub fn milestones(&mut self) -> Vec<f64> {
        self.ensure_brackets();
        self.brackets[0]
            .rungs
            .iter()
            .rev()
            .map(|r| r.milestone)
            .collect()
    }
}

impl TrialScheduler for Asha {
    fn name(&self) -> &'static str {
        "AsyncHyperBand"
    }
    fn set_metric(&mut self, metric: &str, mode: Mode) {
        self.objective.default_to(metric, mode);
    }
    fn validate(&self) -> Result<(), String> {
        if self.grace_period <= 0.0 {
            return Err("ASHA: grace_period must be > 0".into());
        }
        if self.max_t < self.grace_period {
            return Err(format!(
                "ASHA: max_t ({}) must be at least grace_period ({})",
                self.max_t, self.grace_period
            ));
        }
        if self.reduction_factor <= 1.0 {
            return Err("ASHA: reduction_factor must be > 1".into());
        }
        if self.num_brackets == 0 {
            return Err("ASHA: brackets must be at least 1".into());
        }
        self.objective.require("ASHA")
    }
    fn on_trial_add(&mut self, trial: &str, _: &crate::space::Config) {
        self.ensure_brackets();
        // As Ray: bracket s is drawn with probability proportional to e^(rungs(s)).
        let sizes: Vec<f64> = self.brackets.iter().map(|b| b.rungs.len() as f64).collect();
        let max = sizes.iter().cloned().fold(f64::MIN, f64::max);
        let weights: Vec<f64> = sizes.iter().map(|s| (s - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut x = rng_at(self.seed, self.added).random::<f64>() * total;
        self.added += 1;
        let mut idx = 0;
        for (i, w) in weights.iter().enumerate() {
            idx = i;
            if x < *w {
                break;
            }
            x -= w;
        }
        self.trial_bracket.insert(trial.to_string(), idx);
    }
    fn on_trial_result(&mut self, trial: &str, r: &TrialResult) -> Decision {
        let (Some((t, score)), Some(&b)) = (self.objective.read(r), self.trial_bracket.get(trial))
        else {
            return Decision::Continue;
        };
        if self.stop_last_trials && t >= self.max_t {
            // Still recorded, so later trials are compared against it; counted as
            // stopped, as Ray counts it.
            self.brackets[b].on_result(trial, t, score, self.reduction_factor);
            self.num_stopped += 1;
            return Decision::Stop;
        }
        let d = self.brackets[b].on_result(trial, t, score, self.reduction_factor);
        if d == Decision::Stop {
            self.num_stopped += 1;
        }
        d
    }
    fn on_trial_complete(&mut self, trial: &str, last: Option<&TrialResult>) {
        let read = last.and_then(|r| self.objective.read(r));
        if let (Some((t, score)), Some(&b)) = (read, self.trial_bracket.get(trial)) {
            self.brackets[b].on_result(trial, t, score, self.reduction_factor);
        }
    }
    fn status(&self) -> Vec<String> {
        let sign = match self.objective.mode {
            Some(Mode::Min) => -1.0,
            _ => 1.0,
        };
        let mut out = vec![format!(
            "Using AsyncHyperBand: num_stopped={} (cut-off: {} percentile of each rung)",
            self.num_stopped,
            (1.0 - 1.0 / self.reduction_factor) * 100.0
        )];
        for b in &self.brackets {
            let rungs: Vec<String> = b
                .rungs
                .iter()
                .map(|r| {
                    let v: Vec<f64> = r.recorded.values().copied().collect();
                    match percentile(&v, (1.0 - 1.0 / self.reduction_factor) * 100.0) {
                        Some(c) => {
                            format!("Iter {}: {:.5} ({} trials)", r.milestone, c * sign, v.len())
                        }
                        None => format!("Iter {}: None", r.milestone),
                    }
                })
                .collect();
            out.push(format!("Bracket: {}", rungs.join(" | ")));
        }
        out
    }
    fn save(&self) -> Value {
        serde_json::to_value(self).expect("plain data")
    }
    fn restore(&mut self, state: Value) -> Result<(), String> {
        serde_restore(self, state, "ASHA")
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::res;
    use super::*;
    use crate::space::Config;

    fn asha(max_t: f64, rf: f64) -> Asha {
        let a = Asha::new()
            .max_t(max_t)
            .grace_period(1.0)
            .reduction_factor(rf)
            .metric("loss", Mode::Min);
        a.validate().unwrap();
        a
    }

    #[test]
    fn rungs_are_grace_period_times_powers_of_the_reduction_factor() {
        assert_eq!(asha(10.0, 2.0).milestones(), vec![1.0, 2.0, 4.0, 8.0]);
        assert_eq!(asha(8.0, 2.0).milestones(), vec![1.0, 2.0, 4.0, 8.0]);
        assert_eq!(asha(100.0, 4.0).milestones(), vec![1.0, 4.0, 16.0, 64.0]);
        assert_eq!(asha(2.0, 2.0).milestones(), vec![1.0, 2.0]);
        let mut b2 = Asha::new().max_t(16.0).reduction_factor(2.0).brackets(2);
        b2.ensure_brackets();
        let second: Vec<f64> = b2.brackets[1].rungs.iter().map(|r| r.milestone).collect();
        assert_eq!(
            second,
            vec![16.0, 8.0, 4.0, 2.0],
            "bracket s starts at grace * rf^s"
        );
    }

    /// Hand-worked, rf = 2 (cut-off = median of the scores recorded before):
    /// rung 1: A loss 1.0 (first, nothing to compare: goes on), B 2.0 (cut-off -1.0,
    /// score -2.0 < -1.0: stopped), C 0.5 (cut-off median(-1,-2) = -1.5: goes on),
    /// D 1.2 (cut-off median(-1,-2,-0.5) = -1.0, -1.2 < -1.0: stopped).
    #[test]
    fn a_trial_below_the_rung_median_is_stopped_rung_by_rung() {
        let mut a = asha(8.0, 2.0);
        for t in ["A", "B", "C", "D"] {
            a.on_trial_add(t, &Config::default());
        }
        assert_eq!(
            a.on_trial_result("A", &res(1, "loss", 1.0)),
            Decision::Continue
        );
        assert_eq!(a.on_trial_result("B", &res(1, "loss", 2.0)), Decision::Stop);
        assert_eq!(
            a.on_trial_result("C", &res(1, "loss", 0.5)),
            Decision::Continue
        );
        assert_eq!(a.on_trial_result("D", &res(1, "loss", 1.2)), Decision::Stop);
        // Between rungs nothing is decided.
        assert_eq!(
            a.on_trial_result("A", &res(1, "loss", 9.0)),
            Decision::Continue
        );
        // Rung 2: A first (goes on), C worse than A (stopped).
        assert_eq!(
            a.on_trial_result("A", &res(2, "loss", 0.9)),
            Decision::Continue
        );
        assert_eq!(
            a.on_trial_result("C", &res(2, "loss", 0.95)),
            Decision::Stop
        );
        assert_eq!(
            a.on_trial_result("A", &res(3, "loss", 0.1)),
            Decision::Continue
        );
        // max_t ends the trial whatever its score, and counts as a stop (as in Ray).
        assert_eq!(a.on_trial_result("A", &res(8, "loss", 0.1)), Decision::Stop);
        assert_eq!(a.num_stopped, 4);
        let s = a.status().join("\n");
        assert!(s.contains("Iter 1: 1.10000 (4 trials)"), "{s}");
    }

    #[test]
    fn rungs_are_counted_as_ray_counts_them() {
        let milestones = |max_t: f64, rf: f64, s: usize| -> Vec<f64> {
            Bracket::new(1.0, max_t, rf, s)
                .rungs
                .iter()
                .map(|r| r.milestone)
                .collect()
        };
        // Worked by hand from Ray's `int(np.log(max_t / min_t) / np.log(rf) - s + 1)`.
        assert_eq!(milestones(243.0, 3.0, 0), [81.0, 27.0, 9.0, 3.0, 1.0]);
        assert_eq!(milestones(243.0, 3.0, 1), [81.0, 27.0, 9.0, 3.0]);
        assert_eq!(
            milestones(729.0, 3.0, 0),
            [729.0, 243.0, 81.0, 27.0, 9.0, 3.0, 1.0]
        );
        assert_eq!(milestones(486.0, 2.0, 0).len(), 9);
        assert_eq!(milestones(8.0, 2.0, 0), [8.0, 4.0, 2.0, 1.0]);
        assert_eq!(milestones(8.0, 2.0, 5), Vec::<f64>::new());
    }

    #[test]
    fn a_trial_jumping_past_several_rungs_is_recorded_at_the_highest() {
        let mut a = asha(8.0, 2.0);
        a.on_trial_add("A", &Config::default());
        a.on_trial_result("A", &res(5, "loss", 1.0));
        let at: Vec<f64> = a.brackets[0]
            .rungs
            .iter()
            .filter(|r| r.recorded.contains_key("A"))
            .map(|r| r.milestone)
            .collect();
        assert_eq!(at, vec![4.0]);
    }

    #[test]
    fn with_rf_4_only_the_top_quarter_goes_on() {
        let mut a = asha(64.0, 4.0);
        let mut stopped = 0;
        // Scores get better with every trial: none is below its predecessors' 75th
        // percentile. Then as many getting worse: each is.
        for i in 0..20 {
            let id = format!("t{i}");
            a.on_trial_add(&id, &Config::default());
            if a.on_trial_result(&id, &res(1, "loss", 100.0 - i as f64)) == Decision::Stop {
                stopped += 1;
            }
        }
        assert_eq!(stopped, 0);
        for i in 0..20 {
            let id = format!("w{i}");
            a.on_trial_add(&id, &Config::default());
            assert_eq!(
                a.on_trial_result(&id, &res(1, "loss", 200.0 + i as f64)),
                Decision::Stop
            );
        }
    }

    #[test]
    fn state_survives_save_and_restore() {
        let mut a = asha(8.0, 2.0);
        a.on_trial_add("A", &Config::default());
        a.on_trial_result("A", &res(1, "loss", 1.0));
        let saved = a.save();
        let mut b = Asha::new();
        b.restore(saved).unwrap();
        b.on_trial_add("B", &Config::default());
        assert_eq!(b.on_trial_result("B", &res(1, "loss", 2.0)), Decision::Stop);
    }

    #[test]
    fn many_brackets_spread_trials_reproducibly() {
        let run = || {
            let mut a = Asha::new()
                .max_t(81.0)
                .reduction_factor(3.0)
                .brackets(3)
                .seed(7);
            a.set_metric("loss", Mode::Min);
            (0..300).for_each(|i| a.on_trial_add(&i.to_string(), &Config::default()));
            let mut counts = [0; 3];
            a.trial_bracket.values().for_each(|b| counts[*b] += 1);
            counts
        };
        let c = run();
        assert_eq!(c, run());
        // Weights e^0 : e^-1 : e^-2 → about 66% / 24% / 9%.
        assert!(c[0] > c[1] && c[1] > c[2] && c[2] > 0, "{c:?}");
    }

    #[test]
    fn bad_settings_are_refused_with_their_reason() {
        assert!(Asha::new()
            .grace_period(0.0)
            .metric("l", Mode::Min)
            .validate()
            .unwrap_err()
            .contains("grace_period"));
        assert!(Asha::new()
            .max_t(1.0)
            .grace_period(2.0)
            .metric("l", Mode::Min)
            .validate()
            .unwrap_err()
            .contains("max_t"));
        assert!(Asha::new().validate().unwrap_err().contains("metric"));
    }
}
