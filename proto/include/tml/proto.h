/*
 * tml/proto.h: the tmlfleet wire protocol, version 1.
 *
 * One freestanding C99 codec shared by the firmware agent and the gateway.
 * It needs only <stdint.h>, <stddef.h>, <stdbool.h> and <string.h>: no heap,
 * no stdio, no globals, no clock. Callers provide every buffer.
 *
 * Messages are CBOR maps (RFC 8949) with small unsigned integer keys; key 0 is
 * the message's version: TML_PROTO_VERSION, up/tele TML_TELE_VERSION
 * (PROTOCOL.md 3). The normative description
 * (CDDL, units, limits, topics, QoS, OTA exchange) is proto/PROTOCOL.md.
 *
 * Decoding rules, enforced by every decoder:
 *  - definite lengths only, shortest-form integers and lengths, no tags (the
 *    COSE_Sign1 tag 18 is the one exception, accepted and optional);
 *  - the input must be exactly one item: trailing bytes are rejected;
 *  - nesting is limited to TML_CBOR_MAX_DEPTH;
 *  - duplicate map keys are rejected;
 *  - unknown keys >= 0 are skipped (forward compatibility: a newer peer may add
 *    optional fields without a version bump); unknown negative keys are
 *    "must understand" and rejected with TML_ERR_UNKNOWN_CRITICAL;
 *  - strings and arrays longer than the field's limit give TML_ERR_OVERSIZE;
 *    so do more than 16 unknown keys in one map;
 *  - text strings must be valid UTF-8 (else TML_ERR_TYPE).
 *
 * Strings and byte strings that a decoder returns (struct tml_str, tml_bin)
 * are views into the input buffer: they live only as long as that buffer.
 */
#ifndef TML_PROTO_H
#define TML_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define TML_WUR __attribute__((warn_unused_result))
#else
#define TML_WUR
#endif

/* ---- limits (compile-time; a firmware build may lower the #ifndef ones) -- */

#define TML_PROTO_VERSION 1u
/* Key 0 of up/tele: 2 since the summary travels packed (PROTOCOL.md 3 and
 * "up/tele"); tml_tele_encode writes 2, tml_tele_decode accepts 2 and the
 * version 1 map of older agents. Every other message stays at 1. */
#define TML_TELE_VERSION 2u

#ifndef TML_CBOR_MAX_DEPTH
#define TML_CBOR_MAX_DEPTH 8 /* nesting of arrays/maps, top level = 1 */
#endif
#ifndef TML_MAX_CLASSES
#define TML_MAX_CLASSES 32 /* per-class counts in a summary */
#endif
#ifndef TML_MAX_BINS
#define TML_MAX_BINS 16 /* confidence and latency histogram bins */
#endif
#ifndef TML_MAX_GROUPS
#define TML_MAX_GROUPS 8 /* groups a device declares in hello */
#endif
#ifndef TML_MAX_SHAPE
#define TML_MAX_SHAPE 4 /* dimensions of a tensor shape */
#endif
#ifndef TML_MAX_REVOKE
#define TML_MAX_REVOKE 4 /* key ids one manifest may revoke */
#endif
#define TML_MAX_NAME 32        /* model name, hardware target, group name */
#define TML_MAX_DEVICE_ID 64   /* device id = certificate CN */
#define TML_MAX_TOPIC 96       /* "tml/v1/<dev>/<dir>/<kind>" */
#define TML_MAX_KID 16         /* COSE key id bytes */
#define TML_CHUNK_MAX 4096     /* OTA chunk and sample chunk data bytes */
#define TML_MAX_MANIFEST 1024  /* encoded COSE_Sign1 manifest bytes */
#define TML_MAX_MESSAGE 5120   /* largest legal encoded message (broker max) */
#define TML_SHA256_LEN 32
#define TML_ES256_SIG_LEN 64   /* r || s, 32 bytes each (RFC 9053 2.1) */
#define TML_COSE_ALG_ES256 (-7)

/* ---- errors ------------------------------------------------------------ */

enum tml_err {
    TML_OK = 0,
    TML_ERR_TRUNCATED,        /* input ends inside an item */
    TML_ERR_TRAILING,         /* bytes after the one top-level item */
    TML_ERR_INDEFINITE,       /* indefinite-length item (not allowed) */
    TML_ERR_DEPTH,            /* nesting deeper than TML_CBOR_MAX_DEPTH */
    TML_ERR_TYPE,             /* wrong CBOR type for the field */
    TML_ERR_MISSING,          /* a required field is absent */
    TML_ERR_UNKNOWN_CRITICAL, /* unknown negative (must-understand) key */
    TML_ERR_OVERSIZE,         /* string/array/value over the field's limit */
    TML_ERR_NON_MINIMAL,      /* integer or length not in shortest form */
    TML_ERR_DUPLICATE,        /* duplicate map key */
    TML_ERR_RANGE,            /* value outside the field's range */
    TML_ERR_VERSION,          /* unsupported protocol version */
    TML_ERR_UNSUPPORTED,      /* tag, float, undefined, simple value */
    TML_ERR_NOSPACE,          /* encoder: output buffer too small */
    TML_ERR_TOPIC,            /* malformed topic or device id */
    TML_ERR_INVAL,            /* bad argument from the caller */
    TML_ERR__COUNT
};

/* Returns a short constant English name for err ("truncated input", ...). */
const char *tml_strerror(enum tml_err err);

/* ---- views -------------------------------------------------------------- */

struct tml_str {
    const char *p; /* not NUL-terminated */
    size_t len;
};

struct tml_bin {
    const uint8_t *p;
    size_t len;
};

/* ---- CBOR encoder --------------------------------------------------------
 * A sticky-error writer: after the first failure every call is a no-op and
 * tml_enc_finish() returns the error. Integers and lengths are always written
 * in shortest form. */

struct tml_enc {
    uint8_t *buf;
    size_t cap;
    size_t len;
    enum tml_err err;
};

void tml_enc_init(struct tml_enc *e, uint8_t *buf, size_t cap);
void tml_enc_uint(struct tml_enc *e, uint64_t v);
void tml_enc_int(struct tml_enc *e, int64_t v);
void tml_enc_bytes(struct tml_enc *e, const void *p, size_t len);
void tml_enc_text(struct tml_enc *e, const char *p, size_t len);
void tml_enc_array(struct tml_enc *e, size_t n);
void tml_enc_map(struct tml_enc *e, size_t n);
void tml_enc_bool(struct tml_enc *e, bool v);
void tml_enc_null(struct tml_enc *e);
void tml_enc_tag(struct tml_enc *e, uint64_t tag);
/* Copies already-encoded CBOR bytes verbatim. */
void tml_enc_raw(struct tml_enc *e, const void *p, size_t len);
/* Returns e->err; on TML_OK *out_len (may be NULL) gets the bytes written. */
TML_WUR enum tml_err tml_enc_finish(const struct tml_enc *e, size_t *out_len);

/* ---- CBOR decoder --------------------------------------------------------
 * A pull parser over one buffer. Each call consumes one item of the named
 * type or fails without consuming. Containers give their element count; the
 * caller then reads that many items (maps: 2 per entry). */

enum tml_cbor_type {
    TML_CBOR_UINT,
    TML_CBOR_NINT,
    TML_CBOR_BYTES,
    TML_CBOR_TEXT,
    TML_CBOR_ARRAY,
    TML_CBOR_MAP,
    TML_CBOR_TAG,
    TML_CBOR_SIMPLE, /* false, true, null, undefined, floats */
    TML_CBOR_END     /* no more input */
};

struct tml_dec {
    const uint8_t *p;
    const uint8_t *end;
    uint8_t depth; /* current container nesting, maintained by the caller
                      through tml_dec_enter/leave and by tml_dec_skip */
};

void tml_dec_init(struct tml_dec *d, const void *buf, size_t len);
/* Type of the next item (does not validate it). */
enum tml_cbor_type tml_dec_peek(const struct tml_dec *d);
TML_WUR enum tml_err tml_dec_uint(struct tml_dec *d, uint64_t *v);
/* Accepts major types 0 and 1 within int64_t. */
TML_WUR enum tml_err tml_dec_int(struct tml_dec *d, int64_t *v);
TML_WUR enum tml_err tml_dec_bytes(struct tml_dec *d, struct tml_bin *v);
TML_WUR enum tml_err tml_dec_text(struct tml_dec *d, struct tml_str *v);
/* Container headers check and bump d->depth; call tml_dec_leave after the
 * last element. n is bounded by the remaining input (each element needs at
 * least one byte), so a huge claimed count fails early as TRUNCATED. */
TML_WUR enum tml_err tml_dec_array(struct tml_dec *d, size_t *n);
TML_WUR enum tml_err tml_dec_map(struct tml_dec *d, size_t *n);
void tml_dec_leave(struct tml_dec *d);
TML_WUR enum tml_err tml_dec_bool(struct tml_dec *d, bool *v);
TML_WUR enum tml_err tml_dec_null(struct tml_dec *d);
TML_WUR enum tml_err tml_dec_tag(struct tml_dec *d, uint64_t *tag);
/* Skips one well-formed item of any allowed type, with the depth limit. */
TML_WUR enum tml_err tml_dec_skip(struct tml_dec *d);
/* TML_OK if all input was consumed, TML_ERR_TRAILING otherwise. */
TML_WUR enum tml_err tml_dec_finish(const struct tml_dec *d);

/* ---- topics ---------------------------------------------------------------
 * "tml/v1/<dev>/<dir>/<kind>", exactly five levels. A device id is 1..64
 * bytes of [A-Za-z0-9._-], not "." or "..". */

enum tml_dir { TML_DIR_UP = 0, TML_DIR_DOWN = 1 };

enum tml_kind {
    TML_KIND_HELLO = 0, /* up */
    TML_KIND_STATE,     /* up */
    TML_KIND_TELE,      /* up */
    TML_KIND_SAMPLE,    /* up */
    TML_KIND_OTA,       /* up and down */
    TML_KIND_ACK,       /* down */
    TML_KIND_CMD,       /* down */
    TML_KIND__COUNT
};

struct tml_topic {
    struct tml_str dev; /* view into the topic string */
    enum tml_dir dir;
    enum tml_kind kind;
};

bool tml_device_id_valid(const char *id, size_t len);
/* Parses a topic; rejects wrong prefix, level count, device id, direction,
 * kind, and kinds that do not exist in that direction. */
TML_WUR enum tml_err tml_topic_parse(const char *topic, size_t len,
                                     struct tml_topic *out);
/* Writes the NUL-terminated topic; *out_len excludes the NUL. */
TML_WUR enum tml_err tml_topic_build(char *buf, size_t cap, const char *dev,
                                     size_t dev_len, enum tml_dir dir,
                                     enum tml_kind kind, size_t *out_len);
/* "hello", "state", ... */
const char *tml_kind_name(enum tml_kind kind);

/* ---- shared enums ---------------------------------------------------------- */

/* Why a captured input was sent. */
enum tml_sample_reason {
    TML_REASON_FLAGGED = 1,  /* the application flagged it misclassified */
    TML_REASON_LOW_CONF = 2, /* confidence under the threshold */
    TML_REASON_AUDIT = 3     /* random audit share */
};

/* Element type of a tensor (sample data, model input). */
enum tml_dtype {
    TML_DTYPE_U8 = 1,
    TML_DTYPE_I8 = 2,
    TML_DTYPE_I16 = 3, /* little-endian; audio when the shape is [n] */
    TML_DTYPE_I32 = 4,
    TML_DTYPE_F32 = 5  /* IEEE 754 binary32, little-endian */
};

/* Device-side OTA state, reported in up/ota status messages. */
enum tml_ota_state {
    TML_OTA_IDLE = 0,
    TML_OTA_OFFERED = 1,     /* manifest verified, about to request data */
    TML_OTA_DOWNLOADING = 2, /* offset says how far */
    TML_OTA_VERIFYING = 3,   /* last byte written, hashing the slot */
    TML_OTA_READY = 4,       /* verified, waiting for the application */
    TML_OTA_ACTIVATING = 5,
    TML_OTA_TRIAL = 6,       /* running the new model, not yet confirmed */
    TML_OTA_CONFIRMED = 7,   /* terminal: success */
    TML_OTA_FAILED = 8,      /* terminal: old model active, reason says why */
    TML_OTA_REVERTED = 9     /* terminal: new model ran and was reverted */
};

/* Why an OTA step was refused or failed (also hello's last result). */
enum tml_ota_reason {
    TML_OTA_R_NONE = 0,
    TML_OTA_R_BAD_MANIFEST = 1,    /* manifest does not decode */
    TML_OTA_R_UNKNOWN_KEY = 2,     /* kid not among the trusted keys */
    TML_OTA_R_REVOKED_KEY = 3,     /* kid was revoked */
    TML_OTA_R_BAD_SIGNATURE = 4,
    TML_OTA_R_WRONG_HW = 5,        /* hardware target mismatch */
    TML_OTA_R_TOO_LARGE = 6,       /* image larger than the slot */
    TML_OTA_R_ROLLBACK = 7,        /* version below the device's floor */
    TML_OTA_R_ALREADY_INSTALLED = 8, /* version equals the active one */
    TML_OTA_R_EXPIRED = 9,         /* manifest past its expiry */
    TML_OTA_R_ARENA = 10,          /* model needs more arena than the device has */
    TML_OTA_R_AGENT_TOO_OLD = 11,
    TML_OTA_R_INPUT_SHAPE = 12,    /* input shape/dtype/labels unsupported */
    TML_OTA_R_BAD_HASH = 13,       /* image hash mismatch after last byte */
    TML_OTA_R_BAD_CHUNK = 14,      /* chunk outside the image or oversized */
    TML_OTA_R_WRONG_OFFER = 15,    /* chunk bound to another offer id */
    TML_OTA_R_FLASH = 16,          /* flash erase/write/read-back failed */
    TML_OTA_R_SELFTEST = 17,       /* golden vectors failed */
    TML_OTA_R_TRIAL_TIMEOUT = 18,  /* trial never confirmed */
    TML_OTA_R_SLOW = 19,           /* progress deadline missed */
    TML_OTA_R_CANCELLED = 20,      /* gateway cancelled the offer */
    TML_OTA_R_BUSY = 21,           /* another update in progress */
    TML_OTA_R__COUNT
};

const char *tml_ota_state_name(enum tml_ota_state s);
const char *tml_ota_reason_name(enum tml_ota_reason r);

/* ---- up/hello: the device's birth message (QoS 1, retained) ------------ */

struct tml_hello {
    uint32_t agent_version;  /* (major << 16) | (minor << 8) | patch */
    struct tml_str hw;       /* hardware target, e.g. "nrf52840" */
    struct tml_str model;    /* active model name, len 0 if none */
    uint32_t model_version;  /* 0 if none */
    uint8_t model_slot;      /* 0 or 1 */
    uint32_t slot_size;      /* bytes one model slot holds */
    uint32_t arena_size;     /* tensor arena bytes available to a model */
    uint32_t chunk_max;      /* largest OTA chunk the device accepts */
    uint32_t boot_count;
    uint8_t last_ota_state;  /* enum tml_ota_state of the last update */
    uint8_t last_ota_reason; /* enum tml_ota_reason */
    uint32_t last_ota_version;
    uint32_t version_floor;  /* anti-rollback: lowest version accepted */
    size_t n_groups;
    struct tml_str groups[TML_MAX_GROUPS]; /* firmware-declared groups */
    bool has_nonce;          /* added: answers a down/cmd ping or set */
    uint32_t nonce;          /* the nonce of the last cmd received */
    /* added: the seq the device gives its next new record of each stream
     * (every record it holds has a lower one); 0 = not declared. A gateway
     * that stored a number >= this under the same device id sees that the
     * device restarted its numbering (PROTOCOL.md 6). */
    uint32_t tele_next;
    uint32_t sample_next;
    /* added: drawn at random at every boot (never 0); with boot_count it
     * tells a restarted device from an old hello of the current boot that
     * MQTT delivered again. 0 = not declared. */
    uint32_t boot_id;
    /* added: the numbering epoch the device's records carry (struct
     * tml_tele); 0 = not declared. A gateway that sees it ignores the
     * tele_next/sample_next restart rule: records say their life. */
    uint32_t epoch;
};

/* ---- up/state: online/offline (QoS 1, retained; offline = last will) ---- */

struct tml_state {
    bool online;
};

/* ---- up/tele: one inference summary (QoS 1) ---------------------------------
 * Confidence is in basis points (0..10000). Histogram bins:
 *   confidence: bin i of n covers [i*10000/n, (i+1)*10000/n) bp, the last bin
 *               includes 10000;
 *   latency:    bin 0 covers [0, 1 ms), bin i >= 1 covers [2^(i-1), 2^i) ms,
 *               the last bin is open-ended.
 * On the wire the numbers are packed into one byte string of LEB128 varints
 * (PROTOCOL.md "up/tele"): counters that are 0 and usually are cost a flag
 * bit, a histogram only the window from its first to its last non-zero bin.
 * tml_tele_encode refuses seq 0, lw > seq and more than TML_MAX_CLASSES
 * classes or TML_MAX_BINS bins. It writes version 2 (TML_TELE_VERSION);
 * tml_tele_decode (gateway side, tele_v1.c) also decodes the version 1 map
 * of agents that predate the packed form, with all of its rules. */

struct tml_health {
    uint32_t free_ram;  /* bytes */
    uint32_t supply_mv; /* millivolts */
    int32_t temp_dc;    /* tenths of a degree Celsius */
    uint32_t uptime_s;
};

struct tml_tele {
    uint32_t seq;           /* tele stream sequence number, starts at 1 */
    uint32_t model_version; /* model the inferences ran on */
    uint32_t period_s;      /* length of the period summarised */
    uint32_t age_s;         /* seconds from the period's end to sending */
    uint32_t n_inferences;
    uint32_t n_low_conf;
    uint32_t n_flagged;
    uint32_t n_errors;      /* failed inferences */
    uint32_t n_folded;      /* older summaries merged into this one */
    uint32_t n_samples_dropped; /* captures lost to budget or full spool */
    uint32_t lat_min_us, lat_mean_us, lat_max_us; /* all 0 if no inference */
    size_t n_classes;
    uint32_t class_counts[TML_MAX_CLASSES];
    size_t n_conf_bins;
    uint32_t conf_hist[TML_MAX_BINS];
    size_t n_lat_bins;
    uint32_t lat_hist[TML_MAX_BINS];
    bool has_health;
    struct tml_health health;
    /* added: low-water, the lowest tele seq the device still holds or may
     * still send (1 <= lw <= seq); every lower number was acked, folded into
     * a later record, or lost (reboot). 0 = not declared (PROTOCOL.md 6). */
    uint32_t lw;
    /* added: numbering epoch, drawn at random (never 0) when the device's
     * sequence numbering starts (first boot, or persisted state lost); the
     * same for every record of both streams until the numbering restarts.
     * seq and lw count within it (PROTOCOL.md 6). 0 = not declared. */
    uint32_t epoch;
};

/* ---- up/sample: one chunk of a captured input (QoS 1) ----------------------
 * An input larger than one message travels as several chunks, each with its
 * own seq; (sample_id, offset) places it. */

struct tml_sample {
    uint32_t seq;           /* sample stream sequence number, starts at 1 */
    uint32_t sample_id;     /* same for every chunk of one input */
    uint32_t model_version;
    uint8_t reason;         /* enum tml_sample_reason */
    uint32_t predicted;     /* class index */
    uint32_t confidence_bp; /* 0..10000 */
    bool has_expected;
    uint32_t expected;      /* class the application says is right */
    uint8_t dtype;          /* enum tml_dtype */
    size_t n_shape;
    uint32_t shape[TML_MAX_SHAPE];
    uint32_t rate_hz;       /* sampling rate of a time series, 0 if none */
    uint32_t age_s;         /* seconds from capture to sending */
    uint32_t total_len;     /* bytes of the whole input */
    uint32_t offset;        /* of this chunk within the input */
    struct tml_bin data;    /* this chunk, 1..TML_CHUNK_MAX bytes */
    uint32_t lw;            /* added: low-water of the sample stream, as in
                               struct tml_tele; 0 = not declared */
    uint32_t epoch;         /* added: numbering epoch, as in struct tml_tele */
};

/* ---- up/ota: chunk request or status report (QoS 1) ------------------------ */

enum tml_ota_up_kind { TML_OTA_UP_REQUEST = 1, TML_OTA_UP_STATUS = 2 };

struct tml_ota_up {
    uint8_t kind;      /* enum tml_ota_up_kind */
    uint32_t offer_id;
    uint32_t version;  /* model version the offer is about */
    uint32_t offset;   /* REQUEST: first byte wanted; STATUS: bytes stored */
    uint32_t len;      /* REQUEST: bytes wanted (<= window); STATUS: 0 */
    uint8_t state;     /* STATUS: enum tml_ota_state */
    uint8_t reason;    /* STATUS: enum tml_ota_reason */
    uint32_t passed;   /* STATUS: bit s set = the device also passed state
                          s since its previous status (states entered
                          back to back go in one message); 0 = none */
};

/* ---- down/ack: cumulative acknowledgement (QoS 1) ---------------------------
 * "Every record of that stream with seq <= this is committed." */

struct tml_ack {
    bool has_tele;
    uint32_t tele_seq;
    bool has_sample;
    uint32_t sample_seq;
    /* added: the numbering epoch the seqs belong to; a device whose epoch
     * differs ignores the ack. 0 = not declared (covers any epoch). */
    uint32_t epoch;
};

/* ---- down/ota: offer, chunk or cancel (QoS 1) ------------------------------ */

enum tml_ota_down_kind {
    TML_OTA_DOWN_OFFER = 1,
    TML_OTA_DOWN_CHUNK = 2,
    TML_OTA_DOWN_CANCEL = 3
};

struct tml_ota_down {
    uint8_t kind;          /* enum tml_ota_down_kind */
    uint32_t offer_id;     /* chosen by the gateway, binds every chunk */
    struct tml_bin manifest; /* OFFER: COSE_Sign1 bytes */
    uint32_t offset;       /* CHUNK */
    struct tml_bin data;   /* CHUNK: 1..TML_CHUNK_MAX bytes */
};

/* ---- down/cmd: settings and ping (QoS 1) ------------------------------------ */

enum tml_cmd_kind { TML_CMD_SET = 1, TML_CMD_PING = 2 };

struct tml_cmd {
    uint8_t kind;                 /* enum tml_cmd_kind */
    uint32_t nonce;               /* echoed by the device in its next hello */
    bool has_summary_period;
    uint32_t summary_period_s;
    bool has_sample_budget;
    uint32_t sample_budget;       /* captures per budget period */
    bool has_budget_period;
    uint32_t budget_period_s;
    bool has_conf_threshold;
    uint32_t conf_threshold_bp;   /* low-confidence threshold, 0..10000 */
    bool has_audit_rate;
    uint32_t audit_ppm;           /* random audit share, parts per million */
};

/* ---- the OTA manifest: payload of a COSE_Sign1 (ES256) ------------------------
 * The image is the model followed by optional golden test vectors; size and
 * sha256 cover the whole image. Vector i sits at model_size + i * vector_len:
 * input (input_len bytes) then expected class (u16 LE) and expected score
 * (u16 LE, bp). A vector passes when the class matches and the score is within
 * score_tol_bp. */

struct tml_manifest {
    struct tml_str name;
    uint32_t version;       /* monotonically increasing, anti-rollback */
    struct tml_str hw;      /* hardware target */
    uint32_t size;          /* image bytes */
    uint8_t sha256[TML_SHA256_LEN];
    uint32_t created;       /* unix seconds */
    uint32_t expires;       /* unix seconds, 0 = never */
    uint32_t model_size;    /* bytes of the model within the image */
    uint32_t arena_size;    /* tensor arena bytes the model needs */
    uint32_t min_agent_version;
    uint8_t dtype;          /* input dtype, enum tml_dtype */
    size_t n_shape;
    uint32_t input_shape[TML_MAX_SHAPE];
    uint32_t n_labels;
    uint32_t n_vectors;
    uint32_t vector_input_len;
    uint32_t score_tol_bp;
    bool resets_floor;      /* key-rotation recovery: see PROTOCOL.md */
    size_t n_revoke;
    struct tml_bin revoke_kids[TML_MAX_REVOKE]; /* key ids to distrust */
};

/* COSE_Sign1 = [protected: bstr .cbor {1: -7, 4: kid}, unprotected: {},
 *               payload: bstr, signature: bstr .size 64], optionally tag 18. */
struct tml_cose_sign1 {
    struct tml_bin protected_hdr; /* the serialized protected map */
    int64_t alg;                  /* from the protected map; must be -7 */
    struct tml_bin kid;           /* from the protected map */
    struct tml_bin payload;
    struct tml_bin signature;     /* 64 bytes */
};

TML_WUR enum tml_err tml_cose_sign1_decode(const uint8_t *buf, size_t len,
                                           struct tml_cose_sign1 *out);
/* Encodes a COSE_Sign1 from its parts (protected header built from kid). */
TML_WUR enum tml_err tml_cose_sign1_encode(const uint8_t *kid, size_t kid_len,
                                           const uint8_t *payload,
                                           size_t payload_len,
                                           const uint8_t sig[TML_ES256_SIG_LEN],
                                           uint8_t *buf, size_t cap,
                                           size_t *out_len);
/* Writes the protected header bstr contents ({1: -7, 4: kid}). */
TML_WUR enum tml_err tml_cose_protected_encode(const uint8_t *kid,
                                               size_t kid_len, uint8_t *buf,
                                               size_t cap, size_t *out_len);
/* Writes Sig_structure = ["Signature1", protected, h'', payload] (RFC 9052
 * 4.4), the bytes that are hashed (SHA-256) and signed. */
TML_WUR enum tml_err tml_cose_sig_structure(const struct tml_bin *protected_hdr,
                                            const struct tml_bin *payload,
                                            uint8_t *buf, size_t cap,
                                            size_t *out_len);

/* ---- typed messages ---------------------------------------------------------
 * Every encoder writes one CBOR map and returns TML_ERR_NOSPACE if cap is too
 * small, TML_ERR_INVAL/RANGE for values the protocol does not allow. Every
 * decoder fills *out completely (fields absent on the wire are zero/false) and
 * returns the first violation it finds. */

#define TML_DECLARE_MSG(name)                                                  \
    TML_WUR enum tml_err tml_##name##_encode(const struct tml_##name *m,        \
                                             uint8_t *buf, size_t cap,         \
                                             size_t *out_len);                 \
    TML_WUR enum tml_err tml_##name##_decode(const uint8_t *buf, size_t len,   \
                                             struct tml_##name *out)

TML_DECLARE_MSG(hello);
TML_DECLARE_MSG(state);
TML_DECLARE_MSG(tele);
TML_DECLARE_MSG(sample);
TML_DECLARE_MSG(ota_up);
TML_DECLARE_MSG(ack);
TML_DECLARE_MSG(ota_down);
TML_DECLARE_MSG(cmd);
TML_DECLARE_MSG(manifest);

#undef TML_DECLARE_MSG

#ifdef __cplusplus
}
#endif

#endif /* TML_PROTO_H */
