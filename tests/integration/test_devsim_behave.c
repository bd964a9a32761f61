/*
 * test_devsim_behave.c: tml-devsim's behaviour file parser (behave.c) and
 * its synthetic model (synth.c). The statistical tests use fixed seeds and
 * tolerances wide enough for the seed but narrow enough that a rule that is
 * not applied (or applied to the wrong model) fails them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "behave.h"
#include "synth.h"

static const char example[] =
    "; devsim behaviour\n"
    "[default]\n"
    "confidence = 9000\n"
    "misclass = 2%\n"
    "\n"
    "[kws@3]\n"
    "confidence = 5500\n"
    "wrong_confidence = 4000\n"
    "misclass = 0.30\n"
    "flag_share = 1\n"
    "selftest = fail\n"
    "\n"
    "[kws]\n"
    "confidence = 8000\n"
    "confirm = never\n"
    "class_weights = 1, 2, 3, 4\n";

static void
test_behave_parses_example_and_looks_up_most_specific(void **state)
{
    struct behave b;
    const struct behave_rule *r;

    (void)state;
    behave_init(&b);
    assert_int_equal(behave_parse_string(&b, example), 0);
    assert_int_equal(b.n_rules, 3);

    r = behave_lookup(&b, "kws", 3, 3);
    assert_int_equal(r->conf_bp, 5500);
    assert_int_equal(r->misclass_ppm, 300000);
    assert_int_equal(r->flag_share_ppm, 1000000);
    assert_false(r->selftest_ok);

    r = behave_lookup(&b, "kws", 3, 4);
    assert_int_equal(r->conf_bp, 8000);
    assert_true(r->selftest_ok);
    assert_int_equal(r->confirm, BEHAVE_CONFIRM_NEVER);
    assert_int_equal(r->n_weights, 4);
    assert_int_equal(r->weights[3], 4);

    r = behave_lookup(&b, "other", 5, 3);
    assert_true(r->is_default);
    assert_int_equal(r->conf_bp, 9000);
    assert_int_equal(r->misclass_ppm, 20000);

    r = behave_lookup(&b, NULL, 0, 0);
    assert_true(r->is_default);
}

static void
test_behave_rejects_bad_input_with_line(void **state)
{
    static const struct {
        const char *text;
        int line;
    } bad[] = {
        {"[x]\nconfidence = 10001\n", 2},
        {"[x]\nmisclass = 101%\n", 2},
        {"[x]\nmisclass = 0.1234567\n", 2},
        {"[x]\nmisclass = .5\n", 2},
        {"[x]\nselftest = maybe\n", 2},
        {"[x]\n\ncolour = red\n", 3},
        {"[x@]\nconfidence = 1\n", 2},
        {"[x@-1]\nconfidence = 1\n", 2},
        {"[@3]\nconfidence = 1\n", 2},
        {"[x]\nclass_weights = 1,,2\n", 2},
        {"[x]\nlatency_us = -5\n", 2},
        {"[x]\nconfidence\n", 2},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct behave b;
        behave_init(&b);
        assert_int_equal(behave_parse_string(&b, bad[i].text), -1);
        assert_int_equal(b.err_line, bad[i].line);
        assert_non_null(b.err_what);
    }
}

static void
test_behave_caps_the_number_of_rules(void **state)
{
    char text[8192];
    size_t len = 0;
    struct behave b;
    int i;

    (void)state;
    for (i = 0; i <= BEHAVE_MAX_RULES; i++)
        len += (size_t)snprintf(text + len, sizeof(text) - len,
                                "[m@%d]\nconfidence = 1\n", i);
    behave_init(&b);
    assert_int_equal(behave_parse_string(&b, text), -1);
    assert_int_equal(b.n_rules, BEHAVE_MAX_RULES);
}

/* Mean confidence and flagged share over many draws follow the rule. */
static void
test_synth_bad_model_gives_visibly_worse_telemetry(void **state)
{
    struct behave b;
    const struct behave_rule *good, *bad;
    struct synth_rng r;
    uint64_t conf_good = 0, conf_bad = 0;
    uint32_t wrong_good = 0, wrong_bad = 0, flag_bad = 0, low_bad = 0;
    const uint32_t n = 20000;
    uint32_t i;

    (void)state;
    behave_init(&b);
    assert_int_equal(behave_parse_string(&b, example), 0);
    good = behave_lookup(&b, "kws", 3, 2);
    bad = behave_lookup(&b, "kws", 3, 3);
    synth_seed(&r, 42);
    for (i = 0; i < n; i++) {
        struct synth_inference g, x;
        synth_infer(&r, good, 4, &g);
        synth_infer(&r, bad, 4, &x);
        conf_good += g.confidence_bp;
        conf_bad += x.confidence_bp;
        wrong_good += g.is_wrong;
        wrong_bad += x.is_wrong;
        flag_bad += x.is_flagged;
        low_bad += x.confidence_bp < 5000;
        assert_true(x.predicted < 4 && x.truth < 4);
        assert_true(x.is_wrong == (x.predicted != x.truth));
    }
    /* good: kws (any version) -> conf 8000, misclass default 2 % */
    assert_in_range(conf_good / n, 7900, 8100);
    assert_in_range(wrong_good, n * 1 / 100, n * 3 / 100);
    /* bad: 70 % at ~5500, 30 % at ~4000 -> mean ~5050 */
    assert_in_range(conf_bad / n, 4950, 5150);
    assert_in_range(wrong_bad, n * 28 / 100, n * 32 / 100);
    assert_int_equal(flag_bad, wrong_bad); /* flag_share = 1 */
    assert_true(low_bad > n / 4);
}

static void
test_synth_class_weights_shape_the_truth(void **state)
{
    struct behave b;
    const struct behave_rule *rule;
    struct synth_rng r;
    uint32_t counts[4] = {0};
    const uint32_t n = 40000;
    uint32_t i;

    (void)state;
    behave_init(&b);
    assert_int_equal(behave_parse_string(&b, example), 0);
    rule = behave_lookup(&b, "kws", 3, 9); /* weights 1:2:3:4 */
    synth_seed(&r, 7);
    for (i = 0; i < n; i++) {
        struct synth_inference x;
        synth_infer(&r, rule, 4, &x);
        counts[x.truth]++;
    }
    for (i = 0; i < 4; i++)
        assert_in_range(counts[i], n * (i + 1) / 10 - n / 50,
                        n * (i + 1) / 10 + n / 50);
}

static void
test_synth_input_is_a_class_dependent_tone(void **state)
{
    uint8_t a[512], b[512], a2[512];
    struct synth_rng r;
    size_t i, diff = 0;
    int32_t peak = 0;

    (void)state;
    synth_seed(&r, 1);
    synth_input(&r, 0, 8000, a, sizeof(a));
    synth_input(&r, 3, 8000, b, sizeof(b));
    synth_seed(&r, 1);
    synth_input(&r, 0, 8000, a2, sizeof(a2));
    assert_memory_equal(a, a2, sizeof(a)); /* deterministic per seed */
    for (i = 0; i < sizeof(a); i += 2) {
        int16_t va = (int16_t)(uint16_t)(a[i] | a[i + 1] << 8);
        int16_t vb = (int16_t)(uint16_t)(b[i] | b[i + 1] << 8);
        if (va > peak)
            peak = va;
        if (va - vb > 3000 || vb - va > 3000)
            diff++;
    }
    assert_in_range(peak, 8000, 10000);
    assert_true(diff > 50);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_behave_parses_example_and_looks_up_most_specific),
        cmocka_unit_test(test_behave_rejects_bad_input_with_line),
        cmocka_unit_test(test_behave_caps_the_number_of_rules),
        cmocka_unit_test(test_synth_bad_model_gives_visibly_worse_telemetry),
        cmocka_unit_test(test_synth_class_weights_shape_the_truth),
        cmocka_unit_test(test_synth_input_is_a_class_dependent_tone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
