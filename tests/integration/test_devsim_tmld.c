/*
 * test_devsim_tmld.c: end to end, devsim -> broker -> tmld -> SQLite. Real
 * agents in tml-devsim publish through a real TLS mosquitto to a real tmld,
 * which commits them to its SQLite file and acknowledges after the commit.
 * Once devsim has seen every record acknowledged, the database (read while
 * tmld still runs) must hold, for every device, exactly the records
 * the device sent (one row per tele seq, no duplicates, no gaps) and every
 * inference once (sum of n_inferences), and every device must have seen its
 * records acknowledged (acked == sent: acks really follow commits).
 * With reboots and a broker kill (agent_devsim_tmld_gaps, issues 3 and 4):
 * every tele number up to the last is either stored once or given up by
 * tmld below a low-water (stream_hw.tele_skipped), and every inference a
 * device made is in the database once or died in its RAM at a reboot
 * (devsim counts those from the agent's context before throwing it away).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "rig.h"

/* The default suite runs 50 devices x 12 inferences; agent_devsim_tmld_soak
 * (label slow) builds this file with N_DEV=200 COUNT=240 (rate 4/s: 60 s of
 * inferences per device), issue 4's "200 simulated devices for 60 s". */
#ifndef N_DEV
#define N_DEV 50
#endif
#ifndef COUNT
#define COUNT 12
#endif

struct fx {
    char dir[256];
    struct rig_summary sum;
    struct rig_broker broker;
    pid_t tmld;
    char conf[300], db[300], sock[300], tlog[300];
};

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    if (f == NULL || rig_tmpdir(f->dir, sizeof(f->dir)) != 0)
        return -1;
    snprintf(f->conf, sizeof(f->conf), "%s/tmld.conf", f->dir);
    snprintf(f->db, sizeof(f->db), "%s/tmld/tmld.db", f->dir);
    snprintf(f->sock, sizeof(f->sock), "%s/tmld.sock", f->dir);
    snprintf(f->tlog, sizeof(f->tlog), "%s/tmld.log", f->dir);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;

    rig_kill(f->tmld);
    rig_broker_stop(&f->broker);
    rig_summary_free(&f->sum);
    if (getenv("TML_KEEP_TMP") == NULL)
        rig_rmtree(f->dir);
    free(f);
    return 0;
}

static void
sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* tmld is up once the broker logged its connection. */
static bool
wait_tmld_connected(struct fx *f, int timeout_ms)
{
    char path[600];
    int waited;

    snprintf(path, sizeof(path), "%s/mosquitto.log", f->dir);
    for (waited = 0; waited < timeout_ms; waited += 50) {
        char *log = rig_slurp(path);
        bool ok = log && strstr(log, " as tmld (") != NULL;
        free(log);
        if (ok)
            return true;
        sleep_ms(50);
    }
    return false;
}

static void
dump(const char *path)
{
    char *text = rig_slurp(path);

    fprintf(stderr, "---- %s\n%s\n", path, text ? text : "(none)");
    free(text);
}

/* A TLS broker and tmld (committing into f->db), connected. */
static void
start_gateway(struct fx *f)
{
    char tbin[600], dbdir[300];
    FILE *fc;

    assert_int_equal(rig_broker_start(&f->broker, f->dir), 0);
    snprintf(dbdir, sizeof(dbdir), "%s/tmld", f->dir);
    assert_int_equal(mkdir(dbdir, 0700), 0);
    fc = fopen(f->conf, "w");
    assert_non_null(fc);
    fprintf(fc,
            "[mqtt]\nhost = 127.0.0.1\nport = %d\ncafile = %s\n"
            "certfile = %s\nkeyfile = %s\nkeepalive = 5s\n"
            "reconnect_min = 100ms\nreconnect_max = 1s\n"
            "[db]\npath = %s\nbatch_ms = 20\n"
            "[control]\nsocket = %s\n[log]\nlevel = info\n",
            f->broker.port, f->broker.ca, f->broker.tmld_cert,
            f->broker.tmld_key, f->db, f->sock);
    fclose(fc);
    {
        const char *argv[] = {rig_bin("daemon/tmld", tbin, sizeof(tbin)),
                              "--config", f->conf, "--foreground", NULL};
        f->tmld = rig_spawn(argv, f->tlog);
    }
    assert_true(f->tmld > 0);
    if (!wait_tmld_connected(f, 15000))
        dump(f->tlog);
    assert_true(wait_tmld_connected(f, 100));
}

/* Starts tml-devsim: n devices e2e-0001.., --count count (0: --duration 7
 * s), states under f->dir/state, JSON summary to json. */
static pid_t
spawn_devsim(struct fx *f, int n, int count, const char *misbehave,
             const char *reboot_mean, const char *seed, const char *json)
{
    char bin[600], sdir[300], log[300], port[16], n_arg[16], count_arg[16];
    char groups[64];

    snprintf(sdir, sizeof(sdir), "%s/state", f->dir);
    snprintf(log, sizeof(log), "%s/devsim.log", f->dir);
    snprintf(port, sizeof(port), "%d", f->broker.port);
    snprintf(n_arg, sizeof(n_arg), "%d", n);
    snprintf(groups, sizeof(groups), "turbines:%d,pumps:%d", n / 2,
             n - n / 2);
    snprintf(count_arg, sizeof(count_arg), "%d", count);
    {
        const char *argv[] = {
            rig_bin("tools/devsim/tml-devsim", bin, sizeof(bin)), "--port",
            port, "--cafile", f->broker.ca, "--ca-cert", f->broker.ca,
            "--ca-key", f->broker.ca_key, "--state-dir", sdir, "--devices",
            n_arg, "--prefix", "e2e-", "--groups", groups,
            "--rate", "4", count == 0 ? "--duration" : "--count",
            count == 0 ? "7" : count_arg, "--summary-period", "2",
            "--conf-threshold", "7000", "--sample-budget", "2",
            "--budget-period", "1", "--input-bytes", "512", "--ack-timeout",
            "3000", "--drain", "60", "--status", "2", "--json-summary", json,
            "--misbehave", misbehave, "--reboot-mean", reboot_mean, "--seed",
            seed, NULL};
        return rig_spawn(argv, log);
    }
}

static void
run_e2e(struct fx *f, const char *misbehave, bool kill_broker,
        const char *reboot_mean)
{
    char json[300], log[300];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    uint32_t i, n_rows_devices = 0;
    int64_t total_rows = 0, total_samples = 0, total_skipped = 0;
    uint64_t total_reboots = 0, lost_unsent = 0, lost_held = 0;
    int64_t inf_db = 0, inf_dev = 0;
    pid_t pid;
    int rc;
    bool timed = kill_broker || strcmp(reboot_mean, "0") != 0;

    start_gateway(f);
    snprintf(json, sizeof(json), "%s/summary.json", f->dir);
    snprintf(log, sizeof(log), "%s/devsim.log", f->dir);
    pid = spawn_devsim(f, N_DEV, timed ? 0 : COUNT, misbehave, reboot_mean,
                       "1", json);
    assert_true(pid > 0);
    if (kill_broker) {
        sleep_ms(3000);
        rig_broker_kill9(&f->broker);
        sleep_ms(1500);
        assert_int_equal(rig_broker_restart(&f->broker), 0);
    }
    rc = rig_wait(pid, 120000 + COUNT * 1000);
    if (rc != 0) {
        dump(log);
        dump(f->tlog);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(rig_summary_load(&f->sum, json), 0);
    assert_int_equal(f->sum.n, N_DEV);

    /* Read while tmld runs (WAL): a device saw its records acked, and acks
     * follow commits, so every acked record must already be visible. */
    assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(
            db,
            "SELECT d.name, COUNT(t.id), COUNT(DISTINCT t.seq), "
            "COALESCE(SUM(t.n_inferences), 0), COALESCE(MAX(t.seq), 0), "
            "(SELECT COUNT(*) FROM samples s WHERE s.device_id = d.id), "
            "COALESCE((SELECT h.tele_hw FROM stream_hw h WHERE h.device_id = "
            "d.id), 0), COALESCE((SELECT h.tele_skipped FROM stream_hw h "
            "WHERE h.device_id = d.id), 0), COALESCE((SELECT h.seq_resets "
            "FROM stream_hw h WHERE h.device_id = d.id), 0) "
            "FROM devices d LEFT JOIN tele t ON t.device_id = d.id "
            "WHERE d.name = ?1 GROUP BY d.id",
            -1, &st, NULL),
        SQLITE_OK);
    for (i = 0; i < f->sum.n; i++) {
        const struct rig_devsum *d = &f->sum.devs[i];
        int64_t rows = -1, distinct = -1, inf = -1, max_seq = -1, samples = -1;
        int64_t hw = -1, skipped = -1, resets = -1;

        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, d->id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            rows = sqlite3_column_int64(st, 1);
            distinct = sqlite3_column_int64(st, 2);
            inf = sqlite3_column_int64(st, 3);
            max_seq = sqlite3_column_int64(st, 4);
            samples = sqlite3_column_int64(st, 5);
            hw = sqlite3_column_int64(st, 6);
            skipped = sqlite3_column_int64(st, 7);
            resets = sqlite3_column_int64(st, 8);
            n_rows_devices++;
        }
        if ((!timed && rows != (int64_t)d->sent) || distinct != rows ||
            max_seq != (int64_t)d->ack_seq ||
            d->last_pub_seq > d->ack_seq || d->last_seq > d->ack_seq ||
            rows + skipped != hw ||
            hw != max_seq || resets != 0 ||
            (d->reboots == 0 && inf != (int64_t)d->inferences) ||
            inf + (int64_t)d->lost_unsent > (int64_t)d->inferences ||
            inf + (int64_t)(d->lost_unsent + d->lost_held) <
                (int64_t)d->inferences ||
            (!timed && samples != (int64_t)d->samples_sent))
            fprintf(stderr,
                    "%s: rows %lld (distinct %lld, max seq %lld) hw %lld "
                    "skipped %lld resets %lld sent %llu "
                    "acked %llu ack_seq %llu last_pub %llu last_seq %llu "
                    "reboots %llu inferences %lld/%llu (lost in RAM: %llu "
                    "unsent, %llu sent) samples %lld/%llu\n",
                    d->id, (long long)rows, (long long)distinct,
                    (long long)max_seq, (long long)hw, (long long)skipped,
                    (long long)resets, (unsigned long long)d->sent,
                    (unsigned long long)d->acked,
                    (unsigned long long)d->ack_seq,
                    (unsigned long long)d->last_pub_seq,
                    (unsigned long long)d->last_seq,
                    (unsigned long long)d->reboots, (long long)inf,
                    (unsigned long long)d->inferences,
                    (unsigned long long)d->lost_unsent,
                    (unsigned long long)d->lost_held, (long long)samples,
                    (unsigned long long)d->samples_sent);
        assert_true(rows > 0);
        /* No seq twice, and the device was told exactly what is stored. */
        assert_int_equal(distinct, rows);
        assert_int_equal(max_seq, (int64_t)d->ack_seq);
        /* Nothing the device holds is unacknowledged at the end: not the
         * last record published, not the newest number ever sent. */
        assert_true(d->last_pub_seq <= d->ack_seq);
        assert_true(d->last_seq <= d->ack_seq);
        /* Every tele number up to the last one is stored once or was
         * given up below the device's low-water: nothing waits forever,
         * nothing is silently skipped. No restart: the state survives. */
        assert_int_equal(hw, max_seq);
        assert_int_equal(rows + skipped, hw);
        assert_int_equal(resets, 0);
        if (!timed || d->reboots == 0)
            assert_int_equal(skipped, 0);
        /* Every inference made on the device is in the database once, or
         * died in RAM at a reboot: surely (never sent) or possibly (sent,
         * not acked: tmld may have stored it before the reboot). */
        if (d->reboots == 0)
            assert_int_equal(inf, (int64_t)d->inferences);
        assert_true(inf + (int64_t)d->lost_unsent <= (int64_t)d->inferences);
        assert_true(inf + (int64_t)(d->lost_unsent + d->lost_held) >=
                    (int64_t)d->inferences);
        if (!timed) {
            /* No gaps, no renumbering: the device's own log agrees. */
            assert_int_equal(inf, COUNT);
            assert_int_equal(rows, (int64_t)d->sent);
            assert_int_equal(d->acked, d->sent);
            assert_int_equal(samples, (int64_t)d->samples_sent);
        }
        total_rows += rows;
        total_samples += samples;
        total_skipped += skipped;
        total_reboots += d->reboots;
        lost_unsent += d->lost_unsent;
        lost_held += d->lost_held;
        inf_db += inf;
        inf_dev += (int64_t)d->inferences;
    }
    sqlite3_finalize(st);
    /* hello: firmware-declared groups and hardware reached the registry. */
    assert_int_equal(sqlite3_prepare_v2(
                         db,
                         "SELECT (SELECT COUNT(*) FROM device_groups g JOIN "
                         "devices d ON d.id = g.device_id WHERE g.grp = "
                         "'turbines' AND d.name LIKE 'e2e-%'), (SELECT "
                         "COUNT(*) FROM devices WHERE hw = 'devsim' AND "
                         "name LIKE 'e2e-%')",
                         -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(st, 0), N_DEV / 2);
    assert_int_equal(sqlite3_column_int64(st, 1), N_DEV);
    sqlite3_finalize(st);
    sqlite3_close(db);
    assert_int_equal(n_rows_devices, N_DEV);
    {
        uint64_t garbage = 0, replays = 0;
        for (i = 0; i < f->sum.n; i++) {
            garbage += f->sum.devs[i].garbage_sent;
            replays += f->sum.devs[i].replays_sent;
        }
        printf("FIGURES devsim->tmld: devices=%u tele rows=%llu "
               "samples=%llu duplicates=0 garbage=%llu replays=%llu "
               "reboots=%llu seqs given up=%lld inferences stored=%lld of "
               "%lld, lost in RAM at reboots=%lld (never sent %llu, sent "
               "unacked up to %llu) elapsed=%.1fs\n",
               f->sum.n, (unsigned long long)total_rows,
               (unsigned long long)total_samples,
               (unsigned long long)garbage, (unsigned long long)replays,
               (unsigned long long)total_reboots, (long long)total_skipped,
               (long long)inf_db, (long long)inf_dev,
               (long long)(inf_dev - inf_db), (unsigned long long)lost_unsent,
               (unsigned long long)lost_held, f->sum.elapsed_s);
        if (total_reboots > 0)
            assert_true(total_skipped > 0); /* the reboots lost numbers */
        if (strcmp(misbehave, "0") != 0)
            assert_true(garbage + replays > 0);
    }
}

#ifndef DEVSIM_TMLD_GAPS
static void
test_devsim_to_tmld_every_record_committed_once(void **state)
{
    run_e2e(*state, "0", false, "0");
}

/* Half the devices also publish garbage and byte-exact replays of their
 * last summary: tmld drops the garbage, absorbs the replays, and still
 * commits exactly what every device sent. */
static void
test_tmld_absorbs_garbage_and_replays(void **state)
{
    run_e2e(*state, "0.5", false, "0");
}

#else
/* R4 with the real gateway: the broker is killed (-9) mid-stream and
 * restarted; tmld and the devices reconnect; the database still holds
 * exactly what every device sent, and every inference. */
static void
test_tmld_broker_kill9_loses_nothing(void **state)
{
    run_e2e(*state, "0", true, "0");
}

/* Issue 4 (d): devices whose persisted state is wiped between two runs
 * (both copies of state0/1.bin gone, same id and certificate) start their
 * numbering again at 1, with a new boot_id (the second run seeds devsim's
 * random differently, as a device with an entropy source would). tmld
 * must restart their streams (counted once per device) and store what they
 * send, not drop it as duplicates; the other devices only rebooted: their
 * numbers continue above a skipped block, given up and counted. */
#define N_WIPE 10
static void
test_tmld_restarts_wiped_devices(void **state)
{
    struct fx *f = *state;
    struct rig_summary first = {0};
    char json1[300], json2[300], path[600];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t resets_total = 0, skipped_total = 0;
    uint32_t i;
    pid_t pid;

    start_gateway(f);
    snprintf(json1, sizeof(json1), "%s/summary1.json", f->dir);
    snprintf(json2, sizeof(json2), "%s/summary.json", f->dir);
    pid = spawn_devsim(f, N_WIPE, COUNT, "0", "0", "1", json1);
    assert_true(pid > 0);
    assert_int_equal(rig_wait(pid, 120000), 0);
    assert_int_equal(rig_summary_load(&first, json1), 0);
    assert_int_equal(first.n, N_WIPE);
    for (i = 0; i < N_WIPE / 2; i++)
        for (int k = 0; k < 2; k++) {
            snprintf(path, sizeof(path), "%s/state/%s/state%d.bin", f->dir,
                     first.devs[i].id, k);
            assert_int_equal(unlink(path), 0);
        }
    pid = spawn_devsim(f, N_WIPE, COUNT, "0", "0", "2", json2);
    assert_true(pid > 0);
    assert_int_equal(rig_wait(pid, 120000), 0);
    assert_int_equal(rig_summary_load(&f->sum, json2), 0);
    assert_int_equal(f->sum.n, N_WIPE);

    assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(
            db,
            "SELECT COUNT(t.id), COALESCE(SUM(t.n_inferences), 0), "
            "h.tele_hw, h.tele_skipped, h.seq_resets FROM devices d "
            "JOIN stream_hw h ON h.device_id = d.id LEFT JOIN tele t ON "
            "t.device_id = d.id WHERE d.name = ?1 GROUP BY d.id",
            -1, &st, NULL),
        SQLITE_OK);
    for (i = 0; i < N_WIPE; i++) {
        const struct rig_devsum *a = &first.devs[i], *b = &f->sum.devs[i];
        bool wiped = i < N_WIPE / 2;
        int64_t rows, inf, hw, skipped, resets;

        assert_string_equal(a->id, b->id);
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, b->id, -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        rows = sqlite3_column_int64(st, 0);
        inf = sqlite3_column_int64(st, 1);
        hw = sqlite3_column_int64(st, 2);
        skipped = sqlite3_column_int64(st, 3);
        resets = sqlite3_column_int64(st, 4);
        if (inf != (int64_t)(a->inferences + b->inferences) ||
            resets != (wiped ? 1 : 0) || hw != (int64_t)b->ack_seq)
            fprintf(stderr,
                    "%s%s: rows %lld inferences %lld (runs: %llu + %llu) hw "
                    "%lld (acked %llu, first seq of run 2 %llu) skipped "
                    "%lld resets %lld\n",
                    b->id, wiped ? " (wiped)" : "", (long long)rows,
                    (long long)inf, (unsigned long long)a->inferences,
                    (unsigned long long)b->inferences, (long long)hw,
                    (unsigned long long)b->ack_seq,
                    (unsigned long long)(b->last_seq - b->sent + 1),
                    (long long)skipped, (long long)resets);
        /* Every inference of both lives stored once, none dropped as a
         * "duplicate" of the first life's numbers. */
        assert_int_equal(inf, (int64_t)(a->inferences + b->inferences));
        assert_int_equal(rows, (int64_t)(a->sent + b->sent));
        assert_int_equal(hw, (int64_t)b->ack_seq);
        assert_true(b->last_seq <= b->ack_seq);
        if (wiped) {
            /* Numbering from 1 again: one restart, nothing given up. */
            assert_int_equal(resets, 1);
            assert_int_equal(b->last_seq, b->sent);
            assert_int_equal(skipped, 0);
        } else {
            /* A plain reboot: the rest of the reserved block given up. */
            assert_int_equal(resets, 0);
            assert_int_equal(rows + skipped, hw);
            assert_true(skipped > 0);
        }
        resets_total += resets;
        skipped_total += skipped;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    rig_summary_free(&first);
    printf("FIGURES devsim->tmld wiped state: %d devices, %d wiped: seq "
           "resets=%lld, seqs given up by the %d rebooted=%lld, every "
           "inference of both runs stored once\n",
           N_WIPE, N_WIPE / 2, (long long)resets_total, N_WIPE / 2,
           (long long)skipped_total);
    assert_int_equal(resets_total, N_WIPE / 2);
}

/* Devices reboot (their seqs continue after the skipped rest of a reserved
 * block); tmld must keep committing what they send after the reboot. */
static void
test_tmld_commits_after_device_reboots(void **state)
{
    run_e2e(*state, "0", false, "4");
}
#endif

/* Built twice: agent_devsim_tmld and, with DEVSIM_TMLD_GAPS,
 * agent_devsim_tmld_gaps: the scenarios that leave sequence gaps (numbers
 * a reboot loses with RAM or skips in a reserved block, records in flight
 * when the broker dies). tmld gives up, counted, what a record's low-water
 * says the device no longer holds, and waits (go-back-N) for the rest
 * (PROTOCOL.md 6). */
int
main(void)
{
    const struct CMUnitTest tests[] = {
#ifndef DEVSIM_TMLD_GAPS
        cmocka_unit_test_setup_teardown(
            test_devsim_to_tmld_every_record_committed_once, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_tmld_absorbs_garbage_and_replays,
                                        setup, teardown),
#else
        cmocka_unit_test_setup_teardown(test_tmld_commits_after_device_reboots,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_tmld_broker_kill9_loses_nothing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_tmld_restarts_wiped_devices,
                                        setup, teardown),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
