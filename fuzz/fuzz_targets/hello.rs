//! The head's first read from an unauthenticated peer: the version prefix, then the
//! hello.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sunray_proto::{decode, limits, Hello, Role};

fuzz_target!(|data: &[u8]| {
    let _ = postcard::take_from_bytes::<u32>(data);
    if let Ok(h) = decode::<Hello>(data) {
        match &h.role {
            Role::Driver { binary, .. } => {
                let _ = limits::check_binary(binary);
            }
            Role::Node(reg) => {
                let _ = limits::check_registration(reg);
            }
            Role::FetchBinary { hash } => {
                let _ = limits::is_binary_hash(hash);
            }
            Role::Query => {}
        }
    }
});
