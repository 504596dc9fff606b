//! Write riis modules in Rust against the stable C ABI
//! (`include/riis_module.h`), and ship them as shared libraries.
//!
//! Rust has no stable ABI, so a module in a `.so` cannot receive the
//! engine's `riis_pipeline::HttpContext`. This crate gives such a module the
//! same programming model over the C ABI: an [`HttpModule`] trait with the
//! engine's method names and defaults, a factory, a [`GlobalModule`], a
//! [`ModuleRegistration`], and safe proxies ([`HttpContext`],
//! [`HttpRequest`], [`HttpResponse`], the providers) over the server's
//! handles. Module code is safe Rust; the `unsafe` stays in this crate.
//!
//! # A module
//!
//! ```no_run
//! use riis_sdk::{
//!     HttpContext, HttpModule, ModuleError, ModuleRegistration, RequestNotification,
//!     RequestNotificationStatus, RequestNotifications, ServerInfo,
//! };
//!
//! #[derive(Default)]
//! struct Hello;
//!
//! impl HttpModule for Hello {
//!     fn on_begin_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
//!         if ctx.request().url() != "/hello" {
//!             return RequestNotificationStatus::Continue;
//!         }
//!         let response = ctx.response_mut();
//!         let written = response
//!             .set_status(200, "OK")
//!             .and_then(|()| response.set_header("Content-Type", "text/plain"))
//!             .and_then(|()| response.write("hello\n"));
//!         if let Err(e) = written {
//!             ctx.log(riis_sdk::LogLevel::Error, &e.to_string());
//!         }
//!         RequestNotificationStatus::FinishRequest
//!     }
//! }
//!
//! fn register(
//!     _server_version: u32,
//!     registration: &mut ModuleRegistration,
//!     _server: &ServerInfo,
//! ) -> Result<(), ModuleError> {
//!     registration.set_request_notifications(
//!         Hello::default,
//!         RequestNotification::BeginRequest.into(),
//!         RequestNotifications::NONE,
//!     )
//! }
//!
//! // In a `cdylib`: exports `RegisterModule` and `riis_module_abi`.
//! riis_sdk::export_module!(register);
//! ```
//!
//! Build it as a `cdylib` and list the library in riis.toml
//! (`[[global_modules]]`); the server loads it like a C module.
//!
//! # One source, two ways
//!
//! The same module source can also be compiled into a server binary and
//! registered through the very same C ABI, in-process, without a shared
//! library: [`module_entry!`] makes an `extern "C"` function with the
//! `RegisterModule` signature (`riis_register_module_fn`) under a name of
//! your choice, without `#[no_mangle]`, and `riis_native::register_entry_point`
//! runs it against the pipeline like the loader runs a library's:
//!
//! ```ignore
//! // In the program that embeds riis, with the module's source as a module
//! // (`mod hello;`) or a dependency:
//! riis_sdk::module_entry!(hello_entry, hello::register);
//!
//! fn register_hello(
//!     _version: u32,
//!     registration: &mut riis_pipeline::ModuleRegistration<'_>,
//!     server: &riis_pipeline::ServerInfo,
//! ) -> Result<(), riis_pipeline::ModuleError> {
//!     riis_native::register_entry_point(hello_entry, registration, server)
//! }
//!
//! // Enabled by name in riis.toml like a built-in module:
//! let server = riis_server::Server::with_modules(config, &[("Hello", register_hello)])?;
//! ```
//!
//! The module code is the same in both builds, and goes through the same
//! ABI, checks and containment. Keep [`export_module!`] out of the
//! in-process build (behind a cargo feature, or in a small `cdylib` crate of
//! its own that depends on the module's crate): its `#[no_mangle]` symbols
//! would otherwise be linked into the server, and two such modules would
//! collide.
//!
//! # Threads, lifetimes, panics
//!
//! - The server calls one instance for one notification at a time. The
//!   [`HttpContext`] a method receives exists for that call; strings it
//!   returns are borrowed from the server (valid until the request ends).
//!   Server text that is not UTF-8 reads as absent, never as undefined
//!   behaviour.
//! - Asynchronous work: start an operation ([`HttpContext::read_entity_body`],
//!   an asynchronous [`HttpResponse::flush`], [`HttpContext::execute_request`],
//!   [`HttpContext::post_completion`]) or take a [`CompletionHandle`] and
//!   return [`RequestNotificationStatus::Pending`]; the completion arrives in
//!   [`HttpModule::on_async_completion`]. A `CompletionHandle` is the only
//!   thing that may be used from another thread. As in the in-process API,
//!   `Pending` with no operation and no handle fails the request with 500,
//!   and so does dropping every handle without a signal (from SendResponse,
//!   ReadEntity, MapPath and custom notifications, which come inside
//!   another call, `Pending` counts as `Continue`, as the server takes it).
//! - A panic in a module method is caught: the request fails with 500 and an
//!   error description naming the module and notification (once the
//!   response's head went out, the connection is reset instead, so the
//!   client cannot take the part sent for a whole answer), and the instance
//!   is not called again. A panic in a factory fails the request (the
//!   factory returns a failure HRESULT); a panic in a global module is
//!   logged and counts as `Continue` (in PreBeginRequest too: the request
//!   goes on, where an in-process module's panic there fails it). Nothing
//!   unwinds into the server.
//! - Module contexts: [`HttpContext::set_module_context`] /
//!   [`HttpContext::module_context`] store shared (`Arc`) values at request,
//!   connection or site scope; [`HttpContext::set_request_context`] /
//!   [`HttpContext::request_context_mut`] a plain mutable per-request value.
//!   The SDK owns the module's context slot: do not also set it through the
//!   raw ABI.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod completion;
mod context;
mod error;
mod ffi;
mod instance;
mod module;
mod provider;
mod registration;

#[cfg(test)]
mod tests;

// The unit tests compile the example module as a module of this crate.
#[cfg(test)]
extern crate self as riis_sdk;

/// The raw C ABI (`riis-abi`), for the macros and for modules that need a
/// declaration the SDK does not wrap.
pub use riis_abi as abi;

pub use completion::CompletionHandle;
pub use context::{
    ChildContext, ContextScope, ExecuteFlags, ExecutionStats, FlushOptions, HttpContext,
    HttpRequest, HttpResponse, HttpUser, LogLevel, ResponseDelivery, Section,
};
pub use error::ModuleError;
pub use module::{
    Application, ApplicationInfo, CacheOperation, CompletedOperation, CompletionInfo, GlobalModule,
    HttpModule, HttpModuleFactory, TraceEvent, TracePhase,
};
pub use provider::{
    CustomNotification, MapPathProvider, ReadEntityProvider, RscaQuery, SendFlags,
    SendResponseProvider,
};
pub use registration::{register_module, Logger, ModuleRegistration, RegisterModuleFn, ServerInfo};
pub use riis_notification::{
    GlobalNotification, GlobalNotificationStatus, GlobalNotifications, Priority,
    RequestNotification, RequestNotificationStatus, RequestNotifications,
};

/// Exports a module library's entry points for `register` (a
/// [`RegisterModuleFn`]): `RegisterModule` and `riis_module_abi`, the two
/// symbols the server's loader looks for. Use it once, in a `cdylib`.
///
/// ```ignore
/// riis_sdk::export_module!(register);
/// ```
#[macro_export]
macro_rules! export_module {
    ($register:path) => {
        /// The ABI version this module library was built for.
        #[unsafe(no_mangle)]
        #[allow(non_upper_case_globals)]
        pub static riis_module_abi: u32 = $crate::abi::ABI_VERSION;

        /// The module's entry point, called once by the server at start-up.
        ///
        /// # Safety
        ///
        /// Called by the server with the arguments of
        /// `riis_register_module_fn`.
        #[unsafe(no_mangle)]
        #[allow(non_snake_case)]
        pub unsafe extern "C" fn RegisterModule(
            server_version: u32,
            registration: *mut $crate::abi::riis_registration,
            server: *const $crate::abi::riis_server,
        ) -> $crate::abi::riis_hresult {
            const _: $crate::RegisterModuleFn = $register;
            // SAFETY: the server calls this entry point with the arguments
            // `register_module` expects.
            unsafe { $crate::register_module(server_version, registration, server, $register) }
        }
    };
}

/// Defines `unsafe extern "C" fn $name` with the `RegisterModule` signature
/// (`riis_register_module_fn`) for `register`, without exporting it: the
/// entry point of the same module compiled into a server binary, registered
/// in-process through the C ABI (see the crate docs, "One source, two
/// ways").
///
/// ```ignore
/// riis_sdk::module_entry!(pub hello_entry, hello::register);
/// ```
#[macro_export]
macro_rules! module_entry {
    ($(#[$attr:meta])* $vis:vis $name:ident, $register:path) => {
        $(#[$attr])*
        /// A module entry point with the `RegisterModule` signature.
        ///
        /// # Safety
        ///
        /// Called by the server with the arguments of
        /// `riis_register_module_fn`.
        $vis unsafe extern "C" fn $name(
            server_version: u32,
            registration: *mut $crate::abi::riis_registration,
            server: *const $crate::abi::riis_server,
        ) -> $crate::abi::riis_hresult {
            const _: $crate::RegisterModuleFn = $register;
            // SAFETY: the server calls this entry point with the arguments
            // `register_module` expects.
            unsafe { $crate::register_module(server_version, registration, server, $register) }
        }
    };
}
