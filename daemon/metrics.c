/*
 * metrics.c: Prometheus text-format metrics for node_exporter's textfile
 * collector, written atomically (temp file + rename) every [metrics]
 * interval to [metrics] textfile. Off when textfile is empty.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

struct metrics {
    struct tmld *d;
    uv_timer_t t;
};

static void
write_metrics(struct tmld *d)
{
    const char *path = d->set.metrics_textfile;
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        log_warn("metrics: %s: %s", tmp, strerror(errno));
        return;
    }
    size_t online = 0, total = registry_count(d, &online);
    const struct store_stats *s = store_stats(d);
    const struct ingest_stats *in = ingest_stats(d);
    const struct mqtt_stats *m = mqtt_stats(d);
    int64_t wal = 0, size = store_size_bytes(d, &wal);
#define G(name, help, v)                                                       \
    fprintf(f, "# HELP " name " " help "\n# TYPE " name " gauge\n" name        \
               " %llu\n",                                                      \
            (unsigned long long)(v))
#define C(name, help, v)                                                       \
    fprintf(f, "# HELP " name " " help "\n# TYPE " name " counter\n" name      \
               " %llu\n",                                                      \
            (unsigned long long)(v))
    G("tmld_devices_online", "Devices currently online.", online);
    G("tmld_devices_total", "Devices known since start.", total);
    G("tmld_mqtt_connected", "1 if the broker link is up.",
      tmld_mqtt_is_connected(d));
    C("tmld_mqtt_connects_total", "Broker connections made.", m->connects);
    C("tmld_mqtt_messages_total", "Messages received from the broker.",
      m->messages);
    C("tmld_ingest_tele_records_total", "Telemetry records committed.",
      s->tele);
    C("tmld_ingest_sample_records_total", "Sample chunks committed.",
      s->samples);
    C("tmld_ingest_duplicates_total", "Records dropped as already stored.",
      s->duplicates);
    C("tmld_ingest_gaps_total",
      "Records dropped because an earlier one is missing.", s->gaps);
    C("tmld_ingest_malformed_total", "Messages rejected by the decoder.",
      in->malformed);
    C("tmld_ingest_oversize_total", "Messages over the size limit.",
      in->oversize);
    C("tmld_ingest_refused_total", "Records refused (queue full, cap).",
      in->refused);
    C("tmld_ingest_acks_total", "Acks published after commits.", in->acks);
    C("tmld_db_commit_errors_total", "Batches that failed to commit.",
      s->commit_errors);
    G("tmld_db_queue_records", "Records waiting for a commit.",
      store_queued(d));
    uint64_t rolled = 0, evicted = 0;
    retention_stats(&rolled, &evicted);
    C("tmld_retention_rolled_up_total",
      "Telemetry summaries rolled up into hourly aggregates.", rolled);
    C("tmld_retention_samples_evicted_total",
      "Sample chunks evicted to keep the budget.", evicted);
    G("tmld_db_size_bytes", "Database file size.", size);
    G("tmld_db_wal_bytes", "WAL file size.", wal);
    static const char *le[] = {"1",   "2",   "5",    "10",   "20", "50",
                               "100", "200", "500", "1000", "2000", "+Inf"};
    fprintf(f, "# HELP tmld_db_commit_duration_ms Batch commit latency.\n"
               "# TYPE tmld_db_commit_duration_ms histogram\n");
    uint64_t cum = 0;
    for (int i = 0; i < 12; i++) {
        cum += s->commit_hist[i];
        fprintf(f, "tmld_db_commit_duration_ms_bucket{le=\"%s\"} %llu\n",
                le[i], (unsigned long long)cum);
    }
    fprintf(f, "tmld_db_commit_duration_ms_count %llu\n",
            (unsigned long long)cum);
#undef G
#undef C
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        log_warn("metrics: %s: %s", path, strerror(errno));
        unlink(tmp);
    }
}

static void
tick(uv_timer_t *t)
{
    struct metrics *m = t->data;
    write_metrics(m->d);
}

int
metrics_start(struct tmld *d)
{
    if (d->set.metrics_textfile[0] == '\0')
        return 0;
    struct metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    m->d = d;
    uv_timer_init(d->loop, &m->t);
    m->t.data = m;
    uv_timer_start(&m->t, tick, 0, d->set.metrics_interval_ms);
    d->metrics = m;
    return 0;
}

static void
metrics_free(uv_handle_t *h)
{
    free(h->data);
}

void
metrics_stop(struct tmld *d)
{
    struct metrics *m = d->metrics;
    if (m == NULL)
        return;
    if (d->store)
        write_metrics(d);
    d->metrics = NULL;
    uv_close((uv_handle_t *)&m->t, metrics_free);
}
