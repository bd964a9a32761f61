/*
 * port.c: tml-devsim's implementation of struct tmla_port for one simulated
 * device.
 *
 *  - flash: two model slots as files <dir>/slot0.bin, slot1.bin, created
 *    and opened at boot and kept open (one descriptor per slot, up to
 *    SLOT_FDS_MAX in the process), reads through one cached 4 KiB block.
 *    Erase writes 0xff; reads past the end of a file return 0xff, as
 *    erased flash does.
 *  - persisted state: <dir>/state0.bin and state1.bin, one per copy.
 *  - crypto: the agent's mbedTLS port (firmware-agent/ports/mbedtls), the
 *    same SHA-256 and ES256 code a firmware links (ES256 results are
 *    remembered per exact input, see p_es256_verify). With --sha256 host,
 *    SHA-256 is OpenSSL's instead (SHA instructions where the CPU has
 *    them): a device with a hash engine, so that 1000 simulated devices
 *    hashing in software on the gateway's own cores do not dominate a
 *    gateway benchmark (bench/ota.sh). Flash and state are devsim's own
 *    rather than the POSIX port's.
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
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <tml/agent_port_mbedtls.h>

/* SHA256_Init/Update/Final: deprecated in OpenSSL 3 but kept; the EVP
 * interface would need a heap context per device. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

_Static_assert(sizeof(SHA256_CTX) <= TMLA_SHA256_CTX_SIZE,
               "the agent's hash context holds OpenSSL's SHA256_CTX");

int dev_publish(void *user, const char *topic, const uint8_t *payload,
                size_t len, uint8_t qos, bool retain);

static int
path_of(const struct dev *d, char *buf, size_t cap, const char *what,
        unsigned k)
{
    int n = snprintf(buf, cap, "%s/%s%u.bin", d->dir, what, k);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

/* pread until len bytes; past the end of the file reads 0xff (erased) when
 * fill_erased, else fails. */
static int
fd_read(int fd, uint32_t off, void *buf, size_t len, bool fill_erased)
{
    size_t got = 0;
    ssize_t n;

    while (got < len) {
        n = pread(fd, (uint8_t *)buf + got, len - got, (off_t)off + (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got < len) {
        if (!fill_erased)
            return TMLA_PORT_FAIL;
        memset((uint8_t *)buf + got, 0xff, len - got);
    }
    return TMLA_PORT_OK;
}

static int
fd_write(int fd, uint32_t off, const void *buf, size_t len)
{
    size_t done = 0;
    ssize_t n;

    while (done < len) {
        n = pwrite(fd, (const uint8_t *)buf + done, len - done,
                   (off_t)off + (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return TMLA_PORT_FAIL;
        done += (size_t)n;
    }
    return TMLA_PORT_OK;
}

static int
file_read(const struct dev *d, const char *what, unsigned k, uint32_t off,
          void *buf, size_t len, bool fill_erased)
{
    char path[600];
    int fd, rc;

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
    rc = fd_read(fd, off, buf, len, fill_erased);
    close(fd);
    return rc;
}

static int
file_write(const struct dev *d, const char *what, unsigned k, uint32_t off,
           const void *buf, size_t len)
{
    char path[600];
    int fd, rc;

    if (path_of(d, path, sizeof(path), what, k) != 0)
        return TMLA_PORT_FAIL;
    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return TMLA_PORT_FAIL;
    rc = fd_write(fd, off, buf, len);
    if (close(fd) != 0)
        rc = TMLA_PORT_FAIL;
    return rc;
}

/* Slot files stay open, one descriptor per slot and device (up to
 * SLOT_FDS_MAX in the process, then opened per operation): an open() per
 * flash operation (a 64 KiB update is ~3000 of them, the hash read-back in
 * 64-byte reads) was most of tml-devsim's CPU in bench/ota.sh. They are
 * opened (and created) at boot, before any download is timed. The two
 * state files too (same cap, shared): the first update of a fresh device
 * created its second state file, and 1000 ext4 inode allocations in a
 * row (0.3 ms each in a /tmp full of recently deleted inodes) held every
 * device's traffic for ~0.35 s of bench/ota.sh's offer phase; a real
 * device's flash has both state sectors from the factory. An empty state
 * file reads as a failed read, exactly as a missing one. */
#define SLOT_FDS_MAX 4096u
static unsigned n_slot_fds;

/* The fd of slot, and whether the caller must close it. */
static int
slot_fd(struct dev *d, uint8_t slot, bool *must_close)
{
    char path[600];
    int fd;

    *must_close = false;
    if (d->slot_fd[slot] > 0)
        return d->slot_fd[slot] - 1;
    if (path_of(d, path, sizeof(path), "slot", slot) != 0)
        return -1;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (n_slot_fds < SLOT_FDS_MAX) {
        d->slot_fd[slot] = fd + 1;
        n_slot_fds++;
    } else {
        *must_close = true;
    }
    return fd;
}

/* The fd of state copy k, or -1 (not kept open: use file_read/write). */
static int
state_fd(struct dev *d, uint8_t k)
{
    char path[600];
    int fd;

    if (d->state_fd[k] > 0)
        return d->state_fd[k] - 1;
    if (n_slot_fds >= SLOT_FDS_MAX ||
        path_of(d, path, sizeof(path), "state", k) != 0)
        return -1;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    d->state_fd[k] = fd + 1;
    n_slot_fds++;
    return fd;
}

void
port_close(struct dev *d)
{
    free(d->rd);
    d->rd = NULL;
    d->rd_slot = 0;
    for (unsigned k = 0; k < 2; k++) {
        if (d->slot_fd[k] > 0) {
            close(d->slot_fd[k] - 1);
            n_slot_fds--;
        }
        d->slot_fd[k] = 0;
        if (d->state_fd[k] > 0) {
            close(d->state_fd[k] - 1);
            n_slot_fds--;
        }
        d->state_fd[k] = 0;
    }
}

/* Reads go through one cached block per device (the agent hashes a slot
 * in 64-byte reads); any write or erase of that slot drops it. */
static int
slot_io(struct dev *d, uint8_t slot, uint32_t off, void *rbuf,
        const void *wbuf, size_t len)
{
    bool must_close;
    int fd = slot_fd(d, slot, &must_close), rc;
    uint32_t base = off & ~(uint32_t)(PORT_RD_BLOCK - 1);

    if (fd < 0)
        return TMLA_PORT_FAIL;
    if (rbuf != NULL && off - base + len <= PORT_RD_BLOCK &&
        (d->rd != NULL || (d->rd = malloc(PORT_RD_BLOCK)) != NULL)) {
        rc = TMLA_PORT_OK;
        if (d->rd_slot != slot + 1u || d->rd_base != base) {
            d->rd_slot = 0;
            rc = fd_read(fd, base, d->rd, PORT_RD_BLOCK, true);
            if (rc == TMLA_PORT_OK) {
                d->rd_slot = slot + 1u;
                d->rd_base = base;
            }
        }
        if (rc == TMLA_PORT_OK)
            memcpy(rbuf, d->rd + (off - base), len);
    } else if (rbuf != NULL) {
        rc = fd_read(fd, off, rbuf, len, true);
    } else {
        if (d->rd_slot == slot + 1u)
            d->rd_slot = 0;
        rc = fd_write(fd, off, wbuf, len);
    }
    if (must_close)
        close(fd);
    return rc;
}

static int
p_flash_read(void *user, uint8_t slot, uint32_t off, void *buf, size_t len)
{
    struct dev *d = user;

    if (slot > 1 || off > d->port.slot_size ||
        len > d->port.slot_size - off)
        return TMLA_PORT_FAIL;
    return slot_io(d, slot, off, buf, NULL, len);
}

static int
p_flash_write(void *user, uint8_t slot, uint32_t off, const void *buf,
              size_t len)
{
    struct dev *d = user;

    if (slot > 1 || off > d->port.slot_size ||
        len > d->port.slot_size - off)
        return TMLA_PORT_FAIL;
    return slot_io(d, slot, off, NULL, buf, len);
}

static int
p_flash_erase(void *user, uint8_t slot, uint32_t off, size_t len)
{
    struct dev *d = user;
    uint8_t ff[4096];
    size_t done = 0;
    bool must_close;
    struct stat st;
    int fd;

    if (slot > 1 || off > d->port.slot_size ||
        len > d->port.slot_size - off)
        return TMLA_PORT_FAIL;
    /* Past the end of a slot file reads as erased (0xff): an erase that
     * reaches the end truncates the file at off instead of writing 0xff.
     * A download erases each sector just before writing it, at the end of
     * the file, so in bench/ota.sh this spared tml-devsim's one thread
     * 16000 writes of 4 KiB of 0xff (a real device's flash erases in
     * hardware). What the agent reads back is the same either way. */
    fd = slot_fd(d, slot, &must_close);
    if (fd >= 0 && fstat(fd, &st) == 0 &&
        (uint64_t)st.st_size <= (uint64_t)off + len) {
        int rc = TMLA_PORT_OK;

        if ((uint64_t)st.st_size > off && ftruncate(fd, (off_t)off) != 0)
            rc = TMLA_PORT_FAIL;
        if (d->rd_slot == slot + 1u)
            d->rd_slot = 0; /* the cached read block may hold old bytes */
        if (must_close)
            close(fd);
        return rc;
    }
    if (fd >= 0 && must_close)
        close(fd);
    memset(ff, 0xff, sizeof(ff));
    while (done < len) {
        size_t n = len - done < sizeof(ff) ? len - done : sizeof(ff);
        if (slot_io(d, slot, off + (uint32_t)done, NULL, ff, n) !=
            TMLA_PORT_OK)
            return TMLA_PORT_FAIL;
        done += n;
    }
    return TMLA_PORT_OK;
}

static int
p_state_read(void *user, uint8_t copy, void *buf, size_t len)
{
    struct dev *d = user;
    int fd;

    if (copy > 1)
        return TMLA_PORT_FAIL;
    fd = d->state_fd[copy] - 1;
    if (fd >= 0)
        return fd_read(fd, 0, buf, len, false);
    return file_read(user, "state", copy, 0, buf, len, false);
}

static int
p_state_write(void *user, uint8_t copy, const void *buf, size_t len)
{
    struct dev *d = user;
    int fd;

    if (copy > 1)
        return TMLA_PORT_FAIL;
    /* The record has a fixed size: overwrite in place (an O_TRUNC per
     * state write frees and allocates the file's block every time). */
    fd = d->state_fd[copy] - 1;
    if (fd >= 0)
        return fd_write(fd, 0, buf, len);
    return file_write(user, "state", copy, 0, buf, len);
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
    if (state == TML_OTA_OFFERED || state == TML_OTA_VERIFYING ||
        state == TML_OTA_CONFIRMED) {
        struct timespec ts;
        uint64_t ms;

        clock_gettime(CLOCK_REALTIME, &ts);
        ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
        if (state == TML_OTA_OFFERED)
            d->ota_offered_wall_ms = ms; /* accepted the offer */
        else if (state == TML_OTA_VERIFYING)
            d->ota_stored_wall_ms = ms;
        else
            d->ota_confirmed_wall_ms = ms;
    }
    /* The next step of an update (hash the slot, activate, run the golden
     * vectors) happens in the agent's next poll: poll at once, as a
     * firmware's main loop would, not at the 200 ms telemetry cadence. */
    if (state == TML_OTA_VERIFYING || state == TML_OTA_READY ||
        state == TML_OTA_ACTIVATING || state == TML_OTA_TRIAL)
        d->next_poll_ms = d->sim->now_ms;
}

/* ES256 through the agent's mbedTLS port, remembered per exact input
 * (key, hash, signature): a real fleet verifies an offer on every device at
 * once, each on its own CPU, while tml-devsim would do 1000 identical
 * verifications (~2 ms each) one after the other on one thread and hold
 * every other device's traffic behind them. Any input not seen before
 * (another key, manifest or signature) is verified for real. */
#define VERIFY_MEMO 16
static struct {
    uint8_t in[65 + TML_SHA256_LEN + TML_ES256_SIG_LEN];
    int rc;
    bool used;
} memo[VERIFY_MEMO];
static unsigned memo_next;

static int
p_es256_verify(void *user, const uint8_t pub[65],
               const uint8_t hash[TML_SHA256_LEN],
               const uint8_t sig[TML_ES256_SIG_LEN])
{
    uint8_t in[sizeof(memo[0].in)];
    int rc;

    memcpy(in, pub, 65);
    memcpy(in + 65, hash, TML_SHA256_LEN);
    memcpy(in + 65 + TML_SHA256_LEN, sig, TML_ES256_SIG_LEN);
    for (unsigned i = 0; i < VERIFY_MEMO; i++)
        if (memo[i].used && memcmp(memo[i].in, in, sizeof(in)) == 0)
            return memo[i].rc;
    rc = tmla_mbedtls_es256_verify(user, pub, hash, sig);
    memcpy(memo[memo_next].in, in, sizeof(in));
    memo[memo_next].rc = rc;
    memo[memo_next].used = true;
    memo_next = (memo_next + 1) % VERIFY_MEMO;
    return rc;
}

static int
p_sha256_init(void *user, void *ctx)
{
    (void)user;
    return SHA256_Init(ctx) == 1 ? 0 : -1;
}

static int
p_sha256_update(void *user, void *ctx, const void *p, size_t len)
{
    (void)user;
    return SHA256_Update(ctx, p, len) == 1 ? 0 : -1;
}

static int
p_sha256_final(void *user, void *ctx, uint8_t out[TML_SHA256_LEN])
{
    (void)user;
    return SHA256_Final(out, ctx) == 1 ? 0 : -1;
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
    p->es256_verify = p_es256_verify;
    if (d->sim->o.host_sha256) {
        p->sha256_init = p_sha256_init;
        p->sha256_update = p_sha256_update;
        p->sha256_final = p_sha256_final;
    }
    p->unix_time = p_unix_time;
    p->random = p_random;
    p->health = p_health;
    p->activate = p_activate;
    p->infer = p_infer;
    p->ota_event = p_ota_event;
    for (uint8_t k = 0; k < 2; k++) {
        bool must_close;
        int fd = slot_fd(d, k, &must_close);

        if (fd >= 0 && must_close)
            close(fd);
        (void)state_fd(d, k);
    }
}
