/*
 * rollout.c: the rollout state machine (see rollout.h).
 *
 * Owns the device table of one rollout (devs, plus an index sorted by id
 * for lookups) and the wave bookkeeping. Invariants:
 *  - a device's offer_id never changes within a rollout, so a device that
 *    reconnects or reboots resumes the same offer from its stored offset;
 *  - only devices of waves <= cur_wave are ever offered, never more than
 *    max_concurrent of them are in a transfer state while online;
 *  - the rollout leaves RUNNING only through rollout_pause (operator,
 *    threshold, gate) or a terminal state, and always with a reason.
 * It deliberately does no I/O, reads no clock and never decides how a
 * message is encoded or how telemetry is queried: that is ota.c.
 */
#include "rollout.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_DELAY_MS 1000u

void
rollout_policy_default(struct rollout_policy *p)
{
    memset(p, 0, sizeof(*p));
    p->n_waves = 3;
    p->wave_pct[0] = 5;
    p->wave_pct[1] = 25;
    p->wave_pct[2] = 100;
    p->max_concurrent = 50;
    p->device_timeout_ms = 60000;
    p->trial_timeout_ms = 600000;
    p->max_retries = 2;
    p->failure_threshold_pct = 10;
    p->gate_enabled = true;
    p->soak_ms = 60000;
    p->gate_retry_ms = 30000;
    p->gate_max_wait_ms = 1800000;
    p->offline_wait_ms = 7 * 86400000ull;
    p->rollback_on_gate_fail = true;
    p->rollback_on_threshold = false;
    health_policy_default(&p->health);
}

const char *
rollout_policy_check(const struct rollout_policy *p)
{
    if (p->n_waves == 0 || p->n_waves > ROLLOUT_MAX_WAVES)
        return "between 1 and 8 waves";
    for (size_t i = 0; i < p->n_waves; i++) {
        if (p->wave_pct[i] == 0 || p->wave_pct[i] > 100)
            return "wave percentages must be 1..100";
        if (i > 0 && p->wave_pct[i] <= p->wave_pct[i - 1])
            return "wave percentages must increase (they are cumulative)";
    }
    if (p->wave_pct[p->n_waves - 1] != 100)
        return "the last wave must be 100%";
    if (p->max_concurrent == 0)
        return "max concurrent downloads must be at least 1";
    if (p->device_timeout_ms == 0 || p->trial_timeout_ms == 0)
        return "device timeouts must be positive";
    if (p->max_retries > 100)
        return "at most 100 retries";
    if (p->failure_threshold_pct > 100)
        return "failure threshold must be 0..100%";
    if (p->gate_enabled && p->gate_retry_ms == 0)
        return "gate retry interval must be positive";
    if (!health_policy_valid(&p->health))
        return "health gate thresholds out of range";
    return NULL;
}

int
rollout_parse_waves(const char *s, struct rollout_policy *p)
{
    uint32_t pct[ROLLOUT_MAX_WAVES];
    size_t n = 0;
    const char *c = s;

    if (s == NULL || *s == '\0')
        return -EINVAL;
    while (*c != '\0') {
        uint32_t v = 0;
        size_t digits = 0;
        while (*c >= '0' && *c <= '9' && digits < 4) {
            v = v * 10 + (uint32_t)(*c - '0');
            c++;
            digits++;
        }
        if (digits == 0 || n == ROLLOUT_MAX_WAVES)
            return -EINVAL;
        if (*c == '%')
            c++;
        pct[n++] = v;
        if (*c == ',')
            c++;
        else if (*c != '\0')
            return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (pct[i] == 0 || pct[i] > 100 || (i > 0 && pct[i] <= pct[i - 1]))
            return -EINVAL;
    }
    if (n == 0 || pct[n - 1] != 100)
        return -EINVAL;
    memcpy(p->wave_pct, pct, n * sizeof(pct[0]));
    p->n_waves = n;
    return 0;
}

/* FNV-1a over seed, a separator and the id, then the splitmix64 finaliser
 * so that ids differing in one trailing character spread over the range. */
static uint64_t
rank_hash(const char *seed, const char *id)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (const char *c = seed; *c != '\0'; c++)
        h = (h ^ (uint8_t)*c) * 0x100000001b3ull;
    h = (h ^ 0xffu) * 0x100000001b3ull;
    for (const char *c = id; *c != '\0'; c++)
        h = (h ^ (uint8_t)*c) * 0x100000001b3ull;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

int
rollout_init(struct rollout *r, uint32_t id, uint32_t version,
             const struct rollout_policy *p, const char *seed,
             uint32_t offer_id_base, size_t cap_devices,
             const struct rollout_ops *ops)
{
    if (r == NULL || p == NULL || ops == NULL || ops->offer == NULL ||
        ops->gate == NULL || rollout_policy_check(p) != NULL ||
        cap_devices == 0 || cap_devices > ROLLOUT_MAX_DEVICES ||
        seed == NULL || strlen(seed) >= sizeof(r->seed))
        return -EINVAL;
    memset(r, 0, sizeof(*r));
    r->devs = calloc(cap_devices, sizeof(*r->devs));
    r->by_id = calloc(cap_devices, sizeof(*r->by_id));
    if (r->devs == NULL || r->by_id == NULL) {
        free(r->devs);
        free(r->by_id);
        r->devs = NULL;
        r->by_id = NULL;
        return -ENOMEM;
    }
    r->id = id;
    r->version = version;
    r->pol = *p;
    r->ops = *ops;
    r->state = ROLLOUT_RUNNING;
    r->cap_devs = cap_devices;
    r->offer_id_base = offer_id_base;
    memcpy(r->seed, seed, strlen(seed) + 1);
    return 0;
}

void
rollout_free(struct rollout *r)
{
    if (r == NULL)
        return;
    free(r->devs);
    free(r->by_id);
    r->devs = NULL;
    r->by_id = NULL;
    r->n_devs = 0;
}

/* Binary search in by_id; returns the insertion position, *found set. */
static size_t
find_pos(const struct rollout *r, const char *id, bool *found)
{
    size_t lo = 0, hi = r->n_devs;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(r->devs[r->by_id[mid]].id, id);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

struct rollout_dev *
rollout_find(struct rollout *r, const char *id)
{
    bool found;
    size_t pos;

    if (id == NULL)
        return NULL;
    pos = find_pos(r, id, &found);
    return found ? &r->devs[r->by_id[pos]] : NULL;
}

static void
changed(struct rollout *r, struct rollout_dev *d)
{
    if (r->ops.changed != NULL)
        r->ops.changed(r->ops.ctx, r, d);
}

int
rollout_add_device(struct rollout *r, const char *id, bool online,
                   uint8_t excluded_reason)
{
    struct rollout_dev *d;
    size_t len, pos;
    bool found;

    if (id == NULL)
        return -EINVAL;
    len = strlen(id);
    if (len == 0 || len > TML_MAX_DEVICE_ID)
        return -EINVAL;
    pos = find_pos(r, id, &found);
    if (found)
        return -EEXIST;
    if (r->n_devs == r->cap_devs)
        return -ENOSPC;
    d = &r->devs[r->n_devs];
    memset(d, 0, sizeof(*d));
    memcpy(d->id, id, len + 1);
    d->rank_hash = rank_hash(r->seed, id);
    d->online = online;
    d->offer_id = r->offer_id_base + (uint32_t)r->n_devs;
    if (excluded_reason != 0) {
        d->state = RDEV_EXCLUDED;
        d->reason = excluded_reason;
    }
    memmove(&r->by_id[pos + 1], &r->by_id[pos],
            (r->n_devs - pos) * sizeof(r->by_id[0]));
    r->by_id[pos] = r->n_devs;
    r->n_devs++;
    if (r->started) {
        d->wave = (uint8_t)r->cur_wave;
        if (d->state != RDEV_EXCLUDED)
            r->waves[r->cur_wave].n_devices++;
        /* A device that joins after the last wave finished still gets the
         * model: the last wave reopens and closes again once it is done. */
        if (r->state == ROLLOUT_DONE && d->state != RDEV_EXCLUDED) {
            r->state = ROLLOUT_RUNNING;
            r->waves[r->cur_wave].state = WAVE_ACTIVE;
            changed(r, NULL);
        }
        changed(r, d);
    }
    return 0;
}

static int
cmp_rank(const void *a, const void *b)
{
    const struct rollout_dev *x = *(struct rollout_dev *const *)a;
    const struct rollout_dev *y = *(struct rollout_dev *const *)b;

    if (x->rank_hash != y->rank_hash)
        return x->rank_hash < y->rank_hash ? -1 : 1;
    return strcmp(x->id, y->id);
}

void
rollout_start(struct rollout *r, uint64_t now_ms)
{
    struct rollout_dev **order;
    size_t n = 0, w = 0;

    if (r->started)
        return;
    order = calloc(r->n_devs ? r->n_devs : 1, sizeof(*order));
    if (order != NULL) {
        for (size_t i = 0; i < r->n_devs; i++) {
            if (r->devs[i].state != RDEV_EXCLUDED)
                order[n++] = &r->devs[i];
        }
        qsort(order, n, sizeof(*order), cmp_rank);
        /* Wave k takes ranks [end(k-1), end(k)), end(k) = ceil(pct*n/100):
         * a 5 % canary of 3 devices is still one device. */
        for (size_t i = 0; i < n; i++) {
            while (w + 1 < r->pol.n_waves &&
                   i >= ((uint64_t)r->pol.wave_pct[w] * n + 99) / 100)
                w++;
            order[i]->wave = (uint8_t)w;
            r->waves[w].n_devices++;
        }
        free(order);
    } else {
        /* Out of memory: one wave, still correct, just no canary. */
        for (size_t i = 0; i < r->n_devs; i++) {
            r->devs[i].wave = (uint8_t)(r->pol.n_waves - 1);
            if (r->devs[i].state != RDEV_EXCLUDED)
                r->waves[r->pol.n_waves - 1].n_devices++;
        }
    }
    r->started = true;
    r->cur_wave = 0;
    r->waves[0].state = WAVE_ACTIVE;
    r->waves[0].started_ms = now_ms;
    for (size_t i = 0; i < r->n_devs; i++)
        changed(r, &r->devs[i]);
    changed(r, NULL);
}

int
rollout_restore_device(struct rollout *r, const char *id, uint8_t wave,
                       uint8_t state, uint8_t reason, uint32_t offset,
                       uint32_t attempts)
{
    struct rollout_dev *d = rollout_find(r, id);

    if (d == NULL || wave >= r->pol.n_waves || state >= RDEV__COUNT)
        return -EINVAL;
    d->wave = wave;
    d->state = state;
    d->reason = reason;
    d->offset = offset;
    d->attempts = attempts;
    return 0;
}

static bool is_transfer(uint8_t s);

void
rollout_restore(struct rollout *r, uint8_t state, const char *reason,
                unsigned cur_wave, const uint8_t *wave_states,
                uint64_t now_ms)
{
    r->state = state <= ROLLOUT_DONE ? state : ROLLOUT_PAUSED;
    snprintf(r->reason, sizeof(r->reason), "%s", reason ? reason : "");
    r->cur_wave = cur_wave < r->pol.n_waves ? cur_wave : 0;
    r->started = true;
    memset(r->waves, 0, sizeof(r->waves));
    for (size_t w = 0; w < r->pol.n_waves; w++) {
        r->waves[w].state = wave_states ? wave_states[w] : WAVE_PENDING;
        if (r->waves[w].state > WAVE_FAILED)
            r->waves[w].state = WAVE_PENDING;
        r->waves[w].started_ms = now_ms;
        r->waves[w].done_ms = now_ms;
    }
    /* A gate that was being asked is asked again from scratch. */
    if (r->waves[r->cur_wave].state == WAVE_GATE)
        r->waves[r->cur_wave].state = WAVE_SOAK;
    for (size_t i = 0; i < r->n_devs; i++) {
        struct rollout_dev *d = &r->devs[i];
        if (d->state != RDEV_EXCLUDED && d->wave < r->pol.n_waves)
            r->waves[d->wave].n_devices++;
        /* Deadlines restart: the devices were not at fault for our
         * restart. A transfer in flight becomes pending again (same offer
         * id, offset kept): it is offered again as soon as the device is
         * seen online, and the agent resumes from its stored offset; a
         * device that never comes back does not hold its wave up. A
         * device still requesting chunks simply carries on
         * (rollout_on_request accepts a pending device). */
        if (is_transfer(d->state))
            d->state = RDEV_PENDING;
        d->deadline_ms = 0;
        d->online = false;
    }
}

static bool
is_transfer(uint8_t s)
{
    return s == RDEV_OFFERED || s == RDEV_DOWNLOADING || s == RDEV_VERIFYING;
}

static bool
is_finished(const struct rollout_dev *d)
{
    switch (d->state) {
    case RDEV_CONFIRMED:
    case RDEV_FAILED:
    case RDEV_REVERTED:
    case RDEV_EXCLUDED:
    case RDEV_CANCELLED:
    case RDEV_ROLLBACK:
    case RDEV_ROLLED_BACK:
        return true;
    case RDEV_PENDING:
        /* Offline devices do not hold a wave up; they are served when
         * they come back. */
        return !d->online;
    default:
        return false;
    }
}

/* Device-side reasons that a retry cannot fix. */
static bool
is_permanent(uint8_t reason)
{
    switch (reason) {
    case TML_OTA_R_BAD_MANIFEST:
    case TML_OTA_R_UNKNOWN_KEY:
    case TML_OTA_R_REVOKED_KEY:
    case TML_OTA_R_BAD_SIGNATURE:
    case TML_OTA_R_WRONG_HW:
    case TML_OTA_R_TOO_LARGE:
    case TML_OTA_R_ROLLBACK:
    case TML_OTA_R_EXPIRED:
    case TML_OTA_R_ARENA:
    case TML_OTA_R_AGENT_TOO_OLD:
    case TML_OTA_R_INPUT_SHAPE:
    case TML_OTA_R_SELFTEST:
    case TML_OTA_R_TRIAL_TIMEOUT:
        return true;
    default:
        return false;
    }
}

static void
set_dev(struct rollout *r, struct rollout_dev *d, uint8_t state,
        uint8_t reason, uint64_t deadline_ms)
{
    d->state = state;
    d->reason = reason;
    d->deadline_ms = deadline_ms;
    changed(r, d);
}

/* One attempt ended without success: retry later or give up. */
static void
attempt_failed(struct rollout *r, struct rollout_dev *d, uint8_t reason,
               uint64_t now_ms)
{
    if (is_permanent(reason) || d->attempts > r->pol.max_retries)
        set_dev(r, d, RDEV_FAILED,
                reason == ROLLOUT_R_TIMEOUT || is_permanent(reason)
                    ? reason
                    : (reason ? reason : ROLLOUT_R_RETRIES),
                0);
    else
        set_dev(r, d, RDEV_PENDING, reason, now_ms + RETRY_DELAY_MS);
}

static void
set_reason(struct rollout *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
set_reason(struct rollout *r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
    va_end(ap);
}

static void
roll_back_wave(struct rollout *r, unsigned wave)
{
    for (size_t i = 0; i < r->n_devs; i++) {
        struct rollout_dev *d = &r->devs[i];
        if (d->wave != wave)
            continue;
        if (is_transfer(d->state) || d->state == RDEV_PENDING) {
            if (is_transfer(d->state) && r->ops.cancel != NULL)
                r->ops.cancel(r->ops.ctx, r, d);
            set_dev(r, d, RDEV_CANCELLED, ROLLOUT_R_ABORTED, 0);
        } else if (d->state == RDEV_CONFIRMED || d->state == RDEV_TRIAL ||
                   d->state == RDEV_ACTIVATING) {
            if (r->ops.rollback != NULL &&
                r->ops.rollback(r->ops.ctx, r, d) == 0)
                set_dev(r, d, RDEV_ROLLBACK, d->reason, 0);
            else {
                d->reason = ROLLOUT_R_NO_ROLLBACK;
                changed(r, d);
            }
        }
    }
}

static void
count_wave(const struct rollout *r, unsigned wave, uint32_t *bad,
           uint8_t *top_reason)
{
    uint32_t by_reason[256] = {0};
    uint32_t best = 0;

    *bad = 0;
    *top_reason = 0;
    for (size_t i = 0; i < r->n_devs; i++) {
        const struct rollout_dev *d = &r->devs[i];
        if (d->wave != wave)
            continue;
        if (d->state == RDEV_FAILED || d->state == RDEV_REVERTED) {
            (*bad)++;
            by_reason[d->reason]++;
        }
    }
    for (unsigned i = 0; i < 256; i++) {
        if (by_reason[i] > best) {
            best = by_reason[i];
            *top_reason = (uint8_t)i;
        }
    }
}

static void
check_thresholds(struct rollout *r)
{
    for (unsigned w = 0; w <= r->cur_wave && w < r->pol.n_waves; w++) {
        struct rollout_wave *wv = &r->waves[w];
        uint32_t bad;
        uint8_t top;

        if (wv->state == WAVE_FAILED || wv->n_devices == 0)
            continue;
        count_wave(r, w, &bad, &top);
        if (bad <= wv->n_failed_acked ||
            (uint64_t)bad * 100 <=
                (uint64_t)r->pol.failure_threshold_pct * wv->n_devices)
            continue;
        r->state = ROLLOUT_PAUSED;
        set_reason(r,
                   "wave %u: %u of %u devices failed (%u%% > %u%% "
                   "threshold), mostly: %s",
                   w + 1, bad, wv->n_devices,
                   (unsigned)((uint64_t)bad * 100 / wv->n_devices),
                   r->pol.failure_threshold_pct, rollout_reason_name(top));
        if (r->pol.rollback_on_threshold) {
            wv->state = WAVE_FAILED;
            roll_back_wave(r, w);
        }
        changed(r, NULL);
        return;
    }
}

static void
check_deadlines(struct rollout *r, uint64_t now_ms)
{
    for (size_t i = 0; i < r->n_devs; i++) {
        struct rollout_dev *d = &r->devs[i];
        if (!d->online || d->deadline_ms == 0 || now_ms < d->deadline_ms)
            continue;
        if (is_transfer(d->state))
            attempt_failed(r, d, ROLLOUT_R_TIMEOUT, now_ms);
        else if (d->state == RDEV_ACTIVATING || d->state == RDEV_TRIAL)
            set_dev(r, d, RDEV_FAILED, ROLLOUT_R_TRIAL_TIMEOUT, 0);
    }
}

static void
schedule_offers(struct rollout *r, uint64_t now_ms)
{
    uint32_t active = 0;

    for (size_t i = 0; i < r->n_devs; i++) {
        if (r->devs[i].online && is_transfer(r->devs[i].state))
            active++;
    }
    /* Earlier waves first, so late-comers of the canary wave are not
     * starved by the bulk of a later wave. */
    for (unsigned w = 0; w <= r->cur_wave && active < r->pol.max_concurrent;
         w++) {
        if (r->waves[w].state == WAVE_FAILED)
            continue;
        for (size_t i = 0; i < r->n_devs && active < r->pol.max_concurrent;
             i++) {
            struct rollout_dev *d = &r->devs[i];
            if (d->wave != w || d->state != RDEV_PENDING || !d->online ||
                (d->deadline_ms != 0 && now_ms < d->deadline_ms))
                continue;
            if (r->ops.offer(r->ops.ctx, r, d) != 0)
                continue;
            d->attempts++;
            set_dev(r, d, RDEV_OFFERED, d->reason,
                    now_ms + r->pol.device_timeout_ms);
            active++;
        }
    }
}

static void
start_wave(struct rollout *r, unsigned w, uint64_t now_ms)
{
    r->cur_wave = w;
    r->waves[w].state = WAVE_ACTIVE;
    r->waves[w].started_ms = now_ms;
}

static void
ask_gate(struct rollout *r, uint64_t now_ms)
{
    struct rollout_wave *wv = &r->waves[r->cur_wave];

    wv->state = WAVE_GATE;
    if (wv->gate_first_ms == 0)
        wv->gate_first_ms = now_ms;
    wv->next_gate_ms = 0;
    changed(r, NULL);
    /* The window starts with the rollout: baseline devices report over the
     * whole of it, canaries only once they run the new model, and the
     * gate's query splits by the model version every summary carries. May
     * answer synchronously through rollout_gate_result. */
    r->ops.gate(r->ops.ctx, r, r->cur_wave, r->waves[0].started_ms);
}

/* Whether some target of any wave is still pending (it was offline when
 * its turn came). Keeps r->reason saying how many, persisted on a change
 * only. */
static bool
waiting_for_offline(struct rollout *r)
{
    char why[ROLLOUT_REASON_MAX];
    uint32_t n = 0;

    for (size_t i = 0; i < r->n_devs; i++) {
        if (r->devs[i].state == RDEV_PENDING)
            n++;
    }
    if (n == 0)
        return false;
    snprintf(why, sizeof(why),
             "last wave: waiting for %u offline device%s (offered the model "
             "when back)",
             n, n == 1 ? "" : "s");
    if (strcmp(why, r->reason) != 0) {
        memcpy(r->reason, why, sizeof(why));
        changed(r, NULL);
    }
    return true;
}

static void
advance_waves(struct rollout *r, uint64_t now_ms)
{
    /* Bounded: each pass either returns or moves to the next wave. */
    for (size_t guard = 0; guard <= ROLLOUT_MAX_WAVES; guard++) {
        unsigned w = r->cur_wave;
        struct rollout_wave *wv = &r->waves[w];
        bool finished = true;

        if (r->state != ROLLOUT_RUNNING)
            return;
        switch (wv->state) {
        case WAVE_ACTIVE:
            /* The last wave also waits for the targets of earlier waves
             * still at it (one back from offline, or a retry after a
             * timeout, offered on this very tick): done means every
             * target finished. */
            for (size_t i = 0; i < r->n_devs && finished; i++) {
                if ((r->devs[i].wave == w || w + 1 == r->pol.n_waves) &&
                    !is_finished(&r->devs[i]))
                    finished = false;
            }
            if (!finished)
                return;
            /* The last wave: the rollout is done only when every target
             * of every wave has finished. A device that was offline when
             * its turn came (a reboot at deploy time, a will just before
             * the last confirm, a tmld restart) is still a target: it is
             * offered the model when it is back, and until then the
             * rollout runs and says whom it waits for. */
            if (w + 1 == r->pol.n_waves && waiting_for_offline(r)) {
                if (r->offline_wait_since_ms == 0)
                    r->offline_wait_since_ms = now_ms;
                if (r->pol.offline_wait_ms == 0 ||
                    now_ms - r->offline_wait_since_ms < r->pol.offline_wait_ms)
                    return;
                /* A device gone for good must not keep the rollout (and
                 * its group) open for ever: excluded, with the reason. */
                for (size_t i = 0; i < r->n_devs; i++)
                    if (r->devs[i].state == RDEV_PENDING)
                        set_dev(r, &r->devs[i], RDEV_EXCLUDED,
                                ROLLOUT_R_OFFLINE, 0);
            }
            wv->done_ms = now_ms;
            if (w + 1 == r->pol.n_waves) {
                wv->state = WAVE_PASSED;
                r->state = ROLLOUT_DONE;
                set_reason(r, "all %zu waves finished", r->pol.n_waves);
                changed(r, NULL);
                return;
            }
            if (!r->pol.gate_enabled || wv->n_devices == 0) {
                wv->state = WAVE_PASSED;
                start_wave(r, w + 1, now_ms);
                changed(r, NULL);
                continue;
            }
            wv->state = WAVE_SOAK;
            changed(r, NULL);
            return;
        case WAVE_SOAK:
            if (now_ms < wv->done_ms + r->pol.soak_ms)
                return;
            ask_gate(r, now_ms);
            if (r->cur_wave == w)
                return;
            continue; /* answered synchronously with ADVANCE */
        case WAVE_GATE:
            if (wv->next_gate_ms != 0 && now_ms >= wv->next_gate_ms)
                ask_gate(r, now_ms);
            if (r->cur_wave == w)
                return;
            continue;
        default:
            return;
        }
    }
}

void
rollout_gate_result(struct rollout *r, unsigned wave,
                    const struct health_result *res, uint64_t now_ms)
{
    struct rollout_wave *wv;

    if (wave != r->cur_wave || wave >= r->pol.n_waves)
        return;
    wv = &r->waves[wave];
    if (wv->state != WAVE_GATE || wv->next_gate_ms != 0)
        return;
    snprintf(wv->gate_reason, sizeof(wv->gate_reason), "%s", res->reason);
    switch (res->verdict) {
    case HEALTH_ADVANCE:
        /* Offers of the next wave go out on a tick while RUNNING only, so
         * a pause that came in while the gate was asked still holds. */
        wv->state = WAVE_PASSED;
        if (wave + 1 < r->pol.n_waves)
            start_wave(r, wave + 1, now_ms);
        else
            r->state = ROLLOUT_DONE;
        break;
    case HEALTH_HOLD:
        wv->next_gate_ms = now_ms + r->pol.gate_retry_ms;
        if (now_ms - wv->gate_first_ms >= r->pol.gate_max_wait_ms &&
            r->state == ROLLOUT_RUNNING) {
            r->state = ROLLOUT_PAUSED;
            set_reason(r, "wave %u: health gate undecided after %llu s: %s",
                       wave + 1,
                       (unsigned long long)((now_ms - wv->gate_first_ms) /
                                            1000),
                       res->reason);
        }
        break;
    case HEALTH_FAIL:
        wv->state = WAVE_FAILED;
        r->state = ROLLOUT_PAUSED;
        set_reason(r, "wave %u failed its health gate: %s", wave + 1,
                   res->reason);
        if (r->pol.rollback_on_gate_fail)
            for (unsigned w = 0; w <= wave; w++)
                roll_back_wave(r, w);
        break;
    }
    changed(r, NULL);
}

void
rollout_tick(struct rollout *r, uint64_t now_ms)
{
    if (!r->started || r->state == ROLLOUT_ABORTED ||
        r->state == ROLLOUT_DONE)
        return;
    check_deadlines(r, now_ms);
    if (r->state != ROLLOUT_RUNNING)
        return;
    check_thresholds(r);
    if (r->state != ROLLOUT_RUNNING)
        return;
    schedule_offers(r, now_ms);
    advance_waves(r, now_ms);
}

static bool
accepts_transfer(const struct rollout *r, const struct rollout_dev *d)
{
    return r->state != ROLLOUT_ABORTED &&
           r->waves[d->wave].state != WAVE_FAILED &&
           d->wave <= r->cur_wave &&
           (is_transfer(d->state) || d->state == RDEV_PENDING);
}

int
rollout_on_request(struct rollout *r, const char *id, uint32_t offer_id,
                   uint32_t offset, uint64_t now_ms)
{
    struct rollout_dev *d = rollout_find(r, id);

    if (d == NULL)
        return -ESRCH;
    if (offer_id != d->offer_id)
        return -EBADMSG;
    if (!accepts_transfer(r, d))
        return -ECANCELED;
    d->online = true;
    d->offset = offset;
    if (d->state != RDEV_DOWNLOADING) {
        if (d->attempts == 0)
            d->attempts = 1;
        set_dev(r, d, RDEV_DOWNLOADING, 0, now_ms + r->pol.device_timeout_ms);
    } else {
        /* Hot path (one call per chunk): no persistence for a pure offset
         * change; the device's own status reports carry it too. */
        d->deadline_ms = now_ms + r->pol.device_timeout_ms;
    }
    return 0;
}

bool
rollout_status_is_foreign(const struct rollout *r, uint32_t version)
{
    return version != 0 && version != r->version;
}

int
rollout_on_status(struct rollout *r, const char *id, uint32_t offer_id,
                  uint8_t ota_state, uint8_t ota_reason, uint32_t offset,
                  uint64_t now_ms)
{
    struct rollout_dev *d = rollout_find(r, id);
    uint64_t progress = now_ms + r->pol.device_timeout_ms;

    if (d == NULL)
        return -ESRCH;
    if (offer_id != d->offer_id)
        return -EBADMSG;
    d->online = true;
    if (d->state == RDEV_ROLLBACK || d->state == RDEV_ROLLED_BACK ||
        d->state == RDEV_EXCLUDED)
        return 0;
    if (ota_state == TML_OTA_CONFIRMED) {
        d->offset = offset;
        set_dev(r, d, RDEV_CONFIRMED, 0, 0);
        return 0;
    }
    if (ota_state == TML_OTA_REVERTED) {
        set_dev(r, d, RDEV_REVERTED,
                ota_reason ? ota_reason : TML_OTA_R_SELFTEST, 0);
        return 0;
    }
    /* Anything else only moves a device that is still in flight. */
    if (!(is_transfer(d->state) || d->state == RDEV_PENDING ||
          d->state == RDEV_ACTIVATING || d->state == RDEV_TRIAL))
        return 0;
    d->offset = offset;
    switch (ota_state) {
    case TML_OTA_OFFERED:
        if (accepts_transfer(r, d))
            set_dev(r, d, RDEV_OFFERED, d->reason, progress);
        break;
    case TML_OTA_DOWNLOADING:
        if (accepts_transfer(r, d))
            set_dev(r, d, RDEV_DOWNLOADING, d->reason, progress);
        break;
    case TML_OTA_VERIFYING:
        set_dev(r, d, RDEV_VERIFYING, d->reason, progress);
        break;
    case TML_OTA_READY:
    case TML_OTA_ACTIVATING:
        set_dev(r, d, RDEV_ACTIVATING, 0, now_ms + r->pol.trial_timeout_ms);
        break;
    case TML_OTA_TRIAL:
        set_dev(r, d, RDEV_TRIAL, 0, now_ms + r->pol.trial_timeout_ms);
        break;
    case TML_OTA_FAILED:
        if (ota_reason == TML_OTA_R_ALREADY_INSTALLED)
            set_dev(r, d, RDEV_CONFIRMED, ota_reason, 0);
        else if (ota_reason == TML_OTA_R_CANCELLED &&
                 r->state == ROLLOUT_ABORTED)
            set_dev(r, d, RDEV_CANCELLED, ROLLOUT_R_ABORTED, 0);
        else
            attempt_failed(r, d, ota_reason, now_ms);
        break;
    default: /* IDLE: the device forgot the offer; offer it again */
        if (is_transfer(d->state))
            set_dev(r, d, RDEV_PENDING, d->reason, 0);
        break;
    }
    return 0;
}

int
rollout_on_rollback_status(struct rollout *r, const char *id,
                           uint8_t ota_state, uint8_t ota_reason)
{
    struct rollout_dev *d = rollout_find(r, id);

    if (d == NULL)
        return -ESRCH;
    if (d->state != RDEV_ROLLBACK)
        return -EBADMSG;
    d->online = true;
    if (ota_state == TML_OTA_CONFIRMED)
        set_dev(r, d, RDEV_ROLLED_BACK, 0, 0);
    else if (ota_state == TML_OTA_FAILED || ota_state == TML_OTA_REVERTED) {
        d->reason = ota_reason;
        changed(r, d);
    }
    return 0;
}

int
rollout_on_presence(struct rollout *r, const char *id, bool online,
                    uint32_t model_version, uint64_t now_ms)
{
    struct rollout_dev *d = rollout_find(r, id);
    bool was_online;

    if (d == NULL)
        return -ESRCH;
    was_online = d->online;
    d->online = online;
    if (!online) {
        /* The progress deadline stops while the device is away. */
        if (is_transfer(d->state))
            d->deadline_ms = 0;
        return 0;
    }
    if (model_version != 0 && model_version == r->version &&
        d->state == RDEV_PENDING) {
        set_dev(r, d, RDEV_CONFIRMED, TML_OTA_R_ALREADY_INSTALLED, 0);
        return 0;
    }
    /* A rollout that finished with this device pending (restored from the
     * tables of an older tmld, which finished without offline devices):
     * the last wave reopens for it, as for a device that joins late. */
    if (d->state == RDEV_PENDING && r->state == ROLLOUT_DONE && r->started) {
        r->state = ROLLOUT_RUNNING;
        r->waves[r->cur_wave].state = WAVE_ACTIVE;
        changed(r, NULL);
    }
    /* Back from a reconnect or reboot mid-download: the same offer again,
     * so the agent resumes at its persisted offset (no new attempt). */
    if (is_transfer(d->state) && (!was_online || d->deadline_ms == 0) &&
        accepts_transfer(r, d) && r->ops.offer(r->ops.ctx, r, d) == 0)
        d->deadline_ms = now_ms + r->pol.device_timeout_ms;
    return 0;
}

int
rollout_pause(struct rollout *r, const char *why)
{
    if (r->state == ROLLOUT_ABORTED || r->state == ROLLOUT_DONE)
        return -EPERM;
    if (r->state == ROLLOUT_PAUSED)
        return -EALREADY;
    r->state = ROLLOUT_PAUSED;
    set_reason(r, "%s", why != NULL ? why : "paused by the operator");
    changed(r, NULL);
    return 0;
}

int
rollout_resume(struct rollout *r, uint64_t now_ms)
{
    struct rollout_wave *wv = &r->waves[r->cur_wave];

    if (r->state == ROLLOUT_RUNNING)
        return -EALREADY;
    if (r->state != ROLLOUT_PAUSED || wv->state == WAVE_FAILED)
        return -EPERM;
    /* Failures the operator has seen do not pause again; new ones do. */
    for (unsigned w = 0; w <= r->cur_wave; w++) {
        uint32_t bad;
        uint8_t top;
        count_wave(r, w, &bad, &top);
        r->waves[w].n_failed_acked = bad;
    }
    if (wv->state == WAVE_GATE) {
        wv->gate_first_ms = now_ms;
        wv->next_gate_ms = now_ms;
    }
    r->state = ROLLOUT_RUNNING;
    r->reason[0] = '\0';
    changed(r, NULL);
    return 0;
}

int
rollout_abort(struct rollout *r)
{
    if (r->state == ROLLOUT_ABORTED)
        return -EALREADY;
    if (r->state == ROLLOUT_DONE)
        return -EPERM;
    for (size_t i = 0; i < r->n_devs; i++) {
        struct rollout_dev *d = &r->devs[i];
        if (is_transfer(d->state)) {
            if (r->ops.cancel != NULL)
                r->ops.cancel(r->ops.ctx, r, d);
            set_dev(r, d, RDEV_CANCELLED, ROLLOUT_R_ABORTED, 0);
        } else if (d->state == RDEV_PENDING) {
            set_dev(r, d, RDEV_CANCELLED, ROLLOUT_R_ABORTED, 0);
        }
    }
    r->state = ROLLOUT_ABORTED;
    set_reason(r, "aborted by the operator");
    changed(r, NULL);
    return 0;
}

bool
rollout_waits_only_for_offline(const struct rollout *r)
{
    uint32_t n = 0;

    if (!r->started || r->state != ROLLOUT_RUNNING ||
        r->cur_wave + 1 != r->pol.n_waves ||
        r->waves[r->cur_wave].state != WAVE_ACTIVE)
        return false;
    for (size_t i = 0; i < r->n_devs; i++) {
        if (!is_finished(&r->devs[i]))
            return false;
        if (r->devs[i].state == RDEV_PENDING)
            n++;
    }
    return n > 0;
}

int
rollout_supersede(struct rollout *r, uint32_t by_id)
{
    uint32_t n = 0;

    if (!rollout_waits_only_for_offline(r))
        return -EBUSY;
    for (size_t i = 0; i < r->n_devs; i++) {
        struct rollout_dev *d = &r->devs[i];
        if (d->state == RDEV_PENDING) {
            set_dev(r, d, RDEV_CANCELLED, ROLLOUT_R_ABORTED, 0);
            n++;
        }
    }
    r->state = ROLLOUT_ABORTED;
    set_reason(r, "superseded by rollout %u (%u offline device%s now its "
               "target%s)",
               by_id, n, n == 1 ? "" : "s", n == 1 ? "" : "s");
    changed(r, NULL);
    return 0;
}

void
rollout_counts(const struct rollout *r, int wave, uint32_t counts[RDEV__COUNT])
{
    memset(counts, 0, sizeof(uint32_t) * RDEV__COUNT);
    for (size_t i = 0; i < r->n_devs; i++) {
        const struct rollout_dev *d = &r->devs[i];
        if (wave >= 0 && d->wave != (unsigned)wave)
            continue;
        if (d->state < RDEV__COUNT)
            counts[d->state]++;
    }
}

const char *
rollout_state_name(uint8_t s)
{
    static const char *const names[] = {"running", "paused", "aborted",
                                        "done"};
    return s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

const char *
rollout_wave_state_name(uint8_t s)
{
    static const char *const names[] = {"pending", "active", "soak",
                                        "gate", "passed", "failed"};
    return s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

const char *
rollout_dev_state_name(uint8_t s)
{
    static const char *const names[] = {
        "pending",   "offered",  "downloading", "verifying", "activating",
        "trial",     "confirmed", "failed",     "reverted",  "excluded",
        "cancelled", "rollback", "rolled-back"};
    return s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

const char *
rollout_reason_name(uint8_t r)
{
    /* Own copy of the device reasons so the state machine needs no codec
     * library; the values are proto.h's enum tml_ota_reason. */
    static const char *const dev[] = {
        "none",          "bad manifest",     "unknown key",
        "revoked key",   "bad signature",    "wrong hardware",
        "too large",     "rollback",         "already installed",
        "expired",       "arena too small",  "agent too old",
        "input shape",   "bad hash",         "bad chunk",
        "wrong offer",   "flash error",      "self-test failed",
        "trial timeout", "slow retrieval",   "cancelled",
        "busy"};
    static const char *const gw[] = {"timeout", "retries exhausted",
                                     "aborted", "incompatible",
                                     "no previous model", "trial timeout",
                                     "offline past the deadline"};

    if (r < sizeof(dev) / sizeof(dev[0]))
        return dev[r];
    if (r >= ROLLOUT_R_TIMEOUT &&
        r - ROLLOUT_R_TIMEOUT < (int)(sizeof(gw) / sizeof(gw[0])))
        return gw[r - ROLLOUT_R_TIMEOUT];
    return "unknown";
}
