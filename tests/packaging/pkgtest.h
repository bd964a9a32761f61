/*
 * pkgtest.h: small helpers shared by the packaging and operations tests
 * (tests/packaging/): run a shell command with a time limit and capture its
 * output, make and remove scratch directories, read files.
 *
 * These tests drive external tools (systemd-analyze, cpack, dpkg-deb,
 * scripts/quickstart), so the helpers are about processes and files, not
 * about the daemon's code.
 */
#ifndef TML_PKGTEST_H
#define TML_PKGTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Result of pt_run(). out is NUL-terminated and holds at most cap-1 bytes of
 * the command's stdout and stderr (the rest is read and dropped). */
struct pt_result {
    int exit_code;   /* exit status, 128+signal, or -1 on timeout/spawn error */
    bool timed_out;  /* the command ran past its limit and was killed */
    size_t out_len;  /* bytes stored in out */
};

/* Runs `sh -c cmd` in its own process group with stdin from /dev/null and
 * stdout+stderr captured into out[cap]. After timeout_s seconds the whole
 * group is killed (SIGTERM, then SIGKILL). Returns the exit code as in
 * struct pt_result; res may be NULL. */
int pt_run(const char *cmd, char *out, size_t cap, int timeout_s,
           struct pt_result *res);

/* pt_run() with a printf-formatted command; the command is limited to 8 KiB. */
int pt_runf(char *out, size_t cap, int timeout_s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* True when an executable named prog is on $PATH. */
bool pt_have(const char *prog);

/* Creates a fresh directory /tmp/<prefix>XXXXXX; returns a malloc'd path
 * (caller frees) or NULL. */
char *pt_mkdtemp(const char *prefix);

/* Removes dir recursively (rm -rf). Refuses paths outside /tmp. */
void pt_rmtree(const char *dir);

/* Reads a whole file (at most cap-1 bytes) into buf, NUL-terminated. Returns
 * the length or -1. */
ssize_t pt_read_file(const char *path, char *buf, size_t cap);

/* Writes len bytes to path (created or truncated, mode 0644). 0 or -1. */
int pt_write_file(const char *path, const char *buf, size_t len);

/* Returns getenv(name) or dflt when unset or empty. */
const char *pt_env(const char *name, const char *dflt);

#endif
