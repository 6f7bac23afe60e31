/* crc.c: CRC32 (ISO-HDLC, reflected polynomial 0xEDB88320), four bits at a time: the
 * checksum that ends every .dc file (docs/FORMAT.md), and the API's dc_crc32 (dc.h). */
#include "crc.h"

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
