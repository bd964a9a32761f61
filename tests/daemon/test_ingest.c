/*
 * tmld_ingest: the ingest path end to end, through a real TLS mosquitto into
 * a real SQLite file, with test devices encoding records with tmlproto.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <tml/proto.h>

#include "harness.h"

static int
setup(void **state)
{
    struct th *t = calloc(1, sizeof(*t));
    char extra[256];
    snprintf(extra, sizeof(extra),
             "[ingest]\noffline_after = 2s\n[metrics]\ntextfile = "
             "/tmp/tmld-metrics-%d.prom\ninterval = 1s\n",
             (int)getpid());
    if (t == NULL || th_setup(t, extra) != 0 ||
        th_tmld_start(t, NULL, 10000) != 0) {
        if (t)
            th_teardown(t);
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

static int
teardown(void **state)
{
    struct th *t = *state;
    th_teardown(t);
    free(t);
    return 0;
}

#define N_DEV 8
#define N_REC 60

static void
test_ingest_stores_every_record_exactly_once(void **state)
{
    struct th *t = *state;
    static struct tdev devs[N_DEV];
    for (int i = 0; i < N_DEV; i++) {
        char id[32];
        snprintf(id, sizeof(id), "dev-%02d", i);
        assert_int_equal(tdev_open(&devs[i], t, id, true), 0);
        assert_int_equal(tdev_hello(&devs[i], i % 2 ? "turbines" : "pumps", 3),
                         0);
    }
    for (uint32_t s = 1; s <= N_REC; s++)
        for (int i = 0; i < N_DEV; i++)
            assert_int_equal(tdev_tele(&devs[i], s), 0);
    for (int i = 0; i < N_DEV; i++)
        assert_int_equal(tdev_wait_tele_ack(&devs[i], N_REC, 10000), 0);

    assert_int_equal(th_db_int(t, "SELECT count(*) FROM tele"), N_DEV * N_REC);
    /* Exactly once: distinct (device, seq) pairs equal the rows, and the
     * per-device checksum of seq is 1 + 2 + ... + N_REC. */
    assert_int_equal(th_db_int(t, "SELECT count(*) FROM (SELECT DISTINCT "
                                  "device_id, seq FROM tele)"),
                     N_DEV * N_REC);
    assert_int_equal(th_db_int(t, "SELECT count(*) FROM (SELECT device_id "
                                  "FROM tele GROUP BY device_id HAVING "
                                  "sum(seq) = 1830)"),
                     N_DEV);
    assert_int_equal(th_db_int(t, "SELECT count(*) FROM devices"), N_DEV);
    double v = 0;
    assert_int_equal(th_status_num(t, "ingest.tele", &v), 0);
    assert_int_equal((int)v, N_DEV * N_REC);
    assert_int_equal(th_status_num(t, "devices.online", &v), 0);
    assert_int_equal((int)v, N_DEV);

    char out[65536];
    assert_int_equal(
        th_ctl(t, "{\"id\":7,\"cmd\":\"groups\"}", out, sizeof(out), 2000), 0);
    if (strstr(out, "{\"name\":\"pumps\",\"devices\":4") == NULL)
        fprintf(stderr, "groups: %s\n", out);
    assert_non_null(strstr(out, "{\"name\":\"pumps\",\"devices\":4"));
    assert_non_null(strstr(out, "{\"name\":\"turbines\",\"devices\":4"));
    assert_int_equal(th_ctl(t,
                            "{\"id\":8,\"cmd\":\"devices\",\"args\":"
                            "{\"group\":\"turbines\"}}",
                            out, sizeof(out), 2000),
                     0);
    assert_non_null(strstr(out, "\"total\":4"));
    assert_non_null(strstr(out, "\"id\":\"dev-01\""));
    assert_null(strstr(out, "\"id\":\"dev-00\""));
    assert_non_null(strstr(out, "\"model_version\":3"));
    assert_int_equal(th_ctl(t,
                            "{\"id\":9,\"cmd\":\"device.show\",\"args\":"
                            "{\"id\":\"dev-03\"}}",
                            out, sizeof(out), 2000),
                     0);
    assert_non_null(strstr(out, "\"tele_seq\":60"));
    assert_non_null(strstr(out, "\"groups\":[\"turbines\"]"));
    assert_int_equal(th_ctl(t, "{\"id\":10,\"cmd\":\"tele.summary\"}", out,
                            sizeof(out), 2000),
                     0);
    assert_non_null(strstr(out, "\"model_version\":3,\"devices\":8,"
                                "\"summaries\":480"));
    printf("# tmld_ingest: %d devices x %d records: stored %d, exactly once\n",
           N_DEV, N_REC, N_DEV * N_REC);
    for (int i = 0; i < N_DEV; i++)
        tdev_close(&devs[i]);
}

/* Go-back-N: duplicates are dropped, a record after a gap is not stored
 * until the gap is filled, and the cumulative ack says where to resume. */
static void
test_ingest_drops_duplicates_and_waits_for_gaps(void **state)
{
    struct th *t = *state;
    struct tdev v;
    assert_int_equal(tdev_open(&v, t, "gapper", false), 0);
    for (uint32_t s = 1; s <= 3; s++)
        assert_int_equal(tdev_tele(&v, s), 0);
    assert_int_equal(tdev_wait_tele_ack(&v, 3, 5000), 0);
    assert_int_equal(tdev_tele(&v, 2), 0);
    assert_int_equal(tdev_tele(&v, 3), 0);
    assert_int_equal(tdev_tele(&v, 5), 0); /* gap: 4 is missing */
    assert_int_equal(th_wait_status(t, "ingest.gaps", 1, 5000), 0);
    assert_int_equal(th_wait_status(t, "ingest.duplicates", 2, 5000), 0);
    assert_int_equal(th_db_int(t, "SELECT count(*) FROM tele"), 3);
    assert_int_equal(th_db_int(t, "SELECT max(seq) FROM tele"), 3);
    assert_int_equal(tdev_acked_tele(&v), 3);
    assert_int_equal(tdev_tele(&v, 4), 0);
    assert_int_equal(tdev_tele(&v, 5), 0);
    assert_int_equal(tdev_wait_tele_ack(&v, 5, 5000), 0);
    assert_int_equal(th_db_int(t, "SELECT count(*) FROM tele"), 5);
    assert_int_equal(th_db_int(t, "SELECT count(DISTINCT seq) FROM tele"), 5);
    assert_int_equal(th_db_int(t, "SELECT tele_hw FROM stream_hw"), 5);
    tdev_close(&v);
}

static void
test_ingest_stores_samples(void **state)
{
    struct th *t = *state;
    struct tdev v;
    assert_int_equal(tdev_open(&v, t, "sampler", false), 0);
    for (uint32_t s = 1; s <= 4; s++)
        assert_int_equal(tdev_sample(&v, s, 100 + s, 1), 0);
    assert_int_equal(th_wait_status(t, "ingest.samples", 4, 5000), 0);
    assert_int_equal(th_db_int(t, "SELECT count(*) FROM samples WHERE "
                                  "length(data) = 64 AND reason = 1"),
                     4);
    assert_int_equal(th_db_int(t, "SELECT sample_hw FROM stream_hw"), 4);
    char out[8192];
    assert_int_equal(th_ctl(t,
                            "{\"id\":1,\"cmd\":\"samples.list\",\"args\":"
                            "{\"device\":\"sampler\",\"reason\":"
                            "\"flagged\"}}",
                            out, sizeof(out), 2000),
                     0);
    assert_non_null(strstr(out, "\"total\":4"));
    assert_non_null(strstr(out, "\"sample_id\":104"));
    assert_non_null(strstr(out, "\"dtype\":\"u8\",\"shape\":[64]"));
    /* Chunk bytes are seq + i: sample 102 (seq 2) starts 02 03 04. */
    assert_int_equal(th_ctl(t,
                            "{\"id\":2,\"cmd\":\"samples.get\",\"args\":"
                            "{\"device\":\"sampler\",\"sample_id\":102}}",
                            out, sizeof(out), 2000),
                     0);
    assert_non_null(strstr(out, "\"stored_len\":64"));
    assert_non_null(strstr(out, "\"data_b64\":\"AgME"));
    assert_int_equal(th_ctl(t,
                            "{\"id\":3,\"cmd\":\"samples.get\",\"args\":"
                            "{\"device\":\"sampler\",\"sample_id\":7}}",
                            out, sizeof(out), 2000),
                     0);
    assert_non_null(strstr(out, "\"code\":\"not_found\""));
    tdev_close(&v);
}

/* Garbage, truncated and oversized payloads are counted against their
 * device and never stop the ingest of another device. */
static void
test_ingest_counts_malformed_and_keeps_going(void **state)
{
    struct th *t = *state;
    struct tdev bad, good;
    assert_int_equal(tdev_open(&bad, t, "broken", false), 0);
    assert_int_equal(tdev_open(&good, t, "healthy", false), 0);
    static uint8_t big[6000];
    memset(big, 0xa5, sizeof(big));
    const uint8_t garbage[] = {0xff, 0x00, 0x13, 0x37};
    const uint8_t truncated[] = {0xa3, 0x00, 0x01, 0x01}; /* map of 3, cut */
    for (uint32_t s = 1; s <= 20; s++) {
        assert_int_equal(tdev_raw(&bad, "tele", garbage, sizeof(garbage)), 0);
        assert_int_equal(tdev_raw(&bad, "sample", truncated, sizeof(truncated)),
                         0);
        assert_int_equal(tdev_raw(&bad, "hello", "", 0), 0);
        assert_int_equal(tdev_tele(&good, s), 0);
    }
    assert_int_equal(tdev_raw(&bad, "tele", big, sizeof(big)), 0);
    assert_int_equal(tdev_wait_tele_ack(&good, 20, 10000), 0);
    assert_int_equal(th_wait_status(t, "ingest.malformed", 60, 5000), 0);
    assert_int_equal(th_wait_status(t, "ingest.oversize", 1, 5000), 0);
    assert_int_equal(th_db_int(t, "SELECT count(*) FROM tele"), 20);
    char out[8192];
    assert_int_equal(th_ctl(t,
                            "{\"id\":1,\"cmd\":\"device.show\",\"args\":"
                            "{\"id\":\"broken\"}}",
                            out, sizeof(out), 2000),
                     0);
    if (strstr(out, "\"malformed\":61") == NULL)
        fprintf(stderr, "device.show: %s\n", out);
    assert_non_null(strstr(out, "\"malformed\":61"));
    /* Rate-limited logging: far fewer lines than rejections. */
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "test $(grep -c 'dev=broken' '%s') -le 5",
             t->log);
    assert_int_equal(system(cmd), 0);
    tdev_close(&bad);
    tdev_close(&good);
}

/* Offline detection by last will and by silence. */
static void
test_ingest_marks_devices_offline(void **state)
{
    struct th *t = *state;
    struct tdev a, b;
    assert_int_equal(tdev_open(&a, t, "willing", true), 0);
    assert_int_equal(tdev_open(&b, t, "silent", true), 0);
    assert_int_equal(tdev_hello(&a, "g", 1), 0);
    assert_int_equal(tdev_hello(&b, "g", 1), 0);
    assert_int_equal(th_wait_status(t, "devices.online", 2, 5000), 0);
    uint64_t t0 = th_now_ms();
    tdev_drop(&a); /* the broker publishes the retained offline will */
    double v = 2;
    while (th_now_ms() - t0 < 5000) {
        if (th_status_num(t, "devices.online", &v) == 0 && v <= 1)
            break;
        th_sleep_ms(20);
    }
    assert_true(v <= 1);
    uint64_t will_ms = th_now_ms() - t0;
    /* b stays connected but silent: offline_after = 2 s. */
    while (th_now_ms() - t0 < 6000) {
        if (th_status_num(t, "devices.online", &v) == 0 && v == 0)
            break;
        th_sleep_ms(50);
    }
    assert_true(v == 0);
    uint64_t silent_ms = th_now_ms() - t0;
    assert_true(silent_ms >= 1900);
    th_sleep_ms(200); /* the state change commits in the next batch */
    assert_int_equal(th_db_int(t, "SELECT count(*) FROM devices WHERE "
                                  "online = 0"),
                     2);
    printf("# tmld_ingest: offline by will after %llu ms, by silence "
           "(offline_after 2 s) after %llu ms\n",
           (unsigned long long)will_ms, (unsigned long long)silent_ms);
    tdev_close(&b);
}

/* Prometheus textfile: written atomically, names carry units. */
static void
test_ingest_writes_metrics_textfile(void **state)
{
    struct th *t = *state;
    struct tdev v;
    assert_int_equal(tdev_open(&v, t, "metered", false), 0);
    for (uint32_t s = 1; s <= 5; s++)
        assert_int_equal(tdev_tele(&v, s), 0);
    assert_int_equal(tdev_wait_tele_ack(&v, 5, 5000), 0);
    char path[64], buf[16384];
    snprintf(path, sizeof(path), "/tmp/tmld-metrics-%d.prom", (int)getpid());
    bool ok = false;
    for (int i = 0; i < 40 && !ok; i++) {
        th_sleep_ms(100);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        ok = strstr(buf, "\ntmld_ingest_tele_records_total 5\n") != NULL;
    }
    assert_true(ok);
    assert_non_null(strstr(buf, "# TYPE tmld_db_commit_duration_ms histogram"));
    assert_non_null(strstr(buf, "tmld_devices_online 1\n"));
    assert_non_null(strstr(buf, "tmld_db_size_bytes "));
    unlink(path);
    tdev_close(&v);
}

/* ---- sequence gaps (PROTOCOL.md 6, docs/tmld.md "Sequence gaps") ------- */

#define DEV_SQL(dev, what)                                                     \
    "SELECT " what " FROM stream_hw h JOIN devices d ON d.id = h.device_id "   \
    "WHERE d.name = '" dev "'"
#define ROWS_SQL(dev)                                                          \
    "SELECT count(*) FROM tele t JOIN devices d ON d.id = t.device_id "        \
    "WHERE d.name = '" dev "'"

/* Issue 3: a record whose low-water is above the high-water + 1 makes tmld
 * give up the numbers in between (the device lost them at a reboot),
 * counted per device, in the same transaction; a low-water that still
 * covers the missing number keeps go-back-N waiting; nothing is acked that
 * is neither stored nor given up. */
static void
test_ingest_gives_up_seqs_below_low_water(void **state)
{
    struct th *t = *state;
    struct tdev v;
    char out[65536];
    assert_int_equal(tdev_open(&v, t, "lowwater", false), 0);
    assert_int_equal(tdev_tele_lw(&v, 1, 1), 0);
    assert_int_equal(tdev_tele_lw(&v, 2, 1), 0);
    assert_int_equal(tdev_wait_tele_ack(&v, 2, 5000), 0);
    /* Reboot: 3 and 4 died in RAM; the first record after it is 5. */
    assert_int_equal(tdev_tele_lw(&v, 5, 5), 0);
    assert_int_equal(tdev_wait_tele_ack(&v, 5, 5000), 0);
    assert_int_equal(th_db_int(t, DEV_SQL("lowwater", "tele_skipped")), 2);
    assert_int_equal(th_db_int(t, ROWS_SQL("lowwater")), 3);
    /* 6 lost, 7 still held (lw 7) but this one is 8: give up 6 only, then
     * wait for 7. The ack says 6: given up, not 7 (not stored). */
    assert_int_equal(tdev_tele_lw(&v, 8, 7), 0);
    assert_int_equal(th_wait_db(t, DEV_SQL("lowwater", "tele_hw"), 6, 5000), 0);
    assert_int_equal(th_db_int(t, DEV_SQL("lowwater", "tele_skipped")), 3);
    assert_int_equal(th_db_int(t, ROWS_SQL("lowwater")), 3);
    assert_int_equal(tdev_wait_tele_ack(&v, 6, 5000), 0);
    assert_int_equal(tdev_acked_tele(&v), 6);
    assert_int_equal(tdev_tele_lw(&v, 7, 7), 0);
    assert_int_equal(tdev_tele_lw(&v, 8, 7), 0);
    assert_int_equal(tdev_wait_tele_ack(&v, 8, 5000), 0);
    assert_int_equal(th_db_int(t, ROWS_SQL("lowwater")), 5);
    /* An older agent (no low-water): plain go-back-N, 9 is awaited. */
    assert_int_equal(tdev_tele_lw(&v, 10, 0), 0);
    assert_int_equal(th_wait_status(t, "ingest.gaps", 2, 5000), 0);
    assert_int_equal(th_db_int(t, ROWS_SQL("lowwater")), 5);
    assert_int_equal(th_db_int(t, DEV_SQL("lowwater", "tele_hw")), 8);
    /* Every stored row once; stored + given up = the high-water. */
    assert_int_equal(th_db_int(t, "SELECT count(DISTINCT seq) FROM tele t "
                                  "JOIN devices d ON d.id = t.device_id "
                                  "WHERE d.name = 'lowwater'"),
                     5);
    assert_int_equal(th_db_int(t, DEV_SQL("lowwater", "tele_hw - "
                                                      "tele_skipped")),
                     5);
    assert_int_equal(th_wait_status(t, "ingest.skipped", 3, 5000), 0);
    assert_int_equal(th_ctl(t,
                            "{\"id\":3,\"cmd\":\"device.show\",\"args\":"
                            "{\"id\":\"lowwater\"}}",
                            out, sizeof(out), 2000),
                     0);
    assert_non_null(strstr(out, "\"tele_skipped\":3"));
    assert_non_null(strstr(out, "\"seq_resets\":0"));
    printf("# tmld_ingest: low-water: 5 stored, 3 given up (skipped), "
           "ack never above stored + given up\n");
    tdev_close(&v);
}

/* Issue 4: a device whose numbering restarted at 1 (state wiped, device
 * replaced) under a known id. Its hello from a new boot says tele_next 1,
 * at or below what is stored: the stream starts again, counted, and its
 * records are stored instead of dropped as duplicates. The same boot's
 * hello delivered again (a QoS 1 resend) resets nothing. */
static void
test_ingest_restarted_numbering_is_reset_once(void **state)
{
    struct th *t = *state;
    struct tdev v;
    char out[65536];
    assert_int_equal(tdev_open(&v, t, "wiped", false), 0);
    assert_int_equal(tdev_hello_boot(&v, 1, 3, 111), 0);
    for (uint32_t s = 1; s <= 4; s++)
        assert_int_equal(tdev_tele_lw(&v, s, 1), 0);
    assert_int_equal(tdev_wait_tele_ack(&v, 4, 5000), 0);
    /* The first hello again (same boot): stale, ignored; 1 is a dup. */
    assert_int_equal(tdev_hello_boot(&v, 1, 3, 111), 0);
    assert_int_equal(tdev_tele_lw(&v, 1, 1), 0);
    assert_int_equal(th_wait_status(t, "ingest.stale_hellos", 1, 5000), 0);
    assert_int_equal(th_wait_status(t, "ingest.duplicates", 1, 5000), 0);
    assert_int_equal(th_db_int(t, DEV_SQL("wiped", "seq_resets")), 0);
    assert_int_equal(th_db_int(t, ROWS_SQL("wiped")), 4);
    /* Wiped: boot count back to 1, a new boot id, numbering from 1. */
    assert_int_equal(tdev_hello_boot(&v, 1, 1, 222), 0);
    assert_int_equal(tdev_tele_lw(&v, 1, 1), 0);
    assert_int_equal(tdev_tele_lw(&v, 2, 1), 0);
    assert_int_equal(th_wait_db(t, ROWS_SQL("wiped"), 6, 5000), 0);
    assert_int_equal(th_db_int(t, DEV_SQL("wiped", "seq_resets")), 1);
    assert_int_equal(th_db_int(t, DEV_SQL("wiped", "tele_hw")), 2);
    assert_int_equal(th_db_int(t, DEV_SQL("wiped", "tele_skipped")), 0);
    /* Its own hello again after a reconnect: no second reset. */
    assert_int_equal(tdev_hello_boot(&v, 3, 1, 222), 0);
    assert_int_equal(tdev_tele_lw(&v, 3, 3), 0);
    assert_int_equal(th_wait_db(t, ROWS_SQL("wiped"), 7, 5000), 0);
    assert_int_equal(th_db_int(t, DEV_SQL("wiped", "seq_resets")), 1);
    assert_int_equal(th_wait_status(t, "ingest.seq_resets", 1, 5000), 0);
    assert_int_equal(th_ctl(t,
                            "{\"id\":4,\"cmd\":\"device.show\",\"args\":"
                            "{\"id\":\"wiped\"}}",
                            out, sizeof(out), 2000),
                     0);
    assert_non_null(strstr(out, "\"seq_resets\":1"));
    assert_non_null(strstr(out, "\"tele_seq\":3"));
    printf("# tmld_ingest: restarted numbering: 1 reset, 1 stale hello "
           "ignored, 7 rows (4 + 3 of the new life)\n");
    tdev_close(&v);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_ingest_stores_every_record_exactly_once, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_ingest_drops_duplicates_and_waits_for_gaps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ingest_stores_samples, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_ingest_counts_malformed_and_keeps_going, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ingest_marks_devices_offline,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_ingest_writes_metrics_textfile,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_ingest_gives_up_seqs_below_low_water, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_ingest_restarted_numbering_is_reset_once, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
