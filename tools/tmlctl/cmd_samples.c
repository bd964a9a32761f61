/*
 * cmd_samples.c: `tmlctl samples list|export`: captured inputs stored by
 * tmld (verbs samples.list, samples.get). export writes, per sample,
 * OUT/<device>/<sample_id>.bin (the input bytes) and .json (its metadata):
 * the start of a retraining data set.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <mbedtls/base64.h>

#include "tmlctl.h"

#define MAX_SAMPLE_BYTES (16u * 1024u * 1024u)

static cJSON *
list_args(const char *device, const char *reason, uint32_t limit,
          uint32_t offset)
{
    cJSON *args = cJSON_CreateObject();
    if (device != NULL)
        cJSON_AddStringToObject(args, "device", device);
    if (reason != NULL)
        cJSON_AddStringToObject(args, "reason", reason);
    cJSON_AddNumberToObject(args, "limit", limit);
    cJSON_AddNumberToObject(args, "offset", offset);
    return args;
}

static bool
reason_ok(const char *r)
{
    return r == NULL || strcmp(r, "flagged") == 0 ||
           strcmp(r, "low_conf") == 0 || strcmp(r, "audit") == 0;
}

/* Device ids are [A-Za-z0-9._-] (tmld validated them); refuse anything
 * else before using one as a directory name. */
static bool
safe_name(const char *s)
{
    if (s[0] == '\0' || strcmp(s, ".") == 0 || strcmp(s, "..") == 0 ||
        strlen(s) > 64)
        return false;
    for (; *s != '\0'; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' || *s == '-'))
            return false;
    return true;
}

static int
export_one(struct tmlctl *ctl, struct tmlctl_conn *c, const cJSON *s,
           const char *out)
{
    const char *dev = tmlctl_jstr(s, "device", "");
    double id = tmlctl_jnum(s, "sample_id", -1);
    if (!safe_name(dev) || id < 0)
        return tmlctl_fail(ctl, TMLCTL_EXIT_PROTOCOL, NULL,
                           "tmld listed a sample with a bad device id");
    cJSON *args = cJSON_CreateObject();
    cJSON_AddStringToObject(args, "device", dev);
    cJSON_AddNumberToObject(args, "sample_id", id);
    cJSON *r = NULL;
    int rc = tmlctl_request(c, "samples.get", args, &r);
    if (rc != TMLCTL_EXIT_OK)
        return rc;
    const char *b64 = tmlctl_jstr(r, "data_b64", NULL);
    if (b64 == NULL) {
        cJSON_Delete(r);
        return tmlctl_fail(ctl, TMLCTL_EXIT_PROTOCOL, NULL,
                           "samples.get: no data_b64");
    }
    size_t cap = strlen(b64) / 4 * 3 + 3, n = 0;
    unsigned char *data = cap <= MAX_SAMPLE_BYTES ? malloc(cap) : NULL;
    if (data == NULL ||
        mbedtls_base64_decode(data, cap, &n, (const unsigned char *)b64,
                              strlen(b64)) != 0) {
        free(data);
        cJSON_Delete(r);
        return tmlctl_fail(ctl, TMLCTL_EXIT_PROTOCOL, NULL,
                           "samples.get: bad base64");
    }
    cJSON_DeleteItemFromObjectCaseSensitive(r, "data_b64");
    char dir[4200], path[4300];
    snprintf(dir, sizeof(dir), "%s/%s", out, dev);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        free(data);
        cJSON_Delete(r);
        return tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s: %s", dir,
                           strerror(errno));
    }
    rc = TMLCTL_EXIT_OK;
    snprintf(path, sizeof(path), "%s/%.0f.bin", dir, id);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, n, f) != n || fclose(f) != 0)
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s: %s", path,
                         strerror(errno));
    char *meta = rc == TMLCTL_EXIT_OK ? cJSON_Print(r) : NULL;
    snprintf(path, sizeof(path), "%s/%.0f.json", dir, id);
    if (meta != NULL) {
        f = fopen(path, "w");
        if (f == NULL || fputs(meta, f) < 0 || fputc('\n', f) < 0 ||
            fclose(f) != 0)
            rc = tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s: %s", path,
                             strerror(errno));
        cJSON_free(meta);
    }
    free(data);
    cJSON_Delete(r);
    return rc;
}

static int
samples_cmd(struct tmlctl *ctl, int argc, char **argv, bool export)
{
    const char *device = NULL, *reason = NULL, *out = NULL;
    uint32_t limit = export ? 100 : 50, offset = 0;
    const struct tmlctl_opt opts[] = {
        {"device", 'd', TMLCTL_OPT_STR, &device, "ID", "only this device",
         false},
        {"reason", 'r', TMLCTL_OPT_STR, &reason, "R",
         "flagged, low_conf or audit", false},
        {"limit", 'n', TMLCTL_OPT_U32, &limit, "N", "at most N samples", false},
        {"offset", 0, TMLCTL_OPT_U32, &offset, "N", "skip N", false},
        {"out", 'o', TMLCTL_OPT_STR, &out, "DIR",
         "export: directory to write to", export},
        {0},
    };
    struct tmlctl_args a;
    int rc;
    if (!tmlctl_parse(ctl,
                      export ? "samples export --out DIR [--device ID] "
                               "[--reason R] [--limit N]"
                             : "samples list [--device ID] [--reason R]",
                      opts, argc, argv, &a, &rc))
        return rc;
    if (a.n_pos != 0 || !reason_ok(reason) || limit == 0 || limit > 10000)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "--reason flagged|low_conf|audit, --limit 1..10000",
                           "bad arguments");
    struct tmlctl_conn *c = NULL;
    rc = tmlctl_connect(ctl, &c);
    if (rc != TMLCTL_EXIT_OK)
        return rc;
    cJSON *r = NULL;
    rc = tmlctl_request(c, "samples.list",
                        list_args(device, reason, limit, offset), &r);
    if (rc != TMLCTL_EXIT_OK) {
        tmlctl_close(c);
        return rc;
    }
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(r, "samples");
    if (export) {
        if (mkdir(out, 0755) != 0 && errno != EEXIST) {
            rc = tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s: %s", out,
                             strerror(errno));
        } else {
            size_t n = 0;
            const cJSON *s;
            cJSON_ArrayForEach(s, list)
            {
                rc = export_one(ctl, c, s, out);
                if (rc != TMLCTL_EXIT_OK)
                    break;
                n++;
            }
            if (rc == TMLCTL_EXIT_OK)
                tmlctl_info(ctl, "exported %zu samples to %s", n, out);
        }
    } else if (ctl->json) {
        rc = tmlctl_json_emit(r);
        r = NULL;
    } else {
        static const char *const hdr[] = {"DEVICE",   "ID",    "REASON",
                                          "MODEL V",  "PRED",  "CONF",
                                          "EXPECTED", "BYTES", "RECEIVED"};
        struct tmlctl_table *t = tmlctl_table_new(9, hdr);
        const cJSON *s;
        int64_t now = (int64_t)time(NULL);
        cJSON_ArrayForEach(s, list)
        {
            char c1[24], c3[24], c4[24], c5[24], c6[24], c7[32], c8[32];
            snprintf(c1, sizeof(c1), "%.0f", tmlctl_jnum(s, "sample_id", 0));
            snprintf(c3, sizeof(c3), "%.0f",
                     tmlctl_jnum(s, "model_version", 0));
            snprintf(c4, sizeof(c4), "%.0f", tmlctl_jnum(s, "predicted", 0));
            snprintf(c5, sizeof(c5), "%.1f%%",
                     tmlctl_jnum(s, "confidence_bp", 0) / 100.0);
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(s, "expected");
            if (cJSON_IsNumber(e))
                snprintf(c6, sizeof(c6), "%.0f", e->valuedouble);
            else
                snprintf(c6, sizeof(c6), "-");
            tmlctl_fmt_bytes(tmlctl_jnum(s, "total_len", 0), c7, sizeof(c7));
            tmlctl_fmt_ago((int64_t)tmlctl_jnum(s, "received_at", 0), now, c8,
                           sizeof(c8));
            const char *cells[] = {tmlctl_jstr(s, "device", "?"),
                                   c1,
                                   tmlctl_jstr(s, "reason", "?"),
                                   c3,
                                   c4,
                                   c5,
                                   c6,
                                   c7,
                                   c8};
            if (t != NULL)
                tmlctl_table_add(t, cells);
        }
        if (t != NULL)
            tmlctl_table_print(ctl, t, stdout);
        tmlctl_table_free(t);
    }
    cJSON_Delete(r);
    tmlctl_close(c);
    return rc;
}

static int
cmd_samples(struct tmlctl *ctl, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "list") == 0)
        return samples_cmd(ctl, argc - 1, argv + 1, false);
    if (argc >= 2 && strcmp(argv[1], "export") == 0)
        return samples_cmd(ctl, argc - 1, argv + 1, true);
    if (argc >= 2 &&
        (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: tmlctl samples list [--device ID] [--reason R] "
               "[--limit N]\n       tmlctl samples export --out DIR "
               "[--device ID] [--reason R] [--limit N]\n");
        return TMLCTL_EXIT_OK;
    }
    return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, "tmlctl samples --help",
                       "samples: expected list or export");
}

TMLCTL_COMMAND("samples", "list or export captured inputs", cmd_samples)
