/*
 * custom_notify.cpp - a test module: custom notifications between C++
 * modules, and from a raiser that is not C++. The library is registered
 * twice; for /notify the first instance, in BeginRequest:
 *   - raises "riis-test/bump" with an object of its own class, which the
 *     second instance casts back to that class and counts on (as IIS
 *     modules do with their own ICustomNotificationProvider classes);
 *   - raises "riis-test/cookie" through the C ABI with a number as the
 *     data, as a C module may: the second instance gets it as a
 *     CRiisCustomNotification whose GetData() is that number, never read;
 * and answers "bump=N cookie=M".
 */
#define _WINSOCKAPI_
#include <windows.h>
#include <sal.h>
#include <httpserv.h>

#include <stdio.h>

/* What a C raiser might pass: a number, aligned and above 64 KiB, at which
 * nothing is mapped. */
static void *const COOKIE = (void *)(uintptr_t)0x10000;

/* Cookies the second instance saw with the right data. */
static int g_cookies = 0;

class CBump : public ICustomNotificationProvider
{
public:
    CBump() : hits(0) {}
    PCSTR QueryNotificationType(VOID) { return "riis-test/bump"; }
    VOID SetErrorStatus(HRESULT hrError) { UNREFERENCED_PARAMETER(hrError); }
    int hits;
};

class CNotifyModule : public CHttpModule
{
public:
    REQUEST_NOTIFICATION_STATUS
    OnBeginRequest(IN IHttpContext *pHttpContext, IN IHttpEventProvider *pProvider)
    {
        UNREFERENCED_PARAMETER(pProvider);
        if (strcmp(pHttpContext->GetRequest()->GetUrl(), "/notify") != 0)
        {
            return RQ_NOTIFICATION_CONTINUE;
        }
        CBump bump;
        BOOL fCompletionExpected = FALSE;
        pHttpContext->NotifyCustomNotification(&bump, &fCompletionExpected);
        RiisApi()->raise_custom_notification(pHttpContext->GetRiisContext(), "riis-test/cookie",
                                             COOKIE);

        char body[64];
        int n = snprintf(body, sizeof body, "bump=%d cookie=%d", bump.hits, g_cookies);
        IHttpResponse *pResponse = pHttpContext->GetResponse();
        pResponse->Clear();
        pResponse->SetHeader("Content-Type", "text/plain", 10, TRUE);
        HTTP_DATA_CHUNK chunk;
        chunk.DataChunkType = HttpDataChunkFromMemory;
        chunk.FromMemory.pBuffer = body;
        chunk.FromMemory.BufferLength = (ULONG)n;
        DWORD cbSent = 0;
        pResponse->WriteEntityChunks(&chunk, 1, FALSE, TRUE, &cbSent);
        return RQ_NOTIFICATION_FINISH_REQUEST;
    }

    REQUEST_NOTIFICATION_STATUS
    OnCustomRequestNotification(IN IHttpContext *pHttpContext,
                                IN ICustomNotificationProvider *pProvider)
    {
        UNREFERENCED_PARAMETER(pHttpContext);
        PCSTR type = pProvider->QueryNotificationType();
        if (strcmp(type, "riis-test/bump") == 0)
        {
            static_cast<CBump *>(pProvider)->hits++;
        }
        else if (strcmp(type, "riis-test/cookie") == 0 &&
                 static_cast<CRiisCustomNotification *>(pProvider)->GetData() == COOKIE)
        {
            g_cookies++;
        }
        return RQ_NOTIFICATION_CONTINUE;
    }
};

class CNotifyFactory : public IHttpModuleFactory
{
public:
    HRESULT GetHttpModule(OUT CHttpModule **ppModule, IN IModuleAllocator *pAllocator)
    {
        UNREFERENCED_PARAMETER(pAllocator);
        *ppModule = new CNotifyModule;
        return S_OK;
    }

    void Terminate() { delete this; }
};

HRESULT __stdcall RegisterModule(DWORD dwServerVersion, IHttpModuleRegistrationInfo *pModuleInfo,
                                 IHttpServer *pGlobalInfo)
{
    UNREFERENCED_PARAMETER(dwServerVersion);
    UNREFERENCED_PARAMETER(pGlobalInfo);
    return pModuleInfo->SetRequestNotifications(new CNotifyFactory,
                                                RQ_BEGIN_REQUEST | RQ_CUSTOM_NOTIFICATION, 0);
}
