/*
 * client_certificate.cpp - a module that reads the client's TLS certificate
 * the IIS way, with IHttpRequest::GetClientCertificate.
 *
 *     g++ -shared -fPIC -I include -o libcert.so examples/native/cpp/client_certificate.cpp
 *
 * Registered for RQ_AUTHORIZE_REQUEST; it answers the requests under
 * /cpp/cert itself, as plain text, one line each:
 *
 *     negotiated=1              the handshake asked for a certificate
 *                               (the site sets client_certificate_ca)
 *     present=1                 the client presented one
 *     size=412                  HTTP_SSL_CLIENT_CERT_INFO::CertEncodedSize
 *     sum=0001a2b3              the DER's bytes added up (32 bits, hex)
 *     der=30820198...           the DER's first 8 bytes, hex
 *     subject=CN=alice          the CERT_SUBJECT server variable
 *     renegotiate=ok            NegotiateClientCertificate's answer
 *                               (or its HRESULT where the site asks
 *                               for no certificate)
 *
 * Without a certificate: present=0, size=0, sum=00000000, der= (empty).
 * Other URLs go on to the rest of the pipeline.
 */
#define _WINSOCKAPI_
#include <windows.h>
#include <sal.h>
#include <httpserv.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Appends to a fixed buffer, cutting what does not fit. */
static void
Append(char * pszBuffer, size_t cbBuffer, size_t * pcbUsed, const char * pszFormat, ...)
{
    if (*pcbUsed + 1 >= cbBuffer)
    {
        return;
    }
    va_list args;
    va_start(args, pszFormat);
    int n = vsnprintf(pszBuffer + *pcbUsed, cbBuffer - *pcbUsed, pszFormat, args);
    va_end(args);
    if (n > 0)
    {
        size_t room = cbBuffer - *pcbUsed - 1;
        *pcbUsed += (size_t)n < room ? (size_t)n : room;
    }
}

class CCertificateModule : public CHttpModule
{
public:
    REQUEST_NOTIFICATION_STATUS
    OnAuthorizeRequest(
        IN IHttpContext * pHttpContext,
        IN IHttpEventProvider * pProvider
    )
    {
        UNREFERENCED_PARAMETER(pProvider);

        IHttpRequest * pRequest = pHttpContext->GetRequest();
        IHttpResponse * pResponse = pHttpContext->GetResponse();
        PCSTR pszUrl = pRequest->GetUrl();
        if (pszUrl == NULL || strncmp(pszUrl, "/cpp/cert", 9) != 0)
        {
            return RQ_NOTIFICATION_CONTINUE;
        }

        HTTP_SSL_CLIENT_CERT_INFO * pInfo = NULL;
        BOOL fNegotiated = FALSE;
        HRESULT hr = pRequest->GetClientCertificate(&pInfo, &fNegotiated);
        if (FAILED(hr))
        {
            pResponse->SetStatus(500, "Server Error", 0, hr);
            return RQ_NOTIFICATION_FINISH_REQUEST;
        }

        char text[512];
        size_t used = 0;
        ULONG cbCert = 0;
        DWORD dwSum = 0;
        char szHead[17] = "";
        if (pInfo != NULL)
        {
            cbCert = pInfo->CertEncodedSize;
            for (ULONG i = 0; i < cbCert; i++)
            {
                dwSum += pInfo->pCertEncoded[i];
            }
            for (ULONG i = 0; i < cbCert && i < 8; i++)
            {
                snprintf(szHead + 2 * i, 3, "%02x", pInfo->pCertEncoded[i]);
            }
        }
        Append(text, sizeof(text), &used,
               "negotiated=%d\npresent=%d\nsize=%lu\nsum=%08lx\nder=%s\n",
               fNegotiated ? 1 : 0, pInfo != NULL ? 1 : 0,
               (unsigned long)cbCert, (unsigned long)dwSum, szHead);

        PCSTR pszSubject = NULL;
        DWORD cchSubject = 0;
        if (FAILED(pHttpContext->GetServerVariable("CERT_SUBJECT", &pszSubject, &cchSubject)) ||
            pszSubject == NULL)
        {
            pszSubject = "";
        }
        Append(text, sizeof(text), &used, "subject=%s\n", pszSubject);

        BOOL fPending = FALSE;
        hr = pRequest->NegotiateClientCertificate(FALSE, &fPending);
        if (SUCCEEDED(hr))
        {
            Append(text, sizeof(text), &used, "renegotiate=ok\n");
        }
        else
        {
            Append(text, sizeof(text), &used, "renegotiate=%08lx\n", (unsigned long)(DWORD)hr);
        }

        pResponse->Clear();
        pResponse->SetHeader(HttpHeaderContentType, "text/plain", 10, TRUE);
        HTTP_DATA_CHUNK chunk;
        chunk.DataChunkType = HttpDataChunkFromMemory;
        chunk.FromMemory.pBuffer = text;
        chunk.FromMemory.BufferLength = (ULONG)used;
        DWORD cbSent = 0;
        hr = pResponse->WriteEntityChunks(&chunk, 1, FALSE, TRUE, &cbSent);
        if (FAILED(hr))
        {
            pResponse->SetStatus(500, "Server Error", 0, hr);
        }
        return RQ_NOTIFICATION_FINISH_REQUEST;
    }
};

class CCertificateFactory : public IHttpModuleFactory
{
public:
    HRESULT
    GetHttpModule(
        OUT CHttpModule ** ppModule,
        IN IModuleAllocator * pAllocator
    )
    {
        UNREFERENCED_PARAMETER(pAllocator);
        CCertificateModule * pModule = new CCertificateModule;
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

    return pModuleInfo->SetRequestNotifications(new CCertificateFactory, RQ_AUTHORIZE_REQUEST, 0);
}
