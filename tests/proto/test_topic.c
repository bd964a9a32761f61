/*
 * test_topic.c: topic parse/build and device id rules (PROTOCOL.md
 * "Topics"), including ids that would break the broker ACL (I-series:
 * wildcards '+' '#', level separator '/', non-UTF-8, too long).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tml/proto.h"

static enum tml_err
parse(const char *t, struct tml_topic *out)
{
    return tml_topic_parse(t, strlen(t), out);
}

static void
test_topic_build_and_parse_every_kind(void **state)
{
    static const struct {
        enum tml_dir dir;
        enum tml_kind kind;
        const char *topic;
    } ok[] = {
        {TML_DIR_UP, TML_KIND_HELLO, "tml/v1/dev-1/up/hello"},
        {TML_DIR_UP, TML_KIND_STATE, "tml/v1/dev-1/up/state"},
        {TML_DIR_UP, TML_KIND_TELE, "tml/v1/dev-1/up/tele"},
        {TML_DIR_UP, TML_KIND_SAMPLE, "tml/v1/dev-1/up/sample"},
        {TML_DIR_UP, TML_KIND_OTA, "tml/v1/dev-1/up/ota"},
        {TML_DIR_DOWN, TML_KIND_OTA, "tml/v1/dev-1/down/ota"},
        {TML_DIR_DOWN, TML_KIND_ACK, "tml/v1/dev-1/down/ack"},
        {TML_DIR_DOWN, TML_KIND_CMD, "tml/v1/dev-1/down/cmd"},
    };
    char buf[TML_MAX_TOPIC + 1];
    size_t i, len;

    (void)state;
    for (i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct tml_topic t;

        assert_int_equal(tml_topic_build(buf, sizeof buf, "dev-1", 5,
                                         ok[i].dir, ok[i].kind, &len),
                         TML_OK);
        assert_string_equal(buf, ok[i].topic);
        assert_int_equal(len, strlen(ok[i].topic));
        assert_int_equal(parse(ok[i].topic, &t), TML_OK);
        assert_int_equal(t.dir, ok[i].dir);
        assert_int_equal(t.kind, ok[i].kind);
        assert_int_equal(t.dev.len, 5);
        assert_memory_equal(t.dev.p, "dev-1", 5);
        assert_string_equal(tml_kind_name(t.kind),
                            strrchr(ok[i].topic, '/') + 1);
    }
}

static void
test_topic_kinds_only_in_their_direction(void **state)
{
    static const char *const bad[] = {
        "tml/v1/d/down/hello", "tml/v1/d/down/state", "tml/v1/d/down/tele",
        "tml/v1/d/down/sample", "tml/v1/d/up/ack",    "tml/v1/d/up/cmd",
    };
    char buf[TML_MAX_TOPIC + 1];
    struct tml_topic t;
    size_t i, len;

    (void)state;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(parse(bad[i], &t), TML_ERR_TOPIC);
    }
    assert_int_equal(tml_topic_build(buf, sizeof buf, "d", 1, TML_DIR_DOWN,
                                     TML_KIND_TELE, &len),
                     TML_ERR_TOPIC);
    assert_int_equal(tml_topic_build(buf, sizeof buf, "d", 1, TML_DIR_UP,
                                     TML_KIND_ACK, &len),
                     TML_ERR_TOPIC);
    assert_int_equal(tml_topic_build(buf, sizeof buf, "d", 1, TML_DIR_UP,
                                     TML_KIND__COUNT, &len),
                     TML_ERR_INVAL);
    assert_int_equal(tml_topic_build(buf, sizeof buf, "d", 1,
                                     (enum tml_dir)2, TML_KIND_OTA, &len),
                     TML_ERR_INVAL);
}

static void
test_topic_malformed_rejected(void **state)
{
    static const char *const bad[] = {
        "",
        "tml/v1/",
        "tml/v1/dev",
        "tml/v1/dev/up",
        "tml/v1/dev/up/",
        "tml/v2/dev/up/hello",
        "TML/v1/dev/up/hello",
        "/tml/v1/dev/up/hello",
        "tml/v1//up/hello",
        "tml/v1/dev/up/hello/",
        "tml/v1/dev/up/hello/x",
        "tml/v1/dev/sideways/hello",
        "tml/v1/dev/up/Hello",
        "tml/v1/dev/up/hell",
        "tml/v1/dev/up/helloo",
        "tml/v1/+/up/hello",
        "tml/v1/#",
        "tml/v1/dev/+/hello",
        "tml/v1/dev/up/#",
        "tml/v1/./up/hello",
        "tml/v1/../up/hello",
        "tml/v1/d\xc3\xa9v/up/hello",
        "tml/v1/d\xff/up/hello",
        "tml/v1/a b/up/hello",
        "$SYS/v1/dev/up/hello",
    };
    struct tml_topic t;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(parse(bad[i], &t), TML_ERR_TOPIC);
    }
    /* An embedded NUL in the device id or the kind. */
    assert_int_equal(tml_topic_parse("tml/v1/d\0v/up/hello", 19, &t),
                     TML_ERR_TOPIC);
    assert_int_equal(tml_topic_parse("tml/v1/dev/up/hello\0", 20, &t),
                     TML_ERR_TOPIC);
    assert_int_equal(tml_topic_parse(NULL, 0, &t), TML_ERR_INVAL);
}

static void
test_device_id_rules(void **state)
{
    static const char *const good[] = {"a", "A-Z_0.9", "..a", ".x",
                                       "turbine-17", "a..", "-"};
    static const char *const bad[] = {
        "",   ".",  "..", "a/b", "a+b", "a#b", "a b", "a\tb", "\xc3\xa9",
        "\xff", "a:b", "a\\b", "a*b", "a$",
    };
    char id[TML_MAX_DEVICE_ID + 2];
    char buf[TML_MAX_TOPIC + 1];
    struct tml_topic t;
    size_t i, len;

    (void)state;
    for (i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_true(tml_device_id_valid(good[i], strlen(good[i])));
    }
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(tml_device_id_valid(bad[i], strlen(bad[i])));
        assert_int_equal(tml_topic_build(buf, sizeof buf, bad[i],
                                         strlen(bad[i]), TML_DIR_UP,
                                         TML_KIND_HELLO, &len),
                         TML_ERR_TOPIC);
    }
    assert_false(tml_device_id_valid(NULL, 3));
    /* 64 bytes is the limit; the longest topic still fits TML_MAX_TOPIC. */
    memset(id, 'x', sizeof id);
    assert_true(tml_device_id_valid(id, TML_MAX_DEVICE_ID));
    assert_false(tml_device_id_valid(id, TML_MAX_DEVICE_ID + 1));
    assert_int_equal(tml_topic_build(buf, sizeof buf, id, TML_MAX_DEVICE_ID,
                                     TML_DIR_UP, TML_KIND_SAMPLE, &len),
                     TML_OK);
    assert_true(len <= TML_MAX_TOPIC);
    assert_int_equal(parse(buf, &t), TML_OK);
    assert_int_equal(t.dev.len, TML_MAX_DEVICE_ID);
    assert_int_equal(tml_topic_build(buf, sizeof buf, id,
                                     TML_MAX_DEVICE_ID + 1, TML_DIR_UP,
                                     TML_KIND_SAMPLE, &len),
                     TML_ERR_TOPIC);
    /* A topic longer than TML_MAX_TOPIC is refused outright. */
    {
        char longt[TML_MAX_TOPIC + 8];

        memset(longt, 'a', sizeof longt);
        memcpy(longt, "tml/v1/", 7);
        assert_int_equal(tml_topic_parse(longt, sizeof longt, &t),
                         TML_ERR_TOPIC);
    }
}

static void
test_topic_build_nospace_and_nul(void **state)
{
    char buf[32];
    size_t len = 0, cap;

    (void)state;
    /* "tml/v1/dev/up/tele" is 18 bytes + NUL. */
    for (cap = 0; cap < 19; cap++) {
        memset(buf, 'Z', sizeof buf);
        assert_int_equal(tml_topic_build(buf, cap, "dev", 3, TML_DIR_UP,
                                         TML_KIND_TELE, &len),
                         TML_ERR_NOSPACE);
        assert_int_equal(buf[0], 'Z');
    }
    assert_int_equal(tml_topic_build(buf, 19, "dev", 3, TML_DIR_UP,
                                     TML_KIND_TELE, &len),
                     TML_OK);
    assert_int_equal(len, 18);
    assert_int_equal(buf[18], '\0');
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topic_build_and_parse_every_kind),
        cmocka_unit_test(test_topic_kinds_only_in_their_direction),
        cmocka_unit_test(test_topic_malformed_rejected),
        cmocka_unit_test(test_device_id_rules),
        cmocka_unit_test(test_topic_build_nospace_and_nul),
    };

    return cmocka_run_group_tests_name("proto_topic", tests, NULL, NULL);
}
