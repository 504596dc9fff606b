/*
 * kept_objects.cpp - keeps the objects IIS keeps alive past the call that
 * hands them over, as ported modules do, and reports on them from a request:
 *
 * - the IHttpModuleRegistrationInfo of RegisterModule, kept in a global for
 *   GetId() and GetName() later;
 * - the IHttpApplication of OnGlobalApplicationStart, kept and compared with
 *   the one a request's context gives;
 * - application state stored in OnGlobalApplicationStart in the
 *   application's module context container (once: a second store is
 *   refused), which the site's requests read and count in.
 *
 * GET /kept answers, one fact a line, and a registration call made after
 * RegisterModule is refused with an error HRESULT.
 *
 * GET /gone answers 410 with SetStatus alone (no error code), as a module
 * refusing a resource does.
 *
 * GET /fallback tries /missing.txt as a child request and, reading the
 * child's own status from the clone once it completed (as IIS modules do),
 * answers "fell back after 404.0" when it was not found.
 */
#define _WINSOCKAPI_
#include <windows.h>
#include <sal.h>
#include <httpserv.h>

#include <stdio.h>
#include <string.h>

static IHttpModuleRegistrationInfo *g_pModuleInfo = NULL;
static HTTP_MODULE_ID g_registeredId = NULL;
static IHttpApplication *g_pStartedApplication = NULL;
static HRESULT g_hrSecondStore = S_OK;
static BOOL g_fReadBackInStart = FALSE;

/* What ApplicationStart keeps for the application's requests. */
class CAppState : public IHttpStoredContext
{
public:
    CAppState() : m_requests(0) {}
    void CleanupStoredContext() { delete this; }
    LONG Count() { return __sync_add_and_fetch(&m_requests, 1); }

private:
    volatile LONG m_requests;
};

static void answer(IHttpContext *pHttpContext, const char *text)
{
    IHttpResponse *pResponse = pHttpContext->GetResponse();
    pResponse->Clear();
    pResponse->SetStatus(200, "OK");
    pResponse->SetHeader(HttpHeaderContentType, "text/plain", 10, TRUE);
    HTTP_DATA_CHUNK chunk;
    chunk.DataChunkType = HttpDataChunkFromMemory;
    chunk.FromMemory.pBuffer = (PVOID)text;
    chunk.FromMemory.BufferLength = (ULONG)strlen(text);
    DWORD cbSent = 0;
    pResponse->WriteEntityChunks(&chunk, 1, FALSE, FALSE, &cbSent);
}

class CKeptModule : public CHttpModule
{
public:
    CKeptModule() : m_pChild(NULL) {}

    REQUEST_NOTIFICATION_STATUS
    OnBeginRequest(IN IHttpContext *pHttpContext, IN IHttpEventProvider *pProvider)
    {
        UNREFERENCED_PARAMETER(pProvider);
        if (strcmp(pHttpContext->GetScriptName(), "/gone") == 0)
        {
            pHttpContext->GetResponse()->SetStatus(410, "Gone");
            return RQ_NOTIFICATION_FINISH_REQUEST;
        }
        if (strcmp(pHttpContext->GetScriptName(), "/fallback") == 0)
        {
            HRESULT hr = pHttpContext->CloneContext(CLONE_FLAG_BASICS, &m_pChild);
            if (SUCCEEDED(hr))
            {
                hr = m_pChild->GetRequest()->SetUrl("/missing.txt", 12, FALSE);
            }
            BOOL fCompletionExpected = FALSE;
            if (SUCCEEDED(hr))
            {
                hr = pHttpContext->ExecuteRequest(TRUE, m_pChild, EXECUTE_FLAG_BUFFER_RESPONSE,
                                                  NULL, &fCompletionExpected);
            }
            if (FAILED(hr))
            {
                pHttpContext->GetResponse()->SetStatus(500, "Server Error", 0, hr);
                return RQ_NOTIFICATION_FINISH_REQUEST;
            }
            return RQ_NOTIFICATION_PENDING;
        }
        if (strcmp(pHttpContext->GetScriptName(), "/kept") != 0)
        {
            return RQ_NOTIFICATION_CONTINUE;
        }
        char text[1024];
        IHttpApplication *pApplication = pHttpContext->GetApplication();
        CAppState *pState = static_cast<CAppState *>(
            pApplication->GetModuleContextContainer()->GetModuleContext(g_pModuleInfo->GetId()));
        /* After RegisterModule, registering is refused, not a crash. */
        HRESULT hrLate = g_pModuleInfo->SetPriorityForRequestNotification(
            RQ_BEGIN_REQUEST, PRIORITY_ALIAS_HIGH);
        snprintf(text, sizeof text,
                 "id kept: %s\nname: %s\nstarted application kept: %s\n"
                 "same application: %s\napplication id: %s\nlate registration refused: %s\n"
                 "application state: %s, read back in start: %s, second store: 0x%08X, "
                 "requests counted: %ld\n",
                 g_pModuleInfo->GetId() == g_registeredId ? "yes" : "no",
                 g_pModuleInfo->GetName(),
                 g_pStartedApplication != NULL ? g_pStartedApplication->GetApplicationId() : "none",
                 pApplication == g_pStartedApplication ? "yes" : "no",
                 pApplication->GetApplicationId(),
                 FAILED(hrLate) ? "yes" : "no", pState != NULL ? "found" : "missing",
                 g_fReadBackInStart ? "yes" : "no", (unsigned)g_hrSecondStore,
                 pState != NULL ? (long)pState->Count() : -1L);
        answer(pHttpContext, text);
        return RQ_NOTIFICATION_FINISH_REQUEST;
    }

    REQUEST_NOTIFICATION_STATUS
    OnAsyncCompletion(IN IHttpContext *pHttpContext, IN DWORD dwNotification,
                      IN BOOL fPostNotification, IN IHttpEventProvider *pProvider,
                      IN IHttpCompletionInfo *pCompletionInfo)
    {
        UNREFERENCED_PARAMETER(dwNotification);
        UNREFERENCED_PARAMETER(fPostNotification);
        UNREFERENCED_PARAMETER(pProvider);
        UNREFERENCED_PARAMETER(pCompletionInfo);
        USHORT status = 0, substatus = 0;
        m_pChild->GetResponse()->GetStatus(&status, &substatus);
        char text[128];
        snprintf(text, sizeof text, "%s after %u.%u\n",
                 status == 404 ? "fell back" : "kept the child", (unsigned)status,
                 (unsigned)substatus);
        m_pChild->ReleaseClonedContext();
        m_pChild = NULL;
        answer(pHttpContext, text);
        return RQ_NOTIFICATION_FINISH_REQUEST;
    }

private:
    IHttpContext *m_pChild;
};

class CKeptFactory : public IHttpModuleFactory
{
public:
    HRESULT GetHttpModule(OUT CHttpModule **ppModule, IN IModuleAllocator *pAllocator)
    {
        UNREFERENCED_PARAMETER(pAllocator);
        *ppModule = new CKeptModule;
        return S_OK;
    }
    void Terminate() { delete this; }
};

class CKeptGlobal : public CGlobalModule
{
public:
    GLOBAL_NOTIFICATION_STATUS
    OnGlobalApplicationStart(IN IHttpApplicationStartProvider *pProvider)
    {
        g_pStartedApplication = pProvider->GetApplication();
        IHttpModuleContextContainer *pContainer =
            g_pStartedApplication->GetModuleContextContainer();
        CAppState *pState = new CAppState;
        if (FAILED(pContainer->SetModuleContext(pState, g_pModuleInfo->GetId())))
        {
            delete pState;
            return GL_NOTIFICATION_CONTINUE;
        }
        CAppState *pSecond = new CAppState;
        g_hrSecondStore = pContainer->SetModuleContext(pSecond, g_pModuleInfo->GetId());
        if (FAILED(g_hrSecondStore))
        {
            delete pSecond;
        }
        g_fReadBackInStart = pContainer->GetModuleContext(g_pModuleInfo->GetId()) == pState;
        return GL_NOTIFICATION_CONTINUE;
    }
    void Terminate() { delete this; }
};

HRESULT __stdcall RegisterModule(DWORD dwServerVersion, IHttpModuleRegistrationInfo *pModuleInfo,
                                 IHttpServer *pGlobalInfo)
{
    UNREFERENCED_PARAMETER(dwServerVersion);
    UNREFERENCED_PARAMETER(pGlobalInfo);
    g_pModuleInfo = pModuleInfo;
    g_registeredId = pModuleInfo->GetId();
    HRESULT hr = pModuleInfo->SetRequestNotifications(new CKeptFactory, RQ_BEGIN_REQUEST, 0);
    if (FAILED(hr))
    {
        return hr;
    }
    return pModuleInfo->SetGlobalNotifications(new CKeptGlobal, GL_APPLICATION_START);
}
