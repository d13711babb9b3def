//! The dashboard's HTTP side: a login with the cluster token (a cookie from then on; the
//! token is never in a URL or a log), the page, and the JSON it polls.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::experiments::Library;

const COOKIE: &str = "sunray_dashboard";
const PAGE: &str = include_str!("page.html");
const LOGIN: &str = include_str!("login.html");

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
}

struct App {
    token: String,
    head: Option<String>,
    session_dir: Option<PathBuf>,
    sessions: Mutex<HashSet<String>>,
    library: Mutex<Library>,
}

/// Serves the dashboard on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, opts: Options) -> std::io::Result<()> {
    let app = Arc::new(App {
        token: opts.token,
        head: opts.head,
        session_dir: opts.sessions,
        sessions: Mutex::new(HashSet::new()),
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
        .with_state(app);
    axum::serve(listener, router).await
}

impl App {
    /// A request carries a session cookie this server handed out, or the token itself
    /// as `Authorization: Bearer` (for scripts).
    fn allowed(&self, headers: &HeaderMap) -> bool {
        if let Some(bearer) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return bool::from(bearer.as_bytes().ct_eq(self.token.as_bytes()));
        }
        let sessions = self.sessions.lock().expect("not poisoned");
        cookies(headers).any(|(k, v)| k == COOKIE && sessions.contains(v))
    }
}

fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
}

/// Lets a request through to the API when [`App::allowed`] says so.
async fn only_allowed(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if app.allowed(req.headers()) {
        next.run(req).await
    } else {
        refused()
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
    (status, Html(LOGIN.replace("{{message}}", message))).into_response()
}

async fn index(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if app.allowed(&headers) {
        Html(PAGE).into_response()
    } else {
        login_page(StatusCode::OK, "")
    }
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(app): State<Arc<App>>, Form(f): Form<LoginForm>) -> Response {
    if !bool::from(f.token.trim().as_bytes().ct_eq(app.token.as_bytes())) {
        return login_page(
            StatusCode::UNAUTHORIZED,
            "That is not this cluster's token (see the head's session directory or `sunray start` output).",
        );
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
        .insert(sid.clone());
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_string()),
            (
                header::SET_COOKIE,
                format!("{COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/"),
            ),
        ],
    )
        .into_response()
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let mut sessions = app.sessions.lock().expect("not poisoned");
    for (k, v) in cookies(&headers) {
        if k == COOKIE {
            sessions.remove(v);
        }
    }
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response()
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
