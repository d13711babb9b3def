//! Tunes a fast synthetic objective with ASHA (Ray Tune's `AsyncHyperBandScheduler`).
//!
//! ```text
//! cargo run --release --example tune_asha -- --num-samples 200
//! SUNRAY_ADDRESS=host:6379 target/release/examples/tune_asha   # on a running cluster
//! ```
//! Without `SUNRAY_ADDRESS` it starts an embedded cluster. `--resume` continues an
//! interrupted experiment of the same `--name`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sunray_examples::synthetic;
use sunray_tune::{
    choice, loguniform, randint, Asha, Checkpoint, CheckpointConfig, Config, Mode, RunConfig,
    Session, Space, TrainResult, TuneConfig, Tuner,
};

#[derive(Parser)]
#[command(about = "Tune a synthetic learning curve with ASHA")]
struct Args {
    #[arg(long, default_value_t = 200)]
    num_samples: usize,
    /// Parent of the experiment directory (default ~/sunray_results).
    #[arg(long)]
    storage_path: Option<PathBuf>,
    #[arg(long, default_value = "tune_asha")]
    name: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Iterations a trial may run (ASHA's max_t).
    #[arg(long, default_value_t = 20)]
    max_t: u64,
    /// Milliseconds each iteration takes.
    #[arg(long, default_value_t = 2)]
    iter_ms: u64,
    #[arg(long)]
    max_concurrent_trials: Option<usize>,
    /// Continue the experiment `--name` if it exists.
    #[arg(long)]
    resume: bool,
    /// Status table period in seconds.
    #[arg(long, default_value_t = 5.0)]
    report_every: f64,
    #[arg(long, default_value_t = 2)]
    verbosity: u8,
}

fn objective(config: &Config, session: &mut Session) -> TrainResult {
    let target = synthetic::final_loss(config);
    let max_t = config.i64("max_t") as u64;
    let pause = Duration::from_millis(config.i64("iter_ms") as u64);
    // Resume where the last checkpoint left off.
    let start = match session.checkpoint() {
        Some(c) => std::fs::read_to_string(c.path().join("iteration"))?
            .trim()
            .parse::<u64>()?,
        None => 0,
    };
    for it in start + 1..=max_t {
        std::thread::sleep(pause);
        let loss = synthetic::loss_at(target, it, session.trial_id());
        let ckpt: Checkpoint = session.new_checkpoint_dir()?;
        std::fs::write(ckpt.path().join("iteration"), it.to_string())?;
        session.report([("loss", loss), ("accuracy", 1.0 - loss / 3.0)], Some(ckpt))?;
    }
    Ok(())
}
sunray_tune::register_trainable!(objective);

fn main() -> anyhow::Result<()> {
    sunray::init()?;
    let args = Args::parse();
    let space = Space::new()
        .with("lr", loguniform(1e-4, 1e-1))
        .with("width", randint(8, 129))
        .with("activation", choice(["relu", "tanh"]))
        .with("max_t", args.max_t)
        .with("iter_ms", args.iter_ms);
    let mut tc = TuneConfig::new()
        .metric("loss", Mode::Min)
        .num_samples(args.num_samples)
        .seed(args.seed)
        .scheduler(
            Asha::new()
                .max_t(args.max_t as f64)
                .grace_period(1.0)
                .reduction_factor(2.0),
        );
    if let Some(n) = args.max_concurrent_trials {
        tc = tc.max_concurrent_trials(n);
    }
    let mut rc = RunConfig::new()
        .name(&args.name)
        .checkpoint_config(CheckpointConfig::default().num_to_keep(2))
        .verbosity(args.verbosity)
        .progress_interval(Duration::from_secs_f64(args.report_every));
    if let Some(p) = &args.storage_path {
        rc = rc.storage_path(p);
    }
    let exp = rc.storage().join(&args.name);
    let tuner = if args.resume && Tuner::can_restore(&exp) {
        println!("Resuming the experiment at {}", exp.display());
        Tuner::restore(&exp, objective)?
    } else {
        Tuner::new(objective)
    };
    let results = tuner
        .param_space(space)
        .tune_config(tc)
        .run_config(rc)
        .fit()?;
    let best = results.best_result(None, None, "last")?;
    println!("Best trial: {}", best.trial_id);
    println!("Best trial config: {}", best.config);
    println!(
        "Best trial final loss: {:.5}",
        best.metric("loss").unwrap_or(f64::NAN)
    );
    println!(
        "Trials: {} ({} ran to max_t, {} stopped early, {} errors)",
        results.len(),
        results
            .iter()
            .filter(|r| r.metric("training_iteration") == Some(args.max_t as f64))
            .count(),
        results
            .iter()
            .filter(|r| r
                .metric("training_iteration")
                .is_some_and(|i| i < args.max_t as f64))
            .count(),
        results.num_errors()
    );
    Ok(())
}
