/*
 * ota_ctl.c: the OTA control verbs (docs/ota.md lists args and results).
 *
 *   artifact.upload  {upload?, offset, total?, data (base64)}: a bundle in
 *                    pieces (a control line is at most 64 KiB)
 *   artifact.commit  {upload}: verify against the trusted keys, store,
 *                    add to the models table
 *   artifact.get     {artifact, offset?}: a stored bundle in base64
 *                    pieces (tmlctl rollback re-signs an older image)
 *   models           {}: stored models
 *   deploy           {artifact, group | devices, waves, ..., dry_run}
 *   rollout.list     {}
 *   rollout.show     {id, devices?, limit?} (alias rollout.status)
 *   rollout.pause / rollout.resume / rollout.abort  {id}
 *
 * Everything is validated here before it reaches rollout.c; the bundle is
 * verified on a worker thread (ECDSA and the file write do not block the
 * loop).
 */
#include "ota.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UPLOAD_IDLE_MS 300000u
#define MAX_UPLOAD_PIECE 49152 /* decoded bytes per artifact.upload */
#define DEVICE_LIST_MAX 10000
#define GET_PIECE 36864 /* raw bytes per artifact.get (base64 < 64 KiB) */

/* ---- uploads ------------------------------------------------------------------------ */

static struct ota_upload *
find_upload(struct ota *o, int64_t id)
{
    for (size_t i = 0; i < OTA_MAX_UPLOADS; i++) {
        if (o->uploads[i].in_use && o->uploads[i].id == id)
            return &o->uploads[i];
    }
    return NULL;
}

static void
drop_upload(struct ota_upload *u)
{
    free(u->buf);
    memset(u, 0, sizeof(*u));
}

void
ota_ctl_expire_uploads(struct ota *o, uint64_t now_ms)
{
    for (size_t i = 0; i < OTA_MAX_UPLOADS; i++) {
        if (o->uploads[i].in_use &&
            now_ms - o->uploads[i].touched_ms > UPLOAD_IDLE_MS)
            drop_upload(&o->uploads[i]);
    }
}

void
ota_ctl_free_uploads(struct ota *o)
{
    for (size_t i = 0; i < OTA_MAX_UPLOADS; i++)
        drop_upload(&o->uploads[i]);
}

static void
h_upload(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
         void *arg)
{
    struct ota *o = arg;
    struct ota_upload *u = NULL;
    const char *data;
    int64_t id, offset, total;
    uint8_t *piece;
    long n;
    cJSON *res;

    if (tmld_ctl_arg_str(args, "data", 4 * MAX_UPLOAD_PIECE / 3 + 4,
                         &data) != 0 ||
        tmld_ctl_arg_int(args, "offset", 0, TML_BUNDLE_MAX_FILE, &offset) !=
            0) {
        tmld_ctl_reply_err(req, "bad_args", "need data (base64, at most %d "
                           "bytes decoded) and offset",
                           MAX_UPLOAD_PIECE);
        return;
    }
    switch (tmld_ctl_arg_int(args, "upload", 1, UINT32_MAX, &id)) {
    case 0:
        u = find_upload(o, id);
        if (u == NULL) {
            tmld_ctl_reply_err(req, "not_found", "no upload %lld (expired?)",
                               (long long)id);
            return;
        }
        break;
    case 1:
        if (offset != 0 || tmld_ctl_arg_int(args, "total", 1,
                                            TML_BUNDLE_MAX_FILE,
                                            &total) != 0) {
            tmld_ctl_reply_err(req, "bad_args", "a new upload starts at "
                               "offset 0 with total (1..%u bytes)",
                               TML_BUNDLE_MAX_FILE);
            return;
        }
        for (size_t i = 0; i < OTA_MAX_UPLOADS && u == NULL; i++) {
            if (!o->uploads[i].in_use)
                u = &o->uploads[i];
        }
        if (u == NULL) {
            tmld_ctl_reply_err(req, "busy", "%d uploads in progress",
                               OTA_MAX_UPLOADS);
            return;
        }
        u->buf = malloc((size_t)total);
        if (u->buf == NULL) {
            tmld_ctl_reply_err(req, "internal", "out of memory");
            return;
        }
        u->in_use = true;
        u->id = ++o->next_upload_id;
        u->total = (size_t)total;
        u->len = 0;
        break;
    default:
        tmld_ctl_reply_err(req, "bad_args", "upload must be an id");
        return;
    }
    if ((size_t)offset != u->len) {
        tmld_ctl_reply_err(req, "conflict", "upload %u expects offset %zu",
                           u->id, u->len);
        return;
    }
    piece = malloc(MAX_UPLOAD_PIECE);
    if (piece == NULL) {
        tmld_ctl_reply_err(req, "internal", "out of memory");
        return;
    }
    n = ota_b64_decode(data, piece, MAX_UPLOAD_PIECE);
    if (n < 0 || u->len + (size_t)n > u->total) {
        free(piece);
        tmld_ctl_reply_err(req, "bad_args", n < 0 ? "data is not base64"
                                                  : "more bytes than total");
        return;
    }
    memcpy(u->buf + u->len, piece, (size_t)n);
    free(piece);
    u->len += (size_t)n;
    u->touched_ms = tmld_now_ms(d);
    res = cJSON_CreateObject();
    cJSON_AddNumberToObject(res, "upload", u->id);
    cJSON_AddNumberToObject(res, "received", (double)u->len);
    cJSON_AddNumberToObject(res, "total", (double)u->total);
    tmld_ctl_reply_ok(req, res);
}

static cJSON *
model_json(const struct ota_model_info *m)
{
    cJSON *j = cJSON_CreateObject();

    cJSON_AddStringToObject(j, "artifact", m->artifact);
    cJSON_AddStringToObject(j, "name", m->name);
    cJSON_AddNumberToObject(j, "version", m->version);
    cJSON_AddStringToObject(j, "hw", m->hw);
    cJSON_AddNumberToObject(j, "size", m->size);
    cJSON_AddStringToObject(j, "sha256", m->sha256);
    cJSON_AddStringToObject(j, "key_id", m->key_id);
    cJSON_AddNumberToObject(j, "created_at", m->created);
    cJSON_AddNumberToObject(j, "expires_at", m->expires);
    cJSON_AddNumberToObject(j, "arena_size", m->arena_size);
    return j;
}

struct commit_work {
    uv_work_t w;
    struct ota *o;
    struct tmld_ctl_req *req;
    struct ota_store keys; /* copy: dir and trusted keys only */
    uint8_t *buf;
    size_t len;
    uint64_t now_s;
    int rc;
    struct ota_model_info info;
    char err[OTA_STORE_ERR_MAX];
};

static void
commit_work_fn(uv_work_t *w)
{
    struct commit_work *c = w->data;

    c->rc = ota_store_put(&c->keys, c->buf, c->len, c->now_s, &c->info,
                          c->err, sizeof(c->err));
}

static void
commit_db_done(struct tmld *d, int status, void *arg)
{
    struct commit_work *c = arg;

    (void)d;
    if (status == -EEXIST)
        tmld_ctl_reply_err(c->req, "conflict",
                           "%s v%u for %s is already stored with different "
                           "content: versions are never reused",
                           c->info.name, c->info.version, c->info.hw);
    else if (status != 0)
        tmld_ctl_reply_err(c->req, "unavailable",
                           "storing the model row failed (%d)", status);
    else {
        log_info("ota: model %s v%u hw=%s stored as %s (key %s)",
                 c->info.name, c->info.version, c->info.hw, c->info.artifact,
                 c->info.key_id);
        tmld_ctl_reply_ok(c->req, model_json(&c->info));
    }
    free(c);
}

static void
commit_after(uv_work_t *w, int status)
{
    struct commit_work *c = w->data;
    int rc;

    free(c->buf);
    c->buf = NULL;
    if (status != 0 || !ota_is_alive(c->o)) {
        tmld_ctl_reply_err(c->req, "unavailable", "tmld is stopping");
        free(c);
        return;
    }
    if (c->rc != 0) {
        log_warn("ota: bundle refused: %s", c->err);
        tmld_ctl_reply_err(c->req, c->rc == -EIO ? "internal" : "bad_args",
                           "%s", c->err);
        free(c);
        return;
    }
    rc = ota_db_put_model(c->o, &c->info, commit_db_done, c);
    if (rc != 0) {
        tmld_ctl_reply_err(c->req, "busy", "database queue full");
        free(c);
    }
}

static void
h_commit(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
         void *arg)
{
    struct ota *o = arg;
    struct ota_upload *u;
    struct commit_work *c;
    int64_t id;

    if (tmld_ctl_arg_int(args, "upload", 1, UINT32_MAX, &id) != 0) {
        tmld_ctl_reply_err(req, "bad_args", "need upload (id)");
        return;
    }
    u = find_upload(o, id);
    if (u == NULL) {
        tmld_ctl_reply_err(req, "not_found", "no upload %lld", (long long)id);
        return;
    }
    if (u->len != u->total) {
        tmld_ctl_reply_err(req, "conflict", "upload has %zu of %zu bytes",
                           u->len, u->total);
        return;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        tmld_ctl_reply_err(req, "internal", "out of memory");
        return;
    }
    c->o = o;
    c->req = req;
    memcpy(c->keys.dir, o->store.dir, sizeof(c->keys.dir));
    memcpy(c->keys.trusted, o->store.trusted, sizeof(c->keys.trusted));
    c->keys.n_trusted = o->store.n_trusted;
    c->buf = u->buf;
    c->len = u->len;
    c->now_s = (uint64_t)tmld_wall_s();
    u->buf = NULL;
    drop_upload(u);
    c->w.data = c;
    if (uv_queue_work(tmld_loop(d), &c->w, commit_work_fn, commit_after) !=
        0) {
        free(c->buf);
        free(c);
        tmld_ctl_reply_err(req, "internal", "cannot queue verification");
    }
}

static void
h_models(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
         void *arg)
{
    sqlite3_stmt *st = NULL;
    cJSON *res = cJSON_CreateObject(), *list;

    (void)arg;
    (void)args;
    list = cJSON_AddArrayToObject(res, "models");
    if (sqlite3_prepare_v2(tmld_db_ro(d),
                           "SELECT artifact FROM models ORDER BY name, "
                           "version DESC LIMIT 1000",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        cJSON_Delete(res);
        tmld_ctl_reply_err(req, "unavailable", "database not readable");
        return;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        struct ota_model_info m;
        if (ota_db_get_model(arg, (const char *)sqlite3_column_text(st, 0),
                             &m) == 0)
            cJSON_AddItemToArray(list, model_json(&m));
    }
    sqlite3_finalize(st);
    tmld_ctl_reply_ok(req, res);
}

/* Base64 (RFC 4648, padded) of n bytes into out (4 * ceil(n / 3) + 1). */
static void
b64_encode(const uint8_t *p, size_t n, char *out)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        *out++ = tbl[(v >> 18) & 63];
        *out++ = tbl[(v >> 12) & 63];
        *out++ = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        *out++ = i + 2 < n ? tbl[v & 63] : '=';
    }
    *out = '\0';
}

/* artifact.get: the stored bundle file, as verified on load (an altered
 * file is refused), in pieces of GET_PIECE bytes. Only signed, public
 * material leaves tmld: tmlctl rollback re-signs the image with the
 * operator's key on the operator's side. */
static void
h_get(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args, void *arg)
{
    struct ota *o = arg;
    const char *artifact = NULL;
    int64_t offset = 0;
    struct ota_artifact *a = NULL;
    char *b64;
    size_t n;
    cJSON *res;
    int rc;

    (void)d;
    if (tmld_ctl_arg_str(args, "artifact", OTA_HASH_HEX_LEN, &artifact) !=
            0 ||
        !ota_is_hash_hex(artifact) ||
        tmld_ctl_arg_int(args, "offset", 0, TML_BUNDLE_MAX_FILE, &offset) <
            0) {
        tmld_ctl_reply_err(req, "bad_args", "need artifact (64 hex) and an "
                                            "optional offset");
        return;
    }
    rc = ota_store_get(&o->store, artifact, &a);
    if (rc != 0) {
        tmld_ctl_reply_err(req, rc == -ENOENT ? "not_found" : "internal",
                           "artifact %.12s: %s", artifact,
                           rc == -EPERM ? "no longer verifies"
                                        : strerror(-rc));
        return;
    }
    if ((size_t)offset > a->bundle_len) {
        tmld_ctl_reply_err(req, "bad_args", "offset past the %zu bytes",
                           a->bundle_len);
        return;
    }
    n = a->bundle_len - (size_t)offset;
    if (n > GET_PIECE)
        n = GET_PIECE;
    b64 = malloc(4 * ((n + 2) / 3) + 1);
    res = cJSON_CreateObject();
    if (b64 == NULL || res == NULL) {
        free(b64);
        cJSON_Delete(res);
        tmld_ctl_reply_err(req, "internal", "out of memory");
        return;
    }
    b64_encode(a->bundle + offset, n, b64);
    cJSON_AddNumberToObject(res, "total", (double)a->bundle_len);
    cJSON_AddNumberToObject(res, "offset", (double)offset);
    cJSON_AddStringToObject(res, "data", b64);
    free(b64);
    tmld_ctl_reply_ok(req, res);
}

/* ---- deploy -------------------------------------------------------------------------- */

struct target {
    char id[TML_MAX_DEVICE_ID + 1];
    uint8_t excluded;
    uint32_t model_version, chunk_max;
};

static int
add_target_row(struct ota_model_info *m, sqlite3_stmt *st,
               struct target *t)
{
    const char *name = (const char *)sqlite3_column_text(st, 0);
    const char *hw = (const char *)sqlite3_column_text(st, 1);

    if (name == NULL || strlen(name) > TML_MAX_DEVICE_ID)
        return -EINVAL;
    memset(t, 0, sizeof(*t));
    memcpy(t->id, name, strlen(name) + 1);
    t->excluded = ota_capacity_check(
        m, hw, (uint32_t)sqlite3_column_int64(st, 2),
        (uint32_t)sqlite3_column_int64(st, 3),
        (uint32_t)sqlite3_column_int64(st, 4),
        (uint32_t)sqlite3_column_int64(st, 5));
    t->model_version = (uint32_t)sqlite3_column_int64(st, 6);
    t->chunk_max = (uint32_t)sqlite3_column_int64(st, 7);
    return 0;
}

#define TARGET_COLS                                                            \
    "d.name, d.hw, d.slot_size, d.arena_size, d.agent_version, "              \
    "d.version_floor, d.model_version, d.chunk_max"

/* Resolves the targets. Returns count or -errno; *out malloc'ed. */
static long
resolve_targets(struct tmld *d, struct ota_model_info *m, const char *group,
                const cJSON *devices, struct target **out)
{
    sqlite3_stmt *st = NULL;
    struct target *t = calloc(OTA_MAX_TARGETS, sizeof(*t));
    long n = 0;

    if (t == NULL)
        return -ENOMEM;
    if (group != NULL) {
        if (sqlite3_prepare_v2(tmld_db_ro(d),
                               "SELECT " TARGET_COLS " FROM devices d JOIN "
                               "device_groups g ON g.device_id = d.id WHERE "
                               "g.grp = ?1 ORDER BY d.name LIMIT ?2",
                               -1, &st, NULL) != SQLITE_OK)
            goto io;
        sqlite3_bind_text(st, 1, group, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, OTA_MAX_TARGETS);
        while (sqlite3_step(st) == SQLITE_ROW)
            if (add_target_row(m, st, &t[n]) == 0)
                n++;
    } else {
        const cJSON *it;
        if (sqlite3_prepare_v2(tmld_db_ro(d),
                               "SELECT " TARGET_COLS " FROM devices d WHERE "
                               "d.name = ?1",
                               -1, &st, NULL) != SQLITE_OK)
            goto io;
        cJSON_ArrayForEach(it, devices)
        {
            if (!cJSON_IsString(it) || n == OTA_MAX_TARGETS)
                continue;
            sqlite3_reset(st);
            sqlite3_bind_text(st, 1, it->valuestring, -1, SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_ROW) {
                if (add_target_row(m, st, &t[n]) == 0)
                    n++;
            } else if (tml_device_id_valid(it->valuestring,
                                           strlen(it->valuestring))) {
                /* Never seen: offered when it first says hello. */
                memset(&t[n], 0, sizeof(t[n]));
                snprintf(t[n].id, sizeof(t[n].id), "%s", it->valuestring);
                n++;
            }
        }
    }
    sqlite3_finalize(st);
    *out = t;
    return n;
io:
    sqlite3_finalize(st);
    free(t);
    return -EIO;
}

static int
policy_from_args(struct ota *o, const cJSON *args, struct rollout_policy *p,
                 const char **why)
{
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(args, "waves");
    int64_t v;
    bool b;

    *p = o->defaults;
    *why = NULL;
    if (cJSON_IsString(w)) {
        if (rollout_parse_waves(w->valuestring, p) != 0) {
            *why = "waves: cumulative percentages like \"5,25,100\"";
            return -EINVAL;
        }
    } else if (w != NULL) {
        *why = "waves must be a string like \"5,25,100\"";
        return -EINVAL;
    }
#define INT_ARG(key, lo, hi, dst, scale)                                       \
    switch (tmld_ctl_arg_int(args, key, lo, hi, &v)) {                         \
    case 0:                                                                    \
        dst = (__typeof__(dst))(v * (scale));                                  \
        break;                                                                 \
    case 1:                                                                    \
        break;                                                                 \
    default:                                                                   \
        *why = key " out of range (" #lo ".." #hi ")";                        \
        return -EINVAL;                                                        \
    }
    INT_ARG("max_concurrent", 1, 100000, p->max_concurrent, 1)
    INT_ARG("failure_threshold", 0, 100, p->failure_threshold_pct, 1)
    INT_ARG("retries", 0, 100, p->max_retries, 1)
    INT_ARG("device_timeout_ms", 100, 86400000, p->device_timeout_ms, 1)
    INT_ARG("trial_timeout_ms", 100, 86400000, p->trial_timeout_ms, 1)
    INT_ARG("soak_ms", 0, 604800000, p->soak_ms, 1)
    INT_ARG("gate_retry_ms", 10, 86400000, p->gate_retry_ms, 1)
    INT_ARG("gate_max_wait_ms", 0, 2592000000, p->gate_max_wait_ms, 1)
    INT_ARG("offline_wait_ms", 0, 31536000000, p->offline_wait_ms, 1)
    INT_ARG("min_devices", 0, 100000, p->health.min_devices, 1)
    INT_ARG("min_inferences", 0, 1000000000, p->health.min_inferences, 1)
#undef INT_ARG
    if (tmld_ctl_arg_bool(args, "gate", &b) == 0)
        p->gate_enabled = b;
    if (tmld_ctl_arg_bool(args, "rollback", &b) == 0)
        p->rollback_on_gate_fail = b;
    *why = rollout_policy_check(p);
    return *why == NULL ? 0 : -EINVAL;
}

static cJSON *
counts_json(const uint32_t c[RDEV__COUNT])
{
    cJSON *j = cJSON_CreateObject();

    for (uint8_t s = 0; s < RDEV__COUNT; s++) {
        if (c[s] != 0)
            cJSON_AddNumberToObject(j, rollout_dev_state_name(s), c[s]);
    }
    return j;
}

static cJSON *
policy_json_out(const struct rollout_policy *p)
{
    cJSON *j = cJSON_CreateObject(), *w = cJSON_AddArrayToObject(j, "waves");

    for (size_t i = 0; i < p->n_waves; i++)
        cJSON_AddItemToArray(w, cJSON_CreateNumber(p->wave_pct[i]));
    cJSON_AddNumberToObject(j, "max_concurrent", p->max_concurrent);
    cJSON_AddNumberToObject(j, "failure_threshold", p->failure_threshold_pct);
    cJSON_AddNumberToObject(j, "retries", p->max_retries);
    cJSON_AddNumberToObject(j, "device_timeout_ms",
                            (double)p->device_timeout_ms);
    cJSON_AddBoolToObject(j, "gate", p->gate_enabled);
    cJSON_AddNumberToObject(j, "soak_ms", (double)p->soak_ms);
    cJSON_AddNumberToObject(j, "gate_max_wait_ms",
                            (double)p->gate_max_wait_ms);
    cJSON_AddNumberToObject(j, "offline_wait_ms",
                            (double)p->offline_wait_ms);
    cJSON_AddNumberToObject(j, "gate_min_devices", p->health.min_devices);
    cJSON_AddNumberToObject(j, "gate_min_inferences",
                            (double)p->health.min_inferences);
    cJSON_AddNumberToObject(j, "gate_z_crit", p->health.z_crit);
    cJSON_AddNumberToObject(j, "gate_low_conf_margin_abs",
                            p->health.low_conf.abs);
    cJSON_AddNumberToObject(j, "gate_low_conf_margin_rel",
                            p->health.low_conf.rel);
    cJSON_AddNumberToObject(j, "gate_lat_p95_ratio",
                            p->health.lat_p95_ratio);
    return j;
}

static cJSON *
rollout_json(struct ota_rollout *orr, bool with_devices, int64_t limit)
{
    struct rollout *r = &orr->r;
    cJSON *j = cJSON_CreateObject(), *waves, *devs;
    uint32_t c[RDEV__COUNT];

    cJSON_AddNumberToObject(j, "id", r->id);
    cJSON_AddStringToObject(j, "model", orr->model.name);
    cJSON_AddNumberToObject(j, "version", r->version);
    cJSON_AddStringToObject(j, "hw", orr->model.hw);
    cJSON_AddStringToObject(j, "artifact", orr->artifact);
    cJSON_AddNumberToObject(j, "size", orr->model.size);
    cJSON_AddStringToObject(j, "group", orr->group);
    cJSON_AddStringToObject(j, "state", rollout_state_name(r->state));
    cJSON_AddStringToObject(j, "reason", r->reason);
    cJSON_AddNumberToObject(j, "wave", r->cur_wave + 1);
    cJSON_AddNumberToObject(j, "created_at", (double)orr->created_at);
    cJSON_AddNumberToObject(j, "devices", (double)r->n_devs);
    cJSON_AddNumberToObject(j, "bytes_sent", (double)orr->bytes_sent);
    cJSON_AddNumberToObject(j, "chunks_sent", (double)orr->chunks_sent);
    cJSON_AddNumberToObject(j, "offers_sent", (double)orr->offers_sent);
    cJSON_AddNumberToObject(j, "bytes_resent", (double)orr->bytes_resent);
    cJSON_AddNumberToObject(j, "rewinds", (double)orr->rewinds);
    cJSON_AddNumberToObject(j, "resumes", (double)orr->resumes);
    cJSON_AddNumberToObject(j, "requests_limited",
                            (double)orr->requests_limited);
    cJSON_AddBoolToObject(j, "rollback_available", orr->rb_art != NULL);
    rollout_counts(r, -1, c);
    cJSON_AddItemToObject(j, "counts", counts_json(c));
    cJSON_AddItemToObject(j, "policy", policy_json_out(&r->pol));
    waves = cJSON_AddArrayToObject(j, "waves");
    for (size_t w = 0; w < r->pol.n_waves; w++) {
        cJSON *wj = cJSON_CreateObject();
        rollout_counts(r, (int)w, c);
        cJSON_AddNumberToObject(wj, "wave", (double)(w + 1));
        cJSON_AddNumberToObject(wj, "pct", r->pol.wave_pct[w]);
        cJSON_AddStringToObject(wj, "state",
                                rollout_wave_state_name(r->waves[w].state));
        cJSON_AddNumberToObject(wj, "devices", r->waves[w].n_devices);
        cJSON_AddItemToObject(wj, "counts", counts_json(c));
        cJSON_AddStringToObject(wj, "gate_reason", r->waves[w].gate_reason);
        cJSON_AddItemToArray(waves, wj);
    }
    if (orr->has_gate) {
        cJSON *g = cJSON_AddObjectToObject(j, "gate");
        cJSON_AddStringToObject(g, "verdict",
                                health_verdict_name(orr->last_gate.verdict));
        cJSON_AddStringToObject(g, "reason", orr->last_gate.reason);
        cJSON_AddNumberToObject(g, "z_low_conf", orr->last_gate.z_low_conf);
        cJSON_AddNumberToObject(g, "z_flagged", orr->last_gate.z_flagged);
        cJSON_AddNumberToObject(g, "z_errors", orr->last_gate.z_errors);
        cJSON_AddNumberToObject(g, "p95_new_us", orr->last_gate.p95_new_us);
        cJSON_AddNumberToObject(g, "p95_old_us", orr->last_gate.p95_old_us);
    }
    if (with_devices) {
        devs = cJSON_AddArrayToObject(j, "device_states");
        for (size_t i = 0; i < r->n_devs && (int64_t)i < limit; i++) {
            const struct rollout_dev *d = &r->devs[i];
            cJSON *dj = cJSON_CreateObject();
            cJSON_AddStringToObject(dj, "id", d->id);
            cJSON_AddNumberToObject(dj, "wave", d->wave + 1);
            cJSON_AddStringToObject(dj, "state",
                                    rollout_dev_state_name(d->state));
            cJSON_AddStringToObject(dj, "reason",
                                    rollout_reason_name(d->reason));
            cJSON_AddNumberToObject(dj, "offset", d->offset);
            cJSON_AddNumberToObject(dj, "attempts", d->attempts);
            cJSON_AddNumberToObject(dj, "resent", d->resent_bytes);
            cJSON_AddNumberToObject(dj, "rewinds", d->rewinds);
            cJSON_AddNumberToObject(dj, "resumes", d->resumes);
            cJSON_AddNumberToObject(dj, "served_hi", d->served_hi);
            cJSON_AddBoolToObject(dj, "online", d->online);
            cJSON_AddItemToArray(devs, dj);
        }
    }
    return j;
}

static void
h_deploy(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
         void *arg)
{
    struct ota *o = arg;
    const char *artifact = NULL, *group = NULL, *rb = NULL, *why = NULL;
    const cJSON *devices = cJSON_GetObjectItemCaseSensitive(args, "devices");
    struct rollout_policy p;
    struct ota_model_info m, rbm;
    struct ota_rollout *orr = NULL;
    struct target *t = NULL;
    char seed[2 * TML_MAX_NAME + 2];
    bool dry = false;
    long n;
    uint64_t now = tmld_now_ms(d);
    cJSON *res;
    uint32_t super[OTA_MAX_ROLLOUTS];
    size_t n_super = 0;

    if (tmld_ctl_arg_str(args, "artifact", OTA_HASH_HEX_LEN, &artifact) !=
            0 ||
        !ota_is_hash_hex(artifact)) {
        tmld_ctl_reply_err(req, "bad_args", "artifact: the 64-hex id from "
                           "artifact.commit");
        return;
    }
    if (tmld_ctl_arg_str(args, "group", TML_MAX_NAME, &group) < 0 ||
        (group == NULL) == (devices == NULL) ||
        (devices != NULL && (!cJSON_IsArray(devices) ||
                             cJSON_GetArraySize(devices) == 0))) {
        tmld_ctl_reply_err(req, "bad_args", "give either group or devices "
                           "(a non-empty list)");
        return;
    }
    (void)tmld_ctl_arg_bool(args, "dry_run", &dry);
    if (policy_from_args(o, args, &p, &why) != 0) {
        tmld_ctl_reply_err(req, "bad_args", "%s", why);
        return;
    }
    if (ota_db_get_model(o, artifact, &m) != 0) {
        tmld_ctl_reply_err(req, "not_found", "no stored artifact %s "
                           "(artifact.upload + artifact.commit first)",
                           artifact);
        return;
    }
    if (m.expires != 0 && tmld_wall_s() >= (int64_t)m.expires) {
        tmld_ctl_reply_err(req, "conflict", "%s v%u: the manifest has "
                           "expired; sign it again",
                           m.name, m.version);
        return;
    }
    memset(&rbm, 0, sizeof(rbm));
    if (tmld_ctl_arg_str(args, "rollback_artifact", OTA_HASH_HEX_LEN, &rb) ==
        0) {
        if (!ota_is_hash_hex(rb) || ota_db_get_model(o, rb, &rbm) != 0) {
            tmld_ctl_reply_err(req, "not_found", "no stored rollback "
                               "artifact %s", rb ? rb : "");
            return;
        }
        /* Devices never go back in version (anti-rollback): the previous
         * model must come re-signed with a higher version. */
        if (strcmp(rbm.name, m.name) != 0 || strcmp(rbm.hw, m.hw) != 0 ||
            rbm.version <= m.version) {
            tmld_ctl_reply_err(req, "bad_args", "rollback artifact must be "
                               "%s for %s with a version above %u",
                               m.name, m.hw, m.version);
            return;
        }
    }
    if (group != NULL) {
        for (size_t i = 0; i < o->n_rollouts; i++) {
            struct ota_rollout *x = o->rollouts[i];
            /* A rollout that only waits for offline devices is superseded
             * by this one (below): those devices are members of the group,
             * so they are this rollout's targets too, and get the newer
             * model when they are back. */
            if (strcmp(x->group, group) == 0 &&
                rollout_waits_only_for_offline(&x->r)) {
                if (n_super < OTA_MAX_ROLLOUTS)
                    super[n_super++] = x->r.id;
                continue;
            }
            if (strcmp(x->group, group) == 0 &&
                (x->r.state == ROLLOUT_RUNNING ||
                 x->r.state == ROLLOUT_PAUSED)) {
                tmld_ctl_reply_err(req, "conflict", "rollout %u (%s v%u) is "
                                   "%s on group %s; abort it first",
                                   x->r.id, x->model.name, x->r.version,
                                   rollout_state_name(x->r.state), group);
                return;
            }
        }
    }
    if (!dry && o->next_rollout_id > OTA_MAX_ROLLOUT_ID) {
        tmld_ctl_reply_err(req, "conflict", "rollout ids exhausted");
        return;
    }
    n = resolve_targets(d, &m, group, devices, &t);
    if (n < 0) {
        tmld_ctl_reply_err(req, "unavailable", "device query failed");
        return;
    }
    if (n == 0) {
        free(t);
        tmld_ctl_reply_err(req, "not_found", "no devices in %s%s",
                           group ? "group " : "the list",
                           group ? group : "");
        return;
    }
    snprintf(seed, sizeof(seed), "%s/%s", m.name, group ? group : "");
    orr = ota_rollout_new(o, dry ? OTA_MAX_ROLLOUT_ID : o->next_rollout_id,
                          m.version, &p, seed,
                          (size_t)(n + 1024 < OTA_MAX_TARGETS
                                       ? n + 1024
                                       : OTA_MAX_TARGETS));
    if (orr == NULL) {
        free(t);
        tmld_ctl_reply_err(req, "internal", "out of memory");
        return;
    }
    orr->model = m;
    memcpy(orr->artifact, artifact, OTA_HASH_HEX_LEN + 1);
    if (rb != NULL)
        memcpy(orr->rollback_artifact, rb, OTA_HASH_HEX_LEN + 1);
    snprintf(orr->group, sizeof(orr->group), "%s", group ? group : "");
    orr->created_at = tmld_wall_s();
    for (long i = 0; i < n; i++) {
        if (rollout_add_device(&orr->r, t[i].id, false, t[i].excluded) == 0)
            orr->chunk_max[orr->r.n_devs - 1] = t[i].chunk_max;
    }
    rollout_start(&orr->r, now);

    res = cJSON_CreateObject();
    {
        /* The plan: devices per wave, exclusions with reasons, bytes. */
        cJSON *plan = cJSON_AddObjectToObject(res, "plan");
        cJSON *wl = cJSON_AddArrayToObject(plan, "waves");
        cJSON *ex = cJSON_AddArrayToObject(plan, "excluded");
        uint64_t bytes = 0;
        uint32_t n_already = 0;
        for (size_t w = 0; w < p.n_waves; w++) {
            cJSON *wj = cJSON_CreateObject();
            cJSON *ids = cJSON_AddArrayToObject(wj, "devices");
            cJSON_AddNumberToObject(wj, "wave", (double)(w + 1));
            cJSON_AddNumberToObject(wj, "pct", p.wave_pct[w]);
            cJSON_AddNumberToObject(wj, "count", orr->r.waves[w].n_devices);
            for (long i = 0; i < n; i++) {
                struct rollout_dev *dv = rollout_find(&orr->r, t[i].id);
                if (dv != NULL && dv->wave == w &&
                    dv->state != RDEV_EXCLUDED &&
                    cJSON_GetArraySize(ids) < DEVICE_LIST_MAX)
                    cJSON_AddItemToArray(ids, cJSON_CreateString(dv->id));
            }
            cJSON_AddItemToArray(wl, wj);
        }
        for (long i = 0; i < n; i++) {
            if (t[i].excluded != 0) {
                cJSON *e = cJSON_CreateObject();
                cJSON_AddStringToObject(e, "id", t[i].id);
                cJSON_AddStringToObject(e, "reason",
                                        rollout_reason_name(t[i].excluded));
                cJSON_AddItemToArray(ex, e);
            } else if (t[i].model_version == m.version) {
                n_already++;
            } else {
                bytes += m.size;
            }
        }
        cJSON_AddNumberToObject(plan, "targets", (double)n);
        cJSON_AddNumberToObject(plan, "already_installed", n_already);
        cJSON_AddNumberToObject(plan, "bytes", (double)bytes);
        cJSON_AddItemToObject(plan, "policy", policy_json_out(&p));
        cJSON_AddItemToObject(res, "model", model_json(&m));
    }
    if (dry) {
        cJSON_AddBoolToObject(res, "dry_run", true);
        ota_rollout_free(o, orr);
        free(t);
        tmld_ctl_reply_ok(req, res);
        return;
    }
    if (ota_store_get(&o->store, artifact, &orr->art) != 0 ||
        (rb != NULL &&
         ota_store_get(&o->store, rb, &orr->rb_art) != 0) ||
        /* The first get may have been evicted by the second. */
        ota_store_get(&o->store, artifact, &orr->art) != 0) {
        orr->art = orr->rb_art = NULL;
        ota_rollout_free(o, orr);
        free(t);
        cJSON_Delete(res);
        tmld_ctl_reply_err(req, "internal", "artifact %s is unreadable or "
                           "no longer verifies", artifact);
        return;
    }
    orr->tele_since_id = ota_db_tele_high_water(o);
    if (ota_add_rollout(o, orr) != 0) {
        orr->art = orr->rb_art = NULL;
        ota_rollout_free(o, orr);
        free(t);
        cJSON_Delete(res);
        tmld_ctl_reply_err(req, "busy", "%d rollouts live", OTA_MAX_ROLLOUTS);
        return;
    }
    o->next_rollout_id++;
    for (size_t k = 0; k < n_super; k++) {
        struct ota_rollout *x = ota_find_rollout(o, super[k]);
        if (x != NULL && rollout_supersede(&x->r, orr->r.id) == 0)
            log_info("ota: rollout=%u %s", x->r.id, x->r.reason);
    }
    /* Presence and already-installed versions, as known now. */
    for (long i = 0; i < n; i++) {
        if (t[i].excluded == 0 && tmld_device_is_online(d, t[i].id))
            (void)rollout_on_presence(&orr->r, t[i].id, true,
                                      t[i].model_version, now);
    }
    free(t);
    orr->rollout_dirty = true;
    /* First offers now rather than at the next tick. */
    if (tmld_mqtt_is_connected(d))
        rollout_tick(&orr->r, now);
    log_info("ota: rollout=%u %s v%u to %s%s: %zu devices, waves %s", orr->r.id,
             m.name, m.version, group ? "group " : "device list",
             group ? group : "", orr->r.n_devs,
             cJSON_IsString(cJSON_GetObjectItemCaseSensitive(args, "waves"))
                 ? cJSON_GetObjectItemCaseSensitive(args, "waves")->valuestring
                 : "default");
    cJSON_AddItemToObject(res, "rollout", rollout_json(orr, false, 0));
    tmld_ctl_reply_ok(req, res);
}

/* ---- rollout verbs ---------------------------------------------------------------- */

static cJSON *
stored_rollout_json(sqlite3_stmt *st)
{
    cJSON *j = cJSON_CreateObject();

    cJSON_AddNumberToObject(j, "id", (double)sqlite3_column_int64(st, 0));
    cJSON_AddStringToObject(j, "model",
                            (const char *)sqlite3_column_text(st, 1));
    cJSON_AddNumberToObject(j, "version",
                            (double)sqlite3_column_int64(st, 2));
    cJSON_AddStringToObject(j, "group",
                            (const char *)sqlite3_column_text(st, 3));
    cJSON_AddStringToObject(j, "state",
                            rollout_state_name(
                                (uint8_t)sqlite3_column_int(st, 4)));
    cJSON_AddStringToObject(j, "reason",
                            (const char *)sqlite3_column_text(st, 5));
    cJSON_AddNumberToObject(j, "wave", sqlite3_column_int(st, 6) + 1);
    cJSON_AddNumberToObject(j, "created_at",
                            (double)sqlite3_column_int64(st, 7));
    cJSON_AddNumberToObject(j, "bytes_sent",
                            (double)sqlite3_column_int64(st, 8));
    cJSON_AddStringToObject(j, "artifact",
                            (const char *)sqlite3_column_text(st, 9));
    return j;
}

#define STORED_COLS                                                            \
    "id, model, version, grp, state, reason, cur_wave, created_at, "          \
    "bytes_sent, artifact"

static void
h_list(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
       void *arg)
{
    struct ota *o = arg;
    sqlite3_stmt *st = NULL;
    cJSON *res = cJSON_CreateObject(), *list;

    (void)args;
    list = cJSON_AddArrayToObject(res, "rollouts");
    if (sqlite3_prepare_v2(tmld_db_ro(d),
                           "SELECT " STORED_COLS " FROM rollouts ORDER BY "
                           "id DESC LIMIT 1000",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        cJSON_Delete(res);
        tmld_ctl_reply_err(req, "unavailable", "database not readable");
        return;
    }
    /* Live rollouts first, from memory (the table lags by one tick). */
    for (size_t i = 0; i < o->n_rollouts; i++)
        cJSON_AddItemToArray(list, rollout_json(o->rollouts[i], false, 0));
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (ota_find_rollout(o, (uint32_t)sqlite3_column_int64(st, 0)) ==
            NULL)
            cJSON_AddItemToArray(list, stored_rollout_json(st));
    }
    sqlite3_finalize(st);
    tmld_ctl_reply_ok(req, res);
}

static struct ota_rollout *
arg_rollout(struct ota *o, struct tmld_ctl_req *req, const cJSON *args,
            int64_t *id)
{
    struct ota_rollout *orr;

    if (tmld_ctl_arg_int(args, "id", 1, OTA_MAX_ROLLOUT_ID, id) != 0) {
        tmld_ctl_reply_err(req, "bad_args", "need id (a rollout number)");
        return NULL;
    }
    orr = ota_find_rollout(o, (uint32_t)*id);
    return orr;
}

static void
h_show(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
       void *arg)
{
    struct ota *o = arg;
    int64_t id = 0, limit = 1000;
    bool devs = false;
    struct ota_rollout *orr;
    sqlite3_stmt *st = NULL;
    cJSON *res;

    if (tmld_ctl_arg_int(args, "id", 1, OTA_MAX_ROLLOUT_ID, &id) != 0) {
        tmld_ctl_reply_err(req, "bad_args", "need id (a rollout number)");
        return;
    }
    (void)tmld_ctl_arg_bool(args, "devices", &devs);
    (void)tmld_ctl_arg_int(args, "limit", 1, 100000, &limit);
    orr = ota_find_rollout(o, (uint32_t)id);
    res = cJSON_CreateObject();
    if (orr != NULL) {
        cJSON_AddItemToObject(res, "rollout", rollout_json(orr, devs, limit));
        tmld_ctl_reply_ok(req, res);
        return;
    }
    if (sqlite3_prepare_v2(tmld_db_ro(d),
                           "SELECT " STORED_COLS " FROM rollouts WHERE id=?1",
                           -1, &st, NULL) != SQLITE_OK ||
        (sqlite3_bind_int64(st, 1, id), sqlite3_step(st)) != SQLITE_ROW) {
        sqlite3_finalize(st);
        cJSON_Delete(res);
        tmld_ctl_reply_err(req, "not_found", "no rollout %lld",
                           (long long)id);
        return;
    }
    {
        cJSON *j = stored_rollout_json(st), *waves, *dl = NULL;
        sqlite3_finalize(st);
        st = NULL;
        waves = cJSON_AddArrayToObject(j, "waves");
        if (sqlite3_prepare_v2(tmld_db_ro(d),
                               "SELECT idx, pct, state, n_devices, "
                               "gate_reason FROM waves WHERE rollout_id=?1 "
                               "ORDER BY idx",
                               -1, &st, NULL) == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, id);
            while (sqlite3_step(st) == SQLITE_ROW) {
                cJSON *wj = cJSON_CreateObject();
                cJSON_AddNumberToObject(wj, "wave",
                                        sqlite3_column_int(st, 0) + 1);
                cJSON_AddNumberToObject(wj, "pct", sqlite3_column_int(st, 1));
                cJSON_AddStringToObject(
                    wj, "state",
                    rollout_wave_state_name(
                        (uint8_t)sqlite3_column_int(st, 2)));
                cJSON_AddNumberToObject(wj, "devices",
                                        sqlite3_column_int(st, 3));
                cJSON_AddStringToObject(
                    wj, "gate_reason",
                    (const char *)sqlite3_column_text(st, 4));
                cJSON_AddItemToArray(waves, wj);
            }
        }
        sqlite3_finalize(st);
        st = NULL;
        if (sqlite3_prepare_v2(tmld_db_ro(d),
                               "SELECT device, wave, state, reason, offset, "
                               "attempts FROM rollout_devices WHERE "
                               "rollout_id=?1 ORDER BY offer_id LIMIT ?2",
                               -1, &st, NULL) == SQLITE_OK) {
            uint32_t c[RDEV__COUNT] = {0};
            sqlite3_bind_int64(st, 1, id);
            sqlite3_bind_int64(st, 2, devs ? limit : 100000);
            if (devs)
                dl = cJSON_AddArrayToObject(j, "device_states");
            while (sqlite3_step(st) == SQLITE_ROW) {
                uint8_t s = (uint8_t)sqlite3_column_int(st, 2);
                if (s < RDEV__COUNT)
                    c[s]++;
                if (dl != NULL) {
                    cJSON *dj = cJSON_CreateObject();
                    cJSON_AddStringToObject(
                        dj, "id", (const char *)sqlite3_column_text(st, 0));
                    cJSON_AddNumberToObject(dj, "wave",
                                            sqlite3_column_int(st, 1) + 1);
                    cJSON_AddStringToObject(dj, "state",
                                            rollout_dev_state_name(s));
                    cJSON_AddStringToObject(
                        dj, "reason",
                        rollout_reason_name(
                            (uint8_t)sqlite3_column_int(st, 3)));
                    cJSON_AddNumberToObject(
                        dj, "offset", (double)sqlite3_column_int64(st, 4));
                    cJSON_AddNumberToObject(
                        dj, "attempts", (double)sqlite3_column_int64(st, 5));
                    cJSON_AddItemToArray(dl, dj);
                }
            }
            cJSON_AddItemToObject(j, "counts", counts_json(c));
        }
        sqlite3_finalize(st);
        cJSON_AddItemToObject(res, "rollout", j);
    }
    tmld_ctl_reply_ok(req, res);
}

static void
h_verb(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
       struct ota *o, int which)
{
    int64_t id = 0;
    struct ota_rollout *orr = arg_rollout(o, req, args, &id);
    const char *why = NULL;
    int rc;

    if (orr == NULL) {
        if (id != 0)
            tmld_ctl_reply_err(req, "not_found", "no live rollout %lld",
                               (long long)id);
        return;
    }
    switch (which) {
    case 0:
        (void)tmld_ctl_arg_str(args, "reason", 120, &why);
        rc = rollout_pause(&orr->r, why);
        break;
    case 1:
        rc = rollout_resume(&orr->r, tmld_now_ms(d));
        break;
    default:
        rc = rollout_abort(&orr->r);
        break;
    }
    if (rc == -EPERM) {
        tmld_ctl_reply_err(req, "conflict", "rollout %lld is %s%s%s",
                           (long long)id, rollout_state_name(orr->r.state),
                           orr->r.reason[0] ? ": " : "", orr->r.reason);
        return;
    }
    log_info("ota: rollout=%u %s by the operator (uid %u)", orr->r.id,
             which == 0 ? "paused" : which == 1 ? "resumed" : "aborted",
             tmld_ctl_req_uid(req));
    ota_db_flush(o);
    {
        cJSON *res = cJSON_CreateObject();
        cJSON_AddBoolToObject(res, "changed", rc == 0);
        cJSON_AddItemToObject(res, "rollout", rollout_json(orr, false, 0));
        tmld_ctl_reply_ok(req, res);
    }
}

static void
h_pause(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
        void *arg)
{
    h_verb(d, req, args, arg, 0);
}

static void
h_resume(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
         void *arg)
{
    h_verb(d, req, args, arg, 1);
}

static void
h_abort(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
        void *arg)
{
    h_verb(d, req, args, arg, 2);
}

static void
h_stats(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
        void *arg)
{
    struct ota *o = arg;
    cJSON *res = cJSON_CreateObject();

    (void)d;
    (void)args;
    cJSON_AddNumberToObject(res, "trusted_keys", (double)o->store.n_trusted);
    cJSON_AddNumberToObject(res, "live_rollouts", (double)o->n_rollouts);
    cJSON_AddNumberToObject(res, "offers", (double)o->c.offers);
    cJSON_AddNumberToObject(res, "chunks", (double)o->c.chunks);
    cJSON_AddNumberToObject(res, "chunk_bytes", (double)o->c.chunk_bytes);
    cJSON_AddNumberToObject(res, "cancels", (double)o->c.cancels);
    cJSON_AddNumberToObject(res, "rollback_offers", (double)o->c.rollbacks);
    cJSON_AddNumberToObject(res, "unknown_offer", (double)o->c.unknown_offer);
    cJSON_AddNumberToObject(res, "stale_offer", (double)o->c.stale_offer);
    cJSON_AddNumberToObject(res, "malformed", (double)o->c.malformed);
    cJSON_AddNumberToObject(res, "expired_refused",
                            (double)o->c.expired_refused);
    cJSON_AddNumberToObject(res, "artifact_disk_loads",
                            (double)o->store.disk_loads);
    tmld_ctl_reply_ok(req, res);
}

int
ota_ctl_register(struct ota *o)
{
    static const struct {
        const char *verb;
        tmld_ctl_handler fn;
    } verbs[] = {
        {"artifact.upload", h_upload}, {"artifact.commit", h_commit},
        {"artifact.get", h_get},
        {"models", h_models},          {"deploy", h_deploy},
        {"rollout.list", h_list},      {"rollout.show", h_show},
        {"rollout.status", h_show},    {"rollout.pause", h_pause},
        {"rollout.resume", h_resume},  {"rollout.abort", h_abort},
        {"ota.stats", h_stats},
    };
    int rc;

    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        rc = tmld_ctl_register(o->d, verbs[i].verb, verbs[i].fn, o);
        if (rc != 0) {
            log_err("ota: control verb %s: %s", verbs[i].verb,
                    strerror(-rc));
            return rc;
        }
    }
    return 0;
}
