//! Search spaces: the `tune.uniform(...)`, `tune.choice(...)`, `tune.grid_search(...)`
//! family, nested parameters, and resolving a space into one trial's config.

use std::fmt;
use std::sync::Arc;

use rand::{rngs::StdRng, Rng};
use rand_distr::{Distribution, Normal};
use serde_json::{Map, Value};

/// A trial's hyperparameters: a JSON object (nested objects for nested parameters).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Config(pub Map<String, Value>);

impl Config {
    /// The value at `path` ("lr", or "model.depth" for nested parameters).
    pub fn value(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut v = self.0.get(parts.next()?)?;
        for p in parts {
            v = v.as_object()?.get(p)?;
        }
        Some(v)
    }
    /// A number (integers included); panics with the key's name when absent, as a
    /// trainable reading its own search space wants.
    pub fn f64(&self, path: &str) -> f64 {
        self.value(path)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("config has no number at `{path}`: {self}"))
    }
    /// An integer (a float with no fractional part is accepted).
    pub fn i64(&self, path: &str) -> i64 {
        self.value(path)
            .and_then(|v| {
                v.as_i64()
                    .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            })
            .unwrap_or_else(|| panic!("config has no integer at `{path}`: {self}"))
    }
    pub fn str(&self, path: &str) -> &str {
        self.value(path)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("config has no string at `{path}`: {self}"))
    }
    /// The whole config as a user's own struct.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(Value::Object(self.0.clone()))
    }
    /// `key=value` pairs of the leaves, for trial names and tables.
    pub fn flat(&self) -> Vec<(String, Value)> {
        fn walk(prefix: &str, m: &Map<String, Value>, out: &mut Vec<(String, Value)>) {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}/{k}")
                };
                match v {
                    Value::Object(inner) => walk(&key, inner, out),
                    _ => out.push((key, v.clone())),
                }
            }
        }
        let mut out = Vec::new();
        walk("", &self.0, &mut out);
        out
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Value::Object(self.0.clone()))
    }
}

type SampleFn = Arc<dyn Fn(&mut StdRng, &Config) -> Value + Send + Sync>;

/// One parameter's distribution (or a constant, a grid, a nested space).
#[derive(Clone)]
pub enum Domain {
    Const(Value),
    Uniform {
        lo: f64,
        hi: f64,
        q: Option<f64>,
    },
    LogUniform {
        lo: f64,
        hi: f64,
        base: f64,
        q: Option<f64>,
    },
    /// Integers in `lo..hi` (`hi` exclusive, as Ray's `randint`), quantised to `q`.
    RandInt {
        lo: i64,
        hi: i64,
        q: Option<i64>,
    },
    LogRandInt {
        lo: i64,
        hi: i64,
        base: f64,
    },
    RandN {
        mean: f64,
        sd: f64,
        q: Option<f64>,
    },
    Choice(Vec<Value>),
    Grid(Vec<Value>),
    SampleFrom(SampleFn),
    Nested(Space),
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Const(v) => write!(f, "{v}"),
            Domain::Uniform { lo, hi, q } => write!(f, "uniform({lo}, {hi}, q={q:?})"),
            Domain::LogUniform { lo, hi, base, q } => {
                write!(f, "loguniform({lo}, {hi}, base={base}, q={q:?})")
            }
            Domain::RandInt { lo, hi, q } => write!(f, "randint({lo}, {hi}, q={q:?})"),
            Domain::LogRandInt { lo, hi, base } => write!(f, "lograndint({lo}, {hi}, {base})"),
            Domain::RandN { mean, sd, q } => write!(f, "randn({mean}, {sd}, q={q:?})"),
            Domain::Choice(v) => write!(f, "choice({v:?})"),
            Domain::Grid(v) => write!(f, "grid_search({v:?})"),
            Domain::SampleFrom(_) => write!(f, "sample_from(<fn>)"),
            Domain::Nested(s) => write!(f, "{s:?}"),
        }
    }
}

fn check(ok: bool, what: &str) {
    assert!(ok, "invalid search space: {what}");
}

/// Uniform float in `[lo, hi)`.
pub fn uniform(lo: f64, hi: f64) -> Domain {
    check(lo < hi, "uniform needs lower < upper");
    Domain::Uniform { lo, hi, q: None }
}
/// Uniform float rounded to a multiple of `q`.
pub fn quniform(lo: f64, hi: f64, q: f64) -> Domain {
    check(lo < hi && q > 0.0, "quniform needs lower < upper and q > 0");
    Domain::Uniform { lo, hi, q: Some(q) }
}
/// Float whose logarithm is uniform (base 10, as Ray; the base does not change the law).
pub fn loguniform(lo: f64, hi: f64) -> Domain {
    loguniform_base(lo, hi, 10.0)
}
pub fn loguniform_base(lo: f64, hi: f64, base: f64) -> Domain {
    check(0.0 < lo && lo < hi, "loguniform needs 0 < lower < upper");
    Domain::LogUniform {
        lo,
        hi,
        base,
        q: None,
    }
}
pub fn qloguniform(lo: f64, hi: f64, q: f64) -> Domain {
    check(
        0.0 < lo && lo < hi && q > 0.0,
        "qloguniform needs 0 < lower < upper, q > 0",
    );
    Domain::LogUniform {
        lo,
        hi,
        base: 10.0,
        q: Some(q),
    }
}
/// Integer in `lo..hi`: the upper bound is exclusive, as in Ray.
pub fn randint(lo: i64, hi: i64) -> Domain {
    check(lo < hi, "randint needs lower < upper (upper is exclusive)");
    Domain::RandInt { lo, hi, q: None }
}
/// Integer in `lo..=hi` that is a multiple of `q`: inclusive, as Ray's `qrandint`.
pub fn qrandint(lo: i64, hi: i64, q: i64) -> Domain {
    check(lo <= hi && q > 0, "qrandint needs lower <= upper and q > 0");
    Domain::RandInt {
        lo,
        hi: hi + 1,
        q: Some(q),
    }
}
/// Integer in `lo..hi` whose logarithm is uniform.
pub fn lograndint(lo: i64, hi: i64) -> Domain {
    check(0 < lo && lo < hi, "lograndint needs 0 < lower < upper");
    Domain::LogRandInt { lo, hi, base: 10.0 }
}
/// Normal with this mean and standard deviation.
pub fn randn(mean: f64, sd: f64) -> Domain {
    check(sd > 0.0, "randn needs sd > 0");
    Domain::RandN { mean, sd, q: None }
}
pub fn qrandn(mean: f64, sd: f64, q: f64) -> Domain {
    check(sd > 0.0 && q > 0.0, "qrandn needs sd > 0 and q > 0");
    Domain::RandN {
        mean,
        sd,
        q: Some(q),
    }
}
/// One of these values, each equally likely.
pub fn choice<T: Into<Value>>(values: impl IntoIterator<Item = T>) -> Domain {
    let v: Vec<Value> = values.into_iter().map(Into::into).collect();
    check(!v.is_empty(), "choice needs at least one value");
    Domain::Choice(v)
}
/// Every value, each in its own trial (the grid is repeated `num_samples` times).
pub fn grid_search<T: Into<Value>>(values: impl IntoIterator<Item = T>) -> Domain {
    let v: Vec<Value> = values.into_iter().map(Into::into).collect();
    check(!v.is_empty(), "grid_search needs at least one value");
    Domain::Grid(v)
}
/// A value computed by `f` from the trial's RNG and the config sampled so far (every
/// parameter that is not itself a `sample_from` is there already).
pub fn sample_from<V: Into<Value>>(
    f: impl Fn(&mut StdRng, &Config) -> V + Send + Sync + 'static,
) -> Domain {
    Domain::SampleFrom(Arc::new(move |r, c| f(r, c).into()))
}

fn quantize(x: f64, q: Option<f64>) -> f64 {
    match q {
        Some(q) => (x / q).round() * q,
        None => x,
    }
}

impl Domain {
    /// Draws a value (grids and nested spaces are resolved by [`Space`]).
    pub fn sample(&self, rng: &mut StdRng, partial: &Config) -> Value {
        match self {
            Domain::Const(v) => v.clone(),
            Domain::Uniform { lo, hi, q } => num(quantize(rng.random_range(*lo..*hi), *q)),
            Domain::LogUniform { lo, hi, base, q } => {
                let (a, b) = (lo.log(*base), hi.log(*base));
                let x = base.powf(rng.random_range(a..b));
                num(quantize(x, *q).clamp(*lo, *hi))
            }
            Domain::RandInt { lo, hi, q } => {
                let x = rng.random_range(*lo..*hi);
                Value::from(match q {
                    Some(q) => ((x as f64 / *q as f64).round() as i64 * q).clamp(*lo, *hi - 1),
                    None => x,
                })
            }
            Domain::LogRandInt { lo, hi, base } => {
                let (a, b) = ((*lo as f64).log(*base), (*hi as f64).log(*base));
                let x = base.powf(rng.random_range(a..b)).floor() as i64;
                Value::from(x.clamp(*lo, *hi - 1))
            }
            Domain::RandN { mean, sd, q } => {
                let n = Normal::new(*mean, *sd).expect("checked at construction");
                num(quantize(n.sample(rng), *q))
            }
            Domain::Choice(v) | Domain::Grid(v) => v[rng.random_range(0..v.len())].clone(),
            Domain::SampleFrom(f) => f(rng, partial),
            Domain::Nested(s) => Value::Object(s.sample(rng).0),
        }
    }
    /// The range of a bounded numeric domain.
    pub fn bounds(&self) -> Option<(f64, f64)> {
        match self {
            Domain::Uniform { lo, hi, .. } | Domain::LogUniform { lo, hi, .. } => Some((*lo, *hi)),
            Domain::RandInt { lo, hi, .. } | Domain::LogRandInt { lo, hi, .. } => {
                Some((*lo as f64, (*hi - 1) as f64))
            }
            _ => None,
        }
    }
    /// Is this a numeric range (what TPE and PBT know how to model)?
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            Domain::Uniform { .. }
                | Domain::LogUniform { .. }
                | Domain::RandInt { .. }
                | Domain::LogRandInt { .. }
                | Domain::RandN { .. }
        )
    }
}

fn num(x: f64) -> Value {
    serde_json::Number::from_f64(x)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

impl From<Space> for Domain {
    fn from(s: Space) -> Self {
        Domain::Nested(s)
    }
}
macro_rules! const_domain {
    ($($t:ty),*) => {$(
        impl From<$t> for Domain {
            fn from(v: $t) -> Self { Domain::Const(Value::from(v)) }
        }
    )*};
}
const_domain!(f64, f32, i64, i32, u32, u64, usize, bool, &str, String);
impl From<Value> for Domain {
    fn from(v: Value) -> Self {
        Domain::Const(v)
    }
}

/// A search space: named parameters, in the order given.
#[derive(Clone, Default, Debug)]
pub struct Space {
    params: Vec<(String, Domain)>,
}

impl Space {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds (or replaces) a parameter: a [`Domain`], a constant, or a nested `Space`.
    pub fn with(mut self, name: &str, domain: impl Into<Domain>) -> Self {
        let d = domain.into();
        match self.params.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = d,
            None => self.params.push((name.to_string(), d)),
        }
        self
    }
    pub fn params(&self) -> &[(String, Domain)] {
        &self.params
    }
    /// Every leaf parameter with its dotted path.
    pub fn leaves(&self) -> Vec<(String, &Domain)> {
        let mut out = Vec::new();
        for (n, d) in &self.params {
            match d {
                Domain::Nested(s) => {
                    out.extend(s.leaves().into_iter().map(|(p, d)| (format!("{n}.{p}"), d)))
                }
                _ => out.push((n.clone(), d)),
            }
        }
        out
    }
    /// The grid's points: every combination of the `grid_search` values, the first
    /// parameter varying slowest. One empty point when there is no grid.
    pub fn grid_points(&self) -> Vec<Vec<(String, Value)>> {
        let mut points: Vec<Vec<(String, Value)>> = vec![Vec::new()];
        for (path, d) in self.leaves() {
            if let Domain::Grid(values) = d {
                points = points
                    .into_iter()
                    .flat_map(|p| {
                        let path = path.clone();
                        values.iter().map(move |v| {
                            let mut p = p.clone();
                            p.push((path.clone(), v.clone()));
                            p
                        })
                    })
                    .collect();
            }
        }
        points
    }
    /// A config with grid values taken from `grid` and everything else drawn from
    /// `rng`: plain domains first, then `sample_from`s, which see those.
    pub fn resolve(&self, rng: &mut StdRng, grid: &[(String, Value)]) -> Config {
        let mut cfg = Config::default();
        let leaves = self.leaves();
        for pass_sample_from in [false, true] {
            for (path, d) in &leaves {
                if matches!(d, Domain::SampleFrom(_)) != pass_sample_from {
                    continue;
                }
                let v = match d {
                    Domain::Grid(_) => grid
                        .iter()
                        .find(|(p, _)| p == path)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_else(|| d.sample(rng, &cfg)),
                    _ => d.sample(rng, &cfg),
                };
                set_path(&mut cfg.0, path, v);
            }
        }
        // Keep the space's order for nested objects created by sample_from passes.
        cfg
    }
    /// A random config (grids sampled as choices).
    pub fn sample(&self, rng: &mut StdRng) -> Config {
        self.resolve(rng, &[])
    }
    pub fn has_grid(&self) -> bool {
        self.leaves()
            .iter()
            .any(|(_, d)| matches!(d, Domain::Grid(_)))
    }
}

/// Sets `a.b.c` in a JSON object, creating the nested objects on the way.
pub fn set_path(m: &mut Map<String, Value>, path: &str, v: Value) {
    match path.split_once('.') {
        None => {
            m.insert(path.to_string(), v);
        }
        Some((head, rest)) => {
            let inner = m
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !inner.is_object() {
                *inner = Value::Object(Map::new());
            }
            set_path(inner.as_object_mut().expect("made an object"), rest, v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng(s: u64) -> StdRng {
        StdRng::seed_from_u64(s)
    }

    #[test]
    fn every_domain_stays_in_its_bounds_and_quantises() {
        let mut r = rng(1);
        let c = Config::default();
        for _ in 0..2000 {
            let x = uniform(-1.0, 2.0).sample(&mut r, &c).as_f64().unwrap();
            assert!((-1.0..2.0).contains(&x));
            let x = quniform(0.0, 1.0, 0.25)
                .sample(&mut r, &c)
                .as_f64()
                .unwrap();
            assert!([0.0, 0.25, 0.5, 0.75, 1.0].contains(&x), "{x}");
            let x = loguniform(1e-4, 1e-1).sample(&mut r, &c).as_f64().unwrap();
            assert!((1e-4..=1e-1).contains(&x));
            let x = loguniform_base(1.0, 1024.0, 2.0)
                .sample(&mut r, &c)
                .as_f64()
                .unwrap();
            assert!((1.0..=1024.0).contains(&x));
            let x = qloguniform(1.0, 100.0, 5.0)
                .sample(&mut r, &c)
                .as_f64()
                .unwrap();
            assert!((x / 5.0).fract() == 0.0 || x == 1.0 || x == 100.0, "{x}");
            let x = randint(2, 9).sample(&mut r, &c).as_i64().unwrap();
            assert!((2..9).contains(&x), "randint upper bound is exclusive");
            let x = qrandint(0, 10, 5).sample(&mut r, &c).as_i64().unwrap();
            assert!([0, 5, 10].contains(&x), "qrandint is inclusive: {x}");
            let x = lograndint(1, 1000).sample(&mut r, &c).as_i64().unwrap();
            assert!((1..1000).contains(&x));
            let x = qrandn(0.0, 1.0, 0.5).sample(&mut r, &c).as_f64().unwrap();
            assert_eq!((x / 0.5).fract(), 0.0);
            let x = choice([2, 4, 8, 16]).sample(&mut r, &c).as_i64().unwrap();
            assert!([2, 4, 8, 16].contains(&x));
        }
    }

    #[test]
    fn randint_reaches_every_value_but_the_upper_bound() {
        let mut r = rng(2);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let x = randint(2, 9)
                .sample(&mut r, &Config::default())
                .as_i64()
                .unwrap();
            seen[(x - 2) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn randn_has_its_mean_and_loguniform_its_log_median() {
        let mut r = rng(3);
        let c = Config::default();
        let n = 20000;
        let mean: f64 = (0..n)
            .map(|_| randn(5.0, 2.0).sample(&mut r, &c).as_f64().unwrap())
            .sum::<f64>()
            / n as f64;
        assert!((mean - 5.0).abs() < 0.1, "{mean}");
        let below = (0..n)
            .filter(|_| loguniform(1e-4, 1.0).sample(&mut r, &c).as_f64().unwrap() < 1e-2)
            .count();
        let frac = below as f64 / n as f64;
        assert!(
            (frac - 0.5).abs() < 0.02,
            "half the draws lie below the log midpoint: {frac}"
        );
    }

    #[test]
    fn grid_is_the_cartesian_product_first_parameter_slowest() {
        let s = Space::new()
            .with("a", grid_search([1, 2]))
            .with("lr", uniform(0.0, 1.0))
            .with("m", Space::new().with("b", grid_search(["x", "y", "z"])));
        let pts = s.grid_points();
        assert_eq!(pts.len(), 6);
        assert_eq!(
            pts[0],
            vec![("a".into(), 1.into()), ("m.b".into(), "x".into())]
        );
        assert_eq!(pts[1][1].1, Value::from("y"));
        assert_eq!(pts[3][0].1, Value::from(2));
        let c = s.resolve(&mut rng(0), &pts[5]);
        assert_eq!(c.i64("a"), 2);
        assert_eq!(c.str("m.b"), "z");
        assert!((0.0..1.0).contains(&c.f64("lr")));
    }

    #[test]
    fn sample_from_sees_the_other_parameters_and_nesting_works() {
        let s = Space::new()
            .with("double", sample_from(|_, c: &Config| c.i64("base") * 2))
            .with("base", randint(1, 100))
            .with(
                "model",
                Space::new().with("depth", 3).with("act", choice(["relu"])),
            );
        let c = s.sample(&mut rng(9));
        assert_eq!(c.i64("double"), 2 * c.i64("base"));
        assert_eq!(c.i64("model.depth"), 3);
        assert_eq!(c.str("model.act"), "relu");
        let flat: Vec<String> = c.flat().into_iter().map(|(k, _)| k).collect();
        assert!(flat.contains(&"model/depth".to_string()));
    }

    #[test]
    fn the_same_seed_gives_the_same_configs() {
        let s = Space::new().with("lr", loguniform(1e-4, 1e-1)).with(
            "l1",
            sample_from(|r: &mut StdRng, _: &Config| 1i64 << r.random_range(2..9)),
        );
        let a: Vec<Config> = (0..5).map(|i| s.sample(&mut rng(i))).collect();
        let b: Vec<Config> = (0..5).map(|i| s.sample(&mut rng(i))).collect();
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
    }

    #[test]
    #[should_panic(expected = "randint needs lower < upper")]
    fn a_wrong_range_is_refused_with_its_reason() {
        randint(5, 5);
    }
}
