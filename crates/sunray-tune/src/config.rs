//! What a user configures: `TuneConfig` (how to search) and `RunConfig` (where results
//! go, when to stop, checkpoints, failures, output), as in Ray Tune.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::result::{Mode, TrialResult};
use crate::schedulers::{Fifo, TrialScheduler};
use crate::search::{BasicVariantGenerator, Searcher};

/// How to search: metric and mode, how many trials, which scheduler and searcher.
pub struct TuneConfig {
    pub metric: Option<String>,
    pub mode: Option<Mode>,
    /// Trials to run (with grid_search: times the grid is repeated). Default 1.
    pub num_samples: usize,
    pub scheduler: Box<dyn TrialScheduler>,
    pub search_alg: Box<dyn Searcher>,
    /// At most this many trials at once (default: as many as the cluster's resources fit).
    pub max_concurrent_trials: Option<usize>,
    /// Stop everything after this long.
    pub time_budget: Option<Duration>,
    /// Seed of every random draw (configs, bracket choices, PBT). Default 0.
    pub seed: u64,
}

impl Default for TuneConfig {
    fn default() -> Self {
        TuneConfig {
            metric: None,
            mode: None,
            num_samples: 1,
            scheduler: Box::new(Fifo),
            search_alg: Box::new(BasicVariantGenerator::new()),
            max_concurrent_trials: None,
            time_budget: None,
            seed: 0,
        }
    }
}

impl TuneConfig {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn metric(mut self, metric: &str, mode: Mode) -> Self {
        self.metric = Some(metric.into());
        self.mode = Some(mode);
        self
    }
    pub fn num_samples(mut self, n: usize) -> Self {
        self.num_samples = n;
        self
    }
    pub fn scheduler(mut self, s: impl TrialScheduler + 'static) -> Self {
        self.scheduler = Box::new(s);
        self
    }
    pub fn search_alg(mut self, s: impl Searcher + 'static) -> Self {
        self.search_alg = Box::new(s);
        self
    }
    pub fn max_concurrent_trials(mut self, n: usize) -> Self {
        self.max_concurrent_trials = Some(n);
        self
    }
    pub fn time_budget(mut self, d: Duration) -> Self {
        self.time_budget = Some(d);
        self
    }
    pub fn seed(mut self, s: u64) -> Self {
        self.seed = s;
        self
    }
}

type StopFn = Arc<dyn Fn(&str, &TrialResult) -> bool + Send + Sync>;

/// When a trial is done regardless of the scheduler (Ray's `stop=`): any criterion met.
#[derive(Clone, Default)]
pub struct Stop {
    pub max_iterations: Option<u64>,
    /// Stop when `metric >= value` (as Ray's dict form).
    pub thresholds: Vec<(String, f64)>,
    pub func: Option<StopFn>,
}

impl fmt::Debug for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stop")
            .field("max_iterations", &self.max_iterations)
            .field("thresholds", &self.thresholds)
            .field("func", &self.func.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

impl Stop {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn max_iterations(mut self, n: u64) -> Self {
        self.max_iterations = Some(n);
        self
    }
    /// Stop a trial once `metric >= value`.
    pub fn metric_at_least(mut self, metric: &str, value: f64) -> Self {
        self.thresholds.push((metric.into(), value));
        self
    }
    /// Stop a trial when `f(trial_id, result)` says so.
    pub fn when(mut self, f: impl Fn(&str, &TrialResult) -> bool + Send + Sync + 'static) -> Self {
        self.func = Some(Arc::new(f));
        self
    }
    pub fn should_stop(&self, trial: &str, r: &TrialResult) -> bool {
        self.max_iterations
            .is_some_and(|m| r.training_iteration >= m)
            || self
                .thresholds
                .iter()
                .any(|(k, v)| r.get(k).is_some_and(|x| x >= *v))
            || self.func.as_ref().is_some_and(|f| f(trial, r))
    }
}

/// Which checkpoints stay on disk.
#[derive(Debug, Clone, Default)]
pub struct CheckpointConfig {
    /// Keep this many (the best by `score_attribute`, else the newest) plus the newest.
    pub num_to_keep: Option<usize>,
    pub score_attribute: Option<String>,
    pub score_order: Option<Mode>,
}

impl CheckpointConfig {
    pub fn num_to_keep(mut self, n: usize) -> Self {
        self.num_to_keep = Some(n);
        self
    }
    pub fn score(mut self, attr: &str, order: Mode) -> Self {
        self.score_attribute = Some(attr.into());
        self.score_order = Some(order);
        self
    }
}

/// Where results go, when trials stop, checkpoints, failures and output.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Experiment directory name (default: `<trainable>_<date>`).
    pub name: Option<String>,
    /// Parent of experiment directories (default: `~/sunray_results`, or
    /// `$SUNRAY_STORAGE_PATH`).
    pub storage_path: Option<PathBuf>,
    pub stop: Stop,
    pub checkpoint_config: CheckpointConfig,
    /// Retries of a failing trial, from its last checkpoint (Ray's `max_failures`).
    pub max_failures: usize,
    /// 0 silent, 1 final summary, 2 status tables (default), 3 also every result.
    pub verbosity: u8,
    /// How often the status table is printed.
    pub progress_interval: Duration,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            name: None,
            storage_path: None,
            stop: Stop::default(),
            checkpoint_config: CheckpointConfig::default(),
            max_failures: 0,
            verbosity: 2,
            progress_interval: Duration::from_secs(5),
        }
    }
}

impl RunConfig {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn name(mut self, n: &str) -> Self {
        self.name = Some(n.into());
        self
    }
    pub fn storage_path(mut self, p: impl Into<PathBuf>) -> Self {
        self.storage_path = Some(p.into());
        self
    }
    pub fn stop(mut self, s: Stop) -> Self {
        self.stop = s;
        self
    }
    pub fn checkpoint_config(mut self, c: CheckpointConfig) -> Self {
        self.checkpoint_config = c;
        self
    }
    pub fn max_failures(mut self, n: usize) -> Self {
        self.max_failures = n;
        self
    }
    pub fn verbosity(mut self, v: u8) -> Self {
        self.verbosity = v;
        self
    }
    pub fn progress_interval(mut self, d: Duration) -> Self {
        self.progress_interval = d;
        self
    }
    /// The storage path this run uses.
    pub fn storage(&self) -> PathBuf {
        self.storage_path
            .clone()
            .or_else(|| std::env::var_os("SUNRAY_STORAGE_PATH").map(PathBuf::from))
            .unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join("sunray_results")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn any_stop_criterion_ends_the_trial() {
        let r = |it: u64, acc: f64| TrialResult {
            training_iteration: it,
            time_total_s: 0.0,
            metrics: BTreeMap::from([("acc".to_string(), acc)]),
        };
        let s = Stop::new()
            .max_iterations(10)
            .metric_at_least("acc", 0.9)
            .when(|t, _| t == "special");
        assert!(!s.should_stop("a", &r(3, 0.5)));
        assert!(s.should_stop("a", &r(10, 0.5)));
        assert!(s.should_stop("a", &r(3, 0.95)));
        assert!(s.should_stop("special", &r(1, 0.0)));
        assert!(!Stop::new().should_stop("a", &r(1000, 1.0)));
    }
}
