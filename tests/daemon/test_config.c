/*
 * tmld_config: config loading and validation (daemon/config.c): every
 * problem is reported with file, line and key; TLS is required unless the
 * broker is declared on loopback (issue 7); units; tmld --check-config.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core.h"

static char errbuf[16384];

/* Loads text as a config, capturing what tmld logs; returns problems. */
static int
load(struct tmld *d, const char *text)
{
    memset(d, 0, sizeof(*d));
    fflush(stderr);
    char path[] = "/tmp/tmld_config_log.XXXXXX";
    int fd = mkstemp(path);
    int saved = dup(2);
    dup2(fd, 2);
    log_init(6);
    int n = conf_load_buf(&d->conf, "test.conf", text, strlen(text));
    n += settings_load(d, &d->set);
    dup2(saved, 2);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    ssize_t r = read(fd, errbuf, sizeof(errbuf) - 1);
    errbuf[r > 0 ? r : 0] = '\0';
    close(fd);
    unlink(path);
    return n;
}

static void
test_config_example_file_is_valid(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof(path), "%s/config/tmld.conf.example",
             getenv("TML_SOURCE_DIR") ? getenv("TML_SOURCE_DIR") : "../..");
    struct tmld d;
    memset(&d, 0, sizeof(d));
    assert_int_equal(conf_load(&d.conf, path), 0);
    assert_int_equal(settings_load(&d, &d.set), 0);
    assert_true(d.set.mqtt_tls);
    assert_true(d.set.db_sync_full);
    assert_int_equal(d.set.mqtt_keepalive_ms, 30000);
    assert_int_equal(d.set.db_cap_bytes, 1024ull * 1024 * 1024);
    assert_int_equal(d.set.offline_after_ms, 300000);
    assert_string_equal(d.set.ctl_socket, "/run/tmld/tmld.sock");
    conf_free(&d.conf);
}

static void
test_config_reports_unknown_key_with_line(void **state)
{
    (void)state;
    struct tmld d;
    assert_int_equal(load(&d, "[mqtt]\nhost = 127.0.0.1\n\nkeepaliv = 5s\n"),
                     1);
    assert_non_null(strstr(errbuf, "test.conf:4: [mqtt] keepaliv: unknown"));
    conf_free(&d.conf);
}

static void
test_config_reports_every_bad_value(void **state)
{
    (void)state;
    struct tmld d;
    int n = load(&d, "[mqtt]\nport = 70000\nkeepalive = 5 parsecs\n"
                     "[db]\nsynchronous = sometimes\nmax_size = 12Q\n"
                     "[log]\nlevel = loud\n");
    assert_int_equal(n, 5);
    assert_non_null(strstr(errbuf, "test.conf:2: [mqtt] port"));
    assert_non_null(strstr(errbuf, "test.conf:3: [mqtt] keepalive"));
    assert_non_null(strstr(errbuf, "test.conf:5: [db] synchronous: "
                                   "'sometimes' is not one of full, normal"));
    assert_non_null(strstr(errbuf, "test.conf:6: [db] max_size"));
    assert_non_null(strstr(errbuf, "test.conf:8: [log] level"));
    conf_free(&d.conf);
}

static void
test_config_parses_units(void **state)
{
    (void)state;
    struct tmld d;
    assert_int_equal(load(&d, "[mqtt]\nkeepalive = 2m\nreconnect_min = 500\n"
                              "[db]\nmax_size = 3G\nbatch_ms = 1s\n"
                              "[retention]\ntele_days = 7\nsamples_max = 10M\n"),
                     0);
    assert_int_equal(d.set.mqtt_keepalive_ms, 120000);
    assert_int_equal(d.set.mqtt_reconnect_min_ms, 500);
    assert_int_equal(d.set.db_cap_bytes, 3ull << 30);
    assert_int_equal(d.set.db_batch_ms, 1000);
    assert_int_equal(d.set.ret_tele_days, 7);
    assert_int_equal(d.set.ret_samples_bytes, 10u << 20);
    conf_free(&d.conf);
}

static void
test_config_refuses_plaintext_broker_unless_loopback_declared(void **state)
{
    (void)state;
    struct tmld d;
    assert_int_equal(load(&d, "[mqtt]\ntls = no\n"), 1);
    assert_non_null(strstr(errbuf, "[mqtt] tls: 'no' needs "
                                   "plaintext_loopback = yes"));
    conf_free(&d.conf);
    assert_int_equal(load(&d, "[mqtt]\nhost = 10.0.0.5\ntls = no\n"
                              "plaintext_loopback = yes\n"),
                     1);
    assert_non_null(strstr(errbuf, "test.conf:2: [mqtt] host: '10.0.0.5' is "
                                   "not a loopback address"));
    conf_free(&d.conf);
    assert_int_equal(load(&d, "[mqtt]\nhost = ::1\ntls = no\n"
                              "plaintext_loopback = yes\n"),
                     0);
    assert_false(d.set.mqtt_tls);
    conf_free(&d.conf);
}

static void
test_config_rejects_duplicates_long_lines_and_syntax(void **state)
{
    (void)state;
    struct tmld d;
    assert_true(load(&d, "[db]\npath = /a\npath = /b\n") >= 1);
    assert_non_null(strstr(errbuf, "test.conf:3: [db] path: set twice "
                                   "(first on line 2)"));
    conf_free(&d.conf);
    char longl[400];
    memset(longl, 'x', sizeof(longl));
    memcpy(longl, "[db]\npath = ", 12);
    longl[sizeof(longl) - 1] = '\0';
    assert_true(load(&d, longl) >= 1);
    assert_non_null(strstr(errbuf, "test.conf:2: line longer than"));
    conf_free(&d.conf);
    assert_true(load(&d, "[mqtt\nhost = x\n") >= 1);
    assert_non_null(strstr(errbuf, "test.conf:1: syntax error"));
    conf_free(&d.conf);
}

static void
test_config_keeps_module_sections_for_modules(void **state)
{
    (void)state;
    struct tmld d;
    assert_int_equal(load(&d, "[upstream]\nurl = https://x ; comment\n"), 0);
    assert_string_equal(tmld_config_get(&d, "upstream", "url"), "https://x");
    int64_t v = 0;
    assert_int_equal(tmld_config_int(&d, "upstream", "absent", 42, 0, 100, &v),
                     0);
    assert_int_equal(v, 42);
    conf_free(&d.conf);
}

static int
run_check(const char *text)
{
    char path[] = "/tmp/tmld_check.XXXXXX";
    int fd = mkstemp(path);
    assert_true(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "'%s/daemon/tmld' --check-config --config %s >/dev/null 2>&1",
             getenv("TML_BINARY_DIR") ? getenv("TML_BINARY_DIR") : "../..",
             path);
    int st = system(cmd);
    unlink(path);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void
test_config_check_config_exit_codes(void **state)
{
    (void)state;
    assert_int_equal(run_check("[mqtt]\nport = 1883\n"), 0);
    assert_int_equal(run_check("[mqtt]\nport = none\n"), 2);
    assert_int_equal(run_check("[mqtt]\ntls = no\n"), 2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_example_file_is_valid),
        cmocka_unit_test(test_config_reports_unknown_key_with_line),
        cmocka_unit_test(test_config_reports_every_bad_value),
        cmocka_unit_test(test_config_parses_units),
        cmocka_unit_test(
            test_config_refuses_plaintext_broker_unless_loopback_declared),
        cmocka_unit_test(test_config_rejects_duplicates_long_lines_and_syntax),
        cmocka_unit_test(test_config_keeps_module_sections_for_modules),
        cmocka_unit_test(test_config_check_config_exit_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
