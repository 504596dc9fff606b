//! `IpRestriction`: allows or denies requests by the client's address, and
//! denies clients that send too many requests at once or too fast, as IIS's
//! IP and dynamic IP restrictions do.
//!
//! Registers for:
//!
//! - **BeginRequest** at First priority: a request refused by address or
//!   by rate ends before any module of lower priority sees it (a denied
//!   client costs one lookup). Child requests are checked against the
//!   address rules too (a default document or an executed error page may
//!   lie in another location); they are not counted again.
//! - **PostBeginRequest**, First: when a BeginRequest module after this one
//!   rewrote the URL, the address rules of the new URL's location are
//!   checked too, so a rewrite cannot lead a client past them. The request
//!   was counted once already, under the limits of the location it
//!   arrived in.
//!
//! Configuration section `ip_security` (IIS's `ipSecurity`), per location:
//! - `rules`: an ordered list of `{ address = "192.0.2.0/24", allowed =
//!   false }` (an address alone, or with a prefix length, IPv4 or IPv6;
//!   IIS's dotted `subnet_mask = "255.255.255.0"` also works for IPv4; an
//!   IPv4-mapped IPv6 network is an IPv4 one). The first rule that
//!   contains the address decides. A location's `rules` replace the list
//!   it inherits;
//! - `allow_unlisted` (default true): what happens to an address no rule
//!   contains;
//! - `deny_action`: `"Forbidden"` (default: 403), `"Unauthorized"` (401),
//!   `"NotFound"` (404), or `"AbortRequest"` (the connection is reset, no
//!   response). The substatus says why, as in IIS: .503 for a denied
//!   address, .501 for too many concurrent requests, .502 for too many
//!   requests in the interval;
//! - `proxy_mode` (default false; IIS's `enableProxyMode`): the addresses
//!   in `X-Forwarded-For` are checked too, each entry on its own, and a
//!   request is denied when any of them is (with `allow_unlisted = false`,
//!   list the proxies as allowed). Turn it on only behind a proxy that
//!   sets the header.
//!
//! Configuration section `dynamic_ip_security` (IIS's `dynamicIpSecurity`),
//! per location, counted per site and client (an IPv6 client by its /64):
//! - `deny_by_concurrent_requests = { enabled = false,
//!   max_concurrent_requests = 5 }`: a client with this many requests in
//!   the pipeline is refused another. A request leaves the count when it
//!   ends, which is when its response is handed to the connection (as IIS
//!   hands it to HTTP.sys): a slow download does not count while it is
//!   sent;
//! - `deny_by_request_rate = { enabled = false, max_requests = 20,
//!   request_interval_ms = 200 }`: a client's requests are counted in
//!   windows of `request_interval_ms` that start with its first request;
//!   past `max_requests` in one window the rest of that window is refused.
//!   Each distinct limit keeps its own windows, so a location's stricter
//!   limit is not reset by requests under the site's;
//! - `logging_only` (default false; IIS's `enableLoggingOnlyMode`): what
//!   would be refused is logged and let through;
//! - `deny_action`, `proxy_mode`: as in `ip_security`, for the limits;
//!   `ip_security`'s when not set. With `proxy_mode` a client is the last
//!   address of `X-Forwarded-For` (the one the nearest proxy saw).
//!
//! The counts belong to the process: a reload keeps them. They are kept
//! in 16 shards, each behind its own lock and chosen by a keyed hash, for
//! at most 100,000 clients;
//! clients with nothing in flight and no open window are forgotten (a full
//! shard is swept at most once a second). While a shard is still full, new
//! clients are counted together, as one client per site, so an attacker
//! cycling through addresses is limited instead of going uncounted.
//!
//! Refusals are logged at info with the rule and the address, at most one
//! line a second for address refusals and one for the limits (each line
//! says how many were held back), so a flood of refused requests is not a
//! flood of log lines. IIS's domain name restrictions (reverse DNS lookups
//! per request) are not done.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use riis_pipeline::http::StatusCode;
use riis_pipeline::{
    HttpContext, HttpModule, ModuleError, ModuleRegistration, Priority, RequestNotification,
    RequestNotificationStatus, Section, ServerInfo,
};
use serde::Deserialize;

/// Clients counted at most.
const MAX_CLIENTS: usize = 100_000;

/// The `ip_security` configuration section.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IpSecurityConfig {
    /// The ordered rules.
    pub rules: Vec<IpRule>,
    /// Whether an address no rule contains is allowed.
    pub allow_unlisted: bool,
    /// How a refused request is answered.
    pub deny_action: DenyAction,
    /// Whether `X-Forwarded-For` is checked too.
    pub proxy_mode: bool,
}

impl Default for IpSecurityConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            allow_unlisted: true,
            deny_action: DenyAction::Forbidden,
            proxy_mode: false,
        }
    }
}

/// How a refused request is answered (IIS's `denyAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DenyAction {
    /// 401.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// The connection is reset without a response.
    AbortRequest,
}

impl DenyAction {
    /// The status of the answer (`AbortRequest`'s 403 is not sent: the
    /// connection is reset instead, where one can be).
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Forbidden | Self::AbortRequest => StatusCode::FORBIDDEN,
        }
    }
}

/// One rule: a network and whether it is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RuleFields")]
pub struct IpRule {
    /// The network's first address (host bits cleared).
    pub network: IpAddr,
    /// The prefix length.
    pub prefix: u8,
    /// Whether the network's addresses are allowed.
    pub allowed: bool,
}

/// A rule as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFields {
    address: String,
    subnet_mask: Option<String>,
    #[serde(default)]
    allowed: bool,
}

impl TryFrom<RuleFields> for IpRule {
    type Error = String;

    fn try_from(fields: RuleFields) -> Result<Self, String> {
        let text = fields.address.trim();
        let mut net = IpNetwork::parse(text).map_err(|e| e.message(text))?;
        if let Some(mask) = &fields.subnet_mask {
            if text.contains('/') {
                return Err(format!("`{text}` has a prefix length and a subnet_mask"));
            }
            net = IpNetwork::new(net.network, mask_length(mask, net.network)?);
        }
        Ok(Self {
            network: net.network,
            prefix: net.prefix,
            allowed: fields.allowed,
        })
    }
}

/// An address or network as a configuration writes one (`192.0.2.7`,
/// `10.0.0.0/8`, `2001:db8::/32`): IpRestriction's rules, ForwardedFor's
/// trusted proxies, the PROXY protocol's trusted balancers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    /// The network's first address (host bits cleared).
    pub network: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

/// Why a text is not an [`IpNetwork`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkError {
    /// The address part is not an address.
    NotAnAddress,
    /// The prefix length is not a number up to the family's width (given).
    Prefix(u8),
    /// An IPv4-mapped network with a prefix below 96.
    MappedPrefix,
}

impl NetworkError {
    /// The error as a configuration error says it, about `text`.
    pub fn message(self, text: &str) -> String {
        match self {
            Self::NotAnAddress => format!("`{text}` is not an IP address or network"),
            Self::Prefix(width) => format!("`{text}`: the prefix length must be 0 to {width}"),
            Self::MappedPrefix => {
                format!("`{text}`: an IPv4-mapped network needs a prefix length of at least 96")
            }
        }
    }
}

impl IpNetwork {
    /// The network of `address` with `prefix` bits.
    pub fn new(address: IpAddr, prefix: u8) -> Self {
        Self {
            network: masked(address, prefix),
            prefix,
        }
    }

    /// `address` or `address/prefix`; host bits are cleared
    /// (`10.0.0.1/8` is `10.0.0.0/8`). Clients are compared as IPv4 when
    /// they arrive IPv4-mapped (`::ffff:192.0.2.7` on a dual-stack
    /// socket): so is an IPv4-mapped network.
    pub fn parse(text: &str) -> Result<Self, NetworkError> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| NetworkError::NotAnAddress)?;
        let width = if address.is_ipv4() { 32 } else { 128 };
        let length = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= width)
                .ok_or(NetworkError::Prefix(width))?,
            None => width,
        };
        match address {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if length >= 96 => Ok(Self::new(IpAddr::V4(v4), length - 96)),
                Some(_) => Err(NetworkError::MappedPrefix),
                None => Ok(Self::new(address, length)),
            },
            v4 => Ok(Self::new(v4, length)),
        }
    }

    /// Whether `address`, as given (an IPv4-mapped one is not IPv4 here),
    /// is in the network.
    pub fn contains(&self, address: IpAddr) -> bool {
        address.is_ipv4() == self.network.is_ipv4() && masked(address, self.prefix) == self.network
    }
}

/// The prefix length of a dotted IPv4 mask (`255.255.255.0` is 24).
fn mask_length(mask: &str, address: IpAddr) -> Result<u8, String> {
    let parsed: Ipv4Addr = mask
        .trim()
        .parse()
        .map_err(|_| format!("subnet_mask `{mask}` is not a dotted IPv4 mask"))?;
    if !address.is_ipv4() {
        return Err(format!(
            "subnet_mask `{mask}` is for IPv4 addresses; write an IPv6 network as `address/prefix`"
        ));
    }
    let bits = u32::from(parsed);
    let ones = bits.leading_ones();
    if bits.checked_shl(ones).unwrap_or(0) != 0 {
        return Err(format!(
            "subnet_mask `{mask}` is not contiguous (ones, then zeros)"
        ));
    }
    Ok(ones as u8)
}

/// `address` with the bits past `prefix` cleared.
fn masked(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

impl IpRule {
    fn contains(&self, address: IpAddr) -> bool {
        IpNetwork {
            network: self.network,
            prefix: self.prefix,
        }
        .contains(address)
    }
}

impl IpSecurityConfig {
    /// The first of the request's addresses these rules refuse: the
    /// peer's, then, with `proxy_mode`, those of `X-Forwarded-For`.
    /// WebDav judges a COPY or MOVE's destination by it too.
    pub(crate) fn refused_address(&self, ctx: &HttpContext) -> Option<IpAddr> {
        let remote = ctx.request().remote_address().ip().to_canonical();
        if !self.allows(remote) {
            return Some(remote);
        }
        if !self.proxy_mode {
            return None;
        }
        forwarded_addresses(ctx)
            .into_iter()
            .find(|&a| !self.allows(a))
    }

    /// Whether `address` is allowed: by the first rule containing it, or
    /// by `allow_unlisted`.
    fn allows(&self, address: IpAddr) -> bool {
        self.rules
            .iter()
            .find(|r| r.contains(address))
            .map_or(self.allow_unlisted, |r| r.allowed)
    }

    fn is_active(&self) -> bool {
        !self.rules.is_empty() || !self.allow_unlisted
    }
}

/// The `dynamic_ip_security` configuration section.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DynamicIpSecurityConfig {
    /// The concurrent request limit.
    pub deny_by_concurrent_requests: ConcurrentLimit,
    /// The request rate limit.
    pub deny_by_request_rate: RateLimit,
    /// Log what would be refused, and let it through.
    pub logging_only: bool,
    /// How a refused request is answered; `ip_security.deny_action` when
    /// not set.
    pub deny_action: Option<DenyAction>,
    /// Whether clients are told apart by `X-Forwarded-For`;
    /// `ip_security.proxy_mode` when not set.
    pub proxy_mode: Option<bool>,
}

/// `deny_by_concurrent_requests`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConcurrentLimit {
    /// Whether the limit applies.
    pub enabled: bool,
    /// Requests one client may have in flight.
    #[serde(deserialize_with = "crate::at_least_one")]
    pub max_concurrent_requests: u32,
}

impl Default for ConcurrentLimit {
    fn default() -> Self {
        Self {
            enabled: false,
            max_concurrent_requests: 5,
        }
    }
}

/// `deny_by_request_rate`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    /// Whether the limit applies.
    pub enabled: bool,
    /// Requests one client may send in one interval.
    #[serde(deserialize_with = "crate::at_least_one")]
    pub max_requests: u32,
    /// The interval, in milliseconds.
    #[serde(deserialize_with = "crate::at_least_one")]
    pub request_interval_ms: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            enabled: false,
            max_requests: 20,
            request_interval_ms: 200,
        }
    }
}

impl DynamicIpSecurityConfig {
    fn is_active(&self) -> bool {
        self.deny_by_concurrent_requests.enabled || self.deny_by_request_rate.enabled
    }
}

/// Why a request is refused, with IIS's substatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// `.501`.
    Concurrent,
    /// `.502`.
    Rate,
    /// `.503`.
    Address,
}

impl Refusal {
    fn substatus(self) -> u16 {
        match self {
            Self::Concurrent => 501,
            Self::Rate => 502,
            Self::Address => 503,
        }
    }

    fn rule(self) -> &'static str {
        match self {
            Self::Concurrent => "dynamic_ip_security.deny_by_concurrent_requests",
            Self::Rate => "dynamic_ip_security.deny_by_request_rate",
            Self::Address => "ip_security",
        }
    }
}

/// What is counted of one client.
#[derive(Default)]
struct Client {
    in_flight: u32,
    /// A window per rate limit the client's requests met: locations with
    /// different limits count apart (as nginx's zones do), so one with a
    /// short interval does not end another's long window. Locations that
    /// inherit a limit, or set the same one, count together. As many as
    /// the configuration has distinct limits, at most.
    windows: Vec<RateWindow>,
}

/// A client's requests under one rate limit.
struct RateWindow {
    /// The limit: `max_requests` and `request_interval_ms`.
    limit: (u32, u32),
    end: Instant,
    count: u32,
}

impl Client {
    /// Whether nothing is counted that is still to matter.
    fn is_idle(&self, now: Instant) -> bool {
        self.in_flight == 0 && self.windows.iter().all(|w| w.end <= now)
    }
}

/// The key clients are counted by: the site and the address, an IPv6
/// address by its /64 (one host gets a whole /64, and picks addresses in it
/// at will).
type ClientKey = (u32, IpAddr);

fn client_key(site: u32, address: IpAddr) -> ClientKey {
    (site, client_network(address))
}

/// Whose requests a client's count among: an IPv4 address alone (an
/// IPv4-mapped one as IPv4), an IPv6 one by its /64, which one host holds
/// whole and can pick addresses from at will. BasicAuthentication limits
/// logon checks by the same key.
pub(crate) fn client_network(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        v6 @ IpAddr::V6(_) => masked(v6, 64),
        v4 => v4,
    }
}

/// Shards of the client table, each behind its own lock, so requests of
/// different clients rarely wait for each other.
const SHARDS: usize = 16;

/// The clients counted, for the whole process: a reload keeps the counts
/// (the requests of the replaced configuration still count), as nginx's
/// limit zones do.
struct Clients {
    shards: [Mutex<Shard>; SHARDS],
    /// The shard hash's secret keys, drawn at start: with a known hash, a
    /// few thousand chosen addresses fill one shard, and the new clients
    /// that land in it are then counted together (and refused together).
    keys: std::collections::hash_map::RandomState,
}

#[derive(Default)]
struct Shard {
    clients: HashMap<ClientKey, Client>,
    /// When the shard was last swept of clients with nothing counted.
    swept: Option<Instant>,
    /// The shard was full and new clients shared the overflow count
    /// (warned once until there is room again).
    full_warned: bool,
}

/// Where new clients are counted while their shard is full: together, per
/// site, so that an attacker cycling through addresses is limited as one
/// client instead of going uncounted.
const OVERFLOW: IpAddr = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);

fn clients() -> &'static Clients {
    static CLIENTS: std::sync::OnceLock<Clients> = std::sync::OnceLock::new();
    CLIENTS.get_or_init(Clients::new)
}

impl Clients {
    fn new() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
            keys: std::collections::hash_map::RandomState::new(),
        }
    }

    fn shard(&self, key: &ClientKey) -> std::sync::MutexGuard<'_, Shard> {
        use std::hash::BuildHasher;
        let index = self.keys.hash_one(key) as usize % SHARDS;
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a request of `key` under `limits`; says whether it is to be
    /// refused, and the key it now counts as in flight under, if any.
    fn arrive(
        &self,
        key: ClientKey,
        limits: &DynamicIpSecurityConfig,
    ) -> (Option<Refusal>, Option<ClientKey>) {
        let now = Instant::now();
        let mut shard = self.shard(&key);
        let mut key = key;
        if !shard.clients.contains_key(&key) && shard.clients.len() >= MAX_CLIENTS / SHARDS {
            // Forget clients with nothing in flight and no open window, at
            // most once a second (a sweep walks the whole shard).
            if shard
                .swept
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                shard.swept = Some(now);
                shard.clients.retain(|_, c| !c.is_idle(now));
            }
            if shard.clients.len() >= MAX_CLIENTS / SHARDS {
                if !std::mem::replace(&mut shard.full_warned, true) {
                    tracing::warn!(
                        "IpRestriction: a sixteenth of the {MAX_CLIENTS} clients the table holds \
                         are counted in one of its shards; new clients that fall in it are \
                         counted together until some are forgotten"
                    );
                }
                // The overflow count lives in its own key's shard (where
                // `leave` finds it), which takes it even when full.
                key = (key.0, OVERFLOW);
                drop(shard);
                shard = self.shard(&key);
            } else {
                shard.full_warned = false;
            }
        }
        let client = shard.clients.entry(key).or_default();
        let rate = &limits.deny_by_request_rate;
        let mut refusal = None;
        if rate.enabled {
            let limit = (rate.max_requests, rate.request_interval_ms);
            let interval = Duration::from_millis(u64::from(rate.request_interval_ms));
            // Windows of other limits that ended go: a client never idle
            // would otherwise keep one for each limit a reload replaced.
            client.windows.retain(|w| w.limit == limit || w.end > now);
            let at = match client.windows.iter().position(|w| w.limit == limit) {
                Some(at) => at,
                None => {
                    client.windows.push(RateWindow {
                        limit,
                        end: now,
                        count: 0,
                    });
                    client.windows.len() - 1
                }
            };
            let window = &mut client.windows[at];
            // A window starts with the first request after the last one
            // ended, and lasts its interval.
            if now >= window.end {
                window.end = now + interval;
                window.count = 0;
            }
            window.count = window.count.saturating_add(1);
            if window.count > rate.max_requests {
                refusal = Some(Refusal::Rate);
            }
        }
        let concurrent = &limits.deny_by_concurrent_requests;
        if refusal.is_none()
            && concurrent.enabled
            && client.in_flight >= concurrent.max_concurrent_requests
        {
            refusal = Some(Refusal::Concurrent);
        }
        // A refused request ends at once; only one let through is in flight
        // (and one let through only because of logging_only is too).
        let counted = refusal.is_none() || limits.logging_only;
        if counted {
            client.in_flight += 1;
        }
        (refusal, counted.then_some(key))
    }

    /// A request counted by [`Clients::arrive`] ended.
    fn leave(&self, key: ClientKey) {
        let mut shard = self.shard(&key);
        if let Some(client) = shard.clients.get_mut(&key) {
            client.in_flight = client.in_flight.saturating_sub(1);
            if client.is_idle(Instant::now()) {
                shard.clients.remove(&key);
            }
        }
    }
}

static ADDRESS_LOG: crate::LogGate = crate::LogGate::new();
static LIMIT_LOG: crate::LogGate = crate::LogGate::new();

/// The module instance: one per request.
pub struct IpRestriction {
    config: Section<IpSecurityConfig>,
    dynamic: Section<DynamicIpSecurityConfig>,
    /// The client whose in-flight count this request holds.
    in_flight: Option<ClientKey>,
    /// `url_changes` when the rules were last checked.
    checked_url: u32,
}

impl IpRestriction {
    /// Checks the location's address rules and, with `count`, counts the
    /// request against its dynamic limits.
    fn check(&mut self, ctx: &mut HttpContext, count: bool) -> RequestNotificationStatus {
        self.checked_url = ctx.request().url_changes();
        let config = ctx.config(self.config);
        let dynamic = ctx.config(self.dynamic);
        let active = config.is_active();
        // A child request comes from the server: its URL is checked (it may
        // lead into another location), its client was counted already.
        let counting = count && ctx.child_depth() == 0 && dynamic.is_active();
        if !active && !counting {
            return RequestNotificationStatus::Continue;
        }
        let remote = ctx.request().remote_address().ip().to_canonical();
        let dynamic_proxy = dynamic.proxy_mode.unwrap_or(config.proxy_mode);
        if active {
            if let Some(denied) = config.refused_address(ctx) {
                if let Some(held_back) = ADDRESS_LOG.pass() {
                    tracing::info!(
                        rule = Refusal::Address.rule(),
                        address = %denied,
                        url = %crate::log_excerpt(ctx.request().raw_url()),
                        held_back,
                        "IpRestriction refused the request"
                    );
                }
                return refuse(ctx, config.deny_action, Refusal::Address);
            }
        }
        if !counting {
            return RequestNotificationStatus::Continue;
        }
        // The nearest proxy's entry, or, when it wrote none that is an
        // address, the proxy itself: never an earlier, client-written one.
        let client = match dynamic_proxy {
            true => nearest_forwarded(ctx).unwrap_or(remote),
            false => remote,
        };
        let (refusal, counted) = clients().arrive(client_key(ctx.site().site_id, client), dynamic);
        self.in_flight = counted;
        let Some(refusal) = refusal else {
            return RequestNotificationStatus::Continue;
        };
        if let Some(held_back) = LIMIT_LOG.pass() {
            tracing::info!(
                rule = refusal.rule(),
                address = %client,
                url = %crate::log_excerpt(ctx.request().raw_url()),
                held_back,
                logging_only = dynamic.logging_only,
                "IpRestriction refused the request"
            );
        }
        if dynamic.logging_only {
            return RequestNotificationStatus::Continue;
        }
        refuse(
            ctx,
            dynamic.deny_action.unwrap_or(config.deny_action),
            refusal,
        )
    }
}

/// Ends the request as `action` says.
fn refuse(
    ctx: &mut HttpContext,
    action: DenyAction,
    refusal: Refusal,
) -> RequestNotificationStatus {
    if action == DenyAction::AbortRequest {
        ctx.response_mut().reset_connection();
    }
    let status = action.status();
    crate::end_with_error(ctx, status, refusal.substatus(), crate::E_ACCESS_DENIED)
}

/// The addresses of `X-Forwarded-For`, in order. Each entry is read on its
/// own, so one that is not an address (`unknown`, an obfuscated name,
/// bytes that are not text) hides no other; an address may carry a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`) or brackets
/// (`[2001:db8::1]`).
fn forwarded_addresses(ctx: &HttpContext) -> Vec<IpAddr> {
    forwarded_items(ctx).filter_map(forwarded_address).collect()
}

/// The entries of `X-Forwarded-For`, in order, over all its lines.
fn forwarded_items(ctx: &HttpContext) -> impl Iterator<Item = &[u8]> {
    ctx.request()
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| crate::forwarded_entries(v.as_bytes()))
}

/// The client the nearest proxy names: the last entry of
/// `X-Forwarded-For`, the one that proxy wrote. `None` when that entry is
/// not an address: an earlier one is the client's own claim, and must not
/// become the key its requests are counted under.
fn nearest_forwarded(ctx: &HttpContext) -> Option<IpAddr> {
    forwarded_items(ctx).last().and_then(forwarded_address)
}

/// One `X-Forwarded-For` entry as an address.
fn forwarded_address(item: &[u8]) -> Option<IpAddr> {
    crate::forwarded_entry(item).map(|(address, _)| address)
}

impl HttpModule for IpRestriction {
    fn on_begin_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        self.check(ctx, true)
    }

    fn on_post_begin_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        if ctx.request().url_changes() == self.checked_url {
            return RequestNotificationStatus::Continue;
        }
        // Counted once, in BeginRequest (with the limits of the location
        // the request arrived in): the new location's address rules, and
        // its limits only if the first location had none.
        self.check(ctx, self.in_flight.is_none())
    }
}

impl Drop for IpRestriction {
    fn drop(&mut self) {
        if let Some(key) = self.in_flight.take() {
            clients().leave(key);
        }
    }
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<IpSecurityConfig>("ip_security")?;
    let dynamic = registration.declare_section::<DynamicIpSecurityConfig>("dynamic_ip_security")?;
    registration.set_global_notifications(
        crate::StatusLines(|| {
            let counted: usize = clients()
                .shards
                .iter()
                .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clients.len())
                .sum();
            format!("ip_restriction_clients: {counted}\n")
        }),
        riis_pipeline::GlobalNotification::RscaQuery.into(),
    )?;
    registration.set_request_notifications(
        move || IpRestriction {
            config,
            dynamic,
            in_flight: None,
            checked_url: 0,
        },
        RequestNotification::BeginRequest.into(),
        RequestNotification::BeginRequest.into(),
    )?;
    registration
        .set_priority_for_request_notification(RequestNotification::BeginRequest, Priority::First);
    registration.set_priority_for_post_request_notification(
        RequestNotification::BeginRequest,
        Priority::First,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(address: &str, mask: Option<&str>, allowed: bool) -> Result<IpRule, String> {
        IpRule::try_from(RuleFields {
            address: address.into(),
            subnet_mask: mask.map(Into::into),
            allowed,
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rules_match_networks_of_both_families() {
        let net = rule("192.0.2.77/24", None, false).unwrap();
        assert_eq!(net.network, ip("192.0.2.0"));
        assert!(net.contains(ip("192.0.2.1")));
        assert!(!net.contains(ip("192.0.3.1")));
        assert!(!net.contains(ip("::ffff:192.0.2.1")), "compared canonical");
        let masked = rule("10.1.2.3", Some("255.255.0.0"), true).unwrap();
        assert_eq!((masked.network, masked.prefix), (ip("10.1.0.0"), 16));
        let v6 = rule("2001:db8::/32", None, false).unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("192.0.2.1")));
        let all = rule("0.0.0.0/0", None, false).unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        let host = rule("::1", None, true).unwrap();
        assert_eq!(host.prefix, 128);
        assert!(host.contains(ip("::1")));
    }

    #[test]
    fn ipv4_mapped_rules_are_ipv4_rules() {
        let mapped = rule("::ffff:127.0.0.0/104", None, false).unwrap();
        assert_eq!((mapped.network, mapped.prefix), (ip("127.0.0.0"), 8));
        assert!(mapped.contains(ip("127.0.0.1")));
        let host = rule("::ffff:192.0.2.7", None, false).unwrap();
        assert_eq!((host.network, host.prefix), (ip("192.0.2.7"), 32));
        assert!(rule("::ffff:0.0.0.0/64", None, false)
            .unwrap_err()
            .contains("at least 96"));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(
            client_key(1, ip("2001:db8:1:2:aaaa::1")),
            client_key(1, ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            client_key(1, ip("2001:db8:1:2::1")),
            client_key(1, ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(1, ip("192.0.2.1")), (1, ip("192.0.2.1")));
    }

    #[test]
    fn a_full_table_counts_new_clients_together() {
        let clients = Clients::new();
        let limits = DynamicIpSecurityConfig {
            deny_by_request_rate: RateLimit {
                enabled: true,
                max_requests: 2,
                request_interval_ms: 60_000,
            },
            ..DynamicIpSecurityConfig::default()
        };
        // Fill every shard with clients whose windows are open.
        let open = Instant::now() + Duration::from_secs(600);
        let mut n: u32 = 0;
        for shard in &clients.shards {
            let mut shard = shard.lock().unwrap();
            while shard.clients.len() < MAX_CLIENTS / SHARDS {
                n += 1;
                let client = Client {
                    in_flight: 0,
                    windows: vec![RateWindow {
                        limit: (2, 60_000),
                        end: open,
                        count: 1,
                    }],
                };
                shard
                    .clients
                    .insert((1, IpAddr::V4(Ipv4Addr::from(n))), client);
            }
        }
        // New clients now share one count: the third of them is refused.
        let fresh = |i: u32| (1, IpAddr::V4(Ipv4Addr::from(u32::MAX - i)));
        let overflow = Some((1, OVERFLOW));
        assert_eq!(clients.arrive(fresh(0), &limits), (None, overflow));
        assert_eq!(clients.arrive(fresh(1), &limits), (None, overflow));
        assert_eq!(clients.arrive(fresh(2), &limits).0, Some(Refusal::Rate));
        // The shared count is found again when its requests end.
        clients.leave((1, OVERFLOW));
        clients.leave((1, OVERFLOW));
        let shard = clients.shard(&(1, OVERFLOW));
        assert_eq!(shard.clients[&(1, OVERFLOW)].in_flight, 0);
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        let err = |a: &str, m: Option<&str>| rule(a, m, false).unwrap_err();
        assert!(err("192.0.2", None).contains("not an IP address"));
        assert!(err("192.0.2.0/33", None).contains("0 to 32"));
        assert!(err("2001:db8::/129", None).contains("0 to 128"));
        assert!(err("10.0.0.0", Some("255.0.255.0")).contains("not contiguous"));
        assert!(err("10.0.0.0/8", Some("255.0.0.0")).contains("prefix length and a subnet_mask"));
        assert!(err("2001:db8::", Some("255.0.0.0")).contains("for IPv4"));
    }

    #[test]
    fn the_first_rule_containing_the_address_decides() {
        let config = IpSecurityConfig {
            rules: vec![
                rule("192.0.2.7", None, true).unwrap(),
                rule("192.0.2.0/24", None, false).unwrap(),
            ],
            allow_unlisted: false,
            ..IpSecurityConfig::default()
        };
        assert!(config.allows(ip("192.0.2.7")));
        assert!(!config.allows(ip("192.0.2.8")));
        assert!(!config.allows(ip("198.51.100.1")), "unlisted");
    }

    #[test]
    fn rate_windows_and_concurrency_are_counted_per_client() {
        let clients = Clients::new();
        let limits = DynamicIpSecurityConfig {
            deny_by_concurrent_requests: ConcurrentLimit {
                enabled: true,
                max_concurrent_requests: 2,
            },
            deny_by_request_rate: RateLimit {
                enabled: true,
                max_requests: 3,
                request_interval_ms: 60_000,
            },
            logging_only: false,
            ..DynamicIpSecurityConfig::default()
        };
        let a = (1, ip("192.0.2.1"));
        let b = (1, ip("192.0.2.2"));
        assert_eq!(clients.arrive(a, &limits), (None, Some(a)));
        assert_eq!(clients.arrive(a, &limits), (None, Some(a)));
        // Two in flight: the third is refused and not counted in flight.
        assert_eq!(
            clients.arrive(a, &limits),
            (Some(Refusal::Concurrent), None)
        );
        clients.leave(a);
        // The fourth in the window is over the rate.
        assert_eq!(clients.arrive(a, &limits), (Some(Refusal::Rate), None));
        // Another client, another count; another site, another count.
        assert_eq!(clients.arrive(b, &limits), (None, Some(b)));
        assert_eq!(clients.arrive((2, a.1), &limits), (None, Some((2, a.1))));
    }

    /// A location with a stricter limit counts apart: requests under
    /// another limit (a short interval) neither end its window nor spend
    /// its requests.
    #[test]
    fn each_rate_limit_keeps_its_own_window() {
        let clients = Clients::new();
        let limit = |max_requests, request_interval_ms| DynamicIpSecurityConfig {
            deny_by_request_rate: RateLimit {
                enabled: true,
                max_requests,
                request_interval_ms,
            },
            ..DynamicIpSecurityConfig::default()
        };
        let (site_wide, strict) = (limit(50, 1), limit(3, 60_000));
        let a = (1, ip("192.0.2.1"));
        for round in 0..3 {
            assert_eq!(clients.arrive(a, &strict).0, None, "round {round}");
            clients.leave(a);
            std::thread::sleep(Duration::from_millis(2));
            // The site-wide window (1 ms) has ended: a new one starts.
            assert_eq!(clients.arrive(a, &site_wide).0, None);
            clients.leave(a);
        }
        assert_eq!(clients.arrive(a, &strict).0, Some(Refusal::Rate));
        assert_eq!(clients.arrive(a, &site_wide).0, None);
    }
}
