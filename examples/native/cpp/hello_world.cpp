/*
 * hello_world.cpp - the smallest IIS-style native module, built for riis.
 *
 *     g++ -shared -fPIC -I include -o libhello.so examples/native/cpp/hello_world.cpp
 *
 * Registered for RQ_BEGIN_REQUEST, it answers every request itself:
 *
 *     GET /anything  ->  200 OK
 *                        Content-Type: text/plain
 *                        Content-Length: 25
 *
 *                        Hello from a C++ module!\n
 *
 * (HEAD gets the same status and headers without the body.) No later
 * module or handler runs: OnBeginRequest returns
 * RQ_NOTIFICATION_FINISH_REQUEST.
 */
#define _WINSOCKAPI_
#include <windows.h>
#include <sal.h>
#include <httpserv.h>

/* One instance per request. */
class CHelloModule : public CHttpModule
{
public:
    REQUEST_NOTIFICATION_STATUS
    OnBeginRequest(
        IN IHttpContext * pHttpContext,
        IN IHttpEventProvider * pProvider
    )
    {
        UNREFERENCED_PARAMETER(pProvider);

        HRESULT hr;
        IHttpResponse * pResponse = pHttpContext->GetResponse();
        if (pResponse == NULL)
        {
            return RQ_NOTIFICATION_CONTINUE;
        }

        /* Start from an empty response, as plain text. */
        pResponse->Clear();
        const char * pszType = "text/plain";
        pResponse->SetHeader(HttpHeaderContentType, pszType, (USHORT)strlen(pszType), TRUE);

        /* One chunk of body from memory (copied by the server). */
        const char * pszGreeting = "Hello from a C++ module!\n";
        HTTP_DATA_CHUNK chunk;
        chunk.DataChunkType = HttpDataChunkFromMemory;
        chunk.FromMemory.pBuffer = (PVOID)pszGreeting;
        chunk.FromMemory.BufferLength = (ULONG)strlen(pszGreeting);

        DWORD cbSent = 0;
        hr = pResponse->WriteEntityChunks(&chunk, 1, FALSE, TRUE, &cbSent);
        if (FAILED(hr))
        {
            pResponse->SetStatus(500, "Server Error", 0, hr);
        }

        /* The response is complete: skip the rest of the pipeline. */
        return RQ_NOTIFICATION_FINISH_REQUEST;
    }
};

/* Makes a CHelloModule for each request. */
class CHelloFactory : public IHttpModuleFactory
{
public:
    HRESULT
    GetHttpModule(
        OUT CHttpModule ** ppModule,
        IN IModuleAllocator * pAllocator
    )
    {
        UNREFERENCED_PARAMETER(pAllocator);

        CHelloModule * pModule = new CHelloModule;
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

/* The entry point the server calls once, at startup. */
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

    return pModuleInfo->SetRequestNotifications(new CHelloFactory, RQ_BEGIN_REQUEST, 0);
}
