//! TLS for the HTTP listener (HTTPS, WSS) and MQTT over TLS: one certificate chain and key
//! (PEM), replaced on SIGHUP for new handshakes while open connections carry on.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// The server's certificate, and the acceptor that presents it. Cloning shares them.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
    files: Arc<(PathBuf, PathBuf)>,
    provider: Arc<CryptoProvider>,
}

/// The certificate presented to new handshakes.
struct Current(RwLock<Arc<CertifiedKey>>);

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Current")
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().expect("certificate lock").clone())
    }
}

impl Tls {
    /// Reads the certificate chain at `cert` (leaf first) and the private key at `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, String> {
        // One provider, given explicitly: with two in the build, rustls cannot choose one.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certified = read(cert, key, &provider)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(certified))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            files: Arc::new((cert.to_owned(), key.to_owned())),
            provider,
        })
    }

    /// Reads the files again; new handshakes present what they hold. On a problem, the
    /// certificate in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let (cert, key) = &*self.files;
        let certified = read(cert, key, &self.provider)?;
        *self.current.0.write().expect("certificate lock") = Arc::new(certified);
        Ok(())
    }

    /// Accepts TLS connections.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

fn read(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: holds no certificate", cert.display()));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{}: not a PEM private key: {e}", key.display()))?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| {
        format!(
            "{} and {}: {e} (is the key the certificate's?)",
            cert.display(),
            key.display()
        )
    })
}
