/*
 * synth.c: random draws for tml-devsim (splitmix64 seeding + xorshift64*),
 * the synthetic inference, and synthetic audio inputs. No global state: each
 * device owns its generator, so a run is reproducible per device.
 */
#include "synth.h"

#include <math.h>

#define SYNTH_PI 3.14159265358979323846

void
synth_seed(struct synth_rng *r, uint64_t seed)
{
    /* splitmix64, so that neighbouring seeds give unrelated streams. */
    uint64_t z = seed + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    r->s = z ? z : 1;
}

uint64_t
synth_next(struct synth_rng *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545f4914f6cdd1dull;
}

uint32_t
synth_below(struct synth_rng *r, uint32_t n)
{
    return (uint32_t)((synth_next(r) >> 32) % n);
}

bool
synth_chance(struct synth_rng *r, uint32_t ppm)
{
    return synth_below(r, 1000000) < ppm;
}

uint64_t
synth_exp_ms(struct synth_rng *r, uint64_t mean_ms)
{
    double u = ((double)(synth_next(r) >> 11) + 1.0) / 9007199254740993.0;
    double v = -log(u) * (double)mean_ms;

    if (v < 1.0)
        return 1;
    if (v > (double)mean_ms * 20.0)
        v = (double)mean_ms * 20.0;
    return (uint64_t)v;
}

/* Triangular draw around mean with half-width spread, clamped to 0..max. */
static uint32_t
around(struct synth_rng *r, uint32_t mean, uint32_t spread, uint32_t max)
{
    int64_t v = (int64_t)mean;

    if (spread > 0) {
        int64_t a = (int64_t)synth_below(r, spread + 1);
        int64_t b = (int64_t)synth_below(r, spread + 1);
        v += a - b;
    }
    if (v < 0)
        v = 0;
    if (v > (int64_t)max)
        v = (int64_t)max;
    return (uint32_t)v;
}

static uint32_t
draw_class(struct synth_rng *r, const struct behave_rule *rule,
           uint32_t n_classes)
{
    uint64_t total = 0, pick;
    uint32_t i;

    if (rule->n_weights == 0)
        return synth_below(r, n_classes);
    for (i = 0; i < n_classes && i < rule->n_weights; i++)
        total += rule->weights[i];
    if (total == 0)
        return synth_below(r, n_classes);
    pick = synth_next(r) % total;
    for (i = 0; i < n_classes && i < rule->n_weights; i++) {
        if (pick < rule->weights[i])
            return i;
        pick -= rule->weights[i];
    }
    return 0;
}

void
synth_infer(struct synth_rng *r, const struct behave_rule *rule,
            uint32_t n_classes, struct synth_inference *out)
{
    if (n_classes == 0)
        n_classes = 1;
    out->truth = draw_class(r, rule, n_classes);
    out->is_error = synth_chance(r, rule->error_ppm);
    out->is_wrong = n_classes > 1 && synth_chance(r, rule->misclass_ppm);
    out->predicted = out->truth;
    if (out->is_wrong)
        out->predicted =
            (out->truth + 1 + synth_below(r, n_classes - 1)) % n_classes;
    out->confidence_bp =
        out->is_wrong ? around(r, rule->wrong_conf_bp, rule->spread_bp, 10000)
                      : around(r, rule->conf_bp, rule->spread_bp, 10000);
    out->latency_us =
        around(r, rule->latency_us, rule->jitter_us, 60000000) + 1;
    out->is_flagged = out->is_wrong &&
                      synth_chance(r, rule->flag_share_ppm);
}

void
synth_input(struct synth_rng *r, uint32_t truth, uint32_t rate_hz,
            uint8_t *buf, size_t len)
{
    double freq = 200.0 * (double)(truth + 1);
    size_t i, n = len / 2;

    if (rate_hz == 0)
        rate_hz = 8000;
    for (i = 0; i < n; i++) {
        double t = (double)i / (double)rate_hz;
        double s = 9000.0 * sin(2.0 * SYNTH_PI * freq * t);
        int32_t noise = (int32_t)synth_below(r, 2001) - 1000;
        int32_t v = (int32_t)s + noise;
        uint16_t u = (uint16_t)(int16_t)v;
        buf[2 * i] = (uint8_t)(u & 0xff);
        buf[2 * i + 1] = (uint8_t)(u >> 8);
    }
    if (len & 1)
        buf[len - 1] = 0;
}
