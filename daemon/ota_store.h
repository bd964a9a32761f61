/*
 * ota_store.h: tmld's artifact store for signed model bundles.
 *
 * Bundles (tml/bundle.h) are kept content-addressed under
 * <state dir>/artifacts/<sha256 of the bundle file>.tmlb. A bundle is
 * stored only after its signature verified against tmld's configured
 * trusted public keys (tmld never holds a private key), its image hash and
 * size matched the signed manifest and it had not expired. It is verified
 * again every time it is loaded from disk, so a file altered on disk is
 * never served.
 *
 * Loaded artifacts live in a small in-memory cache (LRU, bounded in count
 * and bytes): serving chunks to a thousand devices reads the file once.
 * Chunk serving is by (offset, length) into the image.
 *
 * Threading: ota_store_put and ota_store_verify_file only read the store's
 * directory and keys, which do not change after start-up: they may run on a
 * worker thread. Everything else is loop-thread only.
 */
#ifndef TML_OTA_STORE_H
#define TML_OTA_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tml/bundle.h"
#include "tml/proto.h"

#define OTA_HASH_HEX_LEN 64
#define OTA_STORE_CACHE_MAX 8
#define OTA_STORE_PATH_MAX 512
#define OTA_STORE_ERR_MAX 160

/* What the models table keeps about one stored artifact. */
struct ota_model_info {
    char artifact[OTA_HASH_HEX_LEN + 1]; /* SHA-256 of the bundle file */
    char sha256[OTA_HASH_HEX_LEN + 1];   /* SHA-256 of the image */
    char name[TML_MAX_NAME + 1];
    char hw[TML_MAX_NAME + 1];
    uint32_t version;
    uint32_t size;          /* image bytes */
    uint32_t model_size;
    uint32_t arena_size;
    uint32_t min_agent_version;
    uint32_t created;       /* manifest created, unix s */
    uint32_t expires;       /* 0 = never */
    char key_id[2 * TML_KEY_ID_LEN + 1];
    uint32_t bundle_len;
};

/* A loaded, verified artifact. Views point into `bundle`. */
struct ota_artifact {
    struct ota_model_info info;
    uint8_t *bundle; /* owned */
    size_t bundle_len;
    const uint8_t *cose; /* the signed manifest, sent in OFFERs */
    size_t cose_len;
    const uint8_t *image;
    size_t image_len;
    uint64_t last_used; /* LRU stamp */
    unsigned pins;      /* rollouts using it; pinned entries are not evicted */
};

struct ota_store {
    char dir[OTA_STORE_PATH_MAX];
    struct tml_pubkey trusted[TML_BUNDLE_MAX_TRUSTED];
    size_t n_trusted;
    struct ota_artifact *cache[OTA_STORE_CACHE_MAX];
    size_t n_cache;
    uint64_t cache_bytes, cache_cap_bytes;
    uint64_t use_clock;
    uint64_t disk_loads; /* artifacts read from disk (tests, bench) */
};

/* Initialises s for <state_dir>/artifacts (created 0750 if missing) with a
 * cache of at most cache_cap_bytes. Returns 0, -ENAMETOOLONG or -errno of
 * mkdir. */
int ota_store_init(struct ota_store *s, const char *state_dir,
                   uint64_t cache_cap_bytes) __attribute__((warn_unused_result));
/* Frees every cached artifact. */
void ota_store_close(struct ota_store *s);

/* Adds a trusted public key (PEM/DER file, or a private key file whose
 * public half is taken). Returns 0, -ENOSPC (too many), -EINVAL (not a
 * P-256 key; err says why), -EEXIST (same key id twice). */
int ota_store_add_trusted(struct ota_store *s, const char *path, char *err,
                          size_t err_cap) __attribute__((warn_unused_result));

/* Verifies buf as a bundle against the trusted keys at time now_s and
 * writes it atomically to the store (idempotent: an identical file already
 * there is fine). On 0, *info describes it. Returns 0, -EPERM (signature,
 * unknown key, hash, size, expired: err says which), -EINVAL (not a
 * bundle), -EIO. Blocking; may run on a worker thread. */
int ota_store_put(const struct ota_store *s, const uint8_t *buf, size_t len,
                  uint64_t now_s, struct ota_model_info *info, char *err,
                  size_t err_cap) __attribute__((warn_unused_result));

/* Returns the artifact with bundle hash `artifact` (64 hex), loading and
 * re-verifying it from disk on a cache miss (expiry is not checked here:
 * the offer path checks it). On 0 *out is valid until the next ota_store_get
 * or ota_store_close unless pinned. Returns 0, -ENOENT, -EPERM (the file
 * no longer verifies), -ENOMEM, -EINVAL. */
int ota_store_get(struct ota_store *s, const char *artifact,
                  struct ota_artifact **out) __attribute__((warn_unused_result));

/* Pin / unpin an artifact in the cache (a running rollout pins its
 * artifact so a burst of other loads cannot evict it). */
void ota_store_pin(struct ota_artifact *a);
void ota_store_unpin(struct ota_artifact *a);

/* The bytes of the image from offset, at most max_len and TML_CHUNK_MAX.
 * Returns the number of bytes (0 when offset >= size: nothing to send). */
size_t ota_store_chunk(const struct ota_artifact *a, uint32_t offset,
                       uint32_t max_len, const uint8_t **data);

/* Lowercase hex of n bytes into out (2n + 1 bytes). */
void ota_hex(const uint8_t *p, size_t n, char *out);

/* Decodes NUL-terminated base64 (RFC 4648 alphabet, padded, no line
 * breaks) into out (cap bytes). Returns the bytes written, or -1 for
 * anything else (bad character, length, padding, or more than cap). The
 * control verb artifact.upload parses its data with it. */
long ota_b64_decode(const char *s, uint8_t *out, size_t cap);

/* True if s is exactly 64 lowercase hex characters. */
bool ota_is_hash_hex(const char *s);

#endif /* TML_OTA_STORE_H */
