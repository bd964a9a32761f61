/*
 * metrics.c: tmld's metrics in the Prometheus text format (names and
 * meanings in docs/operations.md), rendered from the modules' counters by
 * metrics_render() and served two ways:
 *   - [metrics] textfile: written atomically (temp file + rename) every
 *     [metrics] interval, for node_exporter's textfile collector;
 *   - [metrics] listen (off by default): a small HTTP/1.x endpoint on the
 *     libuv loop that answers GET /metrics with the same text and 404/405/
 *     400/431 to anything else, then closes the connection. Every connection
 *     is bounded like the control socket's: at most HTTP_CLIENTS_MAX at once
 *     (more are closed at accept), HTTP_REQ_MAX bytes of request, the whole
 *     request within HTTP_REQ_TIMEOUT_MS and the whole connection within
 *     HTTP_CONN_TIMEOUT_MS (a client that does not read its response is cut
 *     off), all non-blocking, so a slow or malicious client costs one slot
 *     for a few seconds and never stalls the loop. After the response the
 *     write side is shut down and the connection closes at the client's EOF
 *     (what it still sends is read and dropped), so unread request bytes
 *     never turn the close into a reset that loses the response. Only loopback addresses
 *     are accepted unless [metrics] allow_remote = yes (no TLS, no auth).
 * Deliberately not done: keep-alive, HEAD, compression, TLS.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
#include "metrics.h"
#include "retention.h"
#include "upstream.h"

#define HTTP_CLIENTS_MAX 8
#define HTTP_REQ_MAX 4096
#define HTTP_REQ_TIMEOUT_MS 2000
#define HTTP_CONN_TIMEOUT_MS 5000
#define HTTP_SWEEP_MS 200

struct metrics {
    struct tmld *d;
    uv_timer_t t;
};

/* Counters of the HTTP endpoint, rendered with the rest. Loop thread. */
static struct {
    uint64_t requests, refused, timeouts, rejected;
} http_stats;

/* [metrics] per_device, read by the module's init (off: the per-device
 * families are declared without samples). */
static bool per_device;

/* Writes s as a Prometheus label value (backslash, quote, newline
 * escaped). */
static void
label_value(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fputc('\\', f);
        if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

/* Per device: the committed sequence figures stream_hw keeps (one bounded
 * read of at most max_devices rows per family) and the malformed count the
 * registry keeps in memory. Duplicates and gaps are counted for the whole
 * gateway only (store.c keeps no per-device count of them). */
static void
render_devices(struct tmld *d, FILE *f)
{
    static const struct {
        const char *name, *type, *help, *label;
        int col;
    } fam[] = {
        {"tmld_device_tele_seq", "gauge",
         "Highest telemetry sequence number committed.", NULL, 1},
        {"tmld_device_sample_seq", "gauge",
         "Highest sample sequence number committed.", NULL, 2},
        {"tmld_device_seq_skipped_total", "counter",
         "Sequence numbers given up below the device's low-water.", "tele",
         3},
        {"tmld_device_seq_skipped_total", NULL, NULL, "sample", 4},
        {"tmld_device_seq_resets_total", "counter",
         "Times the device's numbering restarted.", NULL, 5},
    };
    sqlite3_stmt *st = NULL;
    if (per_device &&
        sqlite3_prepare_v2(tmld_db_ro(d),
                           "SELECT d.name, h.tele_hw, h.sample_hw, "
                           "h.tele_skipped, h.sample_skipped, h.seq_resets "
                           "FROM stream_hw h JOIN devices d ON d.id = "
                           "h.device_id ORDER BY d.name LIMIT ?1",
                           -1, &st, NULL) != SQLITE_OK) {
        log_warn("metrics: per-device figures: %s",
                 sqlite3_errmsg(tmld_db_ro(d)));
        st = NULL;
    }
    for (size_t k = 0; k < sizeof(fam) / sizeof(fam[0]); k++) {
        if (fam[k].type != NULL)
            fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", fam[k].name,
                    fam[k].help, fam[k].name, fam[k].type);
        if (st == NULL)
            continue;
        sqlite3_bind_int64(st, 1, (int64_t)d->set.max_devices);
        while (sqlite3_step(st) == SQLITE_ROW) {
            fprintf(f, "%s{device=\"", fam[k].name);
            label_value(f, (const char *)sqlite3_column_text(st, 0));
            if (fam[k].label != NULL)
                fprintf(f, "\",stream=\"%s", fam[k].label);
            fprintf(f, "\"} %lld\n",
                    (long long)sqlite3_column_int64(st, fam[k].col));
        }
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    fprintf(f, "# HELP tmld_device_malformed_total Messages from the device "
               "the decoder rejected, since start.\n"
               "# TYPE tmld_device_malformed_total counter\n");
    for (struct device *v = per_device ? registry_first(d) : NULL; v;
         v = v->lnext) {
        fputs("tmld_device_malformed_total{device=\"", f);
        label_value(f, v->name);
        fprintf(f, "\"} %llu\n", (unsigned long long)v->n_malformed);
    }
}

static void
render(struct tmld *d, FILE *f)
{
    size_t online = 0, total = registry_count(d, &online);
    const struct store_stats *s = store_stats(d);
    const struct ingest_stats *in = ingest_stats(d);
    const struct mqtt_stats *m = mqtt_stats(d);
    int64_t wal = 0, size = store_size_bytes(d, &wal);
#define G(name, help, v)                                                       \
    fprintf(f, "# HELP " name " " help "\n# TYPE " name " gauge\n" name        \
               " %llu\n",                                                      \
            (unsigned long long)(v))
#define C(name, help, v)                                                       \
    fprintf(f, "# HELP " name " " help "\n# TYPE " name " counter\n" name      \
               " %llu\n",                                                      \
            (unsigned long long)(v))
    G("tmld_devices_online", "Devices currently online.", online);
    G("tmld_devices_total", "Devices known since start.", total);
    G("tmld_mqtt_connected", "1 if the broker link is up.",
      tmld_mqtt_is_connected(d));
    C("tmld_mqtt_connects_total", "Broker connections made.", m->connects);
    C("tmld_mqtt_messages_total", "Messages received from the broker.",
      m->messages);
    C("tmld_ingest_tele_records_total", "Telemetry records committed.",
      s->tele);
    C("tmld_ingest_sample_records_total", "Sample chunks committed.",
      s->samples);
    C("tmld_ingest_duplicates_total", "Records dropped as already stored.",
      s->duplicates);
    C("tmld_ingest_gaps_total",
      "Records dropped because an earlier one is missing.", s->gaps);
    C("tmld_ingest_skipped_total",
      "Sequence numbers given up below a record's low-water.", s->skipped);
    C("tmld_ingest_seq_resets_total",
      "Device numberings restarted (hello from a new boot).", s->seq_resets);
    C("tmld_ingest_stale_hellos_total",
      "Hellos of the current boot delivered again with a stale next seq.",
      s->stale_hellos);
    C("tmld_ingest_malformed_total", "Messages rejected by the decoder.",
      in->malformed);
    C("tmld_ingest_oversize_total", "Messages over the size limit.",
      in->oversize);
    C("tmld_ingest_refused_total", "Records refused (queue full, cap).",
      in->refused);
    C("tmld_ingest_acks_total", "Acks published after commits.", in->acks);
    C("tmld_db_commit_errors_total", "Batches that failed to commit.",
      s->commit_errors);
    G("tmld_db_queue_records", "Records waiting for a commit.",
      store_queued(d));
    uint64_t rolled = 0, evicted = 0;
    retention_stats(&rolled, &evicted);
    C("tmld_retention_rolled_up_total",
      "Telemetry summaries rolled up into hourly aggregates.", rolled);
    C("tmld_retention_samples_evicted_total",
      "Sample chunks evicted to keep the budget.", evicted);
    C("tmld_retention_aggregates_pruned_total",
      "Hourly aggregate rows deleted (past rollup_days or at the cap).",
      retention_pruned());
    G("tmld_db_size_bytes", "Database file size.", size);
    G("tmld_db_wal_bytes", "WAL file size.", wal);
    static const char *le[] = {"1",   "2",   "5",    "10",   "20", "50",
                               "100", "200", "500", "1000", "2000", "+Inf"};
    fprintf(f, "# HELP tmld_db_commit_duration_ms Batch commit latency.\n"
               "# TYPE tmld_db_commit_duration_ms histogram\n");
    uint64_t cum = 0;
    for (int i = 0; i < 12; i++) {
        cum += s->commit_hist[i];
        fprintf(f, "tmld_db_commit_duration_ms_bucket{le=\"%s\"} %llu\n",
                le[i], (unsigned long long)cum);
    }
    fprintf(f, "tmld_db_commit_duration_ms_count %llu\n",
            (unsigned long long)cum);
    /* Without forwarding the families are still declared, with no sample,
     * so that the set of names does not depend on the configuration. */
    struct upstream_counters uc[US__COUNT];
    int n_streams = upstream_counters(d, uc) ? US__COUNT : 0;
    {
        static const struct {
            const char *name, *type, *help;
            size_t off;
        } um[] = {
#define UM(n, t, h, f) {n, t, h, offsetof(struct upstream_counters, f)}
            UM("tmld_upstream_backlog_rows", "gauge",
               "Rows waiting to be forwarded (after the cursor).",
               backlog_rows),
            UM("tmld_upstream_backlog_bytes", "gauge",
               "Stored size of the waiting rows (estimated from the first "
               "64).",
               backlog_bytes),
            UM("tmld_upstream_sent_rows_total", "counter",
               "Rows the endpoint accepted (2xx), across restarts.",
               delivered),
            UM("tmld_upstream_dropped_rows_total", "counter",
               "Rows retention deleted before they were sent.", dropped),
            UM("tmld_upstream_failed_rows_total", "counter",
               "Rows in batches the endpoint refused for good (poisoned).",
               poisoned),
#undef UM
        };
        for (size_t k = 0; k < sizeof(um) / sizeof(um[0]); k++) {
            fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", um[k].name,
                    um[k].help, um[k].name, um[k].type);
            for (int i = 0; i < n_streams; i++)
                fprintf(f, "%s{stream=\"%s\"} %lld\n", um[k].name,
                        upstream_stream_name((enum ustream)i),
                        (long long)*(const int64_t *)((const char *)&uc[i] +
                                                      um[k].off));
        }
        static const struct {
            const char *name, *help;
            size_t off;
        } uc64[] = {
#define UC(n, h, f) {n, h, offsetof(struct upstream_counters, f)}
            UC("tmld_upstream_sent_batches_total",
               "Batches the endpoint accepted since start.", batches_ok),
            UC("tmld_upstream_failed_batches_total",
               "Batches poisoned (4xx) since start.", batches_poisoned),
            UC("tmld_upstream_retries_total",
               "Sends retried after a network error, 5xx, 408 or 429.",
               retries),
            UC("tmld_upstream_sent_bytes_total",
               "Compressed body bytes accepted since start.", bytes_sent),
#undef UC
        };
        for (size_t k = 0; k < sizeof(uc64) / sizeof(uc64[0]); k++) {
            fprintf(f, "# HELP %s %s\n# TYPE %s counter\n", uc64[k].name,
                    uc64[k].help, uc64[k].name);
            for (int i = 0; i < n_streams; i++)
                fprintf(f, "%s{stream=\"%s\"} %llu\n", uc64[k].name,
                        upstream_stream_name((enum ustream)i),
                        (unsigned long long)*(
                            const uint64_t *)((const char *)&uc[i] +
                                              uc64[k].off));
        }
        fprintf(f, "# HELP tmld_upstream_backoff 1 while the stream waits "
                   "to retry.\n# TYPE tmld_upstream_backoff gauge\n");
        for (int i = 0; i < n_streams; i++)
            fprintf(f, "tmld_upstream_backoff{stream=\"%s\"} %d\n",
                    upstream_stream_name((enum ustream)i),
                    uc[i].is_backoff ? 1 : 0);
    }
    render_devices(d, f);
    C("tmld_metrics_http_requests_total",
      "Requests answered by the metrics endpoint (any status).",
      http_stats.requests);
    C("tmld_metrics_http_rejected_total",
      "Requests answered 400, 404, 405 or 431.", http_stats.rejected);
    C("tmld_metrics_http_refused_total",
      "Connections closed at accept (too many clients).", http_stats.refused);
    C("tmld_metrics_http_timeouts_total",
      "Connections closed for a request or response too slow.",
      http_stats.timeouts);
#undef G
#undef C
}

char *
metrics_render(struct tmld *d, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (f == NULL)
        return NULL;
    render(d, f);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static void
write_metrics(struct tmld *d)
{
    const char *path = d->set.metrics_textfile;
    char tmp[4200];
    size_t len = 0;
    char *text = metrics_render(d, &len);
    if (text == NULL) {
        log_warn("metrics: out of memory");
        return;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        log_warn("metrics: %s: %s", tmp, strerror(errno));
        free(text);
        return;
    }
    size_t w = fwrite(text, 1, len, f);
    free(text);
    if (fclose(f) != 0 || w != len || rename(tmp, path) != 0) {
        log_warn("metrics: %s: %s", path, strerror(errno));
        unlink(tmp);
    }
}

static void
tick(uv_timer_t *t)
{
    struct metrics *m = t->data;
    write_metrics(m->d);
}

int
metrics_start(struct tmld *d)
{
    if (d->set.metrics_textfile[0] == '\0')
        return 0;
    struct metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    m->d = d;
    uv_timer_init(d->loop, &m->t);
    m->t.data = m;
    uv_timer_start(&m->t, tick, 0, d->set.metrics_interval_ms);
    d->metrics = m;
    return 0;
}

static void
metrics_free(uv_handle_t *h)
{
    free(h->data);
}

void
metrics_stop(struct tmld *d)
{
    struct metrics *m = d->metrics;
    if (m == NULL)
        return;
    if (d->store)
        write_metrics(d);
    d->metrics = NULL;
    uv_close((uv_handle_t *)&m->t, metrics_free);
}

/* ---- the HTTP endpoint ([metrics] listen) ---------------------------------- */

struct mclient;

struct mhttp {
    struct tmld *d;
    uv_tcp_t server;
    uv_timer_t sweep;
    struct mclient *clients;
    size_t n_clients;
    int n_open; /* own handles not yet closed */
};

struct mclient {
    uv_tcp_t tcp;
    struct mhttp *h;
    char req[HTTP_REQ_MAX];
    size_t len;
    char *resp; /* owned; freed with the client (a write may be pending) */
    uv_write_t w;
    uv_shutdown_t sd;
    uint64_t req_deadline_ms, deadline_ms;
    bool is_answered, is_closing;
    struct mclient *next;
};

static struct mhttp *mhttp_running;

/* Parses "127.0.0.1:9464", "[::1]:9464" or "localhost:9464" into *ss. */
static int
parse_listen(const char *v, struct sockaddr_storage *ss)
{
    char host[64];
    const char *colon = strrchr(v, ':');
    if (colon == NULL || colon == v)
        return -EINVAL;
    size_t hl = (size_t)(colon - v);
    const char *h = v;
    if (v[0] == '[') {
        if (hl < 3 || v[hl - 1] != ']')
            return -EINVAL;
        h = v + 1;
        hl -= 2;
    }
    if (hl >= sizeof(host))
        return -EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno != 0 || port < 1 ||
        port > 65535)
        return -EINVAL;
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    memset(ss, 0, sizeof(*ss));
    if (v[0] == '[')
        return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0
                   ? 0
                   : -EINVAL;
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0
               ? 0
               : -EINVAL;
}

static bool
is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    return IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
}

/* [metrics] listen and allow_remote (the keys are accepted by config.c's
 * core table and validated here, also for --check-config). */
static int
mhttp_config(struct tmld *d, struct sockaddr_storage *ss, bool *is_on)
{
    const char *v = tmld_config_get(d, "metrics", "listen");
    bool allow_remote = false;
    int bad = tmld_config_bool(d, "metrics", "allow_remote", false,
                               &allow_remote) != 0;
    *is_on = v != NULL && v[0] != '\0';
    if (!*is_on)
        return bad;
    if (parse_listen(v, ss) != 0) {
        tmld_config_error(d, "metrics", "listen",
                          "'%s' is not ADDRESS:PORT (127.0.0.1:9464, "
                          "[::1]:9464, localhost:9464; a numeric address)",
                          v);
        return bad + 1;
    }
    if (!is_loopback(ss) && !allow_remote) {
        tmld_config_error(d, "metrics", "listen",
                          "'%s' is not a loopback address: the endpoint has "
                          "no TLS and no authentication; set allow_remote = "
                          "yes to serve other hosts anyway",
                          v);
        return bad + 1;
    }
    return bad;
}

static int
mhttp_check(struct tmld *d)
{
    struct sockaddr_storage ss;
    bool is_on, b;
    return mhttp_config(d, &ss, &is_on) +
           (tmld_config_bool(d, "metrics", "per_device", false, &b) != 0);
}

static void
mhttp_maybe_free(struct mhttp *h)
{
    if (h->n_open == 0 && h->clients == NULL)
        free(h);
}

static void
client_closed(uv_handle_t *hd)
{
    struct mclient *c = hd->data;
    struct mhttp *h = c->h;
    for (struct mclient **pp = &h->clients; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    free(c->resp);
    free(c);
    if (mhttp_running != h)
        mhttp_maybe_free(h);
}

static void
client_close(struct mclient *c)
{
    if (c->is_closing)
        return;
    c->is_closing = true;
    /* The slot is free now: uv_close closes the socket at once (the peer
     * sees EOF) but runs client_closed only in the loop's closing phase,
     * after this iteration's accepts, which would refuse a client that
     * connected in between. */
    c->h->n_clients--;
    uv_close((uv_handle_t *)&c->tcp, client_closed);
}

static void
shutdown_done(uv_shutdown_t *sd, int status)
{
    /* The client's EOF (read_cb) or the deadline (sweep_cb) closes: closing
     * now, with request bytes still unread, would reset the connection and
     * could discard the response before the client read it. */
    if (status != 0)
        client_close(sd->data);
}

static void
write_done(uv_write_t *w, int status)
{
    struct mclient *c = w->data;
    if (status != 0 || c->is_closing) {
        client_close(c);
        return;
    }
    c->sd.data = c;
    if (uv_shutdown(&c->sd, (uv_stream_t *)&c->tcp, shutdown_done) != 0)
        client_close(c);
}

static void
respond(struct mclient *c, enum metrics_http_verdict v)
{
    const char *status, *type = "text/plain; charset=utf-8", *extra = "";
    char *body = NULL;
    size_t blen = 0;
    c->is_answered = true;
    c->len = 0; /* from now on the buffer only drains what the client sends */
    c->deadline_ms = tmld_now_ms(c->h->d) + HTTP_CONN_TIMEOUT_MS;
    http_stats.requests++;
    if (v == MHTTP_METRICS && (body = metrics_render(c->h->d, &blen))) {
        status = metrics_http_status(v);
        type = "text/plain; version=0.0.4; charset=utf-8";
    } else {
        if (v != MHTTP_METRICS)
            http_stats.rejected++;
        status = v == MHTTP_METRICS ? "500 Internal Server Error"
                                    : metrics_http_status(v);
        if (v == MHTTP_BAD_METHOD)
            extra = "Allow: GET\r\n";
        body = strdup(v == MHTTP_METRICS ? "out of memory\n"
                                         : "tmld serves GET /metrics only\n");
        blen = body ? strlen(body) : 0;
    }
    char head[256];
    int hn = snprintf(head, sizeof(head),
                      "HTTP/1.1 %s\r\nContent-Type: %s\r\n"
                      "Content-Length: %zu\r\n%sConnection: close\r\n\r\n",
                      status, type, blen, extra);
    c->resp = body ? malloc((size_t)hn + blen) : NULL;
    if (c->resp == NULL) {
        free(body);
        client_close(c);
        return;
    }
    memcpy(c->resp, head, (size_t)hn);
    memcpy(c->resp + hn, body, blen);
    free(body);
    uv_buf_t b = uv_buf_init(c->resp, (unsigned)((size_t)hn + blen));
    c->w.data = c;
    if (uv_write(&c->w, (uv_stream_t *)&c->tcp, &b, 1, write_done) != 0)
        client_close(c);
}

static void
alloc_cb(uv_handle_t *hd, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct mclient *c = hd->data;
    /* At most what the request may still grow by; a full buffer was
     * answered 431 and emptied, so this is never empty. */
    *buf = uv_buf_init(c->req + c->len, (unsigned)(HTTP_REQ_MAX - c->len));
}

static void
read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    struct mclient *c = s->data;
    if (n < 0) {
        client_close(c);
        return;
    }
    if (c->is_answered) {
        c->len = 0; /* the rest of the request is read and dropped */
        return;
    }
    c->len += (size_t)n;
    enum metrics_http_verdict v = metrics_http_parse(c->req, c->len,
                                                     HTTP_REQ_MAX);
    if (v != MHTTP_MORE)
        respond(c, v);
}

static void
free_handle(uv_handle_t *hd)
{
    free(hd);
}

static void
on_connection(uv_stream_t *server, int status)
{
    struct mhttp *h = server->data;
    if (status != 0)
        return;
    struct mclient *c = calloc(1, sizeof(*c));
    if (c == NULL || h->n_clients >= HTTP_CLIENTS_MAX) {
        /* Accept and close at once so that the backlog does not fill. */
        uv_tcp_t *tmp = malloc(sizeof(*tmp));
        http_stats.refused++;
        free(c);
        if (tmp == NULL)
            return;
        uv_tcp_init(h->d->loop, tmp);
        (void)uv_accept(server, (uv_stream_t *)tmp);
        uv_close((uv_handle_t *)tmp, free_handle);
        return;
    }
    c->h = h;
    uv_tcp_init(h->d->loop, &c->tcp);
    c->tcp.data = c;
    c->next = h->clients;
    h->clients = c;
    h->n_clients++;
    uint64_t now = tmld_now_ms(h->d);
    c->req_deadline_ms = now + HTTP_REQ_TIMEOUT_MS;
    c->deadline_ms = now + HTTP_CONN_TIMEOUT_MS;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0)
        client_close(c);
}

static void
sweep_cb(uv_timer_t *t)
{
    struct mhttp *h = t->data;
    uint64_t now = tmld_now_ms(h->d);
    for (struct mclient *c = h->clients; c; c = c->next) {
        if (c->is_closing)
            continue;
        if (now >= c->deadline_ms ||
            (!c->is_answered && now >= c->req_deadline_ms)) {
            http_stats.timeouts++;
            client_close(c);
        }
    }
}

static void
mhttp_handle_closed(uv_handle_t *hd)
{
    struct mhttp *h = hd->data;
    h->n_open--;
    mhttp_maybe_free(h);
}

static int
mhttp_init(struct tmld *d, void **state)
{
    struct sockaddr_storage ss;
    bool is_on = false;
    *state = NULL;
    if (mhttp_config(d, &ss, &is_on) != 0 ||
        tmld_config_bool(d, "metrics", "per_device", false, &per_device) != 0)
        return -EINVAL;
    if (!is_on)
        return 0;
    struct mhttp *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return -ENOMEM;
    h->d = d;
    uv_tcp_init(d->loop, &h->server);
    uv_timer_init(d->loop, &h->sweep);
    h->server.data = h->sweep.data = h;
    h->n_open = 2;
    int rc = uv_tcp_bind(&h->server, (const struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&h->server, 16, on_connection);
    if (rc != 0) {
        log_err("metrics: listen %s: %s",
                tmld_config_get(d, "metrics", "listen"), uv_strerror(rc));
        uv_close((uv_handle_t *)&h->server, mhttp_handle_closed);
        uv_close((uv_handle_t *)&h->sweep, mhttp_handle_closed);
        return rc;
    }
    uv_timer_start(&h->sweep, sweep_cb, HTTP_SWEEP_MS, HTTP_SWEEP_MS);
    mhttp_running = h;
    *state = h;
    log_info("metrics: serving GET /metrics on %s",
             tmld_config_get(d, "metrics", "listen"));
    return 0;
}

static void
mhttp_fini(struct tmld *d, void *state)
{
    (void)d;
    struct mhttp *h = state;
    if (h == NULL)
        return;
    mhttp_running = NULL;
    for (struct mclient *c = h->clients; c; c = c->next)
        client_close(c);
    uv_close((uv_handle_t *)&h->server, mhttp_handle_closed);
    uv_close((uv_handle_t *)&h->sweep, mhttp_handle_closed);
}

/* A module (rather than metrics_start) so that its keys are checked with the
 * other modules' and its listener opens before the broker link. */
TMLD_MODULE_CHECKED(metrics, mhttp_init, mhttp_fini, mhttp_check);
