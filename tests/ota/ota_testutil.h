/*
 * ota_testutil.h: helpers shared by the OTA tests: temp dirs and signed
 * bundles built with the real tmlbundle library.
 */
#ifndef OTA_TESTUTIL_H
#define OTA_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "tml/bundle.h"

/* mkdtemp under $TMPDIR (or /tmp); aborts the test program on failure. */
char *ota_tmpdir(const char *tag);
/* rm -r of a directory made by ota_tmpdir (bounded depth 2). */
void ota_rmtree(const char *dir);

/* Builds a bundle of `image` signed by key with a minimal valid manifest
 * (model = whole image, u8 input [len], 2 labels). expires 0 = never.
 * Returns a malloc'ed buffer, *len set; aborts on failure. */
uint8_t *ota_make_bundle(const struct tml_privkey *key, const char *name,
                         uint32_t version, const char *hw,
                         const uint8_t *image, size_t image_len,
                         uint32_t created, uint32_t expires, size_t *len);

/* Fills buf with a deterministic pattern derived from seed. */
void ota_fill(uint8_t *buf, size_t len, uint32_t seed);

#endif
