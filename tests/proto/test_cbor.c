/*
 * test_cbor.c: the CBOR core against the RFC 8949 Appendix A examples for
 * the subset the protocol uses, and the F2 malformed-CBOR catalogue at the
 * item level (indefinite lengths, deep nesting, 2^64-1 length claims,
 * truncation, non-shortest arguments, tags/floats/simple values).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tml/proto.h"

/* Hex string to bytes; returns the length. */
static size_t
unhex(const char *hex, uint8_t *out)
{
    size_t n = 0;

    while (hex[0] != '\0' && hex[1] != '\0') {
        char t[3] = {hex[0], hex[1], '\0'};

        out[n++] = (uint8_t)strtoul(t, NULL, 16);
        hex += 2;
    }
    return n;
}

struct uint_vec {
    uint64_t v;
    const char *hex;
};

/* RFC 8949 Appendix A, unsigned integers. */
static const struct uint_vec uints[] = {
    {0, "00"},
    {1, "01"},
    {10, "0a"},
    {23, "17"},
    {24, "1818"},
    {25, "1819"},
    {100, "1864"},
    {255, "18ff"},
    {256, "190100"},
    {1000, "1903e8"},
    {65535, "19ffff"},
    {65536, "1a00010000"},
    {1000000, "1a000f4240"},
    {4294967295ull, "1affffffff"},
    {4294967296ull, "1b0000000100000000"},
    {1000000000000ull, "1b000000e8d4a51000"},
    {18446744073709551615ull, "1bffffffffffffffff"},
};

struct int_vec {
    int64_t v;
    const char *hex;
};

static const struct int_vec ints[] = {
    {-1, "20"},       {-10, "29"},     {-100, "3863"},
    {-1000, "3903e7"}, {0, "00"},      {INT64_MIN, "3b7fffffffffffffff"},
    {INT64_MAX, "1b7fffffffffffffff"},
};

static void
test_uint_vectors_encode_and_decode(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof uints / sizeof uints[0]; i++) {
        uint8_t want[16], got[16];
        size_t n = unhex(uints[i].hex, want), len = 0;
        struct tml_enc e;
        struct tml_dec d;
        uint64_t v = 0;

        tml_enc_init(&e, got, sizeof got);
        tml_enc_uint(&e, uints[i].v);
        assert_int_equal(tml_enc_finish(&e, &len), TML_OK);
        assert_int_equal(len, n);
        assert_memory_equal(got, want, n);
        tml_dec_init(&d, want, n);
        assert_int_equal(tml_dec_peek(&d), TML_CBOR_UINT);
        assert_int_equal(tml_dec_uint(&d, &v), TML_OK);
        assert_true(v == uints[i].v);
        assert_int_equal(tml_dec_finish(&d), TML_OK);
    }
}

static void
test_int_vectors_encode_and_decode(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        uint8_t want[16], got[16];
        size_t n = unhex(ints[i].hex, want), len = 0;
        struct tml_enc e;
        struct tml_dec d;
        int64_t v = 0;

        tml_enc_init(&e, got, sizeof got);
        tml_enc_int(&e, ints[i].v);
        assert_int_equal(tml_enc_finish(&e, &len), TML_OK);
        assert_int_equal(len, n);
        assert_memory_equal(got, want, n);
        tml_dec_init(&d, want, n);
        assert_int_equal(tml_dec_int(&d, &v), TML_OK);
        assert_true(v == ints[i].v);
        assert_int_equal(tml_dec_finish(&d), TML_OK);
    }
}

static void
test_int_outside_int64_is_range(void **state)
{
    uint8_t b[16];
    size_t n;
    struct tml_dec d;
    int64_t v = 0;

    (void)state;
    /* -18446744073709551616 and 18446744073709551615 (RFC 8949 App. A). */
    n = unhex("3bffffffffffffffff", b);
    tml_dec_init(&d, b, n);
    assert_int_equal(tml_dec_int(&d, &v), TML_ERR_RANGE);
    assert_int_equal(tml_dec_skip(&d), TML_OK); /* well-formed, though */
    n = unhex("1bffffffffffffffff", b);
    tml_dec_init(&d, b, n);
    assert_int_equal(tml_dec_int(&d, &v), TML_ERR_RANGE);
}

static void
test_simple_and_string_vectors(void **state)
{
    uint8_t b[64], got[64];
    size_t n, len;
    struct tml_enc e;
    struct tml_dec d;
    struct tml_bin bin;
    struct tml_str s;
    bool v;

    (void)state;
    tml_enc_init(&e, got, sizeof got);
    tml_enc_bool(&e, false);
    tml_enc_bool(&e, true);
    tml_enc_null(&e);
    tml_enc_bytes(&e, NULL, 0);
    tml_enc_bytes(&e, "\x01\x02\x03\x04", 4);
    tml_enc_text(&e, "", 0);
    tml_enc_text(&e, "a", 1);
    tml_enc_text(&e, "IETF", 4);
    tml_enc_text(&e, "\"\\", 2);
    tml_enc_text(&e, "\xc3\xbc", 2);
    tml_enc_text(&e, "\xe6\xb0\xb4", 3);
    tml_enc_text(&e, "\xf0\x90\x85\x91", 4);
    assert_int_equal(tml_enc_finish(&e, &len), TML_OK);
    n = unhex("f4f5f6404401020304606161644945544662225c62c3bc63e6b0b464f0908591",
              b);
    assert_int_equal(len, n);
    assert_memory_equal(got, b, n);

    tml_dec_init(&d, b, n);
    assert_int_equal(tml_dec_bool(&d, &v), TML_OK);
    assert_false(v);
    assert_int_equal(tml_dec_bool(&d, &v), TML_OK);
    assert_true(v);
    assert_int_equal(tml_dec_null(&d), TML_OK);
    assert_int_equal(tml_dec_bytes(&d, &bin), TML_OK);
    assert_int_equal(bin.len, 0);
    assert_int_equal(tml_dec_bytes(&d, &bin), TML_OK);
    assert_int_equal(bin.len, 4);
    assert_memory_equal(bin.p, "\x01\x02\x03\x04", 4);
    assert_int_equal(tml_dec_text(&d, &s), TML_OK);
    assert_int_equal(s.len, 0);
    assert_int_equal(tml_dec_text(&d, &s), TML_OK);
    assert_memory_equal(s.p, "a", 1);
    assert_int_equal(tml_dec_text(&d, &s), TML_OK);
    assert_memory_equal(s.p, "IETF", 4);
    assert_int_equal(tml_dec_text(&d, &s), TML_OK);
    assert_int_equal(tml_dec_text(&d, &s), TML_OK);
    assert_int_equal(tml_dec_text(&d, &s), TML_OK);
    assert_int_equal(tml_dec_text(&d, &s), TML_OK);
    assert_int_equal(s.len, 4);
    assert_int_equal(tml_dec_finish(&d), TML_OK);
}

static void
test_container_vectors(void **state)
{
    /* [] [1,2,3] [1,[2,3],[4,5]] [1..25] {} {1:2,3:4}
     * {"a":1,"b":[2,3]} ["a",{"b":"c"}] {"a":"A",...,"e":"E"} */
    static const char *const vec[] = {
        "80",
        "83010203",
        "8301820203820405",
        "98190102030405060708090a0b0c0d0e0f101112131415161718181819",
        "a0",
        "a201020304",
        "a26161016162820203",
        "826161a161626163",
        "a56161614161626142616361436164614461656145",
    };
    uint8_t b[64], got[64];
    size_t i, n, len, cnt;
    struct tml_enc e;
    struct tml_dec d;
    uint64_t v;

    (void)state;
    for (i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        n = unhex(vec[i], b);
        tml_dec_init(&d, b, n);
        assert_int_equal(tml_dec_skip(&d), TML_OK);
        assert_int_equal(tml_dec_finish(&d), TML_OK);
        assert_int_equal(d.depth, 0);
    }
    /* Encode [1, [2, 3], [4, 5]] and {1: 2, 3: 4}, and [1..25]. */
    tml_enc_init(&e, got, sizeof got);
    tml_enc_array(&e, 3);
    tml_enc_uint(&e, 1);
    tml_enc_array(&e, 2);
    tml_enc_uint(&e, 2);
    tml_enc_uint(&e, 3);
    tml_enc_array(&e, 2);
    tml_enc_uint(&e, 4);
    tml_enc_uint(&e, 5);
    tml_enc_map(&e, 2);
    tml_enc_uint(&e, 1);
    tml_enc_uint(&e, 2);
    tml_enc_uint(&e, 3);
    tml_enc_uint(&e, 4);
    tml_enc_array(&e, 25);
    for (i = 1; i <= 25; i++) {
        tml_enc_uint(&e, i);
    }
    assert_int_equal(tml_enc_finish(&e, &len), TML_OK);
    n = unhex("8301820203820405a20102030498190102030405060708090a0b0c0d0e0f1011"
              "12131415161718181819",
              b);
    assert_int_equal(len, n);
    assert_memory_equal(got, b, n);
    /* Pull-decode the array of 25 with depth tracking. */
    tml_dec_init(&d, b + 13, n - 13);
    assert_int_equal(tml_dec_array(&d, &cnt), TML_OK);
    assert_int_equal(cnt, 25);
    assert_int_equal(d.depth, 1);
    for (i = 1; i <= 25; i++) {
        assert_int_equal(tml_dec_uint(&d, &v), TML_OK);
        assert_int_equal(v, i);
    }
    tml_dec_leave(&d);
    assert_int_equal(d.depth, 0);
    assert_int_equal(tml_dec_finish(&d), TML_OK);
}

/* Items of RFC 8949 Appendix A outside the protocol's subset. */
static void
test_unsupported_vectors_rejected_with_reason(void **state)
{
    static const struct {
        const char *hex;
        enum tml_err err;
    } vec[] = {
        {"f90000", TML_ERR_UNSUPPORTED},           /* 0.0 half */
        {"f93c00", TML_ERR_UNSUPPORTED},           /* 1.0 half */
        {"fa47c35000", TML_ERR_UNSUPPORTED},       /* 100000.0 single */
        {"fb3ff199999999999a", TML_ERR_UNSUPPORTED}, /* 1.1 double */
        {"f97e00", TML_ERR_UNSUPPORTED},           /* NaN */
        {"f7", TML_ERR_UNSUPPORTED},               /* undefined */
        {"f0", TML_ERR_UNSUPPORTED},               /* simple(16) */
        {"f8ff", TML_ERR_UNSUPPORTED},             /* simple(255) */
        {"f818", TML_ERR_NON_MINIMAL},             /* simple(24), 2 bytes */
        {"c11a514b67b0", TML_ERR_UNSUPPORTED},     /* epoch date tag */
        {"c249010000000000000000", TML_ERR_UNSUPPORTED}, /* bignum */
        {"d74401020304", TML_ERR_UNSUPPORTED},
        {"5f42010243030405ff", TML_ERR_INDEFINITE},
        {"7f657374726561646d696e67ff", TML_ERR_INDEFINITE},
        {"9fff", TML_ERR_INDEFINITE},
        {"9f018202039f0405ffff", TML_ERR_INDEFINITE},
        {"83018202039f0405ff", TML_ERR_INDEFINITE},
        {"bf61610161629f0203ffff", TML_ERR_INDEFINITE},
        {"ff", TML_ERR_INDEFINITE},                /* lone break */
        {"1c", TML_ERR_UNSUPPORTED},               /* reserved AI 28 */
        {"5d", TML_ERR_UNSUPPORTED},               /* reserved AI 29 */
        {"9e", TML_ERR_UNSUPPORTED},               /* reserved AI 30 */
    };
    uint8_t b[32];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        size_t n = unhex(vec[i].hex, b);
        struct tml_dec d;

        tml_dec_init(&d, b, n);
        assert_int_equal(tml_dec_skip(&d), vec[i].err);
        assert_ptr_equal(d.p, b); /* nothing consumed */
    }
}

static void
test_non_minimal_arguments_rejected(void **state)
{
    static const char *const vec[] = {
        "1800",     "1817",         "190000", "1900ff",     "1a0000ffff",
        "1b00000000ffffffff", "3817", "5800", "7800", "9800", "b800",
        "d800",     "3900ff",
    };
    uint8_t b[16];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        size_t n = unhex(vec[i], b);
        struct tml_dec d;
        uint64_t v;

        tml_dec_init(&d, b, n);
        assert_int_equal(tml_dec_skip(&d), TML_ERR_NON_MINIMAL);
        if (b[0] < 0x20) {
            assert_int_equal(tml_dec_uint(&d, &v), TML_ERR_NON_MINIMAL);
        }
    }
}

static void
test_length_claims_beyond_input_are_truncated(void **state)
{
    static const char *const vec[] = {
        "5bffffffffffffffff", "7bffffffffffffffff", "9bffffffffffffffff",
        "bbffffffffffffffff", "5a0001000000",       "830102",
        "a2010203",
        "4501020304",         "1b00",               "19",
        "",
    };
    uint8_t b[16];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        size_t n = unhex(vec[i], b);
        struct tml_dec d;

        tml_dec_init(&d, b, n);
        assert_int_equal(tml_dec_skip(&d), TML_ERR_TRUNCATED);
    }
    /* A map header claiming more pairs than bytes fails at the header. */
    {
        struct tml_dec d;
        size_t cnt = 0;


        b[0] = 0xa3;
        b[1] = 0x01;
        b[2] = 0x02;
        b[3] = 0x03;
        b[4] = 0x04;
        tml_dec_init(&d, b, 5);
        assert_int_equal(tml_dec_map(&d, &cnt), TML_ERR_TRUNCATED);
        assert_int_equal(d.depth, 0);
        b[0] = 0x84;
        tml_dec_init(&d, b, 5);
        assert_int_equal(tml_dec_array(&d, &cnt), TML_OK);
        assert_int_equal(cnt, 4);
    }
}

static void
test_nesting_limit(void **state)
{
    static uint8_t deep[10000];
    uint8_t b[TML_CBOR_MAX_DEPTH + 2];
    struct tml_dec d;
    size_t i;

    (void)state;
    /* Exactly TML_CBOR_MAX_DEPTH nested arrays: accepted. */
    for (i = 0; i < TML_CBOR_MAX_DEPTH - 1; i++) {
        b[i] = 0x81;
    }
    b[TML_CBOR_MAX_DEPTH - 1] = 0x80;
    tml_dec_init(&d, b, TML_CBOR_MAX_DEPTH);
    assert_int_equal(tml_dec_skip(&d), TML_OK);
    /* One more: DEPTH. */
    for (i = 0; i < TML_CBOR_MAX_DEPTH; i++) {
        b[i] = 0x81;
    }
    b[TML_CBOR_MAX_DEPTH] = 0x80;
    tml_dec_init(&d, b, TML_CBOR_MAX_DEPTH + 1);
    assert_int_equal(tml_dec_skip(&d), TML_ERR_DEPTH);
    /* 10^4 levels (F2): DEPTH, bounded stack. */
    memset(deep, 0x81, sizeof deep);
    tml_dec_init(&d, deep, sizeof deep);
    assert_int_equal(tml_dec_skip(&d), TML_ERR_DEPTH);
    memset(deep, 0xa1, sizeof deep);
    tml_dec_init(&d, deep, sizeof deep);
    assert_int_equal(tml_dec_skip(&d), TML_ERR_DEPTH);
}

static void
test_invalid_utf8_text_is_type_error(void **state)
{
    static const char *const bad[] = {
        "61ff",       "61c0",     "62c0af",   /* overlong '/' */
        "63eda080",                           /* surrogate U+D800 */
        "64f4908080",                         /* U+110000 */
        "6180",       "62c328",   "62e282",   /* cut sequence */
    };
    uint8_t b[16];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n = unhex(bad[i], b);
        struct tml_dec d;
        struct tml_str s;

        tml_dec_init(&d, b, n);
        assert_int_equal(tml_dec_text(&d, &s), TML_ERR_TYPE);
        assert_int_equal(tml_dec_skip(&d), TML_ERR_TYPE);
    }
}

static void
test_wrong_type_consumes_nothing(void **state)
{
    uint8_t b[] = {0x61, 'x'};
    struct tml_dec d;
    uint64_t u;
    int64_t i;
    bool v;
    size_t n;
    struct tml_bin bin;
    uint64_t tag;

    (void)state;
    tml_dec_init(&d, b, sizeof b);
    assert_int_equal(tml_dec_uint(&d, &u), TML_ERR_TYPE);
    assert_int_equal(tml_dec_int(&d, &i), TML_ERR_TYPE);
    assert_int_equal(tml_dec_bool(&d, &v), TML_ERR_TYPE);
    assert_int_equal(tml_dec_null(&d), TML_ERR_TYPE);
    assert_int_equal(tml_dec_array(&d, &n), TML_ERR_TYPE);
    assert_int_equal(tml_dec_map(&d, &n), TML_ERR_TYPE);
    assert_int_equal(tml_dec_bytes(&d, &bin), TML_ERR_TYPE);
    assert_int_equal(tml_dec_tag(&d, &tag), TML_ERR_TYPE);
    assert_ptr_equal(d.p, b);
    assert_int_equal(tml_dec_finish(&d), TML_ERR_TRAILING);
    assert_int_equal(tml_dec_peek(&d), TML_CBOR_TEXT);
    d.p = d.end;
    assert_int_equal(tml_dec_peek(&d), TML_CBOR_END);
    assert_int_equal(tml_dec_uint(&d, &u), TML_ERR_TRUNCATED);
}

static void
test_encoder_sticky_nospace_at_every_capacity(void **state)
{
    uint8_t full[64], b[64];
    size_t len = 0, cap;

    (void)state;
    for (cap = 0; cap <= 40; cap++) {
        struct tml_enc e;
        enum tml_err err;
        size_t got = 0;

        tml_enc_init(&e, cap == 0 ? NULL : b, cap);
        tml_enc_map(&e, 2);
        tml_enc_uint(&e, 1000000);
        tml_enc_text(&e, "hello world", 11);
        tml_enc_int(&e, -70000);
        tml_enc_tag(&e, 18);
        tml_enc_raw(&e, "\x80\xf6", 2);
        err = tml_enc_finish(&e, &got);
        if (err == TML_OK) {
            if (len == 0) {
                len = got;
                memcpy(full, b, got);
            }
            assert_int_equal(got, len);
            assert_memory_equal(b, full, len);
        } else {
            assert_int_equal(err, TML_ERR_NOSPACE);
            assert_true(e.len <= cap);
        }
    }
    assert_int_equal(len, 1 + 5 + 12 + 5 + 1 + 2);
}

static void
test_encoder_rejects_null_data(void **state)
{
    uint8_t b[8];
    struct tml_enc e;

    (void)state;
    tml_enc_init(&e, b, sizeof b);
    tml_enc_bytes(&e, NULL, 3);
    assert_int_equal(tml_enc_finish(&e, NULL), TML_ERR_INVAL);
    tml_enc_init(&e, NULL, 4);
    assert_int_equal(tml_enc_finish(&e, NULL), TML_ERR_INVAL);
}

/* An empty MQTT payload may arrive as (NULL, 0): every decoder says the
 * input ends too early, with no arithmetic on the NULL pointer (clang's
 * UBSan reported NULL + 0 in tml_dec_init). */
static void
test_null_empty_input_is_truncated(void **state)
{
    struct tml_dec d;
    struct tml_ack ack;
    struct tml_ota_down od;
    struct tml_cose_sign1 c;
    uint64_t u;

    (void)state;
    tml_dec_init(&d, NULL, 0);
    assert_int_equal(tml_dec_uint(&d, &u), TML_ERR_TRUNCATED);
    assert_int_equal(tml_ack_decode(NULL, 0, &ack), TML_ERR_TRUNCATED);
    assert_int_equal(tml_ota_down_decode(NULL, 0, &od), TML_ERR_TRUNCATED);
    assert_int_equal(tml_cose_sign1_decode(NULL, 0, &c), TML_ERR_TRUNCATED);
}

static void
test_strerror_names_every_code(void **state)
{
    int i, j;

    (void)state;
    for (i = 0; i < TML_ERR__COUNT; i++) {
        assert_non_null(tml_strerror((enum tml_err)i));
        for (j = 0; j < i; j++) {
            assert_string_not_equal(tml_strerror((enum tml_err)i),
                                    tml_strerror((enum tml_err)j));
        }
    }
    assert_string_equal(tml_strerror(TML_ERR__COUNT), "unknown error");
    assert_string_equal(tml_ota_reason_name(TML_OTA_R_WRONG_OFFER),
                        "wrong offer");
    assert_string_equal(tml_ota_state_name(TML_OTA_REVERTED), "reverted");
    assert_string_equal(tml_ota_state_name((enum tml_ota_state)10), "?");
    assert_string_equal(tml_ota_reason_name(TML_OTA_R__COUNT), "?");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uint_vectors_encode_and_decode),
        cmocka_unit_test(test_int_vectors_encode_and_decode),
        cmocka_unit_test(test_int_outside_int64_is_range),
        cmocka_unit_test(test_simple_and_string_vectors),
        cmocka_unit_test(test_container_vectors),
        cmocka_unit_test(test_unsupported_vectors_rejected_with_reason),
        cmocka_unit_test(test_non_minimal_arguments_rejected),
        cmocka_unit_test(test_length_claims_beyond_input_are_truncated),
        cmocka_unit_test(test_nesting_limit),
        cmocka_unit_test(test_invalid_utf8_text_is_type_error),
        cmocka_unit_test(test_wrong_type_consumes_nothing),
        cmocka_unit_test(test_encoder_sticky_nospace_at_every_capacity),
        cmocka_unit_test(test_encoder_rejects_null_data),
        cmocka_unit_test(test_null_empty_input_is_truncated),
        cmocka_unit_test(test_strerror_names_every_code),
    };

    return cmocka_run_group_tests_name("proto_cbor", tests, NULL, NULL);
}
