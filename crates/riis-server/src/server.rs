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

use riis_native::{precondition_holds, NativeLibrary};

use crate::connection::{answer_and_close, start_clock, ConnectionCounter, Sweeper};
use crate::driver::{CurrentGeneration, Generation};
use crate::protocol::{serve_connection, Negotiated, Serving};
use crate::reload::{ConfigSource, Reloader, Retiring};
use crate::tls::{CertificateBinding, SniResolver, TlsListener};
use arc_swap::ArcSwap;
use riis_pipeline::{
    ConnectionInfo, Pipeline, PipelineBuilder, PipelineSettings, RegisterModuleFn, Site,
};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{ConfigError, ServerConfig};
use crate::driver::Routes;
use crate::fs::{FileCacheLimits, RealFileSystem};

/// Why the server could not run.
#[derive(Debug)]
pub enum ServerError {
    /// The configuration is invalid.
    Config(ConfigError),
    /// An address could not be bound.
    Bind(SocketAddr, std::io::Error),
    /// The runtime could not start.
    Runtime(std::io::Error),
    /// TLS could not be set up.
    Tls(String),
    /// The work [`Server::run_with`] was given to do once the addresses are
    /// bound failed (the message says what).
    Startup(String),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "{e}"),
            Self::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            Self::Runtime(e) => write!(f, "cannot start the runtime: {e}"),
            Self::Tls(e) => write!(f, "cannot set up TLS: {e}"),
            Self::Startup(e) => f.write_str(e),
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
/// built-in ones, registers it, and validates handlers, locations and
/// sections. The pipeline probes paths through `fs`, and `status` answers
/// for the server in a `status` RscaQuery.
pub fn build_pipeline(
    config: &ServerConfig,
    extra: &[(&str, RegisterModuleFn)],
    fs: Arc<RealFileSystem>,
    status: Arc<dyn riis_pipeline::ServerStatus>,
) -> Result<Arc<Pipeline>, ConfigError> {
    let mut builder = PipelineBuilder::new();
    builder.server_status(status);
    builder.configuration_folder(config.folder.clone());
    let libraries = load_native_modules(config)?;
    let mut skipped: Vec<&str> = Vec::new();
    for (i, entry) in config.modules.iter().enumerate() {
        let kind = entry.type_name();
        if let Some((g, loaded)) = config
            .global_modules
            .iter()
            .position(|m| m.name == kind)
            .map(|g| (g, &libraries[g]))
        {
            let Some(library) = loaded else {
                // Its precondition does not hold here: IIS skips such a module.
                tracing::info!(module = %entry.name, "native module skipped: its precondition does not hold");
                skipped.push(entry.name.as_str());
                continue;
            };
            builder
                .register_module(&entry.name, |_, registration, server| {
                    library.register(registration, server)
                })
                .map_err(|e| {
                    config.error_at(
                        &format!("global_modules[{g}]"),
                        &format!("native module `{}`: {}", entry.name, e.message),
                    )
                })?;
            continue;
        }
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
    builder.file_system(fs.clone());
    builder.server_handlers(config.handlers.clone());
    for s in &config.sections {
        builder.server_section(s.clone());
    }
    for site in &config.sites {
        builder.site(site.clone());
    }
    let server_header = config.server_header()?;
    builder.settings(PipelineSettings {
        response_buffer_limit: config.settings.response_buffer_limit,
        server_header,
    });
    builder.build().map(Arc::new).map_err(|mut e| {
        // A handler naming a module its precondition left out: say why it
        // is not in the list.
        if let Some(name) = skipped
            .iter()
            .find(|n| e.message.contains(&format!("module `{n}`")))
        {
            e.message.push_str(&format!(
                " (native module `{name}` is skipped: its precondition does not hold)"
            ));
        }
        config.build_error(&e)
    })
}

/// Opens every `[[global_modules]]` library whose precondition holds (so a
/// bad image is reported even when it is not enabled): one entry per
/// `global_modules` entry, `None` where the precondition does not hold.
fn load_native_modules(config: &ServerConfig) -> Result<Vec<Option<NativeLibrary>>, ConfigError> {
    let mut loaded = Vec::with_capacity(config.global_modules.len());
    for (i, g) in config.global_modules.iter().enumerate() {
        if config.global_modules[..i].iter().any(|o| o.name == g.name) {
            return Err(config.error_at(
                &format!("global_modules[{i}].name"),
                &format!("native module `{}` is listed twice", g.name),
            ));
        }
        let holds = match &g.precondition {
            Some(p) => precondition_holds(p).map_err(|e| {
                config.error_at(
                    &format!("global_modules[{i}].precondition"),
                    &format!("native module `{}`: {e}", g.name),
                )
            })?,
            None => true,
        };
        let library = if holds {
            Some(NativeLibrary::open(&g.image).map_err(|e| {
                config.error_at(
                    &format!("global_modules[{i}].image"),
                    &format!("native module `{}`: {e}", g.name),
                )
            })?)
        } else {
            None
        };
        loaded.push(library);
    }
    Ok(loaded)
}

/// One listening address and the sites answering on it.
pub(crate) struct ListenerPlan {
    addr: SocketAddr,
    routes: Routes,
    tls: Option<Arc<SniResolver>>,
    /// Address-specific bindings served from this (wildcard) socket.
    shared: Vec<SharedAddress>,
}

/// An address-specific binding on a wildcard binding's port (see
/// [`ServerConfig::wildcard_sharing`]): connections that arrive at its
/// address are routed, and offered certificates, as its own.
pub(crate) struct SharedAddress {
    addr: SocketAddr,
    /// Its sites and the wildcard's, in http.sys's order: host names bound
    /// to this address, host names bound to the wildcard, then this
    /// address's catch-all, then the wildcard's.
    routes: Routes,
    tls: Option<Arc<SniResolver>>,
}

/// The certificates of every `https://` address, loaded (so a bad file is a
/// configuration error, reported by `riis check-config` too).
pub(crate) fn load_certificates(
    config: &ServerConfig,
) -> Result<BTreeMap<SocketAddr, Arc<SniResolver>>, ConfigError> {
    // Each address's certificates, with the site each comes from.
    let mut by_addr: BTreeMap<SocketAddr, Vec<(usize, CertificateBinding)>> = BTreeMap::new();
    for sb in &config.bindings {
        for b in sb.bindings.iter().filter(|b| b.tls) {
            if let Some(source) = &sb.tls {
                by_addr.entry(b.addr).or_default().push((
                    sb.site,
                    CertificateBinding {
                        host: b.host.clone(),
                        source: source.clone(),
                    },
                ));
            }
        }
    }
    // A shared address also offers the wildcard's certificates (after its
    // own), since the wildcard's host names answer there too.
    for (specific, wildcard) in config.wildcard_sharing() {
        if let Some(more) = by_addr.get(&wildcard).cloned() {
            by_addr.entry(specific).or_default().extend(more);
        }
    }
    by_addr
        .into_iter()
        .map(|(addr, sited)| {
            let bindings: Vec<CertificateBinding> = sited.iter().map(|(_, b)| b.clone()).collect();
            SniResolver::load(bindings)
                .map(|r| (addr, Arc::new(r)))
                .map_err(|e| {
                    // The error names the site whose files fail on their
                    // own (each is loaded again, on this error path only):
                    // its certificate pair, its client CA file or its
                    // revocation list file.
                    let fails = |(_, b): &&(usize, CertificateBinding)| {
                        let s = &b.source;
                        if crate::tls::load_chain(s).is_err() {
                            Some("certificate")
                        } else if crate::tls::load_certified_key(s).is_err() {
                            // The chain loads: the key is what fails (or
                            // does not match it).
                            Some("certificate_key")
                        } else if s
                            .client_ca
                            .as_deref()
                            .is_some_and(|ca| crate::tls::load_client_roots(ca).is_err())
                        {
                            Some("client_certificate_ca")
                        } else if s
                            .client_crl
                            .as_deref()
                            .is_some_and(|crl| crate::tls::load_client_crls(crl).is_err())
                        {
                            Some("client_certificate_crl")
                        } else {
                            None
                        }
                    };
                    let (site, key) = sited
                        .iter()
                        .find_map(|sb| Some((sb.0, fails(&sb)?)))
                        .unwrap_or((sited.first().map_or(0, |(s, _)| *s), "certificate"));
                    config.error_at(&format!("sites[{site}].{key}"), &e)
                })
        })
        .collect()
}

pub(crate) fn plan_listeners(
    config: &ServerConfig,
    pipeline: &Pipeline,
    certificates: &BTreeMap<SocketAddr, Arc<SniResolver>>,
) -> Vec<ListenerPlan> {
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
    for routes in by_addr.values_mut() {
        // Host names first, then wildcard hosts; the hostless binding
        // catches the rest. The sort is stable: configuration order stays
        // among equals.
        routes.sort_by_key(|(h, _)| crate::driver::route_rank(h.as_deref()));
    }
    let sharing = config.wildcard_sharing();
    let mut plans: BTreeMap<SocketAddr, ListenerPlan> = by_addr
        .iter()
        .filter(|(addr, _)| !sharing.contains_key(addr))
        .map(|(addr, routes)| {
            let plan = ListenerPlan {
                addr: *addr,
                routes: routes.as_slice().into(),
                tls: certificates.get(addr).cloned(),
                shared: Vec::new(),
            };
            (*addr, plan)
        })
        .collect();
    for (specific, wildcard) in sharing {
        let own = &by_addr[&specific];
        let theirs = &by_addr[&wildcard];
        // The address's own routes before the wildcard's at each rank: its
        // host names, the wildcard's host names, then wildcard hosts (the
        // longest first, the address's first among equals), then its
        // catch-all and the wildcard's.
        let mut merged: Vec<_> = own.iter().chain(theirs.iter()).cloned().collect();
        merged.sort_by_key(|(h, _)| crate::driver::route_rank(h.as_deref()));
        if let Some(plan) = plans.get_mut(&wildcard) {
            plan.shared.push(SharedAddress {
                addr: specific,
                routes: merged.into(),
                tls: certificates.get(&specific).cloned(),
            });
        }
    }
    plans.into_values().collect()
}

/// Which sites answer on each listening address, from the plans: bound
/// addresses and the addresses that share a wildcard's socket.
pub(crate) fn routes_of(plans: &[ListenerPlan]) -> BTreeMap<SocketAddr, Routes> {
    plans
        .iter()
        .flat_map(|p| {
            std::iter::once((p.addr, p.routes.clone()))
                .chain(p.shared.iter().map(|a| (a.addr, a.routes.clone())))
        })
        .collect()
}

/// What a site's TLS requests get: its `Strict-Transport-Security` value
/// and its `client_certificate_ca`, for the sites that set either.
#[derive(Debug, Clone, Default)]
pub struct SiteTls {
    /// `hsts`, as the header value.
    pub hsts: Option<http::HeaderValue>,
    /// `client_certificate_ca`.
    pub client_ca: Option<std::path::PathBuf>,
    /// `client_certificate_crl`.
    pub client_crl: Option<std::path::PathBuf>,
}

/// The [`SiteTls`] of each site that sets `hsts` or `client_certificate_ca`,
/// by site id.
pub(crate) fn site_tls_of(config: &ServerConfig, pipeline: &Pipeline) -> BTreeMap<u32, SiteTls> {
    config
        .bindings
        .iter()
        .filter_map(|sb| {
            let tls = SiteTls {
                hsts: sb
                    .hsts
                    .as_ref()
                    .and_then(|h| http::HeaderValue::try_from(h.header_value()).ok()),
                client_ca: sb.tls.as_ref().and_then(|t| t.client_ca.clone()),
                client_crl: sb.tls.as_ref().and_then(|t| t.client_crl.clone()),
            };
            (tls.hsts.is_some() || tls.client_ca.is_some())
                .then(|| (pipeline.sites()[sb.site].info().site_id, tls))
        })
        .collect()
}

/// How long past `shutdown_timeout` a stop waits for a worker thread a
/// module call holds.
const HELD_WORKER_GRACE: Duration = Duration::from_secs(5);

/// Whether `stamp` has not yet seen the current second, noting it: for
/// logging a flood (refused connections, failed handshakes) at most one
/// line a second.
pub(crate) fn first_this_second(stamp: &std::sync::atomic::AtomicU64) -> bool {
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    stamp.swap(second, Ordering::Relaxed) != second
}

/// A configured server, ready to run.
pub struct Server {
    config: ServerConfig,
    // No pipeline of its own: `current` holds the one in force, and a
    // second reference would keep the first configuration's modules from
    // ever being stopped after a reload.
    current: CurrentGeneration,
    fs: Arc<RealFileSystem>,
    /// The server's status figures, with its connection count.
    figures: Arc<ServerFigures>,
    certificates: BTreeMap<SocketAddr, Arc<SniResolver>>,
    extra: Vec<(String, RegisterModuleFn)>,
    source: Option<ConfigSource>,
    /// Configurations replaced by reloads, not stopped yet.
    retiring: Arc<Retiring>,
}

impl Server {
    /// Validates the configuration and builds its pipeline with the built-in
    /// modules.
    pub fn new(config: ServerConfig) -> Result<Self, ConfigError> {
        Self::with_modules(config, &[])
    }

    /// What the configuration probably does not mean, each placed at its
    /// key: [`ServerConfig::warnings`], and modules that take part in
    /// requests only as handlers but that no handler names.
    pub fn warnings(&self) -> Vec<ConfigError> {
        crate::config_warnings::warnings_of(&self.config, &self.pipeline())
    }

    /// Ends a server that was built but will not serve (`check-config`, the
    /// validation `riis reload` does before signalling): its modules'
    /// `terminate` hooks run, as they would at shutdown, so a module
    /// library that started something at registration can stop it.
    ///
    /// A module whose `terminate` has not returned by `shutdown_timeout` is
    /// left behind: the warning naming it is returned (and logged).
    pub fn discard(self) -> Option<String> {
        let pipeline = self.current.load().pipeline.clone();
        within_deadline("Terminate", self.modules_stop_budget(), move || {
            pipeline.terminate()
        })
        .err()
    }

    /// Like [`Server::new`], with more modules compiled into the program that
    /// embeds riis; the configuration enables them by name like built-ins.
    pub fn with_modules(
        config: ServerConfig,
        extra: &[(&str, RegisterModuleFn)],
    ) -> Result<Self, ConfigError> {
        let settings = &config.settings;
        let fs = Arc::new(RealFileSystem::new(FileCacheLimits {
            max_size: settings.file_cache_size,
            max_file_size: settings.file_cache_max_file_size,
        }));
        let figures = Arc::new(ServerFigures {
            counter: Arc::default(),
            started: std::time::Instant::now(),
        });
        let pipeline = build_pipeline(&config, extra, fs.clone(), figures.clone())?;
        fs.attach(&pipeline);
        let certificates = load_certificates(&config)?;
        let routes = routes_of(&plan_listeners(&config, &pipeline, &certificates));
        Ok(Self {
            current: Arc::new(ArcSwap::from_pointee(Generation::new(
                &config,
                pipeline.clone(),
                routes,
            ))),
            extra: extra.iter().map(|(n, f)| ((*n).to_owned(), *f)).collect(),
            source: None,
            retiring: Arc::default(),
            certificates,
            figures,
            config,
            fs,
        })
    }

    /// Where a reload (SIGHUP) reads the configuration again: usually the
    /// same file, with the same command-line overrides. Without a source,
    /// SIGHUP only reloads the TLS certificates.
    pub fn set_config_source(&mut self, source: ConfigSource) {
        self.source = Some(source);
    }

    /// What reloads this server's configuration.
    pub fn reloader(&self) -> Arc<Reloader> {
        Arc::new(Reloader::new(
            self.source.clone(),
            self.extra.clone(),
            PipelineServices {
                fs: self.fs.clone(),
                figures: self.figures.clone(),
            },
            self.current.clone(),
            self.certificates.clone(),
            &self.config,
            self.retiring.clone(),
        ))
    }

    /// The pipeline in force (for inspection).
    pub fn pipeline(&self) -> Arc<Pipeline> {
        self.current.load().pipeline.clone()
    }

    /// Worker threads: `[server] worker_threads`, or one per core available
    /// to the process (its CPU affinity counts, so `taskset -c 0` gives one).
    pub fn worker_threads(&self) -> usize {
        match self.config.settings.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// Runs until SIGTERM or SIGINT, then drains.
    ///
    /// Thread per core, like nginx's worker processes: each worker thread has
    /// its own single-threaded runtime and accepts on the shared listening
    /// sockets, and a connection lives on one thread from accept to close. No
    /// request state crosses threads and no scheduler work is shared.
    pub fn run(self) -> Result<(), ServerError> {
        self.run_with(|| Ok(()))
    }

    /// [`Server::run`], calling `listening` once every address is bound and
    /// before the first connection is accepted: the moment to announce the
    /// server (a pid file, a readiness notice). Nothing of it happens when
    /// binding fails (another server holds the address), and an error from
    /// it stops the server before it serves.
    pub fn run_with(
        self,
        listening: impl FnOnce() -> Result<(), String>,
    ) -> Result<(), ServerError> {
        let workers = self.worker_threads();
        let control = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        let served = control.block_on(async move {
            // Signal handlers go in before the sockets are bound, so a
            // SIGTERM that follows the "listening" line is never missed.
            let mut shutdown = ShutdownSignal::install().map_err(ServerError::Runtime)?;
            let control = shutdown.take_control();
            let bound = self.bind(workers)?;
            listening().map_err(ServerError::Startup)?;
            bound
                .serve_threads_with(shutdown.recv_then_force_on_second(), control)
                .await
        });
        // A reload still blocked (on a file that never ends, say) must not
        // keep the process from exiting: dropping the runtime would wait
        // for it.
        control.shutdown_background();
        served
    }

    /// Serves on the current tokio runtime until `shutdown` resolves, then
    /// stops listening and gives in-flight requests `shutdown_timeout`
    /// seconds to finish. For embedding riis in a program that has a runtime.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        self.bind(1)?.serve(shutdown).await
    }

    /// Binds every address of the configuration, with one handle on each
    /// listening socket per worker (`sockets`). Serving starts by printing
    /// one `riis: listening on http://ADDR for SITES` line per address
    /// (scripts and tests read it to learn ephemeral ports), so what a
    /// caller does between binding and serving (a pid file) is done before
    /// anyone reads that the server listens.
    pub fn bind(self, sockets: usize) -> Result<BoundServer, ServerError> {
        let plans = plan_listeners(&self.config, &self.pipeline(), &self.certificates);
        let mut listeners = Vec::with_capacity(plans.len());
        for plan in plans {
            let first = listen_socket(plan.addr).map_err(|e| {
                // Named where the file asks for it: which site, which line.
                let message = format!("cannot listen on {}: {e}", plan.addr);
                match self.config.binding_error(plan.addr, &message) {
                    Some(placed) => ServerError::Config(placed),
                    None => ServerError::Bind(plan.addr, e),
                }
            })?;
            let local = first
                .local_addr()
                .map_err(|e| ServerError::Bind(plan.addr, e))?;
            // Every worker accepts on the same socket: the kernel hands each
            // connection to whichever worker is ready first, and no other
            // process can bind the address beside us (as SO_REUSEPORT would
            // allow).
            let mut group = Vec::with_capacity(sockets.max(1));
            for _ in 1..sockets.max(1) {
                group.push(first.try_clone().map_err(|e| ServerError::Bind(local, e))?);
            }
            group.push(first);
            let name = |(h, s): &(Option<String>, Arc<Site>)| match h {
                Some(h) => format!("{} ({h})", s.info().site_name),
                None => s.info().site_name.clone(),
            };
            let mut sites: Vec<String> = plan.routes.iter().map(name).collect();
            for shared in &plan.shared {
                // The shared address's own sites (its routes end with the
                // wildcard's, already listed).
                let own = shared.routes.iter().filter(|r| {
                    !plan
                        .routes
                        .iter()
                        .any(|w| Arc::ptr_eq(&w.1, &r.1) && w.0 == r.0)
                });
                sites.extend(own.map(|r| format!("{} on {}", name(r), shared.addr.ip())));
            }
            let acceptor = |resolver: &Option<Arc<SniResolver>>| match resolver {
                Some(resolver) => TlsListener::new(resolver.clone())
                    .map(Some)
                    .map_err(ServerError::Tls),
                None => Ok(None),
            };
            let tls = acceptor(&plan.tls)?;
            let shared = plan
                .shared
                .iter()
                .map(|a| Ok((a.addr, acceptor(&a.tls)?)))
                .collect::<Result<Vec<_>, ServerError>>()?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            listeners.push(ListenerGroup {
                announcement: format!(
                    "riis: listening on {scheme}://{local} for {}",
                    sites.join(", ")
                ),
                local,
                sockets: group,
                listening: Listening {
                    key: plan.addr,
                    tls,
                    shared: shared.into(),
                },
            });
        }
        Ok(BoundServer {
            server: self,
            listeners,
        })
    }
}

/// A non-blocking listening socket with a backlog of 1024 (`SO_REUSEADDR`,
/// so a restart does not wait for old connections in TIME_WAIT).
fn listen_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The sockets bound for one address, and the sites answering there.
struct ListenerGroup {
    /// The line printed for it when serving starts.
    announcement: String,
    local: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
    listening: Listening,
}

/// One listening address: its configured form (the key of its sites in the
/// current generation), and TLS for `https://`.
#[derive(Clone)]
struct Listening {
    key: SocketAddr,
    tls: Option<TlsListener>,
    /// Address-specific bindings served from this wildcard socket: their
    /// addresses (routing keys) and TLS acceptors.
    shared: Arc<[(SocketAddr, Option<TlsListener>)]>,
}

impl Listening {
    /// The routing key and TLS acceptor for a connection that arrived at
    /// `local`: a shared address's own when it names that address.
    fn arrived_at(&self, local: SocketAddr) -> (SocketAddr, Option<&TlsListener>) {
        match self.shared.iter().find(|(a, _)| a.ip() == local.ip()) {
            Some((addr, tls)) => (*addr, tls.as_ref()),
            None => (self.key, self.tls.as_ref()),
        }
    }
}

/// A server whose addresses are bound, not yet serving.
pub struct BoundServer {
    server: Server,
    listeners: Vec<ListenerGroup>,
}

impl BoundServer {
    /// Prints the `listening on` lines. A closed or broken stdout (a
    /// script that read the first line and went away) does not stop the
    /// server: the lines are only news.
    fn announce(&self) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for group in &self.listeners {
            let _ = writeln!(out, "{}", group.announcement);
        }
        let _ = out.flush();
    }

    /// The bound addresses (with the real port for `:0` bindings).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|g| g.local).collect()
    }

    /// Serves on the current runtime, every socket of each address there,
    /// until `shutdown` resolves; then drains (see [`Server::serve`]).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        self.announce();
        let Self { server, listeners } = self;
        let sockets = listeners
            .into_iter()
            .flat_map(|g| {
                let listening = g.listening;
                g.sockets.into_iter().map(move |s| (s, listening.clone()))
            })
            .collect();
        let (stop_tx, stop_rx) = watch::channel(false);
        // Embedded: the program that embeds riis speaks to its service
        // manager, if any.
        let lifecycle = Lifecycle::start(&server, stop_rx.clone(), None, false);
        let worker = tokio::spawn(run_worker(
            sockets,
            server.current.clone(),
            server.figures.counter.clone(),
            stop_rx,
            server.shutdown_timeout(),
        ));
        shutdown.await;
        lifecycle.stop(&stop_tx);
        let _ = worker.await;
        lifecycle.finish(true).await;
        Ok(())
    }

    /// Serves with one thread per socket of each address (see
    /// [`Server::run`]) until `shutdown` resolves; then drains.
    pub async fn serve_threads(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        self.serve_threads_with(shutdown, None).await
    }

    /// [`BoundServer::serve_threads`] with the SIGHUP and SIGUSR1 watches
    /// made earlier (see [`ShutdownSignal::install`]).
    pub(crate) async fn serve_threads_with(
        self,
        shutdown: impl Future<Output = ()>,
        control: Option<ControlSignals>,
    ) -> Result<(), ServerError> {
        self.announce();
        let addresses = self.local_addrs();
        let Self { server, listeners } = self;
        let workers = listeners.iter().map(|g| g.sockets.len()).max().unwrap_or(1);
        let mut per_worker: Vec<Vec<(std::net::TcpListener, Listening)>> =
            (0..workers).map(|_| Vec::new()).collect();
        for group in listeners {
            for (i, socket) in group.sockets.into_iter().enumerate() {
                per_worker[i].push((socket, group.listening.clone()));
            }
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let lifecycle = Lifecycle::start(&server, stop_rx.clone(), control, true);
        let mut threads = Vec::with_capacity(workers);
        for (i, sockets) in per_worker.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(ServerError::Runtime)?;
            let current = server.current.clone();
            let counter = server.figures.counter.clone();
            let stop = stop_rx.clone();
            let deadline = server.shutdown_timeout();
            let thread = std::thread::Builder::new()
                .name(format!("riis-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(run_worker(sockets, current, counter, stop, deadline))
                })
                .map_err(ServerError::Runtime)?;
            threads.push(thread);
        }
        let addresses: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        crate::service_manager::ready(&format!("serving on {}", addresses.join(", ")));
        shutdown.await;
        lifecycle.stop(&stop_tx);
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        // A worker held by a module call that never returns would hold the
        // stop for good (its own drain deadline cannot even start): past
        // `shutdown_timeout` and a few seconds more, the process goes on
        // to stop without it, as IIS ends a worker process past its
        // `shutdownTimeLimit`.
        let limit = server.shutdown_timeout() + HELD_WORKER_GRACE;
        let workers_returned = tokio::time::timeout(limit, joined).await.is_ok();
        if !workers_returned {
            let mut held = String::new();
            crate::in_flight::report(&mut held, true);
            tracing::error!(
                "a worker thread was still held {}s after the stop began \
                 (shutdown_timeout and {}s more); stopping without it\n{held}",
                limit.as_secs(),
                HELD_WORKER_GRACE.as_secs()
            );
        }
        lifecycle.finish(workers_returned).await;
        Ok(())
    }
}

impl Server {
    /// How long the modules' ApplicationStop and Terminate may take, all
    /// together: `shutdown_timeout`, and at least
    /// [`MODULES_STOP_AT_LEAST`] (a `shutdown_timeout` of 0 does not wait
    /// for requests, but still stops the modules).
    fn modules_stop_budget(&self) -> Duration {
        self.shutdown_timeout().max(MODULES_STOP_AT_LEAST)
    }

    fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.config.settings.shutdown_timeout)
    }
}

/// Where `riis status` finds the server's report: `[server] pid_file` with
/// `.status` added (none without a pid file).
pub fn status_file(config: &ServerConfig) -> Option<std::path::PathBuf> {
    Some(status_file_for(&config.pid_file()?))
}

/// Where the server whose pid file is `pid_file` writes its status report.
pub fn status_file_for(pid_file: &std::path::Path) -> std::path::PathBuf {
    let mut name = pid_file.as_os_str().to_owned();
    name.push(".status");
    name.into()
}

/// What each configuration's pipeline of one server is built with (see
/// [`build_pipeline`]), the same across reloads.
pub(crate) struct PipelineServices {
    pub(crate) fs: Arc<RealFileSystem>,
    pub(crate) figures: Arc<ServerFigures>,
}

/// The server's lines at the head of a `status` RscaQuery's answer.
pub(crate) struct ServerFigures {
    counter: Arc<ConnectionCounter>,
    started: std::time::Instant,
}

impl riis_pipeline::ServerStatus for ServerFigures {
    fn write_status(&self, query: &mut riis_pipeline::RscaQuery<'_>) {
        query.write(&format!(
            "uptime_seconds: {}\nconnections_open: {}\nrequests_started: {}\nrequests_refused_total: {}\n",
            self.started.elapsed().as_secs(),
            self.counter.open(),
            crate::driver::requests_started(),
            crate::strict::requests_refused(),
        ));
        // The Metrics page asks for the figures only, on every scrape.
        let mut requests = String::new();
        crate::in_flight::report(&mut requests, query.parameters() != "figures");
        query.write(&requests);
    }
}

/// The runtime status `riis status` shows: the process and its
/// configuration, then the answer to the RscaQuery `status` (IIS's runtime
/// status query): the server's own figures and each global module's.
fn status_report(
    pipeline: &riis_pipeline::Pipeline,
    file: &std::path::Path,
    stopping: bool,
) -> String {
    let mut query = riis_pipeline::RscaQuery::new("status", "");
    pipeline.raise_rsca_query(&mut query);
    let mut report = format!(
        "process: {}
state: {}
configuration: {}
modules: {}
",
        std::process::id(),
        if stopping { "stopping" } else { "serving" },
        // Absolute: `riis reload` compares it with the file it was given.
        std::path::absolute(file)
            .unwrap_or_else(|_| file.to_owned())
            .display(),
        pipeline.module_names().collect::<Vec<_>>().join(", "),
    );
    report.push_str(&crate::reload::RELOADS.report());
    report.push_str(query.output());
    if !report.ends_with('\n') {
        report.push('\n');
    }
    report
}

/// Writes `report` to `path` whole: to a file of its own first, renamed.
/// The staging file is made new, never opened through whatever sits at its
/// name: a link planted there in a shared folder would have the server
/// (often root) overwrite its target, as the pid file guards against too.
fn write_status(path: &std::path::Path, report: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let _ = std::fs::remove_file(&tmp);
    // Owner-only: the report lists URLs with their query strings (tokens,
    // at times) and clients' addresses, as traces do.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(report.as_bytes())?;
    std::fs::rename(&tmp, path)
}

/// The server-level notifications around serving: ApplicationStart, the
/// periodic HealthCheck, reloads on SIGHUP, StopListening, ApplicationStop
/// and Terminate.
struct Lifecycle {
    current: CurrentGeneration,
    retiring: Arc<Retiring>,
    /// `shutdown_timeout`: how long the modules' ApplicationStop and
    /// Terminate may take at the end.
    modules_deadline: Duration,
    /// The periodic module work; true once every call it made returned.
    health: tokio::task::JoinHandle<bool>,
    /// `riis status`'s calls into the modules.
    status_calls: Arc<StatusCalls>,
    /// Whether the service manager gets notices.
    notify: bool,
}

/// `riis status`'s call into the modules (RscaQuery), made on a blocking
/// thread: the stop waits for one under way before it stops the modules
/// (a module's Terminate must not run under its own call), and none starts
/// after.
#[derive(Default)]
struct StatusCalls {
    /// (a call runs, no call may start any more)
    state: std::sync::Mutex<(bool, bool)>,
}

impl StatusCalls {
    /// Marks a call as started; false once the stop closed them.
    fn begin(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.1 {
            return false;
        }
        state.0 = true;
        true
    }

    fn end(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 = false;
    }

    /// Closes them, and waits until `deadline` for the one under way;
    /// false when it had not returned by then.
    async fn close(&self, deadline: tokio::time::Instant) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        while self.state.lock().unwrap_or_else(|e| e.into_inner()).0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    "a global module's RscaQuery had not returned by the end of shutdown_timeout; stopping without it"
                );
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

impl Lifecycle {
    /// `notify`: whether to send the service manager's notices (see
    /// [`crate::service_manager`]).
    fn start(
        server: &Server,
        stop: watch::Receiver<bool>,
        control: Option<ControlSignals>,
        notify: bool,
    ) -> Self {
        // Watched from here at the latest (before any task runs), so no
        // signal sent once serving starts is lost.
        let control = control.unwrap_or_else(ControlSignals::watch);
        let pipeline = server.pipeline();
        tracing::info!(
            modules = ?pipeline.module_names().collect::<Vec<_>>(),
            "configuration loaded from {}",
            server.config.file.display()
        );
        pipeline.raise_application_start();
        let certificates: Vec<Arc<SniResolver>> = server.certificates.values().cloned().collect();
        let interval = server.config.settings.certificate_check_interval;
        if !certificates.is_empty() && interval > 0 {
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(interval));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = every.tick() => {
                            for c in &certificates {
                                c.reload_if_changed();
                            }
                        }
                        _ = stop.changed() => return,
                    }
                }
            });
        }
        let reloader = server.reloader();
        let mut reload_stop = stop.clone();
        let hangup = control.hangup;
        tokio::spawn(async move {
            let Some(mut hangup) = hangup else {
                tracing::warn!("cannot watch SIGHUP; reload by signal is off");
                return;
            };
            // Reloads run on a blocking thread, one at a time: reading the
            // file, loading libraries and calling their RegisterModule may
            // block (a file on a hung mount, a slow module), and must not
            // hold up this runtime, which also handles SIGTERM.
            let reloader = Arc::new(reloader);
            loop {
                tokio::select! {
                    _ = hangup.recv() => {
                        let reloader = reloader.clone();
                        if notify {
                            crate::service_manager::reloading();
                        }
                        let reloading = tokio::task::spawn_blocking(move || reloader.reload_and_log());
                        tokio::select! {
                            outcome = reloading => if notify {
                                crate::service_manager::ready(&match outcome {
                                    Ok(Ok(())) => "serving; configuration reloaded".to_owned(),
                                    Ok(Err(why)) => format!("serving; reload refused: {why}"),
                                    Err(_) => "serving; the reload failed".to_owned(),
                                });
                            },
                            _ = reload_stop.changed() => break,
                        }
                    }
                    _ = reload_stop.changed() => break,
                }
            }
            // Stopping: a reload asked for now is not made, and says so
            // (as nginx logs the signals it ignores).
            while hangup.recv().await.is_some() {
                tracing::warn!("SIGHUP while the server stops: no reload");
            }
        });
        let status_calls = Arc::new(StatusCalls::default());
        if let Some(path) = status_file(&server.config) {
            let calls = status_calls.clone();
            let current = server.current.clone();
            let file = server.config.file.clone();
            // Answered through the drain too (what is still in flight is
            // what an operator then wants to see), until the process ends.
            let stopping = stop.clone();
            let asked = control.status;
            tokio::spawn(async move {
                let Some(mut asked) = asked else {
                    tracing::warn!("cannot watch SIGUSR1; riis status is off");
                    return;
                };
                while asked.recv().await.is_some() {
                    // On a blocking thread: the report asks the global
                    // modules (RscaQuery), and one slow to answer must not
                    // hold up this runtime, which also handles SIGTERM and
                    // SIGHUP (as HealthCheck runs off it). One at a time; a
                    // request for a status while one is made waits for it.
                    // None once the modules are being stopped.
                    if !calls.begin() {
                        continue;
                    }
                    let (current, file, path) = (current.clone(), file.clone(), path.clone());
                    let stopping = *stopping.borrow();
                    let _ = tokio::task::spawn_blocking(move || {
                        let report = status_report(&current.load().pipeline, &file, stopping);
                        if let Err(e) = write_status(&path, &report) {
                            tracing::warn!(error = %e, path = %path.display(), "cannot write the status");
                        }
                    })
                    .await;
                    calls.end();
                }
            });
        }
        if let Some(interval) = crate::service_manager::watchdog_interval().filter(|_| notify) {
            tokio::spawn(crate::service_manager::keep_watchdog(
                interval,
                stop.clone(),
            ));
        }
        let health = tokio::spawn(periodic_work(
            server.current.clone(),
            server.fs.clone(),
            server.config.settings.clone(),
            stop,
        ));
        Self {
            current: server.current.clone(),
            retiring: server.retiring.clone(),
            modules_deadline: server.modules_stop_budget(),
            health,
            status_calls,
            notify,
        }
    }

    fn stop(&self, stop: &watch::Sender<bool>) {
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        if self.notify {
            crate::service_manager::stopping();
        }
        let _ = stop.send(true);
        self.current.load().pipeline.raise_stop_listening();
    }

    /// `workers_returned`: false when a worker thread was left held by a
    /// module call; modules are then not stopped under it, as with a
    /// global call that did not return.
    async fn finish(self, workers_returned: bool) {
        let status_returned = self
            .status_calls
            .close(tokio::time::Instant::now() + self.modules_deadline)
            .await;
        let returned = self.health.await.unwrap_or(true) && workers_returned && status_returned;
        // Configurations a reload replaced and whose last requests ended
        // only now (or never will) are stopped too, before the one in force;
        // a reload from now on is refused.
        self.retiring
            .close_and_stop_all(&self.current, returned, self.modules_deadline);
        tracing::info!("stopped");
    }
}

/// One worker: accepts on its sockets and serves their connections until
/// `stop`, then gives in-flight requests `deadline` to finish.
async fn run_worker(
    sockets: Vec<(std::net::TcpListener, Listening)>,
    current: CurrentGeneration,
    counter: Arc<ConnectionCounter>,
    stop: watch::Receiver<bool>,
    deadline: Duration,
) {
    start_clock();
    let sweeper = Arc::new(Sweeper::default());
    // The sweeper goes on through the drain, and stops after it: its
    // timeouts still apply to the connections that finish (a client that
    // stops reading gets `timeouts.send`), and it closes an idle HTTP/2
    // connection whose client never answers the GOAWAY's PING, which would
    // otherwise hold the stop until its deadline.
    let (sweep_stop, sweep_stopped) = watch::channel(false);
    let sweeping = {
        let sweeper = sweeper.clone();
        let current = current.clone();
        tokio::spawn(async move { sweeper.run(current, sweep_stopped).await })
    };
    let serving = Arc::new(Serving {
        current,
        counter,
        sweeper,
    });

    let mut accept_loops = Vec::with_capacity(sockets.len());
    for (socket, listening) in sockets {
        let listener = match TcpListener::from_std(socket) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot register a listening socket");
                continue;
            }
        };
        accept_loops.push(tokio::spawn(accept_loop(
            listener,
            listening,
            serving.clone(),
            stop.clone(),
        )));
    }
    for l in accept_loops {
        let _ = l.await;
    }
    if tokio::time::timeout(deadline, serving.sweeper.drain())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight requests did not finish within {}s; closing them",
            deadline.as_secs()
        );
        serving.sweeper.close_all().await;
    }
    let _ = sweep_stop.send(true);
    let _ = sweeping.await;
}

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// The second (since the epoch) of the last failed accept warned of.
static ACCEPT_FAILURE_WARNED: AtomicU64 = AtomicU64::new(0);

/// Connections over the limits being answered 503 now (each for up to a
/// few seconds), in the whole process: past [`MAX_REFUSALS_IN_FLIGHT`],
/// more are closed without an answer, so a flood cannot hold descriptors
/// the limits were set to protect. One count for every worker: per
/// worker, eight workers answered 512 at once, past the 128 descriptors
/// the reserve may be, and files then failed to open.
static REFUSALS_IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// See [`REFUSALS_IN_FLIGHT`]; under half the smallest reserve.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// The second (since the epoch) of the last connection refusal warned of.
static REFUSAL_WARNED: AtomicU64 = AtomicU64::new(0);

async fn accept_loop(
    listener: TcpListener,
    listening: Listening,
    serving: Arc<Serving>,
    mut stop: watch::Receiver<bool>,
) {
    let local = listener.local_addr().ok();
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep
                    // serving; one line a second, not twenty per listener.
                    if first_this_second(&ACCEPT_FAILURE_WARNED) {
                        tracing::warn!(error = %e, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        // The limits and timeouts of the moment (a reload changes them).
        let generation = serving.current.load();
        let _ = stream.set_nodelay(true);
        let local_addr = stream.local_addr().ok().or(local).unwrap_or(remote);
        let (key, tls) = listening.arrived_at(local_addr);
        // A connection that starts with a PROXY header is counted under its
        // client once the header names it.
        let proxied = generation.proxy_protocol.expects_header(key);
        if proxied && !generation.proxy_protocol.trusts(remote.ip()) {
            log_proxy_refusal(remote, "the peer is not in proxy_protocol.trusted");
            continue;
        }
        let client = (!proxied).then(|| remote.ip());
        let admission = match serving.counter.admit(client, &generation.limits) {
            Ok(a) => a,
            Err(refusal) => {
                refuse(stream, remote, refusal, tls.is_none());
                continue;
            }
        };
        let info = ConnectionInfo::new(
            CONNECTION_IDS.fetch_add(1, Ordering::Relaxed),
            local_addr,
            remote,
        );
        if !proxied && tls.is_none() {
            serve_connection(stream, info, key, admission, Negotiated::Unknown, &serving);
            continue;
        }
        // The PROXY header and the TLS handshake share one deadline.
        let limit = match generation.timeouts.header_read {
            0 => Duration::from_secs(60),
            secs => Duration::from_secs(secs),
        };
        let deadline = tokio::time::Instant::now() + limit;
        let tls = tls.cloned();
        let serving = serving.clone();
        tokio::spawn(async move {
            let (mut stream, mut info, mut admission) = (stream, info, admission);
            if proxied {
                let header = tokio::time::timeout_at(
                    deadline,
                    crate::proxy_protocol::read_header(&mut stream),
                )
                .await;
                match header {
                    Ok(Ok(proxied)) => {
                        if let Some(client) = proxied.client {
                            info.remote_addr = client;
                        }
                        info.tls_ended_at_balancer = proxied.tls_ended_at_balancer;
                    }
                    Ok(Err(e)) => return log_proxy_refusal(remote, &e.to_string()),
                    Err(_) => return log_proxy_refusal(remote, "no PROXY header in time"),
                }
                let limits = &serving.current.load().limits;
                if let Err(refusal) = admission.count_client(info.remote_addr.ip(), limits) {
                    drop(admission);
                    return refuse(stream, info.remote_addr, refusal, tls.is_none());
                }
            }
            match tls {
                None => {
                    serve_connection(stream, info, key, admission, Negotiated::Unknown, &serving)
                }
                Some(acceptor) => {
                    info.is_tls = true;
                    let Some((tls, negotiated)) =
                        handshake(&acceptor, stream, &mut info, deadline).await
                    else {
                        return;
                    };
                    // A connection that completes its handshake during a
                    // drain is told to close at once (see `Sweeper::track`).
                    serve_connection(tls, info, key, admission, negotiated, &serving);
                }
            }
        });
    }
}

/// Refuses a connection over a limit: a plain one is answered (503) and
/// closed, unless too many such answers are in flight; a TLS one is
/// closed.
fn refuse(
    stream: tokio::net::TcpStream,
    client: SocketAddr,
    refusal: crate::strict::Refusal,
    plain: bool,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let answering = REFUSALS_IN_FLIGHT.fetch_add(1, Relaxed);
    // At most one warning a second, not one per connection of a flood
    // (plain or TLS).
    if first_this_second(&REFUSAL_WARNED) {
        tracing::warn!(remote = %client, reason = refusal.reason, "connection refused");
    } else {
        tracing::debug!(remote = %client, reason = refusal.reason, "connection refused");
    }
    if plain && answering < MAX_REFUSALS_IN_FLIGHT {
        tokio::spawn(async move {
            let mut stream = stream;
            answer_and_close(&mut stream, refusal).await;
            REFUSALS_IN_FLIGHT.fetch_sub(1, Relaxed);
        });
    } else {
        REFUSALS_IN_FLIGHT.fetch_sub(1, Relaxed);
    }
}

/// The TLS handshake of a connection, within `deadline`; `None` when it
/// failed (logged).
async fn handshake(
    acceptor: &TlsListener,
    stream: tokio::net::TcpStream,
    info: &mut ConnectionInfo,
    deadline: tokio::time::Instant,
) -> Option<(
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    Negotiated,
)> {
    let remote = info.remote_addr;
    let mut stream = stream;
    // One peek per TLS connection (the handshake costs far more): plain
    // HTTP gets its 400 here, since rustls would only see a bad record.
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1..)) if crate::strict::starts_plain_http(first[0]) => {
            let refusal = crate::strict::PLAIN_HTTP_TO_TLS_PORT;
            crate::strict::note_refusal(remote, refusal.status, refusal.reason, None);
            crate::connection::answer_and_close(&mut stream, refusal).await;
            return None;
        }
        // The handshake below reports a closed or failing socket.
        Ok(_) => {}
        Err(_) => {
            log_handshake_timeout(remote);
            return None;
        }
    }
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(handshake)) => {
            if let Some(ca) = handshake.client_ca {
                let presented = handshake.stream.get_ref().1.peer_certificates();
                info.client_certificate = presented
                    .and_then(|chain| chain.first())
                    .and_then(|der| crate::client_certificate::describe(der))
                    .map(Arc::new);
                info.client_certificate_ca = Some(ca);
                info.client_certificate_crl = handshake.client_crl;
            }
            handshake.stream
        }
        Ok(Err(e)) => {
            // At most one line a second at `info`: a flood of failing
            // handshakes must not flood the log. A peer that closed
            // without a word (a balancer's health check, a port scan) is
            // not worth one.
            let silent = matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            );
            if !silent && first_this_second(&HANDSHAKE_FAILURE_LOGGED) {
                tracing::info!(%remote, error = %e, "TLS handshake failed");
            } else {
                tracing::debug!(%remote, error = %e, "TLS handshake failed");
            }
            return None;
        }
        Err(_) => {
            log_handshake_timeout(remote);
            return None;
        }
    };
    let negotiated = match tls.get_ref().1.alpn_protocol() {
        Some(b"h2") => Negotiated::Http2,
        Some(_) => Negotiated::Http1,
        None => Negotiated::Unknown,
    };
    Some((tls, negotiated))
}

/// Logs a TLS handshake that did not finish in time, at most once a
/// second at `info`.
fn log_handshake_timeout(remote: SocketAddr) {
    if first_this_second(&HANDSHAKE_FAILURE_LOGGED) {
        tracing::info!(%remote, "TLS handshake timed out");
    } else {
        tracing::debug!(%remote, "TLS handshake timed out");
    }
}

/// Logs a connection closed for its PROXY header (or its peer), at most
/// once a second at `info`.
fn log_proxy_refusal(peer: SocketAddr, why: &str) {
    if first_this_second(&PROXY_REFUSAL_LOGGED) {
        tracing::info!(%peer, reason = why, "connection closed: PROXY protocol");
    } else {
        tracing::debug!(%peer, reason = why, "connection closed: PROXY protocol");
    }
}

/// The second (since the epoch) of the last PROXY protocol refusal logged
/// at `info`.
static PROXY_REFUSAL_LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The second (since the epoch) of the last handshake failure logged at
/// `info`.
static HANDSHAKE_FAILURE_LOGGED: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// HealthCheck notifications and file cache sweeps, until `stop`.
async fn periodic_work(
    current: CurrentGeneration,
    fs: Arc<RealFileSystem>,
    settings: crate::config::ServerSettings,
    mut stop: watch::Receiver<bool>,
) -> bool {
    let every = |secs: u64| {
        let period = Duration::from_secs(secs.max(1));
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    };
    let health_on = settings.health_check_interval > 0;
    let sweep_on = settings.file_cache_size > 0 && settings.file_cache_cleanup_interval > 0;
    let mut health = every(settings.health_check_interval);
    let mut sweep = every(settings.file_cache_cleanup_interval);
    // Both run module code (HealthCheck, and CacheCleanup from the sweep)
    // on a blocking thread: this task shares its thread with the signals,
    // reloads, `riis status` and the service manager's watchdog, which a
    // module that takes its time must not hold up.
    let mut health_check = OffThread::new("HealthCheck");
    let mut cleanup = OffThread::new("CacheCleanup");
    loop {
        tokio::select! {
            _ = health.tick(), if health_on => {
                let pipeline = current.load().pipeline.clone();
                if pipeline.has_global_listeners(riis_pipeline::GlobalNotification::HealthCheck) {
                    health_check.start(move || pipeline.raise_health_check());
                }
            }
            _ = sweep.tick(), if sweep_on => {
                let fs = fs.clone();
                cleanup.start(move || fs.cleanup());
            }
            _ = stop.changed() => break,
        }
    }
    // The stop waits for a call under way as long as it waits for
    // requests; a module still in its call then is left to it (the process
    // exits without waiting for the thread).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(settings.shutdown_timeout);
    let health_returned = health_check.finish(deadline).await;
    cleanup.finish(deadline).await && health_returned
}

/// Periodic module work run on a blocking thread, one call at a time: a
/// tick that comes while the last call still runs is skipped (logged at
/// most once a minute), so a slow module is not called again and again
/// on ever more threads.
struct OffThread {
    what: &'static str,
    running: Option<tokio::task::JoinHandle<()>>,
    since: Option<tokio::time::Instant>,
    warned: Option<tokio::time::Instant>,
}

impl OffThread {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            running: None,
            since: None,
            warned: None,
        }
    }

    fn start(&mut self, work: impl FnOnce() + Send + 'static) {
        let now = tokio::time::Instant::now();
        if self.running.as_ref().is_some_and(|r| !r.is_finished()) {
            if self
                .warned
                .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(60))
            {
                self.warned = Some(now);
                let running_ms = self.since.map_or(0, |s| now.duration_since(s).as_millis());
                tracing::warn!(
                    notification = self.what,
                    running_ms,
                    "a global module's call has not returned; the next ones are skipped until it does"
                );
            }
            return;
        }
        self.since = Some(now);
        self.running = Some(tokio::task::spawn_blocking(work));
    }

    /// Waits until `deadline` for the call under way; false when it had
    /// not returned by then.
    async fn finish(&mut self, deadline: tokio::time::Instant) -> bool {
        let Some(running) = self.running.take() else {
            return true;
        };
        if tokio::time::timeout_at(deadline, running).await.is_err() {
            tracing::warn!(
                notification = self.what,
                "a global module's call had not returned by the end of shutdown_timeout; stopping without it"
            );
            return false;
        }
        true
    }
}

/// SIGHUP (reload) and SIGUSR1 (status), watched from the moment they were
/// made: a signal that comes before the task reading it runs is kept for
/// it (tokio delivers a signal only to the listeners that exist).
pub(crate) struct ControlSignals {
    hangup: Option<tokio::signal::unix::Signal>,
    status: Option<tokio::signal::unix::Signal>,
}

impl ControlSignals {
    fn watch() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self {
            hangup: signal(SignalKind::hangup()).ok(),
            status: signal(SignalKind::user_defined1()).ok(),
        }
    }
}

/// SIGTERM, SIGINT and SIGQUIT, watched from the moment of
/// [`ShutdownSignal::install`] (with SIGHUP and SIGUSR1, for the server
/// this process runs). SIGQUIT stops gracefully too, as it does nginx; and
/// SIGUSR2, nginx's binary upgrade, is logged and ignored rather than left
/// to its default action, the process's end without a drain.
///
/// SIGXFSZ is watched and ignored as well: under a file size limit
/// (`ulimit -f`, systemd's `LimitFSIZE=`) a write past it would otherwise
/// end the process, so any client could stop the server by making the
/// access log grow. Ignored, the write fails with `EFBIG`, which the log
/// reports and retries as any failed write. (A handler, unlike `SIG_IGN`,
/// is not inherited by the programs riis starts.)
pub struct ShutdownSignal {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: Option<tokio::signal::unix::Signal>,
    usr2: Option<tokio::signal::unix::Signal>,
    file_size: Option<tokio::signal::unix::Signal>,
    control: Option<ControlSignals>,
}

/// The next delivery of a signal that may not be watched (`None`: never).
async fn next_of(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

impl ShutdownSignal {
    /// Starts watching; must run inside a tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        // SIGHUP (reload) and SIGUSR1 (status) are watched from now, before
        // the pid file and the listening line: one sent as soon as those
        // appear is neither the default action (the process's end) nor
        // lost before serving starts to read them.
        let control = ControlSignals::watch();
        let mut stops = Self::stops()?;
        stops.control = Some(control);
        Ok(stops)
    }

    /// The stop signals (and SIGUSR2) alone.
    fn stops() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit()).ok(),
            usr2: signal(SignalKind::user_defined2()).ok(),
            file_size: signal(SignalKind::from_raw(libc::SIGXFSZ)).ok(),
            control: None,
        })
    }

    /// The SIGHUP and SIGUSR1 watches, for the server's own tasks.
    pub(crate) fn take_control(&mut self) -> Option<ControlSignals> {
        self.control.take()
    }

    /// Resolves on the first SIGTERM, SIGINT or SIGQUIT.
    pub async fn recv(mut self) {
        self.next_stop().await;
    }

    /// Waits for the next stop signal, logging (and otherwise ignoring)
    /// each SIGUSR2 meanwhile.
    async fn next_stop(&mut self) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                Some(()) = next_of(&mut self.quit) => return,
                Some(()) = next_of(&mut self.usr2) => tracing::warn!(
                    "SIGUSR2 ignored: riis has no binary upgrade (nginx's meaning); \
                     SIGHUP reloads the configuration"
                ),
                // The write that raised it failed with EFBIG; its writer
                // reports that.
                Some(()) = next_of(&mut self.file_size) => tracing::debug!(
                    "SIGXFSZ ignored: a write went past the file size limit"
                ),
            }
        }
    }

    /// Resolves on the first stop signal, as [`ShutdownSignal::recv`];
    /// a second one during the drain then ends the process at once (exit
    /// status 1), as a second Ctrl-C does Caddy: requests still in flight
    /// are cut, and access-log lines not yet written are lost. One within
    /// [`SAME_STOP_WINDOW`] of the first is taken as the same stop:
    /// `timeout(1)` signals the program and then its process group, and a
    /// wrapper script that forwards Ctrl-C to riis adds its own to the
    /// terminal's, and neither means "now". For the `riis` program; an
    /// embedding program decides for itself.
    pub(crate) async fn recv_then_force_on_second(mut self) {
        self.next_stop().await;
        let first = std::time::Instant::now();
        // Listening again at once, so a second signal that comes while the
        // watching thread starts is not lost (a signal with no listener
        // is); the first one is not seen again.
        let again = match ShutdownSignal::stops() {
            Ok(again) => again,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch for a second stop signal");
                return;
            }
        };
        // Watched from a thread of its own: the thread that took the first
        // signal runs the stop's own steps (StopListening, the modules'
        // terminate), and a module stuck in one of them is just when an
        // operator sends the second.
        let watch = std::thread::Builder::new()
            .name("riis-stop-watch".into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    let mut again = again;
                    again.next_stop().await;
                    while first.elapsed() < SAME_STOP_WINDOW {
                        tracing::info!(
                            "a second stop signal within a second of the first: taken as the same \
                             stop (send another to stop at once)"
                        );
                        again.next_stop().await;
                    }
                    tracing::warn!(
                        "a second stop signal during the drain: stopping at once, \
                         without waiting for the requests in flight"
                    );
                    // The pid file stays, and `riis status` calls it stale
                    // (no process holds it).
                    std::process::exit(1)
                });
            });
        if let Err(e) = watch {
            tracing::warn!(error = %e, "cannot watch for a second stop signal");
        }
    }
}

/// The least time the modules' ApplicationStop and Terminate get at the
/// end, whatever `shutdown_timeout` says.
const MODULES_STOP_AT_LEAST: Duration = Duration::from_secs(10);

/// Runs `work` (the modules' ApplicationStop and Terminate) on a thread of
/// its own and waits for it at most `deadline`: a module whose callback
/// never returns is logged, by the module being called, and left behind,
/// so that a stop, `check-config` or the check before a reload still ends
/// (as IIS ends a worker process past `shutdownTimeLimit`). The error is
/// the warning logged when the work did not end in time.
pub(crate) fn within_deadline(
    what: &str,
    deadline: Duration,
    work: impl FnOnce() + Send + 'static,
) -> Result<(), String> {
    let (done, ended) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("riis-stop-modules".into())
        .spawn(move || {
            work();
            let _ = done.send(());
        });
    let warning = if spawned.is_err() {
        "cannot start a thread to stop the modules on; they are not stopped".to_owned()
    } else if ended.recv_timeout(deadline).is_ok() {
        return Ok(());
    } else {
        let module = riis_pipeline::Pipeline::module_in_lifecycle_call();
        format!(
            "module `{}`'s {what} has not returned in time (the modules get shutdown_timeout, and at least 10 seconds, {}s here); going on without it",
            module.as_deref().unwrap_or("?"),
            deadline.as_secs()
        )
    };
    tracing::warn!("{warning}");
    Err(warning)
}

/// How soon after the first stop signal another is taken as the same
/// stop rather than a request to stop at once.
const SAME_STOP_WINDOW: Duration = Duration::from_secs(1);

/// Resolves on SIGTERM or SIGINT (watching starts at the first poll).
pub async fn shutdown_signal() {
    match ShutdownSignal::install() {
        Ok(signal) => signal.recv().await,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM/SIGINT");
            std::future::pending::<()>().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use riis_pipeline::{HttpModule, HttpModuleFactory, ModuleError, ModuleRegistration};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static TERMINATED: AtomicUsize = AtomicUsize::new(0);

    struct Counted;
    impl HttpModule for Counted {}

    struct Factory;
    impl HttpModuleFactory for Factory {
        fn get_http_module(&self) -> Result<Box<dyn HttpModule>, ModuleError> {
            Ok(Box::new(Counted))
        }
        fn terminate(&self) {
            TERMINATED.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn register(
        _: u32,
        r: &mut ModuleRegistration<'_>,
        _: &riis_pipeline::ServerInfo,
    ) -> Result<(), ModuleError> {
        r.set_request_notifications(
            Factory,
            riis_pipeline::RequestNotification::BeginRequest.into(),
            riis_pipeline::RequestNotifications::NONE,
        )
    }

    #[test]
    fn a_discarded_server_terminates_its_modules() {
        let text = "[[modules]]\nname = \"Counted\"\n[[sites]]\nname = \"s\"\nroot = \".\"\n\
                    bindings = [\"127.0.0.1:0\"]\n";
        let config = ServerConfig::parse(
            text,
            std::path::Path::new("riis.toml"),
            &std::env::temp_dir(),
        )
        .unwrap();
        let server = Server::with_modules(config, &[("Counted", register)]).unwrap();
        assert_eq!(TERMINATED.load(Ordering::SeqCst), 0);
        server.discard();
        assert_eq!(TERMINATED.load(Ordering::SeqCst), 1);
    }
}
