//! The handshake's proofs: each side shows it knows the cluster token with an
//! HMAC-SHA256 over the client's [`Hello`](crate::Hello) frame (which holds the client's
//! nonce) and the head's nonce. The token itself never crosses the wire; a recorded
//! handshake cannot be replayed, because the other side's nonce is new each time; and
//! the two proofs carry different labels, so neither can stand in for the other.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::Nonce;

type HmacSha256 = Hmac<Sha256>;

const HEAD_LABEL: &[u8] = b"sunray-v4 head proof";
const CLIENT_LABEL: &[u8] = b"sunray-v4 client proof";

/// What both proofs cover: the client's hello exactly as sent, and the head's nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transcript([u8; 32]);

impl Transcript {
    pub fn new(hello_frame: &[u8], head_nonce: &Nonce) -> Transcript {
        let mut h = Sha256::new();
        h.update((hello_frame.len() as u64).to_be_bytes());
        h.update(hello_frame);
        h.update(head_nonce);
        Transcript(h.finalize().into())
    }
}

fn mac(token: &str, label: &[u8], t: &Transcript) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(token.as_bytes()).expect("HMAC takes any key size");
    m.update(label);
    m.update(&t.0);
    m
}

/// The head's proof, sent with its challenge.
pub fn head_proof(token: &str, t: &Transcript) -> [u8; 32] {
    mac(token, HEAD_LABEL, t).finalize().into_bytes().into()
}

/// The client's proof, its answer to the challenge.
pub fn client_proof(token: &str, t: &Transcript) -> [u8; 32] {
    mac(token, CLIENT_LABEL, t).finalize().into_bytes().into()
}

/// Checks a head's proof in constant time.
pub fn verify_head(token: &str, t: &Transcript, proof: &[u8; 32]) -> bool {
    mac(token, HEAD_LABEL, t).verify_slice(proof).is_ok()
}

/// Checks a client's proof in constant time.
pub fn verify_client(token: &str, t: &Transcript, proof: &[u8; 32]) -> bool {
    mac(token, CLIENT_LABEL, t).verify_slice(proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_check_with_the_same_token_only() {
        let t = Transcript::new(b"hello", &[7; 32]);
        let p = client_proof("secret", &t);
        assert!(verify_client("secret", &t, &p));
        assert!(!verify_client("secret2", &t, &p));
        assert!(verify_head("secret", &t, &head_proof("secret", &t)));
        assert!(!verify_head("other", &t, &head_proof("secret", &t)));
    }

    #[test]
    fn a_proof_is_bound_to_both_nonces_and_to_its_side() {
        let t = Transcript::new(b"hello", &[7; 32]);
        let p = client_proof("secret", &t);
        // A replay against a new head nonce, or a changed hello, fails.
        assert!(!verify_client(
            "secret",
            &Transcript::new(b"hello", &[8; 32]),
            &p
        ));
        assert!(!verify_client(
            "secret",
            &Transcript::new(b"hellp", &[7; 32]),
            &p
        ));
        // The head's proof is not a client's proof.
        assert!(!verify_client("secret", &t, &head_proof("secret", &t)));
    }
}
