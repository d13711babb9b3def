//! Population Based Training on a synthetic problem whose best learning rate decays
//! over time, so a fixed learning rate loses to the schedule PBT discovers.
//!
//! ```text
//! cargo run --release --example tune_pbt -- --num-samples 8
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sunray_tune::{
    loguniform, Config, Mode, Pbt, RunConfig, Session, Space, TrainResult, TuneConfig, Tuner,
};

#[derive(Parser)]
#[command(about = "Tune a synthetic model with Population Based Training")]
struct Args {
    #[arg(long, default_value_t = 8)]
    num_samples: usize,
    #[arg(long)]
    storage_path: Option<PathBuf>,
    #[arg(long, default_value = "tune_pbt")]
    name: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Iterations per trial.
    #[arg(long, default_value_t = 40)]
    iterations: u64,
    /// Milliseconds each iteration takes.
    #[arg(long, default_value_t = 2)]
    iter_ms: u64,
    #[arg(long, default_value_t = 4.0)]
    perturbation_interval: f64,
    #[arg(long, default_value_t = 2)]
    verbosity: u8,
}

/// The learning rate that helps most at iteration `t`: it decays, as in real training.
fn ideal_lr(t: u64) -> f64 {
    0.1 * 0.85f64.powi(t as i32)
}

fn train(config: &Config, session: &mut Session) -> TrainResult {
    let lr = config.f64("lr");
    let (mut it, mut acc) = match session.checkpoint() {
        Some(c) => {
            let s = std::fs::read_to_string(c.path().join("state"))?;
            let (a, b) = s.split_once(' ').ok_or("bad checkpoint")?;
            (a.parse::<u64>()?, b.parse::<f64>()?)
        }
        None => (0, 0.0),
    };
    let pause = Duration::from_millis(config.i64("iter_ms") as u64);
    while it < config.i64("iterations") as u64 {
        it += 1;
        std::thread::sleep(pause);
        let miss = (lr.log10() - ideal_lr(it).log10()).abs();
        acc += 0.15 * (-miss * miss).exp() * (1.0 - acc);
        let ckpt = session.new_checkpoint_dir()?;
        std::fs::write(ckpt.path().join("state"), format!("{it} {acc}"))?;
        session.report([("mean_accuracy", acc), ("lr", lr)], Some(ckpt))?;
    }
    Ok(())
}
sunray_tune::register_trainable!(train);

fn main() -> anyhow::Result<()> {
    sunray::init()?;
    let args = Args::parse();
    let space = Space::new()
        .with("lr", loguniform(1e-4, 1e-1))
        .with("iterations", args.iterations)
        .with("iter_ms", args.iter_ms);
    let pbt = Pbt::new()
        .time_attr("training_iteration")
        .perturbation_interval(args.perturbation_interval)
        .mutate("lr", loguniform(1e-4, 1e-1))
        .seed(args.seed);
    let mut rc = RunConfig::new().name(&args.name).verbosity(args.verbosity);
    if let Some(p) = &args.storage_path {
        rc = rc.storage_path(p);
    }
    let results = Tuner::new(train)
        .param_space(space)
        .tune_config(
            TuneConfig::new()
                .metric("mean_accuracy", Mode::Max)
                .num_samples(args.num_samples)
                .seed(args.seed)
                .scheduler(pbt),
        )
        .run_config(rc)
        .fit()?;
    let best = results.best_result(None, None, "last")?;
    println!("Best trial: {}", best.trial_id);
    println!("Best trial final config: {}", best.config);
    println!(
        "Best trial mean_accuracy: {:.4}",
        best.metric("mean_accuracy").unwrap_or(f64::NAN)
    );
    let lrs: Vec<String> = best
        .metrics_history()
        .iter()
        .filter_map(|r| r.get("lr").and_then(|v| v.as_f64()))
        .map(|lr| format!("{lr:.4}"))
        .collect::<Vec<_>>()
        .chunks(args.perturbation_interval.max(1.0) as usize)
        .map(|c| c[0].clone())
        .collect();
    println!(
        "Its learning-rate schedule (every {} iterations): {}",
        args.perturbation_interval,
        lrs.join(" → ")
    );
    Ok(())
}
