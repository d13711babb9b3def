//! `sunray._sunray`: the Python extension over sunray's Rust runtime. Python code
//! (`python/sunray/`) builds Ray's API on these few calls; the cluster, scheduler,
//! connections and worker loop are the Rust ones. Every call that may block releases
//! the GIL and, when it waits for the cluster, wakes every [`SIGNAL_CHECK`] to let
//! Ctrl-C through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use sunray_proto::{ActorState, Arg, ErrorKind, Resources, TaskError, TaskKind, TaskSpec};
use sunray_runtime::driver::{Client, GetError};
use sunray_runtime::{detect, local::HeadOptions, session, wire};

mod tune;

/// How long a blocked `get`/`wait` waits before it checks for signals (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// First byte of a worker's message to its driver asking for a function's code; the
/// rest is the function's id.
const FETCH_FUNCTION: u8 = b'F';

/// Pickled functions by id, served to workers that ask (see [`FETCH_FUNCTION`]).
type Functions = Arc<Mutex<HashMap<Vec<u8>, Bytes>>>;

struct Connected {
    client: Arc<Client>,
    functions: Functions,
}

static CONNECTED: Mutex<Option<Connected>> = Mutex::new(None);

fn connected() -> PyResult<(Arc<Client>, Functions)> {
    match &*CONNECTED.lock().unwrap() {
        Some(c) => Ok((c.client.clone(), c.functions.clone())),
        None => Err(raise(
            "SunrayError",
            "sunray is not initialised: call sunray.init() first".into(),
        )),
    }
}

fn client() -> PyResult<Arc<Client>> {
    connected().map(|(c, _)| c)
}

/// An exception of `sunray.exceptions` by name: the one place Rust errors become
/// Python's (the classes are defined in Python, so that they can subclass builtins).
fn raise(class: &str, message: String) -> PyErr {
    Python::attach(|py| {
        let made = py
            .import("sunray.exceptions")
            .and_then(|m| m.getattr(class))
            .and_then(|c| c.call1((message.clone(),)));
        match made {
            Ok(e) => PyErr::from_value(e),
            Err(e) => e,
        }
    })
}

fn task_error(py: Python<'_>, e: &TaskError) -> PyErr {
    let class = match e.kind {
        ErrorKind::WorkerDied => "WorkerCrashedError",
        ErrorKind::NodeDied => "NodeDiedError",
        ErrorKind::ObjectLost => "ObjectLostError",
        ErrorKind::WorkerStartFailed => "WorkerStartError",
        ErrorKind::ActorDied => "ActorDiedError",
        _ => "TaskError",
    };
    // A task's error names the task; an object's (no function: a lost put, an object
    // that does not exist or cannot be read) is its message, which names the object.
    let message = match e.function.is_empty() {
        true => e.message.clone(),
        false => e.to_string(),
    };
    let made = py
        .import("sunray.exceptions")
        .and_then(|m| m.getattr("_from_runtime"))
        .and_then(|f| {
            f.call1((
                class,
                message,
                e.function.clone(),
                e.location.clone(),
                format!("{:?}", e.kind),
            ))
        });
    match made {
        Ok(err) => PyErr::from_value(err),
        Err(err) => err,
    }
}

fn get_error(py: Python<'_>, e: GetError) -> PyErr {
    match e {
        GetError::Task(t) => task_error(py, &t),
        GetError::Timeout => raise("GetTimeoutError", "timed out waiting for the result".into()),
        GetError::Disconnected(why) => raise(
            "ClusterConnectionError",
            format!("connection to the cluster lost: {why}"),
        ),
        GetError::TooLarge(why) => raise("ObjectTooLargeError", why),
    }
}

fn runtime_error(e: sunray_runtime::Error) -> PyErr {
    use sunray_runtime::Error as E;
    let class = match &e {
        E::Refused { .. } => "AuthenticationError",
        E::Unreachable { .. } | E::Disconnected { .. } | E::Timeout(_) => "ClusterConnectionError",
        E::Config(_) => "ConfigError",
        _ => "SunrayError",
    };
    raise(class, e.to_string())
}

/// Bytes that stay in the Python object they came from (no copy): the object is kept
/// alive by the `Bytes` and released, under the GIL, when the `Bytes` is dropped.
struct PyOwned {
    _obj: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: a `bytes` object is immutable and its buffer lives as long as the object,
// which `_obj` keeps; pyo3 defers the decref to a thread holding the GIL.
unsafe impl Send for PyOwned {}
unsafe impl Sync for PyOwned {}

impl AsRef<[u8]> for PyOwned {
    fn as_ref(&self) -> &[u8] {
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

fn bytes_of(b: &Bound<'_, PyBytes>) -> Bytes {
    let s = b.as_bytes();
    if s.len() < 4096 {
        return Bytes::copy_from_slice(s);
    }
    Bytes::from_owner(PyOwned {
        ptr: s.as_ptr(),
        len: s.len(),
        _obj: b.clone().unbind(),
    })
}

/// Releases an object of this driver when the last ref naming it is gone, unless a ref
/// to it was pickled (passed inside a value: a task's argument or result): the refs
/// unpickled elsewhere do not own it, so it then lives as long as its owner (this
/// driver, or this task's worker process) — never shorter than a reader needs.
struct Owned {
    id: u64,
    client: Weak<Client>,
    escaped: std::sync::atomic::AtomicBool,
}

impl Drop for Owned {
    fn drop(&mut self) {
        if self.escaped.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if let Some(c) = self.client.upgrade() {
            c.release(self.id);
        }
    }
}

/// A reference to an object in the cluster, as Ray's `ObjectRef`. The refs a driver
/// makes release their object when the last one is gone; a ref unpickled elsewhere
/// (inside a task's argument) only names it. `index` picks one value of a task with
/// several returns (the task's result is their tuple).
#[pyclass(module = "sunray", name = "ObjectRef", frozen)]
struct ObjectRef {
    id: u64,
    index: Option<u32>,
    owner: Option<Arc<Owned>>,
}

#[pymethods]
impl ObjectRef {
    /// The object's id as 16 hex digits (and the return's index, if one of several).
    fn hex(&self) -> String {
        match self.index {
            Some(i) => format!("{:016x}.{i}", self.id),
            None => format!("{:016x}", self.id),
        }
    }

    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    #[getter]
    fn index(&self) -> Option<u32> {
        self.index
    }

    /// The refs of a task's `n` returns, sharing this one's ownership.
    fn split(&self, n: u32) -> Vec<ObjectRef> {
        (0..n)
            .map(|i| ObjectRef {
                id: self.id,
                index: Some(i),
                owner: self.owner.clone(),
            })
            .collect()
    }

    fn __repr__(&self) -> String {
        format!("ObjectRef({})", self.hex())
    }

    fn __hash__(&self) -> u64 {
        self.id ^ self.index.map_or(0, |i| (i as u64 + 1) << 56)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<ObjectRef>().is_ok_and(|o| {
            let o = o.get();
            o.id == self.id && o.index == self.index
        })
    }

    /// `await ref` inside a coroutine (an async actor's method): its value, read on a
    /// thread of the running loop's executor so that the loop goes on meanwhile.
    fn __await__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let fut = py.import("sunray")?.getattr("_awaitable")?.call1((slf,))?;
        fut.call_method0("__await__")
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        if let Some(o) = &self.owner {
            o.escaped.store(true, std::sync::atomic::Ordering::Relaxed);
            // A direct actor call's result is known only here until the head gets it.
            let c = client()?;
            let id = self.id;
            py.detach(|| c.promote(&[id]))
                .map_err(|e| get_error(py, e))?;
        }
        let f = py.import("sunray._sunray")?.getattr("_named_ref")?;
        let args = (self.id, self.index).into_pyobject(py)?;
        PyTuple::new(py, [f, args.into_any()])
    }
}

/// A ref that names an object without owning it (what unpickling gives).
#[pyfunction]
#[pyo3(signature = (id, index=None))]
fn _named_ref(id: u64, index: Option<u32>) -> ObjectRef {
    ObjectRef {
        id,
        index,
        owner: None,
    }
}

fn owned_ref(c: &Arc<Client>, id: u64) -> ObjectRef {
    ObjectRef {
        id,
        index: None,
        owner: Some(Arc::new(Owned {
            id,
            client: Arc::downgrade(c),
            escaped: Default::default(),
        })),
    }
}

/// Connects to `address` (None: `$SUNRAY_ADDRESS`, else an embedded cluster); returns
/// the head's address.
#[pyfunction]
#[pyo3(signature = (address, token, num_cpus, num_gpus, resources, sys_path, cwd))]
#[allow(clippy::too_many_arguments)]
fn init(
    py: Python<'_>,
    address: Option<String>,
    token: Option<String>,
    num_cpus: Option<f64>,
    num_gpus: Option<f64>,
    resources: Vec<(String, f64)>,
    sys_path: Vec<String>,
    cwd: String,
) -> PyResult<String> {
    if CONNECTED.lock().unwrap().is_some() {
        return Err(raise(
            "SunrayError",
            "sunray.init() was already called: call sunray.shutdown() first, or pass ignore_reinit_error=True".into(),
        ));
    }
    let program = sunray_runtime::driver::this_python(sys_path, cwd).map_err(runtime_error)?;
    let address = match address.as_deref() {
        Some("auto") => Some(auto_address()?),
        _ => address.or_else(session::address_from_env),
    };
    let connected = py.detach(|| -> Result<_, sunray_runtime::Error> {
        match address {
            Some(addr) => {
                wire::check_address(&addr).map_err(sunray_runtime::Error::Config)?;
                let token = token
                    .or_else(|| session::find_token(&addr))
                    .ok_or_else(|| {
                        sunray_runtime::Error::Config(wire::explain_missing_token(&addr))
                    })?;
                Ok((Client::connect(&addr, &token, program)?, addr))
            }
            None => {
                let mut h = HeadOptions::embedded();
                if let Some(c) = num_cpus {
                    h.resources.cpu = c;
                }
                if let Some(g) = num_gpus {
                    h.gpu_ids = detect::gpu_ids_for(g as usize, &h.gpu_ids);
                    h.resources.gpu = g;
                }
                h.resources.custom = resources;
                let c = Client::embedded(h, program)?;
                let a = c.embedded_address().unwrap_or_default().to_string();
                Ok((c, a))
            }
        }
    });
    let (client, head) = connected.map_err(runtime_error)?;
    install(client);
    Ok(head)
}

/// Inside a task: connects this worker to the head, for the task's job, so that the
/// task may submit tasks, call actors, get, wait and put (Ray's nested tasks).
#[pyfunction]
fn init_worker(py: Python<'_>, sys_path: Vec<String>, cwd: String) -> PyResult<()> {
    if CONNECTED.lock().unwrap().is_some() {
        return Ok(());
    }
    let Some((head, token, job)) = sunray_runtime::worker::head_of_this_worker() else {
        return Err(raise(
            "SunrayError",
            "this worker runs no task: it cannot connect to the cluster".into(),
        ));
    };
    let program = sunray_runtime::driver::this_python(sys_path, cwd).map_err(runtime_error)?;
    let client = py
        .detach(|| Client::connect_worker(&head, &token, program, job))
        .map_err(runtime_error)?;
    install(client);
    Ok(())
}

/// Keeps `client` as this process's connection; its task-message handler serves the
/// pickled functions of this process to the workers that run its tasks.
fn install(client: Client) {
    let client = Arc::new(client);
    let functions: Functions = Default::default();
    let table = functions.clone();
    client.set_task_message_handler(Box::new(move |_task, data| {
        let msg: Vec<u8> = postcard::from_bytes(data).ok()?;
        let (&tag, fid) = msg.split_first()?;
        if tag != FETCH_FUNCTION {
            return None;
        }
        let code = table.lock().unwrap().get(fid).cloned().unwrap_or_default();
        Some(Bytes::from(
            postcard::to_allocvec(&code[..]).expect("serialising into a Vec cannot fail"),
        ))
    }));
    *CONNECTED.lock().unwrap() = Some(Connected { client, functions });
}

/// Ray's `address="auto"`: `$SUNRAY_ADDRESS`, else the one head running on this host.
fn auto_address() -> PyResult<String> {
    if let Some(a) = session::address_from_env() {
        return Ok(a);
    }
    let heads = session::local_head_addresses();
    match &heads[..] {
        [one] => Ok(one.clone()),
        [] => Err(raise(
            "ClusterConnectionError",
            "address=\"auto\" found no sunray head on this host: start one with `sunray start --head`, set SUNRAY_ADDRESS, or pass address=\"host:port\"".into(),
        )),
        many => Err(raise(
            "ClusterConnectionError",
            format!(
                "address=\"auto\" found several sunray heads on this host ({}): pass address=\"host:port\"",
                many.join(", ")
            ),
        )),
    }
}

/// Leaves the cluster (an embedded one stops); refs made before are inert afterwards.
#[pyfunction]
fn shutdown(py: Python<'_>) {
    let taken = CONNECTED.lock().unwrap().take();
    if let Some(c) = taken {
        py.detach(|| c.client.shutdown());
    }
}

#[pyfunction]
fn is_initialized() -> bool {
    CONNECTED.lock().unwrap().is_some()
}

/// Makes a function's pickled code available to this driver's workers.
#[pyfunction]
fn register_function(fid: Vec<u8>, code: &Bound<'_, PyBytes>) -> PyResult<()> {
    let (_, functions) = connected()?;
    functions.lock().unwrap().insert(fid, bytes_of(code));
    Ok(())
}

/// An actor's creation: (class, name, detached, max_restarts, max_task_retries,
/// max_concurrency).
type CreateActor = (String, Option<String>, bool, i64, i64, u32);

/// Submits a task; `args` holds `bytes` (a pickled value) or `ObjectRef`s (resolved to
/// their value before the task runs). With `create_actor` the task starts an actor
/// (its id is the returned ref's); with `actor` it calls a method of that actor.
#[pyfunction]
#[pyo3(signature = (function, args, num_cpus, num_gpus, memory, resources, max_retries, create_actor=None, actor=None, bundle=None))]
#[allow(clippy::too_many_arguments)]
fn submit(
    py: Python<'_>,
    function: String,
    args: &Bound<'_, PyList>,
    num_cpus: f64,
    num_gpus: f64,
    memory: f64,
    resources: Vec<(String, f64)>,
    max_retries: u32,
    create_actor: Option<CreateActor>,
    actor: Option<u64>,
    bundle: Option<(u64, Option<u32>)>,
) -> PyResult<ObjectRef> {
    let kind = match (create_actor, actor) {
        (Some((class, name, detached, max_restarts, max_task_retries, max_concurrency)), _) => {
            TaskKind::CreateActor(Box::new(sunray_proto::ActorOptions {
                class,
                name,
                detached,
                max_restarts,
                max_task_retries,
                max_concurrency: max_concurrency.max(1),
            }))
        }
        (None, Some(actor)) => TaskKind::ActorCall { actor },
        (None, None) => TaskKind::Plain,
    };
    let c = client()?;
    let mut wire_args = Vec::with_capacity(args.len());
    for a in args.iter() {
        if let Ok(r) = a.cast::<ObjectRef>() {
            wire_args.push(Arg::Ref(r.get().id));
        } else {
            wire_args.push(Arg::Value(bytes_of(a.cast::<PyBytes>()?)));
        }
    }
    let id = c.new_object_id();
    let spec = TaskSpec {
        id,
        function,
        args: wire_args,
        resources: Resources {
            cpu: num_cpus,
            gpu: num_gpus,
            memory,
            custom: resources,
        },
        max_retries,
        kind,
        bundle: bundle.map(|(group, index)| sunray_proto::InBundle { group, index }),
    };
    let r = owned_ref(&c, id);
    py.detach(|| c.submit(spec)).map_err(|e| get_error(py, e))?;
    Ok(r)
}

#[pyfunction]
fn put(py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<ObjectRef> {
    let c = client()?;
    let data = bytes_of(data);
    let id = py.detach(|| c.put(data)).map_err(|e| get_error(py, e))?;
    Ok(owned_ref(&c, id))
}

/// The deadline of a `timeout` in seconds (None: no deadline).
fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        Some(t) if !(t >= 0.0 && t.is_finite()) => Err(PyValueError::new_err(format!(
            "timeout must be a non-negative number of seconds or None, got {t}"
        ))),
        Some(t) => Ok(Some(Instant::now() + Duration::from_secs_f64(t))),
        None => Ok(None),
    }
}

/// The next wait: at most [`SIGNAL_CHECK`], and whether it is the last before `deadline`.
fn next_slice(deadline: Option<Instant>) -> (Duration, bool) {
    match deadline {
        None => (SIGNAL_CHECK, false),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            (left.min(SIGNAL_CHECK), left <= SIGNAL_CHECK)
        }
    }
}

/// The values of `ids`, in order, all within `timeout` seconds.
#[pyfunction]
#[pyo3(signature = (ids, timeout=None))]
fn get<'py>(
    py: Python<'py>,
    ids: Vec<u64>,
    timeout: Option<f64>,
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let c = client()?;
    let deadline = deadline(timeout)?;
    // Inside a task, a wait lends the task's CPU to others (its children).
    let blocked = match ids.iter().all(|i| c.is_ready(*i)) {
        true => None,
        false => py.detach(sunray_runtime::worker::block_begin),
    };
    let mut out = Vec::with_capacity(ids.len());
    let r = (|| {
        for id in ids {
            let v = loop {
                let (slice, last) = next_slice(deadline);
                match py.detach(|| c.get(id, Some(slice))) {
                    Err(GetError::Timeout) if !last => py.check_signals()?,
                    r => break r.map_err(|e| get_error(py, e))?,
                }
            };
            out.push(PyBytes::new(py, &v));
        }
        Ok(())
    })();
    py.detach(|| sunray_runtime::worker::block_end(blocked));
    r.map(|()| out)
}

/// Readiness of each of `ids` once `num_returns` of them are ready or `timeout` passed.
/// Ray's rules: no ids, nothing to wait for (not an error); `num_returns` from 0 to their
/// number. An id may come twice: the refs of one task's returns share it (the front end
/// checks that the refs themselves are unique).
#[pyfunction]
#[pyo3(signature = (ids, num_returns, timeout=None))]
fn wait(
    py: Python<'_>,
    ids: Vec<u64>,
    num_returns: i64,
    timeout: Option<f64>,
) -> PyResult<Vec<bool>> {
    let deadline = deadline(timeout)?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let want = match usize::try_from(num_returns) {
        Ok(n) if n <= ids.len() => n,
        _ => {
            return Err(PyValueError::new_err(format!(
                "num_returns must be between 0 and the number of refs ({}), got {num_returns}",
                ids.len()
            )))
        }
    };
    let c = client()?;
    let blocked = match ids.iter().filter(|i| c.is_ready(**i)).count() >= want {
        true => None,
        false => py.detach(sunray_runtime::worker::block_begin),
    };
    let r = loop {
        let (slice, last) = next_slice(deadline);
        let flags = match py.detach(|| c.wait(&ids, want, Some(slice))) {
            Ok(f) => f,
            Err(e) => break Err(get_error(py, e)),
        };
        if last || flags.iter().filter(|x| **x).count() >= want {
            break Ok(flags);
        }
        if let Err(e) = py.check_signals() {
            break Err(e);
        }
    };
    py.detach(|| sunray_runtime::worker::block_end(blocked));
    r
}

fn resources_dict<'py>(py: Python<'py>, r: &Resources) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("CPU", r.cpu)?;
    if r.gpu > 0.0 {
        d.set_item("GPU", r.gpu)?;
    }
    if r.memory > 0.0 {
        d.set_item("memory", r.memory)?;
    }
    for (n, a) in &r.custom {
        d.set_item(n, a)?;
    }
    Ok(d)
}

/// The nodes the head knows, as dicts with Ray's keys.
#[pyfunction]
fn nodes<'py>(py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let c = client()?;
    let view = py
        .detach(|| c.cluster_view())
        .map_err(|e| get_error(py, e))?;
    view.nodes
        .iter()
        .map(|n| {
            let d = PyDict::new(py);
            d.set_item("NodeID", format!("{:08x}", n.id))?;
            d.set_item("Alive", n.alive)?;
            d.set_item("NodeManagerAddress", &n.ip)?;
            d.set_item("NodeManagerHostname", &n.hostname)?;
            d.set_item("NodeName", &n.ip)?;
            d.set_item("Resources", resources_dict(py, &n.total)?)?;
            d.set_item("AvailableResources", resources_dict(py, &n.available)?)?;
            d.set_item("IsHead", n.is_head)?;
            d.set_item("Pid", n.pid)?;
            // What its object store holds (large results and tasks' puts).
            d.set_item("ObjectStoreObjects", n.objects)?;
            d.set_item("ObjectStoreUsedBytes", n.object_bytes)?;
            Ok(d)
        })
        .collect()
}

/// Ray's `kill(actor, no_restart=…)`.
#[pyfunction]
fn kill_actor(py: Python<'_>, actor: u64, no_restart: bool) -> PyResult<()> {
    let c = client()?;
    py.detach(|| c.kill_actor(actor, no_restart))
        .map_err(|e| get_error(py, e))
}

/// A bundle from Python: (CPUs, GPUs, memory, custom resources).
type BundleSpec = (f64, f64, f64, Vec<(String, f64)>);

/// Reserves a placement group (`strategy`: PACK, SPREAD, STRICT_PACK, STRICT_SPREAD);
/// returns its ready ref, whose id is the group's.
#[pyfunction]
#[pyo3(signature = (bundles, strategy, name, ready, detached=false))]
fn create_placement_group(
    py: Python<'_>,
    bundles: Vec<BundleSpec>,
    strategy: &str,
    name: Option<String>,
    ready: &Bound<'_, PyBytes>,
    detached: bool,
) -> PyResult<ObjectRef> {
    use sunray_proto::PlacementStrategy as S;
    let strategy = match strategy {
        "PACK" => S::Pack,
        "SPREAD" => S::Spread,
        "STRICT_PACK" => S::StrictPack,
        "STRICT_SPREAD" => S::StrictSpread,
        other => {
            return Err(PyValueError::new_err(format!(
                "strategy must be PACK, SPREAD, STRICT_PACK or STRICT_SPREAD, got {other:?}"
            )))
        }
    };
    let c = client()?;
    let bundles = bundles
        .into_iter()
        .map(|(cpu, gpu, memory, custom)| Resources {
            cpu,
            gpu,
            memory,
            custom,
        })
        .collect();
    let ready = bytes_of(ready);
    let id = py
        .detach(|| c.create_group(name, bundles, strategy, ready, detached))
        .map_err(|e| get_error(py, e))?;
    Ok(owned_ref(&c, id))
}

#[pyfunction]
fn remove_placement_group(py: Python<'_>, id: u64) -> PyResult<()> {
    let c = client()?;
    py.detach(|| c.remove_group(id))
        .map_err(|e| get_error(py, e))
}

/// The placement groups the head knows, as dicts (Ray's `placement_group_table`).
#[pyfunction]
fn placement_groups<'py>(py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
    use sunray_proto::GroupState;
    let c = client()?;
    let view = py
        .detach(|| c.cluster_view())
        .map_err(|e| get_error(py, e))?;
    view.groups
        .iter()
        .map(|g| {
            let d = PyDict::new(py);
            d.set_item("placement_group_id", format!("{:016x}", g.id))?;
            d.set_item("id", g.id)?;
            d.set_item("name", g.name.clone())?;
            d.set_item(
                "strategy",
                match g.strategy {
                    sunray_proto::PlacementStrategy::Pack => "PACK",
                    sunray_proto::PlacementStrategy::Spread => "SPREAD",
                    sunray_proto::PlacementStrategy::StrictPack => "STRICT_PACK",
                    sunray_proto::PlacementStrategy::StrictSpread => "STRICT_SPREAD",
                },
            )?;
            d.set_item(
                "state",
                match g.state {
                    GroupState::Pending => "PENDING",
                    GroupState::Created => "CREATED",
                    GroupState::Rescheduling => "RESCHEDULING",
                    GroupState::Removed => "REMOVED",
                },
            )?;
            let bundles: Vec<Bound<'py, PyDict>> = g
                .bundles
                .iter()
                .map(|b| resources_dict(py, b))
                .collect::<PyResult<_>>()?;
            d.set_item("bundles", bundles)?;
            d.set_item(
                "bundles_to_node_id",
                g.nodes
                    .iter()
                    .map(|n| format!("{n:08x}"))
                    .collect::<Vec<_>>(),
            )?;
            d.set_item("reason", g.why.clone())?;
            d.set_item("detached", g.detached)?;
            Ok(d)
        })
        .collect()
}

/// The actors the head knows (alive, pending, restarting, and the last dead ones).
#[pyfunction]
fn actors<'py>(py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let c = client()?;
    let view = py
        .detach(|| c.cluster_view())
        .map_err(|e| get_error(py, e))?;
    view.actors
        .iter()
        .map(|a| {
            let d = PyDict::new(py);
            d.set_item("actor_id", a.id)?;
            d.set_item("class_name", &a.class)?;
            d.set_item("name", a.name.clone())?;
            d.set_item(
                "state",
                match a.state {
                    ActorState::Pending => "PENDING_CREATION",
                    ActorState::Alive => "ALIVE",
                    ActorState::Restarting => "RESTARTING",
                    ActorState::Dead => "DEAD",
                },
            )?;
            d.set_item("node_id", a.node.map(|n| format!("{n:08x}")))?;
            d.set_item("job_id", format!("{:08x}", a.owner))?;
            d.set_item("detached", a.detached)?;
            d.set_item("num_restarts", a.restarts)?;
            d.set_item("pending_calls", a.pending_calls)?;
            d.set_item("death_cause", a.death.clone())?;
            Ok(d)
        })
        .collect()
}

/// Runs tasks until the node agent closes the connection, then exits the process:
/// `invoke(function_name, [argument bytes]) -> result bytes` runs one;
/// `adopt(sys_path, cwd)` is called when this worker, started ahead of any driver, is
/// given to one.
#[pyfunction]
fn worker_main(py: Python<'_>, invoke: Py<PyAny>, adopt: Py<PyAny>) {
    sunray_runtime::worker::on_adopt(Box::new(move |sys_path, cwd| {
        Python::attach(|py| {
            if let Err(e) = adopt.call1(py, (sys_path.to_vec(), cwd)) {
                eprintln!("sunray worker: cannot take the driver's sys.path: {e}");
            }
        })
    }));
    py.detach(move || {
        let call = |spec: &TaskSpec, args: &[Bytes]| -> Result<Bytes, (ErrorKind, String)> {
            // 0: a function, 1: an actor's constructor, 2: one of its methods.
            let kind = match spec.kind {
                TaskKind::Plain => 0,
                TaskKind::CreateActor(_) => 1,
                TaskKind::ActorCall { .. } => 2,
            };
            Python::attach(|py| {
                let r = (|| -> PyResult<Bytes> {
                    let list = PyList::empty(py);
                    for a in args {
                        list.append(PyBytes::new(py, a))?;
                    }
                    let out = invoke.bind(py).call1((&spec.function, list, kind))?;
                    Ok(bytes_of(out.cast::<PyBytes>()?))
                })();
                r.map_err(|e| {
                    let tb = e
                        .traceback(py)
                        .and_then(|t| t.format().ok())
                        .unwrap_or_default();
                    (ErrorKind::Application, format!("{tb}{e}"))
                })
            })
        };
        sunray_runtime::worker::run(&call, "python")
    })
}

/// In a task: asks the driver for a function's pickled code (empty if it has none).
#[pyfunction]
fn fetch_function<'py>(py: Python<'py>, fid: Vec<u8>) -> PyResult<Bound<'py, PyBytes>> {
    let mut msg = vec![FETCH_FUNCTION];
    msg.extend_from_slice(&fid);
    let code: Vec<u8> = py
        .detach(|| sunray_runtime::worker::ask_owner(&msg))
        .map_err(|e| {
            raise(
                "SunrayError",
                format!("cannot fetch a function from the driver: {e}"),
            )
        })?;
    Ok(PyBytes::new(py, &code))
}

/// What the running task is (inside a worker), else None.
#[pyfunction]
fn current_task<'py>(py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
    let Some(t) = sunray_runtime::worker::current_task() else {
        return Ok(None);
    };
    let d = PyDict::new(py);
    d.set_item("task_id", format!("{:016x}", t.task_id))?;
    d.set_item(
        "job_id",
        format!("{:08x}", sunray_proto::object_owner(t.task_id)),
    )?;
    d.set_item("node_id", format!("{:08x}", t.node_id))?;
    d.set_item("node_ip", t.node_ip)?;
    d.set_item("gpu_ids", t.gpu_ids)?;
    d.set_item("function", t.function)?;
    d.set_item("actor_id", t.actor.map(|a| format!("{a:016x}")))?;
    Ok(Some(d))
}

/// (objects, bytes) the head holds now: results and `put` values not yet released.
#[pyfunction]
fn head_objects(py: Python<'_>) -> PyResult<(u64, u64)> {
    let c = client()?;
    let v = py
        .detach(|| c.cluster_view())
        .map_err(|e| get_error(py, e))?;
    Ok((v.objects, v.object_bytes))
}

/// The driver's job id (its client id), once connected.
#[pyfunction]
fn job_id() -> PyResult<String> {
    Ok(format!("{:08x}", client()?.client_id()))
}

/// This host's address as sunray reports it.
#[pyfunction]
fn default_ip() -> String {
    detect::default_ip().to_string()
}

/// Runs the `sunray` command line (`args[0]` being the program's name, `exe` the
/// script that runs it again); returns its exit status.
#[pyfunction]
fn cli_main(py: Python<'_>, exe: String, args: Vec<String>) -> i32 {
    py.detach(|| sunray_cli::run_command_line(exe.into(), args))
}

#[pymodule]
fn _sunray(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ObjectRef>()?;
    m.add_function(wrap_pyfunction!(_named_ref, m)?)?;
    m.add_function(wrap_pyfunction!(init, m)?)?;
    m.add_function(wrap_pyfunction!(init_worker, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(is_initialized, m)?)?;
    m.add_function(wrap_pyfunction!(register_function, m)?)?;
    m.add_function(wrap_pyfunction!(submit, m)?)?;
    m.add_function(wrap_pyfunction!(put, m)?)?;
    m.add_function(wrap_pyfunction!(get, m)?)?;
    m.add_function(wrap_pyfunction!(wait, m)?)?;
    m.add_function(wrap_pyfunction!(nodes, m)?)?;
    m.add_function(wrap_pyfunction!(worker_main, m)?)?;
    m.add_function(wrap_pyfunction!(kill_actor, m)?)?;
    m.add_function(wrap_pyfunction!(actors, m)?)?;
    m.add_function(wrap_pyfunction!(create_placement_group, m)?)?;
    m.add_function(wrap_pyfunction!(remove_placement_group, m)?)?;
    m.add_function(wrap_pyfunction!(placement_groups, m)?)?;
    m.add_function(wrap_pyfunction!(fetch_function, m)?)?;
    m.add_function(wrap_pyfunction!(current_task, m)?)?;
    m.add_function(wrap_pyfunction!(job_id, m)?)?;
    m.add_function(wrap_pyfunction!(head_objects, m)?)?;
    m.add_function(wrap_pyfunction!(default_ip, m)?)?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    tune::register(m)?;
    Ok(())
}
