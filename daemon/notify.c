/*
 * notify.c: systemd's notify protocol spoken by hand (no libsystemd): one
 * datagram per message to $NOTIFY_SOCKET (a path, or "@name" for the
 * abstract namespace). READY=1 once serving, STATUS= with a one-line
 * summary, STOPPING=1 on drain, and WATCHDOG=1 when $WATCHDOG_USEC is set.
 *
 * The watchdog ping comes from a timer on the main loop at half the watchdog
 * interval, never from a thread: a stalled loop stops pinging and systemd
 * restarts tmld. The timer also checks that it ran on time; a late tick (the
 * loop was blocked for more than the interval) is logged.
 * Without NOTIFY_SOCKET (a terminal) every call is a no-op.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core.h"

struct notifier {
    struct tmld *d;
    uv_timer_t wd;
    uint64_t interval_ms;
    uint64_t last_tick_ms;
};

void
notify_send(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || path[0] == '\0')
        return;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    size_t n = strlen(path);
    if (n >= sizeof(sa.sun_path))
        return;
    memcpy(sa.sun_path, path, n);
    if (path[0] == '@')
        sa.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
               len) < 0)
        log_debug("notify: %s: %s", path, strerror(errno));
    close(fd);
}

static void
status_line(struct tmld *d, char *buf, size_t cap)
{
    size_t online = 0, total = registry_count(d, &online);
    const struct store_stats *s = d->store ? store_stats(d) : NULL;
    snprintf(buf, cap,
             "STATUS=broker %s, %zu/%zu devices online, %llu records "
             "stored",
             tmld_mqtt_is_connected(d) ? "connected" : "not connected",
             online, total,
             s ? (unsigned long long)(s->tele + s->samples) : 0ull);
}

static void
wd_cb(uv_timer_t *t)
{
    struct notifier *n = t->data;
    struct tmld *d = n->d;
    uint64_t now = tmld_now_ms(d);
    if (n->last_tick_ms && now - n->last_tick_ms > 2 * n->interval_ms)
        log_warn("notify: the loop was stalled for %llu ms",
                 (unsigned long long)(now - n->last_tick_ms));
    n->last_tick_ms = now;
    char msg[256];
    status_line(d, msg, sizeof(msg));
    size_t l = strlen(msg);
    snprintf(msg + l, sizeof(msg) - l, "\nWATCHDOG=1");
    notify_send(msg);
}

void
notify_init(struct tmld *d)
{
    char msg[256];
    status_line(d, msg, sizeof(msg));
    size_t l = strlen(msg);
    snprintf(msg + l, sizeof(msg) - l, "\nREADY=1\nMAINPID=%d", (int)getpid());
    notify_send(msg);
    const char *us = getenv("WATCHDOG_USEC");
    const char *pid = getenv("WATCHDOG_PID");
    if (us == NULL || (pid != NULL && atoi(pid) != getpid()))
        return;
    unsigned long long usec = strtoull(us, NULL, 10);
    if (usec == 0)
        return;
    struct notifier *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return;
    n->d = d;
    n->interval_ms = usec / 2000;
    if (n->interval_ms == 0)
        n->interval_ms = 1;
    uv_timer_init(d->loop, &n->wd);
    n->wd.data = n;
    uv_timer_start(&n->wd, wd_cb, n->interval_ms, n->interval_ms);
    d->notify = n;
    log_info("notify: watchdog ping every %llu ms",
             (unsigned long long)n->interval_ms);
}

static void
notifier_free(uv_handle_t *h)
{
    free(h->data);
}

void
notify_fini(struct tmld *d)
{
    struct notifier *n = d->notify;
    d->notify = NULL;
    if (n != NULL)
        uv_close((uv_handle_t *)&n->wd, notifier_free);
}
