//! Results of an experiment, read back from its directory (so a finished or
//! interrupted experiment can be analysed later, as Ray's `ResultGrid`).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::result::Mode;
use crate::space::Config;
use crate::storage::{self, ExperimentState, TrialEnd};
use crate::TuneError;

/// One trial's outcome (Ray's `Result`).
#[derive(Debug, Clone)]
pub struct TrialRecord {
    pub trial_id: String,
    pub config: Config,
    /// TERMINATED, ERROR, or PENDING / RUNNING for an interrupted experiment.
    pub status: String,
    /// The last reported row (metrics and the automatic fields).
    pub metrics: Map<String, Value>,
    /// The trial's directory.
    pub path: PathBuf,
    /// The newest checkpoint kept.
    pub checkpoint: Option<PathBuf>,
    /// Every kept checkpoint with the metrics reported along with it.
    pub checkpoints: Vec<(PathBuf, Map<String, Value>)>,
    /// The last failure's message.
    pub error: Option<String>,
}

impl TrialRecord {
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).and_then(Value::as_f64)
    }
    /// Every result row, read from result.json.
    pub fn metrics_history(&self) -> Vec<Map<String, Value>> {
        storage::read_results(&self.path)
    }
    /// The kept checkpoint with the best `metric`.
    pub fn best_checkpoint(&self, metric: &str, mode: Mode) -> Option<&Path> {
        self.checkpoints
            .iter()
            .filter_map(|(p, m)| m.get(metric).and_then(Value::as_f64).map(|v| (p, v)))
            .reduce(|a, b| if mode.better(b.1, a.1) { b } else { a })
            .map(|(p, _)| p.as_path())
    }
}

/// Every trial of an experiment.
#[derive(Debug, Clone)]
pub struct ResultGrid {
    pub experiment_path: PathBuf,
    metric: Option<String>,
    mode: Option<Mode>,
    results: Vec<TrialRecord>,
}

impl ResultGrid {
    /// Reads an experiment directory.
    pub fn load(path: impl AsRef<Path>) -> Result<ResultGrid, TuneError> {
        let path = path.as_ref();
        let st: ExperimentState = storage::read_json(&path.join(storage::STATE_FILE))?;
        let mut results = Vec::new();
        for (ident, dir) in storage::trial_dirs(path) {
            let config: Config = storage::read_json(&dir.join("params.json"))?;
            let end: Option<TrialEnd> = storage::read_json(&dir.join(storage::END_FILE)).ok();
            let metrics = last_row(&dir.join("result.json")).unwrap_or_default();
            let checkpoints: Vec<(PathBuf, Map<String, Value>)> = storage::list_checkpoints(&dir)
                .into_iter()
                .map(|c| (dir.join(c.name()), c.metrics))
                .collect();
            let error = std::fs::read_to_string(dir.join("error.txt"))
                .ok()
                .and_then(|s| {
                    s.split("Failure # ")
                        .filter(|p| !p.trim().is_empty())
                        .last()
                        .and_then(|p| p.split_once('\n').map(|(_, m)| m.trim().to_string()))
                });
            let status = match end {
                Some(e) => e.status,
                None if metrics.is_empty() => "PENDING".into(),
                None => "RUNNING".into(),
            };
            results.push(TrialRecord {
                trial_id: ident.trial_id,
                config,
                error: if status == "ERROR" { error } else { None },
                status,
                metrics,
                checkpoint: checkpoints.last().map(|(p, _)| p.clone()),
                checkpoints,
                path: dir,
            });
        }
        Ok(ResultGrid {
            experiment_path: path.to_path_buf(),
            metric: st.metric,
            mode: st.mode,
            results,
        })
    }
    /// The experiment's metric and mode, if it had them.
    pub fn metric(&self) -> Option<&str> {
        self.metric.as_deref()
    }
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }
    pub fn len(&self) -> usize {
        self.results.len()
    }
    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }
    pub fn iter(&self) -> std::slice::Iter<'_, TrialRecord> {
        self.results.iter()
    }
    pub fn get(&self, i: usize) -> Option<&TrialRecord> {
        self.results.get(i)
    }
    /// Trials that ended in error.
    pub fn errors(&self) -> Vec<&TrialRecord> {
        self.results
            .iter()
            .filter(|r| r.status == "ERROR")
            .collect()
    }
    pub fn num_errors(&self) -> usize {
        self.errors().len()
    }
    pub fn num_terminated(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.status == "TERMINATED")
            .count()
    }

    /// The best trial by `metric` and `mode` (default: the experiment's), judged on
    /// `scope`: `last`, `all` (its best ever), `avg`, `last-5-avg` or `last-10-avg`.
    pub fn best_result(
        &self,
        metric: Option<&str>,
        mode: Option<Mode>,
        scope: &str,
    ) -> Result<&TrialRecord, TuneError> {
        let metric = metric.or(self.metric.as_deref()).ok_or_else(|| {
            TuneError::Config(
                "best_result needs a metric: none given and the experiment has none".into(),
            )
        })?;
        let mode = mode
            .or(self.mode)
            .ok_or_else(|| TuneError::Config("best_result needs a mode".into()))?;
        let judge = |r: &TrialRecord| -> Option<f64> {
            if scope == "last" {
                return r.metric(metric);
            }
            let values: Vec<f64> = r
                .metrics_history()
                .iter()
                .filter_map(|row| row.get(metric).and_then(Value::as_f64))
                .collect();
            let tail = |n: usize| &values[values.len().saturating_sub(n)..];
            let avg = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
            match scope {
                "all" => values
                    .iter()
                    .copied()
                    .reduce(|a, b| if mode.better(b, a) { b } else { a }),
                "avg" => avg(&values),
                "last-5-avg" => avg(tail(5)),
                "last-10-avg" => avg(tail(10)),
                _ => None,
            }
        };
        if !["last", "all", "avg", "last-5-avg", "last-10-avg"].contains(&scope) {
            return Err(TuneError::Config(format!(
                "scope must be one of last, all, avg, last-5-avg, last-10-avg; not {scope:?}"
            )));
        }
        self.results
            .iter()
            .filter_map(|r| judge(r).filter(|v| !v.is_nan()).map(|v| (r, v)))
            .reduce(|a, b| if mode.better(b.1, a.1) { b } else { a })
            .map(|(r, _)| r)
            .ok_or_else(|| TuneError::Config(format!("no trial reported `{metric}`")))
    }

    /// Writes one row per trial (id, status, config/..., last metrics) as CSV, as
    /// Ray's `get_dataframe().to_csv()`.
    pub fn to_csv(&self, path: impl AsRef<Path>) -> Result<(), TuneError> {
        let path = path.as_ref();
        let rows: Vec<Vec<(String, Value)>> = self
            .results
            .iter()
            .map(|r| {
                let mut row = vec![
                    ("trial_id".to_string(), Value::from(r.trial_id.clone())),
                    ("status".to_string(), Value::from(r.status.clone())),
                ];
                let mut m = r.metrics.clone();
                m.insert("config".into(), Value::Object(r.config.0.clone()));
                row.extend(
                    storage::flatten_row(&m)
                        .into_iter()
                        .filter(|(k, _)| k != "trial_id"),
                );
                row
            })
            .collect();
        let mut columns: Vec<String> = Vec::new();
        for row in &rows {
            for (k, _) in row {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
        let err = |e: csv::Error| TuneError::Io(format!("cannot write {}: {e}", path.display()));
        let mut w = csv::Writer::from_path(path).map_err(err)?;
        w.write_record(&columns).map_err(err)?;
        for row in &rows {
            let rec: Vec<String> = columns
                .iter()
                .map(|c| match row.iter().find(|(k, _)| k == c).map(|(_, v)| v) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(v) => v.to_string(),
                })
                .collect();
            w.write_record(&rec).map_err(err)?;
        }
        w.flush().map_err(|e| storage::io_err("write", path, e))
    }
}

/// The last complete line of a result.json, read from its end.
fn last_row(path: &Path) -> Option<Map<String, Value>> {
    let data = std::fs::read(path).ok()?;
    data.split(|b| *b == b'\n')
        .rev()
        .find_map(|l| serde_json::from_slice(l).ok())
}
