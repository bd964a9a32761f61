/*
 * cmd_pki.c: `tmlctl pki init|crl|show`: the fleet CA and the broker's and
 * tmld's certificates (pki.c does the work, docs/pki.md explains it).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pki.h"
#include "tmlctl.h"

#define DEFAULT_PKI_DIR "/etc/tmld/pki"

const char *tmlctl_pki_default_dir(void);

/* $TMLCTL_PKI or /etc/tmld/pki. */
const char *
tmlctl_pki_default_dir(void)
{
    const char *d = getenv("TMLCTL_PKI");
    return d != NULL && d[0] != '\0' ? d : DEFAULT_PKI_DIR;
}

static int
pki_init_cmd(struct tmlctl *ctl, int argc, char **argv)
{
    const char *dir = NULL, *ca_name = NULL, *broker_user = NULL,
               *tmld_user = NULL;
    struct tmlctl_list hosts = {0};
    bool force = false;
    const struct tmlctl_opt opts[] = {
        {"dir", 'd', TMLCTL_OPT_STR, &dir, "DIR", "PKI directory", true},
        {"host", 'H', TMLCTL_OPT_LIST, &hosts, "NAME|IP",
         "broker host name/address for the server certificate", false},
        {"ca-name", 0, TMLCTL_OPT_STR, &ca_name, "NAME",
         "CA common name (tmlfleet CA)", false},
        {"broker-user", 0, TMLCTL_OPT_STR, &broker_user, "USER",
         "owner of server.key (e.g. mosquitto)", false},
        {"tmld-user", 0, TMLCTL_OPT_STR, &tmld_user, "USER",
         "owner of tmld.key (e.g. tmld)", false},
        {"force", 'f', TMLCTL_OPT_FLAG, &force, NULL,
         "replace an existing CA (all device certificates become invalid)",
         false},
        {0},
    };
    struct tmlctl_args a;
    int rc;
    if (!tmlctl_parse(ctl, "pki init --dir DIR [--host H ...]", opts, argc,
                      argv, &a, &rc))
        return rc;
    if (a.n_pos != 0)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL,
                           "unexpected argument '%s'", a.pos[0]);
    for (size_t i = 0; i < hosts.n; i++)
        if (hosts.v[i][0] == '\0' || strlen(hosts.v[i]) > 253 ||
            strpbrk(hosts.v[i], " ,=+\\\"/") != NULL)
            return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL, "bad --host '%s'",
                               hosts.v[i]);
    char err[256];
    if (pki_init(dir, hosts.v, hosts.n, ca_name, force, err) != 0)
        return tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "pki init: %s", err);
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, PKI_SERVER_KEY);
    if (pki_chown(path, broker_user, err) != 0)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL, "%s", err);
    snprintf(path, sizeof(path), "%s/%s", dir, PKI_TMLD_KEY);
    if (pki_chown(path, tmld_user, err) != 0)
        return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, NULL, "%s", err);
    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "dir", dir);
        cJSON *files = cJSON_AddObjectToObject(o, "files");
        static const char *const names[] = {
            PKI_CA_KEY,   PKI_CA_CRT,   PKI_SERVER_KEY, PKI_SERVER_CRT,
            PKI_TMLD_KEY, PKI_TMLD_CRT, PKI_CRL,        PKI_DB};
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            struct stat st;
            snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
            if (stat(path, &st) == 0) {
                char mode[8];
                snprintf(mode, sizeof(mode), "%04o",
                         (unsigned)(st.st_mode & 07777));
                cJSON_AddStringToObject(files, names[i], mode);
            }
        }
        return tmlctl_json_emit(o);
    }
    printf("fleet PKI in %s:\n"
           "  %-12s fleet CA private key (0600): the key to the fleet, keep "
           "a backup offline\n"
           "  %-12s fleet CA certificate (broker cafile, devices trust it)\n"
           "  %-12s broker key (0600) + %s, SANs: localhost 127.0.0.1 ::1",
           dir, PKI_CA_KEY, PKI_CA_CRT, PKI_SERVER_KEY, PKI_SERVER_CRT);
    for (size_t i = 0; i < hosts.n; i++)
        printf(" %s", hosts.v[i]);
    printf("\n  %-12s tmld's client key (0600) + %s (CN %s)\n"
           "  %-12s revocation list the broker loads\n"
           "next: tmlctl broker-config --pki %s --out /etc/mosquitto/conf.d\n",
           PKI_TMLD_KEY, PKI_TMLD_CRT, PKI_TMLD_CN, PKI_CRL, dir);
    return TMLCTL_EXIT_OK;
}

static int
pki_crl_cmd(struct tmlctl *ctl, int argc, char **argv)
{
    const char *dir = tmlctl_pki_default_dir();
    const struct tmlctl_opt opts[] = {
        {"dir", 'd', TMLCTL_OPT_STR, &dir, "DIR",
         "PKI directory ($TMLCTL_PKI, /etc/tmld/pki)", false},
        {0},
    };
    struct tmlctl_args a;
    int rc;
    if (!tmlctl_parse(ctl, "pki crl [--dir DIR]", opts, argc, argv, &a, &rc))
        return rc;
    char err[256];
    struct pki *p = NULL;
    struct pki_db db;
    if (pki_open(dir, &p, err) != 0)
        return tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s", err);
    rc = TMLCTL_EXIT_OK;
    if (pki_db_load(dir, &db, err) != 0 || pki_write_crl(p, &db, err) != 0)
        rc = tmlctl_fail(ctl, TMLCTL_EXIT_IO, NULL, "%s", err);
    else
        tmlctl_info(ctl,
                    "%s/%s re-issued (valid %d days); reload the "
                    "broker (SIGHUP) to load it",
                    dir, PKI_CRL, PKI_CRL_VALIDITY_S / 86400);
    pki_db_free(&db);
    pki_close(p);
    return rc;
}

static int
cmd_pki(struct tmlctl *ctl, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "init") == 0)
        return pki_init_cmd(ctl, argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "crl") == 0)
        return pki_crl_cmd(ctl, argc - 1, argv + 1);
    if (argc >= 2 &&
        (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: tmlctl pki init --dir DIR [--host H ...] "
               "[--broker-user U] [--tmld-user U] [--force]\n"
               "       tmlctl pki crl [--dir DIR]   re-issue the CRL (it is "
               "valid %d days; the broker refuses every device once it "
               "expires)\n",
               PKI_CRL_VALIDITY_S / 86400);
        return TMLCTL_EXIT_OK;
    }
    return tmlctl_fail(ctl, TMLCTL_EXIT_USAGE, "tmlctl pki --help",
                       "pki: expected 'init' or 'crl'");
}

TMLCTL_COMMAND("pki", "fleet CA, broker and tmld certificates", cmd_pki)
