//! A driver program for the integration tests: each subcommand exercises one behaviour
//! and prints what the test checks, one fact per line.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[sunray::remote]
fn where_am_i(sleep_s: f64) -> String {
    std::thread::sleep(Duration::from_secs_f64(sleep_s));
    sunray::get_runtime_context().node_ip
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Returns (node ip, start, end, CUDA_VISIBLE_DEVICES, gpu ids of the context).
#[sunray::remote]
fn interval(sleep_s: f64) -> (String, f64, f64, String, Vec<String>) {
    let start = now();
    std::thread::sleep(Duration::from_secs_f64(sleep_s));
    let ctx = sunray::get_runtime_context();
    (
        ctx.node_ip,
        start,
        now(),
        std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "<unset>".into()),
        ctx.gpu_ids,
    )
}

#[sunray::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[sunray::remote]
fn fails(msg: String) -> Result<i64, String> {
    Err(msg)
}

#[sunray::remote]
fn panics(msg: String) -> i64 {
    panic!("{msg}")
}

/// Announces where it runs, then works long enough for the test to kill its node.
#[sunray::remote(max_retries = 2)]
fn long_task(seconds: f64) -> String {
    let ip = sunray::get_runtime_context().node_ip;
    println!("STARTED {ip}");
    std::thread::sleep(Duration::from_secs_f64(seconds));
    ip
}

/// What a task can see of secrets: its environment as the process, `/proc` and a
/// child process see it, and (playing an attacker who got hold of it) its job's
/// credential and job.
#[sunray::remote]
fn secrets_seen() -> (String, String, String, String, u32) {
    let env: String = std::env::vars()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    let proc_env = std::fs::read("/proc/self/environ")
        .map(|b| String::from_utf8_lossy(&b).replace('\0', "\n"))
        .unwrap_or_default();
    let child = std::process::Command::new("env")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("env failed: {e}"));
    print!("{env}");
    let (_, credential, job) = sunray_runtime::worker::head_of_this_worker().unwrap();
    (env, proc_env, child, credential, job)
}

/// A short task (pipelined by the head once it knows they are short).
#[sunray::remote]
fn square(i: u64, sleep_us: u64) -> (u64, String) {
    std::thread::sleep(Duration::from_micros(sleep_us));
    (i * i, sunray::get_runtime_context().node_ip)
}

/// Kills its own worker the first time it runs (`marker` records that it did).
#[sunray::remote]
fn square_or_die(i: u64, marker: String) -> (u64, String) {
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker)
        .is_ok()
    {
        std::process::exit(3);
    }
    (i * i, sunray::get_runtime_context().node_ip)
}

/// What CUDA itself sees from inside a task (GPU machines only; needs python3 + torch).
#[sunray::remote]
fn cuda_probe() -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import torch; n=torch.cuda.device_count(); print(n, torch.cuda.get_device_name(0) if n else '-')"])
        .output();
    let seen = match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Err(e) => format!("python3 failed: {e}"),
    };
    format!(
        "CUDA_VISIBLE_DEVICES=[{}] gpu_ids={:?} torch sees: {seen}",
        std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default(),
        sunray::get_runtime_context().gpu_ids
    )
}

#[sunray::remote]
fn exits() -> i64 {
    std::process::exit(3)
}

#[sunray::remote]
fn shout(word: String) {
    println!("{word}");
}

#[sunray::remote]
fn kilobyte() -> Vec<u8> {
    vec![7; 1000]
}

fn main() {
    // A driver whose executable no node can see: it deletes its own file first.
    if std::env::args().nth(1).as_deref() == Some("selfdelete") && !sunray_is_worker() {
        let exe = std::env::current_exe().unwrap();
        std::fs::remove_file(&exe).unwrap();
        println!("DELETED {}", exe.display());
    }
    if let Err(e) = sunray::init() {
        eprintln!("init failed: {e}");
        std::process::exit(2);
    }
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(8);
    match args.get(1).map(String::as_str) {
        Some("burst") => {
            let sleep_us: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
            let refs: Vec<_> = (0..n as u64).map(|i| square.remote(i, sleep_us)).collect();
            sunray::get_all(&refs[..n / 10]).unwrap();
            println!("PROGRESS");
            use std::io::Write;
            std::io::stdout().flush().unwrap();
            let mut per_ip: std::collections::BTreeMap<String, usize> = Default::default();
            for (i, (sq, ip)) in sunray::get_all(&refs).unwrap().into_iter().enumerate() {
                assert_eq!(sq, (i * i) as u64, "result of task {i}");
                *per_ip.entry(ip).or_default() += 1;
            }
            println!("CHECKED {n}");
            for (ip, k) in per_ip {
                println!("RAN {ip} {k}");
            }
        }
        Some("burst_die") => {
            // Like burst, with task n/2 killing its worker once (path in argument 3).
            let marker = args.get(3).cloned().expect("a marker path");
            let refs: Vec<_> = (0..n as u64)
                .map(|i| match i == n as u64 / 2 {
                    true => square_or_die.remote(i, marker.clone()),
                    false => square.remote(i, 0),
                })
                .collect();
            for (i, (sq, _)) in sunray::get_all(&refs).unwrap().into_iter().enumerate() {
                assert_eq!(sq, (i * i) as u64, "result of task {i}");
            }
            println!("CHECKED {n}");
        }
        Some("hold") => {
            // Holds n results of 1 KB until a line on stdin, drops them, then idles
            // until stdin closes (so that only the client's own flush releases them).
            let refs: Vec<_> = (0..n).map(|_| kilobyte.remote()).collect();
            sunray::get_all(&refs).unwrap();
            println!("HELD {n}");
            use std::io::{BufRead, Write};
            std::io::stdout().flush().unwrap();
            let mut lines = std::io::stdin().lock().lines();
            lines.next();
            drop(refs);
            for _ in lines {}
        }
        Some("threads") => {
            // n sequential round trips on each of 4 threads at once, while this thread
            // asks for the cluster's state: each answer reaches the thread waiting for it.
            let workers: Vec<_> = (0..4u64)
                .map(|t| {
                    std::thread::spawn(move || {
                        for i in 0..n as u64 {
                            let (sq, _) = square.remote(t * 1000 + i, 0).get().unwrap();
                            assert_eq!(sq, (t * 1000 + i).pow(2));
                        }
                    })
                })
                .collect();
            for _ in 0..50 {
                assert!(!sunray::nodes().unwrap().is_empty());
            }
            for w in workers {
                w.join().unwrap();
            }
            println!("THREADS OK {}", 4 * n);
        }
        Some("shout") => {
            // A task's output reaches the driver while the driver waits for nothing.
            let _r = shout.remote("HELLO-FROM-TASK".to_string());
            use std::io::BufRead;
            for _ in std::io::stdin().lock().lines() {}
        }
        Some("spread") => {
            let refs: Vec<_> = (0..n).map(|_| where_am_i.remote(0.2)).collect();
            for ip in sunray::get_all(&refs).unwrap() {
                println!("IP {ip}");
            }
        }
        Some("intervals") => {
            let gpus: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0.0);
            let opts = sunray::TaskOptions::new().num_gpus(gpus);
            let refs: Vec<_> = (0..n)
                .map(|_| interval.options(opts.clone()).remote(0.3))
                .collect();
            for (ip, s, e, cvd, ids) in sunray::get_all(&refs).unwrap() {
                println!("INTERVAL {ip} {s:.6} {e:.6} [{cvd}] [{}]", ids.join(","));
            }
        }
        Some("deps") => {
            let a = add.remote(1, 2);
            let b = add.remote(&a, 10);
            let c = add.remote(&b, &a);
            let p = sunray::put(&100i64).unwrap();
            let d = add.remote(&p, &c);
            println!("RESULT {}", d.get().unwrap());
            let (ready, rest) = sunray::wait(
                &[a.clone(), b.clone(), c.clone()],
                3,
                Some(Duration::from_secs(10)),
            )
            .unwrap();
            println!("WAIT {} {}", ready.len(), rest.len());
        }
        Some("errors") => {
            let e = fails.remote("bad input 42".to_string()).get().unwrap_err();
            println!("ERR1 {e}");
            let p = panics.remote("kaboom".to_string());
            let e = p.get().unwrap_err();
            println!("ERR2 {e}");
            let dependent = add.remote(&p, 1);
            println!("ERR3 {}", dependent.get().unwrap_err());
            let ok = add.remote(2, 2).get().unwrap();
            println!("OK {ok}");
        }
        Some("worker_exit") => {
            let e = exits
                .options(sunray::TaskOptions::new().max_retries(1))
                .remote()
                .get()
                .unwrap_err();
            println!("ERR {e}");
        }
        Some("long") => {
            let r = long_task.remote(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3.0));
            println!("RESULT {}", r.get().unwrap());
        }
        Some("selfdelete") => {
            let refs: Vec<_> = (0..4).map(|_| where_am_i.remote(0.05)).collect();
            for ip in sunray::get_all(&refs).unwrap() {
                println!("IP {ip}");
            }
        }
        Some("cuda_probe") => {
            let gpu = cuda_probe
                .options(sunray::TaskOptions::new().num_gpus(1.0))
                .remote();
            let cpu = cuda_probe.remote();
            println!("GPU_TASK {}", gpu.get().unwrap());
            println!("CPU_TASK {}", cpu.get().unwrap());
        }
        Some("infeasible") => {
            let r = where_am_i
                .options(sunray::TaskOptions::new().resource("tpu", 1.0))
                .remote(0.0);
            match r.get_timeout(Some(Duration::from_millis(500))) {
                Err(sunray::Error::Timeout) => println!("WAITING"),
                other => println!("UNEXPECTED {other:?}"),
            }
        }
        Some("stranded") => {
            // Two tasks that need B: one runs (its node has one B), one waits behind it.
            // The test kills B's only node and reads the warning from stderr.
            let opts = sunray::TaskOptions::new().resource("B", 1.0).max_retries(2);
            let refs: Vec<_> = (0..2)
                .map(|_| long_task.options(opts.clone()).remote(60.0))
                .collect();
            match refs[0].get_timeout(Some(Duration::from_secs(30))) {
                Err(sunray::Error::Timeout) => println!("WAITING"),
                other => println!("UNEXPECTED {other:?}"),
            }
        }
        Some("bigput") => {
            // `bigput MB`: puts MB MiB, then reads it back.
            match sunray::put(&vec![7u8; n << 20]) {
                Err(e) => println!("PUT_ERR {e}"),
                Ok(r) => match r.get() {
                    Ok(v) => println!("GOT {}", v.len()),
                    Err(e) => println!("GET_ERR {e}"),
                },
            }
        }
        Some("bad_request") => {
            let e = where_am_i
                .options(sunray::TaskOptions::new().num_gpus(1.5))
                .remote(0.0)
                .get()
                .unwrap_err();
            println!("ERR {e}");
            // The driver's connection survives a refused task.
            println!("IP {}", where_am_i.remote(0.0).get().unwrap());
        }
        Some("secrets") => {
            let seen = secrets_seen.remote().get().unwrap();
            println!("SEEN {}", serde_json::to_string(&seen).unwrap());
        }
        Some("resources") => {
            println!("CLUSTER {:?}", sunray::cluster_resources().unwrap());
            println!("NODES {}", sunray::nodes().unwrap().len());
        }
        other => {
            eprintln!("unknown scenario {other:?}");
            std::process::exit(2);
        }
    }
}

fn sunray_is_worker() -> bool {
    std::env::var_os("SUNRAY_WORKER_SOCKET").is_some()
}
