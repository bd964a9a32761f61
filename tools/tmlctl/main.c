/*
 * main.c: tmlctl's entry point. Owns the command registry (filled by the
 * TMLCTL_COMMAND constructors of the cmd_*.c files), the global options that
 * come before the command, and `tmlctl help`. It knows no command by name.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tmlctl.h"

#ifndef TMLCTL_VERSION
#define TMLCTL_VERSION "0.0.0"
#endif

static struct tmlctl_cmd *registry;

void
tmlctl_register(struct tmlctl_cmd *cmd)
{
    /* Keep the list sorted by name so `tmlctl help` is stable whatever the
     * link order of the command files. */
    struct tmlctl_cmd **pp = &registry;
    while (*pp != NULL && strcmp((*pp)->name, cmd->name) < 0)
        pp = &(*pp)->next;
    cmd->next = *pp;
    *pp = cmd;
}

const struct tmlctl_cmd *
tmlctl_find(const char *name)
{
    for (const struct tmlctl_cmd *c = registry; c != NULL; c = c->next)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

static void
usage(FILE *out)
{
    fprintf(out, "usage: tmlctl [--json] [--socket PATH] [--timeout MS] "
                 "[--no-color] [-q] COMMAND [ARGS]\n"
                 "       tmlctl COMMAND --help\n\ncommands:\n");
    size_t w = 4;
    for (const struct tmlctl_cmd *c = registry; c != NULL; c = c->next)
        if (strlen(c->name) > w)
            w = strlen(c->name);
    for (const struct tmlctl_cmd *c = registry; c != NULL; c = c->next)
        fprintf(out, "  %-*s  %s\n", (int)w, c->name, c->summary);
    fprintf(out, "  %-*s  %s\n", (int)w, "help", "show this list");
    fprintf(out,
            "\nenvironment: TMLD_SOCKET (control socket, default %s), "
            "NO_COLOR\nexit codes: 0 ok, 1 failed, 2 usage, 3 not found, "
            "4 conflict,\n  5 tmld unavailable, 6 verification failed, "
            "7 file error, 8 protocol error\n",
            TMLCTL_DEFAULT_SOCKET);
}

static bool
color_allowed(int fd)
{
    const char *nc = getenv("NO_COLOR");
    const char *term = getenv("TERM");
    if (nc != NULL && nc[0] != '\0')
        return false;
    if (term != NULL && strcmp(term, "dumb") == 0)
        return false;
    return isatty(fd) == 1;
}

int
main(int argc, char **argv)
{
    struct tmlctl ctl = {
        .json = false,
        .color = color_allowed(STDOUT_FILENO),
        .color_err = color_allowed(STDERR_FILENO),
        .quiet = false,
        .socket = getenv("TMLD_SOCKET"),
        .timeout_ms = TMLCTL_TIMEOUT_MS,
        .prog = "tmlctl",
    };
    if (ctl.socket == NULL || ctl.socket[0] == '\0')
        ctl.socket = TMLCTL_DEFAULT_SOCKET;

    /* Global options before the command; the same options are accepted
     * after it too (tmlctl_parse). */
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            ctl.json = true;
        } else if (strcmp(a, "--no-color") == 0) {
            ctl.color = ctl.color_err = false;
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            ctl.quiet = true;
        } else if (strcmp(a, "--socket") == 0 && i + 1 < argc) {
            ctl.socket = argv[++i];
        } else if (strncmp(a, "--socket=", 9) == 0) {
            ctl.socket = a + 9;
        } else if (strcmp(a, "--timeout") == 0 && i + 1 < argc) {
            uint32_t ms;
            if (!tmlctl_parse_u32(argv[++i], &ms) || ms == 0 || ms > 86400000)
                return tmlctl_fail(&ctl, TMLCTL_EXIT_USAGE,
                                   "give milliseconds, e.g. --timeout 5000",
                                   "bad --timeout '%s'", argv[i]);
            ctl.timeout_ms = (int)ms;
        } else if (strcmp(a, "--version") == 0) {
            printf("tmlctl %s\n", TMLCTL_VERSION);
            return TMLCTL_EXIT_OK;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return TMLCTL_EXIT_OK;
        } else {
            return tmlctl_fail(&ctl, TMLCTL_EXIT_USAGE,
                               "run 'tmlctl help' for the global options",
                               "unknown option '%s'", a);
        }
    }
    if (i >= argc) {
        usage(stderr);
        return TMLCTL_EXIT_USAGE;
    }
    if (strcmp(argv[i], "help") == 0) {
        if (i + 1 < argc) {
            const struct tmlctl_cmd *c = tmlctl_find(argv[i + 1]);
            if (c == NULL)
                return tmlctl_fail(&ctl, TMLCTL_EXIT_USAGE,
                                   "run 'tmlctl help' for the list",
                                   "unknown command '%s'", argv[i + 1]);
            char *hargv[] = {argv[i + 1], (char *)"--help", NULL};
            return c->fn(&ctl, 2, hargv);
        }
        usage(stdout);
        return TMLCTL_EXIT_OK;
    }
    const struct tmlctl_cmd *cmd = tmlctl_find(argv[i]);
    if (cmd == NULL)
        return tmlctl_fail(&ctl, TMLCTL_EXIT_USAGE,
                           "run 'tmlctl help' for the list of commands",
                           "unknown command '%s'", argv[i]);
    return cmd->fn(&ctl, argc - i, argv + i);
}
