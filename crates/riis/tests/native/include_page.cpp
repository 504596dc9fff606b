/*
 * include_page.cpp - a server-side include as IIS modules write one: the
 * page's own head and text, then another URL's entity run as a child request
 * with EXECUTE_FLAG_NO_HEADERS and EXECUTE_FLAG_BUFFER_RESPONSE, from a clone
 * made with CLONE_FLAG_NO_PRECONDITION, then the page's end with the status
 * the child ended with.
 *
 * GET /page.shtm includes /hello.txt.
 */
#define _WINSOCKAPI_
#include <windows.h>
#include <sal.h>
#include <httpserv.h>

#include <stdio.h>
#include <string.h>

static HRESULT write_text(IHttpContext *pHttpContext, const char *text)
{
    HTTP_DATA_CHUNK chunk;
    chunk.DataChunkType = HttpDataChunkFromMemory;
    chunk.FromMemory.pBuffer = (PVOID)text;
    chunk.FromMemory.BufferLength = (ULONG)strlen(text);
    DWORD cbSent = 0;
    return pHttpContext->GetResponse()->WriteEntityChunks(&chunk, 1, FALSE, TRUE, &cbSent);
}

class CIncludeModule : public CHttpModule
{
public:
    CIncludeModule() : m_pChild(NULL) {}

    REQUEST_NOTIFICATION_STATUS
    OnExecuteRequestHandler(IN IHttpContext *pHttpContext, IN IHttpEventProvider *pProvider)
    {
        UNREFERENCED_PARAMETER(pProvider);
        IHttpResponse *pResponse = pHttpContext->GetResponse();
        pResponse->Clear();
        pResponse->SetHeader(HttpHeaderContentType, "text/html", 9, TRUE);
        write_text(pHttpContext, "<h1>page</h1>");
        HRESULT hr = pHttpContext->CloneContext(
            CLONE_FLAG_BASICS | CLONE_FLAG_HEADERS | CLONE_FLAG_NO_PRECONDITION, &m_pChild);
        if (SUCCEEDED(hr))
        {
            hr = m_pChild->GetRequest()->SetUrl("/hello.txt", 10, FALSE);
        }
        BOOL fCompletionExpected = FALSE;
        if (SUCCEEDED(hr))
        {
            hr = pHttpContext->ExecuteRequest(
                TRUE, m_pChild, EXECUTE_FLAG_NO_HEADERS | EXECUTE_FLAG_BUFFER_RESPONSE, NULL,
                &fCompletionExpected);
        }
        if (FAILED(hr))
        {
            pResponse->SetStatus(500, "Server Error", 0, hr);
            return RQ_NOTIFICATION_FINISH_REQUEST;
        }
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
        USHORT status = 0, substatus = 0;
        m_pChild->GetResponse()->GetStatus(&status, &substatus);
        m_pChild->ReleaseClonedContext();
        m_pChild = NULL;
        char text[64];
        snprintf(text, sizeof text, "<p>included %u.%u</p>", (unsigned)status,
                 (unsigned)substatus);
        write_text(pHttpContext, text);
        return RQ_NOTIFICATION_FINISH_REQUEST;
    }

private:
    IHttpContext *m_pChild;
};

class CIncludeFactory : public IHttpModuleFactory
{
public:
    HRESULT GetHttpModule(OUT CHttpModule **ppModule, IN IModuleAllocator *pAllocator)
    {
        UNREFERENCED_PARAMETER(pAllocator);
        *ppModule = new CIncludeModule;
        return S_OK;
    }
    void Terminate() { delete this; }
};

HRESULT __stdcall RegisterModule(DWORD dwServerVersion, IHttpModuleRegistrationInfo *pModuleInfo,
                                 IHttpServer *pGlobalInfo)
{
    UNREFERENCED_PARAMETER(dwServerVersion);
    UNREFERENCED_PARAMETER(pGlobalInfo);
    return pModuleInfo->SetRequestNotifications(new CIncludeFactory, RQ_EXECUTE_REQUEST_HANDLER,
                                                0);
}
