/*
 * tmld_fuzz_metrics_http: bytes a client sends to tmld's metrics endpoint,
 * parsed as the server parses them (daemon/metrics_http.c). Besides not
 * crashing or reading past the input, the verdict must be stable as more
 * bytes arrive: a prefix is either "read on" or already the final answer
 * (the server answers at the first verdict and reads no further).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

#define MAX 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly size bytes, so ASan sees any read past the end. */
    char *buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    enum metrics_http_verdict v = metrics_http_parse(buf, size, MAX);
    if (v > MHTTP_TOO_LARGE || metrics_http_status(v) == NULL)
        abort();
    if (size >= MAX && v == MHTTP_MORE)
        abort(); /* a full buffer always gets an answer */
    size_t cuts[] = {size / 2, size > 0 ? size - 1 : 0, size / 3};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        enum metrics_http_verdict p = metrics_http_parse(buf, cuts[i], MAX);
        if (p != MHTTP_MORE && p != v)
            abort();
    }
    free(buf);
    return 0;
}
