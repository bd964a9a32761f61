/*
 * cli.c: the shared command-line plumbing of tmlctl: option tables, error
 * and progress messages, colour, aligned tables and JSON output. Nothing in
 * here knows a command; nothing here talks to tmld (ctlsock.c does).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tmlctl.h"

/* ---- messages ------------------------------------------------------------ */

static void
vmsg(const struct tmlctl *ctl, const char *tag, enum tmlctl_color c,
     const char *fmt, va_list ap)
{
    static const char *const esc[] = {"",         "\033[31m", "\033[32m",
                                      "\033[33m", "\033[34m", "\033[1m",
                                      "\033[2m"};
    bool col = ctl != NULL && ctl->color_err;
    fprintf(stderr, "tmlctl: ");
    if (tag != NULL)
        fprintf(stderr, "%s%s%s", col ? esc[c] : "", tag, col ? "\033[0m" : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int
tmlctl_fail(const struct tmlctl *ctl, int code, const char *hint,
            const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(ctl, "error: ", TMLCTL_C_RED, fmt, ap);
    va_end(ap);
    if (hint != NULL)
        fprintf(stderr, "  hint: %s\n", hint);
    return code;
}

void
tmlctl_warn(const struct tmlctl *ctl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(ctl, "warning: ", TMLCTL_C_YELLOW, fmt, ap);
    va_end(ap);
}

void
tmlctl_info(const struct tmlctl *ctl, const char *fmt, ...)
{
    if (ctl->quiet || ctl->json)
        return;
    va_list ap;
    va_start(ap, fmt);
    vmsg(ctl, NULL, TMLCTL_C_NONE, fmt, ap);
    va_end(ap);
}

/* ---- numbers ------------------------------------------------------------- */

bool
tmlctl_parse_u32(const char *s, uint32_t *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return false;
    uint64_t v = 0;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > UINT32_MAX)
            return false;
    }
    *out = (uint32_t)v;
    return true;
}

static bool
parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return false;
    uint64_t v = 0;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return false;
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

bool
tmlctl_parse_duration(const char *s, uint64_t *out_s)
{
    if (s == NULL || *s == '\0')
        return false;
    size_t n = strlen(s);
    uint64_t mult = 1;
    char num[32];
    if (n >= sizeof(num))
        return false;
    memcpy(num, s, n + 1);
    switch (num[n - 1]) {
    case 's':
        mult = 1;
        num[n - 1] = '\0';
        break;
    case 'm':
        mult = 60;
        num[n - 1] = '\0';
        break;
    case 'h':
        mult = 3600;
        num[n - 1] = '\0';
        break;
    case 'd':
        mult = 86400;
        num[n - 1] = '\0';
        break;
    case 'y':
        mult = 365u * 86400u;
        num[n - 1] = '\0';
        break;
    default:
        break;
    }
    uint64_t v;
    if (!parse_u64(num, &v) || v > UINT64_MAX / mult)
        return false;
    *out_s = v * mult;
    return true;
}

static bool
parse_percent(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno != 0)
        return false;
    if (*end == '%')
        end++;
    if (*end != '\0' || !(v >= 0.0 && v <= 100.0))
        return false;
    *out = v;
    return true;
}

/* ---- option parsing ------------------------------------------------------ */

static void
print_help(const char *usage, const struct tmlctl_opt *opts)
{
    printf("usage: tmlctl %s\n", usage);
    if (opts != NULL && opts[0].name != NULL)
        printf("\noptions:\n");
    for (const struct tmlctl_opt *o = opts; o != NULL && o->name != NULL; o++) {
        char left[64];
        if (o->short_name != 0)
            snprintf(left, sizeof(left), "-%c, --%s%s%s", o->short_name,
                     o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        else
            snprintf(left, sizeof(left), "    --%s%s%s", o->name,
                     o->arg ? " " : "", o->arg ? o->arg : "");
        printf("  %-28s %s%s%s\n", left, o->help ? o->help : "",
               o->required ? " (required)" : "",
               o->type == TMLCTL_OPT_LIST ? " (repeatable)" : "");
    }
    printf("\ncommon options: --json, --socket PATH, --timeout MS, "
           "--no-color, -q, --help\n");
}

static int
usage_error(const struct tmlctl *ctl, const char *usage, const char *fmt,
            const char *arg)
{
    char hint[256];
    snprintf(hint, sizeof(hint), "usage: tmlctl %s (see --help)", usage);
    return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, hint, fmt, arg);
}

static bool
list_add(struct tmlctl_list *l, char *val)
{
    /* "a,b,c" adds three values; the string is the caller's argv, which we
     * may split in place. */
    char *save = NULL;
    for (char *tok = strtok_r(val, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        if (l->n >= TMLCTL_MAX_LIST)
            return false;
        l->v[l->n++] = tok;
    }
    return true;
}

/* Stores one option value. Returns 0, or an exit code after an error. */
static int
store(struct tmlctl *ctl, const char *usage, const struct tmlctl_opt *o,
      char *val)
{
    switch (o->type) {
    case TMLCTL_OPT_FLAG:
        *(bool *)o->dest = true;
        return 0;
    case TMLCTL_OPT_STR:
        *(const char **)o->dest = val;
        return 0;
    case TMLCTL_OPT_U32:
        if (!tmlctl_parse_u32(val, (uint32_t *)o->dest))
            return usage_error(ctl, usage, "--%s: not a number", o->name);
        return 0;
    case TMLCTL_OPT_U64:
        if (!parse_u64(val, (uint64_t *)o->dest))
            return usage_error(ctl, usage, "--%s: not a number", o->name);
        return 0;
    case TMLCTL_OPT_PERCENT:
        if (!parse_percent(val, (double *)o->dest))
            return usage_error(ctl, usage, "--%s: expected 0..100%%", o->name);
        return 0;
    case TMLCTL_OPT_LIST:
        if (!list_add((struct tmlctl_list *)o->dest, val))
            return usage_error(ctl, usage, "--%s: too many values", o->name);
        return 0;
    }
    return TMLCTL_EXIT_USAGE;
}

/* Handles the options every command accepts. Returns 1 if a consumed a
 * global option (and *i advanced over its argument), 0 if not global, or a
 * negative value on a usage error. */
static int
global_opt(struct tmlctl *ctl, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (strcmp(a, "--json") == 0) {
        ctl->json = true;
    } else if (strcmp(a, "--no-color") == 0) {
        ctl->color = ctl->color_err = false;
    } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
        ctl->quiet = true;
    } else if (strcmp(a, "--socket") == 0) {
        if (*i + 1 >= argc)
            return -1;
        ctl->socket = argv[++*i];
    } else if (strcmp(a, "--timeout") == 0) {
        uint32_t ms;
        if (*i + 1 >= argc || !tmlctl_parse_u32(argv[*i + 1], &ms) || ms == 0 ||
            ms > 86400000)
            return -1;
        ++*i;
        ctl->timeout_ms = (int)ms;
    } else {
        return 0;
    }
    return 1;
}

bool
tmlctl_parse(struct tmlctl *ctl, const char *usage,
             const struct tmlctl_opt *opts, int argc, char **argv,
             struct tmlctl_args *out, int *exit_code)
{
    bool seen[64] = {false};
    bool only_pos = false;
    out->n_pos = 0;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (!only_pos && strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (only_pos || a[0] != '-' || a[1] == '\0') {
            if (out->n_pos >= TMLCTL_MAX_POSITIONAL) {
                *exit_code =
                    usage_error(ctl, usage, "too many arguments%s", "");
                return false;
            }
            out->pos[out->n_pos++] = a;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_help(usage, opts);
            *exit_code = TMLCTL_EXIT_OK;
            return false;
        }
        int g = global_opt(ctl, argc, argv, &i);
        if (g < 0) {
            *exit_code = usage_error(ctl, usage, "bad value for %s", a);
            return false;
        }
        if (g > 0)
            continue;
        /* --name=value, --name value, -x value */
        const struct tmlctl_opt *o = NULL;
        char *val = NULL;
        size_t idx = 0;
        if (a[1] == '-') {
            char *eq = strchr(a + 2, '=');
            size_t nlen = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
            for (idx = 0; opts != NULL && opts[idx].name != NULL; idx++)
                if (strlen(opts[idx].name) == nlen &&
                    strncmp(opts[idx].name, a + 2, nlen) == 0) {
                    o = &opts[idx];
                    break;
                }
            if (o != NULL && eq != NULL) {
                if (o->type == TMLCTL_OPT_FLAG) {
                    *exit_code =
                        usage_error(ctl, usage, "%s takes no value", a);
                    return false;
                }
                val = eq + 1;
            }
        } else if (a[2] == '\0') {
            for (idx = 0; opts != NULL && opts[idx].name != NULL; idx++)
                if (opts[idx].short_name == a[1]) {
                    o = &opts[idx];
                    break;
                }
        }
        if (o == NULL) {
            *exit_code = usage_error(ctl, usage, "unknown option '%s'", a);
            return false;
        }
        if (o->type != TMLCTL_OPT_FLAG && val == NULL) {
            if (i + 1 >= argc) {
                *exit_code = usage_error(ctl, usage, "%s needs a value", a);
                return false;
            }
            val = argv[++i];
        }
        int rc = store(ctl, usage, o, val);
        if (rc != 0) {
            *exit_code = rc;
            return false;
        }
        if (idx < sizeof(seen))
            seen[idx] = true;
    }
    for (size_t idx = 0; opts != NULL && opts[idx].name != NULL; idx++) {
        if (opts[idx].required && (idx >= sizeof(seen) || !seen[idx])) {
            char name[80];
            snprintf(name, sizeof(name), "--%s", opts[idx].name);
            *exit_code = usage_error(ctl, usage, "missing %s", name);
            return false;
        }
    }
    return true;
}

/* ---- colour -----------------------------------------------------------------
 */

const char *
tmlctl_color(const struct tmlctl *ctl, enum tmlctl_color c)
{
    static const char *const esc[] = {"",         "\033[31m", "\033[32m",
                                      "\033[33m", "\033[34m", "\033[1m",
                                      "\033[2m"};
    if (!ctl->color || (size_t)c >= sizeof(esc) / sizeof(esc[0]))
        return "";
    return esc[c];
}

const char *
tmlctl_reset(const struct tmlctl *ctl)
{
    return ctl->color ? "\033[0m" : "";
}

/* ---- tables
 * ------------------------------------------------------------------ */

#define TABLE_MAX_ROWS 1000000u

struct tmlctl_table {
    size_t n_cols;
    size_t n_rows, cap_rows;
    char **cells;              /* (n_rows + 1) * n_cols, row 0 = header */
    enum tmlctl_color *colors; /* same layout */
};

/* Display width of a UTF-8 string: code points, not bytes (good enough for
 * the names we print; no East Asian wide characters expected). */
static size_t
display_width(const char *s)
{
    size_t w = 0;
    for (; *s != '\0'; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            w++;
    return w;
}

static bool
table_grow(struct tmlctl_table *t)
{
    if (t->n_rows + 1 < t->cap_rows)
        return true;
    if (t->cap_rows >= TABLE_MAX_ROWS)
        return false;
    size_t cap = t->cap_rows ? t->cap_rows * 2 : 16;
    char **cells = realloc(t->cells, cap * t->n_cols * sizeof(*cells));
    if (cells == NULL)
        return false;
    t->cells = cells;
    enum tmlctl_color *colors =
        realloc(t->colors, cap * t->n_cols * sizeof(*colors));
    if (colors == NULL)
        return false;
    t->colors = colors;
    t->cap_rows = cap;
    return true;
}

static bool
table_put_row(struct tmlctl_table *t, size_t row, const char *const *cells)
{
    for (size_t c = 0; c < t->n_cols; c++) {
        const char *v = cells[c] != NULL ? cells[c] : "-";
        t->cells[row * t->n_cols + c] = strdup(v);
        t->colors[row * t->n_cols + c] = TMLCTL_C_NONE;
        if (t->cells[row * t->n_cols + c] == NULL) {
            for (size_t k = 0; k < c; k++)
                free(t->cells[row * t->n_cols + k]);
            return false;
        }
    }
    return true;
}

struct tmlctl_table *
tmlctl_table_new(size_t n_cols, const char *const *headers)
{
    if (n_cols == 0 || n_cols > 64)
        return NULL;
    struct tmlctl_table *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->n_cols = n_cols;
    if (!table_grow(t) || !table_put_row(t, 0, headers)) {
        free(t->cells);
        free(t->colors);
        free(t);
        return NULL;
    }
    return t;
}

bool
tmlctl_table_add(struct tmlctl_table *t, const char *const *cells)
{
    if (!table_grow(t) || !table_put_row(t, t->n_rows + 1, cells))
        return false;
    t->n_rows++;
    return true;
}

void
tmlctl_table_color(struct tmlctl_table *t, size_t col, enum tmlctl_color c)
{
    if (t->n_rows > 0 && col < t->n_cols)
        t->colors[t->n_rows * t->n_cols + col] = c;
}

void
tmlctl_table_print(const struct tmlctl *ctl, const struct tmlctl_table *t,
                   FILE *out)
{
    size_t width[64] = {0};
    for (size_t r = 0; r <= t->n_rows; r++)
        for (size_t c = 0; c < t->n_cols; c++) {
            size_t w = display_width(t->cells[r * t->n_cols + c]);
            if (w > width[c])
                width[c] = w;
        }
    bool col = ctl->color && out == stdout;
    for (size_t r = 0; r <= t->n_rows; r++) {
        for (size_t c = 0; c < t->n_cols; c++) {
            const char *v = t->cells[r * t->n_cols + c];
            enum tmlctl_color k =
                r == 0 ? TMLCTL_C_BOLD : t->colors[r * t->n_cols + c];
            bool last = c + 1 == t->n_cols;
            if (col && k != TMLCTL_C_NONE)
                fprintf(out, "%s%s\033[0m", tmlctl_color(ctl, k), v);
            else
                fputs(v, out);
            if (!last)
                for (size_t p = display_width(v); p < width[c] + 2; p++)
                    fputc(' ', out);
        }
        fputc('\n', out);
    }
}

void
tmlctl_table_free(struct tmlctl_table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < (t->n_rows + 1) * t->n_cols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t->colors);
    free(t);
}

/* ---- JSON -----------------------------------------------------------------
 */

int
tmlctl_json_emit(cJSON *obj)
{
    if (obj == NULL)
        return TMLCTL_EXIT_FAIL;
    char *s = cJSON_Print(obj);
    cJSON_Delete(obj);
    if (s == NULL)
        return TMLCTL_EXIT_FAIL;
    puts(s);
    cJSON_free(s);
    return fflush(stdout) == 0 ? TMLCTL_EXIT_OK : TMLCTL_EXIT_IO;
}

/* ---- formatting ------------------------------------------------------------
 */

void
tmlctl_fmt_duration(int64_t s, char *buf, size_t cap)
{
    if (s < 0)
        s = 0;
    if (s < 60)
        snprintf(buf, cap, "%llds", (long long)s);
    else if (s < 3600)
        snprintf(buf, cap, "%lldm%02llds", (long long)(s / 60),
                 (long long)(s % 60));
    else if (s < 86400)
        snprintf(buf, cap, "%lldh%02lldm", (long long)(s / 3600),
                 (long long)(s % 3600 / 60));
    else
        snprintf(buf, cap, "%lldd%02lldh", (long long)(s / 86400),
                 (long long)(s % 86400 / 3600));
}

void
tmlctl_fmt_ago(int64_t t, int64_t now_s, char *buf, size_t cap)
{
    if (t <= 0) {
        snprintf(buf, cap, "never");
        return;
    }
    int64_t d = now_s - t;
    if (d < 0)
        d = 0;
    if (d < 60)
        snprintf(buf, cap, "%llds ago", (long long)d);
    else if (d < 3600)
        snprintf(buf, cap, "%lldm ago", (long long)(d / 60));
    else if (d < 86400)
        snprintf(buf, cap, "%lldh ago", (long long)(d / 3600));
    else
        snprintf(buf, cap, "%lldd ago", (long long)(d / 86400));
}

void
tmlctl_fmt_bytes(double n, char *buf, size_t cap)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    size_t u = 0;
    while (n >= 1024.0 && u + 1 < sizeof(unit) / sizeof(unit[0])) {
        n /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%.0f B", n);
    else
        snprintf(buf, cap, "%.1f %s", n, unit[u]);
}

double
tmlctl_jnum(const cJSON *o, const char *key, double dflt)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(x) ? x->valuedouble : dflt;
}

const char *
tmlctl_jstr(const cJSON *o, const char *key, const char *dflt)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(x) && x->valuestring != NULL ? x->valuestring : dflt;
}

bool
tmlctl_jbool(const cJSON *o, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}
