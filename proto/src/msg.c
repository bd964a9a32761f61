/*
 * msg.c: the table-driven message encoder and decoder (see internal.h).
 *
 * Decoding a map (PROTOCOL.md "Encoding rules"): keys are unsigned or
 * negative integers in any order; a known key seen twice is a duplicate; an
 * unknown key >= 0 is skipped (its value must still be well-formed and is
 * remembered, up to TML__MAX_UNKNOWN, so that duplicates among unknown keys
 * are caught too); any negative key is "must understand" and none is defined
 * in version 1, so it is rejected. Key 0, the version, is checked as soon as
 * it is read so that a message from a newer major version says so.
 *
 * Encoding writes keys in ascending order (the table order), which is also
 * RFC 8949 4.2.1 deterministic order for small unsigned keys.
 */
#include <string.h>

#include "internal.h"

#define FIELD_PTR(base, off) ((uint8_t *)(base) + (off))
#define CFIELD_PTR(base, off) ((const uint8_t *)(base) + (off))

static uint64_t
key_bit(uint8_t key)
{
    return (uint64_t)1 << key;
}

static uint64_t
required_keys(const struct tml__msg *desc, const void *m)
{
    uint64_t req = desc->need != NULL ? desc->need(m) : 0;
    size_t i;

    for (i = 0; i < desc->n_fields; i++) {
        if (desc->fields[i].flags & TML__REQ) {
            req |= key_bit(desc->fields[i].key);
        }
    }
    return req;
}

static enum tml_err
check_u32(const struct tml__field *f, uint64_t v)
{
    return (v < f->min || v > f->max) ? TML_ERR_RANGE : TML_OK;
}

static enum tml_err
check_len(size_t len, uint32_t min, uint32_t max)
{
    if (len > max) {
        return TML_ERR_OVERSIZE;
    }
    return len < min ? TML_ERR_RANGE : TML_OK;
}

static enum tml_err
check_str(const struct tml_str *s, uint32_t min, uint32_t max)
{
    enum tml_err err = check_len(s->len, min, max);

    if (err == TML_OK && s->len != 0 && s->p == NULL) {
        err = TML_ERR_INVAL;
    }
    if (err == TML_OK && !tml__utf8_valid((const uint8_t *)s->p, s->len)) {
        err = TML_ERR_TYPE;
    }
    return err;
}

static enum tml_err
check_bin(const struct tml_bin *b, uint32_t min, uint32_t max)
{
    enum tml_err err = check_len(b->len, min, max);

    if (err == TML_OK && b->len != 0 && b->p == NULL) {
        err = TML_ERR_INVAL;
    }
    return err;
}

/* ---- encoding ------------------------------------------------------------ */

/* Whether field f of struct m goes on the wire. */
static bool
emitted(const struct tml__field *f, const void *m, uint64_t need)
{
    const uint8_t *p = CFIELD_PTR(m, f->off);

    if (f->flags & TML__REQ) {
        return true;
    }
    if (f->flags & TML__GATED) {
        return (need & key_bit(f->key)) != 0;
    }
    if (f->flags & TML__HAS) {
        bool has;

        memcpy(&has, CFIELD_PTR(m, f->aux), sizeof has);
        return has;
    }
    switch (f->type) { /* TML__OPT */
    case TML__F_U32_ARRAY:
    case TML__F_TEXT_ARRAY:
    case TML__F_BYTES_ARRAY: {
        size_t n;

        memcpy(&n, CFIELD_PTR(m, f->aux), sizeof n);
        return n != 0;
    }
    case TML__F_BOOL:
        return *(const bool *)(const void *)p;
    case TML__F_U8:
        return *p != 0;
    default: {
        uint32_t v;

        memcpy(&v, p, sizeof v);
        return v != 0;
    }
    }
}

static enum tml_err encode_map(struct tml_enc *e, const struct tml__msg *desc,
                               const void *m);

static enum tml_err
encode_field(struct tml_enc *e, const struct tml__field *f, const void *m)
{
    const uint8_t *p = CFIELD_PTR(m, f->off);
    enum tml_err err = TML_OK;
    size_t n = 0;
    size_t i;

    switch (f->type) {
    case TML__F_VERSION:
        tml_enc_uint(e, TML_PROTO_VERSION);
        break;
    case TML__F_U32: {
        uint32_t v;

        memcpy(&v, p, sizeof v);
        err = check_u32(f, v);
        tml_enc_uint(e, v);
        break;
    }
    case TML__F_U8:
        err = check_u32(f, *p);
        tml_enc_uint(e, *p);
        break;
    case TML__F_I32: {
        int32_t v;

        memcpy(&v, p, sizeof v);
        tml_enc_int(e, v);
        break;
    }
    case TML__F_BOOL: {
        bool v;

        memcpy(&v, p, sizeof v);
        tml_enc_bool(e, v);
        break;
    }
    case TML__F_TEXT: {
        const struct tml_str *s = (const struct tml_str *)(const void *)p;

        err = check_str(s, f->min, f->max);
        tml_enc_text(e, s->p, s->len);
        break;
    }
    case TML__F_BYTES: {
        const struct tml_bin *b = (const struct tml_bin *)(const void *)p;

        err = check_bin(b, f->min, f->max);
        tml_enc_bytes(e, b->p, b->len);
        break;
    }
    case TML__F_FIXBYTES:
        tml_enc_bytes(e, p, f->max);
        break;
    case TML__F_U32_ARRAY:
    case TML__F_TEXT_ARRAY:
    case TML__F_BYTES_ARRAY:
        memcpy(&n, CFIELD_PTR(m, f->aux), sizeof n);
        err = check_len(n, f->min, f->max);
        if (err != TML_OK) {
            break;
        }
        tml_enc_array(e, n);
        for (i = 0; i < n && err == TML_OK; i++) {
            if (f->type == TML__F_U32_ARRAY) {
                uint32_t v;

                memcpy(&v, p + i * sizeof v, sizeof v);
                if (v < f->emin || v > f->emax) {
                    err = TML_ERR_RANGE;
                }
                tml_enc_uint(e, v);
            } else if (f->type == TML__F_TEXT_ARRAY) {
                const struct tml_str *s =
                    (const struct tml_str *)(const void *)p + i;

                err = check_str(s, f->emin, f->emax);
                tml_enc_text(e, s->p, s->len);
            } else {
                const struct tml_bin *b =
                    (const struct tml_bin *)(const void *)p + i;

                err = check_bin(b, f->emin, f->emax);
                tml_enc_bytes(e, b->p, b->len);
            }
        }
        break;
    case TML__F_MAP:
        err = encode_map(e, f->sub, p);
        break;
    default:
        err = TML_ERR_INVAL;
        break;
    }
    return err;
}

static enum tml_err
encode_map(struct tml_enc *e, const struct tml__msg *desc, const void *m)
{
    uint64_t need = desc->need != NULL ? desc->need(m) : 0;
    enum tml_err err = TML_OK;
    size_t n = 0;
    size_t i;

    for (i = 0; i < desc->n_fields; i++) {
        n += emitted(&desc->fields[i], m, need);
    }
    tml_enc_map(e, n);
    for (i = 0; i < desc->n_fields && err == TML_OK; i++) {
        const struct tml__field *f = &desc->fields[i];

        if (emitted(f, m, need)) {
            tml_enc_uint(e, f->key);
            err = encode_field(e, f, m);
        }
    }
    /* Cross-field rules last, in the same order as the decoder. */
    if (err == TML_OK && desc->check != NULL) {
        err = desc->check(m);
    }
    return err;
}

enum tml_err
tml__msg_encode(const struct tml__msg *desc, const void *m, uint8_t *buf,
                size_t cap, size_t max_len, size_t *out_len)
{
    struct tml_enc e;
    enum tml_err err;
    size_t len = 0;

    if (m == NULL || (buf == NULL && cap != 0)) {
        return TML_ERR_INVAL;
    }
    tml_enc_init(&e, buf, cap);
    err = encode_map(&e, desc, m);
    if (err == TML_OK) {
        err = tml_enc_finish(&e, &len);
    }
    if (err == TML_OK && len > max_len) {
        err = TML_ERR_OVERSIZE; /* the decoder would refuse it */
    }
    if (err == TML_OK && out_len != NULL) {
        *out_len = len;
    }
    return err;
}

/* ---- decoding ------------------------------------------------------------ */

static enum tml_err decode_map(struct tml_dec *d, const struct tml__msg *desc,
                               void *m);

static enum tml_err
dec_u32(struct tml_dec *d, const struct tml__field *f, uint32_t min,
        uint32_t max, uint32_t *out)
{
    uint64_t v = 0;
    enum tml_err err = tml_dec_uint(d, &v);

    (void)f;
    if (err == TML_OK && (v < min || v > max)) {
        err = TML_ERR_RANGE;
    }
    if (err == TML_OK) {
        *out = (uint32_t)v;
    }
    return err;
}

static enum tml_err
decode_field(struct tml_dec *d, const struct tml__field *f, void *m)
{
    uint8_t *p = FIELD_PTR(m, f->off);
    enum tml_err err = TML_OK;
    size_t n = 0;
    size_t i;

    switch (f->type) {
    case TML__F_VERSION: {
        uint64_t v = 0;

        err = tml_dec_uint(d, &v);
        if (err == TML_ERR_TYPE || (err == TML_OK && v != TML_PROTO_VERSION)) {
            err = TML_ERR_VERSION;
        }
        break;
    }
    case TML__F_U32: {
        uint32_t v = 0;

        err = dec_u32(d, f, f->min, f->max, &v);
        memcpy(p, &v, sizeof v);
        break;
    }
    case TML__F_U8: {
        uint32_t v = 0;

        err = dec_u32(d, f, f->min, f->max, &v);
        *p = (uint8_t)v;
        break;
    }
    case TML__F_I32: {
        int64_t v = 0;
        int32_t v32;

        err = tml_dec_int(d, &v);
        if (err == TML_OK && (v < INT32_MIN || v > INT32_MAX)) {
            err = TML_ERR_RANGE;
        }
        v32 = (int32_t)(err == TML_OK ? v : 0);
        memcpy(p, &v32, sizeof v32);
        break;
    }
    case TML__F_BOOL: {
        bool v = false;

        err = tml_dec_bool(d, &v);
        memcpy(p, &v, sizeof v);
        break;
    }
    case TML__F_TEXT: {
        struct tml_str s = {NULL, 0};

        err = tml_dec_text(d, &s);
        if (err == TML_OK) {
            err = check_len(s.len, f->min, f->max);
        }
        if (err == TML_OK) {
            memcpy(p, &s, sizeof s);
        }
        break;
    }
    case TML__F_BYTES:
    case TML__F_FIXBYTES: {
        struct tml_bin b = {NULL, 0};

        err = tml_dec_bytes(d, &b);
        if (err == TML_OK) {
            err = check_len(b.len,
                            f->type == TML__F_FIXBYTES ? f->max : f->min,
                            f->max);
        }
        if (err == TML_OK && f->type == TML__F_BYTES) {
            memcpy(p, &b, sizeof b);
        } else if (err == TML_OK) {
            memcpy(p, b.p, b.len);
        }
        break;
    }
    case TML__F_U32_ARRAY:
    case TML__F_TEXT_ARRAY:
    case TML__F_BYTES_ARRAY:
        err = tml_dec_array(d, &n);
        if (err != TML_OK) {
            break;
        }
        err = check_len(n, f->min, f->max);
        for (i = 0; i < n && err == TML_OK; i++) {
            if (f->type == TML__F_U32_ARRAY) {
                uint32_t v = 0;

                err = dec_u32(d, f, f->emin, f->emax, &v);
                memcpy(p + i * sizeof v, &v, sizeof v);
            } else if (f->type == TML__F_TEXT_ARRAY) {
                struct tml_str s = {NULL, 0};

                err = tml_dec_text(d, &s);
                if (err == TML_OK) {
                    err = check_len(s.len, f->emin, f->emax);
                }
                memcpy(p + i * sizeof s, &s, sizeof s);
            } else {
                struct tml_bin b = {NULL, 0};

                err = tml_dec_bytes(d, &b);
                if (err == TML_OK) {
                    err = check_len(b.len, f->emin, f->emax);
                }
                memcpy(p + i * sizeof b, &b, sizeof b);
            }
        }
        tml_dec_leave(d);
        if (err == TML_OK) {
            memcpy(FIELD_PTR(m, f->aux), &n, sizeof n);
        }
        break;
    case TML__F_MAP:
        err = decode_map(d, f->sub, p);
        break;
    default:
        err = TML_ERR_INVAL;
        break;
    }
    if (err == TML_OK && (f->flags & TML__HAS)) {
        bool has = true;

        memcpy(FIELD_PTR(m, f->aux), &has, sizeof has);
    }
    return err;
}

/* Reads one map key. Returns the field it names in *f, or *f = NULL after
 * skipping the value of an unknown key. */
static enum tml_err
next_key(struct tml_dec *d, const struct tml__msg *desc, uint64_t *seen,
         uint64_t *unknown, size_t *n_unknown, const struct tml__field **f)
{
    uint64_t key = 0;
    enum tml_err err;
    size_t i;

    *f = NULL;
    if (tml_dec_peek(d) == TML_CBOR_NINT) {
        int64_t neg = 0;

        err = tml_dec_int(d, &neg);
        /* Negative keys are must-understand; version 1 defines none. */
        return err == TML_OK ? TML_ERR_UNKNOWN_CRITICAL : err;
    }
    err = tml_dec_uint(d, &key);
    if (err != TML_OK) {
        return err;
    }
    for (i = 0; i < desc->n_fields; i++) {
        if (desc->fields[i].key == key) {
            *f = &desc->fields[i];
            if (*seen & key_bit((*f)->key)) {
                return TML_ERR_DUPLICATE;
            }
            *seen |= key_bit((*f)->key);
            return TML_OK;
        }
    }
    for (i = 0; i < *n_unknown; i++) {
        if (unknown[i] == key) {
            return TML_ERR_DUPLICATE;
        }
    }
    if (*n_unknown == TML__MAX_UNKNOWN) {
        return TML_ERR_OVERSIZE;
    }
    unknown[(*n_unknown)++] = key;
    return tml_dec_skip(d);
}

static enum tml_err
decode_map(struct tml_dec *d, const struct tml__msg *desc, void *m)
{
    uint64_t unknown[TML__MAX_UNKNOWN];
    size_t n_unknown = 0;
    uint64_t seen = 0;
    uint64_t req;
    size_t n = 0;
    size_t i;
    enum tml_err err = tml_dec_map(d, &n);

    if (err != TML_OK) {
        return err;
    }
    for (i = 0; i < n && err == TML_OK; i++) {
        const struct tml__field *f = NULL;

        err = next_key(d, desc, &seen, unknown, &n_unknown, &f);
        if (err == TML_OK && f != NULL) {
            err = decode_field(d, f, m);
        }
    }
    tml_dec_leave(d);
    if (err == TML_OK) {
        req = required_keys(desc, m);
        if ((seen & req) != req) {
            err = TML_ERR_MISSING;
        }
    }
    if (err == TML_OK && desc->check != NULL) {
        err = desc->check(m);
    }
    return err;
}

enum tml_err
tml__msg_decode(const struct tml__msg *desc, const uint8_t *buf, size_t len,
                size_t max_len, void *out)
{
    struct tml_dec d;
    enum tml_err err;

    if (out == NULL || (buf == NULL && len != 0)) {
        return TML_ERR_INVAL;
    }
    if (len > max_len) {
        return TML_ERR_OVERSIZE;
    }
    tml_dec_init(&d, buf, len);
    err = decode_map(&d, desc, out);
    if (err == TML_OK) {
        err = tml_dec_finish(&d);
    }
    return err;
}
