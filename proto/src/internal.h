/*
 * internal.h: cross-file internals of proto/ (tml__ prefix), not installed.
 *
 * Messages are described by tables (struct tml__msg): one row per map key,
 * in ascending key order, saying where the value lives in the C struct, its
 * CBOR type and its limits. One generic encoder and one generic decoder
 * (msg.c) walk the tables, so every message obeys the same rules and the
 * encoder refuses exactly what the decoder would reject.
 *
 * A row is 6 bytes (the device links the tables of the directions it uses,
 * so they count in its flash budget): limits are an index into one shared
 * table of (lo, hi) pairs, and the has_/count member is a small signed
 * distance from the value's offset.
 */
#ifndef TML_PROTO_INTERNAL_H
#define TML_PROTO_INTERNAL_H

#include "tml/proto.h"

/* -ffreestanding implies -fno-builtin, so GCC calls memcpy even for the
 * 1..8-byte copies in and out of a struct member that the table codec
 * makes everywhere; TML__MEMCPY lets GCC and clang inline those again (a
 * variable length still becomes a call). Any other compiler: memcpy. */
#if defined(__GNUC__)
#define TML__MEMCPY __builtin_memcpy
#else
#define TML__MEMCPY memcpy
#endif

/* Most unknown (skipped) keys one map may carry; duplicates among them are
 * detected by remembering them. More gives TML_ERR_OVERSIZE. */
#define TML__MAX_UNKNOWN 16

/* Value types (low 4 bits of tml__field.tf); lims[lim] is the limit the
 * row's lim names. */
enum tml__ftype {
    TML__F_VERSION,  /* uint that must equal TML_PROTO_VERSION (no storage) */
    TML__F_U32,      /* uint32_t in lims[lim] */
    TML__F_U8,       /* uint8_t in lims[lim] */
    TML__F_BOOL,     /* bool */
    TML__F_TEXT,     /* struct tml_str, length in lims[lim] */
    TML__F_BYTES,    /* struct tml_bin, length in lims[lim] */
    TML__F_FIXBYTES  /* uint8_t[lims[lim].hi], exactly that many bytes */
};

/* TML__F_ARRAY | U32/TEXT/BYTES: an array of that type; the count (size_t
 * at aux) in lims[lim], each element in lims[lim + 1]. */
#define TML__F_ARRAY 0x10u

/* When a field is on the wire (bits 5..6 of tml__field.tf). */
enum tml__presence {
    TML__REQ = 0,  /* always: encoder writes it, decoder requires it */
    TML__HAS = 1,  /* iff the bool at aux is true (decoder sets it) */
    TML__OPT = 2,  /* arrays: iff count > 0; bool: iff true; else iff != 0 */
    TML__GATED = 3 /* iff the message's need() says so (depends on kind) */
};
#define TML__PRES_SHIFT 5

/* The shared limits table (messages.c): limit i is lo[i]..hi[i]; limit 0
 * is 0..UINT32_MAX. */
extern const uint8_t tml__lim_lo[];
extern const uint32_t tml__lim_hi[];
#define TML__L_ANY 0

struct tml__field {
    uint8_t key;  /* < 32 */
    uint8_t tf;   /* type | TML__F_ARRAY | presence << TML__PRES_SHIFT */
    uint16_t off; /* offset of the value in the struct */
    int8_t aux;   /* offset of the has_ bool or size_t count, minus off */
    uint8_t lim;  /* index into tml__lim_lo/hi */
};

struct tml__msg {
    const struct tml__field *fields;
    uint8_t n_fields;
    /* Keys (bit k = key k) that must be present given the decoded or
     * to-be-encoded struct, beyond the TML__REQ ones; NULL = none. */
    uint32_t (*need)(const void *m);
    /* Cross-field rules; NULL = none. */
    enum tml_err (*check)(const void *m);
};

TML_WUR enum tml_err tml__msg_encode(const struct tml__msg *desc,
                                     const void *m, uint8_t *buf, size_t cap,
                                     size_t max_len, size_t *out_len);
TML_WUR enum tml_err tml__msg_decode(const struct tml__msg *desc,
                                     const uint8_t *buf, size_t len,
                                     size_t max_len, void *out);

/* Writes the head of a byte string of len bytes and reserves them: returns
 * where the caller writes them, or NULL (e's error is then set). */
uint8_t *tml__enc_reserve_bytes(struct tml_enc *e, size_t len);

/* True if p[0..len) is well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF). */
bool tml__utf8_valid(const uint8_t *p, size_t len);

#endif /* TML_PROTO_INTERNAL_H */
