//! The description of a client certificate that requests see: its names,
//! serial number, fingerprint and validity, read once per connection from
//! the DER the TLS handshake verified.

use std::time::{Duration, SystemTime};

use riis_pipeline::{attribute_name, write_distinguished_name, ClientCertificate};
use sha2::{Digest, Sha256};
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::prelude::{AttributeTypeAndValue, X509Name};

/// Describes a verified end-entity certificate; `None` if it does not parse
/// as X.509 (the handshake's verifier accepted it, so this is not expected).
pub fn describe(der: &[u8]) -> Option<ClientCertificate> {
    let (_, cert) = match x509_parser::parse_x509_certificate(der) {
        Ok(parsed) => parsed,
        Err(e) => {
            tracing::debug!(error = %e, "a verified client certificate does not parse");
            return None;
        }
    };
    // DER writes a serial whose first byte is 0x80 or more with a leading
    // zero (it is a signed integer); the number itself has no such byte.
    let serial = match cert.raw_serial() {
        [0, rest @ ..] if rest.first().is_some_and(|b| *b >= 0x80) => rest,
        serial => serial,
    };
    let serial_number = serial
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join("-");
    let time = |t: &x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        }
    };
    let validity = cert.validity();
    Some(ClientCertificate {
        der: der.to_vec(),
        subject: name(cert.subject()),
        issuer: name(cert.issuer()),
        serial_number,
        fingerprint_sha256: Sha256::digest(der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        not_before: time(&validity.not_before),
        not_after: time(&validity.not_after),
    })
}

/// Whether a certificate of a `client_certificate_ca` file can be trusted to
/// issue client certificates: a CA (basicConstraints cA, or a self-signed
/// version 1 certificate, which has no extensions), allowed to sign
/// certificates (keyUsage keyCertSign, when it has a keyUsage), and valid
/// now. A user's certificate put there by mistake would let its holder
/// issue certificates for anyone; OpenSSL refuses both, and an expired CA
/// as well.
pub fn check_ca(der: &[u8]) -> Result<(), String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("does not parse ({e})"))?;
    let constraints = cert
        .basic_constraints()
        .map_err(|e| format!("has a bad basicConstraints ({e})"))?;
    match constraints {
        Some(bc) if !bc.value.ca => {
            return Err("is not a CA certificate (basicConstraints has cA false)".to_owned())
        }
        Some(_) => {}
        None if cert.version() == x509_parser::x509::X509Version::V1
            && cert.subject().as_raw() == cert.issuer().as_raw() => {}
        None => return Err("is not a CA certificate (it has no basicConstraints)".to_owned()),
    }
    let usage = cert
        .key_usage()
        .map_err(|e| format!("has a bad keyUsage ({e})"))?;
    if usage.is_some_and(|u| !u.value.key_cert_sign()) {
        return Err("may not sign certificates (its keyUsage lacks keyCertSign)".to_owned());
    }
    let validity = cert.validity();
    if !validity.is_valid() {
        return Err(format!(
            "is not valid now (from {} to {})",
            validity.not_before, validity.not_after
        ));
    }
    Ok(())
}

/// Whether a revocation list of a `client_certificate_crl` file can be used:
/// it parses as rustls/webpki reads it (a delta CRL, or one with an unknown
/// critical extension, does not). `Ok` carries its next update when that
/// is already past: such a list still loads, but every certificate it
/// covers is refused until it is replaced, as OpenSSL refuses them, so the
/// caller warns.
pub fn check_crl(der: &[u8]) -> Result<Option<String>, String> {
    webpki::BorrowedCertRevocationList::from_der(der)
        .map_err(|e| format!("is not a usable revocation list ({e:?})"))?;
    let (_, crl) = x509_parser::parse_x509_crl(der)
        .map_err(|e| format!("is not a usable revocation list ({e})"))?;
    let now = x509_parser::time::ASN1Time::now();
    Ok(crl
        .next_update()
        .filter(|next| *next < now)
        .map(|next| next.to_string()))
}

/// A name as `C=US, O=Contoso, CN=alice`: attributes by Windows's names,
/// others as `OID.1.2.3` (see [`riis_pipeline::attribute_name`]).
fn name(name: &X509Name<'_>) -> String {
    let parts: Vec<Vec<(String, String)>> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type().to_id_string();
                    (attribute_name(&oid).into_owned(), value(attr))
                })
                .collect()
        })
        .collect();
    write_distinguished_name(
        parts
            .iter()
            .map(|rdn| rdn.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    )
}

/// An attribute's value as text: the string types as they are,
/// BMPString from UTF-16, UniversalString from UTF-32, anything else as
/// UTF-8 when it is, else Latin-1 (TeletexString in practice).
fn value(attr: &AttributeTypeAndValue<'_>) -> String {
    if let Ok(s) = attr.as_str() {
        return s.to_owned();
    }
    let bytes = attr.as_slice();
    match attr.attr_value().tag() {
        Tag::BmpString => {
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        Tag::UniversalString => bytes
            .chunks(4)
            .map(|c| {
                let mut unit = [0u8; 4];
                unit[..c.len()].copy_from_slice(c);
                char::from_u32(u32::from_be_bytes(unit)).unwrap_or('\u{FFFD}')
            })
            .collect(),
        _ => match std::str::from_utf8(bytes) {
            Ok(text) => text.to_owned(),
            Err(_) => bytes.iter().map(|&b| b as char).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_described_by_its_names_serial_and_fingerprint() {
        let mut params = rcgen::CertificateParams::new(vec!["alice.test".to_owned()]).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "US");
        dn.push(rcgen::DnType::OrganizationName, "Contoso, Ltd");
        dn.push(rcgen::DnType::CommonName, "alice");
        params.distinguished_name = dn;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0a, 0x1b, 0xff]));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let described = describe(cert.der()).expect("parses");
        assert_eq!(described.subject, "C=US, O=\"Contoso, Ltd\", CN=alice");
        assert_eq!(described.issuer, described.subject);
        assert_eq!(described.serial_number, "0a-1b-ff");
        // DER's sign byte is not part of the number.
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x80, 0xab]));
        let signed = params.self_signed(&key).unwrap();
        assert_eq!(describe(signed.der()).unwrap().serial_number, "80-ab");
        assert_eq!(described.fingerprint_sha256.len(), 64);
        assert_eq!(
            described.subject_field("O").as_deref(),
            Some("Contoso, Ltd")
        );
        assert!(described.not_before < described.not_after);
        assert!(describe(b"not a certificate").is_none());
    }
}
