/*
 * duplex_echo.cpp - a test module: IIS 8's full duplex in riis. For
 * POST /duplex it answers "ready" at once, then echoes each piece of the
 * body as it arrives, while the next read is already under way, and ends
 * with "bye" at the end of the body. A client that waits for each echo
 * before it sends more gets nowhere without full duplex. The module also
 * takes part in the SendResponse of its own flushes, which come while its
 * read is under way and must leave the read alone. GET /live tells
 * how many instances are alive (its own included): one left behind by a
 * finished request would show.
 */
#define _WINSOCKAPI_
#include <windows.h>
#include <sal.h>
#include <httpserv.h>
#include <stdio.h>
#include <string.h>
#include <atomic>

static IHttpServer *g_pServer = NULL;
static std::atomic<int> g_live(0);

class CDuplexEchoModule : public CHttpModule
{
public:
    CDuplexEchoModule() { g_live++; }
    ~CDuplexEchoModule() { g_live--; }

    REQUEST_NOTIFICATION_STATUS
    OnBeginRequest(IN IHttpContext *pHttpContext, IN IHttpEventProvider *pProvider)
    {
        UNREFERENCED_PARAMETER(pProvider);
        if (strcmp(pHttpContext->GetRequest()->GetUrl(), "/live") == 0)
        {
            char live[32];
            int n = snprintf(live, sizeof(live), "live: %d\n", g_live.load());
            pHttpContext->GetResponse()->Clear();
            Write(pHttpContext->GetResponse(), live, (DWORD)n);
            return RQ_NOTIFICATION_FINISH_REQUEST;
        }
        if (strcmp(pHttpContext->GetRequest()->GetUrl(), "/duplex") != 0)
        {
            return RQ_NOTIFICATION_CONTINUE;
        }
        IHttpContext3 *pContext3 = NULL;
        if (FAILED(HttpGetExtendedInterface(g_pServer, pHttpContext, &pContext3)))
        {
            return RQ_NOTIFICATION_CONTINUE;
        }
        pContext3->EnableFullDuplex();
        IHttpResponse *pResponse = pHttpContext->GetResponse();
        pResponse->Clear();
        pResponse->SetHeader("Content-Type", "text/plain", 10, TRUE);
        Write(pResponse, "ready\n", 6);
        return FlushAndRead(pHttpContext);
    }

    REQUEST_NOTIFICATION_STATUS
    OnSendResponse(IN IHttpContext *pHttpContext, IN ISendResponseProvider *pProvider)
    {
        UNREFERENCED_PARAMETER(pHttpContext);
        UNREFERENCED_PARAMETER(pProvider);
        return RQ_NOTIFICATION_CONTINUE;
    }

    REQUEST_NOTIFICATION_STATUS
    OnAsyncCompletion(IN IHttpContext *pHttpContext, IN DWORD dwNotification,
                      IN BOOL fPostNotification, IN IHttpEventProvider *pProvider,
                      IN IHttpCompletionInfo *pCompletionInfo)
    {
        UNREFERENCED_PARAMETER(dwNotification);
        UNREFERENCED_PARAMETER(fPostNotification);
        UNREFERENCED_PARAMETER(pProvider);
        IHttpCompletionInfo2 *pInfo = NULL;
        if (FAILED(HttpGetExtendedInterface(g_pServer, pCompletionInfo, &pInfo)))
        {
            return RQ_NOTIFICATION_FINISH_REQUEST;
        }
        if (pInfo->GetCompletedOperation() != RIIS_OPERATION_READ)
        {
            // A flush: the read is still under way.
            return RQ_NOTIFICATION_PENDING;
        }
        IHttpResponse *pResponse = pHttpContext->GetResponse();
        if (pInfo->GetCompletionStatus() == HRESULT_FROM_WIN32(ERROR_HANDLE_EOF))
        {
            Write(pResponse, "bye\n", 4);
            return RQ_NOTIFICATION_FINISH_REQUEST;
        }
        if (FAILED(pInfo->GetCompletionStatus()))
        {
            return RQ_NOTIFICATION_FINISH_REQUEST;
        }
        Write(pResponse, "echo:", 5);
        Write(pResponse, m_buffer, pInfo->GetCompletionBytes());
        Write(pResponse, "\n", 1);
        return FlushAndRead(pHttpContext);
    }

private:
    static void Write(IHttpResponse *pResponse, const char *data, DWORD cb)
    {
        HTTP_DATA_CHUNK chunk;
        chunk.DataChunkType = HttpDataChunkFromMemory;
        chunk.FromMemory.pBuffer = (PVOID)data;
        chunk.FromMemory.BufferLength = cb;
        DWORD cbSent = 0;
        pResponse->WriteEntityChunks(&chunk, 1, FALSE, TRUE, &cbSent);
    }

    /* Sends what is written and reads on, both under way at once. */
    REQUEST_NOTIFICATION_STATUS FlushAndRead(IHttpContext *pHttpContext)
    {
        DWORD cbSent = 0;
        BOOL fExpected = FALSE;
        if (FAILED(pHttpContext->GetResponse()->Flush(TRUE, TRUE, &cbSent, &fExpected)))
        {
            return RQ_NOTIFICATION_FINISH_REQUEST;
        }
        DWORD cbRead = 0;
        BOOL fPending = FALSE;
        HRESULT hr = pHttpContext->GetRequest()->ReadEntityBody(m_buffer, sizeof(m_buffer), TRUE,
                                                                &cbRead, &fPending);
        if (FAILED(hr))
        {
            Write(pHttpContext->GetResponse(), "read refused\n", 13);
            return RQ_NOTIFICATION_FINISH_REQUEST;
        }
        return RQ_NOTIFICATION_PENDING;
    }

    char m_buffer[256];
};

class CDuplexEchoFactory : public IHttpModuleFactory
{
public:
    HRESULT GetHttpModule(OUT CHttpModule **ppModule, IN IModuleAllocator *pAllocator)
    {
        UNREFERENCED_PARAMETER(pAllocator);
        *ppModule = new CDuplexEchoModule;
        return S_OK;
    }

    void Terminate() { delete this; }
};

HRESULT __stdcall RegisterModule(DWORD dwServerVersion, IHttpModuleRegistrationInfo *pModuleInfo,
                                 IHttpServer *pGlobalInfo)
{
    UNREFERENCED_PARAMETER(dwServerVersion);
    g_pServer = pGlobalInfo;
    return pModuleInfo->SetRequestNotifications(new CDuplexEchoFactory,
                                                RQ_BEGIN_REQUEST | RQ_SEND_RESPONSE, 0);
}
