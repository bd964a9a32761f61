/*
 * test_health.c: the rollout health gate (daemon/health.c) on synthetic
 * aggregates: no data, too little data, healthy, a 3x low-confidence
 * regression (issue 5 "must show"), borderline rates that are and are not
 * significant, flagged/error/latency regressions, and the no-baseline case.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "health.h"

/* An aggregate with n inferences, the given event rates (per mille) and all
 * latencies in one log2 bin. */
static struct health_agg
agg(uint32_t devices, uint64_t n, unsigned low_pm, unsigned flag_pm,
    unsigned err_pm, size_t lat_bin)
{
    struct health_agg a;

    memset(&a, 0, sizeof(a));
    a.n_devices = devices;
    a.n_inferences = n;
    a.n_low_conf = n * low_pm / 1000;
    a.n_flagged = n * flag_pm / 1000;
    a.n_errors = n * err_pm / 1000;
    a.n_lat_bins = 8;
    a.lat_hist[lat_bin] = n;
    return a;
}

static void
test_health_holds_without_any_data(void **state)
{
    struct health_policy p;
    struct health_agg c, b;
    struct health_result r;

    (void)state;
    health_policy_default(&p);
    memset(&c, 0, sizeof(c));
    memset(&b, 0, sizeof(b));
    health_evaluate(&p, &c, &b, &r);
    assert_int_equal(r.verdict, HEALTH_HOLD);
    assert_int_equal(r.check, HEALTH_CHECK_DATA);
    assert_non_null(strstr(r.reason, "waiting for data"));
    assert_true(r.p95_new_us < 0);
}

static void
test_health_holds_when_canary_has_too_few_inferences(void **state)
{
    struct health_policy p;
    struct health_agg c, b;
    struct health_result r;

    (void)state;
    health_policy_default(&p);
    /* Even a terrible rate does not fail the gate on 499 inferences: the
     * minimum sample size comes first. */
    c = agg(5, p.min_inferences - 1, 900, 0, 0, 3);
    b = agg(50, 100000, 50, 0, 0, 3);
    health_evaluate(&p, &c, &b, &r);
    assert_int_equal(r.verdict, HEALTH_HOLD);
    assert_non_null(strstr(r.reason, "new model"));
}

static void
test_health_holds_when_canary_has_too_few_devices(void **state)
{
    struct health_policy p;
    struct health_agg c, b;
    struct health_result r;

    (void)state;
    health_policy_default(&p);
    c = agg(p.min_devices - 1, 100000, 50, 0, 0, 3);
    b = agg(50, 100000, 50, 0, 0, 3);
    health_evaluate(&p, &c, &b, &r);
    assert_int_equal(r.verdict, HEALTH_HOLD);
}

static void
test_health_holds_when_baseline_is_thin(void **state)
{
    struct health_policy p;
    struct health_agg c, b;
    struct health_result r;

    (void)state;
    health_policy_default(&p);
    c = agg(5, 10000, 50, 0, 0, 3);
    b = agg(1, 100, 50, 0, 0, 3);
    health_evaluate(&p, &c, &b, &r);
    assert_int_equal(r.verdict, HEALTH_HOLD);
    assert_non_null(strstr(r.reason, "old model"));
}

static void
test_health_advances_on_equal_rates(void **state)
{
    struct health_policy p;
    struct health_agg c, b;
    struct health_result r;

    (void)state;
    health_policy_default(&p);
    c = agg(5, 5000, 50, 10, 1, 3);
    b = agg(95, 95000, 50, 10, 1, 3);
    health_evaluate(&p, &c, &b, &r);
    assert_int_equal(r.verdict, HEALTH_ADVANCE);
    assert_int_equal(r.check, HEALTH_CHECK_NONE);
    assert_non_null(strstr(r.reason, "healthy"));
    assert_true(r.z_low_conf < 0);
}

/* Issue 5: a model that raises the low-confidence rate 3x pauses by the
 * health gate, with the reason shown. */
static void
test_health_fails_on_threefold_low_confidence(void **state)
{
    struct health_policy p;
    struct health_agg c, b;
    struct health_result r;

    (void)state;
    health_policy_default(&p);
    c = agg(5, 3000, 150, 10, 0, 3);
    b = agg(95, 57000, 50, 10, 0, 3);
    health_evaluate(&p, &c, &b, &r);
    assert_int_equal(r.verdict, HEALTH_FAIL);
    assert_int_equal(r.check, HEALTH_CHECK_LOW_CONF);
    assert_true(r.z_low_conf > p.z_crit);
    assert_non_null(strstr(r.reason, "low-confidence rate 15.00%"));
    assert_non_null(strstr(r.reason, "5.00%"));
    assert_non_null(strstr(r.reason, "3.0x"));
}

/* 3x from a small baseline (1.5 % -> 4.5 %) with a canary-sized sample:
 * still caught once the canaries have a few thousand inferences. */
static void
test_health_fails_on_threefold_from_small_baseline(void **state)
{
    struct health_policy p;
    struct health_agg c, b;
    struct health_result r;

    (void)state;
    health_policy_default(&p);
    c = agg(5, 4000, 45, 10, 0, 3);
    b = agg(95, 76000, 15, 10, 0, 3);
    health_evaluate(&p, &c, &b, &r);
    assert_int_equal(r.verdict, HEALTH_FAIL);
    assert_int_equal(r.check, HEALTH_CHECK_LOW_CONF);
    /* 2x from the same baseline stays inside the margin. */
    c = agg(5, 4000, 30, 10, 0, 3);
    health_evaluate(&p, &c, &b, &r);
    assert_int_equal(r.verdict, HEALTH_ADVANCE);
}

/* Borderline: the same observed rates (5 % -> 10.5 %, past the 8.5 %
 * margin) are noise on 600 inferences and evidence on 100000. */
static void
test_health_borderline_depends_on_sample_size(void **state)
{
    struct health_policy p;
    struct health_agg c, b;
    struct health_result r;

    (void)state;
    health_policy_default(&p);
    c = agg(3, 600, 100, 0, 0, 3);
    b = agg(3, 600, 50, 0, 0, 3);
    health_evaluate(&p, &c, &b, &r);
    assert_int_equal(r.verdict, HEALTH_ADVANCE);
    assert_true(r.z_low_conf > 0);
    assert_true(r.z_low_conf < p.z_crit);

    c = agg(30, 100000, 100, 0, 0, 3);
    b = agg(30, 100000, 50, 0, 0, 3);
    health_evaluate(&p, &c, &b, &r);
    assert_int_equal(r.verdict, HEALTH_FAIL);
    assert_int_equal(r.check, HEALTH_CHECK_LOW_CONF);
}

/* Borderline the other way: a rate inside the margin never fails, however
 * large the sample. */
static void
test_health_increase_within_margin_advances_on_huge_sample(void **state)
{
    struct health_policy p;
    struct health_agg c, b;
    struct health_result r;

    (void)state;
    health_policy_default(&p);
    c = agg(100, 10000000, 84, 0, 0, 3); /* 8.4 % <= 5 % * 1.5 + 1 % */
    b = agg(100, 10000000, 50, 0, 0, 3);
    health_evaluate(&p, &c, &b, &r);
    assert_int_equal(r.verdict, HEALTH_ADVANCE);
}

static void
test_health_fails_on_flagged_regression(void **state)
{
    struct health_policy p;
    struct health_agg c, b;
    struct health_result r;

    (void)state;
    health_policy_default(&p);
    c = agg(5, 5000, 50, 120, 0, 3);
    b = agg(50, 50000, 50, 20, 0, 3);
    health_evaluate(&p, &c, &b, &r);
    assert_int_equal(r.verdict, HEALTH_FAIL);
    assert_int_equal(r.check, HEALTH_CHECK_FLAGGED);
    assert_non_null(strstr(r.reason, "flagged-misclassified"));
}

static void
test_health_fails_on_error_regression(void **state)
{
    struct health_policy p;
    struct health_agg c, b;
    struct health_result r;

    (void)state;
    health_policy_default(&p);
    c = agg(5, 5000, 50, 20, 60, 3);
    b = agg(50, 50000, 50, 20, 1, 3);
    health_evaluate(&p, &c, &b, &r);
    assert_int_equal(r.verdict, HEALTH_FAIL);
    assert_int_equal(r.check, HEALTH_CHECK_ERRORS);
}

static void
test_health_disabled_margin_is_not_checked(void **state)
{
    struct health_policy p;
    struct health_agg c, b;
    struct health_result r;

    (void)state;
    health_policy_default(&p);
    p.errors.enabled = false;
    c = agg(5, 5000, 50, 20, 60, 3);
    b = agg(50, 50000, 50, 20, 1, 3);
    health_evaluate(&p, &c, &b, &r);
    assert_int_equal(r.verdict, HEALTH_ADVANCE);
}

static void
test_health_fails_on_latency_regression(void **state)
{
    struct health_policy p;
    struct health_agg c, b;
    struct health_result r;

    (void)state;
    health_policy_default(&p);
    c = agg(5, 5000, 50, 0, 0, 5); /* [16, 32) ms */
    b = agg(50, 50000, 50, 0, 0, 3); /* [4, 8) ms */
    health_evaluate(&p, &c, &b, &r);
    assert_int_equal(r.verdict, HEALTH_FAIL);
    assert_int_equal(r.check, HEALTH_CHECK_LATENCY);
    assert_non_null(strstr(r.reason, "latency p95"));
    assert_true(r.p95_new_us > r.p95_old_us * p.lat_p95_ratio);

    /* The same shift inside the bound (ratio 4 allowed) advances. */
    p.lat_p95_ratio = 4.0;
    health_evaluate(&p, &c, &b, &r);
    assert_int_equal(r.verdict, HEALTH_ADVANCE);
}

static void
test_health_p95_interpolates_inside_log2_bins(void **state)
{
    struct health_agg a;

    (void)state;
    memset(&a, 0, sizeof(a));
    assert_true(health_lat_p95_us(&a) < 0);
    a.n_lat_bins = 4;
    a.lat_hist[0] = 90; /* [0, 1) ms */
    a.lat_hist[3] = 10; /* [4, 8) ms */
    /* rank 95 = half-way through bin 3: 6 ms */
    assert_true(fabs(health_lat_p95_us(&a) - 6000.0) < 1e-6);
    a.lat_hist[3] = 0;
    /* all in bin 0: 95 % of 1 ms */
    assert_true(fabs(health_lat_p95_us(&a) - 950.0) < 1e-6);
}

static void
test_health_no_baseline_uses_ceilings(void **state)
{
    struct health_policy p;
    struct health_agg c, b;
    struct health_result r;

    (void)state;
    health_policy_default(&p);
    memset(&b, 0, sizeof(b));
    c = agg(10, 10000, 50, 10, 0, 3);
    health_evaluate(&p, &c, &b, &r);
    assert_int_equal(r.verdict, HEALTH_ADVANCE);
    assert_non_null(strstr(r.reason, "no baseline"));

    c = agg(10, 10000, 700, 10, 0, 3);
    health_evaluate(&p, &c, &b, &r);
    assert_int_equal(r.verdict, HEALTH_FAIL);
    assert_int_equal(r.check, HEALTH_CHECK_LOW_CONF);
    assert_non_null(strstr(r.reason, "ceiling"));

    p.allow_no_baseline = false;
    c = agg(10, 10000, 50, 10, 0, 3);
    health_evaluate(&p, &c, &b, &r);
    assert_int_equal(r.verdict, HEALTH_HOLD);
}

static void
test_health_z_is_finite_with_zero_events(void **state)
{
    double z;

    (void)state;
    z = health_z_noninferior(0, 1000, 0, 1000, 0.0, 0.0);
    assert_true(isfinite(z));
    assert_true(fabs(z) < 1e-9);
    z = health_z_noninferior(0, 1000, 0, 1000, 0.02, 0.5);
    assert_true(isfinite(z) && z < 0);
    /* More events than inferences (hostile input) are clamped. */
    z = health_z_noninferior(5000, 1000, 0, 1000, 0.0, 0.0);
    assert_true(isfinite(z) && z > 10);
    assert_true(health_z_noninferior(1, 0, 1, 10, 0, 0) == 0);
}

static void
test_health_policy_validation(void **state)
{
    struct health_policy p;

    (void)state;
    health_policy_default(&p);
    assert_true(health_policy_valid(&p));
    p.z_crit = 0;
    assert_false(health_policy_valid(&p));
    health_policy_default(&p);
    p.low_conf.abs = NAN;
    assert_false(health_policy_valid(&p));
    health_policy_default(&p);
    p.lat_p95_ratio = 0.5;
    assert_false(health_policy_valid(&p));
    health_policy_default(&p);
    p.max_error_rate = 2;
    assert_false(health_policy_valid(&p));
    assert_false(health_policy_valid(NULL));
}

static void
test_health_agg_add_tele_sums_and_bounds_bins(void **state)
{
    struct health_agg a;
    struct tml_tele t;

    (void)state;
    memset(&a, 0, sizeof(a));
    memset(&t, 0, sizeof(t));
    t.n_inferences = 100;
    t.n_low_conf = 7;
    t.n_flagged = 2;
    t.n_errors = 1;
    t.lat_mean_us = 3000;
    t.n_lat_bins = 4;
    t.lat_hist[2] = 100;
    t.n_conf_bins = 10;
    t.conf_hist[9] = 100;
    health_agg_add_tele(&a, &t);
    /* A second summary with more bins than the first adds only the
     * overlap. */
    t.n_lat_bins = TML_MAX_BINS;
    t.lat_hist[TML_MAX_BINS - 1] = 55;
    health_agg_add_tele(&a, &t);
    assert_int_equal(a.n_inferences, 200);
    assert_int_equal(a.n_low_conf, 14);
    assert_int_equal(a.n_flagged, 4);
    assert_int_equal(a.n_errors, 2);
    assert_int_equal(a.lat_sum_us, 600000);
    assert_int_equal(a.n_lat_bins, 4);
    assert_int_equal(a.lat_hist[2], 200);
    assert_int_equal(a.lat_hist[TML_MAX_BINS - 1], 0);
    assert_int_equal(a.conf_hist[9], 200);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_holds_without_any_data),
        cmocka_unit_test(test_health_holds_when_canary_has_too_few_inferences),
        cmocka_unit_test(test_health_holds_when_canary_has_too_few_devices),
        cmocka_unit_test(test_health_holds_when_baseline_is_thin),
        cmocka_unit_test(test_health_advances_on_equal_rates),
        cmocka_unit_test(test_health_fails_on_threefold_low_confidence),
        cmocka_unit_test(test_health_fails_on_threefold_from_small_baseline),
        cmocka_unit_test(test_health_borderline_depends_on_sample_size),
        cmocka_unit_test(
            test_health_increase_within_margin_advances_on_huge_sample),
        cmocka_unit_test(test_health_fails_on_flagged_regression),
        cmocka_unit_test(test_health_fails_on_error_regression),
        cmocka_unit_test(test_health_disabled_margin_is_not_checked),
        cmocka_unit_test(test_health_fails_on_latency_regression),
        cmocka_unit_test(test_health_p95_interpolates_inside_log2_bins),
        cmocka_unit_test(test_health_no_baseline_uses_ceilings),
        cmocka_unit_test(test_health_z_is_finite_with_zero_events),
        cmocka_unit_test(test_health_policy_validation),
        cmocka_unit_test(test_health_agg_add_tele_sums_and_bounds_bins),
    };
    return cmocka_run_group_tests_name("ota_health_gate", tests, NULL, NULL);
}
