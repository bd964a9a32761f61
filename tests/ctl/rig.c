/*
 * rig.c: see rig.h.
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
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <mosquitto.h>

#include "rig.h"

struct rig *the_rig;

/* ---- processes ----------------------------------------------------------- */

int
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
stop_pid(pid_t *pid)
{
    if (*pid <= 0)
        return;
    kill(*pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(*pid, NULL, WNOHANG) == *pid) {
            *pid = 0;
            return;
        }
        usleep(20000);
    }
    kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
    *pid = 0;
}

/* At exit (also after a failed group setup, when no teardown runs): kill
 * what is still running and remove the directory. */
static void
kill_all(void)
{
    if (the_rig != NULL) {
        stop_pid(&the_rig->extra);
        stop_pid(&the_rig->tmld);
        stop_pid(&the_rig->broker);
        if (the_rig->dir[0] != '\0' && getenv("TML_KEEP") == NULL) {
            sh("rm -rf '%s'", the_rig->dir);
            the_rig->dir[0] = '\0';
        }
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

/* Protocol of the next client() (MQTT 5 unless a test needs 3.1.1). */
int next_protocol = MQTT_PROTOCOL_V5;

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
on_disconnect(struct mosquitto *m, void *o, int rc, const mosquitto_property *p)
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

void
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
void
pump_until(struct cl **cs, size_t n, const int *flag, int want, int timeout_ms)
{
    for (int waited = 0; *flag < want && waited < timeout_ms; waited += 20)
        pump(cs, n, 20);
}

/* Creates a client with certificate files cert/key (NULL: none), MQTT 5,
 * and starts connecting. Returns it even if the connect fails early. */
struct cl *
client(const char *client_id, const char *ca, const char *cert, const char *key)
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

void
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
struct cl *
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

struct cl *
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

void
subscribe(struct cl *c, const char *pattern)
{
    int before = c->subscribed;
    assert_int_equal(mosquitto_subscribe_v5(c->m, NULL, pattern, 1, 0, NULL),
                     MOSQ_ERR_SUCCESS);
    struct cl *cs[] = {c};
    pump_until(cs, 1, &c->subscribed, before + 1, 10000);
    assert_int_equal(c->subscribed, before + 1);
}

/* Publishes n QoS 1 messages and pumps until every PUBACK came back. */
void
publish_n(struct cl *c, struct cl **others, size_t n_others, const char *topic,
          int n, size_t len)
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

/* ---- rig lifecycle ----------------------------------------------------------
 */

void
rig_init(struct rig *r)
{
    memset(r, 0, sizeof(*r));
    the_rig = r;
    static bool hooked;
    if (!hooked) {
        atexit(kill_all);
        hooked = true;
    }
    strcpy(r->dir, "/tmp/tmlctl_test.XXXXXX");
    assert_non_null(mkdtemp(r->dir));
    const char *bin = getenv("TML_BINARY_DIR");
    snprintf(r->tmlctl, sizeof(r->tmlctl), "%s/tools/tmlctl/tmlctl",
             bin ? bin : ".");
    snprintf(r->pki, sizeof(r->pki), "%s/pki", r->dir);
    snprintf(r->dev, sizeof(r->dev), "%s/dev", r->dir);
    assert_int_equal(
        sh("%s pki init --dir %s --no-color -q >/dev/null", r->tmlctl, r->pki),
        0);
    mosquitto_lib_init();
}

void
rig_provision(struct rig *r, const char *id, const char *extra)
{
    assert_int_equal(sh("%s device provision %s --group g --out %s --pki %s "
                        "%s --no-color -q >/dev/null",
                        r->tmlctl, id, r->dev, r->pki, extra ? extra : ""),
                     0);
}

static bool
tcp_up(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool up = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return up;
}

static pid_t
spawn(const char *out, char *const argv[])
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (freopen(out, "w", stdout) == NULL ||
            freopen(out, "a", stderr) == NULL)
            _exit(126);
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

void
rig_broker_start(struct rig *r)
{
    r->port = free_port();
    assert_true(r->port > 0);
    char user[64] = "root";
    if (geteuid() != 0)
        snprintf(user, sizeof(user), "%s",
                 getenv("USER") ? getenv("USER") : "nobody");
    assert_int_equal(sh("%s broker-config --pki %s --out %s/mq --port %d "
                        "--address 127.0.0.1 --log-file %s/mq/log "
                        "--run-as %s --no-color -q >/dev/null",
                        r->tmlctl, r->pki, r->dir, r->port, r->dir, user),
                     0);
    char conf[256], out[256];
    snprintf(conf, sizeof(conf), "%s/mq/mosquitto.conf", r->dir);
    snprintf(out, sizeof(out), "%s/mq/stdout", r->dir);
    char *argv[] = {(char *)"mosquitto", (char *)"-c", conf, NULL};
    r->broker = spawn(out, argv);
    bool up = false;
    for (int i = 0; i < 200 && !up; i++) {
        up = tcp_up(r->port);
        if (!up)
            usleep(25000);
        assert_int_equal(waitpid(r->broker, NULL, WNOHANG), 0);
    }
    assert_true(up);
}

void
rig_tmld_start(struct rig *r, const char *extra_ini)
{
    char conf[256], out[256], db[256];
    snprintf(conf, sizeof(conf), "%s/tmld.conf", r->dir);
    snprintf(out, sizeof(out), "%s/tmld.log", r->dir);
    snprintf(db, sizeof(db), "%s/tmld.db", r->dir);
    snprintf(r->sock, sizeof(r->sock), "%s/tmld.sock", r->dir);
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f,
            "[mqtt]\nhost = 127.0.0.1\nport = %d\ntls = yes\n"
            "cafile = %s/ca.crt\ncertfile = %s/tmld.crt\n"
            "keyfile = %s/tmld.key\nclient_id = tmld\n"
            "reconnect_min = 100ms\nreconnect_max = 1s\n"
            "[db]\npath = %s\nbatch_ms = 20\n"
            "[control]\nsocket = %s\n[log]\nlevel = info\n%s",
            r->port, r->pki, r->pki, r->pki, db, r->sock,
            extra_ini ? extra_ini : "");
    assert_int_equal(fclose(f), 0);
    const char *bin = getenv("TML_BINARY_DIR");
    char tmld[1024];
    snprintf(tmld, sizeof(tmld), "%s/daemon/tmld", bin ? bin : ".");
    char *argv[] = {tmld, (char *)"-c", conf, (char *)"-f", NULL};
    r->tmld = spawn(out, argv);
    /* Ready when `tmlctl status` reports the broker connected. */
    int rc = -1;
    for (int i = 0; i < 300 && rc != 0; i++) {
        usleep(50000);
        if (waitpid(r->tmld, NULL, WNOHANG) == r->tmld) {
            r->tmld = 0;
            sh("cat %s >&2", out);
            fail_msg("tmld exited at start");
        }
        rc = sh("%s --socket %s status >/dev/null 2>&1", r->tmlctl, r->sock);
    }
    if (rc != 0)
        sh("cat %s >&2", out);
    assert_int_equal(rc, 0);
}

void
rig_stop(struct rig *r)
{
    /* cmocka runs the group teardown even after a failed setup, when the
     * state may not be set yet. */
    if (r == NULL)
        r = the_rig;
    if (r == NULL)
        return;
    stop_pid(&r->extra);
    stop_pid(&r->tmld);
    stop_pid(&r->broker);
    mosquitto_lib_cleanup();
    if (getenv("TML_KEEP") == NULL) {
        sh("rm -rf '%s'", r->dir);
        r->dir[0] = '\0';
    } else {
        fprintf(stderr, "kept %s\n", r->dir);
    }
}

/* Runs the rig's tmlctl with args against its tmld's control socket;
 * returns the exit status and tmlctl's stdout in *out (malloc'ed, may be
 * NULL; pass out = NULL to discard it). */
int
rig_ctl(char **out, const char *fmt, ...)
{
    char args[2048], cmd[4096], path[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    snprintf(path, sizeof(path), "%s/ctl.out", the_rig->dir);
    snprintf(cmd, sizeof(cmd), "%s --socket %s %s >%s", the_rig->tmlctl,
             the_rig->sock, args, path);
    int rc = sh("%s", cmd);
    if (out != NULL) {
        *out = NULL;
        FILE *f = fopen(path, "r");
        long size = -1;
        if (f != NULL && fseek(f, 0, SEEK_END) == 0)
            size = ftell(f);
        if (f != NULL && size >= 0 && fseek(f, 0, SEEK_SET) == 0) {
            /* The whole output: a list of 10000 samples is ~2.5 MB. */
            char *buf = calloc(1, (size_t)size + 1);
            size_t n = buf ? fread(buf, 1, (size_t)size, f) : 0;
            if (buf != NULL)
                buf[n] = '\0';
            *out = buf;
        }
        if (f != NULL)
            fclose(f);
    }
    return rc;
}
