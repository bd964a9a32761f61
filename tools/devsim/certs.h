/*
 * certs.h: mint device TLS certificates in-process with mbedTLS x509write,
 * signed by a test CA (tests/lib/testbroker's, or any ECDSA/RSA CA whose key
 * file is at hand). For tests and demos: thousands of devices need thousands
 * of certificates, and the openssl CLI costs a process per certificate.
 * Certificates are ECDSA P-256, CN = device id, valid from one day ago for
 * 30 days. Production devices get theirs from `tmlctl device provision`.
 */
#ifndef DEVSIM_CERTS_H
#define DEVSIM_CERTS_H

#include <stddef.h>

struct certs_ca;

/* Loads the CA certificate and key (PEM). Returns NULL and writes a message
 * into err on failure. */
struct certs_ca *certs_ca_load(const char *crt_path, const char *key_path,
                               char *err, size_t err_cap);
void certs_ca_free(struct certs_ca *ca);

/* Writes crt_path and key_path (mode 0600) for CN = id, unless both exist
 * already (then it is a no-op: the state directory is the cache). Returns 0,
 * or -1 with a message in err. */
__attribute__((warn_unused_result)) int certs_mint(struct certs_ca *ca,
                                                   const char *id,
                                                   const char *crt_path,
                                                   const char *key_path,
                                                   char *err, size_t err_cap);

#endif /* DEVSIM_CERTS_H */
