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
#define EXPORT_PAGE 500u

/* The filters of samples list/export, as samples.list args. */
struct filters {
    const char *device, *reason;
    bool has_label, has_model;
    uint32_t label, model_version;
    char model[33];
    uint64_t since_s; /* 0: no --since */
};

static cJSON *
list_args(const struct filters *f, uint32_t limit, uint32_t offset)
{
    cJSON *args = cJSON_CreateObject();
    if (f->device != NULL)
        cJSON_AddStringToObject(args, "device", f->device);
    if (f->reason != NULL)
        cJSON_AddStringToObject(args, "reason", f->reason);
    if (f->has_label)
        cJSON_AddNumberToObject(args, "label", f->label);
    if (f->has_model) {
        cJSON_AddStringToObject(args, "model", f->model);
        cJSON_AddNumberToObject(args, "model_version", f->model_version);
    }
    if (f->since_s != 0)
        cJSON_AddNumberToObject(args, "since_s", (double)f->since_s);
    cJSON_AddNumberToObject(args, "limit", limit);
    cJSON_AddNumberToObject(args, "offset", offset);
    return args;
}

/* The reason as tmld names it ("low-confidence", the issue's spelling,
 * is low_conf), or NULL if unknown. */
static const char *
reason_norm(const char *r)
{
    if (strcmp(r, "low-confidence") == 0 || strcmp(r, "low-conf") == 0)
        return "low_conf";
    if (strcmp(r, "flagged") == 0 || strcmp(r, "low_conf") == 0 ||
        strcmp(r, "audit") == 0)
        return r;
    return NULL;
}

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

/* Shape of s into dims; returns the number of dimensions (0 if none or
 * more than 4). */
static int
sample_shape(const cJSON *s, uint32_t dims[4])
{
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(s, "shape"))
    {
        if (n == 4 || !cJSON_IsNumber(e) || e->valuedouble < 1 ||
            e->valuedouble > 1e8)
            return 0;
        dims[n++] = (uint32_t)e->valuedouble;
    }
    return n;
}

static void
put_le(uint8_t *p, uint32_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Writes the "open directly" file of one sample into path (without
 * extension) and returns its extension, or NULL (file left out: the
 * bytes do not match the metadata). */
static const char *
write_view(const char *path_noext, const cJSON *s, const uint8_t *data,
           size_t n)
{
    const char *dtype = tmlctl_jstr(s, "dtype", "");
    uint32_t dims[4];
    int nd = sample_shape(s, dims);
    double rate = tmlctl_jnum(s, "rate_hz", 0);
    static const char *const dts[] = {"u8", "i8", "i16", "i32", "f32"};
    static const size_t sizes[] = {1, 1, 2, 4, 4};
    size_t esz = 0;
    for (size_t i = 0; i < 5; i++)
        if (strcmp(dtype, dts[i]) == 0)
            esz = sizes[i];
    uint64_t count = nd > 0 ? 1 : 0;
    for (int i = 0; i < nd; i++)
        count *= dims[i];
    if (esz == 0 || count == 0 || count * esz != n)
        return NULL;
    char path[4400];
    const char *ext;
    FILE *f;
    if (esz == 2 && nd == 1 && rate >= 1 && rate <= 1e6) {
        ext = "wav";
        snprintf(path, sizeof(path), "%s.%s", path_noext, ext);
        uint8_t h[44];
        memcpy(h, "RIFF", 4);
        put_le(h + 4, (uint32_t)(36 + n), 4);
        memcpy(h + 8, "WAVEfmt ", 8);
        put_le(h + 16, 16, 4);
        put_le(h + 20, 1, 2); /* PCM */
        put_le(h + 22, 1, 2); /* mono */
        put_le(h + 24, (uint32_t)rate, 4);
        put_le(h + 28, (uint32_t)rate * 2, 4);
        put_le(h + 32, 2, 2);
        put_le(h + 34, 16, 2);
        memcpy(h + 36, "data", 4);
        put_le(h + 40, (uint32_t)n, 4);
        f = fopen(path, "wb");
        if (f == NULL)
            return NULL;
        bool ok = fwrite(h, 1, 44, f) == 44 && fwrite(data, 1, n, f) == n;
        return fclose(f) == 0 && ok ? ext : NULL;
    }
    if (esz == 1 && (nd == 2 || (nd == 3 && dims[2] == 1))) {
        ext = "pgm";
        snprintf(path, sizeof(path), "%s.%s", path_noext, ext);
        f = fopen(path, "wb");
        if (f == NULL)
            return NULL;
        bool ok = fprintf(f, "P5\n%u %u\n255\n", dims[1], dims[0]) > 0;
        bool is_i8 = strcmp(dtype, "i8") == 0;
        for (size_t i = 0; ok && i < n; i++)
            ok = fputc(is_i8 ? (uint8_t)(data[i] ^ 0x80) : data[i], f) != EOF;
        return fclose(f) == 0 && ok ? ext : NULL;
    }
    ext = "csv";
    snprintf(path, sizeof(path), "%s.%s", path_noext, ext);
    f = fopen(path, "w");
    if (f == NULL)
        return NULL;
    uint64_t ch = nd >= 2 ? count / dims[0] : 1;
    bool ok = true;
    for (uint64_t c = 0; ok && c < ch; c++)
        ok = fprintf(f, "%sch%llu", c ? "," : "", (unsigned long long)c) > 0;
    ok = ok && fputc('\n', f) != EOF;
    for (uint64_t i = 0; ok && i < count; i++) {
        const uint8_t *p = data + i * esz;
        uint32_t u = 0;
        for (size_t b = 0; b < esz; b++)
            u |= (uint32_t)p[b] << (8 * b);
        char v[48];
        if (strcmp(dtype, "f32") == 0) {
            float x;
            memcpy(&x, &u, sizeof(x));
            snprintf(v, sizeof(v), "%.9g", (double)x);
        } else if (esz == 1) {
            snprintf(v, sizeof(v), "%d", dtype[0] == 'u' ? (int)u
                                                          : (int)(int8_t)u);
        } else if (esz == 2) {
            snprintf(v, sizeof(v), "%d", (int)(int16_t)u);
        } else {
            snprintf(v, sizeof(v), "%ld", (long)(int32_t)u);
        }
        ok = fprintf(f, "%s%s", v, (i + 1) % ch == 0 ? "\n" : ",") > 0;
    }
    return fclose(f) == 0 && ok ? ext : NULL;
}

/* labels.csv and manifest.json of one export. */
struct export_index {
    FILE *labels;
    cJSON *manifest;
};

static void
csv_field(FILE *f, const char *s)
{
    bool q = strpbrk(s, ",\"\n") != NULL;
    if (!q) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static int
export_one(struct tmlctl *ctl, struct tmlctl_conn *c, const cJSON *s,
           const char *out, struct export_index *ix)
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
    char base[4300];
    snprintf(base, sizeof(base), "%s/%.0f", dir, id);
    const char *ext = rc == TMLCTL_EXIT_OK ? write_view(base, s, data, n)
                                           : NULL;
    char file[128], raw[128];
    snprintf(raw, sizeof(raw), "%s/%.0f.bin", dev, id);
    if (ext != NULL)
        snprintf(file, sizeof(file), "%s/%.0f.%s", dev, id, ext);
    else
        snprintf(file, sizeof(file), "%s", raw);
    if (rc == TMLCTL_EXIT_OK) {
        cJSON_AddStringToObject(r, "file", file);
        cJSON_AddStringToObject(r, "raw", raw);
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(s, "expected");
        char exp[24] = "", line[512];
        if (cJSON_IsNumber(e))
            snprintf(exp, sizeof(exp), "%.0f", e->valuedouble);
        csv_field(ix->labels, file);
        snprintf(line, sizeof(line),
                 ",%s,%.0f,%.0f,%.0f,%.4f,%s,%s,%.0f,%s\n", dev, id,
                 tmlctl_jnum(s, "model_version", 0),
                 tmlctl_jnum(s, "predicted", 0),
                 tmlctl_jnum(s, "confidence_bp", 0) / 10000.0, exp,
                 tmlctl_jstr(s, "reason", ""),
                 tmlctl_jnum(s, "received_at", 0),
                 tmlctl_jstr(s, "dtype", ""));
        fputs(line, ix->labels);
        cJSON *m = cJSON_Duplicate(s, true);
        if (m != NULL) {
            cJSON_AddStringToObject(m, "file", file);
            cJSON_AddStringToObject(m, "raw", raw);
            cJSON_AddItemToArray(ix->manifest, m);
        }
    }
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
    const char *device = NULL, *reason = NULL, *out = NULL, *label = NULL;
    const char *model = NULL, *since = NULL;
    uint32_t limit = export ? 100 : 50, offset = 0;
    const struct tmlctl_opt opts[] = {
        {"device", 'd', TMLCTL_OPT_STR, &device, "ID", "only this device",
         false},
        {"reason", 'r', TMLCTL_OPT_STR, &reason, "R",
         "flagged, low_conf (low-confidence) or audit", false},
        {"label", 'l', TMLCTL_OPT_STR, &label, "L",
         "class index: expected if known, else predicted", false},
        {"model", 'm', TMLCTL_OPT_STR, &model, "NAME@VER",
         "only samples taken by this model version", false},
        {"since", 's', TMLCTL_OPT_STR, &since, "DUR",
         "only samples received in the last DUR (90s, 15m, 24h, 7d)", false},
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
                               "[--reason R] [--label L] [--model NAME@VER] "
                               "[--since DUR] [--limit N]"
                             : "samples list [--device ID] [--reason R] "
                               "[--label L] [--model NAME@VER] [--since DUR]",
                      opts, argc, argv, &a, &rc))
        return rc;
    struct filters fl = {.device = device};
    if (a.n_pos != 0 || limit == 0 || limit > 10000 ||
        (reason != NULL && (fl.reason = reason_norm(reason)) == NULL))
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "--reason flagged|low_conf|audit, --limit 1..10000",
                           "bad arguments");
    if (label != NULL && !(fl.has_label = tmlctl_parse_u32(label, &fl.label)))
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "--label takes a class index, e.g. --label 3",
                           "bad --label '%s'", label);
    if (model != NULL &&
        !(fl.has_model = parse_model(model, fl.model, sizeof(fl.model),
                                     &fl.model_version)))
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "--model NAME@VER, e.g. --model kws@12",
                           "bad --model '%s'", model);
    if (since != NULL && (!tmlctl_parse_duration(since, &fl.since_s) ||
                          fl.since_s == 0 ||
                          fl.since_s > 100ull * 365 * 86400))
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "--since takes a duration: 90s, 15m, 24h, 7d",
                           "bad --since '%s'", since);
    struct tmlctl_conn *c = NULL;
    rc = tmlctl_connect(ctl, &c);
    if (rc != TMLCTL_EXIT_OK)
        return rc;
    cJSON *r = NULL;
    /* export pages through the list (a 10,000-sample answer would exceed
     * the response size limit). */
    uint32_t page = export && limit > EXPORT_PAGE ? EXPORT_PAGE : limit;
    rc = tmlctl_request(c, "samples.list",
                        list_args(&fl, page, offset), &r);
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
            char lp[4200], mp[4200];
            snprintf(lp, sizeof(lp), "%s/labels.csv", out);
            snprintf(mp, sizeof(mp), "%s/manifest.json", out);
            struct export_index ix = {fopen(lp, "w"), cJSON_CreateArray()};
            if (ix.labels == NULL || ix.manifest == NULL)
                rc = tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s: %s", lp,
                                 strerror(errno));
            else
                fputs("file,device,sample_id,model_version,predicted,"
                      "confidence,expected,reason,received_at,dtype\n",
                      ix.labels);
            for (;;) {
                int got = 0;
                cJSON_ArrayForEach(s, list)
                {
                    if (rc != TMLCTL_EXIT_OK || n >= limit)
                        break;
                    rc = export_one(ctl, c, s, out, &ix);
                    if (rc == TMLCTL_EXIT_OK)
                        n++;
                    got++;
                }
                if (rc != TMLCTL_EXIT_OK || n >= limit ||
                    got < (int)page)
                    break;
                cJSON_Delete(r);
                r = NULL;
                uint32_t want = limit - (uint32_t)n;
                page = want > EXPORT_PAGE ? EXPORT_PAGE : want;
                rc = tmlctl_request(c, "samples.list",
                                    list_args(&fl, page,
                                              offset + (uint32_t)n),
                                    &r);
                list = cJSON_GetObjectItemCaseSensitive(r, "samples");
            }
            if (ix.labels != NULL && fclose(ix.labels) != 0 &&
                rc == TMLCTL_EXIT_OK)
                rc = tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s: %s", lp,
                                 strerror(errno));
            if (rc == TMLCTL_EXIT_OK) {
                cJSON *m = cJSON_CreateObject();
                cJSON_AddNumberToObject(m, "count", (double)n);
                cJSON_AddItemToObject(m, "samples", ix.manifest);
                ix.manifest = NULL;
                char *txt = cJSON_Print(m);
                cJSON_Delete(m);
                FILE *f = txt ? fopen(mp, "w") : NULL;
                if (f == NULL || fputs(txt, f) < 0 || fputc('\n', f) < 0 ||
                    fclose(f) != 0)
                    rc = tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s: %s", mp,
                                     strerror(errno));
                cJSON_free(txt);
            }
            cJSON_Delete(ix.manifest);
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
               "[--label L] [--model NAME@VER] [--since DUR] [--limit N]\n"
               "       tmlctl samples export --out DIR [--device ID] "
               "[--reason R] [--label L] [--model NAME@VER] [--since DUR] "
               "[--limit N]\n");
        return TMLCTL_EXIT_OK;
    }
    return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, "tmlctl samples --help",
                       "samples: expected list or export");
}

TMLCTL_COMMAND("samples", "list or export captured inputs", cmd_samples)
