use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Args)]
pub struct DashboardArgs {
    /// Head whose nodes and tasks to show (default: $SUNRAY_ADDRESS, or the only head
    /// on this host; none: only the Tune view).
    #[arg(long)]
    address: Option<String>,
    /// Results directories whose experiments to show (Ray's layout; default:
    /// $SUNRAY_STORAGE_PATH, else ~/sunray_results).
    #[arg(long, num_args = 1..)]
    results: Vec<PathBuf>,
    /// Port to serve on (Ray's dashboard port by default).
    #[arg(long, default_value_t = 8265)]
    port: u16,
    /// Address to listen on. Loopback by default: reach it from elsewhere through
    /// `ssh -L 8265:127.0.0.1:8265 host`; anything else must be asked for.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// The password of the page: the cluster's token (default: found as `sunray status`
    /// finds it).
    #[arg(long, env = "SUNRAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the token from this file (it wins over --token and SUNRAY_TOKEN); at least
    /// 16 characters, as `sunray start --token` asks.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Mark the session cookie `Secure`: set it when the page is reached over HTTPS
    /// (a TLS-terminating reverse proxy in front); browsers then never send the
    /// cookie over plain HTTP.
    #[arg(long)]
    secure_cookie: bool,
}

pub fn run(a: DashboardArgs) -> anyhow::Result<()> {
    crate::init_logging("warn");
    let head = match &a.address {
        Some(_) => Some(crate::resolve_address(a.address.clone())?),
        None => crate::resolve_address(None).ok(),
    };
    let token = match (&head, &a.token_file) {
        (_, Some(f)) => crate::read_token_file(f)?,
        (Some(h), None) => crate::resolve_token(a.token.clone(), None, h)?,
        (None, None) => a.token.clone().filter(|t| !t.is_empty()).ok_or_else(|| {
            anyhow::anyhow!(
                "no cluster runs on this host, so there is no token to log in with: pass --address of a head, or --token-file with a secret of your choosing"
            )
        })?,
    };
    // The page's one password: guessable if short, whoever chose it.
    sunray_runtime::local::check_chosen_token(&token).with_context(|| match &a.token_file {
        Some(f) => format!("the token in {} cannot guard the dashboard", f.display()),
        None => "this token cannot guard the dashboard".to_string(),
    })?;
    let results = if a.results.is_empty() {
        default_results()
    } else {
        a.results.clone()
    };
    let addr = SocketAddr::new(a.bind, a.port);
    sunray_runtime::driver::runtime().block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (another dashboard there? pick --port)"))?;
        let addr = listener.local_addr()?;
        println!("sunray dashboard on http://{addr}/ (log in with the cluster token)");
        if addr.ip().is_loopback() {
            println!("from another machine: ssh -L {0}:127.0.0.1:{0} <this host>, then open http://127.0.0.1:{0}/", addr.port());
        }
        for r in &results {
            println!("results: {}", r.display());
        }
        if let Some(h) = &head {
            println!("cluster: {h}");
        }
        let sessions = Some(sunray_runtime::session::base_dir());
        let secure_cookie = a.secure_cookie;
        sunray_dashboard::serve(listener, sunray_dashboard::Options { token, results, head, sessions, secure_cookie })
            .await
            .context("dashboard server")
    })
}

/// Where Tune writes experiments when a script names no storage path.
fn default_results() -> Vec<PathBuf> {
    vec![std::env::var_os("SUNRAY_STORAGE_PATH")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join("sunray_results")))
        .unwrap_or_else(|| PathBuf::from("sunray_results"))]
}

/// `sunray start --head --dashboard-port P`: the dashboard in the head's process, on a
/// thread and runtime of its own (its file reads never hold up the head's loop).
pub(crate) fn serve_beside_head(
    session_dir: &std::path::Path,
    head: &str,
    bind: IpAddr,
    port: u16,
) -> anyhow::Result<()> {
    let token = crate::read_token_file(&session_dir.join("token"))?;
    let addr = SocketAddr::new(bind, port);
    let listener = std::net::TcpListener::bind(addr).with_context(|| {
        format!("cannot serve the dashboard on {addr} (port taken? pick another --dashboard-port)")
    })?;
    listener.set_nonblocking(true)?;
    let opts = sunray_dashboard::Options {
        token,
        results: default_results(),
        head: Some(head.to_string()),
        sessions: Some(sunray_runtime::session::base_dir()),
        secure_cookie: false,
    };
    std::thread::Builder::new()
        .name("dashboard".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return tracing::error!("dashboard: no runtime: {e}"),
            };
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => {
                        if let Err(e) = sunray_dashboard::serve(l, opts).await {
                            tracing::error!("dashboard stopped: {e}");
                        }
                    }
                    Err(e) => tracing::error!("dashboard: {e}"),
                }
            })
        })?;
    tracing::info!("dashboard on http://{addr}/");
    Ok(())
}
