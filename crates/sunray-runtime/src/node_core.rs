//! The node agent's decisions, as a state machine without I/O: it takes what the head
//! and the workers say ([`Input`], [`NodeCore::on_head_message`]) and answers with
//! [`Effect`]s — messages to the head or a worker, processes to start or kill,
//! executables to find, objects to keep or free — that the shell in `node.rs` carries
//! out. It never reads a clock: `clock` counts results, for "idle longest".

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

use bytes::Bytes;
use sunray_proto::{
    ActorId, Assignment, BinaryInfo, CallerToNode, ClientId, ErrorKind, HeadToNode, Location,
    NodeId, NodeToCaller, NodeToHead, NodeToWorker, ObjectId, Outcome, ProgramKind, Reply,
    TaskError, TaskId, TaskKind, TaskSpec, WorkerTask, WorkerToNode,
};
use sunray_sched::{Allocation, NodeLedger, ResourceSet, Successors};
use tracing::{debug, warn};

use crate::head::to_request;

/// What the shell tells the core besides the head's messages.
#[derive(Debug)]
pub enum Input {
    /// A line worker `worker` printed (`client`: the driver it prints for).
    Output {
        worker: u64,
        client: ClientId,
        origin: String,
        line: String,
    },
    /// The worker's process runs (pid unknown on some systems).
    WorkerStarted(u64, Option<u32>),
    /// Its process could not be started.
    WorkerStartFailed(u64, String),
    /// It connected to the worker socket and said who it is.
    WorkerConnected(u64),
    FromWorker(u64, WorkerToNode),
    WorkerExited(u64, String),
    /// A direct caller's message (on its connection `u64` to the object server).
    FromCaller(u64, CallerToNode),
    /// That connection closed: its calls' answers have nowhere to go.
    CallerLeft(u64),
    /// Where a driver's executable is on this host (or why it is not).
    BinaryReady(ClientId, Result<PathBuf, String>),
}

/// What the core asks the shell to do, in order.
#[derive(Debug)]
pub enum Effect {
    ToHead(NodeToHead),
    ToWorker(u64, NodeToWorker),
    ToCaller(u64, NodeToCaller),
    /// Start worker `worker`: `path` (the driver's executable, or an interpreter), with
    /// these device ids visible.
    Spawn {
        worker: u64,
        client: ClientId,
        path: PathBuf,
        registry: String,
        kind: ProgramKind,
        visible_gpus: Vec<String>,
    },
    Kill(u64),
    /// Find (or fetch from the head) a driver's executable; answer with `BinaryReady`.
    LocateBinary(ClientId, BinaryInfo),
    /// Worker `worker` now prints for this driver (a prestarted worker was adopted).
    LogFor(u64, ClientId),
    /// Keep this object in the node's store (a large result), or drop these.
    Keep(ObjectId, Bytes),
    Free(Vec<ObjectId>),
}

/// The client of a prestarted worker no driver has adopted yet.
pub const UNADOPTED: ClientId = ClientId::MAX;

/// Python workers started ahead of any driver, as Ray prestarts one per CPU: a worker
/// costs an interpreter start and `import cloudpickle` (tens of ms of CPU), paid before
/// a driver's first tasks instead of by them. Only when the node agent runs from the
/// Python package (which sets `PRESTART_PYTHON_PATH`).
pub struct Prestart {
    pub exe: PathBuf,
    pub sys_path: Vec<String>,
    pub count: usize,
}

/// The node agent's state.
pub struct NodeCore {
    id: NodeId,
    ip: String,
    /// Device ids of the node's GPUs, by ledger index.
    gpu_ids: Vec<String>,
    /// Where this node serves its objects (what the head is told for stored results).
    store_addr: String,
    ledger: NodeLedger,
    queue: VecDeque<Queued>,
    /// Pipelined tasks, each waiting for the task it follows (running or waiting here).
    successors: Successors<Assignment>,
    /// Pipelined tasks already sent to the worker that runs their predecessor (they stay
    /// in `successors` until it ends): the worker goes from one to the next without
    /// waiting, and the node reads several `Done`s per wake-up.
    prefetched: HashMap<TaskId, u64>,
    /// `Blocked`s told to the head that it has not answered with `Lent` yet, by task.
    /// The head takes back everything it pipelined behind the task before it read the
    /// block, so until it answers, the node drops a `Run` behind that task (even if
    /// the task runs again meanwhile: the head read neither the block nor its end).
    unread_blocks: HashMap<TaskId, u32>,
    /// Tasks dropped from such a chain (dropped task -> blocked task), until the head
    /// answered every block of that task: a `Run` behind one of them is dropped too.
    revoked: HashMap<TaskId, TaskId>,
    jobs: HashMap<ClientId, Job>,
    workers: HashMap<u64, Worker>,
    /// Direct callers (see [`CallerToNode`]), by connection.
    callers: HashMap<u64, Caller>,
    /// Direct calls sent to their actor's worker, and the connection they came on.
    direct: HashMap<TaskId, u64>,
    next_worker: u64,
    done: Vec<(TaskId, Reply)>,
    clock: u64,
    max_workers: usize,
    /// Most workers kept for tasks blocked in `get`/`wait` (their CPU lent): beyond it a
    /// task waits here for a worker to come free instead of a new process starting.
    max_blocked: usize,
    /// Jobs whose nested tasks the head was told cannot progress here (a job leaves
    /// once they do).
    stuck_told: Vec<ClientId>,
    prestart: Option<Prestart>,
    /// Effects of the inputs handled since the shell last took them.
    pub out: Vec<Effect>,
}

struct Running {
    task: TaskId,
    function: String,
    alloc: Allocation,
    /// Its CPU is lent to other tasks while it waits for them (`Blocked`).
    lent: bool,
}

struct Worker {
    client: ClientId,
    /// Sent first when it connects: it was adopted before it connected.
    adopt: Option<NodeToWorker>,
    gpus: Vec<usize>,
    /// Known once the shell started it.
    pid: Option<u32>,
    /// It connected to the node's worker socket: messages to it go through.
    connected: bool,
    /// Asked to end (killed): never given work again, whatever it says until it exits.
    retiring: bool,
    /// The task this worker runs, or was started for.
    running: Option<Running>,
    pending: Option<Assignment>,
    idle_since: u64,
    /// The actor this worker was started for: it runs only that actor's calls.
    actor: Option<ActorHere>,
    /// The task it ran last (and its function): its output may be read after its result.
    last_task: Option<(TaskId, String)>,
}

/// An actor living in a worker of this node.
struct ActorHere {
    id: ActorId,
    /// "Counter 'name' (actor 0x…)", as the head names it.
    describe: String,
    detached: bool,
    /// The creation task's resources, held from its constructor's return until the
    /// worker ends.
    alloc: Option<Allocation>,
    /// Calls sent to the worker, oldest first (it runs them in this order).
    calls: VecDeque<(TaskId, String)>,
}

/// A direct caller's connection.
#[derive(Default)]
struct Caller {
    /// `Lost` answers sent per actor: a call must carry the count it has read.
    epochs: HashMap<ActorId, u32>,
    /// Results read since the last flush.
    done: Vec<(TaskId, Outcome)>,
}

impl Worker {
    fn actor_is(&self, actor: ActorId) -> bool {
        self.actor.as_ref().is_some_and(|a| a.id == actor)
    }
}

/// A task waiting to start here; a pipelined one may hold its predecessor's allocation.
/// Workers kept for blocked tasks by default. A recursion of tasks that wait for their
/// children holds one process per task waiting (a few to tens of MB each for Python):
/// deep chains must stop somewhere short of exhausting the host, while wide trees
/// (`fib(18)` on 2 CPUs holds about 70 at its peak; the frontier grows with the CPUs
/// running it) must not meet the cap. Past it a task waits for a worker to come free,
/// which a tree wider than the cap may never see.
pub fn default_max_blocked(cpus: usize) -> usize {
    (16 * cpus).clamp(256, 4096)
}

struct Queued {
    a: Assignment,
    alloc: Option<Allocation>,
}

struct Job {
    binary: BinaryInfo,
    path: Option<Result<PathBuf, String>>,
}

impl NodeCore {
    /// A node with `total` resources (`gpu_ids` naming its GPUs) serving objects at
    /// `store_addr`.
    pub fn new(
        id: NodeId,
        ip: String,
        gpu_ids: Vec<String>,
        total: ResourceSet,
        store_addr: String,
        prestart: Option<Prestart>,
    ) -> NodeCore {
        let cpus = total.cpu_f64().ceil() as usize;
        NodeCore {
            id,
            ip,
            max_workers: (2 * cpus + gpu_ids.len()).max(4),
            max_blocked: default_max_blocked(cpus),
            stuck_told: Vec::new(),
            gpu_ids,
            store_addr,
            ledger: NodeLedger::new(total),
            queue: VecDeque::new(),
            successors: Successors::default(),
            prefetched: HashMap::new(),
            unread_blocks: HashMap::new(),
            revoked: HashMap::new(),
            callers: HashMap::new(),
            direct: HashMap::new(),
            jobs: HashMap::new(),
            workers: HashMap::new(),
            next_worker: 1,
            done: Vec::new(),
            clock: 0,
            prestart,
            out: Vec::new(),
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Sets the most workers kept for blocked tasks (`SUNRAY_MAX_BLOCKED_WORKERS`).
    pub fn set_max_blocked(&mut self, n: usize) {
        self.max_blocked = n.max(1);
    }

    fn location(&self) -> String {
        format!("node {} ({})", self.id, self.ip)
    }

    /// A task's outcome as the head gets it: a large value stays in this node's store
    /// and the head learns where it is.
    fn keep(&mut self, task: TaskId, outcome: Outcome) -> Reply {
        let value = outcome?;
        if value.len() <= sunray_proto::INLINE_OBJECT_BYTES {
            return Ok(sunray_proto::Value::Inline(value));
        }
        let size = value.len() as u64;
        self.out.push(Effect::Keep(task, value));
        Ok(sunray_proto::Value::Stored(Location {
            node: self.id,
            addr: self.store_addr.clone(),
            size,
        }))
    }

    /// Handles a message of the head; true when the node must stop.
    pub fn on_head_message(&mut self, m: HeadToNode) -> bool {
        match m {
            HeadToNode::Job { client, binary } => {
                self.out.push(Effect::LocateBinary(client, binary.clone()));
                self.jobs.insert(client, Job { binary, path: None });
            }
            HeadToNode::Run(assignments) => {
                for a in assignments {
                    if let TaskKind::ActorCall { actor } = a.spec.kind {
                        self.send_call(actor, a.spec);
                        continue;
                    }
                    // Placed again after the head took it back: what follows it now
                    // follows this placement (anything behind the old one came first).
                    self.revoked.remove(&a.spec.id);
                    match a.after {
                        // Behind a task whose block the head has not read, or behind
                        // one dropped for that: the head takes it back when it reads
                        // of the block, and places it again.
                        Some(p) if self.revoked.contains_key(&p) => {
                            let root = self.revoked[&p];
                            self.revoked.insert(a.spec.id, root);
                        }
                        Some(p) if self.unread_blocks.contains_key(&p) => {
                            self.revoked.insert(a.spec.id, p);
                        }
                        Some(p) if self.is_here(p) => {
                            self.successors.insert(p, a.spec.id, a.client, a);
                            self.prefetch_after(p);
                        }
                        // The predecessor ended already: its resources are free.
                        _ => self.queue.push_back(Queued { a, alloc: None }),
                    }
                }
            }
            HeadToNode::EndJob { client } => {
                self.jobs.remove(&client);
                for a in self.successors.remove_owner(client) {
                    self.prefetched.remove(&a.spec.id);
                }
                let (gone, kept) = std::mem::take(&mut self.queue)
                    .into_iter()
                    .partition(|q| q.a.client == client);
                self.queue = kept;
                for q in gone {
                    self.task_ended(q.a.spec.id, q.alloc);
                }
                let theirs: Vec<u64> = self
                    .workers
                    .iter()
                    .filter(|(_, w)| {
                        w.client == client && !w.actor.as_ref().is_some_and(|a| a.detached)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in theirs {
                    self.retire(id);
                }
                self.top_up_prestarted();
            }
            HeadToNode::KillActor { actor } => {
                if let Some(id) = self
                    .workers
                    .iter()
                    .find(|(_, w)| w.actor_is(actor))
                    .map(|(id, _)| *id)
                {
                    self.retire(id);
                } else if let Some(i) = self.queue.iter().position(|q| q.a.spec.id == actor) {
                    let q = self.queue.remove(i).expect("found above");
                    self.task_ended(actor, q.alloc);
                    self.tell_head(NodeToHead::ActorDied {
                        actor,
                        why: "killed before it started".into(),
                    });
                }
            }
            HeadToNode::Heartbeat => {}
            HeadToNode::Lent { task } => {
                let unread = self.unread_blocks.entry(task).or_default();
                *unread = unread.saturating_sub(1);
                if *unread == 0 {
                    self.unread_blocks.remove(&task);
                    self.revoked.retain(|_, root| *root != task);
                }
            }
            HeadToNode::Free(ids) => self.out.push(Effect::Free(ids)),
            HeadToNode::TaskReply { task, data } => {
                if let Some((id, _)) = self.workers.iter().find(|(_, w)| {
                    w.connected
                        && (w.running.as_ref().is_some_and(|r| r.task == task)
                            || w.actor
                                .as_ref()
                                .is_some_and(|a| a.calls.iter().any(|(t, _)| *t == task)))
                }) {
                    self.out
                        .push(Effect::ToWorker(*id, NodeToWorker::Reply { task, data }));
                }
            }
            HeadToNode::Shutdown => return true,
        }
        false
    }

    pub fn handle(&mut self, e: Input) {
        match e {
            Input::Output {
                worker,
                client,
                origin,
                line,
            } => {
                let task = self.workers.get(&worker).and_then(|w| {
                    w.running
                        .as_ref()
                        .map(|r| (r.task, r.function.clone()))
                        .or_else(|| w.actor.as_ref().and_then(|a| a.calls.front().cloned()))
                        .or_else(|| w.last_task.clone())
                });
                self.out.push(Effect::ToHead(NodeToHead::Log {
                    client,
                    origin,
                    lines: vec![line],
                    task,
                }));
            }
            Input::FromCaller(conn, m) => match m {
                CallerToNode::Call { spec, epoch } => self.direct_call(conn, spec, epoch),
                CallerToNode::Reply { task, data } => {
                    if self.direct.get(&task) == Some(&conn) {
                        self.on_head_message(HeadToNode::TaskReply { task, data });
                    }
                }
            },
            Input::CallerLeft(conn) => {
                self.callers.remove(&conn);
            }
            Input::BinaryReady(client, r) => {
                if let Err(msg) = &r {
                    warn!("node {}: no executable for driver {client}: {msg}", self.id);
                }
                if let Some(j) = self.jobs.get_mut(&client) {
                    j.path = Some(r);
                }
            }
            Input::WorkerStarted(id, pid) => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.pid = pid;
                }
            }
            Input::WorkerStartFailed(id, why) => self.start_failed(id, &why),
            Input::WorkerConnected(id) => {
                let Some(w) = self.workers.get_mut(&id) else {
                    return;
                };
                let (pending, gpus) = (w.pending.take(), w.gpus.clone());
                w.connected = true;
                if let Some(m) = w.adopt.take() {
                    self.out.push(Effect::ToWorker(id, m));
                }
                if let Some(a) = pending {
                    let task = a.spec.id;
                    let job = a.client;
                    let run = NodeToWorker::Run(self.worker_task(a.spec, job, &gpus));
                    self.out.push(Effect::ToWorker(id, run));
                    self.prefetch_after(task);
                }
            }
            Input::FromWorker(id, msg) => match msg {
                WorkerToNode::Done { task, outcome } => {
                    self.clock += 1;
                    let clock = self.clock;
                    let Some(w) = self.workers.get_mut(&id) else {
                        return;
                    };
                    if let Some(r) = &w.running {
                        w.last_task = Some((r.task, r.function.clone()));
                    }
                    if let Some(a) = w.actor.as_mut() {
                        let outcome = outcome.map_err(|mut e| {
                            e.location
                                .get_or_insert_with(|| format!("node {} ({})", self.id, self.ip));
                            e
                        });
                        // In order, except in a threaded actor.
                        if let Some(i) = a.calls.iter().position(|(t, _)| *t == task) {
                            w.last_task = a.calls.remove(i);
                            match self.direct.remove(&task) {
                                // Straight back to its caller, whatever its size.
                                Some(conn) => {
                                    if let Some(c) = self.callers.get_mut(&conn) {
                                        c.done.push((task, outcome));
                                    }
                                }
                                None => {
                                    let reply = self.keep(task, outcome);
                                    self.done.push((task, reply));
                                }
                            }
                            return;
                        }
                        let Some(r) = w.running.take() else { return };
                        if outcome.is_ok() {
                            // The constructor returned: the actor keeps the resources.
                            a.alloc = Some(r.alloc);
                        } else {
                            // It failed: the worker goes, silently (the error says it all).
                            w.actor = None;
                            w.retiring = true;
                            self.out.push(Effect::Kill(id));
                            self.task_ended(r.task, Some(r.alloc));
                        }
                        let reply = self.keep(task, outcome);
                        self.done.push((task, reply));
                        return;
                    }
                    if let Some(r) = w.running.take() {
                        debug_assert_eq!(r.task, task);
                        if r.lent {
                            self.ledger.reclaim_cpu(r.alloc.resources.cpu);
                        }
                        w.idle_since = clock;
                        self.task_ended(r.task, Some(r.alloc));
                        let outcome = outcome.map_err(|mut e| {
                            e.location
                                .get_or_insert_with(|| format!("node {} ({})", self.id, self.ip));
                            e
                        });
                        let reply = self.keep(task, outcome);
                        self.done.push((task, reply));
                    }
                }
                WorkerToNode::Message { task, data } => match self.direct.get(&task) {
                    Some(&conn) => self.tell_caller(conn, NodeToCaller::Message { task, data }),
                    None => self.tell_head(NodeToHead::TaskMessage { task, data }),
                },
                WorkerToNode::Blocked { task } => self.blocked(id, task),
                WorkerToNode::Unblocked { task } => {
                    let Some(r) = self.workers.get_mut(&id).and_then(|w| w.running.as_mut()) else {
                        return;
                    };
                    if r.task == task && r.lent {
                        r.lent = false;
                        self.ledger.reclaim_cpu(r.alloc.resources.cpu);
                        self.tell_head(NodeToHead::Unblocked { task });
                    }
                }
                WorkerToNode::Hello { .. } => {}
            },
            Input::WorkerExited(id, status) => {
                let loc = self.location();
                let Some(w) = self.workers.remove(&id) else {
                    return;
                };
                debug!("worker {id} exited: {status}");
                // What it had prefetched runs elsewhere (it never started, or died with it).
                self.prefetched.retain(|_, on| *on != id);
                if let Some(a) = w.actor {
                    if let Some(alloc) = &a.alloc {
                        self.ledger.release(alloc);
                    }
                    if let Some(r) = w.running {
                        self.task_ended(r.task, Some(r.alloc));
                    }
                    let why = if w.connected {
                        format!("worker process (pid {}) {status}", w.pid.unwrap_or(0))
                    } else {
                        format!("its worker process exited before connecting ({status})")
                    };
                    // Direct calls go back to their callers, which send them again
                    // through the head (it retries or fails its own calls).
                    let mut lost: HashMap<u64, Vec<TaskId>> = HashMap::new();
                    for (t, _) in &a.calls {
                        if let Some(conn) = self.direct.remove(t) {
                            lost.entry(conn).or_default().push(*t);
                        }
                    }
                    let died = format!(
                        "{} died: its process on {} ended: {why}",
                        a.describe,
                        self.location()
                    );
                    for (conn, tasks) in lost {
                        self.lose(conn, a.id, tasks, true, died.clone());
                    }
                    self.tell_head(NodeToHead::ActorDied { actor: a.id, why });
                    return;
                }
                if let Some(r) = w.running {
                    if r.lent {
                        self.ledger.reclaim_cpu(r.alloc.resources.cpu);
                    }
                    self.task_ended(r.task, Some(r.alloc));
                    let (kind, message) = if w.connected {
                        (
                            ErrorKind::WorkerDied,
                            format!("worker process (pid {}) died: {status}", w.pid.unwrap_or(0)),
                        )
                    } else {
                        (
                            ErrorKind::WorkerStartFailed,
                            format!(
                                "worker process exited before connecting ({status}); does the program call sunray::init() first thing in main?"
                            ),
                        )
                    };
                    self.done.push((
                        r.task,
                        Err(TaskError {
                            kind,
                            function: r.function,
                            location: Some(loc),
                            message,
                        }),
                    ));
                }
            }
        }
    }

    /// Worker `id`'s process could not be started: its task fails (a prestarted one
    /// is only logged).
    fn start_failed(&mut self, id: u64, why: &str) {
        let Some(w) = self.workers.remove(&id) else {
            return;
        };
        let Some(r) = w.running else {
            warn!("cannot start a worker ahead: {why}");
            return;
        };
        self.task_ended(r.task, Some(r.alloc));
        self.done.push((
            r.task,
            Err(TaskError {
                kind: ErrorKind::WorkerStartFailed,
                function: r.function,
                location: Some(self.location()),
                message: format!("cannot start worker: {why}"),
            }),
        ));
    }

    /// Starts queued tasks that fit, on idle workers or new ones.
    pub fn try_start(&mut self) {
        let mut i = 0;
        let mut held = Vec::new();
        while i < self.queue.len() {
            let client = self.queue[i].a.client;
            let path = match self.jobs.get(&client).map(|j| j.path.clone()) {
                None => {
                    // job ended meanwhile
                    let q = self.queue.remove(i).expect("index in range");
                    self.task_ended(q.a.spec.id, q.alloc);
                    continue;
                }
                Some(None) => {
                    i += 1;
                    continue;
                }
                Some(Some(Err(msg))) => {
                    let Queued { a, alloc } = self.queue.remove(i).expect("index in range");
                    self.task_ended(a.spec.id, alloc);
                    self.done.push((
                        a.spec.id,
                        Err(TaskError {
                            kind: ErrorKind::WorkerStartFailed,
                            function: a.spec.function,
                            location: Some(self.location()),
                            message: msg,
                        }),
                    ));
                    continue;
                }
                Some(Some(Ok(p))) => p,
            };
            let alloc = match self.queue[i].alloc.take() {
                Some(alloc) => alloc,
                None => {
                    let req = to_request(&self.queue[i].a.spec.resources);
                    let Some(alloc) = self.ledger.try_acquire(&req) else {
                        i += 1;
                        continue;
                    };
                    alloc
                }
            };
            let a = self.queue.remove(i).expect("index in range").a;
            let gpus = alloc.gpu_indices();
            let running = Running {
                task: a.spec.id,
                function: a.spec.function.clone(),
                alloc,
                lent: false,
            };
            if let TaskKind::CreateActor(opts) = &a.spec.kind {
                // An actor gets a worker of its own, for its lifetime.
                let here = ActorHere {
                    id: a.spec.id,
                    describe: match &opts.name {
                        Some(n) => format!("{} '{n}' (actor {:#x})", opts.class, a.spec.id),
                        None => format!("{} (actor {:#x})", opts.class, a.spec.id),
                    },
                    detached: opts.detached,
                    alloc: None,
                    calls: VecDeque::new(),
                };
                self.make_room();
                let program = self.program_of(client);
                let wid = self.next_worker;
                self.spawn_worker(client, &path, &program, gpus, Some((a, running)));
                if let Some(w) = self.workers.get_mut(&wid) {
                    w.actor = Some(here);
                }
                continue;
            }
            let idle = self
                .workers
                .iter()
                .filter(|(_, w)| {
                    w.client == client
                        && w.gpus == gpus
                        && w.running.is_none()
                        && w.connected
                        && !w.retiring
                        && w.actor.is_none()
                })
                .max_by_key(|(_, w)| w.idle_since)
                .map(|(id, _)| *id);
            if let Some(id) = idle {
                let wt = self.worker_task(a.spec, client, &gpus);
                self.out.push(Effect::ToWorker(id, NodeToWorker::Run(wt)));
                let task = running.task;
                self.workers.get_mut(&id).expect("found above").running = Some(running);
                self.prefetch_after(task);
            } else if let Some(id) = self.adoptable(client, &gpus) {
                self.adopt(id, client, a, running);
            } else if self.blocked_workers(client) >= self.max_blocked {
                // Each level of a deep recursion holds a blocked worker: past the cap
                // (per job, so that one job's recursion never starves another's tasks)
                // the task waits, with its allocation, for a worker to come free.
                let alloc = Some(running.alloc);
                self.queue.insert(i, Queued { a, alloc });
                held.push(client);
                i += 1;
            } else {
                self.make_room();
                let program = self.program_of(client);
                self.spawn_worker(client, &path, &program, gpus, Some((a, running)));
            }
        }
        self.check_stuck(held);
    }

    /// Workers of `client` whose task is blocked in `get`/`wait` (its CPU lent).
    fn blocked_workers(&self, client: ClientId) -> usize {
        self.workers
            .values()
            .filter(|w| w.client == client && w.running.as_ref().is_some_and(|r| r.lent))
            .count()
    }

    /// `held` (one entry per task) wait for a worker because of their job's cap: when
    /// every busy worker of that job here is blocked and no actor call is under way,
    /// nothing here can end, so unless what they wait for ends elsewhere they never
    /// start. The head is told once per episode (it warns the job's driver) instead of
    /// the host filling with processes.
    fn check_stuck(&mut self, mut held: Vec<ClientId>) {
        // Only looked at while tasks are held: no cost on the ordinary path.
        if held.is_empty() && self.stuck_told.is_empty() {
            return;
        }
        let calls_under_way = self
            .workers
            .values()
            .any(|w| w.actor.as_ref().is_some_and(|a| !a.calls.is_empty()));
        held.sort_unstable();
        let mut stuck = Vec::new();
        for job in held.chunk_by(|a, b| a == b) {
            let client = job[0];
            let progressing = calls_under_way
                || self
                    .workers
                    .values()
                    .any(|w| w.client == client && w.running.as_ref().is_some_and(|r| !r.lent));
            if progressing {
                continue;
            }
            stuck.push(client);
            if !self.stuck_told.contains(&client) {
                self.tell_head(NodeToHead::Stuck {
                    clients: vec![client],
                    blocked: self.blocked_workers(client) as u32,
                    waiting: job.len() as u32,
                    cap: self.max_blocked as u32,
                });
            }
        }
        self.stuck_told = stuck;
    }

    /// What a worker of `client` runs: its registry hash and program kind.
    fn program_of(&self, client: ClientId) -> (String, ProgramKind) {
        self.jobs
            .get(&client)
            .map(|j| (j.binary.registry_hash.clone(), j.binary.kind.clone()))
            .unwrap_or((String::new(), ProgramKind::Native))
    }

    /// Sends a call to its actor's worker, which runs calls in the order they come. An
    /// actor not here (it just died) drops it: the head retries or fails the calls it
    /// had sent when it hears of the death.
    fn send_call(&mut self, actor: ActorId, spec: TaskSpec) {
        let Some((id, w)) = self.workers.iter().find(|(_, w)| w.actor_is(actor)) else {
            return;
        };
        if !w.connected {
            return;
        }
        let (gpus, id, job) = (w.gpus.clone(), *id, w.client);
        let call = (spec.id, spec.function.clone());
        let run = NodeToWorker::Run(self.worker_task(spec, job, &gpus));
        self.out.push(Effect::ToWorker(id, run));
        if let Some(a) = self.workers.get_mut(&id).and_then(|w| w.actor.as_mut()) {
            a.calls.push_back(call);
        }
    }

    /// A direct call: sent to its actor's worker if the actor lives here (constructed)
    /// and the caller has read every `Lost` it was sent for it; else refused.
    fn direct_call(&mut self, conn: u64, spec: TaskSpec, epoch: u32) {
        let TaskKind::ActorCall { actor } = spec.kind else {
            warn!(
                "node {}: a direct call that is not an actor call; dropped",
                self.id
            );
            return;
        };
        let read_all = self
            .callers
            .entry(conn)
            .or_default()
            .epochs
            .get(&actor)
            .copied()
            .unwrap_or(0)
            == epoch;
        let lives_here = self.workers.values().any(|w| {
            w.actor_is(actor)
                && w.connected
                && !w.retiring
                && w.actor.as_ref().is_some_and(|a| a.alloc.is_some())
        });
        if read_all && lives_here {
            self.direct.insert(spec.id, conn);
            self.send_call(actor, spec);
            return;
        }
        let why = match lives_here {
            true => "sent before the caller read that its earlier calls were lost".to_string(),
            false => format!(
                "actor {actor:#x} does not live on {} (now)",
                self.location()
            ),
        };
        self.lose(conn, actor, vec![spec.id], false, why);
    }

    /// Tells a direct caller that these calls of `actor` will not answer here.
    fn lose(&mut self, conn: u64, actor: ActorId, tasks: Vec<TaskId>, ran: bool, why: String) {
        let Some(c) = self.callers.get_mut(&conn) else {
            return;
        };
        *c.epochs.entry(actor).or_default() += 1;
        self.tell_caller(
            conn,
            NodeToCaller::Lost {
                actor,
                tasks,
                ran,
                why,
            },
        );
    }

    /// A message to a direct caller, after the results read before it.
    fn tell_caller(&mut self, conn: u64, msg: NodeToCaller) {
        if let Some(c) = self.callers.get_mut(&conn) {
            if !c.done.is_empty() {
                let done = NodeToCaller::Done(std::mem::take(&mut c.done));
                self.out.push(Effect::ToCaller(conn, done));
            }
            self.out.push(Effect::ToCaller(conn, msg));
        }
    }

    /// Worker `id`'s task waits for other tasks: its CPU is lent to them, the tasks
    /// pipelined behind it are revoked (they would wait for it while it waits for
    /// them), and the worker is told which of those it was sent must not run.
    fn blocked(&mut self, id: u64, task: TaskId) {
        let mut revoked = Vec::new();
        let running = self
            .workers
            .get_mut(&id)
            .and_then(|w| w.running.as_mut())
            .filter(|r| r.task == task && !r.lent);
        if let Some(r) = running {
            r.lent = true;
            self.ledger.lend_cpu(r.alloc.resources.cpu);
            let mut t = task;
            while let Some(a) = self.successors.take_after(t) {
                t = a.spec.id;
                self.prefetched.remove(&t);
                self.revoked.insert(t, task);
                revoked.push(t);
            }
            *self.unread_blocks.entry(task).or_default() += 1;
            self.tell_head(NodeToHead::Blocked { task });
        }
        if self.workers.get(&id).is_some_and(|w| w.connected) {
            self.out.push(Effect::ToWorker(
                id,
                NodeToWorker::Revoked { tasks: revoked },
            ));
        }
    }

    /// Does `task` run here, or wait here to run?
    fn is_here(&self, task: TaskId) -> bool {
        self.successors.is_waiting(task)
            || self.queue.iter().any(|q| q.a.spec.id == task)
            || self
                .workers
                .values()
                .any(|w| w.running.as_ref().is_some_and(|r| r.task == task))
    }

    /// `task` ended here (or will never run here): the task pipelined after it starts on
    /// its resources (first in the queue), or they are free again.
    fn task_ended(&mut self, task: TaskId, alloc: Option<Allocation>) {
        let Some(next) = self.successors.take_after(task) else {
            if let Some(alloc) = alloc {
                self.ledger.release(&alloc);
            }
            return;
        };
        let id = next.spec.id;
        // A prefetched task follows a task of its worker, which just ended there; its
        // worker has it already (and starts it now, if not already).
        let on_worker = self
            .prefetched
            .remove(&id)
            .and_then(|w| self.workers.get_mut(&w));
        match (on_worker, alloc) {
            (Some(w), Some(alloc)) => {
                debug_assert!(
                    w.running.is_none(),
                    "a prefetched task follows its worker's"
                );
                w.running = Some(Running {
                    task: id,
                    function: next.spec.function,
                    alloc,
                    lent: false,
                })
            }
            (_, alloc) => self.queue.push_front(Queued { a: next, alloc }),
        }
    }

    /// Sends the tasks pipelined after `task` to the worker that runs `task` (or has it
    /// already), as far along the chain as they belong to that worker's driver.
    fn prefetch_after(&mut self, task: TaskId) {
        let worker = self.prefetched.get(&task).copied().or_else(|| {
            self.workers
                .iter()
                .find(|(_, w)| w.running.as_ref().is_some_and(|r| r.task == task))
                .map(|(id, _)| *id)
        });
        let Some(w) = worker.and_then(|id| self.workers.get(&id)) else {
            return;
        };
        if w.running.as_ref().is_some_and(|r| r.lent) {
            return;
        }
        if !w.connected {
            return;
        }
        let (client, gpus) = (w.client, w.gpus.clone());
        let id = worker.expect("found above");
        let mut t = task;
        while let Some((next, a)) = self.successors.next_after(t) {
            if !self.prefetched.contains_key(&next) {
                if a.client != client {
                    return;
                }
                let wt = self.worker_task(a.spec.clone(), client, &gpus);
                self.out.push(Effect::ToWorker(id, NodeToWorker::Run(wt)));
                self.prefetched.insert(next, id);
            }
            t = next;
        }
    }

    fn worker_task(&self, spec: TaskSpec, job: ClientId, gpus: &[usize]) -> WorkerTask {
        WorkerTask {
            spec,
            job,
            node_id: self.id,
            node_ip: self.ip.clone(),
            gpu_ids: gpus.iter().map(|i| self.gpu_ids[*i].clone()).collect(),
        }
    }

    /// Keeps the number of worker processes bounded by retiring the longest-idle one.
    fn make_room(&mut self) {
        if self.workers.values().filter(|w| !w.retiring).count() < self.max_workers {
            return;
        }
        let idlest = self
            .workers
            .iter()
            .filter(|(_, w)| w.running.is_none() && w.connected && !w.retiring && w.actor.is_none())
            .min_by_key(|(_, w)| w.idle_since)
            .map(|(id, _)| *id);
        if let Some(id) = idlest {
            self.retire(id);
        }
    }

    /// Ends worker `id`'s process; it gets no work from now on.
    fn retire(&mut self, id: u64) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.retiring = true;
            self.out.push(Effect::Kill(id));
        }
    }

    /// Starts a worker for `client` (with `task` to run once it connects).
    fn spawn_worker(
        &mut self,
        client: ClientId,
        path: &std::path::Path,
        (registry, kind): &(String, ProgramKind),
        gpus: Vec<usize>,
        task: Option<(Assignment, Running)>,
    ) {
        let id = self.next_worker;
        self.next_worker += 1;
        let visible_gpus = gpus.iter().map(|i| self.gpu_ids[*i].clone()).collect();
        let (pending, running) = task.unzip();
        self.workers.insert(
            id,
            Worker {
                client,
                adopt: None,
                gpus,
                pid: None,
                connected: false,
                retiring: false,
                running,
                pending,
                idle_since: 0,
                actor: None,
                last_task: None,
            },
        );
        self.out.push(Effect::Spawn {
            worker: id,
            client,
            path: path.to_path_buf(),
            registry: registry.clone(),
            kind: kind.clone(),
            visible_gpus,
        });
    }

    /// Starts prestarted workers until there are as many as CPUs (none is adopted yet).
    pub fn top_up_prestarted(&mut self) {
        let Some(p) = &self.prestart else { return };
        let have = self
            .workers
            .values()
            .filter(|w| w.client == UNADOPTED)
            .count();
        let (exe, program) = (
            p.exe.clone(),
            (
                "python".to_string(),
                ProgramKind::Python {
                    sys_path: p.sys_path.clone(),
                    cwd: String::new(),
                },
            ),
        );
        for _ in have..p.count {
            self.spawn_worker(UNADOPTED, &exe, &program, Vec::new(), None);
        }
    }

    /// A prestarted worker that `client`'s task may run on: no GPUs, the driver runs the
    /// same interpreter, and its module path has everything the worker's has.
    fn adoptable(&self, client: ClientId, gpus: &[usize]) -> Option<u64> {
        let p = self.prestart.as_ref()?;
        let job = &self.jobs.get(&client)?.binary;
        let ProgramKind::Python { sys_path, .. } = &job.kind else {
            return None;
        };
        let same = gpus.is_empty()
            && std::path::Path::new(&job.path) == p.exe
            && p.sys_path.iter().all(|x| sys_path.contains(x));
        if !same {
            return None;
        }
        self.workers
            .iter()
            .filter(|(_, w)| w.client == UNADOPTED && w.running.is_none() && !w.retiring)
            .max_by_key(|(_, w)| w.connected)
            .map(|(id, _)| *id)
    }

    /// Gives prestarted worker `id` to `client` and runs `a` on it.
    fn adopt(&mut self, id: u64, client: ClientId, a: Assignment, running: Running) {
        let Some(ProgramKind::Python { sys_path, cwd }) =
            self.jobs.get(&client).map(|j| j.binary.kind.clone())
        else {
            return;
        };
        let adopt = NodeToWorker::Adopt {
            sys_path,
            cwd,
            job: client,
            credential: String::new(),
        };
        let task = running.task;
        let wt = self.worker_task(a.spec.clone(), client, &[]);
        let w = self.workers.get_mut(&id).expect("an adoptable worker");
        w.client = client;
        w.running = Some(running);
        self.out.push(Effect::LogFor(id, client));
        match w.connected {
            true => {
                self.out.push(Effect::ToWorker(id, adopt));
                self.out.push(Effect::ToWorker(id, NodeToWorker::Run(wt)));
                self.prefetch_after(task);
            }
            false => {
                w.adopt = Some(adopt);
                w.pending = Some(a);
            }
        }
    }

    /// Sends a message about a task (or actor) after the results read before it: the
    /// head must hear of a task's predecessor ending before it hears of the task (a
    /// pipelined one starts here when that `Done` is read), and of a call's result
    /// before its actor's death (or it would retry a call that returned).
    fn tell_head(&mut self, msg: NodeToHead) {
        self.flush();
        self.out.push(Effect::ToHead(msg));
    }

    /// Sends the results read so far (once per batch of inputs, or before a message
    /// that must follow them).
    pub fn flush(&mut self) {
        if !self.done.is_empty() {
            let done = NodeToHead::Done(std::mem::take(&mut self.done));
            self.out.push(Effect::ToHead(done));
        }
        for (conn, c) in &mut self.callers {
            if !c.done.is_empty() {
                let done = NodeToCaller::Done(std::mem::take(&mut c.done));
                self.out.push(Effect::ToCaller(*conn, done));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use sunray_proto::{object_id, ActorOptions, Resources, Value};

    const JOB: ClientId = 2;

    fn core(cpus: f64, gpus: usize) -> NodeCore {
        let mut c = NodeCore::new(
            7,
            "127.0.0.9".into(),
            (0..gpus).map(|i| format!("dev{i}")).collect(),
            ResourceSet::new(cpus, gpus as f64, 0.0),
            "127.0.0.9:7000".into(),
            None,
        );
        c.on_head_message(HeadToNode::Job {
            client: JOB,
            binary: BinaryInfo {
                path: "/bin/driver".into(),
                hash: "0123456789abcdef0123456789abcdef".into(),
                size: 1,
                registry_hash: "r".into(),
                kind: ProgramKind::Native,
            },
        });
        assert!(matches!(
            &c.out[..],
            [Effect::LocateBinary(JOB, b)] if b.path == "/bin/driver"
        ));
        c.out.clear();
        c.handle(Input::BinaryReady(JOB, Ok("/bin/driver".into())));
        c
    }

    fn spec(seq: u64, cpu: f64, gpu: f64) -> TaskSpec {
        TaskSpec {
            id: object_id(JOB, seq),
            function: "m::f".into(),
            args: vec![],
            resources: Resources {
                cpu,
                gpu,
                ..Default::default()
            },
            max_retries: 0,
            kind: TaskKind::Plain,
            bundle: None,
        }
    }

    fn run(c: &mut NodeCore, spec: TaskSpec, after: Option<TaskId>) {
        c.on_head_message(HeadToNode::Run(vec![Assignment {
            client: JOB,
            spec,
            after,
        }]));
    }

    /// What the node does once the inputs so far are handled.
    fn step(c: &mut NodeCore) -> Vec<Effect> {
        c.try_start();
        c.flush();
        std::mem::take(&mut c.out)
    }

    fn spawned(out: &[Effect]) -> Vec<(u64, Vec<String>)> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Spawn {
                    worker,
                    visible_gpus,
                    ..
                } => Some((*worker, visible_gpus.clone())),
                _ => None,
            })
            .collect()
    }

    fn sent(out: &[Effect]) -> Vec<(u64, TaskId)> {
        out.iter()
            .filter_map(|e| match e {
                Effect::ToWorker(w, NodeToWorker::Run(t)) => Some((*w, t.spec.id)),
                _ => None,
            })
            .collect()
    }

    fn done(out: &[Effect]) -> Vec<(TaskId, Reply)> {
        out.iter()
            .flat_map(|e| match e {
                Effect::ToHead(NodeToHead::Done(v)) => v.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    fn connect(c: &mut NodeCore, w: u64) {
        c.handle(Input::WorkerStarted(w, Some(100 + w as u32)));
        c.handle(Input::WorkerConnected(w));
    }

    fn finish(c: &mut NodeCore, w: u64, task: TaskId, value: &[u8]) {
        c.handle(Input::FromWorker(
            w,
            WorkerToNode::Done {
                task,
                outcome: Ok(Bytes::copy_from_slice(value)),
            },
        ));
    }

    #[test]
    fn tasks_start_a_worker_reuse_it_when_idle_and_report_in_order() {
        let mut c = core(1.0, 0);
        let (a, b) = (spec(1, 1.0, 0.0), spec(2, 1.0, 0.0));
        run(&mut c, a.clone(), None);
        run(&mut c, b.clone(), None);
        let out = step(&mut c);
        let [(w, _)] = spawned(&out)[..] else {
            panic!("one worker for one CPU: {out:?}")
        };
        assert!(
            sent(&out).is_empty(),
            "nothing goes to a worker not connected"
        );
        connect(&mut c, w);
        assert_eq!(sent(&step(&mut c)), vec![(w, a.id)]);
        finish(&mut c, w, a.id, b"a");
        let out = step(&mut c);
        assert_eq!(
            done(&out),
            vec![(a.id, Ok(Value::Inline(Bytes::from_static(b"a"))))]
        );
        assert_eq!(sent(&out), vec![(w, b.id)], "b runs on the idle worker");
        assert!(spawned(&out).is_empty());
    }

    #[test]
    fn gpu_tasks_get_workers_that_see_only_their_own_devices() {
        let mut c = core(4.0, 2);
        for (i, g) in [1.0, 1.0, 0.0].into_iter().enumerate() {
            run(&mut c, spec(i as u64 + 1, 1.0, g), None);
        }
        let mut seen: Vec<Vec<String>> = spawned(&step(&mut c)).into_iter().map(|s| s.1).collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![vec![], vec!["dev0".to_string()], vec!["dev1".into()]]
        );
    }

    #[test]
    fn a_worker_dying_mid_task_fails_it_naming_the_process_and_frees_its_cpu() {
        let mut c = core(1.0, 0);
        let a = spec(1, 1.0, 0.0);
        run(&mut c, a.clone(), None);
        let w = spawned(&step(&mut c))[0].0;
        connect(&mut c, w);
        step(&mut c);
        c.handle(Input::WorkerExited(w, "killed by signal 9".into()));
        let out = step(&mut c);
        let [(id, Err(e))] = &done(&out)[..] else {
            panic!("{out:?}")
        };
        assert_eq!((*id, e.kind), (a.id, ErrorKind::WorkerDied));
        assert!(e.message.contains(&format!("pid {}", 100 + w)) && e.message.contains("signal 9"));
        assert_eq!(e.location.as_deref(), Some("node 7 (127.0.0.9)"));
        run(&mut c, spec(2, 1.0, 0.0), None);
        assert_eq!(spawned(&step(&mut c)).len(), 1, "its CPU is free again");
        // A worker that never starts fails its task too.
        let mut c = core(1.0, 0);
        run(&mut c, spec(3, 1.0, 0.0), None);
        let w = spawned(&step(&mut c))[0].0;
        c.handle(Input::WorkerStartFailed(
            w,
            "/bin/driver: no such file".into(),
        ));
        let out = step(&mut c);
        assert!(matches!(&done(&out)[..], [(_, Err(e))]
            if e.kind == ErrorKind::WorkerStartFailed && e.message.contains("no such file")));
    }

    #[test]
    fn large_results_stay_in_the_store_and_the_head_learns_where() {
        let mut c = core(1.0, 0);
        let (a, b) = (spec(1, 1.0, 0.0), spec(2, 1.0, 0.0));
        run(&mut c, a.clone(), None);
        let w = spawned(&step(&mut c))[0].0;
        connect(&mut c, w);
        step(&mut c);
        let big = vec![5u8; sunray_proto::INLINE_OBJECT_BYTES + 1];
        finish(&mut c, w, a.id, &big);
        run(&mut c, b.clone(), None);
        let out = step(&mut c);
        let kept = out
            .iter()
            .position(|e| matches!(e, Effect::Keep(id, v) if *id == a.id && v.len() == big.len()));
        let told = out
            .iter()
            .position(|e| matches!(e, Effect::ToHead(NodeToHead::Done(_))));
        assert!(
            kept.is_some() && kept < told,
            "kept before the head hears: {out:?}"
        );
        assert_eq!(
            done(&out),
            vec![(
                a.id,
                Ok(Value::Stored(Location {
                    node: 7,
                    addr: "127.0.0.9:7000".into(),
                    size: big.len() as u64,
                }))
            )]
        );
        finish(&mut c, w, b.id, &[1; 100]);
        assert!(matches!(&done(&step(&mut c))[..], [(_, Ok(Value::Inline(v)))] if v.len() == 100));
        c.on_head_message(HeadToNode::Free(vec![a.id]));
        assert!(matches!(&step(&mut c)[..], [Effect::Free(ids)] if ids == &vec![a.id]));
    }

    #[test]
    fn a_blocked_task_lends_its_cpu_and_the_task_pipelined_behind_it_is_revoked() {
        let mut c = core(1.0, 0);
        let (a, b, x) = (spec(1, 1.0, 0.0), spec(2, 1.0, 0.0), spec(3, 1.0, 0.0));
        run(&mut c, a.clone(), None);
        let w = spawned(&step(&mut c))[0].0;
        connect(&mut c, w);
        step(&mut c);
        run(&mut c, b.clone(), Some(a.id));
        assert_eq!(
            sent(&step(&mut c)),
            vec![(w, b.id)],
            "b is sent ahead to a's worker"
        );
        c.handle(Input::FromWorker(w, WorkerToNode::Blocked { task: a.id }));
        let out = step(&mut c);
        assert!(out
            .iter()
            .any(|e| matches!(e, Effect::ToHead(NodeToHead::Blocked { task }) if *task == a.id)));
        assert!(out.iter().any(|e| matches!(e, Effect::ToWorker(v, NodeToWorker::Revoked { tasks }) if *v == w && tasks == &vec![b.id])));
        // The head places another task on the lent CPU: a second worker runs it.
        run(&mut c, x.clone(), None);
        assert_eq!(spawned(&step(&mut c)).len(), 1);
    }

    fn stuck(out: &[Effect]) -> Vec<(Vec<ClientId>, u32, u32, u32)> {
        out.iter()
            .filter_map(|e| match e {
                Effect::ToHead(NodeToHead::Stuck {
                    clients,
                    blocked,
                    waiting,
                    cap,
                }) => Some((clients.clone(), *blocked, *waiting, *cap)),
                _ => None,
            })
            .collect()
    }

    /// A recursion deeper than the cap: each level blocks a worker; past the cap the
    /// next level waits for a worker instead of a process starting, the head is told
    /// once that nothing here can progress, and a worker coming free runs it.
    #[test]
    fn past_the_cap_of_blocked_workers_tasks_wait_for_a_worker_and_the_head_hears_once() {
        let mut c = core(1.0, 0);
        c.set_max_blocked(2);
        let t: Vec<TaskSpec> = (1..=4).map(|i| spec(i, 1.0, 0.0)).collect();
        let mut workers = Vec::new();
        for level in &t[..2] {
            run(&mut c, level.clone(), None);
            let w = spawned(&step(&mut c))[0].0;
            connect(&mut c, w);
            assert_eq!(sent(&step(&mut c)), vec![(w, level.id)]);
            c.handle(Input::FromWorker(
                w,
                WorkerToNode::Blocked { task: level.id },
            ));
            assert!(stuck(&step(&mut c)).is_empty());
            workers.push(w);
        }
        // Level 3 gets the CPU level 2 lent, but no process: both workers are blocked.
        run(&mut c, t[2].clone(), None);
        let out = step(&mut c);
        assert!(spawned(&out).is_empty() && sent(&out).is_empty(), "{out:?}");
        assert_eq!(stuck(&out), vec![(vec![JOB], 2, 1, 2)]);
        // Said once, however often the node looks again.
        c.handle(Input::FromWorker(
            workers[0],
            WorkerToNode::Unblocked { task: 999 },
        ));
        assert!(stuck(&step(&mut c)).is_empty());
        // Level 2 ends after all (say it had a timeout): its worker runs level 3.
        c.handle(Input::FromWorker(
            workers[1],
            WorkerToNode::Unblocked { task: t[1].id },
        ));
        finish(&mut c, workers[1], t[1].id, b"2");
        let out = step(&mut c);
        assert_eq!(sent(&out), vec![(workers[1], t[2].id)]);
        assert!(spawned(&out).is_empty());
        // Stuck again later: told again.
        c.handle(Input::FromWorker(
            workers[1],
            WorkerToNode::Blocked { task: t[2].id },
        ));
        step(&mut c);
        run(&mut c, t[3].clone(), None);
        assert_eq!(stuck(&step(&mut c)), vec![(vec![JOB], 2, 1, 2)]);
        // The cap is the job's: another job's task still gets a worker of its own.
        c.on_head_message(HeadToNode::Job {
            client: JOB + 1,
            binary: c.jobs[&JOB].binary.clone(),
        });
        c.handle(Input::BinaryReady(JOB + 1, Ok("/bin/driver".into())));
        c.on_head_message(HeadToNode::Run(vec![Assignment {
            client: JOB + 1,
            spec: spec(5, 0.0, 0.0),
            after: None,
        }]));
        let out = step(&mut c);
        assert_eq!(spawned(&out).len(), 1, "{out:?}");
        assert!(stuck(&out).is_empty());
    }

    /// The head pipelined c behind b before it read that a blocked: c is on its way
    /// when the node revokes b. The head puts c back in its queue when it reads the
    /// block, so the node must drop c rather than run it as if b had ended (c would run
    /// twice, and the head would count the node's CPUs wrong).
    #[test]
    fn a_task_pipelined_behind_a_revoked_one_is_dropped_until_the_head_has_read_the_block() {
        let mut c = core(2.0, 0);
        let (a, b, d, e) = (
            spec(1, 1.0, 0.0),
            spec(2, 1.0, 0.0),
            spec(3, 1.0, 0.0),
            spec(4, 1.0, 0.0),
        );
        run(&mut c, a.clone(), None);
        let w = spawned(&step(&mut c))[0].0;
        connect(&mut c, w);
        step(&mut c);
        run(&mut c, b.clone(), Some(a.id));
        step(&mut c);
        c.handle(Input::FromWorker(w, WorkerToNode::Blocked { task: a.id }));
        step(&mut c);
        // Sent by the head before it read the block, behind the revoked b.
        run(&mut c, d.clone(), Some(b.id));
        let out = step(&mut c);
        assert!(
            spawned(&out).is_empty() && sent(&out).is_empty(),
            "d follows a revoked task: {out:?}"
        );
        // The head read the block, put b and d back in its queue and places them again.
        c.on_head_message(HeadToNode::Lent { task: a.id });
        run(&mut c, d.clone(), None);
        run(&mut c, e.clone(), Some(d.id));
        let out = step(&mut c);
        let [(w2, _)] = spawned(&out)[..] else {
            panic!("d runs on the lent CPU: {out:?}")
        };
        connect(&mut c, w2);
        assert_eq!(sent(&step(&mut c)), vec![(w2, d.id), (w2, e.id)]);
    }

    #[test]
    fn ending_a_job_kills_its_workers_but_not_its_detached_actors() {
        let mut c = core(2.0, 0);
        let mut actor = spec(1, 1.0, 0.0);
        actor.kind = TaskKind::CreateActor(Box::new(ActorOptions {
            class: "C".into(),
            name: Some("keep".into()),
            detached: true,
            max_restarts: 0,
            max_task_retries: 0,
            max_concurrency: 1,
        }));
        run(&mut c, actor.clone(), None);
        run(&mut c, spec(2, 1.0, 0.0), None);
        let workers = spawned(&step(&mut c));
        assert_eq!(workers.len(), 2);
        for (w, _) in &workers {
            connect(&mut c, *w);
        }
        let out = step(&mut c);
        let on_actor = sent(&out).iter().find(|(_, t)| *t == actor.id).unwrap().0;
        finish(&mut c, on_actor, actor.id, b"");
        step(&mut c);
        c.on_head_message(HeadToNode::EndJob { client: JOB });
        let killed: Vec<u64> = step(&mut c)
            .iter()
            .filter_map(|e| match e {
                Effect::Kill(w) => Some(*w),
                _ => None,
            })
            .collect();
        let other = workers.iter().find(|(w, _)| *w != on_actor).unwrap().0;
        assert_eq!(killed, vec![other]);
    }

    /// What the node told direct caller connections.
    fn to_callers(out: &[Effect]) -> Vec<(u64, &NodeToCaller)> {
        out.iter()
            .filter_map(|e| match e {
                Effect::ToCaller(conn, m) => Some((*conn, m)),
                _ => None,
            })
            .collect()
    }

    /// Calls straight from a caller's connection (Ray's direct calls): they run on their
    /// actor's worker in order and answer that caller alone, never the head; a call to
    /// an actor not constructed here, or sent before the caller read a `Lost`, is given
    /// back unrun; a call's messages go to its caller and only it may answer them; when
    /// the actor's process dies, the calls it had go back as possibly run, while the
    /// head hears of the death as before.
    #[test]
    fn direct_calls_run_on_their_actor_and_answer_their_caller_alone() {
        let mut c = core(2.0, 0);
        assert_eq!(c.callers.len(), 0);
        let mut actor = spec(1, 1.0, 0.0);
        actor.kind = TaskKind::CreateActor(Box::new(ActorOptions {
            class: "Counter".into(),
            name: None,
            detached: false,
            max_restarts: 0,
            max_task_retries: 0,
            max_concurrency: 1,
        }));
        let call = |seq| {
            let mut s = spec(seq, 0.0, 0.0);
            s.kind = TaskKind::ActorCall { actor: actor.id };
            s
        };
        let direct = |c: &mut NodeCore, conn, seq, epoch| {
            c.handle(Input::FromCaller(
                conn,
                CallerToNode::Call {
                    spec: call(seq),
                    epoch,
                },
            ));
            step(c)
        };
        let given_back = |out: &[Effect]| -> Vec<(u64, Vec<TaskId>, bool)> {
            to_callers(out)
                .into_iter()
                .filter_map(|(conn, m)| match m {
                    NodeToCaller::Lost { tasks, ran, .. } => Some((conn, tasks.clone(), *ran)),
                    _ => None,
                })
                .collect()
        };
        run(&mut c, actor.clone(), None);
        let w = spawned(&step(&mut c))[0].0;
        connect(&mut c, w);
        step(&mut c);
        // Its constructor has not returned: given back, unrun.
        let out = direct(&mut c, 5, 2, 0);
        assert_eq!(given_back(&out), vec![(5, vec![call(2).id], false)]);
        finish(&mut c, w, actor.id, b"");
        step(&mut c);
        // Sent before caller 5 read that answer: given back too; then its calls run.
        let out = direct(&mut c, 5, 3, 0);
        assert_eq!(given_back(&out), vec![(5, vec![call(3).id], false)]);
        let out = direct(&mut c, 5, 4, 2);
        assert_eq!(sent(&out), vec![(w, call(4).id)]);
        let out = direct(&mut c, 6, 5, 0);
        assert_eq!(
            sent(&out),
            vec![(w, call(5).id)],
            "another caller starts at 0"
        );
        // A message of call 4 goes to caller 5; only caller 5 may answer it.
        c.handle(Input::FromWorker(
            w,
            WorkerToNode::Message {
                task: call(4).id,
                data: Bytes::from_static(b"?"),
            },
        ));
        let out = step(&mut c);
        assert!(
            matches!(&to_callers(&out)[..], [(5, NodeToCaller::Message { task, .. })] if *task == call(4).id)
        );
        for conn in [6, 5] {
            c.handle(Input::FromCaller(
                conn,
                CallerToNode::Reply {
                    task: call(4).id,
                    data: Bytes::from(vec![conn as u8]),
                },
            ));
        }
        let replies: Vec<Bytes> = step(&mut c)
            .into_iter()
            .filter_map(|e| match e {
                Effect::ToWorker(_, NodeToWorker::Reply { data, .. }) => Some(data),
                _ => None,
            })
            .collect();
        assert_eq!(replies, vec![Bytes::from(vec![5u8])]);
        // Results go to their callers, none to the head.
        finish(&mut c, w, call(4).id, b"four");
        finish(&mut c, w, call(5).id, b"five");
        let out = step(&mut c);
        assert!(done(&out).is_empty(), "the head hears nothing: {out:?}");
        let mut answers: Vec<(u64, TaskId, Bytes)> = to_callers(&out)
            .into_iter()
            .flat_map(|(conn, m)| match m {
                NodeToCaller::Done(v) => v
                    .iter()
                    .map(|(t, o)| (conn, *t, o.clone().unwrap()))
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        answers.sort();
        assert_eq!(
            answers,
            vec![
                (5, call(4).id, Bytes::from_static(b"four")),
                (6, call(5).id, Bytes::from_static(b"five"))
            ]
        );
        // The process dies with a call of caller 5: back to it as possibly run.
        direct(&mut c, 5, 6, 2);
        c.handle(Input::WorkerExited(w, "killed by signal 9".into()));
        let out = step(&mut c);
        assert_eq!(given_back(&out), vec![(5, vec![call(6).id], true)]);
        let why = to_callers(&out)
            .into_iter()
            .find_map(|(_, m)| match m {
                NodeToCaller::Lost { why, .. } => Some(why.clone()),
                _ => None,
            })
            .unwrap();
        assert!(
            why.starts_with(&format!("Counter (actor {:#x}) died", actor.id))
                && why.contains("node 7 (127.0.0.9)")
                && why.contains("signal 9"),
            "{why}"
        );
        assert!(out
            .iter()
            .any(|e| matches!(e, Effect::ToHead(NodeToHead::ActorDied { actor: a, .. }) if *a == actor.id)));
        // With the actor gone, calls are given back unrun; a caller that left is forgotten.
        let out = direct(&mut c, 6, 7, 0);
        assert_eq!(given_back(&out), vec![(6, vec![call(7).id], false)]);
        c.handle(Input::CallerLeft(5));
        assert!(!c.callers.contains_key(&5));
    }

    #[test]
    fn a_worker_the_node_killed_gets_no_more_work() {
        // An actor's constructor fails: its worker is killed, and must not take the
        // next task of its job while it is still exiting.
        let mut c = core(2.0, 0);
        let mut actor = spec(1, 1.0, 0.0);
        actor.kind = TaskKind::CreateActor(Box::new(ActorOptions {
            class: "C".into(),
            name: None,
            detached: false,
            max_restarts: 0,
            max_task_retries: 0,
            max_concurrency: 1,
        }));
        run(&mut c, actor.clone(), None);
        let w = spawned(&step(&mut c))[0].0;
        connect(&mut c, w);
        step(&mut c);
        c.handle(Input::FromWorker(
            w,
            WorkerToNode::Done {
                task: actor.id,
                outcome: Err(TaskError {
                    kind: ErrorKind::Application,
                    function: "C".into(),
                    location: None,
                    message: "constructor refused".into(),
                }),
            },
        ));
        let out = step(&mut c);
        assert!(out.iter().any(|e| matches!(e, Effect::Kill(k) if *k == w)));
        run(&mut c, spec(2, 1.0, 0.0), None);
        let out = step(&mut c);
        assert!(sent(&out).iter().all(|(to, _)| *to != w), "{out:?}");
        assert_eq!(spawned(&out).len(), 1, "a fresh worker runs it");
    }

    /// Direct callers against the core, with the node's answers read late: calls sent,
    /// the actor finishing them in order, its process dying and the head starting it
    /// again, callers leaving. Every call of a caller that stays gets one answer (a
    /// result, or given back); a call given back unrun never reached the worker; a call
    /// sent before its caller read a `Lost` never runs; each caller's calls run in the
    /// order it sent them.
    #[test]
    fn generated_direct_calls_answer_once_and_keep_their_callers_order() {
        let (mut ran_total, mut lost_total) = (0, 0);
        for seed in 0..300u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut c = core(2.0, 0);
            let mut actor = spec(1, 1.0, 0.0);
            actor.kind = TaskKind::CreateActor(Box::new(ActorOptions {
                class: "A".into(),
                name: None,
                detached: false,
                max_restarts: -1,
                max_task_retries: 0,
                max_concurrency: 1,
            }));
            // The actor's worker: id, and the calls it was sent (run in order).
            let mut worker: Option<(u64, VecDeque<TaskId>)> = None;
            let mut constructing: Option<u64> = None;
            // Per connection: Lost read, answers not read yet, calls sent (id -> epoch).
            struct Caller {
                epoch: u32,
                inbox: VecDeque<NodeToCaller>,
                sent: HashMap<TaskId, u32>,
                last_ran: TaskId,
            }
            let mut callers: HashMap<u64, Caller> = HashMap::new();
            let mut answers: HashMap<TaskId, u32> = HashMap::new();
            let mut ran: std::collections::HashSet<TaskId> = Default::default();
            let mut owner: HashMap<TaskId, u64> = HashMap::new();
            // `Lost` the node sent per connection: a call it runs carries that count.
            let mut lost_sent: HashMap<u64, u32> = HashMap::new();
            let (mut next_conn, mut next_call) = (1u64, 10u64);
            run(&mut c, actor.clone(), None);
            for _ in 0..400 {
                match rng.random_range(0..12) {
                    0..=4 if !callers.is_empty() => {
                        let conn = *callers
                            .keys()
                            .nth(rng.random_range(0..callers.len()))
                            .unwrap();
                        let caller = callers.get_mut(&conn).unwrap();
                        let mut call = spec(next_call, 0.0, 0.0);
                        call.kind = TaskKind::ActorCall { actor: actor.id };
                        next_call += 1;
                        caller.sent.insert(call.id, caller.epoch);
                        owner.insert(call.id, conn);
                        let epoch = caller.epoch;
                        c.handle(Input::FromCaller(
                            conn,
                            CallerToNode::Call { spec: call, epoch },
                        ));
                    }
                    5 | 6 => {
                        if let Some((w, q)) = worker.as_mut() {
                            if let Some(t) = q.pop_front() {
                                let w = *w;
                                finish(&mut c, w, t, b"ok");
                            }
                        }
                    }
                    7 if worker.is_some() && rng.random_bool(0.3) => {
                        let (w, _) = worker.take().unwrap();
                        c.handle(Input::WorkerExited(w, "killed by signal 9".into()));
                        // The head starts it again.
                        run(&mut c, actor.clone(), None);
                    }
                    8 if callers.len() < 3 => {
                        callers.insert(
                            next_conn,
                            Caller {
                                epoch: 0,
                                inbox: VecDeque::new(),
                                sent: HashMap::new(),
                                last_ran: 0,
                            },
                        );
                        next_conn += 1;
                    }
                    9 if !callers.is_empty() && rng.random_bool(0.2) => {
                        let conn = *callers.keys().next().unwrap();
                        callers.remove(&conn);
                        c.handle(Input::CallerLeft(conn));
                    }
                    _ => {
                        // A caller reads what reached it.
                        for caller in callers.values_mut() {
                            while let Some(m) = caller.inbox.pop_front() {
                                match m {
                                    NodeToCaller::Done(v) => {
                                        for (t, _) in v {
                                            *answers.entry(t).or_default() += 1;
                                        }
                                    }
                                    NodeToCaller::Lost { tasks, ran: r, .. } => {
                                        caller.epoch += 1;
                                        for t in tasks {
                                            assert!(
                                                r || !ran.contains(&t),
                                                "seed {seed}: {t:#x} ran, given back unrun"
                                            );
                                            *answers.entry(t).or_default() += 1;
                                        }
                                    }
                                    NodeToCaller::Message { .. } => {}
                                }
                            }
                        }
                    }
                }
                for e in step(&mut c) {
                    match e {
                        Effect::Spawn { worker: w, .. } => {
                            connect(&mut c, w);
                            constructing = Some(w);
                        }
                        Effect::ToWorker(w, NodeToWorker::Run(t)) => {
                            if t.spec.id == actor.id {
                                continue;
                            }
                            let conn = owner[&t.spec.id];
                            if let Some(caller) = callers.get_mut(&conn) {
                                let epoch = caller.sent[&t.spec.id];
                                let lost = lost_sent.get(&conn).copied().unwrap_or(0);
                                assert_eq!(
                                    epoch, lost,
                                    "seed {seed}: sent before its caller read a Lost"
                                );
                                assert!(
                                    t.spec.id > caller.last_ran,
                                    "seed {seed}: out of its caller's order"
                                );
                                caller.last_ran = t.spec.id;
                            }
                            assert!(ran.insert(t.spec.id), "seed {seed}: sent twice");
                            worker
                                .as_mut()
                                .filter(|(id, _)| *id == w)
                                .expect("its actor's worker")
                                .1
                                .push_back(t.spec.id);
                        }
                        Effect::ToCaller(conn, m) => {
                            match &m {
                                NodeToCaller::Done(v) => assert!(
                                    v.iter().all(|(t, _)| owner[t] == conn),
                                    "seed {seed}: to another caller"
                                ),
                                NodeToCaller::Lost { .. } => {
                                    *lost_sent.entry(conn).or_default() += 1
                                }
                                NodeToCaller::Message { .. } => {}
                            }
                            if let Some(caller) = callers.get_mut(&conn) {
                                caller.inbox.push_back(m);
                            }
                        }
                        Effect::Kill(w) => c.handle(Input::WorkerExited(w, "killed".into())),
                        _ => {}
                    }
                }
                // Its constructor returns a little later.
                if let Some(w) = constructing.filter(|_| rng.random_bool(0.5)) {
                    constructing = None;
                    finish(&mut c, w, actor.id, b"");
                    worker = Some((w, VecDeque::new()));
                    step(&mut c);
                }
            }
            // Drain: the actor finishes what it has, callers read everything.
            if let Some((w, q)) = worker.take() {
                for t in q {
                    finish(&mut c, w, t, b"ok");
                }
            }
            for e in step(&mut c) {
                if let Effect::ToCaller(conn, m) = e {
                    if let Some(caller) = callers.get_mut(&conn) {
                        caller.inbox.push_back(m);
                    }
                }
            }
            for caller in callers.values_mut() {
                while let Some(m) = caller.inbox.pop_front() {
                    let ids: Vec<TaskId> = match m {
                        NodeToCaller::Done(v) => v.into_iter().map(|(t, _)| t).collect(),
                        NodeToCaller::Lost { tasks, .. } => {
                            lost_total += tasks.len();
                            tasks
                        }
                        NodeToCaller::Message { .. } => Vec::new(),
                    };
                    for t in ids {
                        *answers.entry(t).or_default() += 1;
                    }
                }
                for t in caller.sent.keys() {
                    assert_eq!(
                        answers.get(t),
                        Some(&1),
                        "seed {seed}: call {t:#x} answered {:?} times",
                        answers.get(t)
                    );
                }
            }
            ran_total += ran.len();
        }
        assert!(
            ran_total > 5_000 && lost_total > 200,
            "{ran_total} ran, {lost_total} given back"
        );
    }

    /// Simulated worker processes against the core: tasks of random shapes, workers
    /// that fail to start, crash, or finish, in random order. Every task the head sent
    /// gets exactly one result, and what runs at once never exceeds the node.
    #[test]
    fn generated_runs_answer_every_task_once_and_never_overfill_the_node() {
        let (mut tasks, mut died) = (0, 0);
        for seed in 0..200u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut c = core(2.0, 1);
            // Per worker: connected?, tasks sent to it in order.
            let mut procs: HashMap<u64, (bool, VecDeque<TaskId>)> = HashMap::new();
            let mut shapes: HashMap<TaskId, (f64, f64)> = HashMap::new();
            let mut answers: HashMap<TaskId, u32> = HashMap::new();
            let mut exited = Vec::new();
            let mut next = 1;
            for _ in 0..300 {
                match rng.random_range(0..10) {
                    0..=2 if next < 60 => {
                        let (cpu, gpu) =
                            [(1.0, 0.0), (0.5, 0.0), (2.0, 0.0), (1.0, 1.0), (0.0, 0.5)]
                                [rng.random_range(0..5)];
                        let s = spec(next, cpu, gpu);
                        shapes.insert(s.id, (cpu, gpu));
                        run(&mut c, s, None);
                        next += 1;
                    }
                    3 | 4 => {
                        // A connected worker ends its oldest task, or dies.
                        let busy: Vec<u64> = procs
                            .iter()
                            .filter(|(_, (up, q))| *up && !q.is_empty())
                            .map(|(w, _)| *w)
                            .collect();
                        if let Some(&w) = busy.get(rng.random_range(0..busy.len().max(1))) {
                            if rng.random_bool(0.15) {
                                procs.remove(&w);
                                c.handle(Input::WorkerExited(w, "killed by signal 9".into()));
                            } else {
                                let t = procs.get_mut(&w).unwrap().1.pop_front().unwrap();
                                finish(&mut c, w, t, b"ok");
                            }
                        }
                    }
                    5 => {
                        let waiting: Vec<u64> = procs
                            .iter()
                            .filter(|(_, (up, _))| !*up)
                            .map(|(w, _)| *w)
                            .collect();
                        if let Some(&w) = waiting.get(rng.random_range(0..waiting.len().max(1))) {
                            procs.get_mut(&w).unwrap().0 = true;
                            c.handle(Input::WorkerConnected(w));
                        }
                    }
                    _ => {}
                }
                for e in step(&mut c) {
                    match e {
                        Effect::Spawn { worker, .. } => {
                            if rng.random_bool(0.05) {
                                c.handle(Input::WorkerStartFailed(worker, "exec failed".into()));
                            } else {
                                c.handle(Input::WorkerStarted(worker, Some(worker as u32)));
                                procs.insert(worker, (false, VecDeque::new()));
                            }
                        }
                        Effect::ToWorker(w, NodeToWorker::Run(t)) => {
                            let p = procs.get_mut(&w).expect("sent to a live worker");
                            assert!(p.0, "sent to a worker before it connected");
                            p.1.push_back(t.spec.id);
                        }
                        Effect::Kill(w) if procs.remove(&w).is_some() => exited.push(w),
                        Effect::ToHead(NodeToHead::Done(v)) => {
                            for (t, r) in v {
                                died += r.is_err() as u32;
                                *answers.entry(t).or_default() += 1;
                            }
                        }
                        _ => {}
                    }
                }
                for w in exited.drain(..) {
                    c.handle(Input::WorkerExited(w, "killed by signal 9".into()));
                }
                // What workers hold at once fits the node.
                let (cpu, gpu) = procs
                    .values()
                    .filter_map(|(_, q)| q.front())
                    .map(|t| shapes[t])
                    .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
                assert!(
                    cpu <= 2.0 + 1e-9 && gpu <= 1.0 + 1e-9,
                    "seed {seed}: {cpu} CPUs, {gpu} GPUs"
                );
            }
            // Let everything finish.
            for _ in 0..2000 {
                let mut progressed = false;
                for w in procs.keys().copied().collect::<Vec<_>>() {
                    let (up, q) = procs.get_mut(&w).unwrap();
                    if !*up {
                        *up = true;
                        c.handle(Input::WorkerConnected(w));
                        progressed = true;
                    } else if let Some(t) = q.pop_front() {
                        finish(&mut c, w, t, b"ok");
                        progressed = true;
                    }
                }
                for e in step(&mut c) {
                    match e {
                        Effect::Spawn { worker, .. } => {
                            c.handle(Input::WorkerStarted(worker, Some(worker as u32)));
                            procs.insert(worker, (false, VecDeque::new()));
                            progressed = true;
                        }
                        Effect::ToWorker(w, NodeToWorker::Run(t)) => {
                            procs.get_mut(&w).unwrap().1.push_back(t.spec.id);
                            progressed = true;
                        }
                        Effect::Kill(w) => {
                            procs.remove(&w);
                            c.handle(Input::WorkerExited(w, "killed".into()));
                        }
                        Effect::ToHead(NodeToHead::Done(v)) => {
                            for (t, _) in v {
                                *answers.entry(t).or_default() += 1;
                            }
                        }
                        _ => {}
                    }
                }
                if !progressed && c.out.is_empty() {
                    break;
                }
            }
            for t in shapes.keys() {
                assert_eq!(
                    answers.get(t),
                    Some(&1),
                    "seed {seed}: task {t:#x} answered {:?} times",
                    answers.get(t)
                );
            }
            tasks += shapes.len();
        }
        // The runs did what they are for: many tasks, some cut short by crashes.
        assert!(tasks > 5000 && died > 100, "{tasks} tasks, {died} failed");
    }
}
