//! Core benchmark: start-up time, idle memory, task throughput, round trip, and the
//! simple trainer's round time, on clusters started with the `sunray` command.
//!
//! ```text
//! cargo build --release -p sunray-cli && cargo build --release -p sunray-examples --example bench_core
//! target/release/examples/bench_core            # prints one line per figure
//! bench/core.sh --ray                           # the same, with Ray measured beside it
//! target/release/examples/bench_core --tasks 1000000   # one driver, a million tasks: rate and memory
//! target/release/examples/bench_core --objects  # 1 GB objects node to node, against loopback TCP
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[sunray::remote]
fn noop() {}

#[sunray::remote]
fn sleep_ip(s: f64) -> String {
    std::thread::sleep(Duration::from_secs_f64(s));
    sunray::get_runtime_context().node_ip
}

/// `n` bytes made where the task runs (they stay in that node's object store).
#[sunray::remote]
fn blob(n: usize) -> bytes::Bytes {
    bytes::Bytes::from(vec![1u8; n])
}

/// Takes a blob (read from the node that holds it) and says how long it is.
#[sunray::remote]
fn blob_len(b: bytes::Bytes) -> usize {
    b.len()
}

/// An actor whose method does nothing: calls measure the actor path alone.
#[derive(Default)]
pub struct Idle;

#[sunray::actor]
impl Idle {
    pub fn new() -> Self {
        Idle
    }
    pub fn noop(&self) {}
}

/// Prints the actor call round trip and throughput (run twice by the benchmark: direct
/// calls, and with `SUNRAY_DIRECT_CALLS=0` through the head). With `cpus` > 0 the
/// actor needs a CPU: on a cluster whose head has none, it lives on a node agent of
/// its own rather than in the head's process.
fn actor_figures(cpus: f64) {
    let a = Idle::options(sunray::ActorOptions::new().num_cpus(cpus)).remote();
    a.noop().remote().get().unwrap();
    let mut rtts = Vec::new();
    for _ in 0..REPEATS {
        let m = 1000;
        let t = Instant::now();
        for _ in 0..m {
            a.noop().remote().get().unwrap();
        }
        rtts.push(t.elapsed().as_secs_f64() * 1e6 / m as f64);
    }
    println!("ACTOR_RTT_US {}", summary(rtts, 1));
    let mut rates = Vec::new();
    for _ in 0..REPEATS {
        let n = 10_000;
        let t = Instant::now();
        let refs: Vec<_> = (0..n).map(|_| a.noop().remote()).collect();
        sunray::get_all(&refs).unwrap();
        rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    println!("ACTOR_THROUGHPUT {}", summary(rates, 0));
}

/// A head on loopback with 2 CPUs and any free port, as in the Ray reference.
const HEAD_ARGS: &[&str] = &[
    "start",
    "--head",
    "--port",
    "0",
    "--node-ip-address",
    "127.0.0.1",
    "--num-cpus",
    "2",
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// How many times the throughput and round-trip measurements run.
const REPEATS: usize = 5;

/// "median (min–max)" with `digits` decimals.
fn summary(v: Vec<f64>, digits: usize) -> String {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.digits$} ({:.digits$}-{:.digits$})", median(v), lo, hi)
}

fn sunray_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SUNRAY_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/examples/bench_core -> target/<profile>/sunray
    exe.parent().unwrap().parent().unwrap().join("sunray")
}

fn sunray(tmp: &Path, args: &[&str]) -> std::process::Output {
    let o = Command::new(sunray_bin())
        .args(args)
        .env("SUNRAY_TMPDIR", tmp)
        .env_remove("SUNRAY_ADDRESS")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (build it: cargo build --release -p sunray-cli)",
                sunray_bin().display()
            )
        });
    assert!(
        o.status.success(),
        "sunray {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:")
}

/// A field of `/proc/<pid>/status` in kB (`VmRSS:` now, `VmHWM:` the peak).
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A head and one joined node (127.0.0.2), each with 2 CPUs, as in the Ray reference;
/// returns the head's address once both take work.
fn two_node_cluster(tmp: &Path) -> String {
    let o = sunray(tmp, HEAD_ARGS);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let address = text.split_whitespace().nth(3).unwrap().to_string();
    let node = [
        "start",
        "--address",
        &address,
        "--node-ip-address",
        "127.0.0.2",
        "--num-cpus",
        "2",
    ];
    sunray(tmp, &node);
    sunray(tmp, &["status", "--wait-for-nodes", "2", "--timeout", "10"]);
    if std::env::var_os("SUNRAY_BENCH_DASHBOARD").is_some() {
        WATCHERS.lock().unwrap().push(Watcher::start(tmp, &address));
    }
    address
}

/// With `SUNRAY_BENCH_DASHBOARD` set: a dashboard on each two-node cluster, asked for
/// the cluster view and the experiment list every 500 ms (a page open, refreshing four
/// times as often as the page does), so the figures show what watching costs.
static WATCHERS: std::sync::Mutex<Vec<Watcher>> = std::sync::Mutex::new(Vec::new());

struct Watcher {
    dashboard: std::process::Child,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Watcher {
    fn start(tmp: &Path, address: &str) -> Watcher {
        use std::io::{BufRead, Read, Write};
        let mut dashboard = Command::new(sunray_bin())
            .args([
                "dashboard",
                "--address",
                address,
                "--port",
                "0",
                "--results",
            ])
            .arg(tmp)
            .env("SUNRAY_TMPDIR", tmp)
            .env_remove("SUNRAY_ADDRESS")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(dashboard.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let url = first.split_whitespace().nth(3).unwrap().to_string();
        let port: u16 = url
            .rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('/')
            .parse()
            .unwrap();
        let token = std::fs::read_dir(tmp.join(format!("sunray-{}", unsafe { libc::getuid() })))
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("token")).ok())
            .next()
            .expect("the head's token")
            .trim()
            .to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for path in ["/api/cluster", "/api/experiments"] {
                    if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                        let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
                        let _ = s.read_to_end(&mut Vec::new());
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        Watcher { dashboard, stop }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.dashboard.kill();
        let _ = self.dashboard.wait();
    }
}

/// Stops the cluster of `tmp` (and a dashboard watching it).
fn stop_cluster(tmp: &Path) {
    WATCHERS.lock().unwrap().clear();
    sunray(tmp, &["stop"]);
}

/// `--tasks N`: one driver submits N no-op tasks at once on a head with 2 CPUs and one
/// node with 2; prints the rate, and the head's and driver's memory per task.
fn many_tasks(n: usize) {
    let tmp = PathBuf::from(format!("/tmp/srb-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let address = two_node_cluster(&tmp);
    let head_pid = head_pid(&tmp);
    let idle = rss_kb(head_pid);
    let o = Command::new(std::env::current_exe().unwrap())
        .args(["--role", "many"])
        .env("SUNRAY_TMPDIR", &tmp)
        .env("SUNRAY_ADDRESS", &address)
        .env("BENCH_TASKS", n.to_string())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(o.status.success(), "driver failed");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let get = |key: &str| -> f64 {
        out.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().parse().unwrap()))
            .unwrap()
    };
    let peak = status_kb(head_pid, "VmHWM:");
    // The driver has left; the head drops its objects and, at its next tick (every
    // second), gives the memory back: wait for that, at most 5 s.
    let t = Instant::now();
    let mut after = rss_kb(head_pid);
    while t.elapsed() < Duration::from_secs(5) && after > idle + 20 * 1024 {
        std::thread::sleep(Duration::from_millis(100));
        after = rss_kb(head_pid);
    }
    println!(
        "{n} no-op tasks from one driver:   {:8.0} tasks/s (submitted in {:.2} s)",
        get("MANY_RATE"),
        get("MANY_SUBMIT_S")
    );
    println!(
        "head memory: idle {:.1} MB, peak {:.1} MB ({:.0} bytes per task), after {:.1} MB",
        idle as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak.saturating_sub(idle) * 1024) as f64 / n as f64,
        after as f64 / 1024.0
    );
    println!(
        "driver peak memory: {:.1} MB ({:.0} bytes per outstanding ref)",
        get("DRIVER_PEAK_KB") / 1024.0,
        get("DRIVER_PEAK_KB") * 1024.0 / n as f64
    );
    stop_cluster(&tmp);

    std::fs::remove_dir_all(&tmp).ok();
}

/// A 1 GB object node to node, and into the driver, against plain loopback TCP.
fn object_figures(tmp: &Path) {
    let get = |out: &str, key: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let objects_address = object_cluster(tmp);
    let o = Command::new(std::env::current_exe().unwrap())
        .args(["--role", "objects"])
        .env("SUNRAY_TMPDIR", tmp)
        .env("SUNRAY_ADDRESS", &objects_address)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(o.status.success(), "driver objects failed");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    // An actor on node 2 or 3, not in the head's process: a direct call skips two hops.
    let actors = |direct: &str| {
        let o = Command::new(std::env::current_exe().unwrap())
            .args(["--role", "actors-on-node"])
            .env("SUNRAY_TMPDIR", tmp)
            .env("SUNRAY_ADDRESS", &objects_address)
            .env("SUNRAY_DIRECT_CALLS", direct)
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(o.status.success(), "driver actors-on-node failed");
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let (direct, routed) = (actors("1"), actors("0"));
    stop_cluster(tmp);
    println!(
        "actor on a node agent of its own: direct calls {} us round trip, {} calls/s; through the head {} us, {} calls/s",
        get(&direct, "ACTOR_RTT_US"),
        get(&direct, "ACTOR_THROUGHPUT"),
        get(&routed, "ACTOR_RTT_US"),
        get(&routed, "ACTOR_THROUGHPUT")
    );
    let tcp: Vec<f64> = (0..3).map(|_| tcp_copy_gbs()).collect();
    println!(
        "1 GB object made on node 2, taken by a task on node 3 (read, then decoded into Bytes): {} GB/s (median of 3, range)",
        get(&out, "OBJECT_TASK_GBS")
    );
    println!(
        "1 GB object read by the driver from node 2 (the bytes, not decoded): {} GB/s (median of 3, range)",
        get(&out, "OBJECT_DRIVER_GBS")
    );
    println!(
        "machine floor: 1 GB over loopback TCP into a fresh buffer: {} GB/s (median of 3, range)",
        summary(tcp, 2)
    );
}

/// The pids of the sessions under `$SUNRAY_TMPDIR` = `tmp` (in `tmp/sunray-<uid>`).
fn session_pids(tmp: &Path) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(tmp).unwrap().uid();
    std::fs::read_dir(tmp.join(format!("sunray-{uid}")))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("info.json")).ok())
        .filter_map(|s| {
            let v: serde_json_lite::Info = serde_json_lite::parse(&s)?;
            Some(v.pid)
        })
        .collect()
}

/// The pid of the head's session (its directory is `head-<pid>`).
fn head_pid(tmp: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(tmp).unwrap().uid();
    std::fs::read_dir(tmp.join(format!("sunray-{uid}")))
        .unwrap()
        .flatten()
        .find_map(|e| e.file_name().to_str()?.strip_prefix("head-")?.parse().ok())
        .expect("a head runs")
}

/// Just enough JSON reading for info.json's pid (keeps this example's dependencies small).
mod serde_json_lite {
    pub struct Info {
        pub pid: u32,
    }
    pub fn parse(s: &str) -> Option<Info> {
        let i = s.find("\"pid\"")?;
        let rest = &s[i + 5..];
        let digits: String = rest
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(|c| c.is_ascii_digit())
            .collect();
        Some(Info {
            pid: digits.parse().ok()?,
        })
    }
}

fn driver_role(role: &str) {
    sunray::init().expect("connect");
    match role {
        "tasks" => {
            // warm up: start the workers
            sunray::get_all(&(0..200).map(|_| noop.remote()).collect::<Vec<_>>()).unwrap();
            // Five of each, as the machine is shared and noisy: the median and the range.
            let mut rates = Vec::new();
            for _ in 0..REPEATS {
                let n = 10_000;
                let t = Instant::now();
                let refs: Vec<_> = (0..n).map(|_| noop.remote()).collect();
                sunray::get_all(&refs).unwrap();
                rates.push(n as f64 / t.elapsed().as_secs_f64());
            }
            println!("THROUGHPUT {}", summary(rates, 0));
            let mut rtts = Vec::new();
            for _ in 0..REPEATS {
                let m = 1000;
                let t = Instant::now();
                for _ in 0..m {
                    noop.remote().get().unwrap();
                }
                rtts.push(t.elapsed().as_secs_f64() * 1e6 / m as f64);
            }
            println!("RTT_US {}", summary(rtts, 1));
            actor_figures(0.0);
        }
        "actors" => actor_figures(0.0),
        "actors-on-node" => actor_figures(1.0),
        "many" => {
            // `--tasks N`: N no-op tasks submitted at once, then gathered.
            let n: usize = std::env::var("BENCH_TASKS").unwrap().parse().unwrap();
            sunray::get_all(&(0..200).map(|_| noop.remote()).collect::<Vec<_>>()).unwrap();
            let t = Instant::now();
            let refs: Vec<_> = (0..n).map(|_| noop.remote()).collect();
            let submitted = t.elapsed().as_secs_f64();
            sunray::get_all(&refs).unwrap();
            let secs = t.elapsed().as_secs_f64();
            println!("MANY_RATE {:.0}", n as f64 / secs);
            println!("MANY_SUBMIT_S {submitted:.2}");
            println!("DRIVER_PEAK_KB {}", status_kb(std::process::id(), "VmHWM:"));
            drop(refs);
        }
        "rtt" => {
            // The round trip alone, longer, for profiling (`--role rtt` on a cluster).
            noop.remote().get().unwrap();
            let m = 20_000;
            let t = Instant::now();
            for _ in 0..m {
                noop.remote().get().unwrap();
            }
            println!("RTT_US {:.1}", t.elapsed().as_secs_f64() * 1e6 / m as f64);
        }
        "trainer" => {
            let cpus = sunray::cluster_resources().unwrap()["CPU"] as usize;
            let mut rounds = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                let refs: Vec<_> = (0..cpus).map(|_| sleep_ip.remote(1.0)).collect();
                let ips = sunray::get_all(&refs).unwrap();
                let distinct: std::collections::BTreeSet<_> = ips.into_iter().collect();
                assert!(distinct.len() >= 2, "every node takes part");
                rounds.push(t.elapsed().as_secs_f64());
            }
            println!("ROUND_S {:.4}", median(rounds[1..].to_vec()));
            println!("TASKS_PER_ROUND {cpus}");
        }
        "objects" => {
            // Made on the node with "maker", read by a task on the node with "reader",
            // then by this driver: each a fresh 1 GB object, as a first read of it is.
            let n: usize = 1_000_000_000;
            let on = |r: &str| sunray::TaskOptions::new().resource(r, 1.0);
            blob_len
                .options(on("reader"))
                .remote(blob.remote(1))
                .get()
                .unwrap();
            let (mut task_rates, mut driver_rates) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                let b = blob.options(on("maker")).remote(n);
                sunray::wait(std::slice::from_ref(&b), 1, None).unwrap();
                let t = Instant::now();
                let len = blob_len.options(on("reader")).remote(&b).get().unwrap();
                task_rates.push(len as f64 / t.elapsed().as_secs_f64() / 1e9);
                // The bytes alone (as a front end gets them, before any decoding).
                let t = Instant::now();
                let v = sunray::ext::client().unwrap().get(b.id(), None).unwrap();
                driver_rates.push(v.len() as f64 / t.elapsed().as_secs_f64() / 1e9);
            }
            println!("OBJECT_TASK_GBS {}", summary(task_rates, 2));
            println!("OBJECT_DRIVER_GBS {}", summary(driver_rates, 2));
        }
        _ => panic!("unknown role {role}"),
    }
}

/// The machine's floor for any round trip: two processes bouncing one byte over a Unix
/// socket, each blocked in `read` (a sunray round trip is four such one-way hops:
/// driver → head → worker → head → driver).
fn ping_pong_us(tmp: &Path) -> f64 {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    let path = tmp.join("pingpong.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--pong", path.to_str().unwrap()])
        .spawn()
        .unwrap();
    let (mut s, _) = listener.accept().unwrap();
    let mut b = [0u8; 1];
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        s.write_all(&b).unwrap();
        s.read_exact(&mut b).unwrap();
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    drop(s);
    child.wait().unwrap();
    us
}

/// The machine's floor for moving an object: 1 GB over loopback TCP between two
/// processes, into a fresh buffer, as a reader of an object gets it (GB/s).
fn tcp_copy_gbs() -> f64 {
    use std::io::{Read, Write};
    let n: usize = 1_000_000_000;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--tcp-send", &port, &n.to_string()])
        .spawn()
        .unwrap();
    let (mut s, _) = listener.accept().unwrap();
    let mut go = [0u8; 1];
    s.read_exact(&mut go).unwrap(); // the sender's buffer is made
    let t = Instant::now();
    s.write_all(&[1]).unwrap();
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).unwrap();
    let gbs = n as f64 / t.elapsed().as_secs_f64() / 1e9;
    child.wait().unwrap();
    gbs
}

fn tcp_send(port: &str, n: usize) {
    use std::io::{Read, Write};
    let data = vec![1u8; n];
    let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    s.write_all(&[1]).unwrap();
    let mut go = [0u8; 1];
    s.read_exact(&mut go).unwrap();
    s.write_all(&data).unwrap();
}

/// A head without CPUs and two nodes (127.0.0.2 with "maker", 127.0.0.3 with "reader"):
/// an object made on one and read on the other goes node to node.
fn object_cluster(tmp: &Path) -> String {
    let mut head = HEAD_ARGS.to_vec();
    *head.last_mut().expect("--num-cpus N") = "0";
    let o = sunray(tmp, &head);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let address = text.split_whitespace().nth(3).unwrap().to_string();
    for (ip, res) in [
        ("127.0.0.2", r#"{"maker": 1}"#),
        ("127.0.0.3", r#"{"reader": 1}"#),
    ] {
        let node = [
            "start",
            "--address",
            &address,
            "--node-ip-address",
            ip,
            "--num-cpus",
            "1",
            "--resources",
            res,
        ];
        sunray(tmp, &node);
    }
    sunray(tmp, &["status", "--wait-for-nodes", "3", "--timeout", "10"]);
    address
}

fn pong(path: &str) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    let mut b = [0u8; 1];
    while s.read_exact(&mut b).is_ok() {
        if s.write_all(&b).is_err() {
            break;
        }
    }
}

fn main() {
    sunray::serve_if_worker();
    let args: Vec<String> = std::env::args().collect();
    if args.len() > 2 && args[1] == "--role" {
        driver_role(&args[2]);
        return;
    }
    if args.len() > 2 && args[1] == "--pong" {
        pong(&args[2]);
        return;
    }
    if args.len() > 3 && args[1] == "--tcp-send" {
        tcp_send(&args[2], args[3].parse().unwrap());
        return;
    }
    if args.len() > 1 && args[1] == "--objects" {
        let tmp = PathBuf::from(format!("/tmp/srb-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        object_figures(&tmp);
        std::fs::remove_dir_all(&tmp).ok();
        return;
    }
    if args.len() > 2 && args[1] == "--tasks" {
        many_tasks(args[2].parse().expect("--tasks N"));
        return;
    }
    let tmp = PathBuf::from(format!("/tmp/srb-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();

    // 1. start-up: `sunray start --head` returns once the cluster takes work
    let mut starts = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        sunray(&tmp, HEAD_ARGS);
        starts.push(t.elapsed().as_secs_f64() * 1000.0);
        sunray(&tmp, &["stop"]);
    }
    println!(
        "sunray start --head to ready:      {:8.1} ms (median of 7)",
        median(starts)
    );

    // 2. a head and one joined node, each with 2 CPUs, as in the Ray reference
    let address = two_node_cluster(&tmp);
    std::thread::sleep(Duration::from_millis(300)); // let start-up allocations settle
    let pids = session_pids(&tmp);
    let rss: u64 = pids.iter().map(|p| rss_kb(*p)).sum();
    println!(
        "idle RSS, head + node agent:       {:8.1} MB ({} processes)",
        rss as f64 / 1024.0,
        pids.len()
    );

    let me = std::env::current_exe().unwrap();
    let run_with = |role: &str, env: &[(&str, &str)]| -> String {
        let o = Command::new(&me)
            .args(["--role", role])
            .env("SUNRAY_TMPDIR", &tmp)
            .env("SUNRAY_ADDRESS", &address)
            .envs(env.iter().copied())
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(o.status.success(), "driver {role} failed");
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let run = |role: &str| run_with(role, &[]);
    let get = |out: &str, key: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let out = run("tasks");
    println!(
        "no-op tasks, 10,000 submitted then gathered: {} tasks/s (median of {REPEATS}, range)",
        get(&out, "THROUGHPUT")
    );
    println!(
        "round trip, get(f.remote()) x 1,000:  {} us mean (median of {REPEATS}, range)",
        get(&out, "RTT_US")
    );
    println!(
        "actor call round trip (direct calls), get(a.noop().remote()) x 1,000: {} us mean (median of {REPEATS}, range)",
        get(&out, "ACTOR_RTT_US")
    );
    println!(
        "actor calls, 10,000 submitted then gathered: {} calls/s (median of {REPEATS}, range)",
        get(&out, "ACTOR_THROUGHPUT")
    );
    let routed = run_with("actors", &[("SUNRAY_DIRECT_CALLS", "0")]);
    println!(
        "  the same through the head (SUNRAY_DIRECT_CALLS=0): {} us round trip, {} calls/s",
        get(&routed, "ACTOR_RTT_US"),
        get(&routed, "ACTOR_THROUGHPUT")
    );
    println!(
        "machine floor: process ping-pong:     {:>8.1} us round trip (blocking Unix socket)",
        ping_pong_us(&tmp)
    );
    let out = run("trainer");
    println!(
        "simple trainer round, {} one-second tasks on 2 nodes: {} s (median of rounds 2-5)",
        get(&out, "TASKS_PER_ROUND"),
        get(&out, "ROUND_S")
    );
    stop_cluster(&tmp);

    // 3. a 1 GB object node to node, and into the driver, against plain loopback TCP
    object_figures(&tmp);
    std::fs::remove_dir_all(&tmp).ok();
}
