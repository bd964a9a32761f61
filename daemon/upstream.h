/*
 * upstream.h: tmld's store-and-forward module (issue 8), internal to
 * daemon/upstream*.c. docs/upstream.md describes the wire format and the
 * delivery rules.
 *
 *   upstream.c       module life cycle, config, per-stream state machine,
 *                    event hooks, control verbs
 *   upstream_http.c  libcurl multi interface on tmld's libuv loop
 *   upstream_body.c  batch bodies: rows -> NDJSON -> gzip (worker thread)
 *   upstream_db.c    cursor / batch / poisoned bookkeeping (writer thread)
 */
#ifndef TMLD_UPSTREAM_H
#define TMLD_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "tmld.h"

enum ustream { US_TELE = 0, US_SAMPLES, US_EVENTS, US__COUNT };

/* "tele", "samples", "events": the stream's name on the wire and in the
 * upstream_* tables. */
const char *upstream_stream_name(enum ustream s);

/* Event kinds stored in upstream_events.kind. */
enum uevent { UEV_ONLINE = 1, UEV_OFFLINE = 2, UEV_OTA = 3 };

/* ---- counters for tmld's metrics (daemon/metrics.c) ----------------------
 */

struct upstream_counters {
    /* gauges */
    int64_t backlog_rows;  /* rows after the cursor, waiting to be sent */
    int64_t backlog_bytes; /* their stored size, estimated (see below) */
    bool is_backoff;       /* the stream waits to retry a failed send */
    /* rows, persisted across restarts (upstream_cursor) */
    int64_t delivered, dropped, poisoned;
    /* since start */
    uint64_t batches_ok, batches_poisoned, retries, bytes_sent;
};

/* Fills c[US__COUNT], one per stream, and returns true; false (c untouched)
 * when forwarding is off or not running. Loop thread; reads are bounded:
 * max(id) per stream and the stored size of the first 64 unsent rows, which
 * times backlog_rows is backlog_bytes. */
bool upstream_counters(struct tmld *d, struct upstream_counters *c);

/* ---- growable byte buffer with a hard cap ---------------------------------
 */

struct ubuf {
    uint8_t *p;
    size_t len, cap, max; /* max: reaching it is an error (-E2BIG) */
};

void ubuf_init(struct ubuf *b, size_t max);
TMLD_WUR int ubuf_put(struct ubuf *b, const void *p, size_t n);
void ubuf_free(struct ubuf *b);

/* ---- bodies (upstream_body.c): pure, any thread ----------------------------
 */

/* Appends one NDJSON line (with '\n') for a tele row to out. body is the
 * stored CBOR summary; when it does not decode, the line carries it as
 * "body_b64" instead of the decoded fields. Returns 0 or -E2BIG/-ENOMEM. */
TMLD_WUR int upstream_tele_line(struct ubuf *out, int64_t id,
                                const char *device, int64_t seq,
                                int64_t recv_at, const uint8_t *body,
                                size_t body_len);

/* gzip (RFC 1952) of in into out (replaces out's contents). 0 or -errno. */
TMLD_WUR int upstream_gzip(const uint8_t *in, size_t len, struct ubuf *out);

/* Reads rows first_id..last_id of stream s through db (any connection) and
 * writes the gzip'd NDJSON body into out (at most max_raw bytes before
 * compression). *n_rows gets the number of rows found (rows deleted by
 * retention since the batch was planned are simply absent). Returns 0 or a
 * negative errno (-EIO for an SQLite error, -E2BIG over max_raw). */
TMLD_WUR int upstream_body_build(sqlite3 *db, enum ustream s, int64_t first_id,
                                 int64_t last_id, size_t max_raw,
                                 struct ubuf *out, int64_t *n_rows);

/* ---- bookkeeping jobs (upstream_db.c): writer thread -----------------------
 */

struct ubatch {
    int64_t epoch, first_id, last_id, n_rows;
};

/* One tmld_db_write job for a stream: optionally finishes the current batch
 * (delivered or poisoned), then plans the next one. Filled on the loop
 * thread, read back in the done callback. */
struct ujob {
    enum ustream s;
    /* in */
    bool has_finish;
    bool is_poison;
    struct ubatch fin;
    int http_status;
    char message[256];
    int64_t max_rows;
    int64_t max_bytes;
    int64_t now_s;
    int64_t replay_id; /* > 0: fin is the poisoned batch with this id */
    /* out */
    bool has_next;
    struct ubatch next;
    int64_t cursor;
    int64_t delivered, dropped, poisoned;
    int64_t epoch;
    /* private to the module */
    void *owner;
};

/* The job function (tmld_db_write_fn): arg is a struct ujob. */
int upstream_db_job(sqlite3 *db, void *arg);

/* Loads a stream's persisted state through db (the read-only connection at
 * start). Returns 0 or -EIO. has_batch tells whether *b is a pending batch. */
TMLD_WUR int upstream_db_load(sqlite3 *db, enum ustream s, int64_t *cursor,
                              int64_t *epoch, int64_t *delivered,
                              int64_t *dropped, int64_t *poisoned,
                              bool *has_batch, struct ubatch *b);

/* Highest row id of the stream's table (0 when empty), or -1 on error. */
int64_t upstream_db_max_id(sqlite3 *db, enum ustream s);

/* ---- HTTP (upstream_http.c): loop thread -----------------------------------
 */

struct uhttp;

struct uhttp_result {
    long status;           /* HTTP status, 0 when there was no response */
    int curl_code;         /* CURLcode */
    char error[256];       /* curl's message or "" */
    int64_t retry_after_s; /* Retry-After, -1 when absent */
    char body[256];        /* start of the response body, NUL-terminated */
    bool is_http2;
};

/* cb runs on the loop thread once per upstream_http_post that returned 0,
 * unless the transfer was cancelled by upstream_http_close. */
typedef void (*uhttp_done_cb)(void *arg, const struct uhttp_result *r);

struct uhttp_opts {
    const char *url;
    const char *ca_file; /* NULL: the system's CA store */
    uint64_t timeout_ms; /* whole transfer */
    uint64_t connect_timeout_ms;
    uint64_t low_speed_time_ms; /* abort below 1 B/s for this long */
};

/* Creates the curl multi handle on loop. Returns NULL on failure. */
struct uhttp *upstream_http_new(uv_loop_t *loop, const struct uhttp_opts *o);
/* POSTs body (borrowed: must stay valid until cb) with the extra headers
 * (NULL-terminated list of "Name: value" strings, copied). Returns 0 or
 * -ENOMEM/-EIO. */
TMLD_WUR int upstream_http_post(struct uhttp *h, const uint8_t *body,
                                size_t len, const char *const *headers,
                                uhttp_done_cb cb, void *arg);
/* Number of transfers in progress. */
int upstream_http_active(const struct uhttp *h);
/* Cancels every transfer (their callbacks do not run), closes the libuv
 * handles and frees h once they are closed; done (may be NULL) runs then. */
void upstream_http_close(struct uhttp *h, void (*done)(void *), void *arg);

#endif /* TMLD_UPSTREAM_H */
