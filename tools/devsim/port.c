/*
 * port.c: tml-devsim's implementation of struct tmla_port for one simulated
 * device.
 *
 *  - flash: two model slots as files <dir>/slot0.bin, slot1.bin (created on
 *    first use, opened per operation so thousands of devices do not hold
 *    thousands of descriptors). Erase writes 0xff; reads past the end of a
 *    file return 0xff, as erased flash does.
 *  - persisted state: <dir>/state0.bin and state1.bin, one per copy.
 *  - crypto: the agent's mbedTLS port (firmware-agent/ports/mbedtls), the
 *    same SHA-256 and ES256 code a firmware links. Flash and state are
 *    devsim's own rather than the POSIX port's: files are opened per
 *    operation so thousands of devices do not hold thousands of fds.
 *  - the synthetic model: activate() switches the behaviour rule to
 *    name@version (and sometimes says "not now", like an application in the
 *    middle of a measurement); infer() runs a golden vector: a model whose
 *    rule says selftest=pass reproduces the vector's expected class and
 *    score, one with selftest=fail predicts a different class.
 *  - publish goes to dev.c (dev_publish), which counts and forwards it.
 * No file is fsync'ed: the simulator models reboots, not power loss (the
 * agent's own tests do that with a flash simulator).
 */
#define _POSIX_C_SOURCE 200809L
#include "dev_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <tml/agent_port_mbedtls.h>

int dev_publish(void *user, const char *topic, const uint8_t *payload,
                size_t len, uint8_t qos, bool retain);

static int
path_of(const struct dev *d, char *buf, size_t cap, const char *what,
        unsigned k)
{
    int n = snprintf(buf, cap, "%s/%s%u.bin", d->dir, what, k);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

static int
file_read(const struct dev *d, const char *what, unsigned k, uint32_t off,
          void *buf, size_t len, bool fill_erased)
{
    char path[600];
    ssize_t n;
    size_t got = 0;
    int fd;

    if (path_of(d, path, sizeof(path), what, k) != 0)
        return TMLA_PORT_FAIL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT && fill_erased) {
            memset(buf, 0xff, len);
            return TMLA_PORT_OK;
        }
        return TMLA_PORT_FAIL;
    }
    while (got < len) {
        n = pread(fd, (uint8_t *)buf + got, len - got, (off_t)off + (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (got < len) {
        if (!fill_erased)
            return TMLA_PORT_FAIL;
        memset((uint8_t *)buf + got, 0xff, len - got);
    }
    return TMLA_PORT_OK;
}

static int
file_write(const struct dev *d, const char *what, unsigned k, uint32_t off,
           const void *buf, size_t len, bool truncate)
{
    char path[600];
    size_t done = 0;
    ssize_t n;
    int fd, rc = TMLA_PORT_OK;

    if (path_of(d, path, sizeof(path), what, k) != 0)
        return TMLA_PORT_FAIL;
    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (truncate ? O_TRUNC : 0),
              0600);
    if (fd < 0)
        return TMLA_PORT_FAIL;
    while (done < len) {
        n = pwrite(fd, (const uint8_t *)buf + done, len - done,
                   (off_t)off + (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = TMLA_PORT_FAIL;
            break;
        }
        done += (size_t)n;
    }
    if (close(fd) != 0)
        rc = TMLA_PORT_FAIL;
    return rc;
}

static int
p_flash_read(void *user, uint8_t slot, uint32_t off, void *buf, size_t len)
{
    struct dev *d = user;

    if (slot > 1 || off > d->port.slot_size ||
        len > d->port.slot_size - off)
        return TMLA_PORT_FAIL;
    return file_read(d, "slot", slot, off, buf, len, true);
}

static int
p_flash_write(void *user, uint8_t slot, uint32_t off, const void *buf,
              size_t len)
{
    struct dev *d = user;

    if (slot > 1 || off > d->port.slot_size ||
        len > d->port.slot_size - off)
        return TMLA_PORT_FAIL;
    return file_write(d, "slot", slot, off, buf, len, false);
}

static int
p_flash_erase(void *user, uint8_t slot, uint32_t off, size_t len)
{
    struct dev *d = user;
    uint8_t ff[4096];
    size_t done = 0;

    if (slot > 1 || off > d->port.slot_size ||
        len > d->port.slot_size - off)
        return TMLA_PORT_FAIL;
    memset(ff, 0xff, sizeof(ff));
    while (done < len) {
        size_t n = len - done < sizeof(ff) ? len - done : sizeof(ff);
        if (file_write(d, "slot", slot, off + (uint32_t)done, ff, n, false) !=
            TMLA_PORT_OK)
            return TMLA_PORT_FAIL;
        done += n;
    }
    return TMLA_PORT_OK;
}

static int
p_state_read(void *user, uint8_t copy, void *buf, size_t len)
{
    if (copy > 1)
        return TMLA_PORT_FAIL;
    return file_read(user, "state", copy, 0, buf, len, false);
}

static int
p_state_write(void *user, uint8_t copy, const void *buf, size_t len)
{
    if (copy > 1)
        return TMLA_PORT_FAIL;
    return file_write(user, "state", copy, 0, buf, len, true);
}

static uint32_t
p_unix_time(void *user)
{
    (void)user;
    return (uint32_t)time(NULL);
}

static uint32_t
p_random(void *user)
{
    struct dev *d = user;

    return (uint32_t)(synth_next(&d->rng) >> 32);
}

static bool
p_health(void *user, struct tml_health *out)
{
    struct dev *d = user;

    out->free_ram = 48000u + synth_below(&d->rng, 4000);
    out->supply_mv = 3250u + synth_below(&d->rng, 100);
    out->temp_dc = 200 + (int32_t)synth_below(&d->rng, 150);
    out->uptime_s = (uint32_t)((d->sim->now_ms - d->boot_ms) / 1000u);
    return true;
}

static int
p_activate(void *user, const struct tmla_model *m)
{
    struct dev *d = user;

    /* An application sometimes cannot switch right now (mid-measurement);
     * the agent must ask again later. Never twice in a row, so a test's
     * activation is only delayed by one poll. */
    if (!d->activate_deferred && synth_chance(&d->rng, 200000)) {
        d->activate_deferred = true;
        return TMLA_PORT_AGAIN;
    }
    d->activate_deferred = false;
    dev_set_model(d, m->name, m->version);
    return TMLA_PORT_OK;
}

static int
p_infer(void *user, const struct tmla_model *m, uint32_t input_off,
        uint32_t input_len, uint32_t *out_class, uint32_t *out_score_bp)
{
    struct dev *d = user;
    const struct behave_rule *rule;
    uint8_t expect[4];
    uint32_t cls, score;

    d->vectors_run++;
    if (input_off > d->port.slot_size ||
        input_len > d->port.slot_size - input_off ||
        d->port.slot_size - input_off - input_len < sizeof(expect))
        return TMLA_PORT_FAIL;
    /* A vector is input, then expected class (u16 LE) and score (u16 LE). */
    if (p_flash_read(d, m->slot, input_off + input_len, expect,
                     sizeof(expect)) != TMLA_PORT_OK)
        return TMLA_PORT_FAIL;
    cls = (uint32_t)expect[0] | (uint32_t)expect[1] << 8;
    score = (uint32_t)expect[2] | (uint32_t)expect[3] << 8;
    rule = behave_lookup(&d->sim->behave, m->name, strlen(m->name),
                         m->version);
    if (behave_selftest_fails(rule, d->id)) {
        d->vectors_failed++;
        cls = cls + 1;
        score = score > 5000 ? score - 5000 : score + 5000;
    }
    *out_class = cls;
    *out_score_bp = score;
    return TMLA_PORT_OK;
}

static void
p_ota_event(void *user, enum tml_ota_state state, enum tml_ota_reason reason,
            uint32_t version)
{
    struct dev *d = user;

    d->ota_state = (uint8_t)state;
    d->ota_reason = (uint8_t)reason;
    d->ota_version = version;
    d->ota_events++;
}

void
port_fill(struct dev *d)
{
    struct tmla_port *p = &d->port;

    memset(p, 0, sizeof(*p));
    p->user = d;
    p->publish = dev_publish;
    p->slot_size = d->sim->o.slot_size;
    p->erase_size = 4096;
    p->write_align = 4;
    p->flash_read = p_flash_read;
    p->flash_write = p_flash_write;
    p->flash_erase = p_flash_erase;
    p->state_read = p_state_read;
    p->state_write = p_state_write;
    tmla_mbedtls_fill_port(p); /* the agent's own mbedTLS crypto port */
    p->unix_time = p_unix_time;
    p->random = p_random;
    p->health = p_health;
    p->activate = p_activate;
    p->infer = p_infer;
    p->ota_event = p_ota_event;
}
