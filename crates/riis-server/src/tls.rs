//! TLS on `https://` bindings, with rustls: a certificate per host name
//! (SNI), a default for clients that name none or an unknown one, TLS 1.2
//! and 1.3, ALPN offering `h2` and `http/1.1`, client certificates for the
//! sites that ask for them, and certificates reloaded without a restart
//! when their files change or on SIGHUP.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor};

use crate::config::SiteCertificate;

/// The crypto provider riis uses (ring).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The most a certificate or key file may hold.
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// A PEM file's bytes: a regular file of at most [`MAX_PEM_FILE`] bytes,
/// opened non-blocking, so a FIFO or a device (`/dev/zero`) named by
/// mistake is an error instead of a stalled or exhausted server.
fn read_pem_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = crate::fs::open_nonblocking(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut pem = Vec::with_capacity(meta.len().min(MAX_PEM_FILE) as usize);
    file.take(MAX_PEM_FILE + 1).read_to_end(&mut pem)?;
    if pem.len() as u64 > MAX_PEM_FILE {
        return Err(std::io::Error::other("larger than 1 MiB"));
    }
    Ok(pem)
}

/// Loads a certificate chain and its key from PEM files, checking that they
/// belong together.
pub fn load_certified_key(source: &SiteCertificate) -> Result<CertifiedKey, String> {
    let chain = load_chain(source)?;
    let key = read_pem_file(&source.key)
        .map_err(|e| e.to_string())
        .and_then(|pem| {
            // rustls reads no encrypted key; its own error ("no items
            // found") would send the operator looking elsewhere.
            if pem
                .windows(b"ENCRYPTED".len())
                .any(|w| w == b"ENCRYPTED")
            {
                return Err("the key is encrypted, which riis does not read: decrypt it first (`openssl pkey -in KEY -out PLAIN`) and keep the plain file readable by riis alone".to_owned());
            }
            PrivateKeyDer::from_pem_slice(&pem).map_err(|e| e.to_string())
        })
        .map_err(|e| {
            format!(
                "cannot read a private key from `{}`: {e}",
                source.key.display()
            )
        })?;
    // Kept for the error path: a key that belongs to a later certificate
    // of the file says the file is in the wrong order.
    let spare = key.clone_key();
    let others = chain[1..].to_vec();
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        format!(
            "`{}` and `{}` do not make a usable certificate: {}",
            source.certificate.display(),
            source.key.display(),
            match e {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    match others.into_iter().position(|der| {
                        CertifiedKey::from_der(vec![der], spare.clone_key(), &provider()).is_ok()
                    }) {
                        Some(i) => format!(
                            "the private key belongs to certificate #{} of the file, not to the \
                             first: the site's own certificate comes first, then its \
                             intermediates",
                            i + 2
                        ),
                        None => "the private key does not belong to the certificate".to_owned(),
                    }
                }
                e => e.to_string(),
            }
        )
    })
}

/// The certificate chain of `source`, each certificate parsed.
pub fn load_chain(source: &SiteCertificate) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_pem_file(&source.certificate)
        .map_err(|e| format!("cannot read `{}`: {e}", source.certificate.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(&source.certificate, e))?;
    if chain.is_empty() {
        return Err(format!(
            "`{}` holds no PEM certificate",
            source.certificate.display()
        ));
    }
    // Every certificate of the chain must parse, not only the first (the
    // key check reads that one): a broken intermediate would otherwise be
    // sent to every client, and fail every handshake. The lenient parse a
    // trust anchor gets: critical extensions webpki does not know
    // (policyConstraints on enterprise intermediates) and v1 roots pass.
    for (i, der) in chain.iter().enumerate() {
        if let Err(e) = webpki::anchor_from_trusted_cert(der) {
            return Err(format!(
                "`{}`: certificate #{} does not parse ({e})",
                source.certificate.display(),
                i + 1
            ));
        }
    }
    warn_if_out_of_date(source, &chain[0]);
    Ok(chain)
}

/// Warns when a site's certificate is expired or not valid yet: it loads
/// (a renewal may be on its way, and nginx loads one too), but clients
/// refuse it.
fn warn_if_out_of_date(source: &SiteCertificate, leaf: &CertificateDer<'_>) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
        return;
    };
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if validity.not_after < now {
        tracing::warn!(
            file = %source.certificate.display(),
            not_after = %validity.not_after,
            "the certificate has expired: clients will refuse it"
        );
    } else if validity.not_before > now {
        tracing::warn!(
            file = %source.certificate.display(),
            not_before = %validity.not_before,
            "the certificate is not valid yet: clients will refuse it"
        );
    }
}

/// A site's `client_certificate_ca`, loaded: the configuration of the
/// handshakes that ask the client for a certificate. A client may present
/// none (a module decides whether a location requires one, as IIS's
/// `sslFlags` do); one it presents must chain to these CAs, or the
/// handshake fails.
#[derive(Debug)]
pub struct ClientTrust {
    /// The CA file: requests compare their site's against it (a request for
    /// another site's host name on this connection is misdirected).
    pub ca: Arc<Path>,
    /// The revocation list file, compared the same way.
    pub crl: Option<Arc<Path>>,
    config: Arc<rustls::ServerConfig>,
}

/// Loads the CA certificates of `ca` (and the revocation lists of `crl`)
/// and makes the configuration of the handshakes that present `key` and
/// ask for a client certificate.
///
/// With revocation lists, every certificate of the client's chain but the
/// trust anchor is checked, and one whose issuer has no list in the file,
/// or whose list is past its next update, is refused: nginx's `ssl_crl`
/// (OpenSSL's CRL_CHECK_ALL) behaves the same, and a server that let such
/// certificates in would quietly stop checking when a list went missing.
fn client_trust(
    ca: &Path,
    crl: Option<&Path>,
    key: Arc<CertifiedKey>,
) -> Result<ClientTrust, String> {
    let roots = load_client_roots(ca)?;
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated();
    if let Some(crl) = crl {
        builder = builder
            .with_crls(load_client_crls(crl)?)
            .enforce_revocation_expiration();
    }
    let verifier = builder
        .build()
        .map_err(|e| format!("`{}`: {e}", crl.unwrap_or(ca).display()))?;
    Ok(ClientTrust {
        ca: ca.into(),
        crl: crl.map(Into::into),
        config: server_config(
            Arc::new(ShortChains(verifier)),
            Arc::new(SingleCertAndKey::from(key)),
        )?,
    })
}

/// A PEM error in words (rustls-pki-types prints missing markers as byte
/// lists).
fn pem_error(path: &Path, e: rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    let what = match e {
        Error::MissingSectionEnd { .. } => "a PEM section has no end marker".to_owned(),
        Error::IllegalSectionStart { .. } => "a PEM section start marker is malformed".to_owned(),
        Error::Base64Decode(why) => format!("a PEM section is not valid base64 ({why})"),
        other => other.to_string(),
    };
    format!("`{}`: {what}", path.display())
}

/// The most intermediate certificates a client may send with its own.
/// Each one more multiplies the paths a verifier may try: a client with no
/// trusted certificate at all could send dozens of CA certificates that
/// sign one another and keep a worker busy for most of a tenth of a second
/// per handshake. Real client chains have one or two (nginx's
/// `ssl_verify_depth` is 1 by default).
pub const MAX_CLIENT_INTERMEDIATES: usize = 4;

/// A client certificate verifier that refuses, before any path is built,
/// a chain longer than [`MAX_CLIENT_INTERMEDIATES`] allows.
#[derive(Debug)]
struct ShortChains(Arc<dyn rustls::server::danger::ClientCertVerifier>);

impl rustls::server::danger::ClientCertVerifier for ShortChains {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        if intermediates.len() > MAX_CLIENT_INTERMEDIATES {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        self.0.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The CA certificates of a `client_certificate_ca` file: at least one, and
/// each usable as a trust anchor.
pub fn load_client_roots(ca: &Path) -> Result<rustls::RootCertStore, String> {
    let pem = read_pem_file(ca).map_err(|e| format!("cannot read `{}`: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for (i, der) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let der = der.map_err(|e| pem_error(ca, e))?;
        crate::client_certificate::check_ca(&der).map_err(|e| {
            format!(
                "`{}`: certificate #{} {e}, so it cannot be a client CA",
                ca.display(),
                i + 1
            )
        })?;
        roots.add(der).map_err(|e| {
            format!(
                "`{}`: certificate #{} is not a usable CA certificate ({e})",
                ca.display(),
                i + 1
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!("`{}` holds no PEM certificate", ca.display()));
    }
    Ok(roots)
}

/// The revocation lists of a `client_certificate_crl` file: at least one,
/// each usable. A list already past its next update loads, with a warning:
/// the certificates it covers are refused until it is replaced.
pub fn load_client_crls(
    crl: &Path,
) -> Result<Vec<rustls_pki_types::CertificateRevocationListDer<'static>>, String> {
    use rustls_pki_types::CertificateRevocationListDer;
    let pem = read_pem_file(crl).map_err(|e| format!("cannot read `{}`: {e}", crl.display()))?;
    let mut lists = Vec::new();
    for (i, der) in CertificateRevocationListDer::pem_slice_iter(&pem).enumerate() {
        let der = der.map_err(|e| pem_error(crl, e))?;
        let expired = crate::client_certificate::check_crl(&der)
            .map_err(|e| format!("`{}`: revocation list #{} {e}", crl.display(), i + 1))?;
        if let Some(next_update) = expired {
            tracing::warn!(
                file = %crl.display(),
                list = i + 1,
                next_update,
                "a client certificate revocation list is past its next update: \
                 the certificates it covers are refused until it is replaced"
            );
        }
        lists.push(der);
    }
    if lists.is_empty() {
        return Err(format!(
            "`{}` holds no PEM revocation list (X509 CRL)",
            crl.display()
        ));
    }
    Ok(lists)
}

/// One certificate of a listener and the host names it answers for
/// (`None`: the default).
#[derive(Debug, Clone)]
pub struct CertificateBinding {
    /// The host name (lower case), or `None` for the default certificate.
    pub host: Option<String>,
    /// The files.
    pub source: SiteCertificate,
}

/// A client certificate configuration's files: certificate, key, CA file
/// and revocation list file.
type TrustFiles = (PathBuf, PathBuf, PathBuf, Option<PathBuf>);

/// Loaded certificates by (certificate file, key file), and client
/// certificate configurations by their [`TrustFiles`].
#[derive(Debug, Default, Clone)]
struct Pairs {
    keys: HashMap<(PathBuf, PathBuf), Arc<CertifiedKey>>,
    trusts: HashMap<TrustFiles, Arc<ClientTrust>>,
    /// At the last periodic check, how many did not load and stayed as
    /// they were.
    kept: usize,
}

/// What a handshake for a host name presents, and asks of the client.
#[derive(Debug, Clone)]
struct HostEntry {
    key: Arc<CertifiedKey>,
    trust: Option<Arc<ClientTrust>>,
}

#[derive(Debug, Default)]
struct CertTable {
    by_host: HashMap<String, HostEntry>,
    default: Option<HostEntry>,
    /// Some entry asks for client certificates: handshakes then read the
    /// client's hello before choosing their configuration.
    asks_for_client_certificates: bool,
}

/// Chooses the certificate of a handshake by the name the client sent.
#[derive(Debug)]
pub struct SniResolver {
    bindings: ArcSwap<Vec<CertificateBinding>>,
    table: ArcSwap<CertTable>,
    /// The pairs loaded last, by their files: a pair that fails to load at
    /// a periodic check keeps its previous certificate without holding
    /// back the others.
    pairs: Mutex<Pairs>,
    /// Modification times of every file, to notice changes.
    stamps: Mutex<Vec<Option<SystemTime>>>,
    /// One update at a time: a periodic check that read the old bindings
    /// must not store its table over the one a configuration reload just
    /// handed over.
    updating: Mutex<()>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl SniResolver {
    /// Loads every certificate of a listener. The first host-less binding's
    /// certificate is the default; without one, the first certificate is.
    pub fn load(bindings: Vec<CertificateBinding>) -> Result<Self, String> {
        // Times first, as in `reload_now`: a file replaced while it is read
        // then shows a newer time at the next check.
        let stamps = Self::stamps_of(&bindings);
        let (table, pairs) = Self::build(&bindings, None)?;
        Ok(Self {
            bindings: ArcSwap::from_pointee(bindings),
            table: ArcSwap::from_pointee(table),
            pairs: Mutex::new(pairs),
            stamps: Mutex::new(stamps),
            updating: Mutex::new(()),
        })
    }

    fn stamps_of(bindings: &[CertificateBinding]) -> Vec<Option<SystemTime>> {
        bindings
            .iter()
            .flat_map(|b| {
                [
                    modified(&b.source.certificate),
                    modified(&b.source.key),
                    b.source.client_ca.as_deref().and_then(modified),
                    b.source.client_crl.as_deref().and_then(modified),
                ]
            })
            .collect()
    }

    /// The certificate table of `bindings`. With `previous` (a periodic
    /// check), a pair that does not load keeps its previous certificate,
    /// and the failure is logged for that pair alone; without (start, a
    /// configuration reload), any failure fails the whole, as nginx's
    /// reload does.
    fn build(
        bindings: &[CertificateBinding],
        previous: Option<&Pairs>,
    ) -> Result<(CertTable, Pairs), String> {
        let mut loaded = Pairs::default();
        let mut table = CertTable::default();
        // A pair (or a CA) that does not load at a periodic check keeps what
        // it had, and the failure is logged for it alone.
        let kept = std::cell::Cell::new(0usize);
        let keep = |e: String, b: &CertificateBinding, what: &str| {
            kept.set(kept.get() + 1);
            tracing::error!(
                error = %e,
                host = b.host.as_deref().unwrap_or("(default)"),
                "{what} changed but does not load; the one loaded before stays in use"
            );
        };
        for b in bindings {
            let k = (b.source.certificate.clone(), b.source.key.clone());
            let key = match loaded.keys.get(&k) {
                Some(key) => key.clone(),
                None => {
                    let old = previous.and_then(|p| p.keys.get(&k));
                    let key = match (load_certified_key(&b.source), old) {
                        (Ok(key), _) => Arc::new(key),
                        (Err(e), Some(old)) => {
                            keep(e, b, "a certificate or key file");
                            old.clone()
                        }
                        (Err(e), None) => return Err(e),
                    };
                    loaded.keys.insert(k.clone(), key.clone());
                    key
                }
            };
            let trust = match &b.source.client_ca {
                None => None,
                Some(ca) => {
                    let crl = b.source.client_crl.as_deref();
                    let t = (k.0, k.1, ca.clone(), crl.map(Path::to_path_buf));
                    Some(match loaded.trusts.get(&t) {
                        Some(trust) => trust.clone(),
                        None => {
                            let old = previous.and_then(|p| p.trusts.get(&t));
                            let trust = match (client_trust(ca, crl, key.clone()), old) {
                                (Ok(trust), _) => Arc::new(trust),
                                (Err(e), Some(old)) => {
                                    keep(e, b, "a client_certificate_ca or _crl file");
                                    old.clone()
                                }
                                (Err(e), None) => return Err(e),
                            };
                            loaded.trusts.insert(t, trust.clone());
                            trust
                        }
                    })
                }
            };
            table.asks_for_client_certificates |= trust.is_some();
            let entry = HostEntry { key, trust };
            match &b.host {
                Some(h) => {
                    table.by_host.entry(h.clone()).or_insert(entry.clone());
                }
                None => {
                    table.default.get_or_insert(entry.clone());
                }
            }
            if table.default.is_none() && bindings.iter().all(|b| b.host.is_some()) {
                table.default = Some(entry);
            }
        }
        loaded.kept = kept.get();
        Ok((table, loaded))
    }

    /// Reloads every certificate; on failure the current ones stay.
    pub fn reload(&self) -> Result<(), String> {
        let _one = self.updating.lock().unwrap_or_else(|e| e.into_inner());
        self.reload_now()
    }

    /// [`SniResolver::reload`] under the update lock. The files' times are
    /// taken before the files are read: a file replaced while it is being
    /// read then differs at the next check and is read again, instead of
    /// its new time being recorded for its old contents.
    fn reload_now(&self) -> Result<(), String> {
        let bindings = self.bindings.load_full();
        let stamps = Self::stamps_of(&bindings);
        let mut pairs = self.pairs.lock().unwrap_or_else(|e| e.into_inner());
        let (table, loaded) = Self::build(&bindings, Some(&pairs))?;
        *pairs = loaded;
        drop(pairs);
        self.table.store(Arc::new(table));
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = stamps;
        Ok(())
    }

    /// Takes over another resolver's certificates (a reloaded configuration
    /// for the same address, already loaded).
    pub fn replace_with(&self, other: &SniResolver) {
        let _one = self.updating.lock().unwrap_or_else(|e| e.into_inner());
        self.bindings.store(other.bindings.load_full());
        self.table.store(other.table.load_full());
        let pairs = other
            .pairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        *self.pairs.lock().unwrap_or_else(|e| e.into_inner()) = pairs;
        let stamps = other
            .stamps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = stamps;
    }

    /// Reloads when a file changed since the last load.
    pub fn reload_if_changed(&self) {
        let _one = self.updating.lock().unwrap_or_else(|e| e.into_inner());
        let now = Self::stamps_of(&self.bindings.load());
        let changed = *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) != now;
        if changed {
            match self.reload_now() {
                Ok(()) => {
                    let kept = self.pairs.lock().unwrap_or_else(|e| e.into_inner()).kept;
                    if kept == 0 {
                        tracing::info!("certificates reloaded after a file changed");
                    } else {
                        tracing::warn!(
                            kept,
                            "certificates reloaded after a file changed, but some did not load and stay as they were (see the errors above)"
                        );
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "certificate files changed but do not load; the previous certificates stay");
                    // Do not retry the same broken files every sweep.
                    *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = now;
                }
            }
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.table
            .load()
            .lookup(hello.server_name())
            .map(|e| e.key.clone())
    }
}

impl CertTable {
    /// The entry for an SNI name (or its absence).
    fn lookup(&self, name: Option<&str>) -> Option<&HostEntry> {
        name.and_then(|name| {
            // SNI names are ASCII (A-labels); compared case-insensitively,
            // and without a trailing dot, as host names are everywhere else
            // (a client may send `example.com.`).
            let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
            self.by_host.get(&name).or_else(|| {
                // A wildcard host (`*.example.com`), the most particular
                // first: `*.b.example.com`, then `*.example.com`, ...
                name.match_indices('.')
                    .find_map(|(dot, _)| self.by_host.get(&format!("*{}", &name[dot..])))
            })
        })
        .or(self.default.as_ref())
    }
}

/// A listener's rustls configuration: TLS 1.2 and 1.3, ALPN offering `h2`
/// and `http/1.1`, with `verifier` for client certificates and `resolver`
/// choosing the server's.
fn server_config(
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS side of a listener.
#[derive(Clone)]
pub struct TlsListener {
    /// Handshakes that ask for no client certificate; the certificate is
    /// chosen by the resolver.
    plain: TlsAcceptor,
    resolver: Arc<SniResolver>,
}

/// A finished handshake.
pub struct Handshake<IO> {
    /// The connection.
    pub stream: TlsStream<IO>,
    /// The CA file client certificates were verified against, when the
    /// handshake asked for one.
    pub client_ca: Option<Arc<Path>>,
    /// The revocation list file they were checked against, if any.
    pub client_crl: Option<Arc<Path>>,
}

impl TlsListener {
    /// The TLS side of a listener whose certificates `resolver` holds.
    pub fn new(resolver: Arc<SniResolver>) -> Result<Self, String> {
        let config = server_config(WebPkiClientVerifier::no_client_auth(), resolver.clone())?;
        Ok(Self {
            plain: TlsAcceptor::from(config),
            resolver,
        })
    }

    /// Runs the server side of a handshake. While no site of the listener
    /// asks for client certificates this is the plain acceptor; otherwise
    /// the client's hello is read first and its server name chooses whether
    /// to ask (the configuration is fixed once the handshake starts).
    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<Handshake<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        if !self.resolver.table.load().asks_for_client_certificates {
            let stream = self.plain.accept(io).await?;
            return Ok(Handshake {
                stream,
                client_ca: None,
                client_crl: None,
            });
        }
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
        let trust = {
            let table = self.resolver.table.load();
            table
                .lookup(start.client_hello().server_name())
                .and_then(|e| e.trust.clone())
        };
        match trust {
            Some(trust) => Ok(Handshake {
                stream: start.into_stream(trust.config.clone()).await?,
                client_ca: Some(trust.ca.clone()),
                client_crl: trust.crl.clone(),
            }),
            None => Ok(Handshake {
                stream: start.into_stream(self.plain.config().clone()).await?,
                client_ca: None,
                client_crl: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_for(name: &str) -> Arc<CertifiedKey> {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let key = PrivateKeyDer::try_from(c.signing_key.serialize_der()).unwrap();
        Arc::new(CertifiedKey::from_der(vec![c.cert.der().clone()], key, &provider()).unwrap())
    }

    /// SNI names are matched as host names are: any case, and without a
    /// trailing dot; an unknown or missing name gets the default.
    #[test]
    fn sni_names_match_without_case_or_a_trailing_dot() {
        let (a, b) = (key_for("a.test"), key_for("b.test"));
        let entry = |key: &Arc<CertifiedKey>| HostEntry {
            key: key.clone(),
            trust: None,
        };
        let table = CertTable {
            by_host: HashMap::from([("b.test".to_owned(), entry(&b))]),
            default: Some(entry(&a)),
            asks_for_client_certificates: false,
        };
        for name in ["b.test", "B.Test", "b.test."] {
            assert!(
                Arc::ptr_eq(&table.lookup(Some(name)).unwrap().key, &b),
                "{name}"
            );
        }
        for name in [Some("c.test"), Some("b.test.."), None] {
            assert!(
                Arc::ptr_eq(&table.lookup(name).unwrap().key, &a),
                "{name:?}"
            );
        }
    }

    /// A chain whose intermediate carries a critical extension webpki does
    /// not know (as policyConstraints intermediates do) loads; one holding
    /// something that is no certificate does not.
    #[test]
    fn chains_with_unknown_critical_extensions_load_and_garbage_does_not() {
        let dir = std::env::temp_dir().join(format!("riis-tls-chain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let leaf = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["ca.test".to_owned()]).unwrap();
        let mut extension =
            rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![5, 0]);
        extension.set_criticality(true);
        params.custom_extensions.push(extension);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let intermediate = params.self_signed(&ca_key).unwrap();
        let key = dir.join("a.key");
        std::fs::write(&key, leaf.signing_key.serialize_pem()).unwrap();
        let load = |chain: String| {
            let certificate = dir.join("chain.pem");
            std::fs::write(&certificate, chain).unwrap();
            load_certified_key(&SiteCertificate {
                certificate,
                key: key.clone(),
                client_ca: None,
                client_crl: None,
            })
        };
        let good = load(format!("{}{}", leaf.cert.pem(), intermediate.pem()));
        let bad = load(format!(
            "{}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            leaf.cert.pem()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(good.is_ok(), "{:?}", good.err());
        let err = bad.err().unwrap();
        assert!(err.contains("certificate #2 does not parse"), "{err}");
    }
}
