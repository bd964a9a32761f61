/*
 * proto_bench.c: encode and decode speed of every protocol message, using
 * the sample messages of tests/proto (smallest and largest legal values).
 * Prints a table (ns per operation, MB/s, and the ratio to a memcpy of the
 * same bytes measured in the same run, since machines here are noisy) and
 * one line "RESULT proto key=value ...".
 *
 *   proto_bench [SECONDS_PER_CASE]   (default 0.2)
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "samples.h"

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Keeps results observable so the loops are not optimised away. */
static volatile size_t sink;

static uint8_t buf[TML_MAX_MESSAGE], tmp[TML_MAX_MESSAGE];

/* Runs op for about `secs`; returns ns per call. */
#define TIMED(secs, op, out_ns)                                                \
    do {                                                                       \
        double t0_ = now_s(), t_;                                              \
        unsigned long n_ = 0, batch_;                                          \
        do {                                                                   \
            for (batch_ = 0; batch_ < 256; batch_++) {                         \
                op;                                                            \
            }                                                                  \
            n_ += 256;                                                         \
            t_ = now_s() - t0_;                                                \
        } while (t_ < (secs) && n_ < 100000000ul);                             \
        (out_ns) = t_ * 1e9 / (double)n_;                                      \
    } while (0)

int
main(int argc, char **argv)
{
    static struct samples_store st;
    double secs = argc > 1 ? atof(argv[1]) : 0.2;
    double sum_dec_ratio = 0, tele_dec = 0, tele_enc = 0, sample_dec_mbps = 0,
           hello_dec = 0, worst_ratio = 0;
    int i, which, n_cases = 0;
    size_t len;

    if (secs <= 0 || secs > 10) {
        fprintf(stderr, "usage: %s [SECONDS_PER_CASE (0..10]]\n", argv[0]);
        return 2;
    }
    samples_init(&st);
    printf("%-16s %6s %10s %10s %10s %9s\n", "message", "bytes", "enc ns",
           "dec ns", "dec MB/s", "dec/memcpy");
    for (i = 0; i < SAMPLE_KINDS; i++) {
        double enc_ns, dec_ns, cpy_ns, ratio;
        const char *name = sample_encode(i, &st, buf, sizeof buf, &len, &which);

        if (name == NULL || sample_decode(which, buf, len) != TML_OK) {
            fprintf(stderr, "sample %d does not round-trip\n", i);
            return 1;
        }
        TIMED(secs, sink += sample_encode(i, &st, tmp, sizeof tmp, &len,
                                          &which) != NULL,
              enc_ns);
        TIMED(secs, sink += (size_t)sample_decode(which, buf, len), dec_ns);
        TIMED(secs, (memcpy(tmp, buf, len), sink += tmp[len / 2]), cpy_ns);
        ratio = dec_ns / cpy_ns;
        printf("%-16s %6zu %10.1f %10.1f %10.1f %9.1f\n", name, len, enc_ns,
               dec_ns, (double)len / dec_ns * 1e3, ratio);
        sum_dec_ratio += ratio;
        worst_ratio = ratio > worst_ratio ? ratio : worst_ratio;
        n_cases++;
        if (strcmp(name, "tele-max") == 0) {
            tele_dec = dec_ns;
            tele_enc = enc_ns;
        } else if (strcmp(name, "sample-max") == 0) {
            sample_dec_mbps = (double)len / dec_ns * 1e3;
        } else if (strcmp(name, "hello-max") == 0) {
            hello_dec = dec_ns;
        }
    }
    printf("(enc ns includes filling the sample struct; cose-sign1 and "
           "ota_down-offer include encoding the embedded manifest)\n");
    printf("RESULT proto tele_max_enc_ns=%.0f tele_max_dec_ns=%.0f "
           "hello_max_dec_ns=%.0f sample_max_dec_MBps=%.0f "
           "mean_dec_vs_memcpy=%.1f worst_dec_vs_memcpy=%.1f\n",
           tele_enc, tele_dec, hello_dec, sample_dec_mbps,
           sum_dec_ratio / n_cases, worst_ratio);
    return (int)(sink & 0);
}
