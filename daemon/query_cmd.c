/*
 * query_cmd.c: verb device.cmd (issue 6, `tmlctl device-cmd`): publishes a
 * down/cmd "set" (struct tml_cmd) to the named devices or to every member of
 * a group. args: devices (array of ids) or group (string), and set: an
 * object with any of summary_period_s, sample_budget, budget_period_s,
 * conf_threshold_bp (0..10000), audit_ppm (0..1000000). The result carries
 * the nonce the devices echo in their next hello, the devices published to
 * and those that failed (broker link down: nothing is queued for them).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

#define CMD_MAX_DEVICES 10000

static uint32_t cmd_nonce;

/* One optional u32 of set into has and val; false if present and invalid. */
static bool
set_field(const cJSON *set, const char *key, uint32_t max, bool *has,
          uint32_t *val, int *n_set)
{
    int64_t v;
    int rc = tmld_ctl_arg_int(set, key, 0, max, &v);
    if (rc < 0)
        return false;
    if (rc == 0) {
        *has = true;
        *val = (uint32_t)v;
        (*n_set)++;
    }
    return true;
}

/* Known to the registry or stored (a device seen before this start). */
static bool
device_known(struct tmld *d, const char *dev)
{
    if (tmld_device_rowid(d, dev) != 0)
        return true;
    sqlite3_stmt *st = NULL;
    bool found = false;
    if (sqlite3_prepare_v2(tmld_db_ro(d),
                           "SELECT 1 FROM devices WHERE name = ?1", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, dev, -1, SQLITE_STATIC);
        found = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    return found;
}

static void
send_one(struct tmld *d, const char *dev, const uint8_t *buf, size_t len,
         cJSON *sent, cJSON *failed)
{
    int rc = tmld_publish(d, dev, TML_KIND_CMD, buf, len);
    if (rc == 0) {
        cJSON_AddItemToArray(sent, cJSON_CreateString(dev));
        return;
    }
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "device", dev);
    cJSON_AddStringToObject(f, "error", strerror(-rc));
    cJSON_AddItemToArray(failed, f);
}

static void
v_device_cmd(struct tmld *d, struct tmld_ctl_req *req, const cJSON *args,
             void *arg)
{
    (void)arg;
    const char *group = NULL;
    const cJSON *devs = cJSON_GetObjectItemCaseSensitive(args, "devices");
    const cJSON *set = cJSON_GetObjectItemCaseSensitive(args, "set");
    struct tml_cmd c;
    memset(&c, 0, sizeof(c));
    c.kind = TML_CMD_SET;
    int n_set = 0;
    int grc = tmld_ctl_arg_str(args, "group", TML_MAX_NAME, &group);
    bool ok = grc >= 0 && cJSON_IsObject(set) &&
              (grc == 0) != (devs != NULL) &&
              (devs == NULL ||
               (cJSON_IsArray(devs) && cJSON_GetArraySize(devs) >= 1 &&
                cJSON_GetArraySize(devs) <= CMD_MAX_DEVICES));
    ok = ok &&
         set_field(set, "summary_period_s", 86400, &c.has_summary_period,
                   &c.summary_period_s, &n_set) &&
         set_field(set, "sample_budget", 1000000, &c.has_sample_budget,
                   &c.sample_budget, &n_set) &&
         set_field(set, "budget_period_s", 86400 * 7, &c.has_budget_period,
                   &c.budget_period_s, &n_set) &&
         set_field(set, "conf_threshold_bp", 10000, &c.has_conf_threshold,
                   &c.conf_threshold_bp, &n_set) &&
         set_field(set, "audit_ppm", 1000000, &c.has_audit_rate,
                   &c.audit_ppm, &n_set) &&
         n_set > 0 && (!c.has_summary_period || c.summary_period_s > 0);
    if (!ok) {
        tmld_ctl_reply_err(req, "bad_args",
                           "device.cmd takes devices (array of ids) or "
                           "group, and set {summary_period_s (1..86400), "
                           "sample_budget, budget_period_s, "
                           "conf_threshold_bp (0..10000), audit_ppm} with at "
                           "least one field");
        return;
    }
    c.nonce = ++cmd_nonce ^ (uint32_t)tmld_wall_s();
    uint8_t buf[TML_MAX_MESSAGE];
    size_t len = 0;
    if (tml_cmd_encode(&c, buf, sizeof(buf), &len) != TML_OK) {
        tmld_ctl_reply_err(req, "internal", "cannot encode the command");
        return;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "nonce", (double)c.nonce);
    cJSON *sent = cJSON_AddArrayToObject(r, "sent");
    cJSON *failed = cJSON_AddArrayToObject(r, "failed");
    if (devs != NULL) {
        /* Validate all before sending any. */
        const cJSON *e;
        cJSON_ArrayForEach(e, devs)
        {
            if (!cJSON_IsString(e) ||
                !tml_device_id_valid(e->valuestring,
                                     strlen(e->valuestring))) {
                cJSON_Delete(r);
                tmld_ctl_reply_err(req, "bad_args",
                                   "devices: not a device id");
                return;
            }
            if (!device_known(d, e->valuestring)) {
                cJSON_Delete(r);
                tmld_ctl_reply_err(req, "not_found", "no device '%s'",
                                   e->valuestring);
                return;
            }
        }
        cJSON_ArrayForEach(e, devs)
            send_one(d, e->valuestring, buf, len, sent, failed);
    } else {
        sqlite3 *db = tmld_db_ro(d);
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(
            db,
            "SELECT d.name FROM device_groups g JOIN devices d ON d.id = "
            "g.device_id WHERE g.grp = ?1 ORDER BY d.name LIMIT 10000",
            -1, &st, NULL);
        if (rc == SQLITE_OK)
            sqlite3_bind_text(st, 1, group, -1, SQLITE_STATIC);
        while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW &&
               (rc = SQLITE_OK) == SQLITE_OK)
            send_one(d, (const char *)sqlite3_column_text(st, 0), buf, len,
                     sent, failed);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) {
            cJSON_Delete(r);
            tmld_ctl_reply_err(req, "unavailable", "database: %s",
                               sqlite3_errmsg(db));
            return;
        }
        if (cJSON_GetArraySize(sent) + cJSON_GetArraySize(failed) == 0) {
            cJSON_Delete(r);
            tmld_ctl_reply_err(req, "not_found", "no devices in group '%s'",
                               group);
            return;
        }
    }
    log_info("query: device.cmd nonce %u: set to %d device(s), %d failed",
             c.nonce, cJSON_GetArraySize(sent), cJSON_GetArraySize(failed));
    tmld_ctl_reply_ok(req, r);
}

static int
qcmd_init(struct tmld *d, void **state)
{
    *state = NULL;
    int rc = tmld_ctl_register(d, "device.cmd", v_device_cmd, NULL);
    if (rc != 0)
        log_err("query_cmd: cannot register device.cmd: %s", strerror(-rc));
    return rc;
}

static void
qcmd_fini(struct tmld *d, void *state)
{
    (void)d, (void)state;
}

TMLD_MODULE(query_cmd, qcmd_init, qcmd_fini);
