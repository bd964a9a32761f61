/*
 * test_devsim_ota.c: signed models installed over the air into real agents
 * running in tml-devsim, through a real TLS broker. The rig's gateway
 * stand-in serves one bundle per device (offer on hello, then every chunk
 * request from the bundle image); the bundles are built and signed with
 * libtmlbundle (what `tmlctl sign` uses) and carry golden vectors.
 *
 *  - a good model (kws@2, behaviour selftest=pass): downloaded, verified,
 *    activated, golden vectors pass, confirmed; the device's telemetry then
 *    runs on version 2;
 *  - a miscompiled model (kws@3, behaviour selftest=fail): downloaded and
 *    activated, its golden vectors fail, the agent reverts; the device
 *    keeps running the model it had (none);
 *  - a model signed by a key the device does not trust (S1): refused before
 *    a single chunk is requested.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <tml/bundle.h>

#include "rig.h"

#define N_DEV 4
#define MODEL_BYTES 12000u
#define VEC_IN 64u
#define N_VEC 3u

struct fx {
    char dir[256];
    struct rig_summary sum;
    struct rig_broker broker;
    struct rig_gw gw;
    bool has_gw;
    uint8_t *bundles[N_DEV];
    size_t bundle_len[N_DEV];
    struct tml_bundle parsed[N_DEV];
    struct rig_offer offers[N_DEV];
};

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    if (f == NULL || rig_tmpdir(f->dir, sizeof(f->dir)) != 0)
        return -1;
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    size_t i;

    if (f->has_gw)
        rig_gw_stop(&f->gw);
    rig_broker_stop(&f->broker);
    for (i = 0; i < N_DEV; i++)
        free(f->bundles[i]);
    if (getenv("TML_KEEP_TMP") == NULL)
        rig_rmtree(f->dir);
    free(f);
    return 0;
}

/* model bytes, then N_VEC vectors: input, expected class u16, score u16 */
static void
make_bundle(struct fx *f, size_t i, const struct tml_privkey *key,
            uint32_t version)
{
    static uint8_t image[MODEL_BYTES + N_VEC * (VEC_IN + 4)];
    struct tml_manifest m;
    size_t k;

    for (k = 0; k < sizeof(image); k++)
        image[k] = (uint8_t)(k * 131u + version);
    for (k = 0; k < N_VEC; k++) {
        uint8_t *v = image + MODEL_BYTES + k * (VEC_IN + 4);
        v[VEC_IN] = (uint8_t)(k % 4);
        v[VEC_IN + 1] = 0;
        v[VEC_IN + 2] = (uint8_t)(9000 & 0xff);
        v[VEC_IN + 3] = (uint8_t)(9000 >> 8);
    }
    memset(&m, 0, sizeof(m));
    m.name.p = "kws";
    m.name.len = 3;
    m.version = version;
    m.hw.p = "devsim";
    m.hw.len = 6;
    m.created = (uint32_t)time(NULL) - 60;
    m.model_size = MODEL_BYTES;
    m.arena_size = 16384;
    m.min_agent_version = 0x000100;
    m.dtype = TML_DTYPE_I16;
    m.n_shape = 1;
    m.input_shape[0] = VEC_IN / 2;
    m.n_labels = 4;
    m.n_vectors = N_VEC;
    m.vector_input_len = VEC_IN;
    m.score_tol_bp = 300;
    assert_int_equal(tml_bundle_build(key, &m, image, sizeof(image), NULL, 0,
                                      &f->bundles[i], &f->bundle_len[i]),
                     TML_BUNDLE_OK);
    assert_int_equal(tml_bundle_parse(f->bundles[i], f->bundle_len[i],
                                      &f->parsed[i]),
                     TML_BUNDLE_OK);
    f->offers[i].cose = f->parsed[i].cose.p;
    f->offers[i].cose_len = f->parsed[i].cose.len;
    f->offers[i].image = f->parsed[i].image.p;
    f->offers[i].image_len = f->parsed[i].image.len;
    f->offers[i].offer_id = 100 + (uint32_t)i;
    f->offers[i].version = version;
}

static void
test_ota_good_model_confirmed_bad_reverted_untrusted_refused(void **state)
{
    struct fx *f = *state;
    struct tml_privkey *key = NULL, *rogue = NULL;
    struct tml_pubkey pub;
    char pub_path[300], behave[300], sdir[300], json[300], log[300];
    char port[16], bin[600];
    struct rig_dev_log d0, d1, d2, d3;
    FILE *fb;
    pid_t pid;
    int rc;

    assert_int_equal(tml_privkey_generate(&key), TML_BUNDLE_OK);
    assert_int_equal(tml_privkey_generate(&rogue), TML_BUNDLE_OK);
    tml_privkey_public(key, &pub);
    snprintf(pub_path, sizeof(pub_path), "%s/operator.pub", f->dir);
    assert_int_equal(tml_pubkey_write_pem(&pub, pub_path), TML_BUNDLE_OK);
    make_bundle(f, 0, key, 2);
    make_bundle(f, 1, key, 3);
    make_bundle(f, 2, rogue, 4);
    make_bundle(f, 3, key, 5);
    tml_privkey_free(key);
    tml_privkey_free(rogue);

    snprintf(behave, sizeof(behave), "%s/behaviour.ini", f->dir);
    fb = fopen(behave, "w");
    assert_non_null(fb);
    fputs("[kws@2]\nconfidence = 9200\nselftest = pass\n"
          "[kws@3]\nconfidence = 5000\nmisclass = 30%\nselftest = fail\n"
          "; a bad build whose golden vectors still pass: only its\n"
          "; telemetry gives it away (what a rollout health gate sees)\n"
          "[kws@5]\nconfidence = 5200\nspread = 1500\n"
          "wrong_confidence = 3500\nmisclass = 30%\nflag_share = 1\n",
          fb);
    fclose(fb);

    assert_int_equal(rig_broker_start(&f->broker, f->dir), 0);
    assert_int_equal(rig_gw_start(&f->gw, &f->broker, "ota-", 1, N_DEV, true),
                     0);
    f->has_gw = true;
    assert_true(rig_gw_wait_ready(&f->gw, 10000));
    rig_gw_offer(&f->gw, 0, &f->offers[0]);
    rig_gw_offer(&f->gw, 1, &f->offers[1]);
    rig_gw_offer(&f->gw, 2, &f->offers[2]);
    rig_gw_offer(&f->gw, 3, &f->offers[3]);

    snprintf(sdir, sizeof(sdir), "%s/state", f->dir);
    snprintf(json, sizeof(json), "%s/summary.json", f->dir);
    snprintf(log, sizeof(log), "%s/devsim.log", f->dir);
    snprintf(port, sizeof(port), "%d", f->broker.port);
    {
        const char *argv[] = {
            rig_bin("tools/devsim/tml-devsim", bin, sizeof(bin)), "--port",
            port, "--cafile", f->broker.ca, "--ca-cert", f->broker.ca,
            "--ca-key", f->broker.ca_key, "--state-dir", sdir, "--devices",
            "4", "--prefix", "ota-", "--trust-key", pub_path, "--behaviour",
            behave, "--rate", "5", "--duration", "6", "--summary-period",
            "1", "--drain", "20", "--status", "1", "--json-summary", json,
            /* the hash bench/ota.sh uses (the ota_e2e_* tests keep the
             * agent's mbedTLS port): a wrong digest would refuse the good
             * model below (bad hash) */
            "--sha256", "host", NULL};
        pid = rig_spawn(argv, log);
    }
    assert_true(pid > 0);
    rc = rig_wait(pid, 60000);
    if (rc != 0) {
        char *text = rig_slurp(log);
        fprintf(stderr, "devsim exit %d, log:\n%s\n", rc, text ? text : "");
        free(text);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(rig_summary_load(&f->sum, json), 0);
    assert_int_equal(f->sum.n, N_DEV);
    rig_gw_snapshot(&f->gw, 0, &d0);
    rig_gw_snapshot(&f->gw, 1, &d1);
    rig_gw_snapshot(&f->gw, 2, &d2);
    rig_gw_snapshot(&f->gw, 3, &d3);
    printf("ota-0001: model %s@%llu state %s; gateway saw state %u reason "
           "%u, %u requests, %u chunks, tele on v%u\n",
           f->sum.devs[0].model, (unsigned long long)f->sum.devs[0].model_version,
           f->sum.devs[0].ota_state, d0.last_state, d0.last_reason,
           d0.n_requests, d0.n_chunks, d0.tele_model_version);
    printf("ota-0002: model %s@%llu state %s; gateway saw state %u reason "
           "%u, %u requests\n",
           f->sum.devs[1].model, (unsigned long long)f->sum.devs[1].model_version,
           f->sum.devs[1].ota_state, d1.last_state, d1.last_reason,
           d1.n_requests);
    printf("ota-0003: model %s@%llu state %s; gateway saw state %u reason "
           "%u, %u requests\n",
           f->sum.devs[2].model, (unsigned long long)f->sum.devs[2].model_version,
           f->sum.devs[2].ota_state, d2.last_state, d2.last_reason,
           d2.n_requests);

    /* good model: installed, confirmed, telemetry on the new version */
    assert_string_equal(f->sum.devs[0].model, "kws");
    assert_int_equal(f->sum.devs[0].model_version, 2);
    assert_string_equal(f->sum.devs[0].ota_state, "confirmed");
    assert_int_equal(d0.last_state, TML_OTA_CONFIRMED);
    assert_true(d0.n_requests > 0);
    assert_int_equal(d0.tele_model_version, 2);

    /* miscompiled model: golden vectors fail on the device, reverted */
    assert_int_not_equal(f->sum.devs[1].model_version, 3);
    assert_true(d1.last_state == TML_OTA_REVERTED ||
                d1.last_state == TML_OTA_FAILED);
    assert_int_equal(d1.last_reason, TML_OTA_R_SELFTEST);
    assert_true(d1.n_requests > 0);

    /* S1: untrusted key, refused before any data was requested */
    assert_int_equal(f->sum.devs[2].model_version, 0);
    assert_int_equal(d2.last_state, TML_OTA_FAILED);
    assert_int_equal(d2.last_reason, TML_OTA_R_UNKNOWN_KEY);
    assert_int_equal(d2.n_requests, 0);

    /* A bad build that passes its golden vectors is confirmed, and its
     * telemetry is visibly worse than the good version's: the share of
     * low-confidence and flagged inferences on v5 vs v2. */
    printf("FIGURES per-version telemetry: v2 low-conf %llu/%llu flagged "
           "%llu; v5 low-conf %llu/%llu flagged %llu\n",
           (unsigned long long)d0.offer_low_conf,
           (unsigned long long)d0.offer_inferences,
           (unsigned long long)d0.offer_flagged,
           (unsigned long long)d3.offer_low_conf,
           (unsigned long long)d3.offer_inferences,
           (unsigned long long)d3.offer_flagged);
    assert_int_equal(f->sum.devs[3].model_version, 5);
    assert_string_equal(f->sum.devs[3].ota_state, "confirmed");
    assert_true(d0.offer_inferences >= 5 && d3.offer_inferences >= 5);
    assert_true(d0.offer_low_conf * 10 <= d0.offer_inferences);
    assert_true(d3.offer_low_conf * 10 >= d3.offer_inferences * 3);
    assert_true(d3.offer_flagged * 10 >= d3.offer_inferences);
    rig_summary_free(&f->sum);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_ota_good_model_confirmed_bad_reverted_untrusted_refused,
            setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
