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

static int
setup(void **state)
{
    struct rig *r = rig_new();

    rig_boot(r);
    *state = r;
    return 0;
}

static int
teardown(void **state)
{
    rig_free(*state);
    return 0;
}

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

static void
test_tele_four_class_summary_fits_64_bytes(void **state)
{
    struct rig *r = *state;
    size_t from = r->mp->n_log, len = 0;

    /* A busy minute of a 4-class keyword spotter: ~1 inference/s per
     * class, latencies around 20 ms, mostly confident. */
    tml_heap_armed = 1;
    for (uint32_t i = 0; i < 3000; i++)
        tmla_record(&r->a, i % 4, 6000 + (i * 37) % 4000,
                    16000 + (i * 53) % 12000);
    tml_heap_armed = 0;
    r->a.cfg.detail_every = 2; /* seq 1: counts only; seq 2: detail */
    r->now += 5000;
    period(r);
    for (size_t i = from; i < r->mp->n_log; i++)
        if (r->mp->log[i].kind == TML_KIND_TELE)
            len = r->mp->log[i].len;
    print_message("4-class summary (3000 inferences): %zu bytes\n", len);
    assert_true(len > 0);
    assert_true(len <= 64);
    tml_heap_armed = 1;
    for (uint32_t i = 0; i < 3000; i++)
        tmla_record(&r->a, i % 4, 6000 + (i * 37) % 4000,
                    16000 + (i * 53) % 12000);
    tml_heap_armed = 0;
    from = r->mp->n_log;
    period(r);
    for (size_t i = from; i < r->mp->n_log; i++)
        if (r->mp->log[i].kind == TML_KIND_TELE)
            len = r->mp->log[i].len;
    print_message("  with %d+%d histogram bins and health: %zu bytes\n",
                  TMLA_CONF_BINS, TMLA_LAT_BINS, len);
    assert_true(len > 64);
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
    size_t n;

    r->mp->offline = true;
    tmla_on_disconnect(&r->a);
    for (uint32_t p = 0; p < periods; p++) {
        tml_heap_armed = 1;
        for (uint32_t i = 0; i <= p; i++)
            tmla_record(&r->a, i % 4, 9000, 1000 + p);
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
        assert_int_equal(t[i].seq, i + 1); /* no gaps: folded before sent */
    }
    /* Nothing lost: every inference is in some summary, and every merged
     * period is counted. */
    assert_int_equal(total, periods * (periods + 1) / 2);
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
        tml_heap_armed = 1;
        tmla_record(&r->a, 0, 9000, 1000);
        tml_heap_armed = 0;
        period(r);
    }
    assert_true(r->a.ring_n <= TMLA_TELE_RING);
    print_message("R5: ring high water %u of %d\n",
                  tmla_stats(&r->a)->ring_high_water, TMLA_TELE_RING);
    assert_int_equal(tmla_stats(&r->a)->ring_high_water, TMLA_TELE_RING);
    /* Resent after the ack timeout: the survivors carry the folds. */
    rig_run(r, 1, r->cfg.ack_timeout_ms);
    n = teles(r->mp, 0, t, 64);
    for (size_t i = 0; i < r->a.ring_n; i++)
        folded += r->a.ring[i].n_folded;
    assert_int_equal(folded, 12 - TMLA_TELE_RING);
    assert_int_equal(n, 12); /* distinct seqs */
    assert_true(tmla_stats(&r->a)->tele_resent > 0);
}

static void
test_tele_cmd_sets_period_and_threshold(void **state)
{
    struct rig *r = *state;
    struct tml_cmd c;
    struct tml_tele t[8];
    uint8_t buf[64];
    size_t len, from = r->mp->n_log;

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
    for (size_t i = from; i < r->mp->n_log; i++)
        if (r->mp->log[i].kind == TML_KIND_HELLO) {
            struct tml_hello h;

            assert_int_equal(
                tml_hello_decode(r->mp->log[i].payload, r->mp->log[i].len, &h),
                TML_OK);
            assert_true(h.has_nonce);
            assert_int_equal(h.nonce, 78);
            assert_true(r->mp->log[i].retain);
            from = 0;
        }
    assert_int_equal(from, 0);
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

static void
test_tele_largest_hello_fits(void **state)
{
    struct rig *r = *state;
    static const char *const groups[TML_MAX_GROUPS] = {
        "group-0-aaaaaaaaaaaaaaaaaaaaaaaa", "group-1-aaaaaaaaaaaaaaaaaaaaaaaa",
        "group-2-aaaaaaaaaaaaaaaaaaaaaaaa", "group-3-aaaaaaaaaaaaaaaaaaaaaaaa",
        "group-4-aaaaaaaaaaaaaaaaaaaaaaaa", "group-5-aaaaaaaaaaaaaaaaaaaaaaaa",
        "group-6-aaaaaaaaaaaaaaaaaaaaaaaa", "group-7-aaaaaaaaaaaaaaaaaaaaaaaa"};
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
    for (size_t i = from; i < r->mp->n_log; i++)
        if (r->mp->log[i].kind == TML_KIND_HELLO) {
            struct tml_hello h;

            assert_int_equal(
                tml_hello_decode(r->mp->log[i].payload, r->mp->log[i].len, &h),
                TML_OK);
            assert_int_equal(h.n_groups, TML_MAX_GROUPS);
            print_message("largest hello: %zu bytes (TMLA_TX_BUF %d)\n",
                          r->mp->log[i].len, TMLA_TX_BUF);
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
    EXPECT_INVAL(p.publish = NULL);
    EXPECT_INVAL(p.es256_verify = NULL);
    EXPECT_INVAL(p.activate = NULL);
    EXPECT_INVAL(p.erase_size = 3000);
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

/* A gateway like tmld's store: a record is stored only if its seq is the
 * stream's high-water + 1 (go-back-N), and every batch is acked with the
 * high-water. */
struct strict_gw {
    bool ack_zero; /* also ack a high-water of 0 (nothing stored yet) */
    size_t cursor;
    uint32_t hw_tele, hw_sample;
    uint32_t inferences, gaps, dups;
};

static void
strict_pump(struct rig *r, struct strict_gw *g, bool up, unsigned rounds)
{
    for (unsigned k = 0; k < rounds; k++) {
        bool any = false;

        for (; g->cursor < r->mp->n_log; g->cursor++) {
            const struct mp_msg *m = &r->mp->log[g->cursor % MP_LOG];
            uint32_t seq, *hw;

            if (!up)
                continue; /* the gateway is down: messages are lost */
            if (m->kind == TML_KIND_TELE) {
                struct tml_tele t;

                assert_int_equal(tml_tele_decode(m->payload, m->len, &t),
                                 TML_OK);
                seq = t.seq;
                hw = &g->hw_tele;
                if (seq == *hw + 1)
                    g->inferences += t.n_inferences;
            } else if (m->kind == TML_KIND_SAMPLE) {
                struct tml_sample sm;

                assert_int_equal(tml_sample_decode(m->payload, m->len, &sm),
                                 TML_OK);
                seq = sm.seq;
                hw = &g->hw_sample;
            } else {
                continue;
            }
            any = true;
            if (seq == *hw + 1)
                (*hw)++;
            else if (seq <= *hw)
                g->dups++;
            else
                g->gaps++;
        }
        if (any) {
            tml_heap_armed = 1;
            (void)gw_ack(&r->a, g->ack_zero || g->hw_tele > 0, g->hw_tele,
                         g->ack_zero || g->hw_sample > 0, g->hw_sample, r->now);
            tml_heap_armed = 0;
        }
        rig_run(r, 1, r->cfg.ack_timeout_ms);
    }
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
        rig_boot(r); /* reboot: the next block of numbers starts at +64 */
    }
    strict_pump(r, &g, true, 6);
    print_message("go-back-N gateway: tele hw %u, sample hw %u, %u gap "
                  "records dropped and repaired over 3 reboots\n",
                  g.hw_tele, g.hw_sample, g.gaps);
    /* Every summary of every boot reached the gateway, in order. */
    assert_int_equal(g.inferences, recorded);
    assert_true(g.hw_tele >= 9);
    assert_true(g.hw_sample >= 1);
    assert_true(g.gaps > 0); /* the reboots did cause gaps... */
    /* ...and the device repaired them (counted on the device side). */
}

static void
test_tele_gapless_gateway_after_records_lost_in_ram(void **state)
{
    struct rig *r = *state;
    struct strict_gw g = {0};
    uint32_t hw_before;

    period(r);
    strict_pump(r, &g, true, 2);
    assert_int_equal(g.hw_tele, 1);
    /* The gateway is down for two periods, then the device reboots: the
     * two summaries it held are gone with its RAM. */
    period(r);
    period(r);
    strict_pump(r, &g, false, 1);
    hw_before = g.hw_tele;
    rig_boot(r);
    period(r);
    strict_pump(r, &g, true, 6);
    assert_true(g.hw_tele > hw_before);
    assert_true(tmla_stats(&r->a)->renumbered >= 1);
    /* And numbering goes on from there. */
    hw_before = g.hw_tele;
    period(r);
    strict_pump(r, &g, true, 2);
    assert_true(g.hw_tele > hw_before);
}

static void
test_tele_device_with_lost_state_continues_above_gateway(void **state)
{
    struct rig *r = *state;
    struct strict_gw g = {0};
    uint32_t recorded = 0, hw_before;

    for (int p = 0; p < 4; p++) {
        tml_heap_armed = 1;
        tmla_record(&r->a, 0, 9000, 1000);
        tml_heap_armed = 0;
        recorded++;
        period(r);
        strict_pump(r, &g, true, 1);
    }
    /* Both state copies lost (or the device replaced under the same id):
     * it starts again at seq 1, which the gateway has long stored. */
    memset(r->mp->state, 0, sizeof r->mp->state);
    rig_boot(r);
    hw_before = g.hw_tele;
    for (int p = 0; p < 3; p++) {
        tml_heap_armed = 1;
        tmla_record(&r->a, 0, 9000, 1000);
        tml_heap_armed = 0;
        recorded++;
        period(r);
        strict_pump(r, &g, true, 1);
    }
    strict_pump(r, &g, true, 4);
    print_message("state lost: gateway hw %u -> %u, %u duplicates dropped\n",
                  hw_before, g.hw_tele, g.dups);
    assert_true(g.hw_tele > hw_before);
    assert_int_equal(g.inferences, recorded); /* nothing lost as a "dup" */
}

static void
test_tele_fresh_gateway_acking_zero_gets_renumbered_records(void **state)
{
    struct rig *r = *state;
    struct strict_gw g = {.ack_zero = true};

    /* A device that has booted before starts above 1 (reserved block);
     * a new gateway (or a new site) has stored nothing and acks 0. */
    period(r); /* seq 1 reserves a block, sent to another gateway */
    rig_boot(r);
    g.cursor = r->mp->n_log;
    assert_true(r->a.tele_next > 2);
    period(r);
    strict_pump(r, &g, true, 6);
    assert_true(g.hw_tele >= 1);
    assert_true(tmla_stats(&r->a)->renumbered >= 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_tele_summary_arithmetic),
        T(test_tele_four_class_summary_fits_64_bytes),
        T(test_tele_seq_never_reused_across_reboots),
        T(test_tele_resend_after_reconnect_then_ack),
        T(test_tele_full_ring_folds_unsent_and_counts),
        T(test_tele_r5_acks_lost_ring_stays_bounded),
        T(test_tele_cmd_sets_period_and_threshold),
        T(test_tele_foreign_and_bad_messages_rejected),
        T(test_tele_largest_hello_fits),
        T(test_agent_init_rejects_bad_config_and_port),
        T(test_tele_gapless_gateway_keeps_receiving_after_reboots),
        T(test_tele_gapless_gateway_after_records_lost_in_ram),
        T(test_tele_device_with_lost_state_continues_above_gateway),
        T(test_tele_fresh_gateway_acking_zero_gets_renumbered_records),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
