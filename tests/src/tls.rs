//! Mutual TLS for tests and benchmarks: a development CA made by
//! `faultctl certs`, and gRPC channels that present its client certificates.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::{bin, unique};

/// A directory `faultctl certs init` wrote; removed on drop.
pub struct CertDir {
    pub dir: PathBuf,
}

impl CertDir {
    /// `faultctl certs init --dir D [--san S]…`.
    pub fn init(sans: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(unique("faultline-certs"));
        let mut cmd = Command::new(bin("faultctl"));
        cmd.args(["certs", "init", "--dir"]).arg(&dir);
        for s in sans {
            cmd.args(["--san", s]);
        }
        let out = cmd.output().expect("run faultctl certs init");
        assert!(
            out.status.success(),
            "certs init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    /// `faultctl certs issue NAME --role ROLE --dir D`.
    pub fn issue(&self, name: &str, role: &str) -> &Self {
        let out = Command::new(bin("faultctl"))
            .args(["certs", "issue", name, "--role", role, "--dir"])
            .arg(&self.dir)
            .output()
            .expect("run faultctl certs issue");
        assert!(
            out.status.success(),
            "certs issue: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The agent's flags for this directory's certificates and roles.
    pub fn agent_args(&self, listen: SocketAddr) -> Vec<String> {
        let p = |f: &str| self.path(f).display().to_string();
        vec![
            "--listen".into(),
            listen.to_string(),
            "--tls-cert".into(),
            p("agent.pem"),
            "--tls-key".into(),
            p("agent-key.pem"),
            "--tls-client-ca".into(),
            p("ca.pem"),
            "--roles".into(),
            p("roles.toml"),
        ]
    }

    /// A connected channel as client `name` (None: no client certificate).
    pub async fn channel(
        &self,
        addr: SocketAddr,
        name: Option<&str>,
    ) -> Result<Channel, tonic::transport::Error> {
        tls_channel(addr, &self.path("ca.pem"), name.map(|n| self.identity(n))).await
    }

    pub fn identity(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}-key.pem")),
        )
    }
}

impl Drop for CertDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An https channel to `addr` (the agent's certificate is checked for
/// `localhost`), presenting `identity` (certificate, key) if given.
pub async fn tls_channel(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<(PathBuf, PathBuf)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("read CA")))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).expect("read client certificate"),
            std::fs::read(key).expect("read client key"),
        ));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
}

/// A client for bare TLS handshakes (no gRPC), as `identity`.
pub fn handshaker(ca: &Path, cert: &Path, key: &Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("read CA") {
        roots.add(c.expect("CA PEM")).expect("add CA");
    }
    let chain = CertificateDer::pem_file_iter(cert)
        .expect("read certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_file(key).expect("read key");
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client certificate");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
}

/// A TCP connection and the client's side of a TLS handshake (with TLS
/// 1.3 the server's verdict on the certificate comes with its first data).
pub async fn handshake(
    c: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("a name");
    c.connect(name, tcp).await
}
