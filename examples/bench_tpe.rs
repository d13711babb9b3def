//! Search-quality benchmark: sunray's searchers driven through their ask/tell API
//! (`Searcher::suggest` / `on_trial_complete`) on standard test functions, as
//! kurobako does. `bench/tpe.sh` runs this and Optuna's samplers on the same functions
//! (`bench/tpe_optuna.py`) and prints one table.
//!
//! ```text
//! target/release/examples/bench_tpe --seeds 20 --evals 100 [--parallel 8]
//!     [--functions branin,mixed] [--searchers "sunray TPE"]
//! ```
//! prints one JSON line per (function, searcher, seed): the best regret (best value
//! minus the optimum) after 25, 50 and 100 results, and the searcher's own time.

use std::f64::consts::PI;
use std::time::Instant;

use sunray_tune::*;

struct Problem {
    name: &'static str,
    space: Space,
    f: fn(&Config) -> f64,
    optimum: f64,
    /// A learning curve (loss at each iteration) run under ASHA instead of `f`.
    curve: Option<fn(&Config, u64) -> f64>,
}

/// The learning-curve task's length and ASHA's settings (rungs at 1, 3, 9; 27 ends).
const CURVE_MAX_T: u64 = 27;

/// A synthetic training run: the loss falls from 2 towards a floor set by the config,
/// faster with a larger learning rate and momentum, so that early rungs favour configs
/// that learn fast over those that end best (as real learning curves do). The best
/// floor is 0 (lr = 1e-2, momentum = 0.9, width = 128, dropout = 0.3).
fn learning_curve(c: &Config, t: u64) -> f64 {
    let (lr, mom, width, drop) = (
        c.f64("lr"),
        c.f64("momentum"),
        c.i64("width") as f64,
        c.f64("dropout"),
    );
    let floor = 0.3 * (lr.log10() + 2.0).powi(2)
        + 2.0 * (mom - 0.9).powi(2)
        + 0.05 * (width.log2() - 7.0).powi(2)
        + 0.5 * (drop - 0.3).powi(2);
    let rate = 0.05 + 0.5 * lr.sqrt() * (1.0 + mom);
    floor + 2.0 * (-rate * t as f64).exp()
}

fn xs(c: &Config, n: usize) -> Vec<f64> {
    (0..n).map(|i| c.f64(&format!("x{i}"))).collect()
}

fn box_space(n: usize, lo: f64, hi: f64) -> Space {
    (0..n).fold(Space::new(), |s, i| {
        s.with(&format!("x{i}"), uniform(lo, hi))
    })
}

fn branin(c: &Config) -> f64 {
    let (x1, x2) = (c.f64("x0"), c.f64("x1"));
    let b = 5.1 / (4.0 * PI * PI);
    let cc = 5.0 / PI;
    let t = 1.0 / (8.0 * PI);
    (x2 - b * x1 * x1 + cc * x1 - 6.0).powi(2) + 10.0 * (1.0 - t) * x1.cos() + 10.0
}

fn hartmann6(c: &Config) -> f64 {
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
        [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
        [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
        [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
    ];
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    let x = xs(c, 6);
    -(0..4)
        .map(|i| {
            let s: f64 = (0..6).map(|j| A[i][j] * (x[j] - P[i][j]).powi(2)).sum();
            ALPHA[i] * (-s).exp()
        })
        .sum::<f64>()
}

fn rosenbrock4(c: &Config) -> f64 {
    let x = xs(c, 4);
    (0..3)
        .map(|i| 100.0 * (x[i + 1] - x[i] * x[i]).powi(2) + (1.0 - x[i]).powi(2))
        .sum()
}

fn ackley5(c: &Config) -> f64 {
    let x = xs(c, 5);
    let n = x.len() as f64;
    let s1: f64 = x.iter().map(|v| v * v).sum::<f64>() / n;
    let s2: f64 = x.iter().map(|v| (2.0 * PI * v).cos()).sum::<f64>() / n;
    -20.0 * (-0.2 * s1.sqrt()).exp() - s2.exp() + 20.0 + std::f64::consts::E
}

fn sphere20(c: &Config) -> f64 {
    xs(c, 20).iter().map(|v| v * v).sum()
}

/// A log-scaled float, an integer and a categorical, as hyperparameters are.
fn mixed(c: &Config) -> f64 {
    let lr = c.f64("lr");
    let n = c.i64("n") as f64;
    let cat = match c.str("c") {
        "a" => 0.5,
        "b" => 0.0,
        _ => 1.0,
    };
    (lr.log10() + 3.0).powi(2) / 4.0 + ((n - 42.0) / 50.0).powi(2) + cat
}

fn problems() -> Vec<Problem> {
    vec![
        Problem {
            name: "branin",
            space: Space::new()
                .with("x0", uniform(-5.0, 10.0))
                .with("x1", uniform(0.0, 15.0)),
            f: branin,
            optimum: 0.397_887_357_729_739,
            curve: None,
        },
        Problem {
            name: "hartmann6",
            space: box_space(6, 0.0, 1.0),
            f: hartmann6,
            optimum: -3.322_368_011_415_51,
            curve: None,
        },
        Problem {
            name: "rosenbrock4",
            space: box_space(4, -5.0, 10.0),
            f: rosenbrock4,
            optimum: 0.0,
            curve: None,
        },
        Problem {
            name: "ackley5",
            space: box_space(5, -32.768, 32.768),
            f: ackley5,
            optimum: 0.0,
            curve: None,
        },
        Problem {
            name: "mixed",
            space: Space::new()
                .with("lr", loguniform(1e-5, 1.0))
                .with("n", randint(1, 101))
                .with("c", choice(["a", "b", "c"])),
            f: mixed,
            optimum: 0.0,
            curve: None,
        },
        Problem {
            name: "sphere20",
            space: box_space(20, -5.0, 5.0),
            f: sphere20,
            optimum: 0.0,
            curve: None,
        },
        Problem {
            name: "curve_asha",
            space: Space::new()
                .with("lr", loguniform(1e-4, 1.0))
                .with("momentum", uniform(0.0, 0.99))
                .with("width", randint(16, 513))
                .with("dropout", uniform(0.0, 0.8)),
            f: |c| learning_curve(c, CURVE_MAX_T),
            optimum: 0.0,
            curve: Some(learning_curve),
        },
    ]
}

/// Runs `evals` evaluations with `parallel` suggestions outstanding (the oldest is told
/// first, as trials of equal length finish); the best regret after each result, and
/// the time spent inside the searcher.
fn run(
    p: &Problem,
    mut s: Box<dyn Searcher>,
    evals: usize,
    parallel: usize,
    seed: u64,
) -> (Vec<f64>, f64) {
    let mut searcher_s = 0.0;
    let t = Instant::now();
    s.setup(&p.space, "y", Mode::Min, evals, seed).unwrap();
    searcher_s += t.elapsed().as_secs_f64();
    let mut live = std::collections::VecDeque::new();
    let mut asha = Asha::new()
        .max_t(CURVE_MAX_T as f64)
        .grace_period(1.0)
        .reduction_factor(3.0);
    asha.set_metric("y", Mode::Min);
    let (mut asked, mut best, mut curve) = (0usize, f64::INFINITY, Vec::new());
    while curve.len() < evals {
        while live.len() < parallel && asked < evals {
            let id = asked.to_string();
            let t = Instant::now();
            let sug = s.suggest(&p.space, &id);
            searcher_s += t.elapsed().as_secs_f64();
            match sug {
                Suggestion::Config(c) => {
                    asha.on_trial_add(&id, &c);
                    live.push_back((id, c))
                }
                _ => break,
            }
            asked += 1;
        }
        let Some((id, c)) = live.pop_front() else {
            break;
        };
        if let Some(curve_fn) = p.curve {
            // ASHA decides after each iteration; the searcher is told the last loss
            // the trial reached (as Ray's searchers are), the regret counts only trials
            // that ran to the end.
            let mut last = f64::NAN;
            for t in 1..=CURVE_MAX_T {
                last = curve_fn(&c, t);
                let r = TrialResult {
                    training_iteration: t,
                    time_total_s: t as f64,
                    metrics: [("y".to_string(), last)].into(),
                };
                // The searcher sees each result, as the controller shows it.
                let mut row = serde_json::Map::new();
                row.insert("training_iteration".into(), t.into());
                row.insert("y".into(), last.into());
                s.on_trial_result(&id, &row);
                if asha.on_trial_result(&id, &r) == Decision::Stop {
                    if t == CURVE_MAX_T {
                        best = best.min(last);
                    }
                    break;
                }
            }
            asha.on_trial_complete(&id, None);
            let t = Instant::now();
            s.on_trial_complete(&id, Some(last), false);
            searcher_s += t.elapsed().as_secs_f64();
            curve.push(best - p.optimum);
            continue;
        }
        let y = (p.f)(&c);
        let t = Instant::now();
        s.on_trial_complete(&id, Some(y), false);
        searcher_s += t.elapsed().as_secs_f64();
        best = best.min(y);
        curve.push(best - p.optimum);
    }
    (curve, searcher_s)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse().expect("a number"))
            .unwrap_or(default)
    };
    let (seeds, evals, parallel) = (
        flag("--seeds", 20),
        flag("--evals", 100),
        flag("--parallel", 1),
    );
    let list = |name: &str| -> Vec<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    };
    let (functions, searchers) = (list("--functions"), list("--searchers"));
    let wanted = |names: &[String], n: &str| names.is_empty() || names.iter().any(|x| x == n);
    for p in problems() {
        if !wanted(&functions, p.name) {
            continue;
        }
        for seed in 0..seeds as u64 {
            let all: Vec<(&str, Box<dyn Searcher>)> = vec![
                ("random", Box::new(BasicVariantGenerator::new())),
                ("sunray TPE", Box::new(Tpe::new())),
                ("sunray TPE as Optuna", Box::new(Tpe::optuna())),
            ];
            for (name, s) in all {
                if !wanted(&searchers, name) {
                    continue;
                }
                let (curve, secs) = run(&p, s, evals, parallel, seed);
                let at = |k: usize| curve[(k.min(curve.len())).max(1) - 1];
                println!(
                    "{}",
                    serde_json::json!({
                        "function": p.name, "searcher": name, "seed": seed,
                        "parallel": parallel, "evals": curve.len(),
                        "regret": {"25": at(25), "50": at(50), "100": at(100)},
                        "searcher_s_per_100": secs * 100.0 / curve.len() as f64,
                    })
                );
            }
        }
    }
}
