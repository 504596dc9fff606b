/*
 * token_user.cpp - an authentication module as IIS modules write one: its
 * own IHttpUser class, handed to SetUser, answers IsInRole itself (from the
 * token, not from a list), and the handler gets the very object back from
 * GetUser.
 *
 * X-Token: alice logs on alice, an admin; X-Token: bob logs on bob. GET
 * /whoami (any URL) answers the user's name, whether GetUser gave the
 * module's own object, and whether the user is in "admins". GET /live
 * answers how many user objects are alive (each is released once nothing
 * holds it).
 */
#define _WINSOCKAPI_
#include <windows.h>
#include <sal.h>
#include <httpserv.h>

#include <stdio.h>
#include <string.h>

static volatile LONG g_live = 0;
static int g_marker;

class CTokenUser : public IHttpUser
{
public:
    explicit CTokenUser(const char *name) : m_refs(1)
    {
        snprintf(m_name, sizeof m_name, "%s", name);
        InterlockedIncrement(&g_live);
    }
    PCSTR GetRemoteUserName(VOID) { return m_name; }
    PCSTR GetUserName(VOID) { return m_name; }
    PCSTR GetAuthenticationType(VOID) { return "Token"; }
    PCSTR GetPassword(VOID) { return ""; }
    HANDLE GetImpersonationToken(VOID) { return NULL; }
    HANDLE GetPrimaryToken(VOID) { return NULL; }
    VOID ReferenceUser(VOID) { InterlockedIncrement(&m_refs); }
    VOID DereferenceUser(VOID)
    {
        if (InterlockedDecrement(&m_refs) == 0)
        {
            InterlockedDecrement(&g_live);
            delete this;
        }
    }
    BOOL SupportsIsInRole(VOID) { return TRUE; }
    HRESULT IsInRole(IN PCSTR pszRoleName, OUT BOOL *pfInRole)
    {
        *pfInRole = strcmp(m_name, "alice") == 0 && _stricmp(pszRoleName, "admins") == 0;
        return S_OK;
    }
    /* Tells this class's objects apart. */
    PVOID GetUserVariable(IN PCSTR pszVariableName)
    {
        return strcmp(pszVariableName, "token-user") == 0 ? &g_marker : NULL;
    }

private:
    char m_name[32];
    volatile LONG m_refs;
};

static void answer(IHttpContext *pHttpContext, const char *text)
{
    IHttpResponse *pResponse = pHttpContext->GetResponse();
    pResponse->Clear();
    pResponse->SetHeader(HttpHeaderContentType, "text/plain", 10, TRUE);
    HTTP_DATA_CHUNK chunk;
    chunk.DataChunkType = HttpDataChunkFromMemory;
    chunk.FromMemory.pBuffer = (PVOID)text;
    chunk.FromMemory.BufferLength = (ULONG)strlen(text);
    DWORD cbSent = 0;
    pResponse->WriteEntityChunks(&chunk, 1, FALSE, FALSE, &cbSent);
}

class CTokenModule : public CHttpModule
{
public:
    REQUEST_NOTIFICATION_STATUS
    OnAuthenticateRequest(IN IHttpContext *pHttpContext, IN IAuthenticationProvider *pProvider)
    {
        USHORT cch = 0;
        PCSTR token = pHttpContext->GetRequest()->GetHeader("X-Token", &cch);
        if (token != NULL && cch > 0 && cch < 32)
        {
            char name[32];
            memcpy(name, token, cch);
            name[cch] = '\0';
            pProvider->SetUser(new CTokenUser(name));
        }
        return RQ_NOTIFICATION_CONTINUE;
    }

    REQUEST_NOTIFICATION_STATUS
    OnExecuteRequestHandler(IN IHttpContext *pHttpContext, IN IHttpEventProvider *pProvider)
    {
        UNREFERENCED_PARAMETER(pProvider);
        char text[128];
        if (strcmp(pHttpContext->GetScriptName(), "/live") == 0)
        {
            snprintf(text, sizeof text, "live %ld\n", (long)g_live);
            answer(pHttpContext, text);
            return RQ_NOTIFICATION_FINISH_REQUEST;
        }
        IHttpUser *pUser = pHttpContext->GetUser();
        BOOL fAdmin = FALSE;
        if (pUser != NULL)
        {
            pUser->IsInRole("Admins", &fAdmin);
        }
        snprintf(text, sizeof text, "%s own:%s admin:%s\n",
                 pUser != NULL ? pUser->GetUserName() : "(none)",
                 pUser != NULL && pUser->GetUserVariable("token-user") == &g_marker ? "yes" : "no",
                 fAdmin ? "yes" : "no");
        answer(pHttpContext, text);
        return RQ_NOTIFICATION_FINISH_REQUEST;
    }
};

class CTokenFactory : public IHttpModuleFactory
{
public:
    HRESULT GetHttpModule(OUT CHttpModule **ppModule, IN IModuleAllocator *pAllocator)
    {
        UNREFERENCED_PARAMETER(pAllocator);
        *ppModule = new CTokenModule;
        return S_OK;
    }
    void Terminate() { delete this; }
};

HRESULT __stdcall RegisterModule(DWORD dwServerVersion, IHttpModuleRegistrationInfo *pModuleInfo,
                                 IHttpServer *pGlobalInfo)
{
    UNREFERENCED_PARAMETER(dwServerVersion);
    UNREFERENCED_PARAMETER(pGlobalInfo);
    return pModuleInfo->SetRequestNotifications(
        new CTokenFactory, RQ_AUTHENTICATE_REQUEST | RQ_EXECUTE_REQUEST_HANDLER, 0);
}
