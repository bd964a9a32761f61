/*
 * registry.c: the devices tmld has heard from, in memory on the loop thread
 * (a hash by device id, capped at [ingest] max_devices). It decides online
 * and offline: a device is online from any message it sends until its last
 * will (up/state offline) arrives or it is silent for [ingest]
 * offline_after. Changes go to the database as REC_STATE records; last_seen
 * is written in bulk once a minute (REC_SEEN) rather than per message, so
 * that the devices table is not rewritten on every commit.
 * Devices are never freed before shutdown: records in flight point at them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

#define SWEEP_MS 1000
#define SEEN_FLUSH_MS 60000

struct registry {
    struct tmld *d;
    struct device **buckets;
    size_t n_buckets;
    struct device *all;
    size_t n, n_online;
    uv_timer_t sweep;
    uint64_t seen_flushed_ms;
    bool is_full_logged;
};

static size_t
hash(const char *s)
{
    size_t h = 1469598103934665603ull;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static void
submit_state(struct tmld *d, struct device *dev, bool online)
{
    struct rec *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return;
    r->kind = REC_STATE;
    r->dev = dev;
    r->recv_s = tmld_wall_s();
    r->u.online = online;
    if (store_submit(d, r) == 0)
        dev->is_known_online = online;
}

void
registry_set_online(struct tmld *d, struct device *dev, bool online)
{
    struct registry *g = d->reg;
    if (dev->is_online == online)
        return;
    dev->is_online = online;
    if (online)
        g->n_online++;
    else
        g->n_online--;
    log_debug("registry: dev=%s %s", dev->name, online ? "online" : "offline");
    submit_state(d, dev, online);
}

void
registry_seen(struct tmld *d, struct device *dev)
{
    dev->last_seen_ms = tmld_now_ms(d);
    dev->last_seen_s = tmld_wall_s();
}

struct device *
registry_get(struct tmld *d, const char *name, bool create)
{
    struct registry *g = d->reg;
    size_t b = hash(name) & (g->n_buckets - 1);
    for (struct device *v = g->buckets[b]; v != NULL; v = v->hnext)
        if (strcmp(v->name, name) == 0)
            return v;
    if (!create)
        return NULL;
    if (g->n >= d->set.max_devices) {
        if (!g->is_full_logged)
            log_err("registry: %zu devices, the [ingest] max_devices cap: "
                    "ignoring new device %s and any after it",
                    g->n, name);
        g->is_full_logged = true;
        return NULL;
    }
    size_t len = strlen(name);
    if (len > TML_MAX_DEVICE_ID)
        return NULL;
    struct device *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return NULL;
    memcpy(v->name, name, len + 1);
    v->hnext = g->buckets[b];
    g->buckets[b] = v;
    v->lnext = g->all;
    g->all = v;
    g->n++;
    return v;
}

static void
sweep_cb(uv_timer_t *t)
{
    struct registry *g = t->data;
    struct tmld *d = g->d;
    uint64_t now = tmld_now_ms(d);
    bool flush_seen = now - g->seen_flushed_ms >= SEEN_FLUSH_MS;
    for (struct device *v = g->all; v != NULL; v = v->lnext) {
        if (v->is_online && now - v->last_seen_ms > d->set.offline_after_ms) {
            log_info("registry: dev=%s offline: silent for %llu ms", v->name,
                     (unsigned long long)(now - v->last_seen_ms));
            registry_set_online(d, v, false);
        }
        if (flush_seen && v->last_seen_s > v->persisted_seen_s) {
            struct rec *r = calloc(1, sizeof(*r));
            if (r == NULL)
                break;
            r->kind = REC_SEEN;
            r->dev = v;
            r->recv_s = v->last_seen_s;
            if (store_submit(d, r) == 0)
                v->persisted_seen_s = v->last_seen_s;
        }
    }
    if (flush_seen)
        g->seen_flushed_ms = now;
}

int
registry_init(struct tmld *d)
{
    struct registry *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return -ENOMEM;
    g->d = d;
    g->n_buckets = 1024;
    while (g->n_buckets < d->set.max_devices && g->n_buckets < (1u << 20))
        g->n_buckets <<= 1;
    g->buckets = calloc(g->n_buckets, sizeof(*g->buckets));
    if (g->buckets == NULL) {
        free(g);
        return -ENOMEM;
    }
    d->reg = g;
    g->seen_flushed_ms = tmld_now_ms(d);
    uv_timer_init(d->loop, &g->sweep);
    g->sweep.data = g;
    uv_timer_start(&g->sweep, sweep_cb, SWEEP_MS, SWEEP_MS);
    return 0;
}

size_t
registry_count(struct tmld *d, size_t *n_online)
{
    if (d->reg == NULL) {
        if (n_online)
            *n_online = 0;
        return 0;
    }
    if (n_online)
        *n_online = d->reg->n_online;
    return d->reg->n;
}

struct device *
registry_first(struct tmld *d)
{
    return d->reg ? d->reg->all : NULL;
}

int64_t
tmld_device_rowid(struct tmld *d, const char *dev)
{
    struct device *v = d->reg ? registry_get(d, dev, false) : NULL;
    return v ? v->rowid : 0;
}

bool
tmld_device_is_online(struct tmld *d, const char *dev)
{
    struct device *v = d->reg ? registry_get(d, dev, false) : NULL;
    return v != NULL && v->is_online;
}

/* Persists last_seen of every device (shutdown path, before the store
 * drains). */
void
registry_flush_seen(struct tmld *d)
{
    struct registry *g = d->reg;
    if (g == NULL)
        return;
    g->seen_flushed_ms = 0;
    uint64_t keep = d->set.offline_after_ms;
    d->set.offline_after_ms = UINT64_MAX; /* no offline marking now */
    g->seen_flushed_ms = tmld_now_ms(d) - SEEN_FLUSH_MS;
    sweep_cb(&g->sweep);
    d->set.offline_after_ms = keep;
}

static void
registry_free_cb(uv_handle_t *h)
{
    struct registry *g = h->data;
    while (g->all) {
        struct device *v = g->all;
        g->all = v->lnext;
        free(v);
    }
    free(g->buckets);
    free(g);
}

void
registry_fini(struct tmld *d)
{
    struct registry *g = d->reg;
    if (g == NULL)
        return;
    d->reg = NULL;
    uv_close((uv_handle_t *)&g->sweep, registry_free_cb);
}
