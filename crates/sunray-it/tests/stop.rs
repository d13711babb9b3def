//! `sunray stop` with two clusters of one user in one session folder (two Slurm jobs on
//! one node share `SUNRAY_TMPDIR`): `--address`, `$SUNRAY_ADDRESS` and `$SLURM_JOB_ID`
//! each stop one cluster and leave the other answering.

mod common;

use std::path::Path;
use std::process::{Child, Output, Stdio};

use common::*;

/// A head and one node agent on loopback addresses, started by `sunray start --block`
/// (so the test holds their processes) with `SUNRAY_TMPDIR` = `tmp`.
struct Two {
    address: String,
    head: Child,
    node: Child,
}

fn start(tmp: &Path, head_ip: &str, node_ip: &str, job: Option<&str>) -> Two {
    // One process of the cluster, once it printed `ready`: the process and that line.
    let spawn = |args: &[&str], ip: &str, log: String, ready: &str| {
        let mut cmd = sunray_in(tmp, args);
        cmd.args([
            "--node-ip-address",
            ip,
            "--num-cpus",
            "1",
            "--num-gpus",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(tmp.join(log)).unwrap())
        .env_remove("SLURM_JOB_ID");
        if let Some(j) = job {
            cmd.env("SLURM_JOB_ID", j);
        }
        let mut child = cmd.spawn().unwrap();
        let line = wait_line(&mut child, ready);
        (child, line)
    };
    let head_args = ["start", "--head", "--block", "--port", "0"];
    let (head, line) = spawn(
        &head_args,
        head_ip,
        format!("head-{head_ip}.err"),
        "sunray head started:",
    );
    let address = line.split_whitespace().nth(3).unwrap().to_string();
    let node_args = ["start", "--address", &address, "--block"];
    let (node, _) = spawn(
        &node_args,
        node_ip,
        format!("node-{node_ip}.err"),
        "sunray node joined",
    );
    Two {
        address,
        head,
        node,
    }
}

impl Two {
    /// Both processes still run.
    fn running(&mut self) -> bool {
        self.head.try_wait().unwrap().is_none() && self.node.try_wait().unwrap().is_none()
    }
    /// Both processes ended (`stop` returns once they have, so no waiting is needed).
    fn stopped(&mut self) -> bool {
        self.head.try_wait().unwrap().is_some() && self.node.try_wait().unwrap().is_some()
    }
}

impl Drop for Two {
    fn drop(&mut self) {
        for c in [&mut self.head, &mut self.node] {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `sunray status` of `c` answers, with its two nodes.
fn answers(tmp: &Path, c: &Two) {
    let o = sunray_in(tmp, &["status", "--address", &c.address])
        .output()
        .unwrap();
    assert!(
        o.status.success() && text(&o).contains("2 nodes alive"),
        "the cluster at {} does not answer: {}",
        c.address,
        text(&o)
    );
}

/// `sunray stop` succeeded and stopped one cluster's head and node agent.
fn stopped_one_cluster(o: &Output) {
    assert!(o.status.success(), "{}", text(o));
    assert!(
        text(o).contains("stopped 2 sunray processes"),
        "{}",
        text(o)
    );
}

fn stop(tmp: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = sunray_in(tmp, &["stop"]);
    cmd.args(args).env_remove("SLURM_JOB_ID");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn stop_with_an_address_stops_only_that_cluster() {
    let tmp = fresh_tmp();
    let mut a = start(&tmp, "127.0.0.2", "127.0.0.4", None);
    let mut b = start(&tmp, "127.0.0.3", "127.0.0.5", None);

    // An address no cluster here has: an error naming the ones it knows; nothing stops.
    let o = stop(&tmp, &["--address", "127.0.0.9:1"], &[]);
    assert!(!o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("no cluster at 127.0.0.9:1") && t.contains(&a.address) && t.contains(&b.address),
        "{t}"
    );
    assert!(
        a.running() && b.running(),
        "a wrong address stopped something"
    );
    answers(&tmp, &a);

    let o = stop(&tmp, &["--address", &a.address], &[]);
    stopped_one_cluster(&o);
    assert!(a.stopped());
    assert!(
        b.running(),
        "stop --address {} stopped the other cluster",
        a.address
    );
    answers(&tmp, &b);

    // The session directories of the stopped cluster are gone, the other's remain.
    let left = std::fs::read_dir(session_base(&tmp)).unwrap().count();
    assert_eq!(left, 2, "head and node sessions of the running cluster");
    drop((a, b));
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn stop_with_sunray_address_set_stops_only_the_cluster_it_names() {
    let tmp = fresh_tmp();
    let mut a = start(&tmp, "127.0.0.2", "127.0.0.4", None);
    let mut b = start(&tmp, "127.0.0.3", "127.0.0.5", None);

    let o = stop(&tmp, &[], &[("SUNRAY_ADDRESS", "127.0.0.9:1")]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("no cluster at 127.0.0.9:1"),
        "{}",
        text(&o)
    );
    assert!(
        a.running() && b.running(),
        "a wrong SUNRAY_ADDRESS stopped something"
    );

    let o = stop(&tmp, &[], &[("SUNRAY_ADDRESS", &b.address)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(b.stopped());
    assert!(
        a.running(),
        "SUNRAY_ADDRESS={} stopped the other cluster",
        b.address
    );
    answers(&tmp, &a);

    // `--all` stops what is left, whatever SUNRAY_ADDRESS names.
    let o = stop(&tmp, &["--all"], &[("SUNRAY_ADDRESS", &b.address)]);
    assert!(
        text(&o).contains("stopped 2 sunray processes"),
        "{}",
        text(&o)
    );
    assert!(a.stopped());
    drop((a, b));
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn stop_inside_a_slurm_job_stops_only_that_jobs_cluster() {
    let tmp = fresh_tmp();
    let mut a = start(&tmp, "127.0.0.2", "127.0.0.4", Some("4101"));
    let mut b = start(&tmp, "127.0.0.3", "127.0.0.5", Some("4102"));

    // Job 4999's cluster is one `sunray slurm up` supervises (in the job's directory):
    // `stop` names the command that stops it, and signals nothing.
    let job_dir = session_base(&tmp).join("j4999");
    std::fs::create_dir(&job_dir).unwrap();
    std::fs::write(job_dir.join("supervisor.pid"), "1").unwrap();
    let o = stop(&tmp, &[], &[("SLURM_JOB_ID", "4999")]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("no sunray processes of Slurm job 4999")
            && text(&o).contains("`sunray slurm down`"),
        "{}",
        text(&o)
    );
    assert!(
        a.running() && b.running(),
        "another job's stop stopped something"
    );

    let o = stop(&tmp, &[], &[("SLURM_JOB_ID", "4101")]);
    stopped_one_cluster(&o);
    assert!(a.stopped());
    assert!(b.running(), "job 4101's stop stopped job 4102's cluster");
    answers(&tmp, &b);
    drop((a, b));
    std::fs::remove_dir_all(&tmp).ok();
}
