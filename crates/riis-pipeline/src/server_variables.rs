//! Server variables under their IIS (and CGI) names, computed on demand from
//! the context so requests that never ask pay nothing.

use std::borrow::Cow;

use crate::context::HttpContext;

/// A field of the client's certificate, or empty.
fn cert<'a>(
    ctx: &'a HttpContext,
    field: impl Fn(&'a crate::ClientCertificate) -> &'a String,
) -> Cow<'a, str> {
    Cow::Borrowed(ctx.client_certificate().map_or("", |c| field(c)))
}

fn owned(s: String) -> Option<Cow<'static, str>> {
    Some(Cow::Owned(s))
}

/// The value of `name` for `ctx`, or `None` for an unknown name or a header
/// that is absent.
pub(crate) fn lookup<'a>(ctx: &'a HttpContext, name: &str) -> Option<Cow<'a, str>> {
    let req = &ctx.request;
    // Upper-cased on the stack: modules (CGI and FastCGI gateways, logs)
    // ask for several variables per request.
    let mut buffer = [0u8; 64];
    let upper: Cow<'_, str> = match buffer.get_mut(..name.len()) {
        Some(upper) => {
            upper.copy_from_slice(name.as_bytes());
            upper.make_ascii_uppercase();
            // ASCII case changes keep UTF-8 valid.
            Cow::Borrowed(std::str::from_utf8(upper).unwrap_or_default())
        }
        None => Cow::Owned(name.to_ascii_uppercase()),
    };
    if let Some(header) = upper.strip_prefix("HTTP_") {
        // HTTP_URL and HTTP_VERSION are variables, not headers: a client's
        // `Url:` or `Version:` header must not stand in for them.
        return match header {
            "URL" => Some(Cow::Borrowed(req.raw_url())),
            "VERSION" => Some(Cow::Borrowed(version(req.http_version()))),
            // What IIS's URL Rewrite sets when it rewrites: the URL the
            // client asked for. Never a client's own `X-Original-URL` (which
            // would let it claim another URL to rules and applications).
            "X_ORIGINAL_URL" => {
                (req.client_url() != req.raw_url()).then(|| Cow::Borrowed(req.client_url()))
            }
            // HTTP/2 carries the host as `:authority`, and an absolute-form
            // request target overrides `Host` (RFC 9112 §3.2.2).
            // Host and port only: an absolute-form target's userinfo
            // (`http://evil@good/`) is not the host the request reached.
            // A `Host` a module set (a rule's `HTTP_HOST`) is what it says
            // from then on, over HTTP/2 and absolute-form targets too.
            "HOST" if req.header_set_by_module(&http::header::HOST) => http_header(ctx, header),
            "HOST" => req.target_host().or_else(|| http_header(ctx, header)),
            _ => http_header(ctx, header),
        };
    }
    match &*upper {
        "REQUEST_METHOD" => Some(Cow::Borrowed(req.method().as_str())),
        // Without extra path information, as IIS says; IIS's PATH_INFO is
        // the whole path unless the handler split it (`allow_path_info`).
        "URL" | "SCRIPT_NAME" => Some(Cow::Borrowed(ctx.script_name())),
        "PATH_INFO" if ctx.script_end.is_some() => Some(Cow::Borrowed(ctx.path_info())),
        "PATH_INFO" => Some(Cow::Borrowed(req.url())),
        "QUERY_STRING" => Some(Cow::Borrowed(req.query_string())),
        // The URL exactly as the client sent it, also after a rewrite (IIS
        // keeps it for "preserving the original URL").
        "UNENCODED_URL" => Some(Cow::Borrowed(req.client_url())),
        // As Apache and nginx pass it: the client's, after rewrites and in
        // child requests too.
        "REQUEST_URI" => Some(Cow::Borrowed(req.client_url())),
        // IIS's form: `http://host:port/path?query`.
        "CACHE_URL" => owned(format!(
            "{}://{}:{}{}",
            if req.is_tls { "https" } else { "http" },
            server_name(ctx),
            req.local_address().port(),
            req.raw_url()
        )),
        "SERVER_PROTOCOL" => Some(Cow::Borrowed(version(req.http_version()))),
        // A dual-stack socket's IPv4 client (`::ffff:192.0.2.7`) as IPv4, as
        // CGI programs, FastCGI applications and the logs see it.
        "REMOTE_ADDR" | "REMOTE_HOST" => {
            owned(req.remote_address().ip().to_canonical().to_string())
        }
        "REMOTE_PORT" => owned(req.remote_address().port().to_string()),
        "LOCAL_ADDR" => owned(req.local_address().ip().to_canonical().to_string()),
        "SERVER_PORT" => owned(req.local_address().port().to_string()),
        "SERVER_NAME" => Some(server_name(ctx)),
        "HTTPS" => Some(Cow::Borrowed(if req.is_tls { "on" } else { "off" })),
        "SERVER_PORT_SECURE" => Some(Cow::Borrowed(if req.is_tls { "1" } else { "0" })),
        // The client's certificate: IIS's names, empty without one.
        "CERT_FLAGS" => Some(Cow::Borrowed(match ctx.client_certificate() {
            Some(_) => "1",
            None => "0",
        })),
        "CERT_SUBJECT" => Some(cert(ctx, |c| &c.subject)),
        "CERT_ISSUER" => Some(cert(ctx, |c| &c.issuer)),
        "CERT_SERIALNUMBER" => Some(cert(ctx, |c| &c.serial_number)),
        "CERT_COOKIE" => Some(cert(ctx, |c| &c.fingerprint_sha256)),
        "SERVER_SOFTWARE" => Some(Cow::Borrowed(concat!("riis/", env!("CARGO_PKG_VERSION")))),
        "GATEWAY_INTERFACE" => Some(Cow::Borrowed("CGI/1.1")),
        "CONTENT_LENGTH" => Some(Cow::Borrowed(
            req.header(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("0"),
        )),
        "CONTENT_TYPE" => Some(Cow::Borrowed(
            req.header(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        )),
        "INSTANCE_ID" => owned(ctx.site.info().site_id.to_string()),
        "INSTANCE_NAME" => Some(Cow::Borrowed(&ctx.site.info().site_name)),
        "INSTANCE_META_PATH" => owned(format!("/LM/W3SVC/{}", ctx.site.info().site_id)),
        "APPL_MD_PATH" => owned(format!("/LM/W3SVC/{}/ROOT", ctx.site.info().site_id)),
        // One process serves every site: IHttpServer::GetAppPoolName's.
        "APP_POOL_ID" => Some(Cow::Borrowed("riis")),
        // With the trailing separator, as IIS gives it.
        "APPL_PHYSICAL_PATH" => {
            let root = ctx.site.info().physical_root.to_string_lossy();
            if root.ends_with('/') {
                Some(root)
            } else {
                owned(format!("{root}/"))
            }
        }
        // Before MapRequestHandler mapped it, the site's own mapping of the
        // URL (its root or virtual directory; MapPath modules have not been
        // asked yet), as IIS answers it in BeginRequest.
        "PATH_TRANSLATED" => {
            let mut p = match &ctx.physical_path {
                Some(p) => p.to_string_lossy().into_owned(),
                None => ctx.site.map_url(req.url()).to_string_lossy().into_owned(),
            };
            // A folder's URL keeps its trailing separator, as IIS gives
            // it (`…\vd1\`): scripts tell a folder by it.
            if ctx.script_name().ends_with('/') && !p.ends_with('/') {
                p.push('/');
            }
            owned(p)
        }
        // Empty for the anonymous user (a user without a name), as IIS
        // and CGI (RFC 3875 §4.1.1) give it: nobody was authenticated.
        "AUTH_TYPE" => Some(Cow::Borrowed(
            ctx.user
                .as_ref()
                .filter(|u| !u.name().is_empty())
                .map_or("", |u| u.authentication_type()),
        )),
        "AUTH_USER" | "REMOTE_USER" | "LOGON_USER" => {
            Some(Cow::Borrowed(ctx.user.as_ref().map_or("", |u| u.name())))
        }
        "ALL_HTTP" => {
            let mut out = String::new();
            for (k, v) in req.headers() {
                out.push_str("HTTP_");
                out.extend(k.as_str().chars().map(|c| match c {
                    '-' => '_',
                    c => c.to_ascii_uppercase(),
                }));
                out.push(':');
                out.push_str(&String::from_utf8_lossy(v.as_bytes()));
                out.push('\n');
            }
            owned(out)
        }
        "ALL_RAW" => {
            let mut out = String::new();
            for (k, v) in req.headers() {
                out.push_str(k.as_str());
                out.push_str(": ");
                out.push_str(&String::from_utf8_lossy(v.as_bytes()));
                out.push_str("\r\n");
            }
            owned(out)
        }
        "REQUEST_ID" => owned(ctx.request_id.to_string()),
        _ => None,
    }
}

/// The host the client asked for, without its port: the request target's
/// authority (HTTP/2's `:authority`, an absolute-form target), else `Host`,
/// else the local address.
fn server_name<'a>(ctx: &'a HttpContext) -> Cow<'a, str> {
    let req = &ctx.request;
    if let Some(host) = req.uri().host() {
        // The routed host, as the site was chosen (no userinfo, no port).
        return Cow::Borrowed(host);
    }
    match req.header(http::header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => Cow::Borrowed(strip_port(host)),
        // No host named: the address the request came in on, an IPv6 one
        // in brackets as a `Host` would carry it (RFC 3875 §4.1.14).
        None => Cow::Owned(match req.local_address().ip().to_canonical() {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        }),
    }
}

/// `HTTP_ACCEPT_LANGUAGE` → the `accept-language` header; several values are
/// joined with `, ` as a proxy would fold them (`Cookie` lines with `; `, as
/// HTTP/2 requires of split cookies, RFC 9113 §8.2.3).
fn http_header<'a>(ctx: &'a HttpContext, upper_name: &str) -> Option<Cow<'a, str>> {
    // `HTTP_USER_AGENT` names `user-agent`; the header map takes names in
    // any case. On the stack for the usual lengths, as in `lookup`.
    let mut buffer = [0u8; 64];
    let dashed: Cow<'_, str> = match buffer.get_mut(..upper_name.len()) {
        Some(dashed) => {
            for (to, from) in dashed.iter_mut().zip(upper_name.bytes()) {
                *to = if from == b'_' { b'-' } else { from };
            }
            // Only ASCII `_` became `-`: still UTF-8.
            Cow::Borrowed(std::str::from_utf8(dashed).unwrap_or_default())
        }
        None => Cow::Owned(upper_name.replace('_', "-")),
    };
    let separator = if dashed.eq_ignore_ascii_case("cookie") {
        "; "
    } else {
        ", "
    };
    let mut values = ctx.request.headers().get_all(&*dashed).iter();
    let first = values.next()?;
    let first = String::from_utf8_lossy(first.as_bytes());
    let rest: Vec<_> = values
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .collect();
    if rest.is_empty() {
        return Some(first);
    }
    let mut joined = first.into_owned();
    for v in rest {
        joined.push_str(separator);
        joined.push_str(&v);
    }
    Some(Cow::Owned(joined))
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // `[v6]:port` → `[v6]`; a bracket never closed stays as it is.
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}
