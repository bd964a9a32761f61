/* baseline.c: the same firmware without the agent (startup code, newlib
 * nano and the stub port of stub_port.c, kept by a volatile reference as a
 * firmware keeps its port), subtracted from main.c's figures by size.sh. */
#include "stub_port.h"

volatile uint32_t tick;
const struct tmla_port *volatile keep_port;

int
main(void)
{
    keep_port = &port;
    for (;;)
        tick++;
}
