/*
 * retention.h: figures of the retention module (daemon/retention.c) beyond
 * retention_stats() in core.h. Loop thread only.
 */
#ifndef TMLD_RETENTION_H
#define TMLD_RETENTION_H

#include <stdint.h>

/* Rows of the hourly aggregates (tele_hour, tele_hour_ids, tele_hourly)
 * deleted since start: past [retention] rollup_days, or oldest first when
 * the database is at its cap. */
uint64_t retention_pruned(void);

/* The statements that prune the aggregates, ?1 = the first hour kept; each
 * deletes at most 5000 rows. Exposed so that tmld_rollup_retention can check
 * their query plans (no scan of a whole table). */
#define RETENTION_PRUNE_N 3
extern const char *const retention_prune_sql[RETENTION_PRUNE_N];

#endif /* TMLD_RETENTION_H */
