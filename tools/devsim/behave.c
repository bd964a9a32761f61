/*
 * behave.c: parses tml-devsim behaviour files (ini, inih) and looks up the
 * rule for a model name@version. Owns no memory beyond the caller's struct
 * behave; every value is range-checked, every table is capped
 * (BEHAVE_MAX_RULES, BEHAVE_MAX_CLASSES). Does not draw random numbers: that
 * is synth.c's job.
 */
#include "behave.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const struct behave_rule builtin = {
    .is_default = true,
    .any_version = true,
    .conf_bp = 8800,
    .spread_bp = 1000,
    .wrong_conf_bp = 5000,
    .misclass_ppm = 20000,
    .flag_share_ppm = 500000,
    .error_ppm = 0,
    .latency_us = 12000,
    .jitter_us = 3000,
    .selftest_ok = true,
};

void
behave_init(struct behave *b)
{
    memset(b, 0, sizeof(*b));
    b->rules[0] = builtin;
    b->n_rules = 1;
}

/* Parses an unsigned decimal integer <= max. */
static int
parse_u32(const char *s, uint32_t max, uint32_t *out)
{
    char *end = NULL;
    unsigned long long v;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

/* Parses a share: "0.05", "1", or "5%" (up to 6 decimals), into ppm. */
static int
parse_share(const char *s, uint32_t *ppm)
{
    uint64_t whole = 0, frac = 0, scale = 1000000;
    size_t n_digits = 0;
    bool pct = false;

    while (*s >= '0' && *s <= '9' && n_digits < 9) {
        whole = whole * 10 + (uint64_t)(*s++ - '0');
        n_digits++;
    }
    if (n_digits == 0 || (*s >= '0' && *s <= '9'))
        return -1;
    if (*s == '.') {
        s++;
        n_digits = 0;
        while (*s >= '0' && *s <= '9') {
            if (n_digits++ >= 6)
                return -1;
            scale /= 10;
            frac += (uint64_t)(*s++ - '0') * scale;
        }
        if (n_digits == 0)
            return -1;
    }
    if (*s == '%') {
        pct = true;
        s++;
    }
    if (*s != '\0')
        return -1;
    whole = whole * 1000000 + frac;
    if (pct)
        whole /= 100;
    if (whole > 1000000)
        return -1;
    *ppm = (uint32_t)whole;
    return 0;
}

static int
parse_weights(const char *s, struct behave_rule *r)
{
    size_t n = 0;

    while (*s != '\0') {
        char *end = NULL;
        unsigned long v;

        while (*s == ' ')
            s++;
        if (*s < '0' || *s > '9' || n >= BEHAVE_MAX_CLASSES)
            return -1;
        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno != 0 || v > 1000000)
            return -1;
        r->weights[n++] = (uint32_t)v;
        s = end;
        while (*s == ' ')
            s++;
        if (*s == ',')
            s++;
        else if (*s != '\0')
            return -1;
    }
    r->n_weights = n;
    return 0;
}

/* Finds or creates the rule for a section name. */
static struct behave_rule *
rule_for_section(struct behave *b, const char *section)
{
    struct behave_rule key = builtin;
    const char *at;
    size_t name_len;
    size_t i;

    if (strcmp(section, "default") == 0)
        return &b->rules[0];
    at = strchr(section, '@');
    name_len = at ? (size_t)(at - section) : strlen(section);
    if (name_len == 0 || name_len > BEHAVE_MAX_NAME)
        return NULL;
    key.is_default = false;
    memcpy(key.model, section, name_len);
    key.model[name_len] = '\0';
    if (at) {
        if (parse_u32(at + 1, UINT32_MAX, &key.version) != 0)
            return NULL;
        key.any_version = false;
    }
    for (i = 1; i < b->n_rules; i++) {
        struct behave_rule *r = &b->rules[i];
        if (strcmp(r->model, key.model) == 0 &&
            r->any_version == key.any_version &&
            (r->any_version || r->version == key.version))
            return r;
    }
    if (b->n_rules >= BEHAVE_MAX_RULES)
        return NULL;
    b->rules[b->n_rules] = key;
    return &b->rules[b->n_rules++];
}

static int
on_key(void *user, const char *section, const char *name, const char *value)
{
    struct behave *b = user;
    struct behave_rule *r = rule_for_section(b, section);
    int rc = -1;

    if (r == NULL) {
        b->err_what = "bad section name or too many sections";
        return 0;
    }
    if (strcmp(name, "confidence") == 0)
        rc = parse_u32(value, 10000, &r->conf_bp);
    else if (strcmp(name, "spread") == 0)
        rc = parse_u32(value, 10000, &r->spread_bp);
    else if (strcmp(name, "wrong_confidence") == 0)
        rc = parse_u32(value, 10000, &r->wrong_conf_bp);
    else if (strcmp(name, "misclass") == 0)
        rc = parse_share(value, &r->misclass_ppm);
    else if (strcmp(name, "flag_share") == 0)
        rc = parse_share(value, &r->flag_share_ppm);
    else if (strcmp(name, "error") == 0)
        rc = parse_share(value, &r->error_ppm);
    else if (strcmp(name, "latency_us") == 0)
        rc = parse_u32(value, 60000000, &r->latency_us);
    else if (strcmp(name, "jitter_us") == 0)
        rc = parse_u32(value, 60000000, &r->jitter_us);
    else if (strcmp(name, "selftest") == 0) {
        if (strcmp(value, "pass") == 0) {
            r->selftest_ok = true;
            rc = 0;
        } else if (strcmp(value, "fail") == 0) {
            r->selftest_ok = false;
            rc = 0;
        }
    } else if (strcmp(name, "selftest_fail_share") == 0) {
        rc = parse_share(value, &r->selftest_fail_ppm);
    } else if (strcmp(name, "confirm") == 0) {
        rc = 0;
        if (strcmp(value, "yes") == 0)
            r->confirm = BEHAVE_CONFIRM_YES;
        else if (strcmp(value, "never") == 0)
            r->confirm = BEHAVE_CONFIRM_NEVER;
        else if (strcmp(value, "reject") == 0)
            r->confirm = BEHAVE_CONFIRM_REJECT;
        else
            rc = -1;
    } else if (strcmp(name, "class_weights") == 0)
        rc = parse_weights(value, r);
    else {
        b->err_what = "unknown key";
        return 0;
    }
    if (rc != 0) {
        b->err_what = "bad value";
        return 0;
    }
    return 1;
}

int
behave_parse_string(struct behave *b, const char *text)
{
    int line;

    b->err_what = NULL;
    line = ini_parse_string(text, on_key, b);
    b->err_line = line;
    if (line != 0) {
        if (b->err_what == NULL)
            b->err_what = "syntax error";
        return -1;
    }
    return 0;
}

int
behave_parse_file(struct behave *b, const char *path)
{
    int line;

    b->err_what = NULL;
    line = ini_parse(path, on_key, b);
    b->err_line = line;
    if (line != 0) {
        if (b->err_what == NULL)
            b->err_what = line < 0 ? "cannot open file" : "syntax error";
        return -1;
    }
    return 0;
}

const struct behave_rule *
behave_lookup(const struct behave *b, const char *name, size_t name_len,
              uint32_t version)
{
    const struct behave_rule *any = NULL;
    size_t i;

    if (name == NULL || name_len == 0 || name_len > BEHAVE_MAX_NAME)
        return &b->rules[0];
    for (i = 1; i < b->n_rules; i++) {
        const struct behave_rule *r = &b->rules[i];
        if (strlen(r->model) != name_len ||
            memcmp(r->model, name, name_len) != 0)
            continue;
        if (!r->any_version && r->version == version)
            return r;
        if (r->any_version && any == NULL)
            any = r;
    }
    return any ? any : &b->rules[0];
}

bool
behave_selftest_fails(const struct behave_rule *r, const char *dev_id)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    if (!r->selftest_ok)
        return true;
    if (r->selftest_fail_ppm == 0)
        return false;
    for (const char *p = dev_id; *p != '\0'; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return h % 1000000u < r->selftest_fail_ppm;
}
