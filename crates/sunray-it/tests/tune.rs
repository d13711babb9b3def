//! sunray-tune end to end: the fixture driver `it_tune` runs experiments on embedded
//! and multi-node clusters; the experiment directories are checked as a user would.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

const TUNE: &str = env!("CARGO_BIN_EXE_it_tune");

/// Runs a scenario on an embedded cluster with its own session directory.
fn run_embedded(scenario: &str, tmp: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(TUNE);
    c.args([scenario, tmp.join("results").to_str().unwrap()])
        .env("SUNRAY_TMPDIR", tmp)
        .env_remove("SUNRAY_ADDRESS")
        .env_remove("SUNRAY_TUNE_FORCE_UPLOAD");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(out: &Output) -> &str {
    let s = std::str::from_utf8(&out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{s}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s
}

/// `TRIAL id status iterations error` lines.
fn trials(stdout: &str) -> Vec<(String, String, u64, String)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("TRIAL "))
        .map(|l| {
            let mut p = l.splitn(4, ' ');
            (
                p.next().unwrap().to_string(),
                p.next().unwrap().to_string(),
                p.next().unwrap().parse::<f64>().unwrap() as u64,
                p.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn experiment(stdout: &str) -> PathBuf {
    PathBuf::from(
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("EXPERIMENT "))
            .expect("experiment path printed"),
    )
}

fn trial_dir(exp: &Path, id: &str) -> PathBuf {
    std::fs::read_dir(exp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .contains(&format!("_{id}_"))
        })
        .unwrap_or_else(|| panic!("no directory for trial {id}"))
}

fn rows(dir: &Path) -> Vec<serde_json::Map<String, Value>> {
    std::fs::read_to_string(dir.join("result.json"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn col(rows: &[serde_json::Map<String, Value>], key: &str) -> Vec<f64> {
    rows.iter().map(|r| r[key].as_f64().unwrap()).collect()
}

#[test]
fn trials_run_on_every_node_of_a_cluster_and_their_checkpoints_reach_the_experiment() {
    let c = Cluster::start(2.0, &[("127.0.0.2", 2.0, 0), ("127.0.0.3", 2.0, 0)]);
    let results = c.tmp.join("results");
    let out = c
        .program(TUNE, &["spread", results.to_str().unwrap()])
        .output()
        .unwrap();
    let s = ok(&out);
    let exp = experiment(s);
    let ts = trials(s);
    assert_eq!(ts.len(), 6);
    let mut ips = BTreeSet::new();
    for (id, status, iters, _) in &ts {
        assert_eq!((status.as_str(), *iters), ("TERMINATED", 3), "{id}");
        let dir = trial_dir(&exp, id);
        for r in rows(&dir) {
            ips.insert(r["node_ip"].as_str().unwrap().to_string());
        }
        assert!(
            dir.join("checkpoint_000002").join("state").is_file(),
            "{}",
            dir.display()
        );
    }
    assert_eq!(
        ips,
        BTreeSet::from(["127.0.0.1".into(), "127.0.0.2".into(), "127.0.0.3".into()])
    );
}

#[test]
fn trials_on_a_node_that_dies_continue_elsewhere_from_their_checkpoint() {
    let mut c = Cluster::start(1.0, &[("127.0.0.2", 2.0, 0)]);
    let results = c.tmp.join("results");
    let driver = c
        .program(TUNE, &["slow", results.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (on the files the trials write) until a trial on 127.0.0.2 has checkpointed
    // a few iterations, then kill that node.
    let exp = results.join("slow");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let victim = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no trial ran on 127.0.0.2"
        );
        let found = std::fs::read_dir(&exp)
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|e| {
                let r = std::fs::read_to_string(e.path().join("result.json")).ok()?;
                let rows: Vec<serde_json::Value> = r
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect();
                let last = rows.last()?;
                (last["node_ip"] == "127.0.0.2" && last["training_iteration"].as_u64()? >= 3)
                    .then(|| e.path())
            });
        if let Some(p) = found {
            break p;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let (_, mut node) = c.nodes.remove(0);
    node.kill().unwrap();
    node.wait().unwrap();
    let out = driver.wait_with_output().unwrap();
    let s = ok(&out);
    for (id, status, iters, _) in trials(s) {
        assert_eq!((status.as_str(), iters), ("TERMINATED", 15), "{id}");
    }
    let r = rows(&victim);
    let its = col(&r, "training_iteration");
    assert_eq!(its.last(), Some(&15.0));
    // It went on on the head's node, from its last checkpoint (not from iteration 1).
    let after: Vec<_> = r
        .iter()
        .filter(|row| row["node_ip"] == "127.0.0.1")
        .collect();
    assert!(!after.is_empty(), "the trial moved to 127.0.0.1");
    assert!(after[0]["training_iteration"].as_u64().unwrap() > 1);
    assert_eq!(after[0]["iterations_since_restore"], 1);
    assert_eq!(
        r.iter()
            .filter(|row| row["training_iteration"] == 1)
            .count(),
        1
    );
}

#[test]
fn a_failing_trial_is_retried_from_its_checkpoint_and_a_broken_one_errors() {
    let tmp = fresh_tmp();
    let out = run_embedded("flaky", &tmp, &[]);
    check_flaky(ok(&out));
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn checkpoints_travel_through_the_driver_when_nodes_do_not_share_the_filesystem() {
    let tmp = fresh_tmp();
    let out = run_embedded("flaky", &tmp, &[("SUNRAY_TUNE_FORCE_UPLOAD", "1")]);
    let exp = check_flaky(ok(&out));
    // The worker's scratch directories are gone; the checkpoints are in the experiment.
    let ok_trial = trial_dir(
        &exp,
        &trials(std::str::from_utf8(&out.stdout).unwrap())[0].0,
    );
    assert!(ok_trial.join("checkpoint_000004").join("state").is_file());
    std::fs::remove_dir_all(&tmp).ok();
}

/// The grid is ok / flaky / broken with max_failures 1.
fn check_flaky(stdout: &str) -> PathBuf {
    let exp = experiment(stdout);
    let ts = trials(stdout);
    assert_eq!(ts.len(), 3);
    assert_eq!((ts[0].1.as_str(), ts[0].2), ("TERMINATED", 5));
    // Flaky: failed at iteration 3, resumed from the checkpoint of iteration 2.
    assert_eq!((ts[1].1.as_str(), ts[1].2), ("TERMINATED", 5));
    let flaky = trial_dir(&exp, &ts[1].0);
    let r = rows(&flaky);
    assert_eq!(col(&r, "training_iteration"), [1.0, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(
        col(&r, "iterations_since_restore"),
        [1.0, 2.0, 1.0, 2.0, 3.0]
    );
    let err = std::fs::read_to_string(flaky.join("error.txt")).unwrap();
    assert!(
        err.contains("Failure # 1") && err.contains("flaky on purpose"),
        "{err}"
    );
    // Broken: panics every time; after the one retry it is an error with its message.
    assert_eq!(ts[2].1, "ERROR");
    assert!(ts[2].3.contains("broken on purpose"), "{}", ts[2].3);
    let err = std::fs::read_to_string(trial_dir(&exp, &ts[2].0).join("error.txt")).unwrap();
    assert!(err.contains("Failure # 2"), "{err}");
    assert!(stdout.contains("ERRORS 1"));
    exp
}

#[test]
fn restore_can_resume_or_restart_errored_trials() {
    let tmp = fresh_tmp();
    let first = ok(&run_embedded("flaky", &tmp, &[])).to_string();
    let exp = experiment(&first);
    let ts = trials(&first);
    let (good, flaky, broken) = (
        trial_dir(&exp, &ts[0].0),
        trial_dir(&exp, &ts[1].0),
        trial_dir(&exp, &ts[2].0),
    );
    let untouched = |d: &Path| std::fs::read(d.join("result.json")).unwrap();
    let (good_rows, flaky_rows) = (untouched(&good), untouched(&flaky));
    let failures = |d: &Path| {
        std::fs::read_to_string(d.join("error.txt"))
            .unwrap()
            .matches("Failure # ")
            .count()
    };
    assert_eq!(failures(&broken), 2);
    // resume_errored: it runs again from its checkpoint (iteration 1) and fails twice more.
    let resumed = ok(&run_embedded("resume_errored", &tmp, &[])).to_string();
    assert_eq!(trials(&resumed)[2].1, "ERROR");
    assert_eq!(failures(&broken), 4);
    let r = rows(&broken);
    assert_eq!(
        col(&r, "training_iteration"),
        [1.0],
        "resumed after its checkpoint, no row made twice"
    );
    // restart_errored: from scratch, its old results and errors gone.
    let restarted = ok(&run_embedded("restart_errored", &tmp, &[])).to_string();
    assert_eq!(trials(&restarted)[2].1, "ERROR");
    assert_eq!(failures(&broken), 2);
    assert_eq!(col(&rows(&broken), "training_iteration"), [1.0]);
    // Finished trials were never run again.
    assert_eq!(untouched(&good), good_rows);
    assert_eq!(untouched(&flaky), flaky_rows);
    // best_result: by the last score the two finished trials tie (5); by average too.
    for out in [&first, &resumed, &restarted] {
        let best = |scope: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("BEST {scope} ")))
                .map(str::to_string)
        };
        assert_eq!(best("last"), Some(ts[0].0.clone()));
        assert_eq!(best("all"), Some(ts[0].0.clone()));
        assert_eq!(best("last-5-avg"), Some(ts[0].0.clone()));
    }
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn pbt_copies_a_better_trials_checkpoint_and_config() {
    let tmp = fresh_tmp();
    let out = run_embedded("pbt", &tmp, &[]);
    let s = ok(&out);
    let exp = experiment(s);
    let all: Vec<(String, Vec<serde_json::Map<String, Value>>)> = trials(s)
        .into_iter()
        .map(|(id, status, _, _)| {
            assert_eq!(status, "TERMINATED");
            let r = rows(&trial_dir(&exp, &id));
            (id, r)
        })
        .collect();
    let acc = |row: &serde_json::Map<String, Value>| row["acc"].as_f64().unwrap();
    let it = |row: &serde_json::Map<String, Value>| row["training_iteration"].as_u64().unwrap();
    // Trials run to iteration 12, except those whose exploit copied a donor's final
    // checkpoint (the donor reported iteration 12 before its task ended): they hold
    // that checkpoint and have nothing left to run. How many do depends on timing (on a
    // loaded machine, two of four).
    let grid = sunray_tune::ResultGrid::load(&exp).unwrap();
    let final_accs: Vec<f64> = (all.iter())
        .filter_map(|(_, r)| r.last().filter(|row| it(row) == 12).map(acc))
        .collect();
    let (mut finished, mut exploited) = (0, 0);
    for (id, r) in &all {
        let last = it(r.last().unwrap());
        exploited += usize::from(last < 12);
        finished += usize::from(last == 12);
        let record = grid.iter().find(|t| &t.trial_id == id).unwrap();
        let newest = record
            .checkpoints
            .last()
            .map(|(_, m)| m["acc"].as_f64().unwrap());
        assert!(
            last == 12 || newest.is_some_and(|a| final_accs.iter().any(|f| (f - a).abs() < 1e-9)),
            "{id} ended at iteration {last}; its newest checkpoint (acc {newest:?}) is no \
             trial's final one ({final_accs:?})"
        );
    }
    assert!(finished >= 1, "no trial reached iteration 12");
    for (id, r) in &all {
        // An exploited trial goes on from its donor's latest checkpoint, at the donor's
        // iteration (ahead or behind its own), as in Ray.
        for w in r.windows(2) {
            let (before, after) = (&w[0], &w[1]);
            if before["config"] == after["config"] {
                continue;
            }
            exploited += 1;
            assert_eq!(after["iterations_since_restore"], 1);
            // Its first step after the exploit started from another trial's reported
            // state: that trial's (iteration, accuracy) plus one step at the new rate,
            // and that donor was doing at least as well as this trial.
            let start = acc(after) - after["config"]["lr"].as_f64().unwrap();
            let donor = all.iter().filter(|(d, _)| d != id).find_map(|(d, dr)| {
                dr.iter()
                    .find(|row| it(row) + 1 == it(after) && (acc(row) - start).abs() < 1e-9)
                    .map(|_| d)
            });
            assert!(
                donor.is_some(),
                "{id}: {before:?} -> {after:?} continues no other trial's checkpoint"
            );
            assert!(start >= acc(before) - 1e-9, "{before:?} -> {after:?}");
        }
    }
    assert!(exploited >= 1, "some trial was perturbed");
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn hyperband_pauses_trials_at_milestones_and_promotes_the_best_third() {
    let tmp = fresh_tmp();
    let out = run_embedded("hyperband", &tmp, &[]);
    let s = ok(&out);
    let exp = experiment(s);
    let ts = trials(s);
    let mut by_len: Vec<u64> = ts.iter().map(|t| t.2).collect();
    by_len.sort();
    assert_eq!(
        by_len,
        [1, 1, 1, 1, 1, 1, 3, 3, 9],
        "9 trials, eta 3: 9 -> 3 -> 1"
    );
    let lr = |id: &str| -> f64 {
        let p: Value = serde_json::from_str(
            &std::fs::read_to_string(trial_dir(&exp, id).join("params.json")).unwrap(),
        )
        .unwrap();
        p["lr"].as_f64().unwrap()
    };
    let best = ts
        .iter()
        .max_by(|a, b| lr(&a.0).total_cmp(&lr(&b.0)))
        .unwrap();
    assert_eq!(
        best.2, 9,
        "the highest learning rate learns fastest and wins"
    );
    // Promoted trials waited paused and were resumed from their checkpoint (all but the
    // one whose arrival completed the rung): a row past iteration 1 starts a restore.
    let resumed = ts
        .iter()
        .filter(|t| {
            rows(&trial_dir(&exp, &t.0)).iter().any(|r| {
                r["training_iteration"].as_u64() > Some(1) && r["iterations_since_restore"] == 1
            })
        })
        .count();
    assert!(resumed >= 2, "{resumed} promoted trials were resumed");
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn stop_criteria_and_the_time_budget_end_trials() {
    let tmp = fresh_tmp();
    let s = run_embedded("stop", &tmp, &[]);
    let s = ok(&s);
    let exp = experiment(s);
    for (id, status, iters, _) in trials(s) {
        assert_eq!((status.as_str(), iters), ("TERMINATED", 4));
        let r = rows(&trial_dir(&exp, &id));
        assert_eq!(r.last().unwrap()["done"], true);
        assert_eq!(r[0]["done"], false);
    }
    let b = run_embedded("budget", &tmp, &[]);
    let b = ok(&b);
    assert!(b.contains("time budget of 600ms reached"), "{b}");
    assert!(trials(b).iter().all(|t| t.1 != "RUNNING"));
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn bad_setups_fail_with_a_clear_message() {
    let tmp = fresh_tmp();
    let out = run_embedded("unregistered", &tmp, &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("register_trainable!"));
    ok(&run_embedded("stop", &tmp, &[]));
    let again = run_embedded("stop", &tmp, &[]);
    let msg = String::from_utf8_lossy(&again.stdout);
    assert!(
        msg.contains("an experiment already exists at") && msg.contains("Tuner::restore"),
        "{msg}"
    );
    std::fs::remove_dir_all(&tmp).ok();
}

/// Issue 27 item 7: writes that fail as on a full disk (ENOSPC, through `/dev/full`) fail
/// their trial with one line naming the file and the free space, never with a panic,
/// and the experiment goes on; a reason error.txt cannot hold reaches the driver's log.
#[test]
fn a_full_disk_fails_the_trial_with_one_clean_line_and_the_experiment_goes_on() {
    let tmp = fresh_tmp();
    let out = run_embedded("disk_full", &tmp, &[("RUST_BACKTRACE", "1")]);
    let s = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{s}\n{stderr}");
    for panic_text in [
        "panicked",
        "stack backtrace",
        "RUST_BACKTRACE",
        "trainable.rs",
    ] {
        assert!(
            !all.contains(panic_text),
            "{panic_text:?} in the output:\n{all}"
        );
    }
    let exp = experiment(s);
    let ts = trials(s);
    let kind_of = |id: &str| {
        let p: Value = serde_json::from_slice(
            &std::fs::read(trial_dir(&exp, id).join("params.json")).unwrap(),
        )
        .unwrap();
        p["kind"].as_str().unwrap().to_string()
    };
    let mut seen = BTreeSet::new();
    for (id, status, _, error) in &ts {
        let kind = kind_of(id);
        let dir = trial_dir(&exp, id);
        match kind.as_str() {
            "ok" => assert_eq!(status, "TERMINATED", "{s}"),
            "checkpoint" => {
                assert_eq!(status, "ERROR", "{s}");
                let meta = dir.join(".pending_checkpoint_000000/.tune_checkpoint.json");
                assert!(
                    error.contains(&format!("cannot write {}", meta.display()))
                        && error.contains("No space left on device")
                        && error.contains(" free on "),
                    "{error}"
                );
                // error.txt: each failure (the first and its retry's) is one line.
                let text = std::fs::read_to_string(dir.join("error.txt")).unwrap();
                let failures: Vec<&str> = text
                    .split("Failure # ")
                    .filter(|p| !p.trim().is_empty())
                    .collect();
                assert_eq!(failures.len(), 2, "{text}");
                for f in failures {
                    let lines: Vec<&str> =
                        f.lines().skip(1).filter(|l| !l.trim().is_empty()).collect();
                    assert_eq!(lines.len(), 1, "{text}");
                    assert!(lines[0].contains("No space left on device"), "{text}");
                }
            }
            "results" => {
                assert_eq!(status, "ERROR", "{s}");
                // error.txt could not be written: the driver's log has the reasons.
                let result = dir.join("result.json");
                let line = stderr
                    .lines()
                    .find(|l| l.contains(&format!("cannot append to {}", result.display())))
                    .unwrap_or_else(|| panic!("no reason in the driver's log:\n{stderr}"));
                assert!(
                    line.contains("No space left on device")
                        && line.contains(" free on ")
                        && line.contains(&format!("{}", dir.join("error.txt").display())),
                    "{line}"
                );
            }
            other => panic!("unexpected kind {other}"),
        }
        seen.insert(kind);
    }
    assert_eq!(seen.len(), 3, "{s}");
    std::fs::remove_dir_all(&tmp).ok();
}
