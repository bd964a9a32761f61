/*
 * test_store.c: the artifact store (daemon/ota_store.c) with real bundles
 * and real files: content addressing, refusal of bundles that do not verify
 * against the trusted keys (S1 wrong key, S3 tampered payload, S6 expired),
 * re-verification on load, the chunk cache (one disk read for many chunk
 * requests) and chunk bounds (S9).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "ota_store.h"
#include "ota_testutil.h"

#define NOW 1764230000u

struct fx {
    char *dir;
    char pub_path[4096];
    struct tml_privkey *key;   /* trusted */
    struct tml_privkey *other; /* not trusted */
    struct ota_store s;
    uint8_t image[65536];
};

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    struct tml_pubkey pub;
    char err[OTA_STORE_ERR_MAX];

    assert_non_null(f);
    f->dir = ota_tmpdir("store");
    assert_int_equal(tml_privkey_generate(&f->key), TML_BUNDLE_OK);
    assert_int_equal(tml_privkey_generate(&f->other), TML_BUNDLE_OK);
    tml_privkey_public(f->key, &pub);
    snprintf(f->pub_path, sizeof(f->pub_path), "%s/fleet.pub", f->dir);
    assert_int_equal(tml_pubkey_write_pem(&pub, f->pub_path), TML_BUNDLE_OK);
    assert_int_equal(ota_store_init(&f->s, f->dir, 1 << 20), 0);
    assert_int_equal(ota_store_add_trusted(&f->s, f->pub_path, err,
                                           sizeof(err)),
                     0);
    ota_fill(f->image, sizeof(f->image), 42);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;

    ota_store_close(&f->s);
    tml_privkey_free(f->key);
    tml_privkey_free(f->other);
    ota_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void
test_store_put_is_content_addressed(void **state)
{
    struct fx *f = *state;
    struct ota_model_info info, again;
    char err[OTA_STORE_ERR_MAX], path[8192];
    size_t len;
    uint8_t *b = ota_make_bundle(f->key, "kws", 7, "nrf52840", f->image,
                                 sizeof(f->image), NOW, 0, &len);
    struct stat st;

    assert_int_equal(ota_store_put(&f->s, b, len, NOW, &info, err,
                                   sizeof(err)),
                     0);
    assert_string_equal(info.name, "kws");
    assert_string_equal(info.hw, "nrf52840");
    assert_int_equal(info.version, 7);
    assert_int_equal(info.size, sizeof(f->image));
    assert_int_equal(info.bundle_len, len);
    assert_int_equal(strlen(info.key_id), 16);
    assert_true(ota_is_hash_hex(info.artifact));
    assert_true(ota_is_hash_hex(info.sha256));
    assert_string_not_equal(info.artifact, info.sha256);
    snprintf(path, sizeof(path), "%s/%s.tmlb", f->s.dir, info.artifact);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, len);
    /* Idempotent. */
    assert_int_equal(ota_store_put(&f->s, b, len, NOW, &again, err,
                                   sizeof(err)),
                     0);
    assert_string_equal(again.artifact, info.artifact);
    free(b);
}

/* S1: a bundle signed by a key tmld does not trust is refused. */
static void
test_store_refuses_untrusted_key(void **state)
{
    struct fx *f = *state;
    struct ota_model_info info;
    char err[OTA_STORE_ERR_MAX];
    size_t len;
    uint8_t *b = ota_make_bundle(f->other, "kws", 7, "nrf52840", f->image,
                                 1024, NOW, 0, &len);

    assert_int_equal(ota_store_put(&f->s, b, len, NOW, &info, err,
                                   sizeof(err)),
                     -EPERM);
    assert_non_null(strstr(err, "untrusted key"));
    free(b);
}

/* S3: one flipped payload byte (and one flipped signature byte). */
static void
test_store_refuses_tampered_bundle(void **state)
{
    struct fx *f = *state;
    struct ota_model_info info;
    char err[OTA_STORE_ERR_MAX];
    size_t len;
    uint8_t *b = ota_make_bundle(f->key, "kws", 7, "nrf52840", f->image,
                                 4096, NOW, 0, &len);

    b[len - 100] ^= 0x01; /* inside the image */
    assert_int_equal(ota_store_put(&f->s, b, len, NOW, &info, err,
                                   sizeof(err)),
                     -EPERM);
    assert_non_null(strstr(err, "hash"));
    b[len - 100] ^= 0x01;
    /* The signature sits before the image; flip a byte of the COSE part. */
    b[40] ^= 0x80;
    assert_int_not_equal(ota_store_put(&f->s, b, len, NOW, &info, err,
                                       sizeof(err)),
                         0);
    free(b);
}

/* S6: an expired manifest is never stored (hence never offered). */
static void
test_store_refuses_expired(void **state)
{
    struct fx *f = *state;
    struct ota_model_info info;
    char err[OTA_STORE_ERR_MAX];
    size_t len;
    uint8_t *b = ota_make_bundle(f->key, "kws", 7, "nrf52840", f->image,
                                 512, NOW - 100, NOW - 1, &len);

    assert_int_equal(ota_store_put(&f->s, b, len, NOW, &info, err,
                                   sizeof(err)),
                     -EPERM);
    assert_non_null(strstr(err, "expired"));
    free(b);
}

static void
test_store_refuses_garbage_and_no_keys(void **state)
{
    struct fx *f = *state;
    struct ota_model_info info;
    char err[OTA_STORE_ERR_MAX];
    struct ota_store empty;
    uint8_t junk[64];
    size_t len;
    uint8_t *b;

    memset(junk, 0xa5, sizeof(junk));
    assert_int_equal(ota_store_put(&f->s, junk, sizeof(junk), NOW, &info,
                                   err, sizeof(err)),
                     -EINVAL);
    assert_int_equal(ota_store_put(&f->s, junk, 0, NOW, &info, err,
                                   sizeof(err)),
                     -EINVAL);
    assert_int_equal(ota_store_init(&empty, f->dir, 1 << 20), 0);
    b = ota_make_bundle(f->key, "kws", 7, "nrf52840", f->image, 512, NOW, 0,
                        &len);
    assert_int_equal(ota_store_put(&empty, b, len, NOW, &info, err,
                                   sizeof(err)),
                     -EPERM);
    assert_non_null(strstr(err, "trusted"));
    ota_store_close(&empty);
    /* The same key twice is a configuration error. */
    assert_int_equal(ota_store_add_trusted(&f->s, f->pub_path, err,
                                           sizeof(err)),
                     -EEXIST);
    free(b);
}

/* 1000 chunk requests read the artifact from disk once. */
static void
test_store_chunks_come_from_cache(void **state)
{
    struct fx *f = *state;
    struct ota_model_info info;
    struct ota_artifact *a, *a2;
    char err[OTA_STORE_ERR_MAX];
    const uint8_t *p;
    size_t len, n, total = 0;
    uint8_t *b = ota_make_bundle(f->key, "kws", 8, "nrf52840", f->image,
                                 sizeof(f->image), NOW, 0, &len);

    assert_int_equal(ota_store_put(&f->s, b, len, NOW, &info, err,
                                   sizeof(err)),
                     0);
    for (unsigned dev = 0; dev < 1000; dev++) {
        uint32_t off = (dev * 4096u) % sizeof(f->image);
        assert_int_equal(ota_store_get(&f->s, info.artifact, &a), 0);
        n = ota_store_chunk(a, off, 4096, &p);
        assert_int_equal(n, 4096);
        assert_memory_equal(p, f->image + off, n);
        total += n;
    }
    assert_int_equal(f->s.disk_loads, 1);
    assert_int_equal(total, 1000u * 4096u);
    assert_int_equal(ota_store_get(&f->s, info.artifact, &a2), 0);
    assert_ptr_equal(a, a2);
    assert_int_equal(a->image_len, sizeof(f->image));
    assert_true(a->cose_len > 64 && a->cose_len <= TML_MAX_MANIFEST);
    free(b);
}

/* S9: requests past the end or larger than a chunk are bounded. */
static void
test_store_chunk_bounds(void **state)
{
    struct fx *f = *state;
    struct ota_model_info info;
    struct ota_artifact *a;
    char err[OTA_STORE_ERR_MAX];
    const uint8_t *p = NULL;
    size_t len;
    uint8_t *b = ota_make_bundle(f->key, "kws", 9, "nrf52840", f->image,
                                 10000, NOW, 0, &len);

    assert_int_equal(ota_store_put(&f->s, b, len, NOW, &info, err,
                                   sizeof(err)),
                     0);
    assert_int_equal(ota_store_get(&f->s, info.artifact, &a), 0);
    assert_int_equal(ota_store_chunk(a, 0, 1u << 30, &p), TML_CHUNK_MAX);
    assert_int_equal(ota_store_chunk(a, 9000, 4096, &p), 1000);
    assert_memory_equal(p, f->image + 9000, 1000);
    assert_int_equal(ota_store_chunk(a, 10000, 4096, &p), 0);
    assert_int_equal(ota_store_chunk(a, UINT32_MAX, 4096, &p), 0);
    assert_int_equal(ota_store_chunk(a, 0, 0, &p), 0);
    free(b);
}

/* A file altered on disk after it was stored is never served. */
static void
test_store_reverifies_on_load(void **state)
{
    struct fx *f = *state;
    struct ota_model_info info;
    struct ota_artifact *a;
    struct ota_store fresh;
    char err[OTA_STORE_ERR_MAX], path[8192];
    size_t len;
    uint8_t *b = ota_make_bundle(f->key, "kws", 10, "nrf52840", f->image,
                                 2048, NOW, 0, &len);
    int fd;
    uint8_t byte;

    assert_int_equal(ota_store_put(&f->s, b, len, NOW, &info, err,
                                   sizeof(err)),
                     0);
    snprintf(path, sizeof(path), "%s/%s.tmlb", f->s.dir, info.artifact);
    fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &byte, 1, (off_t)len - 10), 1);
    byte ^= 0x40;
    assert_int_equal(pwrite(fd, &byte, 1, (off_t)len - 10), 1);
    close(fd);
    assert_int_equal(ota_store_init(&fresh, f->dir, 1 << 20), 0);
    assert_int_equal(ota_store_add_trusted(&fresh, f->pub_path, err,
                                           sizeof(err)),
                     0);
    assert_int_equal(ota_store_get(&fresh, info.artifact, &a), -EPERM);
    assert_int_equal(ota_store_get(&fresh, "00", &a), -EINVAL);
    assert_int_equal(ota_store_get(&fresh,
                                   "000000000000000000000000000000000000000"
                                   "0000000000000000000000000",
                                   &a),
                     -ENOENT);
    ota_store_close(&fresh);
    free(b);
}

static void
test_store_cache_evicts_lru_but_not_pinned(void **state)
{
    struct fx *f = *state;
    struct ota_model_info info[3];
    struct ota_artifact *a;
    char err[OTA_STORE_ERR_MAX];
    struct ota_store small;
    size_t len;

    assert_int_equal(ota_store_init(&small, f->dir, 100000), 0);
    assert_int_equal(ota_store_add_trusted(&small, f->pub_path, err,
                                           sizeof(err)),
                     0);
    for (unsigned i = 0; i < 3; i++) {
        uint8_t *b = ota_make_bundle(f->key, "kws", 20 + i, "nrf52840",
                                     f->image, 40000, NOW, 0, &len);
        assert_int_equal(ota_store_put(&small, b, len, NOW, &info[i], err,
                                       sizeof(err)),
                         0);
        free(b);
    }
    assert_int_equal(ota_store_get(&small, info[0].artifact, &a), 0);
    ota_store_pin(a);
    assert_int_equal(ota_store_get(&small, info[1].artifact, &a), 0);
    assert_int_equal(ota_store_get(&small, info[2].artifact, &a), 0);
    /* 0 is pinned, so 1 was evicted for 2. */
    assert_int_equal(small.n_cache, 2);
    assert_int_equal(small.disk_loads, 3);
    assert_int_equal(ota_store_get(&small, info[0].artifact, &a), 0);
    assert_int_equal(small.disk_loads, 3);
    assert_int_equal(ota_store_get(&small, info[1].artifact, &a), 0);
    assert_int_equal(small.disk_loads, 4);
    ota_store_close(&small);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_store_put_is_content_addressed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_refuses_untrusted_key,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_refuses_tampered_bundle,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_refuses_expired, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_store_refuses_garbage_and_no_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_chunks_come_from_cache,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_chunk_bounds, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_reverifies_on_load, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_store_cache_evicts_lru_but_not_pinned, setup, teardown),
    };
    return cmocka_run_group_tests_name("ota_store", tests, NULL, NULL);
}
