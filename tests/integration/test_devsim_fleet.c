/*
 * test_devsim_fleet.c: many real agents in one tml-devsim process against a
 * real TLS mosquitto, with a gateway stand-in that stores every record and
 * acknowledges it (tests/integration/rig.c).
 *
 * Checks, per device: every tele record the device published was seen by
 * the gateway (distinct seqs and the highest seq agree with the device's
 * own log), every record was acknowledged (acked == sent), every inference
 * counted on the device arrived in some summary (sum of n_inferences ==
 * inferences made), samples likewise, and no message appeared outside the
 * fleet's own topic subtrees. Prints devices per process, RSS per device,
 * CPU and messages/s.
 *
 * Summaries every 2 s keep a slow machine's ack delay below the agent's
 * 4-entry ring: a full ring folds records that were already sent, which a
 * gateway that acknowledges contiguously (like this rig, or tmld's
 * go-back-N) can then wait for forever (see docs/devsim.md, Findings).
 *
 * Built twice: agent_devsim_fleet (DEVSIM_N=200, default suite) and
 * agent_devsim_fleet_2000 (label slow: "a test runs 2000 devices and checks
 * every one of them delivers", i.e. past libmosquitto's select() limit).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rig.h"

#ifndef DEVSIM_N
#define DEVSIM_N 200
#endif
#define COUNT 6 /* inferences per device */

struct fleet {
    char dir[256];
    struct rig_summary sum;
    struct rig_broker broker;
    struct rig_gw gw;
    bool has_gw;
};

static int
setup(void **state)
{
    struct fleet *f = calloc(1, sizeof(*f));

    if (f == NULL || rig_tmpdir(f->dir, sizeof(f->dir)) != 0)
        return -1;
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fleet *f = *state;

    if (f->has_gw)
        rig_gw_stop(&f->gw);
    rig_broker_stop(&f->broker);
    rig_summary_free(&f->sum);
    if (getenv("TML_KEEP_TMP") == NULL)
        rig_rmtree(f->dir);
    free(f);
    return 0;
}

static void
test_fleet_every_record_seen_and_acked(void **state)
{
    struct fleet *f = *state;
    char bin[600], sdir[300], json[300], log[300], n_arg[16], count_arg[16];
    char groups[64], port[16];
    uint64_t total_sent = 0, total_samples = 0;
    uint32_t i;
    pid_t pid;
    int rc;

    assert_int_equal(rig_broker_start(&f->broker, f->dir), 0);
    assert_int_equal(rig_gw_start(&f->gw, &f->broker, "fl-", 1, DEVSIM_N,
                                  true),
                     0);
    f->has_gw = true;
    assert_true(rig_gw_wait_ready(&f->gw, 10000));

    snprintf(sdir, sizeof(sdir), "%s/state", f->dir);
    snprintf(json, sizeof(json), "%s/summary.json", f->dir);
    snprintf(log, sizeof(log), "%s/devsim.log", f->dir);
    snprintf(n_arg, sizeof(n_arg), "%d", DEVSIM_N);
    snprintf(count_arg, sizeof(count_arg), "%d", COUNT);
    snprintf(port, sizeof(port), "%d", f->broker.port);
    snprintf(groups, sizeof(groups), "turbines:%d,pumps:%d", DEVSIM_N / 2,
             DEVSIM_N - DEVSIM_N / 2);
    {
        const char *argv[] = {
            rig_bin("tools/devsim/tml-devsim", bin, sizeof(bin)),
            "--port", port, "--cafile", f->broker.ca, "--ca-cert",
            f->broker.ca, "--ca-key", f->broker.ca_key, "--state-dir", sdir,
            "--devices", n_arg, "--prefix", "fl-", "--groups", groups,
            "--rate", "3", "--count", count_arg, "--summary-period", "2",
            "--conf-threshold", "7000", "--sample-budget", "2",
            "--budget-period", "1", "--input-bytes", "512",
            "--ack-timeout", "3000", "--drain", "60", "--status", "2",
            "--json-summary", json,
            /* Small runs too put their sockets above select()'s 1024. */
            "--reserve-fds", DEVSIM_N < 400 ? "1100" : "0", NULL};
        pid = rig_spawn(argv, log);
    }
    assert_true(pid > 0);
    rc = rig_wait(pid, DEVSIM_N > 500 ? 280000 : 100000);
    if (rc != 0) {
        char *text = rig_slurp(log);
        fprintf(stderr, "devsim exit %d, log:\n%s\n", rc, text ? text : "");
        free(text);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(rig_summary_load(&f->sum, json), 0);
    assert_int_equal(f->sum.n, DEVSIM_N);

    for (i = 0; i < f->sum.n; i++) {
        const struct rig_devsum *d = &f->sum.devs[i];
        uint32_t max_seq = 0;
        size_t seen = rig_gw_distinct(&f->gw, i, &max_seq);

        if (d->sent == 0 || d->acked != d->sent || seen != d->sent ||
            max_seq != d->last_seq || d->inferences != COUNT ||
            f->gw.devs[i].inferences != COUNT ||
            d->samples_acked != d->samples_sent ||
            rig_gw_distinct_samples(&f->gw, i) != d->samples_sent)
            fprintf(stderr,
                    "%s: sent %llu acked %llu seen %zu last %llu/%u "
                    "inferences %llu/%llu samples %llu/%llu/%zu\n",
                    d->id, (unsigned long long)d->sent,
                    (unsigned long long)d->acked, seen,
                    (unsigned long long)d->last_seq, max_seq,
                    (unsigned long long)d->inferences,
                    (unsigned long long)f->gw.devs[i].inferences,
                    (unsigned long long)d->samples_sent,
                    (unsigned long long)d->samples_acked,
                    rig_gw_distinct_samples(&f->gw, i));
        assert_true(d->sent > 0);
        assert_int_equal(d->acked, d->sent);
        assert_int_equal(seen, d->sent);
        assert_int_equal(max_seq, d->last_seq);
        assert_int_equal(d->inferences, COUNT);
        /* Every inference arrived, counted once (duplicates absorbed by
         * seq): sum of n_inferences over distinct records. */
        assert_int_equal(f->gw.devs[i].inferences, COUNT);
        assert_int_equal(d->samples_acked, d->samples_sent);
        assert_int_equal(rig_gw_distinct_samples(&f->gw, i),
                         d->samples_sent);
        assert_true(d->connects >= 1);
        total_sent += d->sent;
        total_samples += d->samples_sent;
    }
    /* The loop served sockets that libmosquitto's select() loop never
     * would (FD_SETSIZE 1024). */
    assert_true(f->sum.max_socket_fd >= 1024);
    assert_int_equal(f->gw.n_foreign, 0);
    assert_int_equal(f->gw.n_undecodable, 0);
    assert_true(total_samples > 0);
    printf("FIGURES devsim fleet: devices=%u max socket fd=%llu "
           "records=%llu samples=%llu "
           "publishes=%llu elapsed=%.1fs produce=%.1fs cpu=%.2fs "
           "rss=%lluKB rss/device=%.1fKB msgs/s=%.0f hello=%llu\n",
           f->sum.n, (unsigned long long)f->sum.max_socket_fd,
           (unsigned long long)total_sent,
           (unsigned long long)total_samples,
           (unsigned long long)f->sum.publishes, f->sum.elapsed_s, f->sum.produce_s,
           f->sum.cpu_s, (unsigned long long)f->sum.max_rss_kb,
           (double)f->sum.max_rss_kb / f->sum.n,
           f->sum.elapsed_s > 0 ? (double)f->sum.publishes / f->sum.elapsed_s : 0.0,
           (unsigned long long)f->gw.n_hello);
    rig_summary_free(&f->sum);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_fleet_every_record_seen_and_acked, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
