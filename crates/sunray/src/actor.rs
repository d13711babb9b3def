//! Actors: a struct whose `impl` carries `#[sunray::actor]` lives in a worker of its
//! own on the cluster; its methods run there, one at a time, in the order each caller
//! submitted them.
//!
//! ```no_run
//! pub struct Counter { n: u64 }
//!
//! #[sunray::actor]
//! impl Counter {
//!     pub fn new(start: u64) -> Self { Counter { n: start } }
//!     pub fn incr(&mut self, by: u64) -> u64 { self.n += by; self.n }
//! }
//!
//! fn main() -> Result<(), sunray::Error> {
//!     sunray::init()?;
//!     let c = Counter::remote(10);
//!     let a = c.incr(1).remote();
//!     let b = c.incr(2).remote();
//!     assert_eq!((a.get()?, b.get()?), (11, 13));
//!     Ok(())
//! }
//! ```

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sunray_proto::{ActorId, ActorState, ErrorKind, Resources, TaskKind, TaskSpec};

use crate::{client, ArgValue, Error, ObjectRef};

/// What `#[sunray::actor]` implements for the struct.
pub trait Actor: 'static {
    /// Registered name: module path and struct name.
    const CLASS: &'static str;
    /// The generated type holding the remote versions of the methods; a handle derefs
    /// to it, so `handle.method(args).remote()` works without an import.
    type Methods: From<ActorId> + Send + Sync;
}

/// How an actor lives and what it holds (Ray's actor `.options(...)`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActorOptions {
    /// CPUs held for the actor's lifetime (default 0, as an actor holds in Ray once
    /// created).
    pub num_cpus: Option<f64>,
    /// GPUs held for its lifetime; its process sees exactly them (`CUDA_VISIBLE_DEVICES`).
    pub num_gpus: Option<f64>,
    pub memory: Option<f64>,
    pub resources: Vec<(String, f64)>,
    /// Others find it with [`get_actor`] while it lives.
    pub name: Option<String>,
    /// Outlives its driver (Ray's `lifetime="detached"`): ends with [`kill`].
    pub detached: bool,
    /// Restarts after its process or node died (-1: always; default 0).
    pub max_restarts: i64,
    /// Reruns of a call its death cut short (-1: always; default 0).
    pub max_task_retries: i64,
    /// Lives in this bundle of a placement group.
    pub bundle: Option<sunray_proto::InBundle>,
}

impl ActorOptions {
    pub fn new() -> Self {
        Self::default()
    }
    resource_setters!();
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }
    pub fn detached(mut self) -> Self {
        self.detached = true;
        self
    }
    pub fn max_restarts(mut self, n: i64) -> Self {
        self.max_restarts = n;
        self
    }
    pub fn max_task_retries(mut self, n: i64) -> Self {
        self.max_task_retries = n;
        self
    }
    /// Lives in a placement group's bundle (its resources come from the bundle).
    pub fn in_bundle(mut self, b: sunray_proto::InBundle) -> Self {
        self.bundle = Some(b);
        self
    }
}

/// A handle on a live actor: cheap to clone, and serialisable (it travels as the
/// actor's id). Methods are called through it: `handle.method(args).remote()`.
pub struct ActorHandle<A: Actor> {
    id: ActorId,
    methods: A::Methods,
    /// The constructor's result, for [`ready`](Self::ready) (only in its creator).
    created: Option<ObjectRef<()>>,
}

impl<A: Actor> ActorHandle<A> {
    /// A handle on the actor with this id (as [`id`](Self::id) gives it).
    pub fn from_id(id: ActorId) -> Self {
        ActorHandle {
            id,
            methods: A::Methods::from(id),
            created: None,
        }
    }

    pub fn id(&self) -> ActorId {
        self.id
    }

    /// Waits until its constructor returned; its error if it failed.
    pub fn ready(&self) -> Result<(), Error> {
        match &self.created {
            Some(r) => r.get(),
            None => Ok(()),
        }
    }

    /// Ends the actor's process at once (as Ray's `kill(actor)`): it is not restarted,
    /// and calls not yet run fail with an "actor died" error.
    pub fn kill(&self) -> Result<(), Error> {
        kill(self.id, true)
    }
}

impl<A: Actor> Clone for ActorHandle<A> {
    fn clone(&self) -> Self {
        ActorHandle {
            id: self.id,
            methods: A::Methods::from(self.id),
            created: self.created.clone(),
        }
    }
}

impl<A: Actor> std::ops::Deref for ActorHandle<A> {
    type Target = A::Methods;
    fn deref(&self) -> &A::Methods {
        &self.methods
    }
}

impl<A: Actor> std::fmt::Debug for ActorHandle<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActorHandle({} {:#x})", A::CLASS, self.id)
    }
}

impl<A: Actor> Serialize for ActorHandle<A> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.id.serialize(s)
    }
}

impl<'de, A: Actor> Deserialize<'de> for ActorHandle<A> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ActorHandle::from_id(ActorId::deserialize(d)?))
    }
}

/// A method call ready to be submitted: `.remote()` sends it.
#[must_use = "a method call does nothing until .remote() submits it"]
pub struct ActorCall<T> {
    actor: ActorId,
    method: &'static str,
    args: Vec<ArgValue>,
    _t: PhantomData<fn() -> T>,
}

impl<T> ActorCall<T> {
    #[doc(hidden)]
    pub fn __new(actor: ActorId, method: &'static str, args: Vec<ArgValue>) -> Self {
        ActorCall {
            actor,
            method,
            args,
            _t: PhantomData,
        }
    }

    /// Submits the call; returns at once. Calls from one caller run in the order they
    /// were submitted.
    pub fn remote(self) -> ObjectRef<T> {
        crate::submit_kind(
            self.method,
            self.args,
            Resources::default(),
            0,
            TaskKind::ActorCall { actor: self.actor },
            None,
        )
    }
}

/// Starts an actor (what the generated `Counter::remote` calls).
#[doc(hidden)]
pub fn create<A: Actor>(args: Vec<ArgValue>, opts: &ActorOptions) -> ActorHandle<A> {
    let kind = TaskKind::CreateActor(Box::new(sunray_proto::ActorOptions {
        class: A::CLASS.to_string(),
        name: opts.name.clone(),
        detached: opts.detached,
        max_restarts: opts.max_restarts,
        max_task_retries: opts.max_task_retries,
        // `&mut self` methods: one call at a time.
        max_concurrency: 1,
    }));
    let resources = Resources {
        cpu: opts.num_cpus.unwrap_or(0.0),
        gpu: opts.num_gpus.unwrap_or(0.0),
        memory: opts.memory.unwrap_or(0.0),
        custom: opts.resources.clone(),
    };
    let created: ObjectRef<()> =
        crate::submit_kind(A::CLASS, args, resources, 0, kind, opts.bundle);
    ActorHandle {
        id: created.id(),
        methods: A::Methods::from(created.id()),
        created: Some(created),
    }
}

/// Ends actor `id`'s process. With `no_restart` false it restarts as after a crash
/// (while it has restarts left).
pub fn kill(id: ActorId, no_restart: bool) -> Result<(), Error> {
    client()?.kill_actor(id, no_restart)?;
    Ok(())
}

/// A live actor by the name it was given (`ActorOptions::name`).
pub fn get_actor<A: Actor>(name: &str) -> Result<ActorHandle<A>, Error> {
    get_actor_within(name, None)
}

/// [`get_actor`], waiting up to `timeout` for the actor to appear (a driver that looks
/// up an actor another one is creating).
pub fn get_actor_within<A: Actor>(
    name: &str,
    timeout: Option<Duration>,
) -> Result<ActorHandle<A>, Error> {
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let view = client()?.cluster_view()?;
        let found = view
            .actors
            .iter()
            .find(|a| a.name.as_deref() == Some(name) && a.state != ActorState::Dead);
        match found {
            Some(a) if a.class == A::CLASS => return Ok(ActorHandle::from_id(a.id)),
            Some(a) => {
                return Err(Error::Runtime(format!(
                    "actor '{name}' is a {}, not a {}",
                    a.class,
                    A::CLASS
                )))
            }
            None if deadline.is_some_and(|d| std::time::Instant::now() < d) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            None => {
                return Err(Error::Runtime(format!(
                    "no live actor is named '{name}' (names are given with ActorOptions::name)"
                )))
            }
        }
    }
}

/// A new instance of an actor class, or why its constructor could not run.
#[doc(hidden)]
pub type NewInstance = Result<Box<dyn Any + Send>, (ErrorKind, String)>;

/// Registration of an actor class, for workers (generated by `#[sunray::actor]`).
#[doc(hidden)]
pub struct ActorClass {
    pub name: &'static str,
    pub new: fn(&[Bytes]) -> NewInstance,
    pub call: fn(&mut (dyn Any + Send), &str, &[Bytes]) -> crate::__private::InvokeResult,
}
inventory::collect!(ActorClass);

/// The actor this worker process serves.
static INSTANCE: Mutex<Option<Box<dyn Any + Send>>> = Mutex::new(None);

/// Runs a task of the actor kinds in this worker.
pub(crate) fn invoke(spec: &TaskSpec, args: &[Bytes]) -> crate::__private::InvokeResult {
    let class = |name: &str| {
        inventory::iter::<ActorClass>
            .into_iter()
            .find(|c| c.name == name)
    };
    match &spec.kind {
        TaskKind::CreateActor(_) => {
            let Some(c) = class(&spec.function) else {
                return Err((
                    ErrorKind::FunctionNotFound,
                    format!(
                        "no actor class `{}` in this worker's executable",
                        spec.function
                    ),
                ));
            };
            let obj = (c.new)(args)?;
            *INSTANCE.lock().unwrap() = Some(obj);
            crate::__private::encode_output(&())
        }
        TaskKind::ActorCall { actor } => {
            let (class_name, method) = spec.function.rsplit_once("::").unwrap_or(("", ""));
            let Some(c) = class(class_name) else {
                return Err((
                    ErrorKind::FunctionNotFound,
                    format!("no actor class `{class_name}` in this worker's executable"),
                ));
            };
            let mut guard = INSTANCE.lock().unwrap();
            let Some(obj) = guard.as_mut() else {
                return Err((
                    ErrorKind::ActorDied,
                    format!("actor {actor:#x} has no instance in this worker"),
                ));
            };
            (c.call)(obj.as_mut(), method, args)
        }
        TaskKind::Plain => unreachable!("plain tasks are invoked by name"),
    }
}

/// Names of the actor classes and methods compiled in (part of the registry hash).
pub(crate) fn class_names() -> impl Iterator<Item = &'static str> {
    inventory::iter::<ActorClass>.into_iter().map(|c| c.name)
}
