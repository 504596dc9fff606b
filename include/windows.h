/*
 * windows.h - the few Windows names that IIS native modules use, for
 * building them on Linux against riis (see httpserv.h).
 *
 * This is not the Windows SDK header: it declares only the base types,
 * HRESULT helpers, Win32 error codes and calling-convention/annotation
 * keywords that IIS module sources rely on, with the sizes Windows gives
 * them (DWORD, ULONG and LONG are 32 bits, as on Windows, not `long`).
 *
 * Strings: riis is UTF-8 throughout. The "wide" types (WCHAR, PCWSTR, ...)
 * are wchar_t, so L"..." literals, wcslen and wcscmp keep working; on Linux
 * wchar_t is 32 bits and holds UTF-32. httpserv.h returns UTF-8 (PCSTR)
 * where an IIS method returns a wide string, and accepts both UTF-8 and
 * wide strings where an IIS method takes one (see its STRINGS section).
 *
 * `#define _WINSOCKAPI_` before this header (as IIS samples do) is harmless:
 * nothing here depends on it.
 */
#ifndef RIIS_WINDOWS_H
#define RIIS_WINDOWS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <wchar.h>

/* ------------------------------------------------------------ base types */

typedef uint32_t DWORD;
typedef uint32_t ULONG;
typedef uint16_t USHORT;
typedef uint16_t WORD;
typedef uint8_t BYTE;
typedef uint8_t UCHAR;
typedef UCHAR *PUCHAR;
typedef unsigned int UINT;
typedef int INT;
typedef int16_t SHORT;
typedef int32_t LONG;
typedef int64_t LONGLONG;
typedef uint64_t ULONGLONG;
typedef uint64_t DWORD64;
typedef uintptr_t ULONG_PTR;
typedef uintptr_t DWORD_PTR;
typedef intptr_t LONG_PTR;
typedef size_t SIZE_T;
typedef int BOOL;
typedef BYTE BOOLEAN;
typedef char CHAR;
typedef wchar_t WCHAR;
typedef float FLOAT;

/** HRESULT is 32 bits, as on Windows (and as riis_hresult). */
typedef int32_t HRESULT;

typedef void *PVOID;
typedef void *LPVOID;
typedef const void *LPCVOID;
typedef void *HANDLE;
typedef HANDLE *PHANDLE;
typedef void *HMODULE;
typedef void *HINSTANCE;

typedef BYTE *PBYTE;
typedef BYTE *LPBYTE;
typedef DWORD *PDWORD;
typedef DWORD *LPDWORD;
typedef ULONG *PULONG;
typedef USHORT *PUSHORT;
typedef LONG *PLONG;
typedef BOOL *PBOOL;
typedef BOOL *LPBOOL;
typedef ULONGLONG *PULONGLONG;

typedef CHAR *PSTR;
typedef CHAR *LPSTR;
typedef const CHAR *PCSTR;
typedef const CHAR *LPCSTR;
typedef WCHAR *PWSTR;
typedef WCHAR *LPWSTR;
typedef const WCHAR *PCWSTR;
typedef const WCHAR *LPCWSTR;

/** LARGE_INTEGER / ULARGE_INTEGER: a 64-bit value with 32-bit halves. */
typedef union _LARGE_INTEGER {
    __extension__ struct {
        DWORD LowPart;
        LONG HighPart;
    };
    struct {
        DWORD LowPart;
        LONG HighPart;
    } u;
    LONGLONG QuadPart;
} LARGE_INTEGER, *PLARGE_INTEGER;

typedef union _ULARGE_INTEGER {
    __extension__ struct {
        DWORD LowPart;
        DWORD HighPart;
    };
    struct {
        DWORD LowPart;
        DWORD HighPart;
    } u;
    ULONGLONG QuadPart;
} ULARGE_INTEGER, *PULARGE_INTEGER;

#ifndef VOID
#define VOID void
#endif
#ifndef CONST
#define CONST const
#endif
#ifndef TRUE
#define TRUE 1
#endif
#ifndef FALSE
#define FALSE 0
#endif
#ifndef NULL
#define NULL 0
#endif

#define INVALID_HANDLE_VALUE ((HANDLE)(LONG_PTR)-1)
#define INFINITE 0xFFFFFFFFu
#define MAXDWORD 0xFFFFFFFFu
#define MAXUSHORT 0xFFFFu
#define MAX_PATH 260

/* ------------------------------------- calling conventions, annotations */

#ifndef __stdcall
#define __stdcall
#endif
#ifndef __cdecl
#define __cdecl
#endif
#ifndef WINAPI
#define WINAPI
#endif
#ifndef CALLBACK
#define CALLBACK
#endif
#ifndef STDMETHODCALLTYPE
#define STDMETHODCALLTYPE
#endif
#ifndef IN
#define IN
#endif
#ifndef OUT
#define OUT
#endif
#ifndef OPTIONAL
#define OPTIONAL
#endif

/*
 * __declspec(x): dllexport gives default visibility (the symbol is exported
 * even under -fvisibility=hidden); the other common specifiers vanish.
 */
#ifndef __declspec
#define __declspec(x) RIIS_DECLSPEC_##x
#define RIIS_DECLSPEC_dllexport __attribute__((visibility("default")))
#define RIIS_DECLSPEC_dllimport
#define RIIS_DECLSPEC_novtable
#define RIIS_DECLSPEC_noinline __attribute__((noinline))
#define RIIS_DECLSPEC_noreturn __attribute__((noreturn))
#define RIIS_DECLSPEC_selectany __attribute__((weak))
#define RIIS_DECLSPEC_thread __thread
#define RIIS_DECLSPEC_uuid(x)
#endif

#define UNREFERENCED_PARAMETER(P) ((void)(P))
#define DBG_UNREFERENCED_PARAMETER(P) ((void)(P))
#define DBG_UNREFERENCED_LOCAL_VARIABLE(V) ((void)(V))

#define ZeroMemory(Destination, Length) memset((Destination), 0, (Length))
#define SecureZeroMemory(Destination, Length) memset((Destination), 0, (Length))
#define FillMemory(Destination, Length, Fill) memset((Destination), (Fill), (Length))
#define CopyMemory(Destination, Source, Length) memcpy((Destination), (Source), (Length))
#define MoveMemory(Destination, Source, Length) memmove((Destination), (Source), (Length))

#ifndef _countof
#define _countof(a) (sizeof(a) / sizeof((a)[0]))
#endif

/* -------------------------------------------------------------- HRESULTs */

#define SEVERITY_SUCCESS 0
#define SEVERITY_ERROR 1
#define FACILITY_NULL 0
#define FACILITY_WIN32 7

#define SUCCEEDED(hr) (((HRESULT)(hr)) >= 0)
#define FAILED(hr) (((HRESULT)(hr)) < 0)
#define IS_ERROR(hr) (((HRESULT)(hr)) < 0)

#define HRESULT_CODE(hr) ((DWORD)(hr) & 0xFFFFu)
#define HRESULT_FACILITY(hr) (((DWORD)(hr) >> 16) & 0x1FFFu)
#define HRESULT_SEVERITY(hr) (((DWORD)(hr) >> 31) & 0x1u)
#define MAKE_HRESULT(sev, fac, code) \
    ((HRESULT)(((DWORD)(sev) << 31) | ((DWORD)(fac) << 16) | (DWORD)(code)))

/** A Win32 error code as an HRESULT (0 stays 0; negative values pass). */
#define HRESULT_FROM_WIN32(x)                                                  \
    ((HRESULT)(x) <= 0 ? (HRESULT)(x)                                          \
                       : (HRESULT)(((DWORD)(x) & 0x0000FFFFu) |                \
                                   ((DWORD)FACILITY_WIN32 << 16) | 0x80000000u))

#define S_OK ((HRESULT)0)
#define S_FALSE ((HRESULT)1)
#define NO_ERROR 0L
#define E_NOTIMPL ((HRESULT)0x80004001u)
#define E_NOINTERFACE ((HRESULT)0x80004002u)
#define E_POINTER ((HRESULT)0x80004003u)
#define E_ABORT ((HRESULT)0x80004004u)
#define E_FAIL ((HRESULT)0x80004005u)
#define E_UNEXPECTED ((HRESULT)0x8000FFFFu)
#define E_ACCESSDENIED ((HRESULT)0x80070005u)
#define E_HANDLE ((HRESULT)0x80070006u)
#define E_OUTOFMEMORY ((HRESULT)0x8007000Eu)
#define E_INVALIDARG ((HRESULT)0x80070057u)

/* ------------------------------------------------------ Win32 error codes */

#define ERROR_SUCCESS 0L
#define ERROR_INVALID_FUNCTION 1L
#define ERROR_FILE_NOT_FOUND 2L
#define ERROR_PATH_NOT_FOUND 3L
#define ERROR_ACCESS_DENIED 5L
#define ERROR_INVALID_HANDLE 6L
#define ERROR_NOT_ENOUGH_MEMORY 8L
#define ERROR_INVALID_DATA 13L
#define ERROR_OUTOFMEMORY 14L
#define ERROR_HANDLE_EOF 38L
#define ERROR_NETNAME_DELETED 64L
#define ERROR_NOT_SUPPORTED 50L
#define ERROR_FILE_EXISTS 80L
#define ERROR_ALREADY_ASSIGNED 85L
#define ERROR_INVALID_PARAMETER 87L
#define ERROR_BROKEN_PIPE 109L
#define ERROR_INSUFFICIENT_BUFFER 122L
#define ERROR_INVALID_NAME 123L
#define ERROR_ALREADY_EXISTS 183L
#define ERROR_MORE_DATA 234L
#define ERROR_NO_MORE_ITEMS 259L
#define ERROR_OPERATION_ABORTED 995L
#define ERROR_IO_PENDING 997L
#define ERROR_NOT_FOUND 1168L
/* A client that went away: what riis completes a read or write with then. */
#define ERROR_CONNECTION_ABORTED 1236L
#define ERROR_INVALID_INDEX 1413L
/* A context used from a thread that is not the call's. */
#define ERROR_INVALID_THREAD_ID 1444L
#define ERROR_TIMEOUT 1460L
#define ERROR_ARITHMETIC_OVERFLOW 534L
#define ERROR_REVISION_MISMATCH 1306L
#define ERROR_INVALID_STATE 5023L
/* HRESULT_FROM_WIN32(ERROR_NOT_FOUND): a value that was never set. */
#ifndef E_NOT_SET
#define E_NOT_SET ((HRESULT)0x80070490u)
#endif

/* ------------------------------------------- Microsoft C runtime strings */

/*
 * The string functions of Microsoft's C runtime that IIS module sources
 * call most, over the C library. The *_s functions check the destination's
 * size: on overflow they leave an empty string and return ERANGE (or -1 for
 * sprintf_s) where Microsoft's would call its invalid-parameter handler,
 * which by default ends the process. _snprintf is Microsoft's: no NUL and -1
 * when the text is cut.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <wctype.h>

#ifndef RIIS_ERRNO_T_DEFINED
#define RIIS_ERRNO_T_DEFINED
typedef int errno_t;
#endif

/* Inline functions of one definition in C++ (the array templates below
 * call them from every translation unit); file-local in C. */
#ifdef __cplusplus
#define RIIS_CRT_FN inline
#else
#define RIIS_CRT_FN static inline
#endif

/* A source that already maps these names (`#define _stricmp strcasecmp`)
 * keeps its own mapping. */
#ifndef _stricmp
RIIS_CRT_FN int _stricmp(const char *a, const char *b) { return strcasecmp(a, b); }
#endif
#ifndef _strnicmp
RIIS_CRT_FN int _strnicmp(const char *a, const char *b, size_t n) { return strncasecmp(a, b, n); }
#endif

RIIS_CRT_FN errno_t strcpy_s(char *dest, size_t size, const char *src) {
    if (dest == NULL || size == 0) {
        return EINVAL;
    }
    if (src == NULL) {
        dest[0] = '\0';
        return EINVAL;
    }
    size_t length = strlen(src);
    if (length >= size) {
        dest[0] = '\0';
        return ERANGE;
    }
    memcpy(dest, src, length + 1);
    return 0;
}

RIIS_CRT_FN errno_t strcat_s(char *dest, size_t size, const char *src) {
    if (dest == NULL || size == 0) {
        return EINVAL;
    }
    size_t used = 0;
    while (used < size && dest[used] != '\0') {
        used++;
    }
    if (src == NULL || used == size) {
        dest[0] = '\0';
        return EINVAL;
    }
    return strcpy_s(dest + used, size - used, src) == 0 ? 0 : (dest[0] = '\0', ERANGE);
}

RIIS_CRT_FN int vsprintf_s(char *buffer, size_t size, const char *format, va_list args) {
    if (buffer == NULL || size == 0 || format == NULL) {
        return -1;
    }
    int written = vsnprintf(buffer, size, format, args);
    if (written < 0 || (size_t)written >= size) {
        buffer[0] = '\0';
        return -1;
    }
    return written;
}

RIIS_CRT_FN int sprintf_s(char *buffer, size_t size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
RIIS_CRT_FN int sprintf_s(char *buffer, size_t size, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int written = vsprintf_s(buffer, size, format, args);
    va_end(args);
    return written;
}

#ifndef _snprintf
RIIS_CRT_FN int _snprintf(char *buffer, size_t count, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
RIIS_CRT_FN int _snprintf(char *buffer, size_t count, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int needed = vsnprintf(NULL, 0, format, args);
    va_end(args);
    if (needed < 0) {
        return -1;
    }
    if (buffer == NULL || count == 0) {
        /* Microsoft's size query: the length the text needs. */
        return needed;
    }
    va_start(args, format);
    if ((size_t)needed < count) {
        vsnprintf(buffer, count, format, args);
        va_end(args);
        return needed;
    }
    /* Microsoft's: as much as fits, no NUL, and -1 (or the length when it
     * fits exactly without the NUL). */
    char *whole = (char *)malloc((size_t)needed + 1);
    if (whole != NULL) {
        vsnprintf(whole, (size_t)needed + 1, format, args);
        memcpy(buffer, whole, count);
        free(whole);
    }
    va_end(args);
    return (size_t)needed == count ? needed : -1;
}
#endif

/*
 * More of the Microsoft C runtime and Win32's string helpers. Each name a
 * source already defines as a macro keeps the source's; a source with its
 * own functions of these names defines RIIS_NO_WIN32_STRINGS before this
 * header to leave them all out.
 */
#ifndef RIIS_NO_WIN32_STRINGS

/* _snprintf_s, strncpy_s: `count` is how much of the text at most, or
 * _TRUNCATE for as much as fits; cut with _TRUNCATE, the text ends with a
 * NUL and the result is -1 (STRUNCATE for strncpy_s); cut otherwise, the
 * buffer is left empty with an error, as the *_s functions above do. */
#ifndef _TRUNCATE
#define _TRUNCATE ((size_t)-1)
#endif
#ifndef STRUNCATE
#define STRUNCATE 80
#endif

#ifndef _vsnprintf_s
RIIS_CRT_FN int _vsnprintf_s(char *buffer, size_t size, size_t count, const char *format,
                             va_list args) {
    if (buffer == NULL || size == 0 || format == NULL) {
        errno = EINVAL;
        return -1;
    }
    /* Room for the text: at most `count` characters and the NUL. */
    size_t room = (count != _TRUNCATE && count < size) ? count + 1 : size;
    va_list copy;
    va_copy(copy, args);
    int needed = vsnprintf(buffer, room, format, copy);
    va_end(copy);
    if (needed < 0) {
        buffer[0] = '\0';
        return -1;
    }
    if ((size_t)needed < room) {
        return needed;
    }
    if (count == _TRUNCATE || count < size) {
        /* Cut at `count` (or what fits), NUL-terminated. */
        return (count != _TRUNCATE && (size_t)needed == count) ? needed : -1;
    }
    buffer[0] = '\0';
    errno = ERANGE;
    return -1;
}
#endif

#ifndef _snprintf_s
RIIS_CRT_FN int _snprintf_s(char *buffer, size_t size, size_t count, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
RIIS_CRT_FN int _snprintf_s(char *buffer, size_t size, size_t count, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int written = _vsnprintf_s(buffer, size, count, format, args);
    va_end(args);
    return written;
}
#endif

#ifndef strncpy_s
RIIS_CRT_FN errno_t strncpy_s(char *dest, size_t size, const char *src, size_t count) {
    if (dest == NULL || size == 0) {
        return EINVAL;
    }
    if (src == NULL) {
        dest[0] = '\0';
        return count == 0 ? 0 : EINVAL;
    }
    /* Copied while it is read: never past the buffer, nor past `count`
     * characters of the source. */
    size_t i = 0;
    while (i < size && i < count && src[i] != '\0') {
        dest[i] = src[i];
        i++;
    }
    if (i < size) {
        dest[i] = '\0';
        return 0;
    }
    if (count == _TRUNCATE) {
        dest[size - 1] = '\0';
        return STRUNCATE;
    }
    dest[0] = '\0';
    return ERANGE;
}
#endif

#ifndef _itoa_s
/* The digits of `value` in `radix` (2 to 36), negative in base 10 only. */
RIIS_CRT_FN errno_t _itoa_s(int value, char *buffer, size_t size, int radix) {
    if (buffer == NULL || size == 0) {
        return EINVAL;
    }
    if (radix < 2 || radix > 36) {
        buffer[0] = '\0';
        return EINVAL;
    }
    char digits[34];
    size_t n = 0;
    int negative = radix == 10 && value < 0;
    unsigned int rest = negative ? 0u - (unsigned int)value : (unsigned int)value;
    do {
        unsigned int d = rest % (unsigned int)radix;
        digits[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        rest /= (unsigned int)radix;
    } while (rest != 0);
    if (n + (size_t)negative + 1 > size) {
        buffer[0] = '\0';
        return ERANGE;
    }
    size_t at = 0;
    if (negative) {
        buffer[at++] = '-';
    }
    while (n > 0) {
        buffer[at++] = digits[--n];
    }
    buffer[at] = '\0';
    return 0;
}
#endif

#ifndef lstrlenA
RIIS_CRT_FN int lstrlenA(const char *text) { return text == NULL ? 0 : (int)strlen(text); }
#endif
#ifndef lstrlenW
RIIS_CRT_FN int lstrlenW(const wchar_t *text) { return text == NULL ? 0 : (int)wcslen(text); }
#endif
#ifndef lstrcmpiA
/* NULL compares as an empty string, as Windows's does. */
RIIS_CRT_FN int lstrcmpiA(const char *a, const char *b) {
    return strcasecmp(a == NULL ? "" : a, b == NULL ? "" : b);
}
#endif

#ifndef _wcsnicmp
/* Wide strings compared in any case (towlower, each character). */
RIIS_CRT_FN int _wcsnicmp(const wchar_t *a, const wchar_t *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        wint_t x = towlower((wint_t)a[i]);
        wint_t y = towlower((wint_t)b[i]);
        if (x != y) {
            return x < y ? -1 : 1;
        }
        if (x == 0) {
            return 0;
        }
    }
    return 0;
}
#endif
#ifndef _wcsicmp
RIIS_CRT_FN int _wcsicmp(const wchar_t *a, const wchar_t *b) {
    return _wcsnicmp(a, b, (size_t)-1);
}
#endif
#ifndef lstrcmpiW
RIIS_CRT_FN int lstrcmpiW(const wchar_t *a, const wchar_t *b) {
    return _wcsicmp(a == NULL ? L"" : a, b == NULL ? L"" : b);
}
#endif

#ifndef StrStrIA
/* shlwapi's StrStrIA: `needle` in `haystack`, ASCII letters in any case;
 * NULL for an empty or missing needle, as Windows answers. */
RIIS_CRT_FN char *StrStrIA(const char *haystack, const char *needle) {
    if (haystack == NULL || needle == NULL || needle[0] == '\0') {
        return NULL;
    }
    size_t n = strlen(needle);
    for (const char *at = haystack; *at != '\0'; at++) {
        if (strncasecmp(at, needle, n) == 0) {
            return (char *)at;
        }
    }
    return NULL;
}
#endif

/* `c` as UTF-8 into `out`: its length. A surrogate or a value past
 * U+10FFFF is U+FFFD. */
RIIS_CRT_FN int riis_utf8_encode(uint32_t c, unsigned char out[4]) {
    if (c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
        c = 0xFFFD;
    }
    int size = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    if (size == 1) {
        out[0] = (unsigned char)c;
        return 1;
    }
    for (int k = size - 1; k > 0; k--) {
        out[k] = (unsigned char)(0x80 | (c & 0x3F));
        c >>= 6;
    }
    out[0] = (unsigned char)((0xF00u >> size) | c);
    return size;
}

/* A debugger's output on Windows: riis's standard error here. */
#ifndef OutputDebugStringA
RIIS_CRT_FN void OutputDebugStringA(const char *text) {
    if (text != NULL) {
        fputs(text, stderr);
    }
}
#endif
#ifndef OutputDebugStringW
/* Written as UTF-8 whatever the locale (riis runs in the C locale, where
 * `%ls` fails on anything past ASCII). */
RIIS_CRT_FN void OutputDebugStringW(const wchar_t *text) {
    if (text == NULL) {
        return;
    }
    for (; *text != 0; text++) {
        unsigned char bytes[4];
        fwrite(bytes, 1, (size_t)riis_utf8_encode((uint32_t)*text, bytes), stderr);
    }
}
#endif
#ifndef OutputDebugString
#ifdef UNICODE
#define OutputDebugString OutputDebugStringW
#else
#define OutputDebugString OutputDebugStringA
#endif
#endif
#ifndef lstrlen
#ifdef UNICODE
#define lstrlen lstrlenW
#define lstrcmpi lstrcmpiW
#else
#define lstrlen lstrlenA
#define lstrcmpi lstrcmpiA
#endif
#endif

/* The process heap: the C library's. */
#ifndef HEAP_ZERO_MEMORY
#define HEAP_ZERO_MEMORY 0x00000008
#endif
#ifndef GetProcessHeap
RIIS_CRT_FN HANDLE GetProcessHeap(void) {
    static int heap;
    return &heap;
}
#endif
#ifndef HeapAlloc
RIIS_CRT_FN LPVOID HeapAlloc(HANDLE heap, DWORD flags, SIZE_T bytes) {
    (void)heap;
    return (flags & HEAP_ZERO_MEMORY) ? calloc(1, bytes ? bytes : 1) : malloc(bytes ? bytes : 1);
}
#endif
#ifndef HeapReAlloc
RIIS_CRT_FN LPVOID HeapReAlloc(HANDLE heap, DWORD flags, LPVOID memory, SIZE_T bytes) {
    (void)heap;
    (void)flags;
    return realloc(memory, bytes ? bytes : 1);
}
#endif
#ifndef HeapFree
RIIS_CRT_FN BOOL HeapFree(HANDLE heap, DWORD flags, LPVOID memory) {
    (void)heap;
    (void)flags;
    free(memory);
    return 1;
}
#endif

#endif /* RIIS_NO_WIN32_STRINGS */

#ifdef __cplusplus
/* The array forms C++ code calls without a size. */
template <size_t N> inline errno_t strcpy_s(char (&dest)[N], const char *src) {
    return strcpy_s(dest, N, src);
}
template <size_t N> inline errno_t strcat_s(char (&dest)[N], const char *src) {
    return strcat_s(dest, N, src);
}
#if !defined(RIIS_NO_WIN32_STRINGS) && !defined(strncpy_s)
template <size_t N> inline errno_t strncpy_s(char (&dest)[N], const char *src, size_t count) {
    return strncpy_s(dest, N, src, count);
}
#endif
#if !defined(RIIS_NO_WIN32_STRINGS) && !defined(_itoa_s)
template <size_t N> inline errno_t _itoa_s(int value, char (&buffer)[N], int radix) {
    return _itoa_s(value, buffer, N, radix);
}
#endif
#if !defined(RIIS_NO_WIN32_STRINGS) && !defined(_snprintf_s) && !defined(_vsnprintf_s)
template <size_t N>
inline int _snprintf_s(char (&buffer)[N], size_t count, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int written = _vsnprintf_s(buffer, N, count, format, args);
    va_end(args);
    return written;
}
#endif
template <size_t N> inline int sprintf_s(char (&buffer)[N], const char *format, ...) {
    va_list args;
    va_start(args, format);
    int written = vsprintf_s(buffer, N, format, args);
    va_end(args);
    return written;
}
#endif

/* ------------------------------------- Win32 synchronization and timing */

/*
 * What IIS module sources use most for their own state: the Interlocked
 * functions (reference counts of stored contexts), critical sections
 * (recursive, as Windows's), Sleep, tick counts, the thread's last error
 * and the thread and process ids, over the C library and GCC's atomics
 * (full barriers, as on Windows). Threads, events and file handles are not
 * here: use the C++ or POSIX ones. A source that brings its own versions
 * defines RIIS_NO_WIN32_SYNC before this header. C gets them with
 * _GNU_SOURCE (which g++ defines for C++), and each translation unit has
 * its own last-error value there.
 */
#if !defined(RIIS_NO_WIN32_SYNC) && (defined(__cplusplus) || defined(_GNU_SOURCE))
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int64_t LONG64;

RIIS_CRT_FN LONG InterlockedIncrement(LONG volatile *addend) {
    return __atomic_add_fetch(addend, 1, __ATOMIC_SEQ_CST);
}
RIIS_CRT_FN LONG InterlockedDecrement(LONG volatile *addend) {
    return __atomic_sub_fetch(addend, 1, __ATOMIC_SEQ_CST);
}
RIIS_CRT_FN LONG InterlockedExchange(LONG volatile *target, LONG value) {
    return __atomic_exchange_n(target, value, __ATOMIC_SEQ_CST);
}
RIIS_CRT_FN LONG InterlockedExchangeAdd(LONG volatile *addend, LONG value) {
    return __atomic_fetch_add(addend, value, __ATOMIC_SEQ_CST);
}
/* Stores `exchange` when *destination is `comparand`; the value before. */
RIIS_CRT_FN LONG InterlockedCompareExchange(LONG volatile *destination, LONG exchange,
                                           LONG comparand) {
    __atomic_compare_exchange_n(destination, &comparand, exchange, 0, __ATOMIC_SEQ_CST,
                                __ATOMIC_SEQ_CST);
    return comparand;
}
RIIS_CRT_FN LONG64 InterlockedIncrement64(LONG64 volatile *addend) {
    return __atomic_add_fetch(addend, 1, __ATOMIC_SEQ_CST);
}
RIIS_CRT_FN LONG64 InterlockedDecrement64(LONG64 volatile *addend) {
    return __atomic_sub_fetch(addend, 1, __ATOMIC_SEQ_CST);
}
RIIS_CRT_FN PVOID InterlockedCompareExchangePointer(PVOID volatile *destination, PVOID exchange,
                                                   PVOID comparand) {
    __atomic_compare_exchange_n(destination, &comparand, exchange, 0, __ATOMIC_SEQ_CST,
                                __ATOMIC_SEQ_CST);
    return comparand;
}

/* A critical section: a recursive mutex, as Windows's may be entered again
 * by the thread that holds it. */
typedef struct RIIS_CRITICAL_SECTION {
    pthread_mutex_t mutex;
} CRITICAL_SECTION, *PCRITICAL_SECTION, *LPCRITICAL_SECTION;

RIIS_CRT_FN VOID InitializeCriticalSection(LPCRITICAL_SECTION section) {
    pthread_mutexattr_t attributes;
    pthread_mutexattr_init(&attributes);
    pthread_mutexattr_settype(&attributes, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&section->mutex, &attributes);
    pthread_mutexattr_destroy(&attributes);
}
RIIS_CRT_FN BOOL InitializeCriticalSectionAndSpinCount(LPCRITICAL_SECTION section,
                                                      DWORD spin_count) {
    (void)spin_count;
    InitializeCriticalSection(section);
    return 1;
}
RIIS_CRT_FN VOID EnterCriticalSection(LPCRITICAL_SECTION section) {
    pthread_mutex_lock(&section->mutex);
}
RIIS_CRT_FN BOOL TryEnterCriticalSection(LPCRITICAL_SECTION section) {
    return pthread_mutex_trylock(&section->mutex) == 0;
}
RIIS_CRT_FN VOID LeaveCriticalSection(LPCRITICAL_SECTION section) {
    pthread_mutex_unlock(&section->mutex);
}
RIIS_CRT_FN VOID DeleteCriticalSection(LPCRITICAL_SECTION section) {
    pthread_mutex_destroy(&section->mutex);
}

/* A slim reader/writer lock: a POSIX rwlock (not recursive, as on
 * Windows). SRWLOCK_INIT initialises one statically. */
typedef struct RIIS_SRWLOCK {
    pthread_rwlock_t lock;
} SRWLOCK, *PSRWLOCK;
#ifndef SRWLOCK_INIT
#define SRWLOCK_INIT {PTHREAD_RWLOCK_INITIALIZER}
#endif

RIIS_CRT_FN VOID InitializeSRWLock(PSRWLOCK lock) { pthread_rwlock_init(&lock->lock, NULL); }
RIIS_CRT_FN VOID AcquireSRWLockExclusive(PSRWLOCK lock) { pthread_rwlock_wrlock(&lock->lock); }
RIIS_CRT_FN VOID AcquireSRWLockShared(PSRWLOCK lock) { pthread_rwlock_rdlock(&lock->lock); }
RIIS_CRT_FN VOID ReleaseSRWLockExclusive(PSRWLOCK lock) { pthread_rwlock_unlock(&lock->lock); }
RIIS_CRT_FN VOID ReleaseSRWLockShared(PSRWLOCK lock) { pthread_rwlock_unlock(&lock->lock); }
RIIS_CRT_FN BOOLEAN TryAcquireSRWLockExclusive(PSRWLOCK lock) {
    return pthread_rwlock_trywrlock(&lock->lock) == 0;
}
RIIS_CRT_FN BOOLEAN TryAcquireSRWLockShared(PSRWLOCK lock) {
    return pthread_rwlock_tryrdlock(&lock->lock) == 0;
}

/* The calendar time of now, UTC (GetSystemTime) or local (GetLocalTime). */
typedef struct _SYSTEMTIME {
    WORD wYear;
    WORD wMonth;
    WORD wDayOfWeek;
    WORD wDay;
    WORD wHour;
    WORD wMinute;
    WORD wSecond;
    WORD wMilliseconds;
} SYSTEMTIME, *PSYSTEMTIME, *LPSYSTEMTIME;

RIIS_CRT_FN void riis_system_time(SYSTEMTIME *out, int local) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm parts;
    time_t seconds = now.tv_sec;
    if (local) {
        localtime_r(&seconds, &parts);
    } else {
        gmtime_r(&seconds, &parts);
    }
    out->wYear = (WORD)(parts.tm_year + 1900);
    out->wMonth = (WORD)(parts.tm_mon + 1);
    out->wDayOfWeek = (WORD)parts.tm_wday;
    out->wDay = (WORD)parts.tm_mday;
    out->wHour = (WORD)parts.tm_hour;
    out->wMinute = (WORD)parts.tm_min;
    out->wSecond = (WORD)parts.tm_sec;
    out->wMilliseconds = (WORD)(now.tv_nsec / 1000000L);
}
RIIS_CRT_FN void GetSystemTime(LPSYSTEMTIME out) { riis_system_time(out, 0); }
RIIS_CRT_FN void GetLocalTime(LPSYSTEMTIME out) { riis_system_time(out, 1); }

RIIS_CRT_FN VOID Sleep(DWORD milliseconds) {
    struct timespec rest;
    rest.tv_sec = milliseconds / 1000;
    rest.tv_nsec = (long)(milliseconds % 1000) * 1000000L;
    while (nanosleep(&rest, &rest) != 0 && errno == EINTR) {
    }
}
/* Milliseconds since an arbitrary start (the boot), as Windows counts. */
RIIS_CRT_FN ULONGLONG GetTickCount64(VOID) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (ULONGLONG)now.tv_sec * 1000u + (ULONGLONG)now.tv_nsec / 1000000u;
}
RIIS_CRT_FN DWORD GetTickCount(VOID) { return (DWORD)GetTickCount64(); }

RIIS_CRT_FN DWORD *riis_last_error_slot(VOID) {
    static __thread DWORD last_error = 0;
    return &last_error;
}
RIIS_CRT_FN DWORD GetLastError(VOID) { return *riis_last_error_slot(); }
RIIS_CRT_FN VOID SetLastError(DWORD error) { *riis_last_error_slot() = error; }

/*
 * MultiByteToWideChar / WideCharToMultiByte between UTF-8 and wchar_t
 * (UTF-32 on Linux). CP_ACP and CP_UTF8 are both UTF-8, riis's one code
 * page. A length of -1 means up to and with the NUL; a destination size
 * of 0 asks for the length needed. Invalid UTF-8 becomes U+FFFD (invalid
 * UTF-32, a surrogate or past U+10FFFF, too), or fails under
 * MB_ERR_INVALID_CHARS (WC_ERR_INVALID_CHARS). A failure returns 0 with
 * the thread's last error set as Windows sets it:
 * ERROR_INSUFFICIENT_BUFFER, ERROR_NO_UNICODE_TRANSLATION or
 * ERROR_INVALID_PARAMETER.
 */
#ifndef RIIS_NO_WIN32_STRINGS
#ifndef CP_ACP
#define CP_ACP 0
#endif
#ifndef CP_UTF8
#define CP_UTF8 65001
#endif
#ifndef MB_ERR_INVALID_CHARS
#define MB_ERR_INVALID_CHARS 0x00000008
#endif
#ifndef WC_ERR_INVALID_CHARS
#define WC_ERR_INVALID_CHARS 0x00000080
#endif
#ifndef ERROR_NO_UNICODE_TRANSLATION
#define ERROR_NO_UNICODE_TRANSLATION 1113L
#endif

#ifndef MultiByteToWideChar
RIIS_CRT_FN int MultiByteToWideChar(UINT code_page, DWORD flags, const char *text, int length,
                                    wchar_t *out, int out_size) {
    (void)code_page;
    if (text == NULL || length == 0 || length < -1 || out_size < 0 ||
        (out == NULL && out_size != 0)) {
        SetLastError(ERROR_INVALID_PARAMETER);
        return 0;
    }
    size_t n = length == -1 ? strlen(text) + 1 : (size_t)length;
    const unsigned char *p = (const unsigned char *)text;
    int written = 0;
    size_t i = 0;
    while (i < n) {
        uint32_t c = p[i];
        size_t extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : 4;
        int valid = extra < 4 && i + extra < n;
        if (valid && extra > 0) {
            c &= 0x3Fu >> extra;
            for (size_t k = 1; k <= extra; k++) {
                if ((p[i + k] & 0xC0) != 0x80) {
                    valid = 0;
                    break;
                }
                c = (c << 6) | (p[i + k] & 0x3Fu);
            }
            /* Overlong forms, surrogates and past U+10FFFF are invalid. */
            static const uint32_t least[4] = {0, 0x80, 0x800, 0x10000};
            if (valid && (c < least[extra] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))) {
                valid = 0;
            }
        }
        if (!valid) {
            if (flags & MB_ERR_INVALID_CHARS) {
                SetLastError(ERROR_NO_UNICODE_TRANSLATION);
                return 0;
            }
            c = 0xFFFD;
            extra = 0;
        }
        if (out_size != 0) {
            if (written >= out_size) {
                SetLastError(ERROR_INSUFFICIENT_BUFFER);
                return 0;
            }
            out[written] = (wchar_t)c;
        }
        written++;
        i += extra + 1;
    }
    return written;
}
#endif

#ifndef WideCharToMultiByte
RIIS_CRT_FN int WideCharToMultiByte(UINT code_page, DWORD flags, const wchar_t *text, int length,
                                    char *out, int out_size, const char *default_char,
                                    BOOL *used_default) {
    (void)code_page;
    (void)default_char;
    if (used_default != NULL) {
        *used_default = 0;
    }
    if (text == NULL || length == 0 || length < -1 || out_size < 0 ||
        (out == NULL && out_size != 0)) {
        SetLastError(ERROR_INVALID_PARAMETER);
        return 0;
    }
    size_t n = length == -1 ? wcslen(text) + 1 : (size_t)length;
    int written = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = (uint32_t)text[i];
        if ((c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) && (flags & WC_ERR_INVALID_CHARS)) {
            SetLastError(ERROR_NO_UNICODE_TRANSLATION);
            return 0;
        }
        unsigned char bytes[4];
        int size = riis_utf8_encode(c, bytes);
        if (out_size != 0) {
            if (written + size > out_size) {
                SetLastError(ERROR_INSUFFICIENT_BUFFER);
                return 0;
            }
            memcpy(out + written, bytes, (size_t)size);
        }
        written += size;
    }
    return written;
}
#endif
#endif /* RIIS_NO_WIN32_STRINGS */

RIIS_CRT_FN DWORD GetCurrentThreadId(VOID) { return (DWORD)syscall(SYS_gettid); }
RIIS_CRT_FN DWORD GetCurrentProcessId(VOID) { return (DWORD)getpid(); }
#endif /* RIIS_NO_WIN32_SYNC */

#endif /* RIIS_WINDOWS_H */
