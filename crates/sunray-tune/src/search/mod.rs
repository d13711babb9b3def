//! Search algorithms: where each new trial's config comes from. Pure state machines:
//! asked for a config, told each trial's outcome, saved with the experiment.

mod tpe;

pub use tpe::Tpe;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::result::{rng_at, Mode};
use crate::space::{Config, Space};

/// What a searcher answers when asked for the next trial's config.
#[derive(Debug, Clone, PartialEq)]
pub enum Suggestion {
    Config(Config),
    /// Nothing now (e.g. waiting for results); ask again after the next event.
    Wait,
    /// No more trials will come from this searcher.
    Finished,
}

pub trait Searcher: Send {
    fn name(&self) -> &'static str;
    /// The experiment's settings, given before the first `suggest`.
    fn setup(
        &mut self,
        space: &Space,
        metric: &str,
        mode: Mode,
        num_samples: usize,
        seed: u64,
    ) -> Result<(), String>;
    fn suggest(&mut self, space: &Space, trial_id: &str) -> Suggestion;
    /// Each result a trial reports, as written to its `result.json` (Ray's
    /// `Searcher.on_trial_result`); the built-in searchers learn only from ends.
    fn on_trial_result(&mut self, _trial_id: &str, _result: &serde_json::Map<String, Value>) {}
    /// The trial ended; `metric` is its last value of the experiment's metric, if any.
    fn on_trial_complete(&mut self, trial_id: &str, metric: Option<f64>, error: bool);
    fn save(&self) -> Value;
    fn restore(&mut self, state: Value) -> Result<(), String>;
}

/// Ray's basic variant generator: random search, with `grid_search` parameters
/// expanded; the grid is repeated `num_samples` times.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BasicVariantGenerator {
    num_samples: usize,
    seed: u64,
    /// Configs handed out so far (each draws from its own seeded generator).
    generated: u64,
    grid_len: usize,
    #[serde(default)]
    points_to_evaluate: Vec<Config>,
}

impl BasicVariantGenerator {
    pub fn new() -> Self {
        Self::default()
    }
    /// Configs to try first (any parameter left out is sampled), as in Ray.
    pub fn points_to_evaluate(mut self, points: Vec<Config>) -> Self {
        self.points_to_evaluate = points;
        self
    }
    /// How many trials this searcher will make in all.
    pub fn total(&self) -> usize {
        self.points_to_evaluate.len() + self.num_samples * self.grid_len
    }
}

/// A sampled config with the given parameters' values put over it.
pub(crate) fn overlay(mut base: Config, over: &Config) -> Config {
    for (k, v) in over.flat() {
        crate::space::set_path(&mut base.0, &k.replace('/', "."), v);
    }
    base
}

impl Searcher for BasicVariantGenerator {
    fn name(&self) -> &'static str {
        "BasicVariantGenerator"
    }
    fn setup(
        &mut self,
        space: &Space,
        _: &str,
        _: Mode,
        num_samples: usize,
        seed: u64,
    ) -> Result<(), String> {
        self.num_samples = num_samples;
        self.seed = seed;
        self.grid_len = space.grid_points().len();
        Ok(())
    }
    fn suggest(&mut self, space: &Space, _: &str) -> Suggestion {
        let n = self.generated as usize;
        if n >= self.total() {
            return Suggestion::Finished;
        }
        let mut rng = rng_at(self.seed, self.generated);
        self.generated += 1;
        let fixed = self.points_to_evaluate.len();
        if n < fixed {
            let sampled = space.sample(&mut rng);
            return Suggestion::Config(overlay(sampled, &self.points_to_evaluate[n]));
        }
        let grid = space.grid_points();
        let point = &grid[(n - fixed) % grid.len()];
        Suggestion::Config(space.resolve(&mut rng, point))
    }
    fn on_trial_complete(&mut self, _: &str, _: Option<f64>, _: bool) {}
    fn save(&self) -> Value {
        serde_json::to_value(self).expect("plain data")
    }
    fn restore(&mut self, state: Value) -> Result<(), String> {
        *self = serde_json::from_value(state)
            .map_err(|e| format!("saved searcher state does not fit: {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{grid_search, uniform};

    fn drain(s: &mut dyn Searcher, space: &Space) -> Vec<Config> {
        let mut out = Vec::new();
        while let Suggestion::Config(c) = s.suggest(space, "t") {
            out.push(c);
        }
        out
    }

    #[test]
    fn the_grid_is_repeated_num_samples_times_with_fresh_random_values() {
        let space = Space::new()
            .with("a", grid_search([1, 2, 3]))
            .with("lr", uniform(0.0, 1.0));
        let mut g = BasicVariantGenerator::new();
        g.setup(&space, "m", Mode::Min, 2, 42).unwrap();
        let cfgs = drain(&mut g, &space);
        assert_eq!(cfgs.len(), 6);
        let a: Vec<i64> = cfgs.iter().map(|c| c.i64("a")).collect();
        assert_eq!(a, [1, 2, 3, 1, 2, 3]);
        assert_ne!(cfgs[0].f64("lr"), cfgs[3].f64("lr"));
        assert_eq!(g.suggest(&space, "t"), Suggestion::Finished);
    }

    #[test]
    fn a_seed_repeats_the_run_and_a_restored_generator_goes_on_where_it_stopped() {
        let space = Space::new().with("lr", uniform(0.0, 1.0));
        let mut a = BasicVariantGenerator::new();
        a.setup(&space, "m", Mode::Min, 10, 7).unwrap();
        let all = drain(&mut a, &space);
        let mut b = BasicVariantGenerator::new();
        b.setup(&space, "m", Mode::Min, 10, 7).unwrap();
        let first: Vec<Config> = (0..4)
            .map(|_| match b.suggest(&space, "t") {
                Suggestion::Config(c) => c,
                s => panic!("{s:?}"),
            })
            .collect();
        let mut c = BasicVariantGenerator::new();
        c.restore(b.save()).unwrap();
        let rest = drain(&mut c, &space);
        assert_eq!([first, rest].concat(), all);
    }

    #[test]
    fn points_to_evaluate_come_first() {
        let space = Space::new()
            .with("lr", uniform(0.0, 1.0))
            .with("b", uniform(5.0, 6.0));
        let mut p = Config::default();
        crate::space::set_path(&mut p.0, "lr", 0.5.into());
        let mut g = BasicVariantGenerator::new().points_to_evaluate(vec![p]);
        g.setup(&space, "m", Mode::Min, 2, 1).unwrap();
        let cfgs = drain(&mut g, &space);
        assert_eq!(cfgs.len(), 3);
        assert_eq!(cfgs[0].f64("lr"), 0.5);
        assert!((5.0..6.0).contains(&cfgs[0].f64("b")));
    }
}

/// Ray's `ConcurrencyLimiter`: at most `max` trials of the wrapped searcher live at
/// once (a model-based searcher then learns from more results per suggestion).
pub struct ConcurrencyLimiter {
    inner: Box<dyn Searcher>,
    max: usize,
    live: std::collections::BTreeSet<String>,
}

impl ConcurrencyLimiter {
    pub fn new(inner: Box<dyn Searcher>, max_concurrent: usize) -> Self {
        ConcurrencyLimiter {
            inner,
            max: max_concurrent.max(1),
            live: Default::default(),
        }
    }
}

impl Searcher for ConcurrencyLimiter {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn setup(
        &mut self,
        space: &Space,
        metric: &str,
        mode: Mode,
        num_samples: usize,
        seed: u64,
    ) -> Result<(), String> {
        self.inner.setup(space, metric, mode, num_samples, seed)
    }
    fn suggest(&mut self, space: &Space, trial_id: &str) -> Suggestion {
        if self.live.len() >= self.max {
            return Suggestion::Wait;
        }
        let s = self.inner.suggest(space, trial_id);
        if let Suggestion::Config(_) = &s {
            self.live.insert(trial_id.to_string());
        }
        s
    }
    fn on_trial_result(&mut self, trial_id: &str, result: &serde_json::Map<String, Value>) {
        self.inner.on_trial_result(trial_id, result);
    }
    fn on_trial_complete(&mut self, trial_id: &str, metric: Option<f64>, error: bool) {
        self.live.remove(trial_id);
        self.inner.on_trial_complete(trial_id, metric, error);
    }
    fn save(&self) -> Value {
        serde_json::json!({"inner": self.inner.save(), "live": self.live})
    }
    fn restore(&mut self, state: Value) -> Result<(), String> {
        let live = state.get("live").cloned().unwrap_or(Value::Null);
        self.live = serde_json::from_value(live).unwrap_or_default();
        self.inner
            .restore(state.get("inner").cloned().unwrap_or(Value::Null))
    }
}

#[cfg(test)]
mod limiter_tests {
    use super::*;
    use crate::space::uniform;

    #[test]
    fn the_limiter_waits_while_max_trials_live_and_resumes_as_they_end() {
        let space = Space::new().with("x", uniform(0.0, 1.0));
        let mut s = ConcurrencyLimiter::new(Box::new(BasicVariantGenerator::new()), 2);
        s.setup(&space, "loss", Mode::Min, 10, 1).unwrap();
        assert!(matches!(s.suggest(&space, "a"), Suggestion::Config(_)));
        assert!(matches!(s.suggest(&space, "b"), Suggestion::Config(_)));
        assert_eq!(s.suggest(&space, "c"), Suggestion::Wait);
        s.on_trial_complete("a", Some(1.0), false);
        assert!(matches!(s.suggest(&space, "c"), Suggestion::Config(_)));
        let saved = s.save();
        let mut t = ConcurrencyLimiter::new(Box::new(BasicVariantGenerator::new()), 2);
        t.setup(&space, "loss", Mode::Min, 10, 1).unwrap();
        t.restore(saved).unwrap();
        assert_eq!(
            t.suggest(&space, "d"),
            Suggestion::Wait,
            "b and c still live"
        );
    }
}
