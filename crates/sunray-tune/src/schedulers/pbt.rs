//! Population Based Training (Jaderberg et al., 2017), as Ray's
//! `PopulationBasedTraining`: every `perturbation_interval`, a trial in the bottom
//! quantile of the population copies the checkpoint and config of a random trial of the
//! top quantile (exploit), then perturbs or resamples that config (explore).

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::{rngs::StdRng, Rng};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{objective_setters, serde_restore, Decision, Objective, TrialScheduler};
use crate::result::{rng_at, Mode, TrialResult};
use crate::space::{set_path, Config, Domain};

/// How a hyperparameter may change.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Resampled from this distribution, or multiplied by a perturbation factor.
    Domain(Domain),
    /// Resampled from the list, or moved to a neighbouring value.
    Values(Vec<Value>),
}

impl From<Domain> for Mutation {
    fn from(d: Domain) -> Self {
        Mutation::Domain(d)
    }
}
impl<T: Into<Value>> From<Vec<T>> for Mutation {
    fn from(v: Vec<T>) -> Self {
        Mutation::Values(v.into_iter().map(Into::into).collect())
    }
}

type ExploreFn = Arc<dyn Fn(Config) -> Config + Send + Sync>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Member {
    config: Config,
    score: Option<f64>,
    last_perturbation: f64,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Pbt {
    objective: Objective,
    perturbation_interval: f64,
    quantile_fraction: f64,
    resample_probability: f64,
    perturbation_factors: (f64, f64),
    seed: u64,
    draws: u64,
    members: BTreeMap<String, Member>,
    num_perturbations: u64,
    #[serde(skip)]
    mutations: Vec<(String, Mutation)>,
    #[serde(skip)]
    custom_explore: Option<ExploreFn>,
}

impl Default for Pbt {
    fn default() -> Self {
        Self::new()
    }
}

impl Pbt {
    /// Ray's defaults: `time_attr = time_total_s`, `perturbation_interval = 60`,
    /// `quantile_fraction = 0.25`, `resample_probability = 0.25`, factors 1.2 / 0.8.
    pub fn new() -> Self {
        Pbt {
            objective: Objective::new("time_total_s"),
            perturbation_interval: 60.0,
            quantile_fraction: 0.25,
            resample_probability: 0.25,
            perturbation_factors: (1.2, 0.8),
            seed: 0,
            draws: 0,
            members: BTreeMap::new(),
            num_perturbations: 0,
            mutations: Vec::new(),
            custom_explore: None,
        }
    }
    objective_setters!();
    pub fn perturbation_interval(mut self, t: f64) -> Self {
        self.perturbation_interval = t;
        self
    }
    pub fn quantile_fraction(mut self, q: f64) -> Self {
        self.quantile_fraction = q;
        self
    }
    pub fn resample_probability(mut self, p: f64) -> Self {
        self.resample_probability = p;
        self
    }
    pub fn perturbation_factors(mut self, up: f64, down: f64) -> Self {
        self.perturbation_factors = (up, down);
        self
    }
    /// A parameter (dotted path for nested ones) PBT may change, and how.
    pub fn mutate(mut self, path: &str, m: impl Into<Mutation>) -> Self {
        self.mutations.push((path.to_string(), m.into()));
        self
    }
    /// Applied after the built-in exploration.
    pub fn custom_explore(mut self, f: impl Fn(Config) -> Config + Send + Sync + 'static) -> Self {
        self.custom_explore = Some(Arc::new(f));
        self
    }
    pub fn seed(mut self, s: u64) -> Self {
        self.seed = s;
        self
    }

    fn explore(&self, mut cfg: Config, rng: &mut StdRng) -> Config {
        let (up, down) = self.perturbation_factors;
        for (path, m) in &self.mutations {
            let cur = cfg.value(path).cloned().unwrap_or(Value::Null);
            let resample = rng.random::<f64>() < self.resample_probability;
            let new = match m {
                Mutation::Values(vals) => match vals.iter().position(|v| *v == cur) {
                    Some(i) if !resample => {
                        let j = if rng.random::<bool>() {
                            (i + 1).min(vals.len() - 1)
                        } else {
                            i.saturating_sub(1)
                        };
                        vals[j].clone()
                    }
                    _ => vals[rng.random_range(0..vals.len())].clone(),
                },
                Mutation::Domain(d) => match cur.as_f64() {
                    Some(x) if !resample && d.is_numeric() => {
                        let f = if rng.random::<bool>() { up } else { down };
                        // Perturbed values stay inside the search space's bounds.
                        let y = match d.bounds() {
                            Some((lo, hi)) => (x * f).clamp(lo, hi),
                            None => x * f,
                        };
                        if cur.is_i64() || cur.is_u64() {
                            Value::from(y.round() as i64)
                        } else {
                            serde_json::Number::from_f64(y).map_or(Value::Null, Value::Number)
                        }
                    }
                    _ => d.sample(rng, &cfg),
                },
            };
            set_path(&mut cfg.0, path, new);
        }
        match &self.custom_explore {
            Some(f) => f(cfg),
            None => cfg,
        }
    }

    /// (bottom, top) quantiles of the trials with a score, as Ray sizes them.
    fn quantiles(&self) -> (Vec<String>, Vec<String>) {
        let mut scored: Vec<(&String, f64)> = self
            .members
            .iter()
            .filter_map(|(id, m)| m.score.map(|s| (id, s)))
            .collect();
        scored.sort_by(|a, b| a.1.total_cmp(&b.1));
        let len = scored.len();
        let mut n = (len as f64 * self.quantile_fraction).ceil() as usize;
        if n > len / 2 {
            n = len / 2;
        }
        let ids: Vec<String> = scored.into_iter().map(|(id, _)| id.clone()).collect();
        (ids[..n].to_vec(), ids[len - n..].to_vec())
    }
}

impl TrialScheduler for Pbt {
    fn name(&self) -> &'static str {
        "PopulationBasedTraining"
    }
    fn set_metric(&mut self, metric: &str, mode: Mode) {
        self.objective.default_to(metric, mode);
    }
    fn validate(&self) -> Result<(), String> {
        if self.mutations.is_empty() && self.custom_explore.is_none() {
            return Err(
                "PBT needs hyperparameters to mutate (Pbt::mutate) or a custom_explore".into(),
            );
        }
        if !(0.0..=0.5).contains(&self.quantile_fraction) {
            return Err("PBT: quantile_fraction must be between 0 and 0.5".into());
        }
        if self.perturbation_interval <= 0.0 {
            return Err("PBT: perturbation_interval must be > 0".into());
        }
        self.objective.require("PBT")
    }
    fn on_trial_add(&mut self, trial: &str, config: &Config) {
        self.members.insert(
            trial.to_string(),
            Member {
                config: config.clone(),
                ..Member::default()
            },
        );
    }
    fn on_trial_result(&mut self, trial: &str, r: &TrialResult) -> Decision {
        let Some((t, score)) = self.objective.read(r) else {
            return Decision::Continue;
        };
        let m = self.members.entry(trial.to_string()).or_default();
        m.score = Some(score);
        if t - m.last_perturbation < self.perturbation_interval {
            return Decision::Continue;
        }
        m.last_perturbation = t;
        let (lower, upper) = self.quantiles();
        if !lower.iter().any(|id| id == trial) {
            return Decision::Continue;
        }
        let mut rng = rng_at(self.seed, self.draws);
        self.draws += 1;
        let donor = upper[rng.random_range(0..upper.len())].clone();
        let config = self.explore(self.members[&donor].config.clone(), &mut rng);
        self.members.get_mut(trial).expect("inserted above").config = config.clone();
        self.num_perturbations += 1;
        Decision::Restart {
            config,
            from: donor,
        }
    }
    fn on_trial_complete(&mut self, trial: &str, _: Option<&TrialResult>) {
        self.members.remove(trial);
    }
    fn on_trial_error(&mut self, trial: &str) {
        self.members.remove(trial);
    }
    fn status(&self) -> Vec<String> {
        vec![format!(
            "Using PopulationBasedTraining: num_perturbations={}",
            self.num_perturbations
        )]
    }
    fn save(&self) -> Value {
        serde_json::to_value(self).expect("plain data")
    }
    fn restore(&mut self, state: Value) -> Result<(), String> {
        let mutations = std::mem::take(&mut self.mutations);
        let explore = self.custom_explore.take();
        serde_restore(self, state, "PBT")?;
        self.mutations = mutations;
        self.custom_explore = explore;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::res;
    use super::*;
    use crate::space::{choice, uniform, Space};
    use rand::SeedableRng;

    fn cfg(lr: f64, bs: i64) -> Config {
        let mut c = Config::default();
        set_path(&mut c.0, "lr", lr.into());
        set_path(&mut c.0, "bs", bs.into());
        c
    }

    fn pbt() -> Pbt {
        Pbt::new()
            .time_attr("training_iteration")
            .perturbation_interval(2.0)
            .metric("acc", Mode::Max)
            .mutate("lr", uniform(0.0001, 1.0))
            .mutate("bs", vec![8, 16, 32, 64])
            .seed(3)
    }

    #[test]
    fn the_bottom_quarter_copies_a_top_quarter_trial_at_each_interval() {
        let mut p = pbt();
        p.validate().unwrap();
        for i in 0..8 {
            p.on_trial_add(&format!("t{i}"), &cfg(0.1 * (i + 1) as f64, 16));
        }
        // Iteration 1: inside the first interval, nobody is perturbed.
        for i in 0..8 {
            assert_eq!(
                p.on_trial_result(&format!("t{i}"), &res(1, "acc", i as f64)),
                Decision::Continue
            );
        }
        // Iteration 2: 8 trials, quantile 2: t0, t1 bottom, t6, t7 top.
        let mut restarted = Vec::new();
        for i in 0..8 {
            if let Decision::Restart { config, from } =
                p.on_trial_result(&format!("t{i}"), &res(2, "acc", i as f64))
            {
                assert!(
                    from == "t6" || from == "t7",
                    "donor from the top quantile: {from}"
                );
                let donor_lr = if from == "t6" { 0.7 } else { 0.8 };
                let lr = config.f64("lr");
                let perturbed = [donor_lr * 1.2, donor_lr * 0.8]
                    .iter()
                    .any(|x| (x - lr).abs() < 1e-9);
                assert!(perturbed || (0.0001..1.0).contains(&lr));
                assert!([8, 16, 32, 64].contains(&config.i64("bs")));
                restarted.push(i);
            }
        }
        assert_eq!(restarted, [0, 1]);
        assert_eq!(p.num_perturbations, 2);
        // Iteration 3: inside the interval again.
        assert_eq!(
            p.on_trial_result("t0", &res(3, "acc", 0.0)),
            Decision::Continue
        );
    }

    #[test]
    fn list_values_move_to_a_neighbour_unless_resampled() {
        let p = Pbt::new()
            .resample_probability(0.0)
            .mutate("bs", vec![8, 16, 32, 64]);
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            let bs = p.explore(cfg(0.1, 16), &mut rng).i64("bs");
            assert!(bs == 8 || bs == 32, "{bs}");
            let edge = p.explore(cfg(0.1, 64), &mut rng).i64("bs");
            assert!(edge == 32 || edge == 64, "{edge}");
        }
        let always = Pbt::new()
            .resample_probability(1.0)
            .mutate("x", choice([1, 2]));
        let mut c = Config::default();
        set_path(&mut c.0, "x", 1.into());
        assert!([1, 2].contains(&always.explore(c, &mut rng).i64("x")));
    }

    #[test]
    fn a_small_population_has_no_quantiles_and_custom_explore_runs_last() {
        let mut p = pbt().custom_explore(|mut c| {
            set_path(&mut c.0, "custom", true.into());
            c
        });
        p.on_trial_add("only", &cfg(0.1, 8));
        assert_eq!(
            p.on_trial_result("only", &res(4, "acc", 1.0)),
            Decision::Continue
        );
        let c = p.explore(cfg(0.1, 8), &mut StdRng::seed_from_u64(0));
        assert_eq!(c.value("custom"), Some(&Value::Bool(true)));
        let _ = Space::new();
    }

    #[test]
    fn saved_state_keeps_the_population_and_the_restored_scheduler_keeps_its_mutations() {
        let mut p = pbt();
        p.on_trial_add("a", &cfg(0.1, 8));
        p.on_trial_result("a", &res(1, "acc", 0.5));
        let mut q = pbt();
        q.restore(p.save()).unwrap();
        assert_eq!(q.members["a"].score, Some(0.5));
        assert_eq!(q.mutations.len(), 2);
    }
}
