/*
 * test_systemd.c: checks of systemd/tmld.service and its companions that run
 * without a running systemd (this CI container has none as PID 1):
 *
 *  - Y1: `systemd-analyze security --offline=true --threshold=15` passes and
 *    the exposure it reports is <= 1.5;
 *  - `systemd-analyze verify` on a copy of the unit whose ExecStart points at
 *    the built tmld (or /bin/true while tmld has not landed) prints nothing;
 *  - every hardening directive issue 9 asks for is present;
 *  - sysusers.d creates the tmld user in a scratch root and tmpfiles.d
 *    creates /run/tmld and /var/lib/tmld owned by it.
 *
 * Tests skip when systemd-analyze is not installed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pkgtest.h"

#ifndef TMLD_EXE
#define TMLD_EXE "/bin/true"
#endif

#define OUT_CAP (64 * 1024)

struct fx {
    char *dir;          /* scratch dir */
    char unit[300];     /* source unit */
    char systemd[256];  /* source folder systemd/ */
    char out[OUT_CAP];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    const char *src = pt_env("TML_SOURCE_DIR", NULL);

    if (!f || !src)
        return -1;
    snprintf(f->systemd, sizeof f->systemd, "%s/systemd", src);
    snprintf(f->unit, sizeof f->unit, "%s/tmld.service", f->systemd);
    f->dir = pt_mkdtemp("tmld-systemd-");
    if (!f->dir)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    pt_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void need_systemd_analyze(void)
{
    if (!pt_have("systemd-analyze")) {
        print_message("systemd-analyze not installed: skipped\n");
        skip();
    }
}

/* Y1: the exposure score is at most 1.5 (threshold 15 = 1.5 * 10). */
static void test_systemd_security_exposure_at_most_1_5(void **state)
{
    struct fx *f = *state;
    const char *p;
    double score = 99.0;
    int rc;

    need_systemd_analyze();
    rc = pt_runf(f->out, sizeof f->out, 60,
                 "systemd-analyze security --offline=true --threshold=15 '%s'",
                 f->unit);
    p = strstr(f->out, "Overall exposure level for tmld.service:");
    assert_non_null(p);
    assert_int_equal(sscanf(p, "Overall exposure level for tmld.service: %lf",
                            &score), 1);
    print_message("Y1 systemd-analyze security: exposure %.1f (threshold 1.5)\n",
                  score);
    assert_true(score <= 1.5);
    assert_int_equal(rc, 0);
}

/* The threshold check itself can fail: a bare unit must be rejected, so a
 * passing Y1 above means something. */
static void test_systemd_security_rejects_bare_unit(void **state)
{
    struct fx *f = *state;
    char path[600];
    static const char bare[] = "[Unit]\nDescription=bare\n\n[Service]\n"
                               "ExecStart=/bin/true\n";
    int rc;

    need_systemd_analyze();
    snprintf(path, sizeof path, "%s/bare.service", f->dir);
    assert_int_equal(pt_write_file(path, bare, sizeof bare - 1), 0);
    rc = pt_runf(f->out, sizeof f->out, 60,
                 "systemd-analyze security --offline=true --threshold=15 '%s'",
                 path);
    assert_int_not_equal(rc, 0);
}

/* Copies the unit into the scratch dir as tmld.service with ExecStart=exe. */
static void copy_unit_with_exec(struct fx *f, const char *exe)
{
    char dst[600];
    int rc;

    snprintf(dst, sizeof dst, "%s/tmld.service", f->dir);
    rc = pt_runf(f->out, sizeof f->out, 10,
                 "sed 's#^ExecStart=/usr/bin/tmld #ExecStart=%s #' '%s' > '%s' "
                 "&& grep -q '^ExecStart=%s ' '%s'",
                 exe, f->unit, dst, exe, dst);
    assert_int_equal(rc, 0);
}

static void test_systemd_verify_is_clean(void **state)
{
    struct fx *f = *state;
    int rc;

    need_systemd_analyze();
    copy_unit_with_exec(f, TMLD_EXE);
    rc = pt_runf(f->out, sizeof f->out, 60,
                 "cd '%s' && systemd-analyze verify ./tmld.service", f->dir);
    if (f->out[0])
        print_message("systemd-analyze verify said:\n%s\n", f->out);
    assert_int_equal(rc, 0);
    /* verify exits 0 on unknown keys and bad values; it only warns. */
    assert_string_equal(f->out, "");
}

/* The verify check catches a typo (so the test above can fail). */
static void test_systemd_verify_flags_typo(void **state)
{
    struct fx *f = *state;
    int rc;

    need_systemd_analyze();
    copy_unit_with_exec(f, "/bin/true");
    rc = pt_runf(f->out, sizeof f->out, 60,
                 "cd '%s' && sed -i 's/^ProtectSystem=strict/ProtectSystem=stricto/' "
                 "tmld.service && systemd-analyze verify ./tmld.service",
                 f->dir);
    (void)rc;
    assert_non_null(strstr(f->out, "tmld.service"));
}

/* Every directive issue 9 and the catalogue's section 3 ask for. */
static void test_systemd_unit_has_required_directives(void **state)
{
    struct fx *f = *state;
    static const char *const want[] = {
        "Type=notify", "NotifyAccess=main", "WatchdogSec=", "Restart=on-failure",
        "User=tmld", "Group=tmld", "StateDirectory=tmld", "RuntimeDirectory=tmld",
        "ConfigurationDirectory=tmld", "NoNewPrivileges=yes",
        "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
        "PrivateDevices=yes", "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes", "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces=yes", "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes", "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=", "Wants=network-online.target mosquitto.service",
        "After=network-online.target mosquitto.service",
        "WantedBy=multi-user.target",
    };
    static char text[32 * 1024];
    size_t i;

    assert_true(pt_read_file(f->unit, text, sizeof text) > 0);
    for (i = 0; i < sizeof want / sizeof want[0]; i++) {
        char line[200];
        const char *p = text;
        int found = 0;

        snprintf(line, sizeof line, "\n%s", want[i]);
        /* A directive counts when it starts a line and is complete up to its
         * end of line (or is a prefix ending in '='). */
        while ((p = strstr(p, line)) != NULL) {
            char next = p[strlen(line)];
            if (next == '\n' || line[strlen(line) - 1] == '=') {
                found = 1;
                break;
            }
            p++;
        }
        if (!found)
            print_message("missing directive: %s\n", want[i]);
        assert_true(found);
    }
    /* CapabilityBoundingSet must be empty, not merely present. */
    assert_non_null(strstr(text, "\nCapabilityBoundingSet=\n"));
}

static void test_systemd_sysusers_and_tmpfiles_create_user_and_dirs(void **state)
{
    struct fx *f = *state;
    char path[600];
    struct stat st;
    static char buf[4096];
    int rc;

    if (!pt_have("systemd-sysusers") || !pt_have("systemd-tmpfiles")) {
        print_message("systemd-sysusers/tmpfiles not installed: skipped\n");
        skip();
    }
    rc = pt_runf(f->out, sizeof f->out, 30,
                 "mkdir -p '%s/root/etc' && systemd-sysusers --root='%s/root' "
                 "'%s/tmlfleet.sysusers' && systemd-tmpfiles --root='%s/root' "
                 "--create '%s/tmlfleet.tmpfiles'",
                 f->dir, f->dir, f->systemd, f->dir, f->systemd);
    if (rc != 0)
        print_message("%s\n", f->out);
    assert_int_equal(rc, 0);
    snprintf(path, sizeof path, "%s/root/etc/passwd", f->dir);
    assert_true(pt_read_file(path, buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, "tmld:x:"));
    assert_non_null(strstr(buf, ":/var/lib/tmld:/usr/sbin/nologin"));
    snprintf(path, sizeof path, "%s/root/run/tmld", f->dir);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0750);
    assert_int_not_equal(st.st_uid, 0);
    snprintf(path, sizeof path, "%s/root/var/lib/tmld", f->dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0750);
    assert_int_not_equal(st.st_uid, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_systemd_security_exposure_at_most_1_5,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_systemd_security_rejects_bare_unit,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_systemd_verify_is_clean, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_systemd_verify_flags_typo, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_systemd_unit_has_required_directives,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_systemd_sysusers_and_tmpfiles_create_user_and_dirs, setup,
            teardown),
    };
    return cmocka_run_group_tests_name("tmld_systemd", tests, NULL, NULL);
}
