/*
 * harness.c: see harness.h.
 */
#include "harness.h"

#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <mosquitto.h>

#include "tml/proto.h"

#define MAX_PIDS 64

static pid_t pids[MAX_PIDS];
static bool is_atexit_set;

static void
kill_all(void)
{
    for (int i = 0; i < MAX_PIDS; i++) {
        if (pids[i] > 0) {
            kill(pids[i], SIGKILL);
            waitpid(pids[i], NULL, WNOHANG);
            pids[i] = 0;
        }
    }
}

static void
track(pid_t p)
{
    if (!is_atexit_set) {
        atexit(kill_all);
        is_atexit_set = true;
    }
    for (int i = 0; i < MAX_PIDS; i++) {
        if (pids[i] == 0) {
            pids[i] = p;
            return;
        }
    }
}

static void
untrack(pid_t p)
{
    for (int i = 0; i < MAX_PIDS; i++)
        if (pids[i] == p)
            pids[i] = 0;
}

uint64_t
th_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void
th_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static const char *
env_or(const char *k, const char *def)
{
    const char *v = getenv(k);
    return v && v[0] ? v : def;
}

static int
read_env_file(struct th *t)
{
    char path[320];
    snprintf(path, sizeof(path), "%s/broker/env", t->dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq++ = '\0';
        if (strcmp(line, "TB_PORT") == 0)
            t->port = atoi(eq);
        else if (strcmp(line, "TB_PID") == 0)
            t->broker_pid = atoi(eq);
        else if (strcmp(line, "TB_CA") == 0)
            snprintf(t->ca, sizeof(t->ca), "%s", eq);
        else if (strcmp(line, "TB_CA_KEY") == 0)
            snprintf(t->ca_key, sizeof(t->ca_key), "%s", eq);
        else if (strcmp(line, "TB_TMLD_CERT") == 0)
            snprintf(t->cert, sizeof(t->cert), "%s", eq);
        else if (strcmp(line, "TB_TMLD_KEY") == 0)
            snprintf(t->key, sizeof(t->key), "%s", eq);
    }
    fclose(f);
    return t->port > 0 && t->broker_pid > 0 ? 0 : -1;
}

int
th_write_conf(struct th *t)
{
    FILE *f = fopen(t->conf, "w");
    if (f == NULL)
        return -1;
    fprintf(f,
            "[mqtt]\nhost = 127.0.0.1\nport = %d\ncafile = %s\n"
            "certfile = %s\nkeyfile = %s\nkeepalive = 5s\n"
            "reconnect_min = 100ms\nreconnect_max = 1s\n"
            "[db]\npath = %s\nbatch_ms = 20\n"
            "[control]\nsocket = %s\n"
            "[log]\nlevel = debug\n"
            "%s\n",
            t->port, t->ca, t->cert, t->key, t->db, t->sock, t->extra);
    return fclose(f);
}

int
th_setup(struct th *t, const char *extra_ini)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->dir, sizeof(t->dir), "/tmp/tmldtest.XXXXXX");
    if (mkdtemp(t->dir) == NULL)
        return -1;
    snprintf(t->conf, sizeof(t->conf), "%s/tmld.conf", t->dir);
    snprintf(t->db, sizeof(t->db), "%s/state/tmld.db", t->dir);
    snprintf(t->sock, sizeof(t->sock), "%s/tmld.sock", t->dir);
    snprintf(t->log, sizeof(t->log), "%s/tmld.log", t->dir);
    if (extra_ini)
        snprintf(t->extra, sizeof(t->extra), "%s", extra_ini);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "'%s' start '%s/broker' >/dev/null",
             env_or("TML_TESTBROKER", "tests/lib/testbroker"), t->dir);
    if (system(cmd) != 0 || read_env_file(t) != 0) {
        fprintf(stderr, "harness: testbroker failed\n");
        return -1;
    }
    track(t->broker_pid);
    return th_write_conf(t);
}

void
th_teardown(struct th *t)
{
    if (t->tmld_pid > 0)
        th_tmld_stop(t, SIGKILL, 2000);
    if (t->broker_pid > 0) {
        kill(t->broker_pid, SIGKILL);
        untrack(t->broker_pid);
        t->broker_pid = 0;
    }
    const char *keep = getenv("TMLD_TEST_KEEP");
    if (keep == NULL || strcmp(keep, "1") != 0) {
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "harness: could not remove %s\n", t->dir);
    } else {
        fprintf(stderr, "harness: kept %s\n", t->dir);
    }
}

void
th_dump_log(struct th *t)
{
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "tail -n 40 '%s' >&2", t->log);
    if (system(cmd) != 0)
        fprintf(stderr, "harness: no log\n");
}

pid_t
th_tmld_spawn(struct th *t, const char *const *env)
{
    char bin[512];
    snprintf(bin, sizeof(bin), "%s/daemon/tmld", env_or("TML_BINARY_DIR", "."));
    pid_t p = fork();
    if (p < 0)
        return -1;
    if (p == 0) {
        int fd = open(t->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        for (size_t i = 0; env && env[i]; i++)
            putenv((char *)(uintptr_t)env[i]);
        if (t->wrap[0] != '\0') {
            char cmd[2048];
            snprintf(cmd, sizeof(cmd), "%s exec '%s' --config '%s' --foreground",
                     t->wrap, bin, t->conf);
            execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
            _exit(127);
        }
        execl(bin, bin, "--config", t->conf, "--foreground", (char *)NULL);
        _exit(127);
    }
    t->tmld_pid = p;
    track(p);
    return p;
}

int
th_tmld_start(struct th *t, const char *const *env, int timeout_ms)
{
    if (th_tmld_spawn(t, env) < 0)
        return -1;
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    while (th_now_ms() < end) {
        double c = 0;
        if (th_status_num(t, "mqtt.connected", &c) == 0 && c >= 1)
            return 0;
        int st;
        if (waitpid(t->tmld_pid, &st, WNOHANG) == t->tmld_pid) {
            untrack(t->tmld_pid);
            t->tmld_pid = 0;
            break;
        }
        th_sleep_ms(20);
    }
    fprintf(stderr, "harness: tmld did not become ready\n");
    th_dump_log(t);
    return -1;
}

int
th_tmld_wait_exit(struct th *t, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    while (t->tmld_pid > 0 && th_now_ms() < end) {
        int st;
        if (waitpid(t->tmld_pid, &st, WNOHANG) == t->tmld_pid) {
            untrack(t->tmld_pid);
            t->tmld_pid = 0;
            return st;
        }
        th_sleep_ms(10);
    }
    return -1;
}

int
th_tmld_stop(struct th *t, int sig, int timeout_ms)
{
    if (t->tmld_pid <= 0)
        return -1;
    kill(t->tmld_pid, sig);
    int st = th_tmld_wait_exit(t, timeout_ms);
    if (st == -1 && t->tmld_pid > 0) {
        kill(t->tmld_pid, SIGKILL);
        waitpid(t->tmld_pid, NULL, 0);
        untrack(t->tmld_pid);
        t->tmld_pid = 0;
    }
    return st;
}

void
th_broker_kill(struct th *t)
{
    if (t->broker_pid > 0) {
        kill(t->broker_pid, SIGKILL);
        /* testbroker started it in a subshell: not our child; wait until
         * the port is free instead. */
        for (int i = 0; i < 100 && kill(t->broker_pid, 0) == 0; i++)
            th_sleep_ms(10);
        untrack(t->broker_pid);
        t->broker_pid = 0;
    }
}

static bool
port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(0x7f000001);
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

int
th_broker_restart(struct th *t)
{
    char conf[320], out[320];
    snprintf(conf, sizeof(conf), "%s/broker/mosquitto.conf", t->dir);
    snprintf(out, sizeof(out), "%s/broker/mosquitto.out", t->dir);
    pid_t p = fork();
    if (p < 0)
        return -1;
    if (p == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execlp("mosquitto", "mosquitto", "-c", conf, (char *)NULL);
        _exit(127);
    }
    t->broker_pid = p;
    track(p);
    for (int i = 0; i < 200; i++) {
        if (port_open(t->port))
            return 0;
        th_sleep_ms(25);
    }
    return -1;
}

int
th_ctl(struct th *t, const char *request, char *out, size_t cap,
       int timeout_ms)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_un sa = {0};
    sa.sun_family = AF_UNIX;
    size_t sl = strlen(t->sock);
    if (sl >= sizeof(sa.sun_path)) {
        close(fd);
        return -1;
    }
    memcpy(sa.sun_path, t->sock, sl + 1);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    size_t n = strlen(request);
    if (write(fd, request, n) != (ssize_t)n || write(fd, "\n", 1) != 1) {
        close(fd);
        return -1;
    }
    size_t len = 0;
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    while (len + 1 < cap) {
        int left = (int)(end - th_now_ms());
        if (left <= 0)
            break;
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, left) <= 0)
            break;
        ssize_t r = read(fd, out + len, cap - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
        out[len] = '\0';
        char *nl = strchr(out, '\n');
        if (nl) {
            *nl = '\0';
            close(fd);
            return 0;
        }
    }
    close(fd);
    return -1;
}

int
th_status_num(struct th *t, const char *path, double *out)
{
    char buf[8192];
    if (th_ctl(t, "{\"id\":1,\"cmd\":\"status\"}", buf, sizeof(buf), 1000))
        return -1;
    cJSON *root = cJSON_Parse(buf);
    cJSON *o = cJSON_GetObjectItem(root, "result");
    char p[128];
    snprintf(p, sizeof(p), "%s", path);
    for (char *s = strtok(p, "."); s && o; s = strtok(NULL, "."))
        o = cJSON_GetObjectItem(o, s);
    int rc = -1;
    if (cJSON_IsNumber(o)) {
        *out = o->valuedouble;
        rc = 0;
    } else if (cJSON_IsBool(o)) {
        *out = cJSON_IsTrue(o);
        rc = 0;
    }
    cJSON_Delete(root);
    return rc;
}

int
th_wait_status(struct th *t, const char *path, double want, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    double v = 0;
    while (th_now_ms() < end) {
        if (th_status_num(t, path, &v) == 0 && v >= want)
            return 0;
        th_sleep_ms(20);
    }
    fprintf(stderr, "harness: status %s = %g, wanted >= %g\n", path, v,
            want);
    return -1;
}

sqlite3 *
th_db(struct th *t)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(t->db, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        fprintf(stderr, "harness: open %s: %s\n", t->db,
                db ? sqlite3_errmsg(db) : "?");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 2000);
    return db;
}

/* Runs the query in a child that joined ns_pid's mount namespace (a
 * database on a private tmpfs; SQLite resolves /proc/PID/root symlinks, so
 * that path cannot be used). */
static int64_t
db_int_in_ns(struct th *t, const char *sql)
{
    int pfd[2];
    if (pipe(pfd) != 0)
        return -1;
    pid_t p = fork();
    if (p == 0) {
        char ns[64];
        snprintf(ns, sizeof(ns), "/proc/%d/ns/mnt", (int)t->ns_pid);
        int fd = open(ns, O_RDONLY);
        int64_t v = -1;
        if (fd >= 0 && setns(fd, CLONE_NEWNS) == 0) {
            t->ns_pid = 0;
            v = th_db_int(t, sql);
        } else {
            fprintf(stderr, "harness: setns: %s\n", strerror(errno));
        }
        if (write(pfd[1], &v, sizeof(v)) != sizeof(v))
            _exit(1);
        _exit(0);
    }
    close(pfd[1]);
    int64_t v = -1;
    if (p < 0 || read(pfd[0], &v, sizeof(v)) != sizeof(v))
        v = -1;
    close(pfd[0]);
    if (p > 0)
        waitpid(p, NULL, 0);
    return v;
}

int64_t
th_db_int(struct th *t, const char *sql)
{
    if (t->ns_pid > 0)
        return db_int_in_ns(t, sql);
    sqlite3 *db = th_db(t);
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (db && sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    else
        fprintf(stderr, "harness: %s: %s\n", sql,
                db ? sqlite3_errmsg(db) : "no db");
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

int
th_device_cert(struct th *t, const char *id)
{
    char crt[400];
    snprintf(crt, sizeof(crt), "%s/broker/pki/%s.crt", t->dir, id);
    if (access(crt, R_OK) == 0)
        return 0;
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "'%s' device '%s/broker' '%s'",
             env_or("TML_TESTBROKER", "tests/lib/testbroker"), t->dir, id);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- devices ---------------------------------------------------------------- */

static void
dev_on_connect(struct mosquitto *m, void *obj, int rc)
{
    struct tdev *v = obj;
    if (rc != 0)
        return;
    char topic[128];
    snprintf(topic, sizeof(topic), "tml/v1/%s/down/#", v->id);
    mosquitto_subscribe(m, NULL, topic, 1);
    pthread_mutex_lock(&v->mu);
    v->is_connected = true;
    pthread_mutex_unlock(&v->mu);
}

static void
dev_on_disconnect(struct mosquitto *m, void *obj, int rc)
{
    (void)m, (void)rc;
    struct tdev *v = obj;
    pthread_mutex_lock(&v->mu);
    v->is_connected = false;
    pthread_mutex_unlock(&v->mu);
}

static void
dev_on_message(struct mosquitto *m, void *obj,
               const struct mosquitto_message *msg)
{
    (void)m;
    struct tdev *v = obj;
    struct tml_topic tp;
    if (tml_topic_parse(msg->topic, strlen(msg->topic), &tp) != TML_OK ||
        tp.kind != TML_KIND_ACK)
        return;
    struct tml_ack a;
    if (tml_ack_decode(msg->payload, (size_t)msg->payloadlen, &a) != TML_OK)
        return;
    pthread_mutex_lock(&v->mu);
    if (a.epoch != 0 && a.epoch != v->epoch) {
        v->acks_other_epoch++;
        pthread_mutex_unlock(&v->mu);
        return;
    }
    if (a.has_tele && a.tele_seq > v->acked_tele)
        v->acked_tele = a.tele_seq;
    if (a.has_sample && a.sample_seq > v->acked_sample)
        v->acked_sample = a.sample_seq;
    v->n_acks++;
    pthread_mutex_unlock(&v->mu);
}

/* The device's network thread: mosquitto_loop, and on any error (the
 * broker went away, a TLS handshake cut short) a reconnect every 200 ms.
 * libmosquitto's own loop_forever gives up on TLS errors, which a broker
 * restart produces. */
static void *
dev_thread(void *arg)
{
    struct tdev *v = arg;
    while (!v->stop) {
        int rc = mosquitto_loop(v->m, 50, 1);
        if (rc != MOSQ_ERR_SUCCESS && !v->stop) {
            th_sleep_ms(200);
            if (!v->stop)
                mosquitto_reconnect(v->m);
        }
    }
    if (v->stop == 1) {
        mosquitto_disconnect(v->m);
        mosquitto_loop(v->m, 50, 1);
    }
    return NULL;
}

int
tdev_open(struct tdev *v, struct th *t, const char *id, bool with_will)
{
    memset(v, 0, sizeof(*v));
    v->t = t;
    v->model_version = 1;
    snprintf(v->id, sizeof(v->id), "%s", id);
    pthread_mutex_init(&v->mu, NULL);
    if (th_device_cert(t, id) != 0)
        return -1;
    mosquitto_lib_init();
    v->m = mosquitto_new(id, true, v);
    if (v->m == NULL)
        return -1;
    char crt[400], key[400];
    snprintf(crt, sizeof(crt), "%s/broker/pki/%s.crt", t->dir, id);
    snprintf(key, sizeof(key), "%s/broker/pki/%s.key", t->dir, id);
    mosquitto_int_option(v->m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_max_inflight_messages_set(v->m, 0);
    if (mosquitto_tls_set(v->m, t->ca, NULL, crt, key, NULL) != 0)
        return -1;
    if (with_will) {
        uint8_t buf[16];
        size_t len;
        struct tml_state s = {false};
        if (tml_state_encode(&s, buf, sizeof(buf), &len) != TML_OK)
            return -1;
        char topic[128];
        snprintf(topic, sizeof(topic), "tml/v1/%s/up/state", id);
        mosquitto_will_set(v->m, topic, (int)len, buf, 1, true);
    }
    mosquitto_connect_callback_set(v->m, dev_on_connect);
    mosquitto_disconnect_callback_set(v->m, dev_on_disconnect);
    mosquitto_message_callback_set(v->m, dev_on_message);
    mosquitto_threaded_set(v->m, true);
    if (mosquitto_connect(v->m, "127.0.0.1", t->port, 5) != 0)
        return -1;
    if (pthread_create(&v->thread, NULL, dev_thread, v) != 0)
        return -1;
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&v->mu);
        bool c = v->is_connected;
        pthread_mutex_unlock(&v->mu);
        if (c) {
            th_sleep_ms(20); /* let the SUBSCRIBE reach the broker */
            return 0;
        }
        th_sleep_ms(10);
    }
    fprintf(stderr, "harness: device %s did not connect\n", id);
    return -1;
}

void
tdev_close(struct tdev *v)
{
    if (v->m == NULL)
        return;
    v->stop = 1;
    pthread_join(v->thread, NULL);
    mosquitto_destroy(v->m);
    v->m = NULL;
    pthread_mutex_destroy(&v->mu);
}

void
tdev_drop(struct tdev *v)
{
    /* Stop the thread first, then close the socket under it: no DISCONNECT
     * packet, so the broker publishes the will. */
    v->stop = 2;
    int fd = mosquitto_socket(v->m);
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
    pthread_join(v->thread, NULL);
    mosquitto_destroy(v->m);
    v->m = NULL;
    pthread_mutex_destroy(&v->mu);
}

static int
pub(struct tdev *v, const char *kind, const void *buf, size_t len)
{
    char topic[128];
    snprintf(topic, sizeof(topic), "tml/v1/%s/up/%s", v->id, kind);
    return mosquitto_publish(v->m, NULL, topic, (int)len, buf, 1,
                             strcmp(kind, "state") == 0 ||
                                 strcmp(kind, "hello") == 0)
               ? -1
               : 0;
}

int
tdev_raw(struct tdev *v, const char *kind, const void *buf, size_t len)
{
    char topic[128];
    snprintf(topic, sizeof(topic), "tml/v1/%s/up/%s", v->id, kind);
    return mosquitto_publish(v->m, NULL, topic, (int)len, buf, 1, false) ? -1
                                                                         : 0;
}

int
tdev_hello(struct tdev *v, const char *groups, uint32_t model_version)
{
    struct tml_hello h;
    memset(&h, 0, sizeof(h));
    h.agent_version = (0u << 16) | (1u << 8) | 0u;
    h.hw = (struct tml_str){"testhw", 6};
    h.model = (struct tml_str){"kws", 3};
    h.model_version = model_version;
    h.slot_size = 65536;
    h.arena_size = 32768;
    h.chunk_max = 1024;
    h.boot_count = 1;
    v->model_version = model_version;
    char gbuf[256];
    snprintf(gbuf, sizeof(gbuf), "%s", groups ? groups : "");
    for (char *s = strtok(gbuf, ","); s && h.n_groups < TML_MAX_GROUPS;
         s = strtok(NULL, ","))
        h.groups[h.n_groups++] = (struct tml_str){s, strlen(s)};
    uint8_t buf[512];
    size_t len;
    if (tml_hello_encode(&h, buf, sizeof(buf), &len) != TML_OK)
        return -1;
    return pub(v, "hello", buf, len) || tdev_state(v, true);
}

int
tdev_state(struct tdev *v, bool online)
{
    struct tml_state s = {online};
    uint8_t buf[16];
    size_t len;
    if (tml_state_encode(&s, buf, sizeof(buf), &len) != TML_OK)
        return -1;
    return pub(v, "state", buf, len);
}

int
tdev_tele(struct tdev *v, uint32_t seq)
{
    struct tml_tele te;
    memset(&te, 0, sizeof(te));
    te.seq = seq;
    te.model_version = v->model_version;
    te.period_s = 60;
    te.n_inferences = 100 + seq % 7;
    te.n_low_conf = seq % 3;
    te.n_flagged = seq % 2;
    te.lat_min_us = 900;
    te.lat_mean_us = 1000;
    te.lat_max_us = 1500;
    uint8_t buf[256];
    size_t len;
    if (tml_tele_encode(&te, buf, sizeof(buf), &len) != TML_OK)
        return -1;
    return pub(v, "tele", buf, len);
}

int
tdev_sample(struct tdev *v, uint32_t seq, uint32_t sample_id, uint32_t reason)
{
    struct tml_sample s;
    memset(&s, 0, sizeof(s));
    uint8_t data[64];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(seq + i);
    s.seq = seq;
    s.sample_id = sample_id;
    s.model_version = v->model_version;
    s.reason = (uint8_t)reason;
    s.predicted = 1;
    s.confidence_bp = 4000;
    s.dtype = TML_DTYPE_U8;
    s.n_shape = 1;
    s.shape[0] = sizeof(data);
    s.total_len = sizeof(data);
    s.offset = 0;
    s.data = (struct tml_bin){data, sizeof(data)};
    uint8_t buf[256];
    size_t len;
    if (tml_sample_encode(&s, buf, sizeof(buf), &len) != TML_OK)
        return -1;
    return pub(v, "sample", buf, len);
}

uint32_t
tdev_acked_tele(struct tdev *v)
{
    pthread_mutex_lock(&v->mu);
    uint32_t a = v->acked_tele;
    pthread_mutex_unlock(&v->mu);
    return a;
}

int
tdev_wait_tele_ack(struct tdev *v, uint32_t seq, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    while (th_now_ms() < end) {
        if (tdev_acked_tele(v) >= seq)
            return 0;
        th_sleep_ms(5);
    }
    return -1;
}

/* ---- cmocka fixtures -------------------------------------------------------- */

int
th_fixture_start(void **state, const char *extra_ini)
{
    struct th *t = calloc(1, sizeof(*t));
    if (t == NULL || th_setup(t, extra_ini) != 0 ||
        th_tmld_start(t, NULL, 10000) != 0) {
        if (t)
            th_teardown(t);
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

int
th_fixture_stop(void **state)
{
    struct th *t = *state;
    th_teardown(t);
    free(t);
    return 0;
}

int
th_wait_db(struct th *t, const char *sql, int64_t want, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    int64_t v = -1;
    while (th_now_ms() < end) {
        v = th_db_int(t, sql);
        if (v == want)
            return 0;
        th_sleep_ms(100);
    }
    fprintf(stderr, "th_wait_db: %s = %lld, wanted %lld\n", sql, (long long)v,
            (long long)want);
    return -1;
}

int
th_check_config(const char *text, char *err, size_t cap)
{
    char dir[] = "/tmp/tmld_check.XXXXXX";
    if (mkdtemp(dir) == NULL)
        return -1;
    char conf[128], log[128], cmd[1024];
    snprintf(conf, sizeof(conf), "%s/test.conf", dir);
    snprintf(log, sizeof(log), "%s/err", dir);
    FILE *f = fopen(conf, "w");
    if (f != NULL) {
        fputs(text, f);
        fclose(f);
    }
    snprintf(cmd, sizeof(cmd),
             "'%s/daemon/tmld' --check-config --config %s >/dev/null 2>%s",
             env_or("TML_BINARY_DIR", "../.."), conf, log);
    int st = f != NULL ? system(cmd) : -1;
    f = fopen(log, "r");
    size_t n = f ? fread(err, 1, cap - 1, f) : 0;
    err[n] = '\0';
    if (f)
        fclose(f);
    unlink(conf);
    unlink(log);
    rmdir(dir);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

double
tdev_ingest_rate(struct th *t, const char *id, uint32_t n)
{
    struct tdev v;
    if (tdev_open(&v, t, id, false) != 0)
        return -1;
    uint64_t t0 = th_now_ms();
    uint32_t next = 1;
    while (tdev_acked_tele(&v) < n && th_now_ms() - t0 < 30000) {
        uint32_t a = tdev_acked_tele(&v);
        while (next <= n && next - a <= 64)
            if (tdev_tele(&v, next++) != 0)
                break;
        th_sleep_ms(1);
    }
    uint32_t acked = tdev_acked_tele(&v);
    double secs = (double)(th_now_ms() - t0) / 1000.0;
    tdev_close(&v);
    return acked == n ? n / secs : -1;
}

int
th_fixture_setup(void **state)
{
    return th_fixture_start(state, NULL);
}

int
th_fixture_teardown(void **state)
{
    return th_fixture_stop(state);
}

int
tdev_tele_lw(struct tdev *v, uint32_t seq, uint32_t lw)
{
    struct tml_tele te;
    memset(&te, 0, sizeof(te));
    te.seq = seq;
    te.lw = lw;
    pthread_mutex_lock(&v->mu);
    te.epoch = v->epoch;
    pthread_mutex_unlock(&v->mu);
    te.period_s = 60;
    te.n_inferences = seq;
    uint8_t buf[256];
    size_t len;
    return tml_tele_encode(&te, buf, sizeof(buf), &len) == TML_OK
               ? tdev_raw(v, "tele", buf, len)
               : -1;
}

void
tdev_set_epoch(struct tdev *v, uint32_t epoch)
{
    pthread_mutex_lock(&v->mu);
    v->epoch = epoch;
    v->acked_tele = 0;
    v->acked_sample = 0;
    pthread_mutex_unlock(&v->mu);
}

int
tdev_hello_boot(struct tdev *v, uint32_t tele_next, uint32_t boot_count,
                uint32_t boot_id)
{
    struct tml_hello h;
    memset(&h, 0, sizeof(h));
    h.hw = (struct tml_str){"testhw", 6};
    h.model = (struct tml_str){"", 0};
    h.chunk_max = 1024;
    h.boot_count = boot_count;
    h.tele_next = tele_next;
    h.sample_next = 1;
    h.boot_id = boot_id;
    pthread_mutex_lock(&v->mu);
    h.epoch = v->epoch;
    pthread_mutex_unlock(&v->mu);
    uint8_t buf[256];
    size_t len;
    return tml_hello_encode(&h, buf, sizeof(buf), &len) == TML_OK
               ? tdev_raw(v, "hello", buf, len)
               : -1;
}
