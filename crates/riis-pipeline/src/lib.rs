//! The riis integrated request pipeline.
//!
//! This crate is the engine of riis, the model of IIS 7+'s native pipeline:
//! modules ([`HttpModule`], made per request by an [`HttpModuleFactory`])
//! register through an entry point ([`RegisterModuleFn`]) for request
//! notifications with priorities; every request runs the deterministic events
//! BeginRequest … EndRequest with their post-events, and the nondeterministic
//! ones (SendResponse, ReadEntity, MapPath, custom notifications) whenever they
//! happen. [`GlobalModule`]s see server-level notifications.
//!
//! The engine does no I/O. [`RequestExecution`] is a state machine the network
//! server drives: it returns a [`Step`] (send this output, read body bytes,
//! wait for a module's completion) and is resumed with the result.
//!
//! ```
//! use riis_pipeline::*;
//!
//! struct Hello;
//! impl HttpModule for Hello {
//!     fn on_begin_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
//!         let resp = ctx.response_mut();
//!         resp.clear();
//!         resp.set_header(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
//!         resp.write("Hello World!");
//!         RequestNotificationStatus::FinishRequest
//!     }
//! }
//!
//! fn register_module(_version: u32, reg: &mut ModuleRegistration<'_>, _server: &ServerInfo)
//!     -> Result<(), ModuleError>
//! {
//!     reg.set_request_notifications(|| Hello, RequestNotification::BeginRequest.into(), RequestNotifications::NONE)
//! }
//!
//! let mut builder = PipelineBuilder::new();
//! builder.register_module("Hello", register_module).unwrap();
//! let pipeline = builder.build().unwrap();
//! assert_eq!(pipeline.dispatch_order(RequestNotification::BeginRequest, false), ["Hello"]);
//! ```

#![warn(missing_docs)]

mod client_certificate;
mod completion;
mod context;
mod context_container;
mod delivery;
mod execution;
mod global;
mod handler;
mod module;
mod pipeline;
mod provider;
mod registration;
mod request;
mod response;
mod server_variables;
mod upgrade;
mod user;

pub use bytes;
pub use http;
/// The TOML values configuration sections are made of.
pub use toml;

pub use client_certificate::{
    attribute_name, canonical_attribute, write_distinguished_name, ClientCertificate,
    ATTRIBUTE_NAMES,
};
pub use completion::{CompletionHandle, CompletionWaiter, ParkedChanges};
pub use context::{ExecuteFlags, ExecutionStats, HttpContext};
pub use context_container::{
    ConnectionInfo, ConnectionLiveness, ModuleContextContainer, SharedContextContainer,
};
pub use delivery::{DeliveryWatchers, ResponseDelivery};
pub use execution::{
    Activity, Output, RequestExecution, ResponseHead, Step, Waiting, E_CONNECTION_ABORTED,
    E_INVALID_DATA, E_TIMEOUT, YIELD_AFTER,
};
pub use global::{
    Application, ApplicationInfo, CacheOperation, RscaQuery, ServerStatus, TraceEvent, TracePhase,
};
pub use handler::{
    allow_rank, FileSystem, HandlerMapping, MappingFailure, PathPattern, Probe, ResourceInfo,
    ResourceKind, ResourceType,
};
pub use module::{GlobalModule, HttpModule, HttpModuleFactory, ModuleError};
pub use pipeline::{
    BuildError, HandlerDefinition, Location, LocationDefinition, Pipeline, PipelineBuilder,
    PipelineSettings, SectionSource, Site, SiteDefinition, VirtualDirectory,
    MAX_CHILD_REQUEST_DEPTH,
};
pub use provider::{
    CompletedOperation, CompletionInfo, CustomNotificationProvider, MapPathProvider,
    ReadEntityProvider, SendFlags, SendResponseProvider,
};
pub use registration::{
    configuration_folder, error_at_key, InheritedSection, ModuleIndex, ModuleRegistration,
    RegisterModuleFn, Section, ServerInfo, SERVER_VERSION,
};
pub use request::{path_below, prepare_url_path, HttpRequest, RefusedHead, UrlError};
pub use response::{escape_html, EntityChunk, FlushOptions, HttpResponse, KeptHead, ResponseError};
pub use riis_notification::{
    GlobalNotification, GlobalNotificationStatus, GlobalNotifications, Priority,
    RequestNotification, RequestNotificationStatus, RequestNotifications,
};
pub use upgrade::{UpgradedIo, UpgradedStream};
pub use user::{HttpUser, RoleCheck};
