/*
 * ctl.c: the control socket (docs/ctl-protocol.md). A Unix stream socket,
 * mode 0660, newline-delimited JSON. Every connection is bounded: one line
 * buffer of CTL_LINE_MAX bytes, at most CTL_PENDING_MAX unanswered requests,
 * CTL_QUEUED_MAX bytes of unread responses (beyond the first one, which may
 * be larger: a long list), an idle timeout; the number of
 * connections is capped. Nothing a client does can block the loop: reads and
 * writes are non-blocking and handlers answer from the loop.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"

#define CTL_LINE_MAX 65536
#define CTL_PENDING_MAX 16
#define CTL_QUEUED_MAX (1024 * 1024)
#define CTL_SWEEP_MS 250

struct conn;

struct tmld_ctl_req {
    struct tmld *d;
    struct conn *c; /* NULL once the client went away */
    cJSON *id;      /* owned copy */
    uint64_t deadline_ms;
    bool is_timed_out;
    struct tmld_ctl_req *next;
};

struct conn {
    uv_pipe_t pipe;
    struct ctl *ctl;
    char *buf;
    size_t len;
    uint64_t last_active_ms;
    size_t queued;
    uid_t uid;
    gid_t gid;
    pid_t pid;
    unsigned serial;
    bool is_closing;
    struct tmld_ctl_req *reqs;
    size_t n_reqs;
    struct conn *next;
};

struct ctl {
    struct tmld *d;
    uv_pipe_t server;
    uv_timer_t sweep;
    struct conn *conns;
    size_t n_conns;
    unsigned serial;
    uint64_t n_refused;
    int n_closing; /* handles of ctl itself still closing */
};

struct wreq {
    uv_write_t w;
    struct conn *c;
    size_t len;
    char data[];
};

/* ---- connections --------------------------------------------------------- */

static void conn_close(struct conn *c);

static void
conn_freed(uv_handle_t *h)
{
    struct conn *c = h->data;
    free(c->buf);
    free(c);
}

static void
write_done(uv_write_t *w, int status)
{
    struct wreq *r = (struct wreq *)w;
    struct conn *c = r->c;
    c->queued -= r->len;
    (void)status;
    free(r);
}

static void
conn_send(struct conn *c, const char *line)
{
    if (c->is_closing || line == NULL)
        return;
    size_t n = strlen(line);
    /* The cap is on responses piling up unread, not on one response: a
     * list of up to LIST_MAX rows (samples.list --limit 10000: ~2.5 MB) is
     * always sent when nothing else is waiting. */
    if (c->queued != 0 && c->queued + n > CTL_QUEUED_MAX) {
        log_warn("ctl: client uid=%u pid=%d does not read its responses: "
                 "disconnecting",
                 (unsigned)c->uid, (int)c->pid);
        conn_close(c);
        return;
    }
    struct wreq *r = malloc(sizeof(*r) + n);
    if (r == NULL) {
        conn_close(c);
        return;
    }
    memcpy(r->data, line, n);
    r->c = c;
    r->len = n;
    uv_buf_t b = uv_buf_init(r->data, (unsigned)n);
    if (uv_write(&r->w, (uv_stream_t *)&c->pipe, &b, 1, write_done) != 0) {
        free(r);
        conn_close(c);
        return;
    }
    c->queued += n;
}

static void
req_unlink(struct tmld_ctl_req *req)
{
    struct conn *c = req->c;
    if (c == NULL)
        return;
    for (struct tmld_ctl_req **pp = &c->reqs; *pp; pp = &(*pp)->next) {
        if (*pp == req) {
            *pp = req->next;
            c->n_reqs--;
            break;
        }
    }
    req->c = NULL;
}

static void
req_answer(struct tmld_ctl_req *req, bool ok, cJSON *result, const char *code,
           const char *message)
{
    if (req->c != NULL && !req->is_timed_out) {
        char *line = ctl_format_response(req->id, ok, result, code, message);
        result = NULL;
        if (line == NULL)
            line = ctl_format_response(req->id, false, NULL, "internal",
                                       "out of memory");
        conn_send(req->c, line);
        free(line);
    }
    cJSON_Delete(result);
    req_unlink(req);
    cJSON_Delete(req->id);
    free(req);
}

void
tmld_ctl_reply_ok(struct tmld_ctl_req *req, cJSON *result)
{
    req_answer(req, true, result, NULL, NULL);
}

void
tmld_ctl_reply_err(struct tmld_ctl_req *req, const char *code,
                   const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    req_answer(req, false, NULL, code, msg);
}

uint32_t
tmld_ctl_req_uid(const struct tmld_ctl_req *req)
{
    return req->c ? (uint32_t)req->c->uid : UINT32_MAX;
}

static void
send_error(struct conn *c, const cJSON *id, const char *code, const char *msg)
{
    char *line = ctl_format_response(id, false, NULL, code, msg);
    conn_send(c, line);
    free(line);
}

static void
handle_line(struct conn *c, const char *line, size_t len)
{
    struct tmld *d = c->ctl->d;
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
        len--;
    if (len == 0)
        return;
    const char *code = NULL, *msg = NULL;
    cJSON *root = ctl_parse_request(line, len, &code, &msg);
    if (root == NULL) {
        send_error(c, NULL, code, msg);
        return;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
    const char *cmd = cJSON_GetObjectItemCaseSensitive(root, "cmd")->valuestring;
    cJSON *args = cJSON_GetObjectItemCaseSensitive(root, "args");
    cJSON *empty = NULL;
    if (args == NULL || cJSON_IsNull(args))
        args = empty = cJSON_CreateObject();
    struct ctl_verb *v = d->verbs;
    while (v != NULL && strcmp(v->name, cmd) != 0)
        v = v->next;
    if (v == NULL) {
        char m[128];
        snprintf(m, sizeof(m), "no verb '%.40s' (see help)", cmd);
        send_error(c, id, "unknown_cmd", m);
    } else if (c->n_reqs >= CTL_PENDING_MAX) {
        send_error(c, id, "busy", "too many unanswered requests");
    } else if (args == NULL) {
        send_error(c, id, "internal", "out of memory");
    } else {
        struct tmld_ctl_req *req = calloc(1, sizeof(*req));
        cJSON *idc = id ? cJSON_Duplicate(id, 1) : NULL;
        if (req == NULL || (id != NULL && idc == NULL)) {
            free(req);
            cJSON_Delete(idc);
            send_error(c, id, "internal", "out of memory");
        } else {
            req->d = d;
            req->c = c;
            req->id = idc;
            req->deadline_ms = tmld_now_ms(d) + d->set.ctl_timeout_ms;
            req->next = c->reqs;
            c->reqs = req;
            c->n_reqs++;
            log_debug("ctl: uid=%u pid=%d: %s", (unsigned)c->uid, (int)c->pid,
                      cmd);
            v->fn(d, req, args, v->arg);
        }
    }
    cJSON_Delete(empty);
    cJSON_Delete(root);
}

static void
alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct conn *c = h->data;
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(CTL_LINE_MAX - c->len));
}

static void
read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct conn *c = s->data;
    struct tmld *d = c->ctl->d;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    c->last_active_ms = tmld_now_ms(d);
    size_t scan = c->len;
    c->len += (size_t)nread;
    size_t start = 0;
    for (size_t i = scan; i < c->len && !c->is_closing; i++) {
        if (c->buf[i] != '\n')
            continue;
        handle_line(c, c->buf + start, i - start);
        start = i + 1;
    }
    if (c->is_closing)
        return;
    memmove(c->buf, c->buf + start, c->len - start);
    c->len -= start;
    if (c->len >= CTL_LINE_MAX) {
        send_error(c, NULL, "too_large", "request line over 65536 bytes");
        /* Close after the error is written: shutdown flushes queued
         * writes first. */
        uv_read_stop(s);
        c->len = 0;
        c->last_active_ms = 0; /* the sweep closes it */
    }
}

static void
conn_close(struct conn *c)
{
    if (c->is_closing)
        return;
    c->is_closing = true;
    struct ctl *t = c->ctl;
    for (struct conn **pp = &t->conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            t->n_conns--;
            break;
        }
    }
    /* Requests still being answered are detached: their answers are
     * discarded when they come. */
    while (c->reqs) {
        struct tmld_ctl_req *r = c->reqs;
        c->reqs = r->next;
        r->c = NULL;
    }
    log_debug("ctl: conn %u closed", c->serial);
    uv_close((uv_handle_t *)&c->pipe, conn_freed);
}

static void
free_handle(uv_handle_t *h)
{
    free(h);
}

static void
on_connection(uv_stream_t *server, int status)
{
    struct ctl *t = server->data;
    struct tmld *d = t->d;
    if (status < 0)
        return;
    struct conn *c = calloc(1, sizeof(*c));
    char *buf = c ? malloc(CTL_LINE_MAX) : NULL;
    if (c == NULL || buf == NULL) {
        free(c);
        free(buf);
        /* Accept and drop, or the listen queue stays readable forever. */
        uv_pipe_t *tmp = malloc(sizeof(*tmp));
        if (tmp == NULL)
            return;
        uv_pipe_init(d->loop, tmp, 0);
        (void)uv_accept(server, (uv_stream_t *)tmp);
        uv_close((uv_handle_t *)tmp, free_handle);
        return;
    }
    c->buf = buf;
    c->ctl = t;
    uv_pipe_init(d->loop, &c->pipe, 0);
    c->pipe.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
        c->is_closing = true;
        uv_close((uv_handle_t *)&c->pipe, conn_freed);
        return;
    }
    uv_os_fd_t fd;
    struct ucred cr = {0, (uid_t)-1, (gid_t)-1};
    socklen_t cl = sizeof(cr);
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) == 0)
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl);
    c->uid = cr.uid;
    c->gid = cr.gid;
    c->pid = cr.pid;
    c->serial = ++t->serial;
    c->last_active_ms = tmld_now_ms(d);
    if (t->n_conns >= d->set.ctl_max_clients || d->is_stopping) {
        t->n_refused++;
        send_error(c, NULL, "busy", "too many control connections");
        c->is_closing = true;
        uv_close((uv_handle_t *)&c->pipe, conn_freed);
        if (t->n_refused < 10 || t->n_refused % 1000 == 0)
            log_warn("ctl: refused a connection from uid=%u pid=%d: %zu "
                     "clients already (%llu refused so far)",
                     (unsigned)c->uid, (int)c->pid, t->n_conns,
                     (unsigned long long)t->n_refused);
        return;
    }
    c->next = t->conns;
    t->conns = c;
    t->n_conns++;
    log_info("ctl: conn %u from uid=%u gid=%u pid=%d", c->serial,
             (unsigned)c->uid, (unsigned)c->gid, (int)c->pid);
    uv_read_start((uv_stream_t *)&c->pipe, alloc_cb, read_cb);
}

static void
sweep_cb(uv_timer_t *h)
{
    struct ctl *t = h->data;
    struct tmld *d = t->d;
    uint64_t now = tmld_now_ms(d);
    struct conn *next;
    for (struct conn *c = t->conns; c != NULL; c = next) {
        next = c->next;
        for (struct tmld_ctl_req *r = c->reqs; r != NULL; r = r->next) {
            if (!r->is_timed_out && now >= r->deadline_ms) {
                char *line = ctl_format_response(r->id, false, NULL,
                                                 "timeout",
                                                 "not answered in time");
                conn_send(c, line);
                free(line);
                r->is_timed_out = true;
            }
        }
        if (c->is_closing)
            continue;
        if (c->n_reqs == 0 && c->queued == 0 &&
            now - c->last_active_ms >= d->set.ctl_idle_ms)
            conn_close(c);
    }
}

int
tmld_ctl_register(struct tmld *d, const char *verb, tmld_ctl_handler handler,
                  void *arg)
{
    size_t n = verb ? strlen(verb) : 0;
    if (n == 0 || n > 31 || handler == NULL)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        char ch = verb[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.'))
            return -EINVAL;
    }
    for (struct ctl_verb *v = d->verbs; v; v = v->next)
        if (strcmp(v->name, verb) == 0)
            return -EEXIST;
    struct ctl_verb *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return -ENOMEM;
    v->name = verb;
    v->fn = handler;
    v->arg = arg;
    v->next = d->verbs;
    d->verbs = v;
    return 0;
}

int
ctl_start(struct tmld *d)
{
    struct ctl *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    t->d = d;
    d->ctl = t;
    const char *path = d->set.ctl_socket;
    uv_pipe_init(d->loop, &t->server, 0);
    t->server.data = t;
    uv_timer_init(d->loop, &t->sweep);
    t->sweep.data = t;
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            log_err("ctl: %s exists and is not a socket: not touching it",
                    path);
            return -EEXIST;
        }
        unlink(path); /* stale socket of a previous run */
    }
    /* Created 0660 from the start (no window with a wider mode). */
    mode_t old = umask(0117);
    int rc = uv_pipe_bind(&t->server, path);
    umask(old);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&t->server, 64, on_connection);
    if (rc != 0) {
        log_err("ctl: cannot listen on %s: %s (is [control] socket's "
                "directory there and writable?)",
                path, uv_strerror(rc));
        return rc;
    }
    chmod(path, 0660);
    uv_timer_start(&t->sweep, sweep_cb, CTL_SWEEP_MS, CTL_SWEEP_MS);
    log_info("ctl: listening on %s", path);
    return 0;
}

static void
ctl_handle_closed(uv_handle_t *h)
{
    struct ctl *t = h->data;
    if (--t->n_closing == 0)
        free(t);
}

void
ctl_stop(struct tmld *d)
{
    struct ctl *t = d->ctl;
    if (t == NULL)
        return;
    while (t->conns)
        conn_close(t->conns);
    if (t->server.loop != NULL) {
        t->n_closing++;
        uv_close((uv_handle_t *)&t->server, ctl_handle_closed);
        unlink(d->set.ctl_socket);
    }
    if (t->sweep.loop != NULL) {
        t->n_closing++;
        uv_close((uv_handle_t *)&t->sweep, ctl_handle_closed);
    }
    d->ctl = NULL;
    if (t->n_closing == 0)
        free(t);
    while (d->verbs) {
        struct ctl_verb *v = d->verbs;
        d->verbs = v->next;
        free(v);
    }
}

/* ---- argument helpers --------------------------------------------------- */

int
tmld_ctl_arg_str(const cJSON *args, const char *key, size_t max_len,
                 const char **out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, key);
    if (v == NULL || cJSON_IsNull(v))
        return 1;
    if (!cJSON_IsString(v) || strlen(v->valuestring) > max_len)
        return -EINVAL;
    *out = v->valuestring;
    return 0;
}

int
tmld_ctl_arg_int(const cJSON *args, const char *key, int64_t min, int64_t max,
                 int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, key);
    if (v == NULL || cJSON_IsNull(v))
        return 1;
    if (!cJSON_IsNumber(v))
        return -EINVAL;
    double x = v->valuedouble;
    if (x != x || x < (double)min || x > (double)max ||
        x != (double)(int64_t)x)
        return -EINVAL;
    *out = (int64_t)x;
    return 0;
}

int
tmld_ctl_arg_bool(const cJSON *args, const char *key, bool *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, key);
    if (v == NULL || cJSON_IsNull(v))
        return 1;
    if (!cJSON_IsBool(v))
        return -EINVAL;
    *out = cJSON_IsTrue(v);
    return 0;
}
