/*
 * health.c: the rollout health gate (see health.h for the statistics).
 *
 * Owns nothing but arithmetic. Deliberately conservative: any doubt about
 * the data (too few devices or inferences) is a HOLD, never an ADVANCE, and
 * a FAIL needs statistical evidence past the margin, so one noisy canary
 * cannot stop a healthy rollout and a 3x regression cannot slip through.
 */
#include "health.h"

#include <math.h> /* isfinite only: tmld is not guaranteed to link libm */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void
health_policy_default(struct health_policy *p)
{
    memset(p, 0, sizeof(*p));
    p->min_devices = 3;
    p->min_inferences = 500;
    p->z_crit = 2.326;
    /* A 3x low-confidence rate from a typical 1-5 % baseline must fail:
     * 1.5x + 1 point leaves room for noise but not for that. */
    p->low_conf = (struct health_margin){true, 0.01, 0.5};
    p->flagged = (struct health_margin){true, 0.01, 0.5};
    p->errors = (struct health_margin){true, 0.01, 0.5};
    p->check_latency = true;
    p->lat_p95_ratio = 1.25;
    p->lat_p95_slack_us = 2000;
    p->allow_no_baseline = true;
    p->max_low_conf_rate = 0.5;
    p->max_flagged_rate = 0.5;
    p->max_error_rate = 0.5;
}

/* Square root by Newton's method: tmld's link line (daemon/CMakeLists.txt)
 * is not ours and need not carry -lm. Starting above the root, the iterates
 * fall monotonically (at least halving the excess while far away), so 1100
 * steps cover any finite double; the arguments here are below 1. */
static double
square_root(double x)
{
    double r = x > 1 ? x : 1;

    if (!(x > 0))
        return 0;
    for (int i = 0; i < 1100; i++) {
        double next = 0.5 * (r + x / r);
        if (next >= r)
            break;
        r = next;
    }
    return r;
}

static bool
margin_valid(const struct health_margin *m)
{
    return isfinite(m->abs) && isfinite(m->rel) && m->abs >= 0 &&
           m->abs <= 1 && m->rel >= 0;
}

static bool
rate_valid(double r)
{
    return isfinite(r) && r >= 0 && r <= 1;
}

bool
health_policy_valid(const struct health_policy *p)
{
    return p != NULL && isfinite(p->z_crit) && p->z_crit > 0 &&
           margin_valid(&p->low_conf) && margin_valid(&p->flagged) &&
           margin_valid(&p->errors) && isfinite(p->lat_p95_ratio) &&
           p->lat_p95_ratio >= 1 && rate_valid(p->max_low_conf_rate) &&
           rate_valid(p->max_flagged_rate) && rate_valid(p->max_error_rate);
}

void
health_agg_add_tele(struct health_agg *a, const struct tml_tele *t)
{
    size_t n;

    a->n_inferences += t->n_inferences;
    a->n_low_conf += t->n_low_conf;
    a->n_flagged += t->n_flagged;
    a->n_errors += t->n_errors;
    a->lat_sum_us += (uint64_t)t->lat_mean_us * t->n_inferences;
    n = t->n_lat_bins < TML_MAX_BINS ? t->n_lat_bins : TML_MAX_BINS;
    if (a->n_lat_bins == 0)
        a->n_lat_bins = n;
    for (size_t i = 0; i < n && i < a->n_lat_bins; i++)
        a->lat_hist[i] += t->lat_hist[i];
    n = t->n_conf_bins < TML_MAX_BINS ? t->n_conf_bins : TML_MAX_BINS;
    if (a->n_conf_bins == 0)
        a->n_conf_bins = n;
    for (size_t i = 0; i < n && i < a->n_conf_bins; i++)
        a->conf_hist[i] += t->conf_hist[i];
}

double
health_lat_p95_us(const struct health_agg *a)
{
    uint64_t total = 0, seen = 0;
    double target;

    for (size_t i = 0; i < a->n_lat_bins; i++)
        total += a->lat_hist[i];
    if (total == 0)
        return -1;
    /* Rank of the 95th percentile; the bin holding it is interpolated
     * linearly between its bounds (proto.h: bin 0 = [0, 1 ms), bin i =
     * [2^(i-1), 2^i) ms; the open last bin is treated as [lo, 2 lo)). */
    target = 0.95 * (double)total;
    for (size_t i = 0; i < a->n_lat_bins; i++) {
        uint64_t c = a->lat_hist[i];
        if (c == 0)
            continue;
        if ((double)(seen + c) >= target) {
            double lo = i == 0 ? 0.0 : 1000.0 * (double)(1ull << (i - 1));
            double hi = i == 0 ? 1000.0 : 2.0 * lo;
            double frac = (target - (double)seen) / (double)c;
            if (frac < 0)
                frac = 0;
            return lo + frac * (hi - lo);
        }
        seen += c;
    }
    return -1; /* unreachable: total > 0 */
}

double
health_z_noninferior(uint64_t x_new, uint64_t n_new, uint64_t x_old,
                     uint64_t n_old, double abs_margin, double rel_margin)
{
    double p_new, p_old, s_new, s_old, k, se;

    if (n_new == 0 || n_old == 0)
        return 0;
    if (x_new > n_new)
        x_new = n_new;
    if (x_old > n_old)
        x_old = n_old;
    p_new = (double)x_new / (double)n_new;
    p_old = (double)x_old / (double)n_old;
    /* Agresti-Caffo: add one success and one failure to each group for the
     * variance only, so 0 events in both groups still gives a finite z. */
    s_new = ((double)x_new + 1) / ((double)n_new + 2);
    s_old = ((double)x_old + 1) / ((double)n_old + 2);
    k = 1.0 + rel_margin;
    se = square_root(s_new * (1 - s_new) / ((double)n_new + 2) +
              k * k * s_old * (1 - s_old) / ((double)n_old + 2));
    return (p_new - k * p_old - abs_margin) / se;
}

static void
set_reason(struct health_result *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
set_reason(struct health_result *out, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(out->reason, sizeof(out->reason), fmt, ap);
    va_end(ap);
}

static double
rate(uint64_t x, uint64_t n)
{
    return n == 0 ? 0.0 : (double)(x > n ? n : x) / (double)n;
}

/* Tests one rate; returns true (and fills the reason) on a regression. */
static bool
rate_regressed(const struct health_policy *p, const struct health_margin *m,
               const char *what, uint64_t x_new, uint64_t n_new,
               uint64_t x_old, uint64_t n_old, double *z_out,
               struct health_result *out)
{
    double z;

    if (!m->enabled)
        return false;
    z = health_z_noninferior(x_new, n_new, x_old, n_old, m->abs, m->rel);
    *z_out = z;
    if (z <= p->z_crit)
        return false;
    set_reason(out,
               "%s rate %.2f%% on the new model vs %.2f%% on the old "
               "(%.1fx; margin %.1f%% + %.0f%%, z=%.2f > %.2f)",
               what, 100 * rate(x_new, n_new), 100 * rate(x_old, n_old),
               rate(x_old, n_old) > 0
                   ? rate(x_new, n_new) / rate(x_old, n_old)
                   : 0.0,
               100 * m->abs, 100 * m->rel, z, p->z_crit);
    return true;
}

static bool
ceiling_exceeded(const char *what, uint64_t x, uint64_t n, double cap,
                 struct health_result *out)
{
    if (cap >= 1.0 || rate(x, n) <= cap)
        return false;
    set_reason(out, "%s rate %.2f%% on the new model above the %.2f%% "
               "ceiling (no baseline devices)",
               what, 100 * rate(x, n), 100 * cap);
    return true;
}

static void
evaluate_no_baseline(const struct health_policy *p,
                     const struct health_agg *c, struct health_result *out)
{
    uint64_t n = c->n_inferences;

    out->verdict = HEALTH_FAIL;
    if (ceiling_exceeded("low-confidence", c->n_low_conf, n,
                         p->max_low_conf_rate, out)) {
        out->check = HEALTH_CHECK_LOW_CONF;
        return;
    }
    if (ceiling_exceeded("flagged-misclassified", c->n_flagged, n,
                         p->max_flagged_rate, out)) {
        out->check = HEALTH_CHECK_FLAGGED;
        return;
    }
    if (ceiling_exceeded("inference error", c->n_errors, n,
                         p->max_error_rate, out)) {
        out->check = HEALTH_CHECK_ERRORS;
        return;
    }
    out->verdict = HEALTH_ADVANCE;
    set_reason(out, "no baseline devices; %u devices, %llu inferences "
               "within the absolute ceilings",
               c->n_devices, (unsigned long long)n);
}

void
health_evaluate(const struct health_policy *p, const struct health_agg *c,
                const struct health_agg *b, struct health_result *out)
{
    memset(out, 0, sizeof(*out));
    out->p95_new_us = health_lat_p95_us(c);
    out->p95_old_us = health_lat_p95_us(b);
    out->verdict = HEALTH_HOLD;
    out->check = HEALTH_CHECK_DATA;

    if (c->n_devices < p->min_devices || c->n_inferences < p->min_inferences) {
        set_reason(out, "waiting for data: new model %u/%u devices, "
                   "%llu/%llu inferences",
                   c->n_devices, p->min_devices,
                   (unsigned long long)c->n_inferences,
                   (unsigned long long)p->min_inferences);
        return;
    }
    if (b->n_devices == 0 && b->n_inferences == 0 && p->allow_no_baseline) {
        evaluate_no_baseline(p, c, out);
        return;
    }
    if (b->n_devices < p->min_devices || b->n_inferences < p->min_inferences) {
        set_reason(out, "waiting for data: old model %u/%u devices, "
                   "%llu/%llu inferences",
                   b->n_devices, p->min_devices,
                   (unsigned long long)b->n_inferences,
                   (unsigned long long)p->min_inferences);
        return;
    }

    out->verdict = HEALTH_FAIL;
    out->check = HEALTH_CHECK_LOW_CONF;
    if (rate_regressed(p, &p->low_conf, "low-confidence", c->n_low_conf,
                       c->n_inferences, b->n_low_conf, b->n_inferences,
                       &out->z_low_conf, out))
        return;
    out->check = HEALTH_CHECK_FLAGGED;
    if (rate_regressed(p, &p->flagged, "flagged-misclassified", c->n_flagged,
                       c->n_inferences, b->n_flagged, b->n_inferences,
                       &out->z_flagged, out))
        return;
    out->check = HEALTH_CHECK_ERRORS;
    if (rate_regressed(p, &p->errors, "inference error", c->n_errors,
                       c->n_inferences, b->n_errors, b->n_inferences,
                       &out->z_errors, out))
        return;
    out->check = HEALTH_CHECK_LATENCY;
    if (p->check_latency && out->p95_new_us >= 0 && out->p95_old_us >= 0) {
        double bound = out->p95_old_us * p->lat_p95_ratio +
                       (double)p->lat_p95_slack_us;
        if (out->p95_new_us > bound) {
            set_reason(out, "latency p95 %.1f ms on the new model vs %.1f "
                       "ms on the old (bound %.1f ms)",
                       out->p95_new_us / 1000, out->p95_old_us / 1000,
                       bound / 1000);
            return;
        }
    }
    out->verdict = HEALTH_ADVANCE;
    out->check = HEALTH_CHECK_NONE;
    set_reason(out, "healthy: low-confidence %.2f%% vs %.2f%%, flagged "
               "%.2f%% vs %.2f%% over %llu vs %llu inferences",
               100 * rate(c->n_low_conf, c->n_inferences),
               100 * rate(b->n_low_conf, b->n_inferences),
               100 * rate(c->n_flagged, c->n_inferences),
               100 * rate(b->n_flagged, b->n_inferences),
               (unsigned long long)c->n_inferences,
               (unsigned long long)b->n_inferences);
}

const char *
health_verdict_name(enum health_verdict v)
{
    switch (v) {
    case HEALTH_ADVANCE:
        return "advance";
    case HEALTH_HOLD:
        return "hold";
    case HEALTH_FAIL:
        return "fail";
    }
    return "?";
}
