/* stub_port.h: the stub port shared by main.c and baseline.c (size.sh). */
#ifndef TMLA_ARM_STUB_PORT_H
#define TMLA_ARM_STUB_PORT_H

#include <tml/agent.h>

extern const struct tmla_port port;

#endif
