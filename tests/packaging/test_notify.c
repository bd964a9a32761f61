/*
 * test_notify.c: tmld speaks the sd_notify protocol the way tmld.service
 * (Type=notify, NotifyAccess=main, WatchdogSec=) needs, checked without a
 * running systemd: the test owns the notification socket.
 *
 *  - READY=1 arrives after start, from tmld's own PID (SCM_CREDENTIALS), as
 *    NotifyAccess=main requires;
 *  - WATCHDOG=1 arrives at least every WATCHDOG_USEC/2 while the loop runs
 *    (R14: the pings come from the loop; a stopped process sends none);
 *  - STOPPING=1 on SIGTERM, then exit status 0;
 *  - without NOTIFY_SOCKET (a terminal, `--foreground`) it runs and stops
 *    cleanly too;
 *  - the metrics textfile for node_exporter is written atomically (no
 *    partial file is ever visible) in Prometheus text format.
 *
 * Runs against a real TLS mosquitto (tests/lib/testbroker) and the built tmld
 * (TMLD_EXE). Every process it starts is killed by PID in teardown.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pkgtest.h"

#define WATCHDOG_USEC 1000000ull /* tmld must ping every <= 0.5 s */

struct fx {
    char *dir;
    char broker[600];
    char conf[600];
    char sock[600];
    char metrics[600];
    int port;
    int nfd;   /* our notification socket */
    pid_t pid; /* tmld */
    char out[64 * 1024];
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads KEY=value from the testbroker env file. */
static int env_value(const char *file, const char *key, char *val, size_t cap)
{
    char buf[4096];
    char pat[64];
    const char *p;
    size_t n = 0;

    if (pt_read_file(file, buf, sizeof buf) < 0)
        return -1;
    snprintf(pat, sizeof pat, "%s=", key);
    p = strstr(buf, pat);
    if (!p)
        return -1;
    p += strlen(pat);
    while (p[n] && p[n] != '\n' && n + 1 < cap) {
        val[n] = p[n];
        n++;
    }
    val[n] = '\0';
    return 0;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    const char *tb = pt_env("TML_TESTBROKER", NULL);
    char env[700], port[32], ca[600], cert[600], key[600];
    char conf[4096];
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int n, one = 1;

    if (!f || !tb)
        return -1;
    f->nfd = -1;
    f->dir = pt_mkdtemp("tmld-notify-");
    if (!f->dir)
        return -1;
    *state = f;
    snprintf(f->broker, sizeof f->broker, "%s/broker", f->dir);
    if (pt_runf(f->out, sizeof f->out, 60, "'%s' start '%s'", tb, f->broker) != 0) {
        fprintf(stderr, "testbroker: %s\n", f->out);
        return -1;
    }
    snprintf(env, sizeof env, "%s/env", f->broker);
    if (env_value(env, "TB_PORT", port, sizeof port) || env_value(env, "TB_CA", ca, sizeof ca) ||
        env_value(env, "TB_TMLD_CERT", cert, sizeof cert) ||
        env_value(env, "TB_TMLD_KEY", key, sizeof key))
        return -1;
    f->port = atoi(port);
    snprintf(f->conf, sizeof f->conf, "%s/tmld.conf", f->dir);
    snprintf(f->sock, sizeof f->sock, "%s/notify.sock", f->dir);
    snprintf(f->metrics, sizeof f->metrics, "%s/tmld.prom", f->dir);
    n = snprintf(conf, sizeof conf,
                 "[mqtt]\nhost = 127.0.0.1\nport = %d\ncafile = %s\n"
                 "certfile = %s\nkeyfile = %s\nclient_id = tmld\n"
                 "[db]\npath = %s/tmld.db\n"
                 "[control]\nsocket = %s/ctl.sock\n"
                 "[metrics]\ntextfile = %s\ninterval = 1s\n",
                 f->port, ca, cert, key, f->dir, f->dir, f->metrics);
    if (n < 0 || (size_t)n >= sizeof conf || pt_write_file(f->conf, conf, (size_t)n))
        return -1;

    f->nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (f->nfd < 0 || strlen(f->sock) >= sizeof sa.sun_path)
        return -1;
    strcpy(sa.sun_path, f->sock);
    if (bind(f->nfd, (struct sockaddr *)&sa, sizeof sa) != 0)
        return -1;
    /* Ask for the sender's credentials, as systemd does for NotifyAccess. */
    setsockopt(f->nfd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
    return 0;
}

static void stop_tmld(struct fx *f)
{
    int st;

    if (f->pid <= 0)
        return;
    kill(f->pid, SIGCONT);
    kill(f->pid, SIGKILL);
    waitpid(f->pid, &st, 0);
    f->pid = 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    const char *tb = pt_env("TML_TESTBROKER", NULL);

    if (!f)
        return 0;
    stop_tmld(f);
    if (f->nfd >= 0)
        close(f->nfd);
    if (tb && f->broker[0])
        pt_runf(f->out, sizeof f->out, 30, "'%s' stop '%s'", tb, f->broker);
    if (f->dir && !getenv("TML_KEEP_TMP"))
        pt_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Starts tmld --foreground; with_notify sets NOTIFY_SOCKET and WATCHDOG_*. */
static void start_tmld(struct fx *f, int with_notify)
{
    char log[700];

    snprintf(log, sizeof log, "%s/tmld.log", f->dir);
    f->pid = fork();
    assert_true(f->pid >= 0);
    if (f->pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        char pid[32];

        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        unsetenv("NOTIFY_SOCKET");
        unsetenv("WATCHDOG_USEC");
        unsetenv("WATCHDOG_PID");
        if (with_notify) {
            snprintf(pid, sizeof pid, "%d", (int)getpid());
            setenv("NOTIFY_SOCKET", f->sock, 1);
            setenv("WATCHDOG_USEC", "1000000", 1);
            setenv("WATCHDOG_PID", pid, 1);
        }
        execl(TMLD_EXE, "tmld", "--config", f->conf, "--foreground", (char *)NULL);
        _exit(127);
    }
}

/* One datagram with its sender pid; returns its length, 0 on timeout. */
static ssize_t recv_notify(struct fx *f, char *buf, size_t cap, double timeout_s,
                           pid_t *sender)
{
    struct pollfd p = {.fd = f->nfd, .events = POLLIN};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(struct ucred))];
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = cap - 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1,
                       .msg_control = &ctl, .msg_controllen = sizeof ctl};
    struct cmsghdr *c;
    ssize_t n;

    *sender = 0;
    if (poll(&p, 1, (int)(timeout_s * 1000)) <= 0)
        return 0;
    n = recvmsg(f->nfd, &m, MSG_DONTWAIT);
    if (n < 0)
        return 0;
    buf[n] = '\0';
    for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
            struct ucred u;
            memcpy(&u, CMSG_DATA(c), sizeof u);
            *sender = u.pid;
        }
    }
    return n;
}

/* True when the newline-separated assignment list msg contains line. */
static int has_line(const char *msg, const char *line)
{
    size_t l = strlen(line);
    const char *p = msg;

    while ((p = strstr(p, line)) != NULL) {
        if ((p == msg || p[-1] == '\n') && (p[l] == '\0' || p[l] == '\n'))
            return 1;
        p++;
    }
    return 0;
}

static void dump_log(struct fx *f)
{
    char log[700];
    static char buf[16 * 1024];

    snprintf(log, sizeof log, "%s/tmld.log", f->dir);
    if (pt_read_file(log, buf, sizeof buf) > 0) {
        /* cmocka's print_message has a bounded buffer: print line by line. */
        char *save = NULL;
        print_message("tmld log (%s):\n", log);
        for (char *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
            print_message("  %s\n", l);
    }
}

/* Waits for READY=1 (<= 30 s); fails if tmld exits first. */
static double wait_ready(struct fx *f)
{
    double t0 = now_s();
    char buf[4096];
    pid_t sender;

    while (now_s() - t0 < 30.0) {
        int st;
        if (waitpid(f->pid, &st, WNOHANG) == f->pid) {
            f->pid = 0;
            dump_log(f);
            fail_msg("tmld exited before READY=1 (status %d)", st);
        }
        if (recv_notify(f, buf, sizeof buf, 0.2, &sender) > 0 && has_line(buf, "READY=1")) {
            assert_int_equal(sender, f->pid); /* NotifyAccess=main */
            return now_s() - t0;
        }
    }
    dump_log(f);
    fail_msg("no READY=1 within 30 s");
    return -1;
}

static void test_systemd_notify_ready_watchdog_stopping(void **state)
{
    struct fx *f = *state;
    char buf[4096];
    pid_t sender;
    double t_ready, t0, last, max_gap = 0;
    int n_ping = 0, stopping = 0, st = 0;

    start_tmld(f, 1);
    t_ready = wait_ready(f);
    print_message("READY=1 after %.2f s\n", t_ready);

    /* 3 s of watchdog pings: at WATCHDOG_USEC = 1 s, a gap above 1 s means
     * systemd would have killed it. */
    t0 = last = now_s();
    while (now_s() - t0 < 3.0) {
        if (recv_notify(f, buf, sizeof buf, 0.1, &sender) > 0 && has_line(buf, "WATCHDOG=1")) {
            double t = now_s();
            assert_int_equal(sender, f->pid);
            if (t - last > max_gap)
                max_gap = t - last;
            last = t;
            n_ping++;
        }
    }
    if (now_s() - last > max_gap)
        max_gap = now_s() - last;
    print_message("WATCHDOG=1: %d pings in 3 s, max gap %.2f s (WatchdogSec 1 s)\n",
                  n_ping, max_gap);
    assert_true(n_ping >= 3);
    assert_true(max_gap < 1.0);

    /* R14: a stopped loop sends nothing. */
    kill(f->pid, SIGSTOP);
    while (recv_notify(f, buf, sizeof buf, 0.05, &sender) > 0)
        ; /* drain what was already queued */
    assert_int_equal(recv_notify(f, buf, sizeof buf, 1.5, &sender), 0);
    kill(f->pid, SIGCONT);

    kill(f->pid, SIGTERM);
    t0 = now_s();
    while (now_s() - t0 < 20.0) {
        if (recv_notify(f, buf, sizeof buf, 0.1, &sender) > 0 && has_line(buf, "STOPPING=1"))
            stopping = 1;
        if (waitpid(f->pid, &st, WNOHANG) == f->pid) {
            f->pid = 0;
            break;
        }
    }
    while (recv_notify(f, buf, sizeof buf, 0.05, &sender) > 0)
        if (has_line(buf, "STOPPING=1"))
            stopping = 1;
    if (f->pid != 0) {
        dump_log(f);
        fail_msg("tmld did not exit within 20 s of SIGTERM");
    }
    print_message("SIGTERM -> exit in %.2f s, STOPPING=1 %s\n", now_s() - t0,
                  stopping ? "sent" : "missing");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        dump_log(f); /* e.g. a sanitizer report from the shutdown path */
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_true(stopping);
}

/* From a terminal: no NOTIFY_SOCKET, same daemon, clean stop. */
static void test_systemd_foreground_without_notify_socket(void **state)
{
    struct fx *f = *state;
    char buf[256];
    pid_t sender;
    double t0;
    int st = 0;

    start_tmld(f, 0);
    sleep(2);
    assert_int_equal(waitpid(f->pid, &st, WNOHANG), 0); /* still running */
    assert_int_equal(recv_notify(f, buf, sizeof buf, 0.1, &sender), 0);
    kill(f->pid, SIGTERM);
    t0 = now_s();
    while (now_s() - t0 < 20.0 && waitpid(f->pid, &st, WNOHANG) != f->pid)
        usleep(50 * 1000);
    if (now_s() - t0 >= 20.0) {
        dump_log(f);
        fail_msg("tmld did not exit within 20 s of SIGTERM");
    }
    f->pid = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        dump_log(f);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* docs/operations.md's metrics table must not promise a metric tmld does not
 * write; metrics missing from the table are listed (a reminder, not a
 * failure, so adding a metric never breaks the build). */
static void check_documented_metrics(const char *prom)
{
    static char doc[64 * 1024];
    char path[600];
    const char *p;
    int n_doc = 0;

    snprintf(path, sizeof path, "%s/docs/operations.md", pt_env("TML_SOURCE_DIR", "."));
    if (pt_read_file(path, doc, sizeof doc) <= 0) {
        print_message("no %s: metric names not checked\n", path);
        return;
    }
    /* Table rows: "| `tmld_x` |" or "| `tmld_a`, `tmld_b` | ...". */
    for (p = doc; (p = strstr(p, "\n| `tmld_")) != NULL; p++) {
        const char *q = p + 3;
        const char *eol = strchr(q, '\n');
        const char *cell_end = strchr(q, '|');
        while (q && cell_end && q < cell_end && (!eol || q < eol)) {
            char name[128], want[140];
            size_t l = 0;
            if (*q != '`') {
                q++;
                continue;
            }
            q++;
            while (q[l] && q[l] != '`' && l + 1 < sizeof name) {
                name[l] = q[l];
                l++;
            }
            name[l] = '\0';
            q += l + 1;
            /* A sample line of that name (histograms: its _count). */
            snprintf(want, sizeof want, "\n# TYPE %s ", name);
            if (!strstr(prom, want)) {
                print_message("documented but not written by tmld: %s\n", name);
                fail();
            }
            n_doc++;
        }
    }
    print_message("metrics documented in docs/operations.md: %d, all written\n", n_doc);
    assert_true(n_doc > 0);
    /* The other direction, as information. */
    for (p = prom; (p = strstr(p, "# TYPE ")) != NULL; p++) {
        char name[128], want[140];
        if (sscanf(p, "# TYPE %127s", name) != 1)
            continue;
        snprintf(want, sizeof want, "`%s`", name);
        if (!strstr(doc, want))
            print_message("note: metric %s is not in docs/operations.md\n", name);
    }
}

/* node_exporter's textfile collector reads the file at any moment: it must
 * always be complete. Sample it often while tmld rewrites it each second. */
static void test_systemd_metrics_textfile_atomic(void **state)
{
    struct fx *f = *state;
    static char buf[256 * 1024];
    double t0;
    int seen = 0, reads = 0;

    start_tmld(f, 1);
    (void)wait_ready(f);
    t0 = now_s();
    while (now_s() - t0 < 4.0) {
        ssize_t n = pt_read_file(f->metrics, buf, sizeof buf);
        if (n > 0) {
            reads++;
            /* Complete = ends with a newline, every line a comment or a
             * sample "name{labels} value". */
            assert_int_equal(buf[n - 1], '\n');
            assert_non_null(strstr(buf, "# TYPE "));
            seen = 1;
        }
        usleep(5 * 1000);
    }
    if (!seen) {
        dump_log(f);
        fail_msg("no metrics file at %s", f->metrics);
    }
    print_message("metrics textfile: %d complete reads in 4 s\n", reads);
    assert_non_null(strstr(buf, "tmld_"));
    /* A line of the exposition format: name, optional labels, a number. */
    {
        char line[512];
        const char *p = buf;
        int samples = 0;
        while (*p) {
            const char *e = strchr(p, '\n');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            if (l >= sizeof line)
                l = sizeof line - 1;
            memcpy(line, p, l);
            line[l] = '\0';
            if (line[0] && line[0] != '#') {
                char name[256];
                double v;
                assert_true(sscanf(line, "%255[a-zA-Z0-9_:]", name) == 1);
                assert_non_null(strrchr(line, ' '));
                assert_int_equal(sscanf(strrchr(line, ' ') + 1, "%lf", &v), 1);
                samples++;
            }
            p += l + (e ? 1 : 0);
        }
        print_message("metrics textfile: %d samples\n", samples);
        assert_true(samples > 0);
    }
    check_documented_metrics(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_systemd_notify_ready_watchdog_stopping,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_systemd_foreground_without_notify_socket,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_systemd_metrics_textfile_atomic, setup,
                                        teardown),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests_name("tmld_systemd_notify", tests, NULL, NULL);
}
