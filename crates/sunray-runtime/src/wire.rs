//! Framed connections and the authenticated handshake.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream::SplitSink, SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use sunray_proto::{decode, encode, Hello, HelloReply, Role, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::Error;

pub type FramedIo<S> = Framed<S, LengthDelimitedCodec>;

/// How long a peer may take to say hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

pub fn framed<S: AsyncRead + AsyncWrite>(io: S) -> FramedIo<S> {
    Framed::new(io, codec())
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

/// Connects to the head, optionally from a given local IP (so that nodes on one host
/// show distinct addresses), and completes the handshake.
pub async fn connect(
    address: &str,
    bind_ip: Option<IpAddr>,
    token: &str,
    role: Role,
) -> Result<(FramedIo<TcpStream>, HelloReply), Error> {
    let unreachable = |source| Error::Unreachable {
        address: address.to_string(),
        source,
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
        .map_err(|source| Error::Unreachable {
            address: format!("{address} (local socket {})", path.display()),
            source,
        })?;
    handshake(framed(stream), address, token, role).await
}

/// Says hello with `token` and reads the head's answer; a refusal is an error.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: FramedIo<S>,
    address: &str,
    token: &str,
    role: Role,
) -> Result<(FramedIo<S>, HelloReply), Error> {
    let unreachable = |source| Error::Unreachable {
        address: address.to_string(),
        source,
    };
    let hello = Hello {
        version: PROTOCOL_VERSION,
        token: token.to_string(),
        role,
    };
    io.send(encode(&hello)).await.map_err(unreachable)?;
    let reply = tokio::time::timeout(HELLO_TIMEOUT, io.next())
        .await
        .map_err(|_| Error::Timeout(format!("head at {address} did not answer the handshake")))?;
    let frame = match reply {
        Some(Ok(f)) => f,
        Some(Err(e)) => return Err(unreachable(e)),
        None => {
            return Err(Error::Refused {
                address: address.to_string(),
                reason: "connection closed during the handshake (is this a sunray head?)".into(),
            })
        }
    };
    let reply: HelloReply = decode(&frame).map_err(|e| Error::Protocol {
        peer: address.to_string(),
        message: format!("{e} (is this a sunray head of the same version?)"),
    })?;
    if let HelloReply::Refused { reason } = &reply {
        return Err(Error::Refused {
            address: address.to_string(),
            reason: reason.clone(),
        });
    }
    Ok((io, reply))
}

/// Reads the first frame of an accepted connection as a [`Hello`].
pub async fn read_hello<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut FramedIo<S>,
) -> Result<Hello, String> {
    match tokio::time::timeout(HELLO_TIMEOUT, io.next()).await {
        Err(_) => Err("no hello within 10 s".into()),
        Ok(None) => Err("closed before hello".into()),
        Ok(Some(Err(e))) => Err(format!("read error before hello: {e}")),
        Ok(Some(Ok(frame))) => decode::<Hello>(&frame).map_err(|e| format!("malformed hello: {e}")),
    }
}

/// Checks version and token; the reason is sent to the peer and logged on this side.
pub fn check_hello(hello: &Hello, token: &str) -> Result<(), String> {
    if hello.version != sunray_proto::PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} does not match the head's {}: use the same sunray version everywhere",
            hello.version, PROTOCOL_VERSION
        ));
    }
    if !token_matches(&hello.token, token) {
        return Err(
            "wrong cluster token: pass the token printed by `sunray start --head` with --token or SUNRAY_TOKEN"
                .into(),
        );
    }
    Ok(())
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
pub async fn pump_in<St, T, F>(mut stream: St, mut f: F) -> String
where
    St: futures_util::Stream<Item = Result<bytes::BytesMut, std::io::Error>> + Unpin,
    T: DeserializeOwned,
    F: FnMut(T) -> bool,
{
    loop {
        match stream.next().await {
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
        buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
        buf.extend_from_slice(body);
    }
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
                unsafe { libc::poll(&mut pfd, 1, -1) };
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
    fn token_comparison() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("ab", "abc"));
        assert!(!token_matches("", "abc"));
    }
}
