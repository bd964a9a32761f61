/*
 * cmd_group.c: `tmlctl group create|delete NAME`, `tmlctl group add|remove
 * NAME DEVICE...` and `tmlctl group list`: operator groups (control verbs
 * group.*, daemon/query_group.c). Groups the firmware declares are listed
 * too (SOURCE fw) but are not the operator's to delete.
 */
#include <string.h>

#include "tmlctl.h"

static int
group_list(struct tmlctl *ctl, int argc, char **argv)
{
    struct tmlctl_args a;
    int rc;
    if (!tmlctl_parse(ctl, "group list", NULL, argc, argv, &a, &rc))
        return rc;
    if (a.n_pos != 0)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, "tmlctl group list",
                           "group list takes no arguments");
    cJSON *r = NULL;
    rc = tmlctl_call(ctl, "group.list", NULL, &r);
    if (rc != TMLCTL_EXIT_OK)
        return rc;
    if (ctl->json)
        return tmlctl_json_emit(r ? r : cJSON_CreateObject());
    static const char *const hdr[] = {"GROUP", "SOURCE", "DEVICES",
                                      "ONLINE"};
    struct tmlctl_table *t = tmlctl_table_new(4, hdr);
    const cJSON *g;
    cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(r, "groups"))
    {
        char n[16], on[16];
        snprintf(n, sizeof(n), "%.0f", tmlctl_jnum(g, "devices", 0));
        snprintf(on, sizeof(on), "%.0f", tmlctl_jnum(g, "online", 0));
        const char *cells[] = {tmlctl_jstr(g, "name", "?"),
                               tmlctl_jstr(g, "source", "?"), n, on};
        if (t != NULL)
            tmlctl_table_add(t, cells);
    }
    if (t != NULL)
        tmlctl_table_print(ctl, t, stdout);
    tmlctl_table_free(t);
    cJSON_Delete(r);
    return t != NULL ? TMLCTL_EXIT_OK : TMLCTL_EXIT_FAIL;
}

/* create/delete NAME, add/remove NAME DEVICE... */
static int
group_write(struct tmlctl *ctl, const char *sub, int argc, char **argv)
{
    bool members = strcmp(sub, "add") == 0 || strcmp(sub, "remove") == 0;
    char usage[64];
    snprintf(usage, sizeof(usage), "group %s NAME%s", sub,
             members ? " DEVICE..." : "");
    struct tmlctl_args a;
    int rc;
    if (!tmlctl_parse(ctl, usage, NULL, argc, argv, &a, &rc))
        return rc;
    if (members ? a.n_pos < 2 : a.n_pos != 1)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL, "usage: tmlctl %s",
                           usage);
    cJSON *args = cJSON_CreateObject();
    cJSON_AddStringToObject(args, "name", a.pos[0]);
    if (members) {
        cJSON *d = cJSON_AddArrayToObject(args, "devices");
        for (int i = 1; i < a.n_pos; i++)
            cJSON_AddItemToArray(d, cJSON_CreateString(a.pos[i]));
    }
    char verb[32];
    snprintf(verb, sizeof(verb), "group.%s", sub);
    cJSON *r = NULL;
    rc = tmlctl_call(ctl, verb, args, &r);
    if (rc != TMLCTL_EXIT_OK)
        return rc;
    if (ctl->json)
        return tmlctl_json_emit(r ? r : cJSON_CreateObject());
    double n = tmlctl_jnum(r, "changed", 0);
    if (strcmp(sub, "create") == 0)
        printf("group %s created\n", a.pos[0]);
    else if (strcmp(sub, "delete") == 0)
        printf("group %s deleted (%.0f memberships removed)\n", a.pos[0],
               n);
    else
        printf("group %s: %.0f device%s %s\n", a.pos[0], n, n == 1 ? "" : "s",
               strcmp(sub, "add") == 0 ? "added" : "removed");
    cJSON_Delete(r);
    return TMLCTL_EXIT_OK;
}

static int
cmd_group(struct tmlctl *ctl, int argc, char **argv)
{
    const char *sub = argc >= 2 ? argv[1] : "";
    if (strcmp(sub, "list") == 0)
        return group_list(ctl, argc - 1, argv + 1);
    if (strcmp(sub, "create") == 0 || strcmp(sub, "delete") == 0 ||
        strcmp(sub, "add") == 0 || strcmp(sub, "remove") == 0)
        return group_write(ctl, sub, argc - 1, argv + 1);
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        printf("usage: tmlctl group create NAME\n"
               "       tmlctl group delete NAME\n"
               "       tmlctl group add NAME DEVICE...\n"
               "       tmlctl group remove NAME DEVICE...\n"
               "       tmlctl group list\n");
        return TMLCTL_EXIT_OK;
    }
    return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, "tmlctl group --help",
                       "group: expected create, delete, add, remove or list");
}

TMLCTL_COMMAND("group", "create/delete operator groups, add/remove members",
               cmd_group)
