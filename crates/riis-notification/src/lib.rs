//! The IIS notification model: request and global notifications, the
//! statuses a module answers with, and priorities, with the bit values of
//! IIS's `httpserv.h` (the C ABI's `RIIS_RQ_*`, `RIIS_GL_*`, `RIIS_STATUS_*`
//! and `RIIS_PRIORITY_*` carry the same numbers).
//!
//! One definition serves the engine (`riis-pipeline`), the native module
//! loader and the Rust SDK (`riis-sdk`), so a module built against the SDK and
//! the server that loads it cannot disagree about a bit.

#![warn(missing_docs)]

use std::fmt;

/// A request-level notification.
///
/// The first twelve are the deterministic events, raised in this order for every
/// request, each followed by its post-event. The last four are nondeterministic:
/// they fire when something happens (a send, a body read, a path mapping, a
/// module raising a custom notification) and have no post-event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum RequestNotification {
    /// `RQ_BEGIN_REQUEST`: the first event of every request.
    BeginRequest = 0x0000_0001,
    /// `RQ_AUTHENTICATE_REQUEST`: establish the user.
    AuthenticateRequest = 0x0000_0002,
    /// `RQ_AUTHORIZE_REQUEST`: decide whether the user may proceed.
    AuthorizeRequest = 0x0000_0004,
    /// `RQ_RESOLVE_REQUEST_CACHE`: serve from a cache.
    ResolveRequestCache = 0x0000_0008,
    /// `RQ_MAP_REQUEST_HANDLER`: choose the handler.
    MapRequestHandler = 0x0000_0010,
    /// `RQ_ACQUIRE_REQUEST_STATE`: load session-like state.
    AcquireRequestState = 0x0000_0020,
    /// `RQ_PRE_EXECUTE_REQUEST_HANDLER`: last moment before the handler.
    PreExecuteRequestHandler = 0x0000_0040,
    /// `RQ_EXECUTE_REQUEST_HANDLER`: only the chosen handler's modules run.
    ExecuteRequestHandler = 0x0000_0080,
    /// `RQ_RELEASE_REQUEST_STATE`: store state.
    ReleaseRequestState = 0x0000_0100,
    /// `RQ_UPDATE_REQUEST_CACHE`: store the response in a cache.
    UpdateRequestCache = 0x0000_0200,
    /// `RQ_LOG_REQUEST`: write the log entry.
    LogRequest = 0x0000_0400,
    /// `RQ_END_REQUEST`: the last event of every request.
    EndRequest = 0x0000_0800,
    /// `RQ_CUSTOM_NOTIFICATION`: raised by a module, matched by type name.
    CustomNotification = 0x1000_0000,
    /// `RQ_SEND_RESPONSE`: response data is about to go to the client.
    SendResponse = 0x2000_0000,
    /// `RQ_READ_ENTITY`: request body bytes were read.
    ReadEntity = 0x4000_0000,
    /// `RQ_MAP_PATH`: a URL was mapped to a physical path.
    MapPath = 0x8000_0000,
}

impl RequestNotification {
    /// The deterministic events in pipeline order.
    pub const DETERMINISTIC: [RequestNotification; 12] = [
        Self::BeginRequest,
        Self::AuthenticateRequest,
        Self::AuthorizeRequest,
        Self::ResolveRequestCache,
        Self::MapRequestHandler,
        Self::AcquireRequestState,
        Self::PreExecuteRequestHandler,
        Self::ExecuteRequestHandler,
        Self::ReleaseRequestState,
        Self::UpdateRequestCache,
        Self::LogRequest,
        Self::EndRequest,
    ];

    /// The nondeterministic notifications a module can register for.
    pub const NONDETERMINISTIC: [RequestNotification; 4] = [
        Self::CustomNotification,
        Self::SendResponse,
        Self::ReadEntity,
        Self::MapPath,
    ];

    /// The IIS bit value (`RQ_*`).
    pub const fn bit(self) -> u32 {
        self as u32
    }

    /// The notification with exactly this bit, if any.
    pub fn from_bit(bit: u32) -> Option<Self> {
        Self::DETERMINISTIC
            .iter()
            .chain(Self::NONDETERMINISTIC.iter())
            .copied()
            .find(|n| n.bit() == bit)
    }

    /// Position in the deterministic order (0 for BeginRequest), or `None` for
    /// the nondeterministic notifications.
    pub const fn stage(self) -> Option<usize> {
        let bit = self as u32;
        if bit <= 0x800 {
            Some(bit.trailing_zeros() as usize)
        } else {
            None
        }
    }

    /// Whether this notification has a post-event.
    pub const fn has_post_event(self) -> bool {
        self.stage().is_some()
    }

    /// The IIS name, as used in traces and error pages.
    pub const fn name(self) -> &'static str {
        match self {
            Self::BeginRequest => "BeginRequest",
            Self::AuthenticateRequest => "AuthenticateRequest",
            Self::AuthorizeRequest => "AuthorizeRequest",
            Self::ResolveRequestCache => "ResolveRequestCache",
            Self::MapRequestHandler => "MapRequestHandler",
            Self::AcquireRequestState => "AcquireRequestState",
            Self::PreExecuteRequestHandler => "PreExecuteRequestHandler",
            Self::ExecuteRequestHandler => "ExecuteRequestHandler",
            Self::ReleaseRequestState => "ReleaseRequestState",
            Self::UpdateRequestCache => "UpdateRequestCache",
            Self::LogRequest => "LogRequest",
            Self::EndRequest => "EndRequest",
            Self::CustomNotification => "CustomNotification",
            Self::SendResponse => "SendResponse",
            Self::ReadEntity => "ReadEntity",
            Self::MapPath => "MapPath",
        }
    }
}

impl fmt::Display for RequestNotification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of request notifications, as the `RQ_*` bit mask IIS uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RequestNotifications(u32);

impl RequestNotifications {
    /// No notification.
    pub const NONE: Self = Self(0);
    /// Every deterministic event (BeginRequest … EndRequest).
    pub const ALL_DETERMINISTIC: Self = Self(0xFFF);
    /// Every notification a module can register for.
    pub const ALL: Self = Self(0xF000_0FFF);

    /// A set from a raw `RQ_*` mask. Bits that name no notification are kept
    /// out, so the mask a native module passes cannot switch on anything else.
    pub const fn from_bits_truncate(bits: u32) -> Self {
        Self(bits & Self::ALL.0)
    }

    /// The raw mask.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether `n` is in the set.
    pub const fn contains(self, n: RequestNotification) -> bool {
        self.0 & n.bit() != 0
    }

    /// The set with `n` added.
    pub const fn with(self, n: RequestNotification) -> Self {
        Self(self.0 | n.bit())
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl From<RequestNotification> for RequestNotifications {
    fn from(n: RequestNotification) -> Self {
        Self(n.bit())
    }
}

impl std::ops::BitOr for RequestNotifications {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitOr for RequestNotification {
    type Output = RequestNotifications;
    fn bitor(self, rhs: Self) -> RequestNotifications {
        RequestNotifications(self.bit() | rhs.bit())
    }
}

impl std::ops::BitOr<RequestNotification> for RequestNotifications {
    type Output = Self;
    fn bitor(self, rhs: RequestNotification) -> Self {
        Self(self.0 | rhs.bit())
    }
}

/// A server-level notification, for global modules (`GL_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GlobalNotification {
    /// `GL_STOP_LISTENING`: the server stopped accepting connections.
    StopListening = 0x0000_0002,
    /// `GL_CACHE_CLEANUP`: a cache should drop expired entries.
    CacheCleanup = 0x0000_0004,
    /// `GL_CACHE_OPERATION`: an entry was added to, read from or removed from a cache.
    CacheOperation = 0x0000_0010,
    /// `GL_HEALTH_CHECK`: the periodic health check.
    HealthCheck = 0x0000_0020,
    /// `GL_CONFIGURATION_CHANGE`: the configuration was reloaded.
    ConfigurationChange = 0x0000_0040,
    /// `GL_FILE_CHANGE`: a watched file changed.
    FileChange = 0x0000_0080,
    /// `GL_PRE_BEGIN_REQUEST`: before any request-level notification.
    PreBeginRequest = 0x0000_0100,
    /// `GL_APPLICATION_START`: a site's application started.
    ApplicationStart = 0x0000_0200,
    /// `GL_APPLICATION_RESOLVE_MODULES`: an application resolves its module list.
    ApplicationResolveModules = 0x0000_0400,
    /// `GL_APPLICATION_STOP`: a site's application stopped.
    ApplicationStop = 0x0000_0800,
    /// `GL_RSCA_QUERY`: a runtime status query.
    RscaQuery = 0x0000_1000,
    /// `GL_TRACE_EVENT`: a trace event was raised.
    TraceEvent = 0x0000_2000,
    /// `GL_CUSTOM_NOTIFICATION`: a module raised a global custom notification.
    CustomNotification = 0x0000_4000,
    /// `GL_THREAD_CLEANUP`: a worker thread is about to go back to its pool.
    ThreadCleanup = 0x0000_8000,
    /// `GL_APPLICATION_PRELOAD`: an application is being preloaded.
    ApplicationPreload = 0x0001_0000,
}

impl GlobalNotification {
    /// Every global notification, in bit order.
    pub const ALL: [GlobalNotification; 15] = [
        Self::StopListening,
        Self::CacheCleanup,
        Self::CacheOperation,
        Self::HealthCheck,
        Self::ConfigurationChange,
        Self::FileChange,
        Self::PreBeginRequest,
        Self::ApplicationStart,
        Self::ApplicationResolveModules,
        Self::ApplicationStop,
        Self::RscaQuery,
        Self::TraceEvent,
        Self::CustomNotification,
        Self::ThreadCleanup,
        Self::ApplicationPreload,
    ];

    /// The IIS bit value (`GL_*`).
    pub const fn bit(self) -> u32 {
        self as u32
    }

    /// Index in [`GlobalNotification::ALL`], for dispatch tables.
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|n| *n == self).unwrap_or(0)
    }

    /// The notification with exactly this bit, if any.
    pub fn from_bit(bit: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|n| n.bit() == bit)
    }

    /// The IIS name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::StopListening => "StopListening",
            Self::CacheCleanup => "CacheCleanup",
            Self::CacheOperation => "CacheOperation",
            Self::HealthCheck => "HealthCheck",
            Self::ConfigurationChange => "ConfigurationChange",
            Self::FileChange => "FileChange",
            Self::PreBeginRequest => "PreBeginRequest",
            Self::ApplicationStart => "ApplicationStart",
            Self::ApplicationResolveModules => "ApplicationResolveModules",
            Self::ApplicationStop => "ApplicationStop",
            Self::RscaQuery => "RscaQuery",
            Self::TraceEvent => "TraceEvent",
            Self::CustomNotification => "CustomNotification",
            Self::ThreadCleanup => "ThreadCleanup",
            Self::ApplicationPreload => "ApplicationPreload",
        }
    }
}

impl fmt::Display for GlobalNotification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of global notifications, as the `GL_*` bit mask IIS uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GlobalNotifications(u32);

impl GlobalNotifications {
    /// No notification.
    pub const NONE: Self = Self(0);

    /// A set from a raw `GL_*` mask; unknown bits are dropped.
    pub fn from_bits_truncate(bits: u32) -> Self {
        let known = GlobalNotification::ALL.iter().fold(0, |m, n| m | n.bit());
        Self(bits & known)
    }

    /// The raw mask.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether `n` is in the set.
    pub const fn contains(self, n: GlobalNotification) -> bool {
        self.0 & n.bit() != 0
    }

    /// The set with `n` added.
    pub const fn with(self, n: GlobalNotification) -> Self {
        Self(self.0 | n.bit())
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl From<GlobalNotification> for GlobalNotifications {
    fn from(n: GlobalNotification) -> Self {
        Self(n.bit())
    }
}

impl std::ops::BitOr for GlobalNotifications {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitOr for GlobalNotification {
    type Output = GlobalNotifications;
    fn bitor(self, rhs: Self) -> GlobalNotifications {
        GlobalNotifications(self.bit() | rhs.bit())
    }
}

impl std::ops::BitOr<GlobalNotification> for GlobalNotifications {
    type Output = Self;
    fn bitor(self, rhs: GlobalNotification) -> Self {
        Self(self.0 | rhs.bit())
    }
}

/// What a request-level notification handler tells the pipeline
/// (`REQUEST_NOTIFICATION_STATUS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum RequestNotificationStatus {
    /// `RQ_NOTIFICATION_CONTINUE`: go on with the next module or event.
    Continue = 0,
    /// `RQ_NOTIFICATION_PENDING`: an asynchronous operation was started; the
    /// request is parked until it completes.
    Pending = 1,
    /// `RQ_NOTIFICATION_FINISH_REQUEST`: skip to LogRequest and EndRequest.
    FinishRequest = 2,
}

impl RequestNotificationStatus {
    /// The status for a raw value (`RIIS_STATUS_*`), as a native module
    /// returns it, if it is one of the three.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(Self::Continue),
            1 => Some(Self::Pending),
            2 => Some(Self::FinishRequest),
            _ => None,
        }
    }

    /// The raw value (`RIIS_STATUS_*`).
    pub const fn raw(self) -> u32 {
        self as u32
    }
}

/// What a global notification handler tells the server
/// (`GLOBAL_NOTIFICATION_STATUS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GlobalNotificationStatus {
    /// `GL_NOTIFICATION_CONTINUE`: later global modules see the notification too.
    Continue = 0,
    /// `GL_NOTIFICATION_HANDLED`: later global modules do not see it.
    Handled = 1,
}

impl GlobalNotificationStatus {
    /// The status for a raw value (`RIIS_GLOBAL_*`), if it is one of the two.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(Self::Continue),
            1 => Some(Self::Handled),
            _ => None,
        }
    }

    /// The raw value (`RIIS_GLOBAL_*`).
    pub const fn raw(self) -> u32 {
        self as u32
    }
}

/// The order in which modules registered for the same notification run.
///
/// Higher priorities run first; modules of equal priority run in the order of
/// the module list in configuration. SendResponse runs in the inverse order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// `PRIORITY_ALIAS_LAST`.
    Last = 0,
    /// `PRIORITY_ALIAS_LOW`.
    Low = 1,
    /// `PRIORITY_ALIAS_MEDIUM`: the default.
    #[default]
    Medium = 2,
    /// `PRIORITY_ALIAS_HIGH`.
    High = 3,
    /// `PRIORITY_ALIAS_FIRST`.
    First = 4,
}

impl Priority {
    /// The IIS alias (`"FIRST"`, `"HIGH"`, `"MEDIUM"`, `"LOW"`, `"LAST"`),
    /// which the C ABI takes too.
    pub const fn alias(self) -> &'static str {
        match self {
            Self::First => "FIRST",
            Self::High => "HIGH",
            Self::Medium => "MEDIUM",
            Self::Low => "LOW",
            Self::Last => "LAST",
        }
    }

    /// Parses an alias, case-insensitively.
    pub fn from_alias(alias: &str) -> Option<Self> {
        [Self::First, Self::High, Self::Medium, Self::Low, Self::Last]
            .into_iter()
            .find(|p| p.alias().eq_ignore_ascii_case(alias))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_follow_bit_order() {
        for (i, n) in RequestNotification::DETERMINISTIC.iter().enumerate() {
            assert_eq!(n.stage(), Some(i));
            assert!(n.has_post_event());
        }
        for n in RequestNotification::NONDETERMINISTIC {
            assert_eq!(n.stage(), None);
        }
    }

    #[test]
    fn bits_round_trip_and_unknown_bits_are_dropped() {
        assert_eq!(
            RequestNotification::from_bit(0x80),
            Some(RequestNotification::ExecuteRequestHandler)
        );
        assert_eq!(RequestNotification::from_bit(0x1000), None);
        assert_eq!(
            RequestNotifications::from_bits_truncate(0x0000_1001).bits(),
            0x1
        );
        assert_eq!(Priority::from_alias("high"), Some(Priority::High));
        assert_eq!(
            Priority::from_alias("Last").map(Priority::alias),
            Some("LAST")
        );
        assert!(Priority::First > Priority::Last);
        assert_eq!(
            GlobalNotification::from_bit(0x100),
            Some(GlobalNotification::PreBeginRequest)
        );
        assert_eq!(GlobalNotification::from_bit(0x8), None);
        for (i, n) in GlobalNotification::ALL.iter().enumerate() {
            assert_eq!(n.index(), i);
        }
        assert_eq!(
            GlobalNotifications::from_bits_truncate(0x8 | 0x100).bits(),
            0x100
        );
    }

    #[test]
    fn statuses_round_trip_their_raw_values() {
        for s in [
            RequestNotificationStatus::Continue,
            RequestNotificationStatus::Pending,
            RequestNotificationStatus::FinishRequest,
        ] {
            assert_eq!(RequestNotificationStatus::from_raw(s.raw()), Some(s));
        }
        assert_eq!(RequestNotificationStatus::from_raw(3), None);
        for s in [
            GlobalNotificationStatus::Continue,
            GlobalNotificationStatus::Handled,
        ] {
            assert_eq!(GlobalNotificationStatus::from_raw(s.raw()), Some(s));
        }
        assert_eq!(GlobalNotificationStatus::from_raw(2), None);
    }
}
