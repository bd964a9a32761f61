/*
 * test_tmld_e2e.c: tmlctl against a real tmld behind the broker that
 * `tmlctl broker-config` configures, with certificates from `tmlctl pki`:
 *  - a provisioned device connects and its records land in tmld's database
 *    (seen through `tmlctl device show / devices / telemetry / status`);
 *  - I1 at the gateway: 1000 tele records devB forges on devA's topic,
 *    0 stored (counted by the attacker's PUBACKs and by tmld's counters);
 *  - tmlctl's control-socket client: --json output, exit codes (not found
 *    3, unknown verb 2, no daemon 5).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "rig.h"
#include "tml/proto.h"

#define N_RECORDS 20
#define N_FORGED 1000

static cJSON *
ctl_json(const char *fmt, const char *arg)
{
    char *out = NULL;
    int rc = rig_ctl(&out, fmt, arg);
    assert_int_equal(rc, 0);
    cJSON *j = cJSON_Parse(out);
    free(out);
    assert_non_null(j);
    return j;
}

static double
jpath(const cJSON *o, const char *a, const char *b)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b != NULL)
        x = cJSON_GetObjectItemCaseSensitive(x, b);
    return cJSON_IsNumber(x) ? x->valuedouble : cJSON_IsTrue(x) ? 1 : -1;
}

static int
setup(void **state)
{
    static struct rig r;
    *state = &r; /* first: teardown runs even if setup fails */
    rig_init(&r);
    rig_provision(&r, "devA", NULL);
    rig_provision(&r, "devB", NULL);
    rig_broker_start(&r);
    rig_tmld_start(&r, NULL);
    *state = &r;
    return 0;
}

static int
teardown(void **state)
{
    rig_stop(*state);
    return 0;
}

static void
publish_msg(struct cl *c, struct cl **others, size_t n_others,
            const char *topic, const uint8_t *buf, size_t len, bool retain)
{
    int want = c->puback_ok + c->puback_denied + 1;
    assert_int_equal(
        mosquitto_publish_v5(c->m, NULL, topic, (int)len, buf, 1, retain, NULL),
        MOSQ_ERR_SUCCESS);
    struct cl *all[4] = {c, NULL, NULL, NULL};
    for (size_t i = 0; others != NULL && i < n_others && i < 3; i++)
        all[i + 1] = others[i];
    for (int w = 0; c->puback_ok + c->puback_denied < want && w < 5000; w += 10)
        pump(all, n_others + 1, 10);
}

static size_t
tele(uint32_t seq, uint8_t *buf, size_t cap)
{
    struct tml_tele t;
    memset(&t, 0, sizeof(t));
    t.seq = seq;
    t.model_version = 3;
    t.period_s = 10;
    t.n_inferences = 50;
    t.n_low_conf = 2;
    t.lat_min_us = 1000;
    t.lat_mean_us = 2000;
    t.lat_max_us = 4000;
    size_t len = 0;
    assert_int_equal(tml_tele_encode(&t, buf, cap, &len), TML_OK);
    return len;
}

static void
test_status_shows_tls_broker_link(void **state)
{
    (void)state;
    cJSON *j = ctl_json("--json status%s", "");
    assert_int_equal(jpath(j, "mqtt", "connected"), 1);
    assert_int_equal(jpath(j, "mqtt", "tls"), 1);
    cJSON_Delete(j);
    char *out = NULL;
    assert_int_equal(rig_ctl(&out, "--no-color status"), 0);
    assert_non_null(strstr(out, "connected"));
    assert_non_null(strstr(out, "(TLS)"));
    assert_null(strchr(out, '\033')); /* not a TTY: no colour */
    free(out);
}

/* Records of a provisioned device land; 1000 forged by devB on devA's
 * topic do not (I1, counted at the broker and at tmld). */
static void
test_device_records_land_forgeries_do_not(void **state)
{
    (void)state;
    struct cl *a = dev_client("devA", NULL);
    struct cl *b = dev_client("devB", NULL);
    assert_int_equal(a->connack, 0);
    assert_int_equal(b->connack, 0);
    subscribe(a, "tml/v1/devA/down/#");
    struct tml_hello h;
    memset(&h, 0, sizeof(h));
    h.agent_version = 0x000100;
    h.hw = (struct tml_str){"nrf52840", 8};
    h.model = (struct tml_str){"kws", 3};
    h.model_version = 3;
    h.slot_size = 262144;
    h.arena_size = 65536;
    h.chunk_max = 1024;
    h.boot_count = 1;
    h.n_groups = 1;
    h.groups[0] = (struct tml_str){"turbines", 8};
    uint8_t buf[512];
    size_t len = 0;
    assert_int_equal(tml_hello_encode(&h, buf, sizeof(buf), &len), TML_OK);
    struct cl *o[] = {a, b};
    publish_msg(a, o, 2, "tml/v1/devA/up/hello", buf, len, true);
    for (uint32_t s = 1; s <= N_RECORDS; s++) {
        len = tele(s, buf, sizeof(buf));
        publish_msg(a, o, 2, "tml/v1/devA/up/tele", buf, len, false);
    }
    /* The forgeries: valid records, higher sequence numbers, devA's topic. */
    for (uint32_t i = 0; i < N_FORGED; i++) {
        len = tele(1000 + i, buf, sizeof(buf));
        assert_int_equal(mosquitto_publish_v5(b->m, NULL, "tml/v1/devA/up/tele",
                                              (int)len, buf, 1, false, NULL),
                         MOSQ_ERR_SUCCESS);
        if (i % 50 == 49)
            pump(o, 2, 1);
    }
    for (int w = 0; b->puback_ok + b->puback_denied < N_FORGED && w < 10000;
         w += 20)
        pump(o, 2, 20);
    assert_int_equal(b->puback_denied, N_FORGED);

    /* Wait until tmld committed devA's records (acked on down/ack). */
    /* Under load tmld may not even know devA yet (not_found, exit 3):
     * poll, bounded at 20 s. */
    cJSON *j = NULL;
    for (int i = 0; i < 400 && j == NULL; i++) {
        pump(o, 2, 50);
        char *out = NULL;
        int rc = rig_ctl(&out, "--json device show devA 2>/dev/null");
        assert_true(rc == 0 || rc == 3);
        if (rc == 0) {
            j = cJSON_Parse(out);
            assert_non_null(j);
            if (jpath(j, "device", "tele_seq") < N_RECORDS) {
                cJSON_Delete(j);
                j = NULL;
            }
        }
        free(out);
    }
    assert_non_null(j);
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "device");
    /* The forged records carried seq 1000..1999: the committed high-water
     * mark stays at devA's own last record. */
    assert_int_equal(jpath(j, "device", "tele_seq"), N_RECORDS);
    /* Recent summaries (hourly rollup, last 24 h) account for every stored
     * record of devA, and for none of the forged ones. */
    {
        const cJSON *rec = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(j, "device"), "recent");
        const cJSON *hr;
        double n_sum = 0;
        assert_true(cJSON_GetArraySize(rec) >= 1);
        cJSON_ArrayForEach(hr, rec)
            n_sum += cJSON_GetObjectItemCaseSensitive(hr, "summaries")
                         ->valuedouble;
        assert_int_equal((int)n_sum, N_RECORDS);
    }
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(d, "hw")->valuestring,
                        "nrf52840");
    assert_true(a->msgs >= 1); /* cumulative acks on down/ack */
    cJSON_Delete(j);

    /* The same facts through the operator's views. */
    char *out = NULL;
    assert_int_equal(rig_ctl(&out, "--no-color devices --group turbines"), 0);
    assert_non_null(strstr(out, "devA"));
    assert_non_null(strstr(out, "online"));
    assert_non_null(strstr(out, "kws v3"));
    assert_null(strstr(out, "devB"));
    free(out);
    j = ctl_json("--json telemetry --device %s --since 1h", "devA");
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(j, "rows");
    assert_int_equal(cJSON_GetArraySize(rows), 1);
    double summaries = jpath(cJSON_GetArrayItem(rows, 0), "summaries", NULL);
    assert_int_equal(jpath(cJSON_GetArrayItem(rows, 0), "inferences", NULL),
                     N_RECORDS * 50);
    cJSON_Delete(j);
    j = ctl_json("--json status%s", "");
    print_message("I1 at tmld: devA sent %d records, devB forged %d on "
                  "devA's topic (%d denied by the broker); tmld stored %.0f "
                  "summaries for devA, ingest counted %.0f records in "
                  "total; devA got %d acks\n",
                  N_RECORDS, N_FORGED, b->puback_denied, summaries,
                  jpath(j, "ingest", "tele"), a->msgs);
    assert_int_equal(summaries, N_RECORDS);
    assert_int_equal(jpath(j, "ingest", "tele"), N_RECORDS);
    assert_int_equal(jpath(j, "devices", "total"), 1);
    cJSON_Delete(j);
    j = ctl_json("--json groups%s", "");
    const cJSON *g =
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "groups"), 0);
    assert_non_null(g);
    assert_int_equal(jpath(g, "devices", NULL), 1);
    cJSON_Delete(j);
    client_free(a);
    client_free(b);
}

/* I3 at the gateway: a certificate with CN "a/b" (issued behind tmlctl's
 * back, which refuses it) may publish under tml/v1/a/b/up/ as far as the
 * broker's %u pattern goes; tmld's topic parser refuses every message:
 * no device, no record. */
static void
test_slash_cn_records_refused_by_tmld(void **state)
{
    struct rig *r = *state;
    assert_int_equal(
        sh("cd %s && openssl ecparam -name prime256v1 -genkey -noout -out "
           "slash.key && openssl req -new -key slash.key -subj '/CN=a\\/b' "
           "-out slash.csr && printf 'extendedKeyUsage=clientAuth\\n' > "
           "slash.ext && openssl x509 -req -in slash.csr -CA pki/ca.crt "
           "-CAkey pki/ca.key -CAcreateserial -days 2 -sha256 -extfile "
           "slash.ext -out slash.crt 2>/dev/null",
           r->dir),
        0);
    assert_int_equal(sh("cd %s && openssl x509 -in slash.crt -noout -subject "
                        "| grep -q 'CN = a/b'",
                        r->dir),
                     0);
    cJSON *j = ctl_json("--json status%s", "");
    double tele_before = jpath(j, "ingest", "tele");
    double total_before = jpath(j, "devices", "total");
    cJSON_Delete(j);
    char ca[256], crt[256], key[256];
    snprintf(ca, sizeof(ca), "%s/ca.crt", r->pki);
    snprintf(crt, sizeof(crt), "%s/slash.crt", r->dir);
    snprintf(key, sizeof(key), "%s/slash.key", r->dir);
    struct cl *c = client("x", ca, crt, key);
    struct cl *cs[] = {c};
    for (int w = 0; c->connack < 0 && !c->dead && w < 5000; w += 20)
        pump(cs, 1, 20);
    assert_int_equal(c->connack, 0);
    uint8_t buf[512];
    int sent = 0;
    for (uint32_t s = 1; s <= 10; s++) {
        size_t len = tele(s, buf, sizeof(buf));
        publish_msg(c, NULL, 0, "tml/v1/a/b/up/tele", buf, len, false);
        sent++;
    }
    pump(cs, 1, 500);
    j = ctl_json("--json status%s", "");
    double tele_after = jpath(j, "ingest", "tele");
    double total_after = jpath(j, "devices", "total");
    cJSON_Delete(j);
    /* (tmld subscribes tml/v1/+/up/#, which an extra level does not even
     * match; its topic parser would refuse it as well.) */
    struct tml_topic tp;
    assert_int_not_equal(tml_topic_parse("tml/v1/a/b/up/tele", 18, &tp),
                         TML_OK);
    print_message("I3 at tmld: CN 'a/b' published %d records on "
                  "tml/v1/a/b/up/tele (broker accepted %d); tmld stored "
                  "%.0f, new devices %.0f\n",
                  sent, c->puback_ok, tele_after - tele_before,
                  total_after - total_before);
    assert_int_equal(tele_after, tele_before);
    assert_int_equal(total_after, total_before);
    client_free(c);
}

static void
test_exit_codes_follow_the_protocol(void **state)
{
    struct rig *r = *state;
    char *out = NULL;
    /* not_found -> 3 */
    assert_int_equal(rig_ctl(NULL, "device show nosuchdevice 2>/dev/null"), 3);
    /* a verb this tmld does not have -> 2 (unknown_cmd), if it lacks it */
    int rc = rig_ctl(&out, "samples list 2>/dev/null");
    assert_true(rc == 0 || rc == 2);
    free(out);
    /* No daemon at the socket -> 5, with a hint on stderr. */
    assert_int_equal(sh("%s --socket %s/nope.sock status 2>%s/err.txt",
                        r->tmlctl, r->dir, r->dir),
                     5);
    assert_int_equal(sh("grep -q 'hint:' %s/err.txt", r->dir), 0);
    /* Bad arguments never reach tmld: 2. */
    assert_int_equal(rig_ctl(NULL, "devices --limit 0 2>/dev/null"), 2);
    assert_int_equal(rig_ctl(NULL, "devices --bogus 2>/dev/null"), 2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_shows_tls_broker_link),
        cmocka_unit_test(test_device_records_land_forgeries_do_not),
        cmocka_unit_test(test_slash_cn_records_refused_by_tmld),
        cmocka_unit_test(test_exit_codes_follow_the_protocol),
    };
    return cmocka_run_group_tests_name("tmlctl_tmld_e2e", tests, setup,
                                       teardown);
}
