/*
 * tml/agent_port.h: everything libtmlagent does to the outside world.
 *
 * The agent is sans-IO: it never reads a clock, never allocates and never
 * touches hardware. The firmware fills one struct tmla_port with a user
 * pointer and function pointers; the agent calls them from inside its entry
 * points (tmla_init, tmla_on_message, tmla_poll, ...), on the caller's
 * thread, one at a time. A port function must not call back into the agent.
 *
 * Return convention of the int-returning members:
 *   TMLA_PORT_OK (0)     done;
 *   TMLA_PORT_AGAIN (1)  not now, nothing happened, try again later (e.g. the
 *                        transport is disconnected or its queue is full); the
 *                        agent keeps the work and retries from tmla_poll;
 *   any negative value   failed; the agent counts it, reports a reason where
 *                        one exists and does not retry the same step blindly.
 *
 * Unless a member says "optional", it must be set.
 */
#ifndef TML_AGENT_PORT_H
#define TML_AGENT_PORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tml/proto.h>

#ifdef __cplusplus
extern "C" {
#endif

enum tmla_port_rc {
    TMLA_PORT_OK = 0,
    TMLA_PORT_AGAIN = 1,
    TMLA_PORT_FAIL = -1
};

/* A model as the agent knows it: what sits in one slot. The application gets
 * this from tmla_active_model() and from the activate callback. */
struct tmla_model {
    uint8_t slot; /* 0 or 1 */
    uint32_t version;
    uint32_t size;             /* image bytes in the slot (model+vectors) */
    uint32_t model_size;       /* model bytes at the start of the slot */
    uint32_t arena_size;       /* tensor arena the model needs */
    uint32_t n_vectors;        /* golden vectors after the model */
    uint32_t vector_input_len; /* input bytes of one vector */
    uint32_t score_tol_bp;
    uint8_t sha256[TML_SHA256_LEN]; /* of the whole image */
    char name[TML_MAX_NAME + 1];    /* NUL-terminated */
};

struct tmla_port {
    void *user; /* passed unchanged as the first argument of every member */

    /* ---- transport ------------------------------------------------------ */

    /* Publishes payload (len bytes, borrowed for the call only) on topic (a
     * NUL-terminated "tml/v1/<dev>/up/<kind>") with the given QoS and retain
     * flag. Must not block for long: queue and return. AGAIN = disconnected
     * or queue full (the agent resends later); the agent only treats a record
     * as "in flight" after TMLA_PORT_OK. */
    int (*publish)(void *user, const char *topic, const uint8_t *payload,
                   size_t len, uint8_t qos, bool retain);

    /* ---- model slots (flash) ---------------------------------------------
     * Two slots of slot_size bytes each. Offsets are relative to the slot.
     * The agent erases before it writes, erases whole erase_size pages at
     * erase_size-aligned offsets, writes only erased bytes, and writes at
     * write_align-aligned offsets in multiples of write_align bytes (the last
     * block of an image is padded with 0xff). These may block (flash is slow)
     * and return a negative value on failure; AGAIN is not used. */
    uint32_t slot_size;   /* bytes per model slot */
    uint32_t erase_size;  /* erase page, a power of two dividing
                             TMLA_OTA_CHECKPOINT */
    uint32_t write_align; /* 1..TMLA_MAX_WRITE_ALIGN, a power of two */
    int (*flash_read)(void *user, uint8_t slot, uint32_t off, void *buf,
                      size_t len);
    int (*flash_write)(void *user, uint8_t slot, uint32_t off, const void *buf,
                       size_t len);
    int (*flash_erase)(void *user, uint8_t slot, uint32_t off, size_t len);

    /* ---- persisted state ---------------------------------------------------
     * Two independent copies (copy 0 and 1) of a small record (len = the
     * agent's state size, a few hundred bytes). The agent writes them
     * alternately with a generation counter and a CRC and reads back what it
     * wrote, so a torn or silently failed write leaves the other copy intact.
     * read of a never-written copy may return anything (or a negative value).
     * May block. */
    int (*state_read)(void *user, uint8_t copy, void *buf, size_t len);
    int (*state_write)(void *user, uint8_t copy, const void *buf, size_t len);

    /* ---- crypto
     * -------------------------------------------------------------- ctx points
     * to TMLA_SHA256_CTX_SIZE bytes, 8-byte aligned, owned by the agent; the
     * port keeps its hash state there (no allocation). Several contexts may be
     * live at once. Negative on failure. */
    int (*sha256_init)(void *user, void *ctx);
    int (*sha256_update)(void *user, void *ctx, const void *p, size_t len);
    int (*sha256_final)(void *user, void *ctx, uint8_t out[TML_SHA256_LEN]);
    /* ECDSA P-256 over a SHA-256 digest. pub is the uncompressed point
     * (0x04 || X || Y), sig is r || s (COSE form). Returns TMLA_PORT_OK only
     * for a valid signature, negative otherwise. */
    int (*es256_verify)(void *user, const uint8_t pub[65],
                        const uint8_t hash[TML_SHA256_LEN],
                        const uint8_t sig[TML_ES256_SIG_LEN]);

    /* ---- time, randomness, health ------------------------------------------
     */

    /* Optional. Wall clock in unix seconds, or 0 if the device has no trusted
     * time (then manifest expiry is checked only against the newest
     * "created" time the agent has seen in a verified manifest). */
    uint32_t (*unix_time)(void *user);
    /* 32 random bits. Need not be cryptographic, but the sequence must
     * differ between boots (a hardware RNG, or a PRNG seeded from one, from
     * ADC noise or uninitialised RAM): the boot_id and the numbering epoch
     * (PROTOCOL.md 6) are drawn from it, mixed with unix_time when there is
     * one. A PRNG seeded the same at every boot on a device without a clock
     * makes a wiped device indistinguishable from its earlier life: the
     * gateway then drops its new records as duplicates. */
    uint32_t (*random)(void *user);
    /* Optional. Fills the health numbers of the next summary; returns false
     * if it has none. */
    bool (*health)(void *user, struct tml_health *out);

    /* ---- the application's model ------------------------------------------
     */

    /* Asks the application to switch to model m (read it from slot m->slot).
     * Called to activate a verified download, and on a revert (then m is the
     * old model). Returns OK once the application runs m, AGAIN if this is a
     * bad moment (e.g. mid-measurement; the agent asks again from tmla_poll),
     * negative if m cannot be loaded (the update fails; on a revert the agent
     * keeps asking). */
    int (*activate)(void *user, const struct tmla_model *m);
    /* Optional (required to accept models with golden vectors). Runs one
     * golden vector through the active model m: the input is input_len bytes
     * at input_off within slot m->slot (read it with the same flash access as
     * the model). Writes the predicted class and its score in basis points.
     * Returns OK or negative (counts as a failed vector). */
    int (*infer)(void *user, const struct tmla_model *m, uint32_t input_off,
                 uint32_t input_len, uint32_t *out_class,
                 uint32_t *out_score_bp);
    /* Optional. Told after every OTA state transition (also reported on
     * up/ota); for logging and UI. */
    void (*ota_event)(void *user, enum tml_ota_state state,
                      enum tml_ota_reason reason, uint32_t version);
};

#ifdef __cplusplus
}
#endif

#endif /* TML_AGENT_PORT_H */
