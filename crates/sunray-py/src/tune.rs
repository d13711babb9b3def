//! `sunray.tune` over sunray-tune: Python describes the experiment as data (the search
//! space, scheduler and searcher as JSON, with the Python callables it needs by index);
//! the Rust controller, schedulers, searchers and storage run it. Trials run as Python
//! tasks that start and report through [`TrialSession`], the Rust `Session`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pyo3::call::PyCallArgs;
use pyo3::prelude::*;
use rand::{rngs::StdRng, Rng};
use serde::Deserialize;
use serde_json::{Map, Value};
use sunray::ext::TaskEvent;
use sunray::{NodeInfo, TaskOptions};
use sunray_runtime::driver::Client;
use sunray_tune::{
    self as st, Asha, BasicVariantGenerator, CheckpointConfig, ConcurrencyLimiter, Config, Domain,
    Fifo, HyperBand, MedianStopping, Mode, Mutation, Pbt, ResultGrid, RunConfig, Searcher, Space,
    Stop, Suggestion, Tpe, TrialCluster, TrialScheduler, TuneConfig, TuneError, Tuner,
};

use crate::{client, raise, ObjectRef};

/// One parameter of the search space as Python describes it.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum DomainSpec {
    Const {
        value: Value,
    },
    Nested {
        items: Vec<(String, DomainSpec)>,
    },
    Uniform {
        lower: f64,
        upper: f64,
        q: Option<f64>,
    },
    Loguniform {
        lower: f64,
        upper: f64,
        base: f64,
        q: Option<f64>,
    },
    Randint {
        lower: i64,
        upper: i64,
        q: Option<i64>,
    },
    Lograndint {
        lower: i64,
        upper: i64,
        base: f64,
    },
    Randn {
        mean: f64,
        sd: f64,
        q: Option<f64>,
    },
    Choice {
        values: Vec<Value>,
    },
    Grid {
        values: Vec<Value>,
    },
    SampleFrom {
        func: usize,
    },
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum SchedulerSpec {
    Fifo,
    Asha {
        time_attr: Option<String>,
        metric: Option<String>,
        mode: Option<String>,
        max_t: f64,
        grace_period: f64,
        reduction_factor: f64,
        brackets: usize,
        stop_last_trials: bool,
    },
    Hyperband {
        time_attr: Option<String>,
        metric: Option<String>,
        mode: Option<String>,
        max_t: f64,
        reduction_factor: f64,
    },
    Median {
        time_attr: Option<String>,
        metric: Option<String>,
        mode: Option<String>,
        grace_period: f64,
        min_samples_required: usize,
    },
    Pbt {
        time_attr: Option<String>,
        metric: Option<String>,
        mode: Option<String>,
        perturbation_interval: f64,
        quantile_fraction: f64,
        resample_probability: f64,
        perturbation_factors: (f64, f64),
        /// (dotted path, a domain or a list of values)
        mutations: Vec<(String, MutationSpec)>,
        custom_explore_fn: Option<usize>,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MutationSpec {
    Values { values: Vec<Value> },
    Domain(DomainSpec),
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum SearcherSpec {
    Basic {
        points_to_evaluate: Vec<Config>,
    },
    Tpe {
        n_startup_trials: Option<usize>,
        n_ei_candidates: Option<usize>,
        gamma: Option<f64>,
        /// A Python function n -> good set size, by index into `funcs`.
        gamma_fn: Option<usize>,
        multivariate: Option<bool>,
        constant_liar: Option<bool>,
        prior_weight: Option<f64>,
        consider_endpoints: Option<bool>,
        sharp_good_kernels: Option<bool>,
        points_to_evaluate: Vec<Config>,
    },
    /// A `sunray.tune.search.Searcher` subclass, passed beside the spec.
    Python,
    Limited {
        inner: Box<SearcherSpec>,
        max_concurrent: usize,
    },
}

#[derive(Deserialize)]
struct StopSpec {
    /// Ray's dict form: `training_iteration` caps iterations, others are `>=` thresholds.
    thresholds: Vec<(String, f64)>,
    func: Option<usize>,
}

#[derive(Deserialize)]
struct FitSpec {
    trainable: String,
    space: Vec<(String, DomainSpec)>,
    metric: Option<String>,
    mode: Option<String>,
    num_samples: usize,
    scheduler: SchedulerSpec,
    searcher: SearcherSpec,
    max_concurrent_trials: Option<usize>,
    time_budget_s: Option<f64>,
    seed: u64,
    name: Option<String>,
    storage_path: Option<String>,
    stop: StopSpec,
    num_to_keep: Option<usize>,
    checkpoint_score_attribute: Option<String>,
    checkpoint_score_order: Option<String>,
    max_failures: usize,
    verbosity: u8,
    progress_interval_s: Option<f64>,
    num_cpus: f64,
    num_gpus: f64,
    memory: f64,
    resources: Vec<(String, f64)>,
    restore: Option<String>,
    resume_errored: bool,
    restart_errored: bool,
}

fn mode_of(m: &str) -> Result<Mode, String> {
    match m {
        "min" => Ok(Mode::Min),
        "max" => Ok(Mode::Max),
        other => Err(format!("mode must be \"min\" or \"max\", not {other:?}")),
    }
}

/// A Python callable of the experiment's, called with the GIL from the controller's
/// thread. A failure stops the experiment with the Python error's message (the
/// controller is unwound; `fit` turns that into a `TuneError`).
#[derive(Clone)]
struct PyCall(Arc<Py<PyAny>>);

impl PyCall {
    fn call<'py>(&self, py: Python<'py>, args: impl PyCallArgs<'py>) -> Bound<'py, PyAny> {
        self.0
            .bind(py)
            .call1(args)
            .unwrap_or_else(|e| std::panic::panic_any(PythonFailed(e.to_string())))
    }
}

/// The payload of the unwinding a failed Python callback starts.
struct PythonFailed(String);

/// `sunray.tune._bridge.<name>(args…)`, returning JSON text parsed to a value.
fn bridge_json<'py>(py: Python<'py>, name: &str, args: impl PyCallArgs<'py>) -> Value {
    let r = py
        .import("sunray.tune._bridge")
        .and_then(|m| m.getattr(name))
        .and_then(|f| f.call1(args))
        .and_then(|v| v.extract::<String>());
    match r {
        Ok(s) => serde_json::from_str(&s)
            .unwrap_or_else(|e| std::panic::panic_any(PythonFailed(format!("{name}: {e}")))),
        Err(e) => std::panic::panic_any(PythonFailed(e.to_string())),
    }
}

fn domain(spec: DomainSpec, funcs: &[PyCall]) -> Result<Domain, String> {
    Ok(match spec {
        DomainSpec::Const { value } => Domain::Const(value),
        DomainSpec::Nested { items } => Domain::Nested(space(items, funcs)?),
        DomainSpec::Uniform { lower, upper, q } => match q {
            None => st::uniform(lower, upper),
            Some(q) => st::quniform(lower, upper, q),
        },
        DomainSpec::Loguniform {
            lower,
            upper,
            base,
            q,
        } => match q {
            None => st::loguniform_base(lower, upper, base),
            Some(q) => st::qloguniform(lower, upper, q),
        },
        DomainSpec::Randint { lower, upper, q } => match q {
            None => st::randint(lower, upper),
            Some(q) => st::qrandint(lower, upper, q),
        },
        DomainSpec::Lograndint { lower, upper, base } => Domain::LogRandInt {
            lo: lower,
            hi: upper,
            base,
        },
        DomainSpec::Randn { mean, sd, q } => match q {
            None => st::randn(mean, sd),
            Some(q) => st::qrandn(mean, sd, q),
        },
        DomainSpec::Choice { values } => st::choice(values),
        DomainSpec::Grid { values } => st::grid_search(values),
        DomainSpec::SampleFrom { func } => {
            let f = funcs
                .get(func)
                .cloned()
                .ok_or("sample_from refers to a missing function")?;
            // numpy's and `random`'s global generators are seeded from the trial's own
            // stream first, so that a seeded experiment draws the same configs again.
            st::sample_from(move |rng: &mut StdRng, partial: &Config| -> Value {
                let seed: u32 = rng.random();
                Python::attach(|py| {
                    bridge_json(
                        py,
                        "sample_from",
                        (f.0.clone_ref(py), seed, partial.to_string()),
                    )
                })
            })
        }
    })
}

fn space(items: Vec<(String, DomainSpec)>, funcs: &[PyCall]) -> Result<Space, String> {
    let mut s = Space::new();
    for (name, d) in items {
        s = s.with(&name, domain(d, funcs)?);
    }
    Ok(s)
}

fn objective_of(
    metric: Option<String>,
    mode: Option<String>,
) -> Result<Option<(String, Mode)>, String> {
    match (metric, mode) {
        (Some(m), Some(mode)) => Ok(Some((m, mode_of(&mode)?))),
        (None, None) => Ok(None),
        _ => Err("a scheduler takes both metric and mode, or neither".into()),
    }
}

macro_rules! with_objective {
    ($s:expr, $time_attr:expr, $metric:expr, $mode:expr) => {{
        let mut s = $s;
        if let Some(a) = $time_attr {
            s = s.time_attr(&a);
        }
        if let Some((m, mode)) = objective_of($metric, $mode)? {
            s = s.metric(&m, mode);
        }
        s
    }};
}

fn scheduler(
    spec: SchedulerSpec,
    funcs: &[PyCall],
    seed: u64,
) -> Result<Box<dyn TrialScheduler>, String> {
    Ok(match spec {
        SchedulerSpec::Fifo => Box::new(Fifo),
        SchedulerSpec::Asha {
            time_attr,
            metric,
            mode,
            max_t,
            grace_period,
            reduction_factor,
            brackets,
            stop_last_trials,
        } => Box::new(with_objective!(
            Asha::new()
                .max_t(max_t)
                .grace_period(grace_period)
                .reduction_factor(reduction_factor)
                .brackets(brackets)
                .stop_last_trials(stop_last_trials)
                .seed(seed),
            time_attr,
            metric,
            mode
        )),
        SchedulerSpec::Hyperband {
            time_attr,
            metric,
            mode,
            max_t,
            reduction_factor,
        } => Box::new(with_objective!(
            HyperBand::new()
                .max_t(max_t)
                .reduction_factor(reduction_factor),
            time_attr,
            metric,
            mode
        )),
        SchedulerSpec::Median {
            time_attr,
            metric,
            mode,
            grace_period,
            min_samples_required,
        } => Box::new(with_objective!(
            MedianStopping::new()
                .grace_period(grace_period)
                .min_samples_required(min_samples_required),
            time_attr,
            metric,
            mode
        )),
        SchedulerSpec::Pbt {
            time_attr,
            metric,
            mode,
            perturbation_interval,
            quantile_fraction,
            resample_probability,
            perturbation_factors,
            mutations,
            custom_explore_fn,
        } => {
            let mut p = with_objective!(
                Pbt::new()
                    .perturbation_interval(perturbation_interval)
                    .quantile_fraction(quantile_fraction)
                    .resample_probability(resample_probability)
                    .perturbation_factors(perturbation_factors.0, perturbation_factors.1)
                    .seed(seed),
                time_attr,
                metric,
                mode
            );
            for (path, m) in mutations {
                let m = match m {
                    MutationSpec::Values { values } => Mutation::Values(values),
                    MutationSpec::Domain(d) => Mutation::Domain(domain(d, funcs)?),
                };
                p = p.mutate(&path, m);
            }
            if let Some(i) = custom_explore_fn {
                let f = funcs.get(i).cloned().ok_or("missing custom_explore_fn")?;
                p = p.custom_explore(move |c: Config| {
                    let v = Python::attach(|py| {
                        bridge_json(py, "call_with_config", (f.0.clone_ref(py), c.to_string()))
                    });
                    serde_json::from_value(v).unwrap_or(c)
                });
            }
            Box::new(p)
        }
    })
}

fn searcher(
    spec: SearcherSpec,
    funcs: &[PyCall],
    py_searcher: &Option<PyCall>,
) -> Result<Box<dyn Searcher>, String> {
    Ok(match spec {
        SearcherSpec::Basic { points_to_evaluate } => {
            Box::new(BasicVariantGenerator::new().points_to_evaluate(points_to_evaluate))
        }
        SearcherSpec::Tpe {
            n_startup_trials,
            n_ei_candidates,
            gamma,
            gamma_fn,
            multivariate,
            constant_liar,
            prior_weight,
            consider_endpoints,
            sharp_good_kernels,
            points_to_evaluate,
        } => {
            let mut t = Tpe::new().points_to_evaluate(points_to_evaluate);
            if let Some(n) = n_startup_trials {
                t = t.n_startup(n);
            }
            if let Some(n) = n_ei_candidates {
                t = t.n_candidates(n);
            }
            if let Some(g) = gamma {
                t = t.gamma(g);
            }
            if let Some(m) = multivariate {
                t = t.multivariate(m);
            }
            if let Some(c) = constant_liar {
                t = t.constant_liar(c);
            }
            if let Some(w) = prior_weight {
                t = t.prior_weight(w);
            }
            if let Some(e) = consider_endpoints {
                t = t.consider_endpoints(e);
            }
            if let Some(s) = sharp_good_kernels {
                t = t.sharp_good_kernels(s);
            }
            if let Some(i) = gamma_fn {
                let f = funcs.get(i).cloned().ok_or("missing gamma function")?;
                t = t.gamma_fn(move |n| {
                    let v =
                        Python::attach(|py| bridge_json(py, "call_gamma", (f.0.clone_ref(py), n)));
                    v.as_u64().map_or(1, |g| g as usize)
                });
            }
            Box::new(t)
        }
        SearcherSpec::Python => Box::new(PySearcher {
            obj: py_searcher
                .clone()
                .ok_or("a Python searcher was named but not given")?,
            num_samples: usize::MAX,
            asked: 0,
            last: HashMap::new(),
        }),
        SearcherSpec::Limited {
            inner,
            max_concurrent,
        } => Box::new(ConcurrencyLimiter::new(
            searcher(*inner, funcs, py_searcher)?,
            max_concurrent,
        )),
    })
}

/// Ray's `Searcher` interface, subclassed in Python (an Optuna adapter, say): the
/// controller asks it through the bridge, with the GIL.
/// Ray's search generator ends a search after `num_samples` suggestions; so does this.
struct PySearcher {
    obj: PyCall,
    num_samples: usize,
    asked: usize,
    /// Each live trial's last result, given to `on_trial_complete` as Ray does.
    last: HashMap<String, Map<String, Value>>,
}

impl Searcher for PySearcher {
    fn name(&self) -> &'static str {
        "PythonSearcher"
    }
    fn setup(
        &mut self,
        _: &Space,
        _: &str,
        _: Mode,
        num_samples: usize,
        _: u64,
    ) -> Result<(), String> {
        // Python gave it the space, metric and mode (set_search_properties) before fit.
        self.num_samples = num_samples;
        Ok(())
    }
    fn suggest(&mut self, space: &Space, trial_id: &str) -> Suggestion {
        if self.asked >= self.num_samples {
            return Suggestion::Finished;
        }
        let v = Python::attach(|py| {
            bridge_json(py, "searcher_suggest", (self.obj.0.clone_ref(py), trial_id))
        });
        match v {
            Value::Object(m) => {
                let mut c = Config(m);
                // Constants of the space the searcher does not know of.
                for (path, d) in space.leaves() {
                    if let Domain::Const(v) = d {
                        if c.value(&path).is_none() {
                            st::set_path(&mut c.0, &path, v.clone());
                        }
                    }
                }
                self.asked += 1;
                Suggestion::Config(c)
            }
            Value::String(s) if s == "FINISHED" => Suggestion::Finished,
            _ => Suggestion::Wait,
        }
    }
    fn on_trial_result(&mut self, trial_id: &str, result: &Map<String, Value>) {
        let json = Value::Object(result.clone()).to_string();
        Python::attach(|py| {
            bridge_json(
                py,
                "searcher_result",
                (self.obj.0.clone_ref(py), trial_id, json),
            )
        });
        self.last.insert(trial_id.to_string(), result.clone());
    }
    fn on_trial_complete(&mut self, trial_id: &str, _metric: Option<f64>, error: bool) {
        let last = self
            .last
            .remove(trial_id)
            .map(|m| Value::Object(m).to_string());
        Python::attach(|py| {
            bridge_json(
                py,
                "searcher_complete",
                (self.obj.0.clone_ref(py), trial_id, last, error),
            )
        });
    }
    fn save(&self) -> Value {
        let state =
            Python::attach(|py| bridge_json(py, "searcher_save", (self.obj.0.clone_ref(py),)));
        serde_json::json!({"asked": self.asked, "state": state})
    }
    fn restore(&mut self, state: Value) -> Result<(), String> {
        self.asked = state.get("asked").and_then(Value::as_u64).unwrap_or(0) as usize;
        let inner = state.get("state").cloned().unwrap_or(Value::Null);
        Python::attach(|py| {
            bridge_json(
                py,
                "searcher_restore",
                (self.obj.0.clone_ref(py), inner.to_string()),
            )
        });
        Ok(())
    }
}

/// Trials as Python tasks: `launch(trial_id, experiment_dir, marker)` submits one (with
/// the trial's resources) and returns its `ObjectRef`.
struct PyCluster {
    client: Arc<Client>,
    launch: PyCall,
    tasks: HashMap<u64, Py<ObjectRef>>,
}

impl TrialCluster for PyCluster {
    fn launch(
        &mut self,
        trial_id: &str,
        experiment_dir: &Path,
        marker: &str,
        _resources: &TaskOptions,
    ) -> Result<u64, TuneError> {
        Python::attach(|py| {
            let r = self.launch.call(
                py,
                (
                    trial_id,
                    experiment_dir.to_string_lossy().into_owned(),
                    marker,
                ),
            );
            let r: Py<ObjectRef> = r
                .extract()
                .map_err(|e| TuneError::Cluster(format!("launching a trial: {e}")))?;
            let id = r.get().id;
            self.tasks.insert(id, r);
            Ok(id)
        })
    }
    fn outcome(&mut self, task: u64) -> Result<(), String> {
        // A Python task's own exception arrives as a value (an error payload).
        let out = match self.client.get(task, Some(Duration::from_secs(60))) {
            Ok(data) if data.first() == Some(&b'E') => {
                let v = Python::attach(|py| {
                    bridge_json(py, "trial_error", (pyo3::types::PyBytes::new(py, &data),))
                });
                match v.as_str() {
                    Some("") | None => Ok(()),
                    Some(m) => Err(m.to_string()),
                }
            }
            Ok(_) => Ok(()),
            Err(sunray_runtime::driver::GetError::Task(t)) => Err(t.to_string()),
            Err(other) => Err(other.to_string()),
        };
        if let Some(r) = self.tasks.remove(&task) {
            Python::attach(|_| drop(r));
        }
        out
    }
    fn reply(&self, task: u64, data: Bytes) -> Result<(), TuneError> {
        self.client
            .reply_to_task(task, data)
            .map_err(|e| TuneError::Cluster(e.to_string()))
    }
    fn nodes(&self) -> Option<Vec<NodeInfo>> {
        sunray::ext::nodes_of(&self.client).ok()
    }
    fn events(&self) -> Result<Receiver<TaskEvent>, TuneError> {
        Ok(self.client.task_events())
    }
}

fn config_err(e: impl std::fmt::Display) -> PyErr {
    raise("TuneError", e.to_string())
}

fn build(
    spec: FitSpec,
    funcs: &[PyCall],
    py_searcher: Option<PyCall>,
    cluster: PyCluster,
) -> Result<Tuner, String> {
    let mut tc = TuneConfig::new()
        .num_samples(spec.num_samples)
        .seed(spec.seed);
    if let (Some(m), Some(mode)) = (&spec.metric, &spec.mode) {
        tc = tc.metric(m, mode_of(mode)?);
    } else if spec.metric.is_some() || spec.mode.is_some() {
        return Err("TuneConfig takes both metric and mode, or neither".into());
    }
    tc.scheduler = scheduler(spec.scheduler, funcs, spec.seed)?;
    tc.search_alg = searcher(spec.searcher, funcs, &py_searcher)?;
    tc.max_concurrent_trials = spec.max_concurrent_trials;
    tc.time_budget = spec.time_budget_s.map(Duration::from_secs_f64);
    let mut stop = Stop::new();
    for (k, v) in spec.stop.thresholds {
        stop = if k == "training_iteration" {
            stop.max_iterations(v.ceil() as u64)
        } else {
            stop.metric_at_least(&k, v)
        };
    }
    if let Some(i) = spec.stop.func {
        let f = funcs.get(i).cloned().ok_or("missing stop function")?;
        stop = stop.when(move |trial, r| {
            let mut m = serde_json::Map::new();
            for (k, v) in &r.metrics {
                m.insert(k.clone(), serde_json::json!(v));
            }
            m.insert("training_iteration".into(), r.training_iteration.into());
            m.insert("time_total_s".into(), serde_json::json!(r.time_total_s));
            Python::attach(|py| {
                bridge_json(
                    py,
                    "call_stop",
                    (f.0.clone_ref(py), trial, Value::Object(m).to_string()),
                )
            })
            .as_bool()
            .unwrap_or(false)
        });
    }
    let mut cc = CheckpointConfig::default();
    if let Some(n) = spec.num_to_keep {
        cc = cc.num_to_keep(n);
    }
    if let Some(a) = &spec.checkpoint_score_attribute {
        let order = mode_of(spec.checkpoint_score_order.as_deref().unwrap_or("max"))?;
        cc = cc.score(a, order);
    }
    let mut rc = RunConfig::new()
        .stop(stop)
        .checkpoint_config(cc)
        .max_failures(spec.max_failures)
        .verbosity(spec.verbosity);
    if let Some(n) = &spec.name {
        rc = rc.name(n);
    }
    if let Some(p) = &spec.storage_path {
        rc = rc.storage_path(p);
    }
    if let Some(s) = spec.progress_interval_s {
        rc = rc.progress_interval(Duration::from_secs_f64(s));
    }
    let mut resources = TaskOptions::new()
        .num_cpus(spec.num_cpus)
        .num_gpus(spec.num_gpus);
    if spec.memory > 0.0 {
        resources = resources.memory(spec.memory);
    }
    for (k, v) in &spec.resources {
        resources = resources.resource(k, *v);
    }
    let space = space(spec.space, funcs)?;
    let mut t = Tuner::foreign(spec.trainable, Box::new(cluster))
        .param_space(space)
        .tune_config(tc)
        .run_config(rc)
        .resources(resources);
    if let Some(p) = spec.restore {
        t = t
            .restoring(&p)
            .map_err(|e| e.to_string())?
            .resume_errored(spec.resume_errored)
            .restart_errored(spec.restart_errored);
    }
    Ok(t)
}

/// The panic message of an unwinding (a failed Python callback's, or a bad argument's).
fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(PythonFailed(m)) = p.downcast_ref::<PythonFailed>() {
        return m.clone();
    }
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "the tuner stopped".into())
}

/// Runs an experiment described by `spec` (JSON); returns its directory.
/// `funcs` are the Python callables the spec names by index, `py_searcher` a Python
/// searcher, `launch(trial_id, experiment_dir, marker) -> ObjectRef` submits a trial.
#[pyfunction]
#[pyo3(signature = (spec, funcs, py_searcher, launch))]
pub fn tune_fit(
    py: Python<'_>,
    spec: String,
    funcs: Vec<Py<PyAny>>,
    py_searcher: Option<Py<PyAny>>,
    launch: Py<PyAny>,
) -> PyResult<String> {
    let spec: FitSpec = serde_json::from_str(&spec).map_err(config_err)?;
    let funcs: Vec<PyCall> = funcs.into_iter().map(|f| PyCall(Arc::new(f))).collect();
    let cluster = PyCluster {
        client: client()?,
        launch: PyCall(Arc::new(launch)),
        tasks: HashMap::new(),
    };
    let py_searcher = py_searcher.map(|s| PyCall(Arc::new(s)));
    let tuner = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        build(spec, &funcs, py_searcher, cluster)
    }))
    .map_err(|p| config_err(panic_message(p)))?
    .map_err(config_err)?;
    let outcome =
        py.detach(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tuner.fit())));
    match outcome {
        Ok(Ok(grid)) => Ok(grid.experiment_path.to_string_lossy().into_owned()),
        Ok(Err(e)) => Err(config_err(e)),
        Err(p) => Err(config_err(panic_message(p))),
    }
}

/// Every trial of the experiment at `path`, as JSON: metric, mode and the records.
#[pyfunction]
pub fn tune_results(py: Python<'_>, path: String) -> PyResult<String> {
    let grid = py.detach(|| ResultGrid::load(&path)).map_err(config_err)?;
    let records: Vec<Value> = grid
        .iter()
        .map(|r| {
            serde_json::json!({
                "trial_id": r.trial_id,
                "config": r.config,
                "status": r.status,
                "metrics": r.metrics,
                "path": r.path,
                "checkpoint": r.checkpoint,
                "checkpoints": r.checkpoints,
                "error": r.error,
            })
        })
        .collect();
    Ok(serde_json::json!({
        "path": grid.experiment_path,
        "metric": grid.metric(),
        "mode": grid.mode().map(|m| if m == Mode::Min { "min" } else { "max" }),
        "trials": records,
    })
    .to_string())
}

/// The id of the best trial of the experiment at `path`.
#[pyfunction]
#[pyo3(signature = (path, metric, mode, scope))]
pub fn tune_best(
    py: Python<'_>,
    path: String,
    metric: Option<String>,
    mode: Option<String>,
    scope: String,
) -> PyResult<String> {
    let mode = mode.map(|m| mode_of(&m)).transpose().map_err(config_err)?;
    py.detach(|| {
        let grid = ResultGrid::load(&path)?;
        grid.best_result(metric.as_deref(), mode, &scope)
            .map(|r| r.trial_id.clone())
    })
    .map_err(config_err)
}

/// Is there an experiment to restore at `path`?
#[pyfunction]
pub fn tune_can_restore(path: String) -> bool {
    Tuner::can_restore(path)
}

/// A trial's side of the tuner, inside its task.
#[pyclass(module = "sunray._sunray")]
pub struct TrialSession {
    session: Option<st::Session>,
}

impl TrialSession {
    fn get(&self) -> PyResult<&st::Session> {
        self.session
            .as_ref()
            .ok_or_else(|| raise("TuneError", "this trial has ended".into()))
    }
}

#[pymethods]
impl TrialSession {
    /// Sends one result (numbers by name) and optionally a checkpoint directory (copied
    /// into the experiment); False when the tuner ended the trial.
    #[pyo3(signature = (metrics, checkpoint))]
    fn report(
        &mut self,
        py: Python<'_>,
        metrics: Vec<(String, f64)>,
        checkpoint: Option<String>,
    ) -> PyResult<bool> {
        let s = self
            .session
            .as_mut()
            .ok_or_else(|| raise("TuneError", "this trial has ended".into()))?;
        let c = checkpoint.map(st::Checkpoint::from_directory);
        let r = py.detach(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.report(metrics, c)))
        });
        match r {
            Ok(Ok(())) => Ok(true),
            // The trial cannot go on (its checkpoint could not be saved): raised, and
            // the trial fails with it (`_trial.run_trial` sees to that).
            Ok(Err(st::Stopped)) => match s.failure() {
                Some(why) => Err(raise("TuneError", why.to_string())),
                None => Ok(false),
            },
            Err(p) => Err(raise("TuneError", panic_message(p))),
        }
    }
    /// Why the trial cannot go on through no fault of the trainable's (a checkpoint that
    /// could not be saved), once `report` raised it; None otherwise.
    #[getter]
    fn failure(&self) -> PyResult<Option<String>> {
        Ok(self.get()?.failure().map(str::to_string))
    }
    #[getter]
    fn trial_id(&self) -> PyResult<String> {
        Ok(self.get()?.trial_id().to_string())
    }
    #[getter]
    fn trial_dir(&self) -> PyResult<String> {
        Ok(self.get()?.trial_dir().to_string_lossy().into_owned())
    }
    /// Where the trial may write on this node (its directory when shared).
    #[getter]
    fn local_dir(&self) -> PyResult<String> {
        Ok(self.get()?.local_dir().to_string_lossy().into_owned())
    }
    #[getter]
    fn iteration(&self) -> PyResult<u64> {
        Ok(self.get()?.iteration())
    }
    /// The checkpoint directory to resume from, if any.
    #[getter]
    fn checkpoint(&self) -> PyResult<Option<String>> {
        Ok(self
            .get()?
            .checkpoint()
            .map(|c| c.path().to_string_lossy().into_owned()))
    }
    #[getter]
    fn gpu_ids(&self) -> PyResult<Vec<String>> {
        Ok(self.get()?.gpu_ids().to_vec())
    }
    #[getter]
    fn stopped(&self) -> PyResult<bool> {
        Ok(self.get()?.is_stopped())
    }
    /// Ends the trial's session (its scratch directory goes).
    fn close(&mut self) {
        self.session = None;
    }
}

/// In a trial's task: hello to the tuner; returns (config JSON, session), or None when
/// the tuner no longer wants this trial.
#[pyfunction]
pub fn tune_begin(
    py: Python<'_>,
    trial_id: String,
    experiment_dir: String,
    marker: String,
) -> PyResult<Option<(String, TrialSession)>> {
    let r = py
        .detach(|| st::Session::begin(&trial_id, &experiment_dir, &marker))
        .map_err(|e| raise("TuneError", e))?;
    Ok(r.map(|(config, session)| {
        (
            config.to_string(),
            TrialSession {
                session: Some(session),
            },
        )
    }))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TrialSession>()?;
    m.add_function(wrap_pyfunction!(tune_fit, m)?)?;
    m.add_function(wrap_pyfunction!(tune_results, m)?)?;
    m.add_function(wrap_pyfunction!(tune_best, m)?)?;
    m.add_function(wrap_pyfunction!(tune_can_restore, m)?)?;
    m.add_function(wrap_pyfunction!(tune_begin, m)?)?;
    Ok(())
}
