//! Event providers: what the nondeterministic notifications hand a module
//! besides the context (IIS's `ISendResponseProvider`, `IReadEntityProvider`,
//! `IMapPathProvider`, `ICustomNotificationProvider`, `IHttpCompletionInfo`).

use std::any::Any;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::response::{split_entity, EntityChunk, HttpResponse};

/// The smallest piece [`SendResponseProvider::defer_after`] keeps.
const MIN_PIECE: u64 = 4096;

/// What an asynchronous operation reports when it completes
/// (`IHttpCompletionInfo`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompletionInfo {
    /// `GetCompletionBytes`: bytes transferred (written, read, or for a child
    /// request the bytes of entity it produced).
    pub bytes: u64,
    /// `GetCompletionStatus`: an HRESULT, 0 (`S_OK`) on success.
    pub status: u32,
    /// `IHttpCompletionInfo2::GetCompletedOperation`: which operation
    /// completed, which a module in full duplex needs to tell its read
    /// from its flush (see [`crate::HttpContext::enable_full_duplex`]).
    pub operation: CompletedOperation,
}

impl CompletionInfo {
    /// A completion a module posted, with `bytes`.
    pub(crate) fn posted(bytes: u64) -> Self {
        Self {
            bytes,
            status: 0,
            operation: CompletedOperation::Posted,
        }
    }
}

/// The operations a completion reports (see [`CompletionInfo::operation`]).
/// The numbers are riis's own, the same in the C ABI.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CompletedOperation {
    /// A completion the module posted itself (`PostCompletion`, from a
    /// call or through its completion handle).
    #[default]
    Posted = 0,
    /// A body read (`ReadEntityBody`).
    Read = 1,
    /// An asynchronous flush (`Flush`, `WriteEntityChunks`).
    Write = 2,
    /// A child request (`ExecuteRequest`).
    ExecuteRequest = 3,
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
    /// Whether this send is the final send or one of the sends that carry
    /// what modules deferred (not a flush).
    pub(crate) may_defer: bool,
    /// What the module being called deferred with
    /// [`SendResponseProvider::defer_after`].
    pub(crate) deferred: Option<Vec<EntityChunk>>,
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

    /// Whether this send is a module's flush, after which the response
    /// goes on when that module's work does; false for the final send and
    /// for the sends that carry what a module deferred of it (see
    /// [`Self::defer_after`]), which follow at once. riis's own addition:
    /// an encoder flushes its output at a flush and need not between
    /// deferred pieces.
    pub fn is_flush(&self) -> bool {
        !self.may_defer
    }

    /// `GetFlags`.
    pub fn flags(&self) -> SendFlags {
        self.flags
    }

    /// `SetFlags`: for example ask for the connection to close after this send.
    pub fn set_flags(&mut self, flags: SendFlags) {
        self.flags = flags;
    }

    /// Keeps the first `at` bytes of the response's entity in this send and
    /// defers the rest, to be handed to this module again in a later send
    /// once the client has taken what this send carries. A module that
    /// transforms the entity (compresses it, rewrites its links) calls it
    /// before it transforms, to take a large body a piece at a time, so
    /// that its output is never held whole for a slow client.
    ///
    /// riis's own addition to `ISendResponseProvider`. The modules after
    /// this one in SendResponse's order then see this send as not final,
    /// and the rest in later sends, each of which starts at this module:
    /// the modules before it saw the whole entity already. The last of
    /// those sends is the final send. A module may defer again in the sends
    /// that carry its rest. When the client is gone, the rest is dropped.
    ///
    /// Returns whether a rest was deferred; [`Self::is_final_send`] is
    /// then false for this module too. Nothing is deferred when the entity
    /// holds at most `at` bytes, nor in a flush, whose data must all go out
    /// before the module that flushed resumes: deferring is for the final
    /// send and the sends that carry deferred rests. An `at` under 4 KiB
    /// counts as 4 KiB. Called again in the same call, the new rest comes
    /// before the first.
    pub fn defer_after(&mut self, response: &mut HttpResponse, at: u64) -> bool {
        if !self.may_defer {
            return false;
        }
        // Smaller pieces would cost more in sends than they save (and none
        // would never end).
        let mut rest = split_entity(&mut response.chunks, at.max(MIN_PIECE));
        if rest.iter().all(EntityChunk::is_empty) {
            return false;
        }
        // Deferring again in the same call: this rest comes before the
        // first one.
        if let Some(earlier) = self.deferred.take() {
            rest.extend(earlier);
        }
        self.deferred = Some(rest);
        self.final_send = false;
        self.flags.more_data = true;
        true
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
