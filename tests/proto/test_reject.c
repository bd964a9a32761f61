/*
 * test_reject.c: every message decoder rejects each violation with its own
 * error code (F2 catalogue at the message level), skips unknown optional
 * keys (forward compatibility) and rejects unknown critical (negative) keys.
 * Mutations are generic: they are applied to every key of every sample
 * message, so a new field is covered without a new test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

/* One key/value pair of a top-level map, as byte spans of the message. */
struct pair {
    uint64_t key;
    size_t start; /* key's first byte */
    size_t vstart;
    size_t end;
};

/* Splits a message map into its pairs; returns the count. */
static size_t
split(const uint8_t *msg, size_t len, struct pair *pairs, size_t max)
{
    struct tml_dec d;
    size_t n = 0, i;

    tml_dec_init(&d, msg, len);
    assert_int_equal(tml_dec_map(&d, &n), TML_OK);
    assert_true(n <= max);
    for (i = 0; i < n; i++) {
        pairs[i].start = (size_t)(d.p - msg);
        assert_int_equal(tml_dec_uint(&d, &pairs[i].key), TML_OK);
        pairs[i].vstart = (size_t)(d.p - msg);
        assert_int_equal(tml_dec_skip(&d), TML_OK);
        pairs[i].end = (size_t)(d.p - msg);
    }
    return n;
}

/* Rebuilds a map from msg's pairs: pair `drop` left out (if < n), pair
 * `dup` written twice (if < n), pair `repl` with its value replaced by
 * value/vlen (if < n), plus `extra` raw pairs (n_extra of them) first or
 * last. */
struct edit {
    size_t drop, dup, repl;
    const uint8_t *value;
    size_t vlen;
    const uint8_t *extra;
    size_t elen, n_extra;
    bool extra_first;
};

static size_t
rebuild(const uint8_t *msg, size_t len, const struct edit *ed, uint8_t *out,
        size_t cap)
{
    struct pair pairs[32];
    size_t n = split(msg, len, pairs, 32), i, count = 0, olen = 0;
    struct tml_enc e;

    for (i = 0; i < n; i++) {
        count += i == ed->drop ? 0 : (i == ed->dup ? 2 : 1);
    }
    tml_enc_init(&e, out, cap);
    tml_enc_map(&e, count + ed->n_extra);
    if (ed->extra_first) {
        tml_enc_raw(&e, ed->extra, ed->elen);
    }
    for (i = 0; i < n; i++) {
        const struct pair *p = &pairs[i];
        int k;

        if (i == ed->drop) {
            continue;
        }
        for (k = 0; k < (i == ed->dup ? 2 : 1); k++) {
            if (i == ed->repl) {
                tml_enc_raw(&e, msg + p->start, p->vstart - p->start);
                tml_enc_raw(&e, ed->value, ed->vlen);
            } else {
                tml_enc_raw(&e, msg + p->start, p->end - p->start);
            }
        }
    }
    if (!ed->extra_first) {
        tml_enc_raw(&e, ed->extra, ed->elen);
    }
    assert_int_equal(tml_enc_finish(&e, &olen), TML_OK);
    return olen;
}

static const struct edit NO_EDIT = {(size_t)-1, (size_t)-1, (size_t)-1, NULL,
                                    0,          NULL,       0, 0, false};

static uint8_t msg[TML_MAX_MESSAGE + 64];
static uint8_t out[2 * TML_MAX_MESSAGE + 512];

/* Runs fn(i, which, msg, len) for every message sample except COSE. */
#define FOR_EACH_SAMPLE(i, which, len)                                         \
    for (i = 0; i < SAMPLE_KINDS; i++)                                         \
        if (sample_encode(i, &store, msg, sizeof msg, &len, &which) != NULL && \
            which != 9)

static void
test_rebuild_without_edits_decodes(void **state)
{
    size_t len, olen;
    int i, which;

    (void)state;
    FOR_EACH_SAMPLE(i, which, len)
    {
        olen = rebuild(msg, len, &NO_EDIT, out, sizeof out);
        assert_int_equal(olen, len);
        assert_memory_equal(out, msg, len);
    }
}

static void
test_every_strict_prefix_is_truncated(void **state)
{
    size_t len, cut;
    int i, which;

    (void)state;
    FOR_EACH_SAMPLE(i, which, len)
    {
        for (cut = 0; cut < len; cut++) {
            assert_int_equal(sample_decode(which, msg, cut),
                             TML_ERR_TRUNCATED);
        }
    }
}

static void
test_trailing_bytes_rejected(void **state)
{
    static const uint8_t tails[][2] = {{0x00, 0}, {0xf6, 0}, {0xa0, 0}};
    size_t len, t;
    int i, which;

    (void)state;
    FOR_EACH_SAMPLE(i, which, len)
    {
        for (t = 0; t < 3; t++) {
            msg[len] = tails[t][0];
            if (which == 8 && len + 1 > TML_MAX_MANIFEST) {
                continue;
            }
            assert_int_equal(sample_decode(which, msg, len + 1),
                             TML_ERR_TRAILING);
        }
    }
}

static void
test_missing_required_field_at_every_key(void **state)
{
    /* The "min" samples hold required fields only (ack: has tele only, ack's
     * rule is "at least one of"). */
    static const int min_samples[] = {0, 2, 3, 5, 7, 8, 10, 11, 12, 13};
    struct pair pairs[32];
    size_t len, n, k, olen, s;
    int which;

    (void)state;
    for (s = 0; s < sizeof min_samples / sizeof min_samples[0]; s++) {
        int i = min_samples[s];

        assert_non_null(sample_encode(i, &store, msg, sizeof msg, &len,
                                      &which));
        n = split(msg, len, pairs, 32);
        for (k = 0; k < n; k++) {
            struct edit ed = NO_EDIT;

            /* cmd-set-max and others carry optional keys: skip those. */
            if (which == 7 && pairs[k].key >= 3) {
                continue;
            }
            if ((which == 0 && pairs[k].key >= 14) ||
                (which == 4 && pairs[k].key == 8) || /* ota-status passed */
                (which == 8 && pairs[k].key >= 17)) {
                continue;
            }
            ed.drop = k;
            olen = rebuild(msg, len, &ed, out, sizeof out);
            assert_int_equal(sample_decode(which, out, olen), TML_ERR_MISSING);
        }
    }
}

static void
test_duplicate_key_rejected_at_every_key(void **state)
{
    struct pair pairs[32];
    size_t len, n, k, olen;
    int i, which;

    (void)state;
    FOR_EACH_SAMPLE(i, which, len)
    {
        n = split(msg, len, pairs, 32);
        for (k = 0; k < n; k++) {
            struct edit ed = NO_EDIT;

            ed.dup = k;
            olen = rebuild(msg, len, &ed, out, sizeof out);
            if (olen > (which == 8 ? TML_MAX_MANIFEST : TML_MAX_MESSAGE)) {
                continue;
            }
            assert_int_equal(sample_decode(which, out, olen),
                             TML_ERR_DUPLICATE);
        }
    }
}

/* Replaces each value with an item of another type. */
static void
test_wrong_type_rejected_at_every_key(void **state)
{
    static const uint8_t text[] = {0x61, 'x'};
    static const uint8_t nested[] = {0xa1, 0x01, 0x02};
    static const uint8_t neg[] = {0x20};
    struct pair pairs[32];
    size_t len, n, k, olen;
    int i, which;

    (void)state;
    FOR_EACH_SAMPLE(i, which, len)
    {
        n = split(msg, len, pairs, 32);
        for (k = 0; k < n; k++) {
            struct edit ed = NO_EDIT;
            uint8_t first = msg[pairs[k].vstart];
            enum tml_err want;

            ed.repl = k;
            /* A text value where the field is not text... */
            if ((first >> 5) == 3) {
                ed.value = neg;
                ed.vlen = sizeof neg;
            } else if ((first >> 5) == 5) {
                ed.value = text;
                ed.vlen = sizeof text;
            } else {
                ed.value = (first >> 5) == 0 ? text : nested;
                ed.vlen = (first >> 5) == 0 ? sizeof text : sizeof nested;
            }
            olen = rebuild(msg, len, &ed, out, sizeof out);
            want = pairs[k].key == 0 ? TML_ERR_VERSION : TML_ERR_TYPE;
            assert_int_equal(sample_decode(which, out, olen), want);
        }
    }
}

/* Tags, floats, undefined and simple values anywhere: UNSUPPORTED. */
static void
test_tag_float_simple_rejected_at_every_key(void **state)
{
    static const uint8_t items[][5] = {
        {0xc1, 0x01},             /* tag 1 (epoch) around an int */
        {0xfa, 0x3f, 0x80, 0, 0}, /* 1.0f */
        {0xf9, 0x7e, 0x00},       /* NaN half */
        {0xf7},                   /* undefined */
        {0xf0},                   /* simple(16) */
    };
    static const size_t lens[] = {2, 5, 3, 1, 1};
    struct pair pairs[32];
    size_t len, n, k, olen, t;
    int i, which;

    (void)state;
    FOR_EACH_SAMPLE(i, which, len)
    {
        n = split(msg, len, pairs, 32);
        for (k = 1; k < n; k++) {
            for (t = 0; t < 5; t++) {
                struct edit ed = NO_EDIT;

                ed.repl = k;
                ed.value = items[t];
                ed.vlen = lens[t];
                olen = rebuild(msg, len, &ed, out, sizeof out);
                assert_int_equal(sample_decode(which, out, olen),
                                 TML_ERR_UNSUPPORTED);
            }
        }
    }
}

/* Forward compatibility: unknown keys >= 0 with any well-formed value are
 * skipped, before or after the known ones, and the known fields decode to
 * the same values. */
static void
test_unknown_optional_keys_skipped(void **state)
{
    /* 63: {1: [h'00', "x", null, true]}, 1000: -5, 64: 4294967296 */
    static const uint8_t extra[] = {0x18, 0x3f, 0xa1, 0x01, 0x84, 0x41,
                                    0x00, 0x61, 'x',  0xf6, 0xf5, 0x19,
                                    0x03, 0xe8, 0x24, 0x18, 0x40, 0x1b,
                                    0,    0,    0,    1,    0,    0,
                                    0,    0};
    size_t len, olen;
    int i, which, first;

    (void)state;
    for (first = 0; first <= 1; first++) {
        FOR_EACH_SAMPLE(i, which, len)
        {
            struct edit ed = NO_EDIT;

            if (len + sizeof extra + 2 >
                (which == 8 ? TML_MAX_MANIFEST : TML_MAX_MESSAGE)) {
                continue;
            }
            ed.extra = extra;
            ed.elen = sizeof extra;
            ed.n_extra = 3;
            ed.extra_first = first;
            olen = rebuild(msg, len, &ed, out, sizeof out);
            assert_int_equal(sample_decode(which, out, olen), TML_OK);
        }
    }
}

static void
test_unknown_keys_keep_values_hello(void **state)
{
    static const uint8_t extra[] = {0x18, 0x63, 0x82, 0x01, 0x02}; /* 99 */
    struct tml_hello m, outm;
    uint8_t re[TML_MAX_MESSAGE];
    size_t len, olen, rlen;
    struct edit ed = NO_EDIT;

    (void)state;
    sample_hello(&m, true);
    assert_int_equal(tml_hello_encode(&m, msg, sizeof msg, &len), TML_OK);
    ed.extra = extra;
    ed.elen = sizeof extra;
    ed.n_extra = 1;
    olen = rebuild(msg, len, &ed, out, sizeof out);
    assert_int_equal(tml_hello_decode(out, olen, &outm), TML_OK);
    assert_int_equal(tml_hello_encode(&outm, re, sizeof re, &rlen), TML_OK);
    assert_int_equal(rlen, len);
    assert_memory_equal(re, msg, len);
}

static void
test_unknown_duplicate_and_too_many_unknown_keys(void **state)
{
    static const uint8_t two[] = {0x18, 0x63, 0x00, 0x18, 0x63, 0x01};
    uint8_t many[2 * 17 * 2];
    size_t len, olen, k;
    struct edit ed = NO_EDIT;
    int which;

    (void)state;
    assert_non_null(sample_encode(2, &store, msg, sizeof msg, &len, &which));
    ed.extra = two;
    ed.elen = sizeof two;
    ed.n_extra = 2;
    olen = rebuild(msg, len, &ed, out, sizeof out);
    assert_int_equal(tml_state_decode(out, olen, &(struct tml_state){0}),
                     TML_ERR_DUPLICATE);
    /* 16 distinct unknown keys are fine, 17 are OVERSIZE. */
    for (k = 0; k < 17; k++) {
        many[2 * k] = (uint8_t)(2 + k); /* keys 2..18: unknown to state */
        many[2 * k + 1] = 0xf6;
    }
    ed.extra = many;
    ed.elen = 2 * 16;
    ed.n_extra = 16;
    olen = rebuild(msg, len, &ed, out, sizeof out);
    assert_int_equal(tml_state_decode(out, olen, &(struct tml_state){0}),
                     TML_OK);
    ed.elen = 2 * 17;
    ed.n_extra = 17;
    olen = rebuild(msg, len, &ed, out, sizeof out);
    assert_int_equal(tml_state_decode(out, olen, &(struct tml_state){0}),
                     TML_ERR_OVERSIZE);
}

static void
test_unknown_critical_key_rejected(void **state)
{
    static const uint8_t crit[][4] = {
        {0x20, 0x00},             /* -1: 0 */
        {0x38, 0x63, 0xf6},       /* -100: null */
        {0x3b, 0x7f, 0xff, 0xff}, /* truncated nint key: not critical */
    };
    size_t len, olen, c;
    int i, which;

    (void)state;
    FOR_EACH_SAMPLE(i, which, len)
    {
        for (c = 0; c < 2; c++) {
            struct edit ed = NO_EDIT;

            ed.extra = crit[c];
            ed.elen = c == 0 ? 2 : 3;
            ed.n_extra = 1;
            ed.extra_first = c == 0;
            olen = rebuild(msg, len, &ed, out, sizeof out);
            if (olen > (which == 8 ? TML_MAX_MANIFEST : TML_MAX_MESSAGE)) {
                continue;
            }
            assert_int_equal(sample_decode(which, out, olen),
                             TML_ERR_UNKNOWN_CRITICAL);
        }
    }
}

static void
test_text_keys_rejected(void **state)
{
    static const uint8_t tkey[] = {0x61, 'a', 0x01};
    size_t len, olen;
    struct edit ed = NO_EDIT;
    int which;

    (void)state;
    assert_non_null(sample_encode(9, &store, msg, sizeof msg, &len, &which));
    ed.extra = tkey;
    ed.elen = sizeof tkey;
    ed.n_extra = 1;
    olen = rebuild(msg, len, &ed, out, sizeof out);
    assert_int_equal(sample_decode(which, out, olen), TML_ERR_TYPE);
}

/* Key 0 other than the message's version (1; tele 2, whose version 1 map
 * form proto_tele_v1 covers) is TML_ERR_VERSION. */
static void
test_wrong_version_rejected(void **state)
{
    static const uint8_t versions[] = {0x00, 0x02, 0x03, 0x17};
    size_t len, olen, v;
    int i, which;

    (void)state;
    FOR_EACH_SAMPLE(i, which, len)
    {
        struct edit ed = NO_EDIT;

        for (v = 0; v < sizeof versions; v++) {
            if (which == 2 && versions[v] == TML_TELE_VERSION) {
                continue;
            }
            ed.repl = 0;
            ed.value = &versions[v];
            ed.vlen = 1;
            olen = rebuild(msg, len, &ed, out, sizeof out);
            assert_int_equal(sample_decode(which, out, olen),
                             TML_ERR_VERSION);
        }
    }
}

static void
test_non_minimal_value_rejected_at_every_uint(void **state)
{
    struct pair pairs[32];
    size_t len, n, k, olen;
    int i, which;

    (void)state;
    FOR_EACH_SAMPLE(i, which, len)
    {
        n = split(msg, len, pairs, 32);
        for (k = 0; k < n; k++) {
            uint8_t v[9];
            struct edit ed = NO_EDIT;
            uint8_t first = msg[pairs[k].vstart];

            if ((first >> 5) != 0 || (first & 31) >= 27) {
                continue;
            }
            /* Re-encode the same value one size wider. */
            {
                struct tml_dec d;
                uint64_t x = 0;
                size_t w, j;

                tml_dec_init(&d, msg + pairs[k].vstart,
                             pairs[k].end - pairs[k].vstart);
                assert_int_equal(tml_dec_uint(&d, &x), TML_OK);
                w = (first & 31) < 24 ? 1 : (size_t)2 << ((first & 31) - 24);
                v[0] = (uint8_t)((first & 31) < 24 ? 24 : (first & 31) + 1);
                for (j = 0; j < w; j++) {
                    v[1 + j] = (uint8_t)(x >> (8 * (w - 1 - j)));
                }
                ed.vlen = 1 + w;
            }
            ed.repl = k;
            ed.value = v;
            olen = rebuild(msg, len, &ed, out, sizeof out);
            assert_int_equal(sample_decode(which, out, olen),
                             TML_ERR_NON_MINIMAL);
        }
    }
}

static void
test_indefinite_and_deep_values_rejected(void **state)
{
    static const uint8_t indef_map[] = {0xbf, 0x00, 0x01, 0xff};
    static const uint8_t deep[] = {0x18, 0x63, 0x81, 0x81, 0x81, 0x81, 0x81,
                                   0x81, 0x81, 0x80}; /* 99: 8 levels */
    static const uint8_t ok_deep[] = {0x18, 0x63, 0x81, 0x81, 0x81, 0x81,
                                      0x81, 0x81, 0x80}; /* 7 levels */
    size_t len, olen;
    struct edit ed = NO_EDIT;
    int which;

    (void)state;
    assert_int_equal(tml_state_decode(indef_map, sizeof indef_map,
                                      &(struct tml_state){0}),
                     TML_ERR_INDEFINITE);
    assert_non_null(sample_encode(4, &store, msg, sizeof msg, &len, &which));
    ed.extra = deep;
    ed.elen = sizeof deep;
    ed.n_extra = 1;
    olen = rebuild(msg, len, &ed, out, sizeof out);
    assert_int_equal(sample_decode(which, out, olen), TML_ERR_DEPTH);
    ed.extra = ok_deep;
    ed.elen = sizeof ok_deep;
    olen = rebuild(msg, len, &ed, out, sizeof out);
    assert_int_equal(sample_decode(which, out, olen), TML_OK);
}

static void
test_oversize_strings_arrays_and_messages(void **state)
{
    struct tml_hello h, hout;
    struct tml_tele t;
    struct tml_sample s;
    static uint8_t big[TML_MAX_MESSAGE + 1];
    char name[TML_MAX_NAME + 1];
    size_t len;

    (void)state;
    memset(name, 'n', sizeof name);
    sample_hello(&h, false);
    h.hw.p = name;
    h.hw.len = TML_MAX_NAME + 1;
    assert_int_equal(tml_hello_encode(&h, msg, sizeof msg, &len),
                     TML_ERR_OVERSIZE);
    /* Hand-build the oversize hello the encoder refuses to write. */
    h.hw.len = TML_MAX_NAME;
    assert_int_equal(tml_hello_encode(&h, msg, sizeof msg, &len), TML_OK);
    {
        struct pair pairs[32];
        size_t n = split(msg, len, pairs, 32), olen;
        uint8_t v[2 + TML_MAX_NAME + 1];
        struct edit ed = NO_EDIT;

        assert_int_equal(pairs[2].key, 2);
        v[0] = 0x78;
        v[1] = TML_MAX_NAME + 1;
        memset(v + 2, 'n', TML_MAX_NAME + 1);
        ed.repl = 2;
        ed.value = v;
        ed.vlen = sizeof v;
        (void)n;
        olen = rebuild(msg, len, &ed, out, sizeof out);
        assert_int_equal(tml_hello_decode(out, olen, &hout),
                         TML_ERR_OVERSIZE);
    }
    sample_hello(&h, true);
    h.n_groups = TML_MAX_GROUPS + 1;
    assert_int_equal(tml_hello_encode(&h, msg, sizeof msg, &len),
                     TML_ERR_OVERSIZE);
    sample_tele(&t, true);
    t.n_classes = TML_MAX_CLASSES + 1;
    assert_int_equal(tml_tele_encode(&t, msg, sizeof msg, &len),
                     TML_ERR_OVERSIZE);
    sample_sample(&s, &store, true);
    s.data.len = TML_CHUNK_MAX + 1;
    assert_int_equal(tml_sample_encode(&s, msg, sizeof msg, &len),
                     TML_ERR_OVERSIZE);
    /* Whole message over the broker limit. */
    memset(big, 0, sizeof big);
    assert_int_equal(tml_sample_decode(big, sizeof big, &s), TML_ERR_OVERSIZE);
    assert_int_equal(tml_manifest_decode(big, TML_MAX_MANIFEST + 1,
                                         &(struct tml_manifest){0}),
                     TML_ERR_OVERSIZE);
    /* A sample chunk of TML_CHUNK_MAX + 1 bytes, hand-built. */
    sample_sample(&s, &store, true);
    assert_int_equal(tml_sample_encode(&s, msg, sizeof msg, &len), TML_OK);
    {
        struct pair pairs[32];
        size_t n = split(msg, len, pairs, 32), olen;
        static uint8_t v[3 + TML_CHUNK_MAX + 1];
        struct edit ed = NO_EDIT;

        /* data (key 14), before the low-water (key 15) and the epoch
         * (key 16) of the max sample */
        assert_int_equal(pairs[n - 3].key, 14);
        v[0] = 0x59;
        v[1] = (TML_CHUNK_MAX + 1) >> 8;
        v[2] = (TML_CHUNK_MAX + 1) & 0xff;
        ed.repl = n - 3;
        ed.value = v;
        ed.vlen = sizeof v;
        olen = rebuild(msg, len, &ed, out, sizeof out);
        assert_true(olen <= TML_MAX_MESSAGE);
        assert_int_equal(tml_sample_decode(out, olen, &s), TML_ERR_OVERSIZE);
    }
}

static void
test_range_violations_rejected_by_both_sides(void **state)
{
    struct tml_sample s, sout;
    struct tml_tele t;
    struct tml_cmd c;
    struct tml_ota_up u;
    struct tml_manifest mf;
    struct tml_ack a;
    struct tml_hello h;
    size_t len;

    (void)state;
    sample_sample(&s, &store, false);
    s.confidence_bp = 10001;
    assert_int_equal(tml_sample_encode(&s, msg, sizeof msg, &len),
                     TML_ERR_RANGE);
    sample_sample(&s, &store, false);
    s.offset = 1; /* chunk [1, 2) outside total_len 1 */
    assert_int_equal(tml_sample_encode(&s, msg, sizeof msg, &len),
                     TML_ERR_RANGE);
    sample_sample(&s, &store, false);
    s.reason = 4;
    assert_int_equal(tml_sample_encode(&s, msg, sizeof msg, &len),
                     TML_ERR_RANGE);
    sample_sample(&s, &store, false);
    s.dtype = 0;
    assert_int_equal(tml_sample_encode(&s, msg, sizeof msg, &len),
                     TML_ERR_RANGE);
    sample_tele(&t, false);
    t.seq = 0;
    assert_int_equal(tml_tele_encode(&t, msg, sizeof msg, &len),
                     TML_ERR_RANGE);
    sample_cmd(&c, TML_CMD_SET, true);
    c.audit_ppm = 1000001;
    assert_int_equal(tml_cmd_encode(&c, msg, sizeof msg, &len),
                     TML_ERR_RANGE);
    sample_cmd(&c, 3, false);
    assert_int_equal(tml_cmd_encode(&c, msg, sizeof msg, &len),
                     TML_ERR_RANGE);
    sample_ota_up(&u, TML_OTA_UP_STATUS, false);
    u.state = TML_OTA_REVERTED + 1;
    assert_int_equal(tml_ota_up_encode(&u, msg, sizeof msg, &len),
                     TML_ERR_RANGE);
    sample_ota_up(&u, TML_OTA_UP_REQUEST, false);
    u.len = 0;
    assert_int_equal(tml_ota_up_encode(&u, msg, sizeof msg, &len),
                     TML_ERR_RANGE);
    sample_manifest(&mf, &store, true);
    mf.size--; /* image size no longer model + vectors */
    assert_int_equal(tml_manifest_encode(&mf, msg, sizeof msg, &len),
                     TML_ERR_RANGE);
    sample_manifest(&mf, &store, false);
    mf.created = 100;
    mf.expires = 99;
    assert_int_equal(tml_manifest_encode(&mf, msg, sizeof msg, &len),
                     TML_ERR_RANGE);
    sample_ack(&a, false);
    a.has_tele = false;
    assert_int_equal(tml_ack_encode(&a, msg, sizeof msg, &len),
                     TML_ERR_MISSING);
    sample_sample(&s, &store, false);
    s.shape[0] = 0; /* dimensions are >= 1 */
    assert_int_equal(tml_sample_encode(&s, msg, sizeof msg, &len),
                     TML_ERR_RANGE);
    sample_hello(&h, false);
    h.model.p = NULL;
    h.model.len = 3;
    assert_int_equal(tml_hello_encode(&h, msg, sizeof msg, &len),
                     TML_ERR_INVAL);
    sample_hello(&h, false);
    h.hw.p = "\xc0\xaf";
    h.hw.len = 2;
    assert_int_equal(tml_hello_encode(&h, msg, sizeof msg, &len),
                     TML_ERR_TYPE);

    /* Decoder side: confidence 10001 and a u32 field of 2^32. */
    sample_sample(&s, &store, false);
    assert_int_equal(tml_sample_encode(&s, msg, sizeof msg, &len), TML_OK);
    {
        struct pair pairs[32];
        size_t olen;
        static const uint8_t c10001[] = {0x19, 0x27, 0x11};
        static const uint8_t big[] = {0x1b, 0, 0, 0, 1, 0, 0, 0, 0};
        struct edit ed = NO_EDIT;

        split(msg, len, pairs, 32);
        assert_int_equal(pairs[6].key, 6);
        ed.repl = 6;
        ed.value = c10001;
        ed.vlen = sizeof c10001;
        olen = rebuild(msg, len, &ed, out, sizeof out);
        assert_int_equal(tml_sample_decode(out, olen, &sout), TML_ERR_RANGE);
        ed.repl = 2;
        ed.value = big;
        ed.vlen = sizeof big;
        olen = rebuild(msg, len, &ed, out, sizeof out);
        assert_int_equal(tml_sample_decode(out, olen, &sout), TML_ERR_RANGE);
    }
}

/* PROTOCOL.md 6: the low-water (in tele's summary, sample key 15) is a seq, so
 * 1.., and never above the record's own seq; hello's next seqs are seqs. */
/* The numbering epoch (PROTOCOL.md 6): optional on tele (map key 2, outside
 * the packed summary), sample (16), hello (19) and ack (3); 0 is "not
 * declared" and never on the wire, so a 0 there is refused; a record
 * without it decodes with epoch 0 (an older agent). tele's epoch costs the
 * key and the number: 4 bytes for the agent's 16-bit epochs. */
static void
test_epoch_roundtrips_and_zero_is_refused(void **state)
{
    struct tml_tele t, tout;
    struct tml_sample s, sout;
    struct tml_ack k, kout;
    size_t len, olen;

    (void)state;
    sample_tele(&t, false);
    assert_int_equal(tml_tele_encode(&t, msg, sizeof msg, &olen), TML_OK);
    t.epoch = 0xbeef;
    assert_int_equal(tml_tele_encode(&t, msg, sizeof msg, &len), TML_OK);
    assert_int_equal(len, olen + 4);
    assert_int_equal(msg[0], 0xa3);
    assert_int_equal(tml_tele_decode(msg, len, &tout), TML_OK);
    assert_int_equal(tout.epoch, 0xbeef);
    assert_int_equal(tout.seq, t.seq);
    /* key 2 = 0: the same bytes with the number replaced by 0x00 */
    memcpy(out, msg, len - 3);
    out[len - 3] = 0x00;
    assert_int_equal(tml_tele_decode(out, len - 2, &tout), TML_ERR_RANGE);

    sample_sample(&s, &store, false);
    s.epoch = 7;
    assert_int_equal(tml_sample_encode(&s, msg, sizeof msg, &len), TML_OK);
    assert_int_equal(tml_sample_decode(msg, len, &sout), TML_OK);
    assert_int_equal(sout.epoch, 7);
    assert_int_equal(msg[len - 2], 16); /* key 16, value 7 */
    msg[len - 1] = 0x00;
    assert_int_equal(tml_sample_decode(msg, len, &sout), TML_ERR_RANGE);

    sample_ack(&k, false);
    k.epoch = 9;
    assert_int_equal(tml_ack_encode(&k, msg, sizeof msg, &len), TML_OK);
    assert_int_equal(tml_ack_decode(msg, len, &kout), TML_OK);
    assert_int_equal(kout.epoch, 9);
    msg[len - 1] = 0x00;
    assert_int_equal(tml_ack_decode(msg, len, &kout), TML_ERR_RANGE);
    k.epoch = 0;
    assert_int_equal(tml_ack_encode(&k, msg, sizeof msg, &len), TML_OK);
    assert_int_equal(tml_ack_decode(msg, len, &kout), TML_OK);
    assert_int_equal(kout.epoch, 0);
}

static void
test_low_water_above_seq_rejected_by_both_sides(void **state)
{
    static const uint8_t six[] = {0x06}, zero[] = {0x00};
    struct tml_tele t, tout;
    struct tml_sample s, sout;
    struct tml_hello h, hout;
    struct pair pairs[32];
    struct edit ed = NO_EDIT;
    size_t len, olen, n;

    (void)state;
    sample_tele(&t, false);
    t.seq = 5;
    t.lw = 6;
    assert_int_equal(tml_tele_encode(&t, msg, sizeof msg, &len),
                     TML_ERR_RANGE);
    t.lw = 5;
    assert_int_equal(tml_tele_encode(&t, msg, sizeof msg, &len), TML_OK);
    /* The packed summary (PROTOCOL.md "up/tele") written out by hand: flags
     * (lw), seq 5, eight zero counters, lw back-distance 0, no classes, two
     * empty histograms. */
    {
        static const uint8_t want[] = {0xa2, 0x00, 0x02, 0x01, 0x4d, 0x02,
                                       0x05, 0,    0,    0,    0,    0,
                                       0,    0,    0x00, 0,    0,    0};

        assert_int_equal(len, sizeof want);
        assert_memory_equal(msg, want, sizeof want);
    }
    memcpy(out, msg, len);
    out[14] = 6; /* lw = 5 - 6 */
    assert_int_equal(tml_tele_decode(out, len, &tout), TML_ERR_RANGE);
    out[14] = 5; /* lw = 0 */
    assert_int_equal(tml_tele_decode(out, len, &tout), TML_ERR_RANGE);
    out[14] = 4; /* lw = 1 */
    assert_int_equal(tml_tele_decode(out, len, &tout), TML_OK);
    assert_int_equal(tout.lw, 1);
    /* An old peer's record without lw decodes with lw 0. */
    t.lw = 0;
    assert_int_equal(tml_tele_encode(&t, msg, sizeof msg, &olen), TML_OK);
    assert_int_equal(olen + 1, len); /* the back-distance byte */
    assert_int_equal(tml_tele_decode(msg, olen, &tout), TML_OK);
    assert_int_equal(tout.lw, 0);

    sample_sample(&s, &store, false);
    s.seq = 5;
    s.lw = 6;
    assert_int_equal(tml_sample_encode(&s, msg, sizeof msg, &len),
                     TML_ERR_RANGE);
    s.lw = 5;
    assert_int_equal(tml_sample_encode(&s, msg, sizeof msg, &len), TML_OK);
    n = split(msg, len, pairs, 32);
    assert_int_equal(pairs[n - 1].key, 15);
    ed.repl = n - 1;
    ed.value = six;
    ed.vlen = sizeof six;
    olen = rebuild(msg, len, &ed, out, sizeof out);
    assert_int_equal(tml_sample_decode(out, olen, &sout), TML_ERR_RANGE);
    ed.value = zero;
    olen = rebuild(msg, len, &ed, out, sizeof out);
    assert_int_equal(tml_sample_decode(out, olen, &sout), TML_ERR_RANGE);

    sample_hello(&h, false);
    h.tele_next = 7;
    h.sample_next = 1;
    assert_int_equal(tml_hello_encode(&h, msg, sizeof msg, &len), TML_OK);
    n = split(msg, len, pairs, 32);
    assert_int_equal(pairs[n - 2].key, 16);
    ed.repl = n - 2;
    ed.value = zero;
    olen = rebuild(msg, len, &ed, out, sizeof out);
    assert_int_equal(tml_hello_decode(out, olen, &hout), TML_ERR_RANGE);
    assert_int_equal(tml_hello_decode(msg, len, &hout), TML_OK);
    assert_int_equal(hout.tele_next, 7);
    assert_int_equal(hout.sample_next, 1);
}

/* up/tele's packed summary (PROTOCOL.md "up/tele"): every way its varint
 * stream can be malformed or non-canonical is refused with its reason, and
 * a valid hand-written stream decodes to the values it spells. */
static void
test_tele_summary_rejects_malformed_packing(void **state)
{
    /* Valid: flags health|age, seq 300, mv 2, period 60, age 1, n 5, low 1,
     * lat 7/8/9, 2 classes {2, 3}, conf 10 bins window [8, 10) = {1, 4},
     * lat 12 bins window [3, 4) = {5}, health 1000 mV 3300, -5 dC, 70 s. */
    static const uint8_t good[] = {
        0x05, 0xac, 0x02, 0x02, 0x3c, 0x01, 0x05, 0x01, 0x07, 0x08, 0x09,
        0x02, 0x02, 0x03, 0x8a, 0x12, 0x01, 0x04, 0xec, 0x08, 0x05, 0xe8,
        0x07, 0xe4, 0x19, 0x09, 0x46};
    /* Flags 0x80 (a bit version 1 does not define), as a 2-byte varint. */
    static const uint8_t unknown_flag[] = {0xa2, 0x00, 0x02, 0x01, 0x4d,
                                           0x80, 0x01, 0x01, 0, 0, 0, 0,
                                           0,    0,    0,    0, 0, 0};
    static const struct {
        const char *name;
        size_t at;      /* byte of good[] replaced */
        uint8_t with;   /* replacement */
        size_t cut;     /* bytes dropped at the end (after the edit) */
        int extra;      /* one byte appended */
        enum tml_err want;
    } cases[] = {
        {"flagged counter is 0", 5, 0x00, 0, 0, TML_ERR_NON_MINIMAL},
        {"seq 0", 1, 0x00, 0, 0, TML_ERR_RANGE},
        {"non-shortest varint", 2, 0x00, 0, 0, TML_ERR_NON_MINIMAL},
        {"class count over 32", 11, 0x21, 0, 0, TML_ERR_OVERSIZE},
        {"window starts at a 0 bin", 16, 0x00, 0, 0, TML_ERR_NON_MINIMAL},
        {"window past the bins", 15, 0x1a, 0, 0, TML_ERR_RANGE},
        {"more than 16 bins", 18, 0xf1, 0, 0, TML_ERR_OVERSIZE},
        {"truncated", 0, 0x05, 1, 0, TML_ERR_TRUNCATED},
        {"trailing byte", 0, 0x05, 0, 1, TML_ERR_TRAILING},
    };
    uint8_t buf[64], sum[sizeof good + 1], re[64];
    struct tml_tele t;
    size_t i, n, ok = 0;

    (void)state;
    for (i = 0; i <= sizeof cases / sizeof cases[0]; i++) {
        enum tml_err want = TML_OK;

        memcpy(sum, good, sizeof good);
        n = sizeof good;
        if (i < sizeof cases / sizeof cases[0]) {
            sum[cases[i].at] = cases[i].with;
            n -= cases[i].cut;
            sum[n] = 0x01;
            n += (size_t)cases[i].extra;
            want = cases[i].want;
        }
        buf[0] = 0xa2;
        buf[1] = 0x00;
        buf[2] = TML_TELE_VERSION;
        buf[3] = 0x01;
        buf[4] = 0x58;
        buf[5] = (uint8_t)n;
        memcpy(buf + 6, sum, n);
        if (tml_tele_decode(buf, 6 + n, &t) == want) {
            ok++;
        } else if (i < sizeof cases / sizeof cases[0]) {
            print_error("%s: got %s\n", cases[i].name,
                        tml_strerror(tml_tele_decode(buf, 6 + n, &t)));
        }
    }
    assert_int_equal(ok, sizeof cases / sizeof cases[0] + 1);
    assert_int_equal(tml_tele_decode(unknown_flag, sizeof unknown_flag, &t),
                     TML_ERR_RANGE);
    /* The valid stream, field by field. */
    assert_int_equal(tml_tele_decode(buf, 6 + sizeof good, &t), TML_OK);
    assert_int_equal(t.seq, 300);
    assert_int_equal(t.model_version, 2);
    assert_int_equal(t.period_s, 60);
    assert_int_equal(t.age_s, 1);
    assert_int_equal(t.n_inferences, 5);
    assert_int_equal(t.n_low_conf, 1);
    assert_int_equal(t.n_flagged + t.n_errors + t.n_folded, 0);
    assert_int_equal(t.lat_min_us + t.lat_mean_us + t.lat_max_us, 24);
    assert_int_equal(t.n_classes, 2);
    assert_int_equal(t.class_counts[1], 3);
    assert_int_equal(t.n_conf_bins, 10);
    assert_int_equal(t.conf_hist[7] + t.conf_hist[8] + t.conf_hist[9], 5);
    assert_int_equal(t.conf_hist[9], 4);
    assert_int_equal(t.n_lat_bins, 12);
    assert_int_equal(t.lat_hist[3], 5);
    assert_true(t.has_health);
    assert_int_equal(t.health.free_ram, 1000);
    assert_int_equal(t.health.supply_mv, 3300);
    assert_int_equal(t.health.temp_dc, -5);
    assert_int_equal(t.health.uptime_s, 70);
    assert_int_equal(t.lw, 0);
    /* Re-encoding gives the same bytes (canonical form). */
    assert_int_equal(tml_tele_encode(&t, re, sizeof re, &n), TML_OK);
    assert_int_equal(n, 6 + sizeof good);
    assert_memory_equal(re, buf, n);
}

static void
test_encoders_nospace_at_every_short_capacity(void **state)
{
    static uint8_t small[TML_MAX_MESSAGE];
    size_t len;
    int i, which;

    (void)state;
    for (i = 0; i < SAMPLE_KINDS; i++) {
        size_t cap, got = 0;

        assert_non_null(sample_encode(i, &store, msg, sizeof msg, &len,
                                      &which));
        for (cap = 0; cap < len; cap += (len > 600 ? 97 : 1)) {
            assert_null(sample_encode(i, &store, small, cap, &got, &which));
        }
        assert_non_null(sample_encode(i, &store, small, len, &got, &which));
        assert_int_equal(got, len);
    }
    assert_int_equal(tml_state_encode(&(struct tml_state){true}, msg, 4, &len),
                     TML_ERR_NOSPACE);
    assert_int_equal(tml_state_encode(NULL, msg, 4, &len), TML_ERR_INVAL);
    assert_int_equal(tml_state_decode(NULL, 4, &(struct tml_state){0}),
                     TML_ERR_INVAL);
}

static void
test_kind_dependent_fields_required(void **state)
{
    /* ota_down CHUNK without data; OFFER without manifest; ota_up REQUEST
     * without len; STATUS without state. Built by hand. */
    static const uint8_t chunk_no_data[] = {0xa4, 0x00, 0x01, 0x01, 0x02,
                                            0x02, 0x07, 0x04, 0x00};
    static const uint8_t offer_no_manifest[] = {0xa3, 0x00, 0x01, 0x01,
                                                0x01, 0x02, 0x07};
    static const uint8_t cancel[] = {0xa3, 0x00, 0x01, 0x01, 0x03, 0x02, 0x07};
    static const uint8_t req_no_len[] = {0xa5, 0x00, 0x01, 0x01, 0x01, 0x02,
                                         0x07, 0x03, 0x05, 0x04, 0x00};
    static const uint8_t status_no_state[] = {0xa6, 0x00, 0x01, 0x01, 0x02,
                                              0x02, 0x07, 0x03, 0x05, 0x04,
                                              0x00, 0x07, 0x00};
    struct tml_ota_down d;
    struct tml_ota_up u;

    (void)state;
    assert_int_equal(tml_ota_down_decode(chunk_no_data, sizeof chunk_no_data,
                                         &d),
                     TML_ERR_MISSING);
    assert_int_equal(tml_ota_down_decode(offer_no_manifest,
                                         sizeof offer_no_manifest, &d),
                     TML_ERR_MISSING);
    assert_int_equal(tml_ota_down_decode(cancel, sizeof cancel, &d), TML_OK);
    assert_int_equal(d.kind, TML_OTA_DOWN_CANCEL);
    assert_int_equal(d.offer_id, 7);
    assert_int_equal(tml_ota_up_decode(req_no_len, sizeof req_no_len, &u),
                     TML_ERR_MISSING);
    assert_int_equal(tml_ota_up_decode(status_no_state, sizeof status_no_state,
                                       &u),
                     TML_ERR_MISSING);
}

/* F2: every single-byte corruption of every sample is either accepted or
 * rejected with a defined code; none crashes (ASan build checks memory). */
static void
test_every_byte_flip_gives_defined_result(void **state)
{
    size_t len, pos;
    int i, which, bit;

    (void)state;
    FOR_EACH_SAMPLE(i, which, len)
    {
        if (len > 600) {
            continue;
        }
        for (pos = 0; pos < len; pos++) {
            for (bit = 0; bit < 8; bit++) {
                enum tml_err err;

                memcpy(out, msg, len);
                out[pos] ^= (uint8_t)(1u << bit);
                err = sample_decode(which, out, len);
                assert_true(err >= TML_OK && err < TML_ERR__COUNT);
                assert_int_not_equal(err, TML_ERR_NOSPACE);
                assert_int_not_equal(err, TML_ERR_INVAL);
            }
        }
    }
}

/* F2 malformed-CBOR catalogue against one decoder (tele), each named input
 * with the reason it must be rejected for; prints "F2: N/N rejected". */
static void
test_f2_catalogue_named_inputs_rejected_with_reason(void **state)
{
    static uint8_t deep[TML_MAX_MESSAGE]; /* as deep as a message can be */
    static const uint8_t indef_map[] = {0xbf, 0x00, 0x01, 0x01, 0x01, 0xff};
    static const uint8_t huge_str[] = {0xa1, 0x18, 0x63, 0x5b, 0xff, 0xff,
                                       0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t huge_map[] = {0xbb, 0xff, 0xff, 0xff, 0xff,
                                       0xff, 0xff, 0xff, 0xff};
    static const uint8_t dup[] = {0xa3, 0x00, 0x02, 0x01, 0x40, 0x01, 0x40};
    static const uint8_t non_short[] = {0xa2, 0x00, 0x18, 0x01, 0x01, 0x01};
    static const uint8_t tagged[] = {0xa2, 0x00, 0x02, 0x01, 0xc2, 0x41, 0x01};
    static const uint8_t nan[] = {0xa2, 0x00, 0x02, 0x01, 0xf9, 0x7e, 0x00};
    static const uint8_t flt[] = {0xa2, 0x00, 0x02, 0x01, 0xfa, 0x3f, 0x80,
                                  0x00, 0x00};
    static const uint8_t neg_key[] = {0xa1, 0x20, 0x00};
    struct {
        const char *name;
        const uint8_t *p;
        size_t len;
        enum tml_err want;
    } cases[] = {
        {"indefinite map", indef_map, sizeof indef_map, TML_ERR_INDEFINITE},
        {"nesting 5117 levels", deep, sizeof deep, TML_ERR_DEPTH},
        {"string length 2^64-1", huge_str, sizeof huge_str,
         TML_ERR_TRUNCATED},
        {"map count 2^64-1", huge_map, sizeof huge_map, TML_ERR_TRUNCATED},
        {"duplicate key", dup, sizeof dup, TML_ERR_DUPLICATE},
        {"non-shortest int", non_short, sizeof non_short,
         TML_ERR_NON_MINIMAL},
        {"unknown tag", tagged, sizeof tagged, TML_ERR_UNSUPPORTED},
        {"NaN where int expected", nan, sizeof nan, TML_ERR_UNSUPPORTED},
        {"float where int expected", flt, sizeof flt, TML_ERR_UNSUPPORTED},
        {"unknown critical key", neg_key, sizeof neg_key,
         TML_ERR_UNKNOWN_CRITICAL},
    };
    size_t i, n = 0, ok = 0, len, cut;
    int which;
    struct tml_tele t;

    (void)state;
    deep[0] = 0xa1;
    deep[1] = 0x18;
    deep[2] = 0x63;
    memset(deep + 3, 0x81, sizeof deep - 3);
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum tml_err err = tml_tele_decode(cases[i].p, cases[i].len, &t);

        n++;
        if (err == cases[i].want) {
            ok++;
        } else {
            print_error("%s: got %s, want %s\n", cases[i].name,
                        tml_strerror(err), tml_strerror(cases[i].want));
        }
    }
    /* Truncation at every byte and one trailing byte, on tele-max. */
    assert_non_null(sample_encode(4, &store, msg, sizeof msg, &len, &which));
    for (cut = 0; cut < len; cut++) {
        n++;
        ok += tml_tele_decode(msg, cut, &t) == TML_ERR_TRUNCATED;
    }
    msg[len] = 0x00;
    n++;
    ok += tml_tele_decode(msg, len + 1, &t) == TML_ERR_TRAILING;
    print_message("F2: %zu/%zu named malformed inputs rejected with the "
                  "expected reason\n", ok, n);
    assert_int_equal(ok, n);
}

/* up/tele version 1, the map form of agents older than the packed summary
 * (PROTOCOL.md "up/tele, version 1"): tml_tele_decode still accepts it,
 * with every rule its decoder had (the per-key vectors this file ran on
 * tele before a9260fb, and the health map's), and it is the same summary
 * as version 2. */
struct v1_case {
    const char *name;
    size_t key;            /* pair replaced (SIZE_MAX: none) */
    const uint8_t *value;  /* its new value */
    size_t vlen;
    const uint8_t *extra;  /* raw pairs appended */
    size_t elen, n_extra;
    enum tml_err want;
};

#define V1_VAL(name, key, v, want) {name, key, v, sizeof v, NULL, 0, 0, want}
#define V1_EXTRA(name, x, n, want)                                            \
    {name, (size_t)-1, NULL, 0, x, sizeof x, n, want}

static void
test_tele_v1_map_form_keeps_every_rule(void **state)
{
    /* What an agent of d50a232 (before lw) sent as tele-min. */
    static const uint8_t old_min[] = {
        0xae, 0x00, 0x01, 0x01, 0x01, 0x02, 0x00, 0x03, 0x00, 0x04,
        0x00, 0x05, 0x00, 0x06, 0x00, 0x07, 0x00, 0x08, 0x00, 0x09,
        0x00, 0x0a, 0x00, 0x0b, 0x00, 0x0c, 0x00, 0x0d, 0x00};
    static const uint8_t text[] = {0x61, 0x78}, zero[] = {0x00},
                         v0[] = {0x00}, v2[] = {0x02}, v3[] = {0x03},
                         five[] = {0x05},
                         two32[] = {0x1b, 0, 0, 0, 1, 0, 0, 0, 0},
                         nonmin[] = {0x18, 0x05}, tag[] = {0xc2, 0x41, 0x01},
                         flt[] = {0xf9, 0x3c, 0x00},
                         a_nonmin[] = {0x82, 0x18, 0x01, 0x01},
                         a_big[] = {0x81, 0x1b, 0, 0, 0, 1, 0, 0, 0, 0},
                         a_text[] = {0x81, 0x61, 0x78},
                         a_indef[] = {0x9f, 0x01, 0xff},
                         a_empty[] = {0x80},
                         h_no_temp[] = {0xa3, 1, 1, 2, 2, 4, 4},
                         h_no_ram[] = {0xa3, 2, 2, 3, 3, 4, 4},
                         h_hot[] = {0xa4, 1, 1, 2, 2, 3, 0x1a, 0x80, 0, 0, 0,
                                    4, 4},
                         h_cold[] = {0xa4, 1, 1, 2, 2, 3, 0x3a, 0x80, 0, 0, 0,
                                     4, 4},
                         h_text[] = {0xa4, 1, 1, 2, 2, 3, 0x61, 0x78, 4, 4},
                         h_dup[] = {0xa5, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4},
                         h_neg[] = {0xa5, 1, 1, 2, 2, 3, 3, 4, 4, 0x20, 0},
                         h_nonmin[] = {0xa4, 1, 0x18, 1, 2, 2, 3, 3, 4, 4},
                         h_unknown[] = {0xa5, 1, 1, 2, 2, 3, 0x24, 4, 4, 5,
                                        0x61, 0x78},
                         h_array[] = {0x84, 1, 2, 3, 4},
                         x_neg[] = {0x20, 0x00}, x_unknown[] = {0x13, 0x61,
                                                              0x78},
                         x_dup[] = {0x13, 0x00, 0x13, 0x00},
                         x_12[] = {0x13, 0, 0x14, 0, 0x15, 0, 0x16, 0,
                                   0x17, 0, 0x18, 0x18, 0, 0x18, 0x19, 0,
                                   0x18, 0x1a, 0, 0x18, 0x1b, 0, 0x18, 0x1c,
                                   0, 0x18, 0x1d, 0, 0x18, 0x1e, 0},
                         x_13[] = {0x13, 0, 0x14, 0, 0x15, 0, 0x16, 0,
                                   0x17, 0, 0x18, 0x18, 0, 0x18, 0x19, 0,
                                   0x18, 0x1a, 0, 0x18, 0x1b, 0, 0x18, 0x1c,
                                   0, 0x18, 0x1d, 0, 0x18, 0x1e, 0, 0x18,
                                   0x1f, 0};
    static uint8_t a33[2 + 33], a17[1 + 17];
    const struct v1_case cases[] = {
        V1_VAL("version 0", 0, v0, TML_ERR_VERSION),
        V1_VAL("version 3", 0, v3, TML_ERR_VERSION),
        V1_VAL("version 2 around a map body", 0, v2, TML_ERR_TYPE),
        V1_VAL("seq 0", 1, zero, TML_ERR_RANGE),
        V1_VAL("seq non-minimal", 1, nonmin, TML_ERR_NON_MINIMAL),
        V1_VAL("lw above seq", 1, five, TML_ERR_RANGE),
        V1_VAL("u32 given 2^32", 2, two32, TML_ERR_RANGE),
        V1_VAL("tag", 3, tag, TML_ERR_UNSUPPORTED),
        V1_VAL("float", 4, flt, TML_ERR_UNSUPPORTED),
        V1_VAL("33 classes", 14, a33, TML_ERR_OVERSIZE),
        V1_VAL("no classes", 14, a_empty, TML_OK),
        V1_VAL("17 confidence bins", 15, a17, TML_ERR_OVERSIZE),
        V1_VAL("17 latency bins", 16, a17, TML_ERR_OVERSIZE),
        V1_VAL("bin non-minimal", 15, a_nonmin, TML_ERR_NON_MINIMAL),
        V1_VAL("bin 2^32", 16, a_big, TML_ERR_RANGE),
        V1_VAL("class text", 14, a_text, TML_ERR_TYPE),
        V1_VAL("indefinite array", 14, a_indef, TML_ERR_INDEFINITE),
        V1_VAL("health without temp", 17, h_no_temp, TML_ERR_MISSING),
        V1_VAL("health without free_ram", 17, h_no_ram, TML_ERR_MISSING),
        V1_VAL("temp 2^31", 17, h_hot, TML_ERR_RANGE),
        V1_VAL("temp -2^31 - 1", 17, h_cold, TML_ERR_RANGE),
        V1_VAL("temp text", 17, h_text, TML_ERR_TYPE),
        V1_VAL("health duplicate key", 17, h_dup, TML_ERR_DUPLICATE),
        V1_VAL("health negative key", 17, h_neg, TML_ERR_UNKNOWN_CRITICAL),
        V1_VAL("health non-minimal", 17, h_nonmin, TML_ERR_NON_MINIMAL),
        V1_VAL("health unknown key", 17, h_unknown, TML_OK),
        V1_VAL("health array", 17, h_array, TML_ERR_TYPE),
        V1_VAL("lw 0", 18, zero, TML_ERR_RANGE),
        V1_EXTRA("negative key", x_neg, 1, TML_ERR_UNKNOWN_CRITICAL),
        V1_EXTRA("unknown key", x_unknown, 1, TML_OK),
        V1_EXTRA("unknown key twice", x_dup, 2, TML_ERR_DUPLICATE),
        V1_EXTRA("12 unknown keys", x_12, 12, TML_OK),
        V1_EXTRA("13 unknown keys (+ 14..17)", x_13, 13, TML_ERR_OVERSIZE),
    };
    struct tml_tele t, got;
    uint8_t v2buf[TML_MAX_MESSAGE];
    size_t i, len, olen, v2len = 0, n = 0, ok = 0, key;
    int max;

    (void)state;
    a33[0] = 0x98;
    a33[1] = 33;
    memset(a33 + 2, 0x01, 33);
    a17[0] = 0x91;
    memset(a17 + 1, 0x01, 17);
    /* Same summary as version 2, for both samples and the old agent's. */
    for (max = 0; max <= 1; max++) {
        sample_tele(&t, max != 0);
        t.epoch = 0; /* version 1 has no epoch */
        len = sample_tele_v1_encode(&t, msg, sizeof msg);
        assert_true(len > 0);
        assert_int_equal(tml_tele_decode(msg, len, &got), TML_OK);
        assert_int_equal(tml_tele_encode(&got, out, sizeof out, &olen),
                         TML_OK);
        assert_int_equal(tml_tele_encode(&t, v2buf, sizeof v2buf, &v2len),
                         TML_OK);
        assert_int_equal(olen, v2len);
        assert_memory_equal(out, v2buf, olen);
        print_message("tele-%s: version 1 %zu B, version 2 %zu B\n",
                      max ? "max" : "min", len, v2len);
    }
    assert_int_equal(tml_tele_decode(old_min, sizeof old_min, &got), TML_OK);
    sample_tele(&t, false);
    assert_int_equal(tml_tele_encode(&got, out, sizeof out, &olen), TML_OK);
    assert_int_equal(tml_tele_encode(&t, v2buf, sizeof v2buf, &v2len), TML_OK);
    assert_int_equal(olen, v2len);
    assert_memory_equal(out, v2buf, olen);

    /* tele-max in version 1: keys 0..18, pair i is key i. */
    sample_tele(&t, true);
    len = sample_tele_v1_encode(&t, msg, sizeof msg);
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct edit ed = NO_EDIT;
        enum tml_err err;

        ed.repl = cases[i].key;
        ed.value = cases[i].value;
        ed.vlen = cases[i].vlen;
        ed.extra = cases[i].extra;
        ed.elen = cases[i].elen;
        ed.n_extra = cases[i].n_extra;
        olen = rebuild(msg, len, &ed, out, sizeof out);
        if (cases[i].key == 1 && cases[i].value == five) {
            assert_int_equal(tml_tele_decode(out, olen, &got), TML_ERR_RANGE);
        }
        err = tml_tele_decode(out, olen, &got);
        n++;
        ok += err == cases[i].want;
        if (err != cases[i].want) {
            print_error("v1 %s: got %s, want %s\n", cases[i].name,
                        tml_strerror(err), tml_strerror(cases[i].want));
        }
    }
    /* Every key: dropped (0..13 are required), twice, of the wrong type. */
    for (key = 0; key <= 18; key++) {
        struct edit ed = NO_EDIT;
        enum tml_err want[3];
        enum tml_err err;
        int k;

        want[0] = key <= 13 ? TML_ERR_MISSING : TML_OK;
        want[1] = TML_ERR_DUPLICATE;
        want[2] = key == 0 ? TML_ERR_VERSION : TML_ERR_TYPE;
        for (k = 0; k < 3; k++) {
            ed = NO_EDIT;
            if (k == 0) {
                ed.drop = key;
            } else if (k == 1) {
                ed.dup = key;
            } else {
                ed.repl = key;
                ed.value = text;
                ed.vlen = sizeof text;
            }
            olen = rebuild(msg, len, &ed, out, sizeof out);
            err = tml_tele_decode(out, olen, &got);
            n++;
            ok += err == want[k];
            if (err != want[k]) {
                print_error("v1 key %zu %s: got %s\n", key,
                            k == 0 ? "dropped" : k == 1 ? "twice" : "text",
                            tml_strerror(err));
            }
        }
    }
    /* Truncation at every byte, one trailing byte. */
    for (i = 0; i < len; i++) {
        n++;
        ok += tml_tele_decode(msg, i, &got) == TML_ERR_TRUNCATED;
    }
    msg[len] = 0x00;
    n++;
    ok += tml_tele_decode(msg, len + 1, &got) == TML_ERR_TRAILING;
    print_message("tele version 1: %zu/%zu vectors decoded or rejected with "
                  "the expected reason\n", ok, n);
    assert_int_equal(ok, n);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rebuild_without_edits_decodes),
        cmocka_unit_test(test_tele_summary_rejects_malformed_packing),
        cmocka_unit_test(test_every_strict_prefix_is_truncated),
        cmocka_unit_test(test_trailing_bytes_rejected),
        cmocka_unit_test(test_missing_required_field_at_every_key),
        cmocka_unit_test(test_duplicate_key_rejected_at_every_key),
        cmocka_unit_test(test_wrong_type_rejected_at_every_key),
        cmocka_unit_test(test_tag_float_simple_rejected_at_every_key),
        cmocka_unit_test(test_unknown_optional_keys_skipped),
        cmocka_unit_test(test_unknown_keys_keep_values_hello),
        cmocka_unit_test(test_unknown_duplicate_and_too_many_unknown_keys),
        cmocka_unit_test(test_unknown_critical_key_rejected),
        cmocka_unit_test(test_text_keys_rejected),
        cmocka_unit_test(test_wrong_version_rejected),
        cmocka_unit_test(test_non_minimal_value_rejected_at_every_uint),
        cmocka_unit_test(test_indefinite_and_deep_values_rejected),
        cmocka_unit_test(test_oversize_strings_arrays_and_messages),
        cmocka_unit_test(test_range_violations_rejected_by_both_sides),
        cmocka_unit_test(test_low_water_above_seq_rejected_by_both_sides),
        cmocka_unit_test(test_epoch_roundtrips_and_zero_is_refused),
        cmocka_unit_test(test_encoders_nospace_at_every_short_capacity),
        cmocka_unit_test(test_kind_dependent_fields_required),
        cmocka_unit_test(test_every_byte_flip_gives_defined_result),
        cmocka_unit_test(
            test_f2_catalogue_named_inputs_rejected_with_reason),
        cmocka_unit_test(test_tele_v1_map_form_keeps_every_rule),
    };

    return cmocka_run_group_tests_name("proto_reject", tests, setup, NULL);
}
