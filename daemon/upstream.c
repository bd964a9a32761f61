/*
 * upstream.c: tmld's store-and-forward module (issue 8). Forwards three
 * streams (tele summaries, sample chunks, device events) from the database
 * to `[upstream] url` over HTTPS, one gzip'd NDJSON batch per POST.
 *
 * Owns: the per-stream state machines, the HTTP client (upstream_http.c),
 * one read-only SQLite connection per stream used by body builds on the
 * libuv thread pool, the upstream_events rows (written from up/state and
 * up/ota hooks) and the verbs upstream.status / upstream.poisoned.
 *
 * A stream cycles: plan (writer job: batch bounds committed) -> build (worker:
 * rows -> NDJSON -> gzip) -> POST -> on 2xx finish+plan (writer job: cursor
 * forward, next bounds), on 4xx other than 401/403/408/429 poison+plan, on
 * anything else retry the same body after a jittered exponential backoff or
 * the server's Retry-After. At most one batch per stream is in flight, so a
 * stream's batches reach the cloud in row order; its Idempotency-Key
 * (gateway:stream:epoch:first-last) is the same for every retry of a batch,
 * also across a crash, because the bounds were committed before the first
 * send. Nothing here blocks the loop: SQLite reads on the loop are bounded
 * (max(id), one row), bodies are built on the thread pool, curl runs on
 * uv_poll/uv_timer.
 *
 * Deliberately not done: no copy of the records (the core's tables are the
 * backlog; retention bounds it and upstream counts what it deleted before
 * upload as "dropped"); no automatic retry of poisoned batches.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "upstream.h"

#define TOKEN_MAX 4096
#define GATEWAY_MAX 64

enum phase {
    PH_IDLE,     /* nothing to send; the poll timer looks again */
    PH_PLANNING, /* a writer job is planning (or finishing) */
    PH_BUILDING, /* the body is being built on the thread pool */
    PH_SENDING,  /* POST in flight */
    PH_BACKOFF,  /* waiting to retry the same body */
    PH_STOPPED
};

static const char *const phase_names[] = {"idle",    "planning", "building",
                                          "sending", "backoff",  "stopped"};

struct upstream;

struct ustate {
    struct upstream *u;
    enum ustream s;
    enum phase phase;
    bool has_batch;
    struct ubatch b;
    bool has_body;
    struct ubuf body;
    int64_t body_rows;
    int build_rc;
    uv_work_t work;
    sqlite3 *rdb; /* worker-thread connection, one build at a time */
    struct tmld_timer *timer;
    struct ujob *pending_job; /* a job to resubmit after a failure */
    /* replay of a poisoned batch (upstream.retry_poisoned) */
    bool is_replay;
    bool check_replay; /* look for replay rows when next idle */
    int64_t replay_id;
    bool saved_has_batch;
    struct ubatch saved_b;
    /* persisted counters, as of the last job */
    int64_t cursor, epoch, delivered, dropped, poisoned;
    /* since start */
    uint64_t batches_ok, batches_poisoned, retries, bytes_sent;
    uint32_t attempts;
    uint64_t next_try_ms;
    long last_status;
    bool is_http2;
    int64_t last_ok_at;
    char last_error[256];
};

/* Last state seen per device, so that a retained up/state replayed on
 * every (re)subscription or an OTA result the device repeats is one event,
 * not one per replay. Open addressing, bounded; when full, events are
 * recorded without this filter (duplicates, never losses). */
#define SEEN_CAP 16384

struct seen {
    char dev[TML_MAX_DEVICE_ID + 1];
    int8_t online;      /* -1 unknown, 0, 1 */
    uint32_t ota_offer; /* last OTA result recorded */
    uint8_t ota_state;
};

struct upstream {
    struct tmld *d;
    bool is_enabled;
    bool is_stopping;
    int refs; /* outstanding jobs, works and the HTTP client */
    struct uhttp *http;
    struct ustate st[US__COUNT];
    char *url, *ca_file, *token_file;
    char gateway[GATEWAY_MAX + 1];
    char auth_header[TOKEN_MAX + 32];
    char db_path[1024];
    uint64_t batch_rows, batch_bytes, timeout_ms, connect_timeout_ms;
    uint64_t backoff_min_ms, backoff_max_ms, retry_after_max_ms, poll_ms;
    uint64_t low_speed_ms;
    uint64_t events, events_dropped;
    struct seen *seen; /* SEEN_CAP entries, calloc'd on first use */
    size_t n_seen;
    struct tmld_timer *presence; /* registry presence sweep */
};

static void kick(struct ustate *st);

/* The running instance, for upstream_counters() (metrics). */
static struct upstream *up_running;

/* ---- life of the struct -------------------------------------------------- */

static void
maybe_free(struct upstream *u)
{
    if (!u->is_stopping || u->refs > 0)
        return;
    for (int i = 0; i < US__COUNT; i++) {
        struct ustate *st = &u->st[i];
        if (st->rdb != NULL)
            sqlite3_close(st->rdb);
        ubuf_free(&st->body);
        free(st->pending_job);
    }
    free(u->seen);
    free(u->url);
    free(u->ca_file);
    free(u->token_file);
    free(u);
}

static void
unref(struct upstream *u)
{
    u->refs--;
    maybe_free(u);
}

/* ---- timers -------------------------------------------------------------- */

static void
timer_fire(struct tmld *d, void *arg)
{
    struct ustate *st = arg;

    (void)d;
    st->timer = NULL; /* one-shot: the core frees it after this returns */
    if (st->phase == PH_BACKOFF || st->phase == PH_IDLE ||
        st->pending_job != NULL)
        kick(st);
}

static void
arm(struct ustate *st, uint64_t ms)
{
    if (st->timer != NULL)
        tmld_timer_stop(st->timer);
    st->next_try_ms = tmld_now_ms(st->u->d) + ms;
    st->timer = tmld_timer_start(st->u->d, ms, 0, timer_fire, st);
}

/* Full-jitter exponential backoff: a uniform delay in [b/2, b) where b
 * doubles per attempt from backoff_min up to backoff_max. */
static uint64_t
backoff_ms(struct upstream *u, uint32_t attempts)
{
    uint64_t b = u->backoff_min_ms;

    for (uint32_t i = 1; i < attempts && b < u->backoff_max_ms; i++)
        b *= 2;
    if (b > u->backoff_max_ms)
        b = u->backoff_max_ms;
    return b / 2 + (uint64_t)rand() % (b / 2 + 1);
}

/* ---- writer jobs --------------------------------------------------------- */

static void job_done(struct tmld *d, int status, void *arg);

static void
submit_job(struct ustate *st, struct ujob *j)
{
    struct upstream *u = st->u;
    int rc;

    st->phase = PH_PLANNING;
    j->now_s = tmld_wall_s();
    rc = tmld_db_write(u->d, upstream_db_job, job_done, j);
    if (rc == 0) {
        st->pending_job = NULL;
        u->refs++;
        return;
    }
    /* Queue full or stopping: keep the job and try again. */
    st->pending_job = j;
    if (rc != -ESHUTDOWN && !u->is_stopping)
        arm(st, 200);
}

static struct ujob *
new_job(struct ustate *st)
{
    struct ujob *j = calloc(1, sizeof(*j));

    if (j == NULL)
        return NULL;
    j->s = st->s;
    j->max_rows = (int64_t)st->u->batch_rows;
    j->max_bytes = (int64_t)st->u->batch_bytes;
    j->owner = st;
    return j;
}

static void
finish(struct ustate *st, bool is_poison, int http_status, const char *msg)
{
    struct ujob *j = new_job(st);

    st->has_body = false;
    if (j == NULL) {
        arm(st, 1000);
        st->phase = PH_BACKOFF;
        return;
    }
    j->has_finish = true;
    j->is_poison = is_poison;
    j->replay_id = st->is_replay ? st->replay_id : 0;
    j->fin = st->b;
    j->fin.n_rows = st->body_rows;
    j->http_status = http_status;
    snprintf(j->message, sizeof(j->message), "%s", msg != NULL ? msg : "");
    submit_job(st, j);
}

static void
job_done(struct tmld *d, int status, void *arg)
{
    struct ujob *j = arg;
    struct ustate *st = j->owner;
    struct upstream *u = st->u;

    (void)d;
    if (u->is_stopping) {
        free(j);
        unref(u);
        return;
    }
    u->refs--;
    if (status != 0) {
        /* Nothing of the job is stored: run it again (same finish). */
        log_warn("upstream: %s: bookkeeping job failed (%d); retrying",
                 upstream_stream_name(st->s), status);
        st->pending_job = j;
        st->phase = PH_BACKOFF;
        arm(st, 500);
        return;
    }
    st->cursor = j->cursor;
    st->epoch = j->epoch;
    st->delivered = j->delivered;
    st->dropped = j->dropped;
    st->poisoned = j->poisoned;
    if (j->replay_id > 0) {
        /* Back to the regular batch the replay interrupted. */
        st->is_replay = false;
        st->has_batch = st->saved_has_batch;
        st->b = st->saved_b;
        st->check_replay = true;
    } else {
        st->has_batch = j->has_next;
        if (j->has_next)
            st->b = j->next;
    }
    free(j);
    st->phase = PH_IDLE;
    st->attempts = 0;
    kick(st);
}

/* ---- body build on the thread pool --------------------------------------- */

static void
build_work(uv_work_t *w)
{
    struct ustate *st = w->data;
    struct upstream *u = st->u;

    if (st->rdb == NULL) {
        if (sqlite3_open_v2(u->db_path, &st->rdb, SQLITE_OPEN_READONLY, NULL) !=
            SQLITE_OK) {
            sqlite3_close(st->rdb);
            st->rdb = NULL;
            st->build_rc = -EIO;
            return;
        }
        sqlite3_busy_timeout(st->rdb, 2000);
    }
    st->build_rc =
        upstream_body_build(st->rdb, st->s, st->b.first_id, st->b.last_id,
                            u->batch_bytes * 4, &st->body, &st->body_rows);
}

static void send_batch(struct ustate *st);

static void
build_done(uv_work_t *w, int status)
{
    struct ustate *st = w->data;
    struct upstream *u = st->u;

    if (u->is_stopping) {
        unref(u);
        return;
    }
    u->refs--;
    if (status != 0 || st->build_rc != 0) {
        int rc = status != 0 ? status : st->build_rc;
        snprintf(st->last_error, sizeof(st->last_error),
                 "building the body failed: %s", strerror(-rc));
        log_warn("upstream: %s batch %lld-%lld: %s",
                 upstream_stream_name(st->s), (long long)st->b.first_id,
                 (long long)st->b.last_id, st->last_error);
        st->attempts++;
        st->phase = PH_BACKOFF;
        arm(st, backoff_ms(u, st->attempts));
        return;
    }
    if (st->body_rows == 0) {
        /* Every row of the batch was deleted by retention meanwhile. */
        finish(st, false, 0, NULL);
        return;
    }
    st->has_body = true;
    send_batch(st);
}

static void
start_build(struct ustate *st)
{
    struct upstream *u = st->u;

    st->phase = PH_BUILDING;
    st->work.data = st;
    if (uv_queue_work(tmld_loop(u->d), &st->work, build_work, build_done) !=
        0) {
        st->phase = PH_BACKOFF;
        arm(st, 1000);
        return;
    }
    u->refs++;
}

/* ---- HTTP ---------------------------------------------------------------- */

static void
read_token(struct upstream *u)
{
    char tok[TOKEN_MAX + 1];
    size_t n = 0;
    FILE *f;

    u->auth_header[0] = '\0';
    if (u->token_file == NULL)
        return;
    f = fopen(u->token_file, "r");
    if (f == NULL) {
        log_warn("upstream: token_file %s: %s", u->token_file, strerror(errno));
        return;
    }
    n = fread(tok, 1, TOKEN_MAX, f);
    fclose(f);
    tok[n] = '\0';
    while (n > 0 && isspace((unsigned char)tok[n - 1]))
        tok[--n] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (!isgraph((unsigned char)tok[i])) {
            log_warn("upstream: token_file %s: not a single token",
                     u->token_file);
            return;
        }
    }
    snprintf(u->auth_header, sizeof(u->auth_header), "Authorization: Bearer %s",
             tok);
}

static bool
is_poison_status(long s)
{
    /* 408 and 429 say "later"; 401/403 are about the gateway's credentials,
     * not the batch: they wait for a new token instead of poisoning. */
    return s >= 400 && s < 500 && s != 408 && s != 429 && s != 401 && s != 403;
}

static void
http_done(void *arg, const struct uhttp_result *r)
{
    struct ustate *st = arg;
    struct upstream *u = st->u;
    uint64_t delay;

    st->last_status = r->status;
    st->is_http2 = r->is_http2;
    if (r->status >= 200 && r->status < 300) {
        st->batches_ok++;
        st->bytes_sent += st->body.len;
        st->last_ok_at = tmld_wall_s();
        st->last_error[0] = '\0';
        finish(st, false, (int)r->status, NULL);
        return;
    }
    if (is_poison_status(r->status)) {
        char msg[sizeof(r->body)];
        /* Kept for upstream.poisoned: printable ASCII only, so the
         * control socket's JSON stays valid whatever the server said. */
        for (size_t i = 0; i < sizeof(msg); i++) {
            unsigned char c = (unsigned char)r->body[i];
            msg[i] = c == '\0' ? '\0' : (c < 0x20 || c > 0x7e) ? '?' : (char)c;
            if (c == '\0')
                break;
        }
        msg[sizeof(msg) - 1] = '\0';
        st->batches_poisoned++;
        snprintf(st->last_error, sizeof(st->last_error),
                 "HTTP %ld: batch poisoned", r->status);
        log_err("upstream: %s batch %lld-%lld (%lld rows): HTTP %ld: "
                "poisoned, kept, not retried: %.120s",
                upstream_stream_name(st->s), (long long)st->b.first_id,
                (long long)st->b.last_id, (long long)st->body_rows, r->status,
                msg);
        finish(st, true, (int)r->status, msg);
        return;
    }
    st->attempts++;
    st->retries++;
    if (r->status != 0)
        snprintf(st->last_error, sizeof(st->last_error), "HTTP %ld", r->status);
    else
        snprintf(st->last_error, sizeof(st->last_error), "%s", r->error);
    if (r->status == 401 || r->status == 403)
        read_token(u);
    delay = backoff_ms(u, st->attempts);
    if (r->retry_after_s >= 0) {
        uint64_t ra = (uint64_t)r->retry_after_s * 1000;
        delay = ra < u->retry_after_max_ms ? ra : u->retry_after_max_ms;
    }
    if (st->attempts <= 3 || st->attempts % 20 == 0)
        log_warn("upstream: %s batch %lld-%lld: %s; retry %u in %llu ms",
                 upstream_stream_name(st->s), (long long)st->b.first_id,
                 (long long)st->b.last_id, st->last_error, st->attempts,
                 (unsigned long long)delay);
    st->phase = PH_BACKOFF;
    arm(st, delay);
}

static void
send_batch(struct ustate *st)
{
    struct upstream *u = st->u;
    char key[160], stream[48], rows[48], gw[96];
    const char *hdrs[9];
    size_t n = 0;
    int rc;

    snprintf(key, sizeof(key), "Idempotency-Key: %s:%s:%lld:%lld-%lld",
             u->gateway, upstream_stream_name(st->s), (long long)st->b.epoch,
             (long long)st->b.first_id, (long long)st->b.last_id);
    snprintf(stream, sizeof(stream), "X-Tml-Stream: %s",
             upstream_stream_name(st->s));
    snprintf(rows, sizeof(rows), "X-Tml-Rows: %lld", (long long)st->body_rows);
    snprintf(gw, sizeof(gw), "X-Tml-Gateway: %s", u->gateway);
    hdrs[n++] = "Content-Type: application/x-ndjson";
    hdrs[n++] = "Content-Encoding: gzip";
    hdrs[n++] = "Expect:"; /* no 100-continue round trip */
    hdrs[n++] = key;
    hdrs[n++] = stream;
    hdrs[n++] = rows;
    hdrs[n++] = gw;
    if (u->auth_header[0] != '\0')
        hdrs[n++] = u->auth_header;
    hdrs[n] = NULL;
    st->phase = PH_SENDING;
    rc = upstream_http_post(u->http, st->body.p, st->body.len, hdrs, http_done,
                            st);
    if (rc != 0) {
        snprintf(st->last_error, sizeof(st->last_error),
                 "could not start the request: %s", strerror(-rc));
        st->attempts++;
        st->phase = PH_BACKOFF;
        arm(st, backoff_ms(u, st->attempts));
    }
}

/* Starts sending the oldest poisoned batch of st's stream marked for
 * replay, if any (true). The regular pending batch waits; it was not sent
 * yet, or it is sent again later under its own key. */
static bool
start_replay(struct ustate *st)
{
    sqlite3 *db = tmld_db_ro(st->u->d);
    sqlite3_stmt *q = NULL;
    bool found = false;

    st->check_replay = false;
    if (sqlite3_prepare_v2(db,
                           "SELECT id, epoch, first_id, last_id, n_rows FROM "
                           "upstream_poisoned WHERE stream = ?1 AND replay = "
                           "1 ORDER BY id LIMIT 1",
                           -1, &q, NULL) != SQLITE_OK)
        return false;
    sqlite3_bind_text(q, 1, upstream_stream_name(st->s), -1, SQLITE_STATIC);
    if (sqlite3_step(q) == SQLITE_ROW) {
        st->saved_has_batch = st->has_batch;
        st->saved_b = st->b;
        st->is_replay = true;
        st->replay_id = sqlite3_column_int64(q, 0);
        st->b.epoch = sqlite3_column_int64(q, 1);
        st->b.first_id = sqlite3_column_int64(q, 2);
        st->b.last_id = sqlite3_column_int64(q, 3);
        st->b.n_rows = sqlite3_column_int64(q, 4);
        st->has_batch = true;
        found = true;
    }
    sqlite3_finalize(q);
    if (found) {
        log_info("upstream: %s: sending poisoned batch %lld-%lld again",
                 upstream_stream_name(st->s), (long long)st->b.first_id,
                 (long long)st->b.last_id);
        start_build(st);
    }
    return found;
}

/* ---- the state machine --------------------------------------------------- */

static void
kick(struct ustate *st)
{
    struct upstream *u = st->u;

    if (u->is_stopping || tmld_is_stopping(u->d))
        return;
    if (st->pending_job != NULL) {
        submit_job(st, st->pending_job);
        return;
    }
    switch (st->phase) {
    case PH_IDLE:
        if (st->check_replay && start_replay(st))
            return;
        if (st->has_batch) {
            start_build(st);
            return;
        }
        {
            int64_t max_id = upstream_db_max_id(tmld_db_ro(u->d), st->s);
            if (max_id >= 0 && max_id != st->cursor) {
                struct ujob *j = new_job(st);
                if (j != NULL) {
                    submit_job(st, j);
                    return;
                }
            }
        }
        arm(st, u->poll_ms);
        return;
    case PH_BACKOFF:
        if (st->has_body)
            send_batch(st);
        else if (st->has_batch)
            start_build(st);
        else {
            st->phase = PH_IDLE;
            kick(st);
        }
        return;
    default:
        return;
    }
}

/* ---- device events ------------------------------------------------------- */

struct ev_job {
    struct upstream *u;
    char device[TML_MAX_DEVICE_ID + 1];
    int64_t at;
    int kind;
    int64_t offer_id, version, state, reason;
};

static int
ev_insert(sqlite3 *db, void *arg)
{
    struct ev_job *e = arg;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "INSERT INTO upstream_events(device, recv_at, "
                                "kind, offer_id, version, state, reason) "
                                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_bind_text(st, 1, e->device, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, e->at);
    sqlite3_bind_int64(st, 3, e->kind);
    sqlite3_bind_int64(st, 4, e->offer_id);
    sqlite3_bind_int64(st, 5, e->version);
    sqlite3_bind_int64(st, 6, e->state);
    sqlite3_bind_int64(st, 7, e->reason);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : rc;
}

static void
ev_done(struct tmld *d, int status, void *arg)
{
    struct ev_job *e = arg;
    struct upstream *u = e->u;

    (void)d;
    if (status != 0)
        u->events_dropped++;
    free(e);
    unref(u);
}

static void
add_event(struct upstream *u, const char *dev, int kind, int64_t offer_id,
          int64_t version, int64_t state, int64_t reason)
{
    struct ev_job *e;

    if (u->is_stopping)
        return;
    e = calloc(1, sizeof(*e));
    if (e == NULL) {
        u->events_dropped++;
        return;
    }
    e->u = u;
    snprintf(e->device, sizeof(e->device), "%s", dev);
    e->at = tmld_wall_s();
    e->kind = kind;
    e->offer_id = offer_id;
    e->version = version;
    e->state = state;
    e->reason = reason;
    if (tmld_db_write(u->d, ev_insert, ev_done, e) != 0) {
        u->events_dropped++;
        free(e);
        return;
    }
    u->refs++;
    u->events++;
}

/* The device's entry (created), or NULL when the table is full. */
static struct seen *
seen_get(struct upstream *u, const char *dev)
{
    uint32_t h = 2166136261u;

    if (u->seen == NULL) {
        u->seen = calloc(SEEN_CAP, sizeof(*u->seen));
        if (u->seen == NULL)
            return NULL;
    }
    for (const char *p = dev; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    for (size_t i = 0; i < SEEN_CAP; i++) {
        struct seen *e = &u->seen[(h + i) % SEEN_CAP];
        if (e->dev[0] == '\0') {
            if (u->n_seen >= SEEN_CAP * 3 / 4)
                return NULL;
            snprintf(e->dev, sizeof(e->dev), "%s", dev);
            e->online = -1;
            u->n_seen++;
            return e;
        }
        if (strcmp(e->dev, dev) == 0)
            return e;
    }
    return NULL;
}

static void
on_state(struct tmld *d, const char *dev, enum tml_kind kind,
         const uint8_t *payload, size_t len, void *arg)
{
    struct tml_state s;

    (void)d;
    (void)kind;
    if (tml_state_decode(payload, len, &s) != TML_OK)
        return; /* the core counts it */
    struct seen *e = seen_get(arg, dev);
    if (e != NULL) {
        if (e->online == (int8_t)s.online)
            return;
        e->online = (int8_t)s.online;
    }
    add_event(arg, dev, s.online ? UEV_ONLINE : UEV_OFFLINE, 0, 0, 0, 0);
}

static void
on_ota(struct tmld *d, const char *dev, enum tml_kind kind,
       const uint8_t *payload, size_t len, void *arg)
{
    struct tml_ota_up m;

    (void)d;
    (void)kind;
    /* The OTA module counts malformed ones; results only: terminal states. */
    if (tml_ota_up_decode(payload, len, &m) != TML_OK ||
        m.kind != TML_OTA_UP_STATUS)
        return;
    if (m.state == TML_OTA_CONFIRMED || m.state == TML_OTA_FAILED ||
        m.state == TML_OTA_REVERTED) {
        struct seen *e = seen_get(arg, dev);
        if (e != NULL) {
            if (e->ota_offer == m.offer_id && e->ota_state == m.state)
                return;
            e->ota_offer = m.offer_id;
            e->ota_state = m.state;
        }
        add_event(arg, dev, UEV_OTA, m.offer_id, m.version, m.state, m.reason);
    }
}

/* Presence the registry decided without a state message (a device fell
 * silent for [ingest] offline_after, or came back with records only): one
 * event per change, like the up/state ones. */
static void
presence_sweep(struct tmld *d, void *arg)
{
    struct upstream *u = arg;

    if (u->seen == NULL || u->is_stopping)
        return;
    for (size_t i = 0; i < SEEN_CAP; i++) {
        struct seen *e = &u->seen[i];
        if (e->dev[0] == '\0' || e->online < 0)
            continue;
        bool on = tmld_device_is_online(d, e->dev);
        if (on != (e->online == 1)) {
            e->online = on ? 1 : 0;
            add_event(u, e->dev, on ? UEV_ONLINE : UEV_OFFLINE, 0, 0, 0, 0);
        }
    }
}

/* ---- control verbs ------------------------------------------------------- */

static void
v_status(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args, void *arg)
{
    struct upstream *u = arg;
    cJSON *r = cJSON_CreateObject(), *ss;
    int64_t backlog = 0;

    (void)args;
    cJSON_AddBoolToObject(r, "enabled", u->is_enabled);
    if (!u->is_enabled) {
        tmld_ctl_reply_ok(req, r);
        return;
    }
    cJSON_AddStringToObject(r, "url", u->url);
    cJSON_AddStringToObject(r, "gateway", u->gateway);
    ss = cJSON_AddObjectToObject(r, "streams");
    for (int i = 0; i < US__COUNT; i++) {
        struct ustate *st = &u->st[i];
        cJSON *o = cJSON_AddObjectToObject(ss, upstream_stream_name(st->s));
        int64_t max_id = upstream_db_max_id(tmld_db_ro(d), st->s);
        int64_t bl = max_id > st->cursor ? max_id - st->cursor : 0;
        backlog += bl;
        cJSON_AddStringToObject(o, "state", phase_names[st->phase]);
        cJSON_AddNumberToObject(o, "cursor", (double)st->cursor);
        cJSON_AddNumberToObject(o, "epoch", (double)st->epoch);
        cJSON_AddNumberToObject(o, "max_id", (double)max_id);
        cJSON_AddNumberToObject(o, "backlog_rows", (double)bl);
        cJSON_AddNumberToObject(o, "delivered", (double)st->delivered);
        cJSON_AddNumberToObject(o, "dropped", (double)st->dropped);
        cJSON_AddNumberToObject(o, "poisoned", (double)st->poisoned);
        cJSON_AddNumberToObject(o, "batches_ok", (double)st->batches_ok);
        cJSON_AddNumberToObject(o, "batches_poisoned",
                                (double)st->batches_poisoned);
        cJSON_AddNumberToObject(o, "retries", (double)st->retries);
        cJSON_AddNumberToObject(o, "attempts", st->attempts);
        cJSON_AddNumberToObject(o, "bytes_sent", (double)st->bytes_sent);
        cJSON_AddNumberToObject(o, "last_status", (double)st->last_status);
        cJSON_AddStringToObject(o, "last_error", st->last_error);
        cJSON_AddNumberToObject(o, "last_ok_at", (double)st->last_ok_at);
        cJSON_AddBoolToObject(o, "http2", st->is_http2);
        cJSON_AddBoolToObject(o, "replay", st->is_replay);
        if (st->phase == PH_BACKOFF) {
            uint64_t now = tmld_now_ms(d);
            cJSON_AddNumberToObject(
                o, "retry_in_ms",
                st->next_try_ms > now ? (double)(st->next_try_ms - now) : 0);
        }
        if (st->has_batch) {
            cJSON *b = cJSON_AddObjectToObject(o, "batch");
            cJSON_AddNumberToObject(b, "first_id", (double)st->b.first_id);
            cJSON_AddNumberToObject(b, "last_id", (double)st->b.last_id);
            cJSON_AddNumberToObject(b, "rows", (double)st->b.n_rows);
        }
    }
    cJSON_AddNumberToObject(r, "backlog_rows", (double)backlog);
    cJSON_AddNumberToObject(r, "events", (double)u->events);
    cJSON_AddNumberToObject(r, "events_dropped", (double)u->events_dropped);
    tmld_ctl_reply_ok(req, r);
}

bool
upstream_counters(struct tmld *d, struct upstream_counters *c)
{
    /* Stored size of a row as upload reads it: the CBOR summary, the
     * sample chunk, the event's device id and its integers. */
    static const char *const avg_sql[US__COUNT] = {
        [US_TELE] = "SELECT coalesce(avg(length(body)), 0) FROM (SELECT body "
                    "FROM tele WHERE id > ?1 ORDER BY id LIMIT 64)",
        [US_SAMPLES] = "SELECT coalesce(avg(length(data)), 0) FROM (SELECT "
                       "data FROM samples WHERE id > ?1 ORDER BY id LIMIT 64)",
        [US_EVENTS] = "SELECT coalesce(avg(length(device) + 24), 0) FROM "
                      "(SELECT device FROM upstream_events WHERE id > ?1 "
                      "ORDER BY id LIMIT 64)",
    };
    struct upstream *u = up_running;
    if (u == NULL || !u->is_enabled)
        return false;
    for (int i = 0; i < US__COUNT; i++) {
        struct ustate *st = &u->st[i];
        struct upstream_counters *o = &c[i];
        int64_t max_id = upstream_db_max_id(tmld_db_ro(d), st->s);
        sqlite3_stmt *q = NULL;
        double avg = 0;
        memset(o, 0, sizeof(*o));
        o->backlog_rows = max_id > st->cursor ? max_id - st->cursor : 0;
        if (o->backlog_rows > 0 &&
            sqlite3_prepare_v2(tmld_db_ro(d), avg_sql[i], -1, &q, NULL) ==
                SQLITE_OK) {
            sqlite3_bind_int64(q, 1, st->cursor);
            if (sqlite3_step(q) == SQLITE_ROW)
                avg = sqlite3_column_double(q, 0);
        }
        sqlite3_finalize(q);
        o->backlog_bytes = (int64_t)(avg * (double)o->backlog_rows);
        o->is_backoff = st->phase == PH_BACKOFF;
        o->delivered = st->delivered;
        o->dropped = st->dropped;
        o->poisoned = st->poisoned;
        o->batches_ok = st->batches_ok;
        o->batches_poisoned = st->batches_poisoned;
        o->retries = st->retries;
        o->bytes_sent = st->bytes_sent;
    }
    return true;
}

/* upstream.retry: every stream waiting in backoff tries now (for an
 * operator who knows the link is back; backoff may be minutes). */
static void
v_retry(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args, void *arg)
{
    struct upstream *u = arg;
    int n = 0;
    cJSON *r;

    (void)d;
    (void)args;
    if (!u->is_enabled) {
        tmld_ctl_reply_err(req, "unavailable", "upstream is off (no url)");
        return;
    }
    for (int i = 0; i < US__COUNT; i++) {
        struct ustate *st = &u->st[i];
        if (st->phase != PH_BACKOFF && st->phase != PH_IDLE)
            continue;
        if (st->timer != NULL)
            tmld_timer_stop(st->timer);
        st->timer = NULL;
        n += st->phase == PH_BACKOFF;
        kick(st);
    }
    r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "retried", n);
    tmld_ctl_reply_ok(req, r);
}

struct replay_req {
    struct upstream *u;
    struct tmld_ctl_req *req;
    int64_t id;
    int64_t n;
};

static int
replay_mark(sqlite3 *db, void *arg)
{
    struct replay_req *q = arg;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "UPDATE upstream_poisoned SET replay = 1 "
                                "WHERE replay = 0 AND (?1 = 0 OR id = ?1)",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_bind_int64(st, 1, q->id);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    q->n = sqlite3_changes64(db);
    return rc == SQLITE_DONE ? 0 : rc;
}

static void
replay_marked(struct tmld *d, int status, void *arg)
{
    struct replay_req *q = arg;
    struct upstream *u = q->u;

    (void)d;
    if (status != 0) {
        tmld_ctl_reply_err(q->req, "unavailable", "database: %d", status);
    } else {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddNumberToObject(r, "queued", (double)q->n);
        tmld_ctl_reply_ok(q->req, r);
        for (int i = 0; i < US__COUNT && !u->is_stopping; i++) {
            u->st[i].check_replay = true;
            if (u->st[i].phase == PH_IDLE) {
                if (u->st[i].timer != NULL)
                    tmld_timer_stop(u->st[i].timer);
                u->st[i].timer = NULL;
                kick(&u->st[i]);
            }
        }
    }
    free(q);
    unref(u);
}

/* upstream.retry_poisoned {id}: sends poisoned batches again (all when id
 * is absent), each under its original key, ahead of the regular backlog. */
static void
v_retry_poisoned(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
                 void *arg)
{
    struct upstream *u = arg;
    struct replay_req *q;
    int64_t id = 0;

    if (tmld_ctl_arg_int(args, "id", 1, INT64_MAX, &id) < 0) {
        tmld_ctl_reply_err(req, "bad_args", "id (a poisoned batch's id)");
        return;
    }
    if (!u->is_enabled) {
        tmld_ctl_reply_err(req, "unavailable", "upstream is off (no url)");
        return;
    }
    q = calloc(1, sizeof(*q));
    if (q == NULL) {
        tmld_ctl_reply_err(req, "internal", "out of memory");
        return;
    }
    q->u = u;
    q->req = req;
    q->id = id;
    if (tmld_db_write(d, replay_mark, replay_marked, q) != 0) {
        free(q);
        tmld_ctl_reply_err(req, "busy", "the writer queue is full");
        return;
    }
    u->refs++;
}

static void
v_poisoned(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
           void *arg)
{
    int64_t limit = 100;
    sqlite3_stmt *st = NULL;
    cJSON *r, *list;

    (void)arg;
    if (tmld_ctl_arg_int(args, "limit", 1, 1000, &limit) < 0) {
        tmld_ctl_reply_err(req, "bad_args", "limit (1..1000)");
        return;
    }
    if (sqlite3_prepare_v2(tmld_db_ro(d),
                           "SELECT stream, epoch, first_id, last_id, n_rows, "
                           "http_status, message, at, id, replay FROM "
                           "upstream_poisoned ORDER BY id DESC LIMIT ?1",
                           -1, &st, NULL) != SQLITE_OK) {
        tmld_ctl_reply_err(req, "unavailable", "database: %s",
                           sqlite3_errmsg(tmld_db_ro(d)));
        return;
    }
    sqlite3_bind_int64(st, 1, limit);
    r = cJSON_CreateObject();
    list = cJSON_AddArrayToObject(r, "batches");
    while (sqlite3_step(st) == SQLITE_ROW) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "stream",
                                (const char *)sqlite3_column_text(st, 0));
        cJSON_AddNumberToObject(o, "epoch",
                                (double)sqlite3_column_int64(st, 1));
        cJSON_AddNumberToObject(o, "first_id",
                                (double)sqlite3_column_int64(st, 2));
        cJSON_AddNumberToObject(o, "last_id",
                                (double)sqlite3_column_int64(st, 3));
        cJSON_AddNumberToObject(o, "rows", (double)sqlite3_column_int64(st, 4));
        cJSON_AddNumberToObject(o, "http_status",
                                (double)sqlite3_column_int64(st, 5));
        cJSON_AddStringToObject(o, "message",
                                (const char *)sqlite3_column_text(st, 6));
        cJSON_AddNumberToObject(o, "at", (double)sqlite3_column_int64(st, 7));
        cJSON_AddNumberToObject(o, "id", (double)sqlite3_column_int64(st, 8));
        cJSON_AddBoolToObject(o, "replay", sqlite3_column_int64(st, 9) != 0);
        cJSON_AddItemToArray(list, o);
    }
    sqlite3_finalize(st);
    tmld_ctl_reply_ok(req, r);
}

/* ---- config -------------------------------------------------------------- */

static bool
gateway_valid(const char *g)
{
    size_t n = strlen(g);

    if (n == 0 || n > GATEWAY_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)g[i]) && g[i] != '.' && g[i] != '_' &&
            g[i] != '-')
            return false;
    return true;
}

/* Reads [upstream] into u (u may be a scratch struct for the check). */
static int
read_config(struct tmld *d, struct upstream *u, bool report)
{
    const char *url = tmld_config_get(d, "upstream", "url");
    const char *v;
    int bad = 0;

    if (url == NULL || url[0] == '\0')
        return 0;
    if (strncasecmp(url, "https://", 8) != 0 || strlen(url) > 2000) {
        if (report)
            tmld_config_error(d, "upstream", "url",
                              "must be an https:// URL (TLS is required)");
        bad++;
    }
    for (const char *k = "ca_file"; k != NULL;
         k = strcmp(k, "ca_file") == 0 ? "token_file" : NULL) {
        v = tmld_config_get(d, "upstream", k);
        if (v != NULL && access(v, R_OK) != 0) {
            if (report)
                tmld_config_error(d, "upstream", k, "%s: %s", v,
                                  strerror(errno));
            bad++;
        }
    }
    v = tmld_config_get(d, "upstream", "gateway_id");
    if (v != NULL && !gateway_valid(v)) {
        if (report)
            tmld_config_error(d, "upstream", "gateway_id",
                              "1..64 characters of [A-Za-z0-9._-]");
        bad++;
    }
    bad += tmld_config_size(d, "upstream", "batch_bytes", 1u << 20, 4096,
                            64u << 20, &u->batch_bytes) != 0;
    {
        int64_t rows = 0;
        bad += tmld_config_int(d, "upstream", "batch_rows", 500, 1, 100000,
                               &rows) != 0;
        u->batch_rows = (uint64_t)rows;
    }
    bad += tmld_config_ms(d, "upstream", "timeout", 60000, 100, 3600000,
                          &u->timeout_ms) != 0;
    bad += tmld_config_ms(d, "upstream", "connect_timeout", 10000, 100, 600000,
                          &u->connect_timeout_ms) != 0;
    bad += tmld_config_ms(d, "upstream", "low_speed_time", 60000, 0, 3600000,
                          &u->low_speed_ms) != 0;
    {
        int bmin = tmld_config_ms(d, "upstream", "backoff_min", 1000, 10,
                                  3600000, &u->backoff_min_ms) != 0;
        int bmax = tmld_config_ms(d, "upstream", "backoff_max", 300000, 10,
                                  86400000, &u->backoff_max_ms) != 0;
        bad += bmin + bmax;
        if (bmin + bmax == 0 && u->backoff_max_ms < u->backoff_min_ms) {
            if (report)
                tmld_config_error(d, "upstream", "backoff_max",
                                  "must not be below backoff_min");
            bad++;
        }
    }
    bad += tmld_config_ms(d, "upstream", "retry_after_max", 3600000, 0,
                          86400000, &u->retry_after_max_ms) != 0;
    bad += tmld_config_ms(d, "upstream", "poll", 1000, 10, 3600000,
                          &u->poll_ms) != 0;
    return bad;
}

static int
up_check(struct tmld *d)
{
    struct upstream scratch;

    memset(&scratch, 0, sizeof(scratch));
    return read_config(d, &scratch, true);
}

/* ---- life cycle ---------------------------------------------------------- */

static void up_fini(struct tmld *d, void *state);

static int
up_init(struct tmld *d, void **state)
{
    struct upstream *u = calloc(1, sizeof(*u));
    const char *v;
    int rc;

    if (u == NULL)
        return -ENOMEM;
    u->d = d;
    *state = u;
    for (int i = 0; i < US__COUNT; i++) {
        u->st[i].u = u;
        u->st[i].s = (enum ustream)i;
        ubuf_init(&u->st[i].body, 0);
    }
    if ((rc = tmld_ctl_register(d, "upstream.status", v_status, u)) != 0 ||
        (rc = tmld_ctl_register(d, "upstream.poisoned", v_poisoned, u)) != 0 ||
        (rc = tmld_ctl_register(d, "upstream.retry", v_retry, u)) != 0 ||
        (rc = tmld_ctl_register(d, "upstream.retry_poisoned", v_retry_poisoned,
                                u)) != 0)
        goto fail;
    v = tmld_config_get(d, "upstream", "url");
    if (v == NULL || v[0] == '\0') {
        log_info("upstream: no [upstream] url: forwarding is off");
        return 0;
    }
    if (read_config(d, u, false) != 0) {
        rc = -EINVAL;
        goto fail;
    }
    u->url = strdup(v);
    if ((v = tmld_config_get(d, "upstream", "ca_file")) != NULL)
        u->ca_file = strdup(v);
    if ((v = tmld_config_get(d, "upstream", "token_file")) != NULL)
        u->token_file = strdup(v);
    v = tmld_config_get(d, "upstream", "gateway_id");
    if (v == NULL) {
        char host[256] = "";
        gethostname(host, sizeof(host) - 1);
        for (char *p = host; *p; p++)
            if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-')
                *p = '_';
        v = gateway_valid(host) ? host : "gateway";
        snprintf(u->gateway, sizeof(u->gateway), "%.*s", GATEWAY_MAX, v);
    } else {
        snprintf(u->gateway, sizeof(u->gateway), "%.*s", GATEWAY_MAX, v);
    }
    {
        const char *p = sqlite3_db_filename(tmld_db_ro(d), "main");
        snprintf(u->db_path, sizeof(u->db_path), "%s", p ? p : "");
    }
    read_token(u);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        rc = -EIO;
        goto fail;
    }
    {
        struct uhttp_opts o = {
            .url = u->url,
            .ca_file = u->ca_file,
            .timeout_ms = u->timeout_ms,
            .connect_timeout_ms = u->connect_timeout_ms,
            .low_speed_time_ms = u->low_speed_ms,
        };
        u->http = upstream_http_new(tmld_loop(d), &o);
    }
    if (u->url == NULL || u->http == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    u->refs++; /* the HTTP client, released when it has closed */
    for (int i = 0; i < US__COUNT; i++) {
        struct ustate *st = &u->st[i];
        ubuf_init(&st->body, u->batch_bytes * 4 + (1u << 16));
        rc = upstream_db_load(tmld_db_ro(d), st->s, &st->cursor, &st->epoch,
                              &st->delivered, &st->dropped, &st->poisoned,
                              &st->has_batch, &st->b);
        if (rc != 0) {
            log_err("upstream: cannot read the upstream_* tables: %s",
                    sqlite3_errmsg(tmld_db_ro(d)));
            goto fail;
        }
    }
    u->is_enabled = true;
    up_running = u;
    if ((rc = tmld_up_register(d, TML_KIND_STATE, on_state, u)) != 0 ||
        (rc = tmld_up_register(d, TML_KIND_OTA, on_ota, u)) != 0)
        goto fail;
    for (int i = 0; i < US__COUNT; i++)
        arm(&u->st[i], 0);
    for (int i = 0; i < US__COUNT; i++)
        u->st[i].check_replay = true; /* replays marked before a restart */
    u->presence = tmld_timer_start(d, 5000, 5000, presence_sweep, u);
    log_info("upstream: forwarding to %s as gateway %s (batches of %llu "
             "rows / %llu bytes)%s",
             u->url, u->gateway, (unsigned long long)u->batch_rows,
             (unsigned long long)u->batch_bytes,
             u->auth_header[0] ? ", bearer token" : "");
    return 0;
fail:
    /* fini is not called for a module whose init failed. */
    *state = NULL;
    up_fini(d, u);
    return rc;
}

static void
http_closed(void *arg)
{
    unref(arg);
}

static void
up_fini(struct tmld *d, void *state)
{
    struct upstream *u = state;

    (void)d;
    if (u == NULL)
        return;
    if (up_running == u)
        up_running = NULL;
    u->is_stopping = true;
    if (u->presence != NULL)
        tmld_timer_stop(u->presence);
    u->presence = NULL;
    for (int i = 0; i < US__COUNT; i++) {
        struct ustate *st = &u->st[i];
        if (st->timer != NULL)
            tmld_timer_stop(st->timer);
        st->timer = NULL;
        st->phase = PH_STOPPED;
    }
    if (u->http != NULL) {
        /* A batch in flight is simply sent again after the restart, with
         * the same Idempotency-Key. */
        upstream_http_close(u->http, http_closed, u);
        u->http = NULL;
        return;
    }
    maybe_free(u);
}

TMLD_MODULE_CHECKED(upstream, up_init, up_fini, up_check);
