/*
 * test_tele.c: inference summaries: arithmetic, size on the wire, sequence
 * numbers across reboots, resend after reconnect and ack timeout, folding
 * when the ring is full (R4/R5 device side), settings from down/cmd.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "rig.h"


/* Decodes every tele message published since log index from. */
static size_t
teles(const struct memport *mp, size_t from, struct tml_tele *out, size_t cap)
{
    size_t n = 0;

    /* Like the gateway: a resend of a seq already seen is absorbed. */
    for (size_t i = from; i < mp->n_log && n < cap; i++)
        if (mp->log[i].kind == TML_KIND_TELE) {
            bool dup = false;

            assert_int_equal(
                tml_tele_decode(mp->log[i].payload, mp->log[i].len, &out[n]),
                TML_OK);
            for (size_t j = 0; j < n; j++)
                dup |= out[j].seq == out[n].seq;
            n += !dup;
        }
    return n;
}

static void
period(struct rig *r)
{
    rig_run(r, 1, r->cfg.summary_period_s * 1000u);
}

/* One inference (class 0), then the period closes. */
static void
infer_and_close(struct rig *r)
{
    tml_heap_armed = 1;
    tmla_record(&r->a, 0, 9000, 1000);
    tml_heap_armed = 0;
    period(r);
}

static void
test_tele_summary_arithmetic(void **state)
{
    struct rig *r = *state;
    struct tml_tele t[4];
    struct tmla_inference inf = {.predicted = 1, .confidence_bp = 9000};
    size_t from = r->mp->n_log;
    uint8_t in[4] = {1, 2, 3, 4};

    tml_heap_armed = 1;
    tmla_record(&r->a, 0, 9500, 800);       /* lat bin 0, conf bin 9 */
    tmla_record(&r->a, 1, 10000, 1000);     /* lat bin 1, conf bin 9 */
    tmla_record(&r->a, 1, 4999, 3999);      /* lat bin 2, conf bin 4, low */
    tmla_record(&r->a, 3, 0, 5000);         /* lat bin 3, conf bin 0, low */
    tmla_record(&r->a, 9, 20000, 10000000); /* class -> 3, conf clamped,
                                               lat last bin */
    tmla_record_error(&r->a);
    (void)tmla_capture(&r->a, &inf, in, sizeof in, TML_REASON_FLAGGED, r->now);
    tml_heap_armed = 0;
    period(r);
    assert_int_equal(teles(r->mp, from, t, 4), 1);
    assert_int_equal(t[0].seq, 1);
    assert_int_equal(t[0].period_s, r->cfg.summary_period_s);
    assert_int_equal(t[0].n_inferences, 5);
    assert_int_equal(t[0].n_low_conf, 2);
    assert_int_equal(t[0].n_flagged, 1);
    assert_int_equal(t[0].n_errors, 1);
    assert_int_equal(t[0].lat_min_us, 800);
    assert_int_equal(t[0].lat_max_us, 10000000);
    assert_int_equal(t[0].lat_mean_us,
                     (800 + 1000 + 3999 + 5000 + 10000000) / 5);
    assert_int_equal(t[0].n_classes, 4);
    assert_int_equal(t[0].class_counts[0], 1);
    assert_int_equal(t[0].class_counts[1], 2);
    assert_int_equal(t[0].class_counts[2], 0);
    assert_int_equal(t[0].class_counts[3], 2);
    assert_int_equal(t[0].n_conf_bins, TMLA_CONF_BINS);
    assert_int_equal(t[0].conf_hist[TMLA_CONF_BINS - 1], 3);
    assert_int_equal(t[0].conf_hist[0], 1);
    assert_int_equal(t[0].conf_hist[4999 * TMLA_CONF_BINS / 10000], 1);
    assert_int_equal(t[0].n_lat_bins, TMLA_LAT_BINS);
    assert_int_equal(t[0].lat_hist[0], 1);
    assert_int_equal(t[0].lat_hist[1], 1);
    assert_int_equal(t[0].lat_hist[2], 1);
    assert_int_equal(t[0].lat_hist[3], 1);
    assert_int_equal(t[0].lat_hist[TMLA_LAT_BINS - 1], 1);
    assert_true(t[0].has_health);
    assert_int_equal(t[0].health.supply_mv, 3300);
    assert_int_equal(t[0].health.temp_dc, 215);
    /* An empty period still reports (a heartbeat with health). */
    period(r);
    assert_int_equal(teles(r->mp, from, t, 4), 2);
    assert_int_equal(t[1].seq, 2);
    assert_int_equal(t[1].n_inferences, 0);
    assert_int_equal(t[1].lat_min_us, 0);
}

/* Health a day after boot: what the port of a small MCU would report. */
static bool
day_health(void *user, struct tml_health *h)
{
    (void)user;
    h->free_ram = 48000;
    h->supply_mv = 3312;
    h->temp_dc = -45;
    h->uptime_s = 86400 + 600;
    return true;
}

/* Issue 3: an inference summary of a 4-class model encodes to <= 64 bytes
 * at the default config, histograms and health included (detail_every 1).
 * A day into its life (seq ~1440), the device ran 1000 inferences in the
 * minute: uneven classes, 5% under the confidence threshold, latencies of
 * 18-26 ms with a few 40 ms outliers, 3 inputs flagged by the app. */
static void
test_tele_four_class_summary_fits_64_bytes(void **state)
{
    struct rig *r = *state;
    struct tmla_inference inf = {.predicted = 1, .confidence_bp = 9000};
    uint8_t in[4] = {1, 2, 3, 4};
    struct tml_tele t;
    size_t from, len = 0, at = 0;
    uint32_t top = 0; /* inferences in the top confidence bin */

    assert_int_equal(r->a.cfg.detail_every, 1); /* the default */
    r->a.tele_next = 1441;
    r->a.port.health = day_health;
    period(r); /* an empty heartbeat: the next period starts clean */
    from = r->mp->n_log;
    tml_heap_armed = 1;
    for (uint32_t i = 0; i < 1000; i++) {
        uint32_t d = i % 10;
        uint32_t cls = d < 4 ? 0 : d < 7 ? 1 : d < 9 ? 2 : 3;
        uint32_t conf = i % 20 == 0 ? 3000 + (i * 7) % 2000
                                    : 7000 + (i * 37) % 3000;
        uint32_t lat = i % 50 == 0 ? 40000 : 18000 + (i * 53) % 8000;

        top += conf >= 10000 - 10000 / TMLA_CONF_BINS;
        tmla_record(&r->a, cls, conf, lat);
    }
    for (int i = 0; i < 3; i++)
        (void)tmla_capture(&r->a, &inf, in, sizeof in, TML_REASON_FLAGGED,
                           r->now);
    tml_heap_armed = 0;
    period(r);
    for (size_t i = from; i < r->mp->n_log; i++)
        if (r->mp->log[i].kind == TML_KIND_TELE) {
            len = r->mp->log[i].len;
            at = i;
        }
    assert_true(len > 0);
    assert_int_equal(tml_tele_decode(r->mp->log[at].payload, len, &t),
                     TML_OK);
    /* Everything the agent fills by default is there. */
    assert_true(t.seq >= 1441);
    assert_int_equal(t.n_inferences, 1000);
    assert_int_equal(t.n_low_conf, 50);
    assert_int_equal(t.n_flagged, 3);
    assert_int_equal(t.n_classes, 4);
    assert_int_equal(t.class_counts[0], 400);
    assert_int_equal(t.n_conf_bins, TMLA_CONF_BINS);
    assert_int_equal(t.conf_hist[TMLA_CONF_BINS - 1], top);
    assert_int_equal(t.n_lat_bins, TMLA_LAT_BINS);
    assert_int_equal(t.lat_hist[5] + t.lat_hist[6], 1000);
    assert_int_equal(t.lat_max_us, 40000);
    assert_true(t.has_health);
    assert_int_equal(t.health.uptime_s, 87000);
    assert_int_equal(t.health.temp_dc, -45);
    print_message("4-class summary, 1000 inferences, %d+%d histogram bins "
                  "and health: %zu bytes (budget 64)\n",
                  TMLA_CONF_BINS, TMLA_LAT_BINS, len);
    assert_true(len <= 64);
}

static void
test_tele_seq_never_reused_across_reboots(void **state)
{
    struct rig *r = *state;
    struct tml_tele t[16];
    uint32_t max_before = 0;
    size_t n, from;
    uint32_t writes;

    for (int i = 0; i < 3; i++)
        period(r);
    n = teles(r->mp, 0, t, 16);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        if (t[i].seq > max_before)
            max_before = t[i].seq;
    for (int boot = 0; boot < 3; boot++) {
        from = r->mp->n_log;
        rig_boot(r);
        period(r);
        n = teles(r->mp, from, t, 16);
        assert_int_equal(n, 1);
        assert_true(t[0].seq > max_before);
        max_before = t[0].seq;
    }
    /* Reservations are in blocks: 100 more records, few state writes. */
    writes = r->mp->n_state_writes;
    for (int i = 0; i < 100; i++) {
        period(r);
        tml_heap_armed = 1;
        (void)gw_ack(&r->a, true, r->a.tele_next - 1, false, 0, r->now);
        tml_heap_armed = 0;
    }
    print_message("state writes for 100 summaries: %u\n",
                  r->mp->n_state_writes - writes);
    assert_true(r->mp->n_state_writes - writes <= 100 / TMLA_SEQ_BLOCK + 1);
}

static void
test_tele_resend_after_reconnect_then_ack(void **state)
{
    struct rig *r = *state;
    struct tml_tele t[32];
    size_t n, from;

    /* No new summary in between. */
    r->a.cfg.summary_period_s = r->cfg.summary_period_s = 3600;
    r->mp->offline = true;
    tmla_on_disconnect(&r->a);
    period(r);
    period(r);
    assert_int_equal(teles(r->mp, 0, t, 32), 0);
    r->mp->offline = false;
    tmla_on_connect(&r->a, r->now);
    rig_run(r, 1, 10);
    n = teles(r->mp, 0, t, 32);
    assert_int_equal(n, 2);
    assert_int_equal(t[0].seq, 1);
    assert_int_equal(t[1].seq, 2);
    assert_true(t[0].age_s >= r->cfg.summary_period_s);
    /* The link drops before any ack: both go again with the same seqs. */
    tmla_on_disconnect(&r->a);
    from = r->mp->n_log;
    tmla_on_connect(&r->a, r->now);
    rig_run(r, 1, 10);
    n = teles(r->mp, from, t, 32);
    assert_int_equal(n, 2);
    assert_int_equal(t[0].seq, 1);
    assert_int_equal(t[1].seq, 2);
    assert_int_equal(tmla_stats(&r->a)->tele_resent, 2);
    /* Ack 1: only 2 is resent after the ack timeout. */
    tml_heap_armed = 1;
    assert_int_equal(gw_ack(&r->a, true, 1, false, 0, r->now), TML_OK);
    tml_heap_armed = 0;
    from = r->mp->n_log;
    rig_run(r, 1, r->cfg.ack_timeout_ms);
    n = teles(r->mp, from, t, 32);
    assert_int_equal(n, 1);
    assert_int_equal(t[0].seq, 2);
    tml_heap_armed = 1;
    assert_int_equal(gw_ack(&r->a, true, 2, false, 0, r->now), TML_OK);
    tml_heap_armed = 0;
    assert_int_equal(r->a.ring_n, 0);
    from = r->mp->n_log;
    rig_run(r, 1, r->cfg.ack_timeout_ms);
    assert_int_equal(teles(r->mp, from, t, 32), 0);
}

static void
test_tele_full_ring_folds_unsent_and_counts(void **state)
{
    struct rig *r = *state;
    struct tml_tele t[32];
    uint32_t total = 0, folded = 0, periods = 10;
    uint32_t cls[4] = {0}, want_cls[4] = {0}, low = 0, want_low = 0;
    uint32_t conf = 0, lat = 0, lat_min = UINT32_MAX, lat_max = 0;
    uint32_t want_min = UINT32_MAX, want_max = 0;
    size_t n;

    r->mp->offline = true;
    tmla_on_disconnect(&r->a);
    for (uint32_t p = 0; p < periods; p++) {
        tml_heap_armed = 1;
        for (uint32_t i = 0; i <= p; i++) {
            /* The last one of a period in the top latency bin (>= 1 s). */
            uint32_t us = i == p ? 3000000 + p : 1000 + p * 1000 + i;

            tmla_record(&r->a, i % 4, i % 3 == 0 ? 1000 : 9000, us);
            want_cls[i % 4]++;
            want_low += i % 3 == 0;
            want_min = us < want_min ? us : want_min;
            want_max = us > want_max ? us : want_max;
        }
        tml_heap_armed = 0;
        period(r);
    }
    assert_int_equal(r->a.ring_n, TMLA_TELE_RING);
    r->mp->offline = false;
    tmla_on_connect(&r->a, r->now);
    rig_run(r, 1, 10);
    n = teles(r->mp, 0, t, 32);
    assert_int_equal(n, TMLA_TELE_RING);
    for (size_t i = 0; i < n; i++) {
        total += t[i].n_inferences;
        folded += t[i].n_folded;
        low += t[i].n_low_conf;
        assert_int_equal(t[i].seq, i + 1); /* no gaps: folded before sent */
        assert_int_equal(t[i].n_classes, 4);
        for (size_t c = 0; c < 4; c++)
            cls[c] += t[i].class_counts[c];
        for (size_t b = 0; b < t[i].n_conf_bins; b++)
            conf += t[i].conf_hist[b];
        for (size_t b = 0; b < t[i].n_lat_bins; b++)
            lat += t[i].lat_hist[b];
        lat_min = t[i].lat_min_us < lat_min ? t[i].lat_min_us : lat_min;
        lat_max = t[i].lat_max_us > lat_max ? t[i].lat_max_us : lat_max;
    }
    /* Nothing lost: every inference is in some summary (its class, both
     * histograms, low confidence, latency bounds), and every merged period
     * is counted. */
    assert_int_equal(total, periods * (periods + 1) / 2);
    for (size_t c = 0; c < 4; c++)
        assert_int_equal(cls[c], want_cls[c]);
    assert_int_equal(low, want_low);
    assert_int_equal(conf, total);
    assert_int_equal(lat, total);
    assert_int_equal(lat_min, want_min);
    assert_int_equal(lat_max, want_max);
    assert_int_equal(folded, periods - TMLA_TELE_RING);
    assert_int_equal(tmla_stats(&r->a)->tele_folded, periods - TMLA_TELE_RING);
}

static void
test_tele_r5_acks_lost_ring_stays_bounded(void **state)
{
    struct rig *r = *state;
    struct tml_tele t[64];
    size_t n;
    uint32_t folded = 0;

    /* Connected, every summary sent, no ack ever comes back. */
    for (int p = 0; p < 12; p++) {
        infer_and_close(r);
    }
    assert_true(r->a.ring_n <= TMLA_TELE_RING);
    print_message("R5: ring high water %u of %d\n",
                  tmla_stats(&r->a)->ring_high_water, TMLA_TELE_RING);
    assert_int_equal(tmla_stats(&r->a)->ring_high_water, TMLA_TELE_RING);
    /* Resent after the ack timeout. Sent summaries are never folded (the
     * gateway may hold them): the periods after the ring filled up merge
     * into the open one, which carries the count. */
    rig_run(r, 1, r->cfg.ack_timeout_ms);
    n = teles(r->mp, 0, t, 64);
    for (size_t i = 0; i < r->a.ring_n; i++)
        folded += r->a.ring[i].n_folded;
    folded += r->a.cur.n_folded;
    assert_int_equal(folded, 12 - TMLA_TELE_RING);
    assert_int_equal(n, TMLA_TELE_RING); /* distinct seqs: no gap, no fold */
    for (size_t i = 0; i < n; i++)
        assert_int_equal(t[i].seq, i + 1);
    assert_int_equal(r->a.cur.n_inferences, 12 - TMLA_TELE_RING);
    assert_true(tmla_stats(&r->a)->tele_resent > 0);
}

static void
test_tele_cmd_sets_period_and_threshold(void **state)
{
    struct rig *r = *state;
    struct tml_cmd c;
    struct tml_tele t[8];
    struct tml_hello h;
    const struct mp_msg *m;
    uint8_t buf[64];
    size_t len, from = r->mp->n_log;
    bool seen = false;

    memset(&c, 0, sizeof c);
    c.kind = TML_CMD_SET;
    c.nonce = 77;
    c.has_summary_period = true;
    c.summary_period_s = 10;
    c.has_conf_threshold = true;
    c.conf_threshold_bp = 9500;
    assert_int_equal(tml_cmd_encode(&c, buf, sizeof buf, &len), TML_OK);
    tml_heap_armed = 1;
    assert_int_equal(gw_send(&r->a, TML_KIND_CMD, buf, len, r->now), TML_OK);
    tmla_record(&r->a, 0, 9000, 1000); /* low under the new threshold */
    tml_heap_armed = 0;
    rig_run(r, 1, 10000);
    assert_int_equal(teles(r->mp, from, t, 8), 1);
    assert_int_equal(t[0].period_s, 10);
    assert_int_equal(t[0].n_low_conf, 1);
    /* A ping makes the device say hello again, echoing the nonce. */
    c.kind = TML_CMD_PING;
    c.has_summary_period = c.has_conf_threshold = false;
    c.nonce = 78;
    assert_int_equal(tml_cmd_encode(&c, buf, sizeof buf, &len), TML_OK);
    from = r->mp->n_log;
    tml_heap_armed = 1;
    assert_int_equal(gw_send(&r->a, TML_KIND_CMD, buf, len, r->now), TML_OK);
    tml_heap_armed = 0;
    rig_run(r, 1, 10);
    for (size_t i = from; (m = mp_next_hello(r->mp, &i, &h)) != NULL;) {
        assert_true(h.has_nonce);
        assert_int_equal(h.nonce, 78);
        assert_true(m->retain);
        seen = true;
    }
    assert_true(seen);
}

static void
test_tele_foreign_and_bad_messages_rejected(void **state)
{
    struct rig *r = *state;
    static const char other[] = "tml/v1/dev-8/down/ack";
    static const char up[] = "tml/v1/dev-7/up/tele";
    uint8_t junk[] = {0xff, 0x00, 0x13};

    tml_heap_armed = 1;
    assert_int_equal(
        tmla_on_message(&r->a, other, strlen(other), junk, 3, r->now),
        TML_ERR_TOPIC);
    assert_int_equal(tmla_on_message(&r->a, up, strlen(up), junk, 3, r->now),
                     TML_ERR_TOPIC);
    assert_int_not_equal(gw_send(&r->a, TML_KIND_ACK, junk, 3, r->now), TML_OK);
    /* An ack beyond anything sent does not free unsent summaries. */
    r->mp->offline = true;
    tmla_on_disconnect(&r->a);
    tml_heap_armed = 0;
    period(r);
    tml_heap_armed = 1;
    assert_int_equal(gw_ack(&r->a, true, 1000000, false, 0, r->now), TML_OK);
    tml_heap_armed = 0;
    assert_int_equal(r->a.ring_n, 1);
    assert_int_equal(tmla_stats(&r->a)->bad_messages, 1);
}

/* The agent writes up/state "online" (published, retained, after every
 * hello) and "offline" (the last will) as constants (agent.c): they must
 * be exactly what the encoder writes, with the encoder's answers for a
 * short or missing buffer. */
static void
test_tele_online_state_is_the_encoded_message(void **state)
{
    struct rig *r = *state;
    struct tml_state st = {.online = false};
    uint8_t want[16], got[16];
    size_t n = 0, got_n = 0, seen = 0;

    assert_int_equal(tml_state_encode(&st, want, sizeof want, &n), TML_OK);
    assert_int_equal(tmla_offline_payload(got, sizeof got, &got_n), TML_OK);
    assert_int_equal(got_n, n);
    assert_memory_equal(got, want, n);
    assert_int_equal(tmla_offline_payload(got, n - 1, &got_n),
                     tml_state_encode(&st, want, n - 1, &n));
    assert_int_equal(tmla_offline_payload(NULL, 8, &got_n),
                     tml_state_encode(&st, NULL, 8, &n));
    st.online = true;
    assert_int_equal(tml_state_encode(&st, want, sizeof want, &n), TML_OK);
    tmla_on_connect(&r->a, r->now);
    rig_run(r, 1, 10);
    for (size_t i = 0; i < r->mp->n_log; i++) {
        const struct mp_msg *m = &r->mp->log[i];

        if (m->kind != TML_KIND_STATE)
            continue;
        assert_true(m->retain);
        assert_int_equal(m->len, n);
        assert_memory_equal(m->payload, want, n);
        assert_int_equal(tml_state_decode(m->payload, m->len, &st), TML_OK);
        assert_true(st.online);
        seen++;
    }
    assert_int_equal(seen, 2); /* at boot and after the reconnect */
}

static void
test_tele_largest_hello_fits(void **state)
{
    struct rig *r = *state;
    static const char *const groups[TML_MAX_GROUPS] = {
        "group-0-aaaaaaaaaaaaaaaaaaaaaaaa", "group-1-aaaaaaaaaaaaaaaaaaaaaaaa",
        "group-2-aaaaaaaaaaaaaaaaaaaaaaaa", "group-3-aaaaaaaaaaaaaaaaaaaaaaaa",
        "group-4-aaaaaaaaaaaaaaaaaaaaaaaa", "group-5-aaaaaaaaaaaaaaaaaaaaaaaa",
        "group-6-aaaaaaaaaaaaaaaaaaaaaaaa", "group-7-aaaaaaaaaaaaaaaaaaaaaaaa"};
    struct tml_hello h;
    const struct mp_msg *m;
    size_t from;
    bool seen = false;

    r->cfg.groups = groups;
    r->cfg.n_groups = TML_MAX_GROUPS;
    r->cfg.hw = "hw-0123456789abcdef0123456789abc"; /* 32 bytes */
    rig_boot(r);
    from = r->mp->n_log;
    rig_run(r, 1, 10);
    tmla_on_connect(&r->a, r->now);
    rig_run(r, 1, 10);
    for (size_t i = from; (m = mp_next_hello(r->mp, &i, &h)) != NULL;) {
        assert_int_equal(h.n_groups, TML_MAX_GROUPS);
        print_message("largest hello: %zu bytes (TMLA_TX_BUF %d)\n", m->len,
                      TMLA_TX_BUF);
        seen = true;
    }
    assert_true(seen);
}

static void
test_agent_init_rejects_bad_config_and_port(void **state)
{
    struct rig *r = *state;
    struct tmla_config c;
    struct tmla_port p;
    struct tml_state st;
    char topic[TML_MAX_TOPIC + 1];
    uint8_t will[16];
    size_t n;

#define EXPECT_INVAL(mutation)                                                 \
    do {                                                                       \
        c = r->cfg;                                                            \
        p = r->mp->port;                                                       \
        mutation;                                                              \
        assert_int_equal(tmla_init(&r->a, &c, &p, r->now), TML_ERR_INVAL);     \
    } while (0)
    EXPECT_INVAL(c.device_id = NULL);
    EXPECT_INVAL(c.device_id = "bad/id");
    EXPECT_INVAL(c.hw = NULL);
    EXPECT_INVAL(c.n_keys = 0);
    EXPECT_INVAL(c.n_keys = TMLA_MAX_KEYS + 1);
    EXPECT_INVAL(c.ota_chunk = TML_CHUNK_MAX + 1);
    EXPECT_INVAL(c.summary_period_s = 0);
    EXPECT_INVAL(c.conf_threshold_bp = 10001);
    EXPECT_INVAL(c.n_groups = 1; c.groups = NULL);
    /* Every required port member (agent.c required_fns). */
    EXPECT_INVAL(p.publish = NULL);
    EXPECT_INVAL(p.flash_read = NULL);
    EXPECT_INVAL(p.flash_write = NULL);
    EXPECT_INVAL(p.flash_erase = NULL);
    EXPECT_INVAL(p.state_read = NULL);
    EXPECT_INVAL(p.state_write = NULL);
    EXPECT_INVAL(p.sha256_init = NULL);
    EXPECT_INVAL(p.sha256_update = NULL);
    EXPECT_INVAL(p.sha256_final = NULL);
    EXPECT_INVAL(p.es256_verify = NULL);
    EXPECT_INVAL(p.random = NULL);
    EXPECT_INVAL(p.activate = NULL);
    EXPECT_INVAL(p.erase_size = 3000);
    EXPECT_INVAL(p.erase_size = 0);
    /* A power of two that does not divide the checkpoint interval. */
    EXPECT_INVAL(p.erase_size = 2 * TMLA_OTA_CHECKPOINT;
                 p.slot_size = 2 * TMLA_OTA_CHECKPOINT);
    EXPECT_INVAL(p.write_align = 3);
    EXPECT_INVAL(p.write_align = 32);
    EXPECT_INVAL(p.slot_size = MP_ERASE + 1);
#undef EXPECT_INVAL
    assert_int_equal(tmla_init(&r->a, &r->cfg, &r->mp->port, r->now), TML_OK);
    assert_int_equal(
        tmla_topic(&r->a, TML_DIR_DOWN, TML_KIND_OTA, topic, sizeof topic),
        TML_OK);
    assert_string_equal(topic, "tml/v1/" MP_DEV "/down/ota");
    assert_int_equal(tmla_offline_payload(will, sizeof will, &n), TML_OK);
    assert_int_equal(tml_state_decode(will, n, &st), TML_OK);
    assert_false(st.online);
}

/* A gateway like tmld's store (daemon/store.c, PROTOCOL.md 6): a record is
 * stored only if its seq is the stream's high-water + 1 (go-back-N), except
 * that the numbers below a record's low-water are given up and counted;
 * a hello from another boot whose next seq is at or below the high-water
 * restarts the stream (counted). Every batch is acked with the high-water,
 * unless drop_acks (acks lost on the way back). */
struct strict_gw {
    bool ack_zero;  /* also ack a high-water of 0 (nothing stored yet) */
    bool drop_acks; /* store, but the acks never reach the device */
    size_t cursor;
    uint32_t hw_tele, hw_sample;
    uint32_t inferences, gaps, dups;
    uint32_t skipped_tele, skipped_sample, resets;
    uint32_t boot_count, boot_id; /* of the last hello */
};

static void
strict_hello(struct strict_gw *g, const struct mp_msg *m)
{
    struct tml_hello h;
    bool behind;

    assert_int_equal(tml_hello_decode(m->payload, m->len, &h), TML_OK);
    assert_true(h.boot_id != 0);
    behind = (h.tele_next != 0 && h.tele_next <= g->hw_tele) ||
             (h.sample_next != 0 && h.sample_next <= g->hw_sample);
    if (behind && (h.boot_id != g->boot_id || h.boot_count < g->boot_count)) {
        g->resets++;
        if (h.tele_next <= g->hw_tele)
            g->hw_tele = 0;
        if (h.sample_next <= g->hw_sample)
            g->hw_sample = 0;
    }
    g->boot_count = h.boot_count;
    g->boot_id = h.boot_id;
}

static void
strict_pump(struct rig *r, struct strict_gw *g, bool up, unsigned rounds)
{
    for (unsigned k = 0; k < rounds; k++) {
        bool any = false;

        for (; g->cursor < r->mp->n_log; g->cursor++) {
            const struct mp_msg *m = &r->mp->log[g->cursor % MP_LOG];
            uint32_t seq, lw, n_inf = 0, *hw, *skipped;

            if (!up)
                continue; /* the gateway is down: messages are lost */
            if (m->kind == TML_KIND_HELLO) {
                strict_hello(g, m);
                continue;
            }
            if (m->kind == TML_KIND_TELE) {
                struct tml_tele t;

                assert_int_equal(tml_tele_decode(m->payload, m->len, &t),
                                 TML_OK);
                seq = t.seq;
                lw = t.lw;
                n_inf = t.n_inferences;
                hw = &g->hw_tele;
                skipped = &g->skipped_tele;
            } else if (m->kind == TML_KIND_SAMPLE) {
                struct tml_sample sm;

                assert_int_equal(tml_sample_decode(m->payload, m->len, &sm),
                                 TML_OK);
                seq = sm.seq;
                lw = sm.lw;
                hw = &g->hw_sample;
                skipped = &g->skipped_sample;
            } else {
                continue;
            }
            any = true;
            assert_true(lw >= 1 && lw <= seq); /* the agent always sends it */
            if (seq > *hw + 1 && lw > *hw + 1) {
                *skipped += lw - 1 - *hw;
                *hw = lw - 1;
            }
            if (seq == *hw + 1) {
                (*hw)++;
                if (m->kind == TML_KIND_TELE)
                    g->inferences += n_inf;
            } else if (seq <= *hw) {
                g->dups++;
            } else {
                g->gaps++;
            }
        }
        if (any && !g->drop_acks) {
            tml_heap_armed = 1;
            (void)gw_ack(&r->a, g->ack_zero || g->hw_tele > 0, g->hw_tele,
                         g->ack_zero || g->hw_sample > 0, g->hw_sample, r->now);
            tml_heap_armed = 0;
        }
        rig_run(r, 1, r->cfg.ack_timeout_ms);
    }
}

/* Time goes on while the gateway pumps, so new (empty) summaries keep
 * closing: what the device still holds must all be above what the gateway
 * stored (everything stored was acked and freed). */
static void
assert_nothing_stored_still_held(const struct rig *r,
                                 const struct strict_gw *g)
{
    for (int i = 0; i < r->a.ring_n; i++)
        assert_true(r->a.ring[i].seq == 0 || r->a.ring[i].seq > g->hw_tele);
}

static void
test_tele_gapless_gateway_keeps_receiving_after_reboots(void **state)
{
    struct rig *r = *state;
    struct strict_gw g = {0};
    uint32_t recorded = 0;
    uint8_t in[64];
    struct tmla_inference inf = {.confidence_bp = 100};

    memset(in, 7, sizeof in);
    r->cfg.budget_period_s = r->a.cfg.budget_period_s = 60;
    for (int boot = 0; boot < 3; boot++) {
        for (int p = 0; p < 3; p++) {
            tml_heap_armed = 1;
            tmla_record(&r->a, 1, 9000, 1000);
            (void)tmla_capture(&r->a, &inf, in, sizeof in, TML_REASON_FLAGGED,
                               r->now);
            tml_heap_armed = 0;
            recorded++;
            rig_run(r, 1, 60000);
            strict_pump(r, &g, true, 1);
        }
        strict_pump(r, &g, true, 6);
        assert_nothing_stored_still_held(r, &g); /* acked before the reboot */
        rig_boot(r); /* reboot: the next block of numbers starts at +64 */
    }
    strict_pump(r, &g, true, 6);
    print_message("go-back-N gateway: tele hw %u, sample hw %u, %u tele and "
                  "%u sample numbers given up (unused blocks) over 3 "
                  "reboots, %u waits\n",
                  g.hw_tele, g.hw_sample, g.skipped_tele, g.skipped_sample,
                  g.gaps);
    /* Every summary of every boot reached the gateway, in order, once. */
    assert_int_equal(g.inferences, recorded);
    assert_true(g.hw_tele >= 9);
    assert_true(g.hw_sample >= 1);
    /* The reboots skipped the rest of each reserved block: given up at
     * once (no record was waiting for them), not a stall, not a reset. */
    assert_true(g.skipped_tele >= 2 * (TMLA_SEQ_BLOCK - 3));
    assert_int_equal(g.gaps, 0);
    assert_int_equal(g.resets, 0);
    assert_nothing_stored_still_held(r, &g);
}

/* Reboot loss (issue 3): summaries held in RAM die with a reboot; the
 * gateway gives their numbers up, counted, and goes on storing. */
static void
test_tele_reboot_loss_is_given_up_and_counted(void **state)
{
    struct rig *r = *state;
    struct strict_gw g = {0};
    struct tml_tele t[8];
    uint32_t recorded = 0, lost = 0, first_after;
    size_t from;

    for (int p = 0; p < 4; p++) {
        bool up = p == 0; /* the gateway is down for periods 2..4 */

        recorded++;
        infer_and_close(r);
        strict_pump(r, &g, up, 1);
        if (!up)
            lost++;
    }
    assert_int_equal(g.hw_tele, 1);
    assert_int_equal(r->a.ring_n, 3); /* sent, never acked: only in RAM */
    g.cursor = r->mp->n_log; /* resends still in flight die with the link */
    from = r->mp->n_log;
    rig_boot(r);
    recorded++;
    infer_and_close(r);
    strict_pump(r, &g, true, 4);
    assert_true(teles(r->mp, from, t, 8) >= 1);
    first_after = t[0].seq;
    assert_int_equal(t[0].lw, first_after);
    print_message("reboot with 3 summaries unacked: first seq after it %u, "
                  "%u numbers given up (3 lost records + the unused block)\n",
                  first_after, g.skipped_tele);
    assert_true(g.hw_tele >= first_after);
    assert_int_equal(g.skipped_tele, first_after - 2);
    assert_true(g.skipped_tele >= lost);
    assert_int_equal(g.inferences, recorded - lost);
    assert_int_equal(g.gaps, 0);
    assert_nothing_stored_still_held(r, &g);
}

/* Issue 3 (b), R5 device side: the ring fills with summaries that were sent
 * and stored but whose acks were lost. None of them may be folded away (its number would
 * never come again, its counts would be counted twice): the next periods
 * merge into the open one until the acks come through. */
static void
test_tele_fold_after_send_keeps_numbers_and_counts(void **state)
{
    struct rig *r = *state;
    struct strict_gw g = {.drop_acks = true};
    uint32_t recorded = 0, periods = 10, folded = 0;
    struct tml_tele t[64];
    size_t n;

    for (uint32_t p = 0; p < periods; p++) {
        tml_heap_armed = 1;
        for (uint32_t i = 0; i <= p; i++)
            tmla_record(&r->a, i % 4, 9000, 1000);
        tml_heap_armed = 0;
        recorded += p + 1;
        period(r);
        strict_pump(r, &g, true, 1);
    }
    assert_int_equal(r->a.ring_n, TMLA_TELE_RING);
    assert_int_equal(g.hw_tele, TMLA_TELE_RING); /* stored, acks lost */
    assert_int_equal(r->a.cur.n_folded, periods - TMLA_TELE_RING);
    g.drop_acks = false;
    strict_pump(r, &g, true, 4);
    period(r); /* the merged period closes into the freed ring */
    strict_pump(r, &g, true, 4);
    n = teles(r->mp, 0, t, 64);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(t[i].seq, i + 1); /* no number dropped */
        folded += t[i].n_folded;
    }
    print_message("acks lost for %u periods: %zu summaries, %u periods "
                  "merged, %u of %u inferences stored, %u numbers given up\n",
                  periods, n, folded, g.inferences, recorded, g.skipped_tele);
    assert_int_equal(g.inferences, recorded); /* once each */
    assert_int_equal(folded, periods - TMLA_TELE_RING);
    assert_int_equal(g.skipped_tele, 0);
    assert_int_equal(g.gaps, 0);
    assert_true(g.dups > 0); /* the stored ones were resent and absorbed */
    assert_nothing_stored_still_held(r, &g);
}

/* Issue 3 (a), R4: a summary lost with the broker. The next ones reach a
 * go-back-N gateway as gaps and are dropped too; when the lost one's ack is
 * overdue every held summary goes again, in order, so the device catches
 * up after one timeout instead of lagging one timeout per summary. */
static void
test_tele_one_timeout_resends_everything_held(void **state)
{
    struct rig *r = *state;
    struct strict_gw g = {0};

    /* As in tml-devsim's tests: the ack timeout is longer than a period,
     * so a later summary goes out before an earlier one is overdue. */
    r->cfg.ack_timeout_ms = r->a.cfg.ack_timeout_ms =
        r->cfg.summary_period_s * 1000u * 5 / 3;
    period(r);
    g.cursor = r->mp->n_log; /* seq 1 is lost on the way */
    period(r); /* seq 2: a gap at the gateway */
    period(r); /* seq 1 is overdue before seq 3 is sent */
    /* The gateway gets, in order: 2 (gap), then 1 and 2 again, then 3.
     * Resending only the overdue 1 would store 1 and drop 3 as a gap. */
    strict_pump(r, &g, true, 1);
    print_message("after one ack timeout: gateway hw %u, %u gap drops\n",
                  g.hw_tele, g.gaps);
    assert_true(g.hw_tele >= 3);
    assert_int_equal(g.gaps, 1);
    assert_int_equal(g.skipped_tele, 0);
    assert_nothing_stored_still_held(r, &g);
}

/* Issue 4 (d): both state copies lost (or the device replaced under the
 * same id): it starts again at seq 1, which the gateway has long stored.
 * Its hello (another boot_id, tele_next 1) makes the gateway restart the
 * stream, counted, instead of dropping the records as duplicates. */
static void
test_tele_wiped_state_is_a_visible_reset(void **state)
{
    struct rig *r = *state;
    struct strict_gw g = {0};
    uint32_t recorded = 0, hw_before;

    for (int p = 0; p < 4; p++) {
        recorded++;
        infer_and_close(r);
        strict_pump(r, &g, true, 1);
    }
    memset(r->mp->state, 0, sizeof r->mp->state);
    rig_boot(r);
    assert_int_equal(r->a.tele_next, 1);
    hw_before = g.hw_tele;
    for (int p = 0; p < 3; p++) {
        recorded++;
        infer_and_close(r);
        strict_pump(r, &g, true, 1);
    }
    strict_pump(r, &g, true, 4);
    print_message("state lost: gateway hw %u -> %u, %u reset, %u duplicates "
                  "dropped\n",
                  hw_before, g.hw_tele, g.resets, g.dups);
    assert_int_equal(hw_before, 4);
    assert_int_equal(g.resets, 1);
    assert_true(g.hw_tele >= 3 && g.hw_tele < hw_before + 3);
    assert_int_equal(g.inferences, recorded); /* nothing lost as a "dup" */
    assert_int_equal(r->a.ring_n, 0);
    /* A hello of the same boot again (a QoS 1 resend): no second reset. */
    r->a.hello_due = true;
    rig_run(r, 1, 10);
    strict_pump(r, &g, true, 1);
    assert_int_equal(g.resets, 1);
    assert_int_equal(g.inferences, recorded);
}

/* The last hello the device published since log index from (epoch 0 if
 * none). */
static uint32_t
hello_epoch(const struct memport *mp, size_t from)
{
    struct tml_hello h;
    uint32_t e = 0;

    while (mp_next_hello(mp, &from, &h) != NULL)
        e = h.epoch;
    return e;
}

static enum tml_err
ack_in_epoch(struct rig *r, uint32_t tele, uint32_t epoch)
{
    struct tml_ack k = {.has_tele = true, .tele_seq = tele, .epoch = epoch};
    uint8_t buf[64];
    size_t n;
    enum tml_err err;

    assert_int_equal(tml_ack_encode(&k, buf, sizeof buf, &n), TML_OK);
    tml_heap_armed = 1;
    err = gw_send(&r->a, TML_KIND_ACK, buf, n, r->now);
    tml_heap_armed = 0;
    return err;
}

/* Numbering epoch (PROTOCOL.md 6): drawn once, persisted, carried by every
 * record and hello; kept across reboots, new when the state is lost; an
 * ack of another epoch frees nothing (the gateway stored a late record of
 * an earlier life), one of this epoch or without one does. */
static void
test_tele_epoch_persists_and_foreign_acks_free_nothing(void **state)
{
    struct rig *r = *state;
    struct tml_tele t[8];
    uint32_t e;
    size_t from = r->mp->n_log, n;

    e = r->a.ps.epoch;
    assert_true(e != 0);
    infer_and_close(r);
    n = teles(r->mp, from, t, 8);
    assert_int_equal(n, 1);
    assert_int_equal(t[0].epoch, e);
    from = r->mp->n_log;
    rig_boot(r);
    assert_int_equal(r->a.ps.epoch, e); /* a reboot keeps it */
    assert_int_equal(hello_epoch(r->mp, from), e);
    infer_and_close(r);
    n = teles(r->mp, from, t, 8);
    assert_true(n >= 1);
    assert_int_equal(t[n - 1].epoch, e);
    assert_true(r->a.ring_n >= 1);
    /* Another life's ack, even one covering everything, frees nothing. */
    assert_int_equal(ack_in_epoch(r, 0xfffffff0u, e == 0xffffu ? 1 : e + 1),
                     TML_OK);
    assert_true(r->a.ring_n >= 1);
    assert_int_equal(tmla_stats(&r->a)->acks_other_epoch, 1);
    /* This epoch's ack does. */
    assert_int_equal(ack_in_epoch(r, r->a.tele_next - 1, e), TML_OK);
    assert_int_equal(r->a.ring_n, 0);
    /* An older gateway's ack (no epoch) still counts. */
    infer_and_close(r);
    assert_true(r->a.ring_n >= 1);
    assert_int_equal(ack_in_epoch(r, r->a.tele_next - 1, 0), TML_OK);
    assert_int_equal(r->a.ring_n, 0);
    /* State lost: the numbering starts again at 1 in a new epoch. */
    memset(r->mp->state, 0, sizeof r->mp->state);
    from = r->mp->n_log;
    rig_boot(r);
    assert_int_equal(r->a.tele_next, 1);
    assert_true(r->a.ps.epoch != 0 && r->a.ps.epoch != e);
    assert_int_equal(hello_epoch(r->mp, from), r->a.ps.epoch);
    infer_and_close(r);
    n = teles(r->mp, from, t, 8);
    assert_true(n >= 1);
    assert_int_equal(t[0].seq, 1);
    assert_int_equal(t[0].epoch, r->a.ps.epoch);
    print_message("epoch %u -> %u after the state was lost\n", e,
                  r->a.ps.epoch);
}

/* A device that has booted before starts above 1 (reserved block); a new
 * gateway (or a new site) has stored nothing: the low-water of the first
 * record tells it to give up the numbers below. */
static void
test_tele_fresh_gateway_gives_up_numbers_below_low_water(void **state)
{
    struct rig *r = *state;
    struct strict_gw g = {.ack_zero = true};
    uint32_t first;

    period(r); /* seq 1 reserves a block, sent to another gateway */
    rig_boot(r);
    g.cursor = r->mp->n_log;
    first = r->a.tele_next;
    assert_true(first > 2);
    period(r);
    strict_pump(r, &g, true, 6);
    assert_true(g.hw_tele >= first);
    assert_int_equal(g.skipped_tele, first - 1);
    assert_nothing_stored_still_held(r, &g);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, rig_setup_booted, rig_teardown)
        T(test_tele_summary_arithmetic),
        T(test_tele_four_class_summary_fits_64_bytes),
        T(test_tele_epoch_persists_and_foreign_acks_free_nothing),
        T(test_tele_seq_never_reused_across_reboots),
        T(test_tele_resend_after_reconnect_then_ack),
        T(test_tele_full_ring_folds_unsent_and_counts),
        T(test_tele_r5_acks_lost_ring_stays_bounded),
        T(test_tele_cmd_sets_period_and_threshold),
        T(test_tele_foreign_and_bad_messages_rejected),
        T(test_tele_largest_hello_fits),
        T(test_tele_online_state_is_the_encoded_message),
        T(test_agent_init_rejects_bad_config_and_port),
        T(test_tele_gapless_gateway_keeps_receiving_after_reboots),
        T(test_tele_reboot_loss_is_given_up_and_counted),
        T(test_tele_fold_after_send_keeps_numbers_and_counts),
        T(test_tele_one_timeout_resends_everything_held),
        T(test_tele_wiped_state_is_a_visible_reset),
        T(test_tele_fresh_gateway_gives_up_numbers_below_low_water),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
