/*
 * dev.c: one simulated device of tml-devsim: a real libtmlagent context, its
 * MQTT link, its synthetic workload and its counters.
 *
 * Lifecycle: dev_setup (state dir, certificate, link, first boot) ->
 * dev_tick (called by main's loop: connect with rate limit and backoff,
 * inferences, agent poll, link flaps, reboots, misbehaviour) ->
 * dev_shutdown -> dev_teardown. A reboot throws the agent context and the
 * MQTT client away (RAM is lost) and boots again from the state directory,
 * so sequence numbers and model slots survive exactly as on a device.
 *
 * Counting: every publish passes through dev_publish, which decodes tele
 * and sample records to log each sequence number the first time it is sent
 * (later sends are "resent"); every down/ack is decoded before the agent
 * sees it, and a record counts as acked once a cumulative ack covers its
 * seq. The counters come from the wire, not from the agent's own stats, so
 * they check the agent too.
 */
#define _POSIX_C_SOURCE 200809L
#include "dev_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "certs.h"

#define POLL_MS 200u
#define MISC_MS 1000u
#define CONNECT_TIMEOUT_MS 10000u
#define BACKOFF_MIN_MS 500u
#define BACKOFF_MAX_MS 10000u
#define BOOT_DELAY_MS 300u

int dev_publish(void *user, const char *topic, const uint8_t *payload,
                size_t len, uint8_t qos, bool retain);

size_t
dev_size(void)
{
    return sizeof(struct dev);
}

struct dev *
dev_at(struct sim *s, uint32_t i)
{
    return &s->devs[i];
}

uint32_t
dev_agent_now(const struct dev *d)
{
    return (uint32_t)(d->sim->now_ms - d->boot_ms);
}

void
dev_set_model(struct dev *d, const char *name, uint32_t version)
{
    size_t n = strlen(name);

    if (n > TML_MAX_NAME)
        n = TML_MAX_NAME;
    memcpy(d->model, name, n);
    d->model[n] = '\0';
    d->model_version = version;
    d->rule = behave_lookup(&d->sim->behave, d->model, n, version);
}

/* The application runs what the agent says is active: after a revert to
 * "no model" the agent calls no activate(), so the model is re-read after
 * every agent call that may change it. */
static void
sync_model(struct dev *d)
{
    const struct tmla_model *m = tmla_active_model(&d->agent);

    if (m == NULL) {
        if (d->model_version != 0 || d->model[0] != '\0')
            dev_set_model(d, "", 0);
    } else if (m->version != d->model_version ||
               strcmp(m->name, d->model) != 0) {
        dev_set_model(d, m->name, m->version);
    }
}

/* ---- sequence logs ------------------------------------------------------ */

/* Logs seq as published; returns true if it was sent before. */
static bool
seqlog_sent(struct seqlog *l, uint32_t seq)
{
    l->last_pub = seq;
    if (l->has_rebooted && seq <= l->reboot_floor) {
        l->reused++;
        return true;
    }
    if (l->n > 0 && seq <= l->max_sent) {
        l->resent++;
        return true;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        uint32_t *p = realloc(l->seq, cap * sizeof(*p));
        if (p == NULL)
            return false; /* counted as sent, not logged: acked stays low */
        l->seq = p;
        l->cap = cap;
    }
    l->seq[l->n++] = seq;
    l->max_sent = seq;
    /* An ack may already cover it (a resend after a reboot lost RAM). */
    while (l->n_acked < l->n && l->seq[l->n_acked] <= l->ack)
        l->n_acked++;
    return false;
}

static void
seqlog_ack(struct seqlog *l, uint32_t ack)
{
    if (ack > l->ack)
        l->ack = ack;
    while (l->n_acked < l->n && l->seq[l->n_acked] <= l->ack)
        l->n_acked++;
}

/* ---- transport ------------------------------------------------------------ */

int
dev_publish(void *user, const char *topic, const uint8_t *payload, size_t len,
            uint8_t qos, bool retain)
{
    struct dev *d = user;
    struct tml_topic t;
    int rc;

    if (!d->is_link_up)
        return TMLA_PORT_AGAIN;
    rc = net_link_publish(&d->link, topic, payload, len, qos, retain);
    if (rc != 0) {
        d->publish_again++;
        return rc > 0 ? TMLA_PORT_AGAIN : TMLA_PORT_FAIL;
    }
    d->publishes++;
    d->publish_bytes += len;
    if (tml_topic_parse(topic, strlen(topic), &t) != TML_OK)
        return TMLA_PORT_OK;
    if (t.kind == TML_KIND_TELE) {
        struct tml_tele m;
        if (tml_tele_decode(payload, len, &m) == TML_OK &&
            !seqlog_sent(&d->tele, m.seq)) {
            d->folded += m.n_folded;
            d->last_tele_new_ms = d->sim->now_ms;
            if (len <= sizeof(d->last_tele)) {
                memcpy(d->last_tele, payload, len);
                d->last_tele_len = len;
            }
        }
    } else if (t.kind == TML_KIND_SAMPLE) {
        struct tml_sample m;
        if (tml_sample_decode(payload, len, &m) == TML_OK)
            (void)seqlog_sent(&d->samples, m.seq);
    } else if (t.kind == TML_KIND_OTA && d->sim->o.ota_flood > 0) {
        struct tml_ota_up u;
        /* --ota-flood: the same chunk request again and again. */
        if (tml_ota_up_decode(payload, len, &u) == TML_OK &&
            u.kind == TML_OTA_UP_REQUEST)
            for (uint32_t i = 0; i < d->sim->o.ota_flood; i++)
                if (net_link_publish(&d->link, topic, payload, len, qos,
                                     retain) != 0)
                    break;
    }
    return TMLA_PORT_OK;
}

static void
on_connect(struct net_link *l, void *user)
{
    struct dev *d = user;
    char topic[TML_MAX_TOPIC + 1];

    (void)l;
    if (d->connects++ == 0 &&
        ++d->sim->n_ever_connected == d->sim->n_devs &&
        d->sim->all_connected_ms == 0)
        d->sim->all_connected_ms = d->sim->now_ms ? d->sim->now_ms : 1;
    d->backoff_ms = BACKOFF_MIN_MS;
    if (tmla_topic(&d->agent, TML_DIR_DOWN, TML_KIND_ACK, topic,
                   sizeof(topic)) == TML_OK) {
        /* tml/v1/<id>/down/ack -> tml/v1/<id>/down/# */
        char *slash = strrchr(topic, '/');
        if (slash != NULL) {
            strcpy(slash + 1, "#");
            net_link_subscribe(&d->link, topic, 1);
        }
    }
    /* The SUBSCRIBE goes out before anything the agent publishes now, and
     * the broker handles a client's packets in order, so no ack is missed. */
    tmla_on_connect(&d->agent, dev_agent_now(d));
}

static void
on_disconnect(struct net_link *l, void *user, int rc)
{
    struct dev *d = user;

    (void)l;
    (void)rc;
    d->disconnects++;
    tmla_on_disconnect(&d->agent);
    if (d->next_connect_ms <= d->sim->now_ms) {
        uint32_t jitter = synth_below(&d->rng, d->backoff_ms / 2 + 1);
        d->next_connect_ms = d->sim->now_ms + d->backoff_ms + jitter;
        d->backoff_ms = d->backoff_ms * 2 > BACKOFF_MAX_MS
                            ? BACKOFF_MAX_MS
                            : d->backoff_ms * 2;
    }
}

static void
on_message(struct net_link *l, void *user, const char *topic,
           const void *payload, size_t len)
{
    struct dev *d = user;
    struct tml_topic t;

    (void)l;
    if (tml_topic_parse(topic, strlen(topic), &t) == TML_OK) {
        if (t.kind == TML_KIND_ACK) {
            struct tml_ack a;
            d->acks_in++;
            if (tml_ack_decode(payload, len, &a) == TML_OK) {
                if (a.has_tele)
                    seqlog_ack(&d->tele, a.tele_seq);
                if (a.has_sample)
                    seqlog_ack(&d->samples, a.sample_seq);
            }
        } else if (t.kind == TML_KIND_OTA) {
            d->ota_in++;
        } else if (t.kind == TML_KIND_CMD) {
            d->cmds_in++;
        }
    }
    if (tmla_on_message(&d->agent, topic, strlen(topic), payload, len,
                        dev_agent_now(d)) != TML_OK)
        d->bad_in++;
    tmla_poll(&d->agent, dev_agent_now(d));
    sync_model(d);
}

static const struct net_link_ops link_ops = {
    .on_connect = on_connect,
    .on_disconnect = on_disconnect,
    .on_message = on_message,
};

static int
link_create(struct dev *d, char *err, size_t err_cap)
{
    const struct sim_opts *o = &d->sim->o;
    char crt[600], key[600], will_topic[TML_MAX_TOPIC + 1];
    uint8_t will[16];
    size_t will_len = 0;
    const char *dir = o->certs_dir ? o->certs_dir : d->dir;
    const char *base = o->certs_dir ? d->id : "device";

    if (snprintf(crt, sizeof(crt), "%s/%s.crt", dir, base) >=
            (int)sizeof(crt) ||
        snprintf(key, sizeof(key), "%s/%s.key", dir, base) >=
            (int)sizeof(key)) {
        snprintf(err, err_cap, "%s: path too long", d->id);
        return -1;
    }
    if (d->sim->ca &&
        certs_mint(d->sim->ca, d->id, crt, key, err, err_cap) != 0)
        return -1;
    if (tml_topic_build(will_topic, sizeof(will_topic), d->id, strlen(d->id),
                        TML_DIR_UP, TML_KIND_STATE, NULL) != TML_OK ||
        tmla_offline_payload(will, sizeof(will), &will_len) != TML_OK) {
        snprintf(err, err_cap, "%s: cannot build the last will", d->id);
        return -1;
    }
    if (net_link_init(&d->link, &d->sim->net, d->id, o->host, o->port,
                      o->keepalive_s, o->cafile, crt, key, will_topic, will,
                      will_len, &link_ops, d, err, err_cap) != 0)
        return -1;
    d->is_link_up = true;
    return 0;
}

/* ---- boot ------------------------------------------------------------------- */

static int
boot(struct dev *d, char *err, size_t err_cap)
{
    const struct sim_opts *o = &d->sim->o;
    const struct tmla_model *m;
    enum tml_err e;

    d->boot_ms = d->sim->now_ms;
    tmla_config_defaults(&d->cfg);
    d->cfg.device_id = d->id;
    d->cfg.hw = o->hw;
    d->cfg.groups = d->groups;
    d->cfg.n_groups = d->n_groups;
    d->cfg.keys = d->sim->keys;
    d->cfg.n_keys = d->sim->n_keys;
    d->cfg.arena_size = o->arena_size;
    d->cfg.sample_buf = d->sample_buf;
    d->cfg.sample_buf_len = d->sample_buf ? (size_t)o->input_bytes *
                                                TMLA_SAMPLE_SLOTS
                                          : 0;
    d->cfg.summary_period_s = o->summary_period_s;
    d->cfg.sample_budget = o->sample_budget;
    d->cfg.budget_period_s = o->budget_period_s;
    d->cfg.conf_threshold_bp = o->conf_threshold_bp;
    d->cfg.n_classes = (uint16_t)o->n_classes;
    if (o->ack_timeout_ms > 0)
        d->cfg.ack_timeout_ms = o->ack_timeout_ms;
    if (o->ota_chunk > 0)
        d->cfg.ota_chunk = o->ota_chunk;
    if (o->ota_window > 0)
        d->cfg.ota_window = o->ota_window;
    port_fill(d);
    memset(&d->agent, 0, sizeof(d->agent));
    e = tmla_init(&d->agent, &d->cfg, &d->port, dev_agent_now(d));
    if (e != TML_OK && e != TML_ERR_NOSPACE) {
        snprintf(err, err_cap, "%s: tmla_init: %s", d->id, tml_strerror(e));
        return -1;
    }
    d->is_agent_up = true;
    m = tmla_active_model(&d->agent);
    dev_set_model(d, m ? m->name : "", m ? m->version : 0);
    return 0;
}

static void
schedule(struct dev *d)
{
    const struct sim_opts *o = &d->sim->o;
    uint64_t now = d->sim->now_ms;
    uint64_t period = o->rate_hz > 0 ? (uint64_t)(1000.0 / o->rate_hz) : 0;

    if (period == 0 && o->rate_hz > 0)
        period = 1;
    d->next_infer_ms = period ? now + BOOT_DELAY_MS +
                                    synth_below(&d->rng, (uint32_t)period + 1)
                              : UINT64_MAX;
    d->next_poll_ms = now;
    d->next_misc_ms = now + MISC_MS;
    d->next_flap_ms = o->flap_mean_s > 0
                          ? now + synth_exp_ms(&d->rng,
                                               (uint64_t)(o->flap_mean_s *
                                                          1000.0))
                          : UINT64_MAX;
    d->next_reboot_ms =
        o->reboot_mean_s > 0
            ? now + synth_exp_ms(&d->rng, (uint64_t)(o->reboot_mean_s * 1000.0))
            : UINT64_MAX;
    d->next_misbehave_ms = d->is_misbehaving
                               ? now + 1000 + synth_below(&d->rng, 4000)
                               : UINT64_MAX;
}

int
dev_setup(struct sim *s, struct dev *d, uint32_t index, char *err,
          size_t err_cap)
{
    const struct sim_opts *o = &s->o;
    uint32_t number = o->first + index, last = o->first + o->n_devices - 1;
    int width = last > 9999 ? (last > 99999 ? 7 : 5) : 4;
    uint32_t acc = 0;
    size_t g;

    memset(d, 0, sizeof(*d));
    d->sim = s;
    d->index = index;
    snprintf(d->id, sizeof(d->id), "%s%0*u", o->prefix, width, number);
    if (snprintf(d->dir, sizeof(d->dir), "%s/%s", o->state_dir, d->id) >=
        (int)sizeof(d->dir)) {
        snprintf(err, err_cap, "%s: state path too long", d->id);
        return -1;
    }
    if (mkdir(d->dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, err_cap, "%s: %s", d->dir, strerror(errno));
        return -1;
    }
    for (g = 0; g < o->n_groups; g++) {
        acc += o->groups[g].n;
        if (index < acc) {
            d->groups[0] = o->groups[g].name;
            d->n_groups = 1;
            break;
        }
    }
    synth_seed(&d->rng, o->seed * 1000003u + number);
    d->is_misbehaving = o->misbehave > 0 &&
                        synth_chance(&d->rng, (uint32_t)(o->misbehave * 1e6));
    if (o->input_bytes > 0) {
        d->sample_buf = malloc((size_t)o->input_bytes * TMLA_SAMPLE_SLOTS);
        if (d->sample_buf == NULL) {
            snprintf(err, err_cap, "%s: out of memory", d->id);
            return -1;
        }
    }
    d->backoff_ms = BACKOFF_MIN_MS;
    d->want_online = true;
    if (boot(d, err, err_cap) != 0 || link_create(d, err, err_cap) != 0)
        return -1;
    d->next_connect_ms = 0;
    schedule(d);
    return 0;
}

void
dev_teardown(struct dev *d)
{
    if (d->is_link_up)
        net_link_destroy(&d->link);
    d->is_link_up = false;
    port_close(d);
    free(d->sample_buf);
    free(d->tele.seq);
    free(d->samples.seq);
    d->sample_buf = NULL;
    d->tele.seq = d->samples.seq = NULL;
}

void
dev_shutdown(struct dev *d)
{
    d->want_online = false;
    if (d->is_link_up)
        net_link_disconnect(&d->link);
}

static void
reboot(struct dev *d)
{
    char err[256];

    d->reboots++;
    if (d->is_agent_up) {
        d->lost_unsent += d->agent.cur.n_inferences;
        for (int i = 0; i < d->agent.ring_n; i++) {
            if (d->agent.ring[i].seq == 0)
                d->lost_unsent += d->agent.ring[i].n_inferences;
            else
                d->lost_held += d->agent.ring[i].n_inferences;
        }
    }
    d->tele.has_rebooted = d->samples.has_rebooted = true;
    d->tele.reboot_floor = d->tele.max_sent;
    d->samples.reboot_floor = d->samples.max_sent;
    /* Power cycle: the socket dies without DISCONNECT (the broker publishes
     * the will), RAM (agent context, unacked ring) is gone. */
    if (d->is_link_up)
        net_link_destroy(&d->link);
    d->is_link_up = false;
    d->is_agent_up = false;
    if (boot(d, err, sizeof(err)) != 0 || link_create(d, err, sizeof(err)) != 0) {
        fprintf(stderr, "devsim: %s: reboot failed: %s\n", d->id, err);
        d->next_connect_ms = UINT64_MAX;
        return;
    }
    schedule(d);
    d->next_connect_ms = d->sim->now_ms + BOOT_DELAY_MS;
}

static void
relink(struct dev *d)
{
    char err[256];
    bool was_connected = d->link.is_connected;

    d->relinks++;
    net_link_destroy(&d->link);
    d->is_link_up = false;
    if (was_connected)
        tmla_on_disconnect(&d->agent);
    if (link_create(d, err, sizeof(err)) != 0) {
        fprintf(stderr, "devsim: %s: cannot rebuild the link: %s\n", d->id,
                err);
        d->next_connect_ms = UINT64_MAX;
        return;
    }
    d->next_connect_ms = d->sim->now_ms + d->backoff_ms;
}

/* ---- workload --------------------------------------------------------------- */

static void
infer_once(struct dev *d)
{
    const struct sim_opts *o = &d->sim->o;
    struct synth_inference inf;
    struct tmla_inference ti;
    uint8_t reason = 0;

    synth_infer(&d->rng, d->rule, o->n_classes, &inf);
    d->n_inferences++;
    d->last_infer_ms = d->sim->now_ms;
    if (inf.is_error) {
        tmla_record_error(&d->agent);
        return;
    }
    tmla_record(&d->agent, inf.predicted, inf.confidence_bp, inf.latency_us);
    if (d->sample_buf == NULL)
        return;
    memset(&ti, 0, sizeof(ti));
    ti.predicted = inf.predicted;
    ti.confidence_bp = inf.confidence_bp;
    ti.dtype = TML_DTYPE_I16;
    ti.n_shape = 1;
    ti.shape[0] = o->input_bytes / 2;
    ti.rate_hz = o->input_rate_hz;
    if (inf.is_flagged) {
        reason = TML_REASON_FLAGGED;
        ti.has_expected = true;
        ti.expected = inf.truth;
    }
    /* The clean tone of the true class plus fresh noise: real bytes that a
     * retraining pipeline could learn from, at a cost of one pass. */
    {
        const uint8_t *tone = d->sim->tones + (size_t)inf.truth * o->input_bytes;
        uint8_t *in = d->sim->scratch;
        size_t i;
        for (i = 0; i + 1 < o->input_bytes; i += 2) {
            int32_t v = (int16_t)(uint16_t)(tone[i] | tone[i + 1] << 8);
            uint16_t u;
            v += (int32_t)(synth_next(&d->rng) & 0x3ff) - 512;
            u = (uint16_t)(int16_t)v;
            in[i] = (uint8_t)u;
            in[i + 1] = (uint8_t)(u >> 8);
        }
        (void)tmla_capture(&d->agent, &ti, in, o->input_bytes, reason,
                           dev_agent_now(d));
    }
}

static void
misbehave(struct dev *d)
{
    char topic[TML_MAX_TOPIC + 1];
    uint8_t junk[64];
    size_t i, n;

    if (!d->link.is_connected ||
        tml_topic_build(topic, sizeof(topic), d->id, strlen(d->id),
                        TML_DIR_UP, TML_KIND_TELE, NULL) != TML_OK)
        return;
    if (d->last_tele_len > 0 && synth_chance(&d->rng, 500000)) {
        /* Replay: the same record again, byte for byte. */
        if (net_link_publish(&d->link, topic, d->last_tele, d->last_tele_len,
                             1, false) == 0)
            d->replays_sent++;
        return;
    }
    n = 1 + synth_below(&d->rng, sizeof(junk));
    for (i = 0; i < n; i++)
        junk[i] = (uint8_t)synth_next(&d->rng);
    if (net_link_publish(&d->link, topic, junk, n, 1, false) == 0)
        d->garbage_sent++;
}

static void
app_selftest(struct dev *d)
{
    const struct behave_rule *rule;
    const struct tmla_model *m;

    if (!tmla_in_trial(&d->agent))
        return;
    m = tmla_active_model(&d->agent);
    if (m == NULL)
        return;
    rule = behave_lookup(&d->sim->behave, m->name, strlen(m->name),
                         m->version);
    /* confirm says INVAL until the golden vectors have passed: the
     * application simply asks again at the next tick. */
    if (rule->confirm == BEHAVE_CONFIRM_REJECT ||
        behave_selftest_fails(rule, d->id)) {
        if (tmla_reject_model(&d->agent) == TML_OK)
            d->rejects++;
    } else if (rule->confirm == BEHAVE_CONFIRM_YES) {
        if (tmla_confirm_model(&d->agent) == TML_OK)
            d->confirms++;
    }
}

static uint64_t
min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

uint64_t
dev_tick(struct sim *s, struct dev *d)
{
    const struct sim_opts *o = &s->o;
    uint64_t now = s->now_ms, next;

    if (!d->is_agent_up)
        return now + 1000;
    /* Reconnect, rate-limited across the fleet. */
    if (d->is_link_up && d->want_online && !d->link.is_connected &&
        !d->link.is_connecting && now >= d->next_connect_ms &&
        s->connect_tokens >= 1.0) {
        s->connect_tokens -= 1.0;
        d->connect_started_ms = now;
        if (net_link_connect(&d->link) != 0) {
            d->next_connect_ms = now + d->backoff_ms;
            d->backoff_ms = min_u64((uint64_t)d->backoff_ms * 2,
                                    BACKOFF_MAX_MS);
        }
    }
    /* A link stuck in its handshake, or one whose socket hung up without
     * libmosquitto noticing, is thrown away and built again (the agent
     * just sees a disconnect). */
    if (d->is_link_up &&
        (d->link.is_dead ||
         (d->link.is_connecting &&
          now - d->connect_started_ms > CONNECT_TIMEOUT_MS)))
        relink(d);
    if (s->is_producing) {
        uint64_t period = o->rate_hz > 0 ? (uint64_t)(1000.0 / o->rate_hz) : 0;
        unsigned burst = 0;
        if (period == 0)
            period = 1;
        while (now >= d->next_infer_ms && burst++ < 100 &&
               (o->count == 0 || d->n_inferences < o->count)) {
            infer_once(d);
            d->next_infer_ms += period;
        }
        if (o->count > 0 && d->n_inferences >= o->count)
            d->next_infer_ms = UINT64_MAX;
        if (now >= d->next_flap_ms) {
            d->flaps++;
            if (d->link.is_connected || d->link.is_connecting)
                net_link_cut(&d->link);
            d->next_connect_ms = now + o->flap_down_ms;
            d->next_flap_ms =
                now + o->flap_down_ms +
                synth_exp_ms(&d->rng, (uint64_t)(o->flap_mean_s * 1000.0));
        }
        if (now >= d->next_reboot_ms) {
            reboot(d);
            return now + BOOT_DELAY_MS;
        }
        if (now >= d->next_misbehave_ms) {
            misbehave(d);
            d->next_misbehave_ms = now + 2000 + synth_below(&d->rng, 6000);
        }
    }
    if (now >= d->next_poll_ms) {
        app_selftest(d);
        tmla_poll(&d->agent, dev_agent_now(d));
        sync_model(d);
        d->next_poll_ms = now + POLL_MS;
    }
    if (now >= d->next_misc_ms) {
        if (d->is_link_up)
            net_link_misc(&d->link);
        d->next_misc_ms = now + MISC_MS;
    }
    next = min_u64(d->next_poll_ms, d->next_misc_ms);
    if (s->is_producing) {
        next = min_u64(next, d->next_infer_ms);
        next = min_u64(next, d->next_flap_ms);
        next = min_u64(next, d->next_reboot_ms);
    }
    if (d->want_online && !d->link.is_connected && !d->link.is_connecting)
        next = min_u64(next, d->next_connect_ms);
    return next;
}

/* ---- reporting -------------------------------------------------------------- */

bool
dev_is_done(const struct dev *d)
{
    return d->sim->o.count > 0 && d->n_inferences >= d->sim->o.count;
}

bool
dev_is_drained(const struct dev *d)
{
    const struct sim_opts *o = &d->sim->o;

    if (o->count > 0 && d->n_inferences < o->count)
        return false;
    /* Every number ever sent is covered by an ack (the agent never
     * renumbers; numbers a reboot lost are acked once the gateway gives
     * them up below the low-water). The last publish is not enough: after a
     * reconnect it may be a resend of an older record, with newer ones
     * still waiting to go out again. */
    if (d->tele.max_sent > d->tele.ack || d->samples.max_sent > d->samples.ack)
        return false;
    /* An update in progress (downloading, verifying, in trial) finishes
     * before the run ends, so a test sees its terminal state. */
    if (d->ota_state != TML_OTA_IDLE && d->ota_state != TML_OTA_CONFIRMED &&
        d->ota_state != TML_OTA_FAILED && d->ota_state != TML_OTA_REVERTED)
        return false;
    /* The summary holding the last inference has been closed and sent: a
     * summary first sent after the last inference may still be an older
     * one queued during an outage, so the agent's context is asked too
     * (as the reboot accounting does): no inference in the open period,
     * a number on every queued summary. */
    if (d->is_agent_up &&
        (d->agent.cur.n_inferences != 0 ||
         (d->agent.ring_n > 0 && d->agent.ring[d->agent.ring_n - 1].seq == 0)))
        return false;
    return d->n_inferences == 0 || d->last_tele_new_ms > d->last_infer_ms;
}

void
dev_add_totals(const struct dev *d, struct sim_totals *t)
{
    t->tele_sent += d->tele.n;
    t->tele_resent += d->tele.resent;
    t->tele_acked += d->tele.n_acked;
    t->tele_folded += d->folded;
    t->samples_sent += d->samples.n;
    t->samples_resent += d->samples.resent;
    t->samples_acked += d->samples.n_acked;
    t->publishes += d->publishes;
    t->publish_bytes += d->publish_bytes;
    t->acks_in += d->acks_in;
    t->ota_in += d->ota_in;
    t->cmds_in += d->cmds_in;
    t->inferences += d->n_inferences;
    t->connects += d->connects;
    t->disconnects += d->disconnects;
    t->flaps += d->flaps;
    t->reboots += d->reboots;
    t->lost_on_reboot += d->lost_unsent + d->lost_held;
    if (d->is_link_up && d->link.is_connected)
        t->connected++;
}

void
dev_write_json(const struct dev *d, FILE *f)
{
    const struct tmla_stats *st = tmla_stats(&d->agent);

    fprintf(f,
            "{\"id\": \"%s\", \"group\": \"%s\", \"sent\": %zu, "
            "\"acked\": %zu, \"resent\": %llu, \"folded\": %llu, "
            "\"last_seq\": %u, \"ack_seq\": %u, \"samples_sent\": %zu, "
            "\"samples_acked\": %zu, \"samples_resent\": %llu, "
            "\"inferences\": %llu, \"publishes\": %llu, \"publish_again\": "
            "%llu, \"acks_in\": %llu, \"ota_in\": %llu, \"cmds_in\": %llu, "
            "\"bad_in\": %llu, \"connects\": %llu, \"disconnects\": %llu, "
            "\"flaps\": %llu, \"reboots\": %llu, \"garbage_sent\": %llu, "
            "\"replays_sent\": %llu, \"model\": \"%s\", \"model_version\": "
            "%u, \"ota_state\": \"%s\", \"ota_reason\": \"%s\", "
            "\"ota_version\": %u, \"ota_events\": %u, \"vectors_run\": %llu, "
            "\"vectors_failed\": %llu, \"agent_tele_resent\": %u, "
            "\"agent_tele_folded\": %u, \"agent_samples_dropped\": %u, "
            "\"agent_bad_messages\": %u, \"ring_high_water\": %u, "
            "\"state_writes\": %u, \"seq_reused\": %llu, \"relinks\": "
            "%llu, \"last_pub_seq\": %u, \"samples_ack_seq\": %u, "
            "\"samples_last_pub_seq\": %u, \"lost_unsent\": %llu, "
            "\"lost_held\": %llu, \"ota_offered_wall_ms\": %llu, "
            "\"ota_stored_wall_ms\": %llu, "
            "\"ota_confirmed_wall_ms\": %llu}",
            d->id, d->n_groups ? d->groups[0] : "", d->tele.n,
            d->tele.n_acked, (unsigned long long)d->tele.resent,
            (unsigned long long)d->folded, d->tele.max_sent, d->tele.ack,
            d->samples.n, d->samples.n_acked,
            (unsigned long long)d->samples.resent,
            (unsigned long long)d->n_inferences,
            (unsigned long long)d->publishes,
            (unsigned long long)d->publish_again,
            (unsigned long long)d->acks_in, (unsigned long long)d->ota_in,
            (unsigned long long)d->cmds_in, (unsigned long long)d->bad_in,
            (unsigned long long)d->connects,
            (unsigned long long)d->disconnects,
            (unsigned long long)d->flaps, (unsigned long long)d->reboots,
            (unsigned long long)d->garbage_sent,
            (unsigned long long)d->replays_sent, d->model, d->model_version,
            tml_ota_state_name((enum tml_ota_state)d->ota_state),
            tml_ota_reason_name((enum tml_ota_reason)d->ota_reason),
            d->ota_version, d->ota_events,
            (unsigned long long)d->vectors_run,
            (unsigned long long)d->vectors_failed, st->tele_resent,
            st->tele_folded, st->samples_dropped, st->bad_messages,
            st->ring_high_water, st->state_writes,
            (unsigned long long)(d->tele.reused + d->samples.reused),
            (unsigned long long)d->relinks, d->tele.last_pub, d->samples.ack,
            d->samples.last_pub, (unsigned long long)d->lost_unsent,
            (unsigned long long)d->lost_held,
            (unsigned long long)d->ota_offered_wall_ms,
            (unsigned long long)d->ota_stored_wall_ms,
            (unsigned long long)d->ota_confirmed_wall_ms);
}
