//! The certificate a client presented in its TLS handshake (IIS's
//! `HTTP_SSL_CLIENT_CERT_INFO`, and the `CERT_*` server variables).
//!
//! The server verifies the chain during the handshake, against the site's
//! `client_certificate_ca`, and describes the end-entity certificate once per
//! connection; requests share that description.
//!
//! Names are written as Windows's `CertNameToStr` writes them
//! (`C=US, O=Contoso, CN=alice`), with Windows's attribute names
//! ([`ATTRIBUTE_NAMES`]), so a rule written for IIS reads the same here.

use std::borrow::Cow;
use std::time::SystemTime;

/// A verified client certificate, described once per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The end-entity certificate, DER.
    pub der: Vec<u8>,
    /// The subject's distinguished name as the certificate holds it, in the
    /// order and form Windows writes one (`C=US, O=Contoso, CN=alice`):
    /// `CERT_SUBJECT`. See [`write_distinguished_name`].
    pub subject: String,
    /// The issuer's distinguished name, in the same form: `CERT_ISSUER`.
    pub issuer: String,
    /// The serial number as IIS writes it, lower-case hex bytes joined by
    /// dashes (`0a-1b-2c`), without DER's sign byte: `CERT_SERIALNUMBER`.
    pub serial_number: String,
    /// Lower-case hex SHA-256 of [`Self::der`]: `CERT_COOKIE`, a value
    /// unique to the certificate.
    pub fingerprint_sha256: String,
    /// Start of the validity period.
    pub not_before: SystemTime,
    /// End of the validity period.
    pub not_after: SystemTime,
}

impl ClientCertificate {
    /// The first value of an attribute of the subject's name (`CN`, `O`,
    /// `OU`, …; see [`canonical_attribute`]), unquoted.
    pub fn subject_field(&self, field: &str) -> Option<Cow<'_, str>> {
        dn_values(&self.subject, field).next()
    }

    /// Every value of an attribute of the subject's name, in order (a name
    /// may hold several `OU`s, or two `CN`s).
    pub fn subject_fields<'a>(&'a self, field: &str) -> impl Iterator<Item = Cow<'a, str>> + 'a {
        dn_values(&self.subject, field)
    }

    /// The first value of an attribute of the issuer's name, unquoted.
    pub fn issuer_field(&self, field: &str) -> Option<Cow<'_, str>> {
        dn_values(&self.issuer, field).next()
    }

    /// Every value of an attribute of the issuer's name, in order.
    pub fn issuer_fields<'a>(&'a self, field: &str) -> impl Iterator<Item = Cow<'a, str>> + 'a {
        dn_values(&self.issuer, field)
    }
}

/// Windows's names of the attributes of a distinguished name, by object
/// identifier (`CertNameToStr` with `CERT_X500_NAME_STR`). Others are
/// written `OID.1.2.3`.
pub const ATTRIBUTE_NAMES: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.4", "SN"),
    ("2.5.4.5", "SERIALNUMBER"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "S"),
    ("2.5.4.9", "STREET"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.12", "T"),
    ("2.5.4.13", "Description"),
    ("2.5.4.17", "PostalCode"),
    ("2.5.4.42", "G"),
    ("2.5.4.43", "I"),
    ("1.2.840.113549.1.9.1", "E"),
    ("0.9.2342.19200300.100.1.25", "DC"),
];

/// The attribute name Windows writes for an object identifier (dotted),
/// or `OID.` and the identifier.
pub fn attribute_name(oid: &str) -> Cow<'static, str> {
    ATTRIBUTE_NAMES.iter().find(|(o, _)| *o == oid).map_or_else(
        || Cow::Owned(format!("OID.{oid}")),
        |(_, n)| Cow::Borrowed(*n),
    )
}

/// The attribute name a rule means, as [`write_distinguished_name`] writes
/// it: Windows's names in any case, the usual other spellings (`ST`,
/// `Email`, `emailAddress`, `GN`, `givenName`, `surname`, `title`), or
/// `OID.` and a dotted identifier. `None` for anything else, which could
/// never match.
pub fn canonical_attribute(name: &str) -> Option<Cow<'static, str>> {
    const ALIASES: &[(&str, &str)] = &[
        ("ST", "S"),
        ("EMAIL", "E"),
        ("EMAILADDRESS", "E"),
        ("GN", "G"),
        ("GIVENNAME", "G"),
        ("SURNAME", "SN"),
        ("TITLE", "T"),
        ("STATE", "S"),
    ];
    if let Some((_, n)) = ATTRIBUTE_NAMES
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(name))
    {
        return Some(Cow::Borrowed(n));
    }
    if let Some((_, n)) = ALIASES.iter().find(|(a, _)| a.eq_ignore_ascii_case(name)) {
        return Some(Cow::Borrowed(n));
    }
    let oid = name
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("OID."))
        .map(|_| &name[4..])?;
    let well_formed = !oid.is_empty()
        && oid
            .split('.')
            .all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()));
    well_formed.then(|| attribute_name(oid))
}

/// Whether a value is written in quotes.
fn needs_quotes(value: &str) -> bool {
    value.is_empty()
        || value.starts_with(' ')
        || value.ends_with(' ')
        || value.chars().any(|c| {
            matches!(c, ',' | '+' | '=' | '"' | '\\' | '<' | '>' | '#' | ';') || c.is_control()
        })
}

/// Writes a name's attributes as Windows's `CertNameToStr` does: `A=x, B=y`
/// in the certificate's order, multi-valued parts joined by ` + `. A value
/// holding a separator, a quote, a backslash or a control character is
/// written in double quotes, an inner quote doubled; inside the quotes a
/// backslash and each control character (C0, DEL, C1) are written as `\`
/// and two hex digits per byte (RFC 4514 §2.4), so no value can end a log
/// line or carry a NUL to a C string.
pub fn write_distinguished_name<'a>(
    parts: impl IntoIterator<Item = impl IntoIterator<Item = (&'a str, &'a str)>>,
) -> String {
    let mut out = String::new();
    for (i, rdn) in parts.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        for (j, (key, value)) in rdn.into_iter().enumerate() {
            if j > 0 {
                out.push_str(" + ");
            }
            out.push_str(key);
            out.push('=');
            if !needs_quotes(value) {
                out.push_str(value);
                continue;
            }
            out.push('"');
            for c in value.chars() {
                match c {
                    '"' => out.push_str("\"\""),
                    '\\' => out.push_str("\\5C"),
                    c if c.is_control() => {
                        let mut utf8 = [0u8; 4];
                        for b in c.encode_utf8(&mut utf8).bytes() {
                            out.push_str(&format!("\\{b:02X}"));
                        }
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
        }
    }
    out
}

/// Every value of `field` in a name [`write_distinguished_name`] wrote,
/// the field named as [`canonical_attribute`] takes it.
pub(crate) fn dn_values<'a>(name: &'a str, field: &str) -> impl Iterator<Item = Cow<'a, str>> + 'a {
    let wanted = canonical_attribute(field);
    dn_parts(name).filter_map(move |(k, v)| {
        let wanted = wanted.as_deref()?;
        k.eq_ignore_ascii_case(wanted).then_some(v)
    })
}

/// The `(attribute, value)` pairs of a name [`write_distinguished_name`]
/// wrote, values unquoted and unescaped.
fn dn_parts(name: &str) -> impl Iterator<Item = (&str, Cow<'_, str>)> {
    let mut rest = name;
    std::iter::from_fn(move || {
        let (key, after) = rest.split_once('=')?;
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            // A quoted value ends at a quote that is not doubled.
            let bytes = quoted.as_bytes();
            let mut end = 0;
            while end < bytes.len() {
                if bytes[end] == b'"' {
                    if bytes.get(end + 1) == Some(&b'"') {
                        end += 2;
                        continue;
                    }
                    break;
                }
                end += 1;
            }
            let raw = &quoted[..end];
            (unescape(raw), quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = [", ", " + "]
                .iter()
                .filter_map(|sep| after.find(sep))
                .min()
                .unwrap_or(after.len());
            (Cow::Borrowed(&after[..end]), &after[end..])
        };
        rest = next
            .strip_prefix(", ")
            .or_else(|| next.strip_prefix(" + "))
            .unwrap_or(next);
        Some((key.trim(), value))
    })
}

/// A quoted value's text: doubled quotes and `\XX` escapes undone.
fn unescape(raw: &str) -> Cow<'_, str> {
    if !raw.contains(['"', '\\']) {
        return Cow::Borrowed(raw);
    }
    let mut bytes = Vec::with_capacity(raw.len());
    let mut rest = raw.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        match (b, tail) {
            (b'"', [b'"', more @ ..]) => {
                bytes.push(b'"');
                rest = more;
            }
            (b'\\', [h, l, more @ ..]) => {
                let hex = |d: u8| (d as char).to_digit(16);
                match (hex(*h), hex(*l)) {
                    (Some(h), Some(l)) => bytes.push((h * 16 + l) as u8),
                    _ => bytes.extend_from_slice(&[b'\\', *h, *l]),
                }
                rest = more;
            }
            _ => {
                bytes.push(b);
                rest = tail;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(name: &str, field: &str) -> Vec<String> {
        dn_values(name, field).map(Cow::into_owned).collect()
    }

    #[test]
    fn names_are_written_and_read_back() {
        let name = write_distinguished_name([
            vec![("C", "US")],
            vec![("O", "Contoso, Ltd")],
            vec![("OU", "Ops"), ("OU", "Say \"hi\"")],
            vec![("CN", "alice")],
        ]);
        assert_eq!(
            name,
            "C=US, O=\"Contoso, Ltd\", OU=Ops + OU=\"Say \"\"hi\"\"\", CN=alice"
        );
        assert_eq!(values(&name, "CN"), ["alice"]);
        assert_eq!(values(&name, "cn"), ["alice"]);
        assert_eq!(values(&name, "O"), ["Contoso, Ltd"]);
        assert_eq!(values(&name, "OU"), ["Ops", "Say \"hi\""]);
        assert_eq!(values(&name, "C"), ["US"]);
        assert!(values(&name, "L").is_empty());
        assert!(values("", "CN").is_empty());
    }

    #[test]
    fn control_characters_and_backslashes_are_escaped() {
        let name = write_distinguished_name([
            vec![("O", "x\nforged line")],
            vec![("CN", "admin\0.evil")],
            vec![("OU", "a\\b")],
        ]);
        assert_eq!(
            name,
            "O=\"x\\0Aforged line\", CN=\"admin\\00.evil\", OU=\"a\\5Cb\""
        );
        assert!(!name.contains(['\n', '\0']));
        assert_eq!(values(&name, "O"), ["x\nforged line"]);
        assert_eq!(values(&name, "CN"), ["admin\0.evil"]);
        assert_eq!(values(&name, "OU"), ["a\\b"]);
    }

    #[test]
    fn attribute_names_are_windows_s_and_aliases_are_understood() {
        assert_eq!(attribute_name("2.5.4.8"), "S");
        assert_eq!(attribute_name("1.2.840.113549.1.9.1"), "E");
        assert_eq!(attribute_name("1.2.3"), "OID.1.2.3");
        for (alias, name) in [
            ("st", "S"),
            ("Email", "E"),
            ("emailAddress", "E"),
            ("cn", "CN"),
            ("givenName", "G"),
            ("oid.2.5.4.3", "CN"),
            ("OID.1.2.3", "OID.1.2.3"),
        ] {
            assert_eq!(canonical_attribute(alias).as_deref(), Some(name), "{alias}");
        }
        for bad in ["", "XYZ", "OID.", "OID.1..2", "OID.a"] {
            assert_eq!(canonical_attribute(bad), None, "{bad}");
        }
        assert_eq!(values("S=WA, E=m@x", "ST"), ["WA"]);
        assert_eq!(values("S=WA, E=m@x", "email"), ["m@x"]);
    }
}
