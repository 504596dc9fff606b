/*
 * global_and_context.cpp - a global module and a request module in one
 * library, module contexts, server variables and priorities, in the IIS
 * style, built for riis.
 *
 *     g++ -shared -fPIC -I include -o libcontext.so examples/native/cpp/global_and_context.cpp
 *
 * The global part (GL_PRE_BEGIN_REQUEST) adds the request header
 * "X-Cpp-Pre-Begin: seen" to every request before the pipeline starts, and
 * answers the runtime status query (GL_RSCA_QUERY, `riis status`) with the
 * line "CppModule cleanups: N".
 *
 * The request part (RQ_BEGIN_REQUEST, priority HIGH) answers the URLs under
 * /cpp/ and lets every other request continue to the next module (with
 * StaticFile after it in [[modules]], /hello.txt is the file):
 *
 *   GET /cpp/stats  ->  200, Content-Type: text/plain, Cache-Control: no-store
 *                       body "cleanups: N\n": how many request contexts this
 *                       module stored have been cleaned up so far (each
 *                       answered /cpp/ request stores one; riis cleans it up
 *                       once, when the request ends).
 *
 *   GET /cpp/<any>  ->  200 OK
 *                       Content-Type: text/plain
 *                       Cache-Control: no-store
 *                       X-Cpp-Pre-Begin: seen          (the header the global
 *                                                       part added, read back)
 *                       X-Cpp-Remote-Addr: 127.0.0.1   (REMOTE_ADDR)
 *                       X-Cpp-Site-Requests: N         (the /cpp/ requests of
 *                                                       this site so far,
 *                                                       this one included)
 *                       X-Cpp-Greeting: <text>         (key `greeting` of the
 *                                                       module's section
 *                                                       [cpp_context] for the
 *                                                       request's location,
 *                                                       "none" when unset)
 *
 *                       url: /cpp/<any>\n
 *                       method: GET\n
 *                       note: stored at BeginRequest\n  (the request context,
 *                                                        read back)
 *
 * Any other URL: the module returns RQ_NOTIFICATION_CONTINUE and the rest of
 * the pipeline answers (the request still carries X-Cpp-Pre-Begin).
 */
#define _WINSOCKAPI_
#include <windows.h>
#include <sal.h>
#include <httpserv.h>
#include <stdio.h>

#include <atomic>
#include <string>

/* Request contexts cleaned up so far (any thread). */
static std::atomic<unsigned long> g_cleanups(0);

/* The module's id, as RegisterModule received it. */
static HTTP_MODULE_ID g_pModuleId = NULL;

/* The module's configuration section, [cpp_context] in riis.toml (IIS has
 * no call for this: the C ABI's declare_section and config_value). */
static uint32_t g_section = 0;

/* ------------------------------------------------------------ global part */

class CPreBeginModule : public CGlobalModule
{
public:
    GLOBAL_NOTIFICATION_STATUS
    OnGlobalPreBeginRequest(
        IN IPreBeginRequestProvider * pProvider
    )
    {
        IHttpRequest * pRequest = pProvider->GetHttpContext()->GetRequest();
        const char * pszValue = "seen";
        pRequest->SetHeader("X-Cpp-Pre-Begin", pszValue, (USHORT)strlen(pszValue), TRUE);
        return GL_NOTIFICATION_CONTINUE;
    }

    GLOBAL_NOTIFICATION_STATUS
    OnGlobalRSCAQuery(
        IN IGlobalRSCAQueryProvider * pProvider
    )
    {
        if (strcmp(pProvider->GetFunctionName(), "status") != 0)
        {
            return GL_NOTIFICATION_CONTINUE;
        }
        /* Start small and grow, as an answer of unknown length would. */
        BYTE * pbBuffer = NULL;
        HRESULT hr = pProvider->GetOutputBuffer(8, &pbBuffer);
        if (FAILED(hr))
        {
            pProvider->SetResult(0, hr);
            return GL_NOTIFICATION_CONTINUE;
        }
        /* The first bytes go in the small buffer; the resize keeps them. */
        const char szPrefix[] = "CppModule";
        memcpy(pbBuffer, szPrefix, 8);
        char szLine[64];
        int cchLine = snprintf(szLine, sizeof szLine, "CppModule cleanups: %lu\n",
                               g_cleanups.load());
        hr = pProvider->ResizeOutputBuffer((DWORD)cchLine, 8, &pbBuffer);
        if (FAILED(hr))
        {
            pProvider->SetResult(0, hr);
            return GL_NOTIFICATION_CONTINUE;
        }
        memcpy(pbBuffer + 8, szLine + 8, (size_t)cchLine - 8);
        pProvider->SetResult((DWORD)cchLine, S_OK);
        return GL_NOTIFICATION_CONTINUE;
    }

    VOID
    Terminate()
    {
        delete this;
    }
};

/* ------------------------------------------------------ module contexts */

/* A note kept for one request; the server cleans it up when it ends. */
class CRequestNote : public IHttpStoredContext
{
public:
    explicit CRequestNote(const char * pszText) : m_text(pszText) {}

    const char * GetText() const { return m_text.c_str(); }

    VOID
    CleanupStoredContext()
    {
        g_cleanups++;
        delete this;
    }

private:
    std::string m_text;
};

/* A counter shared by the site's requests (hence atomic). */
class CSiteCounter : public IHttpStoredContext
{
public:
    CSiteCounter() : m_count(0) {}

    unsigned long Increment() { return ++m_count; }

    VOID
    CleanupStoredContext()
    {
        delete this;
    }

private:
    std::atomic<unsigned long> m_count;
};

/* ----------------------------------------------------------- request part */

class CContextModule : public CHttpModule
{
public:
    /* The factory's allocator: the request's memory, kept for the
       instance's own calls. */
    explicit CContextModule(IModuleAllocator * pAllocator)
        : m_pAllocator(pAllocator)
    {
    }

    REQUEST_NOTIFICATION_STATUS
    OnBeginRequest(
        IN IHttpContext * pHttpContext,
        IN IHttpEventProvider * pProvider
    )
    {
        UNREFERENCED_PARAMETER(pProvider);

        PCSTR pszUrl = NULL;
        DWORD cchUrl = 0;
        if (FAILED(pHttpContext->GetServerVariable("URL", &pszUrl, &cchUrl)) ||
            strncmp(pszUrl, "/cpp/", 5) != 0)
        {
            /* Not ours: let the rest of the pipeline answer. */
            return RQ_NOTIFICATION_CONTINUE;
        }

        IHttpResponse * pResponse = pHttpContext->GetResponse();
        pResponse->Clear();
        SetText(pResponse, HttpHeaderContentType, "text/plain");
        SetText(pResponse, HttpHeaderCacheControl, "no-store");

        /* Request memory: freed with the request, never by the module. */
        char * pszCopy = static_cast<char *>(m_pAllocator->AllocateMemory(cchUrl + 1));
        if (pszCopy != NULL)
        {
            memcpy(pszCopy, pszUrl, cchUrl);
            SetText(pResponse, "X-Cpp-Allocated", pszCopy);
        }

        char szLine[256];
        if (strcmp(pszUrl, "/cpp/stats") == 0)
        {
            snprintf(szLine, sizeof szLine, "cleanups: %lu\n", g_cleanups.load());
            Write(pResponse, szLine);
            return RQ_NOTIFICATION_FINISH_REQUEST;
        }

        /* The header the global part added before the pipeline started. */
        USHORT cchPre = 0;
        PCSTR pszPre = pHttpContext->GetRequest()->GetHeader("X-Cpp-Pre-Begin", &cchPre);
        std::string pre = pszPre != NULL ? std::string(pszPre, cchPre) : "missing";
        SetText(pResponse, "X-Cpp-Pre-Begin", pre.c_str());

        PCSTR pszRemote = NULL;
        DWORD cchRemote = 0;
        if (SUCCEEDED(pHttpContext->GetServerVariable("REMOTE_ADDR", &pszRemote, &cchRemote)))
        {
            SetText(pResponse, "X-Cpp-Remote-Addr", pszRemote);
        }

        /* Where the URL lies: the configuration path of its location, and
           the folder of its virtual directory (the site's root, or a
           location's physical_path). */
        IMetadataInfo * pMetadata = pHttpContext->GetMetadata();
        SetText(pResponse, "X-Cpp-Meta-Path", pMetadata->GetMetaPath());
        SetText(pResponse, "X-Cpp-Vr-Path", pMetadata->GetVrPath());

        /* The request's location's [cpp_context] greeting. */
        PCSTR pszGreeting =
            RiisApi()->config_value(pHttpContext->GetRiisContext(), g_section, "greeting");
        SetText(pResponse, "X-Cpp-Greeting", pszGreeting != NULL ? pszGreeting : "none");

        /* A request context, read back below. */
        IHttpModuleContextContainer * pContainer = pHttpContext->GetModuleContextContainer();
        CRequestNote * pNote = new CRequestNote("stored at BeginRequest");
        if (FAILED(pContainer->SetModuleContext(pNote, g_pModuleId)))
        {
            delete pNote;
        }

        /* A site context: the first request stores the counter; one that
           loses the race gets ERROR_ALREADY_ASSIGNED and uses the winner's. */
        IHttpModuleContextContainer * pSite = pHttpContext->GetSite()->GetModuleContextContainer();
        CSiteCounter * pCounter = static_cast<CSiteCounter *>(pSite->GetModuleContext(g_pModuleId));
        if (pCounter == NULL)
        {
            CSiteCounter * pNew = new CSiteCounter;
            if (FAILED(pSite->SetModuleContext(pNew, g_pModuleId)))
            {
                delete pNew;
            }
            pCounter = static_cast<CSiteCounter *>(pSite->GetModuleContext(g_pModuleId));
        }
        if (pCounter != NULL)
        {
            snprintf(szLine, sizeof szLine, "%lu", pCounter->Increment());
            SetText(pResponse, "X-Cpp-Site-Requests", szLine);
        }

        snprintf(szLine, sizeof szLine, "url: %s\n", pszUrl);
        Write(pResponse, szLine);
        snprintf(szLine, sizeof szLine, "method: %s\n",
                 pHttpContext->GetRequest()->GetHttpMethod());
        Write(pResponse, szLine);

        CRequestNote * pStored =
            static_cast<CRequestNote *>(pContainer->GetModuleContext(g_pModuleId));
        snprintf(szLine, sizeof szLine, "note: %s\n",
                 pStored != NULL ? pStored->GetText() : "(none)");
        Write(pResponse, szLine);
        return RQ_NOTIFICATION_FINISH_REQUEST;
    }

private:
    IModuleAllocator * m_pAllocator;

    static void SetText(IHttpResponse * pResponse, HTTP_HEADER_ID id, const char * pszValue)
    {
        pResponse->SetHeader(id, pszValue, (USHORT)strlen(pszValue), TRUE);
    }

    static void SetText(IHttpResponse * pResponse, const char * pszName, const char * pszValue)
    {
        pResponse->SetHeader(pszName, pszValue, (USHORT)strlen(pszValue), TRUE);
    }

    static void Write(IHttpResponse * pResponse, const char * pszText)
    {
        HTTP_DATA_CHUNK chunk;
        chunk.DataChunkType = HttpDataChunkFromMemory;
        chunk.FromMemory.pBuffer = (PVOID)pszText;
        chunk.FromMemory.BufferLength = (ULONG)strlen(pszText);
        DWORD cbSent = 0;
        HRESULT hr = pResponse->WriteEntityChunks(&chunk, 1, FALSE, TRUE, &cbSent);
        if (FAILED(hr))
        {
            pResponse->SetStatus(500, "Server Error", 0, hr);
        }
    }
};

class CContextFactory : public IHttpModuleFactory
{
public:
    HRESULT
    GetHttpModule(
        OUT CHttpModule ** ppModule,
        IN IModuleAllocator * pAllocator
    )
    {
        CContextModule * pModule = new CContextModule(pAllocator);
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

    g_pModuleId = pModuleInfo->GetId();

    HRESULT hrSection =
        RiisApi()->declare_section(pModuleInfo->GetRiisRegistration(), "cpp_context", &g_section);
    if (FAILED(hrSection))
    {
        return hrSection;
    }

    HRESULT hr = pModuleInfo->SetRequestNotifications(new CContextFactory, RQ_BEGIN_REQUEST, 0);
    if (FAILED(hr))
    {
        return hr;
    }
    hr = pModuleInfo->SetPriorityForRequestNotification(RQ_BEGIN_REQUEST, PRIORITY_ALIAS_HIGH);
    if (FAILED(hr))
    {
        return hr;
    }
    return pModuleInfo->SetGlobalNotifications(new CPreBeginModule,
                                               GL_PRE_BEGIN_REQUEST | GL_RSCA_QUERY);
}
