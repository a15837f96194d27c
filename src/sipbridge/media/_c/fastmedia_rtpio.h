/* The RTP fixed header (RFC 3550 5.1) as sipbridge.media.rtp.parse_rtp reads it, for
 * the compiled packet I/O (and any module that parses RTP in C). */
#ifndef FASTMEDIA_RTPIO_H
#define FASTMEDIA_RTPIO_H

#include <stddef.h>
#include <stdint.h>

enum rtp_status {
    RTP_OK = 0,
    RTP_SHORT,     /* fewer than 12 octets */
    RTP_VERSION,   /* V is not 2 */
    RTP_TRUNCATED, /* CSRC list or header extension past the end */
    RTP_PADDING,   /* P set with a padding count of 0 or past the header */
};

struct rtp_header {
    uint8_t payload_type;
    uint8_t marker;
    uint8_t csrc_count;
    uint16_t sequence;
    uint32_t timestamp;
    uint32_t ssrc;
    size_t payload_offset; /* the payload is data[payload_offset:payload_end] */
    size_t payload_end;
};

static inline uint16_t rtpio_be16(const uint8_t *p) {
    return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t rtpio_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* The checks of parse_rtp, in its order; every read is inside data[0:size]. */
static inline enum rtp_status rtpio_parse(const uint8_t *data, size_t size,
                                          struct rtp_header *h) {
    if (size < 12)
        return RTP_SHORT;
    uint8_t first = data[0];
    if (first >> 6 != 2)
        return RTP_VERSION;
    size_t offset = 12;
    h->csrc_count = first & 0x0F;
    if (h->csrc_count) {
        offset += 4u * h->csrc_count;
        if (offset > size)
            return RTP_TRUNCATED;
    }
    if (first & 0x10) {
        if (offset + 4 > size)
            return RTP_TRUNCATED;
        offset += 4 + 4 * (size_t)rtpio_be16(data + offset + 2);
        if (offset > size)
            return RTP_TRUNCATED;
    }
    size_t end = size;
    if (first & 0x20) {
        uint8_t padding = data[size - 1];
        if (padding == 0 || padding > size - offset)
            return RTP_PADDING;
        end -= padding;
    }
    h->payload_type = data[1] & 0x7F;
    h->marker = data[1] > 0x7F;
    h->sequence = rtpio_be16(data + 2);
    h->timestamp = rtpio_be32(data + 4);
    h->ssrc = rtpio_be32(data + 8);
    h->payload_offset = offset;
    h->payload_end = end;
    return RTP_OK;
}

#endif
