//! TLS to `https://` servers (rustls, with ring, as riis's own TLS): the
//! server's certificate is checked against the system's trusted
//! certificates (Debian's `ca-certificates`, `SSL_CERT_FILE` and
//! `SSL_CERT_DIR`), or against the section's `ca_file` instead, and for
//! the server's host name (or address) as written in `servers`. HTTP/1.1
//! is asked for with ALPN. A section's `client_certificate` is sent to
//! servers that ask for one (nginx's `proxy_ssl_certificate`).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::client::ResolvesClientCert;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// The certificates of a section's `ca_file`, ready to check servers with.
#[derive(Clone)]
pub struct TrustedCertificates {
    /// The file, as resolved.
    path: PathBuf,
    roots: Arc<RootCertStore>,
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for TrustedCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TrustedCertificates")
            .field(&self.path)
            .finish()
    }
}

impl TrustedCertificates {
    /// Reads the PEM certificates of `path`.
    fn load(path: PathBuf) -> Result<Self, String> {
        let shown = path.display();
        let certificates = read_certificates(&path)?;
        let mut roots = RootCertStore::empty();
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|e| format!("{shown}: a certificate cannot be trusted: {e}"))?;
        }
        let roots = Arc::new(roots);
        let config = client_config(roots.clone(), None)?;
        Ok(Self {
            path,
            roots,
            config,
        })
    }

    /// The TLS configuration that trusts these certificates.
    pub(super) fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The certificates themselves.
    pub(super) fn roots(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }
}

/// Reads a PEM file of at most 4 MiB (a bundle of every public root is a
/// few hundred KiB): a device or a FIFO named here cannot stall or fill the
/// server while the configuration loads.
fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, String> {
    crate::open_nonblocking(path)
        .and_then(|file| crate::read_regular(file, 4 * 1024 * 1024))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The certificates of the PEM file `path`, at least one.
fn read_certificates(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let pem = read_pem(path)?;
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{shown} is not PEM: {e}"))?;
    if certificates.is_empty() {
        return Err(format!("{shown} holds no certificate"));
    }
    Ok(certificates)
}

/// The certificate riis shows `https://` servers that ask for one
/// (`client_certificate = { certificate = "…", key = "…" }`, nginx's
/// `proxy_ssl_certificate` and `proxy_ssl_certificate_key`).
#[derive(Clone)]
pub struct ClientCertificate {
    /// The certificate file, as resolved.
    path: PathBuf,
    key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ClientCertificate")
            .field(&self.path)
            .finish()
    }
}

/// `client_certificate` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientCertificateFiles {
    certificate: String,
    key: String,
}

impl ClientCertificate {
    /// Reads the chain (the client's certificate first) and its private
    /// key, and checks that they belong together.
    fn load(certificate: PathBuf, key: PathBuf) -> Result<Self, String> {
        let chain = read_certificates(&certificate)?;
        let pem = read_pem(&key)?;
        let private = PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| format!("{} holds no private key: {e}", key.display()))?;
        let provider = rustls::crypto::ring::default_provider();
        let certified = CertifiedKey::from_der(chain, private, &provider).map_err(|e| {
            format!(
                "{} and {} are no certificate and key of one another: {e}",
                certificate.display(),
                key.display()
            )
        })?;
        Ok(Self {
            path: certificate,
            key: Arc::new(certified),
        })
    }

    /// A TLS configuration that trusts `roots` and shows this certificate
    /// to servers that ask.
    pub(super) fn config(&self, roots: Arc<RootCertStore>) -> Result<Arc<ClientConfig>, String> {
        client_config(
            roots,
            Some(Arc::new(SingleCertAndKey::from(self.key.clone()))),
        )
    }
}

impl<'de> Deserialize<'de> for ClientCertificate {
    /// Paths relative to the configuration file's folder; the files are
    /// read now, so that a wrong one is a configuration error.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let files = ClientCertificateFiles::deserialize(d)?;
        let folder = riis_pipeline::configuration_folder();
        Self::load(folder.join(files.certificate), folder.join(files.key))
            .map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for TrustedCertificates {
    /// A path, relative to the configuration file's folder; the file is
    /// read now, so that a wrong one is a configuration error.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let path = riis_pipeline::configuration_folder().join(text);
        Self::load(path).map_err(serde::de::Error::custom)
    }
}

/// A client configuration trusting `roots`, showing `identity`'s
/// certificate to servers that ask for one (none without).
fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<Arc<dyn ResolvesClientCert>>,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS cannot be set up: {e}"))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => builder.with_client_cert_resolver(identity),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The configuration trusting the system's certificates, made once, at
/// the first request to an `https://` server without `ca_file`.
pub(super) fn system() -> Result<Arc<ClientConfig>, String> {
    static SYSTEM: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| client_config(system_roots()?, None))
        .clone()
}

/// The system's trusted certificates, read once.
pub(super) fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or_else(String::new, |e| format!(" ({e})"));
                return Err(format!(
                    "the system has no trusted certificates{why}: install ca-certificates, or set proxy.ca_file"
                ));
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("riis-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = TrustedCertificates::load(empty).unwrap_err();
        assert!(e.contains("holds no certificate"), "{e}");
        let e = TrustedCertificates::load(dir.join("missing.pem")).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
