/*
 * tml/bundle.h: operator keys and signed model bundles (libtmlbundle).
 *
 * A bundle (file extension .tmlb) is one CBOR map, described in
 * docs/bundle.md:
 *
 *   { 0: 1,              format version (TML_BUNDLE_FORMAT)
 *     1: bstr,           COSE_Sign1 (ES256) whose payload is the encoded
 *                        struct tml_manifest (proto.h)
 *     2: bstr,           the image: model bytes, then the golden vectors
 *     ?3: [* tstr] }     class labels (informational, count is signed)
 *
 * Keys >= 4 are skipped (forward compatible); negative keys are critical and
 * rejected when unknown. The manifest's size and sha256 cover the image.
 *
 * Operator keys are ECDSA P-256. A public key is handled as its raw 65-byte
 * uncompressed point (0x04 || X || Y); its key id is the first 8 bytes of
 * SHA-256 over those 65 bytes, and is the COSE "kid" of every manifest it
 * signs. The gateway (tmld) only ever needs public keys.
 *
 * Everything here is synchronous and may block on file I/O (key and bundle
 * files); a libuv caller should run tml_bundle_read_file from a work request.
 * Functions are thread-safe except that one struct tml_privkey must not be
 * used by two threads at once.
 */
#ifndef TML_BUNDLE_H
#define TML_BUNDLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tml/proto.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TML_BUNDLE_FORMAT 1u
#define TML_KEY_ID_LEN 8u                          /* bytes of a key id */
#define TML_PUBKEY_RAW_LEN 65u                     /* 0x04 || X || Y */
#define TML_BUNDLE_MAX_IMAGE (16u * 1024u * 1024u) /* image bytes */
#define TML_BUNDLE_MAX_FILE (TML_BUNDLE_MAX_IMAGE + 64u * 1024u)
#define TML_BUNDLE_MAX_LABELS 256u /* labels kept by the parser */
#define TML_BUNDLE_MAX_LABEL_LEN 64u
#define TML_BUNDLE_MAX_TRUSTED 8u /* keys one verify call may be given */

enum tml_bundle_err {
    TML_BUNDLE_OK = 0,
    TML_BUNDLE_E_IO, /* reading or writing a file failed (errno) */
    TML_BUNDLE_E_NOMEM,
    TML_BUNDLE_E_INVAL,       /* bad argument from the caller */
    TML_BUNDLE_E_KEY,         /* key file unreadable, not EC P-256 */
    TML_BUNDLE_E_CRYPTO,      /* mbedTLS failed (RNG, signing) */
    TML_BUNDLE_E_FORMAT,      /* not a bundle: bad CBOR / wrong types */
    TML_BUNDLE_E_TRUNCATED,   /* input ends inside an item */
    TML_BUNDLE_E_VERSION,     /* unsupported bundle format version */
    TML_BUNDLE_E_CRITICAL,    /* unknown critical (negative) field */
    TML_BUNDLE_E_OVERSIZE,    /* image, file or labels over the limits */
    TML_BUNDLE_E_COSE,        /* COSE_Sign1 does not decode */
    TML_BUNDLE_E_ALG,         /* algorithm is not ES256 / bad kid length */
    TML_BUNDLE_E_UNKNOWN_KEY, /* kid matches no trusted key */
    TML_BUNDLE_E_SIGNATURE,   /* signature does not verify */
    TML_BUNDLE_E_MANIFEST,    /* signed payload is not a valid manifest */
    TML_BUNDLE_E_SIZE,        /* image length differs from manifest size */
    TML_BUNDLE_E_HASH,        /* image SHA-256 differs from the manifest */
    TML_BUNDLE_E_EXPIRED,     /* manifest expired at the given time */
    TML_BUNDLE_E_LABELS,      /* label count differs from the manifest */
    TML_BUNDLE_E__COUNT
};

/* Short constant English text for err ("signature does not verify"). */
const char *tml_bundle_strerror(enum tml_bundle_err err);

/* ---- keys ---------------------------------------------------------------- */

struct tml_pubkey {
    uint8_t raw[TML_PUBKEY_RAW_LEN];
    uint8_t kid[TML_KEY_ID_LEN];
};

/* Computes the key id of a raw public key (first 8 bytes of its SHA-256). */
void tml_key_id(const uint8_t raw[TML_PUBKEY_RAW_LEN],
                uint8_t kid[TML_KEY_ID_LEN]);

/* Fills *out from a raw point; checks that it is a valid P-256 point.
 * Returns OK or E_KEY. */
TML_WUR enum tml_bundle_err tml_pubkey_from_raw(const uint8_t *raw, size_t len,
                                                struct tml_pubkey *out);

/* Loads a public key from a PEM or DER file (SubjectPublicKeyInfo, as
 * written by tml_privkey_write / `openssl ec -pubout`). A private key file
 * is accepted too (its public half is taken). Returns OK, E_IO or E_KEY. */
TML_WUR enum tml_bundle_err tml_pubkey_load(const char *path,
                                            struct tml_pubkey *out);

/* Writes the key id as 16 lowercase hex characters + NUL into hex[17]. */
void tml_key_id_hex(const uint8_t kid[TML_KEY_ID_LEN], char hex[17]);

/* An operator's private key; opaque (wraps an mbedTLS pk context). */
struct tml_privkey;

/* Generates a new P-256 key pair from the system entropy source.
 * On OK *out is owned by the caller (tml_privkey_free). */
TML_WUR enum tml_bundle_err tml_privkey_generate(struct tml_privkey **out);

/* Loads a private key PEM/DER file (SEC1 or PKCS#8, unencrypted).
 * Returns OK, E_IO, E_KEY; on OK *out is owned by the caller. */
TML_WUR enum tml_bundle_err tml_privkey_load(const char *path,
                                             struct tml_privkey **out);

/* The public half of key. */
void tml_privkey_public(const struct tml_privkey *key, struct tml_pubkey *out);

/* Writes the private key as PEM to path with mode 0600 (the file is created
 * with O_EXCL unless overwrite is true; it is never world-readable, not even
 * briefly). Returns OK, E_IO (errno set; EEXIST if it exists), E_CRYPTO. */
TML_WUR enum tml_bundle_err tml_privkey_write(const struct tml_privkey *key,
                                              const char *path, bool overwrite);

/* Writes a public key PEM (SubjectPublicKeyInfo), mode 0644. */
TML_WUR enum tml_bundle_err tml_pubkey_write_pem(const struct tml_pubkey *pub,
                                                 const char *path);

/* Writes a C header for firmware builds with the raw key and key id:
 *   static const uint8_t <ident>_pubkey[65] = {...};
 *   static const uint8_t <ident>_kid[8] = {...};
 * ident must be a C identifier. Mode 0644. */
TML_WUR enum tml_bundle_err
tml_pubkey_write_header(const struct tml_pubkey *pub, const char *path,
                        const char *ident);

/* Frees key (NULL is allowed); wipes the secret first. */
void tml_privkey_free(struct tml_privkey *key);

/* ---- signing ----------------------------------------------------------- */

/* Signs an encoded manifest payload as COSE_Sign1 / ES256 with key; the
 * protected header carries the key's kid. Writes at most cap bytes to out;
 * TML_MAX_MANIFEST is always enough for a manifest. Returns OK, E_INVAL
 * (cap too small), E_CRYPTO. */
TML_WUR enum tml_bundle_err tml_cose_sign(const struct tml_privkey *key,
                                          const uint8_t *payload,
                                          size_t payload_len, uint8_t *out,
                                          size_t cap, size_t *out_len);

/* Encodes *m with tml_manifest_encode and signs it (tml_cose_sign). The
 * caller fills every field, including size and sha256. */
TML_WUR enum tml_bundle_err tml_manifest_sign(const struct tml_privkey *key,
                                              const struct tml_manifest *m,
                                              uint8_t *out, size_t cap,
                                              size_t *out_len);

/* Builds a complete bundle. m is the manifest template: the function sets
 * m->size = image_len and m->sha256 = SHA-256(image) before signing (the
 * caller sets everything else, e.g. model_size, n_vectors, expires).
 * labels may be NULL when n_labels is 0; when labels are given m->n_labels
 * is set to n_labels. On OK *out is a malloc'ed buffer the caller frees with
 * free(). Returns OK, E_INVAL, E_OVERSIZE, E_NOMEM, E_MANIFEST (m does not
 * encode), E_CRYPTO. */
TML_WUR enum tml_bundle_err
tml_bundle_build(const struct tml_privkey *key, struct tml_manifest *m,
                 const uint8_t *image, size_t image_len,
                 const char *const *labels, size_t n_labels, uint8_t **out,
                 size_t *out_len);

/* ---- parsing and verification ------------------------------------------ */

/* A parsed bundle. Every pointer is a view into the buffer that was parsed
 * and lives only as long as it. */
struct tml_bundle {
    struct tml_bin cose;          /* the COSE_Sign1 bytes (key 1) */
    struct tml_cose_sign1 sign1;  /* its parts */
    struct tml_manifest manifest; /* decoded from sign1.payload */
    struct tml_bin image;         /* key 2 */
    size_t n_labels;              /* labels present (key 3) */
    struct tml_str labels[TML_BUNDLE_MAX_LABELS];
};

/* Parses the container, the COSE_Sign1 and the manifest; checks structure,
 * size and hash. Does NOT check the signature: never trust the result for
 * anything but diagnostics (use tml_bundle_verify). */
TML_WUR enum tml_bundle_err tml_bundle_parse(const uint8_t *buf, size_t len,
                                             struct tml_bundle *out);

/* Verifies a COSE_Sign1 (e.g. a manifest from a device message) against the
 * trusted keys: decode, alg ES256, kid lookup, signature. On OK *out holds
 * its parts and *key_index (may be NULL) the index of the key that matched.
 * Returns OK, E_COSE, E_ALG, E_UNKNOWN_KEY, E_SIGNATURE, E_INVAL. */
TML_WUR enum tml_bundle_err tml_cose_verify(const uint8_t *buf, size_t len,
                                            const struct tml_pubkey *trusted,
                                            size_t n_trusted,
                                            struct tml_cose_sign1 *out,
                                            size_t *key_index);

/* Full check of a bundle: the container and COSE_Sign1 structure, then the
 * signature against the trusted keys (any of them), and only then the signed
 * manifest, image size and hash, label count and the expiry when now_s != 0
 * (expired when manifest.expires != 0 and now_s >= expires). On OK *out is
 * filled and *key_index (may be NULL) says which key signed it. Returns the
 * first failure, in this order: FORMAT/TRUNCATED/VERSION/CRITICAL/OVERSIZE,
 * COSE, ALG, UNKNOWN_KEY, SIGNATURE, MANIFEST, SIZE, HASH, LABELS, EXPIRED. */
TML_WUR enum tml_bundle_err tml_bundle_verify(const uint8_t *buf, size_t len,
                                              const struct tml_pubkey *trusted,
                                              size_t n_trusted, uint64_t now_s,
                                              struct tml_bundle *out,
                                              size_t *key_index);

/* Reads a whole file (at most TML_BUNDLE_MAX_FILE bytes) into a malloc'ed
 * buffer the caller frees. Returns OK, E_IO (errno set), E_OVERSIZE,
 * E_NOMEM. */
TML_WUR enum tml_bundle_err tml_bundle_read_file(const char *path,
                                                 uint8_t **buf, size_t *len);

/* Writes len bytes to path atomically (temp file, fsync, rename), mode
 * 0644. Returns OK or E_IO. */
TML_WUR enum tml_bundle_err
tml_bundle_write_file(const char *path, const uint8_t *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* TML_BUNDLE_H */
