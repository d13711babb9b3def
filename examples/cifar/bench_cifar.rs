//! Training throughput of the CIFAR CNN on this machine's CPU (bench/cifar.sh prints
//! PyTorch's beside it): images per second of a training step (forward, backward, SGD
//! momentum) at batch sizes 4, 16 and 128, l1 = 120, l2 = 84, all cores.

use std::time::Instant;

use clap::Parser;
use sunray_cifar::{data::Images, model::Net, train};

#[derive(Parser)]
struct Args {
    #[arg(long, value_delimiter = ',', default_values_t = [4, 16, 128])]
    batch_sizes: Vec<usize>,
    /// Seconds measured per batch size (after a warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    #[arg(long)]
    threads: Option<usize>,
    /// Use the GPU (a binary built with --features cuda).
    #[arg(long)]
    gpu: bool,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let threads = a
        .threads
        .unwrap_or(std::thread::available_parallelism()?.get());
    let device = sunray_cifar::device(a.gpu, threads);
    let n = 1024;
    let images = Images {
        pixels: (0..n * 3072).map(|i| (i * 7 % 256) as u8).collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
    };
    for &b in &a.batch_sizes {
        device.seed(0);
        let mut net = Net::new(120, 84, &device);
        let mut optim = train::sgd();
        let idx: Vec<usize> = (0..b).map(|i| i % n).collect();
        // One batch made once and reused, as the PyTorch side does: this measures the
        // training step (forward, backward, SGD), not data preparation.
        let (x, y) = train::batch(&images, &idx, &device);
        let probe = train::batch(&images, &idx[..1], &device).0;
        let mut run = |net: Net, steps: usize| {
            let mut net = net;
            for _ in 0..steps {
                net = train::step(net, &mut optim, x.clone(), y.clone(), 0.001).0;
            }
            // Wait for the device: read one value back.
            let _: f32 = net.forward(probe.clone()).sum().into_scalar();
            net
        };
        net = run(net, 20);
        let t = Instant::now();
        let mut steps = 0;
        while t.elapsed().as_secs_f64() < a.seconds {
            net = run(net, 10);
            steps += 10;
        }
        let ips = (steps * b) as f64 / t.elapsed().as_secs_f64();
        println!(
            "burn  batch {b:>4}: {ips:>9.0} images/s ({threads} threads{})",
            if a.gpu { ", GPU" } else { "" }
        );
    }
    Ok(())
}
