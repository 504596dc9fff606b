//! The servers a location's requests go to (ARR's server farm, nginx's
//! `upstream`): taken in turn, and one that could not be reached left out
//! for a while.
//!
//! The turn and the marks live in the configuration, made once per
//! configuration load, so choosing a server is two atomic operations and
//! no lock.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use riis_pipeline::http::HeaderValue;

use crate::backend::{clock_ms, Address};

/// One server.
#[derive(Debug)]
pub struct Server {
    /// As configured, for log lines and error pages.
    pub name: String,
    /// Where it listens.
    pub address: Address,
    /// Its `Host` (`host`, or `host:port` when the port is not the
    /// scheme's), for requests that do not keep the client's.
    pub host: HeaderValue,
    /// For an `https://` server: the name its certificate must have (its
    /// host as written), also sent as SNI.
    pub tls: Option<rustls_pki_types::ServerName<'static>>,
    /// Until when it is left out (milliseconds on [`clock_ms`]; 0: it is not).
    down_until: AtomicU64,
}

impl Server {
    /// Parses `http://host[:port]` or `https://host[:port]` (no path: the
    /// request's URL is sent as it is) or `unix:/path/to/socket`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let secure = text
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
        let plain = text
            .get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
        let mut tls = None;
        let (address, host) = if text.starts_with("unix:") {
            let address: Address = text.parse()?;
            (address, HeaderValue::from_static("localhost"))
        } else if secure || plain {
            let rest = &text[if secure { 8 } else { 7 }..];
            let authority = rest.strip_suffix('/').unwrap_or(rest);
            if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
                return Err(format!(
                    "`{text}`: a server is `http://host[:port]` or `https://host[:port]`, without a path (the request's URL is sent as it is)"
                ));
            }
            let parsed: riis_pipeline::http::uri::Authority = authority
                .parse()
                .map_err(|_| format!("`{text}` has no valid host"))?;
            // A port written must be one (`port_u16` has none for 99999).
            let written = parsed.as_str().len() > parsed.host().len();
            let port = match parsed.port_u16() {
                Some(0) | None if written => {
                    return Err(format!("`{text}` has no valid port"));
                }
                port => port.unwrap_or(if secure { 443 } else { 80 }),
            };
            if secure {
                let name = parsed.host().trim_start_matches('[').trim_end_matches(']');
                let name = rustls_pki_types::ServerName::try_from(name.to_owned())
                    .map_err(|e| format!("`{text}`: {e}"))?;
                tls = Some(name);
            }
            let host = if port == if secure { 443 } else { 80 } {
                parsed.host().to_owned()
            } else {
                parsed.as_str().to_owned()
            };
            let address: Address = format!("{}:{port}", parsed.host()).parse()?;
            let host = HeaderValue::from_str(&host).map_err(|e| format!("`{text}`: {e}"))?;
            (address, host)
        } else {
            return Err(format!(
                "`{text}` is neither `http://host[:port]`, `https://host[:port]` nor `unix:/path/to/socket`"
            ));
        };
        Ok(Server {
            name: text.to_owned(),
            address,
            host,
            tls,
            down_until: AtomicU64::new(0),
        })
    }

    /// Leaves the server out for `time` (it could not be reached).
    pub fn mark_down(&self, time: Duration) {
        if !time.is_zero() {
            let until = clock_ms() + time.as_millis() as u64;
            self.down_until.store(until, Ordering::Relaxed);
        }
    }

    /// Takes the server back (it answered).
    pub fn mark_up(&self) {
        if self.down_until.load(Ordering::Relaxed) != 0 {
            self.down_until.store(0, Ordering::Relaxed);
        }
    }

    fn is_down(&self, now: u64) -> bool {
        let until = self.down_until.load(Ordering::Relaxed);
        until != 0 && until > now
    }
}

/// The most servers a section may list.
const MAX_SERVERS: usize = 64;

/// The servers of a `proxy` section.
#[derive(Debug, Default)]
pub struct Farm {
    servers: Vec<Server>,
    /// Whose turn it is.
    next: AtomicUsize,
}

impl Farm {
    /// Whether no server is configured.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The servers in the order this request tries them: from the one whose
    /// turn it is, round the list, those left out last (tried when all
    /// are).
    pub fn order(&self) -> impl Iterator<Item = &Server> {
        let count = self.servers.len();
        // Who is down is read once, so that a server marked down by this
        // request is not tried again in the second round.
        let now = clock_ms();
        let down = self
            .servers
            .iter()
            .enumerate()
            .filter(|(_, server)| server.is_down(now))
            .fold(0u64, |bits, (i, _)| bits | 1 << i);
        let mut first = 0;
        if count > 1 {
            first = self.next.fetch_add(1, Ordering::Relaxed) % count;
            // A turn that falls on a server left out passes to the next
            // turn, so the others share its requests evenly (rather than
            // the one after it taking them all).
            let mut passes = 0;
            while down >> first & 1 == 1 && passes < count {
                first = self.next.fetch_add(1, Ordering::Relaxed) % count;
                passes += 1;
            }
        }
        let round = move |want_down: bool| {
            (0..count)
                .map(move |i| (first + i) % count)
                .filter(move |&i| (down >> i & 1 == 1) == want_down)
                .map(move |i| &self.servers[i])
        };
        round(false).chain(round(true))
    }
}

impl<'de> serde::Deserialize<'de> for Farm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        if list.len() > MAX_SERVERS {
            return Err(serde::de::Error::custom(format!(
                "at most {MAX_SERVERS} servers"
            )));
        }
        let servers = list
            .iter()
            .map(|text| Server::parse(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(serde::de::Error::custom)?;
        Ok(Farm {
            servers,
            next: AtomicUsize::new(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn farm(list: &[&str]) -> Farm {
        Farm {
            servers: list.iter().map(|s| Server::parse(s).unwrap()).collect(),
            next: AtomicUsize::new(0),
        }
    }

    fn names(farm: &Farm) -> Vec<&str> {
        farm.order().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn servers_are_parsed_with_their_host_header() {
        let s = Server::parse("http://app.internal:8080").unwrap();
        assert_eq!(s.address, Address::Tcp("app.internal:8080".into()));
        assert_eq!(s.host, "app.internal:8080");
        let s = Server::parse("http://app/").unwrap();
        assert_eq!(s.address, Address::Tcp("app:80".into()));
        assert_eq!(s.host, "app");
        let s = Server::parse("http://[::1]:3000").unwrap();
        assert_eq!(s.address, Address::Tcp("[::1]:3000".into()));
        let s = Server::parse("unix:/run/app.sock").unwrap();
        assert_eq!(s.address, Address::Unix("/run/app.sock".into()));
        assert_eq!(s.host, "localhost");
        assert!(s.tls.is_none());
        let s = Server::parse("https://api.example.test").unwrap();
        assert_eq!(s.address, Address::Tcp("api.example.test:443".into()));
        assert_eq!(s.host, "api.example.test");
        assert_eq!(
            s.tls.as_ref().map(|n| n.to_str().into_owned()),
            Some("api.example.test".to_owned())
        );
        let s = Server::parse("HTTPS://[::1]:8443").unwrap();
        assert_eq!(s.address, Address::Tcp("[::1]:8443".into()));
        assert_eq!(s.host, "[::1]:8443");
        assert!(s.tls.is_some());
        for bad in [
            "",
            "app:3000",
            "http://",
            "http://app/api",
            "http://app?x",
            "http://user@app",
            "http://app:0",
            "http://app:99999",
            "https://app/api",
            "ftp://app",
            "unix:relative.sock",
        ] {
            assert!(Server::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn servers_take_turns_and_one_left_out_comes_last() {
        let f = farm(&["http://a", "http://b", "http://c"]);
        assert_eq!(names(&f), ["http://a", "http://b", "http://c"]);
        assert_eq!(names(&f), ["http://b", "http://c", "http://a"]);
        f.servers[2].mark_down(Duration::from_secs(60));
        // c's turns pass on: a and b share them evenly.
        assert_eq!(names(&f), ["http://a", "http://b", "http://c"]);
        assert_eq!(names(&f), ["http://b", "http://a", "http://c"]);
        assert_eq!(names(&f), ["http://a", "http://b", "http://c"]);
        assert_eq!(names(&f), ["http://b", "http://a", "http://c"]);
        f.servers[2].mark_up();
        // All down: all are still tried, in turn.
        for s in &f.servers {
            s.mark_down(Duration::from_secs(60));
        }
        assert_eq!(names(&f), ["http://c", "http://a", "http://b"]);
        // One marked down while its request goes on is not tried twice.
        let f = farm(&["http://a"]);
        let mut order = f.order();
        order.next().unwrap().mark_down(Duration::from_secs(60));
        assert!(order.next().is_none());
    }
}
