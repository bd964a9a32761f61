/*
 * rig.h: one simulated device for the agent tests: a memport, an agent,
 * two trusted operator keys and helpers to boot it and install models.
 */
#ifndef TEST_AGENT_RIG_H
#define TEST_AGENT_RIG_H

#include "support.h"

#define RIG_IMAGE_MAX 60000u

struct rig {
    struct memport *mp;
    struct tmla_agent a;
    struct tkey k1, k2, k3; /* k1, k2 trusted; k3 not */
    struct tmla_trusted_key keys[2];
    struct tmla_config cfg;
    uint32_t now;
    uint8_t image[RIG_IMAGE_MAX];
    size_t len;
    struct tml_manifest man;
    uint8_t cose[TML_MAX_MANIFEST];
    size_t cose_len;
    uint32_t offer_id;
};

struct rig *rig_new(void);
void rig_free(struct rig *r);
/* cmocka fixtures: a new rig, booted, in *state; and its release. */
int rig_setup_booted(void **state);
int rig_teardown(void **state);
/* tmla_init on the rig's memport (a reboot when called again), then
 * on_connect and one poll. */
void rig_boot(struct rig *r);
/* Builds image + manifest for version (model_size bytes, n_vectors of 16
 * bytes) signed by k. */
void rig_model(struct rig *r, uint32_t version, uint32_t model_size,
               uint32_t n_vectors, const struct tkey *k);
/* Re-signs r->man with k. */
void rig_sign(struct rig *r, const struct tkey *k);
/* Offers the current manifest under a new offer id and serves chunks until
 * the download settles; polls a few more times. Returns the OTA state. */
uint8_t rig_offer_and_serve(struct rig *r, gw_tamper_fn tamper);
/* Full install of version: offer, serve, activate, confirm. Asserts
 * CONFIRMED. */
void rig_install(struct rig *r, uint32_t version, const struct tkey *k);
/* Last status reason on up/ota. */
uint8_t rig_last_reason(struct rig *r);
/* Polls n times, advancing time by step_ms. */
void rig_run(struct rig *r, unsigned n, uint32_t step_ms);

#endif
