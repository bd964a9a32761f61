/*
 * internal.h: libtmlbundle's cross-file internals (tml__ prefix).
 */
#ifndef TML_BUNDLE_INTERNAL_H
#define TML_BUNDLE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tml/bundle.h"

/* Writes len bytes to path with mode (applied with fchmod too, so an old
 * file's wider mode does not survive), fsyncs. excl: fail with EEXIST if the
 * file exists. Returns OK or E_IO (errno set). */
enum tml_bundle_err tml__write_file_mode(const char *path, const void *buf,
                                         size_t len, mode_t mode, bool excl);

/* ES256 check of a SHA-256 hash against a raw r||s signature. Returns OK or
 * E_SIGNATURE. */
enum tml_bundle_err tml__ecdsa_verify(const struct tml_pubkey *pub,
                                      const uint8_t hash[32],
                                      const uint8_t sig[TML_ES256_SIG_LEN]);

#endif
