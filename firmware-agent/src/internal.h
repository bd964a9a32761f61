/*
 * internal.h: cross-file internals of libtmlagent (tmla__ prefix). Not
 * installed; nothing here is API.
 */
#ifndef TMLA_INTERNAL_H
#define TMLA_INTERNAL_H

#include <tml/agent.h>

/* -ffreestanding implies -fno-builtin, so GCC calls memcpy even for a
 * fixed 1..8-byte copy; TMLA__MEMCPY lets GCC and clang inline those (as
 * proto's TML__MEMCPY). Any other compiler: memcpy. */
#if defined(__GNUC__)
#define TMLA__MEMCPY __builtin_memcpy
#else
#define TMLA__MEMCPY memcpy
#endif

#define TMLA__NO_SLOT 0xffu
#define TMLA__STREAM_TELE 0
#define TMLA__STREAM_SAMPLE 1

/* Signed difference of two wrapping millisecond times: a - b. */
static inline int32_t
tmla__ms_diff(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b);
}

/* state.c: the persisted record (two copies, generation, CRC, read-back).
 * Loading also draws the numbering epoch when the numbering starts. */
void tmla__state_load(struct tmla_agent *a);
/* A number that differs between boots: port random ^ scaled wall clock. */
uint32_t tmla__fresh(struct tmla_agent *a);
/* Writes a->ps to the next copy; retries a failed write twice. Returns
 * TML_OK or TML_ERR_NOSPACE (nothing durable changed). */
enum tml_err tmla__state_save(struct tmla_agent *a);
/* Saves, and on failure leaves a->persist_due set so tmla_poll retries:
 * for transitions that must go forward in RAM whatever the flash says. */
void tmla__state_commit(struct tmla_agent *a);
/* Hands out n consecutive sequence numbers of a stream, reserving a new
 * block in the persisted state first when needed. Returns the first one, or
 * 0 if the reservation could not be persisted (nothing handed out). */
uint32_t tmla__seq_take(struct tmla_agent *a, int stream, uint32_t n);

/* agent.c */
/* strlen as a loop: the agent then links no newlib strlen (220 bytes on a
 * Cortex-M4) for the few short configuration strings it measures. */
size_t tmla__strlen(const char *s);
/* Publishes on tml/v1/<dev>/up/<kind>, QoS 1 unless how has TMLA__QOS0
 * (OTA chunk requests: PROTOCOL.md section 8.2), retained with
 * TMLA__RETAIN. Returns the port's code; TMLA_PORT_AGAIN when not
 * connected. */
#define TMLA__RETAIN 1u
#define TMLA__QOS0 2u
int tmla__publish(struct tmla_agent *a, enum tml_kind kind, const uint8_t *p,
                  size_t len, unsigned how);

/* tele.c */
void tmla__tele_start(struct tmla_agent *a, uint32_t now_ms);
/* Closes the current period into the ring (folding when full). */
void tmla__tele_close(struct tmla_agent *a, uint32_t now_ms);
void tmla__tele_poll(struct tmla_agent *a, uint32_t now_ms);
void tmla__tele_ack(struct tmla_agent *a, uint32_t seq);
void tmla__tele_unsend(struct tmla_agent *a);

/* sample.c */
void tmla__sample_start(struct tmla_agent *a, uint32_t now_ms);
void tmla__sample_poll(struct tmla_agent *a, uint32_t now_ms);
void tmla__sample_ack(struct tmla_agent *a, uint32_t seq);
void tmla__sample_unsend(struct tmla_agent *a);

/* ota.c */
void tmla__ota_boot(struct tmla_agent *a, uint32_t now_ms);
void tmla__ota_connected(struct tmla_agent *a, uint32_t now_ms);
void tmla__ota_message(struct tmla_agent *a, const struct tml_ota_down *m,
                       uint32_t now_ms);
void tmla__ota_poll(struct tmla_agent *a, uint32_t now_ms);

#endif /* TMLA_INTERNAL_H */
