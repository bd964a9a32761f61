/*
 * upstream_fuzz_tele_line: upstream's CBOR summary -> NDJSON line writer
 * (daemon/upstream_body.c) on arbitrary stored bodies and device names. The
 * oracle: the line is one valid JSON object ending in '\n' (cJSON parses it
 * back, "id" survives), or the buffer cap was hit and nothing was written;
 * the result also gzips. Input: byte 0 = cap selector, bytes 1..16 = device
 * name, the rest = the stored CBOR body. Seeds: corpus/.
 */
#include <stdlib.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "upstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Checked in every build type (CHECK() vanishes under NDEBUG). */
#define CHECK(c)                                                               \
    do {                                                                       \
        if (!(c))                                                              \
            abort();                                                           \
    } while (0)

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char dev[17];
    struct ubuf b, z;
    size_t cap;
    int rc;

    if (size < 1)
        return 0;
    /* A small cap sometimes, to exercise the E2BIG path mid-line. */
    cap = data[0] < 32 ? (size_t)data[0] * 8 : 1 << 16;
    size_t dn = size - 1 < 16 ? size - 1 : 16;
    memcpy(dev, data + 1, dn);
    dev[dn] = '\0';
    ubuf_init(&b, cap);
    rc = upstream_tele_line(&b, 42, dev, 7, 1764230000, data + 1 + dn,
                            size - 1 - dn);
    if (rc == 0) {
        CHECK(b.len > 0 && b.p[b.len - 1] == '\n');
        cJSON *o = cJSON_ParseWithLength((const char *)b.p, b.len);
        CHECK(o != NULL);
        CHECK(cJSON_GetObjectItem(o, "id")->valueint == 42);
        cJSON_Delete(o);
        ubuf_init(&z, 1 << 20);
        CHECK(upstream_gzip(b.p, b.len, &z) == 0);
        ubuf_free(&z);
    } else {
        CHECK(b.len == 0);
    }
    ubuf_free(&b);
    return 0;
}
