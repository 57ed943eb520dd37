//! TLS for STARTTLS, in and out: rustls with the ring provider, TLS 1.2 and 1.3 only
//! (rustls implements nothing older, so TLS 1.0/1.1 clients fail the handshake).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CommonState, ServerConfig};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side of STARTTLS from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("tls.cert: {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.cert: {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls.cert: {}: no certificate in it",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("tls.key: {}: {e}", key.display()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls.key: {e}"))?;
    Ok(Arc::new(config))
}

/// The STARTTLS acceptor `tls.cert` and `tls.key` describe; `None` (STARTTLS not
/// offered) unless both are set.
pub fn acceptor(cfg: &crate::config::Config) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    match (&cfg.tls.cert, &cfg.tls.key) {
        (Some(cert), Some(key)) => {
            let config = server_config(&cfg.resolve(cert), &cfg.resolve(key))?;
            Ok(Some(tokio_rustls::TlsAcceptor::from(config)))
        }
        _ => Ok(None),
    }
}

/// "TLSv1.3 TLS13_AES_256_GCM_SHA384": what Received headers and logs say of a session.
pub fn describe(state: &CommonState) -> String {
    let version = match state.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(v) => format!("{v:?}"),
        None => "TLS".to_owned(),
    };
    match state.negotiated_cipher_suite() {
        Some(cs) => format!("{version} {:?}", cs.suite()),
        None => version,
    }
}

/// Writes a self-signed certificate for `hostname` as `cert.pem` and `key.pem` (0600) in
/// `dir`, for a first run; production sites use their CA's.
pub fn generate_self_signed(hostname: &str, dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let ck =
        rcgen::generate_simple_self_signed(vec![hostname.to_owned()]).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).map_err(|e| format!("{}: {e}", cert.display()))?;
    write_private(&key, ck.signing_key.serialize_pem().as_bytes())?;
    Ok((cert, key))
}

/// Creates `path` readable by its owner only.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}
