//! What a node reads while it fetches an executable from the head.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sunray_proto::{decode, BinaryChunk};

fuzz_target!(|data: &[u8]| {
    let _ = decode::<BinaryChunk>(data);
});
