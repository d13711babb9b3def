//! The README's Tune example, built here so that it keeps compiling and running.

use rand::Rng;
use sunray_tune::*;

fn train(config: &Config, session: &mut Session) -> TrainResult {
    let start = match session.checkpoint() {
        // set when resumed, restarted or exploited
        Some(c) => std::fs::read_to_string(c.path().join("epoch"))?.parse::<u64>()?,
        None => 0,
    };
    for epoch in start + 1..=10 {
        let loss = (config.f64("lr").log10() + 2.5).powi(2) / epoch as f64;
        let ckpt = session.new_checkpoint_dir()?; // moved into the experiment, not copied
        std::fs::write(ckpt.path().join("epoch"), epoch.to_string())?;
        session.report([("loss", loss)], Some(ckpt))?; // Err(Stopped) when ASHA cuts the trial
    }
    Ok(())
}
sunray_tune::register_trainable!(train);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    sunray::init()?; // embedded cluster, or $SUNRAY_ADDRESS
    let results = Tuner::new(train)
        .param_space(
            Space::new()
                .with("lr", loguniform(1e-4, 1e-1))
                .with("batch_size", choice([2, 4, 8, 16]))
                .with(
                    "model",
                    Space::new().with("l1", sample_from(|r, _| 1i64 << r.random_range(2..9))),
                ),
        )
        .tune_config(
            TuneConfig::new()
                .metric("loss", Mode::Min)
                .num_samples(100)
                .seed(7)
                .scheduler(
                    Asha::new()
                        .max_t(10.0)
                        .grace_period(1.0)
                        .reduction_factor(2.0),
                ),
        )
        .run_config(
            RunConfig::new()
                .name("my_search")
                .max_failures(2)
                .checkpoint_config(CheckpointConfig::default().num_to_keep(2)),
        )
        .resources(sunray::TaskOptions::new().num_cpus(1.0)) // .num_gpus(1.0) on GPU nodes
        .fit()?;
    let best = results.best_result(None, None, "last")?; // scopes: last, all, avg, last-5-avg, last-10-avg
    println!(
        "{} {:?} {:?}",
        best.config,
        best.metric("loss"),
        best.checkpoint
    );
    results.to_csv("results.csv")?;
    Ok(())
}
