//! Session directories: one per `sunray start` (or embedded cluster), holding the token
//! (mode 0600), the address, the pid, logs and the workers' socket.
//!
//! They live under `/tmp/sunray-<uid>/` (or `$SUNRAY_TMPDIR/sunray-<uid>/`), short
//! enough for Unix socket paths. sunray creates that directory (mode 0700) and refuses
//! one it did not create (another owner, or open to others); it never changes the mode of
//! a directory, and it removes only session directories that carry its marker and whose
//! process is provably gone. A driver or node on the same host finds the token of the head it
//! connects to here, so no flag is needed; across hosts, `$SUNRAY_SESSION_DIR` (a shared
//! directory) or `--token`/`$SUNRAY_TOKEN` pass it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{env, Error};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionInfo {
    /// "head", "node" or "local".
    pub kind: String,
    /// The session's process (its fields stand at the top level of `info.json`).
    #[serde(flatten)]
    pub process: ProcessId,
    /// Where drivers and nodes connect (heads only), as ip:port.
    pub address: Option<String>,
    pub node_ip: String,
    pub started_unix_ms: u64,
    /// Node agents: the head they joined, as they were given it (`sunray stop
    /// --address` stops the node agents of one cluster by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_address: Option<String>,
    /// The Slurm job the process was started in (`$SLURM_JOB_ID`): inside a job,
    /// `sunray stop` stops only that job's cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job_id: Option<String>,
}

impl SessionInfo {
    /// Info of a session of this process.
    pub fn of_this_process(kind: &str, address: Option<String>, node_ip: String) -> SessionInfo {
        SessionInfo {
            kind: kind.into(),
            process: ProcessId::current(),
            address,
            node_ip,
            started_unix_ms: now_unix_ms(),
            head_address: None,
            slurm_job_id: std::env::var("SLURM_JOB_ID").ok().filter(|j| !j.is_empty()),
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid
    }

    /// Is the process that wrote this info still running (the same process, not one
    /// that reuses its pid)?
    pub fn process_alive(&self) -> bool {
        self.process.seen_here() && self.process.is_running()
    }

    /// [`process_alive`](Self::process_alive), and provably so: the info records the
    /// start time and where the pid lives (written by this version of sunray, in this
    /// boot and pid namespace). Only such a process is signalled.
    pub fn provably_running(&self) -> bool {
        self.process.start_time.is_some() && self.process.host.is_some() && self.process_alive()
    }
}

/// A process as identified across pid reuse: pid, start time and executable.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessId {
    pub pid: u32,
    /// When it started (`/proc/<pid>/stat`, clock ticks since boot): a pid reused by
    /// another process has another start time.
    #[serde(default)]
    pub start_time: Option<u64>,
    /// Its executable, as `/proc/<pid>/exe` names it.
    #[serde(default)]
    pub exe: Option<String>,
    /// The boot and the pid namespace the pid belongs to: a `/tmp` shared with another
    /// container or host holds pids that mean nothing here.
    #[serde(default)]
    pub host: Option<String>,
}

/// This boot's id and this process's pid namespace.
fn this_host() -> Option<String> {
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{} {}", boot.trim(), ns.to_string_lossy()))
}

impl ProcessId {
    pub fn current() -> ProcessId {
        let pid = std::process::id();
        ProcessId {
            pid,
            start_time: process_start_time(pid),
            exe: process_exe(pid),
            host: this_host(),
        }
    }

    /// Whether its pid can be judged here: recorded in this boot and pid namespace (or
    /// by a sunray that did not record where).
    pub fn seen_here(&self) -> bool {
        self.host.is_none() || self.host == this_host()
    }

    /// Whether this very process runs: the pid is alive and, where recorded, has the
    /// same start time and executable (a rebuilt executable keeps its path).
    pub fn is_running(&self) -> bool {
        if !pid_alive(self.pid) {
            return false;
        }
        if let Some(t) = self.start_time {
            if process_start_time(self.pid) != Some(t) {
                return false;
            }
        }
        match (&self.exe, process_exe(self.pid)) {
            (Some(want), Some(now)) => *want == now,
            // Another user's process: /proc/<pid>/exe is unreadable; the start time
            // decided already.
            _ => true,
        }
    }
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks after boot.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parentheses) start with
    // field 3, the state; the start time is field 22.
    let (_, rest) = s.rsplit_once(')')?;
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

fn process_exe(pid: u32) -> Option<String> {
    let p = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let s = p.to_string_lossy();
    Some(s.strip_suffix(" (deleted)").unwrap_or(&s).to_string())
}

#[derive(Debug, Clone)]
pub struct Session {
    pub dir: PathBuf,
}

/// Written into every session directory when it is created: only directories that
/// carry it are ever removed as stale.
pub const MARKER: &str = ".sunray-session";

/// The per-user directory holding every session of this host: `sunray-<uid>` in
/// `$SUNRAY_TMPDIR`, else in `/tmp`.
pub fn base_dir() -> PathBuf {
    let uid = unsafe { libc::getuid() };
    let parent = std::env::var_os(env::TMPDIR)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    parent.join(format!("sunray-{uid}"))
}

/// [`base_dir`], created (or checked) as [`Session::create`] does: for other files of
/// sunray's that live beside the sessions.
pub fn ensure_base_dir() -> Result<PathBuf, Error> {
    let base = base_dir();
    ensure_base(&base)?;
    Ok(base)
}

/// Creates `base` (mode 0700) if it is missing; an existing one must be a directory of
/// this user that nobody else may enter. Nothing about an existing directory is changed.
fn ensure_base(base: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    // A missing `$SUNRAY_TMPDIR` (a job directory named on a host that has not made it
    // yet) is created, private like what sunray makes; an existing one is left as it is.
    if let Some(parent) = base.parent() {
        if !parent.exists() {
            let _ = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent);
        }
    }
    match fs::DirBuilder::new().mode(0o700).create(base) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                format!(" (does {} exist?)", base.parent().unwrap_or(base).display())
            } else {
                String::new()
            };
            return Err(Error::io(
                format!("cannot create session directory {}{hint}", base.display()),
                e,
            ));
        }
    }
    let meta = fs::symlink_metadata(base)
        .map_err(|e| Error::io(format!("cannot inspect {}", base.display()), e))?;
    let uid = unsafe { libc::getuid() };
    let problem = if !meta.file_type().is_dir() {
        Some("it is not a directory".to_string())
    } else if meta.uid() != uid {
        Some(format!(
            "it belongs to uid {}, not to you (uid {uid})",
            meta.uid()
        ))
    } else if meta.mode() & 0o077 != 0 {
        Some(format!(
            "others may enter it (mode {:o}; sunray creates it as 700)",
            meta.mode() & 0o777
        ))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(Error::Config(format!(
            "{} cannot hold sunray's sessions: {p}; remove it, or set {} to another directory",
            base.display(),
            env::TMPDIR
        ))),
    }
}

/// A new random token (32 bytes, hex).
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS random source works");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Session {
    /// Creates `<base>/<kind>-<pid>` with sunray's marker, first removing the
    /// directories of sessions whose process is gone (a killed driver's embedded
    /// cluster, a crashed head).
    pub fn create(kind: &str) -> Result<Session, Error> {
        use std::os::unix::fs::DirBuilderExt;
        let base = base_dir();
        ensure_base(&base)?;
        remove_stale(&base);
        let dir = base.join(format!("{kind}-{}", std::process::id()));
        // One left by an earlier process with this pid (pid reuse, a container
        // restarted with the same pids): removed when its marker proves it is not ours.
        if read_marker(&dir).is_some_and(|p| p.seen_here() && p != ProcessId::current()) {
            fs::remove_dir_all(&dir).ok();
        }
        let made = fs::DirBuilder::new().mode(0o700).create(&dir);
        if let Err(e) = made {
            return Err(Error::io(
                format!("cannot create session directory {}", dir.display()),
                e,
            ));
        }
        let marker = serde_json::to_vec(&ProcessId::current()).expect("serialisable");
        let session = Session { dir };
        if let Err(e) = fs::write(session.dir.join(MARKER), marker) {
            session.remove();
            return Err(Error::io(
                format!("cannot write {}", session.dir.join(MARKER).display()),
                e,
            ));
        }
        Ok(session)
    }

    pub fn write_info(&self, info: &SessionInfo) -> Result<(), Error> {
        let path = self.dir.join("info.json");
        let tmp = self.dir.join("info.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(info).expect("serialisable"))
            .and_then(|_| fs::rename(&tmp, &path))
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
    }

    pub fn write_token(&self, token: &str) -> Result<(), Error> {
        write_secret(&self.dir.join("token"), token)
    }

    /// Where the head accepts connections from its own host.
    pub fn head_socket(&self) -> PathBuf {
        self.dir.join("head.sock")
    }

    pub fn worker_socket(&self) -> PathBuf {
        self.dir.join("w.sock")
    }

    /// Where callers on this host call the node's actors directly (`Role::Calls`).
    pub fn calls_socket(&self) -> PathBuf {
        self.dir.join("c.sock")
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// Removes the directory (on clean shutdown).
    pub fn remove(&self) {
        fs::remove_dir_all(&self.dir).ok();
    }
}

/// Removes the session directories under `base` that carry sunray's marker and whose
/// process is gone (dead, or its pid taken by another process). Anything else is left
/// alone.
pub fn remove_stale(base: &Path) {
    let Ok(rd) = fs::read_dir(base) else { return };
    for e in rd.flatten() {
        if is_stale(&e.path()) {
            fs::remove_dir_all(e.path()).ok();
        }
    }
}

/// The process that created the session directory `dir`, from its marker.
fn read_marker(dir: &Path) -> Option<ProcessId> {
    let bytes = fs::read(dir.join(MARKER)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A directory (not a link) holding sunray's marker, whose process no longer runs.
pub fn is_stale(dir: &Path) -> bool {
    let is_dir = fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_dir());
    if !is_dir {
        return false;
    }
    match read_marker(dir) {
        // The pid of a process elsewhere (another container sharing /tmp) proves nothing.
        Some(owner) => owner.seen_here() && !owner.is_running() && owner != ProcessId::current(),
        None => false,
    }
}

/// Writes a file readable by the owner only.
pub fn write_secret(path: &Path, content: &str) -> Result<(), Error> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    f.write_all(content.as_bytes())
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

/// Is the process alive (and not a zombie)?
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // state is the field after the ")" closing the command name
            let state = s
                .rsplit_once(')')
                .and_then(|(_, r)| r.trim().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// Sessions of this user on this host, with their info, live or stale.
pub fn list_sessions() -> Vec<(PathBuf, SessionInfo)> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(base_dir()) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if let Ok(bytes) = fs::read(p.join("info.json")) {
            if let Ok(info) = serde_json::from_slice::<SessionInfo>(&bytes) {
                out.push((p, info));
            }
        }
    }
    out.sort_by_key(|(_, i)| i.started_unix_ms);
    out
}

fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (h, p) = address.rsplit_once(':')?;
    Some((h.trim_matches(|c| c == '[' || c == ']'), p.parse().ok()?))
}

fn is_local_host(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback() || ip.is_unspecified())
            .unwrap_or(false)
}

/// Finds the token for a head at `address`: `$SUNRAY_TOKEN`, then
/// `$SUNRAY_SESSION_DIR/token`, then a live head session of this user on this host
/// listening on that port.
pub fn find_token(address: &str) -> Option<String> {
    if let Ok(t) = std::env::var(env::TOKEN) {
        if !t.is_empty() {
            return Some(t);
        }
    }
    if let Ok(d) = std::env::var(env::SESSION_DIR) {
        if let Ok(t) = fs::read_to_string(Path::new(&d).join("token")) {
            return Some(t.trim().to_string());
        }
    }
    fs::read_to_string(local_head_session(address)?.join("token"))
        .ok()
        .map(|t| t.trim().to_string())
}

/// The session directory of a live head of this user on this host listening on
/// `address`: the newest whose address is exactly `address`, else, when `address`
/// names this host (localhost, a loopback or unspecified address), the newest on its
/// port.
pub fn local_head_session(address: &str) -> Option<PathBuf> {
    head_session(address, true).or_else(|| head_session(address, false))
}

fn head_session(address: &str, exact: bool) -> Option<PathBuf> {
    let (host, port) = split_host_port(address)?;
    list_sessions()
        .into_iter()
        .rev()
        .find(|(_, info)| {
            let Some((h, p)) = info.address.as_deref().and_then(split_host_port) else {
                return false;
            };
            let same_host = h == host || (!exact && is_local_host(host));
            p == port && same_host && info.process_alive()
        })
        .map(|(dir, _)| dir)
}

/// The Unix socket of the head at `address` when it runs on this host (a driver there
/// connects through it), unless `$SUNRAY_LOCAL_SOCKET` is `0`.
pub fn local_head_socket(address: &str) -> Option<PathBuf> {
    if std::env::var(env::LOCAL_SOCKET).is_ok_and(|v| v == "0") {
        return None;
    }
    // Only the head that advertises exactly this address: two heads may share a port on
    // two loopback addresses, and a socket found loosely would reach the wrong one
    // (where a token found loosely is merely refused).
    let path = Session {
        dir: head_session(address, true)?,
    }
    .head_socket();
    path.exists().then_some(path)
}

/// The address of the only live head of this user on this host, if exactly one.
pub fn local_head_addresses() -> Vec<String> {
    list_sessions()
        .into_iter()
        .filter(|(_, i)| i.kind == "head" && i.process_alive())
        .filter_map(|(_, i)| i.address)
        .collect()
}

/// The address to connect to when none was given: `$SUNRAY_ADDRESS`, then
/// `$SUNRAY_SESSION_DIR/address`.
pub fn address_from_env() -> Option<String> {
    if let Ok(a) = std::env::var(env::ADDRESS) {
        if !a.is_empty() {
            return Some(a);
        }
    }
    let d = std::env::var(env::SESSION_DIR).ok()?;
    fs::read_to_string(Path::new(&d).join("address"))
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_parsing() {
        assert_eq!(split_host_port("127.0.0.1:6379"), Some(("127.0.0.1", 6379)));
        assert_eq!(split_host_port("[::1]:80"), Some(("::1", 80)));
        assert_eq!(split_host_port("nohost"), None);
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sunray-{name}-{}", std::process::id()));
        fs::remove_dir_all(&d).ok();
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn mark(dir: &Path, owner: &ProcessId) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(MARKER), serde_json::to_vec(owner).unwrap()).unwrap();
    }

    #[test]
    fn only_marked_sessions_of_gone_processes_are_removed() {
        let base = scratch("stale");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let live_id = ProcessId {
            pid: live.id(),
            start_time: process_start_time(live.id()),
            exe: process_exe(live.id()),
            host: this_host(),
        };
        let gone = |pid| ProcessId {
            pid,
            start_time: None,
            exe: None,
            host: None,
        };
        mark(&base.join(format!("local-{dead}")), &gone(dead));
        // The live pid, but another start time: the pid was reused.
        let reused = ProcessId {
            start_time: live_id.start_time.map(|t| t + 1),
            ..live_id.clone()
        };
        mark(&base.join("head-reused"), &reused);
        mark(&base.join("node-live"), &live_id);
        // A dead pid, but recorded in another pid namespace: not provably gone.
        let elsewhere = ProcessId {
            host: Some("another boot pid:[1]".into()),
            ..gone(dead)
        };
        mark(&base.join("local-elsewhere"), &elsewhere);
        // Not sunray's: no marker, whatever the name says.
        for d in [
            format!("node-{dead}"),
            "backup-999999/important".into(),
            "photos-2023".into(),
        ] {
            fs::create_dir_all(base.join(d)).unwrap();
        }
        remove_stale(&base);
        let mut left: Vec<String> = fs::read_dir(&base)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "backup-999999".to_string(),
                "local-elsewhere".into(),
                format!("node-{dead}"),
                "node-live".into(),
                "photos-2023".into(),
            ]
        );
        assert!(base.join("backup-999999/important").is_dir());
        live.kill().ok();
        live.wait().ok();
        fs::remove_dir_all(&base).ok();
    }

    #[test]
    fn a_base_directory_open_to_others_is_refused_and_left_as_it_was() {
        use std::os::unix::fs::PermissionsExt;
        let parent = scratch("base");
        let open = parent.join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        let e = ensure_base(&open).unwrap_err().to_string();
        assert!(e.contains("others may enter it"), "{e}");
        let mode = fs::metadata(&open).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o1777);
        let link = parent.join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        assert!(ensure_base(&link)
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
        let fresh = parent.join("fresh");
        ensure_base(&fresh).unwrap();
        let mode = fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        ensure_base(&fresh).unwrap();
        fs::remove_dir_all(&parent).ok();
    }

    #[test]
    fn a_process_is_known_by_its_start_time_and_executable() {
        let me = ProcessId::current();
        assert!(me.start_time.is_some() && me.exe.is_some());
        assert!(me.is_running());
        let other_start = ProcessId {
            start_time: me.start_time.map(|t| t + 1),
            ..me.clone()
        };
        assert!(!other_start.is_running());
        let other_exe = ProcessId {
            exe: Some("/usr/bin/true".into()),
            ..me.clone()
        };
        assert!(!other_exe.is_running());
    }

    #[test]
    fn own_process_is_alive_and_pid_zero_is_not() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(u32::MAX - 1));
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
