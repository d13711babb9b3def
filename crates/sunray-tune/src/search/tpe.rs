//! Tree-structured Parzen Estimator (Bergstra et al., "Algorithms for
//! Hyper-Parameter Optimization", NeurIPS 2011), written here: after `n_startup`
//! random trials, each parameter gets a density of the best `gamma` fraction of
//! results (l) and of the rest (g); the candidate with the highest l/g is suggested.
//! Parameters are modelled independently, as hyperopt does.

use std::collections::BTreeMap;

use rand::{rngs::StdRng, Rng};
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{overlay, Searcher, Suggestion};
use crate::result::{rng_at, Mode};
use crate::space::{set_path, Config, Domain, Space};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tpe {
    n_startup: usize,
    n_candidates: usize,
    gamma: f64,
    seed: u64,
    mode: Option<Mode>,
    num_samples: usize,
    asked: u64,
    points_to_evaluate: Vec<Config>,
    /// Finished trials: config and score (higher is better).
    observations: Vec<(Config, f64)>,
    live: BTreeMap<String, Config>,
}

impl Default for Tpe {
    fn default() -> Self {
        Self::new()
    }
}

/// A numeric parameter mapped to the space TPE models it in (log for log domains).
struct Axis {
    /// Bounds as the user gave them (before the log), for clamping.
    bounds: (f64, f64),
    lo: f64,
    hi: f64,
    log: bool,
    int: bool,
    q: Option<f64>,
}

impl Axis {
    fn of(d: &Domain) -> Option<Axis> {
        Some(match d {
            Domain::Uniform { lo, hi, q } => Axis {
                bounds: (*lo, *hi),
                lo: *lo,
                hi: *hi,
                log: false,
                int: false,
                q: *q,
            },
            Domain::LogUniform { lo, hi, q, .. } => Axis {
                bounds: (*lo, *hi),
                lo: lo.ln(),
                hi: hi.ln(),
                log: true,
                int: false,
                q: *q,
            },
            Domain::RandInt { lo, hi, q } => Axis {
                bounds: (*lo as f64, (*hi - 1) as f64),
                lo: *lo as f64,
                hi: (*hi - 1) as f64,
                log: false,
                int: true,
                q: q.map(|q| q as f64),
            },
            Domain::LogRandInt { lo, hi, .. } => Axis {
                bounds: (*lo as f64, (*hi - 1) as f64),
                lo: (*lo as f64).ln(),
                hi: ((*hi - 1) as f64).ln(),
                log: true,
                int: true,
                q: None,
            },
            Domain::RandN { mean, sd, q } => Axis {
                bounds: (f64::MIN, f64::MAX),
                lo: mean - 4.0 * sd,
                hi: mean + 4.0 * sd,
                log: false,
                int: false,
                q: *q,
            },
            _ => return None,
        })
    }
    fn to_model(&self, v: &Value) -> Option<f64> {
        let x = v.as_f64()?;
        Some(if self.log { x.max(1e-300).ln() } else { x })
    }
    fn to_value(&self, y: f64) -> Value {
        let mut x = if self.log { y.exp() } else { y };
        if let Some(q) = self.q {
            x = (x / q).round() * q;
        }
        let (lo, hi) = self.bounds;
        if self.int {
            Value::from(x.round().clamp(lo.ceil(), hi.floor()) as i64)
        } else {
            serde_json::Number::from_f64(x.clamp(lo, hi)).map_or(Value::Null, Value::Number)
        }
    }
}

/// Adaptive Parzen estimator: a Gaussian per observation, widths from the gaps to the
/// neighbours, plus a uniform prior over the range so that nothing has zero density.
struct Parzen {
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    lo: f64,
    hi: f64,
}

impl Parzen {
    fn new(mut xs: Vec<f64>, lo: f64, hi: f64) -> Self {
        xs.sort_by(|a, b| a.total_cmp(b));
        let range = (hi - lo).max(1e-12);
        let min_sigma = range / (100.0f64).min(1.0 + xs.len() as f64);
        let sigmas = (0..xs.len())
            .map(|i| {
                let left = if i == 0 {
                    xs[i] - lo
                } else {
                    xs[i] - xs[i - 1]
                };
                let right = if i + 1 == xs.len() {
                    hi - xs[i]
                } else {
                    xs[i + 1] - xs[i]
                };
                left.max(right).clamp(min_sigma, range)
            })
            .collect();
        Parzen {
            mus: xs,
            sigmas,
            lo,
            hi,
        }
    }
    fn pdf(&self, x: f64) -> f64 {
        let prior = 1.0 / (self.hi - self.lo).max(1e-12);
        let sum: f64 = self
            .mus
            .iter()
            .zip(&self.sigmas)
            .map(|(m, s)| {
                (-0.5 * ((x - m) / s).powi(2)).exp() / (s * (2.0 * std::f64::consts::PI).sqrt())
            })
            .sum();
        (prior + sum) / (self.mus.len() + 1) as f64
    }
    fn sample(&self, rng: &mut StdRng) -> f64 {
        let k = rng.random_range(0..=self.mus.len());
        if k == self.mus.len() {
            return rng.random_range(self.lo..=self.hi);
        }
        let n = Normal::new(self.mus[k], self.sigmas[k]).expect("positive sigma");
        n.sample(rng).clamp(self.lo, self.hi)
    }
}

impl Tpe {
    /// hyperopt's defaults: 10 random trials first, 24 candidates, gamma 0.25.
    pub fn new() -> Self {
        Tpe {
            n_startup: 10,
            n_candidates: 24,
            gamma: 0.25,
            seed: 0,
            mode: None,
            num_samples: 0,
            asked: 0,
            points_to_evaluate: Vec::new(),
            observations: Vec::new(),
            live: BTreeMap::new(),
        }
    }
    pub fn n_startup(mut self, n: usize) -> Self {
        self.n_startup = n;
        self
    }
    pub fn n_candidates(mut self, n: usize) -> Self {
        self.n_candidates = n.max(1);
        self
    }
    pub fn gamma(mut self, g: f64) -> Self {
        self.gamma = g;
        self
    }
    pub fn points_to_evaluate(mut self, points: Vec<Config>) -> Self {
        self.points_to_evaluate = points;
        self
    }

    fn split(&self) -> (Vec<&Config>, Vec<&Config>) {
        let mut obs: Vec<&(Config, f64)> = self.observations.iter().collect();
        obs.sort_by(|a, b| b.1.total_cmp(&a.1));
        let n_good = ((self.gamma * obs.len() as f64).ceil() as usize).clamp(1, obs.len());
        let good = obs[..n_good].iter().map(|(c, _)| c).collect();
        let bad = obs[n_good..].iter().map(|(c, _)| c).collect();
        (good, bad)
    }

    fn model_suggestion(&self, space: &Space, rng: &mut StdRng) -> Config {
        let mut cfg = space.sample(rng);
        let (good, bad) = self.split();
        for (path, d) in space.leaves() {
            if let Some(axis) = Axis::of(d) {
                let pts = |cs: &[&Config]| -> Vec<f64> {
                    cs.iter()
                        .filter_map(|c| c.value(&path).and_then(|v| axis.to_model(v)))
                        .collect()
                };
                let l = Parzen::new(pts(&good), axis.lo, axis.hi);
                let g = Parzen::new(pts(&bad), axis.lo, axis.hi);
                let best = (0..self.n_candidates)
                    .map(|_| l.sample(rng))
                    .map(|x| (x, l.pdf(x).ln() - g.pdf(x).ln()))
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .expect("at least one candidate");
                set_path(&mut cfg.0, &path, axis.to_value(best.0));
            } else if let Domain::Choice(values) = d {
                let probs = |cs: &[&Config]| -> Vec<f64> {
                    let mut counts = vec![1.0; values.len()];
                    for c in cs {
                        if let Some(i) = c
                            .value(&path)
                            .and_then(|v| values.iter().position(|x| x == v))
                        {
                            counts[i] += 1.0;
                        }
                    }
                    let total: f64 = counts.iter().sum();
                    counts.iter().map(|c| c / total).collect()
                };
                let (pl, pg) = (probs(&good), probs(&bad));
                let best = (0..self.n_candidates)
                    .map(|_| {
                        let mut x = rng.random::<f64>();
                        let mut k = 0;
                        while k + 1 < pl.len() && x >= pl[k] {
                            x -= pl[k];
                            k += 1;
                        }
                        k
                    })
                    .max_by(|a, b| (pl[*a] / pg[*a]).total_cmp(&(pl[*b] / pg[*b])))
                    .expect("at least one candidate");
                set_path(&mut cfg.0, &path, values[best].clone());
            }
        }
        cfg
    }
}

impl Searcher for Tpe {
    fn name(&self) -> &'static str {
        "TPE"
    }
    fn setup(
        &mut self,
        space: &Space,
        _: &str,
        mode: Mode,
        num_samples: usize,
        seed: u64,
    ) -> Result<(), String> {
        if space.has_grid() {
            return Err(
                "TPE does not take grid_search parameters: use choice([...]) instead".into(),
            );
        }
        if !(0.0..1.0).contains(&self.gamma) || self.gamma == 0.0 {
            return Err("TPE: gamma must be between 0 and 1".into());
        }
        self.mode = Some(mode);
        self.num_samples = num_samples;
        self.seed = seed;
        Ok(())
    }
    fn suggest(&mut self, space: &Space, trial_id: &str) -> Suggestion {
        let n = self.asked as usize;
        if n >= self.num_samples.max(self.points_to_evaluate.len()) {
            return Suggestion::Finished;
        }
        let mut rng = rng_at(self.seed, self.asked);
        self.asked += 1;
        let cfg = if n < self.points_to_evaluate.len() {
            overlay(space.sample(&mut rng), &self.points_to_evaluate[n])
        } else if self.observations.len() < self.n_startup {
            space.sample(&mut rng)
        } else {
            self.model_suggestion(space, &mut rng)
        };
        self.live.insert(trial_id.to_string(), cfg.clone());
        Suggestion::Config(cfg)
    }
    fn on_trial_complete(&mut self, trial_id: &str, metric: Option<f64>, error: bool) {
        let cfg = self.live.remove(trial_id);
        if let (Some(cfg), Some(v), false, Some(mode)) = (cfg, metric, error, self.mode) {
            if v.is_finite() {
                self.observations.push((cfg, mode.score(v)));
            }
        }
    }
    fn save(&self) -> Value {
        serde_json::to_value(self).expect("plain data")
    }
    fn restore(&mut self, state: Value) -> Result<(), String> {
        *self = serde_json::from_value(state)
            .map_err(|e| format!("saved TPE state does not fit: {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::BasicVariantGenerator;
    use crate::space::{choice, loguniform, randint, uniform};

    fn space() -> Space {
        Space::new()
            .with("lr", loguniform(1e-5, 1.0))
            .with("u", uniform(0.0, 1.0))
            .with("k", randint(0, 50))
            .with("act", choice(["a", "b", "c", "d"]))
    }

    /// Minimum at lr = 1e-3, u = 0.7, k = 17, act = "b".
    fn loss(c: &Config) -> f64 {
        (c.f64("lr").log10() + 3.0).powi(2)
            + 4.0 * (c.f64("u") - 0.7).powi(2)
            + ((c.i64("k") - 17) as f64 / 10.0).powi(2)
            + if c.str("act") == "b" { 0.0 } else { 1.0 }
    }

    fn best_after(s: &mut dyn Searcher, n: usize, seed: u64) -> f64 {
        let sp = space();
        s.setup(&sp, "loss", Mode::Min, n, seed).unwrap();
        let mut best = f64::MAX;
        for i in 0..n {
            let id = i.to_string();
            let Suggestion::Config(c) = s.suggest(&sp, &id) else {
                panic!("ran out")
            };
            let l = loss(&c);
            best = best.min(l);
            s.on_trial_complete(&id, Some(l), false);
        }
        assert_eq!(s.suggest(&sp, "x"), Suggestion::Finished);
        best
    }

    #[test]
    fn tpe_finds_better_configs_than_random_search_with_the_same_budget() {
        let seeds = 0..8;
        let tpe: f64 = seeds
            .clone()
            .map(|s| best_after(&mut Tpe::new(), 60, s))
            .sum();
        let random: f64 = seeds
            .map(|s| best_after(&mut BasicVariantGenerator::new(), 60, s))
            .sum();
        assert!(tpe < random * 0.6, "TPE {tpe:.3} vs random {random:.3}");
    }

    #[test]
    fn suggestions_stay_in_the_domains_and_repeat_with_the_seed() {
        let sp = space();
        let run = || {
            let mut t = Tpe::new().n_startup(3);
            t.setup(&sp, "loss", Mode::Min, 30, 5).unwrap();
            (0..30)
                .map(|i| {
                    let Suggestion::Config(c) = t.suggest(&sp, &i.to_string()) else {
                        panic!()
                    };
                    assert!((1e-5..=1.0).contains(&c.f64("lr")));
                    assert!((0..50).contains(&c.i64("k")));
                    t.on_trial_complete(&i.to_string(), Some(loss(&c)), false);
                    c
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn state_is_saved_and_grid_is_refused() {
        let sp = space();
        let mut t = Tpe::new();
        t.setup(&sp, "loss", Mode::Min, 5, 1).unwrap();
        let Suggestion::Config(c) = t.suggest(&sp, "a") else {
            panic!()
        };
        t.on_trial_complete("a", Some(loss(&c)), false);
        let mut r = Tpe::new();
        r.restore(t.save()).unwrap();
        assert_eq!(r.observations.len(), 1);
        assert_eq!(r.asked, 1);
        let grid = Space::new().with("x", crate::space::grid_search([1, 2]));
        assert!(Tpe::new()
            .setup(&grid, "l", Mode::Min, 1, 0)
            .unwrap_err()
            .contains("grid_search"));
    }
}
