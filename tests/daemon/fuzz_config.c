/*
 * tmld_fuzz_config: the config parser (inih + tmld's line reader and the
 * validation of every core key) on arbitrary bytes. Seeds: corpus/.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct tmld d;
    log_init(0); /* silence: every input is full of errors */
    memset(&d, 0, sizeof(d));
    conf_load_buf(&d.conf, "fuzz.conf", (const char *)data, size);
    settings_load(&d, &d.set);
    (void)tmld_config_get(&d, "ota", "anything");
    conf_free(&d.conf);
    return 0;
}
