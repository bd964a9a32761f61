/*
 * test_devsim_acl.c: the per-device broker ACL that tml-devsim's devices
 * (and real ones) live under, checked with real TLS clients holding real
 * device certificates (tests/lib/testbroker: identity = certificate CN,
 * pattern ACL on %u, client id pinned to the identity).
 *
 *  I1  device B publishes into device A's up subtree: dropped, the gateway
 *      never sees it (B's own up/tele does arrive: the positive control);
 *  I5  B subscribes to tml/v1/# and tml/v1/+/down/#: receives nothing,
 *      while A does receive the gateway's ack on its own down/ack;
 *  I6  B publishes on A's and on its own down/ (gateway-only) topics:
 *      A receives none of it;
 *  I2  B connects with client id "A": A is not disconnected.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <mosquitto.h>

#include "rig.h"

#define MAX_SEEN 32

struct client {
    struct mosquitto *mosq;
    bool connected, subscribed;
    int n_disconnects;
    int n_msgs;
    char topics[MAX_SEEN][128];
};

struct fx {
    char dir[256];
    struct rig_broker broker;
    struct client gw, a, b, b2;
};

static uint64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
on_connect(struct mosquitto *m, void *user, int rc)
{
    struct client *c = user;

    (void)m;
    c->connected = rc == 0;
}

static void
on_disconnect(struct mosquitto *m, void *user, int rc)
{
    struct client *c = user;

    (void)m;
    (void)rc;
    c->connected = false;
    c->n_disconnects++;
}

static void
on_subscribe(struct mosquitto *m, void *user, int mid, int n,
             const int *granted)
{
    struct client *c = user;

    (void)m;
    (void)mid;
    (void)n;
    (void)granted;
    c->subscribed = true;
}

static void
on_message(struct mosquitto *m, void *user,
           const struct mosquitto_message *msg)
{
    struct client *c = user;

    (void)m;
    if (c->n_msgs < MAX_SEEN)
        snprintf(c->topics[c->n_msgs], sizeof(c->topics[0]), "%s",
                 msg->topic);
    c->n_msgs++;
}

static void
on_log(struct mosquitto *m, void *user, int level, const char *str)
{
    (void)m;
    (void)level;
    if (getenv("TML_ACL_DEBUG"))
        fprintf(stderr, "[%p] %s\n", user, str);
}

static void
client_open(struct fx *f, struct client *c, const char *client_id,
            const char *name)
{
    char crt[600], key[600];

    if (strcmp(name, "tmld") == 0) {
        snprintf(crt, sizeof(crt), "%s", f->broker.tmld_cert);
        snprintf(key, sizeof(key), "%s", f->broker.tmld_key);
    } else {
        snprintf(crt, sizeof(crt), "%s/pki/%s.crt", f->dir, name);
        snprintf(key, sizeof(key), "%s/pki/%s.key", f->dir, name);
    }
    c->mosq = mosquitto_new(client_id, true, c);
    assert_non_null(c->mosq);
    assert_int_equal(mosquitto_tls_set(c->mosq, f->broker.ca, NULL, crt, key,
                                       NULL),
                     MOSQ_ERR_SUCCESS);
    mosquitto_connect_callback_set(c->mosq, on_connect);
    mosquitto_disconnect_callback_set(c->mosq, on_disconnect);
    mosquitto_subscribe_callback_set(c->mosq, on_subscribe);
    mosquitto_message_callback_set(c->mosq, on_message);
    mosquitto_log_callback_set(c->mosq, on_log);
    assert_int_equal(mosquitto_connect(c->mosq, "127.0.0.1", f->broker.port,
                                       30),
                     MOSQ_ERR_SUCCESS);
}

/* Services every open client for ms milliseconds. */
static void
pump(struct fx *f, int ms)
{
    struct client *all[] = {&f->gw, &f->a, &f->b, &f->b2};
    uint64_t end = now_ms() + (uint64_t)ms;
    size_t i;

    while (now_ms() < end)
        for (i = 0; i < sizeof(all) / sizeof(all[0]); i++)
            if (all[i]->mosq)
                mosquitto_loop(all[i]->mosq, 5, 1);
}

static void
pump_until_subscribed(struct fx *f, struct client *c)
{
    uint64_t end = now_ms() + 5000;

    while (!c->subscribed && now_ms() < end)
        pump(f, 20);
    assert_true(c->subscribed);
}

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    if (f == NULL || rig_tmpdir(f->dir, sizeof(f->dir)) != 0)
        return -1;
    mosquitto_lib_init();
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    struct client *all[] = {&f->gw, &f->a, &f->b, &f->b2};
    size_t i;

    for (i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (all[i]->mosq)
            mosquitto_destroy(all[i]->mosq);
    mosquitto_lib_cleanup();
    rig_broker_stop(&f->broker);
    if (getenv("TML_KEEP_TMP") == NULL)
        rig_rmtree(f->dir);
    free(f);
    return 0;
}

static int
count_topic(const struct client *c, const char *topic)
{
    int i, n = 0;

    for (i = 0; i < c->n_msgs && i < MAX_SEEN; i++)
        n += strcmp(c->topics[i], topic) == 0;
    return n;
}

static void
test_acl_confines_each_device_to_its_subtree(void **state)
{
    struct fx *f = *state;
    static const char payload[] = "x";
    static const char *const forged[] = {
        "tml/v1/acl-a/up/tele", "tml/v1/acl-a/up/hello",
        "tml/v1/acl-a/down/ota", "tml/v1/acl-a/down/ack",
        "tml/v1/acl-b/down/cmd",
    };
    int i, dropped = 0;
    size_t k;

    assert_int_equal(rig_broker_start(&f->broker, f->dir), 0);
    assert_int_equal(rig_broker_device(&f->broker, "acl-a"), 0);
    assert_int_equal(rig_broker_device(&f->broker, "acl-b"), 0);
    client_open(f, &f->gw, "tmld", "tmld");
    client_open(f, &f->a, "acl-a", "acl-a");
    client_open(f, &f->b, "acl-b", "acl-b");

    mosquitto_subscribe(f->gw.mosq, NULL, "tml/v1/+/up/#", 1);
    pump_until_subscribed(f, &f->gw);
    mosquitto_subscribe(f->a.mosq, NULL, "tml/v1/acl-a/down/#", 1);
    pump_until_subscribed(f, &f->a);
    mosquitto_subscribe(f->b.mosq, NULL, "tml/v1/#", 1);
    pump_until_subscribed(f, &f->b);
    f->b.subscribed = false;
    mosquitto_subscribe(f->b.mosq, NULL, "tml/v1/+/down/#", 1);
    pump_until_subscribed(f, &f->b);

    /* Positive controls first: B's own up/tele reaches the gateway, the
     * gateway's ack reaches A, and B (subscribed to everything) sees
     * neither (I5). */
    mosquitto_publish(f->b.mosq, NULL, "tml/v1/acl-b/up/tele", 1, payload, 1,
                      false);
    mosquitto_publish(f->gw.mosq, NULL, "tml/v1/acl-a/down/ack", 1, payload,
                      1, false);
    for (i = 0; i < 80 && (f->gw.n_msgs < 1 || f->a.n_msgs < 1); i++)
        pump(f, 25);
    pump(f, 300);
    assert_int_equal(count_topic(&f->gw, "tml/v1/acl-b/up/tele"), 1);
    assert_int_equal(count_topic(&f->a, "tml/v1/acl-a/down/ack"), 1);
    assert_int_equal(f->b.n_msgs, 0);

    /* I1 (into A's up subtree) and I6 (gateway-only down topics): each
     * forgery on its own connection, because mosquitto 2.0 drops the
     * connection of a client whose publish the ACL denies. */
    for (k = 0; k < sizeof(forged) / sizeof(forged[0]); k++) {
        uint64_t end;

        if (!f->b.connected) {
            assert_int_equal(mosquitto_reconnect(f->b.mosq),
                             MOSQ_ERR_SUCCESS);
            end = now_ms() + 3000;
            while (!f->b.connected && now_ms() < end)
                pump(f, 20);
            assert_true(f->b.connected);
        }
        mosquitto_publish(f->b.mosq, NULL, forged[k], 1, payload, 1, false);
        pump(f, 250);
        if (!f->b.connected)
            dropped++;
    }
    pump(f, 500); /* anything that would leak has time to arrive */
    for (i = 0; i < f->gw.n_msgs && i < MAX_SEEN; i++)
        printf("gateway got %s\n", f->gw.topics[i]);
    assert_int_equal(f->gw.n_msgs, 1);
    assert_int_equal(f->a.n_msgs, 1);
    assert_int_equal(f->b.n_msgs, 0);
    printf("FIGURES ACL: forged publishes delivered=0/%zu (connection dropped "
           "%d/%zu), snooped=0, own up delivered=1/1, gateway ack "
           "delivered=1/1\n",
           sizeof(forged) / sizeof(forged[0]), dropped,
           sizeof(forged) / sizeof(forged[0]));

    /* I2: B claims A's client id; A must stay connected. */
    {
        int before = f->a.n_disconnects;
        uint64_t end;

        client_open(f, &f->b2, "acl-a", "acl-b");
        end = now_ms() + 1500;
        while (now_ms() < end)
            pump(f, 50);
        assert_true(f->a.connected);
        assert_int_equal(f->a.n_disconnects, before);
        printf("FIGURES I2 clientid takeover: A disconnects caused=0\n");
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_acl_confines_each_device_to_its_subtree, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
