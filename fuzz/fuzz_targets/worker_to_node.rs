//! What a node agent reads from its workers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sunray_proto::{decode, WorkerToNode};

fuzz_target!(|data: &[u8]| {
    let _ = decode::<WorkerToNode>(data);
});
