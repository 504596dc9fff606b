//! The servers a location's requests go to (ARR's server farm, nginx's
//! `upstream`): chosen by the section's `balance`, in proportion to their
//! weights, and one that could not be reached left out for a while.
//!
//! The turns, the counts and the marks live in the configuration, made once
//! per configuration load, so choosing a server takes a few atomic
//! operations and no lock. Weighted turns follow nginx's smooth weighted
//! round robin (weights 5, 1, 1 give `a a b a c a a`, not `a a a a a b c`),
//! worked out once at load.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Deserialize;

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
    /// Its share of the requests, against the others' (`weight=N`).
    pub weight: u32,
    /// What the affinity cookie says for it: a hash of its name, the same
    /// for every worker and every start.
    pub affinity: String,
    /// Until when it is left out (milliseconds on [`clock_ms`]; 0: it is not).
    down_until: AtomicU64,
    /// Requests under way on it (for `least_requests`).
    in_flight: AtomicUsize,
    /// Its last health check failed (`health_check`).
    unhealthy: std::sync::atomic::AtomicBool,
    /// Where its kept connections are, made at its first request (its
    /// section's `ca_file` is part of it).
    pub(super) route: std::sync::OnceLock<super::exchange::Route>,
}

/// A request under way on a server, counted until dropped.
pub struct InFlight<'a>(&'a Server);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The affinity cookie's value for a server written `text`.
fn affinity_of(text: &str) -> String {
    use std::hash::{Hash, Hasher};
    // Fixed keys: the same value from every worker and every start.
    let mut hasher = std::hash::DefaultHasher::new();
    text.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// The heaviest `weight=N`.
const MAX_WEIGHT: u32 = 100;

impl Server {
    /// Parses `http://host[:port]` or `https://host[:port]` (no path: the
    /// request's URL is sent as it is) or `unix:/path/to/socket`, then
    /// ` weight=N` if given.
    pub(crate) fn parse(written: &str) -> Result<Self, String> {
        let written = written.trim();
        // ` weight=N` at the end only: a Unix socket's path may hold spaces.
        let (text, weight) = match written.rsplit_once(char::is_whitespace) {
            Some((text, last)) if last.starts_with("weight=") => {
                let n = &last["weight=".len()..];
                let weight = n
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| n.parse::<u32>().ok())
                    .flatten()
                    .filter(|n| (1..=MAX_WEIGHT).contains(n))
                    .ok_or_else(|| {
                        format!("`{written}`: `weight=N` takes N from 1 to {MAX_WEIGHT}")
                    })?;
                (text.trim_end(), weight)
            }
            _ => (written, 1),
        };
        if text.contains(" weight=") {
            return Err(format!("`{written}`: one `weight=N`, after the server"));
        }
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
            weight,
            affinity: affinity_of(text),
            down_until: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            unhealthy: std::sync::atomic::AtomicBool::new(false),
            route: std::sync::OnceLock::new(),
        })
    }

    /// Counts a request under way on the server until the guard drops.
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
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
        (until != 0 && until > now) || self.unhealthy.load(Ordering::Relaxed)
    }

    /// Records a health check's result; `true` when it changed.
    pub(super) fn set_healthy(&self, healthy: bool) -> bool {
        self.unhealthy.swap(!healthy, Ordering::Relaxed) == healthy
    }
}

/// The most servers a section may list.
const MAX_SERVERS: usize = 64;

/// How a request's server is chosen (`balance`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// In turn, weighted (ARR's weighted round robin, nginx's default).
    #[default]
    RoundRobin,
    /// The one with the fewest requests under way for its weight (ARR's
    /// least requests, nginx's `least_conn`); ties by weighted turns.
    LeastRequests,
    /// By the client's address, so a client keeps its server while that
    /// server is up (nginx's `ip_hash`, ARR's server variable hash on
    /// `REMOTE_ADDR`).
    ClientAddress,
}

/// The servers of a `proxy` section.
#[derive(Debug, Default)]
pub struct Farm {
    servers: Vec<Server>,
    /// The servers' turns, by index: each as often as its weight, spread.
    turns: Box<[u8]>,
    /// Whose turn it is.
    next: AtomicUsize,
    /// Its health checks were started.
    health_started: std::sync::atomic::AtomicBool,
}

/// The turns of servers of `weights`: smooth weighted round robin (each
/// turn, every server gains its weight, and the one with most goes and
/// loses the total), one full cycle.
fn smooth_turns(weights: &[u32]) -> Box<[u8]> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut turns = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        turns.push(best as u8);
    }
    turns.into_boxed_slice()
}

impl Farm {
    /// The servers, as listed.
    pub(super) fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// `true` once: the first request of the section starts its health
    /// checks.
    pub(super) fn begin_health_checks(&self) -> bool {
        // A load first: every request asks, and a swap would write the
        // line all workers read.
        !self.health_started.load(Ordering::Relaxed)
            && !self.health_started.swap(true, Ordering::Relaxed)
    }

    /// Whether no server is configured.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The servers in the order this request (from `client`, with the
    /// affinity cookie `affinity`, if any) tries them: the one the cookie
    /// names while it is up, else the one `balance` chooses, then round the
    /// list, those left out last (tried when all are).
    pub fn order(
        &self,
        balance: Balance,
        client: IpAddr,
        affinity: Option<&str>,
    ) -> impl Iterator<Item = &Server> {
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
        let kept = affinity.and_then(|value| {
            self.servers
                .iter()
                .position(|s| s.affinity == value)
                .filter(|&i| down >> i & 1 == 0)
        });
        let first = match kept {
            Some(i) => i,
            None if count > 1 => self.first(balance, client, down),
            None => 0,
        };
        let round = move |want_down: bool| {
            (0..count)
                .map(move |i| (first + i) % count)
                .filter(move |&i| (down >> i & 1 == 1) == want_down)
                .map(move |i| &self.servers[i])
        };
        round(false).chain(round(true))
    }
}

impl Farm {
    /// The server `balance` chooses, by index; `down` has a bit set for
    /// each server left out.
    fn first(&self, balance: Balance, client: IpAddr, down: u64) -> usize {
        let turns = self.turns.len();
        let is_up = |i: usize| down >> i & 1 == 0;
        match balance {
            Balance::RoundRobin => {
                // A turn that falls on a server left out passes to the
                // next turn, so the others share its requests as their
                // weights say (rather than the one after it taking them
                // all).
                let all_down = down.count_ones() as usize == self.servers.len();
                let mut first = 0;
                for _ in 0..if all_down { 1 } else { turns } {
                    let turn = self.next.fetch_add(1, Ordering::Relaxed) % turns;
                    first = usize::from(self.turns[turn]);
                    if is_up(first) {
                        break;
                    }
                }
                first
            }
            Balance::LeastRequests => {
                let load = |i: usize| {
                    let server = &self.servers[i];
                    (
                        server.in_flight.load(Ordering::Relaxed) as u64,
                        u64::from(server.weight),
                    )
                };
                // a/wa < b/wb, without division.
                let less = |(a, wa): (u64, u64), (b, wb): (u64, u64)| a * wb < b * wa;
                let Some(least) = (0..self.servers.len())
                    .filter(|&i| is_up(i))
                    .map(load)
                    .reduce(|best, l| if less(l, best) { l } else { best })
                else {
                    // All left out: in turn.
                    let turn = self.next.fetch_add(1, Ordering::Relaxed) % turns;
                    return usize::from(self.turns[turn]);
                };
                // Those as little busy take weighted turns (nginx's
                // `least_conn` does the same).
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..turns)
                    .map(|k| usize::from(self.turns[(start + k) % turns]))
                    .find(|&i| is_up(i) && !less(least, load(i)))
                    .unwrap_or(usize::from(self.turns[start % turns]))
            }
            Balance::ClientAddress => {
                use std::hash::{Hash, Hasher};
                // The same for every worker and every start: fixed keys.
                // A client whose server is left out hashes again (with the
                // attempt's number), so that server's clients spread over
                // the others meanwhile, and come back once it is up.
                let pick = |attempt: u32| {
                    let mut hasher = std::hash::DefaultHasher::new();
                    client.to_canonical().hash(&mut hasher);
                    attempt.hash(&mut hasher);
                    usize::from(self.turns[(hasher.finish() % turns as u64) as usize])
                };
                let home = pick(0);
                (0..64)
                    .map(pick)
                    .find(|&i| is_up(i))
                    .or_else(|| (0..self.servers.len()).find(|&i| is_up(i)))
                    .unwrap_or(home)
            }
        }
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
        let weights: Vec<u32> = servers.iter().map(|s| s.weight).collect();
        Ok(Farm {
            turns: smooth_turns(&weights),
            servers,
            next: AtomicUsize::new(0),
            health_started: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn farm(list: &[&str]) -> Farm {
        let servers: Vec<Server> = list.iter().map(|s| Server::parse(s).unwrap()).collect();
        let weights: Vec<u32> = servers.iter().map(|s| s.weight).collect();
        Farm {
            turns: smooth_turns(&weights),
            servers,
            next: AtomicUsize::new(0),
            health_started: std::sync::atomic::AtomicBool::new(false),
        }
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    fn names(farm: &Farm) -> Vec<&str> {
        farm.order(Balance::RoundRobin, CLIENT, None)
            .map(|s| s.name.as_str())
            .collect()
    }

    fn firsts(farm: &Farm, balance: Balance, client: IpAddr, n: usize) -> String {
        (0..n)
            .map(|_| {
                let name = &farm.order(balance, client, None).next().unwrap().name;
                name.trim_start_matches("http://").to_owned()
            })
            .collect()
    }

    #[test]
    fn weights_share_the_turns_smoothly() {
        let f = farm(&["http://a weight=5", "http://b", "http://c"]);
        assert_eq!(f.servers[0].name, "http://a");
        assert_eq!(
            firsts(&f, Balance::RoundRobin, CLIENT, 14),
            "aabacaaaabacaa"
        );
        f.servers[0].mark_down(Duration::from_secs(60));
        // a's turns pass on to b and c in turn.
        assert_eq!(firsts(&f, Balance::RoundRobin, CLIENT, 4), "bcbc");
        for bad in [
            "http://a weight=0",
            "http://a weight=101",
            "http://a weight=",
            "http://a weight=+3",
            "http://a weight=2 weight=3",
            "http://a weight",
            "http://a x=1",
        ] {
            assert!(Server::parse(bad).is_err(), "{bad}");
        }
        // A socket's path may hold spaces.
        let s = Server::parse("unix:/run/my app.sock weight=2").unwrap();
        assert_eq!(s.address, Address::Unix("/run/my app.sock".into()));
        assert_eq!(s.weight, 2);
    }

    #[test]
    fn least_requests_goes_to_the_least_busy_for_its_weight() {
        let f = farm(&["http://a", "http://b weight=2", "http://c"]);
        let busy_a = f.servers[0].begin();
        let busy_b = f.servers[1].begin();
        // a 1/1, b 1/2, c 0/1: c, then (c busy too) b.
        let busy_c = f
            .order(Balance::LeastRequests, CLIENT, None)
            .next()
            .unwrap()
            .begin();
        assert_eq!(busy_c.0.name, "http://c");
        assert_eq!(firsts(&f, Balance::LeastRequests, CLIENT, 1), "b");
        drop((busy_a, busy_b, busy_c));
        // All idle: weighted turns (b twice as often).
        let spread = firsts(&f, Balance::LeastRequests, CLIENT, 8);
        assert_eq!(spread.matches('b').count(), 4, "{spread}");
        assert_eq!(spread.matches('a').count(), 2, "{spread}");
    }

    #[test]
    fn the_affinity_cookie_names_a_server_while_it_is_up() {
        let f = farm(&["http://a", "http://b", "http://c"]);
        let b = f.servers[1].affinity.clone();
        assert_eq!(b.len(), 16);
        assert_ne!(b, f.servers[0].affinity);
        // The same value from another parse (another worker, a restart).
        assert_eq!(Server::parse("http://b").unwrap().affinity, b);
        for _ in 0..4 {
            let first = f
                .order(Balance::RoundRobin, CLIENT, Some(&b))
                .next()
                .unwrap();
            assert_eq!(first.name, "http://b");
        }
        f.servers[1].mark_down(Duration::from_secs(60));
        let first = f
            .order(Balance::RoundRobin, CLIENT, Some(&b))
            .next()
            .unwrap();
        assert_ne!(first.name, "http://b");
        // A value that names no server is no preference.
        assert!(f
            .order(Balance::RoundRobin, CLIENT, Some("nonsense"))
            .next()
            .is_some());
    }

    #[test]
    fn a_client_keeps_its_server_while_it_is_up() {
        let f = farm(&["http://a", "http://b", "http://c", "http://d"]);
        let mut seen = std::collections::BTreeSet::new();
        for last in 1..=40u8 {
            let client = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, last));
            let one = firsts(&f, Balance::ClientAddress, client, 3);
            assert!(one.chars().all(|c| one.starts_with(c)), "{one}");
            seen.insert(one.chars().next().unwrap());
        }
        // Clients spread over the servers.
        assert_eq!(seen.len(), 4);
        let home = firsts(&f, Balance::ClientAddress, CLIENT, 1);
        let at = (home.as_bytes()[0] - b'a') as usize;
        f.servers[at].mark_down(Duration::from_secs(60));
        let away = firsts(&f, Balance::ClientAddress, CLIENT, 2);
        assert!(!away.contains(&home), "{away}");
        // Its clients spread over the others meanwhile.
        let mut elsewhere = std::collections::BTreeSet::new();
        for last in 1..=40u8 {
            let client = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, last));
            let one = firsts(&f, Balance::ClientAddress, client, 1);
            assert_ne!(one, home);
            elsewhere.insert(one);
        }
        assert_eq!(elsewhere.len(), 3, "{elsewhere:?}");
        f.servers[at].mark_up();
        assert_eq!(firsts(&f, Balance::ClientAddress, CLIENT, 1), home);
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
        let mut order = f.order(Balance::RoundRobin, CLIENT, None);
        order.next().unwrap().mark_down(Duration::from_secs(60));
        assert!(order.next().is_none());
    }
}
