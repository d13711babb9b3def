//! The experiment on disk, laid out as Ray Tune lays it out:
//!
//! ```text
//! <storage>/<name>/experiment_state.json    settings, searcher and scheduler state
//! <storage>/<name>/<trainable>_<trial id>/   params.json, result.json, progress.csv,
//!                                            checkpoint_000000/ ..., error.txt
//! ```
//! Per-trial files are the truth about trials (written as results arrive, O(1) per
//! result); `experiment_state.json` holds what cannot be rebuilt from them.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::result::Mode;
use crate::space::Config;
use crate::trainable::CHECKPOINT_META;
use crate::TuneError;

pub(crate) const STATE_FILE: &str = "experiment_state.json";
pub(crate) const TRIAL_FILE: &str = ".trial.json";
pub(crate) const END_FILE: &str = ".trial_end.json";

/// What `experiment_state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ExperimentState {
    pub version: u32,
    pub name: String,
    pub trainable: String,
    pub metric: Option<String>,
    pub mode: Option<Mode>,
    pub num_samples: usize,
    pub seed: u64,
    pub exp_hash: String,
    pub marker: String,
    /// Trials created so far (the next trial's index).
    pub created: u64,
    pub searcher: String,
    pub searcher_state: Value,
    pub searcher_created: u64,
    pub searcher_finished: bool,
    pub scheduler: String,
    pub scheduler_state: Value,
    /// Trials by status, for a glance (the trial directories are the truth).
    pub counts: Map<String, Value>,
}

/// Identity of a trial, written once in its directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TrialIdentity {
    pub trial_id: String,
    pub index: u64,
    pub trainable: String,
}

/// How a trial ended, written when it ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TrialEnd {
    pub status: String,
    pub num_failures: usize,
}

pub(crate) fn io_err(what: &str, path: &Path, e: std::io::Error) -> TuneError {
    TuneError::Io(io_message(what, path, &e))
}

/// `cannot <what> <path>: <error>` on one line; for a full disk (or quota), with the
/// space left on the path's filesystem.
pub(crate) fn io_message(what: &str, path: &Path, e: &std::io::Error) -> String {
    let mut m = format!("cannot {what} {}: {e}", path.display());
    if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
        if let Some((free, dir)) = free_space(path) {
            m.push_str(&format!(
                "; {} free on {}",
                human_bytes(free),
                dir.display()
            ));
        }
    }
    m
}

/// Bytes an unprivileged user may still write on the filesystem holding `path`, and the
/// directory asked (the nearest existing one above `path`).
pub(crate) fn free_space(path: &Path) -> Option<(u64, PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    let mut dir = path.parent()?;
    loop {
        let asked = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let c = std::ffi::CString::new(asked.as_os_str().as_bytes()).ok()?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0 {
            let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
            return Some((free, asked.to_path_buf()));
        }
        dir = dir.parent()?;
    }
}

/// 0 B, 512 B, 1.5 KiB, 12.3 GiB.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let (mut v, mut u) = (n as f64, 0);
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// An I/O error with what was being done, and to which path (shown as
/// [`io_message`] shows it).
#[derive(Debug)]
pub(crate) struct PathError {
    what: &'static str,
    path: PathBuf,
    error: std::io::Error,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&io_message(self.what, &self.path, &self.error))
    }
}

impl From<PathError> for TuneError {
    fn from(e: PathError) -> Self {
        TuneError::Io(e.to_string())
    }
}

/// `.at("write", &path)`: an I/O result's error, with what was done to which path.
pub(crate) trait AtPath<T> {
    fn at(self, what: &'static str, path: &Path) -> Result<T, PathError>;
}

impl<T> AtPath<T> for std::io::Result<T> {
    fn at(self, what: &'static str, path: &Path) -> Result<T, PathError> {
        self.map_err(|error| PathError {
            what,
            path: path.to_path_buf(),
            error,
        })
    }
}

/// Writes `data` to `path` atomically (temporary file, then rename).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), TuneError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| io_err("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err("write", path, e))
}

pub(crate) fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), TuneError> {
    let data = serde_json::to_vec_pretty(v).expect("plain data");
    write_atomic(path, &data)
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, TuneError> {
    let data = std::fs::read(path).map_err(|e| io_err("read", path, e))?;
    serde_json::from_slice(&data).map_err(|e| {
        TuneError::Corrupt(format!(
            "{} is not what sunray-tune wrote: {e}",
            path.display()
        ))
    })
}

/// The open result files of a running trial.
pub(crate) struct TrialFiles {
    result: File,
    progress: csv::Writer<File>,
    columns: Option<Vec<String>>,
}

impl TrialFiles {
    pub fn open(dir: &Path) -> Result<Self, TuneError> {
        let open = |name: &str| {
            let p = dir.join(name);
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(|e| io_err("open", &p, e))
        };
        let progress_path = dir.join("progress.csv");
        // Appending to an existing progress.csv keeps its header's columns.
        let columns = File::open(&progress_path).ok().and_then(|f| {
            let mut first = String::new();
            BufReader::new(f).read_line(&mut first).ok()?;
            let mut r = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(first.as_bytes());
            let rec = r.records().next()?.ok()?;
            Some(rec.iter().map(str::to_string).collect())
        });
        Ok(TrialFiles {
            result: open("result.json")?,
            progress: csv::WriterBuilder::new().from_writer(open("progress.csv")?),
            columns,
        })
    }

    /// Appends one result row to result.json and progress.csv.
    pub fn append(&mut self, dir: &Path, row: &Map<String, Value>) -> Result<(), TuneError> {
        let mut line = serde_json::to_vec(row).expect("plain data");
        line.push(b'\n');
        self.result
            .write_all(&line)
            .map_err(|e| io_err("append to", &dir.join("result.json"), e))?;
        let flat = flatten_row(row);
        let columns = match &self.columns {
            Some(c) => c,
            None => {
                let c: Vec<String> = flat.iter().map(|(k, _)| k.clone()).collect();
                self.progress
                    .write_record(&c)
                    .map_err(|e| csv_err(dir, e))?;
                self.columns.insert(c)
            }
        };
        let record: Vec<String> = columns
            .iter()
            .map(|c| {
                flat.iter()
                    .find(|(k, _)| k == c)
                    .map(|(_, v)| cell(v))
                    .unwrap_or_default()
            })
            .collect();
        self.progress
            .write_record(&record)
            .map_err(|e| csv_err(dir, e))?;
        self.progress
            .flush()
            .map_err(|e| io_err("write", &dir.join("progress.csv"), e))
    }
}

fn csv_err(dir: &Path, e: csv::Error) -> TuneError {
    let path = dir.join("progress.csv");
    match e.kind() {
        csv::ErrorKind::Io(io) => TuneError::Io(io_message("write", &path, io)),
        _ => TuneError::Io(format!("cannot write {}: {e}", path.display())),
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A result row with `config` spread into `config/<key>` columns, as Ray's CSV.
pub(crate) fn flatten_row(row: &Map<String, Value>) -> Vec<(String, Value)> {
    let mut out = Vec::with_capacity(row.len() + 8);
    for (k, v) in row {
        match (k.as_str(), v) {
            ("config", Value::Object(c)) => {
                for (ck, cv) in Config(c.clone()).flat() {
                    out.push((format!("config/{ck}"), cv));
                }
            }
            _ => out.push((k.clone(), v.clone())),
        }
    }
    out
}

/// A checkpoint directory of a trial, as found on disk.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckpointInfo {
    pub index: u64,
    pub iteration: u64,
    pub time_total_s: f64,
    pub metrics: Map<String, Value>,
}

impl CheckpointInfo {
    pub fn name(&self) -> String {
        format!("checkpoint_{:06}", self.index)
    }
    pub fn read(dir: &Path, index: u64) -> Option<CheckpointInfo> {
        let meta: Value = serde_json::from_slice(
            &std::fs::read(
                dir.join(format!("checkpoint_{index:06}"))
                    .join(CHECKPOINT_META),
            )
            .ok()?,
        )
        .ok()?;
        Some(CheckpointInfo {
            index,
            iteration: meta.get("training_iteration")?.as_u64()?,
            time_total_s: meta.get("time_total_s")?.as_f64()?,
            metrics: meta.get("metrics")?.as_object()?.clone(),
        })
    }
}

/// Checkpoints of a trial directory, oldest first (directories without metadata, i.e.
/// cut short by a crash, are skipped).
pub(crate) fn list_checkpoints(dir: &Path) -> Vec<CheckpointInfo> {
    let mut out: Vec<CheckpointInfo> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let idx: u64 = name.strip_prefix("checkpoint_")?.parse().ok()?;
            CheckpointInfo::read(dir, idx)
        })
        .collect();
    out.sort_by_key(|c| c.index);
    out
}

/// Every row of a trial's result.json (a line cut short by a crash is skipped).
pub(crate) fn read_results(dir: &Path) -> Vec<Map<String, Value>> {
    let Ok(f) = File::open(dir.join("result.json")) else {
        return Vec::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// Trial directories of an experiment, by index.
pub(crate) fn trial_dirs(exp: &Path) -> Vec<(TrialIdentity, PathBuf)> {
    let mut out: Vec<(TrialIdentity, PathBuf)> = std::fs::read_dir(exp)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let id: TrialIdentity = read_json(&e.path().join(TRIAL_FILE)).ok()?;
            Some((id, e.path()))
        })
        .collect();
    out.sort_by_key(|(id, _)| id.index);
    out
}

/// Appends a failure to the trial's error.txt.
pub(crate) fn append_error(dir: &Path, failure: usize, message: &str) -> Result<(), TuneError> {
    let p = dir.join("error.txt");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .map_err(|e| io_err("open", &p, e))?;
    let when = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    writeln!(f, "Failure # {failure} (occurred at {when})\n{message}\n")
        .map_err(|e| io_err("write", &p, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_one_line_naming_the_path_and_the_space_left() {
        let dir = tempfile::tempdir().unwrap();
        // A path whose directory does not exist: the space is asked of the one above.
        let p = dir.path().join("trial/result.json");
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let m = io_message("append to", &p, &full);
        let head = format!(
            "cannot append to {}: No space left on device (os error 28); ",
            p.display()
        );
        assert!(m.starts_with(&head), "{m}");
        assert!(
            m.ends_with(&format!(" free on {}", dir.path().display())),
            "{m}"
        );
        assert!(!m.contains('\n'), "{m}");
        let denied = std::io::Error::from_raw_os_error(libc::EACCES);
        assert!(!io_message("write", &p, &denied).contains("free on"));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(13_207_024_435), "12.3 GiB");
    }

    /// `/dev/full` fails every write with ENOSPC, as a full filesystem does.
    #[test]
    fn result_and_error_files_on_a_full_device_fail_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        // (Not progress.csv: opening the files reads its first line, and /dev/full
        // reads as endless zeros.)
        for f in ["result.json", "error.txt"] {
            std::os::unix::fs::symlink("/dev/full", dir.path().join(f)).unwrap();
        }
        let mut files = TrialFiles::open(dir.path()).unwrap();
        let mut row = Map::new();
        row.insert("score".into(), 1.into());
        let e = files.append(dir.path(), &row).unwrap_err().to_string();
        let result = dir.path().join("result.json");
        assert!(
            e.starts_with(&format!(
                "cannot append to {}: No space left",
                result.display()
            )),
            "{e}"
        );
        assert!(e.contains(" free on "), "{e}");
        let e = append_error(dir.path(), 1, "boom").unwrap_err().to_string();
        let error_txt = dir.path().join("error.txt");
        assert!(
            e.starts_with(&format!(
                "cannot write {}: No space left",
                error_txt.display()
            )),
            "{e}"
        );
    }
}
