/*
 * health.h: the model-aware health gate of a rollout.
 *
 * Before a rollout wave advances, the field telemetry of the devices that run
 * the new model (the "canary" group) is compared with the telemetry of the
 * same target's devices still on the old model (the "baseline" group) over
 * the same window. The gate answers advance, hold (not enough data to decide)
 * or fail, always with a reason a human can read in `tmlctl rollout status`.
 *
 * Pure C11: no I/O, no clock, no allocation. The caller (ota.c) builds the
 * two aggregates from SQLite; the tests build them by hand.
 *
 * Statistics (docs/ota.md explains the choice):
 *  - each rate (low-confidence, flagged-misclassified, inference errors) is
 *    tested with a one-sided two-proportion z-test against a non-inferiority
 *    margin: H0 "p_new <= p_old * (1 + rel) + abs", rejected (gate fails)
 *    when z > z_crit. The standard error is unpooled (the null hypothesis is
 *    not "equal rates") and uses Agresti-Caffo smoothed rates, so a group
 *    with zero events does not give a zero variance;
 *  - latency p95, interpolated inside the log2 histogram bins of
 *    struct tml_tele, must stay under p95_old * lat_p95_ratio +
 *    lat_p95_slack_us;
 *  - below min_inferences or min_devices in either group the gate holds.
 */
#ifndef TML_HEALTH_H
#define TML_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tml/proto.h"

#define HEALTH_REASON_MAX 200

/* One group's telemetry summed over the gate window. */
struct health_agg {
    uint32_t n_devices;      /* devices that sent at least one summary */
    uint64_t n_inferences;
    uint64_t n_low_conf;
    uint64_t n_flagged;
    uint64_t n_errors;
    uint64_t lat_sum_us;     /* sum of lat_mean_us * n_inferences */
    size_t n_lat_bins;       /* 0 if no histogram was reported */
    uint64_t lat_hist[TML_MAX_BINS];
    size_t n_conf_bins;
    uint64_t conf_hist[TML_MAX_BINS];
};

/* One rate's non-inferiority margin. enabled=false skips the check. */
struct health_margin {
    bool enabled;
    double abs;   /* tolerated absolute increase of the rate, 0..1 */
    double rel;   /* tolerated relative increase: 0.5 = up to 1.5x old */
};

struct health_policy {
    uint32_t min_devices;     /* per group */
    uint64_t min_inferences;  /* per group */
    double z_crit;            /* one-sided critical value, 2.326 = 1 % */
    struct health_margin low_conf;
    struct health_margin flagged;
    struct health_margin errors;
    bool check_latency;
    double lat_p95_ratio;     /* e.g. 1.25 */
    uint32_t lat_p95_slack_us;
    /* When the baseline group is empty (every target already runs the new
     * model), decide on the canary group alone against these ceilings
     * (rates 0..1; 1.0 disables one) instead of holding. */
    bool allow_no_baseline;
    double max_low_conf_rate;
    double max_flagged_rate;
    double max_error_rate;
};

enum health_verdict {
    HEALTH_ADVANCE = 0,
    HEALTH_HOLD = 1, /* not enough data yet: ask again later */
    HEALTH_FAIL = 2  /* regression past a margin: stop the rollout */
};

/* Which check decided a FAIL (or HOLD), for tests and --json. */
enum health_check {
    HEALTH_CHECK_NONE = 0,
    HEALTH_CHECK_DATA,
    HEALTH_CHECK_LOW_CONF,
    HEALTH_CHECK_FLAGGED,
    HEALTH_CHECK_ERRORS,
    HEALTH_CHECK_LATENCY
};

struct health_result {
    enum health_verdict verdict;
    enum health_check check;
    double z_low_conf, z_flagged, z_errors; /* 0 when not computed */
    double p95_new_us, p95_old_us;          /* -1 when unknown */
    char reason[HEALTH_REASON_MAX];         /* NUL-terminated */
};

/* Fills *p with the defaults tmld uses when the operator gives none:
 * 3 devices and 500 inferences per group, z_crit 2.326 (alpha 1 %),
 * low-confidence and flagged margins abs 0.01 rel 0.5, errors abs 0.01
 * rel 0.5, latency p95 ratio 1.25 + 2000 us, no-baseline ceilings 0.5. */
void health_policy_default(struct health_policy *p);

/* Returns true if the policy's numbers make sense (finite, non-negative,
 * z_crit > 0, ratio >= 1); the control verb uses it to reject bad input. */
bool health_policy_valid(const struct health_policy *p);

/* Adds one telemetry summary to an aggregate (the device count is the
 * caller's business). Bins beyond the aggregate's first summary's bin count
 * are ignored so mismatched histograms cannot overflow. */
void health_agg_add_tele(struct health_agg *a, const struct tml_tele *t);

/* The latency p95 in microseconds interpolated in the log2 histogram, or -1
 * if the aggregate has no latency histogram. */
double health_lat_p95_us(const struct health_agg *a);

/* One-sided z statistic for "rate_new > rate_old * (1 + rel) + abs".
 * Returns 0 when either n is 0. */
double health_z_noninferior(uint64_t x_new, uint64_t n_new, uint64_t x_old,
                            uint64_t n_old, double abs_margin,
                            double rel_margin);

/* Evaluates the gate. canary = devices on the new model, baseline = same
 * target's devices on the old one, both over the same window. Never fails;
 * *out is always written. */
void health_evaluate(const struct health_policy *p,
                     const struct health_agg *canary,
                     const struct health_agg *baseline,
                     struct health_result *out);

const char *health_verdict_name(enum health_verdict v);

#endif /* TML_HEALTH_H */
