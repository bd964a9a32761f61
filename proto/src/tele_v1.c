/*
 * tele_v1.c: the gateway side of up/tele. tml_tele_decode reads key 0 and
 * decodes version 2, the packed summary (tele.c), or version 1, the map of
 * CBOR integers that agents older than the packed form still send and that
 * tmld has stored in its tables (PROTOCOL.md 3 and "up/tele, version 1").
 * Any other version is TML_ERR_VERSION.
 *
 * Version 1 keeps every rule its decoder had: shortest forms, u32 and i32
 * ranges, seq and lw >= 1 and lw <= seq, at most 32 classes and 16 bins,
 * the four health numbers required, duplicate keys (known or unknown),
 * negative keys, more than 16 unknown keys, nesting, trailing bytes. Keys
 * 0..13 and 18 go through the generic table decoder; the arrays (14..16)
 * and the health map (17), whose row types the device's codec no longer
 * has, are skipped there as unknown keys (so well-formedness, depth and
 * duplicates are checked in that pass) and read in a second pass over the
 * already checked map. So they count as unknown keys there: a version 1
 * tele may carry 16 - (those present) unknown keys of its own (agents of
 * version 1 sent none).
 *
 * The device never decodes a tele: none of this file is in its flash
 * (firmware-agent/arm/size.sh links with --gc-sections).
 */
#include <stddef.h>
#include <string.h>

#include "internal.h"

#define TELE_V1 1u

static const struct tml__field v1_fields[] = {
    ROW(0, TML__F_VERSION, REQ, tml_tele, seq, 0, L_ANY),
    U32(1, REQ, tml_tele, seq, L_POS),
    U32(2, REQ, tml_tele, model_version, L_ANY),
    U32(3, REQ, tml_tele, period_s, L_ANY),
    U32(4, REQ, tml_tele, age_s, L_ANY),
    U32(5, REQ, tml_tele, n_inferences, L_ANY),
    U32(6, REQ, tml_tele, n_low_conf, L_ANY),
    U32(7, REQ, tml_tele, n_flagged, L_ANY),
    U32(8, REQ, tml_tele, n_errors, L_ANY),
    U32(9, REQ, tml_tele, n_folded, L_ANY),
    U32(10, REQ, tml_tele, n_samples_dropped, L_ANY),
    U32(11, REQ, tml_tele, lat_min_us, L_ANY),
    U32(12, REQ, tml_tele, lat_mean_us, L_ANY),
    U32(13, REQ, tml_tele, lat_max_us, L_ANY),
    U32(18, OPT, tml_tele, lw, L_POS),
};

static enum tml_err
v1_check(const void *m)
{
    const struct tml_tele *t = m;

    /* A record is held until acked, so the low-water cannot be above it. */
    return t->lw > t->seq ? TML_ERR_RANGE : TML_OK;
}

/* size 0: tml_tele_decode zeroes the struct (and reads key 0) first. */
static const struct tml__msg v1_desc = {
    v1_fields, N(v1_fields), TML__MAX64(TML_MAX_MESSAGE), 0, v1_check};

/* Health key 3 (temp_dc, an i32) is read by hand, like the arrays. */
static const struct tml__field health_fields[] = {
    U32(1, REQ, tml_health, free_ram, L_ANY),
    U32(2, REQ, tml_health, supply_mv, L_ANY),
    U32(4, REQ, tml_health, uptime_s, L_ANY),
};

static const struct tml__msg health_desc = {
    health_fields, N(health_fields), TML__MAX64(TML_MAX_MESSAGE), 0, NULL};

/* Finds the value of unsigned key in the map buf[0..len): TML_OK with *v
 * its bytes, TML_ERR_MISSING if the key is absent, or the first error met
 * on the way (a negative key gives TML_ERR_TYPE). */
static enum tml_err
find_key(const uint8_t *buf, size_t len, uint64_t key, struct tml_bin *v)
{
    struct tml_dec d;
    size_t n = 0, i;
    enum tml_err err;

    tml_dec_init(&d, buf, len);
    err = tml_dec_map(&d, &n);
    for (i = 0; i < n && err == TML_OK; i++) {
        uint64_t k = 0;

        err = tml_dec_uint(&d, &k);
        v->p = d.p;
        if (err == TML_OK) {
            err = tml_dec_skip(&d);
        }
        if (err == TML_OK && k == key) {
            v->len = (size_t)(d.p - v->p);
            return TML_OK;
        }
    }
    return err == TML_OK ? TML_ERR_MISSING : err;
}

/* An array of at most max u32 (keys 14..16). */
static enum tml_err
get_u32s(struct tml_dec *d, uint32_t *a, size_t max, size_t *count)
{
    size_t n = 0, i;
    enum tml_err err = tml_dec_array(d, &n);

    if (err != TML_OK) {
        return err;
    }
    if (n > max) {
        err = TML_ERR_OVERSIZE;
    }
    for (i = 0; i < n && err == TML_OK; i++) {
        uint64_t u = 0;

        err = tml_dec_uint(d, &u);
        if (err == TML_OK && u > 0xffffffffu) {
            err = TML_ERR_RANGE;
        }
        a[i] = (uint32_t)u;
    }
    tml_dec_leave(d);
    *count = err == TML_OK ? n : 0;
    return err;
}

/* The health map (key 17), v its bytes. */
static enum tml_err
get_health(const struct tml_bin *v, struct tml_health *h)
{
    struct tml_bin temp = {NULL, 0};
    struct tml_dec d;
    int64_t t = 0;
    enum tml_err err = tml__msg_decode(v->p, v->len, h, &health_desc);

    if (err == TML_OK) {
        err = find_key(v->p, v->len, 3, &temp);
    }
    if (err == TML_OK) {
        tml_dec_init(&d, temp.p, temp.len);
        err = tml_dec_int(&d, &t);
    }
    if (err == TML_OK && (t < INT32_MIN || t > INT32_MAX)) {
        err = TML_ERR_RANGE;
    }
    h->temp_dc = err == TML_OK ? (int32_t)t : 0;
    return err;
}

static enum tml_err
tele_v1_decode(const uint8_t *buf, size_t len, struct tml_tele *t)
{
    enum tml_err err = tml__msg_decode(buf, len, t, &v1_desc);
    struct tml_dec d;
    size_t n = 0, i;

    /* Second pass: the map is well-formed and has no negative key now. */
    tml_dec_init(&d, buf, len);
    if (err == TML_OK) {
        err = tml_dec_map(&d, &n);
    }
    for (i = 0; i < n && err == TML_OK; i++) {
        struct tml_bin v = {NULL, 0};
        uint64_t k = 0;

        err = tml_dec_uint(&d, &k);
        if (err != TML_OK) {
            break;
        }
        switch (k) {
        case 14:
            err = get_u32s(&d, t->class_counts, TML_MAX_CLASSES, &t->n_classes);
            break;
        case 15:
            err = get_u32s(&d, t->conf_hist, TML_MAX_BINS, &t->n_conf_bins);
            break;
        case 16:
            err = get_u32s(&d, t->lat_hist, TML_MAX_BINS, &t->n_lat_bins);
            break;
        default:
            v.p = d.p;
            err = tml_dec_skip(&d);
            v.len = (size_t)(d.p - v.p);
            if (err == TML_OK && k == 17) {
                err = get_health(&v, &t->health);
                t->has_health = err == TML_OK;
            }
            break;
        }
    }
    return err;
}

enum tml_err
tml_tele_decode(const uint8_t *buf, size_t len, struct tml_tele *out)
{
    struct tml_bin v = {NULL, 0};
    uint64_t version = 0;
    struct tml_dec d;
    enum tml_err err;

    if (out == NULL) {
        return TML_ERR_INVAL;
    }
    memset(out, 0, sizeof *out);
    /* Key 0 decides the form; a well-formed map without it has no form
     * (TML_ERR_MISSING, whatever its other keys hold). Where key 0 cannot
     * be read (malformed input before it, oversized input) the version 2
     * decoder reports the error as every other message does. */
    err = buf != NULL && len <= TML_MAX_MESSAGE ? find_key(buf, len, 0, &v)
                                                : TML_ERR_INVAL;
    if (err == TML_ERR_MISSING) {
        return err;
    }
    if (err == TML_OK) {
        tml_dec_init(&d, v.p, v.len);
        err = tml_dec_uint(&d, &version);
        if (err == TML_ERR_TYPE || (err == TML_OK && version != TELE_V1 &&
                                    version != TML_TELE_VERSION)) {
            return TML_ERR_VERSION;
        }
        if (err == TML_OK && version == TELE_V1) {
            return tele_v1_decode(buf, len, out);
        }
    }
    return tml__tele_v2_decode(buf, len, out);
}
