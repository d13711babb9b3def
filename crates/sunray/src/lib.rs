//! sunray: Ray's task API in Rust.
//!
//! ```no_run
//! #[sunray::remote]
//! fn square(x: u64) -> u64 { x * x }
//!
//! fn main() -> Result<(), sunray::Error> {
//!     sunray::init()?; // first thing: in a worker process this runs tasks and never returns
//!     let refs: Vec<_> = (0..4).map(|i| square.remote(i)).collect();
//!     assert_eq!(sunray::get_all(&refs)?, vec![0, 1, 4, 9]);
//!     Ok(())
//! }
//! ```
//!
//! Without an address (`SUNRAY_ADDRESS` or [`InitOptions::address`]) `init` starts an
//! embedded cluster in this process; with one it connects to that cluster. Workers are
//! this same executable, started by node agents in worker mode: that is why `init` must
//! come first in `main`.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use sunray_proto::{Arg, ObjectId, TaskError, TaskKind, TaskSpec};
use sunray_runtime::driver::{Client, GetError};
use sunray_runtime::{detect, local::HeadOptions, session, wire};

/// The resource setters task and actor options share (fields `num_cpus`, `num_gpus`,
/// `memory`, `resources`).
macro_rules! resource_setters {
    () => {
        pub fn num_cpus(mut self, n: f64) -> Self {
            self.num_cpus = Some(n);
            self
        }
        pub fn num_gpus(mut self, n: f64) -> Self {
            self.num_gpus = Some(n);
            self
        }
        pub fn memory(mut self, bytes: f64) -> Self {
            self.memory = Some(bytes);
            self
        }
        pub fn resource(mut self, name: &str, amount: f64) -> Self {
            self.resources.retain(|(n, _)| n != name);
            self.resources.push((name.to_string(), amount));
            self
        }
    };
}

mod actor;

pub use actor::{get_actor, get_actor_within, kill, Actor, ActorCall, ActorHandle, ActorOptions};
pub use sunray_macros::{actor, remote};
pub use sunray_proto::{
    ActorId, ErrorKind, InBundle, PlacementStrategy, Resources, TaskError as RemoteError,
};

/// Re-exports for the code `#[remote]` generates; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::actor::{create as create_actor, ActorClass};
    pub use bytes::Bytes;
    pub use inventory;
    pub use sunray_proto::{ActorId, ErrorKind};

    /// What a registered function returns to the worker loop.
    pub type InvokeResult = Result<Bytes, (ErrorKind, String)>;

    pub struct RemoteFunction {
        pub name: &'static str,
        pub invoke: fn(&[Bytes]) -> InvokeResult,
    }
    inventory::collect!(RemoteFunction);

    pub fn decode_arg<T: serde::de::DeserializeOwned + 'static>(
        b: &Bytes,
        name: &str,
    ) -> Result<T, (ErrorKind, String)> {
        super::decode(b).map_err(|e| {
            (
                ErrorKind::BadArguments,
                format!(
                    "argument `{name}` cannot be decoded as {}: {e}",
                    std::any::type_name::<T>()
                ),
            )
        })
    }

    pub fn encode_output<T: serde::Serialize>(v: &T) -> Result<Bytes, (ErrorKind, String)> {
        postcard::to_allocvec(v).map(Bytes::from).map_err(|e| {
            (
                ErrorKind::Application,
                format!("cannot serialise the result: {e}"),
            )
        })
    }

    pub fn submit<T>(
        name: &'static str,
        args: Vec<super::ArgValue>,
        opts: &super::TaskOptions,
    ) -> super::ObjectRef<T> {
        super::submit(name, args, opts)
    }
}

/// Errors of the sunray API.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The task failed: its error names the function, the node and the message.
    #[error("{0}")]
    Task(TaskError),
    #[error("timed out waiting for a result")]
    Timeout,
    #[error("connection to the cluster lost: {0}")]
    Disconnected(String),
    #[error("{0}")]
    Runtime(String),
    #[error("cannot (de)serialise a value: {0}")]
    Serde(String),
    #[error("sunray::init() has not been called")]
    NotInitialized,
}

impl Error {
    /// The remote error, when a task failed.
    pub fn task_error(&self) -> Option<&TaskError> {
        match self {
            Error::Task(e) => Some(e),
            _ => None,
        }
    }
}

impl From<GetError> for Error {
    fn from(e: GetError) -> Self {
        match e {
            GetError::Task(t) => Error::Task(t),
            GetError::Timeout => Error::Timeout,
            GetError::Disconnected(s) => Error::Disconnected(s),
            GetError::TooLarge(s) => Error::Runtime(s),
        }
    }
}

impl From<sunray_runtime::Error> for Error {
    fn from(e: sunray_runtime::Error) -> Self {
        Error::Runtime(e.to_string())
    }
}

static CLIENT: OnceLock<Client> = OnceLock::new();

fn client() -> Result<&'static Client, Error> {
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    // Inside a task: the worker connects to the head itself, for its job, the first
    // time the task submits, gets or puts (Ray's tasks that submit tasks).
    let (head, token, job) =
        sunray_runtime::worker::head_of_this_worker().ok_or(Error::NotInitialized)?;
    static CONNECTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = CONNECTING.lock().unwrap();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let binary = sunray_runtime::driver::this_binary(&registry_hash())?;
    let c = Client::connect_worker(&head, &token, binary, job)?;
    Ok(CLIENT.get_or_init(|| c))
}

/// Waits in `get`/`wait` inside a task with the task's CPU lent to others (so that a
/// task waiting for the tasks it submitted cannot starve them of CPUs).
fn blocking<R>(ready: bool, wait: impl FnOnce() -> R) -> R {
    if ready || !sunray_runtime::worker::in_plain_task() {
        wait()
    } else {
        sunray_runtime::worker::while_blocked(wait)
    }
}

/// How to join or start a cluster.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// "host:port" of a running head; None: `$SUNRAY_ADDRESS`, else an embedded cluster.
    pub address: Option<String>,
    /// The cluster token; None: found in the session directory or `$SUNRAY_TOKEN`.
    pub token: Option<String>,
    /// CPUs of an embedded cluster (default: this host's).
    pub num_cpus: Option<f64>,
    /// GPUs of an embedded cluster (default: this host's).
    pub num_gpus: Option<f64>,
    /// Custom resources of an embedded cluster.
    pub resources: Vec<(String, f64)>,
}

/// Hash of the names of every remote function in this executable.
fn registry_hash() -> String {
    let mut names: Vec<&str> = inventory::iter::<__private::RemoteFunction>
        .into_iter()
        .map(|f| f.name)
        .chain(actor::class_names())
        .collect();
    names.sort_unstable();
    detect::hash_bytes(names.join("\n").as_bytes())
}

fn invoke(spec: &TaskSpec, args: &[Bytes]) -> Result<Bytes, (ErrorKind, String)> {
    if spec.kind != TaskKind::Plain {
        return actor::invoke(spec, args);
    }
    let name = &spec.function[..];
    match inventory::iter::<__private::RemoteFunction>
        .into_iter()
        .find(|f| f.name == name)
    {
        Some(f) => (f.invoke)(args),
        None => Err((
            ErrorKind::FunctionNotFound,
            format!("no remote function `{name}` in this worker's executable"),
        )),
    }
}

/// Connects to the cluster (or starts an embedded one). In a worker process it runs
/// tasks instead and never returns, so call it first in `main`.
pub fn init() -> Result<(), Error> {
    init_with(InitOptions::default())
}

/// In a worker process (started by a node agent), runs tasks and never returns;
/// elsewhere does nothing. [`init`] calls it; programs that call `init` only in some
/// code paths call this first thing in `main`.
pub fn serve_if_worker() {
    if sunray_runtime::worker::is_worker() {
        sunray_runtime::worker::run(&invoke, &registry_hash());
    }
}

/// [`init`] with options.
pub fn init_with(opts: InitOptions) -> Result<(), Error> {
    serve_if_worker();
    if CLIENT.get().is_some() {
        return Ok(());
    }
    let binary = sunray_runtime::driver::this_binary(&registry_hash())?;
    let address = opts.address.clone().or_else(session::address_from_env);
    let c = match address {
        Some(addr) => {
            wire::check_address(&addr).map_err(Error::Runtime)?;
            let token = opts
                .token
                .clone()
                .or_else(|| session::find_token(&addr))
                .ok_or_else(|| Error::Runtime(wire::explain_missing_token(&addr)))?;
            Client::connect(&addr, &token, binary)?
        }
        None => {
            let mut h = HeadOptions::embedded();
            if let Some(c) = opts.num_cpus {
                h.resources.cpu = c;
            }
            if let Some(g) = opts.num_gpus {
                h.gpu_ids = detect::gpu_ids_for(g as usize, &h.gpu_ids);
                h.resources.gpu = g;
            }
            h.resources.custom = opts.resources.clone();
            Client::embedded(h, binary)?
        }
    };
    let _ = CLIENT.set(c);
    Ok(())
}

/// Is this process connected to a cluster?
pub fn is_initialized() -> bool {
    CLIENT.get().is_some()
}

/// The address of the head: the embedded one, or the one connected to.
pub fn address() -> Option<String> {
    CLIENT
        .get()
        .and_then(|c| c.embedded_address().map(str::to_string))
        .or_else(session::address_from_env)
}

/// Per-call (or per-function) options, as in Ray's `.options(...)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskOptions {
    pub num_cpus: Option<f64>,
    pub num_gpus: Option<f64>,
    pub memory: Option<f64>,
    pub resources: Vec<(String, f64)>,
    pub max_retries: Option<u32>,
    /// Run in this bundle of a placement group ([`PlacementGroup::bundle`]).
    pub bundle: Option<InBundle>,
}

impl TaskOptions {
    /// Runs the task in a placement group's bundle (its resources come from the bundle).
    pub fn in_bundle(mut self, b: InBundle) -> Self {
        self.bundle = Some(b);
        self
    }
    pub fn new() -> Self {
        Self::default()
    }
    resource_setters!();
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = Some(n);
        self
    }
    /// `other`'s settings win where given.
    pub fn merged_with(mut self, other: TaskOptions) -> Self {
        self.num_cpus = other.num_cpus.or(self.num_cpus);
        self.num_gpus = other.num_gpus.or(self.num_gpus);
        self.memory = other.memory.or(self.memory);
        self.max_retries = other.max_retries.or(self.max_retries);
        self.bundle = other.bundle.or(self.bundle);
        for (n, a) in other.resources {
            self = self.resource(&n, a);
        }
        self
    }
    #[doc(hidden)]
    pub fn __from_attr(
        cpu: Option<f64>,
        gpu: Option<f64>,
        mem: Option<f64>,
        retries: Option<u32>,
    ) -> Self {
        TaskOptions {
            num_cpus: cpu,
            num_gpus: gpu,
            memory: mem,
            resources: Vec::new(),
            max_retries: retries,
            bundle: None,
        }
    }
    fn to_resources(&self) -> Resources {
        Resources {
            // As in Ray: a task takes one CPU unless told otherwise.
            cpu: self.num_cpus.unwrap_or(1.0),
            gpu: self.num_gpus.unwrap_or(0.0),
            memory: self.memory.unwrap_or(0.0),
            custom: self.resources.clone(),
        }
    }
}

/// Ray retries a task 3 times after its worker or node dies.
pub const DEFAULT_MAX_RETRIES: u32 = 3;

struct RefInner {
    id: ObjectId,
}

impl Drop for RefInner {
    fn drop(&mut self) {
        if let Some(c) = CLIENT.get() {
            c.release(self.id);
        }
    }
}

/// A future value of type `T` held by the cluster. Cloning is cheap; the value is
/// released when the last clone is dropped.
pub struct ObjectRef<T> {
    inner: Arc<RefInner>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for ObjectRef<T> {
    fn clone(&self) -> Self {
        ObjectRef {
            inner: self.inner.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for ObjectRef<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectRef({:#x})", self.inner.id)
    }
}

impl<T> ObjectRef<T> {
    fn from_id(id: ObjectId) -> Self {
        ObjectRef {
            inner: Arc::new(RefInner { id }),
            _t: PhantomData,
        }
    }
    pub fn id(&self) -> ObjectId {
        self.inner.id
    }
}

impl<T: DeserializeOwned + 'static> ObjectRef<T> {
    /// Waits for the value.
    pub fn get(&self) -> Result<T, Error> {
        self.get_timeout(None)
    }

    pub fn get_timeout(&self, timeout: Option<Duration>) -> Result<T, Error> {
        let c = client()?;
        let bytes = blocking(c.is_ready(self.id()), || c.get(self.id(), timeout))?;
        decode(&bytes).map_err(|e| Error::Serde(e.to_string()))
    }
}

/// An argument as it travels: a value, or a reference resolved before the task runs.
#[doc(hidden)]
pub struct ArgValue(Result<Arg, String>);

/// Values of `T`, or `ObjectRef<T>`s, can be passed where a remote function takes a `T`.
pub trait IntoArg<T> {
    fn into_arg(self) -> ArgValue;
}

impl<T: Serialize> IntoArg<T> for T {
    fn into_arg(self) -> ArgValue {
        ArgValue(
            postcard::to_allocvec(&self)
                .map(|v| Arg::Value(Bytes::from(v)))
                .map_err(|e| e.to_string()),
        )
    }
}

impl<T> IntoArg<T> for ObjectRef<T> {
    fn into_arg(self) -> ArgValue {
        ArgValue(Ok(Arg::Ref(self.id())))
    }
}

impl<T> IntoArg<T> for &ObjectRef<T> {
    fn into_arg(self) -> ArgValue {
        ArgValue(Ok(Arg::Ref(self.id())))
    }
}

fn submit<T>(name: &'static str, args: Vec<ArgValue>, opts: &TaskOptions) -> ObjectRef<T> {
    submit_kind(
        name,
        args,
        opts.to_resources(),
        opts.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
        TaskKind::Plain,
        opts.bundle,
    )
}

fn submit_kind<T>(
    name: &'static str,
    args: Vec<ArgValue>,
    resources: Resources,
    max_retries: u32,
    kind: TaskKind,
    bundle: Option<InBundle>,
) -> ObjectRef<T> {
    let c = match client() {
        Ok(c) => c,
        Err(e) => panic!("cannot submit {name}: {e} (call sunray::init() first in main)"),
    };
    let id = c.new_object_id();
    let r = ObjectRef::from_id(id);
    let mut wire_args = Vec::with_capacity(args.len());
    for a in args {
        match a.0 {
            Ok(a) => wire_args.push(a),
            Err(e) => panic!("cannot serialise an argument of {name}: {e}"),
        }
    }
    let spec = TaskSpec {
        id,
        function: name.to_string(),
        args: wire_args,
        resources,
        max_retries,
        kind,
        bundle,
    };
    if let Err(e) = c.submit(spec) {
        panic!("cannot submit {name}: {e}");
    }
    r
}

/// Reserved resources on the cluster: bundles placed all at once under a strategy
/// (Ray's placement groups). Tasks and actors run in a bundle with
/// `TaskOptions::in_bundle(pg.bundle(i))` / `ActorOptions::in_bundle(...)`.
#[derive(Debug, Clone)]
pub struct PlacementGroup {
    id: sunray_proto::GroupId,
    ready: ObjectRef<()>,
    bundles: usize,
}

impl PlacementGroup {
    pub fn id(&self) -> sunray_proto::GroupId {
        self.id
    }

    /// Ready once every bundle is reserved.
    pub fn ready(&self) -> &ObjectRef<()> {
        &self.ready
    }

    /// Waits up to `timeout` for the bundles: true once reserved, false if not yet (the
    /// driver was warned when the cluster cannot hold them).
    pub fn wait(&self, timeout: Duration) -> Result<bool, Error> {
        match self.ready.get_timeout(Some(timeout)) {
            Ok(()) => Ok(true),
            Err(Error::Timeout) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Bundle `i` (None: any bundle with room).
    pub fn bundle(&self, i: Option<usize>) -> InBundle {
        InBundle {
            group: self.id,
            index: i.map(|i| i as u32),
        }
    }

    pub fn bundle_count(&self) -> usize {
        self.bundles
    }

    /// Frees the bundles; tasks and actors in them fail.
    pub fn remove(&self) -> Result<(), Error> {
        client()?.remove_group(self.id)?;
        Ok(())
    }
}

/// Reserves `bundles` (each a resource amount) on the cluster under `strategy`.
pub fn placement_group(
    bundles: Vec<Resources>,
    strategy: PlacementStrategy,
) -> Result<PlacementGroup, Error> {
    let n = bundles.len();
    let unit = Bytes::from(postcard::to_allocvec(&()).map_err(|e| Error::Serde(e.to_string()))?);
    let id = client()?.create_group(None, bundles, strategy, unit, false)?;
    Ok(PlacementGroup {
        id,
        ready: ObjectRef::from_id(id),
        bundles: n,
    })
}

/// Decodes a value; a `bytes::Bytes` is a slice of `b` rather than a copy (postcard
/// writes it as its length, then its bytes), so a large blob read from another node is
/// not copied again.
fn decode<T: DeserializeOwned + 'static>(b: &Bytes) -> Result<T, postcard::Error> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<Bytes>() {
        let (len, rest) = postcard::take_from_bytes::<usize>(b)?;
        if rest.len() != len {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        let blob: Box<dyn std::any::Any> = Box::new(b.slice(b.len() - len..));
        return Ok(*blob.downcast::<T>().expect("T is Bytes"));
    }
    postcard::from_bytes(b)
}

/// Waits for one value.
pub fn get<T: DeserializeOwned + 'static>(r: &ObjectRef<T>) -> Result<T, Error> {
    r.get()
}

/// Waits for every value, in order.
pub fn get_all<T: DeserializeOwned + 'static>(refs: &[ObjectRef<T>]) -> Result<Vec<T>, Error> {
    refs.iter().map(|r| r.get()).collect()
}

/// `(ready, not ready)`, as Ray's `wait` returns.
pub type WaitResult<T> = (Vec<ObjectRef<T>>, Vec<ObjectRef<T>>);

/// Splits `refs` into (ready, not ready) once `num_returns` are ready or the timeout
/// passes, as Ray's `wait`. Ready ones keep their order.
pub fn wait<T>(
    refs: &[ObjectRef<T>],
    num_returns: usize,
    timeout: Option<Duration>,
) -> Result<WaitResult<T>, Error> {
    let ids: Vec<ObjectId> = refs.iter().map(|r| r.id()).collect();
    let c = client()?;
    let ready = ids.iter().filter(|i| c.is_ready(**i)).count() >= num_returns.min(ids.len());
    let flags = blocking(ready, || c.wait(&ids, num_returns, timeout))?;
    let mut ready = Vec::new();
    let mut rest = Vec::new();
    for (r, f) in refs.iter().zip(flags) {
        if f && ready.len() < num_returns {
            ready.push(r.clone());
        } else {
            rest.push(r.clone());
        }
    }
    Ok((ready, rest))
}

/// Stores a value in the cluster.
pub fn put<T: Serialize>(value: &T) -> Result<ObjectRef<T>, Error> {
    let data = postcard::to_allocvec(value).map_err(|e| Error::Serde(e.to_string()))?;
    Ok(ObjectRef::from_id(client()?.put(Bytes::from(data))?))
}

/// A node of the cluster, as `ray.nodes()` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    pub node_id: String,
    pub alive: bool,
    pub address: String,
    pub hostname: String,
    pub pid: u32,
    pub is_head: bool,
    pub resources: BTreeMap<String, f64>,
    pub available: BTreeMap<String, f64>,
}

fn resource_map(r: &Resources) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    m.insert("CPU".to_string(), r.cpu);
    if r.gpu > 0.0 {
        m.insert("GPU".to_string(), r.gpu);
    }
    if r.memory > 0.0 {
        m.insert("memory".to_string(), r.memory);
    }
    for (n, a) in &r.custom {
        m.insert(n.clone(), *a);
    }
    m
}

/// Every node the head knows, alive or dead.
pub fn nodes() -> Result<Vec<NodeInfo>, Error> {
    nodes_of(client()?)
}

fn nodes_of(c: &Client) -> Result<Vec<NodeInfo>, Error> {
    let v = c.cluster_view()?;
    Ok(v.nodes
        .iter()
        .map(|n| NodeInfo {
            node_id: format!("{:08x}", n.id),
            alive: n.alive,
            address: n.ip.clone(),
            hostname: n.hostname.clone(),
            pid: n.pid,
            is_head: n.is_head,
            resources: resource_map(&n.total),
            available: resource_map(&n.available),
        })
        .collect())
}

fn sum_resources(avail: bool) -> Result<BTreeMap<String, f64>, Error> {
    let mut out = BTreeMap::new();
    for n in nodes()?.into_iter().filter(|n| n.alive) {
        for (k, v) in if avail { n.available } else { n.resources } {
            *out.entry(k).or_insert(0.0) += v;
        }
    }
    Ok(out)
}

/// Total resources of the alive nodes.
pub fn cluster_resources() -> Result<BTreeMap<String, f64>, Error> {
    sum_resources(false)
}

/// Resources free right now on the alive nodes.
pub fn available_resources() -> Result<BTreeMap<String, f64>, Error> {
    sum_resources(true)
}

/// Where the calling code runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeContext {
    /// Node id (as in [`NodeInfo::node_id`]) inside a task; None in the driver.
    pub node_id: Option<String>,
    /// The node's address inside a task; this host's address in the driver.
    pub node_ip: String,
    /// The running task's id, inside a task.
    pub task_id: Option<u64>,
    /// The function running, inside a task.
    pub function: Option<String>,
    /// GPU ids this task may use (also in `CUDA_VISIBLE_DEVICES`).
    pub gpu_ids: Vec<String>,
}

pub fn get_runtime_context() -> RuntimeContext {
    match sunray_runtime::worker::current_task() {
        Some(t) => RuntimeContext {
            node_id: Some(format!("{:08x}", t.node_id)),
            node_ip: t.node_ip,
            task_id: Some(t.task_id),
            function: Some(t.function),
            gpu_ids: t.gpu_ids,
        },
        None => RuntimeContext {
            node_id: None,
            node_ip: detect::default_ip().to_string(),
            task_id: None,
            function: None,
            gpu_ids: std::env::var("CUDA_VISIBLE_DEVICES")
                .map(|v| detect::parse_visible_devices(&v))
                .unwrap_or_default(),
        },
    }
}

/// Low-level access for libraries built on sunray (sunray-tune).
pub mod ext {
    pub use sunray_runtime::detect::hostname;
    pub use sunray_runtime::driver::TaskEvent;
    pub use sunray_runtime::worker::ask_owner;

    /// The driver's connection.
    pub fn client() -> Result<&'static sunray_runtime::driver::Client, super::Error> {
        super::client()
    }

    /// Every node the head behind `client` knows (for front ends with their own
    /// connection, such as the Python one).
    pub fn nodes_of(
        client: &sunray_runtime::driver::Client,
    ) -> Result<Vec<super::NodeInfo>, super::Error> {
        super::nodes_of(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bytes_value_decodes_as_a_slice_of_the_message_and_others_as_before() {
        let blob = Bytes::from(vec![7u8; 300_000]);
        let wire = Bytes::from(postcard::to_allocvec(&blob).unwrap());
        let back: Bytes = decode(&wire).unwrap();
        assert_eq!(back, blob);
        let inside = wire.as_ptr_range();
        assert!(
            inside.contains(&back.as_ptr()),
            "no copy: it points into the message"
        );
        // Truncated or padded: an error.
        assert!(decode::<Bytes>(&wire.slice(..wire.len() - 1)).is_err());
        let mut padded = wire.to_vec();
        padded.push(0);
        assert!(decode::<Bytes>(&Bytes::from(padded)).is_err());
        let v: Vec<u8> =
            decode(&Bytes::from(postcard::to_allocvec(&vec![1u8, 2]).unwrap())).unwrap();
        assert_eq!(v, vec![1, 2]);
        let t: (Bytes, String) = decode(&Bytes::from(
            postcard::to_allocvec(&(Bytes::from_static(b"ab"), "x".to_string())).unwrap(),
        ))
        .unwrap();
        assert_eq!((&t.0[..], t.1.as_str()), (&b"ab"[..], "x"));
    }
}
