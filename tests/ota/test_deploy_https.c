/*
 * test_deploy_https.c: runs tests/ota/deploy_https.sh (`tmlctl deploy
 * https://...` against tests/ota/bundle_server.py, a real TLS broker,
 * tmld and one tml-devsim device) in its own process group with a
 * deadline, shows its output and checks every case reported its exit code.
 * The script kills what it starts on exit; this wrapper kills the whole
 * group if the deadline passes.
 *
 * Issue 8 (last Build bullet): a valid bundle reaches tmld's signature
 * check and plan; oversize bodies (with and without Content-Length) are cut
 * short; a certificate from another CA, plain http:// and a 404 are
 * refused; a bundle with a flipped signature bit is refused by tmld (S1).
 */
#define _GNU_SOURCE
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

#define DEADLINE_S 100

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

static void
test_ota_deploy_https(void **state)
{
    static char out[65536];
    const char *src = getenv("TML_SOURCE_DIR");
    char script[4096], *dir = ota_tmpdir("https");
    int fds[2], status = -1;
    size_t len = 0;
    time_t start = time(NULL);

    (void)state;
    assert_non_null(src);
    snprintf(script, sizeof(script), "%s/tests/ota/deploy_https.sh", src);
    assert_int_equal(pipe(fds), 0);
    child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        setpgid(0, 0);
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        execl("/bin/bash", "bash", script, dir, (char *)NULL);
        _exit(127);
    }
    setpgid(child, child);
    close(fds[1]);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    for (;;) { /* bounded by the deadline */
        ssize_t n = read(fds[0], out + len, sizeof(out) - 1 - len);
        if (n > 0) {
            len += (size_t)n;
            if (len == sizeof(out) - 1)
                len = 0; /* keep the tail */
            continue;
        }
        if (n == 0)
            break;
        if (time(NULL) - start > DEADLINE_S) {
            fprintf(stderr, "https: deadline of %d s passed\n", DEADLINE_S);
            kill(-child, SIGKILL);
            break;
        }
        usleep(50000);
    }
    out[len] = '\0';
    close(fds[0]);
    waitpid(child, &status, 0);
    kill(-child, SIGKILL); /* anything left in the group */
    child = 0;
    fputs(out, stderr);
    if (getenv("TMLD_TEST_KEEP") == NULL)
        ota_rmtree(dir);
    else
        fprintf(stderr, "https: kept %s\n", dir);
    free(dir);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
        skip();
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_non_null(strstr(out, "HTTPS ok valid exit=0"));
    assert_non_null(strstr(out, "HTTPS ok no_cacert exit=6"));
    assert_non_null(strstr(out, "HTTPS ok plain_http exit=2"));
    assert_non_null(strstr(out, "HTTPS ok big exit=7"));
    assert_non_null(strstr(out, "HTTPS ok stream exit=7"));
    assert_non_null(strstr(out, "HTTPS ok big_cut"));
    assert_non_null(strstr(out, "HTTPS ok stream_cut"));
    assert_non_null(strstr(out, "HTTPS ok wrong_ca exit=6"));
    assert_non_null(strstr(out, "HTTPS ok not_found exit=7"));
    assert_non_null(strstr(out, "HTTPS ok bad_signature exit=6"));
    assert_non_null(strstr(out, "HTTPS ok tampered exit=6"));
    assert_non_null(strstr(out, "HTTPS all ok"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ota_deploy_https),
    };

    atexit(kill_child);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
