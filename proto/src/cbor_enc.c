/*
 * cbor_enc.c: the CBOR encoder (RFC 8949), a sticky-error writer into one
 * caller buffer. It owns nothing. Every integer, length and tag argument is
 * written in its shortest form (RFC 8949 4.2.1, "preferred serialization"),
 * which is what our decoder demands. It never writes indefinite lengths or
 * floats.
 */
#include <string.h>

#include "internal.h"

void
tml_enc_init(struct tml_enc *e, uint8_t *buf, size_t cap)
{
    e->buf = buf;
    e->cap = cap;
    e->len = 0;
    e->err = (buf == NULL && cap != 0) ? TML_ERR_INVAL : TML_OK;
}

static void
put(struct tml_enc *e, const void *p, size_t n)
{
    if (e->err != TML_OK) {
        return;
    }
    if (n > e->cap - e->len) {
        e->err = TML_ERR_NOSPACE;
        return;
    }
    if (p != NULL && n != 0) { /* p NULL: reserve (tml__enc_reserve_bytes) */
        memcpy(e->buf + e->len, p, n);
    }
    e->len += n;
}

/* Writes the initial byte of major type `major` with argument v: in the
 * byte itself below 24, else 1, 2, 4 or 8 big-endian bytes after it
 * (additional information 24 + log2 of that count). v is a size_t, the
 * width of every length and, on a 32-bit device, of every number it
 * writes (tml__enc_u32), so a device does no 64-bit shifts here. */
static void
put_head(struct tml_enc *e, uint8_t major, size_t v)
{
    uint8_t h[1 + sizeof v];
    unsigned n = 0;
    unsigned ai = (unsigned)v;

    if (v >= 24) {
        for (n = 1, ai = 24; n < sizeof v && (v >> (8 * n)) != 0; n <<= 1) {
            ai++;
        }
    }
    h[0] = (uint8_t)(major << 5 | ai);
    for (unsigned i = n; i > 0; i--) {
        h[i] = (uint8_t)v;
        v >>= 8;
    }
    put(e, h, n + 1);
}

/* put_head for a 64-bit argument: where size_t is narrower, one above
 * SIZE_MAX takes the 8-byte form (it is >= 2^32, so that is shortest). */
static void
put_head64(struct tml_enc *e, uint8_t major, uint64_t v)
{
#if SIZE_MAX < UINT64_MAX
    if (v > SIZE_MAX) {
        uint8_t h[9];

        h[0] = (uint8_t)(major << 5 | 27);
        for (unsigned i = 8; i > 0; i--) {
            h[i] = (uint8_t)v;
            v >>= 8;
        }
        put(e, h, sizeof h);
        return;
    }
#endif
    put_head(e, major, (size_t)v);
}

typedef char tml__size_t_holds_uint32[SIZE_MAX >= UINT32_MAX ? 1 : -1];

void
tml__enc_u32(struct tml_enc *e, uint32_t v)
{
    put_head(e, 0, v);
}

void
tml_enc_uint(struct tml_enc *e, uint64_t v)
{
    put_head64(e, 0, v);
}

void
tml_enc_int(struct tml_enc *e, int64_t v)
{
    if (v >= 0) {
        put_head64(e, 0, (uint64_t)v);
    } else {
        /* -1 - v without overflow: v + 1 <= 0, so -(v + 1) fits. */
        put_head64(e, 1, (uint64_t)(-(v + 1)));
    }
}

void
tml__enc_string(struct tml_enc *e, uint8_t major, const void *p, size_t len)
{
    put_head(e, major, len);
    put(e, p, len); /* p NULL: reserves len bytes */
}

uint8_t *
tml__enc_reserve_bytes(struct tml_enc *e, size_t len)
{
    tml__enc_string(e, 2, NULL, len);
    return e->err == TML_OK ? e->buf + e->len - len : NULL;
}

/* The public string writers refuse a NULL pointer with a length (the
 * table encoder checks that itself before tml__enc_string). */
static void
enc_string(struct tml_enc *e, uint8_t major, const void *p, size_t len)
{
    if (e->err == TML_OK && p == NULL && len != 0) {
        e->err = TML_ERR_INVAL;
        return;
    }
    tml__enc_string(e, major, p, len);
}

void
tml_enc_bytes(struct tml_enc *e, const void *p, size_t len)
{
    enc_string(e, 2, p, len);
}

void
tml_enc_text(struct tml_enc *e, const char *p, size_t len)
{
    enc_string(e, 3, p, len);
}

void
tml_enc_array(struct tml_enc *e, size_t n)
{
    put_head(e, 4, n);
}

void
tml_enc_map(struct tml_enc *e, size_t n)
{
    put_head(e, 5, n);
}

/* false, true and null are simple values 20, 21 and 22 (major 7). */
void
tml_enc_bool(struct tml_enc *e, bool v)
{
    put_head(e, 7, v ? 21 : 20);
}

void
tml_enc_null(struct tml_enc *e)
{
    put_head(e, 7, 22);
}

void
tml_enc_tag(struct tml_enc *e, uint64_t tag)
{
    put_head64(e, 6, tag);
}

void
tml_enc_raw(struct tml_enc *e, const void *p, size_t len)
{
    if (e->err == TML_OK && p == NULL && len != 0) {
        e->err = TML_ERR_INVAL;
        return;
    }
    put(e, p, len);
}

enum tml_err
tml_enc_finish(const struct tml_enc *e, size_t *out_len)
{
    if (e->err == TML_OK && out_len != NULL) {
        *out_len = e->len;
    }
    return e->err;
}
