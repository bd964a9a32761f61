/*
 * test_ctlsock.c: tmlctl's control-socket client against a scripted fake
 * tmld (a thread serving a Unix socket in a mkdtemp dir): the request line
 * it sends, every error code of docs/ctl-protocol.md mapped to its exit
 * code, responses matched by id (stale lines skipped), garbage (8), silence
 * (--timeout: 5), a closed connection (5), over-long lines, and that --json
 * passes tmld's result through unchanged.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

static char dir[64], sock_path[128], bin[1024];
static int listen_fd = -1;
static pthread_t server;

/* What the fake tmld answers to the next request: a format with one %d for
 * the request's id ("" = say nothing, "CLOSE" = hang up). */
static char reply_fmt[4096];
static char last_request[4096];
static volatile bool stop_server;
static bool server_started;

static void *
serve(void *arg)
{
    (void)arg;
    while (!stop_server) {
        int c = accept(listen_fd, NULL, NULL);
        if (c < 0)
            continue;
        char buf[4096];
        size_t n = 0;
        while (n < sizeof(buf) - 1) {
            ssize_t r = read(c, buf + n, sizeof(buf) - 1 - n);
            if (r <= 0)
                break;
            n += (size_t)r;
            if (memchr(buf, '\n', n) != NULL)
                break;
        }
        buf[n] = '\0';
        snprintf(last_request, sizeof(last_request), "%s", buf);
        int id = -1;
        cJSON *j = cJSON_Parse(buf);
        if (j != NULL && cJSON_IsNumber(cJSON_GetObjectItem(j, "id")))
            id = cJSON_GetObjectItem(j, "id")->valueint;
        cJSON_Delete(j);
        if (strcmp(reply_fmt, "CLOSE") == 0) {
            close(c);
            continue;
        }
        char out[8192];
        int len = snprintf(out, sizeof(out), reply_fmt, id, id);
        if (len > 0 && write(c, out, (size_t)len) != len) {
            close(c);
            continue;
        }
        /* Keep the connection until the client hangs up. */
        while (read(c, buf, sizeof(buf)) > 0) {
        }
        close(c);
    }
    return NULL;
}

static int
run(const char *fmt, ...)
{
    char args[1024], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof(cmd), "%s --socket %s %s >%s/out 2>%s/err", bin,
             sock_path, args, dir, dir);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static bool
out_has(const char *file, const char *needle)
{
    char p[128], buf[8192] = "";
    snprintf(p, sizeof(p), "%s/%s", dir, file);
    FILE *f = fopen(p, "r");
    if (f == NULL)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return strstr(buf, needle) != NULL;
}

static int
setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/tmlctl_sock.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(sock_path, sizeof(sock_path), "%s/tmld.sock", dir);
    const char *b = getenv("TML_BINARY_DIR");
    snprintf(bin, sizeof(bin), "%s/tools/tmlctl/tmlctl", b ? b : ".");
    listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, sock_path);
    assert_int_equal(bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(listen_fd, 8), 0);
    /* accept() wakes up every 200 ms to notice stop_server. */
    struct timeval tv = {0, 200000};
    setsockopt(listen_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(pthread_create(&server, NULL, serve, NULL), 0);
    server_started = true;
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    stop_server = true;
    if (server_started)
        pthread_join(server, NULL);
    if (listen_fd >= 0)
        close(listen_fd);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void
test_request_line_and_json_passthrough(void **state)
{
    (void)state;
    snprintf(reply_fmt, sizeof(reply_fmt),
             "{\"v\":1,\"id\":%%d,\"ok\":true,\"result\":{\"groups\":"
             "[{\"name\":\"turbines\",\"devices\":25,\"online\":24}],"
             "\"extra\":\"kept\"}}\n");
    assert_int_equal(run("--json groups"), 0);
    cJSON *req = cJSON_Parse(last_request);
    assert_non_null(req);
    assert_int_equal(cJSON_GetObjectItem(req, "v")->valueint, 1);
    assert_string_equal(cJSON_GetObjectItem(req, "cmd")->valuestring, "groups");
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(req, "id")));
    assert_non_null(strchr(last_request, '\n'));
    cJSON_Delete(req);
    assert_true(out_has("out", "\"extra\":\t\"kept\""));
    /* Text: a table. */
    assert_int_equal(run("groups"), 0);
    assert_true(out_has("out", "GROUP"));
    assert_true(out_has("out", "turbines"));
    /* Arguments reach tmld as typed JSON. */
    snprintf(reply_fmt, sizeof(reply_fmt),
             "{\"id\":%%d,\"ok\":true,\"result\":{\"total\":0,"
             "\"devices\":[]}}\n");
    assert_int_equal(run("devices --group pumps --online --limit 5"), 0);
    req = cJSON_Parse(last_request);
    cJSON *args = cJSON_GetObjectItem(req, "args");
    assert_string_equal(cJSON_GetObjectItem(args, "group")->valuestring,
                        "pumps");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(args, "online")));
    assert_int_equal(cJSON_GetObjectItem(args, "limit")->valueint, 5);
    cJSON_Delete(req);
}

static void
test_error_codes_map_to_exit_codes(void **state)
{
    (void)state;
    static const struct {
        const char *code;
        int exit_code;
    } map[] = {
        {"bad_request", 2}, {"too_large", 2}, {"unsupported_version", 2},
        {"unknown_cmd", 2}, {"bad_args", 2},  {"not_found", 3},
        {"conflict", 4},    {"busy", 5},      {"unavailable", 5},
        {"timeout", 5},     {"internal", 1},  {"something_new", 1},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        snprintf(reply_fmt, sizeof(reply_fmt),
                 "{\"v\":1,\"id\":%%d,\"ok\":false,\"error\":{\"code\":"
                 "\"%s\",\"message\":\"because %s\"}}\n",
                 map[i].code, map[i].code);
        assert_int_equal(run("groups"), map[i].exit_code);
        char msg[64];
        snprintf(msg, sizeof(msg), "because %s", map[i].code);
        assert_true(out_has("err", msg));
    }
}

static void
test_stale_lines_skipped_garbage_silence_and_hangup(void **state)
{
    (void)state;
    /* An event and a stale response before ours: skipped. */
    snprintf(reply_fmt, sizeof(reply_fmt),
             "{\"event\":\"x\"}\n{\"id\":999,\"ok\":false,\"error\":"
             "{\"code\":\"internal\"}}\n{\"id\":%%d,\"ok\":true,\"result\":"
             "{\"groups\":[]}}\n");
    assert_int_equal(run("groups"), 0);
    /* Not JSON: protocol error 8. */
    snprintf(reply_fmt, sizeof(reply_fmt), "HTTP/1.0 400 nonsense\n");
    assert_int_equal(run("groups"), 8);
    /* Silence: gives up after --timeout, exit 5, says so. */
    reply_fmt[0] = '\0';
    assert_int_equal(run("--timeout 300 groups"), 5);
    assert_true(out_has("err", "no answer"));
    /* Hang-up: 5. */
    snprintf(reply_fmt, sizeof(reply_fmt), "CLOSE");
    assert_int_equal(run("groups"), 5);
    /* No socket at all: 5 with a hint. */
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "%s --socket %s/none groups 2>%s/err", bin, dir,
             dir);
    int st = system(cmd);
    assert_int_equal(WEXITSTATUS(st), 5);
    assert_true(out_has("err", "hint:"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_line_and_json_passthrough),
        cmocka_unit_test(test_error_codes_map_to_exit_codes),
        cmocka_unit_test(test_stale_lines_skipped_garbage_silence_and_hangup),
    };
    return cmocka_run_group_tests_name("tmlctl_ctlsock", tests, setup,
                                       teardown);
}
