//! A resource's properties: the live ones the file system tells
//! (`getcontentlength`, `getlastmodified`, …) and the dead ones clients
//! set with PROPPATCH.
//!
//! Dead properties are kept in the file's extended attribute
//! `user.riis.webdav`, as the serialized property elements one after the
//! other. They stay with the file through a rename (MOVE) and are copied
//! with it (COPY); nothing beside the site's files holds them. A file
//! system without user extended attributes cannot hold them: a PROPPATCH
//! there fails with 507 for each property.

use std::path::Path;

use super::xml::{escape, PropertyName, DAV};

/// The extended attribute holding a resource's dead properties.
const ATTRIBUTE: &str = "user.riis.webdav";

/// The live properties, which PROPPATCH may not change (403
/// `cannot-modify-protected-property`).
pub(crate) const LIVE: &[&str] = &[
    "creationdate",
    "getcontentlength",
    "getcontenttype",
    "getetag",
    "getlastmodified",
    "lockdiscovery",
    "resourcetype",
    "supportedlock",
];

/// Whether `name` is one of [`LIVE`].
pub(crate) fn is_live(name: &PropertyName) -> bool {
    name.namespace == DAV && LIVE.contains(&name.local.as_str())
}

/// A resource's dead properties, as stored.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct DeadProperties {
    /// Each property's name and its element.
    pub(crate) items: Vec<(PropertyName, String)>,
}

impl DeadProperties {
    /// The properties of `path` (none when it has no attribute, or its
    /// file system has no extended attributes). An attribute that does not
    /// read back is an error, so that a PROPPATCH does not write over
    /// what it cannot see.
    pub(crate) fn load(path: &Path) -> std::io::Result<Self> {
        use rustix::io::Errno;
        let mut small = [0u8; 4096];
        let stored = match rustix::fs::lgetxattr(path, ATTRIBUTE, &mut small[..]) {
            Ok(n) => small[..n].to_vec(),
            Err(Errno::RANGE) => {
                // Larger than most: asked for its size, then read whole.
                let size = rustix::fs::lgetxattr(path, ATTRIBUTE, &mut [0u8; 0][..])?;
                let mut large = vec![0u8; size];
                let n = rustix::fs::lgetxattr(path, ATTRIBUTE, &mut large[..])?;
                large.truncate(n);
                large
            }
            Err(Errno::NODATA | Errno::NOTSUP) => return Ok(Self::default()),
            Err(e) => return Err(e.into()),
        };
        Self::decode(&stored).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{ATTRIBUTE} of {} does not read as properties",
                    path.display()
                ),
            )
        })
    }

    fn decode(stored: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(stored).ok()?;
        let wrapped = format!("<p>{text}</p>");
        let doc = roxmltree::Document::parse(&wrapped).ok()?;
        let items = doc
            .root_element()
            .children()
            .filter(roxmltree::Node::is_element)
            .map(|e| {
                let name = PropertyName {
                    namespace: e.tag_name().namespace().unwrap_or("").to_owned(),
                    local: e.tag_name().name().to_owned(),
                };
                (name, wrapped[e.range()].to_owned())
            })
            .collect();
        Some(Self { items })
    }

    /// The element of `name`, if set.
    pub(crate) fn get(&self, name: &PropertyName) -> Option<&str> {
        self.items
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn set(&mut self, name: PropertyName, element: String) {
        match self.items.iter_mut().find(|(n, _)| *n == name) {
            Some(item) => item.1 = element,
            None => self.items.push((name, element)),
        }
    }

    pub(crate) fn remove(&mut self, name: &PropertyName) {
        self.items.retain(|(n, _)| n != name);
    }

    /// Writes the properties to `path` (removes the attribute when none
    /// are left).
    pub(crate) fn store(&self, path: &Path) -> std::io::Result<()> {
        if self.items.is_empty() {
            return match rustix::fs::lremovexattr(path, ATTRIBUTE) {
                Ok(()) | Err(rustix::io::Errno::NODATA) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        let value: String = self.items.iter().map(|(_, v)| v.as_str()).collect();
        rustix::fs::lsetxattr(
            path,
            ATTRIBUTE,
            value.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(Into::into)
    }
}

/// Copies the dead properties of `from` to `to` (COPY, and PUT over an
/// existing file, whose new file replaces the old one's inode).
pub(crate) fn copy_dead(from: &Path, to: &Path) -> std::io::Result<()> {
    let properties = DeadProperties::load(from)?;
    if properties.items.is_empty() {
        return Ok(());
    }
    properties.store(to)
}

/// Whether a failure to store properties is the file system's lack of room
/// for them (507) rather than an error.
pub(crate) fn is_out_of_room(e: &std::io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(e),
        Some(
            rustix::io::Errno::TOOBIG
                | rustix::io::Errno::NOSPC
                | rustix::io::Errno::RANGE
                | rustix::io::Errno::NOTSUP
                | rustix::io::Errno::DQUOT
        )
    )
}

/// What the live properties are made from.
pub(crate) struct Resource<'a> {
    pub(crate) metadata: &'a std::fs::Metadata,
    /// `Content-Type` for a file.
    pub(crate) content_type: Option<&'a str>,
    /// `lockdiscovery`'s `DAV:activelock` elements.
    pub(crate) active_locks: &'a str,
}

/// The element of live property `local` of `resource`, `None` when the
/// resource has none (a collection's `getcontentlength`).
pub(crate) fn live(local: &str, resource: &Resource<'_>) -> Option<String> {
    let meta = resource.metadata;
    let is_dir = meta.is_dir();
    let value = match local {
        "creationdate" => {
            let t = meta.created().or_else(|_| meta.modified()).ok()?;
            let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64;
            let (y, mo, d) = crate::civil_date(secs.div_euclid(86_400));
            let s = secs.rem_euclid(86_400);
            format!(
                "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
                s / 3600,
                s / 60 % 60,
                s % 60
            )
        }
        "getcontentlength" if !is_dir => meta.len().to_string(),
        "getcontenttype" if !is_dir => escape(resource.content_type?).into_owned(),
        "getetag" if !is_dir => escape(&crate::static_file::etag_of(meta)?).into_owned(),
        "getlastmodified" => {
            let t = meta.modified().ok()?;
            crate::static_file::http_date_secs(t)?;
            httpdate::fmt_http_date(t)
        }
        "resourcetype" if is_dir => "<D:collection/>".to_owned(),
        "resourcetype" => String::new(),
        "lockdiscovery" => resource.active_locks.to_owned(),
        "supportedlock" => "<D:lockentry><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockentry><D:lockentry><D:lockscope><D:shared/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockentry>".to_owned(),
        _ => return None,
    };
    Some(if value.is_empty() {
        format!("<D:{local}/>")
    } else {
        format!("<D:{local}>{value}</D:{local}>")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_properties_round_trip_through_the_attribute() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let name = |n: &str| PropertyName {
            namespace: "urn:z".into(),
            local: n.into(),
        };
        let mut props = DeadProperties::load(&file).unwrap();
        assert!(props.items.is_empty());
        props.set(name("a"), r#"<a xmlns="urn:z">1 &amp; 2</a>"#.into());
        props.set(name("b"), r#"<b xmlns="urn:z"/>"#.into());
        props.set(name("a"), r#"<a xmlns="urn:z">3</a>"#.into());
        if let Err(e) = props.store(&file) {
            // A file system without user attributes: nothing more to check.
            assert!(is_out_of_room(&e), "{e}");
            return;
        }
        let again = DeadProperties::load(&file).unwrap();
        assert_eq!(again, props);
        assert_eq!(again.get(&name("a")), Some(r#"<a xmlns="urn:z">3</a>"#));
        let copy = dir.path().join("g");
        std::fs::write(&copy, b"y").unwrap();
        copy_dead(&file, &copy).unwrap();
        assert_eq!(DeadProperties::load(&copy).unwrap(), props);
        let mut none = again;
        none.remove(&name("a"));
        none.remove(&name("b"));
        none.store(&file).unwrap();
        assert!(DeadProperties::load(&file).unwrap().items.is_empty());
    }

    #[test]
    fn a_stored_value_that_does_not_read_back_is_an_error() {
        assert!(DeadProperties::decode(b"<a xmlns=\"urn:z\">1</a>").is_some());
        assert!(DeadProperties::decode(b"<a xmlns:b=\"urn:z\"><b:c").is_none());
        assert!(DeadProperties::decode(&[0xff, 0xfe]).is_none());
    }

    #[test]
    fn live_properties_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.txt");
        std::fs::write(&file, b"hello").unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        let r = Resource {
            metadata: &meta,
            content_type: Some("text/plain"),
            active_locks: "",
        };
        assert_eq!(
            live("getcontentlength", &r).unwrap(),
            "<D:getcontentlength>5</D:getcontentlength>"
        );
        assert_eq!(live("resourcetype", &r).unwrap(), "<D:resourcetype/>");
        assert!(live("getetag", &r)
            .unwrap()
            .starts_with("<D:getetag>&quot;"));
        assert!(live("creationdate", &r)
            .unwrap()
            .ends_with("Z</D:creationdate>"));
        let dmeta = std::fs::metadata(dir.path()).unwrap();
        let d = Resource {
            metadata: &dmeta,
            content_type: None,
            active_locks: "",
        };
        assert_eq!(live("getcontentlength", &d), None);
        assert_eq!(
            live("resourcetype", &d).unwrap(),
            "<D:resourcetype><D:collection/></D:resourcetype>"
        );
        assert!(is_live(&PropertyName::dav("getetag")));
        assert!(!is_live(&PropertyName::dav("displayname")));
    }
}
