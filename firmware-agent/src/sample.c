/*
 * sample.c: input capture (up/sample): selection, budget, reservoir, spool.
 *
 * Captures are offered with a reason (flagged, low confidence, audit). Within
 * each budget period the agent keeps a uniform random subset of the
 * period's candidates (reservoir sampling, Algorithm R) of size
 * k = min(tokens, free spool slots), fixed at the period's first candidate;
 * tokens
 * come from a bucket refilled by sample_budget per period up to
 * sample_burst. When the period ends the kept inputs are sent, each split
 * into chunks that fit TMLA_TX_BUF and the transport's max_payload, every
 * chunk with its own sequence number (sample_id = the first chunk's seq, so
 * ids never repeat either). A slot is freed when a cumulative ack covers its
 * last chunk. Every candidate that is not kept counts in n_samples_dropped
 * of the current summary. Every chunk carries the low-water lw (PROTOCOL.md
 * 6): the lowest number still held and not covered by an ack, so a gateway
 * gives up numbers lost at a reboot or with a sample that could not be
 * encoded instead of waiting for them. Numbers are never changed once sent.
 */
#include <string.h>

#include "internal.h"

enum { SLOT_FREE = 0, SLOT_HELD, SLOT_PENDING };

/* Upper bound of a sample message without its data bytes: 17 keys, 13
 * integers of up to 5 bytes, a 4-dimension shape, headers. */
#define SAMPLE_OVERHEAD 112u

/* struct tmla_inference has the members of struct tml_sample from predicted
 * to rate_hz, in the same order and with the same types: send_chunk copies
 * them in one piece. Each relative offset is checked here. */
#define INF_AT offsetof(struct tml_sample, predicted)
#define INF_LEN (offsetof(struct tmla_inference, rate_hz) + sizeof(uint32_t))
#define SAME_AT(m)                                                             \
    (offsetof(struct tml_sample, m) - INF_AT ==                                \
     offsetof(struct tmla_inference, m))
typedef char tmla__inference_matches_sample
    [SAME_AT(predicted) && SAME_AT(confidence_bp) && SAME_AT(has_expected) &&
             SAME_AT(expected) && SAME_AT(dtype) && SAME_AT(n_shape) &&
             SAME_AT(shape) && SAME_AT(rate_hz)
         ? 1
         : -1];

/* One captured input lost to the budget, the spool or the encoder: counted
 * in the current summary and in the stats. */
static void
count_drop(struct tmla_agent *a)
{
    a->cur.n_samples_dropped++;
    a->stats.samples_dropped++;
}

static size_t
slot_cap(const struct tmla_agent *a)
{
    return a->cfg.sample_buf == NULL
               ? 0
               : a->cfg.sample_buf_len / TMLA_SAMPLE_SLOTS;
}

static uint32_t
chunk_cap(const struct tmla_agent *a)
{
    uint32_t cap =
        a->cfg.max_payload < TMLA_TX_BUF ? a->cfg.max_payload : TMLA_TX_BUF;

    cap -= SAMPLE_OVERHEAD;
    return cap > TML_CHUNK_MAX ? TML_CHUNK_MAX : cap;
}

static uint8_t
free_slots(const struct tmla_agent *a)
{
    uint8_t n = 0;

    for (int i = 0; i < TMLA_SAMPLE_SLOTS; i++)
        n += a->samples[i].state == SLOT_FREE;
    return n;
}

static void
period_begin(struct tmla_agent *a, uint32_t now_ms)
{
    a->budget_start_ms = now_ms;
    a->candidates = 0;
    a->res_n = 0;
    a->res_k = 0;
}

void
tmla__sample_start(struct tmla_agent *a, uint32_t now_ms)
{
    a->tokens = a->cfg.sample_burst;
    period_begin(a, now_ms);
}

enum tmla_capture_rc
tmla_capture(struct tmla_agent *a, const struct tmla_inference *inf,
             const void *input, size_t len, uint8_t reason, uint32_t now_ms)
{
    struct tmla__sample *s;
    uint32_t i, j;
    size_t cap = slot_cap(a);
    enum tmla_capture_rc rc;

    if (inf == NULL || (input == NULL && len > 0))
        return TMLA_CAPTURE_DISABLED;
    if (reason == TML_REASON_FLAGGED)
        a->cur.n_flagged++;
    if (reason == 0) {
        if (inf->confidence_bp < a->cfg.conf_threshold_bp)
            reason = TML_REASON_LOW_CONF;
        else if (a->cfg.audit_ppm > 0 &&
                 a->port.random(a->port.user) % 1000000u < a->cfg.audit_ppm)
            reason = TML_REASON_AUDIT;
        else
            return TMLA_CAPTURE_NOT_SELECTED;
    }
    if (reason > TML_REASON_AUDIT || inf->n_shape > TML_MAX_SHAPE ||
        inf->dtype > TML_DTYPE_F32)
        return TMLA_CAPTURE_INVALID;
    for (size_t k = 0; k < inf->n_shape; k++)
        if (inf->shape[k] == 0)
            return TMLA_CAPTURE_INVALID;
    if (cap == 0 || a->cfg.sample_budget == 0)
        return TMLA_CAPTURE_DISABLED;
    rc = TMLA_CAPTURE_TOO_LARGE;
    if (len == 0 || len > cap)
        goto drop;

    /* The reservoir's size is fixed by the period's first candidate (not at
     * the period start: acks may have freed slots since). Algorithm R: the
     * i-th candidate is kept with probability k/i and then replaces a
     * uniformly chosen kept one. */
    if (a->candidates == 0) {
        uint8_t f = free_slots(a);

        a->res_k = (uint8_t)(a->tokens < f ? a->tokens : f);
    }
    i = ++a->candidates;
    rc = TMLA_CAPTURE_DROPPED;
    if (i <= a->res_k) {
        for (j = 0; j < TMLA_SAMPLE_SLOTS; j++)
            if (a->samples[j].state == SLOT_FREE)
                break;
        if (j == TMLA_SAMPLE_SLOTS)
            goto drop; /* cannot happen: k <= free slots */
        a->reservoir[a->res_n++] = (uint8_t)j;
    } else {
        j = a->port.random(a->port.user) % i;
        if (j >= a->res_k)
            goto drop;
        count_drop(a); /* the kept input this one replaces */
        j = a->reservoir[j];
    }
    s = &a->samples[j];
    memset(s, 0, sizeof *s);
    s->state = SLOT_HELD;
    s->reason = reason;
    s->inf = *inf;
    if (s->inf.dtype == 0)
        s->inf.dtype = TML_DTYPE_U8;
    if (s->inf.n_shape == 0) {
        s->inf.n_shape = 1;
        s->inf.shape[0] = (uint32_t)len;
    }
    if (s->inf.confidence_bp > 10000)
        s->inf.confidence_bp = 10000;
    s->model_version = a->cur.model_version;
    s->len = (uint32_t)len;
    s->capture_ms = now_ms;
    memcpy(a->cfg.sample_buf + (size_t)j * cap, input, len);
    return TMLA_CAPTURE_KEPT;
drop:
    count_drop(a);
    return rc;
}

static void
period_end(struct tmla_agent *a, uint32_t now_ms, uint32_t n_periods,
           uint32_t cc)
{
    uint64_t t;

    for (int i = 0; i < a->res_n; i++) {
        struct tmla__sample *s = &a->samples[a->reservoir[i]];

        s->state = SLOT_PENDING;
        s->n_chunks = (s->len + cc - 1) / cc;
        s->first_seq = 0; /* assigned when first sent */
    }
    a->tokens -= a->res_n;
    t = (uint64_t)a->tokens + (uint64_t)n_periods * a->cfg.sample_budget;
    a->tokens = t > a->cfg.sample_burst ? a->cfg.sample_burst : (uint32_t)t;
    period_begin(a, now_ms);
}

/* The lowest sample seq still held and not acked (send_chunk's lw). */
static uint32_t
low_water(const struct tmla_agent *a, uint32_t seq)
{
    uint32_t lw = seq;

    for (int i = 0; i < TMLA_SAMPLE_SLOTS; i++) {
        const struct tmla__sample *s = &a->samples[i];
        uint32_t first = s->first_seq;

        if (s->state != SLOT_PENDING || first == 0)
            continue;
        if (first <= a->sample_acked)
            first = a->sample_acked + 1; /* its acked chunks are freed */
        if (first < lw && first - s->first_seq < s->n_chunks)
            lw = first;
    }
    return lw;
}

/* Publishes chunk k: TMLA_PORT_OK, TMLA_PORT_AGAIN (retry later) or
 * TMLA_PORT_FAIL (cannot be encoded: the sample is dropped rather than
 * blocking every later one). */
static int
send_chunk(struct tmla_agent *a, struct tmla__sample *s, uint32_t k,
           uint32_t cc, uint32_t now_ms)
{
    struct tml_sample m;
    size_t n;
    size_t idx = (size_t)(s - a->samples);

    memset(&m, 0, sizeof m);
    m.seq = s->first_seq + k;
    m.sample_id = s->first_seq;
    m.model_version = s->model_version;
    m.reason = s->reason;
    /* predicted, confidence_bp, has_expected, expected, dtype, n_shape,
     * shape, rate_hz */
    memcpy((uint8_t *)&m + INF_AT, &s->inf, INF_LEN);
    m.age_s = (now_ms - s->capture_ms) / 1000u;
    m.total_len = s->len;
    m.offset = k * cc;
    m.data.p = a->cfg.sample_buf + idx * slot_cap(a) + m.offset;
    m.data.len = s->len - m.offset < cc ? s->len - m.offset : cc;
    m.lw = low_water(a, m.seq);
    m.epoch = a->ps.epoch;
    if (tml_sample_encode(&m, a->tx, sizeof a->tx, &n) != TML_OK)
        return TMLA_PORT_FAIL;
    if (tmla__publish(a, TML_KIND_SAMPLE, a->tx, n, 0) != TMLA_PORT_OK)
        return TMLA_PORT_AGAIN;
    a->stats.samples_sent++;
    return TMLA_PORT_OK;
}

/* The pending slot to send next: assigned sequence numbers first, in order
 * (cumulative acks need them sent in order), then unassigned ones. */
static struct tmla__sample *
next_pending(struct tmla_agent *a)
{
    struct tmla__sample *best = NULL;

    for (int i = 0; i < TMLA_SAMPLE_SLOTS; i++) {
        struct tmla__sample *s = &a->samples[i];

        if (s->state != SLOT_PENDING || s->in_flight)
            continue;
        if (best == NULL ||
            (s->first_seq != 0 &&
             (best->first_seq == 0 || s->first_seq < best->first_seq)))
            best = s;
    }
    return best;
}

void
tmla__sample_poll(struct tmla_agent *a, uint32_t now_ms)
{
    uint32_t period_ms = a->cfg.budget_period_s * 1000u;
    int32_t d = tmla__ms_diff(now_ms, a->budget_start_ms);
    uint32_t cc = chunk_cap(a);
    struct tmla__sample *s;

    if (d > 0 && (uint32_t)d >= period_ms)
        period_end(a, now_ms, (uint32_t)d / period_ms, cc);
    if (!a->connected)
        return;
    /* Go-back-N, as for summaries (tele.c): one overdue ack sends every
     * pending sample again, lowest numbers first. */
    for (int i = 0; i < TMLA_SAMPLE_SLOTS; i++) {
        s = &a->samples[i];
        if (s->state == SLOT_PENDING && s->in_flight &&
            tmla__ms_diff(now_ms, s->sent_ms) >=
                (int32_t)a->cfg.ack_timeout_ms) {
            tmla__sample_unsend(a);
            break;
        }
    }
    while ((s = next_pending(a)) != NULL) {
        if (s->first_seq == 0) {
            s->first_seq = tmla__seq_take(a, TMLA__STREAM_SAMPLE, s->n_chunks);
            if (s->first_seq == 0)
                return;
        }
        for (; s->next_chunk < s->n_chunks; s->next_chunk++) {
            int rc;

            /* Chunks the gateway already acknowledged are not resent. */
            if (s->first_seq + s->next_chunk <= a->sample_acked)
                continue;
            rc = send_chunk(a, s, s->next_chunk, cc, now_ms);
            if (rc == TMLA_PORT_AGAIN)
                return;
            if (rc != TMLA_PORT_OK) {
                s->state = SLOT_FREE;
                count_drop(a);
                break;
            }
        }
        if (s->state == SLOT_FREE)
            continue;
        s->in_flight = true;
        s->sent_ms = now_ms;
    }
}

/* As for summaries (tele.c): an ack at or above every number handed out
 * covers none of our records (a gateway remembering an earlier life of this
 * device id) and is ignored until the gateway sees our hello. */
void
tmla__sample_ack(struct tmla_agent *a, uint32_t seq)
{
    if (seq >= a->sample_next)
        return;
    if (seq > a->sample_acked)
        a->sample_acked = seq;
    for (int i = 0; i < TMLA_SAMPLE_SLOTS; i++) {
        struct tmla__sample *s = &a->samples[i];

        if (s->state == SLOT_PENDING && s->first_seq != 0 &&
            s->first_seq + s->n_chunks - 1 <= a->sample_acked)
            s->state = SLOT_FREE;
    }
}

void
tmla__sample_unsend(struct tmla_agent *a)
{
    for (int i = 0; i < TMLA_SAMPLE_SLOTS; i++) {
        a->samples[i].in_flight = false;
        a->samples[i].next_chunk = 0;
    }
}
