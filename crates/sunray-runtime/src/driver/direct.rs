//! Direct actor calls (Ray's): once the head said where an actor lives
//! ([`HeadToDriver::ActorAt`](sunray_proto::HeadToDriver::ActorAt)), this client sends
//! its next calls to that node's object server (role `Calls`) and reads their results
//! there; the head sees none of it.
//!
//! - **Order.** A call goes direct only while every call of this client to that actor
//!   not answered yet went direct too; otherwise it goes through the head, behind them.
//!   Writes to a connection keep the order the calls were decided in.
//! - **Failure.** Calls the node gives back (`NodeToCaller::Lost`: the actor is not
//!   there, or its process died with them) and calls on a connection that closed are
//!   sent again through the head, which restarts, retries or fails them as its own; a
//!   call that may have run fails here instead when its actor allows no retries. Until
//!   the head says again where the actor lives, calls go through the head.
//! - **Objects.** A direct result is known only here. It is `Put` to the head before it
//!   is passed to a task or pickled ([`promote`]), and released here alone otherwise.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use sunray_proto::{
    ActorId, Arg, CallerToNode, DriverToHead, ErrorKind, NodeToCaller, ObjectId, Role, TaskError,
    TaskId, TaskKind, TaskSpec,
};

use super::{Elsewhere, GetError, Shared, State, TaskEvent};
use crate::wire;

/// This client's direct calls (kept in the driver's `State`, under its lock).
#[derive(Default)]
pub(super) struct Calls {
    routes: HashMap<ActorId, Route>,
    /// Calls to actors not answered yet, and their actor.
    pending: HashMap<TaskId, ActorId>,
    /// Results of direct calls that the head does not know.
    unknown: HashSet<ObjectId>,
    /// Open connections, by node address.
    conns: HashMap<String, Arc<Conn>>,
    /// Read halves of new connections, for the next reader to take.
    pub(super) new_reads: Vec<Read>,
}

/// Where a node takes direct calls.
#[derive(Clone)]
pub(super) struct At {
    pub(super) node: sunray_proto::NodeId,
    /// Its object server (TCP).
    pub(super) addr: String,
    /// Its Unix socket, for callers on its host.
    pub(super) calls_socket: String,
}

#[derive(Default)]
struct Route {
    /// Where its node takes calls, as the head last said (None: through the head).
    addr: Option<At>,
    /// Its `max_task_retries`: 0 means a call that died with it fails.
    retries: u32,
    calls: HashMap<TaskId, Sent>,
}

enum Sent {
    ThroughHead,
    /// Kept to be sent again through the head if the node gives it back.
    Direct {
        spec: TaskSpec,
        conn: Arc<Conn>,
    },
}

trait WriteFd: std::io::Write + AsRawFd + Send {}
impl<T: std::io::Write + AsRawFd + Send> WriteFd for T {}

/// A direct connection's write half, shared by the threads that call.
pub(super) struct Conn {
    addr: String,
    write: Mutex<Box<dyn WriteFd>>,
    /// `Lost` answers read per actor on this connection (a call carries the count).
    epochs: Mutex<HashMap<ActorId, u32>>,
}

/// A direct connection's read half (read by whoever reads the head's connection).
pub(super) struct Read {
    conn: Arc<Conn>,
    sock: Box<dyn super::ReadFd>,
    buf: BytesMut,
    codec: tokio_util::codec::LengthDelimitedCodec,
}

impl Read {
    pub(super) fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Reads what is there (the socket is non-blocking) and handles each message. Err
    /// when the connection is gone.
    pub(super) fn read_available(&mut self, shared: &Shared) -> Result<(), String> {
        use tokio_util::codec::Decoder;
        let (closed, _) = super::read_available(&mut *self.sock, &mut self.buf)
            .map_err(|e| format!("read error: {e}"))?;
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => match sunray_proto::decode::<NodeToCaller>(&frame) {
                    Ok(m) => on_message(shared, &self.conn, m),
                    Err(e) => return Err(format!("malformed message: {e}")),
                },
                Ok(None) => break,
                Err(e) => return Err(format!("malformed frame: {e}")),
            }
        }
        match closed {
            true => Err("connection closed".into()),
            false => Ok(()),
        }
    }

    pub(super) fn lost(&self, shared: &Shared, why: &str) {
        conn_lost(shared, &self.conn, why);
    }
}

/// `SUNRAY_DIRECT_CALLS`, read once.
fn setting() -> &'static str {
    static SET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        std::env::var(crate::env::DIRECT_CALLS)
            .unwrap_or_default()
            .trim()
            .to_string()
    })
}

/// Direct calls are on unless `SUNRAY_DIRECT_CALLS=0`.
pub(super) fn enabled() -> bool {
    setting() != "0"
}

/// What `submit` does with an actor call: sends it to the actor's node (None), or
/// gives it back to go through the head.
pub(super) fn try_direct(
    shared: &Shared,
    token: &str,
    actor: ActorId,
    spec: TaskSpec,
) -> Option<TaskSpec> {
    let id = spec.id;
    let mut st = shared.state.lock().unwrap();
    let calls = &mut st.direct;
    let route = calls.routes.entry(actor).or_default();
    let all_direct = route
        .calls
        .values()
        .all(|s| matches!(s, Sent::Direct { .. }));
    // Arguments the head would resolve (refs) keep the call on the head's path.
    let values_only = spec.args.iter().all(|a| matches!(a, Arg::Value(_)));
    let at = match (&route.addr, all_direct && values_only) {
        (Some(a), true) => a.clone(),
        _ => {
            route.calls.insert(id, Sent::ThroughHead);
            calls.pending.insert(id, actor);
            return Some(spec);
        }
    };
    let addr = at.addr.clone();
    let conn = match calls.conns.get(&addr) {
        Some(c) => c.clone(),
        None => match connect(&at, token) {
            Ok((conn, read)) => {
                calls.conns.insert(addr.clone(), conn.clone());
                calls.new_reads.push(read);
                shared.kick();
                conn
            }
            Err(why) => {
                tracing::warn!(
                    "cannot call actors at {addr} directly ({why}); calls go through the head"
                );
                let route = calls.routes.get_mut(&actor).expect("made above");
                route.addr = None;
                route.calls.insert(id, Sent::ThroughHead);
                calls.pending.insert(id, actor);
                return Some(spec);
            }
        },
    };
    let epoch = conn
        .epochs
        .lock()
        .unwrap()
        .get(&actor)
        .copied()
        .unwrap_or(0);
    let body = sunray_proto::encode(&CallerToNode::Call {
        spec: spec.clone(),
        epoch,
    });
    let route = calls.routes.get_mut(&actor).expect("made above");
    route.calls.insert(
        id,
        Sent::Direct {
            spec,
            conn: conn.clone(),
        },
    );
    calls.pending.insert(id, actor);
    // Taken before the state is let go: calls are written in the order decided.
    let mut w = conn.write.lock().unwrap();
    drop(st);
    if let Err(e) = wire::write_frames_blocking(&mut **w, &[&body]) {
        drop(w);
        conn_lost(shared, &conn, &format!("write error: {e}"));
    }
    None
}

/// Opens a direct connection to a node: its Unix socket if it is on this host (and
/// answers as that node), else its object server over TCP.
fn connect(at: &At, token: &str) -> Result<(Arc<Conn>, Read), String> {
    let rt = super::runtime();
    let path = std::path::Path::new(&at.calls_socket);
    if !at.calls_socket.is_empty() && setting() != "tcp" && path.exists() {
        let local = rt.block_on(within(wire::connect_unix(
            path,
            &at.addr,
            token,
            Role::Calls,
        )));
        match local {
            Ok((io, sunray_proto::HelloReply::Welcome { node_id, .. }))
                if node_id == Some(at.node) =>
            {
                let parts = io.into_parts();
                let sock = parts.io.into_std().map_err(|e| e.to_string())?;
                sock.set_nonblocking(true).map_err(|e| e.to_string())?;
                let reader = sock.try_clone().map_err(|e| e.to_string())?;
                return Ok(halves(
                    &at.addr,
                    Box::new(sock),
                    Box::new(reader),
                    parts.read_buf,
                ));
            }
            Ok(_) => tracing::debug!("{} is another node's socket", at.calls_socket),
            Err(e) => tracing::debug!("cannot call at {}: {e}", at.calls_socket),
        }
    }
    let (io, _) = rt.block_on(within(wire::connect(&at.addr, None, token, Role::Calls)))?;
    let parts = io.into_parts();
    let sock = parts.io.into_std().map_err(|e| e.to_string())?;
    sock.set_nodelay(true).ok();
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    let reader = sock.try_clone().map_err(|e| e.to_string())?;
    Ok(halves(
        &at.addr,
        Box::new(sock),
        Box::new(reader),
        parts.read_buf,
    ))
}

/// A connection's handshake, given up after 5 s.
async fn within<T>(
    f: impl std::future::Future<Output = Result<T, crate::Error>>,
) -> Result<T, String> {
    tokio::time::timeout(std::time::Duration::from_secs(5), f)
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
        .map_err(|e| e.to_string())
}

fn halves(
    addr: &str,
    write: Box<dyn WriteFd>,
    read: Box<dyn super::ReadFd>,
    buf: BytesMut,
) -> (Arc<Conn>, Read) {
    let conn = Arc::new(Conn {
        addr: addr.to_string(),
        write: Mutex::new(write),
        epochs: Mutex::new(HashMap::new()),
    });
    let read = Read {
        conn: conn.clone(),
        sock: read,
        buf,
        codec: wire::authenticated_codec(),
    };
    (conn, read)
}

/// The head says where an actor lives.
pub(super) fn actor_at(st: &mut State, actor: ActorId, at: At, retries: u32) {
    let route = st.direct.routes.entry(actor).or_default();
    route.addr = Some(at);
    route.retries = retries;
}

/// A call's result came through the head: the actor's calls may go direct again.
pub(super) fn answered_by_head(st: &mut State, id: TaskId) {
    if st.direct.pending.is_empty() {
        return;
    }
    if let Some(actor) = st.direct.pending.remove(&id) {
        if let Some(r) = st.direct.routes.get_mut(&actor) {
            r.calls.remove(&id);
        }
    }
}

/// `release(id)`: true when the head must not hear of it (it never knew the object,
/// or will be told when a call sent again through the head is made).
pub(super) fn release_here(st: &mut State, id: ObjectId) -> bool {
    if st.direct.unknown.remove(&id) {
        return true;
    }
    let Some(actor) = st.direct.pending.get(&id) else {
        return false;
    };
    st.direct
        .routes
        .get(actor)
        .and_then(|r| r.calls.get(&id))
        .is_some_and(|s| matches!(s, Sent::Direct { .. }))
}

/// A call's message reply goes to the node of the direct call (true), or to the head.
pub(super) fn reply(shared: &Shared, task: TaskId, data: Bytes) -> bool {
    let conn = {
        let st = shared.state.lock().unwrap();
        let Some(actor) = st.direct.pending.get(&task) else {
            return false;
        };
        match st.direct.routes.get(actor).and_then(|r| r.calls.get(&task)) {
            Some(Sent::Direct { conn, .. }) => conn.clone(),
            _ => return false,
        }
    };
    let body = sunray_proto::encode(&CallerToNode::Reply { task, data });
    let mut w = conn.write.lock().unwrap();
    let _ = wire::write_frames_blocking(&mut **w, &[&body]);
    true
}

/// Before `ids` are passed on (as a task's arguments, or pickled into a value): the
/// head gets the direct results among them, waiting for those not here yet.
pub(super) fn promote(client: &super::Client, ids: &[ObjectId]) -> Result<(), GetError> {
    for &id in ids {
        let needed = {
            let st = client.shared.state.lock().unwrap();
            st.direct.unknown.contains(&id) || release_here_peek(&st, id)
        };
        if !needed {
            continue;
        }
        let value = client.get(id, None)?;
        let mut st = client.shared.state.lock().unwrap();
        if st.direct.unknown.remove(&id) {
            drop(st);
            client.send(DriverToHead::Put { id, data: value })?;
        }
    }
    Ok(())
}

/// Is `id` a direct call not answered yet?
fn release_here_peek(st: &State, id: ObjectId) -> bool {
    st.direct.pending.get(&id).is_some_and(|a| {
        st.direct
            .routes
            .get(a)
            .and_then(|r| r.calls.get(&id))
            .is_some_and(|s| matches!(s, Sent::Direct { .. }))
    })
}

fn on_message(shared: &Shared, conn: &Arc<Conn>, m: NodeToCaller) {
    match m {
        NodeToCaller::Done(results) => {
            let mut st = shared.state.lock().unwrap();
            for (id, outcome) in results {
                if let Some(actor) = st.direct.pending.remove(&id) {
                    if let Some(r) = st.direct.routes.get_mut(&actor) {
                        r.calls.remove(&id);
                    }
                }
                if let Some(tx) = &st.events {
                    let _ = tx.send(TaskEvent::Finished(id));
                }
                if st.tombstones.remove(&id) {
                    continue;
                }
                let kept = outcome.map_err(|e| Box::new(Elsewhere::Failed(e)));
                st.results.insert(id, kept);
                st.direct.unknown.insert(id);
            }
            shared.cond.notify_all();
        }
        NodeToCaller::Lost {
            actor,
            tasks,
            ran,
            why,
        } => {
            give_back(shared, &[(actor, tasks)], ran, &why, Some(conn));
        }
        NodeToCaller::Message { task, data } => {
            if let Some(answer) = shared.task_handler.get().and_then(|h| h(task, &data)) {
                let body = sunray_proto::encode(&CallerToNode::Reply { task, data: answer });
                let mut w = conn.write.lock().unwrap();
                let _ = wire::write_frames_blocking(&mut **w, &[&body]);
                return;
            }
            let st = shared.state.lock().unwrap();
            if let Some(tx) = &st.events {
                let _ = tx.send(TaskEvent::Message { task, data });
            }
        }
    }
}

/// The connection closed (its node left, most likely): its calls may have run.
fn conn_lost(shared: &Shared, conn: &Arc<Conn>, why: &str) {
    let lost: Vec<(ActorId, Vec<TaskId>)> = {
        let mut st = shared.state.lock().unwrap();
        if st
            .direct
            .conns
            .get(&conn.addr)
            .is_some_and(|c| Arc::ptr_eq(c, conn))
        {
            st.direct.conns.remove(&conn.addr);
        }
        st.direct
            .routes
            .iter()
            .map(|(a, r)| {
                let on: Vec<TaskId> = r
                    .calls
                    .iter()
                    .filter(
                        |(_, s)| matches!(s, Sent::Direct { conn: c, .. } if Arc::ptr_eq(c, conn)),
                    )
                    .map(|(t, _)| *t)
                    .collect();
                (*a, on)
            })
            .filter(|(_, on)| !on.is_empty())
            .collect()
    };
    for (actor, tasks) in lost {
        let why = format!(
            "actor {actor:#x}: the connection to its node at {} closed ({why})",
            conn.addr
        );
        give_back(shared, &[(actor, tasks)], true, &why, None);
    }
}

/// Calls the node will not answer: failed here if they may have run and their actor
/// allows no retries, else sent again through the head, in the order they were made.
/// `read_on`: the connection whose `Lost` this is (its epoch moves on in the same step
/// as the actor leaves the direct path, so no call can slip between).
fn give_back(
    shared: &Shared,
    lost: &[(ActorId, Vec<TaskId>)],
    ran: bool,
    why: &str,
    read_on: Option<&Arc<Conn>>,
) {
    let mut again: Vec<(TaskSpec, bool)> = Vec::new();
    {
        let mut st = shared.state.lock().unwrap();
        let st = &mut *st;
        if let Some(conn) = read_on {
            let mut epochs = conn.epochs.lock().unwrap();
            for (actor, _) in lost {
                *epochs.entry(*actor).or_default() += 1;
            }
        }
        for (actor, tasks) in lost {
            let Some(route) = st.direct.routes.get_mut(actor) else {
                continue;
            };
            // Until the head says where it lives now.
            route.addr = None;
            let mut tasks = tasks.clone();
            tasks.sort_unstable(); // ids grow with submission
            for t in tasks {
                let Some(Sent::Direct { spec, .. }) = route.calls.remove(&t) else {
                    continue;
                };
                if ran && route.retries == 0 {
                    st.direct.pending.remove(&t);
                    if let Some(tx) = &st.events {
                        let _ = tx.send(TaskEvent::Finished(t));
                    }
                    if !st.tombstones.remove(&t) {
                        let err = TaskError {
                            kind: ErrorKind::ActorDied,
                            function: spec.function.clone(),
                            location: None,
                            message: why.to_string(),
                        };
                        st.results.insert(t, Err(Box::new(Elsewhere::Failed(err))));
                    }
                    continue;
                }
                route.calls.insert(t, Sent::ThroughHead);
                again.push((spec, st.tombstones.contains(&t)));
            }
        }
        shared.cond.notify_all();
    }
    if again.is_empty() {
        return;
    }
    let Some(sender) = shared.sender.get().and_then(|w| w.upgrade()) else {
        return;
    };
    again.sort_by_key(|(s, _)| s.id);
    for (spec, released) in again {
        let id = spec.id;
        debug_assert!(matches!(spec.kind, TaskKind::ActorCall { .. }));
        if sender.submit(spec).is_err() {
            return;
        }
        if released {
            // Released here before it came back: the head drops it once made.
            sender.release(id);
        }
    }
}
