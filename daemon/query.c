/*
 * query.c: verb tele.query, the telemetry of `tmlctl telemetry` grouped by
 * model version, device or hour over a window back from now. It reads the
 * hourly rollup tele_hour (db/0002_query.sql) for whole hours and tele only
 * for the first, partial hour (a rowid range from tele_hour_ids), so 24 h over 1000 devices costs tens of
 * thousands of rollup rows instead of millions of tele rows.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core.h"
#include "query.h"

static void
v_tele_query(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
             void *arg)
{
    (void)arg;
    const char *group = NULL, *dev = NULL, *bys = "model_version";
    int64_t since_s = 3600;
    enum query_by by;
    if (tmld_ctl_arg_str(args, "group", TML_MAX_NAME, &group) < 0 ||
        tmld_ctl_arg_str(args, "device", TML_MAX_DEVICE_ID, &dev) < 0 ||
        tmld_ctl_arg_str(args, "by", 32, &bys) < 0 ||
        tmld_ctl_arg_int(args, "since_s", 1, 100LL * 365 * 86400, &since_s) <
            0 ||
        query_by_parse(bys, &by) != 0 || (group != NULL && dev != NULL)) {
        tmld_ctl_reply_err(req, "bad_args",
                           "tele.query takes group or device (strings), "
                           "since_s (seconds), by (model_version, device, "
                           "hour)");
        return;
    }
    int64_t since = tmld_wall_s() - since_s;
    int64_t first_hour = (since + 3599) / 3600;
    char sql[2048];
    if (query_tele_sql(sql, sizeof(sql), by, dev != NULL, group != NULL) <
        0) {
        tmld_ctl_reply_err(req, "internal", "query too long");
        return;
    }
    sqlite3 *db = tmld_db_ro(d);
    sqlite3_stmt *st = NULL;
    struct query_guard g;
    query_guard_start(db, &g);
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "since", (double)since);
    static const char *const by_names[] = {"model_version", "device",
                                           "hour"};
    cJSON_AddStringToObject(r, "by", by_names[by]);
    cJSON *a = cJSON_AddArrayToObject(r, "rows");
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, since);
        if (dev)
            sqlite3_bind_text(st, 2, dev, -1, SQLITE_STATIC);
        if (group)
            sqlite3_bind_text(st, 3, group, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, first_hour);
        sqlite3_bind_int64(st, 5, first_hour * 3600);
    }
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW &&
           (rc = SQLITE_OK) == SQLITE_OK) {
        cJSON *o = cJSON_CreateObject();
        if (by == QUERY_BY_DEVICE) {
            const char *name = (const char *)sqlite3_column_text(st, 0);
            cJSON_AddStringToObject(o, "device", name ? name : "");
        } else {
            cJSON_AddNumberToObject(o, by_names[by],
                                    (double)sqlite3_column_int64(st, 0));
        }
        static const char *const names[] = {"devices",  "summaries",
                                            "inferences", "low_conf",
                                            "flagged",  "errors"};
        for (int i = 0; i < 6; i++)
            cJSON_AddNumberToObject(o, names[i],
                                    (double)sqlite3_column_int64(st, i + 1));
        int64_t inf = sqlite3_column_int64(st, 3);
        cJSON_AddNumberToObject(o, "lat_mean_us",
                                inf ? (double)(sqlite3_column_int64(st, 7) /
                                               inf)
                                    : 0);
        cJSON_AddItemToArray(a, o);
    }
    query_guard_end(db);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        cJSON_Delete(r);
        if (rc == SQLITE_INTERRUPT || rc == SQLITE_BUSY)
            tmld_ctl_reply_err(req, "busy", "query took too long; narrow it");
        else
            tmld_ctl_reply_err(req, "unavailable", "database: %s",
                               sqlite3_errmsg(db));
        return;
    }
    tmld_ctl_reply_ok(req, r);
}

static int
query_init(struct tmld *d, void **state)
{
    *state = NULL;
    int rc = tmld_ctl_register(d, "tele.query", v_tele_query, NULL);
    if (rc != 0)
        log_err("query: cannot register tele.query: %s", strerror(-rc));
    return rc;
}

static void
query_fini(struct tmld *d, void *state)
{
    (void)d, (void)state;
}

TMLD_MODULE(query, query_init, query_fini);
