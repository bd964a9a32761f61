/*
 * messages.c: the key tables of every protocol message and their public
 * encode/decode functions. The tables ARE the wire format: PROTOCOL.md's CDDL
 * lists the same keys, types and limits, and tests/proto checks both agree.
 * Keys are small unsigned integers in ascending order; key 0 is the version.
 */
#include <stddef.h>

#include "internal.h"

/* Lows fit a byte; two arrays instead of (lo, hi) pairs save 3 bytes a
 * limit of the device's flash. */
const uint8_t tml__lim_lo[] = {LIMITS(LIM_LO)};
const uint32_t tml__lim_hi[] = {LIMITS(LIM_HI)};

#define BIT(k) ((uint32_t)1 << (k))

/* A message: its table, the size of its C struct (the decoder zeroes it
 * first) and its largest encoded form, so that each public function is a
 * single call (the device links seven). */
#define DEF(name, fields, check, max_len)                                      \
    static const struct tml__msg name##_def = {                                \
        fields,                                                                \
        N(fields),                                                             \
        TML__MAX64(max_len),                                                   \
        (uint16_t)(sizeof(struct tml_##name) +                                 \
                   0 * sizeof(                                                 \
                           char[sizeof(struct tml_##name) < 65536 ? 1 : -1])), \
        check}

/* ---- up/hello ------------------------------------------------------------ */

static const struct tml__field hello_fields[] = {
    ROW(0, TML__F_VERSION, REQ, tml_hello, agent_version, 0, 0),
    U32(1, REQ, tml_hello, agent_version, L_ANY),
    TEXT(2, REQ, tml_hello, hw, L_NAME),
    TEXT(3, REQ, tml_hello, model, L_NAME0),
    U32(4, REQ, tml_hello, model_version, L_ANY),
    U8(5, REQ, tml_hello, model_slot, L_BIT),
    U32(6, REQ, tml_hello, slot_size, L_ANY),
    U32(7, REQ, tml_hello, arena_size, L_ANY),
    U32(8, REQ, tml_hello, chunk_max, L_CHUNK),
    U32(9, REQ, tml_hello, boot_count, L_ANY),
    U8(10, REQ, tml_hello, last_ota_state, L_OSTATE),
    U8(11, REQ, tml_hello, last_ota_reason, L_OREASON),
    U32(12, REQ, tml_hello, last_ota_version, L_ANY),
    U32(13, REQ, tml_hello, version_floor, L_ANY),
    ARRAY(14, TML__F_TEXT, OPT, tml_hello, groups, n_groups, A_GROUPS),
    HAS_U32(15, tml_hello, nonce, has_nonce, L_ANY),
    U32(16, OPT, tml_hello, tele_next, L_POS),
    U32(17, OPT, tml_hello, sample_next, L_POS),
    U32(18, OPT, tml_hello, boot_id, L_POS),
    U32(19, OPT, tml_hello, epoch, L_POS),
};

DEF(hello, hello_fields, NULL, TML_MAX_MESSAGE);

/* ---- up/state ------------------------------------------------------------ */

static const struct tml__field state_fields[] = {
    ROW(0, TML__F_VERSION, REQ, tml_state, online, 0, 0),
    ROW(1, TML__F_BOOL, REQ, tml_state, online, 0, 0),
};

DEF(state, state_fields, NULL, TML_MAX_MESSAGE);

/* ---- up/tele: packed, see tele.c ---------------------------------------- */

/* ---- up/sample ----------------------------------------------------------- */

static enum tml_err
sample_check(const void *m)
{
    const struct tml_sample *s = m;

    /* The chunk must lie inside the input (PROTOCOL.md "Samples"). */
    if (s->data.len > s->total_len ||
        s->offset > s->total_len - s->data.len) {
        return TML_ERR_RANGE;
    }
    /* The low-water cannot be above the record's own number. */
    return s->lw > s->seq ? TML_ERR_RANGE : TML_OK;
}

static const struct tml__field sample_fields[] = {
    ROW(0, TML__F_VERSION, REQ, tml_sample, seq, 0, 0),
    U32(1, REQ, tml_sample, seq, L_POS),
    U32(2, REQ, tml_sample, sample_id, L_ANY),
    U32(3, REQ, tml_sample, model_version, L_ANY),
    U8(4, REQ, tml_sample, reason, L_REASON),
    U32(5, REQ, tml_sample, predicted, L_ANY),
    U32(6, REQ, tml_sample, confidence_bp, L_BP),
    HAS_U32(7, tml_sample, expected, has_expected, L_ANY),
    U8(8, REQ, tml_sample, dtype, L_DTYPE),
    ARRAY(9, TML__F_U32, REQ, tml_sample, shape, n_shape, A_SHAPE),
    U32(10, REQ, tml_sample, rate_hz, L_ANY),
    U32(11, REQ, tml_sample, age_s, L_ANY),
    U32(12, REQ, tml_sample, total_len, L_POS),
    U32(13, REQ, tml_sample, offset, L_ANY),
    BYTES(14, REQ, tml_sample, data, L_CHUNK),
    U32(15, OPT, tml_sample, lw, L_POS),
    U32(16, OPT, tml_sample, epoch, L_POS),
};

DEF(sample, sample_fields, sample_check, TML_MAX_MESSAGE);

/* ---- up/ota -------------------------------------------------------------- */

/* REQUEST carries len; STATUS (and for the encoder any kind but REQUEST,
 * which it then refuses at key 1) carries state and reason. */
#define NOT_REQUEST (0xffu & ~BIT(TML_OTA_UP_REQUEST))

static const struct tml__field ota_up_fields[] = {
    ROW(0, TML__F_VERSION, REQ, tml_ota_up, kind, 0, 0),
    U8(1, REQ, tml_ota_up, kind, L_UPKIND),
    U32(2, REQ, tml_ota_up, offer_id, L_ANY),
    U32(3, REQ, tml_ota_up, version, L_ANY),
    U32(4, REQ, tml_ota_up, offset, L_ANY),
    GATED(5, TML__F_U32, tml_ota_up, len, L_POS, BIT(TML_OTA_UP_REQUEST)),
    GATED(6, TML__F_U8, tml_ota_up, state, L_OSTATE, NOT_REQUEST),
    GATED(7, TML__F_U8, tml_ota_up, reason, L_OREASON, NOT_REQUEST),
    U32(8, OPT, tml_ota_up, passed, L_POS),
};

DEF(ota_up, ota_up_fields, NULL, TML_MAX_MESSAGE);

/* ---- down/ack ------------------------------------------------------------ */

static enum tml_err
ack_check(const void *m)
{
    const struct tml_ack *a = m;

    return (a->has_tele || a->has_sample) ? TML_OK : TML_ERR_MISSING;
}

static const struct tml__field ack_fields[] = {
    ROW(0, TML__F_VERSION, REQ, tml_ack, has_tele, 0, 0),
    HAS_U32(1, tml_ack, tele_seq, has_tele, L_ANY),
    HAS_U32(2, tml_ack, sample_seq, has_sample, L_ANY),
    U32(3, OPT, tml_ack, epoch, L_POS),
};

DEF(ack, ack_fields, ack_check, TML_MAX_MESSAGE);

/* ---- down/ota ------------------------------------------------------------ */

/* OFFER carries the manifest, CHUNK offset and data, CANCEL neither. */
static const struct tml__field ota_down_fields[] = {
    ROW(0, TML__F_VERSION, REQ, tml_ota_down, kind, 0, 0),
    U8(1, REQ, tml_ota_down, kind, L_DOWNKIND),
    U32(2, REQ, tml_ota_down, offer_id, L_ANY),
    GATED(3, TML__F_BYTES, tml_ota_down, manifest, L_MANIFEST,
          BIT(TML_OTA_DOWN_OFFER)),
    GATED(4, TML__F_U32, tml_ota_down, offset, L_ANY, BIT(TML_OTA_DOWN_CHUNK)),
    GATED(5, TML__F_BYTES, tml_ota_down, data, L_CHUNK,
          BIT(TML_OTA_DOWN_CHUNK)),
};

DEF(ota_down, ota_down_fields, NULL, TML_MAX_MESSAGE);

/* ---- down/cmd ------------------------------------------------------------ */

static const struct tml__field cmd_fields[] = {
    ROW(0, TML__F_VERSION, REQ, tml_cmd, kind, 0, 0),
    U8(1, REQ, tml_cmd, kind, L_CMDKIND),
    U32(2, REQ, tml_cmd, nonce, L_ANY),
    HAS_U32(3, tml_cmd, summary_period_s, has_summary_period, L_POS),
    HAS_U32(4, tml_cmd, sample_budget, has_sample_budget, L_ANY),
    HAS_U32(5, tml_cmd, budget_period_s, has_budget_period, L_POS),
    HAS_U32(6, tml_cmd, conf_threshold_bp, has_conf_threshold, L_BP),
    HAS_U32(7, tml_cmd, audit_ppm, has_audit_rate, L_PPM),
};

DEF(cmd, cmd_fields, NULL, TML_MAX_MESSAGE);

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
    ROW(0, TML__F_VERSION, REQ, tml_manifest, version, 0, 0),
    TEXT(1, REQ, tml_manifest, name, L_NAME),
    U32(2, REQ, tml_manifest, version, L_POS),
    TEXT(3, REQ, tml_manifest, hw, L_NAME),
    U32(4, REQ, tml_manifest, size, L_POS),
    ROW(5, TML__F_FIXBYTES, REQ, tml_manifest, sha256, 0, L_SHA),
    U32(6, REQ, tml_manifest, created, L_ANY),
    U32(7, REQ, tml_manifest, expires, L_ANY),
    U32(8, REQ, tml_manifest, model_size, L_POS),
    U32(9, REQ, tml_manifest, arena_size, L_ANY),
    U32(10, REQ, tml_manifest, min_agent_version, L_ANY),
    U8(11, REQ, tml_manifest, dtype, L_DTYPE),
    ARRAY(12, TML__F_U32, REQ, tml_manifest, input_shape, n_shape, A_SHAPE),
    U32(13, REQ, tml_manifest, n_labels, L_POS),
    U32(14, REQ, tml_manifest, n_vectors, L_ANY),
    U32(15, REQ, tml_manifest, vector_input_len, L_ANY),
    U32(16, REQ, tml_manifest, score_tol_bp, L_BP),
    ROW(17, TML__F_BOOL, OPT, tml_manifest, resets_floor, 0, 0),
    ARRAY(18, TML__F_BYTES, OPT, tml_manifest, revoke_kids, n_revoke, A_REVOKE),
};

DEF(manifest, manifest_fields, manifest_check, TML_MAX_MANIFEST);

/* ---- public functions ---------------------------------------------------- */

#define DEFINE_MSG(name)                                                       \
    enum tml_err tml_##name##_encode(const struct tml_##name *m, uint8_t *buf, \
                                     size_t cap, size_t *out_len)              \
    {                                                                          \
        return tml__msg_encode(m, buf, cap, out_len, &name##_def);             \
    }                                                                          \
    enum tml_err tml_##name##_decode(const uint8_t *buf, size_t len,           \
                                     struct tml_##name *out)                   \
    {                                                                          \
        return tml__msg_decode(buf, len, out, &name##_def);                    \
    }

DEFINE_MSG(hello)
DEFINE_MSG(state)
DEFINE_MSG(sample)
DEFINE_MSG(ota_up)
DEFINE_MSG(ack)
DEFINE_MSG(ota_down)
DEFINE_MSG(cmd)
DEFINE_MSG(manifest)
