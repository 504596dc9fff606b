/*
 * httpserv.h - the IIS native module interface (C++), for riis on Linux.
 *
 * A module written the way the IIS documentation writes them
 *
 *     #define _WINSOCKAPI_
 *     #include <windows.h>
 *     #include <sal.h>
 *     #include <httpserv.h>
 *
 *     class CMyModule : public CHttpModule { ... OnBeginRequest ... };
 *     class CMyFactory : public IHttpModuleFactory { ... };
 *     HRESULT __stdcall RegisterModule(DWORD dwServerVersion,
 *                                      IHttpModuleRegistrationInfo *pModuleInfo,
 *                                      IHttpServer *pGlobalInfo) { ... }
 *
 * builds unchanged with
 *
 *     g++ -shared -fPIC -I include -o libmine.so mine.cpp
 *
 * and is listed in riis.toml under [[global_modules]].
 *
 * This header is riis's own; it is not Microsoft's. It declares the IIS
 * names (classes, methods, parameter order, constants) and implements them,
 * header-only, on top of the riis C ABI (riis_module.h). The library needs
 * nothing at link time: every server function comes through the
 * `riis_api` table the server hands over at registration.
 *
 * HOW IT CONNECTS
 *   The header defines (weak, so any number of translation units may include
 *   it) the exported function `riis_cxx_register_module`. The riis loader
 *   calls it instead of RegisterModule when it is present (a version script
 *   that limits exports must keep it, with RegisterModule and
 *   riis_module_abi: without it the loader takes RegisterModule for the C
 *   entry point); it records the
 *   server's function table, wraps the registration in an
 *   IHttpModuleRegistrationInfo and calls the module's RegisterModule, which
 *   the header declares extern "C" so the IIS-style definition gets an
 *   undecorated name. Each factory and global module the module registers is
 *   wrapped in the C structures of riis_module.h; each module instance is
 *   wrapped in an adapter that owns the IHttpContext (and its request,
 *   response and user objects) for the instance's request, so the
 *   IHttpContext pointer a module receives stays the same for every call of
 *   the request, and may be kept for IndicateCompletion / PostCompletion
 *   from another thread.
 *
 * STRINGS: UTF-8 WHERE IIS HAS UTF-16
 *   riis is UTF-8 throughout. Every IIS method that returns a wide string
 *   (PCWSTR) returns a UTF-8 `PCSTR` here instead: GetName, GetSiteName,
 *   GetUserName, GetAuthenticationType, QueryNotificationType, GetUrl and
 *   GetPhysicalPath of IMapPathProvider, GetScriptName, GetPhysicalPath,
 *   GetApplicationPhysicalPath, GetFileName, ... Code comparing such a value
 *   with L"..." must compare with "..." instead (strcmp). Every IIS method
 *   that takes a wide string takes a UTF-8 PCSTR, and also has an overload
 *   taking PCWSTR (wchar_t, converted to UTF-8), so calls with L"..."
 *   literals compile unchanged: SetPriorityForRequestNotification,
 *   SetServerVariable, SetUrl, SetErrorDescription, MapPath, IsInRole,
 *   SetPhysicalPath, ReportUnhealthy. GetServerVariable keeps both IIS
 *   overloads (PCSTR* and PCWSTR*; the wide copy lives in request memory).
 *   The PRIORITY_ALIAS_* macros are plain "..." strings. A module that
 *   implements IHttpUser or ICustomNotificationProvider returns PCSTR from
 *   the methods that return PCWSTR in IIS.
 *
 * WHAT COMPLETES WHEN
 *   - WriteEntityChunks copies the data (memory chunks; file chunks are
 *     duplicated descriptors) and always completes at once, also with
 *     fAsync = TRUE: *pcbSent receives the bytes written and
 *     *pfCompletionExpected is FALSE, so the module does not return
 *     RQ_NOTIFICATION_PENDING for it. fMoreData is accepted and has no
 *     effect (the body stays open until the request ends or is flushed).
 *   - Flush(TRUE, ...) sends when the module returns: *pcbSent is 0 and
 *     *pfCompletionExpected is TRUE; return RQ_NOTIFICATION_PENDING and
 *     OnAsyncCompletion receives the bytes sent. Flush(FALSE, ...) also sends
 *     when the module returns (riis never blocks a module on the network):
 *     *pcbSent is 0 and no completion follows.
 *   - ReadEntityBody reads asynchronously only: with fAsync = FALSE it
 *     returns HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED). With fAsync = TRUE it
 *     sets *pfCompletionPending = TRUE; return RQ_NOTIFICATION_PENDING and
 *     OnAsyncCompletion receives the byte count (the bytes are then in the
 *     buffer, which must stay valid until then). At the end of the body the
 *     completion has 0 bytes and the status
 *     HRESULT_FROM_WIN32(ERROR_HANDLE_EOF), as in IIS; a ReadEntityBody
 *     after that fails at once with the same HRESULT.
 *   - ExecuteRequest runs the child when the module returns: fAsync must be
 *     TRUE (FALSE gives HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED)),
 *     *pfCompletionExpected is TRUE, return RQ_NOTIFICATION_PENDING and
 *     OnAsyncCompletion follows when the child ends. Without pHttpUser the
 *     child runs its AuthenticateRequest, starting from the parent's user;
 *     with one it runs as that user (its name and authentication type) and
 *     skips authentication, as in IIS (needs a riis with ABI 1.2). Of the
 *     EXECUTE_FLAG_* values, NO_HEADERS,
 *     BUFFER_RESPONSE, DISABLE_CUSTOM_ERROR and SAME_URL are honoured. A
 *     child whose URL is the parent's needs SAME_URL: without it,
 *     ExecuteRequest fails with E_INVALIDARG (a loop guard).
 *     CloneContext copies method, URL, headers and user whatever the
 *     CLONE_FLAG_* values, but for CLONE_FLAG_NO_PRECONDITION, which leaves
 *     the If-* and Range headers out.
 *   - After IHttpContext3::EnableFullDuplex, a ReadEntityBody stays under
 *     way while the module writes, flushes (asynchronously) and is woken by
 *     PostCompletion from its own thread; each completes on its own, and
 *     IHttpCompletionInfo2::GetCompletedOperation tells them apart. Without
 *     it, a read and an asynchronous flush of one call complete once: the
 *     flush is made first, and the completion is the read's.
 *   - NotifyCustomNotification delivers synchronously:
 *     *pfCompletionExpected is FALSE.
 *   - IndicateCompletion and PostCompletion may be called from any thread
 *     after the module returned RQ_NOTIFICATION_PENDING (riis_module.h,
 *     THREADS), and that thread may write the response before (SetStatus,
 *     SetHeader, DeleteHeader, WriteEntityChunks from memory, Clear,
 *     ClearHeaders: made on the request's thread when it resumes); every
 *     other method only during a call, on its thread. Signal once per
 *     Pending. The first signal may end the request, and the module
 *     instance and its IHttpContext are deleted with it (as in IIS): a
 *     second IndicateCompletion, or any call on that context after the
 *     signal, is a use of freed memory and may crash the server. (A C
 *     module that signals twice gets 0x8007139F instead, since its context
 *     is a handle the server checks.)
 *
 * CUSTOM NOTIFICATIONS
 *   A module raises one as in IIS: it derives a class from
 *   ICustomNotificationProvider (QueryNotificationType returns the type name,
 *   UTF-8) and passes an object to IHttpContext::NotifyCustomNotification
 *   (RQ_CUSTOM_NOTIFICATION) or IHttpServer::NotifyCustomNotification
 *   (GL_CUSTOM_NOTIFICATION; only during a call for a request, whose context
 *   riis needs). Unlike IIS, the raising module's own
 *   OnCustomRequestNotification is not called for it: a module that handles
 *   what it raises calls its handler itself, after NotifyCustomNotification. The header raises it with the type name and, as the C
 *   `data`, the address of a small envelope (riis_cxx::CustomEnvelope: an
 *   8-byte magic then the object pointer). A C++ receiver finds the magic
 *   and gets the very object the raiser passed, so it can cast it to the
 *   raiser's class as in IIS. The envelope is flagged as such
 *   (RIIS_CUSTOM_CXX_ENVELOPE), so a notification raised by a C or Rust
 *   module reaches C++ receivers as a CRiisCustomNotification, its data
 *   never read: QueryNotificationType is the raiser's type name and
 *   GetData() its data pointer, whatever it is. (From a module built for an
 *   ABI before 1.7, which could not say, the data is looked at as before:
 *   see RIIS_CUSTOM_UNDECLARED.)
 *
 * MODULE CONTEXTS
 *   IHttpContext::GetModuleContextContainer is the request's container,
 *   IHttpConnection's the connection's, IHttpSite's (and IHttpApplication's,
 *   riis having one application per site) the site's. SetModuleContext
 *   stores the IHttpStoredContext; riis calls its CleanupStoredContext
 *   exactly once when the scope ends. As in IIS, SetModuleContext fails with
 *   HRESULT_FROM_WIN32(ERROR_ALREADY_ASSIGNED) when the module already
 *   stored one in that container. The HTTP_MODULE_ID argument is accepted;
 *   a module always reaches its own slot.
 *
 * EXCEPTIONS
 *   No exception crosses into the server. One escaping a request
 *   notification logs the error and fails the request: the response is
 *   cleared and gets 500 "Internal Server Error" (or, when the headers are
 *   already sent, the connection closes), and the notification returns
 *   RQ_NOTIFICATION_FINISH_REQUEST. One escaping a global notification is
 *   logged and the notification returns GL_NOTIFICATION_CONTINUE; in
 *   PreBeginRequest the response is also cleared and set to 500, and that
 *   error status ends the request there (as any error status a global
 *   module sets in PreBeginRequest does): BeginRequest's modules and the
 *   handler do not run, LogRequest and EndRequest do. GetHttpModule
 *   throwing std::bad_alloc counts as E_OUTOFMEMORY, RegisterModule throwing
 *   as E_FAIL. The header also builds with -fno-exceptions.
 *
 * NOT AVAILABLE
 *   riis has no HTTP Server API structures, kernel cache, Windows tokens,
 *   performance counters, file/URL/metadata caches or trace contexts:
 *   GetRawHttpRequest/Response, GetCachePolicy,
 *   GetHeaderChanges, GetServerVarChanges, GetTraceContext, GetUrlInfo,
 *   GetScriptMap, GetFileInfo, GetNextNotification, MapHandler,
 *   IHttpServer::GetExtendedInterface (HttpGetExtendedInterface gives
 *   IHttpResponse4, IHttpContext3 and IHttpCompletionInfo2 only) and IHttpServer's cache, file and worker-process
 *   methods are not declared, or return NULL / E_NOTIMPL where noted.
 *   IMapHandlerProvider's setters return HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED)
 *   (use handler mappings in riis.toml). CGlobalModule has no
 *   OnGlobalApplicationResolveModules or OnGlobalApplicationPreload (riis
 *   raises neither).
 *   IMetadataInfo (GetMetadata) has GetMetaPath and GetVrPath only: no
 *   GetVrToken (no Windows tokens) and no GetModuleContextContainer (riis
 *   keeps no container per configuration path).
 *   IAuthenticationProvider::SetUser(pUser) copies the name and type for
 *   logs and server variables; for roles the server asks pUser's IsInRole,
 *   as IIS does (the riis overload that takes a list of roles answers for
 *   those without asking). DisableNotifications
 *   works (the adapter stops calling the instance for those notifications).
 *
 * RIIS ADDITIONS (not in IIS)
 *   IHttpContext::GetRiisContext(),
 *   IHttpModuleRegistrationInfo::GetRiisRegistration() and RiisApi() give
 *   the C ABI for what IIS has no method for: configuration sections
 *   (RiisApi()->declare_section(pModuleInfo->GetRiisRegistration(), ...)
 *   in RegisterModule, RiisApi()->config_value(pHttpContext->
 *   GetRiisContext(), ...) per request), the log;
 *   IHttpRequest::GetUrl / GetQueryString; IHttpResponse::GetHeadersSent /
 *   SetTrySkipCustomErrors; ISendResponseProvider::GetIsFinalSend,
 *   DeferAfter and GetIsFlush (a body transformed a piece at a time; the
 *   entity is read and replaced through RiisApi()->response_entity_chunk
 *   and response_set_entity_chunks with GetRiisContext());
 *   IAuthenticationProvider::SetUser with roles; IHttpServer::GetServerSoftware
 *   / Log; CRiisCustomNotification; IGlobalTraceEventProvider::GetRiisEvent;
 *   ICacheProvider::GetCacheEntrySize; how a response's delivery ended
 *   (RiisApi()->context_on_response_delivered(pHttpContext->
 *   GetRiisContext(), fn, data), for an access log).
 */
#ifndef RIIS_HTTPSERV_H
#define RIIS_HTTPSERV_H

#ifndef __cplusplus
#error "httpserv.h is C++; C modules include riis_module.h"
#endif

#include "windows.h"
#include "riis_module.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <atomic>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#define RIIS_CXX_EXCEPTIONS 1
#include <exception>
#else
#define RIIS_CXX_EXCEPTIONS 0
#endif

/* ============================================================= constants */

/* Request notifications (RQ_*), the same bits as riis_module.h. */
#define RQ_BEGIN_REQUEST RIIS_RQ_BEGIN_REQUEST
#define RQ_AUTHENTICATE_REQUEST RIIS_RQ_AUTHENTICATE_REQUEST
#define RQ_AUTHORIZE_REQUEST RIIS_RQ_AUTHORIZE_REQUEST
#define RQ_RESOLVE_REQUEST_CACHE RIIS_RQ_RESOLVE_REQUEST_CACHE
#define RQ_MAP_REQUEST_HANDLER RIIS_RQ_MAP_REQUEST_HANDLER
#define RQ_ACQUIRE_REQUEST_STATE RIIS_RQ_ACQUIRE_REQUEST_STATE
#define RQ_PRE_EXECUTE_REQUEST_HANDLER RIIS_RQ_PRE_EXECUTE_REQUEST_HANDLER
#define RQ_EXECUTE_REQUEST_HANDLER RIIS_RQ_EXECUTE_REQUEST_HANDLER
#define RQ_RELEASE_REQUEST_STATE RIIS_RQ_RELEASE_REQUEST_STATE
#define RQ_UPDATE_REQUEST_CACHE RIIS_RQ_UPDATE_REQUEST_CACHE
#define RQ_LOG_REQUEST RIIS_RQ_LOG_REQUEST
#define RQ_END_REQUEST RIIS_RQ_END_REQUEST
#define RQ_CUSTOM_NOTIFICATION RIIS_RQ_CUSTOM_NOTIFICATION
#define RQ_SEND_RESPONSE RIIS_RQ_SEND_RESPONSE
#define RQ_READ_ENTITY RIIS_RQ_READ_ENTITY
#define RQ_MAP_PATH RIIS_RQ_MAP_PATH

/* Global notifications (GL_*). */
#define GL_STOP_LISTENING RIIS_GL_STOP_LISTENING
#define GL_CACHE_CLEANUP RIIS_GL_CACHE_CLEANUP
#define GL_CACHE_OPERATION RIIS_GL_CACHE_OPERATION
#define GL_HEALTH_CHECK RIIS_GL_HEALTH_CHECK
#define GL_CONFIGURATION_CHANGE RIIS_GL_CONFIGURATION_CHANGE
#define GL_FILE_CHANGE RIIS_GL_FILE_CHANGE
#define GL_PRE_BEGIN_REQUEST RIIS_GL_PRE_BEGIN_REQUEST
#define GL_APPLICATION_START RIIS_GL_APPLICATION_START
#define GL_APPLICATION_RESOLVE_MODULES RIIS_GL_APPLICATION_RESOLVE_MODULES
#define GL_APPLICATION_STOP RIIS_GL_APPLICATION_STOP
#define GL_RSCA_QUERY RIIS_GL_RSCA_QUERY
#define GL_TRACE_EVENT RIIS_GL_TRACE_EVENT
#define GL_CUSTOM_NOTIFICATION RIIS_GL_CUSTOM_NOTIFICATION
#define GL_THREAD_CLEANUP RIIS_GL_THREAD_CLEANUP
#define GL_APPLICATION_PRELOAD RIIS_GL_APPLICATION_PRELOAD

/** What a request notification returns. */
enum REQUEST_NOTIFICATION_STATUS {
    RQ_NOTIFICATION_CONTINUE = 0,
    RQ_NOTIFICATION_PENDING = 1,
    RQ_NOTIFICATION_FINISH_REQUEST = 2
};

/** What a global notification returns. */
enum GLOBAL_NOTIFICATION_STATUS {
    GL_NOTIFICATION_CONTINUE = 0,
    GL_NOTIFICATION_HANDLED = 1
};

/* Priority aliases: UTF-8 here (IIS has L"..."); both string kinds are
 * accepted by the SetPriorityFor* methods. */
#define PRIORITY_ALIAS_FIRST RIIS_PRIORITY_FIRST
#define PRIORITY_ALIAS_HIGH RIIS_PRIORITY_HIGH
#define PRIORITY_ALIAS_MEDIUM RIIS_PRIORITY_MEDIUM
#define PRIORITY_ALIAS_LOW RIIS_PRIORITY_LOW
#define PRIORITY_ALIAS_LAST RIIS_PRIORITY_LAST

/** The operation of a GL_CACHE_OPERATION notification. */
enum CACHE_OPERATION {
    CACHE_OPERATION_RETRIEVE = 0,
    CACHE_OPERATION_ADD = 1,
    CACHE_OPERATION_DELETE = 2,
    CACHE_OPERATION_FLUSH_PREFIX = 3,
    CACHE_OPERATION_ENUM = 4
};

/** A module's identity (IHttpModuleRegistrationInfo::GetId). */
typedef VOID *HTTP_MODULE_ID;

/* CloneContext flags. riis always copies method, URL, headers and user;
 * NO_PRECONDITION leaves the If-* and Range headers out of the clone. */
#define CLONE_FLAG_BASICS 0x01
#define CLONE_FLAG_HEADERS 0x02
#define CLONE_FLAG_ENTITY 0x04
#define CLONE_FLAG_NO_PRECONDITION 0x08
#define CLONE_FLAG_NO_DAV 0x10

/* ExecuteRequest flags, with the IIS values (riis's RIIS_EXECUTE_FLAG_* use
 * the same bits). NO_HEADERS, DISABLE_CUSTOM_ERROR, SAME_URL and
 * BUFFER_RESPONSE are honoured; the others are ignored. */
#define EXECUTE_FLAG_NONE 0x00
#define EXECUTE_FLAG_NO_HEADERS 0x01
#define EXECUTE_FLAG_IGNORE_CURRENT_INTERCEPTOR 0x02
#define EXECUTE_FLAG_IGNORE_APPPOOL 0x04
#define EXECUTE_FLAG_DISABLE_CUSTOM_ERROR 0x08
#define EXECUTE_FLAG_SAME_URL 0x10
#define EXECUTE_FLAG_BUFFER_RESPONSE 0x20
#define EXECUTE_FLAG_HTTP_CACHE_ELIGIBLE 0x40

/* ISendResponseProvider flags (HTTP_SEND_RESPONSE_FLAG_*): riis acts on
 * DISCONNECT and MORE_DATA. */
#ifndef HTTP_SEND_RESPONSE_FLAG_DISCONNECT
#define HTTP_SEND_RESPONSE_FLAG_DISCONNECT 0x00000001
#define HTTP_SEND_RESPONSE_FLAG_MORE_DATA 0x00000002
#define HTTP_SEND_RESPONSE_FLAG_BUFFER_DATA 0x00000004
#define HTTP_SEND_RESPONSE_FLAG_ENABLE_NAGLING 0x00000008
#endif

#define HTTP_USER_VARIABLE_SID "SID"
#define HTTP_USER_VARIABLE_CTXT_HANDLE "CtxtHandle"
#define HTTP_USER_VARIABLE_CRED_HANDLE "CredHandle"

#define MODULE_REGISTERMODULE "RegisterModule"

/* ======================================================== HTTP API types */

#ifndef RIIS_HTTP_TYPES_DEFINED
#define RIIS_HTTP_TYPES_DEFINED

/** Socket addresses, as GetLocalAddress / GetRemoteAddress return them
 *  (SOCKADDR_IN, SOCKADDR_IN6, ... as winsock2.h names them). */
#include "winsock2.h"

/**
 * HTTP_HEADER_ID: the known headers. Request and response ids share the
 * values 0 to 19 (general and entity headers); from 20 on, the same number
 * names a request header for IHttpRequest methods and a response header for
 * IHttpResponse methods.
 */
typedef enum _HTTP_HEADER_ID {
    HttpHeaderCacheControl = 0,
    HttpHeaderConnection = 1,
    HttpHeaderDate = 2,
    HttpHeaderKeepAlive = 3,
    HttpHeaderPragma = 4,
    HttpHeaderTrailer = 5,
    HttpHeaderTransferEncoding = 6,
    HttpHeaderUpgrade = 7,
    HttpHeaderVia = 8,
    HttpHeaderWarning = 9,
    HttpHeaderAllow = 10,
    HttpHeaderContentLength = 11,
    HttpHeaderContentType = 12,
    HttpHeaderContentEncoding = 13,
    HttpHeaderContentLanguage = 14,
    HttpHeaderContentLocation = 15,
    HttpHeaderContentMd5 = 16,
    HttpHeaderContentRange = 17,
    HttpHeaderExpires = 18,
    HttpHeaderLastModified = 19,

    /* request headers */
    HttpHeaderAccept = 20,
    HttpHeaderAcceptCharset = 21,
    HttpHeaderAcceptEncoding = 22,
    HttpHeaderAcceptLanguage = 23,
    HttpHeaderAuthorization = 24,
    HttpHeaderCookie = 25,
    HttpHeaderExpect = 26,
    HttpHeaderFrom = 27,
    HttpHeaderHost = 28,
    HttpHeaderIfMatch = 29,
    HttpHeaderIfModifiedSince = 30,
    HttpHeaderIfNoneMatch = 31,
    HttpHeaderIfRange = 32,
    HttpHeaderIfUnmodifiedSince = 33,
    HttpHeaderMaxForwards = 34,
    HttpHeaderProxyAuthorization = 35,
    HttpHeaderReferer = 36,
    HttpHeaderRange = 37,
    HttpHeaderTe = 38,
    HttpHeaderTranslate = 39,
    HttpHeaderUserAgent = 40,
    HttpHeaderRequestMaximum = 41,

    /* response headers */
    HttpHeaderAcceptRanges = 20,
    HttpHeaderAge = 21,
    HttpHeaderEtag = 22,
    HttpHeaderLocation = 23,
    HttpHeaderProxyAuthenticate = 24,
    HttpHeaderRetryAfter = 25,
    HttpHeaderServer = 26,
    HttpHeaderSetCookie = 27,
    HttpHeaderVary = 28,
    HttpHeaderWwwAuthenticate = 29,
    HttpHeaderResponseMaximum = 30,

    HttpHeaderMaximum = 41
} HTTP_HEADER_ID, *PHTTP_HEADER_ID;

/** HTTP_DATA_CHUNK_TYPE: riis supports memory and file-descriptor chunks. */
typedef enum _HTTP_DATA_CHUNK_TYPE {
    HttpDataChunkFromMemory = 0,
    HttpDataChunkFromFileHandle = 1,
    HttpDataChunkFromFragmentCache = 2,
    HttpDataChunkFromFragmentCacheEx = 3,
    HttpDataChunkMaximum = 4
} HTTP_DATA_CHUNK_TYPE, *PHTTP_DATA_CHUNK_TYPE;

/** A byte range of a file chunk; Length HTTP_BYTE_RANGE_TO_EOF means to the
 *  end of the file. */
typedef struct _HTTP_BYTE_RANGE {
    ULARGE_INTEGER StartingOffset;
    ULARGE_INTEGER Length;
} HTTP_BYTE_RANGE, *PHTTP_BYTE_RANGE;

#define HTTP_BYTE_RANGE_TO_EOF ((ULONGLONG)-1)

/**
 * HTTP_DATA_CHUNK. On Linux, FromFileHandle.FileHandle is a file descriptor
 * (an int); riis duplicates it, so the module may close its own after the
 * call. Fragment-cache chunks are declared for source compatibility and
 * refused with HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED).
 */
typedef struct _HTTP_DATA_CHUNK {
    HTTP_DATA_CHUNK_TYPE DataChunkType;
    union {
        struct {
            PVOID pBuffer;
            ULONG BufferLength;
        } FromMemory;
        struct {
            HTTP_BYTE_RANGE ByteRange;
            int FileHandle;
        } FromFileHandle;
        struct {
            USHORT FragmentNameLength;
            PCWSTR pFragmentName;
        } FromFragmentCache;
        struct {
            HTTP_BYTE_RANGE ByteRange;
            PCWSTR pFragmentName;
        } FromFragmentCacheEx;
    };
} HTTP_DATA_CHUNK, *PHTTP_DATA_CHUNK;

/*
 * HTTP_SSL_CLIENT_CERT_INFO, as IHttpRequest::GetClientCertificate gives
 * it: pCertEncoded is the certificate's DER (CertEncodedSize bytes), in the
 * request's memory. CertFlags is 0: riis verified the chain in the
 * handshake, and a certificate that failed never reaches a request. Token
 * is NULL (no Windows accounts) and CertDeniedByMapper FALSE.
 */
typedef struct _HTTP_SSL_CLIENT_CERT_INFO {
    ULONG CertFlags;
    ULONG CertEncodedSize;
    PUCHAR pCertEncoded;
    HANDLE Token;
    BOOLEAN CertDeniedByMapper;
} HTTP_SSL_CLIENT_CERT_INFO, *PHTTP_SSL_CLIENT_CERT_INFO;

#endif /* RIIS_HTTP_TYPES_DEFINED */

/* Declared for signatures only; riis has no such objects. */
class IAppHostConfigException;
class IHttpPerfCounterInfo;
class IHttpTraceContext;
class IHttpCacheSpecificData;
class IHttpFileMonitor;
class IHttpFileInfo;
class IScriptMapInfo;
struct HTTP_TRACE_EVENT;

/* ==================================================== internal utilities */

class IHttpServer;
class IHttpContext;
class ICustomNotificationProvider;

/** The helpers behind the IIS classes; not part of the IIS interface. */
#pragma GCC visibility push(hidden)
namespace riis_cxx {

/** The server's function table, recorded at registration. */
inline const riis_api *&api_slot() {
    static const riis_api *api = NULL;
    return api;
}

/** The server software's name, copied at registration (the server's
 *  string is only promised for the length of that call). */
inline char (&software_slot())[128] {
    static char software[128] = "riis";
    return software;
}

inline const riis_api *api() { return api_slot(); }

/** Sets a thread's "current" pointer (`slot`) for the length of a call and
 *  puts the one before it back after (calls nest). */
template <typename T, T *&(*slot)()> class ThreadValueScope {
public:
    explicit ThreadValueScope(T *value) : previous_(slot()) { slot() = value; }
    ~ThreadValueScope() { slot() = previous_; }

private:
    T *previous_;
    ThreadValueScope(const ThreadValueScope &);
    ThreadValueScope &operator=(const ThreadValueScope &);
};

/** The ApplicationStart or ApplicationStop call running on this thread:
 *  its provider and site, so the site's application container reaches the
 *  site's container through the provider (riis_api 1.9). */
struct ApplicationCall {
    riis_global_provider *provider;
    uint32_t site_id;
    const char *site_name;
};

inline ApplicationCall *&current_application_call() {
    static __thread ApplicationCall *current = NULL;
    return current;
}

typedef ThreadValueScope<ApplicationCall, current_application_call> ApplicationCallScope;

/** The request context of the call running on this thread (for the methods
 *  IIS offers without a context, such as IHttpServer::NotifyCustomNotification). */
inline riis_context *&current_context() {
    static __thread riis_context *current = NULL;
    return current;
}

typedef ThreadValueScope<riis_context, current_context> CurrentContextScope;

/** A line in the server log, tagged with the module's name (through the
 *  context of the call running on this thread when `ctx` is NULL). */
inline void log(riis_context *ctx, uint32_t level, const char *message) {
    const riis_api *a = api();
    if (a != NULL && a->log != NULL && message != NULL) {
        a->log(ctx != NULL ? ctx : current_context(), level, message);
    }
}

/** Runs `body`; an exception it throws goes to `on_error` with its text. */
template <class Body, class OnError>
inline void guarded(Body body, OnError on_error) {
#if RIIS_CXX_EXCEPTIONS
    try {
        body();
    } catch (const std::bad_alloc &) {
        on_error("out of memory (std::bad_alloc)");
    } catch (const std::exception &e) {
        on_error(e.what());
    } catch (...) {
        on_error("an exception that is not a std::exception");
    }
#else
    (void)on_error;
    body();
#endif
}

/** "Where: what" for log lines, without allocation failures escaping. */
inline void log_exception(riis_context *ctx, const char *where, const char *what) {
    char line[512];
    snprintf(line, sizeof line, "%s threw: %s", where, what ? what : "?");
    log(ctx, RIIS_LOG_ERROR, line);
}

/* ---------------------------------------------------- UTF-8 and wchar_t */

/** Appends code point `c` as UTF-8 (invalid ones as U+FFFD). */
inline void append_utf8(std::string &out, uint32_t c) {
    if (c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
        c = 0xFFFD;
    }
    if (c < 0x80) {
        out += static_cast<char>(c);
    } else if (c < 0x800) {
        out += static_cast<char>(0xC0 | (c >> 6));
        out += static_cast<char>(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        out += static_cast<char>(0xE0 | (c >> 12));
        out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (c & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (c >> 18));
        out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (c & 0x3F));
    }
}

/** A wide string (UTF-32, or UTF-16 where wchar_t has 16 bits) as UTF-8.
 *  `length` (size_t)-1 means up to the NUL. */
inline std::string utf8_from_wide(const wchar_t *s, size_t length = (size_t)-1) {
    std::string out;
    if (s == NULL) {
        return out;
    }
    if (length == (size_t)-1) {
        length = wcslen(s);
    }
    for (size_t i = 0; i < length; i++) {
        uint32_t c = static_cast<uint32_t>(s[i]);
        if (sizeof(wchar_t) == 2 && c >= 0xD800 && c <= 0xDBFF && i + 1 < length) {
            uint32_t low = static_cast<uint32_t>(s[i + 1]);
            if (low >= 0xDC00 && low <= 0xDFFF) {
                c = 0x10000 + ((c - 0xD800) << 10) + (low - 0xDC00);
                i++;
            }
        }
        append_utf8(out, c);
    }
    return out;
}

/** UTF-8 as a wide string (invalid sequences become U+FFFD). */
inline std::wstring wide_from_utf8(const char *s, size_t length = (size_t)-1) {
    std::wstring out;
    if (s == NULL) {
        return out;
    }
    if (length == (size_t)-1) {
        length = strlen(s);
    }
    const unsigned char *p = reinterpret_cast<const unsigned char *>(s);
    size_t i = 0;
    while (i < length) {
        uint32_t c = p[i];
        size_t extra;
        uint32_t min;
        if (c < 0x80) {
            extra = 0;
            min = 0;
        } else if ((c & 0xE0) == 0xC0) {
            extra = 1;
            c &= 0x1F;
            min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            extra = 2;
            c &= 0x0F;
            min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            extra = 3;
            c &= 0x07;
            min = 0x10000;
        } else {
            out += static_cast<wchar_t>(0xFFFD);
            i++;
            continue;
        }
        if (extra > 0 && i + extra >= length) {
            /* truncated sequence at the end */
            out += static_cast<wchar_t>(0xFFFD);
            break;
        }
        bool valid = true;
        for (size_t k = 1; k <= extra; k++) {
            if ((p[i + k] & 0xC0) != 0x80) {
                valid = false;
                break;
            }
            c = (c << 6) | (p[i + k] & 0x3F);
        }
        if (!valid || c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
            out += static_cast<wchar_t>(0xFFFD);
            i++;
            continue;
        }
        i += extra + 1;
        if (sizeof(wchar_t) == 2 && c >= 0x10000) {
            c -= 0x10000;
            out += static_cast<wchar_t>(0xD800 + (c >> 10));
            out += static_cast<wchar_t>(0xDC00 + (c & 0x3FF));
        } else {
            out += static_cast<wchar_t>(c);
        }
    }
    return out;
}

/** A counted string as std::string; a count of 0 means up to the NUL. */
inline std::string counted(const char *s, size_t count) {
    if (s == NULL) {
        return std::string();
    }
    return count == 0 ? std::string(s) : std::string(s, count);
}

/** A length clamped to what a USHORT / DWORD out-parameter holds. */
inline USHORT clamp_ushort(size_t n) { return n > 0xFFFFu ? (USHORT)0xFFFFu : (USHORT)n; }
inline DWORD clamp_dword(uint64_t n) { return n > 0xFFFFFFFFull ? (DWORD)0xFFFFFFFFu : (DWORD)n; }

/* ------------------------------------------------------- header names */

/** The name of a request header id, or NULL. */
inline const char *request_header_name(HTTP_HEADER_ID id) {
    static const char *const names[HttpHeaderRequestMaximum] = {
        "Cache-Control", "Connection", "Date", "Keep-Alive", "Pragma", "Trailer",
        "Transfer-Encoding", "Upgrade", "Via", "Warning", "Allow", "Content-Length",
        "Content-Type", "Content-Encoding", "Content-Language", "Content-Location",
        "Content-MD5", "Content-Range", "Expires", "Last-Modified", "Accept",
        "Accept-Charset", "Accept-Encoding", "Accept-Language", "Authorization", "Cookie",
        "Expect", "From", "Host", "If-Match", "If-Modified-Since", "If-None-Match",
        "If-Range", "If-Unmodified-Since", "Max-Forwards", "Proxy-Authorization", "Referer",
        "Range", "TE", "Translate", "User-Agent"};
    int i = static_cast<int>(id);
    return i >= 0 && i < static_cast<int>(HttpHeaderRequestMaximum) ? names[i] : NULL;
}

/** The name of a response header id, or NULL. */
inline const char *response_header_name(HTTP_HEADER_ID id) {
    static const char *const names[HttpHeaderResponseMaximum] = {
        "Cache-Control", "Connection", "Date", "Keep-Alive", "Pragma", "Trailer",
        "Transfer-Encoding", "Upgrade", "Via", "Warning", "Allow", "Content-Length",
        "Content-Type", "Content-Encoding", "Content-Language", "Content-Location",
        "Content-MD5", "Content-Range", "Expires", "Last-Modified", "Accept-Ranges", "Age",
        "ETag", "Location", "Proxy-Authenticate", "Retry-After", "Server", "Set-Cookie",
        "Vary", "WWW-Authenticate"};
    int i = static_cast<int>(id);
    return i >= 0 && i < static_cast<int>(HttpHeaderResponseMaximum) ? names[i] : NULL;
}

/* ------------------------------------------------ custom notifications */

/** The 8 bytes that start a CustomEnvelope: "riisc++" and a NUL. */
inline const unsigned char *custom_magic() {
    static const unsigned char magic[8] = {'r', 'i', 'i', 's', 'c', '+', '+', 0};
    return magic;
}

/** What a C++ module passes as the C `data` of a custom notification. */
struct CustomEnvelope {
    unsigned char magic[8];
    ICustomNotificationProvider *provider;
};

/** An envelope for `provider`. */
inline CustomEnvelope make_envelope(ICustomNotificationProvider *provider) {
    CustomEnvelope envelope;
    memcpy(envelope.magic, custom_magic(), sizeof envelope.magic);
    envelope.provider = provider;
    return envelope;
}

/** The C++ provider behind `data`, when a C++ module raised it: the
 *  raiser's flags say so (RIIS_CUSTOM_CXX_ENVELOPE), so the data of a C or
 *  Rust raiser (a number cast to a pointer, say) is never read. A raiser
 *  built before 1.7 could not say (RIIS_CUSTOM_UNDECLARED): its data is
 *  looked at as the header of its time did, only where an envelope could
 *  be (aligned, from 64 KiB up). The magic is checked either way. */
inline ICustomNotificationProvider *envelope_provider(void *data, uint32_t flags) {
    if (data == NULL) {
        return NULL;
    }
    if ((flags & RIIS_CUSTOM_CXX_ENVELOPE) == 0) {
        uintptr_t address = reinterpret_cast<uintptr_t>(data);
        if ((flags & RIIS_CUSTOM_UNDECLARED) == 0 || address < 65536 ||
            address % alignof(CustomEnvelope) != 0) {
            return NULL;
        }
    }
    if (memcmp(data, custom_magic(), 8) != 0) {
        return NULL;
    }
    return static_cast<CustomEnvelope *>(data)->provider;
}

} /* namespace riis_cxx */
#pragma GCC visibility pop

/** The riis C ABI's function table (a riis addition): for what IIS has no
 *  method for. NULL before RegisterModule. */
inline const riis_api *RiisApi() { return riis_cxx::api(); }

/* ============================================================ interfaces */

/** What a module stores in a module context container. */
class IHttpStoredContext {
public:
    /** Called exactly once, when the container's scope ends. */
    virtual VOID CleanupStoredContext(VOID) = 0;
    virtual ~IHttpStoredContext() {}
};

/** A container of per-module contexts (request, connection or site). */
class IHttpModuleContextContainer {
public:
    /** The context this module stored, or NULL. */
    virtual IHttpStoredContext *GetModuleContext(IN HTTP_MODULE_ID moduleId) = 0;
    /** Stores a context; HRESULT_FROM_WIN32(ERROR_ALREADY_ASSIGNED) when the
     *  module already stored one here. */
    virtual HRESULT SetModuleContext(IN IHttpStoredContext *ppStoredContext,
                                     IN HTTP_MODULE_ID moduleId) = 0;

protected:
    virtual ~IHttpModuleContextContainer() {}
};

/** Where the request's URL lies (IHttpContext::GetMetadata). */
class IMetadataInfo {
public:
    /** "MACHINE/WEBROOT/APPHOST/<site name>" followed by the path of the
     *  location whose configuration applies to the URL (nothing more when
     *  the site's own configuration does). */
    virtual PCSTR GetMetaPath(VOID) const = 0;
    /** The folder of the virtual directory the URL maps into (a location
     *  with physical_path in riis.toml), or the site's root. */
    virtual PCSTR GetVrPath(VOID) const = 0;

protected:
    virtual ~IMetadataInfo() {}
};

/** The application (in riis: the site's root application). One object per
 *  site for the process's life: a pointer kept from ApplicationStart stays
 *  valid. */
class IHttpApplication {
public:
    virtual PCSTR GetApplicationPhysicalPath(VOID) const = 0;
    /** "/LM/W3SVC/<site id>/ROOT" */
    virtual PCSTR GetApplicationId(VOID) const = 0;
    /** "MACHINE/WEBROOT/APPHOST/<site name>" */
    virtual PCSTR GetAppConfigPath(VOID) const = 0;
    /** The site's container (riis has one application per site), in the
     *  site's requests and in its ApplicationStart and ApplicationStop. */
    virtual IHttpModuleContextContainer *GetModuleContextContainer(VOID) = 0;

protected:
    virtual ~IHttpApplication() {}
};

/** The site of a request. */
class IHttpSite {
public:
    virtual DWORD GetSiteId(VOID) const = 0;
    virtual PCSTR GetSiteName(VOID) const = 0;
    virtual IHttpModuleContextContainer *GetModuleContextContainer(VOID) = 0;
    /** NULL: riis has no performance counters. */
    virtual IHttpPerfCounterInfo *GetPerfCounterInfo(VOID) = 0;

protected:
    virtual ~IHttpSite() {}
};

/** The connection of a request. */
class IHttpConnection {
public:
    /** FALSE once the client has gone (a read or write failed with
     *  ERROR_CONNECTION_ABORTED, or the connection closed under the
     *  request), as on IIS; TRUE until then. */
    virtual BOOL IsConnected(VOID) const = 0;
    /** Memory that lives until the REQUEST ends (riis has no connection
     *  arena). */
    virtual VOID *AllocateMemory(DWORD cbAllocation) = 0;
    virtual IHttpModuleContextContainer *GetModuleContextContainer(VOID) = 0;

protected:
    virtual ~IHttpConnection() {}
};

/**
 * The request's user (UTF-8 strings). IHttpContext::GetUser returns the
 * server's user object, or NULL when no authentication module set one; a
 * custom authentication module implements this class and passes an object
 * to IAuthenticationProvider::SetUser.
 */
class IHttpUser {
public:
    virtual PCSTR GetRemoteUserName(VOID) = 0;
    virtual PCSTR GetUserName(VOID) = 0;
    virtual PCSTR GetAuthenticationType(VOID) = 0;
    virtual PCSTR GetPassword(VOID) = 0;
    virtual HANDLE GetImpersonationToken(VOID) = 0;
    virtual HANDLE GetPrimaryToken(VOID) = 0;
    virtual VOID ReferenceUser(VOID) = 0;
    virtual VOID DereferenceUser(VOID) = 0;
    virtual BOOL SupportsIsInRole(VOID) = 0;
    virtual HRESULT IsInRole(IN PCSTR pszRoleName, OUT BOOL *pfInRole) = 0;
    virtual PVOID GetUserVariable(IN PCSTR pszVariableName) = 0;

    /** IsInRole with a wide role name. */
    HRESULT IsInRole(IN PCWSTR pszRoleName, OUT BOOL *pfInRole) {
        return IsInRole(riis_cxx::utf8_from_wide(pszRoleName).c_str(), pfInRole);
    }

    virtual ~IHttpUser() {}
};

/** The request. Header values are bytes as received (UTF-8 or Latin-1). */
class IHttpRequest {
public:
    /** The value (several joined with ", "), or NULL and *pcchHeaderValue 0
     *  when absent. */
    virtual PCSTR GetHeader(IN PCSTR pszHeaderName,
                            OUT USHORT *pcchHeaderValue = NULL) const = 0;
    virtual PCSTR GetHeader(IN HTTP_HEADER_ID ulHeaderIndex,
                            OUT USHORT *pcchHeaderValue = NULL) const = 0;
    /** Sets (fReplace) or appends a header; cchHeaderValue is the value's
     *  length (0: up to the NUL). */
    virtual HRESULT SetHeader(IN PCSTR pszHeaderName, IN PCSTR pszHeaderValue,
                              IN USHORT cchHeaderValue, IN BOOL fReplace) = 0;
    virtual HRESULT SetHeader(IN HTTP_HEADER_ID ulHeaderIndex, IN PCSTR pszHeaderValue,
                              IN USHORT cchHeaderValue, IN BOOL fReplace) = 0;
    virtual HRESULT DeleteHeader(IN PCSTR pszHeaderName) = 0;
    virtual HRESULT DeleteHeader(IN HTTP_HEADER_ID ulHeaderIndex) = 0;
    virtual PCSTR GetHttpMethod(VOID) const = 0;
    virtual HRESULT SetHttpMethod(IN PCSTR pszHttpMethod) = 0;
    /**
     * Rewrites the URL (path, optionally "?query"); cchUrl 0 means up to the
     * NUL. Without fResetQueryString a URL without "?" keeps the current
     * query. riis allows it in a PreBeginRequest global module, in
     * OnBeginRequest (register it at PRIORITY_ALIAS_FIRST so the modules
     * after yours see the new URL) and on a cloned context.
     */
    virtual HRESULT SetUrl(IN PCSTR pszUrl, IN DWORD cchUrl, IN BOOL fResetQueryString) = 0;
    /** Whether this module changed the URL with SetUrl. */
    virtual BOOL GetUrlChanged(VOID) const = 0;
    /** The local / remote address as a sockaddr_in or sockaddr_in6 (valid
     *  until the request ends), or NULL. */
    virtual PSOCKADDR GetLocalAddress(VOID) const = 0;
    virtual PSOCKADDR GetRemoteAddress(VOID) const = 0;
    /** Asynchronous only (see WHAT COMPLETES WHEN at the top). */
    virtual HRESULT ReadEntityBody(OUT VOID *pvBuffer, IN DWORD cbBuffer, IN BOOL fAsync,
                                   OUT DWORD *pcbBytesReceived,
                                   OUT BOOL *pfCompletionPending = NULL) = 0;
    virtual HRESULT InsertEntityBody(IN VOID *pvBuffer, IN DWORD cbBuffer) = 0;
    /** Bytes of the body not read yet; 0xFFFFFFFF when unknown (chunked). */
    virtual DWORD GetRemainingEntityBytes(VOID) = 0;
    virtual VOID GetHttpVersion(OUT USHORT *pMajorVersion, OUT USHORT *pMinorVersion) const = 0;
    virtual DWORD GetSiteId(VOID) const = 0;
    /** The certificate the client presented in the TLS handshake, or NULL
     *  in *ppClientCertInfo without one; *pfClientCertNegotiated is TRUE
     *  when the handshake asked for one (the site sets
     *  client_certificate_ca). The structure lives until the request ends. */
    virtual HRESULT GetClientCertificate(OUT HTTP_SSL_CLIENT_CERT_INFO **ppClientCertInfo,
                                         OUT BOOL *pfClientCertNegotiated) = 0;
    /** riis asks for a certificate in the handshake of every connection to a
     *  site that sets client_certificate_ca, and never later: there, S_OK
     *  at once (*pfCompletionPending FALSE; the certificate, if the client
     *  has one, is already there); elsewhere
     *  HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED). */
    virtual HRESULT NegotiateClientCertificate(IN BOOL fAsync,
                                               OUT BOOL *pfCompletionPending = NULL) = 0;

    /** riis: the URL path, percent-decoded as riis routes it. */
    virtual PCSTR GetUrl(VOID) const = 0;
    /** riis: the query string without "?" ("" when none). */
    virtual PCSTR GetQueryString(VOID) const = 0;

    /** SetUrl with a wide URL. */
    HRESULT SetUrl(IN PCWSTR pszUrl, IN DWORD cchUrl, IN BOOL fResetQueryString) {
        std::string url = riis_cxx::utf8_from_wide(pszUrl, cchUrl == 0 ? (size_t)-1 : cchUrl);
        return SetUrl(url.c_str(), (DWORD)url.size(), fResetQueryString);
    }

protected:
    virtual ~IHttpRequest() {}
};

/** The response. */
class IHttpResponse {
public:
    /**
     * Sets the status. pszReason NULL gives the standard phrase; uSubStatus
     * and hrErrorToReport show on error pages; fTrySkipCustomErrors asks the
     * custom-error module to leave the response alone. pException is
     * ignored.
     */
    virtual HRESULT SetStatus(IN USHORT statusCode, IN PCSTR pszReason,
                              IN USHORT uSubStatus = 0, IN HRESULT hrErrorToReport = S_OK,
                              IN IAppHostConfigException *pException = NULL,
                              IN BOOL fTrySkipCustomErrors = FALSE) = 0;
    virtual HRESULT SetHeader(IN PCSTR pszHeaderName, IN PCSTR pszHeaderValue,
                              IN USHORT cchHeaderValue, IN BOOL fReplace) = 0;
    virtual HRESULT SetHeader(IN HTTP_HEADER_ID ulHeaderIndex, IN PCSTR pszHeaderValue,
                              IN USHORT cchHeaderValue, IN BOOL fReplace) = 0;
    virtual HRESULT DeleteHeader(IN PCSTR pszHeaderName) = 0;
    virtual HRESULT DeleteHeader(IN HTTP_HEADER_ID ulHeaderIndex) = 0;
    virtual PCSTR GetHeader(IN PCSTR pszHeaderName,
                            OUT USHORT *pcchHeaderValue = NULL) const = 0;
    virtual PCSTR GetHeader(IN HTTP_HEADER_ID ulHeaderIndex,
                            OUT USHORT *pcchHeaderValue = NULL) const = 0;
    /** Clears status, headers and body. */
    virtual VOID Clear(VOID) = 0;
    virtual VOID ClearHeaders(VOID) = 0;
    virtual VOID SetNeedDisconnect(VOID) = 0;
    virtual VOID ResetConnection(VOID) = 0;
    /** No effect: riis has no kernel cache. */
    virtual VOID DisableKernelCache(ULONG reason = 9) = 0;
    /** FALSE. */
    virtual BOOL GetKernelCacheEnabled(VOID) const = 0;
    virtual VOID SuppressHeaders(VOID) = 0;
    /** Whether this module called SuppressHeaders. */
    virtual BOOL GetHeadersSuppressed(VOID) const = 0;
    /** See WHAT COMPLETES WHEN at the top. */
    virtual HRESULT Flush(IN BOOL fAsync, IN BOOL fMoreData, OUT DWORD *pcbSent,
                          OUT BOOL *pfCompletionExpected = NULL) = 0;
    /**
     * Redirects with 302. Without fResetStatusCode a current status of 301,
     * 303, 307 or 308 is kept; fIncludeParameters appends the request's
     * query string.
     */
    virtual HRESULT Redirect(IN PCSTR pszUrl, IN BOOL fResetStatusCode = TRUE,
                             IN BOOL fIncludeParameters = FALSE) = 0;
    /** Appends one chunk (copied, like WriteEntityChunks); lInsertPosition
     *  must be -1. */
    virtual HRESULT WriteEntityChunkByReference(IN HTTP_DATA_CHUNK *pDataChunk,
                                                IN LONG lInsertPosition = -1) = 0;
    /** See WHAT COMPLETES WHEN at the top. */
    virtual HRESULT WriteEntityChunks(IN HTTP_DATA_CHUNK *pDataChunks, IN DWORD nChunks,
                                      IN BOOL fAsync, IN BOOL fMoreData, OUT DWORD *pcbSent,
                                      OUT BOOL *pfCompletionExpected = NULL) = 0;
    virtual VOID DisableBuffering(VOID) = 0;
    /**
     * The status and substatus. riis does not keep the rest: *ppszReason is
     * "", *phrErrorToReport S_OK, *ppszModule NULL, *pdwNotification 0,
     * *ppException NULL, *pfTrySkipCustomErrors FALSE.
     */
    virtual VOID GetStatus(OUT USHORT *pStatusCode, OUT USHORT *pSubStatus = NULL,
                           OUT PCSTR *ppszReason = NULL, OUT USHORT *pcchReason = NULL,
                           OUT HRESULT *phrErrorToReport = NULL, OUT PCSTR *ppszModule = NULL,
                           OUT DWORD *pdwNotification = NULL,
                           OUT IAppHostConfigException **ppException = NULL,
                           OUT BOOL *pfTrySkipCustomErrors = NULL) = 0;
    /** Text for detailed error pages (UTF-8; cchDescription 0 means up to
     *  the NUL). riis always HTML-encodes it. */
    virtual HRESULT SetErrorDescription(IN PCSTR pszDescription, IN DWORD cchDescription,
                                        IN BOOL fHtmlEncode = TRUE) = 0;
    /** The description this module last set ("" when none). */
    virtual PCSTR GetErrorDescription(OUT DWORD *pcchDescription = NULL) = 0;
    /** Closes the connection without a response (as ResetConnection). */
    virtual VOID CloseConnection(VOID) = 0;

    /** riis: whether the status line and headers are already sent. */
    virtual BOOL GetHeadersSent(VOID) const = 0;
    /** riis: the fTrySkipCustomErrors of SetStatus on its own. */
    virtual HRESULT SetTrySkipCustomErrors(IN BOOL fTrySkipCustomErrors) = 0;

    /** SetErrorDescription with a wide description. */
    HRESULT SetErrorDescription(IN PCWSTR pszDescription, IN DWORD cchDescription,
                                IN BOOL fHtmlEncode = TRUE) {
        std::string text = riis_cxx::utf8_from_wide(
            pszDescription, cchDescription == 0 ? (size_t)-1 : cchDescription);
        return SetErrorDescription(text.c_str(), (DWORD)text.size(), fHtmlEncode);
    }

protected:
    virtual ~IHttpResponse() {}
};

/**
 * IIS 10's trailers and HTTP/2 controls. Every IHttpResponse riis gives is
 * also an IHttpResponse4: get it with HttpGetExtendedInterface, as in IIS.
 */
class IHttpResponse4 : public IHttpResponse {
public:
    /** Sets a field sent after the body with the final send (HTTP/2
     *  clients get it; on HTTP/1.1 only in a chunked body, to a client that
     *  sent TE: trailers, for names the Trailer header lists). A field a
     *  trailer may not carry (Content-Length, Content-Type, Host, ...):
     *  E_INVALIDARG. */
    virtual HRESULT SetTrailer(IN PCSTR pszHeaderName, IN PCSTR pszHeaderValue,
                               IN USHORT cchHeaderValue, IN BOOL fReplace) = 0;
    virtual PCSTR GetTrailer(IN PCSTR pszHeaderName,
                             OUT USHORT *pcchHeaderValue = NULL) const = 0;
    virtual HRESULT DeleteTrailer(IN PCSTR pszHeaderName) = 0;
    /** Resets the stream (HTTP/2) or the connection (HTTP/1.x) instead of
     *  finishing the response; riis resets with its own error code, not
     *  errorCode. */
    virtual VOID ResetStream(IN ULONG errorCode) = 0;
    /** HTTP/2: GOAWAY once this exchange is done; HTTP/1.x: the
     *  connection closes after the response (SetNeedDisconnect). */
    virtual VOID SetNeedGoAway(VOID) = 0;

protected:
    virtual ~IHttpResponse4() {}
};

class IHttpServer;

namespace riis_cxx {
/** An extended interface of an object riis gave: every one riis gives
 *  behind `Base` is also an `Extended` (its Response, Context or
 *  CompletionInfo), so the cast is static. */
template <class Base, class Extended>
inline HRESULT extend(Base *pInput, Extended **ppOutput) {
    if (pInput == NULL || ppOutput == NULL) {
        return E_INVALIDARG;
    }
    *ppOutput = static_cast<Extended *>(pInput);
    return S_OK;
}

/** The extended interfaces riis has: IHttpResponse4 of an IHttpResponse. */
inline HRESULT extended(IHttpResponse *pInput, IHttpResponse4 **ppOutput) {
    return extend(pInput, ppOutput);
}
} // namespace riis_cxx

class CHttpModule;

/** The state of one request (or of a cloned child). */
class IHttpContext {
public:
    virtual IHttpSite *GetSite(VOID) = 0;
    virtual IHttpApplication *GetApplication(VOID) = 0;
    virtual IHttpConnection *GetConnection(VOID) = 0;
    virtual IHttpRequest *GetRequest(VOID) = 0;
    virtual IHttpResponse *GetResponse(VOID) = 0;
    virtual BOOL GetResponseHeadersSent(VOID) const = 0;
    /** The user an authentication module set, or NULL. */
    virtual IHttpUser *GetUser(VOID) const = 0;
    /** The request's container. */
    virtual IHttpModuleContextContainer *GetModuleContextContainer(VOID) = 0;
    /** The configuration path and virtual directory of the request's URL;
     *  valid until the next call of GetMetadata on this context. */
    virtual IMetadataInfo *GetMetadata(VOID) = 0;
    /** After RQ_NOTIFICATION_PENDING: continue with notificationStatus.
     *  Any thread. */
    virtual VOID IndicateCompletion(IN REQUEST_NOTIFICATION_STATUS notificationStatus) = 0;
    /** After (or while returning) RQ_NOTIFICATION_PENDING: call
     *  OnAsyncCompletion with cbBytes. Any thread. */
    virtual HRESULT PostCompletion(IN DWORD cbBytes) = 0;
    /** Stops calling this module instance for the given notifications (RQ_*
     *  bits) and post-notifications, for the rest of the request. */
    virtual VOID DisableNotifications(IN DWORD dwNotifications,
                                      IN DWORD dwPostNotifications) = 0;
    virtual BOOL GetIsLastNotification(IN REQUEST_NOTIFICATION_STATUS status) = 0;
    /** See WHAT COMPLETES WHEN at the top. */
    virtual HRESULT ExecuteRequest(IN BOOL fAsync, IN IHttpContext *pHttpContext,
                                   IN DWORD dwExecuteFlags, IN IHttpUser *pHttpUser,
                                   OUT BOOL *pfCompletionExpected = NULL) = 0;
    /** 0: riis does not tell a child its flags. */
    virtual DWORD GetExecuteFlags(VOID) const = 0;
    /** A server variable (IIS names: REMOTE_ADDR, URL, HTTP_HOST, ...);
     *  HRESULT_FROM_WIN32(ERROR_INVALID_INDEX) when it does not exist. */
    virtual HRESULT GetServerVariable(PCSTR pszVariableName, PCSTR *ppszValue,
                                      DWORD *pcchValueLength) = 0;
    virtual HRESULT SetServerVariable(PCSTR pszVariableName, PCSTR pszVariableValue) = 0;
    /** Memory freed when the request ends. */
    virtual VOID *AllocateRequestMemory(IN DWORD cbAllocation) = 0;
    /** The physical path of the request URL. */
    virtual PCSTR GetPhysicalPath(OUT DWORD *pcchPhysicalPath = NULL) = 0;
    /** The request URL's path. */
    virtual PCSTR GetScriptName(OUT DWORD *pcchScriptName = NULL) const = 0;
    /** The physical path of the request URL. */
    virtual PCSTR GetScriptTranslated(OUT DWORD *pcchScriptTranslated = NULL) = 0;
    virtual VOID SetRequestHandled(VOID) = 0;
    /**
     * The physical path of a URL of the site, UTF-8, into pszPhysicalPath of
     * *pcbPhysicalPath bytes (NUL included). When it is NULL or too small,
     * *pcbPhysicalPath receives the size needed and the result is
     * HRESULT_FROM_WIN32(ERROR_INSUFFICIENT_BUFFER).
     */
    virtual HRESULT MapPath(PCSTR pszUrl, PSTR pszPhysicalPath, IN OUT DWORD *pcbPhysicalPath) = 0;
    /** Raises RQ_CUSTOM_NOTIFICATION (see CUSTOM NOTIFICATIONS at the top). */
    virtual HRESULT NotifyCustomNotification(ICustomNotificationProvider *pCustomOutput,
                                             OUT BOOL *pfCompletionExpected) = 0;
    /** For a clone, the context it was cloned from; otherwise NULL. */
    virtual IHttpContext *GetParentContext(VOID) const = 0;
    virtual IHttpContext *GetRootContext(VOID) const = 0;
    /** A child context for ExecuteRequest. */
    virtual HRESULT CloneContext(IN DWORD dwCloneFlags, OUT IHttpContext **ppHttpContext) = 0;
    /** Called on a clone: releases it (executed or not). */
    virtual HRESULT ReleaseClonedContext(VOID) = 0;
    /** The notification running and the module's name (UTF-8); the tick
     *  counts are 0. */
    virtual HRESULT GetCurrentExecutionStats(OUT DWORD *pdwNotification,
                                             OUT DWORD *pdwNotificationStartTickCount = NULL,
                                             OUT PCSTR *ppszModule = NULL,
                                             OUT DWORD *pdwModuleStartTickCount = NULL,
                                             OUT DWORD *pdwAsyncNotification = NULL,
                                             OUT DWORD *pdwAsyncNotificationStartTickCount = NULL) const = 0;
    /** HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED). */
    virtual HRESULT CancelIo(VOID) = 0;

    /** riis: the C ABI handle of this context, for riis_api functions. */
    virtual riis_context *GetRiisContext(VOID) const = 0;

    /** GetServerVariable as a wide string (a copy in request memory). */
    HRESULT GetServerVariable(PCSTR pszVariableName, PCWSTR *ppszValue, DWORD *pcchValueLength) {
        PCSTR value = NULL;
        DWORD length = 0;
        if (ppszValue != NULL) {
            *ppszValue = NULL;
        }
        if (pcchValueLength != NULL) {
            *pcchValueLength = 0;
        }
        HRESULT hr = GetServerVariable(pszVariableName, &value, &length);
        if (FAILED(hr)) {
            return hr;
        }
        std::wstring wide = riis_cxx::wide_from_utf8(value, length);
        WCHAR *copy = static_cast<WCHAR *>(
            AllocateRequestMemory((DWORD)((wide.size() + 1) * sizeof(WCHAR))));
        if (copy == NULL) {
            return E_OUTOFMEMORY;
        }
        memcpy(copy, wide.c_str(), (wide.size() + 1) * sizeof(WCHAR));
        if (ppszValue != NULL) {
            *ppszValue = copy;
        }
        if (pcchValueLength != NULL) {
            *pcchValueLength = (DWORD)wide.size();
        }
        return S_OK;
    }

    /** SetServerVariable with a wide value (as IIS declares it). */
    HRESULT SetServerVariable(PCSTR pszVariableName, PCWSTR pszVariableValue) {
        return SetServerVariable(pszVariableName, riis_cxx::utf8_from_wide(pszVariableValue).c_str());
    }

    /** MapPath with wide strings; *pcbPhysicalPath counts bytes (NUL
     *  included), as in IIS. */
    HRESULT MapPath(PCWSTR pszUrl, PWSTR pszPhysicalPath, IN OUT DWORD *pcbPhysicalPath) {
        if (pcbPhysicalPath == NULL) {
            return E_INVALIDARG;
        }
        std::string url = riis_cxx::utf8_from_wide(pszUrl);
        DWORD needed = 0;
        HRESULT hr = MapPath(url.c_str(), (PSTR)NULL, &needed);
        if (hr != HRESULT_FROM_WIN32(ERROR_INSUFFICIENT_BUFFER)) {
            return FAILED(hr) ? hr : E_FAIL;
        }
        std::string path(needed, '\0');
        hr = MapPath(url.c_str(), &path[0], &needed);
        if (FAILED(hr)) {
            return hr;
        }
        std::wstring wide = riis_cxx::wide_from_utf8(path.c_str());
        DWORD bytes = (DWORD)((wide.size() + 1) * sizeof(WCHAR));
        if (pszPhysicalPath == NULL || *pcbPhysicalPath < bytes) {
            *pcbPhysicalPath = bytes;
            return HRESULT_FROM_WIN32(ERROR_INSUFFICIENT_BUFFER);
        }
        memcpy(pszPhysicalPath, wide.c_str(), bytes);
        *pcbPhysicalPath = bytes;
        return S_OK;
    }

protected:
    virtual ~IHttpContext() {}
};

/** IIS 8's additions to IHttpContext that riis has: EnableFullDuplex. Every
 *  IHttpContext riis gives is also an IHttpContext3: get it with
 *  HttpGetExtendedInterface, as in IIS. (riis has no IHttpContext2; the
 *  other methods of IIS's IHttpContext3 are not declared.) */
class IHttpContext3 : public IHttpContext {
public:
    /** From now on a module may keep one ReadEntityBody (asynchronous)
     *  under way while it writes and flushes asynchronously and is woken
     *  by PostCompletion or IndicateCompletion from its own thread: each
     *  completes through OnAsyncCompletion on its own, and
     *  IHttpCompletionInfo2::GetCompletedOperation says which. A read and
     *  an asynchronous flush may be started in the same call: the flush
     *  completes first. Returning anything but RQ_NOTIFICATION_PENDING
     *  gives up a read still under way. When the request ends while the
     *  module waits so (the client left, timeouts.execution), the module
     *  is disposed at once, not after its thread's next signal: a module
     *  whose thread may still call PostCompletion stops it in Dispose (or
     *  the destructor); the late call then fails harmlessly. */
    virtual VOID EnableFullDuplex(VOID) = 0;

protected:
    virtual ~IHttpContext3() {}
};

namespace riis_cxx {
/** IHttpContext3 of an IHttpContext riis gave. */
inline HRESULT extended(IHttpContext *pInput, IHttpContext3 **ppOutput) {
    return extend(pInput, ppOutput);
}
} // namespace riis_cxx

/** The result of an asynchronous operation (OnAsyncCompletion). */
class IHttpCompletionInfo {
public:
    /** Bytes read, sent, or posted with PostCompletion. */
    virtual DWORD GetCompletionBytes(VOID) const = 0;
    virtual HRESULT GetCompletionStatus(VOID) const = 0;

protected:
    virtual ~IHttpCompletionInfo() {}
};

/** Which operation a completion reports. Every IHttpCompletionInfo riis
 *  gives is also an IHttpCompletionInfo2: get it with
 *  HttpGetExtendedInterface, as in IIS. */
class IHttpCompletionInfo2 : public IHttpCompletionInfo {
public:
    /** RIIS_OPERATION_READ (ReadEntityBody), RIIS_OPERATION_WRITE (an
     *  asynchronous WriteEntityChunks or Flush), RIIS_OPERATION_EXECUTE_REQUEST
     *  (ExecuteRequest) or RIIS_OPERATION_POSTED (PostCompletion); the
     *  values are riis's own. In full duplex (IHttpContext3::EnableFullDuplex)
     *  it tells a read's completion from a write's. */
    virtual DWORD GetCompletedOperation(VOID) const = 0;

protected:
    virtual ~IHttpCompletionInfo2() {}
};

namespace riis_cxx {
/** IHttpCompletionInfo2 of an IHttpCompletionInfo riis gave. */
inline HRESULT extended(IHttpCompletionInfo *pInput, IHttpCompletionInfo2 **ppOutput) {
    return extend(pInput, ppOutput);
}
} // namespace riis_cxx

/** IIS's way to an extended interface (IHttpResponse4 from the request's
 *  IHttpResponse, IHttpContext3 from an IHttpContext, IHttpCompletionInfo2
 *  from an IHttpCompletionInfo); another pair does not compile.
 *  (Declared after every riis_cxx::extended it may call.) */
template <class HttpType1, class HttpType2>
HRESULT HttpGetExtendedInterface(IN IHttpServer *pHttpServer, IN HttpType1 *pInput,
                                 OUT HttpType2 **ppOutput) {
    UNREFERENCED_PARAMETER(pHttpServer);
    return riis_cxx::extended(pInput, ppOutput);
}

/* ============================================================= providers */

/** The provider every notification gets (a plain one for the deterministic
 *  request notifications). */
class IHttpEventProvider {
public:
    /** Records an error for IIS and other modules; as in IIS it does not
     *  change the request's processing (riis logs a failure code). */
    virtual VOID SetErrorStatus(HRESULT hrError) = 0;
    virtual ~IHttpEventProvider() {}
};

/**
 * A custom notification (RQ_CUSTOM_NOTIFICATION, GL_CUSTOM_NOTIFICATION).
 * A module raising one derives from it; QueryNotificationType returns the
 * type name (UTF-8). See CUSTOM NOTIFICATIONS at the top.
 */
class ICustomNotificationProvider : public IHttpEventProvider {
public:
    virtual PCSTR QueryNotificationType(VOID) = 0;
};

/**
 * riis: how a custom notification raised by a C or Rust module reaches a
 * C++ module: the raiser's type name and data pointer. A module may also
 * raise one itself (the C++ receivers then get this object).
 */
class CRiisCustomNotification : public ICustomNotificationProvider {
public:
    CRiisCustomNotification(PCSTR pszType, PVOID pData)
        : type_(pszType != NULL ? pszType : ""), data_(pData), error_(S_OK) {}
    PCSTR QueryNotificationType(VOID) { return type_.c_str(); }
    /** The `data` the raiser passed (NULL from Rust modules). */
    PVOID GetData(VOID) const { return data_; }
    VOID SetErrorStatus(HRESULT hrError) { error_ = hrError; }
    HRESULT GetErrorStatus(VOID) const { return error_; }

private:
    std::string type_;
    PVOID data_;
    HRESULT error_;
};

/** RQ_AUTHENTICATE_REQUEST: sets the request's user. */
class IAuthenticationProvider : public IHttpEventProvider {
public:
    /**
     * The user's name and authentication type become the request's user
     * (copied). As in IIS the server holds the reference the module hands
     * over (it calls pUser->DereferenceUser() once nothing holds the user),
     * asks the object IsInRole (URL authorization's roles), and GetUser
     * returns it to the modules of this library.
     */
    virtual VOID SetUser(IN IHttpUser *pUser) = 0;
    /** riis: the same, with the roles IsInRole answers for (IHttpUser has no
     *  way to list them). */
    virtual VOID SetUser(IN IHttpUser *pUser, IN PCSTR const *ppszRoles, IN DWORD cRoles) = 0;
};

/** RQ_MAP_REQUEST_HANDLER. riis chooses handlers from riis.toml: the setters
 *  return HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED) or do nothing. */
class IMapHandlerProvider : public IHttpEventProvider {
public:
    virtual HRESULT SetScriptName(PCSTR pszScriptName, DWORD cchScriptName) = 0;
    virtual VOID SetScriptMap(IN IScriptMapInfo *pScriptMap) = 0;
    virtual VOID SetFileInfo(IN IHttpFileInfo *pFileInfo) = 0;

    HRESULT SetScriptName(PCWSTR pszScriptName, DWORD cchScriptName) {
        std::string name = riis_cxx::utf8_from_wide(
            pszScriptName, cchScriptName == 0 ? (size_t)-1 : cchScriptName);
        return SetScriptName(name.c_str(), (DWORD)name.size());
    }
};

/** RQ_MAP_PATH: the URL being mapped and its physical path (UTF-8). */
class IMapPathProvider : public IHttpEventProvider {
public:
    virtual PCSTR GetUrl() const = 0;
    virtual PCSTR GetPhysicalPath() const = 0;
    /** cchPhysicalPath 0 means up to the NUL. */
    virtual HRESULT SetPhysicalPath(PCSTR pszPhysicalPath, DWORD cchPhysicalPath) = 0;

    HRESULT SetPhysicalPath(PCWSTR pszPhysicalPath, DWORD cchPhysicalPath) {
        std::string path = riis_cxx::utf8_from_wide(
            pszPhysicalPath, cchPhysicalPath == 0 ? (size_t)-1 : cchPhysicalPath);
        return SetPhysicalPath(path.c_str(), (DWORD)path.size());
    }
};

/** RQ_SEND_RESPONSE. */
class ISendResponseProvider : public IHttpEventProvider {
public:
    /** TRUE for the send that carries the status line and headers (they
     *  may still be changed). */
    virtual BOOL GetHeadersBeingSent(VOID) const = 0;
    /** HTTP_SEND_RESPONSE_FLAG_DISCONNECT / _MORE_DATA. */
    virtual DWORD GetFlags(VOID) const = 0;
    virtual VOID SetFlags(DWORD dwFlags) = 0;
    /** riis: TRUE for the last send of the response. */
    virtual BOOL GetIsFinalSend(VOID) const = 0;
    /** riis: keeps the first cbKeep bytes (at least 4 KiB) of this send's
     *  entity and defers the rest, handed to this module again in a later
     *  send once the client has taken this one, so that a module
     *  transforming the body never makes a large body's output at once.
     *  Call it before reading the entity; called again in the same call,
     *  its rest comes before the first. *pfDeferred (may be NULL) is TRUE
     *  when a rest was deferred (GetIsFinalSend is then FALSE), FALSE when
     *  the entity fits or the send is a flush, which is never split. */
    virtual HRESULT DeferAfter(ULONGLONG cbKeep, BOOL *pfDeferred) = 0;
    /** riis: TRUE for a module's flush (an encoder flushes its output
     *  there), FALSE for the final send and the sends of deferred rests. */
    virtual BOOL GetIsFlush(VOID) const = 0;
};

/** RQ_READ_ENTITY: the body bytes just read, which the module may replace. */
class IReadEntityProvider : public IHttpEventProvider {
public:
    /** The bytes (valid during the call); *pcbBuffer equals *pcbData. */
    virtual VOID GetEntity(OUT PVOID *ppBuffer, OUT DWORD *pcbData, OUT DWORD *pcbBuffer) = 0;
    /** Replaces them (copied; cbBuffer is ignored). */
    virtual VOID SetEntity(IN PVOID pBuffer, DWORD cbData, DWORD cbBuffer) = 0;
};

/** GL_PRE_BEGIN_REQUEST: the request, before the pipeline starts. */
class IPreBeginRequestProvider : public IHttpEventProvider {
public:
    /** Valid during the call only. */
    virtual IHttpContext *GetHttpContext(VOID) = 0;
};

/** GL_APPLICATION_START / GL_APPLICATION_STOP: the site's application. */
class IHttpApplicationProvider : public IHttpEventProvider {
public:
    virtual IHttpApplication *GetApplication(VOID) = 0;
};
typedef IHttpApplicationProvider IHttpApplicationStartProvider;
typedef IHttpApplicationProvider IHttpApplicationStopProvider;

/** GL_STOP_LISTENING. */
class IGlobalStopListeningProvider : public IHttpEventProvider {
public:
    /** TRUE: riis finishes the requests in flight. */
    virtual BOOL DrainRequestsGracefully(VOID) const = 0;
};

/** The key of a cache entry (GL_CACHE_OPERATION); the name is riis's cache
 *  key. */
class IHttpCacheKey {
public:
    virtual DWORD GetHash(VOID) const = 0;
    virtual PCSTR GetCacheName(VOID) const = 0;
    virtual bool GetIsEqual(IHttpCacheKey *pCacheCompareKey) const = 0;
    virtual bool GetIsPrefix(IHttpCacheKey *pCacheCompareKey) const = 0;
    virtual VOID Enum(IHttpCacheSpecificData *) = 0;

protected:
    virtual ~IHttpCacheKey() {}
};

/** GL_CACHE_OPERATION: riis reports CACHE_OPERATION_ADD and _DELETE. */
class ICacheProvider : public IHttpEventProvider {
public:
    virtual CACHE_OPERATION GetCacheOperation(VOID) const = 0;
    virtual IHttpCacheKey *GetCacheKey(VOID) const = 0;
    /** NULL. */
    virtual IHttpCacheSpecificData *GetCacheRecord(VOID) const = 0;
    /** No effect. */
    virtual VOID SetCacheRecord(IHttpCacheSpecificData *pCacheRecord) = 0;
    /** NULL. */
    virtual IHttpTraceContext *GetTraceContext(VOID) const = 0;
    /** riis: the entry's size in bytes (adds). */
    virtual ULONGLONG GetCacheEntrySize(VOID) const = 0;
};

/** GL_CONFIGURATION_CHANGE: riis reloaded its configuration (SIGHUP,
 *  `riis reload`). */
class IGlobalConfigurationChangeProvider : public IHttpEventProvider {
public:
    /** The configuration file that was reloaded (UTF-8; IIS gives a
     *  configuration path). */
    virtual PCSTR GetChangePath(VOID) const = 0;
};

/** GL_FILE_CHANGE. */
class IGlobalFileChangeProvider : public IHttpEventProvider {
public:
    /** The path that changed (UTF-8). */
    virtual PCSTR GetFileName(VOID) const = 0;
    /** NULL. */
    virtual IHttpFileMonitor *GetFileMonitor(VOID) = 0;
};

/** GL_TRACE_EVENT. */
class IGlobalTraceEventProvider : public IHttpEventProvider {
public:
    /** E_NOTIMPL: riis has no HTTP_TRACE_EVENT; see GetRiisEvent. */
    virtual HRESULT GetTraceEvent(OUT HTTP_TRACE_EVENT **ppTraceEvent) = 0;
    /** TRUE. */
    virtual BOOL CheckSubscription(IN HTTP_MODULE_ID ModuleId) = 0;
    /** E_NOTIMPL (*ppHttpContext NULL). */
    virtual HRESULT GetCurrentHttpRequestContext(OUT IHttpContext **ppHttpContext) = 0;
    /**
     * riis: the event: the module and notification (an RQ_* bit, post or
     * not) it concerns, the request URL, the phase (0 start, 1 end, 2 a
     * module's own message) and, at the end, the microseconds the call
     * took. Any pointer may be NULL.
     */
    virtual HRESULT GetRiisEvent(OUT PCSTR *ppszModule, OUT DWORD *pdwNotification,
                                 OUT BOOL *pfPostNotification, OUT PCSTR *ppszUrl,
                                 OUT DWORD *pdwPhase, OUT ULONGLONG *pullElapsedMicroseconds) = 0;
};

/**
 * GL_RSCA_QUERY: a runtime status query (`riis status` asks for the
 * function "status" with empty parameters). The module fills a buffer from
 * GetOutputBuffer / ResizeOutputBuffer and says with SetResult how many of
 * its bytes (UTF-8 text) are the answer; when the method returns, that
 * answer follows the server's own report. Without SetResult, or with a
 * failure HRESULT, the module answers nothing. Needs a riis with ABI 1.1.
 */
class IGlobalRSCAQueryProvider : public IHttpEventProvider {
public:
    /** The function asked for (UTF-8; IIS gives PCWSTR). */
    virtual PCSTR GetFunctionName(VOID) const = 0;
    /** Its parameters (UTF-8). */
    virtual PCSTR GetFunctionParameters(VOID) const = 0;
    /** A buffer of cbBuffer bytes for the answer, valid until the
     *  notification returns or the buffer is resized. */
    virtual HRESULT GetOutputBuffer(IN DWORD cbBuffer, OUT BYTE **ppbBuffer) = 0;
    /** A buffer of cbNewBuffer bytes that starts with the first
     *  cbBytesToCopy bytes of *ppbBuffer (the buffer the module has now);
     *  E_OUTOFMEMORY when it cannot be had. */
    virtual HRESULT ResizeOutputBuffer(IN DWORD cbNewBuffer, IN DWORD cbBytesToCopy,
                                       OUT BYTE **ppbBuffer) = 0;
    /** The answer is the buffer's first cbData bytes (when hr succeeded). */
    virtual VOID SetResult(IN DWORD cbData, IN HRESULT hr) = 0;
};

/** GL_THREAD_CLEANUP (riis does not raise it). */
class IGlobalThreadCleanupProvider : public IHttpEventProvider {
public:
    virtual IHttpApplication *GetApplication(VOID) = 0;
};

#pragma GCC visibility push(hidden)
namespace riis_cxx {

/** Logs, once per method, that a module subscribed to a notification
 *  without overriding its method (usually a signature that does not
 *  match). */
inline void not_overridden(const char *method) {
    static std::atomic<const char *> seen[64];
    for (size_t i = 0; i < sizeof seen / sizeof seen[0]; i++) {
        const char *slot = seen[i].load();
        if (slot != NULL && strcmp(slot, method) == 0) {
            return;
        }
        if (slot == NULL) {
            const char *expected = NULL;
            if (seen[i].compare_exchange_strong(expected, method)) {
                break;
            }
            if (strcmp(expected, method) == 0) {
                return;
            }
        }
    }
    char line[256];
    snprintf(line, sizeof line,
             "the module subscribed to %s but does not override it; check the "
             "method's signature",
             method);
    log(NULL, RIIS_LOG_WARN, line);
}

} /* namespace riis_cxx */
#pragma GCC visibility pop

/* ================================================================ modules */

/**
 * A request module: one instance per request, made by the module's
 * IHttpModuleFactory. Every method a module does not override returns
 * RQ_NOTIFICATION_CONTINUE (and logs a warning, as the notification was
 * subscribed to). Dispose() is called when the request ends.
 */
class CHttpModule {
public:
#define RIIS_CXX_DEFAULT_EVENT(Method, Provider)                                         \
    virtual REQUEST_NOTIFICATION_STATUS Method(IN IHttpContext *pHttpContext,             \
                                               IN Provider *pProvider) {                  \
        UNREFERENCED_PARAMETER(pHttpContext);                                             \
        UNREFERENCED_PARAMETER(pProvider);                                                \
        riis_cxx::not_overridden("CHttpModule::" #Method);                                \
        return RQ_NOTIFICATION_CONTINUE;                                                  \
    }

    RIIS_CXX_DEFAULT_EVENT(OnBeginRequest, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnPostBeginRequest, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnAuthenticateRequest, IAuthenticationProvider)
    RIIS_CXX_DEFAULT_EVENT(OnPostAuthenticateRequest, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnAuthorizeRequest, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnPostAuthorizeRequest, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnResolveRequestCache, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnPostResolveRequestCache, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnMapRequestHandler, IMapHandlerProvider)
    RIIS_CXX_DEFAULT_EVENT(OnPostMapRequestHandler, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnAcquireRequestState, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnPostAcquireRequestState, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnPreExecuteRequestHandler, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnPostPreExecuteRequestHandler, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnExecuteRequestHandler, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnPostExecuteRequestHandler, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnReleaseRequestState, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnPostReleaseRequestState, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnUpdateRequestCache, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnPostUpdateRequestCache, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnLogRequest, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnPostLogRequest, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnEndRequest, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnPostEndRequest, IHttpEventProvider)
    RIIS_CXX_DEFAULT_EVENT(OnSendResponse, ISendResponseProvider)
    RIIS_CXX_DEFAULT_EVENT(OnMapPath, IMapPathProvider)
    RIIS_CXX_DEFAULT_EVENT(OnReadEntity, IReadEntityProvider)
    RIIS_CXX_DEFAULT_EVENT(OnCustomRequestNotification, ICustomNotificationProvider)
#undef RIIS_CXX_DEFAULT_EVENT

    /** An operation the module started, then returned
     *  RQ_NOTIFICATION_PENDING for, finished. dwNotification is the RQ_* bit
     *  of the notification that started it. */
    virtual REQUEST_NOTIFICATION_STATUS OnAsyncCompletion(IN IHttpContext *pHttpContext,
                                                          IN DWORD dwNotification,
                                                          IN BOOL fPostNotification,
                                                          IN IHttpEventProvider *pProvider,
                                                          IN IHttpCompletionInfo *pCompletionInfo) {
        UNREFERENCED_PARAMETER(pHttpContext);
        UNREFERENCED_PARAMETER(dwNotification);
        UNREFERENCED_PARAMETER(fPostNotification);
        UNREFERENCED_PARAMETER(pProvider);
        UNREFERENCED_PARAMETER(pCompletionInfo);
        riis_cxx::not_overridden("CHttpModule::OnAsyncCompletion");
        return RQ_NOTIFICATION_CONTINUE;
    }

    /** The request ended. */
    virtual VOID Dispose(VOID) { delete this; }

protected:
    CHttpModule() {}
    virtual ~CHttpModule() {}
};

/**
 * A global module: one object for the life of a configuration, called for
 * the GL_* notifications it registered, from any thread (it must be
 * thread-safe). A reload that keeps the module keeps it too (RegisterModule
 * runs once while the module stays configured); Terminate() is called when
 * the last configuration that lists it is retired (once its requests are
 * done) or the server stops.
 */
class CGlobalModule {
public:
#define RIIS_CXX_DEFAULT_GLOBAL(Method, Provider)                                         \
    virtual GLOBAL_NOTIFICATION_STATUS Method(IN Provider *pProvider) {                   \
        UNREFERENCED_PARAMETER(pProvider);                                                \
        riis_cxx::not_overridden("CGlobalModule::" #Method);                              \
        return GL_NOTIFICATION_CONTINUE;                                                  \
    }

    RIIS_CXX_DEFAULT_GLOBAL(OnGlobalStopListening, IGlobalStopListeningProvider)
    RIIS_CXX_DEFAULT_GLOBAL(OnGlobalCacheOperation, ICacheProvider)
    RIIS_CXX_DEFAULT_GLOBAL(OnGlobalConfigurationChange, IGlobalConfigurationChangeProvider)
    RIIS_CXX_DEFAULT_GLOBAL(OnGlobalFileChange, IGlobalFileChangeProvider)
    RIIS_CXX_DEFAULT_GLOBAL(OnGlobalPreBeginRequest, IPreBeginRequestProvider)
    RIIS_CXX_DEFAULT_GLOBAL(OnGlobalApplicationStart, IHttpApplicationStartProvider)
    RIIS_CXX_DEFAULT_GLOBAL(OnGlobalApplicationStop, IHttpApplicationStopProvider)
    RIIS_CXX_DEFAULT_GLOBAL(OnGlobalTraceEvent, IGlobalTraceEventProvider)
    RIIS_CXX_DEFAULT_GLOBAL(OnGlobalCustomNotification, ICustomNotificationProvider)
    RIIS_CXX_DEFAULT_GLOBAL(OnGlobalThreadCleanup, IGlobalThreadCleanupProvider)
    RIIS_CXX_DEFAULT_GLOBAL(OnGlobalRSCAQuery, IGlobalRSCAQueryProvider)
#undef RIIS_CXX_DEFAULT_GLOBAL

    virtual GLOBAL_NOTIFICATION_STATUS OnGlobalCacheCleanup(VOID) {
        riis_cxx::not_overridden("CGlobalModule::OnGlobalCacheCleanup");
        return GL_NOTIFICATION_CONTINUE;
    }

    virtual GLOBAL_NOTIFICATION_STATUS OnGlobalHealthCheck(VOID) {
        riis_cxx::not_overridden("CGlobalModule::OnGlobalHealthCheck");
        return GL_NOTIFICATION_CONTINUE;
    }

    /** The server stops (typically `delete this`). */
    virtual VOID Terminate(VOID) = 0;

protected:
    CGlobalModule() {}
    virtual ~CGlobalModule() {}
};

/** What a factory allocates from: memory freed when the request ends. */
class IModuleAllocator {
public:
    /** Zeroed, 16-byte aligned; never free it. */
    virtual VOID *AllocateMemory(IN DWORD cbAllocation) = 0;

protected:
    virtual ~IModuleAllocator() {}
};

/** Makes a module instance for each request (from any thread). */
class IHttpModuleFactory {
public:
    virtual HRESULT GetHttpModule(OUT CHttpModule **ppModule, IN IModuleAllocator *pAllocator) = 0;
    /** The server stops (typically `delete this`). */
    virtual VOID Terminate(VOID) = 0;
    virtual ~IHttpModuleFactory() {}
};

/** What RegisterModule registers through. As in IIS, the object outlives
 *  RegisterModule (modules keep it to call GetId() later): GetName() and
 *  GetId() answer for the process's life; the Set* methods register only
 *  during RegisterModule and return an error HRESULT after it. */
class IHttpModuleRegistrationInfo {
public:
    /** The module's name in riis.toml (UTF-8). */
    virtual PCSTR GetName(VOID) const = 0;
    virtual HTTP_MODULE_ID GetId(VOID) const = 0;
    /** The factory stays the module's until its Terminate(). */
    virtual HRESULT SetRequestNotifications(IN IHttpModuleFactory *pModuleFactory,
                                            IN DWORD dwRequestNotifications,
                                            IN DWORD dwPostRequestNotifications) = 0;
    /** The global module stays the module's until its Terminate(). */
    virtual HRESULT SetGlobalNotifications(IN CGlobalModule *pGlobalModule,
                                           IN DWORD dwGlobalNotifications) = 0;
    /** One PRIORITY_ALIAS_*; for a deterministic notification it applies to
     *  its post-notification too, as in IIS. */
    virtual HRESULT SetPriorityForRequestNotification(IN DWORD dwRequestNotification,
                                                      IN PCSTR pszPriority) = 0;
    virtual HRESULT SetPriorityForGlobalNotification(IN DWORD dwGlobalNotification,
                                                     IN PCSTR pszPriority) = 0;
    /** riis: the C ABI's registration, for riis_api calls IIS has no
     *  method for (declare_section). Valid during RegisterModule only. */
    virtual riis_registration *GetRiisRegistration(VOID) const = 0;

    HRESULT SetPriorityForRequestNotification(IN DWORD dwRequestNotification,
                                              IN PCWSTR pszPriority) {
        return SetPriorityForRequestNotification(
            dwRequestNotification, riis_cxx::utf8_from_wide(pszPriority).c_str());
    }
    HRESULT SetPriorityForGlobalNotification(IN DWORD dwGlobalNotification,
                                             IN PCWSTR pszPriority) {
        return SetPriorityForGlobalNotification(
            dwGlobalNotification, riis_cxx::utf8_from_wide(pszPriority).c_str());
    }

protected:
    virtual ~IHttpModuleRegistrationInfo() {}
};

/** The server (RegisterModule's pGlobalInfo; valid for the process's life). */
class IHttpServer {
public:
    /** FALSE. */
    virtual BOOL IsCommandLineLaunch(VOID) const = 0;
    /** "riis". */
    virtual PCSTR GetAppPoolName(VOID) const = 0;
    /** No effect. */
    virtual VOID IncrementThreadCount(VOID) = 0;
    virtual VOID DecrementThreadCount(VOID) = 0;
    /** Logs the reason as an error. */
    virtual VOID ReportUnhealthy(IN PCSTR pszReasonString, IN HRESULT hrReason) = 0;
    /** Logs the request; riis does not recycle. */
    virtual VOID RecycleProcess(PCSTR pszReason) = 0;
    /**
     * Raises GL_CUSTOM_NOTIFICATION. riis raises it for a request: it works
     * during a call for a request (a request notification, or
     * PreBeginRequest); elsewhere it logs an error. Returns
     * GL_NOTIFICATION_CONTINUE.
     */
    virtual GLOBAL_NOTIFICATION_STATUS NotifyCustomNotification(
        ICustomNotificationProvider *pCustomOutput) = 0;
    /** riis: the server software, e.g. "riis/0.1.0". */
    virtual PCSTR GetServerSoftware(VOID) const = 0;
    /** riis: a line in the server log (RIIS_LOG_ERROR ... RIIS_LOG_DEBUG). */
    virtual VOID Log(IN DWORD dwLevel, IN PCSTR pszMessage) = 0;

    VOID ReportUnhealthy(IN PCWSTR pszReasonString, IN HRESULT hrReason) {
        ReportUnhealthy(riis_cxx::utf8_from_wide(pszReasonString).c_str(), hrReason);
    }
    VOID RecycleProcess(PCWSTR pszReason) {
        RecycleProcess(riis_cxx::utf8_from_wide(pszReason).c_str());
    }

protected:
    virtual ~IHttpServer() {}
};

/** The module's entry point, as IIS declares it. */
typedef HRESULT(WINAPI *PFN_REGISTERMODULE)(DWORD dwServerVersion,
                                            IHttpModuleRegistrationInfo *pModuleInfo,
                                            IHttpServer *pGlobalInfo);

/**
 * The module defines RegisterModule; declared here with C linkage so that
 * the IIS-style definition gets the undecorated name. dwServerVersion is
 * RIIS_SERVER_VERSION (10).
 */
extern "C" __attribute__((visibility("default"))) HRESULT RegisterModule(
    DWORD dwServerVersion, IHttpModuleRegistrationInfo *pModuleInfo, IHttpServer *pGlobalInfo);

/* ======================================================= implementation */

#pragma GCC visibility push(hidden)
namespace riis_cxx {

/** What the objects of one context share. */
struct Core {
    riis_context *ctx;
    /** A ReadEntityBody completion is due (its end reads as EOF). */
    bool read_pending;
};

/** A module context container of one riis scope; without a Core it stores
 *  nothing. */
class Container : public IHttpModuleContextContainer {
public:
    Container(Core *core, uint32_t scope)
        : core_(core), scope_(scope), site_bound_(false), site_id_(0), site_name_(NULL) {}

    /** The container of a site for an object that outlives requests (the
     *  application): it reaches the site's container during a call for a
     *  request of that site and during the site's ApplicationStart and
     *  ApplicationStop (the site is told by its id and name: a reload may
     *  give the id to another site), and stores nothing at other times (on
     *  another thread). `site_name` must outlive the container. */
    static Container site_bound(uint32_t site_id, const char *site_name) {
        Container container(NULL, RIIS_SCOPE_SITE);
        container.site_bound_ = true;
        container.site_id_ = site_id;
        container.site_name_ = site_name;
        return container;
    }

    IHttpStoredContext *GetModuleContext(HTTP_MODULE_ID moduleId) override {
        UNREFERENCED_PARAMETER(moduleId);
        if (ApplicationCall *call = application_call()) {
            return static_cast<IHttpStoredContext *>(
                api()->global_application_module_context(call->provider));
        }
        riis_context *ctx = target();
        if (ctx == NULL) {
            return NULL;
        }
        return static_cast<IHttpStoredContext *>(api()->module_context(ctx, scope_));
    }

    HRESULT SetModuleContext(IHttpStoredContext *pStoredContext,
                             HTTP_MODULE_ID moduleId) override {
        UNREFERENCED_PARAMETER(moduleId);
        if (pStoredContext == NULL) {
            return E_INVALIDARG;
        }
        if (ApplicationCall *call = application_call()) {
            std::lock_guard<std::mutex> shared(shared_context_lock());
            if (api()->global_application_module_context(call->provider) != NULL) {
                return HRESULT_FROM_WIN32(ERROR_ALREADY_ASSIGNED);
            }
            return api()->global_application_set_module_context(
                call->provider, static_cast<void *>(pStoredContext), &Container::cleanup);
        }
        riis_context *ctx = target();
        if (ctx == NULL) {
            return HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED);
        }
        /* Site and connection containers are shared by concurrent requests:
         * the check and the store are one step, or two first requests would
         * both succeed and the second store would clean up the first
         * context while its request still uses it. */
        std::unique_lock<std::mutex> shared;
        if (scope_ != RIIS_SCOPE_REQUEST) {
            shared = std::unique_lock<std::mutex>(shared_context_lock());
        }
        if (api()->module_context(ctx, scope_) != NULL) {
            return HRESULT_FROM_WIN32(ERROR_ALREADY_ASSIGNED);
        }
        return api()->set_module_context(ctx, scope_, static_cast<void *>(pStoredContext),
                                         &Container::cleanup);
    }

    /** One lock per module library (this header's names are hidden), which
     *  is enough: a library's modules reach only their own slots. */
    static std::mutex &shared_context_lock() {
        static std::mutex lock;
        return lock;
    }

    /** The server's cleanup: CleanupStoredContext, exactly once. */
    static void cleanup(void *data) noexcept {
        IHttpStoredContext *stored = static_cast<IHttpStoredContext *>(data);
        guarded([&]() { stored->CleanupStoredContext(); },
                [&](const char *why) {
                    log_exception(NULL, "IHttpStoredContext::CleanupStoredContext", why);
                });
    }

private:
    /** The ApplicationStart or ApplicationStop call of this container's
     *  site running on this thread, or NULL. */
    ApplicationCall *application_call() const {
        ApplicationCall *call = current_application_call();
        if (!site_bound_ || call == NULL || call->site_id != site_id_ ||
            call->site_name == NULL || strcmp(call->site_name, site_name_) != 0) {
            return NULL;
        }
        return call;
    }

    /** The context whose container this is now, or NULL. */
    riis_context *target() const {
        if (!site_bound_) {
            return core_ != NULL ? core_->ctx : NULL;
        }
        riis_context *ctx = current_context();
        if (ctx == NULL || api()->context_site_id(ctx) != site_id_) {
            return NULL;
        }
        const char *name = api()->context_site_name(ctx);
        if (name == NULL || strcmp(name, site_name_) != 0) {
            return NULL;
        }
        return ctx;
    }

    Core *core_;
    uint32_t scope_;
    bool site_bound_;
    uint32_t site_id_;
    const char *site_name_;
};

/** A text address and port as a sockaddr_in / sockaddr_in6. */
inline PSOCKADDR parse_address(const char *text, uint16_t port, sockaddr_storage *out) {
    memset(out, 0, sizeof *out);
    if (text == NULL) {
        return NULL;
    }
    std::string host(text);
    if (host.size() >= 2 && host[0] == '[' && host[host.size() - 1] == ']') {
        host = host.substr(1, host.size() - 2);
    }
    sockaddr_in *v4 = reinterpret_cast<sockaddr_in *>(out);
    if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        return reinterpret_cast<PSOCKADDR>(out);
    }
    sockaddr_in6 *v6 = reinterpret_cast<sockaddr_in6 *>(out);
    std::string::size_type zone = host.find('%');
    if (zone != std::string::npos) {
        host = host.substr(0, zone);
    }
    if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        return reinterpret_cast<PSOCKADDR>(out);
    }
    return NULL;
}

/** IHttpRequest over the riis request functions. */
class Request : public IHttpRequest {
public:
    explicit Request(Core *core) : core_(core), url_changed_(FALSE) {
        memset(&local_, 0, sizeof local_);
        memset(&remote_, 0, sizeof remote_);
    }

    PCSTR GetHeader(PCSTR pszHeaderName, USHORT *pcchHeaderValue) const override {
        size_t length = 0;
        const char *value =
            pszHeaderName != NULL ? api()->request_header(core_->ctx, pszHeaderName, &length) : NULL;
        if (pcchHeaderValue != NULL) {
            *pcchHeaderValue = value != NULL ? clamp_ushort(length) : 0;
        }
        return value;
    }

    PCSTR GetHeader(HTTP_HEADER_ID ulHeaderIndex, USHORT *pcchHeaderValue) const override {
        return GetHeader(request_header_name(ulHeaderIndex), pcchHeaderValue);
    }

    HRESULT SetHeader(PCSTR pszHeaderName, PCSTR pszHeaderValue, USHORT cchHeaderValue,
                      BOOL fReplace) override {
        if (pszHeaderName == NULL || pszHeaderValue == NULL) {
            return E_INVALIDARG;
        }
        std::string value = counted(pszHeaderValue, cchHeaderValue);
        return api()->request_set_header(core_->ctx, pszHeaderName, value.c_str(), fReplace ? 1 : 0);
    }

    HRESULT SetHeader(HTTP_HEADER_ID ulHeaderIndex, PCSTR pszHeaderValue, USHORT cchHeaderValue,
                      BOOL fReplace) override {
        const char *name = request_header_name(ulHeaderIndex);
        return name != NULL ? SetHeader(name, pszHeaderValue, cchHeaderValue, fReplace)
                            : E_INVALIDARG;
    }

    HRESULT DeleteHeader(PCSTR pszHeaderName) override {
        return pszHeaderName != NULL ? api()->request_delete_header(core_->ctx, pszHeaderName)
                                     : E_INVALIDARG;
    }

    HRESULT DeleteHeader(HTTP_HEADER_ID ulHeaderIndex) override {
        const char *name = request_header_name(ulHeaderIndex);
        return name != NULL ? DeleteHeader(name) : E_INVALIDARG;
    }

    PCSTR GetHttpMethod(VOID) const override { return api()->request_method(core_->ctx); }

    HRESULT SetHttpMethod(PCSTR pszHttpMethod) override {
        return pszHttpMethod != NULL ? api()->request_set_method(core_->ctx, pszHttpMethod)
                                     : E_INVALIDARG;
    }

    HRESULT SetUrl(PCSTR pszUrl, DWORD cchUrl, BOOL fResetQueryString) override {
        if (pszUrl == NULL) {
            return E_INVALIDARG;
        }
        std::string url = counted(pszUrl, cchUrl);
        if (!fResetQueryString && url.find('?') == std::string::npos) {
            const char *query = api()->request_query(core_->ctx);
            if (query != NULL && *query != '\0') {
                url += '?';
                url += query;
            }
        }
        HRESULT hr = api()->request_set_url(core_->ctx, url.c_str());
        if (SUCCEEDED(hr)) {
            url_changed_ = TRUE;
        }
        return hr;
    }

    BOOL GetUrlChanged(VOID) const override { return url_changed_; }

    PSOCKADDR GetLocalAddress(VOID) const override { return address(0, &local_); }
    PSOCKADDR GetRemoteAddress(VOID) const override { return address(1, &remote_); }

    HRESULT ReadEntityBody(VOID *pvBuffer, DWORD cbBuffer, BOOL fAsync, DWORD *pcbBytesReceived,
                           BOOL *pfCompletionPending) override {
        if (pcbBytesReceived != NULL) {
            *pcbBytesReceived = 0;
        }
        if (pfCompletionPending != NULL) {
            *pfCompletionPending = FALSE;
        }
        if (!fAsync) {
            /* riis reads request bodies asynchronously only: a worker
             * thread that waited for the client would stop every request
             * it serves. Said once, so a ported synchronous loop is found
             * in the log, not only as its module's error answers. */
            static std::atomic<bool> said(false);
            if (!said.exchange(true)) {
                log(core_->ctx, RIIS_LOG_WARN,
                    "ReadEntityBody with fAsync = FALSE is refused with "
                    "HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED): riis reads request bodies "
                    "asynchronously only; read with fAsync = TRUE and complete in "
                    "OnAsyncCompletion (docs/modules-native.md)");
            }
            return HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED);
        }
        if (pvBuffer == NULL || cbBuffer == 0) {
            return E_INVALIDARG;
        }
        HRESULT hr = api()->request_read_entity_body(core_->ctx, pvBuffer, cbBuffer);
        if (FAILED(hr)) {
            return hr;
        }
        core_->read_pending = true;
        if (pfCompletionPending != NULL) {
            *pfCompletionPending = TRUE;
        }
        return S_OK;
    }

    HRESULT InsertEntityBody(VOID *pvBuffer, DWORD cbBuffer) override {
        if (pvBuffer == NULL && cbBuffer != 0) {
            return E_INVALIDARG;
        }
        return api()->request_insert_entity_body(core_->ctx, pvBuffer, cbBuffer);
    }

    DWORD GetRemainingEntityBytes(VOID) override {
        int64_t remaining = api()->request_remaining_entity_bytes(core_->ctx);
        return remaining < 0 ? (DWORD)0xFFFFFFFFu : clamp_dword((uint64_t)remaining);
    }

    VOID GetHttpVersion(USHORT *pMajorVersion, USHORT *pMinorVersion) const override {
        uint16_t major = 0, minor = 0;
        api()->request_http_version(core_->ctx, &major, &minor);
        if (pMajorVersion != NULL) {
            *pMajorVersion = major;
        }
        if (pMinorVersion != NULL) {
            *pMinorVersion = minor;
        }
    }

    DWORD GetSiteId(VOID) const override { return api()->context_site_id(core_->ctx); }

    HRESULT GetClientCertificate(HTTP_SSL_CLIENT_CERT_INFO **ppClientCertInfo,
                                 BOOL *pfClientCertNegotiated) override {
        if (ppClientCertInfo == NULL) {
            return E_INVALIDARG;
        }
        *ppClientCertInfo = NULL;
        const uint8_t *der = NULL;
        size_t length = 0;
        int negotiated = 0;
        HRESULT hr = api()->request_client_certificate(core_->ctx, &der, &length, &negotiated);
        if (FAILED(hr)) {
            return hr;
        }
        if (pfClientCertNegotiated != NULL) {
            *pfClientCertNegotiated = negotiated ? TRUE : FALSE;
        }
        if (der == NULL) {
            return S_OK;
        }
        if (length > 0xFFFFFFFFu) {
            return E_INVALIDARG;
        }
        HTTP_SSL_CLIENT_CERT_INFO *info = static_cast<HTTP_SSL_CLIENT_CERT_INFO *>(
            api()->context_allocate(core_->ctx, sizeof(HTTP_SSL_CLIENT_CERT_INFO)));
        if (info == NULL) {
            return E_OUTOFMEMORY;
        }
        info->CertFlags = 0;
        info->CertEncodedSize = (ULONG)length;
        info->pCertEncoded = const_cast<PUCHAR>(der);
        info->Token = NULL;
        info->CertDeniedByMapper = FALSE;
        *ppClientCertInfo = info;
        return S_OK;
    }

    HRESULT NegotiateClientCertificate(BOOL fAsync, BOOL *pfCompletionPending) override {
        (void)fAsync;
        if (pfCompletionPending != NULL) {
            *pfCompletionPending = FALSE;
        }
        int negotiated = 0;
        HRESULT hr = api()->request_client_certificate(core_->ctx, NULL, NULL, &negotiated);
        if (FAILED(hr)) {
            return hr;
        }
        return negotiated ? S_OK : HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED);
    }

    PCSTR GetUrl(VOID) const override { return api()->request_url(core_->ctx); }
    PCSTR GetQueryString(VOID) const override { return api()->request_query(core_->ctx); }

private:
    PSOCKADDR address(int remote, sockaddr_storage *out) const {
        const char *text = NULL;
        uint16_t port = 0;
        if (FAILED(api()->request_address(core_->ctx, remote, &text, &port))) {
            return NULL;
        }
        return parse_address(text, port, out);
    }

    Core *core_;
    BOOL url_changed_;
    mutable sockaddr_storage local_;
    mutable sockaddr_storage remote_;
};

/** An HTTP_DATA_CHUNK as a riis_data_chunk. */
inline HRESULT to_riis_chunk(const HTTP_DATA_CHUNK &in, riis_data_chunk *out) {
    memset(out, 0, sizeof *out);
    out->file_descriptor = -1;
    switch (in.DataChunkType) {
    case HttpDataChunkFromMemory:
        out->type = RIIS_CHUNK_FROM_MEMORY;
        out->buffer = in.FromMemory.pBuffer;
        out->buffer_length = in.FromMemory.BufferLength;
        return S_OK;
    case HttpDataChunkFromFileHandle:
        out->type = RIIS_CHUNK_FROM_FILE_HANDLE;
        out->file_descriptor = in.FromFileHandle.FileHandle;
        out->offset = in.FromFileHandle.ByteRange.StartingOffset.QuadPart;
        out->length = in.FromFileHandle.ByteRange.Length.QuadPart;
        return S_OK;
    default:
        return HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED);
    }
}

/** IHttpResponse over the riis response functions. */
class Response : public IHttpResponse4 {
public:
    explicit Response(Core *core) : core_(core), suppressed_(FALSE) {}

    HRESULT SetTrailer(PCSTR pszHeaderName, PCSTR pszHeaderValue, USHORT cchHeaderValue,
                       BOOL fReplace) override {
        if (pszHeaderName == NULL || pszHeaderValue == NULL) {
            return E_INVALIDARG;
        }
        std::string value = counted(pszHeaderValue, cchHeaderValue);
        return api()->response_set_trailer(core_->ctx, pszHeaderName, value.c_str(),
                                           fReplace ? 1 : 0);
    }

    PCSTR GetTrailer(PCSTR pszHeaderName, USHORT *pcchHeaderValue) const override {
        size_t length = 0;
        const char *value = pszHeaderName != NULL
                                ? api()->response_trailer(core_->ctx, pszHeaderName, &length)
                                : NULL;
        if (pcchHeaderValue != NULL) {
            *pcchHeaderValue = value != NULL ? clamp_ushort(length) : 0;
        }
        return value;
    }

    HRESULT DeleteTrailer(PCSTR pszHeaderName) override {
        if (pszHeaderName == NULL) {
            return E_INVALIDARG;
        }
        return api()->response_delete_trailer(core_->ctx, pszHeaderName);
    }

    VOID ResetStream(ULONG errorCode) override {
        UNREFERENCED_PARAMETER(errorCode);
        (void)api()->response_reset_connection(core_->ctx);
    }

    VOID SetNeedGoAway(VOID) override { (void)api()->response_set_need_disconnect(core_->ctx); }

    HRESULT SetStatus(USHORT statusCode, PCSTR pszReason, USHORT uSubStatus,
                      HRESULT hrErrorToReport, IAppHostConfigException *pException,
                      BOOL fTrySkipCustomErrors) override {
        UNREFERENCED_PARAMETER(pException);
        HRESULT hr = api()->response_set_status(core_->ctx, statusCode, pszReason, uSubStatus,
                                                hrErrorToReport);
        if (SUCCEEDED(hr) && fTrySkipCustomErrors) {
            hr = api()->response_set_try_skip_custom_errors(core_->ctx, 1);
        }
        return hr;
    }

    HRESULT SetHeader(PCSTR pszHeaderName, PCSTR pszHeaderValue, USHORT cchHeaderValue,
                      BOOL fReplace) override {
        if (pszHeaderName == NULL || pszHeaderValue == NULL) {
            return E_INVALIDARG;
        }
        std::string value = counted(pszHeaderValue, cchHeaderValue);
        return api()->response_set_header(core_->ctx, pszHeaderName, value.c_str(),
                                          fReplace ? 1 : 0);
    }

    HRESULT SetHeader(HTTP_HEADER_ID ulHeaderIndex, PCSTR pszHeaderValue, USHORT cchHeaderValue,
                      BOOL fReplace) override {
        const char *name = response_header_name(ulHeaderIndex);
        return name != NULL ? SetHeader(name, pszHeaderValue, cchHeaderValue, fReplace)
                            : E_INVALIDARG;
    }

    HRESULT DeleteHeader(PCSTR pszHeaderName) override {
        return pszHeaderName != NULL ? api()->response_delete_header(core_->ctx, pszHeaderName)
                                     : E_INVALIDARG;
    }

    HRESULT DeleteHeader(HTTP_HEADER_ID ulHeaderIndex) override {
        const char *name = response_header_name(ulHeaderIndex);
        return name != NULL ? DeleteHeader(name) : E_INVALIDARG;
    }

    PCSTR GetHeader(PCSTR pszHeaderName, USHORT *pcchHeaderValue) const override {
        size_t length = 0;
        const char *value =
            pszHeaderName != NULL ? api()->response_header(core_->ctx, pszHeaderName, &length) : NULL;
        if (pcchHeaderValue != NULL) {
            *pcchHeaderValue = value != NULL ? clamp_ushort(length) : 0;
        }
        return value;
    }

    PCSTR GetHeader(HTTP_HEADER_ID ulHeaderIndex, USHORT *pcchHeaderValue) const override {
        return GetHeader(response_header_name(ulHeaderIndex), pcchHeaderValue);
    }

    VOID Clear(VOID) override { (void)api()->response_clear(core_->ctx); }
    VOID ClearHeaders(VOID) override { (void)api()->response_clear_headers(core_->ctx); }
    VOID SetNeedDisconnect(VOID) override { (void)api()->response_set_need_disconnect(core_->ctx); }
    VOID ResetConnection(VOID) override { (void)api()->response_reset_connection(core_->ctx); }
    VOID DisableKernelCache(ULONG reason) override { UNREFERENCED_PARAMETER(reason); }
    BOOL GetKernelCacheEnabled(VOID) const override { return FALSE; }

    VOID SuppressHeaders(VOID) override {
        if (SUCCEEDED(api()->response_suppress_headers(core_->ctx))) {
            suppressed_ = TRUE;
        }
    }

    BOOL GetHeadersSuppressed(VOID) const override { return suppressed_; }

    HRESULT Flush(BOOL fAsync, BOOL fMoreData, DWORD *pcbSent,
                  BOOL *pfCompletionExpected) override {
        if (pcbSent != NULL) {
            *pcbSent = 0;
        }
        if (pfCompletionExpected != NULL) {
            *pfCompletionExpected = FALSE;
        }
        HRESULT hr = api()->response_flush(core_->ctx, fAsync ? 1 : 0, fMoreData ? 1 : 0);
        if (SUCCEEDED(hr) && fAsync && pfCompletionExpected != NULL) {
            *pfCompletionExpected = TRUE;
        }
        return hr;
    }

    HRESULT Redirect(PCSTR pszUrl, BOOL fResetStatusCode, BOOL fIncludeParameters) override {
        if (pszUrl == NULL) {
            return E_INVALIDARG;
        }
        std::string url(pszUrl);
        if (fIncludeParameters) {
            const char *query = api()->request_query(core_->ctx);
            if (query != NULL && *query != '\0') {
                url += url.find('?') == std::string::npos ? '?' : '&';
                url += query;
            }
        }
        uint16_t status = 302;
        if (!fResetStatusCode) {
            uint16_t current = 0;
            api()->response_status(core_->ctx, &current, NULL);
            if (current == 301 || current == 303 || current == 307 || current == 308) {
                status = current;
            }
        }
        return api()->response_redirect(core_->ctx, url.c_str(), status);
    }

    HRESULT WriteEntityChunkByReference(HTTP_DATA_CHUNK *pDataChunk,
                                        LONG lInsertPosition) override {
        if (lInsertPosition != -1) {
            return HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED);
        }
        DWORD sent = 0;
        return WriteEntityChunks(pDataChunk, 1, FALSE, TRUE, &sent, NULL);
    }

    HRESULT WriteEntityChunks(HTTP_DATA_CHUNK *pDataChunks, DWORD nChunks, BOOL fAsync,
                              BOOL fMoreData, DWORD *pcbSent,
                              BOOL *pfCompletionExpected) override {
        UNREFERENCED_PARAMETER(fAsync);
        UNREFERENCED_PARAMETER(fMoreData);
        if (pcbSent != NULL) {
            *pcbSent = 0;
        }
        if (pfCompletionExpected != NULL) {
            *pfCompletionExpected = FALSE;
        }
        if (nChunks == 0) {
            return S_OK;
        }
        if (pDataChunks == NULL || nChunks > 0xFFFFu) {
            return pDataChunks == NULL ? E_INVALIDARG
                                       : HRESULT_FROM_WIN32(ERROR_ARITHMETIC_OVERFLOW);
        }
        riis_data_chunk local[8];
        riis_data_chunk *chunks = local;
        if (nChunks > sizeof local / sizeof local[0]) {
            chunks = new (std::nothrow) riis_data_chunk[nChunks];
            if (chunks == NULL) {
                return E_OUTOFMEMORY;
            }
        }
        HRESULT hr = S_OK;
        for (DWORD i = 0; i < nChunks && SUCCEEDED(hr); i++) {
            hr = to_riis_chunk(pDataChunks[i], &chunks[i]);
        }
        uint64_t bytes = 0;
        if (SUCCEEDED(hr)) {
            hr = api()->response_write_entity_chunks(core_->ctx, chunks, nChunks, &bytes);
        }
        if (chunks != local) {
            delete[] chunks;
        }
        if (SUCCEEDED(hr) && pcbSent != NULL) {
            *pcbSent = clamp_dword(bytes);
        }
        return hr;
    }

    VOID DisableBuffering(VOID) override { (void)api()->response_disable_buffering(core_->ctx); }

    VOID GetStatus(USHORT *pStatusCode, USHORT *pSubStatus, PCSTR *ppszReason,
                   USHORT *pcchReason, HRESULT *phrErrorToReport, PCSTR *ppszModule,
                   DWORD *pdwNotification, IAppHostConfigException **ppException,
                   BOOL *pfTrySkipCustomErrors) override {
        uint16_t status = 0, substatus = 0;
        api()->response_status(core_->ctx, &status, &substatus);
        if (pStatusCode != NULL) {
            *pStatusCode = status;
        }
        if (pSubStatus != NULL) {
            *pSubStatus = substatus;
        }
        if (ppszReason != NULL) {
            *ppszReason = "";
        }
        if (pcchReason != NULL) {
            *pcchReason = 0;
        }
        if (phrErrorToReport != NULL) {
            *phrErrorToReport = S_OK;
        }
        if (ppszModule != NULL) {
            *ppszModule = NULL;
        }
        if (pdwNotification != NULL) {
            *pdwNotification = 0;
        }
        if (ppException != NULL) {
            *ppException = NULL;
        }
        if (pfTrySkipCustomErrors != NULL) {
            *pfTrySkipCustomErrors = FALSE;
        }
    }

    HRESULT SetErrorDescription(PCSTR pszDescription, DWORD cchDescription,
                                BOOL fHtmlEncode) override {
        UNREFERENCED_PARAMETER(fHtmlEncode);
        if (pszDescription == NULL) {
            return E_INVALIDARG;
        }
        std::string text = counted(pszDescription, cchDescription);
        HRESULT hr = api()->response_set_error_description(core_->ctx, text.c_str());
        if (SUCCEEDED(hr)) {
            description_ = text;
        }
        return hr;
    }

    PCSTR GetErrorDescription(DWORD *pcchDescription) override {
        if (pcchDescription != NULL) {
            *pcchDescription = (DWORD)description_.size();
        }
        return description_.c_str();
    }

    VOID CloseConnection(VOID) override { (void)api()->response_reset_connection(core_->ctx); }

    BOOL GetHeadersSent(VOID) const override {
        return api()->response_headers_sent(core_->ctx) ? TRUE : FALSE;
    }

    HRESULT SetTrySkipCustomErrors(BOOL fTrySkipCustomErrors) override {
        return api()->response_set_try_skip_custom_errors(core_->ctx, fTrySkipCustomErrors ? 1 : 0);
    }

private:
    Core *core_;
    BOOL suppressed_;
    std::string description_;
};

/** A module's own IHttpUser, handed to SetUser: the server asks it IsInRole
 *  for the roles not listed (as IIS asks the module's object), and releases
 *  it (DereferenceUser) once nothing holds the user. GetUser gives the
 *  object back to the modules of the library that set it. */
struct OwnUser {
    static int is_in_role(void *data, const char *role) noexcept {
        IHttpUser *user = static_cast<IHttpUser *>(data);
        BOOL in = FALSE;
        guarded(
            [&]() {
                BOOL answer = FALSE;
                if (user->SupportsIsInRole() && SUCCEEDED(user->IsInRole(role, &answer))) {
                    in = answer;
                }
            },
            [&](const char *why) { log_exception(NULL, "IHttpUser::IsInRole", why); });
        return in ? 1 : 0;
    }

    static void release(void *data) noexcept {
        IHttpUser *user = static_cast<IHttpUser *>(data);
        guarded([&]() { user->DereferenceUser(); },
                [&](const char *why) { log_exception(NULL, "IHttpUser::DereferenceUser", why); });
    }
};

/** The server's user of a request. */
class User : public IHttpUser {
public:
    explicit User(Core *core) : core_(core) {}

    PCSTR GetRemoteUserName(VOID) override { return GetUserName(); }
    PCSTR GetUserName(VOID) override { return text(api()->user_name(core_->ctx)); }
    PCSTR GetAuthenticationType(VOID) override {
        return text(api()->user_authentication_type(core_->ctx));
    }
    PCSTR GetPassword(VOID) override { return ""; }
    HANDLE GetImpersonationToken(VOID) override { return NULL; }
    HANDLE GetPrimaryToken(VOID) override { return NULL; }
    VOID ReferenceUser(VOID) override {}
    VOID DereferenceUser(VOID) override {}
    BOOL SupportsIsInRole(VOID) override { return TRUE; }

    HRESULT IsInRole(PCSTR pszRoleName, BOOL *pfInRole) override {
        if (pszRoleName == NULL || pfInRole == NULL) {
            return E_INVALIDARG;
        }
        *pfInRole = api()->user_is_in_role(core_->ctx, pszRoleName) ? TRUE : FALSE;
        return S_OK;
    }

    PVOID GetUserVariable(PCSTR pszVariableName) override {
        UNREFERENCED_PARAMETER(pszVariableName);
        return NULL;
    }

private:
    static PCSTR text(const char *s) { return s != NULL ? s : ""; }
    Core *core_;
};

/** IHttpSite of a request. */
class Site : public IHttpSite {
public:
    explicit Site(Core *core) : core_(core), container_(core, RIIS_SCOPE_SITE) {}
    DWORD GetSiteId(VOID) const override { return api()->context_site_id(core_->ctx); }
    PCSTR GetSiteName(VOID) const override { return api()->context_site_name(core_->ctx); }
    IHttpModuleContextContainer *GetModuleContextContainer(VOID) override { return &container_; }
    IHttpPerfCounterInfo *GetPerfCounterInfo(VOID) override { return NULL; }

private:
    Core *core_;
    Container container_;
};

/** IHttpConnection of a request. */
class Connection : public IHttpConnection {
public:
    explicit Connection(Core *core) : core_(core), container_(core, RIIS_SCOPE_CONNECTION) {}
    /** FALSE once the client's connection closed or the client left this
     *  request; also from the module's own thread while the request is
     *  Pending (riis_api 1.10, connection_is_connected). */
    BOOL IsConnected(VOID) const override {
        return api()->connection_is_connected(core_->ctx) != 0 ? TRUE : FALSE;
    }
    VOID *AllocateMemory(DWORD cbAllocation) override {
        return api()->context_allocate(core_->ctx, cbAllocation);
    }
    IHttpModuleContextContainer *GetModuleContextContainer(VOID) override { return &container_; }

private:
    Core *core_;
    Container container_;
};

/** IHttpApplication: a site's root application, one object per site for
 *  the process's life, as IIS keeps its applications (modules keep the
 *  pointer ApplicationStart gives them). Its container is the site's
 *  (see Container::site_bound). */
class Application : public IHttpApplication {
public:
    /** The application of a site as it is now configured: the same object
     *  each time, or a new one when a reload renamed the site or moved its
     *  folder (the old one stays valid for whoever kept it). */
    static Application *of_site(uint32_t site_id, const char *site_name,
                                const char *physical_root) {
        static std::mutex lock;
        static std::vector<Application *> all;
        const char *name = site_name != NULL ? site_name : "";
        const char *root = physical_root != NULL ? physical_root : "";
        std::lock_guard<std::mutex> guard(lock);
        for (size_t i = all.size(); i-- > 0;) {
            Application *a = all[i];
            if (a->site_id_ == site_id && a->name_ == name && a->path_ == root) {
                return a;
            }
        }
        Application *made = new (std::nothrow) Application(site_id, name, root);
        if (made != NULL) {
            all.push_back(made);
        }
        return made;
    }

    PCSTR GetApplicationPhysicalPath(VOID) const override { return path_.c_str(); }
    PCSTR GetApplicationId(VOID) const override { return id_.c_str(); }
    PCSTR GetAppConfigPath(VOID) const override { return config_.c_str(); }
    IHttpModuleContextContainer *GetModuleContextContainer(VOID) override { return &container_; }

private:
    /* name_ comes before container_, which keeps a pointer to its text. */
    Application(uint32_t site_id, const std::string &name, const std::string &root)
        : site_id_(site_id), name_(name), container_(Container::site_bound(site_id, name_.c_str())),
          path_(root) {
        char id[64];
        snprintf(id, sizeof id, "/LM/W3SVC/%u/ROOT", (unsigned)site_id);
        id_ = id;
        config_ = "MACHINE/WEBROOT/APPHOST/" + name;
    }

    uint32_t site_id_;
    std::string name_;
    Container container_;
    std::string id_;
    std::string config_;
    std::string path_;
};

/** IMetadataInfo: strings copied when GetMetadata is called. */
class Metadata : public IMetadataInfo {
public:
    void describe(const char *site_name, const char *location, const char *folder) {
        meta_path_ = std::string("MACHINE/WEBROOT/APPHOST/") + (site_name != NULL ? site_name : "");
        if (location != NULL && strcmp(location, "/") != 0) {
            meta_path_ += location;
        }
        vr_path_ = folder != NULL ? folder : "";
    }

    PCSTR GetMetaPath(VOID) const override { return meta_path_.c_str(); }
    PCSTR GetVrPath(VOID) const override { return vr_path_.c_str(); }

private:
    std::string meta_path_;
    std::string vr_path_;
};

/**
 * IHttpContext for one riis_context: a module instance's request (the
 * same object for every call of the request), a clone, or a request seen
 * from PreBeginRequest.
 */
class Context : public IHttpContext3 {
public:
    Context(riis_context *ctx, Context *parent)
        : request_(&core_), response_(&core_), user_(&core_), site_(&core_),
          connection_(&core_), application_(NULL), container_(&core_, RIIS_SCOPE_REQUEST),
          parent_(parent), clones_(NULL), next_clone_(NULL), disabled_(0), disabled_post_(0) {
        core_.ctx = ctx;
        core_.read_pending = false;
    }

    ~Context() {
        while (clones_ != NULL) {
            Context *next = clones_->next_clone_;
            delete clones_;
            clones_ = next;
        }
    }

    /** The context the server passes (the same for every call). */
    void bind(riis_context *ctx) { core_.ctx = ctx; }
    riis_context *ctx() const { return core_.ctx; }
    Core &core() { return core_; }

    /** Whether DisableNotifications turned this notification off. */
    bool disabled(uint32_t notification, bool post) const {
        return ((post ? disabled_post_ : disabled_) & notification) != 0;
    }

    IHttpSite *GetSite(VOID) override { return &site_; }

    IHttpApplication *GetApplication(VOID) override {
        /* Looked up once per request: the site does not change. */
        if (application_ == NULL) {
            application_ = Application::of_site(api()->context_site_id(core_.ctx),
                                                api()->context_site_name(core_.ctx),
                                                api()->context_map_path(core_.ctx, "/"));
        }
        return application_;
    }

    IMetadataInfo *GetMetadata(VOID) override {
        const char *folder = NULL;
        if (FAILED(api()->context_virtual_directory(core_.ctx, NULL, &folder))) {
            folder = NULL;
        }
        metadata_.describe(api()->context_site_name(core_.ctx),
                           api()->context_location_path(core_.ctx), folder);
        return &metadata_;
    }

    IHttpConnection *GetConnection(VOID) override { return &connection_; }
    IHttpRequest *GetRequest(VOID) override { return &request_; }
    IHttpResponse *GetResponse(VOID) override { return &response_; }

    BOOL GetResponseHeadersSent(VOID) const override {
        return api()->response_headers_sent(core_.ctx) ? TRUE : FALSE;
    }

    IHttpUser *GetUser(VOID) const override {
        /* The object a module of this library gave SetUser, as IIS gives it
         * back; else the server's view of the user. */
        void *own = api()->user_role_check_data(core_.ctx, &OwnUser::is_in_role);
        if (own != NULL) {
            return static_cast<IHttpUser *>(own);
        }
        return api()->user_present(core_.ctx) ? &user_ : NULL;
    }

    IHttpModuleContextContainer *GetModuleContextContainer(VOID) override { return &container_; }

    /* The completion signals touch nothing of this object after the server
     * call: when the request already ended (the execution limit, a client
     * gone), that call is the module's last and the server then disposes
     * the module, this context with it. */
    VOID IndicateCompletion(REQUEST_NOTIFICATION_STATUS notificationStatus) override {
        HRESULT hr = api()->indicate_completion(core_.ctx, static_cast<riis_status>(notificationStatus));
        if (FAILED(hr)) {
            char line[96];
            snprintf(line, sizeof line, "IndicateCompletion failed with 0x%08X", (unsigned)hr);
            log(NULL, RIIS_LOG_ERROR, line);
        }
    }

    HRESULT PostCompletion(DWORD cbBytes) override {
        return api()->post_completion(core_.ctx, cbBytes);
    }

    VOID DisableNotifications(DWORD dwNotifications, DWORD dwPostNotifications) override {
        disabled_ |= dwNotifications;
        disabled_post_ |= dwPostNotifications;
    }

    BOOL GetIsLastNotification(REQUEST_NOTIFICATION_STATUS status) override {
        return api()->context_is_last_notification(core_.ctx, static_cast<riis_status>(status))
                   ? TRUE
                   : FALSE;
    }

    HRESULT ExecuteRequest(BOOL fAsync, IHttpContext *pHttpContext, DWORD dwExecuteFlags,
                           IHttpUser *pHttpUser, BOOL *pfCompletionExpected) override {
        if (pfCompletionExpected != NULL) {
            *pfCompletionExpected = FALSE;
        }
        if (!fAsync) {
            return HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED);
        }
        Context *child = find_clone(pHttpContext);
        if (child == NULL) {
            return E_INVALIDARG;
        }
        uint32_t flags = 0;
        if (dwExecuteFlags & EXECUTE_FLAG_BUFFER_RESPONSE) {
            flags |= RIIS_EXECUTE_FLAG_BUFFER_RESPONSE;
        }
        if (dwExecuteFlags & EXECUTE_FLAG_DISABLE_CUSTOM_ERROR) {
            flags |= RIIS_EXECUTE_FLAG_DISABLE_CUSTOM_ERROR;
        }
        if (dwExecuteFlags & EXECUTE_FLAG_SAME_URL) {
            flags |= RIIS_EXECUTE_FLAG_SAME_URL;
        }
        if (dwExecuteFlags & EXECUTE_FLAG_NO_HEADERS) {
            flags |= RIIS_EXECUTE_FLAG_NO_HEADERS;
        }
        if (pHttpUser != NULL) {
            /* The child runs as this user, without authentication. */
            PCSTR name = pHttpUser->GetUserName();
            PCSTR type = pHttpUser->GetAuthenticationType();
            HRESULT set = api()->set_user(child->core_.ctx, name != NULL ? name : "",
                                          type != NULL ? type : "", NULL, 0);
            if (FAILED(set)) {
                return set;
            }
            flags |= RIIS_EXECUTE_FLAG_AS_USER;
        }
        HRESULT hr = api()->context_execute_request(core_.ctx, child->core_.ctx, flags);
        if (SUCCEEDED(hr) && pfCompletionExpected != NULL) {
            *pfCompletionExpected = TRUE;
        }
        return hr;
    }

    DWORD GetExecuteFlags(VOID) const override { return 0; }

    HRESULT GetServerVariable(PCSTR pszVariableName, PCSTR *ppszValue,
                              DWORD *pcchValueLength) override {
        if (ppszValue != NULL) {
            *ppszValue = NULL;
        }
        if (pcchValueLength != NULL) {
            *pcchValueLength = 0;
        }
        if (pszVariableName == NULL) {
            return E_INVALIDARG;
        }
        size_t length = 0;
        const char *value = api()->server_variable(core_.ctx, pszVariableName, &length);
        if (value == NULL) {
            return HRESULT_FROM_WIN32(ERROR_INVALID_INDEX);
        }
        if (ppszValue != NULL) {
            *ppszValue = value;
        }
        if (pcchValueLength != NULL) {
            *pcchValueLength = clamp_dword(length);
        }
        return S_OK;
    }

    HRESULT SetServerVariable(PCSTR pszVariableName, PCSTR pszVariableValue) override {
        if (pszVariableName == NULL) {
            return E_INVALIDARG;
        }
        return api()->set_server_variable(core_.ctx, pszVariableName,
                                          pszVariableValue != NULL ? pszVariableValue : "");
    }

    VOID *AllocateRequestMemory(DWORD cbAllocation) override {
        return api()->context_allocate(core_.ctx, cbAllocation);
    }

    PCSTR GetPhysicalPath(DWORD *pcchPhysicalPath) override {
        return with_length(api()->context_physical_path(core_.ctx), pcchPhysicalPath);
    }

    PCSTR GetScriptName(DWORD *pcchScriptName) const override {
        return with_length(api()->request_url(core_.ctx), pcchScriptName);
    }

    PCSTR GetScriptTranslated(DWORD *pcchScriptTranslated) override {
        return with_length(api()->context_physical_path(core_.ctx), pcchScriptTranslated);
    }

    VOID SetRequestHandled(VOID) override { (void)api()->context_set_request_handled(core_.ctx); }
    VOID EnableFullDuplex(VOID) override { (void)api()->context_enable_full_duplex(core_.ctx); }

    HRESULT MapPath(PCSTR pszUrl, PSTR pszPhysicalPath, DWORD *pcbPhysicalPath) override {
        if (pszUrl == NULL || pcbPhysicalPath == NULL) {
            return E_INVALIDARG;
        }
        const char *path = api()->context_map_path(core_.ctx, pszUrl);
        if (path == NULL) {
            return E_FAIL;
        }
        DWORD needed = clamp_dword(strlen(path) + 1);
        if (pszPhysicalPath == NULL || *pcbPhysicalPath < needed) {
            *pcbPhysicalPath = needed;
            return HRESULT_FROM_WIN32(ERROR_INSUFFICIENT_BUFFER);
        }
        memcpy(pszPhysicalPath, path, needed);
        *pcbPhysicalPath = needed;
        return S_OK;
    }

    HRESULT NotifyCustomNotification(ICustomNotificationProvider *pCustomOutput,
                                     BOOL *pfCompletionExpected) override {
        if (pfCompletionExpected != NULL) {
            *pfCompletionExpected = FALSE;
        }
        if (pCustomOutput == NULL) {
            return E_INVALIDARG;
        }
        PCSTR type = pCustomOutput->QueryNotificationType();
        if (type == NULL) {
            return E_INVALIDARG;
        }
        CustomEnvelope envelope = make_envelope(pCustomOutput);
        return api()->raise_custom_notification_with_flags(core_.ctx, type, &envelope,
                                                           RIIS_CUSTOM_CXX_ENVELOPE);
    }

    IHttpContext *GetParentContext(VOID) const override { return parent_; }

    IHttpContext *GetRootContext(VOID) const override {
        const Context *root = this;
        while (root->parent_ != NULL) {
            root = root->parent_;
        }
        return const_cast<Context *>(root);
    }

    HRESULT CloneContext(DWORD dwCloneFlags, IHttpContext **ppHttpContext) override {
        if (ppHttpContext == NULL) {
            return E_INVALIDARG;
        }
        *ppHttpContext = NULL;
        riis_context *child = api()->context_clone(core_.ctx);
        if (child == NULL) {
            return E_FAIL;
        }
        if (dwCloneFlags & CLONE_FLAG_NO_PRECONDITION) {
            /* The child answers whole and fresh: an include must not come
             * back as the client's 304 or 206 of another resource. */
            static const char *const preconditions[] = {
                "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since",
                "If-Range", "Range"};
            for (size_t i = 0; i < sizeof preconditions / sizeof preconditions[0]; i++) {
                (void)api()->request_delete_header(child, preconditions[i]);
            }
        }
        Context *clone = new (std::nothrow) Context(child, this);
        if (clone == NULL) {
            api()->context_release_clone(core_.ctx, child);
            return E_OUTOFMEMORY;
        }
        clone->next_clone_ = clones_;
        clones_ = clone;
        *ppHttpContext = clone;
        return S_OK;
    }

    HRESULT ReleaseClonedContext(VOID) override {
        if (parent_ == NULL) {
            return E_UNEXPECTED;
        }
        api()->context_release_clone(parent_->core_.ctx, core_.ctx);
        parent_->unlink(this);
        delete this;
        return S_OK;
    }

    HRESULT GetCurrentExecutionStats(DWORD *pdwNotification, DWORD *pdwNotificationStartTickCount,
                                     PCSTR *ppszModule, DWORD *pdwModuleStartTickCount,
                                     DWORD *pdwAsyncNotification,
                                     DWORD *pdwAsyncNotificationStartTickCount) const override {
        riis_execution_stats stats;
        memset(&stats, 0, sizeof stats);
        stats.size = sizeof stats;
        HRESULT hr = api()->context_execution_stats(core_.ctx, &stats);
        if (FAILED(hr)) {
            return hr;
        }
        if (pdwNotification != NULL) {
            *pdwNotification = stats.notification;
        }
        if (pdwNotificationStartTickCount != NULL) {
            *pdwNotificationStartTickCount = 0;
        }
        if (ppszModule != NULL) {
            *ppszModule = stats.module;
        }
        if (pdwModuleStartTickCount != NULL) {
            *pdwModuleStartTickCount = 0;
        }
        if (pdwAsyncNotification != NULL) {
            *pdwAsyncNotification = 0;
        }
        if (pdwAsyncNotificationStartTickCount != NULL) {
            *pdwAsyncNotificationStartTickCount = 0;
        }
        return S_OK;
    }

    HRESULT CancelIo(VOID) override { return HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED); }

    riis_context *GetRiisContext(VOID) const override { return core_.ctx; }

private:
    static PCSTR with_length(const char *s, DWORD *pcch) {
        if (pcch != NULL) {
            *pcch = s != NULL ? clamp_dword(strlen(s)) : 0;
        }
        return s;
    }

    /** The clone of this context that `candidate` is, or NULL. */
    Context *find_clone(IHttpContext *candidate) const {
        for (Context *c = clones_; c != NULL; c = c->next_clone_) {
            if (static_cast<IHttpContext *>(c) == candidate) {
                return c;
            }
        }
        return NULL;
    }

    void unlink(Context *clone) {
        for (Context **p = &clones_; *p != NULL; p = &(*p)->next_clone_) {
            if (*p == clone) {
                *p = clone->next_clone_;
                return;
            }
        }
    }

    Core core_;
    Request request_;
    Response response_;
    mutable User user_;
    Site site_;
    Connection connection_;
    Application *application_;
    Metadata metadata_;
    Container container_;
    Context *parent_;
    Context *clones_;
    Context *next_clone_;
    DWORD disabled_;
    DWORD disabled_post_;

    Context(const Context &);
    Context &operator=(const Context &);
};

/* ------------------------------------------------------------ providers */

/** SetErrorStatus for every provider class: logged, no other effect. */
template <class Interface>
class Provider : public Interface {
public:
    explicit Provider(riis_context *ctx) : ctx_(ctx) {}

    VOID SetErrorStatus(HRESULT hrError) override {
        if (FAILED(hrError)) {
            char line[96];
            snprintf(line, sizeof line, "SetErrorStatus(0x%08X)", (unsigned)hrError);
            log(ctx_, RIIS_LOG_INFO, line);
        }
    }

protected:
    riis_context *ctx_;
};

typedef Provider<IHttpEventProvider> EventProvider;

class Instance;

/** RQ_AUTHENTICATE_REQUEST. */
class AuthenticationProvider : public Provider<IAuthenticationProvider> {
public:
    AuthenticationProvider(riis_context *ctx, std::vector<IHttpUser *> *users)
        : Provider<IAuthenticationProvider>(ctx), users_(users) {}

    VOID SetUser(IHttpUser *pUser) override { SetUser(pUser, NULL, 0); }

    VOID SetUser(IHttpUser *pUser, PCSTR const *ppszRoles, DWORD cRoles) override {
        if (pUser == NULL) {
            return;
        }
        PCSTR name = pUser->GetUserName();
        PCSTR type = pUser->GetAuthenticationType();
        /* The server holds the reference the module hands over, and asks the
         * object IsInRole for the roles not listed. */
        HRESULT hr = api()->set_user_with_role_check(
            ctx_, name != NULL ? name : "", type != NULL ? type : "", ppszRoles,
            ppszRoles != NULL ? cRoles : 0, &OwnUser::is_in_role, pUser, &OwnUser::release);
        if (FAILED(hr)) {
            char line[96];
            snprintf(line, sizeof line, "IAuthenticationProvider::SetUser failed with 0x%08X",
                     (unsigned)hr);
            log(ctx_, RIIS_LOG_ERROR, line);
            /* Not taken: released when the request ends, as before. */
            users_->push_back(pUser);
        }
    }

private:
    std::vector<IHttpUser *> *users_;
};

/** RQ_MAP_REQUEST_HANDLER: nothing to set in riis. */
class MapHandlerProvider : public Provider<IMapHandlerProvider> {
public:
    explicit MapHandlerProvider(riis_context *ctx) : Provider<IMapHandlerProvider>(ctx) {}
    HRESULT SetScriptName(PCSTR pszScriptName, DWORD cchScriptName) override {
        UNREFERENCED_PARAMETER(pszScriptName);
        UNREFERENCED_PARAMETER(cchScriptName);
        return HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED);
    }
    VOID SetScriptMap(IScriptMapInfo *pScriptMap) override { UNREFERENCED_PARAMETER(pScriptMap); }
    VOID SetFileInfo(IHttpFileInfo *pFileInfo) override { UNREFERENCED_PARAMETER(pFileInfo); }
};

/** RQ_SEND_RESPONSE. */
class SendResponseProvider : public Provider<ISendResponseProvider> {
public:
    SendResponseProvider(riis_context *ctx, riis_provider *p)
        : Provider<ISendResponseProvider>(ctx), p_(p) {}
    BOOL GetHeadersBeingSent(VOID) const override {
        return api()->send_headers_being_sent(p_) ? TRUE : FALSE;
    }
    DWORD GetFlags(VOID) const override { return api()->send_flags(p_); }
    VOID SetFlags(DWORD dwFlags) override {
        (void)api()->send_set_flags(
            p_, dwFlags & (HTTP_SEND_RESPONSE_FLAG_DISCONNECT | HTTP_SEND_RESPONSE_FLAG_MORE_DATA));
    }
    BOOL GetIsFinalSend(VOID) const override { return api()->send_is_final(p_) ? TRUE : FALSE; }
    HRESULT DeferAfter(ULONGLONG cbKeep, BOOL *pfDeferred) override {
        int deferred = 0;
        HRESULT hr = api()->send_defer_after(p_, ctx_, cbKeep, &deferred);
        if (pfDeferred != NULL) {
            *pfDeferred = deferred ? TRUE : FALSE;
        }
        return hr;
    }
    BOOL GetIsFlush(VOID) const override { return api()->send_is_flush(p_) ? TRUE : FALSE; }

private:
    riis_provider *p_;
};

/** RQ_READ_ENTITY. */
class ReadEntityProvider : public Provider<IReadEntityProvider> {
public:
    ReadEntityProvider(riis_context *ctx, riis_provider *p)
        : Provider<IReadEntityProvider>(ctx), p_(p) {}

    VOID GetEntity(PVOID *ppBuffer, DWORD *pcbData, DWORD *pcbBuffer) override {
        const void *data = NULL;
        size_t length = 0;
        if (FAILED(api()->read_entity(p_, &data, &length))) {
            data = NULL;
            length = 0;
        }
        if (ppBuffer != NULL) {
            *ppBuffer = const_cast<void *>(data);
        }
        if (pcbData != NULL) {
            *pcbData = clamp_dword(length);
        }
        if (pcbBuffer != NULL) {
            *pcbBuffer = clamp_dword(length);
        }
    }

    VOID SetEntity(PVOID pBuffer, DWORD cbData, DWORD cbBuffer) override {
        UNREFERENCED_PARAMETER(cbBuffer);
        (void)api()->read_set_entity(p_, pBuffer, cbData);
    }

private:
    riis_provider *p_;
};

/** RQ_MAP_PATH. */
class MapPathProvider : public Provider<IMapPathProvider> {
public:
    MapPathProvider(riis_context *ctx, riis_provider *p) : Provider<IMapPathProvider>(ctx), p_(p) {}
    PCSTR GetUrl() const override { return api()->map_path_url(p_); }
    PCSTR GetPhysicalPath() const override { return api()->map_path_physical_path(p_); }
    HRESULT SetPhysicalPath(PCSTR pszPhysicalPath, DWORD cchPhysicalPath) override {
        if (pszPhysicalPath == NULL) {
            return E_INVALIDARG;
        }
        std::string path = counted(pszPhysicalPath, cchPhysicalPath);
        return api()->map_path_set_physical_path(p_, path.c_str());
    }

private:
    riis_provider *p_;
};

/** IHttpCompletionInfo of one completion. */
class CompletionInfo : public IHttpCompletionInfo2 {
public:
    CompletionInfo(DWORD bytes, HRESULT status, DWORD operation)
        : bytes_(bytes), status_(status), operation_(operation) {}
    DWORD GetCompletionBytes(VOID) const override { return bytes_; }
    HRESULT GetCompletionStatus(VOID) const override { return status_; }
    DWORD GetCompletedOperation(VOID) const override { return operation_; }

private:
    DWORD bytes_;
    HRESULT status_;
    DWORD operation_;
};

/** IModuleAllocator over a riis_allocator. */
class Allocator : public IModuleAllocator {
public:
    explicit Allocator(riis_allocator *allocator) : allocator_(allocator) {}
    VOID *AllocateMemory(DWORD cbAllocation) override {
        return api()->allocator_allocate(allocator_, cbAllocation);
    }

private:
    riis_allocator *allocator_;
};

/** "CHttpModule::On[Post]<Event>" for log lines. */
/** "CHttpModule::On[Post]<Name>" in `out`: no allocation, since it is
 *  used on the path that reports a failure (perhaps an allocation's). */
inline const char *notification_method(char (&out)[64], uint32_t notification, bool post) {
    const char *name;
    switch (notification) {
    case RQ_BEGIN_REQUEST: name = "BeginRequest"; break;
    case RQ_AUTHENTICATE_REQUEST: name = "AuthenticateRequest"; break;
    case RQ_AUTHORIZE_REQUEST: name = "AuthorizeRequest"; break;
    case RQ_RESOLVE_REQUEST_CACHE: name = "ResolveRequestCache"; break;
    case RQ_MAP_REQUEST_HANDLER: name = "MapRequestHandler"; break;
    case RQ_ACQUIRE_REQUEST_STATE: name = "AcquireRequestState"; break;
    case RQ_PRE_EXECUTE_REQUEST_HANDLER: name = "PreExecuteRequestHandler"; break;
    case RQ_EXECUTE_REQUEST_HANDLER: name = "ExecuteRequestHandler"; break;
    case RQ_RELEASE_REQUEST_STATE: name = "ReleaseRequestState"; break;
    case RQ_UPDATE_REQUEST_CACHE: name = "UpdateRequestCache"; break;
    case RQ_LOG_REQUEST: name = "LogRequest"; break;
    case RQ_END_REQUEST: name = "EndRequest"; break;
    case RQ_SEND_RESPONSE: name = "SendResponse"; break;
    case RQ_READ_ENTITY: name = "ReadEntity"; break;
    case RQ_MAP_PATH: name = "MapPath"; break;
    case RQ_CUSTOM_NOTIFICATION: name = "CustomRequestNotification"; break;
    default: name = "Notification"; break;
    }
    snprintf(out, sizeof out, "CHttpModule::On%s%s", post ? "Post" : "", name);
    return out;
}

/** Fails the request after a module threw: 500, or, when the headers are
 *  already sent, a reset connection, so the client does not take what it
 *  got for a whole response. */
inline riis_status fail_request(riis_context *ctx, const char *where, const char *why) {
    log_exception(ctx, where, why);
    const riis_api *a = api();
    if (a->response_headers_sent(ctx)) {
        (void)a->response_reset_connection(ctx);
    } else {
        (void)a->response_clear(ctx);
        (void)a->response_set_status(ctx, 500, "Internal Server Error", 0, RIIS_E_FAIL);
    }
    return RIIS_STATUS_FINISH_REQUEST;
}

/* ------------------------------------------------------ module instances */

/** One CHttpModule and the IHttpContext of its request. */
class Instance {
public:
    explicit Instance(CHttpModule *module) : module_(module), context_(NULL, NULL) {}

    static riis_status on_notification(void *self, riis_context *ctx, uint32_t notification,
                                       int is_post, riis_provider *provider) noexcept {
        Instance *instance = static_cast<Instance *>(self);

        instance->context_.bind(ctx);
        CurrentContextScope scope(ctx);
        bool post = is_post != 0;
        /* SendResponse, ReadEntity, MapPath and custom notifications come
         * inside a call: they neither end nor start a wait of this module.
         * A new event ends any read left under way. */
        bool nested = (notification & (RIIS_RQ_SEND_RESPONSE | RIIS_RQ_READ_ENTITY |
                                       RIIS_RQ_MAP_PATH | RIIS_RQ_CUSTOM_NOTIFICATION)) != 0;
        if (!nested) {
            instance->context_.core().read_pending = false;
        }
        riis_status result = RIIS_STATUS_CONTINUE;
        guarded(
            [&]() {
                result = static_cast<riis_status>(instance->dispatch(notification, post, provider));
            },
            [&](const char *why) {
                char method[64];
                result = fail_request(ctx, notification_method(method, notification, post), why);
            });
        if (!nested) {
            instance->returned(result);
        }
        return result;
    }

    static riis_status on_async_completion(void *self, riis_context *ctx, uint32_t notification,
                                           int is_post, riis_provider *provider,
                                           const riis_completion_info *completion) noexcept {
        UNREFERENCED_PARAMETER(provider);
        Instance *instance = static_cast<Instance *>(self);

        instance->context_.bind(ctx);
        CurrentContextScope scope(ctx);
        HRESULT status = completion != NULL ? completion->status : S_OK;
        uint64_t bytes = completion != NULL ? completion->bytes : 0;
        uint32_t operation = completion != NULL ? completion->operation : RIIS_OPERATION_POSTED;
        Core &core = instance->context_.core();
        /* In full duplex a write or a post completes while the read is
         * still under way. */
        if (core.read_pending && operation == RIIS_OPERATION_READ) {
            /* The end of the body reads as ERROR_HANDLE_EOF, as in IIS. */
            core.read_pending = false;
            if (bytes == 0 && status == S_OK) {
                status = HRESULT_FROM_WIN32(ERROR_HANDLE_EOF);
            }
        }
        CompletionInfo info(clamp_dword(bytes), status, operation);
        EventProvider event(ctx);
        riis_status result = RIIS_STATUS_CONTINUE;
        guarded(
            [&]() {
                result = static_cast<riis_status>(instance->module_->OnAsyncCompletion(
                    &instance->context_, notification, is_post ? TRUE : FALSE, &event, &info));
            },
            [&](const char *why) {
                result = fail_request(ctx, "CHttpModule::OnAsyncCompletion", why);
            });
        instance->returned(result);
        return result;
    }

    static void dispose(void *self) noexcept {
        /* When the request ended while the module was pending, the server
         * calls this once the module's own thread signalled (IIS never ends
         * a request under a pending module; riis does, and waits for the
         * signal before disposing). */
        Instance *instance = static_cast<Instance *>(self);
        guarded([&]() { instance->module_->Dispose(); },
                [&](const char *why) { log_exception(NULL, "CHttpModule::Dispose", why); });
        for (size_t i = 0; i < instance->users_.size(); i++) {
            IHttpUser *user = instance->users_[i];
            guarded([&]() { user->DereferenceUser(); },
                    [&](const char *why) { log_exception(NULL, "IHttpUser::DereferenceUser", why); });
        }
        delete instance;
    }

    static const riis_module_callbacks *callbacks() {
        static const riis_module_callbacks table = {sizeof(riis_module_callbacks),
                                                    &Instance::on_notification,
                                                    &Instance::on_async_completion,
                                                    &Instance::dispose};
        return &table;
    }

private:
    REQUEST_NOTIFICATION_STATUS dispatch(uint32_t notification, bool post, riis_provider *p) {
        if (context_.disabled(notification, post)) {
            return RQ_NOTIFICATION_CONTINUE;
        }
        riis_context *ctx = context_.ctx();
        IHttpContext *c = &context_;
        CHttpModule *m = module_;
        switch (notification) {
#define RIIS_CXX_DETERMINISTIC(Bit, Pre, Post)                                                \
    case Bit: {                                                                               \
        EventProvider event(ctx);                                                             \
        return post ? m->Post(c, &event) : m->Pre(c, &event);                                 \
    }
            RIIS_CXX_DETERMINISTIC(RQ_BEGIN_REQUEST, OnBeginRequest, OnPostBeginRequest)
            RIIS_CXX_DETERMINISTIC(RQ_AUTHORIZE_REQUEST, OnAuthorizeRequest, OnPostAuthorizeRequest)
            RIIS_CXX_DETERMINISTIC(RQ_RESOLVE_REQUEST_CACHE, OnResolveRequestCache,
                                   OnPostResolveRequestCache)
            RIIS_CXX_DETERMINISTIC(RQ_ACQUIRE_REQUEST_STATE, OnAcquireRequestState,
                                   OnPostAcquireRequestState)
            RIIS_CXX_DETERMINISTIC(RQ_PRE_EXECUTE_REQUEST_HANDLER, OnPreExecuteRequestHandler,
                                   OnPostPreExecuteRequestHandler)
            RIIS_CXX_DETERMINISTIC(RQ_EXECUTE_REQUEST_HANDLER, OnExecuteRequestHandler,
                                   OnPostExecuteRequestHandler)
            RIIS_CXX_DETERMINISTIC(RQ_RELEASE_REQUEST_STATE, OnReleaseRequestState,
                                   OnPostReleaseRequestState)
            RIIS_CXX_DETERMINISTIC(RQ_UPDATE_REQUEST_CACHE, OnUpdateRequestCache,
                                   OnPostUpdateRequestCache)
            RIIS_CXX_DETERMINISTIC(RQ_LOG_REQUEST, OnLogRequest, OnPostLogRequest)
            RIIS_CXX_DETERMINISTIC(RQ_END_REQUEST, OnEndRequest, OnPostEndRequest)
#undef RIIS_CXX_DETERMINISTIC
        case RQ_AUTHENTICATE_REQUEST:
            if (post) {
                EventProvider event(ctx);
                return m->OnPostAuthenticateRequest(c, &event);
            } else {
                AuthenticationProvider provider(ctx, &users_);
                return m->OnAuthenticateRequest(c, &provider);
            }
        case RQ_MAP_REQUEST_HANDLER:
            if (post) {
                EventProvider event(ctx);
                return m->OnPostMapRequestHandler(c, &event);
            } else {
                MapHandlerProvider provider(ctx);
                return m->OnMapRequestHandler(c, &provider);
            }
        case RQ_SEND_RESPONSE: {
            SendResponseProvider provider(ctx, p);
            return m->OnSendResponse(c, &provider);
        }
        case RQ_READ_ENTITY: {
            ReadEntityProvider provider(ctx, p);
            return m->OnReadEntity(c, &provider);
        }
        case RQ_MAP_PATH: {
            MapPathProvider provider(ctx, p);
            return m->OnMapPath(c, &provider);
        }
        case RQ_CUSTOM_NOTIFICATION: {
            void *data = api()->custom_data(p);
            ICustomNotificationProvider *raised = envelope_provider(data, api()->custom_flags(p));
            if (raised != NULL) {
                return m->OnCustomRequestNotification(c, raised);
            }
            CRiisCustomNotification foreign(api()->custom_type(p), data);
            return m->OnCustomRequestNotification(c, &foreign);
        }
        default:
            return RQ_NOTIFICATION_CONTINUE;
        }
    }

    /** What a call returned: whether the module is now pending, and a
     *  body read it asked for that no Pending follows is forgotten (or a
     *  later completion would read as the end of the body). */
    void returned(riis_status result) {
        if (result != RIIS_STATUS_PENDING) {
            context_.core().read_pending = false;
        }
    }

    CHttpModule *module_;
    Context context_;
    /** Users handed to IAuthenticationProvider::SetUser, released at the end. */
    std::vector<IHttpUser *> users_;
};

/** An IHttpModuleFactory as a riis_module_factory. */
class FactoryAdapter {
public:
    explicit FactoryAdapter(IHttpModuleFactory *factory) : factory_(factory) {
        memset(&c_, 0, sizeof c_);
        c_.size = sizeof c_;
        c_.user_data = this;
        c_.get_http_module = &FactoryAdapter::get_http_module;
        c_.terminate = &FactoryAdapter::terminate;
    }

    const riis_module_factory *c_factory() const { return &c_; }

private:
    static riis_hresult get_http_module(void *user_data, riis_allocator *allocator,
                                        riis_module_instance *out) noexcept {
        FactoryAdapter *self = static_cast<FactoryAdapter *>(user_data);
        if (out == NULL) {
            return RIIS_E_INVALIDARG;
        }
        /* The module may keep the allocator for its instance's calls, as
         * IIS's is the request's pool: it lives in request memory, not on
         * this stack (request memory is freed without destructors; this
         * one has nothing to release). */
        void *memory = api()->allocator_allocate(allocator, sizeof(Allocator));
        if (memory == NULL) {
            return E_OUTOFMEMORY;
        }
        Allocator *alloc = new (memory) Allocator(allocator);
        CHttpModule *module = NULL;
        HRESULT hr = E_FAIL;
        guarded([&]() { hr = self->factory_->GetHttpModule(&module, alloc); },
                [&](const char *why) {
                    log_exception(NULL, "IHttpModuleFactory::GetHttpModule", why);
                    hr = strstr(why, "bad_alloc") != NULL ? E_OUTOFMEMORY : E_FAIL;
                });
        if (FAILED(hr)) {
            return hr;
        }
        if (module == NULL) {
            log(NULL, RIIS_LOG_ERROR, "IHttpModuleFactory::GetHttpModule returned no module");
            return E_FAIL;
        }
        Instance *instance = new (std::nothrow) Instance(module);
        if (instance == NULL) {
            guarded([&]() { module->Dispose(); }, [&](const char *) {});
            return E_OUTOFMEMORY;
        }
        out->callbacks = Instance::callbacks();
        out->module = instance;
        return S_OK;
    }

    static void terminate(void *user_data) noexcept {
        FactoryAdapter *self = static_cast<FactoryAdapter *>(user_data);
        guarded([&]() { self->factory_->Terminate(); },
                [&](const char *why) { log_exception(NULL, "IHttpModuleFactory::Terminate", why); });
        delete self;
    }

    riis_module_factory c_;
    IHttpModuleFactory *factory_;
};

/* -------------------------------------------------------- global modules */

class PreBeginRequestProvider : public Provider<IPreBeginRequestProvider> {
public:
    PreBeginRequestProvider(riis_context *ctx, IHttpContext *context)
        : Provider<IPreBeginRequestProvider>(ctx), context_(context) {}
    IHttpContext *GetHttpContext(VOID) override { return context_; }

private:
    IHttpContext *context_;
};

class ApplicationProvider : public Provider<IHttpApplicationProvider> {
public:
    explicit ApplicationProvider(IHttpApplication *application)
        : Provider<IHttpApplicationProvider>(NULL), application_(application) {}
    IHttpApplication *GetApplication(VOID) override { return application_; }

private:
    IHttpApplication *application_;
};

class StopListeningProvider : public Provider<IGlobalStopListeningProvider> {
public:
    StopListeningProvider() : Provider<IGlobalStopListeningProvider>(NULL) {}
    BOOL DrainRequestsGracefully(VOID) const override { return TRUE; }
};

class CacheKey : public IHttpCacheKey {
public:
    explicit CacheKey(const char *name) : name_(name != NULL ? name : "") {}
    DWORD GetHash(VOID) const override {
        DWORD hash = 2166136261u; /* FNV-1a */
        for (size_t i = 0; i < name_.size(); i++) {
            hash = (hash ^ static_cast<unsigned char>(name_[i])) * 16777619u;
        }
        return hash;
    }
    PCSTR GetCacheName(VOID) const override { return name_.c_str(); }
    bool GetIsEqual(IHttpCacheKey *pCacheCompareKey) const override {
        return pCacheCompareKey != NULL && name_ == pCacheCompareKey->GetCacheName();
    }
    bool GetIsPrefix(IHttpCacheKey *pCacheCompareKey) const override {
        if (pCacheCompareKey == NULL || pCacheCompareKey->GetCacheName() == NULL) {
            return false;
        }
        std::string other(pCacheCompareKey->GetCacheName());
        return other.compare(0, name_.size(), name_) == 0;
    }
    VOID Enum(IHttpCacheSpecificData *) override {}

private:
    std::string name_;
};

class CacheProvider : public Provider<ICacheProvider> {
public:
    CacheProvider(uint32_t operation, const char *key, uint64_t bytes)
        : Provider<ICacheProvider>(NULL), operation_(operation), key_(key), bytes_(bytes) {}
    CACHE_OPERATION GetCacheOperation(VOID) const override {
        return operation_ == RIIS_CACHE_ADD ? CACHE_OPERATION_ADD : CACHE_OPERATION_DELETE;
    }
    IHttpCacheKey *GetCacheKey(VOID) const override { return const_cast<CacheKey *>(&key_); }
    IHttpCacheSpecificData *GetCacheRecord(VOID) const override { return NULL; }
    VOID SetCacheRecord(IHttpCacheSpecificData *pCacheRecord) override {
        UNREFERENCED_PARAMETER(pCacheRecord);
    }
    IHttpTraceContext *GetTraceContext(VOID) const override { return NULL; }
    ULONGLONG GetCacheEntrySize(VOID) const override { return bytes_; }

private:
    uint32_t operation_;
    CacheKey key_;
    uint64_t bytes_;
};

class ConfigurationChangeProvider : public Provider<IGlobalConfigurationChangeProvider> {
public:
    explicit ConfigurationChangeProvider(const char *path)
        : Provider<IGlobalConfigurationChangeProvider>(NULL), path_(path != NULL ? path : "") {}
    PCSTR GetChangePath(VOID) const override { return path_; }

private:
    const char *path_;
};

class RscaQueryProvider : public Provider<IGlobalRSCAQueryProvider> {
public:
    RscaQueryProvider(const char *function, const char *parameters)
        : Provider<IGlobalRSCAQueryProvider>(NULL), function_(function != NULL ? function : ""),
          parameters_(parameters != NULL ? parameters : ""), buffer_(NULL), size_(0), length_(0),
          result_(E_FAIL) {}
    ~RscaQueryProvider() { free(buffer_); }
    PCSTR GetFunctionName(VOID) const override { return function_; }
    PCSTR GetFunctionParameters(VOID) const override { return parameters_; }
    HRESULT GetOutputBuffer(DWORD cbBuffer, BYTE **ppbBuffer) override {
        if (ppbBuffer == NULL) {
            return E_INVALIDARG;
        }
        *ppbBuffer = NULL;
        return ResizeOutputBuffer(cbBuffer, 0, ppbBuffer);
    }
    /* As IIS: a new buffer of cbNewBuffer bytes that starts with the first
       cbBytesToCopy bytes of *ppbBuffer (the module's current buffer, ours
       or its own); the old buffer of ours stays valid until this returns. */
    HRESULT ResizeOutputBuffer(DWORD cbNewBuffer, DWORD cbBytesToCopy, BYTE **ppbBuffer) override {
        if (ppbBuffer == NULL || cbBytesToCopy > cbNewBuffer ||
            (cbBytesToCopy > 0 && *ppbBuffer == NULL)) {
            return E_INVALIDARG;
        }
        BYTE *fresh = static_cast<BYTE *>(malloc(cbNewBuffer == 0 ? 1 : cbNewBuffer));
        if (fresh == NULL) {
            return E_OUTOFMEMORY;
        }
        if (cbBytesToCopy > 0) {
            memcpy(fresh, *ppbBuffer, cbBytesToCopy);
        }
        free(buffer_);
        buffer_ = fresh;
        size_ = cbNewBuffer;
        *ppbBuffer = fresh;
        return S_OK;
    }
    VOID SetResult(DWORD cbData, HRESULT hr) override {
        length_ = cbData;
        result_ = hr;
    }

    /** Hands the answer the module set to the server. */
    void answer(riis_global_provider *p) const {
        if (SUCCEEDED(result_) && length_ > 0 && buffer_ != NULL && length_ <= size_) {
            (void)api()->global_rsca_write(p, reinterpret_cast<const char *>(buffer_), length_);
        }
    }

private:
    RscaQueryProvider(const RscaQueryProvider &);
    RscaQueryProvider &operator=(const RscaQueryProvider &);

    const char *function_;
    const char *parameters_;
    BYTE *buffer_;
    DWORD size_;
    DWORD length_;
    HRESULT result_;
};

class FileChangeProvider : public Provider<IGlobalFileChangeProvider> {
public:
    explicit FileChangeProvider(const char *path)
        : Provider<IGlobalFileChangeProvider>(NULL), path_(path != NULL ? path : "") {}
    PCSTR GetFileName(VOID) const override { return path_; }
    IHttpFileMonitor *GetFileMonitor(VOID) override { return NULL; }

private:
    const char *path_;
};

class TraceEventProvider : public Provider<IGlobalTraceEventProvider> {
public:
    explicit TraceEventProvider(riis_global_provider *p)
        : Provider<IGlobalTraceEventProvider>(NULL), p_(p) {}
    HRESULT GetTraceEvent(HTTP_TRACE_EVENT **ppTraceEvent) override {
        if (ppTraceEvent != NULL) {
            *ppTraceEvent = NULL;
        }
        return E_NOTIMPL;
    }
    BOOL CheckSubscription(HTTP_MODULE_ID ModuleId) override {
        UNREFERENCED_PARAMETER(ModuleId);
        return TRUE;
    }
    HRESULT GetCurrentHttpRequestContext(IHttpContext **ppHttpContext) override {
        if (ppHttpContext != NULL) {
            *ppHttpContext = NULL;
        }
        return E_NOTIMPL;
    }
    HRESULT GetRiisEvent(PCSTR *ppszModule, DWORD *pdwNotification, BOOL *pfPostNotification,
                         PCSTR *ppszUrl, DWORD *pdwPhase,
                         ULONGLONG *pullElapsedMicroseconds) override {
        const char *module = NULL, *url = NULL;
        uint32_t notification = 0, phase = 0;
        int is_post = 0;
        uint64_t elapsed = 0;
        HRESULT hr = api()->global_trace_event(p_, &module, &notification, &is_post, &url, &phase,
                                               &elapsed);
        if (FAILED(hr)) {
            return hr;
        }
        if (ppszModule != NULL) {
            *ppszModule = module;
        }
        if (pdwNotification != NULL) {
            *pdwNotification = notification;
        }
        if (pfPostNotification != NULL) {
            *pfPostNotification = is_post ? TRUE : FALSE;
        }
        if (ppszUrl != NULL) {
            *ppszUrl = url;
        }
        if (pdwPhase != NULL) {
            *pdwPhase = phase;
        }
        if (pullElapsedMicroseconds != NULL) {
            *pullElapsedMicroseconds = elapsed;
        }
        return S_OK;
    }

private:
    riis_global_provider *p_;
};

class ThreadCleanupProvider : public Provider<IGlobalThreadCleanupProvider> {
public:
    ThreadCleanupProvider() : Provider<IGlobalThreadCleanupProvider>(NULL) {}
    IHttpApplication *GetApplication(VOID) override { return NULL; }
};

/** A CGlobalModule as a riis_global_module. */
class GlobalAdapter {
public:
    explicit GlobalAdapter(CGlobalModule *module) : module_(module) {
        memset(&c_, 0, sizeof c_);
        c_.size = sizeof c_;
        c_.user_data = this;
        c_.on_global_notification = &GlobalAdapter::on_global_notification;
        c_.terminate = &GlobalAdapter::terminate;
    }

    const riis_global_module *c_module() const { return &c_; }

private:
    static riis_global_status on_global_notification(void *user_data, uint32_t notification,
                                                     riis_global_provider *p) noexcept {
        GlobalAdapter *self = static_cast<GlobalAdapter *>(user_data);
        GLOBAL_NOTIFICATION_STATUS result = GL_NOTIFICATION_CONTINUE;
        guarded([&]() { result = self->dispatch(notification, p); },
                [&](const char *why) {
                    riis_context *ctx = notification == GL_PRE_BEGIN_REQUEST
                                            ? api()->global_context(p)
                                            : NULL;
                    log_exception(ctx, "CGlobalModule", why);
                    if (ctx != NULL && !api()->response_headers_sent(ctx)) {
                        (void)api()->response_clear(ctx);
                        (void)api()->response_set_status(ctx, 500, "Internal Server Error", 0,
                                                         RIIS_E_FAIL);
                    }
                    result = GL_NOTIFICATION_CONTINUE;
                });
        return static_cast<riis_global_status>(result);
    }

    static void terminate(void *user_data) noexcept {
        GlobalAdapter *self = static_cast<GlobalAdapter *>(user_data);
        guarded([&]() { self->module_->Terminate(); },
                [&](const char *why) { log_exception(NULL, "CGlobalModule::Terminate", why); });
        delete self;
    }

    GLOBAL_NOTIFICATION_STATUS dispatch(uint32_t notification, riis_global_provider *p) {
        CGlobalModule *m = module_;
        switch (notification) {
        case GL_PRE_BEGIN_REQUEST: {
            riis_context *ctx = api()->global_context(p);
            Context context(ctx, NULL);
            CurrentContextScope scope(ctx);
            PreBeginRequestProvider provider(ctx, &context);
            return m->OnGlobalPreBeginRequest(&provider);
        }
        case GL_APPLICATION_START:
        case GL_APPLICATION_STOP: {
            const char *site_name = NULL, *root = NULL;
            uint32_t site_id = 0;
            (void)api()->global_application(p, &site_name, &site_id, &root);
            ApplicationCall call = {p, site_id, site_name};
            ApplicationCallScope scope(&call);
            ApplicationProvider provider(Application::of_site(site_id, site_name, root));
            return notification == GL_APPLICATION_START ? m->OnGlobalApplicationStart(&provider)
                                                        : m->OnGlobalApplicationStop(&provider);
        }
        case GL_STOP_LISTENING: {
            StopListeningProvider provider;
            return m->OnGlobalStopListening(&provider);
        }
        case GL_HEALTH_CHECK:
            return m->OnGlobalHealthCheck();
        case GL_CACHE_CLEANUP:
            return m->OnGlobalCacheCleanup();
        case GL_CACHE_OPERATION: {
            uint32_t operation = 0;
            const char *key = NULL;
            uint64_t bytes = 0;
            (void)api()->global_cache_operation(p, &operation, &key, &bytes);
            CacheProvider provider(operation, key, bytes);
            return m->OnGlobalCacheOperation(&provider);
        }
        case GL_FILE_CHANGE: {
            FileChangeProvider provider(api()->global_file_path(p));
            return m->OnGlobalFileChange(&provider);
        }
        case GL_TRACE_EVENT: {
            TraceEventProvider provider(p);
            return m->OnGlobalTraceEvent(&provider);
        }
        case GL_CUSTOM_NOTIFICATION: {
            void *data = api()->global_custom_data(p);
            ICustomNotificationProvider *raised =
                envelope_provider(data, api()->global_custom_flags(p));
            if (raised != NULL) {
                return m->OnGlobalCustomNotification(raised);
            }
            CRiisCustomNotification foreign(api()->global_custom_type(p), data);
            return m->OnGlobalCustomNotification(&foreign);
        }
        case GL_CONFIGURATION_CHANGE: {
            ConfigurationChangeProvider provider(api()->global_file_path(p));
            return m->OnGlobalConfigurationChange(&provider);
        }
        case GL_THREAD_CLEANUP: {
            ThreadCleanupProvider provider;
            return m->OnGlobalThreadCleanup(&provider);
        }
        case GL_RSCA_QUERY: {
            const char *function = NULL, *parameters = NULL;
            if (FAILED(api()->global_rsca_query(p, &function, &parameters))) {
                return GL_NOTIFICATION_CONTINUE;
            }
            RscaQueryProvider provider(function, parameters);
            GLOBAL_NOTIFICATION_STATUS status = m->OnGlobalRSCAQuery(&provider);
            provider.answer(p);
            return status;
        }
        default:
            return GL_NOTIFICATION_CONTINUE;
        }
    }

    riis_global_module c_;
    CGlobalModule *module_;
};

/* ---------------------------------------------------------- registration */

/** IHttpModuleRegistrationInfo over a riis_registration. */
class Registration : public IHttpModuleRegistrationInfo {
public:
    /** Reads the name and id while the registration is live: both are
     *  asked for after RegisterModule too. */
    explicit Registration(riis_registration *registration)
        : registration_(registration),
          id_(static_cast<uintptr_t>(api()->registration_id(registration)) + 1) {
        const char *name = api()->registration_name(registration);
        name_ = name != NULL ? name : "";
    }

    PCSTR GetName(VOID) const override { return name_.c_str(); }

    HTTP_MODULE_ID GetId(VOID) const override { return reinterpret_cast<HTTP_MODULE_ID>(id_); }

    /** A registration object for the process's life. IIS keeps the one it
     *  passes to RegisterModule, and modules rely on it (a global kept for
     *  GetId(), a factory that holds the pointer); one is made per
     *  RegisterModule call (again after the module was dropped from the
     *  configuration and listed anew), and none is freed, since a factory
     *  of an earlier registration may still use its own. */
    static Registration *kept(riis_registration *registration) {
        static std::mutex lock;
        static std::vector<Registration *> all;
        Registration *made = new (std::nothrow) Registration(registration);
        if (made != NULL) {
            std::lock_guard<std::mutex> guard(lock);
            all.push_back(made);
        }
        return made;
    }

    HRESULT SetRequestNotifications(IHttpModuleFactory *pModuleFactory,
                                    DWORD dwRequestNotifications,
                                    DWORD dwPostRequestNotifications) override {
        if (pModuleFactory == NULL) {
            return E_INVALIDARG;
        }
        FactoryAdapter *adapter = new (std::nothrow) FactoryAdapter(pModuleFactory);
        if (adapter == NULL) {
            return E_OUTOFMEMORY;
        }
        HRESULT hr = api()->set_request_notifications(registration_, adapter->c_factory(),
                                                      dwRequestNotifications,
                                                      dwPostRequestNotifications);
        if (FAILED(hr)) {
            delete adapter;
        }
        return hr;
    }

    HRESULT SetGlobalNotifications(CGlobalModule *pGlobalModule,
                                   DWORD dwGlobalNotifications) override {
        if (pGlobalModule == NULL) {
            return E_INVALIDARG;
        }
        GlobalAdapter *adapter = new (std::nothrow) GlobalAdapter(pGlobalModule);
        if (adapter == NULL) {
            return E_OUTOFMEMORY;
        }
        HRESULT hr = api()->set_global_notifications(registration_, adapter->c_module(),
                                                     dwGlobalNotifications);
        if (FAILED(hr)) {
            delete adapter;
        }
        return hr;
    }

    HRESULT SetPriorityForRequestNotification(DWORD dwRequestNotification,
                                              PCSTR pszPriority) override {
        HRESULT hr = api()->set_priority_for_request_notification(
            registration_, dwRequestNotification, pszPriority);
        /* IIS has one priority for a notification and its post-notification. */
        bool deterministic = dwRequestNotification != 0 && dwRequestNotification <= RQ_END_REQUEST &&
                             (dwRequestNotification & (dwRequestNotification - 1)) == 0;
        if (SUCCEEDED(hr) && deterministic) {
            hr = api()->set_priority_for_post_request_notification(
                registration_, dwRequestNotification, pszPriority);
        }
        return hr;
    }

    HRESULT SetPriorityForGlobalNotification(DWORD dwGlobalNotification,
                                             PCSTR pszPriority) override {
        return api()->set_priority_for_global_notification(registration_, dwGlobalNotification,
                                                           pszPriority);
    }

    riis_registration *GetRiisRegistration(VOID) const override { return registration_; }

private:
    riis_registration *registration_;
    uintptr_t id_;
    std::string name_;
};

/** IHttpServer. */
class Server : public IHttpServer {
public:
    BOOL IsCommandLineLaunch(VOID) const override { return FALSE; }
    PCSTR GetAppPoolName(VOID) const override { return "riis"; }
    VOID IncrementThreadCount(VOID) override {}
    VOID DecrementThreadCount(VOID) override {}

    VOID ReportUnhealthy(PCSTR pszReasonString, HRESULT hrReason) override {
        char line[512];
        snprintf(line, sizeof line, "ReportUnhealthy: %s (0x%08X)",
                 pszReasonString != NULL ? pszReasonString : "", (unsigned)hrReason);
        log(NULL, RIIS_LOG_ERROR, line);
    }

    VOID RecycleProcess(PCSTR pszReason) override {
        char line[512];
        snprintf(line, sizeof line, "RecycleProcess requested (riis does not recycle): %s",
                 pszReason != NULL ? pszReason : "");
        log(NULL, RIIS_LOG_WARN, line);
    }

    GLOBAL_NOTIFICATION_STATUS NotifyCustomNotification(
        ICustomNotificationProvider *pCustomOutput) override {
        riis_context *ctx = current_context();
        if (ctx == NULL) {
            log(NULL, RIIS_LOG_ERROR,
                "IHttpServer::NotifyCustomNotification outside a call for a request: not raised");
            return GL_NOTIFICATION_CONTINUE;
        }
        if (pCustomOutput == NULL || pCustomOutput->QueryNotificationType() == NULL) {
            return GL_NOTIFICATION_CONTINUE;
        }
        CustomEnvelope envelope = make_envelope(pCustomOutput);
        (void)api()->raise_global_custom_notification_with_flags(
            ctx, pCustomOutput->QueryNotificationType(), &envelope, RIIS_CUSTOM_CXX_ENVELOPE);
        return GL_NOTIFICATION_CONTINUE;
    }

    PCSTR GetServerSoftware(VOID) const override {
        return software_slot();
    }

    VOID Log(DWORD dwLevel, PCSTR pszMessage) override { log(current_context(), dwLevel, pszMessage); }
};

inline IHttpServer *http_server() {
    static Server server;
    return &server;
}

} /* namespace riis_cxx */
#pragma GCC visibility pop

/* ============================================================ entry point */

/**
 * What the riis loader calls in place of RegisterModule: records the
 * server's function table and calls the module's RegisterModule with IIS
 * objects. Weak, so every translation unit may define it.
 */
extern "C" __attribute__((weak, visibility("default"))) riis_hresult riis_cxx_register_module(
    uint32_t server_version, riis_registration *registration, const riis_server *server) {
    if (server == NULL || server->size < sizeof(riis_server) || server->api == NULL) {
        return RIIS_E_INVALIDARG;
    }
    if ((server->abi_version >> 16) != RIIS_ABI_MAJOR) {
        return RIIS_E_REVISION_MISMATCH;
    }
    if (server->api->size < sizeof(riis_api)) {
        /* An older table lacks functions this header calls. */
        return RIIS_E_REVISION_MISMATCH;
    }
    riis_cxx::api_slot() = server->api;
    if (server->software != NULL) {
        snprintf(riis_cxx::software_slot(), sizeof riis_cxx::software_slot(), "%s",
                 server->software);
    }
    riis_cxx::Registration *info = riis_cxx::Registration::kept(registration);
    if (info == NULL) {
        return RIIS_E_OUTOFMEMORY;
    }
    HRESULT hr = E_FAIL;
    riis_cxx::guarded(
        [&]() { hr = RegisterModule(server_version, info, riis_cxx::http_server()); },
        [&](const char *why) {
            riis_cxx::log_exception(NULL, "RegisterModule", why);
            hr = E_FAIL;
        });
    return hr;
}

#endif /* RIIS_HTTPSERV_H */
