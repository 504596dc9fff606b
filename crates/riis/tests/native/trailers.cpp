/*
 * trailers.cpp - a test module: IIS 10's IHttpResponse4 in riis. It answers
 * every request in BeginRequest with a gRPC-style body and its status in
 * trailers (through HttpGetExtendedInterface, as an IIS module gets it),
 * and reports what GetTrailer and a refused SetTrailer gave in headers.
 */
#define _WINSOCKAPI_
#include <windows.h>
#include <sal.h>
#include <httpserv.h>

static IHttpServer *g_pServer = NULL;

class CTrailersModule : public CHttpModule
{
public:
    REQUEST_NOTIFICATION_STATUS
    OnBeginRequest(IN IHttpContext *pHttpContext, IN IHttpEventProvider *pProvider)
    {
        UNREFERENCED_PARAMETER(pProvider);
        IHttpResponse4 *pResponse = NULL;
        if (FAILED(HttpGetExtendedInterface(g_pServer, pHttpContext->GetResponse(), &pResponse)))
        {
            return RQ_NOTIFICATION_CONTINUE;
        }
        pResponse->Clear();
        pResponse->SetHeader("Content-Type", "application/grpc", 16, TRUE);

        pResponse->SetTrailer("grpc-status", "5", 1, TRUE);
        pResponse->SetTrailer("grpc-status", "0", 1, TRUE);
        pResponse->SetTrailer("grpc-message", "fine", 4, FALSE);
        pResponse->SetTrailer("x-dropped", "1", 1, TRUE);
        pResponse->DeleteTrailer("x-dropped");
        HRESULT refused = pResponse->SetTrailer("Content-Length", "3", 1, TRUE);

        USHORT cch = 0;
        PCSTR pszStatus = pResponse->GetTrailer("grpc-status", &cch);
        pResponse->SetHeader("X-Trailer-Status", pszStatus != NULL ? pszStatus : "none",
                             (USHORT)(pszStatus != NULL ? cch : 4), TRUE);
        const char *pszRefused = refused == E_INVALIDARG ? "refused" : "accepted";
        pResponse->SetHeader("X-Content-Length-Trailer", pszRefused,
                             (USHORT)strlen(pszRefused), TRUE);

        static const char body[] = "\0\0\0\0\x02ok";
        HTTP_DATA_CHUNK chunk;
        chunk.DataChunkType = HttpDataChunkFromMemory;
        chunk.FromMemory.pBuffer = (PVOID)body;
        chunk.FromMemory.BufferLength = 7;
        DWORD cbSent = 0;
        pResponse->WriteEntityChunks(&chunk, 1, FALSE, TRUE, &cbSent);
        return RQ_NOTIFICATION_FINISH_REQUEST;
    }
};

class CTrailersFactory : public IHttpModuleFactory
{
public:
    HRESULT GetHttpModule(OUT CHttpModule **ppModule, IN IModuleAllocator *pAllocator)
    {
        UNREFERENCED_PARAMETER(pAllocator);
        *ppModule = new CTrailersModule;
        return S_OK;
    }

    void Terminate() { delete this; }
};

HRESULT __stdcall RegisterModule(DWORD dwServerVersion, IHttpModuleRegistrationInfo *pModuleInfo,
                                 IHttpServer *pGlobalInfo)
{
    UNREFERENCED_PARAMETER(dwServerVersion);
    g_pServer = pGlobalInfo;
    return pModuleInfo->SetRequestNotifications(new CTrailersFactory, RQ_BEGIN_REQUEST, 0);
}
