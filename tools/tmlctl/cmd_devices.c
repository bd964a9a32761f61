/*
 * cmd_devices.c: `tmlctl devices [--group G] [--online|--offline]
 * [--model NAME@VER]`: the devices tmld knows (control verb "devices"), one
 * row each; --json prints tmld's result unchanged.
 */
#include <string.h>
#include <time.h>

#include "tmlctl.h"

/* "NAME@VER" (NAME 1..32 bytes, VER a decimal uint32) into name/ver. */
static bool
parse_model(const char *s, char *name, size_t cap, uint32_t *ver)
{
    const char *at = strrchr(s, '@');
    if (at == NULL || at == s || (size_t)(at - s) >= cap ||
        !tmlctl_parse_u32(at + 1, ver))
        return false;
    memcpy(name, s, (size_t)(at - s));
    name[at - s] = '\0';
    return true;
}

static int
cmd_devices(struct tmlctl *ctl, int argc, char **argv)
{
    const char *group = NULL, *model_opt = NULL;
    bool online = false, offline = false;
    uint32_t limit = 1000, offset = 0;
    const struct tmlctl_opt opts[] = {
        {"group", 'g', TMLCTL_OPT_STR, &group, "GROUP", "only this group",
         false},
        {"online", 0, TMLCTL_OPT_FLAG, &online, NULL, "only online devices",
         false},
        {"offline", 0, TMLCTL_OPT_FLAG, &offline, NULL, "only offline devices",
         false},
        {"model", 'm', TMLCTL_OPT_STR, &model_opt, "NAME@VER",
         "only devices running this model version", false},
        {"limit", 'n', TMLCTL_OPT_U32, &limit, "N", "at most N rows (1000)",
         false},
        {"offset", 0, TMLCTL_OPT_U32, &offset, "N", "skip N rows", false},
        {0},
    };
    struct tmlctl_args a;
    int rc;
    if (!tmlctl_parse(ctl, "devices [--group G] [--online|--offline] "
                      "[--model NAME@VER]", opts,
                      argc, argv, &a, &rc))
        return rc;
    char want[33];
    uint32_t mver = 0;
    if (a.n_pos != 0 || (online && offline) || limit == 0 || limit > 10000)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL,
                           "bad arguments (limit 1..10000, one of "
                           "--online/--offline)");
    if (model_opt != NULL &&
        !parse_model(model_opt, want, sizeof(want), &mver))
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "--model NAME@VER, e.g. --model kws@12",
                           "bad --model '%s'", model_opt);
    cJSON *args = cJSON_CreateObject();
    if (group != NULL)
        cJSON_AddStringToObject(args, "group", group);
    if (model_opt != NULL) {
        cJSON_AddStringToObject(args, "model", want);
        cJSON_AddNumberToObject(args, "model_version", mver);
    }
    if (online || offline)
        cJSON_AddBoolToObject(args, "online", online);
    cJSON_AddNumberToObject(args, "limit", limit);
    cJSON_AddNumberToObject(args, "offset", offset);
    cJSON *r = NULL;
    rc = tmlctl_call(ctl, "devices", args, &r);
    if (rc != TMLCTL_EXIT_OK)
        return rc;
    if (ctl->json)
        return tmlctl_json_emit(r ? r : cJSON_CreateObject());
    static const char *const hdr[] = {"ID",       "STATE", "HW",
                                      "MODEL",    "AGENT", "BOOTS",
                                      "LAST OTA", "SEEN",  "GROUPS"};
    struct tmlctl_table *t = tmlctl_table_new(9, hdr);
    if (t == NULL) {
        cJSON_Delete(r);
        return tmlctl_fail(ctl, TMLCTL_EXIT_FAIL, NULL, "out of memory");
    }
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(r, "devices");
    const cJSON *d;
    int64_t now = (int64_t)time(NULL);
    size_t n = 0;
    cJSON_ArrayForEach(d, list)
    {
        char model[64], boots[16], seen[32], groups[128] = "", ota[64];
        const char *mname = tmlctl_jstr(d, "model", "");
        if (mname[0] != '\0')
            snprintf(model, sizeof(model), "%s v%.0f", mname,
                     tmlctl_jnum(d, "model_version", 0));
        else
            snprintf(model, sizeof(model), "-");
        snprintf(boots, sizeof(boots), "%.0f", tmlctl_jnum(d, "boot_count", 0));
        tmlctl_fmt_ago((int64_t)tmlctl_jnum(d, "last_seen", 0), now, seen,
                       sizeof(seen));
        const cJSON *g;
        cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(d, "groups"))
        {
            if (cJSON_IsString(g))
                snprintf(groups + strlen(groups),
                         sizeof(groups) - strlen(groups), "%s%s",
                         groups[0] ? "," : "", g->valuestring);
        }
        const cJSON *lo = cJSON_GetObjectItemCaseSensitive(d, "last_ota");
        const char *st = tmlctl_jstr(lo, "state", NULL);
        if (st != NULL && strcmp(st, "idle") != 0)
            snprintf(ota, sizeof(ota), "%s v%.0f%s%s", st,
                     tmlctl_jnum(lo, "version", 0),
                     strcmp(tmlctl_jstr(lo, "reason", "none"), "none") != 0
                         ? ": "
                         : "",
                     strcmp(tmlctl_jstr(lo, "reason", "none"), "none") != 0
                         ? tmlctl_jstr(lo, "reason", "")
                         : "");
        else
            snprintf(ota, sizeof(ota), "-");
        bool on = tmlctl_jbool(d, "online");
        const char *cells[] = {tmlctl_jstr(d, "id", "?"),
                               on ? "online" : "offline",
                               tmlctl_jstr(d, "hw", "-"),
                               model,
                               tmlctl_jstr(d, "agent_version", "-"),
                               boots,
                               ota,
                               seen,
                               groups[0] ? groups : "-"};
        tmlctl_table_add(t, cells);
        tmlctl_table_color(t, 1, on ? TMLCTL_C_GREEN : TMLCTL_C_DIM);
        n++;
    }
    tmlctl_table_print(ctl, t, stdout);
    tmlctl_table_free(t);
    double total = tmlctl_jnum(r, "total", (double)n);
    if ((double)n < total)
        printf("(%zu of %.0f shown; --offset/--limit page through)\n", n,
               total);
    cJSON_Delete(r);
    return TMLCTL_EXIT_OK;
}

TMLCTL_COMMAND("devices", "list devices (state, model, last OTA, groups)",
               cmd_devices)
