use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{bail, Context};
use clap::Args;
use sunray_proto::{NodeRegistration, Resources};
use sunray_runtime::detect;
use sunray_runtime::local::{self, HeadOptions};
use sunray_runtime::node::{self, NodeConfig};
use sunray_runtime::session::{self, Session, SessionInfo};

#[derive(Args, Clone)]
pub struct StartArgs {
    /// Start a head (and the node agent of this host).
    #[arg(long, conflicts_with = "address")]
    head: bool,
    /// Join the head at HOST:PORT as a node.
    #[arg(long, required_unless_present = "head")]
    address: Option<String>,
    /// Port of the head (0: any free port).
    #[arg(long, default_value_t = 6379)]
    port: u16,
    /// Address other hosts reach this one by (default: detected).
    #[arg(long = "node-ip-address")]
    node_ip_address: Option<IpAddr>,
    /// CPUs this node offers (default: the CPUs of this host).
    #[arg(long)]
    num_cpus: Option<f64>,
    /// GPUs this node offers (default: CUDA_VISIBLE_DEVICES or the NVIDIA driver's list).
    #[arg(long)]
    num_gpus: Option<u32>,
    /// Custom resources, as JSON: '{"name": amount}'.
    #[arg(long)]
    resources: Option<String>,
    /// Cluster token (head: use this one instead of a new one; node: the head's).
    #[arg(long, env = "SUNRAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Stay in the foreground until signalled.
    #[arg(long)]
    block: bool,
    /// Internal: set in the background process that `start` without --block spawns.
    #[arg(long, hide = true)]
    daemon_child: bool,
}

impl StartArgs {
    /// A node agent joining `address` in the foreground (what `slurm node` runs).
    pub fn node(address: String, num_cpus: Option<f64>, num_gpus: Option<u32>) -> Self {
        StartArgs {
            head: false,
            address: Some(address),
            port: 6379,
            node_ip_address: None,
            num_cpus,
            num_gpus,
            resources: None,
            token: std::env::var("SUNRAY_TOKEN").ok(),
            block: true,
            daemon_child: false,
        }
    }
}

fn node_resources(a: &StartArgs) -> anyhow::Result<(Resources, Vec<String>)> {
    let detected = detect::gpu_ids();
    let gpu_ids = match a.num_gpus {
        Some(n) => detect::gpu_ids_for(n as usize, &detected),
        None => detected,
    };
    let custom: BTreeMap<String, f64> = match &a.resources {
        None => BTreeMap::new(),
        Some(s) => serde_json::from_str(s).with_context(|| {
            format!("--resources must be a JSON object of names to numbers, like '{{\"ssd\": 1}}'; got {s}")
        })?,
    };
    for (k, v) in &custom {
        if !(v.is_finite() && *v >= 0.0) {
            bail!("--resources: amount of {k} must be a non-negative number, got {v}");
        }
        if ["CPU", "GPU", "memory"].contains(&k.as_str()) {
            bail!("--resources: use --num-cpus / --num-gpus for {k}");
        }
    }
    let cpu = a.num_cpus.unwrap_or(detect::cpus() as f64);
    if !(cpu.is_finite() && cpu >= 0.0) {
        bail!("--num-cpus must be a non-negative number, got {cpu}");
    }
    Ok((
        Resources {
            cpu,
            gpu: gpu_ids.len() as f64,
            memory: 0.0,
            custom: custom.into_iter().collect(),
        },
        gpu_ids,
    ))
}

pub fn run(a: StartArgs) -> anyhow::Result<()> {
    if !a.block && !a.daemon_child {
        return spawn_background(&a);
    }
    crate::init_logging("info");
    let (resources, gpu_ids) = node_resources(&a)?;
    // One thread: the head and node agent are actors passing messages; on small nodes a
    // single thread avoids cross-thread wake-ups on every hop.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        if a.head {
            let node_ip = a.node_ip_address.unwrap_or_else(detect::default_ip);
            let started = local::start_head(HeadOptions {
                kind: "head".into(),
                bind_ip: a.node_ip_address,
                node_ip,
                port: a.port,
                token: a.token.clone(),
                resources: resources.clone(),
                gpu_ids,
            })
            .await?;
            announce(
                &format!(
                    "READY head {} {} {}",
                    started.address,
                    started.session.dir.display(),
                    resources_line(&resources)
                ),
                a.daemon_child,
                &started.session,
            );
            let shared = started.shared.clone();
            tokio::select! {
                _ = crate::shutdown_signal() => {}
                _ = shared.shutdown.notified() => {}
                _ = started.node => {}
            }
            started.session.remove();
        } else {
            let address = a.address.clone().expect("clap requires it");
            let token = crate::resolve_token(a.token.clone(), &address)?;
            let node_ip = match a.node_ip_address {
                Some(ip) => ip,
                None => detect::local_ip_towards(&address).unwrap_or_else(detect::default_ip),
            };
            let session = Session::create("node")?;
            let reg = NodeRegistration {
                ip: node_ip.to_string(),
                hostname: detect::hostname(),
                pid: std::process::id(),
                resources: resources.clone(),
                gpu_ids: gpu_ids.clone(),
            };
            let link = node::join(&address, a.node_ip_address, &token, reg).await?;
            session.write_info(&SessionInfo {
                kind: "node".into(),
                pid: std::process::id(),
                address: None,
                node_ip: node_ip.to_string(),
                started_unix_ms: session::now_unix_ms(),
            })?;
            announce(
                &format!(
                    "READY node {} {} {}",
                    address,
                    session.dir.display(),
                    resources_line(&resources)
                ),
                a.daemon_child,
                &session,
            );
            let cfg = NodeConfig {
                ip: node_ip.to_string(),
                token,
                session: session.clone(),
                total: sunray_runtime::head::to_request(&resources),
                gpu_ids,
                head_address: address,
            };
            tokio::select! {
                _ = crate::shutdown_signal() => {}
                r = node::run(cfg, link) => { r?; }
            }
            session.remove();
        }
        Ok::<(), anyhow::Error>(())
    })?;
    // Worker processes die with this process (PR_SET_PDEATHSIG).
    std::process::exit(0)
}

fn resources_line(r: &Resources) -> String {
    let mut s = format!("{} CPUs, {} GPUs", r.cpu, r.gpu);
    for (n, a) in &r.custom {
        s.push_str(&format!(", {a} {n}"));
    }
    s
}

/// In the background process: tells the parent it is ready, then detaches from the
/// parent's pipes. In the foreground: prints where the cluster is.
fn announce(line: &str, daemon: bool, session: &Session) {
    use std::io::Write;
    if daemon {
        println!("{line}");
        let _ = std::io::stdout().flush();
        // From now on the parent is gone: output goes to the session's log file.
        crate::redirect_output(&session.log_path("sunray"));
    } else {
        print_ready(line);
    }
}

/// Prints how to use the cluster; a closed stdout (`| head -1`) is no error: the
/// cluster runs either way.
fn print_ready(line: &str) {
    use std::io::Write;
    let parts: Vec<&str> = line.splitn(5, ' ').collect();
    let (kind, addr, dir, res) = (parts[1], parts[2], parts[3], parts.get(4).unwrap_or(&""));
    let text = if kind == "head" {
        format!(
            "sunray head started: {addr} ({res})\n  session directory: {dir} (token, logs)\n  join a node:       sunray start --address {addr}\n  from another host: SUNRAY_TOKEN=$(cat {dir}/token) sunray start --address {addr}\n  run a driver:      SUNRAY_ADDRESS={addr} <your program>\n  status / stop:     sunray status   /   sunray stop\n"
        )
    } else {
        format!("sunray node joined {addr} ({res}); session directory {dir}\n")
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Starts `sunray start … --daemon-child` in a new session and returns once it is ready.
fn spawn_background(a: &StartArgs) -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    args.push("--daemon-child".into());
    match crate::spawn_detached(&args)? {
        Ok(ready) => {
            print_ready(&format!("READY {ready}"));
            Ok(())
        }
        Err(err) => bail!(
            "the sunray {} did not start:\n{err}",
            if a.head { "head" } else { "node" }
        ),
    }
}
