//! The node agent: runs the tasks the head assigns to this host in worker processes (the
//! driver's own executable in worker mode), with a local resource ledger choosing GPU ids.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use sunray_proto::{
    ActorId, Assignment, BinaryChunk, BinaryInfo, ClientId, ErrorKind, HeadToNode, HelloReply,
    Location, NodeId, NodeRegistration, NodeToHead, NodeToWorker, Outcome, ProgramKind, Reply,
    Role, TaskError, TaskId, TaskKind, TaskSpec, WorkerTask, WorkerToNode,
};
use sunray_sched::{Allocation, NodeLedger, ResourceSet, Successors};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::head::to_request;
use crate::session::Session;
use crate::{detect, env, wire, Error};

/// The two directions between a node agent and its head, whatever carries them (TCP for
/// joined nodes, channels for the head's own node).
pub struct NodeLink {
    pub node_id: NodeId,
    pub to_head: mpsc::UnboundedSender<NodeToHead>,
    pub from_head: mpsc::UnboundedReceiver<HeadToNode>,
    /// Why the head went silent, when that ended the link (`from_head` then closes).
    pub silent_head: Arc<Mutex<Option<String>>>,
}

pub struct NodeConfig {
    pub ip: String,
    pub token: String,
    pub session: Session,
    pub total: ResourceSet,
    pub gpu_ids: Vec<String>,
    /// Where to fetch executables this host cannot see.
    pub head_address: String,
}

/// Joins the head at `address` over TCP.
pub async fn join(
    address: &str,
    bind_ip: Option<IpAddr>,
    token: &str,
    reg: NodeRegistration,
) -> Result<NodeLink, Error> {
    let (io, reply) = wire::connect(address, bind_ip, token, Role::Node(reg)).await?;
    let HelloReply::Welcome {
        node_id: Some(node_id),
        ..
    } = reply
    else {
        return Err(Error::Protocol {
            peer: address.into(),
            message: "head did not assign a node id".into(),
        });
    };
    let (sink, stream) = io.split();
    let (to_head, out_rx) = mpsc::unbounded_channel::<NodeToHead>();
    let (in_tx, from_head) = mpsc::unbounded_channel::<HeadToNode>();
    tokio::spawn(wire::pump_out(sink, out_rx));
    let addr = address.to_string();
    let silent_head = Arc::new(Mutex::new(None));
    let silent = silent_head.clone();
    tokio::spawn(async move {
        // The head sends a heartbeat every second: silence means it is gone or stopped.
        let limit = crate::heartbeat_timeout();
        let why =
            wire::pump_in_within(stream, Some(limit), |m: HeadToNode| in_tx.send(m).is_ok()).await;
        warn!("connection to head {addr} ended: {why}");
        if why.starts_with(wire::SILENT) {
            *silent.lock().unwrap() = Some(format!(
                "head at {addr} has not answered for {} s (stopped, hung, or its host is down)",
                limit.as_secs_f64()
            ));
        }
    });
    let hb = to_head.clone();
    tokio::spawn(async move {
        let mut iv = tokio::time::interval(Duration::from_secs(1));
        loop {
            iv.tick().await;
            if hb.send(NodeToHead::Heartbeat).is_err() {
                break;
            }
        }
    });
    Ok(NodeLink {
        node_id,
        to_head,
        from_head,
        silent_head,
    })
}

/// A line a worker printed, on its way to the driver (through the agent, which knows
/// the task the worker runs).
struct Output {
    worker: u64,
    client: ClientId,
    origin: String,
    line: String,
}

enum Ev {
    Output(Output),
    WorkerConnected(u64, mpsc::UnboundedSender<NodeToWorker>),
    FromWorker(u64, WorkerToNode),
    WorkerExited(u64, String),
    BinaryReady(ClientId, Result<PathBuf, String>),
}

struct Running {
    task: TaskId,
    function: String,
    alloc: Allocation,
    /// Its CPU is lent to other tasks while it waits for them (`Blocked`).
    lent: bool,
}

/// The client of a prestarted worker no driver has adopted yet.
const UNADOPTED: ClientId = ClientId::MAX;

/// Python workers started ahead of any driver, as Ray prestarts one per CPU: a worker
/// costs an interpreter start and `import cloudpickle` (tens of ms of CPU), paid before
/// a driver's first tasks instead of by them. Only when the node agent runs from the
/// Python package (which sets `PRESTART_PYTHON_PATH`).
struct Prestart {
    exe: PathBuf,
    sys_path: Vec<String>,
    count: usize,
}

struct Worker {
    client: ClientId,
    /// The same, for the task forwarding its output (a prestarted worker changes client).
    log_client: Arc<AtomicU32>,
    /// Sent first when it connects: it was adopted before it connected.
    adopt: Option<NodeToWorker>,
    gpus: Vec<usize>,
    pid: Option<u32>,
    tx: Option<mpsc::UnboundedSender<NodeToWorker>>,
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
    detached: bool,
    /// The creation task's resources, held from its constructor's return until the
    /// worker ends.
    alloc: Option<Allocation>,
    /// Calls sent to the worker, oldest first (it runs them in this order).
    calls: VecDeque<(TaskId, String)>,
}

impl Worker {
    fn actor_is(&self, actor: ActorId) -> bool {
        self.actor.as_ref().is_some_and(|a| a.id == actor)
    }
}

/// A task waiting to start here; a pipelined one may hold its predecessor's allocation.
struct Queued {
    a: Assignment,
    alloc: Option<Allocation>,
}

struct Job {
    binary: BinaryInfo,
    path: Option<Result<PathBuf, String>>,
}

struct Agent {
    id: NodeId,
    cfg: NodeConfig,
    ledger: NodeLedger,
    to_head: mpsc::UnboundedSender<NodeToHead>,
    events: mpsc::UnboundedSender<Ev>,
    queue: VecDeque<Queued>,
    /// Pipelined tasks, each waiting for the task it follows (running or waiting here).
    successors: Successors<Assignment>,
    /// Pipelined tasks already sent to the worker that runs their predecessor (they stay
    /// in `successors` until it ends): the worker goes from one to the next without
    /// waiting, and the node reads several `Done`s per wake-up.
    prefetched: HashMap<TaskId, u64>,
    jobs: HashMap<ClientId, Job>,
    workers: HashMap<u64, Worker>,
    next_worker: u64,
    done: Vec<(TaskId, Reply)>,
    /// Large results and task `put`s kept here (see `objects`), and where it serves them.
    store: crate::objects::Store,
    store_addr: String,
    store_server: tokio::task::JoinHandle<()>,
    clock: u64,
    max_workers: usize,
    prestart: Option<Prestart>,
}

/// Runs the node agent until the head goes away or asks it to shut down.
pub async fn run(cfg: NodeConfig, link: NodeLink) -> Result<(), Error> {
    let sock = cfg.session.worker_socket();
    std::fs::remove_file(&sock).ok();
    let listener = UnixListener::bind(&sock)
        .map_err(|e| Error::io(format!("cannot listen on {}", sock.display()), e))?;
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let token = cfg.token.clone();
    let accept_tx = ev_tx.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = accept_tx.clone();
            let token = token.clone();
            tokio::spawn(async move { serve_worker(stream, token, tx).await });
        }
    });
    let objects = tokio::net::TcpListener::bind((cfg.ip.as_str(), 0))
        .await
        .map_err(|e| Error::io(format!("cannot listen for objects on {}", cfg.ip), e))?;
    let store_addr = objects
        .local_addr()
        .map_err(|e| Error::io("cannot read the object server's address", e))?
        .to_string();
    let store = crate::objects::Store::default();
    crate::objects::register_local(&store_addr, &store);
    let store_server = tokio::spawn(crate::objects::serve(
        objects,
        store.clone(),
        cfg.token.clone(),
    ));
    let cpus = cfg.total.cpu_f64().ceil() as usize;
    let mut agent = Agent {
        store,
        store_addr,
        store_server,
        id: link.node_id,
        ledger: NodeLedger::new(cfg.total.clone()),
        max_workers: (2 * cpus + cfg.gpu_ids.len()).max(4),
        cfg,
        to_head: link.to_head,
        events: ev_tx,
        queue: VecDeque::new(),
        successors: Successors::default(),
        prefetched: HashMap::new(),
        jobs: HashMap::new(),
        workers: HashMap::new(),
        next_worker: 1,
        done: Vec::new(),
        clock: 0,
        prestart: std::env::var(env::PRESTART_PYTHON_PATH)
            .ok()
            .filter(|p| !p.is_empty())
            .and_then(|p| {
                Some(Prestart {
                    exe: std::env::current_exe().ok()?,
                    sys_path: std::env::split_paths(&p)
                        .map(|x| x.to_string_lossy().into_owned())
                        .collect(),
                    count: cpus,
                })
            }),
    };
    agent.top_up_prestarted();
    let mut from_head = link.from_head;
    let mut head_batch = Vec::with_capacity(64);
    let mut ev_batch = Vec::with_capacity(64);
    loop {
        tokio::select! {
            n = from_head.recv_many(&mut head_batch, 64) => {
                if n == 0 {
                    if let Some(why) = link.silent_head.lock().unwrap().take() {
                        agent.kill_all();
                        return Err(Error::Disconnected {
                            address: agent.cfg.head_address.clone(),
                            reason: why,
                        });
                    }
                    info!("head connection closed; node {} stops", agent.id);
                    break;
                }
                let mut stop = false;
                for m in head_batch.drain(..) {
                    stop |= agent.on_head_message(m);
                }
                if stop {
                    info!("head asked node {} to shut down", agent.id);
                    break;
                }
            }
            n = ev_rx.recv_many(&mut ev_batch, 64) => {
                if n == 0 { break; }
                for e in ev_batch.drain(..) {
                    agent.on_event(e);
                }
            }
        }
        agent.try_start();
        agent.flush();
    }
    agent.kill_all();
    Ok(())
}

async fn serve_worker(
    stream: tokio::net::UnixStream,
    token: String,
    events: mpsc::UnboundedSender<Ev>,
) {
    let mut io = wire::framed(stream);
    let first = match io.next().await {
        Some(Ok(f)) => f,
        _ => return,
    };
    let worker_id = match sunray_proto::decode::<WorkerToNode>(&first) {
        Ok(WorkerToNode::Hello {
            worker_id,
            token: t,
        }) if wire::token_matches(&t, &token) => worker_id,
        _ => {
            warn!("refused a worker connection: bad hello or token");
            return;
        }
    };
    wire::authenticated(&mut io);
    let (sink, stream) = io.split();
    let (tx, rx) = mpsc::unbounded_channel::<NodeToWorker>();
    if events.send(Ev::WorkerConnected(worker_id, tx)).is_err() {
        return;
    }
    tokio::spawn(wire::pump_out(sink, rx));
    wire::pump_in(stream, |m: WorkerToNode| {
        events.send(Ev::FromWorker(worker_id, m)).is_ok()
    })
    .await;
}

impl Agent {
    fn location(&self) -> String {
        format!("node {} ({})", self.id, self.cfg.ip)
    }

    /// A task's outcome as the head gets it: a large value stays in this node's store
    /// and the head learns where it is.
    fn keep(&self, task: TaskId, outcome: Outcome) -> Reply {
        let value = outcome?;
        if value.len() <= sunray_proto::INLINE_OBJECT_BYTES {
            return Ok(sunray_proto::Value::Inline(value));
        }
        let size = value.len() as u64;
        self.store.insert(task, value);
        Ok(sunray_proto::Value::Stored(Location {
            node: self.id,
            addr: self.store_addr.clone(),
            size,
        }))
    }

    /// Handles a message of the head; true when the node must stop.
    fn on_head_message(&mut self, m: HeadToNode) -> bool {
        match m {
            HeadToNode::Job { client, binary } => {
                let events = self.events.clone();
                let head = self.cfg.head_address.clone();
                let token = self.cfg.token.clone();
                let bin_dir = self.cfg.session.bin_dir();
                let b = binary.clone();
                tokio::spawn(async move {
                    let r = locate_binary(&b, &head, &token, bin_dir).await;
                    let _ = events.send(Ev::BinaryReady(client, r));
                });
                self.jobs.insert(client, Job { binary, path: None });
            }
            HeadToNode::Run(assignments) => {
                for a in assignments {
                    if let TaskKind::ActorCall { actor } = a.spec.kind {
                        self.send_call(actor, a.spec);
                        continue;
                    }
                    match a.after {
                        // Behind a task that waits for others: the head takes it back
                        // when it hears of the wait, and places it again.
                        Some(p) if self.is_blocked(p) => {}
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
                for w in self.workers.values() {
                    if w.client == client && !w.actor.as_ref().is_some_and(|a| a.detached) {
                        kill(w.pid);
                    }
                }
                self.top_up_prestarted();
            }
            HeadToNode::KillActor { actor } => {
                if let Some(w) = self.workers.values().find(|w| w.actor_is(actor)) {
                    kill(w.pid);
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
            HeadToNode::Free(ids) => self.store.free(&ids),
            HeadToNode::TaskReply { task, data } => {
                if let Some(w) = self.workers.values().find(|w| {
                    w.running.as_ref().is_some_and(|r| r.task == task)
                        || w.actor
                            .as_ref()
                            .is_some_and(|a| a.calls.iter().any(|(t, _)| *t == task))
                }) {
                    if let Some(tx) = &w.tx {
                        let _ = tx.send(NodeToWorker::Reply { task, data });
                    }
                }
            }
            HeadToNode::Shutdown => return true,
        }
        false
    }

    fn on_event(&mut self, e: Ev) {
        match e {
            Ev::Output(o) => {
                let task = self.workers.get(&o.worker).and_then(|w| {
                    w.running
                        .as_ref()
                        .map(|r| (r.task, r.function.clone()))
                        .or_else(|| w.actor.as_ref().and_then(|a| a.calls.front().cloned()))
                        .or_else(|| w.last_task.clone())
                });
                let _ = self.to_head.send(NodeToHead::Log {
                    client: o.client,
                    origin: o.origin,
                    lines: vec![o.line],
                    task,
                });
            }
            Ev::BinaryReady(client, r) => {
                if let Err(msg) = &r {
                    warn!("node {}: no executable for driver {client}: {msg}", self.id);
                }
                if let Some(j) = self.jobs.get_mut(&client) {
                    j.path = Some(r);
                }
            }
            Ev::WorkerConnected(id, tx) => {
                let Some(w) = self.workers.get_mut(&id) else {
                    return;
                };
                let (pending, gpus) = (w.pending.take(), w.gpus.clone());
                w.tx = Some(tx.clone());
                if let Some(m) = w.adopt.take() {
                    let _ = tx.send(m);
                }
                if let Some(a) = pending {
                    let task = a.spec.id;
                    let job = a.client;
                    let _ = tx.send(NodeToWorker::Run(self.worker_task(a.spec, job, &gpus)));
                    self.prefetch_after(task);
                }
            }
            Ev::FromWorker(id, msg) => match msg {
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
                            e.location.get_or_insert_with(|| {
                                format!("node {} ({})", self.id, self.cfg.ip)
                            });
                            e
                        });
                        // In order, except in a threaded actor.
                        if let Some(i) = a.calls.iter().position(|(t, _)| *t == task) {
                            w.last_task = a.calls.remove(i);
                            let reply = self.keep(task, outcome);
                            self.done.push((task, reply));
                            return;
                        }
                        let Some(r) = w.running.take() else { return };
                        if outcome.is_ok() {
                            // The constructor returned: the actor keeps the resources.
                            a.alloc = Some(r.alloc);
                        } else {
                            // It failed: the worker goes, silently (the error says it all).
                            w.actor = None;
                            kill(w.pid);
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
                            e.location.get_or_insert_with(|| {
                                format!("node {} ({})", self.id, self.cfg.ip)
                            });
                            e
                        });
                        let reply = self.keep(task, outcome);
                        self.done.push((task, reply));
                    }
                }
                WorkerToNode::Message { task, data } => {
                    self.tell_head(NodeToHead::TaskMessage { task, data });
                }
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
            Ev::WorkerExited(id, status) => {
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
                    let why = if w.tx.is_some() {
                        format!("worker process (pid {}) {status}", w.pid.unwrap_or(0))
                    } else {
                        format!("its worker process exited before connecting ({status})")
                    };
                    self.tell_head(NodeToHead::ActorDied { actor: a.id, why });
                    return;
                }
                if let Some(r) = w.running {
                    if r.lent {
                        self.ledger.reclaim_cpu(r.alloc.resources.cpu);
                    }
                    self.task_ended(r.task, Some(r.alloc));
                    let (kind, message) = if w.tx.is_some() {
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

    /// Starts queued tasks that fit, on idle workers or new ones.
    fn try_start(&mut self) {
        let mut i = 0;
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
                        && w.tx.is_some()
                        && w.actor.is_none()
                })
                .max_by_key(|(_, w)| w.idle_since)
                .map(|(id, _)| *id);
            if let Some(id) = idle {
                let wt = self.worker_task(a.spec, client, &gpus);
                let w = self.workers.get_mut(&id).expect("found above");
                let _ =
                    w.tx.as_ref()
                        .expect("connected")
                        .send(NodeToWorker::Run(wt));
                let task = running.task;
                w.running = Some(running);
                self.prefetch_after(task);
            } else if let Some(id) = self.adoptable(client, &gpus) {
                self.adopt(id, client, a, running);
            } else {
                self.make_room();
                let program = self.program_of(client);
                self.spawn_worker(client, &path, &program, gpus, Some((a, running)));
            }
        }
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
        let (Some(tx), gpus, id, job) = (w.tx.clone(), w.gpus.clone(), *id, w.client) else {
            return;
        };
        let call = (spec.id, spec.function.clone());
        let _ = tx.send(NodeToWorker::Run(self.worker_task(spec, job, &gpus)));
        if let Some(a) = self.workers.get_mut(&id).and_then(|w| w.actor.as_mut()) {
            a.calls.push_back(call);
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
                revoked.push(t);
            }
            self.tell_head(NodeToHead::Blocked { task });
        }
        if let Some(tx) = self.workers.get(&id).and_then(|w| w.tx.as_ref()) {
            let _ = tx.send(NodeToWorker::Revoked { tasks: revoked });
        }
    }

    fn is_blocked(&self, task: TaskId) -> bool {
        self.workers
            .values()
            .any(|w| w.running.as_ref().is_some_and(|r| r.task == task && r.lent))
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
        let (Some(tx), client, gpus) = (w.tx.clone(), w.client, w.gpus.clone()) else {
            return;
        };
        let id = worker.expect("found above");
        let mut t = task;
        while let Some((next, a)) = self.successors.next_after(t) {
            if !self.prefetched.contains_key(&next) {
                if a.client != client {
                    return;
                }
                let wt = self.worker_task(a.spec.clone(), client, &gpus);
                if tx.send(NodeToWorker::Run(wt)).is_err() {
                    return;
                }
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
            node_ip: self.cfg.ip.clone(),
            gpu_ids: gpus.iter().map(|i| self.cfg.gpu_ids[*i].clone()).collect(),
        }
    }

    /// Keeps the number of worker processes bounded by retiring the longest-idle one.
    fn make_room(&mut self) {
        if self.workers.len() < self.max_workers {
            return;
        }
        if let Some((_, w)) = self
            .workers
            .iter()
            .filter(|(_, w)| w.running.is_none() && w.tx.is_some() && w.actor.is_none())
            .min_by_key(|(_, w)| w.idle_since)
        {
            kill(w.pid);
        }
    }

    fn spawn_worker(
        &mut self,
        client: ClientId,
        path: &PathBuf,
        (registry, kind): &(String, ProgramKind),
        gpus: Vec<usize>,
        task: Option<(Assignment, Running)>,
    ) {
        let id = self.next_worker;
        self.next_worker += 1;
        let visible: Vec<String> = gpus.iter().map(|i| self.cfg.gpu_ids[*i].clone()).collect();
        let mut cmd = tokio::process::Command::new(path);
        if let ProgramKind::Python { sys_path, cwd } = kind {
            // The driver's interpreter with its module path; unbuffered, so that each
            // line a task prints reaches the driver when it is printed.
            cmd.args(["-u", "-c", "from sunray._worker import main; main()"])
                .env(
                    "PYTHONPATH",
                    std::env::join_paths(sys_path).unwrap_or_default(),
                )
                .env("PYTHONUNBUFFERED", "1");
            if std::path::Path::new(cwd).is_dir() {
                cmd.current_dir(cwd);
            }
        }
        cmd.env(env::WORKER_SOCKET, self.cfg.session.worker_socket())
            .env(env::WORKER_ID, id.to_string())
            .env(env::WORKER_TOKEN, &self.cfg.token)
            .env(env::WORKER_REGISTRY, registry)
            .env(env::WORKER_HEAD, &self.cfg.head_address)
            .env(env::WORKER_STORE, &self.store_addr)
            .env("CUDA_VISIBLE_DEVICES", visible.join(","))
            .env_remove(env::ADDRESS)
            .env_remove(env::TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Workers die with their node agent, even when it is killed with SIGKILL.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let (pending, running) = task.unzip();
        let mut w = Worker {
            client,
            log_client: Arc::new(AtomicU32::new(client)),
            adopt: None,
            gpus,
            pid: None,
            tx: None,
            running,
            pending,
            idle_since: 0,
            actor: None,
            last_task: None,
        };
        match cmd.spawn() {
            Ok(mut child) => {
                let pid = child.id();
                w.pid = pid;
                let origin = format!("pid={}, ip={}", pid.unwrap_or(0), self.cfg.ip);
                for out in [
                    child
                        .stdout
                        .take()
                        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
                    child
                        .stderr
                        .take()
                        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
                ]
                .into_iter()
                .flatten()
                {
                    let events = self.events.clone();
                    let origin = origin.clone();
                    let client = w.log_client.clone();
                    tokio::spawn(async move {
                        let mut lines = BufReader::new(out).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            let out = Output {
                                worker: id,
                                client: client.load(Ordering::Relaxed),
                                origin: origin.clone(),
                                line,
                            };
                            if events.send(Ev::Output(out)).is_err() {
                                break;
                            }
                        }
                    });
                }
                let events = self.events.clone();
                tokio::spawn(async move {
                    let status = match child.wait().await {
                        Ok(s) => describe_exit(s),
                        Err(e) => format!("wait failed: {e}"),
                    };
                    let _ = events.send(Ev::WorkerExited(id, status));
                });
                self.workers.insert(id, w);
            }
            Err(e) => {
                let Some(r) = w.running.take() else {
                    warn!(
                        "cannot start a Python worker ahead ({}): {e}",
                        path.display()
                    );
                    return;
                };
                self.task_ended(r.task, Some(r.alloc));
                self.done.push((
                    r.task,
                    Err(TaskError {
                        kind: ErrorKind::WorkerStartFailed,
                        function: r.function,
                        location: Some(self.location()),
                        message: format!("cannot start worker {}: {e}", path.display()),
                    }),
                ));
            }
        }
    }

    /// Starts prestarted workers until there are as many as CPUs (none is adopted yet).
    fn top_up_prestarted(&mut self) {
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
            .filter(|(_, w)| w.client == UNADOPTED && w.running.is_none())
            .max_by_key(|(_, w)| w.tx.is_some())
            .map(|(id, _)| *id)
    }

    /// Gives prestarted worker `id` to `client` and runs `a` on it.
    fn adopt(&mut self, id: u64, client: ClientId, a: Assignment, running: Running) {
        let Some(ProgramKind::Python { sys_path, cwd }) =
            self.jobs.get(&client).map(|j| j.binary.kind.clone())
        else {
            return;
        };
        let adopt = NodeToWorker::Adopt { sys_path, cwd };
        let task = running.task;
        let wt = self.worker_task(a.spec.clone(), client, &[]);
        let w = self.workers.get_mut(&id).expect("an adoptable worker");
        w.client = client;
        w.log_client.store(client, Ordering::Relaxed);
        w.running = Some(running);
        match w.tx.clone() {
            Some(tx) => {
                let _ = tx.send(adopt);
                let _ = tx.send(NodeToWorker::Run(wt));
                self.prefetch_after(task);
            }
            None => {
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
        let _ = self.to_head.send(msg);
    }

    fn flush(&mut self) {
        if !self.done.is_empty() {
            let _ = self
                .to_head
                .send(NodeToHead::Done(std::mem::take(&mut self.done)));
        }
    }

    fn kill_all(&mut self) {
        for w in self.workers.values() {
            kill(w.pid);
        }
        self.store_server.abort();
        crate::objects::forget_local(&self.store_addr);
        self.cfg.session.remove();
    }
}

fn kill(pid: Option<u32>) {
    if let Some(pid) = pid {
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (_, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".into(),
    }
}

/// Finds the driver's executable on this host, or fetches it from the head by hash.
async fn locate_binary(
    b: &BinaryInfo,
    head: &str,
    token: &str,
    bin_dir: PathBuf,
) -> Result<PathBuf, String> {
    sunray_proto::limits::check_binary(b)?;
    let local = PathBuf::from(&b.path);
    if matches!(b.kind, ProgramKind::Python { .. }) {
        return match std::fs::metadata(&local) {
            Ok(m) if m.is_file() => Ok(local),
            _ => Err(format!(
                "the driver's Python interpreter {} does not exist on this host: install the same Python environment at the same path on every node (a shared file system or the same venv path)",
                b.path
            )),
        };
    }
    let cached = bin_dir.join(&b.hash);
    let (l2, c2, want) = (local.clone(), cached.clone(), b.hash.clone());
    let found = tokio::task::spawn_blocking(move || {
        for p in [l2, c2] {
            if let Ok((h, _)) = detect::hash_file(&p) {
                if h == want {
                    return Some(p);
                }
            }
        }
        None
    })
    .await
    .unwrap_or(None);
    if let Some(p) = found {
        return Ok(p);
    }
    info!(
        "fetching executable {} ({} bytes) from the head",
        b.hash, b.size
    );
    let (mut io, _) = wire::connect(
        head,
        None,
        token,
        Role::FetchBinary {
            hash: b.hash.clone(),
        },
    )
    .await
    .map_err(|e| format!("cannot fetch the driver's executable from the head: {e}"))?;
    // The size is the head's word: a hint, never an allocation taken on trust.
    let mut data = Vec::with_capacity(b.size.min(64 << 20) as usize);
    loop {
        let frame = io
            .next()
            .await
            .ok_or("head closed the connection while sending the executable")?
            .map_err(|e| format!("fetching the executable: {e}"))?;
        match sunray_proto::decode(&frame).map_err(|e| format!("fetching the executable: {e}"))? {
            BinaryChunk::Data(piece) => data.extend_from_slice(&piece),
            BinaryChunk::End => break,
            BinaryChunk::Missing(why) => return Err(why),
        }
    }
    if detect::hash_bytes(&data) != b.hash {
        return Err("the executable fetched from the head does not match its hash".into());
    }
    std::fs::create_dir_all(&bin_dir)
        .map_err(|e| format!("cannot create {}: {e}", bin_dir.display()))?;
    let tmp = bin_dir.join(format!("{}.tmp", b.hash));
    std::fs::write(&tmp, &data)
        .and_then(|_| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)))
        .and_then(|_| std::fs::rename(&tmp, &cached))
        .map_err(|e| format!("cannot store the executable in {}: {e}", bin_dir.display()))?;
    Ok(cached)
}
