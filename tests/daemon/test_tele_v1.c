/*
 * tmld_tele_v1: a device whose agent predates the packed summary sends
 * up/tele in its version 1 map form (PROTOCOL.md "up/tele, version 1") and
 * tmld still stores and acks every record, also when the same device is
 * updated mid-stream and goes on in version 2; a version tmld does not
 * know is counted malformed and not acked. The stored version 1 bodies
 * decode again on the paths that read them back (upstream's NDJSON lines,
 * and tml_tele_decode that the OTA health gate calls) instead of falling
 * back to base64 or the row's columns.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <tml/proto.h>

#include "harness.h"
#include "samples.h"
#include "upstream.h"

#define N_V1 20 /* records 1..20 in version 1, 21..40 in version 2 */

/* Record seq of the test device: every number derived from seq. */
static void
record(uint32_t seq, struct tml_tele *t)
{
    size_t i;

    memset(t, 0, sizeof *t);
    t->seq = seq;
    t->model_version = 3;
    t->period_s = 60;
    t->age_s = seq % 4;
    t->n_inferences = 1000 + seq;
    t->n_low_conf = seq % 7;
    t->n_flagged = seq % 3;
    t->n_errors = seq % 2;
    t->lat_min_us = 900;
    t->lat_mean_us = 1000 + seq;
    t->lat_max_us = 5000;
    t->n_classes = 4;
    for (i = 0; i < 4; i++) {
        t->class_counts[i] = (1000 + seq) / 4 + (i == 0 ? (1000 + seq) % 4 : 0);
    }
    t->n_conf_bins = 10;
    t->conf_hist[9] = 1000 + seq;
    t->n_lat_bins = 12;
    t->lat_hist[1] = 1000 + seq;
    t->has_health = true;
    t->health.free_ram = 4096;
    t->health.supply_mv = 3300;
    t->health.temp_dc = -50 - (int32_t)seq; /* negative: the i32 path */
    t->health.uptime_s = 60 * seq;
    t->lw = 1;
}

static void
test_v1_tele_stored_acked_and_decoded_again(void **state)
{
    struct th *t = *state;
    static uint8_t buf[TML_MAX_MESSAGE];
    struct tml_tele te, got;
    struct tdev v;
    struct ubuf line;
    sqlite3 *db;
    sqlite3_stmt *st;
    double malformed = -1;
    uint32_t s, n_rows = 0, n_b64 = 0;
    size_t len;

    assert_int_equal(tdev_open(&v, t, "old-agent", true), 0);
    assert_int_equal(tdev_hello(&v, NULL, 3), 0);
    for (s = 1; s <= N_V1; s++) {
        record(s, &te);
        len = sample_tele_v1_encode(&te, buf, sizeof buf);
        assert_true(len > 0);
        assert_int_equal(tdev_raw(&v, "tele", buf, len), 0);
    }
    assert_int_equal(tdev_wait_tele_ack(&v, N_V1, 10000), 0);
    /* The device is updated and goes on with the same numbering. */
    for (s = N_V1 + 1; s <= 2 * N_V1; s++) {
        record(s, &te);
        assert_int_equal(tml_tele_encode(&te, buf, sizeof buf, &len), TML_OK);
        assert_int_equal(tdev_raw(&v, "tele", buf, len), 0);
    }
    assert_int_equal(tdev_wait_tele_ack(&v, 2 * N_V1, 10000), 0);
    assert_int_equal(th_status_num(t, "ingest.malformed", &malformed), 0);
    assert_true(malformed == 0);
    /* Version 3 is unknown: malformed (TML_ERR_VERSION), not acked. */
    record(2 * N_V1 + 1, &te);
    len = sample_tele_v1_encode(&te, buf, sizeof buf);
    assert_true(len > 0);
    assert_int_equal(buf[2], 0x01); /* map header, key 0, version */
    buf[2] = 0x03;
    assert_int_equal(tml_tele_decode(buf, len, &got), TML_ERR_VERSION);
    assert_int_equal(tdev_raw(&v, "tele", buf, len), 0);
    assert_int_equal(th_wait_status(t, "ingest.malformed", 1, 5000), 0);
    assert_int_equal(tdev_acked_tele(&v), 2 * N_V1);

    /* The row columns hold the version 1 numbers. */
    assert_int_equal(th_db_int(t, "SELECT count(*) FROM tele"), 2 * N_V1);
    assert_int_equal(th_db_int(t, "SELECT sum(n_inferences) FROM tele"),
                     2 * N_V1 * 1000 + N_V1 * (2 * N_V1 + 1));
    assert_int_equal(th_db_int(t, "SELECT sum(lat_mean_us) FROM tele"),
                     2 * N_V1 * 1000 + N_V1 * (2 * N_V1 + 1));
    assert_int_equal(th_db_int(t, "SELECT sum(n_errors) FROM tele"), N_V1);
    assert_int_equal(th_db_int(t, "SELECT count(*) FROM tele WHERE "
                                  "model_version = 3 AND period_s = 60 AND "
                                  "n_low_conf = seq % 7 AND "
                                  "n_flagged = seq % 3"),
                     2 * N_V1);

    /* Every stored body, version 1 or 2, decodes back to what was sent,
     * and upstream's line carries the decoded fields, not body_b64. */
    db = th_db(t);
    assert_non_null(db);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT id, seq, recv_at, body FROM "
                                        "tele ORDER BY seq",
                                        -1, &st, NULL),
                     SQLITE_OK);
    ubuf_init(&line, 1 << 16);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const uint8_t *body = sqlite3_column_blob(st, 3);
        size_t blen = (size_t)sqlite3_column_bytes(st, 3);
        uint32_t seq = (uint32_t)sqlite3_column_int64(st, 1);
        char want[64];

        n_rows++;
        record(seq, &te);
        /* Version 1 rows are the larger map form. */
        assert_int_equal(body[2], seq <= N_V1 ? 0x01 : TML_TELE_VERSION);
        assert_int_equal(tml_tele_decode(body, blen, &got), TML_OK);
        assert_int_equal(got.seq, seq);
        assert_int_equal(got.n_inferences, te.n_inferences);
        assert_int_equal(got.n_classes, 4);
        assert_memory_equal(got.class_counts, te.class_counts,
                            4 * sizeof(uint32_t));
        assert_int_equal(got.n_lat_bins, 12);
        assert_int_equal(got.lat_hist[1], te.lat_hist[1]);
        assert_true(got.has_health);
        assert_int_equal(got.health.temp_dc, te.health.temp_dc);
        assert_int_equal(got.lw, 1);
        line.len = 0;
        assert_int_equal(
            upstream_tele_line(&line, sqlite3_column_int64(st, 0), "old-agent",
                               seq, sqlite3_column_int64(st, 2), body, blen),
            0);
        assert_int_equal(ubuf_put(&line, "", 1), 0);
        n_b64 += strstr((const char *)line.p, "body_b64") != NULL;
        snprintf(want, sizeof want, "\"temp_dc\":%d", (int)te.health.temp_dc);
        if (strstr((const char *)line.p, want) == NULL) {
            fprintf(stderr, "seq %u: %s\n", (unsigned)seq, (char *)line.p);
        }
        assert_non_null(strstr((const char *)line.p, want));
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    ubuf_free(&line);
    print_message("tmld_tele_v1: %u rows (%u version 1), %u as body_b64\n",
                  (unsigned)n_rows, (unsigned)N_V1, (unsigned)n_b64);
    assert_int_equal(n_rows, 2 * N_V1);
    assert_int_equal(n_b64, 0);
    tdev_close(&v);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_v1_tele_stored_acked_and_decoded_again, th_fixture_setup,
            th_fixture_teardown),
    };

    return cmocka_run_group_tests_name("tmld_tele_v1", tests, NULL, NULL);
}
