/*
 * synth.h: the synthetic "model" of tml-devsim. Draws inferences (true class,
 * predicted class, confidence, latency, error, flagged) from a behaviour
 * rule, and makes input bytes for captures: an i16 little-endian audio window
 * whose tone depends on the true class, plus noise, so captured samples are
 * real, distinguishable data. Deterministic for a given seed.
 */
#ifndef DEVSIM_SYNTH_H
#define DEVSIM_SYNTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "behave.h"

struct synth_rng {
    uint64_t s;
};

struct synth_inference {
    uint32_t truth;
    uint32_t predicted;
    uint32_t confidence_bp;
    uint32_t latency_us;
    bool is_error;
    bool is_wrong;
    bool is_flagged; /* wrong and detected by the "application" */
};

void synth_seed(struct synth_rng *r, uint64_t seed);
uint64_t synth_next(struct synth_rng *r);
/* Uniform in [0, n); n > 0. */
uint32_t synth_below(struct synth_rng *r, uint32_t n);
/* True with probability ppm / 1e6. */
bool synth_chance(struct synth_rng *r, uint32_t ppm);
/* Exponentially distributed delay with the given mean (ms), at least 1. */
uint64_t synth_exp_ms(struct synth_rng *r, uint64_t mean_ms);

void synth_infer(struct synth_rng *r, const struct behave_rule *rule,
                 uint32_t n_classes, struct synth_inference *out);

/* Fills buf (len bytes, even) with an i16 LE window at rate_hz for class
 * `truth`. */
void synth_input(struct synth_rng *r, uint32_t truth, uint32_t rate_hz,
                 uint8_t *buf, size_t len);

#endif /* DEVSIM_SYNTH_H */
