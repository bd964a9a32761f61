/*
 * bundle.c: the .tmlb container (docs/bundle.md): build, parse, verify,
 * read/write files.
 *
 * The parser treats its input as hostile: it only reads through proto's
 * bounded CBOR decoder, rejects unknown negative (critical) keys, duplicate
 * keys and trailing bytes, and caps image, label and file sizes. Nothing the
 * manifest says is believed before the signature has been checked
 * (tml_bundle_verify orders its checks that way).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/sha256.h>

#include "internal.h"
#include "tml/bundle.h"

#define KEY_FORMAT 0
#define KEY_COSE 1
#define KEY_IMAGE 2
#define KEY_LABELS 3
#define MAX_MAP_ENTRIES 32

const char *
tml_bundle_strerror(enum tml_bundle_err err)
{
    static const char *const names[TML_BUNDLE_E__COUNT] = {
        [TML_BUNDLE_OK] = "ok",
        [TML_BUNDLE_E_IO] = "file I/O error",
        [TML_BUNDLE_E_NOMEM] = "out of memory",
        [TML_BUNDLE_E_INVAL] = "invalid argument",
        [TML_BUNDLE_E_KEY] = "not an EC P-256 key",
        [TML_BUNDLE_E_CRYPTO] = "cryptographic operation failed",
        [TML_BUNDLE_E_FORMAT] = "not a tmlfleet bundle (malformed)",
        [TML_BUNDLE_E_TRUNCATED] = "bundle is truncated",
        [TML_BUNDLE_E_VERSION] = "unsupported bundle format version",
        [TML_BUNDLE_E_CRITICAL] = "unknown critical field",
        [TML_BUNDLE_E_OVERSIZE] = "bundle over the size limits",
        [TML_BUNDLE_E_COSE] = "signed manifest (COSE_Sign1) is malformed",
        [TML_BUNDLE_E_ALG] = "signature algorithm is not ES256",
        [TML_BUNDLE_E_UNKNOWN_KEY] = "signed by an untrusted key",
        [TML_BUNDLE_E_SIGNATURE] = "signature does not verify",
        [TML_BUNDLE_E_MANIFEST] = "signed manifest does not decode",
        [TML_BUNDLE_E_SIZE] = "image size differs from the manifest",
        [TML_BUNDLE_E_HASH] = "image hash differs from the manifest",
        [TML_BUNDLE_E_EXPIRED] = "manifest has expired",
        [TML_BUNDLE_E_LABELS] = "label count differs from the manifest",
    };
    if ((unsigned)err >= TML_BUNDLE_E__COUNT || names[err] == NULL)
        return "unknown error";
    return names[err];
}

/* ---- building --------------------------------------------------------------
 */

enum tml_bundle_err
tml_manifest_sign(const struct tml_privkey *key, const struct tml_manifest *m,
                  uint8_t *out, size_t cap, size_t *out_len)
{
    if (key == NULL || m == NULL || out == NULL)
        return TML_BUNDLE_E_INVAL;
    uint8_t payload[TML_MAX_MANIFEST];
    size_t len = 0;
    if (tml_manifest_encode(m, payload, sizeof(payload), &len) != TML_OK)
        return TML_BUNDLE_E_MANIFEST;
    return tml_cose_sign(key, payload, len, out, cap, out_len);
}

enum tml_bundle_err
tml_bundle_build(const struct tml_privkey *key, struct tml_manifest *m,
                 const uint8_t *image, size_t image_len,
                 const char *const *labels, size_t n_labels, uint8_t **out,
                 size_t *out_len)
{
    if (key == NULL || m == NULL || out == NULL || out_len == NULL ||
        (image == NULL && image_len > 0) || (labels == NULL && n_labels > 0))
        return TML_BUNDLE_E_INVAL;
    if (image_len > TML_BUNDLE_MAX_IMAGE || n_labels > TML_BUNDLE_MAX_LABELS)
        return TML_BUNDLE_E_OVERSIZE;
    size_t labels_bytes = 0;
    for (size_t i = 0; i < n_labels; i++) {
        size_t l = strlen(labels[i]);
        if (l > TML_BUNDLE_MAX_LABEL_LEN)
            return TML_BUNDLE_E_OVERSIZE;
        labels_bytes += l + 9;
    }
    m->size = (uint32_t)image_len;
    if (mbedtls_sha256_ret(image_len ? image : (const uint8_t *)"", image_len,
                           m->sha256, 0) != 0)
        return TML_BUNDLE_E_CRYPTO;
    if (n_labels > 0)
        m->n_labels = (uint32_t)n_labels;

    uint8_t cose[TML_MAX_MANIFEST + 128];
    size_t cose_len = 0;
    enum tml_bundle_err err =
        tml_manifest_sign(key, m, cose, sizeof(cose), &cose_len);
    if (err != TML_BUNDLE_OK)
        return err;

    size_t cap = image_len + cose_len + labels_bytes + 64;
    uint8_t *buf = malloc(cap);
    if (buf == NULL)
        return TML_BUNDLE_E_NOMEM;
    struct tml_enc e;
    tml_enc_init(&e, buf, cap);
    tml_enc_map(&e, n_labels > 0 ? 4 : 3);
    tml_enc_uint(&e, KEY_FORMAT);
    tml_enc_uint(&e, TML_BUNDLE_FORMAT);
    tml_enc_uint(&e, KEY_COSE);
    tml_enc_bytes(&e, cose, cose_len);
    tml_enc_uint(&e, KEY_IMAGE);
    tml_enc_bytes(&e, image, image_len);
    if (n_labels > 0) {
        tml_enc_uint(&e, KEY_LABELS);
        tml_enc_array(&e, n_labels);
        for (size_t i = 0; i < n_labels; i++)
            tml_enc_text(&e, labels[i], strlen(labels[i]));
    }
    size_t len = 0;
    if (tml_enc_finish(&e, &len) != TML_OK) {
        free(buf);
        return TML_BUNDLE_E_INVAL;
    }
    *out = buf;
    *out_len = len;
    return TML_BUNDLE_OK;
}

/* ---- parsing ---------------------------------------------------------------
 */

static enum tml_bundle_err
from_cbor(enum tml_err e)
{
    switch (e) {
    case TML_OK:
        return TML_BUNDLE_OK;
    case TML_ERR_TRUNCATED:
        return TML_BUNDLE_E_TRUNCATED;
    case TML_ERR_OVERSIZE:
        return TML_BUNDLE_E_OVERSIZE;
    case TML_ERR_UNKNOWN_CRITICAL:
        return TML_BUNDLE_E_CRITICAL;
    default:
        return TML_BUNDLE_E_FORMAT;
    }
}

static enum tml_bundle_err
parse_labels(struct tml_dec *d, struct tml_bundle *out)
{
    size_t n = 0;
    enum tml_err e = tml_dec_array(d, &n);
    if (e != TML_OK)
        return from_cbor(e);
    if (n > TML_BUNDLE_MAX_LABELS)
        return TML_BUNDLE_E_OVERSIZE;
    for (size_t i = 0; i < n; i++) {
        struct tml_str s;
        e = tml_dec_text(d, &s);
        if (e != TML_OK)
            return from_cbor(e);
        if (s.len > TML_BUNDLE_MAX_LABEL_LEN)
            return TML_BUNDLE_E_OVERSIZE;
        out->labels[i] = s;
    }
    tml_dec_leave(d);
    out->n_labels = n;
    return TML_BUNDLE_OK;
}

/* The container only: fills cose, image, labels. */
static enum tml_bundle_err
parse_container(const uint8_t *buf, size_t len, struct tml_bundle *out)
{
    if (len > TML_BUNDLE_MAX_FILE)
        return TML_BUNDLE_E_OVERSIZE;
    struct tml_dec d;
    tml_dec_init(&d, buf, len);
    if (tml_dec_peek(&d) == TML_CBOR_END)
        return TML_BUNDLE_E_TRUNCATED;
    if (tml_dec_peek(&d) != TML_CBOR_MAP)
        return TML_BUNDLE_E_FORMAT;
    size_t n = 0;
    enum tml_err e = tml_dec_map(&d, &n);
    if (e != TML_OK)
        return from_cbor(e);
    if (n > MAX_MAP_ENTRIES)
        return TML_BUNDLE_E_OVERSIZE;
    int64_t seen[MAX_MAP_ENTRIES];
    bool has_format = false, has_cose = false, has_image = false;
    for (size_t i = 0; i < n; i++) {
        int64_t key;
        if (tml_dec_peek(&d) != TML_CBOR_UINT &&
            tml_dec_peek(&d) != TML_CBOR_NINT)
            return tml_dec_peek(&d) == TML_CBOR_END ? TML_BUNDLE_E_TRUNCATED
                                                    : TML_BUNDLE_E_FORMAT;
        e = tml_dec_int(&d, &key);
        if (e != TML_OK)
            return from_cbor(e);
        for (size_t k = 0; k < i; k++)
            if (seen[k] == key)
                return TML_BUNDLE_E_FORMAT; /* duplicate key */
        seen[i] = key;
        uint64_t v;
        switch (key) {
        case KEY_FORMAT:
            e = tml_dec_uint(&d, &v);
            if (e != TML_OK)
                return from_cbor(e);
            if (v != TML_BUNDLE_FORMAT)
                return TML_BUNDLE_E_VERSION;
            has_format = true;
            break;
        case KEY_COSE:
            e = tml_dec_bytes(&d, &out->cose);
            if (e != TML_OK)
                return from_cbor(e);
            if (out->cose.len > TML_MAX_MANIFEST)
                return TML_BUNDLE_E_OVERSIZE;
            has_cose = true;
            break;
        case KEY_IMAGE:
            e = tml_dec_bytes(&d, &out->image);
            if (e != TML_OK)
                return from_cbor(e);
            if (out->image.len > TML_BUNDLE_MAX_IMAGE)
                return TML_BUNDLE_E_OVERSIZE;
            has_image = true;
            break;
        case KEY_LABELS: {
            enum tml_bundle_err be = parse_labels(&d, out);
            if (be != TML_BUNDLE_OK)
                return be;
            break;
        }
        default:
            /* Negative keys are "must understand" (as in proto.h). */
            if (key < 0)
                return TML_BUNDLE_E_CRITICAL;
            e = tml_dec_skip(&d);
            if (e != TML_OK)
                return from_cbor(e);
            break;
        }
    }
    tml_dec_leave(&d);
    e = tml_dec_finish(&d);
    if (e != TML_OK)
        return TML_BUNDLE_E_FORMAT;
    /* The format version comes first in what we write, but a missing one
     * is a different format altogether. */
    if (!has_format)
        return TML_BUNDLE_E_VERSION;
    if (!has_cose || !has_image)
        return TML_BUNDLE_E_FORMAT;
    return TML_BUNDLE_OK;
}

static enum tml_bundle_err
check_contents(struct tml_bundle *out)
{
    if (tml_manifest_decode(out->sign1.payload.p, out->sign1.payload.len,
                            &out->manifest) != TML_OK)
        return TML_BUNDLE_E_MANIFEST;
    if (out->manifest.size != out->image.len)
        return TML_BUNDLE_E_SIZE;
    uint8_t h[32];
    if (mbedtls_sha256_ret(out->image.len ? out->image.p : (const uint8_t *)"",
                           out->image.len, h, 0) != 0)
        return TML_BUNDLE_E_CRYPTO;
    if (memcmp(h, out->manifest.sha256, sizeof(h)) != 0)
        return TML_BUNDLE_E_HASH;
    if (out->n_labels > 0 && out->n_labels != out->manifest.n_labels)
        return TML_BUNDLE_E_LABELS;
    return TML_BUNDLE_OK;
}

enum tml_bundle_err
tml_bundle_parse(const uint8_t *buf, size_t len, struct tml_bundle *out)
{
    if (buf == NULL || out == NULL)
        return TML_BUNDLE_E_INVAL;
    memset(out, 0, sizeof(*out));
    enum tml_bundle_err err = parse_container(buf, len, out);
    if (err != TML_BUNDLE_OK)
        return err;
    if (tml_cose_sign1_decode(out->cose.p, out->cose.len, &out->sign1) !=
        TML_OK)
        return TML_BUNDLE_E_COSE;
    return check_contents(out);
}

enum tml_bundle_err
tml_cose_verify(const uint8_t *buf, size_t len,
                const struct tml_pubkey *trusted, size_t n_trusted,
                struct tml_cose_sign1 *out, size_t *key_index)
{
    if (buf == NULL || out == NULL || (trusted == NULL && n_trusted > 0) ||
        n_trusted > TML_BUNDLE_MAX_TRUSTED)
        return TML_BUNDLE_E_INVAL;
    struct tml_cose_sign1 s;
    if (tml_cose_sign1_decode(buf, len, &s) != TML_OK)
        return TML_BUNDLE_E_COSE;
    if (s.alg != TML_COSE_ALG_ES256)
        return TML_BUNDLE_E_ALG;
    if (s.signature.len != TML_ES256_SIG_LEN)
        return TML_BUNDLE_E_COSE;
    size_t which = n_trusted;
    for (size_t i = 0; i < n_trusted; i++)
        if (s.kid.len == TML_KEY_ID_LEN &&
            memcmp(s.kid.p, trusted[i].kid, TML_KEY_ID_LEN) == 0) {
            which = i;
            break;
        }
    if (which == n_trusted)
        return TML_BUNDLE_E_UNKNOWN_KEY;

    /* Sig_structure = ["Signature1", protected, h'', payload], RFC 9052
     * section 4.4, rebuilt from the received protected bytes verbatim. */
    size_t cap = s.payload.len + s.protected_hdr.len + 64;
    uint8_t *ss = malloc(cap);
    if (ss == NULL)
        return TML_BUNDLE_E_NOMEM;
    size_t ss_len = 0;
    uint8_t hash[32];
    enum tml_bundle_err err = TML_BUNDLE_E_COSE;
    if (tml_cose_sig_structure(&s.protected_hdr, &s.payload, ss, cap,
                               &ss_len) == TML_OK &&
        mbedtls_sha256_ret(ss, ss_len, hash, 0) == 0)
        err = tml__ecdsa_verify(&trusted[which], hash, s.signature.p);
    free(ss);
    if (err != TML_BUNDLE_OK)
        return err;
    *out = s;
    if (key_index != NULL)
        *key_index = which;
    return TML_BUNDLE_OK;
}

enum tml_bundle_err
tml_bundle_verify(const uint8_t *buf, size_t len,
                  const struct tml_pubkey *trusted, size_t n_trusted,
                  uint64_t now_s, struct tml_bundle *out, size_t *key_index)
{
    if (buf == NULL || out == NULL)
        return TML_BUNDLE_E_INVAL;
    memset(out, 0, sizeof(*out));
    enum tml_bundle_err err = parse_container(buf, len, out);
    if (err != TML_BUNDLE_OK)
        return err;
    size_t which = 0;
    err = tml_cose_verify(out->cose.p, out->cose.len, trusted, n_trusted,
                          &out->sign1, &which);
    if (err != TML_BUNDLE_OK)
        return err;
    err = check_contents(out);
    if (err != TML_BUNDLE_OK)
        return err;
    if (now_s != 0 && out->manifest.expires != 0 &&
        now_s >= out->manifest.expires)
        return TML_BUNDLE_E_EXPIRED;
    if (key_index != NULL)
        *key_index = which;
    return TML_BUNDLE_OK;
}

/* ---- files ------------------------------------------------------------------
 */

enum tml_bundle_err
tml_bundle_read_file(const char *path, uint8_t **buf, size_t *len)
{
    if (path == NULL || buf == NULL || len == NULL)
        return TML_BUNDLE_E_INVAL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return TML_BUNDLE_E_IO;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return TML_BUNDLE_E_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        errno = EINVAL;
        return TML_BUNDLE_E_IO;
    }
    if ((uint64_t)st.st_size > TML_BUNDLE_MAX_FILE) {
        close(fd);
        return TML_BUNDLE_E_OVERSIZE;
    }
    size_t size = (size_t)st.st_size;
    uint8_t *b = malloc(size ? size : 1);
    if (b == NULL) {
        close(fd);
        return TML_BUNDLE_E_NOMEM;
    }
    size_t got = 0;
    /* The file may change under us; read at most what fstat said and no
     * more than one extra probe. */
    while (got < size) {
        ssize_t r = read(fd, b + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(b);
            close(fd);
            errno = e;
            return TML_BUNDLE_E_IO;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    *buf = b;
    *len = got;
    return TML_BUNDLE_OK;
}

enum tml_bundle_err
tml_bundle_write_file(const char *path, const uint8_t *buf, size_t len)
{
    if (path == NULL || (buf == NULL && len > 0))
        return TML_BUNDLE_E_INVAL;
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (tmp == NULL)
        return TML_BUNDLE_E_NOMEM;
    snprintf(tmp, plen + 16, "%s.tmp%05d", path, (int)(getpid() % 100000));
    enum tml_bundle_err err = tml__write_file_mode(tmp, buf, len, 0644, true);
    if (err == TML_BUNDLE_OK && rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        err = TML_BUNDLE_E_IO;
    } else if (err != TML_BUNDLE_OK && errno != EEXIST) {
        int e = errno;
        unlink(tmp);
        errno = e;
    }
    free(tmp);
    return err;
}
