/*
 * ctlsock.c: tmlctl's client for tmld's control socket: JSON lines over a
 * Unix stream socket (docs/ctl-protocol.md). One request object per line;
 * responses carry the request's id; other lines (events of a watch) are
 * returned by tmlctl_read_message. Lines are capped at 1 MiB, every wait
 * has a timeout, and nothing here retries on its own.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "tmlctl.h"

/* tmld's own lines are capped at 64 KiB for requests; results can be
 * larger (lists), so the client allows 16 MiB. */
#define LINE_MAX_BYTES (16u * 1024u * 1024u)

struct tmlctl_conn {
    const struct tmlctl *ctl;
    int fd;
    int next_id;
    char *buf; /* received bytes not yet returned as lines */
    size_t len, cap;
};

int
tmlctl_connect(const struct tmlctl *ctl, struct tmlctl_conn **out)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(ctl->socket) >= sizeof(sa.sun_path))
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL,
                           "socket path too long: %s", ctl->socket);
    memcpy(sa.sun_path, ctl->socket, strlen(ctl->socket) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return tmlctl_fail(ctl, TMLCTL_EXIT_UNAVAILABLE, NULL, "socket: %s",
                           strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        close(fd);
        const char *hint = e == EACCES
                               ? "add yourself to the tmld group, or use sudo"
                           : e == ENOENT || e == ECONNREFUSED
                               ? "is tmld running? (systemctl status tmld); "
                                 "--socket or TMLD_SOCKET pick another socket"
                               : NULL;
        return tmlctl_fail(ctl, TMLCTL_EXIT_UNAVAILABLE, hint,
                           "cannot connect to tmld at %s: %s", ctl->socket,
                           strerror(e));
    }
    struct tmlctl_conn *c = tmlctl_conn_from_fd(ctl, fd);
    if (c == NULL)
        return tmlctl_fail(ctl, TMLCTL_EXIT_FAIL, NULL, "out of memory");
    *out = c;
    return TMLCTL_EXIT_OK;
}

struct tmlctl_conn *
tmlctl_conn_from_fd(const struct tmlctl *ctl, int fd)
{
    struct tmlctl_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return NULL;
    }
    c->ctl = ctl;
    c->fd = fd;
    c->next_id = 1;
    return c;
}

void
tmlctl_close(struct tmlctl_conn *c)
{
    if (c == NULL)
        return;
    close(c->fd);
    free(c->buf);
    free(c);
}

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
send_all(struct tmlctl_conn *c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return tmlctl_fail(c->ctl, TMLCTL_EXIT_UNAVAILABLE, NULL,
                               "sending to tmld: %s", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
    return TMLCTL_EXIT_OK;
}

int
tmlctl_read_message(struct tmlctl_conn *c, int timeout_ms, cJSON **msg)
{
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    for (;;) {
        char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
        if (nl != NULL) {
            *nl = '\0';
            size_t line_len = (size_t)(nl - c->buf);
            cJSON *j = cJSON_ParseWithLength(c->buf, line_len);
            memmove(c->buf, nl + 1, c->len - line_len - 1);
            c->len -= line_len + 1;
            if (j == NULL || !cJSON_IsObject(j)) {
                cJSON_Delete(j);
                return tmlctl_fail(c->ctl, TMLCTL_EXIT_PROTOCOL,
                                   "tmld and tmlctl versions may differ",
                                   "tmld sent a line that is not a JSON "
                                   "object");
            }
            *msg = j;
            return TMLCTL_EXIT_OK;
        }
        if (c->len >= LINE_MAX_BYTES)
            return tmlctl_fail(c->ctl, TMLCTL_EXIT_PROTOCOL, NULL,
                               "tmld sent a line over %u bytes",
                               LINE_MAX_BYTES);
        if (c->cap - c->len < 4096) {
            size_t cap = c->cap ? c->cap * 2 : 8192;
            if (cap > LINE_MAX_BYTES + 8192)
                cap = LINE_MAX_BYTES + 8192;
            char *nb = realloc(c->buf, cap);
            if (nb == NULL)
                return tmlctl_fail(c->ctl, TMLCTL_EXIT_FAIL, NULL,
                                   "out of memory");
            c->buf = nb;
            c->cap = cap;
        }
        int wait = -1;
        if (deadline >= 0) {
            int64_t left = deadline - now_ms();
            if (left <= 0)
                return TMLCTL_WAIT_TIMEOUT;
            wait = (int)left;
        }
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, wait);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0)
            return tmlctl_fail(c->ctl, TMLCTL_EXIT_UNAVAILABLE, NULL,
                               "poll: %s", strerror(errno));
        if (pr == 0)
            return TMLCTL_WAIT_TIMEOUT;
        ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return tmlctl_fail(c->ctl, TMLCTL_EXIT_UNAVAILABLE,
                               "see tmld's log (journalctl -u tmld)",
                               "tmld closed the connection");
        c->len += (size_t)r;
    }
}

/* Maps an error response to an exit code and prints it. */
static int
error_response(struct tmlctl_conn *c, const cJSON *resp)
{
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(resp, "error");
    const char *code = NULL, *message = NULL, *hint = NULL;
    if (cJSON_IsObject(err)) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(err, "code");
        code = cJSON_IsString(x) ? x->valuestring : NULL;
        x = cJSON_GetObjectItemCaseSensitive(err, "message");
        message = cJSON_IsString(x) ? x->valuestring : NULL;
        x = cJSON_GetObjectItemCaseSensitive(err, "hint");
        hint = cJSON_IsString(x) ? x->valuestring : NULL;
    } else if (cJSON_IsString(err)) {
        message = err->valuestring;
    }
    static const struct {
        const char *code;
        int exit_code;
    } map[] = {
        {"bad_request", TMLCTL_EXIT_USAGE},
        {"too_large", TMLCTL_EXIT_USAGE},
        {"unsupported_version", TMLCTL_EXIT_USAGE},
        {"unknown_cmd", TMLCTL_EXIT_USAGE},
        {"bad_args", TMLCTL_EXIT_USAGE},
        {"not_found", TMLCTL_EXIT_NOTFOUND},
        {"conflict", TMLCTL_EXIT_CONFLICT},
        {"busy", TMLCTL_EXIT_UNAVAILABLE},
        {"unavailable", TMLCTL_EXIT_UNAVAILABLE},
        {"timeout", TMLCTL_EXIT_UNAVAILABLE},
        {"rejected", TMLCTL_EXIT_INVALID},
        {"internal", TMLCTL_EXIT_FAIL},
    };
    int rc = TMLCTL_EXIT_FAIL;
    for (size_t i = 0; code != NULL && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(code, map[i].code) == 0)
            rc = map[i].exit_code;
    if (code != NULL && strcmp(code, "unknown_cmd") == 0 && hint == NULL)
        hint = "tmld may be older than tmlctl, or the module is disabled";
    return tmlctl_fail(c->ctl, rc, hint, "tmld: %s%s%s%s",
                       message ? message : "request failed", code ? " (" : "",
                       code ? code : "", code ? ")" : "");
}

int
tmlctl_request(struct tmlctl_conn *c, const char *cmd, cJSON *args,
               cJSON **result)
{
    int id = c->next_id++;
    cJSON *req = cJSON_CreateObject();
    if (req == NULL) {
        cJSON_Delete(args);
        return tmlctl_fail(c->ctl, TMLCTL_EXIT_FAIL, NULL, "out of memory");
    }
    cJSON_AddNumberToObject(req, "v", 1);
    cJSON_AddNumberToObject(req, "id", id);
    cJSON_AddStringToObject(req, "cmd", cmd);
    if (args != NULL)
        cJSON_AddItemToObject(req, "args", args);
    char *line = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    if (line == NULL)
        return tmlctl_fail(c->ctl, TMLCTL_EXIT_FAIL, NULL, "out of memory");
    size_t n = strlen(line);
    int rc = send_all(c, line, n);
    if (rc == TMLCTL_EXIT_OK)
        rc = send_all(c, "\n", 1);
    cJSON_free(line);
    if (rc != TMLCTL_EXIT_OK)
        return rc;

    int64_t deadline = now_ms() + c->ctl->timeout_ms;
    for (;;) {
        int64_t left = deadline - now_ms();
        cJSON *resp = NULL;
        rc = left > 0 ? tmlctl_read_message(c, (int)left, &resp)
                      : TMLCTL_WAIT_TIMEOUT;
        if (rc == TMLCTL_WAIT_TIMEOUT)
            return tmlctl_fail(c->ctl, TMLCTL_EXIT_UNAVAILABLE,
                               "tmld may be overloaded; "
                               "--timeout MS waits longer",
                               "no answer from tmld to '%s' within %d ms", cmd,
                               c->ctl->timeout_ms);
        if (rc != TMLCTL_EXIT_OK)
            return rc;
        const cJSON *rid = cJSON_GetObjectItemCaseSensitive(resp, "id");
        if (!cJSON_IsNumber(rid) || rid->valueint != id) {
            /* An event or a stale reply: not ours, skip it. */
            cJSON_Delete(resp);
            continue;
        }
        const cJSON *ok = cJSON_GetObjectItemCaseSensitive(resp, "ok");
        if (cJSON_IsFalse(ok) ||
            cJSON_GetObjectItemCaseSensitive(resp, "error") != NULL) {
            rc = error_response(c, resp);
            cJSON_Delete(resp);
            return rc;
        }
        if (result != NULL)
            *result = cJSON_DetachItemFromObjectCaseSensitive(resp, "result");
        cJSON_Delete(resp);
        return TMLCTL_EXIT_OK;
    }
}

int
tmlctl_call(const struct tmlctl *ctl, const char *cmd, cJSON *args,
            cJSON **result)
{
    struct tmlctl_conn *c = NULL;
    int rc = tmlctl_connect(ctl, &c);
    if (rc != TMLCTL_EXIT_OK) {
        cJSON_Delete(args);
        return rc;
    }
    rc = tmlctl_request(c, cmd, args, result);
    tmlctl_close(c);
    return rc;
}
