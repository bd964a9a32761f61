/*
 * rollout.h: one model rollout as a state machine driven by events and a
 * clock, with no I/O of its own.
 *
 * A rollout offers one artifact (model version) to a set of target devices
 * in waves: wave k holds the devices whose rank by hash(seed, device id) is
 * below wave_pct[k] percent of the targets, so a rerun with the same seed
 * picks the same canaries. Inside a wave at most max_concurrent devices
 * download at once; a device that makes no progress for device_timeout_ms
 * is retried up to max_retries times; when failed + reverted devices of a
 * wave pass failure_threshold_pct the rollout pauses. When every device of
 * a wave is finished (or offline) the wave soaks for soak_ms, then the
 * health gate (health.h) is asked, asynchronously, whether the new model's
 * telemetry is no worse than the old one's: advance, hold (ask again after
 * gate_retry_ms, pause after gate_max_wait_ms) or fail (the rollout pauses
 * and the wave's devices on the new model are offered the previous one).
 *
 * The rollout is done only when every target of every wave has finished:
 * a device that was offline when its turn came is offered the model when it
 * is back, and meanwhile the rollout stays running with a reason saying how
 * many devices it waits for (abort ends it without them).
 *
 * Everything the rollout does to the outside goes through struct
 * rollout_ops; time always comes in as an argument (monotonic ms). The
 * host (ota.c) persists every change it is told about through ops->changed.
 *
 * Not thread-safe; all calls on the loop thread. None of the ops callbacks
 * may call back into the rollout except rollout_gate_result (which may be
 * called from inside ops->gate for a synchronous answer).
 */
#ifndef TML_ROLLOUT_H
#define TML_ROLLOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "health.h"
#include "tml/proto.h"

#define ROLLOUT_MAX_WAVES 8
#define ROLLOUT_REASON_MAX 240
#define ROLLOUT_MAX_DEVICES 100000

/* Per-device state, persisted in rollout_devices.state. */
enum rollout_dev_state {
    RDEV_PENDING = 0,     /* not offered yet (or waiting for a retry) */
    RDEV_OFFERED,         /* offer sent, no answer yet */
    RDEV_DOWNLOADING,     /* requesting chunks; offset says how far */
    RDEV_VERIFYING,       /* last byte stored, device hashing */
    RDEV_ACTIVATING,      /* verified, swapping slots */
    RDEV_TRIAL,           /* running the new model, not yet confirmed */
    RDEV_CONFIRMED,       /* terminal: new model confirmed */
    RDEV_FAILED,          /* terminal: old model active; reason says why */
    RDEV_REVERTED,        /* terminal: new model ran and was reverted */
    RDEV_EXCLUDED,        /* terminal: cannot take the model (capacities) */
    RDEV_CANCELLED,       /* terminal: rollout aborted before it finished */
    RDEV_ROLLBACK,        /* previous model offered after a failed wave */
    RDEV_ROLLED_BACK,     /* terminal: previous model confirmed again */
    RDEV__COUNT
};

/* Reasons: the device's own (enum tml_ota_reason, < 64) or the gateway's. */
enum rollout_reason {
    ROLLOUT_R_TIMEOUT = 64,     /* no progress within device_timeout_ms */
    ROLLOUT_R_RETRIES,          /* transient failures past max_retries */
    ROLLOUT_R_ABORTED,          /* operator aborted the rollout */
    ROLLOUT_R_INCOMPATIBLE,     /* excluded by the capacity check */
    ROLLOUT_R_NO_ROLLBACK,      /* no previous model to roll back to */
    ROLLOUT_R_TRIAL_TIMEOUT,    /* activated but never confirmed */
    ROLLOUT_R_OFFLINE           /* offline past offline_wait_ms */
};

enum rollout_state {
    ROLLOUT_RUNNING = 0,
    ROLLOUT_PAUSED,   /* by the operator, a failure threshold or the gate */
    ROLLOUT_ABORTED,  /* terminal */
    ROLLOUT_DONE      /* terminal: every wave finished */
};

enum rollout_wave_state {
    WAVE_PENDING = 0,
    WAVE_ACTIVE,  /* offering / downloading */
    WAVE_SOAK,    /* every device finished; telemetry accumulating */
    WAVE_GATE,    /* asked the health gate, waiting for its answer */
    WAVE_PASSED,
    WAVE_FAILED   /* failed its health gate: only abort is left */
};

struct rollout_policy {
    size_t n_waves;
    uint32_t wave_pct[ROLLOUT_MAX_WAVES]; /* cumulative %, increasing, last 100 */
    uint32_t max_concurrent;              /* devices downloading at once */
    uint64_t device_timeout_ms;           /* progress deadline per device */
    uint64_t trial_timeout_ms;            /* activating/trial to confirmed */
    uint32_t max_retries;                 /* after the first attempt */
    uint32_t failure_threshold_pct;       /* failed+reverted share, 0..100 */
    bool gate_enabled;
    uint64_t soak_ms;          /* after a wave finished, before the gate */
    uint64_t gate_retry_ms;    /* after a HOLD */
    uint64_t gate_max_wait_ms; /* HOLDs for longer than this pause */
    /* Once every online target of the last wave finished: how long to wait
     * for targets that are offline before excluding them ("offline") so the
     * rollout can finish; 0 = wait until they are back. */
    uint64_t offline_wait_ms;
    bool rollback_on_gate_fail;
    bool rollback_on_threshold;
    struct health_policy health;
};

struct rollout_dev {
    char id[TML_MAX_DEVICE_ID + 1];
    uint64_t rank_hash;
    uint8_t wave;
    uint8_t state;        /* enum rollout_dev_state */
    uint8_t reason;       /* tml_ota_reason or rollout_reason, 0 = none */
    bool online;
    uint32_t offset;      /* bytes the device reports stored */
    uint32_t attempts;    /* offers made (1 = first attempt) */
    uint32_t offer_id;    /* fixed for this device in this rollout */
    uint64_t deadline_ms; /* progress deadline, 0 = none */
    /* Re-sent accounting (ota.c; persisted, db/0101_ota_resent.sql): the
     * highest image byte served, bytes served again below it (lost in
     * flight or already stored), requests that went back, and
     * interruptions seen (reconnects or reboots mid-transfer, tmld
     * restarts). */
    uint32_t served_hi, resent_bytes, rewinds, resumes;
    /* Serving (ota.c, memory only): when the last chunks went out, whether
     * the link is new since (a hello), and the request token bucket. */
    uint64_t last_serve_ms, bucket_ms;
    uint32_t bucket_milli; /* tokens x 1000 */
    bool fresh_link;
};

struct rollout_wave {
    uint8_t state; /* enum rollout_wave_state */
    uint32_t n_devices;
    uint32_t n_failed_acked; /* failures the operator resumed past */
    uint64_t started_ms, done_ms, gate_first_ms, next_gate_ms;
    char gate_reason[HEALTH_REASON_MAX];
};

struct rollout;

struct rollout_ops {
    void *ctx;
    /* Send (or resend) the offer of the new model to d, bound to
     * d->offer_id. Returns 0, or < 0 if it could not be sent now (the
     * device stays pending and is tried again on a later tick). */
    int (*offer)(void *ctx, struct rollout *r, struct rollout_dev *d);
    /* Tell d to drop the offer (abort, failed wave). May be NULL. */
    void (*cancel)(void *ctx, struct rollout *r, struct rollout_dev *d);
    /* Offer the previous model to d. Returns 0 if sent, < 0 if there is no
     * previous model. May be NULL (= no rollback). */
    int (*rollback)(void *ctx, struct rollout *r, struct rollout_dev *d);
    /* Ask the health gate about wave `wave` for telemetry since since_ms;
     * answer later (or right away) with rollout_gate_result. */
    void (*gate)(void *ctx, struct rollout *r, unsigned wave,
                 uint64_t since_ms);
    /* Something changed: d, or the rollout itself when d is NULL. */
    void (*changed)(void *ctx, struct rollout *r, struct rollout_dev *d);
};

struct rollout {
    uint32_t id;
    uint32_t version; /* model version being rolled out */
    struct rollout_policy pol;
    struct rollout_ops ops;
    uint8_t state; /* enum rollout_state */
    char reason[ROLLOUT_REASON_MAX];
    unsigned cur_wave;
    bool started;
    struct rollout_wave waves[ROLLOUT_MAX_WAVES];
    char seed[TML_MAX_NAME * 2 + 2];
    /* When the last wave started waiting only for offline targets (0 = not
     * waiting; in memory: a tmld restart starts the wait again). */
    uint64_t offline_wait_since_ms;
    uint32_t offer_id_base;
    size_t n_devs, cap_devs;
    struct rollout_dev *devs; /* owned; insertion order */
    size_t *by_id;            /* owned; indices into devs sorted by id */
};

/* Fills *p with defaults: waves 5/25/100 %, 50 concurrent, 60 s device
 * timeout, 10 min trial timeout, 2 retries, 10 % failure threshold, gate on
 * with 60 s soak, 30 s retry, 30 min max wait, rollback on gate failure. */
void rollout_policy_default(struct rollout_policy *p);

/* Returns NULL if *p is usable, else a constant message naming the
 * problem (for the control verb's error reply). */
const char *rollout_policy_check(const struct rollout_policy *p);

/* Parses "5,25,100" (cumulative %) into p->wave_pct/n_waves. "100" alone
 * is one wave. Returns 0 or -EINVAL (p unchanged). */
int rollout_parse_waves(const char *s, struct rollout_policy *p)
    __attribute__((warn_unused_result));

/* Initialises r for up to cap_devices targets. seed chooses the canaries
 * (tmld uses the model name and group, so reruns pick the same ones);
 * offer ids are offer_id_base + insertion index. Allocates; release with
 * rollout_free. Returns 0, -EINVAL or -ENOMEM. */
int rollout_init(struct rollout *r, uint32_t id, uint32_t version,
                 const struct rollout_policy *p, const char *seed,
                 uint32_t offer_id_base, size_t cap_devices,
                 const struct rollout_ops *ops)
    __attribute__((warn_unused_result));
void rollout_free(struct rollout *r);

/* Adds a target. excluded_reason != 0 makes it RDEV_EXCLUDED with that
 * reason. Before rollout_start the wave comes from the hash rank; after,
 * the device joins the current wave (a device that joins the group later
 * gets the group's current model; a DONE rollout reopens its last wave). Returns 0, -EEXIST, -ENOSPC, -EINVAL. */
int rollout_add_device(struct rollout *r, const char *id, bool online,
                       uint8_t excluded_reason)
    __attribute__((warn_unused_result));

/* Assigns the waves and starts wave 0. Offers go out on the next tick. */
void rollout_start(struct rollout *r, uint64_t now_ms);

/* Rebuilds a rollout from persisted rows: call rollout_add_device for each
 * device, then rollout_restore_device for each, then this. Device deadlines
 * restart from now_ms. Returns 0 or -EINVAL. */
int rollout_restore_device(struct rollout *r, const char *id, uint8_t wave,
                           uint8_t state, uint8_t reason, uint32_t offset,
                           uint32_t attempts)
    __attribute__((warn_unused_result));
void rollout_restore(struct rollout *r, uint8_t state, const char *reason,
                     unsigned cur_wave, const uint8_t *wave_states,
                     uint64_t now_ms);

/* Finds a device by id; NULL if not a target. */
struct rollout_dev *rollout_find(struct rollout *r, const char *id);

/* Events from devices. Each returns 0 if the message belongs to this
 * rollout and was applied, -ESRCH if the device is not a target, -EBADMSG if
 * offer_id is not the device's offer (stale or foreign: S7). */
int rollout_on_request(struct rollout *r, const char *id, uint32_t offer_id,
                       uint32_t offset, uint64_t now_ms);
int rollout_on_status(struct rollout *r, const char *id, uint32_t offer_id,
                      uint8_t ota_state, uint8_t ota_reason, uint32_t offset,
                      uint64_t now_ms);
/* Whether a status under this rollout's offer is about another model
 * (version set and not the rollout's): e.g. an agent that reported the
 * revert at boot of an older model whose flash rotted under the last offer
 * it had accepted. The caller drops it. Version 0 (a refusal before the
 * manifest verified) is the rollout's. */
bool rollout_status_is_foreign(const struct rollout *r, uint32_t version);
/* A status about the rollback offer (any offer id other than the new
 * model's): applied only to devices in RDEV_ROLLBACK. */
int rollout_on_rollback_status(struct rollout *r, const char *id,
                               uint8_t ota_state, uint8_t ota_reason);
/* Online / offline (up/state, hello). model_version from hello, 0 if
 * unknown: a pending device that already runs the version is confirmed. */
int rollout_on_presence(struct rollout *r, const char *id, bool online,
                        uint32_t model_version, uint64_t now_ms);

/* Answer to ops->gate for `wave`. Ignored unless that wave is waiting. */
void rollout_gate_result(struct rollout *r, unsigned wave,
                         const struct health_result *res, uint64_t now_ms);

/* Timers: deadlines, offers within the concurrency cap, wave progress. */
void rollout_tick(struct rollout *r, uint64_t now_ms);

/* Operator verbs. Return 0, or -EALREADY (already in that state), -EPERM
 * (not allowed now; the reason says why in r->reason for resume). */
int rollout_pause(struct rollout *r, const char *why);
int rollout_resume(struct rollout *r, uint64_t now_ms);
int rollout_abort(struct rollout *r);

/* Whether the rollout is running only for devices that were offline when
 * their turn came: its last wave is active and every other target has
 * finished. A new deploy to the same group may then supersede it. */
bool rollout_waits_only_for_offline(const struct rollout *r);

/* Ends a rollout that rollout_waits_only_for_offline() (its pending
 * devices cancelled: they are targets of rollout by_id), state ABORTED
 * with the reason "superseded by rollout <by_id>". Returns 0 or -EBUSY
 * (it is doing more than waiting; nothing changed). */
int rollout_supersede(struct rollout *r, uint32_t by_id);

/* Per-state counts for one wave, or all waves when wave < 0. */
void rollout_counts(const struct rollout *r, int wave,
                    uint32_t counts[RDEV__COUNT]);

const char *rollout_state_name(uint8_t s);
const char *rollout_wave_state_name(uint8_t s);
const char *rollout_dev_state_name(uint8_t s);
/* Name of a device reason (tml_ota_reason or rollout_reason). */
const char *rollout_reason_name(uint8_t r);

#endif /* TML_ROLLOUT_H */
