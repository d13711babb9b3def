//! `sunray slurm` on a real Slurm: a 3-node lab (network namespaces, slurmctld and
//! slurmd from Debian's slurm-wlm) brought up once by the first test that needs it
//! (`slurm-lab/lab.sh up`, installing the packages when missing); `./test.sh` tears it
//! down. The test process never talks to lab addresses itself: every Slurm command
//! runs inside a lab node, and the evidence is files and process lists.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const SUNRAY: &str = env!("CARGO_BIN_EXE_it_sunray");
const STATE: &str = "/tmp/sunray-slurmlab";

fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("slurm-lab/lab.sh")
}

/// Brings the lab up once per test process; tests run one at a time on it.
fn lab() -> std::sync::MutexGuard<'static, ()> {
    static UP: OnceLock<()> = OnceLock::new();
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    UP.get_or_init(|| {
        let out = Command::new("bash")
            .arg(lab_script())
            .arg("up")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the Slurm lab did not come up (root and network namespaces are needed):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
    guard
}

/// Runs a command on lab node `n` (like `ssh n …`).
fn on(n: &str, args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(lab_script())
        .args(["node", n])
        .args(args)
        .output()
        .unwrap()
}

fn example(name: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        p.is_file(),
        "{} is not built: run ./test.sh (cargo test --workspace builds the examples)",
        p.display()
    );
    p.display().to_string()
}

/// Submits a batch script (its body after the #SBATCH lines) from n1; returns the job id.
fn sbatch(tag: &str, sbatch_lines: &[&str], body: &str) -> String {
    let dir = Path::new(STATE).join("jobs");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join(format!("{tag}.sbatch"));
    let mut s = String::from("#!/bin/bash\n");
    for l in sbatch_lines {
        s.push_str(&format!("#SBATCH {l}\n"));
    }
    s.push_str(&format!(
        "#SBATCH --output={STATE}/jobs/sunray_%j.out\nset -e\nS={SUNRAY}\n{body}\n"
    ));
    std::fs::write(&script, s).unwrap();
    let out = on("n1", &["sbatch", "--parsable", script.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "sbatch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn output(id: &str) -> String {
    std::fs::read_to_string(
        Path::new(STATE)
            .join("jobs")
            .join(format!("sunray_{id}.out")),
    )
    .unwrap_or_default()
}

fn state(id: &str) -> String {
    let out = on("n1", &["scontrol", "show", "job", id]);
    let s = String::from_utf8_lossy(&out.stdout);
    s.split_whitespace()
        .find_map(|w| w.strip_prefix("JobState="))
        .unwrap_or("UNKNOWN")
        .to_string()
}

/// Waits (polling Slurm) until the job has left the queue; returns its final state.
fn wait_job(id: &str, limit: Duration) -> String {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let q = on("n1", &["squeue", "-h", "-j", id]);
        if q.status.success() && String::from_utf8_lossy(&q.stdout).trim().is_empty() {
            return state(id);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "job {id} still queued or running after {limit:?}:\n{}",
        output(id)
    );
}

/// Waits until the job's output holds `needle`.
fn wait_output(id: &str, needle: &str, limit: Duration) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if output(id).contains(needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("job {id} never printed {needle:?}:\n{}", output(id));
}

/// Live sunray processes (and drivers) inside the lab nodes: (node, pid, command line).
fn sunray_processes() -> Vec<(String, u32, String)> {
    let mut out = Vec::new();
    for n in ["n1", "n2", "n3"] {
        let pids = Command::new("ip")
            .args(["netns", "pids", n])
            .output()
            .unwrap();
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_none_or(|(_, r)| r.trim_start().starts_with('Z'));
            let ours = ["it_sunray", "simple_trainer", "tune_asha"]
                .iter()
                .any(|b| cmd.contains(b));
            if ours && !zombie {
                out.push((n.to_string(), pid.parse().unwrap(), cmd));
            }
        }
    }
    out
}

fn assert_nothing_left(within: Duration) {
    let end = Instant::now() + within;
    loop {
        let left = sunray_processes();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "sunray processes left on the nodes: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn round_ips(out: &str) -> Vec<std::collections::BTreeSet<String>> {
    out.lines()
        .filter(|l| l.starts_with("round "))
        .map(|l| {
            let json = l.split_once(": ").unwrap().1;
            let m: std::collections::BTreeMap<String, u32> = serde_json::from_str(json).unwrap();
            m.into_keys().collect()
        })
        .collect()
}

#[test]
fn a_three_node_job_uses_every_node_and_leaves_nothing_behind() {
    let _lab = lab();
    let trainer = example("simple_trainer");
    let id = sbatch(
        "three",
        &["--nodes=3", "--ntasks-per-node=1", "--cpus-per-task=2"],
        &format!("$S slurm run -- {trainer} 6 --rounds 2"),
    );
    assert_eq!(
        wait_job(&id, Duration::from_secs(120)),
        "COMPLETED",
        "{}",
        output(&id)
    );
    let out = output(&id);
    let rounds = round_ips(&out);
    assert_eq!(rounds.len(), 2, "{out}");
    for r in rounds {
        assert_eq!(
            r.into_iter().collect::<Vec<_>>(),
            ["10.77.0.1", "10.77.0.2", "10.77.0.3"],
            "{out}"
        );
    }
    assert_nothing_left(Duration::from_secs(10));
}

#[test]
fn a_two_node_tune_job_writes_its_results_and_prints_the_best_trial() {
    let _lab = lab();
    let tune = example("tune_asha");
    let results = format!("{STATE}/jobs/tune-results");
    let _ = std::fs::remove_dir_all(&results);
    let id = sbatch(
        "tune",
        &["--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=2"],
        &format!(
            "$S slurm run -- {tune} --num-samples 12 --max-t 8 --iter-ms 20 --storage-path {results} --verbosity 1"
        ),
    );
    assert_eq!(
        wait_job(&id, Duration::from_secs(180)),
        "COMPLETED",
        "{}",
        output(&id)
    );
    let out = output(&id);
    assert!(out.contains("Best trial config: {"), "{out}");
    let exp = Path::new(&results).join("tune_asha");
    assert!(exp.join("experiment_state.json").is_file());
    let mut ips = std::collections::BTreeSet::new();
    for d in std::fs::read_dir(&exp)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
    {
        let rows = std::fs::read_to_string(d.path().join("result.json")).unwrap();
        for l in rows.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            ips.insert(v["node_ip"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        ips.into_iter().collect::<Vec<_>>(),
        ["10.77.0.1", "10.77.0.2"]
    );
    assert_nothing_left(Duration::from_secs(10));
}

#[test]
fn the_cifar_tune_job_runs_on_two_nodes_and_tests_its_best_trial() {
    let _lab = lab();
    let tune = example("tune_cifar");
    let base = format!("{STATE}/jobs/cifar");
    let _ = std::fs::remove_dir_all(&base);
    let id = sbatch(
        "cifar",
        &["--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=2"],
        &format!(
            "$S slurm run -- {tune} --synthetic --synthetic-per-file 200 --num-samples 2 --max-epochs 2 \\\n             --cpus-per-trial 2 --data-dir {base}/data --storage-path {base}/results --name c --verbosity 1"
        ),
    );
    assert_eq!(
        wait_job(&id, Duration::from_secs(300)),
        "COMPLETED",
        "{}",
        output(&id)
    );
    let out = output(&id);
    assert!(out.contains("Best trial config: {"), "{out}");
    assert!(out.contains("Best trial test set accuracy: "), "{out}");
    let trials = std::fs::read_dir(Path::new(&base).join("results/c"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .count();
    assert_eq!(trials, 2);
    assert_nothing_left(Duration::from_secs(10));
}

#[test]
fn a_failing_driver_fails_the_job_with_its_exit_code() {
    let _lab = lab();
    let id = sbatch(
        "fail",
        &["--nodes=2", "--ntasks-per-node=1"],
        "$S slurm run -- bash -c 'echo driver ran; exit 3'",
    );
    assert_eq!(
        wait_job(&id, Duration::from_secs(60)),
        "FAILED",
        "{}",
        output(&id)
    );
    assert!(output(&id).contains("driver ran"));
    let job =
        String::from_utf8_lossy(&on("n1", &["scontrol", "show", "job", &id]).stdout).to_string();
    assert!(job.contains("ExitCode=3:0"), "{job}");
    assert_nothing_left(Duration::from_secs(10));
}

#[test]
fn two_jobs_sharing_a_node_both_complete() {
    let _lab = lab();
    let trainer = example("simple_trainer");
    let lines = [
        "--nodes=1",
        "--nodelist=n3",
        "--ntasks=1",
        "--cpus-per-task=1",
    ];
    let body = format!("$S slurm run -- {trainer} 2 --rounds 2");
    let a = sbatch("share-a", &lines, &body);
    let b = sbatch("share-b", &lines, &body);
    for id in [&a, &b] {
        assert_eq!(
            wait_job(id, Duration::from_secs(120)),
            "COMPLETED",
            "{}",
            output(id)
        );
        assert_eq!(round_ips(&output(id)).len(), 2, "{}", output(id));
    }
    // Each had its own head on n3, on a port of its own.
    let head = |id: &str| {
        output(id)
            .lines()
            .find(|l| l.starts_with("sunray: head "))
            .unwrap_or("")
            .to_string()
    };
    assert!(head(&a).contains("10.77.0.3:") && head(&b).contains("10.77.0.3:"));
    assert_ne!(head(&a), head(&b));
    assert_nothing_left(Duration::from_secs(10));
}

#[test]
fn scancel_stops_every_sunray_process_on_every_node() {
    let _lab = lab();
    let trainer = example("simple_trainer");
    let id = sbatch(
        "cancel",
        &["--nodes=3", "--ntasks-per-node=1", "--cpus-per-task=2"],
        &format!("$S slurm run -- {trainer} 6 --rounds 1000"),
    );
    wait_output(&id, "round 0:", Duration::from_secs(60));
    assert!(
        sunray_processes().iter().any(|(n, _, _)| n == "n3"),
        "{:#?}",
        sunray_processes()
    );
    assert!(on("n1", &["scancel", &id]).status.success());
    assert_nothing_left(Duration::from_secs(8));
    assert_eq!(wait_job(&id, Duration::from_secs(30)), "CANCELLED");
}

#[test]
fn a_node_agent_killed_mid_job_has_its_tasks_retried_and_the_job_completes() {
    let _lab = lab();
    let trainer = example("simple_trainer");
    let id = sbatch(
        "kill",
        &["--nodes=3", "--ntasks-per-node=1", "--cpus-per-task=2"],
        &format!("$S slurm run -- {trainer} 6 --rounds 4"),
    );
    wait_output(&id, "round 0:", Duration::from_secs(60));
    let agent = sunray_processes()
        .into_iter()
        .find(|(n, _, cmd)| n == "n3" && cmd.contains("slurm node"))
        .unwrap_or_else(|| panic!("no node agent on n3: {:#?}", sunray_processes()));
    unsafe { libc_kill(agent.1 as i32, 9) };
    assert_eq!(
        wait_job(&id, Duration::from_secs(120)),
        "COMPLETED",
        "{}",
        output(&id)
    );
    let rounds = round_ips(&output(&id));
    assert_eq!(rounds.len(), 4);
    assert!(!rounds[3].contains("10.77.0.3"), "{}", output(&id));
    assert_nothing_left(Duration::from_secs(10));
}

#[test]
fn add_nodes_grows_a_running_cluster_and_their_job_ending_shrinks_it() {
    let _lab = lab();
    let trainer = example("simple_trainer");
    let id = sbatch(
        "grow",
        &["--nodes=1", "--nodelist=n1", "--ntasks=1", "--cpus-per-task=2"],
        &format!(
            "eval \"$($S slurm up | grep '^  export')\"\n\
             $S slurm add-nodes --nodes 2 -- --nodelist=n2,n3 --output={STATE}/jobs/sunray_grow_nodes.out\n\
             $S status --wait-for-nodes 3 --timeout 60 >/dev/null\n\
             {trainer} 6 --rounds 1\n\
             scancel --name sunray-nodes\n\
             while [ -n \"$(squeue -h --name sunray-nodes)\" ]; do sleep 0.2; done\n\
             {trainer} 4 --rounds 1\n\
             $S slurm down"
        ),
    );
    assert_eq!(
        wait_job(&id, Duration::from_secs(180)),
        "COMPLETED",
        "{}",
        output(&id)
    );
    let rounds = round_ips(&output(&id));
    assert_eq!(rounds.len(), 2, "{}", output(&id));
    assert_eq!(
        rounds[0].len(),
        3,
        "tasks ran on the added nodes: {}",
        output(&id)
    );
    assert_eq!(
        rounds[1].iter().collect::<Vec<_>>(),
        ["10.77.0.1"],
        "{}",
        output(&id)
    );
    assert_nothing_left(Duration::from_secs(10));
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
