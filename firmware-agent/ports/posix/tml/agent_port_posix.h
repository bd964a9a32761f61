/*
 * tml/agent_port_posix.h: model slots and persisted state of struct
 * tmla_port in files, for the simulator (tml-devsim) and host tests.
 *
 * One directory per device holds slot0.bin, slot1.bin (slot_size bytes each,
 * erased = 0xff) and state0.bin, state1.bin (the agent's two state copies).
 * Files are opened per call, so thousands of devices need no descriptors
 * between calls. A power-loss fault can be injected: after a budget of
 * bytes written (flash writes, erases and state writes all count) the
 * operation in progress is cut short and every later write fails, as if the
 * power went; a new struct tmla_posix on the same directory is the reboot.
 *
 * The port's user pointer must be the struct tmla_posix (embed it in the
 * application's device struct and find that struct from ->app or with
 * offsetof). Transport, activate, random etc. stay the application's.
 */
#ifndef TML_AGENT_PORT_POSIX_H
#define TML_AGENT_PORT_POSIX_H

#include <stdbool.h>
#include <stdint.h>

#include <tml/agent_port.h>

#ifdef __cplusplus
extern "C" {
#endif

struct tmla_posix {
    char dir[240]; /* device directory, no trailing slash */
    uint32_t slot_size;
    uint32_t erase_size;
    uint32_t write_align;
    bool strict;          /* MCUboot rules: refuse writes to bytes that are
                             not erased, and unaligned writes/erases */
    int64_t write_budget; /* bytes that may still be written; < 0 =
                             unlimited (the default) */
    bool dead;            /* the budget ran out: power is off */
    bool no_sync;         /* skip fdatasync of state writes (many
                             simulated devices on one disk) */
    uint32_t n_flash_writes, n_erases, n_state_writes, n_violations;
    void *app; /* free for the application */
};

/* Prepares p for directory dir (created if missing, mode 0700) and creates
 * missing slot files filled with 0xff. slot_size must be a multiple of
 * erase_size. Returns 0, or -errno. */
int tmla_posix_open(struct tmla_posix *p, const char *dir, uint32_t slot_size,
                    uint32_t erase_size, uint32_t write_align);

/* Sets port->user = p, the geometry, and the flash_* and state_* members. */
void tmla_posix_fill_port(struct tmla_posix *p, struct tmla_port *port);

/* The members themselves (user = struct tmla_posix *). */
int tmla_posix_flash_read(void *user, uint8_t slot, uint32_t off, void *buf,
                          size_t len);
int tmla_posix_flash_write(void *user, uint8_t slot, uint32_t off,
                           const void *buf, size_t len);
int tmla_posix_flash_erase(void *user, uint8_t slot, uint32_t off, size_t len);
int tmla_posix_state_read(void *user, uint8_t copy, void *buf, size_t len);
int tmla_posix_state_write(void *user, uint8_t copy, const void *buf,
                           size_t len);

#ifdef __cplusplus
}
#endif

#endif /* TML_AGENT_PORT_POSIX_H */
