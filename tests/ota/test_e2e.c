/*
 * test_e2e.c: runs tests/ota/e2e.sh (a real TLS broker, tmld and
 * tml-devsim devices) in its own process group with a deadline, shows its
 * E2E lines and checks that it reported success. The script kills what it
 * starts on exit; this wrapper kills the whole group if the deadline
 * passes, so nothing outlives a failed or hung run.
 *
 * Covers issue 5's rollout "must show" at small scale: a good model through
 * every wave with the image hash checked on every device, a bad model
 * stopped by the health gate at the canary wave with the canaries rolled
 * back, and S1 (a bundle from an untrusted key refused by tmld).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ota_testutil.h"

static pid_t child;

static void
kill_child(void)
{
    if (child > 0) {
        kill(-child, SIGKILL);
        waitpid(child, NULL, 0);
        child = 0;
    }
}

static int
run_script(const char *devices, const char *mode, int deadline_s, char *out,
           size_t cap)
{
    const char *src = getenv("TML_SOURCE_DIR");
    char script[4096], *dir = ota_tmpdir("e2e");
    int fds[2], status = -1;
    size_t len = 0;
    time_t start = time(NULL);

    assert_non_null(src);
    snprintf(script, sizeof(script), "%s/tests/ota/e2e.sh", src);
    assert_int_equal(pipe(fds), 0);
    child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        setpgid(0, 0);
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execl("/bin/bash", "bash", script, dir, devices, mode, (char *)NULL);
        _exit(127);
    }
    setpgid(child, child);
    close(fds[1]);
    /* Bounded by the deadline: read with a poll-like sleep loop. */
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    for (;;) {
        ssize_t n = read(fds[0], out + len, cap - 1 - len);
        if (n > 0) {
            len += (size_t)n;
            if (len == cap - 1)
                len = 0; /* keep the tail */
            continue;
        }
        if (n == 0)
            break;
        if (time(NULL) - start > deadline_s) {
            fprintf(stderr, "e2e: deadline of %d s passed\n", deadline_s);
            break;
        }
        usleep(50000);
    }
    out[len] = '\0';
    close(fds[0]);
    if (time(NULL) - start > deadline_s)
        kill(-child, SIGKILL);
    waitpid(child, &status, 0);
    kill(-child, SIGKILL); /* anything left in the group */
    child = 0;
    fputs(out, stderr);
    if (getenv("TMLD_TEST_KEEP") == NULL)
        ota_rmtree(dir);
    else
        fprintf(stderr, "e2e: kept %s\n", dir);
    free(dir);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void
test_ota_e2e_good_rolls_out_bad_is_stopped(void **state)
{
    static char out[65536];
    int rc;

    (void)state;
    rc = run_script("20", "basic", 150, out, sizeof(out));
    if (rc == 77)
        skip();
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "E2E OK"));
    assert_non_null(strstr(out, "confirmed=20 waves=3"));
    assert_non_null(strstr(out, "hash_ok=20"));
    assert_non_null(strstr(out, "stopped_at_wave=1"));
    assert_non_null(strstr(out, "later_waves_touched=0"));
}

/* Issue 5 faults at small scale: device reboots, tmld kill -9 and a
 * broker kill -9 + restart, all mid-rollout; the rollout completes. */
static void
test_ota_e2e_rollout_survives_faults(void **state)
{
    static char out[65536];
    int rc;

    (void)state;
    rc = run_script("20", "faults", 150, out, sizeof(out));
    if (rc == 77)
        skip();
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "E2E OK"));
    assert_non_null(strstr(out, "confirmed=20"));
    assert_non_null(strstr(out, "E2E power_cut dev="));
    assert_non_null(strstr(out, "E2E resent_bytes="));
}

/* Issue 5: a model raising the low-confidence rate about 3x (4.0x
 * measured) is stopped by the health gate with the default margins. Slow
 * (about 35 s of telemetry). */
static void
test_ota_e2e_threefold_low_confidence_is_stopped(void **state)
{
    static char out[65536];
    int rc;

    (void)state;
    rc = run_script("20", "threefold", 240, out, sizeof(out));
    if (rc == 77)
        skip();
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "E2E threefold_reason"));
    assert_non_null(strstr(out, "E2E OK"));
}

/* Issue 5, default-suite version of both pauses, reasons read from `tmlctl
 * rollout status`: a ~3x low-confidence model paused by the health gate at
 * the canary wave, and a model failing self-test on 30 % of the devices
 * (devsim selftest_fail_share) paused by the 10 % failure threshold at
 * wave 1 with later waves untouched. */
static void
test_ota_e2e_gates_pause_at_canary_wave(void **state)
{
    static char out[65536];
    int rc;

    (void)state;
    rc = run_script("30", "gates", 150, out, sizeof(out));
    if (rc == 77)
        skip();
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "E2E threefold_reason=\"low-confidence"));
    assert_non_null(strstr(out, "E2E selftest30_wall_s="));
    assert_non_null(strstr(out, "paused_at_wave=1"));
    assert_non_null(strstr(out, "mostly: self-test failed"));
    assert_non_null(strstr(out, "E2E OK"));
}

/* Issue 5 "must show": 500 devices in group turbines, a 64 KiB model:
 * every device confirms and every slot's image hash matches. Slow. */
static void
test_ota_e2e_500_devices_confirm(void **state)
{
    static char out[65536];
    int rc;

    (void)state;
    rc = run_script("500", "fleet", 600, out, sizeof(out));
    if (rc == 77)
        skip();
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "devices=500 confirmed=500 hash_ok=500"));
    assert_non_null(strstr(out, "E2E OK"));
}

/* Issue 5: `tmlctl rollback --group` puts the group back on the model it
 * ran before, re-signed by the operator as a higher version (anti-rollback
 * stays intact); without --key it is refused with the reason. */
static void
test_ota_e2e_rollback_redeploys_previous_model(void **state)
{
    static char out[65536];
    int rc;

    (void)state;
    rc = run_script("6", "rollback", 120, out, sizeof(out));
    if (rc == 77)
        skip();
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "E2E rollback_without_key_exit=2"));
    assert_non_null(strstr(out, "version=9 confirmed=6 image_v7_ok=6"));
    assert_non_null(strstr(out, "E2E OK"));
}

/* Issue 5: a device offline when deploy is issued is still a target (the
 * rollout runs until it is back and confirmed); a device joining the group
 * after the rollout finished and left tmld's memory gets the group's model, loaded again from the tables and
 * the artifact store on disk. */
static void
test_ota_e2e_late_device_served_from_store(void **state)
{
    static char out[65536];
    int rc;

    (void)state;
    rc = run_script("3", "late", 90, out, sizeof(out));
    if (rc == 77)
        skip();
    assert_int_equal(rc, 0);
    /* The flake of ota_e2e_faults: a device offline at deploy time. */
    assert_non_null(strstr(out, "E2E offline_at_deploy=sim-0003 "
                                "state_while_away=running"));
    assert_non_null(strstr(out, "confirmed_after_return=3"));
    assert_non_null(strstr(out, "E2E late_device=sim-0004"));
    assert_non_null(strstr(out, "hash_ok=1"));
    /* A rollout that only waits for an offline device is superseded by a
     * new deploy to its group, which then serves that device. */
    assert_non_null(strstr(out, "E2E superseded=2 "));
    assert_non_null(strstr(out, "v9_confirmed=4"));
    assert_non_null(strstr(out, "E2E OK"));
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest basic[] = {
        cmocka_unit_test(test_ota_e2e_good_rolls_out_bad_is_stopped),
    };
    const struct CMUnitTest faults[] = {
        cmocka_unit_test(test_ota_e2e_rollout_survives_faults),
    };
    const struct CMUnitTest threefold[] = {
        cmocka_unit_test(test_ota_e2e_threefold_low_confidence_is_stopped),
    };

    const struct CMUnitTest gates[] = {
        cmocka_unit_test(test_ota_e2e_gates_pause_at_canary_wave),
    };
    const struct CMUnitTest fleet[] = {
        cmocka_unit_test(test_ota_e2e_500_devices_confirm),
    };
    const struct CMUnitTest rollback[] = {
        cmocka_unit_test(test_ota_e2e_rollback_redeploys_previous_model),
    };
    const struct CMUnitTest late[] = {
        cmocka_unit_test(test_ota_e2e_late_device_served_from_store),
    };

    atexit(kill_child);
    if (argc > 1 && strcmp(argv[1], "gates") == 0)
        return cmocka_run_group_tests_name("ota_e2e_gates", gates, NULL,
                                           NULL);
    if (argc > 1 && strcmp(argv[1], "fleet") == 0)
        return cmocka_run_group_tests_name("ota_e2e_fleet500", fleet, NULL,
                                           NULL);
    if (argc > 1 && strcmp(argv[1], "rollback") == 0)
        return cmocka_run_group_tests_name("ota_e2e_rollback", rollback,
                                           NULL, NULL);
    if (argc > 1 && strcmp(argv[1], "late") == 0)
        return cmocka_run_group_tests_name("ota_e2e_late", late, NULL, NULL);
    if (argc > 1 && strcmp(argv[1], "faults") == 0)
        return cmocka_run_group_tests_name("ota_e2e_faults", faults, NULL,
                                           NULL);
    if (argc > 1 && strcmp(argv[1], "threefold") == 0)
        return cmocka_run_group_tests_name("ota_e2e_threefold", threefold,
                                           NULL, NULL);
    return cmocka_run_group_tests_name("ota_e2e", basic, NULL, NULL);
}
