/*
 * ota.c: tmld's OTA module (issue 5): rollouts of signed models in waves.
 *
 * Owns the artifact store (ota_store.c), the live rollouts (rollout.c state
 * machines wrapped in struct ota_rollout) and the 100 ms tick that drives
 * them. Device messages come in through up-hooks (up/ota: chunk requests and
 * status; up/hello: reboots, model version, late group members); offers,
 * chunks and cancels go out on down/ota. The health gate is a bounded query
 * over the tele table answered synchronously on the loop thread.
 *
 * Invariants: a chunk is served only for a request whose offer id belongs
 * to a live rollout and to that device (rollout_on_request); an expired
 * manifest is never offered (S6); the artifact bytes come from the pinned
 * in-memory copy, never from disk per request. tmld holds no private key:
 * only bundles that verify against [ota] trusted_keys are ever stored.
 */
#include "ota.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define OTA_DEFAULT_TICK_MS 100
#define OTA_MAX_CHUNKS_PER_REQUEST 8
/* A request on the same link within this time of the last serve asks for
 * chunks still in flight (the agent answers a repeated offer with the same
 * request): only what was not served yet goes out. Well below the agent's
 * request timeout (10 s), after which a lost window is asked for again and
 * served in full. */
#define OTA_ECHO_MS 2000

/* The live module instance, so that a worker-thread completion that
 * outlived the module (shutdown) can tell. */
static struct ota *the_ota;

bool
ota_is_alive(const struct ota *o)
{
    return o != NULL && o == the_ota && !o->stopping;
}

/* ---- helpers ---------------------------------------------------------------- */

struct ota_rollout *
ota_find_rollout(struct ota *o, uint32_t id)
{
    for (size_t i = 0; i < o->n_rollouts; i++) {
        if (o->rollouts[i]->r.id == id)
            return o->rollouts[i];
    }
    return NULL;
}

uint8_t
ota_capacity_check(const struct ota_model_info *m, const char *hw,
                   uint32_t slot_size, uint32_t arena_size,
                   uint32_t agent_version, uint32_t version_floor)
{
    if (hw != NULL && hw[0] != '\0' && strcmp(hw, m->hw) != 0)
        return TML_OTA_R_WRONG_HW;
    if (slot_size != 0 && m->size > slot_size)
        return TML_OTA_R_TOO_LARGE;
    if (arena_size != 0 && m->arena_size > arena_size)
        return TML_OTA_R_ARENA;
    if (agent_version != 0 && m->min_agent_version > agent_version)
        return TML_OTA_R_AGENT_TOO_OLD;
    if (version_floor != 0 && m->version < version_floor)
        return TML_OTA_R_ROLLBACK;
    return 0;
}

static size_t
dev_index(const struct rollout *r, const struct rollout_dev *d)
{
    return (size_t)(d - r->devs);
}

static int
publish_down(struct ota *o, const char *dev, const struct tml_ota_down *m)
{
    uint8_t buf[TML_MAX_MESSAGE];
    size_t len;

    if (tml_ota_down_encode(m, buf, sizeof(buf), &len) != TML_OK)
        return -EINVAL;
    /* A chunk answers a request: the device asks again for what does not
     * come (link cut, or its request timeout), so QoS 1 would only add a
     * PUBACK round per hop and chunks the broker queues for an offline
     * device, which it no longer wants when back (it asks from its own
     * offset). Offers and cancels are not asked for: QoS 1. */
    if (m->kind == TML_OTA_DOWN_CHUNK)
        return tmld_publish_qos0(o->d, dev, TML_KIND_OTA, buf, len);
    return tmld_publish(o->d, dev, TML_KIND_OTA, buf, len);
}

/* ---- rollout ops -------------------------------------------------------------- */

static int
op_offer(void *ctx, struct rollout *r, struct rollout_dev *d)
{
    struct ota_rollout *orr = ctx;
    struct ota *o = orr->o;
    struct tml_ota_down m;
    int64_t now_s = tmld_wall_s();
    int rc;

    (void)r;
    /* S6: a manifest past its expiry is never offered; the rollout pauses
     * so the operator sees why and can deploy a fresh signature. */
    if (orr->model.expires != 0 && now_s >= (int64_t)orr->model.expires) {
        o->c.expired_refused++;
        if (orr->r.state == ROLLOUT_RUNNING) {
            log_warn("ota: rollout=%u model=%s v%u: manifest expired, "
                     "pausing",
                     orr->r.id, orr->model.name, orr->model.version);
            (void)rollout_pause(&orr->r, "the manifest has expired: sign "
                                         "and deploy it again");
        }
        return -ETIME;
    }
    memset(&m, 0, sizeof(m));
    m.kind = TML_OTA_DOWN_OFFER;
    m.offer_id = d->offer_id;
    m.manifest.p = orr->art->cose;
    m.manifest.len = orr->art->cose_len;
    rc = publish_down(o, d->id, &m);
    if (rc == 0) {
        o->c.offers++;
        orr->offers_sent++;
        log_debug("ota: dev=%s rollout=%u v%u: offer %08x (attempt %u)",
                  d->id, r->id, r->version, d->offer_id, d->attempts + 1);
    }
    return rc;
}

static void
op_cancel(void *ctx, struct rollout *r, struct rollout_dev *d)
{
    struct ota_rollout *orr = ctx;
    struct tml_ota_down m;

    (void)r;
    memset(&m, 0, sizeof(m));
    m.kind = TML_OTA_DOWN_CANCEL;
    m.offer_id = d->offer_id;
    if (publish_down(orr->o, d->id, &m) == 0)
        orr->o->c.cancels++;
}

static int
op_rollback(void *ctx, struct rollout *r, struct rollout_dev *d)
{
    struct ota_rollout *orr = ctx;
    struct tml_ota_down m;
    int rc;

    if (orr->rb_art == NULL)
        return -ENOENT;
    memset(&m, 0, sizeof(m));
    m.kind = TML_OTA_DOWN_OFFER;
    m.offer_id = d->offer_id | OTA_ROLLBACK_BIT;
    m.manifest.p = orr->rb_art->cose;
    m.manifest.len = orr->rb_art->cose_len;
    rc = publish_down(orr->o, d->id, &m);
    if (rc == 0) {
        orr->o->c.rollbacks++;
        log_info("ota: dev=%s rollout=%u: rollback offer of %s v%u",
                 d->id, r->id, orr->rb_art->info.name,
                 orr->rb_art->info.version);
    }
    return rc;
}

static void
op_gate(void *ctx, struct rollout *r, unsigned wave, uint64_t since_ms)
{
    struct ota_rollout *orr = ctx;
    struct health_agg canary, baseline;
    struct health_result res;
    int rc;

    (void)since_ms; /* the window is kept as a tele row id instead */
    memset(&canary, 0, sizeof(canary));
    memset(&baseline, 0, sizeof(baseline));
    rc = ota_db_gate_aggregates(orr->o, orr, &canary, &baseline);
    if (rc != 0) {
        memset(&res, 0, sizeof(res));
        res.verdict = HEALTH_HOLD;
        res.check = HEALTH_CHECK_DATA;
        snprintf(res.reason, sizeof(res.reason),
                 "telemetry query failed (%s); will retry", strerror(-rc));
    } else {
        health_evaluate(&r->pol.health, &canary, &baseline, &res);
    }
    orr->last_gate = res;
    orr->has_gate = true;
    log_info("ota: rollout=%u wave=%u gate: %s: %s", r->id, wave + 1,
             health_verdict_name(res.verdict), res.reason);
    rollout_gate_result(r, wave, &res, tmld_now_ms(orr->o->d));
}

static void
op_changed(void *ctx, struct rollout *r, struct rollout_dev *d)
{
    struct ota_rollout *orr = ctx;

    if (d == NULL) {
        orr->rollout_dirty = true;
        return;
    }
    orr->dirty[dev_index(r, d)] = true;
    if (d->state == RDEV_FAILED || d->state == RDEV_REVERTED)
        log_info("ota: dev=%s rollout=%u v%u: %s: %s", d->id, r->id,
                 r->version, rollout_dev_state_name(d->state),
                 rollout_reason_name(d->reason));
}

void
ota_rollout_ops(struct ota *o, struct ota_rollout *orr,
                struct rollout_ops *ops)
{
    (void)o;
    ops->ctx = orr;
    ops->offer = op_offer;
    ops->cancel = op_cancel;
    ops->rollback = op_rollback;
    ops->gate = op_gate;
    ops->changed = op_changed;
}

struct ota_rollout *
ota_rollout_new(struct ota *o, uint32_t id, uint32_t version,
                const struct rollout_policy *p, const char *seed, size_t cap)
{
    struct ota_rollout *orr;
    struct rollout_ops ops;

    if (cap == 0 || cap > OTA_MAX_TARGETS || id == 0 ||
        id > OTA_MAX_ROLLOUT_ID)
        return NULL;
    orr = calloc(1, sizeof(*orr));
    if (orr == NULL)
        return NULL;
    orr->o = o;
    orr->chunk_max = calloc(cap, sizeof(*orr->chunk_max));
    orr->dirty = calloc(cap, sizeof(*orr->dirty));
    ota_rollout_ops(o, orr, &ops);
    if (orr->chunk_max == NULL || orr->dirty == NULL ||
        rollout_init(&orr->r, id, version, p, seed, id << 16, cap, &ops) !=
            0) {
        free(orr->chunk_max);
        free(orr->dirty);
        free(orr);
        return NULL;
    }
    return orr;
}

void
ota_rollout_free(struct ota *o, struct ota_rollout *orr)
{
    (void)o;
    if (orr == NULL)
        return;
    if (orr->art != NULL)
        ota_store_unpin(orr->art);
    if (orr->rb_art != NULL)
        ota_store_unpin(orr->rb_art);
    rollout_free(&orr->r);
    free(orr->chunk_max);
    free(orr->dirty);
    free(orr);
}

int
ota_add_rollout(struct ota *o, struct ota_rollout *orr)
{
    if (o->n_rollouts == OTA_MAX_ROLLOUTS)
        return -ENOSPC;
    if (orr->art != NULL)
        ota_store_pin(orr->art);
    if (orr->rb_art != NULL)
        ota_store_pin(orr->rb_art);
    o->rollouts[o->n_rollouts++] = orr;
    return 0;
}

/* ---- device messages ---------------------------------------------------------- */

static void
serve_chunks(struct ota *o, struct ota_rollout *orr, struct rollout_dev *d,
             const struct ota_artifact *art, uint32_t offer_id,
             uint32_t offset, uint32_t len)
{
    uint32_t piece = TML_CHUNK_MAX;
    size_t idx = dev_index(&orr->r, d);

    if (orr->chunk_max[idx] != 0 && orr->chunk_max[idx] < piece)
        piece = orr->chunk_max[idx];
    /* One request may ask for a window of several chunks; bounded. */
    for (unsigned i = 0; i < OTA_MAX_CHUNKS_PER_REQUEST && len > 0; i++) {
        struct tml_ota_down m;
        const uint8_t *p;
        size_t n = ota_store_chunk(art, offset, len < piece ? len : piece,
                                   &p);
        if (n == 0)
            break;
        memset(&m, 0, sizeof(m));
        m.kind = TML_OTA_DOWN_CHUNK;
        m.offer_id = offer_id;
        m.offset = offset;
        m.data.p = p;
        m.data.len = n;
        if (publish_down(o, d->id, &m) != 0)
            break; /* broker down: the device asks again */
        o->c.chunks++;
        o->c.chunk_bytes += n;
        orr->chunks_sent++;
        orr->bytes_sent += n;
        if (art == orr->art) {
            uint32_t again = offset >= d->served_hi ? 0
                             : d->served_hi - offset < n
                                 ? d->served_hi - offset
                                 : (uint32_t)n;
            d->resent_bytes += again;
            orr->bytes_resent += again;
            if (offset + (uint32_t)n > d->served_hi)
                d->served_hi = offset + (uint32_t)n;
            orr->dirty[idx] = true; /* served_hi, counters: persisted */
        }
        offset += (uint32_t)n;
        len -= (uint32_t)n;
    }
}

/* Per-device request token bucket: request_rate per second, up to
 * request_burst saved. */
static bool
take_token(struct ota *o, struct rollout_dev *d, uint64_t now)
{
    uint64_t cap = (uint64_t)o->request_burst * 1000u;
    uint64_t t = d->bucket_milli;

    if (d->bucket_ms == 0)
        t = cap;
    else if (now > d->bucket_ms)
        t += (now - d->bucket_ms) * o->request_rate;
    d->bucket_ms = now;
    if (t > cap)
        t = cap;
    if (t < 1000) {
        d->bucket_milli = (uint32_t)t;
        return false;
    }
    d->bucket_milli = (uint32_t)(t - 1000);
    return true;
}

static void
on_ota_up(struct tmld *td, const char *dev, enum tml_kind kind,
          const uint8_t *payload, size_t len, void *arg)
{
    struct ota *o = arg;
    struct tml_ota_up m;
    struct ota_rollout *orr;
    struct rollout_dev *d;
    enum tml_err err;
    bool is_rb;
    uint64_t now = tmld_now_ms(td);
    int rc;

    (void)kind;
    err = tml_ota_up_decode(payload, len, &m);
    if (err != TML_OK) {
        o->c.malformed++;
        tmld_count_malformed(td, dev, TML_KIND_OTA, tml_strerror(err));
        return;
    }
    is_rb = (m.offer_id & OTA_ROLLBACK_BIT) != 0;
    orr = ota_find_rollout(o, (m.offer_id & ~OTA_ROLLBACK_BIT) >> 16);
    d = orr != NULL ? rollout_find(&orr->r, dev) : NULL;
    if (d == NULL || (d->offer_id | (is_rb ? OTA_ROLLBACK_BIT : 0)) !=
                         m.offer_id) {
        /* S7: not an offer we made to this device. A finished rollout's
         * stragglers land here too; tell them to stop. */
        o->c.unknown_offer++;
        if (m.kind == TML_OTA_UP_REQUEST) {
            struct tml_ota_down c;
            memset(&c, 0, sizeof(c));
            c.kind = TML_OTA_DOWN_CANCEL;
            c.offer_id = m.offer_id;
            (void)publish_down(o, dev, &c);
        }
        log_debug("ota: dev=%s: message for unknown offer %08x", dev,
                  m.offer_id);
        return;
    }
    if (m.kind == TML_OTA_UP_STATUS) {
        if (is_rb) {
            (void)rollout_on_rollback_status(&orr->r, dev, m.state,
                                             m.reason);
            return;
        }
        if (rollout_status_is_foreign(&orr->r, m.version)) {
            o->c.stale_offer++;
            log_debug("ota: dev=%s: status about v%u under offer %08x of "
                      "v%u, dropped", dev, m.version, m.offer_id,
                      orr->r.version);
            return;
        }
        /* The states the device passed since its previous status, in
         * order, then the one it is in (PROTOCOL.md section 8.2). */
        for (uint8_t s = TML_OTA_OFFERED; s < m.state; s++) /* state <= 9 */
            if (m.passed & (UINT32_C(1) << s))
                (void)rollout_on_status(&orr->r, dev, m.offer_id, s, 0,
                                        m.offset, now);
        (void)rollout_on_status(&orr->r, dev, m.offer_id, m.state, m.reason,
                                m.offset, now);
        return;
    }
    if (!take_token(o, d, now)) {
        /* A device asking faster than any download needs (a loop): its
         * requests are dropped until the bucket refills; the agent asks
         * again after its request timeout. */
        o->c.limited++;
        orr->requests_limited++;
        orr->rollout_dirty = true;
        return;
    }
    if (is_rb) {
        if (d->state == RDEV_ROLLBACK && orr->rb_art != NULL)
            serve_chunks(o, orr, d, orr->rb_art, m.offer_id, m.offset,
                         m.len);
        return;
    }
    rc = rollout_on_request(&orr->r, dev, m.offer_id, m.offset, now);
    if (rc == 0) {
        uint32_t from = m.offset, end = m.offset + m.len;

        if (end < from)
            end = UINT32_MAX;
        if (!d->fresh_link && from < d->served_hi &&
            now - d->last_serve_ms < OTA_ECHO_MS) {
            /* Still in flight on this link: serve only what is new. */
            from = d->served_hi < end ? d->served_hi : end;
            if (from == end)
                o->c.echoes++;
        } else if (from < d->served_hi) {
            d->rewinds++;
            orr->rewinds++;
        }
        d->fresh_link = false;
        if (from < end) {
            d->last_serve_ms = now;
            serve_chunks(o, orr, d, orr->art, m.offer_id, from, end - from);
        }
    } else if (rc == -ECANCELED) {
        struct tml_ota_down c;
        memset(&c, 0, sizeof(c));
        c.kind = TML_OTA_DOWN_CANCEL;
        c.offer_id = m.offer_id;
        (void)publish_down(o, dev, &c);
    } else {
        o->c.stale_offer++;
    }
}

static bool
hello_in_group(const struct tml_hello *h, const char *group)
{
    size_t n = strlen(group);

    for (size_t i = 0; i < h->n_groups; i++) {
        if (h->groups[i].len == n && memcmp(h->groups[i].p, group, n) == 0)
            return true;
    }
    return false;
}

static void
on_hello(struct tmld *td, const char *dev, enum tml_kind kind,
         const uint8_t *payload, size_t len, void *arg)
{
    struct ota *o = arg;
    struct tml_hello h;
    uint64_t now = tmld_now_ms(td);
    char hw[TML_MAX_NAME + 1];

    (void)kind;
    /* The core counts malformed hellos; here they are just ignored. */
    if (tml_hello_decode(payload, len, &h) != TML_OK)
        return;
    memset(hw, 0, sizeof(hw));
    memcpy(hw, h.hw.p, h.hw.len < TML_MAX_NAME ? h.hw.len : TML_MAX_NAME);
    /* A group with no rollout in memory: its latest finished one comes
     * back from the tables and the artifact store for a device that does
     * not have that model (joined late, or was away for longer than
     * [ota] finished_keep). */
    for (size_t g = 0; g < h.n_groups; g++) {
        char grp[TML_MAX_NAME + 1], model[TML_MAX_NAME + 1];
        bool live = false;

        if (h.groups[g].len == 0 || h.groups[g].len > TML_MAX_NAME)
            continue;
        memcpy(grp, h.groups[g].p, h.groups[g].len);
        grp[h.groups[g].len] = '\0';
        for (size_t i = 0; i < o->n_rollouts && !live; i++)
            live = strcmp(o->rollouts[i]->group, grp) == 0;
        if (live)
            continue;
        memset(model, 0, sizeof(model));
        memcpy(model, h.model.p,
               h.model.len < TML_MAX_NAME ? h.model.len : TML_MAX_NAME);
        (void)ota_db_load_group(o, grp, model, h.model_version);
    }
    for (size_t i = 0; i < o->n_rollouts; i++) {
        struct ota_rollout *orr = o->rollouts[i];
        struct rollout_dev *d = rollout_find(&orr->r, dev);
        if (d == NULL && orr->group[0] != '\0' &&
            hello_in_group(&h, orr->group) &&
            orr->r.state != ROLLOUT_ABORTED) {
            /* A device that joins the group later gets the group's
             * current model. */
            uint8_t why = ota_capacity_check(&orr->model, hw, h.slot_size,
                                             h.arena_size, h.agent_version,
                                             h.version_floor);
            if (rollout_add_device(&orr->r, dev, true, why) == 0) {
                orr->is_finished_logged = false;
                d = rollout_find(&orr->r, dev);
                orr->chunk_max[dev_index(&orr->r, d)] = h.chunk_max;
                log_info("ota: dev=%s joined rollout=%u%s%s", dev,
                         orr->r.id, why ? ": excluded: " : "",
                         why ? rollout_reason_name(why) : "");
            }
        }
        if (d == NULL)
            continue;
        orr->chunk_max[dev_index(&orr->r, d)] = h.chunk_max;
        /* The hello carries the result of the device's last update: a
         * final status lost with a broker restart is recovered here. */
        if (h.last_ota_version == orr->r.version &&
            (h.last_ota_state == TML_OTA_CONFIRMED ||
             h.last_ota_state == TML_OTA_REVERTED ||
             (h.last_ota_state == TML_OTA_FAILED &&
              h.last_ota_reason != TML_OTA_R_NONE)) &&
            d->state != RDEV_CONFIRMED && d->state != RDEV_REVERTED &&
            d->state != RDEV_ROLLBACK && d->state != RDEV_ROLLED_BACK)
            (void)rollout_on_status(&orr->r, dev, d->offer_id,
                                    h.last_ota_state, h.last_ota_reason,
                                    orr->model.size, now);
        /* A hello is a (re)boot or reconnect: whatever was in flight is
         * offered again so the agent resumes from its stored offset; its
         * next request is served in full. Mid-transfer it is an
         * interruption (the re-sent accounting's denominator). */
        d->fresh_link = true;
        if (d->state == RDEV_OFFERED || d->state == RDEV_DOWNLOADING) {
            d->resumes++;
            orr->resumes++;
            orr->dirty[dev_index(&orr->r, d)] = true;
        }
        (void)rollout_on_presence(&orr->r, dev, false, 0, now);
        (void)rollout_on_presence(&orr->r, dev, true, h.model_version, now);
    }
}

static void
on_state(struct tmld *td, const char *dev, enum tml_kind kind,
         const uint8_t *payload, size_t len, void *arg)
{
    struct ota *o = arg;
    struct tml_state s;

    (void)kind;
    if (tml_state_decode(payload, len, &s) != TML_OK || s.online)
        return;
    for (size_t i = 0; i < o->n_rollouts; i++)
        (void)rollout_on_presence(&o->rollouts[i]->r, dev, false, 0,
                                  tmld_now_ms(td));
}

/* ---- tick ------------------------------------------------------------------------- */

static void
tick_cb(struct tmld *td, void *arg)
{
    struct ota *o = arg;
    uint64_t now = tmld_now_ms(td);

    if (tmld_is_stopping(td))
        return;
    for (size_t i = 0; i < o->n_rollouts; i++) {
        struct ota_rollout *orr = o->rollouts[i];
        struct rollout *r = &orr->r;
        /* Presence the registry decided (silence, last will) without a
         * message we saw: only pending devices need it to be offered. */
        for (size_t k = 0; k < r->n_devs; k++) {
            struct rollout_dev *d = &r->devs[k];
            if (d->state == RDEV_PENDING && !d->online &&
                tmld_device_is_online(td, d->id))
                (void)rollout_on_presence(r, d->id, true, 0, now);
        }
        if (tmld_mqtt_is_connected(td))
            rollout_tick(r, now);
        /* The byte counter survives a restart to within one tick. */
        if (orr->bytes_sent != orr->bytes_flushed) {
            orr->bytes_flushed = orr->bytes_sent;
            orr->rollout_dirty = true;
        }
        /* A finished rollout can reopen (a late member, a pending device
         * of a rollout finished by an older tmld coming back): it is not
         * finished any more, so it stays in memory and is logged again. */
        if (r->state == ROLLOUT_RUNNING || r->state == ROLLOUT_PAUSED)
            orr->is_finished_logged = false;
        if ((r->state == ROLLOUT_DONE || r->state == ROLLOUT_ABORTED) &&
            !orr->is_finished_logged) {
            uint32_t c[RDEV__COUNT];
            rollout_counts(r, -1, c);
            log_info("ota: rollout=%u %s v%u: %s (%u confirmed, %u failed, "
                     "%u reverted, %u excluded; %llu bytes sent)",
                     r->id, orr->model.name, r->version,
                     rollout_state_name(r->state), c[RDEV_CONFIRMED],
                     c[RDEV_FAILED], c[RDEV_REVERTED], c[RDEV_EXCLUDED],
                     (unsigned long long)orr->bytes_sent);
            orr->is_finished_logged = true;
            orr->rollout_dirty = true;
        }
    }
    ota_db_flush(o);
    /* Finished rollouts leave memory once persisted; they stay in the
     * tables for rollout.list / rollout.show. */
    for (size_t i = 0; i < o->n_rollouts;) {
        struct ota_rollout *orr = o->rollouts[i];
        if (orr->is_finished_logged && !orr->rollout_dirty &&
            o->flush_done_seq >= orr->flush_seq &&
            now - orr->r.waves[0].started_ms > o->finished_keep_ms) {
            log_info("ota: rollout=%u finished: out of memory (a late "
                     "device loads it again)",
                     orr->r.id);
            o->rollouts[i] = o->rollouts[--o->n_rollouts];
            ota_rollout_free(o, orr);
            continue;
        }
        i++;
    }
    ota_ctl_expire_uploads(o, now);
}

/* ---- config and life cycle --------------------------------------------------- */

static int
load_keys(struct tmld *td, struct ota_store *s, bool report)
{
    const char *list = tmld_config_get(td, "ota", "trusted_keys");
    char path[1024], err[OTA_STORE_ERR_MAX];
    int problems = 0;

    if (list == NULL)
        return 0;
    /* A comma-separated list of key files; spaces around names ignored. */
    while (*list != '\0') {
        const char *end = strchr(list, ',');
        size_t n = end != NULL ? (size_t)(end - list) : strlen(list);
        while (n > 0 && *list == ' ') {
            list++;
            n--;
        }
        while (n > 0 && list[n - 1] == ' ')
            n--;
        if (n >= sizeof(path)) {
            if (report)
                tmld_config_error(td, "ota", "trusted_keys",
                                  "path too long");
            problems++;
        } else if (n > 0) {
            memcpy(path, list, n);
            path[n] = '\0';
            if (ota_store_add_trusted(s, path, err, sizeof(err)) != 0) {
                if (report)
                    tmld_config_error(td, "ota", "trusted_keys",
                                      "%s (a P-256 public key PEM written "
                                      "by `tmlctl keygen`)",
                                      err);
                problems++;
            }
        }
        if (end == NULL)
            break;
        list = end + 1;
    }
    return problems;
}

static int
read_policy(struct tmld *td, struct rollout_policy *p, uint64_t *tick_ms,
            uint32_t *rate, uint32_t *burst, uint64_t *keep)
{
    uint64_t v, ms;
    int64_t i;
    int bad = 0;

    rollout_policy_default(p);
    bad |= tmld_config_int(td, "ota", "max_concurrent", p->max_concurrent, 1,
                           100000, &i);
    p->max_concurrent = (uint32_t)i;
    bad |= tmld_config_ms(td, "ota", "device_timeout", p->device_timeout_ms,
                          100, 86400000, &p->device_timeout_ms);
    bad |= tmld_config_ms(td, "ota", "trial_timeout", p->trial_timeout_ms,
                          100, 86400000, &p->trial_timeout_ms);
    bad |= tmld_config_int(td, "ota", "retries", p->max_retries, 0, 100, &i);
    p->max_retries = (uint32_t)i;
    bad |= tmld_config_int(td, "ota", "failure_threshold",
                           p->failure_threshold_pct, 0, 100, &i);
    p->failure_threshold_pct = (uint32_t)i;
    bad |= tmld_config_ms(td, "ota", "soak", p->soak_ms, 0, 7 * 86400000ull,
                          &p->soak_ms);
    bad |= tmld_config_ms(td, "ota", "gate_retry", p->gate_retry_ms, 10,
                          86400000, &p->gate_retry_ms);
    bad |= tmld_config_ms(td, "ota", "gate_max_wait", p->gate_max_wait_ms,
                          0, 30 * 86400000ull, &p->gate_max_wait_ms);
    bad |= tmld_config_ms(td, "ota", "offline_wait", p->offline_wait_ms, 0,
                          365 * 86400000ull, &p->offline_wait_ms);
    bad |= tmld_config_int(td, "ota", "gate_min_devices",
                           p->health.min_devices, 0, 100000, &i);
    p->health.min_devices = (uint32_t)i;
    bad |= tmld_config_int(td, "ota", "gate_min_inferences",
                           (int64_t)p->health.min_inferences, 0,
                           1000000000, &i);
    p->health.min_inferences = (uint64_t)i;
    bad |= tmld_config_ms(td, "ota", "tick", OTA_DEFAULT_TICK_MS, 10, 10000,
                          &ms);
    /* Chunk requests per device: one device alone on loopback makes
     * ~30/s with the agent's window of 4, a few hundred with a window of
     * 1; a device stuck in a loop makes thousands. */
    bad |= tmld_config_int(td, "ota", "request_rate", 512, 1, 100000, &i);
    if (rate != NULL)
        *rate = (uint32_t)i;
    bad |= tmld_config_int(td, "ota", "request_burst", 128, 1, 100000, &i);
    if (burst != NULL)
        *burst = (uint32_t)i;
    *tick_ms = ms;
    bad |= tmld_config_ms(td, "ota", "finished_keep", 3600000, 0,
                          30 * 86400000ull, &ms);
    if (keep != NULL)
        *keep = ms;
    bad |= tmld_config_size(td, "ota", "cache_size", 64u << 20, 1u << 20,
                            4ull << 30, &v);
    return bad != 0 ? -EINVAL : 0;
}

static int
ota_check(struct tmld *td)
{
    struct ota_store s;
    struct rollout_policy p;
    uint64_t tick;
    int problems = 0;

    memset(&s, 0, sizeof(s));
    problems += load_keys(td, &s, true);
    if (read_policy(td, &p, &tick, NULL, NULL, NULL) != 0)
        problems++;
    return problems;
}

static int
ota_init(struct tmld *td, void **state)
{
    struct ota *o = calloc(1, sizeof(*o));
    uint64_t cache = 64u << 20;
    int rc;

    if (o == NULL)
        return -ENOMEM;
    o->d = td;
    if (read_policy(td, &o->defaults, &o->tick_ms, &o->request_rate,
                    &o->request_burst, &o->finished_keep_ms) != 0) {
        rc = -EINVAL;
        goto fail;
    }
    if (tmld_config_size(td, "ota", "cache_size", cache, 1u << 20,
                         4ull << 30, &cache) != 0) {
        rc = -EINVAL;
        goto fail;
    }
    rc = ota_store_init(&o->store, tmld_state_dir(td), cache);
    if (rc != 0) {
        log_err("ota: %s/artifacts: %s", tmld_state_dir(td), strerror(-rc));
        goto fail;
    }
    if (load_keys(td, &o->store, false) != 0) {
        log_err("ota: [ota] trusted_keys: a key could not be loaded");
        rc = -EINVAL;
        goto fail;
    }
    if (o->store.n_trusted == 0)
        log_warn("ota: no [ota] trusted_keys: every deploy will be refused");
    if ((rc = tmld_up_register(td, TML_KIND_OTA, on_ota_up, o)) != 0 ||
        (rc = tmld_up_register(td, TML_KIND_HELLO, on_hello, o)) != 0 ||
        (rc = tmld_up_register(td, TML_KIND_STATE, on_state, o)) != 0 ||
        (rc = ota_ctl_register(o)) != 0)
        goto fail;
    o->next_rollout_id = ota_db_max_rollout_id(o) + 1;
    ota_db_restore(o);
    o->tick = tmld_timer_start(td, o->tick_ms, o->tick_ms, tick_cb, o);
    if (o->tick == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    the_ota = o;
    *state = o;
    log_info("ota: %zu trusted keys, %zu rollouts restored",
             o->store.n_trusted, o->n_rollouts);
    return 0;
fail:
    for (size_t i = 0; i < o->n_rollouts; i++)
        ota_rollout_free(o, o->rollouts[i]);
    ota_store_close(&o->store);
    free(o);
    return rc;
}

static void
ota_fini(struct tmld *td, void *state)
{
    struct ota *o = state;

    (void)td;
    if (o == NULL)
        return;
    o->stopping = true;
    if (o->tick != NULL)
        tmld_timer_stop(o->tick);
    /* Last state to disk; the writer queue drains after every fini. */
    ota_db_flush(o);
    for (size_t i = 0; i < o->n_rollouts; i++)
        ota_rollout_free(o, o->rollouts[i]);
    o->n_rollouts = 0;
    ota_ctl_free_uploads(o);
    ota_store_close(&o->store);
    the_ota = NULL;
    free(o);
}

TMLD_MODULE_CHECKED(ota, ota_init, ota_fini, ota_check);
