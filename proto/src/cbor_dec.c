/*
 * cbor_dec.c: the CBOR pull decoder over one caller buffer.
 *
 * It accepts only what the protocol allows (proto.h, PROTOCOL.md "Encoding
 * rules"): definite lengths, shortest-form arguments, valid UTF-8 in text
 * strings, nesting up to TML_CBOR_MAX_DEPTH. A failed call consumes nothing.
 * Every length is checked against the bytes left before it is used, so no
 * read goes past `end`. No recursion: tml_dec_skip keeps an explicit stack
 * bounded by the depth limit.
 */
#include <string.h>

#include "internal.h"

/* One decoded initial byte plus argument. */
struct head {
    uint8_t major;
    uint8_t ai;
    uint64_t arg;
    const uint8_t *next; /* the byte after the head */
};

void
tml_dec_init(struct tml_dec *d, const void *buf, size_t len)
{
    /* No arithmetic on a NULL buffer (an empty MQTT payload may come as
     * NULL, 0): even NULL + 0 is undefined in C. */
    d->p = (const uint8_t *)buf;
    d->end = buf == NULL ? d->p : d->p + len;
    d->depth = 0;
}

static size_t
avail(const struct tml_dec *d)
{
    return (size_t)(d->end - d->p);
}

/* Reads the head at d->p without consuming it. Rejects indefinite lengths
 * and break (AI 31), reserved AI 28..30, a truncated argument and any
 * argument that has a shorter encoding (RFC 8949 4.2.1): a 1-byte argument
 * below 24, or a longer one whose upper half is zero. */
static enum tml_err
read_head(const struct tml_dec *d, struct head *h)
{
    const uint8_t *p = d->p;
    uint64_t arg = 0;
    uint8_t upper = 0;
    size_t n;
    size_t i;

    if (p >= d->end) {
        return TML_ERR_TRUNCATED;
    }
    h->major = (uint8_t)(p[0] >> 5);
    h->ai = (uint8_t)(p[0] & 31);
    h->arg = h->ai;
    h->next = p + 1;
    if (h->ai < 24) {
        return TML_OK;
    }
    if (h->ai == 31) {
        return TML_ERR_INDEFINITE;
    }
    if (h->ai > 27) {
        return TML_ERR_UNSUPPORTED; /* reserved, not well-formed */
    }
    n = (size_t)1 << (h->ai - 24);
    if (avail(d) - 1 < n) {
        return TML_ERR_TRUNCATED;
    }
    for (i = 1; i <= n; i++) {
        arg = (arg << 8) | p[i];
        if (2 * i <= n) {
            upper |= p[i];
        }
    }
    h->arg = arg;
    h->next = p + 1 + n;
    /* Major 7: AI 24 carries a simple value, which must be >= 32 (RFC 8949
     * 3.3); AI 25..27 are floats, rejected later as unsupported. */
    if (n == 1 ? p[1] < (h->major == 7 ? 32 : 24)
               : (h->major != 7 && upper == 0)) {
        return TML_ERR_NON_MINIMAL;
    }
    return TML_OK;
}

/* The error for "this item is not the type asked for": items the protocol
 * never uses anywhere (tags, floats, undefined, other simple values) are
 * TML_ERR_UNSUPPORTED, everything else TML_ERR_TYPE. */
static enum tml_err
mismatch(const struct head *h)
{
    if (h->major == 6 || (h->major == 7 && (h->ai < 20 || h->ai > 22))) {
        return TML_ERR_UNSUPPORTED;
    }
    return TML_ERR_TYPE;
}

/* read_head, and the item must have one of the major types in the bit set
 * majors (bit m = major type m). */
static enum tml_err
expect(const struct tml_dec *d, struct head *h, unsigned majors)
{
    enum tml_err err = read_head(d, h);

    if (err == TML_OK && ((majors >> h->major) & 1u) == 0) {
        err = mismatch(h);
    }
    return err;
}

/* enum tml_cbor_type lists the major types 0..7 in order, so the major
 * type is the tml_cbor_type. */
typedef char tml__type_is_major[TML_CBOR_UINT == 0 && TML_CBOR_NINT == 1 &&
                                        TML_CBOR_BYTES == 2 &&
                                        TML_CBOR_TEXT == 3 &&
                                        TML_CBOR_ARRAY == 4 &&
                                        TML_CBOR_MAP == 5 &&
                                        TML_CBOR_TAG == 6 &&
                                        TML_CBOR_SIMPLE == 7
                                    ? 1
                                    : -1];

enum tml_cbor_type
tml_dec_peek(const struct tml_dec *d)
{
    if (d->p >= d->end) {
        return TML_CBOR_END;
    }
    return (enum tml_cbor_type)(d->p[0] >> 5); /* tml__type_is_major */
}

enum tml_err
tml_dec_uint(struct tml_dec *d, uint64_t *v)
{
    struct head h;
    enum tml_err err = expect(d, &h, 1u << 0);

    if (err == TML_OK) {
        *v = h.arg;
        d->p = h.next;
    }
    return err;
}

enum tml_err
tml_dec_int(struct tml_dec *d, int64_t *v)
{
    struct head h;
    enum tml_err err = expect(d, &h, 1u << 0 | 1u << 1);

    if (err == TML_OK && h.arg > (uint64_t)INT64_MAX) {
        err = TML_ERR_RANGE;
    }
    if (err == TML_OK) {
        /* Major 1 encodes -1 - arg; arg <= INT64_MAX so this fits. */
        *v = h.major == 0 ? (int64_t)h.arg : -1 - (int64_t)h.arg;
        d->p = h.next;
    }
    return err;
}

bool
tml__utf8_valid(const uint8_t *p, size_t len)
{
    /* Counts down len instead of comparing against p + len: an empty
     * string may come with p == NULL, and NULL + 0 is undefined in C. */
    while (len > 0) {
        uint32_t cp = *p++;
        size_t n;
        size_t k;

        len--;
        if (cp < 0x80) {
            continue;
        }
        if (cp < 0xc2 || cp > 0xf4) {
            return false; /* continuation byte, C0/C1, F5..FF */
        }
        /* C2..DF: 1 continuation byte, E0..EF: 2, F0..F4: 3. */
        n = cp >= 0xf0 ? 3 : cp >= 0xe0 ? 2 : 1;
        if (len < n) {
            return false;
        }
        len -= n;
        cp &= 0x3fu >> n;
        for (k = 0; k < n; k++, p++) {
            if ((*p & 0xc0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (*p & 0x3fu);
        }
        /* No overlong form (below 1 << (5n + 1): 3 bytes below U+0800,
         * 4 below U+10000; a 2-byte form, its lead C2 or more, is at least
         * U+0080 > 1 << 6), nothing above U+10FFFF, no surrogates
         * (U+D800..DFFF). */
        if (cp < (uint32_t)1 << (5 * n + 1) || cp > 0x10ffffu ||
            (cp >> 11) == 0x1bu) {
            return false;
        }
    }
    return true;
}

/* Reads a byte (major 2) or text (major 3) string; *p and *len are
 * written only on success. */
enum tml_err
tml__dec_string(struct tml_dec *d, uint8_t major, const uint8_t **p,
                size_t *len)
{
    struct head h;
    enum tml_err err = expect(d, &h, 1u << major);

    if (err == TML_OK && h.arg > (size_t)(d->end - h.next)) {
        err = TML_ERR_TRUNCATED;
    }
    if (err == TML_OK && major == 3 &&
        !tml__utf8_valid(h.next, (size_t)h.arg)) {
        err = TML_ERR_TYPE; /* not a valid text string */
    }
    if (err == TML_OK) {
        *p = h.next;
        *len = (size_t)h.arg;
        d->p = h.next + (size_t)h.arg;
    }
    return err;
}

enum tml_err
tml_dec_bytes(struct tml_dec *d, struct tml_bin *v)
{
    return tml__dec_string(d, 2, &v->p, &v->len); /* *v written on success */
}

enum tml_err
tml_dec_text(struct tml_dec *d, struct tml_str *v)
{
    const uint8_t *p = NULL;
    size_t len = 0;
    enum tml_err err = tml__dec_string(d, 3, &p, &len);

    if (err == TML_OK) {
        v->p = (const char *)p;
        v->len = len;
    }
    return err;
}

/* Checks a container head: depth, and a count that the remaining input can
 * hold (every item takes at least one byte), so that a claimed 2^64-1
 * elements fails here as truncated. */
static enum tml_err
container(const struct tml_dec *d, const struct head *h)
{
    uint64_t left = (size_t)(d->end - h->next);

    if (d->depth >= TML_CBOR_MAX_DEPTH) {
        return TML_ERR_DEPTH;
    }
    /* An array (major 4) of arg items, a map (major 5) of 2 * arg. */
    if (h->arg > left >> (h->major & 1)) {
        return TML_ERR_TRUNCATED;
    }
    return TML_OK;
}

static enum tml_err
dec_container(struct tml_dec *d, uint8_t major, size_t *n)
{
    struct head h;
    enum tml_err err = expect(d, &h, 1u << major);

    if (err == TML_OK) {
        err = container(d, &h);
    }
    if (err == TML_OK) {
        *n = (size_t)h.arg;
        d->p = h.next;
        d->depth++;
    }
    return err;
}

enum tml_err
tml_dec_array(struct tml_dec *d, size_t *n)
{
    return dec_container(d, 4, n);
}

enum tml_err
tml_dec_map(struct tml_dec *d, size_t *n)
{
    return dec_container(d, 5, n);
}

void
tml_dec_leave(struct tml_dec *d)
{
    if (d->depth > 0) {
        d->depth--;
    }
}

/* false/true (simple values 20, 21) and null (22): each its own few lines
 * rather than one shared helper, so that a device, which reads only
 * booleans, links no more than tml_dec_bool. */
enum tml_err
tml_dec_bool(struct tml_dec *d, bool *v)
{
    struct head h;
    enum tml_err err = expect(d, &h, 1u << 7);

    if (err == TML_OK && (h.ai < 20 || h.ai > 21)) {
        err = mismatch(&h);
    }
    if (err == TML_OK) {
        *v = h.ai == 21;
        d->p = h.next;
    }
    return err;
}

enum tml_err
tml_dec_null(struct tml_dec *d)
{
    struct head h;
    enum tml_err err = expect(d, &h, 1u << 7);

    if (err == TML_OK && h.ai != 22) {
        err = mismatch(&h);
    }
    if (err == TML_OK) {
        d->p = h.next;
    }
    return err;
}

enum tml_err
tml_dec_tag(struct tml_dec *d, uint64_t *tag)
{
    struct head h;
    enum tml_err err = read_head(d, &h);

    if (err == TML_OK && h.major != 6) {
        err = TML_ERR_TYPE;
    }
    if (err == TML_OK) {
        *tag = h.arg;
        d->p = h.next;
    }
    return err;
}

enum tml_err
tml_dec_skip(struct tml_dec *d)
{
    /* left[k]: items still to skip at nesting level k below the start
     * (container() bounds every count by the bytes left, so size_t). */
    size_t left[TML_CBOR_MAX_DEPTH + 1];
    size_t top = 0;
    struct tml_dec t = *d;
    enum tml_err err = TML_OK;

    left[0] = 1;
    while (err == TML_OK && (left[top] > 0 || top > 0)) {
        struct head h;
        const uint8_t *p;
        size_t len;

        if (left[top] == 0) {
            top--;
            t.depth--;
            continue;
        }
        left[top]--;
        err = read_head(&t, &h);
        if (err != TML_OK) {
            break;
        }
        if (h.major == 2 || h.major == 3) {
            err = tml__dec_string(&t, h.major, &p, &len);
        } else if (h.major == 4 || h.major == 5) {
            /* dec_container reads the head again: sharing its checks
             * takes less flash than repeating them here. */
            err = dec_container(&t, h.major, &len);
            if (err == TML_OK) {
                left[++top] = h.major == 4 ? len : 2 * len;
            }
        } else if (mismatch(&h) == TML_ERR_TYPE) {
            /* an item the protocol uses (mismatch): here an integer,
             * false, true or null */
            t.p = h.next;
        } else {
            /* tags, floats and simple values other than bool/null */
            err = TML_ERR_UNSUPPORTED;
        }
    }
    if (err == TML_OK) {
        d->p = t.p;
    }
    return err;
}

enum tml_err
tml_dec_finish(const struct tml_dec *d)
{
    return d->p == d->end ? TML_OK : TML_ERR_TRAILING;
}
