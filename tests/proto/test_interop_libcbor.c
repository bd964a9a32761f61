/*
 * test_interop_libcbor.c: interop with an independent C implementation,
 * Debian's libcbor. For every message sample:
 *  - libcbor parses the bytes proto/ wrote (whole input, no error) and
 *    re-serializes them identically; spot values read through libcbor match;
 *  - libcbor builds the same message from the struct values: with keys in
 *    ascending order its bytes equal ours; with keys in descending order
 *    proto/ decodes them to the same values.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>
#include <cmocka.h>

#include "samples.h"

static struct samples_store store;

static int
setup(void **state)
{
    (void)state;
    samples_init(&store);
    return store.manifest_len > 0 ? 0 : -1;
}

static cbor_item_t *
uint_item(uint64_t v)
{
    if (v <= 0xff) {
        return cbor_build_uint8((uint8_t)v);
    }
    if (v <= 0xffff) {
        return cbor_build_uint16((uint16_t)v);
    }
    if (v <= 0xffffffffu) {
        return cbor_build_uint32((uint32_t)v);
    }
    return cbor_build_uint64(v);
}

/* Key/value pairs collected in ascending key order. */
struct kvs {
    uint64_t k[32];
    cbor_item_t *v[32];
    size_t n;
};

static void
kv(struct kvs *s, uint64_t k, cbor_item_t *v)
{
    assert_true(s->n < 32);
    assert_non_null(v);
    s->k[s->n] = k;
    s->v[s->n] = v;
    s->n++;
}

static void
kv_u(struct kvs *s, uint64_t k, uint64_t v)
{
    kv(s, k, uint_item(v));
}

static cbor_item_t *
text(struct tml_str t)
{
    return cbor_build_stringn(t.p, t.len);
}

static cbor_item_t *
bytes(struct tml_bin b)
{
    return cbor_build_bytestring(b.p, b.len);
}

static cbor_item_t *
u32_array(const uint32_t *v, size_t n)
{
    cbor_item_t *a = cbor_new_definite_array(n);
    size_t i;

    for (i = 0; i < n; i++) {
        assert_true(cbor_array_push(a, cbor_move(uint_item(v[i]))));
    }
    return a;
}

static cbor_item_t *
to_map(struct kvs *s, bool descending)
{
    cbor_item_t *m = cbor_new_definite_map(s->n);
    size_t i;

    for (i = 0; i < s->n; i++) {
        size_t j = descending ? s->n - 1 - i : i;
        struct cbor_pair p = {cbor_move(uint_item(s->k[j])),
                              cbor_move(s->v[j])};

        assert_true(cbor_map_add(m, p));
    }
    s->n = 0;
    return m;
}

static cbor_item_t *
build_hello(const struct tml_hello *m, bool desc)
{
    struct kvs s = {.n = 0};
    cbor_item_t *g;
    size_t i;

    kv_u(&s, 0, 1);
    kv_u(&s, 1, m->agent_version);
    kv(&s, 2, text(m->hw));
    kv(&s, 3, text(m->model));
    kv_u(&s, 4, m->model_version);
    kv_u(&s, 5, m->model_slot);
    kv_u(&s, 6, m->slot_size);
    kv_u(&s, 7, m->arena_size);
    kv_u(&s, 8, m->chunk_max);
    kv_u(&s, 9, m->boot_count);
    kv_u(&s, 10, m->last_ota_state);
    kv_u(&s, 11, m->last_ota_reason);
    kv_u(&s, 12, m->last_ota_version);
    kv_u(&s, 13, m->version_floor);
    if (m->n_groups > 0) {
        g = cbor_new_definite_array(m->n_groups);
        for (i = 0; i < m->n_groups; i++) {
            assert_true(cbor_array_push(g, cbor_move(text(m->groups[i]))));
        }
        kv(&s, 14, g);
    }
    if (m->has_nonce) {
        kv_u(&s, 15, m->nonce);
    }
    if (m->tele_next != 0) {
        kv_u(&s, 16, m->tele_next);
    }
    if (m->sample_next != 0) {
        kv_u(&s, 17, m->sample_next);
    }
    if (m->boot_id != 0) {
        kv_u(&s, 18, m->boot_id);
    }
    if (m->epoch != 0) {
        kv_u(&s, 19, m->epoch);
    }
    return to_map(&s, desc);
}

static cbor_item_t *
build_state(const struct tml_state *m, bool desc)
{
    struct kvs s = {.n = 0};

    kv_u(&s, 0, 1);
    kv(&s, 1, cbor_build_bool(m->online));
    return to_map(&s, desc);
}

/* up/tele's summary packed by this test's own writer, from PROTOCOL.md
 * "up/tele" (not from proto/src/tele.c): unsigned LEB128 varints. */
static size_t
leb(uint8_t *p, size_t n, uint32_t v)
{
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static size_t
leb_hist(uint8_t *p, size_t n, const uint32_t *h, size_t nb)
{
    size_t lo = 0, hi = nb, i;

    while (hi > 0 && h[hi - 1] == 0) {
        hi--;
    }
    while (lo < hi && h[lo] == 0) {
        lo++;
    }
    n = leb(p, n, (uint32_t)(nb + 32 * lo + 1024 * (hi - lo)));
    for (i = lo; i < hi; i++) {
        n = leb(p, n, h[i]);
    }
    return n;
}

static cbor_item_t *
build_tele(const struct tml_tele *m, bool desc)
{
    struct kvs s = {.n = 0};
    uint8_t p[512];
    size_t n = 0, i;
    uint32_t flags = 0;
    cbor_item_t *b;

    flags |= m->has_health ? 1u : 0;
    flags |= m->lw != 0 ? 2u : 0;
    flags |= m->age_s != 0 ? 4u : 0;
    flags |= m->n_flagged != 0 ? 8u : 0;
    flags |= m->n_errors != 0 ? 16u : 0;
    flags |= m->n_folded != 0 ? 32u : 0;
    flags |= m->n_samples_dropped != 0 ? 64u : 0;
    n = leb(p, n, flags);
    n = leb(p, n, m->seq);
    n = leb(p, n, m->model_version);
    n = leb(p, n, m->period_s);
    if (flags & 4u) {
        n = leb(p, n, m->age_s);
    }
    n = leb(p, n, m->n_inferences);
    n = leb(p, n, m->n_low_conf);
    if (flags & 8u) {
        n = leb(p, n, m->n_flagged);
    }
    if (flags & 16u) {
        n = leb(p, n, m->n_errors);
    }
    if (flags & 32u) {
        n = leb(p, n, m->n_folded);
    }
    if (flags & 64u) {
        n = leb(p, n, m->n_samples_dropped);
    }
    n = leb(p, n, m->lat_min_us);
    n = leb(p, n, m->lat_mean_us);
    n = leb(p, n, m->lat_max_us);
    if (flags & 2u) {
        n = leb(p, n, m->seq - m->lw);
    }
    n = leb(p, n, (uint32_t)m->n_classes);
    for (i = 0; i < m->n_classes; i++) {
        n = leb(p, n, m->class_counts[i]);
    }
    n = leb_hist(p, n, m->conf_hist, m->n_conf_bins);
    n = leb_hist(p, n, m->lat_hist, m->n_lat_bins);
    if (m->has_health) {
        int64_t t = m->health.temp_dc;

        n = leb(p, n, m->health.free_ram);
        n = leb(p, n, m->health.supply_mv);
        n = leb(p, n, (uint32_t)(t < 0 ? -2 * t - 1 : 2 * t));
        n = leb(p, n, m->health.uptime_s);
    }
    b = cbor_build_bytestring(p, n);
    assert_non_null(b);
    kv_u(&s, 0, TML_TELE_VERSION);
    kv(&s, 1, b);
    if (m->epoch != 0) {
        kv_u(&s, 2, m->epoch);
    }
    return to_map(&s, desc);
}

static cbor_item_t *
build_sample(const struct tml_sample *m, bool desc)
{
    struct kvs s = {.n = 0};

    kv_u(&s, 0, 1);
    kv_u(&s, 1, m->seq);
    kv_u(&s, 2, m->sample_id);
    kv_u(&s, 3, m->model_version);
    kv_u(&s, 4, m->reason);
    kv_u(&s, 5, m->predicted);
    kv_u(&s, 6, m->confidence_bp);
    if (m->has_expected) {
        kv_u(&s, 7, m->expected);
    }
    kv_u(&s, 8, m->dtype);
    kv(&s, 9, u32_array(m->shape, m->n_shape));
    kv_u(&s, 10, m->rate_hz);
    kv_u(&s, 11, m->age_s);
    kv_u(&s, 12, m->total_len);
    kv_u(&s, 13, m->offset);
    kv(&s, 14, bytes(m->data));
    if (m->lw != 0) {
        kv_u(&s, 15, m->lw);
    }
    if (m->epoch != 0) {
        kv_u(&s, 16, m->epoch);
    }
    return to_map(&s, desc);
}

static cbor_item_t *
build_ota_up(const struct tml_ota_up *m, bool desc)
{
    struct kvs s = {.n = 0};

    kv_u(&s, 0, 1);
    kv_u(&s, 1, m->kind);
    kv_u(&s, 2, m->offer_id);
    kv_u(&s, 3, m->version);
    kv_u(&s, 4, m->offset);
    if (m->kind == TML_OTA_UP_REQUEST) {
        kv_u(&s, 5, m->len);
    } else {
        kv_u(&s, 6, m->state);
        kv_u(&s, 7, m->reason);
        if (m->passed != 0)
            kv_u(&s, 8, m->passed);
    }
    return to_map(&s, desc);
}

static cbor_item_t *
build_ack(const struct tml_ack *m, bool desc)
{
    struct kvs s = {.n = 0};

    kv_u(&s, 0, 1);
    if (m->has_tele) {
        kv_u(&s, 1, m->tele_seq);
    }
    if (m->has_sample) {
        kv_u(&s, 2, m->sample_seq);
    }
    if (m->epoch != 0) {
        kv_u(&s, 3, m->epoch);
    }
    return to_map(&s, desc);
}

static cbor_item_t *
build_ota_down(const struct tml_ota_down *m, bool desc)
{
    struct kvs s = {.n = 0};

    kv_u(&s, 0, 1);
    kv_u(&s, 1, m->kind);
    kv_u(&s, 2, m->offer_id);
    if (m->kind == TML_OTA_DOWN_OFFER) {
        kv(&s, 3, bytes(m->manifest));
    } else if (m->kind == TML_OTA_DOWN_CHUNK) {
        kv_u(&s, 4, m->offset);
        kv(&s, 5, bytes(m->data));
    }
    return to_map(&s, desc);
}

static cbor_item_t *
build_cmd(const struct tml_cmd *m, bool desc)
{
    struct kvs s = {.n = 0};

    kv_u(&s, 0, 1);
    kv_u(&s, 1, m->kind);
    kv_u(&s, 2, m->nonce);
    if (m->has_summary_period) {
        kv_u(&s, 3, m->summary_period_s);
    }
    if (m->has_sample_budget) {
        kv_u(&s, 4, m->sample_budget);
    }
    if (m->has_budget_period) {
        kv_u(&s, 5, m->budget_period_s);
    }
    if (m->has_conf_threshold) {
        kv_u(&s, 6, m->conf_threshold_bp);
    }
    if (m->has_audit_rate) {
        kv_u(&s, 7, m->audit_ppm);
    }
    return to_map(&s, desc);
}

static cbor_item_t *
build_manifest(const struct tml_manifest *m, bool desc)
{
    struct kvs s = {.n = 0};
    struct tml_bin sha = {m->sha256, TML_SHA256_LEN};
    cbor_item_t *r;
    size_t i;

    kv_u(&s, 0, 1);
    kv(&s, 1, text(m->name));
    kv_u(&s, 2, m->version);
    kv(&s, 3, text(m->hw));
    kv_u(&s, 4, m->size);
    kv(&s, 5, bytes(sha));
    kv_u(&s, 6, m->created);
    kv_u(&s, 7, m->expires);
    kv_u(&s, 8, m->model_size);
    kv_u(&s, 9, m->arena_size);
    kv_u(&s, 10, m->min_agent_version);
    kv_u(&s, 11, m->dtype);
    kv(&s, 12, u32_array(m->input_shape, m->n_shape));
    kv_u(&s, 13, m->n_labels);
    kv_u(&s, 14, m->n_vectors);
    kv_u(&s, 15, m->vector_input_len);
    kv_u(&s, 16, m->score_tol_bp);
    if (m->resets_floor) {
        kv(&s, 17, cbor_build_bool(true));
    }
    if (m->n_revoke > 0) {
        r = cbor_new_definite_array(m->n_revoke);
        for (i = 0; i < m->n_revoke; i++) {
            assert_true(cbor_array_push(r, cbor_move(bytes(m->revoke_kids[i]))));
        }
        kv(&s, 18, r);
    }
    return to_map(&s, desc);
}

/* Serializes with libcbor; returns a malloc'd buffer. */
static unsigned char *
ser(cbor_item_t *item, size_t *len)
{
    unsigned char *buf = NULL;
    size_t cap = 0;

    *len = cbor_serialize_alloc(item, &buf, &cap);
    assert_true(*len > 0);
    return buf;
}

/* The core check for one message: libcbor-built bytes (ascending) equal
 * ours; libcbor-built bytes (descending) decode to the same message. */
#define CHECK_MSG(name, mp)                                                    \
    do {                                                                       \
        static uint8_t ours_[TML_MAX_MESSAGE], re_[TML_MAX_MESSAGE];           \
        struct tml_##name back_;                                               \
        size_t olen_ = 0, llen_ = 0, rlen_ = 0;                                \
        cbor_item_t *it_;                                                      \
        unsigned char *lb_;                                                    \
        int d_;                                                                \
        assert_int_equal(tml_##name##_encode(mp, ours_, sizeof ours_, &olen_), \
                         TML_OK);                                              \
        for (d_ = 0; d_ <= 1; d_++) {                                          \
            it_ = build_##name(mp, d_);                                        \
            lb_ = ser(it_, &llen_);                                            \
            if (!d_) {                                                         \
                assert_int_equal(llen_, olen_);                                \
                assert_memory_equal(lb_, ours_, olen_);                        \
            }                                                                  \
            assert_int_equal(tml_##name##_decode(lb_, llen_, &back_), TML_OK); \
            assert_int_equal(                                                  \
                tml_##name##_encode(&back_, re_, sizeof re_, &rlen_), TML_OK); \
            assert_int_equal(rlen_, olen_);                                    \
            assert_memory_equal(re_, ours_, olen_);                            \
            free(lb_);                                                         \
            cbor_decref(&it_);                                                 \
        }                                                                      \
    } while (0)

static void
test_libcbor_builds_identical_bytes_for_every_message(void **state)
{
    struct tml_hello h;
    struct tml_state st;
    struct tml_tele t;
    struct tml_sample s;
    struct tml_ota_up u;
    struct tml_ack a;
    struct tml_ota_down d;
    struct tml_cmd c;
    struct tml_manifest mf;
    int max, k;

    (void)state;
    for (max = 0; max <= 1; max++) {
        sample_hello(&h, max);
        CHECK_MSG(hello, &h);
        sample_state(&st, max);
        CHECK_MSG(state, &st);
        sample_tele(&t, max);
        CHECK_MSG(tele, &t);
        sample_sample(&s, &store, max);
        CHECK_MSG(sample, &s);
        for (k = TML_OTA_UP_REQUEST; k <= TML_OTA_UP_STATUS; k++) {
            sample_ota_up(&u, (uint8_t)k, max);
            CHECK_MSG(ota_up, &u);
        }
        sample_ack(&a, max);
        CHECK_MSG(ack, &a);
        for (k = TML_OTA_DOWN_OFFER; k <= TML_OTA_DOWN_CANCEL; k++) {
            sample_ota_down(&d, &store, (uint8_t)k, max);
            CHECK_MSG(ota_down, &d);
        }
        for (k = TML_CMD_SET; k <= TML_CMD_PING; k++) {
            sample_cmd(&c, (uint8_t)k, max);
            CHECK_MSG(cmd, &c);
        }
        sample_manifest(&mf, &store, max);
        CHECK_MSG(manifest, &mf);
    }
    /* Negative temperatures of every width. */
    {
        static const int32_t temps[] = {-1, -24, -25, -256, -257, -65537,
                                        INT32_MIN};
        size_t i;

        for (i = 0; i < sizeof temps / sizeof temps[0]; i++) {
            sample_tele(&t, true);
            t.health.temp_dc = temps[i];
            CHECK_MSG(tele, &t);
        }
    }
}

/* up/tele version 1, the map form of agents older than the packed summary,
 * built by libcbor from PROTOCOL.md "up/tele, version 1". */
static cbor_item_t *
build_tele_v1(const struct tml_tele *m, bool desc)
{
    const uint32_t head[] = {
        m->seq,          m->model_version,     m->period_s,
        m->age_s,        m->n_inferences,      m->n_low_conf,
        m->n_flagged,    m->n_errors,          m->n_folded,
        m->n_samples_dropped, m->lat_min_us,   m->lat_mean_us,
        m->lat_max_us};
    struct kvs s = {.n = 0};
    size_t i;

    kv_u(&s, 0, 1);
    for (i = 0; i < 13; i++) {
        kv_u(&s, i + 1, head[i]);
    }
    if (m->n_classes != 0) {
        kv(&s, 14, u32_array(m->class_counts, m->n_classes));
    }
    if (m->n_conf_bins != 0) {
        kv(&s, 15, u32_array(m->conf_hist, m->n_conf_bins));
    }
    if (m->n_lat_bins != 0) {
        kv(&s, 16, u32_array(m->lat_hist, m->n_lat_bins));
    }
    if (m->has_health) {
        struct kvs h = {.n = 0};
        int64_t t = m->health.temp_dc;

        kv_u(&h, 1, m->health.free_ram);
        kv_u(&h, 2, m->health.supply_mv);
        uint64_t mag = (uint64_t)(t < 0 ? -1 - t : t);

        /* Shortest form: libcbor writes the width it is given. */
        kv(&h, 3,
           t >= 0       ? uint_item(mag)
           : mag <= 0xff ? cbor_build_negint8((uint8_t)mag)
           : mag <= 0xffff ? cbor_build_negint16((uint16_t)mag)
                          : cbor_build_negint32((uint32_t)mag));
        kv_u(&h, 4, m->health.uptime_s);
        kv(&s, 17, to_map(&h, desc));
    }
    if (m->lw != 0) {
        kv_u(&s, 18, m->lw);
    }
    return to_map(&s, desc);
}

/* What libcbor writes in tele's version 1 form (keys ascending, as old
 * agents did, and descending) decodes to the summary it was built from:
 * re-encoded it gives our version 2 bytes of that summary. */
static void
test_libcbor_tele_v1_decodes_to_the_same_summary(void **state)
{
    static const int32_t temps[] = {0, -1, -24, -25, -65537, INT32_MIN};
    static uint8_t ours[TML_MAX_MESSAGE], re[TML_MAX_MESSAGE];
    struct tml_tele t, back;
    size_t i, olen, rlen, llen, n = 0;
    int max, desc;

    (void)state;
    for (max = 0; max <= 1; max++) {
        for (i = 0; i < (max ? sizeof temps / sizeof temps[0] : 1); i++) {
            for (desc = 0; desc <= 1; desc++) {
                cbor_item_t *it;
                unsigned char *lb;

                sample_tele(&t, max != 0);
                t.health.temp_dc = max ? temps[i] : 0;
                t.epoch = 0; /* version 1 has no epoch */
                it = build_tele_v1(&t, desc != 0);
                lb = ser(it, &llen);
                assert_int_equal(tml_tele_encode(&t, ours, sizeof ours, &olen),
                                 TML_OK);
                assert_int_equal(tml_tele_decode(lb, llen, &back), TML_OK);
                assert_int_equal(
                    tml_tele_encode(&back, re, sizeof re, &rlen), TML_OK);
                assert_int_equal(rlen, olen);
                assert_memory_equal(re, ours, olen);
                free(lb);
                cbor_decref(&it);
                n++;
            }
        }
    }
    print_message("libcbor: %zu version 1 teles decode to their summary\n",
                  n);
}

static cbor_item_t *
map_get(cbor_item_t *map, uint64_t key)
{
    struct cbor_pair *p = cbor_map_handle(map);
    size_t i;

    for (i = 0; i < cbor_map_size(map); i++) {
        if (cbor_isa_uint(p[i].key) && cbor_get_int(p[i].key) == key) {
            return p[i].value;
        }
    }
    return NULL;
}

static void
test_libcbor_parses_every_sample_we_write(void **state)
{
    static uint8_t buf[TML_MAX_MESSAGE];
    size_t len;
    int i, which;

    (void)state;
    for (i = 0; i < SAMPLE_KINDS; i++) {
        struct cbor_load_result res;
        cbor_item_t *it;
        unsigned char *lb;
        size_t llen;
        const char *name = sample_encode(i, &store, buf, sizeof buf, &len,
                                         &which);

        assert_non_null(name);
        it = cbor_load(buf, len, &res);
        assert_non_null(it);
        assert_int_equal(res.error.code, CBOR_ERR_NONE);
        assert_int_equal(res.read, len);
        assert_true(which == 9 ? cbor_isa_array(it) : cbor_isa_map(it));
        lb = ser(it, &llen);
        assert_int_equal(llen, len);
        assert_memory_equal(lb, buf, len);
        free(lb);
        if (which != 9) {
            cbor_item_t *v = map_get(it, 0);

            assert_non_null(v);
            assert_int_equal(cbor_get_int(v), which == 2 ? TML_TELE_VERSION
                                                         : TML_PROTO_VERSION);
        }
        if (strcmp(name, "tele-max") == 0) {
            cbor_item_t *sum = map_get(it, 1);

            /* One byte string; every optional flag set (PROTOCOL.md). */
            assert_non_null(sum);
            assert_true(cbor_isa_bytestring(sum));
            assert_int_equal(cbor_bytestring_handle(sum)[0], 0x7f);
        }
        if (strcmp(name, "sample-max") == 0) {
            cbor_item_t *d = map_get(it, 14);

            assert_int_equal(cbor_bytestring_length(d), TML_CHUNK_MAX);
            assert_memory_equal(cbor_bytestring_handle(d), store.chunk,
                                TML_CHUNK_MAX);
        }
        if (strcmp(name, "hello-max") == 0) {
            cbor_item_t *hw = map_get(it, 2);

            assert_int_equal(cbor_string_length(hw), TML_MAX_NAME);
            assert_memory_equal(cbor_string_handle(hw),
                                "abcdefghijklmnopqrstuvwxyz012345", 32);
        }
        cbor_decref(&it);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_libcbor_builds_identical_bytes_for_every_message),
        cmocka_unit_test(test_libcbor_parses_every_sample_we_write),
        cmocka_unit_test(test_libcbor_tele_v1_decodes_to_the_same_summary),
    };

    return cmocka_run_group_tests_name("proto_interop_libcbor", tests, setup,
                                       NULL);
}
