//! Cluster certificates: the cluster CA, node certificates it signs, and the files they live in.
//!
//! Every node holds the CA certificate (its only trust anchor), its own certificate whose one
//! DNS subject-alternative name is the node name, and the matching private key. Keys are
//! Ed25519: their signatures have a fixed length, which keeps handshake packet sizes fixed
//! (the simulator depends on that).
//!
//! A certificate directory holds `ca.pem`, `ca.key` (only where certificates are issued),
//! and one `NAME.pem` / `NAME.key` pair per node. Private keys are written with mode 0600.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::clock::Clock;

/// Errors about certificates and keys: generating, reading, writing and checking them.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A node name that cannot be a DNS name (and so cannot be a certificate's SAN).
    #[error(
        "invalid node name {name:?}: use letters, digits and '-' (a DNS name, at most 63 characters a label)"
    )]
    InvalidName { name: String },
    /// A file that should exist does not.
    #[error("{path} not found: {hint}")]
    Missing { path: PathBuf, hint: String },
    /// A file that exists could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// A file holds no usable PEM certificate or key.
    #[error("{path}: {reason}")]
    BadPem { path: PathBuf, reason: String },
    /// The node certificate does not chain to the cluster CA, or is otherwise unusable.
    #[error("{what} is not trusted by the cluster CA: {reason}")]
    Untrusted { what: String, reason: String },
    /// Refusing to overwrite existing files.
    #[error("{path} already exists; remove it first or use another directory")]
    Exists { path: PathBuf },
    /// rcgen could not build a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Checks that `name` can be a node name: a valid DNS name, so it can be the certificate SAN
/// and the TLS server name.
pub fn validate_node_name(name: &str) -> Result<(), IdentityError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && ServerName::try_from(name.to_string()).is_ok()
        && name.parse::<std::net::IpAddr>().is_err();
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidName {
            name: name.to_string(),
        })
    }
}

/// The cluster certificate authority: the one trust anchor of a cluster.
pub struct ClusterCa {
    cert_pem: String,
    key: KeyPair,
}

impl ClusterCa {
    /// Generates a new CA with a fresh Ed25519 key.
    pub fn generate(label: &str) -> Result<Self, IdentityError> {
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        Self::with_key(label, key)
    }

    /// Builds the CA from a given key (the simulator passes keys derived from its seed).
    pub fn with_key(label: &str, key: KeyPair) -> Result<Self, IdentityError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("Shoal cluster CA ({label})"));
        dn.push(DnType::OrganizationName, "Shoal");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// Loads a CA (certificate and key) from PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, IdentityError> {
        let key = KeyPair::from_pem(key_pem)?;
        // Check the pair belongs together by re-parsing the certificate as an issuer.
        Issuer::from_ca_cert_pem(cert_pem, &key)?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            key,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Issues a certificate for `name` with a fresh Ed25519 key.
    pub fn issue(&self, name: &str) -> Result<NodeCertificate, IdentityError> {
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        self.issue_with_key(name, key)
    }

    /// Issues a certificate for `name` with the given key.
    pub fn issue_with_key(
        &self,
        name: &str,
        key: KeyPair,
    ) -> Result<NodeCertificate, IdentityError> {
        validate_node_name(name)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::DnsName(name.try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(NodeCertificate {
            name: name.to_string(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A node certificate and its private key, PEM, as issued by [`ClusterCa::issue`].
#[derive(Clone)]
pub struct NodeCertificate {
    pub name: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a node needs for mutual TLS: the cluster CA, its certificate and its key.
pub struct NodeIdentity {
    name: String,
    ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl Clone for NodeIdentity {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// Builds an identity from PEM text and checks it: the certificate must chain to the CA
    /// and carry exactly the node name as its DNS SAN.
    /// `clock` gives the time at which validity is checked.
    pub fn from_pem(
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
        clock: &dyn Clock,
    ) -> Result<Self, IdentityError> {
        let ca = parse_cert(ca_pem, Path::new("<ca>"))?;
        let cert = parse_cert(cert_pem, Path::new("<node certificate>"))?;
        let key = parse_key(key_pem, Path::new("<node key>"))?;
        Self::from_der(ca, cert, key, clock)
    }

    fn from_der(
        ca: CertificateDer<'static>,
        cert: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
        clock: &dyn Clock,
    ) -> Result<Self, IdentityError> {
        let name = crate::tls::cert_node_name(&cert).ok_or_else(|| IdentityError::Untrusted {
            what: "node certificate".into(),
            reason: "it carries no DNS name (subject alternative name)".into(),
        })?;
        crate::tls::verify_chain(&ca, &cert, UnixTime::since_unix_epoch(clock.unix_time()))
            .map_err(|reason| IdentityError::Untrusted {
                what: format!("node certificate for {name}"),
                reason,
            })?;
        Ok(Self {
            name,
            ca,
            cert,
            key,
        })
    }

    /// The node name this identity proves (the certificate's DNS SAN).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn ca(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    pub(crate) fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// A stable secret derived from the node's private key. Used as the QUIC stateless-reset
    /// key, so that a node restarted on the same address can reset its peers' stale
    /// connections at once instead of leaving them to time out.
    pub(crate) fn derived_secret(&self, purpose: &str) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(purpose.as_bytes());
        ctx.update(self.key.secret_der());
        let digest = ctx.finish();
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }
}

fn parse_cert(pem: &str, path: &Path) -> Result<CertificateDer<'static>, IdentityError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| IdentityError::BadPem {
        path: path.to_path_buf(),
        reason: format!("no PEM certificate in it ({e})"),
    })
}

fn parse_key(pem: &str, path: &Path) -> Result<PrivateKeyDer<'static>, IdentityError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| IdentityError::BadPem {
        path: path.to_path_buf(),
        reason: format!("no PEM private key in it ({e})"),
    })
}

/// A directory of cluster certificates: `ca.pem`, `ca.key`, `NAME.pem`, `NAME.key`.
#[derive(Debug, Clone)]
pub struct CertDir {
    dir: PathBuf,
}

impl CertDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn ca_key_path(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    pub fn node_cert_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    pub fn node_key_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    /// Creates a new cluster CA in the directory (creating the directory if needed).
    /// Refuses to overwrite an existing CA.
    pub fn init_ca(&self, label: &str) -> Result<ClusterCa, IdentityError> {
        for path in [self.ca_cert_path(), self.ca_key_path()] {
            if path.exists() {
                return Err(IdentityError::Exists { path });
            }
        }
        create_dir(&self.dir)?;
        let ca = ClusterCa::generate(label)?;
        write_file(&self.ca_cert_path(), ca.cert_pem(), false)?;
        write_file(&self.ca_key_path(), &ca.key_pem(), true)?;
        Ok(ca)
    }

    /// Loads the CA with its private key, to issue node certificates.
    pub fn load_ca(&self) -> Result<ClusterCa, IdentityError> {
        let hint = format!(
            "create a cluster CA first with `shoal certs init --dir {}`",
            self.dir.display()
        );
        let cert = read_file(&self.ca_cert_path(), &hint)?;
        let key = read_file(&self.ca_key_path(), &hint)?;
        ClusterCa::from_pem(&cert, &key).map_err(|e| IdentityError::BadPem {
            path: self.ca_key_path(),
            reason: format!("CA certificate and key do not load together: {e}"),
        })
    }

    /// Issues a certificate for `name` and writes `NAME.pem` and `NAME.key`.
    pub fn issue(&self, name: &str) -> Result<NodeCertificate, IdentityError> {
        validate_node_name(name)?;
        for path in [self.node_cert_path(name), self.node_key_path(name)] {
            if path.exists() {
                return Err(IdentityError::Exists { path });
            }
        }
        let ca = self.load_ca()?;
        let issued = ca.issue(name)?;
        write_file(&self.node_cert_path(name), &issued.cert_pem, false)?;
        write_file(&self.node_key_path(name), &issued.key_pem, true)?;
        Ok(issued)
    }

    /// Loads the identity of node `name`: `ca.pem`, `NAME.pem` and `NAME.key`, checked.
    pub fn load_identity(
        &self,
        name: &str,
        clock: &dyn Clock,
    ) -> Result<NodeIdentity, IdentityError> {
        validate_node_name(name)?;
        let ca_path = self.ca_cert_path();
        let ca = read_file(
            &ca_path,
            &format!(
                "copy the cluster's ca.pem there, or create a CA with `shoal certs init --dir {}`",
                self.dir.display()
            ),
        )?;
        let issue_hint = format!(
            "issue one with `shoal certs issue --dir {} --name {name}`",
            self.dir.display()
        );
        let cert_path = self.node_cert_path(name);
        let key_path = self.node_key_path(name);
        let cert = read_file(&cert_path, &issue_hint)?;
        let key = read_file(&key_path, &issue_hint)?;
        let ca = parse_cert(&ca, &ca_path)?;
        let cert = parse_cert(&cert, &cert_path)?;
        let key = parse_key(&key, &key_path)?;
        let identity = NodeIdentity::from_der(ca, cert, key, clock).map_err(|e| match e {
            IdentityError::Untrusted { reason, .. } => IdentityError::Untrusted {
                what: cert_path.display().to_string(),
                reason: format!("{reason} (was it issued by {}?)", ca_path.display()),
            },
            other => other,
        })?;
        if identity.name() != name {
            return Err(IdentityError::Untrusted {
                what: cert_path.display().to_string(),
                reason: format!("it is issued to {:?}, not to {name:?}", identity.name()),
            });
        }
        Ok(identity)
    }
}

fn create_dir(dir: &Path) -> Result<(), IdentityError> {
    fs::create_dir_all(dir).map_err(|cause| IdentityError::Io {
        path: dir.to_path_buf(),
        cause,
    })
}

fn read_file(path: &Path, hint: &str) -> Result<String, IdentityError> {
    fs::read_to_string(path).map_err(|cause| {
        if cause.kind() == std::io::ErrorKind::NotFound {
            IdentityError::Missing {
                path: path.to_path_buf(),
                hint: hint.to_string(),
            }
        } else {
            IdentityError::Io {
                path: path.to_path_buf(),
                cause,
            }
        }
    })
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), IdentityError> {
    let io_err = |cause| IdentityError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(io_err)?;
    file.write_all(contents.as_bytes()).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    #[test]
    fn node_names_must_be_dns_names() {
        for ok in ["n1", "node-1", "a.b.c", "shoal-0.shoal.default.svc"] {
            assert!(validate_node_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a b",
            "a_b",
            "1.2.3.4",
            "a..b",
            &"x".repeat(64),
        ] {
            assert!(validate_node_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn issued_certificate_chains_to_its_ca_and_not_to_another() {
        let ca = ClusterCa::generate("test").unwrap();
        let other = ClusterCa::generate("other").unwrap();
        let node = ca.issue("n1").unwrap();
        let id = NodeIdentity::from_pem(ca.cert_pem(), &node.cert_pem, &node.key_pem, &SystemClock)
            .unwrap();
        assert_eq!(id.name(), "n1");
        let err = NodeIdentity::from_pem(
            other.cert_pem(),
            &node.cert_pem,
            &node.key_pem,
            &SystemClock,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not trusted"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn cert_dir_writes_private_keys_0600_and_loads_back() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = CertDir::new(tmp.path().join("certs"));
        dir.init_ca("test").unwrap();
        dir.issue("n1").unwrap();
        for key in [dir.ca_key_path(), dir.node_key_path("n1")] {
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        assert_eq!(dir.load_identity("n1", &SystemClock).unwrap().name(), "n1");
        // Missing files name the file and the command that makes it.
        let err = dir
            .load_identity("n2", &SystemClock)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("n2.pem") && err.contains("shoal certs issue"),
            "{err}"
        );
        // No overwrite.
        assert!(matches!(
            dir.init_ca("x"),
            Err(IdentityError::Exists { .. })
        ));
        assert!(matches!(dir.issue("n1"), Err(IdentityError::Exists { .. })));
    }
}
