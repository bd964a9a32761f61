/* rig.c: see rig.h. */
#include "rig.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

struct rig *
rig_new(void)
{
    struct rig *r = calloc(1, sizeof *r);

    assert_non_null(r);
    r->mp = mp_new();
    tkey_make(&r->k1, 1);
    tkey_make(&r->k2, 2);
    tkey_make(&r->k3, 3);
    tkey_trusted(&r->k1, &r->keys[0]);
    tkey_trusted(&r->k2, &r->keys[1]);
    mp_config(&r->cfg, r->keys, 2);
    r->cfg.ota_chunk = 1024;
    r->now = 1000;
    r->offer_id = 100;
    return r;
}

void
rig_free(struct rig *r)
{
    mp_free(r->mp);
    free(r);
}

void
rig_boot(struct rig *r)
{
    enum tml_err err;

    tml_heap_armed = 1;
    err = tmla_init(&r->a, &r->cfg, &r->mp->port, r->now);
    tml_heap_armed = 0;
    assert_true(err == TML_OK || r->mp->dead || r->mp->state_fail_pct > 0);
    tml_heap_armed = 1;
    tmla_on_connect(&r->a, r->now);
    tmla_poll(&r->a, r->now);
    tml_heap_armed = 0;
}

void
rig_sign(struct rig *r, const struct tkey *k)
{
    r->cose_len = manifest_sign(k, &r->man, r->cose, sizeof r->cose);
}

void
rig_model(struct rig *r, uint32_t version, uint32_t model_size,
          uint32_t n_vectors, const struct tkey *k)
{
    r->len = image_make(r->image, sizeof r->image, version, model_size,
                        n_vectors, 16);
    manifest_for(&r->man, version, r->image, r->len, n_vectors, 16);
    rig_sign(r, k);
}

void
rig_run(struct rig *r, unsigned n, uint32_t step_ms)
{
    tml_heap_armed = 1;
    for (unsigned i = 0; i < n; i++) {
        r->now += step_ms;
        tmla_poll(&r->a, r->now);
    }
    tml_heap_armed = 0;
}

uint8_t
rig_offer_and_serve(struct rig *r, gw_tamper_fn tamper)
{
    uint8_t state;

    r->offer_id++;
    r->mp->seen = r->mp->n_log;
    tml_heap_armed = 1;
    (void)gw_offer(&r->a, r->offer_id, r->cose, r->cose_len, r->now);
    (void)gw_serve(r->mp, &r->a, r->offer_id, r->image, r->len, 1024, tamper,
                   &r->now, 10, 400);
    tml_heap_armed = 0;
    rig_run(r, 3, 10);
    tmla_ota_status(&r->a, &state, NULL, NULL);
    return state;
}

void
rig_install(struct rig *r, uint32_t version, const struct tkey *k)
{
    rig_model(r, version, 20000, 3, k);
    assert_int_equal(rig_offer_and_serve(r, NULL), TML_OTA_TRIAL);
    assert_int_equal(tmla_confirm_model(&r->a), TML_OK);
    assert_non_null(tmla_active_model(&r->a));
    assert_int_equal(tmla_active_model(&r->a)->version, version);
}

uint8_t
rig_last_reason(struct rig *r)
{
    struct tml_ota_up u;

    assert_true(mp_last_status(r->mp, &u));
    return u.reason;
}

int
rig_setup_booted(void **state)
{
    struct rig *r = rig_new();

    rig_boot(r);
    *state = r;
    return 0;
}

int
rig_teardown(void **state)
{
    rig_free(*state);
    return 0;
}
