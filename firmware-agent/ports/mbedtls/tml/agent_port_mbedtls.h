/*
 * tml/agent_port_mbedtls.h: the crypto members of struct tmla_port on
 * mbedTLS 2.28 (SHA-256 and ECDSA P-256 verify), for gateway-side builds,
 * the simulator and MCU firmware that already links mbedTLS for TLS.
 */
#ifndef TML_AGENT_PORT_MBEDTLS_H
#define TML_AGENT_PORT_MBEDTLS_H

#include <tml/agent_port.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Sets port->sha256_init/update/final and port->es256_verify. They ignore
 * the user pointer, so any port->user works. */
void tmla_mbedtls_fill_port(struct tmla_port *port);

/* The members themselves (see struct tmla_port for the contract). */
int tmla_mbedtls_sha256_init(void *user, void *ctx);
int tmla_mbedtls_sha256_update(void *user, void *ctx, const void *p,
                               size_t len);
int tmla_mbedtls_sha256_final(void *user, void *ctx,
                              uint8_t out[TML_SHA256_LEN]);
int tmla_mbedtls_es256_verify(void *user, const uint8_t pub[65],
                              const uint8_t hash[TML_SHA256_LEN],
                              const uint8_t sig[TML_ES256_SIG_LEN]);

#ifdef __cplusplus
}
#endif

#endif /* TML_AGENT_PORT_MBEDTLS_H */
