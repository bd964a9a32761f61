/*
 * tmld.c: the daemon's life cycle. Parses the command line, loads and
 * validates the config (core and modules), opens the store, starts the
 * modules, the control socket and the broker link, runs the loop, and on
 * SIGTERM/SIGINT drains within a bound: stop reading from the broker, stop
 * the modules, commit what is queued, publish its acks, close the database.
 * A kill -9 at any point is safe by design (acks follow commits), so the
 * drain bound is enforced by simply exiting.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

#define DRAIN_MAX_MS 10000
#define DRAIN_POLL_MS 20

static struct tmld_module *modules;

void
tmld_module_register(struct tmld_module *m)
{
    struct tmld_module **pp = &modules;
    while (*pp)
        pp = &(*pp)->next;
    m->next = NULL;
    *pp = m;
}

/* ---- small public helpers --------------------------------------------------- */

uv_loop_t *
tmld_loop(struct tmld *d)
{
    return d->loop;
}

uint64_t
tmld_now_ms(struct tmld *d)
{
    return uv_now(d->loop);
}

int64_t
tmld_wall_s(void)
{
    return (int64_t)time(NULL);
}

const char *
tmld_state_dir(struct tmld *d)
{
    return d->state_dir;
}

bool
tmld_is_stopping(struct tmld *d)
{
    return d->is_stopping;
}

/* ---- timers ------------------------------------------------------------------- */

struct tmld_timer {
    uv_timer_t h;
    struct tmld *d;
    tmld_timer_cb cb;
    void *arg;
    bool is_stopped;
    struct tmld_timer *next;
};

static void
timer_freed(uv_handle_t *h)
{
    free(h->data);
}

void
tmld_timer_stop(struct tmld_timer *t)
{
    if (t == NULL || t->is_stopped)
        return;
    t->is_stopped = true;
    struct tmld *d = t->d;
    for (struct tmld_timer **pp = &d->timers; *pp; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    }
    uv_close((uv_handle_t *)&t->h, timer_freed);
}

static void
timer_fire(uv_timer_t *h)
{
    struct tmld_timer *t = h->data;
    t->cb(t->d, t->arg);
    if (!t->is_stopped && uv_timer_get_repeat(h) == 0)
        tmld_timer_stop(t);
}

struct tmld_timer *
tmld_timer_start(struct tmld *d, uint64_t timeout_ms, uint64_t repeat_ms,
                 tmld_timer_cb cb, void *arg)
{
    if (d->is_stopping || cb == NULL)
        return NULL;
    struct tmld_timer *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->d = d;
    t->cb = cb;
    t->arg = arg;
    uv_timer_init(d->loop, &t->h);
    t->h.data = t;
    uv_timer_start(&t->h, timer_fire, timeout_ms, repeat_ms);
    t->next = d->timers;
    d->timers = t;
    return t;
}

/* ---- test hooks --------------------------------------------------------------- */

#ifdef TMLD_TEST_HOOKS
static const char *crash_at;
static long crash_after = 1;
static long crash_count;

void
tmld_test_crash(const char *point)
{
    if (crash_at == NULL || strcmp(point, crash_at) != 0)
        return;
    if (__atomic_add_fetch(&crash_count, 1, __ATOMIC_SEQ_CST) >= crash_after) {
        log_warn("test: crash at %s (TMLD_TEST_CRASH_AT)", point);
        raise(SIGKILL);
    }
}

static void
hooks_init(void)
{
    crash_at = getenv("TMLD_TEST_CRASH_AT");
    const char *n = getenv("TMLD_TEST_CRASH_AFTER");
    if (n != NULL && atol(n) > 0)
        crash_after = atol(n);
    if (crash_at != NULL)
        log_warn("test: will crash at %s (hit %ld)", crash_at, crash_after);
}
#else
void
tmld_test_crash(const char *point)
{
    (void)point;
}

static void
hooks_init(void)
{
}
#endif

/* ---- modules ------------------------------------------------------------------- */

static int
modules_check(struct tmld *d)
{
    int n = 0;
    for (struct tmld_module *m = modules; m; m = m->next)
        if (m->check != NULL)
            n += m->check(d);
    return n;
}

static int
modules_init(struct tmld *d)
{
    for (struct tmld_module *m = modules; m; m = m->next) {
        if (m->init == NULL) {
            m->is_started = true;
            continue;
        }
        int rc = m->init(d, &m->state);
        if (rc != 0) {
            log_err("tmld: module %s failed to start (%s)", m->name,
                    strerror(rc < 0 ? -rc : rc));
            return rc < 0 ? rc : -rc;
        }
        m->is_started = true;
        log_debug("tmld: module %s started", m->name);
    }
    return 0;
}

static void
modules_fini(struct tmld *d)
{
    /* Reverse order: count, then walk from the end. */
    size_t n = 0;
    for (struct tmld_module *m = modules; m; m = m->next)
        n++;
    for (size_t i = n; i > 0; i--) {
        struct tmld_module *m = modules;
        for (size_t j = 1; j < i; j++)
            m = m->next;
        if (m->is_started && m->fini != NULL)
            m->fini(d, m->state);
        m->is_started = false;
    }
    while (d->timers)
        tmld_timer_stop(d->timers);
}

/* ---- shutdown ------------------------------------------------------------------ */

static void
finish(struct tmld *d)
{
    uv_timer_stop(&d->drain_timer);
    uv_close((uv_handle_t *)&d->drain_timer, NULL);
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
    mqtt_stop(d);
    metrics_stop(d);
    notify_fini(d);
    registry_fini(d);
    store_close(d);
    while (d->hooks) {
        struct up_hook *h = d->hooks;
        d->hooks = h->next;
        free(h);
    }
    free(d->ingest);
    d->ingest = NULL;
    log_info("tmld: stopped");
}

static void
drain_cb(uv_timer_t *t)
{
    struct tmld *d = t->data;
    bool idle = store_idle(d);
    if (idle && mqtt_write_idle(d)) {
        finish(d);
        return;
    }
    if (tmld_now_ms(d) >= d->drain_deadline_ms) {
        if (!idle) {
            /* A batch is stuck in the writer (fsync on a dying card).
             * Exiting now is what kill -9 would do: safe, nothing acked is
             * lost, the unacked records come again from the devices. */
            log_err("tmld: drain did not finish in %d ms (store busy): "
                    "exiting without closing the database",
                    DRAIN_MAX_MS);
            _exit(1);
        }
        log_warn("tmld: drain: acks not all flushed to the broker in %d ms",
                 DRAIN_MAX_MS);
        finish(d);
        return;
    }
    store_flush(d);
}

static void
begin_drain(struct tmld *d, const char *why)
{
    if (d->is_stopping)
        return;
    log_info("tmld: %s: draining", why);
    notify_send("STOPPING=1");
    d->is_stopping = true;
    mqtt_pause(d);
    ctl_stop(d);
    modules_fini(d);
    registry_flush_seen(d);
    store_flush(d);
    d->drain_deadline_ms = tmld_now_ms(d) + DRAIN_MAX_MS;
    uv_timer_start(&d->drain_timer, drain_cb, 0, DRAIN_POLL_MS);
}

static void
on_signal(uv_signal_t *s, int signum)
{
    struct tmld *d = s->data;
    if (signum == SIGHUP) {
        /* Reloadable: the log level. Everything else needs a restart. */
        struct conf c;
        int rc = conf_load(&c, d->conf.path);
        if (rc == 0) {
            const char *lvl = conf_get(&c, "log", "level");
            static const char *levels[] = {"err", "warning", "notice",
                                           "info", "debug"};
            for (int i = 0; lvl && i < 5; i++)
                if (strcasecmp(lvl, levels[i]) == 0)
                    log_set_level(3 + i);
            log_info("tmld: SIGHUP: reloaded the log level; other changes "
                     "need a restart");
        } else {
            log_err("tmld: SIGHUP: %s has errors, keeping the running "
                    "config",
                    d->conf.path);
        }
        conf_free(&c);
        return;
    }
    begin_drain(d, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- start ----------------------------------------------------------------------- */

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: tmld [--config FILE] [--foreground] [--check-config]\n"
            "  --config FILE    configuration (default /etc/tmld/tmld.conf)\n"
            "  --foreground     run attached to the terminal (tmld never\n"
            "                   forks; accepted for scripts and units)\n"
            "  --check-config   validate the configuration and exit\n"
            "  --version        print the version and exit\n");
}

static int
make_state_dir(struct tmld *d)
{
    const char *p = d->set.db_path;
    const char *slash = strrchr(p, '/');
    d->state_dir = slash ? strndup(p, (size_t)(slash - p)) : strdup(".");
    if (d->state_dir == NULL)
        return -ENOMEM;
    if (d->state_dir[0] == '\0') {
        free(d->state_dir);
        d->state_dir = strdup("/");
    }
    struct stat st;
    if (stat(d->state_dir, &st) == 0)
        return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
    if (mkdir(d->state_dir, 0750) != 0) {
        int e = errno;
        log_err("tmld: cannot create state directory %s: %s", d->state_dir,
                strerror(e));
        return -e;
    }
    return 0;
}

int
tmld_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"foreground", no_argument, NULL, 'f'},
        {"check-config", no_argument, NULL, 'k'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *config = "/etc/tmld/tmld.conf";
    bool check_only = false;
    int o;
    while ((o = getopt_long(argc, argv, "c:fkVh", opts, NULL)) != -1) {
        switch (o) {
        case 'c':
            config = optarg;
            break;
        case 'f':
            break;
        case 'k':
            check_only = true;
            break;
        case 'V':
            printf("tmld %s (protocol %u)\n", TMLD_VERSION, TML_PROTO_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    log_init(6);
    hooks_init();

    static struct tmld dd;
    struct tmld *d = &dd;
    uv_loop_t loop;
    int rc = conf_load(&d->conf, config);
    if (rc < 0)
        return 2;
    d->loop = &loop; /* module checks may ask for the time */
    if (uv_loop_init(&loop) != 0) {
        log_err("tmld: uv_loop_init failed");
        return 1;
    }
    int problems = rc + settings_load(d, &d->set) + modules_check(d);
    if (problems > 0) {
        log_err("tmld: %s: %d problem(s); not starting", config, problems);
        uv_loop_close(&loop);
        conf_free(&d->conf);
        return 2;
    }
    if (check_only) {
        printf("tmld: %s: configuration OK\n", config);
        uv_loop_close(&loop);
        conf_free(&d->conf);
        return 0;
    }
    log_set_level(d->set.log_level);
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)(time(NULL) ^ getpid()));
    uv_update_time(&loop);
    d->start_ms = tmld_now_ms(d);
    log_info("tmld %s starting (config %s, pid %d)", TMLD_VERSION, config,
             (int)getpid());

    uv_timer_init(&loop, &d->drain_timer);
    d->drain_timer.data = d;
    uv_signal_init(&loop, &d->sig_term);
    uv_signal_init(&loop, &d->sig_int);
    uv_signal_init(&loop, &d->sig_hup);
    d->sig_term.data = d->sig_int.data = d->sig_hup.data = d;

    rc = make_state_dir(d);
    if (rc == 0)
        rc = store_open(d);
    if (rc == 0)
        rc = registry_init(d);
    if (rc == 0) {
        ctl_register_core_verbs(d);
        rc = modules_init(d);
    }
    if (rc == 0)
        rc = ctl_start(d);
    if (rc == 0)
        rc = mqtt_start(d);
    if (rc == 0)
        rc = metrics_start(d);
    if (rc != 0) {
        log_err("tmld: start-up failed; exiting");
        d->exit_code = 1;
        d->is_stopping = true;
        ctl_stop(d);
        modules_fini(d);
        finish(d);
    } else {
        uv_signal_start(&d->sig_term, on_signal, SIGTERM);
        uv_signal_start(&d->sig_int, on_signal, SIGINT);
        uv_signal_start(&d->sig_hup, on_signal, SIGHUP);
        notify_init(d);
        log_info("tmld: ready");
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(&loop);
    if (rc != 0)
        log_err("tmld: loop closed with handles still open (a bug)");
    conf_free(&d->conf);
    free(d->state_dir);
    return d->exit_code;
}
