/*
 * riis_module.h - the native module interface of riis (C99).
 *
 * A native module is a shared library that exports
 *
 *     riis_hresult RegisterModule(uint32_t server_version,
 *                                 riis_registration *registration,
 *                                 const riis_server *server);
 *
 * (A C++ module written against httpserv.h defines RegisterModule with the
 * IIS signature instead; that header then exports `riis_cxx_register_module`
 * with the signature above, and the loader calls it in place of
 * RegisterModule.)
 *
 * The server loads it from configuration (`[[global_modules]]` in riis.toml),
 * checks the ABI version this header stamps into the library (the exported
 * symbol `riis_module_abi`), and calls RegisterModule once while the
 * module stays configured, as IIS calls it once in a worker process: a
 * reload whose configuration lists the same library under the same name,
 * while an earlier configuration still uses it, gets what that
 * RegisterModule registered (the library stays loaded). The factory's and
 * global module's terminate callbacks run once the last configuration
 * that used the registration is done (its last request), or at shutdown;
 * a configuration that lists the module after that calls RegisterModule
 * anew, once those callbacks returned. If the first configuration fails
 * to build after RegisterModule succeeded, what it registered is
 * terminated at once. The module registers a factory for request
 * notifications, a global module for global notifications, or both,
 * exactly as an IIS module does with IHttpModuleRegistrationInfo.
 *
 * VERSIONING
 *   RIIS_ABI_MAJOR changes only when an existing declaration changes meaning
 *   or layout; the server refuses a module built for another major version.
 *   RIIS_ABI_MINOR grows when something is appended; the server loads modules
 *   built for its own or an older minor version. Structures that may grow
 *   start with a `size` field: the side that fills a structure sets `size` to
 *   sizeof as it knows it, and the other side reads only the fields that size
 *   covers (RIIS_HAS_FIELD). New functions are appended to riis_api; check
 *   RIIS_API_HAS(api, function) before calling one newer than 1.0.
 *
 * THREADS
 *   The server calls a module instance for one notification at a time. During
 *   a call, the module may use the riis_context it received, from the calling
 *   thread only. After it returned RIIS_STATUS_PENDING, another thread may call
 *   indicate_completion or post_completion on that context, once. Since 1.9
 *   that thread may also write the response first (response_set_status,
 *   response_set_header, response_delete_header,
 *   response_write_entity_chunks, response_clear, response_clear_headers),
 *   while the request is parked or one of the module's calls runs: the
 *   writes are kept and made, in order, on the request's thread when the
 *   call ends or before the signal is acted on. Such writes fail with
 *   RIIS_E_INVALID_STATE once the request ended while the module was
 *   pending (the client left, timeouts.execution: nothing would be sent),
 *   and with RIIS_E_OUTOFMEMORY past 16 MiB of memory written before the
 *   signal (256 MiB for all requests together), after which the request
 *   fails with 500 rather than send a short answer (complete, then flush,
 *   to stream a large one). Since 1.10 it may also ask
 *   connection_is_connected. Every other context function called from
 *   another thread, or outside a call, fails with RIIS_E_WRONG_THREAD. Factories and global modules must be thread-safe:
 *   several requests run at once on different threads.
 *
 * ASYNCHRONOUS OPERATIONS
 *   request_read_entity_body, post_completion (during a call),
 *   context_execute_request and response_flush belong to the deterministic
 *   events and on_async_completion. Called during a SendResponse, ReadEntity,
 *   MapPath or custom notification (nothing waits there) they fail with
 *   RIIS_E_INVALID_STATE and leave any operation under way untouched.
 *
 * LIFETIMES AND OWNERSHIP
 *   - A module instance gets the same riis_context pointer for every call of
 *     its request; it stays valid until the instance's dispose callback.
 *     It is an opaque handle that no other request is ever given: a
 *     completion signalled through it after its request ended fails with
 *     RIIS_E_INVALID_STATE, even while newer requests run.
 *   - Providers (riis_provider, riis_global_provider) and completion info are
 *     valid during the call that received them only.
 *   - Strings the server returns are UTF-8, NUL-terminated, owned by the
 *     server and valid until the request ends (or, in a global notification,
 *     until it returns). Header values are the exception: they are the bytes
 *     as received (obs-text such as Latin-1 included), as IIS returns them,
 *     and a header value a module sets may hold such bytes too. A value
 *     asked for again comes back as the same pointer, so asking at every
 *     piece of a long stream does not grow the request's memory. Strings a
 *     module passes in are copied before the call returns. Bytes passed to
 *     write_entity_chunks are copied too.
 *   - Memory from riis_allocator / context_allocate lives until the request
 *     ends and is freed by the server; never free() it.
 *   - A riis_module_factory and riis_global_module passed at registration
 *     must stay valid until their terminate callback.
 *
 * ERRORS
 *   Functions return riis_hresult (0 = RIIS_S_OK, negative = failure) or
 *   NULL / 0 on failure. A context refused (NULL, another thread, after
 *   the call) is logged at warn; a call refused for its arguments returns
 *   its code, logged at debug with the module's name when the context
 *   was valid.
 *   A notification callback that returns a value other than the three
 *   statuses fails its request with 500, logged with module and notification.
 */
#ifndef RIIS_MODULE_H
#define RIIS_MODULE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- version */

#define RIIS_ABI_MAJOR 1
#define RIIS_ABI_MINOR 12
/** The ABI as one number: major in the high 16 bits, minor in the low 16. */
#define RIIS_ABI_VERSION ((uint32_t)((RIIS_ABI_MAJOR << 16) | RIIS_ABI_MINOR))

/** The `server_version` RegisterModule receives (IIS 10 compatible). */
#define RIIS_SERVER_VERSION 10

/*
 * Every library that includes this header exports the ABI it was built for.
 * The definition is weak so that several translation units may include the
 * header; the loader reads it before calling RegisterModule.
 */
#if defined(__GNUC__) || defined(__clang__)
#define RIIS_EXPORT __attribute__((visibility("default")))
#ifdef __cplusplus
__attribute__((weak, visibility("default"))) extern const uint32_t riis_module_abi = RIIS_ABI_VERSION;
#else
__attribute__((weak, visibility("default"))) const uint32_t riis_module_abi = RIIS_ABI_VERSION;
#endif
#else
#error "riis modules are built with GCC or Clang"
#endif

/* ------------------------------------------------------- results, statuses */

/** An HRESULT: 0 on success, negative on failure. */
typedef int32_t riis_hresult;

#define RIIS_S_OK ((riis_hresult)0)
#define RIIS_S_FALSE ((riis_hresult)1)
#define RIIS_E_FAIL ((riis_hresult)0x80004005)
#define RIIS_E_OUTOFMEMORY ((riis_hresult)0x8007000E)
#define RIIS_E_INVALIDARG ((riis_hresult)0x80070057)
#define RIIS_E_NOTIMPL ((riis_hresult)0x80004001)
/** HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED) */
#define RIIS_E_NOT_SUPPORTED ((riis_hresult)0x80070032)
/** HRESULT_FROM_WIN32(ERROR_NOT_FOUND) */
#define RIIS_E_NOT_FOUND ((riis_hresult)0x80070490)
/** HRESULT_FROM_WIN32(ERROR_INVALID_STATE): called outside its moment. */
#define RIIS_E_INVALID_STATE ((riis_hresult)0x8007139F)
/** HRESULT_FROM_WIN32(ERROR_BUSY) (since 1.7): a completion signal is
 *  already waiting for the module's call to return Pending. */
#define RIIS_E_BUSY ((riis_hresult)0x800700AA)
/** HRESULT_FROM_WIN32(ERROR_HANDLE_EOF): request_read_entity_body asked
 *  for after a read completed with 0 bytes at the end of the body. */
#define RIIS_E_HANDLE_EOF ((riis_hresult)0x80070026)
/** HRESULT_FROM_WIN32(ERROR_INVALID_THREAD_ID): context used off its call. */
#define RIIS_E_WRONG_THREAD ((riis_hresult)0x800705A4)
/** HRESULT_FROM_WIN32(ERROR_REVISION_MISMATCH): ABI versions differ. */
#define RIIS_E_REVISION_MISMATCH ((riis_hresult)0x8007051A)
/** HRESULT_FROM_WIN32(ERROR_ALREADY_ASSIGNED): a shared value is set. */
#define RIIS_E_ALREADY_ASSIGNED ((riis_hresult)0x80070055)

/** REQUEST_NOTIFICATION_STATUS. From a MapPath or custom notification,
 *  RIIS_STATUS_FINISH_REQUEST ends the request once the call that raised it
 *  returns, with the response as the module left it (riis's choice; the
 *  httpserv.h and SDK layers return it when a module threw or panicked
 *  there); the modules after it in that notification are not called. */
typedef uint32_t riis_status;
#define RIIS_STATUS_CONTINUE ((riis_status)0)
#define RIIS_STATUS_PENDING ((riis_status)1)
#define RIIS_STATUS_FINISH_REQUEST ((riis_status)2)

/** GLOBAL_NOTIFICATION_STATUS */
typedef uint32_t riis_global_status;
#define RIIS_GLOBAL_CONTINUE ((riis_global_status)0)
#define RIIS_GLOBAL_HANDLED ((riis_global_status)1)

/* ------------------------------------------------------------- notifications */

/* Request notifications (the RQ_* bits of IIS). The twelve deterministic ones
 * have post-events, registered in the separate post mask. */
#define RIIS_RQ_BEGIN_REQUEST 0x00000001u
#define RIIS_RQ_AUTHENTICATE_REQUEST 0x00000002u
#define RIIS_RQ_AUTHORIZE_REQUEST 0x00000004u
#define RIIS_RQ_RESOLVE_REQUEST_CACHE 0x00000008u
#define RIIS_RQ_MAP_REQUEST_HANDLER 0x00000010u
#define RIIS_RQ_ACQUIRE_REQUEST_STATE 0x00000020u
#define RIIS_RQ_PRE_EXECUTE_REQUEST_HANDLER 0x00000040u
#define RIIS_RQ_EXECUTE_REQUEST_HANDLER 0x00000080u
#define RIIS_RQ_RELEASE_REQUEST_STATE 0x00000100u
#define RIIS_RQ_UPDATE_REQUEST_CACHE 0x00000200u
#define RIIS_RQ_LOG_REQUEST 0x00000400u
#define RIIS_RQ_END_REQUEST 0x00000800u
#define RIIS_RQ_CUSTOM_NOTIFICATION 0x10000000u
#define RIIS_RQ_SEND_RESPONSE 0x20000000u
#define RIIS_RQ_READ_ENTITY 0x40000000u
#define RIIS_RQ_MAP_PATH 0x80000000u

/* Global notifications (the GL_* bits of IIS). */
#define RIIS_GL_STOP_LISTENING 0x00000002u
#define RIIS_GL_CACHE_CLEANUP 0x00000004u
#define RIIS_GL_CACHE_OPERATION 0x00000010u
#define RIIS_GL_HEALTH_CHECK 0x00000020u
#define RIIS_GL_CONFIGURATION_CHANGE 0x00000040u
#define RIIS_GL_FILE_CHANGE 0x00000080u
#define RIIS_GL_PRE_BEGIN_REQUEST 0x00000100u
#define RIIS_GL_APPLICATION_START 0x00000200u
#define RIIS_GL_APPLICATION_RESOLVE_MODULES 0x00000400u
#define RIIS_GL_APPLICATION_STOP 0x00000800u
#define RIIS_GL_RSCA_QUERY 0x00001000u
#define RIIS_GL_TRACE_EVENT 0x00002000u
#define RIIS_GL_CUSTOM_NOTIFICATION 0x00004000u
#define RIIS_GL_THREAD_CLEANUP 0x00008000u
#define RIIS_GL_APPLICATION_PRELOAD 0x00010000u

/* Priority aliases, as IIS spells them. */
#define RIIS_PRIORITY_FIRST "FIRST"
#define RIIS_PRIORITY_HIGH "HIGH"
#define RIIS_PRIORITY_MEDIUM "MEDIUM"
#define RIIS_PRIORITY_LOW "LOW"
#define RIIS_PRIORITY_LAST "LAST"

/* ------------------------------------------------------------------- handles */

/** The registration of one module (IHttpModuleRegistrationInfo). */
typedef struct riis_registration riis_registration;
/** A request context (IHttpContext); request, response and user functions
 *  take it too. */
typedef struct riis_context riis_context;
/** The event provider of the current notification (IHttpEventProvider and
 *  its SendResponse / ReadEntity / MapPath / custom kinds). */
typedef struct riis_provider riis_provider;
/** The provider of a global notification. */
typedef struct riis_global_provider riis_global_provider;
/** The allocator a factory receives (IModuleAllocator). */
typedef struct riis_allocator riis_allocator;

/** What the server hands RegisterModule (IHttpServer). */
typedef struct riis_server {
    uint32_t size;
    /** RIIS_ABI_VERSION of the server. */
    uint32_t abi_version;
    /** The server software, e.g. "riis/0.1.0". */
    const char *software;
    /** Every function of the server. Valid for the life of the process. */
    const struct riis_api *api;
} riis_server;

/** IHttpCompletionInfo2::GetCompletedOperation values (riis's own). */
#define RIIS_OPERATION_POSTED ((uint32_t)0)          /* post_completion */
#define RIIS_OPERATION_READ ((uint32_t)1)            /* request_read_entity_body */
#define RIIS_OPERATION_WRITE ((uint32_t)2)           /* response_flush, async */
#define RIIS_OPERATION_EXECUTE_REQUEST ((uint32_t)3) /* context_execute_request */

/** Flags of a custom notification (since 1.7): `data` is an httpserv.h
 *  riis_cxx::CustomEnvelope (what a C++ module raises). */
#define RIIS_CUSTOM_CXX_ENVELOPE ((uint32_t)0x1)
/** Set by the server, never by a raiser: the raiser was built for an ABI
 *  before 1.7 and could not say what `data` is. httpserv.h receivers then
 *  look for an older header's envelope as that header did (at an aligned
 *  address from 64 KiB up), so such raisers pass NULL or a pointer to at
 *  least 8 readable bytes. */
#define RIIS_CUSTOM_UNDECLARED ((uint32_t)0x2)

/** IHttpCompletionInfo */
typedef struct riis_completion_info {
    uint32_t size;
    /** GetCompletionStatus: 0 on success, an HRESULT otherwise. */
    riis_hresult status;
    /** GetCompletionBytes: bytes written, read, or produced by a child. */
    uint64_t bytes;
    /** Since 1.6 (RIIS_HAS_FIELD): which operation completed, one of
     *  RIIS_OPERATION_*; in full duplex (context_enable_full_duplex) it
     *  tells a read's completion from a flush's. */
    uint32_t operation;
} riis_completion_info;

/* --------------------------------------------------------------- the module */

/** A module instance's callbacks: one table per module type, shared by all
 *  its instances. */
typedef struct riis_module_callbacks {
    /** sizeof(riis_module_callbacks); a table too small to hold
     *  `on_notification` is refused (the instance is not created). */
    uint32_t size;
    /**
     * Every notification the module registered for. `notification` is one
     * RIIS_RQ_* bit; `is_post` is non-zero for a post-event. `provider` is
     * NULL for the deterministic notifications and the event's provider for
     * RIIS_RQ_SEND_RESPONSE, RIIS_RQ_READ_ENTITY, RIIS_RQ_MAP_PATH and
     * RIIS_RQ_CUSTOM_NOTIFICATION (and for RIIS_RQ_AUTHENTICATE_REQUEST, where
     * it sets the user).
     */
    riis_status (*on_notification)(void *module, riis_context *context, uint32_t notification,
                                   int is_post, riis_provider *provider);
    /** OnAsyncCompletion: an operation the module started, then returned
     *  RIIS_STATUS_PENDING, finished. May be NULL when the module never
     *  starts one. */
    riis_status (*on_async_completion)(void *module, riis_context *context,
                                       uint32_t notification, int is_post,
                                       riis_provider *provider,
                                       const riis_completion_info *completion);
    /** The request ended: release the instance. May be NULL. */
    void (*dispose)(void *module);
} riis_module_callbacks;

/** What a factory's get_http_module fills in. */
typedef struct riis_module_instance {
    const riis_module_callbacks *callbacks;
    void *module;
} riis_module_instance;

/** IHttpModuleFactory: makes one instance per request, on the first
 *  notification the module registered for. An instance whose callbacks
 *  have no on_notification fails the request and goes to the table's
 *  dispose at once (when the table's size covers it). */
typedef struct riis_module_factory {
    uint32_t size;
    void *user_data;
    riis_hresult (*get_http_module)(void *user_data, riis_allocator *allocator,
                                    riis_module_instance *instance);
    /** The server stops. May be NULL. */
    void (*terminate)(void *user_data);
} riis_module_factory;

/** CGlobalModule */
typedef struct riis_global_module {
    uint32_t size;
    void *user_data;
    /** `notification` is one RIIS_GL_* bit. */
    riis_global_status (*on_global_notification)(void *user_data, uint32_t notification,
                                                 riis_global_provider *provider);
    /** The server stops. May be NULL. */
    void (*terminate)(void *user_data);
} riis_global_module;

/* ------------------------------------------------------------ data records */

/** HTTP_DATA_CHUNK_TYPE */
#define RIIS_CHUNK_FROM_MEMORY 0u
#define RIIS_CHUNK_FROM_FILE_HANDLE 1u
#define RIIS_CHUNK_FROM_FILE_NAME 2u

/** HTTP_DATA_CHUNK: entity data from memory, an open file or a named file. */
typedef struct riis_data_chunk {
    uint32_t type;
    /** RIIS_CHUNK_FROM_MEMORY */
    const void *buffer;
    uint64_t buffer_length;
    /** RIIS_CHUNK_FROM_FILE_HANDLE: a file descriptor the server duplicates. */
    int file_descriptor;
    /** RIIS_CHUNK_FROM_FILE_NAME: a path, absolute or relative to the
     *  server's working directory. */
    const char *file_name;
    /** File chunks: the range. A length of UINT64_MAX means to the end.
     *  Only a readable regular file is taken: a folder, a FIFO, a device, a
     *  descriptor opened for writing alone, or a range past the file's
     *  end fails with RIIS_E_INVALIDARG. */
    uint64_t offset;
    uint64_t length;
} riis_data_chunk;

/** Send flags of a SendResponse provider (HTTP_SEND_RESPONSE_FLAG_*). */
#define RIIS_SEND_FLAG_DISCONNECT 0x00000001u
#define RIIS_SEND_FLAG_MORE_DATA 0x00000002u

/** Child request flags, with IIS's EXECUTE_FLAG_* values. */
#define RIIS_EXECUTE_FLAG_DISABLE_CUSTOM_ERROR 0x00000008u
#define RIIS_EXECUTE_FLAG_SAME_URL 0x00000010u
#define RIIS_EXECUTE_FLAG_BUFFER_RESPONSE 0x00000020u
/** Since 1.9: only the child's entity goes into the response; its status,
 *  error and headers do not (the parent's are what is sent, and what the
 *  response holds again after the child). A clone's status after the child
 *  completed is still the child's (response_status on the clone). */
#define RIIS_EXECUTE_FLAG_NO_HEADERS 0x00000001u
/** Since 1.2, riis's own: the child runs as the user set on the clone with
 *  set_user, and its AuthenticateRequest (and PostAuthenticateRequest) are
 *  skipped, as IIS does for ExecuteRequest given pHttpUser. Without a user
 *  on the clone: RIIS_E_INVALIDARG. */
#define RIIS_EXECUTE_FLAG_AS_USER 0x00010000u

/** Module context scopes (IHttpModuleContextContainer owners). */
#define RIIS_SCOPE_REQUEST 0u
#define RIIS_SCOPE_CONNECTION 1u
#define RIIS_SCOPE_SITE 2u

/** Log levels for riis_api.log. */
#define RIIS_LOG_ERROR 1u
#define RIIS_LOG_WARN 2u
#define RIIS_LOG_INFO 3u
#define RIIS_LOG_DEBUG 4u

/** GetCurrentExecutionStats */
typedef struct riis_execution_stats {
    uint32_t size;
    uint32_t notification;
    int is_post;
    const char *module;
} riis_execution_stats;

/** The kind of a riis_provider (riis_api.provider_kind). */
#define RIIS_PROVIDER_SEND_RESPONSE 1u
#define RIIS_PROVIDER_READ_ENTITY 2u
#define RIIS_PROVIDER_MAP_PATH 3u
#define RIIS_PROVIDER_CUSTOM 4u
#define RIIS_PROVIDER_AUTHENTICATION 5u

/** Cache operations (riis_api.global_cache_operation). */
#define RIIS_CACHE_ADD 1u
#define RIIS_CACHE_REMOVE 2u

#define RIIS_HAS_FIELD(ptr, field) \
    ((ptr)->size >= offsetof(__typeof__(*(ptr)), field) + sizeof((ptr)->field))
#define RIIS_API_HAS(api, function) RIIS_HAS_FIELD(api, function)

/* ------------------------------------------------------ the server's functions */

/** A module's IsInRole for a user it set (set_user_with_role_check):
 *  non-zero when the user is in `role`. */
typedef int (*riis_role_check_fn)(void *data, const char *role);

/** Told how a response's delivery ended: the module's data, the entity
 *  bytes the connection took, and 1 when all of the response went (see
 *  riis_api.context_on_response_delivered). */
typedef void (*riis_delivered_fn)(void *data, uint64_t body_bytes, int whole);

/**
 * Every function the server offers, in one table (`server->api`). Functions
 * taking a riis_context cover the context, its request, response and user.
 */
typedef struct riis_api {
    uint32_t size;

    /* -- registration (during RegisterModule only) ----------------------- */

    /** SetRequestNotifications: the factory, the RQ_* bits, and the bits
     *  whose post-events the module wants. */
    riis_hresult (*set_request_notifications)(riis_registration *registration,
                                              const riis_module_factory *factory,
                                              uint32_t notifications,
                                              uint32_t post_notifications);
    /** SetPriorityForRequestNotification, with a RIIS_PRIORITY_* alias. */
    riis_hresult (*set_priority_for_request_notification)(riis_registration *registration,
                                                          uint32_t notification,
                                                          const char *priority);
    /** The same for the post-event of a deterministic notification. */
    riis_hresult (*set_priority_for_post_request_notification)(
        riis_registration *registration, uint32_t notification, const char *priority);
    /** SetGlobalNotifications */
    riis_hresult (*set_global_notifications)(riis_registration *registration,
                                             const riis_global_module *module,
                                             uint32_t notifications);
    /** SetPriorityForGlobalNotification */
    riis_hresult (*set_priority_for_global_notification)(riis_registration *registration,
                                                         uint32_t notification,
                                                         const char *priority);
    /** GetName: the module's name in the configuration. */
    const char *(*registration_name)(riis_registration *registration);
    /** GetId: the module's position in the module list. */
    uint32_t (*registration_id)(riis_registration *registration);

    /* -- memory ------------------------------------------------------------ */

    /** IModuleAllocator::AllocateMemory: zeroed, 16-byte aligned, freed when
     *  the request ends; NULL when the memory cannot be had, and when called
     *  outside get_http_module and the instance's calls or from another
     *  thread (the allocator is not thread-safe). */
    void *(*allocator_allocate)(riis_allocator *allocator, size_t bytes);
    /** The same, from a context. */
    void *(*context_allocate)(riis_context *context, size_t bytes);

    /* -- context ----------------------------------------------------------- */

    /** The site's name and id. */
    const char *(*context_site_name)(riis_context *context);
    uint32_t (*context_site_id)(riis_context *context);
    /** The request's id, unique for the life of the server. */
    uint64_t (*context_request_id)(riis_context *context);
    /** The physical path of the request URL (after MapPath modules). */
    const char *(*context_physical_path)(riis_context *context);
    /** MapPath: the physical path of any URL of the site. */
    const char *(*context_map_path)(riis_context *context, const char *url);
    /** The handler mapped to the request (NULL before MapRequestHandler or
     *  when none matched). */
    const char *(*context_handler_name)(riis_context *context);
    /** SetRequestHandled */
    riis_hresult (*context_set_request_handled)(riis_context *context);
    /** GetIsLastNotification for `status`. */
    int (*context_is_last_notification)(riis_context *context, riis_status status);
    /** GetCurrentExecutionStats */
    riis_hresult (*context_execution_stats)(riis_context *context, riis_execution_stats *stats);
    /** GetServerVariable under the IIS names (REMOTE_ADDR, URL, HTTP_HOST…).
     *  NULL when it does not exist; `length` may be NULL. */
    const char *(*server_variable)(riis_context *context, const char *name, size_t *length);
    /** SetServerVariable */
    riis_hresult (*set_server_variable)(riis_context *context, const char *name,
                                        const char *value);
    /** GetModuleContextContainer()->GetModuleContext: this module's stored
     *  pointer at a RIIS_SCOPE_*, or NULL. */
    void *(*module_context)(riis_context *context, uint32_t scope);
    /** SetModuleContext: stores `data`; `cleanup` (may be NULL) runs exactly
     *  once when the scope ends (or, at request scope, when the value is
     *  replaced by another pointer; storing the stored pointer again only
     *  takes the new `cleanup`, the old one never runs). Connection and site values are shared by concurrent
     *  requests, so one stored there stays (and NULL cannot be stored
     *  there): a second store fails with
     *  RIIS_E_ALREADY_ASSIGNED, as in IIS, and a pointer read there is
     *  valid until the connection or the configuration ends. A connection
     *  value belongs to the configuration whose request stored it: after a
     *  reload the module reads NULL on that connection (and cannot store).
     *  On failure nothing is stored and `cleanup` never runs: `data` stays
     *  the caller's. */
    riis_hresult (*set_module_context)(riis_context *context, uint32_t scope, void *data,
                                       void (*cleanup)(void *data));
    /** NotifyCustomNotification: every module registered for
     *  RIIS_RQ_CUSTOM_NOTIFICATION, except the raising one (which is inside
     *  its own call and handles its notification there), sees `type_name`
     *  and `data`, which the
     *  server never reads, nor do httpserv.h receivers from a module built
     *  for 1.7 or later (a number cast to a pointer is fine; see
     *  RIIS_CUSTOM_UNDECLARED for older raisers). */
    riis_hresult (*raise_custom_notification)(riis_context *context, const char *type_name,
                                              void *data);
    /** A global custom notification (GL_CUSTOM_NOTIFICATION). */
    riis_hresult (*raise_global_custom_notification)(riis_context *context,
                                                     const char *type_name, void *data);
    /** CloneContext: a child context for ExecuteRequest, with the parent's
     *  method, URL, headers and user. NULL on failure (nesting is capped). */
    riis_context *(*context_clone)(riis_context *context);
    /** ReleaseClonedContext: drop a clone that was not executed. */
    void (*context_release_clone)(riis_context *context, riis_context *child);
    /** ExecuteRequest: the child runs through the pipeline when the calling
     *  module returns; return RIIS_STATUS_PENDING to get on_async_completion
     *  when it ends. The child handle is consumed. */
    riis_hresult (*context_execute_request)(riis_context *context, riis_context *child,
                                            uint32_t execute_flags);
    /** IndicateCompletion: after returning RIIS_STATUS_PENDING, continue with
     *  `status` without calling the module again. Any thread. Signal once
     *  per Pending (this or post_completion), and use the context no more
     *  after that signal: when the request already ended (the execution
     *  limit, a client gone), the server then calls the module's dispose
     *  (on a thread of its own) and frees the context. A signal made while
     *  the call is still running is kept for its Pending; a second one
     *  before that fails with RIIS_E_BUSY. A signal that nothing waits
     *  for (a second one for the same Pending, or one after a call that
     *  did not return Pending) fails with RIIS_E_INVALID_STATE while the
     *  module is in no call: kept, it would end the module's next Pending
     *  early. (One that comes during a later call of the module cannot be
     *  told from an early signal for that call, and is kept as one.) */
    riis_hresult (*indicate_completion)(riis_context *context, riis_status status);
    /** PostCompletion: re-enter on_async_completion with `bytes`. During a
     *  call (then return RIIS_STATUS_PENDING) or, after it, from any thread. */
    riis_hresult (*post_completion)(riis_context *context, uint64_t bytes);
    /** A section of riis.toml this module declared (riis_api.declare_section):
     *  the value at `key` (dotted path) for the request's location, as text
     *  (strings unquoted, other values in TOML form). NULL when absent. */
    const char *(*config_value)(riis_context *context, uint32_t section, const char *key);
    /** Declares a configuration section (during RegisterModule): riis.toml
     *  may then hold `[name]` at server, site and location level. */
    riis_hresult (*declare_section)(riis_registration *registration, const char *name,
                                    uint32_t *section);
    /** Writes a line to the server log, tagged with the module's name (with
     *  a NULL context outside RegisterModule and global notifications, the
     *  server cannot tell which module writes: the line is tagged
     *  "native module"; log_from_source, since 1.11, names the module from
     *  anywhere). `context` may be NULL. A message past 16 KiB is cut
     *  there (the line says how long it was). */
    void (*log)(riis_context *context, uint32_t level, const char *message);

    /* -- request ------------------------------------------------------------ */

    const char *(*request_method)(riis_context *context);
    /** SetHttpMethod */
    riis_hresult (*request_set_method)(riis_context *context, const char *method);
    /** The URL path, percent-decoded as the server routes it. */
    const char *(*request_url)(riis_context *context);
    /** The query string without `?` ("" when none). */
    const char *(*request_query)(riis_context *context);
    /** SetUrl: a path and optional query; until BeginRequest's modules are
     *  done (PreBeginRequest, BeginRequest) or on a cloned context. */
    riis_hresult (*request_set_url)(riis_context *context, const char *path_and_query);
    /** GetHeader: all values joined with ", "; NULL when absent. */
    const char *(*request_header)(riis_context *context, const char *name, size_t *length);
    /** SetHeader (replace non-zero) or append. */
    riis_hresult (*request_set_header)(riis_context *context, const char *name,
                                       const char *value, int replace);
    riis_hresult (*request_delete_header)(riis_context *context, const char *name);
    /** The names of all headers, for enumeration: fills up to `capacity`
     *  names and returns how many there are. */
    size_t (*request_header_names)(riis_context *context, const char **names, size_t capacity);
    /** GetHttpVersion */
    void (*request_http_version)(riis_context *context, uint16_t *major, uint16_t *minor);
    /** The local (`remote` zero) or remote address as text and port. */
    riis_hresult (*request_address)(riis_context *context, int remote, const char **address,
                                    uint16_t *port);
    /** ReadEntityBody, asynchronous: reads up to `capacity` bytes into
     *  `buffer` when the calling module returns RIIS_STATUS_PENDING; the
     *  byte count (0 at the end of the body) arrives in on_async_completion,
     *  by which time the bytes are in `buffer`. `buffer` must stay valid
     *  until then (allocate it with context_allocate). Asked for again
     *  after that 0-byte completion, it fails at once with
     *  RIIS_E_HANDLE_EOF, as IIS's ReadEntityBody does (unless bytes were
     *  inserted since). */
    riis_hresult (*request_read_entity_body)(riis_context *context, void *buffer,
                                             size_t capacity);
    /** InsertEntityBody: bytes handed to readers before the rest of the body. */
    riis_hresult (*request_insert_entity_body)(riis_context *context, const void *data,
                                               size_t length);
    /** GetRemainingEntityBytes: -1 when unknown (chunked). */
    int64_t (*request_remaining_entity_bytes)(riis_context *context);

    /* -- response ----------------------------------------------------------- */

    /** GetStatus. On a clone whose child request completed (context_execute_request):
     *  the status and substatus the child ended with. */
    void (*response_status)(riis_context *context, uint16_t *status, uint16_t *substatus);
    /** SetStatus(status, reason, substatus, hrErrorToReport); `reason` may be
     *  NULL for the standard phrase; `error` 0 for none. */
    riis_hresult (*response_set_status)(riis_context *context, uint16_t status,
                                        const char *reason, uint16_t substatus,
                                        riis_hresult error);
    /** SetErrorDescription: text for detailed error pages. */
    riis_hresult (*response_set_error_description)(riis_context *context,
                                                   const char *description);
    const char *(*response_header)(riis_context *context, const char *name, size_t *length);
    riis_hresult (*response_set_header)(riis_context *context, const char *name,
                                        const char *value, int replace);
    riis_hresult (*response_delete_header)(riis_context *context, const char *name);
    /** Clear: status, headers and entity. */
    riis_hresult (*response_clear)(riis_context *context);
    riis_hresult (*response_clear_headers)(riis_context *context);
    /** WriteEntityChunks: appends to the response (copying memory chunks).
     *  Sent at the next flush, when buffering is off, or at the end. */
    riis_hresult (*response_write_entity_chunks)(riis_context *context,
                                                 const riis_data_chunk *chunks,
                                                 uint32_t count, uint64_t *bytes);
    /** Flush when the calling module returns. With `async` and a
     *  RIIS_STATUS_PENDING return, on_async_completion receives the bytes
     *  sent. `more_data` keeps the body open (sent chunked). */
    riis_hresult (*response_flush)(riis_context *context, int async, int more_data);
    riis_hresult (*response_disable_buffering)(riis_context *context);
    /** Redirect with 302 (or `status` 301/303/307/308). */
    riis_hresult (*response_redirect)(riis_context *context, const char *url,
                                      uint16_t status);
    riis_hresult (*response_suppress_headers)(riis_context *context);
    riis_hresult (*response_set_need_disconnect)(riis_context *context);
    riis_hresult (*response_reset_connection)(riis_context *context);
    riis_hresult (*response_set_try_skip_custom_errors)(riis_context *context, int skip);
    /** Whether the status line and headers are already sent. */
    int (*response_headers_sent)(riis_context *context);

    /* -- user --------------------------------------------------------------- */

    /** Non-zero when an authentication module set a user. */
    int (*user_present)(riis_context *context);
    const char *(*user_name)(riis_context *context);
    const char *(*user_authentication_type)(riis_context *context);
    int (*user_is_in_role)(riis_context *context, const char *role);
    /** Sets the request's user (what an authentication module does). */
    riis_hresult (*set_user)(riis_context *context, const char *name,
                             const char *authentication_type, const char *const *roles,
                             size_t role_count);

    /* -- providers ------------------------------------------------------------ */

    /** A RIIS_PROVIDER_* value. */
    uint32_t (*provider_kind)(riis_provider *provider);
    /** SendResponse: GetHeadersBeingSent, final send, GetFlags / SetFlags. */
    int (*send_headers_being_sent)(riis_provider *provider);
    int (*send_is_final)(riis_provider *provider);
    uint32_t (*send_flags)(riis_provider *provider);
    riis_hresult (*send_set_flags)(riis_provider *provider, uint32_t flags);
    /** ReadEntity: GetEntity / SetEntity (the bytes are copied). */
    riis_hresult (*read_entity)(riis_provider *provider, const void **data, size_t *length);
    riis_hresult (*read_set_entity)(riis_provider *provider, const void *data, size_t length);
    /** MapPath: GetUrl, GetPhysicalPath, SetPhysicalPath. */
    const char *(*map_path_url)(riis_provider *provider);
    const char *(*map_path_physical_path)(riis_provider *provider);
    riis_hresult (*map_path_set_physical_path)(riis_provider *provider, const char *path);
    /** Custom notification: QueryNotificationType and the raiser's data
     *  (NULL when a Rust module raised it). */
    const char *(*custom_type)(riis_provider *provider);
    void *(*custom_data)(riis_provider *provider);

    /* -- global providers ------------------------------------------------- */

    /** PreBeginRequest: the request's context, valid during this call only;
     *  an asynchronous operation or flush started on it is ignored (a
     *  global module gets no completion). */
    riis_context *(*global_context)(riis_global_provider *provider);
    /** ApplicationStart / ApplicationStop: the site's name, id and root. */
    riis_hresult (*global_application)(riis_global_provider *provider, const char **site_name,
                                       uint32_t *site_id, const char **physical_root);
    /** FileChange: the path that changed; ConfigurationChange: the
     *  configuration file that was reloaded. */
    const char *(*global_file_path)(riis_global_provider *provider);
    /** CacheOperation: RIIS_CACHE_ADD or RIIS_CACHE_REMOVE, the key, the
     *  size (adds). */
    riis_hresult (*global_cache_operation)(riis_global_provider *provider, uint32_t *operation,
                                           const char **key, uint64_t *bytes);
    /** TraceEvent: the module, notification and URL of the event, its phase
     *  (0 start, 1 end, 2 a module's own message) and, at the end, the
     *  microseconds the call took. */
    riis_hresult (*global_trace_event)(riis_global_provider *provider, const char **module,
                                       uint32_t *notification, int *is_post, const char **url,
                                       uint32_t *phase, uint64_t *elapsed_us);
    /** CustomNotification: the type name and data. */
    const char *(*global_custom_type)(riis_global_provider *provider);
    void *(*global_custom_data)(riis_global_provider *provider);

    /* -- response headers and entity --------------------------------------- */

    /** The names of all response headers, for enumeration: fills up to
     *  `capacity` names and returns how many there are. */
    size_t (*response_header_names)(riis_context *context, const char **names,
                                    size_t capacity);
    /** How many chunks the buffered response entity (not yet sent) has. */
    uint32_t (*response_entity_chunk_count)(riis_context *context);
    /** Chunk `index` of the buffered entity: RIIS_CHUNK_FROM_MEMORY, whose
     *  buffer stays valid until the entity changes or the call returns, or
     *  RIIS_CHUNK_FROM_FILE_HANDLE with a descriptor the server owns (do not
     *  close it), offset and length. */
    riis_hresult (*response_entity_chunk)(riis_context *context, uint32_t index,
                                          riis_data_chunk *chunk);
    /** Replaces the buffered entity (copied as by write_entity_chunks): what
     *  a SendResponse module that transforms the body does. */
    riis_hresult (*response_set_entity_chunks)(riis_context *context,
                                               const riis_data_chunk *chunks, uint32_t count);

    /* -- since 1.1: the runtime status query ------------------------------ */

    /** RscaQuery (IGlobalRSCAQueryProvider; `riis status` asks for the
     *  function "status" with empty parameters): the function and its
     *  parameters. */
    riis_hresult (*global_rsca_query)(riis_global_provider *provider, const char **function,
                                      const char **parameters);
    /** RscaQuery: appends `length` bytes of UTF-8 text to the answer (not
     *  UTF-8: RIIS_E_INVALIDARG, nothing appended). The answers of all
     *  global modules follow the server's own report, in module order. */
    riis_hresult (*global_rsca_write)(riis_global_provider *provider, const char *text,
                                      size_t length);

    /* -- since 1.3: the client's certificate ------------------------------ */

    /** IHttpRequest::GetClientCertificate: the certificate the client
     *  presented in the connection's TLS handshake, DER, verified against
     *  the site's client_certificate_ca; valid until the request ends.
     *  Without one, *der is NULL and *length 0. *negotiated is 1 when the
     *  handshake asked for a certificate (the site sets
     *  client_certificate_ca), else 0. Any output may be NULL. */
    riis_hresult (*request_client_certificate)(riis_context *context, const uint8_t **der,
                                               size_t *length, int *negotiated);

    /* -- since 1.4: a large body a piece at a time ------------------------- */

    /** SendResponse (riis's addition to ISendResponseProvider): keeps the
     *  first `at` bytes (at least 4 KiB) of the send's entity and defers
     *  the rest, handed to this module again in a later send once the
     *  client has taken this one, so that a module transforming the body
     *  (compressing, rewriting) never makes a large body's output all at
     *  once. Call it before reading the entity; called again in the same
     *  call, its rest comes before the first. *deferred (may be NULL) is 1
     *  when a rest was deferred (send_is_final is then 0 for this module),
     *  0 when the entity holds at most `at` bytes or the send is a flush,
     *  which is never split. */
    riis_hresult (*send_defer_after)(riis_provider *provider, riis_context *context,
                                     uint64_t at, int *deferred);
    /** Non-zero for a module's flush (an encoder flushes its output there);
     *  0 for the final send and the sends that carry deferred rests. */
    int (*send_is_flush)(riis_provider *provider);

    /* -- since 1.5: virtual directories, trailers ------------------------- */

    /** IMetadataInfo::GetVrPath: the virtual directory the request URL maps
     *  into (a location with physical_path), or the site's root: *path is
     *  its URL path ("/" for the site's root, else without a trailing
     *  "/"), *physical_path its folder. Valid until the request ends;
     *  either output may be NULL. */
    riis_hresult (*context_virtual_directory)(riis_context *context, const char **path,
                                              const char **physical_path);
    /** The path of the location whose configuration applies to the
     *  request ("/" for the site itself); valid until the request ends.
     *  Locations ignore case: the request URL may spell this path, and the
     *  virtual directory's, in another case (compare with strncasecmp). */
    const char *(*context_location_path)(riis_context *context);
    /** IHttpResponse4::GetTrailer: a trailer field's values joined with
     *  ", " (NULL when not set); *length (may be NULL) gets its length. */
    const char *(*response_trailer)(riis_context *context, const char *name, size_t *length);
    /** IHttpResponse4::SetTrailer: a field sent after the body with the
     *  final send (HTTP/2 clients get it; on HTTP/1.1 only in a chunked
     *  body, to a client that sent TE: trailers, for names the response's
     *  Trailer header lists). A field a trailer may not carry (RFC 9110
     *  6.5.1: Content-Length, Content-Type, Host, ...) or a name or value
     *  that is not valid: RIIS_E_INVALIDARG. */
    riis_hresult (*response_set_trailer)(riis_context *context, const char *name,
                                         const char *value, int replace);
    /** IHttpResponse4::DeleteTrailer. */
    riis_hresult (*response_delete_trailer)(riis_context *context, const char *name);

    /* -- since 1.6: full duplex -------------------------------------------- */

    /** IHttpContext3::EnableFullDuplex: from now on, a module that returns
     *  RIIS_STATUS_PENDING with a body read started keeps that read under
     *  way while it sends and is woken by other news: an asynchronous
     *  response_flush may go with the read in the same call (its
     *  completion, RIIS_OPERATION_WRITE, comes first), and the module's
     *  own thread may call post_completion or indicate_completion once
     *  before its next call. Each completion's `operation` says which it
     *  is; the read's (RIIS_OPERATION_READ) has its bytes in the read's
     *  buffer. A second read while one is under way: RIIS_E_INVALIDARG.
     *  A Pending with no read under way is an ordinary one (its operation
     *  completes it, or the signal it owes). Without full duplex a call
     *  starts one operation: a read after an asynchronous flush of the same
     *  call is refused, and a flush after a read is made before the read,
     *  which has the call's only completion.
     *  Returning anything but RIIS_STATUS_PENDING gives the read up (its
     *  bytes stay for the next reader). Such a signal is not owed, as the
     *  one after a Pending without an operation is: when the request ends
     *  while the module waits (the client left, timeouts.execution), the
     *  instance is disposed at once, and a thread of the module that may
     *  still signal must be stopped in dispose (its signal then fails with
     *  RIIS_E_INVALID_STATE). */
    riis_hresult (*context_enable_full_duplex)(riis_context *context);

    /* -- since 1.7 ----------------------------------------------------------- */

    /** raise_custom_notification and raise_global_custom_notification with
     *  `flags` (RIIS_CUSTOM_*) that say what `data` is, so that receivers
     *  need not look at it. */
    riis_hresult (*raise_custom_notification_with_flags)(riis_context *context,
                                                         const char *type_name, void *data,
                                                         uint32_t flags);
    riis_hresult (*raise_global_custom_notification_with_flags)(riis_context *context,
                                                                const char *type_name,
                                                                void *data, uint32_t flags);
    /** The raiser's flags (0 from the calls without them, and from Rust
     *  modules). */
    uint32_t (*custom_flags)(riis_provider *provider);
    uint32_t (*global_custom_flags)(riis_global_provider *provider);

    /* -- since 1.8 ----------------------------------------------------------- */

    /** Calls `delivered(data, body_bytes, whole)` once the connection is
     *  done with this request's response: when its last byte went to the
     *  socket, or the client left, a timeout ended the exchange, or the
     *  server stopped. `body_bytes` counts the entity bytes the connection
     *  took (not the head); `whole` is 1 when all of the response went. The
     *  call is made exactly once, also for a response that never reached a
     *  connection (0 bytes, not whole), on a server thread, after the
     *  request's pipeline (often after the instance's dispose): `data` must
     *  outlive it and be usable from another thread, and the call should be
     *  quick. From a child request it is for the client's response. What
     *  an access log needs: IIS logs once HTTP.sys has sent the response. */
    riis_hresult (*context_on_response_delivered)(riis_context *context,
                                                  riis_delivered_fn delivered, void *data);

    /* -- since 1.9: the application's container ----------------------------- */

    /** ApplicationStart / ApplicationStop: this module's pointer in the
     *  site's container, the one its requests reach with
     *  module_context(context, RIIS_SCOPE_SITE), or NULL. */
    void *(*global_application_module_context)(riis_global_provider *provider);
    /** ApplicationStart / ApplicationStop: stores `data` in this module's
     *  slot of the site's container, as set_module_context does at
     *  RIIS_SCOPE_SITE: once (a second store fails with
     *  RIIS_E_ALREADY_ASSIGNED), never NULL, `cleanup` run once when the
     *  configuration ends and never on failure. IIS modules keep their
     *  application-wide state there from OnGlobalApplicationStart. A reload
     *  starts the sites again with empty containers. */
    riis_hresult (*global_application_set_module_context)(riis_global_provider *provider,
                                                          void *data,
                                                          void (*cleanup)(void *data));

    /** set_user for a user whose module answers IsInRole itself (IIS asks
     *  the module's IHttpUser): `is_in_role(data, role)` is asked, for the
     *  roles `roles` does not list, whenever a module or the server checks
     *  one (URL authorization), on any thread, while anything holds the
     *  user; it returns non-zero for "in the role". `release(data)` (may be
     *  NULL) is called once when nothing holds the user any more. On
     *  failure neither is ever called. */
    riis_hresult (*set_user_with_role_check)(riis_context *context, const char *name,
                                             const char *authentication_type,
                                             const char *const *roles, size_t role_count,
                                             riis_role_check_fn is_in_role, void *data,
                                             void (*release)(void *data));
    /** The `data` the request's user was set with through
     *  set_user_with_role_check with this very `is_in_role`, or NULL: a
     *  module finds its own user object again (IIS's GetUser returns the
     *  object SetUser was given). */
    void *(*user_role_check_data)(riis_context *context, riis_role_check_fn is_in_role);

    /* -- since 1.10: the client's connection -------------------------------- */

    /** IHttpConnection::IsConnected: 1 while the client may still take this
     *  request's response, 0 once its connection closed or the server
     *  learned that the client left this request (a send or a body read
     *  failed for that, or a wait was given up; for HTTP/2, the stream's
     *  reset). A client that left unnoticed still counts as connected until
     *  the server next touches its connection.
     *  Unlike other context functions it may also be called from the
     *  module's own thread, while the module holds the request Pending (or
     *  a call of it runs): 0 then too once the request stopped waiting for
     *  the module (its client left, a timeout ran out) or ended. A thread
     *  that produces a long answer asks it to learn when to stop. */
    int (*connection_is_connected)(riis_context *context);

    /* -- since 1.11: logging from anywhere ---------------------------------- */

    /** During RegisterModule: a log source standing for this module, for
     *  log_from_source; valid for the life of the process. Keep it per
     *  registration (in the factory's or global module's user_data), not
     *  in a global of the library: a library listed under two names is
     *  registered twice and has one set of globals. 0 for a registration
     *  that is not the one running. */
    uint32_t (*registration_log_source)(riis_registration *registration);
    /** Writes a line to the server log tagged with the module a
     *  registration_log_source named, from any thread, at any time: lines
     *  of a module's own threads then name it (log with a NULL context
     *  tells the module only during its RegisterModule, factory,
     *  notifications and Terminate). Source 0, or
     *  one the server never gave, is tagged "native module". Control
     *  characters in `message` are escaped (`\n`), here and in log. */
    void (*log_from_source)(uint32_t source, uint32_t level, const char *message);

    /* -- since 1.12: checked sections --------------------------------------- */

    /** During RegisterModule, after declare_section: the only keys the
     *  section may hold (`count` names). Any other key, at server, site or
     *  location level, is then a configuration error naming its file, line
     *  and key, and the keys listed: without it a misspelt key
     *  (`enabeld = true`) reads as missing and `check-config` passes it.
     *  Only the section's own keys are checked (a key holding a table is
     *  not looked into; a name with a `.` is refused); a second call
     *  replaces the list; `count` 0 refuses every key; at most 4,096. */
    riis_hresult (*declare_section_keys)(riis_registration *registration, uint32_t section,
                                         const char *const *keys, size_t count);
} riis_api;

/** The entry point every module library exports. */
typedef riis_hresult (*riis_register_module_fn)(uint32_t server_version,
                                                riis_registration *registration,
                                                const riis_server *server);

#ifdef __cplusplus
}
#endif

#endif /* RIIS_MODULE_H */
