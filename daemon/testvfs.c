/*
 * testvfs.c: a shim SQLite VFS for fault tests (R7 in TEST-CATALOGUE.md),
 * compiled into test builds only (TML_TEST_HOOKS). It wraps the default VFS
 * and, for the main database and WAL files, fails writes and syncs:
 *   TMLD_TEST_IOERR_FILE=path  every xWrite/xSync fails (SQLITE_IOERR_WRITE /
 *                              SQLITE_IOERR_FSYNC) while path exists: a
 *                              persistent fault that the test clears by
 *                              removing the file;
 *   TMLD_TEST_IOERR_NTH=n      the n-th xWrite/xSync after start fails once:
 *                              a transient fault (SQLite's FAULTSIM sweep).
 * Without those variables nothing is installed.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

#ifdef TMLD_TEST_HOOKS

struct sfile {
    sqlite3_file base;
    bool is_faulty; /* main db or WAL */
    sqlite3_file *real;
};

static sqlite3_vfs shim;
static sqlite3_vfs *real_vfs;
static const char *fault_file;
static long fault_nth;
static atomic_long n_calls;

static bool
fault_now(struct sfile *f)
{
    if (!f->is_faulty)
        return false;
    long n = atomic_fetch_add(&n_calls, 1) + 1;
    if (fault_nth > 0 && n == fault_nth)
        return true;
    return fault_file != NULL && access(fault_file, F_OK) == 0;
}

#define REAL(f) (((struct sfile *)(f))->real)

static int
x_close(sqlite3_file *f)
{
    int rc = REAL(f)->pMethods ? REAL(f)->pMethods->xClose(REAL(f)) : SQLITE_OK;
    return rc;
}
static int
x_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xRead(REAL(f), p, n, off);
}
static int
x_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off)
{
    if (fault_now((struct sfile *)f))
        return SQLITE_IOERR_WRITE;
    return REAL(f)->pMethods->xWrite(REAL(f), p, n, off);
}
static int
x_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int
x_sync(sqlite3_file *f, int flags)
{
    if (fault_now((struct sfile *)f))
        return SQLITE_IOERR_FSYNC;
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int
x_size(sqlite3_file *f, sqlite3_int64 *out)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), out);
}
static int
x_lock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int
x_unlock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int
x_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int
x_fcntl(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int
x_sector(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int
x_devchar(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int
x_shmmap(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, pgsz, extend, pp);
}
static int
x_shmlock(sqlite3_file *f, int off, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void
x_shmbarrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int
x_shmunmap(sqlite3_file *f, int del)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int
x_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    return REAL(f)->pMethods->xFetch(REAL(f), off, n, pp);
}
static int
x_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

static const sqlite3_io_methods shim_io = {
    3,          x_close,   x_read,      x_write,      x_truncate,
    x_sync,     x_size,    x_lock,      x_unlock,     x_reserved,
    x_fcntl,    x_sector,  x_devchar,   x_shmmap,     x_shmlock,
    x_shmbarrier, x_shmunmap, x_fetch,  x_unfetch};

static int
x_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags,
       int *out_flags)
{
    (void)vfs;
    struct sfile *f = (struct sfile *)file;
    f->real = (sqlite3_file *)(f + 1);
    f->is_faulty = (flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL)) != 0;
    int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
    /* SQLite calls xClose only when pMethods is set. */
    f->base.pMethods = f->real->pMethods ? &shim_io : NULL;
    return rc;
}

#define FWD(name, ...) real_vfs->name(real_vfs, __VA_ARGS__)
static int
x_delete(sqlite3_vfs *v, const char *n, int sync)
{
    (void)v;
    return FWD(xDelete, n, sync);
}
static int
x_access(sqlite3_vfs *v, const char *n, int flags, int *out)
{
    (void)v;
    return FWD(xAccess, n, flags, out);
}
static int
x_fullpath(sqlite3_vfs *v, const char *n, int len, char *out)
{
    (void)v;
    return FWD(xFullPathname, n, len, out);
}
static void *
x_dlopen(sqlite3_vfs *v, const char *n)
{
    (void)v;
    return FWD(xDlOpen, n);
}
static void
x_dlerror(sqlite3_vfs *v, int n, char *msg)
{
    (void)v;
    FWD(xDlError, n, msg);
}
static void (*x_dlsym(sqlite3_vfs *v, void *h, const char *s))(void)
{
    (void)v;
    return FWD(xDlSym, h, s);
}
static void
x_dlclose(sqlite3_vfs *v, void *h)
{
    (void)v;
    FWD(xDlClose, h);
}
static int
x_random(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return FWD(xRandomness, n, out);
}
static int
x_sleep(sqlite3_vfs *v, int us)
{
    (void)v;
    return FWD(xSleep, us);
}
static int
x_time(sqlite3_vfs *v, double *out)
{
    (void)v;
    return FWD(xCurrentTime, out);
}
static int
x_lasterr(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return FWD(xGetLastError, n, out);
}
static int
x_time64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    (void)v;
    return FWD(xCurrentTimeInt64, out);
}

void
testvfs_install(void)
{
    fault_file = getenv("TMLD_TEST_IOERR_FILE");
    const char *nth = getenv("TMLD_TEST_IOERR_NTH");
    fault_nth = nth ? atol(nth) : 0;
    if (fault_file == NULL && fault_nth <= 0)
        return;
    real_vfs = sqlite3_vfs_find(NULL);
    if (real_vfs == NULL)
        return;
    memset(&shim, 0, sizeof(shim));
    shim.iVersion = 2;
    shim.szOsFile = (int)sizeof(struct sfile) + real_vfs->szOsFile;
    shim.mxPathname = real_vfs->mxPathname;
    shim.zName = "tmld-faults";
    shim.xOpen = x_open;
    shim.xDelete = x_delete;
    shim.xAccess = x_access;
    shim.xFullPathname = x_fullpath;
    shim.xDlOpen = x_dlopen;
    shim.xDlError = x_dlerror;
    shim.xDlSym = x_dlsym;
    shim.xDlClose = x_dlclose;
    shim.xRandomness = x_random;
    shim.xSleep = x_sleep;
    shim.xCurrentTime = x_time;
    shim.xGetLastError = x_lasterr;
    shim.xCurrentTimeInt64 = x_time64;
    sqlite3_vfs_register(&shim, 1);
    log_warn("test: fault-injecting VFS installed (file %s, nth %ld)",
             fault_file ? fault_file : "-", fault_nth);
}

#else

void
testvfs_install(void)
{
}

#endif
