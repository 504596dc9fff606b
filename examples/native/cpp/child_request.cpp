/*
 * child_request.cpp - an IIS-style module that runs another URL of the site
 * as a child request, built for riis.
 *
 *     g++ -shared -fPIC -I include -o libchild.so examples/native/cpp/child_request.cpp
 *
 * For /cpp/wrap/NAME it clones its context, points the clone at /NAME,
 * executes it with EXECUTE_FLAG_BUFFER_RESPONSE (the child's output stays in
 * this response), and returns RQ_NOTIFICATION_PENDING; OnAsyncCompletion
 * then adds a closing line:
 *
 *     GET /cpp/wrap/hello.txt  ->  <the file's bytes>
 *                                  -- wrapped by a C++ module
 *
 * With ?as=guest the child is given a user (pHttpUser): it runs as "guest"
 * and its AuthenticateRequest is skipped, as in IIS. The module's own
 * OnAuthenticateRequest marks every request it sees with an
 * X-Cpp-Authenticated header, so the difference shows from outside.
 */
#define _WINSOCKAPI_
#include <windows.h>
#include <sal.h>
#include <httpserv.h>

#include <string.h>

/* The user a child runs as: a name and an authentication type, no roles. */
class CGuestUser : public IHttpUser
{
public:
    PCSTR GetRemoteUserName(VOID) { return "guest"; }
    PCSTR GetUserName(VOID) { return "guest"; }
    PCSTR GetAuthenticationType(VOID) { return "Anonymous"; }
    PCSTR GetPassword(VOID) { return ""; }
    HANDLE GetImpersonationToken(VOID) { return NULL; }
    HANDLE GetPrimaryToken(VOID) { return NULL; }
    VOID ReferenceUser(VOID) {}
    VOID DereferenceUser(VOID) {}
    BOOL SupportsIsInRole(VOID) { return FALSE; }
    HRESULT IsInRole(IN PCSTR pszRoleName, OUT BOOL * pfInRole)
    {
        UNREFERENCED_PARAMETER(pszRoleName);
        *pfInRole = FALSE;
        return S_OK;
    }
    PVOID GetUserVariable(IN PCSTR pszVariableName)
    {
        UNREFERENCED_PARAMETER(pszVariableName);
        return NULL;
    }
};

static CGuestUser g_guest;

class CWrapModule : public CHttpModule
{
public:
    REQUEST_NOTIFICATION_STATUS
    OnBeginRequest(
        IN IHttpContext * pHttpContext,
        IN IHttpEventProvider * pProvider
    )
    {
        UNREFERENCED_PARAMETER(pProvider);

        PCSTR pszUrl = NULL;
        DWORD cchUrl = 0;
        if (FAILED(pHttpContext->GetServerVariable("URL", &pszUrl, &cchUrl)) ||
            strncmp(pszUrl, "/cpp/wrap/", 10) != 0)
        {
            return RQ_NOTIFICATION_CONTINUE;
        }
        PCSTR pszQuery = NULL;
        DWORD cchQuery = 0;
        BOOL fAsGuest =
            SUCCEEDED(pHttpContext->GetServerVariable("QUERY_STRING", &pszQuery, &cchQuery)) &&
            strcmp(pszQuery, "as=guest") == 0;

        IHttpContext * pChild = NULL;
        HRESULT hr = pHttpContext->CloneContext(CLONE_FLAG_BASICS | CLONE_FLAG_HEADERS, &pChild);
        if (SUCCEEDED(hr))
        {
            /* /cpp/wrap/NAME -> /NAME */
            PCSTR pszTarget = pszUrl + 9;
            hr = pChild->GetRequest()->SetUrl(pszTarget, (DWORD)strlen(pszTarget), FALSE);
        }
        BOOL fCompletionExpected = FALSE;
        if (SUCCEEDED(hr))
        {
            hr = pHttpContext->ExecuteRequest(TRUE, pChild, EXECUTE_FLAG_BUFFER_RESPONSE,
                                              fAsGuest ? &g_guest : NULL,
                                              &fCompletionExpected);
        }
        if (FAILED(hr))
        {
            if (pChild != NULL)
            {
                pChild->ReleaseClonedContext();
            }
            pHttpContext->GetResponse()->SetStatus(500, "Server Error", 0, hr);
            return RQ_NOTIFICATION_FINISH_REQUEST;
        }
        return RQ_NOTIFICATION_PENDING;
    }

    REQUEST_NOTIFICATION_STATUS
    OnAuthenticateRequest(
        IN IHttpContext * pHttpContext,
        IN IAuthenticationProvider * pProvider
    )
    {
        UNREFERENCED_PARAMETER(pProvider);
        PCSTR pszUrl = NULL;
        DWORD cchUrl = 0;
        if (SUCCEEDED(pHttpContext->GetServerVariable("URL", &pszUrl, &cchUrl)))
        {
            pHttpContext->GetResponse()->SetHeader("X-Cpp-Authenticated", pszUrl,
                                                   (USHORT)cchUrl, FALSE);
        }
        return RQ_NOTIFICATION_CONTINUE;
    }

    REQUEST_NOTIFICATION_STATUS
    OnAsyncCompletion(
        IN IHttpContext * pHttpContext,
        IN DWORD dwNotification,
        IN BOOL fPostNotification,
        IN IHttpEventProvider * pProvider,
        IN IHttpCompletionInfo * pCompletionInfo
    )
    {
        UNREFERENCED_PARAMETER(dwNotification);
        UNREFERENCED_PARAMETER(fPostNotification);
        UNREFERENCED_PARAMETER(pProvider);
        UNREFERENCED_PARAMETER(pCompletionInfo);

        static const char szLine[] = "-- wrapped by a C++ module\n";
        HTTP_DATA_CHUNK chunk;
        chunk.DataChunkType = HttpDataChunkFromMemory;
        chunk.FromMemory.pBuffer = (PVOID)szLine;
        chunk.FromMemory.BufferLength = (ULONG)(sizeof szLine - 1);
        DWORD cbSent = 0;
        pHttpContext->GetResponse()->WriteEntityChunks(&chunk, 1, FALSE, TRUE, &cbSent);
        return RQ_NOTIFICATION_FINISH_REQUEST;
    }
};

class CWrapFactory : public IHttpModuleFactory
{
public:
    HRESULT
    GetHttpModule(
        OUT CHttpModule ** ppModule,
        IN IModuleAllocator * pAllocator
    )
    {
        UNREFERENCED_PARAMETER(pAllocator);
        CWrapModule * pModule = new CWrapModule;
        if (pModule == NULL)
        {
            return HRESULT_FROM_WIN32(ERROR_NOT_ENOUGH_MEMORY);
        }
        *ppModule = pModule;
        return S_OK;
    }

    void
    Terminate()
    {
        delete this;
    }
};

HRESULT
__stdcall
RegisterModule(
    DWORD dwServerVersion,
    IHttpModuleRegistrationInfo * pModuleInfo,
    IHttpServer * pGlobalInfo
)
{
    UNREFERENCED_PARAMETER(dwServerVersion);
    UNREFERENCED_PARAMETER(pGlobalInfo);

    return pModuleInfo->SetRequestNotifications(
        new CWrapFactory,
        RQ_BEGIN_REQUEST | RQ_AUTHENTICATE_REQUEST,
        0
    );
}
