/*
 * request_headers.cpp - answers GET /headers with the request headers an IIS
 * module reads by id and by name, so a test can compare HTTP/1.1 and HTTP/2:
 *
 *     host by id: <GetHeader(HttpHeaderHost)>
 *     host by name: <GetHeader("Host")>
 *     cookie: <GetHeader(HttpHeaderCookie)>
 *
 * A header that is not there reads "(none)". Written with the Microsoft C
 * runtime's string functions an IIS source uses (riis's windows.h has them).
 */
#define _WINSOCKAPI_
#include <windows.h>
#include <sal.h>
#include <httpserv.h>

#include <stdio.h>
#include <string.h>

static const char *shown(PCSTR value) { return value != NULL ? value : "(none)"; }

class CHeadersModule : public CHttpModule
{
public:
    REQUEST_NOTIFICATION_STATUS
    OnBeginRequest(IN IHttpContext *pHttpContext, IN IHttpEventProvider *pProvider)
    {
        UNREFERENCED_PARAMETER(pProvider);
        if (_stricmp(pHttpContext->GetScriptName(), "/HEADERS") != 0)
        {
            return RQ_NOTIFICATION_CONTINUE;
        }
        IHttpRequest *pRequest = pHttpContext->GetRequest();
        char text[1024];
        sprintf_s(text, "host by id: %s\nhost by name: %s\ncookie: %s\n",
                 shown(pRequest->GetHeader(HttpHeaderHost)), shown(pRequest->GetHeader("Host")),
                 shown(pRequest->GetHeader(HttpHeaderCookie)));
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

class CHeadersFactory : public IHttpModuleFactory
{
public:
    HRESULT GetHttpModule(OUT CHttpModule **ppModule, IN IModuleAllocator *pAllocator)
    {
        UNREFERENCED_PARAMETER(pAllocator);
        *ppModule = new CHeadersModule;
        return S_OK;
    }
    void Terminate() { delete this; }
};

HRESULT __stdcall RegisterModule(DWORD dwServerVersion, IHttpModuleRegistrationInfo *pModuleInfo,
                                 IHttpServer *pGlobalInfo)
{
    UNREFERENCED_PARAMETER(dwServerVersion);
    UNREFERENCED_PARAMETER(pGlobalInfo);
    return pModuleInfo->SetRequestNotifications(new CHeadersFactory, RQ_BEGIN_REQUEST, 0);
}
