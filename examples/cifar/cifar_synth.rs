//! Writes a learnable synthetic dataset in the CIFAR-10 binary format (for machines
//! that cannot download CIFAR-10): `cargo run --example cifar_synth -- --data-dir DIR`.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Write a synthetic CIFAR-10 stand-in (same binary format)")]
struct Args {
    #[arg(long, default_value = "./data/cifar-10-batches-bin")]
    data_dir: PathBuf,
    /// Images in each of the 5 training files.
    #[arg(long, default_value_t = 2000)]
    per_file: usize,
    /// Images in the test file.
    #[arg(long, default_value_t = 2000)]
    test: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Replace a dataset already there.
    #[arg(long)]
    force: bool,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if sunray_cifar::data::has_any(&a.data_dir) && !a.force {
        anyhow::bail!(
            "{} already holds CIFAR-10 files; pass --force to replace them",
            a.data_dir.display()
        );
    }
    sunray_cifar::data::write_synthetic(&a.data_dir, a.per_file, a.test, a.seed)?;
    println!(
        "Wrote {} training and {} test images to {}",
        a.per_file * 5,
        a.test,
        a.data_dir.display()
    );
    Ok(())
}
