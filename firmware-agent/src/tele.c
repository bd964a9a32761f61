/*
 * tele.c: inference summaries (up/tele) and their unacknowledged ring.
 *
 * The current period accumulates in a->cur. When it ends it moves to the
 * ring, oldest first, where it stays until a cumulative down/ack covers its
 * sequence number. Sequence numbers are assigned when a summary is first
 * published, in ring order, so a summary that was never sent carries none
 * and may be merged ("folded") into its neighbour without the gateway ever
 * seeing a gap or a double count. When the ring is full the agent folds, in
 * order of preference: the two oldest never-sent entries; the newest
 * never-sent entry into the closing one. A summary that was sent is never
 * folded (the gateway may have stored it: merging it would count it twice,
 * dropping its number would leave a gap): with a ring full of sent entries
 * the closing period is not queued but stays open, and the next periods
 * merge into it until an ack frees a slot. Folds are counted in n_folded of
 * the merged record, never silent.
 *
 * Every record carries the low-water lw (PROTOCOL.md 6): the lowest number
 * still held, i.e. the oldest ring entry's. Numbers below it were acked or
 * lost at a reboot (the ring is RAM; a reboot also skips the rest of a
 * reserved block), so a gateway that stores only contiguous numbers gives
 * them up, counted, instead of waiting for them. Numbers are never changed
 * once sent.
 */
#include <string.h>

#include "internal.h"

void
tmla__tele_start(struct tmla_agent *a, uint32_t now_ms)
{
    const struct tmla_model *m = tmla_active_model(a);

    memset(&a->cur, 0, sizeof a->cur);
    a->cur.start_ms = now_ms;
    a->cur.model_version = m != NULL ? m->version : 0;
}

void
tmla_record(struct tmla_agent *a, uint32_t cls, uint32_t confidence_bp,
            uint32_t latency_us)
{
    struct tmla__sum *s = &a->cur;
    uint32_t bin, ms;

    if (cls >= a->cfg.n_classes)
        cls = a->cfg.n_classes - 1u;
    if (confidence_bp > 10000)
        confidence_bp = 10000;
    if (s->n_inferences == 0 || latency_us < s->lat_min_us)
        s->lat_min_us = latency_us;
    if (latency_us > s->lat_max_us)
        s->lat_max_us = latency_us;
    s->n_inferences++;
    s->lat_sum_us += latency_us;
    s->class_counts[cls]++;
    if (confidence_bp < a->cfg.conf_threshold_bp)
        s->n_low_conf++;
    /* PROTOCOL: confidence bin i covers [i*10000/n, (i+1)*10000/n). */
    bin = confidence_bp * TMLA_CONF_BINS / 10000u;
    if (bin >= TMLA_CONF_BINS)
        bin = TMLA_CONF_BINS - 1;
    s->conf_hist[bin]++;
    /* Latency bin 0 is [0, 1 ms), bin i is [2^(i-1), 2^i) ms. */
    bin = 0;
    for (ms = latency_us / 1000u; ms != 0 && bin < TMLA_LAT_BINS - 1; ms >>= 1)
        bin++;
    s->lat_hist[bin]++;
}

void
tmla_record_error(struct tmla_agent *a)
{
    a->cur.n_errors++;
}

/* The counts a fold adds up: n_inferences up to the end of lat_hist. */
#define SUM_FIRST offsetof(struct tmla__sum, n_inferences)
#define SUM_END                                                                \
    (offsetof(struct tmla__sum, lat_hist) +                                    \
     sizeof(((struct tmla__sum *)0)->lat_hist))

/* Merges the older summary o into n (n keeps its seq and period end). */
static void
fold(struct tmla__sum *n, const struct tmla__sum *o)
{
    if (o->n_inferences > 0) {
        if (n->n_inferences == 0 || o->lat_min_us < n->lat_min_us)
            n->lat_min_us = o->lat_min_us;
        if (o->lat_max_us > n->lat_max_us)
            n->lat_max_us = o->lat_max_us;
    }
    n->start_ms = o->start_ms;
    n->lat_sum_us += o->lat_sum_us;
    /* Each offset is that of a uint32_t member of both structs. */
    for (size_t off = SUM_FIRST; off < SUM_END; off += sizeof(uint32_t))
        *(uint32_t *)((uint8_t *)n + off) +=
            *(const uint32_t *)((const uint8_t *)o + off);
    n->n_folded++; /* o itself */
    if (!n->has_health && o->has_health) {
        n->health = o->health;
        n->has_health = true;
    }
}

/* Removes ring entry i (shifting the newer ones down). */
static void
ring_remove(struct tmla_agent *a, int i)
{
    for (; i + 1 < a->ring_n; i++)
        a->ring[i] = a->ring[i + 1];
    a->ring_n--;
}

void
tmla__tele_close(struct tmla_agent *a, uint32_t now_ms)
{
    struct tmla__sum *r = a->ring;
    int i;

    if (a->port.health != NULL)
        a->cur.has_health = a->port.health(a->port.user, &a->cur.health);
    if (a->ring_n == TMLA_TELE_RING) {
        a->stats.tele_folded++;
        for (i = 0; i + 1 < a->ring_n; i++)
            if (r[i].seq == 0 && r[i + 1].seq == 0)
                break;
        if (i + 1 < a->ring_n) {
            fold(&r[i + 1], &r[i]);
            ring_remove(a, i);
        } else if (r[a->ring_n - 1].seq == 0) {
            fold(&a->cur, &r[a->ring_n - 1]);
            a->ring_n--;
        } else {
            /* Every entry was sent: the period stays open and the next
             * one merges into it (counted now); end_ms marks where the
             * next period's timer starts (tmla__tele_poll). */
            a->cur.n_folded++;
            a->cur.end_ms = now_ms != 0 ? now_ms : 1;
            return;
        }
    }
    a->cur.end_ms = now_ms;
    r[a->ring_n++] = a->cur;
    if (a->ring_n > a->stats.ring_high_water)
        a->stats.ring_high_water = a->ring_n;
    tmla__tele_start(a, now_ms);
}

/* The counters from n_inferences to n_samples_dropped are consecutive words
 * in the same order in struct tmla__sum and struct tml_tele. */
#define COUNTERS_LEN                                                           \
    (offsetof(struct tml_tele, n_samples_dropped) + sizeof(uint32_t) -        \
     offsetof(struct tml_tele, n_inferences))
#define SAME_DIST(m)                                                           \
    (offsetof(struct tml_tele, m) - offsetof(struct tml_tele, n_inferences) == \
     offsetof(struct tmla__sum, m) - offsetof(struct tmla__sum, n_inferences))
typedef char tmla__sum_counters_match_tele
    [SAME_DIST(n_low_conf) && SAME_DIST(n_flagged) && SAME_DIST(n_errors) &&
             SAME_DIST(n_folded) && SAME_DIST(n_samples_dropped)
         ? 1
         : -1];

static bool
send_one(struct tmla_agent *a, struct tmla__sum *s, uint32_t now_ms)
{
    struct tml_tele t;
    size_t n;

    if (s->seq == 0) {
        s->seq = tmla__seq_take(a, TMLA__STREAM_TELE, 1);
        if (s->seq == 0)
            return false;
    }
    memset(&t, 0, sizeof t);
    t.seq = s->seq;
    /* Entries get their numbers in ring order, so ring[0] holds the lowest
     * number still held (acked ones are gone). */
    t.lw = a->ring[0].seq != 0 && a->ring[0].seq < s->seq ? a->ring[0].seq
                                                          : s->seq;
    t.epoch = a->ps.epoch;
    t.model_version = s->model_version;
    t.period_s = (s->end_ms - s->start_ms + 500u) / 1000u;
    t.age_s = (now_ms - s->end_ms) / 1000u;
    /* n_inferences .. n_samples_dropped, six words in both structs (byte
     * pointers into the whole structs: the copy spans several members). */
    memcpy((uint8_t *)&t + offsetof(struct tml_tele, n_inferences),
           (const uint8_t *)s + offsetof(struct tmla__sum, n_inferences),
           COUNTERS_LEN);
    /* Both 0 while there is no inference (tmla_record, fold). */
    t.lat_min_us = s->lat_min_us;
    t.lat_max_us = s->lat_max_us;
    if (s->n_inferences > 0) {
        uint64_t sum = s->lat_sum_us;
        uint32_t cnt = s->n_inferences;

        /* 32-bit division (no 64-bit divide helper on a Cortex-M): scale
         * both down while the sum does not fit; exact below 4295 s of
         * summed latency. */
        while (sum >> 32 != 0) {
            sum >>= 1;
            cnt = (cnt >> 1) | 1u;
        }
        t.lat_mean_us = (uint32_t)sum / cnt;
    }
    t.n_classes = a->cfg.n_classes;
    memcpy(t.class_counts, s->class_counts,
           a->cfg.n_classes * sizeof s->class_counts[0]);
    /* Histograms and health are the bulk of a summary (~50 bytes): sent
     * with every detail_every-th one, so a plain 4-class summary stays
     * within 64 bytes. */
    if (a->cfg.detail_every != 0 && s->seq % a->cfg.detail_every == 0) {
        t.n_conf_bins = TMLA_CONF_BINS;
        memcpy(t.conf_hist, s->conf_hist, sizeof s->conf_hist);
        t.n_lat_bins = TMLA_LAT_BINS;
        memcpy(t.lat_hist, s->lat_hist, sizeof s->lat_hist);
        t.has_health = s->has_health;
        t.health = s->health;
    }
    if (tml_tele_encode(&t, a->tx, sizeof a->tx, &n) != TML_OK)
        return false;
    if (tmla__publish(a, TML_KIND_TELE, a->tx, n, 0) != TMLA_PORT_OK)
        return false;
    s->in_flight = true;
    s->sent_ms = now_ms;
    if (++s->n_sends > 1)
        a->stats.tele_resent++;
    if (s->n_sends == 0)
        s->n_sends = 255;
    return true;
}

void
tmla__tele_poll(struct tmla_agent *a, uint32_t now_ms)
{
    uint32_t period_ms = a->cfg.summary_period_s * 1000u;
    /* A period kept open by a full ring (tmla__tele_close) times its next
     * close from where it should have ended. */
    uint32_t base = a->cur.end_ms != 0 ? a->cur.end_ms : a->cur.start_ms;

    if ((uint32_t)tmla__ms_diff(now_ms, base) >= period_ms &&
        tmla__ms_diff(now_ms, base) > 0)
        tmla__tele_close(a, now_ms);
    if (!a->connected)
        return;
    /* Go-back-N: when one summary's ack is overdue, a gateway that stores
     * only in order dropped every later one as well, so all of them go
     * again, oldest first. Resending only the overdue one would leave each
     * later summary to wait for its own timeout, and a new summary sent
     * meanwhile would be dropped in turn: a lag that never catches up. */
    for (int i = 0; i < a->ring_n; i++)
        if (a->ring[i].in_flight &&
            tmla__ms_diff(now_ms, a->ring[i].sent_ms) >=
                (int32_t)a->cfg.ack_timeout_ms) {
            tmla__tele_unsend(a);
            break;
        }
    for (int i = 0; i < a->ring_n; i++) {
        struct tmla__sum *s = &a->ring[i];

        /* In order: sequence numbers must grow along the ring. */
        if (!s->in_flight && !send_one(a, s, now_ms))
            break;
    }
}

/* A cumulative ack frees every entry it covers. An ack at or above every
 * number handed out comes from a gateway that stored numbers of an earlier
 * life of this device id (state wiped, device replaced): it covers none of
 * our records and is ignored; the gateway sees the restart in our hello
 * (tele_next) and starts the stream again (PROTOCOL.md 6). */
void
tmla__tele_ack(struct tmla_agent *a, uint32_t seq)
{
    if (seq >= a->tele_next)
        return;
    if (seq > a->tele_acked)
        a->tele_acked = seq;
    while (a->ring_n > 0 && a->ring[0].seq != 0 && a->ring[0].seq <= seq)
        ring_remove(a, 0);
}

void
tmla__tele_unsend(struct tmla_agent *a)
{
    for (int i = 0; i < a->ring_n; i++)
        a->ring[i].in_flight = false;
}
