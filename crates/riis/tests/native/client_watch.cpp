/*
 * client_watch.cpp - a module whose own thread produces a long answer and
 * asks IHttpConnection::IsConnected to learn when the client has left, as
 * IIS modules that stream or long-poll do.
 *
 *   /check  answers on the request's thread whether the client is connected.
 *   /watch  returns RQ_NOTIFICATION_PENDING; its thread polls IsConnected
 *           (for at most ten seconds) and, once the client is gone, notes
 *           how many times it saw it connected, then signals the request.
 *   /seen   answers what the last /watch thread noted: "seen N gone" once
 *           it saw the client leave, "watching" before.
 */
#define _WINSOCKAPI_
#include <windows.h>
#include <sal.h>
#include <httpserv.h>

#include <atomic>
#include <stdio.h>
#include <string.h>
#include <thread>

static std::atomic<long> g_seen_connected(-1);

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

class CWatchModule : public CHttpModule
{
public:
    REQUEST_NOTIFICATION_STATUS
    OnBeginRequest(IN IHttpContext *pHttpContext, IN IHttpEventProvider *pProvider)
    {
        UNREFERENCED_PARAMETER(pProvider);
        const char *path = pHttpContext->GetScriptName();
        char text[64];
        if (strcmp(path, "/check") == 0)
        {
            snprintf(text, sizeof text, "connected %d\n",
                     pHttpContext->GetConnection()->IsConnected() ? 1 : 0);
            answer(pHttpContext, text);
            return RQ_NOTIFICATION_FINISH_REQUEST;
        }
        if (strcmp(path, "/seen") == 0)
        {
            long seen = g_seen_connected.load();
            if (seen < 0)
            {
                snprintf(text, sizeof text, "watching\n");
            }
            else
            {
                snprintf(text, sizeof text, "seen %ld gone\n", seen);
            }
            answer(pHttpContext, text);
            return RQ_NOTIFICATION_FINISH_REQUEST;
        }
        if (strcmp(path, "/watch") != 0)
        {
            return RQ_NOTIFICATION_CONTINUE;
        }
        g_seen_connected.store(-1);
        std::thread worker([pHttpContext]() {
            IHttpConnection *pConnection = pHttpContext->GetConnection();
            long connected = 0;
            for (int i = 0; i < 1000; i++)
            {
                if (!pConnection->IsConnected())
                {
                    g_seen_connected.store(connected);
                    break;
                }
                connected++;
                Sleep(10);
            }
            /* The request already ended when the client left: this signal
             * is the thread's last use of the context, after which the
             * server disposes the module. */
            pHttpContext->IndicateCompletion(RQ_NOTIFICATION_FINISH_REQUEST);
        });
        worker.detach();
        return RQ_NOTIFICATION_PENDING;
    }
};

class CWatchFactory : public IHttpModuleFactory
{
public:
    HRESULT GetHttpModule(OUT CHttpModule **ppModule, IN IModuleAllocator *pAllocator)
    {
        UNREFERENCED_PARAMETER(pAllocator);
        *ppModule = new CWatchModule;
        return S_OK;
    }
    void Terminate() { delete this; }
};

HRESULT __stdcall RegisterModule(DWORD dwServerVersion, IHttpModuleRegistrationInfo *pModuleInfo,
                                 IHttpServer *pGlobalInfo)
{
    UNREFERENCED_PARAMETER(dwServerVersion);
    UNREFERENCED_PARAMETER(pGlobalInfo);
    return pModuleInfo->SetRequestNotifications(new CWatchFactory, RQ_BEGIN_REQUEST, 0);
}
