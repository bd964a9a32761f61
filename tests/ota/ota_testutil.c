/*
 * ota_testutil.c: see ota_testutil.h.
 */
#define _GNU_SOURCE
#include "ota_testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *
ota_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *p;

    if (base == NULL || *base == '\0')
        base = "/tmp";
    if (asprintf(&p, "%s/ota-%s-XXXXXX", base, tag) < 0 || mkdtemp(p) == NULL) {
        perror("mkdtemp");
        abort();
    }
    return p;
}

static void
rm_level(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4096];

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (e->d_type == DT_DIR && depth < 3)
            rm_level(path, depth + 1);
        else
            unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

void
ota_rmtree(const char *dir)
{
    rm_level(dir, 0);
}

uint8_t *
ota_make_bundle(const struct tml_privkey *key, const char *name,
                uint32_t version, const char *hw, const uint8_t *image,
                size_t image_len, uint32_t created, uint32_t expires,
                size_t *len)
{
    struct tml_manifest m;
    uint8_t *out = NULL;
    static const char *const labels[] = {"yes", "no"};

    memset(&m, 0, sizeof(m));
    m.name.p = name;
    m.name.len = strlen(name);
    m.version = version;
    m.hw.p = hw;
    m.hw.len = strlen(hw);
    m.created = created;
    m.expires = expires;
    m.model_size = (uint32_t)image_len;
    m.arena_size = 8192;
    m.dtype = TML_DTYPE_U8;
    m.n_shape = 1;
    m.input_shape[0] = 16;
    m.n_labels = 2;
    if (tml_bundle_build(key, &m, image, image_len, labels, 2, &out, len) !=
        TML_BUNDLE_OK) {
        fprintf(stderr, "tml_bundle_build failed\n");
        abort();
    }
    return out;
}

void
ota_fill(uint8_t *buf, size_t len, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;

    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t)x;
    }
}
