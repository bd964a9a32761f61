/*
 * cmd_status.c: `tmlctl status`: tmld's health at a glance (control verb
 * "status", docs/ctl-protocol.md): MQTT link, devices online, ingest
 * counters, database size, active rollouts (verb "rollout.list") and the
 * upstream backlog (verb "upstream.status"). Those two are best effort: a
 * tmld without the module still answers status. --json prints tmld's status
 * result with "rollouts" and "upstream" added.
 */
#include <string.h>
#include <time.h>

#include "tmlctl.h"

static int
cmd_status(struct tmlctl *ctl, int argc, char **argv)
{
    struct tmlctl_args a;
    int rc;
    if (!tmlctl_parse(ctl, "status", NULL, argc, argv, &a, &rc))
        return rc;
    if (a.n_pos != 0)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL,
                           "status takes no arguments");
    cJSON *r = NULL;
    rc = tmlctl_call(ctl, "status", NULL, &r);
    if (rc != TMLCTL_EXIT_OK)
        return rc;
    if (r == NULL)
        r = cJSON_CreateObject();
    cJSON *ro = NULL, *upr = NULL;
    if (tmlctl_call(ctl, "rollout.list", NULL, &ro) != TMLCTL_EXIT_OK) {
        cJSON_Delete(ro);
        ro = NULL;
    }
    if (tmlctl_call(ctl, "upstream.status", NULL, &upr) != TMLCTL_EXIT_OK) {
        cJSON_Delete(upr);
        upr = NULL;
    }
    /* Active = not finished: everything but done / aborted / failed. */
    int n_active = 0, n_paused = 0;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(ro, "rollouts");
    const cJSON *it;
    cJSON_ArrayForEach(it, list) {
        const char *st = tmlctl_jstr(it, "state", "");
        if (strcmp(st, "done") == 0 || strcmp(st, "aborted") == 0 ||
            strcmp(st, "failed") == 0)
            continue;
        n_active++;
        if (strcmp(st, "paused") == 0)
            n_paused++;
    }
    if (ctl->json) {
        cJSON *rs = cJSON_AddObjectToObject(r, "rollouts");
        cJSON_AddNumberToObject(rs, "active", n_active);
        cJSON_AddNumberToObject(rs, "paused", n_paused);
        if (upr != NULL)
            cJSON_AddItemToObject(r, "upstream", upr);
        cJSON_Delete(ro);
        return tmlctl_json_emit(r);
    }
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(r, "mqtt");
    const cJSON *dv = cJSON_GetObjectItemCaseSensitive(r, "devices");
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(r, "ingest");
    const cJSON *db = cJSON_GetObjectItemCaseSensitive(r, "db");
    char up[32], size[32], wal[32], cap[32];
    tmlctl_fmt_duration((int64_t)tmlctl_jnum(r, "uptime_s", 0), up, sizeof(up));
    bool conn = tmlctl_jbool(m, "connected");
    printf("tmld %s (pid %.0f), up %s\n", tmlctl_jstr(r, "version", "?"),
           tmlctl_jnum(r, "pid", 0), up);
    printf("mqtt      %s%s%s %s:%.0f%s, connects %.0f, disconnects %.0f\n",
           tmlctl_color(ctl, conn ? TMLCTL_C_GREEN : TMLCTL_C_RED),
           conn ? "connected" : "DISCONNECTED", tmlctl_reset(ctl),
           tmlctl_jstr(m, "host", "?"), tmlctl_jnum(m, "port", 0),
           tmlctl_jbool(m, "tls") ? " (TLS)" : " (no TLS)",
           tmlctl_jnum(m, "connects", 0), tmlctl_jnum(m, "disconnects", 0));
    printf("devices   %.0f of %.0f online\n", tmlctl_jnum(dv, "online", 0),
           tmlctl_jnum(dv, "total", 0));
    printf("ingest    tele %.0f, samples %.0f, duplicates %.0f, gaps %.0f, "
           "malformed %.0f, queued %.0f, acks %.0f, commit errors %.0f, "
           "last commit %.0f ms\n",
           tmlctl_jnum(in, "tele", 0), tmlctl_jnum(in, "samples", 0),
           tmlctl_jnum(in, "duplicates", 0), tmlctl_jnum(in, "gaps", 0),
           tmlctl_jnum(in, "malformed", 0), tmlctl_jnum(in, "queued", 0),
           tmlctl_jnum(in, "acks", 0), tmlctl_jnum(in, "commit_errors", 0),
           tmlctl_jnum(in, "last_commit_ms", 0));
    tmlctl_fmt_bytes(tmlctl_jnum(db, "size_bytes", 0), size, sizeof(size));
    tmlctl_fmt_bytes(tmlctl_jnum(db, "wal_bytes", 0), wal, sizeof(wal));
    tmlctl_fmt_bytes(tmlctl_jnum(db, "cap_bytes", 0), cap, sizeof(cap));
    printf("database  %s %s (WAL %s, cap %s), schema %.0f\n",
           tmlctl_jstr(db, "path", "?"), size, wal, cap,
           tmlctl_jnum(db, "schema_version", 0));
    if (ro != NULL)
        printf("rollouts  %d active (%d paused)\n", n_active, n_paused);
    if (upr != NULL && !tmlctl_jbool(upr, "enabled")) {
        printf("upstream  off\n");
    } else if (upr != NULL) {
        double dl = 0, po = 0, dr = 0;
        const cJSON *ss = cJSON_GetObjectItemCaseSensitive(upr, "streams");
        cJSON_ArrayForEach(it, ss) {
            dl += tmlctl_jnum(it, "delivered", 0);
            po += tmlctl_jnum(it, "poisoned", 0);
            dr += tmlctl_jnum(it, "dropped", 0);
        }
        printf("upstream  backlog %.0f rows, delivered %.0f, dropped %.0f, "
               "poisoned %.0f\n",
               tmlctl_jnum(upr, "backlog_rows", 0), dl, dr, po);
    }
    cJSON_Delete(ro);
    cJSON_Delete(upr);
    cJSON_Delete(r);
    /* A gateway that is up but not connected to its broker is not OK. */
    return conn ? TMLCTL_EXIT_OK : TMLCTL_EXIT_UNAVAILABLE;
}

TMLCTL_COMMAND("status", "tmld health: broker link, devices, ingest, db",
               cmd_status)
