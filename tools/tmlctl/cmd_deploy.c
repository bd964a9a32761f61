/*
 * cmd_deploy.c: `tmlctl deploy FILE|BUNDLE --group G [options]`: starts a
 * rollout (docs/ota.md).
 *
 * FILE is either a signed bundle (tmlctl sign) or a raw model, which is
 * signed here, on the operator's side, with --key (tmld never sees a
 * private key). The bundle is uploaded to tmld in pieces (artifact.upload,
 * artifact.commit: tmld verifies it against its trusted keys), then the
 * `deploy` verb starts the rollout, or with --dry-run prints the plan
 * (devices per wave, excluded devices and why, bytes, gates) and changes
 * nothing. --watch follows the rollout until it finishes or pauses.
 *
 * FILE may also be an https:// URL: the bundle is fetched with libcurl into
 * memory (TLS verified against the system CAs or --cacert, at most
 * TML_BUNDLE_MAX_FILE bytes, HTTP errors fatal) and then takes the same
 * path as a local bundle; tmld checks its signature as for any other.
 *
 * An automatic rollback needs the previous model signed with a version
 * above the new one (devices never go back in version): --rollback-bundle
 * gives such a bundle, or --rollback-from PREV.bin signs it here as
 * version + 1 with --key.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "tml/bundle.h"
#include "tmlctl.h"

#define UPLOAD_PIECE 36864u /* raw bytes per artifact.upload (base64 < 64 KiB) */
#define FETCH_CONNECT_S 15L /* https:// bundle: connect timeout */
#define FETCH_TOTAL_S 600L  /* https:// bundle: whole transfer */

void tmlctl_rollout_print(const struct tmlctl *ctl, const cJSON *r,
                          bool with_devices);
int tmlctl_rollout_watch(const struct tmlctl *ctl, uint32_t id);

static char *
b64_encode(const uint8_t *p, size_t n)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(4 * ((n + 2) / 3) + 1), *o = out;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        *o++ = tbl[(v >> 18) & 63];
        *o++ = tbl[(v >> 12) & 63];
        *o++ = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? tbl[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* Uploads and commits one bundle; on OK *artifact (65 bytes) is its id. */
static int
upload(const struct tmlctl *ctl, struct tmlctl_conn *c, const uint8_t *buf,
       size_t len, char artifact[65], cJSON **model)
{
    double upload_id = 0;
    int rc;

    for (size_t off = 0; off < len; off += UPLOAD_PIECE) {
        size_t n = len - off < UPLOAD_PIECE ? len - off : UPLOAD_PIECE;
        char *b64 = b64_encode(buf + off, n);
        cJSON *args = cJSON_CreateObject(), *res = NULL;
        if (b64 == NULL || args == NULL) {
            free(b64);
            cJSON_Delete(args);
            return tmlctl_fail(ctl, TMLCTL_EXIT_FAIL, NULL, "out of memory");
        }
        if (off == 0)
            cJSON_AddNumberToObject(args, "total", (double)len);
        else
            cJSON_AddNumberToObject(args, "upload", upload_id);
        cJSON_AddNumberToObject(args, "offset", (double)off);
        cJSON_AddStringToObject(args, "data", b64);
        free(b64);
        rc = tmlctl_request(c, "artifact.upload", args, &res);
        if (rc != TMLCTL_EXIT_OK)
            return rc;
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(res, "upload");
        if (!cJSON_IsNumber(u)) {
            cJSON_Delete(res);
            return tmlctl_fail(ctl, TMLCTL_EXIT_PROTOCOL, NULL,
                               "artifact.upload: no upload id");
        }
        upload_id = u->valuedouble;
        cJSON_Delete(res);
    }
    cJSON *args = cJSON_CreateObject(), *res = NULL;
    cJSON_AddNumberToObject(args, "upload", upload_id);
    rc = tmlctl_request(c, "artifact.commit", args, &res);
    if (rc != TMLCTL_EXIT_OK) {
        /* tmld refused it: bad signature, untrusted key, expired... */
        return rc == TMLCTL_EXIT_USAGE ? TMLCTL_EXIT_INVALID : rc;
    }
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(res, "artifact");
    if (!cJSON_IsString(a) || strlen(a->valuestring) != 64) {
        cJSON_Delete(res);
        return tmlctl_fail(ctl, TMLCTL_EXIT_PROTOCOL, NULL,
                           "artifact.commit: no artifact id");
    }
    memcpy(artifact, a->valuestring, 65);
    if (model != NULL)
        *model = res;
    else
        cJSON_Delete(res);
    return TMLCTL_EXIT_OK;
}

/* ---- https:// bundles ------------------------------------------------------
 */

struct fetch_buf {
    uint8_t *p;
    size_t len, cap;
    bool too_big, no_mem;
};

/* Appends a piece of the body; stops the transfer (returns 0) beyond the
 * cap, which also covers servers that send no Content-Length. */
static size_t
fetch_write(char *data, size_t size, size_t nmemb, void *ud)
{
    struct fetch_buf *b = ud;
    size_t n = size * nmemb; /* size is always 1 (libcurl docs) */

    if (n > TML_BUNDLE_MAX_FILE - b->len) {
        b->too_big = true;
        return 0;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap != 0 ? b->cap : 65536;
        while (cap < b->len + n)
            cap *= 2;
        if (cap > TML_BUNDLE_MAX_FILE)
            cap = TML_BUNDLE_MAX_FILE;
        uint8_t *p = realloc(b->p, cap);
        if (p == NULL) {
            b->no_mem = true;
            return 0;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return n;
}

static bool
is_url(const char *s)
{
    return strstr(s, "://") != NULL;
}

/* Downloads url into *out (malloc'ed). Exit codes: USAGE (not https),
 * INVALID (TLS peer not verified), IO (network, HTTP >= 400, over the
 * cap), FAIL (libcurl setup, memory). */
static int
fetch_url(const struct tmlctl *ctl, const char *url, const char *cacert,
          uint8_t **out, size_t *out_len)
{
    struct fetch_buf b = {0};
    char err[CURL_ERROR_SIZE] = "";
    long status = 0;
    int rc = TMLCTL_EXIT_OK;
    CURLcode cc;
    CURL *h;

    if (strncasecmp(url, "https://", 8) != 0)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "bundles are fetched over https:// only (TLS "
                           "verified); download it yourself otherwise",
                           "%s: refusing a non-https URL", url);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return tmlctl_fail(ctl, TMLCTL_EXIT_FAIL, NULL,
                           "libcurl initialisation failed");
    h = curl_easy_init();
    if (h == NULL) {
        curl_global_cleanup();
        return tmlctl_fail(ctl, TMLCTL_EXIT_FAIL, NULL,
                           "libcurl initialisation failed");
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (cacert != NULL)
        curl_easy_setopt(h, CURLOPT_CAINFO, cacert);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE,
                     (curl_off_t)TML_BUNDLE_MAX_FILE);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, FETCH_CONNECT_S);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, FETCH_TOTAL_S);
    curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, fetch_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "tmlctl/" TMLCTL_VERSION);
    tmlctl_info(ctl, "fetching %s", url);
    cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (cc == CURLE_OK && b.len == 0) {
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s: empty body", url);
    } else if (cc == CURLE_OK) {
        *out = b.p;
        *out_len = b.len;
        b.p = NULL;
    } else if (cc == CURLE_HTTP_RETURNED_ERROR) {
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s: HTTP status %ld",
                         url, status);
    } else if (b.too_big || cc == CURLE_FILESIZE_EXCEEDED) {
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_IO,
                         "a slot takes at most the bundle size limit",
                         "%s: larger than %u bytes, refused", url,
                         (unsigned)TML_BUNDLE_MAX_FILE);
    } else if (b.no_mem) {
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_FAIL, NULL, "%s: out of memory",
                         url);
    } else if (cc == CURLE_PEER_FAILED_VERIFICATION ||
               cc == CURLE_SSL_CACERT_BADFILE ||
               cc == CURLE_SSL_CERTPROBLEM) {
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_INVALID,
                         "give the server's CA with --cacert FILE",
                         "%s: TLS certificate not verified: %s", url,
                         err[0] != '\0' ? err : curl_easy_strerror(cc));
    } else {
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s: %s", url,
                         err[0] != '\0' ? err : curl_easy_strerror(cc));
    }
    free(b.p);
    curl_easy_cleanup(h);
    curl_global_cleanup();
    return rc;
}

static bool
parse_dtype(const char *s, uint8_t *out)
{
    static const char *const names[] = {"u8", "i8", "i16", "i32", "f32"};

    for (uint8_t i = 0; i < 5; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (uint8_t)(i + 1);
            return true;
        }
    }
    return false;
}

static bool
parse_shape(const char *s, struct tml_manifest *m)
{
    const char *p = s;

    m->n_shape = 0;
    while (*p != '\0') {
        char *end;
        unsigned long v = strtoul(p, &end, 10);
        if (end == p || v == 0 || v > UINT32_MAX ||
            m->n_shape == TML_MAX_SHAPE)
            return false;
        m->input_shape[m->n_shape++] = (uint32_t)v;
        if (*end == 'x' || *end == ',')
            end++;
        else if (*end != '\0')
            return false;
        p = end;
    }
    return m->n_shape > 0;
}

struct sign_opts {
    const char *key, *name, *hw, *shape, *dtype;
    uint32_t version, classes, arena, expires_days;
};

/* Signs a raw model file with the operator key as version `version`. */
static int
sign_file(const struct tmlctl *ctl, const struct sign_opts *so,
          const char *path, uint32_t version, uint8_t **out, size_t *out_len)
{
    struct tml_privkey *key = NULL;
    struct tml_manifest m;
    uint8_t *image = NULL;
    size_t image_len = 0;
    enum tml_bundle_err e;
    int rc = TMLCTL_EXIT_OK;

    memset(&m, 0, sizeof(m));
    if (so->name == NULL || so->hw == NULL || so->version == 0 ||
        so->shape == NULL || so->classes == 0)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "a raw model is signed here: give --name, "
                           "--version, --hw, --input-shape and --classes "
                           "(or deploy a bundle from `tmlctl sign`)",
                           "%s is not a bundle", path);
    m.dtype = TML_DTYPE_I8;
    if ((so->dtype != NULL && !parse_dtype(so->dtype, &m.dtype)) ||
        !parse_shape(so->shape, &m))
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "--input-shape 49x40, --dtype u8|i8|i16|i32|f32",
                           "bad --input-shape or --dtype");
    e = tml_privkey_load(so->key, &key);
    if (e != TML_BUNDLE_OK)
        return tmlctl_fail(ctl, e == TML_BUNDLE_E_IO ? TMLCTL_EXIT_IO
                                                     : TMLCTL_EXIT_INVALID,
                           NULL, "%s: %s", so->key,
                           e == TML_BUNDLE_E_IO ? strerror(errno)
                                                : tml_bundle_strerror(e));
    e = tml_bundle_read_file(path, &image, &image_len);
    if (e != TML_BUNDLE_OK) {
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s: %s", path,
                         e == TML_BUNDLE_E_IO ? strerror(errno)
                                              : tml_bundle_strerror(e));
        goto out;
    }
    m.name.p = so->name;
    m.name.len = strlen(so->name);
    m.hw.p = so->hw;
    m.hw.len = strlen(so->hw);
    m.version = version;
    m.created = (uint32_t)time(NULL);
    m.expires = so->expires_days ? m.created + so->expires_days * 86400u : 0;
    m.model_size = (uint32_t)image_len;
    m.arena_size = so->arena;
    m.n_labels = so->classes;
    e = tml_bundle_build(key, &m, image, image_len, NULL, 0, out, out_len);
    if (e != TML_BUNDLE_OK)
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_FAIL, NULL, "signing %s: %s", path,
                         tml_bundle_strerror(e));
out:
    free(image);
    tml_privkey_free(key);
    return rc;
}

static void
print_plan(const struct tmlctl *ctl, const cJSON *res)
{
    const cJSON *plan = cJSON_GetObjectItemCaseSensitive(res, "plan");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(res, "model");
    const cJSON *w, *e;

    printf("%sModel%s %s v%d for %s, %d bytes, key %s\n",
           tmlctl_color(ctl, TMLCTL_C_BOLD), tmlctl_reset(ctl),
           cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "name")),
           (int)cJSON_GetNumberValue(
               cJSON_GetObjectItemCaseSensitive(model, "version")),
           cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "hw")),
           (int)cJSON_GetNumberValue(
               cJSON_GetObjectItemCaseSensitive(model, "size")),
           cJSON_GetStringValue(
               cJSON_GetObjectItemCaseSensitive(model, "key_id")));
    printf("Targets %d, already on it %d, to transfer %.0f bytes\n",
           (int)cJSON_GetNumberValue(
               cJSON_GetObjectItemCaseSensitive(plan, "targets")),
           (int)cJSON_GetNumberValue(
               cJSON_GetObjectItemCaseSensitive(plan, "already_installed")),
           cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(plan, "bytes")));
    cJSON_ArrayForEach(w, cJSON_GetObjectItemCaseSensitive(plan, "waves"))
    {
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(w, "devices"), *id;
        int shown = 0;
        printf("  wave %d (%d%%): %d devices:",
               (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(w, "wave")),
               (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(w, "pct")),
               (int)cJSON_GetNumberValue(
                   cJSON_GetObjectItemCaseSensitive(w, "count")));
        cJSON_ArrayForEach(id, ids)
        {
            if (shown++ == 8) {
                printf(" ...");
                break;
            }
            printf(" %s", cJSON_GetStringValue(id));
        }
        printf("\n");
    }
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(plan, "excluded"))
    printf("  %sexcluded%s %s: %s\n", tmlctl_color(ctl, TMLCTL_C_YELLOW),
           tmlctl_reset(ctl),
           cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "id")),
           cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "reason")));
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(plan, "policy");
    printf("Gates: %s; failure threshold %d%% per wave, max %d downloading, "
           "%d retries; health gate: min %d devices and %d inferences per "
           "side, low-confidence margin +%.0f%% abs / x%.2f, latency p95 "
           "x%.2f, z > %.2f\n",
           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "gate")) ? "on"
                                                                     : "off",
           (int)cJSON_GetNumberValue(
               cJSON_GetObjectItemCaseSensitive(p, "failure_threshold")),
           (int)cJSON_GetNumberValue(
               cJSON_GetObjectItemCaseSensitive(p, "max_concurrent")),
           (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(p, "retries")),
           (int)cJSON_GetNumberValue(
               cJSON_GetObjectItemCaseSensitive(p, "gate_min_devices")),
           (int)cJSON_GetNumberValue(
               cJSON_GetObjectItemCaseSensitive(p, "gate_min_inferences")),
           100 * cJSON_GetNumberValue(
                     cJSON_GetObjectItemCaseSensitive(p, "gate_low_conf_margin_abs")),
           1 + cJSON_GetNumberValue(
                   cJSON_GetObjectItemCaseSensitive(p, "gate_low_conf_margin_rel")),
           cJSON_GetNumberValue(
               cJSON_GetObjectItemCaseSensitive(p, "gate_lat_p95_ratio")),
           cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(p, "gate_z_crit")));
}

static int
cmd_deploy(struct tmlctl *ctl, int argc, char **argv)
{
    struct sign_opts so;
    const char *group = NULL, *waves = NULL, *canary = NULL, *rb_bundle = NULL;
    const char *rb_from = NULL, *cacert = NULL;
    struct tmlctl_list devices = {0};
    double threshold = -1;
    uint32_t max_conc = 0, retries = UINT32_MAX, min_inf = UINT32_MAX;
    uint32_t min_dev = UINT32_MAX;
    uint64_t timeout_s = 0, soak_s = UINT64_MAX, gate_wait_s = UINT64_MAX;
    uint64_t offline_wait_s = UINT64_MAX;
    bool dry = false, watch = false, no_gate = false;
    struct tmlctl_args a;
    int rc;

    memset(&so, 0, sizeof(so));
    so.expires_days = 90;
    const struct tmlctl_opt opts[] = {
        {"group", 'g', TMLCTL_OPT_STR, &group, "GROUP", "target group", false},
        {"devices", 'd', TMLCTL_OPT_LIST, &devices, "ID,...",
         "target devices instead of a group", false},
        {"waves", 0, TMLCTL_OPT_STR, &waves, "5,25,100",
         "cumulative % of targets per wave", false},
        {"canary", 0, TMLCTL_OPT_STR, &canary, "PCT",
         "first wave share (waves PCT,25,100)", false},
        {"max-concurrent", 0, TMLCTL_OPT_U32, &max_conc, "N",
         "devices downloading at once", false},
        {"failure-threshold", 0, TMLCTL_OPT_PERCENT, &threshold, "PCT",
         "failed share of a wave that pauses the rollout", false},
        {"retries", 0, TMLCTL_OPT_U32, &retries, "N",
         "retries per device", false},
        {"device-timeout", 0, TMLCTL_OPT_U64, &timeout_s, "S",
         "progress deadline per device (s)", false},
        {"soak", 0, TMLCTL_OPT_U64, &soak_s, "S",
         "telemetry time after a wave before the health gate (s)", false},
        {"gate-max-wait", 0, TMLCTL_OPT_U64, &gate_wait_s, "S",
         "pause when the gate has no answer after S (s)", false},
        {"offline-wait", 0, TMLCTL_OPT_U64, &offline_wait_s, "S",
         "last wave: exclude devices still offline after S (s; 0 = wait)",
         false},
        {"min-inferences", 0, TMLCTL_OPT_U32, &min_inf, "N",
         "health gate: inferences needed per side", false},
        {"min-devices", 0, TMLCTL_OPT_U32, &min_dev, "N",
         "health gate: devices needed per side", false},
        {"no-gate", 0, TMLCTL_OPT_FLAG, &no_gate, NULL,
         "advance without the health gate", false},
        {"key", 'k', TMLCTL_OPT_STR, &so.key, "KEY",
         "operator private key: sign a raw model here", false},
        {"name", 'n', TMLCTL_OPT_STR, &so.name, "NAME", "model name (--key)",
         false},
        {"version", 'V', TMLCTL_OPT_U32, &so.version, "N",
         "model version (--key)", false},
        {"hw", 0, TMLCTL_OPT_STR, &so.hw, "TARGET", "hardware target (--key)",
         false},
        {"input-shape", 0, TMLCTL_OPT_STR, &so.shape, "DIMS",
         "model input shape, e.g. 49x40 (--key)", false},
        {"dtype", 0, TMLCTL_OPT_STR, &so.dtype, "TYPE",
         "input type u8|i8|i16|i32|f32 (--key, default i8)", false},
        {"classes", 0, TMLCTL_OPT_U32, &so.classes, "N",
         "output classes (--key)", false},
        {"arena", 0, TMLCTL_OPT_U32, &so.arena, "BYTES",
         "tensor arena the model needs (--key)", false},
        {"expires-days", 0, TMLCTL_OPT_U32, &so.expires_days, "D",
         "signature expiry (--key, default 90, 0 = never)", false},
        {"rollback-bundle", 0, TMLCTL_OPT_STR, &rb_bundle, "FILE",
         "previous model signed with a higher version", false},
        {"rollback-from", 0, TMLCTL_OPT_STR, &rb_from, "PREV.bin",
         "sign the previous model as version+1 for rollback (--key)", false},
        {"cacert", 0, TMLCTL_OPT_STR, &cacert, "FILE",
         "CA certificates for an https:// bundle (default: system CAs)",
         false},
        {"dry-run", 0, TMLCTL_OPT_FLAG, &dry, NULL,
         "print the plan, change nothing", false},
        {"watch", 'w', TMLCTL_OPT_FLAG, &watch, NULL,
         "follow the rollout until it finishes or pauses", false},
        {0},
    };

    if (!tmlctl_parse(ctl, "deploy FILE|BUNDLE|https://URL (--group G | "
                           "--devices ID,...) [options]",
                      opts, argc, argv, &a, &rc))
        return rc;
    if (a.n_pos != 1 || (group == NULL) == (devices.n == 0))
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "tmlctl deploy model.tmlb --group turbines",
                           "give one FILE and either --group or --devices");

    uint8_t *buf = NULL, *rb_buf = NULL;
    size_t len = 0, rb_len = 0;
    struct tml_bundle *parsed = malloc(sizeof(*parsed));
    enum tml_bundle_err e = TML_BUNDLE_OK;
    bool url = is_url(a.pos[0]);
    if (parsed == NULL)
        return tmlctl_fail(ctl, TMLCTL_EXIT_FAIL, NULL, "out of memory");
    if (cacert != NULL && !url) {
        free(parsed);
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL,
                           "--cacert goes with an https:// bundle");
    }
    if (url) {
        rc = fetch_url(ctl, a.pos[0], cacert, &buf, &len);
        if (rc != TMLCTL_EXIT_OK) {
            free(parsed);
            return rc;
        }
    } else {
        e = tml_bundle_read_file(a.pos[0], &buf, &len);
    }
    if (e != TML_BUNDLE_OK) {
        free(parsed);
        return tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s: %s", a.pos[0],
                           e == TML_BUNDLE_E_IO ? strerror(errno)
                                                : tml_bundle_strerror(e));
    }
    e = tml_bundle_parse(buf, len, parsed);
    bool is_bundle = e == TML_BUNDLE_OK;
    uint32_t version = is_bundle ? parsed->manifest.version : so.version;
    free(parsed);
    if (!is_bundle && url) {
        /* Only signed bundles come from a URL (nothing is signed here). */
        free(buf);
        return tmlctl_fail(ctl, TMLCTL_EXIT_INVALID,
                           "serve a bundle made by `tmlctl sign`",
                           "%s is not a valid signed bundle: %s", a.pos[0],
                           tml_bundle_strerror(e));
    }
    if (!is_bundle) {
        free(buf);
        buf = NULL;
        if (so.key == NULL)
            return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                               "sign it with --key KEY (and --name, "
                               "--version, --hw, ...) or use `tmlctl sign`",
                               "%s is not a signed bundle", a.pos[0]);
        rc = sign_file(ctl, &so, a.pos[0], so.version, &buf, &len);
        if (rc != TMLCTL_EXIT_OK)
            return rc;
    } else if (so.key != NULL && rb_from == NULL) {
        free(buf);
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL,
                           "%s is already a signed bundle; drop --key",
                           a.pos[0]);
    }
    if (rb_from != NULL) {
        if (so.key == NULL || is_bundle) {
            free(buf);
            return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL,
                               "--rollback-from needs --key and a raw model");
        }
        rc = sign_file(ctl, &so, rb_from, version + 1, &rb_buf, &rb_len);
        if (rc != TMLCTL_EXIT_OK) {
            free(buf);
            return rc;
        }
    } else if (rb_bundle != NULL) {
        e = tml_bundle_read_file(rb_bundle, &rb_buf, &rb_len);
        if (e != TML_BUNDLE_OK) {
            free(buf);
            return tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s: %s", rb_bundle,
                               tml_bundle_strerror(e));
        }
    }

    struct tmlctl_conn *c = NULL;
    char artifact[65], rb_artifact[65];
    cJSON *res = NULL;
    rc = tmlctl_connect(ctl, &c);
    if (rc != TMLCTL_EXIT_OK)
        goto out;
    tmlctl_info(ctl, "uploading %zu bytes", len);
    rc = upload(ctl, c, buf, len, artifact, NULL);
    if (rc == TMLCTL_EXIT_OK && rb_buf != NULL)
        rc = upload(ctl, c, rb_buf, rb_len, rb_artifact, NULL);
    if (rc != TMLCTL_EXIT_OK)
        goto out;

    cJSON *args = cJSON_CreateObject();
    cJSON_AddStringToObject(args, "artifact", artifact);
    if (group != NULL)
        cJSON_AddStringToObject(args, "group", group);
    else {
        cJSON *l = cJSON_AddArrayToObject(args, "devices");
        for (size_t i = 0; i < devices.n; i++)
            cJSON_AddItemToArray(l, cJSON_CreateString(devices.v[i]));
    }
    char wbuf[64];
    if (canary != NULL && waves == NULL) {
        unsigned pct = (unsigned)strtoul(canary, NULL, 10);
        snprintf(wbuf, sizeof(wbuf), pct < 25 ? "%u,25,100" : "%u,100", pct);
        waves = wbuf;
    }
    if (waves != NULL)
        cJSON_AddStringToObject(args, "waves", waves);
    if (max_conc != 0)
        cJSON_AddNumberToObject(args, "max_concurrent", max_conc);
    if (threshold >= 0)
        cJSON_AddNumberToObject(args, "failure_threshold", (int)threshold);
    if (retries != UINT32_MAX)
        cJSON_AddNumberToObject(args, "retries", retries);
    if (timeout_s != 0)
        cJSON_AddNumberToObject(args, "device_timeout_ms",
                                (double)timeout_s * 1000);
    if (soak_s != UINT64_MAX)
        cJSON_AddNumberToObject(args, "soak_ms", (double)soak_s * 1000);
    if (gate_wait_s != UINT64_MAX)
        cJSON_AddNumberToObject(args, "gate_max_wait_ms",
                                (double)gate_wait_s * 1000);
    if (offline_wait_s != UINT64_MAX)
        cJSON_AddNumberToObject(args, "offline_wait_ms",
                                (double)offline_wait_s * 1000);
    if (min_inf != UINT32_MAX)
        cJSON_AddNumberToObject(args, "min_inferences", min_inf);
    if (min_dev != UINT32_MAX)
        cJSON_AddNumberToObject(args, "min_devices", min_dev);
    if (no_gate)
        cJSON_AddBoolToObject(args, "gate", false);
    if (rb_buf != NULL)
        cJSON_AddStringToObject(args, "rollback_artifact", rb_artifact);
    if (dry)
        cJSON_AddBoolToObject(args, "dry_run", true);
    rc = tmlctl_request(c, "deploy", args, &res);
    if (rc != TMLCTL_EXIT_OK)
        goto out;
    const cJSON *ro = cJSON_GetObjectItemCaseSensitive(res, "rollout");
    uint32_t id = (uint32_t)cJSON_GetNumberValue(
        cJSON_GetObjectItemCaseSensitive(ro, "id"));
    if (ctl->json && !watch) {
        rc = tmlctl_json_emit(res);
        res = NULL;
        goto out;
    }
    if (!ctl->json) {
        print_plan(ctl, res);
        if (dry)
            printf("Dry run: nothing was changed.\n");
        else
            printf("Rollout %u started.\n", id);
    }
    if (watch && !dry) {
        tmlctl_close(c);
        c = NULL;
        rc = tmlctl_rollout_watch(ctl, id);
    }
out:
    cJSON_Delete(res);
    if (c != NULL)
        tmlctl_close(c);
    free(buf);
    free(rb_buf);
    return rc;
}

TMLCTL_COMMAND("deploy", "roll a signed model out to a group, in waves",
               cmd_deploy)
