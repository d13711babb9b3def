//! What a node agent reads from its head.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sunray_proto::{decode, limits, HeadToNode};

fuzz_target!(|data: &[u8]| {
    if let Ok(HeadToNode::Job { binary, .. }) = decode::<HeadToNode>(data) {
        let _ = limits::check_binary(&binary);
    }
});
