/*
 * A native module in plain C for the integration tests: it exercises the
 * riis C ABI end to end. Routes (all under /c/, answered at BeginRequest):
 *
 *   /c/hello        200 "hello from C\n"; echoes the method, REMOTE_ADDR, the
 *                   X-Pre-Begin request header (set by this module's global
 *                   part at PreBeginRequest) and the `greeting` of its
 *                   [c_module] section; counts requests at site scope.
 *   /c/echo         reads the whole body asynchronously, 7 bytes at a time,
 *                   and answers it. With an X-Double header, each instance
 *                   doubles every byte at ReadEntity (so a read brings more
 *                   than the 7 bytes asked for).
 *   /c/thread       returns Pending; another thread indicates completion.
 *   /c/post-thread  returns Pending; another thread posts completion with 42
 *                   bytes, and on_async_completion answers "completed 42".
 *   /c/bad-status   returns 7, which is not a status.
 *   /c/twice        returns Pending; another thread signals completion, and
 *                   again 300 ms after the request ended; /c/twice-result
 *                   is the HRESULT of that second signal.
 *   /c/odd-chunks   an interim status (103), a file chunk naming a folder,
 *                   one naming the FIFO of the X-Fifo header, and a user
 *                   name with CR/LF: each is refused; the body is the four
 *                   HRESULTs.
 *   /c/wrong-thread another thread uses the context during the call: it
 *                   sets X-Bad (kept and made when the call ends) and asks
 *                   for the URL (refused); the body is the HRESULT of the
 *                   set and whether the URL came.
 *   /c/custom       raises a custom notification the second instance of this
 *                   library (registered under another name) counts.
 *   /c/child        runs /c/hello as a buffered child request.
 *   /c/stats        request-context cleanups seen so far.
 *   /c/store-same   the same pointer stored twice at request scope.
 *   /c/never        returns Pending and never completes (the server's
 *                   execution limit ends it).
 *   /c/orphan       returns Pending; another thread completes it 1.5 s
 *                   later, after a 1 s execution limit ended the request.
 *   /c/flood        returns Pending; another thread writes 20 MiB, 1 MiB
 *                   at a time, then completes it.
 *   /c/flooded      "refused_at=N hr=H": the first of /c/flood's writes
 *                   refused, and how.
 *   /c/orphans      "disposed=A,B called=C late_write=H": orphan instances
 *                   disposed after / before their thread signalled, calls they
 *                   got while still pending, and what the thread's write
 *                   before its signal returned.
 *   /c/upper        writes "make me loud"; at SendResponse the module reads
 *                   the buffered entity and replaces it in upper case, and
 *                   counts the response headers in X-Header-Count.
 *   /c/pieces       "make me loud" 1,000 times, upper-cased 5,000 bytes per
 *                   send (send_defer_after); each instance adds an
 *                   X-Pieces header saying what its first send was.
 *   /c/early-twice  signals its completion twice before it returns Pending:
 *                   the body is the two HRESULTs (the second is refused).
 *   /c/clone-cleanup a request context on one clone, whose cleanup (at the
 *                   clone's release) asks another clone for its URL: the
 *                   body says what it got.
 *   /c/same-string  asks for its URL and a header 1,000 times each: "same"
 *                   when every answer is the same pointer (a long stream
 *                   asking at every piece does not grow the request's
 *                   memory), "different" otherwise.
 *   /c/nested-ops   at SendResponse, starts a body read, a post, a flush and
 *                   a child request, none of which may start there; the
 *                   X-Nested-Ops header is their four HRESULTs.
 *
 * Every response gets X-Send-Seen at SendResponse.
 */
/* nanosleep and pwrite under -std=c99, which defines no POSIX. */
#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "riis_module.h"

static const riis_api *api;
static uint32_t section;
static int cleanups; /* request contexts released; touched under a lock */
static int unusable_disposed; /* instances of CUnusable the server handed back */
static int orphan_signalled;       /* /c/orphan's thread signalled (lock) */
static riis_hresult orphan_late_write; /* ... what its write before that got */
static int orphans_disposed_after; /* ... and its instance was disposed */
static int orphans_disposed_before;
static int orphans_called_pending;  /* ... called again before it signalled */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

typedef struct instance {
    char *buffer; /* body read buffer (request memory) */
    int reading;
    int orphan; /* serving /c/orphan */
    riis_allocator *allocator; /* from get_http_module */
} instance;

static void text(riis_context *ctx, const char *body) {
    riis_data_chunk chunk;
    memset(&chunk, 0, sizeof chunk);
    chunk.type = RIIS_CHUNK_FROM_MEMORY;
    chunk.buffer = body;
    chunk.buffer_length = strlen(body);
    api->response_write_entity_chunks(ctx, &chunk, 1, NULL);
}

/* What the last /c/delivered response's delivery call said (ABI 1.8),
 * written on a server thread after the request: -1 until then. */
static long long delivered_bytes = -1;
static int delivered_whole = -1;

static void response_delivered(void *data, uint64_t body_bytes, int whole) {
    int marker = *(int *)data;
    free(data);
    if (marker != 42) {
        return;
    }
    __atomic_store_n(&delivered_whole, whole, __ATOMIC_SEQ_CST);
    __atomic_store_n(&delivered_bytes, (long long)body_bytes, __ATOMIC_SEQ_CST);
}

/* AuthenticateRequest calls for /plain.txt, counted for /c/child-as and
 * /c/child-plain (under `lock`). */
static int plain_authentications = 0;

static void release_request_context(void *data) {
    pthread_mutex_lock(&lock);
    cleanups++;
    pthread_mutex_unlock(&lock);
    free(data);
}

static void release_counter(void *data) { free(data); }

/* /c/clone-cleanup: a request context stored on one clone whose cleanup
 * (run when that clone is released) uses another clone. */
typedef struct clone_probe {
    riis_context *other;
    char seen[64];
} clone_probe;

static void clone_cleanup(void *data) {
    clone_probe *probe = (clone_probe *)data;
    const char *url = api->request_url(probe->other);
    snprintf(probe->seen, sizeof probe->seen, "%s", url != NULL ? url : "(refused)");
}

static void pause_briefly(void) {
    struct timespec t = {0, 20 * 1000 * 1000};
    nanosleep(&t, NULL);
}

static void *indicate_later(void *arg) {
    pause_briefly();
    api->indicate_completion((riis_context *)arg, RIIS_STATUS_FINISH_REQUEST);
    return NULL;
}

/* The HRESULT of /c/twice's second signal; 1 until it is made. */
static volatile riis_hresult second_signal = 1;

static void *indicate_twice(void *arg) {
    pause_briefly();
    api->indicate_completion((riis_context *)arg, RIIS_STATUS_FINISH_REQUEST);
    struct timespec t = {0, 300 * 1000 * 1000};
    nanosleep(&t, NULL);
    riis_hresult again = api->indicate_completion((riis_context *)arg, RIIS_STATUS_FINISH_REQUEST);
    pthread_mutex_lock(&lock);
    second_signal = again;
    pthread_mutex_unlock(&lock);
    return NULL;
}

static void *indicate_much_later(void *arg) {
    struct timespec t = {1, 500 * 1000 * 1000};
    nanosleep(&t, NULL);
    /* The request ended meanwhile: a write goes nowhere, and says so. */
    riis_data_chunk chunk;
    memset(&chunk, 0, sizeof chunk);
    chunk.type = RIIS_CHUNK_FROM_MEMORY;
    chunk.buffer = "too late";
    chunk.buffer_length = 8;
    riis_hresult late = api->response_write_entity_chunks((riis_context *)arg, &chunk, 1, NULL);
    pthread_mutex_lock(&lock);
    orphan_signalled = 1;
    orphan_late_write = late;
    pthread_mutex_unlock(&lock);
    api->indicate_completion((riis_context *)arg, RIIS_STATUS_CONTINUE);
    return NULL;
}

/* /c/flood's thread: 1 MiB writes into its parked request, 20 of them,
 * noting the first that fails and how, then the signal. */
static char flood_block[1 << 20];
static int flood_refused_at = -1;
static riis_hresult flood_refusal;

static void *flood_later(void *arg) {
    riis_context *ctx = (riis_context *)arg;
    int refused_at = -1;
    riis_hresult refusal = 0;
    for (int i = 0; i < 20; i++) {
        riis_data_chunk chunk;
        memset(&chunk, 0, sizeof chunk);
        chunk.type = RIIS_CHUNK_FROM_MEMORY;
        chunk.buffer = flood_block;
        chunk.buffer_length = sizeof flood_block;
        riis_hresult hr = api->response_write_entity_chunks(ctx, &chunk, 1, NULL);
        if (hr != RIIS_S_OK && refused_at < 0) {
            refused_at = i;
            refusal = hr;
        }
    }
    pthread_mutex_lock(&lock);
    flood_refused_at = refused_at;
    flood_refusal = refusal;
    pthread_mutex_unlock(&lock);
    api->indicate_completion(ctx, RIIS_STATUS_FINISH_REQUEST);
    return NULL;
}

static void *post_later(void *arg) {
    pause_briefly();
    api->post_completion((riis_context *)arg, 42);
    return NULL;
}

typedef struct misuse {
    riis_context *ctx;
    riis_hresult result;
    const char *url;
} misuse;

static void *allocate_from_another_thread(void *arg) {
    return api->allocator_allocate((riis_allocator *)arg, 16);
}

static void *use_from_another_thread(void *arg) {
    misuse *m = (misuse *)arg;
    m->result = api->response_set_header(m->ctx, "X-Bad", "1", 1);
    m->url = api->request_url(m->ctx);
    return NULL;
}

/* What /c/global-reach hands to its global custom notification. */
typedef struct {
    riis_context *ctx;
    riis_hresult result;
} reach;

static riis_status begin_request(instance *self, riis_context *ctx) {
    const char *url = api->request_url(ctx);
    char line[256];

    /* A request-scope context whose cleanup the tests count. */
    api->set_module_context(ctx, RIIS_SCOPE_REQUEST, malloc(16), release_request_context);

    if (strncmp(url, "/c/", 3) != 0 || strcmp(url, "/c/auth-thread") == 0) {
        return RIIS_STATUS_CONTINUE;
    }
    api->response_set_header(ctx, "Content-Type", "text/plain", 1);

    if (strcmp(url, "/c/hello") == 0) {
        int *count = (int *)api->module_context(ctx, RIIS_SCOPE_SITE);
        const char *remote = api->server_variable(ctx, "REMOTE_ADDR", NULL);
        const char *pre = api->request_header(ctx, "X-Pre-Begin", NULL);
        const char *greeting = api->config_value(ctx, section, "greeting");
        if (count == NULL) {
            count = (int *)calloc(1, sizeof *count);
            api->set_module_context(ctx, RIIS_SCOPE_SITE, count, release_counter);
        }
        pthread_mutex_lock(&lock);
        snprintf(line, sizeof line, "%d", ++*count);
        pthread_mutex_unlock(&lock);
        api->response_set_header(ctx, "X-Site-Count", line, 1);
        api->response_set_header(ctx, "X-Method", api->request_method(ctx), 1);
        api->response_set_header(ctx, "X-Remote", remote ? remote : "none", 1);
        api->response_set_header(ctx, "X-Pre", pre ? pre : "none", 1);
        api->response_set_header(ctx, "X-Greeting", greeting ? greeting : "none", 1);
        text(ctx, "hello from C\n");
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/store-same") == 0) {
        /* The same pointer stored twice at request scope (state kept on
         * every notification): freed once, when the request ends. */
        void *state = malloc(16);
        riis_hresult a = api->set_module_context(ctx, RIIS_SCOPE_REQUEST, state, release_request_context);
        riis_hresult b = api->set_module_context(ctx, RIIS_SCOPE_REQUEST, state, release_request_context);
        snprintf(line, sizeof line, "%s %s\n", a == RIIS_S_OK && b == RIIS_S_OK ? "stored twice" : "refused",
                 api->module_context(ctx, RIIS_SCOPE_REQUEST) == state ? "same" : "other");
        text(ctx, line);
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/assign-twice") == 0) {
        /* A shared scope keeps its first value: the second store is
         * refused (and its pointer stays this module's to free). */
        int *first = (int *)calloc(1, sizeof *first);
        int *second = (int *)calloc(1, sizeof *second);
        riis_hresult a = api->set_module_context(ctx, RIIS_SCOPE_CONNECTION, first, release_counter);
        riis_hresult b = api->set_module_context(ctx, RIIS_SCOPE_CONNECTION, second, release_counter);
        if (b != RIIS_S_OK) {
            free(second);
        }
        snprintf(line, sizeof line, "%s %s %s\n", a == RIIS_S_OK ? "stored" : "refused",
                 b == RIIS_E_ALREADY_ASSIGNED ? "already-assigned" : "replaced",
                 api->module_context(ctx, RIIS_SCOPE_CONNECTION) == (void *)first ? "first" : "other");
        text(ctx, line);
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/raw-header") == 0) {
        /* Header bytes as the client sent them (Latin-1 here), with their
         * length; and a Latin-1 value set on the response. */
        size_t length = 0;
        const char *value = api->request_header(ctx, "X-Latin", &length);
        size_t at = 0;
        size_t i;
        for (i = 0; value != NULL && i < length && at + 4 < sizeof line; i++) {
            at += (size_t)snprintf(line + at, sizeof line - at, "%02x ", (unsigned char)value[i]);
        }
        snprintf(line + at, sizeof line - at, "(%u) set:%s\n", (unsigned)length,
                 api->response_set_header(ctx, "X-Latin-Back", "\xe9t\xe9", 1) == RIIS_S_OK
                     ? "ok"
                     : "refused");
        text(ctx, line);
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/huge-insert") == 0) {
        /* A length no buffer can have: refused, not copied. */
        static const char some[] = "x";
        riis_hresult hr = api->request_insert_entity_body(ctx, some, SIZE_MAX);
        text(ctx, hr == RIIS_E_INVALIDARG ? "refused\n" : "accepted\n");
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/huge-alloc") == 0) {
        /* More than any machine has: NULL, not the end of the server. */
        void *huge = api->context_allocate(ctx, (size_t)1 << 62);
        text(ctx, huge == NULL ? "null\n" : "memory\n");
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/echo") == 0) {
        self->buffer = (char *)api->context_allocate(ctx, 7);
        self->reading = 1;
        /* A small buffer, so a body takes several reads. */
        if (api->request_read_entity_body(ctx, self->buffer, 7) != RIIS_S_OK) {
            api->response_set_status(ctx, 500, NULL, 0, RIIS_E_FAIL);
            return RIIS_STATUS_FINISH_REQUEST;
        }
        return RIIS_STATUS_PENDING;
    }
    if (strcmp(url, "/c/twice") == 0) {
        pthread_t t;
        text(ctx, "signalled twice\n");
        pthread_create(&t, NULL, indicate_twice, ctx);
        pthread_detach(t);
        return RIIS_STATUS_PENDING;
    }
    if (strcmp(url, "/c/twice-result") == 0) {
        pthread_mutex_lock(&lock);
        snprintf(line, sizeof line, "0x%08X\n", (unsigned)second_signal);
        pthread_mutex_unlock(&lock);
        text(ctx, line);
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/thread") == 0) {
        pthread_t t;
        text(ctx, "finished by another thread\n");
        pthread_create(&t, NULL, indicate_later, ctx);
        pthread_detach(t);
        return RIIS_STATUS_PENDING;
    }
    if (strcmp(url, "/c/orphan") == 0) {
        pthread_t t;
        self->orphan = 1;
        pthread_create(&t, NULL, indicate_much_later, ctx);
        pthread_detach(t);
        return RIIS_STATUS_PENDING;
    }
    if (strcmp(url, "/c/flood") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, flood_later, ctx);
        pthread_detach(t);
        return RIIS_STATUS_PENDING;
    }
    if (strcmp(url, "/c/flooded") == 0) {
        pthread_mutex_lock(&lock);
        snprintf(line, sizeof line, "refused_at=%d hr=0x%08X\n", flood_refused_at,
                 (unsigned)flood_refusal);
        pthread_mutex_unlock(&lock);
        text(ctx, line);
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/orphans") == 0) {
        pthread_mutex_lock(&lock);
        snprintf(line, sizeof line, "disposed=%d,%d called=%d late_write=0x%08X\n",
                 orphans_disposed_after, orphans_disposed_before, orphans_called_pending,
                 (unsigned)orphan_late_write);
        pthread_mutex_unlock(&lock);
        text(ctx, line);
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/post-thread") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, post_later, ctx);
        pthread_detach(t);
        return RIIS_STATUS_PENDING;
    }
    if (strcmp(url, "/c/bad-status") == 0) {
        return 7;
    }
    if (strcmp(url, "/c/odd-chunks") == 0) {
        riis_hresult interim = api->response_set_status(ctx, 103, NULL, 0, 0);
        riis_data_chunk chunk;
        memset(&chunk, 0, sizeof chunk);
        chunk.type = RIIS_CHUNK_FROM_FILE_NAME;
        chunk.file_name = "/";
        chunk.length = UINT64_MAX;
        riis_hresult folder = api->response_write_entity_chunks(ctx, &chunk, 1, NULL);
        char fifo[512] = "";
        size_t n = 0;
        const char *named = api->request_header(ctx, "X-Fifo", &n);
        if (named != NULL && n < sizeof fifo) {
            memcpy(fifo, named, n);
            fifo[n] = 0;
        }
        chunk.file_name = fifo;
        riis_hresult pipe = api->response_write_entity_chunks(ctx, &chunk, 1, NULL);
        /* A file opened for writing alone: no bytes to read from it. */
        char write_only_path[600];
        snprintf(write_only_path, sizeof write_only_path, "%s.wo", fifo);
        int write_only = open(write_only_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        (void)write(write_only, "written", 7);
        memset(&chunk, 0, sizeof chunk);
        chunk.type = RIIS_CHUNK_FROM_FILE_HANDLE;
        chunk.file_descriptor = write_only;
        chunk.length = UINT64_MAX;
        riis_hresult unreadable = api->response_write_entity_chunks(ctx, &chunk, 1, NULL);
        close(write_only);
        riis_hresult user = api->set_user(ctx, "alice\r\nX-Injected: 1", "Basic", NULL, 0);
        snprintf(line, sizeof line, "0x%08X 0x%08X 0x%08X 0x%08X 0x%08X\n", (unsigned)interim,
                 (unsigned)folder, (unsigned)pipe, (unsigned)unreadable, (unsigned)user);
        text(ctx, line);
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/wrong-thread") == 0) {
        pthread_t t;
        misuse m;
        m.ctx = ctx;
        m.result = 0;
        m.url = NULL;
        pthread_create(&t, NULL, use_from_another_thread, &m);
        pthread_join(t, NULL);
        snprintf(line, sizeof line, "0x%08X url:%s\n", (unsigned)m.result,
                 m.url != NULL ? "came" : "refused");
        text(ctx, line);
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/alloc-thread") == 0) {
        /* The allocator serves the instance's own calls, not other threads. */
        pthread_t t;
        void *elsewhere = NULL;
        void *here = api->allocator_allocate(self->allocator, 16);
        pthread_create(&t, NULL, allocate_from_another_thread, self->allocator);
        pthread_join(t, &elsewhere);
        text(ctx, here != NULL ? "here " : "none-here ");
        text(ctx, elsewhere == NULL ? "refused\n" : "served\n");
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/global-reach") == 0) {
        reach r = {ctx, 0};
        api->raise_global_custom_notification(ctx, "riis-test/reach", &r);
        snprintf(line, sizeof line, "0x%08X\n", (unsigned)r.result);
        text(ctx, line);
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/custom") == 0) {
        int pings = 0;
        api->raise_custom_notification(ctx, "riis-test/ping", &pings);
        snprintf(line, sizeof line, "pings=%d\n", pings);
        text(ctx, line);
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/child") == 0) {
        riis_context *child = api->context_clone(ctx);
        if (child == NULL || api->request_set_url(child, "/c/hello") != RIIS_S_OK) {
            api->response_set_status(ctx, 500, NULL, 0, RIIS_E_FAIL);
            return RIIS_STATUS_FINISH_REQUEST;
        }
        text(ctx, "parent before\n");
        if (api->context_execute_request(ctx, child, RIIS_EXECUTE_FLAG_BUFFER_RESPONSE) != RIIS_S_OK) {
            api->response_set_status(ctx, 500, NULL, 0, RIIS_E_FAIL);
            return RIIS_STATUS_FINISH_REQUEST;
        }
        return RIIS_STATUS_PENDING;
    }
    if (strcmp(url, "/c/child-as") == 0 || strcmp(url, "/c/child-plain") == 0) {
        /* A child for /plain.txt, given a user (AS_USER: no
         * authentication) or not. */
        int as_user = strcmp(url, "/c/child-as") == 0;
        riis_context *child = api->context_clone(ctx);
        uint32_t flags = RIIS_EXECUTE_FLAG_BUFFER_RESPONSE;
        if (child == NULL || api->request_set_url(child, "/plain.txt") != RIIS_S_OK) {
            api->response_set_status(ctx, 500, NULL, 0, RIIS_E_FAIL);
            return RIIS_STATUS_FINISH_REQUEST;
        }
        if (as_user) {
            api->set_user(child, "bob", "Forms", NULL, 0);
            flags |= RIIS_EXECUTE_FLAG_AS_USER;
        }
        pthread_mutex_lock(&lock);
        plain_authentications = 0;
        pthread_mutex_unlock(&lock);
        if (api->context_execute_request(ctx, child, flags) != RIIS_S_OK) {
            api->response_set_status(ctx, 500, NULL, 0, RIIS_E_FAIL);
            return RIIS_STATUS_FINISH_REQUEST;
        }
        return RIIS_STATUS_PENDING;
    }
    if (strcmp(url, "/c/self-clone") == 0) {
        /* A clone handed to itself is refused and stays usable. */
        riis_context *child = api->context_clone(ctx);
        riis_hresult run;
        if (child == NULL) {
            api->response_set_status(ctx, 500, NULL, 0, RIIS_E_FAIL);
            return RIIS_STATUS_FINISH_REQUEST;
        }
        run = api->context_execute_request(child, child, RIIS_EXECUTE_FLAG_SAME_URL);
        api->context_release_clone(child, child);
        text(ctx, run == RIIS_E_INVALIDARG ? "refused " : "accepted ");
        text(ctx, api->request_url(child) != NULL ? "usable\n" : "gone\n");
        api->context_release_clone(ctx, child);
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/never") == 0) {
        text(ctx, "this is never sent\n");
        return RIIS_STATUS_PENDING;
    }
    if (strcmp(url, "/c/early-twice") == 0) {
        riis_hresult first = api->indicate_completion(ctx, RIIS_STATUS_FINISH_REQUEST);
        riis_hresult second = api->indicate_completion(ctx, RIIS_STATUS_FINISH_REQUEST);
        snprintf(line, sizeof line, "0x%08X 0x%08X\n", (unsigned)first, (unsigned)second);
        text(ctx, line);
        return RIIS_STATUS_PENDING;
    }
    if (strcmp(url, "/c/clone-cleanup") == 0) {
        clone_probe *probe = (clone_probe *)api->context_allocate(ctx, sizeof *probe);
        riis_context *first = api->context_clone(ctx);
        probe->other = api->context_clone(ctx);
        snprintf(probe->seen, sizeof probe->seen, "not run");
        api->set_module_context(first, RIIS_SCOPE_REQUEST, probe, clone_cleanup);
        api->context_release_clone(ctx, first);
        api->context_release_clone(ctx, probe->other);
        snprintf(line, sizeof line, "cleanup saw %s\n", probe->seen);
        text(ctx, line);
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/same-string") == 0) {
        const char *first_url = api->request_url(ctx);
        const char *first_host = api->request_header(ctx, "Host", NULL);
        int same = first_url != NULL && first_host != NULL;
        int i;
        for (i = 0; i < 1000; i++) {
            same = same && api->request_url(ctx) == first_url &&
                   api->request_header(ctx, "Host", NULL) == first_host;
        }
        text(ctx, same ? "same\n" : "different\n");
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/nested-ops") == 0) {
        text(ctx, "nested\n");
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/delivered") == 0) {
        int *marker = (int *)malloc(sizeof *marker);
        *marker = 42;
        if (api->context_on_response_delivered(ctx, response_delivered, marker) != RIIS_S_OK) {
            free(marker);
        }
        text(ctx, "0123456789");
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/delivered-result") == 0) {
        snprintf(line, sizeof line, "%lld %d",
                 __atomic_load_n(&delivered_bytes, __ATOMIC_SEQ_CST),
                 __atomic_load_n(&delivered_whole, __ATOMIC_SEQ_CST));
        text(ctx, line);
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/upper") == 0) {
        text(ctx, "make me ");
        text(ctx, "loud");
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/pieces") == 0) {
        int i;
        for (i = 0; i < 1000; i++) {
            text(ctx, "make me loud");
        }
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/unusable-disposed") == 0) {
        pthread_mutex_lock(&lock);
        snprintf(line, sizeof line, "%d", unusable_disposed);
        pthread_mutex_unlock(&lock);
        text(ctx, line);
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strcmp(url, "/c/stats") == 0) {
        pthread_mutex_lock(&lock);
        snprintf(line, sizeof line, "cleanups=%d\n", cleanups);
        pthread_mutex_unlock(&lock);
        text(ctx, line);
        return RIIS_STATUS_FINISH_REQUEST;
    }
    api->response_set_status(ctx, 404, NULL, 0, 0);
    text(ctx, "no such C route\n");
    return RIIS_STATUS_FINISH_REQUEST;
}

/* Replaces the buffered entity with its upper-case copy. */
static void upper_case_entity(riis_context *ctx) {
    uint32_t n = api->response_entity_chunk_count(ctx), i;
    size_t total = 0, at = 0;
    char *copy, line[32];
    riis_data_chunk chunk;
    for (i = 0; i < n; i++) {
        api->response_entity_chunk(ctx, i, &chunk);
        total += (size_t)chunk.buffer_length;
    }
    copy = (char *)api->context_allocate(ctx, total + 1);
    for (i = 0; i < n; i++) {
        size_t k;
        api->response_entity_chunk(ctx, i, &chunk);
        for (k = 0; k < chunk.buffer_length; k++) {
            char c = ((const char *)chunk.buffer)[k];
            copy[at++] = (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
        }
    }
    memset(&chunk, 0, sizeof chunk);
    chunk.type = RIIS_CHUNK_FROM_MEMORY;
    chunk.buffer = copy;
    chunk.buffer_length = at;
    api->response_set_entity_chunks(ctx, &chunk, 1);
    snprintf(line, sizeof line, "%u", (unsigned)api->response_header_names(ctx, NULL, 0));
    api->response_set_header(ctx, "X-Header-Count", line, 1);
}

static riis_status on_notification(void *module, riis_context *ctx, uint32_t notification,
                                   int is_post, riis_provider *provider) {
    instance *self = (instance *)module;
    (void)is_post;
    if (self->orphan) {
        pthread_mutex_lock(&lock);
        if (!orphan_signalled) {
            orphans_called_pending++;
        }
        pthread_mutex_unlock(&lock);
    }
    switch (notification) {
    case RIIS_RQ_BEGIN_REQUEST:
        return begin_request(self, ctx);
    case RIIS_RQ_AUTHENTICATE_REQUEST:
        /* An authentication that asks another thread (a directory, a
         * token service), as IIS modules do: Pending, then a completion
         * signalled from there. */
        if (strcmp(api->request_url(ctx), "/plain.txt") == 0) {
            pthread_mutex_lock(&lock);
            plain_authentications++;
            pthread_mutex_unlock(&lock);
        }
        if (strcmp(api->request_url(ctx), "/c/auth-thread") == 0) {
            pthread_t t;
            text(ctx, "authenticated by another thread\n");
            pthread_create(&t, NULL, indicate_later, ctx);
            pthread_detach(t);
            return RIIS_STATUS_PENDING;
        }
        return RIIS_STATUS_CONTINUE;
    case RIIS_RQ_SEND_RESPONSE:
        if (api->send_headers_being_sent(provider)) {
            api->response_set_header(ctx, "X-Send-Seen", "yes", 1);
        }
        if (strcmp(api->request_url(ctx), "/c/upper") == 0) {
            upper_case_entity(ctx);
        }
        if (strcmp(api->request_url(ctx), "/c/nested-ops") == 0 &&
            api->send_headers_being_sent(provider)) {
            char *buffer = (char *)api->context_allocate(ctx, 16);
            riis_context *child = api->context_clone(ctx);
            char line[96];
            riis_hresult read = api->request_read_entity_body(ctx, buffer, 16);
            riis_hresult post = api->post_completion(ctx, 1);
            riis_hresult flush = api->response_flush(ctx, 1, 0);
            riis_hresult execute = child != NULL ? api->context_execute_request(ctx, child, 0)
                                                 : RIIS_S_OK;
            snprintf(line, sizeof line, "0x%08X 0x%08X 0x%08X 0x%08X", (unsigned)read,
                     (unsigned)post, (unsigned)flush, (unsigned)execute);
            api->response_set_header(ctx, "X-Nested-Ops", line, 1);
        }
        if (strcmp(api->request_url(ctx), "/c/pieces") == 0) {
            int deferred = 0;
            char line[64];
            api->send_defer_after(provider, ctx, 5000, &deferred);
            if (api->send_headers_being_sent(provider)) {
                snprintf(line, sizeof line, "deferred=%d flush=%d final=%d", deferred,
                         api->send_is_flush(provider), api->send_is_final(provider));
                /* Appended: the library is listed twice, and the second
                 * instance sees the first one's pieces. */
                api->response_set_header(ctx, "X-Pieces", line, 0);
            }
            upper_case_entity(ctx);
        }
        return RIIS_STATUS_CONTINUE;
    case RIIS_RQ_READ_ENTITY:
        if (api->request_header(ctx, "X-Double", NULL) != NULL) {
            const void *data = NULL;
            size_t length = 0, i;
            char *doubled;
            api->read_entity(provider, &data, &length);
            doubled = (char *)api->context_allocate(ctx, length * 2 + 1);
            if (doubled == NULL) {
                return RIIS_STATUS_CONTINUE;
            }
            for (i = 0; i < length; i++) {
                doubled[2 * i] = doubled[2 * i + 1] = ((const char *)data)[i];
            }
            api->read_set_entity(provider, doubled, length * 2);
        }
        return RIIS_STATUS_CONTINUE;
    case RIIS_RQ_CUSTOM_NOTIFICATION:
        if (strcmp(api->custom_type(provider), "riis-test/ping") == 0) {
            int *pings = (int *)api->custom_data(provider);
            if (pings != NULL) {
                ++*pings;
            }
        }
        return RIIS_STATUS_CONTINUE;
    default:
        return RIIS_STATUS_CONTINUE;
    }
}

static riis_status on_async_completion(void *module, riis_context *ctx, uint32_t notification,
                                       int is_post, riis_provider *provider,
                                       const riis_completion_info *completion) {
    instance *self = (instance *)module;
    char line[64];
    (void)notification;
    (void)is_post;
    (void)provider;
    if (self->reading) {
        if (completion->bytes == 0) {
            /* Past the end a read fails at once, as in IIS. */
            riis_hresult again = api->request_read_entity_body(ctx, self->buffer, 7);
            snprintf(line, sizeof line, "0x%08X", (unsigned)again);
            api->response_set_header(ctx, "X-Read-After-End", line, 1);
            self->reading = 0;
            return RIIS_STATUS_FINISH_REQUEST;
        }
        riis_data_chunk chunk;
        memset(&chunk, 0, sizeof chunk);
        chunk.type = RIIS_CHUNK_FROM_MEMORY;
        chunk.buffer = self->buffer;
        chunk.buffer_length = completion->bytes;
        api->response_write_entity_chunks(ctx, &chunk, 1, NULL);
        api->request_read_entity_body(ctx, self->buffer, 7);
        return RIIS_STATUS_PENDING;
    }
    if (strcmp(api->request_url(ctx), "/c/child") == 0) {
        text(ctx, "parent after\n");
        return RIIS_STATUS_FINISH_REQUEST;
    }
    if (strncmp(api->request_url(ctx), "/c/child-", 9) == 0) {
        pthread_mutex_lock(&lock);
        snprintf(line, sizeof line, " authentications=%d\n", plain_authentications);
        pthread_mutex_unlock(&lock);
        text(ctx, line);
        return RIIS_STATUS_FINISH_REQUEST;
    }
    snprintf(line, sizeof line, "completed %llu, status %d\n",
             (unsigned long long)completion->bytes, (int)completion->status);
    text(ctx, line);
    return RIIS_STATUS_FINISH_REQUEST;
}

static void dispose(void *module) {
    instance *self = (instance *)module;
    if (self->orphan) {
        pthread_mutex_lock(&lock);
        if (orphan_signalled) {
            orphans_disposed_after++;
        } else {
            orphans_disposed_before++;
        }
        pthread_mutex_unlock(&lock);
    }
    free(module);
}

static const riis_module_callbacks callbacks = {
    sizeof(riis_module_callbacks), on_notification, on_async_completion, dispose};

static riis_hresult get_http_module(void *user_data, riis_allocator *allocator,
                                    riis_module_instance *out) {
    instance *self;
    (void)user_data;
    out->callbacks = &callbacks;
    out->module = calloc(1, sizeof(instance));
    if (out->module == NULL) {
        return RIIS_E_OUTOFMEMORY;
    }
    self = (instance *)out->module;
    self->allocator = allocator;
    /* The allocator works during get_http_module itself. */
    return api->allocator_allocate(allocator, 8) != NULL ? RIIS_S_OK : RIIS_E_FAIL;
}

static const riis_module_factory factory = {sizeof(riis_module_factory), NULL, get_http_module,
                                            NULL};

/* CUnusable: a factory whose instances have no on_notification. The server
 * refuses them (the request fails) and must hand each back to dispose. */
static void dispose_unusable(void *module) {
    pthread_mutex_lock(&lock);
    unusable_disposed++;
    pthread_mutex_unlock(&lock);
    free(module);
}

static const riis_module_callbacks unusable_callbacks = {sizeof(riis_module_callbacks), NULL,
                                                         NULL, dispose_unusable};

static riis_hresult get_unusable_module(void *user_data, riis_allocator *allocator,
                                        riis_module_instance *out) {
    (void)user_data;
    (void)allocator;
    out->callbacks = &unusable_callbacks;
    out->module = malloc(8);
    return out->module != NULL ? RIIS_S_OK : RIIS_E_OUTOFMEMORY;
}

static const riis_module_factory unusable_factory = {sizeof(riis_module_factory), NULL,
                                                     get_unusable_module, NULL};

static riis_global_status on_global(void *user_data, uint32_t notification,
                                    riis_global_provider *provider) {
    (void)user_data;
    if (notification == RIIS_GL_PRE_BEGIN_REQUEST) {
        riis_context *ctx = api->global_context(provider);
        api->request_set_header(ctx, "X-Pre-Begin", "seen", 1);
    }
    if (notification == RIIS_GL_RSCA_QUERY) {
        /* Answers `riis status`: text that is not UTF-8 is refused, and
         * the refusal is reported in the answer itself. */
        const char *function = NULL, *parameters = NULL;
        char line[96];
        riis_hresult refused;
        api->global_rsca_query(provider, &function, &parameters);
        refused = api->global_rsca_write(provider, "\xff\xfe", 2);
        snprintf(line, sizeof line, "c-module: function=%s parameters=[%s] non-utf8=0x%08X\n",
                 function, parameters, (unsigned)refused);
        api->global_rsca_write(provider, line, strlen(line));
    }
    if (notification == RIIS_GL_CUSTOM_NOTIFICATION &&
        strcmp(api->global_custom_type(provider), "riis-test/reach") == 0) {
        /* The request context of the call that raised this is not this
         * callback's to use. */
        reach *r = (reach *)api->global_custom_data(provider);
        r->result = api->response_set_header(r->ctx, "X-Reached", "1", 1);
    }
    return RIIS_GLOBAL_CONTINUE;
}

static const riis_global_module global = {sizeof(riis_global_module), NULL, on_global, NULL};

RIIS_EXPORT riis_hresult RegisterModule(uint32_t server_version, riis_registration *registration,
                                        const riis_server *server) {
    riis_hresult hr;
    (void)server_version;
    api = server->api;
    if (strcmp(api->registration_name(registration), "CUnusable") == 0) {
        return api->set_request_notifications(registration, &unusable_factory,
                                              RIIS_RQ_BEGIN_REQUEST, 0);
    }
    hr = api->set_request_notifications(registration, &factory,
                                        RIIS_RQ_BEGIN_REQUEST | RIIS_RQ_AUTHENTICATE_REQUEST |
                                            RIIS_RQ_SEND_RESPONSE | RIIS_RQ_READ_ENTITY |
                                            RIIS_RQ_CUSTOM_NOTIFICATION,
                                        0);
    if (hr < 0) {
        return hr;
    }
    /* The library is registered twice in the tests (the second instance
     * counts custom notifications); the section belongs to the first. */
    if (strcmp(api->registration_name(registration), "CModule") == 0) {
        hr = api->declare_section(registration, "c_module", &section);
        if (hr < 0) {
            return hr;
        }
        /* ABI 1.12: the keys it reads; a misspelt one is refused. */
        {
            static const char *const keys[] = {"greeting"};
            hr = api->declare_section_keys(registration, section, keys, 1);
            if (hr < 0) {
                return hr;
            }
        }
        /* ABI 1.11: a log source names the module wherever it logs from;
         * a line break in a message cannot start a line of its own. */
        api->log_from_source(api->registration_log_source(registration), RIIS_LOG_INFO,
                             "c_module registered\nriis: a forged line");
    }
    return api->set_global_notifications(registration, &global,
                                         RIIS_GL_PRE_BEGIN_REQUEST | RIIS_GL_CUSTOM_NOTIFICATION |
                                             RIIS_GL_RSCA_QUERY);
}
