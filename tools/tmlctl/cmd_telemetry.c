/*
 * cmd_telemetry.c: `tmlctl telemetry [--group G] [--device D] [--since
 * 1h]`: inference telemetry summed per model version (control verb
 * "tele.summary"): the numbers the rollout health gate compares.
 */
#include <string.h>

#include "tmlctl.h"

static int
cmd_telemetry(struct tmlctl *ctl, int argc, char **argv)
{
    const char *group = NULL, *device = NULL, *since = "1h", *by = NULL;
    const struct tmlctl_opt opts[] = {
        {"group", 'g', TMLCTL_OPT_STR, &group, "GROUP", "only this group",
         false},
        {"device", 'd', TMLCTL_OPT_STR, &device, "ID", "only this device",
         false},
        {"since", 's', TMLCTL_OPT_STR, &since, "DURATION",
         "window back from now (1h)", false},
        {"by", 0, TMLCTL_OPT_STR, &by, "model-version",
         "grouping (model-version, the only one)", false},
        {0},
    };
    struct tmlctl_args a;
    int rc;
    if (!tmlctl_parse(ctl, "telemetry [--group G] [--device ID] [--since D]",
                      opts, argc, argv, &a, &rc))
        return rc;
    uint64_t since_s;
    if (a.n_pos != 0 || !tmlctl_parse_duration(since, &since_s) ||
        since_s == 0 || since_s > 10ull * 365 * 86400 ||
        (by != NULL && strcmp(by, "model-version") != 0))
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "e.g. --since 30m --by model-version",
                           "bad arguments");
    cJSON *args = cJSON_CreateObject();
    if (group != NULL)
        cJSON_AddStringToObject(args, "group", group);
    if (device != NULL)
        cJSON_AddStringToObject(args, "device", device);
    cJSON_AddNumberToObject(args, "since_s", (double)since_s);
    cJSON *r = NULL;
    rc = tmlctl_call(ctl, "tele.summary", args, &r);
    if (rc != TMLCTL_EXIT_OK)
        return rc;
    if (ctl->json)
        return tmlctl_json_emit(r ? r : cJSON_CreateObject());
    static const char *const hdr[] = {"MODEL V",    "DEVICES",  "SUMMARIES",
                                      "INFERENCES", "LOW-CONF", "FLAGGED",
                                      "ERRORS",     "LAT MEAN"};
    struct tmlctl_table *t = tmlctl_table_new(8, hdr);
    const cJSON *row;
    cJSON_ArrayForEach(row, cJSON_GetObjectItemCaseSensitive(r, "rows"))
    {
        double inf = tmlctl_jnum(row, "inferences", 0);
        char c[8][32];
        snprintf(c[0], 32, "%.0f", tmlctl_jnum(row, "model_version", 0));
        snprintf(c[1], 32, "%.0f", tmlctl_jnum(row, "devices", 0));
        snprintf(c[2], 32, "%.0f", tmlctl_jnum(row, "summaries", 0));
        snprintf(c[3], 32, "%.0f", inf);
        snprintf(c[4], 32, "%.2f%%",
                 inf > 0 ? 100.0 * tmlctl_jnum(row, "low_conf", 0) / inf : 0);
        snprintf(c[5], 32, "%.2f%%",
                 inf > 0 ? 100.0 * tmlctl_jnum(row, "flagged", 0) / inf : 0);
        snprintf(c[6], 32, "%.0f", tmlctl_jnum(row, "errors", 0));
        snprintf(c[7], 32, "%.2f ms",
                 tmlctl_jnum(row, "lat_mean_us", 0) / 1000.0);
        const char *cells[] = {c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]};
        if (t != NULL)
            tmlctl_table_add(t, cells);
    }
    if (t != NULL)
        tmlctl_table_print(ctl, t, stdout);
    tmlctl_table_free(t);
    cJSON_Delete(r);
    return t != NULL ? TMLCTL_EXIT_OK : TMLCTL_EXIT_FAIL;
}

TMLCTL_COMMAND("telemetry", "inference telemetry per model version",
               cmd_telemetry)
