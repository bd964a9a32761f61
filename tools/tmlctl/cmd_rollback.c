/*
 * cmd_rollback.c: `tmlctl rollback --group G --key KEY [deploy options]`:
 * puts the group back on its previous confirmed model (docs/ota.md).
 *
 * Devices never go back in version (anti-rollback), so "the previous model"
 * is deployed as a new bundle: the old image and manifest fields, signed
 * here with the operator's key as a version above every stored version of
 * that model. tmld holds no private key, hence --key is required.
 *
 * Which model: the group's rollouts, newest first (rollout.list). When the
 * newest finished as "done" (the group runs it), the target is the newest
 * earlier "done" rollout with another image; when the newest did not finish
 * (paused, aborted), the target is the newest "done" one: the model the
 * group ran before. A live (running or paused) rollout of the group must be
 * aborted first. The image comes from tmld's store (artifact.get, verified
 * by tmld on load); its SHA-256 is checked against the models table here
 * before it is signed. The new bundle goes through `tmlctl deploy`, so the
 * capacity check, waves, gates, --dry-run and --watch are the same.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/base64.h>

#include "tml/bundle.h"
#include "tmlctl.h"

#define MAX_FWD 24 /* deploy options passed through */

/* Decodes base64 into out (cap bytes) with mbedTLS; returns bytes or -1. */
static long
b64_decode(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;

    if (mbedtls_base64_decode(out, cap, &n, (const unsigned char *)s,
                              strlen(s)) != 0)
        return -1;
    return (long)n;
}

/* Downloads the stored bundle `artifact` (artifact.get pieces). */
static int
fetch(const struct tmlctl *ctl, struct tmlctl_conn *c, const char *artifact,
      uint8_t **out, size_t *out_len)
{
    uint8_t *buf = NULL;
    size_t total = 0, got = 0;
    int rc = TMLCTL_EXIT_OK;

    for (int i = 0; i < 1000; i++) {
        cJSON *args = cJSON_CreateObject(), *res = NULL;
        cJSON_AddStringToObject(args, "artifact", artifact);
        cJSON_AddNumberToObject(args, "offset", (double)got);
        rc = tmlctl_request(c, "artifact.get", args, &res);
        if (rc != TMLCTL_EXIT_OK)
            break;
        double t = tmlctl_jnum(res, "total", -1);
        const char *data = tmlctl_jstr(res, "data", NULL);
        if (buf == NULL) {
            if (t <= 0 || t > TML_BUNDLE_MAX_FILE ||
                (buf = malloc((size_t)t)) == NULL) {
                cJSON_Delete(res);
                rc = tmlctl_fail(ctl, TMLCTL_EXIT_PROTOCOL, NULL,
                                 "artifact.get: bad total");
                break;
            }
            total = (size_t)t;
        }
        long n = data == NULL || t != (double)total
                     ? -1
                     : b64_decode(data, buf + got, total - got);
        cJSON_Delete(res);
        if (n <= 0) {
            rc = tmlctl_fail(ctl, TMLCTL_EXIT_PROTOCOL, NULL,
                             "artifact.get: bad data at offset %zu", got);
            break;
        }
        got += (size_t)n;
        if (got == total)
            break;
    }
    if (rc == TMLCTL_EXIT_OK && (buf == NULL || got != total))
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_PROTOCOL, NULL,
                         "artifact.get: incomplete download");
    if (rc != TMLCTL_EXIT_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    *out_len = total;
    return TMLCTL_EXIT_OK;
}

static const cJSON *
find_model(const cJSON *models, const char *artifact)
{
    const cJSON *m;

    cJSON_ArrayForEach(m, models)
    {
        if (strcmp(tmlctl_jstr(m, "artifact", ""), artifact) == 0)
            return m;
    }
    return NULL;
}

/* Picks the rollback target of `group` from rollout.list (newest first by
 * id). Returns the rollout object or NULL with *why set. */
static const cJSON *
pick_target(const cJSON *rollouts, const char *group, const cJSON *models,
            const char **why, const cJSON **live)
{
    const cJSON *r, *newest = NULL, *target = NULL;
    const char *cur_sha = NULL;
    double newest_id = 0;

    *live = NULL;
    cJSON_ArrayForEach(r, rollouts)
    {
        if (strcmp(tmlctl_jstr(r, "group", ""), group) != 0)
            continue;
        const char *st = tmlctl_jstr(r, "state", "");
        if (strcmp(st, "running") == 0 || strcmp(st, "paused") == 0)
            *live = r;
        if (tmlctl_jnum(r, "id", 0) > newest_id) {
            newest_id = tmlctl_jnum(r, "id", 0);
            newest = r;
        }
    }
    if (newest == NULL) {
        *why = "the group has no rollouts";
        return NULL;
    }
    if (strcmp(tmlctl_jstr(newest, "state", ""), "done") == 0) {
        const cJSON *m =
            find_model(models, tmlctl_jstr(newest, "artifact", ""));
        cur_sha = m != NULL ? tmlctl_jstr(m, "sha256", NULL) : NULL;
    }
    /* Newest "done" rollout older than `newest` (or newest itself when it
     * did not finish) whose image differs from what the group runs. */
    double best = 0;
    cJSON_ArrayForEach(r, rollouts)
    {
        double id = tmlctl_jnum(r, "id", 0);
        if (strcmp(tmlctl_jstr(r, "group", ""), group) != 0 ||
            strcmp(tmlctl_jstr(r, "state", ""), "done") != 0 || id <= best)
            continue;
        if (cur_sha != NULL) {
            const cJSON *m = find_model(models, tmlctl_jstr(r, "artifact", ""));
            if (id >= newest_id || m == NULL ||
                strcmp(tmlctl_jstr(m, "sha256", ""), cur_sha) == 0)
                continue;
        }
        best = id;
        target = r;
    }
    if (target == NULL)
        *why = cur_sha != NULL ? "no earlier confirmed model with another "
                                 "image"
                               : "no confirmed model";
    return target;
}

/* Signs the image of `old` as version `version` with key; *out malloc'ed. */
static int
resign(const struct tmlctl *ctl, const char *key_path, const uint8_t *old,
       size_t old_len, const char *want_sha, uint32_t version,
       uint32_t expires_days, uint8_t **out, size_t *out_len)
{
    struct tml_bundle *b = malloc(sizeof(*b));
    struct tml_privkey *key = NULL;
    const char *labels[TML_BUNDLE_MAX_LABELS];
    char lab[TML_BUNDLE_MAX_LABELS][TML_MAX_NAME + 1];
    char sha[2 * TML_SHA256_LEN + 1];
    struct tml_manifest m;
    enum tml_bundle_err e;
    int rc = TMLCTL_EXIT_OK;

    if (b == NULL)
        return tmlctl_fail(ctl, TMLCTL_EXIT_FAIL, NULL, "out of memory");
    e = tml_bundle_parse(old, old_len, b);
    if (e != TML_BUNDLE_OK) {
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_PROTOCOL, NULL,
                         "stored bundle: %s", tml_bundle_strerror(e));
        goto out;
    }
    for (size_t i = 0; i < TML_SHA256_LEN; i++)
        snprintf(sha + 2 * i, 3, "%02x", b->manifest.sha256[i]);
    if (want_sha == NULL || strcmp(sha, want_sha) != 0) {
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_INVALID, NULL,
                         "stored bundle's image hash does not match the "
                         "models table");
        goto out;
    }
    e = tml_privkey_load(key_path, &key);
    if (e != TML_BUNDLE_OK) {
        rc = tmlctl_fail(ctl, e == TML_BUNDLE_E_IO ? TMLCTL_EXIT_IO
                                                   : TMLCTL_EXIT_INVALID,
                         NULL, "%s: %s", key_path,
                         e == TML_BUNDLE_E_IO ? strerror(errno)
                                              : tml_bundle_strerror(e));
        goto out;
    }
    m = b->manifest;
    m.version = version;
    m.created = (uint32_t)time(NULL);
    m.expires = expires_days ? m.created + expires_days * 86400u : 0;
    /* A rollback carries no key-rotation side effects of the old bundle. */
    m.resets_floor = false;
    m.n_revoke = 0;
    for (size_t i = 0; i < b->n_labels; i++) {
        size_t n = b->labels[i].len < TML_MAX_NAME ? b->labels[i].len
                                                   : TML_MAX_NAME;
        memcpy(lab[i], b->labels[i].p, n);
        lab[i][n] = '\0';
        labels[i] = lab[i];
    }
    e = tml_bundle_build(key, &m, b->image.p, b->image.len,
                         b->n_labels ? labels : NULL, b->n_labels, out,
                         out_len);
    if (e != TML_BUNDLE_OK)
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_FAIL, NULL, "signing: %s",
                         tml_bundle_strerror(e));
out:
    tml_privkey_free(key);
    free(b);
    return rc;
}

static int
cmd_rollback(struct tmlctl *ctl, int argc, char **argv)
{
    const char *group = NULL, *key = NULL, *waves = NULL;
    uint32_t max_conc = 0, expires_days = 90;
    double threshold = -1;
    bool dry = false, watch = false, no_gate = false;
    struct tmlctl_args a;
    struct tmlctl_conn *c = NULL;
    cJSON *rl = NULL, *ml = NULL;
    uint8_t *old = NULL, *neu = NULL;
    size_t old_len = 0, neu_len = 0;
    char dir[] = "/tmp/tmlctl-rollback-XXXXXX", path[64];
    bool have_dir = false;
    int rc;
    const struct tmlctl_opt opts[] = {
        {"group", 'g', TMLCTL_OPT_STR, &group, "GROUP", "the group", true},
        {"key", 'k', TMLCTL_OPT_STR, &key, "KEY",
         "operator private key (re-signs the previous model)", false},
        {"waves", 0, TMLCTL_OPT_STR, &waves, "5,25,100",
         "cumulative % of targets per wave", false},
        {"max-concurrent", 0, TMLCTL_OPT_U32, &max_conc, "N",
         "devices downloading at once", false},
        {"failure-threshold", 0, TMLCTL_OPT_PERCENT, &threshold, "PCT",
         "failed share of a wave that pauses the rollout", false},
        {"no-gate", 0, TMLCTL_OPT_FLAG, &no_gate, NULL,
         "advance without the health gate", false},
        {"expires-days", 0, TMLCTL_OPT_U32, &expires_days, "D",
         "signature expiry (default 90, 0 = never)", false},
        {"dry-run", 0, TMLCTL_OPT_FLAG, &dry, NULL,
         "print the plan, change nothing", false},
        {"watch", 'w', TMLCTL_OPT_FLAG, &watch, NULL,
         "follow the rollout until it finishes or pauses", false},
        {0},
    };

    if (!tmlctl_parse(ctl, "rollback --group G --key KEY [options]", opts,
                      argc, argv, &a, &rc))
        return rc;
    if (a.n_pos != 0 || group == NULL)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "tmlctl rollback --group turbines --key fleet.key",
                           "give --group and no other arguments");
    if (key == NULL)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE,
                           "tmlctl rollback --group turbines --key fleet.key",
                           "a rollback re-signs the previous model as a new, "
                           "higher version (devices never go back in "
                           "version), so it needs the operator's private "
                           "key: give --key KEY (tmld holds no private key)");
    if (access(key, R_OK) != 0)
        return tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s: %s", key,
                           strerror(errno));

    rc = tmlctl_connect(ctl, &c);
    if (rc != TMLCTL_EXIT_OK)
        return rc;
    rc = tmlctl_request(c, "rollout.list", NULL, &rl);
    if (rc == TMLCTL_EXIT_OK)
        rc = tmlctl_request(c, "models", NULL, &ml);
    if (rc != TMLCTL_EXIT_OK)
        goto out;
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(ml, "models");
    const cJSON *live = NULL;
    const char *why = NULL;
    const cJSON *t = pick_target(cJSON_GetObjectItemCaseSensitive(rl,
                                                                  "rollouts"),
                                 group, models, &why, &live);
    if (live != NULL) {
        char hint[96];
        snprintf(hint, sizeof(hint), "tmlctl rollout abort %d",
                 (int)tmlctl_jnum(live, "id", 0));
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_CONFLICT, hint,
                         "group %s has a %s rollout (%d)", group,
                         tmlctl_jstr(live, "state", "?"),
                         (int)tmlctl_jnum(live, "id", 0));
        goto out;
    }
    if (t == NULL) {
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_NOTFOUND, NULL,
                         "nothing to roll group %s back to: %s", group, why);
        goto out;
    }
    const char *art = tmlctl_jstr(t, "artifact", "");
    const cJSON *tm = find_model(models, art);
    if (tm == NULL) {
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_NOTFOUND, NULL,
                         "model of rollout %d is no longer stored",
                         (int)tmlctl_jnum(t, "id", 0));
        goto out;
    }
    /* Above every stored version of this model for this hardware. */
    double top = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, models)
    {
        if (strcmp(tmlctl_jstr(m, "name", ""), tmlctl_jstr(tm, "name", "?")) ==
                0 &&
            strcmp(tmlctl_jstr(m, "hw", ""), tmlctl_jstr(tm, "hw", "?")) ==
                0 &&
            tmlctl_jnum(m, "version", 0) > top)
            top = tmlctl_jnum(m, "version", 0);
    }
    if (top >= (double)UINT32_MAX) {
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_CONFLICT, NULL,
                         "version space of %s exhausted",
                         tmlctl_jstr(tm, "name", "?"));
        goto out;
    }
    uint32_t version = (uint32_t)top + 1;
    rc = fetch(ctl, c, art, &old, &old_len);
    if (rc != TMLCTL_EXIT_OK)
        goto out;
    rc = resign(ctl, key, old, old_len, tmlctl_jstr(tm, "sha256", NULL),
                version, expires_days, &neu, &neu_len);
    if (rc != TMLCTL_EXIT_OK)
        goto out;
    tmlctl_close(c);
    c = NULL;
    if (!ctl->json)
        printf("Rolling %s back to %s v%d (rollout %d) as v%u\n", group,
               tmlctl_jstr(tm, "name", "?"), (int)tmlctl_jnum(tm, "version", 0),
               (int)tmlctl_jnum(t, "id", 0), version);
    if (mkdtemp(dir) == NULL) {
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "mkdtemp: %s",
                         strerror(errno));
        goto out;
    }
    have_dir = true;
    snprintf(path, sizeof(path), "%s/rollback.tmlb", dir);
    if (tml_bundle_write_file(path, neu, neu_len) != TML_BUNDLE_OK) {
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s: %s", path,
                         strerror(errno));
        goto out;
    }

    /* The rest is `tmlctl deploy BUNDLE --group G ...`. */
    char *fwd[MAX_FWD], nbuf[3][24], gbuf[TML_MAX_NAME + 1], wbuf[64];
    int n = 0;
    snprintf(gbuf, sizeof(gbuf), "%s", group);
    fwd[n++] = (char *)"deploy";
    fwd[n++] = path;
    fwd[n++] = (char *)"--group";
    fwd[n++] = gbuf;
    if (waves != NULL) {
        fwd[n++] = (char *)"--waves";
        snprintf(wbuf, sizeof(wbuf), "%s", waves);
        fwd[n++] = wbuf;
    }
    if (max_conc != 0) {
        snprintf(nbuf[0], sizeof(nbuf[0]), "%u", max_conc);
        fwd[n++] = (char *)"--max-concurrent";
        fwd[n++] = nbuf[0];
    }
    if (threshold >= 0) {
        snprintf(nbuf[1], sizeof(nbuf[1]), "%.0f", threshold);
        fwd[n++] = (char *)"--failure-threshold";
        fwd[n++] = nbuf[1];
    }
    if (no_gate)
        fwd[n++] = (char *)"--no-gate";
    if (dry)
        fwd[n++] = (char *)"--dry-run";
    if (watch)
        fwd[n++] = (char *)"--watch";
    fwd[n] = NULL;
    const struct tmlctl_cmd *dep = tmlctl_find("deploy");
    rc = dep != NULL ? dep->fn(ctl, n, fwd)
                     : tmlctl_fail(ctl, TMLCTL_EXIT_FAIL, NULL,
                                   "deploy command missing");
out:
    if (have_dir) {
        unlink(path);
        rmdir(dir);
    }
    if (c != NULL)
        tmlctl_close(c);
    cJSON_Delete(rl);
    cJSON_Delete(ml);
    free(old);
    free(neu);
    return rc;
}

TMLCTL_COMMAND("rollback",
               "re-deploy a group's previous confirmed model as a new version",
               cmd_rollback)
