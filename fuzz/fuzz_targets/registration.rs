//! A node's registration and its check (what made `NodeLedger::new` abort before).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sunray_proto::{decode, limits, NodeRegistration};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = decode::<NodeRegistration>(data) {
        if limits::check_registration(&r).is_ok() {
            // What the head then sizes from it: bounded.
            assert!(r.resources.gpu <= limits::MAX_GPUS_PER_NODE as f64);
            assert_eq!(r.gpu_ids.len(), r.resources.gpu as usize);
        }
    }
});
