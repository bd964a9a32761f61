/*
 * test_systemd_real.c: tmld.service under a real systemd.
 *
 * CI has no systemd as PID 1, so this test boots one: a throw-away
 * systemd-nspawn container of this machine's own /usr (--volatile=yes: empty
 * tmpfs root, /etc and /var; private network; nothing persists), whose boot
 * target runs tests/packaging/systemd_real_driver.sh. The driver installs the
 * unit as the package does (sysusers, tmpfiles, a fleet PKI and broker from
 * tmlctl), then checks what only systemd itself can show:
 *  - `systemctl start` returns once READY=1 arrived; the process runs as
 *    user tmld with no capabilities, no_new_privs and a seccomp filter;
 *  - devices report through the sandboxed daemon and nothing is refused by
 *    the syscall filter (a short catalogue Y2);
 *  - the control socket admits a member of group tmld and refuses others
 *    (R16); `systemctl reload` keeps the process;
 *  - R14: a SIGSTOPped tmld misses its watchdog, is killed (SIGABRT) and
 *    restarted by systemd;
 *  - a clean stop exits 0 and removes /run/tmld;
 *  - Y3: a tmld that fails at start is restarted until StartLimitBurst and
 *    then left failed.
 * Skips where systemd-nspawn (Debian package systemd-container), unshare or
 * root are missing. The figures go into the issue note.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pkgtest.h"

#define OUT_CAP (256 * 1024)

static char out[OUT_CAP];
static char res[16 * 1024];

/* Value of KEY= in the driver's results, or "" (static buffer). */
static const char *val(const char *key)
{
    static char v[512];
    char pat[80];
    const char *p = res;
    size_t n = 0;

    v[0] = '\0';
    snprintf(pat, sizeof pat, "%s=", key);
    while ((p = strstr(p, pat)) != NULL) {
        if (p == res || p[-1] == '\n')
            break;
        p++;
    }
    if (!p)
        return v;
    p += strlen(pat);
    while (p[n] && p[n] != '\n' && n + 1 < sizeof v) {
        v[n] = p[n];
        n++;
    }
    v[n] = '\0';
    return v;
}

static void expect(const char *key, const char *want)
{
    const char *got = val(key);
    if (strcmp(got, want) != 0) {
        print_message("%s: got '%s', want '%s'\n", key, got, want);
        fail();
    }
}

static int write_text(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return pt_write_file(path, text, strlen(text));
}

/* The scratch dir lives in *state so teardown removes it even when an
 * assertion ends the test early. */
static int setup(void **state)
{
    *state = pt_mkdtemp("tmld-sdreal-");
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    if (!getenv("TML_KEEP_TMP"))
        pt_rmtree(*state);
    free(*state);
    return 0;
}

static void test_systemd_real_unit_under_systemd(void **state)
{
    const char *src = pt_env("TML_SOURCE_DIR", NULL);
    const char *bin = pt_env("TML_BINARY_DIR", NULL);
    const char *dir = *state;
    char lib[700], results[700], path[800];
    int rc;

    assert_non_null(src);
    assert_non_null(bin);
    if (geteuid() != 0 || !pt_have("systemd-nspawn") || !pt_have("unshare")) {
        print_message("needs root, unshare and systemd-nspawn (systemd-container): "
                      "skipped\n");
        skip();
    }
    snprintf(lib, sizeof lib, "%s/lib", dir);
    snprintf(results, sizeof results, "%s/results", dir);
    rc = pt_runf(out, sizeof out, 30,
                 "mkdir -p '%s/systemd/system' '%s/sysusers.d' '%s/tmpfiles.d' '%s' && "
                 /* The unit as shipped, but running the tmld of this build
                  * tree, bound at /opt/tmlbuild (not under /tmp: the unit
                  * has PrivateTmp=yes). */
                 "sed 's#^ExecStart=/usr/bin/tmld #ExecStart=/opt/tmlbuild/daemon/tmld #' "
                 "'%s/systemd/tmld.service' > '%s/systemd/system/tmld.service' && "
                 "grep -q '^ExecStart=/opt/tmlbuild/daemon/tmld ' '%s/systemd/system/tmld.service' && "
                 "cp '%s/systemd/tmlfleet.sysusers' '%s/sysusers.d/tmlfleet.conf' && "
                 "cp '%s/systemd/tmlfleet.tmpfiles' '%s/tmpfiles.d/tmlfleet.conf'",
                 lib, lib, lib, results, src, lib, lib, src, lib, src, lib);
    assert_int_equal(rc, 0);
    snprintf(path, sizeof path, "%s/systemd/system", lib);
    assert_int_equal(write_text(path, "tmltest.service",
                                "[Unit]\nDescription=tmlfleet systemd test driver\n"
                                "After=basic.target\n[Service]\nType=oneshot\n"
                                "Environment=TML_BIN=/opt/tmlbuild TML_SRC=/opt/tmlsrc\n"
                                "ExecStart=/bin/bash "
                                "/opt/tmlsrc/tests/packaging/systemd_real_driver.sh\n"
                                "TimeoutStartSec=150\n"),
                     0);
    assert_int_equal(write_text(path, "tmltest.target",
                                "[Unit]\nDescription=tmlfleet systemd test\n"
                                "Requires=basic.target tmltest.service\n"
                                "After=basic.target tmltest.service\n"),
                     0);

    /* nspawn wants /run/systemd/nspawn on a tmpfs: give it one in a private
     * mount namespace, so the host's mounts are untouched. The unit search
     * path /usr/local/lib/systemd/system (and sysusers.d, tmpfiles.d) is
     * where the unit under test appears inside the container. */
    rc = pt_runf(out, sizeof out, 200,
                 "unshare -m --propagation private sh -c '"
                 "mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn && "
                 "exec systemd-nspawn -q -D / --volatile=yes -b --console=pipe "
                 "--private-network --register=no --keep-unit --machine=tmlsd%d "
                 "--bind-ro=%s:/usr/local/lib --bind-ro=%s:/opt/tmlbuild "
                 "--bind-ro=%s:/opt/tmlsrc --bind=%s:/results "
                 "-- systemd.unit=tmltest.target systemd.firstboot=off' </dev/null",
                 (int)getpid(), lib, bin, src, results);
    snprintf(path, sizeof path, "%s/out.txt", results);
    if (pt_read_file(path, res, sizeof res) <= 0)
        res[0] = '\0';
    print_message("container exit %d; driver results:\n%s", rc, res);
    if (strcmp(val("finished"), "1") != 0 || rc != 0) {
        size_t n = strlen(out);
        print_message("nspawn output (tail):\n%s\n", n > 3000 ? out + n - 3000 : out);
    }
    expect("finished", "1");
    expect("user", "tmld:/var/lib/tmld:/usr/sbin/nologin");

    /* Type=notify: start returns when READY=1 came; the sandbox is on. */
    expect("start_rc", "0");
    expect("active", "active");
    expect("mainpid_user", "tmld");
    expect("sandbox_nnp", "1");
    expect("sandbox_seccomp", "2");
    expect("sandbox_capeff", "0000000000000000");
    expect("socket_mode", "660 tmld tmld");
    expect("state_dir", "750 tmld");
    assert_non_null(strstr(val("status_text"), "devices online"));

    /* Devices through the sandboxed daemon; the filter refused nothing. */
    if (access("tools/devsim/tml-devsim", X_OK) == 0 || val("devsim_rc")[0]) {
        unsigned acked = 0, sent = 0;
        expect("devsim_rc", "0");
        assert_int_equal(sscanf(val("devsim_acked"), "%u/%u", &acked, &sent), 2);
        assert_true(sent > 0);
        assert_int_equal(acked, sent);
        assert_true(atoi(val("metrics_tele")) > 0);
    }
    expect("eperm_lines", "0");

    /* R16: group tmld may use the socket, others get "unavailable" (5). */
    expect("ctl_alice", "0");
    expect("ctl_bob", "5");
    expect("reload_rc", "0");
    expect("reload_same_pid", "1");

    /* R14: watchdog kill and restart (WatchdogSec=2s in the test drop-in). */
    expect("watchdog_new_pid", "1");
    expect("watchdog_active", "active");
    assert_true(atoi(val("watchdog_logged")) >= 1);
    assert_true(atoi(val("watchdog_restart_ms")) < 10000);

    expect("stop_result", "success");
    expect("stop_status", "0");
    expect("runtime_dir_removed", "1");

    /* Y3: StartLimitBurst=10 stops a crash loop. */
    expect("storm_gave_up", "1");
    expect("storm_state", "failed");
    expect("storm_restarts", "10");

    /* val() returns one static buffer: one call per statement. */
    print_message("systemd: start returned after %s ms (READY=1)\n", val("start_ms"));
    print_message("systemd: watchdog restart %s ms after SIGSTOP (WatchdogSec=2s, "
                  "RestartSec=500ms)\n", val("watchdog_restart_ms"));
    print_message("systemd: crash loop stopped after %s restarts\n", val("storm_restarts"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_systemd_real_unit_under_systemd, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("tmld_systemd_real", tests, NULL, NULL);
}
