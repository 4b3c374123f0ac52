//! Certificates made for the tests, never committed: a CA, a server certificate for
//! `localhost` and 127.0.0.1, and client certificates, written as PEM files to a directory
//! of their own.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The files of one test PKI.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    /// The CA certificate (trust it to reach the broker; it signs client certificates too).
    pub ca_file: PathBuf,
    pub server_cert_file: PathBuf,
    pub server_key_file: PathBuf,
    /// A client certificate with CN [`CLIENT_CN`], and its key.
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
    /// A client certificate signed by another CA (refused by the broker).
    pub stranger_cert_file: PathBuf,
    pub stranger_key_file: PathBuf,
}

/// The CN of the client certificate: the user name when the listener uses the identity.
pub const CLIENT_CN: &str = "device-42";

impl Pki {
    /// Makes a CA and its certificates in `dir` (created if missing).
    pub fn generate(dir: &Path) -> anyhow::Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let write = |name: &str, text: String| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, text)?;
            Ok(path)
        };
        let ca = authority("Tern test CA")?;
        let server = leaf(
            &ca,
            "localhost",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let client = leaf(&ca, CLIENT_CN, &[], ExtendedKeyUsagePurpose::ClientAuth)?;
        let other_ca = authority("Another CA")?;
        let stranger = leaf(
            &other_ca,
            "stranger",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        Ok(Pki {
            dir: dir.to_owned(),
            ca_file: write("ca.crt", ca.pem())?,
            server_cert_file: write("server.crt", server.0)?,
            server_key_file: write("server.key", server.1)?,
            client_cert_file: write("client.crt", client.0)?,
            client_key_file: write("client.key", client.1)?,
            stranger_cert_file: write("stranger.crt", stranger.0)?,
            stranger_key_file: write("stranger.key", stranger.1)?,
        })
    }

    /// One PKI for the whole test process, in a fresh temporary directory. A static is never
    /// dropped, so the directory outlives the process: the directories of processes that
    /// have ended are removed here instead (hundreds piled up in /tmp otherwise).
    pub fn shared() -> &'static Pki {
        static PKI: OnceLock<Pki> = OnceLock::new();
        PKI.get_or_init(|| {
            let temp = std::env::temp_dir();
            remove_ended_processes_dirs(&temp);
            let dir = temp.join(format!("{SHARED_DIR_PREFIX}{}", std::process::id()));
            Pki::generate(&dir).expect("generating the test certificates")
        })
    }

    /// The broker's TLS files; `client_certificates`: ask for (and require) client
    /// certificates signed by the CA.
    pub fn server_files(&self, client_certificates: bool) -> tern::net::tls::TlsFiles {
        tern::net::tls::TlsFiles {
            cert_file: self.server_cert_file.clone(),
            key_file: self.server_key_file.clone(),
            client_ca_file: client_certificates.then(|| self.ca_file.clone()),
            require_certificate: client_certificates,
        }
    }

    /// A rustls client configuration that trusts the CA, with the client certificate if
    /// `with_certificate`.
    pub fn client_config(&self, with_certificate: bool) -> anyhow::Result<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca_file)? {
            roots.add(cert?)?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(tern::net::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        Ok(if with_certificate {
            let chain = CertificateDer::pem_file_iter(&self.client_cert_file)?
                .collect::<Result<Vec<_>, _>>()?;
            let key = PrivateKeyDer::from_pem_file(&self.client_key_file)?;
            builder.with_client_auth_cert(chain, key)?
        } else {
            builder.with_no_client_auth()
        })
    }
}

fn authority(name: &str) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

/// A certificate and key (PEM) for `cn`, signed by `ca`.
fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> anyhow::Result<(String, String)> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, ca)?;
    Ok((certificate.pem(), key.serialize_pem()))
}

const SHARED_DIR_PREFIX: &str = "tern-test-pki-";

/// Removes `tern-test-pki-<pid>` directories in `temp` whose process has ended and that are
/// over an hour old (a process in another PID namespace sharing `/tmp` looks ended here, but
/// no test run lasts an hour). Where there is no `/proc` to ask, nothing is removed.
fn remove_ended_processes_dirs(temp: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(SHARED_DIR_PREFIX))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|at| {
            at.elapsed()
                .is_ok_and(|age| age > Duration::from_secs(3600))
        });
        if old && !Path::new(&format!("/proc/{pid}")).exists() {
            // Best effort: another test process may be removing it at the same time.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
