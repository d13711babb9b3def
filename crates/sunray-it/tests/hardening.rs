//! What no peer, mistyped flag or stale file may do: crash or exhaust the head, read the
//! token off the wire or a command line, or make sunray touch what is not its own. Real
//! processes on loopback; attackers are plain sockets or `sunray_runtime`'s own client
//! with the right token.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use rand::{Rng, SeedableRng};
use sunray_proto::*;
use sunray_runtime::wire;

/// A head on 127.0.0.1, on any free port, in the background.
const HEAD: &[&str] = &[
    "start",
    "--head",
    "--port",
    "0",
    "--node-ip-address",
    "127.0.0.1",
];

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn head_alive(c: &mut Cluster) -> bool {
    c.head.try_wait().unwrap().is_none()
}

/// The cluster still serves a driver: tasks run and come back.
fn serves_a_driver(c: &mut Cluster) {
    assert!(head_alive(c), "the head died");
    let out = c.driver(&["spread", "4"]);
    let ips = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("IP "))
        .count();
    assert_eq!(ips, 4);
}

fn node_reg(gpu: f64, gpu_ids: usize) -> NodeRegistration {
    NodeRegistration {
        ip: "127.0.0.9".into(),
        hostname: "attacker".into(),
        pid: 1,
        resources: Resources {
            cpu: 1.0,
            gpu,
            ..Default::default()
        },
        gpu_ids: (0..gpu_ids).map(|i| i.to_string()).collect(),
    }
}

/// Item 1: `$SUNRAY_TMPDIR` is the parent of sunray's own directory, never its own.
#[test]
fn sunray_tmpdir_is_a_parent_that_sunray_never_changes_or_empties() {
    let tmp = fresh_tmp();
    let x = tmp.join("x");
    std::fs::create_dir_all(x.join("backup-999999/important")).unwrap();
    std::fs::create_dir_all(x.join("photos-2023")).unwrap();
    std::fs::create_dir_all(x.join("local-1")).unwrap();
    std::fs::set_permissions(&x, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let sunray = |args: &[&str]| sunray_in(&x, args);
    let o = sunray(HEAD).args(["--num-cpus", "1"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let ready = String::from_utf8_lossy(&o.stdout).to_string();
    let base = session_base(&x);
    assert!(ready.contains(&base.display().to_string()), "{ready}");
    let mode = std::fs::metadata(&x).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o1777, "the mode of SUNRAY_TMPDIR changed");
    let mode = std::fs::metadata(&base).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let o = sunray(&["stop"]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("stopped 1"));
    for kept in ["backup-999999/important", "photos-2023", "local-1"] {
        assert!(x.join(kept).is_dir(), "{kept} was removed");
    }
    // A sunray directory that others may enter is refused, not taken over.
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = sunray(&["start", "--head", "--block", "--port", "0"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr_of(&o).contains("others may enter it"),
        "{}",
        stderr_of(&o)
    );
    let mode = std::fs::metadata(&base).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "sunray changed a mode it had refused");
    std::fs::remove_dir_all(&tmp).ok();
}

/// Item 1, on a Slurm node: `SUNRAY_TMPDIR` names a job directory this host has not made
/// yet; the node creates it (private) and joins.
#[test]
fn a_node_creates_a_missing_sunray_tmpdir_and_joins() {
    let mut c = Cluster::start(1.0, &[]);
    let missing = c.tmp.join("elsewhere/j123");
    let mut node = Command::new(SUNRAY)
        .args(["start", "--address", &c.address, "--block"])
        .args(["--node-ip-address", "127.0.0.2", "--num-cpus", "1"])
        .env("SUNRAY_TMPDIR", &missing)
        .env("SUNRAY_TOKEN", c.token())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_line(&mut node, "sunray node joined");
    let mode = std::fs::metadata(&missing).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(session_base(&missing).is_dir());
    c.nodes.push(("127.0.0.2".into(), node));
    serves_a_driver(&mut c);
}

/// Item 2: a session whose pid now belongs to another program: `stop` leaves it alone.
#[test]
fn stop_never_signals_a_process_that_took_a_stale_sessions_pid() {
    let tmp = fresh_tmp();
    let base = session_base(&tmp);
    std::fs::create_dir(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut bystander = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = bystander.id();
    // As an older sunray wrote it (no start time), and with a start time that is not
    // the bystander's (its pid was reused).
    let infos = [
        serde_json::json!({"kind": "head", "pid": pid, "address": "127.0.0.1:1",
            "node_ip": "127.0.0.1", "started_unix_ms": 0}),
        serde_json::json!({"kind": "node", "pid": pid, "address": null,
            "node_ip": "127.0.0.1", "started_unix_ms": 1, "start_time": 1, "exe": "/x"}),
    ];
    for (i, info) in infos.iter().enumerate() {
        let d = base.join(format!("head-{i}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("info.json"), info.to_string()).unwrap();
    }
    let o = Command::new(SUNRAY)
        .args(["stop", "--grace-period", "1"])
        .env("SUNRAY_TMPDIR", &tmp)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "sunray stop killed an unrelated process"
    );
    assert!(
        stderr_of(&o).contains(&format!("left pid {pid} alone")),
        "{}",
        stderr_of(&o)
    );
    bystander.kill().ok();
    bystander.wait().ok();
    std::fs::remove_dir_all(&tmp).ok();
}

fn cmdlines_containing(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) {
                found.push(c);
            }
        }
    }
    found
}

/// Item 3: the token never reaches a command line, and `--token-file` works.
#[test]
fn the_token_is_never_on_a_command_line() {
    let tmp = fresh_tmp();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let token = format!("tok{nanos:x}{:x}", std::process::id());
    let token_file = tmp.join("token.txt");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let sunray = |args: &[&str]| sunray_in(&tmp, args);
    let o = sunray(HEAD)
        .args(["--num-cpus", "1", "--token", &token])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let address = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .nth(3)
        .unwrap()
        .to_string();
    let o = sunray(&[
        "start",
        "--address",
        &address,
        "--node-ip-address",
        "127.0.0.2",
    ])
    .args(["--num-cpus", "1", "--token-file"])
    .arg(&token_file)
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let seen = cmdlines_containing(&token);
    let o = sunray(&["status", "--address", &address, "--token-file"])
        .arg(&token_file)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("2 nodes alive"));
    sunray(&["stop"]).output().unwrap();
    assert!(seen.is_empty(), "the token is on command lines: {seen:?}");
    std::fs::remove_dir_all(&tmp).ok();
}

/// Directories under `root` (at any depth) whose name starts with `prefix`.
fn dirs_named_like(root: &std::path::Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                found.push(e.path());
            }
            found.extend(dirs_named_like(&e.path(), prefix));
        }
    }
    found
}

/// Item 4: a node that cannot join leaves no session directory behind.
#[test]
fn a_node_that_cannot_join_leaves_nothing_behind() {
    let tmp = fresh_tmp();
    let o = Command::new(SUNRAY)
        .args([
            "start",
            "--address",
            "127.0.0.1:1",
            "--token",
            "x",
            "--block",
        ])
        .env("SUNRAY_TMPDIR", &tmp)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let left = dirs_named_like(&tmp, "node-");
    assert!(left.is_empty(), "left behind: {left:?}");
    std::fs::remove_dir_all(&tmp).ok();
}

/// Item 5: before authenticating, a peer can make the head hold a hello's worth of
/// memory, and only so many peers may be in their handshake at once.
#[test]
fn a_peer_without_the_token_cannot_make_the_head_allocate() {
    let mut c = Cluster::start(1.0, &[]);
    let pid = c.head.id();
    let before = rss_kb(pid);
    let (addr, chunk) = (c.address.clone(), vec![0x5au8; 1 << 20]);
    let floods: Vec<_> = (0..4)
        .map(|_| {
            let (addr, chunk) = (addr.clone(), chunk.clone());
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.write_all(&(1u32 << 30).to_be_bytes()).unwrap();
                let mut sent = 0usize;
                while sent < 200 << 20 {
                    match s.write(&chunk) {
                        Ok(n) => sent += n,
                        Err(_) => break, // the head hung up
                    }
                }
                sent
            })
        })
        .collect();
    for f in floods {
        let sent = f.join().unwrap();
        assert!(
            sent < 200 << 20,
            "the head read {sent} bytes of an oversized hello"
        );
    }
    let after = rss_kb(pid);
    assert!(
        after < before + 20 * 1024,
        "head RSS grew from {before} kB to {after} kB"
    );
    // 100 peers that never say hello: beyond 64, the head closes them at once.
    // The head accepts them in order: the first 64 wait in their handshake, the others
    // are closed as soon as they are accepted.
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    for (i, mut s) in idle.iter().enumerate().skip(64) {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(
            matches!(s.read(&mut [0u8; 1]), Ok(0)),
            "connection {i} was kept"
        );
    }
    for (i, mut s) in idle.iter().enumerate().take(64) {
        s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        let r = s.read(&mut [0u8; 1]);
        assert!(
            r.is_err(),
            "connection {i} in its handshake was closed: {r:?}"
        );
    }
    drop(idle);
    // The head frees their slots as it sees them close (nothing announces it): a status
    // query gets through once it has.
    let t = Instant::now();
    while !c.sunray(&["status"]).output().unwrap().status.success() {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the head never took connections again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    serves_a_driver(&mut c);
}

/// Item 5: authenticated messages have a limit too (`SUNRAY_MAX_MESSAGE_MB`).
#[test]
fn messages_beyond_the_configured_limit_are_refused_clearly() {
    let env = [("SUNRAY_MAX_MESSAGE_MB", "1")];
    let mut c = Cluster::start_with_env(1.0, &[], &env);
    // A driver with the same limit refuses before sending.
    let out = run_ok({
        let mut d = c.driver_cmd(&["bigput", "2"]);
        d.envs(env);
        d
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("PUT_ERR an object of 2097156 bytes is larger than the largest message")
            && text.contains("SUNRAY_MAX_MESSAGE_MB"),
        "{text}"
    );
    // One with a larger limit is dropped by the head, which says why; others go on.
    let out = run_ok(c.driver_cmd(&["bigput", "2"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("_ERR") && !text.contains("GOT"), "{text}");
    let head_log = std::fs::read_to_string(c.tmp.join("head.err")).unwrap();
    assert!(
        head_log.contains("a message larger than the head's limit of 1 MiB"),
        "{head_log}"
    );
    serves_a_driver(&mut c);
}

/// Item 6: a peer with the right token registering an absurd node is refused; the
/// head stays up.
#[test]
fn a_node_registration_with_absurd_values_is_refused_and_the_head_stays_up() {
    let mut c = Cluster::start(1.0, &[]);
    let token = c.token();
    for (reg, why) in [
        (node_reg(1e12, 0), "GPU"),
        (node_reg(2.0, 3), "device ids"),
        (node_reg(f64::NAN, 0), "GPU amount"),
    ] {
        let r = rt().block_on(wire::connect(&c.address, None, &token, Role::Node(reg)));
        match r {
            Err(sunray_runtime::Error::Refused { reason, .. }) => {
                assert!(reason.contains(why), "{reason}")
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("an absurd node registration was accepted"),
        }
    }
    // A driver's task asking for an impossible GPU shape fails alone.
    let out = c.driver(&["bad_request"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("was refused by the head"), "{text}");
    assert!(text.contains("IP 127.0.0.1"), "{text}");
    serves_a_driver(&mut c);
}

/// Item 7: executables are fetched by hash only; no path reaches the file system.
#[test]
fn fetch_binary_takes_only_a_hash() {
    let c = Cluster::start(1.0, &[]);
    let token = c.token();
    for hash in ["/etc/passwd", "../../../../../../etc/passwd", "0123"] {
        let r = rt().block_on(wire::connect(
            &c.address,
            None,
            &token,
            Role::FetchBinary { hash: hash.into() },
        ));
        match r {
            Err(sunray_runtime::Error::Refused { reason, .. }) => {
                assert!(reason.contains("32 hex digits"), "{reason}")
            }
            other => panic!("fetching {hash}: {:?}", other.map(|_| ())),
        }
    }
}

/// Waits for `child` to end, up to `limit`; its output.
fn output_within(child: std::process::Child, limit: Duration) -> Option<std::process::Output> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(limit).ok().map(|o| o.unwrap())
}

/// Item 8: a head that stops answering (SIGSTOP) is noticed by its drivers and nodes.
#[test]
fn drivers_and_nodes_give_up_on_a_head_that_stops_answering() {
    let env = [("SUNRAY_HEARTBEAT_TIMEOUT", "3")];
    let mut c = Cluster::start_with_env(1.0, &[("127.0.0.2", 1.0, 0)], &env);
    let mut d = c
        .driver_cmd(&["long", "60"])
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_line_containing(&mut d, "STARTED");
    let stopped_at = Instant::now();
    unsafe { libc::kill(c.head.id() as i32, libc::SIGSTOP) };
    let out = output_within(d, Duration::from_secs(20)).expect("the driver hangs");
    unsafe { libc::kill(c.head.id() as i32, libc::SIGCONT) };
    let err = stderr_of(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("head at {} has not answered for 3 s", c.address)),
        "{err}"
    );
    assert!(stopped_at.elapsed() < Duration::from_secs(15));
    // The node agent gave up too, with the same message.
    let (_, node) = c.nodes.pop().unwrap();
    let out = output_within(node, Duration::from_secs(20)).expect("the node hangs");
    assert!(!out.status.success());
    let log = std::fs::read_to_string(c.tmp.join("node-127.0.0.2.err")).unwrap();
    assert!(log.contains("has not answered for 3 s"), "{log}");
}

/// Item 8: a node that stops answering is declared dead by the head.
#[test]
fn the_head_declares_a_silent_node_dead() {
    let env = [("SUNRAY_HEARTBEAT_TIMEOUT", "3")];
    let c = Cluster::start_with_env(1.0, &[("127.0.0.2", 1.0, 0)], &env);
    let node_pid = c.nodes[0].1.id() as i32;
    unsafe { libc::kill(node_pid, libc::SIGSTOP) };
    let stopped_at = Instant::now();
    let mut status = String::new();
    while stopped_at.elapsed() < Duration::from_secs(15) {
        let o = c
            .sunray(&["status", "--address", &c.address])
            .output()
            .unwrap();
        status = String::from_utf8_lossy(&o.stdout).into_owned();
        if status.contains("1 nodes alive, 1 dead") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    unsafe { libc::kill(node_pid, libc::SIGCONT) };
    assert!(status.contains("1 nodes alive, 1 dead"), "{status}");
    let head_log = std::fs::read_to_string(c.tmp.join("head.err")).unwrap();
    assert!(head_log.contains("has not answered for 3 s"), "{head_log}");
}

/// Copies one connection both ways between a client and `upstream`, recording what
/// the client sent and what it received.
/// What a client sent and what it received over one connection.
type Recording = (Vec<u8>, Vec<u8>);

fn recording_proxy(upstream: String) -> (String, mpsc::Receiver<Recording>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (client, _) = l.accept().unwrap();
        let server = TcpStream::connect(upstream).unwrap();
        let copy = |mut from: TcpStream, mut to: TcpStream| {
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                let _ = to.shutdown(std::net::Shutdown::Write);
                seen
            })
        };
        let up = copy(client.try_clone().unwrap(), server.try_clone().unwrap());
        let down = copy(server, client);
        let _ = tx.send((up.join().unwrap(), down.join().unwrap()));
    });
    (addr, rx)
}

fn frames(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let n = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        out.push(bytes[4..4 + n].to_vec());
        bytes = &bytes[4 + n..];
    }
    out
}

/// Item 9: a recorded handshake neither shows the token nor can be replayed.
#[test]
fn the_token_never_crosses_the_wire_and_a_recorded_handshake_cannot_be_replayed() {
    let c = Cluster::start(1.0, &[]);
    let token = c.token();
    let (proxy, recorded) = recording_proxy(c.address.clone());
    let o = c
        .sunray(&["status", "--address", &proxy])
        .env("SUNRAY_TOKEN", &token)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let (sent, received) = recorded.recv_timeout(Duration::from_secs(10)).unwrap();
    for side in [&sent, &received] {
        assert!(
            !side
                .windows(16)
                .any(|w| token.as_bytes().windows(16).any(|t| t == w)),
            "the token crossed the wire"
        );
    }
    // The very bytes a real client sent, sent again: the head's nonce is new, so the
    // recorded proof fails.
    let mut s = TcpStream::connect(&c.address).unwrap();
    s.write_all(&sent).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    let replies: Vec<HelloReply> = frames(&back).iter().map(|f| decode(f).unwrap()).collect();
    assert!(matches!(replies[0], HelloReply::Challenge { .. }));
    match &replies[1] {
        HelloReply::Refused { reason } => assert!(reason.contains("wrong cluster token")),
        other => panic!("a replayed handshake got {other:?}"),
    }
    // A client of the previous protocol (hello = version 3, token, role) is told why.
    let mut old = vec![3u8, 1, b'x', 2];
    old.splice(0..0, (old.len() as u32).to_be_bytes());
    let mut s = TcpStream::connect(&c.address).unwrap();
    s.write_all(&old).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    match decode::<HelloReply>(&frames(&back)[0]).unwrap() {
        HelloReply::Refused { reason } => {
            assert!(reason.contains("protocol version 3"), "{reason}")
        }
        other => panic!("an old client got {other:?}"),
    }
}

/// Items 10 and 11: mistyped addresses and dead heads get one clear line.
#[test]
fn mistyped_addresses_and_dead_heads_get_one_clear_line() {
    let tmp = fresh_tmp();
    let run = |cmd: &mut Command| {
        let o = cmd
            .env("SUNRAY_TMPDIR", &tmp)
            .env_remove("SUNRAY_TOKEN")
            .output()
            .unwrap();
        assert!(!o.status.success());
        stderr_of(&o)
    };
    let e = run(Command::new(SUNRAY).args(["status", "--address", "nonsense"]));
    assert!(
        e.contains("invalid address \"nonsense\": expected HOST:PORT"),
        "{e}"
    );
    assert!(!e.contains("token"), "{e}");
    let e = run(Command::new(DRIVER)
        .args(["spread", "2"])
        .env("SUNRAY_ADDRESS", "127.0.0.1:1"));
    assert!(e.contains("nothing answers at 127.0.0.1:1"), "{e}");
    assert!(!e.contains("token"), "{e}");
    let e = run(Command::new(SUNRAY).args(["start", "--address", "127.0.0.1:1", "--token", "x"]));
    assert_eq!(e.matches("sunray: error:").count(), 1, "{e}");
    assert_eq!(e.matches("Connection refused").count(), 1, "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    // A head that crashed: "nothing answers", not "no token".
    let mut c = Cluster::start(1.0, &[]);
    c.head.kill().unwrap();
    c.head.wait().unwrap();
    let e = run(&mut c.sunray(&["status", "--address", &c.address]));
    assert!(
        e.contains(&format!("nothing answers at {}", c.address)),
        "{e}"
    );
    std::fs::remove_dir_all(&tmp).ok();
}

/// Item 12: resource flags are range-checked, negative numbers included.
#[test]
fn resource_flags_out_of_range_are_refused_naming_the_flag() {
    for (flag, value) in [
        ("--num-cpus", "1e300"),
        ("--num-cpus", "-3"),
        ("--num-gpus", "-1"),
        ("--num-gpus", "100000"),
    ] {
        let tmp = fresh_tmp();
        let child = Command::new(SUNRAY)
            .args(["start", "--head", "--block", "--port", "0", flag, value])
            .env("SUNRAY_TMPDIR", &tmp)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let Some(o) = output_within(child, Duration::from_secs(10)) else {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{flag} {value} was accepted: a head started");
        };
        std::fs::remove_dir_all(&tmp).ok();
        assert!(!o.status.success());
        let e = stderr_of(&o);
        assert!(
            e.contains(flag) && e.contains("from 0 to"),
            "{flag} {value}: {e}"
        );
    }
}

/// Peers with the right token send thousands of generated messages (absurd amounts,
/// foreign ids, long strings, garbage frames); the head keeps serving a driver.
#[test]
fn valid_token_peers_sending_generated_messages_never_stop_the_head() {
    use futures_util::SinkExt;
    let mut c = Cluster::start(2.0, &[]);
    let token = c.token();
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    rt().block_on(async {
        for round in 0..24u32 {
            let role = match round % 3 {
                0 => Role::Node(node_reg(1.0, 1)),
                _ => Role::Driver {
                    binary: BinaryInfo {
                        path: "/nonexistent/driver".into(),
                        hash: format!("{:032x}", rng.random::<u128>()),
                        size: 1,
                        registry_hash: "r".into(),
                        kind: sunray_proto::ProgramKind::Native,
                    },
                    hostname: "h".into(),
                    pid: 1,
                    // Some claim to work for a job that may not exist.
                    job: (round % 4 == 0).then_some(round),
                },
            };
            let is_node = matches!(role, Role::Node(_));
            let (mut io, reply) = wire::connect(&c.address, None, &token, role).await.unwrap();
            let client = match reply {
                HelloReply::Welcome { client_id, .. } => client_id,
                other => panic!("{other:?}"),
            };
            for _ in 0..300 {
                let frame = match rng.random_range(0..10) {
                    0 => Bytes::from(
                        (0..rng.random_range(0..64))
                            .map(|_| rng.random())
                            .collect::<Vec<u8>>(),
                    ),
                    _ if is_node => encode(&gen::node_message(&mut rng)),
                    _ => encode(&gen::driver_message(&mut rng, client)),
                };
                if io.send(frame).await.is_err() {
                    break; // the head dropped this peer: allowed
                }
            }
        }
    });
    serves_a_driver(&mut c);
}

/// Issue 27 item 3: a task's environment, `/proc/self/environ`, a process it starts and
/// its output never hold the cluster token; the job credential its worker holds instead
/// cannot join as a node, connect as a driver or a query, or act for another job.
#[test]
fn workers_never_see_the_cluster_token_and_their_credential_only_does_a_workers_work() {
    let mut c = Cluster::start(1.0, &[]);
    let token = c.token();
    let out = c.driver(&["secrets"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("SEEN "))
        .unwrap_or_else(|| panic!("{text}{}", String::from_utf8_lossy(&out.stderr)));
    let (env, proc_env, child, credential, job): (String, String, String, String, u32) =
        serde_json::from_str(line).unwrap();
    assert!(env.contains("SUNRAY_WORKER_ID="), "{env}");
    for (what, seen) in [
        ("the task's environment", &env),
        ("/proc/self/environ", &proc_env),
        ("a child process's environment", &child),
        ("the task's output", &text.replace(line, "")),
    ] {
        assert!(!seen.contains(&token), "the token is in {what}");
        assert!(!seen.contains(&credential), "the credential is in {what}");
        assert!(!seen.contains("SUNRAY_WORKER_TOKEN"), "{what}: {seen}");
    }
    assert_ne!(credential, token);
    let refused =
        |role: Role| match rt().block_on(wire::connect(&c.address, None, &credential, role)) {
            Err(sunray_runtime::Error::Refused { reason, .. }) => reason,
            other => panic!("accepted: {:?}", other.map(|_| ())),
        };
    let driver = |job| Role::Driver {
        binary: BinaryInfo {
            path: "/nonexistent/driver".into(),
            hash: "0".repeat(32),
            size: 1,
            registry_hash: "r".into(),
            kind: sunray_proto::ProgramKind::Native,
        },
        hostname: "h".into(),
        pid: 1,
        job,
    };
    for role in [
        Role::Node(node_reg(1.0, 0)),
        driver(None),
        driver(Some(job + 1)),
        Role::Query,
    ] {
        let reason = refused(role);
        assert!(reason.contains("worker's credential"), "{reason}");
    }
    // The job ended with its driver: a connection for it does not become a driver of
    // its own (which could name any executable for the nodes); the head says why and
    // forgets it.
    let said = rt().block_on(async {
        use futures_util::StreamExt;
        let (mut io, reply) = wire::connect(&c.address, None, &credential, driver(Some(job)))
            .await
            .unwrap();
        assert!(
            matches!(
                reply,
                HelloReply::Welcome {
                    upload_binary: false,
                    ..
                }
            ),
            "{reply:?}"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, io.next()).await {
            if let Ok(HeadToDriver::Warning(w)) = decode::<HeadToDriver>(&frame) {
                return w;
            }
        }
        String::new()
    });
    assert!(said.contains(&format!("job {job} has ended")), "{said:?}");
    serves_a_driver(&mut c);
}
