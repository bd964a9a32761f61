/*
 * test_roundtrip.c: every message encodes, decodes to the same values and
 * re-encodes to the same bytes, at its smallest and largest legal values.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "samples.h"

static struct samples_store store;
static uint8_t buf[TML_MAX_MESSAGE];
static uint8_t buf2[TML_MAX_MESSAGE];

static int
setup(void **state)
{
    (void)state;
    samples_init(&store);
    return store.manifest_len > 0 ? 0 : -1;
}

static void
assert_str(struct tml_str a, struct tml_str b)
{
    assert_int_equal(a.len, b.len);
    if (a.len > 0) {
        assert_memory_equal(a.p, b.p, a.len);
    }
}

static void
assert_bin(struct tml_bin a, struct tml_bin b)
{
    assert_int_equal(a.len, b.len);
    if (a.len > 0) {
        assert_memory_equal(a.p, b.p, a.len);
    }
}

/* Encodes m, decodes into out, re-encodes out and checks the bytes match. */
#define ROUND_TRIP(name, m, out)                                               \
    do {                                                                       \
        size_t len_ = 0, len2_ = 0;                                            \
        assert_int_equal(tml_##name##_encode(m, buf, sizeof buf, &len_),       \
                         TML_OK);                                              \
        assert_int_equal(tml_##name##_decode(buf, len_, out), TML_OK);         \
        assert_int_equal(tml_##name##_encode(out, buf2, sizeof buf2, &len2_),  \
                         TML_OK);                                              \
        assert_int_equal(len_, len2_);                                         \
        assert_memory_equal(buf, buf2, len_);                                  \
    } while (0)

static void
test_hello_round_trip_min_and_max(void **state)
{
    struct tml_hello m, out;
    size_t i;
    int max;

    (void)state;
    for (max = 0; max <= 1; max++) {
        sample_hello(&m, max);
        ROUND_TRIP(hello, &m, &out);
        assert_int_equal(out.agent_version, m.agent_version);
        assert_str(out.hw, m.hw);
        assert_str(out.model, m.model);
        assert_int_equal(out.model_version, m.model_version);
        assert_int_equal(out.model_slot, m.model_slot);
        assert_int_equal(out.slot_size, m.slot_size);
        assert_int_equal(out.arena_size, m.arena_size);
        assert_int_equal(out.chunk_max, m.chunk_max);
        assert_int_equal(out.boot_count, m.boot_count);
        assert_int_equal(out.last_ota_state, m.last_ota_state);
        assert_int_equal(out.last_ota_reason, m.last_ota_reason);
        assert_int_equal(out.last_ota_version, m.last_ota_version);
        assert_int_equal(out.version_floor, m.version_floor);
        assert_int_equal(out.n_groups, m.n_groups);
        for (i = 0; i < m.n_groups; i++) {
            assert_str(out.groups[i], m.groups[i]);
        }
        assert_int_equal(out.has_nonce, m.has_nonce);
        assert_int_equal(out.nonce, m.nonce);
        assert_int_equal(out.tele_next, m.tele_next);
        assert_int_equal(out.sample_next, m.sample_next);
        assert_int_equal(out.boot_id, m.boot_id);
    }
}

/* A device without a model says so with an empty name that has no
 * pointer at all: it encodes (without looking at the missing bytes) and
 * decodes as an empty name; a length without a pointer is refused. */
static void
test_hello_empty_model_name_without_pointer(void **state)
{
    struct tml_hello m, out;
    uint8_t wire[TML_MAX_MESSAGE];
    size_t n = 0;

    (void)state;
    sample_hello(&m, 0);
    m.model.p = NULL;
    m.model.len = 0;
    assert_int_equal(tml_hello_encode(&m, wire, sizeof wire, &n), TML_OK);
    assert_int_equal(tml_hello_decode(wire, n, &out), TML_OK);
    assert_int_equal(out.model.len, 0);
    m.model.len = 1;
    assert_int_equal(tml_hello_encode(&m, wire, sizeof wire, &n),
                     TML_ERR_INVAL);
}

static void
test_state_round_trip_online_and_offline(void **state)
{
    struct tml_state m, out;
    int online;

    (void)state;
    for (online = 0; online <= 1; online++) {
        sample_state(&m, online);
        ROUND_TRIP(state, &m, &out);
        assert_int_equal(out.online, online);
    }
}

static void
test_tele_round_trip_min_and_max(void **state)
{
    struct tml_tele m, out;
    int max;

    (void)state;
    for (max = 0; max <= 1; max++) {
        sample_tele(&m, max);
        ROUND_TRIP(tele, &m, &out);
        assert_int_equal(out.seq, m.seq);
        assert_int_equal(out.model_version, m.model_version);
        assert_int_equal(out.period_s, m.period_s);
        assert_int_equal(out.age_s, m.age_s);
        assert_int_equal(out.n_inferences, m.n_inferences);
        assert_int_equal(out.n_low_conf, m.n_low_conf);
        assert_int_equal(out.n_flagged, m.n_flagged);
        assert_int_equal(out.n_errors, m.n_errors);
        assert_int_equal(out.n_folded, m.n_folded);
        assert_int_equal(out.n_samples_dropped, m.n_samples_dropped);
        assert_int_equal(out.lat_min_us, m.lat_min_us);
        assert_int_equal(out.lat_mean_us, m.lat_mean_us);
        assert_int_equal(out.lat_max_us, m.lat_max_us);
        assert_int_equal(out.n_classes, m.n_classes);
        assert_memory_equal(out.class_counts, m.class_counts,
                            m.n_classes * 4 + 1);
        assert_int_equal(out.n_conf_bins, m.n_conf_bins);
        assert_memory_equal(out.conf_hist, m.conf_hist, m.n_conf_bins * 4 + 1);
        assert_int_equal(out.n_lat_bins, m.n_lat_bins);
        assert_memory_equal(out.lat_hist, m.lat_hist, m.n_lat_bins * 4 + 1);
        assert_int_equal(out.has_health, m.has_health);
        assert_int_equal(out.health.free_ram, m.health.free_ram);
        assert_int_equal(out.health.supply_mv, m.health.supply_mv);
        assert_int_equal(out.health.temp_dc, m.health.temp_dc);
        assert_int_equal(out.health.uptime_s, m.health.uptime_s);
        assert_int_equal(out.lw, m.lw);
    }
}

static void
test_tele_round_trip_negative_and_positive_temperature(void **state)
{
    static const int32_t temps[] = {INT32_MIN, -25, -24, -1, 0, 23, 24,
                                    INT32_MAX};
    struct tml_tele m, out;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof temps / sizeof temps[0]; i++) {
        sample_tele(&m, true);
        m.health.temp_dc = temps[i];
        ROUND_TRIP(tele, &m, &out);
        assert_int_equal(out.health.temp_dc, temps[i]);
    }
}

static void
test_sample_round_trip_min_and_max(void **state)
{
    struct tml_sample m, out;
    int max;

    (void)state;
    for (max = 0; max <= 1; max++) {
        sample_sample(&m, &store, max);
        ROUND_TRIP(sample, &m, &out);
        assert_int_equal(out.seq, m.seq);
        assert_int_equal(out.sample_id, m.sample_id);
        assert_int_equal(out.model_version, m.model_version);
        assert_int_equal(out.reason, m.reason);
        assert_int_equal(out.predicted, m.predicted);
        assert_int_equal(out.confidence_bp, m.confidence_bp);
        assert_int_equal(out.has_expected, m.has_expected);
        assert_int_equal(out.expected, m.expected);
        assert_int_equal(out.dtype, m.dtype);
        assert_int_equal(out.n_shape, m.n_shape);
        assert_memory_equal(out.shape, m.shape, m.n_shape * 4);
        assert_int_equal(out.rate_hz, m.rate_hz);
        assert_int_equal(out.age_s, m.age_s);
        assert_int_equal(out.total_len, m.total_len);
        assert_int_equal(out.offset, m.offset);
        assert_bin(out.data, m.data);
    }
}

static void
test_ota_up_round_trip_request_and_status(void **state)
{
    struct tml_ota_up m, out;
    int kind;
    int max;

    (void)state;
    for (kind = TML_OTA_UP_REQUEST; kind <= TML_OTA_UP_STATUS; kind++) {
        for (max = 0; max <= 1; max++) {
            sample_ota_up(&m, (uint8_t)kind, max);
            ROUND_TRIP(ota_up, &m, &out);
            assert_int_equal(out.kind, m.kind);
            assert_int_equal(out.offer_id, m.offer_id);
            assert_int_equal(out.version, m.version);
            assert_int_equal(out.offset, m.offset);
            assert_int_equal(out.len, m.len);
            assert_int_equal(out.state, m.state);
            assert_int_equal(out.reason, m.reason);
        }
    }
}

static void
test_ack_round_trip_one_or_both_streams(void **state)
{
    struct tml_ack m, out;

    (void)state;
    sample_ack(&m, false);
    ROUND_TRIP(ack, &m, &out);
    assert_true(out.has_tele);
    assert_false(out.has_sample);
    assert_int_equal(out.tele_seq, 0);
    sample_ack(&m, true);
    ROUND_TRIP(ack, &m, &out);
    assert_true(out.has_tele && out.has_sample);
    assert_int_equal(out.tele_seq, 0xffffffffu);
    assert_int_equal(out.sample_seq, 0xffffffffu);
    m.has_tele = false;
    ROUND_TRIP(ack, &m, &out);
    assert_false(out.has_tele);
    assert_true(out.has_sample);
}

static void
test_ota_down_round_trip_offer_chunk_cancel(void **state)
{
    struct tml_ota_down m, out;
    int kind;
    int max;

    (void)state;
    for (kind = TML_OTA_DOWN_OFFER; kind <= TML_OTA_DOWN_CANCEL; kind++) {
        for (max = 0; max <= 1; max++) {
            sample_ota_down(&m, &store, (uint8_t)kind, max);
            ROUND_TRIP(ota_down, &m, &out);
            assert_int_equal(out.kind, m.kind);
            assert_int_equal(out.offer_id, m.offer_id);
            assert_bin(out.manifest, m.manifest);
            assert_int_equal(out.offset, m.offset);
            assert_bin(out.data, m.data);
        }
    }
}

static void
test_cmd_round_trip_set_and_ping(void **state)
{
    struct tml_cmd m, out;
    int kind;
    int max;

    (void)state;
    for (kind = TML_CMD_SET; kind <= TML_CMD_PING; kind++) {
        for (max = 0; max <= 1; max++) {
            sample_cmd(&m, (uint8_t)kind, max);
            ROUND_TRIP(cmd, &m, &out);
            assert_memory_equal(&out, &m, sizeof m);
        }
    }
}

static void
test_manifest_round_trip_min_and_max(void **state)
{
    struct tml_manifest m, out;
    size_t i;
    int max;

    (void)state;
    for (max = 0; max <= 1; max++) {
        sample_manifest(&m, &store, max);
        ROUND_TRIP(manifest, &m, &out);
        assert_str(out.name, m.name);
        assert_int_equal(out.version, m.version);
        assert_str(out.hw, m.hw);
        assert_int_equal(out.size, m.size);
        assert_memory_equal(out.sha256, m.sha256, TML_SHA256_LEN);
        assert_int_equal(out.created, m.created);
        assert_int_equal(out.expires, m.expires);
        assert_int_equal(out.model_size, m.model_size);
        assert_int_equal(out.arena_size, m.arena_size);
        assert_int_equal(out.min_agent_version, m.min_agent_version);
        assert_int_equal(out.dtype, m.dtype);
        assert_int_equal(out.n_shape, m.n_shape);
        assert_memory_equal(out.input_shape, m.input_shape, m.n_shape * 4);
        assert_int_equal(out.n_labels, m.n_labels);
        assert_int_equal(out.n_vectors, m.n_vectors);
        assert_int_equal(out.vector_input_len, m.vector_input_len);
        assert_int_equal(out.score_tol_bp, m.score_tol_bp);
        assert_int_equal(out.resets_floor, m.resets_floor);
        assert_int_equal(out.n_revoke, m.n_revoke);
        for (i = 0; i < m.n_revoke; i++) {
            assert_bin(out.revoke_kids[i], m.revoke_kids[i]);
        }
    }
}

static void
test_cose_sign1_round_trip(void **state)
{
    uint8_t payload[300];
    size_t len = 0;
    struct tml_cose_sign1 c;
    uint8_t prot[32];
    size_t prot_len = 0;

    (void)state;
    memset(payload, 0x5a, sizeof payload);
    assert_int_equal(tml_cose_sign1_encode(sample_kid, sizeof sample_kid,
                                           payload, sizeof payload, sample_sig,
                                           buf, sizeof buf, &len),
                     TML_OK);
    assert_int_equal(tml_cose_sign1_decode(buf, len, &c), TML_OK);
    assert_int_equal(c.alg, TML_COSE_ALG_ES256);
    assert_int_equal(c.kid.len, sizeof sample_kid);
    assert_memory_equal(c.kid.p, sample_kid, sizeof sample_kid);
    assert_int_equal(c.payload.len, sizeof payload);
    assert_memory_equal(c.payload.p, payload, sizeof payload);
    assert_int_equal(c.signature.len, TML_ES256_SIG_LEN);
    assert_memory_equal(c.signature.p, sample_sig, TML_ES256_SIG_LEN);
    assert_int_equal(tml_cose_protected_encode(sample_kid, sizeof sample_kid,
                                               prot, sizeof prot, &prot_len),
                     TML_OK);
    assert_int_equal(c.protected_hdr.len, prot_len);
    assert_memory_equal(c.protected_hdr.p, prot, prot_len);
}

static void
test_every_sample_decodes_with_its_decoder(void **state)
{
    int i;

    (void)state;
    for (i = 0; i < SAMPLE_KINDS; i++) {
        size_t len = 0;
        int which = -1;
        const char *name = sample_encode(i, &store, buf, sizeof buf, &len,
                                         &which);

        assert_non_null(name);
        assert_int_equal(sample_decode(which, buf, len), TML_OK);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_round_trip_min_and_max),
        cmocka_unit_test(test_hello_empty_model_name_without_pointer),
        cmocka_unit_test(test_state_round_trip_online_and_offline),
        cmocka_unit_test(test_tele_round_trip_min_and_max),
        cmocka_unit_test(test_tele_round_trip_negative_and_positive_temperature),
        cmocka_unit_test(test_sample_round_trip_min_and_max),
        cmocka_unit_test(test_ota_up_round_trip_request_and_status),
        cmocka_unit_test(test_ack_round_trip_one_or_both_streams),
        cmocka_unit_test(test_ota_down_round_trip_offer_chunk_cancel),
        cmocka_unit_test(test_cmd_round_trip_set_and_ping),
        cmocka_unit_test(test_manifest_round_trip_min_and_max),
        cmocka_unit_test(test_cose_sign1_round_trip),
        cmocka_unit_test(test_every_sample_decodes_with_its_decoder),
    };

    return cmocka_run_group_tests_name("proto_roundtrip", tests, setup, NULL);
}
