/*
 * cmd_sign.c: `tmlctl sign MODEL --key KEY --name N --version V --hw HW
 * -o OUT.tmlb`: builds a signed bundle (docs/bundle.md). The image is the
 * model followed by the golden test vectors of --vectors DIR; the manifest
 * also carries what the model needs (--arena, --input-shape, --dtype,
 * --labels, --min-agent) and an expiry (default 90 days).
 *
 * --vectors DIR holds the raw inputs (all the same length) and a file
 * DIR/expected.txt with one line per vector, in image order:
 *     FILE CLASS SCORE_BP        e.g. "yes-1.bin 2 9100"
 * Blank lines and lines starting with '#' are skipped.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tml/bundle.h"
#include "tmlctl.h"

#define MAX_VECTORS 64u
#define MAX_VECTOR_INPUT (64u * 1024u)
#define DEFAULT_EXPIRY_S (90u * 86400u)

struct vectors {
    uint8_t *bytes; /* n * (input_len + 4) */
    size_t len;
    uint32_t n;
    uint32_t input_len;
};

static int
io_fail(const struct tmlctl *ctl, const char *path, enum tml_bundle_err err)
{
    return tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s: %s", path,
                       err == TML_BUNDLE_E_IO ? strerror(errno)
                                              : tml_bundle_strerror(err));
}

static int
load_vectors(const struct tmlctl *ctl, const char *dir, struct vectors *v)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/expected.txt", dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return tmlctl_fail(ctl, TMLCTL_EXIT_IO,
                           "--vectors DIR needs DIR/expected.txt with lines "
                           "'FILE CLASS SCORE_BP'",
                           "%s: %s", path, strerror(errno));
    char line[512];
    int rc = TMLCTL_EXIT_OK;
    unsigned lineno = 0;
    while (rc == TMLCTL_EXIT_OK && fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        char name[256];
        unsigned cls, score;
        char extra;
        if (line[0] == '#' || strspn(line, " \t\r\n") == strlen(line))
            continue;
        if (sscanf(line, "%255s %u %u %c", name, &cls, &score, &extra) != 3 ||
            cls > 65535 || score > 10000 || strchr(name, '/') != NULL) {
            rc = tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                             "format: FILE CLASS SCORE_BP (class < 65536, "
                             "score 0..10000 bp, FILE inside DIR)",
                             "%s:%u: bad line", path, lineno);
            break;
        }
        if (v->n >= MAX_VECTORS) {
            rc = tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL,
                             "%s: more than %u vectors", path, MAX_VECTORS);
            break;
        }
        char vpath[4500];
        snprintf(vpath, sizeof(vpath), "%s/%s", dir, name);
        uint8_t *in = NULL;
        size_t in_len = 0;
        enum tml_bundle_err err = tml_bundle_read_file(vpath, &in, &in_len);
        if (err != TML_BUNDLE_OK) {
            rc = io_fail(ctl, vpath, err);
            break;
        }
        if (in_len == 0 || in_len > MAX_VECTOR_INPUT ||
            (v->n > 0 && in_len != v->input_len)) {
            free(in);
            rc = tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                             "every vector input must have the model's "
                             "input length",
                             "%s: %zu bytes (expected %u)", vpath, in_len,
                             v->n > 0 ? v->input_len : 0);
            break;
        }
        v->input_len = (uint32_t)in_len;
        uint8_t *nb = realloc(v->bytes, v->len + in_len + 4);
        if (nb == NULL) {
            free(in);
            rc = tmlctl_fail(ctl, TMLCTL_EXIT_FAIL, NULL, "out of memory");
            break;
        }
        v->bytes = nb;
        memcpy(nb + v->len, in, in_len);
        free(in);
        /* Expected class then score, u16 little-endian (proto.h). */
        uint8_t *t = nb + v->len + in_len;
        t[0] = (uint8_t)(cls & 0xff);
        t[1] = (uint8_t)(cls >> 8);
        t[2] = (uint8_t)(score & 0xff);
        t[3] = (uint8_t)(score >> 8);
        v->len += in_len + 4;
        v->n++;
    }
    fclose(f);
    if (rc == TMLCTL_EXIT_OK && v->n == 0)
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL, "%s: no vectors", path);
    return rc;
}

/* "1x49x40" or "1,49,40". */
static bool
parse_shape(const char *s, struct tml_manifest *m)
{
    char buf[128];
    if (strlen(s) >= sizeof(buf))
        return false;
    strcpy(buf, s);
    char *save = NULL;
    m->n_shape = 0;
    for (char *tok = strtok_r(buf, "x,", &save); tok != NULL;
         tok = strtok_r(NULL, "x,", &save)) {
        uint32_t d;
        if (m->n_shape >= TML_MAX_SHAPE || !tmlctl_parse_u32(tok, &d) || d == 0)
            return false;
        m->input_shape[m->n_shape++] = d;
    }
    return m->n_shape > 0;
}

static bool
parse_dtype(const char *s, uint8_t *out)
{
    static const char *const names[] = {NULL, "u8", "i8", "i16", "i32", "f32"};
    for (uint8_t i = 1; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return true;
        }
    return false;
}

/* "0.1.0" -> 0x000100 (proto.h's agent version encoding). */
static bool
parse_agent_version(const char *s, uint32_t *out)
{
    unsigned a, b, c;
    char extra;
    if (sscanf(s, "%u.%u.%u%c", &a, &b, &c, &extra) != 3 || a > 255 ||
        b > 255 || c > 255)
        return false;
    *out = (a << 16) | (b << 8) | c;
    return true;
}

/* --labels FILE (one per line) or --labels a,b,c. Labels point into
 * *storage (freed by the caller). */
static int
load_labels(const struct tmlctl *ctl, const char *arg, char **storage,
            const char **labels, size_t *n)
{
    uint8_t *data = NULL;
    size_t len = 0;
    const char *sep = ",";
    if (strchr(arg, ',') == NULL &&
        tml_bundle_read_file(arg, &data, &len) == TML_BUNDLE_OK) {
        sep = "\r\n";
    } else {
        len = strlen(arg);
        data = malloc(len + 1);
        if (data == NULL)
            return tmlctl_fail(ctl, TMLCTL_EXIT_FAIL, NULL, "out of memory");
        memcpy(data, arg, len);
    }
    char *s = realloc(data, len + 1);
    if (s == NULL) {
        free(data);
        return tmlctl_fail(ctl, TMLCTL_EXIT_FAIL, NULL, "out of memory");
    }
    s[len] = '\0';
    *storage = s;
    *n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(s, sep, &save); tok != NULL;
         tok = strtok_r(NULL, sep, &save)) {
        if (*n >= TML_BUNDLE_MAX_LABELS ||
            strlen(tok) > TML_BUNDLE_MAX_LABEL_LEN)
            return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL,
                               "--labels: at most %u labels of %u bytes",
                               TML_BUNDLE_MAX_LABELS, TML_BUNDLE_MAX_LABEL_LEN);
        labels[(*n)++] = tok;
    }
    if (*n == 0)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL, "--labels: empty");
    return TMLCTL_EXIT_OK;
}

/* created: SOURCE_DATE_EPOCH when set (reproducible bundles), else now. */
static uint64_t
created_time(void)
{
    const char *sde = getenv("SOURCE_DATE_EPOCH");
    uint32_t v;
    if (sde != NULL && tmlctl_parse_u32(sde, &v))
        return v;
    return (uint64_t)time(NULL);
}

static int
cmd_sign(struct tmlctl *ctl, int argc, char **argv)
{
    const char *key_path = NULL, *name = NULL, *hw = NULL, *out = NULL;
    const char *vectors_dir = NULL, *shape = NULL, *labels_arg = NULL;
    const char *expires = NULL, *dtype = NULL, *min_agent = NULL;
    uint32_t version = 0, arena = 0, score_tol = 500, classes = 0;
    bool resets_floor = false;
    struct tmlctl_list revoke = {0};
    const struct tmlctl_opt opts[] = {
        {"key", 'k', TMLCTL_OPT_STR, &key_path, "KEY",
         "operator private key (tmlctl keygen)", true},
        {"name", 'n', TMLCTL_OPT_STR, &name, "NAME", "model name", true},
        {"version", 'V', TMLCTL_OPT_U32, &version, "N",
         "model version (integer, must increase)", true},
        {"hw", 0, TMLCTL_OPT_STR, &hw, "TARGET", "hardware target", true},
        {"out", 'o', TMLCTL_OPT_STR, &out, "FILE", "bundle to write", true},
        {"vectors", 0, TMLCTL_OPT_STR, &vectors_dir, "DIR",
         "golden test vectors (DIR/expected.txt)", false},
        {"score-tol", 0, TMLCTL_OPT_U32, &score_tol, "BP",
         "vector score tolerance, basis points (500)", false},
        {"arena", 0, TMLCTL_OPT_U32, &arena, "BYTES",
         "tensor arena the model needs", false},
        {"input-shape", 0, TMLCTL_OPT_STR, &shape, "DIMS",
         "model input shape, e.g. 1x49x40", true},
        {"dtype", 0, TMLCTL_OPT_STR, &dtype, "TYPE",
         "input type: u8 i8 i16 i32 f32 (i8)", false},
        {"labels", 0, TMLCTL_OPT_STR, &labels_arg, "FILE|a,b",
         "class labels (or --classes N)", false},
        {"classes", 0, TMLCTL_OPT_U32, &classes, "N",
         "number of output classes, when no --labels", false},
        {"expires", 0, TMLCTL_OPT_STR, &expires, "WHEN",
         "duration (90d), @UNIXTIME or 'never' (90d)", false},
        {"min-agent", 0, TMLCTL_OPT_STR, &min_agent, "X.Y.Z",
         "lowest agent version that can run it", false},
        {"revoke", 0, TMLCTL_OPT_LIST, &revoke, "KEYID",
         "key id (hex) devices must stop trusting", false},
        {"resets-floor", 0, TMLCTL_OPT_FLAG, &resets_floor, NULL,
         "key-rotation recovery (PROTOCOL.md)", false},
        {0},
    };
    struct tmlctl_args a;
    int rc;
    if (!tmlctl_parse(ctl,
                      "sign MODEL --key KEY --name NAME --version N --hw "
                      "TARGET --input-shape DIMS --labels L|--classes N "
                      "-o OUT.tmlb [options]",
                      opts, argc, argv, &a, &rc))
        return rc;
    if (a.n_pos != 1)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "tmlctl sign MODEL --key KEY ... -o OUT.tmlb",
                           "give exactly one model file");

    struct tml_manifest m;
    memset(&m, 0, sizeof(m));
    m.name.p = name;
    m.name.len = strlen(name);
    m.hw.p = hw;
    m.hw.len = strlen(hw);
    m.version = version;
    m.arena_size = arena;
    m.dtype = TML_DTYPE_I8;
    if (m.name.len == 0 || m.name.len > TML_MAX_NAME || m.hw.len == 0 ||
        m.hw.len > TML_MAX_NAME)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL,
                           "--name and --hw: 1..%d bytes", TML_MAX_NAME);
    if (version == 0)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "versions start at 1 (0 means 'no model')",
                           "--version 0");
    if ((labels_arg == NULL) == (classes == 0))
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "devices check the model's class count: give "
                           "--labels yes,no,... or --classes N",
                           "need exactly one of --labels and --classes");
    m.n_labels = classes;
    if (dtype != NULL && !parse_dtype(dtype, &m.dtype))
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, "u8 i8 i16 i32 f32",
                           "bad --dtype '%s'", dtype);
    if (!parse_shape(shape, &m))
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "e.g. --input-shape 1x49x40 (at most 4 dims)",
                           "bad --input-shape '%s'", shape);
    if (min_agent != NULL &&
        !parse_agent_version(min_agent, &m.min_agent_version))
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, "e.g. --min-agent 0.1.0",
                           "bad --min-agent '%s'", min_agent);
    if (score_tol > 10000)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL,
                           "--score-tol: 0..10000 bp");
    uint64_t created = created_time();
    m.created = (uint32_t)created;
    uint64_t exp = created + DEFAULT_EXPIRY_S;
    if (expires != NULL) {
        uint64_t d;
        uint32_t abs_t;
        if (strcmp(expires, "never") == 0)
            exp = 0;
        else if (expires[0] == '@' && tmlctl_parse_u32(expires + 1, &abs_t))
            exp = abs_t;
        else if (tmlctl_parse_duration(expires, &d) && d > 0 && d <= UINT32_MAX)
            exp = created + d;
        else
            return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                               "e.g. --expires 30d, --expires @1798761600, "
                               "--expires never",
                               "bad --expires '%s'", expires);
    }
    if (exp > UINT32_MAX)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL,
                           "--expires beyond 2106");
    m.expires = (uint32_t)exp;
    m.resets_floor = resets_floor;
    uint8_t revoke_kids[TML_MAX_REVOKE][TML_KEY_ID_LEN];
    if (revoke.n > TML_MAX_REVOKE)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL,
                           "--revoke: at most %d key ids", TML_MAX_REVOKE);
    for (size_t i = 0; i < revoke.n; i++) {
        const char *h = revoke.v[i];
        if (strlen(h) != 2 * TML_KEY_ID_LEN)
            return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                               "a key id is 16 hex digits (tmlctl keygen "
                               "prints it)",
                               "bad --revoke '%s'", h);
        for (size_t k = 0; k < TML_KEY_ID_LEN; k++) {
            unsigned byte;
            if (sscanf(h + 2 * k, "%2x", &byte) != 1)
                return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL,
                                   "bad --revoke '%s'", h);
            revoke_kids[i][k] = (uint8_t)byte;
        }
        m.revoke_kids[i].p = revoke_kids[i];
        m.revoke_kids[i].len = TML_KEY_ID_LEN;
    }
    m.n_revoke = revoke.n;

    struct tml_privkey *key = NULL;
    enum tml_bundle_err err = tml_privkey_load(key_path, &key);
    if (err != TML_BUNDLE_OK)
        return tmlctl_fail(
            ctl, err == TML_BUNDLE_E_IO ? TMLCTL_EXIT_IO : TMLCTL_EXIT_USAGE,
            "make one with: tmlctl keygen --out NAME", "%s: %s", key_path,
            err == TML_BUNDLE_E_IO ? strerror(errno)
                                   : tml_bundle_strerror(err));

    uint8_t *model = NULL, *image = NULL, *bundle = NULL;
    size_t model_len = 0, bundle_len = 0;
    char *label_storage = NULL;
    const char *labels[TML_BUNDLE_MAX_LABELS];
    size_t n_labels = 0;
    struct vectors vec = {0};
    rc = TMLCTL_EXIT_OK;
    err = tml_bundle_read_file(a.pos[0], &model, &model_len);
    if (err != TML_BUNDLE_OK) {
        rc = io_fail(ctl, a.pos[0], err);
        goto out;
    }
    if (model_len == 0) {
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL, "%s is empty", a.pos[0]);
        goto out;
    }
    if (vectors_dir != NULL &&
        (rc = load_vectors(ctl, vectors_dir, &vec)) != TMLCTL_EXIT_OK)
        goto out;
    if (labels_arg != NULL &&
        (rc = load_labels(ctl, labels_arg, &label_storage, labels,
                          &n_labels)) != TMLCTL_EXIT_OK)
        goto out;
    if (model_len + vec.len > TML_BUNDLE_MAX_IMAGE) {
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL,
                         "model + vectors over %u bytes", TML_BUNDLE_MAX_IMAGE);
        goto out;
    }
    image = malloc(model_len + vec.len);
    if (image == NULL) {
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_FAIL, NULL, "out of memory");
        goto out;
    }
    memcpy(image, model, model_len);
    if (vec.len > 0)
        memcpy(image + model_len, vec.bytes, vec.len);
    m.model_size = (uint32_t)model_len;
    m.n_vectors = vec.n;
    m.vector_input_len = vec.input_len;
    m.score_tol_bp = vec.n > 0 ? score_tol : 0;

    err = tml_bundle_build(key, &m, image, model_len + vec.len, labels,
                           n_labels, &bundle, &bundle_len);
    if (err != TML_BUNDLE_OK) {
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_FAIL, NULL, "signing: %s",
                         tml_bundle_strerror(err));
        goto out;
    }
    err = tml_bundle_write_file(out, bundle, bundle_len);
    if (err != TML_BUNDLE_OK) {
        rc = io_fail(ctl, out, err);
        goto out;
    }
    struct tml_pubkey pub;
    tml_privkey_public(key, &pub);
    char kid[17], sha[65];
    tml_key_id_hex(pub.kid, kid);
    for (size_t i = 0; i < 32; i++)
        snprintf(sha + 2 * i, 3, "%02x", m.sha256[i]);
    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "bundle", out);
        cJSON_AddStringToObject(o, "name", name);
        cJSON_AddNumberToObject(o, "version", version);
        cJSON_AddStringToObject(o, "hw", hw);
        cJSON_AddNumberToObject(o, "size", m.size);
        cJSON_AddNumberToObject(o, "model_size", m.model_size);
        cJSON_AddNumberToObject(o, "vectors", m.n_vectors);
        cJSON_AddStringToObject(o, "sha256", sha);
        cJSON_AddStringToObject(o, "key_id", kid);
        cJSON_AddNumberToObject(o, "created", m.created);
        cJSON_AddNumberToObject(o, "expires", m.expires);
        cJSON_AddNumberToObject(o, "bytes", (double)bundle_len);
        rc = tmlctl_json_emit(o);
    } else {
        printf("%s: %s v%u for %s, %u bytes (%u vectors), sha256 %s, key "
               "%s\n",
               out, name, version, hw, m.size, m.n_vectors, sha, kid);
    }
out:
    tml_privkey_free(key);
    free(model);
    free(image);
    free(bundle);
    free(vec.bytes);
    free(label_storage);
    return rc;
}

TMLCTL_COMMAND("sign", "sign a model into a bundle (.tmlb)", cmd_sign)
