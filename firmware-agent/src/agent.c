/*
 * agent.c: libtmlagent's entry points: initialisation, connection events,
 * dispatch of down messages (ack, ota, cmd), the poll loop, hello and the
 * public queries. Telemetry, capture, OTA and the persisted state live in
 * tele.c, sample.c, ota.c and state.c.
 *
 * Invariants: everything the agent does to the outside goes through
 * a->port; nothing here reads a clock (times arrive as now_ms) or allocates.
 */
#include <string.h>

#include "internal.h"

void
tmla_config_defaults(struct tmla_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->summary_period_s = 60;
    cfg->sample_budget = 4;
    cfg->budget_period_s = 600;
    cfg->conf_threshold_bp = 5000;
    cfg->audit_ppm = 1000;
    cfg->n_classes = TMLA_MAX_CLASSES;
    cfg->detail_every = 1;
    cfg->max_payload = TML_MAX_MESSAGE;
    cfg->ack_timeout_ms = 30000;
    cfg->ota_chunk = TML_CHUNK_MAX; /* one 4 KiB chunk per request: */
    cfg->ota_window = 1;            /* a cut link loses <= 1 chunk */
    cfg->ota_request_timeout_ms = 10000;
    cfg->ota_min_rate_bps = 64;
    cfg->ota_grace_ms = 60000;
    cfg->confirm_timeout_ms = 300000;
    cfg->trial_max_boots = 2;
}

size_t
tmla__strlen(const char *s)
{
    size_t n = 0;

    while (s[n] != '\0')
        n++;
    return n;
}

static bool
pow2(uint32_t v)
{
    return v != 0 && (v & (v - 1)) == 0;
}

/* The port members the agent cannot work without (one table rather than a
 * test per member: 12 of them). */
#define PORT_FN(m) (uint8_t) offsetof(struct tmla_port, m)
typedef char
    tmla__port_offsets_fit_a_byte[sizeof(struct tmla_port) <= 256 ? 1 : -1];
static const uint8_t required_fns[] = {
    PORT_FN(publish),      PORT_FN(flash_read),    PORT_FN(flash_write),
    PORT_FN(flash_erase),  PORT_FN(state_read),    PORT_FN(state_write),
    PORT_FN(sha256_init),  PORT_FN(sha256_update), PORT_FN(sha256_final),
    PORT_FN(es256_verify), PORT_FN(random),        PORT_FN(activate)};

static bool
config_ok(const struct tmla_config *c, const struct tmla_port *p)
{
    size_t id_len;

    if (c->device_id == NULL || c->hw == NULL || c->keys == NULL ||
        c->n_keys == 0 || c->n_keys > TMLA_MAX_KEYS ||
        c->n_groups > TML_MAX_GROUPS ||
        (c->n_groups > 0 && c->groups == NULL) ||
        c->n_input_shape > TML_MAX_SHAPE || c->n_classes == 0 ||
        c->ota_chunk == 0 || c->ota_chunk > TML_CHUNK_MAX ||
        c->ota_window == 0 || c->ota_window > 64 || c->summary_period_s == 0 ||
        c->budget_period_s == 0 || c->conf_threshold_bp > 10000 ||
        c->max_payload < 160)
        return false;
    id_len = tmla__strlen(c->device_id);
    if (!tml_device_id_valid(c->device_id, id_len) ||
        tmla__strlen(c->hw) > TML_MAX_NAME)
        return false;
    for (size_t i = 0; i < c->n_keys; i++)
        if (c->keys[i].kid_len == 0 || c->keys[i].kid_len > TML_MAX_KID)
            return false;
    for (size_t i = 0; i < c->n_groups; i++)
        if (c->groups[i] == NULL || tmla__strlen(c->groups[i]) > TML_MAX_NAME)
            return false;
    for (size_t i = 0; i < sizeof required_fns; i++) {
        void (*fn)(void);

        /* Every member is a function pointer; only NULL or not matters. */
        TMLA__MEMCPY(&fn, (const uint8_t *)p + required_fns[i], sizeof fn);
        if (fn == NULL)
            return false;
    }
    /* erase_size is a power of two from here on: x & (erase_size - 1) is
     * x % erase_size. */
    if (!pow2(p->erase_size) ||
        (TMLA_OTA_CHECKPOINT & (p->erase_size - 1)) != 0 ||
        !pow2(p->write_align) || p->write_align > TMLA_MAX_WRITE_ALIGN ||
        p->slot_size == 0 || (p->slot_size & (p->erase_size - 1)) != 0)
        return false;
    return true;
}

enum tml_err
tmla_init(struct tmla_agent *a, const struct tmla_config *cfg,
          const struct tmla_port *port, uint32_t now_ms)
{
    enum tml_err err = TML_OK;

    if (a == NULL || cfg == NULL || port == NULL || !config_ok(cfg, port))
        return TML_ERR_INVAL;
    memset(a, 0, sizeof *a);
    a->cfg = *cfg;
    a->port = *port;
    if (a->cfg.sample_burst < a->cfg.sample_budget)
        a->cfg.sample_burst = a->cfg.sample_budget;
    if (a->cfg.n_classes > TMLA_MAX_CLASSES)
        a->cfg.n_classes = TMLA_MAX_CLASSES;
    a->now_ms = now_ms;

    tmla__state_load(a);
    a->tele_next = a->ps.seq_hi[TMLA__STREAM_TELE] + 1;
    a->sample_next = a->ps.seq_hi[TMLA__STREAM_SAMPLE] + 1;
    a->ps.boot_count++;
    /* Must differ between boots (PROTOCOL.md 6). */
    a->boot_id = tmla__fresh(a);
    if (a->boot_id == 0)
        a->boot_id = 1; /* 0 means "not declared" on the wire */
    /* Counts the boot and, for a model in trial, the trial boot (ota.c may
     * revert); one state write per boot. */
    tmla__ota_boot(a, now_ms);
    if (tmla__state_save(a) != TML_OK) {
        a->persist_due = true;
        err = TML_ERR_NOSPACE;
    }
    tmla__tele_start(a, now_ms);
    tmla__sample_start(a, now_ms);
    return err;
}

int
tmla__publish(struct tmla_agent *a, enum tml_kind kind, const uint8_t *p,
              size_t len, unsigned how)
{
    int rc;

    if (!a->connected ||
        tmla_topic(a, TML_DIR_UP, kind, a->topic, sizeof a->topic) != TML_OK)
        return TMLA_PORT_AGAIN;
    rc = a->port.publish(a->port.user, a->topic, p, len,
                         (how & TMLA__QOS0) ? 0 : 1, (how & TMLA__RETAIN) != 0);
    if (rc == TMLA_PORT_OK)
        a->stats.publishes++;
    else
        a->stats.publish_again++;
    return rc;
}

/* up/state {0: 1, 1: true/false}: constants, so a device links no state
 * encoder (agent_tele checks both against tml_state_encode). */
static const uint8_t state_online[] = {0xa2, 0x00, 0x01, 0x01, 0xf5};
static const uint8_t state_offline[] = {0xa2, 0x00, 0x01, 0x01, 0xf4};

static bool
send_hello(struct tmla_agent *a)
{
    struct tml_hello h;
    const struct tmla_model *m = tmla_active_model(a);
    size_t n;

    memset(&h, 0, sizeof h);
    h.agent_version = TMLA_AGENT_VERSION;
    h.hw.p = a->cfg.hw;
    h.hw.len = tmla__strlen(a->cfg.hw);
    if (m != NULL) {
        h.model.p = m->name;
        h.model.len = tmla__strlen(m->name);
        h.model_version = m->version;
        h.model_slot = m->slot;
    }
    h.slot_size = a->port.slot_size;
    h.arena_size = a->cfg.arena_size;
    h.chunk_max = a->cfg.ota_chunk;
    h.boot_count = a->ps.boot_count;
    h.last_ota_state = a->ps.last_state;
    h.last_ota_reason = a->ps.last_reason;
    h.last_ota_version = a->ps.last_version;
    h.version_floor = a->ps.floor;
    h.has_nonce = a->has_nonce;
    h.nonce = a->hello_nonce;
    /* Lets the gateway see a restarted numbering (PROTOCOL.md 6). */
    h.tele_next = a->tele_next;
    h.sample_next = a->sample_next;
    h.boot_id = a->boot_id;
    h.epoch = a->ps.epoch;
    h.n_groups = a->cfg.n_groups;
    for (size_t i = 0; i < a->cfg.n_groups; i++) {
        h.groups[i].p = a->cfg.groups[i];
        h.groups[i].len = tmla__strlen(a->cfg.groups[i]);
    }
    if (tml_hello_encode(&h, a->tx, sizeof a->tx, &n) != TML_OK ||
        tmla__publish(a, TML_KIND_HELLO, a->tx, n, TMLA__RETAIN) !=
            TMLA_PORT_OK)
        return false;
    return tmla__publish(a, TML_KIND_STATE, state_online, sizeof state_online,
                         TMLA__RETAIN) == TMLA_PORT_OK;
}

void
tmla_on_disconnect(struct tmla_agent *a)
{
    a->connected = false;
    tmla__tele_unsend(a);
    tmla__sample_unsend(a);
}

void
tmla_on_connect(struct tmla_agent *a, uint32_t now_ms)
{
    /* Whatever was in flight on the old connection may be lost: send it
     * all again (the gateway absorbs duplicates by (device, stream, seq)). */
    tmla_on_disconnect(a);
    a->connected = true;
    a->hello_due = true;
    a->now_ms = now_ms;
    tmla__ota_connected(a, now_ms);
}

/* down/cmd's five settings are (has_, value) pairs 8 bytes apart in struct
 * tml_cmd, and five consecutive words from summary_period_s in struct
 * tmla_config, in the same order: apply_cmd walks both (checked here). */
#define CMD_AT(m)                                                              \
    (offsetof(struct tml_cmd, m) - offsetof(struct tml_cmd, has_summary_period))
#define CFG_AT(m)                                                              \
    (offsetof(struct tmla_config, m) -                                         \
     offsetof(struct tmla_config, summary_period_s))
typedef char tmla__cmd_layout[CMD_AT(summary_period_s) == 4 &&
                                      CMD_AT(has_sample_budget) == 8 &&
                                      CMD_AT(sample_budget) == 12 &&
                                      CMD_AT(has_budget_period) == 16 &&
                                      CMD_AT(budget_period_s) == 20 &&
                                      CMD_AT(has_conf_threshold) == 24 &&
                                      CMD_AT(conf_threshold_bp) == 28 &&
                                      CMD_AT(has_audit_rate) == 32 &&
                                      CMD_AT(audit_ppm) == 36 &&
                                      CFG_AT(sample_budget) == 4 &&
                                      CFG_AT(budget_period_s) == 8 &&
                                      CFG_AT(conf_threshold_bp) == 12 &&
                                      CFG_AT(audit_ppm) == 16
                                  ? 1
                                  : -1];

static void
apply_cmd(struct tmla_agent *a, const struct tml_cmd *c)
{
    /* The agent's upper bounds; the decoder already refused periods of 0,
     * thresholds above 10000 bp and audit rates above 10^6 ppm (proto
     * messages.c), so those two take any decoded value. */
    static const uint32_t max[5] = {86400, 1000, 7 * 86400, 10000, 1000000};
    /* Byte pointers into the whole structs (not past one member), so the
     * walk stays inside each object. */
    const uint8_t *in = (const uint8_t *)c +
                        offsetof(struct tml_cmd, has_summary_period);
    uint8_t *set = (uint8_t *)&a->cfg +
                   offsetof(struct tmla_config, summary_period_s);

    /* Values out of range are ignored one by one; the rest still apply. */
    for (int i = 0; i < 5; i++, in += 8, set += 4) {
        bool has;
        uint32_t v;

        TMLA__MEMCPY(&has, in, sizeof has);
        TMLA__MEMCPY(&v, in + 4, sizeof v);
        if (has && v <= max[i])
            TMLA__MEMCPY(set, &v, sizeof v);
    }
    /* A new budget is also the bucket's capacity. */
    if (c->has_sample_budget && c->sample_budget <= max[1])
        a->cfg.sample_burst = c->sample_budget;
    if (a->tokens > a->cfg.sample_burst)
        a->tokens = a->cfg.sample_burst;
}

/* The kind a topic names if it is exactly "tml/v1/<our id>/down/<kind>"
 * for one of the kinds the device receives (PROTOCOL.md "Topics"), else -1.
 * Compared with our own topics, built in a->topic, rather than parsed: the
 * device then links no general topic parser. */
static int
down_kind(struct tmla_agent *a, const char *t, size_t len)
{
    static const uint8_t kinds[] = {TML_KIND_ACK, TML_KIND_OTA, TML_KIND_CMD};

    for (int i = 0; i < 3; i++)
        if (tmla_topic(a, TML_DIR_DOWN, (enum tml_kind)kinds[i], a->topic,
                       sizeof a->topic) == TML_OK &&
            tmla__strlen(a->topic) == len && memcmp(t, a->topic, len) == 0)
            return kinds[i];
    return -1;
}

enum tml_err
tmla_on_message(struct tmla_agent *a, const char *topic, size_t topic_len,
                const uint8_t *payload, size_t len, uint32_t now_ms)
{
    enum tml_err err;
    int kind;

    a->now_ms = now_ms;
    if (topic == NULL || (payload == NULL && len > 0))
        return TML_ERR_INVAL;
    kind = down_kind(a, topic, topic_len);

    switch (kind) {
    case TML_KIND_ACK: {
        struct tml_ack ack;

        err = tml_ack_decode(payload, len, &ack);
        if (err != TML_OK)
            break;
        /* An ack of another life of the numbering (a late record of it
         * was stored after the state was lost) frees nothing here. */
        if (ack.epoch != 0 && ack.epoch != a->ps.epoch) {
            a->stats.acks_other_epoch++;
            break;
        }
        if (ack.has_tele)
            tmla__tele_ack(a, ack.tele_seq);
        if (ack.has_sample)
            tmla__sample_ack(a, ack.sample_seq);
        break;
    }
    case TML_KIND_OTA: {
        struct tml_ota_down m;

        err = tml_ota_down_decode(payload, len, &m);
        if (err == TML_OK)
            tmla__ota_message(a, &m, now_ms);
        break;
    }
    case TML_KIND_CMD: {
        struct tml_cmd c;

        err = tml_cmd_decode(payload, len, &c);
        if (err != TML_OK)
            break;
        if (c.kind == TML_CMD_SET)
            apply_cmd(a, &c);
        a->hello_nonce = c.nonce;
        a->has_nonce = true;
        if (c.kind == TML_CMD_PING)
            a->hello_due = true;
        break;
    }
    default:
        err = TML_ERR_TOPIC;
        break;
    }
    if (err != TML_OK && err != TML_ERR_TOPIC)
        a->stats.bad_messages++;
    return err;
}

void
tmla_poll(struct tmla_agent *a, uint32_t now_ms)
{
    a->now_ms = now_ms;
    if (a->persist_due)
        tmla__state_commit(a);
    if (a->load_due) {
        const struct tmla_model *m = tmla_active_model(a);

        /* A revert: the application must go back to the old model. */
        if (m == NULL || a->port.activate(a->port.user, m) == TMLA_PORT_OK)
            a->load_due = false;
    }
    tmla__ota_poll(a, now_ms);
    tmla__tele_poll(a, now_ms);
    tmla__sample_poll(a, now_ms);
    if (a->connected && a->hello_due && send_hello(a))
        a->hello_due = false;
}

const struct tmla_model *
tmla_active_model(const struct tmla_agent *a)
{
    if (a->ps.active >= 2 || (a->ps.valid & (1u << a->ps.active)) == 0)
        return NULL;
    return &a->ps.slot[a->ps.active];
}

bool
tmla_in_trial(const struct tmla_agent *a)
{
    return a->ps.trial != 0 && tmla_active_model(a) != NULL;
}

void
tmla_ota_status(const struct tmla_agent *a, uint8_t *state, uint8_t *reason,
                uint32_t *offset)
{
    if (state != NULL)
        *state = a->ota_state;
    if (reason != NULL)
        *reason = a->ota_reason;
    if (offset != NULL)
        *offset = a->ota_offset;
}

const struct tmla_stats *
tmla_stats(const struct tmla_agent *a)
{
    return &a->stats;
}

enum tml_err
tmla_topic(const struct tmla_agent *a, enum tml_dir dir, enum tml_kind kind,
           char *buf, size_t cap)
{
    size_t n;

    return tml_topic_build(buf, cap, a->cfg.device_id,
                           tmla__strlen(a->cfg.device_id), dir, kind, &n);
}

enum tml_err
tmla_offline_payload(uint8_t *buf, size_t cap, size_t *out_len)
{
    /* As tml_state_encode would answer. */
    if (buf == NULL && cap != 0)
        return TML_ERR_INVAL;
    if (cap < sizeof state_offline)
        return TML_ERR_NOSPACE;
    memcpy(buf, state_offline, sizeof state_offline);
    if (out_len != NULL)
        *out_len = sizeof state_offline;
    return TML_OK;
}
