/*
 * main.c: the smallest firmware that uses every entry point of the agent,
 * for the Cortex-M4 footprint report (size.sh). Port members are stubs:
 * the figure is the agent core + proto, without MQTT, TLS, flash drivers
 * or crypto (the budget in README.md excludes those).
 */
#include <tml/agent.h>

static struct tmla_agent agent;

static int
stub_publish(void *u, const char *t, const uint8_t *p, size_t n, uint8_t q,
             bool r)
{
    (void)u, (void)t, (void)p, (void)n, (void)q, (void)r;
    return 0;
}

static int
stub_rw(void *u, uint8_t s, uint32_t o, void *b, size_t n)
{
    (void)u, (void)s, (void)o, (void)b, (void)n;
    return 0;
}

static int
stub_w(void *u, uint8_t s, uint32_t o, const void *b, size_t n)
{
    (void)u, (void)s, (void)o, (void)b, (void)n;
    return 0;
}

static int
stub_erase(void *u, uint8_t s, uint32_t o, size_t n)
{
    (void)u, (void)s, (void)o, (void)n;
    return 0;
}

static int
stub_sread(void *u, uint8_t c, void *b, size_t n)
{
    (void)u, (void)c, (void)b, (void)n;
    return -1;
}

static int
stub_swrite(void *u, uint8_t c, const void *b, size_t n)
{
    (void)u, (void)c, (void)b, (void)n;
    return 0;
}

static int
stub_sha_init(void *u, void *c)
{
    (void)u, (void)c;
    return 0;
}

static int
stub_sha_update(void *u, void *c, const void *p, size_t n)
{
    (void)u, (void)c, (void)p, (void)n;
    return 0;
}

static int
stub_sha_final(void *u, void *c, uint8_t *o)
{
    (void)u, (void)c, (void)o;
    return 0;
}

static int
stub_verify(void *u, const uint8_t *p, const uint8_t *h, const uint8_t *s)
{
    (void)u, (void)p, (void)h, (void)s;
    return -1;
}

static uint32_t
stub_random(void *u)
{
    (void)u;
    return 4;
}

static int
stub_activate(void *u, const struct tmla_model *m)
{
    (void)u, (void)m;
    return 0;
}

static int
stub_infer(void *u, const struct tmla_model *m, uint32_t o, uint32_t n,
           uint32_t *c, uint32_t *s)
{
    (void)u, (void)m, (void)o, (void)n;
    *c = 0;
    *s = 0;
    return 0;
}

static const struct tmla_trusted_key keys[1] = {{.kid = {1}, .kid_len = 1}};

static const struct tmla_port port = {
    .publish = stub_publish,
    .slot_size = 65536,
    .erase_size = 4096,
    .write_align = 8,
    .flash_read = stub_rw,
    .flash_write = stub_w,
    .flash_erase = stub_erase,
    .state_read = stub_sread,
    .state_write = stub_swrite,
    .sha256_init = stub_sha_init,
    .sha256_update = stub_sha_update,
    .sha256_final = stub_sha_final,
    .es256_verify = stub_verify,
    .random = stub_random,
    .activate = stub_activate,
    .infer = stub_infer,
};

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

    tmla_config_defaults(&cfg);
    cfg.device_id = "dev-1";
    cfg.hw = "stm32f4";
    cfg.keys = keys;
    cfg.n_keys = 1;
    if (tmla_init(&agent, &cfg, &port, tick) != TML_OK)
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
