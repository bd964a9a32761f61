/*
 * cmd_keygen.c: `tmlctl keygen --out PREFIX`: a new operator signing key
 * pair (ECDSA P-256): PREFIX.key (private, PEM, mode 0600), PREFIX.pub
 * (public, PEM) and PREFIX.h (raw public key + key id for firmware builds).
 * Refuses to overwrite an existing private key unless --force.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tml/bundle.h"
#include "tmlctl.h"

/* "fleet-2026" -> "fleet_2026"; the identifier for the C header. */
static void
ident_from_prefix(const char *prefix, char *out, size_t cap)
{
    const char *base = strrchr(prefix, '/');
    base = base ? base + 1 : prefix;
    size_t n = 0;
    if (!((*base >= 'a' && *base <= 'z') || (*base >= 'A' && *base <= 'Z')))
        out[n++] = 'k';
    for (; *base != '\0' && n + 1 < cap; base++) {
        char c = *base;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9');
        out[n++] = ok ? c : '_';
    }
    out[n] = '\0';
}

static int
cmd_keygen(struct tmlctl *ctl, int argc, char **argv)
{
    const char *prefix = NULL, *ident = NULL;
    bool force = false;
    const struct tmlctl_opt opts[] = {
        {"out", 'o', TMLCTL_OPT_STR, &prefix, "PREFIX",
         "write PREFIX.key, PREFIX.pub, PREFIX.h", true},
        {"ident", 0, TMLCTL_OPT_STR, &ident, "NAME",
         "C identifier prefix in PREFIX.h (default from PREFIX)", false},
        {"force", 'f', TMLCTL_OPT_FLAG, &force, NULL,
         "overwrite an existing key", false},
        {0},
    };
    struct tmlctl_args a;
    int rc;
    if (!tmlctl_parse(ctl, "keygen --out PREFIX [--ident NAME] [--force]", opts,
                      argc, argv, &a, &rc))
        return rc;
    if (a.n_pos != 0)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, "use --out PREFIX",
                           "unexpected argument '%s'", a.pos[0]);
    size_t plen = strlen(prefix);
    if (plen == 0 || plen > 4000)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL, "bad --out");
    char key_path[4100], pub_path[4100], h_path[4100], id[80];
    snprintf(key_path, sizeof(key_path), "%s.key", prefix);
    snprintf(pub_path, sizeof(pub_path), "%s.pub", prefix);
    snprintf(h_path, sizeof(h_path), "%s.h", prefix);
    if (ident == NULL) {
        ident_from_prefix(prefix, id, sizeof(id));
        ident = id;
    }

    struct tml_privkey *key = NULL;
    enum tml_bundle_err err = tml_privkey_generate(&key);
    if (err != TML_BUNDLE_OK)
        return tmlctl_fail(ctl, TMLCTL_EXIT_FAIL, NULL, "keygen: %s",
                           tml_bundle_strerror(err));
    struct tml_pubkey pub;
    tml_privkey_public(key, &pub);
    err = tml_privkey_write(key, key_path, force);
    tml_privkey_free(key);
    if (err != TML_BUNDLE_OK) {
        int e = errno;
        return tmlctl_fail(ctl, TMLCTL_EXIT_IO,
                           e == EEXIST ? "pick another --out, or --force to "
                                         "replace it (the old key is lost)"
                                       : NULL,
                           "%s: %s", key_path,
                           err == TML_BUNDLE_E_IO ? strerror(e)
                                                  : tml_bundle_strerror(err));
    }
    err = tml_pubkey_write_pem(&pub, pub_path);
    if (err == TML_BUNDLE_OK)
        err = tml_pubkey_write_header(&pub, h_path, ident);
    if (err != TML_BUNDLE_OK)
        return tmlctl_fail(
            ctl, err == TML_BUNDLE_E_INVAL ? TMLCTL_EXIT_USAGE : TMLCTL_EXIT_IO,
            err == TML_BUNDLE_E_INVAL ? "--ident must be a C identifier" : NULL,
            "writing %s / %s: %s", pub_path, h_path,
            err == TML_BUNDLE_E_IO ? strerror(errno)
                                   : tml_bundle_strerror(err));

    char hex[17];
    tml_key_id_hex(pub.kid, hex);
    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "key_id", hex);
        cJSON_AddStringToObject(o, "private_key", key_path);
        cJSON_AddStringToObject(o, "public_key", pub_path);
        cJSON_AddStringToObject(o, "header", h_path);
        return tmlctl_json_emit(o);
    }
    printf("key id       %s\nprivate key  %s (mode 0600: keep it off the "
           "gateway)\npublic key   %s\nC header     %s\n",
           hex, key_path, pub_path, h_path);
    return TMLCTL_EXIT_OK;
}

TMLCTL_COMMAND("keygen", "make an operator signing key pair (P-256)",
               cmd_keygen)
