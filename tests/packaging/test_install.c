/*
 * test_install.c: `cmake --install BUILD --prefix SCRATCH` puts every file in
 * its FHS place under that prefix, and the prefix-dependent files follow it:
 * the unit's ExecStart and config path, tmlagent.pc's prefix, the config in
 * PREFIX/etc/tmld. A second install keeps an edited config (idempotent).
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

static char out[128 * 1024];
static char text[64 * 1024];

/* The scratch prefix lives in *state so teardown removes it even when an
 * assertion ends the test early. */
static int setup(void **state)
{
    *state = pt_mkdtemp("tmld-install-");
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    if (!getenv("TML_KEEP_TMP"))
        pt_rmtree(*state);
    free(*state);
    return 0;
}

static void test_package_cmake_install_follows_prefix(void **state)
{
    const char *bin = pt_env("TML_BINARY_DIR", NULL);
    const char *dir = *state;
    char path[1024];
    char want[1024];
    struct stat st;
    int rc;

    assert_non_null(bin);
    rc = pt_runf(out, sizeof out, 300, "cmake --install '%s' --prefix '%s/p'", bin, dir);
    if (rc != 0)
        print_message("%s\n", out);
    assert_int_equal(rc, 0);

    snprintf(path, sizeof path, "%s/p/lib/systemd/system/tmld.service", dir);
    assert_true(pt_read_file(path, text, sizeof text) > 0);
    snprintf(want, sizeof want,
             "\nExecStart=%s/p/bin/tmld --config %s/p/etc/tmld/tmld.conf\n", dir, dir);
    assert_non_null(strstr(text, want));
    snprintf(path, sizeof path, "%s/p/lib/sysusers.d/tmlfleet.conf", dir);
    assert_int_equal(stat(path, &st), 0);
    snprintf(path, sizeof path, "%s/p/lib/tmpfiles.d/tmlfleet.conf", dir);
    assert_int_equal(stat(path, &st), 0);
    snprintf(path, sizeof path, "%s/p/include/tml/proto.h", dir);
    assert_int_equal(stat(path, &st), 0);
    snprintf(path, sizeof path, "%s/p/share/doc/tmlfleet/README.md", dir);
    assert_int_equal(stat(path, &st), 0);
#ifdef TML_HAVE_TMLD
    snprintf(path, sizeof path, "%s/p/bin/tmld", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_true(st.st_mode & 0100);
#endif
#ifdef TML_HAVE_TMLCTL
    snprintf(path, sizeof path, "%s/p/bin/tmlctl", dir);
    assert_int_equal(stat(path, &st), 0);
#endif
#ifdef TML_HAVE_PROTO_LIB
    snprintf(path, sizeof path, "%s/p/%s/pkgconfig/tmlagent.pc", dir, TML_LIBDIR);
    assert_true(pt_read_file(path, text, sizeof text) > 0);
    snprintf(want, sizeof want, "prefix=%s/p\n", dir);
    assert_non_null(strstr(text, want));
    assert_non_null(strstr(text, "-ltmlproto"));
#endif
#ifdef TML_HAVE_CONF_EXAMPLE
    snprintf(path, sizeof path, "%s/p/etc/tmld/tmld.conf", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0007, 0); /* not world-readable */
    /* Install again over an edited config: the edit survives. */
    rc = pt_runf(out, sizeof out, 10, "echo '# edited' >> '%s'", path);
    assert_int_equal(rc, 0);
    rc = pt_runf(out, sizeof out, 300, "cmake --install '%s' --prefix '%s/p'", bin, dir);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "Keeping existing"));
    assert_true(pt_read_file(path, text, sizeof text) > 0);
    assert_non_null(strstr(text, "# edited"));
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_package_cmake_install_follows_prefix, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("tmld_package_install", tests, NULL, NULL);
}
