/*
 * ctl_proto.c: the control protocol's framing (docs/ctl-protocol.md): parsing
 * one request line and formatting one response line. Pure functions over
 * cJSON, no I/O, so that they can be fuzzed alone
 * (tests/daemon/fuzz_ctl_request.c).
 */
#include <stdlib.h>
#include <string.h>

#include "core.h"

#define CTL_ID_MAX 64

cJSON *
ctl_parse_request(const char *line, size_t len, const char **code,
                  const char **message)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(line, len, &end, 0);
    if (root == NULL) {
        *code = "bad_request";
        *message = "not valid JSON";
        return NULL;
    }
    /* Only whitespace may follow the object. */
    for (const char *p = end; p != NULL && p < line + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\0') {
            *code = "bad_request";
            *message = "more than one JSON value on the line";
            cJSON_Delete(root);
            return NULL;
        }
    }
    if (!cJSON_IsObject(root)) {
        *code = "bad_request";
        *message = "a request is a JSON object";
        goto fail;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "v");
    if (v != NULL && (!cJSON_IsNumber(v) || v->valuedouble != 1.0)) {
        *code = cJSON_IsNumber(v) && v->valuedouble > 1.0
                    ? "unsupported_version"
                    : "bad_request";
        *message = "this tmld speaks protocol version 1";
        goto fail;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
    if (id != NULL && !cJSON_IsNull(id) &&
        !(cJSON_IsNumber(id) && id->valuedouble > -9.0e15 &&
          id->valuedouble < 9.0e15 &&
          id->valuedouble == (double)(int64_t)id->valuedouble) &&
        !(cJSON_IsString(id) && strlen(id->valuestring) <= CTL_ID_MAX)) {
        *code = "bad_request";
        *message = "id must be an integer or a string of at most 64 bytes";
        goto fail;
    }
    const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(root, "cmd");
    if (!cJSON_IsString(cmd) || cmd->valuestring[0] == '\0') {
        *code = "bad_request";
        *message = "cmd (a string) is required";
        goto fail;
    }
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(root, "args");
    if (args != NULL && !cJSON_IsObject(args) && !cJSON_IsNull(args)) {
        *code = "bad_args";
        *message = "args must be an object";
        goto fail;
    }
    return root;
fail:
    cJSON_Delete(root);
    return NULL;
}

char *
ctl_format_response(const cJSON *id, bool ok, cJSON *result, const char *code,
                    const char *message)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL) {
        cJSON_Delete(result);
        return NULL;
    }
    cJSON_AddNumberToObject(o, "v", 1);
    cJSON *idc = id ? cJSON_Duplicate(id, 1) : cJSON_CreateNull();
    if (idc)
        cJSON_AddItemToObject(o, "id", idc);
    cJSON_AddBoolToObject(o, "ok", ok);
    if (ok) {
        if (result == NULL)
            result = cJSON_CreateObject();
        if (result)
            cJSON_AddItemToObject(o, "result", result);
    } else {
        cJSON_Delete(result);
        cJSON *e = cJSON_AddObjectToObject(o, "error");
        if (e) {
            cJSON_AddStringToObject(e, "code", code);
            cJSON_AddStringToObject(e, "message", message ? message : "");
        }
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (s == NULL)
        return NULL;
    size_t n = strlen(s);
    char *line = realloc(s, n + 2);
    if (line == NULL) {
        free(s);
        return NULL;
    }
    line[n] = '\n';
    line[n + 1] = '\0';
    return line;
}

