//! Actors on a real cluster: a head and nodes on loopback addresses, drivers started as
//! separate programs (`it_actors`).

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;

const ACTORS: &str = env!("CARGO_BIN_EXE_it_actors");

fn status(c: &Cluster) -> String {
    let st = c
        .sunray(&["status", "--address", &c.address])
        .output()
        .unwrap();
    String::from_utf8_lossy(&st.stdout).into_owned()
}

#[test]
fn actor_state_persists_and_calls_run_in_submission_order() {
    let c = Cluster::start(2.0, &[("127.0.0.2", 2.0, 0)]);
    let out = run_ok(c.program(ACTORS, &["order"]));
    assert_eq!(lines(&out, "ORDERED "), ["200"]);
    let err = lines(&out, "ERR ")[0];
    assert!(
        err.contains("Counter::fails") && err.contains("nope 17"),
        "{err}"
    );
    // A method's error is that call's result: the actor lives on.
    assert_eq!(
        lines(&out, "AFTER_ERR "),
        [(100 + 200 * 201 / 2 + 1).to_string()]
    );
    assert_eq!(lines(&out, "HANDLE_TRAVELS "), ["true"]);
}

#[test]
fn an_actor_holds_its_resources_and_gpus_until_killed() {
    let c = Cluster::start(0.0, &[("127.0.0.2", 2.0, 2)]);
    let out = run_ok(c.program(ACTORS, &["hold"]));
    let actor = lines(&out, "ACTOR ")[0];
    assert!(
        actor.starts_with("127.0.0.2 ") && actor.ends_with("[0]"),
        "{actor}"
    );
    assert_eq!(lines(&out, "AVAILABLE "), ["CPU=1 GPU=1"]);
    let killed = lines(&out, "KILLED ")[0];
    assert!(
        killed.contains("its actor died") && killed.contains("Counter"),
        "{killed}"
    );
    // Killed: its CPU and GPU are free again, and status says why it died.
    let st = status(&c);
    assert!(st.contains("0/2 CPUs, 0/2 GPUs in use"), "{st}");
    assert!(
        st.contains("actors: 0 alive, 0 pending, 0 restarting, 1 dead"),
        "{st}"
    );
    assert!(st.contains("killed by signal 9"), "{st}");
}

#[test]
fn actor_calls_go_from_the_caller_to_the_actors_node_without_the_head() {
    // On the node's host over its Unix socket, and over TCP as from another host.
    for how in ["", "tcp"] {
        direct_calls_leave_the_head_out(how);
    }
}

fn direct_calls_leave_the_head_out(how: &str) {
    let c = Cluster::start(0.0, &[("127.0.0.2", 1.0, 0)]);
    let head = c.head.id();
    let mut d = c
        .program(ACTORS, &["direct", "2000"])
        .env("SUNRAY_DIRECT_CALLS", how)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(d.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != "READY" {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "driver ended early");
    }
    let before = traffic(head);
    writeln!(d.stdin.as_mut().unwrap(), "go").unwrap();
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    assert!(d.wait().unwrap().success(), "{rest}");
    assert!(rest.contains("CALLED 4000 2048000"), "{rest}");
    // 4,000 calls carried 4 MB of arguments; through the head they would be 8 MB of
    // its traffic (in and out). It heard heartbeats.
    let moved = traffic(head) - before;
    assert!(moved < 256 << 10, "{how:?}: the head moved {moved} bytes");
}

#[test]
fn a_crashed_actor_restarts_until_its_restarts_run_out() {
    let c = Cluster::start(2.0, &[]);
    let out = run_ok(c.program(ACTORS, &["restart"]));
    let crash = lines(&out, "CRASH ")[0];
    assert!(
        crash.contains("its actor died") && crash.contains("exit code 7"),
        "{crash}"
    );
    assert_eq!(
        lines(&out, "AFTER_RESTART "),
        ["6"],
        "the constructor ran again"
    );
    assert_eq!(lines(&out, "NEW_PROCESS "), ["true"]);
    let later = lines(&out, "LATER ")[0];
    assert!(
        later.contains("is dead") || later.contains("died"),
        "{later}"
    );
}

#[test]
fn an_actor_on_a_killed_node_restarts_elsewhere_and_its_calls_are_retried() {
    let mut c = Cluster::start(0.0, &[("127.0.0.2", 1.0, 0), ("127.0.0.3", 1.0, 0)]);
    let mut d = c
        .program(ACTORS, &["node"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(d.stdout.take().unwrap());
    let mut line = String::new();
    let lives = loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "driver ended early");
        if let Some(ip) = line.trim().strip_prefix("LIVES ") {
            break ip.to_string();
        }
    };
    let victim = c.nodes.iter().position(|(ip, _)| *ip == lives).unwrap();
    c.nodes[victim].1.kill().unwrap();
    c.nodes[victim].1.wait().unwrap();
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    let mut err = String::new();
    d.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(d.wait().unwrap().success(), "driver failed: {rest}\n{err}");
    let after = rest
        .lines()
        .find_map(|l| l.strip_prefix("AFTER "))
        .expect("an answer after the restart");
    let (v, ip) = after.split_once(' ').unwrap();
    assert_eq!(
        v, "3",
        "the restarted actor's state starts over, then the retried call"
    );
    assert_ne!(ip, lives, "it lives on the surviving node now");
    // Its driver left: the actor (not detached) died with it.
    let st = status(&c);
    assert!(st.contains("its driver left"), "{st}");
}

#[test]
fn a_detached_named_actor_outlives_its_driver_and_is_found_by_name() {
    let c = Cluster::start(2.0, &[]);
    let out = run_ok(c.program(ACTORS, &["detached", "keeper"]));
    assert_eq!(lines(&out, "CREATED "), ["41"]);
    let dup = lines(&out, "DUPLICATE ")[0];
    assert!(dup.contains("'keeper' exists already"), "{dup}");
    // Its driver is gone; the actor still lives, and keeps its state.
    let st = status(&c);
    assert!(st.contains("keeper") && st.contains("alive"), "{st}");
    let out = run_ok(c.program(ACTORS, &["find", "keeper"]));
    assert_eq!(lines(&out, "FOUND "), ["42"]);
    assert_eq!(lines(&out, "GONE "), ["true"]);
}

#[test]
fn a_failing_constructor_is_reported_to_the_creator_and_to_callers() {
    let c = Cluster::start(2.0, &[]);
    let out = run_ok(c.program(ACTORS, &["ctor"]));
    let ready = lines(&out, "READY ")[0];
    assert!(
        ready.contains("constructor refused its argument"),
        "{ready}"
    );
    let call = lines(&out, "CALL ")[0];
    assert!(
        call.contains("its actor died") && call.contains("constructor"),
        "{call}"
    );
    assert_eq!(lines(&out, "OK "), ["pong"]);
}

#[test]
fn tasks_submit_tasks_and_call_actors_and_recursion_cannot_deadlock_two_cpus() {
    // Two CPUs in all: fib(15) has 986 tasks waiting for their children at some point;
    // each lends its CPU while it waits.
    let c = Cluster::start(2.0, &[]);
    let out = run_ok(c.program(ACTORS, &["nested", "15"]));
    assert_eq!(lines(&out, "FIB "), ["610"]);
    assert_eq!(lines(&out, "PUT_IN_TASK "), ["55"]);
    assert_eq!(lines(&out, "BUMPED "), ["150"]);
    assert_eq!(lines(&out, "LAST_SEEN_MAX "), ["true"]);
    // Every CPU is free again: lent CPUs came back and nothing is oversubscribed.
    let st = status(&c);
    assert!(st.contains("0/2 CPUs"), "{st}");
}

#[test]
fn placement_groups_pack_spread_and_strict_spread_on_three_nodes() {
    let c = Cluster::start(
        0.0,
        &[
            ("127.0.0.2", 2.0, 0),
            ("127.0.0.3", 2.0, 0),
            ("127.0.0.4", 2.0, 0),
        ],
    );
    let out = c.program(ACTORS, &["groups"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let ips =
        |tag: &str| -> Vec<String> { lines(&out, tag)[0].split(' ').map(String::from).collect() };
    let pack = ips("PACK ");
    assert_eq!(
        pack[0], pack[1],
        "PACK puts both bundles on one node: {pack:?}"
    );
    for tag in ["SPREAD ", "STRICT_SPREAD "] {
        let mut v = ips(tag);
        v.sort();
        assert_eq!(v, ["127.0.0.2", "127.0.0.3", "127.0.0.4"], "{tag}");
    }
    assert_eq!(lines(&out, "OUTSIDE_WAITS "), ["true"]);
    assert_eq!(lines(&out, "ACTOR_IN_BUNDLE "), ["true"]);
    assert_eq!(lines(&out, "OUTSIDE_RUNS "), ["true"]);
    assert_eq!(lines(&out, "ACTOR_AFTER_REMOVE "), ["true"]);
    // Infeasible: it never becomes ready, and the driver is told why.
    assert_eq!(lines(&out, "INFEASIBLE_READY "), ["false"]);
    assert!(
        stderr.contains("cannot be placed") && stderr.contains("StrictSpread needs 4 nodes"),
        "{stderr}"
    );
    assert!(lines(&out, "BAD_BUNDLE ")[0].contains("there is no bundle 7"));
}
