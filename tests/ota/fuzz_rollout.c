/*
 * fuzz_rollout.c: libFuzzer harness for the rollout parsers and state
 * machine (daemon/rollout.c, daemon/health.c).
 *
 * Input: a NUL-terminated waves string for rollout_parse_waves (the
 * control verb's parser), then a stream of events, each 4 bytes
 * (op, device, a, b): ticks, chunk requests with right or wrong offer ids,
 * status reports with any state and reason, presence, gate answers,
 * pause/resume/abort, late devices. After every event the invariants are
 * checked and abort() on a violation:
 *  - a device is only ever offered while its wave is <= the current wave
 *    and the rollout is running (or it resumes a transfer after a
 *    reconnect);
 *  - states and reasons stay in range; per-state counts add up;
 *  - a paused rollout always says why.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rollout.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
    unsigned offers;
};

static int
f_offer(void *ctx, struct rollout *r, struct rollout_dev *d)
{
    struct fz *f = ctx;

    if (d->wave > r->cur_wave || r->state == ROLLOUT_ABORTED)
        abort();
    f->offers++;
    return 0;
}

static void
f_gate(void *ctx, struct rollout *r, unsigned wave, uint64_t since)
{
    (void)ctx;
    (void)since;
    if (wave != r->cur_wave)
        abort();
}

static void
check(const struct rollout *r)
{
    uint32_t c[RDEV__COUNT], total = 0;

    if (r->state > ROLLOUT_DONE || r->cur_wave >= r->pol.n_waves)
        abort();
    if (r->state == ROLLOUT_PAUSED && r->reason[0] == '\0')
        abort();
    rollout_counts(r, -1, c);
    for (size_t i = 0; i < RDEV__COUNT; i++)
        total += c[i];
    if (total != r->n_devs)
        abort();
    for (size_t i = 0; i < r->n_devs; i++) {
        if (r->devs[i].state >= RDEV__COUNT ||
            r->devs[i].wave >= r->pol.n_waves)
            abort();
        /* Issue 5: done means every target finished; a pending device
         * (offline when its turn came) keeps the rollout running. */
        if (r->state == ROLLOUT_DONE && r->devs[i].state == RDEV_PENDING)
            abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rollout_policy p;
    struct rollout r;
    struct rollout_ops ops;
    struct fz f = {0};
    char waves[40], id[16];
    size_t i = 0, n = 0;
    uint64_t now = 0;

    rollout_policy_default(&p);
    p.soak_ms = 50;
    p.gate_retry_ms = 50;
    p.gate_max_wait_ms = 500;
    p.offline_wait_ms = 2000; /* reachable: offline targets excluded */
    p.device_timeout_ms = 300;
    p.trial_timeout_ms = 600;
    /* The waves string: up to the first NUL (bounded). */
    while (i < size && i < sizeof(waves) - 1 && data[i] != 0) {
        waves[n++] = (char)data[i];
        i++;
    }
    waves[n] = '\0';
    i++;
    if (rollout_parse_waves(waves, &p) != 0)
        rollout_policy_default(&p), p.soak_ms = 50, p.gate_retry_ms = 50;
    if (i < size)
        p.max_concurrent = 1 + data[i++] % 8;
    if (rollout_policy_check(&p) != NULL)
        abort(); /* parse_waves must not accept what check refuses */
    memset(&ops, 0, sizeof(ops));
    ops.ctx = &f;
    ops.offer = f_offer;
    ops.gate = f_gate;
    if (rollout_init(&r, 1, 9, &p, "fuzz", 100, 80, &ops) != 0)
        return 0;
    for (unsigned k = 0; k < 24; k++) {
        snprintf(id, sizeof(id), "d%u", k);
        if (rollout_add_device(&r, id, k % 5 != 0, k % 11 == 0 ? 5 : 0) != 0)
            abort();
    }
    rollout_start(&r, 0);
    for (; i + 4 <= size; i += 4) {
        uint8_t op = data[i], dv = data[i + 1], a = data[i + 2],
                b = data[i + 3];
        struct rollout_dev *d = &r.devs[dv % r.n_devs];
        uint32_t offer = (b & 1) ? d->offer_id : d->offer_id + a;
        struct health_result res;

        switch (op % 11) {
        case 0:
            now += (uint64_t)a * 10;
            rollout_tick(&r, now);
            break;
        case 1:
            (void)rollout_on_request(&r, d->id, offer, (uint32_t)a * 4096,
                                     now);
            break;
        case 2:
            (void)rollout_on_status(&r, d->id, offer, a % 12, b % 24,
                                    (uint32_t)a * 100, now);
            break;
        case 3:
            (void)rollout_on_presence(&r, d->id, (a & 1) != 0,
                                      b % 3 == 0 ? 9 : b, now);
            break;
        case 4:
            memset(&res, 0, sizeof(res));
            res.verdict = (enum health_verdict)(a % 3);
            snprintf(res.reason, sizeof(res.reason), "fz");
            rollout_gate_result(&r, b % 4, &res, now);
            break;
        case 5:
            (void)rollout_pause(&r, (a & 1) ? NULL : "op");
            break;
        case 6:
            (void)rollout_resume(&r, now);
            break;
        case 7:
            if (a == 0xab) {
                (void)rollout_abort(&r);
            } else if (a == 0xac) {
                /* Superseded exactly when it only waits for offline
                 * devices, and never after that. */
                bool w = rollout_waits_only_for_offline(&r);
                if ((rollout_supersede(&r, 2) == 0) != w ||
                    rollout_waits_only_for_offline(&r))
                    abort();
            }
            break;
        case 8:
            snprintf(id, sizeof(id), "late%u", a);
            if (rollout_add_device(&r, id, true, b % 7 == 0 ? 6 : 0) ==
                -EINVAL)
                abort();
            break;
        case 9:
            (void)rollout_on_rollback_status(&r, d->id, a % 12, b % 24);
            break;
        default:
            (void)rollout_on_request(&r, "nobody", offer, 0, now);
            break;
        }
        check(&r);
    }
    rollout_free(&r);
    return 0;
}
