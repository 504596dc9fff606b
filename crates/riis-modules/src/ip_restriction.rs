//! `IpRestriction`: allows or denies requests by the client's address, and
//! denies clients that send too many requests at once or too fast, as IIS's
//! IP and dynamic IP restrictions do.
//!
//! Registers for:
//!
//! - **BeginRequest** at First priority: a request refused by address or
//!   by rate ends before any module of lower priority sees it (a denied
//!   client costs one lookup). Only the client's request is checked: a
//!   child request comes from the server itself.
//! - **PostBeginRequest**, First: when a BeginRequest module after this one
//!   rewrote the URL, the rules of the new URL's location are checked too,
//!   so a rewrite cannot lead a client past them. The request counters are
//!   not counted twice.
//!
//! A request this module counts as in flight stops counting when its
//! instance is disposed, at the end of the request.
//!
//! Configuration section `ip_security` (IIS's `ipSecurity`), per location:
//! - `rules`: an ordered list of `{ address = "192.0.2.0/24", allowed =
//!   false }` (an address alone, or with a prefix length, IPv4 or IPv6;
//!   IIS's dotted `subnet_mask = "255.255.255.0"` also works for IPv4).
//!   The first rule that contains the address decides. A location's
//!   `rules` replace the list it inherits;
//! - `allow_unlisted` (default true): what happens to an address no rule
//!   contains;
//! - `deny_action`: `"Forbidden"` (default: 403), `"Unauthorized"` (401),
//!   `"NotFound"` (404), or `"AbortRequest"` (the connection is reset, no
//!   response). The substatus says why, as in IIS: .503 for a denied
//!   address, .501 for too many concurrent requests, .502 for too many
//!   requests in the interval;
//! - `proxy_mode` (default false; IIS's `enableProxyMode`): the addresses
//!   in `X-Forwarded-For` are checked too, and a request is denied when any
//!   of them is (with `allow_unlisted = false`, list the proxies as
//!   allowed). Turn it on only behind a proxy that sets the header.
//!
//! Configuration section `dynamic_ip_security` (IIS's `dynamicIpSecurity`),
//! per location, counted per site and client address:
//! - `deny_by_concurrent_requests = { enabled = false,
//!   max_concurrent_requests = 5 }`: a client with this many requests in
//!   flight is refused another;
//! - `deny_by_request_rate = { enabled = false, max_requests = 20,
//!   request_interval_ms = 200 }`: a client's requests are counted in
//!   windows of `request_interval_ms` that start with its first request;
//!   past `max_requests` in one window the rest of that window is refused;
//! - `logging_only` (default false; IIS's `enableLoggingOnlyMode`): what
//!   would be refused is logged and let through.
//!
//! With `proxy_mode`, the dynamic counters go by the last address in
//! `X-Forwarded-For` (the one the nearest proxy saw), the client's own
//! address otherwise. At most 100,000 clients are counted per server; past
//! that, a client not yet counted is let through uncounted (and a warning
//! logged), so the table cannot grow without bound under addresses an
//! attacker chooses.
//!
//! Refusals are logged (info) with the rule and the address. IIS's domain
//! name restrictions (reverse DNS lookups per request) are not done.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riis_pipeline::http::StatusCode;
use riis_pipeline::{
    HttpContext, HttpModule, ModuleError, ModuleRegistration, Priority, RequestNotification,
    RequestNotificationStatus, Section, ServerInfo,
};
use serde::Deserialize;

/// `E_ACCESSDENIED` as a Win32 HRESULT.
const E_ACCESS_DENIED: u32 = 0x8007_0005;
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
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or network"))?;
        let width = if address.is_ipv4() { 32 } else { 128 };
        let mut length = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= width)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {width}"))?,
            None => width,
        };
        if let Some(mask) = &fields.subnet_mask {
            if prefix.is_some() {
                return Err(format!("`{text}` has a prefix length and a subnet_mask"));
            }
            length = mask_length(mask, address)?;
        }
        Ok(Self {
            network: masked(address, length),
            prefix: length,
            allowed: fields.allowed,
        })
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
        address.is_ipv4() == self.network.is_ipv4() && masked(address, self.prefix) == self.network
    }
}

impl IpSecurityConfig {
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
}

/// `deny_by_concurrent_requests`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConcurrentLimit {
    /// Whether the limit applies.
    pub enabled: bool,
    /// Requests one client may have in flight.
    #[serde(deserialize_with = "at_least_one")]
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
    #[serde(deserialize_with = "at_least_one")]
    pub max_requests: u32,
    /// The interval, in milliseconds.
    #[serde(deserialize_with = "at_least_one")]
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

fn at_least_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(serde::de::Error::custom("must be at least 1")),
        n => Ok(n),
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
struct Client {
    in_flight: u32,
    window_start: Instant,
    window_end: Instant,
    in_window: u32,
}

/// The clients counted, by site and address.
#[derive(Default)]
struct Clients {
    table: Mutex<ClientTable>,
}

#[derive(Default)]
struct ClientTable {
    clients: HashMap<(u32, IpAddr), Client>,
    /// The table was full and a client went uncounted (warned once until
    /// there is room again).
    full_warned: bool,
}

impl Clients {
    /// Counts a request of `key` under `limits`; says whether it is to be
    /// refused, and whether it now counts as in flight.
    fn arrive(
        &self,
        key: (u32, IpAddr),
        limits: &DynamicIpSecurityConfig,
    ) -> (Option<Refusal>, bool) {
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.clients.contains_key(&key) && table.clients.len() >= MAX_CLIENTS {
            // Forget clients with nothing in flight and no open window.
            table
                .clients
                .retain(|_, c| c.in_flight > 0 || c.window_end > now);
            if table.clients.len() >= MAX_CLIENTS {
                if !std::mem::replace(&mut table.full_warned, true) {
                    tracing::warn!(
                        "IpRestriction: {MAX_CLIENTS} clients are counted; new ones go uncounted"
                    );
                }
                return (None, false);
            }
            table.full_warned = false;
        }
        let client = table.clients.entry(key).or_insert(Client {
            in_flight: 0,
            window_start: now,
            window_end: now,
            in_window: 0,
        });
        let rate = &limits.deny_by_request_rate;
        let mut refusal = None;
        if rate.enabled {
            if now >= client.window_end {
                client.window_start = now;
                client.in_window = 0;
            }
            client.window_end =
                client.window_start + Duration::from_millis(u64::from(rate.request_interval_ms));
            client.in_window = client.in_window.saturating_add(1);
            if client.in_window > rate.max_requests {
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
        (refusal, counted)
    }

    /// A request counted by [`Clients::arrive`] ended.
    fn leave(&self, key: (u32, IpAddr)) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = table.clients.get_mut(&key) {
            client.in_flight = client.in_flight.saturating_sub(1);
            if client.in_flight == 0 && client.window_end <= Instant::now() {
                table.clients.remove(&key);
            }
        }
    }
}

/// The module instance: one per request.
pub struct IpRestriction {
    config: Section<IpSecurityConfig>,
    dynamic: Section<DynamicIpSecurityConfig>,
    clients: Arc<Clients>,
    /// The client whose in-flight count this request holds.
    in_flight: Option<(u32, IpAddr)>,
    /// `url_changes` when the rules were last checked.
    checked_url: u32,
}

impl IpRestriction {
    fn check(&mut self, ctx: &mut HttpContext, count: bool) -> RequestNotificationStatus {
        if ctx.child_depth() != 0 {
            return RequestNotificationStatus::Continue;
        }
        self.checked_url = ctx.request().url_changes();
        let config = ctx.config(self.config);
        let dynamic = ctx.config(self.dynamic);
        let active = config.is_active();
        let counting = count && dynamic.is_active();
        if !active && !counting {
            return RequestNotificationStatus::Continue;
        }
        let remote = ctx.request().remote_address().ip().to_canonical();
        let forwarded = if config.proxy_mode {
            forwarded_addresses(ctx)
        } else {
            Vec::new()
        };
        let mut refused: Option<(Refusal, IpAddr)> = None;
        if active {
            refused = std::iter::once(remote)
                .chain(forwarded.iter().copied())
                .find(|&a| !config.allows(a))
                .map(|a| (Refusal::Address, a));
        }
        if counting && refused.is_none() {
            let client = forwarded.last().copied().unwrap_or(remote);
            let key = (ctx.site().site_id, client);
            let (refusal, counted) = self.clients.arrive(key, dynamic);
            if counted {
                self.in_flight = Some(key);
            }
            if let Some(refusal) = refusal {
                if dynamic.logging_only {
                    tracing::info!(
                        rule = refusal.rule(),
                        address = %client,
                        url = %ctx.request().raw_url(),
                        "IpRestriction would refuse the request (logging_only)"
                    );
                } else {
                    refused = Some((refusal, client));
                }
            }
        }
        let Some((refusal, address)) = refused else {
            return RequestNotificationStatus::Continue;
        };
        tracing::info!(
            rule = refusal.rule(),
            address = %address,
            url = %ctx.request().raw_url(),
            "IpRestriction refused the request"
        );
        let action = config.deny_action;
        let resp = ctx.response_mut();
        resp.clear_entity();
        let status = match action {
            DenyAction::Unauthorized => StatusCode::UNAUTHORIZED,
            DenyAction::Forbidden => StatusCode::FORBIDDEN,
            DenyAction::NotFound => StatusCode::NOT_FOUND,
            DenyAction::AbortRequest => {
                resp.reset_connection();
                StatusCode::FORBIDDEN
            }
        };
        resp.set_error_status(
            status,
            status.canonical_reason().unwrap_or(""),
            refusal.substatus(),
            E_ACCESS_DENIED,
        );
        RequestNotificationStatus::FinishRequest
    }
}

/// The addresses of `X-Forwarded-For`, in order; entries that are not
/// addresses (`unknown`, obfuscated names) are skipped. An address may
/// carry a port (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn forwarded_addresses(ctx: &HttpContext) -> Vec<IpAddr> {
    ctx.request()
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let item = item.trim();
            item.parse::<IpAddr>()
                .ok()
                .or_else(|| item.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
                .map(|a| a.to_canonical())
        })
        .collect()
}

impl HttpModule for IpRestriction {
    fn on_begin_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        self.check(ctx, true)
    }

    fn on_post_begin_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        if ctx.child_depth() != 0 || ctx.request().url_changes() == self.checked_url {
            return RequestNotificationStatus::Continue;
        }
        // Counted once, in BeginRequest: the new location's address rules
        // only.
        self.check(ctx, self.in_flight.is_none())
    }
}

impl Drop for IpRestriction {
    fn drop(&mut self) {
        if let Some(key) = self.in_flight.take() {
            self.clients.leave(key);
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
    let clients = Arc::new(Clients::default());
    registration.set_request_notifications(
        move || IpRestriction {
            config,
            dynamic,
            clients: clients.clone(),
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
        let clients = Clients::default();
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
        };
        let a = (1, ip("192.0.2.1"));
        let b = (1, ip("192.0.2.2"));
        assert_eq!(clients.arrive(a, &limits), (None, true));
        assert_eq!(clients.arrive(a, &limits), (None, true));
        // Two in flight: the third is refused and not counted in flight.
        assert_eq!(
            clients.arrive(a, &limits),
            (Some(Refusal::Concurrent), false)
        );
        clients.leave(a);
        // The fourth in the window is over the rate.
        assert_eq!(clients.arrive(a, &limits), (Some(Refusal::Rate), false));
        // Another client, another count; another site, another count.
        assert_eq!(clients.arrive(b, &limits), (None, true));
        assert_eq!(clients.arrive((2, a.1), &limits), (None, true));
    }
}
