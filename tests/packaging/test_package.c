/*
 * test_package.c: the Debian packages and `cmake --install` (issue 9).
 *
 * Builds the .debs of this build tree with cpack into a scratch directory,
 * then checks them the way an operator would meet them:
 *  - dpkg-deb -I: names, version, architecture, Depends (dpkg-shlibdeps +
 *    mosquitto), conffiles, maintainer scripts that enable nothing;
 *  - dpkg-deb -c: binaries, unit, sysusers/tmpfiles, config, headers, .a, .pc;
 *  - dpkg -x into a scratch root and run the installed tmld/tmlctl;
 *  - pkg-config from the extracted tree compiles and links a program against
 *    the codec;
 *  - dpkg --root=SCRATCH --force-script-chrootless -i/--purge: the real
 *    maintainer scripts create the tmld user, its directories and the
 *    conffile's permissions inside the scratch root, survive a reinstall and
 *    clean up on purge.
 * What cannot run here (a booted systemd, a Pi) is listed in
 * docs/packaging.md.
 *
 * Parts whose target has not been built (tmld, tmlctl, the libraries) are
 * checked only when CMake defined TML_HAVE_<X>.
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

#define OUT_CAP (256 * 1024)

/* A sanitizer build's libraries need the sanitizer runtime when linked. */
#ifdef TML_SANITIZED
#define SAN_FLAGS "-fsanitize=address,undefined"
#else
#define SAN_FLAGS ""
#endif

struct fx {
    char *dir;            /* scratch: out/ (debs), x/ (dpkg -x), root/ */
    const char *bin;      /* TML_BINARY_DIR */
    const char *src;      /* TML_SOURCE_DIR */
    char deb[1024];       /* tmlfleet_*.deb */
    char devdeb[1024];    /* libtmlagent-dev_*.deb */
    char arch[64];
    char out[OUT_CAP];
};


/* Trims trailing newlines in place. */
static void chomp(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

static int group_setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    int rc;

    if (!f)
        return -1;
    f->bin = pt_env("TML_BINARY_DIR", NULL);
    f->src = pt_env("TML_SOURCE_DIR", NULL);
    if (!f->bin || !f->src)
        return -1;
    if (!pt_have("cpack") || !pt_have("dpkg-deb")) {
        /* Without the tools every test skips (see need_tools()). */
        *state = f;
        return 0;
    }
    f->dir = pt_mkdtemp("tmld-package-");
    if (!f->dir)
        return -1;
    rc = pt_runf(f->out, sizeof f->out, 300,
                 "cpack --config '%s/CPackConfig.cmake' -G DEB -B '%s/out'",
                 f->bin, f->dir);
    if (rc != 0) {
        fprintf(stderr, "cpack failed (%d):\n%s\n", rc, f->out);
        pt_rmtree(f->dir); /* group teardown does not run after a failed setup */
        return -1;
    }
    if (pt_runf(f->deb, sizeof f->deb, 10, "ls '%s'/out/tmlfleet_*.deb", f->dir) != 0 ||
        pt_runf(f->devdeb, sizeof f->devdeb, 10, "ls '%s'/out/libtmlagent-dev_*.deb",
                f->dir) != 0 ||
        pt_runf(f->arch, sizeof f->arch, 10, "dpkg --print-architecture") != 0) {
        fprintf(stderr, "packages missing after cpack:\n%s\n", f->out);
        pt_rmtree(f->dir);
        return -1;
    }
    chomp(f->deb);
    chomp(f->devdeb);
    chomp(f->arch);
    *state = f;
    return 0;
}

static int group_teardown(void **state)
{
    struct fx *f = *state;

    if (f->dir && !getenv("TML_KEEP_TMP"))
        pt_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void need_tools(struct fx *f)
{
    if (!f->dir) {
        print_message("cpack or dpkg-deb not installed: skipped\n");
        skip();
    }
}

/* Asserts that the listing in f->out has a line ending in " ./path". */
static void assert_listed(struct fx *f, const char *path)
{
    char needle[512];

    snprintf(needle, sizeof needle, " .%s\n", path);
    if (!strstr(f->out, needle)) {
        print_message("not in package: %s\n", path);
        fail();
    }
}

static void test_package_control_fields(void **state)
{
    struct fx *f = *state;
    char want[256];

    need_tools(f);
    assert_int_equal(pt_runf(f->out, sizeof f->out, 30, "dpkg-deb -I '%s'", f->deb), 0);
    assert_non_null(strstr(f->out, "\n Package: tmlfleet\n"));
    snprintf(want, sizeof want, "\n Version: %s\n", TML_VERSION);
    assert_non_null(strstr(f->out, want));
    snprintf(want, sizeof want, "\n Architecture: %s\n", f->arch);
    assert_non_null(strstr(f->out, want));
    /* Depends: the shared libraries of the binaries (dpkg-shlibdeps) and the
     * broker. Print it: it goes into the issue note. */
    {
        const char *d = strstr(f->out, "\n Depends: ");
        char line[1024] = "";
        assert_non_null(d);
        sscanf(d + 1, " Depends: %1023[^\n]", line);
        print_message("tmlfleet Depends: %s\n", line);
        assert_non_null(strstr(line, "mosquitto"));
#ifdef TML_HAVE_TMLD
        assert_non_null(strstr(line, "libc6"));
        assert_non_null(strstr(line, "libuv1"));
        assert_non_null(strstr(line, "libsqlite3-0"));
        assert_non_null(strstr(line, "libmosquitto1"));
#endif
    }
    assert_non_null(strstr(f->out, " postinst "));
    assert_non_null(strstr(f->out, " prerm "));
    assert_non_null(strstr(f->out, " postrm "));
#ifdef TML_HAVE_CONF_EXAMPLE
    assert_non_null(strstr(f->out, " conffiles "));
#endif

    assert_int_equal(pt_runf(f->out, sizeof f->out, 30, "dpkg-deb -I '%s'", f->devdeb), 0);
    assert_non_null(strstr(f->out, "\n Package: libtmlagent-dev\n"));
    assert_non_null(strstr(f->out, "\n Section: libdevel\n"));
}

static void test_package_contents(void **state)
{
    struct fx *f = *state;

    need_tools(f);
    assert_int_equal(pt_runf(f->out, sizeof f->out, 30, "dpkg-deb -c '%s'", f->deb), 0);
    assert_listed(f, "/usr/lib/systemd/system/tmld.service");
    assert_listed(f, "/usr/lib/sysusers.d/tmlfleet.conf");
    assert_listed(f, "/usr/lib/tmpfiles.d/tmlfleet.conf");
    assert_listed(f, "/usr/share/doc/tmlfleet/README.md");
#ifdef TML_HAVE_TMLD
    assert_listed(f, "/usr/bin/tmld");
#endif
#ifdef TML_HAVE_TMLCTL
    assert_listed(f, "/usr/bin/tmlctl");
#endif
#ifdef TML_HAVE_DEVSIM
    assert_listed(f, "/usr/bin/tml-devsim");
#endif
#ifdef TML_HAVE_TMLCTL_MAN
    assert_listed(f, "/usr/share/man/man1/tmlctl.1");
#endif
#ifdef TML_HAVE_TMLD_MAN
    assert_listed(f, "/usr/share/man/man8/tmld.8");
#endif
#ifdef TML_HAVE_TMLCTL_COMPLETION
    assert_listed(f, "/usr/share/bash-completion/completions/tmlctl");
#endif
#ifdef TML_HAVE_CONF_EXAMPLE
    assert_listed(f, "/usr/share/doc/tmlfleet/examples/tmld.conf.example");
    assert_listed(f, "/etc/tmld/tmld.conf");
    /* The config is not world-readable even before postinst runs. */
    assert_non_null(strstr(f->out, "-rw-r----- root/root"));
#endif
    /* Nothing of the build machine leaks in. */
    assert_null(strstr(f->out, " ./usr/local/"));
    assert_null(strstr(f->out, " ./tmp/"));

    assert_int_equal(pt_runf(f->out, sizeof f->out, 30, "dpkg-deb -c '%s'", f->devdeb), 0);
    assert_listed(f, "/usr/include/tml/proto.h");
#ifdef TML_HAVE_AGENT_HEADERS
    assert_listed(f, "/usr/include/tml/agent.h");
    assert_listed(f, "/usr/include/tml/agent_port.h");
#endif
#ifdef TML_HAVE_PROTO_LIB
    assert_listed(f, "/usr/" TML_LIBDIR "/libtmlproto.a");
    assert_listed(f, "/usr/" TML_LIBDIR "/pkgconfig/tmlagent.pc");
#endif
#ifdef TML_HAVE_AGENT_LIB
    assert_listed(f, "/usr/" TML_LIBDIR "/libtmlagent.a");
#endif
}

/* The unit in the package is the hardened one with ExecStart=/usr/bin/tmld,
 * and the maintainer scripts create the user but enable/start nothing. */
static void test_package_unit_and_scripts(void **state)
{
    struct fx *f = *state;
    static char text[64 * 1024];
    char path[1200];
    const char *p;

    need_tools(f);
    assert_int_equal(pt_runf(f->out, sizeof f->out, 30,
                             "rm -rf '%s/x' && dpkg-deb -x '%s' '%s/x' && "
                             "dpkg-deb -e '%s' '%s/x/DEBIAN'",
                             f->dir, f->deb, f->dir, f->deb, f->dir), 0);
    snprintf(path, sizeof path, "%s/x/usr/lib/systemd/system/tmld.service", f->dir);
    assert_true(pt_read_file(path, text, sizeof text) > 0);
    assert_non_null(strstr(text, "\nExecStart=/usr/bin/tmld --config /etc/tmld/tmld.conf\n"));
    assert_non_null(strstr(text, "\nType=notify\n"));
    if (pt_have("systemd-analyze")) {
        double score = 99;
        int rc = pt_runf(f->out, sizeof f->out, 60,
                         "systemd-analyze security --offline=true --threshold=15 '%s'",
                         path);
        p = strstr(f->out, "Overall exposure level for tmld.service:");
        assert_non_null(p);
        assert_int_equal(sscanf(p, "Overall exposure level for tmld.service: %lf",
                                &score), 1);
        print_message("installed unit exposure: %.1f\n", score);
        assert_int_equal(rc, 0);
        assert_true(score <= 1.5);
    }

    snprintf(path, sizeof path, "%s/x/DEBIAN/postinst", f->dir);
    assert_true(pt_read_file(path, text, sizeof text) > 0);
    assert_non_null(strstr(text, "systemd-sysusers"));
    assert_non_null(strstr(text, "tmlfleet.conf"));
    /* No maintainer script enables or starts the service by itself. */
    assert_int_not_equal(pt_runf(f->out, sizeof f->out, 10,
                                 "grep -nE '^[[:space:]]*(systemctl|deb-systemd-helper|"
                                 "deb-systemd-invoke)[^#]*[[:space:]](enable|start|unmask)"
                                 "([[:space:]]|$)' '%s'/x/DEBIAN/postinst "
                                 "'%s'/x/DEBIAN/prerm '%s'/x/DEBIAN/postrm",
                                 f->dir, f->dir, f->dir), 0);
#ifdef TML_HAVE_CONF_EXAMPLE
    snprintf(path, sizeof path, "%s/x/DEBIAN/conffiles", f->dir);
    assert_true(pt_read_file(path, text, sizeof text) > 0);
    assert_non_null(strstr(text, "/etc/tmld/tmld.conf"));
#endif
}

/* dpkg -x both packages into one root and run what was installed. */
static void test_package_extracted_binaries_run(void **state)
{
    struct fx *f = *state;
    int rc;

    need_tools(f);
    rc = pt_runf(f->out, sizeof f->out, 60,
                 "rm -rf '%s/xr' && dpkg -x '%s' '%s/xr' && dpkg -x '%s' '%s/xr'",
                 f->dir, f->deb, f->dir, f->devdeb, f->dir);
    assert_int_equal(rc, 0);
#ifdef TML_HAVE_TMLD
    rc = pt_runf(f->out, sizeof f->out, 30, "'%s/xr/usr/bin/tmld' --version", f->dir);
    print_message("installed tmld --version: %s", f->out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(f->out, TML_VERSION));
#endif
#ifdef TML_HAVE_TMLCTL
    rc = pt_runf(f->out, sizeof f->out, 30, "'%s/xr/usr/bin/tmlctl' --help", f->dir);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(f->out, "usage: tmlctl"));
#endif
#ifdef TML_HAVE_DEVSIM
    rc = pt_runf(f->out, sizeof f->out, 30, "'%s/xr/usr/bin/tml-devsim' --help", f->dir);
    assert_int_equal(rc, 0);
#endif
#if !defined(TML_HAVE_TMLD) && !defined(TML_HAVE_TMLCTL)
    print_message("tmld/tmlctl not built yet: only the tree was checked\n");
#endif
}

/* The pkg-config file of libtmlagent-dev finds the headers and the codec. */
static void test_package_pkgconfig_builds_a_program(void **state)
{
    struct fx *f = *state;
#ifdef TML_HAVE_PROTO_LIB
    static const char prog[] =
        "#include <tml/proto.h>\n"
        "#include <stdio.h>\n"
        "#include <string.h>\n"
        "int main(void) {\n"
        "    const char *s = tml_strerror(TML_ERR_TRUNCATED);\n"
        "    if (!s || !strlen(s)) return 1;\n"
        "    printf(\"proto v%u: %s\\n\", (unsigned)TML_PROTO_VERSION, s);\n"
        "    return 0;\n"
        "}\n";
    char path[1200];
    int rc;

    need_tools(f);
    if (!pt_have("pkg-config") || !pt_have("cc"))
        skip();
    rc = pt_runf(f->out, sizeof f->out, 60,
                 "rm -rf '%s/pc' && mkdir -p '%s/pc' && dpkg -x '%s' '%s/pc/root'",
                 f->dir, f->dir, f->devdeb, f->dir);
    assert_int_equal(rc, 0);
    snprintf(path, sizeof path, "%s/pc/prog.c", f->dir);
    assert_int_equal(pt_write_file(path, prog, sizeof prog - 1), 0);
    rc = pt_runf(f->out, sizeof f->out, 120,
                 "cd '%s/pc' && export PKG_CONFIG_PATH='%s/pc/root/usr/%s/pkgconfig' && "
                 "pkg-config --exists tmlagent && "
                 "flags=$(pkg-config --define-variable=prefix='%s/pc/root/usr' "
                 "--cflags --libs tmlagent) && echo \"flags: $flags\" && "
                 "cc -std=c99 -Wall -Werror %s prog.c $flags -o prog && ./prog",
                 f->dir, f->dir, TML_LIBDIR, f->dir, SAN_FLAGS);
    print_message("%s", f->out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(f->out, "/pc/root/usr/include"));
    assert_non_null(strstr(f->out, "proto v1: "));
#else
    (void)f;
    print_message("libtmlproto not built yet: skipped\n");
    skip();
#endif
}

/* Install for real into a scratch root: dpkg runs the maintainer scripts on
 * this host with DPKG_ROOT set (--force-script-chrootless). */
static void test_package_dpkg_root_install_reinstall_purge(void **state)
{
    struct fx *f = *state;
    char root[1100];
    char path[1200];
    static char buf[16 * 1024];
    struct stat st;
    int rc;

    need_tools(f);
    if (!pt_have("dpkg") || !pt_have("systemd-sysusers")) {
        print_message("dpkg or systemd-sysusers missing: skipped\n");
        skip();
    }
    snprintf(root, sizeof root, "%s/root", f->dir);
    rc = pt_runf(f->out, sizeof f->out, 30,
                 "rm -rf '%s' && mkdir -p '%s/var/lib/dpkg/info' "
                 "'%s/var/lib/dpkg/updates' '%s/etc' && : > '%s/var/lib/dpkg/status'",
                 root, root, root, root, root);
    assert_int_equal(rc, 0);
#define DPKG "dpkg --root='%s' --force-depends --force-script-chrootless --log=/dev/null "
    rc = pt_runf(f->out, sizeof f->out, 120, DPKG "-i '%s' '%s'", root, f->deb, f->devdeb);
    print_message("%s", f->out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(f->out, "not enabled"));

    /* The user, from sysusers.d, inside the root only. */
    snprintf(path, sizeof path, "%s/etc/passwd", root);
    assert_true(pt_read_file(path, buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, "tmld:x:"));
    assert_non_null(strstr(buf, ":/var/lib/tmld:/usr/sbin/nologin\n"));
    /* State and runtime dirs, from tmpfiles.d, owned by tmld, mode 0750. */
    snprintf(path, sizeof path, "%s/var/lib/tmld", root);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0750);
    assert_int_not_equal(st.st_uid, 0);
#ifdef TML_HAVE_CONF_EXAMPLE
    {
        struct stat cs;
        snprintf(path, sizeof path, "%s/etc/tmld/tmld.conf", root);
        assert_int_equal(stat(path, &cs), 0);
        assert_int_equal(cs.st_mode & 07777, 0640);
        assert_int_equal(cs.st_uid, 0);
        assert_int_equal(cs.st_gid, st.st_gid); /* group tmld */
    }
#endif
    rc = pt_runf(f->out, sizeof f->out, 30, "dpkg --root='%s' -s tmlfleet libtmlagent-dev",
                 root);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(f->out, "Status: install ok installed"));
#ifdef TML_HAVE_CONF_EXAMPLE
    assert_non_null(strstr(f->out, "Conffiles:\n /etc/tmld/tmld.conf "));
#endif

    /* Reinstall = the upgrade path of the scripts; the user is not made twice
     * and a locally edited conffile is kept. */
#ifdef TML_HAVE_CONF_EXAMPLE
    snprintf(path, sizeof path, "%s/etc/tmld/tmld.conf", root);
    rc = pt_runf(f->out, sizeof f->out, 10, "echo '# local edit' >> '%s'", path);
    assert_int_equal(rc, 0);
#endif
    rc = pt_runf(f->out, sizeof f->out, 120,
                 DPKG "--force-confold -i '%s'", root, f->deb);
    assert_int_equal(rc, 0);
    snprintf(path, sizeof path, "%s/etc/passwd", root);
    assert_true(pt_read_file(path, buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, "tmld:x:"));
    assert_null(strstr(strstr(buf, "tmld:x:") + 1, "tmld:x:"));
#ifdef TML_HAVE_CONF_EXAMPLE
    snprintf(path, sizeof path, "%s/etc/tmld/tmld.conf", root);
    assert_true(pt_read_file(path, buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, "# local edit"));
#endif

    /* Purge removes state and config, keeps the user. */
    rc = pt_runf(f->out, sizeof f->out, 120, DPKG "--purge tmlfleet libtmlagent-dev", root);
    print_message("%s", f->out);
    assert_int_equal(rc, 0);
    snprintf(path, sizeof path, "%s/var/lib/tmld", root);
    assert_int_not_equal(stat(path, &st), 0);
    snprintf(path, sizeof path, "%s/etc/tmld", root);
    assert_int_not_equal(stat(path, &st), 0);
    snprintf(path, sizeof path, "%s/usr/lib/systemd/system/tmld.service", root);
    assert_int_not_equal(stat(path, &st), 0);
#undef DPKG
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_package_control_fields),
        cmocka_unit_test(test_package_contents),
        cmocka_unit_test(test_package_unit_and_scripts),
        cmocka_unit_test(test_package_extracted_binaries_run),
        cmocka_unit_test(test_package_pkgconfig_builds_a_program),
        cmocka_unit_test(test_package_dpkg_root_install_reinstall_purge),
    };
    return cmocka_run_group_tests_name("tmld_package", tests, group_setup,
                                       group_teardown);
}
