/* The C reader's raw DEFLATE inflater alone, for tests/test_c_reader.py, which compares it
 * with zlib on many streams: built with `-I c` and including dc.c itself (the rest of the
 * reader linked).
 *
 * stdin: records of [cap u32][len u32][len bytes]; stdout, per record: [status u8][n u32]
 * [n bytes when status is 0]. Status: 0 inflated, 1 invalid, 2 truncated, 3 past cap,
 * 4 bytes after the end (inflate.h's INF_* codes).
 */
#include "dc.c"

static int get_u32(uint32_t *v)
{
    uint8_t b[4];
    if (fread(b, 1, 4, stdin) != 4)
        return 0;
    *v = (uint32_t)dci_le(b, 4);
    return 1;
}

static void put_u32(uint32_t v)
{
    uint8_t b[4];
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
    b[2] = (uint8_t)(v >> 16);
    b[3] = (uint8_t)(v >> 24);
    fwrite(b, 1, 4, stdout);
}

int main(void)
{
    uint32_t cap, len;
    while (get_u32(&cap) && get_u32(&len)) {
        uint8_t *in = malloc(len ? len : 1), *out = malloc((size_t)cap + 1);
        const char *why;
        size_t n;
        int r;
        if (!in || !out || fread(in, 1, len, stdin) != len)
            return 1;
        r = dci_inflate_raw(in, len, out, cap, &n, &why);
        putchar(r);
        put_u32((uint32_t)n);
        if (r == INF_OK)
            fwrite(out, 1, n, stdout);
        free(in);
        free(out);
    }
    return 0;
}
