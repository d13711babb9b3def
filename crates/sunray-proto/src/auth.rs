//! The handshake's proofs: each side shows it knows the cluster token with an
//! HMAC-SHA256 over the client's [`Hello`](crate::Hello) frame (which holds the client's
//! nonce) and the head's nonce. The token itself never crosses the wire; a recorded
//! handshake cannot be replayed, because the other side's nonce is new each time; and
//! the two proofs carry different labels, so neither can stand in for the other.
//!
//! Workers never hold the cluster token: each job's workers hold its
//! [`job_credential`], an HMAC of the token that every head and node can derive again
//! and that only lets its holder do what a worker of that job does (submit tasks for the
//! job, read and store objects, call actors). The handshake is the same, keyed by the
//! credential instead of the token; the hello says which job's credential it uses.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::{ClientId, Nonce};

type HmacSha256 = Hmac<Sha256>;

const HEAD_LABEL: &[u8] = b"sunray-v4 head proof";
const CLIENT_LABEL: &[u8] = b"sunray-v4 client proof";
const JOB_LABEL: &[u8] = b"sunray-v9 job credential";
/// Starts every job credential, so that a client can tell one from a cluster token.
const JOB_PREFIX: &str = "sunray-job-";

/// The secret a job's workers hold instead of the cluster token:
/// `sunray-job-<job>-<HMAC-SHA256(token, label ‖ job) in hex>`. Knowing it does not
/// reveal the token, nor any other job's credential.
pub fn job_credential(token: &str, job: ClientId) -> String {
    let mut m = HmacSha256::new_from_slice(token.as_bytes()).expect("HMAC takes any key size");
    m.update(JOB_LABEL);
    m.update(&job.to_be_bytes());
    let tag = m.finalize().into_bytes();
    let mut s = format!("{JOB_PREFIX}{job}-");
    for b in tag {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The job whose credential `secret` is, or None for a cluster token.
pub fn credential_job(secret: &str) -> Option<ClientId> {
    let (job, tag) = secret.strip_prefix(JOB_PREFIX)?.split_once('-')?;
    let hex = tag.len() == 64 && tag.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| job.parse().ok()).flatten()
}

/// The key a hello asks the head to check its proof with: the cluster token, or the
/// credential of the job it names.
pub fn key_for(token: &str, job_key: Option<ClientId>) -> std::borrow::Cow<'_, str> {
    match job_key {
        None => token.into(),
        Some(job) => job_credential(token, job).into(),
    }
}

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

    #[test]
    fn a_job_credential_names_its_job_and_differs_per_job_and_token() {
        let c = job_credential("secret-token-of-16", 7);
        assert_eq!(credential_job(&c), Some(7));
        assert_eq!(key_for("secret-token-of-16", Some(7)), c);
        assert_ne!(c, job_credential("secret-token-of-16", 8));
        assert_ne!(c, job_credential("other-token-of-16", 7));
        assert!(!c.contains("secret-token-of-16"));
        // A cluster token is not a credential, even one that starts like one.
        assert_eq!(credential_job("secret-token-of-16"), None);
        assert_eq!(credential_job("sunray-job-7-abc"), None);
        assert_eq!(key_for("secret-token-of-16", None), "secret-token-of-16");
    }
}
