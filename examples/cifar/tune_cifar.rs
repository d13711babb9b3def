//! The seed's `tune-sample.py` in Rust: ASHA over the CIFAR-10 CNN's hyperparameters,
//! each trial a sunray task, then the best trial's checkpoint tested on the test set.
//!
//! ```text
//! cargo run --release --example tune_cifar -- --synthetic            # no dataset needed
//! cargo run --release --example tune_cifar -- --num-samples 10 --max-epochs 10   # the full search
//! ```
//! Runs on an embedded cluster unless `SUNRAY_ADDRESS` is set.

use std::path::PathBuf;

use clap::Parser;
use rand::{rngs::StdRng, Rng};
use sunray::TaskOptions;
use sunray_cifar::{data, train};
use sunray_tune::{
    choice, loguniform, sample_from, Asha, Config, Mode, RunConfig, Session, Space, TrainResult,
    TuneConfig, Tuner,
};

#[derive(Parser)]
#[command(about = "Tune the CIFAR-10 CNN with ASHA, then test the best trial")]
struct Args {
    /// Directory of the binary CIFAR-10 batches.
    #[arg(long, default_value = "./data/cifar-10-batches-bin")]
    data_dir: PathBuf,
    /// Write a learnable synthetic dataset in the CIFAR-10 format into --data-dir when
    /// it holds none yet, and use it.
    #[arg(long)]
    synthetic: bool,
    /// Images per training file of the synthetic dataset (5 files; the test file as many).
    #[arg(long, default_value_t = 2000)]
    synthetic_per_file: usize,
    #[arg(long, default_value_t = 2)]
    num_samples: usize,
    #[arg(long, default_value_t = 2)]
    max_epochs: u64,
    #[arg(long, default_value_t = 2.0)]
    cpus_per_trial: f64,
    #[arg(long, default_value_t = 0.0)]
    gpus_per_trial: f64,
    #[arg(long)]
    storage_path: Option<PathBuf>,
    /// Experiment name (default train_cifar_<date>); with --resume, the one to continue.
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the running loss every this many mini-batches.
    #[arg(long, default_value_t = 2000)]
    log_every: usize,
    #[arg(long, default_value_t = 2)]
    verbosity: u8,
}

fn spec(config: &Config) -> train::TrialSpec {
    train::TrialSpec {
        l1: config.i64("l1") as usize,
        l2: config.i64("l2") as usize,
        lr: config.f64("lr"),
        batch_size: config.i64("batch_size") as usize,
        max_epochs: config.i64("max_epochs") as u64,
        seed: config.i64("seed") as u64,
        log_every: config.i64("log_every") as usize,
    }
}

fn train_cifar(config: &Config, session: &mut Session) -> TrainResult {
    let spec = spec(config);
    let device = sunray_cifar::device(!session.gpu_ids().is_empty(), config.i64("cpus") as usize);
    let images = data::load_train(std::path::Path::new(config.str("data_dir")))?;
    let restore = session.checkpoint().map(|c| c.path().to_path_buf());
    train::run_trial(&spec, &images, restore.as_deref(), &device, |e| {
        let ckpt = session.new_checkpoint_dir()?;
        train::save_epoch(&e, ckpt.path())?;
        let metrics = [("loss", e.val_loss), ("accuracy", e.val_accuracy)];
        Ok(session.report(metrics, Some(ckpt)).is_ok())
    })?;
    Ok(())
}
sunray_tune::register_trainable!(train_cifar);

fn main() -> anyhow::Result<()> {
    sunray::init()?;
    let args = Args::parse();
    let data_dir = std::path::absolute(&args.data_dir)?;
    if args.synthetic && !data::has_any(&data_dir) {
        data::write_synthetic(
            &data_dir,
            args.synthetic_per_file,
            args.synthetic_per_file,
            args.seed,
        )?;
        println!(
            "Wrote a synthetic CIFAR-10 stand-in to {}",
            data_dir.display()
        );
    }
    if let Err(e) = data::check_dir(&data_dir) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let pow2 = |r: &mut StdRng, _: &Config| 1i64 << r.random_range(2..9);
    let space = Space::new()
        .with("l1", sample_from(pow2))
        .with("l2", sample_from(pow2))
        .with("lr", loguniform(1e-4, 1e-1))
        .with("batch_size", choice([2, 4, 8, 16]))
        .with("data_dir", data_dir.to_string_lossy().as_ref())
        .with("max_epochs", args.max_epochs)
        .with("cpus", args.cpus_per_trial.ceil() as u64)
        .with("seed", args.seed)
        .with("log_every", args.log_every as u64);
    let tc = TuneConfig::new()
        .metric("loss", Mode::Min)
        .num_samples(args.num_samples)
        .seed(args.seed)
        .scheduler(
            Asha::new()
                .max_t(args.max_epochs as f64)
                .grace_period(1.0)
                .reduction_factor(2.0),
        );
    let mut rc = RunConfig::new().verbosity(args.verbosity);
    if let Some(n) = &args.name {
        rc = rc.name(n);
    }
    if let Some(p) = &args.storage_path {
        rc = rc.storage_path(p);
    }
    let tuner = match (&args.name, args.resume) {
        (Some(n), true) if Tuner::can_restore(rc.storage().join(n)) => {
            Tuner::restore(rc.storage().join(n), train_cifar)?
        }
        (None, true) => anyhow::bail!("--resume needs the --name of the experiment to continue"),
        _ => Tuner::new(train_cifar),
    };
    let results = tuner
        .param_space(space)
        .tune_config(tc)
        .run_config(rc)
        .resources(
            TaskOptions::new()
                .num_cpus(args.cpus_per_trial)
                .num_gpus(args.gpus_per_trial),
        )
        .fit()?;

    let best = results.best_result(Some("loss"), Some(Mode::Min), "last")?;
    println!("Best trial config: {}", best.config);
    println!(
        "Best trial final validation loss: {:.4}",
        best.metric("loss").unwrap_or(f64::NAN)
    );
    println!(
        "Best trial final validation accuracy: {:.4}",
        best.metric("accuracy").unwrap_or(f64::NAN)
    );
    // The final test: the best checkpoint into a freshly built model.
    let ckpt = best
        .best_checkpoint("loss", Mode::Min)
        .or(best.checkpoint.as_deref())
        .ok_or_else(|| anyhow::anyhow!("the best trial left no checkpoint"))?;
    let s = spec(&best.config);
    let device = sunray_cifar::device(false, std::thread::available_parallelism()?.get());
    let (net, _) = train::load_checkpoint(s.l1, s.l2, ckpt, &device)?;
    let test = data::load_test(&data_dir)?;
    let all: Vec<usize> = (0..test.len()).collect();
    let (_, acc) = train::evaluate(&net, &test, &all, &device);
    println!(
        "Best trial test set accuracy: {acc:.4} ({} images)",
        test.len()
    );
    Ok(())
}
