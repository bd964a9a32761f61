/*
 * cmd_broker_config.c: `tmlctl broker-config --pki DIR --out DIR`: renders
 * the gateway's mosquitto configuration and ACL (templates in
 * config/mosquitto/, compiled in by embed.cmake) with this gateway's
 * paths. Optionally adds a plain listener on loopback for tmld only, protected
 * by a password file (tmld's password is written next to its key, 0600).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mbedtls/base64.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>

#include "pki.h"
#include "tml/proto.h"
#include "tmlctl.h"

extern const char tmlctl_mosquitto_conf_in[];
extern const char tmlctl_mosquitto_acl_in[];
const char *tmlctl_pki_default_dir(void);

/* TML_MAX_MESSAGE + fixed header (1 + 2) + topic (2 + 83) + packet id (2)
 * + MQTT 5 properties: rounded up to 5120 + 128. */
#define MAX_PACKET (TML_MAX_MESSAGE + 128)
#define RENDER_CAP (64 * 1024)

struct var {
    const char *name;
    const char *value;
};

/* Replaces every @NAME@ of tmpl by its value. Returns a malloc'ed string,
 * or NULL (and names the culprit in bad[64]) for an unknown variable. */
static char *
render(const char *tmpl, const struct var *vars, size_t n_vars, char *bad)
{
    char *out = malloc(RENDER_CAP);
    if (out == NULL)
        return NULL;
    size_t len = 0;
    for (const char *p = tmpl; *p != '\0';) {
        const char *end = *p == '@' ? strchr(p + 1, '@') : NULL;
        const struct var *v = NULL;
        if (end != NULL) {
            for (size_t i = 0; i < n_vars; i++)
                if (strlen(vars[i].name) == (size_t)(end - p - 1) &&
                    strncmp(vars[i].name, p + 1, (size_t)(end - p - 1)) == 0)
                    v = &vars[i];
            if (v == NULL) {
                snprintf(bad, 64, "%.*s", (int)(end - p + 1), p);
                free(out);
                return NULL;
            }
        }
        const char *src = v ? v->value : p;
        size_t n = v ? strlen(v->value) : 1;
        if (len + n + 1 >= RENDER_CAP) {
            snprintf(bad, 64, "(output too long)");
            free(out);
            return NULL;
        }
        memcpy(out + len, src, n);
        len += n;
        p = v ? end + 1 : p + 1;
    }
    out[len] = '\0';
    return out;
}

/* 24 random bytes, base64: tmld's password for the plain listener. */
static int
random_password(char *out, size_t cap)
{
    mbedtls_entropy_context ent;
    mbedtls_ctr_drbg_context drbg;
    unsigned char raw[24];
    size_t olen = 0;
    mbedtls_entropy_init(&ent);
    mbedtls_ctr_drbg_init(&drbg);
    int rc = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &ent, NULL,
                                   0) == 0 &&
                     mbedtls_ctr_drbg_random(&drbg, raw, sizeof(raw)) == 0 &&
                     mbedtls_base64_encode((unsigned char *)out, cap, &olen,
                                           raw, sizeof(raw)) == 0
                 ? 0
                 : -1;
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&ent);
    return rc;
}

static int
run_mosquitto_passwd(const char *file, const char *user, const char *pw)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execlp("mosquitto_passwd", "mosquitto_passwd", "-c", "-b", file, user,
               pw, (char *)NULL);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static int
cmd_broker_config(struct tmlctl *ctl, int argc, char **argv)
{
    const char *pki = tmlctl_pki_default_dir(), *out = NULL;
    const char *address = "0.0.0.0", *persist = NULL, *log_file = NULL;
    const char *run_as = "mosquitto";
    uint32_t port = 8883, plain_port = 0;
    bool print = false;
    const struct tmlctl_opt opts[] = {
        {"pki", 0, TMLCTL_OPT_STR, &pki, "DIR",
         "PKI directory ($TMLCTL_PKI, /etc/tmld/pki)", false},
        {"out", 'o', TMLCTL_OPT_STR, &out, "DIR",
         "write DIR/mosquitto.conf and DIR/acl", false},
        {"print", 0, TMLCTL_OPT_FLAG, &print, NULL,
         "print the configuration instead", false},
        {"port", 'p', TMLCTL_OPT_U32, &port, "PORT", "TLS port (8883)", false},
        {"address", 0, TMLCTL_OPT_STR, &address, "ADDR",
         "listen address (0.0.0.0)", false},
        {"plain-port", 0, TMLCTL_OPT_U32, &plain_port, "PORT",
         "also a non-TLS listener on 127.0.0.1 for tmld only", false},
        {"persistence-dir", 0, TMLCTL_OPT_STR, &persist, "DIR",
         "keep the broker's queue in DIR (default: no persistence)", false},
        {"log-file", 0, TMLCTL_OPT_STR, &log_file, "FILE",
         "log to FILE (default: syslog)", false},
        {"run-as", 0, TMLCTL_OPT_STR, &run_as, "USER",
         "user mosquitto runs as; owns server.key (mosquitto)", false},
        {0},
    };
    struct tmlctl_args a;
    int rc;
    if (!tmlctl_parse(ctl, "broker-config [--pki DIR] --out DIR | --print",
                      opts, argc, argv, &a, &rc))
        return rc;
    if ((out == NULL) == !print)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL,
                           "give --out DIR or --print");
    if (port == 0 || port > 65535 || plain_port > 65535 || plain_port == port)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL, "bad port");
    char pki_abs[PATH_MAX], out_abs[PATH_MAX];
    if (realpath(pki, pki_abs) == NULL)
        return tmlctl_fail(ctl, TMLCTL_EXIT_IO,
                           "run tmlctl pki init --dir DIR first", "%s: %s", pki,
                           strerror(errno));
    static const char *const need[] = {PKI_CA_CRT, PKI_SERVER_CRT,
                                       PKI_SERVER_KEY, PKI_CRL, PKI_TMLD_CRT};
    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
        char f[PATH_MAX + 32];
        snprintf(f, sizeof(f), "%s/%s", pki_abs, need[i]);
        if (access(f, F_OK) != 0)
            return tmlctl_fail(ctl, TMLCTL_EXIT_IO,
                               "run tmlctl pki init --dir DIR first", "%s: %s",
                               f, strerror(errno));
    }
    if (out != NULL) {
        if (mkdir(out, 0755) != 0 && errno != EEXIST)
            return tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s: %s", out,
                               strerror(errno));
        if (realpath(out, out_abs) == NULL)
            return tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s: %s", out,
                               strerror(errno));
    } else {
        snprintf(out_abs, sizeof(out_abs), "/etc/mosquitto");
    }

    char port_s[16], maxp[16], cafile[PATH_MAX + 32], certfile[PATH_MAX + 32],
        keyfile[PATH_MAX + 32], crlfile[PATH_MAX + 32], aclfile[PATH_MAX + 32],
        passwd[PATH_MAX + 64], persistence[PATH_MAX + 64], log[PATH_MAX + 64],
        plain[256];
    snprintf(port_s, sizeof(port_s), "%u", port);
    snprintf(maxp, sizeof(maxp), "%u", (unsigned)MAX_PACKET);
    snprintf(cafile, sizeof(cafile), "%s/%s", pki_abs, PKI_CA_CRT);
    snprintf(certfile, sizeof(certfile), "%s/%s", pki_abs, PKI_SERVER_CRT);
    snprintf(keyfile, sizeof(keyfile), "%s/%s", pki_abs, PKI_SERVER_KEY);
    snprintf(crlfile, sizeof(crlfile), "%s/%s", pki_abs, PKI_CRL);
    snprintf(aclfile, sizeof(aclfile), "%s/acl", out_abs);
    if (persist != NULL)
        snprintf(persistence, sizeof(persistence),
                 "persistence true\npersistence_location %s/", persist);
    else
        snprintf(persistence, sizeof(persistence),
                 "# Devices keep unacknowledged records themselves; the "
                 "broker's queue is\n# not the durable copy "
                 "(docs/pki.md).\npersistence false");
    if (log_file != NULL)
        snprintf(log, sizeof(log),
                 "log_dest file %s\nlog_type error\nlog_type warning\n"
                 "log_type notice",
                 log_file);
    else
        snprintf(log, sizeof(log),
                 "log_dest syslog\nlog_type error\n"
                 "log_type warning\nlog_type notice");
    char password_line[PATH_MAX + 256] = "";
    if (plain_port != 0) {
        snprintf(passwd, sizeof(passwd), "%s/passwd", out_abs);
        snprintf(password_line, sizeof(password_line),
                 "# Only tmld has a password (plain loopback listener).\n"
                 "password_file %s",
                 passwd);
        snprintf(plain, sizeof(plain),
                 "\n# tmld only, loopback, no TLS: username %s + the "
                 "password in the PKI dir.\nlistener %u 127.0.0.1",
                 PKI_TMLD_CN, plain_port);
    } else {
        plain[0] = '\0';
    }
    const struct var vars[] = {
        {"PORT", port_s},
        {"ADDRESS", address},
        {"CAFILE", cafile},
        {"CERTFILE", certfile},
        {"KEYFILE", keyfile},
        {"CRLFILE", crlfile},
        {"ACLFILE", aclfile},
        {"MAX_PACKET", maxp},
        {"PERSISTENCE", persistence},
        {"PASSWORD_FILE", password_line},
        {"LOG", log},
        {"PLAIN_LISTENER", plain},
        {"TMLD_USER", PKI_TMLD_CN},
        {"RUN_AS", run_as},
    };
    size_t n_vars = sizeof(vars) / sizeof(vars[0]);
    char bad[64];
    char *conf = render(tmlctl_mosquitto_conf_in, vars, n_vars, bad);
    char *acl =
        conf ? render(tmlctl_mosquitto_acl_in, vars, n_vars, bad) : NULL;
    if (conf == NULL || acl == NULL) {
        free(conf);
        return tmlctl_fail(ctl, TMLCTL_EXIT_FAIL, NULL,
                           "template: unknown variable %s", bad);
    }
    rc = TMLCTL_EXIT_OK;
    if (print) {
        printf("%s\n# ---- %s ----\n%s", conf, aclfile, acl);
        goto done;
    }
    char path[PATH_MAX + 32], err[256];
    snprintf(path, sizeof(path), "%s/mosquitto.conf", out_abs);
    if (pki_write_file(path, conf, strlen(conf), 0644, err) != 0 ||
        pki_write_file(aclfile, acl, strlen(acl), 0644, err) != 0) {
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s", err);
        goto done;
    }
    if (plain_port != 0) {
        char pw[64], pwfile[PATH_MAX + 32];
        snprintf(pwfile, sizeof(pwfile), "%s/tmld.mqtt-password", pki_abs);
        if (random_password(pw, sizeof(pw)) != 0 ||
            pki_write_file(pwfile, pw, strlen(pw), 0600, err) != 0 ||
            run_mosquitto_passwd(passwd, PKI_TMLD_CN, pw) != 0 ||
            chmod(passwd, 0600) != 0) {
            rc = tmlctl_fail(ctl, TMLCTL_EXIT_FAIL,
                             "mosquitto_passwd comes with the mosquitto "
                             "package",
                             "creating the tmld password failed");
            goto done;
        }
    }
    /* The broker reads its key and password file after dropping to
     * run_as; only root can hand them over. */
    if (geteuid() == 0 && strcmp(run_as, "root") != 0) {
        char key[PATH_MAX + 32];
        snprintf(key, sizeof(key), "%s/%s", pki_abs, PKI_SERVER_KEY);
        if (pki_chown(key, run_as, err) != 0 ||
            (plain_port != 0 && pki_chown(passwd, run_as, err) != 0)) {
            rc = tmlctl_fail(ctl, TMLCTL_EXIT_FAIL,
                             "--run-as names the broker's user", "%s", err);
            goto done;
        }
    }
    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "config", path);
        cJSON_AddStringToObject(o, "acl", aclfile);
        cJSON_AddNumberToObject(o, "port", port);
        cJSON_AddNumberToObject(o, "max_packet_size", MAX_PACKET);
        rc = tmlctl_json_emit(o);
    } else {
        printf("wrote %s and %s\nstart: mosquitto -c %s\n", path, aclfile,
               path);
    }
done:
    free(conf);
    free(acl);
    return rc;
}

TMLCTL_COMMAND("broker-config", "render the gateway's mosquitto config + ACL",
               cmd_broker_config)
