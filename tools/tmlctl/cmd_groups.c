/*
 * cmd_groups.c: `tmlctl groups`: groups declared by the devices' firmware,
 * with device and online counts (control verb "groups").
 */
#include "tmlctl.h"

static int
cmd_groups(struct tmlctl *ctl, int argc, char **argv)
{
    struct tmlctl_args a;
    int rc;
    if (!tmlctl_parse(ctl, "groups", NULL, argc, argv, &a, &rc))
        return rc;
    if (a.n_pos != 0)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL,
                           "groups takes no arguments");
    cJSON *r = NULL;
    rc = tmlctl_call(ctl, "groups", NULL, &r);
    if (rc != TMLCTL_EXIT_OK)
        return rc;
    if (ctl->json)
        return tmlctl_json_emit(r ? r : cJSON_CreateObject());
    static const char *const hdr[] = {"GROUP", "DEVICES", "ONLINE"};
    struct tmlctl_table *t = tmlctl_table_new(3, hdr);
    const cJSON *g;
    cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(r, "groups"))
    {
        char n[16], on[16];
        snprintf(n, sizeof(n), "%.0f", tmlctl_jnum(g, "devices", 0));
        snprintf(on, sizeof(on), "%.0f", tmlctl_jnum(g, "online", 0));
        const char *cells[] = {tmlctl_jstr(g, "name", "?"), n, on};
        if (t != NULL)
            tmlctl_table_add(t, cells);
    }
    if (t != NULL)
        tmlctl_table_print(ctl, t, stdout);
    tmlctl_table_free(t);
    cJSON_Delete(r);
    return t != NULL ? TMLCTL_EXIT_OK : TMLCTL_EXIT_FAIL;
}

TMLCTL_COMMAND("groups", "list device groups with counts", cmd_groups)
