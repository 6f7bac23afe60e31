/* The C reader's API beyond what dcdump uses, for tests/test_c_reader.py: argument errors,
 * allocation hooks, every allocation failing in turn, and nothing left allocated.
 *
 *     c_api FILE     prints "ok N" (N allocations tried) or what went wrong; exit 0 if ok
 */
#include "dc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    long calls, fail_at, live;
} hooks;

static void *try_alloc(void *ctx, size_t n)
{
    hooks *h = ctx;
    if (++h->calls == h->fail_at)
        return NULL;
    h->live++;
    return malloc(n);
}

static void do_free(void *ctx, void *p)
{
    hooks *h = ctx;
    h->live--;
    free(p);
}

/* Open and decode everything; DC_OK or the first failure. */
static dc_status run(const uint8_t *buf, size_t len, const dc_allocator *a, float *out,
                     size_t cap)
{
    dc_file f;
    dc_status st = dc_open_with(&f, buf, len, a);
    size_t i;
    for (i = 0; st == DC_OK && i < dc_tensor_count(&f); i++)
        st = dc_decode_tensor(&f, i, out, cap);
    dc_close(&f);
    return st;
}

#define CHECK(cond)                                                                           \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            printf("failed: %s (line %d)\n", #cond, __LINE__);                                \
            return 1;                                                                         \
        }                                                                                     \
    } while (0)

int main(int argc, char **argv)
{
    static uint8_t buf[1 << 20];
    size_t len, most = 0, i;
    float *out;
    FILE *fp;
    dc_file f;
    dc_info t;
    hooks h;
    dc_allocator a;
    long n;
    if (argc != 2 || !(fp = fopen(argv[1], "rb")))
        return 2;
    len = fread(buf, 1, sizeof buf, fp);
    fclose(fp);

    CHECK(dc_open(&f, buf, len) == DC_OK && dc_tensor_count(&f) > 0);
    CHECK(strcmp(dc_error_message(&f), "") == 0);
    for (i = 0; i < dc_tensor_count(&f); i++) {
        CHECK(dc_tensor_info(&f, i, &t) == DC_OK && strlen(t.name) == t.name_len);
        most = t.numel > most ? t.numel : most;
    }
    CHECK(dc_tensor_info(&f, dc_tensor_count(&f), &t) == DC_E_ARGUMENT);
    out = malloc((most + 1) * sizeof *out);
    CHECK(out != NULL);
    CHECK(dc_decode_tensor(&f, dc_tensor_count(&f), out, most) == DC_E_ARGUMENT);
    CHECK(strstr(dc_error_message(&f), "no tensor") != NULL);
    for (i = 0; i < dc_tensor_count(&f); i++) {
        dc_tensor_info(&f, i, &t);
        if (t.numel)
            CHECK(dc_decode_tensor(&f, i, out, t.numel - 1) == DC_E_ARGUMENT);
        CHECK(dc_decode_tensor(&f, i, out, t.numel) == DC_OK);
    }
    dc_close(&f);
    dc_close(&f);                                   /* twice is harmless */
    CHECK(dc_tensor_count(&f) == 0);
    CHECK(dc_open(&f, NULL, 0) == DC_E_BAD_MAGIC);
    dc_close(&f);
    CHECK(dc_open(&f, NULL, 5) == DC_E_ARGUMENT);
    CHECK(strcmp(dc_status_name(DC_E_CHECKSUM), "DC_E_CHECKSUM") == 0);
    CHECK(strcmp(dc_dtype_name(DC_BFLOAT16), "bfloat16") == 0);
    CHECK(dc_crc32(0, "123456789", 9) == 0xcbf43926u);

    /* Every allocation failing in turn: DC_E_NO_MEMORY, and nothing left allocated. */
    a.alloc = try_alloc;
    a.free = do_free;
    a.ctx = &h;
    memset(&h, 0, sizeof h);
    CHECK(run(buf, len, &a, out, most) == DC_OK && h.live == 0);
    for (n = 1; n <= h.calls; n++) {
        hooks k;
        dc_status st;
        memset(&k, 0, sizeof k);
        k.fail_at = n;
        a.ctx = &k;
        st = run(buf, len, &a, out, most);
        CHECK(st == DC_E_NO_MEMORY && k.live == 0);
    }
    printf("ok %ld\n", h.calls);
    free(out);
    return 0;
}
