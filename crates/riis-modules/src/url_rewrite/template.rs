//! Templates (`{R:1}`, `{HTTP_HOST}`, `{ToLower:…}`, `{Map:…}`): parsed
//! once, expanded per request with the encoding each value needs where it
//! stands in a URL.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};
use riis_pipeline::HttpContext;

use super::pattern::Groups;
use super::RewriteMap;

/// A template: literal text and references, parsed once.
#[derive(Debug, Default)]
pub(super) struct Template {
    pub(super) pieces: Vec<Piece>,
    /// The first piece of the query: the template's first literal `?`
    /// starts it (values after it are encoded as query components).
    pub(super) query_at: Option<usize>,
    /// Whether the template is a URL with a scheme (`https://`) rather
    /// than a path on this site.
    pub(super) scheme: Scheme,
    /// For [`Scheme::Expanded`], the references before the template's own
    /// `://`: what they expand to is checked alone, since a value may hold
    /// a `://` of its own (`X-Forwarded-Proto: https://evil/?`). For
    /// [`Scheme::FromMap`], the leading map lookup.
    pub(super) scheme_part: Option<Box<Template>>,
}

#[derive(Debug)]
pub(super) enum Piece {
    Text(String),
    /// `{R:n}`.
    RuleGroup(usize),
    /// `{C:n}`.
    ConditionGroup(usize),
    /// `{NAME}`.
    Variable(String),
    /// `{ToLower:…}` and the other functions: a value made from the inner
    /// template's.
    Function(Function, Box<Template>),
    /// `{MapName:…}`: the rewrite map's value for the inner template's, by
    /// the map's index in the section (set once the section's maps are
    /// known).
    Map {
        name: String,
        index: usize,
        key: Box<Template>,
    },
}

/// IIS URL Rewrite's template functions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Function {
    /// Lower case (Unicode).
    ToLower,
    /// Encoded as a form value: `+` for a space, `%XX` for all but
    /// letters, digits and `-_.!*()` (.NET's `HttpUtility.UrlEncode`).
    UrlEncode,
    /// `%XX` and `+` decoded.
    UrlDecode,
    /// `%XX` for all but RFC 3986's unreserved characters (.NET's
    /// `Uri.EscapeDataString`).
    EscapeDataString,
    /// `&`, `<`, `>`, `"` and `'` as HTML character references (.NET's
    /// `HttpUtility.HtmlEncode`): what IIS's reference asks outbound rules
    /// to put around values a client sent (`{HtmlEncode:{HTTP_REFERER}}`).
    HtmlEncode,
}

/// What `{UrlEncode:…}` leaves as it is.
pub(super) const FORM_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'*')
    .remove(b'(')
    .remove(b')');
/// What `{EscapeDataString:…}` leaves as it is: RFC 3986's unreserved.
pub(super) const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl Function {
    pub(super) fn named(name: &str) -> Option<Function> {
        [
            ("ToLower", Function::ToLower),
            ("UrlEncode", Function::UrlEncode),
            ("UrlDecode", Function::UrlDecode),
            ("EscapeDataString", Function::EscapeDataString),
            ("HtmlEncode", Function::HtmlEncode),
        ]
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, f)| f)
    }

    pub(super) fn apply(self, value: String) -> String {
        match self {
            Function::ToLower => value.to_lowercase(),
            Function::UrlEncode => utf8_percent_encode(&value, FORM_VALUE)
                .to_string()
                .replace("%20", "+"),
            Function::UrlDecode => percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned(),
            Function::EscapeDataString => utf8_percent_encode(&value, UNRESERVED).to_string(),
            Function::HtmlEncode => riis_pipeline::escape_html(&value),
        }
    }
}

impl Piece {
    /// Whether the value comes decoded (from the decoded path): it needs
    /// encoding in a URL, `%` included.
    pub(super) fn is_decoded(&self) -> bool {
        match self {
            Piece::RuleGroup(_) => true,
            Piece::Variable(name) => name == "URL" || name == "REQUEST_FILENAME",
            Piece::Function(Function::ToLower | Function::HtmlEncode, inner) => {
                inner.has_decoded_values()
            }
            Piece::Function(Function::UrlDecode, _) => true,
            // Encoded by the function; a map's values are the
            // configuration's own text.
            Piece::Function(Function::UrlEncode | Function::EscapeDataString, _)
            | Piece::Map { .. }
            | Piece::Text(_)
            | Piece::ConditionGroup(_) => false,
        }
    }

    /// Whether the piece may give a URL's scheme: a server variable not
    /// from the path, a condition group, a rewrite map's value (the
    /// configuration's own text, whatever its key), or a function of
    /// those; not a back-reference from the path, nor literal text.
    fn may_name_scheme(&self) -> bool {
        match self {
            Piece::Map { .. } | Piece::ConditionGroup(_) => true,
            Piece::Variable(_) => !self.is_decoded(),
            Piece::Function(_, inner) => {
                !inner.pieces.is_empty() && inner.pieces.iter().all(Piece::may_name_scheme)
            }
            Piece::RuleGroup(_) | Piece::Text(_) => false,
        }
    }

    /// Whether the piece may name the host after a leading map's scheme:
    /// the rule's text or a server variable not from the path
    /// (`{HTTP_HOST}`).
    fn may_name_host(&self) -> bool {
        match self {
            Piece::Text(_) => true,
            Piece::Variable(_) => !self.is_decoded(),
            _ => false,
        }
    }

    /// The template inside a function or map lookup.
    fn inner(&self) -> Option<&Template> {
        match self {
            Piece::Function(_, inner) | Piece::Map { key: inner, .. } => Some(inner),
            _ => None,
        }
    }

    /// Parses what stands between a template's braces.
    pub(super) fn parse(name: &str, depth: u8) -> Result<Piece, String> {
        let group = |prefix: &str| {
            name.strip_prefix(prefix)
                .map(|n| n.parse::<usize>().ok().filter(|&n| n <= 9))
        };
        match (group("R:"), group("C:")) {
            (Some(Some(n)), _) => return Ok(Piece::RuleGroup(n)),
            (_, Some(Some(n))) => return Ok(Piece::ConditionGroup(n)),
            (Some(None), _) | (_, Some(None)) => {
                return Err(format!(
                    "`{{{name}}}`: back-references are {{R:0}} to {{R:9}} and {{C:0}} to {{C:9}}"
                ))
            }
            _ => {}
        }
        if let Some((called, inner)) = name.split_once(':') {
            if is_group_letter(called) {
                return Err(format!(
                    "`{{{name}}}`: back-references are {{R:0}} to {{R:9}} and {{C:0}} to {{C:9}}"
                ));
            }
            if !is_identifier(called) {
                return Err(format!(
                    "`{{{name}}}`: `{called}` is neither a function (ToLower, UrlEncode, UrlDecode, EscapeDataString, HtmlEncode) nor a rewrite map's name"
                ));
            }
            if inner.is_empty() {
                return Err(format!("`{{{name}}}` has nothing to work on"));
            }
            if depth >= MAX_NESTING {
                return Err(format!(
                    "`{{{name}}}`: functions and maps nest at most {MAX_NESTING} deep"
                ));
            }
            let inner = Box::new(Template::parse_nested(inner, depth + 1)?);
            return Ok(match Function::named(called) {
                Some(function) => Piece::Function(function, inner),
                None => Piece::Map {
                    name: called.to_owned(),
                    index: usize::MAX,
                    key: inner,
                },
            });
        }
        if is_identifier(name) {
            return Ok(Piece::Variable(name.to_ascii_uppercase()));
        }
        Err(format!(
            "`{{{name}}}` is neither a back-reference, a server variable, a function nor a rewrite map lookup"
        ))
    }
}

/// How deep `{ToLower:{Map:{…}}}` may nest.
pub(super) const MAX_NESTING: u8 = 8;

/// Whether `name` is letters, digits and `_` (a server variable's or a
/// map's name).
pub(super) fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `R` or `C`, the back-references' letters.
pub(super) fn is_group_letter(name: &str) -> bool {
    name.eq_ignore_ascii_case("R") || name.eq_ignore_ascii_case("C")
}

/// The offset of the `}` that closes the `{` `text` starts with.
pub(super) fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (at, byte) in text.bytes().enumerate() {
        match byte {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(at);
                }
            }
            _ => {}
        }
    }
    None
}

impl Template {
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        Template::parse_nested(text, 0)
    }

    /// A template `depth` functions or maps deep.
    pub(super) fn parse_nested(text: &str, depth: u8) -> Result<Self, String> {
        let mut template = Template {
            scheme: scheme_of(text),
            ..Template::default()
        };
        if template.scheme == Scheme::Expanded {
            let (before, _) = text.split_once("://").unwrap_or_default();
            template.scheme_part = Some(Box::new(Template::parse(before)?));
        }
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                template.push_text(&rest[..open]);
            }
            let Some(close) = closing_brace(&rest[open..]) else {
                return Err(format!("`{text}`: a `{{` has no closing `}}`"));
            };
            let name = &rest[open + 1..open + close];
            template.pieces.push(Piece::parse(name, depth)?);
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            template.push_text(rest);
        }
        // `{MapSSL:{HTTPS}}{HTTP_HOST}{REQUEST_URI}`, the map's values being
        // `https://` and `http://` (IIS's rewrite map recipe). The host that
        // follows the map must be the rule's text or a server variable, not
        // a value from the path or a condition's group
        // (`{MapSSL:{HTTPS}}{R:1}`, an open redirect): otherwise the
        // template stays a path on this site.
        if template.scheme == Scheme::None
            && matches!(template.pieces.first(), Some(Piece::Map { .. }))
            && template.pieces.get(1).is_some_and(Piece::may_name_host)
        {
            // The lookup again, for its own expansion (pieces do not clone).
            let close = closing_brace(text).unwrap_or_default();
            template.scheme = Scheme::FromMap;
            template.scheme_part = Some(Box::new(Template {
                pieces: vec![Piece::parse(&text[1..close], depth)?],
                ..Template::default()
            }));
        }
        Ok(template)
    }

    /// Literal text; its first `?` (the first of the template) starts the
    /// query.
    fn push_text(&mut self, text: &str) {
        match text.find('?').filter(|_| self.query_at.is_none()) {
            Some(at) => {
                if at > 0 {
                    self.pieces.push(Piece::Text(text[..at].to_owned()));
                }
                self.query_at = Some(self.pieces.len());
                self.pieces.push(Piece::Text(text[at..].to_owned()));
            }
            None => self.pieces.push(Piece::Text(text.to_owned())),
        }
    }

    /// Whether any value comes from the decoded path.
    pub(super) fn has_decoded_values(&self) -> bool {
        self.pieces.iter().any(Piece::is_decoded)
    }

    /// Whether any piece, at any depth, is one `is` picks.
    fn any_piece(&self, is: &impl Fn(&Piece) -> bool) -> bool {
        self.pieces
            .iter()
            .any(|p| is(p) || p.inner().is_some_and(|inner| inner.any_piece(is)))
    }

    pub(super) fn uses_condition_groups(&self) -> bool {
        self.any_piece(&|p| matches!(p, Piece::ConditionGroup(_)))
    }

    /// Whether the template names a `{R:n}` (a rule knows it from
    /// [`Template::highest_rule_group`]).
    #[cfg(test)]
    pub(super) fn uses_rule_groups(&self) -> bool {
        self.highest_rule_group().is_some()
    }

    /// The highest `{R:n}` the template names, inner templates included.
    pub(super) fn highest_rule_group(&self) -> Option<usize> {
        self.pieces
            .iter()
            .filter_map(|p| match p {
                Piece::RuleGroup(n) => Some(*n),
                p => p.inner().and_then(Template::highest_rule_group),
            })
            .max()
    }

    /// Whether what the template gives is the configuration's own text:
    /// literal text, map values, and condition groups when the condition's
    /// input was (`groups_from_config`).
    pub(super) fn is_from_config(&self, groups_from_config: bool) -> bool {
        self.pieces.iter().all(|p| match p {
            Piece::Text(_) | Piece::Map { .. } => true,
            Piece::ConditionGroup(_) => groups_from_config,
            _ => false,
        })
    }

    /// Finds the maps the template reads, by name.
    pub(super) fn resolve_maps(&mut self, maps: &[RewriteMap]) -> Result<(), String> {
        if let Some(part) = &mut self.scheme_part {
            part.resolve_maps(maps)?;
        }
        for piece in &mut self.pieces {
            match piece {
                Piece::Map { name, index, key } => {
                    *index = maps
                        .iter()
                        .position(|m| m.name.eq_ignore_ascii_case(name))
                        .ok_or_else(|| {
                            format!("`{{{name}:…}}` names no function and no rewrite map in `rewrite.maps`")
                        })?;
                    key.resolve_maps(maps)?;
                }
                Piece::Function(_, inner) => inner.resolve_maps(maps)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Where a template's scheme comes from.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(super) enum Scheme {
    /// None: the template is a path on this site.
    #[default]
    None,
    /// Literal text (`https://…`).
    Literal,
    /// Server variables, condition groups or rewrite map values
    /// (`{C:1}://…`, `{HTTP_X_FORWARDED_PROTO}://…`,
    /// `{MapProtocol:{HTTPS}}://…`): the expanded value must be `http` or
    /// `https`, so a header cannot pick another host's form.
    Expanded,
    /// A leading rewrite map lookup whose value may hold the scheme and
    /// its `://` (`{MapSSL:{HTTPS}}{HTTP_HOST}…`, the map giving
    /// `https://`): a URL when the value is exactly `http://` or
    /// `https://`, a path on this site otherwise.
    FromMap,
}

/// The scheme of a template's `text`: its part before the first `://` (if
/// that comes before any `?`) is a literal scheme, or references only
/// (server variables, condition groups, rewrite map values and functions
/// of them, never a back-reference from the path).
pub(super) fn scheme_of(text: &str) -> Scheme {
    let Some((before, _)) = text.split_once("://") else {
        return Scheme::None;
    };
    if before.contains('?') {
        return Scheme::None;
    }
    if is_scheme(before) {
        return Scheme::Literal;
    }
    // `before` holds no `://`: parsing it asks for no scheme of its own.
    let references_only = Template::parse(before)
        .is_ok_and(|t| !t.pieces.is_empty() && t.pieces.iter().all(Piece::may_name_scheme));
    if references_only {
        Scheme::Expanded
    } else {
        Scheme::None
    }
}

/// What a decoded value (`{R:n}`, `{URL}`) encodes in a URL path. `@`
/// too: right after a template's host (`https://example.com{R:1}`) a value
/// starting with `@` would turn that host into user information.
pub(super) const PATH_PART: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'\\')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'`')
    .add(b'{')
    .add(b'}');
/// What a value encodes within a URL's host name: also `/`, so that it
/// cannot end the name (`?`, `#`, `@` and `\\` are encoded already).
pub(super) const HOST_PART: &AsciiSet = &PATH_PART.add(b'/');
/// What a decoded value encodes in a query: also what separates
/// parameters, so a value stays one value.
pub(super) const QUERY_PART: &AsciiSet = &PATH_PART.add(b'&').add(b'=').add(b'+').add(b';');
/// What other values (server variables, already encoded) encode: only
/// what no URL may hold.
pub(super) const ANY_PART: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'\\')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// What a template's literal text encodes in a URL.
pub(super) const LITERAL_PART: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'<').add(b'>').add(b'`');

/// What a walk over the rules has to expand templates with.
pub(super) struct Scope<'a> {
    pub(super) rule: Option<Groups<'a>>,
    /// The last matching condition's groups.
    pub(super) condition: Option<ConditionGroups>,
    /// The path as rewritten so far (with its leading `/`), decoded.
    pub(super) url: &'a str,
    /// The section's rewrite maps.
    pub(super) maps: &'a [RewriteMap],
}

/// The groups of the last condition pattern that matched.
pub(super) struct ConditionGroups {
    pub(super) groups: Vec<Option<String>>,
    /// They come from the decoded path.
    pub(super) decoded: bool,
    /// They are the configuration's own text (map values).
    pub(super) from_config: bool,
}

/// Where a template's server variables come from: the request itself
/// (inbound rules, outbound header rules), or values taken from it when
/// the response's body started (outbound body rules, which run inside the
/// HTML rewriter, away from the request).
pub(super) trait Variables {
    /// A server variable; `RESPONSE_*` is a response header. Empty when
    /// there is none.
    fn variable(&mut self, name: &str) -> String;
    /// `{REQUEST_FILENAME}`: the physical path of the URL path `url`.
    fn physical_path(&mut self, url: &str) -> String;
}

/// The request's own variables.
pub(super) struct RequestVariables<'a> {
    pub(super) ctx: &'a mut HttpContext,
    pub(super) file: &'a mut FileName,
}

impl Variables for RequestVariables<'_> {
    fn variable(&mut self, name: &str) -> String {
        variable_of(self.ctx, name)
    }

    fn physical_path(&mut self, url: &str) -> String {
        self.file.of(self.ctx, url).to_owned()
    }
}

/// Server variable `name` of the request; `RESPONSE_Content_Type` is the
/// response's `Content-Type` (several values joined with `, `), as IIS's
/// outbound rules name response headers.
pub(super) fn variable_of(ctx: &HttpContext, name: &str) -> String {
    // IIS's status variables, not headers (the `IsRedirection`
    // precondition reads `{RESPONSE_STATUS}`).
    if name == "RESPONSE_STATUS" {
        return ctx.response().status().as_u16().to_string();
    }
    if name == "RESPONSE_SUBSTATUS" {
        return ctx.response().substatus().to_string();
    }
    if let Some(header) = name.strip_prefix("RESPONSE_") {
        let header = header.to_ascii_lowercase().replace('_', "-");
        let mut joined = String::new();
        for value in ctx.response().headers().get_all(header.as_str()) {
            if !joined.is_empty() {
                joined.push_str(", ");
            }
            joined.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
        return joined;
    }
    ctx.server_variable(name)
        .map(|v| v.into_owned())
        .unwrap_or_default()
}

/// `{REQUEST_FILENAME}` for the walk's current URL, found once.
#[derive(Default)]
pub(super) struct FileName {
    pub(super) url: String,
    pub(super) path: Option<String>,
}

impl FileName {
    fn of(&mut self, ctx: &mut HttpContext, url: &str) -> &str {
        if self.path.is_none() || self.url != url {
            self.url = url.to_owned();
            self.path = Some(
                physical_path(ctx, url)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        }
        self.path.as_deref().unwrap_or("")
    }
}

/// Expands `template`; `in_url` encodes the values for a URL (as path or
/// query, by where they stand).
pub(super) fn expand(
    vars: &mut dyn Variables,
    template: &Template,
    scope: &Scope<'_>,
    in_url: bool,
) -> String {
    let mut out = String::new();
    for (i, piece) in template.pieces.iter().enumerate() {
        let in_query = template.query_at.is_some_and(|q| i >= q);
        let push = |out: &mut String, value: &str, decoded: bool| {
            if !in_url {
                out.push_str(value);
                return;
            }
            let end = host_so_far(out).filter(|_| !in_query).map(HostEnd::of);
            let in_name = matches!(end, Some(HostEnd::Name));
            if end.is_some_and(|end| !end.takes(value)) {
                out.push('/');
            }
            let set = match (decoded, in_query) {
                // Part of a host name: nothing that would end it.
                _ if in_name => HOST_PART,
                (true, false) => PATH_PART,
                (true, true) => QUERY_PART,
                // Server variables keep their own encoding, `?` included:
                // `https://{HTTP_HOST}{REQUEST_URI}` carries the query.
                (false, _) => ANY_PART,
            };
            out.extend(utf8_percent_encode(value, set));
        };
        match piece {
            // The rule's own text: only what no URL may hold is encoded
            // (spaces, non-ASCII), its `%` escapes kept.
            Piece::Text(text) if in_url => out.extend(utf8_percent_encode(text, LITERAL_PART)),
            Piece::Text(text) => out.push_str(text),
            Piece::RuleGroup(n) => {
                let value = scope.rule.as_ref().and_then(|c| c.get(*n)).unwrap_or("");
                push(&mut out, value, true);
            }
            Piece::ConditionGroup(n) => {
                let (value, decoded) = scope
                    .condition
                    .as_ref()
                    .map(|c| {
                        (
                            c.groups.get(*n).cloned().flatten().unwrap_or_default(),
                            c.decoded,
                        )
                    })
                    .unwrap_or_default();
                push(&mut out, &value, decoded);
            }
            Piece::Function(function, inner) => {
                let value = function.apply(expand(vars, inner, scope, false));
                push(&mut out, &value, piece.is_decoded());
            }
            Piece::Map { index, key, .. } => {
                // The configuration's own text: written as it is.
                let key = expand(vars, key, scope, false);
                let value = scope.maps[*index].lookup(&key);
                if in_url {
                    out.extend(utf8_percent_encode(value, ANY_PART));
                } else {
                    out.push_str(value);
                }
            }
            Piece::Variable(name) => match name.as_str() {
                "URL" => push(&mut out, scope.url, true),
                "REQUEST_FILENAME" => {
                    let path = vars.physical_path(scope.url);
                    push(&mut out, &path, true);
                }
                _ => {
                    let value = vars.variable(name);
                    push(&mut out, &value, false);
                }
            },
        }
    }
    out
}

/// Where a URL's host stands when a value from the request comes: the
/// value is part of the name right after the `://`, a `.` or a `-`
/// (`https://{R:1}.example.com`, `https://{HTTP_HOST}/…`), and is then
/// encoded so that it cannot end it (`evil.test/` or `@` stay in the
/// name, which is then no host); a port after a `:`; and after a whole
/// name (`https://example.com{R:1}`, `https://{HTTP_HOST}{C:1}`) it starts
/// the path, unless it is a `:port` or starts the path, query or fragment
/// itself. A value that does not fit gets a `/` before it: it cannot
/// lengthen the host into another (`.evil.test`), make it user
/// information (`@evil.test`), nor give it a port that is none.
#[derive(Clone, Copy)]
enum HostEnd {
    Name,
    Port,
    Whole,
}

impl HostEnd {
    fn of(host: &str) -> Self {
        match host.chars().last() {
            None | Some('.' | '-') => Self::Name,
            Some(':') => Self::Port,
            Some(_) => Self::Whole,
        }
    }

    /// Whether `value` goes on as it is (see [`HostEnd`]).
    fn takes(self, value: &str) -> bool {
        let is_port = |v: &str| v.bytes().all(|b| b.is_ascii_digit());
        match self {
            _ if value.is_empty() => true,
            Self::Name => true,
            Self::Port => is_port(value),
            Self::Whole => {
                value.starts_with(['/', '?', '#'])
                    || value
                        .strip_prefix(':')
                        .is_some_and(|port| !port.is_empty() && is_port(port))
            }
        }
    }
}

/// The host (and port) `out` has so far, when it is a URL whose path has
/// not started: what follows its `://` (empty right after it).
fn host_so_far(out: &str) -> Option<&str> {
    out.split_once("://")
        .map(|(_, rest)| rest)
        .filter(|rest| !rest.contains(['/', '?', '#']))
}

/// The physical path of a URL path, unless it has a `..` segment.
pub(super) fn physical_path(ctx: &mut HttpContext, url: &str) -> Option<std::path::PathBuf> {
    if url.split('/').any(|segment| segment == "..") {
        return None;
    }
    Some(ctx.map_path(url))
}

/// Whether `url` starts with a scheme and `://`.
pub(super) fn has_scheme(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| is_scheme(scheme))
}

/// Whether `text` is a URI scheme (RFC 3986 §3.1: a letter, then letters,
/// digits, `+`, `-` and `.`).
fn is_scheme(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_url_is_absolute_only_with_a_scheme() {
        assert_eq!(
            scheme_of("https://{HTTP_HOST}{REQUEST_URI}"),
            Scheme::Literal
        );
        assert_eq!(
            scheme_of("{HTTP_X_FORWARDED_PROTO}://{HTTP_HOST}/x"),
            Scheme::Expanded
        );
        assert_eq!(scheme_of("{C:1}://www.example.com/{R:1}"), Scheme::Expanded);
        assert_eq!(scheme_of("{R:1}"), Scheme::None);
        assert_eq!(scheme_of("{R:1}://evil.test/"), Scheme::None);
        assert_eq!(scheme_of("{URL}://evil.test/"), Scheme::None);
        // A rewrite map's value is the configuration's, whatever its key.
        assert_eq!(
            scheme_of("{MapProtocol:{HTTPS}}://www.example.com/{R:1}"),
            Scheme::Expanded
        );
        assert_eq!(scheme_of("{Map:{R:1}}://x/"), Scheme::Expanded);
        assert_eq!(scheme_of("{ToLower:{C:1}}://x/"), Scheme::Expanded);
        assert_eq!(scheme_of("{ToLower:{R:1}}://x/"), Scheme::None);
        assert_eq!(scheme_of("{C:1}s://x/"), Scheme::None);
        assert_eq!(scheme_of("/go/{R:1}"), Scheme::None);
        assert_eq!(
            scheme_of("/index.cgi?next=https://example.com/"),
            Scheme::None
        );
        assert_eq!(scheme_of("a b://x"), Scheme::None);
    }

    #[test]
    fn a_template_knows_where_its_query_starts() {
        let t = Template::parse("index.php?route={R:1}&x=1").unwrap();
        assert_eq!(t.query_at, Some(1));
        assert!(matches!(&t.pieces[1], Piece::Text(q) if q == "?route="));
        assert!(matches!(t.pieces[2], Piece::RuleGroup(1)));
        let t = Template::parse("/new/{R:1}").unwrap();
        assert_eq!(t.query_at, None);
        assert!(Template::parse("{R:10}").is_err());
        assert!(Template::parse("{R:1").is_err());
    }

    #[test]
    fn functions_and_maps_nest_in_templates() {
        let t = Template::parse("/{ToLower:{R:1}}/{Legacy:{UrlDecode:{QUERY_STRING}}}").unwrap();
        assert!(
            matches!(&t.pieces[1], Piece::Function(Function::ToLower, inner)
            if matches!(inner.pieces[..], [Piece::RuleGroup(1)]))
        );
        assert!(matches!(&t.pieces[3], Piece::Map { name, key, .. }
            if name == "Legacy" && matches!(key.pieces[..], [Piece::Function(Function::UrlDecode, _)])));
        assert!(t.uses_rule_groups());
        // A lower-cased capture is still decoded; a map's value is the
        // configuration's text.
        assert!(t.pieces[1].is_decoded());
        assert!(!t.pieces[3].is_decoded());
        assert!(Template::parse("{ToLower:}").is_err());
        assert!(Template::parse("{r:x}").is_err());
        assert!(Template::parse("{To Lower:{URL}}").is_err());
        let deep = format!("{}{{URL}}{}", "{ToLower:".repeat(9), "}".repeat(9));
        assert!(Template::parse(&deep).is_err());
        let ok = format!("{}{{URL}}{}", "{ToLower:".repeat(8), "}".repeat(8));
        assert!(Template::parse(&ok).is_ok());
    }

    #[test]
    fn functions_work_as_iis_documents_them() {
        let value = || "A b&c=d/é~*".to_owned();
        assert_eq!(Function::ToLower.apply(value()), "a b&c=d/é~*");
        assert_eq!(
            Function::UrlEncode.apply(value()),
            "A+b%26c%3Dd%2F%C3%A9%7E*"
        );
        assert_eq!(
            Function::EscapeDataString.apply(value()),
            "A%20b%26c%3Dd%2F%C3%A9~%2A"
        );
        assert_eq!(Function::UrlDecode.apply("a+b%26c%C3%A9".into()), "a b&cé");
        assert_eq!(
            Function::HtmlEncode.apply("<script>alert('x')</script>\"&é".into()),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;é"
        );
        assert!(Template::parse("{htmlencode:{HTTP_REFERER}}").is_ok());
    }
}
