/*
 * test_devsim_certs.c: device identities in tml-devsim.
 *
 *  - --ca-cert/--ca-key: the certificates devsim mints with mbedTLS verify
 *    against the CA with the openssl CLI, carry CN = device id, and their
 *    keys are mode 0600; a second run reuses them (the state directory is
 *    the cache) instead of minting new ones;
 *  - --certs DIR: certificates minted elsewhere (testbroker device, the
 *    openssl CLI) are used as DIR/<id>.crt + .key and the devices deliver;
 *  - a missing certificate stops devsim before it connects anything, with
 *    a message naming the file.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "rig.h"

struct fx {
    char dir[256];
    struct rig_summary sum;
    struct rig_broker broker;
    struct rig_gw gw;
    bool has_gw;
};

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    if (f == NULL || rig_tmpdir(f->dir, sizeof(f->dir)) != 0)
        return -1;
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;

    if (f->has_gw)
        rig_gw_stop(&f->gw);
    rig_broker_stop(&f->broker);
    rig_summary_free(&f->sum);
    if (getenv("TML_KEEP_TMP") == NULL)
        rig_rmtree(f->dir);
    free(f);
    return 0;
}

/* Runs devsim for 2 devices with the identity options in ident
 * (NULL-terminated). Returns its exit status. */
static int
run_devsim(struct fx *f, const char *prefix, const char *const *ident,
           const char *log)
{
    static char bin[600], sdir[300], json[300], port[16];
    const char *argv[48];
    size_t k = 0;
    pid_t pid;

    snprintf(sdir, sizeof(sdir), "%s/state", f->dir);
    snprintf(json, sizeof(json), "%s/summary.json", f->dir);
    snprintf(port, sizeof(port), "%d", f->broker.port);
    argv[k++] = rig_bin("tools/devsim/tml-devsim", bin, sizeof(bin));
    argv[k++] = "--port";
    argv[k++] = port;
    argv[k++] = "--cafile";
    argv[k++] = f->broker.ca;
    while (*ident)
        argv[k++] = *ident++;
    {
        static const char *const rest[] = {
            "--devices", "2", "--rate", "4", "--count", "4",
            "--summary-period", "1", "--drain", "30", "--status", "0", NULL};
        const char *const *r = rest;
        while (*r)
            argv[k++] = *r++;
    }
    argv[k++] = "--state-dir";
    argv[k++] = sdir;
    argv[k++] = "--prefix";
    argv[k++] = prefix;
    argv[k++] = "--json-summary";
    argv[k++] = json;
    argv[k] = NULL;
    pid = rig_spawn(argv, log);
    return pid > 0 ? rig_wait(pid, 60000) : -1;
}

static int
sh(const char *cmd)
{
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    pid_t pid = rig_spawn(argv, NULL);

    return pid > 0 ? rig_wait(pid, 30000) : -1;
}

static void
assert_delivered(struct fx *f)
{
    char json[300];
    uint32_t i;

    snprintf(json, sizeof(json), "%s/summary.json", f->dir);
    rig_summary_free(&f->sum);
    assert_int_equal(rig_summary_load(&f->sum, json), 0);
    assert_int_equal(f->sum.n, 2);
    for (i = 0; i < f->sum.n; i++) {
        assert_true(f->sum.devs[i].sent > 0);
        assert_int_equal(f->sum.devs[i].acked, f->sum.devs[i].sent);
    }
}

static void
test_minted_certificates_verify_and_are_cached(void **state)
{
    struct fx *f = *state;
    char log[300], cmd[2048], crt[400], key[400];
    struct stat st1, st2;

    assert_int_equal(rig_broker_start(&f->broker, f->dir), 0);
    assert_int_equal(rig_gw_start(&f->gw, &f->broker, "mc-", 1, 2, true), 0);
    f->has_gw = true;
    assert_true(rig_gw_wait_ready(&f->gw, 10000));
    snprintf(log, sizeof(log), "%s/devsim.log", f->dir);
    {
        const char *ident[] = {"--ca-cert", f->broker.ca, "--ca-key",
                               f->broker.ca_key, NULL};
        assert_int_equal(run_devsim(f, "mc-", ident, log), 0);
    }
    assert_delivered(f);

    snprintf(crt, sizeof(crt), "%s/state/mc-0001/device.crt", f->dir);
    snprintf(key, sizeof(key), "%s/state/mc-0001/device.key", f->dir);
    snprintf(cmd, sizeof(cmd),
             "openssl verify -CAfile '%s' '%s' >/dev/null && "
             "openssl x509 -in '%s' -noout -subject | grep -q 'CN *= *mc-0001'",
             f->broker.ca, crt, crt);
    assert_int_equal(sh(cmd), 0);
    assert_int_equal(stat(key, &st1), 0);
    assert_int_equal(st1.st_mode & 0777, 0600);
    assert_int_equal(stat(crt, &st1), 0);

    /* Second run: same files (not minted again), still delivers. A new
     * process is a reboot for every device: its seqs continue after the
     * skipped rest of a reserved block, so ack the high-water mark. */
    rig_gw_set_highwater(&f->gw, true);
    {
        const char *ident[] = {"--ca-cert", f->broker.ca, "--ca-key",
                               f->broker.ca_key, NULL};
        assert_int_equal(run_devsim(f, "mc-", ident, log), 0);
    }
    assert_delivered(f);
    assert_int_equal(stat(crt, &st2), 0);
    assert_int_equal(st1.st_ino, st2.st_ino);
    assert_int_equal(st1.st_mtime, st2.st_mtime);
}

static void
test_certs_dir_from_elsewhere_and_missing_cert(void **state)
{
    struct fx *f = *state;
    char log[300], pki[300], cmd[1200];
    char *text;

    assert_int_equal(rig_broker_start(&f->broker, f->dir), 0);
    assert_int_equal(rig_broker_device(&f->broker, "cd-0001"), 0);
    assert_int_equal(rig_broker_device(&f->broker, "cd-0002"), 0);
    assert_int_equal(rig_gw_start(&f->gw, &f->broker, "cd-", 1, 2, true), 0);
    f->has_gw = true;
    assert_true(rig_gw_wait_ready(&f->gw, 10000));
    snprintf(pki, sizeof(pki), "%s/pki", f->dir);
    snprintf(log, sizeof(log), "%s/devsim.log", f->dir);
    {
        const char *ident[] = {"--certs", pki, NULL};
        assert_int_equal(run_devsim(f, "cd-", ident, log), 0);
    }
    assert_delivered(f);

    /* The certificate of the second device disappears. */
    snprintf(cmd, sizeof(cmd), "rm -f '%s/cd-0002.crt'", pki);
    assert_int_equal(sh(cmd), 0);
    snprintf(log, sizeof(log), "%s/devsim-missing.log", f->dir);
    {
        const char *ident[] = {"--certs", pki, NULL};
        assert_int_not_equal(run_devsim(f, "cd-", ident, log), 0);
    }
    text = rig_slurp(log);
    assert_non_null(text);
    assert_non_null(strstr(text, "cd-0002.crt"));
    free(text);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_minted_certificates_verify_and_are_cached, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_certs_dir_from_elsewhere_and_missing_cert, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
