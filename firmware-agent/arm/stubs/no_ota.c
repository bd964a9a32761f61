/*
 * no_ota.c: ota.c's entry points doing nothing, for features.sh only
 * (what the OTA receiver costs in flash). Not a build option: the agent
 * always has OTA.
 */
#include "internal.h"

void
tmla__ota_boot(struct tmla_agent *a, uint32_t now_ms)
{
    (void)a;
    (void)now_ms;
}

void
tmla__ota_connected(struct tmla_agent *a, uint32_t now_ms)
{
    (void)a;
    (void)now_ms;
}

void
tmla__ota_message(struct tmla_agent *a, const struct tml_ota_down *m,
                  uint32_t now_ms)
{
    (void)a;
    (void)m;
    (void)now_ms;
}

void
tmla__ota_poll(struct tmla_agent *a, uint32_t now_ms)
{
    (void)a;
    (void)now_ms;
}

enum tml_err
tmla_confirm_model(struct tmla_agent *a)
{
    (void)a;
    return TML_ERR_INVAL;
}

enum tml_err
tmla_reject_model(struct tmla_agent *a)
{
    (void)a;
    return TML_ERR_INVAL;
}
