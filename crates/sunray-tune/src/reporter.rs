//! The status report, like Ray's CLI reporter: a table of trials every few seconds
//! (redrawn in place on a terminal; appended to a file, e.g. a Slurm output) and at
//! the end.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use comfy_table::{presets::ASCII_MARKDOWN, Table};
use serde_json::Value;

use crate::config::RunConfig;
use crate::controller::{resource_needs, Controller, Status, Trial};

/// Most trial rows a table shows (Ray's `max_progress_rows`).
const MAX_ROWS: usize = 20;
/// Most metric columns besides the experiment's metric.
const MAX_METRICS: usize = 4;

pub(crate) struct Reporter {
    verbosity: u8,
    interval: Duration,
    tty: bool,
    last: Instant,
    /// Lines of the live view on screen, to redraw over.
    live_lines: usize,
}

impl Reporter {
    pub fn new(rc: &RunConfig) -> Self {
        Reporter {
            verbosity: rc.verbosity,
            interval: rc.progress_interval,
            tty: std::io::stdout().is_terminal(),
            last: Instant::now(),
            live_lines: 0,
        }
    }
    pub fn until_next(&self) -> Duration {
        self.interval.saturating_sub(self.last.elapsed())
    }
    pub fn due(&self) -> bool {
        self.verbosity >= 2 && self.last.elapsed() >= self.interval
    }
    pub fn report(&mut self, c: &Controller) {
        self.last = Instant::now();
        let text = render(c, false);
        let mut out = std::io::stdout().lock();
        if self.tty && self.live_lines > 0 {
            let _ = write!(out, "\x1b[{}A\x1b[J", self.live_lines);
        }
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
        self.live_lines = if self.tty { text.lines().count() } else { 0 };
    }
    /// A line that stays (errors, retries), printed above the live view.
    pub fn note(&mut self, line: &str) {
        if self.verbosity >= 1 {
            self.live_lines = 0;
            println!("sunray-tune: {line}");
        }
    }
    pub fn result(&mut self, t: &Trial) {
        if self.verbosity >= 3 {
            if let Some(r) = &t.last {
                self.live_lines = 0;
                let m: Vec<String> = r
                    .metrics
                    .iter()
                    .map(|(k, v)| format!("{k}={v:.6}"))
                    .collect();
                println!(
                    "Trial {} reported {} (iteration {})",
                    t.id,
                    m.join(", "),
                    r.training_iteration
                );
            }
        }
    }
    pub fn finish(&mut self, c: &Controller) {
        if self.verbosity >= 1 {
            self.live_lines = 0;
            println!("{}", render(c, true));
        }
    }
}

fn fmt_value(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.5}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// The status text: header lines, the trial table, the footer.
pub(crate) fn render(c: &Controller, last: bool) -> String {
    let mut out = Vec::new();
    out.push(if last {
        "== Status (final) ==".to_string()
    } else {
        "== Status ==".to_string()
    });
    out.push(format!(
        "Current time: {} (running for {})",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        fmt_duration(c.start.elapsed())
    ));
    out.extend(c.tc.scheduler.status());
    // Resources in use: what the launched trials hold, of what the cluster has.
    let mut totals: Vec<(String, f64)> = Vec::new();
    for n in c.nodes.1.iter().filter(|n| n.alive) {
        for (k, v) in &n.resources {
            match totals.iter_mut().find(|(t, _)| t == k) {
                Some(slot) => slot.1 += v,
                None => totals.push((k.clone(), *v)),
            }
        }
    }
    let needs = resource_needs(&c.resources_per_trial());
    let used: Vec<String> = needs
        .iter()
        .filter(|(k, a)| *a > 0.0 || k == "GPU" && totals.iter().any(|(t, _)| t == "GPU"))
        .map(|(k, a)| {
            let total = totals.iter().find(|(t, _)| t == k).map_or(0.0, |(_, v)| *v);
            format!("{}/{} {k}s", a * c.launched as f64, total)
        })
        .collect();
    out.push(format!("Logical resource usage: {}", used.join(", ")));
    if let (Some(m), Some(mode)) = (&c.metric, c.mode) {
        let best = candidates(c)
            .filter_map(|t| t.last.as_ref().and_then(|r| r.get(m)).map(|v| (t, v)))
            .reduce(|a, b| if mode.better(b.1, a.1) { b } else { a });
        if let Some((t, v)) = best {
            let varied = c.varied_params();
            let params: serde_json::Map<String, Value> = t
                .config
                .flat()
                .into_iter()
                .filter(|(k, _)| varied.contains(k))
                .collect();
            out.push(format!(
                "Current best trial: {} with {m}={v:.6} and params={}",
                t.id,
                Value::Object(params)
            ));
        }
    }
    out.push(format!("Result logdir: {}", c.exp_dir.display()));
    let counts = c.status_counts();
    let summary: Vec<String> = counts
        .iter()
        .map(|(s, n)| format!("{n} {}", s.as_str()))
        .collect();
    out.push(format!(
        "Number of trials: {} ({})",
        c.created,
        summary.join(", ")
    ));
    out.push(table(c, &counts));
    // Errors, as Ray lists them with their error files.
    if c.finished.errored > 0 {
        out.push(format!("Number of errored trials: {}", c.finished.errored));
        for t in c.finished.errors.iter().take(MAX_ROWS) {
            out.push(format!("  {}: {}", t.id, t.dir.join("error.txt").display()));
        }
    }
    out.join("\n")
}

/// The trials the report may show: the live ones and the finished ones kept.
fn candidates(c: &Controller) -> impl Iterator<Item = &Trial> {
    c.trials
        .values()
        .chain(c.finished.best.iter().map(|(_, t)| t))
        .chain(c.finished.errors.iter())
}

fn table(c: &Controller, counts: &[(Status, usize)]) -> String {
    // Rows: running and paused first, then errors, the best finished, then pending.
    let rank = |t: &Trial| match t.status {
        Status::Running if t.started => 0,
        Status::Paused => 1,
        Status::Error => 2,
        Status::Terminated => 3,
        Status::Running | Status::Pending => 4,
    };
    let score = |t: &Trial| -> f64 {
        match (&c.metric, c.mode, &t.last) {
            (Some(m), Some(mode), Some(r)) => r.get(m).map_or(f64::MIN, |v| mode.score(v)),
            _ => 0.0,
        }
    };
    let mut shown: Vec<&Trial> = candidates(c).collect();
    shown.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then(score(b).total_cmp(&score(a)))
            .then(a.index.cmp(&b.index))
    });
    shown.truncate(MAX_ROWS);
    shown.sort_by_key(|t| t.index);

    let varied = c.varied_params();
    let param_cols: Vec<String> = shown
        .first()
        .map(|t| {
            t.config
                .flat()
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| varied.contains(k))
                .collect()
        })
        .unwrap_or_default();
    let mut metric_cols: Vec<String> = c.metric.iter().cloned().collect();
    for t in &shown {
        if let Some(r) = &t.last {
            for k in r.metrics.keys() {
                if !metric_cols.contains(k) && metric_cols.len() < MAX_METRICS + 1 {
                    metric_cols.push(k.clone());
                }
            }
        }
    }
    let mut tbl = Table::new();
    tbl.load_preset(ASCII_MARKDOWN);
    let mut header = vec!["Trial name".to_string(), "status".into(), "loc".into()];
    header.extend(param_cols.iter().cloned());
    header.extend(["iter".to_string(), "total time (s)".into()]);
    header.extend(metric_cols.iter().cloned());
    tbl.set_header(header);
    for t in &shown {
        let status = if t.status == Status::Running && !t.started {
            "PENDING"
        } else {
            t.status.as_str()
        };
        let mut row = vec![
            format!("{}_{}", c.short_name, t.id),
            status.to_string(),
            t.location.clone(),
        ];
        let flat = t.config.flat();
        for p in &param_cols {
            row.push(
                flat.iter()
                    .find(|(k, _)| k == p)
                    .map(|(_, v)| fmt_value(v))
                    .unwrap_or_default(),
            );
        }
        match &t.last {
            Some(r) => {
                row.push(r.training_iteration.to_string());
                row.push(format!("{:.3}", r.time_total_s));
                for m in &metric_cols {
                    row.push(r.get(m).map(|v| format!("{v:.5}")).unwrap_or_default());
                }
            }
            None => row.extend(std::iter::repeat_n(String::new(), 2 + metric_cols.len())),
        }
        tbl.add_row(row);
    }
    let mut s = tbl.to_string();
    let status_of = |t: &Trial| {
        if t.status == Status::Running && !t.started {
            Status::Pending
        } else {
            t.status
        }
    };
    let parts: Vec<String> = counts
        .iter()
        .filter_map(|(st, n)| {
            let hidden = n - shown.iter().filter(|t| status_of(t) == *st).count();
            (hidden > 0).then(|| format!("{hidden} {}", st.as_str()))
        })
        .collect();
    let hidden = c.created - shown.len();
    if hidden > 0 {
        s.push_str(&format!(
            "\n... {hidden} more trials not shown ({})",
            parts.join(", ")
        ));
    }
    s
}
