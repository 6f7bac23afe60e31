/* dc.c: a C99 reader of deepcomp's .dc files, format version 2 (docs/FORMAT.md; API in dc.h).
 *
 * The file, in order: a 24-byte prefix, the header (raw DEFLATE of canonical JSON), the data
 * area (three DEFLATE side blocks, then every tensor's streams) and a CRC32 of everything
 * before it. dc_open checks all of it that can be checked without decoding the streams and
 * keeps the tensor table and the inflated side blocks; dc_decode_tensor decodes one tensor's
 * Huffman streams straight into the caller's buffer.
 *
 * Written from docs/FORMAT.md, RFC 1951 (DEFLATE) and RFC 8259 (JSON); no code from other
 * projects. Every length read from the file is checked against the bytes that remain before
 * it is used, and every count against the shapes before anything is sized from it.
 */
#include "dc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX 24                        /* magic, major, minor, H (u32), D (u64) */
#define TRAILER 4                        /* CRC32 of every byte before it */
#define MAX_HEADER ((size_t)16 << 20)    /* the header, stored and inflated */
#define MAX_DEPTH 64                     /* nesting of the header's JSON */
#define MAX_BITS 12                      /* cluster and relative index widths */
#define MAX_CODE 15                      /* longest Huffman code of a stream */
#define MAX_CODEBOOK 4096                /* shared weights of a tensor */
#define MAX_CLASSES 100000               /* data.classes written as a count */
#define FAST_BITS 10                     /* a stream's lookup table: 2^10 entries */

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

static void *mem_array(const dc_file *f, size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return NULL;
    return mem_alloc(f, count * size);
}

static void mem_free(const dc_file *f, void *p)
{
    if (!p)
        return;
    if (f->alloc.alloc)
        f->alloc.free(f->alloc.ctx, p);
    else
        free(p);
}

#if defined(__GNUC__)
static dc_status fail(dc_file *f, dc_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#endif

static dc_status fail(dc_file *f, dc_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->message, sizeof f->message, fmt, ap);
    va_end(ap);
    f->status = s;
    return s;
}

static dc_status no_memory(dc_file *f)
{
    return fail(f, DC_E_NO_MEMORY, "out of memory");
}

static uint64_t le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    while (n--)
        v = v << 8 | p[n];
    return v;
}

/* --- CRC32 (ISO-HDLC, reflected polynomial 0xEDB88320), four bits at a time -------------- */

uint32_t dc_crc32(uint32_t crc, const void *data, size_t n)
{
    static const uint32_t t[16] = {
        0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4, 0x4db26158,
        0x5005713c, 0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c, 0x9b64c2b0, 0x86d3d2d4,
        0xa00ae278, 0xbdbdf21c};
    const uint8_t *p = data;
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        crc = crc >> 4 ^ t[crc & 15];
        crc = crc >> 4 ^ t[crc & 15];
    }
    return ~crc;
}

/* --- raw DEFLATE (RFC 1951) -------------------------------------------------------------
 *
 * Codes must be complete, except a literal/length or distance code of a single 1-bit code
 * word and a distance code with none; at most 286 literal/length and 30 distance codes; a
 * stream ends exactly at the end of its bytes. That is what zlib accepts (docs/FORMAT.md).
 */

enum { INF_OK, INF_BAD, INF_TRUNCATED, INF_TOO_LARGE, INF_TRAILING };

typedef struct {
    const uint8_t *in;
    size_t in_len, in_pos;
    uint32_t bits;                       /* unread bits of the bytes before in_pos, LSB first */
    unsigned nbits;
    uint8_t *out;
    size_t n, cap;                       /* output: bytes written, most allowed */
    const char *why;                     /* what was wrong (INF_BAD) */
} inflater;

#define INF_FAST 9                       /* bits of an inf_code's lookup table */

typedef struct {
    uint16_t count[MAX_CODE + 1];        /* code words per length */
    uint16_t symbol[288];                /* symbols in code order */
    uint16_t fast[1 << INF_FAST];        /* next INF_FAST bits: symbol | length << 12; 0: none */
} inf_code;

static int inf_bits(inflater *s, unsigned need, uint32_t *v)
{
    while (s->nbits < need) {
        if (s->in_pos == s->in_len)
            return INF_TRUNCATED;
        s->bits |= (uint32_t)s->in[s->in_pos++] << s->nbits;
        s->nbits += 8;
    }
    *v = s->bits & ((1u << need) - 1);
    s->bits >>= need;
    s->nbits -= need;
    return INF_OK;
}

/* The canonical code of lengths[0..n) (RFC 1951 3.2.2). codelen: the code length code, which
 * must be complete; the others may be incomplete only with a single 1-bit code word. */
static int inf_build(inf_code *c, const uint8_t *lengths, unsigned n, int codelen)
{
    uint16_t offs[MAX_CODE + 2], code[MAX_CODE + 1];
    unsigned s, len, max = 0;
    long left = 1;
    memset(c->count, 0, sizeof c->count);
    for (s = 0; s < n; s++)
        c->count[lengths[s]]++;
    c->count[0] = 0;
    for (len = 1; len <= MAX_CODE; len++) {
        left = 2 * left - c->count[len];
        if (left < 0)
            return -1;                   /* over-subscribed */
        if (c->count[len])
            max = len;
    }
    if (max && left > 0 && (codelen || max != 1))
        return -1;                       /* incomplete */
    offs[1] = 0;
    code[0] = 0;
    for (len = 1; len <= MAX_CODE; len++) {
        offs[len + 1] = (uint16_t)(offs[len] + c->count[len]);
        code[len] = (uint16_t)(((unsigned)code[len - 1] + c->count[len - 1]) << 1);
    }
    memset(c->fast, 0, sizeof c->fast);
    for (s = 0; s < n; s++) {
        unsigned l = lengths[s], rev = 0, k;
        if (!l)
            continue;
        c->symbol[offs[l]++] = (uint16_t)s;
        for (k = 0; k < l; k++)          /* codes arrive from their first bit: reversed */
            rev |= (code[l] >> k & 1u) << (l - 1 - k);
        code[l]++;
        if (l <= INF_FAST)
            for (k = rev; k < 1u << INF_FAST; k += 1u << l)
                c->fast[k] = (uint16_t)(s | l << 12);
    }
    return 0;
}

/* The next symbol: codes arrive most significant bit first. A code of at most INF_FAST bits
 * is looked up when that many bits remain; the others are decoded one bit at a time. */
static int inf_decode(inflater *s, const inf_code *c, int *sym)
{
    long code = 0, first = 0, index = 0;       /* long: 16-bit ints overflow at 15 bits */
    unsigned len, e;
    while (s->nbits < INF_FAST && s->in_pos < s->in_len) {
        s->bits |= (uint32_t)s->in[s->in_pos++] << s->nbits;
        s->nbits += 8;
    }
    e = c->fast[s->bits & ((1u << INF_FAST) - 1)];
    if (e && e >> 12 <= s->nbits) {
        *sym = (int)(e & 0xfff);
        s->bits >>= e >> 12;
        s->nbits -= e >> 12;
        return INF_OK;
    }
    for (len = 1; len <= MAX_CODE; len++) {
        uint32_t bit;
        if (inf_bits(s, 1, &bit))
            return INF_TRUNCATED;
        code |= (long)bit;
        if (code - first < c->count[len]) {
            *sym = c->symbol[index + code - first];
            return INF_OK;
        }
        index += c->count[len];
        first = (first + c->count[len]) << 1;
        code <<= 1;
    }
    s->why = "an unassigned code word";
    return INF_BAD;
}

static int inf_put(inflater *s, uint8_t b)
{
    if (s->n >= s->cap)
        return INF_TOO_LARGE;
    s->out[s->n++] = b;
    return INF_OK;
}

static int inf_stored(inflater *s)
{
    size_t len;
    s->in_pos -= s->nbits / 8;           /* to the byte boundary: whole bytes read ahead */
    s->bits = 0;                         /* are given back */
    s->nbits = 0;
    if (s->in_len - s->in_pos < 4)
        return INF_TRUNCATED;
    len = (size_t)le(s->in + s->in_pos, 2);
    if (len != (~le(s->in + s->in_pos + 2, 2) & 0xffff)) {
        s->why = "stored block lengths that do not match";
        return INF_BAD;
    }
    s->in_pos += 4;
    while (len--) {
        int r;
        if (s->in_pos == s->in_len)
            return INF_TRUNCATED;
        if ((r = inf_put(s, s->in[s->in_pos++])) != INF_OK)
            return r;
    }
    return INF_OK;
}

static int inf_codes(inflater *s, const inf_code *lit, const inf_code *dist)
{
    static const uint16_t lbase[29] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
                                       35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
    static const uint8_t lextra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                       2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
    static const uint16_t dbase[30] = {1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129,
                                       193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097,
                                       6145, 8193, 12289, 16385, 24577};
    static const uint8_t dextra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6,
                                       6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
    for (;;) {
        int sym, r;
        uint32_t extra;
        size_t len, d;
        if ((r = inf_decode(s, lit, &sym)) != INF_OK)
            return r;
        if (sym < 256) {
            if ((r = inf_put(s, (uint8_t)sym)) != INF_OK)
                return r;
            continue;
        }
        if (sym == 256)
            return INF_OK;
        sym -= 257;
        if (sym >= 29) {
            s->why = "a literal/length code of 286 or 287";
            return INF_BAD;
        }
        if ((r = inf_bits(s, lextra[sym], &extra)) != INF_OK)
            return r;
        len = lbase[sym] + extra;
        if ((r = inf_decode(s, dist, &sym)) != INF_OK)
            return r;
        if (sym >= 30) {
            s->why = "a distance code of 30 or 31";
            return INF_BAD;
        }
        if ((r = inf_bits(s, dextra[sym], &extra)) != INF_OK)
            return r;
        d = dbase[sym] + extra;
        if (d > s->n) {
            s->why = "a distance before the start of the output";
            return INF_BAD;
        }
        while (len--) {
            if ((r = inf_put(s, s->out[s->n - d])) != INF_OK)
                return r;
        }
    }
}

static int inf_fixed(inflater *s)
{
    inf_code lit, dist;
    uint8_t lengths[288];
    memset(lengths, 8, 144);
    memset(lengths + 144, 9, 112);
    memset(lengths + 256, 7, 24);
    memset(lengths + 280, 8, 8);
    inf_build(&lit, lengths, 288, 0);
    memset(lengths, 5, 32);
    inf_build(&dist, lengths, 32, 0);
    return inf_codes(s, &lit, &dist);
}

static int inf_dynamic(inflater *s)
{
    static const uint8_t order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2,
                                      14, 1, 15};
    inf_code lit, dist;
    uint8_t lengths[286 + 30];
    uint32_t nlit, ndist, ncode, v;
    unsigned i;
    int r;
    if ((r = inf_bits(s, 5, &nlit)) || (r = inf_bits(s, 5, &ndist)) || (r = inf_bits(s, 4, &ncode)))
        return r;
    nlit += 257;
    ndist += 1;
    ncode += 4;
    if (nlit > 286 || ndist > 30) {
        s->why = "too many length or distance codes";
        return INF_BAD;
    }
    memset(lengths, 0, 19);
    for (i = 0; i < ncode; i++) {
        if ((r = inf_bits(s, 3, &v)) != INF_OK)
            return r;
        lengths[order[i]] = (uint8_t)v;
    }
    if (inf_build(&lit, lengths, 19, 1)) {
        s->why = "an invalid code length code";
        return INF_BAD;
    }
    for (i = 0; i < nlit + ndist;) {
        int sym;
        unsigned rep;
        uint8_t fill = 0;
        if ((r = inf_decode(s, &lit, &sym)) != INF_OK)
            return r;
        if (sym < 16) {
            lengths[i++] = (uint8_t)sym;
            continue;
        }
        if (sym == 16) {
            if (i == 0) {
                s->why = "a repeat with no length before it";
                return INF_BAD;
            }
            fill = lengths[i - 1];
            if ((r = inf_bits(s, 2, &v)) != INF_OK)
                return r;
            rep = 3 + v;
        } else if (sym == 17) {
            if ((r = inf_bits(s, 3, &v)) != INF_OK)
                return r;
            rep = 3 + v;
        } else {
            if ((r = inf_bits(s, 7, &v)) != INF_OK)
                return r;
            rep = 11 + v;
        }
        if (i + rep > nlit + ndist) {
            s->why = "code lengths that repeat past their count";
            return INF_BAD;
        }
        while (rep--)
            lengths[i++] = fill;
    }
    if (lengths[256] == 0) {
        s->why = "no end-of-block code";
        return INF_BAD;
    }
    if (inf_build(&lit, lengths, nlit, 0) || inf_build(&dist, lengths + nlit, ndist, 0)) {
        s->why = "an invalid literal/length or distance code";
        return INF_BAD;
    }
    return inf_codes(s, &lit, &dist);
}

/* Inflate in[0..len), which must hold exactly one DEFLATE stream, into out, at most cap
 * bytes; *n: the bytes it inflates to, so far. */
static int inflate_raw(const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *n,
                       const char **why)
{
    inflater s;
    uint32_t last, type;
    int r;
    memset(&s, 0, sizeof s);
    s.in = in;
    s.in_len = len;
    s.out = out;
    s.cap = cap;
    s.why = "";
    do {
        if ((r = inf_bits(&s, 1, &last)) || (r = inf_bits(&s, 2, &type)))
            break;
        if (type == 0)
            r = inf_stored(&s);
        else if (type == 1)
            r = inf_fixed(&s);
        else if (type == 2)
            r = inf_dynamic(&s);
        else {
            s.why = "block type 3";
            r = INF_BAD;
        }
    } while (r == INF_OK && !last);
    if (r == INF_OK && s.in_pos - s.nbits / 8 != s.in_len)
        r = INF_TRAILING;
    *n = s.n;
    *why = s.why;
    return r;
}

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
            return no_memory(f);
        r = inflate_raw(in, len, buf, size, &got, &why);
        if (r == INF_OK)
            break;
        mem_free(f, buf);
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
        return fail(f, DC_E_HEADER_TOO_LARGE, "%s inflates past its %zu-byte %s", what, cap,
                    want == SIZE_MAX ? "cap" : "size");
    case INF_BAD:
        return fail(f, DC_E_HEADER, "%s is not valid DEFLATE data (%s)", what, why);
    default:
        return fail(f, DC_E_HEADER, "%s: DEFLATE stream is truncated or followed by bytes",
                    what);
    }
}

/* --- JSON (RFC 8259) --------------------------------------------------------------------
 *
 * json_check validates the whole header text once (UTF-8, syntax, nesting); the functions
 * after it walk the validated text, which ends in a NUL that no valid JSON holds.
 */

static int utf8_check(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        unsigned len, k;
        uint8_t lo = 0x80, hi = 0xbf;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            len = 2;
        else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            if (c == 0xe0)
                lo = 0xa0;                   /* no overlong forms */
            if (c == 0xed)
                hi = 0x9f;                   /* no surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            if (c == 0xf0)
                lo = 0x90;
            if (c == 0xf4)
                hi = 0x8f;                   /* nothing past U+10FFFF */
        } else
            return 0;
        if (n - i < len)
            return 0;
        for (k = 1; k < len; k++) {
            uint8_t b = p[i + k];
            if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xbf))
                return 0;
        }
        i += len;
    }
    return 1;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A string at s[*i] == '"': moves *i past it; 0 if malformed. */
static int json_check_string(const char *s, size_t n, size_t *i)
{
    size_t j = *i + 1;
    for (;;) {
        unsigned char c;
        if (j >= n)
            return 0;
        c = (unsigned char)s[j];
        if (c == '"')
            break;
        if (c < 0x20)
            return 0;                        /* control characters must be escaped */
        if (c == '\\') {
            if (++j >= n)
                return 0;
            c = (unsigned char)s[j];
            if (c == 'u') {
                unsigned k;
                if (n - j < 5)
                    return 0;
                for (k = 1; k <= 4; k++)
                    if (hex_value(s[j + k]) < 0)
                        return 0;
                j += 4;
            } else if (!strchr("\"\\/bfnrt", c) || c == 0)
                return 0;
        }
        j++;
    }
    *i = j + 1;
    return 1;
}

/* A number (-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][-+]?[0-9]+)?) or true, false, null. */
static int json_check_scalar(const char *s, size_t n, size_t *i)
{
    size_t j = *i, start;
    static const char *const words[] = {"true", "false", "null"};
    unsigned w;
    for (w = 0; w < 3; w++) {
        size_t len = strlen(words[w]);
        if (n - j >= len && memcmp(s + j, words[w], len) == 0) {
            *i = j + len;
            return 1;
        }
    }
    if (j < n && s[j] == '-')
        j++;
    if (j >= n || !is_digit(s[j]))
        return 0;
    start = *i;
    if (s[j] == '0')
        j++;
    else
        while (j < n && is_digit(s[j]))
            j++;
    if (j < n && s[j] == '.') {
        if (++j >= n || !is_digit(s[j]))
            return 0;
        while (j < n && is_digit(s[j]))
            j++;
    }
    if (j < n && (s[j] == 'e' || s[j] == 'E')) {
        j++;
        if (j < n && (s[j] == '+' || s[j] == '-'))
            j++;
        if (j >= n || !is_digit(s[j]))
            return 0;
        while (j < n && is_digit(s[j]))
            j++;
    }
    if (j - start > DC_MAX_NUMBER_CHARS)      /* docs/FORMAT.md: numbers of 40 characters */
        return 0;
    *i = j;
    return 1;
}

/* The whole text: one JSON value, nested at most MAX_DEPTH deep, without recursion.
 * 0 if valid, else a reason. */
static const char *json_check(const char *s, size_t n)
{
    enum { VALUE, VALUE_OR_CLOSE, KEY, KEY_OR_CLOSE, AFTER } state = VALUE;
    char stack[MAX_DEPTH];                   /* '{' or '[' of each open container */
    unsigned depth = 0;
    size_t i = 0;
    if (!utf8_check((const uint8_t *)s, n))
        return "it is not UTF-8";
    for (;;) {
        while (i < n && is_ws(s[i]))
            i++;
        if (state == AFTER && depth == 0)
            return i == n ? NULL : "extra data after the value";
        if (i >= n)
            return "it ends early";
        switch (state) {
        case VALUE:
        case VALUE_OR_CLOSE:
            if (state == VALUE_OR_CLOSE && s[i] == ']') {
                depth--;
                i++;
                state = AFTER;
            } else if (s[i] == '{' || s[i] == '[') {
                if (depth == MAX_DEPTH)
                    return "it nests deeper than 64 levels";
                stack[depth++] = s[i];
                state = s[i] == '{' ? KEY_OR_CLOSE : VALUE_OR_CLOSE;
                i++;
            } else if (s[i] == '"') {
                if (!json_check_string(s, n, &i))
                    return "a malformed string";
                state = AFTER;
            } else {
                if (!json_check_scalar(s, n, &i))
                    return "an invalid value";
                state = AFTER;
            }
            break;
        case KEY:
        case KEY_OR_CLOSE:
            if (state == KEY_OR_CLOSE && s[i] == '}') {
                depth--;
                i++;
                state = AFTER;
                break;
            }
            if (s[i] != '"' || !json_check_string(s, n, &i))
                return "an object key that is not a string";
            while (i < n && is_ws(s[i]))
                i++;
            if (i >= n || s[i] != ':')
                return "a key without ':'";
            i++;
            state = VALUE;
            break;
        case AFTER:
            if (s[i] == ',') {
                state = stack[depth - 1] == '{' ? KEY : VALUE;
                i++;
            } else if (s[i] == (stack[depth - 1] == '{' ? '}' : ']')) {
                depth--;
                i++;
            } else
                return "a missing ',' or bracket";
            break;
        }
    }
}

/* Walking validated text. A value is a pointer to its first character. */

static const char *ws(const char *p)
{
    while (is_ws(*p))
        p++;
    return p;
}

static const char *skip_string(const char *p)
{
    for (p++; *p != '"'; p++)
        if (*p == '\\')
            p++;
    return p + 1;
}

static const char *skip_value(const char *p)
{
    int depth = 0;
    if (*p == '"')
        return skip_string(p);
    if (*p != '{' && *p != '[') {
        while (*p && !is_ws(*p) && *p != ',' && *p != ']' && *p != '}')
            p++;
        return p;
    }
    do {
        if (*p == '"') {
            p = skip_string(p);
            continue;
        }
        if (*p == '{' || *p == '[')
            depth++;
        else if (*p == '}' || *p == ']')
            depth--;
        p++;
    } while (depth > 0);
    return p;
}

static int is_object(const char *v) { return v && *v == '{'; }
static int is_array(const char *v) { return v && *v == '['; }
static int is_string(const char *v) { return v && *v == '"'; }

/* Arrays: the first element, the next one; NULL past the end. */
static const char *arr_first(const char *a)
{
    const char *p = ws(a + 1);
    return *p == ']' ? NULL : p;
}

static const char *arr_next(const char *v)
{
    const char *p = ws(skip_value(v));
    return *p == ',' ? ws(p + 1) : NULL;
}

static size_t arr_len(const char *a)
{
    size_t n = 0;
    const char *v;
    for (v = arr_first(a); v; v = arr_next(v))
        n++;
    return n;
}

/* Objects: members are walked by their key (a string); member_value is after its ':'. */
static const char *obj_first(const char *o)
{
    const char *p = ws(o + 1);
    return *p == '"' ? p : NULL;
}

static const char *member_value(const char *key)
{
    return ws(ws(skip_string(key)) + 1);
}

static const char *obj_next(const char *key)
{
    const char *p = ws(skip_value(member_value(key)));
    return *p == ',' ? ws(p + 1) : NULL;
}

static int hex4(const char *p)
{
    return hex_value(p[0]) << 12 | hex_value(p[1]) << 8 | hex_value(p[2]) << 4 | hex_value(p[3]);
}

/* The next code point of a string (*pp inside its quotes), or -1 at the closing quote.
 * Escaped surrogate pairs combine; a lone escaped surrogate is its own code point. */
static long str_next(const char **pp)
{
    const unsigned char *p = (const unsigned char *)*pp;
    long c;
    if (*p == '"')
        return -1;
    if (*p == '\\') {
        switch (p[1]) {
        case 'b': c = 8; break;
        case 'f': c = 12; break;
        case 'n': c = 10; break;
        case 'r': c = 13; break;
        case 't': c = 9; break;
        case 'u': c = hex4((const char *)p + 2); break;
        default: c = p[1]; break;             /* " \ / */
        }
        p += p[1] == 'u' ? 6 : 2;
        if (c >= 0xd800 && c < 0xdc00 && p[0] == '\\' && p[1] == 'u') {
            long lo = hex4((const char *)p + 2);
            if (lo >= 0xdc00 && lo < 0xe000) {
                c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
                p += 6;
            }
        }
    } else if (*p < 0x80) {
        c = *p++;
    } else {                                   /* validated UTF-8 */
        unsigned len = *p >= 0xf0 ? 4 : *p >= 0xe0 ? 3 : 2, k;
        c = *p & (0x7f >> len);
        for (k = 1; k < len; k++)
            c = c << 6 | (p[k] & 0x3f);
        p += len;
    }
    *pp = (const char *)p;
    return c;
}

/* The string value v equals the ASCII text lit. */
static int str_eq(const char *v, const char *lit)
{
    const char *p = v + 1;
    for (;; lit++) {
        long c = str_next(&p);
        if (c < 0)
            return *lit == 0;
        if (*lit == 0 || c != (unsigned char)*lit)
            return 0;
    }
}

/* Code point order (as Python compares str): <0, 0, >0. */
static int str_cmp(const char *a, const char *b)
{
    const char *p = a + 1, *q = b + 1;
    for (;;) {
        long x = str_next(&p), y = str_next(&q);
        if (x != y)
            return x < y ? -1 : 1;
        if (x < 0)
            return 0;
    }
}

/* The string value v as UTF-8 in out (lone surrogates as 3 bytes, which keeps the order);
 * returns its length. out needs as many bytes as the string's JSON text. */
static size_t str_decode(const char *v, char *out)
{
    const char *p = v + 1;
    size_t n = 0;
    long c;
    while ((c = str_next(&p)) >= 0) {
        if (c < 0x80)
            out[n++] = (char)c;
        else if (c < 0x800) {
            out[n++] = (char)(0xc0 | c >> 6);
            out[n++] = (char)(0x80 | (c & 0x3f));
        } else if (c < 0x10000) {
            out[n++] = (char)(0xe0 | c >> 12);
            out[n++] = (char)(0x80 | (c >> 6 & 0x3f));
            out[n++] = (char)(0x80 | (c & 0x3f));
        } else {
            out[n++] = (char)(0xf0 | c >> 18);
            out[n++] = (char)(0x80 | (c >> 12 & 0x3f));
            out[n++] = (char)(0x80 | (c >> 6 & 0x3f));
            out[n++] = (char)(0x80 | (c & 0x3f));
        }
    }
    return n;
}

/* The member of object o with key `key`; the last one where the key repeats, as Python's
 * json reads it. NULL if none. */
static const char *obj_get(const char *o, const char *key)
{
    const char *k, *v = NULL;
    for (k = obj_first(o); k; k = obj_next(k))
        if (str_eq(k, key))
            v = member_value(k);
    return v;
}

/* An integer (no fraction or exponent) of lo..hi: JSON's -0 is 0; values past 2^64 - 1 are
 * taken as 2^64 - 1, past every bound of the format. */
static int json_int(const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
    const char *p = v;
    uint64_t x = 0;
    int neg = 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    if (!is_digit(*p))
        return 0;
    for (; is_digit(*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        x = x > (UINT64_MAX - d) / 10 ? UINT64_MAX : x * 10 + d;
    }
    if (*p == '.' || *p == 'e' || *p == 'E' || (neg && x != 0) || x < lo || x > hi)
        return 0;
    *out = x;
    return 1;
}

static int is_uint(const char *v, uint64_t lo, uint64_t hi)
{
    uint64_t x;
    return v && json_int(v, lo, hi, &x);
}

static int json_true(const char *v) { return v && strncmp(v, "true", 4) == 0; }
static int json_false(const char *v) { return v && strncmp(v, "false", 5) == 0; }

/* --- the header (docs/FORMAT.md, "Header") ---------------------------------------------- */

static int dtype_of(const char *v)
{
    int d;
    if (!is_string(v))
        return -1;
    for (d = 0; d < 10; d++)
        if (str_eq(v, DTYPE_NAMES[d]))
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
    if (!is_array(v))
        return 0;
    for (d = arr_first(v); d; d = arr_next(d)) {
        if (n == DC_MAX_DIMS || !json_int(d, 0, DC_MAX_ELEMENTS, &x))
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
    if (!is_object(h))
        return fail(f, DC_E_HEADER, "header is not a JSON object");
    memset(top, 0, H_KEYS * sizeof *top);
    for (k = obj_first(h); k; k = obj_next(k)) {
        for (i = 0; i < H_KEYS && !str_eq(k, keys[i]); i++)
            ;
        if (i == H_KEYS)
            break;
        top[i] = member_value(k);            /* a repeated key: the last one counts */
    }
    for (i = 0; i <= H_TENSORS && !k; i++)
        if (!top[i])
            break;
    if (k || i <= H_TENSORS)
        return fail(f, DC_E_HEADER, "header keys must be arch, blocks, data, history, "
                    "quant_meta, tensors (optionally drop, explicit, graph, state)");
    arch = top[H_ARCH];
    name = is_object(arch) ? obj_get(arch, "name") : NULL;
    kwargs = is_object(arch) ? obj_get(arch, "kwargs") : NULL;
    if (!is_string(name) || (kwargs && !is_object(kwargs)))
        return fail(f, DC_E_HEADER, "header 'arch' must be {'name': str, 'kwargs': {...}}");
    data = top[H_DATA];
    history = top[H_HISTORY];
    if (!is_object(data) || !is_array(history))
        return fail(f, DC_E_HEADER, "header 'data' must be an object and 'history' a list of "
                    "objects");
    for (r = arr_first(history), records = 0; r; r = arr_next(r), records++)
        if (!is_object(r))
            return fail(f, DC_E_HEADER, "header 'data' must be an object and 'history' a list "
                        "of objects");
    if (records > DC_MAX_HISTORY)
        return fail(f, DC_E_LIMIT, "%lu history records exceed the reader's limit of %u",
                    records, DC_MAX_HISTORY);
    if (!is_object(top[H_QUANT_META]) || !is_array(top[H_TENSORS]))
        return fail(f, DC_E_HEADER, "'quant_meta' must be an object and 'tensors' a list");
    classes = obj_get(data, "classes");
    if (classes && (*classes == '-' || is_digit(*classes))) {
        uint64_t x;                          /* an integer: the count of classes 0..n-1 */
        const char *p = classes + (*classes == '-');
        while (is_digit(*p))
            p++;
        if (*p != '.' && *p != 'e' && *p != 'E' && !json_int(classes, 1, MAX_CLASSES, &x))
            return fail(f, DC_E_HEADER, "'classes' must be a list or a count up to %d",
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
    int ok = is_object(b);
    for (k = ok ? obj_first(b) : NULL; k && ok; k = obj_next(k))
        ok = str_eq(k, names[0]) || str_eq(k, names[1]) || str_eq(k, names[2]);
    for (i = 0; i < 3 && ok; i++) {
        const char *v = obj_get(b, names[i]);
        ok = v && json_int(v, 0, UINT64_MAX, &len[i]);
    }
    if (!ok)
        return fail(f, DC_E_HEADER, "'blocks' must give the lengths of code_tables, codebooks, "
                    "dense");
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
    if ((ex && !json_true(ex) && !json_false(ex)) || (json_true(ex) && (drop || !st)))
        return fail(f, DC_E_HEADER, "'explicit' must be true, with 'state' and without 'drop'");
    if (st && !is_array(st))
        return fail(f, DC_E_HEADER, "'state' must be a list of [name, dtype, shape]");
    for (s = st ? arr_first(st) : NULL; s; s = arr_next(s))
        if (!is_array(s) || arr_len(s) != 3 || !is_string(arr_first(s)))
            return fail(f, DC_E_HEADER, "'state' must be a list of [name, dtype, shape]");
    if (drop && !is_array(drop))
        return fail(f, DC_E_HEADER, "'state' and 'drop' must be sorted by name, each name once");
    for (s = drop ? arr_first(drop) : NULL; s; prev = s, s = arr_next(s))
        if (!is_string(s) || (prev && str_cmp(prev, s) >= 0))
            return fail(f, DC_E_HEADER, "'state' and 'drop' must be sorted by name, each name "
                        "once");
    prev = NULL;
    for (s = st ? arr_first(st) : NULL; s; prev = s, s = arr_next(s))
        if (prev && str_cmp(arr_first(prev), arr_first(s)) >= 0)
            return fail(f, DC_E_HEADER, "'state' and 'drop' must be sorted by name, each name "
                        "once");
    for (s = st ? arr_first(st) : NULL; s; s = arr_next(s)) {
        struct dc_entry t;
        const char *dt = arr_next(arr_first(s));
        if (dtype_of(dt) < 0)
            return fail(f, DC_E_HEADER, "a tensor of 'state' has an unknown dtype");
        if (!read_shape(arr_next(dt), &t))
            return fail(f, DC_E_HEADER, "a tensor of 'state' has a bad shape");
        total += t.numel;
    }
    if (!json_true(ex))
        return fail(f, DC_E_NO_LAYOUT, "file does not store tensor shapes (format 2.0, layout "
                    "implied by the architecture); re-encode it with deepcomp encode");
    if (total > element_budget(f))
        return fail(f, DC_E_LIMIT, "%llu elements exceed the reader's limit of %llu for a file "
                    "of %zu bytes", (unsigned long long)total,
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
    if (json_int(e, 0, 0, &x)) {             /* 0: dense, in its own dtype */
        t->kind = K_DENSE;
        t->stored = t->dtype;
        return DC_OK;
    }
    kind = is_array(e) ? arr_first(e) : NULL;
    for (i = 0; i < 4 && kind && !(is_string(kind) && str_eq(kind, KIND_NAMES[i])); i++)
        ;
    if (!kind || i == 4)
        return fail(f, DC_E_HEADER, "tensor '%s': an entry must be 0 or [kind, ...]", nm);
    t->kind = (uint8_t)i;
    fields = KIND_FIELDS[i];
    for (e = arr_next(kind); e; e = arr_next(e), n++)
        if (n < 10)
            v[n] = e;
    if (n < fields || n > fields + (t->kind == K_QUANT || t->kind == K_QDENSE))
        return fail(f, DC_E_HEADER, "tensor '%s': a %s entry holds %u fields", nm,
                    KIND_NAMES[t->kind], fields);
    if (t->kind == K_DENSE) {
        int s = dtype_of(v[0]);
        if (s < 0 || !may_store(t->dtype, s))
            return fail(f, DC_E_HEADER, "tensor '%s': a bad stored dtype for a %s tensor", nm,
                        DTYPE_NAMES[t->dtype]);
        t->stored = (uint8_t)s;
        return DC_OK;
    }
    t->stored = DC_FLOAT32;
    if (t->kind != K_SPARSE) {              /* bits, k, codebook dtype, ..., quantizer fields */
        if (n > fields && !is_object(v[fields]))
            return fail(f, DC_E_HEADER, "tensor '%s': quantizer fields must be an object", nm);
        if (is_string(v[2]) && str_eq(v[2], "float16"))
            t->cb_width = 2;
        else if (is_string(v[2]) && str_eq(v[2], "float32"))
            t->cb_width = 4;
        else
            return fail(f, DC_E_HEADER, "tensor '%s': codebook dtype must be float16 or "
                        "float32", nm);
    }
    {   /* the section lengths, then the fields every reader checks */
        const char *wl = t->kind == K_QUANT ? v[7] : t->kind == K_QDENSE ? v[3] : NULL;
        const char *gl = t->kind == K_QUANT ? v[8] : t->kind == K_SPARSE ? v[4] : NULL;
        if ((wl && !json_int(wl, 0, UINT64_MAX, &x)) || (gl && !json_int(gl, 0, UINT64_MAX, &x)))
            return fail(f, DC_E_HEADER, "tensor '%s': bad section length", nm);
        if (wl)
            json_int(wl, 0, UINT64_MAX, &x), t->wlen = (size_t)(x > SIZE_MAX ? SIZE_MAX : x);
        if (gl)
            json_int(gl, 0, UINT64_MAX, &x), t->glen = (size_t)(x > SIZE_MAX ? SIZE_MAX : x);
    }
    if (t->dtype != DC_FLOAT32 || t->ndim == 0)
        return fail(f, DC_E_HEADER, "tensor '%s': a %s tensor must be float32 with at least "
                    "one dimension", nm, KIND_NAMES[t->kind]);
    if (t->kind != K_QDENSE) {
        const char *const *w = t->kind == K_SPARSE ? v : v + 3;   /* order, index_bits, ... */
        if (!is_string(w[0]) || !(str_eq(w[0], "csr") || str_eq(w[0], "csc")) ||
            !is_uint(w[1], 1, MAX_BITS) || !is_uint(w[2], 0, UINT64_MAX) ||
            !is_uint(w[3], 0, UINT64_MAX))
            return fail(f, DC_E_HEADER, "tensor '%s': bad order, index_bits, entries or "
                        "nonzeros", nm);
        t->csc = (uint8_t)str_eq(w[0], "csc");
        json_int(w[1], 1, MAX_BITS, &x);
        t->index_bits = (uint8_t)x;
        json_int(w[2], 0, UINT64_MAX, &t->entries);
        json_int(w[3], 0, UINT64_MAX, &t->nonzeros);
    }
    if (t->kind != K_SPARSE) {
        if (!is_uint(v[0], 1, MAX_BITS) || !json_int(v[1], 0, MAX_CODEBOOK, &x))
            return fail(f, DC_E_HEADER, "tensor '%s': bad bits, codebook_size or quant_meta", nm);
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
            return fail(f, DC_E_INVALID_OFFSET, "sections run past the %zu data bytes", dlen); \
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
        return fail(f, DC_E_INVALID_OFFSET, "sections cover %zu of %zu data bytes", off, dlen);
    return DC_OK;
}

/* The header's JSON text (n bytes, NUL after them): the tensor table. */
/* --- the graph (docs/FORMAT.md, "Graph") ----------------------------------------------- */

static const char *const OP_NAMES[] = {"input", "conv2d", "linear", "batchnorm", "relu", "add",
                                       "maxpool2d", "avgpool2d", "meanpool", "flatten",
                                       "subsample", "pad"};
static const unsigned OP_INPUTS[] = {0, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1};

/* data.input_size, when it is a list of 1 to 3 sizes. */
static void read_input_shape(dc_file *f, const char *data)
{
    const char *v = obj_get(data, "input_size"), *d;
    unsigned n = 0;
    uint64_t x;
    f->input_ndim = 0;
    if (!is_array(v) || arr_len(v) < 1 || arr_len(v) > 3)
        return;
    for (d = arr_first(v); d; d = arr_next(d)) {
        if (!json_int(d, 1, 1u << 16, &x))
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
    if (!is_string(v))
        return -2;
    for (i = 0; i < f->ntensors; i++)
        if (str_eq(v, f->names + f->t[i].name))
            return (int32_t)i;
    return -2;
}

/* key: a list of n integers of lo to 65536, into out. */
static int graph_ints(const char *attrs, const char *key, unsigned n, uint64_t lo, uint32_t *out)
{
    const char *v = obj_get(attrs, key), *d;
    unsigned i = 0;
    uint64_t x;
    if (!is_array(v) || arr_len(v) != n)
        return 0;
    for (d = arr_first(v); d; d = arr_next(d)) {
        if (!json_int(d, lo, 1u << 16, &x))
            return 0;
        out[i++] = (uint32_t)x;
    }
    return 1;
}

/* A JSON number (at most DC_MAX_NUMBER_CHARS long, checked by json_check) as a float. */
static int graph_float(const char *v, float *out)
{
    char buf[DC_MAX_NUMBER_CHARS + 1];
    size_t n = 0;
    double x;
    if (!v || !(*v == '-' || is_digit(*v)))
        return 0;
    while (n < DC_MAX_NUMBER_CHARS && (v[n] == '-' || v[n] == '+' || v[n] == '.' ||
                                       v[n] == 'e' || v[n] == 'E' || is_digit(v[n]))) {
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
        nd->tensor[0] = graph_tensor(f, obj_get(a, "weight"), 0);
        nd->tensor[1] = graph_tensor(f, obj_get(a, "bias"), 1);
        return nd->tensor[0] >= 0 && nd->tensor[1] >= -1 &&
               graph_ints(a, "stride", 2, 1, nd->a) && graph_ints(a, "padding", 2, 0, nd->a + 2) &&
               graph_ints(a, "dilation", 2, 1, dil) && dil[0] == 1 && dil[1] == 1 &&
               json_int(obj_get(a, "groups"), 1, 1u << 16, &g) && (nd->a[4] = (uint32_t)g, 1);
    }
    case DC_OP_LINEAR:
        nd->tensor[0] = graph_tensor(f, obj_get(a, "weight"), 0);
        nd->tensor[1] = graph_tensor(f, obj_get(a, "bias"), 1);
        return nd->tensor[0] >= 0 && nd->tensor[1] >= -1;
    case DC_OP_BATCHNORM:
        for (k = 0; k < 4; k++)
            if ((nd->tensor[k] = graph_tensor(f, obj_get(a, bn[k]), 0)) < 0)
                return 0;
        return graph_float(obj_get(a, "eps"), &nd->eps);
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
    size_t i = 0, n = is_array(g) ? arr_len(g) : 0;
    if (n < 1 || n > DC_MAX_NODES)
        return fail(f, DC_E_HEADER, "'graph' must be a list of 1 to %u nodes", DC_MAX_NODES);
    f->graph = mem_array(f, n, sizeof *f->graph);
    if (!f->graph)
        return no_memory(f);
    memset(f->graph, 0, n * sizeof *f->graph);
    for (nv = arr_first(g); nv; nv = arr_next(nv), i++) {
        dc_node *nd = &f->graph[i];
        const char *op = is_array(nv) && arr_len(nv) == 3 ? arr_first(nv) : NULL;
        const char *ins = op ? arr_next(op) : NULL, *attrs = ins ? arr_next(ins) : NULL, *x;
        unsigned k, j = 0;
        for (k = 0; op && k < sizeof OP_NAMES / sizeof *OP_NAMES && !str_eq(op, OP_NAMES[k]);
             k++)
            ;
        if (!op || k == sizeof OP_NAMES / sizeof *OP_NAMES || (k == DC_OP_INPUT) != (i == 0) ||
            !is_array(ins) || arr_len(ins) != OP_INPUTS[k] || !is_object(attrs))
            return fail(f, DC_E_HEADER, "graph node %zu: not an operation [op, inputs, "
                        "attributes] this reader runs", i);
        nd->op = (dc_op)k;
        for (x = arr_first(ins); x; x = arr_next(x)) {
            uint64_t v;
            if (!json_int(x, 0, i ? i - 1 : 0, &v) || i == 0)
                return fail(f, DC_E_HEADER, "graph node %zu: an input that is not an earlier "
                            "node", i);
            nd->in[j++] = (uint32_t)v;
        }
        if (!graph_attrs(f, attrs, nd))
            return fail(f, DC_E_HEADER, "graph node %zu: %s attributes that do not fit it",
                        i, OP_NAMES[k]);
    }
    f->ngraph = n;
    return DC_OK;
}

static dc_status read_header(dc_file *f, const char *text, size_t n, uint64_t blocks[3])
{
    const char *why = json_check(text, n), *h = ws(text), *state = NULL, *s, *e;
    const char *top[H_KEYS];
    size_t i, names = 0;
    dc_status st;
    if (why)
        return fail(f, DC_E_HEADER, "header is not valid JSON (%s)", why);
    if ((st = check_top(f, h, top)) || (st = read_blocks(f, top[H_BLOCKS], blocks)) ||
        (st = read_layout(f, top, &state)))
        return st;
    f->ntensors = arr_len(state);
    if (f->ntensors != arr_len(top[H_TENSORS]))
        return fail(f, DC_E_HEADER, "%zu tensor entries for the %zu tensors of the state dict",
                    arr_len(top[H_TENSORS]), f->ntensors);
    for (s = arr_first(state); s; s = arr_next(s))
        names += (size_t)(skip_string(arr_first(s)) - arr_first(s)) + 1;
    f->t = mem_array(f, f->ntensors, sizeof *f->t);
    f->names = mem_alloc(f, names);
    if (!f->t || !f->names)
        return no_memory(f);
    memset(f->t, 0, f->ntensors * sizeof *f->t);
    names = 0;
    for (i = 0, s = arr_first(state); s; i++, s = arr_next(s)) {
        struct dc_entry *t = &f->t[i];
        const char *dt = arr_next(arr_first(s));
        t->name = names;
        t->name_len = str_decode(arr_first(s), f->names + names);
        f->names[names + t->name_len] = 0;
        names += t->name_len + 1;
        t->dtype = (uint8_t)dtype_of(dt);
        read_shape(arr_next(dt), t);
    }
    for (i = 0, e = arr_first(top[H_TENSORS]); e; i++, e = arr_next(e))
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
        return fail(f, DC_E_COUNT_MISMATCH, "%s: an empty block for %llu bytes", what,
                    (unsigned long long)want);
    if (len && !want)
        return fail(f, DC_E_COUNT_MISMATCH, "%s: %zu bytes where nothing is stored", what, len);
    if (!len) {
        *out = NULL;
        *n = 0;
        return DC_OK;
    }
    if (want >= SIZE_MAX)
        return no_memory(f);
    if ((st = inflate_block(f, raw, len, (size_t)want, 0, what, out, n)) != DC_OK)
        return st;
    if (*n != want)
        return fail(f, DC_E_COUNT_MISMATCH, "%s: %zu bytes, %llu expected", what, *n,
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
            return fail(f, DC_E_COUNT_MISMATCH, "a code length over %d", MAX_CODE);
    if ((st = side_block(f, f->data + side[1], (size_t)blocks[1], cbs, "codebooks",
                         &f->codebooks, &f->codebooks_len)) ||
        (st = side_block(f, f->data + side[2], (size_t)blocks[2], dense, "dense tensors",
                         &f->dense, &f->dense_len)))
        return st;
    return DC_OK;
}

/* --- Huffman streams (docs/FORMAT.md, "Huffman streams") -------------------------------- */

/* The code of lengths[0..n) is usable for `count` symbols in `bytes` bytes. */
static dc_status check_stream(dc_file *f, const uint8_t *lengths, size_t n, uint64_t count,
                              size_t bytes, const char *name, const char *what)
{
    uint32_t kraft = 0;
    unsigned lo = 0, hi = 0;
    size_t s;
    if (count == 0) {
        if (bytes)
            return fail(f, DC_E_COUNT_MISMATCH, "%s %s: %zu bytes for 0 symbols", name, what,
                        bytes);
        return DC_OK;
    }
    for (s = 0; s < n; s++) {
        unsigned l = lengths[s];
        if (!l)
            continue;
        kraft += 1u << (MAX_CODE - l);       /* at most 4097 * 2^14: no overflow */
        lo = lo && lo < l ? lo : l;
        hi = hi > l ? hi : l;
    }
    if (kraft > 1u << MAX_CODE)
        return fail(f, DC_E_BAD_CODE, "%s %s: Huffman code lengths are over-subscribed (Kraft "
                    "sum above 1)", name, what);
    if (!hi)
        return fail(f, DC_E_BAD_CODE, "%s %s: %llu symbols but an empty code table", name,
                    what, (unsigned long long)count);
    if (count * lo > 8 * (uint64_t)bytes || bytes > (count * hi + 7) / 8)
        return fail(f, DC_E_COUNT_MISMATCH, "%s %s: %zu bytes cannot hold %llu symbols of "
                    "%u..%u bits", name, what, bytes, (unsigned long long)count, lo, hi);
    return DC_OK;
}

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
            return fail(f, DC_E_COUNT_MISMATCH, "%s: %llu non-zeros in %llu entries do not "
                        "fit %u elements", f->names + t->name,
                        (unsigned long long)t->nonzeros, (unsigned long long)t->entries,
                        t->numel);
    }
    for (i = 0; i < f->ntensors; i++) {
        struct dc_entry *t = &f->t[i];
        const char *nm = f->names + t->name;
        if ((t->kind == K_QUANT || t->kind == K_SPARSE) &&
            (st = check_stream(f, f->code_tables + t->gtab, (1u << t->index_bits) + 1,
                               t->entries, t->glen, nm, "gaps")))
            return st;
        if ((t->kind == K_QUANT || t->kind == K_QDENSE) &&
            (st = check_stream(f, f->code_tables + t->wtab, t->k + 1,
                               t->kind == K_QDENSE ? t->numel : t->nonzeros, t->wlen, nm,
                               "weights")))
            return st;
    }
    return DC_OK;
}

/* A stream being decoded: code words most significant bit first, bytes from their most
 * significant bit; bits past the end read as zeros (the end is checked by hs_finish). */
typedef struct {
    const uint8_t *p;
    size_t n, next;                          /* the section; the next byte to load */
    uint64_t buf;                            /* cnt unread bits, from bit 63 down */
    unsigned cnt, fast_bits, max_len;
    uint64_t pos;                            /* bits read */
    uint16_t count[MAX_CODE + 1];            /* code words per length */
    uint16_t first[MAX_CODE + 1];            /* index in sorted of each length's first */
    uint32_t *fast;                          /* 2^fast_bits: symbol | length << 16; 0: slow */
    uint16_t *sorted;                        /* used symbols by (length, symbol) */
} hstream;

static dc_status hs_init(dc_file *f, hstream *h, const uint8_t *lengths, size_t alphabet,
                         const uint8_t *p, size_t n)
{
    uint16_t next[MAX_CODE + 2], code[MAX_CODE + 1];
    unsigned l;
    size_t s, used = 0;
    memset(h, 0, sizeof *h);
    h->p = p;
    h->n = n;
    for (s = 0; s < alphabet; s++)
        if (lengths[s]) {
            h->count[lengths[s]]++;
            used++;
            if (lengths[s] > h->max_len)
                h->max_len = lengths[s];
        }
    h->fast_bits = h->max_len < FAST_BITS ? h->max_len : FAST_BITS;
    h->fast = mem_array(f, (size_t)1 << h->fast_bits, sizeof *h->fast);
    h->sorted = mem_array(f, used, sizeof *h->sorted);
    if (!h->fast || !h->sorted)
        return no_memory(f);
    memset(h->fast, 0, ((size_t)1 << h->fast_bits) * sizeof *h->fast);
    next[1] = 0;
    code[0] = 0;
    for (l = 1; l <= MAX_CODE; l++) {        /* canonical codes: RFC 1951 3.2.2 */
        h->first[l] = next[l];
        next[l + 1] = (uint16_t)(next[l] + h->count[l]);
        code[l] = (uint16_t)(((unsigned)code[l - 1] + h->count[l - 1]) << 1);
    }
    for (s = 0; s < alphabet; s++) {
        unsigned len = lengths[s];
        if (!len)
            continue;
        h->sorted[next[len]++] = (uint16_t)s;
        if (len <= h->fast_bits) {
            uint32_t at = (uint32_t)code[len] << (h->fast_bits - len), k;
            for (k = 0; k < 1u << (h->fast_bits - len); k++)
                h->fast[at + k] = (uint32_t)s | (uint32_t)len << 16;
        }
        code[len]++;
    }
    return DC_OK;
}

static void hs_free(dc_file *f, hstream *h)
{
    mem_free(f, h->fast);
    mem_free(f, h->sorted);
    h->fast = NULL;
    h->sorted = NULL;
}

static void hs_fill(hstream *h)
{
    while (h->cnt <= 56) {
        uint64_t b = h->next < h->n ? h->p[h->next] : 0;
        h->next++;
        h->buf |= b << (56 - h->cnt);
        h->cnt += 8;
    }
}

/* The next symbol, or -1 for a code word no symbol has (or -2 when the stream has ended). */
static long hs_decode(hstream *h)
{
    uint32_t e;
    unsigned len;
    long sym;
    if (h->pos >= 8 * (uint64_t)h->n)
        return -2;
    if (h->cnt < MAX_CODE)
        hs_fill(h);
    e = h->fast[h->buf >> (64 - h->fast_bits)];
    if (e) {
        len = e >> 16;
        sym = (long)(e & 0xffff);
    } else {                                 /* longer than fast_bits: canonical, bitwise */
        uint32_t w = (uint32_t)(h->buf >> (64 - MAX_CODE));
        long c = 0, first = 0;
        for (len = 1;; len++) {
            if (len > h->max_len)
                return -1;
            c |= (long)(w >> (MAX_CODE - len) & 1);
            if (c - first < h->count[len]) {
                sym = h->sorted[h->first[len] + (c - first)];
                break;
            }
            first = (first + h->count[len]) << 1;
            c <<= 1;
        }
    }
    h->buf <<= len;
    h->cnt -= len;
    h->pos += len;
    return sym;
}

static dc_status hs_error(dc_file *f, const hstream *h, long sym, uint64_t done, uint64_t count,
                          const char *name, const char *what)
{
    if (sym == -1)
        return fail(f, DC_E_BAD_CODE, "%s %s: invalid Huffman code word at bit %llu", name,
                    what, (unsigned long long)h->pos);
    return fail(f, DC_E_COUNT_MISMATCH, "%s %s: the stream holds %llu of %llu symbols", name,
                what, (unsigned long long)done, (unsigned long long)count);
}

/* After the last symbol: it ends in the last byte, and the padding bits are zero. */
static dc_status hs_finish(dc_file *f, const hstream *h, uint64_t count, const char *name,
                           const char *what)
{
    uint64_t nbits = 8 * (uint64_t)h->n;
    if (h->pos > nbits)
        return fail(f, DC_E_COUNT_MISMATCH, "%s %s: the last symbol runs past the end of the "
                    "stream", name, what);
    if (nbits - h->pos >= 8)
        return fail(f, DC_E_COUNT_MISMATCH, "%s %s: %llu bytes left after %llu symbols", name,
                    what, (unsigned long long)((nbits - h->pos) / 8), (unsigned long long)count);
    if (h->pos < nbits && (h->p[h->n - 1] & ((1u << (nbits - h->pos)) - 1)))
        return fail(f, DC_E_BAD_CODE, "%s %s: padding bits after the last symbol are not zero",
                    name, what);
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
        return fail(f, DC_E_COUNT_MISMATCH, "%s: bool bytes other than 0 and 1",
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
        long sym = hs_decode(w);
        if (sym < 0)
            return hs_error(f, w, sym, j, t->numel, nm, "weights");
        if ((uint32_t)sym < t->k)             /* symbol k: no cluster, 0.0, left as it is */
            emit(out, j / out->cols, j % out->cols, (uint32_t)sym, cb[sym]);
    }
    return hs_finish(f, w, t->numel, nm, "weights");
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
        sym = hs_decode(g);
        if (sym < 0)
            return hs_error(f, g, sym, e, t->entries, nm, "gaps");
        if ((uint64_t)sym == span) {         /* a filler: span positions, no weight */
            at += span;
            continue;
        }
        pos = at + (uint64_t)sym;
        at = pos + 1;
        if (pos >= t->numel)
            return fail(f, DC_E_COUNT_MISMATCH, "%s: a position beyond the %u elements", nm,
                        t->numel);
        if (nz == t->nonzeros)
            return fail(f, DC_E_COUNT_MISMATCH, "%s: the gap stream holds more than the %llu "
                        "non-zeros of the header", nm, (unsigned long long)t->nonzeros);
        if (values) {
            v = (uint32_t)le(values + 4 * nz, 4);
            symbol = UINT32_MAX;
        } else {
            long s = hs_decode(w);
            if (s < 0)
                return hs_error(f, w, s, nz, t->nonzeros, nm, "weights");
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
        return fail(f, DC_E_COUNT_MISMATCH, "%s: the gap stream holds %llu non-zeros%s, the "
                    "header says %llu", nm, (unsigned long long)nz,
                    t->entries && (uint64_t)sym == span ? " and ends with a filler" : "",
                    (unsigned long long)t->nonzeros);
    if ((st = hs_finish(f, g, t->entries, nm, "gaps")) != DC_OK)
        return st;
    return w ? hs_finish(f, w, t->nonzeros, nm, "weights") : DC_OK;
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
        st = hs_init(f, &g, f->code_tables + t->gtab, ((size_t)1 << t->index_bits) + 1,
                     f->data + t->gsec, t->glen);
    if (weights && st == DC_OK) {
        st = hs_init(f, &w, f->code_tables + t->wtab, (size_t)t->k + 1, f->data + t->wsec,
                     t->wlen);
        cb = mem_array(f, (size_t)t->k + 1, sizeof *cb);
        if (st == DC_OK && !cb)
            st = no_memory(f);
        if (st == DC_OK)
            read_codebook(t, t->k ? f->codebooks + t->cb : NULL, cb);
    }
    if (st == DC_OK && t->kind == K_QDENSE && weights)
        st = decode_quantized_dense(f, t, out, cb, &w);
    else if (st == DC_OK && t->kind != K_QDENSE && gaps)
        st = decode_sparse(f, t, out, cb, &g, t->kind == K_QUANT ? &w : NULL);
    hs_free(f, &g);
    hs_free(f, &w);
    mem_free(f, cb);
    return st;
}

/* --- the API ---------------------------------------------------------------------------- */

static void release(dc_file *f)
{
    mem_free(f, f->t);
    mem_free(f, f->names);
    mem_free(f, f->code_tables);
    mem_free(f, f->codebooks);
    mem_free(f, f->dense);
    mem_free(f, f->graph);
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
        return fail(f, DC_E_BAD_MAGIC, "not a .dc file (it does not start with DEEPCOMP)");
    if (len < 12)
        return fail(f, DC_E_TRUNCATED, "%zu bytes, shorter than the 12-byte version", len);
    major = (unsigned)le(buf + 8, 2);
    f->minor = (unsigned)le(buf + 10, 2);
    if (major == 1)
        return fail(f, DC_E_UNSUPPORTED_VERSION, "format version 1.%u, which this reader does "
                    "not read; write it again as version 2 with deepcomp encode OLD.dc -o "
                    "NEW.dc", f->minor);
    if (major != 2)
        return fail(f, DC_E_UNSUPPORTED_VERSION, "format version %u.%u; this reader knows "
                    "version 2", major, f->minor);
    if (len < PREFIX)
        return fail(f, DC_E_TRUNCATED, "%zu bytes, shorter than the %d-byte prefix", len,
                    PREFIX);
    hlen = le(buf + 12, 4);
    dlen = le(buf + 16, 8);
    if (hlen > MAX_HEADER)
        return fail(f, DC_E_HEADER_TOO_LARGE, "header of %llu bytes exceeds the %zu-byte cap",
                    (unsigned long long)hlen, MAX_HEADER);
    if (len < PREFIX + TRAILER || dlen > len || len - PREFIX - TRAILER < hlen + dlen)
        return fail(f, DC_E_TRUNCATED, "%zu bytes, the prefix declares %llu", len,
                    (unsigned long long)(dlen > UINT64_MAX - PREFIX - TRAILER - hlen
                                         ? UINT64_MAX : PREFIX + TRAILER + hlen + dlen));
    if (len - PREFIX - TRAILER > hlen + dlen)
        return fail(f, DC_E_INVALID_OFFSET, "%llu trailing bytes after the declared end",
                    (unsigned long long)(len - PREFIX - TRAILER - hlen - dlen));
    if (dc_crc32(0, buf, len - TRAILER) != le(buf + len - TRAILER, 4))
        return fail(f, DC_E_CHECKSUM, "file checksum mismatch (the file is damaged)");
    f->data = buf + PREFIX + hlen;
    f->data_len = (size_t)dlen;
    f->file_len = len;
    cap = DC_HEADER_BASE + DC_HEADER_RATIO * (size_t)hlen;
    if ((st = inflate_block(f, buf + PREFIX, (size_t)hlen, SIZE_MAX,
                            cap < MAX_HEADER ? cap : MAX_HEADER, "header", &text, &n)) != DC_OK)
        return st;
    st = read_header(f, (const char *)text, n, blocks);
    mem_free(f, text);
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
        return fail(f, DC_E_ARGUMENT, "dc_open: a NULL buffer or an allocator without free");
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
        return fail(f, DC_E_ARGUMENT, "dc_decode_tensor: no tensor %zu (the file holds %zu)",
                    i, f->ntensors);
    t = &f->t[i];
    if (out_len < t->numel || (!out && t->numel))
        return fail(f, DC_E_ARGUMENT, "dc_decode_tensor: %s needs %u floats, the buffer holds "
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
        return fail(f, DC_E_ARGUMENT, "dc_visit_tensor: no tensor %zu or no visitor", i);
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
        return fail(f, DC_E_ARGUMENT, "dc_codebook: tensor %zu is not quantized or the buffer "
                    "is too small", i);
    t = &f->t[i];
    cb = mem_array(f, (size_t)t->k + 1, sizeof *cb);
    if (!cb)
        return no_memory(f);
    read_codebook(t, t->k ? f->codebooks + t->cb : NULL, cb);
    memcpy(out, cb, (size_t)t->k * sizeof *out);
    mem_free(f, cb);
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
