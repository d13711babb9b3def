use std::path::PathBuf;

use clap::{Args, Subcommand};
use sunray_dashboard::experiments::Library;

#[derive(Subcommand)]
pub enum TuneCmd {
    /// Write an experiment's learning curves to a PNG (one line per trial).
    Plot(PlotArgs),
}

#[derive(Args)]
pub struct PlotArgs {
    /// The experiment's directory (Ray's layout, as sunray and Ray Tune write it).
    dir: PathBuf,
    /// The metric to draw (default: the experiment's, else the first one reported).
    #[arg(long)]
    metric: Option<String>,
    /// What to draw it against.
    #[arg(long, default_value = "training_iteration")]
    x: String,
    /// Where to write the PNG.
    #[arg(short, long, default_value = "curves.png")]
    output: PathBuf,
    #[arg(long, default_value_t = 1200)]
    width: u32,
    #[arg(long, default_value_t = 700)]
    height: u32,
}

/// Columns every result has, not worth drawing as a metric.
const AUTOMATIC: [&str; 8] = [
    "training_iteration",
    "time_this_iter_s",
    "time_total_s",
    "timestamp",
    "pid",
    "time_since_restore",
    "iterations_since_restore",
    "done",
];

pub fn run(c: TuneCmd) -> anyhow::Result<()> {
    let TuneCmd::Plot(a) = c;
    anyhow::ensure!(
        a.dir.is_dir(),
        "{} is not a directory: give an experiment's directory (~/sunray_results/<name>)",
        a.dir.display()
    );
    anyhow::ensure!(
        (100..=10_000).contains(&a.width) && (100..=10_000).contains(&a.height),
        "--width and --height must be between 100 and 10000 pixels"
    );
    let mut lib = Library::new(vec![a.dir.clone()]);
    let list = lib.list();
    let exp = match list.as_slice() {
        [one] => one.id.clone(),
        [] => anyhow::bail!(
            "{} holds no Tune experiment (no trial directories with result.json)",
            a.dir.display()
        ),
        many => anyhow::bail!(
            "{} holds {} experiments: give one of their directories ({})",
            a.dir.display(),
            many.len(),
            many.iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let view = lib.experiment(&exp).expect("listed just now");
    let metric = a
        .metric
        .or_else(|| view.metric.clone())
        .or_else(|| {
            view.metrics
                .iter()
                .find(|m| !AUTOMATIC.contains(&m.as_str()))
                .cloned()
        })
        .ok_or_else(|| anyhow::anyhow!("the trials reported no metric yet: nothing to draw"))?;
    anyhow::ensure!(
        view.metrics.contains(&metric),
        "no trial reported {metric:?}; the metrics are: {}",
        view.metrics.join(", ")
    );
    let curves = lib.curves(&exp, &metric, &a.x).expect("listed just now");
    let png = sunray_dashboard::plot::render(&view, &curves, &metric, &a.x, a.width, a.height);
    std::fs::write(&a.output, png)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", a.output.display()))?;
    println!(
        "wrote {}: {} curves of {metric} against {} ({}x{})",
        a.output.display(),
        curves.len(),
        a.x,
        a.width,
        a.height
    );
    Ok(())
}
