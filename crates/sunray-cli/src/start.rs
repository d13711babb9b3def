use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{bail, Context};
use clap::Args;
use sunray_proto::{NodeRegistration, Resources};
use sunray_runtime::detect;
use sunray_runtime::local::{self, HeadOptions};
use sunray_runtime::node::{self, NodeConfig};
use sunray_runtime::session::{Session, SessionInfo};

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
    #[arg(long, allow_negative_numbers = true, value_parser = parse_cpus)]
    num_cpus: Option<f64>,
    /// GPUs this node offers (default: CUDA_VISIBLE_DEVICES or the NVIDIA driver's list).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_gpus)]
    num_gpus: Option<u32>,
    /// Custom resources, as JSON: '{"name": amount}'.
    #[arg(long)]
    resources: Option<String>,
    /// Cluster token (head: use this one instead of a new one; node: the head's). Other
    /// users can read a command line: prefer --token-file or SUNRAY_TOKEN.
    #[arg(long, env = "SUNRAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the cluster token from this file (as --token; it wins over SUNRAY_TOKEN).
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Seconds of silence after which a peer counts as gone: the head declares a node
    /// dead, a node gives up on its head.
    #[arg(long, env = "SUNRAY_HEARTBEAT_TIMEOUT", value_parser = parse_timeout)]
    heartbeat_timeout: Option<f64>,
    /// Head: also serve the dashboard (as `sunray dashboard` does) on this port, from
    /// the head's process (its own thread: the head's loop never waits on it).
    #[cfg(feature = "dashboard")]
    #[arg(long, requires = "head")]
    dashboard_port: Option<u16>,
    /// The dashboard's listening address: loopback unless asked (reach it with
    /// `ssh -L`).
    #[cfg(feature = "dashboard")]
    #[arg(long, requires = "dashboard_port", default_value_t = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))]
    dashboard_bind: std::net::IpAddr,
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
            token_file: None,
            heartbeat_timeout: None,
            #[cfg(feature = "dashboard")]
            dashboard_port: None,
            #[cfg(feature = "dashboard")]
            dashboard_bind: std::net::Ipv4Addr::LOCALHOST.into(),
            block: true,
            daemon_child: false,
        }
    }
}

/// Most CPUs a node may offer.
const MAX_CPUS: f64 = 1e6;

fn parse_cpus(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !(v.is_finite() && (0.0..=MAX_CPUS).contains(&v)) {
        return Err(format!(
            "the number of CPUs must be from 0 to {MAX_CPUS:e}, got {s}"
        ));
    }
    Ok(v)
}

fn parse_gpus(s: &str) -> Result<u32, String> {
    let max = sunray_proto::limits::MAX_GPUS_PER_NODE;
    match s.trim().parse::<i64>() {
        Ok(v) if (0..=max as i64).contains(&v) => Ok(v as u32),
        Ok(_) => Err(format!(
            "the number of GPUs must be a whole number from 0 to {max}, got {s}"
        )),
        Err(_) => Err(format!(
            "the number of GPUs must be a whole number from 0 to {max}, got {s:?}"
        )),
    }
}

fn parse_timeout(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (1.0..=1e6).contains(&v) => Ok(v),
        _ => Err(format!(
            "the heartbeat timeout is a number of seconds from 1 to 1e6, got {s}"
        )),
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
        if !(v.is_finite() && (0.0..=sunray_proto::limits::MAX_AMOUNT).contains(v)) {
            bail!(
                "--resources: amount of {k} must be a number from 0 to {:e}, got {v}",
                sunray_proto::limits::MAX_AMOUNT
            );
        }
        if ["CPU", "GPU", "memory"].contains(&k.as_str()) {
            bail!("--resources: use --num-cpus / --num-gpus for {k}");
        }
    }
    let cpu = a.num_cpus.unwrap_or(detect::cpus() as f64);
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

pub fn run(mut a: StartArgs) -> anyhow::Result<()> {
    if let Some(f) = &a.token_file {
        a.token = Some(crate::read_token_file(f)?);
    }
    let (resources, gpu_ids) = node_resources(&a)?;
    if let Some(t) = a.heartbeat_timeout {
        // Read by the runtime (and inherited by the background process).
        std::env::set_var(sunray_runtime::env::HEARTBEAT_TIMEOUT, t.to_string());
    }
    if !a.block && !a.daemon_child {
        return spawn_background(&a);
    }
    crate::init_logging("info");
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
            #[cfg(feature = "dashboard")]
            if let Some(port) = a.dashboard_port {
                if let Err(e) = crate::dashboard::serve_beside_head(
                    &started.session.dir,
                    &started.address,
                    a.dashboard_bind,
                    port,
                ) {
                    started.session.remove();
                    return Err(e);
                }
            }
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
            sunray_runtime::wire::check_address(&address).map_err(anyhow::Error::msg)?;
            let token = crate::resolve_token(a.token.clone(), None, &address)?;
            let node_ip = match a.node_ip_address {
                Some(ip) => ip,
                None => detect::local_ip_towards(&address).unwrap_or_else(detect::default_ip),
            };
            let reg = NodeRegistration {
                ip: node_ip.to_string(),
                hostname: detect::hostname(),
                pid: std::process::id(),
                resources: resources.clone(),
                gpu_ids: gpu_ids.clone(),
            };
            let link = node::join(&address, a.node_ip_address, &token, reg).await?;
            // Only once the head took this node: a failed start leaves nothing behind.
            let session = Session::create("node")?;
            let info = SessionInfo {
                head_address: Some(address.clone()),
                ..SessionInfo::of_this_process("node", None, node_ip.to_string())
            };
            if let Err(e) = session.write_info(&info) {
                session.remove();
                return Err(e.into());
            }
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
/// The token reaches it through the environment, never its command line (which every
/// user of the host can read).
fn spawn_background(a: &StartArgs) -> anyhow::Result<()> {
    let mut args = without_secrets(crate::self_args().into_iter());
    args.push("--daemon-child".into());
    match crate::spawn_detached(&args, a.token.as_deref())? {
        Ok(ready) => {
            print_ready(&format!("READY {ready}"));
            Ok(())
        }
        Err(err) => bail!(
            "the sunray {} did not start: {}",
            if a.head { "head" } else { "node" },
            crate::child_error(&err)
        ),
    }
}

/// The arguments less `--token X`, `--token=X` and `--token-file F` (the token goes
/// through the environment instead).
fn without_secrets(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_next = false;
    for arg in args {
        if std::mem::take(&mut skip_next) {
            continue;
        }
        match arg.as_str() {
            "--token" | "--token-file" => skip_next = true,
            a if a.starts_with("--token=") || a.starts_with("--token-file=") => {}
            _ => out.push(arg),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_dropped_from_the_background_command_line() {
        let args = [
            "start",
            "--head",
            "--token",
            "s3cret",
            "--port",
            "0",
            "--token=s3cret",
            "--token-file",
            "/f",
            "--token-file=/f",
            "--block",
        ]
        .map(String::from);
        assert_eq!(
            without_secrets(args.into_iter()),
            ["start", "--head", "--port", "0", "--block"]
        );
    }

    #[test]
    fn resource_flags_are_range_checked() {
        assert_eq!(parse_cpus("2.5"), Ok(2.5));
        for bad in ["1e300", "-3", "nan", "inf", "x"] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_gpus("4"), Ok(4));
        for bad in ["-1", "1e12", "5000", "1.5"] {
            assert!(parse_gpus(bad).is_err(), "{bad}");
        }
    }
}
