/*
 * pump.h: go-back-N test devices for the fault tests. Each device sends its
 * tele records 1..total in order with a window, remembers the highest
 * cumulative ack, and rewinds to ack + 1 when the ack stops moving, exactly
 * like the agent's unacked ring does.
 */
#ifndef TMLD_TEST_PUMP_H
#define TMLD_TEST_PUMP_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define PUMP_WINDOW 32
#define PUMP_REWIND_MS 600

struct pdev {
    struct tdev v;
    uint32_t next;
    uint32_t acked_seen;
    uint64_t last_progress_ms;
    uint32_t resent;
};

/* Called on every pump round; return non-zero to stop pumping early. */
typedef int (*pump_event)(struct th *t, struct pdev *d, int n, void *arg);

/* New records per device per round (0 = as many as the window allows):
 * paces a run so that faults land in the middle of it. */
static int pump_pace;

static inline void
pump_round(struct pdev *d, int n, uint32_t total)
{
    uint64_t now = th_now_ms();
    for (int i = 0; i < n; i++) {
        struct pdev *p = &d[i];
        uint32_t a = tdev_acked_tele(&p->v);
        if (a > p->acked_seen || p->last_progress_ms == 0) {
            p->acked_seen = a;
            p->last_progress_ms = now;
        }
        if (p->next <= a)
            p->next = a + 1;
        if (now - p->last_progress_ms > PUMP_REWIND_MS && p->next > a + 1) {
            p->resent += p->next - (a + 1);
            p->next = a + 1;
            p->last_progress_ms = now;
        }
        int sent = 0;
        while (p->next <= total && p->next - a - 1 < PUMP_WINDOW &&
               (pump_pace == 0 || sent < pump_pace)) {
            if (tdev_tele(&p->v, p->next) != 0)
                break;
            p->next++;
            sent++;
        }
    }
}

/* Pumps until every device has total acked, ev asks to stop, or timeout.
 * Returns 0 when everything was acked. */
static inline int
pump(struct th *t, struct pdev *d, int n, uint32_t total, int timeout_ms,
     pump_event ev, void *arg)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    while (th_now_ms() < end) {
        pump_round(d, n, total);
        int done = 0;
        for (int i = 0; i < n; i++)
            done += tdev_acked_tele(&d[i].v) >= total;
        if (done == n)
            return 0;
        if (ev && ev(t, d, n, arg))
            return 1;
        th_sleep_ms(2);
    }
    return -1;
}

/* Per device: rows stored must cover every acked seq; returns how many
 * acked records are missing (0 expected). */
static inline uint64_t
pump_acked_lost(struct th *t, struct pdev *d, int n)
{
    uint64_t lost = 0;
    for (int i = 0; i < n; i++) {
        char q[256];
        uint32_t acked = tdev_acked_tele(&d[i].v);
        snprintf(q, sizeof(q),
                 "SELECT count(DISTINCT t.seq) FROM tele t JOIN devices d ON "
                 "d.id = t.device_id WHERE d.name = '%s' AND t.seq <= %u",
                 d[i].v.id, acked);
        int64_t have = th_db_int(t, q);
        if (have < (int64_t)acked)
            lost += (uint64_t)((int64_t)acked - (have < 0 ? 0 : have));
    }
    return lost;
}

static inline int64_t
pump_dup_rows(struct th *t)
{
    return th_db_int(t, "SELECT count(*) - (SELECT count(*) FROM (SELECT "
                        "DISTINCT device_id, seq FROM tele)) FROM tele");
}

/* Shared by the fault and soak tests (which include <cmocka.h> first). */

/* A positive integer from the environment, else def: lets a slow run scale
 * a test up (e.g. TMLD_R1_CYCLES). */
static inline int
pump_env_int(const char *k, int def)
{
    const char *v = getenv(k);
    return v && atoi(v) > 0 ? atoi(v) : def;
}

/* cmocka setup: the harness's broker and state dir; the test starts tmld
 * itself (e.g. with fault-injection environment). */
static inline int
pump_setup_no_tmld(void **state)
{
    struct th *t = calloc(1, sizeof(*t));
    if (t == NULL || th_setup(t, NULL) != 0) {
        if (t)
            th_teardown(t);
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

/* cmocka setup: broker and a running tmld. */
static inline int
pump_setup(void **state)
{
    if (pump_setup_no_tmld(state) != 0)
        return -1;
    if (th_tmld_start(*state, NULL, 10000) != 0) {
        th_teardown(*state);
        free(*state);
        return -1;
    }
    return 0;
}

static inline int
pump_teardown(void **state)
{
    struct th *t = *state;
    th_teardown(t);
    free(t);
    return 0;
}

static inline void
pump_open_devs(struct th *t, struct pdev *d, int n, const char *prefix)
{
    for (int i = 0; i < n; i++) {
        char id[48];
        snprintf(id, sizeof(id), "%s-%02d", prefix, i);
        memset(&d[i], 0, sizeof(d[i]));
        assert_int_equal(tdev_open(&d[i].v, t, id, false), 0);
        d[i].next = 1;
    }
}

static inline void
pump_close_devs(struct pdev *d, int n)
{
    for (int i = 0; i < n; i++)
        tdev_close(&d[i].v);
}

/* The database passes PRAGMA integrity_check. */
static inline void
pump_assert_integrity(struct th *t)
{
    sqlite3 *db = th_db(t);
    assert_non_null(db);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st,
                                        NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

#endif
