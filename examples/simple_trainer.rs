//! The seed's first program (`simple-trainer.py`) in Rust: print the cluster's nodes,
//! then in each round launch one one-second task per CPU and count which node answered.
//!
//! ```text
//! cargo run --release --example simple_trainer -- 4 --rounds 3      # embedded cluster
//! SUNRAY_ADDRESS=127.0.0.1:6379 target/release/examples/simple_trainer 4
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Tasks per round (the seed passes $SLURM_CPUS_PER_TASK).
    num_cpus: usize,
    /// Number of rounds.
    #[arg(long, default_value_t = 60)]
    rounds: usize,
    /// Head address (default: $SUNRAY_ADDRESS, else an embedded cluster).
    #[arg(long)]
    address: Option<String>,
    /// Seconds each task sleeps.
    #[arg(long, default_value_t = 1.0)]
    task_seconds: f64,
}

/// Sleeps, then returns the address of the node that ran it.
#[sunray::remote]
fn f(seconds: f64) -> String {
    std::thread::sleep(Duration::from_secs_f64(seconds));
    sunray::get_runtime_context().node_ip
}

fn main() -> anyhow::Result<()> {
    sunray::init_with(sunray::InitOptions {
        address: Args::try_parse().ok().and_then(|a| a.address),
        ..Default::default()
    })?;
    let args = Args::parse();
    println!("Nodes in the cluster:");
    for n in sunray::nodes()? {
        println!(
            "  {{NodeID: {}, Alive: {}, NodeManagerAddress: {}, NodeManagerHostname: {}, Resources: {:?}}}",
            n.node_id, n.alive, n.address, n.hostname, n.resources
        );
    }
    for round in 0..args.rounds {
        let start = Instant::now();
        let refs: Vec<_> = (0..args.num_cpus)
            .map(|_| f.remote(args.task_seconds))
            .collect();
        let ips = sunray::get_all(&refs)?;
        let mut counter: BTreeMap<String, usize> = BTreeMap::new();
        for ip in ips {
            *counter.entry(ip).or_default() += 1;
        }
        println!("round {round}: {counter:?}");
        println!("elapsed {:.4} s", start.elapsed().as_secs_f64());
    }
    Ok(())
}
