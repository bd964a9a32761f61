/*
 * tml/agent.h: libtmlagent, the tmlfleet device agent.
 *
 * A freestanding C99 state machine compiled into device firmware. It keeps
 * inference statistics and sends them as periodic summaries (up/tele),
 * captures selected inputs (up/sample), receives signed models into one of
 * two model slots (down/ota, up/ota), and obeys settings from down/cmd. It has
 * no heap, no OS, no clock and no MQTT stack: the firmware allocates one
 * struct tmla_agent (statically), hands it incoming messages and the time, and
 * the agent acts through struct tmla_port (tml/agent_port.h).
 *
 * Threading: not thread-safe; call every entry point from one thread (or with
 * one lock held). Port callbacks must not call back into the agent. Time
 * is a free-running millisecond counter (now_ms) that may wrap; only
 * differences are used.
 *
 * Topics: the transport must subscribe to "tml/v1/<dev>/down/#" (QoS 1) and
 * should set the retained last will "tml/v1/<dev>/up/state" = the payload of
 * tmla_offline_payload(). The agent publishes on tml/v1/<dev>/up/<kind>.
 *
 * Delivery: every tele and sample record has a per-stream sequence number
 * that is never handed out twice, even across reboots (numbers are reserved
 * in blocks of TMLA_SEQ_BLOCK in the persisted state) and never changed
 * once sent. Records stay in RAM until the gateway's cumulative down/ack
 * covers them and are resent after a reconnect or after ack_timeout_ms;
 * each carries the low-water (the lowest number still held), so the
 * gateway gives up, counted, the numbers a reboot lost instead of waiting
 * for them. See docs/agent.md.
 */
#ifndef TML_AGENT_H
#define TML_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tml/agent_config_defaults.h>
#include <tml/agent_port.h>
#include <tml/proto.h>

#ifdef __cplusplus
extern "C" {
#endif

/* (major << 16) | (minor << 8) | patch, reported in hello and compared with
 * a manifest's min_agent_version. */
#define TMLA_AGENT_VERSION 0x000100u

/* ---- configuration ----------------------------------------------------- */

/* One trusted operator public key. The manifest's COSE kid selects it. */
struct tmla_trusted_key {
    uint8_t kid[TML_MAX_KID];
    uint8_t kid_len; /* 1..TML_MAX_KID */
    uint8_t pub[65]; /* uncompressed P-256 point 0x04 || X || Y */
};

/* Filled with defaults by tmla_config_defaults(), then adjusted by the
 * firmware. Pointers are borrowed for the agent's whole life (use static or
 * const data). */
struct tmla_config {
    const char *device_id;     /* NUL-terminated certificate CN, required */
    const char *hw;            /* NUL-terminated hardware target, required */
    const char *const *groups; /* firmware-declared groups (hello) */
    size_t n_groups;           /* <= TML_MAX_GROUPS */

    const struct tmla_trusted_key *keys; /* trusted operator keys */
    size_t n_keys;                       /* 1..TMLA_MAX_KEYS */

    /* What a model may need (a manifest asking more is refused). */
    uint32_t arena_size;  /* tensor arena bytes available */
    uint8_t input_dtype;  /* enum tml_dtype, 0 = do not check */
    size_t n_input_shape; /* 0 = do not check the shape */
    uint32_t input_shape[TML_MAX_SHAPE];
    uint32_t max_labels; /* 0 = do not check */

    /* Sample spool: captured inputs are copied here. Split into
     * TMLA_SAMPLE_SLOTS equal parts; an input larger than one part is not
     * captured (counted as dropped). NULL/0 disables capture. */
    uint8_t *sample_buf;
    size_t sample_buf_len;

    /* Settings (down/cmd may change the first five at run time). */
    uint32_t summary_period_s;  /* default 60 */
    uint32_t sample_budget;     /* captures per budget period, default 4 */
    uint32_t budget_period_s;   /* default 600 */
    uint32_t conf_threshold_bp; /* low confidence below this, default 5000 */
    uint32_t audit_ppm;         /* random audit share, default 1000 */
    uint32_t sample_burst;      /* token bucket capacity, default = budget */
    uint16_t detail_every;      /* histograms + health in every n-th
                                   summary (by seq), 0 = never, default 1 */
    uint16_t n_classes;         /* labels of the model, default
                                   TMLA_MAX_CLASSES (class ids above are
                                   counted in the last class) */

    /* Transport and timers. */
    uint32_t max_payload;            /* largest message the transport carries,
                                        default TML_MAX_MESSAGE */
    uint32_t ack_timeout_ms;         /* resend unacked records, default 30000 */
    uint32_t ota_chunk;              /* requested chunk bytes, default and
                                        max TML_CHUNK_MAX (4096) */
    uint32_t ota_window;             /* chunks per request, default 1 */
    uint32_t ota_request_timeout_ms; /* re-request, default 10000 */
    uint32_t ota_min_rate_bps;       /* slow retrieval (S10): a download must
                                        average at least this rate after
                                        ota_grace_ms, default 64 */
    uint32_t ota_grace_ms;           /* default 60000 */
    uint32_t confirm_timeout_ms;     /* trial revert if not confirmed,
                                        default 300000 */
    uint8_t trial_max_boots; /* reboots in trial before revert, default 2 */
    bool auto_confirm;       /* confirm as soon as the golden vectors
                                pass (no application self-test) */
};

/* ---- results ------------------------------------------------------------- */

enum tmla_capture_rc {
    TMLA_CAPTURE_KEPT = 0,     /* in the reservoir (may still be replaced) */
    TMLA_CAPTURE_NOT_SELECTED, /* reason 0 and neither low nor audited */
    TMLA_CAPTURE_DROPPED,      /* budget exhausted or reservoir said no */
    TMLA_CAPTURE_TOO_LARGE,    /* bigger than one spool part */
    TMLA_CAPTURE_DISABLED,     /* no spool, or budget 0 */
    TMLA_CAPTURE_INVALID       /* bad reason, dtype or shape */
};

/* Counters for tests, the footprint report and a firmware's diagnostics. */
struct tmla_stats {
    uint32_t state_writes;        /* persisted-state writes since init */
    uint32_t state_write_fails;   /* writes whose read-back failed */
    uint32_t update_state_writes; /* state writes of the current/last update */
    uint32_t flash_ops;           /* erase + write calls since init */
    uint32_t publishes;           /* successful publish calls */
    uint32_t publish_again;       /* publish said AGAIN or failed */
    uint32_t tele_resent;         /* summaries published more than once */
    uint32_t tele_folded;         /* ring folds since init */
    uint32_t samples_sent;        /* sample chunks published */
    uint32_t samples_dropped;     /* captures not kept */
    uint32_t bad_messages;        /* down messages that did not decode */
    uint32_t acks_other_epoch;    /* acks of another numbering epoch */
    uint32_t chunks_rejected;     /* wrong offer, outside window, oversize */
    uint32_t ring_high_water;     /* most tele entries held at once */
};

/* The inference a captured input belongs to. */
struct tmla_inference {
    uint32_t predicted;     /* class index */
    uint32_t confidence_bp; /* 0..10000 */
    bool has_expected;      /* the application knows the right class */
    uint32_t expected;
    uint8_t dtype;  /* enum tml_dtype of the input, 0 = U8 */
    size_t n_shape; /* <= TML_MAX_SHAPE, 0 = [len] (bytes);
                       every dimension >= 1 */
    uint32_t shape[TML_MAX_SHAPE];
    uint32_t rate_hz; /* sampling rate of a time series, or 0 */
};

/* ---- the context (allocated by the firmware; fields are private) -------- */

struct tmla__sum {
    uint32_t seq; /* 0 = not yet assigned (never sent) */
    uint32_t model_version;
    uint32_t start_ms, end_ms; /* period bounds (agent clock) */
    uint32_t lat_min_us, lat_max_us;
    uint64_t lat_sum_us;
    /* From n_inferences to the end of lat_hist: uint32_t counts that a
     * fold adds up one by one (tele.c), so they stay together. */
    uint32_t n_inferences, n_low_conf, n_flagged, n_errors;
    uint32_t n_folded, n_samples_dropped;
    uint32_t class_counts[TMLA_MAX_CLASSES];
    uint32_t conf_hist[TMLA_CONF_BINS];
    uint32_t lat_hist[TMLA_LAT_BINS];
    struct tml_health health;
    bool has_health;
    bool in_flight; /* published, waiting for an ack */
    uint32_t sent_ms;
    uint8_t n_sends;
};

struct tmla__sample {
    uint8_t state; /* free, held (reservoir), pending (sent) */
    uint8_t reason;
    bool in_flight;
    uint16_t next_chunk; /* chunks published in the current round */
    uint32_t first_seq, n_chunks, len, model_version;
    uint32_t capture_ms, sent_ms;
    /* As captured (dtype and shape defaulted, confidence clamped); its
     * members are those of struct tml_sample from predicted to rate_hz,
     * copied in one piece (sample.c checks the layouts agree). */
    struct tmla_inference inf;
};

/* The persisted record (two copies, generation + CRC). */
struct tmla__pstate {
    uint32_t magic;
    uint32_t gen;
    uint32_t boot_count;
    uint32_t seq_hi[2];    /* highest seq reserved: tele, sample */
    uint32_t floor;        /* anti-rollback: lowest version accepted */
    uint32_t time_floor;   /* newest "created" of a verified manifest */
    uint32_t last_version; /* of the last update */
    uint32_t dl_offer_id;
    uint32_t dl_checkpoint; /* bytes known to be in flash */
    uint8_t active;         /* slot, 0xff = no model */
    uint8_t valid;          /* bit s: slot s holds a verified image */
    uint8_t trial;          /* 1: active model not yet confirmed */
    uint8_t trial_boots;
    uint8_t vectors_ok; /* trial: golden vectors passed */
    uint8_t revoked;    /* bit k: config key k revoked */
    uint8_t dl;         /* 1: download into slot !active (or 0) */
    uint8_t last_state, last_reason;
    uint8_t pad;
    /* numbering epoch (PROTOCOL.md 6): drawn when the numbering starts
     * (factory state, or a record without one), never 0 */
    uint16_t epoch;
    struct tmla_model slot[2];
    uint32_t crc;
};

struct tmla_agent {
    /* The most used scalars first, then the port (user is loaded for
     * every port call): Thumb-2 loads and stores bytes within 32 and words
     * within 128 bytes of the struct's start in 16-bit instructions, 32-bit
     * ones beyond. This order saves ~330 B of Cortex-M4 code over the
     * grouping by module (docs/agent.md). */
    bool connected;
    uint8_t ring_n;
    uint8_t ota_state, ota_reason;
    uint8_t carry_len;
    bool ota_hashing; /* sha holds the stream hash */
    uint8_t ps_copy;  /* copy to write next */
    bool hello_due, load_due, persist_due, has_nonce;
    uint8_t res_n, res_k; /* held, capacity this period */
    bool status_due;
    uint16_t status_passed; /* states entered since the last status sent */
    uint32_t now_ms;
    uint32_t ota_offset; /* bytes received (flash + carry) */
    uint32_t ota_offer_id, ota_version;
    uint32_t ota_marks; /* progress marks known set (ota.c "progress marks") */
    uint32_t ota_req_end; /* end of the outstanding request */
    uint32_t ota_req_ms, ota_start_ms, ota_start_off, trial_ms;
    uint32_t tele_next; /* next tele seq to hand out */
    uint32_t tele_acked;
    uint32_t sample_next; /* next sample seq */
    uint32_t sample_acked;
    uint32_t candidates; /* this budget period */
    uint32_t tokens;
    uint32_t budget_start_ms;
    uint32_t hello_nonce;
    uint32_t boot_id; /* random per boot, in hello (PROTOCOL.md 6) */

    struct tmla_port port;
    struct tmla__pstate ps;
    struct tmla_config cfg;

    /* telemetry */
    struct tmla__sum cur;
    struct tmla__sum ring[TMLA_TELE_RING];

    /* capture */
    struct tmla__sample samples[TMLA_SAMPLE_SLOTS];
    uint8_t reservoir[TMLA_SAMPLE_SLOTS]; /* reservoir index -> slot */

    /* OTA */
    uint8_t carry[TMLA_MAX_WRITE_ALIGN];
    union {
        uint64_t align;
        uint8_t b[TMLA_SHA256_CTX_SIZE];
    } sha;

    struct tmla_stats stats;
    char topic[TML_MAX_TOPIC + 1];
    uint8_t tx[TMLA_TX_BUF];
};

/* ---- entry points -------------------------------------------------------- */

/* Fills cfg with the defaults named in struct tmla_config (pointers NULL). */
void tmla_config_defaults(struct tmla_config *cfg);

/* Initialises a (boot): copies cfg and port, reads the persisted state (both
 * copies, newest valid wins; none = factory state), counts the boot, and
 * handles a model left in trial: after more than trial_max_boots boots
 * without confirmation it reverts to the previous model. Does not publish
 * and does not call port->activate; the application then loads the model
 * named by tmla_active_model(). now_ms starts the first summary period.
 * Returns TML_OK, TML_ERR_INVAL for a bad config/port (missing required
 * member, sizes out of range), or TML_ERR_NOSPACE if the persisted state
 * cannot be written (the agent then works without durable sequence numbers:
 * it publishes no records until a later write succeeds). */
TML_WUR enum tml_err tmla_init(struct tmla_agent *a,
                               const struct tmla_config *cfg,
                               const struct tmla_port *port, uint32_t now_ms);

/* The transport connected (and subscribed to down/#): the agent publishes
 * hello (retained) and state online (retained), then resends every
 * unacknowledged record and resumes a download, from here or from later
 * tmla_poll calls. */
void tmla_on_connect(struct tmla_agent *a, uint32_t now_ms);

/* The transport lost its connection: nothing is in flight any more; records
 * stay in RAM until the next tmla_on_connect. */
void tmla_on_disconnect(struct tmla_agent *a);

/* Handles one incoming message. topic is topic_len bytes (no NUL needed),
 * payload len bytes; both are borrowed for the call. Accepts only
 * tml/v1/<own id>/down/{ack,ota,cmd}. Returns TML_OK when the message was
 * understood (an OTA offer that is refused for a policy reason is still
 * TML_OK: the refusal is reported on up/ota), TML_ERR_TOPIC for a topic that
 * is not ours, or the decoder's error for a payload that does not decode
 * (counted in stats.bad_messages). Never crashes on any input. */
enum tml_err tmla_on_message(struct tmla_agent *a, const char *topic,
                             size_t topic_len, const uint8_t *payload,
                             size_t len, uint32_t now_ms);

/* Drives every timer: closes summary and budget periods, sends and resends
 * records, requests OTA chunks, verifies and activates a downloaded model,
 * runs golden vectors, reverts an unconfirmed trial. Call it often (every
 * 100 ms .. 1 s) and after on_message; it does a bounded amount of work. */
void tmla_poll(struct tmla_agent *a, uint32_t now_ms);

/* Counts one inference in the current summary. cls is the predicted class
 * (ids >= n_classes count in the last class), confidence in basis points
 * (0..10000, larger is clamped), latency in microseconds. */
void tmla_record(struct tmla_agent *a, uint32_t cls, uint32_t confidence_bp,
                 uint32_t latency_us);

/* Counts one failed inference (n_errors). */
void tmla_record_error(struct tmla_agent *a);

/* Offers one input for capture. reason is an enum tml_sample_reason, or 0 to
 * let the agent decide: below conf_threshold_bp is LOW_CONF, otherwise a
 * random audit_ppm share is AUDIT, otherwise TMLA_CAPTURE_NOT_SELECTED.
 * FLAGGED also counts n_flagged in the summary. Selected inputs enter the
 * budget period's reservoir (uniform over the period's candidates, capacity
 * min(tokens, free slots)); the input (len bytes, borrowed) is copied into
 * the sample spool. Kept inputs are sent when the budget period ends. */
enum tmla_capture_rc tmla_capture(struct tmla_agent *a,
                                  const struct tmla_inference *inf,
                                  const void *input, size_t len, uint8_t reason,
                                  uint32_t now_ms);

/* The application's self-test of the model in trial passed: the agent makes
 * it permanent (persisted) and reports CONFIRMED. Returns TML_OK, or
 * TML_ERR_INVAL if no model is in trial or its golden vectors have not
 * passed yet (call again later). */
TML_WUR enum tml_err tmla_confirm_model(struct tmla_agent *a);

/* The application's self-test of the model in trial failed: revert now
 * (reported as REVERTED with reason SELFTEST). TML_ERR_INVAL if no trial. */
TML_WUR enum tml_err tmla_reject_model(struct tmla_agent *a);

/* The model the application must run, or NULL if the device has none yet.
 * The pointer stays valid until the next agent call. */
const struct tmla_model *tmla_active_model(const struct tmla_agent *a);

/* True while the active model is in trial (activated, not confirmed). */
bool tmla_in_trial(const struct tmla_agent *a);

/* Current OTA state and reason (enum tml_ota_state / tml_ota_reason) and
 * the download offset; any pointer may be NULL. */
void tmla_ota_status(const struct tmla_agent *a, uint8_t *state,
                     uint8_t *reason, uint32_t *offset);

/* Counters (see struct tmla_stats). */
const struct tmla_stats *tmla_stats(const struct tmla_agent *a);

/* Writes the NUL-terminated topic "tml/v1/<dev>/<dir>/<kind>" of this agent
 * (e.g. for the transport's subscription or last will). */
TML_WUR enum tml_err tmla_topic(const struct tmla_agent *a, enum tml_dir dir,
                                enum tml_kind kind, char *buf, size_t cap);

/* Encodes the up/state "offline" payload (for the transport's last will). */
TML_WUR enum tml_err tmla_offline_payload(uint8_t *buf, size_t cap,
                                          size_t *out_len);

#ifdef __cplusplus
}
#endif

#endif /* TML_AGENT_H */
