/*
 * verbs.c: the core's read-only control verbs (help, ping, status, devices,
 * device.show, groups, tele.summary), answered synchronously from the
 * read-only connection. Every query is bounded: lists by LIMIT, and each
 * statement by a progress handler that interrupts it after QUERY_MAX_MS so a
 * large table cannot stall the loop (the client then gets "busy").
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "retention.h"

#define LIST_DEFAULT 1000
#define LIST_MAX 10000

static int
progress_cb(void *arg)
{
    struct query_guard *g = arg;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ms = (now.tv_sec - g->start.tv_sec) * 1000 +
                 (now.tv_nsec - g->start.tv_nsec) / 1000000;
    return ms > QUERY_MAX_MS;
}

void
query_guard_start(sqlite3 *db, struct query_guard *g)
{
    clock_gettime(CLOCK_MONOTONIC, &g->start);
    sqlite3_progress_handler(db, 10000, progress_cb, g);
}

void
query_guard_end(sqlite3 *db)
{
    sqlite3_progress_handler(db, 0, NULL, NULL);
}

static void
reply_db_error(struct tmld_ctl_req *req, sqlite3 *db, int rc)
{
    if (rc == SQLITE_INTERRUPT || rc == SQLITE_BUSY)
        tmld_ctl_reply_err(req, "busy", "query took too long; narrow it");
    else
        tmld_ctl_reply_err(req, "unavailable", "database: %s",
                           sqlite3_errmsg(db));
}

/* One optional filter of a list verb, bound to parameter ?idx of both the
 * page and the count query when is_set: as text when text is not NULL,
 * else as the integer num. */
struct list_arg {
    int idx;
    bool is_set;
    const char *text; /* borrowed */
    int64_t num;
};

typedef cJSON *(*list_row_fn)(struct tmld *d, sqlite3 *db, sqlite3_stmt *st);

/* Runs a paged list: sql selects the page (?3 LIMIT, ?4 OFFSET), csql counts
 * every row matching the same filters; both get args bound. Adds "total"
 * and an array named key (one row_fn object per row) to r. Returns
 * SQLITE_DONE, or the SQLite code that stopped it (r may be half filled
 * then). Bounded by the query guard. */
static int
list_query(struct tmld *d, sqlite3 *db, const char *sql, const char *csql,
           const struct list_arg *args, size_t n_args, int64_t limit,
           int64_t offset, cJSON *r, const char *key, list_row_fn row_fn)
{
    sqlite3_stmt *st = NULL, *cs = NULL;
    struct query_guard g;
    query_guard_start(db, &g);
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, csql, -1, &cs, NULL);
    if (rc == SQLITE_OK) {
        for (size_t i = 0; i < n_args; i++) {
            const struct list_arg *a = &args[i];
            for (int k = 0; k < 2 && a->is_set; k++) {
                sqlite3_stmt *x = k ? cs : st;
                if (a->text != NULL)
                    sqlite3_bind_text(x, a->idx, a->text, -1, SQLITE_STATIC);
                else
                    sqlite3_bind_int64(x, a->idx, a->num);
            }
        }
        sqlite3_bind_int64(st, 3, limit);
        sqlite3_bind_int64(st, 4, offset);
        rc = sqlite3_step(cs);
        cJSON_AddNumberToObject(r, "total",
                                rc == SQLITE_ROW
                                    ? (double)sqlite3_column_int64(cs, 0)
                                    : 0);
        cJSON *a = cJSON_AddArrayToObject(r, key);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            cJSON_AddItemToArray(a, row_fn(d, db, st));
    }
    query_guard_end(db);
    sqlite3_finalize(st);
    sqlite3_finalize(cs);
    return rc;
}

static void
v_ping(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
       void *arg)
{
    (void)d, (void)args, (void)arg;
    cJSON *r = cJSON_CreateObject();
    cJSON_AddBoolToObject(r, "pong", 1);
    tmld_ctl_reply_ok(req, r);
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void
v_help(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
       void *arg)
{
    (void)args, (void)arg;
    size_t n = 0;
    for (struct ctl_verb *v = d->verbs; v; v = v->next)
        n++;
    const char **names = calloc(n ? n : 1, sizeof(*names));
    if (names == NULL) {
        tmld_ctl_reply_err(req, "internal", "out of memory");
        return;
    }
    n = 0;
    for (struct ctl_verb *v = d->verbs; v; v = v->next)
        names[n++] = v->name;
    qsort(names, n, sizeof(*names), cmp_str);
    cJSON *r = cJSON_CreateObject();
    cJSON *a = cJSON_AddArrayToObject(r, "verbs");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(names[i]));
    free(names);
    tmld_ctl_reply_ok(req, r);
}

static void
v_status(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
         void *arg)
{
    (void)args, (void)arg;
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "version", TMLD_VERSION);
    cJSON_AddNumberToObject(r, "proto_version", TML_PROTO_VERSION);
    cJSON_AddNumberToObject(r, "pid", getpid());
    cJSON_AddNumberToObject(r, "uptime_s",
                            (double)((tmld_now_ms(d) - d->start_ms) / 1000));
    const struct mqtt_stats *ms = mqtt_stats(d);
    cJSON *m = cJSON_AddObjectToObject(r, "mqtt");
    cJSON_AddBoolToObject(m, "connected", tmld_mqtt_is_connected(d));
    cJSON_AddStringToObject(m, "host", d->set.mqtt_host);
    cJSON_AddNumberToObject(m, "port", d->set.mqtt_port);
    cJSON_AddBoolToObject(m, "tls", d->set.mqtt_tls);
    cJSON_AddNumberToObject(m, "connects", (double)ms->connects);
    cJSON_AddNumberToObject(m, "disconnects", (double)ms->disconnects);
    cJSON_AddNumberToObject(m, "messages", (double)ms->messages);
    size_t online = 0, total = registry_count(d, &online);
    cJSON *dv = cJSON_AddObjectToObject(r, "devices");
    cJSON_AddNumberToObject(dv, "total", (double)total);
    cJSON_AddNumberToObject(dv, "online", (double)online);
    const struct store_stats *ss = store_stats(d);
    const struct ingest_stats *is = ingest_stats(d);
    cJSON *in = cJSON_AddObjectToObject(r, "ingest");
    cJSON_AddNumberToObject(in, "tele", (double)ss->tele);
    cJSON_AddNumberToObject(in, "samples", (double)ss->samples);
    cJSON_AddNumberToObject(in, "duplicates", (double)ss->duplicates);
    cJSON_AddNumberToObject(in, "gaps", (double)ss->gaps);
    /* docs/tmld.md "Sequence gaps" */
    cJSON_AddNumberToObject(in, "skipped", (double)ss->skipped);
    cJSON_AddNumberToObject(in, "seq_resets", (double)ss->seq_resets);
    cJSON_AddNumberToObject(in, "stale_hellos", (double)ss->stale_hellos);
    cJSON_AddNumberToObject(in, "malformed", (double)is->malformed);
    cJSON_AddNumberToObject(in, "oversize", (double)is->oversize);
    cJSON_AddNumberToObject(in, "refused", (double)is->refused);
    cJSON_AddNumberToObject(in, "batches", (double)ss->batches);
    cJSON_AddNumberToObject(in, "queued", (double)store_queued(d));
    cJSON_AddNumberToObject(in, "acks", (double)is->acks);
    cJSON_AddNumberToObject(in, "commit_errors", (double)ss->commit_errors);
    cJSON_AddNumberToObject(in, "last_commit_ms", (double)ss->last_commit_ms);
    uint64_t rolled = 0, evicted = 0;
    retention_stats(&rolled, &evicted);
    cJSON *rt = cJSON_AddObjectToObject(r, "retention");
    cJSON_AddNumberToObject(rt, "rolled_up", (double)rolled);
    cJSON_AddNumberToObject(rt, "samples_evicted", (double)evicted);
    cJSON_AddNumberToObject(rt, "aggregates_pruned",
                            (double)retention_pruned());
    int64_t wal = 0, size = store_size_bytes(d, &wal);
    cJSON *db = cJSON_AddObjectToObject(r, "db");
    cJSON_AddStringToObject(db, "path", d->set.db_path);
    cJSON_AddNumberToObject(db, "size_bytes", (double)size);
    cJSON_AddNumberToObject(db, "wal_bytes", (double)wal);
    cJSON_AddNumberToObject(db, "schema_version",
                            (double)store_user_version(d));
    cJSON_AddNumberToObject(db, "cap_bytes", (double)d->set.db_cap_bytes);
    cJSON_AddBoolToObject(db, "synchronous_full", d->set.db_sync_full);
    tmld_ctl_reply_ok(req, r);
}

static const char *
ota_state_name(int64_t v)
{
    const char *n = tml_ota_state_name((enum tml_ota_state)v);
    return n ? n : "unknown";
}

static const char *
ota_reason_name(int64_t v)
{
    const char *n = tml_ota_reason_name((enum tml_ota_reason)v);
    return n ? n : "unknown";
}

#define DEV_COLS                                                               \
    "d.id, d.name, d.online, d.first_seen, d.last_seen, d.agent_version, "     \
    "d.hw, d.model, d.model_version, d.model_slot, d.boot_count, "             \
    "d.last_ota_state, d.last_ota_reason, d.last_ota_version, d.slot_size, "   \
    "d.arena_size, d.chunk_max, d.version_floor"

static cJSON *
device_json(struct tmld *d, sqlite3 *db, sqlite3_stmt *st, bool full)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    int64_t rowid = sqlite3_column_int64(st, 0);
    const char *name = (const char *)sqlite3_column_text(st, 1);
    cJSON_AddStringToObject(o, "id", name ? name : "");
    /* The registry knows about state changes still waiting for a commit. */
    struct device *v = name && d->reg ? registry_get(d, name, false) : NULL;
    bool online = v ? v->is_online : sqlite3_column_int(st, 2) != 0;
    cJSON_AddBoolToObject(o, "online", online);
    cJSON_AddNumberToObject(o, "first_seen",
                            (double)sqlite3_column_int64(st, 3));
    int64_t seen = sqlite3_column_int64(st, 4);
    if (v && v->last_seen_s > seen)
        seen = v->last_seen_s;
    cJSON_AddNumberToObject(o, "last_seen", (double)seen);
    uint32_t av = (uint32_t)sqlite3_column_int64(st, 5);
    char avs[32];
    snprintf(avs, sizeof(avs), "%u.%u.%u", (av >> 16) & 0xffff,
             (av >> 8) & 0xff, av & 0xff);
    cJSON_AddStringToObject(o, "agent_version", avs);
    const char *hw = (const char *)sqlite3_column_text(st, 6);
    const char *model = (const char *)sqlite3_column_text(st, 7);
    cJSON_AddStringToObject(o, "hw", hw ? hw : "");
    cJSON_AddStringToObject(o, "model", model ? model : "");
    cJSON_AddNumberToObject(o, "model_version",
                            (double)sqlite3_column_int64(st, 8));
    cJSON_AddNumberToObject(o, "model_slot",
                            (double)sqlite3_column_int64(st, 9));
    cJSON_AddNumberToObject(o, "boot_count",
                            (double)sqlite3_column_int64(st, 10));
    cJSON *g = cJSON_AddArrayToObject(o, "groups");
    sqlite3_stmt *gs = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT grp FROM device_groups WHERE device_id = "
                           "?1 ORDER BY grp LIMIT 64",
                           -1, &gs, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(gs, 1, rowid);
        while (sqlite3_step(gs) == SQLITE_ROW)
            cJSON_AddItemToArray(g, cJSON_CreateString(
                                        (const char *)sqlite3_column_text(gs, 0)));
    }
    sqlite3_finalize(gs);
    cJSON *lo = cJSON_AddObjectToObject(o, "last_ota");
    cJSON_AddStringToObject(lo, "state",
                            ota_state_name(sqlite3_column_int64(st, 11)));
    cJSON_AddStringToObject(lo, "reason",
                            ota_reason_name(sqlite3_column_int64(st, 12)));
    cJSON_AddNumberToObject(lo, "version",
                            (double)sqlite3_column_int64(st, 13));
    if (!full)
        return o;
    cJSON_AddNumberToObject(o, "slot_size",
                            (double)sqlite3_column_int64(st, 14));
    cJSON_AddNumberToObject(o, "arena_size",
                            (double)sqlite3_column_int64(st, 15));
    cJSON_AddNumberToObject(o, "chunk_max",
                            (double)sqlite3_column_int64(st, 16));
    cJSON_AddNumberToObject(o, "version_floor",
                            (double)sqlite3_column_int64(st, 17));
    int64_t th = 0, sh = 0, tsk = 0, ssk = 0, rs = 0, ep = 0, lives = 0;
    sqlite3_stmt *hs = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT tele_hw, sample_hw, tele_skipped, "
                           "sample_skipped, seq_resets, epoch, (SELECT "
                           "count(*) FROM stream_hw_epochs e WHERE "
                           "e.device_id = ?1) FROM stream_hw WHERE "
                           "device_id = ?1",
                           -1, &hs, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(hs, 1, rowid);
        if (sqlite3_step(hs) == SQLITE_ROW) {
            th = sqlite3_column_int64(hs, 0);
            sh = sqlite3_column_int64(hs, 1);
            tsk = sqlite3_column_int64(hs, 2);
            ssk = sqlite3_column_int64(hs, 3);
            rs = sqlite3_column_int64(hs, 4);
            ep = sqlite3_column_int64(hs, 5);
            lives = sqlite3_column_int64(hs, 6);
        }
    }
    sqlite3_finalize(hs);
    cJSON_AddNumberToObject(o, "tele_seq", (double)th);
    cJSON_AddNumberToObject(o, "sample_seq", (double)sh);
    /* Sequence numbers given up below the device's low-water (lost at a
     * reboot or never used) and restarted numberings (docs/tmld.md). */
    cJSON_AddNumberToObject(o, "tele_skipped", (double)tsk);
    cJSON_AddNumberToObject(o, "sample_skipped", (double)ssk);
    cJSON_AddNumberToObject(o, "seq_resets", (double)rs);
    /* The numbering epoch of tele_seq/sample_seq (0: the agent sends none)
     * and the earlier lives tmld still knows (PROTOCOL.md 6). */
    cJSON_AddNumberToObject(o, "epoch", (double)ep);
    cJSON_AddNumberToObject(o, "earlier_lives", (double)lives);
    cJSON_AddNumberToObject(o, "malformed", v ? (double)v->n_malformed : 0);
    return o;
}

static cJSON *
device_row(struct tmld *d, sqlite3 *db, sqlite3_stmt *st)
{
    return device_json(d, db, st, false);
}

static void
v_devices(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
          void *arg)
{
    (void)arg;
    const char *group = NULL, *model = NULL;
    bool online = false;
    int64_t limit = LIST_DEFAULT, offset = 0, mver = 0;
    int has_online, has_mver;
    if (tmld_ctl_arg_str(args, "group", TML_MAX_NAME, &group) < 0 ||
        (has_online = tmld_ctl_arg_bool(args, "online", &online)) < 0 ||
        tmld_ctl_arg_str(args, "model", TML_MAX_NAME, &model) < 0 ||
        (has_mver = tmld_ctl_arg_int(args, "model_version", 0, UINT32_MAX,
                                     &mver)) < 0 ||
        tmld_ctl_arg_int(args, "limit", 0, LIST_MAX, &limit) < 0 ||
        tmld_ctl_arg_int(args, "offset", 0, INT32_MAX, &offset) < 0) {
        tmld_ctl_reply_err(req, "bad_args",
                           "devices takes group (string), online (bool), "
                           "model (string), model_version (integer), "
                           "limit (0..%d), offset",
                           LIST_MAX);
        return;
    }
    sqlite3 *db = tmld_db_ro(d);
    /* online is filtered from the database's view; it lags the registry
     * by at most one batch. model / model_version are what the device
     * reported in its last hello. */
    static const char *where =
        " WHERE (?1 IS NULL OR EXISTS (SELECT 1 FROM device_groups g WHERE "
        "g.device_id = d.id AND g.grp = ?1)) AND (?2 IS NULL OR d.online = "
        "?2) AND (?5 IS NULL OR d.model = ?5) AND (?6 IS NULL OR "
        "d.model_version = ?6)";
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "SELECT " DEV_COLS " FROM devices d%s ORDER BY d.name LIMIT ?3 "
             "OFFSET ?4",
             where);
    char csql[512];
    snprintf(csql, sizeof(csql), "SELECT count(*) FROM devices d%s", where);
    const struct list_arg la[] = {
        {1, group != NULL, group, 0},
        {2, has_online == 0, NULL, online},
        {5, model != NULL, model, 0},
        {6, has_mver == 0, NULL, mver},
    };
    cJSON *r = cJSON_CreateObject();
    int rc = list_query(d, db, sql, csql, la, sizeof(la) / sizeof(la[0]),
                        limit, offset, r, "devices", device_row);
    if (rc != SQLITE_DONE) {
        cJSON_Delete(r);
        reply_db_error(req, db, rc);
        return;
    }
    tmld_ctl_reply_ok(req, r);
}

static void
v_device_show(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
              void *arg)
{
    (void)arg;
    const char *id = NULL;
    if (tmld_ctl_arg_str(args, "id", TML_MAX_DEVICE_ID, &id) != 0) {
        tmld_ctl_reply_err(req, "bad_args",
                           "device.show needs id (a device id string)");
        return;
    }
    sqlite3 *db = tmld_db_ro(d);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT " DEV_COLS
                                " FROM devices d WHERE d.name = ?1",
                                -1, &st, NULL);
    cJSON *dev = NULL;
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            dev = device_json(d, db, st, true);
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE) {
        tmld_ctl_reply_err(req, "not_found", "no device '%s'", id);
        return;
    }
    if (dev == NULL) {
        reply_db_error(req, db, rc);
        return;
    }
    /* Recent telemetry: the device's hourly rollup rows (tele_hour, keyed
     * by hour first) for the last 24 hours, newest first. */
    cJSON *recent = cJSON_AddArrayToObject(dev, "recent");
    int64_t hour_now = (int64_t)time(NULL) / 3600;
    rc = sqlite3_prepare_v2(
        db,
        "SELECT h.hour, h.model_version, h.summaries, h.n_inferences, "
        "h.n_low_conf, h.n_flagged, h.n_errors, h.lat_sum_us "
        "FROM tele_hour h WHERE h.hour >= ?1 AND h.device_id = "
        "(SELECT id FROM devices WHERE name = ?2) ORDER BY h.hour DESC, "
        "h.model_version",
        -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, hour_now - 23);
        sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            cJSON *o = cJSON_CreateObject();
            int64_t n = sqlite3_column_int64(st, 3);
            cJSON_AddNumberToObject(o, "hour_start",
                                    (double)(sqlite3_column_int64(st, 0) *
                                             3600));
            cJSON_AddNumberToObject(o, "model_version",
                                    (double)sqlite3_column_int64(st, 1));
            cJSON_AddNumberToObject(o, "summaries",
                                    (double)sqlite3_column_int64(st, 2));
            cJSON_AddNumberToObject(o, "inferences", (double)n);
            cJSON_AddNumberToObject(o, "low_conf",
                                    (double)sqlite3_column_int64(st, 4));
            cJSON_AddNumberToObject(o, "flagged",
                                    (double)sqlite3_column_int64(st, 5));
            cJSON_AddNumberToObject(o, "errors",
                                    (double)sqlite3_column_int64(st, 6));
            cJSON_AddNumberToObject(
                o, "lat_mean_us",
                n > 0 ? (double)(sqlite3_column_int64(st, 7) / n) : 0.0);
            cJSON_AddItemToArray(recent, o);
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        cJSON_Delete(dev);
        reply_db_error(req, db, rc);
        return;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddItemToObject(r, "device", dev);
    tmld_ctl_reply_ok(req, r);
}

static void
v_groups(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
         void *arg)
{
    (void)args, (void)arg;
    sqlite3 *db = tmld_db_ro(d);
    sqlite3_stmt *st = NULL;
    struct query_guard g;
    query_guard_start(db, &g);
    int rc = sqlite3_prepare_v2(
        db,
        "SELECT g.grp, count(*), sum(d.online) FROM device_groups g JOIN "
        "devices d ON d.id = g.device_id GROUP BY g.grp ORDER BY g.grp "
        "LIMIT 10000",
        -1, &st, NULL);
    cJSON *r = cJSON_CreateObject();
    cJSON *a = cJSON_AddArrayToObject(r, "groups");
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW &&
           (rc = SQLITE_OK) == SQLITE_OK) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name",
                                (const char *)sqlite3_column_text(st, 0));
        cJSON_AddNumberToObject(o, "devices",
                                (double)sqlite3_column_int64(st, 1));
        cJSON_AddNumberToObject(o, "online",
                                (double)sqlite3_column_int64(st, 2));
        cJSON_AddItemToArray(a, o);
    }
    query_guard_end(db);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        cJSON_Delete(r);
        reply_db_error(req, db, rc);
        return;
    }
    tmld_ctl_reply_ok(req, r);
}

static void
v_tele_summary(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
               void *arg)
{
    (void)arg;
    const char *group = NULL, *dev = NULL;
    int64_t since_s = 3600;
    if (tmld_ctl_arg_str(args, "group", TML_MAX_NAME, &group) < 0 ||
        tmld_ctl_arg_str(args, "device", TML_MAX_DEVICE_ID, &dev) < 0 ||
        tmld_ctl_arg_int(args, "since_s", 1, 100LL * 365 * 86400, &since_s) <
            0) {
        tmld_ctl_reply_err(req, "bad_args",
                           "tele.summary takes group, device (strings), "
                           "since_s (seconds)");
        return;
    }
    int64_t since = tmld_wall_s() - since_s;
    sqlite3 *db = tmld_db_ro(d);
    sqlite3_stmt *st = NULL;
    struct query_guard g;
    query_guard_start(db, &g);
    int rc = sqlite3_prepare_v2(
        db,
        "SELECT t.model_version, count(DISTINCT t.device_id), count(*), "
        "sum(t.n_inferences), sum(t.n_low_conf), sum(t.n_flagged), "
        "sum(t.n_errors), sum(t.lat_mean_us * t.n_inferences) FROM tele t "
        "WHERE t.recv_at >= ?1 AND (?2 IS NULL OR t.device_id = (SELECT id "
        "FROM devices WHERE name = ?2)) AND (?3 IS NULL OR t.device_id IN "
        "(SELECT device_id FROM device_groups WHERE grp = ?3)) GROUP BY "
        "t.model_version ORDER BY t.model_version",
        -1, &st, NULL);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "since", (double)since);
    cJSON *a = cJSON_AddArrayToObject(r, "rows");
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, since);
        if (dev)
            sqlite3_bind_text(st, 2, dev, -1, SQLITE_STATIC);
        if (group)
            sqlite3_bind_text(st, 3, group, -1, SQLITE_STATIC);
    }
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW &&
           (rc = SQLITE_OK) == SQLITE_OK) {
        cJSON *o = cJSON_CreateObject();
        static const char *names[] = {"model_version", "devices",
                                      "summaries",     "inferences",
                                      "low_conf",      "flagged",
                                      "errors"};
        for (int i = 0; i < 7; i++)
            cJSON_AddNumberToObject(o, names[i],
                                    (double)sqlite3_column_int64(st, i));
        int64_t inf = sqlite3_column_int64(st, 3);
        cJSON_AddNumberToObject(o, "lat_mean_us",
                                inf ? (double)(sqlite3_column_int64(st, 7) /
                                               inf)
                                    : 0);
        cJSON_AddItemToArray(a, o);
    }
    query_guard_end(db);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        cJSON_Delete(r);
        reply_db_error(req, db, rc);
        return;
    }
    tmld_ctl_reply_ok(req, r);
}

static const char *
reason_name(int64_t r)
{
    switch (r) {
    case TML_REASON_FLAGGED:
        return "flagged";
    case TML_REASON_LOW_CONF:
        return "low_conf";
    case TML_REASON_AUDIT:
        return "audit";
    default:
        return "unknown";
    }
}

static const char *
dtype_name(int64_t t)
{
    static const char *names[] = {"?", "u8", "i8", "i16", "i32", "f32"};
    return t >= 1 && t <= 5 ? names[t] : "unknown";
}

#define SAMPLE_COLS                                                            \
    "d.name, s.sample_id, min(s.recv_at), s.model_version, s.reason, "         \
    "s.predicted, s.confidence_bp, s.expected, s.dtype, s.shape, s.rate_hz, "  \
    "s.total_len, sum(length(s.data)), s.epoch"

static cJSON *
sample_json(sqlite3_stmt *st)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "device",
                            (const char *)sqlite3_column_text(st, 0));
    cJSON_AddNumberToObject(o, "sample_id",
                            (double)sqlite3_column_int64(st, 1));
    cJSON_AddNumberToObject(o, "received_at",
                            (double)sqlite3_column_int64(st, 2));
    cJSON_AddNumberToObject(o, "model_version",
                            (double)sqlite3_column_int64(st, 3));
    cJSON_AddStringToObject(o, "reason",
                            reason_name(sqlite3_column_int64(st, 4)));
    cJSON_AddNumberToObject(o, "predicted",
                            (double)sqlite3_column_int64(st, 5));
    cJSON_AddNumberToObject(o, "confidence_bp",
                            (double)sqlite3_column_int64(st, 6));
    if (sqlite3_column_type(st, 7) == SQLITE_NULL)
        cJSON_AddNullToObject(o, "expected");
    else
        cJSON_AddNumberToObject(o, "expected",
                                (double)sqlite3_column_int64(st, 7));
    cJSON_AddStringToObject(o, "dtype", dtype_name(sqlite3_column_int64(st, 8)));
    cJSON *sh = cJSON_AddArrayToObject(o, "shape");
    const char *shape = (const char *)sqlite3_column_text(st, 9);
    for (const char *p = shape; p && *p;) {
        char *end;
        unsigned long v = strtoul(p, &end, 10);
        if (end == p)
            break;
        cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)v));
        p = *end == 'x' ? end + 1 : end;
    }
    cJSON_AddNumberToObject(o, "rate_hz", (double)sqlite3_column_int64(st, 10));
    cJSON_AddNumberToObject(o, "total_len",
                            (double)sqlite3_column_int64(st, 11));
    cJSON_AddNumberToObject(o, "stored_len",
                            (double)sqlite3_column_int64(st, 12));
    cJSON_AddNumberToObject(o, "epoch", (double)sqlite3_column_int64(st, 13));
    return o;
}

static cJSON *
sample_row(struct tmld *d, sqlite3 *db, sqlite3_stmt *st)
{
    (void)d;
    (void)db;
    return sample_json(st);
}

static int
reason_arg(const cJSON *args, int64_t *out)
{
    const char *r = NULL;
    int rc = tmld_ctl_arg_str(args, "reason", 16, &r);
    if (rc != 0)
        return rc;
    for (int64_t i = 1; i <= 3; i++)
        if (strcmp(r, reason_name(i)) == 0) {
            *out = i;
            return 0;
        }
    return -EINVAL;
}

static void
v_samples_list(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
               void *arg)
{
    (void)arg;
    const char *dev = NULL, *model = NULL;
    int64_t reason = 0, limit = 100, offset = 0, label = 0, mver = 0;
    int64_t since_s = 0;
    int has_reason, has_label, has_mver, has_since;
    if (tmld_ctl_arg_str(args, "device", TML_MAX_DEVICE_ID, &dev) < 0 ||
        (has_reason = reason_arg(args, &reason)) < 0 ||
        (has_label = tmld_ctl_arg_int(args, "label", 0, UINT32_MAX,
                                      &label)) < 0 ||
        tmld_ctl_arg_str(args, "model", TML_MAX_NAME, &model) < 0 ||
        (has_mver = tmld_ctl_arg_int(args, "model_version", 0, UINT32_MAX,
                                     &mver)) < 0 ||
        (has_since = tmld_ctl_arg_int(args, "since_s", 1,
                                      100LL * 365 * 86400, &since_s)) < 0 ||
        tmld_ctl_arg_int(args, "limit", 0, LIST_MAX, &limit) < 0 ||
        tmld_ctl_arg_int(args, "offset", 0, INT32_MAX, &offset) < 0) {
        tmld_ctl_reply_err(req, "bad_args",
                           "samples.list takes device (string), reason "
                           "(flagged, low_conf, audit), label (integer), "
                           "model (string), model_version (integer), "
                           "since_s (seconds), limit, offset");
        return;
    }
    int64_t since = has_since == 0 ? tmld_wall_s() - since_s : 0;
    /* label is the sample's label as a training set would use it: the
     * expected class the device (or a person) attached, else the predicted
     * one. A sample carries only its model version; the model name is its
     * device's (from the last hello). since compares the time the sample's
     * first chunk arrived. */
    static const char *from =
        " FROM samples s JOIN devices d ON d.id = s.device_id WHERE (?1 IS "
        "NULL OR d.name = ?1) AND (?2 IS NULL OR s.reason = ?2) AND (?5 IS "
        "NULL OR coalesce(s.expected, s.predicted) = ?5) AND (?6 IS NULL OR "
        "d.model = ?6) AND (?7 IS NULL OR s.model_version = ?7)";
    static const char *having = " HAVING ?8 IS NULL OR min(s.recv_at) >= ?8";
    char sql[1536], csql[1024];
    snprintf(sql, sizeof(sql),
             "SELECT " SAMPLE_COLS "%s GROUP BY s.device_id, s.epoch, "
             "s.sample_id%s ORDER BY min(s.id) DESC LIMIT ?3 OFFSET ?4",
             from, having);
    snprintf(csql, sizeof(csql),
             "SELECT count(*) FROM (SELECT 1%s GROUP BY s.device_id, "
             "s.epoch, s.sample_id%s)",
             from, having);
    const struct list_arg la[] = {
        {1, dev != NULL, dev, 0},
        {2, has_reason == 0, NULL, reason},
        {5, has_label == 0, NULL, label},
        {6, model != NULL, model, 0},
        {7, has_mver == 0, NULL, mver},
        {8, has_since == 0, NULL, since},
    };
    sqlite3 *db = tmld_db_ro(d);
    cJSON *r = cJSON_CreateObject();
    if (has_since == 0)
        cJSON_AddNumberToObject(r, "since", (double)since);
    int rc = list_query(d, db, sql, csql, la, sizeof(la) / sizeof(la[0]),
                        limit, offset, r, "samples", sample_row);
    if (rc != SQLITE_DONE) {
        cJSON_Delete(r);
        reply_db_error(req, db, rc);
        return;
    }
    tmld_ctl_reply_ok(req, r);
}

#define SAMPLE_GET_MAX (4u * 1024 * 1024)

static char *
base64(const uint8_t *p, size_t n)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

static void
v_samples_get(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
              void *arg)
{
    (void)arg;
    const char *dev = NULL;
    int64_t sid = 0, epoch = 0;
    int has_epoch = tmld_ctl_arg_int(args, "epoch", 0, UINT32_MAX, &epoch);
    if (tmld_ctl_arg_str(args, "device", TML_MAX_DEVICE_ID, &dev) != 0 ||
        tmld_ctl_arg_int(args, "sample_id", 0, UINT32_MAX, &sid) != 0 ||
        has_epoch < 0) {
        tmld_ctl_reply_err(req, "bad_args",
                           "samples.get needs device (string) and sample_id "
                           "(integer); epoch (integer) is optional");
        return;
    }
    sqlite3 *db = tmld_db_ro(d);
    sqlite3_stmt *st = NULL;
    /* A sample is (device, epoch, sample_id): without an epoch, the
     * newest life that has this sample id (its last chunk stored). */
    static const char *where =
        " FROM samples s JOIN devices d ON d.id = s.device_id WHERE d.name = "
        "?1 AND s.sample_id = ?2 AND s.epoch = coalesce(?3, (SELECT s2.epoch "
        "FROM samples s2 WHERE s2.device_id = d.id AND s2.sample_id = ?2 "
        "ORDER BY s2.id DESC LIMIT 1))";
    char sql[768];
    snprintf(sql, sizeof(sql), "SELECT " SAMPLE_COLS "%s GROUP BY s.device_id",
             where);
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    cJSON *o = NULL;
    int64_t total = 0, stored = 0;
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, dev, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, sid);
        if (has_epoch == 0)
            sqlite3_bind_int64(st, 3, epoch);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            o = sample_json(st);
            total = sqlite3_column_int64(st, 11);
            stored = sqlite3_column_int64(st, 12);
        }
    }
    sqlite3_finalize(st);
    if (o == NULL) {
        if (rc == SQLITE_DONE)
            tmld_ctl_reply_err(req, "not_found", "no sample %lld of '%s'",
                               (long long)sid, dev);
        else
            reply_db_error(req, db, rc);
        return;
    }
    if (total <= 0 || total > SAMPLE_GET_MAX || stored < total) {
        cJSON_Delete(o);
        tmld_ctl_reply_err(req, "conflict",
                           "sample %lld of '%s': %lld of %lld bytes stored",
                           (long long)sid, dev, (long long)stored,
                           (long long)total);
        return;
    }
    uint8_t *buf = calloc(1, (size_t)total);
    snprintf(sql, sizeof(sql), "SELECT s.offset, s.data%s ORDER BY s.offset",
             where);
    rc = buf ? sqlite3_prepare_v2(db, sql, -1, &st, NULL) : SQLITE_NOMEM;
    int64_t covered = 0;
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, dev, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, sid);
        if (has_epoch == 0)
            sqlite3_bind_int64(st, 3, epoch);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            int64_t off = sqlite3_column_int64(st, 0);
            int n = sqlite3_column_bytes(st, 1);
            const void *p = sqlite3_column_blob(st, 1);
            /* Chunks are untrusted: each must lie inside the input. */
            if (off < 0 || n < 0 || off + n > total || p == NULL)
                continue;
            memcpy(buf + off, p, (size_t)n);
            if (off <= covered && off + n > covered)
                covered = off + n;
        }
    }
    sqlite3_finalize(st);
    char *b64 = rc == SQLITE_DONE && covered == total ? base64(buf, (size_t)total)
                                                      : NULL;
    free(buf);
    if (b64 == NULL) {
        cJSON_Delete(o);
        tmld_ctl_reply_err(req, "conflict",
                           "sample %lld of '%s': chunks do not cover it",
                           (long long)sid, dev);
        return;
    }
    cJSON_AddStringToObject(o, "data_b64", b64);
    free(b64);
    tmld_ctl_reply_ok(req, o);
}

void
ctl_register_core_verbs(struct tmld *d)
{
    static const struct {
        const char *name;
        tmld_ctl_handler fn;
    } verbs[] = {
        {"help", v_help},
        {"ping", v_ping},
        {"status", v_status},
        {"devices", v_devices},
        {"device.show", v_device_show},
        {"groups", v_groups},
        {"tele.summary", v_tele_summary},
        {"samples.list", v_samples_list},
        {"samples.get", v_samples_get},
    };
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        if (tmld_ctl_register(d, verbs[i].name, verbs[i].fn, NULL) != 0)
            log_err("ctl: cannot register %s", verbs[i].name);
}
