/*
 * tmld.h: the internal API of tmld that modules plug into.
 *
 * tmld is one process with one libuv loop. The core (config, log, store,
 * mqtt, registry, ingest, ctl) owns the loop, the SQLite database and the
 * broker link. A module is one or more daemon/<module>*.c files: the CMake
 * glob compiles every daemon/NAME.c into tmld, and TMLD_MODULE() registers the
 * module at program start, so adding a module edits no core file.
 *
 * Threading: every function here must be called on the loop thread (from a
 * module's init/fini, a control handler, an up-message hook, a timer or a
 * writer-queue done callback), except where a comment says otherwise. The
 * only code that runs off the loop thread is a tmld_db_write() job function.
 *
 * Life cycle, in order:
 *   1. config loaded and validated (core sections by the core; a module's
 *      check callback validates its own section, also for --check-config);
 *   2. database opened, quick_check, migrations applied (db/NNNN_*.sql);
 *   3. every module's init, in registration order (do not rely on it);
 *   4. control socket listening, broker connecting, READY=1 sent;
 *   5. on SIGTERM: broker reads stop, every module's fini (reverse order;
 *      fini may still queue final writes), the writer queue drains, acks are
 *      published, the database is closed.
 *
 * Errors: functions return 0 or a negative errno, as the rest of the daemon.
 */
#ifndef TMLD_H
#define TMLD_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <uv.h>

#include "tml/proto.h"

#define TMLD_WUR __attribute__((warn_unused_result))
#define TMLD_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* The daemon context. One per process; opaque to modules. */
struct tmld;

/* ---- modules ------------------------------------------------------------ */

/* init: called once after the database is migrated and before the broker
 * connects. May register control verbs and up-message hooks, start timers,
 * read its config section. *state is the module's own pointer, handed back
 * to fini. Return 0, or a negative errno to abort start-up (log why first).
 * fini: called once at shutdown (also when a later module's init failed),
 * on the loop thread; stop timers and close handles here. Handles still
 * closing after fini returns are waited for by the core. May be NULL. */
typedef int (*tmld_module_init_fn)(struct tmld *d, void **state);
typedef void (*tmld_module_fini_fn)(struct tmld *d, void *state);
/* check: validates the module's config section(s) before anything starts
 * (and for `tmld --check-config`). Report problems with tmld_config_error()
 * and return the number of problems found (0 = valid). May be NULL. */
typedef int (*tmld_module_check_fn)(struct tmld *d);

struct tmld_module {
    const char *name;
    tmld_module_init_fn init;
    tmld_module_fini_fn fini;
    tmld_module_check_fn check;
    /* core-private below */
    void *state;
    bool is_started;
    struct tmld_module *next;
};

/* Adds m to the module list. Called by TMLD_MODULE's constructor; m must
 * live for the whole process (a static). */
void tmld_module_register(struct tmld_module *m);

/* TMLD_MODULE(ota, ota_module_init, ota_module_fini) in ota.c registers the
 * module "ota". TMLD_MODULE_CHECKED adds a config check callback. */
#define TMLD_MODULE_CHECKED(name_, init_, fini_, check_)                      \
    static struct tmld_module tmld__module_##name_ = {#name_, init_, fini_,    \
                                                      check_, NULL, false,     \
                                                      NULL};                   \
    __attribute__((constructor)) static void tmld__register_##name_(void)      \
    {                                                                          \
        tmld_module_register(&tmld__module_##name_);                           \
    }                                                                          \
    struct tmld__module_##name_##_semicolon
#define TMLD_MODULE(name_, init_, fini_)                                       \
    TMLD_MODULE_CHECKED(name_, init_, fini_, NULL)

/* ---- logging (daemon/log.c) --------------------------------------------
 * One line per call, to stderr: a syslog "<N>" prefix under journald (or
 * when stderr is not a terminal), a timestamp on a terminal. Start the line
 * with the module and the object: "ota: dev=turbine-17 v12: ...". errno is
 * preserved. */
void log_err(const char *fmt, ...) TMLD_PRINTF(1, 2);
void log_warn(const char *fmt, ...) TMLD_PRINTF(1, 2);
void log_info(const char *fmt, ...) TMLD_PRINTF(1, 2);
void log_debug(const char *fmt, ...) TMLD_PRINTF(1, 2);

/* ---- config (daemon/config.c, inih) -------------------------------------
 * The whole file is kept; the core validates its own sections ([mqtt], [db],
 * [retention], [control], [ingest], [log], [metrics]) and rejects unknown
 * keys there. Any other section belongs to the module that reads it
 * ([ota], [rollout], [upstream], ...). Values are returned as written
 * (whitespace trimmed, inline ";" comments removed). */

/* Raw value of [section] key, or NULL if absent. Valid for the life of d. */
const char *tmld_config_get(struct tmld *d, const char *section,
                            const char *key);
/* Helpers: absent -> *out = def and 0; present and valid -> parsed value and
 * 0; present and invalid -> a tmld_config_error() naming the accepted values
 * and -EINVAL (*out untouched). Integers accept decimal only; bools accept
 * yes/no/true/false/on/off/1/0. Durations are integers with an optional
 * unit suffix ms, s, m, h, d (no suffix = the unit named by the function).
 * Sizes accept suffixes K, M, G (powers of 1024). */
TMLD_WUR int tmld_config_int(struct tmld *d, const char *section,
                             const char *key, int64_t def, int64_t min,
                             int64_t max, int64_t *out);
TMLD_WUR int tmld_config_bool(struct tmld *d, const char *section,
                              const char *key, bool def, bool *out);
TMLD_WUR int tmld_config_ms(struct tmld *d, const char *section,
                            const char *key, uint64_t def_ms, uint64_t min_ms,
                            uint64_t max_ms, uint64_t *out_ms);
TMLD_WUR int tmld_config_size(struct tmld *d, const char *section,
                              const char *key, uint64_t def, uint64_t min,
                              uint64_t max, uint64_t *out);
/* Logs "FILE:LINE: [section] key: <message>" (LINE of the key, or of the
 * file when the key is absent) and counts the error. */
void tmld_config_error(struct tmld *d, const char *section, const char *key,
                       const char *fmt, ...) TMLD_PRINTF(4, 5);
/* Path of the loaded config file. */
const char *tmld_config_path(struct tmld *d);

/* ---- loop, time, timers -------------------------------------------------- */

uv_loop_t *tmld_loop(struct tmld *d);
/* Monotonic milliseconds (uv_now of the loop). */
uint64_t tmld_now_ms(struct tmld *d);
/* Wall-clock unix seconds (for timestamps stored in the database). */
int64_t tmld_wall_s(void);
/* The state directory (where the database lives), from [db] path's dir. */
const char *tmld_state_dir(struct tmld *d);
/* True once SIGTERM/SIGINT started the drain: stop starting new work. */
bool tmld_is_stopping(struct tmld *d);

/* A convenience timer: cb(arg) after timeout_ms, then every repeat_ms (0 =
 * once). The core owns the handle; tmld_timer_stop() stops and frees it (safe
 * from inside cb). A one-shot timer is freed right after its callback
 * returns: do not use its pointer after that. Returns NULL on allocation
 * failure or while stopping. Timers still running at shutdown are stopped by
 * the core after the modules' fini. */
struct tmld_timer;
typedef void (*tmld_timer_cb)(struct tmld *d, void *arg);
struct tmld_timer *tmld_timer_start(struct tmld *d, uint64_t timeout_ms,
                                    uint64_t repeat_ms, tmld_timer_cb cb,
                                    void *arg);
void tmld_timer_stop(struct tmld_timer *t);

/* ---- database (daemon/store.c) -------------------------------------------
 * One SQLite file in WAL mode. Schema: db/NNNN_name.sql, applied in order by
 * PRAGMA user_version at start (0001-0099 core, 0100-0199 OTA, 0200+
 * upstream). */

/* A read-only connection for queries on the loop thread (query_only=ON,
 * busy_timeout 100 ms). Keep queries small and bounded (LIMIT); use
 * sqlite3_prepare_v3 with SQLITE_PREPARE_PERSISTENT for hot statements and
 * finalise them in fini. Never NULL after start-up. */
sqlite3 *tmld_db_ro(struct tmld *d);

/* A write job. fn runs on the writer thread inside the next group-commit
 * transaction, within its own SAVEPOINT: returning non-zero (a negative
 * errno or an SQLite code, your choice) rolls back only this job's changes.
 * fn must not touch loop-thread state, call tmld_* functions or block for
 * long; it gets the writer connection (read-write) for this call only.
 * done (may be NULL) runs later on the loop thread with status = fn's
 * return value when the transaction committed, or a negative errno (-EIO)
 * when the whole batch failed to commit (nothing of fn is stored then; the
 * batch is NOT retried for jobs: resubmit if you need to). arg is owned by
 * the caller and must stay valid until done runs (free it there).
 * Returns 0, -ENOMEM, -ENOSPC (queue at its cap: back off) or -ESHUTDOWN
 * (the writer has stopped). Jobs commit in submission order. */
typedef int (*tmld_db_write_fn)(sqlite3 *db, void *arg);
typedef void (*tmld_db_done_fn)(struct tmld *d, int status, void *arg);
TMLD_WUR int tmld_db_write(struct tmld *d, tmld_db_write_fn fn,
                           tmld_db_done_fn done, void *arg);
/* The same for a job someone is waiting on (an operator's request): its
 * batch starts at once instead of after db.batch_ms of group commit. */
TMLD_WUR int tmld_db_write_now(struct tmld *d, tmld_db_write_fn fn,
                               tmld_db_done_fn done, void *arg);

/* ---- devices (daemon/registry.c) ----------------------------------------- */

/* The device's database row id (devices.id), or 0 if the device has never
 * been stored. dev is a NUL-terminated device id. */
int64_t tmld_device_rowid(struct tmld *d, const char *dev);
/* True if the device is currently online. */
bool tmld_device_is_online(struct tmld *d, const char *dev);

/* ---- MQTT (daemon/mqtt.c) ------------------------------------------------ */

/* Up-message hook: called on the loop thread for every message on
 * tml/v1/<dev>/up/<kind> whose topic parsed and whose size is within
 * TML_MAX_MESSAGE, after the core's own handling of that kind (hello,
 * state, tele, sample) if any. dev is NUL-terminated and valid per
 * tml_device_id_valid(); payload is borrowed for the call only. Decoding is
 * the hook's job; count a malformed payload with tmld_count_malformed().
 * Several hooks may watch one kind; they run in registration order. */
typedef void (*tmld_up_hook)(struct tmld *d, const char *dev,
                             enum tml_kind kind, const uint8_t *payload,
                             size_t len, void *arg);
TMLD_WUR int tmld_up_register(struct tmld *d, enum tml_kind kind,
                              tmld_up_hook hook, void *arg);

/* Publishes payload to tml/v1/<dev>/down/<kind> with QoS 1, not retained.
 * Returns 0 (queued in libmosquitto), -ENOTCONN (broker link down: retry
 * later, nothing is queued), -EINVAL (bad dev/kind/len) or -ENOMEM. */
TMLD_WUR int tmld_publish(struct tmld *d, const char *dev,
                          enum tml_kind kind, const void *payload,
                          size_t len);
/* The same with QoS 0: for messages the device asked for and asks for again
 * when they do not come (OTA chunks, PROTOCOL.md 8): no PUBACK round on
 * either hop, and nothing queued by the broker for an offline device. */
TMLD_WUR int tmld_publish_qos0(struct tmld *d, const char *dev,
                               enum tml_kind kind, const void *payload,
                               size_t len);
/* True while the broker link is up and subscribed. */
bool tmld_mqtt_is_connected(struct tmld *d);

/* Counts a malformed message from dev with a reason (a short constant
 * string, e.g. tml_strerror(err)) and logs it, rate-limited per device. */
void tmld_count_malformed(struct tmld *d, const char *dev, enum tml_kind kind,
                          const char *reason);

/* ---- control socket (daemon/ctl.c) ----------------------------------------
 * docs/ctl-protocol.md is the wire description. A verb is "noun" or
 * "noun.verb" ([a-z0-9_.], at most 31 bytes). The handler gets the request's
 * "args" object (never NULL: {} when absent; borrowed for the call) and must
 * answer exactly once, with tmld_ctl_reply_ok() or tmld_ctl_reply_err(),
 * either before returning or later (e.g. from a tmld_db_write done
 * callback). req stays valid until answered; if the client went away the
 * answer is discarded. A request not answered within [control] timeout gets
 * an error "timeout" on the wire; the late answer is then discarded. */
struct tmld_ctl_req;
typedef void (*tmld_ctl_handler)(struct tmld *d, struct tmld_ctl_req *req,
                                 const cJSON *args, void *arg);
/* Registers verb; -EEXIST if taken, -EINVAL for a bad name. verb must be a
 * string literal or otherwise outlive d. */
TMLD_WUR int tmld_ctl_register(struct tmld *d, const char *verb,
                               tmld_ctl_handler handler, void *arg);
/* Answers with {"ok":true,"result":result}. Takes ownership of result (may
 * be NULL for {}). */
void tmld_ctl_reply_ok(struct tmld_ctl_req *req, cJSON *result);
/* Answers with {"ok":false,"error":{"code":code,"message":...}}. code is one
 * of the codes in docs/ctl-protocol.md. */
void tmld_ctl_reply_err(struct tmld_ctl_req *req, const char *code,
                        const char *fmt, ...) TMLD_PRINTF(3, 4);
/* Peer credentials of the requesting client (SO_PEERCRED). */
uint32_t tmld_ctl_req_uid(const struct tmld_ctl_req *req);

/* Argument helpers for handlers: each returns 0 and sets *out, 1 if the key
 * is absent (out untouched), or -EINVAL if present with the wrong type or out
 * of range (reply bad_args then). Strings are borrowed from args. */
int tmld_ctl_arg_str(const cJSON *args, const char *key, size_t max_len,
                     const char **out);
int tmld_ctl_arg_int(const cJSON *args, const char *key, int64_t min,
                     int64_t max, int64_t *out);
int tmld_ctl_arg_bool(const cJSON *args, const char *key, bool *out);

#endif /* TMLD_H */
