/*
 * ota_store.c: content-addressed, signature-checked artifact store and its
 * chunk cache (see ota_store.h).
 *
 * Invariants: a file in the store verified when it was written; an artifact
 * in the cache verified when it was loaded; the cache never holds more than
 * OTA_STORE_CACHE_MAX entries nor (apart from pinned ones) more than
 * cache_cap_bytes. It does not touch the database: the models table is
 * ota.c's, fed from struct ota_model_info.
 */
#include "ota_store.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <mbedtls/sha256.h>

static void
set_err(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_err(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || cap == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

void
ota_hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

bool
ota_is_hash_hex(const char *s)
{
    size_t i;

    if (s == NULL)
        return false;
    for (i = 0; i < OTA_HASH_HEX_LEN; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    }
    return s[i] == '\0';
}

int
ota_store_init(struct ota_store *s, const char *state_dir,
               uint64_t cache_cap_bytes)
{
    int n;

    memset(s, 0, sizeof(*s));
    n = snprintf(s->dir, sizeof(s->dir), "%s/artifacts", state_dir);
    if (n < 0 || (size_t)n + 1 + OTA_HASH_HEX_LEN + 16 >= sizeof(s->dir))
        return -ENAMETOOLONG;
    if (mkdir(s->dir, 0750) != 0 && errno != EEXIST)
        return -errno;
    s->cache_cap_bytes = cache_cap_bytes;
    return 0;
}

static void
artifact_free(struct ota_artifact *a)
{
    if (a == NULL)
        return;
    free(a->bundle);
    free(a);
}

void
ota_store_close(struct ota_store *s)
{
    for (size_t i = 0; i < s->n_cache; i++)
        artifact_free(s->cache[i]);
    s->n_cache = 0;
    s->cache_bytes = 0;
}

int
ota_store_add_trusted(struct ota_store *s, const char *path, char *err,
                      size_t err_cap)
{
    struct tml_pubkey k;
    enum tml_bundle_err e;
    char kid[17];

    if (s->n_trusted == TML_BUNDLE_MAX_TRUSTED) {
        set_err(err, err_cap, "at most %u trusted keys",
                TML_BUNDLE_MAX_TRUSTED);
        return -ENOSPC;
    }
    e = tml_pubkey_load(path, &k);
    if (e != TML_BUNDLE_OK) {
        set_err(err, err_cap, "%s: %s", path, tml_bundle_strerror(e));
        return -EINVAL;
    }
    for (size_t i = 0; i < s->n_trusted; i++) {
        if (memcmp(s->trusted[i].kid, k.kid, TML_KEY_ID_LEN) == 0) {
            tml_key_id_hex(k.kid, kid);
            set_err(err, err_cap, "%s: key %s listed twice", path, kid);
            return -EEXIST;
        }
    }
    s->trusted[s->n_trusted++] = k;
    return 0;
}

static void
fill_info(const struct tml_bundle *b, const uint8_t file_hash[32],
          size_t bundle_len, struct ota_model_info *info)
{
    const struct tml_manifest *m = &b->manifest;

    memset(info, 0, sizeof(*info));
    ota_hex(file_hash, 32, info->artifact);
    ota_hex(m->sha256, TML_SHA256_LEN, info->sha256);
    /* The manifest decoder bounds name and hw to TML_MAX_NAME. */
    memcpy(info->name, m->name.p,
           m->name.len < TML_MAX_NAME ? m->name.len : TML_MAX_NAME);
    memcpy(info->hw, m->hw.p,
           m->hw.len < TML_MAX_NAME ? m->hw.len : TML_MAX_NAME);
    info->version = m->version;
    info->size = m->size;
    info->model_size = m->model_size;
    info->arena_size = m->arena_size;
    info->min_agent_version = m->min_agent_version;
    info->created = m->created;
    info->expires = m->expires;
    if (b->sign1.kid.len == TML_KEY_ID_LEN)
        tml_key_id_hex(b->sign1.kid.p, info->key_id);
    info->bundle_len = (uint32_t)bundle_len;
}

static int
verify(const struct ota_store *s, const uint8_t *buf, size_t len,
       uint64_t now_s, struct tml_bundle *b, char *err, size_t err_cap)
{
    enum tml_bundle_err e;

    if (s->n_trusted == 0) {
        set_err(err, err_cap, "no trusted keys configured ([ota] "
                "trusted_keys)");
        return -EPERM;
    }
    e = tml_bundle_verify(buf, len, s->trusted, s->n_trusted, now_s, b, NULL);
    switch (e) {
    case TML_BUNDLE_OK:
        return 0;
    case TML_BUNDLE_E_UNKNOWN_KEY:
    case TML_BUNDLE_E_SIGNATURE:
    case TML_BUNDLE_E_SIZE:
    case TML_BUNDLE_E_HASH:
    case TML_BUNDLE_E_EXPIRED:
    case TML_BUNDLE_E_ALG:
    case TML_BUNDLE_E_LABELS:
        set_err(err, err_cap, "bundle refused: %s", tml_bundle_strerror(e));
        return -EPERM;
    case TML_BUNDLE_E_NOMEM:
        set_err(err, err_cap, "out of memory");
        return -ENOMEM;
    default:
        set_err(err, err_cap, "not a valid bundle: %s",
                tml_bundle_strerror(e));
        return -EINVAL;
    }
}

static int
artifact_path(const struct ota_store *s, const char *hex, char *path,
              size_t cap)
{
    int n = snprintf(path, cap, "%s/%s.tmlb", s->dir, hex);

    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

int
ota_store_put(const struct ota_store *s, const uint8_t *buf, size_t len,
              uint64_t now_s, struct ota_model_info *info, char *err,
              size_t err_cap)
{
    struct tml_bundle *b;
    uint8_t h[32];
    char hex[OTA_HASH_HEX_LEN + 1], path[OTA_STORE_PATH_MAX + 80];
    struct stat st;
    int rc;

    if (buf == NULL || len == 0 || len > TML_BUNDLE_MAX_FILE) {
        set_err(err, err_cap, "bundle size %zu out of range", len);
        return -EINVAL;
    }
    /* struct tml_bundle holds 256 label views: keep it off the stack of a
     * worker thread. */
    b = malloc(sizeof(*b));
    if (b == NULL)
        return -ENOMEM;
    rc = verify(s, buf, len, now_s, b, err, err_cap);
    if (rc != 0)
        goto out;
    if (mbedtls_sha256_ret(buf, len, h, 0) != 0) {
        rc = -EIO;
        goto out;
    }
    ota_hex(h, sizeof(h), hex);
    rc = artifact_path(s, hex, path, sizeof(path));
    if (rc != 0)
        goto out;
    /* Content-addressed: a file of the right size under this name is this
     * bundle (files are written atomically and re-verified on load). */
    if (stat(path, &st) != 0 || (size_t)st.st_size != len) {
        if (tml_bundle_write_file(path, buf, len) != TML_BUNDLE_OK) {
            set_err(err, err_cap, "writing %s: %s", path, strerror(errno));
            rc = -EIO;
            goto out;
        }
    }
    fill_info(b, h, len, info);
out:
    free(b);
    return rc;
}

static void
evict(struct ota_store *s, size_t keep_bytes)
{
    /* Bounded by the cache size: each pass removes one entry or stops. */
    while (s->n_cache > 0 &&
           (s->n_cache >= OTA_STORE_CACHE_MAX ||
            s->cache_bytes + keep_bytes > s->cache_cap_bytes)) {
        size_t victim = s->n_cache;
        for (size_t i = 0; i < s->n_cache; i++) {
            if (s->cache[i]->pins == 0 &&
                (victim == s->n_cache ||
                 s->cache[i]->last_used < s->cache[victim]->last_used))
                victim = i;
        }
        if (victim == s->n_cache)
            return; /* everything pinned */
        s->cache_bytes -= s->cache[victim]->bundle_len;
        artifact_free(s->cache[victim]);
        s->cache[victim] = s->cache[--s->n_cache];
    }
}

int
ota_store_get(struct ota_store *s, const char *artifact,
              struct ota_artifact **out)
{
    struct ota_artifact *a = NULL;
    struct tml_bundle *b = NULL;
    char path[OTA_STORE_PATH_MAX + 80];
    uint8_t h[32];
    char hex[OTA_HASH_HEX_LEN + 1];
    int rc;

    if (!ota_is_hash_hex(artifact))
        return -EINVAL;
    for (size_t i = 0; i < s->n_cache; i++) {
        if (strcmp(s->cache[i]->info.artifact, artifact) == 0) {
            s->cache[i]->last_used = ++s->use_clock;
            *out = s->cache[i];
            return 0;
        }
    }
    rc = artifact_path(s, artifact, path, sizeof(path));
    if (rc != 0)
        return rc;
    a = calloc(1, sizeof(*a));
    b = malloc(sizeof(*b));
    if (a == NULL || b == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if (tml_bundle_read_file(path, &a->bundle, &a->bundle_len) !=
        TML_BUNDLE_OK) {
        rc = errno == ENOENT ? -ENOENT : -EIO;
        goto out;
    }
    s->disk_loads++;
    if (mbedtls_sha256_ret(a->bundle, a->bundle_len, h, 0) != 0) {
        rc = -EIO;
        goto out;
    }
    ota_hex(h, sizeof(h), hex);
    if (strcmp(hex, artifact) != 0 ||
        verify(s, a->bundle, a->bundle_len, 0, b, NULL, 0) != 0) {
        rc = -EPERM;
        goto out;
    }
    fill_info(b, h, a->bundle_len, &a->info);
    a->cose = b->cose.p;
    a->cose_len = b->cose.len;
    a->image = b->image.p;
    a->image_len = b->image.len;
    evict(s, a->bundle_len);
    if (s->n_cache == OTA_STORE_CACHE_MAX) {
        rc = -ENOMEM; /* every entry pinned */
        goto out;
    }
    a->last_used = ++s->use_clock;
    s->cache[s->n_cache++] = a;
    s->cache_bytes += a->bundle_len;
    *out = a;
    a = NULL;
    rc = 0;
out:
    free(b);
    artifact_free(a);
    return rc;
}

void
ota_store_pin(struct ota_artifact *a)
{
    a->pins++;
}

void
ota_store_unpin(struct ota_artifact *a)
{
    if (a->pins > 0)
        a->pins--;
}

size_t
ota_store_chunk(const struct ota_artifact *a, uint32_t offset,
                uint32_t max_len, const uint8_t **data)
{
    size_t n;

    if (offset >= a->image_len)
        return 0;
    n = a->image_len - offset;
    if (n > max_len)
        n = max_len;
    if (n > TML_CHUNK_MAX)
        n = TML_CHUNK_MAX;
    *data = a->image + offset;
    return n;
}

/* ---- base64 (RFC 4648, with padding) ---------------------------------------- */

static int
b64_val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long
ota_b64_decode(const char *s, uint8_t *out, size_t cap)
{
    size_t n = strlen(s), o = 0;

    if (n % 4 != 0)
        return -1;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        size_t pad = 0;
        for (int k = 0; k < 4; k++) {
            if (s[i + k] == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
            } else {
                v[k] = b64_val(s[i + k]);
                if (v[k] < 0 || pad > 0)
                    return -1;
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
                     (uint32_t)v[2] << 6 | (uint32_t)v[3];
        /* Canonical only: the bits a padded group drops must be zero. */
        if ((pad == 2 && (w & 0xffffu) != 0) || (pad == 1 && (w & 0xffu) != 0))
            return -1;
        if (o + 3 - pad > cap)
            return -1;
        out[o++] = (uint8_t)(w >> 16);
        if (pad < 2)
            out[o++] = (uint8_t)(w >> 8);
        if (pad < 1)
            out[o++] = (uint8_t)w;
    }
    return (long)o;
}
