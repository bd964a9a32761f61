/*
 * fuzz_b64.c: libFuzzer harness for ota_b64_decode, the parser of the data
 * field of the artifact.upload control verb (daemon/ota_store.c).
 *
 * Oracle: whatever decodes must encode back to exactly the input
 * (canonical base64 only), and the output never exceeds cap.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ota_store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
encode(const uint8_t *p, size_t n, char *out)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        *out++ = tbl[(v >> 18) & 63];
        *out++ = tbl[(v >> 12) & 63];
        *out++ = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        *out++ = i + 2 < n ? tbl[v & 63] : '=';
    }
    *out = '\0';
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s;
    uint8_t *out;
    char *back;
    size_t cap;
    long n;

    if (size > 8192)
        return 0;
    s = malloc(size + 1);
    out = malloc(size + 1);
    back = malloc(2 * size + 8);
    if (s == NULL || out == NULL || back == NULL)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    /* A cap below the decoded size must fail, never overflow. */
    cap = size > 0 ? data[0] % (size + 1) : 0;
    n = ota_b64_decode(s, out, cap);
    if (n > (long)cap)
        abort();
    n = ota_b64_decode(s, out, size + 1);
    if (n >= 0) {
        encode(out, (size_t)n, back);
        if (strcmp(back, s) != 0)
            abort();
    }
    free(s);
    free(out);
    free(back);
    return 0;
}
