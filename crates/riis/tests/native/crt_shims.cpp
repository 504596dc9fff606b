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
    puts("ok");
}
