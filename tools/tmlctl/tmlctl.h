/*
 * tmlctl.h: what every tmlctl command file uses.
 *
 * A command lives in its own tools/tmlctl/cmd_<name>.c and registers itself:
 *
 *     static int cmd_keygen(struct tmlctl *ctl, int argc, char **argv);
 *     TMLCTL_COMMAND("keygen", "make an operator signing key pair",
 *                    cmd_keygen)
 *
 * CMake globs every .c file in tools/tmlctl, so adding a file adds the command;
 * nobody edits main.c. argv[0] is the command name; argv[1..] are its arguments
 * (global options before the command have been consumed by main.c).
 *
 * A handler returns one of the TMLCTL_EXIT_* codes. It reports errors with
 * tmlctl_fail() (stderr, one line, optional hint) and prints results either
 * as text/tables or, when ctl->json is set, as one JSON document on stdout.
 */
#ifndef TMLCTL_H
#define TMLCTL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#define TMLCTL_DEFAULT_SOCKET "/run/tmld/tmld.sock"
#define TMLCTL_MAX_POSITIONAL 16
#define TMLCTL_MAX_LIST 16      /* values of one repeatable option */
#define TMLCTL_TIMEOUT_MS 10000 /* default wait for one tmld response */

/* Exit codes. They are part of the interface (scripts test them), listed in
 * tmlctl(1), and match the error codes of docs/ctl-protocol.md. */
enum tmlctl_exit {
    TMLCTL_EXIT_OK = 0,
    TMLCTL_EXIT_FAIL = 1,        /* failed (tmld "internal", local errors) */
    TMLCTL_EXIT_USAGE = 2,       /* bad command line / tmld "bad_args" ... */
    TMLCTL_EXIT_NOTFOUND = 3,    /* named object does not exist */
    TMLCTL_EXIT_CONFLICT = 4,    /* contradicts the current state */
    TMLCTL_EXIT_UNAVAILABLE = 5, /* tmld unreachable, busy or timed out */
    TMLCTL_EXIT_INVALID = 6,     /* verification failed (bad signature...) */
    TMLCTL_EXIT_IO = 7,          /* local file could not be read/written */
    TMLCTL_EXIT_PROTOCOL = 8     /* tmld answered something we cannot use */
};

/* Not an exit code: tmlctl_read_message's "nothing arrived in time". */
#define TMLCTL_WAIT_TIMEOUT 9

/* Global state shared by all commands. */
struct tmlctl {
    bool json;          /* --json: machine-readable output on stdout */
    bool color;         /* colour allowed on stdout (TTY, no NO_COLOR) */
    bool color_err;     /* colour allowed on stderr */
    bool quiet;         /* -q: no progress chatter */
    const char *socket; /* --socket, else $TMLD_SOCKET, else default */
    int timeout_ms;     /* --timeout for tmld requests */
    const char *prog;   /* "tmlctl" */
};

typedef int (*tmlctl_fn)(struct tmlctl *ctl, int argc, char **argv);

struct tmlctl_cmd {
    const char *name;
    const char *summary; /* one line for `tmlctl help` */
    tmlctl_fn fn;
    struct tmlctl_cmd *next; /* registry link, set by tmlctl_register */
};

/* Adds cmd to the registry (called from constructors, before main). */
void tmlctl_register(struct tmlctl_cmd *cmd);
/* Looks a command up by name; NULL if unknown. */
const struct tmlctl_cmd *tmlctl_find(const char *name);

#define TMLCTL_COMMAND(name_, summary_, fn_)                                   \
    static struct tmlctl_cmd tmlctl__cmd_##fn_ = {name_, summary_, fn_, NULL}; \
    __attribute__((constructor)) static void tmlctl__reg_##fn_(void)           \
    {                                                                          \
        tmlctl_register(&tmlctl__cmd_##fn_);                                   \
    }

/* ---- option parsing --------------------------------------------------------
 * A command declares its options in a table ended by {0}. Every command
 * automatically accepts --help/-h (prints usage + options, exit 0), --json,
 * --socket PATH, --timeout MS, --no-color and -q anywhere on its line. */

enum tmlctl_opt_type {
    TMLCTL_OPT_FLAG,    /* bool *, no argument */
    TMLCTL_OPT_STR,     /* const char **, argument */
    TMLCTL_OPT_U32,     /* uint32_t *, decimal, checked range */
    TMLCTL_OPT_U64,     /* uint64_t * */
    TMLCTL_OPT_PERCENT, /* double *, "5%" or "5" -> 5.0, 0..100 */
    TMLCTL_OPT_LIST     /* struct tmlctl_list *, repeatable and/or a,b,c */
};

struct tmlctl_list {
    size_t n;
    const char *v[TMLCTL_MAX_LIST];
};

struct tmlctl_opt {
    const char *name; /* long name without "--" */
    char short_name;  /* 0 if none */
    enum tmlctl_opt_type type;
    void *dest;
    const char *arg; /* argument name in help ("FILE"); NULL for flags */
    const char *help;
    bool required;
};

struct tmlctl_args {
    int n_pos;
    char *pos[TMLCTL_MAX_POSITIONAL];
};

/* Parses argv[1..argc-1] against opts. usage is the synopsis after
 * "tmlctl " (e.g. "sign FILE --key KEY ..."). Returns true to go on; false
 * when the command must return *exit_code now (help printed: OK; error
 * printed with the usage hint: USAGE). "--" ends options. */
bool tmlctl_parse(struct tmlctl *ctl, const char *usage,
                  const struct tmlctl_opt *opts, int argc, char **argv,
                  struct tmlctl_args *out, int *exit_code);

/* Parses a duration "90", "90s", "15m", "2h", "7d" into seconds; false on
 * junk or overflow. */
bool tmlctl_parse_duration(const char *s, uint64_t *out_s);
/* Parses a decimal uint32 with no junk; false otherwise. */
bool tmlctl_parse_u32(const char *s, uint32_t *out);

/* ---- messages ---------------------------------------------------------------
 * tmlctl_fail prints "tmlctl: <message>" and, when hint != NULL, a second
 * line "  hint: <hint>" on stderr, and returns code so a handler can write
 * `return tmlctl_fail(ctl, TMLCTL_EXIT_IO, "check the path", "%s: %s", ...)`.
 */
int tmlctl_fail(const struct tmlctl *ctl, int code, const char *hint,
                const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void tmlctl_warn(const struct tmlctl *ctl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Progress/info line on stderr unless -q or --json. */
void tmlctl_info(const struct tmlctl *ctl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- colour and tables ------------------------------------------------------
 */

enum tmlctl_color {
    TMLCTL_C_NONE = 0,
    TMLCTL_C_RED,
    TMLCTL_C_GREEN,
    TMLCTL_C_YELLOW,
    TMLCTL_C_BLUE,
    TMLCTL_C_BOLD,
    TMLCTL_C_DIM
};

/* Escape sequence for c on stdout, or "" when colour is off. */
const char *tmlctl_color(const struct tmlctl *ctl, enum tmlctl_color c);
/* Reset sequence, or "". */
const char *tmlctl_reset(const struct tmlctl *ctl);

/* A text table: columns aligned to the widest cell (UTF-8 aware), header in
 * bold on a TTY, colour per cell. Cells are copied. */
struct tmlctl_table;

struct tmlctl_table *tmlctl_table_new(size_t n_cols,
                                      const char *const *headers);
/* Adds a row of n_cols cells (NULL prints "-"). Returns false on ENOMEM. */
bool tmlctl_table_add(struct tmlctl_table *t, const char *const *cells);
/* Colours cell col of the last row added. */
void tmlctl_table_color(struct tmlctl_table *t, size_t col,
                        enum tmlctl_color c);
void tmlctl_table_print(const struct tmlctl *ctl, const struct tmlctl_table *t,
                        FILE *out);
void tmlctl_table_free(struct tmlctl_table *t);

/* ---- formatting helpers
 * ------------------------------------------------------ */

/* "3s ago", "5m ago", "2h ago", "4d ago", "never" (t == 0), relative to
 * now_s; for a table cell. */
void tmlctl_fmt_ago(int64_t t, int64_t now_s, char *buf, size_t cap);
/* "512 B", "1.5 KiB", "3.2 MiB", "1.1 GiB". */
void tmlctl_fmt_bytes(double n, char *buf, size_t cap);
/* "1h02m", "3d04h", "42s". */
void tmlctl_fmt_duration(int64_t s, char *buf, size_t cap);
/* JSON helpers that tolerate absent fields: number (or dflt), string (or
 * dflt), bool (or false). */
double tmlctl_jnum(const cJSON *o, const char *key, double dflt);
const char *tmlctl_jstr(const cJSON *o, const char *key, const char *dflt);
bool tmlctl_jbool(const cJSON *o, const char *key);

/* ---- JSON output
 * -------------------------------------------------------------- */

/* Prints obj as one pretty JSON document + newline on stdout (takes
 * ownership and frees it). Returns OK or FAIL (ENOMEM). */
int tmlctl_json_emit(cJSON *obj);

/* ---- control socket client
 * --------------------------------------------------- JSON lines over the Unix
 * socket of tmld (docs/ctl-protocol.md): one request object per line, one
 * response object per line (events may follow for watch-style requests). */

struct tmlctl_conn;

/* Connects to ctl->socket. Returns OK, or UNAVAILABLE after printing what
 * went wrong and a hint (is tmld running? permission to the socket?). */
int tmlctl_connect(const struct tmlctl *ctl, struct tmlctl_conn **out);

/* Sends one request line {"v":1,"id":N,"cmd":cmd,"args":args} (args may be
 * NULL; ownership of args is taken) and waits up to ctl->timeout_ms for the
 * response with the same id. On OK *result (may be NULL) gets the
 * response's "result" (caller frees with cJSON_Delete; may be NULL if the
 * response had none). On an error response prints its message (and hint)
 * and returns the exit code the protocol's table gives for its code
 * (USAGE, NOTFOUND, CONFLICT, UNAVAILABLE, FAIL). Other returns:
 * UNAVAILABLE (connection lost, no answer in time), PROTOCOL. */
int tmlctl_request(struct tmlctl_conn *c, const char *cmd, cJSON *args,
                   cJSON **result);

/* Reads the next JSON object line (e.g. a watch event) waiting up to
 * timeout_ms (-1 = forever). Returns OK (*msg owned by caller),
 * TMLCTL_WAIT_TIMEOUT (silently), UNAVAILABLE (closed), PROTOCOL (not JSON,
 * line over 1 MiB); the last two print a message. */
int tmlctl_read_message(struct tmlctl_conn *c, int timeout_ms, cJSON **msg);

void tmlctl_close(struct tmlctl_conn *c);

/* Wraps an already connected stream socket (tests, fuzzing); takes fd.
 * Returns NULL on ENOMEM (fd is then closed). */
struct tmlctl_conn *tmlctl_conn_from_fd(const struct tmlctl *ctl, int fd);

/* connect + request + close. */
int tmlctl_call(const struct tmlctl *ctl, const char *cmd, cJSON *args,
                cJSON **result);

#endif /* TMLCTL_H */
