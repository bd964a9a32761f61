/*
 * gen_corpus.c: writes the seed corpora of the proto fuzzers from the
 * sample messages of tests/proto/samples.c (valid messages at their minimum
 * and maximum values) plus a few topics. Usage:
 *   proto_fuzz_gen_corpus tests/fuzz/corpus
 * The output is committed; rerun it when a message changes.
 */
#include <stdio.h>
#include <string.h>

#include "samples.h"

static const char *const decoders[] = {
    "proto_fuzz_hello",    "proto_fuzz_state",  "proto_fuzz_tele",
    "proto_fuzz_sample",   "proto_fuzz_ota_up", "proto_fuzz_ack",
    "proto_fuzz_ota_down", "proto_fuzz_cmd",    "proto_fuzz_manifest",
    "proto_fuzz_cose"};

static int
put(const char *dir, const char *fuzzer, const char *name, const void *p,
    size_t len)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s/%s", dir, fuzzer, name);
    f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        return 1;
    }
    fwrite(p, 1, len, f);
    return fclose(f) != 0;
}

int
main(int argc, char **argv)
{
    static struct samples_store st;
    static uint8_t buf[TML_MAX_MESSAGE];
    static const char *const topics[] = {
        "tml/v1/turbine-17/up/hello", "tml/v1/dev/up/tele",
        "tml/v1/a/down/ota",          "tml/v1/x.y_z-1/down/cmd",
        "tml/v1/+/up/#",              "tml/v1/dev/up/ack"};
    char name[64];
    size_t len, i;
    int k, which, rc = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    samples_init(&st);
    for (k = 0; k < SAMPLE_KINDS; k++) {
        const char *n = sample_encode(k, &st, buf, sizeof buf, &len, &which);

        if (n == NULL) {
            fprintf(stderr, "sample %d does not encode\n", k);
            return 1;
        }
        snprintf(name, sizeof name, "%s.cbor", n);
        rc |= put(argv[1], decoders[which], name, buf, len);
        rc |= put(argv[1], "proto_fuzz_cbor", name, buf, len);
    }
    for (i = 0; i < sizeof topics / sizeof topics[0]; i++) {
        snprintf(name, sizeof name, "topic-%zu", i);
        rc |= put(argv[1], "proto_fuzz_topic", name, topics[i],
                  strlen(topics[i]));
    }
    return rc;
}
