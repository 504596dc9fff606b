//! Native modules for riis: module libraries loaded through the stable C ABI
//! of `include/riis_module.h`, as IIS loads the DLLs of `<globalModules>`.
//!
//! - [`NativeLibrary`] opens a library, checks its ABI stamp and finds its
//!   entry point (`RegisterModule`, or the C++ layer's
//!   `riis_cxx_register_module`).
//! - [`register_entry_point`] runs an entry point against a pipeline
//!   registration: the module's C factory and global module become an
//!   [`riis_pipeline::HttpModuleFactory`] and a [`riis_pipeline::GlobalModule`]
//!   like any compiled-in module's. The same function registers a C-ABI
//!   module compiled into the program.
//! - The `riis_api` function table implements every call a module makes.
//!
//! This crate is the server's FFI layer: the only one with `unsafe` code.
//! Each block says why it holds. Containment: no panic crosses the boundary
//! in either direction from this side; a module that returns an invalid
//! status fails its own request with 500. A module that crashes the process
//! (a segfault) is not contained: that needs process isolation, which riis
//! does not have yet.

mod api;
mod frame;
mod global;
mod loader;
mod module;
mod provider;
mod registration;

pub use loader::{precondition_holds, LoadError, NativeLibrary, NativeModuleSpec};
pub use provider::NativeNotification;
pub use registration::register_entry_point;
pub use riis_abi as abi;
