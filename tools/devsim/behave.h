/*
 * behave.h: per-model behaviour of tml-devsim's synthetic "model".
 *
 * A behaviour file is a small ini file (inih). Each section is a rule; the
 * rule used for an inference is the first match of, in order:
 *   [NAME@VERSION]  one model version, e.g. [kws@3]
 *   [NAME]          every version of one model
 *   [default]       everything else (also: no model installed)
 * Keys (all optional; a section starts from the built-in defaults):
 *   confidence      mean confidence of correct predictions, bp 0..10000
 *   spread          half-width of the confidence spread, bp
 *   wrong_confidence  mean confidence of misclassified predictions, bp
 *   misclass        share of predictions that are wrong ("0.05" or "5%")
 *   flag_share      share of wrong predictions the application detects and
 *                   flags (sent with the expected class)
 *   error           share of inferences that fail
 *   latency_us      mean inference latency, microseconds
 *   jitter_us       half-width of the latency spread, microseconds
 *   selftest        pass | fail: whether golden vectors pass on this model
 *   selftest_fail_share  share of devices ("0.3" or "30%", chosen by a hash
 *                   of the device id) on which this model fails both its
 *                   golden vectors and the application's self-test
 *   confirm         yes | never | reject: what the application's own
 *                   self-test does with a model in trial (never: the trial
 *                   times out and the agent reverts)
 *   class_weights   comma-separated relative weights of the true classes
 * See docs/devsim.md for an example.
 */
#ifndef DEVSIM_BEHAVE_H
#define DEVSIM_BEHAVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BEHAVE_MAX_RULES 32
#define BEHAVE_MAX_NAME 32
#define BEHAVE_MAX_CLASSES 32

enum behave_confirm {
    BEHAVE_CONFIRM_YES = 0,
    BEHAVE_CONFIRM_NEVER = 1,
    BEHAVE_CONFIRM_REJECT = 2
};

struct behave_rule {
    char model[BEHAVE_MAX_NAME + 1]; /* "" for [default] */
    bool is_default;
    bool any_version;
    uint32_t version;
    uint32_t conf_bp;
    uint32_t spread_bp;
    uint32_t wrong_conf_bp;
    uint32_t misclass_ppm;
    uint32_t flag_share_ppm;
    uint32_t error_ppm;
    uint32_t latency_us;
    uint32_t jitter_us;
    bool selftest_ok;
    uint32_t selftest_fail_ppm; /* devices failing self-test, by id hash */
    uint8_t confirm; /* enum behave_confirm */
    size_t n_weights; /* 0: uniform */
    uint32_t weights[BEHAVE_MAX_CLASSES];
};

struct behave {
    size_t n_rules;
    struct behave_rule rules[BEHAVE_MAX_RULES];
    /* Where parsing failed: line number (0 if none) and a short reason. */
    int err_line;
    const char *err_what;
};

/* Sets b to the built-in default rule only. */
void behave_init(struct behave *b);

/* Parses ini text (NUL-terminated) into b, after behave_init. Returns 0, or
 * -1 with b->err_line / b->err_what set. */
__attribute__((warn_unused_result)) int behave_parse_string(struct behave *b,
                                                            const char *text);
/* Same for a file; err_line -1 means it could not be opened. */
__attribute__((warn_unused_result)) int behave_parse_file(struct behave *b,
                                                          const char *path);

/* The rule for model name@version (name may be NULL or "" for "no model").
 * Never NULL: falls back to [default] or the built-in rule. */
const struct behave_rule *behave_lookup(const struct behave *b,
                                        const char *name, size_t name_len,
                                        uint32_t version);

/* True when model rule r fails its self-test on device dev_id: selftest =
 * fail, or the device falls in the rule's selftest_fail_share (a hash of
 * the id, so the same devices fail on every run). */
bool behave_selftest_fails(const struct behave_rule *r, const char *dev_id);

#endif /* DEVSIM_BEHAVE_H */
