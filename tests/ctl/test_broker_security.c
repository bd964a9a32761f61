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

#include "rig.h"
#include "tml/proto.h"

#define N_ATTEMPTS 1000
#define N_TAKEOVERS 50
#define LONG_ID                                                                \
    "d123456789012345678901234567890123456789012345678901234567890123"

static int
setup(void **state)
{
    static struct rig r;
    *state = &r; /* first: teardown runs even if setup fails */
    rig_init(&r);
    const char *ids[] = {"devA", "devB", "devR", "devK", LONG_ID, "plus"};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
        rig_provision(&r, ids[i], NULL);
    /* Expired: valid from two hours ago to one hour ago. */
    time_t now = time(NULL);
    char extra[128];
    snprintf(extra, sizeof(extra), "--not-before @%ld --expires @%ld",
             (long)(now - 7200), (long)(now - 3600));
    rig_provision(&r, "devX", extra);
    /* Another CA issuing a certificate for devA's name. */
    snprintf(r.pki2, sizeof(r.pki2), "%s/otherpki", r.dir);
    const char *q = "--no-color -q >/dev/null";
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
        sh("cd %s && for n in 1 2; do cn=$( [ $n = 1 ] && echo '\\+' || echo "
           "'#'); "
           "openssl ecparam -name prime256v1 -genkey -noout -out odd$n.key && "
           "openssl req -new -key odd$n.key -subj \"/CN=$cn\" -out odd$n.csr "
           "&& printf 'extendedKeyUsage=clientAuth\\n' > odd.ext && "
           "openssl x509 -req -in odd$n.csr -CA %s/ca.crt -CAkey %s/ca.key "
           "-CAcreateserial -days 2 -sha256 -extfile odd.ext -out odd$n.crt; "
           "done 2>/dev/null",
           r.dir, r.pki, r.pki),
        0);
    rig_broker_start(&r);
    *state = &r;
    return 0;
}

static int
teardown(void **state)
{
    rig_stop(*state);
    return 0;
}

/* ---- tests
 * ------------------------------------------------------------------- */

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
    subscribe(b, "tml/v1/devB/down/#");
    snprintf(b->watch, sizeof(b->watch), "tml/v1/devA/down/cmd");
    struct cl *o[] = {a, b};
    publish_n(t, o, 2, "tml/v1/devA/down/cmd", N_ATTEMPTS, 32);
    pump_until(o, 2, &a->msgs, N_ATTEMPTS, 15000);
    /* Ordering control: one message to devB's own down/ after the 1000;
     * once it arrived, anything leaked to devB would have too. */
    publish_n(t, o, 2, "tml/v1/devB/down/cmd", 1, 8);
    pump_until(o, 2, &b->msgs, 1, 10000);
    pump(o, 2, 100);
    print_message("I5: tmld sent %d to devA; devA received %d, devB "
                  "(wildcards) received %d of them (and its own control "
                  "message %d times, once per matching subscription)\n",
                  N_ATTEMPTS, a->msgs, b->msgs_topic, b->msgs - b->msgs_topic);
    assert_int_equal(t->puback_ok, N_ATTEMPTS + 1);
    assert_int_equal(a->msgs, N_ATTEMPTS);
    assert_int_equal(b->msgs_topic, 0);
    assert_true(b->msgs >= 1);
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
    pump_until(cs, 1, &k->disconnects, 1, 10000);
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
    const char *odd[] = {"a+b",  "a#b", "a/b",  "caf\xc3\xa9",
                         "\xff", "",    "tmld", ".."};
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
            print_message("I3: odd CN #%d refused at connect\n", n);
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
    assert_int_not_equal(tml_topic_parse("tml/v1/a/b/up/tele", 18, &tp),
                         TML_OK);
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
                                       "tml/v1/" LONG_ID "/up/sample", (int)big,
                                       payload, 1, false),
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

/* The optional plain listener (broker-config --plain-port) is for tmld on
 * loopback only: its password works, nothing else logs in. */
static void
test_plain_loopback_listener_only_for_tmld(void **state)
{
    struct rig *r = *state;
    int tls_port = r->port;
    char out[256];
    snprintf(out, sizeof(out), "%s/mq2", r->dir);
    /* Ports: let the kernel pick two free ones via the rig helper's idea:
     * bind-and-release. */
    int plain = 0, tls2 = 0;
    for (int p = 20000 + (int)(getpid() % 20000), tries = 0;
         tries < 200 && (plain == 0 || tls2 == 0); p++, tries++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)p),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && p != tls_port) {
            if (tls2 == 0)
                tls2 = p;
            else
                plain = p;
        }
        close(fd);
    }
    assert_true(plain > 0 && tls2 > 0);
    assert_int_equal(sh("%s broker-config --pki %s --out %s --port %d "
                        "--address 127.0.0.1 --plain-port %d --log-file "
                        "%s/log --run-as %s -q >/dev/null",
                        r->tmlctl, r->pki, out, tls2, plain, out,
                        geteuid() == 0 ? "root" : getenv("USER")),
                     0);
    assert_true(sh("grep -q '^listener %d 127.0.0.1$' %s/mosquitto.conf", plain,
                   out) == 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char conf[300];
        snprintf(conf, sizeof(conf), "%s/mosquitto.conf", out);
        if (freopen("/dev/null", "w", stdout) == NULL ||
            freopen("/dev/null", "w", stderr) == NULL)
            _exit(126);
        execlp("mosquitto", "mosquitto", "-c", conf, (char *)NULL);
        _exit(127);
    }
    r->extra = pid; /* killed by rig_stop / at exit if an assert fires */
    /* Wait (bounded) for the plain port. */
    bool up = false;
    for (int i = 0; i < 200 && !up; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)plain),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        up = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        close(fd);
        if (!up)
            usleep(25000);
    }
    if (!up)
        fail_msg("the second broker did not start");
    char pw[128] = "";
    char pwfile[256];
    snprintf(pwfile, sizeof(pwfile), "%s/tmld.mqtt-password", r->pki);
    FILE *f = fopen(pwfile, "r");
    assert_non_null(f);
    assert_non_null(fgets(pw, sizeof(pw), f));
    fclose(f);
    struct stat st;
    assert_int_equal(stat(pwfile, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    struct {
        const char *user, *pass;
        int want;
    } tries[] = {{"tmld", pw, 0},
                 {"tmld", "wrong", 5},
                 {NULL, NULL, 5},
                 {"devA", NULL, 5},
                 {"devA", pw, 5}};
    int accepted = 0;
    for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
        int rc =
            sh("mosquitto_pub -h 127.0.0.1 -p %d %s%s%s %s%s%s -t "
               "tml/v1/devA/down/cmd -m x -q 1 >/dev/null 2>&1",
               plain, tries[i].user ? "-u '" : "",
               tries[i].user ? tries[i].user : "", tries[i].user ? "'" : "",
               tries[i].pass ? "-P '" : "", tries[i].pass ? tries[i].pass : "",
               tries[i].pass ? "'" : "");
        accepted += rc == 0;
        assert_int_equal(rc == 0, tries[i].want == 0);
    }
    print_message("plain loopback listener: logins accepted %d of 5 (only "
                  "tmld with its password)\n",
                  accepted);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    r->extra = 0;
}

/* Secret files: every private key 0600 (PKI, devices, flashing files). */
static void
test_secret_files_are_0600(void **state)
{
    struct rig *r = *state;
    const char *secrets[] = {"pki/ca.key",   "pki/server.key", "pki/tmld.key",
                             "dev/devA.key", "dev/devA.h",     "dev/devA.bin"};
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
        cmocka_unit_test(test_plain_loopback_listener_only_for_tmld),
        cmocka_unit_test(test_secret_files_are_0600),
    };
    return cmocka_run_group_tests_name("tmlctl_broker_security", tests, setup,
                                       teardown);
}
