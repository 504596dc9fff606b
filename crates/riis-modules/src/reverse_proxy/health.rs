//! Active health checks (ARR's health test URL): every `interval` seconds
//! each server of a location is asked for `url`, and one that does not
//! answer 200 to 399 within `timeout` is left out until a check passes
//! again, whatever the requests find meanwhile.
//!
//! The checks of a section start at its first request (the module learns
//! of a location's servers from its requests), on that request's worker
//! runtime, and stop once the configuration they belong to is gone (a
//! reload retired it). Each check is a connection of its own, closed after
//! the answer; the servers of a section are checked at once, not one after
//! another.

use std::sync::{Arc, Weak};
use std::time::Duration;

use http_body_util::BodyExt;
use riis_pipeline::http::header::{self, HeaderValue};
use riis_pipeline::http::Request;
use serde::Deserialize;

use super::exchange::{connect, route, RequestBody};
use super::ReverseProxyConfig;

/// How much of a health check's answer is read (its status is what counts).
const MAX_CHECK_BODY: usize = 16 * 1024;

/// The `health_check` table of the `proxy` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// The path (and query) asked of each server.
    #[serde(deserialize_with = "path")]
    pub url: String,
    /// Seconds between checks (ARR's default, 30).
    #[serde(default = "thirty", deserialize_with = "crate::at_least_one")]
    pub interval: u64,
    /// Seconds a check may take (ARR's default, 30).
    #[serde(default = "thirty", deserialize_with = "crate::at_least_one")]
    pub timeout: u64,
}

fn thirty() -> u64 {
    30
}

fn path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let url = String::deserialize(d)?;
    if url.starts_with('/') && url.parse::<riis_pipeline::http::Uri>().is_ok() {
        Ok(url)
    } else {
        Err(serde::de::Error::custom(format!(
            "`{url}` is not a path (`/health`): the check goes to each server"
        )))
    }
}

/// Checks `config`'s servers until the configuration is gone.
pub(super) async fn watch(config: Weak<ReverseProxyConfig>) {
    loop {
        let Some(strong) = config.upgrade() else {
            return;
        };
        let Some(check) = strong.health_check.clone() else {
            return;
        };
        let mut checks = tokio::task::JoinSet::new();
        for index in 0..strong.servers.servers().len() {
            checks.spawn(check_one(strong.clone(), index, check.clone()));
        }
        drop(strong);
        while checks.join_next().await.is_some() {}
        tokio::time::sleep(Duration::from_secs(check.interval)).await;
    }
}

/// Checks server `index` of `config` once and marks it.
async fn check_one(config: Arc<ReverseProxyConfig>, index: usize, check: HealthCheck) {
    let server = &config.servers.servers()[index];
    let asking = async {
        let route = route(&config, server)?;
        let mut line = connect(&config, server, &route).await?;
        let mut request = Request::new(RequestBody::empty());
        *request.uri_mut() = check
            .url
            .parse()
            .map_err(|e| format!("{}: {e}", check.url))?;
        request
            .headers_mut()
            .insert(header::HOST, server.host.clone());
        request.headers_mut().insert(
            header::USER_AGENT,
            HeaderValue::from_static("riis health check"),
        );
        let response = line
            .send(request)
            .await
            .map_err(|e| format!("{}: {e}", server.name))?;
        let status = response.status();
        // Only the status counts. A short body is read to its end, so the
        // server is not cut off mid-answer; past a few KiB the connection
        // is dropped instead, as a check must not hold a large answer.
        let mut body = response.into_body();
        let mut read = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |d| d.len());
            if read > MAX_CHECK_BODY {
                break;
            }
        }
        if (200..400).contains(&status.as_u16()) {
            Ok(())
        } else {
            Err(format!(
                "{} answered {status} to {}",
                server.name, check.url
            ))
        }
    };
    let result = match tokio::time::timeout(Duration::from_secs(check.timeout), asking).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{} did not answer {} within {} s",
            server.name, check.url, check.timeout
        )),
    };
    match result {
        Ok(()) => {
            if server.set_healthy(true) {
                tracing::info!(server = %server.name, "ReverseProxy: health check passes again");
            }
        }
        Err(why) => {
            if server.set_healthy(false) {
                tracing::warn!("ReverseProxy: health check failed, the server is left out: {why}");
            }
        }
    }
}
