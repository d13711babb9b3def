//! The CIFAR example on the synthetic dataset: learning, checkpoints, restarts, the
//! whole `tune_cifar` job, and bad data.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::prelude::*;
use sunray_cifar::data::{self, Images};
use sunray_cifar::train::{self, TrialSpec};

fn fresh_tmp(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("sunray-cifar-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&p).ok();
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn synthetic(dir: &Path, per_file: usize) -> Images {
    data::write_synthetic(dir, per_file, per_file, 3).unwrap();
    data::load_train(dir).unwrap()
}

fn spec(max_epochs: u64) -> TrialSpec {
    TrialSpec {
        l1: 64,
        l2: 32,
        // Learns steadily in 3 epochs of this small set (at 0.01 the accuracy swings).
        lr: 0.003,
        batch_size: 8,
        max_epochs,
        seed: 1,
        log_every: 2000,
    }
}

fn device() -> Device {
    sunray_cifar::device(false, 2)
}

#[test]
fn a_trial_learns_the_synthetic_classes_well_above_chance() {
    let tmp = fresh_tmp("learn");
    let images = synthetic(&tmp, 400);
    let mut accuracies = Vec::new();
    train::run_trial(&spec(3), &images, None, &device(), |e| {
        accuracies.push(e.val_accuracy);
        Ok(true)
    })
    .unwrap();
    assert_eq!(accuracies.len(), 3);
    assert!(
        accuracies[2] > 0.3,
        "validation accuracy {accuracies:?} (chance is 0.1)"
    );
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn a_checkpoint_loads_into_a_fresh_model_with_identical_predictions() {
    let tmp = fresh_tmp("ckpt");
    let images = synthetic(&tmp.join("data"), 40);
    let dev = device();
    let ckpt = tmp.join("ckpt");
    std::fs::create_dir_all(&ckpt).unwrap();
    let mut before = None;
    train::run_trial(&spec(1), &images, None, &dev, |e| {
        train::save_epoch(&e, &ckpt)?;
        before = Some(
            e.net
                .forward(train::batch(&images, &[0, 1, 2, 3], &dev).0)
                .into_data(),
        );
        Ok(true)
    })
    .unwrap();
    let (net, _) = train::load_checkpoint(64, 32, &ckpt, &dev).unwrap();
    let after = net
        .forward(train::batch(&images, &[0, 1, 2, 3], &dev).0)
        .into_data();
    assert_eq!(before.unwrap(), after);
    // A checkpoint of another shape is refused with a message, not loaded wrongly.
    let err = train::load_checkpoint(128, 32, &ckpt, &dev)
        .err()
        .expect("shape mismatch refused");
    assert!(err.to_string().contains("cannot load the model"), "{err}");
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn a_restarted_trial_continues_from_the_next_epoch() {
    let tmp = fresh_tmp("restart");
    let images = synthetic(&tmp.join("data"), 40);
    let dev = device();
    let ckpt = tmp.join("ckpt");
    std::fs::create_dir_all(&ckpt).unwrap();
    train::run_trial(&spec(1), &images, None, &dev, |e| {
        train::save_epoch(&e, &ckpt)?;
        Ok(true)
    })
    .unwrap();
    let mut epochs = Vec::new();
    train::run_trial(&spec(3), &images, Some(&ckpt), &dev, |e| {
        epochs.push(e.epoch);
        Ok(true)
    })
    .unwrap();
    assert_eq!(epochs, [2, 3]);
    std::fs::remove_dir_all(&tmp).ok();
}

fn tune_cifar() -> Command {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("tune_cifar");
    assert!(
        p.is_file(),
        "build the example first: cargo build --example tune_cifar"
    );
    let mut c = Command::new(p);
    c.env_remove("SUNRAY_ADDRESS");
    c
}

#[test]
fn tune_cifar_runs_the_search_and_tests_the_best_trial() {
    let tmp = fresh_tmp("tune");
    let out = tune_cifar()
        .args([
            "--synthetic",
            "--synthetic-per-file",
            "300",
            "--num-samples",
            "4",
            "--max-epochs",
            "2",
        ])
        .args(["--cpus-per-trial", "1", "--name", "c", "--verbosity", "1"])
        .arg("--data-dir")
        .arg(tmp.join("data"))
        .arg("--storage-path")
        .arg(tmp.join("results"))
        .env("SUNRAY_TMPDIR", &tmp)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Wrote a synthetic CIFAR-10 stand-in"),
        "{stdout}"
    );
    assert!(stdout.contains("Best trial config: {"), "{stdout}");
    let acc: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Best trial test set accuracy: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("test accuracy printed");
    // Chance is 0.1 ± 0.007 on 1,500 images: 0.15 is far above it.
    assert!(acc > 0.15, "test accuracy {acc} (chance is 0.1)");
    let exp = tmp.join("results").join("c");
    let trials: Vec<PathBuf> = std::fs::read_dir(&exp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(trials.len(), 4);
    for t in &trials {
        let ck = t.join("checkpoint_000000");
        assert!(
            ck.join("model.bpk").is_file() && ck.join("optimizer.bpk").is_file(),
            "{}",
            t.display()
        );
    }
    std::fs::remove_dir_all(&tmp).ok();
}

/// Runs `tune_cifar --data-dir dir`; returns its exit code and stderr.
fn tune_cifar_on(dir: &Path, tmp: &Path) -> (Option<i32>, String) {
    let out = tune_cifar()
        .arg("--data-dir")
        .arg(dir)
        .env("SUNRAY_TMPDIR", tmp)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_or_truncated_dataset_is_reported_clearly() {
    let tmp = fresh_tmp("bad");
    let (code, err) = tune_cifar_on(&tmp.join("nowhere"), &tmp);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("data_batch_1.bin") && err.contains("--synthetic"),
        "{err}"
    );
    let d = tmp.join("data");
    data::write_synthetic(&d, 10, 10, 0).unwrap();
    let f = d.join("test_batch.bin");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 7]).unwrap();
    let (code, err) = tune_cifar_on(&d, &tmp);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("test_batch.bin") && err.contains("truncated"),
        "{err}"
    );
    std::fs::remove_dir_all(&tmp).ok();
}
