/*
 * topic.c: MQTT topic names "tml/v1/<dev>/<dir>/<kind>" (PROTOCOL.md
 * "Topics"). A device id is the client certificate's CN and also the broker
 * username, so it must never contain MQTT wildcards or level separators:
 * only [A-Za-z0-9._-], 1..TML_MAX_DEVICE_ID bytes, not "." or "..".
 */
#include <string.h>

#include "internal.h"

#define PREFIX "tml/v1/"
#define PREFIX_LEN 7

/* The kind names one after the other, each NUL-terminated, and where
 * each starts: a byte per kind instead of a pointer. kind_off[k + 1] - 1 -
 * kind_off[k] is kind k's length. */
static const char kind_names[] = "hello\0state\0tele\0sample\0ota\0ack\0cmd";
static const uint8_t kind_off[TML_KIND__COUNT + 1] = {0,  6,  12, 17,
                                                      24, 28, 32, 36};

/* Bit d set if the kind exists in direction d (TML_DIR_UP = 0). */
static const uint8_t kind_dirs[TML_KIND__COUNT] = {1, 1, 1, 1, 3, 2, 2};

const char *
tml_kind_name(enum tml_kind kind)
{
    if ((unsigned)kind >= TML_KIND__COUNT) {
        return "?";
    }
    return kind_names + kind_off[kind];
}

bool
tml_device_id_valid(const char *id, size_t len)
{
    size_t i;

    if (id == NULL || len == 0 || len > TML_MAX_DEVICE_ID) {
        return false;
    }
    /* "." or ".." (a dot first and last in at most two bytes). */
    if (len <= 2 && id[0] == '.' && id[len - 1] == '.') {
        return false;
    }
    for (i = 0; i < len; i++) {
        unsigned c = (unsigned char)id[i];

        /* c | 0x20 maps A-Z onto a-z and nothing else onto it; "-." are
         * 0x2d 0x2e. */
        if (!((c | 0x20u) - 'a' < 26u || c - '0' < 10u || c - '-' < 2u ||
              c == '_')) {
            return false;
        }
    }
    return true;
}

/* The first '/' in [p, end), or NULL. A loop rather than memchr: the
 * device then links no memchr (160 bytes of newlib on a Cortex-M4). */
static const char *
slash(const char *p, const char *end)
{
    for (; p < end; p++) {
        if (*p == '/') {
            return p;
        }
    }
    return NULL;
}

/* Copies len bytes of s to p; returns the end. */
static char *
append(char *p, const char *s, size_t len)
{
    memcpy(p, s, len);
    return p + len;
}

static size_t
kind_length(size_t kind)
{
    return (size_t)(kind_off[kind + 1] - 1 - kind_off[kind]);
}

static bool
kind_in_dir(enum tml_kind kind, enum tml_dir dir)
{
    return (kind_dirs[kind] >> dir) & 1u;
}

enum tml_err
tml_topic_parse(const char *topic, size_t len, struct tml_topic *out)
{
    const char *dev;
    const char *dir;
    const char *kind;
    const char *end;
    size_t dev_len;
    size_t dir_len;
    size_t kind_len;
    size_t i;

    if (topic == NULL || out == NULL) {
        return TML_ERR_INVAL;
    }
    if (len > TML_MAX_TOPIC || len < PREFIX_LEN ||
        memcmp(topic, PREFIX, PREFIX_LEN) != 0) {
        return TML_ERR_TOPIC;
    }
    end = topic + len;
    dev = topic + PREFIX_LEN;
    dir = slash(dev, end);
    if (dir == NULL) {
        return TML_ERR_TOPIC;
    }
    dev_len = (size_t)(dir - dev);
    dir++;
    kind = slash(dir, end);
    if (kind == NULL) {
        return TML_ERR_TOPIC;
    }
    dir_len = (size_t)(kind - dir);
    kind++;
    kind_len = (size_t)(end - kind);
    /* A sixth level (or a NUL inside) makes the kind match nothing below. */
    if (!tml_device_id_valid(dev, dev_len)) {
        return TML_ERR_TOPIC;
    }
    if (dir_len == 2 && memcmp(dir, "up", 2) == 0) {
        out->dir = TML_DIR_UP;
    } else if (dir_len == 4 && memcmp(dir, "down", 4) == 0) {
        out->dir = TML_DIR_DOWN;
    } else {
        return TML_ERR_TOPIC;
    }
    for (i = 0; i < TML_KIND__COUNT; i++) {
        if (kind_length(i) == kind_len &&
            memcmp(kind_names + kind_off[i], kind, kind_len) == 0) {
            break;
        }
    }
    if (i == TML_KIND__COUNT || !kind_in_dir((enum tml_kind)i, out->dir)) {
        return TML_ERR_TOPIC;
    }
    out->kind = (enum tml_kind)i;
    out->dev.p = dev;
    out->dev.len = dev_len;
    return TML_OK;
}

enum tml_err
tml_topic_build(char *buf, size_t cap, const char *dev, size_t dev_len,
                enum tml_dir dir, enum tml_kind kind, size_t *out_len)
{
    /* "/up/" or "/down/": the level separators around the direction
     * (TML_DIR_UP 0, TML_DIR_DOWN 1). */
    static const char mids[] = "/up/\0/down/";
    size_t mid_len = 4 + 2 * (size_t)dir;
    size_t kind_len;
    size_t n;
    char *p = buf;

    if (buf == NULL || (unsigned)kind >= TML_KIND__COUNT ||
        (unsigned)dir > TML_DIR_DOWN) {
        return TML_ERR_INVAL;
    }
    if (!tml_device_id_valid(dev, dev_len) || !kind_in_dir(kind, dir)) {
        return TML_ERR_TOPIC;
    }
    kind_len = kind_length(kind);
    n = PREFIX_LEN + dev_len + mid_len + kind_len;
    if (n + 1 > cap) {
        return TML_ERR_NOSPACE;
    }
    p = append(p, PREFIX, PREFIX_LEN);
    p = append(p, dev, dev_len);
    p = append(p, mids + 5 * dir, mid_len);
    /* The name and its NUL. */
    (void)append(p, kind_names + kind_off[kind], kind_len + 1);
    if (out_len != NULL) {
        *out_len = n;
    }
    return TML_OK;
}
