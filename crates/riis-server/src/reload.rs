//! Live reload: SIGHUP (or `riis reload`) reads the configuration again,
//! validates it, and hands it to new requests (on new and kept-alive
//! connections alike) while requests in flight finish with the one they
//! started with. A file that does not validate is reported and the running
//! configuration stays.
//!
//! `[limits]` and `[timeouts]` travel with the configuration: new
//! connections are admitted, and every request is checked, under the limits
//! of the moment, the sweeper applies the current timeouts to open
//! connections, and a kept-alive HTTP/1.1 connection takes up new hyper
//! settings at its next request (an HTTP/2 connection keeps the settings it
//! announced). What a reload cannot change without a restart, and refuses
//! or reports: the set of listening addresses (refused), and `[server]`
//! (worker threads, the file cache, the shutdown deadline: kept as they
//! were, with a warning).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use riis_pipeline::RegisterModuleFn;

use crate::config::{ConfigError, ServerConfig, ServerSettings};
use crate::driver::{CurrentGeneration, Generation};
use crate::server::{
    build_pipeline, load_certificates, plan_listeners, routes_of, PipelineServices,
};
use crate::tls::SniResolver;

/// Reads the configuration again, the way the server first read it (the
/// same file and command-line overrides).
pub type ConfigSource = Arc<dyn Fn() -> Result<ServerConfig, ConfigError> + Send + Sync>;

/// Why a reload was refused.
#[derive(Debug)]
pub enum ReloadError {
    /// The server has no file to read again (embedded defaults).
    NoSource,
    /// The new file does not validate.
    Config(ConfigError),
    /// It changes what only a restart can.
    NeedsRestart(String),
    /// The server is stopping.
    Stopping,
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoSource => f.write_str("the server runs without a configuration file to reload"),
            Self::Config(e) => write!(f, "{e}"),
            Self::NeedsRestart(why) => write!(f, "{why}; restart riis to apply it"),
            Self::Stopping => f.write_str("the server is stopping"),
        }
    }
}

impl std::error::Error for ReloadError {}

/// Reloads one server's configuration.
pub struct Reloader {
    source: Option<ConfigSource>,
    extra: Vec<(String, RegisterModuleFn)>,
    /// What every configuration's pipeline shares.
    services: PipelineServices,
    current: CurrentGeneration,
    certificates: BTreeMap<SocketAddr, Arc<SniResolver>>,
    listeners: BTreeSet<(SocketAddr, bool)>,
    /// `[server]`, which a reload keeps; to tell the operator when the file
    /// changed it.
    fixed: ServerSettings,
    /// Replaced configurations, stopped when their last request ends.
    retiring: Arc<Retiring>,
}

fn listeners_of(config: &ServerConfig) -> BTreeSet<(SocketAddr, bool)> {
    config
        .bindings
        .iter()
        .flat_map(|sb| sb.bindings.iter().map(|b| (b.addr, b.tls)))
        .collect()
}

impl Reloader {
    pub(crate) fn new(
        source: Option<ConfigSource>,
        extra: Vec<(String, RegisterModuleFn)>,
        services: PipelineServices,
        current: CurrentGeneration,
        certificates: BTreeMap<SocketAddr, Arc<SniResolver>>,
        running: &ServerConfig,
        retiring: Arc<Retiring>,
    ) -> Self {
        Self {
            source,
            extra,
            services,
            current,
            certificates,
            listeners: listeners_of(running),
            fixed: running.settings.clone(),
            retiring,
        }
    }

    /// Reloads; returns the file read. New requests use the new
    /// configuration once this returns; modules of the new pipeline got
    /// ApplicationStart and ConfigurationChange first. The old pipeline gets
    /// ApplicationStop and Terminate once its last request is done.
    pub fn reload(&self) -> Result<PathBuf, ReloadError> {
        // One reload at a time, for every reloader of the server, and none
        // while the server's final stop runs.
        let _one = self.retiring.busy.lock().unwrap_or_else(|e| e.into_inner());
        if self.retiring.closed() {
            return Err(ReloadError::Stopping);
        }
        RELOADS.keep_server_changes(String::new());
        // The certificates' files are read again in any case.
        for c in self.certificates.values() {
            if let Err(e) = c.reload() {
                tracing::error!(error = %e, "certificates do not load; the previous ones stay");
            }
        }
        let source = self.source.as_ref().ok_or(ReloadError::NoSource)?;
        let mut config = source().map_err(ReloadError::Config)?;
        let listeners = listeners_of(&config);
        if listeners != self.listeners {
            let added: Vec<String> = listeners
                .difference(&self.listeners)
                .map(|(a, tls)| format!("{}{a}", if *tls { "https://" } else { "" }))
                .collect();
            let removed: Vec<String> = self
                .listeners
                .difference(&listeners)
                .map(|(a, tls)| format!("{}{a}", if *tls { "https://" } else { "" }))
                .collect();
            return Err(ReloadError::NeedsRestart(format!(
                "the listening addresses changed (added: [{}], removed: [{}])",
                added.join(", "),
                removed.join(", ")
            )));
        }
        // Reported once the reload is applied (it may still be refused).
        let mut kept = String::new();
        if config.settings != self.fixed {
            // All of `[server]` stays, the pipeline's part of it (the Server
            // header, the response buffer) too, as the warning says.
            let keys = config.settings.changed_keys(&self.fixed).join(", ");
            tracing::warn!(
                changed = %keys,
                "[server] changes need a restart; the running values stay"
            );
            kept = keys;
            config.settings = self.fixed.clone();
        }
        let extra: Vec<(&str, RegisterModuleFn)> =
            self.extra.iter().map(|(n, f)| (n.as_str(), *f)).collect();
        let pipeline = build_pipeline(
            &config,
            &extra,
            self.services.fs.clone(),
            self.services.figures.clone(),
        )
        .map_err(ReloadError::Config)?;
        for warning in crate::config_warnings::warnings_of(&config, &pipeline) {
            tracing::warn!("{warning}");
        }
        let certificates = match load_certificates(&config) {
            Ok(c) => c,
            Err(e) => {
                // Its modules registered: they are terminated, as for a
                // configuration that fails to build.
                pipeline.terminate();
                return Err(ReloadError::Config(e));
            }
        };
        // Hand the new certificate lists to the running listeners.
        for (addr, resolver) in &certificates {
            if let Some(running) = self.certificates.get(addr) {
                running.replace_with(resolver);
            }
        }
        let routes = routes_of(&plan_listeners(&config, &pipeline, &certificates));
        pipeline.raise_application_start();
        pipeline.raise_configuration_change(&config.file);
        let generation = Arc::new(Generation::new(&config, pipeline.clone(), routes));
        let Some(old) = self.retiring.replace(&self.current, generation) else {
            // The server stopped meanwhile: this configuration never serves.
            pipeline.raise_application_stop();
            pipeline.terminate();
            return Err(ReloadError::Stopping);
        };
        // The cache's events go to the configuration in force.
        self.services.fs.attach(&pipeline);
        self.retiring.watch(old);
        RELOADS.keep_server_changes(kept);
        Ok(config.file)
    }

    /// [`Reloader::reload`], logging the outcome (for the SIGHUP handler)
    /// and recording it for the status report; `Err` says why it was
    /// refused.
    pub fn reload_and_log(&self) -> Result<(), String> {
        // Cleared when the reload ends, however it ends (a module that
        // panics in its ConfigurationChange included).
        let _under_way = RELOADS.begin();
        let outcome = self.reload();
        match &outcome {
            Ok(file) => tracing::info!("configuration reloaded from {}", file.display()),
            Err(e) => tracing::error!("reload refused, the running configuration stays: {e}"),
        }
        let refusal = outcome.err().map(|e| e.to_string());
        RELOADS.record(refusal.clone());
        refusal.map_or(Ok(()), Err)
    }
}

/// The reloads this process finished, and why the last refused one was
/// refused: in the status report, where `riis reload` reads whether the
/// reload it asked for took effect.
pub(crate) struct ReloadRecord {
    finished: std::sync::atomic::AtomicU64,
    refused: std::sync::atomic::AtomicU64,
    /// Held while a reload is counted and while the report reads the
    /// counts, so that they belong together.
    last: Mutex<LastReload>,
    /// The `[server]` keys the last reload found changed and kept at their
    /// running values (empty: none).
    kept_server_changes: Mutex<String>,
    /// When the reload under way began, if one is: a reload held up by a
    /// module (a ConfigurationChange that does not return) shows in the
    /// report instead of leaving `riis reload` to time out in silence.
    under_way_since: Mutex<Option<std::time::Instant>>,
}

/// The verdict of the last reload, and why the last refused one was.
struct LastReload {
    /// The last finished reload was refused (the configuration in force
    /// is older than the file).
    refused: bool,
    /// Why the last refused one was, however long ago.
    refusal: String,
}

/// A reload under way, noted in the report until dropped.
struct UnderWay(&'static ReloadRecord);

impl Drop for UnderWay {
    fn drop(&mut self) {
        *self
            .0
            .under_way_since
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The process's [`ReloadRecord`].
pub(crate) static RELOADS: ReloadRecord = ReloadRecord {
    finished: std::sync::atomic::AtomicU64::new(0),
    refused: std::sync::atomic::AtomicU64::new(0),
    last: Mutex::new(LastReload {
        refused: false,
        refusal: String::new(),
    }),
    kept_server_changes: Mutex::new(String::new()),
    under_way_since: Mutex::new(None),
};

impl ReloadRecord {
    /// Notes the `[server]` keys the reload under way keeps (empty: none).
    fn keep_server_changes(&self, keys: String) {
        *self
            .kept_server_changes
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = keys;
    }

    fn begin(&'static self) -> UnderWay {
        *self
            .under_way_since
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
        UnderWay(self)
    }

    fn record(&self, refusal: Option<String>) {
        use std::sync::atomic::Ordering::SeqCst;
        // Under the lock the report holds while it reads: a report never
        // pairs one reload's count with another's verdict.
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.refused = refusal.is_some();
        if let Some(why) = refusal {
            // One line: the report is read line by line.
            last.refusal = why.replace(['\n', '\r'], " ");
            self.refused.fetch_add(1, SeqCst);
        }
        self.finished.fetch_add(1, SeqCst);
    }

    /// The report's lines: `reloads`, `reloads_refused`, after a refusal
    /// `last_reload_refusal`, when the last reload kept `[server]`
    /// changes for a restart, `last_reload_kept` (the keys), and while a
    /// reload runs, `reload_under_way_ms`.
    pub(crate) fn report(&self) -> String {
        use std::sync::atomic::Ordering::SeqCst;
        // Under the lock `record` counts with: the figures belong together.
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let finished = self.finished.load(SeqCst);
        let refused = self.refused.load(SeqCst);
        let mut lines = format!("reloads: {finished}\nreloads_refused: {refused}\n");
        // What a monitor wants to know: whether the file on disk is the
        // configuration in force (as far as the last reload goes).
        if finished > 0 {
            let verdict = if last.refused { "refused" } else { "applied" };
            lines.push_str(&format!("last_reload: {verdict}\n"));
        }
        if refused > 0 {
            lines.push_str(&format!("last_reload_refusal: {}\n", last.refusal));
        }
        drop(last);
        let kept = self
            .kept_server_changes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !kept.is_empty() {
            lines.push_str(&format!("last_reload_kept: {kept}\n"));
        }
        drop(kept);
        if let Some(since) = *self
            .under_way_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            lines.push_str(&format!(
                "reload_under_way_ms: {}\n",
                since.elapsed().as_millis()
            ));
        }
        lines
    }
}

/// Configurations a reload replaced whose modules are not stopped yet.
/// Each is stopped (ApplicationStop, then Terminate) once no request uses
/// it, or when the server stops, whichever comes first, and only once:
/// whoever takes it out of the list stops it. Once the server stops, no
/// reload replaces the configuration any more (the swap and the stop hold
/// the same lock), so the one in force is stopped exactly once too.
#[derive(Default)]
pub(crate) struct Retiring {
    state: Mutex<RetiringState>,
    /// Held by a reload from start to end, and by the final stop: a reload
    /// under way when the server stops finishes first, so its configuration
    /// is the one the stop stops.
    busy: Mutex<()>,
}

#[derive(Default)]
struct RetiringState {
    list: Vec<Arc<Generation>>,
    /// The server stopped its modules: reloads are refused.
    closed: bool,
}

impl Retiring {
    /// Puts `new` in force and lists the one it replaces, which is
    /// returned; `None` (and nothing changes) once the server is stopping.
    fn replace(
        &self,
        current: &CurrentGeneration,
        new: Arc<Generation>,
    ) -> Option<Arc<Generation>> {
        let mut state = self.lock();
        if state.closed {
            return None;
        }
        let old = current.swap(new);
        state.list.push(old.clone());
        Some(old)
    }

    /// Watches `old` on the current runtime and stops it once no request
    /// uses it (without a runtime, it waits for the server's stop).
    fn watch(self: &Arc<Self>, old: Arc<Generation>) {
        let watched = Arc::downgrade(&old);
        drop(old);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let retiring = self.clone();
        runtime.spawn(async move {
            loop {
                let Some(old) = watched.upgrade() else {
                    return; // stopped at shutdown
                };
                // Requests hold the generation (and their contexts the
                // pipeline) until they end; the list holds one more, and so
                // does `old` here.
                if Arc::strong_count(&old) <= 2 && Arc::strong_count(&old.pipeline) <= 1 {
                    if let Some(old) = retiring.take(&old) {
                        stop(&old);
                        tracing::debug!("the previous configuration's modules are stopped");
                    }
                    return;
                }
                drop(old);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    /// The server is stopping (its requests are done, or were closed at the
    /// drain deadline): refuses later reloads, then stops every
    /// configuration still retiring, and last the one in force. With
    /// `stop_modules` false (a global module's call still under way) the
    /// modules are left unstopped, as IIS leaves them when it ends a worker
    /// process past its shutdown time limit: stopping a module under its
    /// own running call could free what that call still uses.
    pub(crate) fn close_and_stop_all(
        &self,
        current: &CurrentGeneration,
        stop_modules: bool,
        deadline: std::time::Duration,
    ) {
        // A reload under way (a file on a hung mount, a RegisterModule that
        // never returns) is not waited for: the server stops now, and that
        // reload, should it ever finish, finds the server closed and stops
        // its own configuration (`replace`).
        let _no_reload = match self.busy.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {
                tracing::warn!(
                    "a reload is still running; the server stops without waiting for it"
                );
                None
            }
        };
        let (retiring, in_force) = {
            let mut state = self.lock();
            state.closed = true;
            (std::mem::take(&mut state.list), current.load_full())
        };
        if !stop_modules {
            tracing::warn!("the modules are not stopped (no ApplicationStop, no terminate): a module's call is still under way");
            return;
        }
        // Bounded: a module whose ApplicationStop or Terminate never
        // returns must not keep the process from ending.
        // (Logged there if it does not end.)
        let _ =
            crate::server::within_deadline("ApplicationStop or Terminate", deadline, move || {
                for old in retiring {
                    stop(&old);
                }
                stop(&in_force);
            });
    }

    /// Whether the server stopped its modules (reloads are refused).
    fn closed(&self) -> bool {
        self.lock().closed
    }

    fn take(&self, g: &Arc<Generation>) -> Option<Arc<Generation>> {
        let mut state = self.lock();
        let i = state.list.iter().position(|o| Arc::ptr_eq(o, g))?;
        Some(state.list.swap_remove(i))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RetiringState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn stop(g: &Generation) {
    g.pipeline.raise_application_stop();
    g.pipeline.terminate();
}
