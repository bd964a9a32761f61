/*
 * harness.h: the rig for tmld's integration tests. A real TLS mosquitto
 * (tests/lib/testbroker) in a mkdtemp directory, a real tmld process with a
 * config written there, real SQLite files, and test devices ("tdev") that
 * speak the wire protocol through tmlproto over their own TLS client
 * certificates. Every process started is killed by PID at teardown and at
 * exit, also when a test fails.
 */
#ifndef TMLD_TEST_HARNESS_H
#define TMLD_TEST_HARNESS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <sqlite3.h>

struct th {
    char dir[256];
    char conf[300];
    char db[512];
    char sock[300];
    char log[300];
    char extra[2048]; /* appended to tmld.conf sections (raw INI) */
    char wrap[512];   /* if set: tmld runs as sh -c "WRAP exec tmld ..." */
    pid_t ns_pid;     /* if set: th_db_int queries in this PID's mount ns */
    int port;
    pid_t broker_pid;
    pid_t tmld_pid;
    char ca[300], ca_key[300], cert[300], key[300];
};

/* Creates the temp dir and starts the broker. extra_ini is appended to the
 * generated tmld.conf (may be NULL). Returns 0 or -1. */
int th_setup(struct th *t, const char *extra_ini);
/* Kills tmld and the broker, removes the dir (kept when TMLD_TEST_KEEP=1). */
void th_teardown(struct th *t);
/* Writes tmld.conf (again) from t and extra. */
int th_write_conf(struct th *t);
/* Starts tmld with optional extra environment ("K=V", NULL-terminated) and
 * waits until it answers status with the broker connected (timeout_ms).
 * Returns 0, or -1 (tmld's log is printed). */
int th_tmld_start(struct th *t, const char *const *env, int timeout_ms);
/* Starts tmld without waiting. */
pid_t th_tmld_spawn(struct th *t, const char *const *env);
/* Sends sig and waits (up to timeout_ms) for the exit; returns the wait
 * status, or -1 if it did not exit (then it is SIGKILLed). */
int th_tmld_stop(struct th *t, int sig, int timeout_ms);
/* Waits for the tmld process to exit by itself; returns its wait status or
 * -1 on timeout. */
int th_tmld_wait_exit(struct th *t, int timeout_ms);
/* Broker control: kill -9 and restart on the same port. */
void th_broker_kill(struct th *t);
int th_broker_restart(struct th *t);
/* One control request/response. Returns the response line in out (NUL
 * terminated, newline stripped) or -1. */
int th_ctl(struct th *t, const char *request, char *out, size_t cap,
           int timeout_ms);
/* Reads a number at a dotted path ("ingest.tele") of the status result. */
int th_status_num(struct th *t, const char *path, double *out);
/* Polls status until path >= want or timeout; returns 0/-1. */
int th_wait_status(struct th *t, const char *path, double want,
                   int timeout_ms);
/* Opens tmld's database read-only (WAL: works while tmld runs). */
sqlite3 *th_db(struct th *t);
int64_t th_db_int(struct th *t, const char *sql);
/* Mints a device certificate (testbroker device). */
int th_device_cert(struct th *t, const char *id);
uint64_t th_now_ms(void);
void th_sleep_ms(int ms);
/* Prints the tail of tmld's log to stderr (for failure diagnosis). */
void th_dump_log(struct th *t);

/* cmocka fixtures: th_fixture_start allocates a th, starts the broker and
 * tmld (extra_ini appended to its config) and stores it in *state;
 * th_fixture_stop tears it down and frees it. */
int th_fixture_start(void **state, const char *extra_ini);
int th_fixture_stop(void **state);
/* The same with no extra configuration, in cmocka's fixture signature. */
int th_fixture_setup(void **state);
int th_fixture_teardown(void **state);
/* Polls th_db_int(sql) until it equals want; 0, or -1 on timeout (the last
 * value is printed). */
int th_wait_db(struct th *t, const char *sql, int64_t want, int timeout_ms);

/* Runs `tmld --check-config` on text (written as test.conf in a temp dir);
 * returns its exit status and its stderr in err (NUL-terminated), or -1. */
int th_check_config(const char *text, char *err, size_t cap);

/* ---- test devices ----------------------------------------------------------- */

struct tdev {
    struct th *t;
    char id[65];
    struct mosquitto *m;
    pthread_t thread;
    volatile int stop; /* 1: disconnect cleanly, 2: drop */
    pthread_mutex_t mu;
    bool is_connected;
    uint32_t acked_tele;   /* highest cumulative ack seen */
    uint32_t acked_sample;
    uint32_t n_acks;
    uint32_t model_version;
    /* numbering epoch of tdev_tele_lw/tdev_hello_boot (0: none, an agent
     * that predates epochs); like the agent, acks of another epoch are
     * ignored. Set with tdev_set_epoch. */
    uint32_t epoch;
    uint32_t acks_other_epoch;
};

/* Connects a device (certificate minted if missing); with_will publishes
 * the retained offline last will on up/state. Returns 0/-1. */
int tdev_open(struct tdev *v, struct th *t, const char *id, bool with_will);
void tdev_close(struct tdev *v);
/* Drops the TCP connection without DISCONNECT (the broker sends the will). */
void tdev_drop(struct tdev *v);
/* Publishes hello (groups: comma-separated, may be NULL) and state. */
int tdev_hello(struct tdev *v, const char *groups, uint32_t model_version);
int tdev_state(struct tdev *v, bool online);
/* Encodes and publishes one tele record with seq (QoS 1). */
int tdev_tele(struct tdev *v, uint32_t seq);
int tdev_sample(struct tdev *v, uint32_t seq, uint32_t sample_id,
                uint32_t reason);
/* Publishes raw bytes on up/<kind>. */
int tdev_raw(struct tdev *v, const char *kind, const void *buf, size_t len);
/* A bare tele as the agent sends it: seq with low-water lw (0: an older
 * agent that declares none), n_inferences = seq, in v->epoch. */
int tdev_tele_lw(struct tdev *v, uint32_t seq, uint32_t lw);
/* A new numbering life (state wiped): the epoch its records and hellos
 * carry from now on; what was acked before no longer counts. */
void tdev_set_epoch(struct tdev *v, uint32_t epoch);
/* A hello declaring the next tele seq, boot count and boot id (sample
 * numbering at 1). */
int tdev_hello_boot(struct tdev *v, uint32_t tele_next, uint32_t boot_count,
                    uint32_t boot_id);
/* Waits until acked_tele >= seq. Returns 0/-1. */
int tdev_wait_tele_ack(struct tdev *v, uint32_t seq, int timeout_ms);
uint32_t tdev_acked_tele(struct tdev *v);
/* Opens device id, sends tele 1..n with at most 64 unacked, and returns the
 * committed-and-acked rate in records/s, or -1 if not all n were acked
 * within 30 s. */
double tdev_ingest_rate(struct th *t, const char *id, uint32_t n);

#endif
