/*
 * no_tele.c: tele.c's entry points doing nothing, for features.sh only
 * (what inference summaries cost in flash). Not a build option: the
 * agent always has telemetry.
 */
#include "internal.h"

void
tmla__tele_start(struct tmla_agent *a, uint32_t now_ms)
{
    (void)a;
    (void)now_ms;
}

void
tmla__tele_close(struct tmla_agent *a, uint32_t now_ms)
{
    (void)a;
    (void)now_ms;
}

void
tmla__tele_poll(struct tmla_agent *a, uint32_t now_ms)
{
    (void)a;
    (void)now_ms;
}

void
tmla__tele_ack(struct tmla_agent *a, uint32_t seq)
{
    (void)a;
    (void)seq;
}

void
tmla__tele_unsend(struct tmla_agent *a)
{
    (void)a;
}

void
tmla_record(struct tmla_agent *a, uint32_t cls, uint32_t confidence_bp,
            uint32_t latency_us)
{
    (void)a;
    (void)cls;
    (void)confidence_bp;
    (void)latency_us;
}

void
tmla_record_error(struct tmla_agent *a)
{
    (void)a;
}
