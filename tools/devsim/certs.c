/*
 * certs.c: device certificate minting with mbedTLS 2.28 (x509write_crt).
 * Holds the CA key and a CTR-DRBG; each certs_mint() generates a fresh
 * P-256 key. Files are written to a temporary name and renamed, so an
 * interrupted run never leaves a half-written certificate in the cache.
 */
#define _POSIX_C_SOURCE 200809L
#include "certs.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

struct certs_ca {
    mbedtls_x509_crt crt;
    mbedtls_pk_context key;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    char issuer[256];
    unsigned long serial;
};

struct certs_ca *
certs_ca_load(const char *crt_path, const char *key_path, char *err,
              size_t err_cap)
{
    static const char pers[] = "tml-devsim certs";
    struct certs_ca *ca = calloc(1, sizeof(*ca));
    int rc;

    if (ca == NULL) {
        snprintf(err, err_cap, "out of memory");
        return NULL;
    }
    mbedtls_x509_crt_init(&ca->crt);
    mbedtls_pk_init(&ca->key);
    mbedtls_entropy_init(&ca->entropy);
    mbedtls_ctr_drbg_init(&ca->drbg);
    rc = mbedtls_ctr_drbg_seed(&ca->drbg, mbedtls_entropy_func, &ca->entropy,
                               (const unsigned char *)pers, sizeof(pers) - 1);
    if (rc != 0) {
        snprintf(err, err_cap, "entropy: mbedtls error -0x%04x", -rc);
        goto fail;
    }
    rc = mbedtls_x509_crt_parse_file(&ca->crt, crt_path);
    if (rc != 0) {
        snprintf(err, err_cap, "%s: cannot parse CA certificate (-0x%04x)",
                 crt_path, -rc);
        goto fail;
    }
    rc = mbedtls_pk_parse_keyfile(&ca->key, key_path, NULL);
    if (rc != 0) {
        snprintf(err, err_cap, "%s: cannot parse CA key (-0x%04x)", key_path,
                 -rc);
        goto fail;
    }
    rc = mbedtls_x509_dn_gets(ca->issuer, sizeof(ca->issuer),
                              &ca->crt.subject);
    if (rc < 0) {
        snprintf(err, err_cap, "%s: CA subject too long", crt_path);
        goto fail;
    }
    /* Serials only need to be unique per CA; start from the clock so two
     * runs against one CA do not collide. */
    ca->serial = (unsigned long)time(NULL) * 10000ul;
    return ca;
fail:
    certs_ca_free(ca);
    return NULL;
}

void
certs_ca_free(struct certs_ca *ca)
{
    if (ca == NULL)
        return;
    mbedtls_x509_crt_free(&ca->crt);
    mbedtls_pk_free(&ca->key);
    mbedtls_ctr_drbg_free(&ca->drbg);
    mbedtls_entropy_free(&ca->entropy);
    free(ca);
}

static int
write_file(const char *path, const unsigned char *buf, size_t len, mode_t mode)
{
    char tmp[4096];
    int fd;
    ssize_t n;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return -1;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    n = write(fd, buf, len);
    if (n != (ssize_t)len || close(fd) != 0) {
        if (n == (ssize_t)len)
            fd = -1;
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static void
fmt_time(char out[15], time_t t)
{
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, 15, "%Y%m%d%H%M%S", &tm);
}

int
certs_mint(struct certs_ca *ca, const char *id, const char *crt_path,
           const char *key_path, char *err, size_t err_cap)
{
    mbedtls_pk_context key;
    mbedtls_x509write_cert crt;
    mbedtls_mpi serial;
    unsigned char pem[4096];
    char subject[128];
    char not_before[15], not_after[15];
    time_t now = time(NULL);
    int rc = -1, mrc;

    if (access(crt_path, R_OK) == 0 && access(key_path, R_OK) == 0)
        return 0;
    if (snprintf(subject, sizeof(subject), "CN=%s", id) >=
        (int)sizeof(subject)) {
        snprintf(err, err_cap, "device id too long");
        return -1;
    }
    mbedtls_pk_init(&key);
    mbedtls_x509write_crt_init(&crt);
    mbedtls_mpi_init(&serial);

    mrc = mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
    if (mrc == 0)
        mrc = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key),
                                  mbedtls_ctr_drbg_random, &ca->drbg);
    if (mrc != 0) {
        snprintf(err, err_cap, "%s: key generation failed (-0x%04x)", id,
                 -mrc);
        goto out;
    }
    fmt_time(not_before, now - 86400);
    fmt_time(not_after, now + 30 * 86400);
    mbedtls_x509write_crt_set_version(&crt, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&crt, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&crt, &key);
    mbedtls_x509write_crt_set_issuer_key(&crt, &ca->key);
    mrc = mbedtls_mpi_lset(&serial, (mbedtls_mpi_sint)(++ca->serial));
    if (mrc == 0)
        mrc = mbedtls_x509write_crt_set_serial(&crt, &serial);
    if (mrc == 0)
        mrc = mbedtls_x509write_crt_set_validity(&crt, not_before, not_after);
    if (mrc == 0)
        mrc = mbedtls_x509write_crt_set_subject_name(&crt, subject);
    if (mrc == 0)
        mrc = mbedtls_x509write_crt_set_issuer_name(&crt, ca->issuer);
    if (mrc == 0)
        mrc = mbedtls_x509write_crt_set_basic_constraints(&crt, 0, -1);
    if (mrc != 0) {
        snprintf(err, err_cap, "%s: certificate fields (-0x%04x)", id, -mrc);
        goto out;
    }
    mrc = mbedtls_pk_write_key_pem(&key, pem, sizeof(pem));
    if (mrc != 0 ||
        write_file(key_path, pem, strlen((char *)pem), 0600) != 0) {
        snprintf(err, err_cap, "%s: cannot write key", key_path);
        goto out;
    }
    mrc = mbedtls_x509write_crt_pem(&crt, pem, sizeof(pem),
                                    mbedtls_ctr_drbg_random, &ca->drbg);
    if (mrc != 0 ||
        write_file(crt_path, pem, strlen((char *)pem), 0644) != 0) {
        snprintf(err, err_cap, "%s: cannot write certificate", crt_path);
        goto out;
    }
    rc = 0;
out:
    mbedtls_mpi_free(&serial);
    mbedtls_x509write_crt_free(&crt);
    mbedtls_pk_free(&key);
    return rc;
}
