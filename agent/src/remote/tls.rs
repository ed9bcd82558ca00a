//! The server's TLS configuration: its certificate and key, and the CA
//! client certificates must chain to (required: no certificate, no
//! connection). Read at start-up and again on SIGHUP.

use std::{path::Path, sync::Arc};

use rustls::{
    RootCertStore, ServerConfig, crypto::ring::default_provider, server::WebPkiClientVerifier,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

use super::settings::TlsFiles;

/// What went wrong, with the config key whose file it is.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct TlsError {
    pub key: &'static str,
    pub reason: String,
}

fn err(key: &'static str, path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError {
        key,
        reason: format!("{}: {why}", path.display()),
    }
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(key, path, e))?;
    if certs.is_empty() {
        return Err(err(key, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certs("tls_cert", &files.cert)?;
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| err("tls_key", &files.key, e))?;
    let mut roots = RootCertStore::empty();
    for ca in certs("tls_client_ca", &files.client_ca)? {
        roots
            .add(ca)
            .map_err(|e| err("tls_client_ca", &files.client_ca, e))?;
    }
    let provider = Arc::new(default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| err("tls_client_ca", &files.client_ca, e))?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("tls_cert", &files.cert, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| err("tls_key", &files.key, format!("does not fit tls_cert: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}
