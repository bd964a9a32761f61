/*
 * ota_db.c: the OTA tables (db/0100_ota.sql) for the OTA module.
 *
 * Writes go through tmld_db_write jobs that carry copies of the rows, so a
 * job never looks at live rollout memory from the writer thread. Reads
 * (model lookup, restore, the gate's telemetry window) use the loop
 * thread's read-only connection with bounded queries.
 *
 * Policies are stored as JSON (the names below) so that a restart restores
 * a rollout with the policy it was started with.
 */
#include "ota.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GATE_MAX_ROWS 500000

/* ---- models ------------------------------------------------------------------ */

struct model_job {
    struct ota_model_info info;
    int64_t now_s;
    tmld_db_done_fn done;
    void *arg;
};

static int
put_model_fn(sqlite3 *db, void *arg)
{
    struct model_job *j = arg;
    const struct ota_model_info *m = &j->info;
    sqlite3_stmt *st = NULL;
    int rc;

    rc = sqlite3_prepare_v2(
        db,
        "INSERT INTO models(artifact, name, version, hw, size, sha256, "
        "key_id, created, expires, model_size, arena_size, "
        "min_agent_version, bundle_len, stored_at) "
        "VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14) "
        "ON CONFLICT DO NOTHING",
        -1, &st, NULL);
    if (rc != SQLITE_OK)
        goto out;
    sqlite3_bind_text(st, 1, m->artifact, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, m->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, m->version);
    sqlite3_bind_text(st, 4, m->hw, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, m->size);
    sqlite3_bind_text(st, 6, m->sha256, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, m->key_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, m->created);
    sqlite3_bind_int64(st, 9, m->expires);
    sqlite3_bind_int64(st, 10, m->model_size);
    sqlite3_bind_int64(st, 11, m->arena_size);
    sqlite3_bind_int64(st, 12, m->min_agent_version);
    sqlite3_bind_int64(st, 13, m->bundle_len);
    sqlite3_bind_int64(st, 14, j->now_s);
    rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        goto out;
    sqlite3_finalize(st);
    /* One version number is one image, forever: a second artifact with the
     * same (name, version, hw) is refused. */
    rc = sqlite3_prepare_v2(db,
                            "SELECT artifact FROM models WHERE name=?1 AND "
                            "version=?2 AND hw=?3",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        goto out;
    sqlite3_bind_text(st, 1, m->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, m->version);
    sqlite3_bind_text(st, 3, m->hw, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *a = (const char *)sqlite3_column_text(st, 0);
        rc = a != NULL && strcmp(a, m->artifact) == 0 ? 0 : -EEXIST;
    } else {
        rc = -EIO;
    }
out:
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : rc;
}

static void
put_model_done(struct tmld *d, int status, void *arg)
{
    struct model_job *j = arg;

    if (j->done != NULL)
        j->done(d, status, j->arg);
    free(j);
}

int
ota_db_put_model(struct ota *o, const struct ota_model_info *info,
                 tmld_db_done_fn done, void *arg)
{
    struct model_job *j = calloc(1, sizeof(*j));
    int rc;

    if (j == NULL)
        return -ENOMEM;
    j->info = *info;
    j->now_s = tmld_wall_s();
    j->done = done;
    j->arg = arg;
    rc = tmld_db_write_now(o->d, put_model_fn, put_model_done, j);
    if (rc != 0)
        free(j);
    return rc;
}

static void
copy_col(char *dst, size_t cap, sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);

    snprintf(dst, cap, "%s", t != NULL ? (const char *)t : "");
}

int
ota_db_get_model(struct ota *o, const char *artifact,
                 struct ota_model_info *out)
{
    sqlite3_stmt *st = NULL;
    int rc;

    rc = sqlite3_prepare_v2(
        tmld_db_ro(o->d),
        "SELECT artifact, name, version, hw, size, sha256, key_id, created, "
        "expires, model_size, arena_size, min_agent_version, bundle_len "
        "FROM models WHERE artifact=?1",
        -1, &st, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(st);
        return -EIO;
    }
    sqlite3_bind_text(st, 1, artifact, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return -ENOENT;
    }
    memset(out, 0, sizeof(*out));
    copy_col(out->artifact, sizeof(out->artifact), st, 0);
    copy_col(out->name, sizeof(out->name), st, 1);
    out->version = (uint32_t)sqlite3_column_int64(st, 2);
    copy_col(out->hw, sizeof(out->hw), st, 3);
    out->size = (uint32_t)sqlite3_column_int64(st, 4);
    copy_col(out->sha256, sizeof(out->sha256), st, 5);
    copy_col(out->key_id, sizeof(out->key_id), st, 6);
    out->created = (uint32_t)sqlite3_column_int64(st, 7);
    out->expires = (uint32_t)sqlite3_column_int64(st, 8);
    out->model_size = (uint32_t)sqlite3_column_int64(st, 9);
    out->arena_size = (uint32_t)sqlite3_column_int64(st, 10);
    out->min_agent_version = (uint32_t)sqlite3_column_int64(st, 11);
    out->bundle_len = (uint32_t)sqlite3_column_int64(st, 12);
    sqlite3_finalize(st);
    return 0;
}

static int64_t
scalar(struct ota *o, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = 0;

    if (sqlite3_prepare_v2(tmld_db_ro(o->d), sql, -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

uint32_t
ota_db_max_rollout_id(struct ota *o)
{
    return (uint32_t)scalar(o, "SELECT coalesce(max(id), 0) FROM rollouts");
}

int64_t
ota_db_tele_high_water(struct ota *o)
{
    return scalar(o, "SELECT coalesce(max(id), 0) FROM tele");
}

/* ---- policy as JSON ---------------------------------------------------------- */

static char *
policy_json(const struct rollout_policy *p)
{
    cJSON *j = cJSON_CreateObject(), *w;
    char *s;

    if (j == NULL)
        return NULL;
    w = cJSON_AddArrayToObject(j, "waves");
    for (size_t i = 0; w != NULL && i < p->n_waves; i++)
        cJSON_AddItemToArray(w, cJSON_CreateNumber(p->wave_pct[i]));
    cJSON_AddNumberToObject(j, "max_concurrent", p->max_concurrent);
    cJSON_AddNumberToObject(j, "device_timeout_ms",
                            (double)p->device_timeout_ms);
    cJSON_AddNumberToObject(j, "trial_timeout_ms",
                            (double)p->trial_timeout_ms);
    cJSON_AddNumberToObject(j, "retries", p->max_retries);
    cJSON_AddNumberToObject(j, "failure_threshold_pct",
                            p->failure_threshold_pct);
    cJSON_AddBoolToObject(j, "gate", p->gate_enabled);
    cJSON_AddNumberToObject(j, "soak_ms", (double)p->soak_ms);
    cJSON_AddNumberToObject(j, "gate_retry_ms", (double)p->gate_retry_ms);
    cJSON_AddNumberToObject(j, "gate_max_wait_ms",
                            (double)p->gate_max_wait_ms);
    cJSON_AddNumberToObject(j, "offline_wait_ms",
                            (double)p->offline_wait_ms);
    cJSON_AddNumberToObject(j, "min_devices", p->health.min_devices);
    cJSON_AddNumberToObject(j, "min_inferences",
                            (double)p->health.min_inferences);
    cJSON_AddNumberToObject(j, "z_crit", p->health.z_crit);
    cJSON_AddNumberToObject(j, "low_conf_abs", p->health.low_conf.abs);
    cJSON_AddNumberToObject(j, "low_conf_rel", p->health.low_conf.rel);
    cJSON_AddNumberToObject(j, "lat_p95_ratio", p->health.lat_p95_ratio);
    s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

static double
num(const cJSON *j, const char *k, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);

    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

/* Starts from defaults so a field added later restores sensibly. */
static void
policy_parse(const char *s, const struct rollout_policy *defaults,
             struct rollout_policy *p)
{
    cJSON *j = cJSON_Parse(s), *w;
    struct rollout_policy q = *defaults;

    if (j == NULL) {
        *p = q;
        return;
    }
    w = cJSON_GetObjectItemCaseSensitive(j, "waves");
    if (cJSON_IsArray(w) && cJSON_GetArraySize(w) > 0 &&
        cJSON_GetArraySize(w) <= ROLLOUT_MAX_WAVES) {
        q.n_waves = (size_t)cJSON_GetArraySize(w);
        for (size_t i = 0; i < q.n_waves; i++) {
            const cJSON *it = cJSON_GetArrayItem(w, (int)i);
            q.wave_pct[i] = cJSON_IsNumber(it) ? (uint32_t)it->valuedouble
                                               : 100;
        }
    }
    q.max_concurrent = (uint32_t)num(j, "max_concurrent", q.max_concurrent);
    q.device_timeout_ms =
        (uint64_t)num(j, "device_timeout_ms", (double)q.device_timeout_ms);
    q.trial_timeout_ms =
        (uint64_t)num(j, "trial_timeout_ms", (double)q.trial_timeout_ms);
    q.max_retries = (uint32_t)num(j, "retries", q.max_retries);
    q.failure_threshold_pct = (uint32_t)num(j, "failure_threshold_pct",
                                            q.failure_threshold_pct);
    q.gate_enabled = cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "gate"))
                         ? false
                         : q.gate_enabled;
    q.soak_ms = (uint64_t)num(j, "soak_ms", (double)q.soak_ms);
    q.gate_retry_ms = (uint64_t)num(j, "gate_retry_ms",
                                    (double)q.gate_retry_ms);
    q.gate_max_wait_ms = (uint64_t)num(j, "gate_max_wait_ms",
                                       (double)q.gate_max_wait_ms);
    q.offline_wait_ms = (uint64_t)num(j, "offline_wait_ms",
                                      (double)q.offline_wait_ms);
    q.health.min_devices =
        (uint32_t)num(j, "min_devices", q.health.min_devices);
    q.health.min_inferences = (uint64_t)num(j, "min_inferences",
                                            (double)q.health.min_inferences);
    q.health.z_crit = num(j, "z_crit", q.health.z_crit);
    q.health.low_conf.abs = num(j, "low_conf_abs", q.health.low_conf.abs);
    q.health.low_conf.rel = num(j, "low_conf_rel", q.health.low_conf.rel);
    q.health.lat_p95_ratio = num(j, "lat_p95_ratio",
                                 q.health.lat_p95_ratio);
    cJSON_Delete(j);
    *p = rollout_policy_check(&q) == NULL ? q : *defaults;
}

/* ---- rollout persistence ------------------------------------------------------- */

struct dev_row {
    char id[TML_MAX_DEVICE_ID + 1];
    uint32_t offer_id;
    uint8_t wave, state, reason;
    uint32_t offset, attempts;
    uint32_t served_hi, resent, rewinds, resumes;
};

struct rollout_row {
    uint32_t id, version;
    char artifact[OTA_HASH_HEX_LEN + 1];
    char rollback_artifact[OTA_HASH_HEX_LEN + 1];
    char model[TML_MAX_NAME + 1];
    char grp[TML_MAX_NAME + 1];
    char *policy; /* owned */
    uint8_t state;
    char reason[ROLLOUT_REASON_MAX];
    uint32_t cur_wave;
    int64_t tele_since_id, created_at;
    uint64_t bytes_sent, bytes_resent, rewinds, resumes, requests_limited;
    size_t n_waves;
    uint32_t wave_pct[ROLLOUT_MAX_WAVES];
    uint8_t wave_state[ROLLOUT_MAX_WAVES];
    uint32_t wave_n[ROLLOUT_MAX_WAVES];
    char wave_reason[ROLLOUT_MAX_WAVES][HEALTH_REASON_MAX];
    size_t n_devs;
    struct dev_row *devs; /* owned */
};

struct flush_job {
    struct ota *o;
    uint64_t seq;
    int64_t now_s;
    size_t n;
    struct rollout_row rows[OTA_MAX_ROLLOUTS];
};

static void
flush_job_free(struct flush_job *j)
{
    for (size_t i = 0; i < j->n; i++) {
        free(j->rows[i].policy);
        free(j->rows[i].devs);
    }
    free(j);
}

static int
flush_fn(sqlite3 *db, void *arg)
{
    struct flush_job *j = arg;
    sqlite3_stmt *ro = NULL, *wv = NULL, *dv = NULL;
    int rc;

    rc = sqlite3_prepare_v2(
        db,
        "INSERT INTO rollouts(id, artifact, rollback_artifact, model, "
        "version, grp, policy, state, reason, cur_wave, tele_since_id, "
        "bytes_sent, created_at, updated_at, bytes_resent, rewinds, "
        "resumes, requests_limited) "
        "VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,"
        "?18) "
        "ON CONFLICT(id) DO UPDATE SET state=excluded.state, "
        "reason=excluded.reason, cur_wave=excluded.cur_wave, "
        "bytes_sent=excluded.bytes_sent, updated_at=excluded.updated_at, "
        "bytes_resent=excluded.bytes_resent, rewinds=excluded.rewinds, "
        "resumes=excluded.resumes, "
        "requests_limited=excluded.requests_limited",
        -1, &ro, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(
            db,
            "INSERT INTO waves(rollout_id, idx, pct, state, n_devices, "
            "gate_reason) VALUES(?1,?2,?3,?4,?5,?6) "
            "ON CONFLICT DO UPDATE SET state=excluded.state, "
            "n_devices=excluded.n_devices, gate_reason=excluded.gate_reason",
            -1, &wv, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(
            db,
            "INSERT INTO rollout_devices(rollout_id, device, offer_id, wave, "
            "state, reason, offset, attempts, updated_at, served_hi, "
            "resent, rewinds, resumes) "
            "VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13) "
            "ON CONFLICT DO UPDATE SET wave=excluded.wave, "
            "state=excluded.state, reason=excluded.reason, "
            "offset=excluded.offset, attempts=excluded.attempts, "
            "updated_at=excluded.updated_at, served_hi=excluded.served_hi, "
            "resent=excluded.resent, rewinds=excluded.rewinds, "
            "resumes=excluded.resumes",
            -1, &dv, NULL);
    for (size_t i = 0; rc == SQLITE_OK && i < j->n; i++) {
        const struct rollout_row *r = &j->rows[i];
        if (r->policy != NULL) {
            sqlite3_reset(ro);
            sqlite3_bind_int64(ro, 1, r->id);
            sqlite3_bind_text(ro, 2, r->artifact, -1, SQLITE_STATIC);
            sqlite3_bind_text(ro, 3, r->rollback_artifact, -1, SQLITE_STATIC);
            sqlite3_bind_text(ro, 4, r->model, -1, SQLITE_STATIC);
            sqlite3_bind_int64(ro, 5, r->version);
            sqlite3_bind_text(ro, 6, r->grp, -1, SQLITE_STATIC);
            sqlite3_bind_text(ro, 7, r->policy, -1, SQLITE_STATIC);
            sqlite3_bind_int(ro, 8, r->state);
            sqlite3_bind_text(ro, 9, r->reason, -1, SQLITE_STATIC);
            sqlite3_bind_int64(ro, 10, r->cur_wave);
            sqlite3_bind_int64(ro, 11, r->tele_since_id);
            sqlite3_bind_int64(ro, 12, (int64_t)r->bytes_sent);
            sqlite3_bind_int64(ro, 13, r->created_at);
            sqlite3_bind_int64(ro, 14, j->now_s);
            sqlite3_bind_int64(ro, 15, (int64_t)r->bytes_resent);
            sqlite3_bind_int64(ro, 16, (int64_t)r->rewinds);
            sqlite3_bind_int64(ro, 17, (int64_t)r->resumes);
            sqlite3_bind_int64(ro, 18, (int64_t)r->requests_limited);
            if (sqlite3_step(ro) != SQLITE_DONE) {
                rc = sqlite3_errcode(db);
                break;
            }
            for (size_t w = 0; w < r->n_waves; w++) {
                sqlite3_reset(wv);
                sqlite3_bind_int64(wv, 1, r->id);
                sqlite3_bind_int64(wv, 2, (int64_t)w);
                sqlite3_bind_int64(wv, 3, r->wave_pct[w]);
                sqlite3_bind_int(wv, 4, r->wave_state[w]);
                sqlite3_bind_int64(wv, 5, r->wave_n[w]);
                sqlite3_bind_text(wv, 6, r->wave_reason[w], -1,
                                  SQLITE_STATIC);
                if (sqlite3_step(wv) != SQLITE_DONE) {
                    rc = sqlite3_errcode(db);
                    break;
                }
            }
        }
        for (size_t k = 0; rc == SQLITE_OK && k < r->n_devs; k++) {
            const struct dev_row *dr = &r->devs[k];
            sqlite3_reset(dv);
            sqlite3_bind_int64(dv, 1, r->id);
            sqlite3_bind_text(dv, 2, dr->id, -1, SQLITE_STATIC);
            sqlite3_bind_int64(dv, 3, dr->offer_id);
            sqlite3_bind_int(dv, 4, dr->wave);
            sqlite3_bind_int(dv, 5, dr->state);
            sqlite3_bind_int(dv, 6, dr->reason);
            sqlite3_bind_int64(dv, 7, dr->offset);
            sqlite3_bind_int64(dv, 8, dr->attempts);
            sqlite3_bind_int64(dv, 9, j->now_s);
            sqlite3_bind_int64(dv, 10, dr->served_hi);
            sqlite3_bind_int64(dv, 11, dr->resent);
            sqlite3_bind_int64(dv, 12, dr->rewinds);
            sqlite3_bind_int64(dv, 13, dr->resumes);
            if (sqlite3_step(dv) != SQLITE_DONE)
                rc = sqlite3_errcode(db);
        }
    }
    sqlite3_finalize(ro);
    sqlite3_finalize(wv);
    sqlite3_finalize(dv);
    return rc == SQLITE_OK ? 0 : rc;
}

static void
flush_done(struct tmld *d, int status, void *arg)
{
    struct flush_job *j = arg;
    struct ota *o = j->o;

    (void)d;
    if (status != 0)
        log_err("ota: persisting rollout state failed (%d); written again "
                "at the next tick",
                status);
    /* The module may be gone (shutdown) by the time a write completes. */
    if (ota_is_alive(o)) {
        if (status == 0 && j->seq > o->flush_done_seq) {
            o->flush_done_seq = j->seq;
        } else if (status != 0) {
            for (size_t i = 0; i < o->n_rollouts; i++) {
                struct ota_rollout *orr = o->rollouts[i];
                orr->rollout_dirty = true;
                for (size_t k = 0; k < orr->r.n_devs; k++)
                    orr->dirty[k] = true;
            }
        }
    }
    flush_job_free(j);
}

static bool
snapshot(struct ota_rollout *orr, struct rollout_row *row)
{
    struct rollout *r = &orr->r;
    size_t n = 0;

    memset(row, 0, sizeof(*row));
    row->id = r->id;
    row->version = r->version;
    if (orr->rollout_dirty) {
        row->policy = policy_json(&r->pol);
        if (row->policy == NULL)
            return false;
    }
    memcpy(row->artifact, orr->artifact, sizeof(row->artifact));
    memcpy(row->rollback_artifact, orr->rollback_artifact,
           sizeof(row->rollback_artifact));
    snprintf(row->model, sizeof(row->model), "%s", orr->model.name);
    snprintf(row->grp, sizeof(row->grp), "%s", orr->group);
    row->state = r->state;
    snprintf(row->reason, sizeof(row->reason), "%s", r->reason);
    row->cur_wave = r->cur_wave;
    row->tele_since_id = orr->tele_since_id;
    row->created_at = orr->created_at;
    row->bytes_sent = orr->bytes_sent;
    row->bytes_resent = orr->bytes_resent;
    row->rewinds = orr->rewinds;
    row->resumes = orr->resumes;
    row->requests_limited = orr->requests_limited;
    row->n_waves = r->pol.n_waves;
    for (size_t w = 0; w < r->pol.n_waves; w++) {
        row->wave_pct[w] = r->pol.wave_pct[w];
        row->wave_state[w] = r->waves[w].state;
        row->wave_n[w] = r->waves[w].n_devices;
        snprintf(row->wave_reason[w], sizeof(row->wave_reason[w]), "%s",
                 r->waves[w].gate_reason);
    }
    for (size_t i = 0; i < r->n_devs; i++)
        n += orr->dirty[i];
    if (n > 0) {
        row->devs = calloc(n, sizeof(*row->devs));
        if (row->devs == NULL) {
            free(row->policy);
            row->policy = NULL;
            return false;
        }
        for (size_t i = 0; i < r->n_devs; i++) {
            const struct rollout_dev *d = &r->devs[i];
            struct dev_row *dr;
            if (!orr->dirty[i])
                continue;
            dr = &row->devs[row->n_devs++];
            memcpy(dr->id, d->id, sizeof(dr->id));
            dr->offer_id = d->offer_id;
            dr->wave = d->wave;
            dr->state = d->state;
            dr->reason = d->reason;
            dr->offset = d->offset;
            dr->attempts = d->attempts;
            dr->served_hi = d->served_hi;
            dr->resent = d->resent_bytes;
            dr->rewinds = d->rewinds;
            dr->resumes = d->resumes;
        }
    }
    return true;
}

void
ota_db_flush(struct ota *o)
{
    struct flush_job *j;
    bool any = false;
    int rc;

    for (size_t i = 0; i < o->n_rollouts && !any; i++) {
        struct ota_rollout *orr = o->rollouts[i];
        any = orr->rollout_dirty;
        for (size_t k = 0; k < orr->r.n_devs && !any; k++)
            any = orr->dirty[k];
    }
    if (!any)
        return;
    j = calloc(1, sizeof(*j));
    if (j == NULL)
        return;
    j->o = o;
    j->seq = o->flush_seq + 1;
    j->now_s = tmld_wall_s();
    for (size_t i = 0; i < o->n_rollouts; i++) {
        if (!snapshot(o->rollouts[i], &j->rows[j->n])) {
            flush_job_free(j);
            return; /* out of memory: stay dirty, try next tick */
        }
        j->n++;
    }
    rc = tmld_db_write(o->d, flush_fn, flush_done, j);
    if (rc != 0) {
        /* Queue full or writer stopped: everything stays dirty. */
        flush_job_free(j);
        return;
    }
    o->flush_seq = j->seq;
    for (size_t i = 0; i < o->n_rollouts; i++) {
        struct ota_rollout *orr = o->rollouts[i];
        orr->rollout_dirty = false;
        orr->flush_seq = o->flush_seq;
        memset(orr->dirty, 0, orr->r.n_devs * sizeof(orr->dirty[0]));
    }
}

/* ---- restore --------------------------------------------------------------------- */

/* The re-sent accounting of one device (columns 6..9 of st). A restart
 * of tmld is an interruption of every download in flight: its window may
 * be lost, and the next request is served in full. */
static void
restore_counters(struct ota_rollout *orr, struct rollout_dev *d,
                 sqlite3_stmt *st)
{
    if (d == NULL)
        return;
    d->served_hi = (uint32_t)sqlite3_column_int64(st, 6);
    d->resent_bytes = (uint32_t)sqlite3_column_int64(st, 7);
    d->rewinds = (uint32_t)sqlite3_column_int64(st, 8);
    d->resumes = (uint32_t)sqlite3_column_int64(st, 9);
    d->fresh_link = true;
    if (d->state == RDEV_OFFERED || d->state == RDEV_DOWNLOADING) {
        d->resumes++;
        orr->resumes++;
        orr->dirty[d - orr->r.devs] = true;
    }
}

static void
restore_one(struct ota *o, sqlite3_stmt *rs)
{
    sqlite3_stmt *st = NULL;
    struct rollout_policy p;
    struct ota_rollout *orr = NULL;
    struct ota_model_info info;
    uint8_t wave_states[ROLLOUT_MAX_WAVES];
    uint32_t id = (uint32_t)sqlite3_column_int64(rs, 0);
    char artifact[OTA_HASH_HEX_LEN + 1], rb[OTA_HASH_HEX_LEN + 1];
    char seed[2 * TML_MAX_NAME + 2];
    int64_t n_devs = 0;
    uint64_t now = tmld_now_ms(o->d);

    copy_col(artifact, sizeof(artifact), rs, 1);
    copy_col(rb, sizeof(rb), rs, 2);
    policy_parse((const char *)sqlite3_column_text(rs, 6), &o->defaults, &p);
    if (ota_db_get_model(o, artifact, &info) != 0) {
        log_err("ota: rollout=%u: model %s missing; not restored", id,
                artifact);
        return;
    }
    if (sqlite3_prepare_v2(tmld_db_ro(o->d),
                           "SELECT count(*) FROM rollout_devices WHERE "
                           "rollout_id=?1",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, id);
        if (sqlite3_step(st) == SQLITE_ROW)
            n_devs = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    st = NULL;
    snprintf(seed, sizeof(seed), "%s/%s", info.name,
             (const char *)sqlite3_column_text(rs, 5));
    /* Headroom for devices that join the group later. */
    orr = ota_rollout_new(o, id, info.version, &p, seed,
                          (size_t)(n_devs + 1024 < OTA_MAX_TARGETS
                                       ? n_devs + 1024
                                       : OTA_MAX_TARGETS));
    if (orr == NULL)
        goto fail;
    orr->model = info;
    memcpy(orr->artifact, artifact, sizeof(orr->artifact));
    memcpy(orr->rollback_artifact, rb, sizeof(orr->rollback_artifact));
    copy_col(orr->group, sizeof(orr->group), rs, 5);
    orr->tele_since_id = sqlite3_column_int64(rs, 9);
    orr->created_at = sqlite3_column_int64(rs, 10);
    orr->bytes_sent = (uint64_t)sqlite3_column_int64(rs, 11);
    orr->bytes_resent = (uint64_t)sqlite3_column_int64(rs, 12);
    orr->rewinds = (uint64_t)sqlite3_column_int64(rs, 13);
    orr->resumes = (uint64_t)sqlite3_column_int64(rs, 14);
    orr->requests_limited = (uint64_t)sqlite3_column_int64(rs, 15);
    if (ota_store_get(&o->store, artifact, &orr->art) != 0) {
        log_err("ota: rollout=%u: artifact %s unreadable or no longer "
                "verifies; not restored",
                id, artifact);
        goto fail;
    }
    ota_store_pin(orr->art);
    if (rb[0] != '\0' && ota_store_get(&o->store, rb, &orr->rb_art) == 0)
        ota_store_pin(orr->rb_art);
    else
        orr->rb_art = NULL;
    /* Rebuild in offer-id order: offer ids are base + insertion index. */
    if (sqlite3_prepare_v2(tmld_db_ro(o->d),
                           "SELECT device, wave, state, reason, offset, "
                           "attempts, served_hi, resent, rewinds, resumes "
                           "FROM rollout_devices WHERE "
                           "rollout_id=?1 ORDER BY offer_id",
                           -1, &st, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, id);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *dev = (const char *)sqlite3_column_text(st, 0);
        uint8_t state = (uint8_t)sqlite3_column_int(st, 2);
        uint8_t reason = (uint8_t)sqlite3_column_int(st, 3);
        if (dev == NULL ||
            rollout_add_device(&orr->r, dev, false,
                               state == RDEV_EXCLUDED ? reason : 0) != 0 ||
            rollout_restore_device(&orr->r, dev,
                                   (uint8_t)sqlite3_column_int(st, 1), state,
                                   reason,
                                   (uint32_t)sqlite3_column_int64(st, 4),
                                   (uint32_t)sqlite3_column_int64(st, 5)) !=
                0)
            goto fail;
        restore_counters(orr, rollout_find(&orr->r, dev), st);
    }
    sqlite3_finalize(st);
    st = NULL;
    memset(wave_states, 0, sizeof(wave_states));
    if (sqlite3_prepare_v2(tmld_db_ro(o->d),
                           "SELECT idx, state, gate_reason FROM waves WHERE "
                           "rollout_id=?1 ORDER BY idx",
                           -1, &st, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, id);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int w = sqlite3_column_int(st, 0);
        if (w >= 0 && w < ROLLOUT_MAX_WAVES)
            wave_states[w] = (uint8_t)sqlite3_column_int(st, 1);
    }
    sqlite3_finalize(st);
    st = NULL;
    rollout_restore(&orr->r, (uint8_t)sqlite3_column_int(rs, 7),
                    (const char *)sqlite3_column_text(rs, 8),
                    (unsigned)sqlite3_column_int(rs, 4), wave_states, now);
    if (ota_add_rollout(o, orr) != 0)
        goto fail;
    /* ota_add_rollout pinned again: keep one pin per reference. */
    ota_store_unpin(orr->art);
    if (orr->rb_art != NULL)
        ota_store_unpin(orr->rb_art);
    log_info("ota: rollout=%u %s v%u restored: %s, wave %u of %zu, %zu "
             "devices",
             id, info.name, info.version, rollout_state_name(orr->r.state),
             orr->r.cur_wave + 1, orr->r.pol.n_waves, orr->r.n_devs);
    return;
fail:
    sqlite3_finalize(st);
    log_err("ota: rollout=%u could not be restored", id);
    ota_rollout_free(o, orr);
}

#define RESTORE_COLS                                                           \
    "id, artifact, rollback_artifact, model, cur_wave, grp, policy, state, "   \
    "reason, tele_since_id, created_at, bytes_sent, bytes_resent, rewinds, "   \
    "resumes, requests_limited, version"

struct ota_rollout *
ota_db_load_group(struct ota *o, const char *group, const char *model,
                  uint32_t model_version)
{
    sqlite3_stmt *rs = NULL;
    struct ota_rollout *orr = NULL;

    if (o->n_rollouts == OTA_MAX_ROLLOUTS ||
        sqlite3_prepare_v2(tmld_db_ro(o->d),
                           "SELECT " RESTORE_COLS " FROM rollouts WHERE "
                           "grp=?1 AND state=3 ORDER BY id DESC LIMIT 1",
                           -1, &rs, NULL) != SQLITE_OK) {
        sqlite3_finalize(rs);
        return NULL;
    }
    sqlite3_bind_text(rs, 1, group, -1, SQLITE_STATIC);
    if (sqlite3_step(rs) == SQLITE_ROW) {
        uint32_t id = (uint32_t)sqlite3_column_int64(rs, 0);
        const char *name = (const char *)sqlite3_column_text(rs, 3);
        bool has = name != NULL && strcmp(name, model) == 0 &&
                   model_version >= (uint32_t)sqlite3_column_int64(rs, 16);

        /* Only for a device that does not run that model yet; the
         * artifact comes from the content-addressed store on disk. */
        if (!has && ota_find_rollout(o, id) == NULL) {
            restore_one(o, rs);
            orr = ota_find_rollout(o, id);
            if (orr != NULL)
                log_info("ota: rollout=%u (finished) loaded again from the "
                         "store for a device joining group %s",
                         id, group);
        }
    }
    sqlite3_finalize(rs);
    return orr;
}

void
ota_db_restore(struct ota *o)
{
    sqlite3_stmt *rs = NULL;

    if (sqlite3_prepare_v2(tmld_db_ro(o->d),
                           "SELECT " RESTORE_COLS " "
                           "FROM rollouts WHERE state IN (0, 1) ORDER BY id "
                           "LIMIT 32",
                           -1, &rs, NULL) != SQLITE_OK) {
        sqlite3_finalize(rs);
        return;
    }
    while (sqlite3_step(rs) == SQLITE_ROW)
        restore_one(o, rs);
    sqlite3_finalize(rs);
}

/* ---- the gate's telemetry window --------------------------------------------- */

int
ota_db_gate_aggregates(struct ota *o, struct ota_rollout *orr,
                       struct health_agg *canary, struct health_agg *baseline)
{
    struct rollout *r = &orr->r;
    sqlite3_stmt *st = NULL;
    uint8_t *seen; /* bit 0: reported on the new model, bit 1: old */
    int rc;

    seen = calloc(r->n_devs ? r->n_devs : 1, 1);
    if (seen == NULL)
        return -ENOMEM;
    /* tele rows are appended in id order, so the window is an id range: a
     * rowid range scan, no index needed. Bounded by GATE_MAX_ROWS. */
    rc = sqlite3_prepare_v2(tmld_db_ro(o->d),
                            "SELECT d.name, t.model_version, t.n_inferences, "
                            "t.n_low_conf, t.n_flagged, t.n_errors, "
                            "t.lat_mean_us, t.body FROM tele t JOIN devices "
                            "d ON d.id = t.device_id WHERE t.id > ?1 "
                            "ORDER BY t.id LIMIT ?2",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
        rc = -EIO;
        goto out;
    }
    sqlite3_bind_int64(st, 1, orr->tele_since_id);
    sqlite3_bind_int64(st, 2, GATE_MAX_ROWS);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *dev = (const char *)sqlite3_column_text(st, 0);
        struct rollout_dev *d = dev != NULL ? rollout_find(r, dev) : NULL;
        struct tml_tele t;
        bool is_new;
        struct health_agg *a;
        size_t idx;

        if (d == NULL)
            continue;
        idx = (size_t)(d - r->devs);
        is_new = (uint32_t)sqlite3_column_int64(st, 1) == r->version;
        a = is_new ? canary : baseline;
        if (tml_tele_decode(sqlite3_column_blob(st, 7),
                            (size_t)sqlite3_column_bytes(st, 7),
                            &t) != TML_OK) {
            memset(&t, 0, sizeof(t));
            t.n_inferences = (uint32_t)sqlite3_column_int64(st, 2);
            t.n_low_conf = (uint32_t)sqlite3_column_int64(st, 3);
            t.n_flagged = (uint32_t)sqlite3_column_int64(st, 4);
            t.n_errors = (uint32_t)sqlite3_column_int64(st, 5);
            t.lat_mean_us = (uint32_t)sqlite3_column_int64(st, 6);
        }
        health_agg_add_tele(a, &t);
        if (!(seen[idx] & (is_new ? 1 : 2))) {
            seen[idx] |= is_new ? 1 : 2;
            a->n_devices++;
        }
    }
    rc = rc == SQLITE_DONE ? 0 : -EIO;
out:
    sqlite3_finalize(st);
    free(seen);
    return rc;
}
