//! TLS for the HTTP and Flight ports (`server.tls`): rustls with the ring provider, the
//! certificate chain and key from PEM files, and optionally a CA that every client's
//! certificate must chain to. A plaintext client meets a failed handshake, never an answer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::config::TlsConfig;

/// A client has this long to complete its handshake: one that stalls holds only its socket,
/// and not for long.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn read(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading server.tls.{what} {}: {e}", path.display()))
}

fn certificates(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("server.tls.{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "server.tls.{what} {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// The rustls configuration of the HTTP port (HTTP/1.1).
pub(crate) fn http_config(config: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates("cert_file", &config.cert_file)?;
    let key = PrivateKeyDer::from_pem_slice(&read("key_file", &config.key_file)?)
        .map_err(|e| format!("server.tls.key_file {}: {e}", config.key_file.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match &config.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("client_ca_file", path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("server.tls.client_ca_file {}: {e}", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("server.tls.client_ca_file {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("server.tls: the certificate and key do not fit: {e}"))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

/// The tonic TLS configuration of the Flight port (HTTP/2).
pub(crate) fn flight_config(
    config: &TlsConfig,
) -> Result<tonic::transport::ServerTlsConfig, String> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    // Checked here, with the same messages as the HTTP port; tonic parses them again.
    http_config(config)?;
    let identity = Identity::from_pem(
        read("cert_file", &config.cert_file)?,
        read("key_file", &config.key_file)?,
    );
    let mut tls = ServerTlsConfig::new()
        .identity(identity)
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(path) = &config.client_ca_file {
        tls = tls
            .client_ca_root(Certificate::from_pem(read("client_ca_file", path)?))
            .client_auth_optional(false);
    }
    Ok(tls)
}

/// Makes ring the process's rustls provider. tonic (the Flight port's TLS) and the Redis
/// client (`rediss://`) build their rustls configs with the process-wide provider, and rustls
/// picks none by itself when two are compiled in (the Delta backend's AWS SDK brings
/// aws-lc-rs): they would panic. Ours is ring, as on the HTTP port. Called before anything
/// else starts; an error means one is installed already (by an earlier start, or by a program
/// embedding the server), which is then used.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
