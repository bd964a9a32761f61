/*
 * tele.c: up/tele, the inference summary, in its packed form (PROTOCOL.md
 * "up/tele"): a map {0: version, 1: summary} whose summary is one byte
 * string of unsigned LEB128 varints in a fixed order. A summary of a busy
 * 4-class model with both histograms and the health numbers is ~60 bytes
 * this way instead of ~104 as a map of CBOR integers: no key per number,
 * 7 value bits per byte, counters that are usually 0 flagged absent, and
 * of each histogram only the window from its first to its last non-zero
 * bin.
 *
 * The encoding is canonical (one struct, one byte string): a flagged
 * counter is present iff it is non-zero, a window is the smallest one, and
 * varints are in shortest form. The decoder accepts exactly that, so what
 * it accepts re-encodes to the same bytes (the fuzz harness checks it).
 * struct tml_tele is unchanged: the gateway sees the same fields.
 *
 * Key 2, optional, is the numbering epoch (PROTOCOL.md 6), outside the
 * summary so that a gateway that predates it ignores it.
 *
 * Key 0 is 2 (TML_TELE_VERSION): version 1 was a map of CBOR integers,
 * which tele_v1.c still decodes for agents that predate this form. The
 * device links only the encoder.
 */
#include <stddef.h>
#include <string.h>

#include "internal.h"

/* Bits of the leading flags varint: which optional numbers follow. */
#define F_HEALTH 0x01u
#define F_LW 0x02u
#define F_AGE 0x04u
#define F_FLAGGED 0x08u
#define F_ERRORS 0x10u
#define F_FOLDED 0x20u
#define F_DROPPED 0x40u
#define F_ALL 0x7fu

#define TOFF(fld) ((uint8_t)offsetof(struct tml_tele, fld))

/* The scalar counters in stream order, with the flag that makes each
 * optional (0 = always present). */
static const uint8_t scal_off[] = {TOFF(seq),          TOFF(model_version),
                                   TOFF(period_s),     TOFF(age_s),
                                   TOFF(n_inferences), TOFF(n_low_conf),
                                   TOFF(n_flagged),    TOFF(n_errors),
                                   TOFF(n_folded),     TOFF(n_samples_dropped),
                                   TOFF(lat_min_us),   TOFF(lat_mean_us),
                                   TOFF(lat_max_us)};
static const uint8_t scal_flag[] = {
    0, 0, 0, F_AGE, 0, 0, F_FLAGGED, F_ERRORS, F_FOLDED, F_DROPPED, 0, 0, 0};

#define N_SCAL (sizeof scal_off / sizeof scal_off[0])

/* pack() reads struct tml_health as four 32-bit numbers in stream order. */
typedef char health_is_4x32[offsetof(struct tml_health, supply_mv) == 4 &&
                                    offsetof(struct tml_health, temp_dc) == 8 &&
                                    offsetof(struct tml_health, uptime_s) == 12
                                ? 1
                                : -1];

static uint32_t
get32(const struct tml_tele *t, size_t off)
{
    uint32_t v;

    TML__MEMCPY(&v, (const uint8_t *)t + off, sizeof v);
    return v;
}

/* ---- encoding ------------------------------------------------------------ */

/* Appends v as a varint at p[n] (counts only when p is NULL); returns the
 * new length. */
static size_t
put_v(uint8_t *p, size_t n, uint32_t v)
{
    /* A loop GCC does not split in two on p (one store, one exit). */
    for (;;) {
        uint32_t b = v & 0x7fu;

        v >>= 7;
        if (v != 0) {
            b |= 0x80u;
        }
        if (p != NULL) {
            p[n] = (uint8_t)b;
        }
        n++;
        if (v == 0) {
            return n;
        }
    }
}

/* A histogram: header nb + 32 lo + 1024 k, then bins lo..lo+k-1. */
static size_t
put_hist(uint8_t *p, size_t n, const uint32_t *h, size_t nb)
{
    size_t lo = 0, hi = 0, i;

    /* lo..hi: from the first to past the last non-zero bin (0..0 if
     * none). */
    for (i = 0; i < nb; i++) {
        if (h[i] != 0) {
            lo = hi == 0 ? i : lo;
            hi = i + 1;
        }
    }
    n = put_v(p, n, (uint32_t)(nb | lo << 5 | (hi - lo) << 10));
    for (i = lo; i < hi; i++) {
        n = put_v(p, n, h[i]);
    }
    return n;
}

static unsigned
flags_of(const struct tml_tele *t)
{
    unsigned fl = t->has_health ? F_HEALTH : 0;
    size_t i;

    if (t->lw != 0) {
        fl |= F_LW;
    }
    for (i = 0; i < N_SCAL; i++) {
        if (get32(t, scal_off[i]) != 0) {
            fl |= scal_flag[i];
        }
    }
    return fl;
}

/* Writes the summary to p (or only measures it when p is NULL). */
static size_t
pack(const struct tml_tele *t, uint8_t *p)
{
    unsigned fl = flags_of(t);
    size_t n = put_v(p, 0, fl);
    size_t i;

    for (i = 0; i < N_SCAL; i++) {
        if (scal_flag[i] == 0 || (fl & scal_flag[i]) != 0) {
            n = put_v(p, n, get32(t, scal_off[i]));
        }
    }
    if (fl & F_LW) {
        n = put_v(p, n, t->seq - t->lw);
    }
    n = put_v(p, n, (uint32_t)t->n_classes);
    for (i = 0; i < t->n_classes; i++) {
        n = put_v(p, n, t->class_counts[i]);
    }
    n = put_hist(p, n, t->conf_hist, t->n_conf_bins);
    n = put_hist(p, n, t->lat_hist, t->n_lat_bins);
    for (i = 0; i < 4 && (fl & F_HEALTH) != 0; i++) {
        /* free_ram, supply_mv, temp_dc, uptime_s (health_is_4x32). */
        uint32_t v = get32(t, offsetof(struct tml_tele, health) + 4 * i);

        if (i == 2) {
            /* Zigzag: small temperatures of either sign stay short. */
            v = (v << 1) ^ (0u - (v >> 31));
        }
        n = put_v(p, n, v);
    }
    return n;
}

enum tml_err
tml_tele_encode(const struct tml_tele *t, uint8_t *buf, size_t cap,
                size_t *out_len)
{
    struct tml_enc e;
    uint8_t *p;
    size_t n;

    if (t == NULL || (buf == NULL && cap != 0)) {
        return TML_ERR_INVAL;
    }
    if (t->n_classes > TML_MAX_CLASSES || t->n_conf_bins > TML_MAX_BINS ||
        t->n_lat_bins > TML_MAX_BINS) {
        return TML_ERR_OVERSIZE;
    }
    if (t->seq == 0 || t->lw > t->seq) {
        return TML_ERR_RANGE;
    }
    n = pack(t, NULL);
    tml_enc_init(&e, buf, cap);
    tml_enc_map(&e, t->epoch != 0 ? 3 : 2);
    tml__enc_u32(&e, 0);
    tml__enc_u32(&e, TML_TELE_VERSION);
    tml__enc_u32(&e, 1);
    p = tml__enc_reserve_bytes(&e, n);
    if (p != NULL) {
        (void)pack(t, p);
    }
    if (t->epoch != 0) {
        tml__enc_u32(&e, 2);
        tml__enc_u32(&e, t->epoch);
    }
    /* The largest summary (~430 bytes) is far below TML_MAX_MESSAGE. */
    return tml_enc_finish(&e, out_len);
}

/* ---- decoding ------------------------------------------------------------ */

struct rd {
    const uint8_t *p, *end;
    enum tml_err err; /* sticky: the first failure */
};

/* Reads one shortest-form varint of at most 32 bits (0 after a failure). */
static uint32_t
get_v(struct rd *r)
{
    uint32_t v = 0;
    unsigned s;

    for (s = 0; r->err == TML_OK; s += 7) {
        uint8_t b;

        if (r->p == r->end) {
            r->err = TML_ERR_TRUNCATED;
            break;
        }
        b = *r->p++;
        if (s == 28 && b > 0x0fu) {
            r->err = TML_ERR_RANGE; /* more than 32 bits */
            break;
        }
        v |= (uint32_t)(b & 0x7fu) << s;
        if ((b & 0x80u) == 0) {
            if (b == 0 && s != 0) {
                r->err = TML_ERR_NON_MINIMAL;
                break;
            }
            return v;
        }
    }
    return 0;
}

static void
get_hist(struct rd *r, uint32_t *h, size_t *nb)
{
    uint32_t hd = get_v(r);
    uint32_t lo = (hd >> 5) & 31u, k = hd >> 10, i;

    *nb = hd & 31u;
    if (r->err != TML_OK) {
        return;
    }
    if (*nb > TML_MAX_BINS) {
        r->err = TML_ERR_OVERSIZE;
    } else if (lo > *nb || k > *nb - lo) {
        r->err = TML_ERR_RANGE;
    } else if (k == 0 && lo != 0) {
        r->err = TML_ERR_NON_MINIMAL;
    }
    for (i = 0; i < k && r->err == TML_OK; i++) {
        h[lo + i] = get_v(r);
    }
    /* The window starts and ends at a non-zero bin. */
    if (r->err == TML_OK && k != 0 && (h[lo] == 0 || h[lo + k - 1] == 0)) {
        r->err = TML_ERR_NON_MINIMAL;
    }
}

static enum tml_err
unpack(const struct tml_bin *b, struct tml_tele *t)
{
    struct rd r = {b->p, b->p + b->len, TML_OK};
    uint32_t fl = get_v(&r), v;
    size_t i;

    if (r.err == TML_OK && (fl & ~F_ALL) != 0) {
        r.err = TML_ERR_RANGE;
    }
    for (i = 0; i < N_SCAL && r.err == TML_OK; i++) {
        if (scal_flag[i] == 0 || (fl & scal_flag[i]) != 0) {
            v = get_v(&r);
            if (v == 0 && scal_flag[i] != 0 && r.err == TML_OK) {
                r.err = TML_ERR_NON_MINIMAL; /* flagged but 0 */
            }
            TML__MEMCPY((uint8_t *)t + scal_off[i], &v, sizeof v);
        }
    }
    if (r.err == TML_OK && t->seq == 0) {
        r.err = TML_ERR_RANGE;
    }
    if (fl & F_LW) {
        v = get_v(&r);
        if (r.err == TML_OK && v >= t->seq) {
            r.err = TML_ERR_RANGE; /* lw would be 0 or wrap */
        }
        t->lw = t->seq - v;
    }
    t->n_classes = get_v(&r);
    if (r.err == TML_OK && t->n_classes > TML_MAX_CLASSES) {
        r.err = TML_ERR_OVERSIZE;
    }
    for (i = 0; i < t->n_classes && r.err == TML_OK; i++) {
        t->class_counts[i] = get_v(&r);
    }
    get_hist(&r, t->conf_hist, &t->n_conf_bins);
    get_hist(&r, t->lat_hist, &t->n_lat_bins);
    if (fl & F_HEALTH) {
        t->has_health = true;
        t->health.free_ram = get_v(&r);
        t->health.supply_mv = get_v(&r);
        v = get_v(&r);
        t->health.temp_dc = (int32_t)((v >> 1) ^ (0u - (v & 1u)));
        t->health.uptime_s = get_v(&r);
    }
    if (r.err == TML_OK && r.p != r.end) {
        r.err = TML_ERR_TRAILING;
    }
    return r.err;
}

/* The map around the summary goes through the generic decoder (unknown and
 * duplicate keys, must-understand keys). Key 0 is read as a plain number:
 * the generic version row means TML_PROTO_VERSION, tele's is
 * TML_TELE_VERSION (tml_tele_decode has dispatched on it already). */
struct tele_wire {
    uint32_t version;
    struct tml_bin summary;
    uint32_t epoch;
};

static const struct tml__field wire_fields[] = {
    U32(0, REQ, tele_wire, version, TML__L_ANY),
    BYTES(1, REQ, tele_wire, summary, TML__L_ANY),
    U32(2, OPT, tele_wire, epoch, L_POS),
};

static const struct tml__msg wire_desc = {
    wire_fields, 3, TML__MAX64(TML_MAX_MESSAGE), sizeof(struct tele_wire),
    NULL};

enum tml_err
tml__tele_v2_decode(const uint8_t *buf, size_t len, struct tml_tele *out)
{
    struct tele_wire w;
    enum tml_err err;

    memset(out, 0, sizeof *out);
    err = tml__msg_decode(buf, len, &w, &wire_desc);
    if (err == TML_OK && w.version != TML_TELE_VERSION) {
        err = TML_ERR_VERSION;
    }
    if (err == TML_OK) {
        err = unpack(&w.summary, out);
    }
    out->epoch = w.epoch;
    return err;
}
