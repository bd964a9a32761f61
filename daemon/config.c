/*
 * config.c: tmld.conf, an INI file read with inih.
 *
 * The whole file is kept as (section, key, value, line) entries so that a
 * module can read its own section later (tmld_config_get). The core sections
 * are validated here into struct settings before anything starts; every
 * problem is reported with file, line, key and the accepted values, and all
 * problems are reported, not only the first. Unknown keys in a core section
 * are errors (a typo must not silently fall back to a default).
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "core.h"

#define CONF_MAX_FILE (1024 * 1024)

struct reader {
    const char *p, *end;
    int line;
    int n_long;
    int long_line;
};

/* An ini_reader over memory that counts lines, so that the handler knows the
 * line number (Debian's inih is built without INI_HANDLER_LINENO). */
static char *
read_line(char *str, int num, void *stream)
{
    struct reader *r = stream;
    if (r->p >= r->end || num < 2)
        return NULL;
    r->line++;
    size_t cap = (size_t)num - 1, n = 0;
    while (r->p < r->end && *r->p != '\n' && n < cap - 1)
        str[n++] = *r->p++;
    if (r->p < r->end && *r->p != '\n') {
        /* Longer than inih's line buffer: drop the rest, report it. */
        while (r->p < r->end && *r->p != '\n')
            r->p++;
        if (r->n_long++ == 0)
            r->long_line = r->line;
        n = 0; /* treat as an empty line */
    }
    if (r->p < r->end)
        r->p++; /* the newline */
    str[n++] = '\n';
    str[n] = '\0';
    return str;
}

struct load_ctx {
    struct conf *c;
    struct reader *r;
};

static int
on_entry(void *user, const char *section, const char *name, const char *value)
{
    struct load_ctx *lc = user;
    struct conf *c = lc->c;
    if (c->n_entries >= CONF_MAX_ENTRIES) {
        if (c->n_entries == CONF_MAX_ENTRIES)
            log_err("config: %s:%d: more than %d keys", c->path, lc->r->line,
                    CONF_MAX_ENTRIES);
        c->n_errors++;
        return 0;
    }
    for (size_t i = 0; i < c->n_entries; i++) {
        if (strcmp(c->entries[i].section, section) == 0 &&
            strcmp(c->entries[i].key, name) == 0) {
            log_err("config: %s:%d: [%s] %s: set twice (first on line %d)",
                    c->path, lc->r->line, section, name, c->entries[i].line);
            c->n_errors++;
            return 1;
        }
    }
    struct conf_entry *e = &c->entries[c->n_entries];
    e->section = strdup(section);
    e->key = strdup(name);
    e->value = strdup(value);
    e->line = lc->r->line;
    if (e->section == NULL || e->key == NULL || e->value == NULL) {
        free(e->section);
        free(e->key);
        free(e->value);
        c->n_errors++;
        return 0;
    }
    c->n_entries++;
    return 1;
}

int
conf_load_buf(struct conf *c, const char *name, const char *buf, size_t len)
{
    memset(c, 0, sizeof(*c));
    c->path = strdup(name);
    c->entries = calloc(CONF_MAX_ENTRIES, sizeof(*c->entries));
    if (c->path == NULL || c->entries == NULL) {
        log_err("config: out of memory");
        return 1;
    }
    if (memchr(buf, '\0', len) != NULL) {
        log_err("config: %s: contains a NUL byte (not a text file?)", name);
        return 1;
    }
    struct reader r = {buf, buf + len, 0, 0, 0};
    struct load_ctx lc = {c, &r};
    int rc = ini_parse_stream(read_line, &r, on_entry, &lc);
    if (r.n_long > 0) {
        log_err("config: %s:%d: line longer than 198 bytes", name,
                r.long_line);
        c->n_errors++;
    }
    if (rc > 0) {
        /* inih counts its own lines the same way ours does. */
        log_err("config: %s:%d: syntax error (expected [section], key = "
                "value, or a ; comment)",
                name, rc);
        c->n_errors++;
    } else if (rc < 0) {
        log_err("config: %s: parse failed", name);
        c->n_errors++;
    }
    return c->n_errors;
}

int
conf_load(struct conf *c, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        int e = errno;
        log_err("config: %s: cannot open: %s", path, strerror(e));
        memset(c, 0, sizeof(*c));
        return -e;
    }
    char *buf = malloc(CONF_MAX_FILE + 1);
    size_t n = buf ? fread(buf, 1, CONF_MAX_FILE + 1, f) : 0;
    fclose(f);
    if (buf == NULL || n > CONF_MAX_FILE) {
        log_err("config: %s: larger than %d bytes", path, CONF_MAX_FILE);
        free(buf);
        memset(c, 0, sizeof(*c));
        return -EFBIG;
    }
    int rc = conf_load_buf(c, path, buf, n);
    free(buf);
    return rc;
}

void
conf_free(struct conf *c)
{
    for (size_t i = 0; i < c->n_entries; i++) {
        free(c->entries[i].section);
        free(c->entries[i].key);
        free(c->entries[i].value);
    }
    free(c->entries);
    free(c->path);
    memset(c, 0, sizeof(*c));
}

static const struct conf_entry *
find(const struct conf *c, const char *section, const char *key)
{
    for (size_t i = 0; i < c->n_entries; i++)
        if (strcmp(c->entries[i].section, section) == 0 &&
            strcmp(c->entries[i].key, key) == 0)
            return &c->entries[i];
    return NULL;
}

const char *
conf_get(const struct conf *c, const char *section, const char *key)
{
    const struct conf_entry *e = find(c, section, key);
    return e ? e->value : NULL;
}

const char *
tmld_config_get(struct tmld *d, const char *section, const char *key)
{
    return conf_get(&d->conf, section, key);
}

const char *
tmld_config_path(struct tmld *d)
{
    return d->conf.path ? d->conf.path : "(none)";
}

void
tmld_config_error(struct tmld *d, const char *section, const char *key,
                  const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    const struct conf_entry *e = find(&d->conf, section, key);
    if (e != NULL)
        log_err("config: %s:%d: [%s] %s: %s", tmld_config_path(d), e->line,
                section, key, msg);
    else
        log_err("config: %s: [%s] %s: %s", tmld_config_path(d), section, key,
                msg);
    d->conf.n_errors++;
}

/* Parses a non-negative decimal with an optional suffix from units[];
 * returns 0 and the value times the suffix's factor. */
struct unit {
    const char *suffix;
    uint64_t factor;
};

static int
parse_scaled(const char *s, const struct unit *units, uint64_t *out)
{
    if (!isdigit((unsigned char)s[0]))
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return -ERANGE;
    for (const struct unit *u = units; u->suffix != NULL; u++) {
        if (strcmp(end, u->suffix) == 0) {
            if (u->factor != 0 && v > UINT64_MAX / u->factor)
                return -ERANGE;
            *out = (uint64_t)v * u->factor;
            return 0;
        }
    }
    return -EINVAL;
}

int
tmld_config_int(struct tmld *d, const char *section, const char *key,
                int64_t def, int64_t min, int64_t max, int64_t *out)
{
    const char *v = tmld_config_get(d, section, key);
    if (v == NULL) {
        *out = def;
        return 0;
    }
    errno = 0;
    char *end;
    long long x = strtoll(v, &end, 10);
    if (v[0] == '\0' || *end != '\0' || errno != 0 || x < min || x > max) {
        tmld_config_error(d, section, key,
                          "'%s' is not an integer in %" PRId64 "..%" PRId64, v,
                          min, max);
        return -EINVAL;
    }
    *out = x;
    return 0;
}

int
tmld_config_bool(struct tmld *d, const char *section, const char *key,
                 bool def, bool *out)
{
    const char *v = tmld_config_get(d, section, key);
    if (v == NULL) {
        *out = def;
        return 0;
    }
    static const char *yes[] = {"yes", "true", "on", "1"};
    static const char *no[] = {"no", "false", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    tmld_config_error(d, section, key,
                      "'%s' is not a boolean (yes/no, true/false, on/off, "
                      "1/0)",
                      v);
    return -EINVAL;
}

static int
config_scaled(struct tmld *d, const char *section, const char *key,
              uint64_t def, uint64_t min, uint64_t max, uint64_t *out,
              const struct unit *units, const char *what)
{
    const char *v = tmld_config_get(d, section, key);
    if (v == NULL) {
        *out = def;
        return 0;
    }
    uint64_t x;
    if (parse_scaled(v, units, &x) != 0 || x < min || x > max) {
        tmld_config_error(d, section, key,
                          "'%s' is not a %s in %" PRIu64 "..%" PRIu64
                          " (base unit)",
                          v, what, min, max);
        return -EINVAL;
    }
    *out = x;
    return 0;
}

int
tmld_config_ms(struct tmld *d, const char *section, const char *key,
               uint64_t def_ms, uint64_t min_ms, uint64_t max_ms,
               uint64_t *out_ms)
{
    static const struct unit units[] = {
        {"", 1},           {"ms", 1},          {"s", 1000},
        {"m", 60 * 1000},  {"h", 3600 * 1000}, {"d", 86400ull * 1000},
        {NULL, 0}};
    return config_scaled(d, section, key, def_ms, min_ms, max_ms, out_ms,
                         units, "duration (ms, s, m, h, d; default ms)");
}

int
tmld_config_size(struct tmld *d, const char *section, const char *key,
                 uint64_t def, uint64_t min, uint64_t max, uint64_t *out)
{
    static const struct unit units[] = {{"", 1},
                                        {"K", 1024},
                                        {"M", 1024 * 1024},
                                        {"G", 1024ull * 1024 * 1024},
                                        {NULL, 0}};
    return config_scaled(d, section, key, def, min, max, out, units,
                         "size (bytes, or K, M, G)");
}

/* ---- the core sections ----------------------------------------------------- */

static const char *const core_keys[] = {
    "mqtt.host", "mqtt.port", "mqtt.tls", "mqtt.plaintext_loopback",
    "mqtt.cafile", "mqtt.certfile", "mqtt.keyfile", "mqtt.client_id",
    "mqtt.keepalive", "mqtt.reconnect_min", "mqtt.reconnect_max",
    "db.path", "db.synchronous", "db.batch_records", "db.batch_ms",
    "db.max_size", "db.queue_max",
    "retention.tele_days", "retention.samples_max", "retention.interval",
    "retention.rollup_days", /* validated by retention.c's check */
    "control.socket", "control.max_clients", "control.idle_timeout",
    "control.timeout",
    "ingest.offline_after", "ingest.max_devices", "ingest.malformed_log_interval",
    "log.level",
    "metrics.textfile", "metrics.interval",
    "metrics.listen", "metrics.allow_remote", "metrics.per_device",
    /* the last three: checked by metrics.c */
    NULL};

static const char *const core_sections[] = {
    "mqtt", "db", "retention", "control", "ingest", "log", "metrics", NULL};

static bool
is_core_section(const char *s)
{
    for (size_t i = 0; core_sections[i] != NULL; i++)
        if (strcmp(core_sections[i], s) == 0)
            return true;
    return false;
}

static bool
is_core_key(const char *section, const char *key)
{
    size_t sl = strlen(section);
    for (size_t i = 0; core_keys[i] != NULL; i++) {
        const char *k = core_keys[i];
        if (strncmp(k, section, sl) == 0 && k[sl] == '.' &&
            strcmp(k + sl + 1, key) == 0)
            return true;
    }
    return false;
}

static const char *
str_or(struct tmld *d, const char *section, const char *key, const char *def)
{
    const char *v = tmld_config_get(d, section, key);
    return v != NULL && v[0] != '\0' ? v : def;
}

static bool
is_loopback_host(const char *h)
{
    return strcmp(h, "localhost") == 0 || strncmp(h, "127.", 4) == 0 ||
           strcmp(h, "::1") == 0;
}

int
settings_load(struct tmld *d, struct settings *s)
{
    int before = d->conf.n_errors;
    int64_t i64;
    int rc = 0;
    memset(s, 0, sizeof(*s));

    for (size_t i = 0; i < d->conf.n_entries; i++) {
        const struct conf_entry *e = &d->conf.entries[i];
        if (is_core_section(e->section) && !is_core_key(e->section, e->key))
            tmld_config_error(d, e->section, e->key,
                              "unknown key (see config/tmld.conf.example)");
    }

    s->mqtt_host = str_or(d, "mqtt", "host", "127.0.0.1");
    rc |= tmld_config_int(d, "mqtt", "port", 8883, 1, 65535, &i64);
    s->mqtt_port = (int)i64;
    rc |= tmld_config_bool(d, "mqtt", "tls", true, &s->mqtt_tls);
    rc |= tmld_config_bool(d, "mqtt", "plaintext_loopback", false,
                           &s->mqtt_plaintext_loopback);
    s->mqtt_cafile = str_or(d, "mqtt", "cafile", "/etc/tmld/pki/ca.crt");
    s->mqtt_certfile = str_or(d, "mqtt", "certfile", "/etc/tmld/pki/tmld.crt");
    s->mqtt_keyfile = str_or(d, "mqtt", "keyfile", "/etc/tmld/pki/tmld.key");
    s->mqtt_client_id = str_or(d, "mqtt", "client_id", "tmld");
    rc |= tmld_config_ms(d, "mqtt", "keepalive", 30000, 5000, 3600000,
                         &s->mqtt_keepalive_ms);
    rc |= tmld_config_ms(d, "mqtt", "reconnect_min", 250, 10, 600000,
                         &s->mqtt_reconnect_min_ms);
    rc |= tmld_config_ms(d, "mqtt", "reconnect_max", 5000, 10, 3600000,
                         &s->mqtt_reconnect_max_ms);
    if (s->mqtt_reconnect_max_ms < s->mqtt_reconnect_min_ms)
        tmld_config_error(d, "mqtt", "reconnect_max",
                          "must not be below reconnect_min");
    if (strlen(s->mqtt_client_id) > 64)
        tmld_config_error(d, "mqtt", "client_id", "longer than 64 bytes");
    /* Issue 7: no plaintext broker link unless the operator says, in the
     * config, that the broker is on this machine's loopback. */
    if (!s->mqtt_tls) {
        if (!s->mqtt_plaintext_loopback)
            tmld_config_error(d, "mqtt", "tls",
                              "'no' needs plaintext_loopback = yes (and a "
                              "loopback host): tmld refuses a broker "
                              "without TLS otherwise");
        else if (!is_loopback_host(s->mqtt_host))
            tmld_config_error(d, "mqtt", "host",
                              "'%s' is not a loopback address (127.x, ::1, "
                              "localhost): TLS is required",
                              s->mqtt_host);
    }

    s->db_path = str_or(d, "db", "path", "/var/lib/tmld/tmld.db");
    const char *sync = str_or(d, "db", "synchronous", "full");
    if (strcasecmp(sync, "full") == 0)
        s->db_sync_full = true;
    else if (strcasecmp(sync, "normal") == 0)
        s->db_sync_full = false;
    else
        tmld_config_error(d, "db", "synchronous",
                          "'%s' is not one of full, normal", sync);
    rc |= tmld_config_int(d, "db", "batch_records", 1000, 1, 100000, &i64);
    s->db_batch_records = (uint64_t)i64;
    rc |= tmld_config_ms(d, "db", "batch_ms", 50, 1, 10000, &s->db_batch_ms);
    rc |= tmld_config_size(d, "db", "max_size", 1024ull * 1024 * 1024,
                           1024 * 1024, 1ull << 40, &s->db_cap_bytes);
    rc |= tmld_config_int(d, "db", "queue_max", 200000, 100, 10000000, &i64);
    s->db_queue_max = (uint64_t)i64;

    rc |= tmld_config_int(d, "retention", "tele_days", 30, 1, 3650, &i64);
    s->ret_tele_days = (uint64_t)i64;
    rc |= tmld_config_size(d, "retention", "samples_max",
                           256ull * 1024 * 1024, 0, 1ull << 40,
                           &s->ret_samples_bytes);
    rc |= tmld_config_ms(d, "retention", "interval", 600000, 1000, 86400000,
                         &s->ret_interval_ms);

    s->ctl_socket = str_or(d, "control", "socket", "/run/tmld/tmld.sock");
    if (strlen(s->ctl_socket) >= 100)
        tmld_config_error(d, "control", "socket",
                          "path longer than 99 bytes (Unix socket limit)");
    rc |= tmld_config_int(d, "control", "max_clients", 32, 1, 1024, &i64);
    s->ctl_max_clients = (uint64_t)i64;
    rc |= tmld_config_ms(d, "control", "idle_timeout", 30000, 100, 3600000,
                         &s->ctl_idle_ms);
    rc |= tmld_config_ms(d, "control", "timeout", 10000, 100, 600000,
                         &s->ctl_timeout_ms);

    rc |= tmld_config_ms(d, "ingest", "offline_after", 300000, 1000,
                         86400000, &s->offline_after_ms);
    rc |= tmld_config_int(d, "ingest", "max_devices", 20000, 1, 1000000, &i64);
    s->max_devices = (uint64_t)i64;
    rc |= tmld_config_ms(d, "ingest", "malformed_log_interval", 60000, 0,
                         86400000, &s->malformed_log_ms);

    const char *lvl = str_or(d, "log", "level", "info");
    static const char *levels[] = {"err", "warning", "notice", "info",
                                   "debug"};
    s->log_level = -1;
    for (int i = 0; i < 5; i++)
        if (strcasecmp(lvl, levels[i]) == 0)
            s->log_level = 3 + i;
    if (s->log_level < 0) {
        tmld_config_error(d, "log", "level",
                          "'%s' is not one of err, warning, notice, info, "
                          "debug",
                          lvl);
        s->log_level = 6;
    }

    s->metrics_textfile = str_or(d, "metrics", "textfile", "");
    rc |= tmld_config_ms(d, "metrics", "interval", 15000, 1000, 3600000,
                         &s->metrics_interval_ms);
    (void)rc; /* every failure was counted by tmld_config_error */
    return d->conf.n_errors - before;
}
