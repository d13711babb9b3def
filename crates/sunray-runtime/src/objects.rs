//! Objects kept on the node that made them (Ray's object stores, in the node agent's
//! memory): a task's result or a task's `put` larger than
//! [`sunray_proto::INLINE_OBJECT_BYTES`] stays in its node's [`Store`]; the head keeps
//! only its [`Location`]. Whoever needs the bytes (a worker about to run a task taking
//! the object, a driver's `get`) reads them from that node's object server, never
//! through the head.
//!
//! The server takes the cluster's handshake (role [`Role::Objects`]), then a raw stream
//! of requests, one at a time, with no framing copy of the bytes:
//! - `G`, id (u64 BE) → size (u64 BE) and the bytes, or `u64::MAX` when it is not here;
//! - `P`, id, size, bytes → `K` once stored (a worker's `put`).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{Bytes, BytesMut};
use sunray_proto::{HelloReply, Location, ObjectId, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::wire;

const GET: u8 = b'G';
const PUT: u8 = b'P';
const STORED: u8 = b'K';
const MISSING: u64 = u64::MAX;

/// A node's objects. Shared by the node agent (results, frees) and its server's
/// connections; the lock is held only to clone or move a `Bytes` handle.
#[derive(Clone, Default)]
pub struct Store(Arc<Mutex<HashMap<ObjectId, Bytes>>>);

impl Store {
    pub fn insert(&self, id: ObjectId, data: Bytes) {
        self.0.lock().unwrap().insert(id, data);
    }

    pub fn get(&self, id: ObjectId) -> Option<Bytes> {
        self.0.lock().unwrap().get(&id).cloned()
    }

    pub fn free(&self, ids: &[ObjectId]) {
        let mut m = self.0.lock().unwrap();
        for id in ids {
            m.remove(id);
        }
    }

    /// Objects held and their bytes.
    pub fn usage(&self) -> (u64, u64) {
        let m = self.0.lock().unwrap();
        (m.len() as u64, m.values().map(|b| b.len() as u64).sum())
    }
}

/// Stores of this process by server address: a driver of an embedded cluster reads its
/// node's objects without a socket.
fn local_stores() -> &'static Mutex<HashMap<String, Store>> {
    static STORES: OnceLock<Mutex<HashMap<String, Store>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

/// A node agent of this process serves `store` at `addr`.
pub fn register_local(addr: &str, store: &Store) {
    local_stores()
        .lock()
        .unwrap()
        .insert(addr.to_string(), store.clone());
}

/// The node agent that served `addr` in this process stopped.
pub fn forget_local(addr: &str) {
    local_stores().lock().unwrap().remove(addr);
}

/// Takes over a direct caller's connection (role [`Role::Calls`]), welcomed and
/// authenticated.
pub type CallsHook = Arc<dyn Fn(wire::FramedIo<tokio::net::TcpStream>) + Send + Sync>;

/// Serves `store` on `listener` (bound to the node's address) until the process ends;
/// direct callers' connections go to `calls`.
pub async fn serve(listener: TcpListener, store: Store, token: String, calls: CallsHook) {
    while let Ok((stream, peer)) = listener.accept().await {
        let (store, token, calls) = (store.clone(), token.clone(), calls.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_conn(stream, &store, &token, &calls).await {
                debug!("object connection from {peer} ended: {e}");
            }
        });
    }
}

async fn serve_conn(
    stream: tokio::net::TcpStream,
    store: &Store,
    token: &str,
    calls: &CallsHook,
) -> Result<(), String> {
    stream.set_nodelay(true).ok();
    let mut io = wire::framed(stream);
    let hello = match wire::accept_hello(&mut io, token).await {
        Ok(h) => h,
        Err(e) => {
            warn!("refused an object store connection: {e}");
            let reply = sunray_proto::encode(&HelloReply::Refused { reason: e.clone() });
            let _ = futures_util::SinkExt::send(&mut io, reply).await;
            return Err(e);
        }
    };
    if !matches!(hello.role, Role::Objects | Role::Calls) {
        let reason =
            "this is a node's object server: only Role::Objects and Role::Calls connect here"
                .to_string();
        let reply = sunray_proto::encode(&HelloReply::Refused {
            reason: reason.clone(),
        });
        let _ = futures_util::SinkExt::send(&mut io, reply).await;
        return Err(reason);
    }
    let welcome = sunray_proto::encode(&HelloReply::Welcome {
        client_id: 0,
        node_id: None,
        upload_binary: false,
    });
    futures_util::SinkExt::send(&mut io, welcome)
        .await
        .map_err(|e| e.to_string())?;
    if matches!(hello.role, Role::Calls) {
        wire::authenticated(&mut io);
        calls(io);
        return Ok(());
    }
    let parts = io.into_parts();
    let (r, mut w) = parts.io.into_split();
    // The client waits for the welcome before it asks: nothing is buffered, but take
    // whatever is, in order.
    let mut r = AsyncReadExt::chain(std::io::Cursor::new(parts.read_buf.freeze()), r);
    let max = wire::max_message_bytes() as u64;
    loop {
        let op = match r.read_u8().await {
            Ok(op) => op,
            Err(_) => return Ok(()), // closed
        };
        let id = r.read_u64().await.map_err(|e| e.to_string())?;
        match op {
            GET => match store.get(id) {
                Some(b) => {
                    w.write_u64(b.len() as u64)
                        .await
                        .map_err(|e| e.to_string())?;
                    w.write_all(&b).await.map_err(|e| e.to_string())?;
                }
                None => w.write_u64(MISSING).await.map_err(|e| e.to_string())?,
            },
            PUT => {
                let size = r.read_u64().await.map_err(|e| e.to_string())?;
                if size > max {
                    return Err(format!("a put of {size} bytes is over the limit of {max}"));
                }
                let mut buf = BytesMut::zeroed(size as usize);
                r.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
                store.insert(id, buf.freeze());
                w.write_u8(STORED).await.map_err(|e| e.to_string())?;
            }
            other => return Err(format!("unknown request {other:#x}")),
        }
    }
}

/// A blocking connection to a node's object server (for drivers and workers).
fn connect(addr: &str, token: &str) -> Result<std::net::TcpStream, String> {
    let rt = crate::driver::runtime();
    let (io, _) = rt
        .block_on(wire::connect(addr, None, token, Role::Objects))
        .map_err(|e| e.to_string())?;
    let parts = io.into_parts();
    if !parts.read_buf.is_empty() {
        return Err("the object server sent more than its welcome".into());
    }
    let s = parts.io.into_std().map_err(|e| e.to_string())?;
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Reads object `id` from the node that holds it.
pub fn fetch(at: &Location, token: &str, id: ObjectId) -> Result<Bytes, String> {
    let here = local_stores().lock().unwrap().get(&at.addr).cloned();
    if let Some(store) = here {
        return store
            .get(id)
            .ok_or_else(|| format!("node {} no longer holds it", at.node));
    }
    let fail = |e: String| format!("cannot read it from node {} at {}: {e}", at.node, at.addr);
    let mut s = connect(&at.addr, token).map_err(fail)?;
    let mut req = [0u8; 9];
    req[0] = GET;
    req[1..].copy_from_slice(&id.to_be_bytes());
    s.write_all(&req).map_err(|e| fail(e.to_string()))?;
    let mut len = [0u8; 8];
    s.read_exact(&mut len).map_err(|e| fail(e.to_string()))?;
    let len = u64::from_be_bytes(len);
    if len == MISSING {
        return Err(format!("node {} no longer holds it", at.node));
    }
    // Zeroed pages come from the kernel untouched: the read is the only pass over them.
    let mut buf = BytesMut::zeroed(len as usize);
    s.read_exact(&mut buf).map_err(|e| fail(e.to_string()))?;
    Ok(buf.freeze())
}

/// Stores `data` as object `id` in the object store at `addr` (a worker's node).
pub fn push(addr: &str, token: &str, id: ObjectId, data: &[u8]) -> Result<(), String> {
    let fail = |e: String| format!("cannot store an object on this node ({addr}): {e}");
    let mut s = connect(addr, token).map_err(fail)?;
    let mut head = [0u8; 17];
    head[0] = PUT;
    head[1..9].copy_from_slice(&id.to_be_bytes());
    head[9..].copy_from_slice(&(data.len() as u64).to_be_bytes());
    s.write_all(&head).map_err(|e| fail(e.to_string()))?;
    s.write_all(data).map_err(|e| fail(e.to_string()))?;
    let mut ok = [0u8; 1];
    s.read_exact(&mut ok).map_err(|e| fail(e.to_string()))?;
    if ok[0] != STORED {
        return Err(fail(format!("unexpected answer {:#x}", ok[0])));
    }
    Ok(())
}
