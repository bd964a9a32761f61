/*
 * test_sample.c: input capture: selection reasons, token bucket, reservoir
 * uniformity (a chi-square test with a fixed seed), chunking to the
 * transport's message size, resend and ack of sample records.
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

    r->cfg.sample_budget = 2;
    r->cfg.budget_period_s = 60;
    rig_boot(r);
    *state = r;
    return 0;
}


static size_t
samples(const struct memport *mp, size_t from, struct tml_sample *out,
        size_t cap)
{
    size_t n = 0;

    for (size_t i = from; i < mp->n_log && n < cap; i++)
        if (mp->log[i % MP_LOG].kind == TML_KIND_SAMPLE) {
            assert_int_equal(tml_sample_decode(mp->log[i % MP_LOG].payload,
                                               mp->log[i % MP_LOG].len,
                                               &out[n]),
                             TML_OK);
            n++;
        }
    return n;
}

static enum tmla_capture_rc
capture(struct rig *r, uint32_t conf, const void *in, size_t len,
        uint8_t reason)
{
    struct tmla_inference inf = {.predicted = 2,
                                 .confidence_bp = conf,
                                 .dtype = TML_DTYPE_U8,
                                 .n_shape = 1};
    enum tmla_capture_rc rc;

    inf.shape[0] = (uint32_t)len;
    tml_heap_armed = 1;
    rc = tmla_capture(&r->a, &inf, in, len, reason, r->now);
    tml_heap_armed = 0;
    return rc;
}

static void
budget_period(struct rig *r)
{
    rig_run(r, 1, r->cfg.budget_period_s * 1000u);
}

static void
ack_all(struct rig *r)
{
    tml_heap_armed = 1;
    /* Like a gateway, both streams: summaries that are never acked stay in
     * the ring, and a full ring keeps the newest period (with its
     * n_samples_dropped) open instead of folding sent ones. */
    (void)gw_ack(&r->a, r->a.tele_next > 1, r->a.tele_next - 1, true,
                 r->a.sample_next - 1, r->now);
    tml_heap_armed = 0;
}

static void
test_sample_reasons_chosen_by_agent(void **state)
{
    struct rig *r = *state;
    uint8_t in[8] = {0};

    r->a.cfg.audit_ppm = 0;
    assert_int_equal(capture(r, 9000, in, sizeof in, 0),
                     TMLA_CAPTURE_NOT_SELECTED);
    assert_int_equal(capture(r, 1000, in, sizeof in, 0), TMLA_CAPTURE_KEPT);
    r->a.cfg.audit_ppm = 1000000;
    assert_int_equal(capture(r, 9000, in, sizeof in, 0), TMLA_CAPTURE_KEPT);
    assert_int_equal(capture(r, 9000, in, sizeof(mp_spool), 0),
                     TMLA_CAPTURE_TOO_LARGE);
    budget_period(r);
    {
        struct tml_sample s[4];

        assert_int_equal(samples(r->mp, 0, s, 4), 2);
        assert_int_equal(s[0].reason + s[1].reason,
                         TML_REASON_LOW_CONF + TML_REASON_AUDIT);
        assert_int_equal(s[0].predicted, 2);
        assert_int_equal(s[0].dtype, TML_DTYPE_U8);
    }
}

/* Every inference field reaches up/sample as given, except the agent's
 * defaults and clamps: dtype 0 is U8, no shape is [len] bytes, confidence
 * above 10000 bp is 10000. */
static void
test_sample_inference_fields_on_the_wire(void **state)
{
    struct rig *r = *state;
    uint8_t in[32] = {1, 2, 3};
    struct tmla_inference full = {.predicted = 3,
                                  .confidence_bp = 12000,
                                  .has_expected = true,
                                  .expected = 1,
                                  .dtype = TML_DTYPE_F32,
                                  .n_shape = 2,
                                  .shape = {2, 4},
                                  .rate_hz = 16000};
    struct tmla_inference bare = {.predicted = 7, .confidence_bp = 4321};
    struct tml_sample s[4];
    const struct tml_sample *f, *b;

    tml_heap_armed = 1;
    assert_int_equal(
        tmla_capture(&r->a, &full, in, sizeof in, TML_REASON_FLAGGED, r->now),
        TMLA_CAPTURE_KEPT);
    assert_int_equal(
        tmla_capture(&r->a, &bare, in, 5, TML_REASON_FLAGGED, r->now),
        TMLA_CAPTURE_KEPT);
    tml_heap_armed = 0;
    budget_period(r);
    assert_int_equal(samples(r->mp, 0, s, 4), 2);
    f = s[0].predicted == 3 ? &s[0] : &s[1];
    b = s[0].predicted == 3 ? &s[1] : &s[0];
    assert_int_equal(f->predicted, 3);
    assert_int_equal(f->confidence_bp, 10000);
    assert_true(f->has_expected);
    assert_int_equal(f->expected, 1);
    assert_int_equal(f->dtype, TML_DTYPE_F32);
    assert_int_equal(f->n_shape, 2);
    assert_int_equal(f->shape[0], 2);
    assert_int_equal(f->shape[1], 4);
    assert_int_equal(f->rate_hz, 16000);
    assert_int_equal(f->reason, TML_REASON_FLAGGED);
    assert_int_equal(f->total_len, sizeof in);
    assert_memory_equal(f->data.p, in, sizeof in);
    assert_int_equal(b->predicted, 7);
    assert_int_equal(b->confidence_bp, 4321);
    assert_false(b->has_expected);
    assert_int_equal(b->expected, 0);
    assert_int_equal(b->dtype, TML_DTYPE_U8);
    assert_int_equal(b->n_shape, 1);
    assert_int_equal(b->shape[0], 5);
    assert_int_equal(b->rate_hz, 0);
    assert_int_equal(b->total_len, 5);
}

static void
test_sample_token_bucket_limits_each_period(void **state)
{
    struct rig *r = *state;
    struct tml_sample s[64];
    uint8_t in[8];
    size_t from;

    for (int p = 0; p < 5; p++) {
        from = r->mp->n_log;
        for (uint8_t i = 0; i < 10; i++) {
            in[0] = i;
            (void)capture(r, 100, in, sizeof in, TML_REASON_FLAGGED);
        }
        budget_period(r);
        assert_int_equal(samples(r->mp, from, s, 64), 2);
        ack_all(r);
    }
    assert_int_equal(tmla_stats(&r->a)->samples_dropped, 5 * 8);
    /* The drops are reported in the summaries. */
    rig_run(r, 1, r->cfg.summary_period_s * 1000u);
    {
        uint32_t dropped = 0, last_seq = 0;

        /* Summaries are resent until acked: count each seq once. */
        for (size_t i = 0; i < r->mp->n_log; i++)
            if (r->mp->log[i].kind == TML_KIND_TELE) {
                struct tml_tele t;

                assert_int_equal(tml_tele_decode(r->mp->log[i].payload,
                                                 r->mp->log[i].len, &t),
                                 TML_OK);
                if (t.seq > last_seq)
                    dropped += t.n_samples_dropped;
                if (t.seq > last_seq)
                    last_seq = t.seq;
            }
        assert_int_equal(dropped, 5 * 8);
    }
}

static void
test_sample_bucket_carries_unused_tokens_up_to_burst(void **state)
{
    struct rig *r = *state;
    struct tml_sample s[64];
    uint8_t in[8] = {0};
    size_t from;

    r->a.cfg.sample_burst = 4;
    budget_period(r); /* nothing captured: tokens 2 -> 4 */
    budget_period(r); /* capped at 4 */
    from = r->mp->n_log;
    for (int i = 0; i < 10; i++)
        (void)capture(r, 100, in, sizeof in, TML_REASON_FLAGGED);
    budget_period(r);
    assert_int_equal(samples(r->mp, from, s, 64), 4);
    ack_all(r);
    from = r->mp->n_log;
    for (int i = 0; i < 10; i++)
        (void)capture(r, 100, in, sizeof in, TML_REASON_FLAGGED);
    budget_period(r);
    assert_int_equal(samples(r->mp, from, s, 64), 2); /* spent: refill 2 */
}

static void
test_sample_reservoir_is_uniform(void **state)
{
    struct rig *r = *state;
    enum { N = 20, K = 4, PERIODS = 3000 };
    uint32_t kept[N] = {0};
    struct tml_sample s[8];
    double chi2 = 0, expect = (double)PERIODS * K / N;
    uint8_t in[8];

    r->a.cfg.sample_budget = K;
    r->a.cfg.sample_burst = K;
    r->mp->rng = 20261127u; /* fixed seed */
    budget_period(r);
    ack_all(r);
    for (int p = 0; p < PERIODS; p++) {
        size_t from = r->mp->n_log, n;

        for (uint8_t i = 0; i < N; i++) {
            memset(in, i, sizeof in);
            (void)capture(r, 100, in, sizeof in, TML_REASON_LOW_CONF);
        }
        budget_period(r);
        n = samples(r->mp, from, s, 8);
        assert_int_equal(n, K);
        for (size_t j = 0; j < n; j++)
            kept[s[j].data.p[0]]++;
        ack_all(r);
    }
    for (int i = 0; i < N; i++)
        chi2 += (kept[i] - expect) * (kept[i] - expect) / expect;
    /* 19 degrees of freedom: P(chi2 > 43.82) = 0.001. A sampler that kept
     * the first K, or the last K, scores in the thousands. */
    print_message("reservoir: chi2 = %.1f over %d positions (limit 43.8)\n",
                  chi2, N);
    assert_true(chi2 < 43.82);
}

static void
test_sample_large_input_chunked_to_message_size(void **state)
{
    struct rig *r = *state;
    struct tml_sample s[32];
    uint8_t in[1000], got[1000];
    size_t n, from = r->mp->n_log;

    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (uint8_t)(i * 7 + 3);
    r->a.cfg.max_payload = 200; /* a small transport */
    assert_int_equal(capture(r, 100, in, sizeof in, TML_REASON_FLAGGED),
                     TMLA_CAPTURE_KEPT);
    budget_period(r);
    n = samples(r->mp, from, s, 32);
    assert_true(n >= 1000 / 200 + 1);
    memset(got, 0, sizeof got);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(s[i].seq, s[0].seq + i);
        assert_int_equal(s[i].sample_id, s[0].seq);
        assert_int_equal(s[i].total_len, sizeof in);
        assert_true(s[i].offset + s[i].data.len <= sizeof in);
        memcpy(got + s[i].offset, s[i].data.p, s[i].data.len);
    }
    assert_memory_equal(got, in, sizeof in);
    for (size_t i = 0; i < r->mp->n_log; i++)
        if (r->mp->log[i].kind == TML_KIND_SAMPLE)
            assert_true(r->mp->log[i].len <= 200);
}

static void
test_sample_resent_until_acked(void **state)
{
    struct rig *r = *state;
    struct tml_sample s[32];
    uint8_t in[800]; /* more than two chunks */
    size_t n, n2, from;

    memset(in, 0x5a, sizeof in);
    (void)capture(r, 100, in, sizeof in, TML_REASON_FLAGGED);
    budget_period(r);
    n = samples(r->mp, 0, s, 32);
    assert_true(n >= 2);
    /* Ack the first chunk only; reconnect: the rest goes again. */
    tml_heap_armed = 1;
    (void)gw_ack(&r->a, false, 0, true, s[0].seq, r->now);
    tml_heap_armed = 0;
    tmla_on_disconnect(&r->a);
    from = r->mp->n_log;
    tmla_on_connect(&r->a, r->now);
    rig_run(r, 1, 10);
    n2 = samples(r->mp, from, s + n, 32 - n);
    assert_int_equal(n2, n - 1);
    assert_int_equal(s[n].seq, s[1].seq);
    ack_all(r);
    from = r->mp->n_log;
    rig_run(r, 1, r->cfg.ack_timeout_ms);
    assert_int_equal(samples(r->mp, from, s, 32), 0);
    /* Sample ids never repeat across reboots either. */
    rig_boot(r);
    (void)capture(r, 100, in, sizeof in, TML_REASON_FLAGGED);
    budget_period(r);
    assert_true(samples(r->mp, from, s + n, 1) == 1);
    assert_true(s[n].sample_id > s[0].seq);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, rig_teardown)
        T(test_sample_reasons_chosen_by_agent),
        T(test_sample_inference_fields_on_the_wire),
        T(test_sample_token_bucket_limits_each_period),
        T(test_sample_bucket_carries_unused_tokens_up_to_burst),
        T(test_sample_reservoir_is_uniform),
        T(test_sample_large_input_chunked_to_message_size),
        T(test_sample_resent_until_acked),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
