//! The XML of WebDAV's request bodies (PROPFIND, PROPPATCH, LOCK) and of
//! its answers (multistatus, lock discovery).
//!
//! Bodies are parsed with roxmltree, which refuses a DTD: no entity of a
//! client's can expand or reach a file. Property values are kept as XML
//! that declares its own namespaces, so a value reads the same wherever it
//! is written back.

use roxmltree::{Document, Node};

/// The `DAV:` namespace.
pub(crate) const DAV: &str = "DAV:";

/// A property's name: namespace and local name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct PropertyName {
    pub(crate) namespace: String,
    pub(crate) local: String,
}

impl PropertyName {
    #[cfg(test)]
    pub(crate) fn dav(local: &str) -> Self {
        Self {
            namespace: DAV.into(),
            local: local.into(),
        }
    }

    fn of(node: Node<'_, '_>) -> Self {
        Self {
            namespace: node.tag_name().namespace().unwrap_or("").to_owned(),
            local: node.tag_name().name().to_owned(),
        }
    }
}

/// The namespaces of the property names an answer writes as empty
/// elements, each given a prefix (`ns0`, `ns1`, …) that is declared once,
/// on the multistatus or on one resource's response, as Apache's mod_dav
/// declares them. Written again on every name, one long namespace URI
/// shared by many names made a small body's answer a hundred megabytes.
#[derive(Debug, Default)]
pub(crate) struct Prefixes {
    /// Each namespace's prefix number.
    numbers: std::collections::HashMap<String, usize>,
    /// The namespaces, in the order they were first met.
    namespaces: Vec<String>,
}

impl Prefixes {
    /// Prefixes for the namespaces of `names` but `DAV:` (always `D:`) and
    /// the empty one (which no prefix may stand for).
    pub(crate) fn of<'a>(names: impl IntoIterator<Item = &'a PropertyName>) -> Self {
        let mut prefixes = Self::default();
        for name in names {
            if name.namespace == DAV || name.namespace.is_empty() {
                continue;
            }
            if !prefixes.numbers.contains_key(&name.namespace) {
                prefixes
                    .numbers
                    .insert(name.namespace.clone(), prefixes.namespaces.len());
                prefixes.namespaces.push(name.namespace.clone());
            }
        }
        prefixes
    }

    /// The attributes declaring the prefixes (` xmlns:ns0="urn:a"`), for the
    /// element the names are written inside.
    pub(crate) fn declarations(&self) -> String {
        let mut out = String::new();
        for (number, namespace) in self.namespaces.iter().enumerate() {
            out.push_str(&format!(" xmlns:ns{number}=\"{}\"", escape(namespace)));
        }
        out
    }

    /// `name` as an empty element: `<D:x/>` in `DAV:`, `<ns0:x/>` in a
    /// namespace given a prefix, `<x xmlns=""/>` in none. A namespace left
    /// out of [`Prefixes::of`] is declared on the element itself.
    pub(crate) fn empty_element(&self, name: &PropertyName) -> String {
        if name.namespace == DAV {
            return format!("<D:{}/>", name.local);
        }
        match self.numbers.get(&name.namespace) {
            Some(number) => format!("<ns{number}:{}/>", name.local),
            None => format!("<{} xmlns=\"{}\"/>", name.local, escape(&name.namespace)),
        }
    }
}

/// The most property names a PROPFIND or PROPPATCH body may hold. Clients
/// ask for a few dozen at most (Windows sets four, litmus a few tens); each
/// name asked for is answered for every resource listed, so without a
/// limit a small body is a large answer for each member of a folder.
pub(crate) const MAX_PROPERTY_NAMES: usize = 1000;

fn too_many_names() -> String {
    format!("the body names more than {MAX_PROPERTY_NAMES} properties (the most a request may)")
}

/// What a PROPFIND asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PropFind {
    /// Every property (an empty body too), with the `include`d ones.
    All,
    /// The names alone.
    Names,
    /// These.
    Some(Vec<PropertyName>),
}

/// One change of a PROPPATCH, in document order.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PropertyChange {
    /// Set the property to this element (see [`serialize`]).
    Set(PropertyName, String),
    Remove(PropertyName),
}

/// What a LOCK asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LockInfo {
    pub(crate) exclusive: bool,
    pub(crate) owner: Option<String>,
}

/// How deep a body's elements may nest: WebDAV's own are four deep, and a
/// property's value rarely more than a few. The parser, the serializer and
/// the reading of stored properties all recurse, so the limit keeps a
/// client's `<a><a><a>…` from overflowing a thread's stack.
const MAX_DEPTH: usize = 64;

/// Parses a body, naming what is wrong.
pub(crate) fn parse(body: &[u8]) -> Result<Document<'_>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_owned())?;
    if crate::xml_nesting_depth(text) > MAX_DEPTH {
        return Err(format!("the body's elements nest deeper than {MAX_DEPTH}"));
    }
    let doc = Document::parse(text).map_err(|e| format!("the body is not well-formed XML: {e}"))?;
    // XML Namespaces 1.0 §2.2: a prefix cannot be bound to the empty
    // name (only the default namespace can be undeclared so).
    let empty_prefix = doc.descendants().any(|n| {
        n.namespaces()
            .any(|ns| ns.name().is_some() && ns.uri().is_empty())
    });
    if empty_prefix {
        return Err("the body binds a namespace prefix to an empty name".into());
    }
    Ok(doc)
}

fn is_dav(node: Node<'_, '_>, name: &str) -> bool {
    node.is_element() && node.tag_name().namespace() == Some(DAV) && node.tag_name().name() == name
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| is_dav(*c, name))
}

/// A PROPFIND body (empty: all properties).
pub(crate) fn propfind(body: &[u8]) -> Result<PropFind, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(PropFind::All);
    }
    let doc = parse(body)?;
    let root = doc.root_element();
    if !is_dav(root, "propfind") {
        return Err("a PROPFIND body's root is not DAV:propfind".into());
    }
    if child(root, "allprop").is_some() {
        return Ok(PropFind::All);
    }
    if child(root, "propname").is_some() {
        return Ok(PropFind::Names);
    }
    let prop = child(root, "prop").ok_or("DAV:propfind holds no prop, allprop or propname")?;
    if prop.children().filter(Node::is_element).count() > MAX_PROPERTY_NAMES {
        return Err(too_many_names());
    }
    // A name asked for twice is answered once (RFC 4918 §9.1: a property
    // appears once in a resource's response).
    let mut seen = std::collections::HashSet::new();
    Ok(PropFind::Some(
        prop.children()
            .filter(Node::is_element)
            .map(PropertyName::of)
            .filter(|name| seen.insert(name.clone()))
            .collect(),
    ))
}

/// A PROPPATCH body.
pub(crate) fn proppatch(body: &[u8]) -> Result<Vec<PropertyChange>, String> {
    let doc = parse(body)?;
    let root = doc.root_element();
    if !is_dav(root, "propertyupdate") {
        return Err("a PROPPATCH body's root is not DAV:propertyupdate".into());
    }
    let mut changes = Vec::new();
    for op in root.children().filter(Node::is_element) {
        let set = if is_dav(op, "set") {
            true
        } else if is_dav(op, "remove") {
            false
        } else {
            continue;
        };
        let prop = child(op, "prop").ok_or("a set or remove holds no DAV:prop")?;
        for p in prop.children().filter(Node::is_element) {
            if changes.len() == MAX_PROPERTY_NAMES {
                return Err(too_many_names());
            }
            let name = PropertyName::of(p);
            changes.push(if set {
                PropertyChange::Set(name, serialize(p))
            } else {
                PropertyChange::Remove(name)
            });
        }
    }
    if changes.is_empty() {
        return Err("DAV:propertyupdate changes nothing".into());
    }
    Ok(changes)
}

/// A LOCK body (`None`: empty, a refresh).
pub(crate) fn lockinfo(body: &[u8]) -> Result<Option<LockInfo>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let doc = parse(body)?;
    let root = doc.root_element();
    if !is_dav(root, "lockinfo") {
        return Err("a LOCK body's root is not DAV:lockinfo".into());
    }
    let scope = child(root, "lockscope").ok_or("DAV:lockinfo has no lockscope")?;
    let exclusive = if child(scope, "exclusive").is_some() {
        true
    } else if child(scope, "shared").is_some() {
        false
    } else {
        return Err("DAV:lockscope is neither exclusive nor shared".into());
    };
    let kind = child(root, "locktype").ok_or("DAV:lockinfo has no locktype")?;
    if child(kind, "write").is_none() {
        return Err("DAV:locktype is not write".into());
    }
    let owner = child(root, "owner").map(serialize);
    if owner
        .as_ref()
        .is_some_and(|o| o.len() > super::locks::MAX_OWNER)
    {
        return Err(format!(
            "DAV:owner is longer than {} bytes",
            super::locks::MAX_OWNER
        ));
    }
    Ok(Some(LockInfo { exclusive, owner }))
}

/// `node` as XML that stands alone: each element declares its namespace
/// (`<x xmlns="urn:a">…</x>`), attributes in a namespace get a prefix of
/// their own, text and attribute values are escaped again.
pub(crate) fn serialize(node: Node<'_, '_>) -> String {
    let mut out = String::new();
    write_node(node, &mut out);
    out
}

fn write_node(node: Node<'_, '_>, out: &mut String) {
    if node.is_text() {
        out.push_str(&escape(node.text().unwrap_or("")));
        return;
    }
    if !node.is_element() {
        return;
    }
    let name = node.tag_name();
    out.push('<');
    out.push_str(name.name());
    out.push_str(" xmlns=\"");
    out.push_str(&escape(name.namespace().unwrap_or("")));
    out.push('"');
    for (i, attr) in node.attributes().enumerate() {
        match attr.namespace() {
            // The `xml` prefix is bound to its namespace in every document,
            // and to no other prefix may it be bound.
            Some("http://www.w3.org/XML/1998/namespace") => {
                out.push_str(&format!(
                    " xml:{}=\"{}\"",
                    attr.name(),
                    escape(attr.value())
                ));
            }
            Some(ns) => {
                out.push_str(&format!(
                    " xmlns:a{i}=\"{}\" a{i}:{}=\"{}\"",
                    escape(ns),
                    attr.name(),
                    escape(attr.value())
                ));
            }
            None => {
                out.push_str(&format!(" {}=\"{}\"", attr.name(), escape(attr.value())));
            }
        }
    }
    let mut children = node.children().peekable();
    if children.peek().is_none() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    for c in children {
        write_node(c, out);
    }
    out.push_str("</");
    out.push_str(name.name());
    out.push('>');
}

/// Text escaped for XML content and attribute values.
pub(crate) fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['<', '>', '&', '"', '\'']) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A `DAV:multistatus` body being written.
pub(crate) struct Multistatus {
    out: String,
}

impl Multistatus {
    pub(crate) fn new() -> Self {
        Self::declaring(&Prefixes::default())
    }

    /// A multistatus whose element declares `prefixes`, for names written
    /// in every response (those a PROPFIND or PROPPATCH body named).
    pub(crate) fn declaring(prefixes: &Prefixes) -> Self {
        Self {
            out: format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:multistatus xmlns:D=\"DAV:\"{}>\n",
                prefixes.declarations()
            ),
        }
    }

    /// Bytes made and not yet taken.
    pub(crate) fn len(&self) -> usize {
        self.out.len()
    }

    /// Takes what was made so far (a part of an answer sent in parts).
    pub(crate) fn take(&mut self) -> String {
        std::mem::take(&mut self.out)
    }

    /// Closes the multistatus and takes the rest.
    pub(crate) fn finish_into(&mut self) -> String {
        self.out.push_str("</D:multistatus>\n");
        self.take()
    }

    /// A response with one status for `href`.
    pub(crate) fn status(&mut self, href: &str, status: u16) {
        self.out.push_str(&format!(
            "<D:response><D:href>{}</D:href><D:status>HTTP/1.1 {}</D:status></D:response>\n",
            escape(href),
            status_line(status)
        ));
    }

    /// A response for `href` with a propstat per status: the properties'
    /// XML and the status they share. `declarations` are attributes of the
    /// response element (the prefixes of names only it holds).
    pub(crate) fn propstats(&mut self, href: &str, declarations: &str, groups: &[(u16, String)]) {
        self.out.push_str("<D:response");
        self.out.push_str(declarations);
        self.out.push_str("><D:href>");
        self.out.push_str(&escape(href));
        self.out.push_str("</D:href>");
        for (status, props) in groups {
            self.out.push_str("<D:propstat><D:prop>");
            self.out.push_str(props);
            self.out.push_str("</D:prop><D:status>HTTP/1.1 ");
            self.out.push_str(&status_line(*status));
            self.out.push_str("</D:status></D:propstat>");
        }
        self.out.push_str("</D:response>\n");
    }

    pub(crate) fn finish(mut self) -> String {
        self.finish_into()
    }
}

/// `207 Multi-Status`, `423 Locked`, …: a status and its reason.
pub(crate) fn status_line(status: u16) -> String {
    let reason = match status {
        207 => "Multi-Status",
        422 => "Unprocessable Entity",
        423 => "Locked",
        424 => "Failed Dependency",
        507 => "Insufficient Storage",
        other => http::StatusCode::from_u16(other)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or(""),
    };
    format!("{status} {reason}")
}

/// A `DAV:error` body holding one precondition element.
pub(crate) fn error_body(condition: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"DAV:\"><D:{condition}/></D:error>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propfind_bodies_ask_for_all_names_or_some() {
        assert_eq!(propfind(b"").unwrap(), PropFind::All);
        assert_eq!(
            propfind(br#"<propfind xmlns="DAV:"><allprop/></propfind>"#).unwrap(),
            PropFind::All
        );
        assert_eq!(
            propfind(br#"<D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>"#).unwrap(),
            PropFind::Names
        );
        let some = propfind(
            br#"<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><x:a xmlns:x="urn:x"/><b xmlns=""/></D:prop></D:propfind>"#,
        )
        .unwrap();
        assert_eq!(
            some,
            PropFind::Some(vec![
                PropertyName::dav("getetag"),
                PropertyName {
                    namespace: "urn:x".into(),
                    local: "a".into()
                },
                PropertyName {
                    namespace: "".into(),
                    local: "b".into()
                },
            ])
        );
        assert!(propfind(b"<propfind>").is_err());
        let deep = format!(
            r#"<D:propfind xmlns:D="DAV:"><D:prop>{}{}</D:prop></D:propfind>"#,
            "<a>".repeat(100_000),
            "</a>".repeat(100_000)
        );
        assert!(propfind(deep.as_bytes())
            .unwrap_err()
            .contains("nest deeper"));
        assert!(propfind(
            br#"<D:propfind xmlns:D="DAV:"><D:prop><b:x xmlns:b=""/></D:prop></D:propfind>"#
        )
        .is_err());
        assert!(propfind(br#"<propfind xmlns="urn:not-dav"><allprop/></propfind>"#).is_err());
        // No DTD, so no entity can expand.
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><propfind xmlns="DAV:">&a;</propfind>"#;
        assert!(propfind(bomb).is_err());
    }

    #[test]
    fn names_are_answered_once_with_each_namespace_declared_once() {
        let long = format!("urn:{}", "x".repeat(10_000));
        let body = format!(
            r#"<D:propfind xmlns:D="DAV:" xmlns:x="{long}"><D:prop>{}<D:getetag/><D:getetag/><b xmlns=""/></D:prop></D:propfind>"#,
            "<x:a/>".repeat(500)
        );
        let PropFind::Some(names) = propfind(body.as_bytes()).unwrap() else {
            panic!("not a list of names")
        };
        assert_eq!(names.len(), 3, "{names:?}");
        let prefixes = Prefixes::of(&names);
        assert_eq!(prefixes.empty_element(&names[0]), "<ns0:a/>");
        assert_eq!(prefixes.empty_element(&names[1]), "<D:getetag/>");
        assert_eq!(prefixes.empty_element(&names[2]), r#"<b xmlns=""/>"#);
        let mut m = Multistatus::declaring(&prefixes);
        let props: String = names.iter().map(|n| prefixes.empty_element(n)).collect();
        m.propstats("/f", "", &[(404, props)]);
        let answer = m.finish();
        assert_eq!(answer.matches(long.as_str()).count(), 1);
        let doc = Document::parse(&answer).unwrap();
        let a = doc
            .descendants()
            .find(|n| n.tag_name().name() == "a")
            .unwrap();
        assert_eq!(a.tag_name().namespace(), Some(long.as_str()));
        let b = doc
            .descendants()
            .find(|n| n.tag_name().name() == "b")
            .unwrap();
        assert_eq!(b.tag_name().namespace().unwrap_or(""), "");
    }

    #[test]
    fn a_body_naming_more_properties_than_the_limit_is_refused() {
        let names = |n: usize| "<x:a/>".repeat(n);
        let find = |n| {
            format!(
                r#"<D:propfind xmlns:D="DAV:" xmlns:x="urn:x"><D:prop>{}</D:prop></D:propfind>"#,
                names(n)
            )
        };
        assert!(propfind(find(MAX_PROPERTY_NAMES).as_bytes()).is_ok());
        assert!(propfind(find(MAX_PROPERTY_NAMES + 1).as_bytes())
            .unwrap_err()
            .contains("more than 1000 properties"));
        let patch = |n| {
            format!(
                r#"<D:propertyupdate xmlns:D="DAV:" xmlns:x="urn:x"><D:remove><D:prop>{}</D:prop></D:remove></D:propertyupdate>"#,
                names(n)
            )
        };
        assert_eq!(
            proppatch(patch(MAX_PROPERTY_NAMES).as_bytes())
                .unwrap()
                .len(),
            MAX_PROPERTY_NAMES
        );
        assert!(proppatch(patch(MAX_PROPERTY_NAMES + 1).as_bytes())
            .unwrap_err()
            .contains("more than 1000 properties"));
    }

    #[test]
    fn property_values_keep_their_namespaces_when_serialized() {
        let changes = proppatch(
            br#"<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop><Z:a>x &amp; <Z:b q="1">y</Z:b></Z:a></D:prop></D:set><D:remove><D:prop><Z:c/></D:prop></D:remove></D:propertyupdate>"#,
        )
        .unwrap();
        let z = |n: &str| PropertyName {
            namespace: "urn:z".into(),
            local: n.into(),
        };
        assert_eq!(
            changes,
            vec![
                PropertyChange::Set(
                    z("a"),
                    r#"<a xmlns="urn:z">x &amp; <b xmlns="urn:z" q="1">y</b></a>"#.into()
                ),
                PropertyChange::Remove(z("c")),
            ]
        );
        // `xml:lang` keeps its prefix, the one the XML namespace may have.
        let lang = proppatch(br#"<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><b xmlns="urn:x" xml:lang="en">hi</b></D:prop></D:set></D:propertyupdate>"#).unwrap();
        let PropertyChange::Set(_, element) = &lang[0] else {
            panic!("{lang:?}")
        };
        assert_eq!(element, r#"<b xmlns="urn:x" xml:lang="en">hi</b>"#);
        Document::parse(&format!("<r>{element}</r>")).unwrap();
        // What was serialized parses again to the same value.
        let again = format!(
            "<r>{}</r>",
            r#"<a xmlns="urn:z">x &amp; <b xmlns="urn:z" q="1">y</b></a>"#
        );
        let doc = Document::parse(&again).unwrap();
        let a = doc.root_element().first_element_child().unwrap();
        assert_eq!(a.tag_name().namespace(), Some("urn:z"));
        assert_eq!(a.first_child().unwrap().text(), Some("x & "));
    }

    #[test]
    fn lock_bodies_give_scope_and_owner() {
        let info = lockinfo(
            br#"<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:shared/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner><D:href>mailto:a@b</D:href></D:owner></D:lockinfo>"#,
        )
        .unwrap()
        .unwrap();
        assert!(!info.exclusive);
        assert_eq!(
            info.owner.as_deref(),
            Some(r#"<owner xmlns="DAV:"><href xmlns="DAV:">mailto:a@b</href></owner>"#)
        );
        assert_eq!(lockinfo(b"  ").unwrap(), None);
        assert!(lockinfo(
            br#"<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope></D:lockinfo>"#
        )
        .is_err());
    }

    #[test]
    fn multistatus_bodies_escape_hrefs() {
        let mut m = Multistatus::new();
        m.status("/a&b", 423);
        m.propstats(
            "/c/",
            "",
            &[(
                200,
                "<D:resourcetype><D:collection/></D:resourcetype>".into(),
            )],
        );
        let body = m.finish();
        assert!(body.contains("<D:href>/a&amp;b</D:href><D:status>HTTP/1.1 423 Locked</D:status>"));
        assert!(body.contains("<D:status>HTTP/1.1 200 OK</D:status></D:propstat>"));
        Document::parse(&body).unwrap();
    }
}
