use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::ledger::{Allocation, NodeLedger};
use crate::resources::ResourceSet;

pub type NodeId = u32;
pub type TaskId = u64;

/// A decision: run `task` on `node`, holding `allocation` there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub task: TaskId,
    pub node: NodeId,
    pub allocation: Allocation,
}

/// Tasks with the same request wait in one FIFO queue ("scheduling class", as in Ray), so
/// a blocked large request does not hold back small ones and placement costs one node scan
/// per class instead of one per queued task.
#[derive(Debug)]
struct Class {
    request: ResourceSet,
    queue: VecDeque<TaskId>,
}

#[derive(Debug)]
struct Node {
    ledger: NodeLedger,
    /// Placement counter at this node's last pick: ties go to the least recently used.
    last_pick: u64,
}

/// The head's scheduler: which tasks wait, which node runs what, and where the next
/// tasks go. Placement spreads: each task goes to the feasible node whose load (the largest
/// fraction of any requested resource in use) would be lowest afterwards.
#[derive(Debug, Default)]
pub struct Scheduler {
    nodes: BTreeMap<NodeId, Node>,
    classes: Vec<Class>,
    class_of: HashMap<ResourceSet, usize>,
    running: HashMap<TaskId, (NodeId, Allocation)>,
    queued: usize,
    picks: u64,
}

impl Scheduler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_node(&mut self, id: NodeId, total: ResourceSet) {
        self.nodes.insert(
            id,
            Node {
                ledger: NodeLedger::new(total),
                last_pick: 0,
            },
        );
    }

    /// Removes a node; returns the tasks that were running there (now lost).
    pub fn remove_node(&mut self, id: NodeId) -> Vec<TaskId> {
        self.nodes.remove(&id);
        let mut lost: Vec<TaskId> = self
            .running
            .iter()
            .filter(|(_, (n, _))| *n == id)
            .map(|(t, _)| *t)
            .collect();
        lost.sort_unstable();
        for t in &lost {
            self.running.remove(t);
        }
        lost
    }

    pub fn has_node(&self, id: NodeId) -> bool {
        self.nodes.contains_key(&id)
    }

    /// Queues a task behind the others of its class.
    pub fn submit(&mut self, task: TaskId, request: ResourceSet) {
        let c = self.class_index(request);
        self.classes[c].queue.push_back(task);
        self.queued += 1;
    }

    /// Queues a task ahead of the others of its class (a retry keeps its turn).
    pub fn submit_front(&mut self, task: TaskId, request: ResourceSet) {
        let c = self.class_index(request);
        self.classes[c].queue.push_front(task);
        self.queued += 1;
    }

    fn class_index(&mut self, request: ResourceSet) -> usize {
        if let Some(&i) = self.class_of.get(&request) {
            return i;
        }
        self.classes.push(Class {
            request: request.clone(),
            queue: VecDeque::new(),
        });
        self.class_of.insert(request, self.classes.len() - 1);
        self.classes.len() - 1
    }

    /// The task ended (any outcome): its resources are free again.
    /// Returns where it ran, or None if it was not running.
    pub fn finish(&mut self, task: TaskId) -> Option<NodeId> {
        let (node, alloc) = self.running.remove(&task)?;
        if let Some(n) = self.nodes.get_mut(&node) {
            n.ledger.release(&alloc);
        }
        Some(node)
    }

    /// Drops these tasks wherever they are (queued or running); running ones free
    /// their resources.
    pub fn cancel(&mut self, tasks: &HashSet<TaskId>) {
        for c in &mut self.classes {
            let before = c.queue.len();
            c.queue.retain(|t| !tasks.contains(t));
            self.queued -= before - c.queue.len();
        }
        for t in tasks {
            self.finish(*t);
        }
    }

    pub fn running_on(&self, task: TaskId) -> Option<NodeId> {
        self.running.get(&task).map(|(n, _)| *n)
    }

    pub fn queued_len(&self) -> usize {
        self.queued
    }

    pub fn running_len(&self) -> usize {
        self.running.len()
    }

    /// Could any current node ever run this request?
    pub fn feasible(&self, request: &ResourceSet) -> bool {
        self.nodes.values().any(|n| n.ledger.feasible(request))
    }

    /// Queued tasks that no current node could ever run.
    pub fn infeasible_len(&self) -> usize {
        self.classes
            .iter()
            .filter(|c| !c.queue.is_empty() && !self.feasible(&c.request))
            .map(|c| c.queue.len())
            .sum()
    }

    pub fn node_total(&self, id: NodeId) -> Option<&ResourceSet> {
        self.nodes.get(&id).map(|n| n.ledger.total())
    }

    pub fn node_available(&self, id: NodeId) -> Option<&ResourceSet> {
        self.nodes.get(&id).map(|n| n.ledger.available())
    }

    /// Places as many queued tasks as fit now.
    pub fn schedule(&mut self) -> Vec<Placement> {
        let mut out = Vec::new();
        if self.queued == 0 {
            return out;
        }
        for ci in 0..self.classes.len() {
            while !self.classes[ci].queue.is_empty() {
                let request = &self.classes[ci].request;
                let Some(node_id) = self.pick_node(request) else {
                    break;
                };
                let node = self.nodes.get_mut(&node_id).expect("picked node exists");
                let allocation = node
                    .ledger
                    .try_acquire(request)
                    .expect("picked node has room");
                self.picks += 1;
                node.last_pick = self.picks;
                let task = self.classes[ci].queue.pop_front().expect("non-empty");
                self.queued -= 1;
                self.running.insert(task, (node_id, allocation.clone()));
                out.push(Placement {
                    task,
                    node: node_id,
                    allocation,
                });
            }
        }
        out
    }

    fn pick_node(&self, request: &ResourceSet) -> Option<NodeId> {
        let mut best: Option<(f64, u64, NodeId)> = None;
        for (&id, n) in &self.nodes {
            if !n.ledger.can_acquire(request) {
                continue;
            }
            let used = ResourceSet::used(n.ledger.total(), n.ledger.available());
            let load = request.load_after(&used, n.ledger.total());
            let key = (load, n.last_pick, id);
            if best.is_none_or(|b| (key.0, key.1) < (b.0, b.1)) {
                best = Some(key);
            }
        }
        best.map(|(_, _, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn cpu(n: f64) -> ResourceSet {
        ResourceSet::cpus(n)
    }

    #[test]
    fn spreads_one_cpu_tasks_over_nodes() {
        let mut s = Scheduler::new();
        s.add_node(1, cpu(2.0));
        s.add_node(2, cpu(2.0));
        for t in 0..4 {
            s.submit(t, cpu(1.0));
        }
        let p = s.schedule();
        assert_eq!(p.len(), 4);
        let on1 = p.iter().filter(|p| p.node == 1).count();
        assert_eq!(on1, 2, "{p:?}");
    }

    #[test]
    fn never_more_running_than_capacity_and_queue_drains_in_order() {
        let mut s = Scheduler::new();
        s.add_node(1, cpu(2.0));
        for t in 0..5 {
            s.submit(t, cpu(1.0));
        }
        let p = s.schedule();
        assert_eq!(p.iter().map(|p| p.task).collect::<Vec<_>>(), vec![0, 1]);
        assert!(s.schedule().is_empty());
        s.finish(0);
        assert_eq!(s.schedule()[0].task, 2);
        assert_eq!(s.queued_len(), 2);
    }

    #[test]
    fn big_request_does_not_block_small_ones() {
        let mut s = Scheduler::new();
        s.add_node(1, cpu(4.0));
        s.submit(1, cpu(3.0));
        s.submit(2, cpu(3.0));
        s.submit(3, cpu(1.0));
        let p: Vec<_> = s.schedule().iter().map(|p| p.task).collect();
        assert_eq!(p, vec![1, 3]);
    }

    #[test]
    fn infeasible_requests_wait_and_are_counted_until_a_node_fits() {
        let mut s = Scheduler::new();
        s.add_node(1, cpu(2.0));
        s.submit(1, ResourceSet::new(1.0, 1.0, 0.0));
        assert!(s.schedule().is_empty());
        assert_eq!(s.infeasible_len(), 1);
        s.add_node(2, ResourceSet::new(2.0, 1.0, 0.0));
        assert_eq!(s.infeasible_len(), 0);
        assert_eq!(s.schedule()[0].node, 2);
    }

    #[test]
    fn removing_a_node_returns_its_running_tasks() {
        let mut s = Scheduler::new();
        s.add_node(1, cpu(1.0));
        s.add_node(2, cpu(1.0));
        s.submit(10, cpu(1.0));
        s.submit(11, cpu(1.0));
        let p = s.schedule();
        let on2 = p.iter().find(|p| p.node == 2).unwrap().task;
        assert_eq!(s.remove_node(2), vec![on2]);
        s.submit_front(on2, cpu(1.0));
        assert!(s.schedule().is_empty());
        s.finish(p.iter().find(|p| p.node == 1).unwrap().task);
        assert_eq!(s.schedule()[0].task, on2);
    }

    #[test]
    fn cancel_drops_queued_and_frees_running() {
        let mut s = Scheduler::new();
        s.add_node(1, cpu(1.0));
        s.submit(1, cpu(1.0));
        s.submit(2, cpu(1.0));
        s.schedule();
        s.cancel(&[1, 2].into_iter().collect());
        assert_eq!(s.queued_len(), 0);
        assert_eq!(s.running_len(), 0);
        assert_eq!(s.node_available(1), Some(&cpu(1.0)));
    }

    #[test]
    fn gpu_tasks_get_distinct_devices_across_the_cluster() {
        let mut s = Scheduler::new();
        s.add_node(1, ResourceSet::new(8.0, 2.0, 0.0));
        s.add_node(2, ResourceSet::new(8.0, 2.0, 0.0));
        for t in 0..6 {
            s.submit(t, ResourceSet::new(1.0, 1.0, 0.0));
        }
        let p = s.schedule();
        assert_eq!(p.len(), 4);
        let mut seen = HashSet::new();
        for pl in &p {
            for g in pl.allocation.gpu_indices() {
                assert!(seen.insert((pl.node, g)), "GPU shared: {p:?}");
            }
        }
    }

    /// A simulated cluster of 1,000 nodes with mixed capacities fed random submissions,
    /// completions and node failures: after every step no node is over-committed, every
    /// task is in exactly one place, and when all work is done every node is idle again.
    #[test]
    fn simulated_thousand_node_cluster_keeps_invariants() {
        let mut rng = StdRng::seed_from_u64(42);
        let mut s = Scheduler::new();
        let mut totals = HashMap::new();
        for id in 0..1000u32 {
            let t = ResourceSet::new(
                [1.0, 2.0, 16.0, 32.0][rng.random_range(0..4)],
                [0.0, 0.0, 2.0, 4.0][rng.random_range(0..4)],
                0.0,
            );
            totals.insert(id, t.clone());
            s.add_node(id, t);
        }
        let mut next_task = 0u64;
        let mut running: HashMap<TaskId, (NodeId, ResourceSet)> = HashMap::new();
        let mut waiting: HashMap<TaskId, ResourceSet> = HashMap::new();
        let mut dead = 0;
        for step in 0..400 {
            for _ in 0..rng.random_range(0..300) {
                let req = ResourceSet::new(
                    [0.5, 1.0, 2.0][rng.random_range(0..3)],
                    [0.0, 0.0, 0.5, 1.0][rng.random_range(0..4)],
                    0.0,
                );
                waiting.insert(next_task, req.clone());
                s.submit(next_task, req);
                next_task += 1;
            }
            let done: Vec<TaskId> = running
                .keys()
                .copied()
                .filter(|_| rng.random_bool(0.3))
                .collect();
            for t in done {
                assert!(s.finish(t).is_some());
                running.remove(&t);
            }
            if step % 50 == 7 {
                let victim = rng.random_range(0..1000);
                if s.has_node(victim) {
                    dead += 1;
                    for t in s.remove_node(victim) {
                        let (_, req) = running.remove(&t).unwrap();
                        waiting.insert(t, req.clone());
                        s.submit_front(t, req);
                    }
                }
            }
            for p in s.schedule() {
                let req = waiting.remove(&p.task).expect("placed task was waiting");
                assert!(s.has_node(p.node));
                running.insert(p.task, (p.node, req));
            }
            assert_eq!(s.queued_len(), waiting.len());
            assert_eq!(s.running_len(), running.len());
            let mut used: HashMap<NodeId, (u64, u64)> = HashMap::new();
            for (n, req) in running.values() {
                let e = used.entry(*n).or_default();
                e.0 += req.cpu;
                e.1 += req.gpu;
            }
            for (n, (c, g)) in used {
                assert!(
                    c <= totals[&n].cpu && g <= totals[&n].gpu,
                    "node {n} over-committed"
                );
            }
        }
        assert!(dead > 0);
        // drain: finish everything, schedule the rest, until nothing remains
        while !running.is_empty() || !waiting.is_empty() {
            for t in running.keys().copied().collect::<Vec<_>>() {
                s.finish(t);
                running.remove(&t);
            }
            for p in s.schedule() {
                running.insert(p.task, (p.node, waiting.remove(&p.task).unwrap()));
            }
            if running.is_empty() {
                assert_eq!(waiting.len(), s.infeasible_len());
                break;
            }
        }
        for (id, t) in &totals {
            if let Some(a) = s.node_available(*id) {
                assert_eq!(a, t, "node {id} not idle at the end");
            }
        }
    }
}
