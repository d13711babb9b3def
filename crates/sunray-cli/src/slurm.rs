//! `sunray slurm …`: a cluster over a Slurm allocation in one command. The process that
//! runs `slurm run` (the batch script's, on the first node) supervises everything it
//! starts: the head (a child `sunray start --head`), one node agent on every other node
//! (one `srun --overlap` step), and the driver; when the driver ends, fails, or the job
//! is cancelled, it stops them all.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use sunray_proto::Query;
use sunray_runtime::detect;
use sunray_runtime::driver::query;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Subcommand)]
pub enum SlurmCmd {
    /// Start the cluster on the allocation's nodes, run the driver, stop everything.
    Run(RunArgs),
    /// Start the cluster on the allocation's nodes and return (interactive allocations).
    Up(ClusterArgs),
    /// Stop the cluster `sunray slurm up` started in this allocation.
    Down,
    /// Submit a job whose nodes join a running cluster.
    AddNodes(AddNodesArgs),
    /// Internal: the node agent `slurm run` starts on each node with srun.
    #[command(hide = true)]
    Node(NodeArgs),
    /// Internal: the background supervisor of `slurm up`.
    #[command(hide = true)]
    Supervise(ClusterArgs),
}

#[derive(Args, Clone)]
pub struct ClusterArgs {
    /// Port of the head (default: a free one, so that jobs sharing a node do not collide).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// CPUs each node offers (default: the allocation's, SLURM_CPUS_ON_NODE).
    #[arg(long)]
    num_cpus: Option<f64>,
    /// GPUs each node offers (default: the ones Slurm gave: CUDA_VISIBLE_DEVICES, else
    /// SLURM_GPUS_ON_NODE).
    #[arg(long)]
    num_gpus: Option<u32>,
    /// The head's address for the other nodes (default: the IPv4 address of the
    /// interface that reaches them).
    #[arg(long = "node-ip-address", conflicts_with = "interface")]
    node_ip_address: Option<IpAddr>,
    /// Use this interface's IPv4 address for the head (e.g. ib0).
    #[arg(long)]
    interface: Option<String>,
    /// Seconds to wait for every node to join.
    #[arg(long, default_value_t = 120.0)]
    join_timeout: f64,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The driver and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<OsString>,
}

#[derive(Args)]
pub struct NodeArgs {
    #[arg(long)]
    address: String,
    #[arg(long)]
    num_cpus: Option<f64>,
    #[arg(long)]
    num_gpus: Option<u32>,
}

#[derive(Args)]
pub struct AddNodesArgs {
    /// How many nodes to add.
    #[arg(long)]
    nodes: u32,
    /// Head of the cluster to grow (default: $SUNRAY_ADDRESS, or the head on this host).
    #[arg(long)]
    address: Option<String>,
    /// Options for sbatch (after `--`), e.g. `-- --time 1:00:00 --partition gpu`.
    #[arg(last = true)]
    sbatch: Vec<String>,
}

pub fn run(cmd: SlurmCmd) -> anyhow::Result<()> {
    match cmd {
        SlurmCmd::Node(a) => node(a),
        SlurmCmd::AddNodes(a) => add_nodes(a),
        SlurmCmd::Down => down(),
        SlurmCmd::Up(_) => up(),
        SlurmCmd::Run(a) => {
            let code = supervise(a.cluster, Some(a.command), None)?;
            std::process::exit(code)
        }
        SlurmCmd::Supervise(a) => {
            let ready = std::io::stdout();
            supervise(a, None, Some(ready)).map(|_| ())
        }
    }
}

/// The allocation this process runs in.
struct Job {
    id: String,
    nodes: Vec<String>,
    this: String,
}

fn job() -> anyhow::Result<Job> {
    let id = std::env::var("SLURM_JOB_ID").map_err(|_| {
        anyhow::anyhow!(
            "not inside a Slurm allocation (SLURM_JOB_ID is not set): run this in an sbatch script or an salloc shell"
        )
    })?;
    let list = std::env::var("SLURM_JOB_NODELIST")
        .or_else(|_| std::env::var("SLURM_NODELIST"))
        .context("SLURM_JOB_NODELIST is not set")?;
    let out = std::process::Command::new("scontrol")
        .args(["show", "hostnames", &list])
        .output()
        .context("cannot run `scontrol show hostnames` (is Slurm's scontrol on PATH?)")?;
    if !out.status.success() {
        bail!(
            "scontrol show hostnames {list}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let nodes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    let this = std::env::var("SLURMD_NODENAME").unwrap_or_else(|_| detect::hostname());
    Ok(Job { id, nodes, this })
}

/// Per-user, per-job directory for session files and logs: short, so that Unix socket
/// paths inside it stay well under the 108-byte limit.
/// `j<job>` in this user's sunray directory (see `session::base_dir`), which is created
/// if needed; the job's head keeps its session inside.
fn job_dir(job: &str) -> anyhow::Result<PathBuf> {
    Ok(sunray_runtime::session::ensure_base_dir()?.join(format!("j{job}")))
}

fn env_cpus() -> Option<f64> {
    ["SLURM_CPUS_ON_NODE", "SLURM_CPUS_PER_TASK"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse::<f64>().ok())
}

/// GPUs of this node's allocation when Slurm gave no CUDA_VISIBLE_DEVICES (then the
/// runtime reads the ids from it).
fn env_gpus() -> Option<u32> {
    if std::env::var_os("CUDA_VISIBLE_DEVICES").is_some() {
        return None;
    }
    std::env::var("SLURM_GPUS_ON_NODE").ok()?.parse().ok()
}

fn head_ip(a: &ClusterArgs, others: &[String]) -> anyhow::Result<IpAddr> {
    if let Some(ip) = a.node_ip_address {
        return Ok(ip);
    }
    if let Some(name) = &a.interface {
        return detect::ipv4_addresses()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, ip)| IpAddr::V4(ip))
            .ok_or_else(|| anyhow::anyhow!("interface {name} has no IPv4 address on this node"));
    }
    // The address of the interface the route to another node goes through.
    for other in others {
        if let Some(ip) = detect::local_ip_towards(&format!("{other}:9")) {
            if !ip.is_loopback() {
                return Ok(ip);
            }
        }
    }
    Ok(detect::default_ip())
}

/// Starts the head, the node agents and the driver (if any); returns the driver's exit
/// code. With `ready`, writes the address there once every node has joined, then waits
/// for SIGTERM (`slurm down`).
fn supervise(
    a: ClusterArgs,
    driver: Option<Vec<OsString>>,
    ready: Option<std::io::Stdout>,
) -> anyhow::Result<i32> {
    crate::init_logging("warn");
    let job = job()?;
    let dir = job_dir(&job.id)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let others: Vec<String> = job
        .nodes
        .iter()
        .filter(|n| **n != job.this)
        .cloned()
        .collect();
    let ip = head_ip(&a, &others)?;
    let exe = crate::self_exe();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        std::fs::write(dir.join("supervisor.pid"), std::process::id().to_string())?;
        let mut head = start_head(&exe, &a, ip, &dir).await?;
        let token = std::fs::read_to_string(head.session.join("token"))
            .with_context(|| format!("cannot read the token in {}", head.session.display()))?;
        let mut agents = if others.is_empty() {
            None
        } else {
            Some(start_agents(
                &exe,
                &a,
                &head.address,
                &token,
                &others,
                &dir,
            )?)
        };
        eprintln!(
            "sunray: head {} on {} ({} nodes); logs in {}",
            head.address,
            job.this,
            job.nodes.len(),
            dir.display()
        );
        let joined = wait_for_nodes(
            &head.address,
            &token,
            job.nodes.len(),
            a.join_timeout,
            &mut agents,
            &dir,
        );
        let outcome: anyhow::Result<i32> = match joined.await {
            Err(e) => Err(e),
            Ok(()) => match (driver, ready) {
                (Some(cmd), _) => run_driver(&cmd, &head.address, &token).await,
                (None, Some(mut out)) => {
                    use std::io::Write;
                    writeln!(out, "READY {} {}", head.address, head.session.display())?;
                    out.flush()?;
                    crate::redirect_output(&dir.join("supervisor.log"));
                    crate::shutdown_signal().await;
                    Ok(0)
                }
                (None, None) => Ok(0),
            },
        };
        // Stop what this process started, whatever happened.
        if let Some(s) = agents.as_mut() {
            stop_child(s, Duration::from_secs(5)).await;
        }
        stop_child(&mut head.child, Duration::from_secs(5)).await;
        let _ = std::fs::remove_file(dir.join("supervisor.pid"));
        outcome
    })
}

struct Head {
    child: Child,
    address: String,
    session: PathBuf,
}

fn dies_with_parent(cmd: &mut Command) {
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

async fn start_head(exe: &Path, a: &ClusterArgs, ip: IpAddr, dir: &Path) -> anyhow::Result<Head> {
    let mut cmd = Command::new(exe);
    cmd.args(["start", "--head", "--block", "--port", &a.port.to_string()])
        .args(["--node-ip-address", &ip.to_string()])
        .env("SUNRAY_TMPDIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("head.log"))?);
    if let Some(c) = a.num_cpus.or_else(env_cpus) {
        cmd.args(["--num-cpus", &c.to_string()]);
    }
    if let Some(g) = a.num_gpus.or_else(env_gpus) {
        cmd.args(["--num-gpus", &g.to_string()]);
    }
    dies_with_parent(&mut cmd);
    let mut child = cmd.spawn().context("cannot start the sunray head")?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let (mut address, mut session) = (None, None);
    while let Some(l) = lines.next_line().await? {
        if let Some(rest) = l.strip_prefix("sunray head started: ") {
            address = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some(rest) = l.trim().strip_prefix("session directory: ") {
            session = rest.split_whitespace().next().map(PathBuf::from);
        }
        if address.is_some() && session.is_some() {
            break;
        }
    }
    match (address, session) {
        (Some(address), Some(session)) => {
            // Keep draining its stdout so that it never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            Ok(Head {
                child,
                address,
                session,
            })
        }
        _ => bail!(
            "the sunray head did not start: {}",
            crate::child_error(&std::fs::read_to_string(dir.join("head.log")).unwrap_or_default())
        ),
    }
}

/// One srun step with a node agent on each other node; its output (every node's log,
/// labelled) goes to `nodes.log` in the job directory on this node.
fn start_agents(
    exe: &Path,
    a: &ClusterArgs,
    address: &str,
    token: &str,
    others: &[String],
    dir: &Path,
) -> anyhow::Result<Child> {
    let n = others.len().to_string();
    let mut cmd = Command::new("srun");
    cmd.args([
        "--overlap",
        "--nodes",
        &n,
        "--ntasks",
        &n,
        "--ntasks-per-node",
        "1",
    ])
    .args([
        "--nodelist",
        &others.join(","),
        "--kill-on-bad-exit=0",
        "--label",
    ])
    .arg(exe)
    .args(["slurm", "node", "--address", address])
    .env("SUNRAY_TOKEN", token)
    .env("SUNRAY_TMPDIR", dir)
    .stdin(Stdio::null())
    .stdout(std::fs::File::create(dir.join("nodes.log"))?)
    .stderr(Stdio::from(
        std::fs::File::options()
            .append(true)
            .open(dir.join("nodes.log"))?,
    ));
    if let Some(c) = a.num_cpus {
        cmd.args(["--num-cpus", &c.to_string()]);
    }
    if let Some(g) = a.num_gpus {
        cmd.args(["--num-gpus", &g.to_string()]);
    }
    dies_with_parent(&mut cmd);
    cmd.spawn()
        .context("cannot run srun to start the node agents (is Slurm's srun on PATH?)")
}

async fn wait_for_nodes(
    address: &str,
    token: &str,
    n: usize,
    timeout: f64,
    agents: &mut Option<Child>,
    dir: &Path,
) -> anyhow::Result<()> {
    let wait = query(address, token, Query::WaitForNodes { nodes: n as u32 });
    let agents_exit = async {
        match agents.as_mut() {
            Some(c) => c.wait().await.ok(),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = tokio::time::timeout(Duration::from_secs_f64(timeout), wait) => match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!("cluster at {address}: {e}")),
            Err(_) => bail!(
                "not every node joined within {timeout} s; node logs: {}\n{}",
                dir.join("nodes.log").display(),
                tail(&dir.join("nodes.log"))
            ),
        },
        status = agents_exit => bail!(
            "the node agents' srun step ended ({status:?}) before every node joined:\n{}",
            tail(&dir.join("nodes.log"))
        ),
    }
}

fn tail(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn run_driver(cmd: &[OsString], address: &str, token: &str) -> anyhow::Result<i32> {
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..])
        .env("SUNRAY_ADDRESS", address)
        // The name the seed's launcher (and many Ray sbatch scripts) export it under.
        .env("ip_head", address)
        .env("SUNRAY_TOKEN", token);
    dies_with_parent(&mut c);
    let mut child = c
        .spawn()
        .with_context(|| format!("cannot run the driver {:?}", cmd[0]))?;
    tokio::select! {
        status = child.wait() => {
            let s = status?;
            Ok(s.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)))
        }
        _ = crate::shutdown_signal() => {
            eprintln!("sunray: stopping (signal received)");
            stop_child(&mut child, Duration::from_secs(3)).await;
            Ok(143)
        }
    }
}

/// SIGTERM, then SIGKILL after `grace`.
async fn stop_child(c: &mut Child, grace: Duration) {
    if let Some(pid) = c.id() {
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        if tokio::time::timeout(grace, c.wait()).await.is_ok() {
            return;
        }
    }
    let _ = c.kill().await;
}

/// `slurm up`: the supervisor runs in the background; this returns once it is ready.
fn up() -> anyhow::Result<()> {
    let job = job()?;
    // The same command line, with `supervise` for `up`: the flags carry over.
    let mut args: Vec<String> = crate::self_args();
    let at = args.iter().position(|x| x == "up").expect("subcommand up");
    args[at] = "supervise".into();
    let rest = crate::spawn_detached(&args, None)?.map_err(|err| {
        anyhow::anyhow!("the cluster did not start: {}", crate::child_error(&err))
    })?;
    let mut parts = rest.split_whitespace();
    let (address, session) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    println!(
        "sunray cluster up on {} nodes of job {}: {address}",
        job.nodes.len(),
        job.id
    );
    println!("  export SUNRAY_ADDRESS={address} SUNRAY_TOKEN=$(cat {session}/token)");
    println!("  stop it: sunray slurm down");
    Ok(())
}

fn down() -> anyhow::Result<()> {
    let job = job()?;
    let dir = job_dir(&job.id)?;
    let pidfile = dir.join("supervisor.pid");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no sunray cluster runs in job {} (no {})",
                job.id,
                pidfile.display()
            )
        })?;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    for _ in 0..200 {
        if unsafe { libc::kill(pid, 0) } != 0 || !pidfile.exists() {
            println!("sunray cluster of job {} stopped", job.id);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the supervisor (pid {pid}) did not stop within 10 s")
}

/// The hidden node agent: `sunray start --address … --block` with the allocation's
/// resources on this node.
fn node(a: NodeArgs) -> anyhow::Result<()> {
    let cpus = a.num_cpus.or_else(env_cpus);
    let gpus = a.num_gpus.or_else(env_gpus);
    crate::start::run(crate::start::StartArgs::node(a.address, cpus, gpus))
}

fn add_nodes(a: AddNodesArgs) -> anyhow::Result<()> {
    if a.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let address = crate::resolve_address(a.address)?;
    let token = crate::resolve_token(None, None, &address)?;
    let exe = crate::self_exe();
    let dir = match std::env::var("SLURM_JOB_ID") {
        Ok(j) => job_dir(&j)?,
        Err(_) => sunray_runtime::session::ensure_base_dir()?,
    };
    std::fs::create_dir_all(&dir)?;
    let script = dir.join(format!("add-nodes-{}.sh", std::process::id()));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# Written by `sunray slurm add-nodes`: one node agent per node of this job joins {address}.\nexec srun --ntasks-per-node=1 --kill-on-bad-exit=0 --label {} slurm node --address {address}\n",
            exe.display()
        ),
    )?;
    let out = std::process::Command::new("sbatch")
        .arg("--parsable")
        .args(["--nodes", &a.nodes.to_string(), "--ntasks-per-node", "1"])
        .args(["--job-name", "sunray-nodes"])
        .arg("--export=ALL")
        .args(&a.sbatch)
        .arg(&script)
        .env("SUNRAY_TOKEN", token)
        .output()
        .context("cannot run sbatch (is Slurm's sbatch on PATH?)")?;
    if !out.status.success() {
        bail!(
            "sbatch failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    println!(
        "submitted job {id}: {} node(s) will join {address} when it starts",
        a.nodes
    );
    Ok(())
}
