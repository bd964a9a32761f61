/*
 * net.c: the epoll loop under tml-devsim's MQTT clients. One struct net owns
 * the epoll fd; each net_link owns one non-threaded libmosquitto client and
 * at most one epoll registration (fd + want_out). Invariant: after any
 * libmosquitto call on a link returns, sync() has made the registration
 * match mosquitto_socket()/mosquitto_want_write(). Sockets are created only
 * in net_link_connect(), which drops the old registration first, so a stale
 * registration can never alias another link's reused fd number.
 */
#define _POSIX_C_SOURCE 200809L
#include "net.h"

#include <errno.h>
#include <mosquitto.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define NET_MAX_EVENTS 256

int
net_init(struct net *n)
{
    n->max_fd = -1;
    n->epfd = epoll_create1(EPOLL_CLOEXEC);
    return n->epfd < 0 ? -errno : 0;
}

void
net_close(struct net *n)
{
    if (n->epfd >= 0)
        close(n->epfd);
    n->epfd = -1;
}

static void
sync_link(struct net_link *l)
{
    int fd = mosquitto_socket(l->mosq);
    bool want_out;
    struct epoll_event ev;

    if (l->fd >= 0 && fd != l->fd) {
        /* The old socket was closed inside libmosquitto; the kernel already
         * removed it from the set. Do not EPOLL_CTL_DEL by number: the
         * number may already belong to another socket. */
        l->fd = -1;
        l->want_out = false;
    }
    if (fd < 0 || l->is_dead)
        return;
    want_out = mosquitto_want_write(l->mosq);
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0u);
    ev.data.ptr = l;
    if (l->fd < 0) {
        if (epoll_ctl(l->net->epfd, EPOLL_CTL_ADD, fd, &ev) == 0) {
            l->fd = fd;
            l->want_out = want_out;
            if (fd > l->net->max_fd)
                l->net->max_fd = fd;
        }
    } else if (want_out != l->want_out) {
        if (epoll_ctl(l->net->epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
            l->want_out = want_out;
    }
}

static void
drop_registration(struct net_link *l)
{
    if (l->fd >= 0 && mosquitto_socket(l->mosq) == l->fd)
        epoll_ctl(l->net->epfd, EPOLL_CTL_DEL, l->fd, NULL);
    l->fd = -1;
    l->want_out = false;
}

static void
cb_connect(struct mosquitto *m, void *user, int rc)
{
    struct net_link *l = user;

    (void)m;
    l->is_connecting = false;
    if (rc != 0)
        return; /* refused: on_disconnect follows */
    l->is_connected = true;
    l->n_connects++;
    if (l->ops->on_connect)
        l->ops->on_connect(l, l->user);
}

static void
cb_disconnect(struct mosquitto *m, void *user, int rc)
{
    struct net_link *l = user;
    bool was = l->is_connected;

    (void)m;
    l->is_connected = false;
    l->is_connecting = false;
    if (l->ops->on_disconnect)
        l->ops->on_disconnect(l, l->user, was ? rc : -1);
}

static void
cb_message(struct mosquitto *m, void *user,
           const struct mosquitto_message *msg)
{
    struct net_link *l = user;

    (void)m;
    if (l->ops->on_message && msg->payloadlen >= 0)
        l->ops->on_message(l, l->user, msg->topic, msg->payload,
                           (size_t)msg->payloadlen);
}

int
net_link_init(struct net_link *l, struct net *n, const char *id,
              const char *host, int port, int keepalive_s, const char *cafile,
              const char *certfile, const char *keyfile,
              const char *will_topic, const void *will, size_t will_len,
              const struct net_link_ops *ops, void *user, char *err,
              size_t err_cap)
{
    int rc;

    memset(l, 0, sizeof(*l));
    l->net = n;
    l->fd = -1;
    l->ops = ops;
    l->user = user;
    l->host = host;
    l->port = port;
    l->keepalive_s = keepalive_s;
    l->mosq = mosquitto_new(id, true, l);
    if (l->mosq == NULL) {
        snprintf(err, err_cap, "%s: mosquitto_new: %s", id, strerror(errno));
        return -1;
    }
    rc = mosquitto_tls_set(l->mosq, cafile, NULL, certfile, keyfile, NULL);
    if (rc != MOSQ_ERR_SUCCESS) {
        snprintf(err, err_cap, "%s: TLS files (%s, %s, %s): %s", id, cafile,
                 certfile, keyfile, mosquitto_strerror(rc));
        goto fail;
    }
    if (will_topic != NULL) {
        rc = mosquitto_will_set(l->mosq, will_topic, (int)will_len, will, 1,
                                true);
        if (rc != MOSQ_ERR_SUCCESS) {
            snprintf(err, err_cap, "%s: will: %s", id,
                     mosquitto_strerror(rc));
            goto fail;
        }
    }
    mosquitto_int_option(l->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_connect_callback_set(l->mosq, cb_connect);
    mosquitto_disconnect_callback_set(l->mosq, cb_disconnect);
    mosquitto_message_callback_set(l->mosq, cb_message);
    return 0;
fail:
    mosquitto_destroy(l->mosq);
    l->mosq = NULL;
    return -1;
}

void
net_link_destroy(struct net_link *l)
{
    if (l->mosq == NULL)
        return;
    drop_registration(l);
    mosquitto_destroy(l->mosq);
    l->mosq = NULL;
}

int
net_link_connect(struct net_link *l)
{
    int rc;

    drop_registration(l);
    l->is_dead = false;
    l->is_connected = false;
    l->is_connecting = true;
    if (l->n_connects == 0 && mosquitto_socket(l->mosq) < 0)
        rc = mosquitto_connect_async(l->mosq, l->host, l->port,
                                     l->keepalive_s);
    else
        rc = mosquitto_reconnect_async(l->mosq);
    if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_CONN_PENDING) {
        l->is_connecting = false;
        sync_link(l);
        return rc;
    }
    sync_link(l);
    return 0;
}

void
net_link_disconnect(struct net_link *l)
{
    if (l->is_connected)
        mosquitto_disconnect(l->mosq);
    sync_link(l);
}

void
net_link_cut(struct net_link *l)
{
    int fd = mosquitto_socket(l->mosq);

    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
}

int
net_link_publish(struct net_link *l, const char *topic, const void *buf,
                 size_t len, int qos, bool retain)
{
    int rc;

    if (!l->is_connected)
        return 1;
    rc = mosquitto_publish(l->mosq, NULL, topic, (int)len, buf, qos, retain);
    sync_link(l);
    if (rc == MOSQ_ERR_SUCCESS)
        return 0;
    /* A QoS 1 message that hit a dying socket is already in libmosquitto's
     * outgoing queue and goes out again after the reconnect: it counts as
     * published, or the receiver would see a record the sender thinks it
     * never sent. */
    if (qos > 0 && (rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_CONN_LOST ||
                    rc == MOSQ_ERR_ERRNO))
        return 0;
    if (rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_CONN_LOST)
        return 1;
    return -1;
}

int
net_link_subscribe(struct net_link *l, const char *pattern, int qos)
{
    int rc = mosquitto_subscribe(l->mosq, NULL, pattern, qos);

    sync_link(l);
    return rc == MOSQ_ERR_SUCCESS ? 0 : -1;
}

void
net_link_misc(struct net_link *l)
{
    if (mosquitto_socket(l->mosq) >= 0) {
        if (l->is_connecting)
            mosquitto_loop_read(l->mosq, 1);
        sync_link(l);
        if (mosquitto_socket(l->mosq) >= 0)
            mosquitto_loop_misc(l->mosq);
    }
    sync_link(l);
}

int
net_run_once(struct net *n, int timeout_ms)
{
    struct epoll_event evs[NET_MAX_EVENTS];
    int i, k;

    k = epoll_wait(n->epfd, evs, NET_MAX_EVENTS, timeout_ms);
    if (k < 0)
        return errno == EINTR ? 0 : -errno;
    for (i = 0; i < k; i++) {
        struct net_link *l = evs[i].data.ptr;

        /* An earlier event in this batch may have closed this link. */
        if (l->mosq == NULL || l->fd < 0 ||
            mosquitto_socket(l->mosq) != l->fd)
            continue;
        /* During the TLS handshake libmosquitto 2.0 only advances
         * SSL_connect() from mosquitto_loop_read() (packet writes wait
         * for it), so any readiness drives a read while connecting. */
        if ((evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) ||
            l->is_connecting)
            mosquitto_loop_read(l->mosq, 1);
        sync_link(l);
        if (l->fd >= 0 && (evs[i].events & EPOLLOUT))
            mosquitto_loop_write(l->mosq, 1);
        sync_link(l);
        /* A hung-up socket that libmosquitto did not close (it can happen
         * while a connect is pending) would report EPOLLHUP forever: take
         * it out of the set and let the owner rebuild the link. */
        if ((evs[i].events & (EPOLLERR | EPOLLHUP)) && l->fd >= 0 &&
            !l->is_connected) {
            drop_registration(l);
            l->is_dead = true;
            l->is_connecting = false;
        }
    }
    return k;
}
