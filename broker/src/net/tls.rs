//! TLS for the secure listeners (8883, 8084): the rustls server configuration built from PEM
//! files, and the identity in a client's verified certificate.
//!
//! rustls with the `ring` provider, TLS 1.2 and 1.3. A listener with a client CA file asks
//! for client certificates and verifies them against it; `require_certificate` refuses a
//! handshake without one. The identity handed to the core (`Origin::identity`) is the
//! certificate's subject CN, or its first DNS or e-mail SAN when it has no CN.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use x509_cert::der::{Decode, Tag, Tagged};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

/// The files one TLS listener is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, leaf first (PEM).
    pub cert_file: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates that sign client certificates (PEM); none: clients are not asked.
    pub client_ca_file: Option<PathBuf>,
    /// Refuse clients without a valid certificate (needs `client_ca_file`).
    pub require_certificate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, why: impl ToString) -> TlsError {
    TlsError::File {
        path: path.into(),
        why: why.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// The ring provider with TLS 1.2 and 1.3, for every TLS config Tern builds.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the files and builds the server configuration. Every problem is an error naming the
/// file: a listener never starts (or reloads) with half a configuration.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(&files.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|e| file_error(&files.key_file, format!("no usable private key: {e}")))?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca_file {
        None if files.require_certificate => {
            return Err(TlsError::Config(
                "require_certificate needs a client_ca_file".into(),
            ))
        }
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(ca_file)? {
                roots.add(ca).map_err(|e| file_error(ca_file, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if files.require_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| file_error(ca_file, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // No ALPN list: rustls would refuse a client that offers protocols none of which is on it
    // (as some cloud SDKs do), and MQTT does not need one.
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        file_error(
            &files.key_file,
            format!("does not fit the certificate: {e}"),
        )
    })?;
    Ok(Arc::new(config))
}

/// The identity in a verified client certificate: its subject CN, else its first DNS name or
/// e-mail SAN. None when the certificate has neither (or cannot be read).
pub fn identity(certificate: &CertificateDer<'_>) -> Option<String> {
    let certificate = Certificate::from_der(certificate).ok()?;
    let tbs = &certificate.tbs_certificate;
    let common_name = tbs
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == x509_cert::der::oid::db::rfc4519::CN)
        .and_then(|atv| match atv.value.tag() {
            Tag::Utf8String | Tag::PrintableString | Tag::Ia5String => {
                std::str::from_utf8(atv.value.value())
                    .ok()
                    .map(str::to_owned)
            }
            _ => None,
        });
    common_name.or_else(|| {
        let extension = tbs
            .extensions
            .as_ref()?
            .iter()
            .find(|e| e.extn_id == x509_cert::der::oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME)?;
        let names = SubjectAltName::from_der(extension.extn_value.as_bytes()).ok()?;
        names.0.into_iter().find_map(|name| match name {
            GeneralName::DnsName(name) | GeneralName::Rfc822Name(name) => {
                Some(name.as_str().to_owned())
            }
            _ => None,
        })
    })
}
