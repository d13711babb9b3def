use std::time::{Duration, Instant};

use clap::Args;
use sunray_runtime::session::{list_sessions, pid_alive};

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
/// programs are left alone (they end with their program).
pub fn run(a: StopArgs) -> anyhow::Result<()> {
    let mut targets = Vec::new();
    for (dir, info) in list_sessions() {
        if !pid_alive(info.pid) {
            std::fs::remove_dir_all(&dir).ok(); // stale
            continue;
        }
        if info.kind == "head" || info.kind == "node" {
            targets.push((dir, info));
        }
    }
    let sig = if a.force {
        libc::SIGKILL
    } else {
        libc::SIGTERM
    };
    for (_, info) in &targets {
        unsafe {
            libc::kill(info.pid as i32, sig);
        }
    }
    let deadline = Instant::now() + Duration::from_secs_f64(a.grace_period.max(0.0));
    let mut killed = 0;
    for (dir, info) in &targets {
        while pid_alive(info.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if pid_alive(info.pid) {
            unsafe {
                libc::kill(info.pid as i32, libc::SIGKILL);
            }
            killed += 1;
            while pid_alive(info.pid) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        std::fs::remove_dir_all(dir).ok();
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
