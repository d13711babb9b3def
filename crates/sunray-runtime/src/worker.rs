//! The worker loop: a process started by a node agent runs tasks one at a time over a
//! Unix socket. Plain blocking I/O: a worker needs no async runtime.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use sunray_proto::{
    decode, encode, ActorId, Arg, ErrorKind, NodeToWorker, TaskError, TaskId, TaskKind, TaskSpec,
    WorkerTask, WorkerToNode,
};

use crate::env;

/// Runs a task (a registered function by name, an actor's constructor or one of its
/// methods: see `spec.kind`) with its serialised arguments. `Sync`: a threaded actor
/// runs several calls at once.
pub type Invoke<'a> =
    &'a (dyn Fn(&TaskSpec, &[Bytes]) -> Result<Bytes, (ErrorKind, String)> + Sync);

/// What a running task may ask about itself.
#[derive(Debug, Clone, Default)]
pub struct TaskContext {
    pub task_id: TaskId,
    pub node_id: u32,
    pub node_ip: String,
    pub gpu_ids: Vec<String>,
    pub function: String,
    /// The actor this worker serves, in its constructor and its methods.
    pub actor: Option<ActorId>,
    /// The job (driver) the task belongs to.
    pub job: u32,
}

static CONTEXT: Mutex<Option<TaskContext>> = Mutex::new(None);

thread_local! {
    /// The call a thread of a threaded actor runs (it overrides [`CONTEXT`] there).
    static CALL: std::cell::RefCell<Option<TaskContext>> = const { std::cell::RefCell::new(None) };
}

/// What a prestarted worker does when a driver adopts it (see [`NodeToWorker::Adopt`]).
pub type AdoptHook = Box<dyn Fn(&[String], &str) + Send + Sync>;
static ADOPT: std::sync::OnceLock<AdoptHook> = std::sync::OnceLock::new();

/// Sets what this worker does when a driver adopts it (the Python worker sets its path).
pub fn on_adopt(hook: AdoptHook) {
    let _ = ADOPT.set(hook);
}
static CONN: Mutex<Option<Conn>> = Mutex::new(None);

/// Is this process a worker started by a node agent?
pub fn is_worker() -> bool {
    std::env::var_os(env::WORKER_SOCKET).is_some()
}

/// The context of the task running in this process, if any.
pub fn current_task() -> Option<TaskContext> {
    CALL.with(|c| c.borrow().clone())
        .or_else(|| CONTEXT.lock().unwrap().clone())
}

/// The connection to the node agent. One `read` takes every frame that has arrived (the
/// next task is often there already), kept in `buf[start..end]` until asked for.
struct Conn {
    s: UnixStream,
    /// Every frame to the node goes through this one lock (the threads of a threaded
    /// actor write their results while the task loop reads).
    w: std::sync::Arc<Mutex<UnixStream>>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Tasks that arrived while a running task waited for its driver's answer (the node
    /// sends pipelined tasks ahead).
    set_aside: VecDeque<Vec<u8>>,
}

impl Conn {
    fn new(s: UnixStream) -> Conn {
        let w = s.try_clone().expect("a Unix socket can be cloned");
        Conn {
            s,
            w: std::sync::Arc::new(Mutex::new(w)),
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            set_aside: VecDeque::new(),
        }
    }

    /// The next frame for the task loop: one set aside, else one read.
    fn next_frame(&mut self) -> std::io::Result<Vec<u8>> {
        match self.set_aside.pop_front() {
            Some(f) => Ok(f),
            None => self.read_frame(),
        }
    }

    fn write_frame(&mut self, body: &[u8]) -> std::io::Result<()> {
        write_frame_to(&self.w, body)
    }

    fn read_frame(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            let have = &self.buf[self.start..self.end];
            let need = match have.get(..4) {
                Some(len) => 4 + u32::from_be_bytes(len.try_into().unwrap()) as usize,
                None => 4,
            };
            if have.len() >= need {
                let body = have[4..need].to_vec();
                self.start += need;
                return Ok(body);
            }
            // Room for the whole frame after what is buffered.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() < need {
                self.buf.resize(need, 0);
            }
            wait_readable(&self.s);
            match self.s.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn write_frame_to(w: &Mutex<UnixStream>, body: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(body);
    w.lock().unwrap().write_all(&buf)
}

/// Sleeps until `s` has data. A thread blocked in `read` on a Unix stream socket is
/// also woken each time the node reads what this worker wrote (the kernel's "write
/// space" wake-up); `poll` for input only ignores those, saving a wake-up per task on
/// both sides.
fn wait_readable(s: &UnixStream) {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // Interrupted or failed: the read that follows reports what is wrong.
    unsafe { libc::poll(&mut pfd, 1, -1) };
}

/// Sends `msg` to the driver that owns the running task and waits for its answer
/// (the channel Tune's `report` uses).
pub fn ask_owner<Q: Serialize, A: DeserializeOwned>(msg: &Q) -> Result<A, String> {
    let task = current_task().ok_or("not inside a sunray task")?.task_id;
    let mut guard = CONN.lock().unwrap();
    let conn = guard.as_mut().ok_or("not inside a sunray worker")?;
    let data = Bytes::from(postcard::to_allocvec(msg).map_err(|e| e.to_string())?);
    conn.write_frame(&encode(&WorkerToNode::Message { task, data }))
        .map_err(|e| e.to_string())?;
    loop {
        let body = conn
            .read_frame()
            .map_err(|e| format!("node connection lost: {e}"))?;
        match decode::<NodeToWorker>(&body).map_err(|e| e.to_string())? {
            NodeToWorker::Reply { task: t, data } if t == task => {
                return postcard::from_bytes(&data).map_err(|e| e.to_string())
            }
            NodeToWorker::Run(_) | NodeToWorker::Adopt { .. } => conn.set_aside.push_back(body),
            NodeToWorker::Reply { .. } | NodeToWorker::Revoked { .. } => {}
        }
    }
}

/// Is this code inside a task that may lend its CPU while it waits (not an actor's
/// method: an actor keeps what it holds)?
pub fn in_plain_task() -> bool {
    current_task().is_some_and(|t| t.actor.is_none())
}

/// Runs `wait` (a `get` or `wait` that will block) with the running task's CPU lent to
/// other tasks, as Ray does: a task waiting for tasks it submitted must not hold the
/// CPU they need. Tasks the node had sent ahead to this worker are given back first.
pub fn while_blocked<R>(wait: impl FnOnce() -> R) -> R {
    let blocked = block_begin();
    let r = wait();
    block_end(blocked);
    r
}

/// The first half of [`while_blocked`], for callers whose wait is a loop of their own
/// (the Python front end checks for Ctrl-C between slices): the task that lent its
/// CPU, to give to [`block_end`].
pub fn block_begin() -> Option<TaskId> {
    let task = current_task()
        .filter(|t| t.actor.is_none())
        .map(|t| t.task_id)?;
    let mut guard = CONN.lock().unwrap();
    let conn = guard.as_mut()?;
    block(conn, task).ok().map(|()| task)
}

/// The task runs again: it takes its CPU back.
pub fn block_end(blocked: Option<TaskId>) {
    let Some(task) = blocked else { return };
    if let Some(conn) = CONN.lock().unwrap().as_mut() {
        let _ = conn.write_frame(&encode(&WorkerToNode::Unblocked { task }));
    }
}

/// Tells the node that `task` blocks and takes in its answer: what it revoked.
fn block(conn: &mut Conn, task: TaskId) -> Result<(), String> {
    conn.write_frame(&encode(&WorkerToNode::Blocked { task }))
        .map_err(|e| e.to_string())?;
    loop {
        let body = conn.read_frame().map_err(|e| e.to_string())?;
        match decode::<NodeToWorker>(&body).map_err(|e| e.to_string())? {
            NodeToWorker::Revoked { tasks } => {
                // Every task the node sent ahead came before this answer (it sends no
                // more to a blocked worker), so all of them are set aside by now: the
                // revoked ones are dropped here, once. (Keeping their ids to skip later
                // would skip the same task sent again, as a fresh one, after the block.)
                conn.set_aside.retain(|f| match decode::<NodeToWorker>(f) {
                    Ok(NodeToWorker::Run(t)) => !tasks.contains(&t.spec.id),
                    _ => true,
                });
                return Ok(());
            }
            NodeToWorker::Run(_) | NodeToWorker::Adopt { .. } => conn.set_aside.push_back(body),
            NodeToWorker::Reply { .. } => {}
        }
    }
}

/// What a worker needs to submit tasks itself: the head's address, its job's
/// credential (never the cluster token: see `sunray_proto::auth`), and the job its tasks
/// belong to. None outside a task.
pub fn head_of_this_worker() -> Option<(String, String, u32)> {
    let job = current_task()?.job;
    let head = std::env::var(env::WORKER_HEAD).ok()?;
    Some((head, worker_credential(), job))
}

/// The credential of the job this worker serves: what it presents to heads and object
/// servers. Handed over by the node (the start pipe, or `Adopt`), never in the
/// environment, so that a process a task starts does not inherit it.
static CREDENTIAL: Mutex<String> = Mutex::new(String::new());

fn worker_credential() -> String {
    CREDENTIAL.lock().unwrap().clone()
}

/// Reads what the node handed this worker at its start: the pipe named by
/// `SUNRAY_WORKER_SECRET_FD` holds its one-time secret (for the node's hello) and, when
/// it starts for a job, the job's credential, one per line. The pipe is closed after.
fn read_start_secrets() -> Result<(String, String), String> {
    use std::os::fd::FromRawFd;
    let fd: i32 = std::env::var(env::WORKER_SECRET_FD)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|fd| *fd > 2)
        .ok_or("no secret pipe from the node (SUNRAY_WORKER_SECRET_FD)")?;
    // A process a task started inherits the variable but not the pipe: whatever its fd
    // 3 is, it is not ours to read or close.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let is_pipe =
        unsafe { libc::fstat(fd, &mut st) } == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO;
    if !is_pipe {
        return Err(format!(
            "fd {fd} (SUNRAY_WORKER_SECRET_FD) is not the node's secret pipe: this process was not started by a node agent as a worker"
        ));
    }
    // SAFETY: the node started this process with `fd` open for it alone; it is read
    // once, here, and closed when `pipe` drops.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut text = String::new();
    pipe.read_to_string(&mut text)
        .map_err(|e| format!("cannot read the node's secret pipe: {e}"))?;
    let mut lines = text.lines();
    let secret = lines.next().unwrap_or_default().to_string();
    Ok((secret, lines.next().unwrap_or_default().to_string()))
}

/// Runs tasks until the node agent closes the connection, then exits the process.
pub fn run(invoke: Invoke, registry_hash: &str) -> ! {
    let code = match serve(invoke, registry_hash) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sunray worker: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn serve(invoke: Invoke, registry_hash: &str) -> Result<(), String> {
    let path = std::env::var(env::WORKER_SOCKET).map_err(|_| "no worker socket")?;
    let worker_id: u64 = std::env::var(env::WORKER_ID)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("no worker id")?;
    let (secret, credential) = read_start_secrets()?;
    *CREDENTIAL.lock().unwrap() = credential;
    let expected_registry = std::env::var(env::WORKER_REGISTRY).unwrap_or_default();
    let s = UnixStream::connect(&path).map_err(|e| format!("cannot connect to {path}: {e}"))?;
    let mut conn = Conn::new(s);
    conn.write_frame(&encode(&WorkerToNode::Hello { worker_id, secret }))
        .map_err(|e| e.to_string())?;
    let mismatch = (!expected_registry.is_empty() && expected_registry != registry_hash).then(|| {
        format!(
            "this worker's executable registers other remote functions than the driver's (registry {registry_hash} vs {expected_registry}): run the same build everywhere"
        )
    });
    let writer = conn.w.clone();
    // Shared with `ask_owner`, which a running task calls.
    *CONN.lock().unwrap() = Some(conn);
    std::thread::scope(|scope| {
        // A threaded actor's calls go to this many threads (set by its creation).
        let mut threads: Option<std::sync::mpsc::Sender<WorkerTask>> = None;
        let mut concurrency = 1;
        loop {
            let next = CONN
                .lock()
                .unwrap()
                .as_mut()
                .expect("set above")
                .next_frame();
            let body = match next {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(format!("node connection: {e}")),
            };
            let task = match decode::<NodeToWorker>(&body) {
                Ok(NodeToWorker::Run(t)) => t,
                Ok(NodeToWorker::Reply { .. } | NodeToWorker::Revoked { .. }) => continue,
                Ok(NodeToWorker::Adopt {
                    sys_path,
                    cwd,
                    credential,
                    ..
                }) => {
                    *CREDENTIAL.lock().unwrap() = credential;
                    if let Some(hook) = ADOPT.get() {
                        hook(&sys_path, &cwd);
                    }
                    continue;
                }
                Err(e) => return Err(format!("malformed message from node: {e}")),
            };
            if let TaskKind::CreateActor(o) = &task.spec.kind {
                concurrency = o.max_concurrency.max(1);
            }
            if concurrency > 1 && matches!(task.spec.kind, TaskKind::ActorCall { .. }) {
                let tx = threads.get_or_insert_with(|| {
                    let (tx, rx) = std::sync::mpsc::channel::<WorkerTask>();
                    let rx = std::sync::Arc::new(Mutex::new(rx));
                    for _ in 0..concurrency {
                        let (rx, writer) = (rx.clone(), writer.clone());
                        scope.spawn(move || loop {
                            let Ok(t) = rx.lock().unwrap().recv() else {
                                return;
                            };
                            let id = t.spec.id;
                            let outcome = run_one(invoke, t, true);
                            let msg = encode(&WorkerToNode::Done { task: id, outcome });
                            if write_frame_to(&writer, &msg).is_err() {
                                return;
                            }
                        });
                    }
                    tx
                });
                let _ = tx.send(task);
                continue;
            }
            let id = task.spec.id;
            let outcome = match &mismatch {
                Some(m) => Err(error(&task, ErrorKind::FunctionNotFound, m.clone())),
                None => run_one(invoke, task, false),
            };
            let msg = encode(&WorkerToNode::Done { task: id, outcome });
            write_frame_to(&writer, &msg).map_err(|e| e.to_string())?;
        }
    })
}

fn error(task: &WorkerTask, kind: ErrorKind, message: String) -> TaskError {
    TaskError {
        kind,
        function: task.spec.function.clone(),
        location: Some(format!(
            "node {} ({}), pid {}",
            task.node_id,
            task.node_ip,
            std::process::id()
        )),
        message,
    }
}

/// Runs one task; `on_thread`: a threaded actor's call, whose context is its thread's.
fn run_one(invoke: Invoke, task: WorkerTask, on_thread: bool) -> Result<Bytes, TaskError> {
    let mut args = Vec::with_capacity(task.spec.args.len());
    for a in &task.spec.args {
        match a {
            Arg::Value(b) => args.push(b.clone()),
            Arg::At(id, at) => match crate::objects::fetch(at, &worker_credential(), *id) {
                Ok(b) => args.push(b),
                Err(why) => {
                    return Err(error(
                        &task,
                        ErrorKind::ObjectLost,
                        format!("argument {id:#x}: {why}"),
                    ))
                }
            },
            Arg::Ref(id) => {
                return Err(error(
                    &task,
                    ErrorKind::ObjectLost,
                    format!("argument {id:#x} was not resolved"),
                ))
            }
        }
    }
    let ctx = TaskContext {
        task_id: task.spec.id,
        node_id: task.node_id,
        node_ip: task.node_ip.clone(),
        gpu_ids: task.gpu_ids.clone(),
        function: task.spec.function.clone(),
        job: task.job,
        actor: match task.spec.kind {
            TaskKind::Plain => None,
            TaskKind::CreateActor(_) => Some(task.spec.id),
            TaskKind::ActorCall { actor } => Some(actor),
        },
    };
    match on_thread {
        true => CALL.with(|c| *c.borrow_mut() = Some(ctx)),
        false => *CONTEXT.lock().unwrap() = Some(ctx),
    }
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| invoke(&task.spec, &args)));
    match on_thread {
        true => CALL.with(|c| *c.borrow_mut() = None),
        false => *CONTEXT.lock().unwrap() = None,
    }
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err((kind, msg))) => Err(error(&task, kind, msg)),
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".into());
            Err(error(
                &task,
                ErrorKind::Application,
                format!("panicked: {msg}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: TaskId) -> Vec<u8> {
        let spec = TaskSpec {
            id,
            function: "m::f".into(),
            args: vec![],
            resources: Default::default(),
            max_retries: 0,
            kind: TaskKind::Plain,
            bundle: None,
        };
        encode(&NodeToWorker::Run(WorkerTask {
            spec,
            job: 1,
            node_id: 1,
            node_ip: "127.0.0.1".into(),
            gpu_ids: vec![],
        }))
        .to_vec()
    }

    /// A blocked task's worker drops the tasks the node sent ahead and revoked; the same
    /// task sent again later (placed afresh) runs.
    #[test]
    fn revoked_tasks_are_dropped_once_and_a_task_sent_again_runs() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut node = Conn::new(a);
        let mut worker = Conn::new(b);
        node.write_frame(&run(7)).unwrap();
        node.write_frame(&run(8)).unwrap();
        node.write_frame(&encode(&NodeToWorker::Revoked { tasks: vec![7, 8] }))
            .unwrap();
        node.write_frame(&run(7)).unwrap();
        block(&mut worker, 5).unwrap();
        // The worker told the node it blocks.
        let told: WorkerToNode = decode(&node.read_frame().unwrap()).unwrap();
        assert!(matches!(told, WorkerToNode::Blocked { task: 5 }));
        assert!(worker.set_aside.is_empty(), "the revoked tasks are gone");
        match decode::<NodeToWorker>(&worker.next_frame().unwrap()).unwrap() {
            NodeToWorker::Run(t) => assert_eq!(t.spec.id, 7, "sent again: it runs"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn frames_come_back_whole_however_the_bytes_arrive() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut node = Conn::new(a);
        let mut worker = Conn::new(b);
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        // Two frames in one write, then a frame larger than the buffer written in pieces
        // from another thread while the worker reads.
        let mut two = Vec::new();
        for body in [&b"run 1"[..], &b"run 2"[..]] {
            two.extend_from_slice(&(body.len() as u32).to_be_bytes());
            two.extend_from_slice(body);
        }
        node.s.write_all(&two).unwrap();
        let big2 = big.clone();
        let writer = std::thread::spawn(move || {
            let mut frame = (big2.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&big2);
            for piece in frame.chunks(7_000) {
                node.s.write_all(piece).unwrap();
            }
            node.write_frame(b"last").unwrap();
        });
        assert_eq!(worker.read_frame().unwrap(), b"run 1");
        assert_eq!(worker.read_frame().unwrap(), b"run 2");
        assert_eq!(worker.read_frame().unwrap(), big);
        assert_eq!(worker.read_frame().unwrap(), b"last");
        writer.join().unwrap();
        assert_eq!(
            worker.read_frame().unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof
        );
    }
}
