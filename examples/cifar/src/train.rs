//! Training and evaluation of [`Net`] on CIFAR images, and its checkpoints (model and
//! optimizer state, burnpack files).

use std::path::Path;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;

use crate::data::{Images, PIXELS};
use crate::model::Net;

/// SGD with momentum 0.9, as PyTorch's (no dampening, which burn defaults to 0.1).
pub fn sgd() -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new()
                .with_momentum(0.9)
                .with_dampening(0.0)
                .with_nesterov(false),
        ))
        .init()
}

/// A batch of images `[b, 3, 32, 32]` in [-1, 1] and their labels.
pub fn batch(data: &Images, idx: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let mut px = Vec::with_capacity(idx.len() * PIXELS);
    for &i in idx {
        data.normalised(i, &mut px);
    }
    let labels: Vec<i64> = idx.iter().map(|&i| data.labels[i] as i64).collect();
    let x = Tensor::<4>::from_data(TensorData::new(px, [idx.len(), 3, 32, 32]), device);
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [idx.len()]), device);
    (x, y)
}

/// One training step; returns the updated model and the batch's loss.
pub fn step(
    net: Net,
    optim: &mut ModuleOptimizer,
    x: Tensor<4>,
    y: Tensor<1, Int>,
    lr: f64,
) -> (Net, f32) {
    let device = x.device();
    let logits = net.forward(x);
    let loss = CrossEntropyLossConfig::new()
        .init(&device)
        .forward(logits, y);
    let value: f32 = loss.clone().into_scalar();
    let grads = GradientsParams::from_grads(loss.backward(), &net);
    (optim.step(lr, net, grads), value)
}

/// One pass over `train` in mini-batches of the spec's size (shuffled by epoch),
/// printing the running loss every `spec.log_every` mini-batches as the seed does.
pub fn train_epoch(
    mut net: Net,
    optim: &mut ModuleOptimizer,
    data: &Images,
    train: &[usize],
    spec: &TrialSpec,
    epoch: u64,
    device: &Device,
) -> Net {
    let order = shuffled(train, epoch);
    let mut running = 0.0f64;
    for (i, chunk) in order.chunks(spec.batch_size).enumerate() {
        let (x, y) = batch(data, chunk, device);
        let (n, loss) = step(net, optim, x, y, spec.lr);
        net = n;
        running += loss as f64;
        if (i + 1) % spec.log_every == 0 {
            println!(
                "[{}, {:5}] loss: {:.3}",
                epoch,
                i + 1,
                running / spec.log_every as f64
            );
            running = 0.0;
        }
    }
    net
}

fn shuffled(v: &[usize], seed: u64) -> Vec<usize> {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let mut out = v.to_vec();
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for i in (1..out.len()).rev() {
        out.swap(i, rng.random_range(0..=i));
    }
    out
}

/// Mean loss and accuracy of `net` on the images `idx`.
pub fn evaluate(net: &Net, data: &Images, idx: &[usize], device: &Device) -> (f64, f64) {
    let net = net.valid();
    let eval_device = net_device(device);
    let loss_fn = CrossEntropyLossConfig::new().init(&eval_device);
    let (mut loss, mut correct, mut batches) = (0.0f64, 0usize, 0usize);
    for chunk in idx.chunks(256) {
        let (x, y) = batch(data, chunk, &eval_device);
        let logits = net.forward(x);
        let l: f32 = loss_fn.forward(logits.clone(), y.clone()).into_scalar();
        loss += l as f64;
        batches += 1;
        let pred = logits.argmax(1).flatten::<1>(0, 1);
        let hits: i64 = pred.equal(y).int().sum().into_scalar();
        correct += hits as usize;
    }
    (
        loss / batches.max(1) as f64,
        correct as f64 / idx.len().max(1) as f64,
    )
}

/// The device without autodiff, for inference.
fn net_device(device: &Device) -> Device {
    device.clone().without_autodiff()
}

/// Saves the model and the optimizer state into `dir`.
pub fn save_checkpoint(net: &Net, optim: &ModuleOptimizer, dir: &Path) -> anyhow::Result<()> {
    net.clone()
        .save_file(dir.join("model.bpk"))
        .map_err(|e| anyhow::anyhow!("cannot save the model in {}: {e:?}", dir.display()))?;
    optim
        .save(dir.join("optimizer.bpk"))
        .map_err(|e| anyhow::anyhow!("cannot save the optimizer in {}: {e:?}", dir.display()))
}

/// Loads a checkpoint into a freshly built model (and optimizer).
pub fn load_checkpoint(
    l1: usize,
    l2: usize,
    dir: &Path,
    device: &Device,
) -> anyhow::Result<(Net, ModuleOptimizer)> {
    let net = Net::new(l1, l2, device)
        .try_load_file(dir.join("model.bpk"))
        .map_err(|e| anyhow::anyhow!("cannot load the model from {}: {e:?}", dir.display()))?;
    let optim = sgd()
        .load(dir.join("optimizer.bpk"))
        .map_err(|e| anyhow::anyhow!("cannot load the optimizer from {}: {e:?}", dir.display()))?;
    Ok((net, optim))
}

/// A trial's settings (its sampled hyperparameters and the fixed ones).
#[derive(Debug, Clone)]
pub struct TrialSpec {
    pub l1: usize,
    pub l2: usize,
    pub lr: f64,
    pub batch_size: usize,
    pub max_epochs: u64,
    pub seed: u64,
    /// Print the running loss every this many mini-batches (the seed: 2,000).
    pub log_every: usize,
}

/// What the trial reports after each epoch.
pub struct EpochEnd<'a> {
    pub epoch: u64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub net: &'a Net,
    pub optim: &'a ModuleOptimizer,
}

/// Trains from `checkpoint` (model, optimizer and the epoch it ended) or from scratch,
/// up to `max_epochs`, calling `on_epoch` after each epoch; it returns false to stop.
pub fn run_trial(
    spec: &TrialSpec,
    data: &Images,
    checkpoint: Option<&Path>,
    device: &Device,
    mut on_epoch: impl FnMut(EpochEnd<'_>) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let (train_idx, val_idx) = crate::data::split(data.len(), spec.seed);
    let (mut net, mut optim, start) = match checkpoint {
        Some(dir) => {
            let (net, optim) = load_checkpoint(spec.l1, spec.l2, dir, device)?;
            let epoch: u64 = std::fs::read_to_string(dir.join("epoch"))?.trim().parse()?;
            (net, optim, epoch)
        }
        None => {
            device.seed(spec.seed);
            (Net::new(spec.l1, spec.l2, device), sgd(), 0)
        }
    };
    for epoch in start + 1..=spec.max_epochs {
        net = train_epoch(net, &mut optim, data, &train_idx, spec, epoch, device);
        let (val_loss, val_accuracy) = evaluate(&net, data, &val_idx, device);
        let go_on = on_epoch(EpochEnd {
            epoch,
            val_loss,
            val_accuracy,
            net: &net,
            optim: &optim,
        })?;
        if !go_on {
            break;
        }
    }
    Ok(())
}

/// Writes a checkpoint of an epoch's end into `dir`.
pub fn save_epoch(e: &EpochEnd<'_>, dir: &Path) -> anyhow::Result<()> {
    save_checkpoint(e.net, e.optim, dir)?;
    std::fs::write(dir.join("epoch"), e.epoch.to_string())?;
    Ok(())
}
