/*
 * no_capture.c: sample.c's entry points doing nothing, for features.sh
 * only (what input capture costs in flash). Not a build option: the
 * agent always has capture.
 */
#include "internal.h"

void
tmla__sample_start(struct tmla_agent *a, uint32_t now_ms)
{
    (void)a;
    (void)now_ms;
}

void
tmla__sample_poll(struct tmla_agent *a, uint32_t now_ms)
{
    (void)a;
    (void)now_ms;
}

void
tmla__sample_ack(struct tmla_agent *a, uint32_t seq)
{
    (void)a;
    (void)seq;
}

void
tmla__sample_unsend(struct tmla_agent *a)
{
    (void)a;
}

enum tmla_capture_rc
tmla_capture(struct tmla_agent *a, const struct tmla_inference *inf,
             const void *input, size_t len, uint8_t reason, uint32_t now_ms)
{
    (void)a;
    (void)inf;
    (void)input;
    (void)len;
    (void)reason;
    (void)now_ms;
    return TMLA_CAPTURE_DISABLED;
}
