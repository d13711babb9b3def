//! A simulated tuning loop for the schedulers: trials with a hidden quality report in
//! a random interleaving over a few slots, as the controller would drive them, with no
//! cluster and no clock. Thousands of generated runs check each scheduler's rules.

use std::collections::BTreeMap;

use rand::{rngs::StdRng, Rng, SeedableRng};

use super::{Decision, TrialScheduler};
use crate::result::TrialResult;
use crate::space::{set_path, Config};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum State {
    Waiting,
    Paused,
    Running,
    Done,
}

#[derive(Debug, Clone)]
pub struct SimTrial {
    pub quality: f64,
    pub iter: u64,
    pub state: State,
    /// Iteration at each decision the scheduler took, and the decision.
    pub decisions: Vec<(u64, Decision)>,
    pub config: Config,
}

/// Runs `n` trials over `slots` with at most `max_iter` iterations each. The metric
/// `acc` is `quality * iter` (higher is better), so the order of trials is the same at
/// every iteration.
pub fn simulate(
    s: &mut dyn TrialScheduler,
    n: usize,
    slots: usize,
    max_iter: u64,
    seed: u64,
) -> BTreeMap<String, SimTrial> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut trials: BTreeMap<String, SimTrial> = BTreeMap::new();
    for i in 0..n {
        let q = rng.random_range(0.1..1.0);
        let mut config = Config::default();
        set_path(&mut config.0, "q", q.into());
        let id = format!("t{i:04}");
        s.on_trial_add(&id, &config);
        trials.insert(
            id,
            SimTrial {
                quality: q,
                iter: 0,
                state: State::Waiting,
                decisions: Vec::new(),
                config,
            },
        );
    }
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps < n * max_iter as usize * 20, "the run does not end");
        // Fill the slots with what the scheduler picks.
        let mut running = trials
            .values()
            .filter(|t| t.state == State::Running)
            .count();
        while running < slots {
            let waiting: Vec<(String, bool)> = trials
                .iter()
                .filter(|(_, t)| matches!(t.state, State::Waiting | State::Paused))
                .map(|(id, t)| (id.clone(), t.state == State::Paused))
                .collect();
            let Some(id) = s.choose_trial_to_run(&waiting) else {
                break;
            };
            assert!(
                waiting.iter().any(|(w, _)| *w == id),
                "chose {id}, which is not waiting"
            );
            trials.get_mut(&id).unwrap().state = State::Running;
            running += 1;
        }
        let live: Vec<String> = trials
            .iter()
            .filter(|(_, t)| t.state == State::Running)
            .map(|(id, _)| id.clone())
            .collect();
        if live.is_empty() {
            // As the controller: trials left paused end.
            for t in trials.values_mut() {
                if t.state == State::Paused {
                    t.state = State::Done;
                }
            }
            assert!(
                trials.values().all(|t| t.state == State::Done),
                "trials stuck waiting"
            );
            return trials;
        }
        let id = live[rng.random_range(0..live.len())].clone();
        let t = trials.get_mut(&id).unwrap();
        t.iter += 1;
        let q = t.config.f64("q");
        let r = TrialResult {
            training_iteration: t.iter,
            time_total_s: t.iter as f64,
            metrics: BTreeMap::from([("acc".to_string(), q * t.iter as f64)]),
        };
        let d = s.on_trial_result(&id, &r);
        t.decisions.push((t.iter, d.clone()));
        match d {
            Decision::Continue if t.iter >= max_iter => {
                t.state = State::Done;
                s.on_trial_complete(&id, Some(&r));
            }
            Decision::Continue => {}
            Decision::Stop => {
                t.state = State::Done;
                s.on_trial_complete(&id, Some(&r));
            }
            Decision::Pause => t.state = State::Paused,
            Decision::Restart { config, from } => {
                let donor_iter = trials[&from].iter;
                let t = trials.get_mut(&id).unwrap();
                t.config = config;
                t.iter = donor_iter;
                t.state = State::Waiting;
            }
        }
        for stopped in s.take_stopped() {
            let t = trials.get_mut(&stopped).unwrap();
            assert_eq!(
                t.state,
                State::Paused,
                "only paused trials are stopped this way"
            );
            t.state = State::Done;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::Mode;
    use crate::schedulers::{Asha, Fifo, HyperBand, MedianStopping, Pbt};
    use crate::space::uniform;

    fn best(trials: &BTreeMap<String, SimTrial>) -> &SimTrial {
        trials
            .values()
            .max_by(|a, b| a.quality.total_cmp(&b.quality))
            .unwrap()
    }

    #[test]
    fn fifo_runs_every_trial_to_the_end() {
        for seed in 0..50 {
            let t = simulate(&mut Fifo, 20, 3, 8, seed);
            assert!(t.values().all(|t| t.iter == 8));
        }
    }

    #[test]
    fn asha_never_stops_the_best_trial_and_stops_only_at_rungs() {
        for seed in 0..300 {
            let mut a = Asha::new()
                .max_t(27.0)
                .reduction_factor(3.0)
                .metric("acc", Mode::Max);
            let trials = simulate(&mut a, 40, 4, 27, seed);
            assert_eq!(best(&trials).iter, 27, "seed {seed}");
            for t in trials.values() {
                for (it, d) in &t.decisions {
                    if *d == Decision::Stop && *it < 27 {
                        assert!(
                            [1, 3, 9].contains(it),
                            "stopped at {it}, not a rung (seed {seed})"
                        );
                    }
                }
            }
            let full = trials.values().filter(|t| t.iter == 27).count();
            assert!(full < 40, "ASHA stopped someone (seed {seed})");
        }
    }

    #[test]
    fn hyperband_ends_every_trial_at_a_milestone_and_keeps_the_best() {
        for seed in 0..300 {
            let mut hb = HyperBand::new()
                .max_t(9.0)
                .reduction_factor(3.0)
                .metric("acc", Mode::Max);
            let trials = simulate(&mut hb, 9, 2, 9, seed);
            let mut lens: Vec<u64> = trials.values().map(|t| t.iter).collect();
            lens.sort();
            assert_eq!(lens, [1, 1, 1, 1, 1, 1, 3, 3, 9], "seed {seed}");
            assert_eq!(best(&trials).iter, 9);
        }
        // Several brackets, more trials than the first bracket holds.
        for seed in 0..100 {
            let mut hb = HyperBand::new()
                .max_t(27.0)
                .reduction_factor(3.0)
                .metric("acc", Mode::Max);
            let trials = simulate(&mut hb, 60, 3, 27, seed);
            for t in trials.values() {
                assert!(
                    [1, 3, 9, 27].contains(&t.iter),
                    "ended at {} (seed {seed})",
                    t.iter
                );
            }
        }
    }

    #[test]
    fn median_stopping_never_stops_the_best_trial() {
        for seed in 0..300 {
            let mut m = MedianStopping::new()
                .time_attr("training_iteration")
                .grace_period(2.0)
                .min_samples_required(3)
                .metric("acc", Mode::Max);
            let trials = simulate(&mut m, 20, 4, 10, seed);
            assert_eq!(best(&trials).iter, 10, "seed {seed}");
        }
    }

    #[test]
    fn pbt_keeps_perturbed_values_in_their_domain_and_every_trial_finishes() {
        for seed in 0..300 {
            let mut p = Pbt::new()
                .time_attr("training_iteration")
                .perturbation_interval(2.0)
                .mutate("q", uniform(0.1, 1.0))
                .metric("acc", Mode::Max)
                .seed(seed);
            let trials = simulate(&mut p, 8, 8, 12, seed);
            for t in trials.values() {
                assert_eq!(t.iter, 12);
                assert!((0.1..=1.0).contains(&t.config.f64("q")), "{}", t.config);
            }
        }
    }
}
