/*
 * test_rollout.c: the rollout state machine (daemon/rollout.c) driven by
 * synthetic device events and a fake clock, no I/O: deterministic waves,
 * the concurrency cap, timeouts and retries, the failure threshold (issue 5:
 * 30 % self-test failures pause at the canary wave), the health gate
 * (advance / hold / fail with rollback), pause/resume/abort, offline and
 * late devices, resume after a reconnect, offer binding (S7) and restore.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "rollout.h"

#define MAX_LOG 4096

struct fake {
    unsigned n_offers, n_cancels, n_rollbacks, n_gates, n_changed;
    char offered[MAX_LOG][TML_MAX_DEVICE_ID + 1];
    uint32_t offered_id[MAX_LOG];
    unsigned gate_wave;
    bool gate_answers; /* answer synchronously with `verdict` */
    enum health_verdict verdict;
    bool rollback_available;
    int offer_rc;
};

static int
fake_offer(void *ctx, struct rollout *r, struct rollout_dev *d)
{
    struct fake *f = ctx;

    (void)r;
    if (f->offer_rc != 0)
        return f->offer_rc;
    if (f->n_offers < MAX_LOG) {
        snprintf(f->offered[f->n_offers], sizeof(f->offered[0]), "%s", d->id);
        f->offered_id[f->n_offers] = d->offer_id;
    }
    f->n_offers++;
    return 0;
}

static void
fake_cancel(void *ctx, struct rollout *r, struct rollout_dev *d)
{
    (void)r;
    (void)d;
    ((struct fake *)ctx)->n_cancels++;
}

static int
fake_rollback(void *ctx, struct rollout *r, struct rollout_dev *d)
{
    struct fake *f = ctx;

    (void)r;
    (void)d;
    if (!f->rollback_available)
        return -ENOENT;
    f->n_rollbacks++;
    return 0;
}

static void
fake_gate(void *ctx, struct rollout *r, unsigned wave, uint64_t since_ms)
{
    struct fake *f = ctx;
    struct health_result res;

    (void)since_ms;
    f->n_gates++;
    f->gate_wave = wave;
    if (f->gate_answers) {
        memset(&res, 0, sizeof(res));
        res.verdict = f->verdict;
        snprintf(res.reason, sizeof(res.reason), "synthetic %s",
                 health_verdict_name(f->verdict));
        rollout_gate_result(r, wave, &res, 0);
    }
}

static void
fake_changed(void *ctx, struct rollout *r, struct rollout_dev *d)
{
    (void)r;
    (void)d;
    ((struct fake *)ctx)->n_changed++;
}

static struct rollout_ops
ops_for(struct fake *f)
{
    struct rollout_ops ops = {f, fake_offer, fake_cancel, fake_rollback,
                              fake_gate, fake_changed};
    return ops;
}

static void
small_policy(struct rollout_policy *p)
{
    rollout_policy_default(p);
    p->max_concurrent = 1000;
    p->device_timeout_ms = 1000;
    p->trial_timeout_ms = 5000;
    p->soak_ms = 100;
    p->gate_retry_ms = 100;
    p->gate_max_wait_ms = 1000;
}

/* small_policy with one wave of 100 %. */
static void
one_wave_policy(struct rollout_policy *p)
{
    small_policy(p);
    p->n_waves = 1;
    p->wave_pct[0] = 100;
}

/* A rollout of n devices "dev-<i>", all online, started at t = 0. */
static void
make(struct rollout *r, struct fake *f, const struct rollout_policy *p,
     unsigned n)
{
    struct rollout_ops ops = ops_for(f);
    char id[32];

    memset(f, 0, sizeof(*f));
    f->gate_answers = true;
    f->verdict = HEALTH_ADVANCE;
    f->rollback_available = true;
    ops = ops_for(f);
    assert_int_equal(rollout_init(r, 7, 12, p, "kws/turbines", 1000, n + 16,
                                  &ops),
                     0);
    for (unsigned i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "dev-%u", i);
        assert_int_equal(rollout_add_device(r, id, true, 0), 0);
    }
    rollout_start(r, 0);
}

/* Every device currently in flight in `wave` answers with `state`. */
static unsigned
answer_wave(struct rollout *r, int wave, uint8_t ota_state, uint8_t reason,
            uint64_t now)
{
    unsigned n = 0;

    for (size_t i = 0; i < r->n_devs; i++) {
        struct rollout_dev *d = &r->devs[i];
        if ((wave >= 0 && d->wave != (unsigned)wave) ||
            d->state != RDEV_OFFERED)
            continue;
        assert_int_equal(rollout_on_status(r, d->id, d->offer_id, ota_state,
                                           reason, 0, now),
                         0);
        n++;
    }
    return n;
}

static void
test_rollout_waves_are_deterministic_by_hash(void **state)
{
    struct rollout_policy p;
    struct rollout a, b;
    struct fake fa, fb;
    struct rollout_ops ops;
    uint32_t c[RDEV__COUNT];
    char id[32];

    (void)state;
    small_policy(&p);
    make(&a, &fa, &p, 100);
    rollout_counts(&a, 0, c);
    assert_int_equal(a.waves[0].n_devices, 5);
    assert_int_equal(a.waves[1].n_devices, 20);
    assert_int_equal(a.waves[2].n_devices, 75);

    /* Same seed, devices added in reverse order: same canaries. */
    memset(&fb, 0, sizeof(fb));
    ops = ops_for(&fb);
    assert_int_equal(rollout_init(&b, 8, 12, &p, "kws/turbines", 5000, 100,
                                  &ops),
                     0);
    for (int i = 99; i >= 0; i--) {
        snprintf(id, sizeof(id), "dev-%d", i);
        assert_int_equal(rollout_add_device(&b, id, true, 0), 0);
    }
    rollout_start(&b, 0);
    for (unsigned i = 0; i < 100; i++) {
        snprintf(id, sizeof(id), "dev-%u", i);
        assert_int_equal(rollout_find(&a, id)->wave,
                         rollout_find(&b, id)->wave);
    }
    rollout_free(&b);

    /* Another seed picks other canaries (with overwhelming probability for
     * 5 of 100; the seeds are fixed so this is deterministic). */
    assert_int_equal(rollout_init(&b, 9, 12, &p, "other-model", 5000, 100,
                                  &ops),
                     0);
    for (unsigned i = 0; i < 100; i++) {
        snprintf(id, sizeof(id), "dev-%u", i);
        assert_int_equal(rollout_add_device(&b, id, true, 0), 0);
    }
    rollout_start(&b, 0);
    unsigned same = 0;
    for (unsigned i = 0; i < 100; i++) {
        snprintf(id, sizeof(id), "dev-%u", i);
        if (rollout_find(&a, id)->wave == 0 && rollout_find(&b, id)->wave == 0)
            same++;
    }
    assert_true(same < 5);
    rollout_free(&b);
    rollout_free(&a);
}

static void
test_rollout_small_canary_still_has_one_device(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;

    (void)state;
    small_policy(&p);
    make(&r, &f, &p, 3);
    assert_int_equal(r.waves[0].n_devices, 1);
    assert_int_equal(r.waves[1].n_devices, 0);
    assert_int_equal(r.waves[2].n_devices, 2);
    rollout_free(&r);
}

static void
test_rollout_parse_waves(void **state)
{
    struct rollout_policy p;

    (void)state;
    rollout_policy_default(&p);
    assert_int_equal(rollout_parse_waves("1,10,50,100", &p), 0);
    assert_int_equal(p.n_waves, 4);
    assert_int_equal(p.wave_pct[1], 10);
    assert_int_equal(rollout_parse_waves("5%,100%", &p), 0);
    assert_int_equal(p.n_waves, 2);
    assert_int_equal(rollout_parse_waves("100", &p), 0);
    assert_int_equal(p.n_waves, 1);
    assert_int_equal(rollout_parse_waves("", &p), -EINVAL);
    assert_int_equal(rollout_parse_waves("5,25", &p), -EINVAL);
    assert_int_equal(rollout_parse_waves("25,5,100", &p), -EINVAL);
    assert_int_equal(rollout_parse_waves("0,100", &p), -EINVAL);
    assert_int_equal(rollout_parse_waves("5,,100", &p), -EINVAL);
    assert_int_equal(rollout_parse_waves("5,x", &p), -EINVAL);
    assert_int_equal(rollout_parse_waves("1,2,3,4,5,6,7,8,100", &p),
                     -EINVAL);
    assert_int_equal(rollout_parse_waves("99999,100", &p), -EINVAL);
    assert_int_equal(p.n_waves, 1); /* unchanged by the failures */
    assert_null(rollout_policy_check(&p));
    p.max_concurrent = 0;
    assert_non_null(rollout_policy_check(&p));
}

static void
test_rollout_respects_max_concurrent(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;

    (void)state;
    one_wave_policy(&p);
    p.max_concurrent = 10;
    make(&r, &f, &p, 100);
    rollout_tick(&r, 1);
    assert_int_equal(f.n_offers, 10);
    rollout_tick(&r, 2);
    assert_int_equal(f.n_offers, 10);
    /* Three finish downloading (verifying no longer counts once
     * activating): three new offers. */
    unsigned done = 0;
    for (size_t i = 0; i < r.n_devs && done < 3; i++) {
        if (r.devs[i].state == RDEV_OFFERED) {
            assert_int_equal(rollout_on_status(&r, r.devs[i].id,
                                               r.devs[i].offer_id,
                                               TML_OTA_TRIAL, 0, 0, 3),
                             0);
            done++;
        }
    }
    rollout_tick(&r, 4);
    assert_int_equal(f.n_offers, 13);
    rollout_free(&r);
}

static void
test_rollout_times_out_and_retries_then_fails(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;
    struct rollout_dev *d;

    (void)state;
    one_wave_policy(&p);
    p.max_retries = 2;
    make(&r, &f, &p, 1);
    d = &r.devs[0];
    rollout_tick(&r, 0);
    assert_int_equal(f.n_offers, 1);
    assert_int_equal(d->state, RDEV_OFFERED);
    /* Progress keeps it alive past the first deadline. */
    assert_int_equal(rollout_on_request(&r, d->id, d->offer_id, 4096, 900), 0);
    rollout_tick(&r, 1500);
    assert_int_equal(d->state, RDEV_DOWNLOADING);
    assert_int_equal(d->offset, 4096);
    rollout_tick(&r, 1900);
    assert_int_equal(d->state, RDEV_PENDING);
    assert_int_equal(d->reason, ROLLOUT_R_TIMEOUT);
    /* Retry waits its delay, then re-offers with the same offer id. */
    rollout_tick(&r, 2000);
    assert_int_equal(f.n_offers, 1);
    rollout_tick(&r, 2900);
    assert_int_equal(f.n_offers, 2);
    assert_int_equal(f.offered_id[1], f.offered_id[0]);
    rollout_tick(&r, 3900);
    rollout_tick(&r, 4900);
    assert_int_equal(f.n_offers, 3);
    assert_int_equal(d->attempts, 3);
    rollout_tick(&r, 5900);
    assert_int_equal(d->state, RDEV_FAILED);
    assert_int_equal(d->reason, ROLLOUT_R_TIMEOUT);
    assert_string_equal(rollout_reason_name(d->reason), "timeout");
    rollout_free(&r);
}

static void
test_rollout_permanent_refusal_is_not_retried(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;

    (void)state;
    one_wave_policy(&p);
    p.failure_threshold_pct = 100;
    make(&r, &f, &p, 2);
    rollout_tick(&r, 0);
    assert_int_equal(rollout_on_status(&r, r.devs[0].id, r.devs[0].offer_id,
                                       TML_OTA_FAILED, TML_OTA_R_WRONG_HW, 0,
                                       10),
                     0);
    assert_int_equal(rollout_on_status(&r, r.devs[1].id, r.devs[1].offer_id,
                                       TML_OTA_FAILED, TML_OTA_R_BAD_HASH, 0,
                                       10),
                     0);
    assert_int_equal(r.devs[0].state, RDEV_FAILED);
    assert_int_equal(r.devs[0].reason, TML_OTA_R_WRONG_HW);
    assert_int_equal(r.devs[1].state, RDEV_PENDING); /* transient: retry */
    rollout_tick(&r, 2000);
    assert_int_equal(f.n_offers, 3);
    rollout_free(&r);
}

/* Issue 5: the new model fails self-test on 30 % of the canaries: the
 * rollout pauses at the canary wave with the reason. */
static void
test_rollout_pauses_when_wave_fails(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;
    unsigned n_bad = 0, n_good = 0;

    (void)state;
    small_policy(&p);
    assert_int_equal(rollout_parse_waves("10,100", &p), 0);
    make(&r, &f, &p, 100);
    rollout_tick(&r, 0);
    assert_int_equal(f.n_offers, 10);
    for (size_t i = 0; i < r.n_devs; i++) {
        struct rollout_dev *d = &r.devs[i];
        if (d->state != RDEV_OFFERED)
            continue;
        if (n_bad < 3) {
            assert_int_equal(rollout_on_status(&r, d->id, d->offer_id,
                                               TML_OTA_REVERTED,
                                               TML_OTA_R_SELFTEST, 0, 5),
                             0);
            n_bad++;
        } else {
            assert_int_equal(rollout_on_status(&r, d->id, d->offer_id,
                                               TML_OTA_CONFIRMED, 0, 0, 5),
                             0);
            n_good++;
        }
    }
    rollout_tick(&r, 10);
    assert_int_equal(r.state, ROLLOUT_PAUSED);
    assert_non_null(strstr(r.reason, "wave 1: 3 of 10 devices failed"));
    assert_non_null(strstr(r.reason, "self-test failed"));
    assert_int_equal(r.cur_wave, 0);
    /* Paused: nothing further is offered, the gate is not asked. */
    rollout_tick(&r, 5000);
    assert_int_equal(f.n_offers, 10);
    assert_int_equal(f.n_gates, 0);
    /* The operator resumes past the known failures: the wave proceeds. */
    assert_int_equal(rollout_resume(&r, 6000), 0);
    assert_int_equal(rollout_resume(&r, 6000), -EALREADY);
    rollout_tick(&r, 6000);
    rollout_tick(&r, 6200);
    assert_int_equal(f.n_gates, 1);
    assert_int_equal(r.cur_wave, 1);
    rollout_free(&r);
}

static void
test_rollout_gate_advances_after_soak(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;
    uint32_t c[RDEV__COUNT];

    (void)state;
    small_policy(&p);
    make(&r, &f, &p, 100);
    rollout_tick(&r, 0);
    assert_int_equal(f.n_offers, 5);
    assert_int_equal(answer_wave(&r, 0, TML_OTA_CONFIRMED, 0, 10), 5);
    rollout_tick(&r, 20);
    assert_int_equal(r.waves[0].state, WAVE_SOAK);
    assert_int_equal(f.n_gates, 0);
    rollout_tick(&r, 119);
    assert_int_equal(f.n_gates, 0);
    rollout_tick(&r, 120);
    assert_int_equal(f.n_gates, 1);
    assert_int_equal(r.waves[0].state, WAVE_PASSED);
    assert_int_equal(r.cur_wave, 1);
    rollout_tick(&r, 130);
    assert_int_equal(f.n_offers, 25);
    assert_int_equal(answer_wave(&r, 1, TML_OTA_CONFIRMED, 0, 140), 20);
    rollout_tick(&r, 150);
    rollout_tick(&r, 300);
    assert_int_equal(r.cur_wave, 2);
    rollout_tick(&r, 310);
    assert_int_equal(answer_wave(&r, 2, TML_OTA_CONFIRMED, 0, 320), 75);
    rollout_tick(&r, 330);
    assert_int_equal(r.state, ROLLOUT_DONE);
    /* No gate after the last wave: nothing left to advance to. */
    assert_int_equal(f.n_gates, 2);
    rollout_counts(&r, -1, c);
    assert_int_equal(c[RDEV_CONFIRMED], 100);
    rollout_free(&r);
}

static void
test_rollout_gate_hold_then_pauses_after_max_wait(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;
    struct health_result res;

    (void)state;
    small_policy(&p);
    make(&r, &f, &p, 40);
    f.gate_answers = false;
    rollout_tick(&r, 0);
    answer_wave(&r, 0, TML_OTA_CONFIRMED, 0, 1);
    rollout_tick(&r, 10);
    rollout_tick(&r, 200);
    assert_int_equal(f.n_gates, 1);
    assert_int_equal(r.waves[0].state, WAVE_GATE);
    memset(&res, 0, sizeof(res));
    res.verdict = HEALTH_HOLD;
    snprintf(res.reason, sizeof(res.reason), "waiting for data: 2/3");
    rollout_gate_result(&r, 0, &res, 200);
    rollout_tick(&r, 250);
    assert_int_equal(f.n_gates, 1);
    rollout_tick(&r, 300);
    assert_int_equal(f.n_gates, 2);
    /* A late answer for another wave is ignored. */
    rollout_gate_result(&r, 1, &res, 300);
    rollout_gate_result(&r, 0, &res, 1300);
    assert_int_equal(r.state, ROLLOUT_PAUSED);
    assert_non_null(strstr(r.reason, "undecided"));
    assert_non_null(strstr(r.reason, "waiting for data"));
    /* Resume asks again at once. */
    assert_int_equal(rollout_resume(&r, 2000), 0);
    rollout_tick(&r, 2000);
    assert_int_equal(f.n_gates, 3);
    res.verdict = HEALTH_ADVANCE;
    rollout_gate_result(&r, 0, &res, 2001);
    assert_int_equal(r.cur_wave, 1);
    rollout_free(&r);
}

static void
test_rollout_gate_failure_pauses_and_rolls_back(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;
    uint32_t c[RDEV__COUNT];

    (void)state;
    small_policy(&p);
    make(&r, &f, &p, 100);
    f.verdict = HEALTH_FAIL;
    rollout_tick(&r, 0);
    answer_wave(&r, 0, TML_OTA_CONFIRMED, 0, 1);
    rollout_tick(&r, 10);
    rollout_tick(&r, 200);
    assert_int_equal(r.state, ROLLOUT_PAUSED);
    assert_int_equal(r.waves[0].state, WAVE_FAILED);
    assert_non_null(strstr(r.reason, "wave 1 failed its health gate"));
    assert_non_null(strstr(r.waves[0].gate_reason, "synthetic fail"));
    assert_int_equal(f.n_rollbacks, 5);
    rollout_counts(&r, 0, c);
    assert_int_equal(c[RDEV_ROLLBACK], 5);
    /* Only abort is left; wave 2 devices were never offered. */
    assert_int_equal(rollout_resume(&r, 300), -EPERM);
    rollout_tick(&r, 400);
    assert_int_equal(f.n_offers, 5);
    /* Rollback progress is tracked per device. */
    assert_int_equal(rollout_on_rollback_status(&r, r.devs[0].id,
                                                TML_OTA_CONFIRMED, 0),
                     r.devs[0].wave == 0 ? 0 : -EBADMSG);
    for (size_t i = 0; i < r.n_devs; i++) {
        if (r.devs[i].state == RDEV_ROLLBACK)
            assert_int_equal(rollout_on_rollback_status(&r, r.devs[i].id,
                                                        TML_OTA_CONFIRMED,
                                                        0),
                             0);
    }
    rollout_counts(&r, 0, c);
    assert_int_equal(c[RDEV_ROLLED_BACK], 5);
    assert_int_equal(rollout_abort(&r), 0);
    assert_int_equal(r.state, ROLLOUT_ABORTED);
    rollout_counts(&r, -1, c);
    assert_int_equal(c[RDEV_CANCELLED], 95);
    rollout_free(&r);
}

static void
test_rollout_gate_failure_without_previous_model(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;

    (void)state;
    small_policy(&p);
    make(&r, &f, &p, 20);
    f.verdict = HEALTH_FAIL;
    f.rollback_available = false;
    rollout_tick(&r, 0);
    answer_wave(&r, 0, TML_OTA_CONFIRMED, 0, 1);
    rollout_tick(&r, 10);
    rollout_tick(&r, 200);
    assert_int_equal(r.state, ROLLOUT_PAUSED);
    for (size_t i = 0; i < r.n_devs; i++) {
        if (r.devs[i].wave == 0) {
            assert_int_equal(r.devs[i].state, RDEV_CONFIRMED);
            assert_int_equal(r.devs[i].reason, ROLLOUT_R_NO_ROLLBACK);
        }
    }
    rollout_free(&r);
}

static void
test_rollout_pause_resume_abort(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;

    (void)state;
    one_wave_policy(&p);
    p.max_concurrent = 4;
    make(&r, &f, &p, 10);
    assert_int_equal(rollout_pause(&r, NULL), 0);
    assert_int_equal(rollout_pause(&r, NULL), -EALREADY);
    assert_string_equal(r.reason, "paused by the operator");
    rollout_tick(&r, 0);
    assert_int_equal(f.n_offers, 0);
    assert_int_equal(rollout_resume(&r, 1), 0);
    rollout_tick(&r, 1);
    assert_int_equal(f.n_offers, 4);
    /* Paused mid-transfer: downloads in flight are still served. */
    assert_int_equal(rollout_pause(&r, "maintenance window"), 0);
    assert_int_equal(rollout_on_request(&r, r.devs[0].id, r.devs[0].offer_id,
                                        0, 2),
                     0);
    assert_int_equal(rollout_abort(&r), 0);
    assert_int_equal(rollout_abort(&r), -EALREADY);
    assert_int_equal(f.n_cancels, 4);
    assert_int_equal(rollout_on_request(&r, r.devs[0].id, r.devs[0].offer_id,
                                        0, 3),
                     -ECANCELED);
    assert_int_equal(rollout_resume(&r, 4), -EPERM);
    rollout_tick(&r, 100000);
    assert_int_equal(f.n_offers, 4);
    rollout_free(&r);
}

static void
test_rollout_offline_device_served_when_back(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;
    struct rollout_dev *late;

    (void)state;
    one_wave_policy(&p);
    make(&r, &f, &p, 5);
    late = &r.devs[2];
    assert_int_equal(rollout_on_presence(&r, late->id, false, 0, 0), 0);
    rollout_tick(&r, 0);
    assert_int_equal(f.n_offers, 4);
    answer_wave(&r, -1, TML_OTA_CONFIRMED, 0, 1);
    rollout_tick(&r, 2);
    /* Issue 5 (the ota_e2e_faults flake): a device offline when its turn
     * came is still a target. The rollout is not done without it; it says
     * whom it waits for, and serves it when it is back. */
    assert_int_equal(r.state, ROLLOUT_RUNNING);
    assert_int_equal(late->state, RDEV_PENDING);
    assert_string_equal(r.reason, "last wave: waiting for 1 offline device "
                                  "(offered the model when back)");
    rollout_tick(&r, 5000);
    assert_int_equal(r.state, ROLLOUT_RUNNING);
    assert_int_equal(f.n_offers, 4);
    assert_int_equal(rollout_on_presence(&r, late->id, true, 11, 6000), 0);
    rollout_tick(&r, 6000);
    assert_int_equal(late->state, RDEV_OFFERED);
    assert_int_equal(f.n_offers, 5);
    assert_int_equal(answer_wave(&r, -1, TML_OTA_CONFIRMED, 0, 6001), 1);
    rollout_tick(&r, 6002);
    assert_int_equal(r.state, ROLLOUT_DONE);
    assert_string_equal(r.reason, "all 1 waves finished");
    rollout_free(&r);

    /* A device that goes offline after everyone else confirmed (a reboot
     * around the last confirm) holds the last wave too. */
    make(&r, &f, &p, 3);
    rollout_tick(&r, 0);
    assert_int_equal(rollout_on_status(&r, r.devs[0].id, r.devs[0].offer_id,
                                       TML_OTA_CONFIRMED, 0, 0, 1),
                     0);
    assert_int_equal(rollout_on_status(&r, r.devs[1].id, r.devs[1].offer_id,
                                       TML_OTA_CONFIRMED, 0, 0, 1),
                     0);
    /* dev-2 times out, is pending for its retry, then goes offline. */
    rollout_tick(&r, 1500);
    assert_int_equal(r.devs[2].state, RDEV_PENDING);
    assert_int_equal(rollout_on_presence(&r, r.devs[2].id, false, 0, 1600),
                     0);
    rollout_tick(&r, 3000);
    assert_int_equal(r.state, ROLLOUT_RUNNING);
    /* Abort still ends it. */
    assert_int_equal(rollout_abort(&r), 0);
    assert_int_equal(r.state, ROLLOUT_ABORTED);
    rollout_free(&r);

    /* ...but in a multi-wave rollout it is served when it returns. */
    small_policy(&p);
    assert_int_equal(rollout_parse_waves("50,100", &p), 0);
    make(&r, &f, &p, 10);
    for (size_t i = 0; i < r.n_devs; i++) {
        if (r.devs[i].wave == 0) {
            late = &r.devs[i];
            break;
        }
    }
    assert_int_equal(rollout_on_presence(&r, late->id, false, 0, 0), 0);
    rollout_tick(&r, 0);
    assert_int_equal(f.n_offers, 4);
    answer_wave(&r, 0, TML_OTA_CONFIRMED, 0, 1);
    rollout_tick(&r, 10);
    rollout_tick(&r, 200);
    assert_int_equal(r.cur_wave, 1);
    assert_int_equal(rollout_on_presence(&r, late->id, true, 11, 300), 0);
    rollout_tick(&r, 300);
    assert_int_equal(late->state, RDEV_OFFERED);
    assert_int_equal(f.n_offers, 10);
    rollout_free(&r);
}

/* A device of an earlier wave offline when its wave ran is offered the
 * model when it is back, which may be on the tick where the last wave
 * finishes: the rollout is not done while it is still at it (it was,
 * with the device still downloading; found by ota_fuzz_rollout). */
static void
test_rollout_last_wave_waits_for_an_earlier_wave_straggler(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;
    struct rollout_dev *early = NULL, *last = NULL;

    (void)state;
    small_policy(&p);
    p.n_waves = 2;
    p.wave_pct[0] = 50;
    p.wave_pct[1] = 100;
    p.gate_enabled = false;
    make(&r, &f, &p, 2);
    for (size_t i = 0; i < r.n_devs; i++) {
        if (r.devs[i].wave == 0)
            early = &r.devs[i];
        else
            last = &r.devs[i];
    }
    assert_non_null(early);
    assert_non_null(last);
    /* Offline at the start: wave 0 is over at once, wave 1 is offered on
     * the next tick. */
    assert_int_equal(rollout_on_presence(&r, early->id, false, 0, 0), 0);
    rollout_tick(&r, 0);
    assert_int_equal(r.cur_wave, 1);
    rollout_tick(&r, 1);
    assert_int_equal(last->state, RDEV_OFFERED);
    assert_int_equal(early->state, RDEV_PENDING);
    /* Back, and the last wave's device confirms before the next tick. */
    assert_int_equal(rollout_on_presence(&r, early->id, true, 0, 10), 0);
    assert_int_equal(rollout_on_status(&r, last->id, last->offer_id,
                                       TML_OTA_CONFIRMED, 0, 0, 10),
                     0);
    rollout_tick(&r, 20);
    assert_int_equal(early->state, RDEV_OFFERED);
    assert_int_equal(r.state, ROLLOUT_RUNNING);
    assert_int_equal(rollout_on_status(&r, early->id, early->offer_id,
                                       TML_OTA_CONFIRMED, 0, 0, 30),
                     0);
    rollout_tick(&r, 40);
    assert_int_equal(r.state, ROLLOUT_DONE);
    rollout_free(&r);
}

/* A device gone for good must not keep its rollout (and its group) open:
 * after offline_wait_ms of waiting only for offline targets, they are
 * excluded with the reason "offline past the deadline" and the rollout is
 * done. 0 waits for ever. A device back in time is served as before. */
static void
test_rollout_offline_past_deadline_is_excluded(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;
    struct rollout_dev *gone;

    (void)state;
    one_wave_policy(&p);
    p.offline_wait_ms = 10000;
    make(&r, &f, &p, 4);
    gone = &r.devs[1];
    assert_int_equal(rollout_on_presence(&r, gone->id, false, 0, 0), 0);
    rollout_tick(&r, 0);
    answer_wave(&r, -1, TML_OTA_CONFIRMED, 0, 1);
    rollout_tick(&r, 100); /* the wait starts */
    assert_int_equal(r.state, ROLLOUT_RUNNING);
    rollout_tick(&r, 10099);
    assert_int_equal(r.state, ROLLOUT_RUNNING);
    assert_int_equal(gone->state, RDEV_PENDING);
    rollout_tick(&r, 10100);
    assert_int_equal(gone->state, RDEV_EXCLUDED);
    assert_string_equal(rollout_reason_name(gone->reason),
                        "offline past the deadline");
    assert_int_equal(r.state, ROLLOUT_DONE);
    /* Back after the deadline: nothing reopens, nothing is offered. */
    assert_int_equal(f.n_offers, 3);
    (void)rollout_on_presence(&r, gone->id, true, 11, 20000);
    rollout_tick(&r, 20000);
    assert_int_equal(r.state, ROLLOUT_DONE);
    assert_int_equal(f.n_offers, 3);
    rollout_free(&r);

    /* 0: waits for ever. */
    p.offline_wait_ms = 0;
    make(&r, &f, &p, 4);
    gone = &r.devs[1];
    assert_int_equal(rollout_on_presence(&r, gone->id, false, 0, 0), 0);
    rollout_tick(&r, 0);
    answer_wave(&r, -1, TML_OTA_CONFIRMED, 0, 1);
    rollout_tick(&r, 100);
    rollout_tick(&r, 100 + 400 * 86400000ull);
    assert_int_equal(r.state, ROLLOUT_RUNNING);
    assert_int_equal(gone->state, RDEV_PENDING);
    rollout_free(&r);
}

/* A rollout that only waits for offline devices may be superseded by a new
 * deploy to its group (those devices are the new rollout's targets); one
 * still transferring, or not in its last wave, may not. */
static void
test_rollout_waiting_for_offline_is_superseded(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;

    (void)state;
    one_wave_policy(&p);
    make(&r, &f, &p, 3);
    assert_int_equal(rollout_on_presence(&r, r.devs[2].id, false, 0, 0), 0);
    rollout_tick(&r, 0);
    assert_false(rollout_waits_only_for_offline(&r)); /* 2 transferring */
    assert_int_equal(rollout_supersede(&r, 8), -EBUSY);
    assert_int_equal(r.state, ROLLOUT_RUNNING);
    assert_int_equal(answer_wave(&r, -1, TML_OTA_CONFIRMED, 0, 1), 2);
    rollout_tick(&r, 2);
    assert_true(rollout_waits_only_for_offline(&r));
    assert_int_equal(rollout_supersede(&r, 8), 0);
    assert_int_equal(r.state, ROLLOUT_ABORTED);
    assert_int_equal(r.devs[2].state, RDEV_CANCELLED);
    assert_int_equal(r.devs[0].state, RDEV_CONFIRMED);
    assert_string_equal(r.reason, "superseded by rollout 8 (1 offline "
                                  "device now its target)");
    assert_false(rollout_waits_only_for_offline(&r));
    rollout_free(&r);

    /* Not in its last wave: an offline canary does not make it idle. */
    small_policy(&p);
    assert_int_equal(rollout_parse_waves("50,100", &p), 0);
    make(&r, &f, &p, 4);
    for (size_t i = 0; i < r.n_devs; i++)
        if (r.devs[i].wave == 0)
            (void)rollout_on_presence(&r, r.devs[i].id, false, 0, 0);
    rollout_tick(&r, 0);
    assert_int_equal(r.cur_wave, 0);
    assert_false(rollout_waits_only_for_offline(&r));
    rollout_free(&r);
}

static void
test_rollout_reconnect_mid_download_resends_same_offer(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;
    struct rollout_dev *d;

    (void)state;
    one_wave_policy(&p);
    make(&r, &f, &p, 1);
    d = &r.devs[0];
    rollout_tick(&r, 0);
    assert_int_equal(rollout_on_request(&r, d->id, d->offer_id, 8192, 100),
                     0);
    assert_int_equal(rollout_on_presence(&r, d->id, false, 11, 200), 0);
    /* Away longer than the progress deadline: not a timeout. */
    rollout_tick(&r, 5000);
    assert_int_equal(d->state, RDEV_DOWNLOADING);
    assert_int_equal(rollout_on_presence(&r, d->id, true, 11, 6000), 0);
    assert_int_equal(f.n_offers, 2);
    assert_int_equal(f.offered_id[1], d->offer_id);
    assert_int_equal(d->attempts, 1);
    assert_int_equal(d->offset, 8192);
    rollout_free(&r);
}

/* S7: chunk requests and status reports are bound to the offer id. */
static void
test_rollout_rejects_foreign_offer_id(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;
    struct rollout_dev *d;

    (void)state;
    small_policy(&p);
    make(&r, &f, &p, 10);
    rollout_tick(&r, 0);
    d = &r.devs[0];
    assert_int_equal(rollout_on_request(&r, d->id, d->offer_id + 1, 0, 1),
                     -EBADMSG);
    assert_int_equal(rollout_on_status(&r, d->id, d->offer_id ^ 0x8000,
                                       TML_OTA_CONFIRMED, 0, 0, 1),
                     -EBADMSG);
    assert_int_not_equal(d->state, RDEV_CONFIRMED);
    assert_int_equal(rollout_on_request(&r, "nobody", d->offer_id, 0, 1),
                     -ESRCH);
    /* Offer ids are distinct per device. */
    for (size_t i = 1; i < r.n_devs; i++)
        assert_int_not_equal(r.devs[i].offer_id, d->offer_id);
    rollout_free(&r);
}

static void
test_rollout_late_joiner_and_already_installed(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;
    struct rollout_dev *d;

    (void)state;
    small_policy(&p);
    make(&r, &f, &p, 20);
    assert_int_equal(rollout_add_device(&r, "dev-3", true, 0), -EEXIST);
    assert_int_equal(rollout_add_device(&r, "late-1", true, 0), 0);
    assert_int_equal(rollout_add_device(&r, "", true, 0), -EINVAL);
    d = rollout_find(&r, "late-1");
    assert_non_null(d);
    assert_int_equal(d->wave, 0);
    rollout_tick(&r, 0);
    assert_int_equal(d->state, RDEV_OFFERED);
    /* A device whose hello already shows the new version is confirmed. */
    assert_int_equal(rollout_add_device(&r, "late-2", false, 0), 0);
    assert_int_equal(rollout_on_presence(&r, "late-2", true, 12, 1), 0);
    assert_int_equal(rollout_find(&r, "late-2")->state, RDEV_CONFIRMED);
    /* An excluded device is never offered. */
    assert_int_equal(rollout_add_device(&r, "small-1", true,
                                        ROLLOUT_R_INCOMPATIBLE),
                     0);
    rollout_tick(&r, 2);
    assert_int_equal(rollout_find(&r, "small-1")->state, RDEV_EXCLUDED);
    rollout_free(&r);
}

/* Tables written by an older tmld may hold a rollout "done" with a device
 * still pending (offline when its turn came): restored, the device coming
 * back reopens the last wave and is offered the model. */
static void
test_rollout_restored_done_with_pending_serves_it(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;
    struct rollout_ops ops;
    uint8_t waves[ROLLOUT_MAX_WAVES] = {WAVE_PASSED};

    (void)state;
    one_wave_policy(&p);
    memset(&f, 0, sizeof(f));
    ops = ops_for(&f);
    assert_int_equal(rollout_init(&r, 7, 12, &p, "kws/turbines", 1000, 8,
                                  &ops),
                     0);
    assert_int_equal(rollout_add_device(&r, "dev-0", false, 0), 0);
    assert_int_equal(rollout_add_device(&r, "dev-1", false, 0), 0);
    assert_int_equal(rollout_restore_device(&r, "dev-0", 0, RDEV_CONFIRMED,
                                            0, 65536, 1),
                     0);
    assert_int_equal(rollout_restore_device(&r, "dev-1", 0, RDEV_PENDING, 0,
                                            0, 0),
                     0);
    rollout_restore(&r, ROLLOUT_DONE, "all 1 waves finished", 0, waves, 0);
    assert_int_equal(r.state, ROLLOUT_DONE);
    assert_int_equal(rollout_on_presence(&r, "dev-1", true, 11, 100), 0);
    assert_int_equal(r.state, ROLLOUT_RUNNING);
    rollout_tick(&r, 100);
    assert_int_equal(rollout_find(&r, "dev-1")->state, RDEV_OFFERED);
    assert_int_equal(f.n_offers, 1);
    assert_int_equal(answer_wave(&r, -1, TML_OTA_CONFIRMED, 0, 101), 1);
    rollout_tick(&r, 102);
    assert_int_equal(r.state, ROLLOUT_DONE);
    rollout_free(&r);
}

static void
test_rollout_restore_continues(void **state)
{
    struct rollout_policy p;
    struct rollout a, b;
    struct fake fa, fb;
    struct rollout_ops ops;
    uint8_t waves[ROLLOUT_MAX_WAVES];
    uint32_t c[RDEV__COUNT];

    (void)state;
    small_policy(&p);
    make(&a, &fa, &p, 100);
    rollout_tick(&a, 0);
    answer_wave(&a, 0, TML_OTA_CONFIRMED, 0, 1);
    rollout_tick(&a, 10);
    rollout_tick(&a, 200);
    rollout_tick(&a, 201);
    assert_int_equal(a.cur_wave, 1);

    /* "kill -9": rebuild from what was persisted. */
    memset(&fb, 0, sizeof(fb));
    fb.gate_answers = true;
    fb.verdict = HEALTH_ADVANCE;
    ops = ops_for(&fb);
    assert_int_equal(rollout_init(&b, a.id, a.version, &p, a.seed,
                                  a.offer_id_base, 200, &ops),
                     0);
    for (size_t i = 0; i < a.n_devs; i++)
        assert_int_equal(rollout_add_device(&b, a.devs[i].id, false, 0), 0);
    for (size_t i = 0; i < a.n_devs; i++)
        assert_int_equal(rollout_restore_device(&b, a.devs[i].id,
                                                a.devs[i].wave,
                                                a.devs[i].state,
                                                a.devs[i].reason,
                                                a.devs[i].offset,
                                                a.devs[i].attempts),
                         0);
    for (size_t w = 0; w < ROLLOUT_MAX_WAVES; w++)
        waves[w] = a.waves[w].state;
    rollout_restore(&b, a.state, a.reason, a.cur_wave, waves, 10000);
    assert_int_equal(b.waves[1].n_devices, 20);
    /* In-flight transfers became pending; devices come back online and
     * get their (same) offer again on the next tick. */
    assert_int_equal(rollout_find(&b, "dev-0")->state == RDEV_OFFERED, 0);
    for (size_t i = 0; i < b.n_devs; i++)
        assert_int_equal(rollout_on_presence(&b, b.devs[i].id, true, 0,
                                             10001),
                         0);
    assert_int_equal(fb.n_offers, 0);
    rollout_tick(&b, 10001);
    assert_int_equal(fb.n_offers, 20);
    assert_int_equal(rollout_find(&b, "dev-0")->offer_id,
                     rollout_find(&a, "dev-0")->offer_id);
    answer_wave(&b, 1, TML_OTA_CONFIRMED, 0, 10002);
    rollout_tick(&b, 10003);
    rollout_tick(&b, 10200);
    rollout_tick(&b, 10201);
    answer_wave(&b, 2, TML_OTA_CONFIRMED, 0, 10202);
    rollout_tick(&b, 10203);
    assert_int_equal(b.state, ROLLOUT_DONE);
    rollout_counts(&b, -1, c);
    assert_int_equal(c[RDEV_CONFIRMED], 100);
    rollout_free(&b);
    rollout_free(&a);
}

static void
test_rollout_device_joining_after_done_gets_the_model(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;
    struct rollout_dev *d;

    (void)state;
    one_wave_policy(&p);
    make(&r, &f, &p, 3);
    rollout_tick(&r, 0);
    answer_wave(&r, -1, TML_OTA_CONFIRMED, 0, 1);
    rollout_tick(&r, 2);
    assert_int_equal(r.state, ROLLOUT_DONE);
    assert_int_equal(rollout_add_device(&r, "late-9", true, 0), 0);
    assert_int_equal(r.state, ROLLOUT_RUNNING);
    rollout_tick(&r, 3);
    d = rollout_find(&r, "late-9");
    assert_int_equal(d->state, RDEV_OFFERED);
    assert_int_equal(f.n_offers, 4);
    answer_wave(&r, -1, TML_OTA_CONFIRMED, 0, 4);
    rollout_tick(&r, 5);
    assert_int_equal(r.state, ROLLOUT_DONE);
    /* An excluded late-comer does not reopen anything. */
    assert_int_equal(rollout_add_device(&r, "tiny-1", true,
                                        ROLLOUT_R_INCOMPATIBLE),
                     0);
    assert_int_equal(r.state, ROLLOUT_DONE);
    rollout_free(&r);
}

static void
test_rollout_trial_timeout_fails_device(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;

    (void)state;
    one_wave_policy(&p);
    p.failure_threshold_pct = 100;
    make(&r, &f, &p, 1);
    rollout_tick(&r, 0);
    assert_int_equal(rollout_on_status(&r, r.devs[0].id, r.devs[0].offer_id,
                                       TML_OTA_TRIAL, 0, 0, 10),
                     0);
    rollout_tick(&r, 4000);
    assert_int_equal(r.devs[0].state, RDEV_TRIAL);
    rollout_tick(&r, 5010);
    assert_int_equal(r.devs[0].state, RDEV_FAILED);
    assert_int_equal(r.devs[0].reason, ROLLOUT_R_TRIAL_TIMEOUT);
    rollout_free(&r);
}

/* A status under this rollout's offer about another model (an agent that
 * reported the revert of an older, rotten model under the last offer it
 * accepted) is foreign: tmld's on_ota_up drops it, so it cannot fail a
 * device of this rollout. Version 0 (refused before the manifest
 * verified) and the rollout's own version are not. */
static void
test_rollout_status_about_another_model_is_foreign(void **state)
{
    struct rollout_policy p;
    struct rollout r;
    struct fake f;

    (void)state;
    one_wave_policy(&p);
    make(&r, &f, &p, 1);
    assert_int_equal(r.version, 12);
    assert_false(rollout_status_is_foreign(&r, 12));
    assert_false(rollout_status_is_foreign(&r, 0));
    assert_true(rollout_status_is_foreign(&r, 11));
    assert_true(rollout_status_is_foreign(&r, 13));
    rollout_free(&r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rollout_status_about_another_model_is_foreign),
        cmocka_unit_test(test_rollout_waves_are_deterministic_by_hash),
        cmocka_unit_test(test_rollout_small_canary_still_has_one_device),
        cmocka_unit_test(test_rollout_parse_waves),
        cmocka_unit_test(test_rollout_respects_max_concurrent),
        cmocka_unit_test(test_rollout_times_out_and_retries_then_fails),
        cmocka_unit_test(test_rollout_permanent_refusal_is_not_retried),
        cmocka_unit_test(test_rollout_pauses_when_wave_fails),
        cmocka_unit_test(test_rollout_gate_advances_after_soak),
        cmocka_unit_test(test_rollout_gate_hold_then_pauses_after_max_wait),
        cmocka_unit_test(test_rollout_gate_failure_pauses_and_rolls_back),
        cmocka_unit_test(test_rollout_gate_failure_without_previous_model),
        cmocka_unit_test(test_rollout_pause_resume_abort),
        cmocka_unit_test(test_rollout_offline_device_served_when_back),
        cmocka_unit_test(test_rollout_offline_past_deadline_is_excluded),
        cmocka_unit_test(
            test_rollout_last_wave_waits_for_an_earlier_wave_straggler),
        cmocka_unit_test(test_rollout_waiting_for_offline_is_superseded),
        cmocka_unit_test(
            test_rollout_reconnect_mid_download_resends_same_offer),
        cmocka_unit_test(test_rollout_rejects_foreign_offer_id),
        cmocka_unit_test(test_rollout_late_joiner_and_already_installed),
        cmocka_unit_test(test_rollout_restore_continues),
        cmocka_unit_test(test_rollout_restored_done_with_pending_serves_it),
        cmocka_unit_test(test_rollout_trial_timeout_fails_device),
        cmocka_unit_test(
            test_rollout_device_joining_after_done_gets_the_model),
    };
    return cmocka_run_group_tests_name("ota_rollout", tests, NULL, NULL);
}
