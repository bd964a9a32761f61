/*
 * pki.c: the fleet PKI (see pki.h, docs/pki.md). Owns the files of one PKI
 * directory: the CA, the broker's and tmld's certificates, the CRL and the
 * device register. Certificates are made with mbedTLS x509write; the
 * extensions mbedTLS 2.28 cannot write (subjectAltName, extKeyUsage) and the
 * CRL are DER-encoded here with mbedtls/asn1write.h.
 *
 * Invariants: every private key file is 0600 from creation; files are
 * replaced atomically (temp file + fsync + rename) so a crash never leaves a
 * half-written CRL for the broker to choke on; serials are 16 random bytes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509_crt.h>

#include "pki.h"
#include "tml/proto.h"

#define ERR_CAP 256
#define DER_CAP 4096

struct pki {
    char dir[4096];
    mbedtls_entropy_context ent;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_pk_context ca_key;
    mbedtls_x509_crt ca_crt;
    char ca_name[256];
};

static int
fail(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, ERR_CAP, fmt, ap);
    va_end(ap);
    return -1;
}

const char *
pki_dir(const struct pki *p)
{
    return p->dir;
}

/* ---- files ------------------------------------------------------------------
 */

int
pki_write_file(const char *path, const void *buf, size_t len, int mode,
               char *err)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                  (mode_t)mode);
    if (fd < 0)
        return fail(err, "%s: %s", tmp, strerror(errno));
    const uint8_t *p = buf;
    int rc = fchmod(fd, (mode_t)mode);
    while (rc == 0 && len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = -1;
            break;
        }
        p += w;
        len -= (size_t)w;
    }
    if (rc == 0)
        rc = fsync(fd);
    int e = errno;
    if (close(fd) != 0 && rc == 0) {
        rc = -1;
        e = errno;
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -1;
        e = errno;
    }
    if (rc != 0) {
        unlink(tmp);
        return fail(err, "%s: %s", path, strerror(e));
    }
    return 0;
}

int
pki_chown(const char *path, const char *user, char *err)
{
    if (user == NULL)
        return 0;
    struct passwd *pw = getpwnam(user);
    if (pw == NULL)
        return fail(err, "no user '%s' (create it, or leave the option out)",
                    user);
    if (chown(path, pw->pw_uid, pw->pw_gid) != 0)
        return fail(err, "chown %s %s: %s", user, path, strerror(errno));
    return 0;
}

static bool
exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static void
join(char *out, size_t cap, const char *dir, const char *name)
{
    snprintf(out, cap, "%s/%s", dir, name);
}

/* ---- random, keys
 * ------------------------------------------------------------ */

static int
rng_init(mbedtls_entropy_context *ent, mbedtls_ctr_drbg_context *drbg)
{
    static const char pers[] = "tmlctl-pki";
    mbedtls_entropy_init(ent);
    mbedtls_ctr_drbg_init(drbg);
    return mbedtls_ctr_drbg_seed(drbg, mbedtls_entropy_func, ent,
                                 (const unsigned char *)pers, sizeof(pers) - 1);
}

static void
rng_free(mbedtls_entropy_context *ent, mbedtls_ctr_drbg_context *drbg)
{
    mbedtls_ctr_drbg_free(drbg);
    mbedtls_entropy_free(ent);
}

static int
gen_key(mbedtls_pk_context *pk, mbedtls_ctr_drbg_context *drbg)
{
    mbedtls_pk_init(pk);
    if (mbedtls_pk_setup(pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) != 0)
        return -1;
    return mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*pk),
                               mbedtls_ctr_drbg_random, drbg);
}

static int
write_key_pem(mbedtls_pk_context *pk, const char *path, char *err)
{
    unsigned char pem[512];
    if (mbedtls_pk_write_key_pem(pk, pem, sizeof(pem)) != 0)
        return fail(err, "encoding key for %s failed", path);
    int rc = pki_write_file(path, pem, strlen((char *)pem), 0600, err);
    mbedtls_platform_zeroize(pem, sizeof(pem));
    return rc;
}

/* ---- names, times, serials ------------------------------------------------
 */

static void
fmt_x509_time(time_t t, char out[16])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 16, "%Y%m%d%H%M%S", &tm);
}

static void
to_hex(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02X", p[i]);
    out[2 * n] = '\0';
}

static int
from_hex(const char *hex, uint8_t *out, size_t cap, size_t *n)
{
    size_t l = strlen(hex);
    if (l == 0 || l % 2 != 0 || l / 2 > cap)
        return -1;
    for (size_t i = 0; i < l / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (uint8_t)v;
    }
    *n = l / 2;
    return 0;
}

bool
pki_device_id_ok(const char *id, char *why, size_t why_cap)
{
    size_t n = strlen(id);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c == '+' || c == '#' || c == '/') {
            snprintf(why, why_cap,
                     "'%c' is an MQTT topic separator or wildcard", c);
            return false;
        }
        if (c >= 0x80 || c < 0x20) {
            snprintf(why, why_cap,
                     "byte 0x%02x: ids are ASCII letters, digits, '.', "
                     "'_' and '-'",
                     c);
            return false;
        }
    }
    if (!tml_device_id_valid(id, n)) {
        snprintf(why, why_cap,
                 "ids are 1..%d bytes of [A-Za-z0-9._-], not '.' or '..'",
                 TML_MAX_DEVICE_ID);
        return false;
    }
    if (strcmp(id, PKI_TMLD_CN) == 0 || strcmp(id, PKI_PROBE_CN) == 0) {
        snprintf(why, why_cap, "'%s' is reserved (%s)", id,
                 strcmp(id, PKI_TMLD_CN) == 0 ? "the gateway's own identity"
                                              : "used by device revoke");
        return false;
    }
    return true;
}

/* ---- extensions mbedTLS 2.28 cannot write ----------------------------------
 */

/* subjectAltName = SEQUENCE OF GeneralName: dNSName [2] IA5String,
 * iPAddress [7] OCTET STRING (RFC 5280 4.2.1.6). */
static int
set_sans(mbedtls_x509write_cert *crt, const char *const *sans, size_t n)
{
    unsigned char buf[2048];
    unsigned char *p = buf + sizeof(buf);
    size_t len = 0;
    int r;
    for (size_t i = n; i-- > 0;) {
        unsigned char ip[16];
        size_t l;
        int tag;
        const unsigned char *val;
        if (inet_pton(AF_INET, sans[i], ip) == 1) {
            l = 4;
            val = ip;
            tag = MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7;
        } else if (inet_pton(AF_INET6, sans[i], ip) == 1) {
            l = 16;
            val = ip;
            tag = MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7;
        } else {
            l = strlen(sans[i]);
            val = (const unsigned char *)sans[i];
            tag = MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2;
        }
        size_t sub = 0;
        if ((r = mbedtls_asn1_write_raw_buffer(&p, buf, val, l)) < 0)
            return r;
        sub += (size_t)r;
        if ((r = mbedtls_asn1_write_len(&p, buf, sub)) < 0)
            return r;
        sub += (size_t)r;
        if ((r = mbedtls_asn1_write_tag(&p, buf, (unsigned char)tag)) < 0)
            return r;
        sub += (size_t)r;
        len += sub;
    }
    if ((r = mbedtls_asn1_write_len(&p, buf, len)) < 0)
        return r;
    len += (size_t)r;
    if ((r = mbedtls_asn1_write_tag(
             &p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) < 0)
        return r;
    len += (size_t)r;
    return mbedtls_x509write_crt_set_extension(
        crt, MBEDTLS_OID_SUBJECT_ALT_NAME,
        MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0, p, len);
}

/* extKeyUsage = SEQUENCE OF KeyPurposeId (RFC 5280 4.2.1.12). */
static int
set_eku(mbedtls_x509write_cert *crt, bool server)
{
    unsigned char buf[64];
    unsigned char *p = buf + sizeof(buf);
    size_t len = 0;
    int r;
    const char *oid =
        server ? MBEDTLS_OID_SERVER_AUTH : MBEDTLS_OID_CLIENT_AUTH;
    size_t oid_len = server ? MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)
                            : MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH);
    if ((r = mbedtls_asn1_write_oid(&p, buf, oid, oid_len)) < 0)
        return r;
    len += (size_t)r;
    if ((r = mbedtls_asn1_write_len(&p, buf, len)) < 0)
        return r;
    len += (size_t)r;
    if ((r = mbedtls_asn1_write_tag(
             &p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) < 0)
        return r;
    len += (size_t)r;
    return mbedtls_x509write_crt_set_extension(
        crt, MBEDTLS_OID_EXTENDED_KEY_USAGE,
        MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE), 0, p, len);
}

/* ---- certificates
 * --------------------------------------------------------------- */

/* Issues a certificate for subject_key; issuer = (issuer_key, issuer_name).
 * Writes DER to the end of der[DER_CAP]; returns its length or -1. */
static int
make_cert(const struct pki_cert_req *req, mbedtls_pk_context *subject_key,
          mbedtls_pk_context *issuer_key, const char *issuer_name,
          mbedtls_ctr_drbg_context *drbg, unsigned char *der,
          char serial_hex[2 * PKI_SERIAL_LEN + 1], char *err)
{
    mbedtls_x509write_cert crt;
    mbedtls_mpi serial;
    mbedtls_x509write_crt_init(&crt);
    mbedtls_mpi_init(&serial);
    int ret = -1;
    uint8_t sb[PKI_SERIAL_LEN];
    char subject[160], nb[16], na[16];

    /* RFC 5280 4.1.2.2: positive, at most 20 octets, unpredictable. */
    if (mbedtls_ctr_drbg_random(drbg, sb, sizeof(sb)) != 0)
        goto out;
    sb[0] = (uint8_t)((sb[0] & 0x7f) | 0x40);
    to_hex(sb, sizeof(sb), serial_hex);
    if (mbedtls_mpi_read_binary(&serial, sb, sizeof(sb)) != 0)
        goto out;
    /* The CN goes through mbedTLS's "CN=..." parser: refuse what it would
     * split or escape (device ids are already restricted). */
    if (strpbrk(req->cn, ",=\\+\"<>;") != NULL || strlen(req->cn) > 64) {
        fail(err, "name '%s' not allowed in a certificate", req->cn);
        goto out;
    }
    if (req->usage == PKI_USE_CA)
        snprintf(subject, sizeof(subject), "CN=%s,O=tmlfleet", req->cn);
    else
        snprintf(subject, sizeof(subject), "CN=%s", req->cn);
    fmt_x509_time(req->not_before, nb);
    fmt_x509_time(req->not_after, na);

    mbedtls_x509write_crt_set_version(&crt, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&crt, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&crt, subject_key);
    mbedtls_x509write_crt_set_issuer_key(&crt, issuer_key);
    if (mbedtls_x509write_crt_set_serial(&crt, &serial) != 0 ||
        mbedtls_x509write_crt_set_validity(&crt, nb, na) != 0 ||
        mbedtls_x509write_crt_set_subject_name(&crt, subject) != 0 ||
        mbedtls_x509write_crt_set_issuer_name(
            &crt, req->usage == PKI_USE_CA ? subject : issuer_name) != 0 ||
        mbedtls_x509write_crt_set_subject_key_identifier(&crt) != 0) {
        fail(err, "building the certificate for '%s' failed", req->cn);
        goto out;
    }
    if (req->usage == PKI_USE_CA) {
        if (mbedtls_x509write_crt_set_basic_constraints(&crt, 1, 0) != 0 ||
            mbedtls_x509write_crt_set_key_usage(
                &crt, MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN |
                          MBEDTLS_X509_KU_DIGITAL_SIGNATURE) != 0)
            goto ext_fail;
    } else {
        if (mbedtls_x509write_crt_set_basic_constraints(&crt, 0, -1) != 0 ||
            mbedtls_x509write_crt_set_authority_key_identifier(&crt) != 0 ||
            mbedtls_x509write_crt_set_key_usage(
                &crt, MBEDTLS_X509_KU_DIGITAL_SIGNATURE) != 0 ||
            set_eku(&crt, req->usage == PKI_USE_SERVER) != 0)
            goto ext_fail;
        if (req->n_sans > 0 && set_sans(&crt, req->sans, req->n_sans) != 0)
            goto ext_fail;
    }
    ret = mbedtls_x509write_crt_der(&crt, der, DER_CAP, mbedtls_ctr_drbg_random,
                                    drbg);
    if (ret <= 0) {
        fail(err, "signing the certificate for '%s' failed (-0x%04x)", req->cn,
             (unsigned)-ret);
        ret = -1;
    }
    goto out;
ext_fail:
    fail(err, "certificate extensions for '%s' failed", req->cn);
    ret = -1;
out:
    mbedtls_mpi_free(&serial);
    mbedtls_x509write_crt_free(&crt);
    return ret;
}

static int
write_cert_pem(const unsigned char *der, size_t len, const char *path,
               char *err)
{
    unsigned char pem[DER_CAP * 2];
    size_t olen = 0;
    if (mbedtls_pem_write_buffer("-----BEGIN CERTIFICATE-----\n",
                                 "-----END CERTIFICATE-----\n", der, len, pem,
                                 sizeof(pem), &olen) != 0)
        return fail(err, "PEM encoding for %s failed", path);
    /* olen counts the terminating NUL. */
    return pki_write_file(path, pem, olen - 1, 0644, err);
}

/* Issues with explicit issuer, writes files; shared by init and issue. */
static int
issue_with(const struct pki_cert_req *req, mbedtls_pk_context *issuer_key,
           const char *issuer_name, mbedtls_ctr_drbg_context *drbg,
           mbedtls_pk_context *key_out, const char *key_path,
           const char *crt_path, uint8_t **key_der, size_t *key_der_len,
           uint8_t **crt_der, size_t *crt_der_len,
           char serial_hex[2 * PKI_SERIAL_LEN + 1], char *err)
{
    mbedtls_pk_context key;
    unsigned char der[DER_CAP];
    if (gen_key(&key, drbg) != 0) {
        mbedtls_pk_free(&key);
        return fail(err, "key generation failed");
    }
    int n = make_cert(req, &key, req->usage == PKI_USE_CA ? &key : issuer_key,
                      issuer_name, drbg, der, serial_hex, err);
    int rc = n > 0 ? 0 : -1;
    if (rc == 0 && key_path != NULL)
        rc = write_key_pem(&key, key_path, err);
    if (rc == 0 && crt_path != NULL)
        rc = write_cert_pem(der + DER_CAP - n, (size_t)n, crt_path, err);
    if (rc == 0 && crt_der != NULL) {
        *crt_der = malloc((size_t)n);
        if (*crt_der == NULL)
            rc = fail(err, "out of memory");
        else {
            memcpy(*crt_der, der + DER_CAP - n, (size_t)n);
            *crt_der_len = (size_t)n;
        }
    }
    if (rc == 0 && key_der != NULL) {
        unsigned char kd[256];
        int kl = mbedtls_pk_write_key_der(&key, kd, sizeof(kd));
        *key_der = kl > 0 ? malloc((size_t)kl) : NULL;
        if (*key_der == NULL) {
            rc = fail(err, "encoding the device key failed");
        } else {
            memcpy(*key_der, kd + sizeof(kd) - kl, (size_t)kl);
            *key_der_len = (size_t)kl;
        }
        mbedtls_platform_zeroize(kd, sizeof(kd));
    }
    if (rc == 0 && key_out != NULL)
        *key_out = key; /* ownership moves to the caller */
    else
        mbedtls_pk_free(&key);
    return rc;
}

int
pki_issue(struct pki *p, const struct pki_cert_req *req, const char *key_path,
          const char *crt_path, uint8_t **key_der, size_t *key_der_len,
          uint8_t **crt_der, size_t *crt_der_len,
          char serial_hex[2 * PKI_SERIAL_LEN + 1], char *err)
{
    if (req->usage == PKI_USE_CA)
        return fail(err, "a PKI has one CA");
    return issue_with(req, &p->ca_key, p->ca_name, &p->drbg, NULL, key_path,
                      crt_path, key_der, key_der_len, crt_der, crt_der_len,
                      serial_hex, err);
}

/* ---- CRL (RFC 5280 section 5), written by hand
 * ------------------------------- */

/* UTCTime through 2049, GeneralizedTime after (RFC 5280 5.1.2.4). */
static int
write_time(unsigned char **p, unsigned char *start, time_t t)
{
    struct tm tm;
    char s[20];
    gmtime_r(&t, &tm);
    if (tm.tm_year + 1900 < 2050) {
        strftime(s, sizeof(s), "%y%m%d%H%M%SZ", &tm);
        return mbedtls_asn1_write_tagged_string(p, start, MBEDTLS_ASN1_UTC_TIME,
                                                s, strlen(s));
    }
    strftime(s, sizeof(s), "%Y%m%d%H%M%SZ", &tm);
    return mbedtls_asn1_write_tagged_string(
        p, start, MBEDTLS_ASN1_GENERALIZED_TIME, s, strlen(s));
}

#define CHK(expr)                                                              \
    do {                                                                       \
        int r_ = (expr);                                                       \
        if (r_ < 0)                                                            \
            goto asn1_fail;                                                    \
        len += (size_t)r_;                                                     \
    } while (0)

/* SEQUENCE { OID ecdsa-with-SHA256 } (no parameters, RFC 5758 3.2). */
static int
write_sig_alg(unsigned char **p, unsigned char *start)
{
    size_t len = 0;
    CHK(mbedtls_asn1_write_oid(p, start, MBEDTLS_OID_ECDSA_SHA256,
                               MBEDTLS_OID_SIZE(MBEDTLS_OID_ECDSA_SHA256)));
    CHK(mbedtls_asn1_write_len(p, start, len));
    CHK(mbedtls_asn1_write_tag(
        p, start, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE));
    return (int)len;
asn1_fail:
    return -1;
}

int
pki_write_crl(struct pki *p, const struct pki_db *db, char *err)
{
    size_t n_rev = 0;
    for (size_t i = 0; i < db->n; i++)
        n_rev += db->v[i].revoked;
    size_t cap = 4096 + n_rev * 64;
    unsigned char *tbs_buf = malloc(cap), *out_buf = malloc(cap + 512);
    unsigned char *pem = malloc(cap * 2 + 1024);
    mbedtls_mpi serial;
    mbedtls_mpi_init(&serial);
    int rc = -1;
    if (tbs_buf == NULL || out_buf == NULL || pem == NULL) {
        fail(err, "out of memory");
        goto out;
    }
    time_t now = time(NULL);
    unsigned char *q = tbs_buf + cap;
    size_t len = 0;

    /* crlExtensions [0] EXPLICIT: cRLNumber = now (monotonic enough for
     * one writer; RFC 5280 5.2.3). */
    {
        size_t ext_len = 0, l0 = len;
        uint8_t num[8];
        uint64_t v = (uint64_t)now;
        for (int i = 7; i >= 0; i--, v >>= 8)
            num[i] = (uint8_t)v;
        CHK(mbedtls_mpi_read_binary(&serial, num, sizeof(num)));
        CHK(mbedtls_asn1_write_mpi(&q, tbs_buf, &serial));
        size_t inner = len - l0;
        CHK(mbedtls_asn1_write_len(&q, tbs_buf, inner));
        CHK(mbedtls_asn1_write_tag(&q, tbs_buf, MBEDTLS_ASN1_OCTET_STRING));
        CHK(mbedtls_asn1_write_oid(&q, tbs_buf, MBEDTLS_OID_CRL_NUMBER,
                                   MBEDTLS_OID_SIZE(MBEDTLS_OID_CRL_NUMBER)));
        ext_len = len - l0;
        CHK(mbedtls_asn1_write_len(&q, tbs_buf, ext_len));
        CHK(mbedtls_asn1_write_tag(
            &q, tbs_buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE));
        ext_len = len - l0;
        CHK(mbedtls_asn1_write_len(&q, tbs_buf, ext_len));
        CHK(mbedtls_asn1_write_tag(
            &q, tbs_buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE));
        ext_len = len - l0;
        CHK(mbedtls_asn1_write_len(&q, tbs_buf, ext_len));
        CHK(mbedtls_asn1_write_tag(&q, tbs_buf,
                                   MBEDTLS_ASN1_CONTEXT_SPECIFIC |
                                       MBEDTLS_ASN1_CONSTRUCTED | 0));
    }
    /* revokedCertificates, omitted when empty (5.1.2.6). */
    if (n_rev > 0) {
        size_t l0 = len;
        for (size_t i = db->n; i-- > 0;) {
            const struct pki_record *r = &db->v[i];
            if (!r->revoked)
                continue;
            uint8_t sb[PKI_SERIAL_LEN + 4];
            size_t sn;
            if (from_hex(r->serial, sb, sizeof(sb), &sn) != 0) {
                fail(err, "register: bad serial for '%s'", r->id);
                goto out;
            }
            size_t e0 = len;
            CHK(write_time(&q, tbs_buf, r->revoked_at ? r->revoked_at : now));
            CHK(mbedtls_mpi_read_binary(&serial, sb, sn));
            CHK(mbedtls_asn1_write_mpi(&q, tbs_buf, &serial));
            CHK(mbedtls_asn1_write_len(&q, tbs_buf, len - e0));
            CHK(mbedtls_asn1_write_tag(
                &q, tbs_buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE));
        }
        CHK(mbedtls_asn1_write_len(&q, tbs_buf, len - l0));
        CHK(mbedtls_asn1_write_tag(
            &q, tbs_buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE));
    }
    CHK(write_time(&q, tbs_buf, now + PKI_CRL_VALIDITY_S)); /* nextUpdate */
    CHK(write_time(&q, tbs_buf, now - 60));                 /* thisUpdate */
    CHK(mbedtls_asn1_write_raw_buffer(&q, tbs_buf, p->ca_crt.subject_raw.p,
                                      p->ca_crt.subject_raw.len));
    CHK(write_sig_alg(&q, tbs_buf));
    CHK(mbedtls_asn1_write_int(&q, tbs_buf, 1)); /* v2 */
    CHK(mbedtls_asn1_write_len(&q, tbs_buf, len));
    CHK(mbedtls_asn1_write_tag(
        &q, tbs_buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE));
    size_t tbs_len = len;

    uint8_t hash[32];
    unsigned char sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE];
    size_t sig_len = 0;
    if (mbedtls_sha256_ret(q, tbs_len, hash, 0) != 0 ||
        mbedtls_pk_sign(&p->ca_key, MBEDTLS_MD_SHA256, hash, sizeof(hash), sig,
                        &sig_len, mbedtls_ctr_drbg_random, &p->drbg) != 0) {
        fail(err, "signing the CRL failed");
        goto out;
    }
    unsigned char *o = out_buf + cap + 512;
    len = 0;
    CHK(mbedtls_asn1_write_bitstring(&o, out_buf, sig, sig_len * 8));
    CHK(write_sig_alg(&o, out_buf));
    CHK(mbedtls_asn1_write_raw_buffer(&o, out_buf, q, tbs_len));
    CHK(mbedtls_asn1_write_len(&o, out_buf, len));
    CHK(mbedtls_asn1_write_tag(
        &o, out_buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE));
    size_t olen = 0;
    if (mbedtls_pem_write_buffer("-----BEGIN X509 CRL-----\n",
                                 "-----END X509 CRL-----\n", o, len, pem,
                                 cap * 2 + 1024, &olen) != 0) {
        fail(err, "PEM encoding of the CRL failed");
        goto out;
    }
    char path[4200];
    join(path, sizeof(path), p->dir, PKI_CRL);
    rc = pki_write_file(path, pem, olen - 1, 0644, err);
    goto out;
asn1_fail:
    fail(err, "encoding the CRL failed");
out:
    mbedtls_mpi_free(&serial);
    free(tbs_buf);
    free(out_buf);
    free(pem);
    return rc;
}

/* ---- register
 * ------------------------------------------------------------------ */

int
pki_db_add(struct pki_db *db, const struct pki_record *r, char *err)
{
    if (db->n >= PKI_MAX_DEVICES)
        return fail(err, "register full (%d records)", PKI_MAX_DEVICES);
    if (db->n == db->cap) {
        size_t cap = db->cap ? db->cap * 2 : 64;
        struct pki_record *v = realloc(db->v, cap * sizeof(*v));
        if (v == NULL)
            return fail(err, "out of memory");
        db->v = v;
        db->cap = cap;
    }
    db->v[db->n++] = *r;
    return 0;
}

struct pki_record *
pki_db_active(struct pki_db *db, const char *id)
{
    for (size_t i = db->n; i-- > 0;)
        if (!db->v[i].revoked && strcmp(db->v[i].id, id) == 0 &&
            db->v[i].group[0] != '(')
            return &db->v[i];
    return NULL;
}

void
pki_db_free(struct pki_db *db)
{
    free(db->v);
    memset(db, 0, sizeof(*db));
}

/* devices.tsv: "# id serial group not_after revoked revoked_at" then one
 * tab-separated line per issued certificate, oldest first. */
int
pki_db_load(const char *dir, struct pki_db *db, char *err)
{
    char path[4200];
    join(path, sizeof(path), dir, PKI_DB);
    memset(db, 0, sizeof(*db));
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        return fail(err, "%s: %s", path, strerror(errno));
    }
    char line[512];
    unsigned lineno = 0;
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        if (line[0] == '#' || line[0] == '\n')
            continue;
        struct pki_record r;
        memset(&r, 0, sizeof(r));
        long long na, ra;
        int rev;
        if (sscanf(line, "%71[^\t]\t%32[^\t]\t%39[^\t]\t%lld\t%d\t%lld", r.id,
                   r.serial, r.group, &na, &rev, &ra) != 6) {
            rc = fail(err, "%s:%u: malformed line", path, lineno);
            break;
        }
        r.not_after = (time_t)na;
        r.revoked = rev != 0;
        r.revoked_at = (time_t)ra;
        rc = pki_db_add(db, &r, err);
    }
    fclose(f);
    return rc;
}

int
pki_db_save(const char *dir, const struct pki_db *db, char *err)
{
    size_t cap = 128 + db->n * 200;
    char *buf = malloc(cap);
    if (buf == NULL)
        return fail(err, "out of memory");
    size_t len = (size_t)snprintf(
        buf, cap, "# id\tserial\tgroup\tnot_after\trevoked\trevoked_at\n");
    for (size_t i = 0; i < db->n; i++) {
        const struct pki_record *r = &db->v[i];
        len += (size_t)snprintf(
            buf + len, cap - len, "%s\t%s\t%s\t%lld\t%d\t%lld\n", r->id,
            r->serial, r->group[0] ? r->group : "-", (long long)r->not_after,
            r->revoked ? 1 : 0, (long long)r->revoked_at);
    }
    char path[4200];
    join(path, sizeof(path), dir, PKI_DB);
    int rc = pki_write_file(path, buf, len, 0644, err);
    free(buf);
    return rc;
}

/* ---- init / open
 * --------------------------------------------------------------- */

static int
load_ca(struct pki *p, char *err)
{
    char path[4200];
    join(path, sizeof(path), p->dir, PKI_CA_KEY);
    if (access(path, R_OK) != 0)
        return fail(err, "%s: %s (run 'tmlctl pki init --dir %s' first)", path,
                    strerror(errno), p->dir);
    if (mbedtls_pk_parse_keyfile(&p->ca_key, path, NULL) != 0)
        return fail(err, "%s: not a private key", path);
    join(path, sizeof(path), p->dir, PKI_CA_CRT);
    if (mbedtls_x509_crt_parse_file(&p->ca_crt, path) != 0)
        return fail(err, "%s: not a certificate", path);
    if (mbedtls_pk_check_pair(&p->ca_crt.pk, &p->ca_key) != 0)
        return fail(err, "%s does not match %s", PKI_CA_CRT, PKI_CA_KEY);
    if (mbedtls_x509_dn_gets(p->ca_name, sizeof(p->ca_name),
                             &p->ca_crt.subject) < 0)
        return fail(err, "%s: bad subject", path);
    return 0;
}

int
pki_open(const char *dir, struct pki **out, char *err)
{
    struct pki *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return fail(err, "out of memory");
    if (strlen(dir) >= sizeof(p->dir)) {
        free(p);
        return fail(err, "path too long");
    }
    strcpy(p->dir, dir);
    mbedtls_pk_init(&p->ca_key);
    mbedtls_x509_crt_init(&p->ca_crt);
    if (rng_init(&p->ent, &p->drbg) != 0) {
        pki_close(p);
        return fail(err, "no entropy source");
    }
    if (load_ca(p, err) != 0) {
        pki_close(p);
        return -1;
    }
    *out = p;
    return 0;
}

void
pki_close(struct pki *p)
{
    if (p == NULL)
        return;
    mbedtls_pk_free(&p->ca_key);
    mbedtls_x509_crt_free(&p->ca_crt);
    rng_free(&p->ent, &p->drbg);
    free(p);
}

int
pki_init(const char *dir, const char *const *hosts, size_t n_hosts,
         const char *ca_name, bool force, char *err)
{
    char path[4200], path2[4200];
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return fail(err, "%s: %s", dir, strerror(errno));
    join(path, sizeof(path), dir, PKI_CA_KEY);
    if (exists(path) && !force)
        return fail(err,
                    "%s exists: this directory already holds a fleet CA "
                    "(--force replaces it and invalidates every device "
                    "certificate)",
                    path);
    if (n_hosts + 3 > PKI_MAX_SANS)
        return fail(err, "at most %d --host values", PKI_MAX_SANS - 3);

    mbedtls_entropy_context ent;
    mbedtls_ctr_drbg_context drbg;
    if (rng_init(&ent, &drbg) != 0) {
        rng_free(&ent, &drbg);
        return fail(err, "no entropy source");
    }
    int rc = -1;
    time_t now = time(NULL);
    char serial[2 * PKI_SERIAL_LEN + 1];
    mbedtls_pk_context ca_key;
    mbedtls_pk_init(&ca_key);
    struct pki_cert_req ca = {
        .cn = ca_name ? ca_name : "tmlfleet CA",
        .usage = PKI_USE_CA,
        .not_before = now - 3600,
        .not_after = now + 20L * 365 * 86400,
    };
    join(path2, sizeof(path2), dir, PKI_CA_CRT);
    if (issue_with(&ca, NULL, NULL, &drbg, &ca_key, path, path2, NULL, NULL,
                   NULL, NULL, serial, err) != 0)
        goto out;
    char ca_subject[256];
    snprintf(ca_subject, sizeof(ca_subject), "CN=%s,O=tmlfleet", ca.cn);

    /* The broker: SANs = --host values + loopback names, always. */
    const char *sans[PKI_MAX_SANS];
    size_t n = 0;
    for (size_t i = 0; i < n_hosts; i++)
        sans[n++] = hosts[i];
    static const char *const loop[] = {"localhost", "127.0.0.1", "::1"};
    for (size_t k = 0; k < 3; k++) {
        bool dup = false;
        for (size_t i = 0; i < n; i++)
            dup |= strcmp(sans[i], loop[k]) == 0;
        if (!dup)
            sans[n++] = loop[k];
    }
    struct pki_cert_req srv = {
        .cn = n_hosts > 0 ? hosts[0] : "localhost",
        .usage = PKI_USE_SERVER,
        .sans = sans,
        .n_sans = n,
        .not_before = now - 3600,
        .not_after = now + 10L * 365 * 86400,
    };
    join(path, sizeof(path), dir, PKI_SERVER_KEY);
    join(path2, sizeof(path2), dir, PKI_SERVER_CRT);
    if (issue_with(&srv, &ca_key, ca_subject, &drbg, NULL, path, path2, NULL,
                   NULL, NULL, NULL, serial, err) != 0)
        goto out;
    struct pki_cert_req tmld = {
        .cn = PKI_TMLD_CN,
        .usage = PKI_USE_CLIENT,
        .not_before = now - 3600,
        .not_after = now + 10L * 365 * 86400,
    };
    join(path, sizeof(path), dir, PKI_TMLD_KEY);
    join(path2, sizeof(path2), dir, PKI_TMLD_CRT);
    if (issue_with(&tmld, &ca_key, ca_subject, &drbg, NULL, path, path2, NULL,
                   NULL, NULL, NULL, serial, err) != 0)
        goto out;

    /* Fresh register and an empty CRL (the broker refuses to start with a
     * crlfile that does not exist). */
    struct pki_db db = {0};
    if (pki_db_save(dir, &db, err) != 0)
        goto out;
    struct pki *p = NULL;
    if (pki_open(dir, &p, err) != 0)
        goto out;
    rc = pki_write_crl(p, &db, err);
    pki_close(p);
out:
    mbedtls_pk_free(&ca_key);
    rng_free(&ent, &drbg);
    return rc;
}
