/*
 * cmd_telemetry.c: `tmlctl telemetry [--group G] [--device D] [--since
 * 1h] [--by model-version|device|hour]`: inference telemetry summed per
 * model version (side by side: what a canary analysis compares), device or
 * hour (control verb "tele.query", answered from the hourly rollup). On a
 * terminal (or with --bars) inferences and the low-confidence rate get
 * small inline bars.
 */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tmlctl.h"

/* " " and an 8-cell bar of v / max in eighth blocks (UTF-8), or "" when
 * bars are off. Every bar takes the same number of cells. */
static void
tele_bar(char *buf, size_t cap, bool on, double v, double max)
{
    static const char *const part[] = {"", "\u258f", "\u258e", "\u258d",
                                       "\u258c", "\u258b", "\u258a",
                                       "\u2589"};
    buf[0] = '\0';
    if (!on)
        return;
    int eighths = max > 0 ? (int)(64.0 * v / max + 0.5) : 0;
    eighths = eighths < 0 ? 0 : eighths > 64 ? 64 : eighths;
    size_t n = strlen(buf);
    n += (size_t)snprintf(buf + n, cap - n, " ");
    int cells = 0;
    for (; eighths >= 8 && n < cap; eighths -= 8, cells++)
        n += (size_t)snprintf(buf + n, cap - n, "\u2588");
    if (eighths > 0 && n < cap) {
        n += (size_t)snprintf(buf + n, cap - n, "%s", part[eighths]);
        cells++;
    }
    for (; cells < 8 && n < cap; cells++)
        n += (size_t)snprintf(buf + n, cap - n, " ");
}

static int
cmd_telemetry(struct tmlctl *ctl, int argc, char **argv)
{
    const char *group = NULL, *device = NULL, *since = "1h", *by = NULL;
    bool bars = false;
    const struct tmlctl_opt opts[] = {
        {"group", 'g', TMLCTL_OPT_STR, &group, "GROUP", "only this group",
         false},
        {"device", 'd', TMLCTL_OPT_STR, &device, "ID", "only this device",
         false},
        {"since", 's', TMLCTL_OPT_STR, &since, "DURATION",
         "window back from now (1h)", false},
        {"by", 0, TMLCTL_OPT_STR, &by, "KEY",
         "rows per model-version (default), device or hour", false},
        {"bars", 0, TMLCTL_OPT_FLAG, &bars, NULL,
         "inline bars even when stdout is not a terminal", false},
        {0},
    };
    struct tmlctl_args a;
    int rc;
    if (!tmlctl_parse(ctl, "telemetry [--group G|--device ID] [--since D] [--by KEY]",
                      opts, argc, argv, &a, &rc))
        return rc;
    uint64_t since_s;
    if (a.n_pos != 0 || !tmlctl_parse_duration(since, &since_s) ||
        since_s == 0 || since_s > 10ull * 365 * 86400 ||
        (group != NULL && device != NULL) ||
        (by != NULL && strcmp(by, "model-version") != 0 &&
         strcmp(by, "device") != 0 && strcmp(by, "hour") != 0))
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "e.g. --group G --since 24h --by model-version "
                           "(or device, hour)",
                           "bad arguments");
    if (by == NULL || strcmp(by, "model-version") == 0)
        by = "model_version";
    cJSON *args = cJSON_CreateObject();
    if (group != NULL)
        cJSON_AddStringToObject(args, "group", group);
    if (device != NULL)
        cJSON_AddStringToObject(args, "device", device);
    cJSON_AddNumberToObject(args, "since_s", (double)since_s);
    cJSON_AddStringToObject(args, "by", by);
    cJSON *r = NULL;
    rc = tmlctl_call(ctl, "tele.query", args, &r);
    if (rc != TMLCTL_EXIT_OK)
        return rc;
    if (ctl->json)
        return tmlctl_json_emit(r ? r : cJSON_CreateObject());
    bars = bars || isatty(STDOUT_FILENO);
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(r, "rows");
    double max_inf = 0, max_low = 0;
    const cJSON *row;
    cJSON_ArrayForEach(row, rows)
    {
        double inf = tmlctl_jnum(row, "inferences", 0);
        double low = inf > 0 ? tmlctl_jnum(row, "low_conf", 0) / inf : 0;
        max_inf = inf > max_inf ? inf : max_inf;
        max_low = low > max_low ? low : max_low;
    }
    const char *key_hdr = strcmp(by, "device") == 0 ? "DEVICE"
                          : strcmp(by, "hour") == 0 ? "HOUR (UTC)"
                                                    : "MODEL V";
    const char *hdr[] = {key_hdr,    "DEVICES",  "SUMMARIES",
                         "INFERENCES", "LOW-CONF", "FLAGGED",
                         "ERRORS",     "LAT MEAN"};
    struct tmlctl_table *t = tmlctl_table_new(8, hdr);
    cJSON_ArrayForEach(row, rows)
    {
        double inf = tmlctl_jnum(row, "inferences", 0);
        double low = inf > 0 ? tmlctl_jnum(row, "low_conf", 0) / inf : 0;
        char c[8][64], b1[40], b2[40];
        if (strcmp(by, "device") == 0) {
            snprintf(c[0], 64, "%s", tmlctl_jstr(row, "device", ""));
        } else if (strcmp(by, "hour") == 0) {
            time_t h = (time_t)tmlctl_jnum(row, "hour", 0);
            struct tm tm;
            if (gmtime_r(&h, &tm) == NULL ||
                strftime(c[0], 64, "%Y-%m-%d %H:00", &tm) == 0)
                snprintf(c[0], 64, "%lld", (long long)h);
        } else {
            snprintf(c[0], 64, "%.0f", tmlctl_jnum(row, "model_version", 0));
        }
        snprintf(c[1], 64, "%.0f", tmlctl_jnum(row, "devices", 0));
        snprintf(c[2], 64, "%.0f", tmlctl_jnum(row, "summaries", 0));
        tele_bar(b1, sizeof(b1), bars, inf, max_inf);
        tele_bar(b2, sizeof(b2), bars, low, max_low);
        snprintf(c[3], 64, "%.0f%s", inf, b1);
        snprintf(c[4], 64, "%5.2f%%%s", 100.0 * low, b2);
        snprintf(c[5], 64, "%.2f%%",
                 inf > 0 ? 100.0 * tmlctl_jnum(row, "flagged", 0) / inf : 0);
        snprintf(c[6], 64, "%.0f", tmlctl_jnum(row, "errors", 0));
        snprintf(c[7], 64, "%.2f ms",
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

TMLCTL_COMMAND("telemetry",
               "inference telemetry per model version, device or hour",
               cmd_telemetry)
