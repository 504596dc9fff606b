/*
 * crt_shims.cpp - checks the Microsoft C runtime string functions of
 * include/windows.h against what Microsoft documents for them; exits 0
 * when every check holds (run by tests/cpp_modules.rs).
 */
#include <windows.h>
#include <winsock2.h>
#include <ws2tcpip.h>
/* The checks hold whatever the build defines. */
#undef NDEBUG
#include <assert.h>
#include <stdio.h>
int main() {
    /* The array forms, the size given. */
    char b[8];
    assert(strcpy_s(b, "abc") == 0 && strcmp(b, "abc") == 0);
    assert(strcat_s(b, "defg") == 0 && strcmp(b, "abcdefg") == 0);
    assert(strcat_s(b, "h") == ERANGE && b[0] == 0);
    assert(sprintf_s(b, "%d-%s", 12, "ab") == 5 && strcmp(b, "12-ab") == 0);
    assert(sprintf_s(b, sizeof b, "%s", "123456789") == -1 && b[0] == 0);
    /* _snprintf: no NUL and -1 when cut; the length when it fits exactly;
     * the needed length for a size query. */
    char c[4] = {'x','x','x','x'};
    assert(_snprintf(c, 4, "%s", "abcdef") == -1 && memcmp(c, "abcd", 4) == 0);
    assert(_snprintf(c, 4, "%s", "ab") == 2 && strcmp(c, "ab") == 0);
    assert(_snprintf(c, 4, "%s", "abcd") == 4 && memcmp(c, "abcd", 4) == 0);
    assert(_snprintf(NULL, 0, "%s-%d", "abc", 42) == 6);
    assert(_stricmp("Host", "HOST") == 0 && _strnicmp("abcX", "ABCy", 3) == 0);
    assert(HRESULT_FROM_WIN32(ERROR_CONNECTION_ABORTED) == (HRESULT)0x800704D4u);

    /* Interlocked: the new value, or the old one for the exchanges. */
    volatile LONG count = 0;
    assert(InterlockedIncrement(&count) == 1 && InterlockedIncrement(&count) == 2);
    assert(InterlockedDecrement(&count) == 1);
    assert(InterlockedExchangeAdd(&count, 5) == 1 && count == 6);
    assert(InterlockedExchange(&count, 9) == 6 && count == 9);
    assert(InterlockedCompareExchange(&count, 4, 7) == 9 && count == 9);
    assert(InterlockedCompareExchange(&count, 4, 9) == 9 && count == 4);
    volatile LONG64 wide = 0;
    assert(InterlockedIncrement64(&wide) == 1 && InterlockedDecrement64(&wide) == 0);
    int target = 0;
    PVOID slot = NULL;
    assert(InterlockedCompareExchangePointer(&slot, &target, NULL) == NULL && slot == &target);
    /* Counted from four threads at once, under a recursive critical
     * section entered twice. */
    static volatile LONG shared = 0;
    static long locked = 0;
    static CRITICAL_SECTION section;
    InitializeCriticalSection(&section);
    struct Worker {
        static void *run(void *) {
            for (int i = 0; i < 10000; i++) {
                InterlockedIncrement(&shared);
                EnterCriticalSection(&section);
                EnterCriticalSection(&section);
                locked++;
                LeaveCriticalSection(&section);
                LeaveCriticalSection(&section);
            }
            return NULL;
        }
    };
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) {
        assert(pthread_create(&threads[i], NULL, &Worker::run, NULL) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
    }
    assert(shared == 40000 && locked == 40000);
    assert(TryEnterCriticalSection(&section));
    LeaveCriticalSection(&section);
    DeleteCriticalSection(&section);
    /* The last error is the thread's; ticks do not go back. */
    SetLastError(ERROR_NOT_FOUND);
    assert(GetLastError() == ERROR_NOT_FOUND);
    ULONGLONG before = GetTickCount64();
    Sleep(1);
    assert(GetTickCount64() >= before);
    assert(GetCurrentThreadId() != 0 && GetCurrentProcessId() == (DWORD)getpid());

    /* _snprintf_s: _TRUNCATE cuts with a NUL and -1; a count cuts the
     * text at it; a text that does not fit otherwise leaves it empty. */
    char d[6];
    assert(_snprintf_s(d, _TRUNCATE, "%s", "abcdefgh") == -1 && strcmp(d, "abcde") == 0);
    assert(_snprintf_s(d, sizeof d, 3, "%s", "abcdefgh") == -1 && strcmp(d, "abc") == 0);
    assert(_snprintf_s(d, sizeof d, 3, "%s", "abc") == 3 && strcmp(d, "abc") == 0);
    assert(_snprintf_s(d, sizeof d, 10, "%s", "abcdefgh") == -1 && d[0] == 0);
    assert(_snprintf_s(d, _TRUNCATE, "%d", 42) == 2 && strcmp(d, "42") == 0);
    /* strncpy_s: at most `count`; _TRUNCATE cuts and says STRUNCATE. */
    assert(strncpy_s(d, "abcdefgh", 2) == 0 && strcmp(d, "ab") == 0);
    char wide_enough[16];
    assert(strncpy_s(wide_enough, "x", _TRUNCATE) == 0 && strcmp(wide_enough, "x") == 0);
    assert(strncpy_s(d, "abcdefgh", _TRUNCATE) == STRUNCATE && strcmp(d, "abcde") == 0);
    assert(strncpy_s(d, "abcdefgh", 7) == ERANGE && d[0] == 0);
    assert(_itoa_s(-305, d, 10) == 0 && strcmp(d, "-305") == 0);
    assert(_itoa_s(255, d, 16) == 0 && strcmp(d, "ff") == 0);
    assert(_itoa_s(-100000, d, 10) == ERANGE && d[0] == 0);
    assert(lstrlenA("four") == 4 && lstrlenW(L"four") == 4 && lstrcmpiA("Ab", "aB") == 0);
    assert(_wcsicmp(L"Content-Type", L"content-type") == 0 && _wcsicmp(L"a", L"b") < 0);
    assert(_wcsnicmp(L"ABCx", L"abcy", 3) == 0);
    const char *hay = "text/HTML; charset=utf-8";
    assert(StrStrIA(hay, "html") == hay + 5 && StrStrIA(hay, "xml") == NULL);
    assert(StrStrIA(hay, "") == NULL && lstrcmpiA(NULL, "") == 0);
    assert(strncpy_s(d, sizeof d, NULL, 0) == 0 && d[0] == 0);
    assert(_itoa_s(5, d, 37) == EINVAL && d[0] == 0);

    /* UTF-8 and wchar_t (UTF-32), with the NUL for -1, a size query for
     * 0, and U+FFFD for bytes that are not UTF-8. */
    const char *utf8 = "caf\xc3\xa9 \xf0\x9f\x98\x80";
    int wide_length = MultiByteToWideChar(CP_UTF8, 0, utf8, -1, NULL, 0);
    assert(wide_length == 7);
    wchar_t utf32[8];
    assert(MultiByteToWideChar(CP_UTF8, 0, utf8, -1, utf32, 8) == 7);
    assert(utf32[3] == 0xE9 && utf32[5] == 0x1F600 && utf32[6] == 0);
    SetLastError(0);
    assert(MultiByteToWideChar(CP_UTF8, 0, utf8, -1, utf32, 3) == 0);
    assert(GetLastError() == ERROR_INSUFFICIENT_BUFFER);
    assert(MultiByteToWideChar(CP_UTF8, 0, utf8, -1, NULL, 3) == 0);
    assert(GetLastError() == ERROR_INVALID_PARAMETER);
    wchar_t bad[4];
    assert(MultiByteToWideChar(CP_UTF8, 0, "a\xff" "b", 3, bad, 4) == 3 && bad[1] == 0xFFFD);
    assert(MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, "a\xff" "b", 3, bad, 4) == 0);
    assert(HRESULT_FROM_WIN32(GetLastError()) == (HRESULT)0x80070459u);
    assert(MultiByteToWideChar(CP_UTF8, 0, "\xc0\xaf", 2, bad, 4) == 2 && bad[0] == 0xFFFD);
    char back[16];
    assert(WideCharToMultiByte(CP_UTF8, 0, utf32, -1, NULL, 0, NULL, NULL) == 11);
    assert(WideCharToMultiByte(CP_UTF8, 0, utf32, -1, back, sizeof back, NULL, NULL) == 11);
    assert(strcmp(back, utf8) == 0);
    assert(WideCharToMultiByte(CP_UTF8, 0, utf32, -1, back, 4, NULL, NULL) == 0);
    assert(GetLastError() == ERROR_INSUFFICIENT_BUFFER);
    const wchar_t surrogate[] = {L'a', (wchar_t)0xD800, 0};
    assert(WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, surrogate, -1, back, 16, NULL,
                               NULL) == 0);
    assert(WideCharToMultiByte(CP_UTF8, 0, surrogate, -1, back, 16, NULL, NULL) == 5);

    /* Calendar time, heap, SRW locks, debug output. */
    SYSTEMTIME utc;
    GetSystemTime(&utc);
    assert(utc.wYear >= 2024 && utc.wMonth >= 1 && utc.wMonth <= 12 && utc.wDay >= 1);
    assert(utc.wHour < 24 && utc.wMilliseconds < 1000 && utc.wDayOfWeek < 7);
    unsigned char *zeroed = (unsigned char *)HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, 64);
    assert(zeroed != NULL && zeroed[0] == 0 && zeroed[63] == 0);
    assert(HeapFree(GetProcessHeap(), 0, zeroed));
    static SRWLOCK guard = SRWLOCK_INIT;
    AcquireSRWLockShared(&guard);
    assert(TryAcquireSRWLockShared(&guard) && !TryAcquireSRWLockExclusive(&guard));
    ReleaseSRWLockShared(&guard);
    ReleaseSRWLockShared(&guard);
    AcquireSRWLockExclusive(&guard);
    ReleaseSRWLockExclusive(&guard);
    /* Checked by the test that runs this: UTF-8 on standard error. */
    OutputDebugStringW(L"debug: caf\u00e9\n");
    OutputDebugString("debug: plain\n");
    assert(E_NOT_SET == HRESULT_FROM_WIN32(ERROR_NOT_FOUND));

    /* A remote address read the Windows way. */
    SOCKADDR_STORAGE storage;
    memset(&storage, 0, sizeof storage);
    SOCKADDR_IN *v4 = (SOCKADDR_IN *)&storage;
    v4->sin_family = AF_INET;
    v4->sin_port = htons(8080);
    assert(InetPtonA(AF_INET, "192.0.2.7", &v4->sin_addr) == 1);
    PSOCKADDR generic = (PSOCKADDR)&storage;
    char text[INET6_ADDRSTRLEN];
    assert(generic->sa_family == AF_INET && ntohs(((SOCKADDR_IN *)generic)->sin_port) == 8080);
    assert(strcmp(InetNtopA(AF_INET, &((SOCKADDR_IN *)generic)->sin_addr, text, sizeof text),
                  "192.0.2.7") == 0);
    puts("ok");
}
