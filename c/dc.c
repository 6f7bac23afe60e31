/* dc.c: a C99 reader of deepcomp's .dc files, format version 2 (docs/FORMAT.md; API in dc.h).
 *
 * The file, in order: a 24-byte prefix, the header (raw DEFLATE of canonical JSON), the data
 * area (three DEFLATE side blocks, then every tensor's streams) and a CRC32 of everything
 * before it. dc_open checks all of it that can be checked without decoding the streams and
 * keeps the tensor table and the inflated side blocks; dc_decode_tensor decodes one tensor's
 * Huffman streams straight into the caller's buffer.
 *
 * The reader's parts, each with its header: crc.c (the file's CRC32), inflate.c (raw DEFLATE),
 * json.c (the header's JSON) and huffman.c (the tensors' Huffman streams); this file holds
 * the rest: the prefix, the header's schema, the graph, the side blocks, the values, decoding
 * a tensor, and the API.
 *
 * Written from docs/FORMAT.md, RFC 1951 (DEFLATE) and RFC 8259 (JSON); no code from other
 * projects. Every length read from the file is checked against the bytes that remain before
 * it is used, and every count against the shapes before anything is sized from it.
 */
#include "dc.h"

#include "crc.h"
#include "huffman.h"
#include "inflate.h"
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX 24                        /* magic, major, minor, H (u32), D (u64) */
#define TRAILER 4                        /* CRC32 of every byte before it */
#define MAX_HEADER ((size_t)16 << 20)    /* the header, stored and inflated */
#define MAX_BITS 12                      /* cluster and relative index widths */
#define MAX_CODEBOOK 4096                /* shared weights of a tensor */
#define MAX_CLASSES 100000               /* data.classes written as a count */

struct dc_entry {
    size_t name;                         /* offset in f->names */
    size_t name_len;
    uint8_t dtype, stored, kind, csc, index_bits, cb_width, ndim;
    uint32_t shape[DC_MAX_DIMS];
    uint32_t numel, k;                   /* elements; codebook size */
    uint64_t entries, nonzeros;          /* gap symbols (fillers included); kept weights */
    size_t wsec, wlen, gsec, glen, vsec; /* weights, gaps, values sections (data offsets) */
    size_t wtab, gtab;                   /* code lengths (offsets in the code tables) */
    size_t cb, dense;                    /* offsets in the codebooks and dense blocks */
};

enum { K_DENSE = DC_DENSE, K_SPARSE = DC_SPARSE, K_QUANT = DC_QUANTIZED,
       K_QDENSE = DC_QUANTIZED_DENSE };

static const char *const DTYPE_NAMES[] = {"float32", "float64", "float16", "bfloat16", "int64",
                                          "int32", "int16", "int8", "uint8", "bool"};
static const unsigned DTYPE_SIZE[] = {4, 8, 2, 2, 8, 4, 2, 1, 1, 1};
static const char *const KIND_NAMES[] = {"dense", "sparse", "quantized", "quantized_dense"};
/* Fields of each kind's entry after the kind (docs/FORMAT.md, "Tensor entries"). */
static const unsigned KIND_FIELDS[] = {1, 5, 9, 4};

/* --- memory and errors ------------------------------------------------------------------ */

static void *mem_alloc(const dc_file *f, size_t n)
{
    if (n == 0)
        n = 1;
    return f->alloc.alloc ? f->alloc.alloc(f->alloc.ctx, n) : malloc(n);
}

void *dci_mem_array(const dc_file *f, size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return NULL;
    return mem_alloc(f, count * size);
}

void dci_mem_free(const dc_file *f, void *p)
{
    if (!p)
        return;
    if (f->alloc.alloc)
        f->alloc.free(f->alloc.ctx, p);
    else
        free(p);
}

dc_status dci_fail(dc_file *f, dc_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->message, sizeof f->message, fmt, ap);
    va_end(ap);
    f->status = s;
    return s;
}

dc_status dci_no_memory(dc_file *f)
{
    return dci_fail(f, DC_E_NO_MEMORY, "out of memory");
}

/* --- DEFLATE streams of the file (inflated by inflate.c) -------------------------------- */

/* Inflate a stream of the file into a new buffer: exactly `want` bytes, or (want ==
 * SIZE_MAX) whatever it inflates to within `cap`. The buffer starts at 4 times the stream
 * plus 1 KiB and grows 4 times while the output overflows it, so it never exceeds 4 times
 * what the stream really inflates to, nor the declared size: a forged size allocates
 * nothing. One NUL byte follows the data. */
static dc_status inflate_block(dc_file *f, const uint8_t *in, size_t len, size_t want,
                               size_t cap, const char *what, uint8_t **out, size_t *n)
{
    const char *why;
    uint8_t *buf;
    size_t got, size;
    int r;
    *out = NULL;
    if (want != SIZE_MAX)
        cap = want;
    size = len > (cap - 1024) / 4 || cap < 1024 ? cap : 4 * len + 1024;
    for (;;) {
        if (size == SIZE_MAX || !(buf = mem_alloc(f, size + 1)))
            return dci_no_memory(f);
        r = dci_inflate_raw(in, len, buf, size, &got, &why);
        if (r == INF_OK)
            break;
        dci_mem_free(f, buf);
        if (r != INF_TOO_LARGE || size == cap)
            break;
        size = size > cap / 4 ? cap : 4 * size;
    }
    if (r == INF_OK)
        buf[got] = 0;
    switch (r) {
    case INF_OK:
        *out = buf;
        *n = got;
        return DC_OK;
    case INF_TOO_LARGE:
        return dci_fail(f, DC_E_HEADER_TOO_LARGE, "%s inflates past its %zu-byte %s", what, cap,
                        want == SIZE_MAX ? "cap" : "size");
    case INF_BAD:
        return dci_fail(f, DC_E_HEADER, "%s is not valid DEFLATE data (%s)", what, why);
    default:
        return dci_fail(f, DC_E_HEADER, "%s: DEFLATE stream is truncated or followed by bytes",
                        what);
    }
}

/* --- the header (docs/FORMAT.md, "Header") ---------------------------------------------- */

static int dtype_of(const char *v)
{
    int d;
    if (!dci_is_string(v))
        return -1;
    for (d = 0; d < 10; d++)
        if (dci_str_eq(v, DTYPE_NAMES[d]))
            return d;
    return -1;
}

/* A dense tensor's stored dtype: its own, a narrower one that holds it exactly, or float16
 * for bfloat16 (the lossy --float16); float32 and float64 may be float16 either way. */
static int may_store(int dtype, int stored)
{
    switch (dtype) {
    case DC_FLOAT32: return stored == DC_FLOAT32 || stored == DC_FLOAT16;
    case DC_FLOAT64: return stored == DC_FLOAT64 || stored == DC_FLOAT32 || stored == DC_FLOAT16;
    case DC_BFLOAT16: return stored == DC_BFLOAT16 || stored == DC_FLOAT16;
    case DC_INT64: return stored == DC_INT64 || stored == DC_INT32 || stored == DC_INT16 ||
                          stored == DC_INT8;
    case DC_INT32: return stored == DC_INT32 || stored == DC_INT16 || stored == DC_INT8;
    case DC_INT16: return stored == DC_INT16 || stored == DC_INT8;
    default: return stored == dtype;
    }
}

/* A shape: a list of at most 8 integers 0..2^30; *numel its product, capped past 2^30. */
static int read_shape(const char *v, struct dc_entry *t)
{
    const char *d;
    uint64_t numel = 1, x;
    unsigned n = 0;
    if (!dci_is_array(v))
        return 0;
    for (d = dci_arr_first(v); d; d = dci_arr_next(d)) {
        if (n == DC_MAX_DIMS || !dci_json_int(d, 0, DC_MAX_ELEMENTS, &x))
            return 0;
        t->shape[n++] = (uint32_t)x;
        numel = numel > DC_MAX_ELEMENTS ? numel : numel * x;
    }
    for (x = 0; x < n; x++)
        if (t->shape[x] == 0)
            numel = 0;
    t->ndim = (uint8_t)n;
    t->numel = numel > DC_MAX_ELEMENTS ? DC_MAX_ELEMENTS + 1u : (uint32_t)numel;
    return 1;
}

/* The header's top-level keys, each looked up once (the header is walked, not indexed). */
enum { H_ARCH, H_DATA, H_HISTORY, H_QUANT_META, H_BLOCKS, H_TENSORS, H_STATE, H_DROP,
       H_EXPLICIT, H_GRAPH, H_KEYS };

static dc_status check_top(dc_file *f, const char *h, const char *top[H_KEYS])
{
    static const char *const keys[H_KEYS] = {"arch", "data", "history", "quant_meta", "blocks",
                                             "tensors", "state", "drop", "explicit", "graph"};
    const char *k, *arch, *name, *kwargs, *data, *history, *classes, *r;
    unsigned long records;
    unsigned i;
    if (!dci_is_object(h))
        return dci_fail(f, DC_E_HEADER, "header is not a JSON object");
    memset(top, 0, H_KEYS * sizeof *top);
    for (k = dci_obj_first(h); k; k = dci_obj_next(k)) {
        for (i = 0; i < H_KEYS && !dci_str_eq(k, keys[i]); i++)
            ;
        if (i == H_KEYS)
            break;
        top[i] = dci_member_value(k);        /* a repeated key: the last one counts */
    }
    for (i = 0; i <= H_TENSORS && !k; i++)
        if (!top[i])
            break;
    if (k || i <= H_TENSORS)
        return dci_fail(f, DC_E_HEADER, "header keys must be arch, blocks, data, history, "
                        "quant_meta, tensors (optionally drop, explicit, graph, state)");
    arch = top[H_ARCH];
    name = dci_is_object(arch) ? dci_obj_get(arch, "name") : NULL;
    kwargs = dci_is_object(arch) ? dci_obj_get(arch, "kwargs") : NULL;
    if (!dci_is_string(name) || (kwargs && !dci_is_object(kwargs)))
        return dci_fail(f, DC_E_HEADER, "header 'arch' must be {'name': str, 'kwargs': {...}}");
    data = top[H_DATA];
    history = top[H_HISTORY];
    if (!dci_is_object(data) || !dci_is_array(history))
        return dci_fail(f, DC_E_HEADER, "header 'data' must be an object and 'history' a list of "
                        "objects");
    for (r = dci_arr_first(history), records = 0; r; r = dci_arr_next(r), records++)
        if (!dci_is_object(r))
            return dci_fail(f, DC_E_HEADER, "header 'data' must be an object and 'history' a list "
                            "of objects");
    if (records > DC_MAX_HISTORY)
        return dci_fail(f, DC_E_LIMIT, "%lu history records exceed the reader's limit of %u",
                        records, DC_MAX_HISTORY);
    if (!dci_is_object(top[H_QUANT_META]) || !dci_is_array(top[H_TENSORS]))
        return dci_fail(f, DC_E_HEADER, "'quant_meta' must be an object and 'tensors' a list");
    classes = dci_obj_get(data, "classes");
    if (classes && (*classes == '-' || dci_is_digit(*classes))) {
        uint64_t x;                          /* an integer: the count of classes 0..n-1 */
        const char *p = classes + (*classes == '-');
        while (dci_is_digit(*p))
            p++;
        if (*p != '.' && *p != 'e' && *p != 'E' && !dci_json_int(classes, 1, MAX_CLASSES, &x))
            return dci_fail(f, DC_E_HEADER, "'classes' must be a list or a count up to %d",
                            MAX_CLASSES);
    }
    return DC_OK;
}

/* blocks: exactly code_tables, codebooks and dense, each a length. */
static dc_status read_blocks(dc_file *f, const char *b, uint64_t len[3])
{
    static const char *const names[] = {"code_tables", "codebooks", "dense"};
    const char *k;
    unsigned i;
    int ok = dci_is_object(b);
    for (k = ok ? dci_obj_first(b) : NULL; k && ok; k = dci_obj_next(k))
        ok = dci_str_eq(k, names[0]) || dci_str_eq(k, names[1]) || dci_str_eq(k, names[2]);
    for (i = 0; i < 3 && ok; i++) {
        const char *v = dci_obj_get(b, names[i]);
        ok = v && dci_json_int(v, 0, UINT64_MAX, &len[i]);
    }
    if (!ok)
        return dci_fail(f, DC_E_HEADER, "'blocks' must give the lengths of code_tables, "
                        "codebooks, dense");
    return DC_OK;
}

/* The most elements the file may declare: the reader limits of dc.h. */
static uint64_t element_budget(const dc_file *f)
{
    uint64_t b = DC_BASE_ELEMENTS + (uint64_t)DC_ELEMENTS_PER_BYTE * f->file_len;
    return b < DC_MAX_ELEMENTS ? b : DC_MAX_ELEMENTS;
}

/* explicit, state and drop (docs/FORMAT.md, "Names, dtypes and shapes"); *state: the list. */
static dc_status read_layout(dc_file *f, const char *const top[H_KEYS], const char **state)
{
    uint64_t total = 0;
    const char *ex = top[H_EXPLICIT], *st = top[H_STATE], *drop = top[H_DROP];
    const char *s, *prev = NULL;
    if ((ex && !dci_json_true(ex) && !dci_json_false(ex)) ||
        (dci_json_true(ex) && (drop || !st)))
        return dci_fail(f, DC_E_HEADER,
                        "'explicit' must be true, with 'state' and without 'drop'");
    if (st && !dci_is_array(st))
        return dci_fail(f, DC_E_HEADER, "'state' must be a list of [name, dtype, shape]");
    for (s = st ? dci_arr_first(st) : NULL; s; s = dci_arr_next(s))
        if (!dci_is_array(s) || dci_arr_len(s) != 3 || !dci_is_string(dci_arr_first(s)))
            return dci_fail(f, DC_E_HEADER, "'state' must be a list of [name, dtype, shape]");
    if (drop && !dci_is_array(drop))
        return dci_fail(f, DC_E_HEADER,
                        "'state' and 'drop' must be sorted by name, each name once");
    for (s = drop ? dci_arr_first(drop) : NULL; s; prev = s, s = dci_arr_next(s))
        if (!dci_is_string(s) || (prev && dci_str_cmp(prev, s) >= 0))
            return dci_fail(f, DC_E_HEADER, "'state' and 'drop' must be sorted by name, each name "
                            "once");
    prev = NULL;
    for (s = st ? dci_arr_first(st) : NULL; s; prev = s, s = dci_arr_next(s))
        if (prev && dci_str_cmp(dci_arr_first(prev), dci_arr_first(s)) >= 0)
            return dci_fail(f, DC_E_HEADER, "'state' and 'drop' must be sorted by name, each name "
                            "once");
    for (s = st ? dci_arr_first(st) : NULL; s; s = dci_arr_next(s)) {
        struct dc_entry t;
        const char *dt = dci_arr_next(dci_arr_first(s));
        if (dtype_of(dt) < 0)
            return dci_fail(f, DC_E_HEADER, "a tensor of 'state' has an unknown dtype");
        if (!read_shape(dci_arr_next(dt), &t))
            return dci_fail(f, DC_E_HEADER, "a tensor of 'state' has a bad shape");
        total += t.numel;
    }
    if (!dci_json_true(ex))
        return dci_fail(f, DC_E_NO_LAYOUT, "file does not store tensor shapes (format 2.0, layout "
                        "implied by the architecture); re-encode it with deepcomp encode");
    if (total > element_budget(f))
        return dci_fail(f, DC_E_LIMIT, "%llu elements exceed the reader's limit of %llu for a "
                        "file of %zu bytes", (unsigned long long)total,
                        (unsigned long long)element_budget(f), f->file_len);
    *state = st;
    return DC_OK;
}

/* One tensor entry (docs/FORMAT.md, "Tensor entries") into t, whose name, dtype and shape
 * are set. */
static dc_status read_entry(dc_file *f, const char *e, struct dc_entry *t)
{
    const char *v[10], *kind, *nm = f->names + t->name;
    size_t n = 0;
    unsigned fields, i;
    uint64_t x;
    memset(v, 0, sizeof v);
    if (dci_json_int(e, 0, 0, &x)) {         /* 0: dense, in its own dtype */
        t->kind = K_DENSE;
        t->stored = t->dtype;
        return DC_OK;
    }
    kind = dci_is_array(e) ? dci_arr_first(e) : NULL;
    for (i = 0; i < 4 && kind && !(dci_is_string(kind) && dci_str_eq(kind, KIND_NAMES[i])); i++)
        ;
    if (!kind || i == 4)
        return dci_fail(f, DC_E_HEADER, "tensor '%s': an entry must be 0 or [kind, ...]", nm);
    t->kind = (uint8_t)i;
    fields = KIND_FIELDS[i];
    for (e = dci_arr_next(kind); e; e = dci_arr_next(e), n++)
        if (n < 10)
            v[n] = e;
    if (n < fields || n > fields + (t->kind == K_QUANT || t->kind == K_QDENSE))
        return dci_fail(f, DC_E_HEADER, "tensor '%s': a %s entry holds %u fields", nm,
                        KIND_NAMES[t->kind], fields);
    if (t->kind == K_DENSE) {
        int s = dtype_of(v[0]);
        if (s < 0 || !may_store(t->dtype, s))
            return dci_fail(f, DC_E_HEADER, "tensor '%s': a bad stored dtype for a %s tensor", nm,
                            DTYPE_NAMES[t->dtype]);
        t->stored = (uint8_t)s;
        return DC_OK;
    }
    t->stored = DC_FLOAT32;
    if (t->kind != K_SPARSE) {              /* bits, k, codebook dtype, ..., quantizer fields */
        if (n > fields && !dci_is_object(v[fields]))
            return dci_fail(f, DC_E_HEADER, "tensor '%s': quantizer fields must be an object", nm);
        if (dci_is_string(v[2]) && dci_str_eq(v[2], "float16"))
            t->cb_width = 2;
        else if (dci_is_string(v[2]) && dci_str_eq(v[2], "float32"))
            t->cb_width = 4;
        else
            return dci_fail(f, DC_E_HEADER, "tensor '%s': codebook dtype must be float16 or "
                            "float32", nm);
    }
    {   /* the section lengths, then the fields every reader checks */
        const char *wl = t->kind == K_QUANT ? v[7] : t->kind == K_QDENSE ? v[3] : NULL;
        const char *gl = t->kind == K_QUANT ? v[8] : t->kind == K_SPARSE ? v[4] : NULL;
        if ((wl && !dci_json_int(wl, 0, UINT64_MAX, &x)) ||
            (gl && !dci_json_int(gl, 0, UINT64_MAX, &x)))
            return dci_fail(f, DC_E_HEADER, "tensor '%s': bad section length", nm);
        if (wl)
            dci_json_int(wl, 0, UINT64_MAX, &x), t->wlen = (size_t)(x > SIZE_MAX ? SIZE_MAX : x);
        if (gl)
            dci_json_int(gl, 0, UINT64_MAX, &x), t->glen = (size_t)(x > SIZE_MAX ? SIZE_MAX : x);
    }
    if (t->dtype != DC_FLOAT32 || t->ndim == 0)
        return dci_fail(f, DC_E_HEADER, "tensor '%s': a %s tensor must be float32 with at least "
                        "one dimension", nm, KIND_NAMES[t->kind]);
    if (t->kind != K_QDENSE) {
        const char *const *w = t->kind == K_SPARSE ? v : v + 3;   /* order, index_bits, ... */
        if (!dci_is_string(w[0]) || !(dci_str_eq(w[0], "csr") || dci_str_eq(w[0], "csc")) ||
            !dci_is_uint(w[1], 1, MAX_BITS) || !dci_is_uint(w[2], 0, UINT64_MAX) ||
            !dci_is_uint(w[3], 0, UINT64_MAX))
            return dci_fail(f, DC_E_HEADER, "tensor '%s': bad order, index_bits, entries or "
                            "nonzeros", nm);
        t->csc = (uint8_t)dci_str_eq(w[0], "csc");
        dci_json_int(w[1], 1, MAX_BITS, &x);
        t->index_bits = (uint8_t)x;
        dci_json_int(w[2], 0, UINT64_MAX, &t->entries);
        dci_json_int(w[3], 0, UINT64_MAX, &t->nonzeros);
    }
    if (t->kind != K_SPARSE) {
        if (!dci_is_uint(v[0], 1, MAX_BITS) || !dci_json_int(v[1], 0, MAX_CODEBOOK, &x))
            return dci_fail(f, DC_E_HEADER, "tensor '%s': bad bits, codebook_size or quant_meta",
                            nm);
        t->k = (uint32_t)x;
    }
    return DC_OK;
}

/* The sections of the data area, back to back: the side blocks, then each tensor's streams.
 * They must cover it exactly. */
static dc_status tile(dc_file *f, const uint64_t blocks[3], size_t side[3])
{
    size_t off = 0, i, dlen = f->data_len;
    unsigned b;
#define TAKE(len, at)                                                                         \
    do {                                                                                      \
        uint64_t n_ = (len);                                                                  \
        if (n_ > dlen - off)                                                                  \
            return dci_fail(f, DC_E_INVALID_OFFSET, "sections run past the %zu data bytes",   \
                            dlen);                                                            \
        at = off;                                                                             \
        off += (size_t)n_;                                                                    \
    } while (0)
    for (b = 0; b < 3; b++)
        TAKE(blocks[b], side[b]);
    for (i = 0; i < f->ntensors; i++) {
        struct dc_entry *t = &f->t[i];
        if (t->kind == K_QUANT || t->kind == K_QDENSE)
            TAKE(t->wlen, t->wsec);
        if (t->kind == K_QUANT || t->kind == K_SPARSE)
            TAKE(t->glen, t->gsec);
        if (t->kind == K_SPARSE) {
            TAKE(t->nonzeros > UINT64_MAX / 4 ? UINT64_MAX : 4 * t->nonzeros, t->vsec);
        }
    }
#undef TAKE
    if (off != dlen)
        return dci_fail(f, DC_E_INVALID_OFFSET, "sections cover %zu of %zu data bytes", off, dlen);
    return DC_OK;
}

/* --- the graph (docs/FORMAT.md, "Graph") ----------------------------------------------- */

static const char *const OP_NAMES[] = {"input", "conv2d", "linear", "batchnorm", "relu", "add",
                                       "maxpool2d", "avgpool2d", "meanpool", "flatten",
                                       "subsample", "pad"};
static const unsigned OP_INPUTS[] = {0, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1};

/* data.input_size, when it is a list of 1 to 3 sizes. */
static void read_input_shape(dc_file *f, const char *data)
{
    const char *v = dci_obj_get(data, "input_size"), *d;
    unsigned n = 0;
    uint64_t x;
    f->input_ndim = 0;
    if (!dci_is_array(v) || dci_arr_len(v) < 1 || dci_arr_len(v) > 3)
        return;
    for (d = dci_arr_first(v); d; d = dci_arr_next(d)) {
        if (!dci_json_int(d, 1, 1u << 16, &x))
            return;
        f->input_shape[n++] = (uint32_t)x;
    }
    f->input_ndim = n;
}

/* The tensor a graph names (a JSON string), or -1 for null where allowed; -2: neither. */
static int32_t graph_tensor(const dc_file *f, const char *v, int null_ok)
{
    size_t i;
    if (v && strncmp(v, "null", 4) == 0)
        return null_ok ? -1 : -2;
    if (!dci_is_string(v))
        return -2;
    for (i = 0; i < f->ntensors; i++)
        if (dci_str_eq(v, f->names + f->t[i].name))
            return (int32_t)i;
    return -2;
}

/* key: a list of n integers of lo to 65536, into out. */
static int graph_ints(const char *attrs, const char *key, unsigned n, uint64_t lo, uint32_t *out)
{
    const char *v = dci_obj_get(attrs, key), *d;
    unsigned i = 0;
    uint64_t x;
    if (!dci_is_array(v) || dci_arr_len(v) != n)
        return 0;
    for (d = dci_arr_first(v); d; d = dci_arr_next(d)) {
        if (!dci_json_int(d, lo, 1u << 16, &x))
            return 0;
        out[i++] = (uint32_t)x;
    }
    return 1;
}

/* A JSON number (at most DC_MAX_NUMBER_CHARS long, checked by dci_json_check) as a float. */
static int graph_float(const char *v, float *out)
{
    char buf[DC_MAX_NUMBER_CHARS + 1];
    size_t n = 0;
    double x;
    if (!v || !(*v == '-' || dci_is_digit(*v)))
        return 0;
    while (n < DC_MAX_NUMBER_CHARS && (v[n] == '-' || v[n] == '+' || v[n] == '.' ||
                                       v[n] == 'e' || v[n] == 'E' || dci_is_digit(v[n]))) {
        buf[n] = v[n];
        n++;
    }
    buf[n] = 0;
    x = strtod(buf, NULL);
    *out = (float)x;
    return x >= 0 && x < 1;
}

/* The attributes of one node by its op; 0 if they do not fit it. */
static int graph_attrs(const dc_file *f, const char *a, dc_node *nd)
{
    static const char *const bn[4] = {"weight", "bias", "mean", "var"};
    unsigned k;
    nd->tensor[0] = nd->tensor[1] = nd->tensor[2] = nd->tensor[3] = -1;
    switch (nd->op) {
    case DC_OP_CONV2D: {
        uint32_t dil[2];
        uint64_t g;
        nd->tensor[0] = graph_tensor(f, dci_obj_get(a, "weight"), 0);
        nd->tensor[1] = graph_tensor(f, dci_obj_get(a, "bias"), 1);
        return nd->tensor[0] >= 0 && nd->tensor[1] >= -1 &&
               graph_ints(a, "stride", 2, 1, nd->a) && graph_ints(a, "padding", 2, 0, nd->a + 2) &&
               graph_ints(a, "dilation", 2, 1, dil) && dil[0] == 1 && dil[1] == 1 &&
               dci_json_int(dci_obj_get(a, "groups"), 1, 1u << 16, &g) &&
               (nd->a[4] = (uint32_t)g, 1);
    }
    case DC_OP_LINEAR:
        nd->tensor[0] = graph_tensor(f, dci_obj_get(a, "weight"), 0);
        nd->tensor[1] = graph_tensor(f, dci_obj_get(a, "bias"), 1);
        return nd->tensor[0] >= 0 && nd->tensor[1] >= -1;
    case DC_OP_BATCHNORM:
        for (k = 0; k < 4; k++)
            if ((nd->tensor[k] = graph_tensor(f, dci_obj_get(a, bn[k]), 0)) < 0)
                return 0;
        return graph_float(dci_obj_get(a, "eps"), &nd->eps);
    case DC_OP_MAXPOOL2D:
    case DC_OP_AVGPOOL2D:
        return graph_ints(a, "kernel", 2, 1, nd->a) && graph_ints(a, "stride", 2, 1, nd->a + 2) &&
               graph_ints(a, "padding", 2, 0, nd->a + 4);
    case DC_OP_SUBSAMPLE:
        return graph_ints(a, "stride", 2, 1, nd->a);
    case DC_OP_PAD:
        return graph_ints(a, "channels", 2, 0, nd->a);
    default:
        return 1;
    }
}

/* "graph": [[op, [inputs], {attributes}], ...], node 0 the input; checked for its structure
 * here (shapes are the runtime's to check: c/dcrun.c). */
static dc_status read_graph(dc_file *f, const char *g)
{
    const char *nv;
    size_t i = 0, n = dci_is_array(g) ? dci_arr_len(g) : 0;
    if (n < 1 || n > DC_MAX_NODES)
        return dci_fail(f, DC_E_HEADER, "'graph' must be a list of 1 to %u nodes", DC_MAX_NODES);
    f->graph = dci_mem_array(f, n, sizeof *f->graph);
    if (!f->graph)
        return dci_no_memory(f);
    memset(f->graph, 0, n * sizeof *f->graph);
    for (nv = dci_arr_first(g); nv; nv = dci_arr_next(nv), i++) {
        dc_node *nd = &f->graph[i];
        const char *op = dci_is_array(nv) && dci_arr_len(nv) == 3 ? dci_arr_first(nv) : NULL;
        const char *ins = op ? dci_arr_next(op) : NULL, *attrs = ins ? dci_arr_next(ins) : NULL;
        const char *x;
        unsigned k, j = 0;
        for (k = 0; op && k < sizeof OP_NAMES / sizeof *OP_NAMES && !dci_str_eq(op, OP_NAMES[k]);
             k++)
            ;
        if (!op || k == sizeof OP_NAMES / sizeof *OP_NAMES || (k == DC_OP_INPUT) != (i == 0) ||
            !dci_is_array(ins) || dci_arr_len(ins) != OP_INPUTS[k] || !dci_is_object(attrs))
            return dci_fail(f, DC_E_HEADER, "graph node %zu: not an operation [op, inputs, "
                            "attributes] this reader runs", i);
        nd->op = (dc_op)k;
        for (x = dci_arr_first(ins); x; x = dci_arr_next(x)) {
            uint64_t v;
            if (!dci_json_int(x, 0, i ? i - 1 : 0, &v) || i == 0)
                return dci_fail(f, DC_E_HEADER, "graph node %zu: an input that is not an earlier "
                                "node", i);
            nd->in[j++] = (uint32_t)v;
        }
        if (!graph_attrs(f, attrs, nd))
            return dci_fail(f, DC_E_HEADER, "graph node %zu: %s attributes that do not fit it",
                            i, OP_NAMES[k]);
    }
    f->ngraph = n;
    return DC_OK;
}

/* The header's JSON text (n bytes, NUL after them): the tensor table. */
static dc_status read_header(dc_file *f, const char *text, size_t n, uint64_t blocks[3])
{
    const char *why = dci_json_check(text, n), *h = dci_ws(text), *state = NULL, *s, *e;
    const char *top[H_KEYS];
    size_t i, names = 0;
    dc_status st;
    if (why)
        return dci_fail(f, DC_E_HEADER, "header is not valid JSON (%s)", why);
    if ((st = check_top(f, h, top)) || (st = read_blocks(f, top[H_BLOCKS], blocks)) ||
        (st = read_layout(f, top, &state)))
        return st;
    f->ntensors = dci_arr_len(state);
    if (f->ntensors != dci_arr_len(top[H_TENSORS]))
        return dci_fail(f, DC_E_HEADER, "%zu tensor entries for the %zu tensors of the state dict",
                        dci_arr_len(top[H_TENSORS]), f->ntensors);
    for (s = dci_arr_first(state); s; s = dci_arr_next(s))
        names += (size_t)(dci_skip_string(dci_arr_first(s)) - dci_arr_first(s)) + 1;
    f->t = dci_mem_array(f, f->ntensors, sizeof *f->t);
    f->names = mem_alloc(f, names);
    if (!f->t || !f->names)
        return dci_no_memory(f);
    memset(f->t, 0, f->ntensors * sizeof *f->t);
    names = 0;
    for (i = 0, s = dci_arr_first(state); s; i++, s = dci_arr_next(s)) {
        struct dc_entry *t = &f->t[i];
        const char *dt = dci_arr_next(dci_arr_first(s));
        t->name = names;
        t->name_len = dci_str_decode(dci_arr_first(s), f->names + names);
        f->names[names + t->name_len] = 0;
        names += t->name_len + 1;
        t->dtype = (uint8_t)dtype_of(dt);
        read_shape(dci_arr_next(dt), t);
    }
    for (i = 0, e = dci_arr_first(top[H_TENSORS]); e; i++, e = dci_arr_next(e))
        if ((st = read_entry(f, e, &f->t[i])) != DC_OK)
            return st;
    read_input_shape(f, top[H_DATA]);
    return top[H_GRAPH] ? read_graph(f, top[H_GRAPH]) : DC_OK;
}

/* --- side blocks (docs/FORMAT.md, "Side blocks") ---------------------------------------- */

static dc_status side_block(dc_file *f, const uint8_t *raw, size_t len, uint64_t want,
                            const char *what, uint8_t **out, size_t *n)
{
    dc_status st;
    if (!len && want)
        return dci_fail(f, DC_E_COUNT_MISMATCH, "%s: an empty block for %llu bytes", what,
                        (unsigned long long)want);
    if (len && !want)
        return dci_fail(f, DC_E_COUNT_MISMATCH, "%s: %zu bytes where nothing is stored", what,
                        len);
    if (!len) {
        *out = NULL;
        *n = 0;
        return DC_OK;
    }
    if (want >= SIZE_MAX)
        return dci_no_memory(f);
    if ((st = inflate_block(f, raw, len, (size_t)want, 0, what, out, n)) != DC_OK)
        return st;
    if (*n != want)
        return dci_fail(f, DC_E_COUNT_MISMATCH, "%s: %zu bytes, %llu expected", what, *n,
                        (unsigned long long)want);
    return DC_OK;
}

static dc_status read_side_blocks(dc_file *f, const size_t side[3], const uint64_t blocks[3])
{
    uint64_t tables = 0, cbs = 0, dense = 0;
    size_t i;
    dc_status st;
    for (i = 0; i < f->ntensors; i++) {       /* offsets, and the sizes the blocks must have */
        struct dc_entry *t = &f->t[i];
        if (t->kind == K_QUANT || t->kind == K_QDENSE) {
            t->wtab = (size_t)tables;
            tables += t->k + 1;
            t->cb = (size_t)cbs;
            cbs += (uint64_t)t->k * t->cb_width;
        }
        if (t->kind == K_QUANT || t->kind == K_SPARSE) {
            t->gtab = (size_t)tables;
            tables += (1u << t->index_bits) + 1;
        }
        if (t->kind == K_DENSE) {
            t->dense = (size_t)dense;
            dense += (uint64_t)t->numel * DTYPE_SIZE[t->stored];
        }
    }
    if ((st = side_block(f, f->data + side[0], (size_t)blocks[0], tables, "code tables",
                         &f->code_tables, &f->code_tables_len)))
        return st;
    for (i = 0; i < f->code_tables_len; i++)
        if (f->code_tables[i] > MAX_CODE)
            return dci_fail(f, DC_E_COUNT_MISMATCH, "a code length over %d", MAX_CODE);
    if ((st = side_block(f, f->data + side[1], (size_t)blocks[1], cbs, "codebooks",
                         &f->codebooks, &f->codebooks_len)) ||
        (st = side_block(f, f->data + side[2], (size_t)blocks[2], dense, "dense tensors",
                         &f->dense, &f->dense_len)))
        return st;
    return DC_OK;
}

/* --- Huffman streams (docs/FORMAT.md, "Huffman streams"; huffman.c) --------------------- */

/* Counts against shapes, then every stream's code table (as deepcomp's reader orders them). */
static dc_status check_streams(dc_file *f)
{
    size_t i;
    dc_status st;
    for (i = 0; i < f->ntensors; i++) {
        struct dc_entry *t = &f->t[i];
        if ((t->kind == K_QUANT || t->kind == K_SPARSE) &&
            (t->nonzeros > t->numel || t->nonzeros > t->entries ||
             t->entries - t->nonzeros > (t->numel >> t->index_bits)))
            return dci_fail(f, DC_E_COUNT_MISMATCH, "%s: %llu non-zeros in %llu entries do not "
                            "fit %u elements", f->names + t->name,
                            (unsigned long long)t->nonzeros, (unsigned long long)t->entries,
                            t->numel);
    }
    for (i = 0; i < f->ntensors; i++) {
        struct dc_entry *t = &f->t[i];
        const char *nm = f->names + t->name;
        if ((t->kind == K_QUANT || t->kind == K_SPARSE) &&
            (st = dci_check_stream(f, f->code_tables + t->gtab, (1u << t->index_bits) + 1,
                                   t->entries, t->glen, nm, "gaps")))
            return st;
        if ((t->kind == K_QUANT || t->kind == K_QDENSE) &&
            (st = dci_check_stream(f, f->code_tables + t->wtab, t->k + 1,
                                   t->kind == K_QDENSE ? t->numel : t->nonzeros, t->wlen, nm,
                                   "weights")))
            return st;
    }
    return DC_OK;
}

/* --- values ----------------------------------------------------------------------------- */

static uint32_t f32_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static uint32_t half_to_f32(uint32_t h)
{
    uint32_t sign = (h & 0x8000u) << 16, exp = h >> 10 & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f)                         /* infinity, NaN (its payload kept) */
        return sign | 0x7f800000u | man << 13;
    if (exp)
        return sign | (exp + 112) << 23 | man << 13;
    if (!man)
        return sign;
    exp = 113;                               /* subnormal: normalize */
    while (!(man & 0x400)) {
        man <<= 1;
        exp--;
    }
    return sign | exp << 23 | (man & 0x3ff) << 13;
}

/* float32 to bfloat16 and back: round to nearest even, NaN to 0x7fc0 (as PyTorch does). */
static uint32_t round_bf16(uint32_t u)
{
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return 0x7fc00000u;
    return (u + 0x7fffu + (u >> 16 & 1)) & 0xffff0000u;
}

/* Element j of dense tensor t, stored as byte planes (docs/FORMAT.md): its float32 bits. */
static uint32_t dense_value(const struct dc_entry *t, const uint8_t *b, size_t j, int *bad)
{
    size_t n = t->numel;
    unsigned k;
    uint64_t u = 0;
    for (k = DTYPE_SIZE[t->stored]; k--;)
        u = u << 8 | b[k * n + j];
    switch (t->stored) {
    case DC_FLOAT32: return (uint32_t)u;
    case DC_FLOAT16:
        return t->dtype == DC_BFLOAT16 ? round_bf16(half_to_f32((uint32_t)u))
                                       : half_to_f32((uint32_t)u);
    case DC_BFLOAT16: return (uint32_t)u << 16;
    case DC_FLOAT64: {
        double d;
        memcpy(&d, &u, sizeof d);
        return f32_of((float)d);
    }
    case DC_INT64: {
        int64_t i;
        memcpy(&i, &u, sizeof i);
        return f32_of((float)i);
    }
    case DC_INT32:
        return f32_of((float)((int64_t)u - (u & 0x80000000u ? INT64_C(0x100000000) : 0)));
    case DC_INT16: return f32_of((float)((int32_t)u - (u & 0x8000u ? 0x10000 : 0)));
    case DC_INT8: return f32_of((float)((int32_t)u - (u & 0x80u ? 0x100 : 0)));
    case DC_UINT8: return f32_of((float)u);
    default:                                 /* bool: bytes 0 and 1 */
        if (u > 1)
            *bad = 1;
        return u ? 0x3f800000u : 0;
    }
}

/* A codebook of k values (width 2 or 4) delta-coded as byte planes: the float32 bits of each
 * in cb[0..k), and cb[k] = 0.0, the "no cluster" symbol's value. */
static void read_codebook(const struct dc_entry *t, const uint8_t *b, uint32_t *cb)
{
    uint32_t sign = t->cb_width == 2 ? 0x8000u : 0x80000000u, mask = sign | (sign - 1), o = 0;
    size_t j;
    for (j = 0; j < t->k; j++) {
        uint32_t d = b[j] | (uint32_t)b[t->k + j] << 8, u;
        if (t->cb_width == 4)
            d |= (uint32_t)b[2 * t->k + j] << 16 | (uint32_t)b[3 * t->k + j] << 24;
        o = (o + d) & mask;                  /* steps modulo 2^(8 w) */
        u = o & sign ? o ^ sign : ~o & mask; /* ordered integer to IEEE bits */
        cb[j] = t->cb_width == 2 ? half_to_f32(u) : u;
    }
    cb[t->k] = 0;
}

/* --- decoding a tensor ------------------------------------------------------------------ */

/* Where decoded values go: a dense float buffer (dc_decode_tensor) or a visitor
 * (dc_visit_tensor), with the tensor's 2-D view [rows, cols]. */
typedef struct {
    float *out;
    dc_visitor visit;
    void *ctx;
    uint64_t rows, cols;
} sink;

static void emit(const sink *k, uint64_t row, uint64_t col, uint32_t symbol, uint32_t bits)
{
    float v;
    if (k->out) {
        memcpy(k->out + (size_t)(row * k->cols + col), &bits, sizeof bits);
        return;
    }
    memcpy(&v, &bits, sizeof v);
    k->visit(k->ctx, (uint32_t)row, (uint32_t)col, symbol, v);
}

static dc_status decode_dense(dc_file *f, const struct dc_entry *t, const sink *out)
{
    int bad = 0;
    size_t j;
    for (j = 0; j < t->numel; j++)
        emit(out, j / out->cols, j % out->cols, UINT32_MAX,
             dense_value(t, f->dense + t->dense, j, &bad));
    if (bad)
        return dci_fail(f, DC_E_COUNT_MISMATCH, "%s: bool bytes other than 0 and 1",
                        f->names + t->name);
    return DC_OK;
}

/* Quantized, not pruned: one weight symbol per element, in row-major order. */
static dc_status decode_quantized_dense(dc_file *f, const struct dc_entry *t, const sink *out,
                                        const uint32_t *cb, hstream *w)
{
    const char *nm = f->names + t->name;
    size_t j;
    for (j = 0; j < t->numel; j++) {
        long sym = dci_hs_decode(w);
        if (sym < 0)
            return dci_hs_error(f, w, sym, j, t->numel, nm, "weights");
        if ((uint32_t)sym < t->k)             /* symbol k: no cluster, 0.0, left as it is */
            emit(out, j / out->cols, j % out->cols, (uint32_t)sym, cb[sym]);
    }
    return dci_hs_finish(f, w, t->numel, nm, "weights");
}

/* Sparse and quantized: positions from the gap stream (docs/FORMAT.md, "Sparse positions"),
 * values from the weight stream's codebook or the values section. */
static dc_status decode_sparse(dc_file *f, const struct dc_entry *t, const sink *out,
                               const uint32_t *cb, hstream *g, hstream *w)
{
    const char *nm = f->names + t->name;
    const uint8_t *values = t->kind == K_SPARSE ? f->data + t->vsec : NULL;
    uint64_t span = (uint64_t)1 << t->index_bits, at = 0, nz = 0, e;
    uint64_t rows = t->shape[0], cols = rows ? t->numel / rows : 0;
    long sym = 0;
    dc_status st;
    for (e = 0; e < t->entries; e++) {
        uint64_t pos;
        uint32_t v, symbol;
        sym = dci_hs_decode(g);
        if (sym < 0)
            return dci_hs_error(f, g, sym, e, t->entries, nm, "gaps");
        if ((uint64_t)sym == span) {         /* a filler: span positions, no weight */
            at += span;
            continue;
        }
        pos = at + (uint64_t)sym;
        at = pos + 1;
        if (pos >= t->numel)
            return dci_fail(f, DC_E_COUNT_MISMATCH, "%s: a position beyond the %u elements", nm,
                            t->numel);
        if (nz == t->nonzeros)
            return dci_fail(f, DC_E_COUNT_MISMATCH, "%s: the gap stream holds more than the %llu "
                            "non-zeros of the header", nm, (unsigned long long)t->nonzeros);
        if (values) {
            v = (uint32_t)dci_le(values + 4 * nz, 4);
            symbol = UINT32_MAX;
        } else {
            long s = dci_hs_decode(w);
            if (s < 0)
                return dci_hs_error(f, w, s, nz, t->nonzeros, nm, "weights");
            v = cb[s];
            symbol = (uint32_t)s < t->k ? (uint32_t)s : UINT32_MAX;
        }
        nz++;
        if (t->csc)
            emit(out, pos % rows, pos / rows, symbol, v);
        else
            emit(out, cols ? pos / cols : 0, cols ? pos % cols : 0, symbol, v);
    }
    if (nz != t->nonzeros || (t->entries && (uint64_t)sym == span))
        return dci_fail(f, DC_E_COUNT_MISMATCH, "%s: the gap stream holds %llu non-zeros%s, the "
                        "header says %llu", nm, (unsigned long long)nz,
                        t->entries && (uint64_t)sym == span ? " and ends with a filler" : "",
                        (unsigned long long)t->nonzeros);
    if ((st = dci_hs_finish(f, g, t->entries, nm, "gaps")) != DC_OK)
        return st;
    return w ? dci_hs_finish(f, w, t->nonzeros, nm, "weights") : DC_OK;
}

static dc_status decode(dc_file *f, const struct dc_entry *t, const sink *out)
{
    hstream g, w;
    uint32_t *cb = NULL;
    uint64_t wcount = t->kind == K_QDENSE ? t->numel : t->nonzeros;
    int gaps = (t->kind == K_SPARSE || t->kind == K_QUANT) && t->entries > 0;
    int weights = (t->kind == K_QUANT || t->kind == K_QDENSE) && wcount > 0;
    dc_status st = DC_OK;
    if (t->kind == K_DENSE)
        return decode_dense(f, t, out);
    memset(&g, 0, sizeof g);
    memset(&w, 0, sizeof w);
    if (out->out)
        memset(out->out, 0, (size_t)t->numel * sizeof *out->out);
    if (gaps)
        st = dci_hs_init(f, &g, f->code_tables + t->gtab, ((size_t)1 << t->index_bits) + 1,
                         f->data + t->gsec, t->glen);
    if (weights && st == DC_OK) {
        st = dci_hs_init(f, &w, f->code_tables + t->wtab, (size_t)t->k + 1, f->data + t->wsec,
                         t->wlen);
        cb = dci_mem_array(f, (size_t)t->k + 1, sizeof *cb);
        if (st == DC_OK && !cb)
            st = dci_no_memory(f);
        if (st == DC_OK)
            read_codebook(t, t->k ? f->codebooks + t->cb : NULL, cb);
    }
    if (st == DC_OK && t->kind == K_QDENSE && weights)
        st = decode_quantized_dense(f, t, out, cb, &w);
    else if (st == DC_OK && t->kind != K_QDENSE && gaps)
        st = decode_sparse(f, t, out, cb, &g, t->kind == K_QUANT ? &w : NULL);
    dci_hs_free(f, &g);
    dci_hs_free(f, &w);
    dci_mem_free(f, cb);
    return st;
}

/* --- the API ---------------------------------------------------------------------------- */

static void release(dc_file *f)
{
    dci_mem_free(f, f->t);
    dci_mem_free(f, f->names);
    dci_mem_free(f, f->code_tables);
    dci_mem_free(f, f->codebooks);
    dci_mem_free(f, f->dense);
    dci_mem_free(f, f->graph);
    f->graph = NULL;
    f->ngraph = 0;
    f->t = NULL;
    f->names = NULL;
    f->code_tables = f->codebooks = f->dense = NULL;
    f->ntensors = f->code_tables_len = f->codebooks_len = f->dense_len = 0;
    f->data = NULL;
    f->data_len = 0;
}

static dc_status open_file(dc_file *f, const uint8_t *buf, size_t len)
{
    uint64_t hlen, dlen, blocks[3];
    size_t side[3], n, cap;
    unsigned major;
    uint8_t *text;
    dc_status st;
    if (len == 0 || memcmp(buf, "DEEPCOMP", len < 8 ? len : 8) != 0)
        return dci_fail(f, DC_E_BAD_MAGIC, "not a .dc file (it does not start with DEEPCOMP)");
    if (len < 12)
        return dci_fail(f, DC_E_TRUNCATED, "%zu bytes, shorter than the 12-byte version", len);
    major = (unsigned)dci_le(buf + 8, 2);
    f->minor = (unsigned)dci_le(buf + 10, 2);
    if (major == 1)
        return dci_fail(f, DC_E_UNSUPPORTED_VERSION, "format version 1.%u, which this reader does "
                        "not read; write it again as version 2 with deepcomp encode OLD.dc -o "
                        "NEW.dc", f->minor);
    if (major != 2)
        return dci_fail(f, DC_E_UNSUPPORTED_VERSION, "format version %u.%u; this reader knows "
                        "version 2", major, f->minor);
    if (len < PREFIX)
        return dci_fail(f, DC_E_TRUNCATED, "%zu bytes, shorter than the %d-byte prefix", len,
                        PREFIX);
    hlen = dci_le(buf + 12, 4);
    dlen = dci_le(buf + 16, 8);
    if (hlen > MAX_HEADER)
        return dci_fail(f, DC_E_HEADER_TOO_LARGE, "header of %llu bytes exceeds the %zu-byte cap",
                        (unsigned long long)hlen, MAX_HEADER);
    if (len < PREFIX + TRAILER || dlen > len || len - PREFIX - TRAILER < hlen + dlen)
        return dci_fail(f, DC_E_TRUNCATED, "%zu bytes, the prefix declares %llu", len,
                        (unsigned long long)(dlen > UINT64_MAX - PREFIX - TRAILER - hlen
                                             ? UINT64_MAX : PREFIX + TRAILER + hlen + dlen));
    if (len - PREFIX - TRAILER > hlen + dlen)
        return dci_fail(f, DC_E_INVALID_OFFSET, "%llu trailing bytes after the declared end",
                        (unsigned long long)(len - PREFIX - TRAILER - hlen - dlen));
    if (dc_crc32(0, buf, len - TRAILER) != dci_le(buf + len - TRAILER, 4))
        return dci_fail(f, DC_E_CHECKSUM, "file checksum mismatch (the file is damaged)");
    f->data = buf + PREFIX + hlen;
    f->data_len = (size_t)dlen;
    f->file_len = len;
    cap = DC_HEADER_BASE + DC_HEADER_RATIO * (size_t)hlen;
    if ((st = inflate_block(f, buf + PREFIX, (size_t)hlen, SIZE_MAX,
                            cap < MAX_HEADER ? cap : MAX_HEADER, "header", &text, &n)) != DC_OK)
        return st;
    st = read_header(f, (const char *)text, n, blocks);
    dci_mem_free(f, text);
    if (st || (st = tile(f, blocks, side)) || (st = read_side_blocks(f, side, blocks)) ||
        (st = check_streams(f)))
        return st;
    return DC_OK;
}

dc_status dc_open_with(dc_file *f, const uint8_t *buf, size_t len, const dc_allocator *a)
{
    dc_status st;
    if (!f)
        return DC_E_ARGUMENT;
    memset(f, 0, sizeof *f);
    if (a)
        f->alloc = *a;
    if ((f->alloc.alloc && !f->alloc.free) || (!buf && len))
        return dci_fail(f, DC_E_ARGUMENT, "dc_open: a NULL buffer or an allocator without free");
    st = open_file(f, buf, len);
    if (st != DC_OK)
        release(f);
    else
        f->message[0] = 0;
    f->status = st;
    return st;
}

dc_status dc_open(dc_file *f, const uint8_t *buf, size_t len)
{
    return dc_open_with(f, buf, len, NULL);
}

size_t dc_tensor_count(const dc_file *f)
{
    return f ? f->ntensors : 0;
}

dc_status dc_tensor_info(const dc_file *f, size_t i, dc_info *out)
{
    const struct dc_entry *t;
    unsigned d;
    if (!f || !out || i >= f->ntensors)
        return DC_E_ARGUMENT;
    t = &f->t[i];
    memset(out, 0, sizeof *out);
    out->name = f->names + t->name;
    out->name_len = t->name_len;
    out->dtype = (dc_dtype)t->dtype;
    out->stored = (dc_dtype)t->stored;
    out->kind = (dc_kind)t->kind;
    out->ndim = t->ndim;
    for (d = 0; d < t->ndim; d++)
        out->shape[d] = t->shape[d];
    out->numel = t->numel;
    out->nonzeros = t->kind == K_SPARSE || t->kind == K_QUANT ? (uint32_t)t->nonzeros : t->numel;
    out->codebook_size = t->kind == K_QUANT || t->kind == K_QDENSE ? t->k : 0;
    out->csc = t->csc;
    return DC_OK;
}

/* Decode tensor t into the sink k (its 2-D view set here), recording the status. */
static dc_status decode_into(dc_file *f, const struct dc_entry *t, sink *k)
{
    dc_status st;
    k->rows = t->ndim ? t->shape[0] : 1;
    k->cols = k->rows ? t->numel / k->rows : 0;
    st = t->numel == 0 ? DC_OK : decode(f, t, k);
    if (st == DC_OK)
        f->message[0] = 0;
    f->status = st;
    return st;
}

dc_status dc_decode_tensor(dc_file *f, size_t i, float *out, size_t out_len)
{
    const struct dc_entry *t;
    sink k;
    if (!f)
        return DC_E_ARGUMENT;
    if (i >= f->ntensors)
        return dci_fail(f, DC_E_ARGUMENT, "dc_decode_tensor: no tensor %zu (the file holds %zu)",
                        i, f->ntensors);
    t = &f->t[i];
    if (out_len < t->numel || (!out && t->numel))
        return dci_fail(f, DC_E_ARGUMENT, "dc_decode_tensor: %s needs %u floats, the buffer holds "
                        "%zu", f->names + t->name, t->numel, out ? out_len : 0);
    k.out = out;
    k.visit = NULL;
    k.ctx = NULL;
    return decode_into(f, t, &k);
}

dc_status dc_visit_tensor(dc_file *f, size_t i, dc_visitor visit, void *ctx)
{
    const struct dc_entry *t;
    sink k;
    if (!f)
        return DC_E_ARGUMENT;
    if (i >= f->ntensors || !visit)
        return dci_fail(f, DC_E_ARGUMENT, "dc_visit_tensor: no tensor %zu or no visitor", i);
    t = &f->t[i];
    k.out = NULL;
    k.visit = visit;
    k.ctx = ctx;
    return decode_into(f, t, &k);
}

dc_status dc_codebook(dc_file *f, size_t i, float *out, size_t cap)
{
    const struct dc_entry *t;
    uint32_t *cb;
    if (!f)
        return DC_E_ARGUMENT;
    if (i >= f->ntensors || (f->t[i].kind != K_QUANT && f->t[i].kind != K_QDENSE) ||
        cap < f->t[i].k || (!out && f->t[i].k))
        return dci_fail(f, DC_E_ARGUMENT, "dc_codebook: tensor %zu is not quantized or the buffer "
                        "is too small", i);
    t = &f->t[i];
    cb = dci_mem_array(f, (size_t)t->k + 1, sizeof *cb);
    if (!cb)
        return dci_no_memory(f);
    read_codebook(t, t->k ? f->codebooks + t->cb : NULL, cb);
    memcpy(out, cb, (size_t)t->k * sizeof *out);
    dci_mem_free(f, cb);
    return DC_OK;
}

size_t dc_graph_size(const dc_file *f)
{
    return f ? f->ngraph : 0;
}

const dc_node *dc_graph(const dc_file *f)
{
    return f ? f->graph : NULL;
}

unsigned dc_input_shape(const dc_file *f, uint32_t shape[3])
{
    unsigned d;
    if (!f)
        return 0;
    for (d = 0; d < f->input_ndim; d++)
        shape[d] = f->input_shape[d];
    return f->input_ndim;
}

const char *dc_error_message(const dc_file *f)
{
    return f ? f->message : "no dc_file";
}

void dc_close(dc_file *f)
{
    if (!f)
        return;
    release(f);
    f->status = DC_OK;
    f->message[0] = 0;
}

const char *dc_status_name(dc_status s)
{
    static const char *const names[] = {
        "DC_OK", "DC_E_BAD_MAGIC", "DC_E_TRUNCATED", "DC_E_UNSUPPORTED_VERSION",
        "DC_E_HEADER_TOO_LARGE", "DC_E_INVALID_OFFSET", "DC_E_CHECKSUM", "DC_E_HEADER",
        "DC_E_NO_LAYOUT", "DC_E_COUNT_MISMATCH", "DC_E_BAD_CODE", "DC_E_NO_MEMORY",
        "DC_E_ARGUMENT", "DC_E_LIMIT", "DC_E_NO_GRAPH"};
    return (unsigned)s < sizeof names / sizeof *names ? names[s] : "DC_E_UNKNOWN";
}

const char *dc_dtype_name(dc_dtype d)
{
    return (unsigned)d < 10 ? DTYPE_NAMES[d] : "?";
}

const char *dc_kind_name(dc_kind k)
{
    return (unsigned)k < 4 ? KIND_NAMES[k] : "?";
}
