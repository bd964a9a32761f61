/*
 * test_query_fuzz.c: libFuzzer harness (tmlctl_query_fuzz) for the parsers
 * of the tmlctl query engineer's commands: byte 0 even -> the rest is one
 * device-cmd setting "KEY=VALUE" (cmd_device_cmd.c parse_setting), whose
 * accepted values must land in range; odd -> "JSON metadata\n bytes" as
 * samples.get would return them, written by samples export's view writer
 * (cmd_samples.c write_view) into a temporary directory: it must never
 * crash or read past the bytes, and a file it reports must exist.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd_device_cmd.c"
#include "cmd_samples.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The command registry lives in main.c, which has main(); the harness only
 * needs the included commands' constructors to link. */
void
tmlctl_register(struct tmlctl_cmd *cmd)
{
    (void)cmd;
}

static void
check_range(const cJSON *set, const char *k, double max)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(set, k);
    if (v != NULL && (!cJSON_IsNumber(v) || v->valuedouble < 0 ||
                      v->valuedouble > max))
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char dir[64];
    if (dir[0] == '\0') {
        snprintf(dir, sizeof(dir), "/tmp/tmlctl_query_fuzz.XXXXXX");
        if (mkdtemp(dir) == NULL)
            abort();
    }
    if (size < 1 || size > 65536)
        return 0;
    if ((data[0] & 1) == 0) {
        char *s = malloc(size);
        if (s == NULL)
            return 0;
        memcpy(s, data + 1, size - 1);
        s[size - 1] = '\0';
        cJSON *set = cJSON_CreateObject();
        if (parse_setting(s, set)) {
            check_range(set, "summary_period_s", 86400);
            check_range(set, "sample_budget", 1000000);
            check_range(set, "budget_period_s", 7 * 86400);
            check_range(set, "conf_threshold_bp", 10000);
            check_range(set, "audit_ppm", 1000000);
            if (cJSON_GetArraySize(set) < 1)
                abort();
        }
        cJSON_Delete(set);
        free(s);
        return 0;
    }
    const uint8_t *nl = memchr(data + 1, '\n', size - 1);
    if (nl == NULL)
        return 0;
    size_t jlen = (size_t)(nl - (data + 1));
    char *js = malloc(jlen + 1);
    if (js == NULL)
        return 0;
    memcpy(js, data + 1, jlen);
    js[jlen] = '\0';
    cJSON *meta = cJSON_Parse(js);
    free(js);
    if (meta == NULL)
        return 0;
    size_t n = size - 1 - jlen - 1;
    /* A copy of exactly n bytes so ASan sees any over-read. */
    uint8_t *bytes = malloc(n ? n : 1);
    if (bytes != NULL) {
        memcpy(bytes, nl + 1, n);
        char base[128], path[160];
        snprintf(base, sizeof(base), "%s/x", dir);
        const char *ext = write_view(base, meta, bytes, n);
        if (ext != NULL) {
            snprintf(path, sizeof(path), "%s.%s", base, ext);
            if (unlink(path) != 0)
                abort();
        }
        free(bytes);
    }
    cJSON_Delete(meta);
    return 0;
}
