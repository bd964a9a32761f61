/*
 * test_posix.c: the POSIX port (tmlagent_posix): model slots and state as
 * files, MCUboot rules on (strict), power cut by write budget. An update is
 * installed through it, then cut at byte budgets across the download and
 * resumed after a "reboot" (a fresh struct tmla_posix on the same files).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <tml/agent_port_posix.h>

#include "rig.h"

/* The memport's own members (transport, crypto, model) behind the posix
 * port's user pointer. */
static struct tmla_port mem;

static int
w_publish(void *u, const char *t, const uint8_t *p, size_t n, uint8_t q, bool r)
{
    (void)u;
    return mem.publish(mem.user, t, p, n, q, r);
}

static int
w_sha_init(void *u, void *c)
{
    (void)u;
    return mem.sha256_init(mem.user, c);
}

static int
w_sha_update(void *u, void *c, const void *p, size_t n)
{
    (void)u;
    return mem.sha256_update(mem.user, c, p, n);
}

static int
w_sha_final(void *u, void *c, uint8_t *o)
{
    (void)u;
    return mem.sha256_final(mem.user, c, o);
}

static int
w_verify(void *u, const uint8_t *p, const uint8_t *h, const uint8_t *s)
{
    (void)u;
    return mem.es256_verify(mem.user, p, h, s);
}

static uint32_t
w_random(void *u)
{
    (void)u;
    return mem.random(mem.user);
}

static int
w_activate(void *u, const struct tmla_model *m)
{
    (void)u;
    return mem.activate(mem.user, m);
}

static int
w_infer(void *u, const struct tmla_model *m, uint32_t off, uint32_t len,
        uint32_t *c, uint32_t *s)
{
    uint8_t in[2];

    /* The fake model reads its input from the posix slot file. */
    if (tmla_posix_flash_read(u, m->slot, off, in, 2) != 0 || len < 2)
        return -1;
    *c = in[0] % 4u;
    *s = 5000u + 10u * in[1];
    return 0;
}

struct posix_rig {
    struct rig *r;
    struct tmla_posix px;
    char dir[64];
};

static void
use_posix(struct posix_rig *p)
{
    struct tmla_port port;

    if (mem.publish == NULL) /* the memport's own, saved once */
        mem = p->r->mp->port;
    port = mem;
    assert_int_equal(
        tmla_posix_open(&p->px, p->dir, MP_SLOT_SIZE, MP_ERASE, MP_ALIGN), 0);
    p->px.strict = true;
    p->px.no_sync = true;
    tmla_posix_fill_port(&p->px, &port);
    port.publish = w_publish;
    port.sha256_init = w_sha_init;
    port.sha256_update = w_sha_update;
    port.sha256_final = w_sha_final;
    port.es256_verify = w_verify;
    port.random = w_random;
    port.activate = w_activate;
    port.infer = w_infer;
    port.unix_time = NULL;
    port.health = NULL;
    p->r->mp->port = port;
}

static bool
slot_file_matches(struct posix_rig *p, const struct tmla_model *m)
{
    static uint8_t buf[MP_SLOT_SIZE];
    uint8_t h[32];

    if (tmla_posix_flash_read(&p->px, m->slot, 0, buf, m->size) != 0)
        return false;
    sha256_of(buf, m->size, h);
    return memcmp(h, m->sha256, 32) == 0;
}

static void
cleanup(struct posix_rig *p)
{
    char path[128];

    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/slot%d.bin", p->dir, i);
        unlink(path);
        snprintf(path, sizeof path, "%s/state%d.bin", p->dir, i);
        unlink(path);
    }
    rmdir(p->dir);
}

static void
test_posix_install_and_power_cuts(void **state)
{
    struct posix_rig p;
    const struct tmla_model *m;
    uint32_t budgets[] = {100, 5000, 20000, 40000, 45000, 80000};
    unsigned resumed = 0;

    (void)state;
    memset(&p, 0, sizeof p);
    p.r = rig_new();
    snprintf(p.dir, sizeof p.dir, "/tmp/tmla-posix-XXXXXX");
    assert_non_null(mkdtemp(p.dir));
    use_posix(&p);
    rig_boot(p.r);
    rig_install(p.r, 1, &p.r->k1);
    m = tmla_active_model(&p.r->a);
    assert_true(slot_file_matches(&p, m));

    for (size_t i = 0; i < sizeof budgets / sizeof budgets[0]; i++) {
        uint8_t st;
        uint32_t v = 2 + (uint32_t)i;

        rig_model(p.r, v, 40000, 3, &p.r->k1);
        p.px.write_budget = budgets[i];
        (void)rig_offer_and_serve(p.r, NULL);
        assert_true(p.px.dead);
        /* Reboot: a new port on the same files, power back. */
        use_posix(&p);
        rig_boot(p.r);
        m = tmla_active_model(&p.r->a);
        assert_non_null(m);
        assert_true(slot_file_matches(&p, m));
        assert_true(m->version == v - 1 || m->version == v);
        tmla_ota_status(&p.r->a, &st, NULL, NULL);
        if (st == TML_OTA_DOWNLOADING) {
            resumed++;
            p.r->mp->seen = 0;
            tml_heap_armed = 1;
            (void)gw_serve(p.r->mp, &p.r->a, p.r->offer_id, p.r->image,
                           p.r->len, 1024, NULL, &p.r->now, 10, 400);
            tml_heap_armed = 0;
            rig_run(p.r, 3, 10);
        } else if (m->version != v && !tmla_in_trial(&p.r->a)) {
            (void)rig_offer_and_serve(p.r, NULL);
        }
        if (tmla_in_trial(&p.r->a))
            assert_int_equal(tmla_confirm_model(&p.r->a), TML_OK);
        m = tmla_active_model(&p.r->a);
        assert_int_equal(m->version, v);
        assert_true(slot_file_matches(&p, m));
        assert_int_equal(p.px.n_violations, 0);
    }
    print_message("posix: %u of 6 power cuts resumed a download\n", resumed);
    assert_true(resumed > 0);
    cleanup(&p);
    rig_free(p.r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_posix_install_and_power_cuts),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
