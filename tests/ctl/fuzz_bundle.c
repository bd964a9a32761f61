/*
 * fuzz_bundle.c: libFuzzer harness for the bundle parser (tools/common):
 * tml_bundle_parse, tml_bundle_verify against a fixed trusted key (the seed
 * corpus is signed with its private half, so mutations reach the signature
 * and manifest checks), and tml_cose_verify on the raw input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tml/bundle.h"

/* Public key of the seeds' signer (tests/ctl/corpus/README). */
static const uint8_t seed_pub[65] = {
#include "fuzz_bundle_key.inc"
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct tml_bundle b;
    struct tml_pubkey pub;
    if (tml_pubkey_from_raw(seed_pub, sizeof(seed_pub), &pub) != TML_BUNDLE_OK)
        abort();
    enum tml_bundle_err parsed = tml_bundle_parse(data, size, &b);
    if (tml_bundle_verify(data, size, &pub, 1, 1, &b, NULL) == TML_BUNDLE_OK) {
        /* Accepted: the views must lie inside the input. */
        if (parsed != TML_BUNDLE_OK || b.image.len > size || b.cose.len > size)
            abort();
    }
    struct tml_cose_sign1 s;
    enum tml_bundle_err cv = tml_cose_verify(data, size, &pub, 1, &s, NULL);
    if (cv == TML_BUNDLE_OK && s.payload.len > size)
        abort();
    return 0;
}
