//! What a host has: CPUs, GPUs, addresses; and the identity of an executable.

use std::io::Read;
use std::net::IpAddr;
use std::path::Path;

/// CPUs this process may use (affinity and cgroup limits included).
pub fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// GPU ids of this host: `CUDA_VISIBLE_DEVICES` when set (an empty value means none),
/// else the devices `nvidia-smi` lists, else none.
pub fn gpu_ids() -> Vec<String> {
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return parse_visible_devices(&v);
    }
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=index", "--format=csv,noheader"])
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

pub fn parse_visible_devices(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s != "NoDevFiles")
        .collect()
}

/// GPU ids for a node that declares `count` GPUs: the detected ones first; beyond those,
/// plain indices (logical GPUs, as Ray allows with --num-gpus).
pub fn gpu_ids_for(count: usize, detected: &[String]) -> Vec<String> {
    (0..count)
        .map(|i| detected.get(i).cloned().unwrap_or_else(|| i.to_string()))
        .collect()
}

/// The local address this host uses to reach `target` (no packet is sent).
pub fn local_ip_towards(target: &str) -> Option<IpAddr> {
    use std::net::{ToSocketAddrs, UdpSocket};
    let addr = target.to_socket_addrs().ok()?.next()?;
    let sock = UdpSocket::bind(if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .ok()?;
    sock.connect(addr).ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// The IPv4 addresses of this host's interfaces, with the interface names.
pub fn ipv4_addresses() -> Vec<(String, std::net::Ipv4Addr)> {
    let mut out = Vec::new();
    unsafe {
        let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut ifap) == 0 {
            let mut p = ifap;
            while !p.is_null() {
                let ifa = &*p;
                if !ifa.ifa_addr.is_null() && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                    let name = std::ffi::CStr::from_ptr(ifa.ifa_name)
                        .to_string_lossy()
                        .into_owned();
                    out.push((name, ip));
                }
                p = ifa.ifa_next;
            }
            libc::freeifaddrs(ifap);
        }
    }
    out
}

/// First non-loopback IPv4 address of this host, or 127.0.0.1.
pub fn default_ip() -> IpAddr {
    ipv4_addresses()
        .into_iter()
        .map(|(_, ip)| ip)
        .find(|ip| !ip.is_loopback())
        .map_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), IpAddr::V4)
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// xxh3-128 of a file, as 32 hex digits, and its size.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((format!("{:032x}", h.digest128()), size))
}

pub fn hash_bytes(data: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_devices_parsing() {
        assert_eq!(parse_visible_devices("0,2"), vec!["0", "2"]);
        assert!(parse_visible_devices("").is_empty());
        assert_eq!(parse_visible_devices("GPU-abc, 3"), vec!["GPU-abc", "3"]);
    }

    #[test]
    fn declared_gpus_map_onto_detected_ids() {
        let det = vec!["4".to_string(), "7".to_string()];
        assert_eq!(gpu_ids_for(1, &det), vec!["4"]);
        assert_eq!(gpu_ids_for(3, &det), vec!["4", "7", "2"]);
        assert_eq!(gpu_ids_for(2, &[]), vec!["0", "1"]);
    }

    #[test]
    fn file_hash_matches_bytes_hash() {
        let p = std::env::temp_dir().join(format!("sunray-hash-{}", std::process::id()));
        std::fs::write(&p, b"hello").unwrap();
        let (h, n) = hash_file(&p).unwrap();
        std::fs::remove_file(&p).ok();
        assert_eq!(n, 5);
        assert_eq!(h, hash_bytes(b"hello"));
    }
}
