/*
 * test_upstream_db.c: upstream's bookkeeping (daemon/upstream_db.c) and
 * batch bodies (daemon/upstream_body.c) against a real SQLite file migrated
 * with tmld's own migrations: planning, delivery, poisoning, rows deleted
 * by retention before upload (dropped), row ids restarting (epoch), and the
 * gzip'd NDJSON that comes out (decoded again here with zlib and cJSON).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>

#include "core.h"
#include "upstream.h"

struct fx {
    char dir[64];
    char path[128];
    sqlite3 *db;
};

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/upstream-db.XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/t.db", f->dir);
    if (sqlite3_open(f->path, &f->db) != SQLITE_OK ||
        store_migrate(f->db, f->path) != 0)
        return -1;
    sqlite3_exec(f->db,
                 "INSERT INTO devices(id, name, first_seen, last_seen) "
                 "VALUES (1, 'turbine-1', 0, 0), (2, 'turbine-2', 0, 0)",
                 NULL, NULL, NULL);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];
    sqlite3_close(f->db);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static int64_t
q(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Inserts n tele rows for device dev with seqs from seq0, recv_at at. */
static void
add_tele(sqlite3 *db, int dev, int seq0, int n, int64_t at)
{
    for (int i = 0; i < n; i++) {
        struct tml_tele t;
        uint8_t buf[256];
        size_t len;
        memset(&t, 0, sizeof(t));
        t.seq = (uint32_t)(seq0 + i);
        t.model_version = 4;
        t.period_s = 60;
        t.age_s = 30;
        t.n_inferences = 100;
        t.n_classes = 2;
        t.class_counts[0] = 60;
        t.class_counts[1] = 40;
        assert_int_equal(tml_tele_encode(&t, buf, sizeof(buf), &len), TML_OK);
        sqlite3_stmt *st = NULL;
        assert_int_equal(
            sqlite3_prepare_v2(db,
                               "INSERT INTO tele(device_id, seq, recv_at, "
                               "model_version, period_s, n_inferences, "
                               "n_low_conf, n_flagged, n_errors, "
                               "lat_mean_us, body) VALUES (?1, ?2, ?3, 4, "
                               "60, 100, 0, 0, 0, 0, ?4)",
                               -1, &st, NULL),
            SQLITE_OK);
        sqlite3_bind_int(st, 1, dev);
        sqlite3_bind_int(st, 2, seq0 + i);
        sqlite3_bind_int64(st, 3, at);
        sqlite3_bind_blob(st, 4, buf, (int)len, SQLITE_TRANSIENT);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_finalize(st);
    }
}

static void
run_job(sqlite3 *db, struct ujob *j)
{
    assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(upstream_db_job(db, j), 0);
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
}

static struct ujob
job(enum ustream s, int64_t rows)
{
    struct ujob j;
    memset(&j, 0, sizeof(j));
    j.s = s;
    j.max_rows = rows;
    j.max_bytes = 1 << 20;
    j.now_s = 1000;
    return j;
}

static void
test_upstream_db_plans_bounded_batch_and_persists_it(void **state)
{
    struct fx *f = *state;
    add_tele(f->db, 1, 1, 25, 100);
    struct ujob j = job(US_TELE, 10);
    run_job(f->db, &j);
    assert_true(j.has_next);
    assert_int_equal(j.next.first_id, 1);
    assert_int_equal(j.next.last_id, 10);
    assert_int_equal(j.next.n_rows, 10);
    assert_int_equal(j.cursor, 0);
    /* A restart finds the same bounds (same Idempotency-Key). */
    int64_t c, e, dl, dr, p;
    bool has;
    struct ubatch b;
    assert_int_equal(
        upstream_db_load(f->db, US_TELE, &c, &e, &dl, &dr, &p, &has, &b), 0);
    assert_true(has);
    assert_int_equal(b.first_id, 1);
    assert_int_equal(b.last_id, 10);
}

static void
test_upstream_db_delivery_moves_cursor_and_plans_next(void **state)
{
    struct fx *f = *state;
    add_tele(f->db, 1, 1, 25, 100);
    struct ujob j = job(US_TELE, 10);
    run_job(f->db, &j);
    struct ujob k = job(US_TELE, 10);
    k.has_finish = true;
    k.fin = j.next;
    run_job(f->db, &k);
    assert_int_equal(k.cursor, 10);
    assert_int_equal(k.delivered, 10);
    assert_true(k.has_next);
    assert_int_equal(k.next.first_id, 11);
    assert_int_equal(k.next.last_id, 20);
    /* The same finish again (a retry of the bookkeeping) changes nothing. */
    struct ujob again = job(US_TELE, 10);
    again.has_finish = true;
    again.fin = j.next;
    run_job(f->db, &again);
    assert_int_equal(again.delivered, 10);
    assert_int_equal(again.cursor, 10);
    assert_int_equal(again.next.first_id, 11);
}

static void
test_upstream_db_poison_keeps_rows_and_moves_on(void **state)
{
    struct fx *f = *state;
    add_tele(f->db, 1, 1, 5, 100);
    struct ujob j = job(US_TELE, 3);
    run_job(f->db, &j);
    struct ujob k = job(US_TELE, 3);
    k.has_finish = true;
    k.is_poison = true;
    k.fin = j.next;
    k.http_status = 422;
    snprintf(k.message, sizeof(k.message), "schema");
    run_job(f->db, &k);
    assert_int_equal(k.poisoned, 3);
    assert_int_equal(k.delivered, 0);
    assert_int_equal(k.cursor, 3);
    assert_int_equal(k.next.first_id, 4);
    assert_int_equal(q(f->db, "SELECT count(*) FROM upstream_poisoned WHERE "
                              "http_status = 422 AND first_id = 1 AND "
                              "last_id = 3 AND message = 'schema'"),
                     1);
    assert_int_equal(q(f->db, "SELECT count(*) FROM tele"), 5);
}

static void
test_upstream_db_replayed_poison_is_delivered_without_moving_cursor(
    void **state)
{
    struct fx *f = *state;
    add_tele(f->db, 1, 1, 6, 100);
    struct ujob j = job(US_TELE, 3);
    run_job(f->db, &j);
    struct ujob k = job(US_TELE, 3);
    k.has_finish = true;
    k.is_poison = true;
    k.fin = j.next;
    k.http_status = 400;
    run_job(f->db, &k);
    assert_int_equal(k.poisoned, 3);
    int64_t id = q(f->db, "SELECT id FROM upstream_poisoned");
    /* Sent again and refused again: kept, replay flag cleared. */
    struct ujob r = job(US_TELE, 3);
    r.has_finish = true;
    r.is_poison = true;
    r.replay_id = id;
    r.fin = j.next;
    r.http_status = 422;
    sqlite3_exec(f->db, "UPDATE upstream_poisoned SET replay = 1", NULL, NULL,
                 NULL);
    run_job(f->db, &r);
    assert_false(r.has_next);
    assert_int_equal(r.poisoned, 3);
    assert_int_equal(q(f->db, "SELECT replay * 1000 + http_status FROM "
                              "upstream_poisoned"),
                     422);
    /* Sent again and accepted: row gone, counters moved, cursor not. */
    struct ujob a = job(US_TELE, 3);
    a.has_finish = true;
    a.replay_id = id;
    a.fin = j.next;
    run_job(f->db, &a);
    assert_int_equal(a.poisoned, 0);
    assert_int_equal(a.delivered, 3);
    assert_int_equal(a.cursor, 3);
    assert_int_equal(q(f->db, "SELECT count(*) FROM upstream_poisoned"), 0);
    assert_int_equal(q(f->db, "SELECT first_id FROM upstream_batch"), 4);
}

static void
test_upstream_db_counts_rows_deleted_before_upload(void **state)
{
    struct fx *f = *state;
    add_tele(f->db, 1, 1, 20, 100);
    /* Retention rolled up rows 1..5 and 8 before anything was sent. */
    sqlite3_exec(f->db, "DELETE FROM tele WHERE id <= 5 OR id = 8", NULL, NULL,
                 NULL);
    struct ujob j = job(US_TELE, 5);
    run_job(f->db, &j);
    assert_int_equal(j.next.first_id, 6);
    assert_int_equal(j.next.last_id, 11); /* 6, 7, 9, 10, 11 */
    assert_int_equal(j.next.n_rows, 5);
    assert_int_equal(j.dropped, 5 + 1);
}

static void
test_upstream_db_restarted_ids_get_a_new_epoch(void **state)
{
    struct fx *f = *state;
    add_tele(f->db, 1, 1, 10, 100);
    struct ujob j = job(US_TELE, 100);
    run_job(f->db, &j);
    struct ujob k = job(US_TELE, 100);
    k.has_finish = true;
    k.fin = j.next;
    run_job(f->db, &k);
    assert_int_equal(k.cursor, 10);
    assert_false(k.has_next);
    /* Everything deleted: new rows get ids 1, 2, 3 again. */
    sqlite3_exec(f->db, "DELETE FROM tele", NULL, NULL, NULL);
    add_tele(f->db, 2, 1, 3, 200);
    struct ujob n = job(US_TELE, 100);
    run_job(f->db, &n);
    assert_true(n.has_next);
    assert_int_equal(n.epoch, 1);
    assert_int_equal(n.next.epoch, 1);
    assert_int_equal(n.next.first_id, 1);
    assert_int_equal(n.next.last_id, 3);
}

static void
test_upstream_db_reused_ids_past_the_cursor_get_a_new_epoch(void **state)
{
    struct fx *f = *state;
    add_tele(f->db, 1, 1, 10, 100);
    struct ujob j = job(US_TELE, 100);
    run_job(f->db, &j);
    struct ujob k = job(US_TELE, 100);
    k.has_finish = true;
    k.fin = j.next;
    run_job(f->db, &k);
    assert_int_equal(k.cursor, 10);
    /* Emptied and refilled beyond the cursor before upstream looked. */
    sqlite3_exec(f->db, "DELETE FROM tele", NULL, NULL, NULL);
    add_tele(f->db, 2, 1, 15, 200);
    struct ujob n = job(US_TELE, 100);
    run_job(f->db, &n);
    assert_int_equal(n.epoch, 1);
    assert_int_equal(n.next.first_id, 1);
    assert_int_equal(n.next.last_id, 15);
}

static int
gunzip(const struct ubuf *in, char *out, size_t cap, size_t *len)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, 15 + 16) != Z_OK)
        return -1;
    z.next_in = in->p;
    z.avail_in = (uInt)in->len;
    z.next_out = (Bytef *)out;
    z.avail_out = (uInt)cap - 1;
    int rc = inflate(&z, Z_FINISH);
    *len = cap - 1 - z.avail_out;
    out[*len] = '\0';
    inflateEnd(&z);
    return rc == Z_STREAM_END ? 0 : -1;
}

static void
test_upstream_body_is_gzip_ndjson_of_the_rows(void **state)
{
    struct fx *f = *state;
    static char text[1 << 16];
    struct ubuf b;
    int64_t n = 0;
    size_t len;
    add_tele(f->db, 1, 1, 3, 100);
    add_tele(f->db, 2, 7, 2, 101);
    ubuf_init(&b, 1 << 20);
    assert_int_equal(upstream_body_build(f->db, US_TELE, 2, 5, 1 << 20, &b, &n),
                     0);
    assert_int_equal(n, 4);
    assert_int_equal(gunzip(&b, text, sizeof(text), &len), 0);
    char *save = NULL;
    int lines = 0;
    for (char *l = strtok_r(text, "\n", &save); l;
         l = strtok_r(NULL, "\n", &save)) {
        cJSON *o = cJSON_Parse(l);
        assert_non_null(o);
        assert_string_equal(cJSON_GetObjectItem(o, "stream")->valuestring,
                            "tele");
        int id = cJSON_GetObjectItem(o, "id")->valueint;
        assert_int_equal(id, 2 + lines);
        assert_string_equal(cJSON_GetObjectItem(o, "device")->valuestring,
                            id <= 3 ? "turbine-1" : "turbine-2");
        assert_int_equal(cJSON_GetObjectItem(o, "end_at")->valueint,
                         (id <= 3 ? 100 : 101) - 30);
        assert_int_equal(
            cJSON_GetArraySize(cJSON_GetObjectItem(o, "class_counts")), 2);
        cJSON_Delete(o);
        lines++;
    }
    assert_int_equal(lines, 4);
    /* Over the raw cap: an error, never a truncated body. */
    assert_int_equal(upstream_body_build(f->db, US_TELE, 1, 5, 100, &b, &n),
                     -E2BIG);
    ubuf_free(&b);
}

static void
test_upstream_body_samples_carry_base64_data(void **state)
{
    struct fx *f = *state;
    static char text[1 << 16];
    struct ubuf b;
    int64_t n = 0;
    size_t len;
    sqlite3_exec(f->db,
                 "INSERT INTO samples(device_id, seq, recv_at, sample_id, "
                 "model_version, reason, predicted, confidence_bp, expected, "
                 "dtype, shape, rate_hz, total_len, offset, data) VALUES "
                 "(1, 1, 50, 9, 4, 1, 2, 4100, NULL, 3, '4', 16000, 4, 0, "
                 "x'00ff10fe')",
                 NULL, NULL, NULL);
    ubuf_init(&b, 1 << 20);
    assert_int_equal(
        upstream_body_build(f->db, US_SAMPLES, 1, 1, 1 << 20, &b, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(gunzip(&b, text, sizeof(text), &len), 0);
    cJSON *o = cJSON_Parse(text);
    assert_non_null(o);
    assert_string_equal(cJSON_GetObjectItem(o, "data_b64")->valuestring,
                        "AP8Q/g==");
    assert_string_equal(cJSON_GetObjectItem(o, "reason")->valuestring,
                        "flagged");
    assert_string_equal(cJSON_GetObjectItem(o, "dtype")->valuestring, "i16");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "expected")));
    cJSON_Delete(o);
    ubuf_free(&b);
}

static void
test_upstream_db_batch_bytes_cap_limits_sample_batches(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 10; i++)
        sqlite3_exec(f->db,
                     "INSERT INTO samples(device_id, seq, recv_at, "
                     "sample_id, model_version, reason, predicted, "
                     "confidence_bp, dtype, shape, rate_hz, total_len, "
                     "offset, data) VALUES (1, 1, 50, 9, 4, 1, 2, 4100, 1, "
                     "'4', 0, 4, 0, zeroblob(4000))",
                     NULL, NULL, NULL);
    struct ujob j = job(US_SAMPLES, 1000);
    j.max_bytes = 20000; /* ~2.3 rows of 8500 estimated bytes */
    run_job(f->db, &j);
    assert_int_equal(j.next.n_rows, 2);
    /* One row bigger than the cap still goes (alone). */
    struct ujob k = job(US_SAMPLES, 1000);
    k.max_bytes = 100;
    sqlite3_exec(f->db, "DELETE FROM upstream_batch", NULL, NULL, NULL);
    run_job(f->db, &k);
    assert_int_equal(k.next.n_rows, 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_upstream_db_plans_bounded_batch_and_persists_it, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_upstream_db_delivery_moves_cursor_and_plans_next, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_upstream_db_poison_keeps_rows_and_moves_on, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_upstream_db_replayed_poison_is_delivered_without_moving_cursor,
            setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_upstream_db_counts_rows_deleted_before_upload, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_upstream_db_restarted_ids_get_a_new_epoch, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_upstream_db_reused_ids_past_the_cursor_get_a_new_epoch, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_upstream_body_is_gzip_ndjson_of_the_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_upstream_body_samples_carry_base64_data, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_upstream_db_batch_bytes_cap_limits_sample_batches, setup,
            teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
