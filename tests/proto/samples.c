/*
 * samples.c: see samples.h. Test-only code, so it may use libc freely.
 */
#include <string.h>

#include "samples.h"

const uint8_t sample_sig[TML_ES256_SIG_LEN] = {
    1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
    17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
    33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48,
    49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64};
const uint8_t sample_kid[8] = {'o', 'p', 'k', 'e', 'y', '-', '0', '1'};

static const char name32[] = "abcdefghijklmnopqrstuvwxyz012345"; /* 32 */

static struct tml_str
str(const char *s, size_t len)
{
    struct tml_str v = {s, len};

    return v;
}

void
samples_init(struct samples_store *st)
{
    struct tml_manifest mf;
    uint8_t payload[TML_MAX_MANIFEST];
    size_t plen = 0;
    size_t i;

    memset(st, 0, sizeof *st);
    for (i = 0; i < sizeof st->chunk; i++) {
        st->chunk[i] = (uint8_t)(i * 7 + 3);
    }
    for (i = 0; i < TML_MAX_REVOKE; i++) {
        memset(st->kids[i], 'a' + (int)i, TML_MAX_KID);
    }
    sample_manifest(&mf, st, false);
    if (tml_manifest_encode(&mf, payload, sizeof payload, &plen) != TML_OK ||
        tml_cose_sign1_encode(sample_kid, sizeof sample_kid, payload, plen,
                              sample_sig, st->manifest, sizeof st->manifest,
                              &st->manifest_len) != TML_OK) {
        st->manifest_len = 0;
    }
}

void
sample_hello(struct tml_hello *m, bool max)
{
    size_t i;

    memset(m, 0, sizeof *m);
    m->hw = str("nrf52840", 8);
    m->chunk_max = 1;
    if (!max) {
        m->model = str("", 0);
        return;
    }
    m->agent_version = 0xffffffffu;
    m->hw = str(name32, TML_MAX_NAME);
    m->model = str(name32, TML_MAX_NAME);
    m->model_version = 0xffffffffu;
    m->model_slot = 1;
    m->slot_size = 0xffffffffu;
    m->arena_size = 0xffffffffu;
    m->chunk_max = TML_CHUNK_MAX;
    m->boot_count = 0xffffffffu;
    m->last_ota_state = TML_OTA_REVERTED;
    m->last_ota_reason = TML_OTA_R__COUNT - 1;
    m->last_ota_version = 0xffffffffu;
    m->version_floor = 0xffffffffu;
    m->n_groups = TML_MAX_GROUPS;
    for (i = 0; i < TML_MAX_GROUPS; i++) {
        m->groups[i] = str(name32 + i, TML_MAX_NAME - i);
    }
    m->has_nonce = true;
    m->nonce = 0xffffffffu;
    m->tele_next = 0xffffffffu;
    m->sample_next = 0xffffffffu;
    m->boot_id = 0xffffffffu;
    m->epoch = 0xffffffffu;
}

void
sample_state(struct tml_state *m, bool online)
{
    memset(m, 0, sizeof *m);
    m->online = online;
}

void
sample_tele(struct tml_tele *m, bool max)
{
    size_t i;

    memset(m, 0, sizeof *m);
    m->seq = 1;
    if (!max) {
        return;
    }
    m->seq = 0xffffffffu;
    m->model_version = 0xffffffffu;
    m->period_s = 0xffffffffu;
    m->age_s = 0xffffffffu;
    m->n_inferences = 0xffffffffu;
    m->n_low_conf = 0xfffffffeu;
    m->n_flagged = 0x10000u;
    m->n_errors = 0xffffu;
    m->n_folded = 0x100u;
    m->n_samples_dropped = 24;
    m->lat_min_us = 23;
    m->lat_mean_us = 0xffffffffu;
    m->lat_max_us = 0xffffffffu;
    m->n_classes = TML_MAX_CLASSES;
    for (i = 0; i < TML_MAX_CLASSES; i++) {
        m->class_counts[i] = 0xffffffffu - (uint32_t)i;
    }
    m->n_conf_bins = TML_MAX_BINS;
    m->n_lat_bins = TML_MAX_BINS;
    for (i = 0; i < TML_MAX_BINS; i++) {
        m->conf_hist[i] = (uint32_t)1 << (2 * i);
        m->lat_hist[i] = 0xffffffffu;
    }
    m->has_health = true;
    m->health.free_ram = 0xffffffffu;
    m->health.supply_mv = 3300;
    m->health.temp_dc = INT32_MIN;
    m->health.uptime_s = 0xffffffffu;
    m->lw = 0xffffffffu;
    m->epoch = 0xffffffffu;
}

void
sample_sample(struct tml_sample *m, const struct samples_store *st, bool max)
{
    size_t i;

    memset(m, 0, sizeof *m);
    m->seq = 1;
    m->reason = TML_REASON_FLAGGED;
    m->dtype = TML_DTYPE_U8;
    m->n_shape = 1;
    m->shape[0] = 1;
    m->total_len = 1;
    m->data.p = st->chunk;
    m->data.len = 1;
    if (!max) {
        return;
    }
    m->seq = 0xffffffffu;
    m->sample_id = 0xffffffffu;
    m->model_version = 0xffffffffu;
    m->reason = TML_REASON_AUDIT;
    m->predicted = 0xffffffffu;
    m->confidence_bp = 10000;
    m->has_expected = true;
    m->expected = 0;
    m->dtype = TML_DTYPE_F32;
    m->n_shape = TML_MAX_SHAPE;
    for (i = 0; i < TML_MAX_SHAPE; i++) {
        m->shape[i] = 0xffffffffu;
    }
    m->rate_hz = 16000;
    m->age_s = 0xffffffffu;
    m->total_len = 0xffffffffu;
    m->offset = 0xffffffffu - TML_CHUNK_MAX;
    m->data.len = TML_CHUNK_MAX;
    m->lw = 0xffffffffu;
    m->epoch = 0xffffffffu;
}

void
sample_ota_up(struct tml_ota_up *m, uint8_t kind, bool max)
{
    memset(m, 0, sizeof *m);
    m->kind = kind;
    if (kind == TML_OTA_UP_REQUEST) {
        m->len = max ? 0xffffffffu : 1;
    } else {
        m->state = max ? TML_OTA_REVERTED : TML_OTA_IDLE;
        m->reason = max ? TML_OTA_R__COUNT - 1 : TML_OTA_R_NONE;
        m->passed = max ? 0xffffffffu : 0;
    }
    if (max) {
        m->offer_id = 0xffffffffu;
        m->version = 0xffffffffu;
        m->offset = 0xffffffffu;
    }
}

size_t
sample_tele_v1_encode(const struct tml_tele *t, uint8_t *buf, size_t cap)
{
    const uint32_t head[] = {
        t->seq,        t->model_version,   t->period_s,   t->age_s,
        t->n_inferences, t->n_low_conf,    t->n_flagged,  t->n_errors,
        t->n_folded,   t->n_samples_dropped, t->lat_min_us, t->lat_mean_us,
        t->lat_max_us};
    const uint32_t *arr[] = {t->class_counts, t->conf_hist, t->lat_hist};
    const size_t n_arr[] = {t->n_classes, t->n_conf_bins, t->n_lat_bins};
    struct tml_enc e;
    size_t len = 0, i, k, n = 14;

    for (k = 0; k < 3; k++) {
        n += n_arr[k] != 0;
    }
    n += (t->has_health ? 1u : 0u) + (t->lw != 0 ? 1u : 0u);
    tml_enc_init(&e, buf, cap);
    tml_enc_map(&e, n);
    tml_enc_uint(&e, 0);
    tml_enc_uint(&e, 1);
    for (i = 0; i < 13; i++) {
        tml_enc_uint(&e, i + 1);
        tml_enc_uint(&e, head[i]);
    }
    for (k = 0; k < 3; k++) {
        if (n_arr[k] == 0) {
            continue;
        }
        tml_enc_uint(&e, 14 + k);
        tml_enc_array(&e, n_arr[k]);
        for (i = 0; i < n_arr[k]; i++) {
            tml_enc_uint(&e, arr[k][i]);
        }
    }
    if (t->has_health) {
        tml_enc_uint(&e, 17);
        tml_enc_map(&e, 4);
        tml_enc_uint(&e, 1);
        tml_enc_uint(&e, t->health.free_ram);
        tml_enc_uint(&e, 2);
        tml_enc_uint(&e, t->health.supply_mv);
        tml_enc_uint(&e, 3);
        tml_enc_int(&e, t->health.temp_dc);
        tml_enc_uint(&e, 4);
        tml_enc_uint(&e, t->health.uptime_s);
    }
    if (t->lw != 0) {
        tml_enc_uint(&e, 18);
        tml_enc_uint(&e, t->lw);
    }
    return tml_enc_finish(&e, &len) == TML_OK ? len : 0;
}

void
sample_ack(struct tml_ack *m, bool max)
{
    memset(m, 0, sizeof *m);
    m->has_tele = true;
    if (max) {
        m->tele_seq = 0xffffffffu;
        m->has_sample = true;
        m->sample_seq = 0xffffffffu;
        m->epoch = 0xffffffffu;
    }
}

void
sample_ota_down(struct tml_ota_down *m, const struct samples_store *st,
                uint8_t kind, bool max)
{
    memset(m, 0, sizeof *m);
    m->kind = kind;
    m->offer_id = max ? 0xffffffffu : 0;
    if (kind == TML_OTA_DOWN_OFFER) {
        m->manifest.p = st->manifest;
        m->manifest.len = st->manifest_len;
    } else if (kind == TML_OTA_DOWN_CHUNK) {
        m->offset = max ? 0xffffffffu : 0;
        m->data.p = st->chunk;
        m->data.len = max ? TML_CHUNK_MAX : 1;
    }
}

void
sample_cmd(struct tml_cmd *m, uint8_t kind, bool max)
{
    memset(m, 0, sizeof *m);
    m->kind = kind;
    if (!max) {
        return;
    }
    m->nonce = 0xffffffffu;
    m->has_summary_period = true;
    m->summary_period_s = 0xffffffffu;
    m->has_sample_budget = true;
    m->sample_budget = 0;
    m->has_budget_period = true;
    m->budget_period_s = 1;
    m->has_conf_threshold = true;
    m->conf_threshold_bp = 10000;
    m->has_audit_rate = true;
    m->audit_ppm = 1000000;
}

void
sample_manifest(struct tml_manifest *m, const struct samples_store *st,
                bool max)
{
    size_t i;

    memset(m, 0, sizeof *m);
    m->name = str("kws", 3);
    m->version = 1;
    m->hw = str("nrf52840", 8);
    m->size = 1;
    m->model_size = 1;
    m->dtype = TML_DTYPE_I8;
    m->n_shape = 1;
    m->input_shape[0] = 1;
    m->n_labels = 1;
    memset(m->sha256, 0xab, sizeof m->sha256);
    if (!max) {
        return;
    }
    m->name = str(name32, TML_MAX_NAME);
    m->version = 0xffffffffu;
    m->hw = str(name32, TML_MAX_NAME);
    m->model_size = 0xffffffffu - 2 * (1000 + 4);
    m->n_vectors = 2;
    m->vector_input_len = 1000;
    m->size = 0xffffffffu;
    m->created = 1700000000u;
    m->expires = 0xffffffffu;
    m->arena_size = 0xffffffffu;
    m->min_agent_version = 0xffffffffu;
    m->dtype = TML_DTYPE_F32;
    m->n_shape = TML_MAX_SHAPE;
    for (i = 0; i < TML_MAX_SHAPE; i++) {
        m->input_shape[i] = 0xffffffffu;
    }
    m->n_labels = 0xffffffffu;
    m->score_tol_bp = 10000;
    m->resets_floor = true;
    m->n_revoke = TML_MAX_REVOKE;
    for (i = 0; i < TML_MAX_REVOKE; i++) {
        m->revoke_kids[i].p = st->kids[i];
        m->revoke_kids[i].len = TML_MAX_KID;
    }
}

const char *
sample_encode(int i, struct samples_store *st, uint8_t *buf, size_t cap,
              size_t *len, int *which)
{
    union {
        struct tml_hello hello;
        struct tml_state state;
        struct tml_tele tele;
        struct tml_sample sample;
        struct tml_ota_up ota_up;
        struct tml_ack ack;
        struct tml_ota_down ota_down;
        struct tml_cmd cmd;
        struct tml_manifest manifest;
    } u;
    enum tml_err err = TML_ERR_INVAL;
    const char *name = NULL;
    uint8_t payload[TML_MAX_MANIFEST];
    size_t plen = 0;

    switch (i) {
    case 0:
    case 1:
        sample_hello(&u.hello, i == 1);
        err = tml_hello_encode(&u.hello, buf, cap, len);
        name = i == 1 ? "hello-max" : "hello-min";
        *which = 0;
        break;
    case 2:
        sample_state(&u.state, true);
        err = tml_state_encode(&u.state, buf, cap, len);
        name = "state-online";
        *which = 1;
        break;
    case 3:
    case 4:
        sample_tele(&u.tele, i == 4);
        err = tml_tele_encode(&u.tele, buf, cap, len);
        name = i == 4 ? "tele-max" : "tele-min";
        *which = 2;
        break;
    case 5:
    case 6:
        sample_sample(&u.sample, st, i == 6);
        err = tml_sample_encode(&u.sample, buf, cap, len);
        name = i == 6 ? "sample-max" : "sample-min";
        *which = 3;
        break;
    case 7:
    case 8:
        sample_ota_up(&u.ota_up, i == 7 ? TML_OTA_UP_REQUEST
                                        : TML_OTA_UP_STATUS, true);
        err = tml_ota_up_encode(&u.ota_up, buf, cap, len);
        name = i == 7 ? "ota_up-request" : "ota_up-status";
        *which = 4;
        break;
    case 9:
        sample_ack(&u.ack, true);
        err = tml_ack_encode(&u.ack, buf, cap, len);
        name = "ack-both";
        *which = 5;
        break;
    case 10:
    case 11:
        sample_ota_down(&u.ota_down, st,
                        i == 10 ? TML_OTA_DOWN_OFFER : TML_OTA_DOWN_CHUNK,
                        true);
        err = tml_ota_down_encode(&u.ota_down, buf, cap, len);
        name = i == 10 ? "ota_down-offer" : "ota_down-chunk";
        *which = 6;
        break;
    case 12:
        sample_cmd(&u.cmd, TML_CMD_SET, true);
        err = tml_cmd_encode(&u.cmd, buf, cap, len);
        name = "cmd-set";
        *which = 7;
        break;
    case 13:
        sample_manifest(&u.manifest, st, true);
        err = tml_manifest_encode(&u.manifest, buf, cap, len);
        name = "manifest-max";
        *which = 8;
        break;
    case 14:
        sample_manifest(&u.manifest, st, false);
        err = tml_manifest_encode(&u.manifest, payload, sizeof payload, &plen);
        if (err == TML_OK) {
            err = tml_cose_sign1_encode(sample_kid, sizeof sample_kid, payload,
                                        plen, sample_sig, buf, cap, len);
        }
        name = "cose-sign1";
        *which = 9;
        break;
    default:
        break;
    }
    return err == TML_OK ? name : NULL;
}

enum tml_err
sample_decode(int which, const uint8_t *buf, size_t len)
{
    union {
        struct tml_hello hello;
        struct tml_state state;
        struct tml_tele tele;
        struct tml_sample sample;
        struct tml_ota_up ota_up;
        struct tml_ack ack;
        struct tml_ota_down ota_down;
        struct tml_cmd cmd;
        struct tml_manifest manifest;
        struct tml_cose_sign1 cose;
    } u;

    switch (which) {
    case 0:
        return tml_hello_decode(buf, len, &u.hello);
    case 1:
        return tml_state_decode(buf, len, &u.state);
    case 2:
        return tml_tele_decode(buf, len, &u.tele);
    case 3:
        return tml_sample_decode(buf, len, &u.sample);
    case 4:
        return tml_ota_up_decode(buf, len, &u.ota_up);
    case 5:
        return tml_ack_decode(buf, len, &u.ack);
    case 6:
        return tml_ota_down_decode(buf, len, &u.ota_down);
    case 7:
        return tml_cmd_decode(buf, len, &u.cmd);
    case 8:
        return tml_manifest_decode(buf, len, &u.manifest);
    case 9:
        return tml_cose_sign1_decode(buf, len, &u.cose);
    default:
        return TML_ERR_INVAL;
    }
}
