/*
 * tmld_diskfaults: storage faults under ingest (TEST-CATALOGUE.md R7, R9).
 *   R7  SQLite I/O errors from a shim VFS (daemon/testvfs.c, test builds):
 *       a persistent fault (every write and fsync fails until cleared) and a
 *       transient sweep (the n-th write/fsync fails once, n = 1..K): no
 *       crash, no ack for a failed batch, recovery when the fault clears,
 *       every record stored exactly once, integrity_check ok.
 *   R9  disk full: the state directory is a 8 MiB tmpfs in a private mount
 *       namespace (unshare -m), filled up while devices send; then space is
 *       freed: no crash, nothing acked is lost, ingest resumes by itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "pump.h"

static bool
alive(struct th *t)
{
    int st;
    return t->tmld_pid > 0 && waitpid(t->tmld_pid, &st, WNOHANG) == 0;
}

static uint32_t
acked_sum(struct pdev *d, int n)
{
    uint32_t s = 0;
    for (int i = 0; i < n; i++)
        s += tdev_acked_tele(&d[i].v);
    return s;
}

/* Pumps for ms milliseconds (devices keep resending). */
static void
pump_for(struct pdev *d, int n, uint32_t total, int ms)
{
    uint64_t end = th_now_ms() + (uint64_t)ms;
    while (th_now_ms() < end) {
        pump_round(d, n, total);
        th_sleep_ms(2);
    }
}

static void
test_r7_persistent_io_error_acks_nothing_and_recovers(void **state)
{
    struct th *t = *state;
    char flag[400], envf[460];
    snprintf(flag, sizeof(flag), "%s/ioerr", t->dir);
    snprintf(envf, sizeof(envf), "TMLD_TEST_IOERR_FILE=%s", flag);
    const char *env[] = {envf, NULL};
    assert_int_equal(th_tmld_start(t, env, 10000), 0);
    enum { N = 3, TOTAL = 1500 };
    static struct pdev d[N];
    pump_open_devs(t, d, N, "r7");
    pump_pace = 1;
    pump_for(d, N, TOTAL, 800);
    FILE *f = fopen(flag, "w");
    assert_non_null(f);
    fclose(f);
    pump_for(d, N, TOTAL, 500); /* batches already committing may finish */
    uint32_t acked_during = acked_sum(d, N);
    pump_for(d, N, TOTAL, 2000);
    assert_int_equal(acked_sum(d, N), acked_during); /* no ack during fault */
    assert_true(alive(t));
    double errs = 0;
    assert_int_equal(th_status_num(t, "ingest.commit_errors", &errs), 0);
    assert_true(errs >= 1);
    assert_int_equal(pump_acked_lost(t, d, N), 0);
    unlink(flag);
    uint64_t t0 = th_now_ms();
    int rc = pump(t, d, N, TOTAL, 30000, NULL, NULL);
    pump_pace = 0;
    uint64_t resume = th_now_ms() - t0;
    if (rc != 0)
        th_dump_log(t);
    assert_int_equal(rc, 0);
    assert_int_equal(pump_acked_lost(t, d, N), 0);
    assert_int_equal(pump_dup_rows(t), 0);
    assert_int_equal(th_db_int(t, "SELECT count(*) FROM tele"), N * TOTAL);
    pump_assert_integrity(t);
    printf("# R7 sqlite-ioerr persistent: %d failed batches, 0 acks during "
           "the fault, 0 acked lost, 0 dup rows, completed %llu ms after the "
           "fault cleared, integrity ok\n",
           (int)errs, (unsigned long long)resume);
    pump_close_devs(d, N);
}

static void
test_r7_transient_io_error_sweep(void **state)
{
    struct th *t = *state;
    int k = pump_env_int("TMLD_R7_POINTS", 6);
    /* Migrate once without faults so that n counts ingest writes. */
    assert_int_equal(th_tmld_start(t, NULL, 10000), 0);
    th_tmld_stop(t, SIGTERM, 5000);
    enum { N = 2, TOTAL = 60 };
    static struct pdev d[N];
    int crashes = 0, failed_starts = 0;
    for (int n = 1; n <= k; n++) {
        char nth[64];
        snprintf(nth, sizeof(nth), "TMLD_TEST_IOERR_NTH=%d", n);
        const char *env[] = {nth, NULL};
        if (th_tmld_start(t, env, 10000) != 0) {
            /* A fault during start-up: tmld exits non-zero for systemd to
             * restart it; start it clean and go on. */
            failed_starts++;
            assert_int_equal(th_tmld_start(t, NULL, 10000), 0);
        }
        char prefix[32];
        snprintf(prefix, sizeof(prefix), "r7n%d", n);
        pump_open_devs(t, d, N, prefix);
        int rc = pump(t, d, N, TOTAL, 20000, NULL, NULL);
        if (rc != 0)
            th_dump_log(t);
        assert_int_equal(rc, 0);
        if (!alive(t))
            crashes++;
        assert_int_equal(pump_acked_lost(t, d, N), 0);
        pump_close_devs(d, N);
        th_tmld_stop(t, SIGTERM, 5000);
    }
    assert_int_equal(crashes, 0);
    assert_int_equal(pump_dup_rows(t), 0);
    assert_int_equal(th_db_int(t, "SELECT count(*) FROM tele"),
                     (int64_t)k * N * TOTAL);
    pump_assert_integrity(t);
    printf("# R7 sqlite-ioerr transient sweep: %d fault points x (write, "
           "fsync): 0 crashes, %d start-up exits, 0 acks for uncommitted "
           "rows, integrity ok\n",
           k, failed_starts);
}

static void
test_r9_disk_full_stops_acks_and_recovers(void **state)
{
    struct th *t = *state;
    if (system("unshare -m true 2>/dev/null") != 0)
        skip(); /* no mount namespaces here */
    char state_dir[300];
    snprintf(state_dir, sizeof(state_dir), "%s/state", t->dir);
    assert_int_equal(mkdir(state_dir, 0750), 0);
    /* th_tmld_spawn runs sh -c "<wrap> exec 'tmld' --config ...": the
     * inner shell mounts the tmpfs in its own mount namespace, drops the
     * word "exec" and execs tmld (same PID). */
    snprintf(t->wrap, sizeof(t->wrap),
             "exec unshare -m /bin/sh -c 'mount -t tmpfs -o size=8m tmpfs "
             "%s && shift && exec \"$@\"' sh",
             state_dir);
    assert_int_equal(th_tmld_start(t, NULL, 10000), 0);
    /* The test reads the database from inside tmld's mount namespace. */
    t->ns_pid = t->tmld_pid;
    /* Fill the tmpfs, leaving a little room. */
    char filler[460];
    snprintf(filler, sizeof(filler), "/proc/%d/root%s/filler", (int)t->tmld_pid,
             state_dir);
    int fd = open(filler, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    static char blk[65536];
    memset(blk, 0x55, sizeof(blk));
    size_t filled = 0;
    while (write(fd, blk, sizeof(blk)) == (ssize_t)sizeof(blk))
        filled += sizeof(blk);
    close(fd);
    assert_int_equal(truncate(filler, (off_t)(filled - 512 * 1024)), 0);

    enum { N = 3, TOTAL = 3000 };
    static struct pdev d[N];
    pump_open_devs(t, d, N, "r9");
    pump_pace = 2;
    pump_for(d, N, TOTAL, 6000);
    assert_true(alive(t));
    uint32_t acked_full = acked_sum(d, N);
    double errs = 0;
    assert_int_equal(th_status_num(t, "ingest.commit_errors", &errs), 0);
    assert_true(errs >= 1); /* the disk really filled up */
    assert_true(acked_full < N * TOTAL);
    assert_int_equal(pump_acked_lost(t, d, N), 0);
    uint64_t t0 = th_now_ms();
    assert_int_equal(unlink(filler), 0);
    int rc = pump(t, d, N, TOTAL, 40000, NULL, NULL);
    pump_pace = 0;
    uint64_t resume = th_now_ms() - t0;
    if (rc != 0)
        th_dump_log(t);
    assert_int_equal(rc, 0);
    assert_int_equal(pump_acked_lost(t, d, N), 0);
    assert_int_equal(pump_dup_rows(t), 0);
    assert_int_equal(th_db_int(t, "SELECT count(*) FROM tele"), N * TOTAL);
    assert_int_equal(th_db_int(t, "SELECT count(*) FROM "
                                  "pragma_integrity_check WHERE "
                                  "integrity_check = 'ok'"),
                     1);
    printf("# R9 disk-full (8 MiB tmpfs): %u of %d acked when the disk was "
           "full, %d failed batches, 0 acked lost, 0 dup rows; all %d stored "
           "%llu ms after space was freed\n",
           acked_full, N * TOTAL, (int)errs, N * TOTAL,
           (unsigned long long)resume);
    pump_close_devs(d, N);
}

int
main(void)
{
    if (getenv("TMLD_NO_HOOKS") != NULL) {
        printf("# tmld_diskfaults: needs TML_TEST_HOOKS; skipped\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_r7_persistent_io_error_acks_nothing_and_recovers,
            pump_setup_no_tmld, pump_teardown),
        cmocka_unit_test_setup_teardown(test_r7_transient_io_error_sweep,
                                        pump_setup_no_tmld, pump_teardown),
        cmocka_unit_test_setup_teardown(
            test_r9_disk_full_stops_acks_and_recovers, pump_setup_no_tmld,
            pump_teardown),
    };
    const char *only = getenv("TMLD_TEST_ONLY");
    if (only)
        cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
