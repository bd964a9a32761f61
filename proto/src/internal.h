/*
 * internal.h: cross-file internals of proto/ (tml__ prefix), not installed.
 *
 * Messages are described by tables (struct tml__msg): one row per map key,
 * in ascending key order, saying where the value lives in the C struct, its
 * CBOR type and its limits. One generic encoder and one generic decoder
 * (msg.c) walk the tables, so every message obeys the same rules and the
 * encoder refuses exactly what the decoder would reject.
 */
#ifndef TML_PROTO_INTERNAL_H
#define TML_PROTO_INTERNAL_H

#include "tml/proto.h"

/* Most unknown (skipped) keys one map may carry; duplicates among them are
 * detected by remembering them. More gives TML_ERR_OVERSIZE. */
#define TML__MAX_UNKNOWN 16

enum tml__ftype {
    TML__F_VERSION, /* uint that must equal TML_PROTO_VERSION (no storage) */
    TML__F_U32,     /* uint32_t in [min, max] */
    TML__F_U8,      /* uint8_t in [min, max] */
    TML__F_I32,     /* int32_t, any value */
    TML__F_BOOL,    /* bool */
    TML__F_TEXT,    /* struct tml_str, length in [min, max] */
    TML__F_BYTES,   /* struct tml_bin, length in [min, max] */
    TML__F_FIXBYTES, /* uint8_t[max], exactly max bytes */
    TML__F_U32_ARRAY,   /* uint32_t[], count (size_t at aux) in [min, max],
                           elements in [emin, emax] */
    TML__F_TEXT_ARRAY,  /* struct tml_str[], lengths in [emin, emax] */
    TML__F_BYTES_ARRAY, /* struct tml_bin[], lengths in [emin, emax] */
    TML__F_MAP          /* nested map described by sub; bool has_ at aux */
};

/* When a field is on the wire. */
enum tml__fflag {
    TML__REQ = 1,   /* always: encoder writes it, decoder requires it */
    TML__HAS = 2,   /* iff the bool at aux is true (decoder sets it) */
    TML__OPT = 4,   /* arrays: iff count > 0; bool: iff true; else iff != 0 */
    TML__GATED = 8  /* iff the message's need() says so (depends on kind) */
};

struct tml__msg;

struct tml__field {
    uint8_t key;
    uint8_t type;  /* enum tml__ftype */
    uint8_t flags; /* enum tml__fflag */
    uint16_t off;  /* offset of the value in the struct */
    uint16_t aux;  /* offset of the has_ bool or the size_t count */
    uint32_t min, max;
    uint32_t emin, emax;
    const struct tml__msg *sub;
};

struct tml__msg {
    const struct tml__field *fields;
    uint8_t n_fields;
    /* Keys (bit k = key k) that must be present given the decoded or
     * to-be-encoded struct, beyond the TML__REQ ones; NULL = none. */
    uint64_t (*need)(const void *m);
    /* Cross-field rules; NULL = none. */
    enum tml_err (*check)(const void *m);
};

TML_WUR enum tml_err tml__msg_encode(const struct tml__msg *desc,
                                     const void *m, uint8_t *buf, size_t cap,
                                     size_t max_len, size_t *out_len);
TML_WUR enum tml_err tml__msg_decode(const struct tml__msg *desc,
                                     const uint8_t *buf, size_t len,
                                     size_t max_len, void *out);

/* True if p[0..len) is well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF). */
bool tml__utf8_valid(const uint8_t *p, size_t len);

#endif /* TML_PROTO_INTERNAL_H */
