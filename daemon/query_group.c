/*
 * query_group.c: operator groups (issue 6): verbs group.create, group.delete,
 * group.add, group.remove (writes, answered when committed) and group.list
 * (read). A group made by the operator is a row of op_groups; its members
 * are device_groups rows with source 'op', which a device's hello never
 * touches. Groups the firmware declares (source 'fw') show in group.list
 * but cannot be deleted or have firmware members removed (conflict).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

#define GROUP_MAX_DEVICES 1000

enum gop { G_CREATE, G_DELETE, G_ADD, G_REMOVE };

struct gjob {
    struct tmld_ctl_req *req;
    enum gop op;
    char name[TML_MAX_NAME + 1];
    int64_t now;
    size_t n_dev;
    char (*dev)[TML_MAX_DEVICE_ID + 1];
    /* results, set on the writer thread */
    char code[16];
    char msg[160];
    int64_t changed;
};

static bool
group_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > TML_MAX_NAME)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

static int64_t
q1(sqlite3 *db, const char *sql, const char *a, const char *b, int *rc)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    *rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (*rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
        if (b != NULL)
            sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
        *rc = sqlite3_step(st);
        if (*rc == SQLITE_ROW) {
            v = sqlite3_column_int64(st, 0);
            *rc = SQLITE_OK;
        } else if (*rc == SQLITE_DONE) {
            *rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return v;
}

static int
ex(sqlite3 *db, const char *sql, const char *a, const char *b, int64_t n,
   int64_t *changed)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
        if (b != NULL)
            sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, n);
        rc = sqlite3_step(st);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
        if (changed != NULL)
            *changed += sqlite3_changes(db);
    }
    sqlite3_finalize(st);
    return rc;
}

#define FAIL(j, c, ...)                                                        \
    do {                                                                       \
        snprintf((j)->code, sizeof((j)->code), "%s", c);                       \
        snprintf((j)->msg, sizeof((j)->msg), __VA_ARGS__);                     \
        return 1;                                                              \
    } while (0)

/* Writer thread. Returns 0 (commit), 1 (refused: code/msg set, nothing
 * changed) or an SQLite code. */
static int
gjob_run(sqlite3 *db, void *arg)
{
    struct gjob *j = arg;
    int rc;
    int64_t is_op = q1(db, "SELECT 1 FROM op_groups WHERE name = ?1",
                       j->name, NULL, &rc);
    if (rc != SQLITE_OK)
        return rc;
    switch (j->op) {
    case G_CREATE:
        if (is_op == 1)
            FAIL(j, "conflict", "group '%s' exists", j->name);
        return ex(db,
                  "INSERT INTO op_groups (name, created_at) VALUES (?1, "
                  "?3)",
                  j->name, NULL, j->now, &j->changed);
    case G_DELETE: {
        if (is_op != 1) {
            int64_t fw = q1(db,
                            "SELECT count(*) FROM device_groups WHERE "
                            "grp = ?1",
                            j->name, NULL, &rc);
            if (rc != SQLITE_OK)
                return rc;
            if (fw > 0)
                FAIL(j, "conflict",
                     "group '%s' is declared by device firmware; it goes "
                     "away when no device declares it",
                     j->name);
            FAIL(j, "not_found", "no group '%s'", j->name);
        }
        rc = ex(db, "DELETE FROM device_groups WHERE grp = ?1 AND source = "
                    "'op'",
                j->name, NULL, 0, &j->changed);
        if (rc == SQLITE_OK)
            rc = ex(db, "DELETE FROM op_groups WHERE name = ?1", j->name,
                    NULL, 0, NULL);
        return rc;
    }
    case G_ADD:
    case G_REMOVE:
        if (is_op != 1)
            FAIL(j, "not_found",
                 "no operator group '%s' (tmlctl group create %s)", j->name,
                 j->name);
        for (size_t i = 0; i < j->n_dev; i++) {
            int64_t id = q1(db, "SELECT id FROM devices WHERE name = ?1",
                            j->dev[i], NULL, &rc);
            if (rc != SQLITE_OK)
                return rc;
            if (id < 0)
                FAIL(j, "not_found", "no device '%s'", j->dev[i]);
            if (j->op == G_ADD) {
                rc = ex(db,
                        "INSERT OR IGNORE INTO device_groups (device_id, "
                        "grp, source) VALUES ((SELECT id FROM devices WHERE "
                        "name = ?2), ?1, 'op')",
                        j->name, j->dev[i], 0, &j->changed);
            } else {
                int64_t src = q1(db,
                                 "SELECT source = 'fw' FROM device_groups "
                                 "WHERE grp = ?1 AND device_id = (SELECT id "
                                 "FROM devices WHERE name = ?2)",
                                 j->name, j->dev[i], &rc);
                if (rc == SQLITE_OK && src == 1)
                    FAIL(j, "conflict",
                         "device '%s' declares group '%s' in its firmware",
                         j->dev[i], j->name);
                if (rc == SQLITE_OK)
                    rc = ex(db,
                            "DELETE FROM device_groups WHERE grp = ?1 AND "
                            "source = 'op' AND device_id = (SELECT id FROM "
                            "devices WHERE name = ?2)",
                            j->name, j->dev[i], 0, &j->changed);
            }
            if (rc != SQLITE_OK)
                return rc;
        }
        return 0;
    }
    return SQLITE_MISUSE;
}

static void
gjob_done(struct tmld *d, int status, void *arg)
{
    (void)d;
    struct gjob *j = arg;
    if (status == 1) {
        tmld_ctl_reply_err(j->req, j->code, "%s", j->msg);
    } else if (status != 0) {
        tmld_ctl_reply_err(j->req, "unavailable", "database write failed (%d)",
                           status);
    } else {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "group", j->name);
        cJSON_AddNumberToObject(r, "changed", (double)j->changed);
        tmld_ctl_reply_ok(j->req, r);
    }
    free(j->dev);
    free(j);
}

static void
v_group_write(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
              void *arg)
{
    enum gop op = (enum gop)(intptr_t)arg;
    const char *name = NULL;
    const cJSON *devs = cJSON_GetObjectItemCaseSensitive(args, "devices");
    bool want_devs = op == G_ADD || op == G_REMOVE;
    int n = cJSON_IsArray(devs) ? cJSON_GetArraySize(devs) : -1;
    if (tmld_ctl_arg_str(args, "name", TML_MAX_NAME, &name) != 0 ||
        !group_name_ok(name) ||
        (want_devs && (n < 1 || n > GROUP_MAX_DEVICES))) {
        tmld_ctl_reply_err(req, "bad_args",
                           "group verbs take name ([A-Za-z0-9._-], <= %d "
                           "bytes)%s",
                           TML_MAX_NAME,
                           want_devs ? " and devices (1..1000 id strings)"
                                     : "");
        return;
    }
    struct gjob *j = calloc(1, sizeof(*j));
    if (j == NULL || (want_devs && (j->dev = calloc((size_t)n,
                                                    sizeof(*j->dev))) ==
                                       NULL)) {
        free(j);
        tmld_ctl_reply_err(req, "internal", "out of memory");
        return;
    }
    j->req = req;
    j->op = op;
    j->now = tmld_wall_s();
    snprintf(j->name, sizeof(j->name), "%s", name);
    if (want_devs) {
        const cJSON *e;
        cJSON_ArrayForEach(e, devs)
        {
            if (!cJSON_IsString(e) ||
                strlen(e->valuestring) > TML_MAX_DEVICE_ID ||
                !tml_device_id_valid(e->valuestring,
                                     strlen(e->valuestring))) {
                free(j->dev);
                free(j);
                tmld_ctl_reply_err(req, "bad_args",
                                   "devices: not a device id");
                return;
            }
            snprintf(j->dev[j->n_dev++], TML_MAX_DEVICE_ID + 1, "%s",
                     e->valuestring);
        }
    }
    int rc = tmld_db_write_now(d, gjob_run, gjob_done, j);
    if (rc != 0) {
        free(j->dev);
        free(j);
        tmld_ctl_reply_err(req, rc == -ENOSPC ? "busy" : "unavailable",
                           "cannot queue the write: %s", strerror(-rc));
    }
}

static void
v_group_list(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
             void *arg)
{
    (void)args, (void)arg;
    sqlite3 *db = tmld_db_ro(d);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(
        db,
        "WITH names(name) AS (SELECT name FROM op_groups UNION SELECT grp "
        "FROM device_groups) SELECT n.name, o.created_at, "
        "(SELECT count(*) FROM device_groups g WHERE g.grp = n.name), "
        "(SELECT count(*) FROM device_groups g WHERE g.grp = n.name AND "
        "g.source = 'fw'), "
        "(SELECT count(*) FROM device_groups g JOIN devices v ON v.id = "
        "g.device_id WHERE g.grp = n.name AND v.online) "
        "FROM names n LEFT JOIN op_groups o ON o.name = n.name "
        "ORDER BY n.name LIMIT 10000",
        -1, &st, NULL);
    cJSON *r = cJSON_CreateObject();
    cJSON *a = cJSON_AddArrayToObject(r, "groups");
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW &&
           (rc = SQLITE_OK) == SQLITE_OK) {
        cJSON *o = cJSON_CreateObject();
        const char *nm = (const char *)sqlite3_column_text(st, 0);
        cJSON_AddStringToObject(o, "name", nm ? nm : "");
        bool is_op = sqlite3_column_type(st, 1) != SQLITE_NULL;
        int64_t fw = sqlite3_column_int64(st, 3);
        cJSON_AddStringToObject(o, "source",
                                is_op ? (fw > 0 ? "op+fw" : "op") : "fw");
        if (is_op)
            cJSON_AddNumberToObject(o, "created_at",
                                    (double)sqlite3_column_int64(st, 1));
        cJSON_AddNumberToObject(o, "devices",
                                (double)sqlite3_column_int64(st, 2));
        cJSON_AddNumberToObject(o, "fw_devices", (double)fw);
        cJSON_AddNumberToObject(o, "online",
                                (double)sqlite3_column_int64(st, 4));
        cJSON_AddItemToArray(a, o);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        cJSON_Delete(r);
        tmld_ctl_reply_err(req, "unavailable", "database: %s",
                           sqlite3_errmsg(db));
        return;
    }
    tmld_ctl_reply_ok(req, r);
}

static int
qgroup_init(struct tmld *d, void **state)
{
    *state = NULL;
    int rc = 0;
    if ((rc = tmld_ctl_register(d, "group.create", v_group_write,
                                (void *)(intptr_t)G_CREATE)) != 0 ||
        (rc = tmld_ctl_register(d, "group.delete", v_group_write,
                                (void *)(intptr_t)G_DELETE)) != 0 ||
        (rc = tmld_ctl_register(d, "group.add", v_group_write,
                                (void *)(intptr_t)G_ADD)) != 0 ||
        (rc = tmld_ctl_register(d, "group.remove", v_group_write,
                                (void *)(intptr_t)G_REMOVE)) != 0 ||
        (rc = tmld_ctl_register(d, "group.list", v_group_list, NULL)) != 0)
        log_err("query_group: cannot register verbs: %s", strerror(-rc));
    return rc;
}

static void
qgroup_fini(struct tmld *d, void *state)
{
    (void)d, (void)state;
}

TMLD_MODULE(query_group, qgroup_init, qgroup_fini);
