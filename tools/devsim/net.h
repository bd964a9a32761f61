/*
 * net.h: many libmosquitto clients on one epoll loop.
 *
 * libmosquitto's own loop is select()-based and silently never services a
 * socket numbered >= 1024, and a thread per client does not scale to
 * thousands of devices. So each client's socket sits in one epoll set:
 * EPOLLIN always, EPOLLOUT while mosquitto_want_write(); readiness calls
 * mosquitto_loop_read/write, and net_link_misc() (keepalive) is called by the
 * owner about once a second. After every libmosquitto call on a link the
 * registration is re-synchronised, because any such call may close the
 * socket (and the kernel drops a closed fd from the epoll set by itself).
 */
#ifndef DEVSIM_NET_H
#define DEVSIM_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mosquitto;
struct net_link;

struct net_link_ops {
    void (*on_connect)(struct net_link *l, void *user);
    void (*on_disconnect)(struct net_link *l, void *user, int rc);
    void (*on_message)(struct net_link *l, void *user, const char *topic,
                       const void *payload, size_t len);
};

struct net {
    int epfd;
    int max_fd; /* highest socket number ever registered */
};

struct net_link {
    struct net *net;
    struct mosquitto *mosq;
    const struct net_link_ops *ops;
    void *user;
    int fd;            /* registered fd, -1 if none */
    bool want_out;     /* EPOLLOUT registered */
    bool is_connected; /* CONNACK seen, not yet disconnected */
    bool is_connecting;
    bool is_dead;      /* socket hung up but libmosquitto kept it: the
                          owner must destroy and re-create the link */
    const char *host;
    int port;
    int keepalive_s;
    uint32_t n_connects;
};

/* Returns 0 or -errno. */
int net_init(struct net *n);
void net_close(struct net *n);

/* Creates the client: id (also the MQTT client id), TLS with cafile/certfile/
 * keyfile, a retained last will (will_topic, will payload) unless
 * will_topic is NULL. Returns 0 or -1 (message in err). */
int net_link_init(struct net_link *l, struct net *n, const char *id,
                  const char *host, int port, int keepalive_s,
                  const char *cafile, const char *certfile,
                  const char *keyfile, const char *will_topic,
                  const void *will, size_t will_len,
                  const struct net_link_ops *ops, void *user, char *err,
                  size_t err_cap);
void net_link_destroy(struct net_link *l);

/* Starts a non-blocking (re)connect. Returns 0 or a MOSQ_ERR_* code. */
int net_link_connect(struct net_link *l);
/* Graceful disconnect (DISCONNECT packet: the will is not sent). */
void net_link_disconnect(struct net_link *l);
/* Abrupt link loss: the socket is shut down without DISCONNECT, so the
 * broker sends the will; on_disconnect follows from the next read. */
void net_link_cut(struct net_link *l);
/* QoS 0/1 publish. Returns 0 when libmosquitto took the message (a QoS 1
 * message queued on a socket that just died counts: libmosquitto sends it
 * again after the reconnect), 1 if not connected ("not now"), -1 on
 * error. */
int net_link_publish(struct net_link *l, const char *topic, const void *buf,
                     size_t len, int qos, bool retain);
int net_link_subscribe(struct net_link *l, const char *pattern, int qos);
/* Keepalive and housekeeping; call about once per second. */
void net_link_misc(struct net_link *l);

/* Waits up to timeout_ms for socket readiness and services the ready
 * links. Returns the number of events handled, or -errno. */
int net_run_once(struct net *n, int timeout_ms);

#endif /* DEVSIM_NET_H */
