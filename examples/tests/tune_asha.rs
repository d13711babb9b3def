//! The `tune_asha` example, run as a user runs it: its experiment directory, ASHA's
//! early stopping, and `--resume` after the driver was killed mid-run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sunray_examples::synthetic;
use sunray_tune::Config;

/// The example binary cargo built next to this test (target/<profile>/examples).
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("tune_asha");
    assert!(
        p.is_file(),
        "build the example first: cargo build --example tune_asha"
    );
    p
}

fn fresh_tmp(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("sunray-ex-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&p).ok();
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn tune_asha(tmp: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(example());
    c.args([
        "--storage-path",
        tmp.join("results").to_str().unwrap(),
        "--verbosity",
        "1",
    ])
    .args(args)
    .env("SUNRAY_TMPDIR", tmp)
    .env_remove("SUNRAY_ADDRESS");
    c
}

fn ok(out: &Output) -> String {
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{s}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s
}

struct TrialOnDisk {
    config: Config,
    rows: Vec<serde_json::Map<String, Value>>,
    ended: bool,
    checkpoints: Vec<String>,
}

fn read_experiment(exp: &Path) -> BTreeMap<String, TrialOnDisk> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(exp).unwrap().flatten() {
        let d = e.path();
        if !d.is_dir() {
            continue;
        }
        // A trial being created has its directory before its params.json.
        let Ok(params) = std::fs::read_to_string(d.join("params.json")) else {
            continue;
        };
        let config: Config = serde_json::from_str(&params).unwrap();
        let rows = std::fs::read_to_string(d.join("result.json"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut checkpoints: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("checkpoint_"))
            .collect();
        checkpoints.sort();
        out.insert(
            d.file_name().unwrap().to_string_lossy().into_owned(),
            TrialOnDisk {
                config,
                rows,
                ended: d.join(".trial_end.json").is_file(),
                checkpoints,
            },
        );
    }
    out
}

#[test]
fn asha_writes_rays_layout_and_stops_poor_trials_at_the_rungs() {
    let tmp = fresh_tmp("asha");
    let out = tune_asha(
        &tmp,
        &[
            "--num-samples",
            "30",
            "--max-t",
            "16",
            "--iter-ms",
            "1",
            "--name",
            "e",
        ],
    )
    .output()
    .unwrap();
    let stdout = ok(&out);
    assert!(stdout.contains("Best trial config: {"), "{stdout}");
    let exp = tmp.join("results").join("e");
    assert!(exp.join("experiment_state.json").is_file());
    let trials = read_experiment(&exp);
    assert_eq!(trials.len(), 30);
    let rungs = [1.0, 2.0, 4.0, 8.0, 16.0];
    for (name, t) in &trials {
        assert!(t.ended, "{name} ended");
        let last = t.rows.last().unwrap();
        for key in [
            "loss",
            "training_iteration",
            "time_this_iter_s",
            "time_total_s",
            "timestamp",
            "trial_id",
            "hostname",
            "node_ip",
            "pid",
            "done",
            "config",
        ] {
            assert!(last.contains_key(key), "{name}: result.json lacks {key}");
        }
        let it = last["training_iteration"].as_f64().unwrap();
        assert!(rungs.contains(&it), "{name} stopped at {it}, not at a rung");
        assert_eq!(
            last["done"], true,
            "{name}: the last result says the trial is done"
        );
        let csv = std::fs::read_to_string(exp.join(name).join("progress.csv")).unwrap();
        assert!(
            csv.starts_with("loss,accuracy,training_iteration,"),
            "{csv}"
        );
        assert!(csv.lines().next().unwrap().contains("config/lr"));
        assert_eq!(csv.lines().count(), t.rows.len() + 1);
        // num_to_keep 2: the two newest checkpoints stay.
        let n = t.rows.len();
        let want: Vec<String> = (n.saturating_sub(2)..n)
            .map(|i| format!("checkpoint_{i:06}"))
            .collect();
        assert_eq!(t.checkpoints, want, "{name}");
    }
    let stopped_early = trials.values().filter(|t| t.rows.len() < 16).count();
    assert!(
        stopped_early >= 20,
        "ASHA with rf 2 stops most of 30 trials: {stopped_early}"
    );
    // Every config follows the same curve, so the best config is never cut.
    let best = trials
        .values()
        .min_by(|a, b| {
            synthetic::final_loss(&a.config).total_cmp(&synthetic::final_loss(&b.config))
        })
        .unwrap();
    assert_eq!(best.rows.len(), 16);
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn resume_after_the_driver_is_killed_finishes_without_rerunning_finished_trials() {
    let tmp = fresh_tmp("resume");
    let exp = tmp.join("results").join("r");
    let args = [
        "--num-samples",
        "24",
        "--max-t",
        "16",
        "--iter-ms",
        "40",
        "--name",
        "r",
    ];
    let mut driver = tune_asha(&tmp, &args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Wait (on the files the run writes) until some trials ended and one that has not
    // holds a checkpoint, then kill the driver as a crash would.
    let deadline = Instant::now() + Duration::from_secs(120);
    let before = loop {
        assert!(Instant::now() < deadline, "the run made no progress");
        assert!(
            driver.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        if exp.is_dir() {
            let t = read_experiment(&exp);
            let ended = t.values().filter(|t| t.ended).count();
            let mid = t.values().any(|t| !t.ended && t.checkpoints.len() >= 2);
            if ended >= 4 && mid {
                break t;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    unsafe { libc::kill(driver.id() as i32, libc::SIGKILL) };
    driver.wait().unwrap();
    let snapshot = read_experiment(&exp);
    let out = tune_asha(&tmp, &[&args[..], &["--resume"]].concat())
        .output()
        .unwrap();
    let stdout = ok(&out);
    assert!(stdout.contains("Resuming the experiment at"), "{stdout}");
    assert!(stdout.contains("Best trial config:"), "{stdout}");
    let after = read_experiment(&exp);
    assert_eq!(after.len(), 24, "no trial made twice");
    assert!(after.values().all(|t| t.ended));
    for (name, t) in &snapshot {
        let a = &after[name];
        if t.ended {
            assert_eq!(
                a.rows, t.rows,
                "{name} finished before the kill and was not re-run"
            );
        } else if !t.checkpoints.is_empty() {
            // It went on from its last checkpoint: iteration 1 is there once.
            let firsts = a
                .rows
                .iter()
                .filter(|r| r["training_iteration"] == 1)
                .count();
            assert_eq!(firsts, 1, "{name} continued rather than restarting");
        }
    }
    assert!(before.values().any(|t| !t.ended));
    std::fs::remove_dir_all(&tmp).ok();
}
