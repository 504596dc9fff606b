//! Notices to the service manager, in systemd's `sd_notify` protocol, for
//! units of `Type=notify` or `Type=notify-reload`: ready once every address
//! is bound, reloading and ready again around each reload, stopping when
//! the drain begins, with a status line each time; and watchdog pings
//! (`WatchdogSec=`) for as long as no worker thread is held by a module
//! call, so that a server whose worker hangs is restarted, as IIS's process
//! manager recycles a worker process that stops answering its pings.
//!
//! Nothing is sent when `NOTIFY_SOCKET` is not set (riis not started by
//! systemd, or by a unit of another type). A notice that cannot be sent is
//! logged and otherwise ignored: serving does not depend on it.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// Every address is bound: the server is ready.
pub(crate) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins; [`ready`] follows when it is over, applied or refused.
pub(crate) fn reloading() {
    // systemd 253 and later need the time with RELOADING=1
    // (`Type=notify-reload`); older ones ignore it.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading the configuration"),
        ]),
        Err(_) => send(&[
            NotifyState::Reloading,
            NotifyState::Status("reloading the configuration"),
        ]),
    }
}

/// The drain begins.
pub(crate) fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: draining requests in flight"),
    ]);
}

/// How often the service manager wants a watchdog ping (`WATCHDOG_USEC`,
/// for this process), if at all.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    (sd_notify::watchdog_enabled(false, &mut usec) && usec > 0).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog every half `interval` while every worker thread has
/// run its once-a-second sweep within `interval` (or the server is
/// stopping, when the sweeps end), until `stop` says the server has
/// stopped.
pub(crate) async fn keep_watchdog(
    interval: Duration,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(interval / 2);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            changed = stopping.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        // A worker sweeps once a second: below the held workers' threshold
        // (3 s) a short WatchdogSec would count a healthy one.
        let held = crate::in_flight::longest_held();
        if *stopping.borrow() || held < interval.max(crate::in_flight::HELD_AFTER) {
            send(&[NotifyState::Watchdog]);
            warned = false;
        } else if !warned {
            tracing::error!(
                held_ms = held.as_millis() as u64,
                "a worker thread has been held by a module call for longer than the watchdog \
                 interval ({} ms): no more watchdog pings, the service manager will restart riis",
                interval.as_millis()
            );
            warned = true;
        }
    }
}
