/* huffman.h: the canonical Huffman streams of a tensor (huffman.c; docs/FORMAT.md, "Huffman
 * streams"), which the reader (dc.c) checks when it opens a file and decodes tensors with;
 * and what huffman.c takes from the reader: its allocator and its error message. */
#ifndef DC_HUFFMAN_H
#define DC_HUFFMAN_H

#include "dc.h"

#define MAX_CODE 15                      /* longest Huffman code of a stream */

/* A stream being decoded: code words most significant bit first, bytes from their most
 * significant bit; bits past the end read as zeros (the end is checked by dci_hs_finish). */
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

/* The code of lengths[0..n) is usable for `count` symbols in `bytes` bytes; else the status,
 * with name and what in the message. */
dc_status dci_check_stream(dc_file *f, const uint8_t *lengths, size_t n, uint64_t count,
                           size_t bytes, const char *name, const char *what);

/* Decoding the stream p[0..n) of the code of lengths[0..alphabet): dci_hs_init allocates its
 * tables, dci_hs_free frees them (also after a failed dci_hs_init). dci_hs_decode: the next
 * symbol, or -1 for a code word no symbol has (-2 when the stream has ended), which
 * dci_hs_error reports; dci_hs_finish checks the stream's end after its last symbol. */
dc_status dci_hs_init(dc_file *f, hstream *h, const uint8_t *lengths, size_t alphabet,
                      const uint8_t *p, size_t n);
void dci_hs_free(dc_file *f, hstream *h);
long dci_hs_decode(hstream *h);
dc_status dci_hs_error(dc_file *f, const hstream *h, long sym, uint64_t done, uint64_t count,
                       const char *name, const char *what);
dc_status dci_hs_finish(dc_file *f, const hstream *h, uint64_t count, const char *name,
                        const char *what);

/* The reader's (dc.c): memory from the file's allocator (dci_mem_array: NULL when count * size
 * overflows), and a failure: the status, recorded with its message. */
void *dci_mem_array(const dc_file *f, size_t count, size_t size);
void dci_mem_free(const dc_file *f, void *p);
dc_status dci_fail(dc_file *f, dc_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
dc_status dci_no_memory(dc_file *f);

#endif
