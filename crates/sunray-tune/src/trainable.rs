//! The worker side: the registry of trainables, the task that runs a trial, and the
//! `Session` a trainable reports through.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sunray::__private::{ErrorKind, InvokeResult};

use crate::space::Config;
use crate::storage::{io_message, AtPath, PathError};

/// What a trainable returns: `Ok(())`, or any error (a stopped trial's
/// [`Stopped`] is turned into a normal end).
pub type TrainResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A trainable: a plain function of the trial's config and its session.
pub type TrainFn = fn(&Config, &mut Session) -> TrainResult;

/// A trainable known to every process of this executable.
pub struct TrainableEntry {
    pub name: &'static str,
    pub run: TrainFn,
}
inventory::collect!(TrainableEntry);

/// Registers a trainable so that workers (which run this same executable) find it:
/// `sunray_tune::register_trainable!(train);` next to `fn train`.
#[macro_export]
macro_rules! register_trainable {
    ($f:ident) => {
        $crate::__private::inventory::submit! {
            $crate::TrainableEntry {
                name: concat!(module_path!(), "::", stringify!($f)),
                run: $f,
            }
        }
    };
}

/// The registered entry of `f`, by address: the driver knows the function, the worker
/// its name.
pub(crate) fn entry_of(f: TrainFn) -> Option<&'static TrainableEntry> {
    inventory::iter::<TrainableEntry>
        .into_iter()
        .find(|e| e.run as usize == f as usize)
}

fn entry_named(name: &str) -> Option<&'static TrainableEntry> {
    inventory::iter::<TrainableEntry>
        .into_iter()
        .find(|e| e.name == name)
}

/// Returned by [`Session::report`] when the scheduler ended the trial: pass it on with
/// `?` and the trial ends normally. Also returned when the trial cannot go on through no
/// fault of the trainable (its checkpoint could not be saved, say on a full disk): the
/// trial then fails with that reason ([`Session::failure`]), whatever the trainable
/// returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the trial was stopped by the tuner")]
pub struct Stopped;

/// A checkpoint: a directory of files the trainable wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    path: PathBuf,
    /// Made by [`Session::new_checkpoint_dir`]: moved into the experiment, not copied.
    owned: bool,
}

impl Checkpoint {
    /// A checkpoint of the files in `dir` (copied into the experiment; `dir` stays).
    pub fn from_directory(dir: impl Into<PathBuf>) -> Self {
        Checkpoint {
            path: dir.into(),
            owned: false,
        }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// File name of the metadata the tuner keeps in each checkpoint directory.
pub(crate) const CHECKPOINT_META: &str = ".tune_checkpoint.json";
/// Marker file whose content tells a worker it sees the driver's experiment directory.
pub(crate) const EXPERIMENT_MARKER: &str = ".sunray-experiment";
/// Test hook: behave as if the experiment directory were not shared with the nodes.
pub(crate) const FORCE_UPLOAD_ENV: &str = "SUNRAY_TUNE_FORCE_UPLOAD";

/// Files of a checkpoint directory as they travel when nodes do not share a filesystem.
pub(crate) type Files = Vec<(String, Vec<u8>)>;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToDriver {
    Start {
        trial_id: String,
        hostname: String,
        node_ip: String,
        pid: u32,
        /// This node sees the experiment directory: checkpoints move in place.
        shared: bool,
    },
    Report {
        trial_id: String,
        metrics: Vec<(String, f64)>,
        time_this_iter_s: f64,
        checkpoint: Option<CheckpointMsg>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum CheckpointMsg {
    /// Already moved to this directory name inside the trial directory.
    InPlace(String),
    /// Its files, for the driver to write as `checkpoint_<index>`.
    Upload { name: String, files: Files },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RestoreFrom {
    Path(String),
    Files(Files),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StartInfo {
    pub config_json: String,
    pub trial_dir: String,
    pub iteration: u64,
    pub time_total_s: f64,
    pub next_checkpoint: u64,
    pub restore: Option<RestoreFrom>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Reply {
    Continue,
    Stop,
}

/// What a trainable sees of its trial.
pub struct Session {
    trial_id: String,
    trial_dir: PathBuf,
    shared: bool,
    iteration: u64,
    restored_iteration: u64,
    time_total_s: f64,
    next_checkpoint: u64,
    checkpoint: Option<Checkpoint>,
    gpu_ids: Vec<String>,
    last_report: Instant,
    stopped: bool,
    /// Why the trial cannot go on (see [`Session::failure`]).
    failure: Option<String>,
    scratch: PathBuf,
}

impl Session {
    /// Sends one result (named numbers) and, optionally, a checkpoint; returns
    /// `Err(Stopped)` when the tuner ends the trial, so `?` ends the trainable.
    pub fn report<K: Into<String>>(
        &mut self,
        metrics: impl IntoIterator<Item = (K, f64)>,
        checkpoint: Option<Checkpoint>,
    ) -> Result<(), Stopped> {
        if self.stopped {
            return Err(Stopped);
        }
        let now = Instant::now();
        let dt = now.duration_since(self.last_report).as_secs_f64();
        self.iteration += 1;
        self.time_total_s += dt;
        let metrics: Vec<(String, f64)> = metrics.into_iter().map(|(k, v)| (k.into(), v)).collect();
        // A checkpoint that cannot be saved (full disk, missing directory) fails the
        // trial with the reason; it is retried from its last good checkpoint.
        let checkpoint = match checkpoint {
            None => None,
            Some(c) => match self.place_checkpoint(&c, &metrics) {
                Ok(placed) => Some(placed),
                Err(e) => {
                    let why = format!("cannot save the checkpoint of trial {}: {e}", self.trial_id);
                    return Err(self.fail(why));
                }
            },
        };
        let msg = ToDriver::Report {
            trial_id: self.trial_id.clone(),
            metrics,
            time_this_iter_s: dt,
            checkpoint,
        };
        let reply: Reply = match sunray::ext::ask_owner(&msg) {
            Ok(r) => r,
            Err(e) => return Err(self.fail(format!("the tuner (driver) cannot be reached: {e}"))),
        };
        self.last_report = Instant::now();
        match reply {
            Reply::Continue => Ok(()),
            Reply::Stop => {
                self.stopped = true;
                Err(Stopped)
            }
        }
    }

    /// Ends the trial as failed with `why` (the first reason stays).
    fn fail(&mut self, why: String) -> Stopped {
        self.failure.get_or_insert(why);
        self.stopped = true;
        Stopped
    }

    /// Why the trial cannot go on through no fault of the trainable's (its checkpoint
    /// could not be saved, the tuner cannot be reached), once [`report`](Self::report)
    /// returned `Err(Stopped)` for that reason: one line naming the file and, on a full
    /// disk, the space left. The trial fails with it whatever the trainable returns.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// The checkpoint to resume from (after a restart, a pause, a failure, a PBT
    /// exploit or `Tuner::restore`), if any.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }
    /// Results reported so far, including those before a restore.
    pub fn iteration(&self) -> u64 {
        self.iteration
    }
    /// The iteration the trial resumed at (0 on a fresh start).
    pub fn restored_iteration(&self) -> u64 {
        self.restored_iteration
    }
    pub fn trial_id(&self) -> &str {
        &self.trial_id
    }
    /// The trial's directory in the experiment (on this node only when the filesystem
    /// is shared).
    pub fn trial_dir(&self) -> &Path {
        &self.trial_dir
    }
    /// GPU ids this trial holds (also in `CUDA_VISIBLE_DEVICES`).
    pub fn gpu_ids(&self) -> &[String] {
        &self.gpu_ids
    }
    /// A fresh empty directory to write the next checkpoint into; reporting it moves
    /// it into the experiment (no copy).
    pub fn new_checkpoint_dir(&self) -> std::io::Result<Checkpoint> {
        let base = if self.shared {
            &self.trial_dir
        } else {
            &self.scratch
        };
        let dir = base.join(format!(".pending_checkpoint_{:06}", self.next_checkpoint));
        // The error names the directory (its kind stays, for callers that match on it).
        let named =
            |what, e: std::io::Error| std::io::Error::new(e.kind(), io_message(what, &dir, &e));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| named("remove", e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| named("create", e))?;
        Ok(Checkpoint {
            path: dir,
            owned: true,
        })
    }

    fn place_checkpoint(
        &mut self,
        c: &Checkpoint,
        metrics: &[(String, f64)],
    ) -> Result<CheckpointMsg, PathError> {
        let name = format!("checkpoint_{:06}", self.next_checkpoint);
        self.next_checkpoint += 1;
        let meta = serde_json::json!({
            "training_iteration": self.iteration,
            "time_total_s": self.time_total_s,
            "metrics": metrics.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect::<serde_json::Map<String, serde_json::Value>>(),
        });
        let meta = serde_json::to_vec(&meta).expect("plain data");
        if self.shared {
            // The directory appears under its final name complete, metadata included, in
            // one rename; one left by a crash before its report reached the tuner (so
            // the tuner never counted it) is replaced.
            let staging = if c.owned {
                c.path.clone()
            } else {
                let s = self.trial_dir.join(format!(".incoming_{name}"));
                if s.exists() {
                    std::fs::remove_dir_all(&s).at("remove", &s)?;
                }
                copy_dir(&c.path, &s)?;
                s
            };
            let meta_path = staging.join(CHECKPOINT_META);
            std::fs::write(&meta_path, meta).at("write", &meta_path)?;
            move_into_place(&staging, &self.trial_dir.join(&name))?;
            Ok(CheckpointMsg::InPlace(name))
        } else {
            let mut files = read_dir_files(&c.path)?;
            files.push((CHECKPOINT_META.to_string(), meta));
            if c.owned {
                std::fs::remove_dir_all(&c.path).at("remove", &c.path)?;
            }
            Ok(CheckpointMsg::Upload { name, files })
        }
    }
}

/// Renames a complete checkpoint directory to its final name, replacing one a crash left
/// there before its report reached the tuner.
pub(crate) fn move_into_place(staging: &Path, target: &Path) -> Result<(), PathError> {
    if target.exists() {
        std::fs::remove_dir_all(target).at("remove", target)?;
    }
    std::fs::rename(staging, target).at("move a checkpoint to", target)
}

/// Copies a directory tree.
pub(crate) fn copy_dir(from: &Path, to: &Path) -> Result<(), PathError> {
    std::fs::create_dir_all(to).at("create", to)?;
    for e in std::fs::read_dir(from).at("read", from)? {
        let e = e.at("read", from)?;
        let dst = to.join(e.file_name());
        if e.file_type().at("read", &e.path())?.is_dir() {
            copy_dir(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), &dst).at("copy into", &dst)?;
        }
    }
    Ok(())
}

/// Every file under `dir`, with paths relative to it.
pub(crate) fn read_dir_files(dir: &Path) -> Result<Files, PathError> {
    fn walk(root: &Path, dir: &Path, out: &mut Files) -> Result<(), PathError> {
        for e in std::fs::read_dir(dir).at("read", dir)? {
            let e = e.at("read", dir)?;
            if e.file_type().at("read", &e.path())?.is_dir() {
                walk(root, &e.path(), out)?;
            } else {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, std::fs::read(e.path()).at("read", &e.path())?));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// Writes files into `dir` (made fresh).
pub(crate) fn write_files(dir: &Path, files: &Files) -> Result<(), PathError> {
    std::fs::create_dir_all(dir).at("create", dir)?;
    for (rel, data) in files {
        if rel.split('/').any(|p| p == ".." || p.is_empty()) {
            return Err(std::io::Error::other(format!(
                "refusing checkpoint file path {rel:?}"
            )))
            .at("write into", dir);
        }
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).at("create", parent)?;
        }
        std::fs::write(&p, data).at("write", &p)?;
    }
    Ok(())
}

/// The name of the remote function that runs trials.
pub(crate) const TRIAL_TASK: &str = "sunray_tune::run_trial";

sunray::__private::inventory::submit! {
    sunray::__private::RemoteFunction { name: TRIAL_TASK, invoke: run_trial }
}

fn run_trial(args: &[Bytes]) -> InvokeResult {
    let (name, trial_id, experiment_dir, marker): (String, String, String, String) = match args {
        [a, b, c, d] => (
            sunray::__private::decode_arg(a, "trainable")?,
            sunray::__private::decode_arg(b, "trial_id")?,
            sunray::__private::decode_arg(c, "experiment_dir")?,
            sunray::__private::decode_arg(d, "marker")?,
        ),
        _ => {
            return Err((
                ErrorKind::BadArguments,
                "a trial task takes 4 arguments".into(),
            ))
        }
    };
    let entry = entry_named(&name).ok_or_else(|| {
        (
            ErrorKind::FunctionNotFound,
            format!("no trainable `{name}` registered in this executable (sunray_tune::register_trainable!)"),
        )
    })?;
    let Some((config, mut session)) = Session::begin(&trial_id, &experiment_dir, &marker)
        .map_err(|e| (ErrorKind::Application, e))?
    else {
        // The tuner no longer wants this trial (e.g. a retry after it ended).
        return sunray::__private::encode_output(&());
    };
    let outcome = (entry.run)(&config, &mut session);
    let failure = session.failure.take();
    drop(session);
    if let Some(why) = failure {
        // The tuner's own reason (a checkpoint that could not be saved) comes first,
        // whatever the trainable made of the `Stopped` it got.
        return Err((ErrorKind::Application, why));
    }
    match outcome {
        Ok(()) => sunray::__private::encode_output(&()),
        Err(e) if e.downcast_ref::<Stopped>().is_some() => sunray::__private::encode_output(&()),
        Err(e) => Err((ErrorKind::Application, e.to_string())),
    }
}

impl Session {
    /// Inside a trial's task: says hello to the tuner and gets the trial's config and
    /// session (None: the tuner no longer wants this trial). Front ends that run their
    /// own trainables (Python) start trials here too.
    pub fn begin(
        trial_id: &str,
        experiment_dir: &str,
        marker: &str,
    ) -> Result<Option<(Config, Session)>, String> {
        let ctx = sunray::get_runtime_context();
        let shared = std::env::var_os(FORCE_UPLOAD_ENV).is_none()
            && std::fs::read_to_string(Path::new(experiment_dir).join(EXPERIMENT_MARKER))
                .is_ok_and(|m| m == marker);
        let start = ToDriver::Start {
            trial_id: trial_id.to_string(),
            hostname: sunray::ext::hostname(),
            node_ip: ctx.node_ip.clone(),
            pid: std::process::id(),
            shared,
        };
        let info: Option<StartInfo> = sunray::ext::ask_owner(&start)
            .map_err(|e| format!("the tuner cannot be reached: {e}"))?;
        let Some(info) = info else {
            return Ok(None);
        };
        let config: Config = serde_json::from_str(&info.config_json).map_err(|e| e.to_string())?;
        let scratch =
            std::env::temp_dir().join(format!("sunray-tune-{}-{}", trial_id, std::process::id()));
        let checkpoint = match info.restore {
            None => None,
            Some(RestoreFrom::Path(p)) if shared => Some(Checkpoint::from_directory(p)),
            Some(RestoreFrom::Path(p)) => {
                return Err(format!("checkpoint {p} is not visible on this node"));
            }
            Some(RestoreFrom::Files(files)) => {
                let dir = scratch.join("restored");
                let _ = std::fs::remove_dir_all(&dir);
                write_files(&dir, &files)
                    .map_err(|e| format!("cannot unpack the checkpoint: {e}"))?;
                Some(Checkpoint::from_directory(dir))
            }
        };
        if !shared {
            std::fs::create_dir_all(&scratch)
                .map_err(|e| format!("cannot make {}: {e}", scratch.display()))?;
        }
        let session = Session {
            trial_id: trial_id.to_string(),
            trial_dir: PathBuf::from(&info.trial_dir),
            shared,
            iteration: info.iteration,
            restored_iteration: info.iteration,
            time_total_s: info.time_total_s,
            next_checkpoint: info.next_checkpoint,
            checkpoint,
            gpu_ids: ctx.gpu_ids,
            last_report: Instant::now(),
            stopped: false,
            failure: None,
            scratch,
        };
        Ok(Some((config, session)))
    }

    /// This node sees the experiment directory (checkpoints move in place).
    pub fn shares_experiment_dir(&self) -> bool {
        self.shared
    }
    /// A directory of this trial's on this node: the trial directory when it is
    /// shared, else a scratch directory removed when the trial ends.
    pub fn local_dir(&self) -> &Path {
        if self.shared {
            &self.trial_dir
        } else {
            &self.scratch
        }
    }
    /// The tuner ended this trial (a `report` answered stop).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}
