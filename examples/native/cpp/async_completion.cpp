/*
 * async_completion.cpp - asynchronous writes, flushes and OnAsyncCompletion
 * in the IIS style, built for riis.
 *
 *     g++ -shared -fPIC -I include -o libasync.so examples/native/cpp/async_completion.cpp
 *
 * Registered for RQ_BEGIN_REQUEST and RQ_MAP_REQUEST_HANDLER:
 *
 *   1. OnBeginRequest clears the response, makes it text/plain and writes
 *      the first line with fAsync = TRUE. riis copies the bytes at once, so
 *      no completion is expected and the request continues.
 *   2. OnMapRequestHandler flushes asynchronously with more data to come
 *      (Flush(TRUE, TRUE, ...)): the status line, the headers and the first
 *      line go out, chunked, and the module returns RQ_NOTIFICATION_PENDING.
 *   3. OnAsyncCompletion receives the body bytes that flush sent (the 28
 *      bytes of the first line) and the status S_OK, appends a line with
 *      them and finishes the request (RQ_NOTIFICATION_FINISH_REQUEST: no
 *      handler runs).
 *
 * So an HTTP/1.1 GET of any URL answers
 *
 *     200 OK
 *     Content-Type: text/plain
 *     Transfer-Encoding: chunked        (the body was flushed while open)
 *
 *     first line, written at once\n
 *     async completion: 28 bytes, status 0x00000000\n
 *
 * sent as two chunks, one per line. An HTTP/1.0 request gets the same
 * status, Content-Type and body, without Transfer-Encoding, delimited by the
 * closing of the connection; HEAD gets the status and headers only.
 */
#define _WINSOCKAPI_
#include <windows.h>
#include <sal.h>
#include <httpserv.h>
#include <stdio.h>

class CAsyncModule : public CHttpModule
{
public:
    REQUEST_NOTIFICATION_STATUS
    OnBeginRequest(
        IN IHttpContext * pHttpContext,
        IN IHttpEventProvider * pProvider
    )
    {
        UNREFERENCED_PARAMETER(pProvider);

        IHttpResponse * pResponse = pHttpContext->GetResponse();
        pResponse->Clear();
        const char * pszType = "text/plain";
        pResponse->SetHeader(HttpHeaderContentType, pszType, (USHORT)strlen(pszType), TRUE);

        BOOL fCompletionExpected = FALSE;
        HRESULT hr = WriteLine(pResponse, "first line, written at once\n", TRUE,
                               &fCompletionExpected);
        if (FAILED(hr))
        {
            pResponse->SetStatus(500, "Server Error", 0, hr);
            return RQ_NOTIFICATION_FINISH_REQUEST;
        }
        /* In IIS an asynchronous write may still be in flight; in riis
           fCompletionExpected is always FALSE here. */
        return fCompletionExpected ? RQ_NOTIFICATION_PENDING : RQ_NOTIFICATION_CONTINUE;
    }

    REQUEST_NOTIFICATION_STATUS
    OnMapRequestHandler(
        IN IHttpContext * pHttpContext,
        IN IMapHandlerProvider * pProvider
    )
    {
        UNREFERENCED_PARAMETER(pProvider);

        DWORD cbSent = 0;
        BOOL fCompletionExpected = FALSE;
        HRESULT hr = pHttpContext->GetResponse()->Flush(TRUE, TRUE, &cbSent,
                                                        &fCompletionExpected);
        if (FAILED(hr))
        {
            pHttpContext->GetResponse()->SetStatus(500, "Server Error", 0, hr);
            return RQ_NOTIFICATION_FINISH_REQUEST;
        }
        if (fCompletionExpected)
        {
            /* OnAsyncCompletion follows once the bytes are sent. */
            return RQ_NOTIFICATION_PENDING;
        }
        return RQ_NOTIFICATION_FINISH_REQUEST;
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
        UNREFERENCED_PARAMETER(fPostNotification);
        UNREFERENCED_PARAMETER(pProvider);

        if (dwNotification != RQ_MAP_REQUEST_HANDLER)
        {
            /* A completion of the BeginRequest write (never in riis). */
            return RQ_NOTIFICATION_CONTINUE;
        }

        char szLine[96];
        snprintf(szLine, sizeof szLine, "async completion: %lu bytes, status 0x%08X\n",
                 (unsigned long)pCompletionInfo->GetCompletionBytes(),
                 (unsigned)pCompletionInfo->GetCompletionStatus());
        BOOL fCompletionExpected = FALSE;
        WriteLine(pHttpContext->GetResponse(), szLine, FALSE, &fCompletionExpected);
        return RQ_NOTIFICATION_FINISH_REQUEST;
    }

private:
    /* Appends one line of text to the response body. */
    static HRESULT WriteLine(IHttpResponse * pResponse, const char * pszLine, BOOL fAsync,
                             BOOL * pfCompletionExpected)
    {
        HTTP_DATA_CHUNK chunk;
        chunk.DataChunkType = HttpDataChunkFromMemory;
        chunk.FromMemory.pBuffer = (PVOID)pszLine;
        chunk.FromMemory.BufferLength = (ULONG)strlen(pszLine);
        DWORD cbSent = 0;
        return pResponse->WriteEntityChunks(&chunk, 1, fAsync, TRUE, &cbSent,
                                            pfCompletionExpected);
    }
};

class CAsyncFactory : public IHttpModuleFactory
{
public:
    HRESULT
    GetHttpModule(
        OUT CHttpModule ** ppModule,
        IN IModuleAllocator * pAllocator
    )
    {
        UNREFERENCED_PARAMETER(pAllocator);

        CAsyncModule * pModule = new CAsyncModule;
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

    return pModuleInfo->SetRequestNotifications(new CAsyncFactory,
                                                RQ_BEGIN_REQUEST | RQ_MAP_REQUEST_HANDLER, 0);
}
