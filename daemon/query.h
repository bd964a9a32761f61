/*
 * query.h: the telemetry query of `tmlctl telemetry` (verb tele.query,
 * daemon/query.c), kept apart from the loop so that tests can EXPLAIN it.
 */
#ifndef TMLD_QUERY_H
#define TMLD_QUERY_H

#include <stdbool.h>
#include <stddef.h>

enum query_by { QUERY_BY_MODEL_VERSION, QUERY_BY_DEVICE, QUERY_BY_HOUR };

/* "model-version"/"model_version", "device", "hour" -> by; -1 otherwise. */
int query_by_parse(const char *s, enum query_by *by);

/* Writes the SELECT for the window [since, now): whole hours from tele_hour
 * (hour >= ?4) and the first, partial hour from tele (recv_at >= ?1 AND
 * recv_at < ?5, with ?5 = ?4 * 3600, read as the rowid range that
 * tele_hour_ids records for hour ?4 - 1), filtered by device name ?2 or group
 * ?3 when has_device / has_group. Columns: key (model_version, device name
 * or hour * 3600), devices, summaries, inferences, low_conf, flagged,
 * errors, lat_sum_us. Returns the length, or -1 if buf is too small. */
int query_tele_sql(char *buf, size_t n, enum query_by by, bool has_device,
                   bool has_group);

#endif
