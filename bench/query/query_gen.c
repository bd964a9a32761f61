/*
 * query_gen.c: writes a tmld database with DEVICES devices (dev-0000...),
 * each in group g<i % GROUPS> (source 'fw'), and ROWS tele rows spread
 * evenly over the devices, one per device every PERIOD seconds ending now,
 * inserted in time order as tmld's ingest would. Devices with i % 10 == 0
 * run model version 2 (a canary), the others version 1. The schema comes
 * from tmld's embedded migrations, recorded in schema_migrations exactly as
 * tmld does, so tmld opens the file as its own. One transaction, prepared
 * statements. SAMPLES captured inputs are added too (one chunk each, round
 * robin over the devices), cycling through four kinds: audio (i16, [1600],
 * 16 kHz), an image (u8, [24, 32, 1]), a sensor window (f32, [50, 3], 50 Hz)
 * and an i8 image ([16, 16]).
 *   tmld_query_gen DB [ROWS=10000000] [DEVICES=1000] [GROUPS=10] [PERIOD=60]
 *                  [SAMPLES=0]
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "migrations.h"

static sqlite3 *db;

static void
die(const char *what)
{
    fprintf(stderr, "tmld_query_gen: %s: %s\n", what, sqlite3_errmsg(db));
    exit(1);
}

static void
exec(const char *sql)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        die(sql);
}

static sqlite3_stmt *
prep(const char *sql)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        die(sql);
    return st;
}

static void
step(sqlite3_stmt *st)
{
    if (sqlite3_step(st) != SQLITE_DONE)
        die("insert");
    sqlite3_reset(st);
}

static long long
arg(int argc, char **argv, int i, long long def, long long min)
{
    if (argc <= i)
        return def;
    char *end;
    long long v = strtoll(argv[i], &end, 10);
    if (*end != '\0' || v < min) {
        fprintf(stderr, "tmld_query_gen: bad argument '%s'\n", argv[i]);
        exit(2);
    }
    return v;
}

int
main(int argc, char **argv)
{
    if (argc < 2 || argc > 7) {
        fprintf(stderr, "usage: tmld_query_gen DB [ROWS] [DEVICES] [GROUPS] "
                        "[PERIOD_S] [SAMPLES]\n");
        return 2;
    }
    long long rows = arg(argc, argv, 2, 10000000, 0);
    long long ndev = arg(argc, argv, 3, 1000, 1);
    long long ngrp = arg(argc, argv, 4, 10, 1);
    long long period = arg(argc, argv, 5, 60, 1);
    long long nsamp = arg(argc, argv, 6, 0, 0);
    if (sqlite3_open(argv[1], &db) != SQLITE_OK)
        die(argv[1]);
    /* A rollback journal while bulk-loading a new file (it holds only the
     * few pages that existed), WAL for tmld afterwards. */
    exec("PRAGMA journal_mode = DELETE");
    exec("PRAGMA synchronous = OFF");
    exec("PRAGMA cache_size = -65536");
    exec("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER "
         "PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)");
    time_t now = time(NULL);
    for (size_t i = 0; i < tmld_n_migrations; i++) {
        const struct tmld_migration *m = &tmld_migrations[i];
        char tail[256];
        snprintf(tail, sizeof(tail),
                 "INSERT INTO schema_migrations VALUES (%d, '%s', %lld); "
                 "PRAGMA user_version = %d;",
                 m->version, m->name, (long long)now, m->version);
        exec("BEGIN");
        exec(m->sql);
        exec(tail);
        exec("COMMIT");
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    exec("BEGIN");
    sqlite3_stmt *dv = prep(
        "INSERT INTO devices (id, name, first_seen, last_seen, online, "
        "agent_version, hw, model, model_version, model_slot, hello_at) "
        "VALUES (?1, ?2, ?3, ?4, 0, 65536, 'sim', 'kws', ?5, 0, ?4)");
    sqlite3_stmt *gr =
        prep("INSERT INTO device_groups (device_id, grp) VALUES (?1, ?2)");
    sqlite3_stmt *hw =
        prep("INSERT INTO stream_hw (device_id, tele_hw) VALUES (?1, ?2)");
    long long per_dev = rows / ndev, extra = rows % ndev;
    long long span = (per_dev + 1) * period;
    for (long long i = 0; i < ndev; i++) {
        char name[32], grp[32];
        snprintf(name, sizeof(name), "dev-%04lld", i);
        snprintf(grp, sizeof(grp), "g%lld", i % ngrp);
        sqlite3_bind_int64(dv, 1, i + 1);
        sqlite3_bind_text(dv, 2, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(dv, 3, (long long)now - span);
        sqlite3_bind_int64(dv, 4, (long long)now);
        sqlite3_bind_int(dv, 5, i % 10 == 0 ? 2 : 1);
        step(dv);
        sqlite3_bind_int64(gr, 1, i + 1);
        sqlite3_bind_text(gr, 2, grp, -1, SQLITE_TRANSIENT);
        step(gr);
        sqlite3_bind_int64(hw, 1, i + 1);
        sqlite3_bind_int64(hw, 2, per_dev + (i < extra));
        step(hw);
    }
    sqlite3_stmt *te = prep(
        "INSERT INTO tele (device_id, seq, recv_at, model_version, period_s, "
        "n_inferences, n_low_conf, n_flagged, n_errors, lat_mean_us, body) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)");
    static const uint8_t body[24] = {0xa1, 0x00};
    uint32_t rnd = 12345;
    long long written = 0;
    /* Step k: every device with a k-th row writes it, oldest step first;
     * a device's rows end at now. */
    for (long long k = per_dev + (extra > 0) - 1; k >= 0; k--) {
        for (long long i = 0; i < ndev; i++) {
            long long have = per_dev + (i < extra);
            if (k >= have)
                continue;
            rnd = rnd * 1103515245u + 12345u;
            int v = i % 10 == 0 ? 2 : 1;
            int inf = 50 + (int)((rnd >> 16) % 50);
            sqlite3_bind_int64(te, 1, i + 1);
            sqlite3_bind_int64(te, 2, have - k);
            sqlite3_bind_int64(te, 3,
                               (long long)now - k * period - (i % period));
            sqlite3_bind_int(te, 4, v);
            sqlite3_bind_int64(te, 5, period);
            sqlite3_bind_int(te, 6, inf);
            sqlite3_bind_int(te, 7, (int)((rnd >> 8) % (v == 2 ? 12 : 4)));
            sqlite3_bind_int(te, 8, (int)((rnd >> 4) % 3));
            sqlite3_bind_int(te, 9, (int)((rnd >> 20) % 100 == 0));
            sqlite3_bind_int(te, 10, 8000 + (int)((rnd >> 12) % 4000));
            sqlite3_bind_blob(te, 11, body, sizeof(body), SQLITE_STATIC);
            step(te);
            written++;
        }
    }
    sqlite3_stmt *sa = prep(
        "INSERT INTO samples (device_id, seq, recv_at, sample_id, "
        "model_version, reason, predicted, confidence_bp, expected, dtype, "
        "shape, rate_hz, total_len, offset, data) VALUES (?1, ?2, ?3, ?4, "
        "?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 0, ?14)");
    sqlite3_stmt *sh = prep("UPDATE stream_hw SET sample_hw = sample_hw + 1 "
                            "WHERE device_id = ?1 RETURNING sample_hw");
    static uint8_t buf[4 * 50 * 3 + 3200];
    for (long long k = 0; k < nsamp; k++) {
        long long dev = k % ndev + 1;
        int kind = (int)(k % 4);
        static const int dtypes[] = {3, 1, 5, 2};
        static const char *const shapes[] = {"1600", "24x32x1", "50x3",
                                             "16x16"};
        static const int rates[] = {16000, 0, 50, 0};
        static const size_t lens[] = {3200, 768, 600, 256};
        for (size_t b = 0; b < lens[kind]; b++) {
            rnd = rnd * 1103515245u + 12345u;
            buf[b] = (uint8_t)(rnd >> 16);
        }
        if (kind == 2) /* finite floats: -50.0 .. 50.0 */
            for (size_t b = 0; b < 150; b++) {
                float x = (float)((int)(buf[b] % 201) - 100) / 2.0f;
                memcpy(buf + 4 * b, &x, 4);
            }
        if (sqlite3_bind_int64(sh, 1, dev) != SQLITE_OK ||
            sqlite3_step(sh) != SQLITE_ROW)
            die("sample_hw");
        long long sseq = sqlite3_column_int64(sh, 0);
        sqlite3_reset(sh);
        sqlite3_bind_int64(sa, 1, dev);
        sqlite3_bind_int64(sa, 2, sseq);
        sqlite3_bind_int64(sa, 3, (long long)now - (nsamp - k));
        sqlite3_bind_int64(sa, 4, sseq);
        sqlite3_bind_int(sa, 5, (dev - 1) % 10 == 0 ? 2 : 1);
        sqlite3_bind_int(sa, 6, 1 + (int)(k % 3));
        sqlite3_bind_int(sa, 7, (int)(k % 12));
        sqlite3_bind_int(sa, 8, 3000 + (int)(k % 7000));
        if (k % 5 == 0)
            sqlite3_bind_null(sa, 9);
        else
            sqlite3_bind_int(sa, 9, (int)((k + 1) % 12));
        sqlite3_bind_int(sa, 10, dtypes[kind]);
        sqlite3_bind_text(sa, 11, shapes[kind], -1, SQLITE_STATIC);
        sqlite3_bind_int(sa, 12, rates[kind]);
        sqlite3_bind_int64(sa, 13, (long long)lens[kind]);
        sqlite3_bind_blob(sa, 14, buf, (int)lens[kind], SQLITE_STATIC);
        step(sa);
    }
    sqlite3_finalize(sa);
    sqlite3_finalize(sh);
    sqlite3_finalize(dv);
    sqlite3_finalize(gr);
    sqlite3_finalize(hw);
    sqlite3_finalize(te);
    exec("COMMIT");
    exec("PRAGMA journal_mode = WAL");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) +
               (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("rows=%lld devices=%lld groups=%lld period_s=%lld gen_s=%.1f\n",
           written, ndev, ngrp, period, s);
    sqlite3_close(db);
    return 0;
}
