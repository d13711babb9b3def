use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use sunray_runtime::session::{self, is_stale, list_sessions, SessionInfo};

#[derive(Args)]
pub struct StopArgs {
    /// Stop only the cluster whose head is at HOST:PORT: its head and the node agents
    /// of this host that joined it (default: $SUNRAY_ADDRESS).
    #[arg(long, conflicts_with = "all")]
    address: Option<String>,
    /// Stop every head and node agent of this user on this host, whatever
    /// SUNRAY_ADDRESS or SLURM_JOB_ID name.
    #[arg(long)]
    all: bool,
    /// Kill at once (SIGKILL) instead of asking to stop first.
    #[arg(long)]
    force: bool,
    /// Seconds to wait for a clean stop before killing.
    #[arg(long, default_value_t = 10.0)]
    grace_period: f64,
}

/// What to stop.
enum Scope {
    /// Every head and node agent of the session folder.
    All,
    /// The cluster of the head at this address; where the address came from.
    Cluster(String, &'static str),
    /// The cluster(s) started in this Slurm job.
    Job(String),
}

impl Scope {
    fn of(a: &StopArgs) -> anyhow::Result<Scope> {
        if a.all {
            return Ok(Scope::All);
        }
        let (address, from) = match &a.address {
            Some(addr) => (Some(addr.clone()), "--address"),
            None => (session::address_from_env(), "SUNRAY_ADDRESS"),
        };
        if let Some(addr) = address {
            sunray_runtime::wire::check_address(&addr).map_err(anyhow::Error::msg)?;
            return Ok(Scope::Cluster(addr, from));
        }
        match std::env::var("SLURM_JOB_ID") {
            Ok(j) if !j.is_empty() => Ok(Scope::Job(j)),
            _ => Ok(Scope::All),
        }
    }
}

/// A live head or node agent of the session folder.
struct Live {
    dir: PathBuf,
    info: SessionInfo,
    /// Its cluster: a head's own directory; for a node agent, the directory of the
    /// head on this host it joined, if that head is here.
    head_dir: Option<PathBuf>,
}

/// Stops heads and node agents of this user on this host: one cluster (`--address`,
/// `$SUNRAY_ADDRESS`), this Slurm job's, or all of them; embedded clusters of running
/// programs are left alone (they end with their program). A process is signalled only
/// while it is provably the one that wrote the session (same pid, start time and
/// executable): a pid reused by another program is never touched.
pub fn run(a: StopArgs) -> anyhow::Result<()> {
    let scope = Scope::of(&a)?;
    let live = live_sessions();
    let (chosen, what): (Vec<&Live>, String) = match &scope {
        Scope::All => (live.iter().collect(), String::new()),
        Scope::Cluster(address, from) => {
            let chosen = cluster_at(&live, address, from)?;
            // The head's own address, when the one given named it loosely.
            let head = chosen
                .iter()
                .find_map(|l| l.info.address.as_deref())
                .unwrap_or(address);
            let what = format!(" of the cluster at {head}");
            (chosen, what)
        }
        Scope::Job(job) => {
            let heads: Vec<&PathBuf> = live
                .iter()
                .filter(|l| l.info.kind == "head" && l.info.slurm_job_id.as_ref() == Some(job))
                .map(|l| &l.dir)
                .collect();
            // The job's processes, and node agents (of other jobs: `slurm add-nodes`)
            // that joined one of its heads.
            let chosen: Vec<&Live> = live
                .iter()
                .filter(|l| {
                    l.info.slurm_job_id.as_ref() == Some(job)
                        || l.head_dir.as_ref().is_some_and(|h| heads.contains(&h))
                })
                .collect();
            if chosen.is_empty() {
                let others = if live.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} of other clusters left running; `sunray stop --all` stops them)",
                        plural(live.len(), "sunray process", "es")
                    )
                };
                println!(
                    "no sunray processes of Slurm job {job} to stop on this host{others}{}",
                    supervised_hint()
                );
                return Ok(());
            }
            (chosen, format!(" of Slurm job {job}"))
        }
    };
    let mut targets: Vec<&Live> = Vec::new();
    for l in chosen {
        if l.info.provably_running() {
            targets.push(l);
        } else {
            eprintln!(
                "sunray: left pid {} alone: {} does not prove it is the sunray process that wrote it (no start time recorded)",
                l.info.pid(),
                l.dir.join("info.json").display()
            );
        }
    }
    let sig = if a.force {
        libc::SIGKILL
    } else {
        libc::SIGTERM
    };
    for l in &targets {
        signal(&l.info, sig);
    }
    let deadline = Instant::now() + Duration::from_secs_f64(a.grace_period.max(0.0));
    let mut killed = 0;
    for l in &targets {
        while l.info.process_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if signal(&l.info, libc::SIGKILL) {
            killed += 1;
            while l.info.process_alive() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if is_stale(&l.dir) {
            std::fs::remove_dir_all(&l.dir).ok();
        }
    }
    match targets.len() {
        0 => println!("no sunray processes to stop on this host"),
        n => println!(
            "stopped {}{what}{}",
            plural(n, "sunray process", "es"),
            if killed > 0 {
                format!(" ({killed} killed after the grace period)")
            } else {
                String::new()
            }
        ),
    }
    Ok(())
}

fn plural(n: usize, one: &str, suffix: &str) -> String {
    format!("{n} {one}{}", if n == 1 { "" } else { suffix })
}

/// The heads and node agents of the session folder whose process runs; removes the
/// directories of those provably gone.
fn live_sessions() -> Vec<Live> {
    let mut live: Vec<Live> = Vec::new();
    for (dir, info) in list_sessions() {
        if !info.process_alive() {
            if is_stale(&dir) {
                std::fs::remove_dir_all(&dir).ok();
            }
            continue;
        }
        if info.kind != "head" && info.kind != "node" {
            continue;
        }
        live.push(Live {
            dir,
            info,
            head_dir: None,
        });
    }
    let heads: Vec<(PathBuf, String)> = live
        .iter()
        .filter(|l| l.info.kind == "head")
        .filter_map(|l| Some((l.dir.clone(), l.info.address.clone()?)))
        .collect();
    for l in &mut live {
        l.head_dir = if l.info.kind == "head" {
            Some(l.dir.clone())
        } else {
            match l.info.head_address.as_deref().map(|a| heads_at(&heads, a)) {
                Some(found) if found.len() == 1 => Some(found[0].clone()),
                _ => None,
            }
        };
    }
    live
}

/// The heads (directory, address) at `address`: the one that advertises exactly it,
/// else those on its IP and port, else, when `address` names this host (localhost, a
/// loopback or unspecified address, an address of this host), those on its port.
fn heads_at(heads: &[(PathBuf, String)], address: &str) -> Vec<PathBuf> {
    let here = names_this_host(address);
    for tier in 0..3 {
        let found: Vec<PathBuf> = heads
            .iter()
            .filter(|(_, h)| match tier {
                0 => h == address,
                1 => same_ip_and_port(h, address),
                _ => here && same_port(h, address),
            })
            .map(|(d, _)| d.clone())
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    Vec::new()
}

fn split(address: &str) -> Option<(&str, u16)> {
    let (h, p) = address.rsplit_once(':')?;
    Some((h.trim_matches(|c| c == '[' || c == ']'), p.parse().ok()?))
}

fn same_port(a: &str, b: &str) -> bool {
    matches!((split(a), split(b)), (Some((_, p)), Some((_, q))) if p == q)
}

/// The addresses `address` resolves to (a name is looked up).
fn ips(address: &str) -> Vec<IpAddr> {
    address
        .to_socket_addrs()
        .map(|a| a.map(|s| s.ip()).collect())
        .unwrap_or_default()
}

fn same_ip_and_port(a: &str, b: &str) -> bool {
    same_port(a, b) && {
        let theirs = ips(b);
        ips(a).iter().any(|ip| theirs.contains(ip))
    }
}

fn names_this_host(address: &str) -> bool {
    let mine: Vec<IpAddr> = sunray_runtime::detect::ipv4_addresses()
        .into_iter()
        .map(|(_, ip)| IpAddr::V4(ip))
        .collect();
    let found = ips(address);
    !found.is_empty()
        && found
            .iter()
            .all(|ip| ip.is_loopback() || ip.is_unspecified() || mine.contains(ip))
}

/// The processes of the cluster at `address`: its head and the node agents that joined
/// it, or, when its head is not on this host, the node agents that joined that address.
/// None: an error naming the clusters the session folder knows.
fn cluster_at<'a>(live: &'a [Live], address: &str, from: &str) -> anyhow::Result<Vec<&'a Live>> {
    let heads: Vec<(PathBuf, String)> = live
        .iter()
        .filter(|l| l.info.kind == "head")
        .filter_map(|l| Some((l.dir.clone(), l.info.address.clone()?)))
        .collect();
    let found = heads_at(&heads, address);
    let chosen: Vec<&Live> = match found.as_slice() {
        [head] => live
            .iter()
            .filter(|l| l.head_dir.as_ref() == Some(head))
            .collect(),
        [] => live
            .iter()
            .filter(|l| {
                l.head_dir.is_none()
                    && l.info
                        .head_address
                        .as_deref()
                        .is_some_and(|h| h == address || same_ip_and_port(h, address))
            })
            .collect(),
        several => {
            let names: Vec<String> = heads
                .iter()
                .filter(|(d, _)| several.contains(d))
                .map(|(_, a)| a.clone())
                .collect();
            anyhow::bail!(
                "{address} ({from}) could be any of the heads at {}: pass --address with one of them; nothing was stopped",
                names.join(", ")
            );
        }
    };
    if chosen.is_empty() {
        let hint = if from == "SUNRAY_ADDRESS" {
            " (unset SUNRAY_ADDRESS or pass --all to stop every cluster)"
        } else {
            ""
        };
        anyhow::bail!(
            "no cluster at {address} ({from}) in {}: {}; nothing was stopped{hint}{}",
            session::base_dir().display(),
            known_clusters(live),
            supervised_hint()
        );
    }
    Ok(chosen)
}

/// Inside a Slurm job whose cluster `sunray slurm up` (or `slurm run`) supervises: how
/// to stop that one (its processes keep their sessions in the job's own directory, and
/// the supervisor, not `stop`, ends them).
fn supervised_hint() -> String {
    let Ok(job) = std::env::var("SLURM_JOB_ID") else {
        return String::new();
    };
    let dir = session::base_dir().join(format!("j{job}"));
    if dir.join("supervisor.pid").is_file() {
        format!(
            "; the cluster `sunray slurm up` or `slurm run` started in job {job} ({}) is stopped by `sunray slurm down` or ends with its driver",
            dir.display()
        )
    } else {
        String::new()
    }
}

/// The clusters the session folder knows, for an error message.
fn known_clusters(live: &[Live]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let nodes_of = |head: &PathBuf| {
        live.iter()
            .filter(|l| l.info.kind == "node" && l.head_dir.as_ref() == Some(head))
            .count()
    };
    for l in live.iter().filter(|l| l.info.kind == "head") {
        parts.push(format!(
            "{} (head pid {}, {} on this host)",
            l.info.address.as_deref().unwrap_or("?"),
            l.info.pid(),
            plural(nodes_of(&l.dir), "node agent", "s")
        ));
    }
    let mut remote: Vec<(&str, usize)> = Vec::new();
    let mut unknown = 0;
    for l in live.iter().filter(|l| l.head_dir.is_none()) {
        match l.info.head_address.as_deref() {
            Some(h) => match remote.iter_mut().find(|(a, _)| *a == h) {
                Some((_, n)) => *n += 1,
                None => remote.push((h, 1)),
            },
            None => unknown += 1,
        }
    }
    for (h, n) in remote {
        parts.push(format!(
            "{h} (head elsewhere, {} on this host)",
            plural(n, "node agent", "s")
        ));
    }
    if unknown > 0 {
        parts.push(format!(
            "{} that do not record their head (started by an older sunray)",
            plural(unknown, "node agent", "s")
        ));
    }
    if parts.is_empty() {
        "no sunray head or node agent runs there".into()
    } else {
        format!("it knows {}", parts.join(", "))
    }
}

/// Sends `sig` to the session's process if it is still that process; whether it was.
fn signal(info: &SessionInfo, sig: i32) -> bool {
    // Checked right before the signal: the window for a pid to be reused in between is
    // the time of one system call.
    if !info.provably_running() {
        return false;
    }
    unsafe { libc::kill(info.pid() as i32, sig) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_picks_the_head_that_advertises_it_before_looser_matches() {
        let heads = vec![
            (PathBuf::from("a"), "127.0.0.2:7000".to_string()),
            (PathBuf::from("b"), "127.0.0.3:7000".to_string()),
            (PathBuf::from("c"), "127.0.0.3:7001".to_string()),
        ];
        assert_eq!(heads_at(&heads, "127.0.0.2:7000"), [PathBuf::from("a")]);
        assert_eq!(heads_at(&heads, "127.0.0.3:7001"), [PathBuf::from("c")]);
        // This host by another name, on a port two heads share: both (ambiguous).
        assert_eq!(heads_at(&heads, "localhost:7000").len(), 2);
        assert!(heads_at(&heads, "127.0.0.9:7002").is_empty());
        assert!(heads_at(&heads, "192.0.2.1:7000").is_empty());
    }
}
