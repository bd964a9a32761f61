/*
 * rig.c: see rig.h. Child processes go into a small table that an atexit
 * handler (and rig_kill) empties with SIGKILL by PID; the broker is such a
 * child too once restarted by the rig, and testbroker's own PID otherwise.
 */
#define _GNU_SOURCE
#include "rig.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mosquitto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <tml/proto.h>

#define RIG_MAX_PIDS 32

static pid_t pids[RIG_MAX_PIDS];
static bool atexit_set;

static void
kill_all(void)
{
    size_t i;

    for (i = 0; i < RIG_MAX_PIDS; i++) {
        if (pids[i] > 0) {
            kill(pids[i], SIGKILL);
            waitpid(pids[i], NULL, 0);
            pids[i] = 0;
        }
    }
}

static void
track(pid_t pid)
{
    size_t i;

    if (!atexit_set) {
        atexit(kill_all);
        atexit_set = true;
    }
    for (i = 0; i < RIG_MAX_PIDS; i++) {
        if (pids[i] == 0) {
            pids[i] = pid;
            return;
        }
    }
}

static void
untrack(pid_t pid)
{
    size_t i;

    for (i = 0; i < RIG_MAX_PIDS; i++)
        if (pids[i] == pid)
            pids[i] = 0;
}

static uint64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int
rig_tmpdir(char *out, size_t cap)
{
    const char *base = getenv("TMPDIR");

    if (base == NULL || *base == '\0')
        base = "/tmp";
    if (snprintf(out, cap, "%s/tml-devsim-XXXXXX", base) >= (int)cap)
        return -1;
    return mkdtemp(out) ? 0 : -1;
}

void
rig_rmtree(const char *dir)
{
    const char *argv[] = {"rm", "-rf", dir, NULL};
    pid_t pid;

    if (dir == NULL || dir[0] != '/' || strlen(dir) < 8)
        return;
    pid = rig_spawn(argv, NULL);
    if (pid > 0)
        rig_wait(pid, 60000);
}

pid_t
rig_spawn(const char *const argv[], const char *log_path)
{
    char *args[64];
    size_t i;
    pid_t pid;

    /* execvp wants char *const[]; the strings are not modified. */
    for (i = 0; argv[i] != NULL && i + 1 < sizeof(args) / sizeof(args[0]);
         i++)
        memcpy(&args[i], &argv[i], sizeof(args[i]));
    args[i] = NULL;
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(log_path ? log_path : "/dev/null",
                      O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execvp(args[0], args);
        _exit(127);
    }
    track(pid);
    return pid;
}

int
rig_wait(pid_t pid, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    int status;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            untrack(pid);
            if (WIFEXITED(status))
                return WEXITSTATUS(status);
            return 128 + WTERMSIG(status);
        }
        if (r < 0 || now_ms() >= end)
            break;
        sleep_ms(20);
    }
    rig_kill(pid);
    return -1;
}

void
rig_kill(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    untrack(pid);
}

const char *
rig_bin(const char *rel, char *buf, size_t cap)
{
    const char *bin = getenv("TML_BINARY_DIR");

    snprintf(buf, cap, "%s/%s", bin ? bin : ".", rel);
    return buf;
}

char *
rig_slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long len;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 &&
        fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)len + 1);
        if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
            free(buf);
            buf = NULL;
        } else if (buf) {
            buf[len] = '\0';
        }
    }
    fclose(f);
    return buf;
}

/* ---- broker ------------------------------------------------------------- */

static int
env_value(const char *env, const char *key, char *out, size_t cap)
{
    const char *p = env;
    size_t klen = strlen(key);

    while (p && *p) {
        if (strncmp(p, key, klen) == 0 && p[klen] == '=') {
            const char *v = p + klen + 1;
            size_t n = strcspn(v, "\n");
            if (n >= cap)
                return -1;
            memcpy(out, v, n);
            out[n] = '\0';
            return 0;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return -1;
}

static int
run_script(const char *const argv[])
{
    pid_t pid = rig_spawn(argv, NULL);

    if (pid < 0)
        return -1;
    return rig_wait(pid, 60000) == 0 ? 0 : -1;
}

static bool
port_open(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok;

    if (fd < 0)
        return false;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

int
rig_broker_start(struct rig_broker *b, const char *dir)
{
    const char *script = getenv("TML_TESTBROKER");
    char path[600], val[600];
    char *env;
    const char *argv[] = {script, "start", dir, NULL};

    memset(b, 0, sizeof(*b));
    if (script == NULL || snprintf(b->dir, sizeof(b->dir), "%s", dir) >=
                              (int)sizeof(b->dir))
        return -1;
    if (run_script(argv) != 0)
        return -1;
    snprintf(path, sizeof(path), "%s/env", dir);
    env = rig_slurp(path);
    if (env == NULL)
        return -1;
    if (env_value(env, "TB_PORT", val, sizeof(val)) != 0 ||
        env_value(env, "TB_CA", b->ca, sizeof(b->ca)) != 0 ||
        env_value(env, "TB_CA_KEY", b->ca_key, sizeof(b->ca_key)) != 0 ||
        env_value(env, "TB_TMLD_CERT", b->tmld_cert, sizeof(b->tmld_cert)) !=
            0 ||
        env_value(env, "TB_TMLD_KEY", b->tmld_key, sizeof(b->tmld_key)) != 0) {
        free(env);
        return -1;
    }
    b->port = atoi(val);
    if (env_value(env, "TB_PID", val, sizeof(val)) == 0)
        b->pid = (pid_t)atoi(val);
    free(env);
    /* testbroker's mosquitto is not our child: kill it by PID at exit. */
    if (b->pid > 0)
        track(b->pid);
    return b->port > 0 ? 0 : -1;
}

int
rig_broker_device(struct rig_broker *b, const char *id)
{
    const char *script = getenv("TML_TESTBROKER");
    const char *argv[] = {script, "device", b->dir, id, NULL};

    return script ? run_script(argv) : -1;
}

void
rig_broker_kill9(struct rig_broker *b)
{
    if (b->pid > 0) {
        kill(b->pid, SIGKILL);
        waitpid(b->pid, NULL, 0); /* reaps it if it is our child */
        untrack(b->pid);
        /* Not our child (started by testbroker): wait until it is gone. */
        for (int i = 0; i < 200 && kill(b->pid, 0) == 0; i++)
            sleep_ms(10);
    }
    b->pid = 0;
}

int
rig_broker_restart(struct rig_broker *b)
{
    char conf[600];
    const char *argv[] = {"mosquitto", "-c", conf, NULL};
    uint64_t end;

    snprintf(conf, sizeof(conf), "%s/mosquitto.conf", b->dir);
    b->pid = rig_spawn(argv, NULL);
    if (b->pid < 0)
        return -1;
    end = now_ms() + 10000;
    while (now_ms() < end) {
        if (port_open(b->port))
            return 0;
        sleep_ms(20);
    }
    return -1;
}

void
rig_broker_stop(struct rig_broker *b)
{
    if (b->pid > 0) {
        kill(b->pid, SIGTERM);
        for (int i = 0; i < 100 && kill(b->pid, 0) == 0; i++) {
            waitpid(b->pid, NULL, WNOHANG);
            sleep_ms(20);
        }
        rig_broker_kill9(b);
    }
}

/* ---- gateway stand-in ------------------------------------------------------ */

static int
push(uint32_t **v, size_t *n, size_t *cap, uint32_t x)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 32;
        uint32_t *p = realloc(*v, c * sizeof(*p));
        if (p == NULL)
            return -1;
        *v = p;
        *cap = c;
    }
    (*v)[(*n)++] = x;
    return 0;
}

/* Marks seq in a per-device byte map, advances the contiguous prefix and
 * counts an arrival above a hole. As tmld (PROTOCOL.md 6), numbers below
 * the record's low-water lw are given up: the device no longer holds them
 * (lost at a reboot, or never used), so the prefix jumps over them. */
static bool
mark_seen(uint8_t **map, size_t *cap, uint32_t *contig, uint32_t *holes,
          uint32_t seq, uint32_t lw)
{
    if (seq >= *cap) {
        size_t c = *cap ? *cap : 256;
        uint8_t *p;
        while (c <= seq)
            c *= 2;
        p = realloc(*map, c);
        if (p == NULL)
            return false;
        memset(p + *cap, 0, c - *cap);
        *map = p;
        *cap = c;
    }
    bool fresh = !(*map)[seq];

    if (lw > *contig + 1 && lw <= seq)
        *contig = lw - 1;
    if (fresh) {
        (*map)[seq] = 1;
        if (seq > *contig + 1)
            (*holes)++;
    }
    while (*contig + 1 < *cap && (*map)[*contig + 1])
        (*contig)++;
    return fresh;
}

static long
dev_index(const struct rig_gw *g, const char *id, size_t len)
{
    size_t plen = strlen(g->prefix);
    unsigned long num = 0;
    size_t i;

    if (len <= plen || memcmp(id, g->prefix, plen) != 0)
        return -1;
    for (i = plen; i < len; i++) {
        if (id[i] < '0' || id[i] > '9')
            return -1;
        num = num * 10 + (unsigned long)(id[i] - '0');
    }
    if (num < g->first || num - g->first >= g->n_devs)
        return -1;
    return (long)(num - g->first);
}

static void
gw_ack(struct rig_gw *g, const struct tml_topic *t, const struct tml_ack *a)
{
    char topic[TML_MAX_TOPIC + 1];
    char dev[TML_MAX_DEVICE_ID + 1];
    uint8_t buf[32];
    size_t len;

    memcpy(dev, t->dev.p, t->dev.len);
    dev[t->dev.len] = '\0';
    if (tml_topic_build(topic, sizeof(topic), dev, t->dev.len, TML_DIR_DOWN,
                        TML_KIND_ACK, NULL) != TML_OK ||
        tml_ack_encode(a, buf, sizeof(buf), &len) != TML_OK)
        return;
    if (mosquitto_publish(g->mosq, NULL, topic, (int)len, buf, 1, false) ==
        MOSQ_ERR_SUCCESS)
        g->n_acks_sent++;
}

static void
gw_publish_ota(struct rig_gw *g, const struct tml_topic *t,
               const struct tml_ota_down *od)
{
    char topic[TML_MAX_TOPIC + 1];
    char dev[TML_MAX_DEVICE_ID + 1];
    uint8_t buf[TML_MAX_MESSAGE];
    size_t len;

    memcpy(dev, t->dev.p, t->dev.len);
    dev[t->dev.len] = '\0';
    if (tml_topic_build(topic, sizeof(topic), dev, t->dev.len, TML_DIR_DOWN,
                        TML_KIND_OTA, NULL) != TML_OK ||
        tml_ota_down_encode(od, buf, sizeof(buf), &len) != TML_OK)
        return;
    mosquitto_publish(g->mosq, NULL, topic, (int)len, buf, 1, false);
}

static void
gw_send_offer(struct rig_gw *g, const struct tml_topic *t,
              struct rig_dev_log *d)
{
    struct tml_ota_down od;

    memset(&od, 0, sizeof(od));
    od.kind = TML_OTA_DOWN_OFFER;
    od.offer_id = d->offer->offer_id;
    od.manifest.p = d->offer->cose;
    od.manifest.len = d->offer->cose_len;
    gw_publish_ota(g, t, &od);
    d->offered = true;
}

/* Answers a chunk request [offset, offset + len) in 1 KiB chunks. */
static void
gw_serve(struct rig_gw *g, const struct tml_topic *t, struct rig_dev_log *d,
         const struct tml_ota_up *up)
{
    uint32_t off = up->offset, end = up->offset + up->len;

    d->n_requests++;
    if (d->offer == NULL || up->offer_id != d->offer->offer_id)
        return;
    if (end > d->offer->image_len || end < off)
        end = (uint32_t)d->offer->image_len;
    while (off < end) {
        struct tml_ota_down od;
        uint32_t n = end - off > 1024 ? 1024 : end - off;

        memset(&od, 0, sizeof(od));
        od.kind = TML_OTA_DOWN_CHUNK;
        od.offer_id = d->offer->offer_id;
        od.offset = off;
        od.data.p = d->offer->image + off;
        od.data.len = n;
        gw_publish_ota(g, t, &od);
        d->n_chunks++;
        off += n;
    }
}

static void
gw_on_message(struct mosquitto *m, void *user,
              const struct mosquitto_message *msg)
{
    struct rig_gw *g = user;
    struct tml_topic t;
    struct tml_ack ack;
    long i;

    (void)m;
    pthread_mutex_lock(&g->mu);
    g->n_msgs++;
    if (tml_topic_parse(msg->topic, strlen(msg->topic), &t) != TML_OK ||
        (i = dev_index(g, t.dev.p, t.dev.len)) < 0) {
        g->n_foreign++;
        goto out;
    }
    memset(&ack, 0, sizeof(ack));
    if (t.kind == TML_KIND_TELE) {
        struct tml_tele te;
        struct rig_dev_log *d = &g->devs[i];
        if (tml_tele_decode(msg->payload, (size_t)msg->payloadlen, &te) !=
            TML_OK) {
            g->n_undecodable++;
            goto out;
        }
        /* Each seq counts once, on its first arrival, whatever the order. */
        if (mark_seen(&d->seen, &d->seen_cap, &d->contig, &d->holes,
                      te.seq, te.lw)) {
            d->inferences += te.n_inferences;
            if (d->offer != NULL && d->offer_version != 0 &&
                te.model_version == d->offer_version) {
                d->offer_inferences += te.n_inferences;
                d->offer_low_conf += te.n_low_conf;
                d->offer_flagged += te.n_flagged;
            }
        }
        if (te.seq > d->max_tele) {
            d->max_tele = te.seq;
            d->tele_model_version = te.model_version;
        }
        push(&d->seq, &d->n, &d->cap, te.seq);
        ack.tele_seq = g->ack_highwater ? d->max_tele : d->contig;
        ack.has_tele = ack.tele_seq > 0;
    } else if (t.kind == TML_KIND_SAMPLE) {
        struct tml_sample sa;
        struct rig_dev_log *d = &g->devs[i];
        if (tml_sample_decode(msg->payload, (size_t)msg->payloadlen, &sa) !=
            TML_OK) {
            g->n_undecodable++;
            goto out;
        }
        if (sa.seq > d->max_sample)
            d->max_sample = sa.seq;
        push(&d->sseq, &d->sn, &d->scap, sa.seq);
        (void)mark_seen(&d->sseen, &d->sseen_cap, &d->scontig, &d->sholes,
                        sa.seq, sa.lw);
        ack.sample_seq = g->ack_highwater ? d->max_sample : d->scontig;
        ack.has_sample = ack.sample_seq > 0;
    } else if (t.kind == TML_KIND_HELLO) {
        struct rig_dev_log *d = &g->devs[i];
        g->n_hello++;
        d->hello_seen = true;
        if (d->offer != NULL && !d->offered)
            gw_send_offer(g, &t, d);
    } else if (t.kind == TML_KIND_OTA) {
        struct rig_dev_log *d = &g->devs[i];
        struct tml_ota_up up;
        if (tml_ota_up_decode(msg->payload, (size_t)msg->payloadlen, &up) !=
            TML_OK) {
            g->n_undecodable++;
            goto out;
        }
        if (up.kind == TML_OTA_UP_REQUEST) {
            gw_serve(g, &t, d, &up);
        } else {
            d->n_status++;
            d->last_state = up.state;
            d->last_reason = up.reason;
            if (up.state < 32)
                d->states_seen |= 1u << up.state;
        }
    } else if (t.kind == TML_KIND_STATE) {
        g->n_state++;
    }
    if (g->do_ack && (ack.has_tele || ack.has_sample))
        gw_ack(g, &t, &ack);
out:
    pthread_mutex_unlock(&g->mu);
}

static void
gw_on_connect(struct mosquitto *m, void *user, int rc)
{
    (void)user;
    if (rc == 0)
        mosquitto_subscribe(m, NULL, "tml/v1/+/up/#", 1);
}

static void
gw_on_subscribe(struct mosquitto *m, void *user, int mid, int n,
                const int *granted)
{
    struct rig_gw *g = user;

    (void)m;
    (void)mid;
    if (n == 1 && granted[0] <= 2) {
        pthread_mutex_lock(&g->mu);
        g->connected = true;
        pthread_mutex_unlock(&g->mu);
    }
}

static void
gw_on_disconnect(struct mosquitto *m, void *user, int rc)
{
    struct rig_gw *g = user;

    (void)m;
    (void)rc;
    pthread_mutex_lock(&g->mu);
    g->connected = false;
    pthread_mutex_unlock(&g->mu);
}

/* Our own network thread: mosquitto_loop_forever gives up for good on a
 * TLS error, which is what a killed broker looks like; a gateway must keep
 * trying. */
static void *
gw_thread(void *arg)
{
    struct rig_gw *g = arg;

    while (g->running) {
        int rc = mosquitto_loop(g->mosq, 100, 1);
        if (rc != MOSQ_ERR_SUCCESS && g->running) {
            sleep_ms(300);
            mosquitto_reconnect(g->mosq);
        }
    }
    return NULL;
}

int
rig_gw_start(struct rig_gw *g, struct rig_broker *b, const char *prefix,
             uint32_t first, uint32_t n_devs, bool do_ack)
{
    memset(g, 0, sizeof(*g));
    pthread_mutex_init(&g->mu, NULL);
    snprintf(g->prefix, sizeof(g->prefix), "%s", prefix);
    g->first = first;
    g->n_devs = n_devs;
    g->do_ack = do_ack;
    g->devs = calloc(n_devs, sizeof(*g->devs));
    if (g->devs == NULL)
        return -1;
    mosquitto_lib_init();
    g->mosq = mosquitto_new("tmld", true, g);
    if (g->mosq == NULL)
        return -1;
    if (mosquitto_tls_set(g->mosq, b->ca, NULL, b->tmld_cert, b->tmld_key,
                          NULL) != MOSQ_ERR_SUCCESS)
        return -1;
    mosquitto_connect_callback_set(g->mosq, gw_on_connect);
    mosquitto_subscribe_callback_set(g->mosq, gw_on_subscribe);
    mosquitto_disconnect_callback_set(g->mosq, gw_on_disconnect);
    mosquitto_message_callback_set(g->mosq, gw_on_message);
    mosquitto_max_inflight_messages_set(g->mosq, 1000);
    mosquitto_reconnect_delay_set(g->mosq, 1, 1, false);
    if (mosquitto_connect_async(g->mosq, "127.0.0.1", b->port, 30) !=
        MOSQ_ERR_SUCCESS)
        return -1;
    g->running = true;
    if (pthread_create(&g->thread, NULL, gw_thread, g) != 0) {
        g->running = false;
        return -1;
    }
    return 0;
}

void
rig_gw_offer(struct rig_gw *g, uint32_t i, const struct rig_offer *o)
{
    pthread_mutex_lock(&g->mu);
    g->devs[i].offer = o;
    g->devs[i].offered = false;
    g->devs[i].offer_version = o ? o->version : 0;
    pthread_mutex_unlock(&g->mu);
}

void
rig_gw_snapshot(struct rig_gw *g, uint32_t i, struct rig_dev_log *out)
{
    pthread_mutex_lock(&g->mu);
    *out = g->devs[i];
    out->seq = out->sseq = NULL;
    out->seen = out->sseen = NULL;
    pthread_mutex_unlock(&g->mu);
}

void
rig_gw_set_highwater(struct rig_gw *g, bool on)
{
    pthread_mutex_lock(&g->mu);
    g->ack_highwater = on;
    pthread_mutex_unlock(&g->mu);
}

uint64_t
rig_gw_holes(struct rig_gw *g)
{
    uint64_t n = 0;
    uint32_t i;

    pthread_mutex_lock(&g->mu);
    for (i = 0; i < g->n_devs; i++)
        n += g->devs[i].holes + g->devs[i].sholes;
    pthread_mutex_unlock(&g->mu);
    return n;
}

void
rig_gw_set_ack(struct rig_gw *g, bool on)
{
    pthread_mutex_lock(&g->mu);
    g->do_ack = on;
    pthread_mutex_unlock(&g->mu);
}

bool
rig_gw_wait_ready(struct rig_gw *g, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;

    while (now_ms() < end) {
        bool ok;
        pthread_mutex_lock(&g->mu);
        ok = g->connected;
        pthread_mutex_unlock(&g->mu);
        if (ok)
            return true;
        sleep_ms(20);
    }
    return false;
}

void
rig_gw_stop(struct rig_gw *g)
{
    uint32_t i;

    if (g->mosq) {
        if (g->running) {
            g->running = false;
            pthread_join(g->thread, NULL);
        }
        mosquitto_disconnect(g->mosq);
        mosquitto_destroy(g->mosq);
        g->mosq = NULL;
    }
    for (i = 0; g->devs && i < g->n_devs; i++) {
        free(g->devs[i].seq);
        free(g->devs[i].sseq);
        free(g->devs[i].seen);
        free(g->devs[i].sseen);
    }
    free(g->devs);
    g->devs = NULL;
    pthread_mutex_destroy(&g->mu);
    mosquitto_lib_cleanup();
}

static int
cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

static size_t
distinct(uint32_t *v, size_t n)
{
    size_t i, k = 0;

    if (n == 0)
        return 0;
    qsort(v, n, sizeof(*v), cmp_u32);
    for (i = 0; i < n; i++)
        if (i == 0 || v[i] != v[i - 1])
            k++;
    return k;
}

size_t
rig_gw_distinct(struct rig_gw *g, uint32_t i, uint32_t *max_seq)
{
    size_t k;

    pthread_mutex_lock(&g->mu);
    k = distinct(g->devs[i].seq, g->devs[i].n);
    if (max_seq)
        *max_seq = g->devs[i].max_tele;
    pthread_mutex_unlock(&g->mu);
    return k;
}

size_t
rig_gw_distinct_samples(struct rig_gw *g, uint32_t i)
{
    size_t k;

    pthread_mutex_lock(&g->mu);
    k = distinct(g->devs[i].sseq, g->devs[i].sn);
    pthread_mutex_unlock(&g->mu);
    return k;
}

/* ---- JSON summary --------------------------------------------------------- */

#include <cjson/cJSON.h>

static uint64_t
jnum(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

    return cJSON_IsNumber(v) && v->valuedouble > 0 ? (uint64_t)v->valuedouble
                                                   : 0;
}

static void
jstr(const cJSON *o, const char *key, char *out, size_t cap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

    snprintf(out, cap, "%s", cJSON_IsString(v) ? v->valuestring : "");
}

int
rig_summary_load(struct rig_summary *s, const char *path)
{
    char *text = rig_slurp(path);
    cJSON *root, *totals, *arr, *it;
    uint32_t i = 0;

    memset(s, 0, sizeof(*s));
    if (text == NULL)
        return -1;
    root = cJSON_Parse(text);
    free(text);
    if (root == NULL)
        return -1;
    arr = cJSON_GetObjectItemCaseSensitive(root, "per_device");
    totals = cJSON_GetObjectItemCaseSensitive(root, "totals");
    if (!cJSON_IsArray(arr) || !cJSON_IsObject(totals)) {
        cJSON_Delete(root);
        return -1;
    }
    s->n = (uint32_t)cJSON_GetArraySize(arr);
    s->devs = calloc(s->n ? s->n : 1, sizeof(*s->devs));
    if (s->devs == NULL) {
        cJSON_Delete(root);
        return -1;
    }
    s->elapsed_s = cJSON_GetObjectItemCaseSensitive(root, "elapsed_s")
                       ->valuedouble;
    s->produce_s = cJSON_GetObjectItemCaseSensitive(root, "produce_s")
                       ->valuedouble;
    s->cpu_s = cJSON_GetObjectItemCaseSensitive(root, "cpu_s")->valuedouble;
    s->max_rss_kb = jnum(root, "max_rss_kb");
    s->max_socket_fd = jnum(root, "max_socket_fd");
    s->publishes = jnum(totals, "publishes");
    s->publish_bytes = jnum(totals, "publish_bytes");
    s->resent = jnum(totals, "tele_resent");
    s->inferences = jnum(totals, "inferences");
    cJSON_ArrayForEach(it, arr)
    {
        struct rig_devsum *d = &s->devs[i++];
        jstr(it, "id", d->id, sizeof(d->id));
        jstr(it, "ota_state", d->ota_state, sizeof(d->ota_state));
        jstr(it, "model", d->model, sizeof(d->model));
        d->sent = jnum(it, "sent");
        d->acked = jnum(it, "acked");
        d->resent = jnum(it, "resent");
        d->folded = jnum(it, "folded");
        d->samples_sent = jnum(it, "samples_sent");
        d->samples_acked = jnum(it, "samples_acked");
        d->inferences = jnum(it, "inferences");
        d->connects = jnum(it, "connects");
        d->disconnects = jnum(it, "disconnects");
        d->flaps = jnum(it, "flaps");
        d->reboots = jnum(it, "reboots");
        d->seq_reused = jnum(it, "seq_reused");
        d->lost_unsent = jnum(it, "lost_unsent");
        d->lost_held = jnum(it, "lost_held");
        d->relinks = jnum(it, "relinks");
        d->last_pub_seq = jnum(it, "last_pub_seq");
        d->publishes = jnum(it, "publishes");
        d->last_seq = jnum(it, "last_seq");
        d->ack_seq = jnum(it, "ack_seq");
        d->bad_in = jnum(it, "bad_in");
        d->garbage_sent = jnum(it, "garbage_sent");
        d->replays_sent = jnum(it, "replays_sent");
        d->model_version = jnum(it, "model_version");
    }
    cJSON_Delete(root);
    return 0;
}

void
rig_summary_free(struct rig_summary *s)
{
    free(s->devs);
    s->devs = NULL;
    s->n = 0;
}
