//! Notifications, statuses and priorities, with the bit values of the C ABI
//! (`RIIS_RQ_*`, `RIIS_GL_*`), which are those of IIS's `httpserv.h`.

use std::ffi::CStr;
use std::fmt;

use riis_abi as abi;

/// A request-level notification (`RIIS_RQ_*`).
///
/// The first twelve are the deterministic events, raised in this order for
/// every request, each followed by its post-event. The last four fire when
/// something happens and have no post-event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum RequestNotification {
    /// `RIIS_RQ_BEGIN_REQUEST`: the first event of every request.
    BeginRequest = 0x0000_0001,
    /// `RIIS_RQ_AUTHENTICATE_REQUEST`: establish the user.
    AuthenticateRequest = 0x0000_0002,
    /// `RIIS_RQ_AUTHORIZE_REQUEST`: decide whether the user may proceed.
    AuthorizeRequest = 0x0000_0004,
    /// `RIIS_RQ_RESOLVE_REQUEST_CACHE`: serve from a cache.
    ResolveRequestCache = 0x0000_0008,
    /// `RIIS_RQ_MAP_REQUEST_HANDLER`: choose the handler.
    MapRequestHandler = 0x0000_0010,
    /// `RIIS_RQ_ACQUIRE_REQUEST_STATE`: load session-like state.
    AcquireRequestState = 0x0000_0020,
    /// `RIIS_RQ_PRE_EXECUTE_REQUEST_HANDLER`: last moment before the handler.
    PreExecuteRequestHandler = 0x0000_0040,
    /// `RIIS_RQ_EXECUTE_REQUEST_HANDLER`: only the chosen handler's modules run.
    ExecuteRequestHandler = 0x0000_0080,
    /// `RIIS_RQ_RELEASE_REQUEST_STATE`: store state.
    ReleaseRequestState = 0x0000_0100,
    /// `RIIS_RQ_UPDATE_REQUEST_CACHE`: store the response in a cache.
    UpdateRequestCache = 0x0000_0200,
    /// `RIIS_RQ_LOG_REQUEST`: write the log entry.
    LogRequest = 0x0000_0400,
    /// `RIIS_RQ_END_REQUEST`: the last event of every request.
    EndRequest = 0x0000_0800,
    /// `RIIS_RQ_CUSTOM_NOTIFICATION`: raised by a module, matched by type name.
    CustomNotification = 0x1000_0000,
    /// `RIIS_RQ_SEND_RESPONSE`: response data is about to go to the client.
    SendResponse = 0x2000_0000,
    /// `RIIS_RQ_READ_ENTITY`: request body bytes were read.
    ReadEntity = 0x4000_0000,
    /// `RIIS_RQ_MAP_PATH`: a URL was mapped to a physical path.
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

    /// The nondeterministic notifications.
    pub const NONDETERMINISTIC: [RequestNotification; 4] = [
        Self::CustomNotification,
        Self::SendResponse,
        Self::ReadEntity,
        Self::MapPath,
    ];

    /// The bit value (`RIIS_RQ_*`).
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

    /// Whether this notification has a post-event (the deterministic ones).
    pub const fn has_post_event(self) -> bool {
        (self as u32) <= 0x800
    }

    /// The IIS name, as used in logs and error pages.
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

/// A set of request notifications, as the `RIIS_RQ_*` bit mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RequestNotifications(u32);

impl RequestNotifications {
    /// No notification.
    pub const NONE: Self = Self(0);
    /// Every deterministic event (BeginRequest … EndRequest).
    pub const ALL_DETERMINISTIC: Self = Self(0xFFF);
    /// Every notification a module can register for.
    pub const ALL: Self = Self(0xF000_0FFF);

    /// A set from a raw mask; bits that name no notification are dropped.
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

/// A server-level notification, for global modules (`RIIS_GL_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GlobalNotification {
    /// `RIIS_GL_STOP_LISTENING`: the server stopped accepting connections.
    StopListening = 0x0000_0002,
    /// `RIIS_GL_CACHE_CLEANUP`: a cache should drop entries nobody used lately.
    CacheCleanup = 0x0000_0004,
    /// `RIIS_GL_CACHE_OPERATION`: an entry was added to or removed from a cache.
    CacheOperation = 0x0000_0010,
    /// `RIIS_GL_HEALTH_CHECK`: the periodic health check.
    HealthCheck = 0x0000_0020,
    /// `RIIS_GL_CONFIGURATION_CHANGE`: the configuration was reloaded.
    ConfigurationChange = 0x0000_0040,
    /// `RIIS_GL_FILE_CHANGE`: a watched file changed.
    FileChange = 0x0000_0080,
    /// `RIIS_GL_PRE_BEGIN_REQUEST`: before any request-level notification.
    PreBeginRequest = 0x0000_0100,
    /// `RIIS_GL_APPLICATION_START`: a site's application started.
    ApplicationStart = 0x0000_0200,
    /// `RIIS_GL_APPLICATION_RESOLVE_MODULES`: an application resolves its modules.
    ApplicationResolveModules = 0x0000_0400,
    /// `RIIS_GL_APPLICATION_STOP`: a site's application stopped.
    ApplicationStop = 0x0000_0800,
    /// `RIIS_GL_RSCA_QUERY`: a runtime status query.
    RscaQuery = 0x0000_1000,
    /// `RIIS_GL_TRACE_EVENT`: a trace event was raised.
    TraceEvent = 0x0000_2000,
    /// `RIIS_GL_CUSTOM_NOTIFICATION`: a module raised a global custom notification.
    CustomNotification = 0x0000_4000,
    /// `RIIS_GL_THREAD_CLEANUP`: a worker thread goes back to its pool.
    ThreadCleanup = 0x0000_8000,
    /// `RIIS_GL_APPLICATION_PRELOAD`: an application is being preloaded.
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

    /// The bit value (`RIIS_GL_*`).
    pub const fn bit(self) -> u32 {
        self as u32
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

/// A set of global notifications, as the `RIIS_GL_*` bit mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GlobalNotifications(u32);

impl GlobalNotifications {
    /// No notification.
    pub const NONE: Self = Self(0);

    /// A set from a raw mask; unknown bits are dropped.
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

/// What a request notification returns (`riis_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum RequestNotificationStatus {
    /// `RIIS_STATUS_CONTINUE`: go on with the next module or event.
    Continue = abi::STATUS_CONTINUE,
    /// `RIIS_STATUS_PENDING`: an asynchronous operation was started (or a
    /// [`crate::CompletionHandle`] taken); the request waits until it
    /// completes.
    Pending = abi::STATUS_PENDING,
    /// `RIIS_STATUS_FINISH_REQUEST`: skip to LogRequest and EndRequest.
    FinishRequest = abi::STATUS_FINISH_REQUEST,
}

impl RequestNotificationStatus {
    /// The status for a raw `riis_status`, if it is one of the three.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            abi::STATUS_CONTINUE => Some(Self::Continue),
            abi::STATUS_PENDING => Some(Self::Pending),
            abi::STATUS_FINISH_REQUEST => Some(Self::FinishRequest),
            _ => None,
        }
    }

    /// The raw `riis_status`.
    pub const fn raw(self) -> u32 {
        self as u32
    }
}

/// What a global notification returns (`riis_global_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GlobalNotificationStatus {
    /// `RIIS_GLOBAL_CONTINUE`: later global modules see the notification too.
    Continue = abi::GLOBAL_CONTINUE,
    /// `RIIS_GLOBAL_HANDLED`: later global modules do not see it.
    Handled = abi::GLOBAL_HANDLED,
}

impl GlobalNotificationStatus {
    /// The status for a raw `riis_global_status`, if it is one of the two.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            abi::GLOBAL_CONTINUE => Some(Self::Continue),
            abi::GLOBAL_HANDLED => Some(Self::Handled),
            _ => None,
        }
    }

    /// The raw `riis_global_status`.
    pub const fn raw(self) -> u32 {
        self as u32
    }
}

/// The order in which modules registered for the same notification run
/// (`RIIS_PRIORITY_*`). Higher priorities run first; SendResponse runs in the
/// inverse order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// `RIIS_PRIORITY_LAST`.
    Last = 0,
    /// `RIIS_PRIORITY_LOW`.
    Low = 1,
    /// `RIIS_PRIORITY_MEDIUM`: the default.
    #[default]
    Medium = 2,
    /// `RIIS_PRIORITY_HIGH`.
    High = 3,
    /// `RIIS_PRIORITY_FIRST`.
    First = 4,
}

impl Priority {
    /// The alias the C ABI takes (`"FIRST"`, `"HIGH"`, `"MEDIUM"`, `"LOW"`,
    /// `"LAST"`).
    pub const fn alias(self) -> &'static str {
        match self {
            Self::First => "FIRST",
            Self::High => "HIGH",
            Self::Medium => "MEDIUM",
            Self::Low => "LOW",
            Self::Last => "LAST",
        }
    }

    /// The alias as a C string.
    pub(crate) const fn c_alias(self) -> &'static CStr {
        match self {
            Self::First => c"FIRST",
            Self::High => c"HIGH",
            Self::Medium => c"MEDIUM",
            Self::Low => c"LOW",
            Self::Last => c"LAST",
        }
    }

    /// Parses an alias, case-insensitively.
    pub fn from_alias(alias: &str) -> Option<Self> {
        [Self::First, Self::High, Self::Medium, Self::Low, Self::Last]
            .into_iter()
            .find(|p| p.alias().eq_ignore_ascii_case(alias))
    }
}
