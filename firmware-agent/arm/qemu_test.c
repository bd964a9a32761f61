/*
 * qemu_test.c: the agent and the codec running on a Cortex-M4 (QEMU
 * mps2-an386), reporting through semihosting; run by qemu.sh (the
 * agent_qemu_m4 test). The same -Os -mcpu=cortex-m4 -mthumb objects as the
 * footprint build, so what is measured there is what runs here: unaligned
 * member copies, 64-bit arithmetic and the packed summary on the real
 * instruction set. Checks, each printed as it passes:
 *   1. integer heads of every width encode to the RFC 8949 bytes and
 *      decode back (64-bit values where size_t is 32 bits); every message
 *      type encodes and decodes back to the same bytes;
 *   2. the agent with an in-RAM port closes a 1000-inference summary, its
 *      up/tele decodes to the recorded counts and is <= 64 bytes;
 *   3. a cumulative down/ack empties the ring (no resend after a timeout);
 *   4. down/cmd changes the summary period; a foreign topic is refused;
 *   5. an offer with a bad signature is refused on up/ota, nothing written.
 * Exit status through SYS_EXIT: 0 when every check passed.
 */
#include <string.h>

#include <tml/agent.h>

/* ---- startup and semihosting --------------------------------------------- */

extern char __stack_top[], __data_load[], __data_start[], __data_end[];
extern char __bss_start[], __bss_end[];
int main(void);
void reset(void);

__attribute__((section(".vectors"), used)) static void *const vectors[2] = {
    __stack_top, (void *)reset};

static int
semihost(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;

    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static void
say(const char *s)
{
    (void)semihost(0x04, s); /* SYS_WRITE0 */
}

static void
leave(int ok)
{
    /* SYS_EXIT: ApplicationExit (QEMU exits 0) or RunTimeErrorUnknown. */
    (void)semihost(0x18, (const void *)(ok ? 0x20026 : 0x20023));
    for (;;) {
    }
}

void
reset(void)
{
    memcpy(__data_start, __data_load, (size_t)(__data_end - __data_start));
    memset(__bss_start, 0, (size_t)(__bss_end - __bss_start));
    leave(main() == 0);
}

static int failures;

static void
check(int cond, const char *what)
{
    say(cond ? "ok   " : "FAIL ");
    say(what);
    say("\n");
    failures += !cond;
}

/* ---- an in-RAM port ---------------------------------------------------------
 */

#define SLOT 8192u

static struct {
    uint8_t slots[2][SLOT];
    uint8_t state[2][512];
    uint32_t n_pub, n_tele, n_ota, flash_writes;
    uint8_t last[TMLA_TX_BUF], tele[TMLA_TX_BUF];
    size_t last_len, tele_len;
} ram;

static int
p_publish(void *u, const char *t, const uint8_t *p, size_t n, uint8_t q, bool r)
{
    size_t tl = strlen(t);

    (void)u, (void)q, (void)r;
    ram.n_pub++;
    memcpy(ram.last, p, n);
    ram.last_len = n;
    if (tl > 5 && memcmp(t + tl - 5, "/tele", 5) == 0) {
        ram.n_tele++;
        memcpy(ram.tele, p, n);
        ram.tele_len = n;
    }
    if (tl > 4 && memcmp(t + tl - 4, "/ota", 4) == 0)
        ram.n_ota++;
    return TMLA_PORT_OK;
}

static int
p_read(void *u, uint8_t s, uint32_t o, void *b, size_t n)
{
    (void)u;
    memcpy(b, ram.slots[s] + o, n);
    return 0;
}

static int
p_write(void *u, uint8_t s, uint32_t o, const void *b, size_t n)
{
    (void)u;
    ram.flash_writes++;
    memcpy(ram.slots[s] + o, b, n);
    return 0;
}

static int
p_erase(void *u, uint8_t s, uint32_t o, size_t n)
{
    (void)u;
    memset(ram.slots[s] + o, 0xff, n);
    return 0;
}

static int
p_sread(void *u, uint8_t c, void *b, size_t n)
{
    (void)u;
    if (n > sizeof ram.state[0])
        return -1;
    memcpy(b, ram.state[c], n);
    return 0;
}

static int
p_swrite(void *u, uint8_t c, const void *b, size_t n)
{
    (void)u;
    if (n > sizeof ram.state[0])
        return -1;
    memcpy(ram.state[c], b, n);
    return 0;
}

static int
p_sha_init(void *u, void *c)
{
    (void)u, (void)c;
    return 0;
}

static int
p_sha_update(void *u, void *c, const void *p, size_t n)
{
    (void)u, (void)c, (void)p, (void)n;
    return 0;
}

static int
p_sha_final(void *u, void *c, uint8_t *o)
{
    (void)u, (void)c;
    memset(o, 0, TML_SHA256_LEN);
    return 0;
}

static int
p_verify(void *u, const uint8_t *pub, const uint8_t *h, const uint8_t *s)
{
    (void)u, (void)pub, (void)h, (void)s;
    return -1; /* no crypto here: every signature is bad */
}

static uint32_t
p_random(void *u)
{
    static uint32_t x = 12345;

    (void)u;
    x = x * 1103515245u + 12345u;
    return x >> 8;
}

static int
p_activate(void *u, const struct tmla_model *m)
{
    (void)u, (void)m;
    return TMLA_PORT_OK;
}

static bool
p_health(void *u, struct tml_health *h)
{
    (void)u;
    h->free_ram = 48000;
    h->supply_mv = 3312;
    h->temp_dc = -45;
    h->uptime_s = 87000;
    return true;
}

static const struct tmla_trusted_key keys[1] = {{.kid = {'k'}, .kid_len = 1}};

static const struct tmla_port port = {
    .publish = p_publish,
    .slot_size = SLOT,
    .erase_size = 1024,
    .write_align = 8,
    .flash_read = p_read,
    .flash_write = p_write,
    .flash_erase = p_erase,
    .state_read = p_sread,
    .state_write = p_swrite,
    .sha256_init = p_sha_init,
    .sha256_update = p_sha_update,
    .sha256_final = p_sha_final,
    .es256_verify = p_verify,
    .random = p_random,
    .activate = p_activate,
    .health = p_health,
};

/* ---- checks -----------------------------------------------------------------
 */

static struct tmla_agent agent;
static uint8_t sample_buf[1024];

/* Integer heads around every width boundary, written where size_t is 32
 * bits (cbor_enc.c's put_head64 wide branch) and read back (RFC 8949
 * App. A values and the 64-bit extremes). */
static void
cbor_int_heads(void)
{
    static const struct {
        uint64_t v;
        uint8_t len;
        uint8_t b[9];
    } vec[] = {
        {23, 1, {0x17}},
        {24, 2, {0x18, 0x18}},
        {255, 2, {0x18, 0xff}},
        {256, 3, {0x19, 0x01, 0x00}},
        {65536, 5, {0x1a, 0x00, 0x01, 0x00, 0x00}},
        {0xffffffffu, 5, {0x1a, 0xff, 0xff, 0xff, 0xff}},
        {0x100000000u, 9, {0x1b, 0, 0, 0, 1, 0, 0, 0, 0}},
        {UINT64_MAX, 9, {0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
    };
    uint8_t buf[9];
    int ok = 1;

    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        struct tml_enc e;
        struct tml_dec d;
        uint64_t back = 0;
        int64_t neg = 0;
        size_t n = 0;

        tml_enc_init(&e, buf, sizeof buf);
        tml_enc_uint(&e, vec[i].v);
        ok &= tml_enc_finish(&e, &n) == TML_OK && n == vec[i].len &&
              memcmp(buf, vec[i].b, n) == 0;
        tml_dec_init(&d, buf, n);
        ok &= tml_dec_uint(&d, &back) == TML_OK && back == vec[i].v;
        if (vec[i].v <= (uint64_t)INT64_MAX) {
            /* -1 - v: the same argument under major type 1. */
            tml_enc_init(&e, buf, sizeof buf);
            tml_enc_int(&e, -1 - (int64_t)vec[i].v);
            ok &= tml_enc_finish(&e, &n) == TML_OK && n == vec[i].len &&
                  buf[0] == (uint8_t)(vec[i].b[0] | 0x20) &&
                  memcmp(buf + 1, vec[i].b + 1, n - 1) == 0;
            tml_dec_init(&d, buf, n);
            ok &= tml_dec_int(&d, &neg) == TML_OK &&
                  neg == -1 - (int64_t)vec[i].v;
        }
        tml_enc_init(&e, buf, sizeof buf);
        tml_enc_tag(&e, vec[i].v);
        ok &= tml_enc_finish(&e, &n) == TML_OK && n == vec[i].len &&
              buf[0] == (uint8_t)(vec[i].b[0] | 0xc0);
    }
    check(ok, "CBOR integer and tag heads of every width (32-bit size_t)");
}

static void
codec_round_trips(void)
{
    static uint8_t a[600], b[600];
    static struct tml_tele t, t2;
    struct tml_hello h, h2;
    struct tml_ota_up u, u2;
    struct tml_ack k, k2;
    size_t n = 0, n2 = 0;

    memset(&t, 0, sizeof t);
    t.seq = 100000;
    t.lw = 99990;
    t.model_version = 7;
    t.period_s = 60;
    t.n_inferences = 0xffffffffu;
    t.n_folded = 3;
    t.lat_max_us = 40000;
    t.n_classes = 4;
    t.class_counts[3] = 0x80000000u;
    t.n_conf_bins = 10;
    t.conf_hist[4] = 1;
    t.n_lat_bins = 16;
    t.lat_hist[15] = 2;
    t.has_health = true;
    t.health.temp_dc = -2147483647 - 1;
    check(tml_tele_encode(&t, a, sizeof a, &n) == TML_OK &&
              tml_tele_decode(a, n, &t2) == TML_OK &&
              tml_tele_encode(&t2, b, sizeof b, &n2) == TML_OK && n == n2 &&
              memcmp(a, b, n) == 0 && t2.lw == 99990 &&
              t2.health.temp_dc == t.health.temp_dc &&
              t2.class_counts[3] == 0x80000000u,
          "tele packs and unpacks (extremes)");
    memset(&h, 0, sizeof h);
    h.hw.p = "mps2-an386";
    h.hw.len = 10;
    h.chunk_max = 1024;
    h.n_groups = 1;
    h.groups[0].p = "qemu";
    h.groups[0].len = 4;
    h.boot_id = 0xdeadbeefu;
    check(tml_hello_encode(&h, a, sizeof a, &n) == TML_OK &&
              tml_hello_decode(a, n, &h2) == TML_OK &&
              tml_hello_encode(&h2, b, sizeof b, &n2) == TML_OK && n == n2 &&
              memcmp(a, b, n) == 0 && h2.boot_id == 0xdeadbeefu,
          "hello round trip");
    memset(&u, 0, sizeof u);
    u.kind = TML_OTA_UP_STATUS;
    u.offer_id = 0x12345678u;
    u.state = TML_OTA_FAILED;
    u.reason = TML_OTA_R_BAD_SIGNATURE;
    check(tml_ota_up_encode(&u, a, sizeof a, &n) == TML_OK &&
              tml_ota_up_decode(a, n, &u2) == TML_OK &&
              u2.offer_id == u.offer_id && u2.reason == u.reason,
          "ota_up round trip");
    k.has_tele = true;
    k.tele_seq = 70000;
    k.has_sample = false;
    k.sample_seq = 0;
    check(tml_ack_encode(&k, a, sizeof a, &n) == TML_OK &&
              tml_ack_decode(a, n, &k2) == TML_OK && k2.has_tele &&
              !k2.has_sample && k2.tele_seq == 70000,
          "ack round trip");
}

static void
agent_runs(void)
{
    struct tmla_config cfg;
    struct tml_tele t;
    struct tml_ack k = {.has_tele = true};
    struct tml_cmd c;
    struct tml_ota_down o;
    static uint8_t msg[256];
    uint8_t manifest[80];
    size_t n = 0;
    uint32_t now = 1000, teles, before;

    tmla_config_defaults(&cfg);
    cfg.device_id = "m4-1";
    cfg.hw = "mps2-an386";
    cfg.keys = keys;
    cfg.n_keys = 1;
    cfg.n_classes = 4;
    cfg.sample_buf = sample_buf;
    cfg.sample_buf_len = sizeof sample_buf;
    check(tmla_init(&agent, &cfg, &port, now) == TML_OK, "agent init");
    tmla_on_connect(&agent, now);
    tmla_poll(&agent, now);
    check(ram.n_pub >= 2, "hello and state published");
    for (uint32_t i = 0; i < 1000; i++)
        tmla_record(&agent, i % 4, i % 20 == 0 ? 3000 : 7000 + (i * 37) % 3000,
                    18000 + (i * 53) % 8000);
    now += 60000;
    tmla_poll(&agent, now);
    check(ram.n_tele == 1 &&
              tml_tele_decode(ram.tele, ram.tele_len, &t) == TML_OK &&
              t.n_inferences == 1000 && t.n_low_conf == 50 &&
              t.class_counts[2] == 250 && t.has_health &&
              t.health.temp_dc == -45,
          "summary published and decodes to the recorded counts");
    check(ram.tele_len <= 64, "summary <= 64 bytes");
    k.tele_seq = t.seq;
    check(tml_ack_encode(&k, msg, sizeof msg, &n) == TML_OK &&
              tmla_on_message(&agent, "tml/v1/m4-1/down/ack", 20, msg, n,
                              now) == TML_OK,
          "ack accepted");
    teles = ram.n_tele;
    now += 45000; /* past the ack timeout, before the next period ends */
    tmla_poll(&agent, now);
    check(ram.n_tele == teles, "acked summary not sent again");
    memset(&c, 0, sizeof c);
    c.kind = TML_CMD_SET;
    c.nonce = 9;
    c.has_summary_period = true;
    c.summary_period_s = 10;
    check(tml_cmd_encode(&c, msg, sizeof msg, &n) == TML_OK &&
              tmla_on_message(&agent, "tml/v1/m4-1/down/cmd", 20, msg, n,
                              now) == TML_OK &&
              agent.cfg.summary_period_s == 10,
          "cmd sets the summary period");
    check(tmla_on_message(&agent, "tml/v1/m4-2/down/cmd", 20, msg, n, now) ==
              TML_ERR_TOPIC,
          "another device's topic refused");
    /* A COSE_Sign1 whose signature cannot verify (the port says so). */
    memset(manifest, 0, sizeof manifest);
    {
        static const uint8_t sig_payload[1] = {0xa0};
        static uint8_t sig[TML_ES256_SIG_LEN];

        check(tml_cose_sign1_encode((const uint8_t *)"k", 1, sig_payload, 1,
                                    sig, manifest, sizeof manifest,
                                    &n) == TML_OK,
              "COSE_Sign1 built");
    }
    memset(&o, 0, sizeof o);
    o.kind = TML_OTA_DOWN_OFFER;
    o.offer_id = 5;
    o.manifest.p = manifest;
    o.manifest.len = n;
    before = ram.flash_writes;
    check(tml_ota_down_encode(&o, msg, sizeof msg, &n) == TML_OK &&
              tmla_on_message(&agent, "tml/v1/m4-1/down/ota", 20, msg, n,
                              now) == TML_OK &&
              ram.n_ota == 1 && ram.flash_writes == before,
          "bad signature refused on up/ota, no flash write");
}

int
main(void)
{
    say("libtmlagent on Cortex-M4 (QEMU mps2-an386)\n");
    cbor_int_heads();
    codec_round_trips();
    agent_runs();
    say(failures == 0 ? "all passed\n" : "FAILED\n");
    return failures == 0 ? 0 : 1;
}
