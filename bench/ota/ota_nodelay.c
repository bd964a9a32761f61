/*
 * ota_nodelay.c: LD_PRELOAD shim for bench/ota.sh's "what if" run: every
 * TCP socket a process connects gets TCP_NODELAY, as if tmld's and the
 * devices' MQTT clients set MOSQ_OPT_TCP_NODELAY. Measures how much of the
 * OTA time is Nagle + delayed-ACK stalls. Never used outside the bench.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

int connect(int fd, const struct sockaddr *addr, socklen_t len);

int
connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    static int (*real)(int, const struct sockaddr *, socklen_t);
    int one = 1;

    if (real == NULL)
        real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(
            RTLD_NEXT, "connect");
    if (addr != NULL &&
        (addr->sa_family == AF_INET || addr->sa_family == AF_INET6))
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return real(fd, addr, len);
}
