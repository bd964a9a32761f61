/*
 * mqtt.c: the broker link. libmosquitto is driven by tmld's libuv loop: its
 * socket sits in a uv_poll_t (readable always, writable while
 * mosquitto_want_write), mosquitto_loop_misc runs on a timer, and there is
 * no second thread. What the read callbacks publish (a chunk per request
 * during a rollout) is written right after the read, so the writable
 * watch is armed only when the socket is full: libuv changes a poll's
 * events with an epoll DEL + ADD, and toggling it per request cost tmld
 * ~3 epoll_ctl calls per chunk (48,000 per bench/ota.sh phase).
 * TLS with tmld's own client certificate (or, only when
 * the config says the broker is on loopback, plain TCP). One subscription,
 * tml/v1/+/up/#, QoS 1, persistent session (clean_session = false) so the
 * broker queues what arrives while tmld restarts.
 *
 * Reconnect: exponential backoff with jitter between [mqtt] reconnect_min and
 * reconnect_max. Half-open links: libmosquitto's own keepalive check can take
 * up to 2x keepalive, so the link is also declared dead when nothing at all
 * was received for 1.5x keepalive (a healthy idle link receives a PINGRESP
 * every keepalive).
 *
 * The uv_poll_t is bound to one file descriptor: libmosquitto closes its
 * socket inside its own calls, so after every call into it the handle is
 * checked against mosquitto_socket() and replaced when the socket changed,
 * before control returns to the loop (a stale handle could otherwise watch a
 * reused descriptor number).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <mosquitto.h>

#include "core.h"

#define SUB_TOPIC "tml/v1/+/up/#"
#define CONNECT_TIMEOUT_MS 15000

struct mqtt {
    struct tmld *d;
    struct mosquitto *m;
    uv_poll_t *poll; /* allocated: freed from its close callback */
    int poll_fd;
    int poll_events;
    int dead_fd; /* a socket given up on, closed by the next reconnect */
    int n_closing;
    uv_timer_t misc;
    uv_timer_t retry;
    bool is_connected;  /* CONNACK received and subscribed */
    bool is_connecting; /* a socket exists, no CONNACK yet */
    bool is_paused;     /* draining: no more reads */
    bool is_reading;    /* inside mosquitto_loop_read: on_poll syncs */
    bool is_stopped;
    bool has_params; /* connect_async stored host/port/keepalive */
    uint64_t backoff_ms;
    uint64_t connect_started_ms;
    uint64_t last_rx_ms;
    struct mqtt_stats stats;
};

static void sync_poll(struct mqtt *q);
static void schedule_reconnect(struct mqtt *q, const char *why);

static void
poll_closed(uv_handle_t *h)
{
    free(h);
}

static void
drop_poll(struct mqtt *q)
{
    if (q->poll != NULL) {
        uv_close((uv_handle_t *)q->poll, poll_closed);
        q->poll = NULL;
        q->poll_fd = -1;
        q->poll_events = 0;
    }
}

static void
handle_rc(struct mqtt *q, int rc, const char *what)
{
    if (rc == MOSQ_ERR_SUCCESS)
        return;
    if (mosquitto_socket(q->m) < 0) {
        char why[160];
        snprintf(why, sizeof(why), "%s: %s", what,
                 rc == MOSQ_ERR_ERRNO ? strerror(errno)
                                      : mosquitto_strerror(rc));
        schedule_reconnect(q, why);
    }
}

/* Forces libmosquitto through its own error path: the socket is shut down,
 * so the next read fails inside it, it closes the socket and calls
 * on_disconnect. */
static void
kill_link(struct mqtt *q, const char *why)
{
    int fd = mosquitto_socket(q->m);
    if (fd < 0)
        return;
    shutdown(fd, SHUT_RDWR);
    int rc = mosquitto_loop_read(q->m, 1);
    if (mosquitto_socket(q->m) >= 0) {
        /* libmosquitto did not notice (e.g. a TLS connect still pending):
         * stop watching the socket; the reconnect closes it. */
        q->dead_fd = mosquitto_socket(q->m);
        schedule_reconnect(q, why);
        return;
    }
    handle_rc(q, rc == MOSQ_ERR_SUCCESS ? MOSQ_ERR_CONN_LOST : rc, why);
}

/* SO_ERROR of a socket whose non-blocking connect may have failed. */
static int
socket_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        return errno;
    return err;
}

static void
on_poll(uv_poll_t *h, int status, int events)
{
    struct mqtt *q = h->data;
    if (h != q->poll)
        return;
    int rc = MOSQ_ERR_SUCCESS;
    if (status < 0) {
        /* libuv stopped the handle (POLLERR: e.g. a refused connect). */
        q->poll_events = 0;
        kill_link(q, uv_strerror(status));
        sync_poll(q);
        return;
    }
    if (q->is_connecting && (events & (UV_WRITABLE | UV_DISCONNECT))) {
        /* A refused connect: SO_ERROR, or only a hang-up once a write
         * consumed the error. libmosquitto would retry its TLS handshake
         * on the dead socket forever. */
        int err = socket_error(mosquitto_socket(q->m));
        if (err != 0 || (events & UV_DISCONNECT)) {
            kill_link(q, err ? strerror(err) : "connection refused");
            sync_poll(q);
            return;
        }
    }
    if ((events & UV_READABLE) && !q->is_paused) {
        q->last_rx_ms = tmld_now_ms(q->d);
        q->is_reading = true;
        rc = mosquitto_loop_read(q->m, 1);
        q->is_reading = false;
        handle_rc(q, rc, "read");
        /* The callbacks' publishes are queued: write them now. */
        if (!q->is_connecting && mosquitto_socket(q->m) >= 0 &&
            mosquitto_want_write(q->m)) {
            rc = mosquitto_loop_write(q->m, 1);
            handle_rc(q, rc, "write");
        }
    }
    if ((events & UV_WRITABLE) && mosquitto_socket(q->m) >= 0) {
        rc = mosquitto_loop_write(q->m, 1);
        handle_rc(q, rc, "write");
    }
    sync_poll(q);
}

/* Makes the poll handle watch mosquitto's current socket with the right
 * events. Called after every call into libmosquitto. */
static void
sync_poll(struct mqtt *q)
{
    int fd = mosquitto_socket(q->m);
    if (fd != q->poll_fd || fd == q->dead_fd)
        drop_poll(q);
    if (fd < 0 || q->is_stopped || fd == q->dead_fd)
        return;
    if (q->poll == NULL) {
        q->poll = malloc(sizeof(*q->poll));
        if (q->poll == NULL) {
            log_err("mqtt: out of memory");
            return;
        }
        if (uv_poll_init_socket(q->d->loop, q->poll, fd) != 0) {
            free(q->poll);
            q->poll = NULL;
            log_err("mqtt: cannot watch socket %d", fd);
            return;
        }
        q->poll->data = q;
        q->poll_fd = fd;
        q->poll_events = 0;
    }
    int ev = q->is_paused ? 0 : UV_READABLE;
    if (mosquitto_want_write(q->m) || q->is_connecting)
        ev |= UV_WRITABLE;
    if (ev != q->poll_events) {
        q->poll_events = ev;
        if (ev)
            uv_poll_start(q->poll, ev | (ev ? UV_DISCONNECT : 0), on_poll);
        else
            uv_poll_stop(q->poll);
    }
}

static void
do_connect(struct mqtt *q)
{
    struct tmld *d = q->d;
    if (q->is_stopped || d->is_stopping)
        return;
    q->connect_started_ms = tmld_now_ms(d);
    q->last_rx_ms = q->connect_started_ms;
    q->is_connecting = true;
    int rc;
    q->dead_fd = -1;
    if (!q->has_params) {
        q->has_params = true;
        rc = mosquitto_connect_async(q->m, d->set.mqtt_host,
                                     d->set.mqtt_port,
                                     (int)(d->set.mqtt_keepalive_ms / 1000));
    } else {
        rc = mosquitto_reconnect_async(q->m);
    }
    log_debug("mqtt: connect attempt: %s, socket %d", mosquitto_strerror(rc),
              mosquitto_socket(q->m));
    if (rc != MOSQ_ERR_SUCCESS) {
        q->is_connecting = false;
        char why[160];
        snprintf(why, sizeof(why), "connect to %s:%d: %s", d->set.mqtt_host,
                 d->set.mqtt_port,
                 rc == MOSQ_ERR_ERRNO ? strerror(errno)
                                      : mosquitto_strerror(rc));
        schedule_reconnect(q, why);
        return;
    }
    sync_poll(q);
}

static void
retry_cb(uv_timer_t *t)
{
    do_connect(t->data);
}

static void
schedule_reconnect(struct mqtt *q, const char *why)
{
    struct tmld *d = q->d;
    drop_poll(q);
    if (q->is_connected) {
        q->stats.disconnects++;
        log_warn("mqtt: %s:%d: link lost: %s", d->set.mqtt_host,
                 d->set.mqtt_port, why);
    }
    q->is_connected = false;
    q->is_connecting = false;
    if (q->is_stopped || d->is_stopping ||
        uv_is_active((uv_handle_t *)&q->retry))
        return;
    uint64_t min = d->set.mqtt_reconnect_min_ms;
    uint64_t max = d->set.mqtt_reconnect_max_ms;
    q->backoff_ms = q->backoff_ms ? q->backoff_ms * 2 : min;
    if (q->backoff_ms > max)
        q->backoff_ms = max;
    /* Jitter (50..100 %) so that gateways and devices do not reconnect in
     * lockstep after a broker restart. */
    uint64_t delay = q->backoff_ms / 2 +
                     (uint64_t)rand() % (q->backoff_ms / 2 + 1);
    log_info("mqtt: %s; retrying in %llu ms", why,
             (unsigned long long)delay);
    uv_timer_start(&q->retry, retry_cb, delay, 0);
}

static void
misc_cb(uv_timer_t *t)
{
    struct mqtt *q = t->data;
    struct tmld *d = q->d;
    if (mosquitto_socket(q->m) < 0) {
        sync_poll(q);
        return;
    }
    uint64_t now = tmld_now_ms(d);
    /* Dead once nothing came for 1.5x keepalive: checked every tick, so
     * the check fires one tick early rather than up to one tick late
     * (still >= 1.4x keepalive, above a healthy link's PINGRESP period). */
    uint64_t dead_ms =
        d->set.mqtt_keepalive_ms * 3 / 2 - uv_timer_get_repeat(&q->misc);
    if (q->is_connecting &&
        now - q->connect_started_ms > CONNECT_TIMEOUT_MS) {
        log_warn("mqtt: no CONNACK within %d ms", CONNECT_TIMEOUT_MS);
        kill_link(q, "connect timeout");
    } else if (q->is_connected && !q->is_paused &&
               now - q->last_rx_ms >= dead_ms) {
        /* Half-open link (libmosquitto alone would take up to 2x
         * keepalive). */
        log_warn("mqtt: nothing received for %llu ms (keepalive %llu ms): "
                 "link is dead",
                 (unsigned long long)(now - q->last_rx_ms),
                 (unsigned long long)d->set.mqtt_keepalive_ms);
        kill_link(q, "keepalive");
    }
    if (mosquitto_socket(q->m) >= 0) {
        int rc = mosquitto_loop_misc(q->m);
        handle_rc(q, rc, "keepalive");
    }
    sync_poll(q);
}

static void
on_connect(struct mosquitto *m, void *obj, int rc)
{
    struct mqtt *q = obj;
    struct tmld *d = q->d;
    q->is_connecting = false;
    if (rc != 0) {
        log_err("mqtt: %s:%d refused the connection: %s", d->set.mqtt_host,
                d->set.mqtt_port, mosquitto_connack_string(rc));
        mosquitto_disconnect(m);
        return;
    }
    int src = mosquitto_subscribe(m, NULL, SUB_TOPIC, 1);
    if (src != MOSQ_ERR_SUCCESS) {
        log_err("mqtt: subscribe %s: %s", SUB_TOPIC, mosquitto_strerror(src));
        mosquitto_disconnect(m);
        return;
    }
    q->is_connected = true;
    q->backoff_ms = 0;
    q->stats.connects++;
    log_info("mqtt: connected to %s:%d (%s), subscribed to %s",
             d->set.mqtt_host, d->set.mqtt_port,
             d->set.mqtt_tls ? "TLS" : "plaintext loopback", SUB_TOPIC);
}

static void
on_disconnect(struct mosquitto *m, void *obj, int rc)
{
    (void)m;
    struct mqtt *q = obj;
    char why[128];
    snprintf(why, sizeof(why), "disconnected (%s)",
             rc == 0 ? "by tmld" : mosquitto_strerror(rc));
    if (q->is_stopped)
        return;
    /* libmosquitto calls this with its socket already closed. */
    schedule_reconnect(q, why);
}

static void
on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
    (void)m;
    struct mqtt *q = obj;
    struct tmld *d = q->d;
    q->stats.messages++;
    tmld_test_crash("after_recv");
    struct tml_topic t;
    size_t tlen = strlen(msg->topic);
    if (tml_topic_parse(msg->topic, tlen, &t) != TML_OK ||
        t.dir != TML_DIR_UP) {
        /* The broker ACL should make this impossible; count it anyway. */
        q->stats.bad_topic++;
        if (q->stats.bad_topic < 10 || q->stats.bad_topic % 1000 == 0)
            log_warn("mqtt: ignoring message on malformed topic '%.*s' "
                     "(%llu so far)",
                     (int)(tlen > 96 ? 96 : tlen), msg->topic,
                     (unsigned long long)q->stats.bad_topic);
        return;
    }
    char dev[TML_MAX_DEVICE_ID + 1];
    memcpy(dev, t.dev.p, t.dev.len);
    dev[t.dev.len] = '\0';
    if (msg->payloadlen < 0 || (size_t)msg->payloadlen > TML_MAX_MESSAGE) {
        tmld_count_malformed(d, dev, t.kind, "oversize");
        return;
    }
    ingest_on_message(d, &t, dev, msg->payload, (size_t)msg->payloadlen);
}

void
mqtt_dispatch_hooks(struct tmld *d, const char *dev, enum tml_kind kind,
                    const uint8_t *payload, size_t len)
{
    for (struct up_hook *h = d->hooks; h != NULL; h = h->next)
        if (h->kind == kind)
            h->fn(d, dev, kind, payload, len, h->arg);
}

int
tmld_up_register(struct tmld *d, enum tml_kind kind, tmld_up_hook hook,
                 void *arg)
{
    if (hook == NULL || (unsigned)kind >= TML_KIND__COUNT)
        return -EINVAL;
    struct up_hook *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return -ENOMEM;
    h->kind = kind;
    h->fn = hook;
    h->arg = arg;
    struct up_hook **pp = &d->hooks;
    while (*pp)
        pp = &(*pp)->next;
    *pp = h;
    return 0;
}

static int
publish(struct tmld *d, const char *dev, enum tml_kind kind,
        const void *payload, size_t len, int qos)
{
    struct mqtt *q = d->mqtt;
    if (q == NULL || !q->is_connected || mosquitto_socket(q->m) < 0)
        return -ENOTCONN;
    if (len > TML_MAX_MESSAGE || dev == NULL)
        return -EINVAL;
    char topic[TML_MAX_TOPIC + 1];
    size_t tlen;
    if (tml_topic_build(topic, sizeof(topic), dev, strlen(dev), TML_DIR_DOWN,
                        kind, &tlen) != TML_OK)
        return -EINVAL;
    int rc =
        mosquitto_publish(q->m, NULL, topic, (int)len, payload, qos, false);
    if (rc == MOSQ_ERR_NOMEM)
        return -ENOMEM;
    if (rc != MOSQ_ERR_SUCCESS) {
        handle_rc(q, rc, "publish");
        return -ENOTCONN;
    }
    if (!q->is_reading)
        sync_poll(q);
    return 0;
}

int
tmld_publish(struct tmld *d, const char *dev, enum tml_kind kind,
             const void *payload, size_t len)
{
    return publish(d, dev, kind, payload, len, 1);
}

int
tmld_publish_qos0(struct tmld *d, const char *dev, enum tml_kind kind,
                  const void *payload, size_t len)
{
    return publish(d, dev, kind, payload, len, 0);
}

bool
tmld_mqtt_is_connected(struct tmld *d)
{
    return d->mqtt != NULL && d->mqtt->is_connected;
}

const struct mqtt_stats *
mqtt_stats(struct tmld *d)
{
    static const struct mqtt_stats none;
    return d->mqtt ? &d->mqtt->stats : &none;
}

int
mqtt_start(struct tmld *d)
{
    struct settings *s = &d->set;
    struct mqtt *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return -ENOMEM;
    q->d = d;
    q->poll_fd = -1;
    q->dead_fd = -1;
    d->mqtt = q;
    mosquitto_lib_init();
    q->m = mosquitto_new(s->mqtt_client_id, false, q);
    if (q->m == NULL) {
        log_err("mqtt: mosquitto_new: %s", strerror(errno));
        return -ENOMEM;
    }
    mosquitto_int_option(q->m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    /* Small request/answer exchanges (OTA chunks, acks) otherwise wait on
     * Nagle + delayed ACK: 1.95 s -> 0.53 s for one device's 64 KiB OTA. */
    mosquitto_int_option(q->m, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_max_inflight_messages_set(q->m, 1000);
    mosquitto_connect_callback_set(q->m, on_connect);
    mosquitto_disconnect_callback_set(q->m, on_disconnect);
    mosquitto_message_callback_set(q->m, on_message);
    if (s->mqtt_tls) {
        int rc = mosquitto_tls_set(q->m, s->mqtt_cafile, NULL,
                                   s->mqtt_certfile, s->mqtt_keyfile, NULL);
        if (rc == MOSQ_ERR_SUCCESS)
            rc = mosquitto_tls_opts_set(q->m, 1, "tlsv1.2", NULL);
        if (rc != MOSQ_ERR_SUCCESS) {
            log_err("mqtt: TLS setup (cafile %s, certfile %s, keyfile %s): "
                    "%s",
                    s->mqtt_cafile, s->mqtt_certfile, s->mqtt_keyfile,
                    rc == MOSQ_ERR_ERRNO ? strerror(errno)
                                         : mosquitto_strerror(rc));
            return -EINVAL;
        }
    }
    uv_timer_init(d->loop, &q->misc);
    q->misc.data = q;
    uv_timer_init(d->loop, &q->retry);
    q->retry.data = q;
    uint64_t period = s->mqtt_keepalive_ms / 10;
    if (period > 1000)
        period = 1000;
    uv_timer_start(&q->misc, misc_cb, period, period);
    do_connect(q);
    return 0;
}

void
mqtt_pause(struct tmld *d)
{
    struct mqtt *q = d->mqtt;
    if (q == NULL)
        return;
    q->is_paused = true;
    uv_timer_stop(&q->retry);
    sync_poll(q);
}

bool
mqtt_write_idle(struct tmld *d)
{
    struct mqtt *q = d->mqtt;
    return q == NULL || mosquitto_socket(q->m) < 0 ||
           !mosquitto_want_write(q->m);
}

static void
mqtt_free_cb(uv_handle_t *h)
{
    struct mqtt *q = h->data;
    /* Two handles close (in no promised order); the last one frees. */
    if (--q->n_closing > 0)
        return;
    mosquitto_destroy(q->m);
    mosquitto_lib_cleanup();
    free(q);
}

void
mqtt_stop(struct tmld *d)
{
    struct mqtt *q = d->mqtt;
    if (q == NULL)
        return;
    q->is_stopped = true;
    if (q->m != NULL && mosquitto_socket(q->m) >= 0) {
        mosquitto_disconnect(q->m);
        /* Flush the DISCONNECT; the socket is non-blocking, so this is a
         * best effort that cannot stall. */
        mosquitto_loop_write(q->m, 1);
    }
    drop_poll(q);
    d->mqtt = NULL;
    if (q->misc.loop == NULL) {
        mosquitto_destroy(q->m);
        free(q);
        return;
    }
    q->n_closing = 2;
    uv_close((uv_handle_t *)&q->misc, mqtt_free_cb);
    uv_close((uv_handle_t *)&q->retry, mqtt_free_cb);
}
