//! Mutual TLS for QUIC: both sides present a certificate signed by the cluster CA.
//!
//! The server requires a client certificate chaining to the CA. The client checks that the
//! server chains to the CA and, when it dials a node by name, that the name matches the
//! certificate. Gossip dials a bare address (a seed, or a peer known only by its address), so
//! it uses [`ANY_PEER`] as server name: the chain is still verified, and the name the peer
//! proved is read from its certificate afterwards.
//!
//! One crypto provider (ring) is used explicitly, never the process default, so no
//! "no process-level CryptoProvider" panic can happen.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::clock::{RustlsTime, SharedClock};
use crate::identity::NodeIdentity;

/// The ALPN protocol id of Shoal's wire protocol, version 1.
pub const ALPN: &[u8] = b"shoal/1";

/// Server name used when dialing an address whose node name is not known yet.
pub const ANY_PEER: &str = "any-peer.shoal.invalid";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(identity: &NodeIdentity) -> Result<Arc<RootCertStore>, rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(identity.ca().clone())?;
    Ok(Arc::new(roots))
}

/// The node name a certificate proves: its first DNS subject alternative name.
pub fn cert_node_name(cert: &CertificateDer<'_>) -> Option<String> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    parsed.valid_dns_names().next().map(str::to_string)
}

/// Checks that `cert` chains to `ca` at time `now`, for both server and client use.
pub(crate) fn verify_chain(
    ca: &CertificateDer<'static>,
    cert: &CertificateDer<'_>,
    now: UnixTime,
) -> Result<(), String> {
    let anchor = webpki::anchor_from_trusted_cert(ca).map_err(|e| e.to_string())?;
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| e.to_string())?;
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            std::slice::from_ref(&anchor),
            &[],
            now,
            usage,
            None,
            None,
        )
        .map_err(|e| format!("{e:?}"))?;
    }
    Ok(())
}

/// Builds the QUIC server configuration: our certificate, client certificates required.
pub fn server_crypto(
    identity: &NodeIdentity,
    clock: SharedClock,
) -> Result<QuicServerConfig, rustls::Error> {
    let provider = provider();
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots(identity)?, provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut config =
        rustls::ServerConfig::builder_with_details(provider, Arc::new(RustlsTime(clock)))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(vec![identity.cert().clone()], identity.key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.max_early_data_size = 0;
    QuicServerConfig::try_from(config).map_err(|e| rustls::Error::General(e.to_string()))
}

/// Builds the QUIC client configuration: our certificate as client certificate, servers
/// verified against the cluster CA.
pub fn client_crypto(
    identity: &NodeIdentity,
    clock: SharedClock,
) -> Result<QuicClientConfig, rustls::Error> {
    let provider = provider();
    let inner = WebPkiServerVerifier::builder_with_provider(roots(identity)?, provider.clone())
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut config =
        rustls::ClientConfig::builder_with_details(provider, Arc::new(RustlsTime(clock)))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ClusterServerVerifier { inner }))
            .with_client_auth_cert(vec![identity.cert().clone()], identity.key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.enable_early_data = false;
    QuicClientConfig::try_from(config).map_err(|e| rustls::Error::General(e.to_string()))
}

/// Verifies servers against the cluster CA; with [`ANY_PEER`] as the server name it checks
/// the chain and accepts whatever node name the certificate proves.
#[derive(Debug)]
struct ClusterServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ClusterServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let any = matches!(server_name, ServerName::DnsName(n) if n.as_ref() == ANY_PEER);
        if !any {
            return self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            );
        }
        let name = cert_node_name(end_entity).ok_or(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName,
        ))?;
        let proved = ServerName::try_from(name).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        self.inner
            .verify_server_cert(end_entity, intermediates, &proved, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The node name the peer of an established connection proved with its certificate.
pub(crate) fn peer_name(conn: &quinn::Connection) -> Option<String> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().and_then(cert_node_name)
}

/// Whether the connection negotiated Shoal's ALPN.
pub(crate) fn negotiated_alpn(conn: &quinn::Connection) -> bool {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .is_some_and(|p| p == ALPN)
}
