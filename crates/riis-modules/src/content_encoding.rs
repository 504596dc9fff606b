//! What the compression modules share: choosing a content coding from
//! `Accept-Encoding` (RFC 9110 §12.5.3), deciding whether a response may be
//! compressed, and the encoders.

use std::io::Write;

use riis_pipeline::http::header::{self, HeaderValue};
use riis_pipeline::http::{HeaderMap, StatusCode};

/// A content coding riis produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Coding {
    /// `br` (RFC 7932).
    Brotli,
    /// `zstd` (RFC 8878).
    Zstd,
    /// `gzip` (RFC 1952).
    Gzip,
}

/// The highest zstd level riis uses. Up to it, zstd's window stays within
/// 8 MiB, the most RFC 8878 §3.1.1.1.2 lets a decoder of `Content-Encoding:
/// zstd` insist on (browsers refuse larger windows).
pub const ZSTD_MAX_LEVEL: u32 = 19;

/// Reads a level and refuses one outside `range` (a configuration error
/// that names the key, rather than a level silently clamped).
fn level_in<'de, D>(
    deserializer: D,
    range: std::ops::RangeInclusive<u32>,
    what: &str,
) -> Result<u32, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let level = <u32 as serde::Deserialize>::deserialize(deserializer)?;
    if range.contains(&level) {
        Ok(level)
    } else {
        Err(serde::de::Error::custom(format!(
            "{level} is not a {what} ({} to {})",
            range.start(),
            range.end()
        )))
    }
}

/// `gzip_level`: 0 to 9.
pub fn gzip_level<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    level_in(d, 0..=9, "gzip level")
}

/// `brotli_quality`: 0 to 11.
pub fn brotli_quality<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    level_in(d, 0..=11, "brotli quality")
}

/// `zstd_level`: 1 to [`ZSTD_MAX_LEVEL`].
pub fn zstd_level<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    level_in(d, 1..=ZSTD_MAX_LEVEL, "zstd level")
}

impl Coding {
    /// Server preference when the client weighs codings equally: brotli
    /// compresses text best, zstd comes close at a fraction of the CPU time,
    /// and gzip is what every client has.
    const PREFERENCE: [Coding; 3] = [Coding::Brotli, Coding::Zstd, Coding::Gzip];

    /// The token in `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Self::Brotli => "br",
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
        }
    }

    /// File name suffix for cached copies.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Brotli => "br",
            Self::Zstd => "zst",
            Self::Gzip => "gz",
        }
    }

    /// Compresses a whole body.
    pub fn compress(self, data: &[u8], level: u32) -> Vec<u8> {
        let mut encoder = Encoder::new(self, level);
        encoder.write(data);
        encoder.finish()
    }
}

/// The weight a client gives a coding: `q` from `Accept-Encoding`, 0 when
/// it is refused or not named (and no `*` covers it). `x-gzip` is `gzip`
/// (RFC 9110 §8.4.1.3); an item whose `q` is not a number is ignored.
fn weight(accept: &str, coding: &str) -> f32 {
    let (named, star) = weights(accept, coding);
    named.or(star).unwrap_or(0.0)
}

/// A weight as RFC 9110 §12.4.2 writes it: `0` to `1`, at most three
/// decimals (`0.5`, `1.000`); `None` for anything else (`1.5`, `0.0001`,
/// `"0"`, `NaN`), whose item is then ignored.
fn qvalue(text: &str) -> Option<f32> {
    let (whole, decimals) = text.split_once('.').unwrap_or((text, ""));
    let digits = decimals.len() <= 3 && decimals.bytes().all(|b| b.is_ascii_digit());
    match whole {
        "0" if digits => text.parse().ok(),
        "1" if digits && decimals.bytes().all(|b| b == b'0') => Some(1.0),
        _ => None,
    }
}

/// The `q` of the item naming `coding`, and that of `*`, if present.
fn weights(accept: &str, coding: &str) -> (Option<f32>, Option<f32>) {
    let mut star = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        // A weight is `q=` and the value, with no space around the `=`
        // (RFC 9110 §12.4.2): `q = 0.5` is a malformed weight, and its
        // item is ignored, not taken at 1.
        let weight = parts.map(str::trim).find(|p| {
            p.split_once('=')
                .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
        });
        let q = match weight {
            None => 1.0,
            Some(p) => match p
                .strip_prefix("q=")
                .or_else(|| p.strip_prefix("Q="))
                .and_then(qvalue)
            {
                Some(q) => q,
                None => continue,
            },
        };
        let name = if name.eq_ignore_ascii_case("x-gzip") {
            "gzip"
        } else {
            name
        };
        if name.eq_ignore_ascii_case(coding) {
            return (Some(q), star);
        }
        if name == "*" {
            star = Some(q);
        }
    }
    (None, star)
}

/// The coding to answer with, or `None` for the body as it is: the client's
/// highest-weighted coding among those riis produces (server preference
/// breaks ties); none when `Accept-Encoding` is absent or refuses them all,
/// or names `identity` with a higher weight than the best of them.
pub fn negotiate(headers: &HeaderMap) -> Option<Coding> {
    let mut accept = String::new();
    for v in headers.get_all(header::ACCEPT_ENCODING) {
        if let Ok(v) = v.to_str() {
            if !accept.is_empty() {
                accept.push(',');
            }
            accept.push_str(v);
        }
    }
    if accept.is_empty() {
        return None;
    }
    let mut best: Option<(Coding, f32)> = None;
    for coding in Coding::PREFERENCE {
        let q = weight(&accept, coding.token());
        if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((coding, q));
        }
    }
    // The body as it is is acceptable unless refused (RFC 9110 §12.5.3);
    // only a weight the client gives `identity` by name can outrank a
    // coding (a bare `gzip;q=0.5` still asks for gzip).
    let (identity, _) = weights(&accept, "identity");
    match (best, identity) {
        (Some((_, q)), Some(identity)) if identity > q => None,
        (best, _) => best.map(|(c, _)| c),
    }
}

/// The MIME type a URL's extension names, for a response that carries none
/// of its own (a 304, a multipart range).
pub fn type_of_url(url: &str) -> Option<HeaderValue> {
    std::path::Path::new(url)
        .extension()
        .and_then(|e| e.to_str())
        .and_then(|e| mime_guess::from_ext(e).first_raw())
        .map(HeaderValue::from_static)
}

/// A `Content-Type` value's media type, without its parameters
/// (`text/html` of `text/html; charset=utf-8`); empty for a value that is
/// not visible ASCII.
pub fn media_type(content_type: &HeaderValue) -> &str {
    content_type
        .to_str()
        .map_or("", |ct| ct.split(';').next().unwrap_or("").trim())
}

/// Whether a MIME type (parameters ignored) is in `list`; an entry ending in
/// `/*` matches a whole type (`text/*`), and `*/*` every type.
pub fn type_listed(content_type: Option<&HeaderValue>, list: &[String]) -> bool {
    let Some(essence) = content_type.map(media_type).filter(|e| !e.is_empty()) else {
        return false;
    };
    list.iter().any(|entry| match entry.strip_suffix("/*") {
        Some("*") => true,
        Some(prefix) => essence
            .split_once('/')
            .is_some_and(|(t, _)| t.eq_ignore_ascii_case(prefix)),
        None => entry.eq_ignore_ascii_case(essence),
    })
}

/// `mime_types` of the compression modules: each entry `type/subtype`,
/// `type/*` or `*/*`. An entry with parameters (`text/html; charset=utf-8`)
/// or without a `/` (`html`) could never match a response, so it is a
/// configuration error rather than a silent no-op.
pub fn mime_type_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use serde::Deserialize;
    let list = Vec::<String>::deserialize(d)?;
    // RFC 6838's name characters; `*` only as a whole subtype, or `*/*`.
    let name = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    if let Some(bad) = list.iter().find(|entry| {
        !entry.split_once('/').is_some_and(|(t, s)| match (t, s) {
            ("*", "*") => true,
            (t, "*") => name(t),
            (t, s) => name(t) && name(s),
        })
    }) {
        return Err(serde::de::Error::custom(format!(
            "`{}` is not a MIME type like `text/html`, `text/*` or `*/*` (without parameters)",
            bad.escape_debug()
        )));
    }
    Ok(list)
}

/// Whether a response may be given another content coding at all: a full
/// success, not already encoded, not a range, with a body.
pub fn compressible_response(status: StatusCode, headers: &HeaderMap) -> bool {
    status.is_success()
        && status != StatusCode::PARTIAL_CONTENT
        && status != StatusCode::NO_CONTENT
        && !headers.contains_key(header::CONTENT_ENCODING)
        && !headers.contains_key(header::CONTENT_RANGE)
        && !forbids_transform(headers)
}

/// Whether `Cache-Control: no-transform` is on any of the response's
/// `Cache-Control` lines.
pub fn forbids_transform(headers: &HeaderMap) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    })
}

/// Adds `Accept-Encoding` to `Vary` unless it is there (or `Vary: *`).
pub fn add_vary(headers: &mut HeaderMap) {
    crate::add_vary_token(headers, "Accept-Encoding");
}

/// Marks the response as encoded: `Content-Encoding`, `Vary`, no
/// `Content-Length` (the server computes it), and a weak ETag, since the
/// bytes differ from the identity representation's (RFC 9110 §8.8.1).
pub fn mark_encoded(headers: &mut HeaderMap, coding: Coding) {
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.token()),
    );
    headers.remove(header::CONTENT_LENGTH);
    // Ranges are served from the unencoded file: a client told it may ask
    // for ranges of this encoded copy could append unencoded bytes to
    // encoded ones when it resumes (nginx's gzip filter drops it too).
    headers.remove(header::ACCEPT_RANGES);
    add_vary(headers);
    weaken_etag(headers);
}

/// Whether the request's `If-None-Match` lists the weak form (`W/"x"`) of
/// `etag`, a strong tag (`"x"`): the tag the compression modules give what
/// they encode, so the client holds an encoded body.
pub fn lists_weak_form(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().strip_prefix("W/") == Some(etag))
}

/// Makes a strong `ETag` weak (`"x"` to `W/"x"`).
pub fn weaken_etag(headers: &mut HeaderMap) {
    if let Some(etag) = headers.get(header::ETAG).and_then(|v| v.to_str().ok()) {
        if etag.starts_with('"') {
            let weak = format!("W/{etag}");
            if let Ok(v) = HeaderValue::try_from(weak) {
                headers.insert(header::ETAG, v);
            }
        }
    }
}

/// The window of [`Encoder::streaming`]: 2^19 = 512 KiB.
const STREAMING_WINDOW_LOG: u32 = 19;

/// A streaming encoder: write input, take what is ready, finish at the end.
pub enum Encoder {
    /// gzip.
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    /// brotli.
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    /// zstd.
    Zstd(Box<zstd::stream::write::Encoder<'static, Vec<u8>>>),
}

impl Encoder {
    /// An encoder for `coding`; `level` is gzip's 0–9, brotli's 0–11
    /// quality or zstd's 1–19 level (clamped). Windows of 4 MiB (brotli)
    /// and zstd's own for the level: for copies made once and kept.
    pub fn new(coding: Coding, level: u32) -> Self {
        Self::with_window(coding, level, None)
    }

    /// [`Encoder::new`] for a response compressed as it streams to its
    /// client, whose encoder lives as long as the client takes to download
    /// it: brotli's and zstd's windows are held to 512 KiB (nginx's
    /// `brotli_window` default), which keeps each encoder to a few MB
    /// instead of tens.
    pub fn streaming(coding: Coding, level: u32) -> Self {
        Self::with_window(coding, level, Some(STREAMING_WINDOW_LOG))
    }

    fn with_window(coding: Coding, level: u32, window_log: Option<u32>) -> Self {
        match coding {
            Coding::Gzip => Self::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level.min(9)),
            )),
            Coding::Brotli => Self::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                if window_log.is_some() {
                    16 * 1024
                } else {
                    64 * 1024
                },
                level.min(11),
                window_log.unwrap_or(22),
            ))),
            Coding::Zstd => {
                let level = level.clamp(1, ZSTD_MAX_LEVEL) as i32;
                // zstd refuses only levels out of its range, which the
                // clamp rules out, and window logs out of 10–31.
                let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), level)
                    .expect("a zstd compression context");
                if let Some(log) = window_log {
                    encoder.window_log(log).expect("a zstd window log in range");
                }
                Self::Zstd(Box::new(encoder))
            }
        }
    }

    /// Feeds input. Writing into memory cannot fail.
    pub fn write(&mut self, data: &[u8]) {
        let _ = match self {
            Self::Gzip(e) => e.write_all(data),
            Self::Brotli(e) => e.write_all(data),
            Self::Zstd(e) => e.write_all(data),
        };
    }

    /// Flushes what was written so far and takes the encoded bytes, so a
    /// streamed response reaches the client as it is produced.
    pub fn take_flushed(&mut self) -> Vec<u8> {
        match self {
            Self::Gzip(e) => {
                let _ = e.flush();
                std::mem::take(e.get_mut())
            }
            Self::Brotli(e) => {
                let _ = e.flush();
                std::mem::take(e.get_mut())
            }
            Self::Zstd(e) => {
                let _ = e.flush();
                std::mem::take(e.get_mut())
            }
        }
    }

    /// Ends the stream and returns the remaining bytes.
    pub fn finish(self) -> Vec<u8> {
        match self {
            Self::Gzip(e) => e.finish().unwrap_or_default(),
            Self::Brotli(e) => e.into_inner(),
            Self::Zstd(e) => e.finish().unwrap_or_default(),
        }
    }
}

/// The MIME types compressed by default (IIS's lists, plus the types the web
/// uses since).
pub fn default_types() -> Vec<String> {
    [
        "text/*",
        "application/javascript",
        "application/json",
        "application/xml",
        "application/atom+xml",
        "application/rss+xml",
        "application/xhtml+xml",
        "application/wasm",
        "image/svg+xml",
    ]
    .map(String::from)
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_type_lists_refuse_entries_that_never_match() {
        #[derive(serde::Deserialize)]
        struct Section {
            #[serde(deserialize_with = "mime_type_list")]
            mime_types: Vec<String>,
        }
        let parse = |text: &str| toml::from_str::<Section>(text).map(|s| s.mime_types);
        assert!(parse(r#"mime_types = ["text/*", "application/json", "*/*"]"#).is_ok());
        for bad in [
            r#"mime_types = ["text/html; charset=utf-8"]"#,
            r#"mime_types = ["html"]"#,
            r#"mime_types = ["*/html"]"#,
            r#"mime_types = [" text/html"]"#,
            r#"mime_types = ["text/"]"#,
            r#"mime_types = ["text/ht*ml"]"#,
            r#"mime_types = ["a*/b"]"#,
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("is not a MIME type"), "{bad}: {e}");
        }
        let any = HeaderValue::from_static("image/png");
        assert!(type_listed(Some(&any), &["*/*".to_owned()]));
        assert!(!type_listed(Some(&any), &["text/*".to_owned()]));
    }

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn negotiation_follows_q_values() {
        assert_eq!(negotiate(&HeaderMap::new()), None);
        assert_eq!(negotiate(&accept("gzip")), Some(Coding::Gzip));
        assert_eq!(negotiate(&accept("gzip, br")), Some(Coding::Brotli));
        assert_eq!(
            negotiate(&accept("br;q=0.5, gzip;q=0.8")),
            Some(Coding::Gzip)
        );
        assert_eq!(negotiate(&accept("br;q=0, gzip;q=0")), None);
        assert_eq!(negotiate(&accept("identity")), None);
        assert_eq!(negotiate(&accept("*")), Some(Coding::Brotli));
        assert_eq!(negotiate(&accept("*;q=0.1, br;q=0")), Some(Coding::Zstd));
        assert_eq!(
            negotiate(&accept("*;q=0.1, br;q=0, zstd;q=0")),
            Some(Coding::Gzip)
        );
        assert_eq!(negotiate(&accept("GZIP;Q=0.5")), Some(Coding::Gzip));
        assert_eq!(negotiate(&accept("x-gzip")), Some(Coding::Gzip));
        assert_eq!(
            negotiate(&accept("X-GZIP;q=0.3, br;q=0")),
            Some(Coding::Gzip)
        );
        // A q that is not a number drops its item, not the header.
        assert_eq!(negotiate(&accept("br;q=abc, gzip")), Some(Coding::Gzip));
        assert_eq!(negotiate(&accept("br;q=NaN")), None);
        // Spaces around the `=` make a malformed weight: the item is
        // ignored, not taken at 1 (and a wide space before it is no panic).
        assert_eq!(negotiate(&accept("br;q = 0.5")), None);
        assert_eq!(negotiate(&accept("br;q\u{a0}=0.5")), None);
        assert_eq!(negotiate(&accept("br; q=0.5")), Some(Coding::Brotli));
        // Weights outside the grammar are ignored with their items.
        assert_eq!(negotiate(&accept("br;q=1.5, gzip")), Some(Coding::Gzip));
        assert_eq!(
            negotiate(&accept("br;q=0.0001, gzip;q=0.001")),
            Some(Coding::Gzip)
        );
        assert_eq!(
            negotiate(&accept("br;q=1.000, gzip;q=0.")),
            Some(Coding::Brotli)
        );
        assert_eq!(negotiate(&accept("gzip, zstd")), Some(Coding::Zstd));
        assert_eq!(
            negotiate(&accept("gzip, deflate, br, zstd")),
            Some(Coding::Brotli)
        );
        assert_eq!(
            negotiate(&accept("br;q=0.5, zstd;q=0.9, gzip;q=0.9")),
            Some(Coding::Zstd)
        );
        // `identity` outranks the codings only with a higher weight of its
        // own.
        assert_eq!(negotiate(&accept("identity;q=1, gzip;q=0.1")), None);
        assert_eq!(
            negotiate(&accept("identity;q=0.5, gzip")),
            Some(Coding::Gzip)
        );
        assert_eq!(negotiate(&accept("identity, gzip")), Some(Coding::Gzip));
        assert_eq!(negotiate(&accept("gzip;q=0.5")), Some(Coding::Gzip));
    }

    #[test]
    fn no_transform_counts_on_any_cache_control_line() {
        let mut h = HeaderMap::new();
        h.append(header::CACHE_CONTROL, HeaderValue::from_static("public"));
        assert!(compressible_response(StatusCode::OK, &h));
        h.append(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60, No-Transform"),
        );
        assert!(!compressible_response(StatusCode::OK, &h));
    }

    #[test]
    fn types_match_by_essence_and_wildcard() {
        let list = default_types();
        let v = |s: &'static str| Some(HeaderValue::from_static(s));
        assert!(type_listed(v("text/html; charset=utf-8").as_ref(), &list));
        assert!(type_listed(v("application/json").as_ref(), &list));
        assert!(!type_listed(v("image/png").as_ref(), &list));
        assert!(!type_listed(None, &list));
    }

    #[test]
    fn encoders_round_trip() {
        use std::io::Read;
        let data = b"hello hello hello hello hello".repeat(100);
        let gz = Coding::Gzip.compress(&data, 6);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let br = Coding::Brotli.compress(&data, 5);
        let mut out = Vec::new();
        brotli::Decompressor::new(&br[..], 4096)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let zst = Coding::Zstd.compress(&data, 19);
        assert_eq!(zstd::stream::decode_all(&zst[..]).unwrap(), data);
        // Streamed with flushes, as DynamicCompression sends it.
        let mut encoder = Encoder::new(Coding::Zstd, 3);
        encoder.write(&data[..1000]);
        let mut streamed = encoder.take_flushed();
        assert!(!streamed.is_empty(), "a flush yields bytes");
        encoder.write(&data[1000..]);
        streamed.extend(encoder.finish());
        assert_eq!(zstd::stream::decode_all(&streamed[..]).unwrap(), data);
    }
}
