/*
 * tmld_migrate: schema migrations (db/, daemon/store.c) on real SQLite
 * files: from an empty database, from a previous version with data, with
 * owners' ranges interleaving (a lower-numbered file added later), a legacy
 * database known only by user_version, a database newer than tmld, and a
 * failing migration that must leave nothing behind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core.h"

static char path[64];

static int
setup(void **state)
{
    snprintf(path, sizeof(path), "/tmp/tmld_migrate.XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    close(fd);
    unlink(path);
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        return -1;
    *state = db;
    log_init(3);
    return 0;
}

static int
teardown(void **state)
{
    sqlite3_close(*state);
    unlink(path);
    return 0;
}

static int64_t
q(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static const struct tmld_migration v1[] = {
    {1, "0001_a", "CREATE TABLE a (x INTEGER);"},
};
static const struct tmld_migration v2[] = {
    {1, "0001_a", "CREATE TABLE a (x INTEGER);"},
    {2, "0002_b", "ALTER TABLE a ADD COLUMN y INTEGER DEFAULT 7;"},
};
static const struct tmld_migration v_ota[] = {
    {1, "0001_a", "CREATE TABLE a (x INTEGER);"},
    {100, "0100_ota", "CREATE TABLE ota (z INTEGER);"},
};
static const struct tmld_migration v_late[] = {
    {1, "0001_a", "CREATE TABLE a (x INTEGER);"},
    {3, "0003_late", "CREATE TABLE late (w INTEGER);"},
    {100, "0100_ota", "CREATE TABLE ota (z INTEGER);"},
};

static void
test_migrate_empty_database_to_embedded_schema(void **state)
{
    sqlite3 *db = *state;
    assert_int_equal(store_migrate(db, path), 0);
    int max = 0;
    for (size_t i = 0; i < tmld_n_migrations; i++)
        if (tmld_migrations[i].version > max)
            max = tmld_migrations[i].version;
    assert_int_equal(q(db, "PRAGMA user_version"), max);
    assert_int_equal(q(db, "SELECT count(*) FROM schema_migrations"),
                     (int64_t)tmld_n_migrations);
    assert_int_equal(q(db, "SELECT count(*) FROM sqlite_master WHERE name IN "
                           "('devices','tele','samples','stream_hw',"
                           "'device_groups','tele_hourly')"),
                     6);
    /* No per-device unique index on the record tables (issue 4). */
    assert_int_equal(q(db, "SELECT count(*) FROM sqlite_master WHERE type = "
                           "'index' AND tbl_name IN ('tele','samples')"),
                     0);
    /* Idempotent. */
    assert_int_equal(store_migrate(db, path), 0);
    assert_int_equal(q(db, "SELECT count(*) FROM schema_migrations"),
                     (int64_t)tmld_n_migrations);
}

static void
test_migrate_previous_version_keeps_data(void **state)
{
    sqlite3 *db = *state;
    assert_int_equal(store_migrate_list(db, path, v1, 1), 0);
    assert_int_equal(sqlite3_exec(db, "INSERT INTO a VALUES (1),(2)", NULL,
                                  NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(q(db, "PRAGMA user_version"), 1);
    assert_int_equal(store_migrate_list(db, path, v2, 2), 0);
    assert_int_equal(q(db, "PRAGMA user_version"), 2);
    assert_int_equal(q(db, "SELECT sum(x) + sum(y) FROM a"), 3 + 14);
}

static void
test_migrate_applies_lower_number_added_after_a_higher_one(void **state)
{
    sqlite3 *db = *state;
    assert_int_equal(store_migrate_list(db, path, v_ota, 2), 0);
    assert_int_equal(q(db, "PRAGMA user_version"), 100);
    assert_int_equal(store_migrate_list(db, path, v_late, 3), 0);
    assert_int_equal(q(db, "SELECT count(*) FROM sqlite_master WHERE name = "
                           "'late'"),
                     1);
    assert_int_equal(q(db, "PRAGMA user_version"), 100);
    assert_int_equal(q(db, "SELECT count(*) FROM schema_migrations"), 3);
}

static void
test_migrate_legacy_user_version_only(void **state)
{
    sqlite3 *db = *state;
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE a (x INTEGER); PRAGMA "
                                      "user_version = 1",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(store_migrate_list(db, path, v2, 2), 0);
    assert_int_equal(q(db, "PRAGMA user_version"), 2);
    assert_int_equal(q(db, "SELECT count(*) FROM schema_migrations"), 1);
}

static void
test_migrate_refuses_newer_database(void **state)
{
    sqlite3 *db = *state;
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 300", NULL, NULL,
                                  NULL),
                     SQLITE_OK);
    assert_int_equal(store_migrate_list(db, path, v_ota, 2), -EPROTO);
    assert_int_equal(q(db, "SELECT count(*) FROM sqlite_master WHERE name = "
                           "'a'"),
                     0);
}

static void
test_migrate_failure_rolls_back_completely(void **state)
{
    sqlite3 *db = *state;
    static const struct tmld_migration bad[] = {
        {1, "0001_a", "CREATE TABLE a (x INTEGER);"},
        {2, "0002_bad", "CREATE TABLE b (y); INSERT INTO nowhere VALUES (1);"},
    };
    assert_int_equal(store_migrate_list(db, path, bad, 2), -EIO);
    assert_int_equal(q(db, "PRAGMA user_version"), 1);
    assert_int_equal(q(db, "SELECT count(*) FROM sqlite_master WHERE name = "
                           "'b'"),
                     0);
    assert_int_equal(q(db, "SELECT count(*) FROM schema_migrations"), 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_migrate_empty_database_to_embedded_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_previous_version_keeps_data,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_migrate_applies_lower_number_added_after_a_higher_one, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_migrate_legacy_user_version_only,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_refuses_newer_database,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_migrate_failure_rolls_back_completely, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
