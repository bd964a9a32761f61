/*
 * dev_internal.h: struct dev, shared by dev.c (lifecycle, transport,
 * scenario) and port.c (the struct tmla_port members: files as flash slots
 * and persisted state, mbedTLS crypto, the synthetic model). Not used
 * outside tools/devsim.
 */
#ifndef DEVSIM_DEV_INTERNAL_H
#define DEVSIM_DEV_INTERNAL_H

#include "devsim.h"
#include "synth.h"

/* A growable list of the sequence numbers one stream has published once. */
struct seqlog {
    uint32_t *seq;
    size_t n, cap;
    size_t n_acked;   /* prefix of seq[] covered by cumulative acks */
    uint32_t max_sent;
    uint32_t last_pub; /* seq of the most recent publish */
    uint32_t ack;     /* highest cumulative ack seen */
    uint64_t resent;
    /* After a reboot the RAM ring is gone, so a seq at or below the highest
     * one sent before the reboot can only be a reused number. */
    bool has_rebooted;
    uint32_t reboot_floor;
    uint64_t reused;
};

struct dev {
    struct sim *sim;
    uint32_t index;
    char id[SIM_MAX_ID + 1];
    char dir[512];               /* per-device state directory */
    int slot_fd[2];              /* open slot file + 1, 0 = closed */
    int state_fd[2];             /* open state file + 1, 0 = closed */
    uint8_t *rd;                 /* PORT_RD_BLOCK bytes read from a slot */
    uint32_t rd_base;            /* ... at this offset */
    uint8_t rd_slot;             /* ... of slot rd_slot - 1; 0 = none */
    const char *groups[1];
    size_t n_groups;
    bool is_misbehaving;

    struct tmla_agent agent;
    struct tmla_config cfg;
    struct tmla_port port;
    uint8_t *sample_buf;
    bool is_agent_up;

    struct net_link link;
    bool is_link_up;              /* net_link initialised */
    bool want_online;             /* false while a flap keeps the link down */
    uint64_t next_connect_ms;
    uint64_t connect_started_ms;
    uint32_t backoff_ms;

    struct synth_rng rng;
    uint64_t boot_ms;             /* sim time of the last boot */
    uint64_t next_infer_ms, next_poll_ms, next_misc_ms;
    uint64_t next_flap_ms, next_reboot_ms, next_misbehave_ms;
    uint64_t n_inferences;
    uint64_t last_infer_ms;
    uint64_t last_tele_new_ms;    /* when the newest tele seq was sent */
    bool activate_deferred;       /* the last activate() said AGAIN */

    /* the model the application runs (from activate / tmla_active_model) */
    char model[TML_MAX_NAME + 1];
    uint32_t model_version;
    const struct behave_rule *rule;

    /* counters for the summary */
    struct seqlog tele, samples;
    uint64_t folded;
    uint64_t publishes, publish_bytes, publish_again;
    uint64_t acks_in, ota_in, cmds_in, bad_in;
    uint64_t connects, disconnects, flaps, reboots, relinks;
    uint64_t garbage_sent, replays_sent;
    uint64_t vectors_run, vectors_failed;
    uint32_t confirms, rejects;
    uint8_t ota_state, ota_reason;
    uint32_t ota_version;
    uint32_t ota_events;
    /* Wall clock (CLOCK_REALTIME, ms since the epoch) of the latest update's
     * accepted offer (OFFERED), last chunk stored (VERIFYING) and confirm,
     * 0 = never: bench/ota.sh's "received" figure comes from these. */
    uint64_t ota_offered_wall_ms, ota_stored_wall_ms, ota_confirmed_wall_ms;
    uint8_t last_tele[TMLA_TX_BUF];
    size_t last_tele_len;
    /* Inferences that died in RAM at simulated reboots (read from the
     * agent's context just before it is thrown away, which a real device
     * could not do): never sent (open period, unsent summaries), and sent
     * but not acked (the gateway may or may not have stored them). */
    uint64_t lost_unsent, lost_held;
};

#define PORT_RD_BLOCK 4096u

/* port.c: fills d->port (all members) for device d. */
void port_fill(struct dev *d);
/* Closes the slot files port_fill/flash operations keep open. */
void port_close(struct dev *d);
/* Wall-clock free sim time in agent units (ms since this device booted). */
uint32_t dev_agent_now(const struct dev *d);
/* The application switched to model m: remember it, pick its rule. */
void dev_set_model(struct dev *d, const char *name, uint32_t version);

#endif /* DEVSIM_DEV_INTERNAL_H */
