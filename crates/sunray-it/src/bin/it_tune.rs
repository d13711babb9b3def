//! Fixture driver for the Tune integration tests: `it_tune <scenario> <storage dir>`.
//! Prints `KEY value` lines the tests read; the experiment directory is the evidence.

use std::time::Duration;

use sunray_tune::{
    grid_search, uniform, Asha, Checkpoint, Config, HyperBand, Mode, Pbt, RunConfig, Session,
    Space, Stop, TrainResult, TuneConfig, Tuner,
};

/// Writes the iteration (and a value) into a fresh checkpoint.
fn save(session: &Session, it: u64, value: f64) -> Result<Checkpoint, std::io::Error> {
    let c = session.new_checkpoint_dir()?;
    std::fs::write(c.path().join("state"), format!("{it} {value}"))?;
    Ok(c)
}

fn load(session: &Session) -> (u64, f64) {
    session
        .checkpoint()
        .and_then(|c| std::fs::read_to_string(c.path().join("state")).ok())
        .and_then(|s| {
            let (a, b) = s.split_once(' ')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((0, 0.0))
}

/// Fails once at iteration 3 (when `flaky`), or always (when `broken`).
fn flaky(config: &Config, session: &mut Session) -> TrainResult {
    let (start, _) = load(session);
    for it in start + 1..=5 {
        if config.str("kind") == "broken" && it == 2 {
            panic!("broken on purpose");
        }
        if config.str("kind") == "flaky" && it == 3 && session.restored_iteration() == 0 {
            return Err("flaky on purpose".into());
        }
        session.report([("score", it as f64)], Some(save(session, it, 0.0)?))?;
    }
    Ok(())
}
sunray_tune::register_trainable!(flaky);

/// Reports where it runs.
fn where_am_i(_: &Config, session: &mut Session) -> TrainResult {
    for it in 1..=3 {
        std::thread::sleep(Duration::from_millis(50));
        session.report([("it", it as f64)], Some(save(session, it, 0.0)?))?;
    }
    Ok(())
}
sunray_tune::register_trainable!(where_am_i);

/// Accuracy grows by `lr` per iteration, from the checkpoint's accuracy.
fn grow(config: &Config, session: &mut Session) -> TrainResult {
    let (start, mut acc) = load(session);
    for it in start + 1..=12 {
        acc += config.f64("lr");
        session.report([("acc", acc)], Some(save(session, it, acc)?))?;
    }
    Ok(())
}
sunray_tune::register_trainable!(grow);

/// 15 slow iterations, a checkpoint each: long enough to lose a node in the middle.
fn slow(config: &Config, session: &mut Session) -> TrainResult {
    let (start, mut acc) = load(session);
    for it in start + 1..=15 {
        std::thread::sleep(Duration::from_millis(60));
        acc += config.f64("lr");
        session.report([("acc", acc)], Some(save(session, it, acc)?))?;
    }
    Ok(())
}
sunray_tune::register_trainable!(slow);

/// Runs until stopped.
fn forever(_: &Config, session: &mut Session) -> TrainResult {
    loop {
        std::thread::sleep(Duration::from_millis(20));
        session.report([("x", 1.0)], None)?;
    }
}
sunray_tune::register_trainable!(forever);

/// A full disk, simulated with `/dev/full` (every write to it fails with ENOSPC, as on a
/// full filesystem; nothing else reads the links it leaves). "checkpoint": the
/// metadata file of its checkpoint (which the worker writes) cannot be written.
/// "results": from its second attempt, its result.json (which the driver appends to)
/// cannot be written, and neither can its error.txt (a directory in its place), so the
/// reasons must reach the driver's log. "ok": runs to its end.
fn disk_full(config: &Config, session: &mut Session) -> TrainResult {
    use std::os::unix::fs::symlink;
    let dir = session.trial_dir().to_path_buf();
    match config.str("kind") {
        "checkpoint" => {
            let c = session.new_checkpoint_dir()?;
            std::fs::write(c.path().join("state"), "1 0")?;
            symlink("/dev/full", c.path().join(".tune_checkpoint.json"))?;
            session.report([("score", 1.0)], Some(c))?;
            Err("the report of a checkpoint that could not be saved went on".into())
        }
        "results" => {
            let result = dir.join("result.json");
            if !dir.join("first_attempt").exists() {
                // The driver has result.json open already: it opens the link when the
                // trial starts again.
                std::fs::write(dir.join("first_attempt"), "")?;
                std::fs::remove_file(&result)?;
                symlink("/dev/full", &result)?;
                std::fs::create_dir(dir.join("error.txt"))?;
                return Err("failing once, so that the retry opens result.json again".into());
            }
            let r = session.report([("score", 1.0)], None);
            // Nothing may read /dev/full once the trial ended (it never ends).
            std::fs::remove_file(&result)?;
            r?;
            Err("the report whose result could not be written went on".into())
        }
        _ => {
            for it in 1..=3 {
                session.report([("score", it as f64)], Some(save(session, it, 0.0)?))?;
            }
            Ok(())
        }
    }
}
sunray_tune::register_trainable!(disk_full);

fn not_registered(_: &Config, _: &mut Session) -> TrainResult {
    Ok(())
}

fn main() {
    sunray::init().expect("init");
    let args: Vec<String> = std::env::args().collect();
    let storage = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "/tmp/it_tune".into());
    let rc = RunConfig::new().storage_path(&storage).verbosity(1);
    let outcome = match args.get(1).map(String::as_str) {
        Some("flaky") => Tuner::new(flaky)
            .param_space(Space::new().with("kind", grid_search(["ok", "flaky", "broken"])))
            .run_config(rc.name("flaky").max_failures(1))
            .fit(),
        Some("spread") => Tuner::new(where_am_i)
            .param_space(Space::new().with("x", uniform(0.0, 1.0)))
            .tune_config(TuneConfig::new().num_samples(6))
            .run_config(rc.name("spread"))
            .fit(),
        Some("pbt") => Tuner::new(grow)
            .param_space(Space::new().with("lr", grid_search([0.01, 0.02, 0.5, 1.0])))
            .tune_config(
                TuneConfig::new()
                    .metric("acc", Mode::Max)
                    .seed(1)
                    .scheduler(
                        Pbt::new()
                            .time_attr("training_iteration")
                            .perturbation_interval(3.0)
                            .resample_probability(0.0)
                            .mutate("lr", vec![0.01, 0.02, 0.5, 1.0]),
                    ),
            )
            .run_config(rc.name("pbt"))
            .fit(),
        Some("hyperband") => Tuner::new(grow)
            .param_space(Space::new().with("lr", uniform(0.0, 1.0)))
            .tune_config(
                TuneConfig::new()
                    .metric("acc", Mode::Max)
                    .num_samples(9)
                    .scheduler(HyperBand::new().max_t(9.0).reduction_factor(3.0)),
            )
            .run_config(rc.name("hyperband"))
            .fit(),
        Some("asha") => Tuner::new(grow)
            .param_space(Space::new().with("lr", uniform(0.0, 1.0)))
            .tune_config(
                TuneConfig::new()
                    .metric("acc", Mode::Max)
                    .num_samples(8)
                    .seed(4)
                    .scheduler(
                        Asha::new()
                            .max_t(12.0)
                            .grace_period(1.0)
                            .reduction_factor(2.0),
                    ),
            )
            .run_config(rc.name("asha"))
            .fit(),
        Some("slow") => Tuner::new(slow)
            .param_space(Space::new().with("lr", uniform(0.0, 1.0)))
            .tune_config(TuneConfig::new().num_samples(3))
            .run_config(rc.name("slow"))
            .fit(),
        Some("budget") => Tuner::new(forever)
            .tune_config(
                TuneConfig::new()
                    .num_samples(3)
                    .time_budget(Duration::from_millis(600)),
            )
            .run_config(rc.name("budget"))
            .fit(),
        Some("stop") => Tuner::new(forever)
            .tune_config(TuneConfig::new().num_samples(2))
            .run_config(rc.name("stop").stop(Stop::new().max_iterations(4)))
            .fit(),
        Some(mode @ ("resume_errored" | "restart_errored")) => {
            let exp = std::path::Path::new(&storage).join("flaky");
            Tuner::restore(&exp, flaky)
                .expect("restorable")
                .param_space(Space::new().with("kind", grid_search(["ok", "flaky", "broken"])))
                .run_config(rc.max_failures(1))
                .resume_errored(mode == "resume_errored")
                .restart_errored(mode == "restart_errored")
                .fit()
        }
        Some("disk_full") => Tuner::new(disk_full)
            .param_space(Space::new().with("kind", grid_search(["checkpoint", "results", "ok"])))
            .run_config(rc.name("disk_full").max_failures(1))
            .fit(),
        Some("unregistered") => Tuner::new(not_registered)
            .run_config(rc.name("unregistered"))
            .fit(),
        other => panic!("unknown scenario {other:?}"),
    };
    match outcome {
        Ok(grid) => {
            println!("EXPERIMENT {}", grid.experiment_path.display());
            for r in grid.iter() {
                println!(
                    "TRIAL {} {} {} {}",
                    r.trial_id,
                    r.status,
                    r.metric("training_iteration").unwrap_or(0.0),
                    r.error
                        .as_deref()
                        .unwrap_or("-")
                        .lines()
                        .next()
                        .unwrap_or("")
                );
            }
            println!("ERRORS {}", grid.num_errors());
            for scope in ["last", "all", "avg", "last-5-avg", "last-10-avg"] {
                if let Ok(b) = grid.best_result(Some("score"), Some(Mode::Max), scope) {
                    println!("BEST {scope} {}", b.trial_id);
                }
            }
        }
        Err(e) => {
            println!("FAILED {e}");
            std::process::exit(3);
        }
    }
}
