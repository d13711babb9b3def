//! Tune experiments as Ray lays them out on disk (which sunray writes too): found under
//! the results directories, read incrementally (a running experiment's `result.json`
//! files grow; only the new bytes are parsed), so that polling a large experiment costs
//! a `stat` per trial.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

/// One result row as the trial wrote it.
pub type Row = Map<String, Value>;

/// Every experiment under some results directories, with what was read of them.
#[derive(Default)]
pub struct Library {
    roots: Vec<PathBuf>,
    results: HashMap<PathBuf, ResultFile>,
    /// Each trial's `params.json`, read once (a trial writes it once, when it starts).
    params: HashMap<PathBuf, Value>,
}

/// What was read of one trial's `result.json`.
#[derive(Default)]
struct ResultFile {
    offset: u64,
    /// Bytes after the last complete line (a row being written).
    partial: Vec<u8>,
    rows: Vec<Row>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExperimentSummary {
    /// Its path relative to the results directory it was found in, prefixed with that
    /// directory's index: how the API names it.
    pub id: String,
    pub name: String,
    pub path: PathBuf,
    pub trials: usize,
    pub metric: Option<String>,
    pub mode: Option<String>,
    pub status: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrialView {
    pub trial_id: String,
    pub dir: String,
    pub status: String,
    pub config: Value,
    pub iterations: usize,
    /// The last result's numbers.
    pub last: BTreeMap<String, f64>,
    pub node_ip: Option<String>,
    pub hostname: Option<String>,
}

/// A rung of ASHA: where trials are compared, and the cut-off in the metric's units.
#[derive(Debug, Clone, Serialize)]
pub struct Rung {
    pub milestone: f64,
    pub cutoff: Option<f64>,
    pub recorded: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExperimentView {
    pub id: String,
    pub name: String,
    pub path: PathBuf,
    pub metric: Option<String>,
    pub mode: Option<String>,
    pub scheduler: Option<String>,
    pub rungs: Vec<Rung>,
    /// Numeric result columns any trial reported (for the metric picker).
    pub metrics: Vec<String>,
    pub trials: Vec<TrialView>,
    /// The best trial by the experiment's metric and mode (last results).
    pub best: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    pub trial_id: String,
    pub points: Vec<[f64; 2]>,
}

impl Library {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Library {
            roots,
            results: HashMap::new(),
            params: HashMap::new(),
        }
    }

    /// A trial's config from its `params.json`, read the first time it is there.
    fn params(&mut self, dir: &Path) -> Option<Value> {
        if let Some(v) = self.params.get(dir) {
            return Some(v.clone());
        }
        let v: Value =
            serde_json::from_slice(&read_regular(&dir.join("params.json"), MAX_SMALL_FILE)?)
                .ok()?;
        self.params.insert(dir.to_path_buf(), v.clone());
        Some(v)
    }

    /// Experiment directories: a root that holds trial directories is one; otherwise
    /// each of its subdirectories that does.
    fn experiment_dirs(&self) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        for (i, root) in self.roots.iter().enumerate() {
            if is_experiment(root) {
                let name = root.file_name().map_or("".into(), |n| n.to_string_lossy());
                out.push((format!("{i}/{name}"), root.clone()));
                continue;
            }
            let mut dirs: Vec<PathBuf> = subdirs(root)
                .into_iter()
                .filter(|d| is_experiment(d))
                .collect();
            dirs.sort();
            for d in dirs {
                let name = d.file_name().map_or("".into(), |n| n.to_string_lossy());
                out.push((format!("{i}/{name}"), d));
            }
        }
        out
    }

    pub fn list(&mut self) -> Vec<ExperimentSummary> {
        self.experiment_dirs()
            .into_iter()
            .map(|(id, path)| {
                let state = read_state(&path);
                let trials = trial_dirs(&path);
                let ray = ray_statuses(&path);
                let mut status = BTreeMap::new();
                for t in &trials {
                    let last = self.rows(&t.join("result.json")).last().cloned();
                    *status
                        .entry(trial_status(t, last.as_ref(), &ray))
                        .or_insert(0) += 1;
                }
                ExperimentSummary {
                    name: path
                        .file_name()
                        .map_or("".into(), |n| n.to_string_lossy().into_owned()),
                    id,
                    trials: trials.len(),
                    metric: state_str(&state, "metric"),
                    mode: state_str(&state, "mode"),
                    status,
                    path,
                }
            })
            .collect()
    }

    fn find(&self, id: &str) -> Option<PathBuf> {
        self.experiment_dirs()
            .into_iter()
            .find(|(i, _)| i == id)
            .map(|(_, p)| p)
    }

    /// The experiment named `id` (as [`Library::list`] names it), its trials read up
    /// to now; `None` for an id that names none.
    pub fn experiment(&mut self, id: &str) -> Option<ExperimentView> {
        let path = self.find(id)?;
        let state = read_state(&path);
        let metric = state_str(&state, "metric");
        let mode = state_str(&state, "mode");
        let mut metrics = std::collections::BTreeSet::new();
        let mut trials = Vec::new();
        let ray = ray_statuses(&path);
        for dir in trial_dirs(&path) {
            let params = self.params(&dir);
            let rows = self.rows(&dir.join("result.json"));
            let last = rows.last();
            let mut numbers = BTreeMap::new();
            if let Some(r) = last {
                for (k, v) in r {
                    if let Some(x) = v.as_f64() {
                        numbers.insert(k.clone(), x);
                    }
                }
            }
            for r in rows {
                for (k, v) in r {
                    if v.is_number() && !metrics.contains(k) {
                        metrics.insert(k.clone());
                    }
                }
            }
            let config = params
                .or_else(|| last.and_then(|r| r.get("config").cloned()))
                .unwrap_or(Value::Null);
            let s = |k: &str| {
                last.and_then(|r| r.get(k))
                    .and_then(Value::as_str)
                    .map(String::from)
            };
            trials.push(TrialView {
                trial_id: s("trial_id").unwrap_or_else(|| trial_id_of(&dir)),
                dir: dir
                    .file_name()
                    .map_or("".into(), |n| n.to_string_lossy().into_owned()),
                status: trial_status(&dir, last, &ray),
                config,
                iterations: rows.len(),
                last: numbers,
                node_ip: s("node_ip"),
                hostname: s("hostname"),
            });
        }
        let best = match (&metric, mode.as_deref()) {
            (Some(m), Some(mode)) => trials
                .iter()
                .filter_map(|t| t.last.get(m).map(|v| (t, *v)))
                .filter(|(_, v)| v.is_finite())
                .max_by(|a, b| {
                    let (x, y) = if mode == "min" {
                        (b.1, a.1)
                    } else {
                        (a.1, b.1)
                    };
                    x.total_cmp(&y)
                })
                .map(|(t, _)| t.trial_id.clone()),
            _ => None,
        };
        Some(ExperimentView {
            name: path
                .file_name()
                .map_or("".into(), |n| n.to_string_lossy().into_owned()),
            id: id.to_string(),
            scheduler: state_str(&state, "scheduler"),
            rungs: rungs(&state, mode.as_deref()),
            metrics: metrics.into_iter().collect(),
            metric,
            mode,
            trials,
            best,
            path,
        })
    }

    /// One line per trial of `metric` against `x` (`training_iteration`,
    /// `time_total_s`, any reported number).
    pub fn curves(&mut self, id: &str, metric: &str, x: &str) -> Option<Vec<Curve>> {
        let path = self.find(id)?;
        Some(
            trial_dirs(&path)
                .into_iter()
                .map(|dir| {
                    let rows = self.rows(&dir.join("result.json"));
                    let points = rows
                        .iter()
                        .filter_map(|r| Some([r.get(x)?.as_f64()?, r.get(metric)?.as_f64()?]))
                        .filter(|p| p[0].is_finite() && p[1].is_finite())
                        .collect();
                    let trial_id = rows
                        .last()
                        .and_then(|r| r.get("trial_id"))
                        .and_then(Value::as_str)
                        .map_or_else(|| trial_id_of(&dir), String::from);
                    Curve { trial_id, points }
                })
                .collect(),
        )
    }

    /// The rows of a `result.json`, reading only what was appended since last time.
    fn rows(&mut self, file: &Path) -> &[Row] {
        let entry = self.results.entry(file.to_path_buf()).or_default();
        let len = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        if len < entry.offset {
            // Rewritten (a restored experiment starting over): read it again.
            *entry = ResultFile::default();
        }
        if len > entry.offset {
            if let Some(mut f) = open_regular(file) {
                let mut buf = Vec::new();
                // A poll reads a bounded piece; the rest comes with the next ones.
                let piece = f.seek(SeekFrom::Start(entry.offset)).is_ok()
                    && (&mut f)
                        .take(MAX_RESULT_PIECE)
                        .read_to_end(&mut buf)
                        .is_ok();
                if piece {
                    entry.offset += buf.len() as u64;
                    let mut data = std::mem::take(&mut entry.partial);
                    data.extend_from_slice(&buf);
                    let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                    for line in data[..complete].split(|b| *b == b'\n') {
                        if let Ok(Value::Object(row)) = serde_json::from_slice::<Value>(line) {
                            entry.rows.push(row);
                        }
                    }
                    entry.partial = data[complete..].to_vec();
                }
            }
        }
        &entry.rows
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn is_trial(dir: &Path) -> bool {
    dir.join("result.json").is_file() || dir.join("params.json").is_file()
}

fn is_experiment(dir: &Path) -> bool {
    dir.join("experiment_state.json").is_file() || subdirs(dir).iter().any(|d| is_trial(d))
}

fn trial_dirs(exp: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = subdirs(exp).into_iter().filter(|d| is_trial(d)).collect();
    v.sort();
    v
}

/// Ray names trial directories `{trainable}_{id}_{index}_…`: the id is the second
/// and third fields joined (`51e43_00000`).
fn trial_id_of(dir: &Path) -> String {
    let name = dir
        .file_name()
        .map_or("".into(), |n| n.to_string_lossy().into_owned());
    let parts: Vec<&str> = name.split('_').collect();
    let hex = |p: &str| p.len() == 5 && p.chars().all(|c| c.is_ascii_hexdigit());
    let digits = |p: &str| p.len() == 5 && p.chars().all(|c| c.is_ascii_digit());
    match (0..parts.len().saturating_sub(1)).find(|&i| hex(parts[i]) && digits(parts[i + 1])) {
        Some(i) => format!("{}_{}", parts[i], parts[i + 1]),
        None => name,
    }
}

/// Trial statuses from Ray Tune's `experiment_state-<date>.json` (its `trial_data`:
/// pairs of a trial's JSON and its runtime state), by trial id.
fn ray_statuses(exp: &Path) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Ok(rd) = std::fs::read_dir(exp) else {
        return out;
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("experiment_state-") && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    let Some(state) = files.last().and_then(|f| read_regular(f, MAX_STATE_FILE)) else {
        return out;
    };
    let Ok(v) = serde_json::from_slice::<Value>(&state) else {
        return out;
    };
    for pair in v
        .get("trial_data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let trial = pair
            .get(0)
            .and_then(Value::as_str)
            .and_then(|s| serde_json::from_str::<Value>(s).ok());
        if let Some(t) = trial {
            if let (Some(id), Some(st)) = (
                t.get("trial_id").and_then(Value::as_str),
                t.get("status").and_then(Value::as_str),
            ) {
                out.insert(id.to_string(), st.to_string());
            }
        }
    }
    out
}

/// sunray's `.trial_end.json` when the trial ended, Ray's experiment state when Ray
/// wrote the experiment; else an `error.txt` means it failed, a last result marked
/// `done` that it finished, and anything else that it is still running (or was
/// stopped without a word).
fn trial_status(dir: &Path, last: Option<&Row>, ray: &HashMap<String, String>) -> String {
    if let Some(s) = read_regular(&dir.join(".trial_end.json"), MAX_SMALL_FILE)
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("status").and_then(Value::as_str).map(String::from))
    {
        return s;
    }
    if let Some(s) = ray.get(&trial_id_of(dir)) {
        return s.clone();
    }
    if dir.join("error.txt").is_file() {
        return "ERROR".into();
    }
    if last.and_then(|r| r.get("done")).and_then(Value::as_bool) == Some(true) {
        return "TERMINATED".into();
    }
    "RUNNING".into()
}

/// Largest `params.json` or `.trial_end.json` read; larger ones count as absent.
const MAX_SMALL_FILE: u64 = 1 << 20;
/// Largest experiment state read (Ray's holds every trial's JSON).
const MAX_STATE_FILE: u64 = 256 << 20;
/// Most of a `result.json` read in one poll.
const MAX_RESULT_PIECE: u64 = 64 << 20;

/// `path` opened only if it is a regular file. Anyone who can write into a results
/// folder could name `/dev/zero`, a FIFO or a huge file there and exhaust or block the
/// dashboard (or the head it runs in): the open never waits (`O_NONBLOCK`, which
/// regular files ignore) and anything else is refused.
fn open_regular(path: &Path) -> Option<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    f.metadata().ok()?.is_file().then_some(f)
}

/// A regular file's bytes, if it has at most `max`.
fn read_regular(path: &Path, max: u64) -> Option<Vec<u8>> {
    let f = open_regular(path)?;
    if f.metadata().ok()?.len() > max {
        return None;
    }
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf).ok()?;
    Some(buf)
}

fn read_state(exp: &Path) -> Value {
    read_regular(&exp.join("experiment_state.json"), MAX_STATE_FILE)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn state_str(state: &Value, key: &str) -> Option<String> {
    state.get(key).and_then(Value::as_str).map(String::from)
}

/// ASHA's rungs from sunray's saved scheduler state, cut-offs in the metric's units
/// (the state keeps scores, higher better: a minimised metric's are negated).
fn rungs(state: &Value, mode: Option<&str>) -> Vec<Rung> {
    let Some(sched) = state.get("scheduler_state") else {
        return Vec::new();
    };
    let rf = sched
        .get("reduction_factor")
        .and_then(Value::as_f64)
        .unwrap_or(4.0);
    let sign = if mode == Some("min") { -1.0 } else { 1.0 };
    let mut out = Vec::new();
    for b in sched
        .get("brackets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for r in b
            .get("rungs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(milestone) = r.get("milestone").and_then(Value::as_f64) else {
                continue;
            };
            let scores: Vec<f64> = r
                .get("recorded")
                .and_then(Value::as_object)
                .map(|m| m.values().filter_map(Value::as_f64).collect())
                .unwrap_or_default();
            out.push(Rung {
                milestone,
                cutoff: percentile(&scores, (1.0 - 1.0 / rf) * 100.0).map(|c| c * sign),
                recorded: scores.len(),
            });
        }
    }
    out
}

/// numpy's linear percentile (ASHA's cut-off rule).
fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = p / 100.0 * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (rank - lo as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(exp: &Path, name: &str, rows: &[&str]) -> PathBuf {
        let d = exp.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("params.json"), r#"{"lr": 0.1}"#).unwrap();
        std::fs::write(
            d.join("result.json"),
            rows.iter().map(|r| format!("{r}\n")).collect::<String>(),
        )
        .unwrap();
        d
    }

    #[test]
    fn a_growing_result_file_is_read_from_where_it_was_left() {
        let tmp = tempfile::tempdir().unwrap();
        let exp = tmp.path().join("exp");
        let t = trial(
            &exp,
            "train_abcde_00000_0_lr=0.1_2026",
            &[r#"{"loss": 3, "training_iteration": 1, "trial_id": "abcde_00000"}"#],
        );
        let mut lib = Library::new(vec![tmp.path().to_path_buf()]);
        let id = lib.list()[0].id.clone();
        assert_eq!(
            lib.curves(&id, "loss", "training_iteration").unwrap()[0].points,
            vec![[1.0, 3.0]]
        );
        // A row half written, then completed.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(t.join("result.json"))
            .unwrap();
        use std::io::Write;
        f.write_all(br#"{"loss": 2, "training_"#).unwrap();
        assert_eq!(
            lib.curves(&id, "loss", "training_iteration").unwrap()[0]
                .points
                .len(),
            1
        );
        f.write_all(b"iteration\": 2, \"done\": true}\n").unwrap();
        let v = lib.experiment(&id).unwrap();
        assert_eq!(v.trials[0].iterations, 2);
        assert_eq!(v.trials[0].status, "TERMINATED");
        assert_eq!(v.trials[0].trial_id, "abcde_00000");
        assert_eq!(
            lib.curves(&id, "loss", "training_iteration").unwrap()[0].points,
            vec![[1.0, 3.0], [2.0, 2.0]]
        );
    }

    #[test]
    fn the_best_trial_follows_the_mode_and_rungs_are_in_metric_units() {
        let tmp = tempfile::tempdir().unwrap();
        let exp = tmp.path().join("exp");
        trial(
            &exp,
            "t_aaaaa_00000_0",
            &[r#"{"loss": 0.5, "trial_id": "a"}"#],
        );
        trial(
            &exp,
            "t_aaaaa_00001_1",
            &[r#"{"loss": 0.2, "trial_id": "b"}"#],
        );
        std::fs::write(
            exp.join("experiment_state.json"),
            r#"{"metric": "loss", "mode": "min", "scheduler": "AsyncHyperBand",
                "scheduler_state": {"reduction_factor": 2.0, "brackets": [{"rungs": [
                  {"milestone": 1.0, "recorded": {"a": -0.5, "b": -0.2, "c": -0.9}}]}]}}"#,
        )
        .unwrap();
        let mut lib = Library::new(vec![exp.clone()]);
        let id = lib.list()[0].id.clone();
        let v = lib.experiment(&id).unwrap();
        assert_eq!(v.best.as_deref(), Some("b"));
        // Scores -0.9, -0.5, -0.2: the median -0.5 is a loss of 0.5.
        assert_eq!(v.rungs.len(), 1);
        assert_eq!(v.rungs[0].cutoff, Some(0.5));
        assert_eq!(v.metrics, vec!["loss".to_string()]);
        assert!(lib.experiment("0/none").is_none());
    }

    #[test]
    fn an_experiment_ray_tune_wrote_is_read_with_its_statuses() {
        // Ray 2.x: `experiment_state-<date>.json` holds `trial_data`, pairs of a trial's
        // JSON (as a string) and its runtime state; no metric or mode; results without
        // a `done` at the end.
        let tmp = tempfile::tempdir().unwrap();
        let exp = tmp.path().join("train_cifar_2026-12-02_10-31-12");
        trial(
            &exp,
            "train_cifar_802dc_00000_0_lr=0.0002_2026-12-02_10-31-14",
            &[r#"{"loss": 2.3, "training_iteration": 1}"#],
        );
        trial(
            &exp,
            "train_cifar_802dc_00001_1_lr=0.0006_2026-12-02_10-31-14",
            &[r#"{"loss": 2.1, "training_iteration": 1}"#],
        );
        let trial_json = |id: &str, status: &str| {
            serde_json::to_string(&serde_json::json!({"trial_id": id, "status": status})).unwrap()
        };
        let state = serde_json::json!({"trial_data": [
            [trial_json("802dc_00000", "TERMINATED"), "{}"],
            [trial_json("802dc_00001", "ERROR"), "{}"],
        ], "runner_data": {}, "stats": {}});
        std::fs::write(
            exp.join("experiment_state-2026-12-02_10-31-14.json"),
            state.to_string(),
        )
        .unwrap();
        let mut lib = Library::new(vec![tmp.path().to_path_buf()]);
        let list = lib.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].status.get("TERMINATED"), Some(&1));
        assert_eq!(list[0].status.get("ERROR"), Some(&1));
        let v = lib.experiment(&list[0].id).unwrap();
        assert_eq!(v.trials[0].trial_id, "802dc_00000");
        assert_eq!(v.metric, None);
        assert_eq!(v.trials[1].status, "ERROR");
    }

    /// Item 1 of issue 27's attacker can write into a results folder: names pointing
    /// at /dev/zero or a FIFO are skipped, never read forever or waited on.
    #[test]
    fn devices_and_fifos_in_a_results_folder_are_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let exp = tmp.path().join("exp");
        let t = trial(
            &exp,
            "t_aaaaa_00000_0",
            &[r#"{"loss": 1, "trial_id": "a"}"#],
        );
        std::fs::remove_file(t.join("params.json")).ok();
        std::os::unix::fs::symlink("/dev/zero", t.join("params.json")).unwrap();
        let fifo = std::ffi::CString::new(t.join(".trial_end.json").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink("/dev/zero", exp.join("experiment_state.json")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", exp.join("experiment_state-2026.json")).unwrap();
        let root = tmp.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lib = Library::new(vec![root]);
            let id = lib.list()[0].id.clone();
            let view = lib.experiment(&id).map(|v| v.trials.len());
            let _ = tx.send(view);
        });
        let view = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the dashboard read a device or waited on a FIFO");
        assert_eq!(view, Some(1));
    }

    #[test]
    fn trial_ids_come_from_ray_directory_names() {
        assert_eq!(
            trial_id_of(Path::new("/x/train_cifar_51e43_00003_3_lr=0.1_2026-01-01")),
            "51e43_00003"
        );
        assert_eq!(
            trial_id_of(Path::new("/x/f_12345_00000_0_2026")),
            "12345_00000"
        );
    }
}
