/*
 * fuzz_message.c: arbitrary down messages into tmla_on_message (F1).
 *
 * An input is a sequence of records [sel][len_hi][len_lo][len bytes]: sel%4
 * picks down/ack, down/ota, down/cmd of the device, or a raw topic (the
 * first payload byte is the topic length); sel/4 advances the clock before
 * a tmla_poll. Every input starts from a fresh agent and erased flash,
 * except that a first record with sel 0xff is a persisted state record
 * (the harness fixes its magic and CRC) and the rest of that record's bytes
 * fill slot 0: this fuzzes the boot path (F1 for the state parser; the
 * seed boot_with_model is the state and slot after the install seed). The
 * fuzz port accepts every signature, so offers built by the fuzzer reach the
 * download, chunk, verify and activation code; SHA-256 is real (mbedTLS).
 * The port checks the MCUboot flash rules and aborts on a violation.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <tml/agent.h>
#include <tml/agent_port_mbedtls.h>

#define SLOT 16384u
#define ERASE 4096u
#define ALIGN 8u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t flash[2][SLOT];
static uint8_t state[2][512];
static uint8_t spool[1024];
static struct tmla_agent agent;

static int
f_publish(void *u, const char *t, const uint8_t *p, size_t n, uint8_t q, bool r)
{
    (void)u, (void)t, (void)p, (void)q, (void)r;
    if (n > TMLA_TX_BUF)
        abort();
    return 0;
}

static int
f_read(void *u, uint8_t s, uint32_t o, void *b, size_t n)
{
    (void)u;
    if (s > 1 || o > SLOT || n > SLOT - o)
        abort();
    memcpy(b, &flash[s][o], n);
    return 0;
}

static int
f_write(void *u, uint8_t s, uint32_t o, const void *b, size_t n)
{
    (void)u;
    if (s > 1 || o > SLOT || n > SLOT - o || o % ALIGN || n % ALIGN)
        abort();
    for (size_t i = 0; i < n; i++)
        if (flash[s][o + i] != 0xff)
            abort(); /* write to unerased flash */
    memcpy(&flash[s][o], b, n);
    return 0;
}

static int
f_erase(void *u, uint8_t s, uint32_t o, size_t n)
{
    (void)u;
    if (s > 1 || o > SLOT || n > SLOT - o || o % ERASE || n % ERASE)
        abort();
    memset(&flash[s][o], 0xff, n);
    return 0;
}

static int
f_sread(void *u, uint8_t c, void *b, size_t n)
{
    (void)u;
    if (c > 1 || n > sizeof state[0])
        abort();
    memcpy(b, state[c], n);
    return 0;
}

static int
f_swrite(void *u, uint8_t c, const void *b, size_t n)
{
    (void)u;
    if (c > 1 || n > sizeof state[0])
        abort();
    memcpy(state[c], b, n);
    return 0;
}

static int
f_verify(void *u, const uint8_t *p, const uint8_t *h, const uint8_t *s)
{
    (void)u, (void)p, (void)h, (void)s;
    return 0; /* every signature is "good": fuzz what lies behind it */
}

static uint32_t
f_random(void *u)
{
    static uint32_t x = 1;

    (void)u;
    x = x * 1103515245u + 12345u;
    return x >> 3;
}

static int
f_activate(void *u, const struct tmla_model *m)
{
    (void)u;
    if (m->slot > 1 || m->size > SLOT)
        abort();
    return 0;
}

static int
f_infer(void *u, const struct tmla_model *m, uint32_t off, uint32_t len,
        uint32_t *cls, uint32_t *score)
{
    (void)u;
    if (off > SLOT || len > SLOT - off || m->slot > 1)
        abort();
    *cls = flash[m->slot][off] % 4u;
    *score = 5000;
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct tmla_trusted_key keys[2] = {
        {.kid = {'k', '1'}, .kid_len = 2}, {.kid = {'k', '2'}, .kid_len = 2}};
    static const char *const kinds[3] = {
        "tml/v1/fz-1/down/ack", "tml/v1/fz-1/down/ota", "tml/v1/fz-1/down/cmd"};
    struct tmla_port port = {.publish = f_publish,
                             .slot_size = SLOT,
                             .erase_size = ERASE,
                             .write_align = ALIGN,
                             .flash_read = f_read,
                             .flash_write = f_write,
                             .flash_erase = f_erase,
                             .state_read = f_sread,
                             .state_write = f_swrite,
                             .es256_verify = f_verify,
                             .random = f_random,
                             .activate = f_activate,
                             .infer = f_infer};
    struct tmla_config cfg;
    uint32_t now = 1000;
    size_t pos = 0;

    tmla_mbedtls_fill_port(&port);
    port.es256_verify = f_verify;
    memset(flash, 0xff, sizeof flash);
    memset(state, 0, sizeof state);
    if (size >= 3 && data[0] == 0xff) {
        size_t len = (size_t)data[1] << 8 | data[2];
        size_t ps = sizeof agent.ps;

        if (len > size - 3)
            len = size - 3;
        /* A persisted record with a valid magic and CRC, then slot 0. */
        memcpy(state[0], data + 3, len < ps ? len : ps);
        state[0][0] = 0x41, state[0][1] = 0x4c, state[0][2] = 0x4d;
        state[0][3] = 0x54;
        {
            uint32_t c = 0xffffffffu, crc;
            size_t n = offsetof(struct tmla__pstate, crc);

            for (size_t i = 0; i < n; i++) {
                c ^= state[0][i];
                for (int k = 0; k < 8; k++)
                    c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
            }
            crc = ~c;
            memcpy(state[0] + n, &crc, sizeof crc);
        }
        if (len > ps)
            memcpy(flash[0], data + 3 + ps, len - ps < SLOT ? len - ps : SLOT);
        pos = 3 + len;
    }
    tmla_config_defaults(&cfg);
    cfg.device_id = "fz-1";
    cfg.hw = "test-hw";
    cfg.keys = keys;
    cfg.n_keys = 2;
    cfg.arena_size = 65536;
    cfg.sample_buf = spool;
    cfg.sample_buf_len = sizeof spool;
    cfg.auto_confirm = true;
    if (tmla_init(&agent, &cfg, &port, now) != TML_OK)
        abort();
    tmla_on_connect(&agent, now);
    while (pos + 3 <= size) {
        uint8_t sel = data[pos];
        size_t len = (size_t)data[pos + 1] << 8 | data[pos + 2];
        const uint8_t *p = data + pos + 3;

        pos += 3;
        if (len > size - pos)
            len = size - pos;
        pos += len;
        if (sel % 4 < 3) {
            (void)tmla_on_message(&agent, kinds[sel % 4],
                                  strlen(kinds[sel % 4]), p, len, now);
        } else if (len > 0) {
            size_t tl = p[0] < len - 1 ? p[0] : len - 1;

            (void)tmla_on_message(&agent, (const char *)p + 1, tl, p + 1 + tl,
                                  len - 1 - tl, now);
        }
        now += (uint32_t)(sel / 4) * 997u;
        tmla_poll(&agent, now);
        tmla_record(&agent, sel, (uint32_t)sel * 40u, len);
    }
    tmla_on_disconnect(&agent);
    tmla_poll(&agent, now + 3600000u);
    return 0;
}
