/*
 * metrics.h: tmld's metrics (daemon/metrics.c) beyond metrics_start/stop in
 * core.h: the rendered text and the request parser of the optional HTTP
 * endpoint ([metrics] listen), kept pure in metrics_http.c so that it can
 * be fuzzed (tests/daemon/fuzz_metrics_http.c).
 */
#ifndef TMLD_METRICS_H
#define TMLD_METRICS_H

#include <stddef.h>

struct tmld;

/* What a request read so far asks for. */
enum metrics_http_verdict {
    MHTTP_MORE = 0,    /* no end of headers yet: read on */
    MHTTP_METRICS,     /* GET /metrics (a query string is ignored): 200 */
    MHTTP_NOT_FOUND,   /* any other path: 404 */
    MHTTP_BAD_METHOD,  /* /metrics with another method: 405 */
    MHTTP_BAD_REQUEST, /* not an HTTP/1.x request: 400 */
    MHTTP_TOO_LARGE    /* no end of headers within max bytes: 431 */
};

/* Parses the first len bytes a client sent (not NUL-terminated; any byte
 * may appear). max is the most the server reads: a request whose headers
 * do not end within it is MHTTP_TOO_LARGE. A malformed request line is
 * rejected as soon as its newline arrives. Reads nothing past len. */
enum metrics_http_verdict metrics_http_parse(const char *buf, size_t len,
                                             size_t max);

/* The status line ("404 Not Found") for a verdict other than MHTTP_MORE. */
const char *metrics_http_status(enum metrics_http_verdict v);

/* The Prometheus text exposition of d's state, malloc'd and NUL-terminated
 * (*len without the NUL); NULL when out of memory. Loop thread. */
char *metrics_render(struct tmld *d, size_t *len);

#endif /* TMLD_METRICS_H */
