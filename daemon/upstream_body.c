/*
 * upstream_body.c: a batch's body. Reads the batch's rows (tele, samples or
 * upstream_events, by row id range), writes one JSON object per row and
 * line (NDJSON, docs/upstream.md), and gzips the result.
 *
 * Pure functions over a caller's connection and buffers: they run on a
 * libuv worker thread with upstream's own read-only connection, never on
 * the loop. Every buffer has a maximum; reaching it is an error.
 * Sample data travels base64-encoded inside its line ("data_b64").
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "upstream.h"

/* ---- ubuf ---------------------------------------------------------------- */

void
ubuf_init(struct ubuf *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

int
ubuf_put(struct ubuf *b, const void *p, size_t n)
{
    if (n > b->max - b->len)
        return -E2BIG;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        if (cap > b->max)
            cap = b->max;
        uint8_t *q = realloc(b->p, cap);
        if (q == NULL)
            return -ENOMEM;
        b->p = q;
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

void
ubuf_free(struct ubuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

const char *
upstream_stream_name(enum ustream s)
{
    switch (s) {
    case US_TELE:
        return "tele";
    case US_SAMPLES:
        return "samples";
    case US_EVENTS:
        return "events";
    default:
        return "?";
    }
}

/* ---- a small JSON writer ------------------------------------------------- */

struct jw {
    struct ubuf *b;
    int rc;
    bool is_first;
};

static void
jraw(struct jw *w, const char *s, size_t n)
{
    if (w->rc == 0)
        w->rc = ubuf_put(w->b, s, n);
}

static void
jstr_val(struct jw *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";

    jraw(w, "\"", 1);
    for (size_t i = 0; i < n && w->rc == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            jraw(w, e, 2);
        } else if (c < 0x20 || c >= 0x7f) {
            /* Bytes outside printable ASCII are escaped one by one, so the
             * line is valid JSON whatever a device put in a string. */
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            jraw(w, e, 6);
        } else {
            jraw(w, (const char *)&c, 1);
        }
    }
    jraw(w, "\"", 1);
}

static void
jkey(struct jw *w, const char *k)
{
    if (!w->is_first)
        jraw(w, ",", 1);
    w->is_first = false;
    jstr_val(w, k, strlen(k));
    jraw(w, ":", 1);
}

static void
jint(struct jw *w, const char *k, int64_t v)
{
    char n[24];
    int len = snprintf(n, sizeof(n), "%lld", (long long)v);

    jkey(w, k);
    jraw(w, n, (size_t)len);
}

static void
jstr(struct jw *w, const char *k, const char *s)
{
    jkey(w, k);
    if (s == NULL)
        jraw(w, "null", 4);
    else
        jstr_val(w, s, strlen(s));
}

static void
jarr(struct jw *w, const char *k, const uint32_t *v, size_t n)
{
    char num[16];

    jkey(w, k);
    jraw(w, "[", 1);
    for (size_t i = 0; i < n; i++) {
        int len = snprintf(num, sizeof(num), "%s%u", i ? "," : "", v[i]);
        jraw(w, num, (size_t)len);
    }
    jraw(w, "]", 1);
}

static void
jb64(struct jw *w, const char *k, const uint8_t *p, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char q[4];

    jkey(w, k);
    jraw(w, "\"", 1);
    for (size_t i = 0; i < n && w->rc == 0; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        q[0] = tab[(v >> 18) & 63];
        q[1] = tab[(v >> 12) & 63];
        q[2] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        q[3] = i + 2 < n ? tab[v & 63] : '=';
        jraw(w, q, 4);
    }
    jraw(w, "\"", 1);
}

static void
jbegin(struct jw *w, struct ubuf *b)
{
    w->b = b;
    w->rc = 0;
    w->is_first = true;
    jraw(w, "{", 1);
}

static int
jend(struct jw *w)
{
    jraw(w, "}\n", 2);
    return w->rc;
}

/* ---- lines --------------------------------------------------------------- */

int
upstream_tele_line(struct ubuf *out, int64_t id, const char *device,
                   int64_t seq, int64_t recv_at, const uint8_t *body,
                   size_t body_len)
{
    struct tml_tele t;
    struct jw w;
    size_t mark = out->len;
    int rc;

    jbegin(&w, out);
    jstr(&w, "stream", "tele");
    jint(&w, "id", id);
    jstr(&w, "device", device);
    jint(&w, "seq", seq);
    jint(&w, "recv_at", recv_at);
    if (tml_tele_decode(body, body_len, &t) != TML_OK) {
        jb64(&w, "body_b64", body, body_len);
    } else {
        /* The summary's period ended age_s before it was received. */
        jint(&w, "end_at", recv_at - (int64_t)t.age_s);
        jint(&w, "model_version", t.model_version);
        jint(&w, "period_s", t.period_s);
        jint(&w, "n_inferences", t.n_inferences);
        jint(&w, "n_low_conf", t.n_low_conf);
        jint(&w, "n_flagged", t.n_flagged);
        jint(&w, "n_errors", t.n_errors);
        jint(&w, "n_folded", t.n_folded);
        jint(&w, "n_samples_dropped", t.n_samples_dropped);
        jint(&w, "lat_min_us", t.lat_min_us);
        jint(&w, "lat_mean_us", t.lat_mean_us);
        jint(&w, "lat_max_us", t.lat_max_us);
        jarr(&w, "class_counts", t.class_counts,
             t.n_classes <= TML_MAX_CLASSES ? t.n_classes : 0);
        jarr(&w, "conf_hist", t.conf_hist,
             t.n_conf_bins <= TML_MAX_BINS ? t.n_conf_bins : 0);
        jarr(&w, "lat_hist", t.lat_hist,
             t.n_lat_bins <= TML_MAX_BINS ? t.n_lat_bins : 0);
        if (t.has_health) {
            jint(&w, "free_ram", t.health.free_ram);
            jint(&w, "supply_mv", t.health.supply_mv);
            jint(&w, "temp_dc", t.health.temp_dc);
            jint(&w, "uptime_s", t.health.uptime_s);
        }
    }
    rc = jend(&w);
    if (rc != 0)
        out->len = mark; /* no half line */
    return rc;
}

static const char *
reason_name(int64_t r)
{
    switch (r) {
    case TML_REASON_FLAGGED:
        return "flagged";
    case TML_REASON_LOW_CONF:
        return "low_conf";
    case TML_REASON_AUDIT:
        return "audit";
    default:
        return "unknown";
    }
}

static const char *
dtype_name(int64_t d)
{
    static const char *names[] = {"?", "u8", "i8", "i16", "i32", "f32"};

    return d >= 1 && d <= 5 ? names[d] : "unknown";
}

static const char *
col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);

    return s != NULL ? (const char *)s : "";
}

static int
sample_line(struct ubuf *out, sqlite3_stmt *st)
{
    struct jw w;

    jbegin(&w, out);
    jstr(&w, "stream", "samples");
    jint(&w, "id", sqlite3_column_int64(st, 0));
    jstr(&w, "device", col_text(st, 1));
    jint(&w, "seq", sqlite3_column_int64(st, 2));
    jint(&w, "recv_at", sqlite3_column_int64(st, 3));
    jint(&w, "sample_id", sqlite3_column_int64(st, 4));
    jint(&w, "model_version", sqlite3_column_int64(st, 5));
    jstr(&w, "reason", reason_name(sqlite3_column_int64(st, 6)));
    jint(&w, "predicted", sqlite3_column_int64(st, 7));
    jint(&w, "confidence_bp", sqlite3_column_int64(st, 8));
    if (sqlite3_column_type(st, 9) == SQLITE_NULL)
        jstr(&w, "expected", NULL);
    else
        jint(&w, "expected", sqlite3_column_int64(st, 9));
    jstr(&w, "dtype", dtype_name(sqlite3_column_int64(st, 10)));
    jstr(&w, "shape", col_text(st, 11));
    jint(&w, "rate_hz", sqlite3_column_int64(st, 12));
    jint(&w, "total_len", sqlite3_column_int64(st, 13));
    jint(&w, "offset", sqlite3_column_int64(st, 14));
    jb64(&w, "data_b64", sqlite3_column_blob(st, 15),
         (size_t)sqlite3_column_bytes(st, 15));
    jint(&w, "epoch", sqlite3_column_int64(st, 16));
    return jend(&w);
}

static int
event_line(struct ubuf *out, sqlite3_stmt *st)
{
    struct jw w;
    int64_t kind = sqlite3_column_int64(st, 3);

    jbegin(&w, out);
    jstr(&w, "stream", "events");
    jint(&w, "id", sqlite3_column_int64(st, 0));
    jstr(&w, "device", col_text(st, 1));
    jint(&w, "recv_at", sqlite3_column_int64(st, 2));
    if (kind == UEV_ONLINE || kind == UEV_OFFLINE) {
        jstr(&w, "event", kind == UEV_ONLINE ? "online" : "offline");
    } else {
        jstr(&w, "event", "ota");
        jint(&w, "offer_id", sqlite3_column_int64(st, 4));
        jint(&w, "version", sqlite3_column_int64(st, 5));
        jstr(&w, "state",
             tml_ota_state_name(
                 (enum tml_ota_state)sqlite3_column_int64(st, 6)));
        jstr(&w, "reason",
             tml_ota_reason_name(
                 (enum tml_ota_reason)sqlite3_column_int64(st, 7)));
    }
    return jend(&w);
}

int
upstream_gzip(const uint8_t *in, size_t len, struct ubuf *out)
{
    z_stream z;
    int rc;

    memset(&z, 0, sizeof(z));
    /* 15 + 16: a gzip header and trailer instead of zlib's. */
    if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -ENOMEM;
    size_t bound = deflateBound(&z, (uLong)len) + 32;
    out->len = 0;
    if (bound > out->max) {
        deflateEnd(&z);
        return -E2BIG;
    }
    if (out->cap < bound) {
        uint8_t *q = realloc(out->p, bound);
        if (q == NULL) {
            deflateEnd(&z);
            return -ENOMEM;
        }
        out->p = q;
        out->cap = bound;
    }
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)len;
    z.next_out = out->p;
    z.avail_out = (uInt)out->cap;
    rc = deflate(&z, Z_FINISH);
    if (rc == Z_STREAM_END)
        out->len = out->cap - z.avail_out;
    deflateEnd(&z);
    return rc == Z_STREAM_END ? 0 : -EIO;
}

static const char *const queries[US__COUNT] = {
    [US_TELE] = "SELECT t.id, coalesce(d.name, ''), t.seq, t.recv_at, t.body "
                "FROM tele t LEFT JOIN devices d ON d.id = t.device_id "
                "WHERE t.id BETWEEN ?1 AND ?2 ORDER BY t.id",
    [US_SAMPLES] = "SELECT s.id, coalesce(d.name, ''), s.seq, s.recv_at, "
                   "s.sample_id, s.model_version, s.reason, s.predicted, "
                   "s.confidence_bp, s.expected, s.dtype, s.shape, "
                   "s.rate_hz, s.total_len, s.offset, s.data, s.epoch "
                   "FROM samples s "
                   "LEFT JOIN devices d ON d.id = s.device_id "
                   "WHERE s.id BETWEEN ?1 AND ?2 ORDER BY s.id",
    [US_EVENTS] = "SELECT id, device, recv_at, kind, offer_id, version, "
                  "state, reason FROM upstream_events "
                  "WHERE id BETWEEN ?1 AND ?2 ORDER BY id",
};

int
upstream_body_build(sqlite3 *db, enum ustream s, int64_t first_id,
                    int64_t last_id, size_t max_raw, struct ubuf *out,
                    int64_t *n_rows)
{
    struct ubuf raw;
    sqlite3_stmt *st = NULL;
    int64_t n = 0;
    int rc = 0, src;

    ubuf_init(&raw, max_raw);
    if (sqlite3_prepare_v2(db, queries[s], -1, &st, NULL) != SQLITE_OK) {
        rc = -EIO;
        goto out;
    }
    sqlite3_bind_int64(st, 1, first_id);
    sqlite3_bind_int64(st, 2, last_id);
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        if (s == US_TELE)
            rc = upstream_tele_line(
                &raw, sqlite3_column_int64(st, 0), col_text(st, 1),
                sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3),
                sqlite3_column_blob(st, 4),
                (size_t)sqlite3_column_bytes(st, 4));
        else if (s == US_SAMPLES)
            rc = sample_line(&raw, st);
        else
            rc = event_line(&raw, st);
        if (rc != 0)
            goto out;
        n++;
    }
    if (src != SQLITE_DONE) {
        rc = -EIO;
        goto out;
    }
    rc = upstream_gzip(raw.p, raw.len, out);
    if (rc == 0)
        *n_rows = n;
out:
    sqlite3_finalize(st);
    ubuf_free(&raw);
    return rc;
}
