/* inflate.c: raw DEFLATE (RFC 1951), the reader's inflater of the header and the side
 * blocks (inflate.h), and dci_le, the little-endian integers of DEFLATE and of the .dc file.
 *
 * Codes must be complete, except a literal/length or distance code of a single 1-bit code
 * word and a distance code with none; at most 286 literal/length and 30 distance codes; a
 * stream ends exactly at the end of its bytes. That is what zlib accepts (docs/FORMAT.md).
 */
#include "inflate.h"

#include <string.h>

#define MAX_CODE 15                      /* longest code of DEFLATE */

uint64_t dci_le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    while (n--)
        v = v << 8 | p[n];
    return v;
}

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
    len = (size_t)dci_le(s->in + s->in_pos, 2);
    if (len != (~dci_le(s->in + s->in_pos + 2, 2) & 0xffff)) {
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
int dci_inflate_raw(const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *n,
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
