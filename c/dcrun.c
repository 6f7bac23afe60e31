/* dcrun: inference on a .dc file's graph, the weights kept compressed (dcrun.h). */
#include "dcrun.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STEP_FILL 255u                   /* a step byte that moves 255 columns on, no weight */

/* A convolution's or linear layer's weights, 2-D [rows, cols], kept as stored: per row its
 * count of entries, per entry a column step and the weight's cluster index (4 bits where the
 * codebook has at most 16 centroids, else a byte) or, where the layer is not quantized, the
 * weight as a float. */
typedef struct {
    uint32_t rows, cols;
    uint32_t *start;                     /* while building: rows + 1 entry offsets */
    uint16_t *count;                     /* per row: its entries (after building) */
    uint8_t *step;                       /* per entry: column step, or STEP_FILL */
    uint8_t *sym;                        /* per entry: cluster index, or NULL */
    int nibbles;                         /* sym holds two 4-bit indices a byte */
    float *val;                          /* per entry: the weight (not quantized), or NULL */
    float *cb;                           /* the codebook, with sym */
    size_t entries;
} wmat;

static uint32_t sym_at(const wmat *w, size_t e)
{
    return w->nibbles ? (w->sym[e >> 1] >> ((e & 1) * 4)) & 15u : w->sym[e];
}

typedef struct {
    dc_node n;
    uint32_t shape[3];                   /* per sample */
    unsigned ndim;
    size_t size;
    float *out;                          /* into the arena */
    wmat w;
    float *bias;                         /* conv2d, linear: bias or NULL; batchnorm: shift */
    float *scale;                        /* batchnorm */
} layer;

struct dcr_model {
    layer *l;
    size_t n;
    float *arena;
    size_t arena_len, weight_bytes;
};

static dc_status say(char *msg, size_t len, dc_status st, const char *fmt, ...)
{
    va_list ap;
    if (msg && len) {
        va_start(ap, fmt);
        vsnprintf(msg, len, fmt, ap);
        va_end(ap);
    }
    return st;
}

/* --- building a layer's weights from the file --------------------------------------------- */

typedef struct {
    wmat *w;
    int64_t *prev;                       /* per row: the last column placed */
    uint32_t *fill;                      /* pass 2: per row, entries placed */
    int quantized, pass, bad;
} builder;

static void visit(void *ctx, uint32_t row, uint32_t col, uint32_t symbol, float value)
{
    builder *b = ctx;
    wmat *w = b->w;
    int64_t d;
    uint32_t n;
    if (row >= w->rows || col >= w->cols || (int64_t)col <= b->prev[row]) {
        b->bad = 1;
        return;
    }
    if (value == 0.0f && !b->quantized)  /* a dense tensor's zeros need no entry */
        return;
    d = (int64_t)col - b->prev[row] - 1;
    b->prev[row] = col;
    n = (uint32_t)(d / STEP_FILL) + 1;
    if (b->pass == 1) {
        w->start[row + 1] += n;
        return;
    }
    while (d >= (int64_t)STEP_FILL) {
        size_t e = w->start[row] + b->fill[row]++;
        w->step[e] = (uint8_t)STEP_FILL;
        if (w->val)
            w->val[e] = 0.0f;
        d -= STEP_FILL;
    }
    {
        size_t e = w->start[row] + b->fill[row]++;
        w->step[e] = (uint8_t)d;
        if (w->sym && w->nibbles)
            w->sym[e >> 1] |= (uint8_t)(symbol << ((e & 1) * 4));
        else if (w->sym)
            w->sym[e] = (uint8_t)symbol;
        else
            w->val[e] = value;
    }
}

static dc_status build_weights(dc_file *f, int32_t ti, wmat *w, size_t *bytes, char *msg,
                               size_t mlen)
{
    dc_info t;
    builder b;
    dc_status st;
    uint32_t r;
    dc_tensor_info(f, (size_t)ti, &t);
    memset(&b, 0, sizeof b);
    w->rows = t.ndim ? t.shape[0] : 1;
    w->cols = w->rows ? t.numel / w->rows : 0;
    b.w = w;
    b.quantized = t.codebook_size > 0 && t.codebook_size <= 256;
    w->start = calloc((size_t)w->rows + 1, sizeof *w->start);
    b.prev = malloc(((size_t)w->rows + 1) * sizeof *b.prev);
    b.fill = calloc((size_t)w->rows + 1, sizeof *b.fill);
    if (!w->start || !b.prev || !b.fill) {
        st = say(msg, mlen, DC_E_NO_MEMORY, "out of memory");
        goto done;
    }
    for (b.pass = 1; b.pass <= 2; b.pass++) {
        for (r = 0; r < w->rows; r++)
            b.prev[r] = -1;
        if (b.pass == 2) {
            for (r = 0; r < w->rows; r++)
                w->start[r + 1] += w->start[r];
            w->entries = w->start[w->rows];
            w->step = malloc(w->entries ? w->entries : 1);
            if (b.quantized) {
                w->nibbles = t.codebook_size <= 16;
                w->sym = calloc(w->nibbles ? w->entries / 2 + 1 : w->entries + 1, 1);
                w->cb = malloc((size_t)t.codebook_size * sizeof *w->cb);
            } else {
                w->val = malloc((w->entries ? w->entries : 1) * sizeof *w->val);
            }
            if (!w->step || (b.quantized ? !w->sym || !w->cb : !w->val)) {
                st = say(msg, mlen, DC_E_NO_MEMORY, "out of memory");
                goto done;
            }
            if (b.quantized && (st = dc_codebook(f, (size_t)ti, w->cb, t.codebook_size))) {
                say(msg, mlen, st, "%s: %s", t.name, dc_error_message(f));
                goto done;
            }
        }
        if ((st = dc_visit_tensor(f, (size_t)ti, visit, &b)) != DC_OK) {
            say(msg, mlen, st, "%s", dc_error_message(f));
            goto done;
        }
        if (b.bad) {
            st = say(msg, mlen, DC_E_COUNT_MISMATCH, "%s: weights out of order", t.name);
            goto done;
        }
    }
    for (r = 0; r < w->rows; r++)        /* entries per row, as 16-bit counts */
        if (w->start[r + 1] - w->start[r] > 0xFFFFu) {
            st = say(msg, mlen, DC_E_LIMIT, "%s: a row of more than 65,535 entries", t.name);
            goto done;
        }
    if (!(w->count = malloc(((size_t)w->rows + 1) * sizeof *w->count))) {
        st = say(msg, mlen, DC_E_NO_MEMORY, "out of memory");
        goto done;
    }
    for (r = 0; r < w->rows; r++)
        w->count[r] = (uint16_t)(w->start[r + 1] - w->start[r]);
    *bytes += (size_t)w->rows * sizeof *w->count + w->entries +
              (!b.quantized ? w->entries * sizeof(float) :
               w->nibbles ? w->entries / 2 + 1 : w->entries) +
              (b.quantized ? t.codebook_size * sizeof(float) : 0);
    st = DC_OK;
done:
    free(w->start);
    w->start = NULL;
    free(b.prev);
    free(b.fill);
    return st;
}

/* A 1-D float tensor of n elements, decoded (biases, batch norm). */
static float *vector(dc_file *f, int32_t ti, uint32_t n, size_t *bytes)
{
    dc_info t;
    float *v;
    dc_tensor_info(f, (size_t)ti, &t);
    if (t.numel != n || !(v = malloc(n ? (size_t)n * sizeof *v : 1)))
        return NULL;
    if (dc_decode_tensor(f, (size_t)ti, v, n) != DC_OK) {
        free(v);
        return NULL;
    }
    *bytes += (size_t)n * sizeof *v;
    return v;
}

/* --- shapes ------------------------------------------------------------------------------ */

static size_t numel(const uint32_t *s, unsigned nd)
{
    size_t n = 1;
    unsigned d;
    for (d = 0; d < nd; d++)
        n *= s[d];
    return n;
}

static int out_size(uint32_t in, uint32_t k, uint32_t s, uint32_t p, uint32_t *out)
{
    if ((uint64_t)in + 2 * (uint64_t)p < k)
        return 0;
    *out = (uint32_t)((in + 2 * p - k) / s + 1);
    return 1;
}

/* Node i's output shape from its inputs and tensors; 0 (with msg) if they do not fit. */
static int infer(dc_file *f, dcr_model *m, size_t i, char *msg, size_t mlen)
{
    layer *L = &m->l[i];
    const dc_node *n = &L->n;
    const layer *x = &m->l[n->in[0]];
    dc_info w;
    switch (n->op) {
    case DC_OP_CONV2D: {
        uint32_t g = n->a[4];
        dc_tensor_info(f, (size_t)n->tensor[0], &w);
        if (x->ndim != 3 || w.ndim != 4 || g == 0 || w.shape[0] % g || x->shape[0] != w.shape[1] * g ||
            !out_size(x->shape[1], w.shape[2], n->a[0], n->a[2], &L->shape[1]) ||
            !out_size(x->shape[2], w.shape[3], n->a[1], n->a[3], &L->shape[2]))
            break;
        L->ndim = 3;
        L->shape[0] = w.shape[0];
        L->n.a[5] = w.shape[3];              /* the kernel's width and height, for the kernel */
        L->n.a[6] = w.shape[2];
        return 1;
    }
    case DC_OP_LINEAR:
        dc_tensor_info(f, (size_t)n->tensor[0], &w);
        if (x->ndim != 1 || w.ndim != 2 || w.shape[1] != x->shape[0])
            break;
        L->ndim = 1;
        L->shape[0] = w.shape[0];
        return 1;
    case DC_OP_ADD:
        if (x->ndim != m->l[n->in[1]].ndim || memcmp(x->shape, m->l[n->in[1]].shape,
                                                      x->ndim * sizeof *x->shape))
            break;
        L->ndim = x->ndim;
        memcpy(L->shape, x->shape, sizeof L->shape);
        return 1;
    case DC_OP_MAXPOOL2D:
    case DC_OP_AVGPOOL2D:
        if (x->ndim != 3 || 2 * n->a[4] > n->a[0] || 2 * n->a[5] > n->a[1] ||
            !out_size(x->shape[1], n->a[0], n->a[2], n->a[4], &L->shape[1]) ||
            !out_size(x->shape[2], n->a[1], n->a[3], n->a[5], &L->shape[2]))
            break;
        L->ndim = 3;
        L->shape[0] = x->shape[0];
        return 1;
    case DC_OP_MEANPOOL:
        if (x->ndim != 3)
            break;
        L->ndim = 3;
        L->shape[0] = x->shape[0];
        L->shape[1] = L->shape[2] = 1;
        return 1;
    case DC_OP_FLATTEN:
        L->ndim = 1;
        L->shape[0] = (uint32_t)x->size;
        return 1;
    case DC_OP_SUBSAMPLE:
        if (x->ndim != 3)
            break;
        L->ndim = 3;
        L->shape[0] = x->shape[0];
        L->shape[1] = (x->shape[1] + n->a[0] - 1) / n->a[0];
        L->shape[2] = (x->shape[2] + n->a[1] - 1) / n->a[1];
        return 1;
    case DC_OP_PAD:
        if (x->ndim != 3)
            break;
        L->ndim = 3;
        memcpy(L->shape, x->shape, sizeof L->shape);
        L->shape[0] += n->a[0] + n->a[1];
        return 1;
    default:                             /* batchnorm, relu: the input's shape */
        L->ndim = x->ndim;
        memcpy(L->shape, x->shape, sizeof L->shape);
        return 1;
    }
    say(msg, mlen, DC_E_HEADER, "graph node %zu: its tensors or attributes do not fit its "
        "input's shape", i);
    return 0;
}

/* --- loading -------------------------------------------------------------------------- */

static dc_status load_node(dc_file *f, dcr_model *m, size_t i, char *msg, size_t mlen)
{
    layer *L = &m->l[i];
    const dc_node *n = &L->n;
    dc_status st;
    if (n->op == DC_OP_CONV2D || n->op == DC_OP_LINEAR) {
        if ((st = build_weights(f, n->tensor[0], &L->w, &m->weight_bytes, msg, mlen)))
            return st;
        if (n->tensor[1] >= 0 && !(L->bias = vector(f, n->tensor[1], L->shape[0],
                                                    &m->weight_bytes)))
            return say(msg, mlen, DC_E_HEADER, "graph node %zu: its bias does not fit", i);
    } else if (n->op == DC_OP_BATCHNORM) {
        uint32_t c = L->shape[0], k;
        float *v[4];
        size_t tmp = 0;
        int ok = 1;
        for (k = 0; k < 4; k++)
            ok &= (v[k] = vector(f, n->tensor[k], c, &tmp)) != NULL;
        if (ok) {                        /* y = x * scale + shift, as PyTorch's eval mode */
            for (k = 0; k < c; k++) {
                float s = v[0][k] / sqrtf(v[3][k] + n->eps);
                v[3][k] = s;
                v[1][k] -= v[2][k] * s;
            }
            L->scale = v[3];
            L->bias = v[1];
            v[3] = v[1] = NULL;
            m->weight_bytes += 2 * (size_t)c * sizeof(float);
        }
        for (k = 0; k < 4; k++)
            free(v[k]);
        if (!ok)
            return say(msg, mlen, DC_E_HEADER, "graph node %zu: batch norm tensors that do not "
                       "fit its %u channels", i, c);
    }
    return DC_OK;
}

/* One arena for every node's output, a buffer reused once every node that reads it has run
 * (best fit among the free ones): the working set stays in cache, and memory is a few
 * activations, not all of them. */
static dc_status plan_arena(dcr_model *m, char *msg, size_t mlen)
{
    size_t n = m->n, i, k, slots = 0, *last, *off, *cap, *until, *at;
    dc_status st = DC_OK;
    last = calloc(n, sizeof *last);
    off = calloc(n, sizeof *off);
    cap = calloc(n, sizeof *cap);
    until = calloc(n, sizeof *until);
    at = calloc(n, sizeof *at);
    if (!last || !off || !cap || !until || !at) {
        st = say(msg, mlen, DC_E_NO_MEMORY, "out of memory");
        goto done;
    }
    for (i = 0; i < n; i++) {
        last[i] = i;
        for (k = 0; k < (m->l[i].n.op == DC_OP_ADD ? 2u : 1u) && i > 0; k++)
            last[m->l[i].n.in[k]] = i;
    }
    last[n - 1] = n;                             /* the output stays */
    m->arena_len = 0;
    for (i = 0; i < n; i++) {
        size_t best = slots;
        for (k = 0; k < slots; k++)
            if (until[k] < i && cap[k] >= m->l[i].size && (best == slots || cap[k] < cap[best]))
                best = k;
        if (best == slots) {
            if (m->arena_len + m->l[i].size > DC_MAX_ELEMENTS) {
                st = say(msg, mlen, DC_E_LIMIT, "graph node %zu: activations past %u floats",
                         i, DC_MAX_ELEMENTS);
                goto done;
            }
            off[slots] = m->arena_len;
            cap[slots] = m->l[i].size;
            m->arena_len += m->l[i].size;
            slots++;
        }
        until[best] = last[i];
        at[i] = off[best];
    }
    if (!(m->arena = malloc((m->arena_len ? m->arena_len : 1) * sizeof *m->arena))) {
        st = say(msg, mlen, DC_E_NO_MEMORY, "out of memory");
        goto done;
    }
    for (i = 0; i < n; i++)
        m->l[i].out = m->arena + at[i];
done:
    free(last);
    free(off);
    free(cap);
    free(until);
    free(at);
    return st;
}

dc_status dcr_load(dcr_model **out, const uint8_t *buf, size_t len, char *msg, size_t mlen)
{
    dc_file f;
    dcr_model *m = NULL;
    const dc_node *g;
    dc_status st;
    size_t i;
    *out = NULL;
    if ((st = dc_open(&f, buf, len)) != DC_OK) {
        say(msg, mlen, st, "%s", dc_error_message(&f));
        dc_close(&f);
        return st;
    }
    if (!dc_graph_size(&f) || !f.input_ndim) {
        dc_close(&f);
        return say(msg, mlen, DC_E_NO_GRAPH, "the file records no graph (or no input size): "
                   "encode it with deepcomp encode --graph");
    }
    if (!(m = calloc(1, sizeof *m)) || !(m->l = calloc(dc_graph_size(&f), sizeof *m->l))) {
        st = say(msg, mlen, DC_E_NO_MEMORY, "out of memory");
        goto fail;
    }
    m->n = dc_graph_size(&f);
    g = dc_graph(&f);
    for (i = 0; i < m->n; i++) {
        layer *L = &m->l[i];
        L->n = g[i];
        if (i == 0) {
            L->ndim = dc_input_shape(&f, L->shape);
        } else if (!infer(&f, m, i, msg, mlen)) {
            st = DC_E_HEADER;
            goto fail;
        }
        L->size = numel(L->shape, L->ndim);
        if (L->size > DC_MAX_ELEMENTS) {
            st = say(msg, mlen, DC_E_LIMIT, "graph node %zu: activations past %u floats", i,
                     DC_MAX_ELEMENTS);
            goto fail;
        }
        if ((st = load_node(&f, m, i, msg, mlen)) != DC_OK)
            goto fail;
    }
    if ((st = plan_arena(m, msg, mlen)) != DC_OK)
        goto fail;
    dc_close(&f);
    *out = m;
    return DC_OK;
fail:
    dc_close(&f);
    dcr_free(m);
    return st;
}

size_t dcr_input_len(const dcr_model *m) { return m->l[0].size; }
size_t dcr_output_len(const dcr_model *m) { return m->l[m->n - 1].size; }
size_t dcr_weight_bytes(const dcr_model *m) { return m->weight_bytes; }
size_t dcr_arena_bytes(const dcr_model *m) { return m->arena_len * sizeof(float); }

void dcr_free(dcr_model *m)
{
    size_t i;
    if (!m)
        return;
    for (i = 0; m->l && i < m->n; i++) {
        layer *L = &m->l[i];
        free(L->w.start);
        free(L->w.count);
        free(L->w.step);
        free(L->w.sym);
        free(L->w.val);
        free(L->w.cb);
        free(L->bias);
        free(L->scale);
    }
    free(m->l);
    free(m->arena);
    free(m);
}

/* --- the kernels ---------------------------------------------------------------------- */

/* y[0..n) += v * x[0], x[s], x[2s], ...: the inner loop of a sparse convolution, a plain
 * axpy that the compiler vectorizes where the stride is 1. */
static void axpy(float *restrict y, const float *restrict x, uint32_t s, uint32_t n, float v)
{
    uint32_t i;
    if (s == 1) {
        for (i = 0; i < n; i++)
            y[i] += v * x[i];
    } else {
        for (i = 0; i < n; i++)
            y[i] += v * x[(size_t)i * s];
    }
}

/* The first and one-past-last output index whose input index o * s - p + k lies in 0..n-1. */
static void valid_range(uint32_t n, uint32_t out, uint32_t s, uint32_t p, uint32_t k,
                        uint32_t *lo, uint32_t *hi)
{
    *lo = k >= p ? 0 : (p - k + s - 1) / s;
    *hi = n - 1 + p < k ? 0 : (n - 1 + p - k) / s + 1;
    if (*hi > out)
        *hi = out;
    if (*lo > *hi)
        *lo = *hi;
}

static void conv2d(const layer *L, const layer *X)
{
    const wmat *w = &L->w;
    uint32_t O = L->shape[0], OH = L->shape[1], OW = L->shape[2];
    uint32_t C = X->shape[0], H = X->shape[1], W = X->shape[2];
    uint32_t sh = L->n.a[0], sw = L->n.a[1], ph = L->n.a[2], pw = L->n.a[3];
    uint32_t groups = L->n.a[4], cg = C / groups, og = O / groups;
    uint32_t kw = L->n.a[5], kh = L->n.a[6], o, k;
    uint32_t xlo[32], xhi[32], ylo[32], yhi[32];     /* valid output ranges per kernel offset */
    int small = kw <= 32 && kh <= 32;
    size_t e = 0, end;
    for (k = 0; small && k < kw; k++)
        valid_range(W, OW, sw, pw, k, &xlo[k], &xhi[k]);
    for (k = 0; small && k < kh; k++)
        valid_range(H, OH, sh, ph, k, &ylo[k], &yhi[k]);
    for (o = 0; o < O; o++, e = end) {
        float *y = L->out + (size_t)o * OH * OW, b = L->bias ? L->bias[o] : 0.0f;
        uint32_t c = (o / og) * cg, ky = 0, kx = 0, back = 1;
        size_t j;
        end = e + w->count[o];
        for (j = 0; j < (size_t)OH * OW; j++)
            y[j] = b;
        for (; e < end; e++) {
            uint32_t step = w->step[e], oy, oy_lo, oy_hi, ox_lo, ox_hi;
            const float *x;
            float v;
            /* (c, ky, kx) is the column, moved on by the step without dividing (steps are
             * mostly small); the row starts before column 0, one back from (c0, 0, 0) */
            kx += (step == STEP_FILL ? STEP_FILL : step + 1) - back;
            back = 0;
            while (kx >= kw) {
                kx -= kw;
                if (++ky == kh) {
                    ky = 0;
                    c++;
                }
            }
            if (step == STEP_FILL)
                continue;
            v = w->sym ? w->cb[sym_at(w, e)] : w->val[e];
            x = X->out + (size_t)c * H * W;
            if (small) {
                ox_lo = xlo[kx], ox_hi = xhi[kx], oy_lo = ylo[ky], oy_hi = yhi[ky];
            } else {
                valid_range(W, OW, sw, pw, kx, &ox_lo, &ox_hi);
                valid_range(H, OH, sh, ph, ky, &oy_lo, &oy_hi);
            }
            if (ox_lo >= ox_hi || oy_lo >= oy_hi)
                continue;
            if (sw == 1 && sh == 1 && OW == W) {
                /* rows of input and output have one stride: the block is one run of memory,
                 * less the columns the kernel's offset leaves out at each row's ends */
                size_t first = (size_t)oy_lo * OW + ox_lo, len = (size_t)(oy_hi - 1) * OW +
                               ox_hi - first, r;
                const float *xs = x + (size_t)(oy_lo + ky - ph) * W + (ox_lo + kx - pw);
                axpy(y + first, xs, 1, (uint32_t)len, v);
                for (r = 1; r < oy_hi - oy_lo && (ox_lo || ox_hi < OW); r++) {
                    size_t q;                     /* undo the columns between rows */
                    for (q = r * OW - (OW - ox_hi); q < r * OW + ox_lo; q++)
                        y[first + q - ox_lo] -= v * xs[q - ox_lo];
                }
                continue;
            }
            for (oy = oy_lo; oy < oy_hi; oy++)
                axpy(y + (size_t)oy * OW + ox_lo,
                     x + (size_t)(oy * sh + ky - ph) * W + ((size_t)ox_lo * sw + kx - pw), sw,
                     ox_hi - ox_lo, v);
        }
    }
}

static void linear(const layer *L, const layer *X)
{
    const wmat *w = &L->w;
    uint32_t o;
    size_t e = 0, end;
    for (o = 0; o < w->rows; o++, e = end) {
        float acc = L->bias ? L->bias[o] : 0.0f;
        int64_t col = -1;
        end = e + w->count[o];
        for (; e < end; e++) {
            uint32_t s = w->step[e];
            if (s == STEP_FILL) {
                col += STEP_FILL;
                continue;
            }
            col += s + 1;
            acc += (w->sym ? w->cb[sym_at(w, e)] : w->val[e]) * X->out[col];
        }
        L->out[o] = acc;
    }
}

static void pool(const layer *L, const layer *X, int max)
{
    uint32_t C = L->shape[0], OH = L->shape[1], OW = L->shape[2], H = X->shape[1],
             W = X->shape[2], kh = L->n.a[0], kw = L->n.a[1], sh = L->n.a[2], sw = L->n.a[3],
             ph = L->n.a[4], pw = L->n.a[5], c, oy, ox, i, j;
    for (c = 0; c < C; c++)
        for (oy = 0; oy < OH; oy++)
            for (ox = 0; ox < OW; ox++) {
                float acc = max ? -FLT_MAX : 0.0f;
                int any = 0;
                for (i = 0; i < kh; i++)
                    for (j = 0; j < kw; j++) {
                        int64_t iy = (int64_t)oy * sh - ph + i, ix = (int64_t)ox * sw - pw + j;
                        float v;
                        if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                            continue;       /* padding: -inf for max, 0 counted for average */
                        v = X->out[((size_t)c * H + (size_t)iy) * W + (size_t)ix];
                        acc = max ? (any && acc >= v ? acc : v) : acc + v;
                        any = 1;
                    }
                L->out[((size_t)c * OH + oy) * OW + ox] = max ? acc : acc / (float)(kh * kw);
            }
}

static void run_node(const dcr_model *m, size_t i)
{
    const layer *L = &m->l[i], *X = &m->l[L->n.in[0]];
    size_t j, n = L->size;
    switch (L->n.op) {
    case DC_OP_CONV2D:
        conv2d(L, X);
        break;
    case DC_OP_LINEAR:
        linear(L, X);
        break;
    case DC_OP_BATCHNORM: {
        size_t per = L->ndim == 3 ? (size_t)L->shape[1] * L->shape[2] : 1, c;
        for (c = 0; c < L->shape[0]; c++) {
            const float *x = X->out + c * per;
            float *y = L->out + c * per, a = L->scale[c], b = L->bias[c];
            for (j = 0; j < per; j++)
                y[j] = x[j] * a + b;
        }
        break;
    }
    case DC_OP_RELU:
        for (j = 0; j < n; j++)
            L->out[j] = X->out[j] > 0.0f ? X->out[j] : 0.0f;
        break;
    case DC_OP_ADD:
        for (j = 0; j < n; j++)
            L->out[j] = X->out[j] + m->l[L->n.in[1]].out[j];
        break;
    case DC_OP_MAXPOOL2D:
    case DC_OP_AVGPOOL2D:
        pool(L, X, L->n.op == DC_OP_MAXPOOL2D);
        break;
    case DC_OP_MEANPOOL: {
        size_t per = (size_t)X->shape[1] * X->shape[2], c;
        for (c = 0; c < L->shape[0]; c++) {
            float acc = 0.0f;
            for (j = 0; j < per; j++)
                acc += X->out[c * per + j];
            L->out[c] = acc / (float)per;
        }
        break;
    }
    case DC_OP_FLATTEN:
        memcpy(L->out, X->out, n * sizeof *L->out);
        break;
    case DC_OP_SUBSAMPLE: {
        uint32_t c, y, x;
        for (c = 0; c < L->shape[0]; c++)
            for (y = 0; y < L->shape[1]; y++)
                for (x = 0; x < L->shape[2]; x++)
                    L->out[((size_t)c * L->shape[1] + y) * L->shape[2] + x] =
                        X->out[((size_t)c * X->shape[1] + (size_t)y * L->n.a[0]) * X->shape[2] +
                               (size_t)x * L->n.a[1]];
        break;
    }
    case DC_OP_PAD: {
        size_t plane = (size_t)L->shape[1] * L->shape[2];
        memset(L->out, 0, n * sizeof *L->out);
        memcpy(L->out + L->n.a[0] * plane, X->out, X->size * sizeof *L->out);
        break;
    }
    default:
        break;
    }
}

dc_status dcr_run(dcr_model *m, const float *in, float *out)
{
    size_t i;
    if (!m || !in || !out)
        return DC_E_ARGUMENT;
    memcpy(m->l[0].out, in, m->l[0].size * sizeof *in);
    for (i = 1; i < m->n; i++)
        run_node(m, i);
    memcpy(out, m->l[m->n - 1].out, m->l[m->n - 1].size * sizeof *out);
    return DC_OK;
}
