//! Starting a head together with the node agent of its own host: used by
//! `sunray start --head` and by the embedded cluster of `sunray::init()`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use sunray_proto::{NodeRegistration, Resources};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::head::{self, HeadShared};
use crate::node::{self, NodeConfig, NodeLink};
use crate::session::{self, Session, SessionInfo};
use crate::{detect, Error};

#[derive(Debug, Clone)]
pub struct HeadOptions {
    /// "head" for `sunray start`, "local" for an embedded cluster.
    pub kind: String,
    pub bind_ip: Option<IpAddr>,
    /// The address others use to reach this host.
    pub node_ip: IpAddr,
    pub port: u16,
    pub token: Option<String>,
    pub resources: Resources,
    pub gpu_ids: Vec<String>,
}

impl HeadOptions {
    /// An embedded cluster with this host's CPUs and GPUs, on loopback.
    pub fn embedded() -> HeadOptions {
        let gpus = detect::gpu_ids();
        HeadOptions {
            kind: "local".into(),
            bind_ip: Some(IpAddr::from([127, 0, 0, 1])),
            node_ip: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            token: None,
            resources: Resources {
                cpu: detect::cpus() as f64,
                gpu: gpus.len() as f64,
                ..Default::default()
            },
            gpu_ids: gpus,
        }
    }
}

pub struct StartedHead {
    pub address: String,
    pub token: String,
    pub session: Session,
    pub shared: Arc<HeadShared>,
    pub node: tokio::task::JoinHandle<()>,
    /// The tasks accepting connections (TCP and the local socket).
    pub listeners: Vec<tokio::task::JoinHandle<()>>,
}

impl StartedHead {
    /// Stops the cluster in this process: its node agent kills its workers, the head
    /// stops listening and its session directory is removed.
    pub async fn stop(self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self
            .shared
            .events
            .send(head::Event::Query(sunray_proto::Query::Shutdown, tx));
        let _ = rx.await;
        let _ = self.node.await;
        let _ = self.shared.events.send(head::Event::Stop);
        for l in self.listeners {
            l.abort();
        }
        self.session.remove();
    }
}

/// Binds the port, starts the head and its own node; returns once both take work. On
/// failure nothing is left behind (the session directory is removed).
pub async fn start_head(opts: HeadOptions) -> Result<StartedHead, Error> {
    let session = Session::create(&opts.kind)?;
    let started = start_in(opts, session.clone()).await;
    if started.is_err() {
        session.remove();
    }
    started
}

/// Shortest cluster token a user may choose: the handshake shows anyone who connects a
/// MAC under the token, so a short one could be guessed offline.
pub const MIN_TOKEN_LEN: usize = 16;

/// Refuses a token a user chose that is shorter than [`MIN_TOKEN_LEN`] (`sunray start
/// --token`, `sunray dashboard --token-file`), saying how to make a good one.
pub fn check_chosen_token(token: &str) -> Result<(), Error> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(Error::Config(format!(
            "a cluster token must be at least {MIN_TOKEN_LEN} characters (without --token, sunray makes a random 64-character one; `openssl rand -hex 32` makes one too)"
        )));
    }
    Ok(())
}

async fn start_in(opts: HeadOptions, session: Session) -> Result<StartedHead, Error> {
    if let Some(t) = &opts.token {
        check_chosen_token(t)?;
    }
    let token = opts.token.clone().unwrap_or_else(session::new_token);
    session.write_token(&token)?;
    let bind = SocketAddr::new(
        opts.bind_ip.unwrap_or(IpAddr::from([0, 0, 0, 0])),
        opts.port,
    );
    let listener = TcpListener::bind(bind).await.map_err(|e| {
        Error::io(
            format!("cannot listen on {bind} (is another cluster using port {}? pick another with --port, or --port 0 for any free one)", opts.port),
            e,
        )
    })?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("local address", e))?
        .port();
    let address = SocketAddr::new(opts.node_ip, port).to_string();
    let shared = head::start(token.clone(), session.bin_dir());
    let mut listeners = vec![tokio::spawn(head::serve(listener, shared.clone()))];
    match tokio::net::UnixListener::bind(session.head_socket()) {
        Ok(l) => {
            listeners.push(tokio::spawn(head::serve_unix(l, shared.clone())));
        }
        // Not fatal: drivers on this host then use TCP like the others.
        Err(e) => tracing::warn!(
            "no local socket at {} ({e}); local drivers use TCP",
            session.head_socket().display()
        ),
    }

    let node_id = shared.next_id();
    let reg = NodeRegistration {
        ip: opts.node_ip.to_string(),
        hostname: detect::hostname(),
        pid: std::process::id(),
        resources: opts.resources.clone(),
        gpu_ids: opts.gpu_ids.clone(),
    };
    let (to_head, mut from_node) = mpsc::unbounded_channel();
    let (to_node, from_head) = mpsc::unbounded_channel();
    let _ = shared.events.send(head::Event::NodeJoined {
        node: node_id,
        reg,
        tx: to_node,
        is_head: true,
    });
    let events = shared.events.clone();
    tokio::spawn(async move {
        while let Some(m) = from_node.recv().await {
            if events.send(head::Event::FromNode(node_id, m)).is_err() {
                break;
            }
        }
        let _ = events.send(head::Event::NodeLeft(
            node_id,
            "head's node agent stopped".into(),
        ));
    });
    let cfg = NodeConfig {
        ip: opts.node_ip.to_string(),
        token: token.clone(),
        session: session.clone(),
        total: head::to_request(&opts.resources),
        gpu_ids: opts.gpu_ids.clone(),
        head_address: SocketAddr::new(
            if bind.ip().is_unspecified() {
                opts.node_ip
            } else {
                bind.ip()
            },
            port,
        )
        .to_string(),
    };
    let link = NodeLink {
        node_id,
        to_head,
        from_head,
        silent_head: Default::default(),
    };
    let node = tokio::spawn(async move {
        if let Err(e) = node::run(cfg, link).await {
            tracing::error!("node agent failed: {e}");
        }
    });
    session.write_info(&SessionInfo::of_this_process(
        &opts.kind,
        Some(address.clone()),
        opts.node_ip.to_string(),
    ))?;
    Ok(StartedHead {
        address,
        token,
        session,
        shared,
        node,
        listeners,
    })
}
