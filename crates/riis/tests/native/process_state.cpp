/*
 * process_state.cpp - process-wide state kept as IIS modules keep it:
 * RegisterModule makes it, the factory's Terminate frees it. Under IIS
 * RegisterModule runs once in a worker process and Terminate when the
 * process ends; riis keeps the process across a reload, so it must not call
 * RegisterModule again while the registration is in use, nor the old
 * configuration's Terminate after it (which would free what the new
 * RegisterModule made).
 *
 * GET /state answers how many requests the state counted. Each
 * RegisterModule and Terminate appends a line to EVENTS_LOG (a -D of the
 * build).
 */
#define _WINSOCKAPI_
#include <windows.h>
#include <sal.h>
#include <httpserv.h>

#include <stdio.h>
#include <string.h>

#ifndef EVENTS_LOG
#error "build with -DEVENTS_LOG=\"path\""
#endif

class CProcessState
{
public:
    CProcessState() : m_served(0) {}
    long Serve() { return __sync_add_and_fetch(&m_served, 1); }

private:
    volatile long m_served;
};

static CProcessState *g_pState = NULL;

static void note(const char *event)
{
    FILE *log = fopen(EVENTS_LOG, "a");
    if (log != NULL)
    {
        fprintf(log, "%s\n", event);
        fclose(log);
    }
}

class CStateModule : public CHttpModule
{
public:
    REQUEST_NOTIFICATION_STATUS
    OnBeginRequest(IN IHttpContext *pHttpContext, IN IHttpEventProvider *pProvider)
    {
        UNREFERENCED_PARAMETER(pProvider);
        if (strcmp(pHttpContext->GetScriptName(), "/state") != 0)
        {
            return RQ_NOTIFICATION_CONTINUE;
        }
        char text[64];
        /* As an IIS module does: the state is there while the module is. */
        snprintf(text, sizeof text, "served %ld\n", g_pState->Serve());
        IHttpResponse *pResponse = pHttpContext->GetResponse();
        pResponse->Clear();
        pResponse->SetHeader(HttpHeaderContentType, "text/plain", 10, TRUE);
        HTTP_DATA_CHUNK chunk;
        chunk.DataChunkType = HttpDataChunkFromMemory;
        chunk.FromMemory.pBuffer = text;
        chunk.FromMemory.BufferLength = (ULONG)strlen(text);
        DWORD cbSent = 0;
        pResponse->WriteEntityChunks(&chunk, 1, FALSE, FALSE, &cbSent);
        return RQ_NOTIFICATION_FINISH_REQUEST;
    }
};

class CStateFactory : public IHttpModuleFactory
{
public:
    HRESULT GetHttpModule(OUT CHttpModule **ppModule, IN IModuleAllocator *pAllocator)
    {
        UNREFERENCED_PARAMETER(pAllocator);
        *ppModule = new CStateModule;
        return S_OK;
    }
    void Terminate()
    {
        note("terminate factory");
        delete g_pState;
        g_pState = NULL;
        delete this;
    }
};

class CStateGlobal : public CGlobalModule
{
public:
    GLOBAL_NOTIFICATION_STATUS
    OnGlobalApplicationStart(IN IHttpApplicationStartProvider *pProvider)
    {
        UNREFERENCED_PARAMETER(pProvider);
        return GL_NOTIFICATION_CONTINUE;
    }
    void Terminate()
    {
        note("terminate global");
        delete this;
    }
};

HRESULT __stdcall RegisterModule(DWORD dwServerVersion, IHttpModuleRegistrationInfo *pModuleInfo,
                                 IHttpServer *pGlobalInfo)
{
    UNREFERENCED_PARAMETER(dwServerVersion);
    UNREFERENCED_PARAMETER(pGlobalInfo);
    note("register");
    g_pState = new CProcessState;
    HRESULT hr = pModuleInfo->SetRequestNotifications(new CStateFactory, RQ_BEGIN_REQUEST, 0);
    if (FAILED(hr))
    {
        return hr;
    }
    return pModuleInfo->SetGlobalNotifications(new CStateGlobal, GL_APPLICATION_START);
}
