/*
 * fuzz_register.c: libFuzzer harness for the PKI register parser
 * (tools/tmlctl/pki.c, DIR/devices.tsv): load must accept or reject with a
 * message, never crash; what loads must save and load back identically.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pki.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64], dir2[80];

static void
cleanup(void)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/%s", dir2, PKI_DB);
    unlink(p);
    rmdir(dir2);
    snprintf(p, sizeof(p), "%s/%s", dir, PKI_DB);
    unlink(p);
    rmdir(dir);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (dir[0] == '\0') {
        strcpy(dir, "/tmp/tmlctl_fuzzreg.XXXXXX");
        if (mkdtemp(dir) == NULL)
            abort();
        snprintf(dir2, sizeof(dir2), "%s/b", dir);
        if (mkdir(dir2, 0700) != 0)
            abort();
        atexit(cleanup);
    }
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, PKI_DB);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    struct pki_db db, back;
    char err[256];
    if (pki_db_load(dir, &db, err) == 0) {
        if (pki_db_save(dir2, &db, err) != 0 ||
            pki_db_load(dir2, &back, err) != 0 || back.n != db.n)
            abort();
        for (size_t i = 0; i < db.n; i++)
            if (strcmp(db.v[i].id, back.v[i].id) != 0 ||
                strcmp(db.v[i].serial, back.v[i].serial) != 0 ||
                db.v[i].revoked != back.v[i].revoked)
                abort();
        pki_db_free(&back);
    }
    pki_db_free(&db);
    return 0;
}
