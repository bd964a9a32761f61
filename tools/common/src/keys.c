/*
 * keys.c: operator key pairs for libtmlbundle (ECDSA P-256 with mbedTLS
 * 2.28): generate, load, write (PEM, C header), key ids.
 *
 * Invariants: a private key file is created 0600 with O_EXCL/O_NOFOLLOW and
 * is never world-readable, not even between open and chmod; secrets in
 * memory are wiped before they are freed. Only P-256 is accepted anywhere.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>

#include "internal.h"
#include "tml/bundle.h"

void
tml_key_id(const uint8_t raw[TML_PUBKEY_RAW_LEN], uint8_t kid[TML_KEY_ID_LEN])
{
    uint8_t h[32];
    mbedtls_sha256_ret(raw, TML_PUBKEY_RAW_LEN, h, 0);
    memcpy(kid, h, TML_KEY_ID_LEN);
}

void
tml_key_id_hex(const uint8_t kid[TML_KEY_ID_LEN], char hex[17])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < TML_KEY_ID_LEN; i++) {
        hex[2 * i] = digits[kid[i] >> 4];
        hex[2 * i + 1] = digits[kid[i] & 15];
    }
    hex[16] = '\0';
}

enum tml_bundle_err
tml_pubkey_from_raw(const uint8_t *raw, size_t len, struct tml_pubkey *out)
{
    if (raw == NULL || len != TML_PUBKEY_RAW_LEN || raw[0] != 0x04)
        return TML_BUNDLE_E_KEY;
    mbedtls_ecp_group grp;
    mbedtls_ecp_point q;
    mbedtls_ecp_group_init(&grp);
    mbedtls_ecp_point_init(&q);
    enum tml_bundle_err err = TML_BUNDLE_E_KEY;
    if (mbedtls_ecp_group_load(&grp, MBEDTLS_ECP_DP_SECP256R1) == 0 &&
        mbedtls_ecp_point_read_binary(&grp, &q, raw, len) == 0 &&
        mbedtls_ecp_check_pubkey(&grp, &q) == 0) {
        memcpy(out->raw, raw, TML_PUBKEY_RAW_LEN);
        tml_key_id(out->raw, out->kid);
        err = TML_BUNDLE_OK;
    }
    mbedtls_ecp_point_free(&q);
    mbedtls_ecp_group_free(&grp);
    return err;
}

/* Takes the public point of an EC P-256 pk context. */
static enum tml_bundle_err
pk_public(const mbedtls_pk_context *pk, struct tml_pubkey *out)
{
    if (mbedtls_pk_get_type(pk) != MBEDTLS_PK_ECKEY &&
        mbedtls_pk_get_type(pk) != MBEDTLS_PK_ECDSA)
        return TML_BUNDLE_E_KEY;
    const mbedtls_ecp_keypair *ec = mbedtls_pk_ec(*pk);
    if (ec->grp.id != MBEDTLS_ECP_DP_SECP256R1)
        return TML_BUNDLE_E_KEY;
    uint8_t raw[TML_PUBKEY_RAW_LEN];
    size_t olen = 0;
    if (mbedtls_ecp_point_write_binary(&ec->grp, &ec->Q,
                                       MBEDTLS_ECP_PF_UNCOMPRESSED, &olen, raw,
                                       sizeof(raw)) != 0 ||
        olen != TML_PUBKEY_RAW_LEN)
        return TML_BUNDLE_E_KEY;
    return tml_pubkey_from_raw(raw, olen, out);
}

/* mbedTLS reports a missing file as a generic file I/O error; check first so
 * the caller can tell "no such file" (E_IO, errno) from "not a key". */
static bool
readable(const char *path)
{
    return access(path, R_OK) == 0;
}

enum tml_bundle_err
tml_pubkey_load(const char *path, struct tml_pubkey *out)
{
    if (path == NULL || out == NULL)
        return TML_BUNDLE_E_INVAL;
    if (!readable(path))
        return TML_BUNDLE_E_IO;
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    enum tml_bundle_err err = TML_BUNDLE_E_KEY;
    if (mbedtls_pk_parse_public_keyfile(&pk, path) == 0 ||
        (mbedtls_pk_free(&pk), mbedtls_pk_init(&pk),
         mbedtls_pk_parse_keyfile(&pk, path, NULL) == 0))
        err = pk_public(&pk, out);
    mbedtls_pk_free(&pk);
    return err;
}

struct tml_privkey {
    mbedtls_pk_context pk;
};

/* A DRBG seeded from the system entropy; used for key generation and for
 * the blinding of deterministic signatures. */
static int
drbg_seed(mbedtls_entropy_context *ent, mbedtls_ctr_drbg_context *drbg)
{
    static const char pers[] = "tmlbundle";
    mbedtls_entropy_init(ent);
    mbedtls_ctr_drbg_init(drbg);
    return mbedtls_ctr_drbg_seed(drbg, mbedtls_entropy_func, ent,
                                 (const unsigned char *)pers, sizeof(pers) - 1);
}

static void
drbg_free(mbedtls_entropy_context *ent, mbedtls_ctr_drbg_context *drbg)
{
    mbedtls_ctr_drbg_free(drbg);
    mbedtls_entropy_free(ent);
}

enum tml_bundle_err
tml_privkey_generate(struct tml_privkey **out)
{
    if (out == NULL)
        return TML_BUNDLE_E_INVAL;
    struct tml_privkey *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return TML_BUNDLE_E_NOMEM;
    mbedtls_pk_init(&k->pk);
    mbedtls_entropy_context ent;
    mbedtls_ctr_drbg_context drbg;
    enum tml_bundle_err err = TML_BUNDLE_E_CRYPTO;
    if (drbg_seed(&ent, &drbg) == 0 &&
        mbedtls_pk_setup(&k->pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) ==
            0 &&
        mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(k->pk),
                            mbedtls_ctr_drbg_random, &drbg) == 0)
        err = TML_BUNDLE_OK;
    drbg_free(&ent, &drbg);
    if (err != TML_BUNDLE_OK) {
        tml_privkey_free(k);
        return err;
    }
    *out = k;
    return TML_BUNDLE_OK;
}

enum tml_bundle_err
tml_privkey_load(const char *path, struct tml_privkey **out)
{
    if (path == NULL || out == NULL)
        return TML_BUNDLE_E_INVAL;
    if (!readable(path))
        return TML_BUNDLE_E_IO;
    struct tml_privkey *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return TML_BUNDLE_E_NOMEM;
    mbedtls_pk_init(&k->pk);
    struct tml_pubkey pub;
    if (mbedtls_pk_parse_keyfile(&k->pk, path, NULL) != 0 ||
        pk_public(&k->pk, &pub) != TML_BUNDLE_OK) {
        tml_privkey_free(k);
        return TML_BUNDLE_E_KEY;
    }
    *out = k;
    return TML_BUNDLE_OK;
}

void
tml_privkey_public(const struct tml_privkey *key, struct tml_pubkey *out)
{
    /* The key was checked to be P-256 when it was made or loaded. */
    if (pk_public(&key->pk, out) != TML_BUNDLE_OK)
        memset(out, 0, sizeof(*out));
}

void
tml_privkey_free(struct tml_privkey *key)
{
    if (key == NULL)
        return;
    mbedtls_pk_free(&key->pk); /* zeroizes the private scalar */
    mbedtls_platform_zeroize(key, sizeof(*key));
    free(key);
}

enum tml_bundle_err
tml__write_file_mode(const char *path, const void *buf, size_t len, mode_t mode,
                     bool excl)
{
    int flags =
        O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (excl ? O_EXCL : O_TRUNC);
    int fd = open(path, flags, mode);
    if (fd < 0)
        return TML_BUNDLE_E_IO;
    /* The file may have existed with wider permissions (overwrite). */
    enum tml_bundle_err err = TML_BUNDLE_OK;
    const uint8_t *p = buf;
    if (fchmod(fd, mode) != 0)
        err = TML_BUNDLE_E_IO;
    while (err == TML_BUNDLE_OK && len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            err = TML_BUNDLE_E_IO;
            break;
        }
        p += w;
        len -= (size_t)w;
    }
    if (err == TML_BUNDLE_OK && fsync(fd) != 0)
        err = TML_BUNDLE_E_IO;
    int saved = errno;
    if (close(fd) != 0 && err == TML_BUNDLE_OK)
        err = TML_BUNDLE_E_IO;
    else
        errno = saved;
    return err;
}

enum tml_bundle_err
tml_privkey_write(const struct tml_privkey *key, const char *path,
                  bool overwrite)
{
    if (key == NULL || path == NULL)
        return TML_BUNDLE_E_INVAL;
    unsigned char pem[512];
    /* mbedtls_pk_write_key_pem takes a non-const context but does not
     * modify it. */
    mbedtls_pk_context pk = key->pk;
    if (mbedtls_pk_write_key_pem(&pk, pem, sizeof(pem)) != 0)
        return TML_BUNDLE_E_CRYPTO;
    enum tml_bundle_err err =
        tml__write_file_mode(path, pem, strlen((char *)pem), 0600, !overwrite);
    mbedtls_platform_zeroize(pem, sizeof(pem));
    return err;
}

enum tml_bundle_err
tml_pubkey_write_pem(const struct tml_pubkey *pub, const char *path)
{
    if (pub == NULL || path == NULL)
        return TML_BUNDLE_E_INVAL;
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    unsigned char pem[256];
    enum tml_bundle_err err = TML_BUNDLE_E_CRYPTO;
    if (mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) ==
            0 &&
        mbedtls_ecp_group_load(&mbedtls_pk_ec(pk)->grp,
                               MBEDTLS_ECP_DP_SECP256R1) == 0 &&
        mbedtls_ecp_point_read_binary(&mbedtls_pk_ec(pk)->grp,
                                      &mbedtls_pk_ec(pk)->Q, pub->raw,
                                      TML_PUBKEY_RAW_LEN) == 0 &&
        mbedtls_pk_write_pubkey_pem(&pk, pem, sizeof(pem)) == 0)
        err = tml__write_file_mode(path, pem, strlen((char *)pem), 0644, false);
    mbedtls_pk_free(&pk);
    return err;
}

static bool
is_c_ident(const char *s)
{
    if (s == NULL ||
        !((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
        return false;
    for (size_t n = 0; *s != '\0'; s++, n++) {
        if (n >= 64)
            return false;
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
              (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    }
    return true;
}

static void
hex_array(char **p, char *end, const uint8_t *v, size_t n)
{
    for (size_t i = 0; i < n && *p < end; i++) {
        int w = snprintf(*p, (size_t)(end - *p), "%s0x%02x,",
                         i % 12 == 0 ? "\n    " : " ", v[i]);
        if (w < 0 || w >= end - *p) {
            *p = end;
            return;
        }
        *p += w;
    }
}

enum tml_bundle_err
tml_pubkey_write_header(const struct tml_pubkey *pub, const char *path,
                        const char *ident)
{
    if (pub == NULL || path == NULL || !is_c_ident(ident))
        return TML_BUNDLE_E_INVAL;
    char buf[2048];
    char *p = buf, *end = buf + sizeof(buf);
    char hex[17];
    tml_key_id_hex(pub->kid, hex);
    p += snprintf(p, (size_t)(end - p),
                  "/* Generated by tmlctl keygen: tmlfleet operator public "
                  "key, key id %s.\n * ECDSA P-256, raw uncompressed point "
                  "(0x04 || X || Y); the key id is the\n * first 8 bytes of "
                  "SHA-256 over those 65 bytes. Public data: safe to\n * "
                  "commit and flash. */\n#ifndef %s_PUBKEY_H\n#define "
                  "%s_PUBKEY_H\n\n#include <stdint.h>\n\n"
                  "static const uint8_t %s_pubkey[65] = {",
                  hex, ident, ident, ident);
    hex_array(&p, end, pub->raw, TML_PUBKEY_RAW_LEN);
    if (p < end)
        p += snprintf(p, (size_t)(end - p),
                      "\n};\n\nstatic const uint8_t %s_kid[8] = {", ident);
    hex_array(&p, end, pub->kid, TML_KEY_ID_LEN);
    if (p < end)
        p += snprintf(p, (size_t)(end - p), "\n};\n\n#endif\n");
    if (p >= end)
        return TML_BUNDLE_E_INVAL;
    return tml__write_file_mode(path, buf, (size_t)(p - buf), 0644, false);
}

enum tml_bundle_err
tml_cose_sign(const struct tml_privkey *key, const uint8_t *payload,
              size_t payload_len, uint8_t *out, size_t cap, size_t *out_len)
{
    if (key == NULL || payload == NULL || out == NULL ||
        payload_len > TML_BUNDLE_MAX_FILE)
        return TML_BUNDLE_E_INVAL;
    struct tml_pubkey pub;
    tml_privkey_public(key, &pub);

    uint8_t prot[32];
    size_t prot_len = 0;
    if (tml_cose_protected_encode(pub.kid, TML_KEY_ID_LEN, prot, sizeof(prot),
                                  &prot_len) != TML_OK)
        return TML_BUNDLE_E_INVAL;
    size_t ss_cap = payload_len + prot_len + 64;
    uint8_t *ss = malloc(ss_cap);
    if (ss == NULL)
        return TML_BUNDLE_E_NOMEM;
    struct tml_bin pb = {prot, prot_len}, pl = {payload, payload_len};
    size_t ss_len = 0;
    enum tml_bundle_err err = TML_BUNDLE_OK;
    if (tml_cose_sig_structure(&pb, &pl, ss, ss_cap, &ss_len) != TML_OK)
        err = TML_BUNDLE_E_INVAL;

    uint8_t hash[32], sig[TML_ES256_SIG_LEN];
    mbedtls_mpi r, s;
    mbedtls_mpi_init(&r);
    mbedtls_mpi_init(&s);
    mbedtls_entropy_context ent;
    mbedtls_ctr_drbg_context drbg;
    int seeded = drbg_seed(&ent, &drbg);
    if (err == TML_BUNDLE_OK) {
        const mbedtls_ecp_keypair *ec = mbedtls_pk_ec(key->pk);
        /* Deterministic ECDSA (RFC 6979) so the same key and manifest give
         * the same signature; the RNG only blinds the computation. The
         * group is copied because the mbedTLS 2.28 API takes it non-const. */
        mbedtls_ecp_group grp;
        mbedtls_ecp_group_init(&grp);
        if (seeded != 0 || mbedtls_sha256_ret(ss, ss_len, hash, 0) != 0 ||
            mbedtls_ecp_group_copy(&grp, &ec->grp) != 0 ||
            mbedtls_ecdsa_sign_det_ext(&grp, &r, &s, &ec->d, hash, sizeof(hash),
                                       MBEDTLS_MD_SHA256,
                                       mbedtls_ctr_drbg_random, &drbg) != 0 ||
            mbedtls_mpi_write_binary(&r, sig, 32) != 0 ||
            mbedtls_mpi_write_binary(&s, sig + 32, 32) != 0)
            err = TML_BUNDLE_E_CRYPTO;
        mbedtls_ecp_group_free(&grp);
    }
    drbg_free(&ent, &drbg);
    mbedtls_mpi_free(&r);
    mbedtls_mpi_free(&s);
    free(ss);
    if (err == TML_BUNDLE_OK &&
        tml_cose_sign1_encode(pub.kid, TML_KEY_ID_LEN, payload, payload_len,
                              sig, out, cap, out_len) != TML_OK)
        err = TML_BUNDLE_E_INVAL;
    return err;
}

enum tml_bundle_err
tml__ecdsa_verify(const struct tml_pubkey *pub, const uint8_t hash[32],
                  const uint8_t sig[TML_ES256_SIG_LEN])
{
    mbedtls_ecp_group grp;
    mbedtls_ecp_point q;
    mbedtls_mpi r, s;
    mbedtls_ecp_group_init(&grp);
    mbedtls_ecp_point_init(&q);
    mbedtls_mpi_init(&r);
    mbedtls_mpi_init(&s);
    enum tml_bundle_err err = TML_BUNDLE_E_SIGNATURE;
    if (mbedtls_ecp_group_load(&grp, MBEDTLS_ECP_DP_SECP256R1) == 0 &&
        mbedtls_ecp_point_read_binary(&grp, &q, pub->raw, TML_PUBKEY_RAW_LEN) ==
            0 &&
        mbedtls_mpi_read_binary(&r, sig, 32) == 0 &&
        mbedtls_mpi_read_binary(&s, sig + 32, 32) == 0 &&
        mbedtls_ecdsa_verify(&grp, hash, 32, &q, &r, &s) == 0)
        err = TML_BUNDLE_OK;
    mbedtls_mpi_free(&s);
    mbedtls_mpi_free(&r);
    mbedtls_ecp_point_free(&q);
    mbedtls_ecp_group_free(&grp);
    return err;
}
