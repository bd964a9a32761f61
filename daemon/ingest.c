/*
 * ingest.c: what happens to an up message from a device, and the acks.
 *
 * hello/state/tele/sample are decoded here (proto/), on the loop thread, so
 * that a malformed payload is counted against its device with the decoder's
 * reason and never reaches the writer; what goes to the store is a struct rec
 * holding copies (the MQTT payload buffer dies with the callback). Other
 * kinds (ota) only go to the modules' hooks.
 *
 * Acks: after a batch commits, store calls ingest_committed() once per device
 * the batch touched, and one cumulative down/ack goes out with the committed
 * high-water sequence of each stream the device sent (duplicates and gaps
 * included: the ack tells the device where to resume, go-back-N). The
 * high-water may include numbers given up below a record's low-water
 * (store.c): the device declared it no longer holds them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

struct ingest {
    struct ingest_stats stats;
    bool is_full_logged;
};

static struct ingest *
ing(struct tmld *d)
{
    if (d->ingest == NULL)
        d->ingest = calloc(1, sizeof(struct ingest));
    return d->ingest;
}

const struct ingest_stats *
ingest_stats(struct tmld *d)
{
    static const struct ingest_stats none;
    struct ingest *g = ing(d);
    return g ? &g->stats : &none;
}

void
tmld_count_malformed(struct tmld *d, const char *dev, enum tml_kind kind,
                     const char *reason)
{
    struct ingest *g = ing(d);
    if (g == NULL)
        return;
    if (strcmp(reason, "oversize") == 0)
        g->stats.oversize++;
    else
        g->stats.malformed++;
    /* Created if new, so that even a device whose every message is
     * rejected is rate-limited and shows up in device.show. */
    struct device *v = d->reg ? registry_get(d, dev, true) : NULL;
    uint64_t now = tmld_now_ms(d);
    if (v == NULL) {
        /* Registry full: one line per interval for all such devices. */
        static uint64_t logged_ms;
        if (logged_ms == 0 || now - logged_ms >= d->set.malformed_log_ms) {
            logged_ms = now ? now : 1;
            log_warn("ingest: dev=%s %s: %s", dev, tml_kind_name(kind),
                     reason);
        }
        return;
    }
    v->n_malformed++;
    /* Rate-limited per device so that one broken device cannot fill the
     * disk with log lines. */
    if (v->malformed_logged_ms != 0 &&
        now - v->malformed_logged_ms < d->set.malformed_log_ms) {
        v->n_malformed_suppressed++;
        return;
    }
    if (v->n_malformed_suppressed)
        log_warn("ingest: dev=%s %s: rejected: %s (%llu more since the last "
                 "report, %llu in total)",
                 dev, tml_kind_name(kind), reason,
                 (unsigned long long)v->n_malformed_suppressed,
                 (unsigned long long)v->n_malformed);
    else
        log_warn("ingest: dev=%s %s: rejected: %s", dev, tml_kind_name(kind),
                 reason);
    v->malformed_logged_ms = now ? now : 1;
    v->n_malformed_suppressed = 0;
}

static void
copy_str(char *dst, size_t cap, struct tml_str s)
{
    size_t n = s.len < cap - 1 ? s.len : cap - 1;
    memcpy(dst, s.p, n);
    dst[n] = '\0';
}

static struct rec *
new_rec(enum rec_kind kind, struct device *dev)
{
    struct rec *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->kind = kind;
    r->dev = dev;
    r->recv_s = tmld_wall_s();
    return r;
}

static int
dup_data(struct rec *r, const void *p, size_t len)
{
    r->data = malloc(len ? len : 1);
    if (r->data == NULL)
        return -ENOMEM;
    if (len)
        memcpy(r->data, p, len);
    r->data_len = len;
    return 0;
}

static struct rec *
rec_from_hello(struct device *dev, const struct tml_hello *h)
{
    struct rec *r = new_rec(REC_HELLO, dev);
    struct hello_rec *x = calloc(1, sizeof(*x));
    if (r == NULL || x == NULL) {
        free(r);
        free(x);
        return NULL;
    }
    r->u.hello = x;
    x->agent_version = h->agent_version;
    x->model_version = h->model_version;
    x->model_slot = h->model_slot;
    x->slot_size = h->slot_size;
    x->arena_size = h->arena_size;
    x->chunk_max = h->chunk_max;
    x->boot_count = h->boot_count;
    x->last_ota_state = h->last_ota_state;
    x->last_ota_reason = h->last_ota_reason;
    x->last_ota_version = h->last_ota_version;
    x->version_floor = h->version_floor;
    x->tele_next = h->tele_next;
    x->sample_next = h->sample_next;
    x->boot_id = h->boot_id;
    x->epoch = h->epoch;
    copy_str(x->hw, sizeof(x->hw), h->hw);
    copy_str(x->model, sizeof(x->model), h->model);
    x->n_groups = h->n_groups < TML_MAX_GROUPS ? h->n_groups : TML_MAX_GROUPS;
    for (size_t i = 0; i < x->n_groups; i++)
        copy_str(x->groups[i], sizeof(x->groups[i]), h->groups[i]);
    return r;
}

static struct rec *
rec_from_tele(struct device *dev, const struct tml_tele *t,
              const uint8_t *payload, size_t len)
{
    struct rec *r = new_rec(REC_TELE, dev);
    if (r == NULL || dup_data(r, payload, len) != 0) {
        rec_free(r);
        return NULL;
    }
    r->seq = t->seq;
    r->lw = t->lw;
    r->epoch = t->epoch;
    r->u.tele.model_version = t->model_version;
    r->u.tele.period_s = t->period_s;
    r->u.tele.n_inferences = t->n_inferences;
    r->u.tele.n_low_conf = t->n_low_conf;
    r->u.tele.n_flagged = t->n_flagged;
    r->u.tele.n_errors = t->n_errors;
    r->u.tele.lat_mean_us = t->lat_mean_us;
    return r;
}

static struct rec *
rec_from_sample(struct device *dev, const struct tml_sample *s)
{
    struct rec *r = new_rec(REC_SAMPLE, dev);
    if (r == NULL || dup_data(r, s->data.p, s->data.len) != 0) {
        rec_free(r);
        return NULL;
    }
    r->seq = s->seq;
    r->lw = s->lw;
    r->epoch = s->epoch;
    r->u.sample.sample_id = s->sample_id;
    r->u.sample.model_version = s->model_version;
    r->u.sample.reason = s->reason;
    r->u.sample.predicted = s->predicted;
    r->u.sample.confidence_bp = s->confidence_bp;
    r->u.sample.has_expected = s->has_expected;
    r->u.sample.expected = s->expected;
    r->u.sample.dtype = s->dtype;
    r->u.sample.rate_hz = s->rate_hz;
    r->u.sample.total_len = s->total_len;
    r->u.sample.offset = s->offset;
    size_t n = 0;
    char *sh = r->u.sample.shape;
    for (size_t i = 0; i < s->n_shape && i < TML_MAX_SHAPE; i++)
        n += (size_t)snprintf(sh + n, sizeof(r->u.sample.shape) - n, "%s%u",
                              i ? "x" : "", (unsigned)s->shape[i]);
    return r;
}

void
ingest_on_message(struct tmld *d, const struct tml_topic *t, const char *dev,
                  const uint8_t *payload, size_t len)
{
    struct ingest *g = ing(d);
    if (g == NULL)
        return;
    g->stats.received++;
    struct device *v = registry_get(d, dev, true);
    if (v == NULL) {
        g->stats.refused++;
        return;
    }
    registry_seen(d, v);
    if (v->rowid == 0 && !v->is_row_requested) {
        /* The first message of a new device creates its row, so that even a
         * device that only ever sends garbage shows up in device.show. */
        struct rec *sr = new_rec(REC_SEEN, v);
        if (sr != NULL && store_submit(d, sr) == 0)
            v->is_row_requested = true;
    }
    enum tml_err err = TML_OK;
    struct rec *r = NULL;
    bool is_record = false;
    switch (t->kind) {
    case TML_KIND_HELLO: {
        struct tml_hello h;
        err = tml_hello_decode(payload, len, &h);
        if (err == TML_OK) {
            registry_set_online(d, v, true);
            r = rec_from_hello(v, &h);
        }
        break;
    }
    case TML_KIND_STATE: {
        struct tml_state st;
        err = tml_state_decode(payload, len, &st);
        if (err == TML_OK)
            registry_set_online(d, v, st.online);
        break;
    }
    case TML_KIND_TELE: {
        struct tml_tele te;
        err = tml_tele_decode(payload, len, &te);
        if (err == TML_OK) {
            is_record = true;
            registry_set_online(d, v, true);
            r = rec_from_tele(v, &te, payload, len);
        }
        break;
    }
    case TML_KIND_SAMPLE: {
        struct tml_sample sa;
        err = tml_sample_decode(payload, len, &sa);
        if (err == TML_OK) {
            is_record = true;
            registry_set_online(d, v, true);
            r = rec_from_sample(v, &sa);
        }
        break;
    }
    default:
        registry_set_online(d, v, true);
        break;
    }
    if (err != TML_OK) {
        tmld_count_malformed(d, dev, t->kind, tml_strerror(err));
    } else if (r != NULL) {
        /* A full queue refuses records: they are not acked, so the device
         * keeps them and resends; nothing is lost, only delayed. */
        if (store_queued(d) >= d->set.db_queue_max) {
            g->stats.refused++;
            if (!g->is_full_logged)
                log_warn("ingest: write queue full (%llu records): "
                         "refusing records until it drains",
                         (unsigned long long)d->set.db_queue_max);
            g->is_full_logged = true;
            rec_free(r);
        } else {
            g->is_full_logged = false;
            if (store_submit(d, r) != 0)
                g->stats.refused++;
        }
    } else if (is_record || t->kind == TML_KIND_HELLO) {
        g->stats.refused++; /* out of memory */
    }
    mqtt_dispatch_hooks(d, dev, t->kind, payload, len);
}

void
ingest_committed(struct tmld *d, struct device *dev, bool has_tele,
                 uint32_t tele_hw, bool has_sample, uint32_t sample_hw,
                 uint32_t epoch)
{
    struct ingest *g = ing(d);
    if (g == NULL)
        return;
    struct tml_ack a = {0};
    a.has_tele = has_tele && tele_hw > 0;
    a.tele_seq = tele_hw;
    a.has_sample = has_sample && sample_hw > 0;
    a.sample_seq = sample_hw;
    a.epoch = epoch;
    if (!a.has_tele && !a.has_sample)
        return;
    uint8_t buf[64];
    size_t len;
    if (tml_ack_encode(&a, buf, sizeof(buf), &len) != TML_OK) {
        g->stats.ack_errors++;
        return;
    }
    /* A lost ack (link down) is harmless: the device resends, the store
     * absorbs the duplicates, and the next commit acks again. */
    if (tmld_publish(d, dev->name, TML_KIND_ACK, buf, len) == 0)
        g->stats.acks++;
    else
        g->stats.ack_errors++;
    tmld_test_crash("after_ack_publish");
}
