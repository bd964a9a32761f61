/*
 * test_cose.c: the COSE_Sign1 envelope (RFC 9052 4.2) and Sig_structure
 * (RFC 9052 4.4) for ES256 manifests: known-answer bytes and each rejection
 * (S2 tampered manifest at the codec level: structure changes are refused
 * with a reason; content changes are left to the signature check).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "samples.h"

static const uint8_t kid[8] = {'o', 'p', 'k', 'e', 'y', '-', '0', '1'};
static const uint8_t payload[3] = {0xa1, 0x00, 0x01};

static void
test_protected_header_and_sig_structure_known_answer(void **state)
{
    /* {1: -7, 4: h'6f706b65792d3031'} */
    static const uint8_t want_prot[] = {0xa2, 0x01, 0x26, 0x04, 0x48, 'o', 'p',
                                        'k',  'e',  'y',  '-',  '0',  '1'};
    /* ["Signature1", << prot >>, h'', h'a10001'] */
    static const uint8_t want_sig[] = {
        0x84, 0x6a, 'S',  'i',  'g',  'n',  'a',  't',  'u',  'r', 'e',
        '1',  0x4d, 0xa2, 0x01, 0x26, 0x04, 0x48, 'o',  'p',  'k', 'e',
        'y',  '-',  '0',  '1',  0x40, 0x43, 0xa1, 0x00, 0x01};
    uint8_t prot[32], sig[64];
    size_t plen = 0, slen = 0, cap;
    struct tml_bin p, pl = {payload, sizeof payload};

    (void)state;
    assert_int_equal(tml_cose_protected_encode(kid, sizeof kid, prot,
                                               sizeof prot, &plen),
                     TML_OK);
    assert_int_equal(plen, sizeof want_prot);
    assert_memory_equal(prot, want_prot, plen);
    p.p = prot;
    p.len = plen;
    assert_int_equal(tml_cose_sig_structure(&p, &pl, sig, sizeof sig, &slen),
                     TML_OK);
    assert_int_equal(slen, sizeof want_sig);
    assert_memory_equal(sig, want_sig, slen);
    for (cap = 0; cap < slen; cap++) {
        assert_int_equal(tml_cose_sig_structure(&p, &pl, sig, cap, &slen),
                         TML_ERR_NOSPACE);
    }
}

static void
test_protected_encode_rejects_bad_kid(void **state)
{
    uint8_t prot[64], big[TML_MAX_KID + 1];
    size_t plen;

    (void)state;
    memset(big, 1, sizeof big);
    assert_int_equal(tml_cose_protected_encode(kid, 0, prot, sizeof prot,
                                               &plen),
                     TML_ERR_INVAL);
    assert_int_equal(tml_cose_protected_encode(big, sizeof big, prot,
                                               sizeof prot, &plen),
                     TML_ERR_OVERSIZE);
    assert_int_equal(tml_cose_protected_encode(big, TML_MAX_KID, prot,
                                               sizeof prot, &plen),
                     TML_OK);
}

/* Builds a COSE_Sign1 by hand: tag (0 = none), protected map bytes, the
 * number of unprotected entries (each 4: 0), payload and signature. */
static size_t
build(uint8_t *buf, size_t cap, uint64_t tag, const uint8_t *prot,
      size_t plen, size_t n_unprot, const uint8_t *pl, size_t pl_len,
      size_t sig_len, size_t n_items)
{
    uint8_t sig[80];
    struct tml_enc e;
    size_t len = 0, i;

    memset(sig, 0x77, sizeof sig);
    tml_enc_init(&e, buf, cap);
    if (tag != 0) {
        tml_enc_tag(&e, tag);
    }
    tml_enc_array(&e, n_items);
    tml_enc_bytes(&e, prot, plen);
    tml_enc_map(&e, n_unprot);
    for (i = 0; i < n_unprot; i++) {
        tml_enc_uint(&e, 4 + i);
        tml_enc_bytes(&e, "x", 1);
    }
    if (pl == NULL) {
        tml_enc_null(&e);
    } else {
        tml_enc_bytes(&e, pl, pl_len);
    }
    tml_enc_bytes(&e, sig, sig_len);
    if (n_items > 4) {
        tml_enc_uint(&e, 0);
    }
    assert_int_equal(tml_enc_finish(&e, &len), TML_OK);
    return len;
}

static const uint8_t good_prot[] = {0xa2, 0x01, 0x26, 0x04, 0x42, 'k', '1'};

static void
test_sign1_accepts_tag_18_and_unprotected_entries(void **state)
{
    uint8_t buf[256];
    struct tml_cose_sign1 c;
    size_t len;

    (void)state;
    len = build(buf, sizeof buf, 18, good_prot, sizeof good_prot, 0, payload,
                sizeof payload, 64, 4);
    assert_int_equal(tml_cose_sign1_decode(buf, len, &c), TML_OK);
    assert_int_equal(c.kid.len, 2);
    assert_int_equal(c.payload.len, sizeof payload);
    len = build(buf, sizeof buf, 0, good_prot, sizeof good_prot, 2, payload,
                sizeof payload, 64, 4);
    assert_int_equal(tml_cose_sign1_decode(buf, len, &c), TML_OK);
    assert_int_equal(c.alg, -7);
    /* Map keys in the other order are fine too. */
    {
        static const uint8_t swapped[] = {0xa2, 0x04, 0x42, 'k', '1', 0x01,
                                          0x26};

        len = build(buf, sizeof buf, 0, swapped, sizeof swapped, 0, payload,
                    sizeof payload, 64, 4);
        assert_int_equal(tml_cose_sign1_decode(buf, len, &c), TML_OK);
        assert_memory_equal(c.kid.p, "k1", 2);
    }
}

static void
test_sign1_rejections(void **state)
{
    static const struct {
        uint8_t prot[24];
        size_t plen;
        enum tml_err err;
    } prots[] = {
        /* alg ES384 (-35) */
        {{0xa2, 0x01, 0x38, 0x22, 0x04, 0x41, 'k'}, 7, TML_ERR_UNSUPPORTED},
        /* alg as text */
        {{0xa2, 0x01, 0x65, 'E', 'S', '2', '5', '6', 0x04, 0x41, 'k'},
         11,
         TML_ERR_TYPE},
        /* no kid */
        {{0xa1, 0x01, 0x26}, 3, TML_ERR_MISSING},
        /* no alg */
        {{0xa1, 0x04, 0x41, 'k'}, 4, TML_ERR_MISSING},
        /* crit (2) present */
        {{0xa3, 0x01, 0x26, 0x02, 0x81, 0x01, 0x04, 0x41, 'k'},
         9,
         TML_ERR_UNKNOWN_CRITICAL},
        /* duplicate kid */
        {{0xa3, 0x01, 0x26, 0x04, 0x41, 'k', 0x04, 0x41, 'k'},
         9,
         TML_ERR_DUPLICATE},
        /* duplicate alg */
        {{0xa3, 0x01, 0x26, 0x01, 0x26, 0x04, 0x41, 'k'}, 8, TML_ERR_DUPLICATE},
        /* empty kid */
        {{0xa2, 0x01, 0x26, 0x04, 0x40}, 5, TML_ERR_RANGE},
        /* kid 17 bytes */
        {{0xa2, 0x01, 0x26, 0x04, 0x51, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
          13, 14, 15, 16, 17},
         22,
         TML_ERR_OVERSIZE},
        /* trailing byte after the map */
        {{0xa2, 0x01, 0x26, 0x04, 0x41, 'k', 0x00}, 7, TML_ERR_TRAILING},
        /* empty protected */
        {{0}, 0, TML_ERR_TRUNCATED},
        /* not a map */
        {{0x80}, 1, TML_ERR_TYPE},
    };
    uint8_t buf[TML_MAX_MANIFEST + 64];
    struct tml_cose_sign1 c;
    size_t len, i, cut;

    (void)state;
    for (i = 0; i < sizeof prots / sizeof prots[0]; i++) {
        len = build(buf, sizeof buf, 0, prots[i].prot, prots[i].plen, 0,
                    payload, sizeof payload, 64, 4);
        assert_int_equal(tml_cose_sign1_decode(buf, len, &c), prots[i].err);
    }
    len = build(buf, sizeof buf, 98, good_prot, sizeof good_prot, 0, payload,
                sizeof payload, 64, 4);
    assert_int_equal(tml_cose_sign1_decode(buf, len, &c), TML_ERR_UNSUPPORTED);
    len = build(buf, sizeof buf, 0, good_prot, sizeof good_prot, 0, payload,
                sizeof payload, 64, 5);
    assert_int_equal(tml_cose_sign1_decode(buf, len, &c), TML_ERR_TYPE);
    len = build(buf, sizeof buf, 0, good_prot, sizeof good_prot, 0, NULL, 0,
                64, 4);
    assert_int_equal(tml_cose_sign1_decode(buf, len, &c), TML_ERR_TYPE);
    len = build(buf, sizeof buf, 0, good_prot, sizeof good_prot, 0, payload,
                0, 64, 4);
    assert_int_equal(tml_cose_sign1_decode(buf, len, &c), TML_ERR_RANGE);
    len = build(buf, sizeof buf, 0, good_prot, sizeof good_prot, 0, payload,
                sizeof payload, 63, 4);
    assert_int_equal(tml_cose_sign1_decode(buf, len, &c), TML_ERR_RANGE);
    len = build(buf, sizeof buf, 0, good_prot, sizeof good_prot, 0, payload,
                sizeof payload, 65, 4);
    assert_int_equal(tml_cose_sign1_decode(buf, len, &c), TML_ERR_OVERSIZE);
    len = build(buf, sizeof buf, 0, good_prot, sizeof good_prot, 0, payload,
                sizeof payload, 64, 4);
    buf[len] = 0xf6;
    assert_int_equal(tml_cose_sign1_decode(buf, len + 1, &c),
                     TML_ERR_TRAILING);
    for (cut = 0; cut < len; cut++) {
        assert_int_equal(tml_cose_sign1_decode(buf, cut, &c),
                         TML_ERR_TRUNCATED);
    }
    memset(buf, 0, sizeof buf);
    assert_int_equal(tml_cose_sign1_decode(buf, TML_MAX_MANIFEST + 1, &c),
                     TML_ERR_OVERSIZE);
}

static void
test_sign1_encode_limits(void **state)
{
    static uint8_t big_payload[TML_MAX_MANIFEST];
    uint8_t buf[TML_MAX_MANIFEST + 64];
    size_t len, pl;

    (void)state;
    /* The largest payload that still fits TML_MAX_MANIFEST: overhead is
     * 1 (array) + 1 + 13 (protected) + 1 (map) + 3 (bstr head) + 2 + 64. */
    pl = TML_MAX_MANIFEST - (1 + 1 + 13 + 1 + 3 + 2 + 64);
    assert_int_equal(tml_cose_sign1_encode(kid, sizeof kid, big_payload, pl,
                                           sample_sig, buf, sizeof buf, &len),
                     TML_OK);
    assert_int_equal(len, TML_MAX_MANIFEST);
    assert_int_equal(tml_cose_sign1_encode(kid, sizeof kid, big_payload,
                                           pl + 1, sample_sig, buf,
                                           sizeof buf, &len),
                     TML_ERR_OVERSIZE);
    assert_int_equal(tml_cose_sign1_encode(kid, sizeof kid, big_payload, 0,
                                           sample_sig, buf, sizeof buf, &len),
                     TML_ERR_INVAL);
    assert_int_equal(tml_cose_sign1_encode(kid, sizeof kid, payload,
                                           sizeof payload, sample_sig, buf, 10,
                                           &len),
                     TML_ERR_NOSPACE);
}

/* S2 at the codec level: flipping any bit of a valid envelope either still
 * decodes (then payload/signature bytes changed and the signature check must
 * catch it) or is rejected with a defined code. */
static void
test_sign1_every_bit_flip_defined(void **state)
{
    uint8_t buf[256], mut[256];
    struct tml_cose_sign1 c;
    size_t len, pos;
    int bit;
    unsigned ok = 0, rejected = 0;

    (void)state;
    assert_int_equal(tml_cose_sign1_encode(kid, sizeof kid, payload,
                                           sizeof payload, sample_sig, buf,
                                           sizeof buf, &len),
                     TML_OK);
    for (pos = 0; pos < len; pos++) {
        for (bit = 0; bit < 8; bit++) {
            enum tml_err err;

            memcpy(mut, buf, len);
            mut[pos] ^= (uint8_t)(1u << bit);
            err = tml_cose_sign1_decode(mut, len, &c);
            assert_true(err < TML_ERR__COUNT);
            if (err == TML_OK) {
                ok++;
                /* Then the Sig_structure or the signature differs. */
                assert_true(
                    c.kid.len != sizeof kid ||
                    memcmp(c.kid.p, kid, sizeof kid) != 0 ||
                    c.payload.len != sizeof payload ||
                    memcmp(c.payload.p, payload, sizeof payload) != 0 ||
                    memcmp(c.signature.p, sample_sig, 64) != 0);
            } else {
                rejected++;
            }
        }
    }
    assert_true(rejected > 0 && ok > 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_protected_header_and_sig_structure_known_answer),
        cmocka_unit_test(test_protected_encode_rejects_bad_kid),
        cmocka_unit_test(test_sign1_accepts_tag_18_and_unprotected_entries),
        cmocka_unit_test(test_sign1_rejections),
        cmocka_unit_test(test_sign1_encode_limits),
        cmocka_unit_test(test_sign1_every_bit_flip_defined),
    };

    return cmocka_run_group_tests_name("proto_cose", tests, NULL, NULL);
}
