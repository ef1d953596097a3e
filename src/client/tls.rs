//! The TLS client configuration: TLS 1.3 only, trusting a configured CA file or else the
//! operating system's roots.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_rustls::rustls;

use super::{config_error, SyncError};

/// A connector for `ca_file` (PEM), or for the system roots when it is `None`.
pub(crate) fn connector(
    ca_file: &Option<PathBuf>,
) -> Result<tokio_rustls::TlsConnector, SyncError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| config_error(format!("CA file {}: {e}", path.display())))?
            {
                let cert =
                    cert.map_err(|e| config_error(format!("CA file {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| config_error(format!("CA certificate: {e}")))?;
            }
        }
        None => {
            // The platform's trust store; certificates it cannot parse are skipped, as a
            // browser would.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    if roots.is_empty() {
        return Err(config_error(match ca_file {
            Some(path) => format!("CA file {} holds no certificate", path.display()),
            None => "the system has no trusted root certificates; set ca_file to the CA that \
                     signed the server's certificate"
                .into(),
        }));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| config_error(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
