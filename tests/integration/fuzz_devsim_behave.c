/*
 * fuzz_devsim_behave.c: arbitrary bytes as a tml-devsim behaviour file.
 * The parser must never crash, read out of bounds or accept more rules or
 * weights than its tables hold; a parsed rule must stay in range.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "behave.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct behave b;
    char *text;
    size_t i;

    if (size > 65536)
        return 0;
    text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    behave_init(&b);
    if (behave_parse_string(&b, text) != 0 && b.err_what == NULL)
        abort();
    if (b.n_rules < 1 || b.n_rules > BEHAVE_MAX_RULES)
        abort();
    for (i = 0; i < b.n_rules; i++) {
        const struct behave_rule *r = &b.rules[i];
        if (r->conf_bp > 10000 || r->misclass_ppm > 1000000 ||
            r->n_weights > BEHAVE_MAX_CLASSES || strlen(r->model) >
            BEHAVE_MAX_NAME)
            abort();
        (void)behave_lookup(&b, r->model, strlen(r->model), r->version);
    }
    free(text);
    return 0;
}
