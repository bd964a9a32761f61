/*
 * port_mbedtls.c: SHA-256 and ES256 verification for struct tmla_port on
 * mbedTLS 2.28. The SHA-256 context lives in the agent's opaque buffer
 * (TMLA_SHA256_CTX_SIZE bytes); verification builds its group, point and
 * numbers on the stack and frees them before returning.
 */
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>
#include <mbedtls/sha256.h>

#include <tml/agent.h>
#include <tml/agent_port_mbedtls.h>

_Static_assert(sizeof(mbedtls_sha256_context) <= TMLA_SHA256_CTX_SIZE,
               "TMLA_SHA256_CTX_SIZE too small for mbedTLS");

int
tmla_mbedtls_sha256_init(void *user, void *ctx)
{
    (void)user;
    mbedtls_sha256_init(ctx);
    return mbedtls_sha256_starts_ret(ctx, 0) == 0 ? 0 : -1;
}

int
tmla_mbedtls_sha256_update(void *user, void *ctx, const void *p, size_t len)
{
    (void)user;
    return mbedtls_sha256_update_ret(ctx, p, len) == 0 ? 0 : -1;
}

int
tmla_mbedtls_sha256_final(void *user, void *ctx, uint8_t out[TML_SHA256_LEN])
{
    int rc;

    (void)user;
    rc = mbedtls_sha256_finish_ret(ctx, out);
    mbedtls_sha256_free(ctx);
    return rc == 0 ? 0 : -1;
}

int
tmla_mbedtls_es256_verify(void *user, const uint8_t pub[65],
                          const uint8_t hash[TML_SHA256_LEN],
                          const uint8_t sig[TML_ES256_SIG_LEN])
{
    mbedtls_ecp_group grp;
    mbedtls_ecp_point q;
    mbedtls_mpi r, s;
    int rc;

    (void)user;
    mbedtls_ecp_group_init(&grp);
    mbedtls_ecp_point_init(&q);
    mbedtls_mpi_init(&r);
    mbedtls_mpi_init(&s);
    rc = mbedtls_ecp_group_load(&grp, MBEDTLS_ECP_DP_SECP256R1);
    if (rc == 0)
        rc = mbedtls_ecp_point_read_binary(&grp, &q, pub, 65);
    if (rc == 0)
        rc = mbedtls_ecp_check_pubkey(&grp, &q);
    if (rc == 0)
        rc = mbedtls_mpi_read_binary(&r, sig, 32);
    if (rc == 0)
        rc = mbedtls_mpi_read_binary(&s, sig + 32, 32);
    if (rc == 0)
        rc = mbedtls_ecdsa_verify(&grp, hash, TML_SHA256_LEN, &q, &r, &s);
    mbedtls_mpi_free(&s);
    mbedtls_mpi_free(&r);
    mbedtls_ecp_point_free(&q);
    mbedtls_ecp_group_free(&grp);
    return rc == 0 ? 0 : -1;
}

void
tmla_mbedtls_fill_port(struct tmla_port *port)
{
    port->sha256_init = tmla_mbedtls_sha256_init;
    port->sha256_update = tmla_mbedtls_sha256_update;
    port->sha256_final = tmla_mbedtls_sha256_final;
    port->es256_verify = tmla_mbedtls_es256_verify;
}
