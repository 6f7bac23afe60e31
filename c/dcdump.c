/* dcdump: list the tensors of .dc files, decoded by the C reader (dc.h).
 *
 *     dcdump FILE...             one line per tensor: name, dtype, shape, kind, and the CRC32
 *                                of its decoded values as float32 little-endian bytes
 *     dcdump --raw OUT FILE      the same, and every tensor's values as float32
 *                                little-endian, in name order, written to OUT (through a
 *                                temporary file; OUT may not be FILE)
 *     dcdump --bench N FILE      open and decode every tensor N times: best and median
 *                                milliseconds, and the reader's peak heap
 *
 * With several files each line starts with "FILE: ". A file that cannot be read gives one
 * line "dcdump: error: FILE: message (DC_E_...)" on stderr; the exit status is 0 when every
 * file decoded, 1 when one did not, 2 for a usage error.
 */
#define _POSIX_C_SOURCE 200809L     /* stat and getpid: the command runs on a host */
#include "dc.h"

#include <sys/stat.h>
#include <unistd.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A counting allocator (dc_allocator): the reader's heap, now and at its peak. */
typedef union {
    size_t size;
    double align_d;
    void *align_p;
    long long align_l;
} block_head;

typedef struct {
    size_t now, peak;
} heap_count;

static void *count_alloc(void *ctx, size_t n)
{
    heap_count *c = ctx;
    block_head *b = malloc(sizeof *b + n);
    if (!b)
        return NULL;
    b->size = n;
    c->now += n;
    if (c->now > c->peak)
        c->peak = c->now;
    return b + 1;
}

static void count_free(void *ctx, void *p)
{
    heap_count *c = ctx;
    block_head *b = (block_head *)p - 1;
    c->now -= b->size;
    free(b);
}

static int read_file(const char *path, uint8_t **buf, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    size_t cap = 1 << 16, n = 0;
    uint8_t *p = malloc(cap);
    if (!fp || !p) {
        if (fp)
            fclose(fp);
        free(p);
        return 0;
    }
    for (;;) {
        size_t got = fread(p + n, 1, cap - n, fp);
        n += got;
        if (n < cap)
            break;
        if (cap > (size_t)-1 / 2) {
            free(p);
            fclose(fp);
            return 0;
        }
        {
            uint8_t *q = realloc(p, cap * 2);
            if (!q) {
                free(p);
                fclose(fp);
                return 0;
            }
            p = q;
            cap *= 2;
        }
    }
    if (ferror(fp)) {
        free(p);
        fclose(fp);
        return 0;
    }
    fclose(fp);
    *buf = p;
    *len = n;
    return 1;
}

/* float32 values as little-endian bytes, whatever the host's byte order. */
static void to_le(const float *x, size_t n, uint8_t *out)
{
    size_t i;
    for (i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, sizeof u);
        out[4 * i] = (uint8_t)u;
        out[4 * i + 1] = (uint8_t)(u >> 8);
        out[4 * i + 2] = (uint8_t)(u >> 16);
        out[4 * i + 3] = (uint8_t)(u >> 24);
    }
}

/* CRC32 of the values' little-endian bytes; written to raw as well when it is not NULL.
 * 0 on a write error. */
static int checksum(const float *x, size_t n, FILE *raw, uint32_t *crc)
{
    uint8_t chunk[4096];
    size_t i;
    *crc = 0;
    for (i = 0; i < n; i += 1024) {
        size_t m = n - i < 1024 ? n - i : 1024;
        to_le(x + i, m, chunk);
        *crc = dc_crc32(*crc, chunk, 4 * m);
        if (raw && fwrite(chunk, 4, m, raw) != m)
            return 0;
    }
    return 1;
}

static void error(const char *path, const dc_file *f, dc_status st)
{
    fprintf(stderr, "dcdump: error: %s: %s (%s)\n", path, dc_error_message(f),
            dc_status_name(st));
}

/* Print (and write to raw) every tensor of one file: 0 if it decoded, else 1. */
static int dump(const char *path, const char *prefix, FILE *raw)
{
    uint8_t *buf;
    size_t len, i, most = 0;
    float *values = NULL;
    dc_file f;
    dc_status st;
    if (!read_file(path, &buf, &len)) {
        fprintf(stderr, "dcdump: error: %s: cannot read the file\n", path);
        return 1;
    }
    st = dc_open(&f, buf, len);
    for (i = 0; st == DC_OK && i < dc_tensor_count(&f); i++) {
        dc_info t;
        dc_tensor_info(&f, i, &t);
        most = t.numel > most ? t.numel : most;
    }
    if (st == DC_OK && !(values = malloc((most ? most : 1) * sizeof *values))) {
        fprintf(stderr, "dcdump: error: %s: out of memory\n", path);
        dc_close(&f);
        free(buf);
        return 1;
    }
    for (i = 0; st == DC_OK && i < dc_tensor_count(&f); i++) {
        dc_info t;
        uint32_t crc;
        unsigned d;
        dc_tensor_info(&f, i, &t);
        if ((st = dc_decode_tensor(&f, i, values, most)) != DC_OK)
            break;
        if (!checksum(values, t.numel, raw, &crc)) {
            fprintf(stderr, "dcdump: error: cannot write the raw values\n");
            st = DC_E_ARGUMENT;
            break;
        }
        printf("%s%s %s [", prefix, t.name, dc_dtype_name(t.dtype));
        for (d = 0; d < t.ndim; d++)
            printf(d ? ",%lu" : "%lu", (unsigned long)t.shape[d]);
        printf("] %s %08lx\n", dc_kind_name(t.kind), (unsigned long)crc);
    }
    if (st != DC_OK && st != DC_E_ARGUMENT)
        error(path, &f, st);
    dc_close(&f);
    free(values);
    free(buf);
    return st != DC_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Open and decode the whole file `runs` times: CPU milliseconds, best and median. */
static int bench(const char *path, int runs)
{
    uint8_t *buf;
    size_t len, most = 0, i, count = 0;
    float *values = NULL;
    double *ms = malloc((size_t)runs * sizeof *ms);
    heap_count heap = {0, 0};
    dc_allocator a;
    dc_file f;
    dc_status st = DC_OK;
    int r;
    a.alloc = count_alloc;
    a.free = count_free;
    a.ctx = &heap;
    if (!ms || !read_file(path, &buf, &len)) {
        fprintf(stderr, "dcdump: error: %s: cannot read the file\n", path);
        free(ms);
        return 1;
    }
    for (r = 0; r < runs && st == DC_OK; r++) {
        clock_t t0 = clock();
        st = dc_open_with(&f, buf, len, &a);
        for (i = 0; st == DC_OK && i < dc_tensor_count(&f); i++) {
            dc_info t;
            dc_tensor_info(&f, i, &t);
            if (t.numel > most) {
                free(values);
                most = t.numel;
                if (!(values = malloc(most * sizeof *values))) {
                    fprintf(stderr, "dcdump: error: out of memory\n");
                    return 1;
                }
            }
            st = dc_decode_tensor(&f, i, values, most);
        }
        ms[r] = 1000.0 * (double)(clock() - t0) / CLOCKS_PER_SEC;
        count = dc_tensor_count(&f);
        if (st != DC_OK)
            error(path, &f, st);
        dc_close(&f);
    }
    if (st == DC_OK) {
        qsort(ms, (size_t)runs, sizeof *ms, cmp_double);
        printf("%s: %zu bytes, %zu tensors: open and decode %.3f ms best, %.3f ms median of "
               "%d; reader's peak heap %zu bytes, largest tensor %zu bytes\n", path, len,
               count, ms[0], ms[runs / 2], runs, heap.peak,
               most * sizeof *values);
    }
    free(values);
    free(ms);
    free(buf);
    return st != DC_OK;
}

/* Whether two paths name the same existing file (its device and inode). */
static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev
           && sa.st_ino == sb.st_ino;
}

/* --raw OUT FILE: the values go to a temporary file beside OUT, renamed to OUT once every
 * tensor decoded and the file is closed; OUT is never the input, and on any error nothing is
 * left behind and an existing OUT is untouched. */
static int dump_raw(const char *out, const char *path)
{
    char tmp[4096];
    FILE *raw;
    int bad;
    if (same_file(out, path)) {
        fprintf(stderr, "dcdump: error: %s is the input file: writing it would destroy it\n",
                out);
        return 2;
    }
    if (snprintf(tmp, sizeof tmp, "%s.tmp-dcdump-%ld", out, (long)getpid()) >= (int)sizeof tmp) {
        fprintf(stderr, "dcdump: error: %s: path too long\n", out);
        return 2;
    }
    raw = fopen(tmp, "wb");
    if (!raw) {
        fprintf(stderr, "dcdump: error: %s: cannot write the file\n", out);
        return 1;
    }
    bad = dump(path, "", raw);
    if (fclose(raw) != 0 && !bad) {
        fprintf(stderr, "dcdump: error: %s: cannot write the file\n", out);
        bad = 1;
    }
    if (!bad && rename(tmp, out) != 0) {
        fprintf(stderr, "dcdump: error: %s: cannot write the file\n", out);
        bad = 1;
    }
    if (bad)
        remove(tmp);
    return bad;
}

static int usage(void)
{
    fprintf(stderr, "usage: dcdump FILE... | dcdump --raw OUT FILE | dcdump --bench N FILE\n");
    return 2;
}

int main(int argc, char **argv)
{
    int i, bad = 0;
    if (argc == 4 && strcmp(argv[1], "--bench") == 0) {
        int runs = atoi(argv[2]);
        return runs > 0 ? bench(argv[3], runs) : usage();
    }
    if (argc == 4 && strcmp(argv[1], "--raw") == 0)
        return dump_raw(argv[2], argv[3]);
    if (argc < 2 || argv[1][0] == '-')
        return usage();
    for (i = 1; i < argc; i++) {
        char prefix[4096];
        if (argc > 2)
            snprintf(prefix, sizeof prefix, "%s: ", argv[i]);
        else
            prefix[0] = 0;
        bad |= dump(argv[i], prefix, NULL);
    }
    return bad;
}
