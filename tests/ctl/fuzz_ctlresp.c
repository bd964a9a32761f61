/*
 * fuzz_ctlresp.c: libFuzzer harness for tmlctl's control-socket client
 * (tools/tmlctl/ctlsock.c): whatever a (compromised or buggy) tmld sends
 * back. The input is pre-loaded into a socketpair whose peer then closes
 * its sending side; tmlctl_request must return an exit code, never crash,
 * hang or read out of bounds; then the rest is drained with
 * tmlctl_read_message.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tmlctl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool quiet;
    if (!quiet) {
        /* tmlctl_fail reports every rejection on stderr. */
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, STDERR_FILENO);
        quiet = true;
    }
    if (size > 60000) /* stays within one socket buffer */
        return 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        abort();
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(sv[1], data + off, size - off);
        if (w <= 0)
            abort();
        off += (size_t)w;
    }
    shutdown(sv[1], SHUT_WR);
    struct tmlctl ctl = {
        .socket = "fuzz", .timeout_ms = 1000, .prog = "tmlctl"};
    struct tmlctl_conn *c = tmlctl_conn_from_fd(&ctl, sv[0]);
    if (c == NULL)
        abort();
    cJSON *result = NULL;
    int rc = tmlctl_request(c, "status", cJSON_CreateObject(), &result);
    if (rc == TMLCTL_EXIT_OK && result != NULL && !cJSON_IsInvalid(result)) {
        char *s = cJSON_PrintUnformatted(result);
        cJSON_free(s);
    }
    cJSON_Delete(result);
    for (int i = 0; i < 1000; i++) {
        cJSON *m = NULL;
        if (tmlctl_read_message(c, 0, &m) != TMLCTL_EXIT_OK)
            break;
        cJSON_Delete(m);
    }
    tmlctl_close(c);
    close(sv[1]);
    return 0;
}
