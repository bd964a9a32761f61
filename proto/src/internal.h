/*
 * internal.h: cross-file internals of proto/ (tml__ prefix), not installed.
 *
 * Messages are described by tables (struct tml__msg): one row per map key,
 * in ascending key order, saying where the value lives in the C struct, its
 * CBOR type and its limits. One generic encoder and one generic decoder
 * (msg.c) walk the tables, so every message obeys the same rules and the
 * encoder refuses exactly what the decoder would reject.
 *
 * A row is 5 bytes (the device links the tables of the directions it uses,
 * so they count in its flash budget): limits are an index into one shared
 * table of (lo, hi) pairs, the has_/count member is a small signed
 * distance from the value's offset, and that offset (< 512) keeps its
 * ninth bit in the type byte's top bit.
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

/* When a field is on the wire (bits 5..6 of tml__field.tf; bit 7 is bit 8
 * of the offset, TML__OFF_HI). */
enum tml__presence {
    TML__REQ = 0,   /* always: encoder writes it, decoder requires it */
    TML__GATED = 1, /* like REQ, but only for the kinds in aux (GATED) */
    TML__HAS = 2,   /* iff the bool at aux is true (decoder sets it) */
    TML__OPT = 3    /* arrays: iff count > 0; bool: iff true; else iff != 0 */
};
#define TML__PRES_SHIFT 5
#define TML__OFF_HI 0x80u

/* ---- message tables (messages.c; tele_v1.c for the old tele map) ------- */

#define U32MAX 0xffffffffu

/* The limits (lo, hi) rows refer to by index. An array's count limits are
 * followed by its elements' limits (the A_ entries and their _E twins). */
#define LIMITS(X)                                                              \
    X(L_ANY, 0, U32MAX) /* must stay first: TML__L_ANY */                      \
    X(L_POS, 1, U32MAX)                                                        \
    X(L_NAME, 1, TML_MAX_NAME)                                                 \
    X(L_NAME0, 0, TML_MAX_NAME)                                                \
    X(L_BIT, 0, 1)                                                             \
    X(L_CHUNK, 1, TML_CHUNK_MAX)                                               \
    X(L_OSTATE, 0, TML_OTA_REVERTED)                                           \
    X(L_OREASON, 0, TML_OTA_R__COUNT - 1)                                      \
    X(L_BP, 0, 10000)                                                          \
    X(L_REASON, TML_REASON_FLAGGED, TML_REASON_AUDIT)                          \
    X(L_DTYPE, TML_DTYPE_U8, TML_DTYPE_F32)                                    \
    X(L_UPKIND, TML_OTA_UP_REQUEST, TML_OTA_UP_STATUS)                         \
    X(L_DOWNKIND, TML_OTA_DOWN_OFFER, TML_OTA_DOWN_CANCEL)                     \
    X(L_CMDKIND, TML_CMD_SET, TML_CMD_PING)                                    \
    X(L_MANIFEST, 1, TML_MAX_MANIFEST)                                         \
    X(L_PPM, 0, 1000000)                                                       \
    X(L_SHA, TML_SHA256_LEN, TML_SHA256_LEN)                                   \
    X(A_GROUPS, 0, TML_MAX_GROUPS)                                             \
    X(A_GROUPS_E, 1, TML_MAX_NAME)                                             \
    X(A_SHAPE, 1, TML_MAX_SHAPE)                                               \
    X(A_SHAPE_E, 1, U32MAX)                                                    \
    X(A_REVOKE, 0, TML_MAX_REVOKE)                                             \
    X(A_REVOKE_E, 1, TML_MAX_KID)

#define LIM_ENUM(name, lo, hi) name,
#define LIM_LO(name, lo, hi) lo,
#define LIM_HI(name, lo, hi) hi,

enum { LIMITS(LIM_ENUM) N_LIMITS };

/* The distance from a value to its has_/count member, checked at compile
 * time to fit the row's int8_t. */
#define AUX(st, fld, aux)                                                      \
    (int8_t)((int)offsetof(struct st, aux) - (int)offsetof(struct st, fld) +  \
             0 * (int)sizeof(char[(offsetof(struct st, aux) + 128 >=          \
                                   offsetof(struct st, fld) &&                \
                                   offsetof(struct st, fld) + 127 >=          \
                                   offsetof(struct st, aux))                  \
                                      ? 1                                     \
                                      : -1]))
/* A row; its key must be < 32 (msg.c keeps seen keys in a 32-bit mask)
 * and its offset < 512, checked at compile time. */
#define ROW(k, type, pres, st, fld, aux, lim)                                  \
    {                                                                          \
        (uint8_t)((k) + 0 * sizeof(char[(k) < 32 ? 1 : -1])),                  \
            (uint8_t)((type) | (TML__##pres) << TML__PRES_SHIFT |              \
                      ((offsetof(struct st, fld) >> 8) * TML__OFF_HI +         \
                       0 * sizeof(char[offsetof(struct st, fld) < 512          \
                                           ? 1                                 \
                                           : -1]))),                           \
            (uint8_t)offsetof(struct st, fld), aux, lim                        \
    }
/* The version row (key 0) stores nothing; its offset is unused. */
#define U32(k, pres, st, fld, lim) ROW(k, TML__F_U32, pres, st, fld, 0, lim)
#define U8(k, pres, st, fld, lim) ROW(k, TML__F_U8, pres, st, fld, 0, lim)
#define TEXT(k, pres, st, fld, lim) ROW(k, TML__F_TEXT, pres, st, fld, 0, lim)
#define BYTES(k, pres, st, fld, lim)                                           \
    ROW(k, TML__F_BYTES, pres, st, fld, 0, lim)
#define HAS_U32(k, st, fld, has, lim)                                          \
    ROW(k, TML__F_U32, HAS, st, fld, AUX(st, fld, has), lim)
#define ARRAY(k, type, pres, st, fld, count, lim)                              \
    ROW(k, (type) | TML__F_ARRAY, pres, st, fld, AUX(st, fld, count), lim)
/* A field on the wire iff the message's kind, a uint8_t that must be the
 * struct's first member (checked), has its bit (1 << kind) in the 8-bit
 * set kinds; a kind above 7 counts as 7. */
#define GATED(k, type, st, fld, lim, kinds)                                    \
    ROW(k, type, GATED, st, fld,                                               \
        (int8_t)((kinds) - ((kinds) > 127 ? 256 : 0) +                         \
                 0 * sizeof(char[offsetof(struct st, kind) == 0 ? 1 : -1])),   \
        lim)
#define N(t) ((uint8_t)(sizeof(t) / sizeof((t)[0])))

/* The shared limits table (messages.c): limit i is lo[i]..hi[i]; limit 0
 * is 0..UINT32_MAX. */
extern const uint8_t tml__lim_lo[];
extern const uint32_t tml__lim_hi[];
#define TML__L_ANY 0

struct tml__field {
    uint8_t key;  /* < 32 */
    uint8_t tf;   /* type | TML__F_ARRAY | presence << TML__PRES_SHIFT |
                     bit 8 of the offset (TML__OFF_HI) */
    uint8_t off;  /* bits 0..7 of the offset of the value in the struct */
    int8_t aux;   /* offset of the has_ bool or size_t count, minus off */
    uint8_t lim;  /* index into tml__lim_lo/hi */
};

/* A message's largest legal encoded form in 64-byte units (every limit
 * is a multiple of 64, checked at compile time), so that a struct
 * tml__msg, which the device links seven of, takes 16 bytes instead of
 * 20. */
#define TML__MAX64(n)                                                          \
    ((uint8_t)((n) / 64 +                                                      \
               0 * sizeof(char[(n) % 64 == 0 && (n) / 64 < 256 ? 1 : -1])))

struct tml__msg {
    const struct tml__field *fields;
    uint8_t n_fields;
    uint8_t max64; /* the largest legal encoded form / 64: TML__MAX64 */
    /* Bytes of the C struct the decoder zeroes before it fills it (0: the
     * caller does). */
    uint16_t size;
    /* Cross-field rules; NULL = none. */
    enum tml_err (*check)(const void *m);
};

/* The public tml_X_encode/decode with the message's description added
 * last: each public function (the device links seven) then only loads it
 * and jumps, its own arguments already in place. */
TML_WUR enum tml_err tml__msg_encode(const void *m, uint8_t *buf, size_t cap,
                                     size_t *out_len,
                                     const struct tml__msg *desc);
TML_WUR enum tml_err tml__msg_decode(const uint8_t *buf, size_t len, void *out,
                                     const struct tml__msg *desc);

/* up/tele version 2 (tele.c): the map {0: 2, 1: packed summary}. Only
 * tml_tele_decode (tele_v1.c) calls it, after reading key 0. */
TML_WUR enum tml_err tml__tele_v2_decode(const uint8_t *buf, size_t len,
                                         struct tml_tele *out);

/* tml_enc_uint for a 32-bit number (what every message field is): the
 * device's encoders call this one, which needs no 64-bit arithmetic. */
void tml__enc_u32(struct tml_enc *e, uint32_t v);

/* tml_enc_bytes (major 2) and tml_enc_text (major 3) in one, for the table
 * encoder, without their check of p: p may be NULL only when len is 0 (or
 * from tml__enc_reserve_bytes, which reserves the bytes). */
void tml__enc_string(struct tml_enc *e, uint8_t major, const void *p,
                     size_t len);

/* Writes the head of a byte string of len bytes and reserves them: returns
 * where the caller writes them, or NULL (e's error is then set). */
uint8_t *tml__enc_reserve_bytes(struct tml_enc *e, size_t len);

/* tml_dec_bytes (major 2) and tml_dec_text (major 3) in one: the table
 * decoder reads both kinds into a struct tml_bin. *p and *len are written
 * only on success. */
TML_WUR enum tml_err tml__dec_string(struct tml_dec *d, uint8_t major,
                                     const uint8_t **p, size_t *len);

/* True if p[0..len) is well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF). */
bool tml__utf8_valid(const uint8_t *p, size_t len);

#endif /* TML_PROTO_INTERNAL_H */
