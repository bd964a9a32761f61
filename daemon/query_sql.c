/*
 * query_sql.c: the SQL of verb tele.query (see query.h). Filters are spliced
 * in as fixed text (never values) so that SQLite plans each variant with its
 * indexes instead of an "?2 IS NULL OR ..." that defeats them.
 */
#include <stdio.h>
#include <string.h>

#include "query.h"

int
query_by_parse(const char *s, enum query_by *by)
{
    if (strcmp(s, "model-version") == 0 || strcmp(s, "model_version") == 0)
        *by = QUERY_BY_MODEL_VERSION;
    else if (strcmp(s, "device") == 0)
        *by = QUERY_BY_DEVICE;
    else if (strcmp(s, "hour") == 0)
        *by = QUERY_BY_HOUR;
    else
        return -1;
    return 0;
}

int
query_tele_sql(char *buf, size_t n, enum query_by by, bool has_device,
               bool has_group)
{
    const char *fh = "", *ft = "";
    if (has_device) {
        fh = " AND h.device_id = (SELECT id FROM devices WHERE name = ?2)";
        ft = " AND t.device_id = (SELECT id FROM devices WHERE name = ?2)";
    } else if (has_group) {
        fh = " AND h.device_id IN (SELECT device_id FROM device_groups "
             "WHERE grp = ?3)";
        ft = " AND t.device_id IN (SELECT device_id FROM device_groups "
             "WHERE grp = ?3)";
    }
    const char *kh, *kt;
    switch (by) {
    case QUERY_BY_DEVICE:
        kh = "h.device_id", kt = "t.device_id";
        break;
    case QUERY_BY_HOUR:
        kh = "h.hour", kt = "t.recv_at / 3600";
        break;
    default:
        kh = "h.model_version", kt = "t.model_version";
        break;
    }
    const char *head, *tail;
    switch (by) {
    case QUERY_BY_DEVICE:
        head = "SELECT d.name, x.dv, x.s, x.i, x.l, x.f, x.e, x.lat FROM (";
        tail = ") x JOIN devices d ON d.id = x.k ORDER BY d.name";
        break;
    case QUERY_BY_HOUR:
        head = "SELECT x.k * 3600, x.dv, x.s, x.i, x.l, x.f, x.e, x.lat FROM (";
        tail = ") x ORDER BY x.k";
        break;
    default:
        head = "SELECT x.k, x.dv, x.s, x.i, x.l, x.f, x.e, x.lat FROM (";
        tail = ") x ORDER BY x.k";
        break;
    }
    int len = snprintf(
        buf, n,
        "%sSELECT u.k AS k, count(DISTINCT u.dev) AS dv, sum(u.s) AS s, "
        "sum(u.i) AS i, sum(u.l) AS l, sum(u.f) AS f, sum(u.e) AS e, "
        "sum(u.lat) AS lat FROM ("
        "SELECT %s AS k, h.device_id AS dev, h.summaries AS s, "
        "h.n_inferences AS i, h.n_low_conf AS l, h.n_flagged AS f, "
        "h.n_errors AS e, h.lat_sum_us AS lat FROM tele_hour h "
        "WHERE h.hour >= ?4%s "
        "UNION ALL "
        "SELECT %s, t.device_id, 1, t.n_inferences, t.n_low_conf, "
        "t.n_flagged, t.n_errors, t.lat_mean_us * t.n_inferences FROM tele t "
        "WHERE t.id BETWEEN (SELECT first_id FROM tele_hour_ids WHERE "
        "hour = ?4 - 1) AND (SELECT last_id FROM tele_hour_ids WHERE "
        "hour = ?4 - 1) AND t.recv_at >= ?1 AND t.recv_at < ?5%s"
        ") u GROUP BY u.k LIMIT 100000%s",
        head, kh, fh, kt, ft, tail);
    return len < 0 || (size_t)len >= n ? -1 : len;
}
