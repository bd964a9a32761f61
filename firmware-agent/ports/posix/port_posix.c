/*
 * port_posix.c: file-backed model slots and persisted state for struct
 * tmla_port (simulator and host tests), with an injectable power cut.
 * See tml/agent_port_posix.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tml/agent_port_posix.h>

#define IO_BLOCK 4096

static int
path_of(const struct tmla_posix *p, const char *kind, unsigned idx, char *buf,
        size_t cap)
{
    int n = snprintf(buf, cap, "%s/%s%u.bin", p->dir, kind, idx);

    return n > 0 && (size_t)n < cap ? 0 : -ENAMETOOLONG;
}

static int
pread_all(int fd, void *buf, size_t len, off_t off)
{
    uint8_t *b = buf;

    while (len > 0) {
        ssize_t n = pread(fd, b, len, off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        b += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

static int
pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
    const uint8_t *b = buf;

    while (len > 0) {
        ssize_t n = pwrite(fd, b, len, off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        b += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

/* Takes len bytes from the write budget; returns how many may be written
 * (less than len means the power goes during this write). */
static size_t
budget_take(struct tmla_posix *p, size_t len)
{
    if (p->dead)
        return 0;
    if (p->write_budget < 0)
        return len;
    if ((uint64_t)p->write_budget >= len) {
        p->write_budget -= (int64_t)len;
        return len;
    }
    len = (size_t)p->write_budget;
    p->write_budget = 0;
    p->dead = true;
    return len;
}

int
tmla_posix_open(struct tmla_posix *p, const char *dir, uint32_t slot_size,
                uint32_t erase_size, uint32_t write_align)
{
    char path[300];
    uint8_t ff[IO_BLOCK];

    if (strlen(dir) >= sizeof p->dir || erase_size == 0 ||
        slot_size % erase_size != 0 || write_align == 0)
        return -EINVAL;
    memset(p, 0, sizeof *p);
    strcpy(p->dir, dir);
    p->slot_size = slot_size;
    p->erase_size = erase_size;
    p->write_align = write_align;
    p->write_budget = -1;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return -errno;
    memset(ff, 0xff, sizeof ff);
    for (unsigned s = 0; s < 2; s++) {
        struct stat st;
        int fd, rc = 0;

        if (path_of(p, "slot", s, path, sizeof path) != 0)
            return -ENAMETOOLONG;
        if (stat(path, &st) == 0 && (uint64_t)st.st_size == slot_size)
            continue;
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            return -errno;
        for (uint32_t off = 0; off < slot_size && rc == 0; off += IO_BLOCK) {
            size_t n = slot_size - off < IO_BLOCK ? slot_size - off : IO_BLOCK;

            rc = pwrite_all(fd, ff, n, off);
        }
        if (close(fd) != 0 || rc != 0)
            return -EIO;
    }
    return 0;
}

int
tmla_posix_flash_read(void *user, uint8_t slot, uint32_t off, void *buf,
                      size_t len)
{
    struct tmla_posix *p = user;
    char path[300];
    int fd, rc;

    if (slot > 1 || off > p->slot_size || len > p->slot_size - off ||
        path_of(p, "slot", slot, path, sizeof path) != 0)
        return -1;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    rc = pread_all(fd, buf, len, off);
    close(fd);
    return rc;
}

static bool
aligned(const struct tmla_posix *p, uint32_t off, size_t len, uint32_t unit)
{
    return !p->strict || (off % unit == 0 && len % unit == 0);
}

int
tmla_posix_flash_write(void *user, uint8_t slot, uint32_t off, const void *buf,
                       size_t len)
{
    struct tmla_posix *p = user;
    char path[300];
    uint8_t old[IO_BLOCK];
    size_t n;
    int fd, rc = 0;

    if (slot > 1 || off > p->slot_size || len > p->slot_size - off ||
        !aligned(p, off, len, p->write_align) ||
        path_of(p, "slot", slot, path, sizeof path) != 0) {
        p->n_violations++;
        return -1;
    }
    fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -1;
    /* MCUboot's simulator: writing over bytes that are not erased is a
     * bug in the caller, not something flash would do quietly. */
    for (size_t done = 0; p->strict && done < len && rc == 0; done += n) {
        n = len - done < IO_BLOCK ? len - done : IO_BLOCK;
        rc = pread_all(fd, old, n, off + done);
        for (size_t i = 0; rc == 0 && i < n; i++)
            if (old[i] != 0xff)
                rc = -1;
    }
    if (rc != 0) {
        p->n_violations++;
        close(fd);
        return -1;
    }
    n = budget_take(p, len);
    p->n_flash_writes++;
    if (n > 0)
        rc = pwrite_all(fd, buf, n, off);
    if (close(fd) != 0 || rc != 0 || n < len)
        return -1;
    return 0;
}

int
tmla_posix_flash_erase(void *user, uint8_t slot, uint32_t off, size_t len)
{
    struct tmla_posix *p = user;
    char path[300];
    uint8_t ff[IO_BLOCK];
    size_t n;
    int fd, rc = 0;

    if (slot > 1 || off > p->slot_size || len > p->slot_size - off ||
        !aligned(p, off, len, p->erase_size) ||
        path_of(p, "slot", slot, path, sizeof path) != 0) {
        p->n_violations++;
        return -1;
    }
    fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -1;
    n = budget_take(p, len);
    p->n_erases++;
    memset(ff, 0xff, sizeof ff);
    /* A cut erase leaves the first part erased and the rest as it was. */
    for (size_t done = 0; done < n && rc == 0; done += IO_BLOCK)
        rc = pwrite_all(fd, ff, n - done < IO_BLOCK ? n - done : IO_BLOCK,
                        off + done);
    if (close(fd) != 0 || rc != 0 || n < len)
        return -1;
    return 0;
}

int
tmla_posix_state_read(void *user, uint8_t copy, void *buf, size_t len)
{
    struct tmla_posix *p = user;
    char path[300];
    int fd, rc;

    if (copy > 1 || path_of(p, "state", copy, path, sizeof path) != 0)
        return -1;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    rc = pread_all(fd, buf, len, 0);
    close(fd);
    return rc;
}

int
tmla_posix_state_write(void *user, uint8_t copy, const void *buf, size_t len)
{
    struct tmla_posix *p = user;
    char path[300];
    size_t n;
    int fd, rc = 0;

    if (copy > 1 || path_of(p, "state", copy, path, sizeof path) != 0)
        return -1;
    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    n = budget_take(p, len);
    p->n_state_writes++;
    if (n > 0)
        rc = pwrite_all(fd, buf, n, 0);
    /* fdatasync: the copy must be durable before the agent relies on it. */
    if (rc == 0 && n == len && !p->no_sync && fdatasync(fd) != 0)
        rc = -1;
    if (close(fd) != 0 || rc != 0 || n < len)
        return -1;
    return 0;
}

void
tmla_posix_fill_port(struct tmla_posix *p, struct tmla_port *port)
{
    port->user = p;
    port->slot_size = p->slot_size;
    port->erase_size = p->erase_size;
    port->write_align = p->write_align;
    port->flash_read = tmla_posix_flash_read;
    port->flash_write = tmla_posix_flash_write;
    port->flash_erase = tmla_posix_flash_erase;
    port->state_read = tmla_posix_state_read;
    port->state_write = tmla_posix_state_write;
}
