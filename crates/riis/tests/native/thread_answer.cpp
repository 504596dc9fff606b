/*
 * thread_answer.cpp - a module whose own thread answers the request, as IIS
 * modules that hand work to a pool do: OnBeginRequest returns
 * RQ_NOTIFICATION_PENDING, and the thread sets the status and a header,
 * writes the body, then calls IndicateCompletion (or, for /post,
 * PostCompletion, and OnAsyncCompletion adds a line).
 */
#define _WINSOCKAPI_
#include <windows.h>
#include <sal.h>
#include <httpserv.h>

#include <string.h>
#include <thread>

static void write_text(IHttpContext *pHttpContext, const char *text)
{
    HTTP_DATA_CHUNK chunk;
    chunk.DataChunkType = HttpDataChunkFromMemory;
    chunk.FromMemory.pBuffer = (PVOID)text;
    chunk.FromMemory.BufferLength = (ULONG)strlen(text);
    DWORD cbSent = 0;
    pHttpContext->GetResponse()->WriteEntityChunks(&chunk, 1, FALSE, TRUE, &cbSent);
}

class CThreadModule : public CHttpModule
{
public:
    REQUEST_NOTIFICATION_STATUS
    OnBeginRequest(IN IHttpContext *pHttpContext, IN IHttpEventProvider *pProvider)
    {
        UNREFERENCED_PARAMETER(pProvider);
        bool post = strcmp(pHttpContext->GetScriptName(), "/post") == 0;
        std::thread worker([pHttpContext, post]() {
            /* /post writes at once, likely while OnBeginRequest still runs;
             * /indicate once the request is parked. */
            if (!post)
            {
                Sleep(10);
            }
            IHttpResponse *pResponse = pHttpContext->GetResponse();
            pResponse->Clear();
            pResponse->SetStatus(201, "Created");
            pResponse->SetHeader("X-From-Thread", "1", 1, TRUE);
            pResponse->SetHeader(HttpHeaderContentType, "text/plain", 10, TRUE);
            write_text(pHttpContext, "written by the module's thread\n");
            if (post)
            {
                pHttpContext->PostCompletion(0);
            }
            else
            {
                pHttpContext->IndicateCompletion(RQ_NOTIFICATION_FINISH_REQUEST);
            }
        });
        worker.detach();
        return RQ_NOTIFICATION_PENDING;
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
        write_text(pHttpContext, "and completed on the request's thread\n");
        return RQ_NOTIFICATION_FINISH_REQUEST;
    }
};

class CThreadFactory : public IHttpModuleFactory
{
public:
    HRESULT GetHttpModule(OUT CHttpModule **ppModule, IN IModuleAllocator *pAllocator)
    {
        UNREFERENCED_PARAMETER(pAllocator);
        *ppModule = new CThreadModule;
        return S_OK;
    }
    void Terminate() { delete this; }
};

HRESULT __stdcall RegisterModule(DWORD dwServerVersion, IHttpModuleRegistrationInfo *pModuleInfo,
                                 IHttpServer *pGlobalInfo)
{
    UNREFERENCED_PARAMETER(dwServerVersion);
    UNREFERENCED_PARAMETER(pGlobalInfo);
    return pModuleInfo->SetRequestNotifications(new CThreadFactory, RQ_BEGIN_REQUEST, 0);
}
