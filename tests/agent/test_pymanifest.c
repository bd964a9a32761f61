/*
 * test_pymanifest.c: a manifest signed by independent code (python3
 * cryptography + cbor2, Sig_structure built by hand in pysign.py) is
 * accepted by the agent and the update installs; the same manifest with any
 * byte of its signature flipped is refused, and on several hundred mutated
 * manifests the agent's verdict equals the independent verifier's (F4).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "support.h"

static size_t
slurp(const char *dir, const char *name, uint8_t *buf, size_t cap)
{
    char path[512];
    FILE *f;
    size_t n;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "rb");
    assert_non_null(f);
    n = fread(buf, 1, cap, f);
    assert_true(feof(f));
    fclose(f);
    unlink(path);
    return n;
}

static void
test_agent_accepts_python_signed_manifest(void **state)
{
    char dir[] = "/tmp/tmla-py-XXXXXX";
    const char *src = getenv("TML_SOURCE_DIR");
    char script[512];
    static uint8_t image[65536], mutants[262144];
    size_t mut_len, n_mut = 0, disagree = 0, accepted = 0;
    uint8_t cose[TML_MAX_MANIFEST + 1], kid[32], pub[80];
    size_t image_len, cose_len, kid_len, pub_len;
    struct tmla_trusted_key key;
    struct tmla_config cfg;
    struct tmla_agent a;
    struct memport *mp = mp_new();
    uint32_t now = 1000;
    uint8_t st;
    pid_t pid;
    int status;

    (void)state;
    assert_non_null(src);
    assert_non_null(mkdtemp(dir));
    snprintf(script, sizeof script, "%s/tests/agent/pysign.py", src);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl("/usr/bin/python3", "python3", script, dir, (char *)NULL);
        _exit(127);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    pub_len = slurp(dir, "pub.bin", pub, sizeof pub);
    kid_len = slurp(dir, "kid.bin", kid, sizeof kid);
    image_len = slurp(dir, "image.bin", image, sizeof image);
    cose_len = slurp(dir, "manifest.cose", cose, sizeof cose);
    mut_len = slurp(dir, "mutants.bin", mutants, sizeof mutants);
    rmdir(dir);
    assert_int_equal(pub_len, 65);
    assert_true(kid_len > 0 && kid_len <= TML_MAX_KID);

    memset(&key, 0, sizeof key);
    memcpy(key.kid, kid, kid_len);
    key.kid_len = (uint8_t)kid_len;
    memcpy(key.pub, pub, 65);
    mp_config(&cfg, &key, 1);
    assert_int_equal(tmla_init(&a, &cfg, &mp->port, now), TML_OK);
    tmla_on_connect(&a, now);
    tmla_poll(&a, now);

    /* F4: the agent and the independent verifier agree on every mutant
     * (each byte flipped, then random multi-byte damage). */
    for (size_t pos = 0; pos + 3 <= mut_len;) {
        size_t len = (size_t)mutants[pos] << 8 | mutants[pos + 1];
        bool py_ok, agent_ok;

        assert_true(pos + 3 + len <= mut_len);
        py_ok = mutants[pos + 2 + len] != 0;
        assert_int_equal(
            gw_offer(&a, 1000 + (uint32_t)n_mut, mutants + pos + 2, len, now),
            TML_OK);
        tmla_ota_status(&a, &st, NULL, NULL);
        agent_ok = st == TML_OTA_DOWNLOADING;
        if (agent_ok != py_ok) {
            print_message("F4: mutant %zu: python %d, agent %d\n", n_mut, py_ok,
                          agent_ok);
            disagree++;
        }
        if (agent_ok) {
            struct tml_ota_down c = {.kind = TML_OTA_DOWN_CANCEL,
                                     .offer_id = 1000 + (uint32_t)n_mut};
            uint8_t buf[32];
            size_t n;

            accepted++;
            assert_int_equal(tml_ota_down_encode(&c, buf, sizeof buf, &n),
                             TML_OK);
            assert_int_equal(gw_send(&a, TML_KIND_OTA, buf, n, now), TML_OK);
        }
        pos += 3 + len;
        n_mut++;
    }
    print_message("F4: disagreements = %zu of %zu mutants (%zu accepted)\n",
                  disagree, n_mut, accepted);
    assert_true(n_mut > 300);
    assert_int_equal(disagree, 0);
    assert_true(accepted >= 1); /* the original (and unchanged copies) */

    /* Every flipped signature byte is refused first. */
    for (size_t i = cose_len - 64; i < cose_len; i++) {
        cose[i] ^= 0x40;
        assert_int_equal(gw_offer(&a, 7, cose, cose_len, now), TML_OK);
        tmla_ota_status(&a, &st, NULL, NULL);
        assert_int_not_equal(st, TML_OTA_DOWNLOADING);
        cose[i] ^= 0x40;
    }
    assert_int_equal(gw_offer(&a, 8, cose, cose_len, now), TML_OK);
    tmla_ota_status(&a, &st, NULL, NULL);
    assert_int_equal(st, TML_OTA_DOWNLOADING);
    (void)gw_serve(mp, &a, 8, image, image_len, 1024, NULL, &now, 10, 200);
    tmla_ota_status(&a, &st, NULL, NULL);
    assert_int_equal(st, TML_OTA_TRIAL);
    assert_int_equal(mp->n_infer, 2); /* both golden vectors passed */
    assert_int_equal(tmla_confirm_model(&a), TML_OK);
    assert_int_equal(tmla_active_model(&a)->version, 42);
    assert_string_equal(tmla_active_model(&a)->name, "py-model");
    mp_free(mp);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agent_accepts_python_signed_manifest),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
