//! Large objects stay on the node that made them: real head and nodes on loopback
//! addresses, drivers started as separate programs (`it_objects`).

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Stdio};

const OBJECTS: &str = env!("CARGO_BIN_EXE_it_objects");

/// The process's peak resident memory, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = st
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb << 10
}

/// The driver's next line starting with `tag` (what follows it).
fn next(r: &mut BufReader<ChildStdout>, tag: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            r.read_line(&mut line).unwrap() > 0,
            "driver ended before {tag}"
        );
        if let Some(rest) = line.trim().strip_prefix(tag) {
            return rest.trim().to_string();
        }
    }
}

fn go_on(d: &mut Child) {
    writeln!(d.stdin.as_mut().unwrap(), "go").unwrap();
}

/// The object store column of a node's row in `sunray status` ("objects (MB)").
fn store_column(c: &Cluster, ip: &str) -> String {
    let o = c.sunray(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    text.lines()
        .find(|l| l.contains(&format!(" {ip} ")))
        .and_then(|l| l.trim().trim_end_matches('│').rsplit('┆').next())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no row for {ip} in status:\n{text}"))
}

#[test]
fn a_200_mb_object_made_on_one_node_is_read_on_another_without_passing_through_the_head() {
    let mut c = Cluster::start(0.0, &[]);
    c.add_node_with_resources("127.0.0.2", 1.0, r#"{"maker": 1}"#);
    c.add_node_with_resources("127.0.0.3", 1.0, r#"{"reader": 1}"#);
    let head = c.head.id();
    let mut d = c
        .program(OBJECTS, &["move", "200"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(d.stdout.take().unwrap());
    next(&mut r, "MADE");
    // The head only heard where the object is; `sunray status` shows it in node 2's store.
    let stored = store_column(&c, "127.0.0.2");
    assert!(stored.starts_with("1 (209.7 MB)"), "{stored}");
    let other = store_column(&c, "127.0.0.3");
    assert!(other.starts_with("0 "), "{other}");
    let (before, rss_before) = (traffic(head), peak_rss(head));
    go_on(&mut d);
    let read = next(&mut r, "READ");
    assert_eq!(
        read, "209715200 true 127.0.0.2 127.0.0.3",
        "made on 2, read on 3"
    );
    let got = next(&mut r, "GOT");
    assert_eq!(got, "209715200 true 127.0.0.2", "the driver reads it too");
    let moved = traffic(head) - before;
    let grew = peak_rss(head).saturating_sub(rss_before);
    // 400 MB went node to node and node to driver; the head saw a few messages.
    assert!(moved < 1 << 20, "the head moved {moved} bytes");
    assert!(
        grew < 8 << 20,
        "the head's peak memory grew by {grew} bytes"
    );
    next(&mut r, "DROPPED");
    // The driver dropped its ref: node 2 frees it (the head tells it once released).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let col = store_column(&c, "127.0.0.2");
        if col.starts_with("0 ") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still stored: {col}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    go_on(&mut d);
    assert!(d.wait().unwrap().success());
}

#[test]
fn an_object_whose_node_died_is_rebuilt_by_running_its_task_again() {
    let mut c = Cluster::start(0.0, &[("127.0.0.2", 1.0, 0), ("127.0.0.3", 1.0, 0)]);
    let mut d = c
        .program(OBJECTS, &["lineage", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(d.stdout.take().unwrap());
    let made = next(&mut r, "MADE");
    next(&mut r, "KILL");
    let victim = c.nodes.iter().position(|(ip, _)| *ip == made).unwrap();
    c.nodes[victim].1.kill().unwrap();
    c.nodes[victim].1.wait().unwrap();
    go_on(&mut d);
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    let mut err = String::new();
    d.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(d.wait().unwrap().success(), "driver failed: {rest}\n{err}");
    let other = if made == "127.0.0.2" {
        "127.0.0.3"
    } else {
        "127.0.0.2"
    };
    let rebuilt = rest
        .lines()
        .find_map(|l| l.strip_prefix("REBUILT "))
        .unwrap();
    assert_eq!(rebuilt, format!("2097152 true {other}"), "{rest}");
    let read = rest.lines().find_map(|l| l.strip_prefix("READ ")).unwrap();
    assert_eq!(read, format!("2097152 true {other}"), "{rest}");
}
