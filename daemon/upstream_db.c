/*
 * upstream_db.c: a stream's cursor, pending batch and poisoned batches
 * (db/0200_upstream.sql). upstream_db_job runs on tmld's writer thread
 * inside the group-commit transaction: it finishes the batch the cloud
 * answered (cursor forward, counters, poisoned row) and plans the next one
 * (its bounds committed before anything is sent), in one step.
 *
 * Invariants: the cursor only moves forward within an epoch, and only past
 * a batch the cloud answered 2xx (delivered) or refused for good
 * (poisoned). Rows between the cursor and a batch's first row, or missing
 * inside it, were deleted by retention before they were sent: they are
 * counted as dropped. Row ids restart when retention empties the tail of a
 * table (INTEGER PRIMARY KEY reuses max+1); that is detected (max id below
 * the cursor) and the epoch, part of the Idempotency-Key, is bumped so that
 * new rows never reuse an old key.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "upstream.h"

static const char *const tables[US__COUNT] = {
    [US_TELE] = "tele",
    [US_SAMPLES] = "samples",
    [US_EVENTS] = "upstream_events",
};

/* Rough JSON size of one row, from its stored size; conservative, so a
 * batch planned under max_bytes builds under upstream's raw cap. */
static const char *const size_expr[US__COUNT] = {
    [US_TELE] = "700 + 4 * length(body)",
    [US_SAMPLES] = "500 + 2 * length(data)",
    [US_EVENTS] = "300",
};

static int
q_int(sqlite3 *db, const char *sql, const char *s, int64_t a, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

    if (rc != SQLITE_OK)
        return rc;
    if (s != NULL)
        sqlite3_bind_text(st, 1, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_int64(st, 1, a);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

int64_t
upstream_db_max_id(sqlite3 *db, enum ustream s)
{
    char sql[96];
    int64_t v = 0;

    snprintf(sql, sizeof(sql), "SELECT coalesce(max(id), 0) + 0 * ?1 FROM %s",
             tables[s]);
    return q_int(db, sql, NULL, 0, &v) == SQLITE_OK ? v : -1;
}

int
upstream_db_load(sqlite3 *db, enum ustream s, int64_t *cursor, int64_t *epoch,
                 int64_t *delivered, int64_t *dropped, int64_t *poisoned,
                 bool *has_batch, struct ubatch *b)
{
    const char *name = upstream_stream_name(s);
    sqlite3_stmt *st = NULL;
    int rc;

    *cursor = *epoch = *delivered = *dropped = *poisoned = 0;
    *has_batch = false;
    rc = sqlite3_prepare_v2(db,
                            "SELECT cursor, epoch, delivered, dropped, "
                            "poisoned FROM upstream_cursor WHERE stream = ?1",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *cursor = sqlite3_column_int64(st, 0);
        *epoch = sqlite3_column_int64(st, 1);
        *delivered = sqlite3_column_int64(st, 2);
        *dropped = sqlite3_column_int64(st, 3);
        *poisoned = sqlite3_column_int64(st, 4);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return -EIO;
    rc = sqlite3_prepare_v2(db,
                            "SELECT epoch, first_id, last_id, n_rows FROM "
                            "upstream_batch WHERE stream = ?1",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        b->epoch = sqlite3_column_int64(st, 0);
        b->first_id = sqlite3_column_int64(st, 1);
        b->last_id = sqlite3_column_int64(st, 2);
        b->n_rows = sqlite3_column_int64(st, 3);
        *has_batch = true;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -EIO;
}

static int
exec_bind(sqlite3 *db, const char *sql, const char *name, const int64_t *v,
          int n, const char *text)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

    if (rc != SQLITE_OK)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    for (int i = 0; i < n; i++)
        sqlite3_bind_int64(st, i + 2, v[i]);
    if (text != NULL)
        sqlite3_bind_text(st, n + 2, text, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Plans the next batch after cursor: at most max_rows rows and about
 * max_bytes of JSON (at least one row). */
static int
plan(sqlite3 *db, struct ujob *j, int64_t *cursor, int64_t cursor_at,
     int64_t *epoch, int64_t *dropped)
{
    const char *t = tables[j->s];
    char sql[256];
    sqlite3_stmt *st = NULL;
    int64_t max_id = 0, first = 0, last = 0, n = 0, bytes = 0;
    int rc;

    snprintf(sql, sizeof(sql), "SELECT coalesce(max(id), 0) + 0 * ?1 FROM %s",
             t);
    if ((rc = q_int(db, sql, NULL, 0, &max_id)) != SQLITE_OK)
        return rc;
    if (max_id >= *cursor && *cursor > 0 && cursor_at > 0) {
        /* The row at the cursor received after the last delivered one
         * means its id was reused (tail emptied, then refilled past the
         * cursor before we looked). */
        int64_t at = 0;
        snprintf(sql, sizeof(sql),
                 "SELECT coalesce(max(recv_at), 0) FROM %s WHERE id = ?1", t);
        if ((rc = q_int(db, sql, NULL, *cursor, &at)) != SQLITE_OK)
            return rc;
        if (at > cursor_at)
            max_id = -1; /* handled as below */
    }
    if (max_id < *cursor) {
        /* The tail was deleted and ids restart below the cursor. Rows
         * received before the last delivered one are old; the rest are
         * new and go out under a new epoch. */
        int64_t c = 0;
        snprintf(sql, sizeof(sql),
                 "SELECT coalesce(max(id), 0) FROM %s WHERE recv_at < ?1", t);
        if ((rc = q_int(db, sql, NULL, cursor_at, &c)) != SQLITE_OK)
            return rc;
        *cursor = c;
        (*epoch)++;
    }
    snprintf(sql, sizeof(sql),
             "SELECT id, %s FROM %s WHERE id > ?1 ORDER BY id LIMIT ?2",
             size_expr[j->s], t);
    rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_bind_int64(st, 1, *cursor);
    sqlite3_bind_int64(st, 2, j->max_rows);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        int64_t sz = sqlite3_column_int64(st, 1);
        if (n > 0 && bytes + sz > j->max_bytes)
            break;
        if (n == 0)
            first = id;
        last = id;
        bytes += sz;
        n++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return rc;
    if (n == 0)
        return SQLITE_OK;
    /* Ids between the cursor and the batch, or missing inside it, were
     * deleted by retention before they could be sent. */
    *dropped += (first - *cursor - 1) + ((last - first + 1) - n);
    j->has_next = true;
    j->next.epoch = *epoch;
    j->next.first_id = first;
    j->next.last_id = last;
    j->next.n_rows = n;
    {
        int64_t v[5] = {*epoch, first, last, n, j->now_s};
        rc = exec_bind(db,
                       "INSERT OR REPLACE INTO upstream_batch(stream, epoch, "
                       "first_id, last_id, n_rows, created_at) "
                       "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                       upstream_stream_name(j->s), v, 5, NULL);
    }
    /* The rows just planned were counted as dropped relative to the old
     * cursor only for ids before first; the cursor itself stays put. */
    return rc;
}

int
upstream_db_job(sqlite3 *db, void *arg)
{
    struct ujob *j = arg;
    const char *name = upstream_stream_name(j->s);
    sqlite3_stmt *st = NULL;
    int64_t cursor = 0, cursor_at = 0, epoch = 0, delivered = 0;
    int64_t dropped = 0, poisoned = 0;
    int rc;

    j->has_next = false;
    rc = exec_bind(db,
                   "INSERT OR IGNORE INTO upstream_cursor(stream) VALUES (?1)",
                   name, NULL, 0, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_prepare_v2(db,
                            "SELECT cursor, cursor_at, epoch, delivered, "
                            "dropped, poisoned FROM upstream_cursor WHERE "
                            "stream = ?1",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        cursor = sqlite3_column_int64(st, 0);
        cursor_at = sqlite3_column_int64(st, 1);
        epoch = sqlite3_column_int64(st, 2);
        delivered = sqlite3_column_int64(st, 3);
        dropped = sqlite3_column_int64(st, 4);
        poisoned = sqlite3_column_int64(st, 5);
    }
    sqlite3_finalize(st);

    if (j->replay_id > 0) {
        /* A poisoned batch sent again: the cursor does not move. */
        int64_t n_rows = -1;
        if ((rc =
                 q_int(db, "SELECT n_rows FROM upstream_poisoned WHERE id = ?1",
                       NULL, j->replay_id, &n_rows)) != SQLITE_OK)
            return rc;
        if (j->has_finish && n_rows >= 0) {
            int64_t v[3] = {j->replay_id, j->http_status, j->now_s};
            if (j->is_poison) {
                rc = exec_bind(db,
                               "UPDATE upstream_poisoned SET replay = 0, "
                               "http_status = ?3, at = ?4, message = ?5 "
                               "WHERE id = ?2 AND stream = ?1",
                               name, v, 3, j->message);
            } else {
                rc = exec_bind(db,
                               "DELETE FROM upstream_poisoned WHERE id = ?2 "
                               "AND stream = ?1",
                               name, v, 1, NULL);
                poisoned -= n_rows;
                delivered += j->fin.n_rows;
            }
            if (rc != SQLITE_OK)
                return rc;
        }
        goto save;
    }
    if (j->has_finish && j->fin.epoch == epoch && j->fin.last_id > cursor) {
        if (j->is_poison) {
            int64_t v[6] = {j->fin.epoch,  j->fin.first_id, j->fin.last_id,
                            j->fin.n_rows, j->http_status,  j->now_s};
            rc = exec_bind(db,
                           "INSERT INTO upstream_poisoned(stream, epoch, "
                           "first_id, last_id, n_rows, http_status, at, "
                           "message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                           name, v, 6, j->message);
            if (rc != SQLITE_OK)
                return rc;
            poisoned += j->fin.n_rows;
        } else {
            delivered += j->fin.n_rows;
        }
        cursor = j->fin.last_id;
        char sql[128];
        snprintf(sql, sizeof(sql),
                 "SELECT coalesce(max(recv_at), 0) FROM %s WHERE id = ?1",
                 tables[j->s]);
        if ((rc = q_int(db, sql, NULL, cursor, &cursor_at)) != SQLITE_OK)
            return rc;
        rc = exec_bind(db, "DELETE FROM upstream_batch WHERE stream = ?1", name,
                       NULL, 0, NULL);
        if (rc != SQLITE_OK)
            return rc;
    }
    rc = plan(db, j, &cursor, cursor_at, &epoch, &dropped);
    if (rc != SQLITE_OK)
        return rc;
save : {
    int64_t v[6] = {cursor, cursor_at, epoch, delivered, dropped, poisoned};
    rc = exec_bind(db,
                   "UPDATE upstream_cursor SET cursor = ?2, cursor_at = "
                   "?3, epoch = ?4, delivered = ?5, dropped = ?6, "
                   "poisoned = ?7 WHERE stream = ?1",
                   name, v, 6, NULL);
    if (rc != SQLITE_OK)
        return rc;
}
    j->cursor = cursor;
    j->epoch = epoch;
    j->delivered = delivered;
    j->dropped = dropped;
    j->poisoned = poisoned;
    return 0;
}
