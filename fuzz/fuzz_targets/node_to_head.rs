//! What the head reads from an authenticated node.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sunray_proto::{decode, NodeToHead};

fuzz_target!(|data: &[u8]| {
    let _ = decode::<NodeToHead>(data);
});
