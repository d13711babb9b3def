//! Checks of everything a peer sends, applied before the head or a node acts on it: a
//! message that fails gets a clear refusal (or its connection dropped), never a panic,
//! an abort or an allocation its sender chose.

use crate::{
    object_owner, BinaryInfo, ClientId, DriverToHead, NodeRegistration, Resources, TaskKind,
    TaskSpec, BINARY_CHUNK_BYTES,
};

/// Largest amount of any one resource (CPUs, memory, a custom resource) a node may offer
/// or a task may ask for.
pub const MAX_AMOUNT: f64 = 1e9;
/// Most GPUs one node may offer.
pub const MAX_GPUS_PER_NODE: usize = 4096;
/// Most custom resource names in one request or node.
pub const MAX_CUSTOM: usize = 64;
/// Longest resource name, function name, hostname, GPU id.
pub const MAX_NAME: usize = 255;
/// Longest executable path (Linux's `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// Entries of a Python driver's `sys.path` that its workers get.
pub const MAX_SYS_PATH: usize = 256;
/// Most arguments of one task.
pub const MAX_ARGS: usize = 100_000;

/// Most bundles of one placement group.
pub const MAX_BUNDLES: usize = 1024;

fn check_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_NAME {
        return Err(format!(
            "{what} must be 1 to {MAX_NAME} bytes long, got {}",
            s.len()
        ));
    }
    Ok(())
}

fn check_amount(what: &str, a: f64) -> Result<(), String> {
    if !(a.is_finite() && (0.0..=MAX_AMOUNT).contains(&a)) {
        return Err(format!(
            "{what} must be a number from 0 to {MAX_AMOUNT:e}, got {a}"
        ));
    }
    Ok(())
}

/// Amounts finite, non-negative and bounded; custom names bounded and distinct.
pub fn check_resources(r: &Resources) -> Result<(), String> {
    check_amount("CPU amount", r.cpu)?;
    check_amount("GPU amount", r.gpu)?;
    check_amount("memory amount", r.memory)?;
    if r.custom.len() > MAX_CUSTOM {
        return Err(format!(
            "at most {MAX_CUSTOM} custom resources, got {}",
            r.custom.len()
        ));
    }
    for (i, (name, amount)) in r.custom.iter().enumerate() {
        check_name("a custom resource name", name)?;
        check_amount(&format!("amount of {name}"), *amount)?;
        if r.custom[..i].iter().any(|(n, _)| n == name) {
            return Err(format!("custom resource {name} is given twice"));
        }
    }
    Ok(())
}

/// What a task may ask for: valid amounts, and GPUs either a fraction of one device or
/// a whole number of devices (what a node can hand out).
pub fn check_request(r: &Resources) -> Result<(), String> {
    check_resources(r)?;
    if r.gpu > MAX_GPUS_PER_NODE as f64 {
        return Err(format!(
            "at most {MAX_GPUS_PER_NODE} GPUs per task, got {}",
            r.gpu
        ));
    }
    if r.gpu > 1.0 && r.gpu.fract() != 0.0 {
        return Err(format!(
            "a task asks for {} GPUs: ask for a fraction of one GPU or a whole number of GPUs",
            r.gpu
        ));
    }
    Ok(())
}

/// A node's registration: a valid IP, bounded strings, a whole number of GPUs that
/// matches its list of device ids.
pub fn check_registration(reg: &NodeRegistration) -> Result<(), String> {
    reg.ip
        .parse::<std::net::IpAddr>()
        .map_err(|_| format!("node address {:?} is not an IP address", trunc(&reg.ip)))?;
    check_name("the hostname", &reg.hostname)?;
    check_resources(&reg.resources)?;
    let gpu = reg.resources.gpu;
    if gpu.fract() != 0.0 || gpu > MAX_GPUS_PER_NODE as f64 {
        return Err(format!(
            "a node offers a whole number of GPUs up to {MAX_GPUS_PER_NODE}, got {gpu}"
        ));
    }
    if reg.gpu_ids.len() != gpu as usize {
        return Err(format!(
            "the node offers {gpu} GPUs but names {} device ids",
            reg.gpu_ids.len()
        ));
    }
    for id in &reg.gpu_ids {
        check_name("a GPU id", id)?;
    }
    Ok(())
}

/// An executable's hash as sunray writes it: 32 lowercase hex digits (xxh3-128). Only
/// such a name is ever joined onto a directory.
pub fn is_binary_hash(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn check_binary(b: &BinaryInfo) -> Result<(), String> {
    if b.path.is_empty() || b.path.len() > MAX_PATH {
        return Err(format!(
            "executable path must be 1 to {MAX_PATH} bytes long"
        ));
    }
    if !is_binary_hash(&b.hash) {
        return Err(format!(
            "executable hash {:?} is not 32 hex digits",
            trunc(&b.hash)
        ));
    }
    check_name("the registry hash", &b.registry_hash)?;
    if let crate::ProgramKind::Python { sys_path, cwd } = &b.kind {
        if sys_path.len() > MAX_SYS_PATH {
            return Err(format!(
                "a Python driver's sys.path has at most {MAX_SYS_PATH} entries, got {}",
                sys_path.len()
            ));
        }
        if sys_path.iter().chain([cwd]).any(|p| p.len() > MAX_PATH) {
            return Err(format!(
                "a Python driver's paths must be at most {MAX_PATH} bytes long"
            ));
        }
    }
    Ok(())
}

fn check_task(client: ClientId, t: &TaskSpec) -> Result<(), String> {
    if object_owner(t.id) != client {
        return Err(format!("task id {:#x} is not one of this driver's", t.id));
    }
    check_name("a function name", &t.function)?;
    if t.args.len() > MAX_ARGS {
        return Err(format!(
            "a task has at most {MAX_ARGS} arguments, got {}",
            t.args.len()
        ));
    }
    if t.args.iter().any(|a| matches!(a, crate::Arg::At(..))) {
        return Err(
            "a task's arguments name objects by id (Arg::Ref); locations are the head's to give"
                .into(),
        );
    }
    if let TaskKind::CreateActor(o) = &t.kind {
        check_name("an actor class", &o.class)?;
        if let Some(n) = &o.name {
            check_name("an actor name", n)?;
        }
    }
    Ok(())
}

/// Checks a driver's message; `Err` is a protocol violation (the head drops the
/// connection). A task's resource request is checked apart ([`check_request`]): a
/// bad one fails that task with a clear error instead.
pub fn check_driver_message(client: ClientId, m: &DriverToHead) -> Result<(), String> {
    let own = |id: u64, what: &str| {
        if object_owner(id) == client {
            Ok(())
        } else {
            Err(format!("{what} {id:#x} is not one of this driver's"))
        }
    };
    match m {
        DriverToHead::Submit(specs) => specs.iter().try_for_each(|t| check_task(client, t)),
        DriverToHead::Put { id, .. } => own(*id, "object"),
        DriverToHead::PutAt { id, at } => {
            own(*id, "object")?;
            check_name("an object server's address", &at.addr)
        }
        DriverToHead::Release(ids) => ids.iter().try_for_each(|id| own(*id, "object")),
        DriverToHead::TaskReply { task, .. } => own(*task, "task"),
        DriverToHead::UploadBinary { hash, data, .. } => {
            if !is_binary_hash(hash) {
                return Err("uploaded executable's hash is not 32 hex digits".into());
            }
            if data.len() > BINARY_CHUNK_BYTES {
                return Err(format!(
                    "an upload piece is at most {BINARY_CHUNK_BYTES} bytes, got {}",
                    data.len()
                ));
            }
            Ok(())
        }
        DriverToHead::CreateGroup {
            id, name, bundles, ..
        } => {
            own(*id, "placement group")?;
            if let Some(n) = name {
                check_name("a placement group's name", n)?;
            }
            if bundles.len() > MAX_BUNDLES {
                return Err(format!(
                    "a placement group has at most {MAX_BUNDLES} bundles, got {}",
                    bundles.len()
                ));
            }
            Ok(())
        }
        DriverToHead::Query(_)
        | DriverToHead::KillActor { .. }
        | DriverToHead::Subscribe(_)
        | DriverToHead::RemoveGroup { .. } => Ok(()),
    }
}

/// The start of a string a peer sent, for an error message.
fn trunc(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{object_id, Arg};

    fn reg(gpu: f64, ids: usize) -> NodeRegistration {
        NodeRegistration {
            ip: "127.0.0.2".into(),
            hostname: "n1".into(),
            pid: 1,
            resources: Resources {
                cpu: 4.0,
                gpu,
                ..Default::default()
            },
            gpu_ids: (0..ids).map(|i| i.to_string()).collect(),
        }
    }

    #[test]
    fn registrations_with_absurd_or_inconsistent_values_are_refused() {
        assert!(check_registration(&reg(2.0, 2)).is_ok());
        let e = check_registration(&reg(1e12, 0)).unwrap_err();
        assert!(e.contains("GPU"), "{e}");
        assert!(check_registration(&reg(2.0, 3))
            .unwrap_err()
            .contains("device ids"));
        assert!(check_registration(&reg(1.5, 1)).is_err());
        for bad in [f64::NAN, f64::INFINITY, -1.0, 1e300] {
            let mut r = reg(0.0, 0);
            r.resources.cpu = bad;
            assert!(check_registration(&r).is_err(), "cpu {bad}");
        }
        let mut r = reg(0.0, 0);
        r.ip = "nonsense".into();
        assert!(check_registration(&r).is_err());
        r = reg(0.0, 0);
        r.hostname = "h".repeat(10_000);
        assert!(check_registration(&r).is_err());
        r = reg(0.0, 0);
        r.resources.custom = vec![("a".into(), 1.0), ("a".into(), 2.0)];
        assert!(check_registration(&r).is_err());
    }

    #[test]
    fn only_hex_hashes_name_executables() {
        assert!(is_binary_hash("0123456789abcdef0123456789abcdef"));
        for bad in [
            "/etc/passwd",
            "../../../../../../../etc/passwd",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdeg",
            "0123456789ABCDEF0123456789ABCDEF",
            "",
        ] {
            assert!(!is_binary_hash(bad), "{bad}");
        }
    }

    #[test]
    fn a_driver_may_only_name_its_own_objects() {
        let mine = object_id(3, 1);
        let theirs = object_id(4, 1);
        assert!(check_driver_message(3, &DriverToHead::Release(vec![mine])).is_ok());
        assert!(check_driver_message(3, &DriverToHead::Release(vec![theirs])).is_err());
        let task = |id| TaskSpec {
            id,
            function: "m::f".into(),
            args: vec![Arg::Ref(theirs)],
            resources: Resources::default(),
            max_retries: 0,
            kind: TaskKind::Plain,
            bundle: None,
        };
        // Another driver's object as an argument is allowed (the head resolves it)...
        assert!(check_driver_message(3, &DriverToHead::Submit(vec![task(mine)])).is_ok());
        // ...but a task may not take another driver's id.
        assert!(check_driver_message(3, &DriverToHead::Submit(vec![task(theirs)])).is_err());
    }

    #[test]
    fn requests_for_gpus_are_fractions_or_whole_devices() {
        let req = |gpu| Resources {
            gpu,
            ..Default::default()
        };
        assert!(check_request(&req(0.25)).is_ok());
        assert!(check_request(&req(2.0)).is_ok());
        assert!(check_request(&req(1.5)).is_err());
        assert!(check_request(&req(1e12)).is_err());
        assert!(check_request(&req(-0.5)).is_err());
    }

    #[test]
    fn a_python_drivers_paths_are_bounded() {
        let python = |n: usize, len: usize| BinaryInfo {
            path: "/usr/bin/python3".into(),
            hash: "0123456789abcdef0123456789abcdef".into(),
            size: 1,
            registry_hash: "python".into(),
            kind: crate::ProgramKind::Python {
                sys_path: vec!["p".repeat(len); n],
                cwd: "/home/u".into(),
            },
        };
        assert!(check_binary(&python(10, 100)).is_ok());
        assert!(check_binary(&python(MAX_SYS_PATH + 1, 1)).is_err());
        assert!(check_binary(&python(1, MAX_PATH + 1)).is_err());
    }
}
