//! The dashboard's HTTP side: a login with the cluster token (a cookie from then on; the
//! token is never in a URL or a log), the page, and the JSON it polls.
//!
//! Every answer carries a strict Content-Security-Policy: the only script a browser runs
//! is the page's own (named by its SHA-256), so text read from results folders or the
//! cluster can never run as script even if the page mishandled it. Guesses of the token
//! (the login form, `Authorization: Bearer`) go through a [`Throttle`]; sessions end
//! after [`SESSION_TTL`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::experiments::Library;
use crate::throttle::{Limits, Throttle};

const COOKIE: &str = "sunray_dashboard";
const PAGE: &str = include_str!("page.html");
const LOGIN: &str = include_str!("login.html");

/// How long a login lasts (the cookie's Max-Age, and checked here).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// What the dashboard shows and who may see it.
pub struct Options {
    /// The cluster token: the one password of the page.
    pub token: String,
    /// Results directories (Ray's layout) whose experiments the Tune view lists.
    pub results: Vec<PathBuf>,
    /// The head whose nodes and tasks the cluster view shows, if any.
    pub head: Option<String>,
    /// This user's sunray session directory (`/tmp/sunray-<uid>`): the logs it holds
    /// (heads' and nodes' `*.log`, a Slurm job's `head.log` and `nodes.log`) are shown.
    pub sessions: Option<PathBuf>,
    /// Mark the session cookie `Secure` (browsers then send it over HTTPS only): for a
    /// dashboard reached through a TLS-terminating proxy.
    pub secure_cookie: bool,
}

/// The session ids handed out, each with when it ends.
#[derive(Default)]
struct Sessions {
    until: HashMap<String, Instant>,
}

impl Sessions {
    fn open(&mut self, id: String, now: Instant) {
        self.until.retain(|_, end| *end > now);
        self.until.insert(id, now + SESSION_TTL);
    }

    /// Whether `id` is a session that has not ended (an ended one is forgotten).
    fn valid(&mut self, id: &str, now: Instant) -> bool {
        match self.until.get(id) {
            Some(end) if *end > now => true,
            Some(_) => {
                self.until.remove(id);
                false
            }
            None => false,
        }
    }

    fn close(&mut self, id: &str) {
        self.until.remove(id);
    }
}

struct App {
    token: String,
    head: Option<String>,
    session_dir: Option<PathBuf>,
    secure_cookie: bool,
    sessions: Mutex<Sessions>,
    throttle: Mutex<Throttle>,
    library: Mutex<Library>,
}

/// Serves the dashboard on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, opts: Options) -> std::io::Result<()> {
    let app = Arc::new(App {
        token: opts.token,
        head: opts.head,
        session_dir: opts.sessions,
        secure_cookie: opts.secure_cookie,
        sessions: Mutex::new(Sessions::default()),
        throttle: Mutex::new(Throttle::new(Limits::default())),
        library: Mutex::new(Library::new(opts.results)),
    });
    // Every API route answers token holders only: one check, in front of them all.
    let api = Router::new()
        .route("/api/experiments", get(experiments))
        .route("/api/experiment", get(experiment))
        .route("/api/curves", get(curves))
        .route("/api/cluster", get(cluster))
        .route("/api/logs", get(logs))
        .route("/api/log", get(log))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            only_allowed,
        ));
    let router = Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .merge(api)
        .with_state(app)
        .layer(axum::middleware::map_response(security_headers));
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

/// The `'sha256-…'` source of each inline `<tag>…</tag>` of `html` (what a browser
/// hashes: the exact text between the tags).
pub fn inline_hashes(html: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let Some(end) = body.find(&close) else { break };
        out.push(csp_hash(&body[..end]));
        rest = &body[end + close.len()..];
    }
    out
}

/// `'sha256-<base64 of the SHA-256 of text>'`, as a Content-Security-Policy names an
/// inline script or style.
pub fn csp_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The policy of every answer: nothing but the page's and the login form's own inline
/// script and style, fetches to this server, forms posted to it; no framing, no
/// `<base>`, no plugins, no images or fonts from anywhere.
pub static CONTENT_SECURITY_POLICY: LazyLock<String> = LazyLock::new(|| {
    let scripts = [PAGE, LOGIN].map(|p| inline_hashes(p, "script")).concat();
    let styles = [PAGE, LOGIN].map(|p| inline_hashes(p, "style")).concat();
    let script_src = if scripts.is_empty() {
        "'none'".to_string()
    } else {
        scripts.join(" ")
    };
    format!(
        "default-src 'none'; script-src {script_src}; style-src {}; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        styles.join(" ")
    )
});

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&CONTENT_SECURITY_POLICY) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // What the API answers is for the logged-in page only: never kept by a cache.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Who a request is.
enum Caller {
    /// A session cookie this server handed out, or the token as `Authorization: Bearer`.
    Allowed,
    Nobody,
    /// Too many wrong tokens lately: not checked; try again after this long.
    Throttled(Duration),
}

impl App {
    /// A request carries a session cookie this server handed out, or the token itself
    /// as `Authorization: Bearer` (for scripts; a guess, so throttled as the login is).
    fn caller(&self, headers: &HeaderMap, from: SocketAddr) -> Caller {
        let now = Instant::now();
        if let Some(bearer) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return match self.check_token(bearer, from, now) {
                Ok(true) => Caller::Allowed,
                Ok(false) => Caller::Nobody,
                Err(wait) => Caller::Throttled(wait),
            };
        }
        let mut sessions = self.sessions.lock().expect("not poisoned");
        if cookies(headers).any(|(k, v)| k == COOKIE && sessions.valid(v, now)) {
            Caller::Allowed
        } else {
            Caller::Nobody
        }
    }

    /// Compares a guess with the token, if the throttle lets `from` guess now.
    fn check_token(&self, guess: &str, from: SocketAddr, now: Instant) -> Result<bool, Duration> {
        self.throttle
            .lock()
            .expect("not poisoned")
            .attempt(from.ip(), now)?;
        let right = bool::from(guess.as_bytes().ct_eq(self.token.as_bytes()));
        if right {
            self.throttle
                .lock()
                .expect("not poisoned")
                .succeeded(from.ip(), now);
        }
        Ok(right)
    }
}

/// Whole seconds to wait, at least one (what `Retry-After` says).
fn retry_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

fn too_many(wait: Duration) -> Response {
    let secs = retry_secs(wait).max(1);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, secs.to_string())],
        Json(json!({"error": format!("too many wrong tokens lately: try again in {secs} s")})),
    )
        .into_response()
}

fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
}

/// Lets a request through to the API when [`App::caller`] says it may.
async fn only_allowed(
    State(app): State<Arc<App>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match app.caller(req.headers(), from) {
        Caller::Allowed => next.run(req).await,
        Caller::Nobody => refused(),
        Caller::Throttled(wait) => too_many(wait),
    }
}

fn refused() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "log in with the cluster token first (POST /login)"})),
    )
        .into_response()
}

fn login_page(status: StatusCode, message: &str) -> Response {
    let message = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    (status, Html(LOGIN.replace("{{message}}", &message))).into_response()
}

async fn index(
    State(app): State<Arc<App>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    match app.caller(&headers, from) {
        Caller::Allowed => Html(PAGE).into_response(),
        Caller::Nobody => login_page(StatusCode::OK, ""),
        Caller::Throttled(wait) => too_many(wait),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(app): State<Arc<App>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Form(f): Form<LoginForm>,
) -> Response {
    let now = Instant::now();
    match app.check_token(f.token.trim(), from, now) {
        Err(wait) => {
            let secs = retry_secs(wait).max(1);
            let mut r = login_page(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("Too many wrong tokens lately: try again in {secs} s."),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return r;
        }
        Ok(false) => {
            return login_page(
                StatusCode::UNAUTHORIZED,
                "That is not this cluster's token (see the head's session directory or `sunray start` output).",
            )
        }
        Ok(true) => {}
    }
    let mut id = [0u8; 16];
    if getrandom::fill(&mut id).is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "no randomness for a session",
        )
            .into_response();
    }
    let sid: String = id.iter().map(|b| format!("{b:02x}")).collect();
    app.sessions
        .lock()
        .expect("not poisoned")
        .open(sid.clone(), now);
    let secure = if app.secure_cookie { "; Secure" } else { "" };
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_string()),
            (
                header::SET_COOKIE,
                format!(
                    "{COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
                    SESSION_TTL.as_secs()
                ),
            ),
        ],
    )
        .into_response()
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let mut sessions = app.sessions.lock().expect("not poisoned");
    for (k, v) in cookies(&headers) {
        if k == COOKIE {
            sessions.close(v);
        }
    }
    let secure = if app.secure_cookie { "; Secure" } else { "" };
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_string()),
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}"),
            ),
        ],
    )
        .into_response()
}

async fn experiments(State(app): State<Arc<App>>) -> Response {
    let list = app.library.lock().expect("not poisoned").list();
    Json(json!({ "experiments": list })).into_response()
}

#[derive(Deserialize)]
struct Which {
    id: String,
    metric: Option<String>,
    x: Option<String>,
}

fn unknown(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no experiment {id:?} under the results directories")})),
    )
        .into_response()
}

async fn experiment(State(app): State<Arc<App>>, Query(w): Query<Which>) -> Response {
    let v = app.library.lock().expect("not poisoned").experiment(&w.id);
    match v {
        Some(v) => Json(v).into_response(),
        None => unknown(&w.id),
    }
}

async fn curves(State(app): State<Arc<App>>, Query(w): Query<Which>) -> Response {
    let Some(metric) = w.metric else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "name a metric: ?metric=loss"})),
        )
            .into_response();
    };
    let x = w.x.unwrap_or_else(|| "training_iteration".into());
    let c = app
        .library
        .lock()
        .expect("not poisoned")
        .curves(&w.id, &metric, &x);
    match c {
        Some(c) => Json(json!({"metric": metric, "x": x, "curves": c})).into_response(),
        None => unknown(&w.id),
    }
}

async fn cluster(State(app): State<Arc<App>>) -> Response {
    let Some(head) = &app.head else {
        return Json(json!({"head": null})).into_response();
    };
    match sunray_runtime::driver::query(head, &app.token, sunray_proto::Query::Status).await {
        Ok(view) => Json(json!({"head": head, "view": view})).into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(
                json!({"head": head, "error": format!("the head at {head} does not answer: {e}")}),
            ),
        )
            .into_response(),
    }
}

/// Most bytes of a log the page gets: its end.
const LOG_TAIL: u64 = 64 * 1024;

/// The `*.log` files under the session directory (three levels down at most), as
/// paths relative to it.
fn log_files(root: &std::path::Path) -> Vec<(String, u64)> {
    fn walk(
        root: &std::path::Path,
        dir: &std::path::Path,
        depth: u32,
        out: &mut Vec<(String, u64)>,
    ) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.filter_map(Result::ok) {
            let Ok(ft) = e.file_type() else { continue };
            let p = e.path();
            if ft.is_dir() && depth < 3 {
                walk(root, &p, depth + 1, out);
            } else if ft.is_file() && p.extension().is_some_and(|x| x == "log") {
                if let (Ok(rel), Ok(m)) = (p.strip_prefix(root), e.metadata()) {
                    out.push((rel.to_string_lossy().into_owned(), m.len()));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, 0, &mut out);
    out.sort();
    out
}

async fn logs(State(app): State<Arc<App>>) -> Response {
    let files = app
        .session_dir
        .as_deref()
        .map(log_files)
        .unwrap_or_default();
    let mut out: Vec<_> = files
        .into_iter()
        .map(|(name, bytes)| json!({"name": name, "bytes": bytes}))
        .collect();
    // What workers printed, kept by the head: per node, and per task that printed.
    if let Some(head) = &app.head {
        if let Ok(v) =
            sunray_runtime::driver::query(head, &app.token, sunray_proto::Query::Status).await
        {
            for n in v.nodes.iter().filter(|n| n.alive) {
                out.push(json!({
                    "name": format!("node:{}", n.id),
                    "label": format!("worker output on node {} ({})", n.id, n.ip),
                }));
            }
            for t in &v.outputs {
                out.push(json!({
                    "name": format!("task:{}", t.task),
                    "label": format!("task {} {:#x} on node {} ({} lines)", t.function, t.task, t.node, t.lines),
                    "task": t.task,
                    "function": t.function,
                }));
            }
        }
    }
    Json(json!({ "logs": out })).into_response()
}

/// The tail a node's workers or a task printed, as the head keeps it (`node:ID`,
/// `task:ID`).
async fn worker_output(app: &App, name: &str) -> Option<Response> {
    let (node, task) = match name.split_once(':')? {
        ("node", id) => (Some(id.parse().ok()?), None),
        ("task", id) => (None, Some(id.parse().ok()?)),
        _ => return None,
    };
    let head = app.head.as_ref()?;
    let q = sunray_proto::Query::Logs { node, task };
    Some(
        match sunray_runtime::driver::query(head, &app.token, q).await {
            Ok(v) => Json(json!({"name": name, "tail": v.log.join("\n")})).into_response(),
            Err(e) => (
                StatusCode::BAD_GATEWAY,
                Json(json!({"error": format!("the head at {head} does not answer: {e}")})),
            )
                .into_response(),
        },
    )
}

#[derive(Deserialize)]
struct LogName {
    name: String,
}

async fn log(State(app): State<Arc<App>>, Query(q): Query<LogName>) -> Response {
    use std::io::{Read, Seek, SeekFrom};
    if let Some(r) = worker_output(&app, &q.name).await {
        return r;
    }
    // Only a file the listing names: no path from the request reaches the disk.
    let Some(root) = app.session_dir.as_deref() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no session directory"})),
        )
            .into_response();
    };
    if !log_files(root).iter().any(|(n, _)| *n == q.name) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no log {:?}", q.name)})),
        )
            .into_response();
    }
    let path = root.join(&q.name);
    let mut text = Vec::new();
    let read = std::fs::File::open(&path).and_then(|mut f| {
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL)))?;
        f.read_to_end(&mut text)
    });
    match read {
        Ok(_) => {
            Json(json!({"name": q.name, "tail": String::from_utf8_lossy(&text)})).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": format!("cannot read {}: {e}", q.name)})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_after_its_time() {
        let t0 = Instant::now();
        let mut s = Sessions::default();
        s.open("a".into(), t0);
        assert!(s.valid("a", t0 + SESSION_TTL - Duration::from_secs(1)));
        assert!(!s.valid("b", t0));
        assert!(!s.valid("a", t0 + SESSION_TTL));
        // Forgotten once ended, and ended ones are dropped when another opens.
        assert!(s.until.is_empty());
        s.open("c".into(), t0);
        s.open("d".into(), t0 + SESSION_TTL + Duration::from_secs(1));
        assert_eq!(s.until.len(), 1);
        s.close("d");
        assert!(!s.valid("d", t0 + SESSION_TTL + Duration::from_secs(2)));
    }

    #[test]
    fn the_policy_names_the_pages_own_script_and_styles_by_hash() {
        // The SHA-256 of nothing, as every CSP implementation writes it.
        assert_eq!(
            csp_hash(""),
            "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
        );
        let scripts = inline_hashes(PAGE, "script");
        assert_eq!(scripts.len(), 1, "the page has one inline script");
        assert!(inline_hashes(LOGIN, "script").is_empty());
        let csp = CONTENT_SECURITY_POLICY.as_str();
        let directive = |name: &str| {
            csp.split(';')
                .map(str::trim)
                .find_map(|d| d.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {csp}"))
                .trim()
                .to_string()
        };
        assert_eq!(directive("script-src "), scripts[0]);
        let styles = directive("style-src ");
        for h in inline_hashes(PAGE, "style")
            .into_iter()
            .chain(inline_hashes(LOGIN, "style"))
        {
            assert!(styles.contains(&h), "{h} in {styles}");
        }
        assert_eq!(directive("default-src "), "'none'");
        assert!(!csp.contains("unsafe"), "{csp}");
        // Neither page has inline event handlers or style attributes a hash cannot
        // allow.
        for page in [PAGE, LOGIN] {
            assert!(!page.contains(" style=") && !page.contains(" onclick="));
        }
    }
}
