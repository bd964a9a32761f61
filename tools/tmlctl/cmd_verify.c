/*
 * cmd_verify.c: `tmlctl verify BUNDLE --pub KEY [--pub KEY2]`: checks a
 * bundle's signature against one or more trusted public keys, then its
 * manifest, image size and hash, label count and expiry, and prints what
 * it carries. Exit 0 when valid, 6 (INVALID) with the reason when not.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tml/bundle.h"
#include "tmlctl.h"

static void
hex(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", p[i]);
    out[2 * n] = '\0';
}

static void
fmt_time(uint32_t t, char *buf, size_t cap)
{
    if (t == 0) {
        snprintf(buf, cap, "never");
        return;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int
cmd_verify(struct tmlctl *ctl, int argc, char **argv)
{
    struct tmlctl_list pubs = {0};
    uint64_t now_arg = 0;
    bool no_expiry = false;
    const char *extract = NULL;
    const struct tmlctl_opt opts[] = {
        {"pub", 'p', TMLCTL_OPT_LIST, &pubs, "KEY",
         "trusted public key (PEM); give several to accept any", true},
        {"now", 0, TMLCTL_OPT_U64, &now_arg, "UNIXTIME",
         "check expiry at this time instead of now", false},
        {"ignore-expiry", 0, TMLCTL_OPT_FLAG, &no_expiry, NULL,
         "do not check the expiry", false},
        {"extract", 0, TMLCTL_OPT_STR, &extract, "FILE",
         "write the verified image to FILE", false},
        {0},
    };
    struct tmlctl_args a;
    int rc;
    if (!tmlctl_parse(ctl, "verify BUNDLE --pub KEY [--pub KEY2 ...]", opts,
                      argc, argv, &a, &rc))
        return rc;
    if (a.n_pos != 1)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL,
                           "give exactly one bundle");
    if (pubs.n > TML_BUNDLE_MAX_TRUSTED)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL,
                           "at most %u trusted keys", TML_BUNDLE_MAX_TRUSTED);
    struct tml_pubkey trusted[TML_BUNDLE_MAX_TRUSTED];
    for (size_t i = 0; i < pubs.n; i++) {
        enum tml_bundle_err e = tml_pubkey_load(pubs.v[i], &trusted[i]);
        if (e != TML_BUNDLE_OK)
            return tmlctl_fail(
                ctl, e == TML_BUNDLE_E_IO ? TMLCTL_EXIT_IO : TMLCTL_EXIT_USAGE,
                NULL, "%s: %s", pubs.v[i],
                e == TML_BUNDLE_E_IO ? strerror(errno)
                                     : tml_bundle_strerror(e));
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    enum tml_bundle_err err = tml_bundle_read_file(a.pos[0], &buf, &len);
    if (err != TML_BUNDLE_OK)
        /* Too big to be a bundle is a verdict on the file, not an I/O
         * problem. */
        return tmlctl_fail(ctl,
                           err == TML_BUNDLE_E_OVERSIZE ? TMLCTL_EXIT_INVALID
                                                        : TMLCTL_EXIT_IO,
                           NULL, "%s: %s", a.pos[0],
                           err == TML_BUNDLE_E_IO ? strerror(errno)
                                                  : tml_bundle_strerror(err));
    uint64_t now = no_expiry ? 0 : now_arg ? now_arg : (uint64_t)time(NULL);
    struct tml_bundle *b = malloc(sizeof(*b));
    if (b == NULL) {
        free(buf);
        return tmlctl_fail(ctl, TMLCTL_EXIT_FAIL, NULL, "out of memory");
    }
    size_t which = 0;
    err = tml_bundle_verify(buf, len, trusted, pubs.n, now, b, &which);
    if (err != TML_BUNDLE_OK) {
        if (ctl->json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "bundle", a.pos[0]);
            cJSON_AddBoolToObject(o, "valid", false);
            cJSON_AddStringToObject(o, "reason", tml_bundle_strerror(err));
            tmlctl_json_emit(o);
        }
        const char *hint = err == TML_BUNDLE_E_UNKNOWN_KEY
                               ? "pass the signer's public key with --pub"
                           : err == TML_BUNDLE_E_EXPIRED
                               ? "re-sign with a later --expires"
                               : NULL;
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_INVALID, hint, "%s: REJECTED: %s",
                         a.pos[0], tml_bundle_strerror(err));
        free(b);
        free(buf);
        return rc;
    }
    const struct tml_manifest *m = &b->manifest;
    if (extract != NULL) {
        err = tml_bundle_write_file(extract, b->image.p, b->image.len);
        if (err != TML_BUNDLE_OK) {
            rc = tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s: %s", extract,
                             strerror(errno));
            free(b);
            free(buf);
            return rc;
        }
    }
    char kid[17], sha[65], created[32], expires[32];
    tml_key_id_hex(trusted[which].kid, kid);
    hex(m->sha256, 32, sha);
    fmt_time(m->created, created, sizeof(created));
    fmt_time(m->expires, expires, sizeof(expires));
    char name[TML_MAX_NAME + 1], hw[TML_MAX_NAME + 1];
    snprintf(name, sizeof(name), "%.*s", (int)m->name.len, m->name.p);
    snprintf(hw, sizeof(hw), "%.*s", (int)m->hw.len, m->hw.p);
    char shape[64] = "";
    for (size_t i = 0; i < m->n_shape; i++)
        snprintf(shape + strlen(shape), sizeof(shape) - strlen(shape), "%s%u",
                 i ? "x" : "", m->input_shape[i]);
    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "bundle", a.pos[0]);
        cJSON_AddBoolToObject(o, "valid", true);
        cJSON_AddStringToObject(o, "key_id", kid);
        cJSON_AddStringToObject(o, "name", name);
        cJSON_AddNumberToObject(o, "version", m->version);
        cJSON_AddStringToObject(o, "hw", hw);
        cJSON_AddNumberToObject(o, "size", m->size);
        cJSON_AddNumberToObject(o, "model_size", m->model_size);
        cJSON_AddStringToObject(o, "sha256", sha);
        cJSON_AddNumberToObject(o, "created", m->created);
        cJSON_AddNumberToObject(o, "expires", m->expires);
        cJSON_AddNumberToObject(o, "arena_size", m->arena_size);
        cJSON_AddStringToObject(o, "input_shape", shape);
        cJSON_AddNumberToObject(o, "vectors", m->n_vectors);
        cJSON *labels = cJSON_AddArrayToObject(o, "labels");
        for (size_t i = 0; i < b->n_labels; i++) {
            char l[TML_BUNDLE_MAX_LABEL_LEN + 1];
            snprintf(l, sizeof(l), "%.*s", (int)b->labels[i].len,
                     b->labels[i].p);
            cJSON_AddItemToArray(labels, cJSON_CreateString(l));
        }
        cJSON *rev = cJSON_AddArrayToObject(o, "revokes");
        for (size_t i = 0; i < m->n_revoke; i++) {
            char h[2 * TML_MAX_KID + 1];
            hex(m->revoke_kids[i].p,
                m->revoke_kids[i].len > TML_MAX_KID ? TML_MAX_KID
                                                    : m->revoke_kids[i].len,
                h);
            cJSON_AddItemToArray(rev, cJSON_CreateString(h));
        }
        rc = tmlctl_json_emit(o);
    } else {
        printf("%s%s: valid%s, signed by key %s\n",
               tmlctl_color(ctl, TMLCTL_C_GREEN), a.pos[0], tmlctl_reset(ctl),
               kid);
        printf("  model    %s v%u for %s\n", name, m->version, hw);
        printf("  image    %u bytes (model %u, %u vectors), sha256 %s\n",
               m->size, m->model_size, m->n_vectors, sha);
        printf("  created  %s, expires %s\n", created, expires);
        if (m->arena_size || m->n_shape)
            printf("  needs    arena %u bytes, input %s\n", m->arena_size,
                   m->n_shape ? shape : "-");
        if (b->n_labels)
            printf("  labels   %zu\n", b->n_labels);
        if (m->n_revoke)
            printf("  revokes  %zu key id(s)\n", m->n_revoke);
        rc = TMLCTL_EXIT_OK;
    }
    free(b);
    free(buf);
    return rc;
}

TMLCTL_COMMAND("verify", "check a bundle's signature and contents", cmd_verify)
