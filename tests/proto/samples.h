/*
 * samples.h: filled-in example messages for the proto tests, the fuzz seed
 * generator and the benchmark. "min" variants use the smallest legal values
 * and omit every optional field; "max" variants use the largest legal values
 * and fill every array to its limit.
 */
#ifndef TML_TEST_SAMPLES_H
#define TML_TEST_SAMPLES_H

#include "tml/proto.h"

/* Backing storage for the views a sample message points into. */
struct samples_store {
    uint8_t chunk[TML_CHUNK_MAX];
    uint8_t manifest[TML_MAX_MANIFEST];
    size_t manifest_len;
    uint8_t kids[TML_MAX_REVOKE][TML_MAX_KID];
};

void samples_init(struct samples_store *st);

void sample_hello(struct tml_hello *m, bool max);
void sample_state(struct tml_state *m, bool online);
void sample_tele(struct tml_tele *m, bool max);
void sample_sample(struct tml_sample *m, const struct samples_store *st,
                   bool max);
void sample_ota_up(struct tml_ota_up *m, uint8_t kind, bool max);
void sample_ack(struct tml_ack *m, bool max);
void sample_ota_down(struct tml_ota_down *m, const struct samples_store *st,
                     uint8_t kind, bool max);
void sample_cmd(struct tml_cmd *m, uint8_t kind, bool max);
void sample_manifest(struct tml_manifest *m, const struct samples_store *st,
                     bool max);

/* A test "signature" (not a real one: 64 bytes of pattern) and key id. */
extern const uint8_t sample_sig[TML_ES256_SIG_LEN];
extern const uint8_t sample_kid[8];

#define SAMPLE_KINDS 15

/* Encodes sample number i (0..SAMPLE_KINDS-1) of every message kind into
 * buf; returns its name ("hello-max", ...) and a decoder id in *which
 * (0 hello, 1 state, 2 tele, 3 sample, 4 ota_up, 5 ack, 6 ota_down, 7 cmd,
 * 8 manifest, 9 cose). Returns NULL if i is out of range or encoding fails. */
const char *sample_encode(int i, struct samples_store *st, uint8_t *buf,
                          size_t cap, size_t *len, int *which);

/* Encodes t in up/tele's version 1 map form (PROTOCOL.md "up/tele,
 * version 1"), written from the document, not by proto/: what agents
 * before the packed summary send. Arrays and health only when non-empty,
 * lw when non-zero, keys ascending. Returns the length, 0 if cap is too
 * small. */
size_t sample_tele_v1_encode(const struct tml_tele *t, uint8_t *buf,
                             size_t cap);

/* Decodes buf with decoder `which`; returns its result. */
enum tml_err sample_decode(int which, const uint8_t *buf, size_t len);

#endif
