/*
 * store.c: the SQLite database. Owns both connections (the writer, used only
 * inside a batch on the libuv thread pool, and the read-only one for queries
 * on the loop thread), start-up checks and migrations, and the group commit.
 *
 * Group commit: records queue on the loop thread; a batch is cut when
 * [db] batch_records are queued or batch_ms after the first one, and at most
 * one batch is in flight, so batches commit in arrival order. A batch is one
 * transaction (BEGIN IMMEDIATE ... COMMIT) in which every tele/sample record
 * is checked against its device's high-water sequence (stream_hw, read and
 * written in the same transaction):
 *   seq <= hw      already stored: counted as a duplicate, dropped;
 *   seq == hw + 1  stored, hw advances;
 *   seq >  hw + 1  a gap: dropped (go-back-N: the device resends in order),
 *                  unless the record's low-water lw > hw + 1: the device no
 *                  longer holds hw + 1 .. lw - 1 (lost at a reboot, or never
 *                  used), so they are given up first, counted per device in
 *                  stream_hw.*_skipped, hw = lw - 1, and the record is
 *                  handled again by the two rules above.
 * The high-waters count within the numbering epoch the records carry
 * (PROTOCOL.md 6): stream_hw holds the current epoch's, stream_hw_epochs the
 * earlier ones'. A record of an epoch not seen for the device starts a new
 * life at hw 0, counted in stream_hw.seq_resets; a late record of an
 * earlier epoch is checked against that epoch's high-waters. For agents
 * without epochs: a hello whose next seq is at or below hw, from another
 * boot than the last hello (boot_id, boot_count), means the numbering
 * restarted: hw goes back to 0, counted the same way.
 * Only after COMMIT returns does ingest publish the cumulative acks, so an
 * ack never covers a record that is not durable. A failed batch (I/O error,
 * disk full, the size cap) is rolled back entirely, nothing of it is acked,
 * the devices resend, and the next batch waits with exponential backoff.
 *
 * Deliberately not here: any UNIQUE(device, seq) index (see db/0001_init.sql).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

#define BATCH_MAX_FACTOR 4 /* a catch-up batch holds up to 4x batch_records */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 10000

struct touched {
    struct device *dev;
    int64_t rowid;
    bool has_hw, hw_dirty, has_tele, has_sample;
    uint32_t tele_hw, sample_hw;
    uint32_t epoch; /* of tele_hw/sample_hw: the newest life; 0 = none */
    /* A parked earlier life that a late record of this batch belongs to:
     * checked against its own numbers, written back, acked in its epoch. */
    bool has_late, late_tele, late_sample;
    uint32_t late_epoch, late_tele_hw, late_sample_hw;
    uint32_t tele_skip, sample_skip, resets, stale_hellos; /* this batch */
    uint32_t late_recs; /* records of an earlier life, this batch */
};

struct batch {
    struct store *s;
    struct rec *head;
    size_t n;
    struct touched *t; /* open-addressed by dev pointer */
    size_t t_cap;
    int rc;
    char err[256];
    uint64_t commit_ms;
    uint64_t n_tele, n_samples, n_dups, n_gaps, n_skipped, n_resets;
    uint64_t n_stale_hellos;
    uv_work_t work;
};

enum {
    ST_DEV_GET,
    ST_DEV_ADD,
    ST_HW_GET,
    ST_HW_PUT,
    ST_TELE,
    ST_SAMPLE,
    ST_HELLO,
    ST_GRP_DEL,
    ST_GRP_ADD,
    ST_STATE,
    ST_SEEN,
    ST_BOOT_GET,
    ST_EPOCH_GET,
    ST_EPOCH_PUT,
    ST_EPOCH_SET,
    ST_EPOCH_DEL,
    ST_EPOCH_PRUNE,
    ST__COUNT
};

static const char *const stmt_sql[ST__COUNT] = {
    [ST_DEV_GET] = "SELECT id FROM devices WHERE name = ?1",
    [ST_DEV_ADD] = "INSERT INTO devices(name, first_seen, last_seen) "
                   "VALUES (?1, ?2, ?2)",
    [ST_HW_GET] = "SELECT tele_hw, sample_hw, epoch FROM stream_hw "
                  "WHERE device_id = ?1",
    [ST_HW_PUT] = "INSERT INTO stream_hw(device_id, tele_hw, sample_hw, "
                  "tele_skipped, sample_skipped, seq_resets, epoch) "
                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(device_id) "
                  "DO UPDATE SET tele_hw = excluded.tele_hw, "
                  "sample_hw = excluded.sample_hw, epoch = excluded.epoch, "
                  "tele_skipped = tele_skipped + excluded.tele_skipped, "
                  "sample_skipped = sample_skipped + excluded.sample_skipped, "
                  "seq_resets = seq_resets + excluded.seq_resets",
    [ST_TELE] = "INSERT INTO tele(device_id, seq, recv_at, model_version, "
                "period_s, n_inferences, n_low_conf, n_flagged, n_errors, "
                "lat_mean_us, body) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
    [ST_SAMPLE] = "INSERT INTO samples(device_id, seq, recv_at, sample_id, "
                  "model_version, reason, predicted, confidence_bp, expected, "
                  "dtype, shape, rate_hz, total_len, offset, data, epoch) "
                  "VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,"
                  "?16)",
    [ST_HELLO] = "UPDATE devices SET last_seen = max(last_seen, ?2), "
                 "agent_version = ?3, hw = ?4, model = ?5, model_version = ?6, "
                 "model_slot = ?7, slot_size = ?8, arena_size = ?9, "
                 "chunk_max = ?10, boot_count = ?11, last_ota_state = ?12, "
                 "last_ota_reason = ?13, last_ota_version = ?14, "
                 "version_floor = ?15, hello_at = ?2, online = 1, "
                 "boot_id = coalesce(?16, boot_id), "
                 "recent_boots = coalesce(?17, recent_boots) WHERE id = ?1",
    [ST_GRP_DEL] = "DELETE FROM device_groups WHERE device_id = ?1 AND "
                   "source = 'fw'",
    [ST_GRP_ADD] = "INSERT OR IGNORE INTO device_groups(device_id, grp, "
                   "source) VALUES (?1, ?2, 'fw')",
    [ST_STATE] = "UPDATE devices SET online = ?2, last_seen = max(last_seen, "
                 "?3) WHERE id = ?1",
    [ST_SEEN] = "UPDATE devices SET last_seen = max(last_seen, ?2) "
                "WHERE id = ?1",
    [ST_BOOT_GET] = "SELECT boot_count, boot_id, recent_boots FROM devices "
                    "WHERE id = ?1",
    [ST_EPOCH_GET] = "SELECT tele_hw, sample_hw FROM stream_hw_epochs "
                     "WHERE device_id = ?1 AND epoch = ?2",
    /* Parks a life; left_order counts per device, so the most recently
     * left ones are known without a clock. */
    [ST_EPOCH_PUT] = "INSERT INTO stream_hw_epochs(device_id, epoch, tele_hw, "
                     "sample_hw, left_order) VALUES (?1, ?2, ?3, ?4, "
                     "(SELECT coalesce(max(left_order), 0) + 1 FROM "
                     "stream_hw_epochs WHERE device_id = ?1)) "
                     "ON CONFLICT(device_id, epoch) DO UPDATE SET "
                     "tele_hw = excluded.tele_hw, "
                     "sample_hw = excluded.sample_hw, "
                     "left_order = excluded.left_order",
    [ST_EPOCH_SET] = "UPDATE stream_hw_epochs SET tele_hw = ?3, "
                     "sample_hw = ?4 WHERE device_id = ?1 AND epoch = ?2",
    [ST_EPOCH_DEL] = "DELETE FROM stream_hw_epochs WHERE device_id = ?1 AND "
                     "epoch = ?2",
    /* A device's 8 most recently left lives are kept: a late record of a
     * life older than that is unlikely, and then it is a new life. */
    [ST_EPOCH_PRUNE] = "DELETE FROM stream_hw_epochs WHERE device_id = ?1 "
                       "AND epoch NOT IN (SELECT epoch FROM stream_hw_epochs "
                       "WHERE device_id = ?1 ORDER BY left_order DESC "
                       "LIMIT 8)",
};

struct store {
    struct tmld *d;
    sqlite3 *wdb;
    sqlite3 *rdb;
    sqlite3_stmt *st[ST__COUNT];
    struct rec *head, *tail;
    size_t n_pending;
    uint64_t first_pending_ms;
    uv_timer_t timer;
    bool is_in_flight;
    bool is_closed;
    bool urgent; /* a queued job someone waits on: no batching delay */
    uint64_t backoff_ms;
    uint64_t retry_at_ms;
    uint64_t errors_logged_ms;
    bool need_checkpoint; /* the last batch failed: disk or cap full */
    struct store_stats stats;
};

/* ---- records --------------------------------------------------------------- */

void
rec_free(struct rec *r)
{
    if (r == NULL)
        return;
    free(r->data);
    if (r->kind == REC_HELLO)
        free(r->u.hello);
    free(r);
}

/* ---- open, check, migrate ---------------------------------------------------- */

static int
exec_sql(sqlite3 *db, const char *sql, const char *what)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        log_err("store: %s: %s", what, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
    }
    return rc;
}

static int64_t
query_int(sqlite3 *db, const char *sql, int64_t def)
{
    sqlite3_stmt *st = NULL;
    int64_t v = def;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

int
store_migrate(sqlite3 *db, const char *path)
{
    return store_migrate_list(db, path, tmld_migrations, tmld_n_migrations);
}

int
store_migrate_list(sqlite3 *db, const char *path,
                   const struct tmld_migration *list, size_t n)
{
    int64_t have = query_int(db, "PRAGMA user_version", -1);
    if (have < 0) {
        log_err("store: %s: cannot read user_version", path);
        return -EIO;
    }
    int max_known = 0;
    for (size_t i = 0; i < n; i++)
        if (list[i].version > max_known)
            max_known = list[i].version;
    if (have > max_known) {
        log_err("store: %s: schema version %lld is newer than this tmld "
                "knows (%d): refusing to touch it; run a newer tmld",
                path, (long long)have, max_known);
        return -EPROTO;
    }
    if (exec_sql(db,
                 "CREATE TABLE IF NOT EXISTS schema_migrations ("
                 "version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                 "applied_at INTEGER NOT NULL)",
                 "schema_migrations") != SQLITE_OK)
        return -EIO;
    /* A database migrated before schema_migrations existed (or by a tool
     * that only sets user_version) counts everything up to user_version as
     * applied. */
    bool is_legacy = have > 0 &&
                     query_int(db, "SELECT count(*) FROM schema_migrations",
                               0) == 0;
    for (size_t i = 0; i < n; i++) {
        const struct tmld_migration *m = &list[i];
        char q[128];
        snprintf(q, sizeof(q),
                 "SELECT count(*) FROM schema_migrations WHERE version = %d",
                 m->version);
        if (query_int(db, q, 0) > 0 || (is_legacy && m->version <= have))
            continue;
        int64_t cur = query_int(db, "PRAGMA user_version", 0);
        int64_t next = m->version > cur ? m->version : cur;
        char tail[256];
        snprintf(tail, sizeof(tail),
                 ";\nINSERT INTO schema_migrations VALUES (%d, '%s', %lld);\n"
                 "PRAGMA user_version = %lld;\nCOMMIT;",
                 m->version, m->name, (long long)time(NULL), (long long)next);
        if (exec_sql(db, "BEGIN IMMEDIATE", m->name) != SQLITE_OK)
            return -EIO;
        char *msg = NULL;
        int rc = sqlite3_exec(db, m->sql, NULL, NULL, &msg);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db, tail, NULL, NULL, &msg);
        if (rc != SQLITE_OK) {
            log_err("store: %s: migration %s failed: %s", path, m->name,
                    msg ? msg : sqlite3_errstr(rc));
            sqlite3_free(msg);
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return -EIO;
        }
        log_info("store: %s: applied migration %s", path, m->name);
    }
    return 0;
}

/* Moves a damaged database aside (with its -wal and -shm) under a timestamped
 * name so that an operator can look at it, and says so loudly. */
static void
quarantine(const char *path, const char *why)
{
    char stamp[32], to[4200], from[4200];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
    static const char *const sfx[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(from, sizeof(from), "%s%s", path, sfx[i]);
        snprintf(to, sizeof(to), "%s.corrupt-%s%s", path, stamp, sfx[i]);
        if (rename(from, to) != 0 && errno != ENOENT)
            log_err("store: cannot move %s aside: %s", from, strerror(errno));
    }
    log_err("store: DATABASE CORRUPT (%s): moved to %s.corrupt-%s, starting "
            "a fresh one; the old data is NOT lost, inspect it with sqlite3",
            why, path, stamp);
}

static int
open_conn(const char *path, sqlite3 **out)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                 SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        log_err("store: %s: cannot open: %s", path,
                db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return rc;
    }
    sqlite3_extended_result_codes(db, 1);
    *out = db;
    return SQLITE_OK;
}

/* Opens the writer connection and checks the file; returns 1 if the file is
 * damaged (caller quarantines and retries), 0 on success, < 0 on failure. */
static int
open_checked(struct store *s, const char *path, char *why, size_t why_len)
{
    sqlite3 *db = NULL;
    if (open_conn(path, &db) != SQLITE_OK)
        return -EIO;
    sqlite3_busy_timeout(db, 5000);
    /* journal_mode touches the header: a non-database fails here. */
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    const char *mode = rc == SQLITE_ROW
                           ? (const char *)sqlite3_column_text(st, 0)
                           : NULL;
    bool is_wal = mode != NULL && strcmp(mode, "wal") == 0;
    sqlite3_finalize(st);
    if (rc == SQLITE_NOTADB || (rc & 0xff) == SQLITE_CORRUPT) {
        snprintf(why, why_len, "%s", sqlite3_errstr(rc));
        sqlite3_close(db);
        return 1;
    }
    if (!is_wal) {
        log_err("store: %s: cannot enable WAL: %s", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -EIO;
    }
    rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    bool ok = rc == SQLITE_ROW &&
              strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
    if (!ok)
        snprintf(why, why_len, "quick_check: %s",
                 rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0)
                                  : sqlite3_errstr(rc));
    sqlite3_finalize(st);
    if (!ok) {
        sqlite3_close(db);
        return 1;
    }
    s->wdb = db;
    return 0;
}

int
store_open(struct tmld *d)
{
    struct store *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    s->d = d;
    d->store = s;
    const char *path = d->set.db_path;
    char why[256] = "";
    testvfs_install();
    int rc = open_checked(s, path, why, sizeof(why));
    if (rc == 1) {
        quarantine(path, why);
        rc = open_checked(s, path, why, sizeof(why));
    }
    if (rc != 0) {
        if (rc == 1)
            log_err("store: %s: fresh database is damaged too (%s)", path,
                    why);
        return -EIO;
    }
    char pragmas[512];
    int64_t page = query_int(s->wdb, "PRAGMA page_size", 4096);
    snprintf(pragmas, sizeof(pragmas),
             "PRAGMA synchronous=%s; PRAGMA foreign_keys=OFF; "
             "PRAGMA journal_size_limit=%d; PRAGMA max_page_count=%llu; "
             "PRAGMA temp_store=MEMORY; PRAGMA cache_size=-8000",
             d->set.db_sync_full ? "FULL" : "NORMAL", 64 * 1024 * 1024,
             (unsigned long long)(d->set.db_cap_bytes / (uint64_t)page));
    if (exec_sql(s->wdb, pragmas, "pragmas") != SQLITE_OK)
        return -EIO;
    if (store_migrate(s->wdb, path) != 0)
        return -EIO;
    /* Online flags from the previous run are stale; the retained up/state
     * messages (online, or the offline last will) set them again as soon as
     * the subscription is made. */
    if (exec_sql(s->wdb, "UPDATE devices SET online = 0 WHERE online != 0",
                 "reset online flags") != SQLITE_OK)
        return -EIO;
    for (int i = 0; i < ST__COUNT; i++) {
        rc = sqlite3_prepare_v3(s->wdb, stmt_sql[i], -1,
                                SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL);
        if (rc != SQLITE_OK) {
            log_err("store: prepare '%s': %s", stmt_sql[i],
                    sqlite3_errmsg(s->wdb));
            return -EIO;
        }
    }
    if (open_conn(path, &s->rdb) != SQLITE_OK)
        return -EIO;
    sqlite3_busy_timeout(s->rdb, 100);
    if (exec_sql(s->rdb, "PRAGMA query_only=ON; PRAGMA cache_size=-2000",
                 "read connection") != SQLITE_OK)
        return -EIO;
    uv_timer_init(d->loop, &s->timer);
    s->timer.data = s;
    log_info("store: %s: schema version %lld, synchronous=%s, cap %llu MiB",
             path, (long long)store_user_version(d),
             d->set.db_sync_full ? "FULL" : "NORMAL",
             (unsigned long long)(d->set.db_cap_bytes >> 20));
    return 0;
}

sqlite3 *
tmld_db_ro(struct tmld *d)
{
    return d->store ? d->store->rdb : NULL;
}

int64_t
store_user_version(struct tmld *d)
{
    return query_int(d->store->rdb, "PRAGMA user_version", 0);
}

int64_t
store_size_bytes(struct tmld *d, int64_t *wal_bytes)
{
    struct stat st;
    char wal[4200];
    snprintf(wal, sizeof(wal), "%s-wal", d->set.db_path);
    if (wal_bytes)
        *wal_bytes = stat(wal, &st) == 0 ? (int64_t)st.st_size : 0;
    return stat(d->set.db_path, &st) == 0 ? (int64_t)st.st_size : 0;
}

/* ---- the batch (writer thread) ----------------------------------------------- */

static struct touched *
touch(struct batch *b, struct device *dev)
{
    size_t mask = b->t_cap - 1;
    size_t h = ((uintptr_t)dev >> 4) * 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < b->t_cap; i++) {
        struct touched *t = &b->t[(h + i) & mask];
        if (t->dev == dev)
            return t;
        if (t->dev == NULL) {
            t->dev = dev;
            t->rowid = dev->rowid; /* snapshot taken on the loop thread */
            return t;
        }
    }
    return NULL; /* cannot happen: t_cap >= 2 * records */
}

#define TRY(x)                                                                 \
    do {                                                                       \
        int rc_ = (x);                                                         \
        if (rc_ != SQLITE_OK && rc_ != SQLITE_DONE && rc_ != SQLITE_ROW)       \
            return rc_;                                                        \
    } while (0)

static int
step_reset(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_ROW ? SQLITE_DONE : rc;
}

static int
ensure_dev(struct store *s, struct touched *t, int64_t now_s)
{
    if (t->rowid > 0)
        return SQLITE_OK;
    sqlite3_stmt *st = s->st[ST_DEV_GET];
    sqlite3_bind_text(st, 1, t->dev->name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        t->rowid = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return rc;
    if (t->rowid > 0)
        return SQLITE_OK;
    st = s->st[ST_DEV_ADD];
    sqlite3_bind_text(st, 1, t->dev->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now_s);
    rc = step_reset(st);
    if (rc != SQLITE_DONE)
        return rc;
    t->rowid = sqlite3_last_insert_rowid(s->wdb);
    return SQLITE_OK;
}

static int
ensure_hw(struct store *s, struct touched *t)
{
    if (t->has_hw)
        return SQLITE_OK;
    sqlite3_stmt *st = s->st[ST_HW_GET];
    sqlite3_bind_int64(st, 1, t->rowid);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        t->tele_hw = (uint32_t)sqlite3_column_int64(st, 0);
        t->sample_hw = (uint32_t)sqlite3_column_int64(st, 1);
        t->epoch = (uint32_t)sqlite3_column_int64(st, 2);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return rc;
    t->has_hw = true;
    return SQLITE_OK;
}

static int
insert_tele(struct store *s, const struct touched *t, const struct rec *r)
{
    sqlite3_stmt *st = s->st[ST_TELE];
    sqlite3_bind_int64(st, 1, t->rowid);
    sqlite3_bind_int64(st, 2, r->seq);
    sqlite3_bind_int64(st, 3, r->recv_s);
    sqlite3_bind_int64(st, 4, r->u.tele.model_version);
    sqlite3_bind_int64(st, 5, r->u.tele.period_s);
    sqlite3_bind_int64(st, 6, r->u.tele.n_inferences);
    sqlite3_bind_int64(st, 7, r->u.tele.n_low_conf);
    sqlite3_bind_int64(st, 8, r->u.tele.n_flagged);
    sqlite3_bind_int64(st, 9, r->u.tele.n_errors);
    sqlite3_bind_int64(st, 10, r->u.tele.lat_mean_us);
    sqlite3_bind_blob(st, 11, r->data, (int)r->data_len, SQLITE_STATIC);
    return step_reset(st);
}

static int
insert_sample(struct store *s, const struct touched *t, const struct rec *r)
{
    sqlite3_stmt *st = s->st[ST_SAMPLE];
    sqlite3_bind_int64(st, 1, t->rowid);
    sqlite3_bind_int64(st, 2, r->seq);
    sqlite3_bind_int64(st, 3, r->recv_s);
    sqlite3_bind_int64(st, 4, r->u.sample.sample_id);
    sqlite3_bind_int64(st, 5, r->u.sample.model_version);
    sqlite3_bind_int64(st, 6, r->u.sample.reason);
    sqlite3_bind_int64(st, 7, r->u.sample.predicted);
    sqlite3_bind_int64(st, 8, r->u.sample.confidence_bp);
    if (r->u.sample.has_expected)
        sqlite3_bind_int64(st, 9, r->u.sample.expected);
    else
        sqlite3_bind_null(st, 9);
    sqlite3_bind_int64(st, 10, r->u.sample.dtype);
    sqlite3_bind_text(st, 11, r->u.sample.shape, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 12, r->u.sample.rate_hz);
    sqlite3_bind_int64(st, 13, r->u.sample.total_len);
    sqlite3_bind_int64(st, 14, r->u.sample.offset);
    sqlite3_bind_blob(st, 15, r->data, (int)r->data_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 16, r->epoch);
    return step_reset(st);
}

/* The boot_ids of the device's last BOOTS_KEPT hellos (devices.recent_boots,
 * u32 little-endian, newest first): tells a hello of an earlier boot
 * delivered again from a restarted numbering that drew its epoch again. */
#define BOOTS_KEPT 8

struct boots {
    int64_t count; /* boot_count of the last hello, -1 = none */
    int64_t id;    /* boot_id of the last hello, 0 = none */
    uint32_t recent[BOOTS_KEPT];
    size_t n_recent;
};

static int
boots_get(struct store *s, const struct touched *t, struct boots *o)
{
    sqlite3_stmt *st = s->st[ST_BOOT_GET];
    sqlite3_bind_int64(st, 1, t->rowid);
    int rc = sqlite3_step(st);
    o->count = -1;
    o->id = 0;
    o->n_recent = 0;
    if (rc == SQLITE_ROW) {
        if (sqlite3_column_type(st, 0) != SQLITE_NULL)
            o->count = sqlite3_column_int64(st, 0);
        o->id = sqlite3_column_int64(st, 1);
        const uint8_t *p = sqlite3_column_blob(st, 2);
        size_t n = (size_t)sqlite3_column_bytes(st, 2) / 4;
        for (size_t i = 0; p != NULL && i < n && i < BOOTS_KEPT; i++)
            o->recent[o->n_recent++] = (uint32_t)p[4 * i] |
                                       (uint32_t)p[4 * i + 1] << 8 |
                                       (uint32_t)p[4 * i + 2] << 16 |
                                       (uint32_t)p[4 * i + 3] << 24;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static bool
boots_seen(const struct boots *b, uint32_t id)
{
    if (b->id == (int64_t)id)
        return true;
    for (size_t i = 0; i < b->n_recent; i++)
        if (b->recent[i] == id)
            return true;
    return false;
}

/* bt: the device's boots as stored before this hello (boots_get). */
static int
apply_hello(struct store *s, const struct touched *t, const struct rec *r,
            const struct boots *bt)
{
    const struct hello_rec *h = r->u.hello;
    uint8_t recent[4 * BOOTS_KEPT];
    size_t n_recent = 0;
    if (h->boot_id != 0) {
        uint32_t ids[BOOTS_KEPT];
        size_t n = 0;
        ids[n++] = h->boot_id;
        for (size_t i = 0; i < bt->n_recent && n < BOOTS_KEPT; i++)
            if (bt->recent[i] != h->boot_id)
                ids[n++] = bt->recent[i];
        for (size_t i = 0; i < n; i++)
            for (int k = 0; k < 4; k++)
                recent[n_recent++] = (uint8_t)(ids[i] >> (8 * k));
    }
    sqlite3_stmt *st = s->st[ST_HELLO];
    sqlite3_bind_int64(st, 1, t->rowid);
    sqlite3_bind_int64(st, 2, r->recv_s);
    sqlite3_bind_int64(st, 3, h->agent_version);
    sqlite3_bind_text(st, 4, h->hw, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, h->model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, h->model_version);
    sqlite3_bind_int64(st, 7, h->model_slot);
    sqlite3_bind_int64(st, 8, h->slot_size);
    sqlite3_bind_int64(st, 9, h->arena_size);
    sqlite3_bind_int64(st, 10, h->chunk_max);
    sqlite3_bind_int64(st, 11, h->boot_count);
    sqlite3_bind_int64(st, 12, h->last_ota_state);
    sqlite3_bind_int64(st, 13, h->last_ota_reason);
    sqlite3_bind_int64(st, 14, h->last_ota_version);
    sqlite3_bind_int64(st, 15, h->version_floor);
    if (h->boot_id != 0) {
        sqlite3_bind_int64(st, 16, h->boot_id);
        sqlite3_bind_blob(st, 17, recent, (int)n_recent, SQLITE_STATIC);
    }
    int rc = step_reset(st);
    if (rc != SQLITE_DONE)
        return rc;
    st = s->st[ST_GRP_DEL];
    sqlite3_bind_int64(st, 1, t->rowid);
    if ((rc = step_reset(st)) != SQLITE_DONE)
        return rc;
    for (size_t i = 0; i < h->n_groups; i++) {
        st = s->st[ST_GRP_ADD];
        sqlite3_bind_int64(st, 1, t->rowid);
        sqlite3_bind_text(st, 2, h->groups[i], -1, SQLITE_STATIC);
        if ((rc = step_reset(st)) != SQLITE_DONE)
            return rc;
    }
    return SQLITE_DONE;
}

/* ---- numbering lives (PROTOCOL.md 6) ---------------------------------------
 * stream_hw holds the high-waters of the device's newest life (its epoch in
 * stream_hw.epoch, 0 = records without one); stream_hw_epochs holds earlier
 * lives ("parked"), at most 8 per device. */

/* Writes one life's row with statement ST_EPOCH_PUT or ST_EPOCH_SET. */
static int
life_write(struct store *s, int which, const struct touched *t,
           uint32_t epoch, uint32_t tele_hw, uint32_t sample_hw)
{
    sqlite3_stmt *st = s->st[which];
    sqlite3_bind_int64(st, 1, t->rowid);
    sqlite3_bind_int64(st, 2, epoch);
    sqlite3_bind_int64(st, 3, tele_hw);
    sqlite3_bind_int64(st, 4, sample_hw);
    TRY(step_reset(st));
    return SQLITE_OK;
}

/* Parks the newest life (t->epoch and its high-waters) and keeps the 8 most
 * recently left. */
static int
park_current(struct store *s, struct touched *t)
{
    TRY(life_write(s, ST_EPOCH_PUT, t, t->epoch, t->tele_hw, t->sample_hw));
    sqlite3_stmt *st = s->st[ST_EPOCH_PRUNE];
    sqlite3_bind_int64(st, 1, t->rowid);
    TRY(step_reset(st));
    return SQLITE_OK;
}

/* Reads the parked life `epoch` of the device: SQLITE_ROW (hws set) or
 * SQLITE_DONE (none). */
static int
parked_get(struct store *s, const struct touched *t, uint32_t epoch,
           uint32_t *tele_hw, uint32_t *sample_hw)
{
    sqlite3_stmt *st = s->st[ST_EPOCH_GET];
    sqlite3_bind_int64(st, 1, t->rowid);
    sqlite3_bind_int64(st, 2, epoch);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *tele_hw = (uint32_t)sqlite3_column_int64(st, 0);
        *sample_hw = (uint32_t)sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static int
parked_del(struct store *s, const struct touched *t, uint32_t epoch)
{
    sqlite3_stmt *st = s->st[ST_EPOCH_DEL];
    sqlite3_bind_int64(st, 1, t->rowid);
    sqlite3_bind_int64(st, 2, epoch);
    TRY(step_reset(st));
    return SQLITE_OK;
}

/* Writes the late life's high-waters back to its parked row. */
static int
late_flush(struct store *s, struct touched *t)
{
    if (!t->has_late)
        return SQLITE_OK;
    return life_write(s, ST_EPOCH_SET, t, t->late_epoch, t->late_tele_hw,
                      t->late_sample_hw);
}

/* A new life starts as the newest one: the current is parked (when
 * `park`), the high-waters restart at 0, counted as a reset. */
static int
new_life(struct store *s, struct batch *b, struct touched *t, uint32_t epoch,
         bool park)
{
    if (park)
        TRY(park_current(s, t));
    t->epoch = epoch;
    t->tele_hw = 0;
    t->sample_hw = 0;
    t->hw_dirty = true;
    t->resets++;
    b->n_resets++;
    return SQLITE_OK;
}

/* PROTOCOL.md 6, restarted numbering. With an epoch in the hello and in the
 * device's records: a hello of the newest life decides nothing; one of a
 * parked life makes it the newest again (a late record of an earlier life
 * had become the newest), one of an unseen epoch starts a new life.
 * Otherwise (agents without epochs, or the first hello with one): a hello
 * whose next seq is at or below what is stored for a stream, from another
 * boot than the last hello seen (another boot_id, or a lower boot_count),
 * restarts the numbering; the old numbers are parked as epoch 0 when the
 * hello has an epoch, so a late record of the old agent is checked against
 * them. The same boot's hello delivered again (QoS 1 resend after a
 * reconnect, retained copy) carries a stale next seq too: only counted. */
static int
check_restart(struct store *s, struct batch *b, struct touched *t,
              const struct rec *r, const struct boots *bt)
{
    const struct hello_rec *h = r->u.hello;
    if (h->tele_next == 0 && h->sample_next == 0 && h->epoch == 0)
        return SQLITE_OK; /* an agent that does not declare them */
    TRY(ensure_hw(s, t));
    bool tele = h->tele_next != 0 && h->tele_next <= t->tele_hw;
    bool sample = h->sample_next != 0 && h->sample_next <= t->sample_hw;
    if (h->epoch != 0 && t->epoch != 0) {
        if (h->epoch == t->epoch) {
            if (!tele && !sample)
                return SQLITE_OK;
            /* A next seq at or below what is stored within one epoch: a
             * hello of an earlier boot delivered again (its boot_id is
             * known), or a wiped device that drew the same epoch again
             * (an unseen boot_id, and its boot count started over). */
            if (boots_seen(bt, h->boot_id) || h->boot_id == 0 ||
                (int64_t)h->boot_count >= bt->count) {
                t->stale_hellos++;
                b->n_stale_hellos++;
                return SQLITE_OK;
            }
            return new_life(s, b, t, h->epoch, false);
        }
        /* The late slot's numbers go to their row first: it may be the
         * life this hello makes the newest again. */
        TRY(late_flush(s, t));
        if (t->has_late && t->late_epoch == h->epoch) {
            t->has_tele |= t->late_tele;
            t->has_sample |= t->late_sample;
        }
        t->has_late = false;
        uint32_t th = 0, sh = 0;
        int rc = parked_get(s, t, h->epoch, &th, &sh);
        if (rc == SQLITE_ROW) {
            TRY(park_current(s, t));
            TRY(parked_del(s, t, h->epoch));
            t->epoch = h->epoch;
            t->tele_hw = th;
            t->sample_hw = sh;
            t->hw_dirty = true;
            return SQLITE_OK;
        }
        if (rc != SQLITE_DONE)
            return rc;
        return new_life(s, b, t, h->epoch, true);
    }
    if (!tele && !sample)
        return SQLITE_OK;
    if (bt->id == (int64_t)h->boot_id && (int64_t)h->boot_count >= bt->count) {
        t->stale_hellos++;
        b->n_stale_hellos++;
        return SQLITE_OK;
    }
    if (h->epoch != 0)
        return new_life(s, b, t, h->epoch, true); /* parks epoch 0 */
    if (tele)
        t->tele_hw = 0;
    if (sample)
        t->sample_hw = 0;
    t->resets++;
    t->hw_dirty = true;
    b->n_resets++;
    return SQLITE_OK;
}

/* PROTOCOL.md 6, numbering epochs: which life a tele/sample record belongs
 * to. Sets *late when it is a parked (earlier) life, loaded into t->late_*;
 * else the record is checked against the newest life, which it may start:
 *   - the device's first record with an epoch after records without one
 *     continues their numbers (an agent updated in place starts above what
 *     it sent: lw > hw), unless its low-water is at or below what is stored
 *     (lw <= hw: the numbering restarted, a wiped device whose hello may
 *     have been lost): then a new life, the old numbers parked as epoch 0;
 *   - a record of an epoch never seen for the device starts a new life;
 *   - a record without an epoch from a device that has one belongs to the
 *     parked epoch-0 life if there is one (the agent before an update and
 *     a wipe), else to the newest (updated in place: same numbering). */
static int
enter_epoch(struct store *s, struct batch *b, struct touched *t,
            const struct rec *r, bool *late)
{
    *late = false;
    if (r->epoch == t->epoch)
        return SQLITE_OK;
    if (t->epoch == 0) {
        uint32_t hw = r->kind == REC_TELE ? t->tele_hw : t->sample_hw;
        if (r->lw != 0 && r->lw <= hw)
            return new_life(s, b, t, r->epoch, true);
        t->epoch = r->epoch;
        t->hw_dirty = true;
        return SQLITE_OK;
    }
    if (t->has_late && t->late_epoch == r->epoch) {
        *late = true;
        return SQLITE_OK;
    }
    uint32_t th = 0, sh = 0;
    int rc = parked_get(s, t, r->epoch, &th, &sh);
    if (rc == SQLITE_ROW) {
        TRY(late_flush(s, t)); /* another late life earlier in the batch */
        t->has_late = true;
        t->late_tele = t->late_sample = false;
        t->late_epoch = r->epoch;
        t->late_tele_hw = th;
        t->late_sample_hw = sh;
        t->late_recs++;
        *late = true;
        return SQLITE_OK;
    }
    if (rc != SQLITE_DONE)
        return rc;
    if (r->epoch == 0)
        return SQLITE_OK; /* updated in place: the newest life's numbers */
    return new_life(s, b, t, r->epoch, true);
}

static int
apply_rec(struct store *s, struct batch *b, struct rec *r)
{
    if (r->kind == REC_JOB) {
        TRY(sqlite3_exec(s->wdb, "SAVEPOINT job", NULL, NULL, NULL));
        int st = r->u.job.fn(s->wdb, r->u.job.arg);
        r->u.job.status = st;
        if (st != 0)
            TRY(sqlite3_exec(s->wdb, "ROLLBACK TO job", NULL, NULL, NULL));
        TRY(sqlite3_exec(s->wdb, "RELEASE job", NULL, NULL, NULL));
        return SQLITE_OK;
    }
    struct touched *t = touch(b, r->dev);
    TRY(ensure_dev(s, t, r->recv_s));
    sqlite3_stmt *st;
    switch (r->kind) {
    case REC_TELE:
    case REC_SAMPLE: {
        TRY(ensure_hw(s, t));
        bool late;
        TRY(enter_epoch(s, b, t, r, &late));
        bool is_tele = r->kind == REC_TELE;
        uint32_t *hw;
        if (late) {
            hw = is_tele ? &t->late_tele_hw : &t->late_sample_hw;
            *(is_tele ? &t->late_tele : &t->late_sample) = true;
        } else {
            hw = is_tele ? &t->tele_hw : &t->sample_hw;
            *(is_tele ? &t->has_tele : &t->has_sample) = true;
        }
        /* In 64 bits: at hw = UINT32_MAX, hw + 1 must not wrap to 0. */
        uint64_t next = (uint64_t)*hw + 1;
        if (r->seq > next && r->lw > next) {
            /* The device no longer holds hw + 1 .. lw - 1: give them up. */
            uint32_t n = r->lw - 1 - *hw;
            if (is_tele)
                t->tele_skip += n;
            else
                t->sample_skip += n;
            b->n_skipped += n;
            *hw = r->lw - 1;
            t->hw_dirty = true;
        }
        if (r->seq <= *hw) {
            b->n_dups++;
        } else if (r->seq == (uint64_t)*hw + 1) {
            TRY(is_tele ? insert_tele(s, t, r) : insert_sample(s, t, r));
            *hw = r->seq;
            t->hw_dirty = true;
            if (is_tele)
                b->n_tele++;
            else
                b->n_samples++;
        } else {
            b->n_gaps++;
        }
        return SQLITE_OK;
    }
    case REC_HELLO: {
        /* One read of the stored boots serves the restart check and the
         * update of recent_boots. */
        struct boots bt;
        TRY(boots_get(s, t, &bt));
        TRY(check_restart(s, b, t, r, &bt));
        TRY(apply_hello(s, t, r, &bt));
        return SQLITE_OK;
    }
    case REC_STATE:
        st = s->st[ST_STATE];
        sqlite3_bind_int64(st, 1, t->rowid);
        sqlite3_bind_int(st, 2, r->u.online);
        sqlite3_bind_int64(st, 3, r->recv_s);
        TRY(step_reset(st));
        return SQLITE_OK;
    case REC_SEEN:
        st = s->st[ST_SEEN];
        sqlite3_bind_int64(st, 1, t->rowid);
        sqlite3_bind_int64(st, 2, r->recv_s);
        TRY(step_reset(st));
        return SQLITE_OK;
    case REC_JOB:
        break;
    }
    return SQLITE_OK;
}

static int
run_batch(struct store *s, struct batch *b)
{
    if (s->need_checkpoint) {
        /* After "disk full" the WAL may be what fills the disk: it only
         * shrinks after a checkpoint, and the automatic one waits for 1000
         * pages. Copy it back and truncate it before trying again. */
        sqlite3_wal_checkpoint_v2(s->wdb, NULL, SQLITE_CHECKPOINT_TRUNCATE,
                                  NULL, NULL);
        s->need_checkpoint = false;
    }
    TRY(sqlite3_exec(s->wdb, "BEGIN IMMEDIATE", NULL, NULL, NULL));
    for (struct rec *r = b->head; r != NULL; r = r->next)
        TRY(apply_rec(s, b, r));
    for (size_t i = 0; i < b->t_cap; i++) {
        struct touched *t = &b->t[i];
        if (t->dev == NULL)
            continue;
        TRY(late_flush(s, t));
        if (!t->hw_dirty)
            continue;
        sqlite3_stmt *st = s->st[ST_HW_PUT];
        sqlite3_bind_int64(st, 1, t->rowid);
        sqlite3_bind_int64(st, 2, t->tele_hw);
        sqlite3_bind_int64(st, 3, t->sample_hw);
        sqlite3_bind_int64(st, 4, t->tele_skip);
        sqlite3_bind_int64(st, 5, t->sample_skip);
        sqlite3_bind_int64(st, 6, t->resets);
        sqlite3_bind_int64(st, 7, t->epoch);
        TRY(step_reset(st));
    }
    tmld_test_crash("after_insert_before_commit");
    TRY(sqlite3_exec(s->wdb, "COMMIT", NULL, NULL, NULL));
    return SQLITE_OK;
}

static void
work_cb(uv_work_t *w)
{
    struct batch *b = w->data;
    struct store *s = b->s;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = run_batch(s, b);
    if (rc != SQLITE_OK) {
        snprintf(b->err, sizeof(b->err), "%s (%d)", sqlite3_errmsg(s->wdb),
                 rc);
        if (!sqlite3_get_autocommit(s->wdb))
            sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
        /* Statements of a failed step may be left mid-way. */
        for (int i = 0; i < ST__COUNT; i++) {
            sqlite3_reset(s->st[i]);
            sqlite3_clear_bindings(s->st[i]);
        }
    }
    b->rc = rc;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    b->commit_ms = (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000 +
                              (t1.tv_nsec - t0.tv_nsec) / 1000000);
}

/* ---- the batch (loop thread) --------------------------------------------------- */

static void arm(struct store *s);

static void
hist_add(struct store_stats *st, uint64_t ms)
{
    static const uint64_t le[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000,
                                  2000};
    size_t i = 0;
    while (i < 11 && ms > le[i])
        i++;
    st->commit_hist[i]++;
}

/* What the low-water rule and restart detection did for one device in a
 * committed batch: rare (a reboot, a wiped device), so one line each. */
static void
log_gaps(const struct touched *t)
{
    if (t->tele_skip != 0 || t->sample_skip != 0)
        log_warn("ingest: dev=%s gave up %u tele and %u sample seqs below the "
                 "device's low-water (lost at a reboot or never used); now "
                 "at tele %u, sample %u",
                 t->dev->name, t->tele_skip, t->sample_skip, t->tele_hw,
                 t->sample_hw);
    if (t->resets != 0)
        log_warn("ingest: dev=%s restarted its sequence numbers (records of "
                 "a new numbering epoch, or a hello from an unseen boot with a "
                 "next seq at or below what is stored, in the same epoch too: "
                 "state wiped or device replaced); streams start again",
                 t->dev->name);
    if (t->late_recs != 0)
        log_info("ingest: dev=%s records of an earlier numbering epoch "
                 "arrived late; checked against that life's numbers",
                 t->dev->name);
    if (t->stale_hellos != 0)
        log_info("ingest: dev=%s an old hello of the current boot arrived "
                 "again (stale next seq, ignored)",
                 t->dev->name);
}

static void
after_work_cb(uv_work_t *w, int status)
{
    struct batch *b = w->data;
    struct store *s = b->s;
    struct tmld *d = s->d;
    s->is_in_flight = false;
    if (status != 0 && b->rc == SQLITE_OK)
        b->rc = SQLITE_ERROR;
    s->stats.batches++;
    if (b->rc == SQLITE_OK) {
        s->stats.tele += b->n_tele;
        s->stats.samples += b->n_samples;
        s->stats.duplicates += b->n_dups;
        s->stats.gaps += b->n_gaps;
        s->stats.skipped += b->n_skipped;
        s->stats.seq_resets += b->n_resets;
        s->stats.stale_hellos += b->n_stale_hellos;
        s->stats.last_commit_ms = b->commit_ms;
        if (b->commit_ms > s->stats.max_commit_ms)
            s->stats.max_commit_ms = b->commit_ms;
        hist_add(&s->stats, b->commit_ms);
        s->backoff_ms = 0;
        tmld_test_crash("after_commit_before_ack");
        for (size_t i = 0; i < b->t_cap; i++) {
            struct touched *t = &b->t[i];
            if (t->dev == NULL)
                continue;
            t->dev->rowid = t->rowid;
            log_gaps(t);
            if (t->has_tele || t->has_sample)
                ingest_committed(d, t->dev, t->has_tele, t->tele_hw,
                                 t->has_sample, t->sample_hw, t->epoch);
            /* A late life's ack names its epoch: the device ignores it
             * unless that life is in fact its current one. Epoch 0 is never
             * acked this way: an ack without epoch is taken by any life. */
            if (t->has_late && t->late_epoch != 0 &&
                (t->late_tele || t->late_sample))
                ingest_committed(d, t->dev, t->late_tele, t->late_tele_hw,
                                 t->late_sample, t->late_sample_hw,
                                 t->late_epoch);
        }
    } else {
        s->stats.commit_errors++;
        /* The cap (max_page_count) or a full disk: make room. */
        if ((b->rc & 0xff) == SQLITE_FULL ||
            (b->rc & 0xff) == SQLITE_IOERR) {
            s->need_checkpoint = true;
            retention_kick(d);
        }
        s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_MIN_MS;
        if (s->backoff_ms > BACKOFF_MAX_MS)
            s->backoff_ms = BACKOFF_MAX_MS;
        s->retry_at_ms = tmld_now_ms(d) + s->backoff_ms;
        uint64_t now = tmld_now_ms(d);
        if (s->errors_logged_ms == 0 || now - s->errors_logged_ms >= 10000) {
            s->errors_logged_ms = now;
            log_err("store: batch of %zu records failed, nothing of it is "
                    "acked, retrying in %llu ms: %s",
                    b->n, (unsigned long long)s->backoff_ms, b->err);
        }
    }
    while (b->head != NULL) {
        struct rec *r = b->head;
        b->head = r->next;
        if (r->kind == REC_JOB && r->u.job.done != NULL)
            r->u.job.done(d, b->rc == SQLITE_OK ? r->u.job.status : -EIO,
                          r->u.job.arg);
        rec_free(r);
    }
    free(b->t);
    free(b);
    arm(s);
}

static void
start_batch(struct store *s)
{
    struct tmld *d = s->d;
    size_t max = (size_t)d->set.db_batch_records * BATCH_MAX_FACTOR;
    size_t n = s->n_pending < max ? s->n_pending : max;
    size_t cap = 16;
    while (cap < 2 * n)
        cap <<= 1;
    struct batch *b = calloc(1, sizeof(*b));
    struct touched *t = b ? calloc(cap, sizeof(*t)) : NULL;
    if (t == NULL) {
        free(b);
        log_err("store: out of memory for a batch; retrying");
        s->retry_at_ms = tmld_now_ms(d) + BACKOFF_MIN_MS;
        return;
    }
    b->s = s;
    b->t = t;
    b->t_cap = cap;
    b->head = s->head;
    struct rec *last = s->head;
    for (size_t i = 1; i < n; i++)
        last = last->next;
    s->head = last->next;
    last->next = NULL;
    if (s->head == NULL)
        s->tail = NULL;
    s->n_pending -= n;
    s->first_pending_ms = s->n_pending ? tmld_now_ms(d) : 0;
    s->urgent = s->urgent && s->n_pending > 0;
    b->n = n;
    b->work.data = b;
    s->is_in_flight = true;
    int rc = uv_queue_work(d->loop, &b->work, work_cb, after_work_cb);
    if (rc != 0) {
        /* Cannot happen with a valid loop; treat as a failed batch. */
        log_err("store: uv_queue_work: %s", uv_strerror(rc));
        b->rc = SQLITE_ERROR;
        after_work_cb(&b->work, rc);
    }
}

static void
timer_cb(uv_timer_t *t)
{
    struct store *s = t->data;
    if (s->is_in_flight || s->n_pending == 0)
        return;
    start_batch(s);
}

/* Decides when the next batch starts: now, at batch_ms after the oldest
 * pending record, or after the failure backoff. */
static void
arm(struct store *s)
{
    struct tmld *d = s->d;
    if (s->is_in_flight || s->n_pending == 0 || s->is_closed)
        return;
    uint64_t now = tmld_now_ms(d);
    uint64_t at = s->first_pending_ms + d->set.db_batch_ms;
    if (s->n_pending >= d->set.db_batch_records || d->is_stopping ||
        s->urgent)
        at = now;
    if (s->retry_at_ms > at)
        at = s->retry_at_ms;
    if (at <= now) {
        start_batch(s);
        return;
    }
    uv_timer_start(&s->timer, timer_cb, at - now, 0);
}

int
store_submit(struct tmld *d, struct rec *r)
{
    struct store *s = d->store;
    if (s == NULL || s->is_closed) {
        rec_free(r);
        return -ESHUTDOWN;
    }
    r->next = NULL;
    if (s->tail)
        s->tail->next = r;
    else
        s->head = r;
    s->tail = r;
    if (s->n_pending++ == 0)
        s->first_pending_ms = tmld_now_ms(d);
    if (!s->is_in_flight && !uv_is_active((uv_handle_t *)&s->timer))
        arm(s);
    else if (!s->is_in_flight && s->n_pending >= d->set.db_batch_records &&
             s->retry_at_ms <= tmld_now_ms(d)) {
        uv_timer_stop(&s->timer);
        start_batch(s);
    }
    return 0;
}

static int
submit_job(struct tmld *d, tmld_db_write_fn fn, tmld_db_done_fn done,
           void *arg, bool urgent)
{
    if (fn == NULL)
        return -EINVAL;
    if (d->store == NULL || d->store->is_closed)
        return -ESHUTDOWN;
    if (d->store->n_pending >= d->set.db_queue_max)
        return -ENOSPC;
    struct rec *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->kind = REC_JOB;
    r->u.job.fn = fn;
    r->u.job.done = done;
    r->u.job.arg = arg;
    if (urgent && !d->store->urgent) {
        /* The batch timer may be waiting out db.batch_ms for records
         * queued before: start now (or right after the batch in flight). */
        d->store->urgent = true;
        uv_timer_stop(&d->store->timer);
    }
    return store_submit(d, r);
}

int
tmld_db_write(struct tmld *d, tmld_db_write_fn fn, tmld_db_done_fn done,
              void *arg)
{
    return submit_job(d, fn, done, arg, false);
}

int
tmld_db_write_now(struct tmld *d, tmld_db_write_fn fn, tmld_db_done_fn done,
                  void *arg)
{
    return submit_job(d, fn, done, arg, true);
}

void
store_flush(struct tmld *d)
{
    struct store *s = d->store;
    if (s == NULL)
        return;
    uv_timer_stop(&s->timer);
    s->retry_at_ms = 0;
    arm(s);
}

bool
store_idle(struct tmld *d)
{
    struct store *s = d->store;
    return s == NULL || (!s->is_in_flight && s->n_pending == 0);
}

size_t
store_queued(struct tmld *d)
{
    return d->store ? d->store->n_pending : 0;
}

const struct store_stats *
store_stats(struct tmld *d)
{
    return &d->store->stats;
}

static void
free_store(uv_handle_t *h)
{
    free(h->data);
}

void
store_close(struct tmld *d)
{
    struct store *s = d->store;
    if (s == NULL)
        return;
    s->is_closed = true;
    /* Records still queued were never committed, so never acked: dropping
     * them loses nothing (the devices still hold them). */
    while (s->head) {
        struct rec *r = s->head;
        s->head = r->next;
        if (r->kind == REC_JOB && r->u.job.done)
            r->u.job.done(d, -ESHUTDOWN, r->u.job.arg);
        rec_free(r);
    }
    s->tail = NULL;
    s->n_pending = 0;
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(s->st[i]);
    if (s->rdb)
        sqlite3_close(s->rdb);
    if (s->wdb) {
        /* A clean close checkpoints and removes the WAL. */
        if (sqlite3_close(s->wdb) != SQLITE_OK)
            log_warn("store: close: %s", sqlite3_errmsg(s->wdb));
    }
    d->store = NULL;
    if (uv_is_closing((uv_handle_t *)&s->timer) || s->timer.loop == NULL) {
        free(s);
        return;
    }
    uv_close((uv_handle_t *)&s->timer, free_store);
}
