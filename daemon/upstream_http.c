/*
 * upstream_http.c: libcurl's multi interface driven by tmld's libuv loop.
 *
 * Owns one CURLM, one uv_timer_t (CURLMOPT_TIMERFUNCTION) and one uv_poll_t
 * per socket curl asks us to watch (CURLMOPT_SOCKETFUNCTION). Nothing here
 * blocks: name resolution is curl's threaded resolver, connects, TLS and
 * transfers advance only from poll and timer callbacks through
 * curl_multi_socket_action. Each finished transfer is reported once through
 * its callback, after its easy handle left the multi handle.
 *
 * Invariant: a uv_poll_t is freed only from its close callback, and the
 * struct uhttp only when its timer and every poll handle are closed.
 * TLS verification is always on (peer and host name); only the CA file is
 * configurable. Redirects are not followed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "upstream.h"

struct upoll {
    uv_poll_t h;
    curl_socket_t fd;
    struct uhttp *u;
    bool is_closing;
    struct upoll *next;
};

struct xfer {
    CURL *e;
    struct curl_slist *hdrs;
    uhttp_done_cb cb;
    void *arg;
    struct uhttp_result r;
    size_t body_len;
    char errbuf[CURL_ERROR_SIZE];
    struct xfer *next;
};

struct uhttp {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    struct upoll *polls;
    struct xfer *xfers;
    int n_active;
    int n_handles; /* open libuv handles (timer + polls) */
    bool is_closing;
    void (*closed)(void *);
    void *closed_arg;
    char *url, *ca_file;
    struct uhttp_opts o;
};

static void
maybe_free(struct uhttp *u)
{
    if (!u->is_closing || u->n_handles > 0)
        return;
    void (*done)(void *) = u->closed;
    void *arg = u->closed_arg;
    free(u->url);
    free(u->ca_file);
    free(u);
    if (done != NULL)
        done(arg);
}

static void
poll_closed(uv_handle_t *h)
{
    struct upoll *p = h->data;
    struct uhttp *u = p->u;

    for (struct upoll **pp = &u->polls; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    free(p);
    u->n_handles--;
    maybe_free(u);
}

static void
poll_close(struct upoll *p)
{
    if (p->is_closing)
        return;
    p->is_closing = true;
    uv_poll_stop(&p->h);
    uv_close((uv_handle_t *)&p->h, poll_closed);
}

static void
xfer_free(struct xfer *x)
{
    curl_slist_free_all(x->hdrs);
    if (x->e != NULL)
        curl_easy_cleanup(x->e);
    free(x);
}

static void
unlink_xfer(struct uhttp *u, struct xfer *x)
{
    for (struct xfer **pp = &u->xfers; *pp; pp = &(*pp)->next) {
        if (*pp == x) {
            *pp = x->next;
            return;
        }
    }
}

/* Reports every finished transfer. */
static void
check_info(struct uhttp *u)
{
    CURLMsg *m;
    int left;

    while (!u->is_closing && (m = curl_multi_info_read(u->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct xfer *x = NULL;
        CURL *e = m->easy_handle;
        CURLcode code = m->data.result;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
        x->r.curl_code = (int)code;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &x->r.status);
        if (code != CURLE_OK) {
            snprintf(x->r.error, sizeof(x->r.error), "%s",
                     x->errbuf[0] ? x->errbuf : curl_easy_strerror(code));
            /* A response cut off mid-body or a timeout is not an answer. */
            x->r.status = 0;
        }
        curl_off_t ra = 0;
        if (curl_easy_getinfo(e, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK &&
            ra > 0)
            x->r.retry_after_s = (int64_t)ra;
        long ver = 0;
        if (curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &ver) == CURLE_OK)
            x->r.is_http2 = ver == CURL_HTTP_VERSION_2_0;
        curl_multi_remove_handle(u->multi, e);
        unlink_xfer(u, x);
        u->n_active--;
        struct uhttp_result r = x->r;
        uhttp_done_cb cb = x->cb;
        void *arg = x->arg;
        xfer_free(x);
        cb(arg, &r);
    }
}

static void
on_poll(uv_poll_t *h, int status, int events)
{
    struct upoll *p = h->data;
    struct uhttp *u = p->u;
    int flags = 0, running;

    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(u->multi, p->fd, flags, &running);
    check_info(u);
}

static void
on_timeout(uv_timer_t *t)
{
    struct uhttp *u = t->data;
    int running;

    curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_info(u);
}

static int
socket_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct uhttp *u = userp;
    struct upoll *p = socketp;
    int events = 0;

    (void)e;
    if (what == CURL_POLL_REMOVE) {
        if (p != NULL) {
            /* During curl_multi_cleanup the handle is going away anyway. */
            if (!u->is_closing)
                curl_multi_assign(u->multi, s, NULL);
            poll_close(p);
        }
        return 0;
    }
    if (u->is_closing)
        return 0;
    if (p == NULL) {
        p = calloc(1, sizeof(*p));
        if (p == NULL)
            return -1;
        if (uv_poll_init_socket(u->loop, &p->h, s) != 0) {
            free(p);
            return -1;
        }
        p->fd = s;
        p->u = u;
        p->h.data = p;
        p->next = u->polls;
        u->polls = p;
        u->n_handles++;
        curl_multi_assign(u->multi, s, p);
    }
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&p->h, events, on_poll);
    return 0;
}

static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct uhttp *u = userp;

    (void)multi;
    if (timeout_ms < 0)
        uv_timer_stop(&u->timer);
    else
        uv_timer_start(&u->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct xfer *x = userdata;
    size_t n = size * nmemb;
    size_t room = sizeof(x->r.body) - 1 - x->body_len;
    size_t k = n < room ? n : room;

    memcpy(x->r.body + x->body_len, ptr, k);
    x->body_len += k;
    x->r.body[x->body_len] = '\0';
    return n;
}

struct uhttp *
upstream_http_new(uv_loop_t *loop, const struct uhttp_opts *o)
{
    struct uhttp *u = calloc(1, sizeof(*u));

    if (u == NULL)
        return NULL;
    u->loop = loop;
    u->o = *o;
    u->url = strdup(o->url);
    u->ca_file = o->ca_file != NULL ? strdup(o->ca_file) : NULL;
    u->multi = curl_multi_init();
    if (u->url == NULL || (o->ca_file != NULL && u->ca_file == NULL) ||
        u->multi == NULL) {
        if (u->multi != NULL)
            curl_multi_cleanup(u->multi);
        free(u->url);
        free(u->ca_file);
        free(u);
        return NULL;
    }
    u->o.url = u->url;
    u->o.ca_file = u->ca_file;
    uv_timer_init(loop, &u->timer);
    u->timer.data = u;
    u->n_handles = 1;
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
    /* Streams share one connection when the server speaks HTTP/2. */
    curl_multi_setopt(u->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    return u;
}

int
upstream_http_post(struct uhttp *u, const uint8_t *body, size_t len,
                   const char *const *headers, uhttp_done_cb cb, void *arg)
{
    struct xfer *x;
    CURL *e;

    if (u->is_closing)
        return -ESHUTDOWN;
    x = calloc(1, sizeof(*x));
    if (x == NULL)
        return -ENOMEM;
    x->cb = cb;
    x->arg = arg;
    x->r.retry_after_s = -1;
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
        struct curl_slist *n = curl_slist_append(x->hdrs, headers[i]);
        if (n == NULL) {
            xfer_free(x);
            return -ENOMEM;
        }
        x->hdrs = n;
    }
    e = x->e = curl_easy_init();
    if (e == NULL) {
        xfer_free(x);
        return -ENOMEM;
    }
    curl_easy_setopt(e, CURLOPT_URL, u->o.url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (u->o.ca_file != NULL)
        curl_easy_setopt(e, CURLOPT_CAINFO, u->o.ca_file);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)u->o.timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)u->o.connect_timeout_ms);
    if (u->o.low_speed_time_ms >= 1000) {
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME,
                         (long)(u->o.low_speed_time_ms / 1000));
    }
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    if (curl_multi_add_handle(u->multi, e) != CURLM_OK) {
        xfer_free(x);
        return -EIO;
    }
    x->next = u->xfers;
    u->xfers = x;
    u->n_active++;
    return 0;
}

int
upstream_http_active(const struct uhttp *u)
{
    return u->n_active;
}

static void
timer_closed(uv_handle_t *h)
{
    struct uhttp *u = h->data;

    u->n_handles--;
    maybe_free(u);
}

void
upstream_http_close(struct uhttp *u, void (*done)(void *), void *arg)
{
    if (u == NULL || u->is_closing)
        return;
    u->is_closing = true;
    u->closed = done;
    u->closed_arg = arg;
    while (u->xfers != NULL) {
        struct xfer *x = u->xfers;
        u->xfers = x->next;
        curl_multi_remove_handle(u->multi, x->e);
        xfer_free(x);
    }
    u->n_active = 0;
    curl_multi_cleanup(u->multi);
    u->multi = NULL;
    /* Sockets curl did not ask us to remove (cleanup closes them). */
    for (struct upoll *p = u->polls; p != NULL; p = p->next)
        poll_close(p);
    uv_timer_stop(&u->timer);
    uv_close((uv_handle_t *)&u->timer, timer_closed);
}
