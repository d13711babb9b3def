//! Wire messages of sunray and the protocol version.
//!
//! Every connection carries length-delimited frames (4-byte big-endian length, then a
//! postcard-encoded message). The handshake is a mutual challenge–response over the
//! cluster token, which never crosses the wire: the connecting side sends a [`Hello`]
//! (protocol version, a fresh nonce, its role); the head answers
//! [`HelloReply::Challenge`] (its own nonce and a proof that it knows the token); the
//! client answers [`ClientProof`]; the head answers `Welcome` or `Refused`. See
//! [`auth`]. Everything a peer sends is checked by [`limits`] before it is acted on.
//! Nothing else lives in this crate, so that every process agrees on the bytes.

use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub mod auth;
#[cfg(feature = "gen")]
pub mod gen;
pub mod limits;

/// Bumped on every incompatible change of a message below. The first field of
/// [`Hello`] stays a `u32` version in every protocol, so that a head can refuse an older
/// or newer peer with a message it understands ([`HelloReply::Refused`] keeps its place).
pub const PROTOCOL_VERSION: u32 = 9;

/// Largest frame a peer may send before it has authenticated: a [`Hello`] with an
/// executable path of `PATH_MAX` fits with room to spare. Nobody can make the head
/// allocate more than this without the token.
pub const MAX_HELLO_BYTES: usize = 16 * 1024;

/// Default for the largest frame an authenticated peer may send (an object `put` travels
/// as one frame); see `SUNRAY_MAX_MESSAGE_MB`.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 30;

/// Executables travel in pieces of this size (uploads and fetches), never as one frame.
pub const BINARY_CHUNK_BYTES: usize = 4 << 20;

/// A random value used once, in the handshake.
pub type Nonce = [u8; 32];

pub type NodeId = u32;
/// A connected driver (a "job" in Ray's words).
pub type ClientId = u32;
/// The id of a task and of the object holding its return value (one return per task).
pub type ObjectId = u64;
pub type TaskId = ObjectId;
/// An actor's id: minted by its creator as object ids are (the id of its creation task).
pub type ActorId = ObjectId;
/// A placement group's id: the id of the object that becomes ready once it is placed.
pub type GroupId = ObjectId;

/// Object ids are minted by the client without a round trip: the head assigns each client
/// an id at connect time and the client numbers its objects under it.
pub fn object_id(client: ClientId, seq: u64) -> ObjectId {
    ((client as u64) << 40) | (seq & ((1 << 40) - 1))
}

/// The client that created an object.
pub fn object_owner(id: ObjectId) -> ClientId {
    (id >> 40) as ClientId
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Encodes a message into a frame body.
pub fn encode<T: Serialize>(msg: &T) -> Bytes {
    Bytes::from(postcard::to_allocvec(msg).expect("serialising into a Vec cannot fail"))
}

/// Decodes a frame body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtoError> {
    Ok(postcard::from_bytes(body)?)
}

/// Logical resources, as plain amounts (CPUs may be fractional; custom names are free).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu: f64,
    pub gpu: f64,
    pub memory: f64,
    pub custom: Vec<(String, f64)>,
}

/// Identifies the executable that workers of a driver must run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryInfo {
    pub path: String,
    /// xxh3-128 of the file's bytes, as 32 hex digits.
    pub hash: String,
    pub size: u64,
    /// Hash of the names of the remote functions compiled into it.
    pub registry_hash: String,
    /// How a worker runs it.
    pub kind: ProgramKind,
}

/// What a driver's workers run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProgramKind {
    /// The executable itself, in worker mode (a Rust program calling `sunray::init`).
    Native,
    /// The Python interpreter at `path`, running `sunray._worker` with the driver's
    /// `sys.path` and working directory (Ray's `py_driver_sys_path`). Never uploaded:
    /// every node must have the same environment at the same path, as with Ray.
    Python { sys_path: Vec<String>, cwd: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// Always the first field (see [`PROTOCOL_VERSION`]).
    pub version: u32,
    /// Fresh for each connection: the head's proof covers it, so a recorded proof
    /// cannot be replayed to this client.
    pub nonce: Nonce,
    pub role: Role,
    /// None: the proofs are keyed by the cluster token. Some(job): by that job's
    /// [`auth::job_credential`] (a worker), which only roles a worker needs may use.
    pub job_key: Option<ClientId>,
}

/// The client's answer to [`HelloReply::Challenge`]: proof that it knows the token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientProof {
    pub proof: [u8; 32],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Role {
    /// A user program submitting tasks.
    Driver {
        binary: BinaryInfo,
        hostname: String,
        pid: u32,
        /// Set by a worker that submits tasks from inside a task: the job (driver) it
        /// works for, whose workers run what it submits. None for a driver.
        job: Option<ClientId>,
    },
    /// A node agent joining the cluster.
    Node(NodeRegistration),
    /// A short-lived client asking about the cluster (`sunray status`).
    Query,
    /// A node fetching a driver's executable by hash.
    FetchBinary { hash: String },
    /// A driver or worker reading objects from a node's object store, or a worker
    /// storing its `put` values there (to the node's object server, not the head).
    Objects,
    /// A driver or worker calling actors of this node directly (to the node's object
    /// server, not the head): [`CallerToNode`] and [`NodeToCaller`] frames.
    Calls,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRegistration {
    pub ip: String,
    pub hostname: String,
    pub pid: u32,
    pub resources: Resources,
    /// Device ids of the node's GPUs (as `CUDA_VISIBLE_DEVICES` names them).
    pub gpu_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HelloReply {
    Welcome {
        client_id: ClientId,
        node_id: Option<NodeId>,
        /// For drivers: the head cannot read the executable at `path` with that hash,
        /// so the driver must upload it (nodes fetch it from the head).
        upload_binary: bool,
    },
    /// Kept second in every protocol version: old peers decode it.
    Refused { reason: String },
    /// The head's nonce and its proof that it knows the token (see [`auth`]).
    Challenge { nonce: Nonce, proof: [u8; 32] },
}

/// One piece of an executable sent by the head to a node that fetches it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum BinaryChunk {
    Data(Bytes),
    /// Sent after the last piece.
    End,
    Missing(String),
}

/// One argument of a task: a serialised value, or the id of an object the head must
/// resolve before the task runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Arg {
    Value(Bytes),
    Ref(ObjectId),
    /// Set by the head only: a large object kept in a node's object store, which the
    /// worker reads from that node before the task runs.
    At(ObjectId, Location),
}

/// Objects larger than this stay in the object store of the node that made them (a
/// task's result, a task's `put`); smaller ones travel inline through the head, as in
/// Ray (`max_direct_call_object_size`, 100 KiB).
pub const INLINE_OBJECT_BYTES: usize = 100 * 1024;

/// Where a stored object lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub node: NodeId,
    /// The node's object server, HOST:PORT.
    pub addr: String,
    pub size: u64,
}

/// An object's value as the head and drivers pass it: the bytes, or where they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Inline(Bytes),
    Stored(Location),
}

/// A task's outcome past its node: its value (or location) or its error.
pub type Reply = Result<Value, TaskError>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskSpec {
    pub id: TaskId,
    /// Registered name of the remote function (module path and name).
    pub function: String,
    pub args: Vec<Arg>,
    pub resources: Resources,
    /// How often the task is re-run after its worker or node died (an actor call has
    /// its actor's `max_task_retries` instead).
    pub max_retries: u32,
    /// A plain task, an actor's creation, or a call of one of its methods.
    pub kind: TaskKind,
    /// Runs in this placement group's bundle (None: wherever it fits).
    pub bundle: Option<InBundle>,
}

/// A bundle of a placement group: a given one, or any with room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InBundle {
    pub group: GroupId,
    pub index: Option<u32>,
}

/// Ray's placement strategies for a group's bundles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlacementStrategy {
    Pack,
    Spread,
    StrictPack,
    StrictSpread,
}

/// What a task is to the head and the node agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskKind {
    Plain,
    /// Starts an actor (its id is this task's id): the task runs the constructor in a
    /// worker of its own, which then belongs to the actor and keeps the task's resources
    /// for the actor's lifetime. The task's result says whether the constructor returned.
    CreateActor(Box<ActorOptions>),
    /// Calls a method (`TaskSpec::function` names it) in the actor's worker; calls run
    /// one at a time in the order the head received them. Holds no resources.
    ActorCall {
        actor: ActorId,
    },
}

/// How an actor lives (Ray's actor options).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorOptions {
    /// The actor's class, for errors and `sunray status`.
    pub class: String,
    /// Unique among live actors when given: others find it with `get_actor(name)`.
    pub name: Option<String>,
    /// Outlives its creator (Ray's `lifetime="detached"`); ends with `kill` or the cluster.
    pub detached: bool,
    /// How often it is restarted after its process or node died (`-1`: always).
    pub max_restarts: i64,
    /// How often a call cut short by the actor's death is run again (`-1`: always).
    pub max_task_retries: i64,
    /// Calls run at once, each on a thread of the actor's process (Ray's threaded
    /// actors); 1: one at a time, in order.
    pub max_concurrency: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The function returned an error or panicked.
    Application,
    /// The worker process died while running the task.
    WorkerDied,
    /// The node running the task left the cluster.
    NodeDied,
    /// The worker's executable does not contain the function.
    FunctionNotFound,
    /// The head refused the task as submitted (an invalid resource request).
    Invalid,
    /// An argument could not be decoded (driver and worker disagree on types).
    BadArguments,
    /// A task this one depends on failed.
    DependencyFailed,
    /// The actor of a method call is dead (killed, its constructor failed, or its
    /// process or node died with no restarts left).
    ActorDied,
    /// The object was never created or was released.
    ObjectLost,
    /// The node could not start a worker (missing executable, exec failure).
    WorkerStartFailed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    pub kind: ErrorKind,
    /// Function name of the failed task.
    pub function: String,
    /// Where it ran, as "node <id> (<ip>)", when known.
    pub location: Option<String>,
    pub message: String,
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            ErrorKind::Application => "failed",
            ErrorKind::WorkerDied => "lost its worker process",
            ErrorKind::NodeDied => "lost its node",
            ErrorKind::FunctionNotFound => "cannot run: function not found in the worker",
            ErrorKind::Invalid => "was refused by the head",
            ErrorKind::BadArguments => "cannot run: bad arguments",
            ErrorKind::DependencyFailed => "cannot run: a dependency failed",
            ErrorKind::ActorDied => "cannot run: its actor died",
            ErrorKind::ObjectLost => "cannot run: object lost",
            ErrorKind::WorkerStartFailed => "cannot run: worker did not start",
        };
        if self.function.is_empty() {
            // Not a task's failure (an object lost with its owner or node): the message
            // names the object and what was lost.
            return f.write_str(&self.message);
        }
        write!(f, "task {} {}", self.function, what)?;
        if let Some(loc) = &self.location {
            write!(f, " on {loc}")?;
        }
        write!(f, ": {}", self.message)
    }
}

pub type Outcome = Result<Bytes, TaskError>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DriverToHead {
    Submit(Vec<TaskSpec>),
    Put {
        id: ObjectId,
        data: Bytes,
    },
    /// A worker's large `put`, already in its node's object store.
    PutAt {
        id: ObjectId,
        at: Location,
    },
    /// The driver dropped its last reference to these objects.
    Release(Vec<ObjectId>),
    /// Answer to a [`HeadToDriver::TaskMessage`] of a running task.
    TaskReply {
        task: TaskId,
        data: Bytes,
    },
    /// One piece of the driver's executable, in order; `last` ends the upload.
    UploadBinary {
        hash: String,
        data: Bytes,
        last: bool,
    },
    Query(Query),
    /// Reserves a placement group's bundles, all at once when they fit; object `id`
    /// becomes ready then (Ray's `placement_group(...).ready()`).
    CreateGroup {
        id: GroupId,
        name: Option<String>,
        bundles: Vec<Resources>,
        strategy: PlacementStrategy,
        /// The ready object's value, in the creator's language ("ready").
        ready: Bytes,
        /// Outlives its creator (Ray's `lifetime="detached"`): removed only by
        /// `RemoveGroup` (from any driver) or with the cluster.
        detached: bool,
    },
    /// Frees a group's bundles; tasks and actors in it fail.
    RemoveGroup {
        id: GroupId,
    },
    /// Send me these objects' outcomes when they are known (objects of other clients:
    /// a task's arguments naming refs of its driver, say).
    Subscribe(Vec<ObjectId>),
    /// Ray's `kill(actor, no_restart=…)`: ends the actor's process; with `no_restart`
    /// false it is restarted as after a crash (while it has restarts left).
    KillActor {
        actor: ActorId,
        no_restart: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HeadToDriver {
    Done(Vec<(ObjectId, Reply)>),
    /// A message sent by a running task to its owner (Tune's `report`).
    TaskMessage {
        task: TaskId,
        data: Bytes,
    },
    /// Lines a worker of this driver printed.
    Log {
        origin: String,
        lines: Vec<String>,
    },
    Warning(String),
    QueryReply(ClusterView),
    /// Sent every second: a driver that hears nothing for its timeout knows the head
    /// is gone or stopped, even when no result is due.
    Heartbeat,
    /// Where an actor this client calls lives: its node `node` serves calls at `addr`
    /// (Role::Calls), and to callers on its host at the Unix socket `calls_socket`, so
    /// later calls may go there directly. `retries`: how often a call may run again
    /// when the actor dies under it (its `max_task_retries`).
    ActorAt {
        actor: ActorId,
        node: NodeId,
        addr: String,
        calls_socket: String,
        retries: u32,
    },
}

/// A caller's message on its direct connection to an actor's node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CallerToNode {
    /// Run this call of an actor living on this node. `epoch`: how many
    /// [`NodeToCaller::Lost`] for this actor the caller has read on this connection; a
    /// call sent before it read the last one is refused (it goes after the calls that
    /// one made it send again).
    Call { spec: TaskSpec, epoch: u32 },
    /// The answer to a [`NodeToCaller::Message`] of a call.
    Reply { task: TaskId, data: Bytes },
}

/// The node's message to a direct caller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeToCaller {
    /// Results of its calls (values inline, whatever their size).
    Done(Vec<(TaskId, Outcome)>),
    /// These calls of `actor` will not answer here: the actor is not here (`ran`
    /// false: they never started), or its process died with them sent to it (`ran`
    /// true). The caller sends them through the head, which retries, restarts or
    /// fails them as it does its own.
    Lost {
        actor: ActorId,
        tasks: Vec<TaskId>,
        ran: bool,
        why: String,
    },
    /// A call's message to its caller (as [`HeadToDriver::TaskMessage`]).
    Message { task: TaskId, data: Bytes },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Query {
    /// The cluster as it is now.
    Status,
    /// Answered once at least `nodes` nodes are alive.
    WaitForNodes { nodes: u32 },
    /// Stop the whole cluster (head and every node agent).
    Shutdown,
    /// The status, with the last lines a node's workers printed, or a task printed, in
    /// [`ClusterView::log`].
    Logs {
        node: Option<NodeId>,
        task: Option<TaskId>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    pub id: NodeId,
    pub alive: bool,
    pub ip: String,
    pub hostname: String,
    pub pid: u32,
    pub total: Resources,
    pub available: Resources,
    pub is_head: bool,
    /// Objects in its object store and their bytes.
    pub objects: u64,
    pub object_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterView {
    pub nodes: Vec<NodeView>,
    pub queued_tasks: u64,
    pub running_tasks: u64,
    pub infeasible_tasks: u64,
    pub drivers: u32,
    /// Objects the head holds (results and `put` values not yet released, pending
    /// results) and the bytes of those with a value.
    pub objects: u64,
    pub object_bytes: u64,
    /// Tasks per remote function, by name.
    pub functions: Vec<FunctionTasks>,
    /// Actors alive, starting or restarting, and the last dead ones.
    pub actors: Vec<ActorView>,
    /// Placement groups waiting, placed, and the last removed ones.
    pub groups: Vec<GroupView>,
    /// The last tasks that printed, newest first.
    pub outputs: Vec<TaskOutput>,
    /// The lines asked for with [`Query::Logs`] (empty otherwise).
    pub log: Vec<String>,
}

/// A task whose output the head keeps (the last lines of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOutput {
    pub task: TaskId,
    pub function: String,
    pub node: NodeId,
    /// Lines it printed in all (the head keeps the last ones).
    pub lines: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupState {
    /// Waiting for room (or for nodes that could ever hold it).
    Pending,
    Created,
    /// A node holding one of its bundles left: that bundle waits to be placed again.
    Rescheduling,
    Removed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupView {
    pub id: GroupId,
    pub name: Option<String>,
    pub strategy: PlacementStrategy,
    pub state: GroupState,
    pub bundles: Vec<Resources>,
    /// The node of each bundle, once placed.
    pub nodes: Vec<NodeId>,
    /// Why it waits (cannot fit the cluster) or why it was removed.
    pub why: Option<String>,
    pub detached: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActorState {
    /// Waiting for resources or its constructor.
    Pending,
    Alive,
    Restarting,
    Dead,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorView {
    pub id: ActorId,
    pub class: String,
    pub name: Option<String>,
    pub state: ActorState,
    pub node: Option<NodeId>,
    /// The driver that created it.
    pub owner: ClientId,
    pub detached: bool,
    pub restarts: u32,
    pub resources: Resources,
    /// Calls waiting or running.
    pub pending_calls: u64,
    /// Why it died, once dead.
    pub death: Option<String>,
}

/// The tasks of one remote function: waiting (for their arguments or for resources),
/// running, and ended since the head started (successes and failures).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionTasks {
    pub function: String,
    pub waiting: u64,
    pub running: u64,
    pub finished: u64,
}

/// What the head gives a node to run: the task with every argument resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignment {
    pub client: ClientId,
    pub spec: TaskSpec,
    /// Run when this task (running or itself waiting on this node) ends, on its
    /// resources, instead of when resources are free (pipelining of short tasks).
    pub after: Option<TaskId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HeadToNode {
    /// Executable for a driver's workers; sent once per node before its first task.
    Job {
        client: ClientId,
        binary: BinaryInfo,
    },
    Run(Vec<Assignment>),
    /// The driver left: kill its workers.
    EndJob {
        client: ClientId,
    },
    TaskReply {
        task: TaskId,
        data: Bytes,
    },
    /// End this actor's process (`kill`, or its owner left).
    KillActor {
        actor: ActorId,
    },
    /// Nobody refers to these objects any more: drop them from the object store.
    Free(Vec<ObjectId>),
    /// The answer to each [`NodeToHead::Blocked`]: the head read it and took back what it
    /// had pipelined behind `task`. Until every block of the task is answered, a `Run`
    /// behind it (or behind a task dropped for it) was sent before the head read the
    /// block, and the node drops it; one sent after the answer is a new placement.
    Lent {
        task: TaskId,
    },
    Shutdown,
    /// Sent every second (see [`HeadToDriver::Heartbeat`]).
    Heartbeat,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeToHead {
    Done(Vec<(TaskId, Reply)>),
    TaskMessage {
        task: TaskId,
        data: Bytes,
    },
    Log {
        client: ClientId,
        origin: String,
        lines: Vec<String>,
        /// The task (or actor call) the worker ran when it printed them, and its
        /// function.
        task: Option<(TaskId, String)>,
    },
    /// The task waits in `get` or `wait` for other tasks: its CPUs are lent to them
    /// until [`NodeToHead::Unblocked`] (Ray does the same, so nested tasks cannot
    /// deadlock a full cluster). Tasks pipelined behind it were revoked.
    Blocked {
        task: TaskId,
    },
    Unblocked {
        task: TaskId,
    },
    /// An actor's process ended (crashed, killed, or its constructor failed to start):
    /// its resources are free on this node; the calls it had are the head's to retry.
    ActorDied {
        actor: ActorId,
        why: String,
    },
    Heartbeat,
    /// Where this node's object server listens (objects, and direct actor calls), and
    /// the Unix socket where callers on its host may call its actors; sent once, first.
    ObjectServer {
        addr: String,
        calls_socket: String,
    },
    /// `blocked` tasks of these drivers wait in `get`/`wait` here and `waiting` more
    /// wait for a worker, which the cap of `cap` workers for blocked tasks keeps from
    /// starting: nested tasks that cannot progress (the head warns the drivers).
    Stuck {
        clients: Vec<ClientId>,
        blocked: u32,
        waiting: u32,
        cap: u32,
    },
}

/// What a worker learns about the task it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerTask {
    pub spec: TaskSpec,
    /// The job (driver) the task belongs to: what it submits belongs to it too.
    pub job: ClientId,
    pub node_id: NodeId,
    pub node_ip: String,
    pub gpu_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeToWorker {
    Run(WorkerTask),
    Reply {
        task: TaskId,
        data: Bytes,
    },
    /// Answer to [`WorkerToNode::Blocked`]: the tasks sent ahead to this worker that it
    /// must not run (they go elsewhere).
    Revoked {
        tasks: Vec<TaskId>,
    },
    /// A prestarted Python worker now serves a driver: its module path goes first on
    /// `sys.path`, and it moves to the driver's working directory. `credential` is the
    /// job's [`auth::job_credential`] (the node's core leaves it empty; its shell, which
    /// holds the token, fills it in).
    Adopt {
        sys_path: Vec<String>,
        cwd: String,
        job: ClientId,
        credential: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WorkerToNode {
    /// `secret`: the one-time secret the node handed this worker at its start (over an
    /// inherited pipe, never in its environment).
    Hello {
        worker_id: u64,
        secret: String,
    },
    Done {
        task: TaskId,
        outcome: Outcome,
    },
    Message {
        task: TaskId,
        data: Bytes,
    },
    /// The running task waits for other tasks' results (see [`NodeToHead::Blocked`]);
    /// the node answers [`NodeToWorker::Revoked`].
    Blocked {
        task: TaskId,
    },
    Unblocked {
        task: TaskId,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids_carry_their_owner() {
        let id = object_id(7, 123);
        assert_eq!(object_owner(id), 7);
        assert_ne!(object_id(7, 1), object_id(8, 1));
    }

    #[test]
    fn messages_round_trip() {
        let msg = DriverToHead::Submit(vec![TaskSpec {
            id: object_id(1, 2),
            function: "m::f".into(),
            args: vec![Arg::Value(Bytes::from_static(b"\x01")), Arg::Ref(5)],
            resources: Resources {
                cpu: 1.0,
                custom: vec![("ssd".into(), 0.5)],
                ..Default::default()
            },
            max_retries: 3,
            kind: TaskKind::ActorCall { actor: 9 },
            bundle: Some(InBundle {
                group: 4,
                index: Some(1),
            }),
        }]);
        let back: DriverToHead = decode(&encode(&msg)).unwrap();
        match back {
            DriverToHead::Submit(t) => {
                assert_eq!(t[0].function, "m::f");
                assert_eq!(t[0].resources.custom[0].1, 0.5);
                assert!(matches!(t[0].args[1], Arg::Ref(5)));
            }
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<Hello>(b"\xff\xff\xff\xff\xff\xff").is_err());
        assert!(decode::<HeadToNode>(b"").is_err());
    }

    #[test]
    fn task_error_names_task_node_and_message() {
        let e = TaskError {
            kind: ErrorKind::Application,
            function: "demo::boom".into(),
            location: Some("node 2 (127.0.0.2)".into()),
            message: "panicked: bad".into(),
        };
        let s = e.to_string();
        assert!(s.contains("demo::boom") && s.contains("127.0.0.2") && s.contains("bad"));
    }
}
