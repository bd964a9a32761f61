/*
 * main.c: tml-devsim, N simulated TinyML devices in one process.
 *
 * Each device is a real libtmlagent instance with its own state directory
 * and its own TLS MQTT connection; one epoll loop (net.c) drives every
 * socket, so there is no thread per device and no select() limit. This file
 * owns option parsing, the run phases (connect + produce, drain, shutdown),
 * the status line and the JSON summary. Every phase is bounded in time, so
 * the program always stops by itself.
 */
#define _POSIX_C_SOURCE 200809L
#include "devsim.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <mosquitto.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/ecp.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>

#include "certs.h"
#include "synth.h"

static volatile sig_atomic_t got_signal;

static void
on_signal(int sig)
{
    got_signal = sig;
}

uint64_t
sim_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
usage(FILE *f)
{
    fputs(
        "usage: tml-devsim --port P --cafile CA.crt --state-dir DIR\n"
        "                  (--certs DIR | --ca-cert CA.crt --ca-key CA.key)\n"
        "                  [options]\n"
        "Runs N simulated devices (real libtmlagent instances) against an\n"
        "MQTT/TLS broker. It always stops by itself: after --duration or\n"
        "--count, then up to --drain seconds waiting for acknowledgements.\n"
        "\n"
        "connection:\n"
        "  --host H              broker address (127.0.0.1)\n"
        "  --port P              broker TLS port\n"
        "  --cafile F            CA that signed the broker certificate\n"
        "  --certs DIR           device certificates DIR/<id>.crt, <id>.key\n"
        "  --ca-cert F --ca-key F  mint device certificates with this CA\n"
        "                        (cached in the state directory)\n"
        "  --keepalive S         MQTT keepalive seconds (30)\n"
        "  --connect-rate N      new connections per second (500)\n"
        "fleet:\n"
        "  --devices N           number of devices (default: sum of groups,\n"
        "                        or 1)\n"
        "  --prefix P            device id prefix (\"sim-\"); ids are\n"
        "                        P0001, P0002, ... (5+ digits past 9999)\n"
        "  --first K             index of the first device (1)\n"
        "  --groups g:n,...      the first n devices declare group g, the\n"
        "                        next ones the following group\n"
        "  --state-dir DIR       per-device state (slots, agent state, certs)\n"
        "  --hw NAME             hardware target (devsim)\n"
        "  --slot-size BYTES     model slot size (262144)\n"
        "  --arena BYTES         tensor arena the device offers (65536)\n"
        "  --trust-key FILE      trusted operator public key (PEM, P-256);\n"
        "                        give it twice for two key slots (S12)\n"
        "scenario:\n"
        "  --rate HZ             inferences per second per device (1)\n"
        "  --classes N           model classes (4)\n"
        "  --behaviour FILE      per-model behaviour (ini, docs/devsim.md)\n"
        "  --summary-period S    telemetry summary period (10)\n"
        "  --input-bytes N       captured input window bytes (2048)\n"
        "  --flap-mean S         mean seconds between link cuts (0 = off)\n"
        "  --flap-down MS        how long a cut link stays down (2000)\n"
        "  --reboot-mean S       mean seconds between reboots (0 = off)\n"
        "  --sample-budget N     captures per budget period (4)\n"
        "  --budget-period S     capture budget period (30)\n"
        "  --conf-threshold BP   low-confidence threshold, bp (5000)\n"
        "  --misbehave SHARE     share of devices that also publish garbage\n"
        "                        and replayed records (0)\n"
        "  --ack-timeout MS      resend unacked records after MS (agent\n"
        "                        default)\n"
        "  --ota-chunk B         OTA chunk bytes the agent asks for (4096)\n"
        "  --ota-window N        chunks per OTA request (1)\n"
        "  --sha256 PORT         mbedtls: the agent's mbedTLS port (a device\n"
        "                        hashing in software); host: OpenSSL (SHA\n"
        "                        instructions; a device with a hash engine)\n"
        "                        (mbedtls)\n"
        "  --ota-flood N         publish every OTA chunk request N more\n"
        "                        times (a device stuck in a loop) (0)\n"
        "  --seed N              random seed (1)\n"
        "bounds and output:\n"
        "  --duration S          produce for S seconds\n"
        "  --count N             or: N inferences per device\n"
        "  --drain S             then wait up to S s for acks (30)\n"
        "  --status S            status line on stderr every S s (5, 0 off)\n"
        "  --json-summary FILE   final per-device counts as JSON\n"
        "  --reserve-fds N       hold N descriptors open first, so device\n"
        "                        sockets get numbers above select()'s 1024\n"
        "                        even in a small run (tests)\n",
        f);
}

enum opt_id {
    O_HOST = 256, O_PORT, O_CAFILE, O_CERTS, O_CA_CERT, O_CA_KEY,
    O_KEEPALIVE, O_CONNECT_RATE, O_DEVICES, O_PREFIX, O_FIRST, O_GROUPS,
    O_STATE_DIR, O_HW, O_SLOT_SIZE, O_ARENA, O_TRUST_KEY, O_MODEL, O_RATE,
    O_CLASSES, O_BEHAVIOUR, O_SUMMARY_PERIOD, O_INPUT_BYTES, O_FLAP_MEAN,
    O_FLAP_DOWN, O_REBOOT_MEAN, O_SEED, O_DURATION, O_COUNT, O_DRAIN,
    O_STATUS, O_JSON, O_SAMPLE_BUDGET, O_BUDGET_PERIOD, O_CONF_THRESHOLD,
    O_MISBEHAVE, O_ACK_TIMEOUT, O_RESERVE_FDS, O_OTA_CHUNK, O_OTA_WINDOW,
    O_OTA_FLOOD, O_SHA256, O_HELP
};

static const struct option long_opts[] = {
    {"host", required_argument, NULL, O_HOST},
    {"port", required_argument, NULL, O_PORT},
    {"cafile", required_argument, NULL, O_CAFILE},
    {"certs", required_argument, NULL, O_CERTS},
    {"ca-cert", required_argument, NULL, O_CA_CERT},
    {"ca-key", required_argument, NULL, O_CA_KEY},
    {"keepalive", required_argument, NULL, O_KEEPALIVE},
    {"connect-rate", required_argument, NULL, O_CONNECT_RATE},
    {"devices", required_argument, NULL, O_DEVICES},
    {"prefix", required_argument, NULL, O_PREFIX},
    {"first", required_argument, NULL, O_FIRST},
    {"groups", required_argument, NULL, O_GROUPS},
    {"state-dir", required_argument, NULL, O_STATE_DIR},
    {"hw", required_argument, NULL, O_HW},
    {"slot-size", required_argument, NULL, O_SLOT_SIZE},
    {"arena", required_argument, NULL, O_ARENA},
    {"trust-key", required_argument, NULL, O_TRUST_KEY},
    {"rate", required_argument, NULL, O_RATE},
    {"classes", required_argument, NULL, O_CLASSES},
    {"behaviour", required_argument, NULL, O_BEHAVIOUR},
    {"behavior", required_argument, NULL, O_BEHAVIOUR},
    {"summary-period", required_argument, NULL, O_SUMMARY_PERIOD},
    {"input-bytes", required_argument, NULL, O_INPUT_BYTES},
    {"flap-mean", required_argument, NULL, O_FLAP_MEAN},
    {"flap-down", required_argument, NULL, O_FLAP_DOWN},
    {"reboot-mean", required_argument, NULL, O_REBOOT_MEAN},
    {"seed", required_argument, NULL, O_SEED},
    {"duration", required_argument, NULL, O_DURATION},
    {"count", required_argument, NULL, O_COUNT},
    {"drain", required_argument, NULL, O_DRAIN},
    {"status", required_argument, NULL, O_STATUS},
    {"json-summary", required_argument, NULL, O_JSON},
    {"sample-budget", required_argument, NULL, O_SAMPLE_BUDGET},
    {"budget-period", required_argument, NULL, O_BUDGET_PERIOD},
    {"conf-threshold", required_argument, NULL, O_CONF_THRESHOLD},
    {"misbehave", required_argument, NULL, O_MISBEHAVE},
    {"ack-timeout", required_argument, NULL, O_ACK_TIMEOUT},
    {"ota-chunk", required_argument, NULL, O_OTA_CHUNK},
    {"ota-window", required_argument, NULL, O_OTA_WINDOW},
    {"ota-flood", required_argument, NULL, O_OTA_FLOOD},
    {"sha256", required_argument, NULL, O_SHA256},
    {"reserve-fds", required_argument, NULL, O_RESERVE_FDS},
    {"help", no_argument, NULL, O_HELP},
    {NULL, 0, NULL, 0},
};

static int
arg_u64(const char *name, const char *v, uint64_t max, uint64_t *out)
{
    char *end = NULL;
    unsigned long long x;

    errno = 0;
    x = strtoull(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || v[0] == '-' || x > max) {
        fprintf(stderr, "tml-devsim: --%s: expected an integer 0..%llu, "
                        "got \"%s\"\n",
                name, (unsigned long long)max, v);
        return -1;
    }
    *out = x;
    return 0;
}

static int
arg_u32(const char *name, const char *v, uint32_t max, uint32_t *out)
{
    uint64_t x;

    if (arg_u64(name, v, max, &x) != 0)
        return -1;
    *out = (uint32_t)x;
    return 0;
}

static int
arg_double(const char *name, const char *v, double max, double *out)
{
    char *end = NULL;
    double x;

    errno = 0;
    x = strtod(v, &end);
    if (errno != 0 || end == v || *end != '\0' || !(x >= 0.0) || x > max) {
        fprintf(stderr, "tml-devsim: --%s: expected a number 0..%g, got "
                        "\"%s\"\n",
                name, max, v);
        return -1;
    }
    *out = x;
    return 0;
}

static int
parse_groups(struct sim_opts *o, const char *v)
{
    char buf[512];
    char *save = NULL, *tok;

    if (strlen(v) >= sizeof(buf)) {
        fprintf(stderr, "tml-devsim: --groups: too long\n");
        return -1;
    }
    strcpy(buf, v);
    o->n_groups = 0;
    for (tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':');
        struct sim_group *g;
        size_t len;

        if (colon == NULL || o->n_groups >= SIM_MAX_GROUPS) {
            fprintf(stderr, "tml-devsim: --groups: expected name:count,... "
                            "(at most %d groups)\n",
                    SIM_MAX_GROUPS);
            return -1;
        }
        *colon = '\0';
        len = strlen(tok);
        g = &o->groups[o->n_groups];
        if (len == 0 || len >= sizeof(g->name) ||
            !tml_device_id_valid(tok, len)) {
            fprintf(stderr, "tml-devsim: --groups: bad group name \"%s\"\n",
                    tok);
            return -1;
        }
        memcpy(g->name, tok, len + 1);
        if (arg_u32("groups", colon + 1, 1000000, &g->n) != 0)
            return -1;
        o->n_groups++;
    }
    return 0;
}

/* FILE: a PEM public key (P-256). Its key id is the first 8 bytes of the
 * SHA-256 of the raw 65-byte point, as tmlctl keygen/deploy use it. */
static int
parse_trust_key(struct sim_opts *o, const char *v)
{
    struct sim_key *k;
    mbedtls_pk_context pk;
    uint8_t digest[32];
    size_t olen = 0;
    int rc;

    if (o->n_keys >= SIM_MAX_KEYS) {
        fprintf(stderr, "tml-devsim: --trust-key: at most %d keys\n",
                SIM_MAX_KEYS);
        return -1;
    }
    k = &o->keys[o->n_keys];
    mbedtls_pk_init(&pk);
    rc = mbedtls_pk_parse_public_keyfile(&pk, v);
    if (rc == 0 && mbedtls_pk_get_type(&pk) != MBEDTLS_PK_ECKEY)
        rc = -1;
    if (rc == 0 && mbedtls_pk_ec(pk)->grp.id != MBEDTLS_ECP_DP_SECP256R1)
        rc = -1;
    if (rc == 0)
        rc = mbedtls_ecp_point_write_binary(
            &mbedtls_pk_ec(pk)->grp, &mbedtls_pk_ec(pk)->Q,
            MBEDTLS_ECP_PF_UNCOMPRESSED, &olen, k->pub, sizeof(k->pub));
    mbedtls_pk_free(&pk);
    if (rc != 0 || olen != sizeof(k->pub)) {
        fprintf(stderr, "tml-devsim: --trust-key: %s is not a P-256 public "
                        "key (PEM)\n",
                v);
        return -1;
    }
    if (mbedtls_sha256_ret(k->pub, sizeof(k->pub), digest, 0) != 0)
        return -1;
    memcpy(k->kid, digest, 8);
    k->kid_len = 8;
    o->n_keys++;
    return 0;
}

static int
parse_args(struct sim_opts *o, int argc, char **argv)
{
    uint64_t u64;
    int c;

    memset(o, 0, sizeof(*o));
    o->host = "127.0.0.1";
    o->prefix = "sim-";
    o->first = 1;
    o->rate_hz = 1.0;
    o->n_classes = 4;
    o->summary_period_s = 10;
    o->input_bytes = 2048;
    o->input_rate_hz = 8000;
    o->flap_down_ms = 2000;
    o->drain_s = 30.0;
    o->status_s = 5.0;
    o->seed = 1;
    o->connect_rate = 500;
    o->keepalive_s = 30;
    o->hw = "devsim";
    o->slot_size = 262144;
    o->arena_size = 65536;
    o->sample_budget = 4;
    o->budget_period_s = 30;
    o->conf_threshold_bp = 5000;

    while ((c = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
        int rc = 0;

        switch (c) {
        case O_HOST: o->host = optarg; break;
        case O_PORT:
            rc = arg_u64("port", optarg, 65535, &u64);
            o->port = (int)u64;
            break;
        case O_CAFILE: o->cafile = optarg; break;
        case O_CERTS: o->certs_dir = optarg; break;
        case O_CA_CERT: o->ca_cert = optarg; break;
        case O_CA_KEY: o->ca_key = optarg; break;
        case O_KEEPALIVE:
            rc = arg_u64("keepalive", optarg, 3600, &u64);
            o->keepalive_s = (int)u64;
            break;
        case O_CONNECT_RATE:
            rc = arg_u32("connect-rate", optarg, 100000, &o->connect_rate);
            break;
        case O_DEVICES:
            rc = arg_u32("devices", optarg, 100000, &o->n_devices);
            break;
        case O_PREFIX: o->prefix = optarg; break;
        case O_FIRST:
            rc = arg_u32("first", optarg, 10000000, &o->first);
            break;
        case O_GROUPS: rc = parse_groups(o, optarg); break;
        case O_STATE_DIR: o->state_dir = optarg; break;
        case O_HW: o->hw = optarg; break;
        case O_SLOT_SIZE:
            rc = arg_u32("slot-size", optarg, 64u << 20, &o->slot_size);
            break;
        case O_ARENA:
            rc = arg_u32("arena", optarg, UINT32_MAX, &o->arena_size);
            break;
        case O_TRUST_KEY: rc = parse_trust_key(o, optarg); break;
        case O_RATE: rc = arg_double("rate", optarg, 1000.0, &o->rate_hz); break;
        case O_CLASSES:
            rc = arg_u32("classes", optarg, TML_MAX_CLASSES, &o->n_classes);
            break;
        case O_BEHAVIOUR: o->behave_path = optarg; break;
        case O_SUMMARY_PERIOD:
            rc = arg_u32("summary-period", optarg, 86400,
                         &o->summary_period_s);
            break;
        case O_INPUT_BYTES:
            rc = arg_u32("input-bytes", optarg, 1u << 20, &o->input_bytes);
            break;
        case O_FLAP_MEAN:
            rc = arg_double("flap-mean", optarg, 1e6, &o->flap_mean_s);
            break;
        case O_FLAP_DOWN:
            rc = arg_u32("flap-down", optarg, 3600000, &o->flap_down_ms);
            break;
        case O_REBOOT_MEAN:
            rc = arg_double("reboot-mean", optarg, 1e6, &o->reboot_mean_s);
            break;
        case O_SEED: rc = arg_u64("seed", optarg, UINT64_MAX, &o->seed); break;
        case O_DURATION:
            rc = arg_double("duration", optarg, 7 * 86400.0, &o->duration_s);
            break;
        case O_COUNT: rc = arg_u64("count", optarg, UINT32_MAX, &o->count); break;
        case O_DRAIN: rc = arg_double("drain", optarg, 3600.0, &o->drain_s); break;
        case O_STATUS: rc = arg_double("status", optarg, 3600.0, &o->status_s); break;
        case O_JSON: o->json_path = optarg; break;
        case O_SAMPLE_BUDGET:
            rc = arg_u32("sample-budget", optarg, 1000000, &o->sample_budget);
            break;
        case O_BUDGET_PERIOD:
            rc = arg_u32("budget-period", optarg, 86400, &o->budget_period_s);
            break;
        case O_CONF_THRESHOLD:
            rc = arg_u32("conf-threshold", optarg, 10000,
                         &o->conf_threshold_bp);
            break;
        case O_RESERVE_FDS:
            rc = arg_u32("reserve-fds", optarg, 16384, &o->reserve_fds);
            break;
        case O_ACK_TIMEOUT:
            rc = arg_u32("ack-timeout", optarg, 3600000, &o->ack_timeout_ms);
            break;
        case O_OTA_CHUNK:
            rc = arg_u32("ota-chunk", optarg, TML_CHUNK_MAX, &o->ota_chunk);
            break;
        case O_OTA_WINDOW:
            rc = arg_u32("ota-window", optarg, 64, &o->ota_window);
            break;
        case O_OTA_FLOOD:
            rc = arg_u32("ota-flood", optarg, 1000, &o->ota_flood);
            break;
        case O_SHA256:
            if (strcmp(optarg, "host") == 0 || strcmp(optarg, "mbedtls") == 0) {
                o->host_sha256 = optarg[0] == 'h';
            } else {
                fprintf(stderr, "tml-devsim: --sha256 takes mbedtls or host, "
                                "not \"%s\"\n", optarg);
                rc = -1;
            }
            break;
        case O_MISBEHAVE:
            rc = arg_double("misbehave", optarg, 1.0, &o->misbehave);
            break;
        case O_HELP:
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
        if (rc != 0)
            return -1;
    }
    if (optind != argc) {
        fprintf(stderr, "tml-devsim: unexpected argument \"%s\"\n",
                argv[optind]);
        return -1;
    }
    if (o->port == 0 || o->cafile == NULL || o->state_dir == NULL) {
        fprintf(stderr, "tml-devsim: --port, --cafile and --state-dir are "
                        "required (see --help)\n");
        return -1;
    }
    if ((o->certs_dir == NULL) == (o->ca_cert == NULL || o->ca_key == NULL)) {
        fprintf(stderr, "tml-devsim: give either --certs DIR or both "
                        "--ca-cert and --ca-key\n");
        return -1;
    }
    if (o->duration_s <= 0.0 && o->count == 0) {
        fprintf(stderr, "tml-devsim: give --duration or --count so the run "
                        "ends by itself\n");
        return -1;
    }
    if (o->n_devices == 0) {
        size_t i;
        for (i = 0; i < o->n_groups; i++)
            o->n_devices += o->groups[i].n;
        if (o->n_devices == 0)
            o->n_devices = 1;
    }
    if (strlen(o->prefix) + 8 > SIM_MAX_ID ||
        !tml_device_id_valid(o->prefix, strlen(o->prefix))) {
        fprintf(stderr, "tml-devsim: --prefix: [A-Za-z0-9._-], at most %d "
                        "characters\n",
                SIM_MAX_ID - 8);
        return -1;
    }
    if (o->n_classes == 0)
        o->n_classes = 1;
    if (o->summary_period_s == 0)
        o->summary_period_s = 1;
    if (o->connect_rate == 0)
        o->connect_rate = 1;
    return 0;
}

/* Each device holds a TLS socket plus libmosquitto's internal socket pair,
 * and the broker may be in the same limits: ask for the hard limit. */
static void
raise_fd_limit(uint32_t n_devices)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < (rlim_t)n_devices * 3u + 64u)
        fprintf(stderr, "tml-devsim: warning: file descriptor limit %lu is "
                        "too low for %u devices (need about %u)\n",
                (unsigned long)rl.rlim_cur, n_devices, n_devices * 3u + 64u);
}

static void
status_line(struct sim *s, const char *phase, uint64_t *last_pub,
            uint64_t *last_ms)
{
    struct sim_totals t;
    struct rusage ru;
    uint32_t i;
    double dt, rate;

    memset(&t, 0, sizeof(t));
    for (i = 0; i < s->n_devs; i++)
        dev_add_totals(dev_at(s, i), &t);
    getrusage(RUSAGE_SELF, &ru);
    dt = (double)(s->now_ms - *last_ms) / 1000.0;
    rate = dt > 0 ? (double)(t.publishes - *last_pub) / dt : 0.0;
    fprintf(stderr,
            "devsim: %s t=%.1fs connected=%u/%u tele sent=%llu acked=%llu "
            "resent=%llu folded=%llu samples sent=%llu acked=%llu "
            "msgs/s=%.0f flaps=%llu reboots=%llu rss=%ldMB\n",
            phase, (double)s->now_ms / 1000.0, t.connected, s->n_devs,
            (unsigned long long)t.tele_sent, (unsigned long long)t.tele_acked,
            (unsigned long long)t.tele_resent,
            (unsigned long long)t.tele_folded,
            (unsigned long long)t.samples_sent,
            (unsigned long long)t.samples_acked, rate,
            (unsigned long long)t.flaps, (unsigned long long)t.reboots,
            ru.ru_maxrss / 1024);
    *last_pub = t.publishes;
    *last_ms = s->now_ms;
}

static int
write_json(struct sim *s, const char *path, double produce_s, double cpu_s)
{
    struct sim_totals t;
    struct rusage ru;
    char tmp[PATH_MAX];
    FILE *f;
    uint32_t i;

    memset(&t, 0, sizeof(t));
    for (i = 0; i < s->n_devs; i++)
        dev_add_totals(dev_at(s, i), &t);
    getrusage(RUSAGE_SELF, &ru);
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return -1;
    f = fopen(tmp, "w");
    if (f == NULL)
        return -1;
    fprintf(f,
            "{\n \"devices\": %u,\n \"elapsed_s\": %.3f,\n"
            " \"produce_s\": %.3f,\n \"cpu_s\": %.3f,\n"
            " \"max_rss_kb\": %ld,\n \"all_connected_s\": %.3f,\n"
            " \"max_socket_fd\": %d,\n"
            " \"totals\": {\"tele_sent\": %llu, "
            "\"tele_acked\": %llu, \"tele_resent\": %llu, \"tele_folded\": "
            "%llu, \"samples_sent\": %llu, \"samples_acked\": %llu, "
            "\"samples_resent\": %llu, \"publishes\": %llu, "
            "\"publish_bytes\": %llu, \"inferences\": %llu, \"connects\": "
            "%llu, \"disconnects\": %llu, \"flaps\": %llu, \"reboots\": "
            "%llu, \"lost_on_reboot\": %llu, \"acks_in\": %llu, "
            "\"connected_at_end\": %u},\n \"per_device\": [\n",
            s->n_devs, (double)s->now_ms / 1000.0, produce_s, cpu_s,
            ru.ru_maxrss, (double)s->all_connected_ms / 1000.0,
            s->net.max_fd,
            (unsigned long long)t.tele_sent,
            (unsigned long long)t.tele_acked,
            (unsigned long long)t.tele_resent,
            (unsigned long long)t.tele_folded,
            (unsigned long long)t.samples_sent,
            (unsigned long long)t.samples_acked,
            (unsigned long long)t.samples_resent,
            (unsigned long long)t.publishes,
            (unsigned long long)t.publish_bytes,
            (unsigned long long)t.inferences, (unsigned long long)t.connects,
            (unsigned long long)t.disconnects, (unsigned long long)t.flaps,
            (unsigned long long)t.reboots,
            (unsigned long long)t.lost_on_reboot,
            (unsigned long long)t.acks_in, t.connected);
    for (i = 0; i < s->n_devs; i++) {
        fputs("  ", f);
        dev_write_json(dev_at(s, i), f);
        fputs(i + 1 < s->n_devs ? ",\n" : "\n", f);
    }
    fputs(" ]\n}\n", f);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static double
cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

/* Connection attempts are a fleet-wide token bucket (connect_rate per
 * second, burst of one second's worth): thousands of simultaneous TLS
 * handshakes would only time out against each other. */
static void
refill_tokens(struct sim *s)
{
    double dt = (double)(s->now_ms - s->tokens_ms) / 1000.0;

    s->connect_tokens += dt * (double)s->o.connect_rate;
    if (s->connect_tokens > (double)s->o.connect_rate)
        s->connect_tokens = (double)s->o.connect_rate;
    s->tokens_ms = s->now_ms;
}

static bool
all_drained(struct sim *s)
{
    uint32_t i;

    for (i = 0; i < s->n_devs; i++)
        if (!dev_is_drained(dev_at(s, i)))
            return false;
    return true;
}

int
main(int argc, char **argv)
{
    static struct sim sim;
    struct sim *s = &sim;
    char err[512];
    uint64_t last_pub = 0, last_status_ms = 0, next_status_ms;
    uint64_t produce_end_ms = 0, drain_end_ms, hard_end_ms;
    double produce_s = 0, cpu0;
    uint32_t i, n_setup = 0;
    int rc = 1;

    if (parse_args(&s->o, argc, argv) != 0)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    raise_fd_limit(s->o.n_devices + s->o.reserve_fds);
    for (i = 0; i < s->o.reserve_fds; i++) {
        /* Held until exit (the kernel closes them): the point is only that
         * they take the low descriptor numbers. */
        if (open("/dev/null", O_RDONLY | O_CLOEXEC) < 0) {
            fprintf(stderr, "tml-devsim: --reserve-fds: %s\n",
                    strerror(errno));
            return 2;
        }
    }
    behave_init(&s->behave);
    if (s->o.behave_path &&
        behave_parse_file(&s->behave, s->o.behave_path) != 0) {
        fprintf(stderr, "tml-devsim: %s:%d: %s\n", s->o.behave_path,
                s->behave.err_line, s->behave.err_what);
        return 2;
    }
    if (mkdir(s->o.state_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "tml-devsim: %s: %s\n", s->o.state_dir,
                strerror(errno));
        return 2;
    }
    if (s->o.ca_cert) {
        s->ca = certs_ca_load(s->o.ca_cert, s->o.ca_key, err, sizeof(err));
        if (s->ca == NULL) {
            fprintf(stderr, "tml-devsim: %s\n", err);
            return 2;
        }
    }
    mosquitto_lib_init();
    if (net_init(&s->net) != 0) {
        fprintf(stderr, "tml-devsim: epoll: %s\n", strerror(errno));
        goto out;
    }
    s->devs = calloc(s->o.n_devices, dev_size());
    if (s->devs == NULL) {
        fprintf(stderr, "tml-devsim: out of memory for %u devices\n",
                s->o.n_devices);
        goto out;
    }
    /* The agent needs at least one trusted key. Without --trust-key the
     * devices trust a placeholder that is not a valid point, so no manifest
     * can ever verify (every offer is refused as unknown key). */
    if (s->o.n_keys == 0) {
        static const char none[] = "devsim-none";
        memcpy(s->keys[0].kid, none, sizeof(none) - 1);
        s->keys[0].kid_len = (uint8_t)(sizeof(none) - 1);
        s->keys[0].pub[0] = 0x04;
        s->n_keys = 1;
    } else {
        s->n_keys = s->o.n_keys;
    }
    for (i = 0; i < s->o.n_keys; i++) {
        memcpy(s->keys[i].kid, s->o.keys[i].kid, s->o.keys[i].kid_len);
        s->keys[i].kid_len = (uint8_t)s->o.keys[i].kid_len;
        memcpy(s->keys[i].pub, s->o.keys[i].pub, sizeof(s->keys[i].pub));
    }
    if (s->o.input_bytes > 0) {
        struct synth_rng r;
        s->tones = malloc((size_t)s->o.n_classes * s->o.input_bytes);
        s->scratch = malloc(s->o.input_bytes);
        if (s->tones == NULL || s->scratch == NULL) {
            fprintf(stderr, "tml-devsim: out of memory\n");
            goto out;
        }
        synth_seed(&r, s->o.seed);
        for (i = 0; i < s->o.n_classes; i++)
            synth_input(&r, i, s->o.input_rate_hz,
                        s->tones + (size_t)i * s->o.input_bytes,
                        s->o.input_bytes);
    }
    s->t0_ms = sim_mono_ms();
    s->is_producing = true;
    for (i = 0; i < s->o.n_devices; i++) {
        if (dev_setup(s, dev_at(s, i), i, err, sizeof(err)) != 0) {
            fprintf(stderr, "tml-devsim: %s\n", err);
            goto out;
        }
        n_setup++;
        s->n_devs = n_setup;
    }
    s->t0_ms = sim_mono_ms();
    s->now_ms = 0;
    cpu0 = cpu_seconds();
    if (s->o.duration_s > 0)
        produce_end_ms = (uint64_t)(s->o.duration_s * 1000.0);
    /* With only --count, production ends when every device has made its
     * inferences; bound it anyway by the time that should take, times 3,
     * plus a minute for connecting. */
    hard_end_ms = produce_end_ms;
    if (s->o.count > 0) {
        uint64_t need = (uint64_t)((double)s->o.count /
                                   (s->o.rate_hz > 0 ? s->o.rate_hz : 1.0) *
                                   3000.0) + 60000u;
        if (hard_end_ms == 0 || need < hard_end_ms)
            hard_end_ms = need;
    }
    next_status_ms = s->o.status_s > 0 ? (uint64_t)(s->o.status_s * 1000.0)
                                       : UINT64_MAX;
    /* Phase 1: connect and produce. */
    while (!got_signal) {
        uint64_t next = s->now_ms + 50;
        bool all_done = s->o.count > 0;

        s->now_ms = sim_mono_ms() - s->t0_ms;
        if ((produce_end_ms && s->now_ms >= produce_end_ms) ||
            s->now_ms >= hard_end_ms)
            break;
        refill_tokens(s);
        for (i = 0; i < s->n_devs; i++) {
            uint64_t t = dev_tick(s, dev_at(s, i));
            if (t < next)
                next = t;
            if (all_done && !dev_is_done(dev_at(s, i)))
                all_done = false;
        }
        if (all_done)
            break;
        if (s->now_ms >= next_status_ms) {
            status_line(s, "run", &last_pub, &last_status_ms);
            next_status_ms += (uint64_t)(s->o.status_s * 1000.0);
        }
        s->now_ms = sim_mono_ms() - s->t0_ms;
        net_run_once(&s->net, next > s->now_ms ? (int)(next - s->now_ms) : 0);
    }
    produce_s = (double)s->now_ms / 1000.0;
    /* Phase 2: stop producing, flush open summaries, wait for acks. */
    s->is_producing = false;
    drain_end_ms = s->now_ms + (uint64_t)(s->o.drain_s * 1000.0);
    while (!got_signal) {
        uint64_t next = s->now_ms + 50;

        s->now_ms = sim_mono_ms() - s->t0_ms;
        refill_tokens(s);
        for (i = 0; i < s->n_devs; i++) {
            uint64_t t = dev_tick(s, dev_at(s, i));
            if (t < next)
                next = t;
        }
        if (all_drained(s) || s->now_ms >= drain_end_ms)
            break;
        if (s->now_ms >= next_status_ms) {
            status_line(s, "drain", &last_pub, &last_status_ms);
            next_status_ms += (uint64_t)(s->o.status_s * 1000.0);
        }
        s->now_ms = sim_mono_ms() - s->t0_ms;
        net_run_once(&s->net, next > s->now_ms ? (int)(next - s->now_ms) : 0);
    }
    status_line(s, "end", &last_pub, &last_status_ms);
    /* Phase 3: disconnect (DISCONNECT packets flushed for up to 2 s). */
    for (i = 0; i < s->n_devs; i++)
        dev_shutdown(dev_at(s, i));
    {
        uint64_t end = sim_mono_ms() + 2000;
        while (sim_mono_ms() < end && net_run_once(&s->net, 20) > 0)
            ;
    }
    s->now_ms = sim_mono_ms() - s->t0_ms;
    if (s->o.json_path &&
        write_json(s, s->o.json_path, produce_s, cpu_seconds() - cpu0) != 0)
        fprintf(stderr, "tml-devsim: cannot write %s\n", s->o.json_path);
    rc = got_signal ? 1 : 0;
out:
    for (i = 0; i < n_setup; i++)
        dev_teardown(dev_at(s, i));
    free(s->devs);
    free(s->tones);
    free(s->scratch);
    net_close(&s->net);
    certs_ca_free(s->ca);
    mosquitto_lib_cleanup();
    return rc;
}
