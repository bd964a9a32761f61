/*
 * test_broker_security.c: issue 7's must-show points and the catalogue's
 * I1-I6 against a real mosquitto started with the configuration rendered by
 * `tmlctl broker-config` and certificates from `tmlctl pki` / `tmlctl device
 * provision` (the tmlctl binary under test, no openssl shortcuts except for
 * the attacker's own certificates: self-signed and odd-CN ones).
 *
 * Counts are taken on both sides: what the attacker sent (and, with MQTT 5,
 * the broker's PUBACK reason codes) and what tmld's identity and the victim
 * received.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <mosquitto.h>

#include "tml/proto.h"

#define N_ATTEMPTS 1000
#define N_TAKEOVERS 50
#define LONG_ID                                                                \
    "d123456789012345678901234567890123456789012345678901234567890123"

struct rig {
    char dir[64];
    char tmlctl[1024];
    char pki[128], pki2[128], dev[128];
    int port;
    pid_t broker;
};

static struct rig *the_rig;

/* ---- processes ----------------------------------------------------------- */

static int
sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void
kill_broker(void)
{
    if (the_rig != NULL && the_rig->broker > 0) {
        kill(the_rig->broker, SIGTERM);
        for (int i = 0; i < 100; i++) {
            if (waitpid(the_rig->broker, NULL, WNOHANG) == the_rig->broker)
                break;
            usleep(20000);
        }
        kill(the_rig->broker, SIGKILL);
        waitpid(the_rig->broker, NULL, WNOHANG);
        the_rig->broker = 0;
    }
}

static int
free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &l) != 0)
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

/* ---- MQTT clients (libmosquitto, driven by pump()) --------------------- */

struct cl {
    struct mosquitto *m;
    int connack;        /* -1 none yet */
    int connects;
    int disconnects;
    int msgs;           /* messages received */
    int msgs_topic;     /* received on `watch` */
    char watch[128];
    int puback_ok, puback_denied;
    int subscribed;
    int dead; /* mosquitto_loop reported a lost/refused connection */
};

/* Protocol of the next client() (MQTT 5 unless a test needs 3.1.1). */
static int next_protocol = MQTT_PROTOCOL_V5;

static void
on_connect(struct mosquitto *m, void *o, int rc, int flags,
           const mosquitto_property *p)
{
    (void)m;
    (void)flags;
    (void)p;
    struct cl *c = o;
    c->connack = rc;
    if (rc == 0)
        c->connects++;
}

static void
on_disconnect(struct mosquitto *m, void *o, int rc,
              const mosquitto_property *p)
{
    (void)m;
    (void)rc;
    (void)p;
    ((struct cl *)o)->disconnects++;
}

static void
on_message(struct mosquitto *m, void *o, const struct mosquitto_message *msg,
           const mosquitto_property *p)
{
    (void)m;
    (void)p;
    struct cl *c = o;
    c->msgs++;
    if (c->watch[0] != '\0' && strcmp(msg->topic, c->watch) == 0)
        c->msgs_topic++;
}

static void
on_publish(struct mosquitto *m, void *o, int mid, int reason,
           const mosquitto_property *p)
{
    (void)m;
    (void)mid;
    (void)p;
    struct cl *c = o;
    /* MQTT 5 reason codes below 0x80 are successes (0x10: no matching
     * subscribers); 0x87 is "not authorized". */
    if (reason < 0x80)
        c->puback_ok++;
    else
        c->puback_denied++;
}

static void
on_subscribe(struct mosquitto *m, void *o, int mid, int n, const int *qos,
             const mosquitto_property *p)
{
    (void)m;
    (void)mid;
    (void)n;
    (void)qos;
    (void)p;
    ((struct cl *)o)->subscribed++;
}

static void
pump(struct cl **cs, size_t n, int ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        for (size_t i = 0; i < n; i++)
            if (cs[i] != NULL && cs[i]->m != NULL) {
                int rc = mosquitto_loop(cs[i]->m, 2, 64);
                if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN)
                    cs[i]->dead++;
            }
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000 +
                 (t.tv_nsec - t0.tv_nsec) / 1000000 <
             ms);
}

/* Pumps until *flag >= want or timeout_ms. */
static void
pump_until(struct cl **cs, size_t n, const int *flag, int want,
           int timeout_ms)
{
    for (int waited = 0; *flag < want && waited < timeout_ms; waited += 20)
        pump(cs, n, 20);
}

/* Creates a client with certificate files cert/key (NULL: none), MQTT 5,
 * and starts connecting. Returns it even if the connect fails early. */
static struct cl *
client(const char *client_id, const char *ca, const char *cert,
       const char *key)
{
    struct cl *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->connack = -1;
    c->m = mosquitto_new(client_id, true, c);
    assert_non_null(c->m);
    mosquitto_int_option(c->m, MOSQ_OPT_PROTOCOL_VERSION, next_protocol);
    mosquitto_connect_v5_callback_set(c->m, on_connect);
    mosquitto_disconnect_v5_callback_set(c->m, on_disconnect);
    mosquitto_message_v5_callback_set(c->m, on_message);
    mosquitto_publish_v5_callback_set(c->m, on_publish);
    mosquitto_subscribe_v5_callback_set(c->m, on_subscribe);
    assert_int_equal(mosquitto_tls_set(c->m, ca, NULL, cert, key, NULL),
                     MOSQ_ERR_SUCCESS);
    if (mosquitto_connect(c->m, "127.0.0.1", the_rig->port, 30) !=
        MOSQ_ERR_SUCCESS)
        c->connack = 999;
    return c;
}

static void
client_free(struct cl *c)
{
    if (c == NULL)
        return;
    mosquitto_disconnect(c->m);
    mosquitto_loop(c->m, 5, 1);
    mosquitto_destroy(c->m);
    free(c);
}

/* A connected client of a provisioned identity in the rig. */
static struct cl *
dev_client(const char *id, const char *client_id)
{
    char ca[256], crt[256], key[256];
    snprintf(ca, sizeof(ca), "%s/ca.crt", the_rig->pki);
    snprintf(crt, sizeof(crt), "%s/%s.crt", the_rig->dev, id);
    snprintf(key, sizeof(key), "%s/%s.key", the_rig->dev, id);
    struct cl *c = client(client_id ? client_id : id, ca, crt, key);
    struct cl *cs[] = {c};
    for (int w = 0; c->connack < 0 && !c->dead && w < 5000; w += 20)
        pump(cs, 1, 20);
    return c;
}

static struct cl *
tmld_client(void)
{
    char ca[256], crt[256], key[256];
    snprintf(ca, sizeof(ca), "%s/ca.crt", the_rig->pki);
    snprintf(crt, sizeof(crt), "%s/tmld.crt", the_rig->pki);
    snprintf(key, sizeof(key), "%s/tmld.key", the_rig->pki);
    struct cl *c = client("tmld", ca, crt, key);
    struct cl *cs[] = {c};
    for (int w = 0; c->connack < 0 && w < 5000; w += 20)
        pump(cs, 1, 20);
    assert_int_equal(c->connack, 0);
    return c;
}

static void
subscribe(struct cl *c, const char *pattern)
{
    int before = c->subscribed;
    assert_int_equal(mosquitto_subscribe_v5(c->m, NULL, pattern, 1, 0, NULL),
                     MOSQ_ERR_SUCCESS);
    struct cl *cs[] = {c};
    pump_until(cs, 1, &c->subscribed, before + 1, 3000);
    assert_int_equal(c->subscribed, before + 1);
}

/* Publishes n QoS 1 messages and pumps until every PUBACK came back. */
static void
publish_n(struct cl *c, struct cl **others, size_t n_others,
          const char *topic, int n, size_t len)
{
    char *payload = calloc(1, len ? len : 1);
    int want = c->puback_ok + c->puback_denied + n;
    for (int i = 0; i < n; i++) {
        assert_int_equal(mosquitto_publish_v5(c->m, NULL, topic, (int)len,
                                              payload, 1, false, NULL),
                         MOSQ_ERR_SUCCESS);
        if (i % 50 == 49) {
            struct cl *cs[1] = {c};
            pump(cs, 1, 1);
            pump(others, n_others, 1);
        }
    }
    struct cl *all[8] = {c};
    for (size_t i = 0; i < n_others && i < 7; i++)
        all[i + 1] = others[i];
    for (int w = 0; c->puback_ok + c->puback_denied < want && w < 20000;
         w += 20)
        pump(all, n_others + 1, 20);
    free(payload);
}

/* ---- rig ------------------------------------------------------------------ */

static int
setup(void **state)
{
    static struct rig r;
    memset(&r, 0, sizeof(r));
    the_rig = &r;
    atexit(kill_broker);
    strcpy(r.dir, "/tmp/tmlctl_broker.XXXXXX");
    assert_non_null(mkdtemp(r.dir));
    const char *bin = getenv("TML_BINARY_DIR");
    snprintf(r.tmlctl, sizeof(r.tmlctl), "%s/tools/tmlctl/tmlctl",
             bin ? bin : ".");
    snprintf(r.pki, sizeof(r.pki), "%s/pki", r.dir);
    snprintf(r.pki2, sizeof(r.pki2), "%s/otherpki", r.dir);
    snprintf(r.dev, sizeof(r.dev), "%s/dev", r.dir);
    const char *q = "--no-color -q >/dev/null";
    assert_int_equal(sh("%s pki init --dir %s %s", r.tmlctl, r.pki, q), 0);
    const char *ids[] = {"devA", "devB", "devR", "devK", LONG_ID, "plus"};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
        assert_int_equal(sh("%s device provision %s --group g --out %s "
                            "--pki %s %s",
                            r.tmlctl, ids[i], r.dev, r.pki, q),
                         0);
    /* Expired: valid from two hours ago to one hour ago. */
    time_t now = time(NULL);
    assert_int_equal(sh("%s device provision devX --out %s --pki %s "
                        "--not-before @%ld --expires @%ld %s",
                        r.tmlctl, r.dev, r.pki, (long)(now - 7200),
                        (long)(now - 3600), q),
                     0);
    /* Another CA issuing a certificate for devA's name. */
    assert_int_equal(sh("%s pki init --dir %s %s && %s device provision devA "
                        "--out %s/o --pki %s %s",
                        r.tmlctl, r.pki2, q, r.tmlctl, r.dir, r.pki2, q),
                     0);
    /* Self-signed for devA's name (the attacker's own openssl). */
    assert_int_equal(sh("openssl req -x509 -newkey ec -pkeyopt "
                        "ec_paramgen_curve:prime256v1 -nodes -subj /CN=devA "
                        "-days 2 -keyout %s/self.key -out %s/self.crt "
                        "2>/dev/null",
                        r.dir, r.dir),
                     0);
    /* I3: CNs a compromised or careless CA could issue: '+' and '#'. The
     * fleet CA key signs them directly (tmlctl refuses, tested below). */
    assert_int_equal(
        sh("cd %s && for n in 1 2; do cn=$( [ $n = 1 ] && echo + || echo '#'); "
           "openssl ecparam -name prime256v1 -genkey -noout -out odd$n.key && "
           "openssl req -new -key odd$n.key -subj \"/CN=$cn\" -out odd$n.csr "
           "&& printf 'extendedKeyUsage=clientAuth\\n' > odd.ext && "
           "openssl x509 -req -in odd$n.csr -CA %s/ca.crt -CAkey %s/ca.key "
           "-CAcreateserial -days 2 -sha256 -extfile odd.ext -out odd$n.crt; "
           "done 2>/dev/null",
           r.dir, r.pki, r.pki),
        0);

    r.port = free_port();
    assert_true(r.port > 0);
    char user[64] = "root";
    if (geteuid() != 0)
        snprintf(user, sizeof(user), "%s", getenv("USER") ? getenv("USER")
                                                          : "nobody");
    assert_int_equal(sh("%s broker-config --pki %s --out %s/mq --port %d "
                        "--address 127.0.0.1 --log-file %s/mq/log "
                        "--run-as %s %s",
                        r.tmlctl, r.pki, r.dir, r.port, r.dir, user, q),
                     0);
    char conf[256];
    snprintf(conf, sizeof(conf), "%s/mq/mosquitto.conf", r.dir);
    r.broker = fork();
    assert_true(r.broker >= 0);
    if (r.broker == 0) {
        char out[256];
        snprintf(out, sizeof(out), "%s/mq/stdout", r.dir);
        if (freopen(out, "w", stdout) == NULL ||
            freopen(out, "a", stderr) == NULL)
            _exit(126);
        execlp("mosquitto", "mosquitto", "-c", conf, (char *)NULL);
        _exit(127);
    }
    /* Wait for the TLS port. */
    int up = 0;
    for (int i = 0; i < 200 && !up; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)r.port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        up = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        close(fd);
        if (!up)
            usleep(25000);
        assert_int_equal(waitpid(r.broker, NULL, WNOHANG), 0);
    }
    assert_true(up);
    mosquitto_lib_init();
    *state = &r;
    return 0;
}

static int
teardown(void **state)
{
    struct rig *r = *state;
    kill_broker();
    mosquitto_lib_cleanup();
    if (getenv("TML_KEEP") == NULL)
        sh("rm -rf '%s'", r->dir);
    return 0;
}

/* ---- tests ------------------------------------------------------------------- */

/* A provisioned device connects; what it publishes on its up/ reaches
 * tmld's identity. */
static void
test_provisioned_device_connects_and_records_reach_tmld(void **state)
{
    (void)state;
    struct cl *t = tmld_client();
    subscribe(t, "tml/v1/#");
    struct cl *a = dev_client("devA", NULL);
    assert_int_equal(a->connack, 0);
    struct cl *o[] = {t};
    publish_n(a, o, 1, "tml/v1/devA/up/tele", 100, 64);
    pump_until(o, 1, &t->msgs, 100, 3000);
    assert_int_equal(a->puback_ok, 100);
    assert_int_equal(t->msgs, 100);
    client_free(a);
    client_free(t);
}

/* I1: devB publishes 1000 times into devA's up/; I6: devB and devA publish
 * 1000 times each on devA's down/. Counted at the broker (PUBACK reason),
 * at tmld and at the victim. */
static void
test_i1_i6_cross_device_publish_gets_nothing_through(void **state)
{
    (void)state;
    struct cl *t = tmld_client();
    subscribe(t, "tml/v1/#");
    struct cl *a = dev_client("devA", NULL);
    struct cl *b = dev_client("devB", NULL);
    assert_int_equal(a->connack, 0);
    assert_int_equal(b->connack, 0);
    subscribe(a, "tml/v1/devA/down/#");
    struct cl *o[] = {t, a};
    publish_n(b, o, 2, "tml/v1/devA/up/tele", N_ATTEMPTS, 32);
    publish_n(b, o, 2, "tml/v1/devA/down/cmd", N_ATTEMPTS, 32);
    publish_n(b, o, 2, "tml/v1/devA/down/ota", N_ATTEMPTS, 32);
    publish_n(a, o, 2, "tml/v1/devA/down/ack", N_ATTEMPTS, 32);
    pump(o, 2, 300);
    print_message("I1/I6: %d attempts by devB + %d by devA; broker denied "
                  "%d+%d; reached tmld %d, reached devA %d\n",
                  3 * N_ATTEMPTS, N_ATTEMPTS, b->puback_denied,
                  a->puback_denied, t->msgs, a->msgs);
    assert_int_equal(b->puback_denied, 3 * N_ATTEMPTS);
    assert_int_equal(b->puback_ok, 0);
    assert_int_equal(a->puback_denied, N_ATTEMPTS);
    assert_int_equal(t->msgs, 0);
    assert_int_equal(a->msgs, 0);
    /* Control: the same clients' legitimate traffic does get through. */
    publish_n(b, o, 2, "tml/v1/devB/up/tele", 10, 32);
    struct cl *t1[] = {t};
    pump_until(t1, 1, &t->msgs, 10, 3000);
    assert_int_equal(t->msgs, 10);
    client_free(a);
    client_free(b);
    client_free(t);
}

/* I5: devB subscribes with wildcards to others' down/ (and everything);
 * tmld sends 1000 messages to devA: devA gets 1000, devB 0. */
static void
test_i5_wildcard_snooping_receives_nothing(void **state)
{
    (void)state;
    struct cl *t = tmld_client();
    struct cl *a = dev_client("devA", NULL);
    struct cl *b = dev_client("devB", NULL);
    subscribe(a, "tml/v1/devA/down/#");
    subscribe(b, "tml/v1/devA/down/#");
    subscribe(b, "tml/v1/+/down/#");
    subscribe(b, "tml/v1/#");
    subscribe(b, "#");
    struct cl *o[] = {a, b};
    publish_n(t, o, 2, "tml/v1/devA/down/cmd", N_ATTEMPTS, 32);
    pump_until(o, 2, &a->msgs, N_ATTEMPTS, 5000);
    pump(o, 2, 200);
    print_message("I5: tmld sent %d to devA; devA received %d, devB "
                  "(wildcards) received %d\n",
                  N_ATTEMPTS, a->msgs, b->msgs);
    assert_int_equal(t->puback_ok, N_ATTEMPTS);
    assert_int_equal(a->msgs, N_ATTEMPTS);
    assert_int_equal(b->msgs, 0);
    client_free(a);
    client_free(b);
    client_free(t);
}

/* I2: devB connects 50 times with client id "devA": devA is never
 * disconnected (client ids are forced to the certificate identity). */
static void
test_i2_clientid_takeover_does_not_kick_victim(void **state)
{
    (void)state;
    struct cl *a = dev_client("devA", NULL);
    assert_int_equal(a->connack, 0);
    subscribe(a, "tml/v1/devA/down/#");
    int accepted = 0;
    for (int i = 0; i < N_TAKEOVERS; i++) {
        struct cl *b = dev_client("devB", "devA");
        accepted += b->connack == 0;
        struct cl *cs[] = {a, b};
        pump(cs, 2, 2);
        client_free(b);
    }
    struct cl *cs[] = {a};
    pump(cs, 1, 200);
    /* devA still works. */
    struct cl *t = tmld_client();
    struct cl *o[] = {a};
    publish_n(t, o, 1, "tml/v1/devA/down/cmd", 1, 8);
    pump_until(o, 1, &a->msgs, 1, 3000);
    print_message("I2: %d connects by devB with client id devA (%d "
                  "accepted as devB); devA disconnects caused = %d\n",
                  N_TAKEOVERS, accepted, a->disconnects);
    assert_int_equal(a->disconnects, 0);
    assert_int_equal(a->msgs, 1);
    client_free(t);
    client_free(a);
}

/* I4: self-signed, other CA, expired, revoked, no certificate: every
 * handshake refused. */
static void
test_i4_untrusted_expired_revoked_refused(void **state)
{
    struct rig *r = *state;
    char ca[256], crt[256], key[256], pid[32];
    snprintf(ca, sizeof(ca), "%s/ca.crt", r->pki);
    snprintf(pid, sizeof(pid), "%d", (int)r->broker);
    /* Revoke devR the way an operator does (CRL + broker reload). */
    assert_int_equal(sh("%s device revoke devR --pki %s --broker-pid %s "
                        "--broker 127.0.0.1:%d --no-color -q >/dev/null",
                        r->tmlctl, r->pki, pid, r->port),
                     0);
    usleep(300000);
    struct {
        const char *what, *crt, *key;
    } bad[5];
    char b[5][2][256];
    snprintf(b[0][0], 256, "%s/self.crt", r->dir);
    snprintf(b[0][1], 256, "%s/self.key", r->dir);
    snprintf(b[1][0], 256, "%s/o/devA.crt", r->dir);
    snprintf(b[1][1], 256, "%s/o/devA.key", r->dir);
    snprintf(b[2][0], 256, "%s/devX.crt", r->dev);
    snprintf(b[2][1], 256, "%s/devX.key", r->dev);
    snprintf(b[3][0], 256, "%s/devR.crt", r->dev);
    snprintf(b[3][1], 256, "%s/devR.key", r->dev);
    bad[0].what = "self-signed";
    bad[1].what = "other CA";
    bad[2].what = "expired";
    bad[3].what = "revoked";
    bad[4].what = "no certificate";
    int accepted = 0;
    for (int i = 0; i < 5; i++) {
        bad[i].crt = i < 4 ? b[i][0] : NULL;
        bad[i].key = i < 4 ? b[i][1] : NULL;
        struct cl *c = client("x", ca, bad[i].crt, bad[i].key);
        struct cl *cs[] = {c};
        for (int w = 0; c->connack < 0 && !c->dead && w < 3000; w += 20)
            pump(cs, 1, 20);
        if (c->connack == 0) {
            accepted++;
            print_message("I4: %s ACCEPTED\n", bad[i].what);
        }
        client_free(c);
    }
    /* Control: the valid certificate of the same broker connects. */
    struct cl *ok = dev_client("devB", NULL);
    assert_int_equal(ok->connack, 0);
    client_free(ok);
    snprintf(crt, sizeof(crt), "%s", b[3][0]);
    snprintf(key, sizeof(key), "%s", b[3][1]);
    print_message("I4: connects accepted = %d of 5\n", accepted);
    assert_int_equal(accepted, 0);
}

/* `tmlctl device revoke` disconnects a connected device, and its
 * reconnects fail. */
static void
test_revoke_disconnects_live_device(void **state)
{
    struct rig *r = *state;
    struct cl *k = dev_client("devK", NULL);
    assert_int_equal(k->connack, 0);
    subscribe(k, "tml/v1/devK/down/#");
    mosquitto_reconnect_delay_set(k->m, 1, 1, false);
    char pid[32];
    snprintf(pid, sizeof(pid), "%d", (int)r->broker);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(sh("%s device revoke devK --pki %s --broker-pid %s "
                        "--broker 127.0.0.1:%d --no-color -q >/dev/null",
                        r->tmlctl, r->pki, pid, r->port),
                     0);
    struct cl *cs[] = {k};
    pump_until(cs, 1, &k->disconnects, 1, 3000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(k->disconnects, 1);
    /* It tries to come back: refused. */
    int before = k->connects;
    for (int i = 0; i < 3; i++) {
        mosquitto_reconnect(k->m);
        pump(cs, 1, 300);
    }
    struct cl *t = tmld_client();
    publish_n(t, cs, 1, "tml/v1/devK/down/cmd", 10, 8);
    pump(cs, 1, 200);
    print_message("revoke: devK disconnected %.0f ms after 'tmlctl device "
                  "revoke' started; reconnects accepted = %d of 3; messages "
                  "after = %d\n",
                  (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
                      (double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
                  k->connects - before, k->msgs);
    assert_int_equal(k->connects, before);
    assert_int_equal(k->msgs, 0);
    client_free(t);
    client_free(k);
}

/* I3: '+', '#', '/' and non-UTF-8 ids cannot be provisioned; certificates
 * with '+' / '#' CNs (issued behind tmlctl's back) get no access through
 * the pattern ACL; a topic with an extra level (what a '/' CN produces)
 * fails the topic parser tmld uses. */
static void
test_i3_odd_ids_refused_and_powerless(void **state)
{
    struct rig *r = *state;
    const char *odd[] = {"a+b", "a#b", "a/b", "caf\xc3\xa9", "\xff", "",
                         "tmld", ".."};
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
        assert_int_equal(sh("%s device provision '%s' --out %s/odd --pki %s "
                            ">/dev/null 2>&1",
                            r->tmlctl, odd[i], r->dir, r->pki),
                         2);
    char ca[256];
    snprintf(ca, sizeof(ca), "%s/ca.crt", r->pki);
    struct cl *t = tmld_client();
    subscribe(t, "tml/v1/+/up/#"); /* not its own down/ publishes */
    struct cl *a = dev_client("devA", NULL);
    subscribe(a, "tml/v1/devA/down/#");
    int got_in = 0;
    for (int n = 1; n <= 2; n++) {
        char crt[256], key[256];
        snprintf(crt, sizeof(crt), "%s/odd%d.crt", r->dir, n);
        snprintf(key, sizeof(key), "%s/odd%d.key", r->dir, n);
        struct cl *c = client("odd", ca, crt, key);
        struct cl *cs[] = {c};
        for (int w = 0; c->connack < 0 && !c->dead && w < 3000; w += 20)
            pump(cs, 1, 20);
        if (c->connack != 0) { /* refused outright is fine too */
            client_free(c);
            continue;
        }
        got_in++;
        mosquitto_subscribe_v5(c->m, NULL, "tml/v1/+/down/#", 1, 0, NULL);
        pump(cs, 1, 100);
        struct cl *o[] = {t, a};
        publish_n(c, o, 2, "tml/v1/devA/up/tele", 100, 8);
        struct cl *tt[] = {t, c};
        publish_n(t, tt, 2, "tml/v1/devA/down/cmd", 100, 8);
        pump(tt, 2, 200);
        assert_int_equal(t->puback_ok, 100 * got_in);
        assert_int_equal(c->msgs, 0);
        assert_int_equal(c->puback_denied, 100);
        client_free(c);
    }
    pump((struct cl *[]){t}, 1, 200);
    /* tmld received none of the odd clients' publishes. */
    assert_int_equal(t->msgs, 0);
    struct tml_topic tp;
    assert_int_not_equal(
        tml_topic_parse("tml/v1/a/b/up/tele", 18, &tp), TML_OK);
    print_message("I3: 8 odd ids refused by tmlctl; %d odd-CN certs "
                  "connected and got 0 messages in or out; topics with "
                  "extra levels accepted = 0\n",
                  got_in);
    client_free(a);
    client_free(t);
}

/* The broker's max_packet_size fits the largest legal message on the
 * longest topic (64-byte device id), and drops anything bigger (S9). */
static void
test_max_packet_size_fits_largest_legal_message(void **state)
{
    (void)state;
    struct cl *t = tmld_client();
    subscribe(t, "tml/v1/#");
    struct cl *d = dev_client(LONG_ID, NULL);
    assert_int_equal(d->connack, 0);
    struct cl *o[] = {t};
    publish_n(d, o, 1, "tml/v1/" LONG_ID "/up/sample", 1, TML_MAX_MESSAGE);
    pump_until(o, 1, &t->msgs, 1, 3000);
    assert_int_equal(d->puback_ok, 1);
    assert_int_equal(t->msgs, 1);
    /* An oversize packet: the broker closes the connection, nothing is
     * delivered. An MQTT 5 client library refuses to send it (the broker
     * announces its maximum in CONNACK), so the attacker speaks 3.1.1. */
    next_protocol = MQTT_PROTOCOL_V311;
    struct cl *d3 = dev_client(LONG_ID, NULL);
    next_protocol = MQTT_PROTOCOL_V5;
    assert_int_equal(d3->connack, 0);
    size_t big = TML_MAX_MESSAGE + 200;
    char *payload = calloc(1, big);
    assert_int_equal(mosquitto_publish(d3->m, NULL,
                                       "tml/v1/" LONG_ID "/up/sample",
                                       (int)big, payload, 1, false),
                     MOSQ_ERR_SUCCESS);
    free(payload);
    struct cl *both[] = {d3, t};
    pump_until(both, 2, &d3->disconnects, 1, 3000);
    pump(both, 2, 200);
    print_message("max_packet_size: %d-byte message on the longest topic "
                  "delivered; %zu-byte message: connection closed = %d, "
                  "delivered = %d\n",
                  TML_MAX_MESSAGE, big, d3->disconnects, t->msgs - 1);
    assert_int_equal(d3->disconnects, 1);
    assert_int_equal(t->msgs, 1);
    client_free(d3);
    client_free(d);
    client_free(t);
}

/* Secret files: every private key 0600 (PKI, devices, flashing files). */
static void
test_secret_files_are_0600(void **state)
{
    struct rig *r = *state;
    const char *secrets[] = {"pki/ca.key", "pki/server.key", "pki/tmld.key",
                             "dev/devA.key", "dev/devA.h", "dev/devA.bin"};
    const char *public_[] = {"pki/ca.crt", "pki/crl.pem", "dev/devA.crt"};
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
        char p[256];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", r->dir, secrets[i]);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
    }
    for (size_t i = 0; i < sizeof(public_) / sizeof(public_[0]); i++) {
        char p[256];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", r->dir, public_[i]);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 0077, 0044);
    }
}

int
main(void)
{
    if (system("command -v mosquitto >/dev/null && command -v openssl "
               ">/dev/null") != 0) {
        fprintf(stderr, "tmlctl_broker_security: needs mosquitto and "
                        "openssl (scripts/lib/deps.sh)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_provisioned_device_connects_and_records_reach_tmld),
        cmocka_unit_test(test_i1_i6_cross_device_publish_gets_nothing_through),
        cmocka_unit_test(test_i5_wildcard_snooping_receives_nothing),
        cmocka_unit_test(test_i2_clientid_takeover_does_not_kick_victim),
        cmocka_unit_test(test_i4_untrusted_expired_revoked_refused),
        cmocka_unit_test(test_revoke_disconnects_live_device),
        cmocka_unit_test(test_i3_odd_ids_refused_and_powerless),
        cmocka_unit_test(test_max_packet_size_fits_largest_legal_message),
        cmocka_unit_test(test_secret_files_are_0600),
    };
    return cmocka_run_group_tests_name("tmlctl_broker_security", tests,
                                       setup, teardown);
}
