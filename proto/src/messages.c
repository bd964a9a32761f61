/*
 * messages.c: the key tables of every protocol message and their public
 * encode/decode functions. The tables ARE the wire format: PROTOCOL.md's CDDL
 * lists the same keys, types and limits, and tests/proto checks both agree.
 * Keys are small unsigned integers in ascending order; key 0 is the version.
 */
#include <stddef.h>
#include <string.h>

#include "internal.h"

#define U32MAX 0xffffffffu

#define ROW(k, type, fl, st, fld, aux, lo, hi, elo, ehi, sub)                 \
    {                                                                          \
        k, type, fl, (uint16_t)offsetof(struct st, fld), (uint16_t)(aux), lo, \
            hi, elo, ehi, sub                                                  \
    }
#define U32(k, fl, st, fld, lo, hi)                                            \
    ROW(k, TML__F_U32, fl, st, fld, 0, lo, hi, 0, 0, NULL)
#define U8(k, fl, st, fld, lo, hi)                                             \
    ROW(k, TML__F_U8, fl, st, fld, 0, lo, hi, 0, 0, NULL)
#define HAS_U32(k, st, fld, has, lo, hi)                                       \
    ROW(k, TML__F_U32, TML__HAS, st, fld, offsetof(struct st, has), lo, hi, 0, \
        0, NULL)
#define TEXT(k, fl, st, fld, lo, hi)                                           \
    ROW(k, TML__F_TEXT, fl, st, fld, 0, lo, hi, 0, 0, NULL)
#define BYTES(k, fl, st, fld, lo, hi)                                          \
    ROW(k, TML__F_BYTES, fl, st, fld, 0, lo, hi, 0, 0, NULL)
#define ARRAY(k, type, fl, st, fld, count, lo, hi, elo, ehi)                   \
    ROW(k, type, fl, st, fld, offsetof(struct st, count), lo, hi, elo, ehi,    \
        NULL)
#define N(t) ((uint8_t)(sizeof(t) / sizeof((t)[0])))
/* The version row (key 0) stores nothing; its offset is unused. */

static uint64_t
bits(unsigned a, unsigned b)
{
    uint64_t m = 0;

    if (a != 0) {
        m |= (uint64_t)1 << a;
    }
    if (b != 0) {
        m |= (uint64_t)1 << b;
    }
    return m;
}

/* ---- up/hello ------------------------------------------------------------ */

static const struct tml__field hello_fields[] = {
    ROW(0, TML__F_VERSION, TML__REQ, tml_hello, agent_version, 0, 0, 0, 0, 0,
        NULL),
    U32(1, TML__REQ, tml_hello, agent_version, 0, U32MAX),
    TEXT(2, TML__REQ, tml_hello, hw, 1, TML_MAX_NAME),
    TEXT(3, TML__REQ, tml_hello, model, 0, TML_MAX_NAME),
    U32(4, TML__REQ, tml_hello, model_version, 0, U32MAX),
    U8(5, TML__REQ, tml_hello, model_slot, 0, 1),
    U32(6, TML__REQ, tml_hello, slot_size, 0, U32MAX),
    U32(7, TML__REQ, tml_hello, arena_size, 0, U32MAX),
    U32(8, TML__REQ, tml_hello, chunk_max, 1, TML_CHUNK_MAX),
    U32(9, TML__REQ, tml_hello, boot_count, 0, U32MAX),
    U8(10, TML__REQ, tml_hello, last_ota_state, 0, TML_OTA_REVERTED),
    U8(11, TML__REQ, tml_hello, last_ota_reason, 0, TML_OTA_R__COUNT - 1),
    U32(12, TML__REQ, tml_hello, last_ota_version, 0, U32MAX),
    U32(13, TML__REQ, tml_hello, version_floor, 0, U32MAX),
    ARRAY(14, TML__F_TEXT_ARRAY, TML__OPT, tml_hello, groups, n_groups, 0,
          TML_MAX_GROUPS, 1, TML_MAX_NAME),
    HAS_U32(15, tml_hello, nonce, has_nonce, 0, U32MAX),
    U32(16, TML__OPT, tml_hello, tele_next, 1, U32MAX),
    U32(17, TML__OPT, tml_hello, sample_next, 1, U32MAX),
    U32(18, TML__OPT, tml_hello, boot_id, 1, U32MAX),
};

static const struct tml__msg hello_desc = {hello_fields, N(hello_fields), NULL,
                                           NULL};

/* ---- up/state ------------------------------------------------------------ */

static const struct tml__field state_fields[] = {
    ROW(0, TML__F_VERSION, TML__REQ, tml_state, online, 0, 0, 0, 0, 0, NULL),
    ROW(1, TML__F_BOOL, TML__REQ, tml_state, online, 0, 0, 0, 0, 0, NULL),
};

static const struct tml__msg state_desc = {state_fields, N(state_fields), NULL,
                                           NULL};

/* ---- up/tele ------------------------------------------------------------- */

static const struct tml__field health_fields[] = {
    U32(1, TML__REQ, tml_health, free_ram, 0, U32MAX),
    U32(2, TML__REQ, tml_health, supply_mv, 0, U32MAX),
    ROW(3, TML__F_I32, TML__REQ, tml_health, temp_dc, 0, 0, 0, 0, 0, NULL),
    U32(4, TML__REQ, tml_health, uptime_s, 0, U32MAX),
};

static const struct tml__msg health_desc = {health_fields, N(health_fields),
                                            NULL, NULL};

static const struct tml__field tele_fields[] = {
    ROW(0, TML__F_VERSION, TML__REQ, tml_tele, seq, 0, 0, 0, 0, 0, NULL),
    U32(1, TML__REQ, tml_tele, seq, 1, U32MAX),
    U32(2, TML__REQ, tml_tele, model_version, 0, U32MAX),
    U32(3, TML__REQ, tml_tele, period_s, 0, U32MAX),
    U32(4, TML__REQ, tml_tele, age_s, 0, U32MAX),
    U32(5, TML__REQ, tml_tele, n_inferences, 0, U32MAX),
    U32(6, TML__REQ, tml_tele, n_low_conf, 0, U32MAX),
    U32(7, TML__REQ, tml_tele, n_flagged, 0, U32MAX),
    U32(8, TML__REQ, tml_tele, n_errors, 0, U32MAX),
    U32(9, TML__REQ, tml_tele, n_folded, 0, U32MAX),
    U32(10, TML__REQ, tml_tele, n_samples_dropped, 0, U32MAX),
    U32(11, TML__REQ, tml_tele, lat_min_us, 0, U32MAX),
    U32(12, TML__REQ, tml_tele, lat_mean_us, 0, U32MAX),
    U32(13, TML__REQ, tml_tele, lat_max_us, 0, U32MAX),
    ARRAY(14, TML__F_U32_ARRAY, TML__OPT, tml_tele, class_counts, n_classes,
          0, TML_MAX_CLASSES, 0, U32MAX),
    ARRAY(15, TML__F_U32_ARRAY, TML__OPT, tml_tele, conf_hist, n_conf_bins, 0,
          TML_MAX_BINS, 0, U32MAX),
    ARRAY(16, TML__F_U32_ARRAY, TML__OPT, tml_tele, lat_hist, n_lat_bins, 0,
          TML_MAX_BINS, 0, U32MAX),
    ROW(17, TML__F_MAP, TML__HAS, tml_tele, health,
        offsetof(struct tml_tele, has_health), 0, 0, 0, 0, &health_desc),
    U32(18, TML__OPT, tml_tele, lw, 1, U32MAX),
};

static enum tml_err
tele_check(const void *m)
{
    const struct tml_tele *t = m;

    /* A record is held until acked, so the low-water cannot be above it. */
    return t->lw > t->seq ? TML_ERR_RANGE : TML_OK;
}

static const struct tml__msg tele_desc = {tele_fields, N(tele_fields), NULL,
                                          tele_check};

/* ---- up/sample ----------------------------------------------------------- */

static enum tml_err
sample_check(const void *m)
{
    const struct tml_sample *s = m;

    /* The chunk must lie inside the input (PROTOCOL.md "Samples"). */
    if ((uint64_t)s->offset + s->data.len > s->total_len) {
        return TML_ERR_RANGE;
    }
    /* The low-water cannot be above the record's own number. */
    return s->lw > s->seq ? TML_ERR_RANGE : TML_OK;
}

static const struct tml__field sample_fields[] = {
    ROW(0, TML__F_VERSION, TML__REQ, tml_sample, seq, 0, 0, 0, 0, 0, NULL),
    U32(1, TML__REQ, tml_sample, seq, 1, U32MAX),
    U32(2, TML__REQ, tml_sample, sample_id, 0, U32MAX),
    U32(3, TML__REQ, tml_sample, model_version, 0, U32MAX),
    U8(4, TML__REQ, tml_sample, reason, TML_REASON_FLAGGED, TML_REASON_AUDIT),
    U32(5, TML__REQ, tml_sample, predicted, 0, U32MAX),
    U32(6, TML__REQ, tml_sample, confidence_bp, 0, 10000),
    HAS_U32(7, tml_sample, expected, has_expected, 0, U32MAX),
    U8(8, TML__REQ, tml_sample, dtype, TML_DTYPE_U8, TML_DTYPE_F32),
    ARRAY(9, TML__F_U32_ARRAY, TML__REQ, tml_sample, shape, n_shape, 1,
          TML_MAX_SHAPE, 1, U32MAX),
    U32(10, TML__REQ, tml_sample, rate_hz, 0, U32MAX),
    U32(11, TML__REQ, tml_sample, age_s, 0, U32MAX),
    U32(12, TML__REQ, tml_sample, total_len, 1, U32MAX),
    U32(13, TML__REQ, tml_sample, offset, 0, U32MAX),
    BYTES(14, TML__REQ, tml_sample, data, 1, TML_CHUNK_MAX),
    U32(15, TML__OPT, tml_sample, lw, 1, U32MAX),
};

static const struct tml__msg sample_desc = {sample_fields, N(sample_fields),
                                            NULL, sample_check};

/* ---- up/ota -------------------------------------------------------------- */

static uint64_t
ota_up_need(const void *m)
{
    const struct tml_ota_up *o = m;

    /* REQUEST carries len; STATUS carries state and reason. */
    return o->kind == TML_OTA_UP_REQUEST ? bits(5, 0) : bits(6, 7);
}

static const struct tml__field ota_up_fields[] = {
    ROW(0, TML__F_VERSION, TML__REQ, tml_ota_up, kind, 0, 0, 0, 0, 0, NULL),
    U8(1, TML__REQ, tml_ota_up, kind, TML_OTA_UP_REQUEST, TML_OTA_UP_STATUS),
    U32(2, TML__REQ, tml_ota_up, offer_id, 0, U32MAX),
    U32(3, TML__REQ, tml_ota_up, version, 0, U32MAX),
    U32(4, TML__REQ, tml_ota_up, offset, 0, U32MAX),
    U32(5, TML__GATED, tml_ota_up, len, 1, U32MAX),
    U8(6, TML__GATED, tml_ota_up, state, 0, TML_OTA_REVERTED),
    U8(7, TML__GATED, tml_ota_up, reason, 0, TML_OTA_R__COUNT - 1),
};

static const struct tml__msg ota_up_desc = {ota_up_fields, N(ota_up_fields),
                                            ota_up_need, NULL};

/* ---- down/ack ------------------------------------------------------------ */

static enum tml_err
ack_check(const void *m)
{
    const struct tml_ack *a = m;

    return (a->has_tele || a->has_sample) ? TML_OK : TML_ERR_MISSING;
}

static const struct tml__field ack_fields[] = {
    ROW(0, TML__F_VERSION, TML__REQ, tml_ack, has_tele, 0, 0, 0, 0, 0, NULL),
    HAS_U32(1, tml_ack, tele_seq, has_tele, 0, U32MAX),
    HAS_U32(2, tml_ack, sample_seq, has_sample, 0, U32MAX),
};

static const struct tml__msg ack_desc = {ack_fields, N(ack_fields), NULL,
                                         ack_check};

/* ---- down/ota ------------------------------------------------------------ */

static uint64_t
ota_down_need(const void *m)
{
    const struct tml_ota_down *o = m;

    if (o->kind == TML_OTA_DOWN_OFFER) {
        return bits(3, 0);
    }
    if (o->kind == TML_OTA_DOWN_CHUNK) {
        return bits(4, 5);
    }
    return 0;
}

static const struct tml__field ota_down_fields[] = {
    ROW(0, TML__F_VERSION, TML__REQ, tml_ota_down, kind, 0, 0, 0, 0, 0, NULL),
    U8(1, TML__REQ, tml_ota_down, kind, TML_OTA_DOWN_OFFER,
       TML_OTA_DOWN_CANCEL),
    U32(2, TML__REQ, tml_ota_down, offer_id, 0, U32MAX),
    BYTES(3, TML__GATED, tml_ota_down, manifest, 1, TML_MAX_MANIFEST),
    U32(4, TML__GATED, tml_ota_down, offset, 0, U32MAX),
    BYTES(5, TML__GATED, tml_ota_down, data, 1, TML_CHUNK_MAX),
};

static const struct tml__msg ota_down_desc = {
    ota_down_fields, N(ota_down_fields), ota_down_need, NULL};

/* ---- down/cmd ------------------------------------------------------------ */

static const struct tml__field cmd_fields[] = {
    ROW(0, TML__F_VERSION, TML__REQ, tml_cmd, kind, 0, 0, 0, 0, 0, NULL),
    U8(1, TML__REQ, tml_cmd, kind, TML_CMD_SET, TML_CMD_PING),
    U32(2, TML__REQ, tml_cmd, nonce, 0, U32MAX),
    HAS_U32(3, tml_cmd, summary_period_s, has_summary_period, 1, U32MAX),
    HAS_U32(4, tml_cmd, sample_budget, has_sample_budget, 0, U32MAX),
    HAS_U32(5, tml_cmd, budget_period_s, has_budget_period, 1, U32MAX),
    HAS_U32(6, tml_cmd, conf_threshold_bp, has_conf_threshold, 0, 10000),
    HAS_U32(7, tml_cmd, audit_ppm, has_audit_rate, 0, 1000000),
};

static const struct tml__msg cmd_desc = {cmd_fields, N(cmd_fields), NULL,
                                         NULL};

/* ---- OTA manifest (COSE_Sign1 payload) ----------------------------------- */

static enum tml_err
manifest_check(const void *m)
{
    const struct tml_manifest *mf = m;
    uint64_t vectors =
        (uint64_t)mf->n_vectors * ((uint64_t)mf->vector_input_len + 4u);

    /* The image is the model followed by n_vectors golden vectors of
     * input_len + 4 bytes each, and nothing else (proto.h, PROTOCOL.md
     * "Manifest"). */
    if ((uint64_t)mf->model_size + vectors != mf->size) {
        return TML_ERR_RANGE;
    }
    if (mf->n_vectors != 0 && mf->vector_input_len == 0) {
        return TML_ERR_RANGE;
    }
    if (mf->expires != 0 && mf->expires < mf->created) {
        return TML_ERR_RANGE;
    }
    return TML_OK;
}

static const struct tml__field manifest_fields[] = {
    ROW(0, TML__F_VERSION, TML__REQ, tml_manifest, version, 0, 0, 0, 0, 0,
        NULL),
    TEXT(1, TML__REQ, tml_manifest, name, 1, TML_MAX_NAME),
    U32(2, TML__REQ, tml_manifest, version, 1, U32MAX),
    TEXT(3, TML__REQ, tml_manifest, hw, 1, TML_MAX_NAME),
    U32(4, TML__REQ, tml_manifest, size, 1, U32MAX),
    ROW(5, TML__F_FIXBYTES, TML__REQ, tml_manifest, sha256, 0, 0,
        TML_SHA256_LEN, 0, 0, NULL),
    U32(6, TML__REQ, tml_manifest, created, 0, U32MAX),
    U32(7, TML__REQ, tml_manifest, expires, 0, U32MAX),
    U32(8, TML__REQ, tml_manifest, model_size, 1, U32MAX),
    U32(9, TML__REQ, tml_manifest, arena_size, 0, U32MAX),
    U32(10, TML__REQ, tml_manifest, min_agent_version, 0, U32MAX),
    U8(11, TML__REQ, tml_manifest, dtype, TML_DTYPE_U8, TML_DTYPE_F32),
    ARRAY(12, TML__F_U32_ARRAY, TML__REQ, tml_manifest, input_shape, n_shape,
          1, TML_MAX_SHAPE, 1, U32MAX),
    U32(13, TML__REQ, tml_manifest, n_labels, 1, U32MAX),
    U32(14, TML__REQ, tml_manifest, n_vectors, 0, U32MAX),
    U32(15, TML__REQ, tml_manifest, vector_input_len, 0, U32MAX),
    U32(16, TML__REQ, tml_manifest, score_tol_bp, 0, 10000),
    ROW(17, TML__F_BOOL, TML__OPT, tml_manifest, resets_floor, 0, 0, 0, 0, 0,
        NULL),
    ARRAY(18, TML__F_BYTES_ARRAY, TML__OPT, tml_manifest, revoke_kids,
          n_revoke, 0, TML_MAX_REVOKE, 1, TML_MAX_KID),
};

static const struct tml__msg manifest_desc = {
    manifest_fields, N(manifest_fields), NULL, manifest_check};

/* ---- public functions ---------------------------------------------------- */

#define DEFINE_MSG(name, max_len)                                              \
    enum tml_err tml_##name##_encode(const struct tml_##name *m, uint8_t *buf, \
                                     size_t cap, size_t *out_len)              \
    {                                                                          \
        return tml__msg_encode(&name##_desc, m, buf, cap, max_len, out_len);            \
    }                                                                          \
    enum tml_err tml_##name##_decode(const uint8_t *buf, size_t len,           \
                                     struct tml_##name *out)                   \
    {                                                                          \
        if (out != NULL) {                                                     \
            memset(out, 0, sizeof *out);                                       \
        }                                                                      \
        return tml__msg_decode(&name##_desc, buf, len, max_len, out);          \
    }

DEFINE_MSG(hello, TML_MAX_MESSAGE)
DEFINE_MSG(state, TML_MAX_MESSAGE)
DEFINE_MSG(tele, TML_MAX_MESSAGE)
DEFINE_MSG(sample, TML_MAX_MESSAGE)
DEFINE_MSG(ota_up, TML_MAX_MESSAGE)
DEFINE_MSG(ack, TML_MAX_MESSAGE)
DEFINE_MSG(ota_down, TML_MAX_MESSAGE)
DEFINE_MSG(cmd, TML_MAX_MESSAGE)
DEFINE_MSG(manifest, TML_MAX_MANIFEST)
