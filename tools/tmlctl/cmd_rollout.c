/*
 * cmd_rollout.c: `tmlctl rollout list | status ID | show ID | pause ID |
 * resume ID | abort ID`, and the --watch view shared with `tmlctl deploy`.
 *
 * --watch polls rollout.show once a second. On a terminal it redraws one
 * progress bar per wave with the counts per state; piped, it prints a plain
 * line whenever something changed. It ends when the rollout is done (exit
 * 0), paused or aborted (exit 4, the reason printed).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tmlctl.h"

#define WATCH_MAX_S (7 * 86400)

void tmlctl_rollout_print(const struct tmlctl *ctl, const cJSON *r,
                          bool with_devices);
int tmlctl_rollout_watch(const struct tmlctl *ctl, uint32_t id);

static double
num(const cJSON *o, const char *k)
{
    return cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, k));
}

static const char *
str(const cJSON *o, const char *k)
{
    const char *s =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));
    return s != NULL ? s : "";
}

static int
count(const cJSON *counts, const char *state)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(counts, state);
    return cJSON_IsNumber(v) ? (int)v->valuedouble : 0;
}

/* "confirmed 12, downloading 3, failed 1" */
static void
counts_text(const cJSON *counts, char *buf, size_t cap)
{
    const cJSON *c;
    size_t n = 0;

    buf[0] = '\0';
    cJSON_ArrayForEach(c, counts)
    {
        int w = snprintf(buf + n, cap - n, "%s%s %d", n ? ", " : "",
                         c->string, (int)c->valuedouble);
        if (w < 0 || (size_t)w >= cap - n)
            break;
        n += (size_t)w;
    }
}

static enum tmlctl_color
state_color(const char *s)
{
    if (strcmp(s, "done") == 0 || strcmp(s, "passed") == 0 ||
        strcmp(s, "confirmed") == 0)
        return TMLCTL_C_GREEN;
    if (strcmp(s, "paused") == 0 || strcmp(s, "aborted") == 0 ||
        strcmp(s, "failed") == 0 || strcmp(s, "reverted") == 0)
        return TMLCTL_C_RED;
    return TMLCTL_C_NONE;
}

void
tmlctl_rollout_print(const struct tmlctl *ctl, const cJSON *r,
                     bool with_devices)
{
    const cJSON *w, *d;
    char buf[512];

    printf("Rollout %d: %s v%d to %s%s: %s%s%s\n", (int)num(r, "id"),
           str(r, "model"), (int)num(r, "version"),
           str(r, "group")[0] ? "group " : "device list",
           str(r, "group"), tmlctl_color(ctl, state_color(str(r, "state"))),
           str(r, "state"), tmlctl_reset(ctl));
    if (str(r, "reason")[0] != '\0')
        printf("  reason: %s\n", str(r, "reason"));
    counts_text(cJSON_GetObjectItemCaseSensitive(r, "counts"), buf,
                sizeof(buf));
    printf("  devices: %s\n", buf[0] ? buf : "-");
    if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(r, "bytes_sent")))
        printf("  sent: %.0f bytes\n", num(r, "bytes_sent"));
    cJSON_ArrayForEach(w, cJSON_GetObjectItemCaseSensitive(r, "waves"))
    {
        counts_text(cJSON_GetObjectItemCaseSensitive(w, "counts"), buf,
                    sizeof(buf));
        printf("  wave %d (%d%%, %d devices): %s%s%s%s%s\n",
               (int)num(w, "wave"), (int)num(w, "pct"),
               (int)num(w, "devices"),
               tmlctl_color(ctl, state_color(str(w, "state"))),
               str(w, "state"), tmlctl_reset(ctl), buf[0] ? ": " : "", buf);
        if (str(w, "gate_reason")[0] != '\0')
            printf("    gate: %s\n", str(w, "gate_reason"));
    }
    if (!with_devices)
        return;
    const char *hdr[] = {"DEVICE", "WAVE", "STATE", "REASON", "OFFSET",
                         "ATTEMPTS"};
    struct tmlctl_table *t = tmlctl_table_new(6, hdr);
    cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(r, "device_states"))
    {
        char wave[16], off[24], att[16];
        snprintf(wave, sizeof(wave), "%d", (int)num(d, "wave"));
        snprintf(off, sizeof(off), "%.0f", num(d, "offset"));
        snprintf(att, sizeof(att), "%d", (int)num(d, "attempts"));
        const char *cells[] = {str(d, "id"), wave, str(d, "state"),
                               strcmp(str(d, "reason"), "none") == 0
                                   ? ""
                                   : str(d, "reason"),
                               off, att};
        if (t != NULL && tmlctl_table_add(t, cells))
            tmlctl_table_color(t, 2, state_color(str(d, "state")));
    }
    if (t != NULL) {
        tmlctl_table_print(ctl, t, stdout);
        tmlctl_table_free(t);
    }
}

static void
bar(char *out, size_t width, int done, int total)
{
    size_t fill = total > 0 ? (size_t)done * width / (size_t)total : 0;

    for (size_t i = 0; i < width; i++)
        out[i] = i < fill ? '#' : '.';
    out[width] = '\0';
}

int
tmlctl_rollout_watch(const struct tmlctl *ctl, uint32_t id)
{
    bool tty = isatty(STDOUT_FILENO) && !ctl->json;
    char last[2048] = "";
    int lines = 0;
    time_t start = time(NULL);

    /* Bounded: a week of polling at most. */
    while (time(NULL) - start < WATCH_MAX_S) {
        cJSON *args = cJSON_CreateObject(), *res = NULL;
        cJSON_AddNumberToObject(args, "id", id);
        int rc = tmlctl_call(ctl, "rollout.show", args, &res);
        if (rc != TMLCTL_EXIT_OK)
            return rc;
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(res, "rollout");
        const char *state = str(r, "state");
        bool end = strcmp(state, "done") == 0 ||
                   strcmp(state, "paused") == 0 ||
                   strcmp(state, "aborted") == 0;
        char now[2048];
        size_t n = 0;
        const cJSON *w;
        if (tty && lines > 0)
            printf("\033[%dA\033[J", lines);
        lines = 0;
        n += (size_t)snprintf(now + n, sizeof(now) - n, "rollout %u: %s", id,
                              state);
        if (tty)
            printf("Rollout %u: %s%s%s\n", id,
                   tmlctl_color(ctl, state_color(state)), state,
                   tmlctl_reset(ctl)),
                lines++;
        cJSON_ArrayForEach(w, cJSON_GetObjectItemCaseSensitive(r, "waves"))
        {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(w, "counts");
            int total = (int)num(w, "devices");
            int ok = count(c, "confirmed");
            int bad = count(c, "failed") + count(c, "reverted");
            char b[41], cs[256];
            counts_text(c, cs, sizeof(cs));
            if (n < sizeof(now))
                n += (size_t)snprintf(now + n, sizeof(now) - n,
                                      "; wave %d %s %d/%d ok %d bad",
                                      (int)num(w, "wave"), str(w, "state"),
                                      ok, total, bad);
            if (tty) {
                bar(b, 30, ok + bad, total);
                printf("  wave %d %3d%% [%s] %s%-7s%s %s\n",
                       (int)num(w, "wave"), (int)num(w, "pct"), b,
                       tmlctl_color(ctl, state_color(str(w, "state"))),
                       str(w, "state"), tmlctl_reset(ctl), cs);
                lines++;
            }
        }
        if (!tty && strcmp(now, last) != 0 && !ctl->json) {
            printf("%s\n", now);
            fflush(stdout);
        }
        snprintf(last, sizeof(last), "%s", now);
        fflush(stdout);
        if (end) {
            if (ctl->json)
                tmlctl_json_emit(cJSON_Duplicate(r, true));
            else {
                if (str(r, "reason")[0] != '\0')
                    printf("%s: %s\n", state, str(r, "reason"));
                if (!tty)
                    tmlctl_rollout_print(ctl, r, false);
            }
            rc = strcmp(state, "done") == 0 ? TMLCTL_EXIT_OK
                                            : TMLCTL_EXIT_CONFLICT;
            cJSON_Delete(res);
            return rc;
        }
        cJSON_Delete(res);
        usleep(1000000);
    }
    return TMLCTL_EXIT_UNAVAILABLE;
}

static int
list(struct tmlctl *ctl)
{
    cJSON *res = NULL;
    const cJSON *r;
    int rc = tmlctl_call(ctl, "rollout.list", NULL, &res);

    if (rc != TMLCTL_EXIT_OK)
        return rc;
    if (ctl->json)
        return tmlctl_json_emit(res);
    const char *hdr[] = {"ID", "MODEL", "VERSION", "TARGET", "STATE", "WAVE",
                         "REASON"};
    struct tmlctl_table *t = tmlctl_table_new(7, hdr);
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(res, "rollouts"))
    {
        char id[16], ver[16], wave[16];
        snprintf(id, sizeof(id), "%d", (int)num(r, "id"));
        snprintf(ver, sizeof(ver), "%d", (int)num(r, "version"));
        snprintf(wave, sizeof(wave), "%d", (int)num(r, "wave"));
        const char *cells[] = {id,
                               str(r, "model"),
                               ver,
                               str(r, "group")[0] ? str(r, "group")
                                                  : "(devices)",
                               str(r, "state"),
                               wave,
                               str(r, "reason")};
        if (t != NULL && tmlctl_table_add(t, cells))
            tmlctl_table_color(t, 4, state_color(str(r, "state")));
    }
    if (t != NULL) {
        tmlctl_table_print(ctl, t, stdout);
        tmlctl_table_free(t);
    }
    cJSON_Delete(res);
    return TMLCTL_EXIT_OK;
}

static int
cmd_rollout(struct tmlctl *ctl, int argc, char **argv)
{
    bool devices = false, watch = false;
    const char *reason = NULL;
    uint32_t limit = 1000;
    struct tmlctl_args a;
    uint32_t id = 0;
    int rc;
    const struct tmlctl_opt opts[] = {
        {"devices", 0, TMLCTL_OPT_FLAG, &devices, NULL,
         "status: list every device's state", false},
        {"limit", 0, TMLCTL_OPT_U32, &limit, "N", "devices listed (1000)",
         false},
        {"watch", 'w', TMLCTL_OPT_FLAG, &watch, NULL,
         "status: follow until done or paused", false},
        {"reason", 0, TMLCTL_OPT_STR, &reason, "TEXT",
         "pause: why (shown in status)", false},
        {0},
    };

    if (!tmlctl_parse(ctl, "rollout list | status ID | pause ID | resume ID "
                           "| abort ID",
                      opts, argc, argv, &a, &rc))
        return rc;
    if (a.n_pos < 1)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, "tmlctl rollout list",
                           "which action?");
    if (strcmp(a.pos[0], "list") == 0)
        return list(ctl);
    if (a.n_pos != 2 || !tmlctl_parse_u32(a.pos[1], &id) || id == 0)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, "tmlctl rollout status 3",
                           "%s needs a rollout id", a.pos[0]);
    if (strcmp(a.pos[0], "status") == 0 || strcmp(a.pos[0], "show") == 0) {
        if (watch)
            return tmlctl_rollout_watch(ctl, id);
        cJSON *args = cJSON_CreateObject(), *res = NULL;
        cJSON_AddNumberToObject(args, "id", id);
        if (devices) {
            cJSON_AddBoolToObject(args, "devices", true);
            cJSON_AddNumberToObject(args, "limit", limit);
        }
        rc = tmlctl_call(ctl, "rollout.show", args, &res);
        if (rc != TMLCTL_EXIT_OK)
            return rc;
        if (ctl->json)
            return tmlctl_json_emit(res);
        tmlctl_rollout_print(
            ctl, cJSON_GetObjectItemCaseSensitive(res, "rollout"), devices);
        cJSON_Delete(res);
        return TMLCTL_EXIT_OK;
    }
    const char *verb = strcmp(a.pos[0], "pause") == 0    ? "rollout.pause"
                       : strcmp(a.pos[0], "resume") == 0 ? "rollout.resume"
                       : strcmp(a.pos[0], "abort") == 0  ? "rollout.abort"
                                                         : NULL;
    if (verb == NULL)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "list, status, pause, resume or abort",
                           "unknown action %s", a.pos[0]);
    cJSON *args = cJSON_CreateObject(), *res = NULL;
    cJSON_AddNumberToObject(args, "id", id);
    if (reason != NULL)
        cJSON_AddStringToObject(args, "reason", reason);
    rc = tmlctl_call(ctl, verb, args, &res);
    if (rc != TMLCTL_EXIT_OK)
        return rc;
    if (ctl->json)
        return tmlctl_json_emit(res);
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(res, "rollout");
    printf("Rollout %u %s%s\n", id, str(r, "state"),
           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(res, "changed"))
               ? ""
               : " (unchanged)");
    cJSON_Delete(res);
    return TMLCTL_EXIT_OK;
}

TMLCTL_COMMAND("rollout", "list, follow, pause, resume or abort rollouts",
               cmd_rollout)
