/* baseline.c: the same firmware without the agent (startup code and newlib
 * nano only), subtracted from main.c's figures by size.sh. */
#include <stdint.h>

volatile uint32_t tick;

int
main(void)
{
    for (;;)
        tick++;
}
