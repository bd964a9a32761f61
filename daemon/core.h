/*
 * core.h: tmld's private wiring between its core modules (not for plug-in
 * modules: they use tmld.h only). struct tmld lives here; each core module
 * owns one member struct and the functions named after it.
 */
#ifndef TMLD_CORE_H
#define TMLD_CORE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "migrations.h"
#include "tmld.h"

#define TMLD_VERSION "0.1.0"

/* ---- config ------------------------------------------------------------- */

struct conf_entry {
    char *section;
    char *key;
    char *value;
    int line;
};

#define CONF_MAX_ENTRIES 512

struct conf {
    char *path;
    struct conf_entry *entries;
    size_t n_entries;
    int n_errors;
};

/* The validated settings of the core sections. */
struct settings {
    /* [mqtt] */
    const char *mqtt_host;
    int mqtt_port;
    bool mqtt_tls;
    bool mqtt_plaintext_loopback; /* explicit opt-in for tls = no */
    const char *mqtt_cafile, *mqtt_certfile, *mqtt_keyfile;
    const char *mqtt_client_id;
    uint64_t mqtt_keepalive_ms;
    uint64_t mqtt_reconnect_min_ms, mqtt_reconnect_max_ms;
    /* [db] */
    const char *db_path;
    bool db_sync_full;
    uint64_t db_batch_records;
    uint64_t db_batch_ms;
    uint64_t db_cap_bytes;
    uint64_t db_queue_max;
    /* [retention] */
    uint64_t ret_tele_days;
    uint64_t ret_samples_bytes;
    uint64_t ret_interval_ms;
    /* [control] */
    const char *ctl_socket;
    uint64_t ctl_max_clients;
    uint64_t ctl_idle_ms;
    uint64_t ctl_timeout_ms;
    /* [ingest] */
    uint64_t offline_after_ms;
    uint64_t max_devices;
    uint64_t malformed_log_ms;
    /* [log] */
    int log_level; /* syslog priority: 3 err .. 7 debug */
    /* [metrics] */
    const char *metrics_textfile;
    uint64_t metrics_interval_ms;
};

/* Loads path into c (and the settings into s). Returns the number of
 * problems (each logged with file and line), or -errno if unreadable. */
int conf_load(struct conf *c, const char *path);
/* Parses an in-memory config (fuzzing, tests). Returns problems found. */
int conf_load_buf(struct conf *c, const char *name, const char *buf,
                  size_t len);
void conf_free(struct conf *c);
const char *conf_get(const struct conf *c, const char *section,
                     const char *key);
/* Validates the core sections into s; returns the number of problems. */
int settings_load(struct tmld *d, struct settings *s);

/* ---- log ---------------------------------------------------------------- */

void log_init(int level);
void log_set_level(int level);

/* ---- store (daemon/store.c) ---------------------------------------------- */

/* One record for the ingest batch. Built on the loop thread from a decoded
 * message (strings copied), consumed by the writer thread. */
enum rec_kind {
    REC_TELE = 1,
    REC_SAMPLE,
    REC_HELLO,
    REC_STATE,
    REC_SEEN, /* last_seen update only */
    REC_JOB   /* a module's tmld_db_write job */
};

#define REC_NAME_MAX (TML_MAX_NAME + 1)

struct hello_rec {
    uint32_t agent_version, model_version, model_slot, slot_size, arena_size;
    uint32_t chunk_max, boot_count, last_ota_state, last_ota_reason;
    uint32_t last_ota_version, version_floor;
    uint32_t tele_next, sample_next, boot_id; /* 0 = not declared */
    uint32_t epoch;                           /* 0 = not declared */
    char hw[REC_NAME_MAX];
    char model[REC_NAME_MAX];
    size_t n_groups;
    char groups[TML_MAX_GROUPS][REC_NAME_MAX];
};

struct rec {
    enum rec_kind kind;
    struct device *dev; /* loop-thread object; the worker reads dev->name */
    int64_t recv_s;     /* wall clock at receipt (unix s) */
    uint32_t seq;       /* tele/sample stream sequence number */
    uint32_t lw;        /* tele/sample low-water, 0 = not declared */
    uint32_t epoch;     /* tele/sample numbering epoch, 0 = not declared */
    uint8_t *data;      /* owned: tele body (CBOR) or sample chunk bytes */
    size_t data_len;
    union {
        struct {
            uint32_t model_version, period_s, n_inferences, n_low_conf;
            uint32_t n_flagged, n_errors, lat_mean_us;
        } tele;
        struct {
            uint32_t sample_id, model_version, predicted, confidence_bp;
            uint32_t expected, rate_hz, total_len, offset;
            uint8_t reason, dtype;
            bool has_expected;
            char shape[64];
        } sample;
        struct hello_rec *hello; /* owned */
        bool online;
        struct {
            tmld_db_write_fn fn;
            tmld_db_done_fn done;
            void *arg;
            int status;
        } job;
    } u;
    struct rec *next;
};

void rec_free(struct rec *r);

struct store_stats {
    uint64_t batches, commit_errors, tele, samples, duplicates, gaps;
    uint64_t last_commit_ms, max_commit_ms;
    uint64_t commit_hist[12]; /* commit latency buckets, see metrics.c */
    /* Sequence numbers given up below a record's low-water, restarted
     * numberings, and hellos of the current boot delivered again with a
     * stale next seq (ignored); docs/tmld.md "Sequence gaps". */
    uint64_t skipped, seq_resets, stale_hellos;
};

struct store;
int store_open(struct tmld *d);            /* open, check, migrate */
void store_close(struct tmld *d);          /* after the writer drained */
int store_submit(struct tmld *d, struct rec *r); /* takes r */
void store_flush(struct tmld *d);          /* start a batch now if idle */
bool store_idle(struct tmld *d);           /* nothing queued or in flight */
size_t store_queued(struct tmld *d);
const struct store_stats *store_stats(struct tmld *d);
int64_t store_user_version(struct tmld *d);
int64_t store_size_bytes(struct tmld *d, int64_t *wal_bytes);
/* Called by store when a batch committed, per device touched: the
 * high-waters of the device's numbering epoch (0 = the device sends none). */
void ingest_committed(struct tmld *d, struct device *dev, bool has_tele,
                      uint32_t tele_hw, bool has_sample, uint32_t sample_hw,
                      uint32_t epoch);
/* Applies every migration above user_version, each in one transaction. */
int store_migrate(sqlite3 *db, const char *path);
/* The same over any list sorted by version (tests). A migration never
 * recorded in schema_migrations is applied even when a higher one already
 * ran (the ranges of different owners interleave); user_version keeps the
 * highest applied; a database whose user_version is above every known
 * migration is refused (-EPROTO). */
int store_migrate_list(sqlite3 *db, const char *path,
                       const struct tmld_migration *list, size_t n);

/* ---- registry (daemon/registry.c) ---------------------------------------- */

struct device {
    char name[TML_MAX_DEVICE_ID + 1];
    int64_t rowid;        /* 0 until stored */
    bool is_online;
    bool is_known_online; /* as stored in the DB */
    uint64_t last_seen_ms;
    int64_t last_seen_s;
    int64_t persisted_seen_s;
    uint64_t n_malformed;
    uint64_t malformed_logged_ms;
    uint64_t n_malformed_suppressed;
    bool is_row_requested; /* a record creating its row was queued */
    struct device *hnext; /* hash chain */
    struct device *lnext; /* list of all */
};

int registry_init(struct tmld *d);
void registry_fini(struct tmld *d);
/* Finds or creates (NULL when max_devices is reached). */
struct device *registry_get(struct tmld *d, const char *name, bool create);
void registry_seen(struct tmld *d, struct device *dev);
void registry_set_online(struct tmld *d, struct device *dev, bool online);
size_t registry_count(struct tmld *d, size_t *n_online);
struct device *registry_first(struct tmld *d);
void registry_flush_seen(struct tmld *d);

/* ---- ingest (daemon/ingest.c) -------------------------------------------- */

struct ingest_stats {
    uint64_t received, malformed, oversize, acks, ack_errors, refused;
};
void ingest_on_message(struct tmld *d, const struct tml_topic *t,
                       const char *dev, const uint8_t *payload, size_t len);
const struct ingest_stats *ingest_stats(struct tmld *d);

/* ---- mqtt (daemon/mqtt.c) ------------------------------------------------- */

struct mqtt_stats {
    uint64_t connects, disconnects, messages, bad_topic;
};
int mqtt_start(struct tmld *d);
/* Stops reading new messages (drain) but keeps writing. */
void mqtt_pause(struct tmld *d);
void mqtt_stop(struct tmld *d);
bool mqtt_write_idle(struct tmld *d);
const struct mqtt_stats *mqtt_stats(struct tmld *d);
void mqtt_dispatch_hooks(struct tmld *d, const char *dev, enum tml_kind kind,
                         const uint8_t *payload, size_t len);

/* ---- ctl (daemon/ctl.c) --------------------------------------------------- */

int ctl_start(struct tmld *d);
void ctl_stop(struct tmld *d);
void ctl_register_core_verbs(struct tmld *d);
/* The request parser, separate so that it can be fuzzed: parses one line
 * into a cJSON request; on failure writes an error code/message. */
cJSON *ctl_parse_request(const char *line, size_t len, const char **code,
                         const char **message);
/* Builds the response line (NUL-terminated, with '\n'); caller frees. */
char *ctl_format_response(const cJSON *id, bool ok, cJSON *result,
                          const char *code, const char *message);

/* ---- notify (daemon/notify.c) --------------------------------------------- */

void notify_init(struct tmld *d);
void notify_send(const char *msg);
void notify_fini(struct tmld *d);

/* ---- retention (daemon/retention.c) --------------------------------------- */

/* Runs retention now (or right after the running pass): the database is
 * full. */
void retention_kick(struct tmld *d);
void retention_stats(uint64_t *rolled, uint64_t *evicted);

/* ---- metrics (daemon/metrics.c) ------------------------------------------- */

int metrics_start(struct tmld *d);
void metrics_stop(struct tmld *d);

/* ---- the daemon context ---------------------------------------------------- */

struct up_hook {
    enum tml_kind kind;
    tmld_up_hook fn;
    void *arg;
    struct up_hook *next;
};

struct ctl_verb {
    const char *name;
    tmld_ctl_handler fn;
    void *arg;
    struct ctl_verb *next;
};

struct tmld {
    uv_loop_t *loop;
    struct conf conf;
    struct settings set;
    char *state_dir;
    uint64_t start_ms;
    bool is_stopping;
    int exit_code;
    struct store *store;
    struct mqtt *mqtt;
    struct registry *reg;
    struct ingest *ingest;
    struct ctl *ctl;
    struct notifier *notify;
    struct metrics *metrics;
    struct up_hook *hooks;
    struct ctl_verb *verbs;
    struct tmld_timer *timers;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t drain_timer;
    uint64_t drain_deadline_ms;
};

/* Test builds (TML_TEST_HOOKS): kills the process with SIGKILL when point
 * equals $TMLD_TEST_CRASH_AT, on the $TMLD_TEST_CRASH_AFTER-th time the
 * point is reached (default 1). Points: after_recv,
 * after_insert_before_commit, after_commit_before_ack, after_ack_publish.
 * A no-op otherwise. Safe from any thread. */
void tmld_test_crash(const char *point);

/* Test builds: installs the fault-injecting SQLite VFS when
 * TMLD_TEST_IOERR_FILE or TMLD_TEST_IOERR_NTH is set (daemon/testvfs.c). */
void testvfs_install(void);

/* main.c runs this. */
int tmld_main(int argc, char **argv);

/* Read-only control queries are bounded in time: between query_guard_start
 * and query_guard_end a progress handler interrupts any statement on db
 * after QUERY_MAX_MS (it then fails with SQLITE_INTERRUPT; the verb answers
 * "busy"), so a large table cannot stall the loop (verbs.c). */
#define QUERY_MAX_MS 500
struct query_guard {
    struct timespec start;
};
void query_guard_start(sqlite3 *db, struct query_guard *g);
void query_guard_end(sqlite3 *db);

#endif /* TMLD_CORE_H */
