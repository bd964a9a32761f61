/*
 * support.c: the in-memory port, mbedTLS signing and the gateway helpers of
 * the agent tests (see support.h).
 */
#include "support.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>
#include <mbedtls/sha256.h>

#include <tml/agent_port_mbedtls.h>

int tml_heap_armed;
uint8_t mp_spool[4096];

#define PORT_ENTER                                                             \
    int saved_heap_ = tml_heap_armed;                                          \
    tml_heap_armed = 0
#define PORT_LEAVE tml_heap_armed = saved_heap_

static uint32_t
xorshift(uint32_t *s)
{
    uint32_t x = *s;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *s = x;
    return x;
}

/* Counts one write-type operation; returns how it must behave:
 * 0 = do it, 1 = tear it (power goes now), 2 = fail (power is off). */
static int
op_begin(struct memport *mp)
{
    if (mp->dead)
        return 2;
    mp->ops++;
    if (mp->stop_after >= 0 && mp->ops >= mp->stop_after) {
        mp->dead = true;
        return 1;
    }
    return 0;
}

static int
mp_publish(void *user, const char *topic, const uint8_t *p, size_t len,
           uint8_t qos, bool retain)
{
    struct memport *mp = user;
    struct mp_msg *m;
    struct tml_topic t;
    int rc = TMLA_PORT_OK;
    PORT_ENTER;

    if (mp->offline || mp->dead) {
        rc = TMLA_PORT_AGAIN;
    } else {
        assert_true(len <= MP_MSG_MAX);
        assert_int_equal(tml_topic_parse(topic, strlen(topic), &t), TML_OK);
        assert_int_equal(t.dir, TML_DIR_UP);
        m = &mp->log[mp->n_log % MP_LOG];
        mp->n_log++;
        snprintf(m->topic, sizeof m->topic, "%s", topic);
        m->kind = t.kind;
        memcpy(m->payload, p, len);
        m->len = len;
        m->qos = qos;
        m->retain = retain;
    }
    PORT_LEAVE;
    return rc;
}

static int
mp_flash_read(void *user, uint8_t slot, uint32_t off, void *buf, size_t len)
{
    struct memport *mp = user;

    if (slot > 1 || off > MP_SLOT_SIZE || len > MP_SLOT_SIZE - off)
        return -1;
    memcpy(buf, &mp->flash[slot][off], len);
    return 0;
}

static int
mp_flash_write(void *user, uint8_t slot, uint32_t off, const void *buf,
               size_t len)
{
    struct memport *mp = user;
    int how;

    if (slot > 1 || off > MP_SLOT_SIZE || len > MP_SLOT_SIZE - off ||
        off % MP_ALIGN != 0 || len % MP_ALIGN != 0) {
        mp->violations++;
        return -1;
    }
    for (size_t i = 0; i < len; i++)
        if (mp->flash[slot][off + i] != 0xff) {
            mp->violations++;
            return -1;
        }
    how = op_begin(mp);
    if (how == 2)
        return -1;
    if (how == 1) {
        /* Torn: the first half of the aligned blocks made it. */
        memcpy(&mp->flash[slot][off], buf, (len / MP_ALIGN / 2) * MP_ALIGN);
        return -1;
    }
    memcpy(&mp->flash[slot][off], buf, len);
    return 0;
}

static int
mp_flash_erase(void *user, uint8_t slot, uint32_t off, size_t len)
{
    struct memport *mp = user;
    int how;

    if (slot > 1 || off > MP_SLOT_SIZE || len > MP_SLOT_SIZE - off ||
        off % MP_ERASE != 0 || len % MP_ERASE != 0) {
        mp->violations++;
        return -1;
    }
    how = op_begin(mp);
    if (how == 2)
        return -1;
    if (how == 1) {
        /* Torn erase: part erased, the rest garbage. */
        memset(&mp->flash[slot][off], 0xff, len / 2);
        for (size_t i = len / 2; i < len; i++)
            mp->flash[slot][off + i] = (uint8_t)xorshift(&mp->fault_rng);
        return -1;
    }
    memset(&mp->flash[slot][off], 0xff, len);
    return 0;
}

static int
mp_state_read(void *user, uint8_t copy, void *buf, size_t len)
{
    struct memport *mp = user;

    if (copy > 1 || len > sizeof mp->state[0])
        return -1;
    memcpy(buf, mp->state[copy], len);
    return 0;
}

static int
mp_state_write(void *user, uint8_t copy, const void *buf, size_t len)
{
    struct memport *mp = user;
    int how;

    if (copy > 1 || len > sizeof mp->state[0])
        return -1;
    how = op_begin(mp);
    if (how == 2)
        return -1;
    mp->n_state_writes++;
    if (how == 1) {
        memcpy(mp->state[copy], buf, len / 2);
        memset(mp->state[copy] + len / 2, 0xa5, len - len / 2);
        return -1;
    }
    memcpy(mp->state[copy], buf, len);
    if (mp->state_fail_pct > 0 &&
        xorshift(&mp->fault_rng) % 100 < mp->state_fail_pct) {
        /* S15: the write "succeeded" but a byte did not stick. */
        mp->state[copy][xorshift(&mp->fault_rng) % len] ^= 0x10;
    }
    return 0;
}

static int
mp_sha_init(void *user, void *ctx)
{
    int rc;
    PORT_ENTER;
    rc = tmla_mbedtls_sha256_init(user, ctx);
    PORT_LEAVE;
    return rc;
}

static int
mp_sha_update(void *user, void *ctx, const void *p, size_t len)
{
    int rc;
    PORT_ENTER;
    rc = tmla_mbedtls_sha256_update(user, ctx, p, len);
    PORT_LEAVE;
    return rc;
}

static int
mp_sha_final(void *user, void *ctx, uint8_t *out)
{
    int rc;
    PORT_ENTER;
    rc = tmla_mbedtls_sha256_final(user, ctx, out);
    PORT_LEAVE;
    return rc;
}

static int
mp_verify(void *user, const uint8_t *pub, const uint8_t *hash,
          const uint8_t *sig)
{
    int rc;
    PORT_ENTER;
    rc = tmla_mbedtls_es256_verify(user, pub, hash, sig);
    PORT_LEAVE;
    return rc;
}

static uint32_t
mp_unix(void *user)
{
    return ((struct memport *)user)->unix_now;
}

static uint32_t
mp_random(void *user)
{
    return xorshift(&((struct memport *)user)->rng);
}

static bool
mp_health(void *user, struct tml_health *h)
{
    (void)user;
    h->free_ram = 1234;
    h->supply_mv = 3300;
    h->temp_dc = 215;
    h->uptime_s = 42;
    return true;
}

static int
mp_activate(void *user, const struct tmla_model *m)
{
    struct memport *mp = user;

    mp->n_activate++;
    if (mp->activate_rc == TMLA_PORT_OK) {
        mp->loaded = *m;
        mp->has_loaded = true;
    }
    return mp->activate_rc;
}

/* The fake model: class = in[0] % 4, score = 5000 + 10 * in[1]. */
static void
fake_model(const uint8_t *in, uint32_t *cls, uint32_t *score)
{
    *cls = in[0] % 4u;
    *score = 5000u + 10u * in[1];
}

static int
mp_infer(void *user, const struct tmla_model *m, uint32_t off, uint32_t len,
         uint32_t *cls, uint32_t *score)
{
    struct memport *mp = user;
    uint8_t in[2];

    mp->n_infer++;
    if (len < 2 || mp_flash_read(mp, m->slot, off, in, 2) != 0)
        return -1;
    fake_model(in, cls, score);
    if (mp->model_broken)
        *cls = (*cls + 1) % 4u;
    return 0;
}

struct memport *
mp_new(void)
{
    struct memport *mp = calloc(1, sizeof *mp);

    assert_non_null(mp);
    memset(mp->flash, 0xff, sizeof mp->flash);
    memset(mp->state, 0, sizeof mp->state);
    mp->stop_after = -1;
    mp->rng = 0x12345678u;
    mp->fault_rng = 0x9e3779b9u;
    mp->activate_rc = TMLA_PORT_OK;
    mp->port = (struct tmla_port){
        .user = mp,
        .publish = mp_publish,
        .slot_size = MP_SLOT_SIZE,
        .erase_size = MP_ERASE,
        .write_align = MP_ALIGN,
        .flash_read = mp_flash_read,
        .flash_write = mp_flash_write,
        .flash_erase = mp_flash_erase,
        .state_read = mp_state_read,
        .state_write = mp_state_write,
        .sha256_init = mp_sha_init,
        .sha256_update = mp_sha_update,
        .sha256_final = mp_sha_final,
        .es256_verify = mp_verify,
        .unix_time = mp_unix,
        .random = mp_random,
        .health = mp_health,
        .activate = mp_activate,
        .infer = mp_infer,
    };
    return mp;
}

void
mp_free(struct memport *mp)
{
    free(mp);
}

void
mp_config(struct tmla_config *cfg, const struct tmla_trusted_key *keys,
          size_t n_keys)
{
    tmla_config_defaults(cfg);
    cfg->device_id = MP_DEV;
    cfg->hw = MP_HW;
    cfg->keys = keys;
    cfg->n_keys = n_keys;
    cfg->arena_size = 32768;
    cfg->n_classes = 4;
    cfg->sample_buf = mp_spool;
    cfg->sample_buf_len = sizeof mp_spool;
}

/* ---- keys ---------------------------------------------------------------- */

static int
det_rng(void *p, unsigned char *out, size_t len)
{
    uint32_t *s = p;

    for (size_t i = 0; i < len; i++)
        out[i] = (uint8_t)xorshift(s);
    return 0;
}

void
tkey_make(struct tkey *k, unsigned n)
{
    mbedtls_ecdsa_context ec;
    uint32_t seed = 0x1000u + n * 7919u;
    size_t olen;

    mbedtls_ecdsa_init(&ec);
    assert_int_equal(
        mbedtls_ecdsa_genkey(&ec, MBEDTLS_ECP_DP_SECP256R1, det_rng, &seed), 0);
    assert_int_equal(mbedtls_ecp_point_write_binary(
                         &ec.grp, &ec.Q, MBEDTLS_ECP_PF_UNCOMPRESSED, &olen,
                         k->pub, sizeof k->pub),
                     0);
    assert_int_equal(olen, 65);
    assert_int_equal(mbedtls_mpi_write_binary(&ec.d, k->d, 32), 0);
    snprintf((char *)k->kid, sizeof k->kid, "key-%u", n);
    k->kid_len = (uint8_t)strlen((char *)k->kid);
    mbedtls_ecdsa_free(&ec);
}

void
tkey_trusted(const struct tkey *k, struct tmla_trusted_key *out)
{
    memset(out, 0, sizeof *out);
    memcpy(out->kid, k->kid, k->kid_len);
    out->kid_len = k->kid_len;
    memcpy(out->pub, k->pub, 65);
}

void
sha256_of(const void *buf, size_t len, uint8_t out[32])
{
    assert_int_equal(mbedtls_sha256_ret(buf, len, out, 0), 0);
}

size_t
image_make(uint8_t *buf, size_t cap, uint32_t version, uint32_t model_size,
           uint32_t n_vectors, uint32_t vector_len)
{
    size_t len = model_size + (size_t)n_vectors * (vector_len + 4u);

    assert_true(len <= cap);
    for (uint32_t i = 0; i < model_size; i++)
        buf[i] = (uint8_t)(i * 31u + version * 7u + (i >> 8));
    for (uint32_t v = 0; v < n_vectors; v++) {
        uint8_t *in = buf + model_size + (size_t)v * (vector_len + 4u);
        uint32_t cls, score;

        for (uint32_t j = 0; j < vector_len; j++)
            in[j] = (uint8_t)(v * 13u + j * 3u + version);
        fake_model(in, &cls, &score);
        in[vector_len] = (uint8_t)cls;
        in[vector_len + 1] = (uint8_t)(cls >> 8);
        in[vector_len + 2] = (uint8_t)score;
        in[vector_len + 3] = (uint8_t)(score >> 8);
    }
    return len;
}

void
manifest_for(struct tml_manifest *m, uint32_t version, const uint8_t *image,
             size_t len, uint32_t n_vectors, uint32_t vector_len)
{
    memset(m, 0, sizeof *m);
    m->name.p = "kws";
    m->name.len = 3;
    m->version = version;
    m->hw.p = MP_HW;
    m->hw.len = strlen(MP_HW);
    m->size = (uint32_t)len;
    sha256_of(image, len, m->sha256);
    m->created = 1700000000u;
    m->expires = 0;
    m->model_size = (uint32_t)(len - (size_t)n_vectors * (vector_len + 4u));
    m->arena_size = 16384;
    m->min_agent_version = 0;
    m->dtype = TML_DTYPE_I8;
    m->n_shape = 2;
    m->input_shape[0] = 49;
    m->input_shape[1] = 10;
    m->n_labels = 4;
    m->n_vectors = n_vectors;
    m->vector_input_len = vector_len;
    m->score_tol_bp = 50;
}

size_t
manifest_sign(const struct tkey *k, const struct tml_manifest *m, uint8_t *out,
              size_t cap)
{
    uint8_t payload[TML_MAX_MANIFEST], prot[64], sigs[TML_MAX_MANIFEST + 64];
    uint8_t hash[32], sig[64];
    size_t plen, prlen, slen, olen;
    struct tml_bin pb, prb;
    mbedtls_ecp_group grp;
    mbedtls_mpi d, r, s;
    uint32_t seed = 0x5eedu + m->version;

    assert_int_equal(tml_manifest_encode(m, payload, sizeof payload, &plen),
                     TML_OK);
    assert_int_equal(tml_cose_protected_encode(k->kid, k->kid_len, prot,
                                               sizeof prot, &prlen),
                     TML_OK);
    pb.p = payload;
    pb.len = plen;
    prb.p = prot;
    prb.len = prlen;
    assert_int_equal(
        tml_cose_sig_structure(&prb, &pb, sigs, sizeof sigs, &slen), TML_OK);
    sha256_of(sigs, slen, hash);
    mbedtls_ecp_group_init(&grp);
    mbedtls_mpi_init(&d);
    mbedtls_mpi_init(&r);
    mbedtls_mpi_init(&s);
    assert_int_equal(mbedtls_ecp_group_load(&grp, MBEDTLS_ECP_DP_SECP256R1), 0);
    assert_int_equal(mbedtls_mpi_read_binary(&d, k->d, 32), 0);
    assert_int_equal(
        mbedtls_ecdsa_sign(&grp, &r, &s, &d, hash, 32, det_rng, &seed), 0);
    assert_int_equal(mbedtls_mpi_write_binary(&r, sig, 32), 0);
    assert_int_equal(mbedtls_mpi_write_binary(&s, sig + 32, 32), 0);
    mbedtls_mpi_free(&s);
    mbedtls_mpi_free(&r);
    mbedtls_mpi_free(&d);
    mbedtls_ecp_group_free(&grp);
    assert_int_equal(tml_cose_sign1_encode(k->kid, k->kid_len, payload, plen,
                                           sig, out, cap, &olen),
                     TML_OK);
    return olen;
}

/* ---- gateway ------------------------------------------------------------- */

enum tml_err
gw_send(struct tmla_agent *a, enum tml_kind kind, const uint8_t *p, size_t len,
        uint32_t now_ms)
{
    char topic[TML_MAX_TOPIC + 1];
    size_t n;

    assert_int_equal(tml_topic_build(topic, sizeof topic, MP_DEV,
                                     strlen(MP_DEV), TML_DIR_DOWN, kind, &n),
                     TML_OK);
    return tmla_on_message(a, topic, n, p, len, now_ms);
}

enum tml_err
gw_offer(struct tmla_agent *a, uint32_t offer_id, const uint8_t *cose,
         size_t len, uint32_t now_ms)
{
    struct tml_ota_down d;
    uint8_t buf[TML_MAX_MESSAGE];
    size_t n;

    memset(&d, 0, sizeof d);
    d.kind = TML_OTA_DOWN_OFFER;
    d.offer_id = offer_id;
    d.manifest.p = cose;
    d.manifest.len = len;
    assert_int_equal(tml_ota_down_encode(&d, buf, sizeof buf, &n), TML_OK);
    return gw_send(a, TML_KIND_OTA, buf, n, now_ms);
}

enum tml_err
gw_chunk(struct tmla_agent *a, uint32_t offer_id, uint32_t offset,
         const uint8_t *p, size_t len, uint32_t now_ms)
{
    struct tml_ota_down d;
    uint8_t buf[TML_MAX_MESSAGE];
    size_t n;

    memset(&d, 0, sizeof d);
    d.kind = TML_OTA_DOWN_CHUNK;
    d.offer_id = offer_id;
    d.offset = offset;
    d.data.p = p;
    d.data.len = len;
    assert_int_equal(tml_ota_down_encode(&d, buf, sizeof buf, &n), TML_OK);
    return gw_send(a, TML_KIND_OTA, buf, n, now_ms);
}

enum tml_err
gw_ack(struct tmla_agent *a, bool has_tele, uint32_t tele, bool has_sample,
       uint32_t sample, uint32_t now_ms)
{
    struct tml_ack k = {has_tele, tele, has_sample, sample, 0};
    uint8_t buf[64];
    size_t n;

    assert_int_equal(tml_ack_encode(&k, buf, sizeof buf, &n), TML_OK);
    return gw_send(a, TML_KIND_ACK, buf, n, now_ms);
}

unsigned
gw_serve(struct memport *mp, struct tmla_agent *a, uint32_t offer_id,
         const uint8_t *image, size_t len, uint32_t chunk, gw_tamper_fn tamper,
         uint32_t *now_ms, uint32_t step_ms, unsigned max_rounds)
{
    unsigned sent = 0;
    uint8_t data[TML_CHUNK_MAX + 8];

    for (unsigned round = 0; round < max_rounds; round++) {
        bool any = false;

        while (mp->seen < mp->n_log) {
            const struct mp_msg *m = &mp->log[mp->seen % MP_LOG];
            struct tml_ota_up u;

            mp->seen++;
            if (m->kind != TML_KIND_OTA ||
                tml_ota_up_decode(m->payload, m->len, &u) != TML_OK ||
                u.kind != TML_OTA_UP_REQUEST || u.offer_id != offer_id)
                continue;
            any = true;
            for (uint32_t off = u.offset;
                 off < u.offset + u.len && off < len && !mp->dead;
                 off += chunk) {
                size_t n = len - off < chunk ? len - off : chunk;

                if (off + n > u.offset + u.len)
                    n = u.offset + u.len - off;
                memcpy(data, image + off, n);
                if (tamper != NULL)
                    tamper(off, data, &n);
                (void)gw_chunk(a, offer_id, off, data, n, *now_ms);
                sent++;
            }
        }
        *now_ms += step_ms;
        tmla_poll(a, *now_ms);
        if (!any && mp->seen == mp->n_log && round > 2)
            break;
    }
    return sent;
}

bool
mp_last_status(const struct memport *mp, struct tml_ota_up *out)
{
    for (size_t i = mp->n_log; i-- > 0 && i + MP_LOG >= mp->n_log;) {
        const struct mp_msg *m = &mp->log[i % MP_LOG];

        if (m->kind == TML_KIND_OTA &&
            tml_ota_up_decode(m->payload, m->len, out) == TML_OK &&
            out->kind == TML_OTA_UP_STATUS)
            return true;
    }
    return false;
}

const struct mp_msg *
mp_next_hello(const struct memport *mp, size_t *from, struct tml_hello *h)
{
    if (*from + MP_LOG < mp->n_log)
        *from = mp->n_log - MP_LOG; /* older entries were overwritten */
    for (; *from < mp->n_log; ++*from) {
        const struct mp_msg *m = &mp->log[*from % MP_LOG];

        if (m->kind == TML_KIND_HELLO) {
            assert_int_equal(tml_hello_decode(m->payload, m->len, h), TML_OK);
            ++*from;
            return m;
        }
    }
    return NULL;
}

size_t
mp_count(const struct memport *mp, enum tml_kind kind)
{
    size_t n = 0;

    for (size_t i = 0; i < mp->n_log && i < MP_LOG; i++)
        n += mp->log[i].kind == kind;
    return n;
}

bool
mp_slot_matches(const struct memport *mp, uint8_t slot, uint32_t len,
                const uint8_t sha[32])
{
    uint8_t h[32];

    if (len > MP_SLOT_SIZE)
        return false;
    sha256_of(mp->flash[slot], len, h);
    return memcmp(h, sha, 32) == 0;
}
