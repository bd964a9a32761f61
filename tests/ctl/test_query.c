/*
 * test_query.c: issue 6's query speed, functionally: a 200k-row database
 * from bench/query's generator (1000 devices, 10 groups), then
 *  - plan: every variant of tele.query's SQL (daemon/query_sql.c) reads
 *    tele_hour by its primary key and tele by a rowid range from
 *    tele_hour_ids (tele has no secondary index, issue 4): EXPLAIN
 *    QUERY PLAN has no full SCAN of either (the timing itself is
 *    bench/query.sh's job);
 *  - oracle: the rollup answer equals a brute-force GROUP BY over tele for
 *    several windows, filters and groupings;
 *  - tmld: a real tmld opened on that database answers `tmlctl telemetry
 *    --json` (every --by) with the oracle's numbers, human output has the
 *    table (and bars with --bars), bad arguments exit 2.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "query.h"
#include "rig.h"
#include "tml/proto.h"

#define ROWS 200000
#ifndef EXPORT_SAMPLES
#define EXPORT_SAMPLES 600 /* > one page (500) of samples.list */
#endif

static char db_path[256];
static time_t gen_now;

static int
setup(void **state)
{
    static struct rig r;
    *state = &r;
    rig_init(&r);
    rig_provision(&r, "dev-0005", NULL);
    rig_broker_start(&r);
    snprintf(db_path, sizeof(db_path), "%s/tmld.db", r.dir);
    const char *bin = getenv("TML_BINARY_DIR");
    gen_now = time(NULL);
    assert_int_equal(sh("%s/bench/query/tmld_query_gen %s %d 1000 10 60 %d "
                        ">/dev/null",
                        bin ? bin : ".", db_path, ROWS, EXPORT_SAMPLES),
                     0);
    rig_tmld_start(&r, NULL);
    return 0;
}

static int
teardown(void **state)
{
    rig_stop(*state);
    return 0;
}

static sqlite3 *
open_db(void)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY,
                                     NULL),
                     SQLITE_OK);
    sqlite3_busy_timeout(db, 2000);
    return db;
}

static void
bind_window(sqlite3_stmt *st, int64_t since, const char *dev,
            const char *grp)
{
    int64_t fh = (since + 3599) / 3600;
    sqlite3_bind_int64(st, 1, since);
    if (dev != NULL)
        sqlite3_bind_text(st, 2, dev, -1, SQLITE_STATIC);
    if (grp != NULL)
        sqlite3_bind_text(st, 3, grp, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, fh);
    sqlite3_bind_int64(st, 5, fh * 3600);
}

/* R: the plan uses the rollup's key and the recv_at index, never a scan. */
static void
test_query_plan(void **state)
{
    (void)state;
    sqlite3 *db = open_db();
    for (int by = 0; by < 3; by++)
        for (int f = 0; f < 3; f++) {
            char sql[2048], eqp[2100], plan[4096] = "";
            assert_true(query_tele_sql(sql, sizeof(sql), (enum query_by)by,
                                       f == 1, f == 2) > 0);
            snprintf(eqp, sizeof(eqp), "EXPLAIN QUERY PLAN %s", sql);
            sqlite3_stmt *st = NULL;
            assert_int_equal(sqlite3_prepare_v2(db, eqp, -1, &st, NULL),
                             SQLITE_OK);
            bind_window(st, (int64_t)gen_now - 86400, "dev-0001", "g1");
            while (sqlite3_step(st) == SQLITE_ROW) {
                strncat(plan, (const char *)sqlite3_column_text(st, 3),
                        sizeof(plan) - strlen(plan) - 2);
                strcat(plan, "\n");
            }
            sqlite3_finalize(st);
            print_message("by=%d filter=%d plan:\n%s", by, f, plan);
            assert_non_null(strstr(plan, "SEARCH h USING PRIMARY KEY"));
            assert_non_null(strstr(
                plan, "SEARCH t USING INTEGER PRIMARY KEY (rowid>? AND "
                      "rowid<?)"));
            assert_non_null(strstr(
                plan, "SEARCH tele_hour_ids USING INTEGER PRIMARY KEY"));
            assert_null(strstr(plan, "SCAN t\n"));
            assert_null(strstr(plan, "SCAN h\n"));
            assert_null(strstr(plan, "SCAN tele"));
        }
    sqlite3_close(db);
}

/* Runs sql (bound to the window) and returns its rows as one string. */
static char *
rows_text(sqlite3 *db, const char *sql, int64_t since, const char *dev,
          const char *grp, bool bind_all)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (bind_all) {
        bind_window(st, since, dev, grp);
    } else {
        sqlite3_bind_int64(st, 1, since);
        if (dev != NULL)
            sqlite3_bind_text(st, 2, dev, -1, SQLITE_STATIC);
        if (grp != NULL)
            sqlite3_bind_text(st, 3, grp, -1, SQLITE_STATIC);
    }
    size_t cap = 1 << 20, n = 0;
    char *out = calloc(1, cap);
    assert_non_null(out);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        for (int i = 0; i < 8 && n < cap - 64; i++)
            n += (size_t)snprintf(out + n, cap - n, "%s%c",
                                  (const char *)sqlite3_column_text(st, i),
                                  i == 7 ? '\n' : '|');
    assert_int_equal(rc, SQLITE_DONE);
    sqlite3_finalize(st);
    return out;
}

/* The rollup + partial-hour answer equals a GROUP BY over every tele row. */
static void
test_query_oracle(void **state)
{
    (void)state;
    sqlite3 *db = open_db();
    static const int64_t windows[] = {600, 3600, 5400, 3 * 3600 + 77,
                                      86400};
    static const char *const keys[] = {"t.model_version", "d.name",
                                       "(t.recv_at / 3600) * 3600"};
    int nonempty = 0;
    for (size_t w = 0; w < sizeof(windows) / sizeof(windows[0]); w++)
        for (int by = 0; by < 3; by++)
            for (int f = 0; f < 3; f++) {
                int64_t since = (int64_t)gen_now - windows[w];
                const char *dev = f == 1 ? "dev-0007" : NULL;
                const char *grp = f == 2 ? "g3" : NULL;
                char sql[2048], brute[1024];
                assert_true(query_tele_sql(sql, sizeof(sql),
                                           (enum query_by)by, dev != NULL,
                                           grp != NULL) > 0);
                snprintf(brute, sizeof(brute),
                         "SELECT %s, count(DISTINCT t.device_id), count(*), "
                         "sum(t.n_inferences), sum(t.n_low_conf), "
                         "sum(t.n_flagged), sum(t.n_errors), "
                         "sum(t.lat_mean_us * t.n_inferences) FROM tele t "
                         "JOIN devices d ON d.id = t.device_id "
                         "WHERE t.recv_at >= ?1 AND (?2 IS NULL OR d.name = "
                         "?2) AND (?3 IS NULL OR t.device_id IN (SELECT "
                         "device_id FROM device_groups WHERE grp = ?3)) "
                         "GROUP BY 1 ORDER BY 1",
                         keys[by]);
                char *a = rows_text(db, sql, since, dev, grp, true);
                char *b = rows_text(db, brute, since, dev, grp, false);
                if (strcmp(a, b) != 0)
                    print_error("window %lld by %d filter %d:\nrollup:\n%s"
                                "brute:\n%s",
                                (long long)windows[w], by, f, a, b);
                assert_string_equal(a, b);
                nonempty += a[0] != '\0';
                free(a);
                free(b);
            }
    assert_true(nonempty > 30);
    sqlite3_close(db);
}

static double
jnum(const cJSON *o, const char *k)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    assert_true(cJSON_IsNumber(x));
    return x->valuedouble;
}

/* tmlctl telemetry through tmld: --json per --by against the database. */
static void
test_query_tmld_telemetry(void **state)
{
    (void)state;
    char *out = NULL;
    assert_int_equal(rig_ctl(&out, "--json telemetry --group g1 --since 2h"),
                     0);
    cJSON *j = cJSON_Parse(out);
    free(out);
    assert_non_null(j);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(j, "by")->valuestring,
        "model_version");
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(j, "rows");
    assert_int_equal(cJSON_GetArraySize(rows), 1); /* g1: all version 1 */
    const cJSON *r0 = cJSON_GetArrayItem(rows, 0);
    assert_int_equal((int)jnum(r0, "model_version"), 1);
    assert_int_equal((int)jnum(r0, "devices"), 100);
    double since = jnum(j, "since");
    sqlite3 *db = open_db();
    sqlite3_stmt *st = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db,
                           "SELECT count(*), sum(n_inferences), "
                           "sum(n_low_conf) FROM tele WHERE recv_at >= ?1 "
                           "AND device_id IN (SELECT device_id FROM "
                           "device_groups WHERE grp = 'g1')",
                           -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_int64(st, 1, (int64_t)since);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal((int64_t)jnum(r0, "summaries"),
                     sqlite3_column_int64(st, 0));
    assert_int_equal((int64_t)jnum(r0, "inferences"),
                     sqlite3_column_int64(st, 1));
    assert_int_equal((int64_t)jnum(r0, "low_conf"),
                     sqlite3_column_int64(st, 2));
    sqlite3_finalize(st);
    sqlite3_close(db);
    cJSON_Delete(j);

    /* --by device: one row per device of the group, sorted by name. */
    assert_int_equal(
        rig_ctl(&out, "--json telemetry --group g1 --since 1h --by device"), 0);
    j = cJSON_Parse(out);
    free(out);
    assert_non_null(j);
    rows = cJSON_GetObjectItemCaseSensitive(j, "rows");
    assert_int_equal(cJSON_GetArraySize(rows), 100);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(rows, 0),
                                         "device")
            ->valuestring,
        "dev-0001");
    cJSON_Delete(j);

    /* --by hour over everything: hours ascending, canary and base mixed. */
    assert_int_equal(rig_ctl(&out, "--json telemetry --since 3h --by hour"), 0);
    j = cJSON_Parse(out);
    free(out);
    assert_non_null(j);
    rows = cJSON_GetObjectItemCaseSensitive(j, "rows");
    assert_true(cJSON_GetArraySize(rows) >= 3);
    double prev = 0;
    const cJSON *row;
    int i = 0, n = cJSON_GetArraySize(rows);
    cJSON_ArrayForEach(row, rows)
    {
        double h = jnum(row, "hour");
        int devices = (int)jnum(row, "devices");
        assert_true(h > prev);
        assert_true((int64_t)h % 3600 == 0);
        /* The window's first and last hours are cut by "3h ago" and "now"
         * (a run near the top of an hour saw 170 of 1000 in one of them);
         * every hour in between holds all 1000 devices. */
        if (i == 0 || i == n - 1)
            assert_true(devices >= 1 && devices <= 1000);
        else
            assert_int_equal(devices, 1000);
        prev = h;
        i++;
    }
    cJSON_Delete(j);

    /* Human output: the canary (version 2) beside version 1, with bars. */
    assert_int_equal(rig_ctl(&out, "telemetry --since 24h --bars"), 0);
    assert_non_null(strstr(out, "MODEL V"));
    assert_non_null(strstr(out, "LOW-CONF"));
    assert_non_null(strstr(out, "\u2588")); /* a full bar cell */
    char *v2 = strstr(out, "\n2 ");
    assert_non_null(v2);
    free(out);
    assert_int_equal(rig_ctl(&out, "telemetry --since 24h --by hour"), 0);
    assert_non_null(strstr(out, "HOUR (UTC)"));
    assert_null(strstr(out, "\u2588")); /* not a TTY: no bars */
    free(out);

    /* Usage errors: exit 2. */
    assert_int_equal(rig_ctl(NULL, "telemetry --by week 2>/dev/null"), 2);
    assert_int_equal(rig_ctl(NULL, "telemetry --group g1 --device dev-0001 "
                               "2>/dev/null"),
                     2);
    assert_int_equal(rig_ctl(NULL, "telemetry --since never 2>/dev/null"), 2);
}

static cJSON *
ctl_json(const char *args)
{
    char *out = NULL;
    int rc = rig_ctl(&out, "--json %s", args);
    assert_int_equal(rc, 0);
    cJSON *j = cJSON_Parse(out);
    free(out);
    assert_non_null(j);
    return j;
}

static cJSON *
ctl_json_f(const char *fmt, ...)
{
    char args[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    return ctl_json(args);
}

/* The group's row in `group list --json`, or NULL. */
static const cJSON *
find_group(const cJSON *list, const char *name)
{
    const cJSON *g;
    cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(list, "groups"))
    {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(g, "name");
        if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0)
            return g;
    }
    return NULL;
}

/* tmlctl group create|add|remove|delete|list through tmld, and that a
 * group's telemetry follows its operator-added members. */
static void
test_query_groups(void **state)
{
    (void)state;
    char *out = NULL;
    assert_int_equal(rig_ctl(&out, "group create canary"), 0);
    assert_non_null(strstr(out, "group canary created"));
    free(out);
    assert_int_equal(rig_ctl(NULL, "group create canary 2>/dev/null"), 4);
    cJSON *l = ctl_json("group list");
    const cJSON *g = find_group(l, "canary");
    assert_non_null(g);
    assert_int_equal((int)jnum(g, "devices"), 0);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(g, "source")->valuestring, "op");
    g = find_group(l, "g3");
    assert_non_null(g);
    assert_int_equal((int)jnum(g, "devices"), 100);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(g, "source")->valuestring, "fw");
    cJSON_Delete(l);

    assert_int_equal(rig_ctl(&out, "group add canary dev-0003 dev-0013 "
                               "dev-0004"),
                     0);
    assert_non_null(strstr(out, "3 devices added"));
    free(out);
    assert_int_equal(rig_ctl(NULL, "group add canary nosuch 2>/dev/null"), 3);
    assert_int_equal(rig_ctl(NULL, "group add nogroup dev-0001 2>/dev/null"),
                     3);
    l = ctl_json("group list");
    assert_int_equal((int)jnum(find_group(l, "canary"), "devices"), 3);
    cJSON_Delete(l);
    /* Human: a table with the operator group and a firmware one. */
    assert_int_equal(rig_ctl(&out, "group list"), 0);
    assert_non_null(strstr(out, "GROUP"));
    assert_non_null(strstr(out, "SOURCE"));
    char *row = strstr(out, "\ncanary ");
    assert_non_null(row);
    assert_non_null(strstr(row, " op "));
    row = strstr(out, "\ng3 ");
    assert_non_null(row);
    assert_non_null(strstr(row, " fw "));
    free(out);
    /* The new group's telemetry is its three members'. */
    cJSON *t = ctl_json("telemetry --group canary --since 2h --by device");
    assert_int_equal(
        cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(t, "rows")), 3);
    cJSON_Delete(t);
    /* Firmware membership is not the operator's to remove. */
    assert_int_equal(rig_ctl(NULL, "group remove g3 dev-0003 2>/dev/null"), 3);
    assert_int_equal(rig_ctl(NULL, "group delete g3 2>/dev/null"), 4);
    assert_int_equal(rig_ctl(&out, "group remove canary dev-0013"), 0);
    assert_non_null(strstr(out, "1 device removed"));
    free(out);
    l = ctl_json("group list");
    assert_int_equal((int)jnum(find_group(l, "canary"), "devices"), 2);
    cJSON_Delete(l);
    assert_int_equal(rig_ctl(&out, "group delete canary"), 0);
    assert_non_null(strstr(out, "2 memberships removed"));
    free(out);
    l = ctl_json("group list");
    assert_null(find_group(l, "canary"));
    cJSON_Delete(l);
    assert_int_equal(rig_ctl(NULL, "group delete canary 2>/dev/null"), 3);
    /* Usage errors. */
    assert_int_equal(rig_ctl(NULL, "group 2>/dev/null"), 2);
    assert_int_equal(rig_ctl(NULL, "group add canary 2>/dev/null"), 2);
    assert_int_equal(rig_ctl(NULL, "group create 2>/dev/null"), 2);
    assert_int_equal(rig_ctl(NULL, "group create 'bad name' 2>/dev/null"), 2);
}

static uint8_t cmd_buf[TML_MAX_MESSAGE];
static size_t cmd_len;

static void
on_cmd(struct mosquitto *m, void *o, const struct mosquitto_message *msg,
       const mosquitto_property *p)
{
    (void)m, (void)p;
    struct cl *c = o;
    c->msgs++;
    if (strcmp(msg->topic, c->watch) == 0 &&
        (size_t)msg->payloadlen <= sizeof(cmd_buf)) {
        memcpy(cmd_buf, msg->payload, (size_t)msg->payloadlen);
        cmd_len = (size_t)msg->payloadlen;
        c->msgs_topic++;
    }
}

/* tmlctl device-cmd: the device receives a down/cmd set with the values
 * and the nonce the command printed, by id and through its group. */
static void
test_query_device_cmd(void **state)
{
    (void)state;
    struct cl *c = dev_client("dev-0005", NULL);
    assert_int_equal(c->connack, 0);
    mosquitto_message_v5_callback_set(c->m, on_cmd);
    snprintf(c->watch, sizeof(c->watch), "tml/v1/dev-0005/down/cmd");
    subscribe(c, c->watch);
    struct cl *cs[] = {c};

    cJSON *j = ctl_json("device-cmd dev-0005 set summary-period=60 "
                        "sample-budget=20/h confidence-threshold=0.6 "
                        "audit-rate=1%");
    double nonce = jnum(j, "nonce");
    assert_int_equal(cJSON_GetArraySize(
                         cJSON_GetObjectItemCaseSensitive(j, "sent")),
                     1);
    cJSON_Delete(j);
    pump_until(cs, 1, &c->msgs_topic, 1, 10000);
    assert_int_equal(c->msgs_topic, 1);
    struct tml_cmd m;
    assert_int_equal(tml_cmd_decode(cmd_buf, cmd_len, &m), TML_OK);
    assert_int_equal(m.kind, TML_CMD_SET);
    assert_int_equal(m.nonce, (uint32_t)nonce);
    assert_true(m.has_summary_period);
    assert_int_equal(m.summary_period_s, 60);
    assert_true(m.has_sample_budget && m.has_budget_period);
    assert_int_equal(m.sample_budget, 20);
    assert_int_equal(m.budget_period_s, 3600);
    assert_true(m.has_conf_threshold);
    assert_int_equal(m.conf_threshold_bp, 6000);
    assert_true(m.has_audit_rate);
    assert_int_equal(m.audit_ppm, 10000);

    /* Through the group: dev-0005 is one of g5's 100 devices. */
    char *out = NULL;
    assert_int_equal(rig_ctl(&out, "device cmd --group g5 set "
                               "confidence-threshold=0.75"),
                     0);
    assert_non_null(strstr(out, "sent to 100 devices"));
    free(out);
    pump_until(cs, 1, &c->msgs_topic, 2, 10000);
    assert_int_equal(c->msgs_topic, 2);
    assert_int_equal(tml_cmd_decode(cmd_buf, cmd_len, &m), TML_OK);
    assert_true(m.has_conf_threshold && !m.has_summary_period);
    assert_int_equal(m.conf_threshold_bp, 7500);

    /* Errors: unknown device 3, bad settings and usage 2. */
    assert_int_equal(rig_ctl(NULL, "device-cmd nosuch set summary-period=60 "
                                   "2>/dev/null"),
                     3);
    assert_int_equal(
        rig_ctl(NULL, "device-cmd dev-0005 set bogus=1 2>/dev/null"), 2);
    assert_int_equal(rig_ctl(NULL, "device-cmd dev-0005 set "
                               "confidence-threshold=1.5 2>/dev/null"),
                     2);
    assert_int_equal(rig_ctl(NULL, "device-cmd dev-0005 2>/dev/null"), 2);
    assert_int_equal(rig_ctl(NULL, "device-cmd --group g5 dev-0005 set "
                               "summary-period=60 2>/dev/null"),
                     2);
    pump(cs, 1, 200);
    assert_int_equal(c->msgs_topic, 2); /* nothing sent by the failures */
    client_free(c);
}

/* Opens every exported file with an independent reader (Python's wave and
 * csv modules, a PGM decoder) and compares the decoded values with the raw
 * bytes tmld stored. */
static const char check_py[] =
    "import csv, json, os, struct, sys, wave\n"
    "out, want = sys.argv[1], int(sys.argv[2])\n"
    "m = json.load(open(os.path.join(out, 'manifest.json')))\n"
    "assert m['count'] == want == len(m['samples']), (m['count'], want)\n"
    "rows = list(csv.DictReader(open(os.path.join(out, 'labels.csv'))))\n"
    "assert len(rows) == want, len(rows)\n"
    "meta = {s['file']: s for s in m['samples']}\n"
    "n = {'wav': 0, 'pgm': 0, 'csv': 0}\n"
    "for r in rows:\n"
    "    s = meta[r['file']]\n"
    "    assert r['device'] == s['device'] and int(r['sample_id']) == "
    "s['sample_id']\n"
    "    assert abs(float(r['confidence']) * 10000 - s['confidence_bp']) < 1\n"
    "    assert r['expected'] == ('' if s['expected'] is None else "
    "str(s['expected']))\n"
    "    raw = open(os.path.join(out, s['raw']), 'rb').read()\n"
    "    assert len(raw) == s['total_len']\n"
    "    path = os.path.join(out, r['file'])\n"
    "    ext = path.rsplit('.', 1)[1]\n"
    "    n[ext] += 1\n"
    "    if ext == 'wav':\n"
    "        w = wave.open(path, 'rb')\n"
    "        assert w.getnchannels() == 1 and w.getsampwidth() == 2\n"
    "        assert w.getframerate() == s['rate_hz']\n"
    "        assert w.getnframes() == s['shape'][0]\n"
    "        assert w.readframes(w.getnframes()) == raw\n"
    "    elif ext == 'pgm':\n"
    "        b = open(path, 'rb').read()\n"
    "        parts = b.split(b'\\n', 3)\n"
    "        assert parts[0] == b'P5' and parts[2] == b'255', parts[:3]\n"
    "        wd, ht = map(int, parts[1].split())\n"
    "        assert (ht, wd) == tuple(s['shape'][:2])\n"
    "        px = parts[3]\n"
    "        assert len(px) == wd * ht\n"
    "        if s['dtype'] == 'i8':\n"
    "            raw = bytes(x ^ 0x80 for x in raw)\n"
    "        assert px == raw\n"
    "    else:\n"
    "        t = list(csv.reader(open(path)))\n"
    "        ch = s['shape'][1] if len(s['shape']) > 1 else 1\n"
    "        assert t[0] == ['ch%d' % i for i in range(ch)], t[0]\n"
    "        assert len(t) == 1 + s['shape'][0]\n"
    "        fmt = {'f32': 'f', 'i32': 'i', 'i16': 'h', 'u8': 'B', "
    "'i8': 'b'}[s['dtype']]\n"
    "        vals = struct.unpack('<%d%s' % (len(raw) // "
    "struct.calcsize(fmt), fmt), raw)\n"
    "        got = [float(x) for row in t[1:] for x in row]\n"
    "        assert len(got) == len(vals)\n"
    "        assert all(abs(a - b) <= 1e-6 * max(1, abs(b)) for a, b in "
    "zip(got, vals))\n"
    "assert min(n.values()) > 0, n\n"
    "print('OK', n)\n";

/* tmlctl samples export: EXPORT_SAMPLES samples, each file opens as what
 * it is (issue 6 must-show; 10,000 in tmlctl_query_slow). */
static void
test_query_samples_export(void **state)
{
    (void)state;
    char py[256], out[256];
    snprintf(py, sizeof(py), "%s/check_export.py", the_rig->dir);
    snprintf(out, sizeof(out), "%s/export", the_rig->dir);
    FILE *f = fopen(py, "w");
    assert_non_null(f);
    assert_int_equal(fputs(check_py, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rig_ctl(NULL, "-q samples export --out %s --limit %d", out,
                         EXPORT_SAMPLES),
                     0);
    assert_int_equal(sh("/usr/bin/python3 %s %s %d", py, out, EXPORT_SAMPLES),
                     0);
    /* The checker fails on a corrupted file (dev-0001's first sample is a
     * u8 image). */
    char pgm[320];
    snprintf(pgm, sizeof(pgm), "%s/dev-0001/1.pgm", out);
    f = fopen(pgm, "r+");
    assert_non_null(f);
    assert_int_equal(fputs("P5\n1 1\n255\n", f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    assert_int_not_equal(sh("/usr/bin/python3 %s %s %d >/dev/null 2>&1", py,
                            out, EXPORT_SAMPLES),
                         0);
    assert_int_equal(rig_ctl(NULL, "samples export --limit 5 2>/dev/null"), 2);
}

/* One integer from the seeded database (sql with an optional ?1). */
static int64_t
db_count(const char *sql, int64_t p1)
{
    sqlite3 *db = open_db();
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_int64(st, 1, p1);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* The filters of issue 6: devices --model, samples list|export --label,
 * --model, --since. Each must exclude rows the seeded database holds
 * (devices: 100 of 1000 run kws v2; samples: one per device dev-0000..,
 * v2 on every tenth, received over the 10 minutes before generation), with
 * the database as the oracle; malformed values are usage errors (exit 2). */
static void
test_query_filters(void **state)
{
    (void)state;
    const cJSON *e;
    /* devices --model NAME@VER */
    cJSON *j = ctl_json("devices --model kws@2");
    assert_int_equal((int)jnum(j, "total"), 100);
    assert_int_equal(cJSON_GetArraySize(
                         cJSON_GetObjectItemCaseSensitive(j, "devices")),
                     100);
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "devices"))
    {
        assert_int_equal((int)jnum(e, "model_version"), 2);
        assert_string_equal(
            cJSON_GetObjectItemCaseSensitive(e, "model")->valuestring, "kws");
    }
    cJSON_Delete(j);
    j = ctl_json("devices --model kws@1 --limit 10");
    assert_int_equal((int)jnum(j, "total"), 900);
    cJSON_Delete(j);
    j = ctl_json("devices --model kws@1 --group g0"); /* g0 is all v2 */
    assert_int_equal((int)jnum(j, "total"), 0);
    cJSON_Delete(j);
    j = ctl_json("devices --model vww@2");
    assert_int_equal((int)jnum(j, "total"), 0);
    cJSON_Delete(j);
    char *out = NULL;
    assert_int_equal(rig_ctl(&out, "devices --model kws@2 --limit 3"), 0);
    assert_non_null(strstr(out, "dev-0000"));
    assert_non_null(strstr(out, "kws v2"));
    assert_null(strstr(out, "kws v1"));
    assert_null(strstr(out, "dev-0001"));
    free(out);
    assert_int_equal(rig_ctl(NULL, "devices --model kws 2>/dev/null"), 2);
    assert_int_equal(rig_ctl(NULL, "devices --model @2 2>/dev/null"), 2);
    assert_int_equal(rig_ctl(NULL, "devices --model kws@v2 2>/dev/null"), 2);

    /* samples --model: the 60 samples of v2 devices. */
    int64_t want = db_count("SELECT count(*) FROM samples s JOIN devices d "
                            "ON d.id = s.device_id WHERE d.model = 'kws' AND "
                            "s.model_version = 2",
                            0);
    assert_int_equal(want, EXPORT_SAMPLES / 10);
    j = ctl_json("samples list --model kws@2 --limit 10000");
    assert_int_equal((int64_t)jnum(j, "total"), want);
    assert_int_equal(cJSON_GetArraySize(
                         cJSON_GetObjectItemCaseSensitive(j, "samples")),
                     (int)want);
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "samples"))
        assert_int_equal((int)jnum(e, "model_version"), 2);
    cJSON_Delete(j);
    j = ctl_json("samples list --model other@2");
    assert_int_equal((int)jnum(j, "total"), 0);
    cJSON_Delete(j);

    /* samples --label: expected when known, else predicted. dev-0015's
     * sample has no expected and predicted 3 (in); dev-0003's predicted 3
     * but expected 4 (out); dev-0002's expected 3 (in). */
    want = db_count("SELECT count(*) FROM samples WHERE "
                    "coalesce(expected, predicted) = ?1",
                    3);
    assert_true(want > 0 && want < EXPORT_SAMPLES);
    j = ctl_json("samples list --label 3 --limit 10000");
    assert_int_equal((int64_t)jnum(j, "total"), want);
    bool saw15 = false, saw2 = false;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "samples"))
    {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(e, "expected");
        const char *dev =
            cJSON_GetObjectItemCaseSensitive(e, "device")->valuestring;
        if (cJSON_IsNull(x))
            assert_int_equal((int)jnum(e, "predicted"), 3);
        else
            assert_int_equal((int)x->valuedouble, 3);
        assert_string_not_equal(dev, "dev-0003");
        saw15 |= strcmp(dev, "dev-0015") == 0;
        saw2 |= strcmp(dev, "dev-0002") == 0;
    }
    assert_true(saw15 && saw2);
    cJSON_Delete(j);

    /* samples --since: a window that holds about half of them. */
    int64_t back = (int64_t)(time(NULL) - gen_now) + EXPORT_SAMPLES / 2;
    j = ctl_json_f("samples list --since %llds --limit 10000",
                   (long long)back);
    want = db_count("SELECT count(*) FROM samples WHERE recv_at >= ?1",
                    (int64_t)jnum(j, "since"));
    assert_true(want > 0 && want < EXPORT_SAMPLES);
    assert_int_equal((int64_t)jnum(j, "total"), want);
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "samples"))
        assert_true(jnum(e, "received_at") >= jnum(j, "since"));
    cJSON_Delete(j);

    /* All together, and export follows the same filters. */
    j = ctl_json_f("samples list --model kws@1 --reason flagged --label 5 "
                   "--since %llds --limit 10000",
                   (long long)back);
    want = db_count("SELECT count(*) FROM samples WHERE model_version = 1 "
                    "AND reason = 1 AND coalesce(expected, predicted) = 5 "
                    "AND recv_at >= ?1",
                    (int64_t)jnum(j, "since"));
    assert_int_equal((int64_t)jnum(j, "total"), want);
    cJSON_Delete(j);
    char dir[256], mf[320];
    snprintf(dir, sizeof(dir), "%s/export-v2", the_rig->dir);
    assert_int_equal(rig_ctl(NULL, "-q samples export --out %s --model kws@2 "
                               "--limit 10000",
                         dir),
                     0);
    snprintf(mf, sizeof(mf), "%s/manifest.json", dir);
    FILE *f = fopen(mf, "r");
    assert_non_null(f);
    char *buf = calloc(1, 1 << 20);
    assert_non_null(buf);
    buf[fread(buf, 1, (1 << 20) - 1, f)] = '\0';
    fclose(f);
    j = cJSON_Parse(buf);
    free(buf);
    assert_non_null(j);
    assert_int_equal((int)jnum(j, "count"), EXPORT_SAMPLES / 10);
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "samples"))
        assert_int_equal((int)jnum(e, "model_version"), 2);
    cJSON_Delete(j);

    /* Human output: only v2 rows. */
    assert_int_equal(rig_ctl(&out, "samples list --model kws@2 --limit 3"), 0);
    assert_non_null(strstr(out, "MODEL V"));
    assert_non_null(strstr(out, "dev-0"));
    free(out);

    /* Usage errors. */
    assert_int_equal(rig_ctl(NULL, "samples list --model foo 2>/dev/null"), 2);
    assert_int_equal(rig_ctl(NULL, "samples list --since xyz 2>/dev/null"), 2);
    assert_int_equal(rig_ctl(NULL, "samples list --since 0 2>/dev/null"), 2);
    assert_int_equal(rig_ctl(NULL, "samples list --label three 2>/dev/null"),
                     2);
    assert_int_equal(rig_ctl(NULL,
                             "samples export --out %s/x --since xyz "
                             "2>/dev/null",
                             the_rig->dir),
                     2);
    assert_int_equal(rig_ctl(NULL, "samples export --out %s/x --model foo "
                               "2>/dev/null",
                         the_rig->dir),
                     2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_plan),
        cmocka_unit_test(test_query_oracle),
        cmocka_unit_test(test_query_tmld_telemetry),
        cmocka_unit_test(test_query_groups),
        cmocka_unit_test(test_query_device_cmd),
        cmocka_unit_test(test_query_samples_export),
        cmocka_unit_test(test_query_filters),
    };
    return cmocka_run_group_tests_name("tmlctl_query", tests, setup,
                                       teardown);
}
