//! Real `sunray` processes on real sockets: a head and nodes on distinct loopback
//! addresses, drivers started as separate programs. Each test has its own session
//! directory (SUNRAY_TMPDIR) and port, so tests run side by side.

mod common;

use common::*;
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[test]
fn tasks_spread_over_every_node() {
    let c = Cluster::start(2.0, &[("127.0.0.2", 2.0, 0), ("127.0.0.3", 2.0, 0)]);
    let out = c.driver(&["spread", "12"]);
    let ips: BTreeSet<&str> = lines(&out, "IP ").into_iter().collect();
    assert_eq!(
        ips,
        ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
            .into_iter()
            .collect(),
        "every node must take part"
    );
}

struct Interval {
    ip: String,
    start: f64,
    end: f64,
    visible: String,
    ids: String,
}

fn intervals(out: &Output) -> Vec<Interval> {
    lines(out, "INTERVAL ")
        .into_iter()
        .map(|l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            Interval {
                ip: p[0].to_string(),
                start: p[1].parse().unwrap(),
                end: p[2].parse().unwrap(),
                visible: p[3].trim_matches(|c| c == '[' || c == ']').to_string(),
                ids: p[4].trim_matches(|c| c == '[' || c == ']').to_string(),
            }
        })
        .collect()
}

/// Most tasks running at one instant on each node.
fn max_overlap(iv: &[Interval]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for a in iv {
        let n = iv
            .iter()
            .filter(|b| b.ip == a.ip && b.start <= a.start && a.start < b.end)
            .count();
        let e = out.entry(a.ip.clone()).or_insert(0);
        *e = (*e).max(n);
    }
    out
}

#[test]
fn never_more_concurrent_tasks_than_cpus() {
    let c = Cluster::start(1.0, &[("127.0.0.2", 2.0, 0), ("127.0.0.3", 1.0, 0)]);
    let out = c.driver(&["intervals", "12"]);
    let iv = intervals(&out);
    assert_eq!(iv.len(), 12);
    let cpus: HashMap<&str, usize> = [("127.0.0.1", 1), ("127.0.0.2", 2), ("127.0.0.3", 1)].into();
    for (ip, n) in max_overlap(&iv) {
        assert!(n <= cpus[ip.as_str()], "{n} tasks at once on {ip}");
    }
}

#[test]
fn gpu_ids_are_assigned_without_overlap() {
    let c = Cluster::start(2.0, &[("127.0.0.2", 4.0, 2), ("127.0.0.3", 4.0, 1)]);
    let out = c.driver(&["intervals", "9", "1"]);
    let iv = intervals(&out);
    assert_eq!(iv.len(), 9);
    for a in &iv {
        assert_ne!(a.ip, "127.0.0.1", "the head has no GPU");
        assert_eq!(
            a.visible, a.ids,
            "CUDA_VISIBLE_DEVICES is the task's GPU list"
        );
        assert_eq!(a.ids.split(',').count(), 1, "one GPU per task");
        for b in &iv {
            let overlap = a.start < b.end && b.start < a.end;
            if !std::ptr::eq(a, b) && a.ip == b.ip && overlap {
                assert_ne!(a.ids, b.ids, "two tasks shared GPU {} on {}", a.ids, a.ip);
            }
        }
    }
    assert!(
        iv.iter().any(|i| i.ip == "127.0.0.2" && i.ids == "1"),
        "the second GPU is used"
    );
    // CPU-only tasks see no GPU at all
    let cpu_only = intervals(&c.driver(&["intervals", "4"]));
    assert!(cpu_only.iter().all(|i| i.visible.is_empty()));
}

#[test]
fn object_refs_as_arguments_put_and_wait() {
    let c = Cluster::start(1.0, &[("127.0.0.2", 1.0, 0)]);
    let out = c.driver(&["deps"]);
    assert_eq!(lines(&out, "RESULT "), vec!["116"]);
    assert_eq!(lines(&out, "WAIT "), vec!["3 0"]);
}

#[test]
fn a_task_no_node_can_run_waits_and_its_driver_is_warned() {
    let c = Cluster::start(1.0, &[("127.0.0.2", 1.0, 0)]);
    let out = c.driver(&["infeasible"]);
    assert_eq!(lines(&out, "WAITING").len(), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("asks for {1 CPU, 1 tpu}, which no node of the cluster has"),
        "{err}"
    );
}

#[test]
fn a_driver_is_warned_when_its_waiting_tasks_lose_the_only_node_that_could_run_them() {
    let mut c = Cluster::start(1.0, &[]);
    c.add_node_with_resources("127.0.0.2", 1.0, r#"{"B": 1}"#);
    let mut d = c
        .driver_cmd(&["stranded"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // One task needing B runs on the node, the other waits behind it. (Stdout is read
    // to its end, so that the driver never writes into a closed pipe.)
    let (tx, rx) = std::sync::mpsc::channel();
    let out = BufReader::new(d.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    while !rx
        .recv()
        .expect("driver ended early")
        .contains("STARTED 127.0.0.2")
    {}
    c.nodes[0].1.kill().unwrap();
    c.nodes[0].1.wait().unwrap();
    // The driver is told at once (it would wait 30 s for the result otherwise).
    let mut err = BufReader::new(d.stderr.take().unwrap());
    let mut seen = String::new();
    let warning = loop {
        let mut line = String::new();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "the driver ended without the warning: {seen}"
        );
        if line.contains("left the cluster") {
            break line;
        }
        seen.push_str(&line);
    };
    d.kill().ok();
    d.wait().unwrap();
    assert!(
        warning.contains("sunray: warning: node ")
            && warning.contains("(127.0.0.2) left the cluster: 2 waiting tasks")
            && warning.contains("ask for {1 CPU, 1 B}, which no node of the cluster has now"),
        "{warning}"
    );
}

#[test]
fn errors_and_panics_come_back_from_get() {
    let c = Cluster::start(1.0, &[("127.0.0.2", 1.0, 0)]);
    let out = c.driver(&["errors"]);
    let e1 = lines(&out, "ERR1 ")[0];
    assert!(
        e1.contains("fails") && e1.contains("bad input 42") && e1.contains("127.0.0."),
        "{e1}"
    );
    let e2 = lines(&out, "ERR2 ")[0];
    assert!(
        e2.contains("panics") && e2.contains("panicked: kaboom"),
        "{e2}"
    );
    let e3 = lines(&out, "ERR3 ")[0];
    assert!(
        e3.contains("dependency failed") && e3.contains("kaboom"),
        "{e3}"
    );
    assert_eq!(lines(&out, "OK "), vec!["4"]);
}

#[test]
fn a_worker_that_dies_is_retried_then_reported() {
    let c = Cluster::start(1.0, &[]);
    let out = c.driver(&["worker_exit"]);
    let e = lines(&out, "ERR ")[0];
    assert!(
        e.contains("exits") && e.contains("lost its worker process") && e.contains("exit code 3"),
        "{e}"
    );
}

#[test]
fn a_killed_node_has_its_task_retried_elsewhere() {
    // the head offers no CPU, so the task runs on one of the two nodes
    let mut c = Cluster::start(0.0, &[("127.0.0.2", 1.0, 0), ("127.0.0.3", 1.0, 0)]);
    let mut d = c
        .driver_cmd(&["long", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(d.stdout.take().unwrap());
    let mut line = String::new();
    let first = loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "driver ended early");
        if let Some(ip) = line.trim().split("STARTED ").nth(1) {
            break ip.to_string();
        }
    };
    let victim = c.nodes.iter().position(|(ip, _)| *ip == first).unwrap();
    c.nodes[victim].1.kill().unwrap();
    c.nodes[victim].1.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut r, &mut rest).unwrap();
    assert!(d.wait().unwrap().success(), "driver failed: {rest}");
    let result = rest
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .expect("a result");
    assert_ne!(result, first, "the retry ran on the surviving node");
    assert!(rest.contains(&format!("STARTED {result}")));
    let st = c
        .sunray(&["status", "--address", &c.address])
        .output()
        .unwrap();
    let st = String::from_utf8_lossy(&st.stdout);
    assert!(st.contains("2 nodes alive, 1 dead"), "{st}");
}

/// The `burst` driver ended well, every result matching its input.
fn assert_every_result_checked(out: &Output, stdout: &str, n: usize) {
    assert!(
        out.status.success() && stdout.contains(&format!("CHECKED {n}")),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Short tasks are pipelined to nodes (queued behind the running ones there): when a
/// node dies, those it had queued run elsewhere and every result still comes back.
#[test]
fn a_node_killed_under_pipelined_short_tasks_loses_no_result() {
    let mut c = Cluster::start(1.0, &[("127.0.0.2", 1.0, 0), ("127.0.0.3", 1.0, 0)]);
    let mut d = c
        .driver_cmd(&["burst", "20000", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(d.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("PROGRESS") {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "driver ended early");
    }
    let victim = c
        .nodes
        .iter()
        .position(|(ip, _)| ip == "127.0.0.3")
        .unwrap();
    c.nodes[victim].1.kill().unwrap();
    c.nodes[victim].1.wait().unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut r, &mut text).unwrap();
    let out = d.wait_with_output().unwrap();
    assert_every_result_checked(&out, &text, 20000);
    assert!(
        text.contains("RAN 127.0.0.3 "),
        "the victim took part: {text}"
    );
}

/// Pipelined short tasks are sent ahead to the worker that runs their predecessor: when
/// that worker dies, those it had been sent run on another, and every result comes back.
#[test]
fn a_worker_killed_with_tasks_sent_ahead_loses_no_result() {
    let c = Cluster::start(1.0, &[("127.0.0.2", 1.0, 0)]);
    let marker = c.tmp.join("died-once");
    let out = c.driver(&["burst_die", "20000", marker.to_str().unwrap()]);
    assert!(marker.exists(), "a worker died mid-burst");
    assert_eq!(lines(&out, "CHECKED "), ["20000"]);
}

/// Two drivers' short tasks share pipelines on the same node; one driver dies mid-run
/// and the other's tasks all finish.
#[test]
fn a_driver_killed_under_pipelined_tasks_leaves_the_others_running() {
    let c = Cluster::start(1.0, &[("127.0.0.2", 1.0, 0)]);
    let spawn = |n: &str| {
        c.driver_cmd(&["burst", n, "20"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Both submit at once, so their tasks interleave in the queue and in the pipelines.
    let mut doomed = spawn("40000");
    let mut survivor = spawn("40000");
    wait_line(&mut doomed, "PROGRESS");
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while survivor.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            survivor.kill().unwrap();
            panic!("the surviving driver's tasks never finished");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = survivor.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_every_result_checked(&out, &text, 40000);
}

#[test]
fn nodes_fetch_an_executable_they_cannot_see_from_the_head() {
    let c = Cluster::start(1.0, &[("127.0.0.2", 1.0, 0)]);
    let copy = c.tmp.join("driver-copy");
    std::fs::copy(DRIVER, &copy).unwrap();
    let out = Command::new(&copy)
        .arg("selfdelete")
        .env("SUNRAY_TMPDIR", &c.tmp)
        .env("SUNRAY_ADDRESS", &c.address)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!copy.exists());
    assert_eq!(lines(&out, "IP ").len(), 4);
    let node_log = std::fs::read_to_string(c.tmp.join("node-127.0.0.2.err")).unwrap();
    assert!(node_log.contains("fetching executable"), "{node_log}");
}

#[test]
fn wrong_token_is_refused_on_both_sides() {
    let c = Cluster::start(1.0, &[]);
    let out = c
        .sunray(&[
            "start",
            "--address",
            &c.address,
            "--block",
            "--token",
            "not-the-token",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused") && err.contains("wrong cluster token"),
        "{err}"
    );
    // A driver on the head's host, through the head's local socket and over TCP.
    for local_socket in ["1", "0"] {
        let drv = c
            .driver_cmd(&["spread", "1"])
            .env("SUNRAY_TOKEN", "nope")
            .env("SUNRAY_LOCAL_SOCKET", local_socket)
            .output()
            .unwrap();
        assert!(!drv.status.success());
        assert!(String::from_utf8_lossy(&drv.stderr).contains("wrong cluster token"));
    }
    let head_log = std::fs::read_to_string(c.tmp.join("head.err")).unwrap();
    assert!(
        head_log.contains("refused connection from 127.0.0.1"),
        "{head_log}"
    );
    assert!(
        head_log.contains("refused connection from local socket"),
        "{head_log}"
    );
}

#[test]
fn drivers_on_the_head_host_use_its_local_socket_and_tcp_still_works() {
    let c = Cluster::start(2.0, &[("127.0.0.2", 2.0, 0)]);
    let mut tcp = c.driver_cmd(&["spread", "8"]);
    tcp.env("SUNRAY_LOCAL_SOCKET", "0");
    let tcp = run_ok(tcp);
    let local = c.driver(&["spread", "8"]);
    for out in [&tcp, &local] {
        assert_eq!(lines(out, "IP ").len(), 8, "every result came back");
    }
    let head_log = std::fs::read_to_string(c.tmp.join("head.err")).unwrap();
    let joined: Vec<&str> = head_log
        .lines()
        .filter(|l| l.contains("joined from"))
        .collect();
    assert!(
        joined
            .iter()
            .any(|l| l.contains("driver") && l.contains("from 127.0.0.1:")),
        "{head_log}"
    );
    assert!(
        joined
            .iter()
            .any(|l| l.contains("driver") && l.contains("from local socket")),
        "{head_log}"
    );
}

#[test]
fn unreachable_head_and_bad_flags_give_clear_errors() {
    let tmp = fresh_tmp();
    let run = |args: &[&str]| {
        Command::new(SUNRAY)
            .args(args)
            .env("SUNRAY_TMPDIR", &tmp)
            .env_remove("SUNRAY_ADDRESS")
            .output()
            .unwrap()
    };
    let o = run(&[
        "start",
        "--address",
        "127.0.0.1:1",
        "--token",
        "x",
        "--block",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach head at 127.0.0.1:1"));
    let o = run(&["start", "--head", "--block", "--resources", "{not json"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resources must be a JSON object"));
    let o = run(&["status"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no sunray head runs on this host"));
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn start_without_block_returns_ready_and_stop_leaves_nothing_behind() {
    let tmp = fresh_tmp();
    let cmd = |args: &[&str]| {
        let mut c = Command::new(SUNRAY);
        c.args(args)
            .env("SUNRAY_TMPDIR", &tmp)
            .env_remove("SUNRAY_ADDRESS")
            .env_remove("SUNRAY_TOKEN");
        c
    };
    let o = cmd(&[
        "start",
        "--head",
        "--port",
        "0",
        "--node-ip-address",
        "127.0.0.1",
        "--num-cpus",
        "1",
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let address = text.split_whitespace().nth(3).unwrap().to_string();
    let o = cmd(&[
        "start",
        "--address",
        &address,
        "--node-ip-address",
        "127.0.0.2",
        "--num-cpus",
        "1",
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // a driver with a task running: head, node, driver and a worker are up
    let mut d = Command::new(DRIVER)
        .args(["long", "60"])
        .env("SUNRAY_TMPDIR", &tmp)
        .env("SUNRAY_ADDRESS", &address)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_line_containing(&mut d, "STARTED");
    let before = processes_of(&tmp);
    assert!(
        before.len() >= 4,
        "head, node, driver and worker run: {before:?}"
    );
    let o = cmd(&["stop"]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("stopped 2 sunray processes"));
    // workers die with their node agent (SIGKILL from the kernel); allow it a moment
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_of(&tmp).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        processes_of(&tmp),
        Vec::<u32>::new(),
        "processes left behind"
    );
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn status_and_cluster_resources_show_every_node() {
    let c = Cluster::start(2.0, &[("127.0.0.2", 3.0, 0), ("127.0.0.3", 1.0, 1)]);
    let st = c
        .sunray(&["status", "--address", &c.address])
        .output()
        .unwrap();
    let st = String::from_utf8_lossy(&st.stdout);
    for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        assert!(st.contains(ip), "{st}");
    }
    assert!(
        st.contains("3 nodes alive, 0 dead") && st.contains("0/6 CPUs"),
        "{st}"
    );
    let out = c.driver(&["resources"]);
    let cl = lines(&out, "CLUSTER ")[0];
    assert!(
        cl.contains("\"CPU\": 6.0") && cl.contains("\"GPU\": 1.0"),
        "{cl}"
    );
    assert_eq!(lines(&out, "NODES "), vec!["3"]);
}

#[test]
fn dropped_object_refs_are_released_at_the_head() {
    let c = Cluster::start(2.0, &[]);
    let objects = || -> u64 {
        let o = c.sunray(&["status"]).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        text.lines()
            .find_map(|l| l.strip_prefix("objects: "))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no object count in status:\n{text}"))
    };
    let mut drv = c
        .driver_cmd(&["hold", "300"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_line(&mut drv, "HELD");
    assert!(objects() >= 300, "the driver's results are held");
    // The driver drops them and then sends nothing: its client flushes the releases.
    use std::io::Write;
    writeln!(drv.stdin.as_mut().unwrap(), "drop").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while objects() != 0 {
        assert!(Instant::now() < deadline, "released objects still held");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(drv.stdin.take());
    assert!(drv.wait().unwrap().success());
}

#[test]
fn concurrent_gets_on_many_threads_each_get_their_answer() {
    let c = Cluster::start(2.0, &[("127.0.0.2", 2.0, 0)]);
    let out = c.driver(&["threads", "300"]);
    assert_eq!(lines(&out, "THREADS OK "), ["1200"]);
}

#[test]
fn task_output_reaches_a_driver_that_waits_for_nothing() {
    let c = Cluster::start(1.0, &[]);
    let mut drv = c
        .driver_cmd(&["shout"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = wait_line_containing(&mut drv, "HELLO-FROM-TASK");
    assert!(line.starts_with('('), "prefixed with its origin: {line}");
    drop(drv.stdin.take());
    assert!(drv.wait().unwrap().success());
}

/// Two heads of one user on one port, on two loopback addresses: a driver reaches the
/// one its address names, through that head's local socket.
#[test]
fn drivers_reach_the_head_their_address_names_when_two_share_a_port() {
    let c = Cluster::start(1.0, &[]);
    let port = c.address.rsplit_once(':').unwrap().1.to_string();
    let mut other = c
        .sunray(&[
            "start",
            "--head",
            "--block",
            "--port",
            &port,
            "--node-ip-address",
            "127.0.0.2",
            "--num-cpus",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_line(&mut other, "sunray head started:");
    for ip in ["127.0.0.1", "127.0.0.2"] {
        let mut cmd = c.driver_cmd(&["spread", "2"]);
        cmd.env("SUNRAY_ADDRESS", format!("{ip}:{port}"));
        let out = run_ok(cmd);
        assert_eq!(lines(&out, "IP "), [ip, ip], "the head at {ip} ran them");
    }
    other.kill().unwrap();
    other.wait().unwrap();
}
