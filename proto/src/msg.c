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
 *
 * Scalars, strings and array elements go through one item encoder and one
 * item decoder each, so an array element obeys exactly the rules of a
 * single value of its type (the code is shared for the device's flash
 * budget too).
 */
#include <string.h>

#include "internal.h"

#define TYPE(f) ((f)->tf & 0x0fu)
#define PRES(f) (((f)->tf >> TML__PRES_SHIFT) & 3u)
#define IS_ARRAY(f) (((f)->tf & TML__F_ARRAY) != 0)

/* Table keys are < 32 (a row's key is a small protocol constant). */
static uint32_t
key_bit(uint8_t key)
{
    return (uint32_t)1 << key;
}

/* The offset of field f's value in its struct. */
static size_t
off_of(const struct tml__field *f)
{
    return f->off | (size_t)(f->tf & TML__OFF_HI) << 1;
}

static enum tml_err
check_len(size_t len, unsigned l)
{
    if (len > tml__lim_hi[l]) {
        return TML_ERR_OVERSIZE;
    }
    return len < tml__lim_lo[l] ? TML_ERR_RANGE : TML_OK;
}

/* Bytes one array element of type t takes in the C struct. */
static size_t
elem_size(unsigned t)
{
    return t == TML__F_U32 ? sizeof(uint32_t) : sizeof(struct tml_bin);
}

/* Reads a size_t or bool member at p (bool when is_bool). */
static size_t
get_aux(const uint8_t *p, bool is_bool)
{
    size_t n = 0;
    bool b = false;

    if (is_bool) {
        TML__MEMCPY(&b, p, sizeof b);
        return b;
    }
    TML__MEMCPY(&n, p, sizeof n);
    return n;
}

/* ---- encoding ------------------------------------------------------------ */

/* Whether field f of struct m goes on the wire. */
static bool
emitted(const struct tml__field *f, const uint8_t *m)
{
    const uint8_t *p = m + off_of(f);
    uint32_t v = 0;

    switch (PRES(f)) {
    case TML__REQ:
        return true;
    case TML__GATED: /* m[0] is the kind (internal.h GATED) */
        return ((uint8_t)f->aux >> (m[0] < 7 ? m[0] : 7)) & 1u;
    case TML__HAS:
        return get_aux(p + f->aux, true) != 0;
    default: /* TML__OPT */
        if (IS_ARRAY(f)) {
            return get_aux(p + f->aux, false) != 0;
        }
        if (TYPE(f) == TML__F_U32) {
            TML__MEMCPY(&v, p, sizeof v);
            return v != 0;
        }
        return *p != 0; /* U8, BOOL */
    }
}

/* Encodes one value of type t at p with limits l. */
static enum tml_err
encode_item(struct tml_enc *e, unsigned t, unsigned l, const uint8_t *p)
{
    enum tml_err err = TML_OK;
    uint32_t v = *p;
    struct tml_bin b;

    switch (t) {
    case TML__F_VERSION:
        tml__enc_u32(e, TML_PROTO_VERSION);
        break;
    case TML__F_U32:
        TML__MEMCPY(&v, p, sizeof v);
        /* fall through */
    case TML__F_U8:
        err = v < tml__lim_lo[l] || v > tml__lim_hi[l] ? TML_ERR_RANGE : TML_OK;
        tml__enc_u32(e, v);
        break;
    case TML__F_BOOL:
        tml_enc_bool(e, v != 0);
        break;
    case TML__F_TEXT:
    case TML__F_BYTES:
        /* struct tml_str and struct tml_bin have the same layout. */
        TML__MEMCPY(&b, p, sizeof b);
        err = check_len(b.len, l);
        /* An empty string may have no pointer (and is valid UTF-8). */
        if (err == TML_OK && b.len != 0 && b.p == NULL) {
            err = TML_ERR_INVAL;
        } else if (err == TML_OK && t == TML__F_TEXT &&
                   !tml__utf8_valid(b.p, b.len)) {
            err = TML_ERR_TYPE;
        }
        if (err == TML_OK) {
            tml__enc_string(e, t == TML__F_TEXT ? 3 : 2, b.p, b.len);
        }
        break;
    default: /* TML__F_FIXBYTES */
        tml__enc_string(e, 2, p, tml__lim_hi[l]);
        break;
    }
    return err;
}

static enum tml_err
encode_field(struct tml_enc *e, const struct tml__field *f, const uint8_t *m)
{
    unsigned l = f->lim;
    const uint8_t *p = m + off_of(f);
    enum tml_err err;
    size_t n, i;

    if (!IS_ARRAY(f)) {
        return encode_item(e, TYPE(f), l, p);
    }
    n = get_aux(p + f->aux, false);
    err = check_len(n, l);
    if (err == TML_OK) {
        tml_enc_array(e, n);
    }
    for (i = 0; i < n && err == TML_OK; i++) {
        err = encode_item(e, TYPE(f), l + 1, p + i * elem_size(TYPE(f)));
    }
    return err;
}

static enum tml_err
encode_map(struct tml_enc *e, const struct tml__msg *desc, const uint8_t *m)
{
    enum tml_err err = TML_OK;
    size_t n = 0;
    size_t i;

    for (i = 0; i < desc->n_fields; i++) {
        n += emitted(&desc->fields[i], m);
    }
    tml_enc_map(e, n);
    for (i = 0; i < desc->n_fields && err == TML_OK; i++) {
        const struct tml__field *f = &desc->fields[i];

        if (emitted(f, m)) {
            tml__enc_u32(e, f->key);
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
tml__msg_encode(const void *m, uint8_t *buf, size_t cap, size_t *out_len,
                const struct tml__msg *desc)
{
    struct tml_enc e;
    enum tml_err err;
    size_t len;

    if (m == NULL || (buf == NULL && cap != 0)) {
        return TML_ERR_INVAL;
    }
    tml_enc_init(&e, buf, cap);
    err = encode_map(&e, desc, m);
    if (err == TML_OK) {
        err = tml_enc_finish(&e, &len);
    }
    if (err == TML_OK && len > (size_t)desc->max64 * 64) {
        err = TML_ERR_OVERSIZE; /* the decoder would refuse it */
    }
    if (err == TML_OK && out_len != NULL) {
        *out_len = len;
    }
    return err;
}

/* ---- decoding ------------------------------------------------------------ */

/* Decodes one value of type t into p with limits l. */
static enum tml_err
decode_item(struct tml_dec *d, unsigned t, unsigned l, uint8_t *p)
{
    struct tml_bin b;
    enum tml_err err;
    uint64_t u;

    switch (t) {
    case TML__F_VERSION:
    case TML__F_U32:
    case TML__F_U8:
        err = tml_dec_uint(d, &u);
        if (t == TML__F_VERSION) {
            if (err == TML_ERR_TYPE ||
                (err == TML_OK && u != TML_PROTO_VERSION)) {
                err = TML_ERR_VERSION;
            }
            break;
        }
        if (err == TML_OK && (u < tml__lim_lo[l] || u > tml__lim_hi[l])) {
            err = TML_ERR_RANGE;
        }
        if (err == TML_OK && t == TML__F_U8) {
            *p = (uint8_t)u;
        } else if (err == TML_OK) {
            uint32_t u32 = (uint32_t)u;

            TML__MEMCPY(p, &u32, sizeof u32);
        }
        break;
    case TML__F_BOOL:
        err = tml_dec_bool(d, (bool *)p); /* p is a bool member */
        break;
    default: /* TML__F_TEXT, TML__F_BYTES, TML__F_FIXBYTES */
        /* struct tml_str and struct tml_bin have the same layout; a text
         * (major 3) is checked for UTF-8. */
        err = tml__dec_string(d, t == TML__F_TEXT ? 3 : 2, &b.p, &b.len);
        if (err == TML_OK) {
            err = check_len(b.len, l);
        }
        if (err == TML_OK && t == TML__F_FIXBYTES) {
            TML__MEMCPY(p, b.p, b.len);
        } else if (err == TML_OK) {
            TML__MEMCPY(p, &b, sizeof b);
        }
        break;
    }
    return err;
}

static enum tml_err
decode_field(struct tml_dec *d, const struct tml__field *f, uint8_t *m)
{
    unsigned l = f->lim;
    uint8_t *p = m + off_of(f);
    enum tml_err err;
    size_t n;
    size_t i;

    if (!IS_ARRAY(f)) {
        err = decode_item(d, TYPE(f), l, p);
        if (err == TML_OK && PRES(f) == TML__HAS) {
            bool has = true;

            TML__MEMCPY(p + f->aux, &has, sizeof has);
        }
        return err;
    }
    err = tml_dec_array(d, &n);
    if (err != TML_OK) {
        return err;
    }
    err = check_len(n, l);
    for (i = 0; i < n && err == TML_OK; i++) {
        err = decode_item(d, TYPE(f), l + 1, p + i * elem_size(TYPE(f)));
    }
    /* After an error the whole message is refused: d's depth no longer
     * matters. */
    if (err == TML_OK) {
        d->depth--; /* tml_dec_leave: tml_dec_array made it >= 1 */
        TML__MEMCPY(p + f->aux, &n, sizeof n);
    }
    return err;
}

/* Reads one map key. Returns the field it names in *f, or *f = NULL after
 * skipping the value of an unknown key. */
static enum tml_err
next_key(struct tml_dec *d, const struct tml__msg *desc, uint32_t *seen,
         uint64_t *unknown, size_t *n_unknown, const struct tml__field **f)
{
    uint64_t key;
    enum tml_err err;
    size_t i;

    *f = NULL;
    if (tml_dec_peek(d) == TML_CBOR_NINT) {
        int64_t neg;

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
decode_map(struct tml_dec *d, const struct tml__msg *desc, uint8_t *m)
{
    uint64_t unknown[TML__MAX_UNKNOWN];
    size_t n_unknown = 0;
    uint32_t seen = 0;
    uint32_t req;
    size_t n;
    size_t i;
    enum tml_err err = tml_dec_map(d, &n);

    if (err != TML_OK) {
        return err;
    }
    for (i = 0; i < n && err == TML_OK; i++) {
        const struct tml__field *f;

        err = next_key(d, desc, &seen, unknown, &n_unknown, &f);
        if (err == TML_OK && f != NULL) {
            err = decode_field(d, f, m);
        }
    }
    /* No tml_dec_leave: the map is the top level of d (tml__msg_decode's
     * own decoder), whose depth nothing reads after it. */
    if (err == TML_OK) {
        req = 0;
        for (i = 0; i < desc->n_fields; i++) {
            const struct tml__field *f = &desc->fields[i];

            /* REQ rows, and the GATED ones the decoded kind selects. */
            if (PRES(f) <= TML__GATED && emitted(f, m)) {
                req |= key_bit(f->key);
            }
        }
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
tml__msg_decode(const uint8_t *buf, size_t len, void *out,
                const struct tml__msg *desc)
{
    struct tml_dec d;
    enum tml_err err;

    if (out == NULL) {
        return TML_ERR_INVAL;
    }
    /* Fields absent on the wire are zero/false (proto.h), whatever the
     * outcome. */
    memset(out, 0, desc->size);
    if (buf == NULL && len != 0) {
        return TML_ERR_INVAL;
    }
    if (len > (size_t)desc->max64 * 64) {
        return TML_ERR_OVERSIZE;
    }
    tml_dec_init(&d, buf, len);
    err = decode_map(&d, desc, out);
    if (err == TML_OK) {
        err = tml_dec_finish(&d);
    }
    return err;
}
