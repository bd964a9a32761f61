/*
 * log.c: tmld's one logger. Lines go to stderr. Under journald (JOURNAL_STREAM
 * set) or whenever stderr is not a terminal, each line starts with a syslog
 * priority prefix "<N>" so journald keeps the level and adds the timestamp;
 * on a terminal the line starts with a local timestamp and the level name.
 * errno is preserved across every call.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

static int max_level = 6;
static int is_tty = -1;

void
log_init(int level)
{
    max_level = level;
    const char *js = getenv("JOURNAL_STREAM");
    is_tty = (js == NULL || js[0] == '\0') && isatty(STDERR_FILENO);
}

void
log_set_level(int level)
{
    max_level = level;
}

static void
vlog(int prio, const char *fmt, va_list ap)
{
    int saved = errno;
    if (prio > max_level) {
        errno = saved;
        return;
    }
    if (is_tty < 0)
        log_init(max_level);
    char line[1024];
    size_t n = 0;
    if (is_tty) {
        static const char *names[] = {"emerg", "alert", "crit", "error",
                                      "warn",  "note",  "info", "debug"};
        struct timeval tv;
        struct tm tm;
        gettimeofday(&tv, NULL);
        localtime_r(&tv.tv_sec, &tm);
        n = strftime(line, sizeof(line), "%H:%M:%S", &tm);
        n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ld %-5s ",
                              (long)(tv.tv_usec / 1000), names[prio & 7]);
    } else {
        n = (size_t)snprintf(line, sizeof(line), "<%d>", prio);
    }
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    if (m < 0)
        m = 0;
    n += (size_t)m;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    /* One write per line so that concurrent writers do not interleave. */
    for (size_t i = 0; i < n; i++)
        if (line[i] == '\n')
            line[i] = ' ';
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
    errno = saved;
}

#define LOG_FN(name, prio)                                                     \
    void name(const char *fmt, ...)                                            \
    {                                                                          \
        va_list ap;                                                            \
        va_start(ap, fmt);                                                     \
        vlog(prio, fmt, ap);                                                   \
        va_end(ap);                                                            \
    }

LOG_FN(log_err, 3)
LOG_FN(log_warn, 4)
LOG_FN(log_info, 6)
LOG_FN(log_debug, 7)
