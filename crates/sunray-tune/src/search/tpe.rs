//! Tree-structured Parzen Estimator (Bergstra et al., "Algorithms for
//! Hyper-Parameter Optimization", NeurIPS 2011), built as Optuna 5 builds it and
//! written here: after `n_startup` random trials, results split into a good set and a
//! bad one (the rest, plus running trials: "constant liar"); each set becomes a mixture
//! with one product kernel per trial (truncated normals whose widths come from the gaps
//! to the neighbours, probabilities on the integer grid, weighted categories) plus a
//! wide prior; of 24 candidates drawn from the good mixture, the one with the highest
//! ratio of good to bad density is tried. `multivariate` (the default) draws all
//! parameters of a candidate from one trial's kernel, so correlations between
//! parameters are kept; without it each parameter is modelled on its own, as hyperopt
//! does.
//!
//! Two defaults differ from Optuna's, because `bench/tpe.sh` measured them better on
//! every function of its suite when trials run one at a time (README, "Figures (issue
//! 17)"): the good set is the best `min(ceil(0.05 n), 25)` results (Optuna: 0.1), and
//! its kernels may be as narrow as `range / (m + 2)`, `m = sqrt(good · results / (1 +
//! running))`, instead of `range / (good + 2)` (Optuna's "magic clip"; both at most
//! `range / 100`). A small good set with
//! wide kernels explores; the narrower floor lets it refine the best region as results
//! accumulate, and falls back to Optuna's width while many trials run unseen.
//! [`Tpe::optuna`] gives Optuna's rules exactly.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use rand::{rngs::StdRng, Rng};
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{overlay, Searcher, Suggestion};
use crate::result::{rng_at, Mode};
use crate::space::{set_path, Config, Domain, Space};

/// A user's rule for the size of the good set, given the number of finished trials.
#[derive(Clone)]
pub struct GammaFn(Arc<dyn Fn(usize) -> usize + Send + Sync>);

impl fmt::Debug for GammaFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GammaFn")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tpe {
    n_startup: usize,
    n_candidates: usize,
    /// The fraction of results that count as good (at most 25 of them); see
    /// [`Tpe::n_good`].
    gamma: f64,
    /// Replaces `gamma` when set ([`Tpe::gamma_fn`]); not saved (code, not data).
    #[serde(skip)]
    gamma_fn: Option<GammaFn>,
    /// One kernel per trial over every parameter (Optuna 5's default) instead of one
    /// density per parameter.
    #[serde(default = "yes")]
    multivariate: bool,
    /// Running trials count as bad results (Optuna's `constant_liar`), so parallel
    /// suggestions spread out instead of piling onto one spot.
    #[serde(default = "yes")]
    constant_liar: bool,
    /// The weight of the prior (a normal over the whole range) against one trial's.
    #[serde(default = "one")]
    prior_weight: f64,
    /// The good set's kernels may narrow with the number of all results, not only the
    /// good set's (see the module's doc); off: Optuna's clip.
    #[serde(default = "yes")]
    sharp_good_kernels: bool,
    /// Let the kernels of the lowest and highest points reach to the range's ends
    /// (Optuna's `consider_endpoints`; off: their width is the gap to their neighbour).
    #[serde(default)]
    consider_endpoints: bool,
    seed: u64,
    /// The seed was given ([`Tpe::seed`]), not taken from the experiment.
    #[serde(default)]
    fixed_seed: bool,
    mode: Option<Mode>,
    num_samples: usize,
    asked: u64,
    points_to_evaluate: Vec<Config>,
    /// Finished trials, oldest first: config and score (higher is better).
    observations: Vec<(Config, f64)>,
    live: BTreeMap<String, Config>,
}

fn yes() -> bool {
    true
}

fn one() -> f64 {
    1.0
}

impl Default for Tpe {
    fn default() -> Self {
        Self::new()
    }
}

/// A numeric parameter in the coordinates TPE models it in (log for log domains).
struct Axis {
    /// Bounds as the user gave them (before the log), for clamping.
    bounds: (f64, f64),
    /// The modelled range: the bounds, widened by half a step on each side for
    /// parameters on a grid (each grid value owns the cell around it), in model
    /// coordinates.
    lo: f64,
    hi: f64,
    log: bool,
    int: bool,
    q: Option<f64>,
}

impl Axis {
    fn of(d: &Domain) -> Option<Axis> {
        let (lo, hi, log, int, q) = match d {
            Domain::Uniform { lo, hi, q } => (*lo, *hi, false, false, *q),
            Domain::LogUniform { lo, hi, q, .. } => (*lo, *hi, true, false, *q),
            Domain::RandInt { lo, hi, q } => (
                *lo as f64,
                (*hi - 1) as f64,
                false,
                true,
                q.map(|q| q as f64),
            ),
            Domain::LogRandInt { lo, hi, .. } => (*lo as f64, (*hi - 1) as f64, true, true, None),
            Domain::RandN { mean, sd, q } => {
                let mut a = Axis::of(&Domain::Uniform {
                    lo: mean - 4.0 * sd,
                    hi: mean + 4.0 * sd,
                    q: *q,
                })?;
                a.bounds = (f64::MIN, f64::MAX);
                return Some(a);
            }
            _ => return None,
        };
        let step = q.or(int.then_some(1.0));
        let half = step.map_or(0.0, |s| s / 2.0);
        let (mlo, mhi) = (lo - half, hi + half);
        let (mlo, mhi) = if log {
            (mlo.max(1e-300).ln(), mhi.ln())
        } else {
            (mlo, mhi)
        };
        Some(Axis {
            bounds: (lo, hi),
            lo: mlo,
            hi: mhi.max(mlo + 1e-12),
            log,
            int,
            q,
        })
    }
    fn to_model(&self, v: &Value) -> Option<f64> {
        let x = v.as_f64()?;
        Some(if self.log { x.max(1e-300).ln() } else { x })
    }
    fn discrete(&self) -> bool {
        self.int || self.q.is_some()
    }
    /// The grid value's cell in model coordinates, for parameters on a grid.
    fn cell(&self, y: f64) -> Option<(f64, f64)> {
        if !self.discrete() {
            return None;
        }
        let half = self.q.unwrap_or(1.0) / 2.0;
        let v = if self.log { y.exp() } else { y };
        let (a, b) = (v - half, v + half);
        Some(if self.log {
            (a.max(1e-300).ln().max(self.lo), b.ln().min(self.hi))
        } else {
            (a.max(self.lo), b.min(self.hi))
        })
    }
    /// A model coordinate moved onto the values the parameter can take (integers,
    /// quantized steps), so that a candidate is scored where it will be tried.
    fn snap(&self, y: f64) -> f64 {
        if !self.discrete() {
            return y;
        }
        self.to_value(y)
            .as_f64()
            .and_then(|v| self.to_model(&Value::from(v)))
            .unwrap_or(y)
    }
    fn to_value(&self, y: f64) -> Value {
        let mut x = if self.log { y.exp() } else { y };
        let (lo, hi) = self.bounds;
        if let Some(q) = self.q {
            x = (x / q).round() * q;
            // The widened range can round past the ends of the grid.
            while x > hi + 1e-9 * q.abs() {
                x -= q;
            }
            while x < lo - 1e-9 * q.abs() {
                x += q;
            }
        }
        if self.int {
            Value::from(x.round().clamp(lo.ceil(), hi.floor()) as i64)
        } else {
            serde_json::Number::from_f64(x.clamp(lo, hi)).map_or(Value::Null, Value::Number)
        }
    }
}

/// A dimension of the model.
enum Dim {
    Num { path: String, axis: Axis },
    Cat { path: String, values: Vec<Value> },
}

impl Dim {
    fn path(&self) -> &str {
        match self {
            Dim::Num { path, .. } | Dim::Cat { path, .. } => path,
        }
    }
}

/// One trial in model coordinates (`None` where its config has no such parameter).
type Point = Vec<Option<f64>>;

/// Φ, the standard normal's distribution function.
fn phi(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// The standard normal's mass between `za` and `zb`, accurate in either tail.
fn normal_mass(za: f64, zb: f64) -> f64 {
    if za > 0.0 {
        phi(-za) - phi(-zb)
    } else {
        phi(zb) - phi(za)
    }
}

/// Log density at `x` of a normal (`mu`, `sigma`) truncated to [`lo`, `hi`].
fn ln_trunc_normal(x: f64, mu: f64, sigma: f64, lo: f64, hi: f64) -> f64 {
    let mass = normal_mass((lo - mu) / sigma, (hi - mu) / sigma).max(1e-300);
    let z = (x - mu) / sigma;
    -0.5 * z * z - (sigma * (2.0 * std::f64::consts::PI).sqrt()).ln() - mass.ln()
}

/// Log probability of the cell [`a`, `b`] under that truncated normal (a grid value's).
fn ln_trunc_normal_cell(a: f64, b: f64, mu: f64, sigma: f64, lo: f64, hi: f64) -> f64 {
    let mass = normal_mass((lo - mu) / sigma, (hi - mu) / sigma).max(1e-300);
    let cell = normal_mass((a - mu) / sigma, (b - mu) / sigma).max(1e-300);
    cell.ln() - mass.ln()
}

/// A draw from that truncated normal (rejection: a kernel is centred in its range or
/// as wide as it, so most draws land; one that keeps missing falls back to uniform).
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

/// Optuna's weights of `n` trials, oldest first: equal up to 25, beyond that the
/// older ones fade linearly and the newest 25 keep full weight.
fn trial_weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    (0..ramp)
        .map(|i| {
            let (a, b) = (1.0 / n as f64, 1.0);
            if ramp == 1 {
                a
            } else {
                a + (b - a) * i as f64 / (ramp - 1) as f64
            }
        })
        .chain(std::iter::repeat_n(1.0, 25))
        .collect()
}

/// A dimension's kernels: one per trial, the prior last.
enum Kernels {
    Num { mus: Vec<f64>, sigmas: Vec<f64> },
    Cat { probs: Vec<Vec<f64>> },
}

/// Kernel widths of one numeric dimension: each point's larger gap to its neighbours
/// (or to the range's ends), clipped to [range / min(100, m + 2), range], `m` being
/// `clip_n` or the number of points, whichever is larger.
fn neighbour_sigmas(
    xs: &[f64],
    lo: f64,
    hi: f64,
    consider_endpoints: bool,
    clip_n: usize,
) -> Vec<f64> {
    let n = xs.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let sorted: Vec<f64> = std::iter::once(lo)
        .chain(order.iter().map(|&i| xs[i]))
        .chain(std::iter::once(hi))
        .collect();
    let mut s: Vec<f64> = (1..=n)
        .map(|k| (sorted[k] - sorted[k - 1]).max(sorted[k + 1] - sorted[k]))
        .collect();
    if !consider_endpoints && n >= 2 {
        s[0] = sorted[2] - sorted[1];
        s[n - 1] = sorted[n] - sorted[n - 1];
    }
    let range = hi - lo;
    let min_sigma = range / (100.0f64).min(clip_n.max(n) as f64 + 2.0);
    let mut out = vec![0.0; n];
    for (rank, &i) in order.iter().enumerate() {
        out[i] = s[rank].clamp(min_sigma, range);
    }
    out
}

/// A Parzen estimator over `dims`: the mixture of one product kernel per point (oldest
/// first) and a prior, the normal at the range's middle as wide as the range. `clip_n`
/// sets the narrowest kernel ([`neighbour_sigmas`]).
struct Estimator<'a> {
    dims: &'a [Dim],
    ln_weights: Vec<f64>,
    weights: Vec<f64>,
    kernels: Vec<Kernels>,
}

impl<'a> Estimator<'a> {
    fn new(dims: &'a [Dim], points: &[Point], tpe: &Tpe, clip_n: usize) -> Self {
        let n = points.len();
        let mut weights = trial_weights(n);
        weights.push(if n == 0 { 1.0 } else { tpe.prior_weight });
        let total: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
        let kernels = dims
            .iter()
            .enumerate()
            .map(|(i, dim)| match dim {
                Dim::Num { axis, .. } => {
                    let mid = 0.5 * (axis.lo + axis.hi);
                    let range = axis.hi - axis.lo;
                    let present: Vec<f64> = points.iter().filter_map(|p| p[i]).collect();
                    let mut widths = neighbour_sigmas(
                        &present,
                        axis.lo,
                        axis.hi,
                        tpe.consider_endpoints,
                        clip_n,
                    )
                    .into_iter();
                    let (mut mus, mut sigmas) = (Vec::new(), Vec::new());
                    for p in points {
                        match p[i] {
                            Some(x) => {
                                mus.push(x);
                                sigmas.push(widths.next().expect("one per present value"));
                            }
                            // A trial without this parameter (a conditional space): its
                            // kernel here is the prior's.
                            None => {
                                mus.push(mid);
                                sigmas.push(range);
                            }
                        }
                    }
                    mus.push(mid);
                    sigmas.push(range);
                    Kernels::Num { mus, sigmas }
                }
                Dim::Cat { values, .. } => {
                    let k = values.len();
                    let uniform = vec![1.0 / k as f64; k];
                    let spread = tpe.prior_weight / (n + 1) as f64;
                    let mut probs: Vec<Vec<f64>> = points
                        .iter()
                        .map(|p| match p[i] {
                            Some(c) => {
                                let mut row = vec![spread; k];
                                row[c as usize] += 1.0;
                                let sum: f64 = row.iter().sum();
                                row.iter().map(|w| w / sum).collect()
                            }
                            None => uniform.clone(),
                        })
                        .collect();
                    probs.push(uniform);
                    Kernels::Cat { probs }
                }
            })
            .collect();
        Estimator {
            dims,
            ln_weights: weights.iter().map(|w| w.max(1e-300).ln()).collect(),
            weights,
            kernels,
        }
    }

    /// Log density (probability on grids and categories) of a full point.
    fn ln_pdf(&self, x: &[f64]) -> f64 {
        let terms: Vec<f64> = (0..self.weights.len())
            .map(|j| {
                let mut ln = self.ln_weights[j];
                for (i, dim) in self.dims.iter().enumerate() {
                    ln += match (dim, &self.kernels[i]) {
                        (Dim::Num { axis, .. }, Kernels::Num { mus, sigmas }) => {
                            match axis.cell(x[i]) {
                                Some((a, b)) => {
                                    ln_trunc_normal_cell(a, b, mus[j], sigmas[j], axis.lo, axis.hi)
                                }
                                None => ln_trunc_normal(x[i], mus[j], sigmas[j], axis.lo, axis.hi),
                            }
                        }
                        (Dim::Cat { .. }, Kernels::Cat { probs }) => {
                            probs[j][x[i] as usize].max(1e-300).ln()
                        }
                        _ => unreachable!("kernels follow their dimension"),
                    };
                }
                ln
            })
            .collect();
        let max = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
    }

    /// A draw: one component, then each dimension from its kernel.
    fn sample(&self, rng: &mut StdRng) -> Vec<f64> {
        let j = pick(rng, &self.weights);
        self.dims
            .iter()
            .zip(&self.kernels)
            .map(|(dim, k)| match (dim, k) {
                (Dim::Num { axis, .. }, Kernels::Num { mus, sigmas }) => axis.snap(
                    sample_trunc_normal(rng, mus[j], sigmas[j], axis.lo, axis.hi),
                ),
                (Dim::Cat { .. }, Kernels::Cat { probs }) => pick(rng, &probs[j]) as f64,
                _ => unreachable!("kernels follow their dimension"),
            })
            .collect()
    }

    /// Of `n` draws from this (the good set's) density, the one with the highest ratio
    /// to `bad`'s.
    fn best_of(&self, bad: &Estimator, n: usize, rng: &mut StdRng) -> Vec<f64> {
        (0..n)
            .map(|_| self.sample(rng))
            .map(|x| {
                let score = self.ln_pdf(&x) - bad.ln_pdf(&x);
                (x, score)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("at least one candidate")
            .0
    }
}

/// An index drawn with the given probabilities (summing to 1).
fn pick(rng: &mut StdRng, probs: &[f64]) -> usize {
    let mut u = rng.random::<f64>();
    for (i, p) in probs.iter().enumerate() {
        if u < *p {
            return i;
        }
        u -= p;
    }
    probs.len() - 1
}

impl Tpe {
    /// 10 random trials first, 24 candidates, the best `min(ceil(0.05 n), 25)` results
    /// as the good set with kernels that narrow as results accumulate, one kernel per
    /// trial over all parameters, running trials counted as bad, prior weight 1, no
    /// endpoints. Optuna 5's defaults but for the good set (see the module's doc).
    pub fn new() -> Self {
        Tpe {
            n_startup: 10,
            n_candidates: 24,
            gamma: 0.05,
            gamma_fn: None,
            multivariate: true,
            constant_liar: true,
            sharp_good_kernels: true,
            prior_weight: 1.0,
            consider_endpoints: false,
            seed: 0,
            fixed_seed: false,
            mode: None,
            num_samples: 0,
            asked: 0,
            points_to_evaluate: Vec::new(),
            observations: Vec::new(),
            live: BTreeMap::new(),
        }
    }
    /// Optuna 5's `TPESampler()` rules exactly: the best `min(ceil(0.1 n), 25)` results
    /// as the good set, its kernels no narrower than `range / (good + 2)`.
    pub fn optuna() -> Self {
        Tpe::new().gamma(0.1).sharp_good_kernels(false)
    }
    /// Random trials before the model takes over (Optuna's `n_startup_trials`).
    pub fn n_startup(mut self, n: usize) -> Self {
        self.n_startup = n;
        self
    }
    /// Candidates drawn per suggestion (Optuna's `n_ei_candidates`).
    pub fn n_candidates(mut self, n: usize) -> Self {
        self.n_candidates = n.max(1);
        self
    }
    /// The good set is the best `ceil(g * n)` of `n` results, at most 25.
    pub fn gamma(mut self, g: f64) -> Self {
        self.gamma = g;
        self.gamma_fn = None;
        self
    }
    /// The good set's size as a function of the number of results (Optuna's `gamma`
    /// callable); kept between 1 and `n`.
    pub fn gamma_fn(mut self, f: impl Fn(usize) -> usize + Send + Sync + 'static) -> Self {
        self.gamma_fn = Some(GammaFn(Arc::new(f)));
        self
    }
    pub fn points_to_evaluate(mut self, points: Vec<Config>) -> Self {
        self.points_to_evaluate = points;
        self
    }
    /// `false`: one density per parameter (hyperopt's and Optuna's independent TPE).
    pub fn multivariate(mut self, on: bool) -> Self {
        self.multivariate = on;
        self
    }
    pub fn constant_liar(mut self, on: bool) -> Self {
        self.constant_liar = on;
        self
    }
    /// The prior's weight against one trial's kernel (Optuna's `prior_weight`).
    pub fn prior_weight(mut self, w: f64) -> Self {
        self.prior_weight = w;
        self
    }
    /// `false`: the good set's kernels are clipped by its own size, as Optuna does.
    pub fn sharp_good_kernels(mut self, on: bool) -> Self {
        self.sharp_good_kernels = on;
        self
    }
    /// Optuna's `consider_endpoints`.
    pub fn consider_endpoints(mut self, on: bool) -> Self {
        self.consider_endpoints = on;
        self
    }
    /// A fixed seed instead of the experiment's.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self.fixed_seed = true;
        self
    }

    /// How many of `n` results form the good set: `ceil(gamma * n)`, at most 25 (Optuna's
    /// default rule), or the user's rule; at least 1.
    fn n_good(&self, n: usize) -> usize {
        let g = match &self.gamma_fn {
            Some(f) => (f.0)(n),
            None => ((self.gamma * n as f64).ceil() as usize).min(25),
        };
        g.clamp(1, n.max(1))
    }

    /// The count that sets the good kernels' narrowest width: the good set's size
    /// (Optuna), or `sqrt(good · results / (1 + running))` with sharp good kernels.
    fn good_clip(&self, good: usize) -> usize {
        if !self.sharp_good_kernels {
            return good;
        }
        let results = self.observations.len() as f64;
        let running = self.live.len() as f64;
        ((good as f64 * results / (1.0 + running)).sqrt() as usize).max(good)
    }

    /// The good and bad sets, each oldest first; running trials join the bad one
    /// (constant liar).
    fn split(&self) -> (Vec<&Config>, Vec<&Config>) {
        let mut order: Vec<usize> = (0..self.observations.len()).collect();
        order.sort_by(|&a, &b| self.observations[b].1.total_cmp(&self.observations[a].1));
        let n_good = self.n_good(order.len()).min(order.len());
        let mut good_ix = order[..n_good].to_vec();
        let mut bad_ix = order[n_good..].to_vec();
        good_ix.sort_unstable();
        bad_ix.sort_unstable();
        let good = good_ix.iter().map(|&i| &self.observations[i].0).collect();
        let mut bad: Vec<&Config> = bad_ix.iter().map(|&i| &self.observations[i].0).collect();
        if self.constant_liar {
            bad.extend(self.live.values());
        }
        (good, bad)
    }

    /// The model's suggestion: candidates drawn from the good set's density, the one
    /// with the highest ratio to the bad set's density kept (per parameter when not
    /// multivariate).
    fn model_suggestion(&self, space: &Space, rng: &mut StdRng) -> Config {
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
        let (good, bad) = self.split();
        let points = |cs: &[&Config], dims: &[Dim]| -> Vec<Point> {
            cs.iter()
                .map(|c| {
                    dims.iter()
                        .map(|dim| match dim {
                            Dim::Num { path, axis } => c.value(path).and_then(|v| axis.to_model(v)),
                            Dim::Cat { path, values } => c
                                .value(path)
                                .and_then(|v| values.iter().position(|x| x == v))
                                .map(|i| i as f64),
                        })
                        .collect()
                })
                .collect()
        };
        let groups: Vec<&[Dim]> = if self.multivariate {
            vec![&dims[..]]
        } else {
            dims.chunks(1).collect()
        };
        for group in groups {
            let l = Estimator::new(
                group,
                &points(&good, group),
                self,
                self.good_clip(good.len()),
            );
            let g = Estimator::new(group, &points(&bad, group), self, 0);
            let best = l.best_of(&g, self.n_candidates, rng);
            for (dim, x) in group.iter().zip(best) {
                let v = match dim {
                    Dim::Num { axis, .. } => axis.to_value(x),
                    Dim::Cat { values, .. } => values[x as usize].clone(),
                };
                set_path(&mut cfg.0, dim.path(), v);
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
        if self.gamma_fn.is_none() && (!(0.0..1.0).contains(&self.gamma) || self.gamma == 0.0) {
            return Err("TPE: gamma must be between 0 and 1".into());
        }
        if !(self.prior_weight.is_finite() && self.prior_weight > 0.0) {
            return Err("TPE: prior_weight must be a positive number".into());
        }
        self.mode = Some(mode);
        self.num_samples = num_samples;
        if !self.fixed_seed {
            self.seed = seed;
        }
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
    /// Takes the saved search's progress (seed, trials asked, results, running trials);
    /// the settings stay those this searcher was made with (a `gamma_fn` is code).
    fn restore(&mut self, state: Value) -> Result<(), String> {
        let saved: Tpe = serde_json::from_value(state)
            .map_err(|e| format!("saved TPE state does not fit: {e}"))?;
        self.seed = saved.seed;
        self.mode = saved.mode;
        self.num_samples = saved.num_samples;
        self.asked = saved.asked;
        self.observations = saved.observations;
        self.live = saved.live;
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
    fn the_good_set_is_a_twentieth_of_the_results_at_most_25_or_a_tenth_as_optuna() {
        let t = Tpe::new();
        assert_eq!(t.n_good(1), 1);
        assert_eq!(t.n_good(21), 2);
        assert_eq!(t.n_good(100), 5);
        assert_eq!(t.n_good(1000), 25);
        let o = Tpe::optuna();
        assert_eq!(o.n_good(11), 2);
        assert_eq!(o.n_good(100), 10);
        assert_eq!(o.n_good(1000), 25);
    }

    #[test]
    fn good_kernels_narrow_with_all_results_and_widen_back_while_trials_run() {
        let sp = Space::new().with("x", uniform(0.0, 1.0));
        let mut t = Tpe::new();
        t.setup(&sp, "y", Mode::Min, 200, 1).unwrap();
        for i in 0..100 {
            let id = i.to_string();
            let Suggestion::Config(c) = t.suggest(&sp, &id) else {
                panic!()
            };
            t.on_trial_complete(&id, Some(c.f64("x")), false);
        }
        // 5 good of 100 results: sqrt(5 * 100) = 22; Optuna clips by the 5 alone.
        assert_eq!(t.good_clip(5), 22);
        assert_eq!(t.clone().sharp_good_kernels(false).good_clip(5), 5);
        // Seven trials running: sqrt(5 * 100 / 8) = 7.
        for i in 100..107 {
            t.suggest(&sp, &i.to_string());
        }
        assert_eq!(t.good_clip(5), 7);
        // The clip is the narrowest width: range / (m + 2).
        let w = neighbour_sigmas(&[0.5, 0.5001, 0.5002], 0.0, 1.0, false, 22);
        assert!(w.iter().all(|s| (s - 1.0 / 24.0).abs() < 1e-12), "{w:?}");
        let w = neighbour_sigmas(&[0.5, 0.5001, 0.5002], 0.0, 1.0, false, 0);
        assert!(w.iter().all(|s| (s - 1.0 / 5.0).abs() < 1e-12), "{w:?}");
    }

    #[test]
    fn the_default_rules_find_better_configs_than_optunas_over_several_seeds() {
        let seeds = 0..8;
        let ours: f64 = seeds
            .clone()
            .map(|s| best_after(&mut Tpe::new(), 80, s))
            .sum();
        let optuna: f64 = seeds.map(|s| best_after(&mut Tpe::optuna(), 80, s)).sum();
        assert!(
            ours < optuna,
            "sunray {ours:.4} vs Optuna's rules {optuna:.4}"
        );
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

    #[test]
    fn a_gamma_function_sets_the_good_sets_size() {
        let t = Tpe::new().gamma_fn(|n| n / 2);
        assert_eq!(t.n_good(10), 5);
        assert_eq!(t.n_good(1), 1, "at least one");
        let t = Tpe::new().gamma_fn(|n| n + 5);
        assert_eq!(t.n_good(4), 4, "at most all");
        assert_eq!(Tpe::new().gamma(0.25).n_good(8), 2);
    }

    #[test]
    fn kernel_widths_are_the_larger_gap_to_a_neighbour() {
        let close = |got: Vec<f64>, want: [f64; 3]| {
            assert!(
                got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12),
                "{got:?}"
            );
        };
        // 0.7, 0.2, 0.3 on [0, 1] with the ends as neighbours: 0.2 is 0.2 from 0, 0.3 is
        // 0.4 from 0.7, 0.7 is 0.4 from 0.3 (in the order given).
        close(
            neighbour_sigmas(&[0.7, 0.2, 0.3], 0.0, 1.0, true, 0),
            [0.4, 0.2, 0.4],
        );
        // 0.5, 0.6, 0.7: with the ends, the outer points reach to 0 and 1 ...
        close(
            neighbour_sigmas(&[0.5, 0.6, 0.7], 0.0, 1.0, true, 0),
            [0.5, 0.2, 0.3],
        );
        // ... without (Optuna's default) they take the inner gap, 0.1, which the clip at
        // range / min(100, n + 2) = 0.2 raises.
        close(
            neighbour_sigmas(&[0.5, 0.6, 0.7], 0.0, 1.0, false, 0),
            [0.2, 0.2, 0.2],
        );
    }

    #[test]
    fn older_trials_fade_beyond_25() {
        assert_eq!(trial_weights(3), vec![1.0; 3]);
        let w = trial_weights(30);
        assert_eq!(w.len(), 30);
        assert!((w[0] - 1.0 / 30.0).abs() < 1e-12);
        assert!((w[4] - 1.0).abs() < 1e-12, "the ramp ends at 1");
        assert!(w[..5].windows(2).all(|p| p[0] < p[1]));
        assert!(w[5..].iter().all(|x| *x == 1.0));
    }

    #[test]
    fn grid_values_share_all_of_the_probability() {
        // randint(0, 10): values 0..=9, each owning [v - 0.5, v + 0.5].
        let axis = Axis::of(&randint(0, 10)).unwrap();
        assert_eq!((axis.lo, axis.hi), (-0.5, 9.5));
        for (mu, sigma) in [(0.0, 0.7), (4.2, 3.0), (9.0, 10.0)] {
            let total: f64 = (0..10)
                .map(|v| {
                    let (a, b) = axis.cell(v as f64).unwrap();
                    ln_trunc_normal_cell(a, b, mu, sigma, axis.lo, axis.hi).exp()
                })
                .sum();
            assert!((total - 1.0).abs() < 1e-9, "{mu} {sigma}: {total}");
        }
        // A log grid: lograndint(1, 100) has 1..=99, cells in log space.
        let log = Axis::of(&crate::space::lograndint(1, 100)).unwrap();
        let total: f64 = (1..100)
            .map(|v| {
                let (a, b) = log.cell((v as f64).ln()).unwrap();
                ln_trunc_normal_cell(a, b, 1.0, 2.0, log.lo, log.hi).exp()
            })
            .sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        // Values drawn on a grid are grid values inside the bounds.
        let q = Axis::of(&crate::space::quniform(0.0, 1.0, 0.25)).unwrap();
        for y in [-0.12, 0.0, 0.3, 0.99, 1.12] {
            let v = q.to_value(y).as_f64().unwrap();
            assert!([0.0, 0.25, 0.5, 0.75, 1.0].contains(&v), "{y} -> {v}");
        }
    }

    #[test]
    fn categories_lean_on_what_a_trial_chose() {
        let dims = [Dim::Cat {
            path: "c".into(),
            values: vec!["a".into(), "b".into(), "c".into()],
        }];
        let t = Tpe::new();
        // Three trials all chose "b": each kernel puts 1 + 1/4 of 1 + 3/4 on it.
        let pts: Vec<Point> = vec![vec![Some(1.0)]; 3];
        let e = Estimator::new(&dims, &pts, &t, 0);
        let p_b = e.ln_pdf(&[1.0]).exp();
        let p_a = e.ln_pdf(&[0.0]).exp();
        let want_b = 0.75 * (1.25 / 1.75) + 0.25 / 3.0;
        assert!((p_b - want_b).abs() < 1e-12, "{p_b} vs {want_b}");
        assert!((p_a + p_b + e.ln_pdf(&[2.0]).exp() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_restored_search_makes_the_same_suggestions_as_one_never_stopped() {
        let sp = space();
        let drive = |t: &mut Tpe, from: usize, to: usize| -> Vec<Config> {
            (from..to)
                .map(|i| {
                    let Suggestion::Config(c) = t.suggest(&sp, &i.to_string()) else {
                        panic!()
                    };
                    // Every other trial still runs when the search is saved.
                    if i % 2 == 0 || i + 1 < to {
                        t.on_trial_complete(&i.to_string(), Some(loss(&c)), false);
                    }
                    c
                })
                .collect()
        };
        let mut whole = Tpe::new().n_startup(5);
        whole.setup(&sp, "loss", Mode::Min, 40, 9).unwrap();
        let first = drive(&mut whole, 0, 20);
        let saved = whole.save();
        let rest = drive(&mut whole, 20, 40);
        let mut again = Tpe::new().n_startup(5);
        again.setup(&sp, "loss", Mode::Min, 40, 123).unwrap();
        again.restore(saved).unwrap();
        assert_eq!(drive(&mut again, 20, 40), rest);
        assert_eq!(first.len(), 20);
    }

    #[test]
    fn parallel_suggestions_spread_out() {
        // Eight asked before any result: with constant liar each sees the others as bad
        // results, so they do not repeat one another.
        let sp = Space::new().with("x", uniform(0.0, 1.0));
        let mut t = Tpe::new().n_startup(5);
        t.setup(&sp, "y", Mode::Min, 100, 2).unwrap();
        for i in 0..20 {
            let Suggestion::Config(c) = t.suggest(&sp, &i.to_string()) else {
                panic!()
            };
            t.on_trial_complete(&i.to_string(), Some((c.f64("x") - 0.3).abs()), false);
        }
        let spread = |t: &mut Tpe| -> f64 {
            let xs: Vec<f64> = (100..108)
                .map(|i| match t.suggest(&sp, &i.to_string()) {
                    Suggestion::Config(c) => c.f64("x"),
                    _ => panic!(),
                })
                .collect();
            let mean = xs.iter().sum::<f64>() / 8.0;
            xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 8.0
        };
        let liar = spread(&mut t.clone());
        let honest = spread(&mut t.clone().constant_liar(false));
        assert!(
            liar > honest,
            "variance with liar {liar} vs without {honest}"
        );
    }
}
