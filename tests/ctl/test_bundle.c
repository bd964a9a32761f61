/*
 * test_bundle.c: libtmlbundle (tools/common): signing and verifying bundles
 * and bare COSE_Sign1 manifests, and every rejection: wrong key (S1), every
 * byte of the signed manifest flipped (S2), tampered / truncated / extended
 * image (S3-style at the bundle level), truncation at every length, unknown
 * critical fields, expiry (S6), two trusted keys (S12 rotation).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tml/bundle.h"

struct fx {
    struct tml_privkey *k1, *k2;
    struct tml_pubkey p1, p2;
    uint8_t *bundle;
    size_t len;
    uint8_t image[3000];
};

static void
fill_manifest(struct tml_manifest *m)
{
    memset(m, 0, sizeof(*m));
    m->name.p = "kws";
    m->name.len = 3;
    m->hw.p = "nrf52840";
    m->hw.len = 8;
    m->version = 7;
    m->created = 1700000000;
    m->expires = 1800000000;
    m->model_size = 3000;
    m->arena_size = 20000;
    m->dtype = TML_DTYPE_I8;
    m->n_shape = 2;
    m->input_shape[0] = 1;
    m->input_shape[1] = 3000;
    m->n_labels = 3;
}

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(tml_privkey_generate(&f->k1), TML_BUNDLE_OK);
    assert_int_equal(tml_privkey_generate(&f->k2), TML_BUNDLE_OK);
    tml_privkey_public(f->k1, &f->p1);
    tml_privkey_public(f->k2, &f->p2);
    for (size_t i = 0; i < sizeof(f->image); i++)
        f->image[i] = (uint8_t)(i * 7 + 3);
    struct tml_manifest m;
    fill_manifest(&m);
    const char *labels[] = {"yes", "no", "silence"};
    assert_int_equal(tml_bundle_build(f->k1, &m, f->image, sizeof(f->image),
                                      labels, 3, &f->bundle, &f->len),
                     TML_BUNDLE_OK);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    if (f == NULL)
        return 0;
    tml_privkey_free(f->k1);
    tml_privkey_free(f->k2);
    free(f->bundle);
    free(f);
    return 0;
}

static enum tml_bundle_err
verify_with(const uint8_t *b, size_t len, const struct tml_pubkey *keys,
            size_t n)
{
    struct tml_bundle *out = malloc(sizeof(*out));
    assert_non_null(out);
    enum tml_bundle_err e = tml_bundle_verify(b, len, keys, n, 0, out, NULL);
    free(out);
    return e;
}

static void
test_bundle_roundtrip_verifies_and_exposes_manifest(void **state)
{
    struct fx *f = *state;
    struct tml_bundle *b = malloc(sizeof(*b));
    size_t which = 99;
    assert_int_equal(
        tml_bundle_verify(f->bundle, f->len, &f->p1, 1, 1750000000, b, &which),
        TML_BUNDLE_OK);
    assert_int_equal(which, 0);
    assert_int_equal(b->manifest.version, 7);
    assert_int_equal(b->manifest.size, sizeof(f->image));
    assert_int_equal(b->manifest.n_labels, 3);
    assert_int_equal(b->n_labels, 3);
    assert_memory_equal(b->labels[2].p, "silence", 7);
    assert_int_equal(b->image.len, sizeof(f->image));
    assert_memory_equal(b->image.p, f->image, sizeof(f->image));
    assert_int_equal(b->sign1.kid.len, TML_KEY_ID_LEN);
    assert_memory_equal(b->sign1.kid.p, f->p1.kid, TML_KEY_ID_LEN);
    free(b);
}

/* S1: a bundle signed by a key that is not trusted is refused; with two
 * trusted keys (rotation) either signer is accepted and reported. */
static void
test_bundle_rejects_wrong_key_accepts_second_trusted(void **state)
{
    struct fx *f = *state;
    assert_int_equal(verify_with(f->bundle, f->len, &f->p2, 1),
                     TML_BUNDLE_E_UNKNOWN_KEY);
    assert_int_equal(verify_with(f->bundle, f->len, NULL, 0),
                     TML_BUNDLE_E_UNKNOWN_KEY);
    struct tml_pubkey both[2] = {f->p2, f->p1};
    struct tml_bundle *b = malloc(sizeof(*b));
    size_t which = 99;
    assert_int_equal(
        tml_bundle_verify(f->bundle, f->len, both, 2, 0, b, &which),
        TML_BUNDLE_OK);
    assert_int_equal(which, 1);
    free(b);
}

/* A key claiming the trusted kid but a different point (kid collision
 * forged in the header) must still fail on the signature. */
static void
test_bundle_rejects_same_kid_other_key(void **state)
{
    struct fx *f = *state;
    struct tml_pubkey fake = f->p2;
    memcpy(fake.kid, f->p1.kid, TML_KEY_ID_LEN);
    assert_int_equal(verify_with(f->bundle, f->len, &fake, 1),
                     TML_BUNDLE_E_SIGNATURE);
}

/* Image tamper: one flipped byte anywhere in the image is a hash mismatch. */
static void
test_bundle_rejects_tampered_image_every_100th_byte(void **state)
{
    struct fx *f = *state;
    uint8_t *copy = malloc(f->len);
    size_t off = f->len - sizeof(f->image); /* image is the last item... */
    /* ...unless labels follow it: find the image by content. */
    for (size_t i = 0; i + sizeof(f->image) <= f->len; i++)
        if (memcmp(f->bundle + i, f->image, sizeof(f->image)) == 0) {
            off = i;
            break;
        }
    size_t n = 0, rejected = 0;
    for (size_t i = 0; i < sizeof(f->image); i += 100, n++) {
        memcpy(copy, f->bundle, f->len);
        copy[off + i] ^= 0x01;
        if (verify_with(copy, f->len, &f->p1, 1) == TML_BUNDLE_E_HASH)
            rejected++;
    }
    assert_int_equal(rejected, n);
    free(copy);
}

/* S2: flip each byte of the COSE_Sign1 in turn (all positions): every
 * variant is rejected, none crashes. */
static void
test_bundle_rejects_every_flipped_manifest_byte(void **state)
{
    struct fx *f = *state;
    struct tml_bundle *b = malloc(sizeof(*b));
    assert_int_equal(tml_bundle_parse(f->bundle, f->len, b), TML_BUNDLE_OK);
    size_t off = (size_t)(b->cose.p - f->bundle), cose_len = b->cose.len;
    free(b);
    uint8_t *copy = malloc(f->len);
    size_t rejected = 0;
    for (size_t i = 0; i < cose_len; i++) {
        memcpy(copy, f->bundle, f->len);
        copy[off + i] ^= 0x80;
        if (verify_with(copy, f->len, &f->p1, 1) != TML_BUNDLE_OK)
            rejected++;
    }
    print_message("S2: %zu/%zu flipped manifest bytes rejected\n", rejected,
                  cose_len);
    assert_int_equal(rejected, cose_len);
    free(copy);
}

/* Truncation at every length: rejected, never OK, never a crash. */
static void
test_bundle_rejects_every_truncation(void **state)
{
    struct fx *f = *state;
    size_t rejected = 0;
    for (size_t l = 0; l < f->len; l++) {
        uint8_t *copy = malloc(l ? l : 1);
        memcpy(copy, f->bundle, l);
        enum tml_bundle_err e = verify_with(copy, l, &f->p1, 1);
        if (e != TML_BUNDLE_OK)
            rejected++;
        free(copy);
    }
    assert_int_equal(rejected, f->len);
    /* The plain cut inside the image reports "truncated". */
    assert_int_equal(verify_with(f->bundle, f->len / 2, &f->p1, 1),
                     TML_BUNDLE_E_TRUNCATED);
}

static void
test_bundle_rejects_trailing_bytes(void **state)
{
    struct fx *f = *state;
    uint8_t *copy = malloc(f->len + 1);
    memcpy(copy, f->bundle, f->len);
    copy[f->len] = 0x00;
    assert_int_equal(verify_with(copy, f->len + 1, &f->p1, 1),
                     TML_BUNDLE_E_FORMAT);
    free(copy);
}

/* Rebuilds the container around the bundle's own COSE and image, with an
 * extra entry (key, value = small uint) and optionally another format. */
static size_t
rebuild(const struct fx *f, int64_t extra_key, uint64_t format, uint8_t *out,
        size_t cap, bool drop_format)
{
    struct tml_bundle *b = malloc(sizeof(*b));
    assert_int_equal(tml_bundle_parse(f->bundle, f->len, b), TML_BUNDLE_OK);
    struct tml_enc e;
    tml_enc_init(&e, out, cap);
    tml_enc_map(&e, (drop_format ? 2 : 3) + (extra_key != 0 ? 1 : 0));
    if (!drop_format) {
        tml_enc_uint(&e, 0);
        tml_enc_uint(&e, format);
    }
    tml_enc_uint(&e, 1);
    tml_enc_bytes(&e, b->cose.p, b->cose.len);
    tml_enc_uint(&e, 2);
    tml_enc_bytes(&e, b->image.p, b->image.len);
    if (extra_key != 0) {
        tml_enc_int(&e, extra_key);
        tml_enc_uint(&e, 42);
    }
    free(b);
    size_t len = 0;
    assert_int_equal(tml_enc_finish(&e, &len), TML_OK);
    return len;
}

static void
test_bundle_rejects_unknown_critical_field_skips_unknown_optional(void **state)
{
    struct fx *f = *state;
    size_t cap = f->len + 64, len;
    uint8_t *buf = malloc(cap);
    len = rebuild(f, -5, TML_BUNDLE_FORMAT, buf, cap, false);
    assert_int_equal(verify_with(buf, len, &f->p1, 1), TML_BUNDLE_E_CRITICAL);
    len = rebuild(f, 17, TML_BUNDLE_FORMAT, buf, cap, false);
    assert_int_equal(verify_with(buf, len, &f->p1, 1), TML_BUNDLE_OK);
    len = rebuild(f, 0, 2, buf, cap, false);
    assert_int_equal(verify_with(buf, len, &f->p1, 1), TML_BUNDLE_E_VERSION);
    len = rebuild(f, 0, TML_BUNDLE_FORMAT, buf, cap, true);
    assert_int_equal(verify_with(buf, len, &f->p1, 1), TML_BUNDLE_E_VERSION);
    free(buf);
}

static void
test_bundle_rejects_duplicate_key(void **state)
{
    struct fx *f = *state;
    size_t cap = f->len + 64;
    uint8_t *buf = malloc(cap);
    /* extra key 1 = a second COSE entry (value 42): duplicate. */
    size_t len = rebuild(f, 1, TML_BUNDLE_FORMAT, buf, cap, false);
    assert_int_equal(verify_with(buf, len, &f->p1, 1), TML_BUNDLE_E_FORMAT);
    free(buf);
}

/* S6: expires is enforced when a time is given; 0 disables it. */
static void
test_bundle_expiry(void **state)
{
    struct fx *f = *state;
    struct tml_bundle *b = malloc(sizeof(*b));
    assert_int_equal(
        tml_bundle_verify(f->bundle, f->len, &f->p1, 1, 1799999999, b, NULL),
        TML_BUNDLE_OK);
    assert_int_equal(
        tml_bundle_verify(f->bundle, f->len, &f->p1, 1, 1800000000, b, NULL),
        TML_BUNDLE_E_EXPIRED);
    free(b);
}

/* A manifest whose size/hash do not match the image, though validly
 * signed: size or hash error. */
static void
test_bundle_rejects_signed_manifest_for_other_image(void **state)
{
    struct fx *f = *state;
    struct tml_manifest m;
    fill_manifest(&m);
    m.model_size = 3001;
    uint8_t other[3001];
    memset(other, 0x5a, sizeof(other));
    uint8_t *b2 = NULL;
    size_t l2 = 0;
    assert_int_equal(
        tml_bundle_build(f->k1, &m, other, sizeof(other), NULL, 0, &b2, &l2),
        TML_BUNDLE_OK);
    /* Swap the image of bundle 2 for the original image (1 byte shorter):
     * size mismatch; same length other content: hash mismatch. */
    struct tml_bundle *b = malloc(sizeof(*b));
    assert_int_equal(tml_bundle_parse(b2, l2, b), TML_BUNDLE_OK);
    uint8_t buf[8192];
    struct tml_enc e;
    tml_enc_init(&e, buf, sizeof(buf));
    tml_enc_map(&e, 3);
    tml_enc_uint(&e, 0);
    tml_enc_uint(&e, 1);
    tml_enc_uint(&e, 1);
    tml_enc_bytes(&e, b->cose.p, b->cose.len);
    tml_enc_uint(&e, 2);
    tml_enc_bytes(&e, f->image, sizeof(f->image));
    size_t len;
    assert_int_equal(tml_enc_finish(&e, &len), TML_OK);
    assert_int_equal(verify_with(buf, len, &f->p1, 1), TML_BUNDLE_E_SIZE);
    other[0] ^= 1;
    tml_enc_init(&e, buf, sizeof(buf));
    tml_enc_map(&e, 3);
    tml_enc_uint(&e, 0);
    tml_enc_uint(&e, 1);
    tml_enc_uint(&e, 1);
    tml_enc_bytes(&e, b->cose.p, b->cose.len);
    tml_enc_uint(&e, 2);
    tml_enc_bytes(&e, other, sizeof(other));
    assert_int_equal(tml_enc_finish(&e, &len), TML_OK);
    assert_int_equal(verify_with(buf, len, &f->p1, 1), TML_BUNDLE_E_HASH);
    free(b);
    free(b2);
}

/* Bare COSE_Sign1 (what tmld puts in an OTA offer): sign, verify, and the
 * payload is the exact manifest encoding. */
static void
test_cose_sign_verify_manifest(void **state)
{
    struct fx *f = *state;
    struct tml_manifest m;
    fill_manifest(&m);
    m.size = 10;
    m.model_size = 10;
    uint8_t cose[TML_MAX_MANIFEST];
    size_t len = 0;
    assert_int_equal(tml_manifest_sign(f->k2, &m, cose, sizeof(cose), &len),
                     TML_BUNDLE_OK);
    struct tml_cose_sign1 s;
    struct tml_pubkey keys[2] = {f->p1, f->p2};
    size_t which = 9;
    assert_int_equal(tml_cose_verify(cose, len, keys, 2, &s, &which),
                     TML_BUNDLE_OK);
    assert_int_equal(which, 1);
    struct tml_manifest back;
    assert_int_equal(tml_manifest_decode(s.payload.p, s.payload.len, &back),
                     TML_OK);
    assert_int_equal(back.version, 7);
    assert_int_equal(back.size, 10);
    /* Deterministic signatures: same key + manifest = same bytes. */
    uint8_t again[TML_MAX_MANIFEST];
    size_t len2 = 0;
    assert_int_equal(tml_manifest_sign(f->k2, &m, again, sizeof(again), &len2),
                     TML_BUNDLE_OK);
    assert_int_equal(len, len2);
    assert_memory_equal(cose, again, len);
    /* Signature byte flipped. */
    cose[len - 1] ^= 1;
    assert_int_equal(tml_cose_verify(cose, len, keys, 2, &s, NULL),
                     TML_BUNDLE_E_SIGNATURE);
}

static void
test_pubkey_from_raw_rejects_off_curve_point(void **state)
{
    struct fx *f = *state;
    struct tml_pubkey p;
    assert_int_equal(tml_pubkey_from_raw(f->p1.raw, 65, &p), TML_BUNDLE_OK);
    assert_memory_equal(p.kid, f->p1.kid, TML_KEY_ID_LEN);
    uint8_t bad[65];
    memcpy(bad, f->p1.raw, 65);
    bad[64] ^= 1;
    assert_int_equal(tml_pubkey_from_raw(bad, 65, &p), TML_BUNDLE_E_KEY);
    assert_int_equal(tml_pubkey_from_raw(bad, 64, &p), TML_BUNDLE_E_KEY);
}

static void
test_bundle_strerror_names_every_error(void **state)
{
    (void)state;
    for (int e = 0; e < TML_BUNDLE_E__COUNT; e++)
        assert_string_not_equal(tml_bundle_strerror((enum tml_bundle_err)e),
                                "unknown error");
    assert_string_equal(tml_bundle_strerror(TML_BUNDLE_E__COUNT),
                        "unknown error");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bundle_roundtrip_verifies_and_exposes_manifest),
        cmocka_unit_test(test_bundle_rejects_wrong_key_accepts_second_trusted),
        cmocka_unit_test(test_bundle_rejects_same_kid_other_key),
        cmocka_unit_test(test_bundle_rejects_tampered_image_every_100th_byte),
        cmocka_unit_test(test_bundle_rejects_every_flipped_manifest_byte),
        cmocka_unit_test(test_bundle_rejects_every_truncation),
        cmocka_unit_test(test_bundle_rejects_trailing_bytes),
        cmocka_unit_test(
            test_bundle_rejects_unknown_critical_field_skips_unknown_optional),
        cmocka_unit_test(test_bundle_rejects_duplicate_key),
        cmocka_unit_test(test_bundle_expiry),
        cmocka_unit_test(test_bundle_rejects_signed_manifest_for_other_image),
        cmocka_unit_test(test_cose_sign_verify_manifest),
        cmocka_unit_test(test_pubkey_from_raw_rejects_off_curve_point),
        cmocka_unit_test(test_bundle_strerror_names_every_error),
    };
    return cmocka_run_group_tests_name("tmlbundle", tests, setup, teardown);
}
