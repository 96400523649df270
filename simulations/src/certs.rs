//! Certificates fixed by the seed: the same seed gives byte-identical keys and certificates,
//! so handshakes have the same sizes and the same control flow in every replay.

use rcgen::{KeyPair, PKCS_ED25519};
use rustls::pki_types::PrivatePkcs8KeyDer;
use shoal_transport::{ClusterCa, NodeIdentity, NodeRng};

use crate::clock::SimClock;

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410); the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

fn key_from(rng: &NodeRng) -> anyhow::Result<KeyPair> {
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    let mut seed = [0u8; 32];
    rng.fill(&mut seed);
    der.extend_from_slice(&seed);
    Ok(KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(der),
        &PKCS_ED25519,
    )?)
}

/// A cluster CA and node identities, all derived from one RNG.
pub struct SimCerts {
    ca: ClusterCa,
    rng: NodeRng,
}

impl SimCerts {
    pub fn new(rng: NodeRng) -> anyhow::Result<Self> {
        let ca = ClusterCa::with_key("sim", key_from(&rng)?)?;
        Ok(Self { ca, rng })
    }

    /// The identity of `name` (derived afresh each call; call once per node).
    pub fn identity(&self, name: &str, clock: &SimClock) -> anyhow::Result<NodeIdentity> {
        let cert = self.ca.issue_with_key(name, key_from(&self.rng)?)?;
        Ok(NodeIdentity::from_pem(
            self.ca.cert_pem(),
            &cert.cert_pem,
            &cert.key_pem,
            clock,
        )?)
    }
}
