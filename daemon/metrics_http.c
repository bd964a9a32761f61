/*
 * metrics_http.c: the request parser of tmld's metrics endpoint (HTTP/1.x,
 * RFC 9112 request line and header fields). Pure: no I/O, no allocation,
 * no state; the server in metrics.c feeds it what it read so far. It only
 * has to tell GET /metrics from everything else, so header fields are
 * checked for shape (a name, a colon, no control bytes) and otherwise
 * ignored; no request body is ever read (the connection closes after the
 * response).
 */
#include <stdbool.h>
#include <string.h>

#include "metrics.h"

#define METHOD_MAX 16

static bool
is_tchar(unsigned char c)
{
    /* RFC 9110 5.6.2 token characters. */
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || (c != 0 && strchr("!#$%&'*+-.^_`|~", c));
}

/* Checks one line (without its "\n" and an optional "\r") of a header
 * field: name ":" value, no control bytes but HTAB in the value. */
static bool
is_field_line(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i >= n || p[i] != ':')
        return false;
    for (i++; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

/* Length of the line starting at p (up to, not including, "\n"; a "\r"
 * before it is dropped), or -1 when no "\n" is within n bytes. */
static long
line_len(const char *p, size_t n, size_t *next)
{
    const char *nl = memchr(p, '\n', n);
    if (nl == NULL)
        return -1;
    size_t l = (size_t)(nl - p);
    *next = l + 1;
    if (l > 0 && p[l - 1] == '\r')
        l--;
    return (long)l;
}

/* Parses "METHOD SP TARGET SP HTTP/1.x". */
static enum metrics_http_verdict
request_line(const char *p, size_t n)
{
    size_t m = 0;
    while (m < n && m <= METHOD_MAX && is_tchar((unsigned char)p[m]))
        m++;
    if (m == 0 || m > METHOD_MAX || m >= n || p[m] != ' ')
        return MHTTP_BAD_REQUEST;
    const char *t = p + m + 1;
    const char *sp = memchr(t, ' ', n - m - 1);
    if (sp == NULL || sp == t)
        return MHTTP_BAD_REQUEST;
    size_t tl = (size_t)(sp - t);
    for (size_t i = 0; i < tl; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c <= 0x20 || c >= 0x7f)
            return MHTTP_BAD_REQUEST;
    }
    size_t vl = n - (size_t)(sp + 1 - p);
    if (vl != 8 || (memcmp(sp + 1, "HTTP/1.1", 8) != 0 &&
                    memcmp(sp + 1, "HTTP/1.0", 8) != 0))
        return MHTTP_BAD_REQUEST;
    bool is_metrics = (tl == 8 && memcmp(t, "/metrics", 8) == 0) ||
                      (tl > 8 && memcmp(t, "/metrics?", 9) == 0);
    if (!is_metrics)
        return MHTTP_NOT_FOUND;
    if (m != 3 || memcmp(p, "GET", 3) != 0)
        return MHTTP_BAD_METHOD;
    return MHTTP_METRICS;
}

enum metrics_http_verdict
metrics_http_parse(const char *buf, size_t len, size_t max)
{
    if (len > max)
        len = max;
    size_t next = 0;
    long l = line_len(buf, len, &next);
    if (l < 0)
        return len >= max ? MHTTP_TOO_LARGE : MHTTP_MORE;
    enum metrics_http_verdict v = request_line(buf, (size_t)l);
    if (v == MHTTP_BAD_REQUEST)
        return v;
    /* Header fields up to the empty line. */
    size_t off = next;
    for (;;) {
        l = line_len(buf + off, len - off, &next);
        if (l < 0)
            return len >= max ? MHTTP_TOO_LARGE : MHTTP_MORE;
        if (l == 0)
            return v;
        if (!is_field_line(buf + off, (size_t)l))
            return MHTTP_BAD_REQUEST;
        off += next;
    }
}

const char *
metrics_http_status(enum metrics_http_verdict v)
{
    switch (v) {
    case MHTTP_METRICS:
        return "200 OK";
    case MHTTP_NOT_FOUND:
        return "404 Not Found";
    case MHTTP_BAD_METHOD:
        return "405 Method Not Allowed";
    case MHTTP_TOO_LARGE:
        return "431 Request Header Fields Too Large";
    default:
        return "400 Bad Request";
    }
}
