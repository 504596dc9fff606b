/*
 * send_filter.cpp - an IIS-style module that transforms response bodies at
 * SendResponse, a piece at a time, built for riis.
 *
 *     g++ -shared -fPIC -I include -o libfilter.so examples/native/cpp/send_filter.cpp
 *
 * Registered for RQ_SEND_RESPONSE, it upper-cases every text/plain body:
 *
 *     GET /notes.txt (a 200 KB file "hello ...")  ->  200 OK
 *                                                     Content-Type: text/plain
 *                                                     Transfer-Encoding: chunked
 *
 *                                                     HELLO ...
 *
 * Other types go as they are. A large body comes 64 KiB per send
 * (ISendResponseProvider::DeferAfter, riis ABI 1.4): the module never
 * holds more than a piece, and makes the next one only once the client
 * has taken the last. A static file's bytes arrive as file chunks, read
 * here with pread; a generated body arrives in memory.
 */
#define _WINSOCKAPI_
#include <windows.h>
#include <sal.h>
#include <httpserv.h>

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* How much of the body each send takes. */
static const ULONGLONG PIECE = 64 * 1024;

/* One instance per request. */
class CUpperFilter : public CHttpModule
{
public:
    CUpperFilter() : m_fActive(FALSE), m_pOutput(NULL) {}
    ~CUpperFilter() { free(m_pOutput); }

    REQUEST_NOTIFICATION_STATUS
    OnSendResponse(
        IN IHttpContext * pHttpContext,
        IN ISendResponseProvider * pProvider
    )
    {
        IHttpResponse * pResponse = pHttpContext->GetResponse();
        if (pResponse == NULL)
        {
            return RQ_NOTIFICATION_CONTINUE;
        }
        /* Decide once, on the send that carries the headers. */
        if (pProvider->GetHeadersBeingSent())
        {
            USHORT cchType = 0;
            PCSTR pszType = pResponse->GetHeader(HttpHeaderContentType, &cchType);
            USHORT cchEncoding = 0;
            pResponse->GetHeader(HttpHeaderContentEncoding, &cchEncoding);
            m_fActive = pszType != NULL && cchType >= 10
                && strncasecmp(pszType, "text/plain", 10) == 0
                && cchEncoding == 0;
            if (m_fActive)
            {
                /* The body is rewritten: neither its length nor its
                 * validators describe what goes out. */
                pResponse->DeleteHeader(HttpHeaderContentLength);
                pResponse->DeleteHeader(HttpHeaderEtag);
                pResponse->DeleteHeader(HttpHeaderAcceptRanges);
            }
        }
        if (!m_fActive)
        {
            return RQ_NOTIFICATION_CONTINUE;
        }

        /* Keep 64 KiB in this send; the rest comes in later ones. */
        BOOL fDeferred = FALSE;
        pProvider->DeferAfter(PIECE, &fDeferred);

        riis_context * ctx = pHttpContext->GetRiisContext();
        const riis_api * api = RiisApi();
        uint32_t count = api->response_entity_chunk_count(ctx);
        size_t cbTotal = 0;
        for (uint32_t i = 0; i < count; i++)
        {
            riis_data_chunk chunk;
            if (api->response_entity_chunk(ctx, i, &chunk) == RIIS_S_OK)
            {
                cbTotal += (size_t)(chunk.type == RIIS_CHUNK_FROM_MEMORY
                    ? chunk.buffer_length : chunk.length);
            }
        }
        /* The last piece's buffer is freed here or by the destructor. */
        free(m_pOutput);
        m_pOutput = (char *)malloc(cbTotal == 0 ? 1 : cbTotal);
        if (m_pOutput == NULL)
        {
            pResponse->SetStatus(500, "Server Error", 0, E_OUTOFMEMORY);
            pResponse->ResetConnection();
            return RQ_NOTIFICATION_CONTINUE;
        }
        size_t cbDone = 0;
        for (uint32_t i = 0; i < count; i++)
        {
            riis_data_chunk chunk;
            if (api->response_entity_chunk(ctx, i, &chunk) != RIIS_S_OK)
            {
                continue;
            }
            if (chunk.type == RIIS_CHUNK_FROM_MEMORY)
            {
                memcpy(m_pOutput + cbDone, chunk.buffer, (size_t)chunk.buffer_length);
                cbDone += (size_t)chunk.buffer_length;
                continue;
            }
            /* A file range: the descriptor is the server's, not ours. */
            size_t cbLeft = (size_t)chunk.length;
            off_t offset = (off_t)chunk.offset;
            while (cbLeft > 0)
            {
                ssize_t n = pread(chunk.file_descriptor, m_pOutput + cbDone, cbLeft, offset);
                if (n <= 0)
                {
                    /* A file that shrank: end the response rather than
                     * send it with a hole. */
                    pResponse->ResetConnection();
                    return RQ_NOTIFICATION_CONTINUE;
                }
                cbDone += (size_t)n;
                cbLeft -= (size_t)n;
                offset += n;
            }
        }
        for (size_t k = 0; k < cbDone; k++)
        {
            char c = m_pOutput[k];
            if (c >= 'a' && c <= 'z')
            {
                m_pOutput[k] = (char)(c - 'a' + 'A');
            }
        }
        riis_data_chunk out;
        memset(&out, 0, sizeof out);
        out.type = RIIS_CHUNK_FROM_MEMORY;
        out.buffer = m_pOutput;
        out.buffer_length = cbDone;
        /* Copied by the server: the buffer is ours to reuse. */
        api->response_set_entity_chunks(ctx, &out, 1);
        return RQ_NOTIFICATION_CONTINUE;
    }

private:
    BOOL m_fActive;
    char * m_pOutput;
};

/* Makes a CUpperFilter for each request. */
class CUpperFilterFactory : public IHttpModuleFactory
{
public:
    HRESULT
    GetHttpModule(
        OUT CHttpModule ** ppModule,
        IN IModuleAllocator * pAllocator
    )
    {
        UNREFERENCED_PARAMETER(pAllocator);
        CUpperFilter * pModule = new CUpperFilter;
        if (pModule == NULL)
        {
            return HRESULT_FROM_WIN32(ERROR_NOT_ENOUGH_MEMORY);
        }
        *ppModule = pModule;
        return S_OK;
    }

    VOID Terminate() { delete this; }
};

/* The entry point riis calls when it loads the library. */
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
    return pModuleInfo->SetRequestNotifications(
        new CUpperFilterFactory,
        RQ_SEND_RESPONSE,
        0
    );
}
