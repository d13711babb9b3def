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
    /// The fraction of results that count as good; see [`Tpe::n_good`].
    gamma: f64,
    /// One joint density over every parameter (Optuna 5's default) instead of one per
    /// parameter.
    #[serde(default = "yes")]
    multivariate: bool,
    /// Running trials count as bad results (Optuna's `constant_liar`), so parallel
    /// suggestions spread out instead of piling onto one spot.
    #[serde(default = "yes")]
    constant_liar: bool,
    seed: u64,
    mode: Option<Mode>,
    num_samples: usize,
    asked: u64,
    points_to_evaluate: Vec<Config>,
    /// Finished trials: config and score (higher is better).
    observations: Vec<(Config, f64)>,
    live: BTreeMap<String, Config>,
}

fn yes() -> bool {
    true
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
    /// A model coordinate moved onto the values the parameter can take (integers,
    /// quantized steps), so that a candidate is scored where it will be tried.
    fn snap(&self, y: f64) -> f64 {
        if !self.int && self.q.is_none() {
            return y;
        }
        self.to_value(y)
            .as_f64()
            .and_then(|v| self.to_model(&Value::from(v)))
            .unwrap_or(y)
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
    /// Optuna's defaults: 10 random trials first, 24 candidates, the best
    /// `min(ceil(0.1 n), 25)` results as the good set, one joint density, running trials
    /// counted as bad.
    pub fn new() -> Self {
        Tpe {
            n_startup: 10,
            n_candidates: 24,
            gamma: 0.1,
            multivariate: true,
            constant_liar: true,
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
    /// One density per parameter (hyperopt's and Optuna's `multivariate=False`).
    pub fn multivariate(mut self, on: bool) -> Self {
        self.multivariate = on;
        self
    }
    pub fn constant_liar(mut self, on: bool) -> Self {
        self.constant_liar = on;
        self
    }

    /// How many of `n` results form the good set: `ceil(gamma * n)`, at most 25 (Optuna's
    /// default rule), at least 1.
    fn n_good(&self, n: usize) -> usize {
        ((self.gamma * n as f64).ceil() as usize)
            .clamp(1, 25)
            .min(n.max(1))
    }

    /// The good and bad sets; running trials join the bad one (constant liar).
    fn split(&self) -> (Vec<&Config>, Vec<&Config>) {
        let mut obs: Vec<&(Config, f64)> = self.observations.iter().collect();
        obs.sort_by(|a, b| b.1.total_cmp(&a.1));
        let n_good = self.n_good(obs.len());
        let good = obs[..n_good].iter().map(|(c, _)| c).collect();
        let mut bad: Vec<&Config> = obs[n_good..].iter().map(|(c, _)| c).collect();
        if self.constant_liar {
            bad.extend(self.live.values());
        }
        (good, bad)
    }

    fn model_suggestion(&self, space: &Space, rng: &mut StdRng) -> Config {
        if self.multivariate {
            return self.joint_suggestion(space, rng);
        }
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

/// A dimension of the joint model.
enum Dim {
    Num { path: String, axis: Axis },
    Cat { path: String, values: Vec<Value> },
}

/// One observation in model coordinates (`None` where it has no value).
type Point = Vec<Option<f64>>;

/// Φ, the standard normal's distribution function (Abramowitz and Stegun 7.1.26 for erf,
/// error under 1.5e-7: plenty for weighting kernels).
fn phi(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    0.5 * (1.0 + if z < 0.0 { -erf } else { erf })
}

/// Log density at `x` of a normal (`mu`, `sigma`) truncated to [`lo`, `hi`].
fn ln_trunc_normal(x: f64, mu: f64, sigma: f64, lo: f64, hi: f64) -> f64 {
    let mass = (phi((hi - mu) / sigma) - phi((lo - mu) / sigma)).max(1e-300);
    let z = (x - mu) / sigma;
    -0.5 * z * z - (sigma * (2.0 * std::f64::consts::PI).sqrt()).ln() - mass.ln()
}

/// A draw from that truncated normal (rejection; a normal this far outside its range
/// falls back to uniform).
fn sample_trunc_normal(rng: &mut StdRng, mu: f64, sigma: f64, lo: f64, hi: f64) -> f64 {
    let n = Normal::new(mu, sigma).expect("positive sigma");
    for _ in 0..64 {
        let x = n.sample(rng);
        if (lo..=hi).contains(&x) {
            return x;
        }
    }
    rng.random_range(lo..=hi)
}

/// The joint Parzen estimator of a set of points: a product kernel per point (truncated
/// normals for numbers, a kernel putting half its weight on the point's category for
/// categories) plus the uniform prior as one more component.
struct Joint<'a> {
    dims: &'a [Dim],
    points: Vec<Point>,
    sigmas: Vec<f64>,
}

impl<'a> Joint<'a> {
    fn new(dims: &'a [Dim], points: Vec<Point>) -> Self {
        // Scott's rule over the range, as Optuna's multivariate estimator.
        let n = points.len().max(1) as f64;
        let d = dims.len().max(1) as f64;
        let sigmas = dims
            .iter()
            .map(|dim| match dim {
                Dim::Num { axis, .. } => {
                    let range = (axis.hi - axis.lo).max(1e-12);
                    (0.2 * n.powf(-1.0 / (d + 4.0)) * range).max(range * 1e-3)
                }
                Dim::Cat { .. } => 0.0,
            })
            .collect();
        Joint {
            dims,
            points,
            sigmas,
        }
    }

    fn ln_kernel(&self, p: Option<&Point>, x: &Point) -> f64 {
        let mut ln = 0.0;
        for (i, dim) in self.dims.iter().enumerate() {
            let Some(xi) = x[i] else { continue };
            ln += match (dim, p.and_then(|p| p[i])) {
                (Dim::Num { axis, .. }, Some(mu)) => {
                    ln_trunc_normal(xi, mu, self.sigmas[i], axis.lo, axis.hi)
                }
                (Dim::Num { axis, .. }, None) => -(axis.hi - axis.lo).max(1e-12).ln(),
                (Dim::Cat { values, .. }, Some(c)) => {
                    let k = values.len() as f64;
                    let own = if c == xi { 1.0 } else { 0.0 };
                    ((own + 1.0 / k) / 2.0).ln()
                }
                (Dim::Cat { values, .. }, None) => -(values.len() as f64).ln(),
            };
        }
        ln
    }

    /// Log density at `x` (log-sum-exp over the components).
    fn ln_pdf(&self, x: &Point) -> f64 {
        let terms: Vec<f64> = std::iter::once(self.ln_kernel(None, x))
            .chain(self.points.iter().map(|p| self.ln_kernel(Some(p), x)))
            .collect();
        let max = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
            - ((self.points.len() + 1) as f64).ln()
    }

    fn sample(&self, rng: &mut StdRng) -> Point {
        let k = rng.random_range(0..=self.points.len());
        let p = self.points.get(k);
        self.dims
            .iter()
            .enumerate()
            .map(|(i, dim)| {
                let own = p.and_then(|p| p[i]);
                Some(match (dim, own) {
                    (Dim::Num { axis, .. }, Some(mu)) => axis.snap(sample_trunc_normal(
                        rng,
                        mu,
                        self.sigmas[i],
                        axis.lo,
                        axis.hi,
                    )),
                    (Dim::Num { axis, .. }, None) => axis.snap(rng.random_range(axis.lo..=axis.hi)),
                    (Dim::Cat { values, .. }, Some(c)) if rng.random::<bool>() => c,
                    (Dim::Cat { values, .. }, _) => rng.random_range(0..values.len()) as f64,
                })
            })
            .collect()
    }
}

impl Tpe {
    /// The joint model's suggestion: candidates drawn from the good set's density, the
    /// one with the highest ratio to the bad set's density kept.
    fn joint_suggestion(&self, space: &Space, rng: &mut StdRng) -> Config {
        let mut cfg = space.sample(rng);
        let dims: Vec<Dim> = space
            .leaves()
            .into_iter()
            .filter_map(|(path, d)| match d {
                Domain::Choice(values) => Some(Dim::Cat {
                    path,
                    values: values.clone(),
                }),
                d => Axis::of(d).map(|axis| Dim::Num { path, axis }),
            })
            .collect();
        if dims.is_empty() {
            return cfg;
        }
        let point = |c: &Config| -> Point {
            dims.iter()
                .map(|dim| match dim {
                    Dim::Num { path, axis } => c.value(path).and_then(|v| axis.to_model(v)),
                    Dim::Cat { path, values } => c
                        .value(path)
                        .and_then(|v| values.iter().position(|x| x == v))
                        .map(|i| i as f64),
                })
                .collect()
        };
        let (good, bad) = self.split();
        let l = Joint::new(&dims, good.iter().map(|c| point(c)).collect());
        let g = Joint::new(&dims, bad.iter().map(|c| point(c)).collect());
        let best = (0..self.n_candidates)
            .map(|_| l.sample(rng))
            .map(|x| {
                let score = l.ln_pdf(&x) - g.ln_pdf(&x);
                (x, score)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("at least one candidate")
            .0;
        for (dim, x) in dims.iter().zip(best) {
            let Some(x) = x else { continue };
            match dim {
                Dim::Num { path, axis } => set_path(&mut cfg.0, path, axis.to_value(x)),
                Dim::Cat { path, values } => set_path(&mut cfg.0, path, values[x as usize].clone()),
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
    fn the_good_set_is_a_tenth_of_the_results_at_most_25() {
        let t = Tpe::new();
        assert_eq!(t.n_good(1), 1);
        assert_eq!(t.n_good(11), 2);
        assert_eq!(t.n_good(100), 10);
        assert_eq!(t.n_good(1000), 25);
    }

    #[test]
    fn truncated_normals_stay_in_range_and_their_density_integrates_to_one() {
        let mut rng = rng_at(1, 0);
        let (lo, hi) = (0.0, 1.0);
        for (mu, sigma) in [(0.5, 0.1), (0.02, 0.3), (0.99, 2.0)] {
            for _ in 0..1000 {
                let x = sample_trunc_normal(&mut rng, mu, sigma, lo, hi);
                assert!((lo..=hi).contains(&x));
            }
            let n = 20_000;
            let integral: f64 = (0..n)
                .map(|i| {
                    let x = lo + (i as f64 + 0.5) / n as f64 * (hi - lo);
                    ln_trunc_normal(x, mu, sigma, lo, hi).exp() * (hi - lo) / n as f64
                })
                .sum();
            assert!((integral - 1.0).abs() < 1e-3, "{mu} {sigma}: {integral}");
        }
    }

    #[test]
    fn integers_are_scored_on_their_grid() {
        let axis = Axis::of(&randint(0, 50)).unwrap();
        assert_eq!(axis.snap(16.7), 17.0);
        let log = Axis::of(&crate::space::lograndint(1, 100)).unwrap();
        assert_eq!(log.snap(2.0f64.ln() + 0.1).exp().round(), 2.0);
        let float = Axis::of(&uniform(0.0, 1.0)).unwrap();
        assert_eq!(float.snap(0.123), 0.123);
    }

    #[test]
    fn running_trials_count_as_bad_results() {
        let sp = space();
        let mut t = Tpe::new().n_startup(2);
        t.setup(&sp, "loss", Mode::Min, 20, 3).unwrap();
        for i in 0..4 {
            let Suggestion::Config(c) = t.suggest(&sp, &i.to_string()) else {
                panic!()
            };
            t.on_trial_complete(&i.to_string(), Some(loss(&c)), false);
        }
        for i in 4..7 {
            t.suggest(&sp, &i.to_string());
        }
        let (good, bad) = t.split();
        assert_eq!((good.len(), bad.len()), (1, 3 + 3));
        let honest = t.clone().constant_liar(false);
        assert_eq!(honest.split().1.len(), 3);
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
