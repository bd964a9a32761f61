/*
 * test_ota.c: the OTA receiver against real ES256 signatures (mbedTLS) and
 * the in-memory flash: the happy path and every refusal the device must
 * make on its own (TEST-CATALOGUE S1-S12), trial, golden vectors, revert.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "rig.h"


static bool
slot_erased(const struct memport *mp, uint8_t slot)
{
    for (uint32_t i = 0; i < MP_SLOT_SIZE; i++)
        if (mp->flash[slot][i] != 0xff)
            return false;
    return true;
}

/* Offers r's manifest and expects a refusal with reason, nothing written. */
static void
expect_refused(struct rig *r, uint8_t reason)
{
    uint8_t state, before;
    uint32_t flash_ops = tmla_stats(&r->a)->flash_ops;

    tmla_ota_status(&r->a, &before, NULL, NULL);

    r->offer_id++;
    tml_heap_armed = 1;
    assert_int_equal(gw_offer(&r->a, r->offer_id, r->cose, r->cose_len, r->now),
                     TML_OK);
    tml_heap_armed = 0;
    assert_int_equal(rig_last_reason(r), reason);
    tmla_ota_status(&r->a, &state, NULL, NULL);
    if (before == TML_OTA_DOWNLOADING) /* BUSY: the download goes on */
        assert_int_equal(state, TML_OTA_DOWNLOADING);
    else
        assert_int_not_equal(state, TML_OTA_DOWNLOADING);
    assert_int_equal(tmla_stats(&r->a)->flash_ops, flash_ops);
    rig_run(r, 5, 100);
    assert_int_equal(tmla_stats(&r->a)->flash_ops, flash_ops);
}

static void
test_ota_happy_path_reports_every_transition(void **state)
{
    struct rig *r = *state;
    const struct tmla_model *m;
    /* OFFERED and DOWNLOADING: the chunk requests say them. */
    static const uint8_t want[] = {TML_OTA_VERIFYING, TML_OTA_READY,
                                   TML_OTA_ACTIVATING, TML_OTA_TRIAL,
                                   TML_OTA_CONFIRMED};
    size_t k = 0, n_req = 0, n_status = 0;

    rig_model(r, 3, 40000, 3, &r->k1);
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_TRIAL);
    assert_true(tmla_in_trial(&r->a));
    assert_int_equal(r->mp->n_infer, 3); /* golden vectors ran */
    assert_int_equal(tmla_confirm_model(&r->a), TML_OK);
    m = tmla_active_model(&r->a);
    assert_non_null(m);
    assert_int_equal(m->version, 3);
    assert_string_equal(m->name, "kws");
    assert_true(mp_slot_matches(r->mp, m->slot, m->size, r->man.sha256));
    assert_true(r->mp->has_loaded);
    assert_int_equal(r->mp->loaded.version, 3);
    assert_int_equal(r->mp->violations, 0);
    /* Every transition was reported on up/ota, in order, at QoS 1; the
     * chunk requests went at QoS 0 (PROTOCOL.md section 8.2). */
    for (size_t i = 0; i < r->mp->n_log; i++) {
        struct tml_ota_up u;

        if (r->mp->log[i].kind != TML_KIND_OTA)
            continue;
        assert_int_equal(tml_ota_up_decode(r->mp->log[i].payload,
                                           r->mp->log[i].len, &u),
                         TML_OK);
        assert_int_equal(r->mp->log[i].qos,
                         u.kind == TML_OTA_UP_REQUEST ? 0 : 1);
        n_req += u.kind == TML_OTA_UP_REQUEST;
        /* The first message after the offer is its first request, for
         * this offer (the gateway's DOWNLOADING), no status before it. */
        if (n_req + n_status == 1 || u.kind == TML_OTA_UP_REQUEST)
            assert_int_equal(u.offer_id, r->offer_id);
        assert_true(n_req > 0 || u.kind == TML_OTA_UP_REQUEST);
        if (u.kind != TML_OTA_UP_STATUS)
            continue;
        n_status++;
        /* States entered back to back share a status: the ones passed
         * (bits, in order), then the one it is in. */
        for (uint8_t st = 0; st < u.state; st++)
            if ((u.passed >> st) & 1u) {
                assert_true(k < sizeof want);
                assert_int_equal(st, want[k]);
                k++;
            }
        assert_true(k < sizeof want);
        assert_int_equal(u.state, want[k]);
        k++;
    }
    assert_int_equal(k, sizeof want);
    assert_true(n_req > 0);
    /* verifying, ready (the application is asked in a later poll), trial
     * (passed: activating), confirmed */
    assert_int_equal(n_status, 4);
    /* Flash wear budget: <= 8 + size / 16 KiB state writes per update. */
    print_message("state writes for a %zu-byte update: %u (budget %zu)\n",
                  r->len, tmla_stats(&r->a)->update_state_writes,
                  8 + r->len / 16384);
    assert_true(tmla_stats(&r->a)->update_state_writes <= 8 + r->len / 16384);
    /* The next update goes to the other slot; the old model stays. */
    rig_install(r, 4, &r->k1);
    assert_int_equal(tmla_active_model(&r->a)->slot, m->slot ^ 1);
}

static void
test_ota_s1_unknown_key_rejected_before_any_byte(void **state)
{
    struct rig *r = *state;

    rig_model(r, 3, 8000, 0, &r->k3);
    expect_refused(r, TML_OTA_R_UNKNOWN_KEY);
    assert_true(slot_erased(r->mp, 0));
    assert_true(slot_erased(r->mp, 1));
    assert_int_equal(mp_count(r->mp, TML_KIND_OTA), 1); /* status only */
}

static void
test_ota_s1_trusted_kid_wrong_key_bad_signature(void **state)
{
    struct rig *r = *state;
    struct tkey forged = r->k3;

    /* The attacker claims k1's key id but signs with its own key. */
    memcpy(forged.kid, r->k1.kid, r->k1.kid_len);
    forged.kid_len = r->k1.kid_len;
    rig_model(r, 3, 8000, 0, &forged);
    expect_refused(r, TML_OTA_R_BAD_SIGNATURE);
    assert_true(slot_erased(r->mp, 0));
}

static void
test_ota_s2_every_flipped_byte_rejected(void **state)
{
    struct rig *r = *state;
    uint8_t good[TML_MAX_MANIFEST];
    size_t n, rejected = 0;

    rig_model(r, 3, 8000, 0, &r->k1);
    memcpy(good, r->cose, r->cose_len);
    n = r->cose_len;
    for (size_t i = 0; i < n; i++) {
        uint8_t st;

        memcpy(r->cose, good, n);
        r->cose[i] ^= 0x01;
        r->offer_id++;
        tml_heap_armed = 1;
        (void)gw_offer(&r->a, r->offer_id, r->cose, n, r->now);
        tml_heap_armed = 0;
        tmla_ota_status(&r->a, &st, NULL, NULL);
        rejected += st != TML_OTA_DOWNLOADING;
        assert_int_not_equal(st, TML_OTA_DOWNLOADING);
    }
    print_message("S2: %zu/%zu flipped manifests rejected\n", rejected, n);
    assert_int_equal(rejected, n);
    assert_true(slot_erased(r->mp, 0));
    /* The untouched manifest is still accepted. */
    memcpy(r->cose, good, n);
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_TRIAL);
}

static void
flip_one(uint32_t offset, uint8_t *data, size_t *len)
{
    if (offset == 2048)
        data[*len / 2] ^= 0x80;
}

static void
test_ota_s3_tampered_chunk_fails_hash(void **state)
{
    struct rig *r = *state;
    uint8_t st, reason;

    rig_model(r, 3, 8000, 0, &r->k1);
    st = rig_offer_and_serve(r, flip_one);
    tmla_ota_status(&r->a, NULL, &reason, NULL);
    assert_int_equal(st, TML_OTA_FAILED);
    assert_int_equal(reason, TML_OTA_R_BAD_HASH);
    assert_null(tmla_active_model(&r->a));
    assert_int_equal(r->mp->n_activate, 0);
}

static void
add_one(uint32_t offset, uint8_t *data, size_t *len)
{
    (void)offset;
    if (*len < 1024) /* the last chunk: one byte too many */
        data[(*len)++] = 0x42;
}

static void
test_ota_s3_extra_byte_never_activates(void **state)
{
    struct rig *r = *state;
    uint8_t st;

    rig_model(r, 3, 8100, 0, &r->k1);
    st = rig_offer_and_serve(r, add_one);
    assert_int_equal(st, TML_OTA_DOWNLOADING);
    assert_true(tmla_stats(&r->a)->chunks_rejected > 0);
    assert_int_equal(r->mp->n_activate, 0);
    assert_null(tmla_active_model(&r->a));
}

static void
test_ota_s4_s5_rollback_and_replay_refused(void **state)
{
    struct rig *r = *state;

    rig_install(r, 5, &r->k1);
    rig_model(r, 3, 8000, 0, &r->k1);
    expect_refused(r, TML_OTA_R_ROLLBACK);
    rig_model(r, 5, 20000, 3, &r->k1);
    expect_refused(r, TML_OTA_R_ALREADY_INSTALLED); /* S5 */
    rig_boot(r);                                    /* reboot */
    rig_model(r, 4, 8000, 0, &r->k1);
    expect_refused(r, TML_OTA_R_ROLLBACK);
    /* A failed install of v7 still raises the floor to 7. */
    rig_model(r, 7, 8000, 0, &r->k1);
    assert_int_equal(rig_offer_and_serve(r, flip_one), TML_OTA_FAILED);
    rig_model(r, 6, 8000, 0, &r->k1);
    expect_refused(r, TML_OTA_R_ROLLBACK);
    assert_int_equal(tmla_active_model(&r->a)->version, 5);
    /* v7 itself may come again (same version, now intact). */
    rig_model(r, 7, 8000, 0, &r->k1);
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_TRIAL);
}

static void
test_ota_s6_expired_manifest_refused(void **state)
{
    struct rig *r = *state;

    r->mp->unix_now = 1800000000u;
    rig_model(r, 3, 8000, 0, &r->k1);
    r->man.expires = 1750000000u;
    rig_sign(r, &r->k1);
    expect_refused(r, TML_OTA_R_EXPIRED);
    /* Without a clock the agent compares with the newest verified
     * "created": after installing a manifest created later, the old
     * expired one is refused too. */
    r->mp->unix_now = 0;
    rig_model(r, 4, 8000, 0, &r->k1);
    r->man.created = 1760000000u;
    rig_sign(r, &r->k1);
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_TRIAL);
    assert_int_equal(tmla_confirm_model(&r->a), TML_OK);
    rig_model(r, 5, 8000, 0, &r->k1);
    r->man.expires = 1750000000u;
    rig_sign(r, &r->k1);
    expect_refused(r, TML_OTA_R_EXPIRED);
}

static void
test_ota_s7_chunks_of_another_offer_ignored(void **state)
{
    struct rig *r = *state;
    uint8_t other[4096];
    uint8_t st;

    memset(other, 0x66, sizeof other);
    rig_model(r, 3, 8000, 0, &r->k1);
    r->offer_id++;
    tml_heap_armed = 1;
    assert_int_equal(gw_offer(&r->a, r->offer_id, r->cose, r->cose_len, r->now),
                     TML_OK);
    /* Another offer's chunks at the very offsets requested. */
    for (uint32_t off = 0; off < 4096; off += 1024)
        (void)gw_chunk(&r->a, 999, off, other + off, 1024, r->now);
    tml_heap_armed = 0;
    assert_int_equal(tmla_stats(&r->a)->chunks_rejected, 4);
    assert_int_equal(rig_last_reason(r), TML_OTA_R_WRONG_OFFER);
    tmla_ota_status(&r->a, &st, NULL, NULL);
    assert_int_equal(st, TML_OTA_DOWNLOADING);
    r->offer_id--; /* serve the real offer */
    r->mp->seen = 0;
    tml_heap_armed = 1;
    (void)gw_serve(r->mp, &r->a, r->offer_id + 1, r->image, r->len, 1024, NULL,
                   &r->now, 10, 400);
    tml_heap_armed = 0;
    rig_run(r, 3, 10);
    tmla_ota_status(&r->a, &st, NULL, NULL);
    assert_int_equal(st, TML_OTA_TRIAL);
    assert_true(mp_slot_matches(r->mp, 0, (uint32_t)r->len, r->man.sha256));
}

static void
test_ota_s8_incompatible_manifests_refused(void **state)
{
    struct rig *r = *state;

    rig_model(r, 3, 8000, 0, &r->k1);
    r->man.hw.p = "other-hw";
    r->man.hw.len = 8;
    rig_sign(r, &r->k1);
    expect_refused(r, TML_OTA_R_WRONG_HW);

    rig_model(r, 3, 8000, 0, &r->k1);
    r->man.arena_size = r->cfg.arena_size + 1;
    rig_sign(r, &r->k1);
    expect_refused(r, TML_OTA_R_ARENA);

    rig_model(r, 3, 8000, 0, &r->k1);
    r->man.min_agent_version = TMLA_AGENT_VERSION + 1;
    rig_sign(r, &r->k1);
    expect_refused(r, TML_OTA_R_AGENT_TOO_OLD);

    /* A bigger image than the slot: only the manifest says so. */
    rig_model(r, 3, 8000, 0, &r->k1);
    r->man.size = r->man.model_size = MP_SLOT_SIZE + 8;
    rig_sign(r, &r->k1);
    expect_refused(r, TML_OTA_R_TOO_LARGE);
}

static void
test_ota_s8_input_shape_and_labels_checked(void **state)
{
    struct rig *r = *state;

    r->cfg.input_dtype = TML_DTYPE_I8;
    r->cfg.n_input_shape = 2;
    r->cfg.input_shape[0] = 49;
    r->cfg.input_shape[1] = 10;
    r->cfg.max_labels = 4;
    rig_boot(r);
    rig_model(r, 3, 8000, 0, &r->k1);
    r->man.input_shape[1] = 13;
    rig_sign(r, &r->k1);
    expect_refused(r, TML_OTA_R_INPUT_SHAPE);
    rig_model(r, 3, 8000, 0, &r->k1);
    r->man.n_labels = 5;
    rig_sign(r, &r->k1);
    expect_refused(r, TML_OTA_R_INPUT_SHAPE);
    rig_model(r, 3, 8000, 0, &r->k1);
    r->man.dtype = TML_DTYPE_F32;
    rig_sign(r, &r->k1);
    expect_refused(r, TML_OTA_R_INPUT_SHAPE);
    rig_model(r, 3, 8000, 0, &r->k1);
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_TRIAL);
}

static void
test_ota_s9_chunks_outside_the_image_dropped(void **state)
{
    struct rig *r = *state;
    uint8_t junk[1024], mark[16], erased[16];
    uint8_t st;

    memset(junk, 0x11, sizeof junk);
    rig_model(r, 3, 3000, 0, &r->k1);
    r->offer_id++;
    tml_heap_armed = 1;
    assert_int_equal(gw_offer(&r->a, r->offer_id, r->cose, r->cose_len, r->now),
                     TML_OK);
    (void)gw_chunk(&r->a, r->offer_id, 3000, junk, 16, r->now); /* at end */
    (void)gw_chunk(&r->a, r->offer_id, 0xfffffff0u, junk, 64, r->now);
    (void)gw_chunk(&r->a, r->offer_id, 2048, junk, 1024, r->now); /* ahead */
    (void)gw_chunk(&r->a, r->offer_id, 0, r->image, 1024, r->now);
    (void)gw_chunk(&r->a, r->offer_id, 0, r->image, 1024, r->now); /* dup */
    (void)gw_chunk(&r->a, r->offer_id, 1024, r->image + 1024, 1024, r->now);
    (void)gw_chunk(&r->a, r->offer_id, 2048, r->image + 2048, 1024, r->now);
    tml_heap_armed = 0;
    /* 952 bytes were left: a 1024-byte chunk ran past the end. */
    assert_int_equal(tmla_stats(&r->a)->chunks_rejected, 5);
    tmla_ota_status(&r->a, &st, NULL, NULL);
    assert_int_equal(st, TML_OTA_DOWNLOADING);
    assert_int_equal(r->mp->violations, 0);
    /* Past the image's page only the progress marks may be written, never
     * chunk data: 16-byte units, erased or the offer id (device byte
     * order), a 0x00 byte, then erased bytes (the header, one mark per
     * chunk in flash). */
    memset(erased, 0xff, sizeof erased);
    memcpy(mark, erased, sizeof mark);
    memcpy(mark, &r->offer_id, sizeof r->offer_id);
    mark[sizeof r->offer_id] = 0; /* never all 0xff, whatever the id */
    for (uint32_t i = 4096; i < MP_SLOT_SIZE; i += sizeof mark)
        assert_true(memcmp(&r->mp->flash[0][i], erased, sizeof erased) == 0 ||
                    memcmp(&r->mp->flash[0][i], mark, sizeof mark) == 0);
    assert_memory_equal(&r->mp->flash[0][4096], mark, sizeof mark);
    tml_heap_armed = 1;
    (void)gw_chunk(&r->a, r->offer_id, 2048, r->image + 2048, 952, r->now);
    tml_heap_armed = 0;
    rig_run(r, 3, 10);
    tmla_ota_status(&r->a, &st, NULL, NULL);
    assert_int_equal(st, TML_OTA_TRIAL);
}

static void
test_ota_s10_slow_retrieval_aborts(void **state)
{
    struct rig *r = *state;
    uint8_t st, reason;
    unsigned rounds = 0;

    rig_install(r, 2, &r->k1);
    rig_model(r, 3, 30000, 0, &r->k1);
    r->offer_id++;
    r->mp->seen = r->mp->n_log;
    tml_heap_armed = 1;
    assert_int_equal(gw_offer(&r->a, r->offer_id, r->cose, r->cose_len, r->now),
                     TML_OK);
    tml_heap_armed = 0;
    /* One 512-byte chunk a minute: 8.5 B/s, well under the 64 B/s floor,
     * but enough to beat every per-request timeout. */
    for (uint32_t off = 0; off < r->len && rounds < 100; off += 512, rounds++) {
        tmla_ota_status(&r->a, &st, NULL, NULL);
        if (st != TML_OTA_DOWNLOADING)
            break;
        tml_heap_armed = 1;
        (void)gw_chunk(&r->a, r->offer_id, off, r->image + off, 512, r->now);
        tml_heap_armed = 0;
        rig_run(r, 6, 10000);
    }
    tmla_ota_status(&r->a, &st, &reason, NULL);
    assert_int_equal(st, TML_OTA_FAILED);
    assert_int_equal(reason, TML_OTA_R_SLOW);
    print_message("S10: slow retrieval detected after %u minutes\n", rounds);
    assert_true(rounds <= 3);
    assert_int_equal(tmla_active_model(&r->a)->version, 2);
}

static void
test_ota_s11_reboot_mid_download_resumes(void **state)
{
    struct rig *r = *state;
    uint32_t off_before, off_after;
    uint8_t st;

    rig_model(r, 3, 50000, 3, &r->k1);
    r->offer_id++;
    r->mp->seen = r->mp->n_log;
    tml_heap_armed = 1;
    (void)gw_offer(&r->a, r->offer_id, r->cose, r->cose_len, r->now);
    for (uint32_t off = 0; off < 26624; off += 1024)
        (void)gw_chunk(&r->a, r->offer_id, off, r->image + off, 1024, r->now);
    tml_heap_armed = 0;
    tmla_ota_status(&r->a, NULL, NULL, &off_before);
    assert_int_equal(off_before, 26624);
    rig_boot(r); /* reboot */
    tmla_ota_status(&r->a, &st, NULL, &off_after);
    assert_int_equal(st, TML_OTA_DOWNLOADING);
    print_message("S11: resumed at %u of %u after a reboot at %u\n", off_after,
                  (unsigned)r->len, off_before);
    assert_true(off_before - off_after <= TMLA_OTA_CHECKPOINT);
    assert_true(off_before - off_after <= 8192); /* 50 KB: 8 KiB interval */
    assert_true(off_after > 0);
    r->mp->seen = 0;
    tml_heap_armed = 1;
    (void)gw_serve(r->mp, &r->a, r->offer_id, r->image, r->len, 1024, NULL,
                   &r->now, 10, 400);
    tml_heap_armed = 0;
    rig_run(r, 3, 10);
    tmla_ota_status(&r->a, &st, NULL, NULL);
    assert_int_equal(st, TML_OTA_TRIAL);
    assert_int_equal(r->mp->violations, 0);
}


/* Issue 5 / S11: a reboot at any chunk of a 50 KB download resumes less
 * than 2 chunks back (progress marks after the image; no state writes
 * beyond the checkpoints), twice in the same download too, and the model
 * still verifies. Counts the bytes the gateway must send again. */
static void
test_ota_s11_reboot_at_every_chunk_resends_under_two_chunks(void **state)
{
    uint32_t max_resent = 0, total_resent = 0, n = 0;

    (void)state;
    for (uint32_t k = 1; k * 1024u < 50000u; k += 3) {
        struct rig *r = rig_new();
        uint32_t off_before, off_after, second;
        uint8_t st;

        rig_boot(r);
        rig_model(r, 3, 50000, 3, &r->k1);
        r->offer_id++;
        (void)gw_offer(&r->a, r->offer_id, r->cose, r->cose_len, r->now);
        for (uint32_t off = 0; off < k * 1024u; off += 1024)
            (void)gw_chunk(&r->a, r->offer_id, off, r->image + off, 1024,
                           r->now);
        tmla_ota_status(&r->a, NULL, NULL, &off_before);
        assert_int_equal(off_before, k * 1024u);
        rig_boot(r); /* reboot */
        rig_run(r, 1, 10);
        tmla_ota_status(&r->a, &st, NULL, &off_after);
        assert_int_equal(st, TML_OTA_DOWNLOADING);
        assert_true(off_after <= off_before);
        max_resent = off_before - off_after > max_resent
                         ? off_before - off_after
                         : max_resent;
        total_resent += off_before - off_after;
        n++;
        assert_true(off_before - off_after < 2 * 1024u);
        /* A second reboot, a few chunks later. */
        second = off_after + 3 * 1024u < 50000u ? off_after + 3 * 1024u
                                                : off_after;
        for (uint32_t off = off_after; off + 1024u <= second; off += 1024)
            (void)gw_chunk(&r->a, r->offer_id, off, r->image + off, 1024,
                           r->now);
        tmla_ota_status(&r->a, NULL, NULL, &off_before);
        rig_boot(r);
        rig_run(r, 1, 10);
        tmla_ota_status(&r->a, &st, NULL, &off_after);
        assert_int_equal(st, TML_OTA_DOWNLOADING);
        assert_true(off_before - off_after < 2 * 1024u);
        total_resent += off_before - off_after;
        n++;
        (void)gw_serve(r->mp, &r->a, r->offer_id, r->image, r->len, 1024,
                       NULL, &r->now, 10, 400);
        rig_run(r, 3, 10);
        tmla_ota_status(&r->a, &st, NULL, NULL);
        assert_int_equal(st, TML_OTA_TRIAL);
        assert_int_equal(r->mp->violations, 0);
        assert_int_equal(tmla_stats(&r->a)->update_state_writes <= 10, 1);
        rig_free(r);
    }
    print_message("S11: %u reboots mid-download: re-sent max %u bytes, mean "
                  "%u bytes (chunk 1024)\n",
                  n, max_resent, total_resent / n);
}

static void
test_ota_s12_rotation_revocation_and_fast_forward_recovery(void **state)
{
    struct rig *r = *state;

    rig_install(r, 1, &r->k1);
    /* k2 revokes k1. */
    rig_model(r, 2, 20000, 3, &r->k2);
    r->man.n_revoke = 1;
    r->man.revoke_kids[0].p = r->k1.kid;
    r->man.revoke_kids[0].len = r->k1.kid_len;
    rig_sign(r, &r->k2);
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_TRIAL);
    assert_int_equal(tmla_confirm_model(&r->a), TML_OK);
    /* A k1-signed manifest is refused from now on, also after a reboot. */
    rig_model(r, 9, 8000, 0, &r->k1);
    expect_refused(r, TML_OTA_R_REVOKED_KEY);
    rig_boot(r);
    expect_refused(r, TML_OTA_R_REVOKED_KEY);
    /* k2 cannot revoke itself. */
    rig_model(r, 3, 20000, 3, &r->k2);
    r->man.n_revoke = 1;
    r->man.revoke_kids[0].p = r->k2.kid;
    r->man.revoke_kids[0].len = r->k2.kid_len;
    rig_sign(r, &r->k2);
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_TRIAL);
    assert_int_equal(tmla_confirm_model(&r->a), TML_OK);
    rig_model(r, 4, 20000, 3, &r->k2);
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_TRIAL);
    assert_int_equal(tmla_confirm_model(&r->a), TML_OK);
}

static void
test_ota_s12_fast_forward_recovered_by_rotation(void **state)
{
    struct rig *r = *state;

    /* The stolen k1 pushes version 2^32-1: the floor is at its maximum. */
    rig_install(r, 0xffffffffu, &r->k1);
    rig_model(r, 2, 8000, 0, &r->k2);
    expect_refused(r, TML_OTA_R_ROLLBACK);
    /* Without revoking the other key, resets_floor is ignored. */
    r->man.resets_floor = true;
    rig_sign(r, &r->k2);
    expect_refused(r, TML_OTA_R_ROLLBACK);
    /* Rotation: k2 revokes k1 and resets the floor to its version. */
    rig_model(r, 2, 20000, 3, &r->k2);
    r->man.resets_floor = true;
    r->man.n_revoke = 1;
    r->man.revoke_kids[0].p = r->k1.kid;
    r->man.revoke_kids[0].len = r->k1.kid_len;
    rig_sign(r, &r->k2);
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_TRIAL);
    assert_int_equal(tmla_confirm_model(&r->a), TML_OK);
    assert_int_equal(tmla_active_model(&r->a)->version, 2);
    rig_model(r, 1, 8000, 0, &r->k2);
    expect_refused(r, TML_OTA_R_ROLLBACK);
    /* A replay of the recovery manifest after a later update resets
     * nothing: k1 is already revoked, so it is a plain downgrade. */
    {
        uint8_t rec[TML_MAX_MANIFEST];
        size_t rec_len;

        rig_model(r, 2, 20000, 3, &r->k2);
        r->man.resets_floor = true;
        r->man.n_revoke = 1;
        r->man.revoke_kids[0].p = r->k1.kid;
        r->man.revoke_kids[0].len = r->k1.kid_len;
        rig_sign(r, &r->k2);
        memcpy(rec, r->cose, r->cose_len);
        rec_len = r->cose_len;
        rig_install(r, 3, &r->k2);
        memcpy(r->cose, rec, rec_len);
        r->cose_len = rec_len;
        expect_refused(r, TML_OTA_R_ROLLBACK);
        assert_int_equal(tmla_active_model(&r->a)->version, 3);
    }
}

static void
test_ota_failed_golden_vectors_revert(void **state)
{
    struct rig *r = *state;
    uint8_t st, reason;

    rig_install(r, 1, &r->k1);
    r->mp->model_broken = true;
    rig_model(r, 2, 20000, 3, &r->k1);
    st = rig_offer_and_serve(r, NULL);
    tmla_ota_status(&r->a, NULL, &reason, NULL);
    assert_int_equal(st, TML_OTA_REVERTED);
    assert_int_equal(reason, TML_OTA_R_SELFTEST);
    assert_int_equal(tmla_active_model(&r->a)->version, 1);
    assert_int_equal(r->mp->loaded.version, 1); /* the app went back */
    assert_int_equal(tmla_confirm_model(&r->a), TML_ERR_INVAL);
    rig_boot(r);
    assert_int_equal(tmla_active_model(&r->a)->version, 1);
}

static void
test_ota_trial_never_confirmed_reverts(void **state)
{
    struct rig *r = *state;
    uint8_t st, reason;

    rig_install(r, 1, &r->k1);
    rig_model(r, 2, 20000, 3, &r->k1);
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_TRIAL);
    rig_run(r, 10, r->cfg.confirm_timeout_ms / 10 + 1);
    tmla_ota_status(&r->a, &st, &reason, NULL);
    assert_int_equal(st, TML_OTA_REVERTED);
    assert_int_equal(reason, TML_OTA_R_TRIAL_TIMEOUT);
    assert_int_equal(tmla_active_model(&r->a)->version, 1);
    assert_int_equal(r->mp->loaded.version, 1);
}

static void
test_ota_trial_reboot_loop_reverts_at_boot(void **state)
{
    struct rig *r = *state;
    uint8_t st;

    rig_install(r, 1, &r->k1);
    rig_model(r, 2, 20000, 3, &r->k1);
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_TRIAL);
    /* The new model crashes the device before confirm, again and again. */
    for (unsigned i = 0; i < r->cfg.trial_max_boots; i++) {
        rig_boot(r);
        assert_int_equal(tmla_active_model(&r->a)->version, 2);
        assert_true(tmla_in_trial(&r->a));
    }
    rig_boot(r);
    tmla_ota_status(&r->a, &st, NULL, NULL);
    assert_int_equal(st, TML_OTA_REVERTED);
    assert_false(tmla_in_trial(&r->a));
    assert_int_equal(tmla_active_model(&r->a)->version, 1);
    assert_int_equal(rig_last_reason(r), TML_OTA_R_TRIAL_TIMEOUT);
}

/* S15 at a boot-loop revert: the old model rotted in flash while the new
 * one was in trial. Going back to it would load a broken model; the agent
 * checks its hash and ends with no model instead (REVERTED, the reason the
 * trial ended). */
static void
test_ota_trial_reboot_loop_does_not_revert_to_a_rotten_model(void **state)
{
    struct rig *r = *state;
    uint8_t st, old_slot;

    rig_install(r, 1, &r->k1);
    old_slot = tmla_active_model(&r->a)->slot;
    rig_model(r, 2, 20000, 3, &r->k1);
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_TRIAL);
    r->mp->flash[old_slot][100] ^= 0x04; /* bit rot in the old model */
    for (unsigned i = 0; i <= r->cfg.trial_max_boots; i++)
        rig_boot(r);
    tmla_ota_status(&r->a, &st, NULL, NULL);
    assert_int_equal(st, TML_OTA_REVERTED);
    assert_int_equal(rig_last_reason(r), TML_OTA_R_TRIAL_TIMEOUT);
    assert_false(tmla_in_trial(&r->a));
    assert_null(tmla_active_model(&r->a));
    /* The device still takes a fresh install. */
    rig_install(r, 3, &r->k1);
    assert_int_equal(tmla_active_model(&r->a)->version, 3);
}

static void
test_ota_application_defers_activation(void **state)
{
    struct rig *r = *state;
    struct tml_ota_up u;
    uint8_t st;

    r->mp->activate_rc = TMLA_PORT_AGAIN;
    rig_model(r, 2, 8000, 0, &r->k1);
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_READY);
    rig_run(r, 20, 1000);
    tmla_ota_status(&r->a, &st, NULL, NULL);
    assert_int_equal(st, TML_OTA_READY);
    assert_null(tmla_active_model(&r->a));
    /* The device waits on its application: READY was reported. */
    assert_true(mp_last_status(r->mp, &u));
    assert_int_equal(u.state, TML_OTA_READY);
    assert_int_equal(u.offer_id, r->offer_id);
    rig_boot(r); /* READY survives a reboot */
    tmla_ota_status(&r->a, &st, NULL, NULL);
    assert_int_equal(st, TML_OTA_READY);
    r->mp->activate_rc = TMLA_PORT_OK;
    rig_run(r, 2, 10);
    tmla_ota_status(&r->a, &st, NULL, NULL);
    assert_int_equal(st, TML_OTA_TRIAL);
    assert_int_equal(tmla_active_model(&r->a)->version, 2);
    /* After the reboot the statuses are still for the offer (the gateway
     * drops a status of an offer it did not make). */
    assert_true(mp_last_status(r->mp, &u));
    assert_int_equal(u.state, TML_OTA_TRIAL);
    assert_int_equal(u.offer_id, r->offer_id);
    rig_boot(r); /* a reboot in trial */
    /* The gateway offers the model on trial again (it missed a status,
     * or restarted): the device reports its trial for that offer, not
     * "already installed", which a gateway takes for confirmed. */
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_TRIAL);
    assert_true(mp_last_status(r->mp, &u));
    assert_int_equal(u.state, TML_OTA_TRIAL);
    assert_int_equal(u.offer_id, r->offer_id);
    assert_true(tmla_in_trial(&r->a));
    assert_int_equal(tmla_confirm_model(&r->a), TML_OK);
    assert_true(mp_last_status(r->mp, &u));
    assert_int_equal(u.state, TML_OTA_CONFIRMED);
    assert_int_equal(u.offer_id, r->offer_id);
}

static void
test_ota_reject_model_and_cancel(void **state)
{
    struct rig *r = *state;
    uint8_t st, reason;

    rig_install(r, 1, &r->k1);
    rig_model(r, 2, 20000, 3, &r->k1);
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_TRIAL);
    assert_int_equal(tmla_reject_model(&r->a), TML_OK);
    assert_int_equal(tmla_active_model(&r->a)->version, 1);
    /* Cancel a download half way. */
    rig_model(r, 3, 20000, 0, &r->k1);
    r->offer_id++;
    tml_heap_armed = 1;
    (void)gw_offer(&r->a, r->offer_id, r->cose, r->cose_len, r->now);
    {
        struct tml_ota_down d = {.kind = TML_OTA_DOWN_CANCEL,
                                 .offer_id = r->offer_id};
        uint8_t buf[64];
        size_t n;

        assert_int_equal(tml_ota_down_encode(&d, buf, sizeof buf, &n), TML_OK);
        assert_int_equal(gw_send(&r->a, TML_KIND_OTA, buf, n, r->now), TML_OK);
    }
    tml_heap_armed = 0;
    tmla_ota_status(&r->a, &st, &reason, NULL);
    assert_int_equal(st, TML_OTA_FAILED);
    assert_int_equal(reason, TML_OTA_R_CANCELLED);
    assert_int_equal(tmla_active_model(&r->a)->version, 1);
}

static void
test_ota_busy_while_downloading(void **state)
{
    struct rig *r = *state;
    uint8_t other[TML_MAX_MANIFEST];
    size_t other_len;

    rig_model(r, 3, 20000, 0, &r->k1);
    memcpy(other, r->cose, r->cose_len);
    other_len = r->cose_len;
    r->offer_id++;
    tml_heap_armed = 1;
    (void)gw_offer(&r->a, r->offer_id, r->cose, r->cose_len, r->now);
    tml_heap_armed = 0;
    rig_model(r, 4, 20000, 0, &r->k1);
    expect_refused(r, TML_OTA_R_BUSY);
    /* The same image under a new offer id takes over the download. */
    r->offer_id++;
    tml_heap_armed = 1;
    assert_int_equal(gw_offer(&r->a, r->offer_id, other, other_len, r->now),
                     TML_OK);
    tml_heap_armed = 0;
    rig_model(r, 3, 20000, 0, &r->k1);
    r->mp->seen = 0;
    tml_heap_armed = 1;
    (void)gw_serve(r->mp, &r->a, r->offer_id, r->image, r->len, 1024, NULL,
                   &r->now, 10, 400);
    tml_heap_armed = 0;
    rig_run(r, 3, 10);
    assert_true(tmla_in_trial(&r->a));
}

static void
test_ota_boot_drops_a_corrupted_model(void **state)
{
    struct rig *r = *state;
    const struct tmla_model *m;
    uint8_t st, reason;

    rig_install(r, 1, &r->k1);
    rig_install(r, 2, &r->k1);
    m = tmla_active_model(&r->a);
    r->mp->flash[m->slot][100] ^= 0x04; /* bit rot in the running model */
    rig_boot(r);
    tmla_ota_status(&r->a, &st, &reason, NULL);
    assert_int_equal(st, TML_OTA_REVERTED);
    assert_int_equal(reason, TML_OTA_R_FLASH);
    m = tmla_active_model(&r->a);
    assert_non_null(m);
    assert_int_equal(m->version, 1);
    assert_true(mp_slot_matches(r->mp, m->slot, m->size, m->sha256));
    /* Both rotten: no model rather than a broken one. */
    r->mp->flash[m->slot][7] ^= 0x01;
    rig_boot(r);
    assert_null(tmla_active_model(&r->a));
    /* And the device still takes a fresh install. */
    rig_install(r, 3, &r->k1);
}

/* A model confirmed long ago rots while a later download (a live rollout
 * of another model) is under way: the revert at boot is nobody's offer,
 * not the live one's (the gateway would count it against that rollout),
 * and hello's last result names the reverted model. */
static void
test_ota_rot_revert_is_not_reported_to_a_live_offer(void **state)
{
    struct rig *r = *state;
    const struct tmla_model *m;
    struct tml_ota_up u;
    struct tml_hello h;
    uint32_t live;
    uint8_t st;
    bool hello = false;

    rig_install(r, 1, &r->k1);
    rig_model(r, 2, 20000, 0, &r->k1);
    live = ++r->offer_id;
    (void)gw_offer(&r->a, live, r->cose, r->cose_len, r->now);
    (void)gw_serve(r->mp, &r->a, live, r->image, 4096, 1024, NULL, &r->now,
                   10, 2);
    m = tmla_active_model(&r->a);
    assert_int_equal(m->version, 1);
    r->mp->flash[m->slot][100] ^= 0x04;
    r->mp->seen = r->mp->n_log;
    rig_boot(r);
    assert_true(mp_last_status(r->mp, &u));
    assert_int_equal(u.state, TML_OTA_REVERTED);
    assert_int_equal(u.reason, TML_OTA_R_FLASH);
    assert_int_equal(u.version, 1);
    assert_int_equal(u.offer_id, 0);
    for (size_t i = r->mp->seen; mp_next_hello(r->mp, &i, &h) != NULL;) {
        assert_int_equal(h.last_ota_version, 1);
        assert_int_equal(h.last_ota_state, TML_OTA_REVERTED);
        hello = true;
    }
    assert_true(hello);
    /* The revert dropped the download too: with no model left, the slot it
     * wrote is no longer "the inactive one", and the next boot resumed it
     * into the other slot, under the rotten model's size and hash. */
    rig_boot(r);
    tmla_ota_status(&r->a, &st, NULL, NULL);
    assert_int_not_equal(st, TML_OTA_DOWNLOADING);
    /* The gateway's next offer installs the model whole. */
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_TRIAL);
    assert_true(tmla_in_trial(&r->a));
    m = tmla_active_model(&r->a);
    assert_int_equal(m->version, 2);
    assert_true(mp_slot_matches(r->mp, m->slot, m->size, m->sha256));
}

static void
test_ota_s9_offer_flood_costs_no_flash_writes(void **state)
{
    struct rig *r = *state;
    uint32_t writes = r->mp->n_state_writes;
    uint32_t ops = tmla_stats(&r->a)->flash_ops;

    rig_install(r, 5, &r->k1);
    writes = r->mp->n_state_writes;
    ops = tmla_stats(&r->a)->flash_ops;
    /* 120 refused offers (rollback, replay, unknown key) in a burst. */
    for (unsigned i = 0; i < 120; i++) {
        rig_model(r, 1 + i % 5, 8000, 0, i % 3 == 0 ? &r->k3 : &r->k1);
        r->offer_id++;
        tml_heap_armed = 1;
        (void)gw_offer(&r->a, r->offer_id, r->cose, r->cose_len, r->now);
        tml_heap_armed = 0;
    }
    print_message("S9: 120 refused offers: %u state writes, %u flash ops\n",
                  r->mp->n_state_writes - writes,
                  tmla_stats(&r->a)->flash_ops - ops);
    assert_int_equal(r->mp->n_state_writes, writes);
    assert_int_equal(tmla_stats(&r->a)->flash_ops, ops);
    assert_int_equal(tmla_active_model(&r->a)->version, 5);
}

static void
test_ota_odd_chunk_sizes_keep_flash_rules(void **state)
{
    struct rig *r = *state;
    uint8_t st;

    /* 333-byte chunks: nothing aligned, pages crossed mid-chunk. */
    rig_model(r, 2, 30001, 3, &r->k1);
    r->offer_id++;
    r->mp->seen = r->mp->n_log;
    tml_heap_armed = 1;
    (void)gw_offer(&r->a, r->offer_id, r->cose, r->cose_len, r->now);
    (void)gw_serve(r->mp, &r->a, r->offer_id, r->image, r->len, 333, NULL,
                   &r->now, 10, 600);
    tml_heap_armed = 0;
    rig_run(r, 3, 10);
    tmla_ota_status(&r->a, &st, NULL, NULL);
    assert_int_equal(st, TML_OTA_TRIAL);
    assert_int_equal(r->mp->violations, 0);
    assert_true(mp_slot_matches(r->mp, 0, (uint32_t)r->len, r->man.sha256));
    for (uint32_t i = (uint32_t)r->len; i < MP_SLOT_SIZE; i++)
        if (i < ((uint32_t)r->len + MP_ALIGN - 1) / MP_ALIGN * MP_ALIGN)
            assert_int_equal(r->mp->flash[0][i], 0xff); /* padding */
}

static void
test_ota_link_drop_mid_download_resumes_at_offset(void **state)
{
    struct rig *r = *state;
    struct tml_ota_up u;
    uint32_t off;
    uint8_t st;
    bool found = false;

    rig_model(r, 2, 30000, 0, &r->k1);
    r->offer_id++;
    tml_heap_armed = 1;
    (void)gw_offer(&r->a, r->offer_id, r->cose, r->cose_len, r->now);
    for (uint32_t o = 0; o < 10240; o += 1024)
        (void)gw_chunk(&r->a, r->offer_id, o, r->image + o, 1024, r->now);
    tml_heap_armed = 0;
    r->mp->offline = true;
    tmla_on_disconnect(&r->a);
    rig_run(r, 20, 5000); /* offline: no requests, no slow-abort */
    tmla_ota_status(&r->a, &st, NULL, &off);
    assert_int_equal(st, TML_OTA_DOWNLOADING);
    assert_int_equal(off, 10240);
    r->mp->offline = false;
    r->mp->seen = r->mp->n_log;
    tmla_on_connect(&r->a, r->now);
    rig_run(r, 1, 10);
    for (size_t i = r->mp->seen; i < r->mp->n_log; i++)
        if (r->mp->log[i].kind == TML_KIND_OTA &&
            tml_ota_up_decode(r->mp->log[i].payload, r->mp->log[i].len, &u) ==
                TML_OK &&
            u.kind == TML_OTA_UP_REQUEST) {
            assert_int_equal(u.offset, 10240);
            found = true;
        }
    assert_true(found);
    tml_heap_armed = 1;
    (void)gw_serve(r->mp, &r->a, r->offer_id, r->image, r->len, 1024, NULL,
                   &r->now, 10, 400);
    tml_heap_armed = 0;
    rig_run(r, 3, 10);
    tmla_ota_status(&r->a, &st, NULL, NULL);
    assert_int_equal(st, TML_OTA_TRIAL);
}

/* Review findings of 2026-11-27 (the resume marks and the accept): each
 * failed before its fix in ota.c. */

/* Reboots after the first two 512-byte chunks of a download with
 * ota_chunk 1020 (not a multiple of write_align), whose image bytes
 * around 1020 are 0xff: the resume offset must be aligned for the next
 * write (was 1020: a misaligned write, FAILED flash). */
static void
test_ota_resume_with_unaligned_chunk_setting(void **state)
{
    struct rig *r = *state;
    uint32_t before = 0, after = 0;
    uint8_t st, reason = 0;

    r->cfg.ota_chunk = 1020;
    rig_boot(r);
    rig_model(r, 3, 20000, 0, &r->k1);
    memset(r->image + 1016, 0xff, 16);
    manifest_for(&r->man, 3, r->image, r->len, 0, 16);
    rig_sign(r, &r->k1);
    r->offer_id++;
    (void)gw_offer(&r->a, r->offer_id, r->cose, r->cose_len, r->now);
    (void)gw_chunk(&r->a, r->offer_id, 0, r->image, 512, r->now);
    (void)gw_chunk(&r->a, r->offer_id, 512, r->image + 512, 512, r->now);
    tmla_ota_status(&r->a, NULL, NULL, &before);
    rig_boot(r);
    tmla_ota_status(&r->a, &st, NULL, &after);
    assert_int_equal(st, TML_OTA_DOWNLOADING);
    assert_true(after <= before);
    assert_int_equal(after % MP_ALIGN, 0);
    (void)gw_serve(r->mp, &r->a, r->offer_id, r->image, r->len, 512, NULL,
                   &r->now, 10, 400);
    rig_run(r, 3, 10);
    tmla_ota_status(&r->a, &st, &reason, NULL);
    assert_int_equal(r->mp->violations, 0);
    assert_int_equal(st, TML_OTA_TRIAL);
}

static int (*mark_read_next)(void *, uint8_t, uint32_t, void *, size_t);
static uint32_t mark_read_fail_from, mark_read_fail_to;

static int
mark_read_fails(void *user, uint8_t slot, uint32_t off, void *buf, size_t len)
{
    if (off >= mark_read_fail_from && off < mark_read_fail_to)
        return -1;
    return mark_read_next(user, slot, off, buf, len);
}

/* The mark page cannot be read at boot (the header can): the resume
 * falls back to the checkpoint and the download completes (a failed read
 * counted as a written chunk: resumed past the data, bad hash). */
static void
test_ota_unreadable_mark_resumes_at_checkpoint(void **state)
{
    struct rig *r = *state;
    uint32_t before = 0, after = 0;
    uint8_t st, reason = 0;

    rig_model(r, 3, 50000, 3, &r->k1);
    r->offer_id++;
    (void)gw_offer(&r->a, r->offer_id, r->cose, r->cose_len, r->now);
    for (uint32_t off = 0; off < 10240; off += 1024)
        (void)gw_chunk(&r->a, r->offer_id, off, r->image + off, 1024, r->now);
    tmla_ota_status(&r->a, NULL, NULL, &before);
    assert_int_equal(before, 10240);
    /* The mark page follows the image's last erase page (50000 -> 53248);
     * its first unit (the header) stays readable. */
    mark_read_fail_from = 53248 + 16;
    mark_read_fail_to = 53248 + 4096;
    mark_read_next = r->mp->port.flash_read;
    r->mp->port.flash_read = mark_read_fails;
    rig_boot(r);
    r->mp->port.flash_read = mark_read_next;
    tmla_ota_status(&r->a, &st, NULL, &after);
    assert_int_equal(st, TML_OTA_DOWNLOADING);
    assert_true(after <= before);
    (void)gw_serve(r->mp, &r->a, r->offer_id, r->image, r->len, 1024, NULL,
                   &r->now, 10, 400);
    rig_run(r, 3, 10);
    tmla_ota_status(&r->a, &st, &reason, NULL);
    assert_int_equal(reason, TML_OTA_R_NONE);
    assert_int_equal(st, TML_OTA_TRIAL);
    assert_int_equal(r->mp->violations, 0);
}

/* Every state write fails while a good offer is accepted: the offer is
 * refused (flash), and nothing the accept would have changed survives a
 * later write and a reboot: the fallback model stays valid, the floor
 * where it was (was: fallback slot invalid, floor raised to an image that
 * was never downloaded). */
static void
test_ota_failed_accept_write_changes_nothing(void **state)
{
    struct rig *r = *state;
    uint8_t fallback;

    rig_install(r, 2, &r->k1);
    rig_install(r, 3, &r->k1); /* v3 active, v2 in the other slot */
    fallback = (uint8_t)(r->a.ps.active ^ 1u);
    assert_int_equal(r->a.ps.valid, 3);
    assert_int_equal(r->a.ps.slot[fallback].version, 2);
    rig_model(r, 4, 20000, 3, &r->k1);
    r->offer_id++;
    r->mp->state_fail_pct = 100;
    (void)gw_offer(&r->a, r->offer_id, r->cose, r->cose_len, r->now);
    r->mp->state_fail_pct = 0;
    assert_int_equal(rig_last_reason(r), TML_OTA_R_FLASH);
    rig_run(r, 3, 10);
    r->a.persist_due = true; /* any later write persists RAM as it is */
    rig_run(r, 3, 10);
    rig_boot(r);
    assert_int_equal(r->a.ps.valid, 3);
    assert_int_equal(r->a.ps.floor, 3);
    assert_int_equal(r->a.ps.dl, 0);
    assert_int_equal(r->a.ps.slot[fallback].version, 2);
    assert_int_equal(tmla_active_model(&r->a)->version, 3);
}

/* Offer id 0xffffffff: its marks must not look erased, so a reboot
 * resumes where the data stopped (was: at the checkpoint). */
static void
test_ota_offer_id_all_ones_keeps_marks(void **state)
{
    struct rig *r = *state;
    uint32_t before = 0, after = 0;
    uint8_t st;

    rig_model(r, 3, 50000, 3, &r->k1);
    r->offer_id = 0xffffffffu;
    (void)gw_offer(&r->a, r->offer_id, r->cose, r->cose_len, r->now);
    for (uint32_t off = 0; off < 15360; off += 1024)
        (void)gw_chunk(&r->a, r->offer_id, off, r->image + off, 1024, r->now);
    tmla_ota_status(&r->a, NULL, NULL, &before);
    rig_boot(r);
    tmla_ota_status(&r->a, &st, NULL, &after);
    assert_int_equal(st, TML_OTA_DOWNLOADING);
    assert_int_equal(after, before);
    (void)gw_serve(r->mp, &r->a, r->offer_id, r->image, r->len, 1024, NULL,
                   &r->now, 10, 400);
    rig_run(r, 3, 10);
    tmla_ota_status(&r->a, &st, NULL, NULL);
    assert_int_equal(st, TML_OTA_TRIAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, rig_setup_booted, rig_teardown)
        T(test_ota_happy_path_reports_every_transition),
        T(test_ota_s1_unknown_key_rejected_before_any_byte),
        T(test_ota_s1_trusted_kid_wrong_key_bad_signature),
        T(test_ota_s2_every_flipped_byte_rejected),
        T(test_ota_s3_tampered_chunk_fails_hash),
        T(test_ota_s3_extra_byte_never_activates),
        T(test_ota_s4_s5_rollback_and_replay_refused),
        T(test_ota_s6_expired_manifest_refused),
        T(test_ota_s7_chunks_of_another_offer_ignored),
        T(test_ota_s8_incompatible_manifests_refused),
        T(test_ota_s8_input_shape_and_labels_checked),
        T(test_ota_s9_chunks_outside_the_image_dropped),
        T(test_ota_s10_slow_retrieval_aborts),
        T(test_ota_s11_reboot_mid_download_resumes),
        T(test_ota_s11_reboot_at_every_chunk_resends_under_two_chunks),
        T(test_ota_s12_rotation_revocation_and_fast_forward_recovery),
        T(test_ota_s12_fast_forward_recovered_by_rotation),
        T(test_ota_failed_golden_vectors_revert),
        T(test_ota_trial_never_confirmed_reverts),
        T(test_ota_trial_reboot_loop_reverts_at_boot),
        T(test_ota_trial_reboot_loop_does_not_revert_to_a_rotten_model),
        T(test_ota_application_defers_activation),
        T(test_ota_reject_model_and_cancel),
        T(test_ota_busy_while_downloading),
        T(test_ota_boot_drops_a_corrupted_model),
        T(test_ota_rot_revert_is_not_reported_to_a_live_offer),
        T(test_ota_s9_offer_flood_costs_no_flash_writes),
        T(test_ota_odd_chunk_sizes_keep_flash_rules),
        T(test_ota_link_drop_mid_download_resumes_at_offset),
        T(test_ota_resume_with_unaligned_chunk_setting),
        T(test_ota_unreadable_mark_resumes_at_checkpoint),
        T(test_ota_failed_accept_write_changes_nothing),
        T(test_ota_offer_id_all_ones_keeps_marks),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
