/*
 * tmld_soak: issue 4's first "must show": many devices sending for a while,
 * with resends, and every record they produced is in the database exactly
 * once (count and per-device checksum against what the devices sent and had
 * acknowledged). The default run is short (30 devices, 8 s); the slow
 * variant is the 200 devices for 60 s (TMLD_SOAK_DEVICES,
 * TMLD_SOAK_SECONDS).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pump.h"

static void
test_soak_every_record_stored_exactly_once(void **state)
{
    struct th *t = *state;
    int n = pump_env_int("TMLD_SOAK_DEVICES", 30);
    int secs = pump_env_int("TMLD_SOAK_SECONDS", 8);
    struct pdev *d = calloc((size_t)n, sizeof(*d));
    assert_non_null(d);
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "soak-%03d", i);
        assert_int_equal(tdev_open(&d[i].v, t, id, false), 0);
        d[i].next = 1;
    }
    /* Each device produces about 5 records/s for secs seconds; every few
     * seconds one device resends its last 10 records (duplicates). */
    uint64_t t0 = th_now_ms(), end = t0 + (uint64_t)secs * 1000;
    uint32_t produced = 0, dups_sent = 0;
    while (th_now_ms() < end) {
        produced = (uint32_t)((th_now_ms() - t0) / 200) + 1;
        pump_round(d, n, produced);
        int k = rand() % (n * 200);
        if (k < n && d[k].next > 11) {
            for (uint32_t s = d[k].next - 10; s < d[k].next; s++)
                dups_sent += tdev_tele(&d[k].v, s) == 0;
        }
        th_sleep_ms(5);
    }
    int rc = pump(t, d, n, produced, 30000, NULL, NULL);
    if (rc != 0)
        th_dump_log(t);
    assert_int_equal(rc, 0);
    int64_t rows = th_db_int(t, "SELECT count(*) FROM tele");
    assert_int_equal(rows, (int64_t)n * produced);
    assert_int_equal(pump_dup_rows(t), 0);
    /* Checksum: per device, sum(seq) = produced * (produced + 1) / 2. */
    char q[256];
    snprintf(q, sizeof(q),
             "SELECT count(*) FROM (SELECT device_id FROM tele GROUP BY "
             "device_id HAVING sum(seq) = %llu AND count(*) = %u)",
             (unsigned long long)produced * (produced + 1) / 2, produced);
    assert_int_equal(th_db_int(t, q), n);
    double dups = 0;
    assert_int_equal(th_status_num(t, "ingest.duplicates", &dups), 0);
    printf("# soak: %d devices x %d s: %lld records, all stored exactly once "
           "(checksum per device ok); %u duplicates sent, %.0f absorbed\n",
           n, secs, (long long)rows, dups_sent, dups);
    for (int i = 0; i < n; i++)
        tdev_close(&d[i].v);
    free(d);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_soak_every_record_stored_exactly_once, pump_setup,
            pump_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
