/*
 * pki.h: the fleet PKI behind `tmlctl pki` and `tmlctl device` (docs/pki.md):
 * an ECDSA P-256 CA, certificates issued with mbedTLS x509write, a CRL
 * written by hand (mbedTLS 2.28 has no CRL writer) and the device register
 * (DIR/devices.tsv). All keys are P-256; private key files are 0600.
 */
#ifndef TMLCTL_PKI_H
#define TMLCTL_PKI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define PKI_MAX_SANS 16
#define PKI_SERIAL_LEN 16
#define PKI_MAX_DEVICES 100000
#define PKI_CRL_VALIDITY_S (365 * 86400)
#define PKI_KICK_VALIDITY_S 300

/* Identities with special rights on the broker: never a device id. */
#define PKI_TMLD_CN "tmld"
/* CN of the revoked certificate `device revoke` uses to see the broker
 * apply a new CRL; reserved too. */
#define PKI_PROBE_CN "tmlctl-crl-probe"

struct pki; /* an opened PKI directory with its CA */

/* Files inside the PKI directory. */
#define PKI_CA_KEY "ca.key"
#define PKI_CA_CRT "ca.crt"
#define PKI_SERVER_KEY "server.key"
#define PKI_SERVER_CRT "server.crt"
#define PKI_TMLD_KEY "tmld.key"
#define PKI_TMLD_CRT "tmld.crt"
#define PKI_CRL "crl.pem"
#define PKI_DB "devices.tsv"

enum pki_usage { PKI_USE_CA, PKI_USE_SERVER, PKI_USE_CLIENT };

struct pki_cert_req {
    const char *cn;
    enum pki_usage usage;
    const char *const *sans; /* DNS names or IP literals (server) */
    size_t n_sans;
    time_t not_before, not_after;
};

/* One line of devices.tsv. */
struct pki_record {
    char id[72];
    char serial[2 * PKI_SERIAL_LEN + 1]; /* hex */
    char group[40];
    time_t not_after;
    bool revoked;
    time_t revoked_at;
};

struct pki_db {
    size_t n, cap;
    struct pki_record *v;
};

/* Errors: each function returns 0 or -1 after writing a message to
 * err[256] that says what failed and, where it helps, what to do. */

/* Creates DIR (0700) with ca.key/ca.crt, server.key/crt (SANs = hosts;
 * localhost, 127.0.0.1 and ::1 always included), tmld.key/crt (CN tmld),
 * an empty CRL and register. Refuses if DIR/ca.key exists unless force. */
int pki_init(const char *dir, const char *const *hosts, size_t n_hosts,
             const char *ca_name, bool force, char *err);

/* Opens an initialised PKI dir (loads the CA key and certificate). */
int pki_open(const char *dir, struct pki **out, char *err);
void pki_close(struct pki *p);

/* A device id that tmlctl may certify: 1..64 bytes of [A-Za-z0-9._-], not
 * "." / "..", not a reserved identity. Rejects +, #, / and non-UTF-8. */
bool pki_device_id_ok(const char *id, char *why, size_t why_cap);

/* Generates a key and issues a certificate for req signed by the CA.
 * key_pem (0600) and crt_pem are written to the given paths (key_path may
 * be NULL to discard the key); der copies of the key and certificate are
 * returned in malloc'ed buffers when the pointers are non-NULL. The serial
 * (hex) is written to serial_hex. */
int pki_issue(struct pki *p, const struct pki_cert_req *req,
              const char *key_path, const char *crt_path, uint8_t **key_der,
              size_t *key_der_len, uint8_t **crt_der, size_t *crt_der_len,
              char serial_hex[2 * PKI_SERIAL_LEN + 1], char *err);

/* Writes DIR/crl.pem from the register's revoked serials (atomically). */
int pki_write_crl(struct pki *p, const struct pki_db *db, char *err);

int pki_db_load(const char *dir, struct pki_db *db, char *err);
int pki_db_save(const char *dir, const struct pki_db *db, char *err);
/* Adds a record (copied). */
int pki_db_add(struct pki_db *db, const struct pki_record *r, char *err);
/* Finds the active (not revoked) record of id; NULL if none. */
struct pki_record *pki_db_active(struct pki_db *db, const char *id);
void pki_db_free(struct pki_db *db);

const char *pki_dir(const struct pki *p);

/* Writes a file with mode (fchmod'ed), atomically via a temp file. */
int pki_write_file(const char *path, const void *buf, size_t len, int mode,
                   char *err);

/* chown path to user (if non-NULL and we are root); -1 + err if the user
 * does not exist. */
int pki_chown(const char *path, const char *user, char *err);

#endif
