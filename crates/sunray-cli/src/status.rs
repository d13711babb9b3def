use std::time::Duration;

use anyhow::Context;
use clap::Args;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use sunray_proto::{ClusterView, Query, Resources};
use sunray_runtime::driver::{query, runtime};

#[derive(Args)]
pub struct StatusArgs {
    /// Head to ask (default: $SUNRAY_ADDRESS, or the only head on this host).
    #[arg(long)]
    address: Option<String>,
    /// Cluster token (default: found in this host's session directory).
    #[arg(long, env = "SUNRAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the cluster token from this file (it wins over --token and SUNRAY_TOKEN).
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Block until this many nodes are alive.
    #[arg(long)]
    wait_for_nodes: Option<u32>,
    /// Give up waiting after this many seconds (with --wait-for-nodes).
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

pub fn run(a: StatusArgs) -> anyhow::Result<()> {
    crate::init_logging("warn");
    let address = crate::resolve_address(a.address)?;
    let token = crate::resolve_token(a.token, a.token_file.as_deref(), &address)?;
    let view = runtime()
        .block_on(async {
            match a.wait_for_nodes {
                None => query(&address, &token, Query::Status)
                    .await
                    .map_err(anyhow::Error::from),
                Some(n) => {
                    let wait = query(&address, &token, Query::WaitForNodes { nodes: n });
                    match tokio::time::timeout(Duration::from_secs_f64(a.timeout.max(0.0)), wait)
                        .await
                    {
                        Ok(r) => r.map_err(anyhow::Error::from),
                        Err(_) => {
                            let now = query(&address, &token, Query::Status).await?;
                            let alive = now.nodes.iter().filter(|n| n.alive).count();
                            anyhow::bail!(
                            "only {alive} of {n} nodes joined the cluster at {address} within {} s",
                            a.timeout
                        )
                        }
                    }
                }
            }
        })
        .with_context(|| format!("cluster at {address}"))?;
    print!("{}", render(&address, &view));
    Ok(())
}

fn amount(used: f64, total: f64) -> String {
    format!("{}/{}", trim(used), trim(total))
}

fn trim(x: f64) -> String {
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn custom_line(total: &Resources, avail: &Resources) -> String {
    total
        .custom
        .iter()
        .map(|(n, t)| {
            let a = avail
                .custom
                .iter()
                .find(|(m, _)| m == n)
                .map(|(_, a)| *a)
                .unwrap_or(0.0);
            format!("{n} {}", amount(t - a, *t))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn render(address: &str, v: &ClusterView) -> String {
    let alive = v.nodes.iter().filter(|n| n.alive).count();
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "node",
        "alive",
        "address",
        "hostname",
        "pid",
        "CPU used/total",
        "GPU used/total",
        "other",
        "object store",
    ]);
    let (mut cpu_used, mut cpu_total, mut gpu_used, mut gpu_total) = (0.0, 0.0, 0.0, 0.0);
    for n in &v.nodes {
        let (cu, gu) = if n.alive {
            (n.total.cpu - n.available.cpu, n.total.gpu - n.available.gpu)
        } else {
            (0.0, 0.0)
        };
        if n.alive {
            cpu_used += cu;
            cpu_total += n.total.cpu;
            gpu_used += gu;
            gpu_total += n.total.gpu;
        }
        t.add_row(vec![
            format!("{:08x}{}", n.id, if n.is_head { " (head)" } else { "" }),
            n.alive.to_string(),
            n.ip.clone(),
            n.hostname.clone(),
            n.pid.to_string(),
            amount(cu, n.total.cpu),
            amount(gu, n.total.gpu),
            custom_line(&n.total, &n.available),
            match n.alive {
                true => format!("{} ({:.1} MB)", n.objects, n.object_bytes as f64 / 1e6),
                false => String::new(),
            },
        ]);
    }
    let mut out = format!(
        "cluster {address}: {alive} nodes alive, {} dead; {} CPUs, {} GPUs in use\n{t}\ntasks: {} queued, {} running, {} infeasible; drivers connected: {}\nobjects: {} ({:.1} MB of them at the head; large ones stay in their node's object store)\n",
        v.nodes.len() - alive,
        amount(cpu_used, cpu_total),
        amount(gpu_used, gpu_total),
        v.queued_tasks,
        v.running_tasks,
        v.infeasible_tasks,
        v.drivers,
        v.objects,
        v.object_bytes as f64 / 1e6
    );
    if !v.actors.is_empty() {
        out.push_str(&actors_table(v));
    }
    if !v.groups.is_empty() {
        out.push_str(&groups_table(v));
    }
    out
}

/// Placement groups: their bundles, where each went, and why one waits.
fn groups_table(v: &ClusterView) -> String {
    use sunray_proto::GroupState;
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "placement group",
        "name",
        "strategy",
        "state",
        "bundles",
        "nodes",
        "why",
    ]);
    for g in &v.groups {
        let bundles: Vec<String> = g
            .bundles
            .iter()
            .map(|b| {
                let mut s = format!("CPU {}", trim(b.cpu));
                if b.gpu > 0.0 {
                    s.push_str(&format!(" GPU {}", trim(b.gpu)));
                }
                s
            })
            .collect();
        t.add_row(vec![
            format!("{:016x}", g.id),
            g.name.clone().unwrap_or_default(),
            format!("{:?}", g.strategy),
            match g.state {
                GroupState::Pending => "pending",
                GroupState::Created => "created",
                GroupState::Rescheduling => "rescheduling",
                GroupState::Removed => "removed",
            }
            .to_string(),
            bundles.join("; "),
            g.nodes
                .iter()
                .map(|n| format!("{n:08x}"))
                .collect::<Vec<_>>()
                .join(" "),
            g.why.clone().unwrap_or_default(),
        ]);
    }
    format!("placement groups: {}\n{t}\n", v.groups.len())
}

/// Actors alive, starting, restarting, and the last dead ones (with why they died).
fn actors_table(v: &ClusterView) -> String {
    use sunray_proto::ActorState;
    let count = |s: ActorState| v.actors.iter().filter(|a| a.state == s).count();
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "actor",
        "class",
        "name",
        "state",
        "node",
        "restarts",
        "calls",
        "holds",
        "last death",
    ]);
    for a in &v.actors {
        let state = match a.state {
            ActorState::Pending => "pending",
            ActorState::Alive => "alive",
            ActorState::Restarting => "restarting",
            ActorState::Dead => "dead",
        };
        let mut holds = format!("CPU {}", trim(a.resources.cpu));
        if a.resources.gpu > 0.0 {
            holds.push_str(&format!(", GPU {}", trim(a.resources.gpu)));
        }
        let class = a.class.rsplit("::").next().unwrap_or(&a.class);
        t.add_row(vec![
            format!("{:016x}", a.id),
            class.to_string(),
            match (&a.name, a.detached) {
                (Some(n), true) => format!("{n} (detached)"),
                (Some(n), false) => n.clone(),
                (None, true) => "(detached)".into(),
                (None, false) => String::new(),
            },
            state.to_string(),
            a.node.map(|n| format!("{n:08x}")).unwrap_or_default(),
            a.restarts.to_string(),
            a.pending_calls.to_string(),
            holds,
            a.death.clone().unwrap_or_default(),
        ]);
    }
    format!(
        "actors: {} alive, {} pending, {} restarting, {} dead\n{t}\n",
        count(ActorState::Alive),
        count(ActorState::Pending),
        count(ActorState::Restarting),
        count(ActorState::Dead),
    )
}
