/*
 * test_powerloss.c: power cut at every flash/state operation, MCUboot
 * style (TEST-CATALOGUE S13-S16): count the operations T of a clean run,
 * then for each i in 1..T cut the power at operation i (that operation is
 * torn), reboot, and check that the device runs the old or the complete
 * new model and its hash verifies, that the anti-rollback floor never falls
 * below the active version, and that the update can still finish. The same
 * for a revert after failed golden vectors (S14), with 50 % of state writes
 * silently corrupted (S15), and for sequence-number reservations (a record
 * number is never used twice across reboots: the gateway's idempotent
 * insert by (device, stream, seq), R1/R2, relies on it).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rig.h"

/* The slow variant (agent_powerloss_long, label slow) sweeps a bigger image
 * and runs more corrupted-state updates. */
#ifdef SWEEP_LONG
#define SWEEP_IMAGE 59000u
#define S15_UPDATES 100u
#else
#define SWEEP_IMAGE 40000u
#define S15_UPDATES 10u
#endif

struct snap {
    uint8_t flash[2][MP_SLOT_SIZE];
    uint8_t state[2][1024];
};

static void
snap_take(struct snap *s, const struct memport *mp)
{
    memcpy(s->flash, mp->flash, sizeof s->flash);
    memcpy(s->state, mp->state, sizeof s->state);
}

/* Power back on with the snapshot's flash: counters and faults cleared. */
static void
snap_restore(const struct snap *s, struct memport *mp)
{
    memcpy(mp->flash, s->flash, sizeof s->flash);
    memcpy(mp->state, s->state, sizeof s->state);
    mp->ops = 0;
    mp->stop_after = -1;
    mp->dead = false;
    mp->n_log = mp->seen = 0;
    mp->violations = 0;
    mp->has_loaded = false;
}

static void
power_on(struct memport *mp)
{
    mp->dead = false;
    mp->stop_after = -1;
}

/* The device after a reboot: what it runs must be whole and signed off. */
static bool
device_sane(struct rig *r, uint32_t old_v, uint32_t new_v, uint32_t floor0)
{
    const struct tmla_model *m = tmla_active_model(&r->a);

    if (m == NULL || (m->version != old_v && m->version != new_v))
        return false;
    if (!mp_slot_matches(r->mp, m->slot, m->size, m->sha256))
        return false;
    if (r->a.ps.floor < m->version || r->a.ps.floor < floor0)
        return false;
    return r->mp->violations == 0;
}

/* Drives whatever state the reboot left to completion. */
static void
finish_update(struct rig *r, uint32_t offer_id, uint32_t new_v)
{
    r->mp->seen = 0;
    tml_heap_armed = 1;
    (void)gw_serve(r->mp, &r->a, offer_id, r->image, r->len, 1024, NULL,
                   &r->now, 10, 400);
    tml_heap_armed = 0;
    rig_run(r, 3, 10);
    if (tmla_active_model(&r->a)->version != new_v && !tmla_in_trial(&r->a))
        (void)rig_offer_and_serve(r, NULL);
    if (tmla_in_trial(&r->a))
        assert_int_equal(tmla_confirm_model(&r->a), TML_OK);
}

static void
test_powerloss_s13_s16_install_every_op(void **state)
{
    struct rig *r = rig_new();
    struct snap *base = malloc(sizeof *base);
    long t_ops, bad = 0, floor_bad = 0;
    uint32_t offer;

    (void)state;
    assert_non_null(base);
    rig_boot(r);
    rig_install(r, 5, &r->k1);
    snap_take(base, r->mp);

    /* The clean run: T operations from boot to confirmed v6. */
    snap_restore(base, r->mp);
    rig_boot(r);
    rig_model(r, 6, SWEEP_IMAGE, 3, &r->k1);
    r->mp->ops = 0;
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_TRIAL);
    assert_int_equal(tmla_confirm_model(&r->a), TML_OK);
    t_ops = r->mp->ops;
    assert_true(t_ops > 10);

    for (long i = 1; i <= t_ops; i++) {
        snap_restore(base, r->mp);
        rig_boot(r);
        r->mp->ops = 0;
        r->mp->stop_after = i;
        r->offer_id = 100;
        (void)rig_offer_and_serve(r, NULL);
        offer = r->offer_id;
        if (tmla_in_trial(&r->a) && tmla_confirm_model(&r->a) != TML_OK)
            print_message("confirm refused in trial\n");
        assert_true(r->mp->dead);
        power_on(r->mp);
        rig_boot(r);
        if (!device_sane(r, 5, 6, 5)) {
            print_message("S13: cut at op %ld of %ld left a bad device\n", i,
                          t_ops);
            bad++;
        }
        /* S16: a lower version is refused whatever the cut point. */
        {
            rig_model(r, 4, 8000, 0, &r->k1);
            /* An offer id the download never used (a repeated offer id only
             * resumes the transfer). */
            r->offer_id = 500000;
            tml_heap_armed = 1;
            (void)gw_offer(&r->a, r->offer_id, r->cose, r->cose_len, r->now);
            tml_heap_armed = 0;
            if (rig_last_reason(r) != TML_OTA_R_ROLLBACK &&
                rig_last_reason(r) != TML_OTA_R_BUSY) {
                print_message("S16: cut %ld: v4 offer gave reason %u\n", i,
                              rig_last_reason(r));
                floor_bad++;
            }
        }
        /* And the update still completes. */
        rig_model(r, 6, SWEEP_IMAGE, 3, &r->k1);
        finish_update(r, offer, 6);
        if (tmla_active_model(&r->a)->version != 6 || !device_sane(r, 6, 6, 6))
            bad++;
    }
    print_message("S13: %ld of %ld interruption points left an invalid or "
                  "mixed model; S16: %ld downgrades accepted\n",
                  bad, t_ops, floor_bad);
    assert_int_equal(bad, 0);
    assert_int_equal(floor_bad, 0);
    free(base);
    rig_free(r);
}

/* Double cuts (S13): cut at operation i of the download, reboot, resume,
 * cut at operation j of the resumed transfer (the boot's state write and
 * the first poll included), reboot and finish with the same offer. Every
 * pair must end on a whole v6 without a new offer (the hash check of a
 * page rewritten after the first cut was the failure), and no resume may
 * start before the last chunk whose data write returned, except by the
 * bytes of the erase page a torn data write forces to be written again.
 * Both cuts are swept over every operation (every DOUBLE_STRIDE-th first
 * cut by default; all of them in the slow variant). */
#ifdef SWEEP_LONG
#define DOUBLE_STRIDE 1
#else
#define DOUBLE_STRIDE 5
#endif

/* Offset the device resumes from after a reboot (rig_boot), or 0. */
static uint32_t
resume_offset(struct rig *r)
{
    uint8_t st;

    tmla_ota_status(&r->a, &st, NULL, NULL);
    return st == TML_OTA_DOWNLOADING ? r->a.ota_offset : 0;
}

static void
test_powerloss_s13_double_cut(void **state)
{
    struct rig *r = rig_new();
    struct snap *base = malloc(sizeof *base), *mid = malloc(sizeof *mid);
    long t_ops, pairs = 0, bad = 0, over_chunk = 0;
    uint32_t offer, max_loss = 0;

    (void)state;
    assert_non_null(base);
    assert_non_null(mid);
    rig_boot(r);
    rig_install(r, 5, &r->k1);
    snap_take(base, r->mp);
    rig_boot(r);
    rig_model(r, 6, SWEEP_IMAGE, 3, &r->k1);
    r->mp->ops = 0;
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_TRIAL);
    t_ops = r->mp->ops;

    for (long i = 1; i <= t_ops; i += DOUBLE_STRIDE) {
        uint32_t done1, res1;
        long t2;

        snap_restore(base, r->mp);
        rig_boot(r);
        r->mp->ops = 0;
        r->mp->stop_after = i;
        r->offer_id = 100;
        (void)rig_offer_and_serve(r, NULL);
        offer = r->offer_id;
        done1 = r->a.ota_offset;
        power_on(r->mp);
        snap_take(mid, r->mp);
        snap_restore(mid, r->mp);
        rig_boot(r);
        res1 = resume_offset(r);
        if (res1 == 0)
            continue; /* the first cut left no download to resume */
        if (done1 > res1 && done1 - res1 > max_loss)
            max_loss = done1 - res1;
        /* The clean resumed run from this point: T2 operations. */
        (void)gw_serve(r->mp, &r->a, offer, r->image, r->len, 1024, NULL,
                       &r->now, 10, 400);
        t2 = r->mp->ops;
        for (long j = 1; j <= t2; j++) {
            uint32_t done2, res2;
            uint8_t st;

            snap_restore(mid, r->mp);
            r->mp->stop_after = j;
            rig_boot(r);
            (void)gw_serve(r->mp, &r->a, offer, r->image, r->len, 1024, NULL,
                           &r->now, 10, 400);
            rig_run(r, 3, 10);
            done2 = r->a.ota_offset;
            power_on(r->mp);
            r->mp->seen = r->mp->n_log;
            rig_boot(r);
            pairs++;
            res2 = resume_offset(r);
            if (res2 != 0 && done2 > res2) {
                if (done2 - res2 > max_loss)
                    max_loss = done2 - res2;
                if (done2 - res2 > r->cfg.ota_chunk)
                    over_chunk++;
            }
            /* Finish with the same offer: no restart from 0. */
            (void)gw_serve(r->mp, &r->a, offer, r->image, r->len, 1024, NULL,
                           &r->now, 10, 400);
            rig_run(r, 3, 10);
            tmla_ota_status(&r->a, &st, NULL, NULL);
            if (!tmla_in_trial(&r->a) ||
                tmla_active_model(&r->a)->version != 6 ||
                !device_sane(r, 6, 6, 6)) {
                if (bad < 5)
                    print_message("double cut %ld,%ld: state %u reason %u\n",
                                  i, j, st, rig_last_reason(r));
                bad++;
            }
        }
    }
    print_message("S13 double cuts: %ld of %ld (cut, resume, cut) pairs "
                  "failed to finish the same download on a whole model; "
                  "largest rewind %u bytes (chunk %u, erase page %u), %ld "
                  "rewinds past one chunk\n",
                  bad, pairs, max_loss, r->cfg.ota_chunk, MP_ERASE,
                  over_chunk);
    assert_true(pairs > t_ops / DOUBLE_STRIDE);
    assert_int_equal(bad, 0);
    assert_true(max_loss <= MP_ERASE);
    free(mid);
    free(base);
    rig_free(r);
}

static void
test_powerloss_s14_revert_every_op(void **state)
{
    struct rig *r = rig_new();
    struct snap *base = malloc(sizeof *base);
    long t_ops, bad = 0;
    uint8_t st;

    (void)state;
    assert_non_null(base);
    rig_boot(r);
    rig_install(r, 5, &r->k1);
    r->mp->model_broken = true;
    snap_take(base, r->mp);

    snap_restore(base, r->mp);
    rig_boot(r);
    rig_model(r, 6, 20000, 3, &r->k1);
    r->mp->ops = 0;
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_REVERTED);
    t_ops = r->mp->ops;

    for (long i = 1; i <= t_ops; i++) {
        snap_restore(base, r->mp);
        rig_boot(r);
        r->mp->ops = 0;
        r->mp->stop_after = i;
        (void)rig_offer_and_serve(r, NULL);
        power_on(r->mp);
        rig_boot(r);
        if (!device_sane(r, 5, 6, 5))
            bad++;
        /* Whatever was interrupted, the broken model never stays. */
        rig_run(r, 5, 10);
        tmla_ota_status(&r->a, &st, NULL, NULL);
        if (tmla_active_model(&r->a)->version != 5 || !device_sane(r, 5, 5, 5))
            bad++;
    }
    print_message("S14: %ld of %ld interrupted reverts did not end on the "
                  "old model\n",
                  bad, t_ops);
    assert_int_equal(bad, 0);
    free(base);
    rig_free(r);
}

static void
test_powerloss_s15_half_the_state_writes_fail(void **state)
{
    struct rig *r = rig_new();
    long unverified = 0, confirmed = 0;

    (void)state;
    rig_boot(r);
    rig_install(r, 1, &r->k1);
    r->mp->state_fail_pct = 50;
    for (uint32_t v = 2; v < 2 + S15_UPDATES; v++) {
        rig_boot(r);
        rig_model(r, v, 20000, 3, &r->k1);
        (void)rig_offer_and_serve(r, NULL);
        if (tmla_in_trial(&r->a) && tmla_confirm_model(&r->a) == TML_OK)
            confirmed++;
        rig_boot(r);
        {
            const struct tmla_model *m = tmla_active_model(&r->a);

            if (m == NULL ||
                !mp_slot_matches(r->mp, m->slot, m->size, m->sha256))
                unverified++;
        }
    }
    print_message("S15: unverified activations = %ld (%u updates, %ld "
                  "confirmed, 50%% of state writes corrupted)\n",
                  unverified, S15_UPDATES, confirmed);
    assert_int_equal(unverified, 0);
    assert_true(confirmed > 0);
    assert_int_equal(r->mp->violations, 0);
    rig_free(r);
}

/* Collects every tele/sample seq published in the log into seen[stream]. */
static void
collect(const struct memport *mp, uint32_t *max_tele, uint32_t *min_tele,
        uint32_t *max_sample, uint32_t *min_sample)
{
    for (size_t i = 0; i < mp->n_log && i < MP_LOG; i++) {
        const struct mp_msg *m = &mp->log[i];

        if (m->kind == TML_KIND_TELE) {
            struct tml_tele t;

            assert_int_equal(tml_tele_decode(m->payload, m->len, &t), TML_OK);
            if (t.seq > *max_tele)
                *max_tele = t.seq;
            if (t.seq < *min_tele)
                *min_tele = t.seq;
        } else if (m->kind == TML_KIND_SAMPLE) {
            struct tml_sample s;

            assert_int_equal(tml_sample_decode(m->payload, m->len, &s), TML_OK);
            if (s.seq > *max_sample)
                *max_sample = s.seq;
            if (s.seq < *min_sample)
                *min_sample = s.seq;
        }
    }
}

static void
traffic(struct rig *r, unsigned periods)
{
    uint8_t in[600];
    struct tmla_inference inf = {.confidence_bp = 100};

    memset(in, 0x33, sizeof in);
    for (unsigned p = 0; p < periods && !r->mp->dead; p++) {
        tml_heap_armed = 1;
        tmla_record(&r->a, p % 4, 9000, 1000);
        (void)tmla_capture(&r->a, &inf, in, sizeof in, TML_REASON_FLAGGED,
                           r->now);
        tml_heap_armed = 0;
        rig_run(r, 1, 60000);
        tml_heap_armed = 1;
        (void)gw_ack(&r->a, true, r->a.tele_next - 1, true,
                     r->a.sample_next - 1, r->now);
        tml_heap_armed = 0;
    }
}

static void
test_powerloss_seq_reservation_every_op(void **state)
{
    struct rig *r = rig_new();
    struct snap *base = malloc(sizeof *base);
    long t_ops, reused = 0;

    (void)state;
    assert_non_null(base);
    r->cfg.budget_period_s = 60;
    r->cfg.sample_budget = 1;
    rig_boot(r);
    snap_take(base, r->mp);
    snap_restore(base, r->mp);
    rig_boot(r);
    r->mp->ops = 0;
    traffic(r, 140); /* > 2 blocks of both streams */
    t_ops = r->mp->ops;
    assert_true(t_ops >= 4);

    for (long i = 1; i <= t_ops; i++) {
        uint32_t max_t = 0, min_t = UINT32_MAX, max_s = 0, min_s = UINT32_MAX;
        uint32_t max_t2 = 0, min_t2 = UINT32_MAX, max_s2 = 0;
        uint32_t min_s2 = UINT32_MAX;

        snap_restore(base, r->mp);
        rig_boot(r);
        r->mp->ops = 0;
        r->mp->stop_after = i;
        traffic(r, 140);
        collect(r->mp, &max_t, &min_t, &max_s, &min_s);
        power_on(r->mp);
        r->mp->n_log = 0;
        rig_boot(r);
        traffic(r, 3);
        collect(r->mp, &max_t2, &min_t2, &max_s2, &min_s2);
        if ((max_t != 0 && min_t2 <= max_t) ||
            (max_s != 0 && min_s2 <= max_s) || max_t2 == 0 || max_s2 == 0) {
            print_message("seq: cut %ld: tele %u..%u then %u..%u, sample "
                          "%u..%u then %u..%u\n",
                          i, min_t, max_t, min_t2, max_t2, min_s, max_s, min_s2,
                          max_s2);
            reused++;
        }
    }
    print_message("seq: %ld of %ld cut points reused a sequence number\n",
                  reused, t_ops);
    assert_int_equal(reused, 0);
    free(base);
    rig_free(r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_powerloss_s13_s16_install_every_op),
        cmocka_unit_test(test_powerloss_s13_double_cut),
        cmocka_unit_test(test_powerloss_s14_revert_every_op),
        cmocka_unit_test(test_powerloss_s15_half_the_state_writes_fail),
        cmocka_unit_test(test_powerloss_seq_reservation_every_op),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
