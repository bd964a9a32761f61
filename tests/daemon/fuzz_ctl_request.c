/*
 * tmld_fuzz_ctl_request: one control-socket request line, parsed as tmld
 * parses it, and the response envelope built around its id.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *code = NULL, *msg = NULL;
    cJSON *req = ctl_parse_request((const char *)data, size, &code, &msg);
    const cJSON *id = req ? cJSON_GetObjectItemCaseSensitive(req, "id") : NULL;
    if (req == NULL && (code == NULL || msg == NULL))
        abort(); /* every rejection has a reason */
    char *line = ctl_format_response(id, req != NULL, NULL,
                                     code ? code : "x", msg);
    if (line == NULL || strchr(line, '\n') != line + strlen(line) - 1)
        abort(); /* exactly one line */
    free(line);
    cJSON_Delete(req);
    return 0;
}
