/*
 * ota.h: tmld's OTA module, private to daemon/ota*.c.
 *
 * ota.c      module life cycle, config, the tick, device messages (up/ota,
 *            hello), offers and chunk serving, the health gate query;
 * ota_db.c   the models / rollouts / waves / rollout_devices tables
 *            (db/0100_ota.sql): persistence of rollout state and restore;
 * ota_ctl.c  control verbs: artifact.upload, models, deploy, rollout.*.
 *
 * Offer ids: bit 31 set = the rollback offer, bits 16..30 = rollout id,
 * bits 0..15 = the device's index in its rollout. So a device message names
 * its rollout, and a chunk request bound to one offer can never be served
 * from another rollout's artifact (S7).
 */
#ifndef TML_OTA_H
#define TML_OTA_H

#include <stdbool.h>
#include <stdint.h>

#include "ota_store.h"
#include "rollout.h"
#include "tmld.h"

#define OTA_MAX_ROLLOUTS 32       /* running or paused at once */
#define OTA_MAX_ROLLOUT_ID 0x7fff /* fits bits 16..30 of an offer id */
#define OTA_MAX_TARGETS 65536     /* fits bits 0..15 */
#define OTA_ROLLBACK_BIT 0x80000000u
#define OTA_MAX_UPLOADS 4
#define OTA_TARGET_MAX 128

struct ota;

struct ota_rollout {
    struct rollout r;
    struct ota *o;
    char artifact[OTA_HASH_HEX_LEN + 1];
    char rollback_artifact[OTA_HASH_HEX_LEN + 1]; /* "" = none */
    struct ota_artifact *art;     /* pinned while the rollout is live */
    struct ota_artifact *rb_art;  /* pinned, or NULL */
    struct ota_model_info model;
    char group[TML_MAX_NAME + 1]; /* "" when targeted by device list */
    int64_t created_at;           /* unix s */
    int64_t tele_since_id;        /* tele rows after this one are in the
                                     gate window */
    uint32_t *chunk_max;          /* per device (index as r.devs), 0 = any */
    bool *dirty;                  /* per device: persist on next flush */
    bool rollout_dirty;
    bool is_finished_logged;
    uint64_t flush_seq; /* the flush that carried its latest snapshot */
    uint64_t bytes_sent, chunks_sent, offers_sent;
    uint64_t bytes_resent, rewinds, resumes; /* see struct rollout_dev */
    uint64_t requests_limited; /* chunk requests over a device's rate */
    uint64_t bytes_flushed; /* bytes_sent as of the last rollout flush */
    struct health_result last_gate;
    bool has_gate;
};

struct ota_upload {
    bool in_use;
    uint32_t id;
    uint8_t *buf;
    size_t len, total;
    uint64_t touched_ms;
};

struct ota_counters {
    uint64_t offers, chunks, chunk_bytes, cancels, rollbacks;
    uint64_t stale_offer, unknown_offer, malformed, expired_refused;
    uint64_t echoes, limited; /* requests served nothing / refused */
};

struct ota {
    struct tmld *d;
    struct ota_store store;
    struct tmld_timer *tick;
    uint64_t tick_ms;
    struct rollout_policy defaults;
    uint32_t request_rate, request_burst; /* per device, requests/s */
    uint64_t finished_keep_ms; /* a finished rollout stays in memory */
    struct ota_rollout *rollouts[OTA_MAX_ROLLOUTS];
    size_t n_rollouts;
    uint32_t next_rollout_id;
    struct ota_upload uploads[OTA_MAX_UPLOADS];
    uint32_t next_upload_id;
    struct ota_counters c;
    /* Flushes submitted / committed (in order: one writer): a finished
     * rollout leaves memory only once its last snapshot is committed, so
     * rollout.show never reads an older row from the tables. */
    uint64_t flush_seq, flush_done_seq;
    bool stopping;
};

/* ---- ota.c ---------------------------------------------------------------- */

/* True while o is the running module (not freed, not stopping). */
bool ota_is_alive(const struct ota *o);
/* Fills ops for a rollout owned by o (the callbacks in ota.c). */
void ota_rollout_ops(struct ota *o, struct ota_rollout *orr,
                     struct rollout_ops *ops);
/* Looks up a live rollout by id; NULL if none. */
struct ota_rollout *ota_find_rollout(struct ota *o, uint32_t id);
/* Adds orr to the live set (takes ownership) and pins its artifacts.
 * Returns 0 or -ENOSPC. */
int ota_add_rollout(struct ota *o, struct ota_rollout *orr)
    __attribute__((warn_unused_result));
/* Frees a rollout (unpins, frees arrays). */
void ota_rollout_free(struct ota *o, struct ota_rollout *orr);
/* Allocates a rollout wrapper with per-device arrays for cap devices. */
struct ota_rollout *ota_rollout_new(struct ota *o, uint32_t id,
                                    uint32_t version,
                                    const struct rollout_policy *p,
                                    const char *seed, size_t cap);

/* Why dev cannot take model m (a rollout_reason / tml_ota_reason), or 0. */
uint8_t ota_capacity_check(const struct ota_model_info *m, const char *hw,
                           uint32_t slot_size, uint32_t arena_size,
                           uint32_t agent_version, uint32_t version_floor);

/* ---- ota_db.c ------------------------------------------------------------ */

/* Queues a models row for info (INSERT OR IGNORE); done gets 0 or -EEXIST
 * when (name, version, hw) is taken by another artifact. */
int ota_db_put_model(struct ota *o, const struct ota_model_info *info,
                     tmld_db_done_fn done, void *arg)
    __attribute__((warn_unused_result));
/* Reads a model row by artifact hash (loop thread). 0 or -ENOENT. */
int ota_db_get_model(struct ota *o, const char *artifact,
                     struct ota_model_info *out)
    __attribute__((warn_unused_result));
/* Persists everything dirty of every live rollout (one write job). */
void ota_db_flush(struct ota *o);
/* Highest rollout id ever stored, 0 if none. */
uint32_t ota_db_max_rollout_id(struct ota *o);
/* Highest tele row id (the start of a gate window). */
int64_t ota_db_tele_high_water(struct ota *o);
/* Rebuilds running/paused rollouts from the tables (at start-up). */
void ota_db_restore(struct ota *o);
/* Loads group's latest finished rollout back into memory (its artifact
 * from the store on disk) unless a device running model@model_version
 * already has it or it is live. Returns it, or NULL. */
struct ota_rollout *ota_db_load_group(struct ota *o, const char *group,
                                      const char *model,
                                      uint32_t model_version);
/* Sums telemetry after orr->tele_since_id of orr's targets into canary
 * (model version = the rollout's) and baseline (any other version).
 * Returns 0 or a negative errno. */
int ota_db_gate_aggregates(struct ota *o, struct ota_rollout *orr,
                           struct health_agg *canary,
                           struct health_agg *baseline)
    __attribute__((warn_unused_result));

/* ---- ota_ctl.c ----------------------------------------------------------- */

/* Registers the control verbs. */
int ota_ctl_register(struct ota *o) __attribute__((warn_unused_result));
/* Drops uploads idle for more than 5 minutes (called from the tick). */
void ota_ctl_expire_uploads(struct ota *o, uint64_t now_ms);
void ota_ctl_free_uploads(struct ota *o);

#endif /* TML_OTA_H */
