//! The PROXY protocol (HAProxy's, versions 1 and 2) on listening addresses.
//!
//! A load balancer that passes TCP connections on as they are (AWS's
//! Network Load Balancer, HAProxy's `send-proxy`, Traefik, Azure Private
//! Link) hides the client's address: riis would see the balancer's. With
//! the PROXY protocol the balancer writes the client's address in a short
//! header before the connection's first byte, and riis takes it as the
//! connection's remote address: `REMOTE_ADDR`, the access log's `c-ip`,
//! IpRestriction, `X-Forwarded-For` to a backend, connection limits per
//! client. nginx's `listen … proxy_protocol` with `real_ip_header
//! proxy_protocol`, Caddy's `proxy_protocol` listener wrapper.
//!
//! The header comes before TLS, so it is read here, by the connection
//! layer, before the handshake and before HTTP; the pipeline never sees
//! it. Parsing is the `ppp` crate's.

use riis_modules::forwarded_for::TrustedNetwork;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// `[proxy_protocol]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyProtocolSettings {
    /// Listening addresses whose connections start with a PROXY header,
    /// written as bindings are (`*:80`, `https://[::]:443`), without a
    /// host name.
    pub listen: Vec<String>,
    /// The peers allowed to connect to those addresses: addresses or
    /// networks (`10.0.0.0/8`). Empty: any peer.
    pub trusted: Vec<String>,
}

/// `[proxy_protocol]`, checked: which listening addresses expect the
/// header, and from whom.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxyProtocol {
    /// Listening addresses that expect the header.
    listen: Vec<ProxiedAddress>,
    /// Peers allowed to connect to them; empty for any.
    trusted: Vec<TrustedNetwork>,
}

/// One entry of `listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxiedAddress {
    /// The address as configured (the routing key of the connections that
    /// arrive there).
    pub addr: SocketAddr,
    /// The scheme written before it, if any: `true` for `https://`
    /// (checked against the bindings).
    pub scheme: Option<bool>,
}

impl ProxyProtocol {
    /// Checks `settings`; an error names the key (`listen[1]`) and why.
    pub fn from_settings(settings: &ProxyProtocolSettings) -> Result<Self, (String, String)> {
        let mut listen: Vec<ProxiedAddress> = Vec::with_capacity(settings.listen.len());
        for (i, text) in settings.listen.iter().enumerate() {
            let key = format!("listen[{i}]");
            let binding = crate::config::Binding::parse(text).map_err(|m| (key.clone(), m))?;
            if binding.host.is_some() {
                return Err((
                    key,
                    format!(
                        "`{text}`: the PROXY protocol is set for an address and port, \
                         not a host name (leave out `:host`)"
                    ),
                ));
            }
            if listen.iter().any(|l| l.addr == binding.addr) {
                return Err((key, format!("`{text}` is listed twice")));
            }
            let written = text.trim();
            listen.push(ProxiedAddress {
                addr: binding.addr,
                scheme: (written.starts_with("https://") || written.starts_with("http://"))
                    .then_some(binding.tls),
            });
        }
        let trusted = settings
            .trusted
            .iter()
            .enumerate()
            .map(|(i, text)| {
                TrustedNetwork::try_from(text.clone()).map_err(|m| (format!("trusted[{i}]"), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if listen.is_empty() && !trusted.is_empty() {
            return Err((
                "trusted".to_owned(),
                "`trusted` says who may send the PROXY protocol to the addresses of \
                 `listen`, and `listen` names none"
                    .to_owned(),
            ));
        }
        Ok(Self { listen, trusted })
    }

    /// Whether any listening address expects the header.
    pub fn is_enabled(&self) -> bool {
        !self.listen.is_empty()
    }

    /// The listening addresses that expect the header, as configured.
    pub fn listen(&self) -> &[ProxiedAddress] {
        &self.listen
    }

    /// Whether connections that arrive at `listener` (a configured
    /// listening address) start with the header.
    pub fn expects_header(&self, listener: SocketAddr) -> bool {
        self.listen.iter().any(|l| l.addr == listener)
    }

    /// Whether `peer` may connect to an address that expects the header.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        // A dual-stack socket shows an IPv4 peer as `::ffff:a.b.c.d`:
        // `contains` compares it as IPv4.
        self.trusted.is_empty() || self.trusted.iter().any(|n| n.contains(peer))
    }

    /// The same settings with `listen` moved to `addr` (`--listen`).
    pub(crate) fn moved_to(&self, addr: SocketAddr) -> Self {
        Self {
            listen: vec![ProxiedAddress { addr, scheme: None }],
            trusted: self.trusted.clone(),
        }
    }
}

/// What a PROXY header said about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Proxied {
    /// The client's address; `None` when the header names none (version
    /// 2's `LOCAL`, a balancer's own health check; version 1's `UNKNOWN`; a
    /// family other than IPv4 and IPv6): the connection's own peer is then
    /// the client, as the protocol says.
    pub client: Option<SocketAddr>,
    /// The client connected to the balancer over TLS, which ended there
    /// (version 2's `PP2_TYPE_SSL` with `PP2_CLIENT_SSL`, HAProxy's
    /// `send-proxy-v2-ssl`): its requests count as HTTPS.
    pub tls_ended_at_balancer: bool,
}

/// Why a connection's PROXY header was refused.
#[derive(Debug)]
pub enum HeaderError {
    /// The connection does not start with `PROXY ` or version 2's
    /// signature.
    Missing,
    /// It starts as a header, but is not a valid one.
    Malformed(String),
    /// The peer closed (or the read failed) before the header was whole.
    Io(std::io::Error),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => f.write_str("the connection does not start with a PROXY header"),
            Self::Malformed(why) => write!(f, "broken PROXY header: {why}"),
            Self::Io(e) => write!(f, "reading the PROXY header: {e}"),
        }
    }
}

/// The longest version 1 header, `\r\n` included (the protocol's limit).
const V1_MAX_LENGTH: usize = 107;

/// Version 2's fixed part: the signature, version and command, family and
/// protocol, and the length of what follows.
const V2_FIXED_LENGTH: usize = 16;

/// Reads the PROXY header at the start of `stream`, and nothing after it:
/// the TLS handshake or the HTTP request that follows is read by who
/// comes next, and says what it names (see [`Proxied`]).
///
/// Each round peeks at what has arrived and reads only the bytes that
/// belong to the header, so a header cut across segments is awaited
/// without spinning; once version 2's length is known, the rest is read
/// at once. A caller bounds it with a timeout.
pub async fn read_header(stream: &mut TcpStream) -> Result<Proxied, HeaderError> {
    let v2_signature: &[u8] = ppp::v2::PROTOCOL_PREFIX;
    let v1_prefix: &[u8] = b"PROXY ";
    // The header's bytes read so far.
    let mut header: Vec<u8> = Vec::with_capacity(V1_MAX_LENGTH);
    let mut seen = [0u8; V1_MAX_LENGTH];
    loop {
        let n = stream.peek(&mut seen).await.map_err(HeaderError::Io)?;
        if n == 0 {
            return Err(HeaderError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        // The start of the connection as far as it has come.
        let mut start = [0u8; V2_FIXED_LENGTH];
        let known = (header.len() + n).min(V2_FIXED_LENGTH);
        for (i, b) in header.iter().chain(&seen[..n]).take(known).enumerate() {
            start[i] = *b;
        }
        let begins_with = |prefix: &[u8]| {
            let common = known.min(prefix.len());
            start[..common] == prefix[..common]
        };
        if begins_with(v2_signature) {
            if known < V2_FIXED_LENGTH {
                // All of it is header: the fixed part alone is longer.
                stream
                    .read_exact(&mut seen[..n])
                    .await
                    .map_err(HeaderError::Io)?;
                header.extend_from_slice(&seen[..n]);
                continue;
            }
            // Every byte up to the length given is the header's.
            let length = V2_FIXED_LENGTH + usize::from(u16::from_be_bytes([start[14], start[15]]));
            let read = header.len();
            header.resize(length, 0);
            stream
                .read_exact(&mut header[read..])
                .await
                .map_err(HeaderError::Io)?;
            return v2_client(&header);
        }
        if !begins_with(v1_prefix) {
            return Err(HeaderError::Missing);
        }
        let (take, whole) = match memchr::memchr(b'\n', &seen[..n]) {
            Some(end) => (end + 1, true),
            None if header.len() + n >= V1_MAX_LENGTH => {
                return Err(HeaderError::Malformed(format!(
                    "no end of line in the first {V1_MAX_LENGTH} bytes"
                )))
            }
            None => (n, false),
        };
        stream
            .read_exact(&mut seen[..take])
            .await
            .map_err(HeaderError::Io)?;
        header.extend_from_slice(&seen[..take]);
        if whole {
            return v1_client(&header);
        }
    }
}

/// What a whole version 1 header (`PROXY TCP4 … \r\n`) names.
fn v1_client(header: &[u8]) -> Result<Proxied, HeaderError> {
    use ppp::v1::Addresses;
    let parsed = ppp::v1::Header::try_from(header).map_err(|e| {
        HeaderError::Malformed(format!("{e} in {:?}", String::from_utf8_lossy(header)))
    })?;
    let client = match parsed.addresses {
        Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        Addresses::Tcp6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        Addresses::Unknown => None,
    };
    Ok(Proxied {
        client,
        tls_ended_at_balancer: false,
    })
}

/// Version 2's command `LOCAL`, with the version's nibble.
const V2_LOCAL: u8 = 0x20;

/// `PP2_CLIENT_SSL`, in the first byte of a `PP2_TYPE_SSL` value.
const PP2_CLIENT_SSL: u8 = 0x01;

/// What a whole version 2 header names.
fn v2_client(header: &[u8]) -> Result<Proxied, HeaderError> {
    use ppp::v2::{Addresses, Type};
    // `LOCAL` is accepted whatever family and addresses follow, as the
    // protocol asks (the receiver uses the real connection endpoints and
    // discards the block, family included); `ppp` would first check the
    // addresses' length against the family.
    if header[ppp::v2::PROTOCOL_PREFIX.len()] == V2_LOCAL {
        return Ok(Proxied::default());
    }
    let parsed =
        ppp::v2::Header::try_from(header).map_err(|e| HeaderError::Malformed(e.to_string()))?;
    let client = match parsed.addresses {
        Addresses::IPv4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        Addresses::IPv6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        Addresses::Unspecified | Addresses::Unix(_) => None,
    };
    // A header that cannot be read whole is refused (the specification:
    // a receiver must not accept one it cannot fully parse, as HAProxy
    // refuses it), not read in part: a truncated `PP2_TYPE_SSL` is no
    // statement that TLS ended at the balancer.
    let mut tls_ended_at_balancer = false;
    for tlv in parsed.tlvs() {
        let tlv = tlv.map_err(|e| HeaderError::Malformed(format!("a TLV: {e}")))?;
        if tlv.kind == u8::from(Type::SSL) {
            // `client` (1 byte) and `verify` (4 bytes), then sub-TLVs.
            if tlv.value.len() < 5 {
                return Err(HeaderError::Malformed(
                    "a PP2_TYPE_SSL value shorter than its client and verify fields".into(),
                ));
            }
            tls_ended_at_balancer |= tlv.value[0] & PP2_CLIENT_SSL != 0;
        }
    }
    Ok(Proxied {
        client,
        tls_ended_at_balancer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    fn settings(listen: &[&str], trusted: &[&str]) -> ProxyProtocolSettings {
        ProxyProtocolSettings {
            listen: listen.iter().map(|s| s.to_string()).collect(),
            trusted: trusted.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn settings_are_checked() {
        let p = ProxyProtocol::from_settings(&settings(
            &["*:80", "https://[::]:443"],
            &["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "172.16.5.9/12"],
        ))
        .unwrap();
        assert!(p.expects_header("0.0.0.0:80".parse().unwrap()));
        assert!(p.expects_header("[::]:443".parse().unwrap()));
        assert!(!p.expects_header("0.0.0.0:443".parse().unwrap()));
        assert!(p.trusts("10.1.2.3".parse().unwrap()));
        assert!(p.trusts("::ffff:10.1.2.3".parse().unwrap()));
        assert!(p.trusts("192.0.2.7".parse().unwrap()));
        assert!(!p.trusts("192.0.2.8".parse().unwrap()));
        assert!(p.trusts("2001:db8::1".parse().unwrap()));
        assert!(p.trusts("172.31.0.1".parse().unwrap()));
        assert!(ProxyProtocol::default().trusts("203.0.113.1".parse().unwrap()));

        let err = |listen: &[&str], trusted: &[&str]| {
            ProxyProtocol::from_settings(&settings(listen, trusted)).unwrap_err()
        };
        assert_eq!(err(&["*:80:example.com"], &[]).0, "listen[0]");
        assert_eq!(err(&["*:80", "0.0.0.0:80"], &[]).0, "listen[1]");
        assert_eq!(err(&["nowhere"], &[]).0, "listen[0]");
        let (key, message) = err(&["*:80"], &["10.0.0.0/40"]);
        assert_eq!(key, "trusted[0]");
        assert!(message.contains("10.0.0.0/40"), "{message}");
        assert_eq!(err(&["*:80"], &["10.0.0.1", "lb.internal"]).0, "trusted[1]");
        assert_eq!(err(&[], &["10.0.0.1"]).0, "trusted");
        // IPv4-mapped networks are the IPv4 ones.
        let p =
            ProxyProtocol::from_settings(&settings(&["*:80"], &["::ffff:127.0.0.0/104"])).unwrap();
        assert!(p.trusts("127.0.0.1".parse().unwrap()));
        assert!(p.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!p.trusts("10.0.0.1".parse().unwrap()));
    }

    /// A connected pair: what the test writes on the first arrives at the
    /// second.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    /// Writes `parts` (with a pause between them) and what follows the
    /// header, reads the header, and returns it with the bytes left.
    async fn read_after(parts: &[&[u8]]) -> (Result<Option<SocketAddr>, HeaderError>, Vec<u8>) {
        let (result, rest) = read_proxied_after(parts).await;
        (result.map(|p| p.client), rest)
    }

    /// [`read_after`], with all the header said.
    async fn read_proxied_after(parts: &[&[u8]]) -> (Result<Proxied, HeaderError>, Vec<u8>) {
        let (mut client, mut server) = pair().await;
        for part in parts {
            client.write_all(part).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        let result = read_header(&mut server).await;
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        (result, rest)
    }

    #[tokio::test]
    async fn version_1_gives_the_client_and_leaves_the_request() {
        let (client, rest) = read_after(&[b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 80\r\n"]).await;
        assert_eq!(client.unwrap(), Some("203.0.113.7:51000".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");

        let (client, _) = read_after(&[b"PROXY TCP6 2001:db8::7 2001:db8::1 4711 443\r\n"]).await;
        assert_eq!(client.unwrap(), Some("[2001:db8::7]:4711".parse().unwrap()));

        let (client, rest) = read_after(&[b"PROXY UNKNOWN\r\n"]).await;
        assert_eq!(client.unwrap(), None);
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");

        // A header that comes in two writes.
        let (client, rest) =
            read_after(&[b"PROXY TCP4 203.0.11", b"3.7 192.0.2.1 51000 80\r\n"]).await;
        assert_eq!(client.unwrap(), Some("203.0.113.7:51000".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn version_2_gives_the_client_and_leaves_the_request() {
        use ppp::v2::{Builder, Command, Protocol, Type, Version};
        let addresses: ppp::v2::Addresses = (
            "203.0.113.7:51000".parse::<SocketAddr>().unwrap(),
            "192.0.2.1:443".parse::<SocketAddr>().unwrap(),
        )
            .into();
        let header =
            Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses)
                .write_tlv(Type::UniqueId, b"lb-connection-42")
                .unwrap()
                .build()
                .unwrap();
        let (client, rest) = read_after(&[&header]).await;
        assert_eq!(client.unwrap(), Some("203.0.113.7:51000".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");

        // In two writes, cut inside the fixed part.
        let (client, rest) = read_after(&[&header[..10], &header[10..]]).await;
        assert_eq!(client.unwrap(), Some("203.0.113.7:51000".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");

        // LOCAL: the balancer's own connection.
        let local = Builder::with_addresses(
            Version::Two | Command::Local,
            Protocol::Unspecified,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        let (client, rest) = read_after(&[&local]).await;
        assert_eq!(client.unwrap(), None);
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        // LOCAL with a family, and addresses too short for it: accepted,
        // the block discarded.
        for family in [0x11u8, 0x21, 0x31, 0x40] {
            let mut odd = ppp::v2::PROTOCOL_PREFIX.to_vec();
            odd.extend_from_slice(&[0x20, family, 0, 2, 9, 9]);
            let (client, rest) = read_after(&[&odd]).await;
            assert_eq!(client.unwrap(), None, "{family:#x}");
            assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        }

        // TLS ended at the balancer (`send-proxy-v2-ssl`): the SSL TLV
        // with PP2_CLIENT_SSL; without that bit, the client used none.
        for (client_bits, ended) in [(0x01u8, true), (0x00, false)] {
            let header =
                Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses)
                    .write_tlv(Type::SSL, &[client_bits, 0, 0, 0, 0])
                    .unwrap()
                    .build()
                    .unwrap();
            let (proxied, _) = read_proxied_after(&[&header]).await;
            let proxied = proxied.unwrap();
            assert_eq!(proxied.tls_ended_at_balancer, ended);
            assert_eq!(proxied.client, Some("203.0.113.7:51000".parse().unwrap()));
        }

        // A large TLV section, cut in pieces.
        let big =
            Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses)
                .write_tlv(Type::NoOp, &[7u8; 60_000])
                .unwrap()
                .build()
                .unwrap();
        let (client, rest) = read_after(&[&big[..5], &big[5..1000], &big[1000..]]).await;
        assert_eq!(client.unwrap(), Some("203.0.113.7:51000".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn what_is_not_a_header_is_refused() {
        let (result, _) = read_after(&[]).await;
        assert!(matches!(result, Err(HeaderError::Missing)), "{result:?}");
        let (result, _) = read_after(&[b"PROXY TCP4 203.0.113.7 nowhere 1 2\r\n"]).await;
        assert!(
            matches!(result, Err(HeaderError::Malformed(_))),
            "{result:?}"
        );
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        let (result, _) = read_after(&[&long]).await;
        assert!(
            matches!(result, Err(HeaderError::Malformed(_))),
            "{result:?}"
        );
        // Version 2 whose TLVs cannot be read whole: a PP2_TYPE_SSL of one
        // byte, and a TLV whose length runs past the header. Addresses:
        // TCP over IPv4, 12 bytes, then the TLV bytes.
        for tlv in [&[0x20u8, 0, 1, 0x01][..], &[0x04, 0x01, 0xf4, 0]] {
            let mut bad = ppp::v2::PROTOCOL_PREFIX.to_vec();
            let len = 12 + tlv.len();
            bad.extend_from_slice(&[0x21, 0x11, 0, len as u8]);
            bad.extend_from_slice(&[203, 0, 113, 7, 127, 0, 0, 1, 0xc7, 0x38, 0, 80]);
            bad.extend_from_slice(tlv);
            let (result, _) = read_after(&[&bad]).await;
            assert!(
                matches!(result, Err(HeaderError::Malformed(_))),
                "{tlv:?}: {result:?}"
            );
        }
        // Version 2's signature with another version.
        let mut v3 = ppp::v2::PROTOCOL_PREFIX.to_vec();
        v3.extend_from_slice(&[0x31, 0x11, 0, 12]);
        v3.extend_from_slice(&[0; 12]);
        let (result, _) = read_after(&[&v3]).await;
        assert!(
            matches!(result, Err(HeaderError::Malformed(_))),
            "{result:?}"
        );
        // Closed inside the header.
        let (mut client, mut server) = pair().await;
        client.write_all(b"PROXY TCP4 203.0").await.unwrap();
        drop(client);
        let result = read_header(&mut server).await;
        assert!(matches!(result, Err(HeaderError::Io(_))), "{result:?}");
    }
}
