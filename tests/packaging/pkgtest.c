/*
 * pkgtest.c: process and file helpers for tests/packaging (see pkgtest.h).
 * Every child runs in its own process group so a timeout kills the command
 * and everything it started, by that group's id only.
 */
#define _GNU_SOURCE
#include "pkgtest.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int decode_status(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -1;
}

int pt_run(const char *cmd, char *out, size_t cap, int timeout_s,
           struct pt_result *res)
{
    struct pt_result r = {.exit_code = -1, .timed_out = false, .out_len = 0};
    int pfd[2];
    pid_t pid;
    double deadline = now_s() + timeout_s;
    bool killed = false;
    int st = 0;

    if (cap > 0)
        out[0] = '\0';
    if (pipe2(pfd, O_CLOEXEC) != 0)
        goto done;
    pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        goto done;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        setpgid(0, 0);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(pfd[1], 1);
        dup2(pfd[1], 2);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    close(pfd[1]);
    /* Read until EOF (every writer gone) or the deadline; the loop is bounded
     * by the deadline plus one grace period after the kill. */
    for (;;) {
        double left = deadline - now_s();
        struct pollfd p = {.fd = pfd[0], .events = POLLIN};
        char tmp[4096];
        ssize_t n;

        if (left <= 0) {
            if (killed)
                break;
            r.timed_out = true;
            kill(-pid, SIGTERM);
            usleep(300 * 1000);
            kill(-pid, SIGKILL);
            killed = true;
            deadline = now_s() + 2.0;
            continue;
        }
        if (poll(&p, 1, (int)(left * 1000) + 1) <= 0)
            continue;
        n = read(pfd[0], tmp, sizeof tmp);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (cap > 0 && r.out_len < cap - 1) {
            size_t take = (size_t)n;
            if (take > cap - 1 - r.out_len)
                take = cap - 1 - r.out_len;
            memcpy(out + r.out_len, tmp, take);
            r.out_len += take;
            out[r.out_len] = '\0';
        }
    }
    close(pfd[0]);
    /* The pipe may close before the shell exits; kill stragglers of a
     * timed-out group and reap the shell. */
    if (r.timed_out)
        kill(-pid, SIGKILL);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    r.exit_code = r.timed_out ? -1 : decode_status(st);
done:
    if (res)
        *res = r;
    return r.exit_code;
}

int pt_runf(char *out, size_t cap, int timeout_s, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof cmd)
        return -1;
    return pt_run(cmd, out, cap, timeout_s, NULL);
}

bool pt_have(const char *prog)
{
    char cmd[512];
    char out[256];

    snprintf(cmd, sizeof cmd, "command -v '%s'", prog);
    return pt_run(cmd, out, sizeof out, 10, NULL) == 0;
}

char *pt_mkdtemp(const char *prefix)
{
    char tmpl[256];

    snprintf(tmpl, sizeof tmpl, "/tmp/%sXXXXXX", prefix);
    if (!mkdtemp(tmpl))
        return NULL;
    return strdup(tmpl);
}

void pt_rmtree(const char *dir)
{
    char out[256];
    char cmd[1024];

    if (!dir || strncmp(dir, "/tmp/", 5) != 0 || strstr(dir, ".."))
        return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    pt_run(cmd, out, sizeof out, 60, NULL);
}

ssize_t pt_read_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    size_t n;

    if (!f || cap == 0) {
        if (f)
            fclose(f);
        return -1;
    }
    n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    return (ssize_t)n;
}

int pt_write_file(const char *path, const char *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    int rc = 0;

    if (!f)
        return -1;
    if (fwrite(buf, 1, len, f) != len)
        rc = -1;
    if (fclose(f) != 0)
        rc = -1;
    return rc;
}

const char *pt_env(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return (v && *v) ? v : dflt;
}
