/*
 * ota.c: the OTA receiver and the two model slots.
 *
 * Flow (DESIGN.md "OTA", states of enum tml_ota_state):
 *   offer -> verify COSE_Sign1 (ES256, trusted kid, not revoked), decode the
 *   manifest, check expiry, hardware, sizes, needs, anti-rollback -> persist
 *   "downloading into slot d" (slot d invalidated first) -> request chunks
 *   by offset with a window, bound to the offer id -> hash while writing,
 *   erase each page before its first write, persist the offset at
 *   checkpoints (tmla__ota_interval) -> after the last byte compare the
 *   stream hash,
 *   then hash the slot again from flash (VERIFYING) -> persist "slot d
 *   valid" (READY) -> the application activates when it likes -> persist
 *   "active = d, trial" -> golden vectors through port->infer -> confirm
 *   (persist) or revert (persist "active = old, d invalid").
 *
 * Every step that changes what the device would boot is one write of the
 * persisted record (state.c), which is atomic (two copies), so power loss at
 * any flash operation leaves either the old or the new model active and
 * valid (S13, S14, S16). The anti-rollback floor is the highest verified
 * manifest version (TUF semantics) and is raised in the same record that
 * starts the download. Rejected offers change no state and write nothing
 * (flash wear cannot be driven by an attacker), except a revocation carried
 * by a correctly signed manifest.
 *
 * Progress marks (resume within a chunk of where a reboot stopped, without
 * state writes): when the slot has room after the image, the page-aligned
 * area after it holds one write_align unit per ota_chunk of image, erased
 * when the download starts (one erase per update) and programmed once
 * (0x00) after that chunk's bytes are in flash. NOR flash programs each
 * unit once, so no further erase or state write is needed. At boot the
 * run of programmed units gives the resume offset (any non-erased unit,
 * even a torn one, means its data write had returned); if the rest of that
 * page is not erased (power cut inside a data write) the resume falls back
 * to the page start, which is erased again before it is written. The
 * stream hash is rebuilt from flash either way, and the final hash check
 * catches anything else.
 */
#include <string.h>

#include "internal.h"

#define READ_BLOCK 64u
#define MARKS_HDR 4u /* offer id, little endian */

static uint8_t
dl_slot(const struct tmla_agent *a)
{
    return a->ps.active == TMLA__NO_SLOT ? 0 : (uint8_t)(a->ps.active ^ 1u);
}

static void
publish_status(struct tmla_agent *a, uint32_t offer_id, uint32_t version,
               uint8_t state, uint8_t reason)
{
    struct tml_ota_up u;
    size_t n;
    bool current = state == a->ota_state && offer_id == a->ota_offer_id;
    int rc = TMLA_PORT_FAIL;

    memset(&u, 0, sizeof u);
    u.kind = TML_OTA_UP_STATUS;
    u.offer_id = offer_id;
    u.version = version;
    u.offset = a->ota_offset;
    u.state = state;
    u.reason = reason;
    if (tml_ota_up_encode(&u, a->tx, sizeof a->tx, &n) == TML_OK)
        rc = tmla__publish(a, TML_KIND_OTA, a->tx, n, false);
    /* Only the current state is worth repeating from tmla_poll. */
    if (current)
        a->status_due = rc != TMLA_PORT_OK;
}

static void
set_state(struct tmla_agent *a, uint8_t state, uint8_t reason)
{
    a->ota_state = state;
    a->ota_reason = reason;
    if (a->port.ota_event != NULL)
        a->port.ota_event(a->port.user, (enum tml_ota_state)state,
                          (enum tml_ota_reason)reason, a->ota_version);
    publish_status(a, a->ota_offer_id, a->ota_version, state, reason);
    /* The active model or its trial flag changed: tell the gateway's
     * registry with a fresh hello (model, slot, last OTA result). */
    if (state == TML_OTA_TRIAL || state == TML_OTA_CONFIRMED ||
        state == TML_OTA_REVERTED)
        a->hello_due = true;
}

/* A refused offer: reported, nothing else changes. */
static void
refuse(struct tmla_agent *a, uint32_t offer_id, uint32_t version,
       uint8_t reason)
{
    if (a->port.ota_event != NULL)
        a->port.ota_event(a->port.user, TML_OTA_FAILED,
                          (enum tml_ota_reason)reason, version);
    publish_status(a, offer_id, version, TML_OTA_FAILED, reason);
}

static void
commit_update(struct tmla_agent *a)
{
    a->stats.update_state_writes++;
    tmla__state_commit(a);
}

static void
fail(struct tmla_agent *a, uint8_t reason)
{
    a->ps.valid &= (uint8_t) ~(1u << dl_slot(a));
    a->ps.dl = 0;
    a->ps.last_state = TML_OTA_FAILED;
    a->ps.last_reason = reason;
    a->ota_hashing = false;
    commit_update(a);
    set_state(a, TML_OTA_FAILED, reason);
}

static void
revert(struct tmla_agent *a, uint8_t reason, uint32_t now_ms, bool booting)
{
    uint8_t cur = a->ps.active, old = (uint8_t)(cur ^ 1u);

    a->ps.valid &= (uint8_t) ~(1u << cur);
    a->ps.active = (a->ps.valid & (1u << old)) ? old : TMLA__NO_SLOT;
    a->ps.trial = 0;
    a->ps.vectors_ok = 0;
    a->ps.last_state = TML_OTA_REVERTED;
    a->ps.last_reason = reason;
    a->ota_version = a->ps.slot[cur].version;
    if (booting) {
        /* tmla_init saves the record and the application loads whatever
         * tmla_active_model() says after init. */
        a->ota_state = TML_OTA_REVERTED;
        a->ota_reason = reason;
        a->status_due = true;
        return;
    }
    commit_update(a);
    tmla__tele_close(a, now_ms); /* summaries are per model */
    /* The application goes back to the old model now, or from tmla_poll
     * if it cannot at this moment. */
    a->load_due = true;
    if (tmla_active_model(a) == NULL ||
        a->port.activate(a->port.user, tmla_active_model(a)) == TMLA_PORT_OK)
        a->load_due = false;
    set_state(a, TML_OTA_REVERTED, reason);
}

static void
confirm(struct tmla_agent *a)
{
    a->ps.trial = 0;
    a->ps.last_state = TML_OTA_CONFIRMED;
    a->ps.last_reason = TML_OTA_R_NONE;
    commit_update(a);
    set_state(a, TML_OTA_CONFIRMED, TML_OTA_R_NONE);
}

uint32_t
tmla__ota_interval(const struct tmla_agent *a, uint32_t size)
{
    /* The wear budget is 8 + size/16 KiB state writes per update; accept,
     * verified, activated, vectors passed and confirmed take 5, the rest
     * may be checkpoints: spread them evenly, in whole erase pages, at most
     * TMLA_OTA_CHECKPOINT apart. Fewer bytes to fetch again after a
     * reboot, no extra wear. */
    uint32_t spare = 3u + size / 16384u;
    uint32_t es = a->port.erase_size;
    uint32_t iv = size / (spare + 1u) + 1u;

    iv = (iv + es - 1u) & ~(es - 1u);
    return iv > TMLA_OTA_CHECKPOINT ? TMLA_OTA_CHECKPOINT : iv;
}

static bool hash_slot(struct tmla_agent *a, uint8_t d, uint32_t len, void *ctx);

/* Progress marks layout for an image of size bytes: granule *g (ota_chunk
 * rounded up to write_align), first mark at *off. False when the slot has
 * no room for them (then only the checkpoints apply). */
static bool
marks_layout(const struct tmla_agent *a, uint32_t size, uint32_t *g,
             uint32_t *off)
{
    uint32_t al = a->port.write_align, es = a->port.erase_size;
    uint32_t gr = (a->cfg.ota_chunk + al - 1u) & ~(al - 1u);
    uint32_t start = (size + es - 1u) & ~(es - 1u), n;

    if (gr == 0 || start < size || start > a->port.slot_size)
        return false;
    n = size / gr + 1u + MARKS_HDR / al + 1u;
    if (n > (a->port.slot_size - start) / al)
        return false;
    *g = gr;
    *off = start;
    return true;
}

/* The mark area starts with the offer id (marks_hdr_len bytes), written
 * right after the erase: marks left from another download are never
 * trusted (power cut between the state write and the erase). */
static uint32_t
marks_hdr_len(const struct tmla_agent *a)
{
    uint32_t al = a->port.write_align;

    return (MARKS_HDR + al - 1u) & ~(al - 1u);
}

/* Erases the mark area of the download slot (download start). */
static void
marks_erase(struct tmla_agent *a, uint8_t d, uint32_t size)
{
    uint32_t g, off, end, es = a->port.erase_size;
    uint8_t hdr[MARKS_HDR + TMLA_MAX_WRITE_ALIGN];

    a->ota_marks = 0;
    if (!marks_layout(a, size, &g, &off))
        return;
    end = off + marks_hdr_len(a) + (size / g + 1u) * a->port.write_align;
    for (uint32_t p = off; p < end; p += es) {
        a->stats.flash_ops++;
        if (a->port.flash_erase(a->port.user, d, p, es) != 0) {
            a->ota_marks = UINT32_MAX; /* unusable this time */
            return;
        }
    }
    memset(hdr, 0xff, sizeof hdr);
    for (uint32_t i = 0; i < MARKS_HDR; i++)
        hdr[i] = (uint8_t)(a->ota_offer_id >> (8u * i));
    a->stats.flash_ops++;
    if (a->port.flash_write(a->port.user, d, off, hdr, marks_hdr_len(a)) != 0)
        a->ota_marks = UINT32_MAX;
}

/* Programs the marks of every whole granule now in flash. A failed mark
 * write only costs resume precision. */
static void
marks_write(struct tmla_agent *a, uint8_t d, uint32_t size, uint32_t written)
{
    uint8_t unit[TMLA_MAX_WRITE_ALIGN];
    uint32_t g, off, al = a->port.write_align;

    if (a->ota_marks == UINT32_MAX || !marks_layout(a, size, &g, &off))
        return;
    memset(unit, 0, sizeof unit);
    while ((uint64_t)(a->ota_marks + 1u) * g <= written) {
        a->stats.flash_ops++;
        if (a->port.flash_write(a->port.user, d,
                                off + marks_hdr_len(a) + a->ota_marks * al,
                                unit, al) != 0) {
            a->ota_marks = UINT32_MAX;
            return;
        }
        a->ota_marks++;
    }
}

static bool
all_erased(struct tmla_agent *a, uint8_t d, uint32_t off, uint32_t len)
{
    uint8_t buf[READ_BLOCK];

    while (len > 0) {
        uint32_t n = len < READ_BLOCK ? len : READ_BLOCK;
        if (a->port.flash_read(a->port.user, d, off, buf, n) != 0)
            return false;
        for (uint32_t i = 0; i < n; i++)
            if (buf[i] != 0xffu)
                return false;
        off += n;
        len -= n;
    }
    return true;
}

/* Resume offset after a reboot: the checkpoint, or further by the marks. */
static uint32_t
marks_resume(struct tmla_agent *a, uint8_t d, uint32_t size, uint32_t cp)
{
    uint32_t g, off, k, res, es = a->port.erase_size;
    uint32_t al = a->port.write_align, page_end;
    uint8_t unit[TMLA_MAX_WRITE_ALIGN];

    uint8_t hdr[MARKS_HDR];
    uint32_t id = 0;

    a->ota_marks = UINT32_MAX;
    if (!marks_layout(a, size, &g, &off) ||
        a->port.flash_read(a->port.user, d, off, hdr, MARKS_HDR) != 0)
        return cp;
    for (uint32_t i = 0; i < MARKS_HDR; i++)
        id |= (uint32_t)hdr[i] << (8u * i);
    if (id != a->ps.dl_offer_id)
        return cp;
    off += marks_hdr_len(a);
    for (k = 0; (uint64_t)(k + 1u) * g <= size; k++) {
        bool erased = true;
        if (a->port.flash_read(a->port.user, d, off + k * al, unit, al) != 0)
            return cp;
        for (uint32_t i = 0; i < al; i++)
            erased = erased && unit[i] == 0xffu;
        if (erased)
            break;
    }
    a->ota_marks = k;
    res = k * g;
    if (res <= cp)
        return cp;
    /* The bytes after res in its page must be erased to be written without
     * an erase; otherwise start that page again (erased on its first
     * write), never before the checkpoint. */
    page_end = (res + es - 1u) & ~(es - 1u);
    if (page_end > size)
        page_end = size;
    if (res % es != 0 && !all_erased(a, d, res, page_end - res)) {
        /* tmla_init persists the page start before the first poll erases
         * the marks (they claim bytes of a page about to be erased). */
        res &= ~(es - 1u);
        if (res > cp)
            a->ps.dl_checkpoint = res;
    }
    return res < cp ? cp : res;
}

/* True if slot s still hashes to its recorded SHA-256. */
static bool
slot_intact(struct tmla_agent *a, uint8_t s)
{
    uint8_t digest[TML_SHA256_LEN];

    return a->port.sha256_init(a->port.user, a->sha.b) == 0 &&
           hash_slot(a, s, a->ps.slot[s].size, a->sha.b) &&
           a->port.sha256_final(a->port.user, a->sha.b, digest) == 0 &&
           memcmp(digest, a->ps.slot[s].sha256, TML_SHA256_LEN) == 0;
}

void
tmla__ota_boot(struct tmla_agent *a, uint32_t now_ms)
{
    struct tmla__pstate *ps = &a->ps;
    uint8_t d = dl_slot(a);

    a->ota_state = TML_OTA_IDLE;
    /* Check what the application is about to load: flash can rot, or a
     * write can have failed silently. A model that no longer verifies is
     * dropped and the other slot takes over if it is whole (S15). */
    if (tmla_active_model(a) != NULL && !slot_intact(a, ps->active)) {
        uint8_t bad = ps->active, other = (uint8_t)(bad ^ 1u);

        ps->valid &= (uint8_t) ~(1u << bad);
        ps->trial = 0;
        ps->active = TMLA__NO_SLOT;
        if ((ps->valid & (1u << other)) && slot_intact(a, other))
            ps->active = other;
        else
            ps->valid = 0;
        ps->last_state = TML_OTA_REVERTED;
        ps->last_reason = TML_OTA_R_FLASH;
        a->ota_state = TML_OTA_REVERTED;
        a->ota_reason = TML_OTA_R_FLASH;
        a->ota_version = ps->slot[bad].version;
        a->status_due = true;
        return;
    }
    if (ps->trial && tmla_active_model(a) != NULL) {
        a->ota_version = ps->slot[ps->active].version;
        a->ota_state = TML_OTA_TRIAL;
        a->trial_ms = now_ms;
        if (++ps->trial_boots > a->cfg.trial_max_boots)
            revert(a, TML_OTA_R_TRIAL_TIMEOUT, now_ms, true);
    } else if (ps->dl) {
        ps->trial = 0;
        /* Resume at the last checkpoint; the stream hash is rebuilt from
         * flash by the first poll. */
        a->ota_state = TML_OTA_DOWNLOADING;
        a->ota_offer_id = ps->dl_offer_id;
        a->ota_version = ps->slot[d].version;
        a->ota_offset = marks_resume(a, d, ps->slot[d].size,
                                     ps->dl_checkpoint);
    } else if (ps->last_state == TML_OTA_READY && (ps->valid & (1u << d))) {
        /* Verified before the reboot: hash it again before activating. */
        ps->trial = 0;
        a->ota_state = TML_OTA_VERIFYING;
        a->ota_version = ps->slot[d].version;
    } else {
        ps->trial = 0;
    }
}

void
tmla__ota_connected(struct tmla_agent *a, uint32_t now_ms)
{
    a->ota_start_ms = now_ms;
    a->ota_start_off = a->ota_offset;
    a->ota_req_end = 0; /* request again at once */
    if (a->ota_state != TML_OTA_IDLE)
        a->status_due = true;
}

static int
find_key(const struct tmla_agent *a, const uint8_t *kid, size_t len)
{
    for (size_t k = 0; k < a->cfg.n_keys; k++)
        if (a->cfg.keys[k].kid_len == len &&
            memcmp(a->cfg.keys[k].kid, kid, len) == 0)
            return (int)k;
    return -1;
}

/* CBOR byte/text string head (RFC 8949 3.1) for the Sig_structure. */
static size_t
str_head(uint8_t *out, uint8_t major, size_t len)
{
    uint8_t mt = (uint8_t)(major << 5);

    if (len < 24) {
        out[0] = (uint8_t)(mt | len);
        return 1;
    }
    if (len < 256) {
        out[0] = mt | 24;
        out[1] = (uint8_t)len;
        return 2;
    }
    out[0] = mt | 25; /* manifests are < 64 KiB (TML_MAX_MANIFEST) */
    out[1] = (uint8_t)(len >> 8);
    out[2] = (uint8_t)len;
    return 3;
}

/* SHA-256 of Sig_structure = ["Signature1", protected, h'', payload]
 * (RFC 9052 4.4), streamed so no copy of the manifest is needed. */
static bool
sig_hash(struct tmla_agent *a, const struct tml_cose_sign1 *c,
         uint8_t out[TML_SHA256_LEN])
{
    static const uint8_t head[] = {0x84, 0x6a, 'S', 'i', 'g', 'n',
                                   'a',  't',  'u', 'r', 'e', '1'};
    static const uint8_t empty = 0x40;
    union {
        uint64_t align;
        uint8_t b[TMLA_SHA256_CTX_SIZE];
    } ctx;
    uint8_t h[3];
    void *u = a->port.user;
    bool ok;

    ok = a->port.sha256_init(u, ctx.b) == 0 &&
         a->port.sha256_update(u, ctx.b, head, sizeof head) == 0 &&
         a->port.sha256_update(u, ctx.b, h,
                               str_head(h, 2, c->protected_hdr.len)) == 0 &&
         a->port.sha256_update(u, ctx.b, c->protected_hdr.p,
                               c->protected_hdr.len) == 0 &&
         a->port.sha256_update(u, ctx.b, &empty, 1) == 0 &&
         a->port.sha256_update(u, ctx.b, h, str_head(h, 2, c->payload.len)) ==
             0 &&
         a->port.sha256_update(u, ctx.b, c->payload.p, c->payload.len) == 0 &&
         a->port.sha256_final(u, ctx.b, out) == 0;
    return ok;
}

static uint8_t
verify_manifest(struct tmla_agent *a, const struct tml_bin *bytes,
                struct tml_manifest *man, int *signer)
{
    struct tml_cose_sign1 c;
    uint8_t hash[TML_SHA256_LEN];
    int k;

    /* The decoder enforces alg ES256, a 64-byte signature and at most
     * TML_MAX_MANIFEST bytes in all (so every string is < 64 KiB, as
     * str_head needs). */
    if (tml_cose_sign1_decode(bytes->p, bytes->len, &c) != TML_OK)
        return TML_OTA_R_BAD_MANIFEST;
    k = find_key(a, c.kid.p, c.kid.len);
    if (k < 0)
        return TML_OTA_R_UNKNOWN_KEY;
    if (a->ps.revoked & (1u << k))
        return TML_OTA_R_REVOKED_KEY;
    if (!sig_hash(a, &c, hash) ||
        a->port.es256_verify(a->port.user, a->cfg.keys[k].pub, hash,
                             c.signature.p) != 0)
        return TML_OTA_R_BAD_SIGNATURE;
    /* Only now, with the signature good, is the payload worth parsing. */
    if (tml_manifest_decode(c.payload.p, c.payload.len, man) != TML_OK)
        return TML_OTA_R_BAD_MANIFEST;
    *signer = k;
    return TML_OTA_R_NONE;
}

static uint8_t
check_fit(const struct tmla_agent *a, const struct tml_manifest *m)
{
    const struct tmla_config *c = &a->cfg;

    /* tml_manifest_decode already enforced size >= 1, a name of at most
     * TML_MAX_NAME bytes, and model_size + n_vectors * (vector_input_len +
     * 4) == size with vector_input_len >= 1 when there are vectors. */
    if (m->hw.len != tmla__strlen(c->hw) ||
        memcmp(m->hw.p, c->hw, m->hw.len) != 0)
        return TML_OTA_R_WRONG_HW;
    if (m->size > a->port.slot_size)
        return TML_OTA_R_TOO_LARGE;
    if (m->arena_size > c->arena_size)
        return TML_OTA_R_ARENA;
    if (m->min_agent_version > TMLA_AGENT_VERSION)
        return TML_OTA_R_AGENT_TOO_OLD;
    if ((c->input_dtype != 0 && m->dtype != c->input_dtype) ||
        (c->max_labels != 0 && m->n_labels > c->max_labels))
        return TML_OTA_R_INPUT_SHAPE;
    if (c->n_input_shape != 0 &&
        (m->n_shape != c->n_input_shape ||
         memcmp(m->input_shape, c->input_shape,
                m->n_shape * sizeof m->input_shape[0]) != 0))
        return TML_OTA_R_INPUT_SHAPE;
    if (m->n_vectors > 0 && a->port.infer == NULL)
        return TML_OTA_R_SELFTEST;
    return TML_OTA_R_NONE;
}

static void
request(struct tmla_agent *a, uint32_t now_ms)
{
    struct tml_ota_up u;
    uint32_t size = a->ps.slot[dl_slot(a)].size;
    uint32_t want = a->cfg.ota_chunk * a->cfg.ota_window;
    size_t n;

    memset(&u, 0, sizeof u);
    u.kind = TML_OTA_UP_REQUEST;
    u.offer_id = a->ota_offer_id;
    u.version = a->ota_version;
    u.offset = a->ota_offset;
    u.len = size - a->ota_offset < want ? size - a->ota_offset : want;
    a->ota_req_ms = now_ms;
    if (u.len == 0 ||
        tml_ota_up_encode(&u, a->tx, sizeof a->tx, &n) != TML_OK ||
        tmla__publish(a, TML_KIND_OTA, a->tx, n, false) != TMLA_PORT_OK)
        return;
    a->ota_req_end = u.offset + u.len;
}

static void
on_offer(struct tmla_agent *a, const struct tml_ota_down *o, uint32_t now_ms)
{
    struct tml_manifest m;
    struct tmla__pstate save;
    const struct tmla_model *act = tmla_active_model(a);
    struct tmla_model *t;
    uint32_t now_unix;
    uint8_t r, revoke = 0, d = dl_slot(a);
    int signer = -1;
    bool reset;

    if (a->ota_state == TML_OTA_DOWNLOADING && o->offer_id == a->ota_offer_id) {
        request(a, now_ms); /* the gateway repeated its offer: resume */
        return;
    }
    r = verify_manifest(a, &o->manifest, &m, &signer);
    if (r != TML_OTA_R_NONE) {
        refuse(a, o->offer_id, 0, r);
        return;
    }
    /* Expiry (S6): against the clock if the port has one, and always
     * against the newest creation time seen in a verified manifest. */
    now_unix = a->port.unix_time != NULL ? a->port.unix_time(a->port.user) : 0;
    if (m.expires != 0 && ((now_unix != 0 && now_unix >= m.expires) ||
                           a->ps.time_floor >= m.expires)) {
        refuse(a, o->offer_id, m.version, TML_OTA_R_EXPIRED);
        return;
    }
    /* Revocation (S12): a good signature by one trusted key may distrust
     * the others, never itself. */
    for (size_t i = 0; i < m.n_revoke; i++) {
        int k = find_key(a, m.revoke_kids[i].p, m.revoke_kids[i].len);

        if (k >= 0 && k != signer)
            revoke |= (uint8_t)(1u << k);
    }
    revoke &= (uint8_t)~a->ps.revoked; /* only what is new */
    /* A rotation manifest (newly revokes another key and sets
     * resets_floor) may lower the floor: recovery from a fast-forward
     * attack with the old key. Its revocation is stored with the accepted
     * download, so a replay later (the key already revoked) resets
     * nothing. A plain revocation is stored at once. */
    reset = m.resets_floor && revoke != 0;
    if (revoke != 0 && !reset) {
        a->ps.revoked |= revoke;
        tmla__state_commit(a);
    }
    r = check_fit(a, &m);
    if (r == TML_OTA_R_NONE && act != NULL && m.version == act->version &&
        !reset)
        r = TML_OTA_R_ALREADY_INSTALLED;
    else if (r == TML_OTA_R_NONE && !reset &&
             (m.version < a->ps.floor ||
              (act != NULL && m.version < act->version)))
        r = TML_OTA_R_ROLLBACK;
    if (r == TML_OTA_R_NONE && a->ota_state == TML_OTA_DOWNLOADING &&
        a->ps.slot[d].version == m.version &&
        memcmp(a->ps.slot[d].sha256, m.sha256, TML_SHA256_LEN) == 0) {
        /* The same image under a new offer id (gateway restarted). */
        a->ota_offer_id = a->ps.dl_offer_id = o->offer_id;
        commit_update(a);
        request(a, now_ms);
        return;
    }
    if (r == TML_OTA_R_NONE &&
        (a->ps.trial || a->ota_state == TML_OTA_DOWNLOADING ||
         a->ota_state == TML_OTA_VERIFYING || a->ota_state == TML_OTA_READY ||
         a->ota_state == TML_OTA_ACTIVATING))
        r = TML_OTA_R_BUSY;
    if (r != TML_OTA_R_NONE) {
        refuse(a, o->offer_id, m.version, r);
        return;
    }

    /* Accept: one durable record that invalidates slot d before its first
     * erase, names the image, and raises the anti-rollback floor. */
    save = a->ps;
    a->ps.valid &= (uint8_t) ~(1u << d);
    t = &a->ps.slot[d];
    memset(t, 0, sizeof *t);
    t->slot = d;
    t->version = m.version;
    t->size = m.size;
    t->model_size = m.model_size;
    t->arena_size = m.arena_size;
    t->n_vectors = m.n_vectors;
    t->vector_input_len = m.vector_input_len;
    t->score_tol_bp = m.score_tol_bp;
    memcpy(t->sha256, m.sha256, TML_SHA256_LEN);
    memcpy(t->name, m.name.p, m.name.len);
    a->ps.dl = 1;
    a->ps.dl_offer_id = o->offer_id;
    a->ps.dl_checkpoint = 0;
    if (reset) {
        a->ps.revoked |= revoke;
        a->ps.floor = m.version;
    } else if (m.version > a->ps.floor)
        a->ps.floor = m.version;
    if (m.created > a->ps.time_floor)
        a->ps.time_floor = m.created;
    a->ps.last_state = TML_OTA_DOWNLOADING;
    a->ps.last_reason = TML_OTA_R_NONE;
    a->ps.last_version = m.version;
    a->stats.update_state_writes = 1;
    if (tmla__state_save(a) != TML_OK) {
        a->ps = save;
        refuse(a, o->offer_id, m.version, TML_OTA_R_FLASH);
        return;
    }
    a->ota_offer_id = o->offer_id;
    a->ota_version = m.version;
    a->ota_offset = 0;
    a->carry_len = 0;
    a->ota_start_ms = now_ms;
    a->ota_start_off = 0;
    marks_erase(a, dl_slot(a), m.size);
    a->ota_hashing = a->port.sha256_init(a->port.user, a->sha.b) == 0;
    set_state(a, TML_OTA_OFFERED, TML_OTA_R_NONE);
    if (!a->ota_hashing) {
        fail(a, TML_OTA_R_FLASH);
        return;
    }
    set_state(a, TML_OTA_DOWNLOADING, TML_OTA_R_NONE);
    request(a, now_ms);
}

/* Writes n aligned bytes at off of slot d, erasing each page just before
 * its first byte is written (the download is sequential and resumes at a
 * page-aligned checkpoint, so no page is written before it is erased). */
static bool
flash_put(struct tmla_agent *a, uint8_t d, uint32_t off, const uint8_t *p,
          uint32_t n)
{
    uint32_t es = a->port.erase_size;

    if (off > a->port.slot_size || n > a->port.slot_size - off)
        return false;
    while (n > 0) {
        uint32_t seg = es - (off & (es - 1));

        if (seg > n)
            seg = n;
        if ((off & (es - 1)) == 0) {
            a->stats.flash_ops++;
            if (a->port.flash_erase(a->port.user, d, off, es) != 0)
                return false;
        }
        a->stats.flash_ops++;
        if (a->port.flash_write(a->port.user, d, off, p, seg) != 0)
            return false;
        off += seg;
        p += seg;
        n -= seg;
    }
    return true;
}

/* Appends received bytes to the slot through the alignment carry. */
static bool
stream_write(struct tmla_agent *a, uint8_t d, const uint8_t *p, uint32_t n)
{
    uint32_t al = a->port.write_align;
    uint32_t w = a->ota_offset - a->carry_len;
    uint32_t full;

    if (a->carry_len > 0) {
        uint32_t take = al - a->carry_len < n ? al - a->carry_len : n;

        memcpy(a->carry + a->carry_len, p, take);
        a->carry_len = (uint8_t)(a->carry_len + take);
        p += take;
        n -= take;
        if (a->carry_len < al)
            return true;
        if (!flash_put(a, d, w, a->carry, al))
            return false;
        w += al;
        a->carry_len = 0;
    }
    full = n & ~(al - 1u);
    if (full > 0 && !flash_put(a, d, w, p, full))
        return false;
    memcpy(a->carry, p + full, n - full);
    a->carry_len = (uint8_t)(n - full);
    return true;
}

static void
on_chunk(struct tmla_agent *a, const struct tml_ota_down *c, uint32_t now_ms)
{
    uint8_t d = dl_slot(a);
    const struct tmla_model *t = &a->ps.slot[d];
    uint8_t digest[TML_SHA256_LEN];
    uint32_t written, cp;

    if (a->ota_state != TML_OTA_DOWNLOADING || !a->ota_hashing) {
        a->stats.chunks_rejected++;
        return;
    }
    if (c->offer_id != a->ota_offer_id) {
        /* S7: chunks are bound to the offer; report, keep downloading. */
        a->stats.chunks_rejected++;
        publish_status(a, c->offer_id, 0, TML_OTA_FAILED,
                       TML_OTA_R_WRONG_OFFER);
        return;
    }
    /* tml_ota_down_decode already refused an empty or oversized chunk. */
    if (c->offset != a->ota_offset || c->data.len > t->size - c->offset) {
        /* Out of order, duplicate or past the end (S3, S9): dropped; the
         * request timer asks again from ota_offset. */
        a->stats.chunks_rejected++;
        return;
    }
    if (a->port.sha256_update(a->port.user, a->sha.b, c->data.p, c->data.len) !=
            0 ||
        !stream_write(a, d, c->data.p, (uint32_t)c->data.len)) {
        fail(a, TML_OTA_R_FLASH);
        return;
    }
    a->ota_offset += (uint32_t)c->data.len;
    a->ota_req_ms = now_ms;
    if (a->ota_offset == t->size) {
        if (a->carry_len > 0) {
            uint32_t al = a->port.write_align;

            memset(a->carry + a->carry_len, 0xff, al - a->carry_len);
            if (!flash_put(a, d, a->ota_offset - a->carry_len, a->carry, al)) {
                fail(a, TML_OTA_R_FLASH);
                return;
            }
            a->carry_len = 0;
        }
        a->ota_hashing = false;
        if (a->port.sha256_final(a->port.user, a->sha.b, digest) != 0 ||
            memcmp(digest, t->sha256, TML_SHA256_LEN) != 0) {
            fail(a, TML_OTA_R_BAD_HASH);
            return;
        }
        set_state(a, TML_OTA_VERIFYING, TML_OTA_R_NONE);
        return;
    }
    /* Flash wear: at most one state write per checkpoint interval; the
     * progress marks cost no erase. */
    written = a->ota_offset - a->carry_len;
    marks_write(a, d, t->size, written);
    cp = written - written % tmla__ota_interval(a, t->size);
    if (cp > a->ps.dl_checkpoint) {
        a->ps.dl_checkpoint = cp;
        commit_update(a);
    }
    if (a->ota_offset >= a->ota_req_end)
        request(a, now_ms);
}

void
tmla__ota_message(struct tmla_agent *a, const struct tml_ota_down *m,
                  uint32_t now_ms)
{
    switch (m->kind) {
    case TML_OTA_DOWN_OFFER:
        on_offer(a, m, now_ms);
        break;
    case TML_OTA_DOWN_CHUNK:
        on_chunk(a, m, now_ms);
        break;
    case TML_OTA_DOWN_CANCEL:
        if (a->ota_state == TML_OTA_DOWNLOADING &&
            m->offer_id == a->ota_offer_id)
            fail(a, TML_OTA_R_CANCELLED);
        break;
    default:
        a->stats.bad_messages++;
        break;
    }
}

/* Hashes bytes [0, len) of slot d from flash into ctx (already started). */
static bool
hash_slot(struct tmla_agent *a, uint8_t d, uint32_t len, void *ctx)
{
    uint8_t buf[READ_BLOCK];

    for (uint32_t off = 0; off < len; off += READ_BLOCK) {
        uint32_t n = len - off < READ_BLOCK ? len - off : READ_BLOCK;

        if (a->port.flash_read(a->port.user, d, off, buf, n) != 0 ||
            a->port.sha256_update(a->port.user, ctx, buf, n) != 0)
            return false;
    }
    return true;
}

static void
verify_slot(struct tmla_agent *a)
{
    uint8_t d = dl_slot(a);

    /* Read back what flash holds (S15: a write may fail silently). */
    if (!slot_intact(a, d)) {
        fail(a, TML_OTA_R_FLASH);
        return;
    }
    if (!(a->ps.valid & (1u << d)) || a->ps.dl ||
        a->ps.last_state != TML_OTA_READY) {
        a->ps.valid |= (uint8_t)(1u << d);
        a->ps.dl = 0;
        a->ps.last_state = TML_OTA_READY;
        commit_update(a);
    }
    set_state(a, TML_OTA_READY, TML_OTA_R_NONE);
}

static void
activate(struct tmla_agent *a, uint32_t now_ms)
{
    uint8_t d = dl_slot(a);
    const struct tmla_model *m = &a->ps.slot[d];
    int rc = a->port.activate(a->port.user, m);

    if (rc == TMLA_PORT_AGAIN)
        return; /* the application defers: ask again next poll */
    if (rc != TMLA_PORT_OK) {
        fail(a, TML_OTA_R_SELFTEST);
        return;
    }
    set_state(a, TML_OTA_ACTIVATING, TML_OTA_R_NONE);
    a->ps.active = d;
    a->ps.trial = 1;
    a->ps.trial_boots = 0;
    a->ps.vectors_ok = m->n_vectors == 0;
    a->ps.last_state = TML_OTA_TRIAL;
    commit_update(a);
    tmla__tele_close(a, now_ms); /* summaries are per model */
    a->trial_ms = now_ms;
    set_state(a, TML_OTA_TRIAL, TML_OTA_R_NONE);
}

/* Golden vectors: vector i is input then class (u16 LE) and score (u16 LE,
 * bp) at model_size + i * (input_len + 4). */
static bool
run_vectors(struct tmla_agent *a)
{
    const struct tmla_model *m = tmla_active_model(a);
    uint8_t exp[4];

    for (uint32_t i = 0; i < m->n_vectors; i++) {
        uint32_t off = m->model_size + i * (m->vector_input_len + 4u);
        uint32_t cls = 0, score = 0, want_cls, want_score, diff;

        if (a->port.flash_read(a->port.user, m->slot, off + m->vector_input_len,
                               exp, 4) != 0 ||
            a->port.infer(a->port.user, m, off, m->vector_input_len, &cls,
                          &score) != 0)
            return false;
        want_cls = (uint32_t)exp[0] | (uint32_t)exp[1] << 8;
        want_score = (uint32_t)exp[2] | (uint32_t)exp[3] << 8;
        diff = score > want_score ? score - want_score : want_score - score;
        if (cls != want_cls || diff > m->score_tol_bp)
            return false;
    }
    return true;
}

void
tmla__ota_poll(struct tmla_agent *a, uint32_t now_ms)
{
    int32_t elapsed;

    switch (a->ota_state) {
    case TML_OTA_DOWNLOADING:
        if (!a->ota_hashing) {
            uint32_t g, off, size = a->ps.slot[dl_slot(a)].size;

            /* After a reboot: marks ahead of the resume point are stale
             * (a page to write again after a torn write): start them
             * again, up to it. Then rebuild the stream hash from flash. */
            if (a->ota_marks != UINT32_MAX &&
                marks_layout(a, size, &g, &off) &&
                (uint64_t)a->ota_marks * g > a->ota_offset) {
                marks_erase(a, dl_slot(a), size);
                marks_write(a, dl_slot(a), size, a->ota_offset);
            }
            if (a->port.sha256_init(a->port.user, a->sha.b) != 0 ||
                !hash_slot(a, dl_slot(a), a->ota_offset, a->sha.b)) {
                fail(a, TML_OTA_R_FLASH);
                break;
            }
            a->ota_hashing = true;
        }
        if (!a->connected)
            break;
        elapsed = tmla__ms_diff(now_ms, a->ota_start_ms);
        if (elapsed > (int32_t)a->cfg.ota_grace_ms &&
            (uint64_t)(a->ota_offset - a->ota_start_off) * 1000u <
                (uint64_t)a->cfg.ota_min_rate_bps * (uint32_t)elapsed) {
            fail(a, TML_OTA_R_SLOW); /* S10 */
            break;
        }
        if (a->ota_req_end <= a->ota_offset ||
            tmla__ms_diff(now_ms, a->ota_req_ms) >=
                (int32_t)a->cfg.ota_request_timeout_ms) {
            a->ota_retries++;
            request(a, now_ms);
        }
        break;
    case TML_OTA_VERIFYING:
        verify_slot(a);
        break;
    case TML_OTA_READY:
        activate(a, now_ms);
        break;
    case TML_OTA_TRIAL:
        if (!a->ps.trial) {
            break;
        } else if (!a->ps.vectors_ok) {
            if (!run_vectors(a)) {
                revert(a, TML_OTA_R_SELFTEST, now_ms, false);
                break;
            }
            a->ps.vectors_ok = 1;
            if (a->cfg.auto_confirm) {
                confirm(a);
                break;
            }
            commit_update(a);
        }
        if (tmla__ms_diff(now_ms, a->trial_ms) >=
            (int32_t)a->cfg.confirm_timeout_ms)
            revert(a, TML_OTA_R_TRIAL_TIMEOUT, now_ms, false);
        break;
    default:
        break;
    }
    if (a->status_due && a->connected)
        publish_status(a, a->ota_offer_id, a->ota_version, a->ota_state,
                       a->ota_reason);
}

enum tml_err
tmla_confirm_model(struct tmla_agent *a)
{
    if (!tmla_in_trial(a) || !a->ps.vectors_ok)
        return TML_ERR_INVAL;
    confirm(a);
    return TML_OK;
}

enum tml_err
tmla_reject_model(struct tmla_agent *a)
{
    if (!tmla_in_trial(a))
        return TML_ERR_INVAL;
    revert(a, TML_OTA_R_SELFTEST, a->now_ms, false);
    return TML_OK;
}
