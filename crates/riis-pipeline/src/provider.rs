//! Event providers: what the nondeterministic notifications hand a module
//! besides the context (IIS's `ISendResponseProvider`, `IReadEntityProvider`,
//! `IMapPathProvider`, `ICustomNotificationProvider`, `IHttpCompletionInfo`).

use std::any::Any;
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// What an asynchronous operation reports when it completes
/// (`IHttpCompletionInfo`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompletionInfo {
    /// `GetCompletionBytes`: bytes transferred (written, read, or for a child
    /// request the bytes of entity it produced).
    pub bytes: u64,
    /// `GetCompletionStatus`: an HRESULT, 0 (`S_OK`) on success.
    pub status: u32,
}

/// Flags of one send (`HTTP_SEND_RESPONSE_FLAG_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendFlags {
    /// More response data follows this send.
    pub more_data: bool,
    /// The connection closes after this send.
    pub disconnect: bool,
}

/// The provider of a SendResponse notification.
///
/// The data about to be sent is the response's buffered entity
/// ([`crate::HttpResponse::entity_chunks`]); a module may change it, and the
/// headers while [`SendResponseProvider::headers_being_sent`] is true.
#[derive(Debug)]
pub struct SendResponseProvider {
    pub(crate) headers_being_sent: bool,
    pub(crate) final_send: bool,
    pub(crate) flags: SendFlags,
}

impl SendResponseProvider {
    /// `GetHeadersBeingSent`: the status line and headers go out with this
    /// send (true for the first send only, unless headers are suppressed).
    pub fn headers_being_sent(&self) -> bool {
        self.headers_being_sent
    }

    /// Whether this is the final send of the request.
    pub fn is_final_send(&self) -> bool {
        self.final_send
    }

    /// `GetFlags`.
    pub fn flags(&self) -> SendFlags {
        self.flags
    }

    /// `SetFlags`: for example ask for the connection to close after this send.
    pub fn set_flags(&mut self, flags: SendFlags) {
        self.flags = flags;
    }
}

/// The provider of a ReadEntity notification: the bytes just read from the
/// request body, replaceable.
#[derive(Debug)]
pub struct ReadEntityProvider {
    pub(crate) entity: Bytes,
}

impl ReadEntityProvider {
    /// `GetEntity`: the bytes read.
    pub fn entity(&self) -> &Bytes {
        &self.entity
    }

    /// `SetEntity`: replace the bytes the reader will receive.
    pub fn set_entity(&mut self, entity: impl Into<Bytes>) {
        self.entity = entity.into();
    }
}

/// The provider of a MapPath notification: a URL and the physical path the
/// server mapped it to, replaceable.
#[derive(Debug)]
pub struct MapPathProvider {
    pub(crate) url: String,
    pub(crate) physical_path: PathBuf,
}

impl MapPathProvider {
    /// `GetUrl`: the URL being mapped.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GetPhysicalPath`.
    pub fn physical_path(&self) -> &Path {
        &self.physical_path
    }

    /// `SetPhysicalPath`.
    pub fn set_physical_path(&mut self, path: impl Into<PathBuf>) {
        self.physical_path = path.into();
    }
}

/// A custom notification a module raises (`ICustomNotificationProvider`).
///
/// Every module registered for custom notifications receives every custom
/// notification and checks [`CustomNotificationProvider::notification_type`];
/// the payload is reached by downcasting [`CustomNotificationProvider::as_any_mut`].
pub trait CustomNotificationProvider: Send {
    /// `QueryNotificationType`: the type name that identifies the notification.
    fn notification_type(&self) -> &str;
    /// The provider itself, for downcasting to the concrete payload type.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}
