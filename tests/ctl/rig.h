/*
 * rig.h: the test rig of tests/ctl: a mkdtemp directory with a fleet PKI
 * made by the tmlctl under test, mosquitto started with the configuration
 * `tmlctl broker-config` renders, optionally tmld, and libmosquitto clients
 * driven by pump() (single-threaded, every wait bounded). Processes are
 * killed by PID in rig_stop() and at exit.
 */
#ifndef TMLCTL_TEST_RIG_H
#define TMLCTL_TEST_RIG_H

#include <stddef.h>
#include <sys/types.h>

#include <mosquitto.h>

struct rig {
    char dir[64];
    char tmlctl[1024];
    char pki[128], pki2[128], dev[128];
    int port;
    pid_t broker;
    pid_t tmld;
    pid_t extra; /* a test's own extra process, killed with the rest */
    char sock[160];
};

/* The rig of the running test program (for clients and the exit hook). */
extern struct rig *the_rig;

struct cl {
    struct mosquitto *m;
    int connack; /* -1 none yet */
    int connects;
    int disconnects;
    int msgs;       /* messages received */
    int msgs_topic; /* received on `watch` */
    char watch[128];
    int puback_ok, puback_denied;
    int subscribed;
    int dead; /* mosquitto_loop reported a lost/refused connection */
};

/* Protocol of the next client() (MQTT 5 unless a test needs 3.1.1). */
extern int next_protocol;

/* system() with printf formatting; returns the exit status or -1. */
int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Creates the directory and the PKI (tmlctl pki init). */
void rig_init(struct rig *r);
/* tmlctl device provision ID into r->dev (extra: more options or ""). */
void rig_provision(struct rig *r, const char *id, const char *extra);
/* tmlctl broker-config + mosquitto; returns when the TLS port accepts. */
void rig_broker_start(struct rig *r);
/* tmld with a config pointing at the rig's broker and PKI; returns when
 * its control socket answers. extra_ini is appended (may be NULL). */
void rig_tmld_start(struct rig *r, const char *extra_ini);
/* Runs tmlctl ARGS against the rig's tmld (--socket); exit status, stdout
 * in *out (malloc'ed; NULL to discard). */
int rig_ctl(char **out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Kills what was started and removes the directory (TML_KEEP=1 keeps). */
void rig_stop(struct rig *r);

void pump(struct cl **cs, size_t n, int ms);
void pump_until(struct cl **cs, size_t n, const int *flag, int want,
                int timeout_ms);
struct cl *client(const char *client_id, const char *ca, const char *cert,
                  const char *key);
void client_free(struct cl *c);
struct cl *dev_client(const char *id, const char *client_id);
struct cl *tmld_client(void);
void subscribe(struct cl *c, const char *pattern);
void publish_n(struct cl *c, struct cl **others, size_t n_others,
               const char *topic, int n, size_t len);

#endif
