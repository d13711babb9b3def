use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use crate::groups::{plan, plan_lost, Strategy};
use crate::ledger::{Allocation, NodeLedger};
use crate::resources::ResourceSet;

pub type NodeId = u32;
pub type TaskId = u64;
/// A placement group's id.
pub type GroupId = u64;

/// Where a task of a placement group runs: a bundle of it, or any bundle (`None`).
pub type InGroup = (GroupId, Option<usize>);

/// A bundle of a placed group: its resources, taken from its node's ledger, are a
/// ledger of their own for the group's tasks.
#[derive(Debug)]
struct Bundle {
    node: NodeId,
    alloc: Allocation,
    ledger: NodeLedger,
    /// Its node left: it holds nothing (an empty ledger) until it is placed again.
    lost: bool,
}

#[derive(Debug)]
struct Group {
    bundles: Vec<ResourceSet>,
    strategy: Strategy,
    placed: Option<Vec<Bundle>>,
}

/// A decision: run `task` on `node`, holding `allocation` there.
///
/// With `after: Some(p)` the task is pipelined: the node starts it on `p`'s allocation
/// (and, when it can, `p`'s worker) the moment `p` ends, without waiting for the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub task: TaskId,
    pub node: NodeId,
    pub allocation: Allocation,
    pub after: Option<TaskId>,
}

/// Pipelining of short tasks (Ray reuses a worker lease for the next task of the same
/// shape for the same reason): a node is given the next tasks of a slot before the
/// running one ends, so it never idles waiting for the head. Only shapes whose recent
/// tasks ran shorter than `window_us` are pipelined, each slot holding about `window_us`
/// of queued work (at most `max_depth` tasks): a long task never has work stuck behind it
/// that another node could have started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pipelining {
    pub max_depth: usize,
    pub window_us: u64,
}

impl Pipelining {
    pub const OFF: Pipelining = Pipelining {
        max_depth: 0,
        window_us: 0,
    };

    /// How many tasks to queue behind a running one of a shape whose tasks take `mean_us`.
    fn depth(&self, mean_us: Option<u64>) -> usize {
        match mean_us {
            Some(m) if m < self.window_us => {
                ((self.window_us / m.max(1)) as usize).clamp(1, self.max_depth)
            }
            _ => 0,
        }
    }
}

impl Default for Pipelining {
    fn default() -> Self {
        Pipelining::OFF
    }
}

/// Loads up to this fraction count as idle when choosing a node.
const SPREAD_THRESHOLD: f64 = 0.5;

/// Tasks with the same request wait in one FIFO queue ("scheduling class", as in Ray), so
/// a blocked large request does not hold back small ones and placement costs one node scan
/// per class instead of one per queued task.
#[derive(Debug)]
struct Class {
    request: ResourceSet,
    /// The node its tasks go to while that node is less than half busy (the submitter's
    /// own node, as Ray's default hybrid policy does).
    prefer: Option<NodeId>,
    queue: VecDeque<TaskId>,
    /// Tasks of this class running now.
    running: BTreeSet<TaskId>,
    /// Smoothed run time of this class's finished tasks (head's view, so latency included).
    mean_us: Option<u64>,
    /// Its tasks keep their resources indefinitely (actors): nothing is pipelined
    /// behind them.
    long_lived: bool,
    /// Its tasks run in a placement group's bundles.
    group: Option<InGroup>,
}

#[derive(Debug)]
struct Node {
    ledger: NodeLedger,
    /// Placement counter at this node's last pick: ties go to the least recently used.
    last_pick: u64,
}

/// A task holding resources on a node, and the tasks pipelined to run after it there.
#[derive(Debug)]
struct Running {
    node: NodeId,
    allocation: Allocation,
    class: usize,
    started_us: u64,
    next: VecDeque<TaskId>,
    /// Its CPU is lent to others while it waits for their results.
    lent: bool,
    /// The bundle it holds its resources in, if it runs in a placement group.
    bundle: Option<(GroupId, usize)>,
}

/// The head's scheduler: which tasks wait, which node runs what, and where the next
/// tasks go. Placement spreads: each task goes to the feasible node whose load (the largest
/// fraction of any requested resource in use) would be lowest afterwards.
///
/// Time is passed in ([`advance`](Self::advance)); it only serves to measure how long
/// tasks take, which decides pipelining.
#[derive(Debug, Default)]
pub struct Scheduler {
    nodes: BTreeMap<NodeId, Node>,
    classes: Vec<Class>,
    class_of: HashMap<(ResourceSet, Option<NodeId>, bool, Option<InGroup>), usize>,
    running: HashMap<TaskId, Running>,
    /// Pipelined tasks (not started yet) and the node they wait on.
    pinned: HashMap<TaskId, NodeId>,
    /// Tasks waiting, pinned ones included.
    queued: usize,
    picks: u64,
    now_us: u64,
    pipelining: Pipelining,
    groups: BTreeMap<GroupId, Group>,
    /// Groups waiting for room, oldest first.
    pending_groups: VecDeque<GroupId>,
    /// Groups placed since the last [`take_placed_groups`](Self::take_placed_groups).
    placed_groups: Vec<GroupId>,
    /// Groups that lost a bundle's node since the last
    /// [`take_rescheduling_groups`](Self::take_rescheduling_groups).
    rescheduling: Vec<GroupId>,
}

impl Scheduler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_pipelining(pipelining: Pipelining) -> Self {
        Scheduler {
            pipelining,
            ..Self::default()
        }
    }

    /// The current time, in microseconds from any fixed origin (never goes back).
    pub fn advance(&mut self, now_us: u64) {
        self.now_us = self.now_us.max(now_us);
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

    /// Removes a node; returns the tasks that were running there (now lost). Tasks
    /// pipelined there go back to the front of their queues (they never started).
    pub fn remove_node(&mut self, id: NodeId) -> Vec<TaskId> {
        self.nodes.remove(&id);
        let touched: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| {
                g.placed
                    .as_ref()
                    .is_some_and(|b| b.iter().any(|b| b.node == id))
            })
            .map(|(g, _)| *g)
            .collect();
        let mut lost: Vec<TaskId> = self
            .running
            .iter()
            .filter(|(_, r)| r.node == id)
            .map(|(t, _)| *t)
            .collect();
        lost.sort_unstable();
        for t in &lost {
            let r = self.running.remove(t).expect("listed above");
            self.classes[r.class].running.remove(t);
            for p in r.next.iter().rev() {
                self.pinned.remove(p);
                self.classes[r.class].queue.push_front(*p);
            }
        }
        // Their bundles there are placed again, as Ray does; the group's tasks that ran
        // there are among `lost` (the head retries them into the group), the others
        // keep running or waiting.
        for g in touched {
            let group = self.groups.get_mut(&g).expect("listed above");
            for b in group.placed.iter_mut().flatten().filter(|b| b.node == id) {
                b.lost = true;
                b.ledger = NodeLedger::new(ResourceSet::default());
            }
            if !self.pending_groups.contains(&g) {
                self.pending_groups.push_back(g);
            }
            self.rescheduling.push(g);
        }
        lost
    }

    pub fn has_node(&self, id: NodeId) -> bool {
        self.nodes.contains_key(&id)
    }

    /// Queues a task behind the others of its class.
    pub fn submit(&mut self, task: TaskId, request: ResourceSet) {
        self.submit_preferring(task, request, None);
    }

    /// Queues a task that goes to node `prefer` while that node is at most half busy,
    /// and spreads like any other beyond.
    pub fn submit_preferring(
        &mut self,
        task: TaskId,
        request: ResourceSet,
        prefer: Option<NodeId>,
    ) {
        let c = self.class_index(request, prefer, false, None);
        self.classes[c].queue.push_back(task);
        self.queued += 1;
    }

    /// Queues a task that keeps its resources until it is finished explicitly, however
    /// long that is (an actor's creation: the actor holds them for its lifetime). Such
    /// tasks are never pipelined behind, and retries of them go first.
    pub fn submit_long_lived(
        &mut self,
        task: TaskId,
        request: ResourceSet,
        prefer: Option<NodeId>,
        front: bool,
    ) {
        let c = self.class_index(request, prefer, true, None);
        if front {
            self.classes[c].queue.push_front(task);
        } else {
            self.classes[c].queue.push_back(task);
        }
        self.queued += 1;
    }

    /// Queues a task ahead of the others of its class (a retry keeps its turn).
    pub fn submit_front(&mut self, task: TaskId, request: ResourceSet) {
        let c = self.class_index(request, None, false, None);
        self.classes[c].queue.push_front(task);
        self.queued += 1;
    }

    fn class_index(
        &mut self,
        request: ResourceSet,
        prefer: Option<NodeId>,
        long_lived: bool,
        group: Option<InGroup>,
    ) -> usize {
        let key = (request, prefer, long_lived, group);
        if let Some(&i) = self.class_of.get(&key) {
            return i;
        }
        self.classes.push(Class {
            request: key.0.clone(),
            prefer,
            queue: VecDeque::new(),
            running: BTreeSet::new(),
            mean_us: None,
            long_lived,
            group,
        });
        self.class_of.insert(key, self.classes.len() - 1);
        self.classes.len() - 1
    }

    /// The task ended (any outcome): its resources are free again, or go to the task
    /// pipelined after it, which is running from now on.
    /// Returns where it ran, or None if it was not running.
    pub fn finish(&mut self, task: TaskId) -> Option<NodeId> {
        self.reclaim(task);
        let mut r = self.running.remove(&task)?;
        let class = &mut self.classes[r.class];
        class.running.remove(&task);
        let took = self.now_us.saturating_sub(r.started_us);
        class.mean_us = Some(class.mean_us.map_or(took, |m| (3 * m + took) / 4));
        let node = r.node;
        match r.next.pop_front() {
            Some(successor) => {
                self.pinned.remove(&successor);
                self.queued -= 1;
                class.running.insert(successor);
                r.started_us = self.now_us;
                self.running.insert(successor, r);
            }
            None => {
                if let Some(l) = self.ledger_of(node, r.bundle) {
                    l.release(&r.allocation);
                }
            }
        }
        Some(node)
    }

    /// The ledger a task's resources come from: its bundle's, or its node's.
    fn ledger_of(
        &mut self,
        node: NodeId,
        bundle: Option<(GroupId, usize)>,
    ) -> Option<&mut NodeLedger> {
        match bundle {
            None => self.nodes.get_mut(&node).map(|n| &mut n.ledger),
            Some((g, i)) => self
                .groups
                .get_mut(&g)?
                .placed
                .as_mut()?
                .get_mut(i)
                .map(|b| &mut b.ledger),
        }
    }

    /// A placement group: its bundles are reserved all at once, when they fit under
    /// `strategy` ([`take_placed_groups`](Self::take_placed_groups) tells when).
    pub fn create_group(&mut self, id: GroupId, bundles: Vec<ResourceSet>, strategy: Strategy) {
        self.groups.insert(
            id,
            Group {
                bundles,
                strategy,
                placed: None,
            },
        );
        self.pending_groups.push_back(id);
    }

    /// Could the current nodes, idle, ever hold these bundles under `strategy`?
    pub fn group_feasible(&self, bundles: &[ResourceSet], strategy: Strategy) -> bool {
        let totals: BTreeMap<NodeId, ResourceSet> = self
            .nodes
            .iter()
            .map(|(id, n)| (*id, n.ledger.total().clone()))
            .collect();
        plan(bundles, strategy, &totals).is_some()
    }

    /// The node of each bundle, once placed.
    pub fn group_nodes(&self, id: GroupId) -> Option<Vec<NodeId>> {
        let placed = self.groups.get(&id)?.placed.as_ref()?;
        Some(placed.iter().map(|b| b.node).collect())
    }

    pub fn has_group(&self, id: GroupId) -> bool {
        self.groups.contains_key(&id)
    }

    /// How many bundles the group has.
    pub fn group_len(&self, id: GroupId) -> Option<usize> {
        self.groups.get(&id).map(|g| g.bundles.len())
    }

    /// Groups placed since the last call.
    pub fn take_placed_groups(&mut self) -> Vec<GroupId> {
        std::mem::take(&mut self.placed_groups)
    }

    /// Groups that lost a bundle because its node left: they wait to be placed again
    /// (then [`take_placed_groups`](Self::take_placed_groups) names them again).
    pub fn take_rescheduling_groups(&mut self) -> Vec<GroupId> {
        std::mem::take(&mut self.rescheduling)
    }

    /// Queues a task to run in a bundle of `group` (`bundle` None: any that has room).
    pub fn submit_in_group(
        &mut self,
        task: TaskId,
        request: ResourceSet,
        group: InGroup,
        front: bool,
    ) {
        let c = self.class_index(request, None, false, Some(group));
        if front {
            self.classes[c].queue.push_front(task);
        } else {
            self.classes[c].queue.push_back(task);
        }
        self.queued += 1;
    }

    /// Removes a group: its bundles' resources go back to their nodes; its tasks,
    /// queued or running, are dropped and returned (the head fails them).
    pub fn remove_group(&mut self, id: GroupId) -> Vec<TaskId> {
        let Some(g) = self.groups.remove(&id) else {
            return Vec::new();
        };
        self.pending_groups.retain(|x| *x != id);
        let mut dropped = Vec::new();
        for c in &mut self.classes {
            if c.group.is_some_and(|(gid, _)| gid == id) {
                self.queued -= c.queue.len();
                dropped.extend(c.queue.drain(..));
                c.running.clear();
            }
        }
        let running: Vec<TaskId> = self
            .running
            .iter()
            .filter(|(_, r)| r.bundle.is_some_and(|(gid, _)| gid == id))
            .map(|(t, _)| *t)
            .collect();
        for t in &running {
            self.running.remove(t);
        }
        dropped.extend(running);
        for b in g.placed.unwrap_or_default().into_iter().filter(|b| !b.lost) {
            if let Some(n) = self.nodes.get_mut(&b.node) {
                n.ledger.release(&b.alloc);
            }
        }
        dropped.sort_unstable();
        dropped
    }

    /// Reserves the bundles of waiting groups that fit now (all of a group or none), and
    /// places again the bundles groups lost with their node (all of those or none).
    fn place_groups(&mut self) {
        let waiting: Vec<GroupId> = self.pending_groups.iter().copied().collect();
        for id in waiting {
            let free: BTreeMap<NodeId, ResourceSet> = self
                .nodes
                .iter()
                .map(|(n, x)| (*n, x.ledger.available().clone()))
                .collect();
            let g = self.groups.get(&id).expect("pending groups exist");
            let (want, kept): (Vec<usize>, Vec<NodeId>) = match &g.placed {
                None => ((0..g.bundles.len()).collect(), Vec::new()),
                Some(placed) => (
                    (0..placed.len()).filter(|&i| placed[i].lost).collect(),
                    placed.iter().filter(|b| !b.lost).map(|b| b.node).collect(),
                ),
            };
            let Some(nodes) = plan_lost(&g.bundles, &want, g.strategy, &kept, &free) else {
                continue;
            };
            let mut taken: Vec<Bundle> = Vec::new();
            for (&i, node) in want.iter().zip(&nodes) {
                let b = &g.bundles[i];
                let n = self.nodes.get_mut(node).expect("planned on a node");
                match n.ledger.try_acquire(b) {
                    Some(alloc) => taken.push(Bundle {
                        node: *node,
                        alloc,
                        ledger: NodeLedger::new(b.clone()),
                        lost: false,
                    }),
                    None => break, // GPUs fragmented across devices: not now
                }
            }
            if taken.len() < nodes.len() {
                for b in taken {
                    if let Some(n) = self.nodes.get_mut(&b.node) {
                        n.ledger.release(&b.alloc);
                    }
                }
                continue;
            }
            let g = self.groups.get_mut(&id).expect("exists");
            match &mut g.placed {
                None => g.placed = Some(taken),
                Some(placed) => {
                    for (i, b) in want.into_iter().zip(taken) {
                        placed[i] = b;
                    }
                }
            }
            self.pending_groups.retain(|x| *x != id);
            self.placed_groups.push(id);
        }
    }

    /// Places queued tasks of group class `ci` in its group's bundles.
    fn place_in_group(&mut self, ci: usize, out: &mut Vec<Placement>) {
        let Some((gid, want)) = self.classes[ci].group else {
            return;
        };
        while let Some(&task) = self.classes[ci].queue.front() {
            let request = self.classes[ci].request.clone();
            let Some(bundles) = self.groups.get_mut(&gid).and_then(|g| g.placed.as_mut()) else {
                return;
            };
            let pick = match want {
                Some(i) => bundles
                    .get(i)
                    .is_some_and(|b| b.ledger.can_acquire(&request))
                    .then_some(i),
                None => bundles.iter().position(|b| b.ledger.can_acquire(&request)),
            };
            let Some(i) = pick else { return };
            let b = &mut bundles[i];
            let allocation = b.ledger.try_acquire(&request).expect("checked above");
            let node = b.node;
            self.classes[ci].queue.pop_front();
            self.queued -= 1;
            self.classes[ci].running.insert(task);
            self.running.insert(
                task,
                Running {
                    node,
                    allocation: allocation.clone(),
                    class: ci,
                    started_us: self.now_us,
                    next: VecDeque::new(),
                    lent: false,
                    bundle: Some((gid, i)),
                },
            );
            out.push(Placement {
                task,
                node,
                allocation,
                after: None,
            });
        }
    }

    /// Drops these tasks wherever they are (queued, pipelined or running); running ones
    /// free their resources (or hand them to the task pipelined after them).
    pub fn cancel(&mut self, tasks: &HashSet<TaskId>) {
        for c in &mut self.classes {
            let before = c.queue.len();
            c.queue.retain(|t| !tasks.contains(t));
            self.queued -= before - c.queue.len();
        }
        for r in self.running.values_mut() {
            let before = r.next.len();
            r.next.retain(|t| !tasks.contains(t));
            self.queued -= before - r.next.len();
        }
        self.pinned.retain(|t, _| !tasks.contains(t));
        for t in tasks {
            self.finish(*t);
        }
    }

    /// A running task waits for other tasks: its CPU is free for them (Ray releases a
    /// blocked task's CPUs, so that nested tasks on a full cluster cannot deadlock).
    /// Tasks pipelined behind it go back to the front of their queue: they would wait
    /// for it, and it waits for them. Returns them (the node drops them too).
    pub fn lend(&mut self, task: TaskId) -> Vec<TaskId> {
        let Some(r) = self.running.get_mut(&task) else {
            return Vec::new();
        };
        if r.lent {
            return Vec::new();
        }
        r.lent = true;
        let cpu = r.allocation.resources.cpu;
        let (node, class, bundle) = (r.node, r.class, r.bundle);
        let back: Vec<TaskId> = r.next.drain(..).collect();
        for t in back.iter().rev() {
            self.pinned.remove(t);
            self.classes[class].queue.push_front(*t);
        }
        if let Some(l) = self.ledger_of(node, bundle) {
            l.lend_cpu(cpu);
        }
        back
    }

    /// The task runs again and takes its CPU back (oversubscribing until others end).
    pub fn reclaim(&mut self, task: TaskId) {
        let Some(r) = self.running.get_mut(&task) else {
            return;
        };
        if !r.lent {
            return;
        }
        r.lent = false;
        let (cpu, node, bundle) = (r.allocation.resources.cpu, r.node, r.bundle);
        if let Some(l) = self.ledger_of(node, bundle) {
            l.reclaim_cpu(cpu);
        }
    }

    pub fn running_on(&self, task: TaskId) -> Option<NodeId> {
        self.running.get(&task).map(|r| r.node)
    }

    /// Where the task runs or is pipelined to run.
    pub fn node_of(&self, task: TaskId) -> Option<NodeId> {
        self.running_on(task)
            .or_else(|| self.pinned.get(&task).copied())
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

    /// Did losing a node with `lost_total` make `request` infeasible: that node could
    /// run it and no current node can?
    pub fn stranded_by(&self, lost_total: &ResourceSet, request: &ResourceSet) -> bool {
        NodeLedger::new(lost_total.clone()).feasible(request) && !self.feasible(request)
    }

    /// Waiting tasks (outside placement groups) that a node with `lost_total` could run
    /// and no current node can: what the loss of such a node left with nowhere to go,
    /// by request, in queue order. Call it once the lost node's tasks are queued again.
    pub fn stranded(&self, lost_total: &ResourceSet) -> Vec<(ResourceSet, Vec<TaskId>)> {
        let mut out: Vec<(ResourceSet, Vec<TaskId>)> = Vec::new();
        for c in &self.classes {
            if c.group.is_some() || c.queue.is_empty() || !self.stranded_by(lost_total, &c.request)
            {
                continue;
            }
            match out.iter_mut().find(|(r, _)| *r == c.request) {
                Some((_, tasks)) => tasks.extend(c.queue.iter().copied()),
                None => out.push((c.request.clone(), c.queue.iter().copied().collect())),
            }
        }
        out
    }

    /// Queued tasks that no current node could ever run.
    pub fn infeasible_len(&self) -> usize {
        self.classes
            .iter()
            .filter(|c| c.group.is_none() && !c.queue.is_empty() && !self.feasible(&c.request))
            .map(|c| c.queue.len())
            .sum()
    }

    pub fn node_total(&self, id: NodeId) -> Option<&ResourceSet> {
        self.nodes.get(&id).map(|n| n.ledger.total())
    }

    pub fn node_available(&self, id: NodeId) -> Option<&ResourceSet> {
        self.nodes.get(&id).map(|n| n.ledger.available())
    }

    /// Places as many queued tasks as fit now, then pipelines short ones behind running
    /// tasks of their class.
    pub fn schedule(&mut self) -> Vec<Placement> {
        let mut out = Vec::new();
        if !self.pending_groups.is_empty() {
            self.place_groups();
        }
        if self.queued == 0 {
            return out;
        }
        for ci in 0..self.classes.len() {
            if self.classes[ci].group.is_some() {
                self.place_in_group(ci, &mut out);
                continue;
            }
            while !self.classes[ci].queue.is_empty() {
                let request = &self.classes[ci].request;
                let Some(node_id) = self.pick_node(request, self.classes[ci].prefer) else {
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
                self.classes[ci].running.insert(task);
                self.running.insert(
                    task,
                    Running {
                        node: node_id,
                        allocation: allocation.clone(),
                        class: ci,
                        started_us: self.now_us,
                        next: VecDeque::new(),
                        lent: false,
                        bundle: None,
                    },
                );
                out.push(Placement {
                    task,
                    node: node_id,
                    allocation,
                    after: None,
                });
            }
            self.pipeline(ci, &mut out);
        }
        out
    }

    /// Fills the pipelines of class `ci`'s running tasks level by level, so that queued
    /// work spreads evenly over the slots.
    fn pipeline(&mut self, ci: usize, out: &mut Vec<Placement>) {
        if self.classes[ci].long_lived {
            return;
        }
        let depth = self.pipelining.depth(self.classes[ci].mean_us);
        if depth == 0 || self.classes[ci].queue.is_empty() {
            return;
        }
        let slots: Vec<TaskId> = self.classes[ci].running.iter().copied().collect();
        for level in 0..depth {
            for t in &slots {
                let r = self.running.get_mut(t).expect("class lists running tasks");
                if r.lent || r.next.len() != level {
                    continue;
                }
                let Some(task) = self.classes[ci].queue.pop_front() else {
                    return;
                };
                let after = *r.next.back().unwrap_or(t);
                r.next.push_back(task);
                self.pinned.insert(task, r.node);
                out.push(Placement {
                    task,
                    node: r.node,
                    allocation: r.allocation.clone(),
                    after: Some(after),
                });
            }
        }
    }

    /// The node with the lowest load after placing `request`, loads up to half counting as
    /// idle (Ray's spread threshold); ties go to the preferred node, then to the least
    /// recently picked.
    fn pick_node(&self, request: &ResourceSet, prefer: Option<NodeId>) -> Option<NodeId> {
        let mut best: Option<(f64, bool, u64, NodeId)> = None;
        for (&id, n) in &self.nodes {
            if !n.ledger.can_acquire(request) {
                continue;
            }
            let used = ResourceSet::used(n.ledger.total(), n.ledger.available());
            let load = request.load_after(&used, n.ledger.total());
            let load = if load <= SPREAD_THRESHOLD { 0.0 } else { load };
            let key = (load, prefer != Some(id), n.last_pick, id);
            if best.is_none_or(|b| (key.0, key.1, key.2) < (b.0, b.1, b.2)) {
                best = Some(key);
            }
        }
        best.map(|(_, _, _, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::Strategy;
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
    fn tasks_only_a_lost_node_could_run_are_stranded_by_its_loss() {
        let b = |n: f64| cpu(1.0).with_custom("B", n);
        let mut s = Scheduler::new();
        s.add_node(1, cpu(2.0));
        s.add_node(2, b(1.0));
        s.submit(10, b(1.0)); // runs on node 2
        s.submit(11, b(1.0)); // waits behind it
        s.submit(12, cpu(1.0)); // any node runs it
        s.submit(13, cpu(1.0).with_custom("tpu", 1.0)); // no node ever could
        assert_eq!(s.schedule().len(), 2);
        let node2 = s.node_total(2).unwrap().clone();
        assert!(s.stranded(&node2).is_empty(), "node 2 is still there");
        let lost = s.remove_node(2);
        assert_eq!(lost, vec![10]);
        s.submit_front(10, b(1.0));
        assert_eq!(s.stranded(&node2), vec![(b(1.0), vec![10, 11])]);
        assert!(s.stranded_by(&node2, &b(1.0)) && !s.stranded_by(&node2, &cpu(1.0)));
        // Infeasible before the loss already: not the loss's doing.
        assert!(!s.stranded_by(&node2, &cpu(1.0).with_custom("tpu", 1.0)));
        // Once a node with B joins, nothing is stranded.
        s.add_node(3, b(2.0));
        assert!(s.stranded(&node2).is_empty());
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

    const PIPE: Pipelining = Pipelining {
        max_depth: 4,
        window_us: 1_000,
    };

    #[test]
    fn short_tasks_are_pipelined_once_their_duration_is_known() {
        let mut s = Scheduler::with_pipelining(PIPE);
        s.add_node(1, cpu(1.0));
        for t in 0..10 {
            s.submit(t, cpu(1.0));
        }
        // Nothing is known about the class yet: one task runs, the rest wait at the head.
        let p = s.schedule();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].after, None);
        s.advance(400);
        s.finish(0);
        // 400 us per task: 1,000 us of work per slot is 2 tasks behind the running one.
        let p = s.schedule();
        let got: Vec<_> = p.iter().map(|p| (p.task, p.after)).collect();
        assert_eq!(got, vec![(1, None), (2, Some(1)), (3, Some(2))]);
        assert_eq!((s.running_len(), s.queued_len()), (1, 8));
        assert_eq!(s.node_of(3), Some(1));
        // Ending the running task starts the next in the chain on the same allocation.
        s.advance(800);
        assert_eq!(s.finish(1), Some(1));
        assert_eq!(s.running_on(2), Some(1));
        assert_eq!(s.node_available(1), Some(&cpu(0.0)));
        assert_eq!(s.schedule().len(), 1, "the chain is topped up");
    }

    #[test]
    fn long_tasks_are_never_pipelined() {
        let mut s = Scheduler::with_pipelining(PIPE);
        s.add_node(1, cpu(1.0));
        for t in 0..3 {
            s.submit(t, cpu(1.0));
        }
        s.schedule();
        s.advance(5_000);
        s.finish(0);
        let p = s.schedule();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].after, None);
    }

    /// A task blocked in `get` lends its CPU: its children run on it; when it runs again
    /// the node is oversubscribed until they end; nothing is pipelined behind it.
    #[test]
    fn a_blocked_task_lends_its_cpu_and_takes_it_back() {
        let mut s = Scheduler::with_pipelining(PIPE);
        s.add_node(1, cpu(1.0));
        s.submit(0, cpu(1.0));
        s.schedule();
        s.advance(100);
        s.finish(0);
        s.submit(1, cpu(1.0));
        s.submit(2, cpu(1.0));
        s.submit(3, cpu(1.0));
        // Short tasks: 2 and 3 are pipelined behind 1.
        let p = s.schedule();
        assert_eq!(p.iter().filter(|p| p.after.is_some()).count(), 2);
        // 1 blocks: 2 and 3 come back to the queue, and 2 takes the lent CPU.
        assert_eq!(s.lend(1), vec![2, 3]);
        let p = s.schedule();
        assert_eq!((p[0].task, p[0].after), (2, None));
        assert!(
            p[1..].iter().all(|p| p.after != Some(1)),
            "nothing behind a blocked task"
        );
        // 1 runs again before 2 ends: oversubscribed, then even once both end.
        s.reclaim(1);
        assert_eq!(s.node_available(1), Some(&cpu(0.0)));
        s.finish(2);
        assert_eq!(
            s.node_available(1),
            Some(&cpu(0.0)),
            "still in use: 3 follows 2"
        );
        while s.running_len() > 1 {
            let t = *s.running.keys().find(|t| **t != 1).unwrap();
            s.finish(t);
        }
        s.finish(1);
        assert_eq!(s.node_available(1), Some(&cpu(1.0)));
        // A task that ends while lent gives back only what it holds.
        s.submit(9, cpu(1.0));
        s.schedule();
        s.lend(9);
        s.finish(9);
        assert_eq!(s.node_available(1), Some(&cpu(1.0)));
    }

    /// A group's bundles are reserved at once; its tasks run only in them, others never
    /// do; removing it frees everything and hands back its tasks.
    #[test]
    fn placement_groups_reserve_bundles_for_their_tasks_only() {
        let mut s = Scheduler::new();
        s.add_node(1, cpu(2.0));
        s.add_node(2, cpu(2.0));
        s.add_node(3, cpu(2.0));
        s.create_group(100, vec![cpu(2.0); 3], Strategy::StrictSpread);
        // Larger than the cluster under strict spread: waits, and says it never fits.
        s.create_group(200, vec![cpu(1.0); 4], Strategy::StrictSpread);
        assert!(!s.group_feasible(&vec![cpu(1.0); 4], Strategy::StrictSpread));
        s.submit_in_group(1, cpu(2.0), (100, Some(2)), false);
        s.submit(2, cpu(1.0));
        let p = s.schedule();
        assert_eq!(s.take_placed_groups(), vec![100]);
        let nodes = s.group_nodes(100).unwrap();
        let mut sorted = nodes.clone();
        sorted.sort();
        assert_eq!(sorted, vec![1, 2, 3], "one bundle per node");
        assert_eq!(
            p.len(),
            1,
            "the plain task finds no room: the group holds it all"
        );
        assert_eq!((p[0].task, p[0].node), (1, nodes[2]), "bundle 2's node");
        // The group's task ends: its bundle has room again, the node still none.
        s.finish(1);
        assert!(s.schedule().is_empty());
        // Removing it gives the nodes back and drops its queued tasks.
        s.submit_in_group(3, cpu(1.0), (100, None), false);
        s.submit_in_group(4, cpu(5.0), (100, None), false);
        let p = s.schedule();
        assert_eq!(p.iter().map(|p| p.task).collect::<Vec<_>>(), vec![3]);
        assert_eq!(s.remove_group(100), vec![3, 4]);
        let p = s.schedule();
        assert_eq!(p.iter().map(|p| p.task).collect::<Vec<_>>(), vec![2]);
        assert_eq!(s.queued_len(), 0);
        // A node of a placed group dies: its bundle is placed again on a node the group
        // does not use yet (strict spread), the task there is lost (the head retries
        // it into the group), the one in the other bundle keeps running.
        s.create_group(300, vec![cpu(1.0); 2], Strategy::StrictSpread);
        s.schedule();
        assert_eq!(s.take_placed_groups(), vec![300]);
        s.submit_in_group(5, cpu(1.0), (300, Some(0)), false);
        s.submit_in_group(6, cpu(1.0), (300, Some(1)), false);
        s.schedule();
        let [gone, stays] = s.group_nodes(300).unwrap()[..] else {
            panic!("two bundles")
        };
        let lost = s.remove_node(gone);
        assert!(lost.contains(&5) && !lost.contains(&6), "{lost:?}");
        assert_eq!(s.take_rescheduling_groups(), vec![300]);
        assert_eq!(s.running_on(6), Some(stays));
        s.submit_in_group(5, cpu(1.0), (300, Some(0)), false);
        let p = s.schedule();
        assert_eq!(s.take_placed_groups(), vec![300], "placed again");
        let moved = s.group_nodes(300).unwrap()[0];
        assert!(moved != gone && moved != stays, "{moved}");
        assert_eq!(
            (p[0].task, p[0].node),
            (5, moved),
            "the retry runs in the new bundle"
        );
        // Its new node leaves too, and no node outside the group is left: it waits for
        // one, holding nothing, while its other bundle goes on.
        s.finish(5);
        s.remove_node(moved);
        assert_eq!(s.take_rescheduling_groups(), vec![300]);
        s.submit_in_group(7, cpu(1.0), (300, Some(0)), false);
        assert!(s.schedule().is_empty() && s.take_placed_groups().is_empty());
        assert_eq!(s.running_on(6), Some(stays));
        s.add_node(9, cpu(1.0));
        let p = s.schedule();
        assert_eq!(s.take_placed_groups(), vec![300]);
        assert_eq!((p[0].task, p[0].node), (7, 9));
        // Removing it now frees what it holds on nodes 9 and `stays`.
        s.finish(6);
        s.finish(7);
        s.remove_group(300);
        assert_eq!(s.node_available(9), Some(&cpu(1.0)));
        assert_eq!(s.node_available(stays), Some(&cpu(2.0)));
    }

    /// Groups of every strategy under node churn: nodes join and leave, groups come and
    /// go, their tasks start and end. After every step no node holds more than it has
    /// (bundles plus tasks outside groups), a bundle never runs more than it holds,
    /// strict groups keep their shape across re-placements, and once everything is
    /// removed every node is whole again.
    #[test]
    fn generated_groups_under_node_churn_keep_their_shape_and_never_overfill() {
        let strategies = [
            Strategy::Pack,
            Strategy::Spread,
            Strategy::StrictPack,
            Strategy::StrictSpread,
        ];
        let (mut replaced, mut lost_tasks) = (0, 0);
        for seed in 0..300 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut s = Scheduler::new();
            let mut totals: HashMap<NodeId, ResourceSet> = HashMap::new();
            let (mut next_node, mut next_group, mut next_task) = (1, 100, 1000);
            // task -> (group, request); running tasks as the head would track them
            let mut tasks: HashMap<TaskId, (GroupId, ResourceSet)> = HashMap::new();
            let mut running: HashSet<TaskId> = HashSet::new();
            for _ in 0..300 {
                match rng.random_range(0..10) {
                    0 if totals.len() < 6 => {
                        let t = cpu(rng.random_range(1..5) as f64);
                        s.add_node(next_node, t.clone());
                        totals.insert(next_node, t);
                        next_node += 1;
                    }
                    1 if !totals.is_empty() => {
                        let n = *totals
                            .keys()
                            .nth(rng.random_range(0..totals.len()))
                            .unwrap();
                        totals.remove(&n);
                        let lost = s.remove_node(n);
                        replaced += s.take_rescheduling_groups().len();
                        for t in lost {
                            lost_tasks += running.remove(&t) as usize;
                            // The head retries it into its group.
                            if let Some((g, r)) = tasks.get(&t).cloned() {
                                if s.has_group(g) {
                                    s.submit_in_group(t, r, (g, None), false);
                                }
                            }
                        }
                    }
                    2 => {
                        let bundles = (0..rng.random_range(1..4))
                            .map(|_| cpu(rng.random_range(1..3) as f64))
                            .collect();
                        s.create_group(next_group, bundles, strategies[rng.random_range(0..4)]);
                        next_group += 1;
                    }
                    3 if next_group > 100 => {
                        let g = rng.random_range(100..next_group);
                        for t in s.remove_group(g) {
                            running.remove(&t);
                        }
                    }
                    4..=6 if next_group > 100 => {
                        let g = rng.random_range(100..next_group);
                        if let Some(n) = s.group_len(g) {
                            let b = rng.random_bool(0.5).then(|| rng.random_range(0..n));
                            let r = cpu(1.0);
                            s.submit_in_group(next_task, r.clone(), (g, b), false);
                            tasks.insert(next_task, (g, r));
                            next_task += 1;
                        }
                    }
                    7 | 8 if !running.is_empty() => {
                        let t = *running
                            .iter()
                            .nth(rng.random_range(0..running.len()))
                            .unwrap();
                        running.remove(&t);
                        assert!(s.finish(t).is_some(), "seed {seed}");
                    }
                    _ => {}
                }
                for p in s.schedule() {
                    assert!(running.insert(p.task), "seed {seed}: placed twice");
                }
                s.take_placed_groups();
                // Nothing overfills a node or a bundle; strict shapes hold.
                let mut held: HashMap<NodeId, ResourceSet> = HashMap::new();
                for (gid, g) in &s.groups {
                    let Some(placed) = &g.placed else { continue };
                    let live: Vec<&Bundle> = placed.iter().filter(|b| !b.lost).collect();
                    for (i, (b, want)) in placed.iter().zip(&g.bundles).enumerate() {
                        let used = s
                            .running
                            .values()
                            .filter(|r| r.bundle == Some((*gid, i)))
                            .fold(ResourceSet::default(), |u, r| {
                                u.plus(&r.allocation.resources)
                            });
                        if b.lost {
                            assert_eq!(
                                used,
                                ResourceSet::default(),
                                "seed {seed}: runs in a lost bundle"
                            );
                            continue;
                        }
                        assert!(
                            used.fits_in(want),
                            "seed {seed}: bundle {i} of {gid} overfull"
                        );
                        let h = held.entry(b.node).or_default();
                        *h = h.plus(want);
                    }
                    match g.strategy {
                        Strategy::StrictPack => {
                            assert!(live.iter().all(|b| b.node == live[0].node), "seed {seed}")
                        }
                        Strategy::StrictSpread => {
                            let d: HashSet<NodeId> = live.iter().map(|b| b.node).collect();
                            assert_eq!(
                                d.len(),
                                live.len(),
                                "seed {seed}: strict spread doubled up"
                            );
                        }
                        _ => {}
                    }
                }
                for (n, total) in &totals {
                    let h = held.get(n).cloned().unwrap_or_default();
                    assert!(
                        h.fits_in(total),
                        "seed {seed}: node {n} holds {h:?} of {total:?}"
                    );
                }
            }
            for t in running.drain() {
                s.finish(t);
            }
            for g in 100..next_group {
                s.remove_group(g);
            }
            for (n, total) in &totals {
                assert_eq!(s.node_available(*n), Some(total), "seed {seed}: node {n}");
            }
        }
        assert!(
            replaced > 200 && lost_tasks > 50,
            "{replaced} re-placements, {lost_tasks} lost tasks"
        );
    }

    /// An actor holds its slot for its lifetime: short tasks of the same shape must never
    /// be queued behind it (they would wait until the actor ends).
    #[test]
    fn nothing_is_pipelined_behind_an_actor() {
        let mut s = Scheduler::with_pipelining(PIPE);
        s.add_node(1, cpu(2.0));
        // Short tasks of shape {1 CPU}: pipelining is on for the class.
        s.submit(0, cpu(1.0));
        s.schedule();
        s.advance(100);
        s.finish(0);
        s.submit_long_lived(100, cpu(1.0), None, false);
        s.submit_long_lived(101, cpu(1.0), None, false);
        let placed: Vec<_> = s.schedule().iter().map(|p| (p.task, p.after)).collect();
        assert_eq!(placed, vec![(100, None), (101, None)]);
        for t in 1..10 {
            s.submit(t, cpu(1.0));
        }
        assert!(s.schedule().is_empty(), "nothing queued behind the actors");
        assert_eq!(s.queued_len(), 9, "the short tasks wait at the head");
        // The actor ends: its slot takes short tasks again (the first one plainly).
        s.finish(100);
        let p = s.schedule();
        assert_eq!((p[0].task, p[0].after), (1, None));
        assert!(p[1..].iter().all(|p| p.after.is_some_and(|a| a != 101)));
    }

    /// Chains fill level by level, so queued work spreads over every slot of the cluster.
    #[test]
    fn pipelines_spread_over_slots() {
        let mut s = Scheduler::with_pipelining(PIPE);
        s.add_node(1, cpu(2.0));
        s.add_node(2, cpu(2.0));
        s.submit(100, cpu(1.0));
        s.schedule();
        s.advance(250);
        s.finish(100);
        for t in 0..12 {
            s.submit(t, cpu(1.0));
        }
        let p = s.schedule();
        assert_eq!(p.len(), 12);
        let mut per_node: HashMap<NodeId, usize> = HashMap::new();
        for pl in &p {
            *per_node.entry(pl.node).or_default() += 1;
        }
        assert_eq!(per_node[&1], 6);
        assert_eq!(per_node[&2], 6);
    }

    #[test]
    fn a_lost_node_gives_back_its_pipelined_tasks_and_cancel_relinks_chains() {
        let mut s = Scheduler::with_pipelining(PIPE);
        s.add_node(1, cpu(1.0));
        s.add_node(2, cpu(1.0));
        s.submit(100, cpu(1.0));
        s.schedule();
        s.advance(300);
        s.finish(100);
        for t in 0..8 {
            s.submit(t, cpu(1.0));
        }
        let p = s.schedule();
        let on2: Vec<TaskId> = p.iter().filter(|p| p.node == 2).map(|p| p.task).collect();
        let running2 = on2[0];
        assert_eq!(s.remove_node(2), vec![running2]);
        assert_eq!(
            s.queued_len(),
            8 - 2,
            "pinned tasks wait again, the lost one is out"
        );
        // The pinned tasks are first in the queue again, in their order.
        let on1: Vec<TaskId> = p.iter().filter(|p| p.node == 1).map(|p| p.task).collect();
        let (first, middle) = (on1[0], on1[1]);
        s.cancel(&[middle].into_iter().collect());
        s.finish(first);
        assert_eq!(
            s.running_on(on1[2]),
            Some(1),
            "the chain skips the cancelled task"
        );
        let p = s.schedule();
        assert_eq!(p[0].task, on2[1], "{p:?}");
    }

    /// A cluster fed random short and long tasks with pipelining on. The test mirrors what
    /// node agents do with `after` (start the task when its predecessor ends, on the same
    /// allocation) and checks after every step that no node is over-committed, that every
    /// task is in exactly one place, and that everything ends.
    #[test]
    fn simulated_cluster_with_pipelining_keeps_invariants() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut s = Scheduler::with_pipelining(Pipelining {
            max_depth: 8,
            window_us: 2_000,
        });
        let mut totals = HashMap::new();
        for id in 0..100u32 {
            let t = cpu([1.0, 2.0, 4.0][rng.random_range(0..3)]);
            totals.insert(id, t.clone());
            s.add_node(id, t);
        }
        let mut now = 0u64;
        let mut next_task = 0u64;
        let mut waiting: HashMap<TaskId, ResourceSet> = HashMap::new();
        // task -> (node, request, end time)
        let mut running: HashMap<TaskId, (NodeId, ResourceSet, u64)> = HashMap::new();
        // predecessor -> pipelined successor, as a node agent keeps them
        let mut after: HashMap<TaskId, TaskId> = HashMap::new();
        let mut pinned: HashMap<TaskId, (NodeId, ResourceSet)> = HashMap::new();
        let mut pipelined = 0;
        let duration = |rng: &mut StdRng, req: &ResourceSet| {
            if req.cpu == cpu(1.0).cpu {
                rng.random_range(10..300)
            } else {
                rng.random_range(3_000..10_000)
            }
        };
        for step in 0..200_000 {
            if step < 2000 {
                let burst = if step % 250 == 0 { 3_000 } else { 0 };
                for _ in 0..rng.random_range(0..20) + burst {
                    let req = cpu(if rng.random_bool(0.05) { 2.0 } else { 1.0 });
                    waiting.insert(next_task, req.clone());
                    s.submit(next_task, req);
                    next_task += 1;
                }
            }
            now += rng.random_range(10..200);
            s.advance(now);
            let ended: Vec<TaskId> = running
                .iter()
                .filter(|(_, r)| r.2 <= now)
                .map(|(t, _)| *t)
                .collect();
            for t in ended {
                let (node, req, _) = running.remove(&t).unwrap();
                assert_eq!(s.finish(t), Some(node));
                if let Some(succ) = after.remove(&t) {
                    let (n, r) = pinned.remove(&succ).unwrap();
                    assert_eq!((n, &r), (node, &req), "a successor reuses its slot");
                    let end = now + duration(&mut rng, &r);
                    running.insert(succ, (n, r, end));
                    assert_eq!(s.running_on(succ), Some(node));
                }
            }
            for p in s.schedule() {
                let req = waiting.remove(&p.task).expect("placed task was waiting");
                match p.after {
                    None => {
                        let end = now + duration(&mut rng, &req);
                        running.insert(p.task, (p.node, req, end));
                    }
                    Some(pred) => {
                        pipelined += 1;
                        assert!(running.contains_key(&pred) || pinned.contains_key(&pred));
                        assert_eq!(req, cpu(1.0), "only short tasks are pipelined");
                        assert!(after.insert(pred, p.task).is_none(), "one successor each");
                        pinned.insert(p.task, (p.node, req));
                    }
                }
            }
            assert_eq!(s.queued_len(), waiting.len() + pinned.len());
            assert_eq!(s.running_len(), running.len());
            let mut used: HashMap<NodeId, u64> = HashMap::new();
            for (n, req, _) in running.values() {
                *used.entry(*n).or_default() += req.cpu;
            }
            for (n, c) in used {
                assert!(c <= totals[&n].cpu, "node {n} over-committed");
            }
            if step >= 2000 && running.is_empty() && waiting.is_empty() {
                break;
            }
        }
        assert!(running.is_empty() && waiting.is_empty() && pinned.is_empty());
        assert!(pipelined > 1000, "short tasks were pipelined ({pipelined})");
        for (id, t) in &totals {
            assert_eq!(
                s.node_available(*id),
                Some(t),
                "node {id} not idle at the end"
            );
        }
    }

    /// Sequential tasks of a driver stay on its own node; a burst fills that node to half
    /// and then spreads over the cluster.
    #[test]
    fn preferred_node_takes_tasks_until_half_busy() {
        let mut s = Scheduler::new();
        for n in 1..=3 {
            s.add_node(n, cpu(4.0));
        }
        for t in 0..3 {
            s.submit_preferring(t, cpu(1.0), Some(2));
            let p = s.schedule();
            assert_eq!(p[0].node, 2);
            s.finish(t);
        }
        for t in 10..16 {
            s.submit_preferring(t, cpu(1.0), Some(2));
        }
        let p = s.schedule();
        let on = |n| p.iter().filter(|p| p.node == n).count();
        assert_eq!((on(1), on(2), on(3)), (2, 2, 2), "{p:?}");
    }
}
