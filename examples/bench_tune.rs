//! Tune's overhead figures (bench/tune.sh prints them beside Ray Tune's):
//! 200 trials x 10 iterations of a no-op trainable with FIFO and with ASHA, the time
//! per result of reporting a 1 MB checkpoint, and the driver's memory as thousands of
//! trials come and go.

use std::time::Instant;

use clap::Parser;
use sunray_tune::{
    uniform, Asha, CheckpointConfig, Config, Fifo, Mode, RunConfig, Session, Space, TrainResult,
    TrialScheduler, TuneConfig, Tuner,
};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 200)]
    trials: usize,
    /// Trials of the memory run (after which the driver's RSS is printed again).
    #[arg(long, default_value_t = 5000)]
    memory_trials: usize,
}

const ITERS: u64 = 10;

fn noop(config: &Config, session: &mut Session) -> TrainResult {
    for i in 1..=ITERS {
        session.report([("score", config.f64("x") * i as f64)], None)?;
    }
    Ok(())
}
sunray_tune::register_trainable!(noop);

fn with_checkpoint(config: &Config, session: &mut Session) -> TrainResult {
    let blob = vec![7u8; 1 << 20];
    let t0 = Instant::now();
    let mut in_report = 0.0;
    for i in 0..config.i64("n") {
        let c = session.new_checkpoint_dir()?;
        std::fs::write(c.path().join("blob"), &blob)?;
        let r = Instant::now();
        // Reported: the whole time so far, and the time spent inside `report` (moving
        // the checkpoint into place and the round trip to the driver) before this one.
        session.report(
            [
                ("score", i as f64),
                ("t", t0.elapsed().as_secs_f64()),
                ("in_report", in_report),
            ],
            Some(c),
        )?;
        in_report += r.elapsed().as_secs_f64();
    }
    Ok(())
}
sunray_tune::register_trainable!(with_checkpoint);

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    sunray::init()?;
    let args = Args::parse();
    let storage = std::env::temp_dir().join(format!("sunray-bench-tune-{}", std::process::id()));
    let rc = |name: &str| {
        RunConfig::new()
            .storage_path(&storage)
            .name(name)
            .verbosity(0)
    };
    let space = || Space::new().with("x", uniform(0.0, 1.0));
    let run = |name: &str,
               trials: usize,
               sched: Box<dyn Fn() -> Box<dyn TrialScheduler>>|
     -> anyhow::Result<(f64, u64)> {
        let mut tc = TuneConfig::new()
            .metric("score", Mode::Max)
            .num_samples(trials);
        tc.scheduler = sched();
        let t = Instant::now();
        let grid = Tuner::new(noop)
            .param_space(space())
            .tune_config(tc)
            .run_config(rc(name))
            .fit()?;
        let wall = t.elapsed().as_secs_f64();
        let results: u64 = grid
            .iter()
            .filter_map(|r| r.metric("training_iteration"))
            .map(|x| x as u64)
            .sum();
        Ok((wall, results))
    };
    for (name, sched) in [
        (
            "FIFO",
            Box::new(|| Box::new(Fifo) as Box<dyn TrialScheduler>)
                as Box<dyn Fn() -> Box<dyn TrialScheduler>>,
        ),
        (
            "ASHA",
            Box::new(|| {
                Box::new(
                    Asha::new()
                        .max_t(ITERS as f64)
                        .grace_period(1.0)
                        .reduction_factor(2.0),
                ) as Box<dyn TrialScheduler>
            }),
        ),
    ] {
        let (wall, results) = run(&name.to_lowercase(), args.trials, sched)?;
        println!(
            "sunray-tune {name:<5} {} trials: {wall:8.3} s, {results} results, {:8.1} results/s",
            args.trials,
            results as f64 / wall
        );
    }
    let n = 50;
    let grid = Tuner::new(with_checkpoint)
        .param_space(Space::new().with("n", n))
        .tune_config(TuneConfig::new())
        .run_config(rc("checkpoint").checkpoint_config(CheckpointConfig::default().num_to_keep(2)))
        .fit()?;
    // Per result, in ms: the whole iteration (writing the 1 MB file included), and the
    // part spent inside `report` (moving the checkpoint into place, the round trip).
    let per_result = |k: &str| {
        grid.get(0).and_then(|r| r.metric(k)).unwrap_or(f64::NAN) / (n - 1) as f64 * 1000.0
    };
    println!(
        "sunray-tune checkpoint 1 MB + report: {:8.3} ms per result (inside report: {:.3} ms)",
        per_result("t"),
        per_result("in_report")
    );
    // The driver's memory while trials come and go: RSS sampled every 20 ms during a
    // long run; its value at 20 % and at 80 % of the run (the results grid, which
    // holds every trial, is read back from disk only at the very end).
    let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (samples, stop) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                samples.lock().unwrap().push(rss_mb());
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let (wall, _) = run("memory", args.memory_trials, Box::new(|| Box::new(Fifo)))?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().expect("sampler");
    let s = samples.lock().unwrap();
    let at = |f: f64| s[((s.len() - 1) as f64 * f) as usize];
    println!(
        "sunray-tune driver RSS during {} trials ({wall:.1} s): {:.1} MB at 20 %, {:.1} MB at 80 %",
        args.memory_trials,
        at(0.2),
        at(0.8)
    );
    std::fs::remove_dir_all(&storage).ok();
    Ok(())
}
