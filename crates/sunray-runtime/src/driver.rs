//! The driver's client: a blocking API (as Ray's). Results are pushed by the head as tasks
//! finish. The calling thread writes its messages itself; a thread waiting in `get` reads
//! the connection itself when no other thread does, else a background thread reads it
//! (see `ReadHalf`). On the head's host the connection is its Unix socket, elsewhere
//! TCP; for an embedded cluster, channels into the head running on this process's
//! runtime thread.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use sunray_proto::{
    object_id, object_owner, BinaryInfo, ClientId, ClusterView, DriverToHead, ErrorKind,
    HeadToDriver, HelloReply, Location, ObjectId, Query, Reply, Role, TaskError, TaskId, TaskSpec,
    Value,
};
use tokio::sync::mpsc;

use crate::{detect, head, session, wire, Error};

mod direct;

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
    /// A value too large for one message (see `wire::max_message_bytes`).
    #[error("{0}")]
    TooLarge(String),
}

/// Refuses a message carrying `bytes` of values beyond the largest message.
fn check_size(bytes: usize, what: &str) -> Result<(), GetError> {
    let max = wire::max_message_bytes();
    // Room for the message's own fields.
    if bytes + 4096 <= max {
        return Ok(());
    }
    Err(GetError::TooLarge(format!(
        "{what} of {bytes} bytes is larger than the largest message sunray sends ({} MiB): set {}=<MiB> for the head, its nodes and this driver to raise it",
        max >> 20,
        crate::env::MAX_MESSAGE_MB
    )))
}

/// How often `get` asks the head again for an object its node would not give.
const FETCH_TRIES: u32 = 4;

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

/// A result as the driver keeps it: 32 bytes (errors and locations, rarer, are boxed),
/// since a program may hold a million refs.
type Stored = Result<Bytes, Box<Elsewhere>>;

/// A result whose bytes are not here: an error, or a large object in a node's store.
#[derive(Clone)]
enum Elsewhere {
    Failed(TaskError),
    At(Location),
}

fn kept(r: Reply) -> Stored {
    match r {
        Ok(Value::Inline(b)) => Ok(b),
        Ok(Value::Stored(at)) => Err(Box::new(Elsewhere::At(at))),
        Err(e) => Err(Box::new(Elsewhere::Failed(e))),
    }
}

struct State {
    results: crate::results::Results<Stored>,
    /// Released before their result came: it is dropped when it comes.
    tombstones: std::collections::HashSet<ObjectId>,
    disconnected: Option<String>,
    replies: VecDeque<ClusterView>,
    events: Option<std_mpsc::Sender<TaskEvent>>,
    /// The head's connection, while no thread reads it (never, for an embedded cluster).
    reader: Option<ReadHalf>,
    /// Threads waiting for a result while another thread reads.
    waiting: usize,
    /// The background reader holds `reader`, and was/was not asked to give it up.
    background_reading: bool,
    handover_asked: bool,
    /// Calls sent straight to actors' nodes (see `direct`).
    direct: direct::Calls,
}

impl State {
    fn disconnect(&mut self, why: String) {
        if let Some(tx) = &self.events {
            let _ = tx.send(TaskEvent::Disconnected(why.clone()));
        }
        self.disconnected = Some(why);
    }
}

struct Shared {
    client: ClientId,
    state: Mutex<State>,
    /// Results arrived, or `reader` came back.
    cond: Condvar,
    /// `reader` came back with nobody waiting: the background reader may take it.
    background: Condvar,
    /// Written to make the background reader give `reader` up (it polls this too).
    handover: Option<std::os::unix::net::UnixStream>,
    /// Told how many tasks finished, so that it sends tasks it held back (weak: the
    /// client owns it, and the connection closes when the client goes).
    sender: OnceLock<std::sync::Weak<Sender>>,
    task_handler: OnceLock<TaskMessageHandler>,
    /// Written to make whoever reads return and take up new direct connections; the
    /// read end is polled with the connections. None for an embedded cluster (whose
    /// driver calls actors through the head in its own process).
    kick: Option<(
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    )>,
}

impl Shared {
    fn kick(&self) {
        if let Some((w, _)) = &self.kick {
            let _ = (&*w).write(&[1]);
        }
    }

    fn kick_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.kick.as_ref().map(|(_, r)| r.as_raw_fd())
    }

    /// Reads the kicks so far (the socket is non-blocking).
    fn drain_kicks(&self) {
        if let Some((_, r)) = &self.kick {
            let mut b = [0u8; 64];
            while matches!(std::io::Read::read(&mut &*r, &mut b), Ok(n) if n > 0) {}
        }
    }

    fn is_mine(&self, id: ObjectId) -> bool {
        object_owner(id) == self.client
    }

    fn new(client: ClientId, handover: Option<std::os::unix::net::UnixStream>) -> Shared {
        let kick = handover.as_ref().and_then(|_| {
            let (w, r) = std::os::unix::net::UnixStream::pair().ok()?;
            w.set_nonblocking(true).ok()?;
            r.set_nonblocking(true).ok()?;
            Some((w, r))
        });
        Shared {
            kick,
            client,
            state: Mutex::new(State {
                results: crate::results::Results::new(client),
                tombstones: Default::default(),
                disconnected: None,
                replies: VecDeque::new(),
                events: None,
                reader: None,
                waiting: 0,
                background_reading: false,
                handover_asked: false,
                direct: Default::default(),
            }),
            cond: Condvar::new(),
            background: Condvar::new(),
            handover,
            sender: OnceLock::new(),
            task_handler: OnceLock::new(),
        }
    }
}

/// The read side of the head's connection. Whichever thread needs the next message reads
/// it: a thread waiting in `get`/`wait` reads the socket itself, so the kernel wakes it
/// directly when the answer arrives (a hand-off from a reader thread costs a wake-up,
/// about 15–20 µs of a 2-core VM's round trip); otherwise a background thread reads
/// (logs, task messages, results nobody waits for yet).
struct ReadHalf {
    sock: Box<dyn ReadFd>,
    buf: bytes::BytesMut,
    codec: tokio_util::codec::LengthDelimitedCodec,
    address: String,
    /// When the head was last heard from; it sends a heartbeat every second, so a long
    /// silence means it is gone or stopped (see `crate::heartbeat_timeout`).
    last_heard: Instant,
    /// Direct connections to actors' nodes, read along with the head's.
    direct: Vec<direct::Read>,
    /// The descriptors polled, reused.
    fds: Vec<std::os::fd::RawFd>,
}

/// A reader waits at most this long at a time, then checks that the head still talks.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

trait ReadFd: std::io::Read + std::os::fd::AsRawFd + Send {}
impl<T: std::io::Read + std::os::fd::AsRawFd + Send> ReadFd for T {}

/// How long a thread waiting for a result checks the socket before it sleeps. Waking a
/// sleeping thread costs 15–35 µs on a VM (the vCPU halts), a third of a round trip to a
/// local worker; a bounded spin (as MPI libraries do) skips it for short tasks and
/// costs at most this much CPU per wait for long ones. It yields between checks, so the
/// head or a worker sharing this CPU runs first.
const SPIN: Duration = Duration::from_micros(50);

/// [`poll_readable`] on `fds`, checking without sleeping for up to [`SPIN`] first.
fn spin_then_poll(fds: &[std::os::fd::RawFd], timeout: Option<Duration>) -> Vec<bool> {
    let start = Instant::now();
    let spin = timeout.map_or(SPIN, |t| t.min(SPIN));
    while start.elapsed() < spin {
        let ready = poll_readable(fds, Some(Duration::ZERO));
        if ready.contains(&true) {
            return ready;
        }
        std::thread::yield_now();
    }
    poll_readable(fds, timeout.map(|t| t.saturating_sub(start.elapsed())))
}

/// Waits until one of `fds` is readable (or closed) or `timeout` passes; which are.
fn poll_readable(fds: &[std::os::fd::RawFd], timeout: Option<Duration>) -> Vec<bool> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| {
        t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
    });
    // Interrupted: reported as nothing readable; callers loop.
    unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    pfds.iter().map(|p| p.revents != 0).collect()
}

/// Reads what a non-blocking socket has into `buf`: whether it closed, and how many
/// bytes came.
fn read_available(
    sock: &mut (impl std::io::Read + ?Sized),
    buf: &mut bytes::BytesMut,
) -> std::io::Result<(bool, usize)> {
    let mut got = 0;
    loop {
        buf.reserve(64 * 1024);
        let spare = buf.spare_capacity_mut();
        // SAFETY: read writes only initialised bytes into the spare capacity and
        // returns how many; those are then marked as part of the buffer.
        let spare =
            unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr() as *mut u8, spare.len()) };
        match sock.read(spare) {
            Ok(0) => return Ok((true, got)),
            Ok(n) => {
                unsafe { buf.set_len(buf.len() + n) };
                got += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok((false, got)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

impl ReadHalf {
    /// Handles the frames already buffered; else waits up to `timeout` for data (or for
    /// `also` to be readable), reads what is there and handles every complete frame.
    /// Err when the connection is gone.
    fn read_once(
        &mut self,
        shared: &Shared,
        timeout: Option<Duration>,
        also: Option<std::os::fd::RawFd>,
    ) -> Result<(), String> {
        if self.handle_buffered(shared)? > 0 {
            return Ok(());
        }
        // The head's connection, the direct ones, the kick, and `also`.
        let mut fds = std::mem::take(&mut self.fds);
        fds.clear();
        fds.push(self.sock.as_raw_fd());
        fds.extend(self.direct.iter().map(|d| d.fd()));
        let kick = shared.kick_fd();
        fds.extend(kick);
        fds.extend(also);
        let timeout = Some(timeout.map_or(LIVENESS_CHECK, |t| t.min(LIVENESS_CHECK)));
        let readiness = match also {
            Some(_) => poll_readable(&fds, timeout),
            None => spin_then_poll(&fds, timeout),
        };
        self.fds = fds;
        let n = self.direct.len();
        if readiness[1..=n].contains(&true) {
            let mut i = 0;
            self.direct.retain_mut(|d| {
                i += 1;
                if !readiness[i] {
                    return true;
                }
                match d.read_available(shared) {
                    Ok(()) => true,
                    Err(why) => {
                        d.lost(shared, &why);
                        false
                    }
                }
            });
        }
        if kick.is_some() && readiness[n + 1] {
            shared.drain_kicks();
        }
        let ready = readiness[0];
        if !ready {
            let limit = crate::heartbeat_timeout();
            if self.last_heard.elapsed() > limit {
                return Err(format!(
                    "head at {} has not answered for {} s (stopped, hung, or its host is down)",
                    self.address,
                    limit.as_secs_f64()
                ));
            }
            return Ok(());
        }
        let read = read_available(&mut *self.sock, &mut self.buf);
        if matches!(read, Ok((_, n)) if n > 0) {
            self.last_heard = Instant::now();
        }
        match read {
            Ok((false, _)) => self.handle_buffered(shared).map(|_| ()),
            Ok((true, _)) => {
                self.handle_buffered(shared)?;
                Err(format!("head at {}: connection closed", self.address))
            }
            Err(e) => Err(format!("head at {}: read error: {e}", self.address)),
        }
    }

    fn handle_buffered(&mut self, shared: &Shared) -> Result<usize, String> {
        use tokio_util::codec::Decoder;
        let mut n = 0;
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => match sunray_proto::decode::<HeadToDriver>(&frame) {
                    Ok(m) => {
                        on_message(shared, m);
                        n += 1;
                    }
                    Err(e) => {
                        return Err(format!("head at {}: malformed message: {e}", self.address))
                    }
                },
                Ok(None) => return Ok(n),
                Err(e) => return Err(format!("head at {}: malformed frame: {e}", self.address)),
            }
        }
    }
}

/// How often, at most, the background reader checks whether the connection is free
/// again (waiting threads hand it back without waking it, so that a loop of short
/// `get`s keeps reading it itself).
const BACKGROUND_NAP_MAX: Duration = Duration::from_millis(5);

/// Reads the head's connection whenever no waiting thread does, until it closes.
fn background_reader(shared: Arc<Shared>, mut wake: std::os::unix::net::UnixStream) {
    use std::os::fd::AsRawFd;
    loop {
        let mut st = shared.state.lock().unwrap();
        let mut nap = Duration::from_micros(500);
        let mut half = loop {
            if st.disconnected.is_some() {
                return;
            }
            if st.waiting == 0 {
                if let Some(h) = st.reader.take() {
                    break h;
                }
            }
            st = shared.background.wait_timeout(st, nap).unwrap().0;
            nap = (nap * 2).min(BACKGROUND_NAP_MAX);
        };
        half.direct.append(&mut st.direct.new_reads);
        st.background_reading = true;
        drop(st);
        let res = half.read_once(&shared, None, Some(wake.as_raw_fd()));
        let mut st = shared.state.lock().unwrap();
        if st.handover_asked {
            let mut b = [0u8; 16];
            let _ = std::io::Read::read(&mut wake, &mut b);
        }
        st.background_reading = false;
        st.handover_asked = false;
        match res {
            Ok(()) => st.reader = Some(half),
            Err(why) => st.disconnect(why),
        }
        shared.cond.notify_all();
    }
}

/// Where the driver's messages go: straight onto the head's socket, or into the
/// embedded head's channel.
enum Outbox {
    Socket(Mutex<Box<dyn BlockingWrite>>),
    Channel(mpsc::UnboundedSender<DriverToHead>),
}

impl Outbox {
    /// Closes the head's connection both ways (a reader then sees it end).
    fn close(&self) {
        if let Outbox::Socket(s) = self {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&**s.lock().unwrap());
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }

    fn send(&self, msgs: Vec<DriverToHead>) -> Result<(), String> {
        match self {
            Outbox::Socket(s) => {
                let bodies: Vec<_> = msgs.iter().map(sunray_proto::encode).collect();
                let bodies: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
                wire::write_frames_blocking(&mut **s.lock().unwrap(), &bodies)
                    .map_err(|e| e.to_string())
            }
            Outbox::Channel(tx) => msgs
                .into_iter()
                .try_for_each(|m| tx.send(m).map_err(|_| "embedded head stopped".to_string())),
        }
    }
}

/// Releases are sent with the next message (one write, one wake-up of the head, instead
/// of one each per dropped `ObjectRef`), before the driver blocks, when this many
/// pile up, or by the runtime thread's periodic flush.
const RELEASE_BATCH: usize = 1024;
const RELEASE_FLUSH: Duration = Duration::from_millis(50);

/// Most tasks a driver has at the head at once. Later ones wait here, as their encoded
/// bytes (about 50 per task), and go as results come back: the head's memory stays
/// bounded whatever a program submits, and the order of submission is kept.
pub const MAX_IN_FLIGHT: usize = 65_536;

/// Tasks sent and not finished, and those held back.
struct Window {
    limit: usize,
    in_flight: usize,
    held: Held,
}

/// What waits behind the window, in order: encoded `TaskSpec`s and releases of objects
/// (a release must not overtake a held task that names the object). Each record is a
/// `u32` tag-or-length (`RELEASE` for a release, then its 8-byte id; else the spec's
/// length, then the spec), in segments of `SEGMENT` bytes: memory follows what is held
/// (a doubling buffer would hold up to twice that), and each segment is freed once sent.
#[derive(Default)]
struct Held {
    segments: VecDeque<Vec<u8>>,
    /// Read position in the first segment.
    cursor: usize,
    len: usize,
}

const SEGMENT: usize = 1 << 20;
const RELEASE: u32 = u32::MAX;

/// A record taken from [`Held`].
#[derive(Debug, PartialEq)]
enum Popped {
    /// A spec, appended to the caller's buffer.
    Spec,
    Release(ObjectId),
}

impl Held {
    fn push_record(&mut self, tag: u32, body: &[u8]) {
        let need = 4 + body.len();
        if self
            .segments
            .back()
            .is_none_or(|s| s.len() + need > s.capacity())
        {
            self.segments
                .push_back(Vec::with_capacity(SEGMENT.max(need)));
        }
        let seg = self.segments.back_mut().expect("pushed above");
        seg.extend_from_slice(&tag.to_le_bytes());
        seg.extend_from_slice(body);
        self.len += 1;
    }

    fn push(&mut self, spec: &[u8]) {
        self.push_record(spec.len() as u32, spec);
    }

    fn push_release(&mut self, id: ObjectId) {
        self.push_record(RELEASE, &id.to_le_bytes());
    }

    /// The size of the next record's spec, if it is one.
    fn next_spec_len(&self) -> Option<usize> {
        let seg = self.segments.front()?;
        let tag = u32::from_le_bytes(seg[self.cursor..self.cursor + 4].try_into().ok()?);
        (tag != RELEASE).then_some(tag as usize)
    }

    /// Takes the oldest record; a spec is appended to `out`.
    fn pop_into(&mut self, out: &mut Vec<u8>) -> Option<Popped> {
        let seg = self.segments.front()?;
        let at = self.cursor;
        let tag = u32::from_le_bytes(seg[at..at + 4].try_into().expect("4 bytes"));
        let (popped, n) = if tag == RELEASE {
            let id = u64::from_le_bytes(seg[at + 4..at + 12].try_into().expect("8 bytes"));
            (Popped::Release(id), 8)
        } else {
            out.extend_from_slice(&seg[at + 4..at + 4 + tag as usize]);
            (Popped::Spec, tag as usize)
        };
        self.cursor += 4 + n;
        if self.cursor == seg.len() {
            self.segments.pop_front();
            self.cursor = 0;
        }
        self.len -= 1;
        Some(popped)
    }
}

struct Sender {
    outbox: Outbox,
    released: Mutex<Vec<ObjectId>>,
    window: Mutex<Window>,
}

/// The body of `DriverToHead::Submit` with `n` specs whose encodings are `specs`
/// back to back, as postcard writes it: the variant's index, the count, the elements.
fn submit_body(n: usize, specs: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(specs.len() + 11);
    out.push(0); // DriverToHead::Submit
    let mut v = n as u64;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(specs);
    Bytes::from(out)
}

impl Sender {
    fn new(outbox: Outbox, limit: usize) -> Sender {
        Sender {
            outbox,
            released: Mutex::new(Vec::new()),
            window: Mutex::new(Window {
                limit,
                in_flight: 0,
                held: Held::default(),
            }),
        }
    }

    /// Sends the task now if the window has room, else holds it back.
    fn submit(&self, spec: TaskSpec) -> Result<(), String> {
        let mut w = self.window.lock().unwrap();
        if w.held.len == 0 && w.in_flight < w.limit {
            w.in_flight += 1;
            // Under the window's lock: nothing held back can overtake it.
            return self.send(DriverToHead::Submit(vec![spec]));
        }
        w.held.push(&sunray_proto::encode(&spec));
        Ok(())
    }

    /// `n` tasks finished: sends held records once a quarter of the window is free.
    fn finished(&self, n: usize) {
        let mut w = self.window.lock().unwrap();
        w.in_flight = w.in_flight.saturating_sub(n);
        let quarter = (w.limit / 4).max(1);
        self.send_held(&mut w, quarter);
    }

    /// Sends whatever the window has room for (the periodic flush: tasks that never
    /// finish must not keep the rest waiting for a quarter of the window).
    fn drain(&self) {
        let mut w = self.window.lock().unwrap();
        self.send_held(&mut w, 1);
    }

    /// Sends held records in order while the window has room (at least `min_room` to
    /// start): runs of specs as `Submit` frames of at most half the largest message,
    /// runs of releases as `Release`.
    fn send_held(&self, w: &mut Window, min_room: usize) {
        let mut room = w.limit - w.in_flight.min(w.limit);
        if w.held.len == 0 || room < min_room {
            return;
        }
        let max_bytes = wire::max_message_bytes() / 2;
        let (mut specs, mut k, mut releases) = (Vec::new(), 0usize, Vec::new());
        let flush_specs = |specs: &mut Vec<u8>, k: &mut usize, w: &mut Window| {
            if *k > 0 {
                w.in_flight += *k;
                let _ = self.send_raw(submit_body(*k, specs));
                specs.clear();
                *k = 0;
            }
        };
        loop {
            let next = w.held.next_spec_len();
            if next.is_some() && room == 0 {
                break;
            }
            if next.is_some_and(|n| k > 0 && specs.len() + n > max_bytes) {
                flush_specs(&mut specs, &mut k, w);
            }
            if next.is_some() && !releases.is_empty() {
                let _ = self
                    .outbox
                    .send(vec![DriverToHead::Release(std::mem::take(&mut releases))]);
            }
            match w.held.pop_into(&mut specs) {
                None => break,
                Some(Popped::Spec) => {
                    k += 1;
                    room -= 1;
                }
                Some(Popped::Release(id)) => {
                    flush_specs(&mut specs, &mut k, w);
                    releases.push(id);
                }
            }
        }
        flush_specs(&mut specs, &mut k, w);
        if !releases.is_empty() {
            let _ = self.outbox.send(vec![DriverToHead::Release(releases)]);
        }
    }

    fn send_raw(&self, body: Bytes) -> Result<(), String> {
        match &self.outbox {
            Outbox::Socket(s) => wire::write_frames_blocking(&mut **s.lock().unwrap(), &[&body])
                .map_err(|e| e.to_string()),
            Outbox::Channel(tx) => {
                let m = sunray_proto::decode(&body).map_err(|e| e.to_string())?;
                tx.send(m).map_err(|_| "embedded head stopped".to_string())
            }
        }
    }

    fn send(&self, m: DriverToHead) -> Result<(), String> {
        let released = std::mem::take(&mut *self.released.lock().unwrap());
        if released.is_empty() {
            self.outbox.send(vec![m])
        } else {
            self.outbox.send(vec![DriverToHead::Release(released), m])
        }
    }

    fn release(&self, id: ObjectId) {
        {
            let mut w = self.window.lock().unwrap();
            if w.held.len > 0 {
                // Behind the held tasks, one of which may name the object.
                w.held.push_release(id);
                return;
            }
        }
        let full = {
            let mut r = self.released.lock().unwrap();
            r.push(id);
            r.len() >= RELEASE_BATCH
        };
        if full {
            self.flush();
        }
    }

    fn flush(&self) {
        let batch = std::mem::take(&mut *self.released.lock().unwrap());
        if !batch.is_empty() {
            let _ = self.outbox.send(vec![DriverToHead::Release(batch)]);
        }
    }
}

pub struct Client {
    client_id: ClientId,
    tx: Arc<Sender>,
    shared: Arc<Shared>,
    seq: AtomicU64,
    query_lock: Mutex<()>,
    /// Keeps an embedded cluster alive as long as the client (or until `shutdown`).
    embedded: Mutex<Option<crate::local::StartedHead>>,
    embedded_address: Option<String>,
    /// Proves to nodes' object servers that this client belongs to the cluster.
    token: String,
    /// A worker's node's object server (for large `put`s); None for a driver.
    store: Option<String>,
}

/// Answers a running task's message in the driver's reader, without waking any user
/// thread (a Python driver serves its functions' code this way); `None` passes the
/// message on to [`Client::task_events`].
pub type TaskMessageHandler = Box<dyn Fn(TaskId, &Bytes) -> Option<Bytes> + Send + Sync>;

const SELF_EXE: &str = "/proc/self/exe";

/// Sends this executable to the head in pieces (`BINARY_CHUNK_BYTES` each).
fn upload_self(outbox: &Outbox, hash: &str) -> Result<(), String> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(SELF_EXE).map_err(|e| format!("cannot read {SELF_EXE}: {e}"))?;
    let mut next = Vec::new();
    loop {
        let mut piece = Vec::with_capacity(sunray_proto::BINARY_CHUNK_BYTES);
        (&mut f)
            .take(sunray_proto::BINARY_CHUNK_BYTES as u64)
            .read_to_end(&mut piece)
            .map_err(|e| format!("cannot read {SELF_EXE}: {e}"))?;
        // A piece is sent once the next is read, so that the last one says so.
        let last = piece.is_empty();
        if !next.is_empty() || last {
            outbox.send(vec![DriverToHead::UploadBinary {
                hash: hash.to_string(),
                data: Bytes::from(std::mem::take(&mut next)),
                last,
            }])?;
        }
        if last {
            return Ok(());
        }
        next = piece;
    }
}

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
        kind: sunray_proto::ProgramKind::Native,
    })
}

/// Describes this Python interpreter (the running executable), so that nodes start it
/// as a worker with the driver's `sys.path` and working directory.
pub fn this_python(sys_path: Vec<String>, cwd: String) -> Result<BinaryInfo, Error> {
    // Workers check a registry hash only for native programs (theirs is "python").
    let mut b = this_binary("python")?;
    b.kind = sunray_proto::ProgramKind::Python { sys_path, cwd };
    Ok(b)
}

/// The driver's end of its connection, written from the calling thread.
trait BlockingWrite: std::io::Write + std::os::fd::AsRawFd + Send {}
impl<T: std::io::Write + std::os::fd::AsRawFd + Send> BlockingWrite for T {}

/// A connection the driver takes over from the runtime once the handshake is done: a
/// plain socket (non-blocking, as `into_std` leaves it) that user threads write to and
/// read from.
trait Connection: Sized {
    type Std: BlockingWrite + ReadFd + 'static;
    fn into_std(self) -> std::io::Result<Self::Std>;
    fn try_clone(s: &Self::Std) -> std::io::Result<Self::Std>;
}

impl Connection for tokio::net::TcpStream {
    type Std = std::net::TcpStream;
    fn into_std(self) -> std::io::Result<Self::Std> {
        tokio::net::TcpStream::into_std(self)
    }
    fn try_clone(s: &Self::Std) -> std::io::Result<Self::Std> {
        s.try_clone()
    }
}

impl Connection for tokio::net::UnixStream {
    type Std = std::os::unix::net::UnixStream;
    fn into_std(self) -> std::io::Result<Self::Std> {
        tokio::net::UnixStream::into_std(self)
    }
    fn try_clone(s: &Self::Std) -> std::io::Result<Self::Std> {
        s.try_clone()
    }
}

impl Client {
    /// Connects to the head at `address`: through its Unix socket when it runs on this
    /// host (see [`session::local_head_socket`]), else over TCP.
    pub fn connect(address: &str, token: &str, binary: BinaryInfo) -> Result<Client, Error> {
        Self::connect_for(address, token, binary, None)
    }

    /// A worker's connection, for tasks submitted from inside a task of driver `job`.
    pub fn connect_worker(
        address: &str,
        token: &str,
        binary: BinaryInfo,
        job: ClientId,
    ) -> Result<Client, Error> {
        Self::connect_for(address, token, binary, Some(job))
    }

    fn connect_for(
        address: &str,
        token: &str,
        binary: BinaryInfo,
        job: Option<ClientId>,
    ) -> Result<Client, Error> {
        let rt = runtime();
        let role = Role::Driver {
            binary: binary.clone(),
            hostname: detect::hostname(),
            pid: std::process::id(),
            job,
        };
        if let Some(path) = session::local_head_socket(address) {
            match rt.block_on(wire::connect_unix(&path, address, token, role.clone())) {
                Ok((io, reply)) => {
                    return Client::over(io, reply, address, &binary)
                        .map(|c| c.with_token(token, job.is_some()))
                }
                Err(e @ Error::Refused { .. }) => return Err(e),
                Err(e) => tracing::debug!("{e}; connecting over TCP"),
            }
        }
        let (io, reply) = rt.block_on(wire::connect(address, None, token, role))?;
        Client::over(io, reply, address, &binary).map(|c| c.with_token(token, job.is_some()))
    }

    fn with_token(mut self, token: &str, worker: bool) -> Client {
        self.token = token.to_string();
        if worker {
            self.store = std::env::var(crate::env::WORKER_STORE).ok();
        }
        self
    }

    /// Finishes a connection whose handshake succeeded.
    fn over<C: Connection>(
        io: wire::FramedIo<C>,
        reply: HelloReply,
        address: &str,
        binary: &BinaryInfo,
    ) -> Result<Client, Error> {
        let HelloReply::Welcome {
            client_id,
            upload_binary,
            ..
        } = reply
        else {
            unreachable!("refusals are errors")
        };
        // Frames are written by the calling thread (no hop to another thread); see
        // `ReadHalf` for who reads.
        let parts = io.into_parts();
        let std_stream = parts
            .io
            .into_std()
            .map_err(|e| Error::io("cannot take over the connection", e))?;
        let writer =
            C::try_clone(&std_stream).map_err(|e| Error::io("cannot clone the connection", e))?;
        let outbox = Outbox::Socket(Mutex::new(Box::new(writer)));
        if upload_binary {
            upload_self(&outbox, &binary.hash).map_err(|reason| Error::Disconnected {
                address: address.into(),
                reason,
            })?;
        }
        let (wake_tx, wake_rx) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| Error::io("cannot create a socket pair", e))?;
        for s in [&wake_tx, &wake_rx] {
            s.set_nonblocking(true)
                .map_err(|e| Error::io("cannot set up a socket pair", e))?;
        }
        let shared = Arc::new(Shared::new(client_id, Some(wake_tx)));
        shared.state.lock().unwrap().reader = Some(ReadHalf {
            sock: Box::new(std_stream),
            buf: parts.read_buf,
            codec: wire::authenticated_codec(),
            address: address.to_string(),
            last_heard: Instant::now(),
            direct: Vec::new(),
            fds: Vec::new(),
        });
        // The reader's hand-over socket is the other end of the pair.
        let s2 = shared.clone();
        std::thread::Builder::new()
            .name("sunray-reader".into())
            .spawn(move || background_reader(s2, wake_rx))
            .map_err(|e| Error::io("cannot start the reader thread", e))?;
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
                job: None,
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
            let shared = Arc::new(Shared::new(client_id, None));
            let s2 = shared.clone();
            tokio::spawn(async move {
                while let Some(m) = hrx.recv().await {
                    on_message(&s2, m);
                }
            });
            let token = started.token.clone();
            Ok(
                Client::new(client_id, Outbox::Channel(tx), shared, Some(started))
                    .with_token(&token, false),
            )
        })
    }

    fn new(
        client_id: ClientId,
        outbox: Outbox,
        shared: Arc<Shared>,
        embedded: Option<crate::local::StartedHead>,
    ) -> Client {
        let tx = Arc::new(Sender::new(outbox, MAX_IN_FLIGHT));
        let weak = Arc::downgrade(&tx);
        let _ = shared.sender.set(weak.clone());
        runtime().spawn(async move {
            let mut tick = tokio::time::interval(RELEASE_FLUSH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(tx) => {
                        tx.flush();
                        tx.drain();
                    }
                    None => return,
                }
            }
        });
        Client {
            client_id,
            tx,
            shared,
            seq: AtomicU64::new(1),
            query_lock: Mutex::new(()),
            embedded_address: embedded.as_ref().map(|h| h.address.clone()),
            embedded: Mutex::new(embedded),
            token: String::new(),
            store: None,
        }
    }

    pub fn client_id(&self) -> ClientId {
        self.client_id
    }

    /// The address of the embedded cluster's head, if this client started one.
    pub fn embedded_address(&self) -> Option<&str> {
        self.embedded_address.as_deref()
    }

    /// Leaves the cluster: the connection closes (the head then kills this driver's
    /// workers), or an embedded cluster stops. Every later call fails as disconnected.
    pub fn shutdown(&self) {
        self.tx.flush();
        self.tx.outbox.close();
        if let Some(h) = self.embedded.lock().unwrap().take() {
            runtime().block_on(h.stop());
        }
        let mut st = self.shared.state.lock().unwrap();
        if st.disconnected.is_none() {
            st.disconnect("sunray.shutdown() was called".into());
        }
        self.shared.cond.notify_all();
    }

    /// Sets the handler that answers task messages before they reach `task_events`.
    pub fn set_task_message_handler(&self, h: TaskMessageHandler) {
        let _ = self.shared.task_handler.set(h);
    }

    pub fn new_object_id(&self) -> ObjectId {
        object_id(self.client_id, self.seq.fetch_add(1, Ordering::Relaxed))
    }

    fn send(&self, m: DriverToHead) -> Result<(), GetError> {
        self.tx
            .send(m)
            .map_err(|e| GetError::Disconnected(format!("cannot send to the head: {e}")))
    }

    /// Submits a task (held back while [`MAX_IN_FLIGHT`] are at the head).
    pub fn submit(&self, spec: TaskSpec) -> Result<(), GetError> {
        let args: usize = spec
            .args
            .iter()
            .map(|a| match a {
                sunray_proto::Arg::Value(v) => v.len(),
                sunray_proto::Arg::Ref(_) | sunray_proto::Arg::At(..) => 8,
            })
            .sum();
        check_size(args, "a task's arguments")?;
        let refs: Vec<ObjectId> = spec
            .args
            .iter()
            .filter_map(|a| match a {
                sunray_proto::Arg::Ref(id) => Some(*id),
                _ => None,
            })
            .collect();
        self.promote(&refs)?;
        let spec = match spec.kind {
            sunray_proto::TaskKind::ActorCall { actor }
                if self.shared.kick.is_some() && direct::enabled() =>
            {
                match direct::try_direct(&self.shared, &self.token, actor, spec) {
                    None => return Ok(()),
                    Some(spec) => spec,
                }
            }
            _ => spec,
        };
        self.tx
            .submit(spec)
            .map_err(|e| GetError::Disconnected(format!("cannot send to the head: {e}")))
    }

    /// Makes these objects known to the head before they are passed on (in a task's
    /// arguments, or pickled into a value): results of direct actor calls are known
    /// only here (see `direct`). Waits for those not here yet.
    pub fn promote(&self, ids: &[ObjectId]) -> Result<(), GetError> {
        direct::promote(self, ids)
    }

    pub fn put(&self, data: Bytes) -> Result<ObjectId, GetError> {
        check_size(data.len(), "an object")?;
        let id = self.new_object_id();
        // A task's large put stays on its node, as its results do.
        let node = crate::worker::current_task().map(|t| t.node_id);
        if let (Some(addr), Some(node)) = (&self.store, node) {
            if data.len() > sunray_proto::INLINE_OBJECT_BYTES {
                crate::objects::push(addr, &self.token, id, &data).map_err(|message| {
                    GetError::Task(TaskError {
                        kind: ErrorKind::ObjectLost,
                        function: "put".into(),
                        location: Some(format!("node {node}")),
                        message,
                    })
                })?;
                let at = Location {
                    node,
                    addr: addr.clone(),
                    size: data.len() as u64,
                };
                self.shared
                    .state
                    .lock()
                    .unwrap()
                    .results
                    .insert(id, Err(Box::new(Elsewhere::At(at.clone()))));
                self.send(DriverToHead::PutAt { id, at })?;
                return Ok(id);
            }
        }
        self.shared
            .state
            .lock()
            .unwrap()
            .results
            .insert(id, Ok(data.clone()));
        self.send(DriverToHead::Put { id, data })?;
        Ok(id)
    }

    /// Forgets an object here and (soon, see `RELEASE_BATCH`) at the head.
    pub fn release(&self, id: ObjectId) {
        let here_only = {
            let mut st = self.shared.state.lock().unwrap();
            let here_only = direct::release_here(&mut st, id);
            if st.results.remove(&id).is_none() {
                st.tombstones.insert(id);
            }
            here_only
        };
        if !here_only {
            self.tx.release(id);
        }
    }

    /// Waits until `check` gives an answer, the connection is lost, or the deadline
    /// passes (then `on_timeout`). Reads the head's connection itself when no other
    /// thread does (see `ReadHalf`).
    fn wait_for<R>(
        &self,
        timeout: Option<Duration>,
        mut check: impl FnMut(&State) -> Option<R>,
        on_timeout: impl FnOnce(&State) -> Result<R, GetError>,
    ) -> Result<R, GetError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        // Nothing released stays pending while this thread sleeps.
        self.tx.flush();
        let shared = &*self.shared;
        let mut st = shared.state.lock().unwrap();
        loop {
            if let Some(r) = check(&st) {
                return Ok(r);
            }
            if let Some(why) = &st.disconnected {
                return Err(GetError::Disconnected(why.clone()));
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if let Some(mut half) = st.reader.take() {
                half.direct.append(&mut st.direct.new_reads);
                drop(st);
                let took = Instant::now();
                let res = half.read_once(shared, left, None);
                st = shared.state.lock().unwrap();
                match res {
                    Ok(()) => st.reader = Some(half),
                    Err(why) => st.disconnect(why),
                }
                // Others wait for the reader, or for what it brought.
                shared.cond.notify_all();
                // After a long wait this thread is unlikely to read again at once: the
                // background reader takes over now (after short ones, within its nap).
                if st.waiting == 0 && took.elapsed() >= BACKGROUND_NAP_MAX {
                    shared.background.notify_one();
                }
                if left.is_some_and(|l| l.is_zero()) {
                    return match check(&st) {
                        Some(r) => Ok(r),
                        None => on_timeout(&st),
                    };
                }
                continue;
            }
            if left.is_some_and(|l| l.is_zero()) {
                return on_timeout(&st);
            }
            st.waiting += 1;
            if st.background_reading && !st.handover_asked {
                st.handover_asked = true;
                if let Some(h) = &shared.handover {
                    let _ = (&*h).write(&[1]);
                }
            }
            st = match left {
                None => shared.cond.wait(st).unwrap(),
                Some(l) => shared.cond.wait_timeout(st, l).unwrap().0,
            };
            st.waiting -= 1;
        }
    }

    /// Waits for an object's value; a large one is read from the node that holds it.
    pub fn get(&self, id: ObjectId, timeout: Option<Duration>) -> Result<Bytes, GetError> {
        let foreign = object_owner(id) != self.client_id;
        if foreign {
            self.subscribe(&[id])?;
        }
        let mut asked_again = 0;
        loop {
            let r = self.wait_for(
                timeout,
                |st| st.results.get(&id).cloned(),
                |_| Err(GetError::Timeout),
            )?;
            let at = match r {
                Ok(b) => break Ok(b),
                Err(e) => match *e {
                    Elsewhere::Failed(e) => break Err(GetError::Task(e)),
                    Elsewhere::At(at) => at,
                },
            };
            match crate::objects::fetch(&at, &self.token, id) {
                Ok(b) => {
                    // Kept as if it had come inline (until released), unless foreign.
                    let mut st = self.shared.state.lock().unwrap();
                    if !foreign && st.results.contains_key(&id) {
                        st.results.insert(id, Ok(b.clone()));
                    }
                    break Ok(b);
                }
                Err(why) => {
                    // Its node left (the head rebuilds the object, or says it is lost) or
                    // is leaving: ask the head where it is now, a few times.
                    self.shared.state.lock().unwrap().results.remove(&id);
                    if asked_again == FETCH_TRIES {
                        break Err(GetError::Task(TaskError {
                            kind: ErrorKind::ObjectLost,
                            function: String::new(),
                            location: Some(format!("node {} ({})", at.node, at.addr)),
                            message: format!(
                                "object {id:#x} could not be read from node {} ({}), where it was kept: {why}",
                                at.node, at.addr
                            ),
                        }));
                    }
                    std::thread::sleep(Duration::from_millis(50 << asked_again));
                    asked_again += 1;
                    self.send(DriverToHead::Subscribe(vec![id]))?;
                }
            }
        }
        .inspect(|_| {
            if foreign {
                // Another client's object: kept only until read (asked for again next time).
                self.shared.state.lock().unwrap().results.remove(&id);
            }
        })
    }

    /// Is the object's outcome here already (a `get` of it would not wait)?
    pub fn is_ready(&self, id: ObjectId) -> bool {
        self.shared.state.lock().unwrap().results.get(&id).is_some()
    }

    /// Asks the head for the outcomes of other clients' objects not here yet.
    fn subscribe(&self, ids: &[ObjectId]) -> Result<(), GetError> {
        let missing: Vec<ObjectId> = {
            let st = self.shared.state.lock().unwrap();
            ids.iter()
                .copied()
                .filter(|id| object_owner(*id) != self.client_id && st.results.get(id).is_none())
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        self.send(DriverToHead::Subscribe(missing))
    }

    /// Waits until `num_returns` of `ids` are ready (or the timeout passes); returns a
    /// readiness flag per id.
    pub fn wait(
        &self,
        ids: &[ObjectId],
        num_returns: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<bool>, GetError> {
        self.subscribe(ids)?;
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
        self.wait_for(
            None,
            |st| (!st.replies.is_empty()).then_some(()),
            |_| Err(GetError::Timeout),
        )?;
        // Queries are one at a time (query_lock): this reply is ours.
        let view = self.shared.state.lock().unwrap().replies.pop_front();
        Ok(view.expect("a reply arrived"))
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

    /// Reserves a placement group; its id is a new object of this client that becomes
    /// ready (holding `ready`) once every bundle is reserved.
    pub fn create_group(
        &self,
        name: Option<String>,
        bundles: Vec<sunray_proto::Resources>,
        strategy: sunray_proto::PlacementStrategy,
        ready: Bytes,
        detached: bool,
    ) -> Result<sunray_proto::GroupId, GetError> {
        let id = self.new_object_id();
        self.send(DriverToHead::CreateGroup {
            id,
            name,
            bundles,
            strategy,
            ready,
            detached,
        })?;
        Ok(id)
    }

    pub fn remove_group(&self, id: sunray_proto::GroupId) -> Result<(), GetError> {
        self.send(DriverToHead::RemoveGroup { id })
    }

    /// Ray's `kill(actor, no_restart=…)`.
    pub fn kill_actor(
        &self,
        actor: sunray_proto::ActorId,
        no_restart: bool,
    ) -> Result<(), GetError> {
        self.send(DriverToHead::KillActor { actor, no_restart })
    }

    pub fn reply_to_task(&self, task: TaskId, data: Bytes) -> Result<(), GetError> {
        if direct::reply(&self.shared, task, data.clone()) {
            return Ok(());
        }
        self.send(DriverToHead::TaskReply { task, data })
    }
}

fn on_message(shared: &Shared, m: HeadToDriver) {
    match m {
        HeadToDriver::Done(results) => {
            // Only this client's tasks count against its window (not subscribed objects).
            let n = results.iter().filter(|(id, _)| shared.is_mine(*id)).count();
            let mut st = shared.state.lock().unwrap();
            if let Some(tx) = &st.events {
                for (id, _) in &results {
                    let _ = tx.send(TaskEvent::Finished(*id));
                }
            }
            for (id, o) in results {
                direct::answered_by_head(&mut st, id);
                if !st.tombstones.remove(&id) {
                    st.results.insert(id, kept(o));
                }
            }
            shared.cond.notify_all();
            drop(st);
            if let Some(s) = shared.sender.get().and_then(|w| w.upgrade()) {
                s.finished(n);
            }
        }
        HeadToDriver::QueryReply(v) => {
            let mut st = shared.state.lock().unwrap();
            st.replies.push_back(v);
            shared.cond.notify_all();
        }
        HeadToDriver::TaskMessage { task, data } => {
            if let Some(reply) = shared.task_handler.get().and_then(|h| h(task, &data)) {
                if let Some(s) = shared.sender.get().and_then(|w| w.upgrade()) {
                    let _ = s.send(DriverToHead::TaskReply { task, data: reply });
                }
                return;
            }
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
        HeadToDriver::Heartbeat => {}
        HeadToDriver::ActorAt {
            actor,
            node,
            addr,
            calls_socket,
            retries,
        } => {
            if shared.kick.is_some() {
                let at = direct::At {
                    node,
                    addr,
                    calls_socket,
                };
                direct::actor_at(&mut shared.state.lock().unwrap(), actor, at, retries);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use sunray_proto::{object_id, Resources};

    fn spec(i: u64) -> TaskSpec {
        TaskSpec {
            id: object_id(1, i),
            function: "m::f".into(),
            args: vec![],
            resources: Resources {
                cpu: 1.0,
                ..Default::default()
            },
            max_retries: 0,
            kind: sunray_proto::TaskKind::Plain,
            bundle: None,
        }
    }

    fn sent_ids(rx: &mut mpsc::UnboundedReceiver<DriverToHead>) -> Vec<u64> {
        let mut ids = Vec::new();
        while let Ok(m) = rx.try_recv() {
            if let DriverToHead::Submit(specs) = m {
                ids.extend(specs.iter().map(|s| s.id & 0xff_ffff));
            }
        }
        ids
    }

    #[test]
    fn held_tasks_go_in_submission_order_and_never_beyond_the_window() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let s = Sender::new(Outbox::Channel(tx), 8);
        for i in 0..30 {
            s.submit(spec(i)).unwrap();
        }
        let mut sent = sent_ids(&mut rx);
        assert_eq!(sent, (0..8).collect::<Vec<_>>());
        let mut finished = 0;
        // Results come back one by one: each send stays within the window.
        while finished < 30 {
            s.finished(1);
            finished += 1;
            sent.extend(sent_ids(&mut rx));
            assert!(
                sent.len() - finished <= 8,
                "{} in flight",
                sent.len() - finished
            );
        }
        assert_eq!(sent, (0..30).collect::<Vec<_>>());
        // The window is empty again: a new task goes at once.
        s.submit(spec(30)).unwrap();
        assert_eq!(sent_ids(&mut rx), [30]);
    }

    #[test]
    fn held_specs_come_back_in_order_across_segments_which_are_freed() {
        let mut h = Held::default();
        let body = |i: u32| i.to_le_bytes().repeat(1 + (i % 7) as usize);
        for i in 0..100_000 {
            h.push(&body(i));
        }
        assert!(h.segments.len() > 1);
        for i in 0..100_000 {
            let mut out = Vec::new();
            assert_eq!(h.pop_into(&mut out), Some(Popped::Spec));
            assert_eq!(out, body(i));
            assert!(h.segments.len() <= 1 + (100_000 - i as usize) * 32 / SEGMENT + 1);
        }
        assert_eq!(h.pop_into(&mut Vec::new()), None);
        assert!(h.segments.is_empty());
    }

    #[test]
    fn a_release_never_overtakes_a_held_task() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let s = Sender::new(Outbox::Channel(tx), 4);
        for i in 0..6 {
            s.submit(spec(i)).unwrap();
        }
        // Task 5 (held) names object 100; the driver drops its ref now.
        s.release(object_id(1, 100));
        s.submit(spec(6)).unwrap();
        let mut order = Vec::new();
        let mut drain = |rx: &mut mpsc::UnboundedReceiver<DriverToHead>| {
            while let Ok(m) = rx.try_recv() {
                match m {
                    DriverToHead::Submit(v) => {
                        order.extend(v.iter().map(|t| format!("t{}", t.id & 0xff)))
                    }
                    DriverToHead::Release(ids) => {
                        order.extend(ids.iter().map(|i| format!("r{}", i & 0xff)))
                    }
                    _ => {}
                }
            }
        };
        drain(&mut rx);
        s.finished(4);
        drain(&mut rx);
        assert_eq!(order, ["t0", "t1", "t2", "t3", "t4", "t5", "r100", "t6"]);
    }

    #[test]
    fn tasks_the_window_is_full_of_forever_do_not_hold_the_rest_back() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let s = Sender::new(Outbox::Channel(tx), 8);
        for i in 0..10 {
            s.submit(spec(i)).unwrap();
        }
        assert_eq!(sent_ids(&mut rx).len(), 8);
        // One finishes; 7 never do. Below a quarter of room, the periodic drain sends.
        s.finished(1);
        assert!(sent_ids(&mut rx).is_empty());
        s.drain();
        assert_eq!(sent_ids(&mut rx), [8]);
    }

    #[test]
    fn a_batch_of_held_tasks_is_the_frame_postcard_writes() {
        for n in [1u64, 2, 127, 128, 300] {
            let specs: Vec<TaskSpec> = (0..n).map(spec).collect();
            let concat: Vec<u8> = specs
                .iter()
                .flat_map(|s| sunray_proto::encode(s).to_vec())
                .collect();
            assert_eq!(
                submit_body(n as usize, &concat),
                sunray_proto::encode(&DriverToHead::Submit(specs)),
                "{n} specs"
            );
        }
    }
}
