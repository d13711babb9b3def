//! Generated messages for tests and fuzzing (feature `gen`): every variant, with the
//! values a hostile or buggy peer sends: NaN, infinite, negative and huge amounts,
//! foreign ids, empty and very long strings.

use bytes::Bytes;
use rand::Rng;

use crate::*;

/// A resource amount: usually sane, often absurd.
pub fn amount(rng: &mut impl Rng) -> f64 {
    match rng.random_range(0..8) {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => -rng.random::<f64>() * 10.0,
        3 => 1e300,
        4 => 1e12,
        _ => rng.random_range(0.0..8.0),
    }
}

/// A string of 0 to 5,000 printable bytes.
pub fn string(rng: &mut impl Rng) -> String {
    let n = *[0usize, 1, 8, 300, 5000]
        .get(rng.random_range(0..5))
        .unwrap();
    (0..n)
        .map(|_| rng.random_range(b'!'..=b'~') as char)
        .collect()
}

/// An object id: mostly the client's own, sometimes anyone's.
pub fn id(rng: &mut impl Rng, client: ClientId) -> u64 {
    match rng.random_range(0..4) {
        0 => rng.random(),
        _ => object_id(client, rng.random_range(0..64)),
    }
}

pub fn resources(rng: &mut impl Rng) -> Resources {
    Resources {
        cpu: amount(rng),
        gpu: amount(rng),
        memory: amount(rng),
        custom: (0..rng.random_range(0..3))
            .map(|_| (string(rng), amount(rng)))
            .collect(),
    }
}

/// Any message a driver may send.
pub fn driver_message(rng: &mut impl Rng, client: ClientId) -> DriverToHead {
    match rng.random_range(0..10) {
        8 => DriverToHead::CreateGroup {
            id: id(rng, client),
            name: rng.random::<bool>().then(|| string(rng)),
            bundles: (0..rng.random_range(0..4))
                .map(|_| resources(rng))
                .collect(),
            strategy: [
                PlacementStrategy::Pack,
                PlacementStrategy::Spread,
                PlacementStrategy::StrictPack,
                PlacementStrategy::StrictSpread,
            ][rng.random_range(0..4)],
            ready: Bytes::new(),
            detached: rng.random(),
        },
        9 => DriverToHead::RemoveGroup {
            id: id(rng, client),
        },
        7 => DriverToHead::Subscribe((0..3).map(|_| id(rng, client)).collect()),
        6 => DriverToHead::KillActor {
            actor: id(rng, client),
            no_restart: rng.random(),
        },
        0 => DriverToHead::Submit(
            (0..rng.random_range(0..4))
                .map(|_| TaskSpec {
                    id: id(rng, client),
                    function: string(rng),
                    args: (0..rng.random_range(0..3))
                        .map(|_| match rng.random() {
                            true => Arg::Ref(id(rng, client)),
                            false => Arg::Value(Bytes::from(string(rng))),
                        })
                        .collect(),
                    resources: resources(rng),
                    max_retries: rng.random_range(0..3),
                    kind: task_kind(rng, client),
                    bundle: rng.random_bool(0.2).then(|| InBundle {
                        group: id(rng, client),
                        index: rng.random::<bool>().then(|| rng.random_range(0..4)),
                    }),
                })
                .collect(),
        ),
        1 if rng.random() => DriverToHead::Put {
            id: id(rng, client),
            data: Bytes::from(string(rng)),
        },
        1 => DriverToHead::PutAt {
            id: id(rng, client),
            at: location(rng),
        },
        2 => DriverToHead::Release((0..3).map(|_| id(rng, client)).collect()),
        3 => DriverToHead::TaskReply {
            task: id(rng, client),
            data: Bytes::from(string(rng)),
        },
        4 => DriverToHead::UploadBinary {
            hash: format!("{:032x}", rng.random::<u128>()),
            data: Bytes::from(string(rng)),
            last: rng.random(),
        },
        _ => DriverToHead::Query(match rng.random_range(0..3) {
            0 => Query::Status,
            1 => Query::Logs {
                node: rng.random::<bool>().then(|| rng.random_range(0..8)),
                task: rng.random::<bool>().then(|| id(rng, client)),
            },
            _ => Query::WaitForNodes {
                nodes: rng.random(),
            },
        }),
    }
}

/// Mostly plain tasks; actors' creations (absurd options included) and calls of
/// actors that may or may not exist.
pub fn task_kind(rng: &mut impl Rng, client: ClientId) -> TaskKind {
    match rng.random_range(0..6) {
        0 => TaskKind::CreateActor(Box::new(ActorOptions {
            class: string(rng),
            name: rng.random::<bool>().then(|| string(rng)),
            detached: rng.random(),
            max_restarts: rng.random_range(-2..3),
            max_task_retries: rng.random_range(-2..3),
            max_concurrency: rng.random_range(0..4),
        })),
        1 | 2 => TaskKind::ActorCall {
            actor: id(rng, client),
        },
        _ => TaskKind::Plain,
    }
}

/// Where a stored object might be (often nowhere reachable).
pub fn location(rng: &mut impl Rng) -> Location {
    Location {
        node: rng.random_range(0..8),
        addr: string(rng),
        size: rng.random_range(0..1 << 20),
    }
}

/// Any message a node may send.
pub fn node_message(rng: &mut impl Rng) -> NodeToHead {
    let id = rng.random_range(0..1u64 << 44);
    match rng.random_range(0..9) {
        8 => NodeToHead::Stuck {
            clients: (0..rng.random_range(0..4)).map(|_| rng.random()).collect(),
            blocked: rng.random(),
            waiting: rng.random(),
            cap: rng.random(),
        },
        7 => NodeToHead::ObjectServer {
            addr: match rng.random() {
                true => format!("127.0.0.{}:{}", rng.random_range(0..9), rng.random::<u16>()),
                false => string(rng),
            },
            calls_socket: string(rng),
        },
        5 => NodeToHead::Blocked { task: id },
        6 => NodeToHead::Unblocked { task: id },
        4 => NodeToHead::ActorDied {
            actor: id,
            why: string(rng),
        },
        0 => NodeToHead::Done(vec![(
            id,
            match rng.random_range(0..3) {
                0 => Ok(Value::Inline(Bytes::from(string(rng)))),
                1 => Ok(Value::Stored(location(rng))),
                _ => Err(TaskError {
                    kind: ErrorKind::WorkerDied,
                    function: string(rng),
                    location: None,
                    message: string(rng),
                }),
            },
        )]),
        1 => NodeToHead::TaskMessage {
            task: id,
            data: Bytes::from(string(rng)),
        },
        2 => NodeToHead::Log {
            client: rng.random_range(0..8),
            origin: string(rng),
            lines: vec![string(rng)],
            task: rng.random::<bool>().then(|| (id, string(rng))),
        },
        _ => NodeToHead::Heartbeat,
    }
}

/// A node registration, as often absurd as sane.
pub fn registration(rng: &mut impl Rng) -> NodeRegistration {
    let resources = resources(rng);
    let ids = match rng.random() {
        true => resources.gpu.clamp(0.0, 8.0) as usize,
        false => rng.random_range(0..4),
    };
    NodeRegistration {
        ip: match rng.random_range(0..3) {
            0 => string(rng),
            _ => format!("127.0.0.{}", rng.random_range(2..250)),
        },
        hostname: string(rng),
        pid: rng.random(),
        resources,
        gpu_ids: (0..ids).map(|i| i.to_string()).collect(),
    }
}
