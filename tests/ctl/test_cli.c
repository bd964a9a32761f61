/*
 * test_cli.c: the tmlctl binary's offline commands and conventions:
 * keygen (0600 private key, refuses to overwrite), sign + verify round
 * trip and every rejection with exit code 6 (wrong key S1, tampered
 * payload, truncated file, expired S6), --json output, usage errors (2),
 * file errors (7), `--help` on every registered command, unknown commands,
 * and the device-id rules of `device provision` (+ # / non-UTF-8).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <pwd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

static char dir[64];
static char bin[1024];

static int
sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Runs tmlctl ARGS in the temp dir; stdout to out.txt, stderr to err.txt. */
static int
t(const char *fmt, ...)
{
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    return sh("cd %s && %s %s >out.txt 2>err.txt", dir, bin, args);
}

static char *
slurp(const char *name)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "rb");
    if (f == NULL)
        return NULL;
    char *b = calloc(1, 1 << 20);
    size_t n = fread(b, 1, (1 << 20) - 1, f);
    b[n] = '\0';
    fclose(f);
    return b;
}

static bool
file_contains(const char *name, const char *needle)
{
    char *s = slurp(name);
    bool r = s != NULL && strstr(s, needle) != NULL;
    free(s);
    return r;
}

static int
mode_of(const char *name)
{
    char p[256];
    struct stat st;
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    return stat(p, &st) == 0 ? (int)(st.st_mode & 0777) : -1;
}

static int
setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/tmlctl_cli.XXXXXX");
    assert_non_null(mkdtemp(dir));
    const char *b = getenv("TML_BINARY_DIR");
    snprintf(bin, sizeof(bin), "%s/tools/tmlctl/tmlctl", b ? b : ".");
    /* A 20 KiB "model", two golden vectors, labels. */
    assert_int_equal(sh("cd %s && head -c 20480 /dev/urandom > model.bin && "
                        "mkdir vec && head -c 64 /dev/urandom > vec/a.in && "
                        "head -c 64 /dev/urandom > vec/b.in && "
                        "printf 'a.in 1 9000\\nb.in 0 8700\\n' > "
                        "vec/expected.txt && printf 'yes\\nno\\n' > labels",
                        dir),
                     0);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    sh("rm -rf '%s'", dir);
    return 0;
}

static void
test_keygen_writes_0600_key_and_refuses_overwrite(void **state)
{
    (void)state;
    assert_int_equal(t("keygen --out fleet"), 0);
    assert_int_equal(mode_of("fleet.key"), 0600);
    assert_int_equal(mode_of("fleet.pub") & 0600, 0600);
    assert_true(file_contains("fleet.h", "fleet_pubkey[65]"));
    assert_true(file_contains("fleet.h", "fleet_kid[8]"));
    assert_true(file_contains("fleet.pub", "BEGIN PUBLIC KEY"));
    /* Again: refused, file error, with a hint; the key is unchanged. */
    char *before = slurp("fleet.key");
    assert_int_equal(t("keygen --out fleet"), 7);
    assert_true(file_contains("err.txt", "hint:"));
    char *after = slurp("fleet.key");
    assert_string_equal(before, after);
    free(before);
    free(after);
    assert_int_equal(t("keygen --out fleet --force"), 0);
    assert_int_equal(mode_of("fleet.key"), 0600);
    assert_int_equal(t("keygen --out other"), 0);
    /* --json */
    assert_int_equal(t("--json keygen --out third"), 0);
    char *out = slurp("out.txt");
    cJSON *j = cJSON_Parse(out);
    free(out);
    assert_non_null(j);
    assert_int_equal(strlen(cJSON_GetObjectItem(j, "key_id")->valuestring), 16);
    cJSON_Delete(j);
}

static void
test_sign_verify_roundtrip_and_rejections(void **state)
{
    (void)state;
    assert_int_equal(t("sign model.bin --key fleet.key --name kws --version 7 "
                       "--hw nrf52840 --vectors vec --labels labels --arena "
                       "30000 --input-shape 1x64 --dtype i8 -o kws-7.tmlb"),
                     0);
    assert_int_equal(t("verify kws-7.tmlb --pub fleet.pub"), 0);
    assert_true(file_contains("out.txt", "valid"));
    assert_true(file_contains("out.txt", "2 vectors"));
    /* Either of two trusted keys (rotation). */
    assert_int_equal(t("verify kws-7.tmlb --pub other.pub --pub fleet.pub"), 0);
    /* S1: wrong key. */
    assert_int_equal(t("verify kws-7.tmlb --pub other.pub"), 6);
    assert_true(file_contains("err.txt", "untrusted key"));
    /* Tampered payload: one byte of the model flipped. */
    assert_int_equal(sh("cd %s && cp kws-7.tmlb bad.tmlb && printf '\\x55' | "
                        "dd of=bad.tmlb bs=1 seek=5000 conv=notrunc "
                        "2>/dev/null",
                        dir),
                     0);
    assert_int_equal(t("verify bad.tmlb --pub fleet.pub"), 6);
    /* Truncated. */
    assert_int_equal(sh("cd %s && head -c 3000 kws-7.tmlb > cut.tmlb", dir), 0);
    assert_int_equal(t("verify cut.tmlb --pub fleet.pub"), 6);
    assert_true(file_contains("err.txt", "truncated"));
    /* --json on success and on rejection. */
    assert_int_equal(t("--json verify kws-7.tmlb --pub fleet.pub"), 0);
    char *out = slurp("out.txt");
    cJSON *j = cJSON_Parse(out);
    free(out);
    assert_non_null(j);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "valid")));
    assert_int_equal(cJSON_GetObjectItem(j, "version")->valueint, 7);
    assert_int_equal(cJSON_GetObjectItem(j, "vectors")->valueint, 2);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "labels")), 2);
    cJSON_Delete(j);
    assert_int_equal(t("--json verify bad.tmlb --pub fleet.pub"), 6);
    out = slurp("out.txt");
    j = cJSON_Parse(out);
    free(out);
    assert_non_null(j);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(j, "valid")));
    cJSON_Delete(j);
    /* --extract writes exactly the verified image (model + vectors). */
    assert_int_equal(t("verify kws-7.tmlb --pub fleet.pub --extract img"), 0);
    assert_int_equal(sh("cd %s && test $(stat -c %%s img) = $((20480 + 2 * "
                        "68)) && cmp -n 20480 img model.bin",
                        dir),
                     0);
}

/* Deterministic ECDSA + SOURCE_DATE_EPOCH: byte-identical bundles. */
static void
test_sign_is_reproducible(void **state)
{
    (void)state;
    assert_int_equal(sh("cd %s && SOURCE_DATE_EPOCH=1700000000 %s sign "
                        "model.bin --key fleet.key --name kws --version 7 "
                        "--hw nrf52840 --classes 2 --input-shape 64 -o "
                        "r0.tmlb -q && SOURCE_DATE_EPOCH=1700000000 %s sign "
                        "model.bin --key fleet.key --name kws --version 7 "
                        "--hw nrf52840 --classes 2 --input-shape 64 -o "
                        "r1.tmlb -q && cmp -s r0.tmlb r1.tmlb",
                        dir, bin, bin),
                     0);
}

/* S12: a rotation manifest names the key ids devices must drop. */
static void
test_sign_revoke_kids_for_rotation(void **state)
{
    (void)state;
    assert_int_equal(t("--json keygen --out k2"), 0);
    assert_int_equal(t("sign model.bin --key k2.key --name kws --version 9 "
                       "--hw nrf52840 --classes 2 --input-shape 64 "
                       "--revoke 0011223344556677 --resets-floor -o "
                       "rot.tmlb"),
                     0);
    assert_int_equal(t("--json verify rot.tmlb --pub fleet.pub --pub k2.pub"),
                     0);
    assert_true(file_contains("out.txt", "\"0011223344556677\""));
    assert_int_equal(t("sign model.bin --key k2.key --name kws --version 9 "
                       "--hw nrf52840 --classes 2 --input-shape 64 "
                       "--revoke 00112233 -o x.tmlb"),
                     2);
}

/* S6: an expired manifest is refused at verify time (with its time). */
static void
test_verify_refuses_expired(void **state)
{
    (void)state;
    assert_int_equal(t("sign model.bin --key fleet.key --name kws --version 8 "
                       "--hw nrf52840 --classes 2 --input-shape 64 --expires "
                       "1h -o short.tmlb"),
                     0);
    assert_int_equal(t("verify short.tmlb --pub fleet.pub"), 0);
    assert_int_equal(t("verify short.tmlb --pub fleet.pub --now %ld",
                       (long)time(NULL) + 7200),
                     6);
    assert_true(file_contains("err.txt", "expired"));
    assert_int_equal(t("verify short.tmlb --pub fleet.pub --ignore-expiry "
                       "--now %ld",
                       (long)time(NULL) + 7200),
                     0);
}

static void
test_usage_and_file_errors(void **state)
{
    (void)state;
    assert_int_equal(t("sign model.bin --name kws --version 1 --hw x "
                       "--classes 2 --input-shape 4 -o x.tmlb"),
                     2); /* no --key */
    assert_true(file_contains("err.txt", "missing --key"));
    assert_int_equal(t("sign model.bin --key fleet.key --name kws --version 0 "
                       "--hw x --classes 2 --input-shape 4 -o x.tmlb"),
                     2);
    assert_int_equal(t("sign model.bin --key fleet.key --name kws --version 1 "
                       "--hw x --input-shape 4 -o x.tmlb"),
                     2); /* neither --labels nor --classes */
    assert_int_equal(t("sign nothere.bin --key fleet.key --name kws "
                       "--version 1 --hw x --classes 2 --input-shape 4 -o "
                       "x.tmlb"),
                     7);
    assert_int_equal(t("verify kws-7.tmlb --pub nothere.pub"), 7);
    assert_int_equal(t("verify kws-7.tmlb"), 2);
    assert_int_equal(t("verify kws-7.tmlb --pub fleet.pub --bogus"), 2);
    assert_int_equal(t("nosuchcommand"), 2);
    assert_int_equal(t(""), 2);
    assert_int_equal(t("--version"), 0);
}

/* Every registered command answers --help with exit 0 and a usage line. */
static void
test_every_command_has_help(void **state)
{
    (void)state;
    assert_int_equal(t("help"), 0);
    char *list = slurp("out.txt");
    assert_non_null(list);
    int n = 0;
    char *save = NULL;
    bool in_cmds = false;
    for (char *line = strtok_r(list, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        if (strcmp(line, "commands:") == 0) {
            in_cmds = true;
            continue;
        }
        if (in_cmds && strncmp(line, "  ", 2) != 0)
            break; /* end of the command list */
        if (!in_cmds)
            continue;
        char name[64];
        if (sscanf(line, "%63s", name) != 1 || strcmp(name, "help") == 0)
            continue;
        assert_int_equal(t("%s --help", name), 0);
        assert_true(file_contains("out.txt", "usage: tmlctl"));
        n++;
    }
    free(list);
    print_message("--help: %d commands\n", n);
    assert_true(n >= 12);
}

static void
test_provision_refuses_unsafe_ids(void **state)
{
    (void)state;
    assert_int_equal(t("pki init --dir pki"), 0);
    assert_int_equal(mode_of("pki/ca.key"), 0600);
    const char *bad[] = {"'a+b'",
                         "'a#b'",
                         "'a/b'",
                         "$'\\xc3\\x28'",
                         "$'caf\\xc3\\xa9'",
                         "''",
                         "tmld",
                         "'..'",
                         "$(printf 'x%.0s' $(seq 65))"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(t("device provision %s --out d --pki pki", bad[i]), 2);
    assert_int_equal(t("device provision ok-1.x_Y --out d --pki pki"), 0);
    assert_int_equal(t("device provision ok-1.x_Y --out d --pki pki"), 4);
    assert_int_equal(t("device provision ok-1.x_Y --out d --pki pki --force"),
                     0);
    assert_int_equal(t("--json device list --pki pki --all"), 0);
    char *out = slurp("out.txt");
    cJSON *j = cJSON_Parse(out);
    free(out);
    assert_non_null(j);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "devices")), 2);
    cJSON_Delete(j);
    assert_int_equal(mode_of("d/ok-1.x_Y.key"), 0600);
    assert_int_equal(mode_of("d/ok-1.x_Y.h"), 0600);
    assert_int_equal(mode_of("d/ok-1.x_Y.bin"), 0600);
    /* pki crl re-issues a CRL that OpenSSL verifies against the CA. */
    assert_int_equal(t("pki crl --dir pki"), 0);
    assert_int_equal(sh("cd %s && openssl crl -in pki/crl.pem -CAfile "
                        "pki/ca.crt -noout 2>&1 | grep -q 'verify OK'",
                        dir),
                     0);
    /* Service users own their keys (root only can hand them over). */
    if (geteuid() == 0) {
        assert_int_equal(t("pki init --dir pki2 --broker-user nobody "
                           "--tmld-user daemon"),
                         0);
        /* getpwnam returns a static buffer: copy the uids. */
        uid_t nobody_uid = getpwnam("nobody")->pw_uid;
        uid_t daemon_uid = getpwnam("daemon")->pw_uid;
        struct stat st;
        char p[256];
        snprintf(p, sizeof(p), "%s/pki2/server.key", dir);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_uid, nobody_uid);
        assert_int_equal(st.st_mode & 0777, 0600);
        snprintf(p, sizeof(p), "%s/pki2/tmld.key", dir);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_uid, daemon_uid);
        assert_int_equal(t("pki init --dir pki3 --broker-user nosuchuser"), 2);
    }
    /* The re-provisioned device's old serial is in the CRL. */
    assert_int_equal(sh("cd %s && openssl crl -in pki/crl.pem -CAfile "
                        "pki/ca.crt -noout -text 2>&1 | grep -c 'Serial "
                        "Number' | grep -qx 1",
                        dir),
                     0);
    /* The flashing blob: magic, items, trailing SHA-256, and the
     * certificate inside is the issued one. */
    assert_int_equal(
        sh("cd %s && openssl x509 -in d/ok-1.x_Y.crt -outform der -out "
           "crt.der && /usr/bin/python3 -c '\n"
           "import hashlib,sys\n"
           "b=open(\"d/ok-1.x_Y.bin\",\"rb\").read()\n"
           "assert b[:4]==b\"TMLP\" and b[4]==1 and b[5]==4\n"
           "assert hashlib.sha256(b[:-32]).digest()==b[-32:]\n"
           "p=8; items={}\n"
           "while p<len(b)-32:\n"
           "  t=b[p]; n=b[p+2]|b[p+3]<<8; items[t]=b[p+4:p+4+n]; p+=4+n\n"
           "assert p==len(b)-32\n"
           "assert items[2]==open(\"crt.der\",\"rb\").read()\n"
           "assert items[4]==b\"ok-1.x_Y\"\n'",
           dir),
        0);
    /* Revoke without a broker: the CRL is updated, with a warning. */
    assert_int_equal(t("device revoke ok-1.x_Y --pki pki"), 0);
    assert_true(file_contains("err.txt", "reload the broker"));
    assert_int_equal(sh("cd %s && openssl crl -in pki/crl.pem -CAfile "
                        "pki/ca.crt -noout -text 2>&1 | grep -c 'Serial "
                        "Number' | grep -qx 2",
                        dir),
                     0);
    assert_int_equal(t("device revoke ok-1.x_Y --pki pki"), 3);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keygen_writes_0600_key_and_refuses_overwrite),
        cmocka_unit_test(test_sign_verify_roundtrip_and_rejections),
        cmocka_unit_test(test_verify_refuses_expired),
        cmocka_unit_test(test_sign_revoke_kids_for_rotation),
        cmocka_unit_test(test_sign_is_reproducible),
        cmocka_unit_test(test_usage_and_file_errors),
        cmocka_unit_test(test_every_command_has_help),
        cmocka_unit_test(test_provision_refuses_unsafe_ids),
    };
    return cmocka_run_group_tests_name("tmlctl_cli", tests, setup, teardown);
}
