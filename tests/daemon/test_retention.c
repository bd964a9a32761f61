/*
 * tmld_retention: the database stays within its bounds (daemon/
 * retention.c): old telemetry is rolled up into hourly aggregates with the
 * sums preserved, samples are kept within their byte budget with flagged
 * ones kept longest, and the file never grows past [db] max_size while every
 * record is still acknowledged (R9-style: the cap is a small "disk").
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "harness.h"

static int
setup_rollup(void **state)
{
    return th_fixture_start(state,
                            "[retention]\ninterval = 1s\ntele_days = 1\n");
}

static int
setup_budget(void **state)
{
    return th_fixture_start(state,
                            "[retention]\ninterval = 1s\nsamples_max = 16K\n");
}

static int
setup_cap(void **state)
{
    return th_fixture_start(state,
                            "[retention]\ninterval = 1s\nsamples_max = 0\n"
                            "[db]\nmax_size = 1M\n");
}

static void
test_retention_rolls_up_old_telemetry(void **state)
{
    struct th *t = *state;
    struct tdev v;
    assert_int_equal(tdev_open(&v, t, "old-timer", false), 0);
    for (uint32_t s = 1; s <= 40; s++)
        assert_int_equal(tdev_tele(&v, s), 0);
    assert_int_equal(tdev_wait_tele_ack(&v, 40, 5000), 0);
    int64_t inf = th_db_int(t, "SELECT sum(n_inferences) FROM tele");
    /* Age half of them by three days (tmld only ever sees real time). */
    sqlite3 *db = th_db(t);
    assert_int_equal(sqlite3_exec(db,
                                  "UPDATE tele SET recv_at = recv_at - 3 * "
                                  "86400 WHERE seq <= 20",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(th_wait_db(t, "SELECT count(*) FROM tele", 20, 8000), 0);
    assert_int_equal(th_db_int(t, "SELECT min(seq) FROM tele"), 21);
    assert_int_equal(th_db_int(t, "SELECT sum(summaries) FROM tele_hourly"),
                     20);
    /* Nothing is lost by the rollup: the sums carry over. */
    assert_int_equal(th_db_int(t, "SELECT (SELECT sum(n_inferences) FROM "
                                  "tele) + (SELECT sum(n_inferences) FROM "
                                  "tele_hourly)"),
                     inf);
    double rolled = 0;
    assert_int_equal(th_status_num(t, "retention.rolled_up", &rolled), 0);
    assert_int_equal((int)rolled, 20);
    tdev_close(&v);
}

static void
test_retention_keeps_samples_within_budget_flagged_longest(void **state)
{
    struct th *t = *state;
    struct tdev v;
    assert_int_equal(tdev_open(&v, t, "sampler", false), 0);
    /* 600 chunks of 64 bytes = 38 KB against a 16 KB budget; every tenth
     * one flagged (reason 1), the rest audit (3). */
    for (uint32_t s = 1; s <= 600; s++)
        assert_int_equal(tdev_sample(&v, s, s, s % 10 == 0 ? 1 : 3), 0);
    assert_int_equal(th_wait_status(t, "ingest.samples", 600, 10000), 0);
    uint64_t end = th_now_ms() + 8000;
    int64_t bytes = 0;
    while (th_now_ms() < end) {
        bytes = th_db_int(t, "SELECT sum(length(data)) FROM samples");
        if (bytes <= 16 * 1024)
            break;
        th_sleep_ms(100);
    }
    assert_true(bytes <= 16 * 1024);
    /* The trigger-kept total (db/0005) retention reads is exact. */
    assert_int_equal(th_db_int(t, "SELECT total FROM samples_bytes"),
                     th_db_int(t, "SELECT sum(length(data)) FROM samples"));
    /* All 60 flagged ones survive; the oldest audit ones went first. */
    assert_int_equal(th_db_int(t, "SELECT count(*) FROM samples WHERE "
                                  "reason = 1"),
                     60);
    assert_true(th_db_int(t, "SELECT min(seq) FROM samples WHERE reason = 3") >
                300);
    tdev_close(&v);
}

static void
test_retention_database_never_exceeds_max_size(void **state)
{
    struct th *t = *state;
    struct tdev v;
    assert_int_equal(tdev_open(&v, t, "flooder", false), 0);
    /* About 2.5 MB of telemetry through a 1 MiB database. */
    uint32_t total = 30000, next = 1;
    uint64_t last_check = 0;
    int64_t max_pages = 0;
    uint64_t end = th_now_ms() + 90000;
    int64_t max_size = 0;
    struct stat st;
    while (tdev_acked_tele(&v) < total && th_now_ms() < end) {
        uint32_t a = tdev_acked_tele(&v);
        if (next <= a)
            next = a + 1;
        while (next <= total && next - a <= 200)
            assert_int_equal(tdev_tele(&v, next++), 0);
        if (stat(t->db, &st) == 0 && st.st_size > max_size)
            max_size = st.st_size;
        if (th_now_ms() - last_check > 250) {
            int64_t p = th_db_int(t, "PRAGMA page_count");
            if (p > max_pages)
                max_pages = p;
            last_check = th_now_ms();
        }
        th_sleep_ms(5);
        static uint64_t last_move;
        static uint32_t last_a;
        if (a != last_a) {
            last_a = a;
            last_move = th_now_ms();
        } else if (th_now_ms() - last_move > 1500) {
            next = a + 1; /* go back N */
            last_move = th_now_ms();
        }
    }
    assert_int_equal(tdev_acked_tele(&v), total);
    assert_true(max_size <= 1024 * 1024);
    assert_true(max_pages * 4096 <= 1024 * 1024);
    int64_t rows = th_db_int(t, "SELECT count(*) FROM tele");
    int64_t rolled = th_db_int(t, "SELECT sum(summaries) FROM tele_hourly");
    /* Every acked record is either a row or inside an hourly aggregate. */
    assert_int_equal(rows + rolled, total);
    assert_true(rolled > 0);
    printf("# retention cap: %u records through max_size 1 MiB: file max "
           "%lld bytes, database max %lld pages, %lld rows kept, %lld rolled "
           "up, all acked\n",
           total, (long long)max_size, (long long)max_pages, (long long)rows,
           (long long)rolled);
    tdev_close(&v);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_retention_rolls_up_old_telemetry,
                                        setup_rollup, th_fixture_stop),
        cmocka_unit_test_setup_teardown(
            test_retention_keeps_samples_within_budget_flagged_longest,
            setup_budget, th_fixture_stop),
        cmocka_unit_test_setup_teardown(
            test_retention_database_never_exceeds_max_size, setup_cap,
            th_fixture_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
