//! The head's second read from an unauthenticated peer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sunray_proto::{auth, decode, ClientProof};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = decode::<ClientProof>(data) {
        let t = auth::Transcript::new(data, &[0; 32]);
        assert!(!auth::verify_client("token", &t, &p.proof) || p.proof == auth::client_proof("token", &t));
    }
});
