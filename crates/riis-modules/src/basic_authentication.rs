//! `BasicAuthentication`: HTTP Basic authentication (RFC 7617) against an
//! htpasswd file, as IIS's basic authentication module does against
//! Windows accounts and nginx's `auth_basic_user_file` against the same
//! kind of file.
//!
//! Registers for:
//!
//! - **AuthenticateRequest** (Medium): where the location's section is
//!   `enabled`, a request with `Authorization: Basic …` and no user yet
//!   (another module, or the parent of a child request, may have set one)
//!   has its user name and password checked against `user_file` (a
//!   child request whose parent came in anonymously, from a location
//!   without Basic, is checked in its own, and so is one whose parent's
//!   user another location's `user_file` or `group_file` vouched for: the
//!   user's [`HttpUser::issuer`] names them). A
//!   password hash takes milliseconds to check (bcrypt tens of them), so
//!   it is checked on the module's own threads (`riis-auth`, one per core)
//!   while the request waits (Pending) without holding its worker; the
//!   request resumes through **OnAsyncCompletion**. A user name and
//!   password that passed are remembered for 15 minutes (IIS's token
//!   cache), by a keyed digest, never in clear: later requests with them
//!   cost a hash lookup. A request with wrong credentials ends with 401.1;
//!   one without credentials goes on as it is (AnonymousAuthentication or
//!   UrlAuthorization decide what it may see).
//! - **SendResponse**: a 401 response of a location where the module is
//!   enabled gets the challenge, `WWW-Authenticate: Basic realm="…",
//!   charset="UTF-8"`, whichever module refused the request.
//!
//! The user gets the roles `group_file` gives it (`IsInRole`, for
//! UrlAuthorization). Both files are read when first needed and again
//! when they change (checked at most once a second), so a new user or
//! password needs no reload.
//!
//! Configuration section `basic_authentication` (IIS's
//! `basicAuthentication`), per location:
//! - `enabled` (default false, as in IIS);
//! - `realm` (default: the request's host name);
//! - `user_file`: `name:hash` lines, as `htpasswd -B` (bcrypt, `$2y$`),
//!   `mkpasswd -m sha-512` or `openssl passwd -6` (`$6$`, and `$5$`)
//!   write them; `#` starts a comment. Lines with other hashes (`$apr1$`,
//!   `{SHA}`, DES crypt, plain text) are skipped with a warning naming the
//!   line: those schemes are too weak to accept. Relative to the
//!   configuration file's folder;
//! - `group_file` (optional): `group: user user …` lines (Apache's
//!   `AuthGroupFile` format).
//!
//! A location with `enabled` and no readable `user_file` answers requests
//! with credentials 500 (the error is logged and shown on the detailed
//! error page) rather than letting them in unchecked; requests without
//! credentials go on to AnonymousAuthentication and UrlAuthorization as
//! anywhere else. Passwords over 512 bytes are refused (SHA-crypt's work
//! grows with the password), at most 4 logons of one client address are
//! checked at once (503 past that; requests with the same credentials
//! while their check runs wait for its result, and count once), and an
//! unknown user's password is
//! checked against the file's slowest hash, so that an unknown name takes
//! at least as long as a known one. Basic authentication sends
//! the password with every request, readable to anyone on the way: use it
//! over TLS.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use riis_pipeline::http::header::{self, HeaderValue};
use riis_pipeline::http::StatusCode;
use riis_pipeline::{
    CompletionInfo, HttpContext, HttpModule, HttpUser, ModuleError, ModuleRegistration,
    RequestNotification, RequestNotificationStatus, Section, SendResponseProvider, ServerInfo,
};
use serde::Deserialize;
use sha2::Digest as _;

use crate::background::Background;

/// How long a user name and password that passed are remembered.
const REMEMBER_FOR: Duration = Duration::from_secs(15 * 60);
/// Logons remembered at most.
const REMEMBERED: usize = 10_000;
/// Checks that may wait for a thread; past that a request gets 503.
const QUEUED_CHECKS: usize = 1024;
/// How often the files are looked at for changes.
const RECHECK_FILES: Duration = Duration::from_secs(1);
/// The longest password checked (bcrypt reads 72 bytes of it).
const MAX_PASSWORD: usize = 512;
/// Logons of one client address (an IPv6 one's /64) checked at once;
/// past that, 503.
const CHECKS_PER_CLIENT: u32 = 4;

/// The `basic_authentication` configuration section.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BasicAuthenticationConfig {
    /// Whether Basic credentials are checked (and 401s challenged).
    pub enabled: bool,
    /// The realm of the challenge; empty for the request's host name.
    #[serde(deserialize_with = "realm")]
    pub realm: String,
    /// The htpasswd file.
    pub user_file: PathBuf,
    /// The group file (optional).
    pub group_file: PathBuf,
    /// [`BasicAuthenticationConfig::issuer`], made once.
    #[serde(skip)]
    issuer: std::sync::OnceLock<Arc<str>>,
}

/// A realm goes into a header: printable characters only.
fn realm<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let realm = String::deserialize(d)?;
    if realm.chars().any(char::is_control) {
        return Err(serde::de::Error::custom(
            "a realm cannot hold control characters",
        ));
    }
    Ok(realm)
}

/// A password hash of the user file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PasswordHash {
    /// `$2a$`, `$2b$`, `$2y$`.
    Bcrypt(String),
    /// `$5$`, `$6$`.
    ShaCrypt(String),
}

impl PasswordHash {
    fn parse(text: &str) -> Option<Self> {
        if ["$2a$", "$2b$", "$2y$"].iter().any(|p| text.starts_with(p)) {
            Some(Self::Bcrypt(text.to_owned()))
        } else if text.starts_with("$5$") || text.starts_with("$6$") {
            Some(Self::ShaCrypt(text.to_owned()))
        } else {
            None
        }
    }

    /// Roughly how long a check takes, in bcrypt cost-0 units: bcrypt
    /// doubles with each cost step, SHA-crypt grows with its rounds (5,000
    /// by default, about as slow as bcrypt's cost 6 or 7).
    fn work(&self) -> f64 {
        match self {
            Self::Bcrypt(hash) => {
                let cost: i32 = hash.get(4..6).and_then(|c| c.parse().ok()).unwrap_or(10);
                2f64.powi(cost)
            }
            Self::ShaCrypt(hash) => {
                let rounds: f64 = hash
                    .get(3..)
                    .and_then(|rest| rest.strip_prefix("rounds="))
                    .and_then(|rest| rest.split('$').next())
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(5000.0);
                rounds * 0.017
            }
        }
    }

    fn text(&self) -> &str {
        match self {
            Self::Bcrypt(t) | Self::ShaCrypt(t) => t,
        }
    }

    /// Whether `password` matches (slow, by design).
    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Self::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            Self::ShaCrypt(hash) => {
                use sha_crypt::PasswordVerifier as _;
                sha_crypt::ShaCrypt::default()
                    .verify_password(password, hash.as_str())
                    .is_ok()
            }
        }
    }
}

/// The users and groups of one `user_file` and `group_file`.
#[derive(Debug, Default)]
struct Users {
    hashes: HashMap<String, PasswordHash>,
    roles: HashMap<String, Vec<String>>,
    /// The hash an unknown user's password is checked against: the file's
    /// slowest, so an unknown name takes at least as long as any known
    /// one.
    decoy: Option<PasswordHash>,
}

impl Users {
    fn new(hashes: HashMap<String, PasswordHash>, roles: HashMap<String, Vec<String>>) -> Self {
        let decoy = hashes
            .values()
            .max_by(|a, b| a.work().total_cmp(&b.work()))
            .cloned();
        Self {
            hashes,
            roles,
            decoy,
        }
    }
}

/// The most a user or group file may hold.
const MAX_LIST_FILE: u64 = 64 * 1024 * 1024;

/// A user or group file's text: a regular file of at most
/// [`MAX_LIST_FILE`] bytes.
fn read_list(path: &Path) -> std::io::Result<String> {
    let data = crate::read_regular(crate::open_nonblocking(path)?, MAX_LIST_FILE)?;
    String::from_utf8(data).map_err(|_| std::io::Error::other("not UTF-8 text"))
}

/// Reads an htpasswd file: `name:hash` lines.
fn read_users(path: &Path) -> Result<HashMap<String, PasswordHash>, String> {
    let text =
        read_list(path).map_err(|e| format!("cannot read user_file {}: {e}", path.display()))?;
    let mut users = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, hash)) = line.split_once(':') else {
            tracing::warn!(
                "BasicAuthentication: {}:{}: not a `name:hash` line; skipped",
                path.display(),
                number + 1
            );
            continue;
        };
        match PasswordHash::parse(hash.trim()) {
            Some(hash) => {
                users.insert(name.to_owned(), hash);
            }
            None => tracing::warn!(
                "BasicAuthentication: {}:{}: user `{}` has a hash riis does not accept (use bcrypt, \
                 `htpasswd -B`, or SHA-crypt, `openssl passwd -6`); skipped",
                path.display(),
                number + 1,
                name.escape_debug()
            ),
        }
    }
    Ok(users)
}

/// Reads a group file: `group: user user …` lines; gives each user's
/// groups.
fn read_groups(path: &Path) -> Result<HashMap<String, Vec<String>>, String> {
    let text =
        read_list(path).map_err(|e| format!("cannot read group_file {}: {e}", path.display()))?;
    let mut roles: HashMap<String, Vec<String>> = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((group, members)) = line.split_once(':') else {
            tracing::warn!(
                "BasicAuthentication: {}:{}: not a `group: user …` line; skipped",
                path.display(),
                number + 1
            );
            continue;
        };
        for member in members.split_whitespace() {
            roles
                .entry(member.to_owned())
                .or_default()
                .push(group.trim().to_owned());
        }
    }
    Ok(roles)
}

/// What identifies a version of a file: it is read again when this changes.
type FileStamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

/// One pair of files as last read.
struct Loaded {
    looked: Instant,
    stamps: (FileStamp, FileStamp),
    users: Result<Arc<Users>, String>,
    /// A request is reading the files again.
    reading: bool,
}

/// What the factory and the instances share.
struct Shared {
    /// Relative file names are taken from here.
    folder: PathBuf,
    files: Mutex<HashMap<(PathBuf, PathBuf), Loaded>>,
    /// Digests of the logons that passed, and until when they count.
    remembered: Mutex<HashMap<[u8; 32], Instant>>,
    /// Keys the digests, so a memory dump does not give passwords away to a
    /// dictionary.
    secret: [u8; 32],
    checks: Background<Check>,
    checking: Checking,
    waiting: Waiting,
}

/// A password to check on the module's threads.
struct Check {
    hash: PasswordHash,
    password: Vec<u8>,
    /// False for an unknown user: the password is checked against another
    /// user's hash, so that unknown names take as long as known ones (no
    /// telling them apart by time), and fails whatever the result.
    counts: bool,
    done: riis_pipeline::CompletionHandle,
    /// Held until the check is done.
    _slot: CheckSlot,
    /// The requests that wait for the same logon's result.
    turn: Turn,
}

/// What a finished check posts: the logon passed.
const PASSED: u64 = 1;
/// What a check that was never made posts to those waiting for it (the
/// queue was full): they get 503, as it did.
const NOT_CHECKED: u64 = 2;

/// Requests waiting for a logon that another request's check is making,
/// by the logon's digest: a browser opens several connections at once with
/// the same credentials (six for a page's parts), and one check answers
/// them all, rather than each taking one of the client's
/// [`CHECKS_PER_CLIENT`] and the rest getting 503.
type Waiting = Arc<Mutex<HashMap<[u8; 32], Vec<riis_pipeline::CompletionHandle>>>>;

/// The check of a logon others may wait for: when it is dropped (done, or
/// never made), they are given its result.
struct Turn {
    digest: [u8; 32],
    waiting: Waiting,
    result: u64,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let waiters = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.digest)
            .unwrap_or_default();
        for waiter in waiters {
            waiter.post_completion(self.result);
        }
    }
}

impl Shared {
    /// The users of `config`'s files, read again when they changed. The
    /// files are read outside the lock, and while one request reads them
    /// the others go on with the users read before.
    fn users(&self, config: &BasicAuthenticationConfig) -> Result<Arc<Users>, String> {
        if config.user_file.as_os_str().is_empty() {
            return Err("basic_authentication.user_file is not set".into());
        }
        let user_file = self.folder.join(&config.user_file);
        let group_file = (!config.group_file.as_os_str().is_empty())
            .then(|| self.folder.join(&config.group_file));
        let key = (user_file, group_file.clone().unwrap_or_default());
        let now = Instant::now();
        {
            let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(loaded) = files.get_mut(&key) {
                if loaded.reading || now.duration_since(loaded.looked) < RECHECK_FILES {
                    return loaded.users.clone();
                }
                loaded.looked = now;
                loaded.reading = true;
            }
        }
        let stamps = (stamp(&key.0), group_file.as_deref().and_then(stamp));
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(loaded) = files.get_mut(&key) {
            if stamps == loaded.stamps && stamps.0.is_some() {
                loaded.reading = false;
                return loaded.users.clone();
            }
        }
        drop(files);
        let users = read_users(&key.0).and_then(|hashes| {
            let roles = match &group_file {
                Some(path) => read_groups(path)?,
                None => HashMap::new(),
            };
            Ok(Arc::new(Users::new(hashes, roles)))
        });
        if let Err(why) = &users {
            tracing::error!("BasicAuthentication: {why}");
        }
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.insert(
            key,
            Loaded {
                looked: now,
                stamps,
                users: users.clone(),
                reading: false,
            },
        );
        users
    }

    /// The digest a logon is remembered by: the user, the password and the
    /// hash it passed against (a changed password forgets it).
    fn digest(&self, name: &str, password: &[u8], hash: &PasswordHash) -> [u8; 32] {
        let mut d = sha2::Sha256::new();
        d.update(self.secret);
        for part in [name.as_bytes(), password, hash.text().as_bytes()] {
            d.update((part.len() as u64).to_le_bytes());
            d.update(part);
        }
        d.finalize().into()
    }

    fn is_remembered(&self, digest: &[u8; 32]) -> bool {
        let remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        remembered
            .get(digest)
            .is_some_and(|&until| Instant::now() < until)
    }

    fn remember(&self, digest: [u8; 32]) {
        let now = Instant::now();
        let mut remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        if remembered.len() >= REMEMBERED {
            remembered.retain(|_, until| now < *until);
            if remembered.len() >= REMEMBERED {
                remembered.clear();
            }
        }
        remembered.insert(digest, now + REMEMBER_FOR);
    }
}

/// A process-wide secret from the standard library's random hasher keys
/// (seeded from the operating system's randomness).
fn random_secret() -> [u8; 32] {
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}

/// Base64 with or without its `=` padding: some clients leave it off, and
/// nginx and Apache take such credentials too.
const CREDENTIALS_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// The credentials of an `Authorization: Basic` header: `None` without
/// one (or with another scheme), `Some(Err)` when it is malformed.
fn credentials(ctx: &HttpContext) -> Option<Result<(String, Vec<u8>), &'static str>> {
    let value = ctx.request().header(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(at) => (&value[..at], &value[at + 1..]),
        None => (value, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let token = rest.trim_ascii();
    let decoded = match CREDENTIALS_BASE64.decode(token) {
        Ok(d) => d,
        Err(_) => return Some(Err("the credentials are not base64")),
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return Some(Err("the credentials have no `:`"));
    };
    let Ok(name) = std::str::from_utf8(&decoded[..colon]) else {
        return Some(Err("the user name is not UTF-8"));
    };
    if name.is_empty() || name.chars().any(char::is_control) {
        return Some(Err("the user name is empty or has control characters"));
    }
    Some(Ok((name.to_owned(), decoded[colon + 1..].to_vec())))
}

/// 503: too many logons are being checked.
fn too_busy(ctx: &mut HttpContext) -> RequestNotificationStatus {
    // ERROR_NO_SYSTEM_RESOURCES
    crate::end_with_error(ctx, StatusCode::SERVICE_UNAVAILABLE, 0, 0x8007_05AA)
}

/// Logons being checked per client address.
type Checking = Arc<Mutex<HashMap<std::net::IpAddr, u32>>>;

/// One of a client's [`CHECKS_PER_CLIENT`] checks, given back when the
/// check is done (or dropped unrun).
struct CheckSlot {
    checking: Checking,
    client: std::net::IpAddr,
}

impl CheckSlot {
    fn take(checking: &Checking, client: std::net::IpAddr) -> Option<Self> {
        let mut counts = checking.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(client).or_insert(0);
        if *n >= CHECKS_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(Self {
            checking: checking.clone(),
            client,
        })
    }
}

impl Drop for CheckSlot {
    fn drop(&mut self) {
        let mut counts = self.checking.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

/// The module instance: one per request.
pub struct BasicAuthentication {
    config: Section<BasicAuthenticationConfig>,
    shared: Arc<Shared>,
    /// The logon being checked.
    checking: Option<Logon>,
}

/// A logon being checked on the module's threads.
struct Logon {
    name: String,
    roles: Vec<String>,
    /// What to remember it by; `None` for an unknown user, who cannot pass.
    digest: Option<[u8; 32]>,
    /// What vouches for the user (its [`HttpUser::issuer`]).
    issuer: Arc<str>,
}

impl BasicAuthentication {
    fn refuse(ctx: &mut HttpContext, why: &str, name: Option<&str>) -> RequestNotificationStatus {
        tracing::info!(
            user = ?name.unwrap_or(""),
            url = %ctx.request().raw_url(),
            "BasicAuthentication: logon failed: {why}"
        );
        crate::end_with_error(ctx, StatusCode::UNAUTHORIZED, 1, crate::E_ACCESS_DENIED)
    }

    fn log_on(ctx: &mut HttpContext, name: String, roles: Vec<String>, issuer: Arc<str>) {
        ctx.set_user(
            HttpUser::new(name, "Basic")
                .with_roles(roles)
                .with_issuer(issuer),
        );
    }
}

impl HttpModule for BasicAuthentication {
    fn on_authenticate_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        // A user with a name logged on already (the parent of a child
        // request, or another module). The anonymous user, a child request
        // may have from a parent in a location without Basic, logs on here.
        let Some(config) = enabled_config(ctx, self.config) else {
            return RequestNotificationStatus::Continue;
        };
        let issuer = config.issuer().clone();
        // A Basic user whose files were others (a child request, a CGI
        // local redirect or an include, into a location with a user file
        // of its own, where another `admin` may be, and other groups) logs
        // on again against this location's, as nginx and Apache check an
        // internal redirect's credentials again.
        let again = match ctx.user() {
            Some(user) if !user.name().is_empty() => {
                if user.authentication_type() != "Basic"
                    || user.issuer().is_none_or(|by| by == &*issuer)
                {
                    return RequestNotificationStatus::Continue;
                }
                true
            }
            _ => false,
        };
        if ctx
            .request()
            .headers()
            .get_all(header::AUTHORIZATION)
            .iter()
            .nth(1)
            .is_some()
        {
            // Two sets of credentials: which one is checked, and which one
            // a FastCGI application or a proxied server reads, could
            // differ. nginx refuses the request the same way.
            tracing::info!(
                url = %ctx.request().raw_url(),
                "BasicAuthentication: more than one Authorization header"
            );
            // E_INVALIDARG
            return crate::end_with_error(ctx, StatusCode::BAD_REQUEST, 0, 0x8007_0057);
        }
        let (name, password) = match credentials(ctx) {
            // Logged on elsewhere, and no credentials here (a module
            // removed them): not let on as anonymous where that may be off.
            None if again => return Self::refuse(ctx, "no credentials", None),
            None => return RequestNotificationStatus::Continue,
            Some(Err(why)) => return Self::refuse(ctx, why, None),
            Some(Ok(c)) => c,
        };
        let users = match self.shared.users(config) {
            Ok(users) => users,
            Err(why) => {
                let resp = ctx.response_mut();
                resp.clear_entity();
                resp.set_error_status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error",
                    0,
                    0x8007_0002,
                );
                resp.set_error_description(format!("BasicAuthentication: {why}"));
                return RequestNotificationStatus::FinishRequest;
            }
        };
        // Whatever comes of this logon, the user vouched for elsewhere is
        // not this request's any more.
        if again {
            ctx.set_user(HttpUser::new("", ""));
        }
        if password.len() > MAX_PASSWORD {
            // SHA-crypt's work grows with the password's length: a long one
            // would hold a checking thread for seconds.
            return Self::refuse(ctx, "password too long", Some(&name));
        }
        let known = users.hashes.get(&name).cloned();
        let digest = known
            .as_ref()
            .map(|hash| self.shared.digest(&name, &password, hash));
        let roles = users.roles.get(&name).cloned().unwrap_or_default();
        if digest.is_some_and(|d| self.shared.is_remembered(&d)) {
            Self::log_on(ctx, name, roles, issuer);
            return RequestNotificationStatus::Continue;
        }
        let counts = known.is_some();
        let Some(hash) = known.or_else(|| users.decoy.clone()) else {
            // No users at all: nothing to take time over.
            return Self::refuse(ctx, "unknown user", Some(&name));
        };
        // The same logon being checked for another request already: its
        // result is this one's too. An unknown name's logons wait for one
        // another the same way (keyed by the decoy hash they are checked
        // against): were they each checked, past the client's four at once
        // they would get 503 where a known name's get 401, telling the
        // names apart as the decoy is there to prevent.
        let key = digest.unwrap_or_else(|| self.shared.digest(&name, &password, &hash));
        let turn = {
            let mut waiting = self
                .shared
                .waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(waiters) = waiting.get_mut(&key) {
                waiters.push(ctx.completion_handle());
                drop(waiting);
                self.checking = Some(Logon {
                    name,
                    roles,
                    digest,
                    issuer,
                });
                return RequestNotificationStatus::Pending;
            }
            waiting.insert(key, Vec::new());
            Turn {
                digest: key,
                waiting: self.shared.waiting.clone(),
                result: NOT_CHECKED,
            }
        };
        let client = crate::ip_restriction::client_network(ctx.request().remote_address().ip());
        let Some(slot) = CheckSlot::take(&self.shared.checking, client) else {
            // One line a second: a client past its limit is usually a flood.
            static PER_CLIENT_LOG: crate::LogGate = crate::LogGate::new();
            if let Some(held_back) = PER_CLIENT_LOG.pass() {
                tracing::warn!(
                    address = %client,
                    held_back,
                    "BasicAuthentication: {CHECKS_PER_CLIENT} logons of one client are being checked already"
                );
            }
            return too_busy(ctx);
        };
        let check = Check {
            hash,
            password,
            counts,
            done: ctx.completion_handle(),
            _slot: slot,
            turn,
        };
        if self.shared.checks.queue(check).is_err() {
            static BUSY_LOG: crate::LogGate = crate::LogGate::new();
            if let Some(held_back) = BUSY_LOG.pass() {
                tracing::warn!(
                    held_back,
                    "BasicAuthentication: too many logons waiting to be checked"
                );
            }
            return too_busy(ctx);
        }
        self.checking = Some(Logon {
            name,
            roles,
            digest,
            issuer,
        });
        RequestNotificationStatus::Pending
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        _notification: RequestNotification,
        _is_post: bool,
        completion: &CompletionInfo,
    ) -> RequestNotificationStatus {
        let Some(Logon {
            name,
            roles,
            digest,
            issuer,
        }) = self.checking.take()
        else {
            return RequestNotificationStatus::Continue;
        };
        match digest {
            _ if completion.bytes == NOT_CHECKED => too_busy(ctx),
            Some(digest) if completion.bytes == PASSED => {
                self.shared.remember(digest);
                Self::log_on(ctx, name, roles, issuer);
                RequestNotificationStatus::Continue
            }
            Some(_) => Self::refuse(ctx, "wrong password", Some(&name)),
            None => Self::refuse(ctx, "unknown user", Some(&name)),
        }
    }

    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut SendResponseProvider,
    ) -> RequestNotificationStatus {
        // IpRestriction's 401.501–503 refuse the address or its rate: a
        // logon cannot change that, so no challenge asks for one.
        let resp = ctx.response();
        if !provider.headers_being_sent()
            || resp.status() != StatusCode::UNAUTHORIZED
            || (501..=503).contains(&resp.substatus())
        {
            return RequestNotificationStatus::Continue;
        }
        let Some(config) = enabled_config(ctx, self.config) else {
            return RequestNotificationStatus::Continue;
        };
        let realm = if config.realm.is_empty() {
            host_name(ctx).unwrap_or_else(|| ctx.site().site_name.clone())
        } else {
            config.realm.clone()
        };
        let quoted = realm.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(value) =
            HeaderValue::from_str(&format!("Basic realm=\"{quoted}\", charset=\"UTF-8\""))
        {
            ctx.response_mut()
                .append_header(header::WWW_AUTHENTICATE, value);
        }
        RequestNotificationStatus::Continue
    }
}

/// The section Basic authentication runs with: that of the location the
/// client asked for before a rewrite, where it is enabled (its users and
/// realm: a front controller's rewrite must neither skip the logon the
/// client's location asks for nor let the users of another location's
/// file in), else this location's, where it is; `None` where neither
/// enables it.
fn enabled_config(
    ctx: &HttpContext,
    section: Section<BasicAuthenticationConfig>,
) -> Option<&BasicAuthenticationConfig> {
    let (here, asked) = crate::both_configs(ctx, section);
    asked
        .into_iter()
        .chain(std::iter::once(here))
        .find(|c| c.enabled)
}

impl BasicAuthenticationConfig {
    /// What vouches for the users it logs on (their [`HttpUser::issuer`]):
    /// its user and group files. WebDav judges a destination by it.
    pub(crate) fn issuer(&self) -> &Arc<str> {
        self.issuer.get_or_init(|| {
            format!(
                "{}\n{}",
                self.user_file.display(),
                self.group_file.display()
            )
            .into()
        })
    }
}

/// The request's host name without its port (the `SERVER_NAME` server
/// variable), if it is a plain one.
fn host_name(ctx: &HttpContext) -> Option<String> {
    let name = ctx.server_variable("SERVER_NAME")?;
    (!name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b)))
    .then(|| name.into_owned())
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config =
        registration.declare_section::<BasicAuthenticationConfig>("basic_authentication")?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shared = Arc::new(Shared {
        folder: server.configuration_folder.clone(),
        files: Mutex::new(HashMap::new()),
        remembered: Mutex::new(HashMap::new()),
        secret: random_secret(),
        checks: Background::with_threads(
            "riis-auth",
            threads,
            QUEUED_CHECKS,
            |mut check: Check| {
                let passed = u64::from(check.hash.verify(&check.password) && check.counts);
                check.done.post_completion(passed);
                // Dropped with the check: those waiting get the result.
                check.turn.result = passed;
            },
        ),
        checking: Arc::default(),
        waiting: Arc::default(),
    });
    registration.set_request_notifications(
        move || BasicAuthentication {
            config,
            shared: shared.clone(),
            checking: None,
        },
        RequestNotification::AuthenticateRequest | RequestNotification::SendResponse,
        riis_pipeline::RequestNotifications::NONE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logon_checks_count_per_address_and_per_ipv6_64() {
        let key = |a: &str| crate::ip_restriction::client_network(a.parse().unwrap());
        assert_eq!(key("192.0.2.7"), key("::ffff:192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        // Addresses one host picks from its /64 share a count.
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    #[test]
    fn bcrypt_and_sha_crypt_hashes_verify() {
        let bcrypt = PasswordHash::parse(&bcrypt::hash("secret", 4).unwrap()).unwrap();
        assert!(bcrypt.verify(b"secret"));
        assert!(!bcrypt.verify(b"Secret"));
        // `openssl passwd -6 -salt saltsalt secret`
        let sha512 = PasswordHash::parse(
            "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
        )
        .unwrap();
        assert!(matches!(sha512, PasswordHash::ShaCrypt(_)));
        assert!(sha512.verify(b"secret"));
        assert!(!sha512.verify(b"secret2"));
        // `openssl passwd -5 -salt saltsalt secret`
        let sha256 =
            PasswordHash::parse("$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA").unwrap();
        assert!(sha256.verify(b"secret"));
        assert!(!sha256.verify(b""));
        // A malformed hash never passes.
        assert!(!PasswordHash::Bcrypt("$2y$10$short".into()).verify(b""));
    }

    #[test]
    fn weak_hashes_are_not_accepted() {
        for weak in [
            "$apr1$abc$def",
            "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
            "abJnggxhB/yWI",
            "plain",
        ] {
            assert_eq!(PasswordHash::parse(weak), None, "{weak}");
        }
    }

    #[test]
    fn the_files_give_users_and_roles() {
        let dir = std::env::temp_dir().join(format!("riis-basic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let users = dir.join("users");
        let hash = bcrypt::hash("pw", 4).unwrap();
        std::fs::write(
            &users,
            format!("# comment\nalice:{hash}\nbob:$apr1$weak$hash\nnot a line\n\ncarol:{hash}\n"),
        )
        .unwrap();
        let groups = dir.join("groups");
        std::fs::write(&groups, "admins: alice carol\nstaff:alice\n").unwrap();
        let read = read_users(&users).unwrap();
        let mut names: Vec<_> = read.keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["alice", "carol"]);
        let roles = read_groups(&groups).unwrap();
        assert_eq!(roles["alice"], ["admins", "staff"]);
        assert_eq!(roles["carol"], ["admins"]);
        assert!(read_users(&dir.join("missing"))
            .unwrap_err()
            .contains("cannot read user_file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
