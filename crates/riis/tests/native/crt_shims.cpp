/*
 * crt_shims.cpp - checks the Microsoft C runtime string functions of
 * include/windows.h against what Microsoft documents for them; exits 0
 * when every check holds (run by tests/cpp_modules.rs).
 */
#include <windows.h>
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
    puts("ok");
}
