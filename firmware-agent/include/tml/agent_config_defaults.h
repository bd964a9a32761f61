/*
 * tml/agent_config_defaults.h: compile-time sizes of libtmlagent.
 *
 * Every limit is "#ifndef X / #define X default", so a firmware build may set
 * its own with -D (the same value must be used for the library and for every
 * file that includes tml/agent.h, since the sizes shape struct tmla_agent).
 * The defaults are the "default config" of the footprint budget in README.md.
 */
#ifndef TML_AGENT_CONFIG_DEFAULTS_H
#define TML_AGENT_CONFIG_DEFAULTS_H

#include <tml/proto.h>

/* Classes counted per summary; a model with more labels has the excess
 * counted in the last class. Must be <= TML_MAX_CLASSES (proto). */
#ifndef TMLA_MAX_CLASSES
#define TMLA_MAX_CLASSES 8
#endif

/* Confidence histogram bins (bin i covers [i*10000/n, (i+1)*10000/n) bp). */
#ifndef TMLA_CONF_BINS
#define TMLA_CONF_BINS 10
#endif

/* Latency histogram bins: [0,1 ms), [1,2), [2,4) ... last bin open-ended. */
#ifndef TMLA_LAT_BINS
#define TMLA_LAT_BINS 12
#endif

/* Closed, unacknowledged summaries kept for resending (the tele ring). When
 * it is full the two oldest entries are folded into one. */
#ifndef TMLA_TELE_RING
#define TMLA_TELE_RING 4
#endif

/* Captured inputs held at once (reservoir slots + unacknowledged). The bytes
 * themselves live in the application's sample buffer (tmla_config). */
#ifndef TMLA_SAMPLE_SLOTS
#define TMLA_SAMPLE_SLOTS 4
#endif

/* Largest encoded message the agent builds (its transmit scratch buffer):
 * the largest hello (8 groups and names of 32 bytes) is about 400 bytes.
 * Sample chunks are sized so that a chunk message fits. */
#ifndef TMLA_TX_BUF
#define TMLA_TX_BUF 448
#endif

/* Trusted operator keys (two slots: rotation and revocation, S12). */
#ifndef TMLA_MAX_KEYS
#define TMLA_MAX_KEYS 2
#endif

/* Bytes of opaque storage the agent provides for one SHA-256 context of the
 * port (mbedTLS 2.28 needs 108 on 32-bit and 64-bit targets). */
#ifndef TMLA_SHA256_CTX_SIZE
#define TMLA_SHA256_CTX_SIZE 128
#endif

/* Sequence numbers reserved (persisted) at a time per stream: one state
 * write per TMLA_SEQ_BLOCK records; after a reboot up to this many numbers
 * are skipped, never reused. */
#ifndef TMLA_SEQ_BLOCK
#define TMLA_SEQ_BLOCK 64
#endif

/* Largest distance between persisted download offsets (a reboot fetches
 * at most this much again). The agent spreads checkpoints more densely when
 * the flash wear budget (<= 8 + size/16 KiB state writes per update)
 * allows. Must be a multiple of the port's erase size. */
#ifndef TMLA_OTA_CHECKPOINT
#define TMLA_OTA_CHECKPOINT 16384u
#endif

/* Largest flash write alignment the agent supports (padding buffer). */
#ifndef TMLA_MAX_WRITE_ALIGN
#define TMLA_MAX_WRITE_ALIGN 16
#endif

#if TMLA_MAX_CLASSES > TML_MAX_CLASSES || TMLA_MAX_CLASSES < 1
#error "TMLA_MAX_CLASSES must be 1..TML_MAX_CLASSES"
#endif
#if TMLA_CONF_BINS > TML_MAX_BINS || TMLA_LAT_BINS > TML_MAX_BINS
#error "TMLA_CONF_BINS and TMLA_LAT_BINS must be <= TML_MAX_BINS"
#endif
#if TMLA_TELE_RING < 2
#error "TMLA_TELE_RING must be >= 2 (folding merges two entries)"
#endif
#if TMLA_SAMPLE_SLOTS < 1 || TMLA_SAMPLE_SLOTS > 32
#error "TMLA_SAMPLE_SLOTS must be 1..32"
#endif
#if TMLA_TX_BUF < 160 || TMLA_TX_BUF > TML_MAX_MESSAGE
#error "TMLA_TX_BUF must be 160..TML_MAX_MESSAGE"
#endif
#if TMLA_MAX_KEYS < 1 || TMLA_MAX_KEYS > 8
#error "TMLA_MAX_KEYS must be 1..8"
#endif

#endif /* TML_AGENT_CONFIG_DEFAULTS_H */
