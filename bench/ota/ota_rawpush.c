/*
 * ota_rawpush.c: the baseline of bench/ota.sh: how long the broker alone
 * needs to deliver BYTES to each of N TLS clients, in CHUNK-sized QoS 1
 * messages on their own down/ota topics, from one publisher holding the
 * tmld certificate. No protocol, no requests, no storage: the floor any
 * OTA transfer through this broker sits on.
 *
 *   ota_rawpush PORT CA TMLD_CERT TMLD_KEY CERT_DIR PREFIX FIRST N BYTES
 *               CHUNK TIMEOUT_S [WINDOW]
 *
 * At most WINDOW chunks (default 4) are in flight per client: bench/ota.sh
 * runs it with the devices' request window (same chunk size, same window)
 * and with 4, the deeper pipelining a plain push can use.
 * Device i is PREFIX + %04u (FIRST + i), its certificate and key are
 * CERT_DIR/<id>/device.crt and device.key (as tml-devsim writes them).
 * Every client runs non-threaded in one epoll loop. Prints
 * "connect_s=... deliver_s=... bytes=... messages=..." and exits 0 when
 * every client got every byte, 1 otherwise.
 */
#define _GNU_SOURCE
#include <mosquitto.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct client {
    struct mosquitto *m;
    char id[64];
    uint64_t got;
    uint64_t sent;
    bool subscribed;
};

static struct client *clients;
static unsigned window = 4; /* chunks in flight per client */

static unsigned n_clients, n_subscribed, n_done;
static uint64_t want_bytes;

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CPU seconds of this process, and of process TML_BROKER_PID if set (for
 * the deliver phase alone: the TLS handshakes before it are not timed). */
static double
cpu_self_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static double
cpu_broker_s(void)
{
    const char *pid = getenv("TML_BROKER_PID");
    char path[64], buf[1024], *p;
    unsigned long ut = 0, st = 0;
    FILE *f;
    size_t n;

    if (pid == NULL)
        return 0;
    snprintf(path, sizeof(path), "/proc/%s/stat", pid);
    f = fopen(path, "r");
    if (f == NULL)
        return 0;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')'); /* fields 14 and 15 after "pid (comm) state" */
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u "
                                   "%*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void
on_subscribe(struct mosquitto *m, void *obj, int mid, int n, const int *qos)
{
    struct client *c = obj;

    (void)m;
    (void)mid;
    (void)n;
    (void)qos;
    if (!c->subscribed) {
        c->subscribed = true;
        n_subscribed++;
    }
}

static void
on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
    struct client *c = obj;

    (void)m;
    c->got += (uint64_t)msg->payloadlen;
    if (c->got == want_bytes)
        n_done++;
}

static struct mosquitto *
client_new(const char *id, const char *ca, const char *crt, const char *key,
           int port, void *obj)
{
    struct mosquitto *m = mosquitto_new(id, true, obj);

    if (m == NULL)
        return NULL;
    if (mosquitto_tls_set(m, ca, NULL, crt, key, NULL) != MOSQ_ERR_SUCCESS ||
        mosquitto_max_inflight_messages_set(m, 0) != MOSQ_ERR_SUCCESS ||
        mosquitto_connect(m, "127.0.0.1", port, 60) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "ota_rawpush: %s: connect failed\n", id);
        mosquitto_destroy(m);
        return NULL;
    }
    return m;
}

static int ep = -1;
static double last_sweep;

/* One round: epoll for the ready sockets only (the cost of a round must not
 * grow with the number of idle clients), the publisher with write interest
 * when it has something queued, and every 100 ms a sweep over all clients
 * for keepalives and writes that did not finish. */
static void
pump(struct pollfd *fds, struct mosquitto *pub, int timeout_ms)
{
    struct epoll_event ev[256];
    struct pollfd pp;
    int n;

    (void)fds;
    pp.fd = mosquitto_socket(pub);
    pp.events = POLLIN | (mosquitto_want_write(pub) ? POLLOUT : 0);
    pp.revents = 0;
    if (poll(&pp, 1, 0) > 0) {
        if (pp.revents & (POLLIN | POLLHUP | POLLERR))
            mosquitto_loop_read(pub, 100);
        if (pp.revents & POLLOUT)
            mosquitto_loop_write(pub, 100);
    }
    n = epoll_wait(ep, ev, 256, mosquitto_want_write(pub) ? 0 : timeout_ms);
    for (int i = 0; i < n; i++) {
        struct mosquitto *m = clients[ev[i].data.u32].m;
        mosquitto_loop_read(m, 100);
        if (mosquitto_want_write(m))
            mosquitto_loop_write(m, 100);
    }
    if (now_s() - last_sweep > 0.1) {
        last_sweep = now_s();
        for (unsigned i = 0; i < n_clients; i++) {
            if (mosquitto_want_write(clients[i].m))
                mosquitto_loop_write(clients[i].m, 100);
            mosquitto_loop_misc(clients[i].m);
        }
        mosquitto_loop_misc(pub);
    }
}

int
main(int argc, char **argv)
{
    if (argc != 12 && argc != 13) {
        fprintf(stderr, "usage: ota_rawpush PORT CA TMLD_CERT TMLD_KEY "
                        "CERT_DIR PREFIX FIRST N BYTES CHUNK TIMEOUT_S "
                        "[WINDOW]\n");
        return 2;
    }
    if (argc == 13) {
        window = (unsigned)atoi(argv[12]);
        if (window == 0 || window > 64) {
            fprintf(stderr, "ota_rawpush: WINDOW must be 1..64\n");
            return 2;
        }
    }
    int port = atoi(argv[1]);
    const char *ca = argv[2], *dir = argv[5], *prefix = argv[6];
    unsigned first = (unsigned)atoi(argv[7]);
    n_clients = (unsigned)atoi(argv[8]);
    want_bytes = strtoull(argv[9], NULL, 10);
    unsigned chunk = (unsigned)atoi(argv[10]);
    double timeout = atof(argv[11]);
    struct pollfd *fds;
    struct mosquitto *pub;
    uint8_t *payload;
    char crt[512], key[512], topic[128];
    double t0, t_conn, t1;
    uint64_t messages = 0;

    if (n_clients == 0 || chunk == 0 || want_bytes == 0)
        return 2;
    mosquitto_lib_init();
    clients = calloc(n_clients, sizeof(*clients));
    fds = calloc(n_clients + 1, sizeof(*fds));
    payload = calloc(1, chunk);
    if (clients == NULL || fds == NULL || payload == NULL)
        return 1;
    t0 = now_s();
    pub = client_new("tmld", ca, argv[3], argv[4], port, NULL);
    if (pub == NULL)
        return 1;
    for (unsigned i = 0; i < n_clients; i++) {
        struct client *c = &clients[i];
        snprintf(c->id, sizeof(c->id), "%s%04u", prefix, first + i);
        snprintf(crt, sizeof(crt), "%s/%s/device.crt", dir, c->id);
        snprintf(key, sizeof(key), "%s/%s/device.key", dir, c->id);
        c->m = client_new(c->id, ca, crt, key, port, c);
        if (c->m == NULL)
            return 1;
        mosquitto_subscribe_callback_set(c->m, on_subscribe);
        mosquitto_message_callback_set(c->m, on_message);
        snprintf(topic, sizeof(topic), "tml/v1/%s/down/ota", c->id);
        mosquitto_subscribe(c->m, NULL, topic, 1);
    }
    ep = epoll_create1(0);
    for (unsigned i = 0; i < n_clients; i++) {
        struct epoll_event e = {.events = EPOLLIN, .data.u32 = i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, mosquitto_socket(clients[i].m),
                      &e) != 0)
            return 1;
    }
    /* Bounded waits: everything below stops at the timeout. */
    while (n_subscribed < n_clients && now_s() - t0 < timeout)
        pump(fds, pub, 100);
    t_conn = now_s();
    double cpu0 = cpu_self_s(), bcpu0 = cpu_broker_s();
    if (n_subscribed < n_clients) {
        fprintf(stderr, "ota_rawpush: %u of %u subscribed\n", n_subscribed,
                n_clients);
        return 1;
    }
    /* Deliver with a window of chunks in flight per client: a
     * plain push of everything at once only measures how the broker copes
     * with huge queues. */
    for (int rounds = 0; n_done < n_clients && now_s() - t0 < timeout &&
                         rounds < 10000000;
         rounds++) {
        for (unsigned i = 0; i < n_clients; i++) {
            struct client *c = &clients[i];
            while (c->sent < want_bytes &&
                   c->sent - c->got < (uint64_t)window * chunk) {
                uint64_t off = c->sent;
                unsigned len = want_bytes - off < chunk
                                   ? (unsigned)(want_bytes - off)
                                   : chunk;
                snprintf(topic, sizeof(topic), "tml/v1/%s/down/ota", c->id);
                memcpy(payload, &off, sizeof(off) < len ? sizeof(off) : len);
                if (mosquitto_publish(pub, NULL, topic, (int)len, payload, 1,
                                      false) != MOSQ_ERR_SUCCESS)
                    break;
                messages++;
                c->sent += len;
            }
        }
        pump(fds, pub, 5);
    }
    while (n_done < n_clients && now_s() - t0 < timeout)
        pump(fds, pub, 50);
    t1 = now_s();
    printf("connect_s=%.2f deliver_s=%.3f bytes=%llu messages=%llu "
           "clients_done=%u deliver_cpu_s=%.2f broker_deliver_cpu_s=%.2f\n",
           t_conn - t0, t1 - t_conn,
           (unsigned long long)want_bytes * n_clients,
           (unsigned long long)messages, n_done, cpu_self_s() - cpu0,
           cpu_broker_s() - bcpu0);
    for (unsigned i = 0; i < n_clients; i++)
        mosquitto_destroy(clients[i].m);
    mosquitto_destroy(pub);
    mosquitto_lib_cleanup();
    free(clients);
    free(fds);
    free(payload);
    return n_done == n_clients ? 0 : 1;
}
