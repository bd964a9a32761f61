/*
 * retention.c: keeps the database within its bounds ([retention], [db]
 * max_size). Every [retention] interval (and soon after a commit failed
 * because the database is full) one write job runs in the writer's
 * transaction and, in bounded steps:
 *   1. rolls telemetry older than tele_days up into tele_hourly (per device,
 *      hour and model version) and deletes the rolled-up rows;
 *   2. evicts samples beyond samples_max (their total is one row,
 *      samples_bytes, kept by triggers), oldest first, keeping the ones the
 *      application flagged as misclassified longest;
 *   3. prunes the hourly aggregates (tele_hour and tele_hour_ids of
 *      db/0002_query.sql, tele_hourly of step 1) older than rollup_days;
 *   4. if the file's used pages pass 90 % of max_size, rolls up and evicts the
 *      oldest telemetry and samples regardless of age until under 80 %, and
 *      when nothing of those is left, prunes the oldest day of aggregates.
 * SQLite's max_page_count (set from max_size in store.c) is what makes the
 * cap hard: an insert past it fails, its batch is not acked, and this job
 * makes room. Deletes go to the WAL, which is outside max_page_count, so
 * room can always be made.
 * Each step touches at most STEP_ROWS rows per pass and MAX_PASSES passes per
 * run so that the job never holds the writer for long; the next run goes on.
 * Every delete is driven by a primary key (tele by rowid, tele_hour by its
 * hour-first key, tele_hourly per device through devices), so a run that
 * finds nothing to do reads a few pages, not whole tables.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "retention.h"

#define STEP_ROWS 5000
#define MAX_PASSES 20

/* [retention] rollup_days: validated by ret_check before init reads it. */
#define ROLLUP_DAYS_DEFAULT 365
#define ROLLUP_DAYS_MAX 36500

struct ret_job {
    int64_t now_s;
    int64_t cutoff_s;
    int64_t rollup_cutoff_hour; /* aggregates of hours below it go */
    uint64_t samples_max;
    uint64_t cap_bytes;
    int64_t rolled, samples_evicted, pressure_rolled, pruned;
    bool is_full_pressure;
};

struct retention {
    struct tmld_timer *timer;
    bool is_running;
    bool is_kicked;
    int64_t rollup_days;
    uint64_t rolled, evicted, pruned;
};

static struct retention *ret_state;

static int
exec1(sqlite3 *db, const char *sql, int64_t a, int64_t *changes)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_bind_int64(st, 1, a);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (changes)
        *changes = sqlite3_changes64(db);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static int64_t
qint(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Rolls up and deletes the old rows (recv_at < before) among the oldest
 * STEP_ROWS tele rows (by rowid, which follows arrival). Only that head is
 * read: filtering the whole table for old rows scanned all of tele (10 M
 * rows on a gateway with a long tele_days) on every run, inside the
 * writer's transaction, even when nothing was old. Returns rows moved or a
 * negative SQLite code. */
static int64_t
rollup_step(sqlite3 *db, int64_t before)
{
    int64_t maxid = 0;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT max(id) FROM (SELECT id, recv_at "
                                "FROM tele ORDER BY id LIMIT 5000) WHERE "
                                "recv_at < ?1",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return -rc;
    sqlite3_bind_int64(st, 1, before);
    if (sqlite3_step(st) == SQLITE_ROW)
        maxid = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (maxid <= 0)
        return 0;
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "INSERT INTO tele_hourly(device_id, hour, model_version, "
             "summaries, n_inferences, n_low_conf, n_flagged, n_errors, "
             "lat_sum_us) SELECT device_id, recv_at / 3600, model_version, "
             "count(*), sum(n_inferences), sum(n_low_conf), sum(n_flagged), "
             "sum(n_errors), sum(lat_mean_us * n_inferences) FROM tele WHERE "
             "id <= %lld AND recv_at < ?1 GROUP BY 1, 2, 3 "
             "ON CONFLICT(device_id, hour, model_version) DO UPDATE SET "
             "summaries = summaries + excluded.summaries, n_inferences = "
             "n_inferences + excluded.n_inferences, n_low_conf = n_low_conf "
             "+ excluded.n_low_conf, n_flagged = n_flagged + "
             "excluded.n_flagged, n_errors = n_errors + excluded.n_errors, "
             "lat_sum_us = lat_sum_us + excluded.lat_sum_us",
             (long long)maxid);
    rc = exec1(db, sql, before, NULL);
    if (rc != SQLITE_OK && rc != SQLITE_FULL)
        return -rc;
    /* When even the rollup does not fit (database at its cap), the rows
     * are deleted without it: the cap wins over old telemetry. */
    snprintf(sql, sizeof(sql),
             "DELETE FROM tele WHERE id <= %lld AND recv_at < ?1",
             (long long)maxid);
    int64_t n = 0;
    rc = exec1(db, sql, before, &n);
    return rc == SQLITE_OK ? n : -rc;
}

/* Deletes the oldest samples worth about excess bytes (at most 1000 rows),
 * non-flagged first. */
static int64_t
evict_step(sqlite3 *db, int64_t excess)
{
    int64_t avg = qint(db, "SELECT coalesce(avg(length(data)), 1) FROM "
                           "(SELECT data FROM samples ORDER BY id LIMIT 100)");
    int64_t rows = avg > 0 ? (excess + avg - 1) / avg : 1;
    if (rows < 1)
        rows = 1;
    if (rows > 1000)
        rows = 1000;
    char sql[256];
    snprintf(sql, sizeof(sql),
             "DELETE FROM samples WHERE id IN (SELECT id FROM samples WHERE "
             "reason != ?1 ORDER BY id LIMIT %lld)",
             (long long)rows);
    int64_t n = 0;
    int rc = exec1(db, sql, TML_REASON_FLAGGED, &n);
    if (rc == SQLITE_OK && n == 0) {
        snprintf(sql, sizeof(sql),
                 "DELETE FROM samples WHERE id IN (SELECT id FROM samples "
                 "ORDER BY id LIMIT %lld + 0 * ?1)",
                 (long long)rows);
        rc = exec1(db, sql, 0, &n);
    }
    return rc == SQLITE_OK ? n : -rc;
}

/* The pruning statements (see retention.h): tele_hour's key starts with the
 * hour, an ordered range read; tele_hourly's starts with the device, so
 * the CROSS JOIN makes devices the outer loop (one key range per device)
 * instead of the scan of tele_hourly SQLite picks without statistics. */
const char *const retention_prune_sql[RETENTION_PRUNE_N] = {
    "DELETE FROM tele_hour WHERE (hour, device_id, model_version) IN "
    "(SELECT hour, device_id, model_version FROM tele_hour WHERE hour < ?1 "
    "ORDER BY hour LIMIT 5000)",
    "DELETE FROM tele_hour_ids WHERE hour IN (SELECT hour FROM "
    "tele_hour_ids WHERE hour < ?1 ORDER BY hour LIMIT 5000)",
    "DELETE FROM tele_hourly WHERE (device_id, hour, model_version) IN "
    "(SELECT h.device_id, h.hour, h.model_version FROM devices d CROSS JOIN "
    "tele_hourly h ON h.device_id = d.id AND h.hour < ?1 LIMIT 5000)",
};

/* Deletes at most STEP_ROWS rows of each hourly aggregate table with
 * hour < before_hour, oldest hours first. Returns rows deleted or a negative
 * SQLite code. */
static int64_t
prune_step(sqlite3 *db, int64_t before_hour)
{
    int64_t total = 0;
    for (size_t i = 0; i < RETENTION_PRUNE_N; i++) {
        int64_t n = 0;
        int rc = exec1(db, retention_prune_sql[i], before_hour, &n);
        if (rc != SQLITE_OK)
            return -rc;
        total += n;
    }
    return total;
}

static int64_t
used_bytes(sqlite3 *db)
{
    return (qint(db, "PRAGMA page_count") -
            qint(db, "PRAGMA freelist_count")) *
           qint(db, "PRAGMA page_size");
}

/* Runs on the writer thread inside the batch transaction. */
static int
ret_run(sqlite3 *db, void *arg)
{
    struct ret_job *j = arg;
    int64_t n;
    for (int i = 0; i < MAX_PASSES; i++) {
        n = rollup_step(db, j->cutoff_s);
        if (n < 0)
            return (int)-n;
        j->rolled += n;
        if (n < STEP_ROWS)
            break;
    }
    for (int i = 0; i < MAX_PASSES && j->samples_max > 0; i++) {
        /* Kept by db/0005_samples_bytes.sql's triggers: one row read. */
        int64_t total = qint(db, "SELECT total FROM samples_bytes");
        if ((uint64_t)total <= j->samples_max)
            break;
        n = evict_step(db, total - (int64_t)j->samples_max);
        if (n <= 0)
            break;
        j->samples_evicted += n;
    }
    for (int i = 0; i < MAX_PASSES; i++) {
        n = prune_step(db, j->rollup_cutoff_hour);
        if (n < 0)
            return (int)-n;
        j->pruned += n;
        if (n == 0)
            break;
    }
    /* Size pressure: 90 % of the cap triggers, 80 % is the goal. */
    int64_t used = used_bytes(db);
    if ((uint64_t)used * 10 >= j->cap_bytes * 9) {
        j->is_full_pressure = true;
        for (int i = 0; i < MAX_PASSES &&
                        (uint64_t)used_bytes(db) * 10 > j->cap_bytes * 8;
             i++) {
            int64_t a = evict_step(db, 256 * 1024);
            int64_t b = rollup_step(db, j->now_s + 1);
            if (a < 0 || b < 0)
                return (int)(a < 0 ? -a : -b);
            j->samples_evicted += a;
            j->pressure_rolled += b;
            if (a > 0 || b > 0)
                continue;
            /* Nothing raw is left to give up: the aggregates count against
             * the cap too, so the oldest day of them goes, before the
             * horizon. tele_hour holds every hour (0002 backfilled it). */
            int64_t oldest = qint(db, "SELECT coalesce(min(hour), -1) FROM "
                                      "tele_hour");
            int64_t c = oldest >= 0 ? prune_step(db, oldest + 24) : 0;
            if (c < 0)
                return (int)-c;
            j->pruned += c;
            if (c == 0)
                break;
        }
    }
    return 0;
}

static void ret_tick(struct tmld *d, void *arg);

static void
ret_done(struct tmld *d, int status, void *arg)
{
    struct ret_job *j = arg;
    struct retention *r = ret_state;
    if (r != NULL) {
        r->is_running = false;
        if (status == 0) {
            r->rolled += (uint64_t)(j->rolled + j->pressure_rolled);
            r->evicted += (uint64_t)j->samples_evicted;
            r->pruned += (uint64_t)j->pruned;
        }
    }
    if (status != 0)
        log_warn("retention: run failed (%d); next interval retries", status);
    else if (j->rolled || j->samples_evicted || j->pressure_rolled ||
             j->pruned)
        log_info("retention: rolled up %lld old summaries, evicted %lld "
                 "sample chunks, pruned %lld hourly aggregate rows%s",
                 (long long)(j->rolled + j->pressure_rolled),
                 (long long)j->samples_evicted, (long long)j->pruned,
                 j->is_full_pressure ? " (database near its max_size)" : "");
    free(j);
    if (r != NULL && r->is_kicked && !tmld_is_stopping(d)) {
        r->is_kicked = false;
        ret_tick(d, NULL);
    }
}

static void
ret_tick(struct tmld *d, void *arg)
{
    (void)arg;
    struct retention *r = ret_state;
    if (r == NULL || r->is_running)
        return;
    struct ret_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return;
    j->now_s = tmld_wall_s();
    j->cutoff_s = j->now_s - (int64_t)d->set.ret_tele_days * 86400;
    j->samples_max = d->set.ret_samples_bytes;
    j->rollup_cutoff_hour = (j->now_s - r->rollup_days * 86400) / 3600;
    j->cap_bytes = d->set.db_cap_bytes;
    if (tmld_db_write(d, ret_run, ret_done, j) != 0) {
        free(j);
        return;
    }
    r->is_running = true;
}

void
retention_kick(struct tmld *d)
{
    struct retention *r = ret_state;
    if (r == NULL)
        return;
    if (r->is_running)
        r->is_kicked = true;
    else
        ret_tick(d, NULL);
}

void
retention_stats(uint64_t *rolled, uint64_t *evicted)
{
    *rolled = ret_state ? ret_state->rolled : 0;
    *evicted = ret_state ? ret_state->evicted : 0;
}

uint64_t
retention_pruned(void)
{
    return ret_state ? ret_state->pruned : 0;
}

/* [retention] rollup_days: the horizon of the hourly aggregates. It must
 * cover tele_days, or whole hours of a window whose raw rows still exist
 * would vanish from tele.query (it reads whole hours from tele_hour). When
 * absent: ROLLUP_DAYS_DEFAULT, or tele_days if that is longer. */
static int
ret_check(struct tmld *d)
{
    int64_t days = 0;
    if (tmld_config_get(d, "retention", "rollup_days") == NULL)
        return 0;
    if (tmld_config_int(d, "retention", "rollup_days", ROLLUP_DAYS_DEFAULT, 1,
                        ROLLUP_DAYS_MAX, &days) != 0)
        return 1;
    /* tele_days itself is validated (and reported) by settings_load; this
     * check may run before it, so it parses the value quietly. */
    const char *td = tmld_config_get(d, "retention", "tele_days");
    char *end = NULL;
    long long tele_days = td ? strtoll(td, &end, 10) : 30;
    if ((td == NULL || (end != td && *end == '\0')) && days < tele_days) {
        tmld_config_error(d, "retention", "rollup_days",
                          "%lld is below tele_days (%lld): the hourly "
                          "aggregates must outlive the raw telemetry",
                          (long long)days, tele_days);
        return 1;
    }
    return 0;
}

static int
ret_init(struct tmld *d, void **state)
{
    struct retention *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    /* Validated by ret_check. */
    int64_t def = ROLLUP_DAYS_DEFAULT;
    if ((int64_t)d->set.ret_tele_days > def)
        def = (int64_t)d->set.ret_tele_days;
    if (tmld_config_int(d, "retention", "rollup_days", def, 1,
                        ROLLUP_DAYS_MAX, &r->rollup_days) != 0) {
        free(r);
        return -EINVAL;
    }
    ret_state = r;
    *state = r;
    /* First run soon after start, then every interval. */
    r->timer = tmld_timer_start(d, 2000, d->set.ret_interval_ms, ret_tick,
                                NULL);
    return r->timer ? 0 : -ENOMEM;
}

static void
ret_fini(struct tmld *d, void *state)
{
    (void)d;
    struct retention *r = state;
    tmld_timer_stop(r->timer);
    ret_state = NULL;
    free(r);
}

TMLD_MODULE_CHECKED(retention, ret_init, ret_fini, ret_check);
