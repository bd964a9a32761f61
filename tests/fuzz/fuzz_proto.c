/*
 * fuzz_proto.c: libFuzzer harness for the proto/ decoders (F1). Built once
 * per decoder with TML_FUZZ_TARGET set (see CMakeLists.txt):
 *   0 hello  1 state  2 tele  3 sample  4 ota_up  5 ack  6 ota_down  7 cmd
 *   8 manifest  9 cose  10 topic  11 cbor (generic skip + pull walk)
 * Besides "no crash, no UB" (ASan/UBSan), every input a decoder accepts
 * must re-encode, and the re-encoding must decode and re-encode to the same
 * bytes: accepted input is always something our encoder can produce, or
 * (tele) a version 1 map, which re-encodes as the never longer version 2.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tml/proto.h"

#ifndef TML_FUZZ_TARGET
#error "define TML_FUZZ_TARGET"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t enc1[TML_MAX_MESSAGE];
static uint8_t enc2[TML_MAX_MESSAGE];

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            abort();                                                           \
        }                                                                      \
    } while (0)

#define ROUND_TRIP(name)                                                       \
    do {                                                                       \
        struct tml_##name m, m2;                                               \
        size_t l1 = 0, l2 = 0;                                                 \
        enum tml_err err = tml_##name##_decode(data, size, &m);                \
        CHECK(err < TML_ERR__COUNT);                                           \
        if (err == TML_OK) {                                                   \
            CHECK(tml_##name##_encode(&m, enc1, sizeof enc1, &l1) == TML_OK);  \
            CHECK(l1 <= size);                                                 \
            CHECK(tml_##name##_decode(enc1, l1, &m2) == TML_OK);               \
            CHECK(tml_##name##_encode(&m2, enc2, sizeof enc2, &l2) == TML_OK); \
            CHECK(l1 == l2 && memcmp(enc1, enc2, l1) == 0);                    \
        }                                                                      \
    } while (0)

static void
fuzz_cose(const uint8_t *data, size_t size)
{
    struct tml_cose_sign1 c;
    enum tml_err err = tml_cose_sign1_decode(data, size, &c);
    size_t len = 0;

    CHECK(err < TML_ERR__COUNT);
    if (err != TML_OK) {
        return;
    }
    CHECK(c.alg == TML_COSE_ALG_ES256);
    CHECK(c.signature.len == TML_ES256_SIG_LEN);
    CHECK(c.kid.len >= 1 && c.kid.len <= TML_MAX_KID);
    CHECK(tml_cose_sig_structure(&c.protected_hdr, &c.payload, enc1,
                                 sizeof enc1, &len) == TML_OK);
    CHECK(tml_cose_sign1_encode(c.kid.p, c.kid.len, c.payload.p,
                                c.payload.len, c.signature.p, enc2,
                                sizeof enc2, &len) == TML_OK);
    CHECK(tml_cose_sign1_decode(enc2, len, &c) == TML_OK);
}

static void
fuzz_topic(const uint8_t *data, size_t size)
{
    struct tml_topic t;
    char buf[TML_MAX_TOPIC + 1];
    size_t len = 0;
    enum tml_err err = tml_topic_parse((const char *)data, size, &t);

    CHECK(err == TML_OK || err == TML_ERR_TOPIC || data == NULL);
    if (err != TML_OK) {
        return;
    }
    CHECK(tml_device_id_valid(t.dev.p, t.dev.len));
    CHECK(tml_topic_build(buf, sizeof buf, t.dev.p, t.dev.len, t.dir, t.kind,
                          &len) == TML_OK);
    CHECK(len == size && memcmp(buf, data, size) == 0);
}

/* Walks any input with the pull API: peeks, reads by type, descends into
 * containers (within the depth limit) and skips what it cannot read. */
static void
fuzz_cbor(const uint8_t *data, size_t size)
{
    struct tml_dec d, d2;
    size_t steps = 0;

    tml_dec_init(&d2, data, size);
    if (tml_dec_skip(&d2) == TML_OK) {
        CHECK(d2.depth == 0);
        CHECK(d2.p <= d2.end);
    }
    tml_dec_init(&d, data, size);
    while (steps++ < 4096) {
        enum tml_err err = TML_OK;
        uint64_t u;
        int64_t i;
        struct tml_bin b;
        struct tml_str s;
        size_t n;
        bool v;

        switch (tml_dec_peek(&d)) {
        case TML_CBOR_UINT:
            err = tml_dec_uint(&d, &u);
            break;
        case TML_CBOR_NINT:
            err = tml_dec_int(&d, &i);
            break;
        case TML_CBOR_BYTES:
            err = tml_dec_bytes(&d, &b);
            if (err == TML_OK) {
                CHECK(b.p >= data && b.p + b.len <= data + size);
            }
            break;
        case TML_CBOR_TEXT:
            err = tml_dec_text(&d, &s);
            break;
        case TML_CBOR_ARRAY:
            err = tml_dec_array(&d, &n);
            CHECK(d.depth <= TML_CBOR_MAX_DEPTH);
            break;
        case TML_CBOR_MAP:
            err = tml_dec_map(&d, &n);
            CHECK(d.depth <= TML_CBOR_MAX_DEPTH);
            break;
        case TML_CBOR_TAG:
            err = tml_dec_tag(&d, &u);
            break;
        case TML_CBOR_SIMPLE:
            err = tml_dec_bool(&d, &v);
            if (err != TML_OK) {
                err = tml_dec_null(&d);
            }
            break;
        case TML_CBOR_END:
            CHECK(tml_dec_finish(&d) == TML_OK);
            return;
        }
        if (err != TML_OK) {
            const uint8_t *before = d.p;

            CHECK(err < TML_ERR__COUNT);
            err = tml_dec_skip(&d);
            if (err != TML_OK) {
                CHECK(d.p == before); /* failed calls consume nothing */
                return;
            }
        }
        CHECK(d.p <= d.end);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    switch (TML_FUZZ_TARGET) {
    case 0:
        ROUND_TRIP(hello);
        break;
    case 1:
        ROUND_TRIP(state);
        break;
    case 2:
        ROUND_TRIP(tele);
        break;
    case 3:
        ROUND_TRIP(sample);
        break;
    case 4:
        ROUND_TRIP(ota_up);
        break;
    case 5:
        ROUND_TRIP(ack);
        break;
    case 6:
        ROUND_TRIP(ota_down);
        break;
    case 7:
        ROUND_TRIP(cmd);
        break;
    case 8:
        ROUND_TRIP(manifest);
        break;
    case 9:
        fuzz_cose(data, size);
        break;
    case 10:
        fuzz_topic(data, size);
        break;
    default:
        fuzz_cbor(data, size);
        break;
    }
    return 0;
}
