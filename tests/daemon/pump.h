/*
 * pump.h: go-back-N test devices for the fault tests. Each device sends its
 * tele records 1..total in order with a window, remembers the highest
 * cumulative ack, and rewinds to ack + 1 when the ack stops moving, exactly
 * like the agent's unacked ring does.
 */
#ifndef TMLD_TEST_PUMP_H
#define TMLD_TEST_PUMP_H

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

#endif
