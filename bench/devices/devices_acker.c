/*
 * devices_acker.c: the gateway side of bench/devices.sh. Connects with the
 * tmld certificate, subscribes tml/v1/+/up/#, and answers every tele and
 * sample record with a cumulative down/ack of the seq it carries (no
 * storage: this measures the devices, not a database). Stops on SIGTERM or
 * SIGINT, or after the given number of seconds, and prints one line:
 * "acker msgs=N acks=M".
 *
 *   devices_acker PORT CA CERT KEY MAX_SECONDS
 */
#define _POSIX_C_SOURCE 200809L
#include <mosquitto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tml/proto.h>

static volatile sig_atomic_t stop;
static unsigned long long n_msgs, n_acks;

static void
on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void
on_connect(struct mosquitto *m, void *user, int rc)
{
    (void)user;
    if (rc == 0)
        mosquitto_subscribe(m, NULL, "tml/v1/+/up/#", 1);
}

static void
on_message(struct mosquitto *m, void *user,
           const struct mosquitto_message *msg)
{
    struct tml_topic t;
    struct tml_ack ack;
    char topic[TML_MAX_TOPIC + 1], dev[TML_MAX_DEVICE_ID + 1];
    uint8_t buf[32];
    size_t len;

    (void)user;
    n_msgs++;
    if (tml_topic_parse(msg->topic, strlen(msg->topic), &t) != TML_OK)
        return;
    memset(&ack, 0, sizeof(ack));
    if (t.kind == TML_KIND_TELE) {
        struct tml_tele te;
        if (tml_tele_decode(msg->payload, (size_t)msg->payloadlen, &te) !=
            TML_OK)
            return;
        ack.has_tele = true;
        ack.tele_seq = te.seq;
    } else if (t.kind == TML_KIND_SAMPLE) {
        struct tml_sample sa;
        if (tml_sample_decode(msg->payload, (size_t)msg->payloadlen, &sa) !=
            TML_OK)
            return;
        ack.has_sample = true;
        ack.sample_seq = sa.seq;
    } else {
        return;
    }
    memcpy(dev, t.dev.p, t.dev.len);
    dev[t.dev.len] = '\0';
    if (tml_topic_build(topic, sizeof(topic), dev, t.dev.len, TML_DIR_DOWN,
                        TML_KIND_ACK, NULL) != TML_OK ||
        tml_ack_encode(&ack, buf, sizeof(buf), &len) != TML_OK)
        return;
    if (mosquitto_publish(m, NULL, topic, (int)len, buf, 1, false) ==
        MOSQ_ERR_SUCCESS)
        n_acks++;
}

int
main(int argc, char **argv)
{
    struct mosquitto *m;
    time_t end;

    if (argc != 6) {
        fprintf(stderr, "usage: devices_acker PORT CA CERT KEY MAX_SECONDS\n");
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    end = time(NULL) + atoi(argv[5]);
    mosquitto_lib_init();
    m = mosquitto_new("tmld", true, NULL);
    if (m == NULL ||
        mosquitto_tls_set(m, argv[2], NULL, argv[3], argv[4], NULL) !=
            MOSQ_ERR_SUCCESS)
        return 1;
    mosquitto_max_inflight_messages_set(m, 1000);
    mosquitto_connect_callback_set(m, on_connect);
    mosquitto_message_callback_set(m, on_message);
    if (mosquitto_connect(m, "127.0.0.1", atoi(argv[1]), 30) !=
        MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "devices_acker: cannot connect\n");
        return 1;
    }
    while (!stop && time(NULL) < end) {
        if (mosquitto_loop(m, 100, 1) != MOSQ_ERR_SUCCESS) {
            struct timespec ts = {0, 300000000L};
            nanosleep(&ts, NULL);
            mosquitto_reconnect(m);
        }
    }
    printf("acker msgs=%llu acks=%llu\n", n_msgs, n_acks);
    mosquitto_destroy(m);
    mosquitto_lib_cleanup();
    return 0;
}
