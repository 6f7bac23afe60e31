/* inflate.h: raw DEFLATE (RFC 1951; inflate.c), which the reader (dc.c) inflates the header
 * and the side blocks with, and dci_le, the little-endian integers of DEFLATE and of the file. */
#ifndef DC_INFLATE_H
#define DC_INFLATE_H

#include <stddef.h>
#include <stdint.h>

/* dci_inflate_raw's results: inflated; not valid DEFLATE (*why says why); the stream ends early;
 * it inflates past cap; bytes follow its end. */
enum { INF_OK, INF_BAD, INF_TRUNCATED, INF_TOO_LARGE, INF_TRAILING };

/* Inflate in[0..len), exactly one DEFLATE stream, into out[0..cap); *n: the bytes written. */
int dci_inflate_raw(const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *n,
                    const char **why);

/* The n-byte (at most 8) little-endian integer at p. */
uint64_t dci_le(const uint8_t *p, unsigned n);

#endif
