//! TLS for the front ends, from a PEM certificate chain and private key.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
pub use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
pub use tokio_rustls::server::TlsStream;
pub use tonic::transport::Identity;

/// A certificate chain and its private key, as each front end serves them.
#[derive(Clone)]
pub struct Certificate {
    /// For the Postgres and HTTP ports.
    pub acceptor: TlsAcceptor,
    /// For tonic (Flight SQL).
    pub identity: Identity,
}

/// Loads the certificate chain in `cert` with the key in `key` (both PEM); an error
/// names the file at fault.
pub fn load(cert: &Path, key: &Path) -> Result<Certificate, String> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| format!("TLS: cannot read {}: {e}", path.display()))
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS: {} holds no PEM certificate: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("TLS: {} holds no certificate", cert.display()));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("TLS: {} holds no PEM private key: {e}", key.display()))?;
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder
                .with_no_client_auth()
                .with_single_cert(chain, private)
        })
        .map_err(|e| format!("TLS: {} and {}: {e}", cert.display(), key.display()))?;
    Ok(Certificate {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        identity: Identity::from_pem(cert_pem, key_pem),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_not_pem_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let err = load(&junk, &junk).err().unwrap();
        assert!(err.contains("junk.pem"), "{err}");
        let err = load(&dir.path().join("missing.pem"), &junk).err().unwrap();
        assert!(err.contains("missing.pem"), "{err}");
    }
}
