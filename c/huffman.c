/* huffman.c: the canonical Huffman streams of a tensor (docs/FORMAT.md, "Huffman streams"):
 * a code table checked against its counts, and a stream decoded symbol by symbol, checked to
 * its last bit (huffman.h). Its tables and messages are the reader's (dc.c). */
#include "huffman.h"

#include <string.h>

#define FAST_BITS 10                     /* a stream's lookup table: 2^10 entries */

/* The code of lengths[0..n) is usable for `count` symbols in `bytes` bytes. */
dc_status dci_check_stream(dc_file *f, const uint8_t *lengths, size_t n, uint64_t count,
                           size_t bytes, const char *name, const char *what)
{
    uint32_t kraft = 0;
    unsigned lo = 0, hi = 0;
    size_t s;
    if (count == 0) {
        if (bytes)
            return dci_fail(f, DC_E_COUNT_MISMATCH, "%s %s: %zu bytes for 0 symbols", name, what,
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
        return dci_fail(f, DC_E_BAD_CODE, "%s %s: Huffman code lengths are over-subscribed (Kraft "
                        "sum above 1)", name, what);
    if (!hi)
        return dci_fail(f, DC_E_BAD_CODE, "%s %s: %llu symbols but an empty code table", name,
                        what, (unsigned long long)count);
    if (count * lo > 8 * (uint64_t)bytes || bytes > (count * hi + 7) / 8)
        return dci_fail(f, DC_E_COUNT_MISMATCH, "%s %s: %zu bytes cannot hold %llu symbols of "
                        "%u..%u bits", name, what, bytes, (unsigned long long)count, lo, hi);
    return DC_OK;
}

dc_status dci_hs_init(dc_file *f, hstream *h, const uint8_t *lengths, size_t alphabet,
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
    h->fast = dci_mem_array(f, (size_t)1 << h->fast_bits, sizeof *h->fast);
    h->sorted = dci_mem_array(f, used, sizeof *h->sorted);
    if (!h->fast || !h->sorted)
        return dci_no_memory(f);
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

void dci_hs_free(dc_file *f, hstream *h)
{
    dci_mem_free(f, h->fast);
    dci_mem_free(f, h->sorted);
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
long dci_hs_decode(hstream *h)
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

dc_status dci_hs_error(dc_file *f, const hstream *h, long sym, uint64_t done, uint64_t count,
                       const char *name, const char *what)
{
    if (sym == -1)
        return dci_fail(f, DC_E_BAD_CODE, "%s %s: invalid Huffman code word at bit %llu", name,
                        what, (unsigned long long)h->pos);
    return dci_fail(f, DC_E_COUNT_MISMATCH, "%s %s: the stream holds %llu of %llu symbols", name,
                    what, (unsigned long long)done, (unsigned long long)count);
}

/* After the last symbol: it ends in the last byte, and the padding bits are zero. */
dc_status dci_hs_finish(dc_file *f, const hstream *h, uint64_t count, const char *name,
                        const char *what)
{
    uint64_t nbits = 8 * (uint64_t)h->n;
    if (h->pos > nbits)
        return dci_fail(f, DC_E_COUNT_MISMATCH, "%s %s: the last symbol runs past the end of the "
                        "stream", name, what);
    if (nbits - h->pos >= 8)
        return dci_fail(f, DC_E_COUNT_MISMATCH, "%s %s: %llu bytes left after %llu symbols", name,
                        what, (unsigned long long)((nbits - h->pos) / 8),
                        (unsigned long long)count);
    if (h->pos < nbits && (h->p[h->n - 1] & ((1u << (nbits - h->pos)) - 1)))
        return dci_fail(f, DC_E_BAD_CODE, "%s %s: padding bits after the last symbol are not zero",
                        name, what);
    return DC_OK;
}
