//! `ForwardedFor`: takes the client's address from `X-Forwarded-For` (or
//! another header a proxy sets, `X-Real-IP`, `CF-Connecting-IP`) when the
//! request comes from a proxy riis trusts, as nginx's realip module and
//! Apache's mod_remoteip do. Behind a reverse proxy or an HTTP load
//! balancer every request otherwise comes from the proxy's address: the
//! access log's `c-ip`, `REMOTE_ADDR` for FastCGI and CGI applications,
//! IpRestriction's rules and rates, and CustomError's "local client" test
//! (a proxy on the same machine made every client local and shown
//! detailed errors) would all see the proxy.
//!
//! Registers for the global **PreBeginRequest** notification, which comes
//! before BeginRequest: every request module sees the client, whatever
//! its place in the module list (RequestFiltering and IpRestriction, at
//! BeginRequest's First priority, included; a refusal of theirs must show
//! the client its custom error page, not the proxy's detailed one). The
//! location the request arrived at decides, as for the other
//! PreBeginRequest work: a rewrite into another location does not judge
//! the proxy again. Child requests keep the address their parent found.
//!
//! The header is read only when the connection's peer is a trusted proxy,
//! and from the right: its last entry is the one the nearest proxy wrote,
//! and anything to its left is what the client or proxies further away
//! said. Entries are separated by commas or spaces, and empty ones are
//! skipped, as nginx reads them. The last entry becomes the client; with
//! `recursive`, entries that are trusted proxies themselves are passed
//! over, leftwards, to the first that is not (nginx's
//! `real_ip_recursive`). An entry that is not an address ends the walk:
//! the address before it, or the peer when it is the last entry, stays.
//!
//! The connection keeps its own peer: `limits.max_connections_per_client`
//! counts the proxy. A load balancer that passes TCP connections on
//! names the client with the PROXY protocol instead (`[proxy_protocol]`),
//! for the connection as a whole.
//!
//! Configuration section `forwarded_for` (server, site or location):
//! - `trusted_proxies` (default `["127.0.0.0/8", "::1"]`): addresses
//!   (`192.0.2.7`) and networks (`10.0.0.0/8`) whose header is believed;
//! - `header` (default `"X-Forwarded-For"`): the header that names the
//!   client;
//! - `recursive` (default false): pass over trusted entries.

use std::net::{IpAddr, SocketAddr};

use crate::ip_restriction::{IpNetwork, NetworkError};
use riis_pipeline::http::HeaderName;
use riis_pipeline::{
    GlobalModule, GlobalNotification, GlobalNotificationStatus, HttpContext, ModuleError,
    ModuleRegistration, Section, ServerInfo,
};
use serde::Deserialize;

/// The `forwarded_for` configuration section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardedForConfig {
    /// Proxies whose header is believed.
    pub trusted_proxies: Vec<TrustedNetwork>,
    /// The header that names the client.
    pub header: ForwardedHeader,
    /// Pass over entries that are trusted proxies themselves.
    pub recursive: bool,
}

impl Default for ForwardedForConfig {
    fn default() -> Self {
        // A proxy on the same machine, as ASP.NET Core's forwarded headers
        // trust by default: nothing further without saying so.
        Self {
            trusted_proxies: vec![
                TrustedNetwork(IpNetwork::new(IpAddr::from([127, 0, 0, 0]), 8)),
                TrustedNetwork(IpNetwork::new(std::net::Ipv6Addr::LOCALHOST.into(), 128)),
            ],
            header: ForwardedHeader(HeaderName::from_static("x-forwarded-for")),
            recursive: false,
        }
    }
}

impl ForwardedForConfig {
    fn trusts(&self, address: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(address))
    }
}

/// An address (`192.0.2.7`) or network (`10.0.0.0/8`) of proxies riis
/// believes: ForwardedFor's `trusted_proxies`, `[proxy_protocol]`'s
/// `trusted`. IPv4-mapped IPv6 (`::ffff:10.0.0.0/104`) is taken as the
/// IPv4 it maps, as a dual-stack socket's IPv4 peers are compared.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct TrustedNetwork(IpNetwork);

impl TrustedNetwork {
    /// Whether `address` is in the network.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.contains(address.to_canonical())
    }
}

impl TryFrom<String> for TrustedNetwork {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        IpNetwork::parse(&text).map(Self).map_err(|e| match e {
            NetworkError::MappedPrefix => e.message(&text),
            _ => format!("`{text}` is not an IP address or network (`10.0.0.0/8`)"),
        })
    }
}

/// The header `header` names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ForwardedHeader(HeaderName);

impl TryFrom<String> for ForwardedHeader {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let name = HeaderName::from_bytes(text.trim().as_bytes())
            .map_err(|_| format!("`{text}` is not a header name"))?;
        if name == "forwarded" {
            // `for=192.0.2.7;proto=https`: no entry of it is an address.
            return Err(
                "RFC 7239's `Forwarded` header has a syntax of its own, which is not read \
                 (name `X-Forwarded-For`, or the header your proxy sets the address in)"
                    .to_owned(),
            );
        }
        Ok(Self(name))
    }
}

/// The module: a global one, for PreBeginRequest.
pub struct ForwardedFor {
    config: Section<ForwardedForConfig>,
}

impl GlobalModule for ForwardedFor {
    fn on_global_pre_begin_request(&self, ctx: &mut HttpContext) -> GlobalNotificationStatus {
        // A child request starts with the address its parent found; read
        // again, the header would be judged against the client.
        if ctx.child_depth() > 0 {
            return GlobalNotificationStatus::Continue;
        }
        let config = ctx.config(self.config);
        if !config.trusts(ctx.request().peer_address().ip()) {
            return GlobalNotificationStatus::Continue;
        }
        if let Some(client) = forwarded_client(ctx, config) {
            ctx.request_mut().set_remote_address(client);
        }
        GlobalNotificationStatus::Continue
    }
}

/// The client the header names, read from the right (see the module's
/// documentation); `None` when its last entry is not an address, or there
/// is no header. Nothing is collected: a header of many entries costs a
/// walk, not memory.
fn forwarded_client(ctx: &HttpContext, config: &ForwardedForConfig) -> Option<SocketAddr> {
    let entries = ctx
        .request()
        .headers()
        .get_all(&config.header.0)
        .iter()
        .rev()
        .flat_map(|v| crate::forwarded_entries(v.as_bytes()).rev());
    let mut client = None;
    for entry in entries {
        let Some((address, port)) = crate::forwarded_entry(entry) else {
            break;
        };
        client = Some(SocketAddr::new(address, port.unwrap_or(0)));
        if !config.recursive || !config.trusts(address) {
            break;
        }
    }
    client
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<ForwardedForConfig>("forwarded_for")?;
    registration.set_global_notifications(
        ForwardedFor { config },
        GlobalNotification::PreBeginRequest.into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_networks_parse_as_written_and_mapped() {
        let net = |t: &str| TrustedNetwork::try_from(t.to_owned());
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert!(net("10.0.0.0/8").unwrap().contains(ip("10.1.2.3")));
        assert!(net("10.0.0.1/8").unwrap().contains(ip("10.200.0.1")));
        assert!(net("192.0.2.7").unwrap().contains(ip("::ffff:192.0.2.7")));
        assert!(!net("192.0.2.7").unwrap().contains(ip("192.0.2.8")));
        let mapped = net("::ffff:127.0.0.0/104").unwrap();
        assert!(mapped.contains(ip("127.0.0.1")));
        assert!(mapped.contains(ip("::ffff:127.0.0.1")));
        assert!(net("::ffff:10.0.0.1").unwrap().contains(ip("10.0.0.1")));
        assert!(net("2001:db8::/32").unwrap().contains(ip("2001:db8::1")));
        assert!(net("::ffff:0.0.0.0/95").is_err());
        assert!(net("10.0.0.0/33").is_err());
        assert!(net("proxy.internal").is_err());
    }
}
