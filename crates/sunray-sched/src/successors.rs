//! A node's side of pipelining: which waiting task starts when another one ends.

use std::collections::HashMap;

use crate::scheduler::TaskId;

/// Tasks pipelined to a node, each waiting for the task it follows (see
/// [`Placement::after`](crate::Placement::after)). `T` is what the node keeps for each
/// (its assignment); `owner` is the driver, whose leaving drops its tasks.
#[derive(Debug)]
pub struct Successors<T> {
    /// predecessor -> (task, owner, item)
    after: HashMap<TaskId, (TaskId, u32, T)>,
    /// task -> predecessor
    before: HashMap<TaskId, TaskId>,
}

impl<T> Default for Successors<T> {
    fn default() -> Self {
        Successors {
            after: HashMap::new(),
            before: HashMap::new(),
        }
    }
}

impl<T> Successors<T> {
    /// `task` starts when `predecessor` (running or waiting here) ends.
    pub fn insert(&mut self, predecessor: TaskId, task: TaskId, owner: u32, item: T) {
        self.before.insert(task, predecessor);
        self.after.insert(predecessor, (task, owner, item));
    }

    /// Is `task` waiting for another one here?
    pub fn is_waiting(&self, task: TaskId) -> bool {
        self.before.contains_key(&task)
    }

    /// The task that follows `task`, if any, without taking it.
    pub fn next_after(&self, task: TaskId) -> Option<(TaskId, &T)> {
        self.after.get(&task).map(|(t, _, item)| (*t, item))
    }

    /// `task` ended (or will never run): the task that follows it, now free to start.
    pub fn take_after(&mut self, task: TaskId) -> Option<T> {
        let (next, _, item) = self.after.remove(&task)?;
        self.before.remove(&next);
        Some(item)
    }

    /// The driver `owner` left: its waiting tasks leave their chains, which close up
    /// behind them, as the head's scheduler does, so both agree on who follows whom.
    pub fn remove_owner(&mut self, owner: u32) -> Vec<T> {
        let gone: Vec<TaskId> = self
            .after
            .values()
            .filter(|(_, o, _)| *o == owner)
            .map(|(t, _, _)| *t)
            .collect();
        let mut dropped = Vec::with_capacity(gone.len());
        for task in gone {
            let predecessor = self
                .before
                .remove(&task)
                .expect("every waiting task has one");
            let (_, _, item) = self.after.remove(&predecessor).expect("linked both ways");
            dropped.push(item);
            if let Some(next) = self.after.remove(&task) {
                self.before.insert(next.0, predecessor);
                self.after.insert(predecessor, next);
            }
        }
        dropped
    }

    pub fn len(&self) -> usize {
        self.before.len()
    }

    pub fn is_empty(&self) -> bool {
        self.before.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Pipelining, ResourceSet, Scheduler};
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use std::collections::{HashMap, HashSet};

    #[test]
    fn a_chain_closes_up_when_an_owner_leaves() {
        let mut s = Successors::default();
        // running 1 <- 2 (owner 7) <- 3 (owner 7) <- 4 (owner 8)
        s.insert(1, 2, 7, "two");
        s.insert(2, 3, 7, "three");
        s.insert(3, 4, 8, "four");
        assert_eq!(s.next_after(2), Some((3, &"three")), "a peek takes nothing");
        assert_eq!(s.len(), 3);
        let mut dropped = s.remove_owner(7);
        dropped.sort();
        assert_eq!(dropped, vec!["three", "two"]);
        assert!(s.is_waiting(4) && !s.is_waiting(2));
        assert_eq!(s.next_after(1), Some((4, &"four")), "the chain closed up");
        assert_eq!(s.take_after(1), Some("four"));
        assert!(s.is_empty());
    }

    #[derive(Default)]
    struct SimNode {
        running: HashMap<TaskId, u64>,
        waiting: Successors<TaskId>,
    }

    /// The head's scheduler and simulated nodes fed the same generated events (short
    /// tasks of several drivers, drivers leaving mid-run): the nodes, following only the
    /// `after` links and their own `Successors`, always run exactly the tasks the head
    /// believes run, and every task of a driver that stays ends.
    #[test]
    fn nodes_and_head_agree_on_pipelined_tasks_as_drivers_come_and_go() {
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut head = Scheduler::with_pipelining(Pipelining {
                max_depth: 8,
                window_us: 1_000,
            });
            let mut nodes: HashMap<u32, SimNode> = HashMap::new();
            for n in 0..4 {
                head.add_node(n, ResourceSet::cpus(rng.random_range(1..4) as f64));
                nodes.insert(n, SimNode::default());
            }
            let mut owner_of: HashMap<TaskId, u32> = HashMap::new();
            let mut left: HashSet<u32> = HashSet::new();
            let mut unfinished: HashSet<TaskId> = HashSet::new();
            let (mut now, mut next_task, mut pipelined) = (0u64, 0u64, 0);
            for step in 0..4_000 {
                if step < 3_000 {
                    for _ in 0..rng.random_range(0..6) {
                        let owner = rng.random_range(0..5);
                        if left.contains(&owner) {
                            continue;
                        }
                        owner_of.insert(next_task, owner);
                        unfinished.insert(next_task);
                        head.submit(next_task, ResourceSet::cpus(1.0));
                        next_task += 1;
                    }
                }
                now += rng.random_range(1..60);
                head.advance(now);
                for (&n, node) in nodes.iter_mut() {
                    let ended: Vec<TaskId> = node
                        .running
                        .iter()
                        .filter(|(_, end)| **end <= now)
                        .map(|(t, _)| *t)
                        .collect();
                    for t in ended {
                        node.running.remove(&t);
                        unfinished.remove(&t);
                        assert_eq!(head.finish(t), Some(n));
                        if let Some(next) = node.waiting.take_after(t) {
                            node.running.insert(next, now + rng.random_range(5..200));
                        }
                    }
                }
                if step % 500 == 250 {
                    let owner = rng.random_range(0..5);
                    left.insert(owner);
                    let mine: HashSet<TaskId> = unfinished
                        .iter()
                        .copied()
                        .filter(|t| owner_of[t] == owner)
                        .collect();
                    head.cancel(&mine);
                    unfinished.retain(|t| !mine.contains(t));
                    for node in nodes.values_mut() {
                        node.waiting.remove_owner(owner);
                        let killed: Vec<TaskId> = node
                            .running
                            .keys()
                            .copied()
                            .filter(|t| owner_of[t] == owner)
                            .collect();
                        for t in killed {
                            node.running.remove(&t);
                            if let Some(next) = node.waiting.take_after(t) {
                                node.running.insert(next, now + rng.random_range(5..200));
                            }
                        }
                    }
                }
                for p in head.schedule() {
                    let node = nodes.get_mut(&p.node).unwrap();
                    match p.after {
                        None => {
                            node.running.insert(p.task, now + rng.random_range(5..200));
                        }
                        Some(pred) => {
                            pipelined += 1;
                            assert!(
                                node.running.contains_key(&pred) || node.waiting.is_waiting(pred),
                                "a task pipelined behind one the node does not have"
                            );
                            node.waiting.insert(pred, p.task, owner_of[&p.task], p.task);
                        }
                    }
                }
                let mut on_nodes = 0;
                for (&n, node) in &nodes {
                    on_nodes += node.running.len();
                    for t in node.running.keys() {
                        assert_eq!(head.running_on(*t), Some(n), "seed {seed} step {step}");
                    }
                }
                assert_eq!(head.running_len(), on_nodes, "seed {seed} step {step}");
                if step > 3_000 && unfinished.is_empty() {
                    break;
                }
            }
            assert!(unfinished.is_empty(), "seed {seed}: tasks never ran");
            assert!(nodes.values().all(|n| n.waiting.is_empty()));
            assert!(pipelined > 100, "seed {seed}: pipelining was exercised");
        }
    }
}
