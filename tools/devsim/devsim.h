/*
 * devsim.h: shared state of tml-devsim (one process, N simulated devices).
 *
 * struct sim is the run: options, the epoll loop, the behaviour table and the
 * device array. struct dev (dev.c) is one device: a real libtmlagent context
 * with its port, a libmosquitto link and the counters the JSON summary
 * reports. Everything runs on one thread; time is CLOCK_MONOTONIC ms.
 */
#ifndef DEVSIM_DEVSIM_H
#define DEVSIM_DEVSIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <tml/agent.h>

#include "behave.h"
#include "net.h"

#define SIM_MAX_GROUPS 8
#define SIM_MAX_KEYS 2
#define SIM_MAX_ID 64

struct certs_ca;
struct dev;

struct sim_group {
    char name[33];
    uint32_t n;
};

struct sim_key {
    uint8_t kid[16];
    size_t kid_len;
    uint8_t pub[65];
};

struct sim_opts {
    const char *host;
    int port;
    const char *cafile;    /* broker CA (verifies the broker) */
    const char *certs_dir; /* DIR/<id>.crt + DIR/<id>.key */
    const char *ca_cert;   /* or: mint with this CA ... */
    const char *ca_key;    /* ... and its key */
    const char *state_dir;
    const char *prefix;
    uint32_t first;
    uint32_t n_devices;
    size_t n_groups;
    struct sim_group groups[SIM_MAX_GROUPS];
    double rate_hz;        /* inferences per second per device */
    uint32_t n_classes;
    const char *behave_path;
    uint32_t summary_period_s;
    uint32_t input_bytes;  /* captured input window, bytes */
    uint32_t input_rate_hz;
    double flap_mean_s;    /* mean seconds between link flaps, 0 = off */
    uint32_t flap_down_ms; /* how long a flapped link stays down */
    double reboot_mean_s;  /* mean seconds between reboots, 0 = off */
    double duration_s;     /* produce for this long (0 = until --count) */
    uint64_t count;        /* or: this many inferences per device */
    double drain_s;        /* then wait up to this long for acks */
    const char *json_path;
    double status_s;       /* status line period, 0 = off */
    uint64_t seed;
    uint32_t connect_rate; /* new connections per second */
    int keepalive_s;
    const char *hw;
    uint32_t slot_size;
    uint32_t arena_size;
    size_t n_keys;
    struct sim_key keys[SIM_MAX_KEYS];
    uint32_t sample_budget; /* captures per budget period */
    uint32_t budget_period_s;
    uint32_t conf_threshold_bp;
    uint32_t ack_timeout_ms; /* 0 = the agent's default */
    uint32_t ota_chunk, ota_window; /* 0 = the agent's defaults */
    uint32_t ota_flood; /* extra copies of every OTA chunk request */
    bool host_sha256;   /* SHA-256 by OpenSSL, not the agent's mbedTLS port */
    uint32_t reserve_fds;  /* descriptors to hold open first */
    double misbehave;      /* share of devices that also send garbage and
                              replays */
};

struct sim_totals {
    uint64_t tele_sent, tele_resent, tele_acked, tele_folded;
    uint64_t samples_sent, samples_resent, samples_acked;
    uint64_t publishes, publish_bytes, acks_in, ota_in, cmds_in;
    uint64_t inferences, connects, disconnects, flaps, reboots;
    uint64_t lost_on_reboot;
    uint32_t connected;
};

struct sim {
    struct sim_opts o;
    struct net net;
    struct behave behave;
    struct certs_ca *ca;
    struct dev *devs;
    uint32_t n_devs;
    uint64_t t0_ms;       /* start, monotonic */
    uint64_t now_ms;      /* since t0 */
    uint64_t produce_until_ms;
    bool is_producing;
    uint32_t n_ever_connected; /* devices that completed a first connect */
    uint64_t all_connected_ms; /* when the last of them did, 0 = not yet */
    double connect_tokens; /* connection attempts allowed now */
    uint64_t tokens_ms;    /* when connect_tokens was last refilled */
    size_t n_keys;
    struct tmla_trusted_key keys[SIM_MAX_KEYS];
    uint8_t *tones;        /* n_classes clean input windows, input_bytes
                              each: the base of every captured input */
    uint8_t *scratch;      /* input_bytes: the input being captured */
};

uint64_t sim_mono_ms(void);

/* dev.c */
size_t dev_size(void);
struct dev *dev_at(struct sim *s, uint32_t i);
int dev_setup(struct sim *s, struct dev *d, uint32_t index, char *err,
              size_t err_cap);
void dev_teardown(struct dev *d);
/* Drives one device's timers (inference, agent poll, flap, reboot,
 * reconnect). Returns the next time (sim ms) it wants to run. */
uint64_t dev_tick(struct sim *s, struct dev *d);
void dev_add_totals(const struct dev *d, struct sim_totals *t);
bool dev_is_drained(const struct dev *d);
/* With --count: the device has made all its inferences. */
bool dev_is_done(const struct dev *d);
void dev_write_json(const struct dev *d, FILE *f);
/* Stops producing and disconnects gracefully. */
void dev_shutdown(struct dev *d);

#endif /* DEVSIM_DEVSIM_H */
