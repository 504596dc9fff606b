//! `NoOp`: a module that registers for every request notification and
//! post-event and does nothing in any of them.
//!
//! It exists to measure what the pipeline itself costs per module and
//! notification (the benchmark lists it twenty times under different names);
//! enabling it changes no response.

use riis_pipeline::{
    HttpModule, ModuleError, ModuleRegistration, RequestNotifications, ServerInfo,
};

/// The module instance (zero-sized).
#[derive(Debug, Default)]
pub struct NoOp;

impl HttpModule for NoOp {}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    registration.set_request_notifications(
        || NoOp,
        RequestNotifications::ALL,
        RequestNotifications::ALL_DETERMINISTIC,
    )
}
