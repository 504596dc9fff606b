//! WebDAV write locks (RFC 4918 §6–7) and the `If` header that submits
//! their tokens (§10.4).
//!
//! Locks live in memory, per site, keyed by their token, as IIS's simple
//! lock store keeps them: they end with the server (a lock is a lease with
//! a timeout, and clients refresh or take them again). The table is one
//! mutex for the whole process; only WebDAV's requests take it, and each
//! holds it for a scan of the live locks, which are few.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One lock.
#[derive(Clone, Debug)]
pub(crate) struct Lock {
    /// `urn:uuid:…`, as the client sends it back.
    pub(crate) token: String,
    /// The site whose URL space it is in.
    pub(crate) site: u32,
    /// The locked URL (decoded path, no trailing `/` but for `/` itself).
    pub(crate) root: String,
    /// Depth infinity: it covers everything below `root` too.
    pub(crate) infinite: bool,
    /// Exclusive, else shared.
    pub(crate) exclusive: bool,
    /// The `DAV:owner` the client gave, as XML, if any: shared, not
    /// copied, by each look-up that finds the lock.
    pub(crate) owner: Option<std::sync::Arc<str>>,
    /// Who took it (empty: anonymous); only they may use its token.
    pub(crate) principal: String,
    /// The client's address (an IPv6 one's /64), for the count of an
    /// anonymous client's locks: anonymous clients are one principal, and
    /// one of them must not use up the others' share.
    pub(crate) client: std::net::IpAddr,
    /// Its root is a collection (its `lockroot` ends in `/`).
    pub(crate) collection: bool,
    /// How long it was granted for, from the last refresh.
    pub(crate) timeout: Duration,
    pub(crate) expires: Instant,
}

impl Lock {
    /// Whether the lock applies to `url`: its root, or below it with depth
    /// infinity.
    pub(crate) fn covers(&self, url: &str) -> bool {
        self.root == url || (self.infinite && is_below(&self.root, url))
    }

    /// Seconds left, for `DAV:timeout`.
    pub(crate) fn seconds_left(&self) -> u64 {
        let left = self.expires.saturating_duration_since(Instant::now());
        // Rounded up: a lock just granted for 60 seconds shows 60.
        left.as_millis().div_ceil(1000) as u64
    }
}

/// Whether `url` lies strictly below collection `root`.
pub(crate) fn is_below(root: &str, url: &str) -> bool {
    if root == "/" {
        return url.len() > 1;
    }
    url.len() > root.len() + 1 && url.starts_with(root) && url.as_bytes()[root.len()] == b'/'
}

/// The parent collection of `url` (`/` for `/a`), `None` for `/`.
pub(crate) fn parent(url: &str) -> Option<&str> {
    if url == "/" {
        return None;
    }
    match url.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&url[..i]),
        None => None,
    }
}

/// The process's locks.
pub(crate) struct LockTable {
    locks: Mutex<HashMap<String, Lock>>,
}

/// The one table.
pub(crate) static LOCKS: LazyLock<LockTable> = LazyLock::new(|| LockTable {
    locks: Mutex::new(HashMap::new()),
});

/// Why a lock cannot be granted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LockRefused {
    /// Another lock conflicts (423).
    Conflict,
    /// The process, the site, the user or the resource holds the most
    /// locks it may (503); says which.
    TooMany(String),
}

/// The most locks the process holds: each keeps its owner's XML (up to
/// [`MAX_OWNER`] bytes), so a client taking locks without end cannot take
/// the server's memory.
pub(crate) const MAX_LOCKS: usize = 65_536;

/// The most locks one site holds, so that one site's clients cannot fill
/// the process's table and refuse every other site's LOCK.
pub(crate) const MAX_LOCKS_PER_SITE: usize = MAX_LOCKS / 4;

/// The most locks one user holds on a site (an anonymous client, one per
/// address: an IPv6 one's /64): an editor holds one per file it has open,
/// so one client cannot fill its site's table.
pub(crate) const MAX_LOCKS_PER_USER: usize = 1024;

/// The most locks all anonymous clients hold on a site together: each
/// address has its own share ([`MAX_LOCKS_PER_USER`]), and these a
/// quarter of the site's, so that clients of many addresses cannot fill
/// the site's table and keep its users (an editor must lock to save) out.
pub(crate) const MAX_ANONYMOUS_LOCKS: usize = MAX_LOCKS_PER_SITE / 4;

/// The most shared locks on one resource: each shows in its
/// `lockdiscovery`, which every PROPFIND of it answers and every write
/// to it looks through, and a few editors share a file.
pub(crate) const MAX_SHARED_LOCKS: usize = 64;

/// The longest `DAV:owner` kept with a lock, as XML (clients send a name,
/// an e-mail address or a URL: Windows its user's name, Finder a URL).
/// Each lock shows its owner in every PROPFIND of what it covers.
pub(crate) const MAX_OWNER: usize = 1024;

impl LockTable {
    /// The live locks, expired ones dropped.
    fn live(&self) -> MutexGuard<'_, HashMap<String, Lock>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        locks.retain(|_, l| l.expires > now);
        locks
    }

    /// The locks of `site` that `affects` says apply.
    pub(crate) fn find(&self, site: u32, affects: impl Fn(&Lock) -> bool) -> Vec<Lock> {
        self.live()
            .values()
            .filter(|l| l.site == site && affects(l))
            .cloned()
            .collect()
    }

    /// How many live locks the process holds (`riis status`).
    pub(crate) fn count(&self) -> usize {
        self.live().len()
    }

    /// Grants a new lock unless one in its way conflicts: an exclusive lock
    /// conflicts with any other on the same resources, a shared one with
    /// exclusive ones.
    pub(crate) fn grant(&self, lock: Lock) -> Result<Lock, LockRefused> {
        let mut locks = self.live();
        let conflict = locks.values().any(|other| {
            other.site == lock.site
                && (lock.exclusive || other.exclusive)
                && (other.covers(&lock.root)
                    || (lock.infinite && is_below(&lock.root, &other.root)))
        });
        if conflict {
            return Err(LockRefused::Conflict);
        }
        if locks.len() >= MAX_LOCKS {
            return Err(LockRefused::TooMany(format!(
                "the server holds {MAX_LOCKS} locks, its most"
            )));
        }
        let (mut site, mut user, mut shared, mut anonymous) = (0, 0, 0, 0);
        for other in locks.values().filter(|other| other.site == lock.site) {
            site += 1;
            anonymous += usize::from(other.principal.is_empty());
            user += usize::from(
                other.principal == lock.principal
                    && (!lock.principal.is_empty() || other.client == lock.client),
            );
            shared += usize::from(other.root == lock.root);
        }
        if site >= MAX_LOCKS_PER_SITE {
            return Err(LockRefused::TooMany(format!(
                "the site holds {MAX_LOCKS_PER_SITE} locks, its most"
            )));
        }
        if lock.principal.is_empty() && anonymous >= MAX_ANONYMOUS_LOCKS {
            return Err(LockRefused::TooMany(format!(
                "anonymous clients hold {MAX_ANONYMOUS_LOCKS} locks on this site, their most"
            )));
        }
        if user >= MAX_LOCKS_PER_USER {
            return Err(LockRefused::TooMany(format!(
                "the user holds {MAX_LOCKS_PER_USER} locks on this site, their most"
            )));
        }
        // Only shared locks can be many on one resource (any other lock
        // would have conflicted with an exclusive one).
        if shared >= MAX_SHARED_LOCKS {
            return Err(LockRefused::TooMany(format!(
                "{} has {MAX_SHARED_LOCKS} shared locks, its most",
                lock.root
            )));
        }
        locks.insert(lock.token.clone(), lock.clone());
        Ok(lock)
    }

    /// Renews the lock `token` that covers `url` for `principal`, for
    /// `timeout`; `None` when there is no such lock.
    pub(crate) fn refresh(
        &self,
        site: u32,
        token: &str,
        url: &str,
        principal: &str,
        timeout: Duration,
    ) -> Option<Lock> {
        let mut locks = self.live();
        let lock = locks.get_mut(token)?;
        if lock.site != site || !lock.covers(url) || lock.principal != principal {
            return None;
        }
        lock.timeout = timeout;
        lock.expires = Instant::now() + timeout;
        Some(lock.clone())
    }

    /// Removes lock `token` if it covers `url`; `Err(true)` when it exists
    /// but is another principal's, `Err(false)` when it does not cover `url`.
    pub(crate) fn release(
        &self,
        site: u32,
        token: &str,
        url: &str,
        principal: &str,
    ) -> Result<(), bool> {
        let mut locks = self.live();
        match locks.get(token) {
            Some(l) if l.site == site && l.covers(url) => {
                if l.principal != principal {
                    return Err(true);
                }
                locks.remove(token);
                Ok(())
            }
            _ => Err(false),
        }
    }

    /// Drops the locks rooted at `url` or below it: the resources are gone
    /// (DELETE, the source of a MOVE).
    pub(crate) fn forget(&self, site: u32, url: &str) {
        self.live()
            .retain(|_, l| l.site != site || !(l.root == url || is_below(url, &l.root)));
    }

    /// Whether `token` names a live lock of `site` covering `url`.
    pub(crate) fn is_current(&self, site: u32, token: &str, url: &str) -> bool {
        self.live()
            .get(token)
            .is_some_and(|l| l.site == site && l.covers(url))
    }
}

/// A new lock token: `urn:uuid:` and a random (version 4) UUID.
pub(crate) fn new_token() -> String {
    let mut b = crate::nonce();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// One condition of an `If` header's list.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Condition {
    /// `Not` before it.
    pub(crate) negated: bool,
    pub(crate) kind: ConditionKind,
}

/// A state token or an entity tag.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ConditionKind {
    /// `<urn:uuid:…>` (or any other Coded-URL, `DAV:no-lock`).
    Token(String),
    /// `["…"]`, kept with its quotes (and `W/`).
    ETag(String),
}

/// A parsed `If` header: lists of conditions, each with the resource it is
/// tagged with (`None`: the request's URL).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct IfHeader {
    pub(crate) lists: Vec<(Option<String>, Vec<Condition>)>,
}

impl IfHeader {
    /// Parses the header (RFC 4918 §10.4.2); `Err` for anything else.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut lists = Vec::new();
        let mut rest = text.trim_start();
        let mut tag: Option<String> = None;
        let mut tagged = None;
        if rest.is_empty() {
            return Err("the If header is empty".into());
        }
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('<') {
                let end = after.find('>').ok_or("a resource tag has no `>`")?;
                if tagged == Some(false) {
                    return Err("an If header mixes tagged and untagged lists".into());
                }
                tagged = Some(true);
                tag = Some(after[..end].to_owned());
                rest = after[end + 1..].trim_start();
                if !rest.starts_with('(') {
                    return Err("a resource tag is not followed by a list".into());
                }
                continue;
            }
            let after = rest
                .strip_prefix('(')
                .ok_or("the If header holds something other than lists")?;
            if tagged.is_none() {
                tagged = Some(false);
            }
            let (conditions, remaining) = parse_list(after)?;
            lists.push((tag.clone(), conditions));
            rest = remaining.trim_start();
        }
        Ok(Self { lists })
    }

    /// The state tokens the header submits (those not under `Not`).
    pub(crate) fn tokens(&self) -> impl Iterator<Item = &str> {
        self.lists.iter().flat_map(|(_, conditions)| {
            conditions.iter().filter_map(|c| match &c.kind {
                ConditionKind::Token(t) if !c.negated => Some(t.as_str()),
                _ => None,
            })
        })
    }

    /// Whether the header holds: some list whose conditions all hold.
    /// `state` answers for a list's resource (its tag, or `None` for the
    /// request's URL) whether a token is a current lock token of it, and
    /// what its entity tag is.
    pub(crate) fn holds(
        &self,
        state: &mut dyn FnMut(Option<&str>, &ConditionKind) -> bool,
    ) -> bool {
        self.lists.iter().any(|(tag, conditions)| {
            conditions
                .iter()
                .all(|c| state(tag.as_deref(), &c.kind) != c.negated)
        })
    }
}

/// The conditions of one list, after its `(`; gives what follows its `)`.
fn parse_list(mut rest: &str) -> Result<(Vec<Condition>, &str), String> {
    let mut conditions = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(')') {
            if conditions.is_empty() {
                return Err("an If header's list is empty".into());
            }
            return Ok((conditions, after));
        }
        let mut negated = false;
        if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case("not") {
            negated = true;
            rest = rest[3..].trim_start();
        }
        if let Some(after) = rest.strip_prefix('<') {
            let end = after.find('>').ok_or("a state token has no `>`")?;
            conditions.push(Condition {
                negated,
                kind: ConditionKind::Token(after[..end].to_owned()),
            });
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']').ok_or("an entity tag has no `]`")?;
            conditions.push(Condition {
                negated,
                kind: ConditionKind::ETag(after[..end].trim().to_owned()),
            });
            rest = &after[end + 1..];
        } else {
            return Err(
                "an If header's list holds something other than tokens and entity tags".into(),
            );
        }
    }
}

/// `Timeout: Second-600, Infinite` (RFC 4918 §10.7): the first the server
/// takes, at most `longest`; `Infinite`, none given, or anything unreadable
/// is `longest`.
pub(crate) fn timeout(header: Option<&str>, longest: Duration) -> Duration {
    let Some(header) = header else {
        return longest;
    };
    for item in header.split(',').map(str::trim) {
        if let Some(secs) = item
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("Second-"))
            .and_then(|_| item[7..].parse::<u64>().ok())
        {
            return Duration::from_secs(secs.max(1)).min(longest);
        }
        if item.eq_ignore_ascii_case("Infinite") {
            return longest;
        }
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_headers_parse_untagged_and_tagged_lists() {
        let h = IfHeader::parse(r#"(<urn:uuid:1> ["abc"]) (Not <DAV:no-lock> [W/"x"])"#).unwrap();
        assert_eq!(h.lists.len(), 2);
        assert_eq!(h.lists[0].0, None);
        assert_eq!(
            h.lists[1].1[0],
            Condition {
                negated: true,
                kind: ConditionKind::Token("DAV:no-lock".into())
            }
        );
        assert_eq!(h.tokens().collect::<Vec<_>>(), ["urn:uuid:1"]);
        let t = IfHeader::parse("<http://h/a> (<urn:uuid:2>) <http://h/b> (<urn:uuid:3>)").unwrap();
        assert_eq!(t.lists[0].0.as_deref(), Some("http://h/a"));
        assert_eq!(t.lists[1].0.as_deref(), Some("http://h/b"));
        for bad in [
            "",
            "()",
            "(<a>",
            "<x>",
            "(<a>) <x> (<b>)",
            "(junk)",
            "([\"a\"",
        ] {
            assert!(IfHeader::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_if_header_holds_when_one_list_holds_whole() {
        let h = IfHeader::parse("(<urn:a> [\"1\"]) (Not <DAV:no-lock>)").unwrap();
        // Neither the token nor the tag: the second list (Not no-lock) holds.
        assert!(h.holds(&mut |_, _| false));
        let only_first = IfHeader::parse("(<urn:a> [\"1\"])").unwrap();
        assert!(!only_first.holds(&mut |_, k| matches!(k, ConditionKind::Token(_))));
        assert!(only_first.holds(&mut |_, _| true));
    }

    #[test]
    fn locks_cover_their_root_and_with_depth_infinity_what_is_below() {
        assert!(is_below("/", "/a"));
        assert!(is_below("/a", "/a/b"));
        assert!(!is_below("/a", "/ab"));
        assert!(!is_below("/a", "/a"));
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        let table = LockTable {
            locks: Mutex::new(HashMap::new()),
        };
        let lock = |root: &str, infinite, exclusive| Lock {
            token: new_token(),
            site: 1,
            root: root.into(),
            infinite,
            exclusive,
            owner: None,
            principal: String::new(),
            client: std::net::Ipv4Addr::LOCALHOST.into(),
            collection: false,
            timeout: Duration::from_secs(60),
            expires: Instant::now() + Duration::from_secs(60),
        };
        let tree = table.grant(lock("/c", true, false)).unwrap();
        assert!(
            table.grant(lock("/c/x", false, false)).is_ok(),
            "shared beside shared"
        );
        assert_eq!(
            table.grant(lock("/c/y", false, true)).unwrap_err(),
            LockRefused::Conflict
        );
        assert_eq!(
            table.grant(lock("/", true, true)).unwrap_err(),
            LockRefused::Conflict
        );
        assert!(table.grant(lock("/d", false, true)).is_ok());
        assert!(table.is_current(1, &tree.token, "/c/x/z"));
        assert!(!table.is_current(2, &tree.token, "/c/x/z"), "another site");
        assert_eq!(table.release(1, &tree.token, "/d", ""), Err(false));
        assert_eq!(table.release(1, &tree.token, "/c", "alice"), Err(true));
        table.forget(1, "/c");
        assert!(table.find(1, |l| l.covers("/c/x")).is_empty());
        assert_eq!(table.find(1, |l| l.covers("/d")).len(), 1);
    }

    /// Anonymous clients are one principal, but each address has a share
    /// of its own: one of them cannot use up the others'.
    #[test]
    fn anonymous_clients_hold_their_share_each() {
        let table = LockTable {
            locks: Mutex::new(HashMap::new()),
        };
        let lock = |root: String, client: [u8; 4]| Lock {
            token: new_token(),
            site: 1,
            root,
            infinite: false,
            exclusive: true,
            owner: None,
            principal: String::new(),
            client: client.into(),
            collection: false,
            timeout: Duration::from_secs(60),
            expires: Instant::now() + Duration::from_secs(60),
        };
        for i in 0..MAX_LOCKS_PER_USER {
            table
                .grant(lock(format!("/a/{i}"), [192, 0, 2, 1]))
                .unwrap();
        }
        assert!(matches!(
            table.grant(lock("/a/last".into(), [192, 0, 2, 1])),
            Err(LockRefused::TooMany(_))
        ));
        assert!(table.grant(lock("/b/first".into(), [192, 0, 2, 2])).is_ok());
        // Together, a quarter of the site's: its users keep room.
        let held = table.find(1, |_| true).len();
        for i in held..MAX_ANONYMOUS_LOCKS {
            let l = lock(format!("/c/{i}"), [198, 51, 100, (i % 200) as u8]);
            table.locks.lock().unwrap().insert(l.token.clone(), l);
        }
        assert!(matches!(
            table.grant(lock("/d/first".into(), [203, 0, 113, 9])),
            Err(LockRefused::TooMany(why)) if why.contains("anonymous clients")
        ));
        let mut user = lock("/d/first".into(), [203, 0, 113, 9]);
        user.principal = "alice".into();
        assert!(table.grant(user).is_ok());
    }

    #[test]
    fn no_resource_user_or_site_holds_more_than_its_share_of_locks() {
        let table = LockTable {
            locks: Mutex::new(HashMap::new()),
        };
        let lock = |site, root: &str, principal: &str| Lock {
            token: new_token(),
            site,
            root: root.into(),
            infinite: false,
            exclusive: false,
            owner: None,
            principal: principal.into(),
            client: std::net::Ipv4Addr::LOCALHOST.into(),
            collection: false,
            timeout: Duration::from_secs(60),
            expires: Instant::now() + Duration::from_secs(60),
        };
        let too_many = |r: Result<Lock, LockRefused>| match r {
            Err(LockRefused::TooMany(why)) => why,
            other => panic!("{other:?}"),
        };
        // Shared locks on one resource, by one user or many.
        for i in 0..MAX_SHARED_LOCKS {
            table.grant(lock(1, "/f", &format!("u{}", i % 2))).unwrap();
        }
        assert!(too_many(table.grant(lock(1, "/f", "u9"))).contains("/f has 64 shared locks"));
        assert!(table.grant(lock(1, "/g", "u9")).is_ok(), "another file");
        assert!(table.grant(lock(2, "/f", "u9")).is_ok(), "another site");
        // One user's locks on a site.
        let held = table.find(1, |l| l.principal == "u0").len();
        for i in held..MAX_LOCKS_PER_USER {
            table.grant(lock(1, &format!("/u0/{i}"), "u0")).unwrap();
        }
        assert!(too_many(table.grant(lock(1, "/u0/last", "u0"))).contains("the user holds"));
        assert!(
            table.grant(lock(1, "/u1/first", "u1")).is_ok(),
            "another user"
        );
        assert!(
            table.grant(lock(3, "/u0/last", "u0")).is_ok(),
            "another site"
        );
        // A site's locks, by many users (put in the table directly: each
        // grant looks through all the others).
        let held = table.find(1, |_| true).len();
        for i in held..MAX_LOCKS_PER_SITE {
            let l = lock(1, &format!("/s/{i}"), &format!("user{}", i / 1000));
            table.locks.lock().unwrap().insert(l.token.clone(), l);
        }
        assert!(too_many(table.grant(lock(1, "/s/last", "new"))).contains("the site holds"));
        assert!(
            table.grant(lock(4, "/s/last", "new")).is_ok(),
            "another site"
        );
    }

    #[test]
    fn timeouts_take_the_first_usable_value_up_to_the_longest() {
        let most = Duration::from_secs(3600);
        assert_eq!(timeout(None, most), most);
        assert_eq!(timeout(Some("Second-600"), most), Duration::from_secs(600));
        assert_eq!(timeout(Some("Infinite, Second-4100000000"), most), most);
        assert_eq!(timeout(Some("Second-99999"), most), most);
        assert_eq!(
            timeout(Some("bogus, second-5"), most),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn tokens_are_version_4_uuids() {
        let t = new_token();
        assert_eq!(t.len(), "urn:uuid:".len() + 36);
        assert_eq!(&t[9 + 14..9 + 15], "4");
        assert_ne!(t, new_token());
    }
}
