/*
 * tmld_rollup_retention: the hourly aggregates (tele_hour and tele_hour_ids
 * of db/0002_query.sql, tele_hourly of the rollup) are pruned past
 * [retention] rollup_days, in bounded steps, while ingest goes on; at the
 * database cap they count like everything else and the oldest go first;
 * rollup_days is validated (below tele_days is refused with file, line and
 * key). Real tmld, real TLS mosquitto, real SQLite file.
 */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core.h"
#include "harness.h"
#include "retention.h"

static int
setup_horizon(void **state)
{
    return th_fixture_start(state, "[retention]\ninterval = 1s\ntele_days = 1\n"
                                   "rollup_days = 2\n");
}

static int
setup_cap(void **state)
{
    return th_fixture_start(state,
                            "[retention]\ninterval = 1s\nsamples_max = 0\n"
                            "[db]\nmax_size = 1M\n");
}

static void
insert_aggregates(struct th *t, int64_t h0, int n, int per_hour, int64_t dev0,
                  bool has_hourly)
{
    sqlite3 *db = th_db(t);
    assert_non_null(db);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_stmt *a = NULL, *b = NULL, *c = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO tele_hour VALUES (?1, "
                                        "?2, 1, 1, 10, 1, 0, 0, 5000)",
                                        -1, &a, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO tele_hourly VALUES (?2, "
                                        "?1, 1, 1, 10, 1, 0, 0, 5000)",
                                        -1, &b, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT OR IGNORE INTO tele_hour_ids "
                                        "VALUES (?1, 1, 1)",
                                        -1, &c, NULL),
                     SQLITE_OK);
    for (int i = 0; i < n; i++) {
        int64_t h = h0 - i / per_hour, dev = dev0 + i % per_hour;
        sqlite3_stmt *s[3] = {a, b, c};
        for (int k = 0; k < 3; k++) {
            if (k == 1 && !has_hourly)
                continue;
            sqlite3_bind_int64(s[k], 1, h);
            if (k < 2)
                sqlite3_bind_int64(s[k], 2, dev);
            assert_int_equal(sqlite3_step(s[k]), SQLITE_DONE);
            sqlite3_reset(s[k]);
        }
    }
    sqlite3_finalize(a);
    sqlite3_finalize(b);
    sqlite3_finalize(c);
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* The devices table drives tele_hourly's pruning (one key range per
 * device): the synthetic devices get rows like real ones. */
static void
insert_devices(struct th *t, int64_t dev0, int n)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k "
             "WHERE i + 1 < %d) INSERT INTO devices(id, name, first_seen, "
             "last_seen) SELECT %lld + i, 'synthetic-' || i, 0, 0 FROM k",
             n, (long long)dev0);
    sqlite3 *db = th_db(t);
    assert_non_null(db);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static int64_t
q(struct th *t, const char *fmt, int64_t a)
{
    char sql[512];
    snprintf(sql, sizeof(sql), fmt, (long long)a);
    return th_db_int(t, sql);
}

static void
test_rollup_retention_prunes_aggregates_past_horizon(void **state)
{
    struct th *t = *state;
    struct tdev v;
    assert_int_equal(tdev_open(&v, t, "hourly", false), 0);
    for (uint32_t s = 1; s <= 20; s++)
        assert_int_equal(tdev_tele(&v, s), 0);
    assert_int_equal(tdev_wait_tele_ack(&v, 20, 5000), 0);

    int64_t now_h = (int64_t)time(NULL) / 3600;
    insert_devices(t, 1000, 100);
    /* 6000 rows per table 10..12.5 days old (more than one step of 5000)
     * and 1000 rows 30..39 hours old, inside the 2-day horizon. */
    insert_aggregates(t, now_h - 240, 6000, 100, 1000, true);
    insert_aggregates(t, now_h - 30, 1000, 100, 1000, true);
    int64_t cutoff = now_h - 48;

    assert_int_equal(
        th_wait_db(t,
                   "SELECT (SELECT count(*) FROM tele_hour WHERE "
                   "hour < strftime('%s','now') / 3600 - 48) + "
                   "(SELECT count(*) FROM tele_hourly WHERE hour < "
                   "strftime('%s','now') / 3600 - 48) + (SELECT "
                   "count(*) FROM tele_hour_ids WHERE hour < "
                   "strftime('%s','now') / 3600 - 48)",
                   0, 10000),
        0);
    /* Inside the horizon everything stays, and so do the live rows. */
    assert_int_equal(q(t,
                       "SELECT count(*) FROM tele_hour WHERE hour >= %lld "
                       "AND device_id >= 1000",
                       cutoff),
                     1000);
    assert_int_equal(q(t,
                       "SELECT count(*) FROM tele_hourly WHERE hour >= "
                       "%lld",
                       cutoff),
                     1000);
    assert_int_equal(q(t,
                       "SELECT count(*) FROM tele_hour_ids WHERE hour "
                       "- %lld BETWEEN 0 AND 9",
                       now_h - 39),
                     10);
    assert_int_equal(th_db_int(t, "SELECT sum(summaries) FROM tele_hour WHERE "
                                  "device_id < 1000"),
                     20);
    double pruned = 0;
    assert_int_equal(th_status_num(t, "retention.aggregates_pruned", &pruned),
                     0);
    /* 6000 + 6000 rows and 60 hours of tele_hour_ids. */
    assert_int_equal((int64_t)pruned, 12060);

    /* Ingest is unaffected: more records, acked and in the rollup. */
    for (uint32_t s = 21; s <= 60; s++)
        assert_int_equal(tdev_tele(&v, s), 0);
    assert_int_equal(tdev_wait_tele_ack(&v, 60, 5000), 0);
    assert_int_equal(th_db_int(t, "SELECT count(*) FROM tele"), 60);
    assert_int_equal(th_db_int(t, "SELECT sum(summaries) FROM tele_hour WHERE "
                                  "device_id < 1000"),
                     60);
    printf("# rollup retention: 12060 aggregate rows past rollup_days = 2 "
           "pruned, 2010 inside the horizon kept, 60 records ingested "
           "around it\n");
    tdev_close(&v);
}

static void
test_rollup_retention_aggregates_count_against_the_cap(void **state)
{
    struct th *t = *state;
    struct tdev v;
    assert_int_equal(tdev_open(&v, t, "capped", false), 0);
    int64_t now_h = (int64_t)time(NULL) / 3600;
    insert_devices(t, 1000, 100);
    /* Aggregates only (all inside the default 365-day horizon), newest
     * hour first, until the used pages pass 92 % of the 1 MiB cap. tele_hour
     * alone: its hour-first key frees whole pages when old hours go. */
    int64_t used = 0, n_rows = 0;
    for (int k = 0; k < 100; k++) {
        used = th_db_int(t, "SELECT (SELECT page_count FROM "
                            "pragma_page_count) - (SELECT freelist_count FROM "
                            "pragma_freelist_count)");
        if (used * 4096 * 100 > 1024 * 1024 * 92)
            break;
        insert_aggregates(t, now_h - 1 - n_rows / 100, 1000, 100, 1000, false);
        n_rows += 1000;
    }
    int64_t oldest = now_h - n_rows / 100;
    assert_true(used * 4096 * 100 > 1024 * 1024 * 92);
    uint64_t end = th_now_ms() + 15000;
    while (th_now_ms() < end) {
        used = th_db_int(t, "SELECT (SELECT page_count FROM "
                            "pragma_page_count) - (SELECT freelist_count FROM "
                            "pragma_freelist_count)");
        if (used * 4096 * 10 <= 1024 * 1024 * 8)
            break;
        th_sleep_ms(200);
    }
    assert_true(used * 4096 * 10 <= 1024 * 1024 * 8);
    /* Oldest first: the newest hour is intact, the oldest day is gone. */
    assert_int_equal(
        q(t, "SELECT count(*) FROM tele_hour WHERE hour = %lld", now_h - 1),
        100);
    assert_true(q(t, "SELECT min(hour) FROM tele_hour WHERE hour >= %lld",
                  oldest) >= oldest + 24);
    /* Ingest goes on in the room made. */
    for (uint32_t s = 1; s <= 50; s++)
        assert_int_equal(tdev_tele(&v, s), 0);
    assert_int_equal(tdev_wait_tele_ack(&v, 50, 10000), 0);
    printf("# rollup retention at the cap: %lld aggregate rows filled 92 %% of "
           "a 1 MiB database, used pages down to %lld KiB, oldest day gone, "
           "newest hour kept, 50 records acked after\n",
           (long long)n_rows, (long long)(used * 4));
    tdev_close(&v);
}

static void
test_rollup_retention_rollup_days_validated(void **state)
{
    (void)state;
    char err[4096];
    assert_int_equal(
        th_check_config("[retention]\nrollup_days = 30\n", err, sizeof(err)),
        0);
    /* Default tele_days is 30. */
    assert_int_equal(
        th_check_config("[retention]\n\nrollup_days = 7\n", err, sizeof(err)),
        2);
    assert_non_null(strstr(err, "test.conf:3: [retention] rollup_days: 7 is "
                                "below tele_days (30)"));
    assert_int_equal(th_check_config("[retention]\nrollup_days = forever\n",
                                     err, sizeof(err)),
                     2);
    assert_non_null(strstr(err, "test.conf:2: [retention] rollup_days: "
                                "'forever' is not an integer"));
    assert_int_equal(
        th_check_config("[retention]\nrollup_days = 0\n", err, sizeof(err)), 2);
    /* Absent with a long tele_days: the default follows it. */
    assert_int_equal(
        th_check_config("[retention]\ntele_days = 3000\n", err, sizeof(err)),
        0);
}

/* Pruning reads by key: on a migrated database (no statistics, SQLite's
 * worst case) no statement scans tele_hour, tele_hour_ids or tele_hourly
 * (devices is the outer loop of the tele_hourly one, one key range per
 * device). */
static void
test_rollup_retention_prune_plans_use_keys(void **state)
{
    (void)state;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    assert_int_equal(store_migrate(db, ":memory:"), 0);
    for (size_t i = 0; i < RETENTION_PRUNE_N; i++) {
        char sql[1024], plan[2048] = "";
        snprintf(sql, sizeof(sql), "EXPLAIN QUERY PLAN %s",
                 retention_prune_sql[i]);
        sqlite3_stmt *st = NULL;
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        while (sqlite3_step(st) == SQLITE_ROW) {
            strncat(plan, (const char *)sqlite3_column_text(st, 3),
                    sizeof(plan) - strlen(plan) - 2);
            strcat(plan, ";");
        }
        sqlite3_finalize(st);
        printf("# prune %zu: %s\n", i, plan);
        assert_null(strstr(plan, "SCAN tele_hour"));
        assert_null(strstr(plan, "SCAN h"));
        assert_non_null(strstr(plan, "PRIMARY KEY"));
    }
    sqlite3_close(db);
}

/* db/0005_samples_bytes: the total is backfilled from the samples already
 * stored and follows inserts and deletes. */
static void
test_rollup_retention_samples_bytes_kept_by_triggers(void **state)
{
    (void)state;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    size_t before = 0;
    while (before < tmld_n_migrations && tmld_migrations[before].version < 5)
        before++;
    assert_int_equal(
        store_migrate_list(db, ":memory:", tmld_migrations, before), 0);
    static const char ins[] =
        "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k "
        "WHERE i < 50) INSERT INTO samples(device_id, seq, recv_at, "
        "sample_id, model_version, reason, predicted, confidence_bp, dtype, "
        "shape, rate_hz, total_len, offset, data) SELECT 1, i, 0, i, 1, 3, "
        "1, 5000, 1, '16', 16000, 100, 0, zeroblob(i) FROM k";
    assert_int_equal(sqlite3_exec(db, ins, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(store_migrate(db, ":memory:"), 0);
    sqlite3_stmt *st = NULL;
    static const char q[] = "SELECT (SELECT total FROM samples_bytes), "
                            "(SELECT coalesce(sum(length(data)), 0) FROM "
                            "samples)";
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
    static const char *const steps[] = {
        NULL, /* backfill: 1 + 2 + ... + 50 */
        "DELETE FROM samples WHERE seq <= 10",
        "UPDATE samples SET seq = seq + 100 WHERE seq > 45",
        "DELETE FROM samples",
    };
    int64_t want_total[] = {1275, 1220, 1220, 0};
    for (size_t i = 0; i < 4; i++) {
        if (steps[i] != NULL)
            assert_int_equal(sqlite3_exec(db, steps[i], NULL, NULL, NULL),
                             SQLITE_OK);
        if (i == 2)
            assert_int_equal(sqlite3_exec(db, ins, NULL, NULL, NULL),
                             SQLITE_OK); /* 50 more: 1220 + 1275 */
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        int64_t total = sqlite3_column_int64(st, 0);
        assert_int_equal(total, sqlite3_column_int64(st, 1));
        assert_int_equal(total, i == 2 ? 1220 + 1275 : want_total[i]);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rollup_retention_rollup_days_validated),
        cmocka_unit_test(test_rollup_retention_prune_plans_use_keys),
        cmocka_unit_test(test_rollup_retention_samples_bytes_kept_by_triggers),
        cmocka_unit_test_setup_teardown(
            test_rollup_retention_prunes_aggregates_past_horizon, setup_horizon,
            th_fixture_stop),
        cmocka_unit_test_setup_teardown(
            test_rollup_retention_aggregates_count_against_the_cap, setup_cap,
            th_fixture_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
