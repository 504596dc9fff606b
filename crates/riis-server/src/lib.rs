//! The riis network server.
//!
//! Reads `riis.toml` ([`config`]), builds the pipeline with the built-in
//! modules, binds each site's addresses, and drives every request through the
//! pipeline with hyper on tokio ([`driver`]). The engine itself lives in
//! `riis-pipeline` and does no I/O; everything that touches sockets is here.

#![warn(missing_docs)]

pub mod body;
pub mod client_certificate;
pub mod config;
mod config_warnings;
pub mod connection;
pub mod defaults;
pub mod driver;
mod framing;
pub mod fs;
mod h2_flood;
mod h2_streams;
mod in_flight;
mod protocol;
pub mod proxy_protocol;
pub mod reload;
pub mod server;
mod service_manager;
pub mod strict;
pub mod tls;
mod upgrade;

pub use config::{ConfigError, ServerConfig};
pub use server::{
    build_pipeline, shutdown_signal, status_file, status_file_for, BoundServer, Server,
    ServerError, ShutdownSignal,
};
