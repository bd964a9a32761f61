/*
 * main.c: the smallest firmware that uses every entry point of the agent,
 * for the Cortex-M4 footprint report (size.sh). The port is stub_port.c,
 * linked into baseline.c too: the figure is the agent core + proto and
 * these calls, without MQTT, TLS, flash drivers or crypto (the budget in
 * README.md excludes those).
 */
#include "stub_port.h"

static struct tmla_agent agent;

/* The firmware's trusted keys are agent configuration: counted. */
static const struct tmla_trusted_key keys[1] = {{.kid = {1}, .kid_len = 1}};

/* Inputs the firmware would get from its MQTT stack and sensors; volatile so
 * the compiler cannot fold the calls away. */
volatile uint32_t tick;
volatile uint8_t rx[64];
volatile size_t rx_len;

int
main(void)
{
    struct tmla_config cfg;
    struct tmla_inference inf = {0};
    uint8_t sample[4] = {0};
    char will_topic[TML_MAX_TOPIC + 1];
    uint8_t will[8];
    size_t will_len;

    tmla_config_defaults(&cfg);
    cfg.device_id = "dev-1";
    cfg.hw = "stm32f4";
    cfg.keys = keys;
    cfg.n_keys = 1;
    /* Then the transport's last will (every MQTT firmware sets one; the
     * stub transport takes no arguments). */
    if (tmla_init(&agent, &cfg, &port, tick) != TML_OK ||
        tmla_topic(&agent, TML_DIR_UP, TML_KIND_STATE, will_topic,
                   sizeof will_topic) != TML_OK ||
        tmla_offline_payload(will, sizeof will, &will_len) != TML_OK)
        return 1;
    tmla_on_connect(&agent, tick);
    for (;;) {
        (void)tmla_on_message(&agent, "tml/v1/dev-1/down/ota", 21,
                              (const uint8_t *)rx, rx_len, tick);
        tmla_record(&agent, tick & 3, 9000, 1200);
        (void)tmla_capture(&agent, &inf, sample, sizeof sample, 0, tick);
        tmla_poll(&agent, tick);
        if (tmla_in_trial(&agent) && tmla_confirm_model(&agent) != TML_OK &&
            tmla_reject_model(&agent) != TML_OK)
            tick = 0;
        if (tick == 9)
            tmla_on_disconnect(&agent);
    }
}
