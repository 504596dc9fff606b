//! Listeners, connections and the server's life: build the pipeline from the
//! configuration, bind every address, serve HTTP/1.1 (keep-alive,
//! pipelining) and HTTP/2 (prior knowledge) on each, raise the server-level
//! notifications, and drain on SIGTERM/SIGINT.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use riis_pipeline::{
    ConnectionInfo, Pipeline, PipelineBuilder, PipelineSettings, RegisterModuleFn,
};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{ConfigError, ServerConfig};
use crate::driver::{handle, ConnectionState, Routes};

/// Why the server could not run.
#[derive(Debug)]
pub enum ServerError {
    /// The configuration is invalid.
    Config(ConfigError),
    /// An address could not be bound.
    Bind(SocketAddr, std::io::Error),
    /// The runtime could not start.
    Runtime(std::io::Error),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "{e}"),
            Self::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            Self::Runtime(e) => write!(f, "cannot start the runtime: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

impl From<ConfigError> for ServerError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// Builds the pipeline a configuration describes: resolves each module of the
/// list among `extra` modules (compiled in by an embedding program) and the
/// built-in ones, registers it, and validates handlers, locations and sections.
pub fn build_pipeline(
    config: &ServerConfig,
    extra: &[(&str, RegisterModuleFn)],
) -> Result<Arc<Pipeline>, ConfigError> {
    let mut builder = PipelineBuilder::new();
    for (i, entry) in config.modules.iter().enumerate() {
        let kind = entry.kind.as_deref().unwrap_or(&entry.name);
        let found = extra
            .iter()
            .find(|(n, _)| *n == kind)
            .map(|(_, f)| *f)
            .or_else(|| riis_modules::builtin(kind));
        let Some(register) = found else {
            let known: Vec<&str> = extra
                .iter()
                .chain(riis_modules::BUILTIN_MODULES.iter())
                .map(|(n, _)| *n)
                .collect();
            let key = if entry.kind.is_some() { "type" } else { "name" };
            return Err(config.error_at(
                &format!("modules[{i}].{key}"),
                &format!(
                    "unknown module `{kind}` (known modules: {})",
                    known.join(", ")
                ),
            ));
        };
        builder
            .register_module(&entry.name, register)
            .map_err(|e| config.error_at(&format!("modules[{i}]"), &e.message))?;
    }
    builder.server_handlers(config.handlers.clone());
    for s in &config.sections {
        builder.server_section(s.clone());
    }
    for site in &config.sites {
        builder.site(site.clone());
    }
    builder.settings(PipelineSettings {
        response_buffer_limit: config.settings.response_buffer_limit,
        server_header: (!config.settings.server_header.is_empty())
            .then(|| http::HeaderValue::try_from(config.settings.server_header.as_str()).ok())
            .flatten(),
    });
    builder
        .build()
        .map(Arc::new)
        .map_err(|e| config.build_error(&e))
}

/// One listening address and the sites answering on it.
struct ListenerPlan {
    addr: SocketAddr,
    routes: Routes,
}

fn plan_listeners(config: &ServerConfig, pipeline: &Pipeline) -> Vec<ListenerPlan> {
    let mut by_addr: BTreeMap<SocketAddr, Vec<_>> = BTreeMap::new();
    for sb in &config.bindings {
        let site = pipeline.sites()[sb.site].clone();
        for b in &sb.bindings {
            by_addr
                .entry(b.addr)
                .or_default()
                .push((b.host.clone(), site.clone()));
        }
    }
    by_addr
        .into_iter()
        .map(|(addr, mut routes)| {
            // Host-specific bindings first; the hostless one catches the rest.
            routes.sort_by_key(|(h, _)| h.is_none());
            ListenerPlan {
                addr,
                routes: routes.into(),
            }
        })
        .collect()
}

/// A configured server, ready to run.
pub struct Server {
    config: ServerConfig,
    pipeline: Arc<Pipeline>,
}

impl Server {
    /// Validates the configuration and builds its pipeline with the built-in
    /// modules.
    pub fn new(config: ServerConfig) -> Result<Self, ConfigError> {
        Self::with_modules(config, &[])
    }

    /// Like [`Server::new`], with more modules compiled into the program that
    /// embeds riis; the configuration enables them by name like built-ins.
    pub fn with_modules(
        config: ServerConfig,
        extra: &[(&str, RegisterModuleFn)],
    ) -> Result<Self, ConfigError> {
        let pipeline = build_pipeline(&config, extra)?;
        Ok(Self { config, pipeline })
    }

    /// The pipeline (for inspection).
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// Worker threads the runtime should have.
    pub fn worker_threads(&self) -> usize {
        match self.config.settings.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// Runs on a new multi-threaded runtime until SIGTERM or SIGINT, then
    /// drains.
    pub fn run(self) -> Result<(), ServerError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.worker_threads())
            .thread_name("riis-worker")
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        runtime.block_on(self.serve(shutdown_signal()))
    }

    /// Serves until `shutdown` resolves, then stops listening and gives
    /// in-flight requests `shutdown_timeout` seconds to finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        self.bind().await?.serve(shutdown).await
    }

    /// Binds every address of the configuration and prints one
    /// `riis: listening on http://ADDR for SITES` line per listener (scripts
    /// and tests read it to learn ephemeral ports).
    pub async fn bind(self) -> Result<BoundServer, ServerError> {
        let plans = plan_listeners(&self.config, &self.pipeline);
        let mut listeners = Vec::with_capacity(plans.len());
        for plan in plans {
            let listener = TcpListener::bind(plan.addr)
                .await
                .map_err(|e| ServerError::Bind(plan.addr, e))?;
            let local = listener
                .local_addr()
                .map_err(|e| ServerError::Bind(plan.addr, e))?;
            let sites: Vec<String> = plan
                .routes
                .iter()
                .map(|(h, s)| match h {
                    Some(h) => format!("{} ({h})", s.info().site_name),
                    None => s.info().site_name.clone(),
                })
                .collect();
            println!("riis: listening on http://{local} for {}", sites.join(", "));
            listeners.push((listener, plan.routes));
        }
        Ok(BoundServer {
            server: self,
            listeners,
        })
    }
}

/// A server whose addresses are bound, not yet serving.
pub struct BoundServer {
    server: Server,
    listeners: Vec<(TcpListener, Routes)>,
}

impl BoundServer {
    /// The bound addresses (with the real port for `:0` bindings).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` resolves, then drains (see [`Server::serve`]).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Self { server, listeners } = self;
        let this = &server;
        tracing::info!(
            modules = ?this.pipeline.module_names().collect::<Vec<_>>(),
            "configuration loaded from {}",
            this.config.file.display()
        );
        this.pipeline.raise_application_start();

        let (stop_tx, stop_rx) = watch::channel(false);
        let graceful = Arc::new(GracefulShutdown::new());
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .pipeline_flush(true);
        builder.http2().timer(TokioTimer::new());
        let builder = Arc::new(builder);

        let mut accept_loops = Vec::new();
        for (listener, routes) in listeners {
            accept_loops.push(tokio::spawn(accept_loop(
                listener,
                routes,
                this.pipeline.clone(),
                builder.clone(),
                graceful.clone(),
                stop_rx.clone(),
            )));
        }
        let health = tokio::spawn(health_checks(
            this.pipeline.clone(),
            this.config.settings.health_check_interval,
            stop_rx.clone(),
        ));

        shutdown.await;
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        let _ = stop_tx.send(true);
        for l in accept_loops {
            let _ = l.await;
        }
        let _ = health.await;
        this.pipeline.raise_stop_listening();
        let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| {
            // Every accept loop has ended, so no clone is left.
            unreachable!("accept loops hold the only other references")
        });
        let deadline = Duration::from_secs(this.config.settings.shutdown_timeout);
        if tokio::time::timeout(deadline, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                "in-flight requests did not finish within {}s; closing them",
                deadline.as_secs()
            );
        }
        this.pipeline.raise_application_stop();
        this.pipeline.terminate();
        tracing::info!("stopped");
        Ok(())
    }
}

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

async fn accept_loop(
    listener: TcpListener,
    routes: Routes,
    pipeline: Arc<Pipeline>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    let local = listener.local_addr().ok();
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let local_addr = stream.local_addr().ok().or(local).unwrap_or(remote);
        let state = Arc::new(ConnectionState {
            pipeline: pipeline.clone(),
            routes: routes.clone(),
            connection: Arc::new(ConnectionInfo::new(
                CONNECTION_IDS.fetch_add(1, Ordering::Relaxed),
                local_addr,
                remote,
            )),
        });
        let service = service_fn(move |req| handle(state.clone(), req));
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %remote, "connection ended with an error");
            }
        });
    }
}

async fn health_checks(pipeline: Arc<Pipeline>, interval: u64, mut stop: watch::Receiver<bool>) {
    if interval == 0
        || !pipeline.has_global_listeners(riis_pipeline::GlobalNotification::HealthCheck)
    {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(interval));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => pipeline.raise_health_check(),
            _ = stop.changed() => return,
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
