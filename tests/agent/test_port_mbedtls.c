/*
 * test_port_mbedtls.c: the mbedTLS crypto port on its own: SHA-256 against
 * the FIPS 180-2 "abc" vector (streamed in pieces), ES256 verify accepting
 * a real signature and refusing a wrong hash, a zero or out-of-range r/s,
 * and a public key that is not on the curve.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ecdsa.h>

#include <tml/agent_port_mbedtls.h>

#include "support.h"

static void
test_port_sha256_abc_in_pieces(void **state)
{
    static const uint8_t want[32] = {
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
        0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
        0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    union {
        uint64_t align;
        uint8_t b[TMLA_SHA256_CTX_SIZE];
    } ctx;
    uint8_t out[32];

    (void)state;
    assert_int_equal(tmla_mbedtls_sha256_init(NULL, ctx.b), 0);
    assert_int_equal(tmla_mbedtls_sha256_update(NULL, ctx.b, "a", 1), 0);
    assert_int_equal(tmla_mbedtls_sha256_update(NULL, ctx.b, "", 0), 0);
    assert_int_equal(tmla_mbedtls_sha256_update(NULL, ctx.b, "bc", 2), 0);
    assert_int_equal(tmla_mbedtls_sha256_final(NULL, ctx.b, out), 0);
    assert_memory_equal(out, want, 32);
}

static void
test_port_es256_verify_accepts_and_refuses(void **state)
{
    struct tkey k;
    struct tml_manifest m;
    uint8_t img[64], cose[TML_MAX_MANIFEST], hash[32], pub[65];
    struct tml_cose_sign1 c;
    uint8_t sig[64], tbs[TML_MAX_MANIFEST + 64];
    size_t n, tbs_len;

    (void)state;
    tkey_make(&k, 9);
    memset(img, 0x42, sizeof img);
    manifest_for(&m, 1, img, sizeof img, 0, 16);
    n = manifest_sign(&k, &m, cose, sizeof cose);
    assert_int_equal(tml_cose_sign1_decode(cose, n, &c), TML_OK);
    assert_int_equal(tml_cose_sig_structure(&c.protected_hdr, &c.payload, tbs,
                                            sizeof tbs, &tbs_len),
                     TML_OK);
    sha256_of(tbs, tbs_len, hash);
    memcpy(sig, c.signature.p, 64);
    assert_int_equal(tmla_mbedtls_es256_verify(NULL, k.pub, hash, sig), 0);

    hash[5] ^= 1; /* another message */
    assert_int_not_equal(tmla_mbedtls_es256_verify(NULL, k.pub, hash, sig), 0);
    hash[5] ^= 1;
    memset(sig, 0, 32); /* r = 0 */
    assert_int_not_equal(tmla_mbedtls_es256_verify(NULL, k.pub, hash, sig), 0);
    memset(sig, 0xff, 32); /* r >= n */
    assert_int_not_equal(tmla_mbedtls_es256_verify(NULL, k.pub, hash, sig), 0);
    memcpy(sig, c.signature.p, 64);
    memcpy(pub, k.pub, 65);
    pub[64] ^= 1; /* (x, y) no longer on P-256 */
    assert_int_not_equal(tmla_mbedtls_es256_verify(NULL, pub, hash, sig), 0);
    pub[64] ^= 1;
    pub[0] = 0x02; /* not the uncompressed form */
    assert_int_not_equal(tmla_mbedtls_es256_verify(NULL, pub, hash, sig), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_port_sha256_abc_in_pieces),
        cmocka_unit_test(test_port_es256_verify_accepts_and_refuses),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
