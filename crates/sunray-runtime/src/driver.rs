//! The driver's client: a blocking API (as Ray's) over a connection run by a background
//! tokio runtime. Results are pushed by the head as tasks finish, so `get` waits on a
//! condition variable, never polls.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use sunray_proto::{
    object_id, BinaryInfo, ClientId, ClusterView, DriverToHead, HeadToDriver, HelloReply, ObjectId,
    Outcome, Query, Role, TaskError, TaskId, TaskSpec,
};
use tokio::sync::mpsc;

use crate::{detect, head, wire, Error};

/// The process-wide runtime that runs connections (and an embedded cluster, if any):
/// one thread, so that messages between the connection tasks (and the head and node
/// actors of an embedded cluster) never cross threads.
pub fn runtime() -> &'static tokio::runtime::Handle {
    static RT: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime can be built");
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("sunray-rt".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .expect("a thread can be started");
        handle
    })
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum GetError {
    #[error("{0}")]
    Task(TaskError),
    #[error("timed out waiting for the result")]
    Timeout,
    #[error("connection to the cluster lost: {0}")]
    Disconnected(String),
}

/// What [`Client::task_events`] delivers.
#[derive(Debug)]
pub enum TaskEvent {
    /// A running task sent `data` and waits for [`Client::reply_to_task`].
    Message { task: TaskId, data: Bytes },
    /// The result (value or error) of this object arrived; `get` returns at once.
    Finished(ObjectId),
    /// The connection to the head is gone; no more events will come.
    Disconnected(String),
}

#[derive(Default)]
struct State {
    results: HashMap<ObjectId, Outcome>,
    disconnected: Option<String>,
    replies: VecDeque<ClusterView>,
    events: Option<std_mpsc::Sender<TaskEvent>>,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

/// Where the driver's messages go: straight onto the head's socket, or into the
/// embedded head's channel.
enum Outbox {
    Socket(Mutex<std::net::TcpStream>),
    Channel(mpsc::UnboundedSender<DriverToHead>),
}

impl Outbox {
    fn send(&self, m: DriverToHead) -> Result<(), String> {
        match self {
            Outbox::Socket(s) => {
                let body = sunray_proto::encode(&m);
                wire::write_frame_blocking(&mut s.lock().unwrap(), &body).map_err(|e| e.to_string())
            }
            Outbox::Channel(tx) => tx.send(m).map_err(|_| "embedded head stopped".to_string()),
        }
    }
}

pub struct Client {
    client_id: ClientId,
    tx: Outbox,
    shared: Arc<Shared>,
    seq: AtomicU64,
    query_lock: Mutex<()>,
    /// Keeps an embedded cluster alive as long as the client.
    _embedded: Option<crate::local::StartedHead>,
}

const SELF_EXE: &str = "/proc/self/exe";

/// Describes the running executable, so that nodes can start it as a worker.
pub fn this_binary(registry_hash: &str) -> Result<BinaryInfo, Error> {
    let path =
        std::env::current_exe().map_err(|e| Error::io("cannot locate this executable", e))?;
    // /proc/self/exe reads the running image even if its file was replaced or deleted.
    let (hash, size) = detect::hash_file(std::path::Path::new(SELF_EXE))
        .map_err(|e| Error::io(format!("cannot read {SELF_EXE}"), e))?;
    let path = path.to_string_lossy();
    Ok(BinaryInfo {
        path: path.trim_end_matches(" (deleted)").to_string(),
        hash,
        size,
        registry_hash: registry_hash.to_string(),
    })
}

impl Client {
    /// Connects to the head at `address`.
    pub fn connect(address: &str, token: &str, binary: BinaryInfo) -> Result<Client, Error> {
        let rt = runtime();
        let role = Role::Driver {
            binary: binary.clone(),
            hostname: detect::hostname(),
            pid: std::process::id(),
        };
        let (io, reply) = rt.block_on(wire::connect(address, None, token, role))?;
        let HelloReply::Welcome {
            client_id,
            upload_binary,
            ..
        } = reply
        else {
            unreachable!("refusals are errors")
        };
        // Frames are written by the calling thread (no hop to the runtime thread);
        // the runtime thread only reads.
        let parts = io.into_parts();
        let std_stream = parts
            .io
            .into_std()
            .map_err(|e| Error::io("cannot take over the connection", e))?;
        let writer = std_stream
            .try_clone()
            .map_err(|e| Error::io("cannot clone the connection", e))?;
        let reader = {
            let _guard = rt.enter();
            tokio::net::TcpStream::from_std(std_stream)
                .map_err(|e| Error::io("cannot register the connection", e))?
        };
        let mut new_parts = tokio_util::codec::FramedParts::new::<Bytes>(reader, wire::codec());
        new_parts.read_buf = parts.read_buf;
        let stream = tokio_util::codec::Framed::from_parts(new_parts);
        let outbox = Outbox::Socket(Mutex::new(writer));
        if upload_binary {
            let data = std::fs::read(SELF_EXE)
                .map_err(|e| Error::io(format!("cannot read {SELF_EXE}"), e))?;
            outbox
                .send(DriverToHead::UploadBinary {
                    hash: binary.hash.clone(),
                    data: Bytes::from(data),
                })
                .map_err(|e| Error::Disconnected {
                    address: address.into(),
                    reason: e.to_string(),
                })?;
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
        });
        let s2 = shared.clone();
        let addr = address.to_string();
        rt.spawn(async move {
            let why = wire::pump_in(stream, |m: HeadToDriver| {
                on_message(&s2, m);
                true
            })
            .await;
            let mut st = s2.state.lock().unwrap();
            let why = format!("head at {addr}: {why}");
            if let Some(tx) = &st.events {
                let _ = tx.send(TaskEvent::Disconnected(why.clone()));
            }
            st.disconnected = Some(why);
            s2.cond.notify_all();
        });
        Ok(Client::new(client_id, outbox, shared, None))
    }

    /// Starts an embedded cluster in this process and connects to it.
    pub fn embedded(opts: crate::local::HeadOptions, binary: BinaryInfo) -> Result<Client, Error> {
        let rt = runtime();
        rt.block_on(async {
            let started = crate::local::start_head(opts).await?;
            let shared_head = started.shared.clone();
            let client_id = shared_head.next_id();
            let (tx, mut rx) = mpsc::unbounded_channel::<DriverToHead>();
            let (htx, mut hrx) = mpsc::unbounded_channel::<HeadToDriver>();
            let _ = shared_head.events.send(head::Event::DriverJoined {
                client: client_id,
                binary,
                tx: htx,
                ip: None,
            });
            let events = shared_head.events.clone();
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(64);
                while rx.recv_many(&mut batch, 64).await > 0 {
                    for m in batch.drain(..) {
                        let _ = events.send(head::Event::FromDriver(client_id, m));
                    }
                }
                let _ = events.send(head::Event::DriverLeft(client_id));
            });
            let shared = Arc::new(Shared {
                state: Mutex::new(State::default()),
                cond: Condvar::new(),
            });
            let s2 = shared.clone();
            tokio::spawn(async move {
                while let Some(m) = hrx.recv().await {
                    on_message(&s2, m);
                }
            });
            Ok(Client::new(
                client_id,
                Outbox::Channel(tx),
                shared,
                Some(started),
            ))
        })
    }

    fn new(
        client_id: ClientId,
        tx: Outbox,
        shared: Arc<Shared>,
        embedded: Option<crate::local::StartedHead>,
    ) -> Client {
        Client {
            client_id,
            tx,
            shared,
            seq: AtomicU64::new(1),
            query_lock: Mutex::new(()),
            _embedded: embedded,
        }
    }

    pub fn client_id(&self) -> ClientId {
        self.client_id
    }

    /// The address of the embedded cluster's head, if this client started one.
    pub fn embedded_address(&self) -> Option<&str> {
        self._embedded.as_ref().map(|h| h.address.as_str())
    }

    pub fn new_object_id(&self) -> ObjectId {
        object_id(self.client_id, self.seq.fetch_add(1, Ordering::Relaxed))
    }

    fn send(&self, m: DriverToHead) -> Result<(), GetError> {
        self.tx
            .send(m)
            .map_err(|e| GetError::Disconnected(format!("cannot send to the head: {e}")))
    }

    pub fn submit(&self, spec: TaskSpec) -> Result<(), GetError> {
        self.send(DriverToHead::Submit(vec![spec]))
    }

    pub fn put(&self, data: Bytes) -> Result<ObjectId, GetError> {
        let id = self.new_object_id();
        self.shared
            .state
            .lock()
            .unwrap()
            .results
            .insert(id, Ok(data.clone()));
        self.send(DriverToHead::Put { id, data })?;
        Ok(id)
    }

    /// Forgets an object here and at the head.
    pub fn release(&self, id: ObjectId) {
        self.shared.state.lock().unwrap().results.remove(&id);
        let _ = self.tx.send(DriverToHead::Release(vec![id]));
    }

    /// Waits (on the condition variable the reader notifies) until `check` gives an
    /// answer, the connection is lost, or the deadline passes (then `on_timeout`).
    fn wait_for<R>(
        &self,
        timeout: Option<Duration>,
        mut check: impl FnMut(&State) -> Option<R>,
        on_timeout: impl FnOnce(&State) -> Result<R, GetError>,
    ) -> Result<R, GetError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.shared.state.lock().unwrap();
        loop {
            if let Some(r) = check(&st) {
                return Ok(r);
            }
            if let Some(why) = &st.disconnected {
                return Err(GetError::Disconnected(why.clone()));
            }
            st = match deadline {
                None => self.shared.cond.wait(st).unwrap(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return on_timeout(&st);
                    }
                    self.shared.cond.wait_timeout(st, d - now).unwrap().0
                }
            };
        }
    }

    /// Waits for an object's value.
    pub fn get(&self, id: ObjectId, timeout: Option<Duration>) -> Result<Bytes, GetError> {
        self.wait_for(
            timeout,
            |st| st.results.get(&id).cloned(),
            |_| Err(GetError::Timeout),
        )?
        .map_err(GetError::Task)
    }

    /// Waits until `num_returns` of `ids` are ready (or the timeout passes); returns a
    /// readiness flag per id.
    pub fn wait(
        &self,
        ids: &[ObjectId],
        num_returns: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<bool>, GetError> {
        let flags =
            |st: &State| -> Vec<bool> { ids.iter().map(|i| st.results.contains_key(i)).collect() };
        let want = num_returns.min(ids.len());
        self.wait_for(
            timeout,
            |st| {
                let f = flags(st);
                (f.iter().filter(|x| **x).count() >= want).then_some(f)
            },
            |st| Ok(flags(st)),
        )
    }

    /// Asks the head for the cluster's state.
    pub fn cluster_view(&self) -> Result<ClusterView, GetError> {
        let _q = self.query_lock.lock().unwrap();
        self.send(DriverToHead::Query(Query::Status))?;
        let mut st = self.shared.state.lock().unwrap();
        loop {
            if let Some(v) = st.replies.pop_front() {
                return Ok(v);
            }
            if let Some(why) = &st.disconnected {
                return Err(GetError::Disconnected(why.clone()));
            }
            st = self.shared.cond.wait(st).unwrap();
        }
    }

    /// Events of this driver's tasks, on one channel so that a controller (Tune) blocks
    /// on one receiver: messages tasks send (see `worker::ask_owner`) and results that
    /// arrived. Replaces any earlier receiver.
    pub fn task_events(&self) -> std_mpsc::Receiver<TaskEvent> {
        let (tx, rx) = std_mpsc::channel();
        let mut st = self.shared.state.lock().unwrap();
        if let Some(why) = &st.disconnected {
            let _ = tx.send(TaskEvent::Disconnected(why.clone()));
        }
        st.events = Some(tx);
        rx
    }

    pub fn reply_to_task(&self, task: TaskId, data: Bytes) -> Result<(), GetError> {
        self.send(DriverToHead::TaskReply { task, data })
    }
}

fn on_message(shared: &Shared, m: HeadToDriver) {
    match m {
        HeadToDriver::Done(results) => {
            let mut st = shared.state.lock().unwrap();
            if let Some(tx) = &st.events {
                for (id, _) in &results {
                    let _ = tx.send(TaskEvent::Finished(*id));
                }
            }
            st.results.extend(results);
            shared.cond.notify_all();
        }
        HeadToDriver::QueryReply(v) => {
            let mut st = shared.state.lock().unwrap();
            st.replies.push_back(v);
            shared.cond.notify_all();
        }
        HeadToDriver::TaskMessage { task, data } => {
            let st = shared.state.lock().unwrap();
            match &st.events {
                Some(tx) => {
                    let _ = tx.send(TaskEvent::Message { task, data });
                }
                None => tracing::warn!("message from task {task:#x} with nobody listening"),
            }
        }
        HeadToDriver::Log { origin, lines } => {
            use std::io::Write;
            let out = std::io::stdout();
            let mut out = out.lock();
            for l in lines {
                let _ = writeln!(out, "({origin}) {l}");
            }
        }
        HeadToDriver::Warning(w) => eprintln!("sunray: warning: {w}"),
    }
}

/// A one-shot query connection (for `sunray status` and `stop`).
pub async fn query(address: &str, token: &str, q: Query) -> Result<ClusterView, Error> {
    use futures_util::SinkExt;
    let (mut io, _) = wire::connect(address, None, token, Role::Query).await?;
    io.send(sunray_proto::encode(&DriverToHead::Query(q)))
        .await
        .map_err(|e| Error::Disconnected {
            address: address.into(),
            reason: e.to_string(),
        })?;
    match io.next().await {
        Some(Ok(frame)) => match sunray_proto::decode::<HeadToDriver>(&frame) {
            Ok(HeadToDriver::QueryReply(v)) => Ok(v),
            _ => Err(Error::Protocol {
                peer: address.into(),
                message: "unexpected reply to a query".into(),
            }),
        },
        _ => Err(Error::Disconnected {
            address: address.into(),
            reason: "closed before answering".into(),
        }),
    }
}
