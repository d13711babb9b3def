//! The node agent: runs the tasks the head assigns to this host in worker processes (the
//! driver's own executable in worker mode), with a local resource ledger choosing GPU ids.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use sunray_proto::{
    auth, BinaryChunk, BinaryInfo, CallerToNode, ClientId, HeadToNode, HelloReply, NodeId,
    NodeRegistration, NodeToCaller, NodeToHead, NodeToWorker, ProgramKind, Role, WorkerToNode,
};
use sunray_sched::ResourceSet;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::node_core::{Effect, Input, NodeCore, Prestart, UNADOPTED};
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
    CallerConnected(u64, mpsc::UnboundedSender<NodeToCaller>),
    FromCaller(u64, CallerToNode),
    CallerLeft(u64),
}

/// The node agent's I/O: processes, sockets, the object store; every decision is the
/// core's (`node_core.rs`).
struct Shell {
    core: NodeCore,
    cfg: NodeConfig,
    to_head: mpsc::UnboundedSender<NodeToHead>,
    events: mpsc::UnboundedSender<Ev>,
    procs: HashMap<u64, Proc>,
    /// Each started worker's one-time secret, until it says hello with it.
    secrets: WorkerSecrets,
    /// Direct callers' connections.
    callers: HashMap<u64, mpsc::UnboundedSender<NodeToCaller>>,
    /// Large results and task `put`s kept here (see `objects`), and where it serves them.
    store: crate::objects::Store,
    store_addr: String,
    store_server: tokio::task::JoinHandle<()>,
}

/// The secret each worker was handed at its start, by worker id: the worker socket
/// admits a worker that shows its own (the cluster token never reaches workers).
type WorkerSecrets = Arc<std::sync::Mutex<HashMap<u64, String>>>;

/// A worker process as the shell knows it.
struct Proc {
    pid: Option<u32>,
    /// Its connection, once it connected.
    tx: Option<mpsc::UnboundedSender<NodeToWorker>>,
    /// The driver it prints for, read by its output's readers (a prestarted worker
    /// changes driver).
    log_client: Arc<AtomicU32>,
}

/// Runs the node agent until the head goes away or asks it to shut down.
pub async fn run(cfg: NodeConfig, link: NodeLink) -> Result<(), Error> {
    let sock = cfg.session.worker_socket();
    std::fs::remove_file(&sock).ok();
    let listener = UnixListener::bind(&sock)
        .map_err(|e| Error::io(format!("cannot listen on {}", sock.display()), e))?;
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let secrets = WorkerSecrets::default();
    let accept_tx = ev_tx.clone();
    let accept_secrets = secrets.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = accept_tx.clone();
            let secrets = accept_secrets.clone();
            tokio::spawn(async move { serve_worker(stream, secrets, tx).await });
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
    let calls_tx = ev_tx.clone();
    let next_caller = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let tcp_callers = next_caller.clone();
    let calls: crate::objects::CallsHook = Arc::new(move |io| {
        let conn = tcp_callers.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve_caller(io, conn, calls_tx.clone()));
    });
    let store_server = tokio::spawn(crate::objects::serve(
        objects,
        store.clone(),
        cfg.token.clone(),
        calls,
    ));
    // Callers on this host reach its actors over a Unix socket (faster than loopback).
    let calls_path = cfg.session.calls_socket();
    std::fs::remove_file(&calls_path).ok();
    let local_calls = UnixListener::bind(&calls_path)
        .map_err(|e| Error::io(format!("cannot listen on {}", calls_path.display()), e))?;
    tokio::spawn(serve_local_callers(
        local_calls,
        cfg.token.clone(),
        link.node_id,
        next_caller.clone(),
        ev_tx.clone(),
    ));
    let _ = link.to_head.send(NodeToHead::ObjectServer {
        addr: store_addr.clone(),
        calls_socket: calls_path.to_string_lossy().into_owned(),
    });
    let cpus = cfg.total.cpu_f64().ceil() as usize;
    let prestart = std::env::var(env::PRESTART_PYTHON_PATH)
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
        });
    let mut core = NodeCore::new(
        link.node_id,
        cfg.ip.clone(),
        cfg.gpu_ids.clone(),
        cfg.total.clone(),
        store_addr.clone(),
        prestart,
    );
    if let Ok(v) = std::env::var(env::MAX_BLOCKED_WORKERS) {
        match v.trim().parse() {
            Ok(n) => core.set_max_blocked(n),
            Err(_) => warn!(
                "{}={v:?} is not a number of workers: the default ({}) applies",
                env::MAX_BLOCKED_WORKERS,
                crate::node_core::default_max_blocked(cfg.total.cpu_f64().ceil() as usize)
            ),
        }
    }
    let mut agent = Shell {
        core,
        cfg,
        to_head: link.to_head,
        events: ev_tx,
        procs: HashMap::new(),
        secrets,
        callers: HashMap::new(),
        store,
        store_addr,
        store_server,
    };
    agent.core.top_up_prestarted();
    agent.carry_out();
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
                    info!("head connection closed; node {} stops", agent.core.id());
                    break;
                }
                let mut stop = false;
                for m in head_batch.drain(..) {
                    stop |= agent.core.on_head_message(m);
                }
                if stop {
                    info!("head asked node {} to shut down", agent.core.id());
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
        agent.core.try_start();
        agent.core.flush();
        agent.carry_out();
    }
    agent.kill_all();
    Ok(())
}

async fn serve_worker(
    stream: tokio::net::UnixStream,
    secrets: WorkerSecrets,
    events: mpsc::UnboundedSender<Ev>,
) {
    let mut io = wire::framed(stream);
    let first = match io.next().await {
        Some(Ok(f)) => f,
        _ => return,
    };
    let shown = match sunray_proto::decode::<WorkerToNode>(&first) {
        Ok(WorkerToNode::Hello { worker_id, secret }) => Some((worker_id, secret)),
        _ => None,
    };
    // A secret admits its worker once; a wrong guess does not use it up.
    let admitted = shown.and_then(|(id, secret)| {
        let mut secrets = secrets.lock().unwrap();
        let right = secrets
            .get(&id)
            .is_some_and(|s| wire::token_matches(&secret, s));
        right.then(|| secrets.remove(&id)).flatten().map(|_| id)
    });
    let Some(worker_id) = admitted else {
        warn!("refused a worker connection: bad hello or secret");
        return;
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

/// Direct callers on this host (the Unix socket of `Session::calls_socket`): the
/// cluster's handshake, then as over TCP. The welcome names the node, so that a caller
/// knows it reached the node the head named.
async fn serve_local_callers(
    listener: UnixListener,
    token: String,
    node: NodeId,
    next: Arc<std::sync::atomic::AtomicU64>,
    events: mpsc::UnboundedSender<Ev>,
) {
    use futures_util::SinkExt;
    while let Ok((stream, _)) = listener.accept().await {
        let (token, next, events) = (token.clone(), next.clone(), events.clone());
        tokio::spawn(async move {
            let mut io = wire::framed(stream);
            let refused = match wire::accept_hello(&mut io, &token).await {
                Ok(h) if matches!(h.role, Role::Calls) => None,
                Ok(_) => {
                    Some("this is a node's socket for direct calls: only Role::Calls".to_string())
                }
                Err(e) => Some(e),
            };
            if let Some(reason) = refused {
                warn!("refused a local caller: {reason}");
                let _ = io
                    .send(sunray_proto::encode(&HelloReply::Refused { reason }))
                    .await;
                return;
            }
            let welcome = sunray_proto::encode(&HelloReply::Welcome {
                client_id: 0,
                node_id: Some(node),
                upload_binary: false,
            });
            if io.send(welcome).await.is_err() {
                return;
            }
            wire::authenticated(&mut io);
            let conn = next.fetch_add(1, Ordering::Relaxed);
            serve_caller(io, conn, events).await;
        });
    }
}

/// A direct caller's connection: its calls go to the core, the core's answers to it.
async fn serve_caller<S>(io: wire::FramedIo<S>, conn: u64, events: mpsc::UnboundedSender<Ev>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (sink, stream) = io.split();
    let (tx, rx) = mpsc::unbounded_channel::<NodeToCaller>();
    if events.send(Ev::CallerConnected(conn, tx)).is_err() {
        return;
    }
    tokio::spawn(wire::pump_out(sink, rx));
    let why = wire::pump_in(stream, |m: CallerToNode| {
        events.send(Ev::FromCaller(conn, m)).is_ok()
    })
    .await;
    debug!("direct caller {conn} left: {why}");
    let _ = events.send(Ev::CallerLeft(conn));
}

impl Shell {
    /// Hands what the connections and processes reported to the core.
    fn on_event(&mut self, e: Ev) {
        let input = match e {
            Ev::Output(o) => Input::Output {
                worker: o.worker,
                client: o.client,
                origin: o.origin,
                line: o.line,
            },
            Ev::WorkerConnected(id, tx) => match self.procs.get_mut(&id) {
                Some(p) => {
                    p.tx = Some(tx);
                    Input::WorkerConnected(id)
                }
                None => return,
            },
            Ev::FromWorker(id, m) => Input::FromWorker(id, m),
            Ev::WorkerExited(id, status) => {
                self.procs.remove(&id);
                self.secrets.lock().unwrap().remove(&id);
                Input::WorkerExited(id, status)
            }
            Ev::BinaryReady(client, r) => Input::BinaryReady(client, r),
            Ev::CallerConnected(conn, tx) => {
                self.callers.insert(conn, tx);
                return;
            }
            Ev::FromCaller(conn, m) => Input::FromCaller(conn, m),
            Ev::CallerLeft(conn) => {
                self.callers.remove(&conn);
                Input::CallerLeft(conn)
            }
        };
        self.core.handle(input);
    }

    /// Carries out the core's effects, in order (starting a process may fail, which
    /// the core hears of at once and may answer with more).
    fn carry_out(&mut self) {
        loop {
            let effects = std::mem::take(&mut self.core.out);
            if effects.is_empty() {
                return;
            }
            for e in effects {
                match e {
                    Effect::ToHead(m) => {
                        let _ = self.to_head.send(m);
                    }
                    Effect::ToCaller(conn, m) => {
                        if let Some(tx) = self.callers.get(&conn) {
                            let _ = tx.send(m);
                        }
                    }
                    Effect::ToWorker(id, mut m) => {
                        if let NodeToWorker::Adopt {
                            job, credential, ..
                        } = &mut m
                        {
                            *credential = auth::job_credential(&self.cfg.token, *job);
                        }
                        if let Some(tx) = self.procs.get(&id).and_then(|p| p.tx.as_ref()) {
                            let _ = tx.send(m);
                        }
                    }
                    Effect::Kill(id) => kill(self.procs.get(&id).and_then(|p| p.pid)),
                    Effect::LogFor(id, client) => {
                        if let Some(p) = self.procs.get(&id) {
                            p.log_client.store(client, Ordering::Relaxed);
                        }
                    }
                    Effect::Keep(id, data) => self.store.insert(id, data),
                    Effect::Free(ids) => self.store.free(&ids),
                    Effect::LocateBinary(client, binary) => {
                        let events = self.events.clone();
                        let head = self.cfg.head_address.clone();
                        let token = self.cfg.token.clone();
                        let bin_dir = self.cfg.session.bin_dir();
                        tokio::spawn(async move {
                            let r = locate_binary(&binary, &head, &token, bin_dir).await;
                            let _ = events.send(Ev::BinaryReady(client, r));
                        });
                    }
                    Effect::Spawn {
                        worker,
                        client,
                        path,
                        registry,
                        kind,
                        visible_gpus,
                    } => {
                        let input = match self.spawn(
                            worker,
                            client,
                            &path,
                            &registry,
                            &kind,
                            &visible_gpus,
                        ) {
                            Ok(pid) => Input::WorkerStarted(worker, pid),
                            Err(e) => {
                                Input::WorkerStartFailed(worker, format!("{}: {e}", path.display()))
                            }
                        };
                        self.core.handle(input);
                    }
                }
            }
        }
    }

    /// Starts worker `id`'s process; its output and its exit become events.
    fn spawn(
        &mut self,
        id: u64,
        client: ClientId,
        path: &std::path::Path,
        registry: &str,
        kind: &ProgramKind,
        visible_gpus: &[String],
    ) -> std::io::Result<Option<u32>> {
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
        // The worker's secrets go through a pipe it inherits as fd 3, never through its
        // environment (which every process a task starts would inherit, and a task may
        // print): its one-time secret for this node's socket, and its job's credential
        // (a prestarted worker gets that when adopted).
        let secret = crate::session::new_token();
        let credential = match client {
            UNADOPTED => String::new(),
            job => auth::job_credential(&self.cfg.token, job),
        };
        let pipe = secret_pipe(&format!("{secret}\n{credential}\n"))?;
        let pipe_fd = pipe.as_raw_fd();
        cmd.env(env::WORKER_SOCKET, self.cfg.session.worker_socket())
            .env(env::WORKER_ID, id.to_string())
            .env(env::WORKER_SECRET_FD, WORKER_SECRET_FD.to_string())
            .env(env::WORKER_REGISTRY, registry)
            .env(env::WORKER_HEAD, &self.cfg.head_address)
            .env(env::WORKER_STORE, &self.store_addr)
            .env("CUDA_VISIBLE_DEVICES", visible_gpus.join(","))
            .env_remove(env::ADDRESS)
            .env_remove(env::TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Workers die with their node agent, even when it is killed with SIGKILL.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // Only async-signal-safe calls here: the pipe becomes fd 3, open across
                // exec (dup2 clears close-on-exec; on the same fd it must be cleared).
                if pipe_fd == WORKER_SECRET_FD {
                    libc::fcntl(pipe_fd, libc::F_SETFD, 0);
                } else if libc::dup2(pipe_fd, WORKER_SECRET_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.secrets.lock().unwrap().insert(id, secret);
        let spawned = cmd.spawn();
        drop(pipe);
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                self.secrets.lock().unwrap().remove(&id);
                return Err(e);
            }
        };
        let pid = child.id();
        let log_client = Arc::new(AtomicU32::new(client));
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
            let client = log_client.clone();
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
        self.procs.insert(
            id,
            Proc {
                pid,
                tx: None,
                log_client,
            },
        );
        Ok(pid)
    }

    fn kill_all(&mut self) {
        for p in self.procs.values() {
            kill(p.pid);
        }
        self.store_server.abort();
        crate::objects::forget_local(&self.store_addr);
        self.cfg.session.remove();
    }
}

/// The descriptor a worker reads its start secrets from (see `Shell::spawn`).
const WORKER_SECRET_FD: i32 = 3;

/// A pipe already holding `text` (far below a pipe's capacity), written and closed:
/// its read end, close-on-exec until a child's `pre_exec` moves it to fd 3.
fn secret_pipe(text: &str) -> std::io::Result<OwnedFd> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just opened both descriptors for us alone.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    std::fs::File::from(write).write_all(text.as_bytes())?;
    if read.as_raw_fd() > 2 {
        return Ok(read);
    }
    // A process started with a closed stdin/out/err got the pipe there: the child's
    // stdio set-up would overwrite it before `pre_exec` moves it, so move it up first.
    let moved = unsafe { libc::fcntl(read.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if moved < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fcntl just made `moved`, ours alone; `read` closes as it drops.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
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
