/*
 * cose.c: the OTA manifest envelope, COSE_Sign1 with ES256 (RFC 9052 4.2,
 * RFC 9053 2.1), and the Sig_structure that is hashed and signed (RFC 9052
 * 4.4). No crypto here: the caller hashes and verifies with its own library
 * (mbedTLS on the gateway, the port on a device).
 *
 * Accepted shape (PROTOCOL.md "Manifest"):
 *   [? tag 18] [ protected: bstr .cbor {1: -7, 4: kid}, unprotected: {...},
 *                payload: bstr, signature: bstr .size 64 ]
 * The protected map must hold exactly alg and kid: any other label there is
 * signed data we would not understand (e.g. "crit"), so it is rejected.
 * Unprotected entries are skipped; nothing in them is trusted.
 */
#include <string.h>

#include "internal.h"

#define COSE_TAG_SIGN1_HEAD 0xd2 /* tag 18 (COSE_Sign1), one byte */
#define COSE_HDR_ALG 1
#define COSE_HDR_KID 4

enum tml_err
tml_cose_protected_encode(const uint8_t *kid, size_t kid_len, uint8_t *buf,
                          size_t cap, size_t *out_len)
{
    struct tml_enc e;

    if (kid == NULL || kid_len == 0) {
        return TML_ERR_INVAL;
    }
    if (kid_len > TML_MAX_KID) {
        return TML_ERR_OVERSIZE;
    }
    tml_enc_init(&e, buf, cap);
    tml_enc_map(&e, 2);
    tml_enc_uint(&e, COSE_HDR_ALG);
    tml_enc_int(&e, TML_COSE_ALG_ES256);
    tml_enc_uint(&e, COSE_HDR_KID);
    tml_enc_bytes(&e, kid, kid_len);
    return tml_enc_finish(&e, out_len);
}

enum tml_err
tml_cose_sig_structure(const struct tml_bin *protected_hdr,
                       const struct tml_bin *payload, uint8_t *buf, size_t cap,
                       size_t *out_len)
{
    static const char context[] = "Signature1";
    struct tml_enc e;

    if (protected_hdr == NULL || payload == NULL) {
        return TML_ERR_INVAL;
    }
    tml_enc_init(&e, buf, cap);
    tml_enc_array(&e, 4);
    tml_enc_text(&e, context, sizeof context - 1);
    tml_enc_bytes(&e, protected_hdr->p, protected_hdr->len);
    tml_enc_bytes(&e, NULL, 0); /* external_aad: empty */
    tml_enc_bytes(&e, payload->p, payload->len);
    return tml_enc_finish(&e, out_len);
}

enum tml_err
tml_cose_sign1_encode(const uint8_t *kid, size_t kid_len,
                      const uint8_t *payload, size_t payload_len,
                      const uint8_t sig[TML_ES256_SIG_LEN], uint8_t *buf,
                      size_t cap, size_t *out_len)
{
    uint8_t prot[4 + 2 + TML_MAX_KID];
    size_t prot_len;
    struct tml_enc e;
    enum tml_err err;
    size_t len;

    if (payload == NULL || payload_len == 0 || sig == NULL) {
        return TML_ERR_INVAL;
    }
    err = tml_cose_protected_encode(kid, kid_len, prot, sizeof prot, &prot_len);
    if (err != TML_OK) {
        return err;
    }
    /* Untagged: the topic already says what it is; decoders accept both. */
    tml_enc_init(&e, buf, cap);
    tml_enc_array(&e, 4);
    tml_enc_bytes(&e, prot, prot_len);
    tml_enc_map(&e, 0);
    tml_enc_bytes(&e, payload, payload_len);
    tml_enc_bytes(&e, sig, TML_ES256_SIG_LEN);
    err = tml_enc_finish(&e, &len);
    if (err == TML_OK && len > TML_MAX_MANIFEST) {
        err = TML_ERR_OVERSIZE;
    }
    if (err == TML_OK && out_len != NULL) {
        *out_len = len;
    }
    return err;
}

/* Decodes the protected header map {1: -7, 4: kid}. */
static enum tml_err
decode_protected(const struct tml_bin *hdr, struct tml_cose_sign1 *out)
{
    struct tml_dec d;
    unsigned seen = 0; /* bit l: label l decoded */
    enum tml_err err;
    size_t n;

    tml_dec_init(&d, hdr->p, hdr->len);
    err = tml_dec_map(&d, &n);
    while (err == TML_OK && n-- > 0) {
        int64_t label;

        err = tml_dec_int(&d, &label);
        if (err == TML_OK && label != COSE_HDR_ALG && label != COSE_HDR_KID) {
            err = TML_ERR_UNKNOWN_CRITICAL;
        } else if (err == TML_OK && (seen & (1u << label)) != 0) {
            err = TML_ERR_DUPLICATE;
        } else if (err == TML_OK && label == COSE_HDR_ALG) {
            seen |= 1u << COSE_HDR_ALG;
            err = tml_dec_int(&d, &out->alg);
            if (err == TML_OK && out->alg != TML_COSE_ALG_ES256) {
                err = TML_ERR_UNSUPPORTED;
            }
        } else if (err == TML_OK) {
            seen |= 1u << COSE_HDR_KID;
            err = tml_dec_bytes(&d, &out->kid);
            if (err == TML_OK && out->kid.len > TML_MAX_KID) {
                err = TML_ERR_OVERSIZE;
            } else if (err == TML_OK && out->kid.len == 0) {
                err = TML_ERR_RANGE;
            }
        }
    }
    if (err == TML_OK) {
        err = tml_dec_finish(&d);
    }
    if (err == TML_OK &&
        seen != ((1u << COSE_HDR_ALG) | (1u << COSE_HDR_KID))) {
        err = TML_ERR_MISSING;
    }
    return err;
}

enum tml_err
tml_cose_sign1_decode(const uint8_t *buf, size_t len,
                      struct tml_cose_sign1 *out)
{
    struct tml_dec d;
    enum tml_err err = TML_OK;
    size_t n;

    if (out == NULL || (buf == NULL && len != 0)) {
        return TML_ERR_INVAL;
    }
    memset(out, 0, sizeof *out);
    if (len > TML_MAX_MANIFEST) {
        return TML_ERR_OVERSIZE;
    }
    tml_dec_init(&d, buf, len);
    if (tml_dec_peek(&d) == TML_CBOR_TAG) {
        if (buf[0] == COSE_TAG_SIGN1_HEAD) {
            d.p++;
        } else {
            /* Any other tag, or tag 18 not in its shortest form: skipping
             * it gives the head's error or TML_ERR_UNSUPPORTED. */
            err = tml_dec_skip(&d);
        }
    }
    if (err == TML_OK) {
        err = tml_dec_array(&d, &n);
    }
    if (err == TML_OK && n != 4) {
        err = TML_ERR_TYPE;
    }
    if (err == TML_OK) {
        err = tml_dec_bytes(&d, &out->protected_hdr);
    }
    if (err == TML_OK) {
        err = decode_protected(&out->protected_hdr, out);
    }
    if (err == TML_OK) {
        /* Unprotected header: a map, skipped whole, never trusted. */
        err = tml_dec_peek(&d) == TML_CBOR_MAP ? tml_dec_skip(&d)
                                               : tml_dec_map(&d, &n);
    }
    if (err == TML_OK) {
        err = tml_dec_bytes(&d, &out->payload); /* nil = detached: refused */
    }
    if (err == TML_OK && out->payload.len == 0) {
        err = TML_ERR_RANGE;
    }
    if (err == TML_OK) {
        err = tml_dec_bytes(&d, &out->signature);
    }
    if (err == TML_OK && out->signature.len != TML_ES256_SIG_LEN) {
        err = out->signature.len > TML_ES256_SIG_LEN ? TML_ERR_OVERSIZE
                                                     : TML_ERR_RANGE;
    }
    if (err == TML_OK) {
        err = tml_dec_finish(&d);
    }
    return err;
}
