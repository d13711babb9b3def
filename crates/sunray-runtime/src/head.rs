//! The head: cluster state (nodes, drivers, tasks, objects) in one actor task; connection
//! tasks only decode frames into [`Event`]s and encode what the actor sends back.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sunray_proto::{
    limits, object_owner, ActorId, ActorState, Arg, Assignment, BinaryChunk, BinaryInfo, ClientId,
    ClusterView, DriverToHead, ErrorKind, FunctionTasks, GroupId, GroupState, GroupView,
    HeadToDriver, HeadToNode, HelloReply, Location, NodeId, NodeRegistration, NodeToHead, NodeView,
    ObjectId, PlacementStrategy, Query, Reply, Resources, Role, TaskError, TaskId, TaskKind,
    TaskSpec, Value,
};
use sunray_sched::{Pipelining, ResourceSet, Scheduler, Strategy};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use crate::detect;
use crate::wire::{self, FramedIo};

pub fn to_request(r: &Resources) -> ResourceSet {
    let mut s = ResourceSet::new(r.cpu, r.gpu, r.memory);
    for (n, a) in &r.custom {
        s = s.with_custom(n, *a);
    }
    s
}

pub fn from_set(s: &ResourceSet) -> Resources {
    Resources {
        cpu: s.cpu_f64(),
        gpu: s.gpu_f64(),
        memory: s.memory_f64(),
        custom: s.custom_f64().map(|(n, a)| (n.to_string(), a)).collect(),
    }
}

/// What connection tasks (and an embedded cluster) send the head: the shell's input.
/// The shell keeps the channels these carry and hands the core an [`Input`] without them.
pub enum Event {
    DriverJoined {
        client: ClientId,
        binary: BinaryInfo,
        tx: mpsc::UnboundedSender<HeadToDriver>,
        /// The address the driver connects from; None for a driver on the head's host
        /// (in its process, or on its local socket).
        ip: Option<String>,
        /// For a worker's connection (tasks submitted from a task): its job's driver.
        job: Option<ClientId>,
    },
    FromDriver(ClientId, DriverToHead),
    DriverLeft(ClientId),
    NodeJoined {
        node: NodeId,
        reg: NodeRegistration,
        tx: mpsc::UnboundedSender<HeadToNode>,
        is_head: bool,
    },
    FromNode(NodeId, NodeToHead),
    NodeLeft(NodeId, String),
    Query(Query, oneshot::Sender<ClusterView>),
    Tick,
    /// Ends the head actor (an embedded cluster being shut down).
    Stop,
}

/// A query waiting for its answer; the shell keeps its reply channel.
type Ticket = u64;

/// The head core's input: an [`Event`] with the channels taken out.
enum Input {
    DriverJoined {
        client: ClientId,
        binary: BinaryInfo,
        ip: Option<String>,
        job: Option<ClientId>,
    },
    FromDriver(ClientId, DriverToHead),
    DriverLeft(ClientId),
    NodeJoined {
        node: NodeId,
        reg: NodeRegistration,
        is_head: bool,
    },
    FromNode(NodeId, NodeToHead),
    NodeLeft(NodeId, String),
    Query(Query, Ticket),
    /// A second passed; the queries whose askers went away meanwhile.
    Tick {
        gone: Vec<Ticket>,
    },
}

/// What the head core asks its shell to do: the core never touches a channel, a socket
/// or the allocator, so a test reads its effects instead of running processes.
#[derive(Debug)]
enum Effect {
    ToDriver(ClientId, HeadToDriver),
    ToNode(NodeId, HeadToNode),
    Answer(Ticket, ClusterView),
    /// The core has forgotten this peer: its connection's channel is dropped.
    ForgetDriver(ClientId),
    ForgetNode(NodeId),
    /// Maps shrank after a burst: give freed memory back to the system.
    ReleaseMemory,
}

/// What connection tasks and embedded users share with the head.
pub struct HeadShared {
    pub token: String,
    pub events: mpsc::UnboundedSender<Event>,
    next_id: AtomicU32,
    /// Executables uploaded by drivers, by hash.
    pub bin_dir: PathBuf,
    /// Signalled when someone asks the cluster to shut down.
    pub shutdown: Notify,
    /// One permit per TCP connection in its handshake (see [`MAX_HANDSHAKES`]).
    handshakes: Arc<Semaphore>,
    /// The same for the local socket, apart: remote peers cannot crowd out local ones.
    local_handshakes: Arc<Semaphore>,
    refused_handshakes: std::sync::atomic::AtomicU64,
    /// Refused handshakes so far: the log names the first ones, then every hundredth
    /// (anyone who can connect could fill the session's log otherwise).
    refusals: std::sync::atomic::AtomicU64,
}

impl HeadShared {
    pub fn next_id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A handshake slot for a new connection, or None (the connection is closed): too
    /// many peers are in their handshake. Logged once per 100 refusals.
    fn handshake_permit(&self, peer: &str, local: bool) -> Option<OwnedSemaphorePermit> {
        let pool = if local {
            &self.local_handshakes
        } else {
            &self.handshakes
        };
        let permit = pool.clone().try_acquire_owned().ok();
        if permit.is_none() {
            let n = self.refused_handshakes.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(100) {
                warn!(
                    "closed a connection from {peer}: {MAX_HANDSHAKES} others are in their handshake ({} closed so far)",
                    n + 1
                );
            }
        }
        permit
    }

    fn log_refusal(&self, peer: &str, reason: &str) {
        let n = self.refusals.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= 20 || n.is_multiple_of(100) {
            warn!("refused connection from {peer}: {reason} ({n} refused so far)");
        }
    }
}

/// Starts the head actor; returns the handle connections use.
pub fn start(token: String, bin_dir: PathBuf) -> Arc<HeadShared> {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(HeadShared {
        token,
        events: tx.clone(),
        next_id: AtomicU32::new(1),
        bin_dir,
        shutdown: Notify::new(),
        handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
        local_handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
        refused_handshakes: Default::default(),
        refusals: Default::default(),
    });
    tokio::spawn(run_actor(rx));
    let ticker = tx;
    tokio::spawn(async move {
        let mut iv = tokio::time::interval(Duration::from_secs(1));
        loop {
            iv.tick().await;
            if ticker.send(Event::Tick).is_err() {
                break;
            }
        }
    });
    shared
}

/// Short tasks are pipelined to nodes: each slot holds about this much queued work.
pub const PIPELINING: Pipelining = Pipelining {
    max_depth: 16,
    window_us: 1_000,
};

async fn run_actor(mut rx: mpsc::UnboundedReceiver<Event>) {
    let mut head = Shell::new(HeadState {
        sched: Scheduler::with_pipelining(PIPELINING),
        heartbeat_timeout: HeartbeatTimeout(crate::heartbeat_timeout()),
        ..HeadState::default()
    });
    // The clock is read here, once per batch: the state machine is given the time.
    let started = Instant::now();
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        head.advance(started.elapsed());
        for ev in batch.drain(..) {
            if matches!(ev, Event::Stop) {
                return;
            }
            head.handle(ev);
        }
        head.dispatch();
        head.flush();
    }
}

/// The head's thin shell: keeps each peer's channel and each waiting query's reply
/// channel, turns [`Event`]s into the core's [`Input`]s and carries out its
/// [`Effect`]s. Derefs to the core (tests read its state through it).
#[derive(Default)]
struct Shell {
    core: HeadState,
    drivers: HashMap<ClientId, mpsc::UnboundedSender<HeadToDriver>>,
    nodes: HashMap<NodeId, mpsc::UnboundedSender<HeadToNode>>,
    queries: HashMap<Ticket, oneshot::Sender<ClusterView>>,
    next_ticket: Ticket,
}

impl std::ops::Deref for Shell {
    type Target = HeadState;
    fn deref(&self) -> &HeadState {
        &self.core
    }
}

impl std::ops::DerefMut for Shell {
    fn deref_mut(&mut self) -> &mut HeadState {
        &mut self.core
    }
}

impl Shell {
    fn new(core: HeadState) -> Self {
        Shell {
            core,
            ..Shell::default()
        }
    }

    fn handle(&mut self, ev: Event) {
        let input = match ev {
            Event::DriverJoined {
                client,
                binary,
                tx,
                ip,
                job,
            } => {
                self.drivers.insert(client, tx);
                Input::DriverJoined {
                    client,
                    binary,
                    ip,
                    job,
                }
            }
            Event::FromDriver(c, m) => Input::FromDriver(c, m),
            Event::DriverLeft(c) => Input::DriverLeft(c),
            Event::NodeJoined {
                node,
                reg,
                tx,
                is_head,
            } => {
                self.nodes.insert(node, tx);
                Input::NodeJoined { node, reg, is_head }
            }
            Event::FromNode(n, m) => Input::FromNode(n, m),
            Event::NodeLeft(n, why) => Input::NodeLeft(n, why),
            Event::Query(q, reply) => {
                self.next_ticket += 1;
                self.queries.insert(self.next_ticket, reply);
                Input::Query(q, self.next_ticket)
            }
            Event::Tick => {
                let gone: Vec<Ticket> = self
                    .queries
                    .iter()
                    .filter(|(_, tx)| tx.is_closed())
                    .map(|(t, _)| *t)
                    .collect();
                for t in &gone {
                    self.queries.remove(t);
                }
                Input::Tick { gone }
            }
            Event::Stop => return,
        };
        self.core.handle(input);
        self.carry_out();
    }

    fn dispatch(&mut self) {
        self.core.dispatch();
        self.carry_out();
    }

    fn flush(&mut self) {
        self.core.flush();
        self.carry_out();
    }

    /// Sends what the core asked to send; a peer that is gone is skipped (its
    /// connection's end reaches the core as an event of its own).
    fn carry_out(&mut self) {
        for effect in self.core.out.drain(..) {
            match effect {
                Effect::ToDriver(c, m) => {
                    if let Some(tx) = self.drivers.get(&c) {
                        let _ = tx.send(m);
                    }
                }
                Effect::ToNode(n, m) => {
                    if let Some(tx) = self.nodes.get(&n) {
                        let _ = tx.send(m);
                    }
                }
                Effect::Answer(t, view) => {
                    if let Some(tx) = self.queries.remove(&t) {
                        let _ = tx.send(view);
                    }
                }
                Effect::ForgetDriver(c) => {
                    self.drivers.remove(&c);
                }
                Effect::ForgetNode(n) => {
                    self.nodes.remove(&n);
                }
                Effect::ReleaseMemory => crate::release_free_memory(),
            }
        }
    }
}

/// Most connections that may be in their handshake at once: beyond this, new ones are
/// closed at once, so that peers without the token cannot hold the head's memory or
/// file descriptors (each handshake also ends within `wire::HELLO_TIMEOUT`).
pub const MAX_HANDSHAKES: usize = 64;

/// Accepts TCP connections forever.
pub async fn serve(listener: TcpListener, shared: Arc<HeadShared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some(permit) = shared.handshake_permit(&peer.to_string(), false) else {
                    continue;
                };
                stream.set_nodelay(true).ok();
                let shared = shared.clone();
                tokio::spawn(async move {
                    handle_conn(stream, peer.to_string(), Some(peer.ip()), shared, permit).await;
                });
            }
            Err(e) => {
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts connections on the session directory's Unix socket forever: drivers on the
/// head's host use it (no TCP stack on either side: about 20 µs less per round trip).
/// The same handshake and token apply.
pub async fn serve_unix(listener: UnixListener, shared: Arc<HeadShared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let Some(permit) = shared.handshake_permit("the local socket", true) else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    handle_conn(stream, "local socket".into(), None, shared, permit).await;
                });
            }
            Err(e) => {
                warn!("accept failed on the local socket: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(io: &mut FramedIo<S>, reason: String) {
    let _ = io
        .send(sunray_proto::encode(&HelloReply::Refused { reason }))
        .await;
}

/// Why a peer's role is refused before it joins, if it is.
fn check_role(role: &Role) -> Result<(), String> {
    match role {
        Role::Driver {
            binary, hostname, ..
        } => {
            limits::check_binary(binary)?;
            if hostname.len() > limits::MAX_NAME {
                return Err("the driver's hostname is too long".into());
            }
            Ok(())
        }
        Role::Node(reg) => limits::check_registration(reg),
        Role::Query => Ok(()),
        Role::Objects | Role::Calls => Err(
            "this is the head: objects are read from, and actors called directly at, the object server of a node"
                .into(),
        ),
        Role::FetchBinary { hash } => {
            if limits::is_binary_hash(hash) {
                Ok(())
            } else {
                Err("an executable is fetched by its hash: 32 hex digits".into())
            }
        }
    }
}

/// Serves one connection; `peer_ip` is None for the local socket (a driver there is on
/// the head's host, whose node is its home). `permit` is held until the handshake ends.
async fn handle_conn<S>(
    stream: S,
    peer: String,
    peer_ip: Option<IpAddr>,
    shared: Arc<HeadShared>,
    permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut io = wire::framed(stream);
    let hello = match wire::accept_hello(&mut io, &shared.token).await {
        Ok(h) => h,
        Err(e) => {
            shared.log_refusal(&peer, &e);
            refuse(&mut io, e).await;
            return;
        }
    };
    drop(permit);
    if let Err(reason) = check_role(&hello.role) {
        shared.log_refusal(&peer, &reason);
        refuse(&mut io, reason).await;
        return;
    }
    match hello.role {
        Role::Driver {
            binary,
            hostname,
            pid,
            job,
        } => {
            let client = shared.next_id();
            // Interpreters are never uploaded: nodes need the driver's whole environment.
            // Nor is a worker's executable: its tasks run its job's.
            let upload = binary.kind == sunray_proto::ProgramKind::Native
                && job.is_none()
                && !head_has_binary(&shared, &binary).await;
            match job {
                None => info!("driver {client} joined from {peer} ({hostname} pid {pid})"),
                Some(j) => {
                    debug!("a worker of driver {j} connected as {client} ({hostname} pid {pid})")
                }
            }
            let reply = HelloReply::Welcome {
                client_id: client,
                node_id: None,
                upload_binary: upload,
            };
            if io.send(sunray_proto::encode(&reply)).await.is_err() {
                return;
            }
            let (sink, stream) = io.split();
            let (tx, rx) = mpsc::unbounded_channel();
            let last_word = tx.clone();
            let _ = shared.events.send(Event::DriverJoined {
                client,
                binary,
                tx,
                ip: peer_ip.map(|ip| ip.to_string()),
                job,
            });
            tokio::spawn(wire::pump_out(sink, rx));
            let events = shared.events.clone();
            let mut upload = Upload::new(shared.bin_dir.clone(), client);
            let mut violation = None;
            let why = wire::pump_in(stream, |msg: DriverToHead| {
                if let Err(e) = limits::check_driver_message(client, &msg) {
                    violation = Some(e);
                    return false;
                }
                if let DriverToHead::UploadBinary { hash, data, last } = msg {
                    if let Err(e) = upload.piece(&hash, &data, last) {
                        warn!("driver {client}'s executable upload failed: {e}");
                    }
                    return true;
                }
                events.send(Event::FromDriver(client, msg)).is_ok()
            })
            .await;
            let dropped = violation.or_else(|| {
                why.contains("frame size too big").then(|| {
                    format!(
                        "it sent a message larger than the head's limit of {} MiB ({})",
                        wire::max_message_bytes() >> 20,
                        crate::env::MAX_MESSAGE_MB
                    )
                })
            });
            match dropped {
                Some(v) => {
                    warn!("dropped driver {client} ({peer}): {v}");
                    let _ = last_word.send(HeadToDriver::Warning(format!(
                        "the head dropped this driver: {v}"
                    )));
                }
                None => debug!("driver {client} left: {why}"),
            }
            drop(last_word);
            let _ = shared.events.send(Event::DriverLeft(client));
        }
        Role::Node(reg) => {
            let node = shared.next_id();
            info!(
                "node {node} joined from {peer} ({} {}, {} CPUs, {} GPUs)",
                reg.hostname, reg.ip, reg.resources.cpu, reg.resources.gpu
            );
            let reply = HelloReply::Welcome {
                client_id: 0,
                node_id: Some(node),
                upload_binary: false,
            };
            if io.send(sunray_proto::encode(&reply)).await.is_err() {
                return;
            }
            let (sink, stream) = io.split();
            let (tx, rx) = mpsc::unbounded_channel();
            let _ = shared.events.send(Event::NodeJoined {
                node,
                reg,
                tx,
                is_head: false,
            });
            tokio::spawn(wire::pump_out(sink, rx));
            let events = shared.events.clone();
            let why = wire::pump_in(stream, |msg: NodeToHead| {
                events.send(Event::FromNode(node, msg)).is_ok()
            })
            .await;
            let _ = shared.events.send(Event::NodeLeft(node, why));
        }
        Role::Query => {
            let reply = HelloReply::Welcome {
                client_id: 0,
                node_id: None,
                upload_binary: false,
            };
            if io.send(sunray_proto::encode(&reply)).await.is_err() {
                return;
            }
            while let Some(Ok(frame)) = io.next().await {
                let Ok(msg) = sunray_proto::decode::<DriverToHead>(&frame) else {
                    warn!("malformed query from {peer}");
                    return;
                };
                let DriverToHead::Query(q) = msg else {
                    continue;
                };
                let shutdown = matches!(q, Query::Shutdown);
                let (otx, orx) = oneshot::channel();
                let _ = shared.events.send(Event::Query(q, otx));
                let Ok(view) = orx.await else { return };
                let _ = io
                    .send(sunray_proto::encode(&HeadToDriver::QueryReply(view)))
                    .await;
                if shutdown {
                    shared.shutdown.notify_waiters();
                    shared.shutdown.notify_one();
                }
            }
        }
        Role::Objects | Role::Calls => {} // refused by check_role
        Role::FetchBinary { hash } => {
            let reply = HelloReply::Welcome {
                client_id: 0,
                node_id: None,
                upload_binary: false,
            };
            if io.send(sunray_proto::encode(&reply)).await.is_ok() {
                send_binary(&mut io, &shared.bin_dir.join(&hash), &hash).await;
            }
        }
    }
}

/// Sends an executable in pieces of `BINARY_CHUNK_BYTES`, then `End` (or `Missing`);
/// the file is read off the runtime's thread.
async fn send_binary<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut FramedIo<S>,
    path: &std::path::Path,
    hash: &str,
) {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => Some(f),
        Err(e) => {
            let why = format!("the head has no executable with hash {hash}: {e}");
            let _ = io
                .send(sunray_proto::encode(&BinaryChunk::Missing(why)))
                .await;
            return;
        }
    };
    while let Some(mut f) = file.take() {
        let read = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut buf = Vec::with_capacity(sunray_proto::BINARY_CHUNK_BYTES);
            let r = (&mut f)
                .take(sunray_proto::BINARY_CHUNK_BYTES as u64)
                .read_to_end(&mut buf);
            (f, r.map(|_| buf))
        })
        .await;
        let piece = match read {
            Ok((f, Ok(buf))) => {
                file = Some(f);
                if buf.is_empty() {
                    BinaryChunk::End
                } else {
                    BinaryChunk::Data(Bytes::from(buf))
                }
            }
            Ok((_, Err(e))) => {
                BinaryChunk::Missing(format!("the head cannot read executable {hash}: {e}"))
            }
            Err(e) => BinaryChunk::Missing(format!("reading executable {hash}: {e}")),
        };
        let more = matches!(piece, BinaryChunk::Data(_));
        if io.send(sunray_proto::encode(&piece)).await.is_err() || !more {
            return;
        }
    }
}

/// A driver's executable arriving in pieces: written to a temporary file as they come,
/// hashed on the way, and put in place under its hash only when the hash matches.
struct Upload {
    dir: PathBuf,
    /// Names this upload's temporary file: two drivers uploading the same executable
    /// never write one file.
    client: ClientId,
    current: Option<(String, std::fs::File, xxhash_rust::xxh3::Xxh3)>,
}

impl Upload {
    fn new(dir: PathBuf, client: ClientId) -> Upload {
        Upload {
            dir,
            client,
            current: None,
        }
    }

    fn piece(&mut self, hash: &str, data: &[u8], last: bool) -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.dir.join(format!("{hash}.upload-{}", self.client));
        if self.current.as_ref().is_none_or(|(h, _, _)| h != hash) {
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o755)
                .open(&tmp)
                .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
            self.current = Some((hash.to_string(), f, xxhash_rust::xxh3::Xxh3::new()));
        }
        let (_, file, hasher) = self.current.as_mut().expect("set above");
        hasher.update(data);
        if let Err(e) = file.write_all(data) {
            self.current = None;
            std::fs::remove_file(&tmp).ok();
            return Err(format!("cannot write {}: {e}", tmp.display()));
        }
        if !last {
            return Ok(());
        }
        let (_, _, hasher) = self.current.take().expect("set above");
        if format!("{:032x}", hasher.digest128()) != hash {
            std::fs::remove_file(&tmp).ok();
            return Err(format!(
                "the uploaded executable does not match its hash {hash}"
            ));
        }
        std::fs::rename(&tmp, self.dir.join(hash))
            .map_err(|e| format!("cannot store the uploaded executable: {e}"))
    }
}

/// Can the head serve this executable to nodes? (Copies it into its cache when it can
/// read the driver's path itself.)
async fn head_has_binary(shared: &HeadShared, binary: &BinaryInfo) -> bool {
    let cached = shared.bin_dir.join(&binary.hash);
    if cached.exists() {
        return true;
    }
    let binary = binary.clone();
    let dir = shared.bin_dir.clone();
    tokio::task::spawn_blocking(move || {
        let p = std::path::Path::new(&binary.path);
        match detect::hash_file(p) {
            Ok((h, _)) if h == binary.hash => {
                std::fs::create_dir_all(&dir).ok();
                let tmp = dir.join(format!("{}.tmp", binary.hash));
                std::fs::copy(p, &tmp).is_ok()
                    && std::fs::rename(&tmp, dir.join(&binary.hash)).is_ok()
            }
            _ => false,
        }
    })
    .await
    .unwrap_or(false)
}

struct DriverConn {
    ip: Option<String>,
    /// The node on the driver's host, where its tasks go first.
    home: Option<NodeId>,
    binary: BinaryInfo,
    /// The driver whose workers run its tasks: itself, or for a worker's connection
    /// the driver of that worker's job.
    job: ClientId,
    /// Results waiting to be sent in this round.
    done: Vec<(ObjectId, Reply)>,
    /// Resource shapes this driver asked for whose feasibility was checked.
    checked_requests: HashSet<ResourceSet>,
}

struct NodeConn {
    reg: NodeRegistration,
    /// When it was last heard from (time since the head started).
    last_seen: Duration,
    is_head: bool,
    jobs: HashSet<ClientId>,
    /// Assignments waiting to be sent in this round.
    run: Vec<Assignment>,
    /// Where its object server listens (it takes direct actor calls there too), and
    /// its Unix socket for direct calls from its host.
    objects: Option<(String, String)>,
}

/// A task the head knows (queued, waiting for arguments, or running). Kept small: a
/// driver may have a window of tasks in flight (see `driver::MAX_IN_FLIGHT`).
struct TaskEntry {
    spec: TaskSpec,
    owner: ClientId,
    deps_left: u32,
    retries_left: u32,
}

impl TaskEntry {
    /// What the scheduler places (computed again on a retry, never stored twice).
    fn request(&self) -> ResourceSet {
        to_request(&self.spec.resources)
    }
}

/// An object the head knows: 40 bytes, as every result stays known until its driver
/// releases it (errors and locations, rarer, are boxed). Small values live here; large
/// ones in the object store of the node that made them (`objects.rs`).
enum ObjState {
    Pending,
    Ready(Bytes),
    Stored(Box<Location>),
    Failed(Box<TaskError>),
}

#[derive(Default)]
struct HeadState {
    sched: Scheduler,
    drivers: HashMap<ClientId, DriverConn>,
    nodes: HashMap<NodeId, NodeConn>,
    dead_nodes: VecDeque<NodeView>,
    tasks: HashMap<TaskId, TaskEntry>,
    objects: HashMap<ObjectId, ObjState>,
    /// Tasks waiting for a pending object.
    waiters: HashMap<ObjectId, Vec<TaskId>>,
    /// Objects their driver released already: pending ones are dropped once they are
    /// ready, stored ones once no task that takes them is left (`pins`).
    released: HashSet<ObjectId>,
    /// Stored objects named by tasks not ended yet (once per argument): their node
    /// keeps them until those tasks end, even if their driver released them.
    pins: HashMap<ObjectId, u32>,
    /// How to make each stored task result again if its node dies (Ray's lineage): the
    /// task's owner and spec, its stored arguments named by id again.
    lineage: HashMap<ObjectId, (ClientId, TaskSpec)>,
    /// `WaitForNodes` queries: how many nodes each waits for.
    node_waiters: Vec<(u32, Ticket)>,
    /// Tasks ended per function name (one entry per function a driver ever ran).
    finished: HashMap<String, u64>,
    actors: crate::actors::Actors,
    /// Clients other than an object's owner waiting for its outcome (`Subscribe`).
    subscribers: HashMap<ObjectId, Vec<ClientId>>,
    /// Placement groups (the removed ones too, the last hundred).
    groups: BTreeMap<GroupId, GroupEntry>,
    /// The last lines workers printed, per node and per task.
    logs: crate::logs::LogTails,
    /// The time, as the shell last gave it (since the head started).
    now: Duration,
    /// A node silent for longer is declared dead.
    heartbeat_timeout: HeartbeatTimeout,
    /// Effects of the inputs handled since the shell last took them.
    out: Vec<Effect>,
}

/// The stored objects a lineage spec takes (named by id again, see `complete`).
fn lineage_args(spec: &TaskSpec) -> Vec<ObjectId> {
    spec.args
        .iter()
        .filter_map(|a| match a {
            Arg::Ref(id) => Some(*id),
            _ => None,
        })
        .collect()
}

/// How long a node may stay silent (default [`crate::DEFAULT_HEARTBEAT_TIMEOUT`]).
#[derive(Clone, Copy)]
struct HeartbeatTimeout(Duration);

impl Default for HeartbeatTimeout {
    fn default() -> Self {
        HeartbeatTimeout(crate::DEFAULT_HEARTBEAT_TIMEOUT)
    }
}

struct GroupEntry {
    owner: ClientId,
    view: GroupView,
    /// What its ready object holds once placed (the creator's encoding of "ready").
    ready: Bytes,
}

impl HeadState {
    /// The time now (since the head started): the head never reads a clock itself.
    fn advance(&mut self, now: Duration) {
        self.now = self.now.max(now);
        self.sched.advance(self.now.as_micros() as u64);
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::DriverJoined {
                client,
                binary,
                ip,
                job,
            } => {
                let home = self.home_node(ip.as_deref());
                // A worker's connection works for its job's driver (whose workers run
                // what it submits), while that driver is connected.
                let (job, binary) = match (job, job.and_then(|j| self.drivers.get(&j))) {
                    (Some(_), Some(root)) => (root.job, root.binary.clone()),
                    (None, _) => (client, binary),
                    (Some(j), None) => {
                        // The job ended: its workers are gone, and a connection for it
                        // (its credential) must not become a driver of its own, which
                        // could run an executable of its choosing on every node.
                        let why = format!("job {j} has ended: a connection for it is refused");
                        self.out
                            .push(Effect::ToDriver(client, HeadToDriver::Warning(why)));
                        self.out.push(Effect::ForgetDriver(client));
                        return;
                    }
                };
                self.drivers.insert(
                    client,
                    DriverConn {
                        ip,
                        home,
                        binary,
                        job,
                        done: Vec::new(),
                        checked_requests: HashSet::new(),
                    },
                );
            }
            Input::FromDriver(client, msg) => self.on_driver_message(client, msg),
            Input::DriverLeft(client) => self.driver_left(client),
            Input::NodeJoined { node, reg, is_head } => {
                self.sched.add_node(node, to_request(&reg.resources));
                self.nodes.insert(
                    node,
                    NodeConn {
                        reg,
                        last_seen: self.now,
                        is_head,
                        jobs: HashSet::new(),
                        run: Vec::new(),
                        objects: None,
                    },
                );
                self.update_homes();
                self.answer_node_waiters();
            }
            Input::FromNode(node, msg) => self.on_node_message(node, msg),
            Input::NodeLeft(node, why) => self.node_left(node, &why),
            Input::Query(q, ticket) => match q {
                Query::Logs { node, task } => {
                    let mut view = self.view();
                    view.log = match (node, task) {
                        (_, Some(t)) => self.logs.task(t),
                        (Some(n), None) => self.logs.node(n),
                        (None, None) => Vec::new(),
                    };
                    self.out.push(Effect::Answer(ticket, view));
                }
                Query::Status | Query::Shutdown => {
                    if matches!(q, Query::Shutdown) {
                        for n in self.nodes.keys() {
                            self.out.push(Effect::ToNode(*n, HeadToNode::Shutdown));
                        }
                    }
                    let view = self.view();
                    self.out.push(Effect::Answer(ticket, view));
                }
                Query::WaitForNodes { nodes } => {
                    self.node_waiters.push((nodes, ticket));
                    self.answer_node_waiters();
                }
            },
            Input::Tick { gone } => {
                self.compact();
                let (now, timeout) = (self.now, self.heartbeat_timeout.0);
                for d in self.drivers.keys() {
                    self.out.push(Effect::ToDriver(*d, HeadToDriver::Heartbeat));
                }
                for (id, _) in self.nodes.iter().filter(|(_, n)| !n.is_head) {
                    self.out.push(Effect::ToNode(*id, HeadToNode::Heartbeat));
                }
                let silent: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter(|(_, n)| !n.is_head && now.saturating_sub(n.last_seen) > timeout)
                    .map(|(id, _)| *id)
                    .collect();
                for n in silent {
                    self.node_left(
                        n,
                        &format!("it has not answered for {} s", timeout.as_secs_f64()),
                    );
                }
                self.node_waiters.retain(|(_, t)| !gone.contains(t));
            }
        }
    }

    /// Gives memory back once a burst of tasks is over: maps keep their largest size
    /// otherwise, and glibc keeps freed memory in its arenas.
    fn compact(&mut self) {
        fn shrink<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, V>) -> bool {
            let big = m.capacity() > 4 * m.len() + 4096;
            if big {
                m.shrink_to_fit();
            }
            big
        }
        let shrunk =
            shrink(&mut self.tasks) | shrink(&mut self.objects) | shrink(&mut self.waiters);
        if shrunk {
            self.out.push(Effect::ReleaseMemory);
        }
    }

    /// The node on the host a driver connects from (the head's own node for a driver in
    /// the head's process or on its local socket).
    fn home_node(&self, ip: Option<&str>) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| match ip {
                None => n.is_head,
                Some(ip) => n.reg.ip == ip,
            })
            .map(|(id, n)| (!n.is_head, *id))
            .min()
            .map(|(_, id)| id)
    }

    /// Nodes joined or left: drivers' home nodes follow.
    fn update_homes(&mut self) {
        let homes: Vec<(ClientId, Option<NodeId>)> = self
            .drivers
            .iter()
            .map(|(c, d)| (*c, self.home_node(d.ip.as_deref())))
            .collect();
        for (c, home) in homes {
            if let Some(d) = self.drivers.get_mut(&c) {
                d.home = home;
            }
        }
    }

    fn answer_node_waiters(&mut self) {
        let alive = self.nodes.len() as u32;
        if self.node_waiters.iter().all(|(n, _)| *n > alive) {
            return;
        }
        let view = self.view();
        let (ready, wait): (Vec<_>, Vec<_>) =
            self.node_waiters.drain(..).partition(|(n, _)| *n <= alive);
        self.node_waiters = wait;
        for (_, ticket) in ready {
            self.out.push(Effect::Answer(ticket, view.clone()));
        }
    }

    fn view(&self) -> ClusterView {
        let mut nodes: Vec<NodeView> = self
            .nodes
            .iter()
            .map(|(id, n)| NodeView {
                id: *id,
                alive: true,
                ip: n.reg.ip.clone(),
                hostname: n.reg.hostname.clone(),
                pid: n.reg.pid,
                total: n.reg.resources.clone(),
                available: self
                    .sched
                    .node_available(*id)
                    .map(from_set)
                    .unwrap_or_default(),
                is_head: n.is_head,
                objects: 0,
                object_bytes: 0,
            })
            .collect();
        nodes.sort_by_key(|n| n.id);
        for o in self.objects.values() {
            if let ObjState::Stored(at) = o {
                if let Some(n) = nodes.iter_mut().find(|n| n.id == at.node) {
                    n.objects += 1;
                    n.object_bytes += at.size;
                }
            }
        }
        nodes.extend(self.dead_nodes.iter().cloned());
        let actors = self.actors.view();
        ClusterView {
            nodes,
            queued_tasks: self.sched.queued_len() as u64,
            // Actors hold their creation task's place in the scheduler: not tasks.
            running_tasks: self.sched.running_len().saturating_sub(
                actors
                    .iter()
                    .filter(|a| {
                        a.state == ActorState::Alive && self.sched.running_on(a.id).is_some()
                    })
                    .count(),
            ) as u64,
            infeasible_tasks: self.sched.infeasible_len() as u64,
            drivers: self.drivers.len() as u32,
            objects: self.objects.len() as u64,
            object_bytes: self
                .objects
                .values()
                .map(|o| match o {
                    ObjState::Ready(b) => b.len() as u64,
                    _ => 0,
                })
                .sum(),
            functions: self.function_counts(),
            actors,
            groups: self.groups.values().map(|g| g.view.clone()).collect(),
            outputs: self.logs.tasks(),
            log: Vec::new(),
        }
    }

    /// Per function: live tasks, running or not, and those ended.
    fn function_counts(&self) -> Vec<FunctionTasks> {
        let mut by: BTreeMap<&str, FunctionTasks> = BTreeMap::new();
        for (id, t) in &self.tasks {
            let f = by.entry(&t.spec.function).or_default();
            if self.sched.running_on(*id).is_some() {
                f.running += 1;
            } else {
                f.waiting += 1;
            }
        }
        for (name, n) in &self.finished {
            by.entry(name).or_default().finished = *n;
        }
        by.into_iter()
            .map(|(name, mut f)| {
                f.function = name.to_string();
                f
            })
            .collect()
    }

    fn on_driver_message(&mut self, client: ClientId, msg: DriverToHead) {
        match msg {
            DriverToHead::Submit(specs) => {
                for spec in specs {
                    self.submit(client, spec);
                }
            }
            DriverToHead::Put { id, data } => {
                if !matches!(self.objects.get(&id), Some(ObjState::Pending)) {
                    self.objects.insert(id, ObjState::Ready(data));
                }
            }
            DriverToHead::PutAt { id, at } => {
                if !self.objects.contains_key(&id) && self.is_object_server_of(at.node, &at.addr) {
                    self.objects.insert(id, ObjState::Stored(Box::new(at)));
                }
            }
            DriverToHead::Release(ids) => {
                for id in ids {
                    match self.objects.get(&id) {
                        Some(ObjState::Pending) => {
                            self.released.insert(id);
                        }
                        Some(ObjState::Stored(_)) if self.pins.contains_key(&id) => {
                            self.released.insert(id);
                        }
                        Some(_) => self.drop_object(id),
                        None => {}
                    }
                }
            }
            DriverToHead::TaskReply { task, data } => {
                let on = self.sched.node_of(task).or_else(|| {
                    let t = self.tasks.get(&task)?;
                    match t.spec.kind {
                        TaskKind::ActorCall { actor } => self.actors.get(actor)?.node,
                        _ => None,
                    }
                });
                if let Some(n) = on.filter(|n| self.nodes.contains_key(n)) {
                    self.out
                        .push(Effect::ToNode(n, HeadToNode::TaskReply { task, data }));
                }
            }
            DriverToHead::UploadBinary { .. } => {}
            DriverToHead::KillActor { actor, no_restart } => self.kill_actor(actor, no_restart),
            m @ DriverToHead::CreateGroup { .. } => self.create_group(client, m),
            DriverToHead::RemoveGroup { id } => {
                self.remove_group(id, "removed by remove_placement_group");
            }
            DriverToHead::Subscribe(ids) => {
                for id in ids {
                    let outcome = match self.objects.get(&id) {
                        // Its owner hears of it when it is ready anyway (a driver asks
                        // again for its own object when its node is gone).
                        Some(ObjState::Pending) if object_owner(id) == client => continue,
                        Some(ObjState::Pending) => {
                            let subs = self.subscribers.entry(id).or_default();
                            if !subs.contains(&client) {
                                subs.push(client);
                            }
                            continue;
                        }
                        Some(ObjState::Ready(v)) => Ok(Value::Inline(v.clone())),
                        Some(ObjState::Stored(at)) => Ok(Value::Stored((**at).clone())),
                        Some(ObjState::Failed(e)) => Err((**e).clone()),
                        None => Err(TaskError {
                            kind: ErrorKind::ObjectLost,
                            function: String::new(),
                            location: None,
                            message: match self.drivers.contains_key(&object_owner(id)) {
                                true => format!(
                                    "object {id:#x} does not exist (released by its owner, or never created)"
                                ),
                                false => format!(
                                    "object {id:#x} is gone with its owner (client {}), which left the cluster: an object lives as long as the driver or task worker that made it (a task's put dies with its worker, or its node)",
                                    object_owner(id)
                                ),
                            },
                        }),
                    };
                    if let Some(d) = self.drivers.get_mut(&client) {
                        d.done.push((id, outcome));
                    }
                }
            }
            DriverToHead::Query(_) => {
                if self.drivers.contains_key(&client) {
                    let view = self.view();
                    self.tell_driver(client, HeadToDriver::QueryReply(view));
                }
            }
        }
    }

    fn submit(&mut self, client: ClientId, mut spec: TaskSpec) {
        let id = spec.id;
        if self.tasks.contains_key(&id) || self.objects.contains_key(&id) {
            self.tell_driver(
                client,
                HeadToDriver::Warning(format!(
                    "task id {id:#x} was submitted twice; the second is ignored"
                )),
            );
            return;
        }
        let invalid = limits::check_request(&spec.resources).err();
        self.objects.insert(id, ObjState::Pending);
        let mut deps_left = 0;
        let mut failure = invalid.map(|why| (ErrorKind::Invalid, why));
        let mut retries_left = spec.max_retries;
        match &spec.kind {
            TaskKind::Plain => {}
            TaskKind::CreateActor(opts) if failure.is_none() => {
                let binary = match self.drivers.get(&client) {
                    Some(d) => d.binary.clone(),
                    None => return,
                };
                if let Err(why) =
                    self.actors
                        .create(id, client, opts, binary, spec.resources.clone())
                {
                    failure = Some((ErrorKind::Invalid, why));
                }
            }
            TaskKind::CreateActor(_) => {}
            TaskKind::ActorCall { actor } => match self.actors.accept_call(*actor) {
                Ok(retries) => {
                    retries_left = retries;
                    if let Some(a) = self.actors.get_mut(*actor) {
                        a.queue.push_back(id);
                    }
                }
                Err(why) => failure = Some((ErrorKind::ActorDied, why)),
            },
        }
        if failure.is_none() {
            match self.resolve_args(id, &mut spec) {
                Ok(n) => deps_left = n,
                Err(f) => failure = Some(f),
            }
        }
        let entry = TaskEntry {
            owner: client,
            deps_left,
            retries_left,
            spec,
        };
        self.tasks.insert(id, entry);
        if let Some((kind, message)) = failure {
            let function = self.tasks[&id].spec.function.clone();
            self.complete(
                id,
                Err(TaskError {
                    kind,
                    function,
                    location: None,
                    message,
                }),
            );
        } else if deps_left == 0 {
            self.enqueue(id);
        }
    }

    /// Resolves a task's object arguments: small values go inline, stored ones by
    /// location (pinned until the task ends), pending ones make it wait (each distinct
    /// object counted once: `complete` resolves every argument naming it).
    fn resolve_args(
        &mut self,
        id: TaskId,
        spec: &mut TaskSpec,
    ) -> Result<u32, (ErrorKind, String)> {
        let mut deps_left = 0;
        for arg in spec.args.iter_mut() {
            let Arg::Ref(oid) = arg else { continue };
            let oid = *oid;
            match self.objects.get(&oid) {
                None => {
                    return Err((
                        ErrorKind::ObjectLost,
                        format!(
                            "argument object {oid:#x} does not exist (released or never created)"
                        ),
                    ));
                }
                Some(ObjState::Ready(v)) => *arg = Arg::Value(v.clone()),
                Some(ObjState::Stored(at)) => {
                    *arg = Arg::At(oid, (**at).clone());
                    *self.pins.entry(oid).or_default() += 1;
                }
                Some(ObjState::Failed(e)) => {
                    return Err((ErrorKind::DependencyFailed, e.to_string()));
                }
                Some(ObjState::Pending) => {
                    let w = self.waiters.entry(oid).or_default();
                    if !w.contains(&id) {
                        w.push(id);
                        deps_left += 1;
                    }
                }
            }
        }
        Ok(deps_left)
    }

    /// A task ended (or left): the stored objects it took may be dropped now.
    fn unpin(&mut self, spec: &TaskSpec) {
        for a in &spec.args {
            if let Arg::At(id, _) = a {
                self.unpin_id(*id);
            }
        }
    }

    /// One reason to keep `id` is gone; once none is left, a released object goes (one
    /// being made again goes once made: `complete` drops it then).
    fn unpin_id(&mut self, id: ObjectId) {
        match self.pins.get_mut(&id) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.pins.remove(&id);
                let pending = matches!(self.objects.get(&id), Some(ObjState::Pending));
                if !pending && self.released.remove(&id) {
                    self.drop_object(id);
                }
            }
            None => {}
        }
    }

    /// Forgets how to make `id` again: the stored arguments it kept are free to go.
    fn forget_lineage(&mut self, id: ObjectId) {
        if let Some((_, spec)) = self.lineage.remove(&id) {
            for a in lineage_args(&spec) {
                self.unpin_id(a);
            }
        }
    }

    /// Forgets an object; its node drops it if it was stored there.
    fn drop_object(&mut self, id: ObjectId) {
        self.forget_lineage(id);
        if let Some(ObjState::Stored(at)) = self.objects.remove(&id) {
            if self.nodes.contains_key(&at.node) {
                self.out
                    .push(Effect::ToNode(at.node, HeadToNode::Free(vec![id])));
            }
        }
    }

    /// A worker could not read a stored argument (its node died): the task never ran,
    /// and runs once its arguments are found again (rebuilt, say). Only if the head
    /// knows no newer place for them (it has not heard of the death yet) does this
    /// cost one of the task's retries.
    fn argument_lost(&mut self, task: TaskId, err: TaskError) {
        let Some(mut t) = self.tasks.remove(&task) else {
            return;
        };
        let stale = t.spec.args.iter().any(|a| match a {
            Arg::At(id, at) => {
                matches!(self.objects.get(id), Some(ObjState::Stored(now)) if now.node == at.node)
            }
            _ => false,
        });
        if stale && t.retries_left == 0 {
            self.tasks.insert(task, t);
            self.complete(task, Err(err));
            return;
        }
        if stale {
            t.retries_left -= 1;
        }
        warn!(
            "{err}; looking for its arguments again ({} retries left)",
            t.retries_left
        );
        self.unpin(&t.spec);
        for a in t.spec.args.iter_mut() {
            if let Arg::At(id, _) = a {
                *a = Arg::Ref(*id);
            }
        }
        let resolved = self.resolve_args(task, &mut t.spec);
        let function = t.spec.function.clone();
        self.tasks.insert(task, t);
        match resolved {
            Ok(0) => self.queue_for_placement(task, true),
            Ok(n) => {
                if let Some(t) = self.tasks.get_mut(&task) {
                    t.deps_left = n;
                }
            }
            Err((kind, message)) => self.complete(
                task,
                Err(TaskError {
                    kind,
                    function,
                    location: None,
                    message,
                }),
            ),
        }
    }

    /// A node's objects went with it: task results are made again by their task
    /// (lineage), `put` values are lost.
    fn objects_lost(&mut self, node: NodeId, ip: &str) {
        let gone: Vec<ObjectId> = self
            .objects
            .iter()
            .filter(|(_, o)| matches!(o, ObjState::Stored(at) if at.node == node))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            let entry = self.lineage.remove(&id);
            // Released only after the rebuild took its own pins on them.
            let kept = entry
                .as_ref()
                .map(|(_, s)| lineage_args(s))
                .unwrap_or_default();
            let rebuild = entry.filter(|(owner, _)| self.drivers.contains_key(owner));
            if let Some((owner, spec)) = rebuild {
                warn!("object {id:#x} was on node {node} ({ip}), which left: running {} again to rebuild it", spec.function);
                self.objects.remove(&id);
                self.submit(owner, spec);
                for a in kept {
                    self.unpin_id(a);
                }
                continue;
            }
            for a in kept {
                self.unpin_id(a);
            }
            let err = TaskError {
                kind: ErrorKind::ObjectLost,
                function: String::new(),
                location: Some(format!("node {node} ({ip})")),
                message: format!(
                    "object {id:#x} was kept only on node {node} ({ip}), which left the cluster; a put value cannot be rebuilt (task results are, by running their task again)"
                ),
            };
            self.objects.insert(id, ObjState::Failed(Box::new(err)));
        }
    }

    fn on_node_message(&mut self, node: NodeId, msg: NodeToHead) {
        let Some(conn) = self.nodes.get_mut(&node) else {
            return; // declared dead already
        };
        conn.last_seen = self.now;
        match msg {
            NodeToHead::Heartbeat => {}
            NodeToHead::Done(results) => {
                for (task, outcome) in results {
                    let outcome = self.own_location(node, outcome);
                    if let Some(actor) = self.call_in_flight(task, node) {
                        if let Some(a) = self.actors.get_mut(actor) {
                            a.sent.retain(|t| *t != task);
                        }
                        self.complete(task, outcome);
                        continue;
                    }
                    if self.sched.running_on(task) != Some(node) {
                        continue; // cancelled or re-placed meanwhile
                    }
                    if self.actors.get(task).is_some() {
                        self.actor_created(task, outcome);
                        continue;
                    }
                    self.sched.finish(task);
                    match outcome {
                        Err(e) if e.kind == ErrorKind::WorkerDied => self.retry_or_fail(task, e),
                        Err(e) if e.kind == ErrorKind::ObjectLost && self.takes_stored(task) => {
                            self.argument_lost(task, e)
                        }
                        outcome => self.complete(task, outcome),
                    }
                }
            }
            NodeToHead::ObjectServer { addr, calls_socket } => {
                if self.is_object_server_of(node, &addr) && calls_socket.len() <= limits::MAX_PATH {
                    if let Some(n) = self.nodes.get_mut(&node) {
                        n.objects = Some((addr, calls_socket));
                    }
                } else {
                    warn!("node {node} said its object server is at {addr}, not on its own address; ignored");
                }
            }
            NodeToHead::Blocked { task } => {
                if self.sched.running_on(task) == Some(node) {
                    // Tasks pipelined behind it go back to the queue (the node dropped
                    // them) and are placed again.
                    self.sched.lend(task);
                }
                // Before any placement made from now on: the node drops what was sent
                // behind the chain it revoked until it reads this.
                self.out
                    .push(Effect::ToNode(node, HeadToNode::Lent { task }));
            }
            NodeToHead::Unblocked { task } => {
                if self.sched.running_on(task) == Some(node) {
                    self.sched.reclaim(task);
                }
            }
            NodeToHead::ActorDied { actor, why } => {
                if self.actors.get(actor).is_some_and(|a| a.node == Some(node)) {
                    let ip = self.nodes.get(&node).map(|n| n.reg.ip.clone());
                    let why = format!(
                        "its process on node {node} ({}) ended: {why}",
                        ip.unwrap_or_default()
                    );
                    self.actor_lost(actor, &why);
                }
            }
            NodeToHead::TaskMessage { task, data } => {
                if self.sched.running_on(task) != Some(node)
                    && self.call_in_flight(task, node).is_none()
                {
                    return; // not this node's task (any more)
                }
                if let Some(owner) = self.tasks.get(&task).map(|t| t.owner) {
                    self.tell_driver(owner, HeadToDriver::TaskMessage { task, data });
                }
            }
            NodeToHead::Log {
                client,
                origin,
                lines,
                task,
            } => {
                let task = task.as_ref().map(|(t, f)| (*t, f.as_str()));
                self.logs.record(node, &origin, task, &lines);
                self.tell_driver(client, HeadToDriver::Log { origin, lines });
            }
            NodeToHead::Stuck {
                clients,
                blocked,
                waiting,
                cap,
            } => {
                let ip = self.nodes.get(&node).map(|n| n.reg.ip.clone());
                let warning = format!(
                    "{blocked} tasks are blocked in get() or wait() on node {node} ({}) and {waiting} more wait for a worker there: with {cap} of this job's workers blocked the node starts no more (the cap SUNRAY_MAX_BLOCKED_WORKERS keeps a deep recursion from exhausting the host), so unless what they wait for ends elsewhere, these nested tasks cannot progress. Make the recursion shallower (a task may return refs instead of waiting for them), or raise the cap",
                    ip.unwrap_or_default()
                );
                warn!("{warning}");
                for client in clients {
                    self.tell_driver(client, HeadToDriver::Warning(warning.clone()));
                }
            }
        }
    }

    /// Is `addr` an address on node `node`'s IP (where its object server listens)? A
    /// location elsewhere would send readers to a host that is not the cluster's.
    fn is_object_server_of(&self, node: NodeId, addr: &str) -> bool {
        let Some(n) = self.nodes.get(&node) else {
            return false;
        };
        let host = addr.rsplit_once(':').map_or("", |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']') == n.reg.ip
    }

    /// A node's result, with a location it may claim: on itself only.
    fn own_location(&self, node: NodeId, outcome: Reply) -> Reply {
        match outcome {
            Ok(Value::Stored(at)) if at.node != node || !self.is_object_server_of(node, &at.addr) => {
                Err(TaskError {
                    kind: ErrorKind::Invalid,
                    function: String::new(),
                    location: Some(format!("node {node}")),
                    message: format!(
                        "node {node} said it keeps the result at {} (node {}), which is not its own object server",
                        at.addr, at.node
                    ),
                })
            }
            outcome => outcome,
        }
    }

    fn takes_stored(&self, task: TaskId) -> bool {
        self.tasks
            .get(&task)
            .is_some_and(|t| t.spec.args.iter().any(|a| matches!(a, Arg::At(..))))
    }

    fn node_left(&mut self, node: NodeId, why: &str) {
        let Some(conn) = self.nodes.remove(&node) else {
            return;
        };
        self.out.push(Effect::ForgetNode(node));
        warn!("node {node} ({}) left the cluster: {why}", conn.reg.ip);
        let total = conn.reg.resources.clone();
        self.dead_nodes.push_back(NodeView {
            id: node,
            alive: false,
            ip: conn.reg.ip.clone(),
            hostname: conn.reg.hostname.clone(),
            pid: conn.reg.pid,
            available: Resources::default(),
            total,
            is_head: conn.is_head,
            objects: 0,
            object_bytes: 0,
        });
        if self.dead_nodes.len() > 100 {
            // Its workers' output goes with it (a dead node's is kept while it is listed).
            if let Some(old) = self.dead_nodes.pop_front() {
                self.logs.forget_node(old.id);
            }
        }
        self.update_homes();
        let lost = self.sched.remove_node(node);
        // Their bundles there are placed again (their tasks there are retried below).
        for g in self.sched.take_rescheduling_groups() {
            if let Some(g) = self.groups.get_mut(&g) {
                g.view.state = GroupState::Rescheduling;
                g.view.why = Some(format!(
                    "a bundle's node {node} ({}) left the cluster; it waits to be placed again",
                    conn.reg.ip
                ));
            }
        }
        for task in lost {
            if self.actors.get(task).is_some() {
                let why = format!("its node {node} ({}) left the cluster ({why})", conn.reg.ip);
                self.actor_lost(task, &why);
                continue;
            }
            let Some(t) = self.tasks.get(&task) else {
                continue;
            };
            let err = TaskError {
                kind: ErrorKind::NodeDied,
                function: t.spec.function.clone(),
                location: Some(format!("node {node} ({})", conn.reg.ip)),
                message: format!("the node left the cluster ({why})"),
            };
            self.retry_or_fail(task, err);
        }
        self.objects_lost(node, &conn.reg.ip);
        self.warn_stranded(node, &conn.reg);
    }

    /// After node `node` left, with its tasks queued again: each driver with waiting
    /// tasks that only that node could run is told, once per resource shape, as
    /// [`enqueue`](Self::enqueue) tells a driver of a shape no node has. Shapes only that
    /// node could run are forgotten as checked, so a driver's next such task is told too.
    fn warn_stranded(&mut self, node: NodeId, reg: &NodeRegistration) {
        let total = to_request(&reg.resources);
        let sched = &self.sched;
        for d in self.drivers.values_mut() {
            d.checked_requests.retain(|r| !sched.stranded_by(&total, r));
        }
        for (request, waiting) in self.sched.stranded(&total) {
            // Per owner, in the order they wait: how many, and which functions.
            let mut owners: Vec<(ClientId, usize, Vec<&str>)> = Vec::new();
            for t in waiting.iter().filter_map(|id| self.tasks.get(id)) {
                let i = match owners.iter().position(|(o, _, _)| *o == t.owner) {
                    Some(i) => i,
                    None => {
                        owners.push((t.owner, 0, Vec::new()));
                        owners.len() - 1
                    }
                };
                let (_, n, functions) = &mut owners[i];
                *n += 1;
                if !functions.contains(&t.spec.function.as_str()) {
                    functions.push(&t.spec.function);
                }
            }
            for (owner, n, functions) in owners {
                let Some(d) = self.drivers.get_mut(&owner) else {
                    continue;
                };
                d.checked_requests.insert(request.clone());
                let tasks = match n {
                    1 => "a waiting task".to_string(),
                    n => format!("{n} waiting tasks"),
                };
                let mut names = functions[..functions.len().min(3)].join(", ");
                if functions.len() > 3 {
                    names.push_str(", …");
                }
                let (ask, wait) = if n == 1 {
                    ("asks", "it waits")
                } else {
                    ("ask", "they wait")
                };
                self.out.push(Effect::ToDriver(owner, HeadToDriver::Warning(format!(
                    "node {node} ({}) left the cluster: {tasks} ({names}) {ask} for {{{request}}}, which no node of the cluster has now; {wait} until such a node joins",
                    reg.ip
                ))));
            }
        }
    }

    /// A task lost its worker or its node: it runs again (first in its queue) while it has
    /// retries left, as Ray's `max_retries`; then it fails with `err`.
    fn retry_or_fail(&mut self, task: TaskId, err: TaskError) {
        if let Some(t) = self.tasks.get_mut(&task) {
            if t.retries_left > 0 {
                t.retries_left -= 1;
                warn!("{err}; retrying ({} retries left)", t.retries_left);
                self.queue_for_placement(task, true);
                return;
            }
        }
        self.complete(task, Err(err));
    }

    fn driver_left(&mut self, client: ClientId) {
        let Some(d) = self.drivers.remove(&client) else {
            return;
        };
        self.out.push(Effect::ForgetDriver(client));
        for subs in self.subscribers.values_mut() {
            subs.retain(|c| *c != client);
        }
        let mine: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| {
                g.owner == client && g.view.state != GroupState::Removed && !g.view.detached
            })
            .map(|(id, _)| *id)
            .collect();
        for g in mine {
            self.remove_group(g, "its driver left the cluster");
        }
        // A detached group's ready object outlives its creator, as the group does.
        let detached: HashSet<ObjectId> = self
            .groups
            .iter()
            .filter(|(_, g)| g.owner == client && g.view.detached)
            .map(|(id, _)| *id)
            .collect();
        // Its actors die with it (the node agents kill their workers with the job's),
        // except detached ones.
        for actor in self.actors.owned_by(client) {
            self.sched.finish(actor);
            let calls = self.actors.kill_now(actor, "its driver left the cluster");
            self.fail_calls(actor, calls);
        }
        let mine: HashSet<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.owner == client)
            .map(|(id, _)| *id)
            .collect();
        self.sched.cancel(&mine);
        for id in &mine {
            if let Some(t) = self.tasks.remove(id) {
                self.unpin(&t.spec);
            }
        }
        let theirs: Vec<ObjectId> = self
            .lineage
            .keys()
            .filter(|id| object_owner(**id) == client)
            .copied()
            .collect();
        for id in theirs {
            self.forget_lineage(id);
        }
        let mut frees: HashMap<NodeId, Vec<ObjectId>> = HashMap::new();
        self.objects.retain(|id, o| {
            let keep = object_owner(*id) != client || detached.contains(id);
            if let (false, ObjState::Stored(at)) = (keep, o) {
                frees.entry(at.node).or_default().push(*id);
            }
            keep
        });
        for (n, ids) in frees {
            if self.nodes.contains_key(&n) {
                self.out.push(Effect::ToNode(n, HeadToNode::Free(ids)));
            }
        }
        self.pins.retain(|id, _| object_owner(*id) != client);
        self.waiters.retain(|id, _| object_owner(*id) != client);
        self.released.retain(|id| object_owner(*id) != client);
        // A worker's connection ending ends nothing else: its job is its driver's.
        if d.job == client {
            for (id, n) in self.nodes.iter_mut() {
                if n.jobs.remove(&client) {
                    self.out
                        .push(Effect::ToNode(*id, HeadToNode::EndJob { client }));
                }
            }
        }
    }

    /// Records a task's final outcome, tells its owner, and feeds the tasks waiting on it.
    fn complete(&mut self, task: TaskId, outcome: Reply) {
        let mut work = vec![(task, outcome)];
        while let Some((task, outcome)) = work.pop() {
            let Some(mut t) = self.tasks.remove(&task) else {
                continue;
            };
            // A stored result may have to be made again: the stored objects its task
            // took stay as long as its lineage (pinned before the task's own pins go).
            let keeps_lineage = matches!(outcome, Ok(Value::Stored(_)))
                && t.spec.kind == TaskKind::Plain
                && self.objects.contains_key(&task);
            if keeps_lineage {
                for a in &t.spec.args {
                    if let Arg::At(id, _) = a {
                        *self.pins.entry(*id).or_default() += 1;
                    }
                }
            }
            self.unpin(&t.spec);
            match self.finished.get_mut(&t.spec.function) {
                Some(n) => *n += 1,
                None => {
                    self.finished.insert(t.spec.function.clone(), 1);
                }
            }
            if let Some(d) = self.drivers.get_mut(&t.owner) {
                d.done.push((task, outcome.clone()));
            }
            for c in self.subscribers.remove(&task).unwrap_or_default() {
                if let Some(d) = self.drivers.get_mut(&c) {
                    d.done.push((task, outcome.clone()));
                }
            }
            let Some(obj) = self.objects.get_mut(&task) else {
                continue;
            };
            let waiters = self.waiters.remove(&task).unwrap_or_default();
            *obj = match &outcome {
                Ok(Value::Inline(v)) => ObjState::Ready(v.clone()),
                Ok(Value::Stored(at)) => ObjState::Stored(Box::new(at.clone())),
                Err(e) => ObjState::Failed(Box::new(e.clone())),
            };
            if keeps_lineage {
                for a in t.spec.args.iter_mut() {
                    if let Arg::At(id, _) = a {
                        *a = Arg::Ref(*id);
                    }
                }
                self.lineage.insert(task, (t.owner, t.spec));
            }
            for w in waiters {
                let Some(wt) = self.tasks.get_mut(&w) else {
                    continue;
                };
                match &outcome {
                    Ok(v) => {
                        for a in wt.spec.args.iter_mut() {
                            if matches!(a, Arg::Ref(o) if *o == task) {
                                *a = match v {
                                    Value::Inline(b) => Arg::Value(b.clone()),
                                    Value::Stored(at) => {
                                        *self.pins.entry(task).or_default() += 1;
                                        Arg::At(task, at.clone())
                                    }
                                };
                            }
                        }
                        // Saturating: a waiter entry left by a failed task whose id was
                        // reused must not wrap the count.
                        wt.deps_left = wt.deps_left.saturating_sub(1);
                        if wt.deps_left == 0 {
                            self.enqueue(w);
                        }
                    }
                    Err(e) => {
                        let err = TaskError {
                            kind: ErrorKind::DependencyFailed,
                            function: wt.spec.function.clone(),
                            location: None,
                            message: e.to_string(),
                        };
                        work.push((w, Err(err)));
                    }
                }
            }
            if self.released.contains(&task) && !self.pins.contains_key(&task) {
                self.released.remove(&task);
                self.drop_object(task);
            }
        }
    }

    /// A placement group to reserve (its id is the object that becomes ready when it is);
    /// `msg` is the driver's `CreateGroup`.
    fn create_group(&mut self, client: ClientId, msg: DriverToHead) {
        let DriverToHead::CreateGroup {
            id,
            name,
            bundles,
            strategy,
            ready,
            detached,
        } = msg
        else {
            return;
        };
        if self.objects.contains_key(&id) || self.groups.contains_key(&id) {
            return;
        }
        let mut bad = bundles
            .is_empty()
            .then(|| "a placement group needs at least one bundle".to_string());
        for b in &bundles {
            if bad.is_none() {
                bad = limits::check_request(b).err();
            }
        }
        if bad.is_none() && bundles.iter().any(|b| to_request(b).is_empty()) {
            bad = Some("every bundle of a placement group must ask for some resource".into());
        }
        if let Some(message) = bad {
            let err = TaskError {
                kind: ErrorKind::Invalid,
                function: "placement_group".into(),
                location: None,
                message,
            };
            self.objects
                .insert(id, ObjState::Failed(Box::new(err.clone())));
            if let Some(d) = self.drivers.get_mut(&client) {
                d.done.push((id, Err(err)));
            }
            return;
        }
        let sets: Vec<ResourceSet> = bundles.iter().map(to_request).collect();
        let plan_strategy = match strategy {
            PlacementStrategy::Pack => Strategy::Pack,
            PlacementStrategy::Spread => Strategy::Spread,
            PlacementStrategy::StrictPack => Strategy::StrictPack,
            PlacementStrategy::StrictSpread => Strategy::StrictSpread,
        };
        let why = (!self.sched.group_feasible(&sets, plan_strategy)).then(|| {
            let shapes: Vec<String> = sets.iter().map(|s| format!("{{{s}}}")).collect();
            format!(
                "placement group {id:#x} ({strategy:?}, bundles {}) cannot be placed on the cluster as it is ({} nodes alive){}; it waits until nodes that can hold it join",
                shapes.join(", "),
                self.nodes.len(),
                match strategy {
                    PlacementStrategy::StrictSpread => format!(": {strategy:?} needs {} nodes that each hold a bundle", sets.len()),
                    PlacementStrategy::StrictPack => ": StrictPack needs one node that holds every bundle".into(),
                    _ => String::new(),
                }
            )
        });
        if let Some(w) = &why {
            self.tell_driver(client, HeadToDriver::Warning(w.clone()));
        }
        self.objects.insert(id, ObjState::Pending);
        self.sched.create_group(id, sets, plan_strategy);
        self.groups.insert(
            id,
            GroupEntry {
                owner: client,
                ready,
                view: GroupView {
                    id,
                    name,
                    strategy,
                    state: GroupState::Pending,
                    bundles,
                    nodes: Vec::new(),
                    why,
                    detached,
                },
            },
        );
    }

    /// Its bundles are reserved: its ready object is ready.
    fn group_placed(&mut self, id: GroupId) {
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        let first = g.view.state == GroupState::Pending;
        g.view.state = GroupState::Created;
        g.view.why = None;
        g.view.nodes = self.sched.group_nodes(id).unwrap_or_default();
        if !first {
            return; // placed again after a node left: it was ready already
        }
        let ready = g.ready.clone();
        let owner = g.owner;
        self.object_known(id, owner, Ok(Value::Inline(ready)));
    }

    /// An object that no task makes (a group's ready object) gets its outcome.
    fn object_known(&mut self, id: ObjectId, owner: ClientId, outcome: Reply) {
        if let Some(o) = self.objects.get_mut(&id) {
            *o = match &outcome {
                Ok(Value::Inline(v)) => ObjState::Ready(v.clone()),
                Ok(Value::Stored(at)) => ObjState::Stored(Box::new(at.clone())),
                Err(e) => ObjState::Failed(Box::new(e.clone())),
            };
        }
        if let Some(d) = self.drivers.get_mut(&owner) {
            d.done.push((id, outcome.clone()));
        }
        for c in self.subscribers.remove(&id).unwrap_or_default() {
            if let Some(d) = self.drivers.get_mut(&c) {
                d.done.push((id, outcome.clone()));
            }
        }
    }

    fn remove_group(&mut self, id: GroupId, why: &str) {
        if self
            .groups
            .get(&id)
            .is_none_or(|g| g.view.state == GroupState::Removed)
        {
            return;
        }
        let tasks = self.sched.remove_group(id);
        self.group_gone(id, why, tasks);
    }

    /// A group is gone (removed, or a node of it died): its tasks fail, its actors die.
    fn group_gone(&mut self, id: GroupId, why: &str, tasks: Vec<TaskId>) {
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        let was_pending = g.view.state == GroupState::Pending;
        g.view.state = GroupState::Removed;
        g.view.why = Some(why.to_string());
        let owner = g.owner;
        let message = format!("its placement group {id:#x} is gone: {why}");
        if was_pending {
            let err = TaskError {
                kind: ErrorKind::Invalid,
                function: "placement_group".into(),
                location: None,
                message: message.clone(),
            };
            self.object_known(id, owner, Err(err));
        }
        for t in tasks {
            if let Some(a) = self.actors.get_mut(t) {
                a.no_restart = true;
                if let Some(n) = a.node.filter(|n| self.nodes.contains_key(n)) {
                    self.out
                        .push(Effect::ToNode(n, HeadToNode::KillActor { actor: t }));
                }
                self.actor_lost(t, &message);
                continue;
            }
            let function = self.tasks.get(&t).map(|x| x.spec.function.clone());
            if let Some(function) = function {
                let err = TaskError {
                    kind: ErrorKind::Invalid,
                    function,
                    location: None,
                    message: message.clone(),
                };
                self.complete(t, Err(err));
            }
        }
        let removed: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| g.view.state == GroupState::Removed)
            .map(|(id, _)| *id)
            .collect();
        for old in removed.iter().take(removed.len().saturating_sub(100)) {
            self.groups.remove(old);
        }
    }

    /// The actor whose call `task` is, when that call was sent to `node` and has not
    /// come back.
    fn call_in_flight(&self, task: TaskId, node: NodeId) -> Option<ActorId> {
        let t = self.tasks.get(&task)?;
        let TaskKind::ActorCall { actor } = t.spec.kind else {
            return None;
        };
        let a = self.actors.get(actor)?;
        (a.node == Some(node) && a.sent.contains(&task)).then_some(actor)
    }

    /// Sends an alive actor the calls at the front of its queue whose arguments are
    /// ready, in order: a call waiting for an argument holds back the ones behind it.
    fn pump_actor(&mut self, actor: ActorId) {
        let Some(a) = self.actors.get_mut(actor) else {
            return;
        };
        let (ActorState::Alive, Some(node)) = (a.state, a.node) else {
            return;
        };
        let Some(conn) = self.nodes.get_mut(&node) else {
            return;
        };
        while let Some(&call) = a.queue.front() {
            let Some(t) = self.tasks.get(&call) else {
                a.queue.pop_front(); // failed or cancelled meanwhile
                continue;
            };
            if t.deps_left > 0 {
                break;
            }
            a.queue.pop_front();
            a.sent.push_back(call);
            conn.run.push(Assignment {
                client: a.owner,
                spec: t.spec.clone(),
                after: None,
            });
            // Its caller may send the next calls to the actor's node directly.
            if let Some((addr, calls_socket)) = &conn.objects {
                if a.told.insert(t.owner) {
                    let at = HeadToDriver::ActorAt {
                        actor,
                        node,
                        addr: addr.clone(),
                        calls_socket: calls_socket.clone(),
                        retries: a.call_retries(),
                    };
                    if self.drivers.contains_key(&t.owner) {
                        self.out.push(Effect::ToDriver(t.owner, at));
                    }
                }
            }
        }
    }

    /// An actor's creation task returned: alive (its calls go), or dead with the
    /// constructor's error.
    fn actor_created(&mut self, actor: ActorId, outcome: Reply) {
        match outcome {
            Ok(v) => {
                if self.actors.alive(actor) {
                    self.complete(actor, Ok(v));
                } else {
                    self.tasks.remove(&actor); // a restart: its creator knew already
                }
                self.pump_actor(actor);
            }
            Err(e) => {
                self.sched.finish(actor);
                let why = format!("its constructor failed: {e}");
                let calls = self.actors.kill_now(actor, &why);
                self.fail_calls(actor, calls);
                self.complete(actor, Err(e));
            }
        }
    }

    /// The actor lost its process or node: restarted (its creation task first in its
    /// queue) while it has restarts left, else dead; calls cut short are retried or fail.
    fn actor_lost(&mut self, actor: ActorId, why: &str) {
        self.sched.finish(actor);
        let tasks = &mut self.tasks;
        let fate = self.actors.lost(actor, why, |call| {
            tasks.get_mut(&call).is_some_and(|t| {
                let has = t.retries_left > 0;
                t.retries_left = t.retries_left.saturating_sub(1);
                has
            })
        });
        let Some(a) = self.actors.get(actor) else {
            return;
        };
        let what = a.describe(actor);
        match fate {
            None => {}
            Some(crate::actors::Fate::Restart { fail, .. }) => {
                warn!("{what}: {why}; restarting it");
                let (spec, owner) = (a.spec.clone(), a.owner);
                self.fail_calls(actor, fail);
                let Some(spec) = spec else { return };
                self.tasks.entry(actor).or_insert(TaskEntry {
                    spec,
                    owner,
                    deps_left: 0,
                    retries_left: 0,
                });
                self.queue_for_placement(actor, true);
            }
            Some(crate::actors::Fate::Dead { fail }) => {
                warn!("{what} died: {why}");
                self.fail_calls(actor, fail);
                if self.tasks.contains_key(&actor) {
                    // It died before its constructor returned (the first time).
                    let err = self.actor_died_error(actor, what);
                    self.complete(actor, Err(err));
                }
            }
        }
    }

    fn actor_died_error(&self, actor: ActorId, function: String) -> TaskError {
        let a = self.actors.get(actor);
        TaskError {
            kind: ErrorKind::ActorDied,
            function,
            location: None,
            message: match a {
                Some(a) => format!(
                    "{} died: {}",
                    a.describe(actor),
                    a.death.as_deref().unwrap_or("unknown cause")
                ),
                None => format!("actor {actor:#x} died"),
            },
        }
    }

    /// Fails these calls of `actor` with its cause of death (or of its restart).
    fn fail_calls(&mut self, actor: ActorId, calls: Vec<TaskId>) {
        for call in calls {
            let Some(t) = self.tasks.get(&call) else {
                continue;
            };
            let err = self.actor_died_error(actor, t.spec.function.clone());
            self.complete(call, Err(err));
        }
    }

    /// `kill(actor)`: a placed actor's process is killed (its death then follows the
    /// usual path: restart unless `no_restart`); one still waiting for resources dies now.
    fn kill_actor(&mut self, actor: ActorId, no_restart: bool) {
        let Some(a) = self.actors.get_mut(actor) else {
            return;
        };
        if a.state == ActorState::Dead {
            return;
        }
        a.no_restart |= no_restart;
        match a.node {
            Some(node) => {
                if self.nodes.contains_key(&node) {
                    self.out
                        .push(Effect::ToNode(node, HeadToNode::KillActor { actor }));
                }
            }
            None => {
                self.sched.cancel(&HashSet::from([actor]));
                let calls = self.actors.kill_now(actor, "killed before it started");
                self.fail_calls(actor, calls);
                if self.tasks.contains_key(&actor) {
                    let err = self.actor_died_error(actor, "actor creation".into());
                    self.complete(actor, Err(err));
                }
            }
        }
    }

    /// Places queued tasks and queues the assignments for their nodes.
    fn dispatch(&mut self) {
        let placements = self.sched.schedule();
        for g in self.sched.take_placed_groups() {
            self.group_placed(g);
        }
        for p in placements {
            let Some(t) = self.tasks.get(&p.task) else {
                self.sched.finish(p.task);
                continue;
            };
            let Some(node) = self.nodes.get_mut(&p.node) else {
                continue;
            };
            let job = self.drivers.get(&t.owner).map_or(t.owner, |d| d.job);
            if node.jobs.insert(job) {
                // A detached actor restarted after its driver left still has the binary.
                let binary = match self.drivers.get(&job) {
                    Some(d) => Some(d.binary.clone()),
                    None => self.actors.get(p.task).map(|a| a.binary.clone()),
                };
                if let Some(binary) = binary {
                    self.out.push(Effect::ToNode(
                        p.node,
                        HeadToNode::Job {
                            client: job,
                            binary,
                        },
                    ));
                }
            }
            if let TaskKind::CreateActor(_) = t.spec.kind {
                self.actors.placed(p.task, p.node, &t.spec);
            }
            node.run.push(Assignment {
                client: job,
                spec: t.spec.clone(),
                after: p.after,
            });
        }
    }

    /// Queues a task whose arguments are all resolved. The first time a driver asks for
    /// a resource shape no node has, it is told (once; a node whose loss leaves a
    /// shape with no node tells again, see [`warn_stranded`](Self::warn_stranded)).
    fn enqueue(&mut self, id: TaskId) {
        let Some(t) = self.tasks.get(&id) else { return };
        if let TaskKind::ActorCall { actor } = t.spec.kind {
            self.pump_actor(actor);
            return;
        }
        let (owner, request) = (t.owner, t.request());
        if t.spec.bundle.is_none() {
            if let Some(d) = self.drivers.get_mut(&owner) {
                if d.checked_requests.insert(request.clone()) && !self.sched.feasible(&request) {
                    self.out.push(Effect::ToDriver(owner, HeadToDriver::Warning(format!(
                        "a task asks for {{{request}}}, which no node of the cluster has; it waits until such a node joins"
                    ))));
                }
            }
        }
        self.queue_for_placement(id, false);
    }

    /// Hands a task to the scheduler: into its placement group's bundle, as an actor
    /// (never pipelined behind), or as a plain task. `front`: a retry keeps its turn.
    fn queue_for_placement(&mut self, id: TaskId, front: bool) {
        let Some(t) = self.tasks.get(&id) else { return };
        let long_lived = matches!(t.spec.kind, TaskKind::CreateActor(_));
        let (owner, request) = (t.owner, t.request());
        let (home, nested) = match self.drivers.get(&owner) {
            Some(d) => (d.home, d.job != owner),
            None => (None, false),
        };
        if let Some(b) = t.spec.bundle {
            let bad = match self.sched.group_len(b.group) {
                None => Some(format!(
                    "placement group {:#x} does not exist (removed, or never created)",
                    b.group
                )),
                Some(n) if b.index.is_some_and(|i| i as usize >= n) => Some(format!(
                    "placement group {:#x} has {n} bundles: there is no bundle {}",
                    b.group,
                    b.index.unwrap_or(0)
                )),
                Some(_) => None,
            };
            match bad {
                Some(message) => {
                    let err = TaskError {
                        kind: ErrorKind::Invalid,
                        function: t.spec.function.clone(),
                        location: None,
                        message,
                    };
                    if self.actors.get(id).is_some() {
                        let calls = self.actors.kill_now(id, &err.message);
                        self.fail_calls(id, calls);
                    }
                    self.complete(id, Err(err));
                }
                None => self.sched.submit_in_group(
                    id,
                    request,
                    (b.group, b.index.map(|i| i as usize)),
                    front,
                ),
            }
        } else if long_lived {
            self.sched
                .submit_long_lived(id, request, if front { None } else { home }, front);
        } else if front || nested {
            // Submitted by a task: newest first (depth first). A task waiting for its
            // children holds a worker process; depth first keeps those near the depth
            // of the recursion instead of the width of its tree.
            self.sched.submit_front(id, request);
        } else {
            self.sched.submit_preferring(id, request, home);
        }
    }

    /// Ends a round: each driver's results and each node's assignments go out as one
    /// message per peer.
    fn flush(&mut self) {
        for (id, d) in self.drivers.iter_mut() {
            if !d.done.is_empty() {
                let done = std::mem::take(&mut d.done);
                self.out
                    .push(Effect::ToDriver(*id, HeadToDriver::Done(done)));
            }
        }
        for (id, n) in self.nodes.iter_mut() {
            if !n.run.is_empty() {
                let run = std::mem::take(&mut n.run);
                self.out.push(Effect::ToNode(*id, HeadToNode::Run(run)));
            }
        }
    }

    /// A message for a driver the head knows (one that left is skipped).
    fn tell_driver(&mut self, client: ClientId, msg: HeadToDriver) {
        if self.drivers.contains_key(&client) {
            self.out.push(Effect::ToDriver(client, msg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use sunray_proto::{gen, object_id, NodeToWorker, WorkerToNode};

    fn binary() -> BinaryInfo {
        BinaryInfo {
            path: "/bin/driver".into(),
            hash: "0123456789abcdef0123456789abcdef".into(),
            size: 1,
            registry_hash: "r".into(),
            kind: sunray_proto::ProgramKind::Native,
        }
    }

    fn registration(ip: &str, cpus: f64) -> NodeRegistration {
        NodeRegistration {
            ip: ip.into(),
            hostname: "n".into(),
            pid: 1,
            resources: Resources {
                cpu: cpus,
                ..Default::default()
            },
            gpu_ids: vec![],
        }
    }

    /// Node 1 (at `ip`, with `cpus`) and driver 2 (connecting from `driver_ip`, or from
    /// the head's host) join; what each is sent.
    fn join_node_and_driver(
        head: &mut Shell,
        ip: &str,
        cpus: f64,
        driver_ip: Option<&str>,
    ) -> (
        mpsc::UnboundedReceiver<HeadToNode>,
        mpsc::UnboundedReceiver<HeadToDriver>,
    ) {
        let (ntx, nrx) = mpsc::unbounded_channel();
        let (dtx, drx) = mpsc::unbounded_channel();
        let reg = registration(ip, cpus);
        head.handle(Event::NodeJoined {
            node: 1,
            reg,
            tx: ntx,
            is_head: driver_ip.is_none(),
        });
        head.handle(Event::DriverJoined {
            client: 2,
            binary: binary(),
            tx: dtx,
            ip: driver_ip.map(String::from),
            job: None,
        });
        (nrx, drx)
    }

    fn task(client: ClientId, seq: u64) -> TaskSpec {
        TaskSpec {
            id: object_id(client, seq),
            function: "m::f".into(),
            args: vec![],
            resources: Resources {
                cpu: 1.0,
                ..Default::default()
            },
            max_retries: 0,
            kind: TaskKind::Plain,
            bundle: None,
        }
    }

    /// Events a connection would hand the actor: generated messages, filtered by the
    /// same checks the connection applies (a message that fails them drops its peer).
    fn generated_events(
        rng: &mut impl Rng,
        n: usize,
        keep: &mut Vec<Box<dyn std::any::Any>>,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let (mut drivers, mut nodes) = (Vec::new(), Vec::new());
        for i in 0..n {
            let id = 100 + i as u32;
            match rng.random_range(0..10) {
                0 => {
                    let reg = gen::registration(rng);
                    if limits::check_registration(&reg).is_err() {
                        continue; // refused at the handshake
                    }
                    let (tx, rx) = mpsc::unbounded_channel();
                    keep.push(Box::new(rx));
                    nodes.push(id);
                    events.push(Event::NodeJoined {
                        node: id,
                        reg,
                        tx,
                        is_head: rng.random(),
                    });
                }
                1 => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    keep.push(Box::new(rx));
                    // Some are workers' connections, for a driver that may have left.
                    let job = (!drivers.is_empty() && rng.random_range(0..3) == 0)
                        .then(|| drivers[rng.random_range(0..drivers.len())]);
                    drivers.push(id);
                    events.push(Event::DriverJoined {
                        client: id,
                        binary: binary(),
                        tx,
                        ip: None,
                        job,
                    });
                }
                2 if !nodes.is_empty() => {
                    let node = nodes[rng.random_range(0..nodes.len())];
                    events.push(Event::FromNode(node, gen::node_message(rng)));
                }
                3 if !drivers.is_empty() && rng.random_range(0..4) == 0 => {
                    events.push(Event::DriverLeft(drivers.swap_remove(0)));
                }
                4 if !nodes.is_empty() && rng.random_range(0..4) == 0 => {
                    events.push(Event::NodeLeft(nodes.swap_remove(0), "gone".into()));
                }
                5 => events.push(Event::Tick),
                _ if !drivers.is_empty() => {
                    let client = drivers[rng.random_range(0..drivers.len())];
                    let msg = gen::driver_message(rng, client);
                    if limits::check_driver_message(client, &msg).is_ok() {
                        events.push(Event::FromDriver(client, msg));
                    }
                }
                _ => {}
            }
        }
        events
    }

    #[test]
    fn a_task_naming_a_pending_object_twice_runs_once_it_is_ready() {
        let mut head = Shell::default();
        let (mut nrx, _drx) = join_node_and_driver(&mut head, "127.0.0.5", 1.0, None);
        let a = task(2, 1);
        let mut b = task(2, 2);
        b.args = vec![Arg::Ref(a.id), Arg::Ref(a.id)];
        head.handle(Event::FromDriver(
            2,
            DriverToHead::Submit(vec![a.clone(), b.clone()]),
        ));
        head.dispatch();
        head.handle(Event::FromNode(
            1,
            NodeToHead::Done(vec![(a.id, Ok(Value::Inline(Bytes::from_static(b"v"))))]),
        ));
        head.dispatch();
        head.flush();
        let ran: Vec<Assignment> = std::iter::from_fn(|| nrx.try_recv().ok())
            .flat_map(|m| match m {
                HeadToNode::Run(v) => v,
                _ => vec![],
            })
            .collect();
        let b_run = ran
            .iter()
            .find(|x| x.spec.id == b.id)
            .expect("b was sent to run");
        assert!(b_run
            .spec
            .args
            .iter()
            .all(|x| matches!(x, Arg::Value(v) if &v[..] == b"v")));
    }

    #[test]
    fn generated_events_never_panic_the_head_and_it_keeps_serving_a_driver() {
        for seed in 0..200 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut head = Shell::new(HeadState {
                sched: Scheduler::with_pipelining(PIPELINING),
                ..HeadState::default()
            });
            let mut keep = Vec::new();
            let events = generated_events(&mut rng, 300, &mut keep);
            let mut now = 0;
            let mut it = events.into_iter().peekable();
            while it.peek().is_some() {
                for ev in it.by_ref().take(rng.random_range(1..32)) {
                    head.handle(ev);
                }
                now += 1_000;
                head.advance(Duration::from_micros(now));
                head.dispatch();
                head.flush();
            }
            // A fresh node and driver: the driver's task runs there and comes back.
            let (mut nrx, mut drx) =
                join_node_and_driver(&mut head, "127.0.0.77", 1e6, Some("127.0.0.77"));
            let spec = task(2, 1);
            head.handle(Event::FromDriver(
                2,
                DriverToHead::Submit(vec![spec.clone()]),
            ));
            head.dispatch();
            head.flush();
            let mut ran_here = false;
            while let Ok(m) = nrx.try_recv() {
                if let HeadToNode::Run(a) = m {
                    ran_here |= a.iter().any(|a| a.spec.id == spec.id);
                }
            }
            let on = head.sched.running_on(spec.id);
            assert!(on.is_some(), "seed {seed}: the task was not placed");
            let node = on.unwrap();
            assert!(
                ran_here || node != 1,
                "seed {seed}: placed on node 1 but not sent"
            );
            head.handle(Event::FromNode(
                node,
                NodeToHead::Done(vec![(
                    spec.id,
                    Ok(Value::Inline(Bytes::from_static(b"ok"))),
                )]),
            ));
            head.flush();
            let done = std::iter::from_fn(|| drx.try_recv().ok()).any(|m| {
                matches!(m, HeadToDriver::Done(r) if r.iter().any(|(id, o)| *id == spec.id && o.is_ok()))
            });
            assert!(done, "seed {seed}: the driver got no result");
        }
    }

    /// A node agent as the head sees it: runs what it is sent, in order; actors live
    /// here from their creation until they crash, are killed, or the node dies.
    #[derive(Default)]
    struct SimNode {
        rx: Option<mpsc::UnboundedReceiver<HeadToNode>>,
        todo: VecDeque<Assignment>,
        actors: HashSet<ActorId>,
    }

    impl SimNode {
        /// Runs the oldest thing it was sent; what it tells the head, if anything.
        /// Calls that succeed are recorded in `ran`, per actor, in the order they ran.
        fn run_next(&mut self, ran: &mut HashMap<ActorId, Vec<TaskId>>) -> Option<NodeToHead> {
            loop {
                let a = self.todo.pop_front()?;
                match a.spec.kind {
                    _ if a.spec.function == "kill" && self.actors.remove(&a.spec.id) => {
                        return Some(NodeToHead::ActorDied {
                            actor: a.spec.id,
                            why: "killed".into(),
                        });
                    }
                    _ if a.spec.function == "kill" => {}
                    TaskKind::CreateActor(_) => {
                        self.actors.insert(a.spec.id);
                        return Some(NodeToHead::Done(vec![(
                            a.spec.id,
                            Ok(Value::Inline(Bytes::new())),
                        )]));
                    }
                    TaskKind::ActorCall { actor } if self.actors.contains(&actor) => {
                        ran.entry(actor).or_default().push(a.spec.id);
                        return Some(NodeToHead::Done(vec![(
                            a.spec.id,
                            Ok(Value::Inline(Bytes::new())),
                        )]));
                    }
                    _ => {} // its actor is not here (any more): dropped
                }
            }
        }
    }

    fn sim_node(head: &mut Shell, id: NodeId, cpus: f64) -> SimNode {
        let (tx, rx) = mpsc::unbounded_channel();
        let reg = registration(&format!("127.0.0.{id}"), cpus);
        head.handle(Event::NodeJoined {
            node: id,
            reg,
            tx,
            is_head: false,
        });
        SimNode {
            rx: Some(rx),
            ..Default::default()
        }
    }

    /// Generated lives of actors: calls, crashes, kills, nodes dying and joining, in any
    /// order. Every call gets exactly one answer; the calls of an actor that succeed
    /// ran in the order they were submitted; a dead actor's resources are free again.
    #[test]
    fn generated_actor_lives_answer_every_call_once_and_in_order() {
        for seed in 0..300 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut head = Shell::default();
            let mut nodes: BTreeMap<NodeId, SimNode> = BTreeMap::new();
            let mut next_node = 10;
            for id in [1, 3, 4] {
                nodes.insert(id, sim_node(&mut head, id, 2.0));
            }
            let (dtx, mut drx) = mpsc::unbounded_channel();
            head.handle(Event::DriverJoined {
                client: 2,
                binary: binary(),
                tx: dtx,
                ip: None,
                job: None,
            });
            let mut seq = 1;
            let mut actors = Vec::new();
            for _ in 0..3 {
                let mut spec = task(2, seq);
                seq += 1;
                spec.kind = TaskKind::CreateActor(Box::new(sunray_proto::ActorOptions {
                    class: "m::Counter".into(),
                    name: None,
                    detached: false,
                    max_restarts: [0, 1, -1][rng.random_range(0..3)],
                    max_task_retries: [0, 1, -1][rng.random_range(0..3)],
                    max_concurrency: 1,
                }));
                actors.push(spec.id);
                head.handle(Event::FromDriver(2, DriverToHead::Submit(vec![spec])));
            }
            // Per actor, the calls in submission order.
            let mut submitted: HashMap<ActorId, Vec<TaskId>> = HashMap::new();
            let mut answers: HashMap<TaskId, Vec<bool>> = HashMap::new();
            let mut ran: HashMap<ActorId, Vec<TaskId>> = HashMap::new();
            let step = |head: &mut Shell, nodes: &mut BTreeMap<NodeId, SimNode>| {
                head.dispatch();
                head.flush();
                for n in nodes.values_mut() {
                    while let Ok(m) = n.rx.as_mut().unwrap().try_recv() {
                        match m {
                            HeadToNode::Run(v) => n.todo.extend(v),
                            HeadToNode::KillActor { actor } => n.todo.push_back(Assignment {
                                client: 0,
                                spec: TaskSpec {
                                    id: actor,
                                    function: "kill".into(),
                                    args: vec![],
                                    resources: Resources::default(),
                                    max_retries: 0,
                                    kind: TaskKind::Plain,
                                    bundle: None,
                                },
                                after: None,
                            }),
                            _ => {}
                        }
                    }
                }
            };
            for _ in 0..200 {
                match rng.random_range(0..20) {
                    0..=5 => {
                        let actor = actors[rng.random_range(0..actors.len())];
                        let mut spec = task(2, seq);
                        seq += 1;
                        spec.resources = Resources::default();
                        spec.kind = TaskKind::ActorCall { actor };
                        submitted.entry(actor).or_default().push(spec.id);
                        head.handle(Event::FromDriver(2, DriverToHead::Submit(vec![spec])));
                    }
                    6..=14 => {
                        // A node runs the next thing it was sent.
                        let ids: Vec<NodeId> = nodes.keys().copied().collect();
                        let id = ids[rng.random_range(0..ids.len())];
                        if let Some(reply) = nodes.get_mut(&id).unwrap().run_next(&mut ran) {
                            head.handle(Event::FromNode(id, reply));
                        }
                    }
                    15 | 16 => {
                        // An actor's process crashes.
                        let living: Vec<(NodeId, ActorId)> = nodes
                            .iter()
                            .flat_map(|(id, n)| n.actors.iter().map(|a| (*id, *a)))
                            .collect();
                        if living.is_empty() {
                            continue;
                        }
                        let (id, actor) = living[rng.random_range(0..living.len())];
                        nodes.get_mut(&id).unwrap().actors.remove(&actor);
                        head.handle(Event::FromNode(
                            id,
                            NodeToHead::ActorDied {
                                actor,
                                why: "crash".into(),
                            },
                        ));
                    }
                    17 => {
                        let actor = actors[rng.random_range(0..actors.len())];
                        head.handle(Event::FromDriver(
                            2,
                            DriverToHead::KillActor {
                                actor,
                                no_restart: rng.random(),
                            },
                        ));
                    }
                    18 if nodes.len() > 1 => {
                        let ids: Vec<NodeId> = nodes.keys().copied().collect();
                        let id = ids[rng.random_range(0..ids.len())];
                        nodes.remove(&id);
                        head.handle(Event::NodeLeft(id, "gone".into()));
                    }
                    _ => {
                        nodes.insert(next_node, sim_node(&mut head, next_node, 2.0));
                        next_node += 1;
                    }
                }
                step(&mut head, &mut nodes);
            }
            // Run everything sent until nothing moves; then kill every actor.
            for round in 0..2 {
                if round == 1 {
                    for a in &actors {
                        head.handle(Event::FromDriver(
                            2,
                            DriverToHead::KillActor {
                                actor: *a,
                                no_restart: true,
                            },
                        ));
                    }
                    step(&mut head, &mut nodes);
                }
                loop {
                    let mut moved = false;
                    let ids: Vec<NodeId> = nodes.keys().copied().collect();
                    for id in ids {
                        while let Some(reply) = nodes.get_mut(&id).unwrap().run_next(&mut ran) {
                            moved = true;
                            head.handle(Event::FromNode(id, reply));
                        }
                    }
                    step(&mut head, &mut nodes);
                    if !moved {
                        break;
                    }
                }
            }
            while let Ok(m) = drx.try_recv() {
                if let HeadToDriver::Done(v) = m {
                    for (id, o) in v {
                        answers.entry(id).or_default().push(o.is_ok());
                    }
                }
            }
            for (actor, calls) in &submitted {
                for c in calls {
                    let a = answers.get(c).map(Vec::as_slice).unwrap_or(&[]);
                    assert_eq!(
                        a.len(),
                        1,
                        "seed {seed}: call {c:#x} of {actor:#x} got {a:?}"
                    );
                }
                // Ids grow in submission order: the calls that succeeded ran in it.
                let ok: Vec<TaskId> = ran
                    .get(actor)
                    .map(|r| r.iter().copied().filter(|c| answers[c][0]).collect())
                    .unwrap_or_default();
                assert!(ok.windows(2).all(|w| w[0] < w[1]), "seed {seed}: {ok:?}");
            }
            for id in nodes.keys() {
                assert_eq!(
                    head.sched.node_available(*id),
                    head.sched.node_total(*id),
                    "seed {seed}: node {id} still holds resources of dead actors"
                );
            }
            assert!(head
                .actors
                .view()
                .iter()
                .all(|a| a.state == ActorState::Dead));
        }
    }

    /// Time is given to the head: a node heard from within the timeout stays, a silent
    /// one is declared dead at the next tick and its task runs elsewhere.
    /// The core alone, no channels: what it is given in, what it asks the shell to do.
    #[test]
    fn the_core_answers_queries_sends_work_and_forgets_silent_nodes_only_as_effects() {
        let mut core = HeadState {
            heartbeat_timeout: HeartbeatTimeout(Duration::from_secs(30)),
            ..HeadState::default()
        };
        core.handle(Input::NodeJoined {
            node: 1,
            reg: registration("127.0.0.2", 1.0),
            is_head: false,
        });
        core.handle(Input::DriverJoined {
            client: 2,
            binary: binary(),
            ip: Some("127.0.0.2".into()),
            job: None,
        });
        // Two askers wait for a second node; the second goes away before it joins.
        core.handle(Input::Query(Query::WaitForNodes { nodes: 2 }, 7));
        core.handle(Input::Query(Query::WaitForNodes { nodes: 2 }, 8));
        core.handle(Input::FromDriver(2, DriverToHead::Submit(vec![task(2, 1)])));
        core.dispatch();
        core.flush();
        let out = std::mem::take(&mut core.out);
        assert!(
            matches!(&out[..], [
                Effect::ToNode(1, HeadToNode::Job { client: 2, .. }),
                Effect::ToNode(1, HeadToNode::Run(run)),
            ] if run.len() == 1 && run[0].spec.id == object_id(2, 1)),
            "{out:?}"
        );
        core.advance(Duration::from_secs(10));
        core.handle(Input::Tick { gone: vec![8] });
        core.handle(Input::NodeJoined {
            node: 3,
            reg: registration("127.0.0.3", 1.0),
            is_head: false,
        });
        let answers: Vec<Ticket> = core
            .out
            .drain(..)
            .filter_map(|e| match e {
                Effect::Answer(t, view) => {
                    assert_eq!(view.nodes.len(), 2);
                    Some(t)
                }
                _ => None,
            })
            .collect();
        assert_eq!(answers, vec![7], "the asker that left is not answered");
        // Node 1 falls silent: declared dead, its connection forgotten, its task failed.
        core.advance(Duration::from_secs(45));
        core.handle(Input::FromNode(3, NodeToHead::Heartbeat));
        core.handle(Input::Tick { gone: vec![] });
        core.flush();
        let out = std::mem::take(&mut core.out);
        assert!(
            out.iter().any(|e| matches!(e, Effect::ForgetNode(1))),
            "{out:?}"
        );
        assert!(!out.iter().any(|e| matches!(e, Effect::ForgetNode(3))));
        let failed = out.iter().find_map(|e| match e {
            Effect::ToDriver(2, HeadToDriver::Done(v)) => {
                v.iter().find_map(|(_, o)| o.as_ref().err())
            }
            _ => None,
        });
        assert!(
            failed.is_some_and(|e| e.message.contains("has not answered for 30 s")),
            "{out:?}"
        );
    }

    /// A core with nodes 1 (127.0.0.2) and 3 (127.0.0.3), one CPU each, and driver 2 on
    /// node 1's host.
    fn two_node_core() -> HeadState {
        let mut core = HeadState::default();
        for (node, ip) in [(1, "127.0.0.2"), (3, "127.0.0.3")] {
            core.handle(Input::NodeJoined {
                node,
                reg: registration(ip, 1.0),
                is_head: false,
            });
        }
        core.handle(Input::DriverJoined {
            client: 2,
            binary: binary(),
            ip: Some("127.0.0.2".into()),
            job: None,
        });
        core
    }

    /// Places what can be placed; the effects since the last call.
    fn step(core: &mut HeadState) -> Vec<Effect> {
        core.dispatch();
        core.flush();
        std::mem::take(&mut core.out)
    }

    /// The tasks the effects start, and where.
    fn runs(out: &[Effect]) -> Vec<(NodeId, &Assignment)> {
        out.iter()
            .flat_map(|e| match e {
                Effect::ToNode(n, HeadToNode::Run(v)) => v.iter().map(|a| (*n, a)).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// A result kept on node 1 (127.0.0.2) or 3 (127.0.0.3) of `two_node_core`.
    fn stored_on(node: NodeId) -> Reply {
        Ok(Value::Stored(Location {
            node,
            addr: format!("127.0.0.{}:7000", if node == 1 { 2 } else { node }),
            size: 1 << 20,
        }))
    }

    fn frees(out: &[Effect]) -> Vec<(NodeId, Vec<ObjectId>)> {
        out.iter()
            .filter_map(|e| match e {
                Effect::ToNode(n, HeadToNode::Free(ids)) => Some((*n, ids.clone())),
                _ => None,
            })
            .collect()
    }

    /// `a`'s result is stored on node 1 (the driver's home), `busy` then keeps node 1's
    /// CPU, and `b`, taking `a`, runs on node 3, told a's place.
    fn a_on_node_1_taken_by_b_on_node_3(core: &mut HeadState) -> (TaskSpec, TaskSpec, TaskSpec) {
        let a = task(2, 1);
        core.handle(Input::FromDriver(2, DriverToHead::Submit(vec![a.clone()])));
        assert_eq!(runs(&step(core))[0].0, 1);
        core.handle(Input::FromNode(
            1,
            NodeToHead::Done(vec![(a.id, stored_on(1))]),
        ));
        let busy = task(2, 2);
        core.handle(Input::FromDriver(
            2,
            DriverToHead::Submit(vec![busy.clone()]),
        ));
        assert_eq!(runs(&step(core))[0].0, 1);
        let mut b = task(2, 3);
        b.args = vec![Arg::Ref(a.id)];
        core.handle(Input::FromDriver(2, DriverToHead::Submit(vec![b.clone()])));
        let out = step(core);
        assert!(
            matches!(runs(&out)[..], [(3, run)] if run.spec.id == b.id
                && matches!(run.spec.args[0], Arg::At(id, ref at) if id == a.id && at.node == 1)),
            "{out:?}"
        );
        (a, busy, b)
    }

    /// Node 3's answer for `b` when its worker could not read its argument from node 1.
    fn could_not_read(b: &TaskSpec) -> Input {
        let lost = TaskError {
            kind: ErrorKind::ObjectLost,
            function: b.function.clone(),
            location: None,
            message: "cannot read it from node 1".into(),
        };
        Input::FromNode(3, NodeToHead::Done(vec![(b.id, Err(lost))]))
    }

    #[test]
    fn stored_objects_go_by_location_and_are_freed_once_released_and_no_task_takes_them() {
        let mut core = two_node_core();
        let a = task(2, 1);
        core.handle(Input::FromDriver(2, DriverToHead::Submit(vec![a.clone()])));
        let out = step(&mut core);
        let (on, _) = runs(&out)[0];
        core.handle(Input::FromNode(
            on,
            NodeToHead::Done(vec![(a.id, stored_on(on))]),
        ));
        let out = step(&mut core);
        assert!(
            out.iter()
                .any(|e| matches!(e, Effect::ToDriver(2, HeadToDriver::Done(v))
                if v[0] == (a.id, stored_on(on)))),
            "the driver learns where it is: {out:?}"
        );
        assert_eq!(
            core.view()
                .nodes
                .iter()
                .find(|n| n.id == on)
                .unwrap()
                .object_bytes,
            1 << 20
        );
        // A task taking it gets its location, not its bytes.
        let mut b = task(2, 2);
        b.args = vec![Arg::Ref(a.id)];
        core.handle(Input::FromDriver(2, DriverToHead::Submit(vec![b.clone()])));
        let out = step(&mut core);
        let (b_on, run) = runs(&out)[0];
        assert!(matches!(&run.spec.args[..], [Arg::At(id, at)] if *id == a.id && at.node == on));
        // Released while b runs: kept for b, then freed on its node.
        core.handle(Input::FromDriver(2, DriverToHead::Release(vec![a.id])));
        assert!(frees(&step(&mut core)).is_empty());
        core.handle(Input::FromNode(
            b_on,
            NodeToHead::Done(vec![(b.id, Ok(Value::Inline(Bytes::from_static(b"ok"))))]),
        ));
        assert_eq!(frees(&step(&mut core)), vec![(on, vec![a.id])]);
        assert!(!core.objects.contains_key(&a.id) && core.pins.is_empty());
        // A driver's objects in stores are freed when it leaves.
        let c = task(2, 3);
        core.handle(Input::FromDriver(2, DriverToHead::Submit(vec![c.clone()])));
        let (c_on, _) = runs(&step(&mut core))[0];
        core.handle(Input::FromNode(
            c_on,
            NodeToHead::Done(vec![(c.id, stored_on(c_on))]),
        ));
        core.handle(Input::DriverLeft(2));
        assert_eq!(frees(&step(&mut core)), vec![(c_on, vec![c.id])]);
        assert!(core.lineage.is_empty());
    }

    #[test]
    fn a_stored_result_keeps_what_its_task_took_for_as_long_as_it_may_be_made_again() {
        let mut core = two_node_core();
        // b's result stays on node 3.
        let (a, busy, b) = a_on_node_1_taken_by_b_on_node_3(&mut core);
        core.handle(Input::FromNode(
            3,
            NodeToHead::Done(vec![(b.id, stored_on(3))]),
        ));
        // The driver drops a: b's lineage keeps it.
        core.handle(Input::FromDriver(2, DriverToHead::Release(vec![a.id])));
        assert!(frees(&step(&mut core)).is_empty());
        // Node 3 dies: b is made again from a, on node 1 once it has room.
        core.handle(Input::NodeLeft(3, "killed".into()));
        step(&mut core);
        let ok = Ok(Value::Inline(Bytes::from_static(b"ok")));
        core.handle(Input::FromNode(1, NodeToHead::Done(vec![(busy.id, ok)])));
        let out = step(&mut core);
        assert!(
            matches!(runs(&out)[..], [(1, run)] if run.spec.id == b.id
                && matches!(run.spec.args[0], Arg::At(id, ref at) if id == a.id && at.node == 1)),
            "{out:?}"
        );
        core.handle(Input::FromNode(
            1,
            NodeToHead::Done(vec![(b.id, stored_on(1))]),
        ));
        assert!(
            frees(&step(&mut core)).is_empty(),
            "a stays while b's lineage may need it"
        );
        // b dropped: its lineage goes, and a with it.
        core.handle(Input::FromDriver(2, DriverToHead::Release(vec![b.id])));
        let mut freed = frees(&step(&mut core));
        freed.sort();
        assert_eq!(freed, vec![(1, vec![a.id]), (1, vec![b.id])]);
        assert!(core.pins.is_empty() && core.lineage.is_empty() && core.released.is_empty());
    }

    #[test]
    fn a_released_object_being_made_again_for_a_task_that_takes_it_is_not_dropped() {
        let mut core = two_node_core();
        let (a, _, b) = a_on_node_1_taken_by_b_on_node_3(&mut core);
        // Released while b takes it; then its node dies and b cannot read it.
        core.handle(Input::FromDriver(2, DriverToHead::Release(vec![a.id])));
        core.handle(Input::NodeLeft(1, "killed".into()));
        core.handle(could_not_read(&b));
        let out = step(&mut core);
        assert!(
            matches!(runs(&out)[..], [(3, run)] if run.spec.id == a.id),
            "a is made again: {out:?}"
        );
        core.handle(Input::FromNode(
            3,
            NodeToHead::Done(vec![(a.id, stored_on(3))]),
        ));
        let out = step(&mut core);
        assert!(
            matches!(runs(&out)[..], [(3, run)] if run.spec.id == b.id),
            "then b runs: {out:?}"
        );
        let ok = Ok(Value::Inline(Bytes::from_static(b"ok")));
        core.handle(Input::FromNode(3, NodeToHead::Done(vec![(b.id, ok)])));
        assert_eq!(
            frees(&step(&mut core)),
            vec![(3, vec![a.id])],
            "and a goes after b"
        );
    }

    #[test]
    fn a_node_may_only_say_an_object_is_on_its_own_object_server() {
        let mut core = two_node_core();
        let a = task(2, 1);
        core.handle(Input::FromDriver(2, DriverToHead::Submit(vec![a.clone()])));
        let (on, _) = runs(&step(&mut core))[0];
        let elsewhere = Ok(Value::Stored(Location {
            node: on,
            addr: "192.0.2.7:7000".into(),
            size: 1,
        }));
        core.handle(Input::FromNode(
            on,
            NodeToHead::Done(vec![(a.id, elsewhere)]),
        ));
        let out = step(&mut core);
        assert!(
            out.iter().any(|e| matches!(e, Effect::ToDriver(2, HeadToDriver::Done(v))
                if matches!(&v[0], (id, Err(e)) if *id == a.id && e.message.contains("not its own")))),
            "{out:?}"
        );
        // Nor may a driver place a put on a host that is not the node's.
        let put = object_id(2, 9);
        let at = Location {
            node: 1,
            addr: "192.0.2.7:7000".into(),
            size: 1,
        };
        core.handle(Input::FromDriver(2, DriverToHead::PutAt { id: put, at }));
        assert!(!core.objects.contains_key(&put));
    }

    #[test]
    fn a_dead_nodes_results_are_rebuilt_by_their_task_and_its_puts_are_lost() {
        let mut core = two_node_core();
        let (a, _, b) = a_on_node_1_taken_by_b_on_node_3(&mut core);
        let put = object_id(2, 50);
        let at = match stored_on(1) {
            Ok(Value::Stored(at)) => at,
            _ => unreachable!(),
        };
        core.handle(Input::FromDriver(2, DriverToHead::PutAt { id: put, at }));
        // Node 1 dies; b cannot read a. a runs again (on node 3, once b gave it back),
        // then b runs again and is told a's new place.
        core.handle(Input::NodeLeft(1, "killed".into()));
        core.handle(could_not_read(&b));
        let out = step(&mut core);
        let rerun = runs(&out);
        assert!(
            matches!(rerun[..], [(3, run)] if run.spec.id == a.id),
            "{out:?}"
        );
        core.handle(Input::FromNode(
            3,
            NodeToHead::Done(vec![(a.id, stored_on(3))]),
        ));
        let out = step(&mut core);
        assert!(
            matches!(runs(&out)[..], [(3, run)] if run.spec.id == b.id
                && matches!(run.spec.args[0], Arg::At(_, ref at) if at.node == 3)),
            "{out:?}"
        );
        assert!(
            out.iter()
                .any(|e| matches!(e, Effect::ToDriver(2, HeadToDriver::Done(v))
            if v.contains(&(a.id, stored_on(3))))),
            "the driver hears of a's new place"
        );
        // The put cannot be made again: asking for it says so.
        core.handle(Input::FromDriver(2, DriverToHead::Subscribe(vec![put])));
        let out = step(&mut core);
        let err = out.iter().find_map(|e| match e {
            Effect::ToDriver(2, HeadToDriver::Done(v)) => v.iter().find(|(id, _)| *id == put),
            _ => None,
        });
        assert!(
            matches!(err, Some((_, Err(e))) if e.kind == ErrorKind::ObjectLost
                && e.message.contains("cannot be rebuilt")),
            "{out:?}"
        );
    }

    /// The warnings among `out`, by driver.
    fn warnings(out: &[Effect]) -> Vec<(ClientId, &str)> {
        out.iter()
            .filter_map(|e| match e {
                Effect::ToDriver(c, HeadToDriver::Warning(w)) => Some((*c, w.as_str())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_driver_whose_waiting_tasks_only_a_lost_node_could_run_is_warned() {
        let mut core = two_node_core();
        // Node 5 is the only one with B; driver 4 ran a B task once, driver 2 has two
        // waiting for B (one running, one behind it) and one that needs a CPU only.
        let mut reg = registration("127.0.0.5", 1.0);
        reg.resources.custom = vec![("B".into(), 1.0)];
        core.handle(Input::NodeJoined {
            node: 5,
            reg,
            is_head: false,
        });
        core.handle(Input::DriverJoined {
            client: 4,
            binary: binary(),
            ip: None,
            job: None,
        });
        let needs_b = |client, seq| {
            let mut t = task(client, seq);
            t.resources.custom = vec![("B".into(), 1.0)];
            t.max_retries = 1;
            t
        };
        let once = needs_b(4, 1);
        core.handle(Input::FromDriver(
            4,
            DriverToHead::Submit(vec![once.clone()]),
        ));
        assert!(matches!(runs(&step(&mut core))[..], [(5, _)]));
        core.handle(Input::FromNode(
            5,
            NodeToHead::Done(vec![(once.id, Ok(Value::Inline(Bytes::new())))]),
        ));
        let (b1, b2, plain) = (needs_b(2, 1), needs_b(2, 2), task(2, 3));
        core.handle(Input::FromDriver(
            2,
            DriverToHead::Submit(vec![b1.clone(), b2.clone(), plain]),
        ));
        let out = step(&mut core);
        assert!(
            runs(&out)
                .iter()
                .any(|(n, a)| *n == 5 && a.spec.id == b1.id),
            "{out:?}"
        );
        assert!(warnings(&out).is_empty(), "B was feasible: {out:?}");
        // Node 5 dies: b1 is queued again (a retry left), b2 still waits; neither can run.
        core.handle(Input::NodeLeft(5, "killed".into()));
        let out = step(&mut core);
        let w = warnings(&out);
        assert!(
            matches!(w[..], [(2, w)] if w.contains("node 5 (127.0.0.5) left the cluster: 2 waiting tasks (m::f) ask for {1 CPU, 1 B}, which no node of the cluster has now")),
            "{out:?}"
        );
        // Told once: another B task of driver 2 is not announced again, while driver 4's
        // next one is (it was told B was fine, before).
        core.handle(Input::FromDriver(
            2,
            DriverToHead::Submit(vec![needs_b(2, 4)]),
        ));
        core.handle(Input::FromDriver(
            4,
            DriverToHead::Submit(vec![needs_b(4, 2)]),
        ));
        let out = step(&mut core);
        assert!(
            matches!(warnings(&out)[..], [(4, w)] if w.contains("asks for {1 CPU, 1 B}, which no node of the cluster has")),
            "{out:?}"
        );
        // A node with B joins: the tasks run, and nothing more is said.
        let mut reg = registration("127.0.0.6", 4.0);
        reg.resources.custom = vec![("B".into(), 4.0)];
        core.handle(Input::NodeJoined {
            node: 6,
            reg,
            is_head: false,
        });
        let out = step(&mut core);
        assert_eq!(
            runs(&out).iter().filter(|(n, _)| *n == 6).count(),
            4,
            "{out:?}"
        );
        assert!(warnings(&out).is_empty(), "{out:?}");
        // Losing a node no waiting task needs says nothing.
        core.handle(Input::NodeLeft(3, "killed".into()));
        assert!(warnings(&step(&mut core)).is_empty());
    }

    #[test]
    fn a_node_silent_past_the_timeout_is_declared_dead() {
        let mut head = Shell::new(HeadState {
            heartbeat_timeout: HeartbeatTimeout(Duration::from_secs(30)),
            ..HeadState::default()
        });
        let (_nrx, mut drx) = join_node_and_driver(&mut head, "127.0.0.5", 1.0, Some("127.0.0.5"));
        // Node 1 is the head's own node (never timed out) only for a local driver.
        let _other = sim_node(&mut head, 3, 1.0);
        head.handle(Event::FromDriver(2, DriverToHead::Submit(vec![task(2, 1)])));
        head.dispatch();
        // Its driver's home node: the one on its host.
        assert_eq!(head.sched.running_on(object_id(2, 1)), Some(1));
        head.advance(Duration::from_secs(20));
        head.handle(Event::FromNode(1, NodeToHead::Heartbeat));
        head.handle(Event::FromNode(3, NodeToHead::Heartbeat));
        head.advance(Duration::from_secs(45));
        head.handle(Event::FromNode(3, NodeToHead::Heartbeat));
        head.handle(Event::Tick);
        // Node 1 was last heard at 20 s: 25 s ago, within the timeout.
        assert_eq!(head.view().nodes.iter().filter(|n| n.alive).count(), 2);
        head.advance(Duration::from_secs(60));
        head.handle(Event::FromNode(3, NodeToHead::Heartbeat));
        head.handle(Event::Tick);
        let alive: Vec<NodeId> = head
            .view()
            .nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| n.id)
            .collect();
        assert_eq!(alive, vec![3], "node 1 was silent for 40 s");
        head.dispatch();
        head.flush();
        // Its task (no retries) failed with the node's silence as the cause.
        let err = std::iter::from_fn(|| drx.try_recv().ok())
            .find_map(|m| match m {
                HeadToDriver::Done(v) => v.into_iter().find_map(|(_, o)| o.err()),
                _ => None,
            })
            .expect("the task failed");
        assert!(err.message.contains("has not answered for 30 s"), "{err}");
    }

    /// A simulated worker process of [`generated_nested_tasks_on_the_head_and_a_node_core_run_once_each`].
    #[derive(Default)]
    struct SimWorker {
        connected: bool,
        /// Tasks the node sent, in order, not yet started (the first runs next).
        inbox: VecDeque<TaskId>,
        /// The task it runs, and whether it waits in a `get` (its CPU lent).
        current: Option<(TaskId, bool)>,
        /// It said it blocked and reads nothing else until the node's `Revoked`.
        awaiting_revoke: bool,
        /// What it said to the node, not yet read there.
        to_node: VecDeque<WorkerToNode>,
    }

    /// The head's core and a real node core joined by queues that deliver late and in
    /// bursts, with workers that block in `get`, unblock and finish in any order, as
    /// nested tasks do: the head pipelines short tasks and takes them back when a task
    /// blocks, while its messages and the node's cross. Every task starts on one worker
    /// once, its driver gets one answer, and everything ends. (Before the node dropped
    /// what was sent behind a revoked task, this failed within a few seeds.)
    #[test]
    fn generated_nested_tasks_on_the_head_and_a_node_core_run_once_each() {
        use crate::node_core::{Effect as NodeEffect, Input as NodeInput, NodeCore};
        let (mut blocks, mut pipelined) = (0, 0);
        for seed in 0..150u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut head = HeadState {
                sched: Scheduler::with_pipelining(PIPELINING),
                ..HeadState::default()
            };
            head.handle(Input::NodeJoined {
                node: 1,
                reg: registration("127.0.0.2", 2.0),
                is_head: false,
            });
            head.handle(Input::DriverJoined {
                client: 2,
                binary: binary(),
                ip: Some("127.0.0.2".into()),
                job: None,
            });
            let mut node = NodeCore::new(
                1,
                "127.0.0.2".into(),
                vec![],
                ResourceSet::new(2.0, 0.0, 0.0),
                "127.0.0.2:7000".into(),
                None,
            );
            let mut to_node: VecDeque<HeadToNode> = VecDeque::new();
            let mut to_head: VecDeque<NodeToHead> = VecDeque::new();
            let mut workers: BTreeMap<u64, SimWorker> = BTreeMap::new();
            let mut started: HashSet<TaskId> = HashSet::new();
            let mut answers: HashMap<TaskId, u32> = HashMap::new();
            let (mut next, mut now) = (1u64, 0u64);
            let total = 120;
            for round in 0..20_000 {
                if next <= total && rng.random_bool(0.3) {
                    let burst: Vec<TaskSpec> = (0..rng.random_range(1..6))
                        .map(|i| task(2, next + i))
                        .filter(|t| t.id <= object_id(2, total))
                        .collect();
                    next += burst.len() as u64;
                    head.handle(Input::FromDriver(2, DriverToHead::Submit(burst)));
                }
                // Messages between head and node arrive late, a few at a time.
                for _ in 0..rng.random_range(0..4) {
                    if let Some(m) = to_head.pop_front() {
                        head.handle(Input::FromNode(1, m));
                    }
                }
                now += rng.random_range(20..300);
                head.advance(Duration::from_micros(now));
                head.dispatch();
                head.flush();
                for e in std::mem::take(&mut head.out) {
                    match e {
                        Effect::ToNode(1, m) => {
                            if let HeadToNode::Run(v) = &m {
                                pipelined += v.iter().filter(|a| a.after.is_some()).count();
                            }
                            to_node.push_back(m);
                        }
                        Effect::ToDriver(2, HeadToDriver::Done(v)) => {
                            for (t, r) in v {
                                assert!(r.is_ok(), "seed {seed}: {r:?}");
                                *answers.entry(t).or_default() += 1;
                            }
                        }
                        _ => {}
                    }
                }
                for _ in 0..rng.random_range(0..4) {
                    if let Some(m) = to_node.pop_front() {
                        node.on_head_message(m);
                    }
                }
                // Each worker acts, and what it said reaches the node in its order.
                let ids: Vec<u64> = workers.keys().copied().collect();
                for w in ids {
                    let sw = workers.get_mut(&w).unwrap();
                    if !sw.connected {
                        sw.connected = true;
                        node.handle(NodeInput::WorkerConnected(w));
                        continue;
                    }
                    if rng.random_bool(0.5) && !sw.awaiting_revoke {
                        match sw.current {
                            None => {
                                if let Some(t) = sw.inbox.pop_front() {
                                    assert!(started.insert(t), "seed {seed}: {t:#x} ran twice");
                                    sw.current = Some((t, false));
                                }
                            }
                            Some((t, false)) => {
                                if rng.random_bool(0.3) {
                                    blocks += 1;
                                    sw.current = Some((t, true));
                                    sw.awaiting_revoke = true;
                                    sw.to_node.push_back(WorkerToNode::Blocked { task: t });
                                } else {
                                    sw.current = None;
                                    sw.to_node.push_back(WorkerToNode::Done {
                                        task: t,
                                        outcome: Ok(Bytes::new()),
                                    });
                                }
                            }
                            Some((t, true)) => {
                                sw.current = Some((t, false));
                                sw.to_node.push_back(WorkerToNode::Unblocked { task: t });
                            }
                        }
                    }
                    if rng.random_bool(0.6) {
                        if let Some(m) = sw.to_node.pop_front() {
                            node.handle(NodeInput::FromWorker(w, m));
                        }
                    }
                }
                node.try_start();
                node.flush();
                for e in std::mem::take(&mut node.out) {
                    match e {
                        NodeEffect::ToHead(m) => to_head.push_back(m),
                        NodeEffect::Spawn { worker, .. } => {
                            node.handle(NodeInput::WorkerStarted(worker, Some(worker as u32)));
                            workers.insert(worker, SimWorker::default());
                        }
                        NodeEffect::ToWorker(w, NodeToWorker::Run(t)) => {
                            workers.get_mut(&w).unwrap().inbox.push_back(t.spec.id);
                        }
                        NodeEffect::ToWorker(w, NodeToWorker::Revoked { tasks }) => {
                            let sw = workers.get_mut(&w).unwrap();
                            assert!(sw.awaiting_revoke, "seed {seed}: an unasked revoke");
                            sw.awaiting_revoke = false;
                            sw.inbox.retain(|t| !tasks.contains(t));
                        }
                        NodeEffect::Kill(w) => {
                            let sw = workers.remove(&w).unwrap();
                            assert!(sw.current.is_none(), "seed {seed}: a busy worker killed");
                            node.handle(NodeInput::WorkerExited(w, "killed".into()));
                        }
                        NodeEffect::LocateBinary(client, b) => {
                            node.handle(NodeInput::BinaryReady(client, Ok(b.path.into())))
                        }
                        _ => {}
                    }
                }
                let quiet = to_head.is_empty()
                    && to_node.is_empty()
                    && workers
                        .values()
                        .all(|w| w.current.is_none() && w.to_node.is_empty());
                if next > total && answers.len() as u64 == total && quiet {
                    break;
                }
                assert!(
                    round < 19_999,
                    "seed {seed}: stuck with {} of {total} answered",
                    answers.len()
                );
            }
            for seq in 1..=total {
                let t = object_id(2, seq);
                assert_eq!(
                    answers.get(&t),
                    Some(&1),
                    "seed {seed}: task {seq} answered {:?} times",
                    answers.get(&t)
                );
            }
        }
        assert!(
            blocks > 2_000 && pipelined > 2_000,
            "{blocks} blocks, {pipelined} pipelined"
        );
    }
}
