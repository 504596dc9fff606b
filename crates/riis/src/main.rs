//! The `riis` command: serve sites, or check a configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use riis_server::{defaults, Server, ServerConfig};

/// mimalloc's thread-local free lists suit a server that allocates and frees
/// small objects per request on every worker thread; glibc's allocator costs
/// about 3% of a small static request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// riis: the IIS integrated pipeline, as a web server for Linux.
#[derive(Debug, Parser)]
#[command(name = "riis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the configured sites (with no options: the example site on
    /// http://127.0.0.1:8080).
    Serve {
        /// The configuration file.
        #[arg(long, short, conflicts_with = "root")]
        config: Option<PathBuf>,
        /// Serve this folder with the default modules, no file needed.
        #[arg(long)]
        root: Option<PathBuf>,
        /// Listen here instead of every configured binding (host names are kept).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Check a configuration file and exit: 0 when it is valid, 1 with the
    /// error otherwise.
    CheckConfig {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RIIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn load(
    config: Option<PathBuf>,
    root: Option<PathBuf>,
) -> Result<ServerConfig, riis_server::ConfigError> {
    match (config, root) {
        (Some(path), _) => ServerConfig::load(&path),
        (None, Some(root)) => defaults::root_config(&root),
        (None, None) => defaults::default_config(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Serve {
            config,
            root,
            listen,
        } => {
            let mut config = match load(config, root) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("riis: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Some(addr) = listen {
                if let Err(e) = config.override_listen(addr) {
                    eprintln!("riis: {e}");
                    return ExitCode::FAILURE;
                }
            }
            let server = match Server::new(config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("riis: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match server.run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("riis: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config } => {
            match ServerConfig::load(&config).and_then(Server::new) {
                Ok(server) => {
                    println!(
                        "{}: configuration is valid ({} modules, {} sites)",
                        config.display(),
                        server.pipeline().module_names().count(),
                        server.pipeline().sites().len()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("riis: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
