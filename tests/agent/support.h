/*
 * support.h: test rig for libtmlagent: an in-memory port (a real port
 * implementation, not a mock of the agent), operator keys and signed
 * manifests made with mbedTLS, and a small gateway that answers chunk
 * requests.
 *
 * The simulated flash follows MCUboot's simulator rules: erase whole pages
 * at aligned offsets, write only aligned blocks of erased (0xff) bytes;
 * violations are counted and fail the call. Every erase, flash write and
 * state write is one "operation"; stop_after(i) tears the i-th operation
 * (half done) and fails every later one, as a power cut would. A "reboot"
 * is a fresh tmla_init on the same memport.
 */
#ifndef TEST_AGENT_SUPPORT_H
#define TEST_AGENT_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tml/agent.h>

#define MP_SLOT_SIZE 65536u
#define MP_ERASE 4096u
#define MP_ALIGN 8u
#define MP_LOG 2048
#define MP_MSG_MAX 512
#define MP_DEV "dev-7"
#define MP_HW "test-hw"

struct mp_msg {
    char topic[TML_MAX_TOPIC + 1];
    enum tml_kind kind;
    uint8_t payload[MP_MSG_MAX];
    size_t len;
    uint8_t qos;
    bool retain;
};

struct memport {
    struct tmla_port port;
    uint8_t flash[2][MP_SLOT_SIZE];
    uint8_t state[2][1024];
    /* faults */
    long ops;                /* erase + flash write + state write calls */
    long stop_after;         /* tear operation number stop_after; < 0: never */
    bool dead;               /* power is off: every write fails */
    unsigned state_fail_pct; /* S15: share of state writes that silently
                                store garbage */
    uint32_t fault_rng;
    uint32_t violations; /* MCUboot rule violations */
    uint32_t n_state_writes;
    /* environment */
    uint32_t rng;
    uint32_t unix_now; /* 0 = no clock */
    bool offline;      /* publish answers AGAIN */
    /* published messages */
    struct mp_msg log[MP_LOG];
    size_t n_log;
    size_t seen; /* gateway cursor into log */
    /* the application */
    int activate_rc;
    unsigned n_activate;
    struct tmla_model loaded;
    bool has_loaded;
    bool model_broken; /* infer gives wrong answers */
    unsigned n_infer;
};

/* A zeroed memport with erased flash, empty state and the default rig. */
struct memport *mp_new(void);
void mp_free(struct memport *mp);

/* Config: device MP_DEV, hw MP_HW, the given keys, a 4 KiB sample spool. */
void mp_config(struct tmla_config *cfg, const struct tmla_trusted_key *keys,
               size_t n_keys);
extern uint8_t mp_spool[4096];

/* Zero-heap check: malloc & co. abort while this is nonzero (only in the
 * binaries linked with noheap.c); the port clears it during its calls. */
extern int tml_heap_armed;

/* ---- keys and manifests (mbedTLS) ------------------------------------- */

struct tkey {
    uint8_t kid[8];
    uint8_t kid_len;
    uint8_t pub[65];
    uint8_t d[32]; /* private scalar */
};

/* Deterministic key number n (same n, same key). */
void tkey_make(struct tkey *k, unsigned n);
void tkey_trusted(const struct tkey *k, struct tmla_trusted_key *out);

/* An image: model_size bytes of pattern (seeded by version) followed by
 * n_vectors golden vectors whose expected answers match mp_infer's fake
 * model. Returns the image length (<= cap). */
size_t image_make(uint8_t *buf, size_t cap, uint32_t version,
                  uint32_t model_size, uint32_t n_vectors, uint32_t vector_len);

/* A manifest for the image with sane defaults (hw MP_HW, name "kws"). */
void manifest_for(struct tml_manifest *m, uint32_t version,
                  const uint8_t *image, size_t len, uint32_t n_vectors,
                  uint32_t vector_len);

/* Signs m with k into a COSE_Sign1; returns its length (asserts). */
size_t manifest_sign(const struct tkey *k, const struct tml_manifest *m,
                     uint8_t *out, size_t cap);

/* ---- gateway side ------------------------------------------------------ */

/* Delivers a message of kind on tml/v1/MP_DEV/down/<kind>. */
enum tml_err gw_send(struct tmla_agent *a, enum tml_kind kind, const uint8_t *p,
                     size_t len, uint32_t now_ms);
enum tml_err gw_offer(struct tmla_agent *a, uint32_t offer_id,
                      const uint8_t *cose, size_t len, uint32_t now_ms);
enum tml_err gw_chunk(struct tmla_agent *a, uint32_t offer_id, uint32_t offset,
                      const uint8_t *p, size_t len, uint32_t now_ms);
enum tml_err gw_ack(struct tmla_agent *a, bool has_tele, uint32_t tele,
                    bool has_sample, uint32_t sample, uint32_t now_ms);

/* Optional chunk tamper hook: may change data/len before sending. */
typedef void (*gw_tamper_fn)(uint32_t offset, uint8_t *data, size_t *len);

/* Serves up/ota requests found in the log (from mp->seen on) with chunks
 * of image (chunk bytes each, under offer_id) and polls, until no request
 * is left or max_rounds passed. *now_ms advances by step_ms per round.
 * Returns the number of chunks sent. */
unsigned gw_serve(struct memport *mp, struct tmla_agent *a, uint32_t offer_id,
                  const uint8_t *image, size_t len, uint32_t chunk,
                  gw_tamper_fn tamper, uint32_t *now_ms, uint32_t step_ms,
                  unsigned max_rounds);

/* Last up/ota STATUS in the log (false if none). */
bool mp_last_status(const struct memport *mp, struct tml_ota_up *out);
/* The first hello published at log index *from or later (of those the
 * log still holds), decoded into h (asserted to decode); *from moves past
 * it. NULL when there is none. */
const struct mp_msg *mp_next_hello(const struct memport *mp, size_t *from,
                                   struct tml_hello *h);
/* Counts log entries of a kind. */
size_t mp_count(const struct memport *mp, enum tml_kind kind);
/* SHA-256 of buf (mbedTLS). */
void sha256_of(const void *buf, size_t len, uint8_t out[32]);
/* True if slot holds len bytes hashing to sha. */
bool mp_slot_matches(const struct memport *mp, uint8_t slot, uint32_t len,
                     const uint8_t sha[32]);

#endif /* TEST_AGENT_SUPPORT_H */
