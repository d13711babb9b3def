//! Session directories: one per `sunray start` (or embedded cluster), holding the token
//! (mode 0600), the address, the pid, logs and the workers' socket.
//!
//! They live under `/tmp/sunray-<uid>/` (or `$SUNRAY_TMPDIR`), short enough for Unix
//! socket paths. A driver or node on the same host finds the token of the head it
//! connects to here, so no flag is needed; across hosts, `$SUNRAY_SESSION_DIR` (a shared
//! directory) or `--token`/`$SUNRAY_TOKEN` pass it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{env, Error};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionInfo {
    /// "head", "node" or "local".
    pub kind: String,
    pub pid: u32,
    /// Where drivers and nodes connect (heads only), as ip:port.
    pub address: Option<String>,
    pub node_ip: String,
    pub started_unix_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub dir: PathBuf,
}

/// The per-user directory holding every session of this host.
pub fn base_dir() -> PathBuf {
    if let Ok(d) = std::env::var(env::TMPDIR) {
        return PathBuf::from(d);
    }
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/sunray-{uid}"))
}

fn ensure_private_dir(dir: &Path) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(|e| {
        Error::io(
            format!("cannot create session directory {}", dir.display()),
            e,
        )
    })?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("cannot protect {}", dir.display()), e))
}

/// A new random token (32 bytes, hex).
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS random source works");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Session {
    /// Creates `<base>/<kind>-<pid>`, first removing the directories of sessions whose
    /// process is gone (a killed driver's embedded cluster, a crashed head).
    pub fn create(kind: &str) -> Result<Session, Error> {
        let base = base_dir();
        ensure_private_dir(&base)?;
        remove_stale(&base);
        let dir = base.join(format!("{kind}-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).ok();
        }
        ensure_private_dir(&dir)?;
        Ok(Session { dir })
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

/// Removes `<kind>-<pid>` session directories under `base` whose process is dead.
pub fn remove_stale(base: &Path) {
    let Ok(rd) = fs::read_dir(base) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((kind, pid)) = name.rsplit_once('-') else {
            continue;
        };
        let is_session = !kind.is_empty() && kind.chars().all(|c| c.is_ascii_lowercase());
        match pid.parse::<u32>() {
            Ok(pid) if is_session && pid != std::process::id() && !pid_alive(pid) => {
                fs::remove_dir_all(e.path()).ok();
            }
            _ => {}
        }
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
            p == port && same_host && pid_alive(info.pid)
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
        .filter(|(_, i)| i.kind == "head" && pid_alive(i.pid))
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

    #[test]
    fn sessions_of_dead_processes_are_removed_and_others_kept() {
        let base = std::env::temp_dir().join(format!("sunray-stale-{}", std::process::id()));
        fs::create_dir_all(&base).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let me = std::process::id();
        for name in [
            format!("local-{dead}"),
            format!("head-{me}"),
            format!("j{dead}"),
            "notes".into(),
        ] {
            fs::create_dir_all(base.join(name)).unwrap();
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
                format!("head-{me}"),
                format!("j{dead}"),
                "notes".to_string()
            ]
        );
        fs::remove_dir_all(&base).ok();
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
