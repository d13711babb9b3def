//! Shared by the integration tests: a cluster of real processes on loopback addresses.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const SUNRAY: &str = env!("CARGO_BIN_EXE_it_sunray");
pub const DRIVER: &str = env!("CARGO_BIN_EXE_it_driver");

pub fn fresh_tmp() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let p = PathBuf::from(format!(
        "/tmp/srt-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::remove_dir_all(&p).ok();
    std::fs::create_dir_all(&p).unwrap();
    p
}

pub struct Cluster {
    pub tmp: PathBuf,
    pub address: String,
    pub head: Child,
    pub nodes: Vec<(String, Child)>,
}

/// Reads stdout lines of `child` until one starts with `prefix`; returns it.
pub fn wait_line(child: &mut Child, prefix: &str) -> String {
    let out = child.stdout.take().expect("stdout piped");
    let mut r = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        let n = r.read_line(&mut line).unwrap();
        assert!(n > 0, "process ended before printing {prefix:?}");
        if line.starts_with(prefix) {
            // keep draining in the background so the child never blocks on a full pipe
            std::thread::spawn(move || {
                let mut sink = String::new();
                while r.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                    sink.clear();
                }
            });
            return line.trim().to_string();
        }
    }
}

/// Reads stdout lines of `child` until one contains `needle`.
pub fn wait_line_containing(child: &mut Child, needle: &str) -> String {
    let mut r = BufReader::new(child.stdout.take().expect("stdout piped"));
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            r.read_line(&mut line).unwrap() > 0,
            "ended before printing {needle:?}"
        );
        if line.contains(needle) {
            return line.trim().to_string();
        }
    }
}

impl Cluster {
    /// A head with `head_cpus` CPUs on 127.0.0.1 and nodes (ip, cpus, gpus).
    pub fn start(head_cpus: f64, nodes: &[(&str, f64, u32)]) -> Cluster {
        Self::start_with_env(head_cpus, nodes, &[])
    }

    /// [`Cluster::start`] with extra environment for the head and every node.
    pub fn start_with_env(
        head_cpus: f64,
        nodes: &[(&str, f64, u32)],
        env: &[(&str, &str)],
    ) -> Cluster {
        let tmp = fresh_tmp();
        let mut head = Command::new(SUNRAY)
            .args([
                "start",
                "--head",
                "--block",
                "--port",
                "0",
                "--node-ip-address",
                "127.0.0.1",
            ])
            .args(["--num-cpus", &head_cpus.to_string(), "--num-gpus", "0"])
            .env("SUNRAY_TMPDIR", &tmp)
            .envs(env.iter().copied())
            .env_remove("SUNRAY_ADDRESS")
            .env_remove("SUNRAY_TOKEN")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(tmp.join("head.err")).unwrap())
            .spawn()
            .unwrap();
        let line = wait_line(&mut head, "sunray head started:");
        let address = line
            .split_whitespace()
            .nth(3)
            .expect("address in the ready line")
            .to_string();
        let mut c = Cluster {
            tmp,
            address,
            head,
            nodes: Vec::new(),
        };
        for (ip, cpus, gpus) in nodes {
            c.add_node_with_env(ip, *cpus, *gpus, env);
        }
        let st = c
            .sunray(&[
                "status",
                "--wait-for-nodes",
                &(nodes.len() + 1).to_string(),
                "--timeout",
                "30",
            ])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        c
    }

    pub fn add_node(&mut self, ip: &str, cpus: f64, gpus: u32) {
        self.add_node_with_env(ip, cpus, gpus, &[])
    }

    pub fn add_node_with_env(&mut self, ip: &str, cpus: f64, gpus: u32, env: &[(&str, &str)]) {
        self.add_node_with(ip, cpus, gpus, env, &[])
    }

    /// A node with custom resources (JSON, as `sunray start --resources` takes them).
    pub fn add_node_with_resources(&mut self, ip: &str, cpus: f64, resources: &str) {
        self.add_node_with(ip, cpus, 0, &[], &["--resources", resources])
    }

    fn add_node_with(
        &mut self,
        ip: &str,
        cpus: f64,
        gpus: u32,
        env: &[(&str, &str)],
        extra: &[&str],
    ) {
        let mut n = self
            .sunray(&[
                "start",
                "--address",
                &self.address.clone(),
                "--block",
                "--node-ip-address",
                ip,
            ])
            .args([
                "--num-cpus",
                &cpus.to_string(),
                "--num-gpus",
                &gpus.to_string(),
            ])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.tmp.join(format!("node-{ip}.err"))).unwrap())
            .spawn()
            .unwrap();
        wait_line(&mut n, "sunray node joined");
        self.nodes.push((ip.to_string(), n));
    }

    pub fn sunray(&self, args: &[&str]) -> Command {
        let mut c = Command::new(SUNRAY);
        c.args(args)
            .env("SUNRAY_TMPDIR", &self.tmp)
            .env_remove("SUNRAY_ADDRESS")
            .env_remove("SUNRAY_TOKEN")
            .env_remove("CUDA_VISIBLE_DEVICES");
        c
    }

    pub fn driver_cmd(&self, args: &[&str]) -> Command {
        self.program(DRIVER, args)
    }

    /// Runs `bin` as a driver of this cluster.
    pub fn program(&self, bin: &str, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.args(args)
            .env("SUNRAY_TMPDIR", &self.tmp)
            .env("SUNRAY_ADDRESS", &self.address)
            .env_remove("SUNRAY_TOKEN")
            .env_remove("CUDA_VISIBLE_DEVICES");
        c
    }

    /// This user's session directory of the cluster (`$SUNRAY_TMPDIR/sunray-<uid>`).
    pub fn base(&self) -> PathBuf {
        session_base(&self.tmp)
    }

    /// The cluster's token, from the head's session directory.
    pub fn token(&self) -> String {
        let head = self.base().join(format!("head-{}", self.head.id()));
        std::fs::read_to_string(head.join("token"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn driver(&self, args: &[&str]) -> Output {
        run_ok(self.driver_cmd(args))
    }
}

/// The `sunray` command with `SUNRAY_TMPDIR` = `tmp` and no cluster from the environment.
pub fn sunray_in(tmp: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(SUNRAY);
    c.args(args)
        .env("SUNRAY_TMPDIR", tmp)
        .env_remove("SUNRAY_ADDRESS")
        .env_remove("SUNRAY_TOKEN");
    c
}

/// Where sunray keeps this user's sessions when `SUNRAY_TMPDIR` is `tmp`.
pub fn session_base(tmp: &std::path::Path) -> PathBuf {
    tmp.join(format!("sunray-{}", unsafe { libc::getuid() }))
}

/// Runs `cmd` to its end; it must succeed.
pub fn run_ok(mut cmd: Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, n) in &mut self.nodes {
            let _ = n.kill();
            let _ = n.wait();
        }
        let _ = self.head.kill();
        let _ = self.head.wait();
        std::fs::remove_dir_all(&self.tmp).ok();
    }
}

pub fn lines<'a>(out: &'a Output, tag: &str) -> Vec<&'a str> {
    std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix(tag).map(str::trim))
        .collect()
}

/// Processes (not zombies) whose environment names this test's session directory.
pub fn processes_of(tmp: &std::path::Path) -> Vec<u32> {
    let needle = format!("SUNRAY_TMPDIR={}", tmp.display());
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().starts_with('Z'))
            .unwrap_or(true);
        if !zombie && env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// Bytes the process read and wrote through system calls (sockets included).
pub fn traffic(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .filter(|l| l.starts_with("rchar:") || l.starts_with("wchar:"))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .sum()
}
