/*
 * rig.h: the integration-test rig for tml-devsim: temp dirs, the TLS test
 * broker (tests/lib/testbroker) with kill -9 and restart on the same port,
 * child processes with deadlines, and a gateway stand-in (a libmosquitto
 * subscriber with the tmld certificate) that records every tele/sample
 * sequence number per device and answers with cumulative down/ack, like
 * tmld does after its commit. Every process the rig starts is killed (by
 * PID) at exit, even when a test fails.
 */
#ifndef TESTS_INTEGRATION_RIG_H
#define TESTS_INTEGRATION_RIG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct mosquitto;

struct rig_broker {
    char dir[512];
    int port;
    pid_t pid;
    char ca[600], ca_key[600], tmld_cert[600], tmld_key[600];
};

/* Makes a fresh temp dir (mkdtemp) into out (cap >= 64). 0 or -1. */
int rig_tmpdir(char *out, size_t cap);
/* Removes a directory tree (rm -rf by path). */
void rig_rmtree(const char *dir);

int rig_broker_start(struct rig_broker *b, const char *dir);
/* Mints DIR/pki/ID.crt + .key with the openssl CLI (testbroker device). */
int rig_broker_device(struct rig_broker *b, const char *id);
void rig_broker_kill9(struct rig_broker *b);
/* Starts mosquitto again with the same config (same port). 0 or -1. */
int rig_broker_restart(struct rig_broker *b);
void rig_broker_stop(struct rig_broker *b);

/* Starts argv[0] with argv (stdout/stderr to log_path if not NULL).
 * Registered for kill at exit. Returns the pid or -1. */
pid_t rig_spawn(const char *const argv[], const char *log_path);
/* Waits up to timeout_ms; returns the exit status (0..255), 128+signal, or
 * -1 on timeout (the child is then killed). */
int rig_wait(pid_t pid, int timeout_ms);
void rig_kill(pid_t pid);
/* Path of a built program: $TML_BINARY_DIR/<rel>. */
const char *rig_bin(const char *rel, char *buf, size_t cap);

/* ---- gateway stand-in ---------------------------------------------------- */

/* A signed model the gateway stand-in serves to one device (OTA). The
 * buffers are borrowed and must outlive the gateway. */
struct rig_offer {
    const uint8_t *cose;
    size_t cose_len;
    const uint8_t *image;
    size_t image_len;
    uint32_t offer_id;
    uint32_t version; /* the manifest's model version */
};

struct rig_dev_log {
    uint32_t *seq;     /* tele seqs in arrival order (with duplicates) */
    size_t n, cap;
    uint32_t *sseq;    /* sample seqs */
    size_t sn, scap;
    uint32_t max_tele, max_sample;
    /* Contiguous acknowledgement: seen[s] marks tele seq s (s < seen_cap);
     * contig is the highest seq with every seq 1..contig seen. */
    uint8_t *seen, *sseen;
    size_t seen_cap, sseen_cap;
    uint32_t contig, scontig;
    /* Arrivals with a hole below them: a high-water ack would cover a
     * record the gateway never received at that moment. */
    uint32_t holes, sholes;
    uint64_t inferences; /* sum of n_inferences over first arrivals */
    uint32_t tele_model_version; /* of the newest tele record */
    /* Summaries that ran on the offered model's version (first arrivals):
     * what a health gate compares between versions. */
    uint64_t offer_inferences, offer_low_conf, offer_flagged;
    bool hello_seen;
    /* OTA */
    const struct rig_offer *offer;
    uint32_t offer_version;
    bool offered;
    uint32_t n_requests, n_chunks, n_status;
    uint32_t states_seen; /* bit per enum tml_ota_state reported */
    uint8_t last_state, last_reason;
};

struct rig_gw {
    struct mosquitto *mosq;
    pthread_mutex_t mu;
    char prefix[64];     /* device ids are <prefix><number> */
    uint32_t first;      /* number of index 0 */
    uint32_t n_devs;
    struct rig_dev_log *devs;
    uint64_t n_msgs, n_foreign, n_undecodable, n_hello, n_state;
    uint64_t n_acks_sent;
    bool do_ack;
    bool ack_highwater; /* ack the highest seq seen (tmld's rule) instead
                           of the highest contiguous one */
    bool connected;
    atomic_bool running;
    pthread_t thread;
};

/* Connects as the gateway (tmld certificate), subscribes tml/v1/+/up/#,
 * runs its own network thread and reconnects by itself. 0 or -1. */
int rig_gw_start(struct rig_gw *g, struct rig_broker *b, const char *prefix,
                 uint32_t first, uint32_t n_devs, bool do_ack);
/* Waits until connected and subscribed, up to timeout_ms. */
bool rig_gw_wait_ready(struct rig_gw *g, int timeout_ms);
void rig_gw_stop(struct rig_gw *g);
/* Serves offer to device index i: sent once the device's hello is seen,
 * then every chunk request is answered from offer->image. */
void rig_gw_offer(struct rig_gw *g, uint32_t i, const struct rig_offer *o);
/* Copies device i's log under the lock (seq arrays not copied). */
void rig_gw_snapshot(struct rig_gw *g, uint32_t i, struct rig_dev_log *out);
/* Acks the highest seq seen (tmld's go-back-N high-water) when on; the
 * default is the highest seq below which nothing is missing. */
void rig_gw_set_highwater(struct rig_gw *g, bool on);
/* Sum of hole arrivals over all devices (see struct rig_dev_log). */
uint64_t rig_gw_holes(struct rig_gw *g);
/* Turns acknowledgements on or off (records are still stored). */
void rig_gw_set_ack(struct rig_gw *g, bool on);
/* Distinct tele seqs of device index i (sorts its log). */
size_t rig_gw_distinct(struct rig_gw *g, uint32_t i, uint32_t *max_seq);
size_t rig_gw_distinct_samples(struct rig_gw *g, uint32_t i);

/* Reads a whole file (NUL-terminated, malloc'd) or NULL. */
char *rig_slurp(const char *path);

#endif /* TESTS_INTEGRATION_RIG_H */

/* ---- tml-devsim runs and their JSON summary ---------------------------- */

struct rig_devsum {
    char id[72];
    uint64_t sent, acked, resent, folded, samples_sent, samples_acked;
    uint64_t inferences, connects, disconnects, flaps, reboots, seq_reused;
    uint64_t relinks, publishes, last_pub_seq;
    uint64_t last_seq, ack_seq, bad_in, garbage_sent, replays_sent;
    uint64_t model_version;
    uint64_t lost_unsent, lost_held; /* inferences in RAM at reboots */
    char ota_state[24], model[40];
};

struct rig_summary {
    uint32_t n;
    struct rig_devsum *devs;
    double elapsed_s, produce_s, cpu_s;
    uint64_t max_rss_kb, publishes, publish_bytes, resent, inferences;
    uint64_t max_socket_fd;
};

/* Parses tml-devsim's --json-summary file. 0 or -1. */
int rig_summary_load(struct rig_summary *s, const char *path);
void rig_summary_free(struct rig_summary *s);
