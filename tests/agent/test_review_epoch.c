/*
 * agent_review_epoch: review of the agent's numbering epoch (PROTOCOL.md 6,
 * issue 4, commit 80be031) on the in-memory port: when it is drawn, when it
 * becomes durable, a state record of an agent without epochs, acks naming
 * an epoch. All cases run in the default suite.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rig.h"


/* CRC-32 (IEEE, reflected) as the state record uses it: the test reads
 * the flash copies itself instead of trusting the agent's RAM. */
static uint32_t
ieee_crc32(const void *p, size_t len)
{
    const uint8_t *b = p;
    uint32_t c = 0xffffffffu;

    for (size_t i = 0; i < len; i++) {
        c ^= b[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1u) ? (c >> 1) ^ 0xedb88320u : c >> 1;
    }
    return ~c;
}

/* The record a reboot would use (highest generation with a good CRC), or
 * false if none. */
static bool
durable(const struct memport *mp, struct tmla__pstate *out)
{
    bool found = false;

    for (int c = 0; c < 2; c++) {
        struct tmla__pstate s;

        memcpy(&s, mp->state[c], sizeof s);
        if (s.magic != 0x544d4c41u ||
            s.crc != ieee_crc32(&s, offsetof(struct tmla__pstate, crc)))
            continue;
        if (!found || s.gen > out->gen)
            *out = s;
        found = true;
    }
    return found;
}

static void
seal(struct tmla__pstate *s)
{
    s->crc = ieee_crc32(s, offsetof(struct tmla__pstate, crc));
}

/* Epochs of the tele records and hellos published from log index from:
 * the last of each (0 if none); *n_tele counts tele messages. */
static void
published(const struct memport *mp, size_t from, uint32_t *tele_epoch,
          uint32_t *tele_seq, uint32_t *hello_epoch, size_t *n_tele)
{
    *tele_epoch = *tele_seq = *hello_epoch = 0;
    *n_tele = 0;
    for (size_t i = from; i < mp->n_log; i++) {
        const struct mp_msg *m = &mp->log[i];

        if (m->kind == TML_KIND_TELE) {
            struct tml_tele t;

            assert_int_equal(tml_tele_decode(m->payload, m->len, &t), TML_OK);
            *tele_epoch = t.epoch;
            *tele_seq = t.seq;
            (*n_tele)++;
        } else if (m->kind == TML_KIND_HELLO) {
            struct tml_hello h;

            assert_int_equal(tml_hello_decode(m->payload, m->len, &h), TML_OK);
            *hello_epoch = h.epoch;
        }
    }
}

static void
infer_and_close(struct rig *r)
{
    tmla_record(&r->a, 0, 9000, 1000);
    rig_run(r, 1, r->cfg.summary_period_s * 1000u);
}

/* The epoch is durable before the hello and before any number: the boot's
 * own state write carries it. Power lost between drawing it and that write
 * (the write torn): the hello may carry the drawn epoch, no record does
 * (no number is handed out without a durable reservation); the next boot
 * draws again, and every record published carries the epoch durable in
 * flash at that moment. */
static void
test_review_epoch_durable_before_any_record(void **state)
{
    struct rig *r = *state;
    struct tmla__pstate d;
    uint32_t te, ts, he;
    size_t n;

    /* setup booted from factory state: durable with the boot's write. */
    assert_true(durable(r->mp, &d));
    assert_true(r->a.ps.epoch != 0);
    assert_int_equal(d.epoch, r->a.ps.epoch);
    /* Wiped; the first boot's state write is torn by a power cut. */
    memset(r->mp->state, 0, sizeof r->mp->state);
    r->mp->stop_after = r->mp->ops + 1;
    size_t from = r->mp->n_log;
    rig_boot(r);
    assert_true(r->mp->dead);
    uint32_t e1 = r->a.ps.epoch;
    infer_and_close(r);
    published(r->mp, from, &te, &ts, &he, &n);
    assert_int_equal(n, 0);
    assert_false(durable(r->mp, &d));
    /* Power back: the numbering starts here, in a newly drawn epoch. */
    r->mp->stop_after = -1;
    r->mp->dead = false;
    from = r->mp->n_log;
    rig_boot(r);
    uint32_t e2 = r->a.ps.epoch;
    assert_true(e2 != 0);
    assert_true(durable(r->mp, &d));
    assert_int_equal(d.epoch, e2);
    infer_and_close(r);
    published(r->mp, from, &te, &ts, &he, &n);
    assert_true(n >= 1);
    assert_int_equal(he, e2);
    assert_int_equal(te, e2);
    assert_int_equal(ts, 1);
    assert_true(durable(r->mp, &d));
    assert_int_equal(d.epoch, e2);
    assert_true(d.seq_hi[0] >= ts);
    /* A torn write later (the next boot's) keeps the epoch. */
    r->mp->stop_after = r->mp->ops + 1;
    rig_boot(r);
    assert_true(r->mp->dead);
    r->mp->stop_after = -1;
    r->mp->dead = false;
    from = r->mp->n_log;
    rig_boot(r);
    assert_int_equal(r->a.ps.epoch, e2);
    infer_and_close(r);
    published(r->mp, from, &te, &ts, &he, &n);
    assert_int_equal(he, e2);
    assert_int_equal(te, e2);
    print_message("epoch %u (never durable) -> %u (durable with seq_hi %u)\n",
                  e1, e2, d.seq_hi[0]);
}

/* A state record written by an agent without epochs (the pad bytes, now
 * pad + epoch, are 0): the updated agent keeps the old numbering (its first
 * number is above the old seq_hi), draws an epoch once, and keeps it across
 * reboots; the layout is unchanged (a record of the old layout is read with
 * every other field as it was). */
static void
test_review_epoch_old_agent_record_keeps_numbering(void **state)
{
    struct rig *r = *state;
    struct tmla__pstate s;
    uint32_t te, ts, he;
    size_t n;

    assert_int_equal(offsetof(struct tmla__pstate, pad), 49);
    assert_int_equal(offsetof(struct tmla__pstate, epoch), 50);
    assert_int_equal(offsetof(struct tmla__pstate, slot), 52);
    infer_and_close(r);
    assert_true(durable(r->mp, &s));
    /* Rewrite both copies as the older agent left them. */
    s.epoch = 0;
    s.pad = 0;
    s.seq_hi[0] = 500;
    s.boot_count = 9;
    s.gen = 40;
    seal(&s);
    memcpy(r->mp->state[0], &s, sizeof s);
    s.gen = 39;
    s.seq_hi[0] = 400;
    seal(&s);
    memcpy(r->mp->state[1], &s, sizeof s);
    size_t from = r->mp->n_log;
    rig_boot(r);
    uint32_t e = r->a.ps.epoch;
    assert_true(e != 0);
    assert_int_equal(r->a.ps.boot_count, 10);
    assert_int_equal(r->a.tele_next, 501);
    infer_and_close(r);
    published(r->mp, from, &te, &ts, &he, &n);
    assert_int_equal(he, e);
    assert_int_equal(te, e);
    assert_int_equal(ts, 501);
    assert_true(durable(r->mp, &s));
    assert_int_equal(s.epoch, e);
    rig_boot(r);
    assert_int_equal(r->a.ps.epoch, e);
}

/* Acks: one whose epoch differs from the device's only above its 16 bits
 * frees nothing (the comparison is not truncated); one without an epoch
 * (an older tmld) or of the device's epoch frees. */
static void
test_review_epoch_ack_epoch_compared_in_32_bits(void **state)
{
    struct rig *r = *state;
    uint8_t buf[64];
    size_t n;

    infer_and_close(r);
    assert_true(r->a.ring_n >= 1);
    struct tml_ack k = {.has_tele = true,
                        .tele_seq = r->a.tele_next - 1,
                        .epoch = 0x10000u | r->a.ps.epoch};
    assert_int_equal(tml_ack_encode(&k, buf, sizeof buf, &n), TML_OK);
    assert_int_equal(gw_send(&r->a, TML_KIND_ACK, buf, n, r->now), TML_OK);
    assert_true(r->a.ring_n >= 1);
    assert_int_equal(tmla_stats(&r->a)->acks_other_epoch, 1);
    k.epoch = r->a.ps.epoch;
    assert_int_equal(tml_ack_encode(&k, buf, sizeof buf, &n), TML_OK);
    assert_int_equal(gw_send(&r->a, TML_KIND_ACK, buf, n, r->now), TML_OK);
    assert_int_equal(r->a.ring_n, 0);
}

/* Sample chunks carry the epoch too, so a gateway can tell two lives'
 * samples apart: after a wipe the new life's first sample has the same
 * sample_id (its first chunk's seq, 1) as the old life's first, and only
 * the epoch differs (tmld_review_epoch samples_of_two_lives_merge shows
 * tmld does not keep it). */
static void
test_review_epoch_samples_carry_epoch_across_wipe(void **state)
{
    struct rig *r = *state;
    uint8_t in[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    struct tmla_inference inf = {.predicted = 2,
                                 .confidence_bp = 1000,
                                 .dtype = TML_DTYPE_U8,
                                 .n_shape = 1};
    uint32_t ids[2], epochs[2];

    inf.shape[0] = sizeof in;
    for (int life = 0; life < 2; life++) {
        size_t from = r->mp->n_log;
        bool found = false;

        assert_int_equal(tmla_capture(&r->a, &inf, in, sizeof in,
                                      TML_REASON_FLAGGED, r->now),
                         TMLA_CAPTURE_KEPT);
        rig_run(r, 1, r->cfg.budget_period_s * 1000u);
        for (size_t i = from; i < r->mp->n_log && !found; i++) {
            struct tml_sample m;

            if (r->mp->log[i].kind != TML_KIND_SAMPLE)
                continue;
            assert_int_equal(
                tml_sample_decode(r->mp->log[i].payload, r->mp->log[i].len, &m),
                TML_OK);
            ids[life] = m.sample_id;
            epochs[life] = m.epoch;
            found = true;
        }
        assert_true(found);
        assert_int_equal(epochs[life], r->a.ps.epoch);
        /* Wiped (the port's random goes on: a different epoch). */
        memset(r->mp->state, 0, sizeof r->mp->state);
        rig_boot(r);
    }
    assert_int_equal(ids[0], ids[1]);
    assert_true(epochs[0] != epochs[1]);
}

/* The port contract (agent_port.h) requires a random() whose sequence
 * differs between boots: with a PRNG seeded the same at every boot and no
 * clock, a wiped device draws the same epoch and boot_id again and no
 * gateway can tell its new life from its old one. That is a port bug, not
 * the agent's; the rig's port goes on with its sequence (test above). */

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, rig_setup_booted, rig_teardown)
        T(test_review_epoch_durable_before_any_record),
        T(test_review_epoch_old_agent_record_keeps_numbering),
        T(test_review_epoch_ack_epoch_compared_in_32_bits),
        T(test_review_epoch_samples_carry_epoch_across_wipe),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
