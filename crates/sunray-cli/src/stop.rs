use std::time::{Duration, Instant};

use clap::Args;
use sunray_runtime::session::{is_stale, list_sessions, SessionInfo};

#[derive(Args)]
pub struct StopArgs {
    /// Kill at once (SIGKILL) instead of asking to stop first.
    #[arg(long)]
    force: bool,
    /// Seconds to wait for a clean stop before killing.
    #[arg(long, default_value_t = 10.0)]
    grace_period: f64,
}

/// Stops the heads and nodes of this user on this host; embedded clusters of running
/// programs are left alone (they end with their program). A process is signalled only
/// while it is provably the one that wrote the session (same pid, start time and
/// executable): a pid reused by another program is never touched.
pub fn run(a: StopArgs) -> anyhow::Result<()> {
    let mut targets: Vec<(std::path::PathBuf, SessionInfo)> = Vec::new();
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
        if info.provably_running() {
            targets.push((dir, info));
        } else {
            eprintln!(
                "sunray: left pid {} alone: {} does not prove it is the sunray process that wrote it (no start time recorded)",
                info.pid(),
                dir.join("info.json").display()
            );
        }
    }
    let sig = if a.force {
        libc::SIGKILL
    } else {
        libc::SIGTERM
    };
    for (_, info) in &targets {
        signal(info, sig);
    }
    let deadline = Instant::now() + Duration::from_secs_f64(a.grace_period.max(0.0));
    let mut killed = 0;
    for (dir, info) in &targets {
        while info.process_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if signal(info, libc::SIGKILL) {
            killed += 1;
            while info.process_alive() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if is_stale(dir) {
            std::fs::remove_dir_all(dir).ok();
        }
    }
    match targets.len() {
        0 => println!("no sunray processes to stop on this host"),
        n => println!(
            "stopped {n} sunray process{}{}",
            if n == 1 { "" } else { "es" },
            if killed > 0 {
                format!(" ({killed} killed after the grace period)")
            } else {
                String::new()
            }
        ),
    }
    Ok(())
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
