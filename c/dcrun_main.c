/* dcrun: run a .dc model (format 2.1, with a graph) on float32 inputs, its weights kept
 * compressed (dcrun.h).
 *
 *     dcrun MODEL.dc INPUTS.f32 N      per input, one line: the argmax, then the logits
 *     dcrun --info MODEL.dc            input and output sizes, weight and activation memory
 *     dcrun --bench R MODEL.dc INPUTS.f32 N
 *                                      each input R times: load milliseconds, the best and
 *                                      median microseconds of one input (batch 1), memory
 *
 * INPUTS.f32 holds (at least) N samples of float32 little-endian values, each the model's
 * input tensor normalized as the file's data says. Exit status 0, 1 when the file or the inputs cannot be
 * read (one line on stderr naming the status), 2 for a usage error.
 */
#define _POSIX_C_SOURCE 200809L
#include "dcrun.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    uint8_t *buf = NULL;
    long n;
    if (!fp)
        return NULL;
    if (fseek(fp, 0, SEEK_END) == 0 && (n = ftell(fp)) >= 0 && fseek(fp, 0, SEEK_SET) == 0 &&
        (buf = malloc(n ? (size_t)n : 1)) && fread(buf, 1, (size_t)n, fp) == (size_t)n) {
        *len = (size_t)n;
    } else {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    return buf;
}

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

/* The process's peak resident memory in kB (Linux: VmHWM of /proc/self/status), or 0. */
static long peak_rss_kb(void)
{
    char line[256];
    long kb = 0;
    FILE *fp = fopen("/proc/self/status", "r");
    if (!fp)
        return 0;
    while (fgets(line, sizeof line, fp))
        if (strncmp(line, "VmHWM:", 6) == 0)
            kb = atol(line + 6);
    fclose(fp);
    return kb;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int usage(void)
{
    fprintf(stderr, "usage: dcrun MODEL.dc INPUTS.f32 N | dcrun --info MODEL.dc | "
            "dcrun --bench R MODEL.dc INPUTS.f32 N\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *model, *inputs;
    uint8_t *buf, *raw = NULL;
    size_t len, rlen = 0, i, j, n, nin, nout;
    long count, runs = 0;
    char msg[256];
    dcr_model *m;
    dc_status st;
    double t0, load_ms;
    float *out;
    int info = argc == 3 && strcmp(argv[1], "--info") == 0, rc = 0;
    if (argc == 6 && strcmp(argv[1], "--bench") == 0) {
        runs = atol(argv[2]);
        argv += 2;
        argc -= 2;
        if (runs < 1)
            return usage();
    } else if (!info && (argc != 4 || argv[1][0] == '-')) {
        return usage();
    }
    model = info ? argv[2] : argv[1];
    if (!(buf = slurp(model, &len))) {
        fprintf(stderr, "dcrun: error: %s: cannot read the file\n", model);
        return 1;
    }
    t0 = now_us();
    st = dcr_load(&m, buf, len, msg, sizeof msg);
    load_ms = (now_us() - t0) / 1e3;
    free(buf);
    if (st != DC_OK) {
        fprintf(stderr, "dcrun: error: %s: %s (%s)\n", model, msg, dc_status_name(st));
        return 1;
    }
    nin = dcr_input_len(m);
    nout = dcr_output_len(m);
    if (info) {
        printf("input %zu floats, output %zu; weights %zu bytes, activations %zu bytes\n", nin,
               nout, dcr_weight_bytes(m), dcr_arena_bytes(m));
        dcr_free(m);
        return 0;
    }
    inputs = argv[2];
    count = atol(argv[3]);
    if (count < 1 || !(raw = slurp(inputs, &rlen)) || rlen < (size_t)count * nin * 4) {
        fprintf(stderr, "dcrun: error: %s: expected %ld inputs of %zu float32 values (at least "
                "%zu bytes)\n", inputs, count, nin, (size_t)(count > 0 ? count : 0) * nin * 4);
        free(raw);
        dcr_free(m);
        return 1;
    }
    n = (size_t)count;
    out = malloc(nout * sizeof *out);
    if (!out) {
        fprintf(stderr, "dcrun: error: out of memory\n");
        free(raw);
        dcr_free(m);
        return 1;
    }
    if (runs) {
        double *us = malloc((size_t)runs * n * sizeof *us);
        size_t k = 0;
        long r;
        if (!us) {
            rc = 1;
        } else {
            for (r = 0; r < runs; r++)
                for (i = 0; i < n; i++) {
                    t0 = now_us();
                    dcr_run(m, (const float *)raw + i * nin, out);
                    us[k++] = now_us() - t0;
                }
            qsort(us, k, sizeof *us, cmp);
            printf("load %.3f ms; one input %.1f us best, %.1f us median (%zu runs); weights "
                   "%zu bytes, activations %zu bytes; peak resident %ld kB\n", load_ms, us[0],
                   us[k / 2], k, dcr_weight_bytes(m), dcr_arena_bytes(m), peak_rss_kb());
            free(us);
        }
    } else {
        for (i = 0; i < n; i++) {
            size_t best = 0;
            dcr_run(m, (const float *)raw + i * nin, out);
            for (j = 1; j < nout; j++)
                if (out[j] > out[best])
                    best = j;
            printf("%zu", best);
            for (j = 0; j < nout; j++)
                printf(" %.9g", out[j]);
            printf("\n");
        }
    }
    free(out);
    free(raw);
    dcr_free(m);
    return rc;
}
