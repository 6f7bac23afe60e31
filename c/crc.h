/* crc.h: CRC32 (crc.c), the checksum of a whole .dc file. dc_crc32 is part of the API too,
 * declared the same in dc.h. */
#ifndef DC_CRC_H
#define DC_CRC_H

#include <stddef.h>
#include <stdint.h>

/* CRC32 (ISO-HDLC, as zlib.crc32): crc = dc_crc32(0, data, n), and on from there. */
uint32_t dc_crc32(uint32_t crc, const void *data, size_t n);

#endif
