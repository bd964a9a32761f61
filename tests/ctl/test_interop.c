/*
 * test_interop.c: libtmlbundle against an independent implementation
 * (tests/ctl/cose_interop.py: python3-cryptography + python3-cbor2, the
 * Sig_structure built by hand), both ways:
 *  - Python verifies bundles we sign, and rejects tampered ones and the
 *    wrong key;
 *  - we verify bundles and bare manifests Python re-encodes and signs with
 *    its own key, and reject them under our key;
 *  - F4 (differential COSE): N mutants of a signed bundle, accept/reject
 *    decisions compared; disagreements are counted and must be 0.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "tml/bundle.h"

#define N_MUTANTS 300

struct fx {
    char dir[64];
    char script[1024];
    struct tml_privkey *key;
    struct tml_pubkey pub;
    uint8_t *bundle;
    size_t len;
    char bundle_path[128], pub_path[128];
};

static int
run(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void
write_file(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/tmlctl_interop.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    const char *src = getenv("TML_SOURCE_DIR");
    snprintf(f->script, sizeof(f->script),
             "/usr/bin/python3 %s/tests/ctl/cose_interop.py", src ? src : ".");
    assert_int_equal(tml_privkey_generate(&f->key), TML_BUNDLE_OK);
    tml_privkey_public(f->key, &f->pub);
    snprintf(f->pub_path, sizeof(f->pub_path), "%s/ours.pub", f->dir);
    assert_int_equal(tml_pubkey_write_pem(&f->pub, f->pub_path), TML_BUNDLE_OK);

    static uint8_t image[4096 + 2 * 20];
    for (size_t i = 0; i < sizeof(image); i++)
        image[i] = (uint8_t)(i ^ (i >> 8));
    struct tml_manifest m;
    memset(&m, 0, sizeof(m));
    m.name = (struct tml_str){"kws", 3};
    m.hw = (struct tml_str){"nrf52840", 8};
    m.version = 7;
    m.created = 1700000000;
    m.expires = 0;
    m.model_size = 4096;
    m.n_vectors = 2;
    m.vector_input_len = 16;
    m.score_tol_bp = 500;
    m.dtype = TML_DTYPE_I8;
    m.n_shape = 1;
    m.input_shape[0] = 16;
    const char *labels[] = {"yes", "no"};
    assert_int_equal(tml_bundle_build(f->key, &m, image, sizeof(image), labels,
                                      2, &f->bundle, &f->len),
                     TML_BUNDLE_OK);
    snprintf(f->bundle_path, sizeof(f->bundle_path), "%s/ours.tmlb", f->dir);
    write_file(f->bundle_path, f->bundle, f->len);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    if (f == NULL) /* setup failed before it was set */
        return 0;
    run("rm -rf '%s'", f->dir);
    tml_privkey_free(f->key);
    free(f->bundle);
    free(f);
    return 0;
}

static void
test_python_verifies_our_bundle_and_rejects_tampering(void **state)
{
    struct fx *f = *state;
    assert_int_equal(
        run("%s verify %s %s", f->script, f->bundle_path, f->pub_path), 0);
    /* Wrong key: a fresh key of ours that did not sign it. */
    struct tml_privkey *k2;
    struct tml_pubkey p2;
    char p2_path[160], bad_path[160];
    assert_int_equal(tml_privkey_generate(&k2), TML_BUNDLE_OK);
    tml_privkey_public(k2, &p2);
    tml_privkey_free(k2);
    snprintf(p2_path, sizeof(p2_path), "%s/other.pub", f->dir);
    assert_int_equal(tml_pubkey_write_pem(&p2, p2_path), TML_BUNDLE_OK);
    assert_int_equal(run("%s verify %s %s", f->script, f->bundle_path, p2_path),
                     1);
    /* Tampered image byte (the image is followed by the labels: flip a
     * byte well inside it). */
    uint8_t *copy = malloc(f->len);
    memcpy(copy, f->bundle, f->len);
    copy[f->len - 100] ^= 0x20;
    snprintf(bad_path, sizeof(bad_path), "%s/bad.tmlb", f->dir);
    write_file(bad_path, copy, f->len);
    assert_int_equal(run("%s verify %s %s", f->script, bad_path, f->pub_path),
                     1);
    free(copy);
}

static void
test_we_verify_python_signed_bundle_and_manifest(void **state)
{
    struct fx *f = *state;
    char out[160], pub[160], cose[160], cpub[160];
    snprintf(out, sizeof(out), "%s/py.tmlb", f->dir);
    snprintf(pub, sizeof(pub), "%s/py.pub", f->dir);
    assert_int_equal(
        run("%s resign %s %s %s", f->script, f->bundle_path, out, pub), 0);
    struct tml_pubkey py;
    assert_int_equal(tml_pubkey_load(pub, &py), TML_BUNDLE_OK);
    uint8_t *buf;
    size_t len;
    assert_int_equal(tml_bundle_read_file(out, &buf, &len), TML_BUNDLE_OK);
    struct tml_bundle *b = malloc(sizeof(*b));
    assert_int_equal(tml_bundle_verify(buf, len, &py, 1, 1700000001, b, NULL),
                     TML_BUNDLE_OK);
    assert_int_equal(b->manifest.version, 8); /* Python re-encoded it */
    assert_memory_equal(b->sign1.kid.p, py.kid, TML_KEY_ID_LEN);
    assert_int_equal(tml_bundle_verify(buf, len, &f->pub, 1, 0, b, NULL),
                     TML_BUNDLE_E_UNKNOWN_KEY);
    /* Same kid, our point: the signature must fail. */
    struct tml_pubkey forged = f->pub;
    memcpy(forged.kid, py.kid, TML_KEY_ID_LEN);
    assert_int_equal(tml_bundle_verify(buf, len, &forged, 1, 0, b, NULL),
                     TML_BUNDLE_E_SIGNATURE);
    free(buf);

    /* A bare manifest (tag 18 COSE_Sign1) as an OTA offer carries it. */
    snprintf(cose, sizeof(cose), "%s/py.cose", f->dir);
    snprintf(cpub, sizeof(cpub), "%s/py2.pub", f->dir);
    assert_int_equal(
        run("%s sign-manifest %s %s %s", f->script, f->bundle_path, cose, cpub),
        0);
    assert_int_equal(tml_pubkey_load(cpub, &py), TML_BUNDLE_OK);
    assert_int_equal(tml_bundle_read_file(cose, &buf, &len), TML_BUNDLE_OK);
    struct tml_cose_sign1 s;
    assert_int_equal(tml_cose_verify(buf, len, &py, 1, &s, NULL),
                     TML_BUNDLE_OK);
    struct tml_manifest m;
    assert_int_equal(tml_manifest_decode(s.payload.p, s.payload.len, &m),
                     TML_OK);
    assert_int_equal(m.version, 8);
    buf[len / 2] ^= 1;
    assert_int_not_equal(tml_cose_verify(buf, len, &py, 1, &s, NULL),
                         TML_BUNDLE_OK);
    free(buf);
    free(b);
}

/* F4: single-byte mutants in the COSE_Sign1 and the image; both
 * implementations must agree on accept/reject for every one. */
static void
test_differential_mutants_agree(void **state)
{
    struct fx *f = *state;
    char mdir[128];
    snprintf(mdir, sizeof(mdir), "%s/mut", f->dir);
    assert_int_equal(run("mkdir -p %s", mdir), 0);
    struct tml_bundle *b = malloc(sizeof(*b));
    assert_int_equal(tml_bundle_parse(f->bundle, f->len, b), TML_BUNDLE_OK);
    size_t cose_off = (size_t)(b->cose.p - f->bundle);
    size_t img_off = (size_t)(b->image.p - f->bundle);
    int ours[N_MUTANTS];
    uint8_t *copy = malloc(f->len);
    srand(12345);
    for (int i = 0; i < N_MUTANTS; i++) {
        memcpy(copy, f->bundle, f->len);
        /* Two thirds in the COSE (headers, payload, signature), one third
         * in the image; a mutant may flip to the same byte (accepted by
         * both: a useful control). */
        size_t pos = i % 3 != 2 ? cose_off + (size_t)rand() % b->cose.len
                                : img_off + (size_t)rand() % b->image.len;
        copy[pos] = i % 10 == 0 ? copy[pos]
                                : (uint8_t)(copy[pos] ^ (1u << (rand() % 8)));
        char p[192];
        snprintf(p, sizeof(p), "%s/m%04d", mdir, i);
        write_file(p, copy, f->len);
        ours[i] = tml_bundle_verify(copy, f->len, &f->pub, 1, 0, b, NULL) ==
                  TML_BUNDLE_OK;
    }
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "%s verify-many %s %s", f->script, mdir,
             f->pub_path);
    FILE *pf = popen(cmd, "r");
    assert_non_null(pf);
    int seen = 0, disagree = 0, accepted = 0;
    char name[64];
    int theirs;
    while (fscanf(pf, "%63s %d", name, &theirs) == 2) {
        int idx = atoi(name + 1);
        assert_true(idx >= 0 && idx < N_MUTANTS);
        if (theirs != ours[idx])
            disagree++;
        accepted += ours[idx];
        seen++;
    }
    assert_int_equal(WEXITSTATUS(pclose(pf)), 0);
    print_message("F4: disagreements = %d of %d mutants (%d accepted by "
                  "both: unchanged controls)\n",
                  disagree, seen, accepted);
    assert_int_equal(seen, N_MUTANTS);
    assert_int_equal(disagree, 0);
    assert_int_equal(accepted, N_MUTANTS / 10);
    free(copy);
    free(b);
}

int
main(void)
{
    if (access("/usr/bin/python3", X_OK) != 0 ||
        system("/usr/bin/python3 -c 'import cbor2, cryptography' "
               "2>/dev/null") != 0) {
        fprintf(stderr, "tmlctl_interop: needs /usr/bin/python3 with "
                        "python3-cbor2 and python3-cryptography "
                        "(scripts/lib/deps.sh installs them)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_python_verifies_our_bundle_and_rejects_tampering),
        cmocka_unit_test(test_we_verify_python_signed_bundle_and_manifest),
        cmocka_unit_test(test_differential_mutants_agree),
    };
    return cmocka_run_group_tests_name("tmlctl_interop", tests, setup,
                                       teardown);
}
