//! Module context containers (IIS's `IHttpModuleContextContainer`): state a
//! module keeps per request, per connection or per site, keyed by module.
//!
//! A container owns what is stored. The value is dropped exactly once: when it
//! is replaced, when it is removed, or when the container itself goes (request
//! end, connection close, configuration unload). Drop is the cleanup hook
//! (IIS's `CleanupStoredContext`).

use std::any::Any;
use std::sync::{Arc, Mutex};

use crate::registration::ModuleIndex;

/// Request-level container: touched only by the request's own pipeline, so no
/// locking; allocates only when a module stores something.
#[derive(Default)]
pub struct ModuleContextContainer {
    slots: Vec<Option<Box<dyn Any + Send>>>,
}

impl std::fmt::Debug for ModuleContextContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleContextContainer")
            .field("stored", &self.slots.iter().filter(|s| s.is_some()).count())
            .finish()
    }
}

impl ModuleContextContainer {
    /// `GetModuleContext`: the module's value, if it stored one of type `T`.
    pub fn get<T: Any + Send>(&self, module: ModuleIndex) -> Option<&T> {
        self.slots.get(module.get())?.as_ref()?.downcast_ref()
    }

    /// The module's value, mutable.
    pub fn get_mut<T: Any + Send>(&mut self, module: ModuleIndex) -> Option<&mut T> {
        self.slots.get_mut(module.get())?.as_mut()?.downcast_mut()
    }

    /// `SetModuleContext`: store a value; a previous value is dropped.
    pub fn set<T: Any + Send>(&mut self, module: ModuleIndex, value: T) {
        let i = module.get();
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots[i] = Some(Box::new(value));
    }

    /// Takes every stored value out, with its module's index (the request
    /// ended; the caller drops them one by one).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (usize, Box<dyn Any + Send>)> {
        std::mem::take(&mut self.slots)
            .into_iter()
            .enumerate()
            .filter_map(|(i, value)| Some((i, value?)))
    }

    /// Remove and return the module's value.
    pub fn take<T: Any + Send>(&mut self, module: ModuleIndex) -> Option<T> {
        let slot = self.slots.get_mut(module.get())?;
        if slot.as_ref()?.is::<T>() {
            slot.take()?.downcast().ok().map(|b| *b)
        } else {
            None
        }
    }
}

/// Connection- and site-level container: shared by concurrent requests (HTTP/2
/// streams, a site's requests), so values are `Arc`s behind a mutex taken only
/// when a module reads or stores.
#[derive(Default)]
pub struct SharedContextContainer {
    /// Boxed and made at the first store: every connection has a container
    /// and few hold anything, so an idle connection carries one word here
    /// instead of a `Vec`'s three.
    #[allow(clippy::box_collection)]
    slots: Mutex<Option<Box<Slots>>>,
}

type Slots = Vec<Option<Arc<dyn Any + Send + Sync>>>;

impl std::fmt::Debug for SharedContextContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedContextContainer")
    }
}

impl SharedContextContainer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Box<Slots>>> {
        // A module that panicked while holding the lock cannot have left the
        // vector half-changed (every operation is a single assignment).
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slots, made on the first store, with room for `module`'s.
    fn slots_for(guard: &mut Option<Box<Slots>>, module: ModuleIndex) -> &mut Slots {
        let slots = guard.get_or_insert_with(Box::default);
        if slots.len() <= module.get() {
            slots.resize_with(module.get() + 1, || None);
        }
        slots
    }

    /// Lets go of every value (its cleanup runs once nothing else holds
    /// it), outside the lock: a cleanup may use the container.
    pub(crate) fn clear(&self) {
        let values = self.lock().take();
        drop_values(values);
    }

    /// The module's value, if it stored one of type `T`.
    pub fn get<T: Any + Send + Sync>(&self, module: ModuleIndex) -> Option<Arc<T>> {
        let value = self.lock().as_ref()?.get(module.get())?.clone()?;
        value.downcast().ok()
    }

    /// Store a value; a previous value is released.
    pub fn set<T: Any + Send + Sync>(&self, module: ModuleIndex, value: Arc<T>) {
        let previous = {
            let mut guard = self.lock();
            Self::slots_for(&mut guard, module)[module.get()].replace(value)
        };
        // Dropped outside the lock, so a value's Drop may use the container.
        drop_value(previous);
    }

    /// Stores `value` only if the module has none stored (of any type);
    /// otherwise hands it back and leaves the stored one in place. A value
    /// that is never replaced stays valid for whoever read it, however many
    /// requests share the container.
    pub fn insert_if_absent<T: Any + Send + Sync>(
        &self,
        module: ModuleIndex,
        value: Arc<T>,
    ) -> Result<(), Arc<T>> {
        let mut guard = self.lock();
        let slot = &mut Self::slots_for(&mut guard, module)[module.get()];
        if slot.is_some() {
            return Err(value);
        }
        *slot = Some(value);
        Ok(())
    }

    /// Store `make()` unless a value of type `T` is already there; returns the
    /// stored value either way, atomically.
    pub fn get_or_insert_with<T: Any + Send + Sync>(
        &self,
        module: ModuleIndex,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        let mut guard = self.lock();
        let slot = &mut Self::slots_for(&mut guard, module)[module.get()];
        if let Some(v) = slot {
            if let Ok(v) = v.clone().downcast::<T>() {
                return v;
            }
        }
        let v = Arc::new(make());
        let previous = slot.replace(v.clone());
        drop(guard);
        drop_value(previous);
        v
    }

    /// Remove the module's value.
    pub fn remove(&self, module: ModuleIndex) {
        let previous = self
            .lock()
            .as_mut()
            .and_then(|slots| slots.get_mut(module.get()))
            .and_then(Option::take);
        drop_value(previous);
    }
}

impl Drop for SharedContextContainer {
    /// The connection or the site's configuration ends: its values go, each
    /// on its own, a panic in one's `Drop` caught (it would end the task
    /// that closes connections, or, while another panic unwinds, the
    /// process).
    fn drop(&mut self) {
        let values = self
            .slots
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop_values(values);
    }
}

/// Drops a module's shared value (its last holder runs its `Drop`),
/// catching a panic there.
fn drop_value(value: Option<Arc<dyn Any + Send + Sync>>) {
    if let Some(value) = value {
        crate::context::drop_guarded(value, || {
            "a module's connection or site context value".to_owned()
        });
    }
}

/// [`drop_value`] for every value of a container.
fn drop_values(values: Option<Box<Slots>>) {
    for value in values.into_iter().flat_map(|slots| slots.into_iter()) {
        drop_value(value);
    }
}

/// What the engine knows about a client connection.
#[derive(Debug)]
pub struct ConnectionInfo {
    /// Unique for the life of the server.
    pub id: u64,
    /// Server-side address.
    pub local_addr: std::net::SocketAddr,
    /// Client address.
    pub remote_addr: std::net::SocketAddr,
    /// Whether the connection is TLS.
    pub is_tls: bool,
    /// The client's TLS ended at a load balancer in front, which said so
    /// in its PROXY protocol header: the connection is plain, and its
    /// requests count as HTTPS (`HTTPS`, `X-Forwarded-Proto`).
    pub tls_ended_at_balancer: bool,
    /// The certificate the client presented in the TLS handshake, verified.
    pub client_certificate: Option<std::sync::Arc<crate::ClientCertificate>>,
    /// The CA file the handshake verified client certificates against;
    /// `None` when it asked for none (the site sets no
    /// `client_certificate_ca`).
    pub client_certificate_ca: Option<std::sync::Arc<std::path::Path>>,
    /// The revocation list file the handshake checked client certificates
    /// against (`client_certificate_crl`), if any.
    pub client_certificate_crl: Option<std::sync::Arc<std::path::Path>>,
    /// Connection-level module contexts.
    pub contexts: SharedContextContainer,
    /// Whether the connection is still open.
    liveness: ConnectionLiveness,
}

/// Whether a client connection is still open, shared with whatever asks
/// from another thread (a module's own thread, through its completion
/// handle) without keeping the rest of the connection's state alive.
#[derive(Clone, Debug, Default)]
pub struct ConnectionLiveness(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl ConnectionLiveness {
    /// True until the server marks the connection closed.
    pub fn is_connected(&self) -> bool {
        !self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn mark_closed(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ConnectionInfo {
    /// A connection's description.
    pub fn new(
        id: u64,
        local_addr: std::net::SocketAddr,
        remote_addr: std::net::SocketAddr,
    ) -> Self {
        Self {
            id,
            local_addr,
            remote_addr,
            is_tls: false,
            tls_ended_at_balancer: false,
            client_certificate: None,
            client_certificate_ca: None,
            client_certificate_crl: None,
            contexts: SharedContextContainer::default(),
            liveness: ConnectionLiveness::default(),
        }
    }

    /// Whether the connection is still open: true until the server marks
    /// it closed ([`ConnectionInfo::mark_closed`]). Any thread may ask.
    pub fn is_connected(&self) -> bool {
        self.liveness.is_connected()
    }

    /// For servers: the connection closed (or is closing). Requests still
    /// running on it learn so through [`ConnectionInfo::is_connected`].
    pub fn mark_closed(&self) {
        self.liveness.mark_closed();
    }

    /// The connection's open state, to be asked from another thread.
    pub fn liveness(&self) -> &ConnectionLiveness {
        &self.liveness
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value whose `Drop` panics, as a module's bug would.
    struct PanicsWhenDropped;

    impl Drop for PanicsWhenDropped {
        fn drop(&mut self) {
            panic!("a bad Drop");
        }
    }

    /// Values replaced, removed, cleared or left in the container when it
    /// goes are dropped with their panics caught: two of them at once used
    /// to abort the process (a panic while another unwinds).
    #[test]
    fn a_shared_values_panicking_drop_is_caught() {
        let container = SharedContextContainer::default();
        let (a, b, c) = (ModuleIndex(0), ModuleIndex(1), ModuleIndex(2));
        container.set(a, Arc::new(PanicsWhenDropped));
        container.set(a, Arc::new(PanicsWhenDropped));
        container.set(b, Arc::new(PanicsWhenDropped));
        container.remove(b);
        container.set(b, Arc::new(PanicsWhenDropped));
        container.clear();
        container.set(a, Arc::new(PanicsWhenDropped));
        container.set(c, Arc::new(PanicsWhenDropped));
        drop(container);
    }
}
