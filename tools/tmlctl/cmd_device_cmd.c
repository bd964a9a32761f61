/*
 * cmd_device_cmd.c: `tmlctl device-cmd ID...|--group G set KEY=VALUE...`:
 * pushes settings to devices as a down/cmd "set" through tmld (control verb
 * device.cmd, daemon/query_cmd.c). Keys:
 *   summary-period=60 | 1m        telemetry summary period (seconds)
 *   sample-budget=20/h | 20       captures per budget period (/s, /m, /h,
 *                                 /d, or /DURATION such as /15m)
 *   confidence-threshold=0.6      low-confidence threshold, 0..1
 *   audit-rate=0.01 | 1%          random audit share, 0..1
 */
#include <stdlib.h>
#include <string.h>

#include "tmlctl.h"

static bool
parse_fraction(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s)
        return false;
    if (*end == '%') {
        v /= 100.0;
        end++;
    }
    if (*end != '\0' || !(v >= 0.0 && v <= 1.0))
        return false;
    *out = v;
    return true;
}

/* KEY=VALUE into set; false on an unknown key or a bad value. */
static bool
parse_setting(const char *kv, cJSON *set)
{
    const char *eq = strchr(kv, '=');
    if (eq == NULL || eq[1] == '\0')
        return false;
    size_t klen = (size_t)(eq - kv);
    const char *v = eq + 1;
    uint64_t s;
    double f;
    if (klen == 14 && strncmp(kv, "summary-period", klen) == 0) {
        if (!tmlctl_parse_duration(v, &s) || s == 0 || s > 86400)
            return false;
        cJSON_AddNumberToObject(set, "summary_period_s", (double)s);
    } else if (klen == 13 && strncmp(kv, "sample-budget", klen) == 0) {
        char num[16];
        const char *slash = strchr(v, '/');
        size_t nlen = slash ? (size_t)(slash - v) : strlen(v);
        uint32_t n;
        if (nlen == 0 || nlen >= sizeof(num))
            return false;
        memcpy(num, v, nlen);
        num[nlen] = '\0';
        if (!tmlctl_parse_u32(num, &n) || n > 1000000)
            return false;
        cJSON_AddNumberToObject(set, "sample_budget", n);
        if (slash != NULL) {
            const char *p = slash + 1;
            if (strcmp(p, "s") == 0 || strcmp(p, "m") == 0 ||
                strcmp(p, "h") == 0 || strcmp(p, "d") == 0) {
                s = *p == 's' ? 1 : *p == 'm' ? 60 : *p == 'h' ? 3600 : 86400;
            } else if (!tmlctl_parse_duration(p, &s) || s == 0 ||
                       s > 7 * 86400) {
                return false;
            }
            cJSON_AddNumberToObject(set, "budget_period_s", (double)s);
        }
    } else if (klen == 20 && strncmp(kv, "confidence-threshold", klen) == 0) {
        if (!parse_fraction(v, &f))
            return false;
        cJSON_AddNumberToObject(set, "conf_threshold_bp", (double)(long)(f * 10000 + 0.5));
    } else if (klen == 10 && strncmp(kv, "audit-rate", klen) == 0) {
        if (!parse_fraction(v, &f))
            return false;
        cJSON_AddNumberToObject(set, "audit_ppm", (double)(long)(f * 1000000 + 0.5));
    } else {
        return false;
    }
    return true;
}

static int
cmd_device_cmd(struct tmlctl *ctl, int argc, char **argv)
{
    const char *group = NULL;
    const struct tmlctl_opt opts[] = {
        {"group", 'g', TMLCTL_OPT_STR, &group, "GROUP",
         "every device of this group", false},
        {0},
    };
    struct tmlctl_args a;
    int rc;
    static const char usage[] =
        "device-cmd ID...|--group G set summary-period=60 "
        "sample-budget=20/h confidence-threshold=0.6 audit-rate=1%";
    if (!tmlctl_parse(ctl, usage, opts, argc, argv, &a, &rc))
        return rc;
    int at = -1;
    for (int i = 0; i < a.n_pos && at < 0; i++)
        if (strcmp(a.pos[i], "set") == 0)
            at = i;
    if (at < 0 || at == a.n_pos - 1 || (at == 0) == (group == NULL))
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "e.g. tmlctl device-cmd --group G set "
                           "summary-period=60",
                           "usage: tmlctl %s", usage);
    cJSON *args = cJSON_CreateObject();
    cJSON *set = cJSON_AddObjectToObject(args, "set");
    for (int i = at + 1; i < a.n_pos; i++)
        if (!parse_setting(a.pos[i], set)) {
            cJSON_Delete(args);
            return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                               "keys: summary-period=60, sample-budget=20/h, "
                               "confidence-threshold=0.6, audit-rate=1%",
                               "bad setting '%s'", a.pos[i]);
        }
    if (group != NULL) {
        cJSON_AddStringToObject(args, "group", group);
    } else {
        cJSON *d = cJSON_AddArrayToObject(args, "devices");
        for (int i = 0; i < at; i++)
            cJSON_AddItemToArray(d, cJSON_CreateString(a.pos[i]));
    }
    cJSON *r = NULL;
    rc = tmlctl_call(ctl, "device.cmd", args, &r);
    if (rc != TMLCTL_EXIT_OK)
        return rc;
    int n_sent =
        cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r, "sent"));
    const cJSON *failed = cJSON_GetObjectItemCaseSensitive(r, "failed");
    int n_failed = cJSON_GetArraySize(failed);
    if (ctl->json) {
        rc = tmlctl_json_emit(r ? r : cJSON_CreateObject());
        return rc != TMLCTL_EXIT_OK ? rc
               : n_failed        ? TMLCTL_EXIT_FAIL
                                 : TMLCTL_EXIT_OK;
    }
    printf("sent to %d device%s (nonce %.0f)\n", n_sent, n_sent == 1 ? "" : "s",
           tmlctl_jnum(r, "nonce", 0));
    const cJSON *f;
    cJSON_ArrayForEach(f, failed)
        fprintf(stderr, "tmlctl: %s: not sent: %s\n",
                tmlctl_jstr(f, "device", "?"), tmlctl_jstr(f, "error", "?"));
    cJSON_Delete(r);
    return n_failed ? TMLCTL_EXIT_FAIL : TMLCTL_EXIT_OK;
}

TMLCTL_COMMAND("device-cmd", "push settings to devices (down/cmd set)",
               cmd_device_cmd)
