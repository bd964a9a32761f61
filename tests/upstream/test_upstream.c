/*
 * test_upstream.c: tmld's upstream module (issue 8) end to end: a real TLS
 * mosquitto (tests/lib/testbroker), the real tmld, test devices publishing
 * encoded records through the broker, and a fake HTTPS cloud
 * (tests/upstream/cloud.py) that counts batches by Idempotency-Key and
 * records their order and rows.
 *
 * Every run produces "an hour" of telemetry: each device sends one summary
 * per simulated minute (period_s 60) whose age_s places it in the last
 * hour, as fast as the broker takes them. The checks are on the cloud's
 * side: every (device, seq) exactly once, no row under two keys, batches in
 * row order per stream; duplicates only as the same key again.
 *
 * Sizes: UPSTREAM_DEVICES x UPSTREAM_MINUTES (default 4 x 60); the `slow`
 * variant (upstream_*_slow in CMake) sets 20 x 360 and more kill cycles.
 * Catalogue: R11 (upload kill -9), R12 (cloud faults: 5xx, reset mid-body,
 * Retry-After, wrong certificate).
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "harness.h"
#include "tml/proto.h"

#define MAX_DEVS 64

static pid_t cloud_pid;

struct rig {
    struct th t;
    char cloud_dir[400];
    char up_extra[512]; /* appended to [upstream] (may open sections) */
    int cloud_port;
    int n_devs;
    uint32_t minutes;
    struct tdev devs[MAX_DEVS];
    int n_open;
};

static int
env_int(const char *k, int def)
{
    const char *v = getenv(k);
    return v && atoi(v) > 0 ? atoi(v) : def;
}

static void
cloud_kill(void)
{
    if (cloud_pid > 0) {
        kill(cloud_pid, SIGKILL);
        waitpid(cloud_pid, NULL, 0);
        cloud_pid = 0;
    }
}

static int
free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(0x7f000001);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return ntohs(sa.sin_port);
}

static const char *
cloud_py(void)
{
    static char p[512];
    snprintf(p, sizeof(p), "%s/tests/upstream/cloud.py",
             getenv("TML_SOURCE_DIR") ? getenv("TML_SOURCE_DIR") : ".");
    return p;
}

static int rig_write_conf(struct rig *r);

/* Starts the cloud with extra arguments (space-separated, no quoting). If
 * its port was taken meanwhile (the machine is shared) and tmld is not
 * running yet, another port is picked and tmld's config rewritten. */
static int
cloud_start(struct rig *r, const char *args)
{
    char ready[512], cmd[2048];
    for (int attempt = 0; attempt < 3; attempt++) {
        cloud_kill();
        snprintf(ready, sizeof(ready), "%s/ready", r->cloud_dir);
        unlink(ready);
        snprintf(cmd, sizeof(cmd),
                 "exec /usr/bin/python3 '%s' --dir '%s' --port %d %s "
                 ">>'%s/cloud.log' 2>&1",
                 cloud_py(), r->cloud_dir, r->cloud_port, args ? args : "",
                 r->cloud_dir);
        pid_t p = fork();
        if (p < 0)
            return -1;
        if (p == 0) {
            execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
            _exit(127);
        }
        cloud_pid = p;
        for (int i = 0; i < 500; i++) {
            if (access(ready, F_OK) == 0)
                return 0;
            if (waitpid(p, NULL, WNOHANG) == p) {
                cloud_pid = 0;
                break;
            }
            th_sleep_ms(20);
        }
        snprintf(cmd, sizeof(cmd), "tail -n 5 '%s/cloud.log' >&2",
                 r->cloud_dir);
        fprintf(stderr, "cloud.py did not start on port %d:\n", r->cloud_port);
        if (system(cmd) != 0)
            fprintf(stderr, "(no cloud.log)\n");
        if (r->t.tmld_pid > 0)
            break;
        r->cloud_port = free_port();
        if (rig_write_conf(r) != 0)
            break;
    }
    return -1;
}

static cJSON *
cloud_stats(struct rig *r)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/stats.json", r->cloud_dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    static char buf[4 << 20];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return cJSON_Parse(buf);
}

static double
jnum(const cJSON *o, const char *path)
{
    char key[64];
    const char *p = path;
    while (o != NULL && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        snprintf(key, sizeof(key), "%.*s", (int)n, p);
        o = cJSON_GetObjectItemCaseSensitive(o, key);
        p += n + (dot ? 1 : 0);
    }
    return cJSON_IsNumber(o) ? o->valuedouble : -1;
}

/* upstream.status as cJSON (caller frees), or NULL. */
static cJSON *
ustatus(struct rig *r)
{
    static char out[65536];
    if (th_ctl(&r->t, "{\"id\":1,\"cmd\":\"upstream.status\"}", out,
               sizeof(out), 3000) != 0)
        return NULL;
    cJSON *j = cJSON_Parse(out);
    if (j == NULL)
        return NULL;
    cJSON *res = cJSON_DetachItemFromObject(j, "result");
    cJSON_Delete(j);
    return res;
}

static double
ustatus_num(struct rig *r, const char *path)
{
    cJSON *s = ustatus(r);
    double v = jnum(s, path);
    cJSON_Delete(s);
    return v;
}

/* "batch_rows = N": def, or $UPSTREAM_BATCH_ROWS (the slow variants use
 * bigger batches so that hours of data fit their time budget). */
static const char *
batch_rows_ini(int def)
{
    static char ini[64];
    snprintf(ini, sizeof(ini), "batch_rows = %d",
             env_int("UPSTREAM_BATCH_ROWS", def));
    return ini;
}

/* Writes tmld's config: [upstream] pointing at the cloud, plus up_extra. */
static int
rig_write_conf(struct rig *r)
{
    snprintf(r->t.extra, sizeof(r->t.extra),
             "[upstream]\nurl = https://127.0.0.1:%d/ingest\n"
             "ca_file = %s/ca.pem\ngateway_id = gw-test\n"
             "backoff_min = 50ms\nbackoff_max = 500ms\n"
             "retry_after_max = 2s\npoll = 100ms\n"
             "connect_timeout = 2s\n%s\n",
             r->cloud_port, r->cloud_dir, r->up_extra);
    return th_write_conf(&r->t);
}

static int
rig_setup(struct rig *r, const char *extra)
{
    memset(r, 0, sizeof(*r));
    r->n_devs = env_int("UPSTREAM_DEVICES", 4);
    if (r->n_devs > MAX_DEVS)
        r->n_devs = MAX_DEVS;
    r->minutes = (uint32_t)env_int("UPSTREAM_MINUTES", 60);
    r->cloud_port = free_port();
    snprintf(r->up_extra, sizeof(r->up_extra), "%s", extra ? extra : "");
    if (th_setup(&r->t, NULL) != 0)
        return -1;
    snprintf(r->cloud_dir, sizeof(r->cloud_dir), "%s/cloud", r->t.dir);
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 '%s' --dir '%s' --gen-certs",
             cloud_py(), r->cloud_dir);
    if (system(cmd) != 0)
        return -1;
    return rig_write_conf(r);
}

/* tmld's peak RSS in KiB (VmHWM), or -1. */
static long
tmld_peak_rss_kib(struct rig *r)
{
    char path[64], line[256];
    long v = -1;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)r->t.tmld_pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmHWM: %ld", &v) == 1)
            break;
    fclose(f);
    return v;
}

/* Stops tmld with SIGTERM and requires a clean exit (every handle closed;
 * under ASan also no leak and no error), whatever upstream was doing. */
static void
rig_teardown(struct rig *r)
{
    for (int i = 0; i < r->n_open; i++)
        tdev_close(&r->devs[i]);
    if (r->t.tmld_pid > 0) {
        int st = th_tmld_stop(&r->t, SIGTERM, 15000);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            th_dump_log(&r->t);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    cloud_kill();
    th_teardown(&r->t);
}

static int
tele_at(struct tdev *v, uint32_t seq, uint32_t minutes)
{
    struct tml_tele te;
    uint8_t buf[256];
    size_t len;
    memset(&te, 0, sizeof(te));
    te.seq = seq;
    te.model_version = 3;
    te.period_s = 60;
    /* Summary seq covers minute seq of the hour that ended just now. */
    te.age_s = (minutes - seq) * 60;
    te.n_inferences = 600 + seq % 11;
    te.n_low_conf = seq % 5;
    te.n_flagged = seq % 3;
    te.lat_min_us = 800;
    te.lat_mean_us = 1000 + seq % 100;
    te.lat_max_us = 2000;
    te.n_classes = 3;
    te.class_counts[0] = 300;
    te.class_counts[1] = 200;
    te.class_counts[2] = 100 + seq % 11;
    if (tml_tele_encode(&te, buf, sizeof(buf), &len) != TML_OK)
        return -1;
    return tdev_raw(v, "tele", buf, len);
}

/* Opens the devices and publishes every device's hour of summaries with a
 * go-back-N window, until tmld acked them all. Returns 0 or -1. */
static int
produce(struct rig *r, const char *prefix, int timeout_ms)
{
    uint32_t next[MAX_DEVS], seen[MAX_DEVS];
    uint64_t progress[MAX_DEVS];
    for (int i = r->n_open; i < r->n_devs; i++) {
        char id[64];
        snprintf(id, sizeof(id), "%s-%02d", prefix, i);
        if (tdev_open(&r->devs[i], &r->t, id, true) != 0 ||
            tdev_hello(&r->devs[i], "turbines", 3) != 0)
            return -1;
        r->n_open = i + 1;
    }
    for (int i = 0; i < r->n_devs; i++) {
        next[i] = tdev_acked_tele(&r->devs[i]) + 1;
        seen[i] = next[i] - 1;
        progress[i] = th_now_ms();
    }
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    while (th_now_ms() < end) {
        int done = 0;
        for (int i = 0; i < r->n_devs; i++) {
            uint32_t a = tdev_acked_tele(&r->devs[i]);
            if (a >= r->minutes) {
                done++;
                continue;
            }
            if (a > seen[i]) {
                seen[i] = a;
                progress[i] = th_now_ms();
            }
            if (next[i] <= a)
                next[i] = a + 1;
            if (th_now_ms() - progress[i] > 1000) {
                next[i] = a + 1; /* go back N, like the agent */
                progress[i] = th_now_ms();
            }
            while (next[i] <= r->minutes && next[i] - a <= 32) {
                if (tele_at(&r->devs[i], next[i], r->minutes) != 0)
                    break;
                next[i]++;
            }
        }
        if (done == r->n_devs)
            return 0;
        th_sleep_ms(2);
    }
    fprintf(stderr, "produce: not every record was acked in time\n");
    return -1;
}

/* Waits until the cloud accepted want tele rows and tmld's backlog is 0. */
static int
wait_delivered(struct rig *r, double want, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    while (th_now_ms() < end) {
        cJSON *s = cloud_stats(r);
        double got = jnum(s, "rows.tele");
        cJSON_Delete(s);
        if (got >= want && ustatus_num(r, "streams.tele.backlog_rows") == 0)
            return 0;
        th_sleep_ms(100);
    }
    return -1;
}

/* The cloud-side verdict: every device's seq 1..minutes exactly once, no
 * row under two keys, batches in order, no protocol problem. Prints the
 * figures. */
static void
check_cloud(struct rig *r, const char *what)
{
    cJSON *s = cloud_stats(r);
    assert_non_null(s);
    const cJSON *tele = cJSON_GetObjectItemCaseSensitive(s, "tele");
    int devs = 0;
    double lost = 0, dup_rows = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, tele)
    {
        devs++;
        lost += r->minutes - jnum(d, "distinct");
        dup_rows += jnum(d, "count") - jnum(d, "distinct");
        if (jnum(d, "min") != 1 || jnum(d, "max") != r->minutes)
            fprintf(stderr, "%s: device %s: seq %g..%g\n", what, d->string,
                    jnum(d, "min"), jnum(d, "max"));
    }
    printf("%s: %d devices x %u summaries; cloud: requests %g, batches %g, "
           "tele rows %g, lost %g, duplicate rows %g, same-key re-sends "
           "%g, rows under two keys %g, order violations %g, injected "
           "fail %g / close mid-body %g / close after accept %g\n",
           what, r->n_devs, r->minutes, jnum(s, "requests"),
           jnum(s, "accepted_batches"), jnum(s, "rows.tele"), lost, dup_rows,
           jnum(s, "dup_same_key"), jnum(s, "overlap"),
           jnum(s, "order_violations"), jnum(s, "injected.fail"),
           jnum(s, "injected.close_mid_body"),
           jnum(s, "injected.close_after_accept"));
    if (jnum(s, "n_bad") != 0) {
        char *txt = cJSON_Print(cJSON_GetObjectItem(s, "bad"));
        fprintf(stderr, "%s: protocol problems: %s\n", what, txt);
        free(txt);
    }
    assert_int_equal(devs, r->n_devs);
    assert_true(lost == 0);
    assert_true(dup_rows == 0);
    assert_true(jnum(s, "overlap") == 0);
    assert_true(jnum(s, "order_violations") == 0);
    assert_true(jnum(s, "n_bad") == 0);
    assert_true(jnum(s, "rows.tele") == (double)r->n_devs * r->minutes);
    cJSON_Delete(s);
}

/* ---- tests --------------------------------------------------------------- */

/* An hour of telemetry produced while the cloud is down reaches it after it
 * comes up: in order, no gaps, no duplicates. Events (online) and the
 * samples stream go out too. */
static void
test_upstream_offline_hour_delivered_after_cloud_returns(void **state)
{
    struct rig *r = calloc(1, sizeof(*r));
    (void)state;
    assert_int_equal(rig_setup(r, "batch_rows = 100"), 0);
    assert_int_equal(th_tmld_start(&r->t, NULL, 10000), 0);
    uint64_t t0 = th_now_ms();
    assert_int_equal(produce(r, "wind", 60000), 0);
    for (int i = 0; i < r->n_devs; i++)
        assert_int_equal(tdev_sample(&r->devs[i], 1, 7, TML_REASON_FLAGGED), 0);
    printf("produced %u simulated minutes x %d devices in %.1f s while the "
           "cloud was down\n",
           r->minutes, r->n_devs, (double)(th_now_ms() - t0) / 1000);
    /* Down: the backlog is visible and nothing was delivered. */
    th_sleep_ms(500);
    double backlog = ustatus_num(r, "backlog_rows");
    printf("backlog while down: %g rows; tele retries so far %g\n", backlog,
           ustatus_num(r, "streams.tele.retries"));
    assert_true(backlog >= (double)r->n_devs * r->minutes);
    assert_true(ustatus_num(r, "streams.tele.delivered") == 0);

    t0 = th_now_ms();
    assert_int_equal(cloud_start(r, ""), 0);
    if (wait_delivered(r, (double)r->n_devs * r->minutes, 60000) != 0)
        th_dump_log(&r->t);
    printf("backlog drained %.1f s after the cloud came up\n",
           (double)(th_now_ms() - t0) / 1000);
    check_cloud(r, "offline hour");
    printf("tmld peak RSS %ld KiB\n", tmld_peak_rss_kib(r));
    /* The other streams: one sample chunk per device, online events. */
    uint64_t end = th_now_ms() + 20000;
    cJSON *s = NULL;
    while (th_now_ms() < end) {
        cJSON_Delete(s);
        s = cloud_stats(r);
        if (jnum(s, "rows.samples") >= r->n_devs &&
            jnum(s, "rows.events") >= r->n_devs)
            break;
        th_sleep_ms(100);
    }
    assert_true(jnum(s, "rows.samples") == r->n_devs);
    assert_true(jnum(s, "rows.events") >= r->n_devs);
    cJSON_Delete(s);
    assert_true(ustatus_num(r, "streams.tele.delivered") ==
                (double)r->n_devs * r->minutes);
    end = th_now_ms() + 5000;
    while (th_now_ms() < end && ustatus_num(r, "backlog_rows") != 0)
        th_sleep_ms(50);
    if (ustatus_num(r, "backlog_rows") != 0) {
        cJSON *us = ustatus(r);
        char *txt = cJSON_Print(us);
        fprintf(stderr, "upstream.status: %s\n", txt);
        free(txt);
        cJSON_Delete(us);
    }
    assert_true(ustatus_num(r, "backlog_rows") == 0);
    rig_teardown(r);
    free(r);
}

/* R12: a cloud failing 30 % of requests (500/502/503/429/408, some with
 * Retry-After) and closing 10 % of connections, half mid-body and half
 * after storing the batch: same result; the stored-but-unanswered batches
 * come again under the same key only. */
static void
test_upstream_flaky_cloud_same_result(void **state)
{
    struct rig *r = calloc(1, sizeof(*r));
    (void)state;
    assert_int_equal(rig_setup(r, batch_rows_ini(10)), 0);
    assert_int_equal(cloud_start(r, "--fail-rate 0.3 --close-rate 0.1 "
                                    "--seed 7"),
                     0);
    assert_int_equal(th_tmld_start(&r->t, NULL, 10000), 0);
    assert_int_equal(produce(r, "flaky", 60000), 0);
    if (wait_delivered(r, (double)r->n_devs * r->minutes,
                       120000 + r->n_devs * (int)r->minutes * 40) != 0)
        th_dump_log(&r->t);
    check_cloud(r, "flaky cloud");
    printf("tmld peak RSS %ld KiB\n", tmld_peak_rss_kib(r));
    cJSON *s = cloud_stats(r);
    /* The faults really happened. */
    assert_true(jnum(s, "injected.fail") > 0);
    assert_true(jnum(s, "injected.close_mid_body") +
                    jnum(s, "injected.close_after_accept") >
                0);
    /* Retry-After (1 s on some 503/429) is waited for. */
    printf("Retry-After answers followed by a retry: %g honoured, %g early "
           "(shortest wait %.2f s)\n",
           jnum(s, "retry_after.honoured"), jnum(s, "retry_after.early"),
           jnum(s, "retry_after.min_wait_s"));
    assert_true(jnum(s, "retry_after.early") == 0);
    cJSON_Delete(s);
    printf("tmld: tele retries %g\n", ustatus_num(r, "streams.tele.retries"));
    assert_true(ustatus_num(r, "streams.tele.retries") > 0);
    rig_teardown(r);
    free(r);
}

/* R11: kill -9 of tmld while it uploads, restart, repeat. No gaps; a batch
 * seen twice by the cloud only ever carries the same key. */
static void
test_upstream_kill9_during_upload(void **state)
{
    struct rig *r = calloc(1, sizeof(*r));
    int cycles = env_int("UPSTREAM_KILL_CYCLES", 5);
    (void)state;
    assert_int_equal(rig_setup(r, batch_rows_ini(5)), 0);
    /* A slow-ish cloud so that kills land during POSTs. */
    assert_int_equal(cloud_start(r, "--delay 0.05 --close-rate 0.05"), 0);
    assert_int_equal(th_tmld_start(&r->t, NULL, 10000), 0);
    assert_int_equal(produce(r, "kill", 60000), 0);
    srand(42);
    int kills = 0;
    for (int c = 0; c < cycles; c++) {
        th_sleep_ms(150 + rand() % 500);
        if (ustatus_num(r, "streams.tele.backlog_rows") == 0)
            break;
        assert_int_equal(kill(r->t.tmld_pid, SIGKILL), 0);
        th_tmld_wait_exit(&r->t, 5000);
        kills++;
        assert_int_equal(th_tmld_start(&r->t, NULL, 10000), 0);
    }
    uint64_t t0 = th_now_ms();
    if (wait_delivered(r, (double)r->n_devs * r->minutes,
                       120000 + r->n_devs * (int)r->minutes * 40) != 0)
        th_dump_log(&r->t);
    printf("kill -9 during upload: %d kills; backlog drained %.1f s after "
           "the last restart\n",
           kills, (double)(th_now_ms() - t0) / 1000);
    assert_true(kills > 0);
    check_cloud(r, "kill -9");
    rig_teardown(r);
    free(r);
}

/* A batch the cloud refuses with 400 is poisoned: kept, counted, listed by
 * upstream.poisoned, sent exactly once; the stream goes on after it. */
static void
test_upstream_4xx_poisons_batch_and_moves_on(void **state)
{
    struct rig *r = calloc(1, sizeof(*r));
    (void)state;
    assert_int_equal(rig_setup(r, "batch_rows = 1000"), 0);
    r->n_devs = 1;
    r->minutes = 10;
    assert_int_equal(cloud_start(r, "--poison-device bad-00"), 0);
    assert_int_equal(th_tmld_start(&r->t, NULL, 10000), 0);
    assert_int_equal(produce(r, "bad", 30000), 0);
    uint64_t end = th_now_ms() + 20000;
    while (th_now_ms() < end && ustatus_num(r, "streams.tele.poisoned") < 10)
        th_sleep_ms(50);
    assert_true(ustatus_num(r, "streams.tele.poisoned") == 10);
    assert_true(ustatus_num(r, "streams.tele.batches_poisoned") == 1);
    /* The next device's rows go through. */
    struct tdev good;
    assert_int_equal(tdev_open(&good, &r->t, "good-00", false), 0);
    for (uint32_t s = 1; s <= 10; s++)
        assert_int_equal(tele_at(&good, s, 10), 0);
    assert_int_equal(tdev_wait_tele_ack(&good, 10, 10000), 0);
    end = th_now_ms() + 20000;
    while (th_now_ms() < end && ustatus_num(r, "streams.tele.delivered") < 10)
        th_sleep_ms(50);
    assert_true(ustatus_num(r, "streams.tele.delivered") == 10);
    th_sleep_ms(500);
    cJSON *s = cloud_stats(r);
    /* Never retried: each refused key was sent once. The events stream
     * has a poisoned batch too (bad-00's online event). */
    const cJSON *k;
    int refused = 0;
    cJSON_ArrayForEach(k, cJSON_GetObjectItemCaseSensitive(s, "keys"))
    {
        if (jnum(k, "status") == 400) {
            refused++;
            assert_true(jnum(k, "requests") == 1);
        }
    }
    assert_true(refused >= 1);
    assert_true(jnum(s, "injected.poison") == refused);
    assert_true(jnum(s, "rows.tele") == 10);
    cJSON_Delete(s);
    char out[8192];
    assert_int_equal(th_ctl(&r->t, "{\"id\":2,\"cmd\":\"upstream.poisoned\"}",
                            out, sizeof(out), 3000),
                     0);
    printf("upstream.poisoned: %s\n", out);
    assert_non_null(strstr(out, "\"http_status\":400"));
    assert_non_null(strstr(out, "poison device"));
    /* The cloud is fixed: the operator sends the poisoned batches again,
     * under their original keys. */
    assert_int_equal(cloud_start(r, ""), 0);
    assert_int_equal(th_ctl(&r->t,
                            "{\"id\":3,\"cmd\":\"upstream.retry_poisoned\"}",
                            out, sizeof(out), 3000),
                     0);
    printf("upstream.retry_poisoned: %s\n", out);
    assert_non_null(strstr(out, "\"queued\":"));
    end = th_now_ms() + 20000;
    while (th_now_ms() < end && ustatus_num(r, "streams.tele.poisoned") != 0)
        th_sleep_ms(50);
    assert_true(ustatus_num(r, "streams.tele.poisoned") == 0);
    assert_true(ustatus_num(r, "streams.tele.delivered") == 20);
    s = cloud_stats(r);
    assert_true(jnum(s, "rows.tele") == 10); /* bad-00's 10, new cloud */
    assert_true(jnum(s, "tele.bad-00.distinct") == 10);
    cJSON_Delete(s);
    assert_int_equal(th_ctl(&r->t, "{\"id\":4,\"cmd\":\"upstream.poisoned\"}",
                            out, sizeof(out), 3000),
                     0);
    assert_null(strstr(out, "\"stream\":\"tele\""));
    tdev_close(&good);
    rig_teardown(r);
    free(r);
}

/* R12: a cloud with a certificate from another CA gets nothing; Retry-After
 * of a 503 is honoured (the next try waits at least that long). */
static void
test_upstream_wrong_cert_never_accepted(void **state)
{
    struct rig *r = calloc(1, sizeof(*r));
    (void)state;
    assert_int_equal(rig_setup(r, NULL), 0);
    r->n_devs = 1;
    r->minutes = 5;
    assert_int_equal(cloud_start(r, "--wrong-cert"), 0);
    assert_int_equal(th_tmld_start(&r->t, NULL, 10000), 0);
    assert_int_equal(produce(r, "cert", 30000), 0);
    uint64_t end = th_now_ms() + 10000;
    while (th_now_ms() < end && ustatus_num(r, "streams.tele.retries") < 2)
        th_sleep_ms(50);
    cJSON *st = ustatus(r);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(st, "streams"), "tele"),
        "last_error");
    printf("wrong certificate: tmld says \"%s\", retries %g\n",
           cJSON_IsString(e) ? e->valuestring : "?",
           jnum(st, "streams.tele.retries"));
    assert_true(jnum(st, "streams.tele.retries") > 0);
    assert_true(jnum(st, "streams.tele.delivered") == 0);
    cJSON_Delete(st);
    cJSON *s = cloud_stats(r);
    assert_true(jnum(s, "requests") == 0);
    cJSON_Delete(s);
    /* The right certificate: everything arrives. */
    assert_int_equal(cloud_start(r, ""), 0);
    assert_int_equal(wait_delivered(r, 5, 20000), 0);
    check_cloud(r, "after wrong certificate");
    rig_teardown(r);
    free(r);
}

/* SIGTERM while a POST hangs on a cloud that answers after 20 s: tmld
 * exits cleanly (status 0, every handle closed: under ASan also no leak) in
 * the drain bound, and after a restart the same batch goes out again under
 * the same key. */
static void
test_upstream_sigterm_with_post_in_flight(void **state)
{
    struct rig *r = calloc(1, sizeof(*r));
    (void)state;
    assert_int_equal(rig_setup(r, NULL), 0);
    r->n_devs = 1;
    r->minutes = 20;
    assert_int_equal(cloud_start(r, "--delay 20"), 0);
    assert_int_equal(th_tmld_start(&r->t, NULL, 10000), 0);
    assert_int_equal(produce(r, "term", 30000), 0);
    uint64_t end = th_now_ms() + 10000;
    cJSON *s = NULL;
    while (th_now_ms() < end) {
        cJSON_Delete(s);
        s = cloud_stats(r);
        if (jnum(s, "requests") >= 1)
            break;
        th_sleep_ms(50);
    }
    assert_true(jnum(s, "requests") >= 1);
    cJSON_Delete(s);
    uint64_t t0 = th_now_ms();
    int st = th_tmld_stop(&r->t, SIGTERM, 15000);
    printf("SIGTERM with a POST in flight: exit status %d after %.2f s\n",
           WIFEXITED(st) ? WEXITSTATUS(st) : -1,
           (double)(th_now_ms() - t0) / 1000);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        th_dump_log(&r->t);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_true(th_now_ms() - t0 < 10000);
    assert_int_equal(cloud_start(r, ""), 0);
    assert_int_equal(th_tmld_start(&r->t, NULL, 10000), 0);
    assert_int_equal(wait_delivered(r, r->minutes, 20000), 0);
    check_cloud(r, "after SIGTERM");
    rig_teardown(r);
    free(r);
}

/* R12: a cloud that answers one byte every 3 s is given up on by the low
 * speed limit (retried, nothing counted as delivered), the control socket
 * answers meanwhile, and a healthy cloud then gets everything. */
static void
test_upstream_trickling_cloud_is_abandoned(void **state)
{
    struct rig *r = calloc(1, sizeof(*r));
    (void)state;
    assert_non_null(r);
    assert_int_equal(rig_setup(r, "low_speed_time = 2s"), 0);
    r->n_devs = 1;
    r->minutes = 5;
    assert_int_equal(cloud_start(r, "--trickle"), 0);
    assert_int_equal(th_tmld_start(&r->t, NULL, 10000), 0);
    assert_int_equal(produce(r, "slowcloud", 30000), 0);
    uint64_t end = th_now_ms() + 15000, worst = 0;
    while (th_now_ms() < end && ustatus_num(r, "streams.tele.retries") < 1) {
        uint64_t t0 = th_now_ms();
        double c = 0;
        assert_int_equal(th_status_num(&r->t, "ingest.tele", &c), 0);
        if (th_now_ms() - t0 > worst)
            worst = th_now_ms() - t0;
        th_sleep_ms(100);
    }
    cJSON *st = ustatus(r);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(st, "streams"), "tele"),
        "last_error");
    printf("trickling cloud: retries %g, last error \"%s\", slowest status "
           "answer meanwhile %llu ms\n",
           jnum(st, "streams.tele.retries"),
           cJSON_IsString(e) ? e->valuestring : "?", (unsigned long long)worst);
    assert_true(jnum(st, "streams.tele.retries") >= 1);
    assert_true(jnum(st, "streams.tele.delivered") == 0);
    cJSON_Delete(st);
    assert_int_equal(cloud_start(r, ""), 0);
    assert_int_equal(wait_delivered(r, r->minutes, 20000), 0);
    check_cloud(r, "after trickling cloud");
    rig_teardown(r);
    free(r);
}

/* The bearer token comes from token_file: a wrong one gets 401s (retried,
 * not poisoned), and a corrected file is read again after the 401. */
static void
test_upstream_bearer_token_from_file(void **state)
{
    struct rig *r = calloc(1, sizeof(*r));
    char path[512], extra[600];
    FILE *f;
    (void)state;
    assert_non_null(r);
    /* The file must exist before tmld checks its config. */
    snprintf(path, sizeof(path), "/tmp/upstream-token.%d", (int)getpid());
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("stale-token\n", f);
    fclose(f);
    snprintf(extra, sizeof(extra), "token_file = %s", path);
    assert_int_equal(rig_setup(r, extra), 0);
    r->n_devs = 1;
    r->minutes = 5;
    assert_int_equal(cloud_start(r, "--token s3cret"), 0);
    assert_int_equal(th_tmld_start(&r->t, NULL, 10000), 0);
    assert_int_equal(produce(r, "tok", 30000), 0);
    uint64_t end = th_now_ms() + 10000;
    while (th_now_ms() < end &&
           ustatus_num(r, "streams.tele.last_status") != 401)
        th_sleep_ms(50);
    assert_true(ustatus_num(r, "streams.tele.last_status") == 401);
    assert_true(ustatus_num(r, "streams.tele.poisoned") == 0);
    assert_true(ustatus_num(r, "streams.tele.delivered") == 0);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("s3cret\n", f);
    fclose(f);
    assert_int_equal(wait_delivered(r, r->minutes, 20000), 0);
    cJSON *s = cloud_stats(r);
    printf("bearer token: %g requests refused with 401 before the file "
           "was fixed\n",
           jnum(s, "injected.auth"));
    assert_true(jnum(s, "injected.auth") >= 1);
    cJSON_Delete(s);
    check_cloud(r, "bearer token");
    unlink(path);
    rig_teardown(r);
    free(r);
}

/* tmld --check-config names the [upstream] problems: plain http, a CA file
 * that does not exist, a bad gateway id, backoff_max below backoff_min. */
static void
test_upstream_config_errors_are_named(void **state)
{
    struct th t;
    char cmd[1400], out[4096];
    (void)state;
    assert_int_equal(th_setup(&t, "[upstream]\nurl = http://127.0.0.1:1/\n"
                                  "ca_file = /nonexistent/ca.pem\n"
                                  "gateway_id = a/b\nbackoff_min = 10s\n"
                                  "backoff_max = 1s\n"),
                     0);
    snprintf(cmd, sizeof(cmd),
             "'%s/daemon/tmld' --check-config --config '%s' "
             "2>&1; echo \"exit=$?\"",
             getenv("TML_BINARY_DIR") ? getenv("TML_BINARY_DIR") : ".", t.conf);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    pclose(p);
    printf("%s", out);
    assert_non_null(strstr(out, "[upstream] url"));
    assert_non_null(strstr(out, "[upstream] ca_file"));
    assert_non_null(strstr(out, "[upstream] gateway_id"));
    assert_non_null(strstr(out, "[upstream] backoff_max"));
    assert_non_null(strstr(out, "exit=2"));
    th_teardown(&t);
}

/* Device events: the up/state online, an offline decided by the registry
 * after silence (no message: the presence sweep), online again when records
 * resume, and the broker's last will; one event per change even though
 * tmld sees the retained state again. */
static void
test_upstream_device_events_follow_presence(void **state)
{
    struct rig *r = calloc(1, sizeof(*r));
    (void)state;
    assert_non_null(r);
    /* The registry's silence bound, in a section of its own. */
    assert_int_equal(rig_setup(r, "[ingest]\noffline_after = 2s"), 0);
    r->n_devs = 1;
    r->minutes = 3;
    assert_int_equal(cloud_start(r, ""), 0);
    assert_int_equal(th_tmld_start(&r->t, NULL, 10000), 0);
    assert_int_equal(produce(r, "ev", 30000), 0);
    /* Silent: offline after 2 s, seen by the sweep within 5 s more. */
    th_sleep_ms(8000);
    /* Records again: online. */
    assert_int_equal(tele_at(&r->devs[0], 4, 4), 0);
    assert_int_equal(tdev_wait_tele_ack(&r->devs[0], 4, 10000), 0);
    th_sleep_ms(6000);
    /* Dropped link: the broker publishes the offline will. */
    tdev_drop(&r->devs[0]);
    r->n_open = 0;
    uint64_t end = th_now_ms() + 15000;
    cJSON *s = NULL;
    while (th_now_ms() < end) {
        cJSON_Delete(s);
        s = cloud_stats(r);
        if (jnum(s, "rows.events") >= 4)
            break;
        th_sleep_ms(100);
    }
    char seq[256] = "";
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(s, "events"))
    {
        size_t k = strlen(seq);
        snprintf(seq + k, sizeof(seq) - k, "%s%s", k ? "," : "",
                 cJSON_GetArrayItem(e, 1)->valuestring);
    }
    printf("events for ev-00: %s\n", seq);
    assert_string_equal(seq, "online,offline,online,offline");
    cJSON_Delete(s);
    rig_teardown(r);
    free(r);
}

/* upstream.retry cuts a long backoff short once the operator knows the
 * link is back. */
static void
test_upstream_retry_verb_skips_backoff(void **state)
{
    struct rig *r = calloc(1, sizeof(*r));
    char out[1024];
    (void)state;
    assert_non_null(r);
    assert_int_equal(rig_setup(r, NULL), 0);
    /* The rig's short backoff replaced by a long one. */
    snprintf(r->t.extra, sizeof(r->t.extra),
             "[upstream]\nurl = https://127.0.0.1:%d/ingest\n"
             "ca_file = %s/ca.pem\ngateway_id = gw-test\n"
             "backoff_min = 60s\nbackoff_max = 60s\npoll = 100ms\n",
             r->cloud_port, r->cloud_dir);
    assert_int_equal(th_write_conf(&r->t), 0);
    r->n_devs = 1;
    r->minutes = 5;
    assert_int_equal(th_tmld_start(&r->t, NULL, 10000), 0);
    assert_int_equal(produce(r, "retry", 30000), 0);
    uint64_t end = th_now_ms() + 10000;
    while (th_now_ms() < end && ustatus_num(r, "streams.tele.retries") < 1)
        th_sleep_ms(50);
    assert_true(ustatus_num(r, "streams.tele.retry_in_ms") > 20000);
    assert_int_equal(cloud_start(r, ""), 0);
    uint64_t t0 = th_now_ms();
    assert_int_equal(th_ctl(&r->t, "{\"id\":1,\"cmd\":\"upstream.retry\"}", out,
                            sizeof(out), 3000),
                     0);
    assert_non_null(strstr(out, "\"retried\":"));
    assert_int_equal(wait_delivered(r, r->minutes, 10000), 0);
    printf("upstream.retry: delivered %.1f s after the verb (backoff was "
           "60 s)\n",
           (double)(th_now_ms() - t0) / 1000);
    check_cloud(r, "retry verb");
    rig_teardown(r);
    free(r);
}

/* Without [upstream] url the module is off: the verb says so, no request
 * is made, no event row is written. */
static void
test_upstream_off_without_url(void **state)
{
    struct rig *r = calloc(1, sizeof(*r));
    char out[1024];
    (void)state;
    assert_non_null(r);
    assert_int_equal(th_setup(&r->t, NULL), 0);
    r->n_devs = 1;
    r->minutes = 5;
    assert_int_equal(th_tmld_start(&r->t, NULL, 10000), 0);
    assert_int_equal(produce(r, "off", 30000), 0);
    assert_int_equal(th_ctl(&r->t, "{\"id\":1,\"cmd\":\"upstream.status\"}",
                            out, sizeof(out), 3000),
                     0);
    assert_non_null(strstr(out, "\"enabled\":false"));
    assert_int_equal(th_db_int(&r->t, "SELECT count(*) FROM upstream_events"),
                     0);
    rig_teardown(r);
    free(r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_upstream_offline_hour_delivered_after_cloud_returns),
        cmocka_unit_test(test_upstream_flaky_cloud_same_result),
        cmocka_unit_test(test_upstream_kill9_during_upload),
        cmocka_unit_test(test_upstream_4xx_poisons_batch_and_moves_on),
        cmocka_unit_test(test_upstream_wrong_cert_never_accepted),
        cmocka_unit_test(test_upstream_sigterm_with_post_in_flight),
        cmocka_unit_test(test_upstream_bearer_token_from_file),
        cmocka_unit_test(test_upstream_trickling_cloud_is_abandoned),
        cmocka_unit_test(test_upstream_config_errors_are_named),
        cmocka_unit_test(test_upstream_off_without_url),
        cmocka_unit_test(test_upstream_device_events_follow_presence),
        cmocka_unit_test(test_upstream_retry_verb_skips_backoff),
    };
    atexit(cloud_kill);
    signal(SIGPIPE, SIG_IGN);
    const char *only = getenv("UPSTREAM_ONLY");
    if (only != NULL)
        cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
