/*
 * tmld_bench_ingest: load for bench/ingest.sh.
 *
 *   tmld_bench_ingest raw  PORT PKI DEVICES RECORDS
 *   tmld_bench_ingest tmld PORT PKI DEVICES RECORDS
 *
 * DEVICES publishers (one TLS client each, certificate PKI/<id>.crt, ids
 * bench-0000..) each send RECORDS up/tele records of 64 bytes at QoS 1 with
 * a window of WINDOW unconfirmed records.
 *   raw:  a libmosquitto subscriber with tmld's certificate (PKI/tmld.crt)
 *         only counts the messages: the broker's throughput baseline. A
 *         record is confirmed when the subscriber has it.
 *   tmld: tmld stores them; a record is confirmed by its cumulative
 *         down/ack, i.e. after tmld committed it.
 * Prints "msgs_per_s=N elapsed_ms=N" (first publish to last confirmation).
 */
#include <pthread.h>
#include <sys/select.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>

#include "tml/proto.h"

#define WINDOW 256
#define MAX_DEV 512

struct dev {
    struct mosquitto *m;
    char id[32];
    atomic_uint confirmed; /* tmld: cumulative ack */
    uint32_t next;
    uint32_t seen;
    uint64_t moved_ms;
};

static struct dev devs[MAX_DEV];
static int n_dev;
static uint32_t n_rec;
static const char *mode;
static atomic_ulong received;
static uint8_t payload[128];
/* libmosquitto hands the client itself to callbacks when obj is NULL, so the
 * subscriber gets a marker of its own. */
static int sub_marker;
static size_t payload_len;

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A summary like the agent's 4-class one at the default config (both
 * histograms, health, low-water, numbering epoch), padded to exactly 64
 * bytes for every seq: the uptime's varint takes up what seq's does not. */
static void
make_payload(uint32_t seq)
{
    static const uint32_t uptimes[] = {100, 10000, 1000000, 100000000,
                                       4000000000u};
    struct tml_tele t;
    memset(&t, 0, sizeof(t));
    t.seq = seq;
    t.lw = seq;
    t.epoch = 0xbeef;
    t.model_version = 3;
    t.period_s = 60;
    t.n_inferences = 1000;
    t.n_low_conf = 50;
    t.n_flagged = 3;
    t.lat_min_us = 18000;
    t.lat_mean_us = 21900;
    t.lat_max_us = 40000;
    t.n_classes = 4;
    t.class_counts[0] = 400;
    t.class_counts[1] = 300;
    t.class_counts[2] = 200;
    t.class_counts[3] = 100;
    t.n_conf_bins = 10;
    t.conf_hist[3] = 20;
    t.conf_hist[4] = 30;
    t.conf_hist[7] = 300;
    t.conf_hist[8] = 350;
    t.conf_hist[9] = 300;
    t.n_lat_bins = 12;
    t.lat_hist[5] = 960;
    t.lat_hist[6] = 40;
    t.has_health = true;
    t.health.free_ram = 20480;
    t.health.supply_mv = 3300;
    t.health.temp_dc = -45;
    for (size_t i = 0; i < sizeof(uptimes) / sizeof(uptimes[0]); i++) {
        t.health.uptime_s = uptimes[i];
        if (tml_tele_encode(&t, payload, sizeof(payload), &payload_len) !=
            TML_OK)
            abort();
        if (payload_len == 64)
            return;
    }
    abort(); /* no uptime width gives 64 bytes for this seq */
}

static void
on_msg(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
    (void)m;
    struct dev *d = obj;
    if (obj == &sub_marker) {
        atomic_fetch_add(&received, 1);
        return;
    }
    struct tml_ack a;
    if (tml_ack_decode(msg->payload, (size_t)msg->payloadlen, &a) == TML_OK &&
        a.has_tele && a.tele_seq > atomic_load(&d->confirmed))
        atomic_store(&d->confirmed, a.tele_seq);
}

static void
on_connect(struct mosquitto *m, void *obj, int rc)
{
    struct dev *d = obj;
    char topic[96];
    if (rc != 0)
        return;
    if (obj == &sub_marker)
        mosquitto_subscribe(m, NULL, "tml/v1/+/up/tele", 1);
    else if (strcmp(mode, "tmld") == 0) {
        snprintf(topic, sizeof(topic), "tml/v1/%s/down/ack", d->id);
        mosquitto_subscribe(m, NULL, topic, 1);
    }
}

static struct mosquitto *
client(const char *id, const char *pki, const char *cn, int port, void *obj)
{
    char crt[512], key[512], ca[512];
    snprintf(crt, sizeof(crt), "%s/%s.crt", pki, cn);
    snprintf(key, sizeof(key), "%s/%s.key", pki, cn);
    snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
    struct mosquitto *m = mosquitto_new(id, true, obj);
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_max_inflight_messages_set(m, WINDOW);
    if (mosquitto_tls_set(m, ca, NULL, crt, key, NULL) != 0)
        abort();
    mosquitto_connect_callback_set(m, on_connect);
    mosquitto_message_callback_set(m, on_msg);
    if (mosquitto_connect(m, "127.0.0.1", port, 30) != 0) {
        fprintf(stderr, "bench: %s cannot connect\n", id);
        exit(1);
    }
    mosquitto_loop_start(m);
    return m;
}

int
main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: tmld_bench_ingest raw|tmld PORT PKI DEVICES "
                        "RECORDS\n");
        return 2;
    }
    mode = argv[1];
    int port = atoi(argv[2]);
    const char *pki = argv[3];
    n_dev = atoi(argv[4]);
    n_rec = (uint32_t)atoi(argv[5]);
    if (n_dev < 1 || n_dev > MAX_DEV)
        return 2;
    /* libmosquitto's threaded loop is select()-based: a client whose socket
     * is >= FD_SETSIZE is never serviced (it never connects and the run only
     * ends at the deadline). Each client holds 3 descriptors (TLS socket and
     * libmosquitto's socket pair), so about 330 clients fit. */
    if (3 * (n_dev + 1) + 16 > FD_SETSIZE) {
        fprintf(stderr,
                "bench: %d devices need descriptors past FD_SETSIZE (%d), "
                "which libmosquitto's select() loop never services; use at "
                "most %d (bench/fleet.sh and tml-devsim go further)\n",
                n_dev, FD_SETSIZE, (FD_SETSIZE - 16) / 3 - 1);
        return 2;
    }
    mosquitto_lib_init();
    make_payload(1);
    fprintf(stderr, "bench: %s, %d devices x %u records of %zu bytes\n", mode,
            n_dev, n_rec, payload_len);
    struct mosquitto *sub = NULL;
    if (strcmp(mode, "raw") == 0) {
        sub = client("tmld", pki, "tmld", port, &sub_marker);
        usleep(300000);
    }
    for (int i = 0; i < n_dev; i++) {
        snprintf(devs[i].id, sizeof(devs[i].id), "bench-%04d", i);
        devs[i].next = 1;
        devs[i].m = client(devs[i].id, pki, devs[i].id, port, &devs[i]);
    }
    usleep(300000);
    uint64_t total = (uint64_t)n_dev * n_rec, t0 = now_ms(), last = t0;
    uint64_t deadline = t0 + 300000;
    for (;;) {
        uint64_t done = 0;
        bool raw = strcmp(mode, "raw") == 0;
        for (int i = 0; i < n_dev; i++) {
            struct dev *d = &devs[i];
            /* raw: the window is the broker's in-flight QoS 1 handshakes
             * (libmosquitto's max_inflight); tmld: unacked records. */
            char topic[96];
            snprintf(topic, sizeof(topic), "tml/v1/%s/up/tele", d->id);
            if (raw) {
                /* The baseline's window: records sent but not yet at the
                 * subscriber, shared evenly. */
                uint64_t sent = 0;
                for (int k = 0; k < n_dev; k++)
                    sent += devs[k].next - 1;
                uint64_t inflight = sent - atomic_load(&received);
                int burst = 0;
                while (d->next <= n_rec &&
                       inflight < (uint64_t)WINDOW * (uint64_t)n_dev &&
                       burst < 64) {
                    make_payload(d->next);
                    if (mosquitto_publish(d->m, NULL, topic, (int)payload_len,
                                          payload, 1, false) != 0)
                        break;
                    d->next++;
                    inflight++;
                    burst++;
                }
            } else {
                uint32_t conf = atomic_load(&d->confirmed);
                uint64_t now = now_ms();
                if (conf != d->seen || d->moved_ms == 0) {
                    d->seen = conf;
                    d->moved_ms = now;
                } else if (now - d->moved_ms > 2000) {
                    d->next = conf + 1; /* go back N, as the agent does */
                    d->moved_ms = now;
                }
                if (d->next <= conf)
                    d->next = conf + 1;
                while (d->next <= n_rec && d->next - conf <= WINDOW) {
                    make_payload(d->next);
                    if (mosquitto_publish(d->m, NULL, topic, (int)payload_len,
                                          payload, 1, false) != 0)
                        break;
                    d->next++;
                }
                done += conf;
            }
        }
        if (raw)
            done = atomic_load(&received);
        if (done >= total) {
            last = now_ms();
            break;
        }
        if (now_ms() > deadline) {
            fprintf(stderr, "bench: timeout with %llu of %llu confirmed\n",
                    (unsigned long long)done, (unsigned long long)total);
            return 1;
        }
        usleep(500);
    }
    uint64_t ms = last - t0 ? last - t0 : 1;
    printf("msgs_per_s=%.0f elapsed_ms=%llu payload_bytes=%zu\n",
           (double)total * 1000.0 / (double)ms, (unsigned long long)ms,
           payload_len);
    for (int i = 0; i < n_dev; i++) {
        mosquitto_disconnect(devs[i].m);
        mosquitto_loop_stop(devs[i].m, false);
        mosquitto_destroy(devs[i].m);
    }
    if (sub) {
        mosquitto_disconnect(sub);
        mosquitto_loop_stop(sub, false);
        mosquitto_destroy(sub);
    }
    mosquitto_lib_cleanup();
    return 0;
}
