//! The driver side: `Tuner` and the loop that runs trials as sunray tasks. The loop only
//! moves messages between the cluster, the disk, and the pure searcher and scheduler.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Map, Value};
use sunray::ext::TaskEvent;
use sunray::TaskOptions;

use crate::cluster::{NativeCluster, TrialCluster};
use crate::config::{RunConfig, TuneConfig};
use crate::reporter::Reporter;
use crate::result::{Mode, TrialResult};
use crate::result_grid::ResultGrid;
use crate::schedulers::Decision;
use crate::search::Suggestion;
use crate::space::{Config, Space};
use crate::storage::{self, CheckpointInfo, ExperimentState, TrialEnd, TrialFiles, TrialIdentity};
use crate::trainable::{
    self, CheckpointMsg, Reply, RestoreFrom, StartInfo, ToDriver, TrainFn, EXPERIMENT_MARKER,
};
use crate::TuneError;

/// A trial's state, as Ray names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Running,
    Paused,
    Terminated,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Running => "RUNNING",
            Status::Paused => "PAUSED",
            Status::Terminated => "TERMINATED",
            Status::Error => "ERROR",
        }
    }
}

/// What to do when a trial's task ends without error.
#[derive(Debug, Clone, PartialEq, Eq)]
enum After {
    Finish,
    Pause,
    Restart,
    /// The tuner could not store what the trial sent (its result or checkpoint, say on a
    /// full disk) and told it to stop: the trial failed, for this reason.
    Fail(String),
}

pub(crate) struct Trial {
    pub id: String,
    pub index: u64,
    pub config: Config,
    pub dir: PathBuf,
    pub status: Status,
    /// Its task has said hello (launched trials are PENDING until then).
    pub started: bool,
    pub last: Option<TrialResult>,
    pub location: String,
    hostname: String,
    node_ip: String,
    pid: u32,
    shared: bool,
    iteration: u64,
    time_total_s: f64,
    since_restore: u64,
    time_since_restore: f64,
    num_failures: usize,
    checkpoints: Vec<CheckpointInfo>,
    next_checkpoint: u64,
    files: Option<TrialFiles>,
    /// Its running task's id.
    task: Option<u64>,
    after: After,
}

impl Trial {
    fn new(id: String, index: u64, config: Config, dir: PathBuf) -> Self {
        Trial {
            id,
            index,
            config,
            dir,
            status: Status::Pending,
            started: false,
            last: None,
            location: String::new(),
            hostname: String::new(),
            node_ip: String::new(),
            pid: 0,
            shared: true,
            iteration: 0,
            time_total_s: 0.0,
            since_restore: 0,
            time_since_restore: 0.0,
            num_failures: 0,
            checkpoints: Vec::new(),
            next_checkpoint: 0,
            files: None,
            task: None,
            after: After::Finish,
        }
    }
}

/// What stays in memory of finished trials: counts, and the few the report shows
/// (the best by the metric, and the first errors).
#[derive(Default)]
pub(crate) struct Finished {
    pub terminated: usize,
    pub errored: usize,
    /// Best first, at most `SHOWN`.
    pub best: Vec<(f64, Trial)>,
    pub errors: Vec<Trial>,
}

impl Finished {
    pub const SHOWN: usize = 20;

    fn add(&mut self, mut t: Trial, score: Option<f64>) {
        t.files = None;
        t.task = None;
        t.checkpoints = Vec::new();
        if t.status == Status::Error {
            self.errored += 1;
            if self.errors.len() < Self::SHOWN {
                self.errors.push(t);
            }
            return;
        }
        self.terminated += 1;
        let s = score.unwrap_or(f64::MIN);
        let at = self.best.partition_point(|(b, _)| *b >= s);
        if at < Self::SHOWN {
            self.best.insert(at, (s, t));
            self.best.truncate(Self::SHOWN);
        }
    }
}

/// Runs a hyperparameter search: Ray Tune's `Tuner`.
///
/// ```no_run
/// use sunray_tune::{Tuner, TuneConfig, Session, Config, TrainResult, Mode, Space, uniform};
/// fn train(config: &Config, session: &mut Session) -> TrainResult {
///     for i in 0..10 {
///         let loss = (config.f64("x") - 0.3).powi(2) / (i + 1) as f64;
///         session.report([("loss", loss)], None)?;
///     }
///     Ok(())
/// }
/// sunray_tune::register_trainable!(train);
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     sunray::init()?;
///     let grid = Tuner::new(train)
///         .param_space(Space::new().with("x", uniform(0.0, 1.0)))
///         .tune_config(TuneConfig::new().metric("loss", Mode::Min).num_samples(20))
///         .fit()?;
///     println!("{:?}", grid.best_result(None, None, "last")?.config);
///     Ok(())
/// }
/// ```
pub struct Tuner {
    trainable: Trainable,
    space: Space,
    tune: TuneConfig,
    run: RunConfig,
    resources: TaskOptions,
    restore: Option<RestoreOptions>,
}

/// What runs the trials.
enum Trainable {
    /// A Rust function registered in this executable.
    Native(TrainFn),
    /// Trials another front end launches (Python), under this name.
    Foreign {
        name: String,
        cluster: Box<dyn TrialCluster>,
    },
}

struct RestoreOptions {
    path: PathBuf,
    resume_errored: bool,
    restart_errored: bool,
}

impl Tuner {
    /// A tuner of `trainable` (registered with `register_trainable!`).
    pub fn new(trainable: TrainFn) -> Self {
        Self::with_trainable(Trainable::Native(trainable))
    }
    /// A tuner whose trials `cluster` launches (a front end's own trainables, such as
    /// Python functions); `name` identifies the trainable in the experiment's files.
    pub fn foreign(name: impl Into<String>, cluster: Box<dyn TrialCluster>) -> Self {
        Self::with_trainable(Trainable::Foreign {
            name: name.into(),
            cluster,
        })
    }
    fn with_trainable(trainable: Trainable) -> Self {
        Tuner {
            trainable,
            space: Space::new(),
            tune: TuneConfig::default(),
            run: RunConfig::default(),
            resources: TaskOptions::new().num_cpus(1.0),
            restore: None,
        }
    }
    pub fn param_space(mut self, space: Space) -> Self {
        self.space = space;
        self
    }
    pub fn tune_config(mut self, c: TuneConfig) -> Self {
        self.tune = c;
        self
    }
    pub fn run_config(mut self, c: RunConfig) -> Self {
        self.run = c;
        self
    }
    /// Resources each trial holds (default: 1 CPU), as `tune.with_resources`.
    pub fn resources(mut self, r: TaskOptions) -> Self {
        self.resources = r;
        self
    }
    /// Is there an experiment to restore at `path`?
    pub fn can_restore(path: impl AsRef<Path>) -> bool {
        path.as_ref().join(storage::STATE_FILE).is_file()
    }
    /// Continues the experiment at `path`: finished trials stay finished, unfinished
    /// ones continue from their last checkpoint, the searcher and scheduler from their
    /// saved state. Give it the same space, scheduler and searcher as the first run
    /// (they hold code, which is not saved).
    pub fn restore(path: impl AsRef<Path>, trainable: TrainFn) -> Result<Tuner, TuneError> {
        Tuner::new(trainable).restoring(path)
    }
    /// This tuner continues the experiment at `path` (see [`Tuner::restore`]).
    pub fn restoring(mut self, path: impl AsRef<Path>) -> Result<Tuner, TuneError> {
        let path = path.as_ref().to_path_buf();
        if !Self::can_restore(&path) {
            return Err(TuneError::Config(format!(
                "no experiment to restore at {} (no {} there)",
                path.display(),
                storage::STATE_FILE
            )));
        }
        self.restore = Some(RestoreOptions {
            path,
            resume_errored: false,
            restart_errored: false,
        });
        Ok(self)
    }
    /// With `restore`: run errored trials again from their last checkpoint.
    pub fn resume_errored(mut self, yes: bool) -> Self {
        if let Some(r) = &mut self.restore {
            r.resume_errored = yes;
        }
        self
    }
    /// With `restore`: run errored trials again from scratch.
    pub fn restart_errored(mut self, yes: bool) -> Self {
        if let Some(r) = &mut self.restore {
            r.restart_errored = yes;
        }
        self
    }

    /// Runs every trial (connecting to, or starting, a cluster if `sunray::init` was
    /// not called) and returns the results.
    pub fn fit(mut self) -> Result<ResultGrid, TuneError> {
        let placeholder = Trainable::Foreign {
            name: String::new(),
            cluster: Box::new(NativeCluster::new("")),
        };
        let (name, cluster): (String, Box<dyn TrialCluster>) = match std::mem::replace(
            &mut self.trainable,
            placeholder,
        ) {
            Trainable::Native(f) => {
                let entry = trainable::entry_of(f).ok_or_else(|| {
                        TuneError::Config(
                            "this trainable is not registered: add `sunray_tune::register_trainable!(<fn name>);` next to it".into(),
                        )
                    })?;
                if !sunray::is_initialized() {
                    sunray::init().map_err(|e| TuneError::Cluster(e.to_string()))?;
                }
                (
                    entry.name.to_string(),
                    Box::new(NativeCluster::new(entry.name)),
                )
            }
            Trainable::Foreign { name, cluster } => (name, cluster),
        };
        let events = cluster.events()?;
        let mut c = Controller::setup(self, name, cluster)?;
        let outcome = c.run(&events);
        c.save_state_or_warn();
        let mut r = std::mem::replace(
            &mut c.reporter,
            Reporter::new(&RunConfig::default().verbosity(0)),
        );
        r.finish(&c);
        outcome?;
        ResultGrid::load(&c.exp_dir)
    }
}

pub(crate) struct Controller {
    trainable: String,
    runner: Box<dyn TrialCluster>,
    pub short_name: String,
    space: Space,
    pub tc: TuneConfig,
    pub rc: RunConfig,
    resources: TaskOptions,
    pub exp_dir: PathBuf,
    state: ExperimentState,
    /// Live trials (pending, running, paused) by index. Finished ones leave it for
    /// `finished`, which keeps only what the report shows, so the driver's memory
    /// stays flat however many trials come and go.
    pub trials: BTreeMap<usize, Trial>,
    pub finished: Finished,
    /// Trials created so far (the next trial's index).
    pub created: usize,
    by_id: HashMap<String, usize>,
    by_task: HashMap<u64, usize>,
    waiting: BTreeSet<usize>,
    pub launched: usize,
    searcher_finished: bool,
    searcher_created: u64,
    pub start: Instant,
    budget_over: bool,
    /// The cluster's nodes, and when they were read.
    pub nodes: (Instant, Vec<sunray::NodeInfo>),
    last_save: Instant,
    /// The last reason `experiment_state.json` could not be written (said once).
    state_error: Option<String>,
    reporter: Reporter,
    pub metric: Option<String>,
    pub mode: Option<Mode>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A time as Ray writes it in results and directory names: `2026-12-02_06-29-41`
/// (UTC here; Ray uses local time, which on cluster nodes is usually UTC too).
pub(crate) fn ray_date(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .trim_end_matches('Z')
        .replace(':', "-")
        .replace('T', "_")
}

/// A trial directory's name as Ray makes it: trainable, trial id, index, the drawn
/// values of the searched parameters (`sample_from`s left out, floats to 4 decimals),
/// and the date: `train_cifar_51e43_00000_0_batch_size=4,lr=0.0043_2023-07-10_15-40-23`.
pub(crate) fn trial_dir_name(
    trainable: &str,
    id: &str,
    index: u64,
    space: &Space,
    config: &Config,
    now: SystemTime,
) -> String {
    use crate::space::Domain;
    let mut tag = Vec::new();
    for (path, d) in space.leaves() {
        if matches!(d, Domain::Const(_) | Domain::SampleFrom(_)) {
            continue;
        }
        let Some(v) = config.value(&path) else {
            continue;
        };
        let key = path.rsplit('.').next().unwrap_or(&path);
        let v = match v {
            Value::Number(n) if n.is_f64() => format!("{:.4}", n.as_f64().unwrap_or(0.0)),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        tag.push(format!("{key}={v}"));
    }
    let mut tag: String = tag
        .join(",")
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_whitespace() || c == '<' || c == '>' {
                '_'
            } else {
                c
            }
        })
        .collect();
    // Ray caps the tag (TUNE_MAX_LEN_IDENTIFIER); file systems cap names at 255 bytes.
    if tag.len() > 130 {
        let mut cut = 130;
        while !tag.is_char_boundary(cut) {
            cut -= 1;
        }
        tag.truncate(cut);
    }
    let tag = if tag.is_empty() {
        String::new()
    } else {
        format!("{tag}_")
    };
    format!("{trainable}_{id}_{index}_{tag}{}", ray_date(now))
}

fn short_name(full: &str) -> String {
    full.rsplit("::").next().unwrap_or(full).to_string()
}

fn nonce() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0) as u64;
    t ^ (u64::from(std::process::id()) << 32) ^ (&t as *const u64 as u64)
}

impl Controller {
    fn setup(
        t: Tuner,
        trainable: String,
        runner: Box<dyn TrialCluster>,
    ) -> Result<Self, TuneError> {
        let Tuner {
            space,
            tune: mut tc,
            run: rc,
            resources,
            restore,
            ..
        } = t;
        if tc.num_samples == 0 {
            return Err(TuneError::Config("num_samples must be at least 1".into()));
        }
        if tc.metric.is_some() != tc.mode.is_some() {
            return Err(TuneError::Config(
                "give both metric and mode, or neither".into(),
            ));
        }
        let short = short_name(&trainable);
        let (exp_dir, state) = match &restore {
            Some(r) => {
                let st: ExperimentState = storage::read_json(&r.path.join(storage::STATE_FILE))?;
                if st.trainable != trainable {
                    return Err(TuneError::Config(format!(
                        "the experiment at {} ran trainable `{}`, not `{trainable}`",
                        r.path.display(),
                        st.trainable
                    )));
                }
                if tc.metric.is_none() {
                    tc.metric = st.metric.clone();
                    tc.mode = st.mode;
                }
                (r.path.clone(), st)
            }
            None => {
                let name = rc.name.clone().unwrap_or_else(|| {
                    // A default name is made unique: two runs in one second get two.
                    let base = format!("{short}_{}", ray_date(SystemTime::now()));
                    (1..)
                        .map(|n| match n {
                            1 => base.clone(),
                            n => format!("{base}_{n}"),
                        })
                        .find(|n| !rc.storage().join(n).exists())
                        .expect("some name is free")
                });
                let dir = rc.storage().join(&name);
                if dir.join(storage::STATE_FILE).exists() {
                    return Err(TuneError::Config(format!(
                        "an experiment already exists at {}: continue it with Tuner::restore, or choose another name",
                        dir.display()
                    )));
                }
                std::fs::create_dir_all(&dir).map_err(|e| storage::io_err("create", &dir, e))?;
                let n = nonce();
                let st = ExperimentState {
                    version: 1,
                    name,
                    trainable: trainable.clone(),
                    metric: tc.metric.clone(),
                    mode: tc.mode,
                    num_samples: tc.num_samples,
                    seed: tc.seed,
                    exp_hash: format!("{:05x}", (n >> 7) & 0xfffff),
                    marker: format!("{n:016x}"),
                    created: 0,
                    searcher: tc.search_alg.name().into(),
                    searcher_state: Value::Null,
                    searcher_created: 0,
                    searcher_finished: false,
                    scheduler: tc.scheduler.name().into(),
                    scheduler_state: Value::Null,
                    counts: Map::new(),
                };
                (dir, st)
            }
        };
        let marker_path = exp_dir.join(EXPERIMENT_MARKER);
        std::fs::write(&marker_path, &state.marker)
            .map_err(|e| storage::io_err("write", &marker_path, e))?;
        let metric = tc.metric.clone();
        let mode = tc.mode;
        if let (Some(m), Some(mode)) = (&metric, mode) {
            tc.scheduler.set_metric(m, mode);
        }
        tc.scheduler.validate().map_err(TuneError::Config)?;
        let (num_samples, seed) = (state.num_samples, state.seed);
        tc.search_alg
            .setup(
                &space,
                metric.as_deref().unwrap_or(""),
                mode.unwrap_or(Mode::Min),
                num_samples,
                seed,
            )
            .map_err(TuneError::Config)?;
        let mut c = Controller {
            trainable,
            runner,
            short_name: short,
            space,
            tc,
            rc: rc.clone(),
            resources,
            exp_dir,
            trials: BTreeMap::new(),
            finished: Finished::default(),
            created: 0,
            by_id: HashMap::new(),
            by_task: HashMap::new(),
            waiting: BTreeSet::new(),
            launched: 0,
            searcher_finished: false,
            searcher_created: 0,
            start: Instant::now(),
            budget_over: false,
            nodes: (Instant::now() - Duration::from_secs(3600), Vec::new()),
            last_save: Instant::now(),
            state_error: None,
            reporter: Reporter::new(&rc),
            metric,
            mode,
            state,
        };
        if let Some(r) = restore {
            c.load_trials(&r)?;
        }
        c.save_state()?;
        Ok(c)
    }

    /// Rebuilds the trials from their directories (the truth), then the searcher and
    /// scheduler from their saved state.
    fn load_trials(&mut self, r: &RestoreOptions) -> Result<(), TuneError> {
        let st = self.state.clone();
        if st.scheduler != self.tc.scheduler.name() || st.searcher != self.tc.search_alg.name() {
            return Err(TuneError::Config(format!(
                "the experiment ran with scheduler {} and searcher {}; restore it with the same (got {} and {})",
                st.scheduler,
                st.searcher,
                self.tc.scheduler.name(),
                self.tc.search_alg.name()
            )));
        }
        if !st.scheduler_state.is_null() {
            self.tc
                .scheduler
                .restore(st.scheduler_state.clone())
                .map_err(TuneError::Corrupt)?;
        }
        if !st.searcher_state.is_null() {
            self.tc
                .search_alg
                .restore(st.searcher_state.clone())
                .map_err(TuneError::Corrupt)?;
        }
        self.searcher_created = st.searcher_created;
        self.searcher_finished = st.searcher_finished;
        let mut ids = Vec::new();
        for (ident, dir) in storage::trial_dirs(&self.exp_dir) {
            let config: Config = storage::read_json(&dir.join("params.json"))?;
            let mut t = Trial::new(ident.trial_id.clone(), ident.index, config, dir.clone());
            t.checkpoints = storage::list_checkpoints(&dir);
            t.next_checkpoint = t.checkpoints.last().map_or(0, |c| c.index + 1);
            if let Some(row) = storage::read_results(&dir).pop() {
                t.last = Some(result_of_row(&row));
                t.iteration = row
                    .get("training_iteration")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
            }
            let end: Option<TrialEnd> = storage::read_json(&dir.join(storage::END_FILE)).ok();
            t.status = match end.as_ref().map(|e| e.status.as_str()) {
                Some("TERMINATED") => Status::Terminated,
                Some(_) if r.restart_errored => {
                    for c in &t.checkpoints {
                        let _ = std::fs::remove_dir_all(dir.join(c.name()));
                    }
                    for f in [
                        "result.json",
                        "progress.csv",
                        "error.txt",
                        storage::END_FILE,
                    ] {
                        let _ = std::fs::remove_file(dir.join(f));
                    }
                    t.checkpoints.clear();
                    t.next_checkpoint = 0;
                    t.last = None;
                    Status::Pending
                }
                Some(_) if r.resume_errored => {
                    let _ = std::fs::remove_file(dir.join(storage::END_FILE));
                    Status::Pending
                }
                Some(_) => Status::Error,
                None => Status::Pending,
            };
            let i = ident.index as usize;
            if ident.index >= st.created {
                // Created after the scheduler's state was last saved.
                self.tc.scheduler.on_trial_add(&t.id, &t.config);
            }
            ids.push(t.id.clone());
            self.created = self.created.max(i + 1);
            match t.status {
                Status::Terminated | Status::Error => {
                    let score = self.score_of(&t);
                    self.finished.add(t, score);
                }
                _ => {
                    self.waiting.insert(i);
                    self.by_id.insert(t.id.clone(), i);
                    self.trials.insert(i, t);
                }
            }
        }
        // Trials created after the searcher's state was saved: let it catch up.
        while (self.searcher_created as usize) < ids.len() {
            let id = ids[self.searcher_created as usize].clone();
            if let Suggestion::Finished = self.tc.search_alg.suggest(&self.space, &id) {
                self.searcher_finished = true;
            }
            self.searcher_created += 1;
        }
        self.state.created = self.created as u64;
        Ok(())
    }

    pub(crate) fn save_state(&mut self) -> Result<(), TuneError> {
        let mut counts = Map::new();
        for (s, n) in self.status_counts() {
            counts.insert(s.as_str().into(), n.into());
        }
        self.state.counts = counts;
        self.state.created = self.created as u64;
        self.state.searcher_state = self.tc.search_alg.save();
        self.state.searcher_created = self.searcher_created;
        self.state.searcher_finished = self.searcher_finished;
        self.state.scheduler_state = self.tc.scheduler.save();
        self.last_save = Instant::now();
        storage::write_json(&self.exp_dir.join(storage::STATE_FILE), &self.state)
    }

    /// [`save_state`](Self::save_state); a failure (a full disk) is said on stderr, once
    /// per reason, and the experiment goes on: the trial directories hold the results,
    /// and the next save (a second later) tries again.
    fn save_state_or_warn(&mut self) {
        match self.save_state() {
            Ok(()) => self.state_error = None,
            Err(e) => {
                let e = e.to_string();
                if self.state_error.as_ref() != Some(&e) {
                    eprintln!("sunray-tune: {e} (the experiment goes on; its trial directories hold the results)");
                    self.state_error = Some(e);
                }
            }
        }
    }

    fn run(&mut self, events: &Receiver<TaskEvent>) -> Result<(), TuneError> {
        loop {
            self.fill()?;
            if self.launched == 0 {
                // Nothing runs and nothing more can start: the experiment is over. Trials
                // a scheduler left paused (e.g. HyperBand with an unfilled bracket) end.
                for i in std::mem::take(&mut self.waiting) {
                    if self.trials[&i].status == Status::Paused {
                        self.finish(i, Status::Terminated, None)?;
                    }
                }
                return Ok(());
            }
            let wait = self.reporter.until_next().min(Duration::from_secs(1));
            match events.recv_timeout(wait) {
                Ok(ev) => {
                    self.handle(ev)?;
                    while let Ok(ev) = events.try_recv() {
                        self.handle(ev)?;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(TuneError::Cluster(
                        "the cluster connection's event channel closed".into(),
                    ))
                }
            }
            self.tick()?;
        }
    }

    fn tick(&mut self) -> Result<(), TuneError> {
        if let Some(b) = self.tc.time_budget {
            if !self.budget_over && self.start.elapsed() >= b {
                self.budget_over = true;
                self.reporter
                    .note(&format!("time budget of {b:?} reached: stopping trials"));
            }
        }
        if self.last_save.elapsed() >= Duration::from_secs(1) {
            self.save_state_or_warn();
        }
        if self.reporter.due() {
            let mut r = std::mem::replace(
                &mut self.reporter,
                Reporter::new(&RunConfig::default().verbosity(0)),
            );
            r.report(self);
            self.reporter = r;
        }
        Ok(())
    }

    /// How many trials may run at once: `max_concurrent_trials`, and what the
    /// cluster's nodes fit (refreshed every 2 s, so that joining nodes count).
    fn limit(&mut self) -> usize {
        if self.nodes.0.elapsed() > Duration::from_secs(2) {
            if let Some(n) = self.runner.nodes() {
                self.nodes = (Instant::now(), n);
            }
        }
        let need: Vec<(String, f64)> = resource_needs(&self.resources);
        let fit: usize = self
            .nodes
            .1
            .iter()
            .filter(|n| n.alive)
            .map(|n| {
                need.iter()
                    .filter(|(_, a)| *a > 0.0)
                    .map(|(k, a)| {
                        (n.resources.get(k).copied().unwrap_or(0.0) / a + 1e-9).floor() as usize
                    })
                    .min()
                    .unwrap_or(usize::MAX / 1024)
            })
            .sum();
        let fit = fit.max(1);
        self.tc
            .max_concurrent_trials
            .map_or(fit, |m| m.min(fit))
            .max(1)
    }

    /// Trials created ahead of launching, so that schedulers see the trials to come
    /// (a HyperBand bracket waits for its pending trials), as Ray's
    /// `TUNE_MAX_PENDING_TRIALS_PG`: 16 for random/grid search, 1 for model-based
    /// searchers, which learn from every result.
    fn max_pending(&self) -> usize {
        if self.tc.search_alg.name() == "BasicVariantGenerator" {
            16
        } else {
            1
        }
    }

    /// Creates pending trials from the searcher, then starts waiting trials the
    /// scheduler picks while there is room.
    fn fill(&mut self) -> Result<(), TuneError> {
        if self.budget_over {
            return Ok(());
        }
        let limit = self.limit();
        let max_pending = self.max_pending();
        loop {
            while !self.searcher_finished && self.pending_count() < max_pending {
                let index = self.created as u64;
                let id = format!("{}_{index:05}", self.state.exp_hash);
                match self.tc.search_alg.suggest(&self.space, &id) {
                    Suggestion::Config(config) => {
                        self.searcher_created += 1;
                        self.add_trial(id, index, config)?;
                    }
                    Suggestion::Wait => break,
                    Suggestion::Finished => self.searcher_finished = true,
                }
            }
            if self.launched >= limit || self.waiting.is_empty() {
                return Ok(());
            }
            let list: Vec<(String, bool)> = self
                .waiting
                .iter()
                .map(|i| {
                    (
                        self.trials[i].id.clone(),
                        self.trials[i].status == Status::Paused,
                    )
                })
                .collect();
            match self.tc.scheduler.choose_trial_to_run(&list) {
                Some(id) => {
                    let i = self.by_id[&id];
                    self.launch(i)?;
                }
                None => return Ok(()),
            }
        }
    }

    fn pending_count(&self) -> usize {
        self.waiting
            .iter()
            .filter(|i| self.trials[*i].status == Status::Pending)
            .count()
    }

    fn add_trial(&mut self, id: String, index: u64, config: Config) -> Result<(), TuneError> {
        let dir = self.exp_dir.join(trial_dir_name(
            &self.short_name,
            &id,
            index,
            &self.space,
            &config,
            SystemTime::now(),
        ));
        std::fs::create_dir_all(&dir).map_err(|e| storage::io_err("create", &dir, e))?;
        storage::write_json(
            &dir.join(storage::TRIAL_FILE),
            &TrialIdentity {
                trial_id: id.clone(),
                index,
                trainable: self.trainable.clone(),
            },
        )?;
        storage::write_json(&dir.join("params.json"), &config)?;
        self.tc.scheduler.on_trial_add(&id, &config);
        let i = index as usize;
        self.created = i + 1;
        self.by_id.insert(id.clone(), i);
        self.trials.insert(i, Trial::new(id, index, config, dir));
        self.waiting.insert(i);
        Ok(())
    }

    fn launch(&mut self, i: usize) -> Result<(), TuneError> {
        self.waiting.remove(&i);
        let t = self.trials.get_mut(&i).expect("a live trial");
        let task = self
            .runner
            .launch(&t.id, &self.exp_dir, &self.state.marker, &self.resources)?;
        self.by_task.insert(task, i);
        t.task = Some(task);
        t.status = Status::Running;
        t.started = false;
        t.after = After::Finish;
        self.launched += 1;
        Ok(())
    }

    fn handle(&mut self, ev: TaskEvent) -> Result<(), TuneError> {
        match ev {
            TaskEvent::Message { task, data } => {
                let msg: ToDriver = match postcard::from_bytes(&data) {
                    Ok(m) => m,
                    Err(e) => {
                        self.reporter.note(&format!(
                            "ignoring a malformed message from task {task:#x}: {e}"
                        ));
                        return Ok(());
                    }
                };
                let reply = match msg {
                    ToDriver::Start {
                        trial_id,
                        hostname,
                        node_ip,
                        pid,
                        shared,
                    } => encode(&self.on_start(&trial_id, hostname, node_ip, pid, shared)?),
                    ToDriver::Report {
                        trial_id,
                        metrics,
                        time_this_iter_s,
                        checkpoint,
                    } => {
                        encode(&self.on_report(&trial_id, metrics, time_this_iter_s, checkpoint)?)
                    }
                };
                self.runner.reply(task, reply)?;
            }
            TaskEvent::Finished(id) => {
                if let Some(i) = self.by_task.remove(&id) {
                    self.on_task_end(i)?;
                }
            }
            TaskEvent::Disconnected(why) => return Err(TuneError::Cluster(why)),
        }
        Ok(())
    }

    fn on_start(
        &mut self,
        trial_id: &str,
        hostname: String,
        node_ip: String,
        pid: u32,
        shared: bool,
    ) -> Result<Option<StartInfo>, TuneError> {
        let Some(&i) = self.by_id.get(trial_id) else {
            return Ok(None);
        };
        let t = self.trials.get_mut(&i).expect("a live trial");
        if t.status != Status::Running {
            return Ok(None);
        }
        let latest = t.checkpoints.last().cloned();
        t.iteration = latest.as_ref().map_or(0, |c| c.iteration);
        t.time_total_s = latest.as_ref().map_or(0.0, |c| c.time_total_s);
        t.since_restore = 0;
        t.time_since_restore = 0.0;
        t.started = true;
        t.location = format!("{node_ip}:{pid}");
        t.hostname = hostname;
        t.node_ip = node_ip;
        t.pid = pid;
        t.shared = shared;
        let restore = match latest {
            None => Ok(None),
            Some(c) if shared => Ok(Some(RestoreFrom::Path(
                t.dir.join(c.name()).to_string_lossy().into_owned(),
            ))),
            Some(c) => trainable::read_dir_files(&t.dir.join(c.name()))
                .map(|files| Some(RestoreFrom::Files(files)))
                .map_err(TuneError::from),
        };
        let restore = match (TrialFiles::open(&t.dir), restore) {
            (Ok(files), Ok(restore)) => {
                t.files = Some(files);
                restore
            }
            (Err(e), _) | (_, Err(e)) => {
                // Its files cannot be opened or its checkpoint read here: the trial
                // fails with the reason (its task, told nothing to run, ends at once).
                t.after = After::Fail(e.to_string());
                return Ok(None);
            }
        };
        Ok(Some(StartInfo {
            config_json: serde_json::to_string(&t.config).expect("plain data"),
            trial_dir: t.dir.to_string_lossy().into_owned(),
            iteration: t.iteration,
            time_total_s: t.time_total_s,
            next_checkpoint: t.next_checkpoint,
            restore,
        }))
    }

    fn on_report(
        &mut self,
        trial_id: &str,
        metrics: Vec<(String, f64)>,
        dt: f64,
        checkpoint: Option<CheckpointMsg>,
    ) -> Result<Reply, TuneError> {
        let Some(&i) = self.by_id.get(trial_id) else {
            return Ok(Reply::Stop);
        };
        if self.trials[&i].status != Status::Running {
            return Ok(Reply::Stop);
        }
        let t = self.trials.get_mut(&i).expect("a live trial");
        t.iteration += 1;
        t.since_restore += 1;
        t.time_since_restore += dt;
        t.time_total_s += dt;
        let result = TrialResult {
            training_iteration: t.iteration,
            time_total_s: t.time_total_s,
            metrics: metrics.iter().cloned().collect(),
        };
        let checkpoint_name = match checkpoint.map(|c| self.store_checkpoint(i, c)) {
            None => None,
            Some(Ok(name)) => Some(name),
            Some(Err(e)) => return Ok(self.fail_running(i, e)),
        };
        let decision = if self.budget_over || self.rc.stop.should_stop(trial_id, &result) {
            Decision::Stop
        } else {
            self.tc.scheduler.on_trial_result(trial_id, &result)
        };
        let row = self.row(i, &metrics, dt, decision == Decision::Stop, checkpoint_name);
        self.tc.search_alg.on_trial_result(trial_id, &row);
        let t = self.trials.get_mut(&i).expect("a live trial");
        let written = match &mut t.files {
            Some(f) => f.append(&t.dir, &row),
            None => Ok(()),
        };
        t.last = Some(result);
        self.reporter.result(&self.trials[&i]);
        let reply = match (written, decision) {
            (Err(e), _) => self.fail_running(i, e),
            (Ok(()), Decision::Continue) => Reply::Continue,
            (Ok(()), Decision::Stop) => {
                self.trials.get_mut(&i).expect("a live trial").after = After::Finish;
                Reply::Stop
            }
            (Ok(()), Decision::Pause) => {
                self.trials.get_mut(&i).expect("a live trial").after = After::Pause;
                Reply::Stop
            }
            (Ok(()), Decision::Restart { config, from }) => match self.exploit(i, config, &from) {
                Ok(()) => Reply::Stop,
                Err(e) => self.fail_running(i, e),
            },
        };
        for id in self.tc.scheduler.take_stopped() {
            if let Some(&j) = self.by_id.get(&id) {
                if self.trials[&j].status == Status::Paused {
                    self.waiting.remove(&j);
                    self.finish(j, Status::Terminated, None)?;
                }
            }
        }
        Ok(reply)
    }

    /// A running trial whose result or checkpoint the tuner could not store: its task is
    /// told to stop, and the trial fails with the reason when it ends.
    fn fail_running(&mut self, i: usize, why: TuneError) -> Reply {
        self.trials.get_mut(&i).expect("a live trial").after = After::Fail(why.to_string());
        Reply::Stop
    }

    /// PBT's exploit: `i` continues with `config` from `from`'s latest checkpoint.
    fn exploit(&mut self, i: usize, config: Config, from: &str) -> Result<(), TuneError> {
        let donor = self.by_id.get(from).map(|j| &self.trials[j]);
        if let Some(c) = donor.and_then(|d| {
            d.checkpoints
                .last()
                .map(|c| (d.dir.join(c.name()), c.clone()))
        }) {
            let (src, mut info) = c;
            let t = self.trials.get_mut(&i).expect("a live trial");
            info.index = t.next_checkpoint;
            t.next_checkpoint += 1;
            let dst = t.dir.join(info.name());
            trainable::copy_dir(&src, &dst)?;
            t.checkpoints.push(info);
        }
        let t = self.trials.get_mut(&i).expect("a live trial");
        storage::write_json(&t.dir.join("params.json"), &config)?;
        t.config = config;
        t.after = After::Restart;
        Ok(())
    }

    /// Records a reported checkpoint; returns its directory's name.
    fn store_checkpoint(&mut self, i: usize, c: CheckpointMsg) -> Result<String, TuneError> {
        let t = self.trials.get_mut(&i).expect("a live trial");
        let name = match c {
            CheckpointMsg::InPlace(name) => name,
            CheckpointMsg::Upload { name, files } => {
                let tmp = t.dir.join(format!(".{name}.incoming"));
                let _ = std::fs::remove_dir_all(&tmp);
                trainable::write_files(&tmp, &files)?;
                trainable::move_into_place(&tmp, &t.dir.join(&name))?;
                name
            }
        };
        let index: u64 = name
            .strip_prefix("checkpoint_")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| TuneError::Corrupt(format!("unexpected checkpoint name {name}")))?;
        let info = CheckpointInfo::read(&t.dir, index).ok_or_else(|| {
            TuneError::Corrupt(format!("checkpoint {name} of {} has no metadata", t.id))
        })?;
        t.next_checkpoint = t.next_checkpoint.max(index + 1);
        t.checkpoints.push(info);
        self.prune_checkpoints(i);
        Ok(name)
    }

    /// Keeps `num_to_keep` checkpoints (the best by the score attribute, else the
    /// newest), and always the newest, which a restart needs.
    fn prune_checkpoints(&mut self, i: usize) {
        let cc = &self.rc.checkpoint_config;
        let Some(keep) = cc.num_to_keep else { return };
        let t = self.trials.get_mut(&i).expect("a live trial");
        if t.checkpoints.len() <= keep.max(1) {
            return;
        }
        let newest = t.checkpoints.last().expect("non-empty").index;
        let mut ranked: Vec<&CheckpointInfo> = t.checkpoints.iter().collect();
        if let (Some(attr), Some(order)) = (&cc.score_attribute, cc.score_order) {
            let score = |c: &CheckpointInfo| {
                c.metrics
                    .get(attr)
                    .and_then(Value::as_f64)
                    .map(|v| order.score(v))
            };
            ranked.sort_by(|a, b| {
                score(b)
                    .unwrap_or(f64::MIN)
                    .total_cmp(&score(a).unwrap_or(f64::MIN))
            });
        } else {
            ranked.sort_by_key(|c| std::cmp::Reverse(c.index));
        }
        let kept: BTreeSet<u64> = ranked
            .iter()
            .take(keep)
            .map(|c| c.index)
            .chain([newest])
            .collect();
        let dir = t.dir.clone();
        t.checkpoints.retain(|c| {
            let k = kept.contains(&c.index);
            if !k {
                let _ = std::fs::remove_dir_all(dir.join(c.name()));
            }
            k
        });
    }

    fn row(
        &self,
        i: usize,
        metrics: &[(String, f64)],
        dt: f64,
        done: bool,
        checkpoint: Option<String>,
    ) -> Map<String, Value> {
        let t = &self.trials[&i];
        let mut row = Map::with_capacity(metrics.len() + 17);
        for (k, v) in metrics {
            row.insert(k.clone(), num(*v));
        }
        let now = unix_now();
        row.insert("training_iteration".into(), t.iteration.into());
        row.insert("time_this_iter_s".into(), num(dt));
        row.insert("time_total_s".into(), num(t.time_total_s));
        row.insert("timestamp".into(), (now as u64).into());
        row.insert(
            "checkpoint_dir_name".into(),
            checkpoint.map_or(Value::Null, Value::from),
        );
        row.insert("done".into(), done.into());
        row.insert("trial_id".into(), t.id.clone().into());
        row.insert("hostname".into(), t.hostname.clone().into());
        row.insert("node_ip".into(), t.node_ip.clone().into());
        row.insert("pid".into(), t.pid.into());
        row.insert("time_since_restore".into(), num(t.time_since_restore));
        row.insert("iterations_since_restore".into(), t.since_restore.into());
        row.insert("date".into(), ray_date(SystemTime::now()).into());
        row.insert("config".into(), Value::Object(t.config.0.clone()));
        row
    }

    fn on_task_end(&mut self, i: usize) -> Result<(), TuneError> {
        self.launched -= 1;
        let t = self.trials.get_mut(&i).expect("a live trial");
        let outcome = t.task.take().map(|task| self.runner.outcome(task));
        t.files = None;
        t.started = false;
        // The tuner's own reason (what it could not store) first: the task then ended
        // only because it was told to stop.
        let failure = match (std::mem::replace(&mut t.after, After::Finish), outcome) {
            (After::Fail(why), _) => Err(why),
            (_, Some(Err(msg))) => Err(msg),
            (after, _) => Ok(after),
        };
        match failure {
            Err(msg) => {
                t.num_failures += 1;
                if let Err(e) = storage::append_error(&t.dir, t.num_failures, &msg) {
                    // error.txt cannot hold it (a full disk): the driver's log does.
                    eprintln!(
                        "sunray-tune: {e}; failure {} of trial {} was: {msg}",
                        t.num_failures, t.id
                    );
                }
                if t.num_failures <= self.rc.max_failures {
                    self.reporter.note(&format!(
                        "trial {} failed ({} of {} retries used), retrying from its last checkpoint: {msg}",
                        t.id, t.num_failures, self.rc.max_failures
                    ));
                    t.status = Status::Pending;
                    self.waiting.insert(i);
                } else {
                    self.reporter
                        .note(&format!("trial {} errored: {msg}", t.id));
                    self.finish(i, Status::Error, Some(msg))?;
                }
            }
            Ok(after) => match after {
                After::Finish | After::Fail(_) => self.finish(i, Status::Terminated, None)?,
                After::Pause => {
                    t.status = Status::Paused;
                    self.waiting.insert(i);
                }
                After::Restart => {
                    t.status = Status::Pending;
                    self.waiting.insert(i);
                }
            },
        }
        Ok(())
    }

    fn finish(&mut self, i: usize, status: Status, error: Option<String>) -> Result<(), TuneError> {
        let t = self.trials.get_mut(&i).expect("a live trial");
        t.status = status;
        let end = TrialEnd {
            status: status.as_str().into(),
            num_failures: t.num_failures,
        };
        if let Err(e) = storage::write_json(&t.dir.join(storage::END_FILE), &end) {
            // The experiment goes on; a restore would run this trial again.
            eprintln!("sunray-tune: {e}; trial {} ended {}", t.id, status.as_str());
        }
        let metric = self
            .metric
            .as_deref()
            .and_then(|m| t.last.as_ref().and_then(|r| r.get(m)));
        if error.is_some() {
            self.tc.scheduler.on_trial_error(&t.id);
        } else {
            self.tc.scheduler.on_trial_complete(&t.id, t.last.as_ref());
        }
        self.tc
            .search_alg
            .on_trial_complete(&t.id, metric, error.is_some());
        let t = self.trials.remove(&i).expect("a live trial");
        self.by_id.remove(&t.id);
        let score = self.score_of(&t);
        self.finished.add(t, score);
        Ok(())
    }

    /// The trial's last value of the experiment's metric, higher is better.
    fn score_of(&self, t: &Trial) -> Option<f64> {
        let (m, mode) = (self.metric.as_deref()?, self.mode?);
        Some(mode.score(t.last.as_ref()?.get(m)?))
    }

    /// Trials per status, live and finished.
    pub(crate) fn status_counts(&self) -> Vec<(Status, usize)> {
        let mut counts: Vec<(Status, usize)> = Vec::new();
        let mut add = |s: Status, n: usize| match counts.iter_mut().find(|(c, _)| *c == s) {
            Some(slot) => slot.1 += n,
            None => counts.push((s, n)),
        };
        for t in self.trials.values() {
            let s = if t.status == Status::Running && !t.started {
                Status::Pending
            } else {
                t.status
            };
            add(s, 1);
        }
        add(Status::Terminated, self.finished.terminated);
        add(Status::Error, self.finished.errored);
        counts.retain(|(_, n)| *n > 0);
        counts
    }

    /// Parameters the search varies (constants of the space are left out of tables).
    pub(crate) fn varied_params(&self) -> Vec<String> {
        self.space
            .leaves()
            .into_iter()
            .filter(|(_, d)| !matches!(d, crate::space::Domain::Const(_)))
            .map(|(p, _)| p.replace('.', "/"))
            .collect()
    }

    pub(crate) fn resources_per_trial(&self) -> TaskOptions {
        self.resources.clone()
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Bytes {
    Bytes::from(postcard::to_allocvec(v).expect("plain data"))
}

fn num(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// (resource name as `nodes()` shows it, amount) a trial needs.
pub(crate) fn resource_needs(r: &TaskOptions) -> Vec<(String, f64)> {
    let mut v = vec![
        ("CPU".to_string(), r.num_cpus.unwrap_or(1.0)),
        ("GPU".to_string(), r.num_gpus.unwrap_or(0.0)),
    ];
    v.extend(r.resources.iter().cloned());
    v
}

/// The scheduler's view of a result row read back from disk.
pub(crate) fn result_of_row(row: &Map<String, Value>) -> TrialResult {
    const AUTO: [&str; 4] = [
        "training_iteration",
        "time_total_s",
        "time_this_iter_s",
        "timestamp",
    ];
    TrialResult {
        training_iteration: row
            .get("training_iteration")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        time_total_s: row
            .get("time_total_s")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
        metrics: row
            .iter()
            .filter(|(k, _)| !AUTO.contains(&k.as_str()))
            .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
            .filter(|(k, _)| k != "pid")
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{choice, loguniform, sample_from};

    #[test]
    fn trial_directories_are_named_as_ray_names_them() {
        let space = Space::new()
            .with("l1", sample_from(|_, _| 64))
            .with("lr", loguniform(1e-4, 1e-1))
            .with("batch_size", choice([2, 4, 8]))
            .with("epochs", 10);
        let config: Config =
            serde_json::from_str(r#"{"l1": 64, "lr": 0.004257, "batch_size": 4, "epochs": 10}"#)
                .unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_689_003_623);
        assert_eq!(
            trial_dir_name("train_cifar", "51e43_00000", 0, &space, &config, at),
            "train_cifar_51e43_00000_0_lr=0.0043,batch_size=4_2023-07-10_15-40-23"
        );
        let plain = Space::new().with("x", 1);
        assert_eq!(
            trial_dir_name("f", "a_00001", 1, &plain, &Config::default(), at),
            "f_a_00001_1_2023-07-10_15-40-23"
        );
        let long = Space::new().with("name", choice(["a/b c".repeat(40)]));
        let cfg: Config =
            serde_json::from_value(serde_json::json!({"name": "a/b c".repeat(40)})).unwrap();
        let n = trial_dir_name("f", "a_00002", 2, &long, &cfg, at);
        assert!(n.len() < 200 && !n.contains('/') && !n.contains(' '), "{n}");
    }
}
