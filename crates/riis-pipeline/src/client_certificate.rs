//! The certificate a client presented in its TLS handshake (IIS's
//! `HTTP_SSL_CLIENT_CERT_INFO`, and the `CERT_*` server variables).
//!
//! The server verifies the chain during the handshake, against the site's
//! `client_certificate_ca`, and describes the end-entity certificate once per
//! connection; requests share that description.

use std::borrow::Cow;
use std::time::SystemTime;

/// A verified client certificate, described once per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The end-entity certificate, DER.
    pub der: Vec<u8>,
    /// The subject's distinguished name as the certificate holds it, in the
    /// order and form Windows writes one (`C=US, O=Contoso, CN=alice`):
    /// `CERT_SUBJECT`.
    pub subject: String,
    /// The issuer's distinguished name, in the same form: `CERT_ISSUER`.
    pub issuer: String,
    /// The serial number as IIS writes it, lower-case hex bytes joined by
    /// dashes (`0a-1b-2c`): `CERT_SERIALNUMBER`.
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
    /// The first value of a relative distinguished name attribute of the
    /// subject (`CN`, `O`, `OU`, `C`, …), unquoted.
    pub fn subject_field(&self, field: &str) -> Option<Cow<'_, str>> {
        dn_field(&self.subject, field)
    }

    /// The first value of an attribute of the issuer's name, unquoted.
    pub fn issuer_field(&self, field: &str) -> Option<Cow<'_, str>> {
        dn_field(&self.issuer, field)
    }
}

/// Writes a name's attributes as Windows's `CertNameToStr` does: `A=x, B=y`
/// in the certificate's order, a value holding a separator or a quote in
/// double quotes (an inner quote doubled). Multi-valued parts are joined by
/// ` + `.
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
            let quote = value.is_empty()
                || value.starts_with(' ')
                || value.ends_with(' ')
                || value.contains([',', '+', '=', '"', '\\', '<', '>', '#', ';', '\n', '\r']);
            if quote {
                out.push('"');
                out.push_str(&value.replace('"', "\"\""));
                out.push('"');
            } else {
                out.push_str(value);
            }
        }
    }
    out
}

/// The first value of `field` in a name [`write_distinguished_name`] wrote.
pub(crate) fn dn_field<'a>(name: &'a str, field: &str) -> Option<Cow<'a, str>> {
    dn_parts(name)
        .find(|(k, _)| k.eq_ignore_ascii_case(field))
        .map(|(_, v)| v)
}

/// The `(attribute, value)` pairs of a name [`write_distinguished_name`]
/// wrote, values unquoted.
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
            let value = if raw.contains("\"\"") {
                Cow::Owned(raw.replace("\"\"", "\""))
            } else {
                Cow::Borrowed(raw)
            };
            (value, quoted.get(end + 1..).unwrap_or(""))
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let field = |f| dn_field(&name, f).map(Cow::into_owned);
        assert_eq!(field("CN").as_deref(), Some("alice"));
        assert_eq!(field("cn").as_deref(), Some("alice"));
        assert_eq!(field("O").as_deref(), Some("Contoso, Ltd"));
        assert_eq!(field("OU").as_deref(), Some("Ops"));
        assert_eq!(field("C").as_deref(), Some("US"));
        assert_eq!(field("L"), None);
        let all: Vec<_> = dn_parts(&name).map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            all,
            [
                "C=US",
                "O=Contoso, Ltd",
                "OU=Ops",
                "OU=Say \"hi\"",
                "CN=alice"
            ]
        );
        assert_eq!(dn_field("", "CN"), None);
    }
}
