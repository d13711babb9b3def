//! Framed connections and the authenticated handshake.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream::SplitSink, SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use sunray_proto::{
    auth, decode, encode, ClientId, ClientProof, Hello, HelloReply, Nonce, Role,
    DEFAULT_MAX_MESSAGE_BYTES, MAX_HELLO_BYTES, PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::{env, Error};

pub type FramedIo<S> = Framed<S, LengthDelimitedCodec>;

/// How long a peer may take to complete the handshake.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest frame an authenticated peer may send: `$SUNRAY_MAX_MESSAGE_MB` MiB, else
/// [`DEFAULT_MAX_MESSAGE_BYTES`]. Read once per process.
pub fn max_message_bytes() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        match std::env::var(env::MAX_MESSAGE_MB)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            // Frame lengths are 32-bit.
            Some(mb) if mb > 0 => mb.saturating_mul(1 << 20).min(u32::MAX as usize),
            _ => DEFAULT_MAX_MESSAGE_BYTES,
        }
    })
}

/// The codec of a connection that has not authenticated yet: frames of a hello's size.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_HELLO_BYTES)
        .new_codec()
}

/// The codec of an authenticated connection.
pub fn authenticated_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max_message_bytes())
        .new_codec()
}

pub fn framed<S: AsyncRead + AsyncWrite>(io: S) -> FramedIo<S> {
    Framed::new(io, codec())
}

/// Lifts the frame limit of a connection once its peer has authenticated.
pub fn authenticated<S>(io: &mut FramedIo<S>) {
    io.codec_mut().set_max_frame_length(max_message_bytes());
}

/// Compares tokens in time independent of where they differ.
pub fn token_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

fn nonce() -> Nonce {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).expect("the OS random source works");
    n
}

/// Checks that `address` reads as HOST:PORT.
pub fn check_address(address: &str) -> Result<(), String> {
    let bad = || format!("invalid address {address:?}: expected HOST:PORT, like 127.0.0.1:6379");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match port.parse::<u16>() {
        Ok(p) if p > 0 && !host.is_empty() => Ok(()),
        _ => Err(bad()),
    }
}

/// What to tell a user who has no token for `address`: that the address is invalid,
/// that nothing answers there, or (only when a head answers) that its token is missing.
/// Blocks up to 3 s.
pub fn explain_missing_token(address: &str) -> String {
    use std::net::ToSocketAddrs;
    if let Err(e) = check_address(address) {
        return e;
    }
    let target = match address.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return format!("cannot reach head at {address}: the name resolves to no address")
        }
        Err(e) => return format!("cannot reach head at {address}: {e}"),
    };
    match std::net::TcpStream::connect_timeout(&target, Duration::from_secs(3)) {
        Err(e) => format!(
            "nothing answers at {address} ({e}): is the head running there (`sunray start --head`)?"
        ),
        Ok(_) => format!(
            "no token for the cluster at {address}: pass --token-file, --token or SUNRAY_TOKEN (the head's session directory holds it in a file named token)"
        ),
    }
}

/// Connects to the head, optionally from a given local IP (so that nodes on one host
/// show distinct addresses), and completes the handshake.
pub async fn connect(
    address: &str,
    bind_ip: Option<IpAddr>,
    token: &str,
    role: Role,
) -> Result<(FramedIo<TcpStream>, HelloReply), Error> {
    check_address(address).map_err(Error::Config)?;
    let unreachable = |cause| Error::Unreachable {
        address: address.to_string(),
        cause,
    };
    let target: SocketAddr = tokio::net::lookup_host(address)
        .await
        .map_err(unreachable)?
        .next()
        .ok_or_else(|| {
            unreachable(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "address resolves to nothing",
            ))
        })?;
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(unreachable)?;
    if let Some(ip) = bind_ip {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| Error::io(format!("cannot use local address {ip}"), e))?;
    }
    let stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(target))
        .await
        .map_err(|_| {
            unreachable(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer within 10 s",
            ))
        })?
        .map_err(unreachable)?;
    stream.set_nodelay(true).ok();
    handshake(framed(stream), address, token, role).await
}

/// Connects to the head's Unix socket in its session directory (same host) and completes
/// the handshake; `address` names the head in errors.
pub async fn connect_unix(
    path: &std::path::Path,
    address: &str,
    token: &str,
    role: Role,
) -> Result<(FramedIo<UnixStream>, HelloReply), Error> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|cause| Error::Unreachable {
            address: format!("{address} (local socket {})", path.display()),
            cause,
        })?;
    handshake(framed(stream), address, token, role).await
}

/// The client's side of the handshake (see `sunray_proto::auth`): proves it knows
/// `token` without sending it and checks that the head knows it too; a refusal is an
/// error.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: FramedIo<S>,
    address: &str,
    token: &str,
    role: Role,
) -> Result<(FramedIo<S>, HelloReply), Error> {
    let hello = encode(&Hello {
        version: PROTOCOL_VERSION,
        nonce: nonce(),
        role,
        job_key: auth::credential_job(token),
    });
    let unreachable = |cause| Error::Unreachable {
        address: address.to_string(),
        cause,
    };
    io.send(hello.clone()).await.map_err(unreachable)?;
    let (head_nonce, head_proof) = match read_reply(&mut io, address).await? {
        HelloReply::Challenge { nonce, proof } => (nonce, proof),
        HelloReply::Refused { reason } => {
            // A head before protocol 4 cannot read this hello at all.
            let hint = if reason.starts_with("malformed hello") {
                " (the head may run another sunray version: use the same version everywhere)"
            } else {
                ""
            };
            return Err(Error::Refused {
                address: address.to_string(),
                reason: format!("{reason}{hint}"),
            });
        }
        HelloReply::Welcome { .. } => {
            return Err(Error::Protocol {
                peer: address.to_string(),
                message: "the head welcomed us without a challenge (is this a sunray head of the same version?)".into(),
            })
        }
    };
    let transcript = auth::Transcript::new(&hello, &head_nonce);
    if !auth::verify_head(token, &transcript, &head_proof) {
        // No proof of ours goes to a peer that could not prove it knows the token: an
        // impostor gets nothing to test guesses against.
        return Err(Error::Refused {
            address: address.to_string(),
            reason: "wrong cluster token, or this is not your head: the head could not prove it knows your token (pass the token printed by `sunray start --head` with --token-file, --token or SUNRAY_TOKEN)".into(),
        });
    }
    let proof = ClientProof {
        proof: auth::client_proof(token, &transcript),
    };
    io.send(encode(&proof)).await.map_err(unreachable)?;
    match read_reply(&mut io, address).await? {
        HelloReply::Refused { reason } => Err(Error::Refused {
            address: address.to_string(),
            reason,
        }),
        reply @ HelloReply::Welcome { .. } => {
            authenticated(&mut io);
            Ok((io, reply))
        }
        HelloReply::Challenge { .. } => Err(Error::Protocol {
            peer: address.to_string(),
            message: "the head sent a second challenge".into(),
        }),
    }
}

async fn read_reply<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut FramedIo<S>,
    address: &str,
) -> Result<HelloReply, Error> {
    let reply = tokio::time::timeout(HELLO_TIMEOUT, io.next())
        .await
        .map_err(|_| Error::Timeout(format!("head at {address} did not answer the handshake")))?;
    let frame = match reply {
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            return Err(Error::Unreachable {
                address: address.to_string(),
                cause: e,
            })
        }
        None => {
            return Err(Error::Refused {
                address: address.to_string(),
                reason: "connection closed during the handshake (is this a sunray head?)".into(),
            })
        }
    };
    decode(&frame).map_err(|e| Error::Protocol {
        peer: address.to_string(),
        message: format!("{e} (is this a sunray head of the same version?)"),
    })
}

/// The head's side of the handshake: reads the hello (a frame of at most
/// `MAX_HELLO_BYTES`), checks the protocol version, challenges the peer and checks its
/// proof. `Err` is the reason to send back with `Refused` (and to log). On success the
/// connection takes authenticated frames.
pub async fn accept_hello<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut FramedIo<S>,
    token: &str,
) -> Result<Hello, String> {
    tokio::time::timeout(HELLO_TIMEOUT, accept_hello_inner(io, token))
        .await
        .map_err(|_| format!("no complete handshake within {} s", HELLO_TIMEOUT.as_secs()))?
}

async fn accept_hello_inner<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut FramedIo<S>,
    token: &str,
) -> Result<Hello, String> {
    let frame = next_frame(io, "hello").await?;
    // The version comes first in every protocol's hello: check it before the rest, so
    // that an older or newer peer is told what is wrong.
    let (version, _) =
        postcard::take_from_bytes::<u32>(&frame).map_err(|e| format!("malformed hello: {e}"))?;
    if version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {version} does not match the head's {PROTOCOL_VERSION}: use the same sunray version everywhere"
        ));
    }
    let hello: Hello = decode(&frame).map_err(|e| format!("malformed hello: {e}"))?;
    let key = auth::key_for(token, hello.job_key);
    let head_nonce = nonce();
    let transcript = auth::Transcript::new(&frame, &head_nonce);
    let challenge = HelloReply::Challenge {
        nonce: head_nonce,
        proof: auth::head_proof(&key, &transcript),
    };
    io.send(encode(&challenge))
        .await
        .map_err(|e| format!("write error during the handshake: {e}"))?;
    let answer = next_frame(io, "proof (a client whose token differs stops here)").await?;
    let proof: ClientProof = decode(&answer).map_err(|e| format!("malformed proof: {e}"))?;
    if !auth::verify_client(&key, &transcript, &proof.proof) {
        return Err(
            "wrong cluster token: pass the token printed by `sunray start --head` with --token-file, --token or SUNRAY_TOKEN"
                .into(),
        );
    }
    if let Some(job) = hello.job_key {
        worker_may(&hello.role, job)?;
    }
    authenticated(io);
    Ok(hello)
}

/// What a job's credential (a worker's: see `sunray_proto::auth`) lets its holder do:
/// submit tasks for that job, read and store objects, call actors; never join as a node,
/// query the cluster, fetch executables or act for another job.
fn worker_may(role: &Role, job: ClientId) -> Result<(), String> {
    match role {
        Role::Driver { job: Some(j), .. } if *j == job => Ok(()),
        Role::Objects | Role::Calls => Ok(()),
        _ => Err(format!(
            "a worker's credential (job {job}) only submits tasks for its own job, reads objects and calls actors: it cannot connect as {}",
            role_name(role)
        )),
    }
}

fn role_name(role: &Role) -> &'static str {
    match role {
        Role::Driver { job: None, .. } => "a driver",
        Role::Driver { job: Some(_), .. } => "a worker of another job",
        Role::Node(_) => "a node",
        Role::Query => "a query",
        Role::FetchBinary { .. } => "a node fetching an executable",
        Role::Objects | Role::Calls => "a reader",
    }
}

async fn next_frame<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut FramedIo<S>,
    what: &str,
) -> Result<bytes::BytesMut, String> {
    match io.next().await {
        None => Err(format!("closed before the {what}")),
        Some(Err(e)) => Err(format!("read error before the {what}: {e}")),
        Some(Ok(frame)) => Ok(frame),
    }
}

/// Sends every message of `rx` to `sink`, batching whatever is queued into one flush.
pub async fn pump_out<S, T>(
    mut sink: SplitSink<FramedIo<S>, Bytes>,
    mut rx: mpsc::UnboundedReceiver<T>,
) where
    S: AsyncRead + AsyncWrite,
    T: Serialize,
{
    while let Some(msg) = rx.recv().await {
        if sink.feed(encode(&msg)).await.is_err() {
            return;
        }
        let mut n = 0;
        while let Ok(msg) = rx.try_recv() {
            if sink.feed(encode(&msg)).await.is_err() {
                return;
            }
            n += 1;
            if n == 256 {
                if sink.flush().await.is_err() {
                    return;
                }
                n = 0;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

/// Reads messages of `stream` until it ends; returns why it ended.
pub async fn pump_in<St, T, F>(stream: St, f: F) -> String
where
    St: futures_util::Stream<Item = Result<bytes::BytesMut, std::io::Error>> + Unpin,
    T: DeserializeOwned,
    F: FnMut(T) -> bool,
{
    pump_in_within(stream, None, f).await
}

/// How [`pump_in_within`]'s reason starts when the peer went silent.
pub const SILENT: &str = "silent for";

/// [`pump_in`], ending when no frame arrives within `silence` (the peer sends
/// heartbeats, so it is gone or stopped).
pub async fn pump_in_within<St, T, F>(mut stream: St, silence: Option<Duration>, mut f: F) -> String
where
    St: futures_util::Stream<Item = Result<bytes::BytesMut, std::io::Error>> + Unpin,
    T: DeserializeOwned,
    F: FnMut(T) -> bool,
{
    loop {
        let next = match silence {
            None => stream.next().await,
            Some(limit) => match tokio::time::timeout(limit, stream.next()).await {
                Ok(next) => next,
                Err(_) => return format!("{SILENT} {} s", limit.as_secs_f64()),
            },
        };
        match next {
            None => return "connection closed".into(),
            Some(Err(e)) => return format!("read error: {e}"),
            Some(Ok(frame)) => match decode::<T>(&frame) {
                Ok(msg) => {
                    if !f(msg) {
                        return "receiver gone".into();
                    }
                }
                Err(e) => return format!("malformed message: {e}"),
            },
        }
    }
}

/// Writes frames on a socket from a plain thread, in one `write` when they fit (the
/// socket may be non-blocking, since it shares its file description with the async
/// reader).
pub fn write_frames_blocking<W>(s: &mut W, bodies: &[&[u8]]) -> std::io::Result<()>
where
    W: std::io::Write + std::os::fd::AsRawFd + ?Sized,
{
    use std::io::ErrorKind;
    let mut buf = Vec::with_capacity(bodies.iter().map(|b| 4 + b.len()).sum());
    for body in bodies {
        let len = u32::try_from(body.len())
            .map_err(|_| std::io::Error::new(ErrorKind::InvalidInput, "message over 4 GiB"))?;
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(body);
    }
    // A peer that reads nothing for the heartbeat timeout is as good as gone.
    let stall = crate::heartbeat_timeout();
    let mut off = 0;
    while off < buf.len() {
        match s.write(&buf[off..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd: s.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                let ms = stall.as_millis().min(i32::MAX as u128) as i32;
                if unsafe { libc::poll(&mut pfd, 1, ms) } == 0 {
                    return Err(std::io::Error::new(
                        ErrorKind::TimedOut,
                        format!("the head has read nothing for {} s", stall.as_secs_f64()),
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_must_read_as_host_and_port() {
        for ok in ["127.0.0.1:6379", "[::1]:80", "head-node:1"] {
            assert!(check_address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "nonsense",
            "127.0.0.1",
            ":6379",
            "host:0",
            "host:99999",
            "host:x",
        ] {
            let e = check_address(bad).unwrap_err();
            assert!(e.contains("HOST:PORT"), "{bad}: {e}");
        }
    }

    /// Runs the handshake between a head holding `token` and a client holding `secret`
    /// over an in-memory pipe: the head's verdict (the client agrees with it).
    fn hello(token: &str, secret: &str, role: Role) -> Result<Hello, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, b) = tokio::io::duplex(1 << 16);
            let head = async {
                let mut io = framed(b);
                let verdict = accept_hello(&mut io, token).await;
                let reply = match &verdict {
                    Ok(_) => HelloReply::Welcome {
                        client_id: 1,
                        node_id: None,
                        upload_binary: false,
                    },
                    Err(reason) => HelloReply::Refused {
                        reason: reason.clone(),
                    },
                };
                let _ = io.send(encode(&reply)).await;
                verdict
            };
            let (verdict, client) = tokio::join!(head, handshake(framed(a), "head", secret, role));
            assert_eq!(verdict.is_ok(), client.is_ok(), "{verdict:?}");
            verdict
        })
    }

    fn driver(job: Option<ClientId>) -> Role {
        Role::Driver {
            binary: sunray_proto::BinaryInfo {
                path: "/bin/true".into(),
                hash: "0".repeat(32),
                size: 1,
                registry_hash: String::new(),
                kind: sunray_proto::ProgramKind::Native,
            },
            hostname: "h".into(),
            pid: 1,
            job,
        }
    }

    #[test]
    fn a_job_credential_does_what_a_worker_does_and_nothing_else() {
        let token = "the-cluster-token-0123";
        let cred = auth::job_credential(token, 5);
        for role in [driver(Some(5)), Role::Objects, Role::Calls] {
            let h = hello(token, &cred, role).unwrap();
            assert_eq!(h.job_key, Some(5));
        }
        let node = Role::Node(sunray_proto::NodeRegistration {
            ip: "127.0.0.1".into(),
            hostname: "h".into(),
            pid: 1,
            resources: Default::default(),
            gpu_ids: vec![],
        });
        for (role, what) in [
            (node, "as a node"),
            (driver(None), "as a driver"),
            (driver(Some(6)), "another job"),
            (Role::Query, "a query"),
            (
                Role::FetchBinary {
                    hash: "0".repeat(32),
                },
                "executable",
            ),
        ] {
            let e = hello(token, &cred, role).unwrap_err();
            assert!(e.contains("worker's credential") && e.contains(what), "{e}");
        }
        // Another job's credential, or one made from another token, is no key at all.
        let other = auth::job_credential("another-cluster-token", 5);
        assert!(hello(token, &other, driver(Some(5)))
            .unwrap_err()
            .contains("token differs"));
        // The cluster token still does everything.
        assert_eq!(hello(token, token, driver(None)).unwrap().job_key, None);
        assert!(hello(token, token, Role::Query).is_ok());
    }

    #[test]
    fn token_comparison() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("ab", "abc"));
        assert!(!token_matches("", "abc"));
    }
}
