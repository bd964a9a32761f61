/*
 * ota.c: the OTA receiver and the two model slots.
 *
 * Flow (DESIGN.md "OTA", states of enum tml_ota_state):
 *   offer -> verify COSE_Sign1 (ES256, trusted kid, not revoked), decode the
 *   manifest, check expiry, hardware, sizes, needs, anti-rollback -> persist
 *   "downloading into slot d" (slot d invalidated first) -> request chunks
 *   by offset with a window, bound to the offer id -> hash while writing,
 *   erase each page before its first write, persist the offset at
 *   checkpoints (interval()) -> after the last byte compare the stream hash,
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
 * state writes): when one erase page after the image (rounded up to whole
 * pages) has room, it holds a header unit and then one unit per ota_chunk
 * of image (rounded up to write_align); every unit is MARK_LEN bytes
 * holding the offer id and a 0x00 byte. The page is erased and headed
 * when the download (re)starts and each mark is programmed once after
 * that chunk's bytes are in flash: NOR flash programs each unit once, so
 * no further erase or state write is needed. A mark that cannot be read
 * makes the resume fall back to the checkpoint.
 * At boot the run of programmed marks after a matching header gives the
 * resume offset (any non-erased unit, even a torn one, means its data write
 * had returned). If the rest of that page is not erased (power cut inside a
 * data write) the resume falls back to the page start, which is erased
 * again before it is written, and tmla_init's own state write records it as
 * the checkpoint. Whenever the marks are ahead of the resume point or
 * unusable (another offer id), the first poll starts them again. The
 * stream hash is rebuilt from flash either way, and the final hash check
 * catches anything else.
 */
#include <string.h>

#include "internal.h"

#define READ_BLOCK 64u

/* Keeps a function's stack frame (sig_hash: the hash context) out of its
 * caller's, so the deepest path (on_offer + tmla__state_save) is shorter. */
#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

#define MARKS_HDR 4u /* offer id, in the device's byte order */

/* The slot a download goes to: the inactive one, 0 without a model
 * (TMLA__NO_SLOT is odd). */
static uint8_t
dl_slot(const struct tmla_agent *a)
{
    return (uint8_t)(~a->ps.active & 1u);
}

/* Publishes one up/ota message about the current download position: a
 * request for len bytes, or a status (len 0). Returns the port's code.
 * Requests go at QoS 0 (PROTOCOL.md section 8.2): the request timer
 * repeats a lost one, and a QoS 1 request costs the broker, the gateway
 * and the device two PUBACKs per chunk. */
static int
send_up(struct tmla_agent *a, uint32_t offer_id, uint32_t version, uint32_t len,
        uint8_t state, uint8_t reason, uint32_t passed)
{
    struct tml_ota_up u;
    size_t n;

    u.kind = len != 0 ? TML_OTA_UP_REQUEST : TML_OTA_UP_STATUS;
    u.passed = passed;
    u.offer_id = offer_id;
    u.version = version;
    u.offset = a->ota_offset;
    u.len = len;
    u.state = state;
    u.reason = reason;
    if (tml_ota_up_encode(&u, a->tx, sizeof a->tx, &n) != TML_OK)
        return TMLA_PORT_FAIL;
    return tmla__publish(a, TML_KIND_OTA, a->tx, n, len != 0 ? TMLA__QOS0 : 0u);
}

static void
tell_port(struct tmla_agent *a, uint8_t state, uint8_t reason, uint32_t version)
{
    if (a->port.ota_event != NULL)
        a->port.ota_event(a->port.user, (enum tml_ota_state)state,
                          (enum tml_ota_reason)reason, version);
}

/* Reports a refusal of offer_id (not the current update) to the port's
 * ota_event and on up/ota, at once. */
static void
report(struct tmla_agent *a, uint32_t offer_id, uint32_t version, uint8_t state,
       uint8_t reason)
{
    tell_port(a, state, reason, version);
    (void)send_up(a, offer_id, version, 0, state, reason, 0);
}

/* Sends the current state if it is still to be reported, with the states
 * entered since the last status sent (PROTOCOL.md section 8.2). */
static void
flush_status(struct tmla_agent *a)
{
    if (a->status_due && a->connected &&
        send_up(a, a->ota_offer_id, a->ota_version, 0, a->ota_state,
                a->ota_reason, a->status_passed) == TMLA_PORT_OK) {
        a->status_due = false;
        a->status_passed = 0;
    }
}

static void
set_state(struct tmla_agent *a, uint8_t state, uint8_t reason)
{
    /* Every transition goes to the port at once and on up/ota, but states
     * entered back to back (offered -> downloading, ready -> activating ->
     * trial) share one status: it goes out before the next request, at
     * the end of the message or poll that made them, or at once for a
     * terminal state; until the port takes it, tmla_poll tries again. */
    if (a->status_due && a->ota_state != TML_OTA_IDLE &&
        a->ota_state < TML_OTA_CONFIRMED)
        a->status_passed |= (uint16_t)(1u << a->ota_state);
    a->ota_state = state;
    a->ota_reason = reason;
    a->status_due = true;
    tell_port(a, state, reason, a->ota_version);
    if (state >= TML_OTA_CONFIRMED)
        flush_status(a);
    /* The active model or its trial flag changed (TRIAL, CONFIRMED,
     * REVERTED): tell the gateway's registry with a fresh hello (model,
     * slot, last OTA result). */
    if ((1u << state) & ((1u << TML_OTA_TRIAL) | (1u << TML_OTA_CONFIRMED) |
                         (1u << TML_OTA_REVERTED)))
        a->hello_due = true;
}

static NOINLINE void
commit_update(struct tmla_agent *a)
{
    a->stats.update_state_writes++;
    tmla__state_commit(a);
}

/* Persists the result of a step of the update (hello's last OTA result)
 * with whatever else the caller changed in a->ps, in one record, then
 * reports the new state. */
static void
finish(struct tmla_agent *a, uint8_t state, uint8_t reason)
{
    a->ps.last_state = state;
    a->ps.last_reason = reason;
    commit_update(a);
    set_state(a, state, reason);
}

static void
fail(struct tmla_agent *a, uint8_t reason)
{
    a->ps.valid &= (uint8_t) ~(1u << dl_slot(a));
    a->ps.dl = 0;
    a->ota_hashing = false;
    finish(a, TML_OTA_FAILED, reason);
}

static bool slot_intact(struct tmla_agent *a, uint8_t s);

/* Drops the active model for reason: the other slot becomes active if it
 * holds a verified image (at boot only if it still hashes right, S15),
 * else none; persisted and reported. At boot (tmla_init, before the first
 * summary period; the application loads whatever tmla_active_model() says
 * after init) that is all; otherwise the period is closed and the
 * application is asked to load the other model. */
static void
revert(struct tmla_agent *a, uint8_t reason, uint32_t now_ms, bool booting)
{
    struct tmla__pstate *ps = &a->ps;
    uint8_t cur = ps->active, old = (uint8_t)(cur ^ 1u);
    const struct tmla_model *m;

    ps->valid &= (uint8_t)(1u << old);
    if (booting && ps->valid && !slot_intact(a, old))
        ps->valid = 0;
    ps->active = ps->valid ? old : TMLA__NO_SLOT;
    /* A download under way (only a revert at boot meets one) wrote the
     * slot that was inactive; that is no longer what dl_slot() names, so
     * it is dropped: the gateway's next offer starts it again. */
    ps->dl = 0;
    ps->trial = 0;
    ps->vectors_ok = 0;
    /* hello's last OTA result names the model reverted. */
    a->ota_version = ps->last_version = ps->slot[cur].version;
    finish(a, TML_OTA_REVERTED, reason);
    if (booting)
        return;
    tmla__tele_close(a, now_ms); /* summaries are per model */
    /* The application goes back to the old model now, or from tmla_poll
     * if it cannot at this moment. */
    m = tmla_active_model(a);
    a->load_due =
        m != NULL && a->port.activate(a->port.user, m) != TMLA_PORT_OK;
}

static void
confirm(struct tmla_agent *a)
{
    a->ps.trial = 0;
    finish(a, TML_OTA_CONFIRMED, TML_OTA_R_NONE);
}

/* Bytes between download checkpoints for an image of size bytes. */
static uint32_t
interval(const struct tmla_agent *a, uint32_t size)
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

/* Reads bytes [off, off + len) of slot d in blocks: with ctx, hashes them
 * into ctx (a started SHA-256); with ctx NULL, checks they are erased.
 * Returns 0 (hashed, or all erased), 1 (not erased) or -1 (a read or
 * hash call failed). */
static int
scan(struct tmla_agent *a, uint8_t d, uint32_t off, uint32_t len, void *ctx)
{
    uint8_t buf[READ_BLOCK];

    while (len > 0) {
        uint32_t n = len < READ_BLOCK ? len : READ_BLOCK;

        if (a->port.flash_read(a->port.user, d, off, buf, n) != 0 ||
            (ctx != NULL &&
             a->port.sha256_update(a->port.user, ctx, buf, n) != 0))
            return -1;
        for (uint32_t i = 0; ctx == NULL && i < n; i++)
            if (buf[i] != 0xffu)
                return 1;
        off += n;
        len -= n;
    }
    return 0;
}

/* Writes n aligned bytes at off of slot d, erasing each page that starts
 * in that range just before (the download is sequential and resumes at a
 * page-aligned checkpoint, so no page is written before it is erased). */
static bool
flash_put(struct tmla_agent *a, uint8_t d, uint32_t off, const uint8_t *p,
          uint32_t n)
{
    uint32_t es = a->port.erase_size;

    if (off > a->port.slot_size || n > a->port.slot_size - off)
        return false;
    for (uint32_t pg = (off + es - 1u) & ~(es - 1u); pg - off < n; pg += es) {
        a->stats.flash_ops++;
        if (a->port.flash_erase(a->port.user, d, pg, es) != 0)
            return false;
    }
    a->stats.flash_ops++;
    return a->port.flash_write(a->port.user, d, off, p, n) == 0;
}

/* Bytes of one mark and of the header: a multiple of every write_align
 * the port may have, with room for the offer id and a 0x00 byte (so no
 * offer id, not even 0xffffffff, leaves a unit looking erased). */
#define MARK_LEN                                                              \
    (TMLA_MAX_WRITE_ALIGN > MARKS_HDR ? TMLA_MAX_WRITE_ALIGN : 2u * MARKS_HDR)

/* Image bytes per mark: ota_chunk rounded up to write_align, so that a
 * resume offset (a whole number of steps) is aligned for the next write
 * whatever ota_chunk the application chose. */
static uint32_t
mark_step(const struct tmla_agent *a)
{
    uint32_t al = a->port.write_align;

    return (a->cfg.ota_chunk + al - 1u) / al * al;
}

/* Offset of the mark page for an image of size bytes: the header unit and
 * one unit per whole ota_chunk must fit one erase page after the image.
 * 0 when they do not (then only the checkpoints apply). */
static uint32_t
marks_at(const struct tmla_agent *a, uint32_t size)
{
    uint32_t es = a->port.erase_size;
    uint32_t off = (size + es - 1u) & ~(es - 1u);

    if (off > a->port.slot_size - es ||
        (size / mark_step(a) + 1u) * MARK_LEN > es)
        return 0;
    return off;
}

/* Programs the header (unit 0; flash_put erases the page first, the mark
 * area being page-aligned) if ota_marks is 0, then the mark of every whole
 * chunk now in flash (mark k at unit k). Header and marks hold the same
 * bytes: the offer id, then erased bytes. ota_marks counts the units
 * programmed; a failed write sets it to UINT32_MAX, which only costs
 * resume precision. */
static void
marks_write(struct tmla_agent *a, uint8_t d, uint32_t size, uint32_t written)
{
    uint8_t unit[MARK_LEN];
    uint32_t off = marks_at(a, size);

    memset(unit, 0xff, sizeof unit);
    memcpy(unit, &a->ota_offer_id, MARKS_HDR);
    unit[MARKS_HDR] = 0;
    while (off != 0 && a->ota_marks <= written / mark_step(a)) {
        if (flash_put(a, d, off + a->ota_marks * MARK_LEN, unit, MARK_LEN))
            a->ota_marks++;
        else
            a->ota_marks = UINT32_MAX;
    }
}

/* Resume offset after a reboot: the checkpoint cp, or further by the
 * marks. Sets ota_marks to the units found (header and marks), UINT32_MAX
 * without a header of this download. */
static uint32_t
marks_resume(struct tmla_agent *a, uint8_t d, uint32_t size, uint32_t cp)
{
    uint32_t off = marks_at(a, size), k = 0, res, end, id;
    uint32_t es = a->port.erase_size, step = mark_step(a);

    a->ota_marks = UINT32_MAX;
    if (off == 0 || a->port.flash_read(a->port.user, d, off, &id, 4) != 0 ||
        id != a->ps.dl_offer_id)
        return cp;
    while (k < size / step) {
        int rc = scan(a, d, off + (k + 1u) * MARK_LEN, MARK_LEN, NULL);

        if (rc < 0) /* unreadable: the checkpoint, the marks start again */
            return cp;
        if (rc == 0)
            break;
        k++;
    }
    a->ota_marks = k + 1u;
    res = k * step;
    end = (res + es - 1u) & ~(es - 1u);
    if (end > size)
        end = size;
    if (res > cp && scan(a, d, res, end - res, NULL) != 0) {
        /* Torn data write: that page again, from its start. */
        res &= ~(es - 1u);
        if (res > cp)
            a->ps.dl_checkpoint = res;
    }
    return res > cp ? res : cp;
}

/* Finishes the hash in a->sha: true if it equals slot s's recorded
 * SHA-256. */
static bool
hash_matches(struct tmla_agent *a, uint8_t s)
{
    uint8_t digest[TML_SHA256_LEN];

    return a->port.sha256_final(a->port.user, a->sha.b, digest) == 0 &&
           memcmp(digest, a->ps.slot[s].sha256, TML_SHA256_LEN) == 0;
}

/* Starts a->sha over bytes [0, len) of slot s. False on a read or hash
 * failure. */
static bool
hash_flash(struct tmla_agent *a, uint8_t s, uint32_t len)
{
    return a->port.sha256_init(a->port.user, a->sha.b) == 0 &&
           scan(a, s, 0, len, a->sha.b) == 0;
}

/* True if slot s still hashes to its recorded SHA-256. */
static bool
slot_intact(struct tmla_agent *a, uint8_t s)
{
    return hash_flash(a, s, a->ps.slot[s].size) && hash_matches(a, s);
}

void
tmla__ota_boot(struct tmla_agent *a, uint32_t now_ms)
{
    struct tmla__pstate *ps = &a->ps;
    const struct tmla_model *act = tmla_active_model(a);
    uint8_t d = dl_slot(a);

    a->ota_state = TML_OTA_IDLE;
    /* The statuses of the update a reboot interrupted (a trial and its
     * revert here, a download or a verified image below) are for its
     * offer; a model confirmed long ago that rots is nobody's offer (0):
     * the last offer accepted may be a live rollout of another model. */
    a->ota_offer_id = ps->trial ? ps->dl_offer_id : 0;
    /* Check what the application is about to load: flash can rot, or a
     * write can have failed silently. A model that no longer verifies is
     * dropped and the other slot takes over if it is whole (S15). */
    if (act != NULL && !slot_intact(a, ps->active)) {
        revert(a, TML_OTA_R_FLASH, now_ms, true);
        return;
    }
    if (ps->trial && act != NULL) {
        a->ota_version = act->version;
        a->ota_state = TML_OTA_TRIAL;
        a->trial_ms = now_ms;
        if (++ps->trial_boots > a->cfg.trial_max_boots)
            revert(a, TML_OTA_R_TRIAL_TIMEOUT, now_ms, true);
        return;
    }
    ps->trial = 0;
    a->ota_version = ps->slot[d].version;
    a->ota_offer_id = ps->dl_offer_id; /* only read outside IDLE */
    if (ps->dl) {
        /* Resume at the last checkpoint, or further by the progress
         * marks; the stream hash is rebuilt from flash by the first poll. */
        a->ota_state = TML_OTA_DOWNLOADING;
        a->ota_offset = marks_resume(a, d, ps->slot[d].size, ps->dl_checkpoint);
    } else if (ps->last_state == TML_OTA_READY && (ps->valid & (1u << d))) {
        /* Verified before the reboot: hash it again before activating. */
        a->ota_state = TML_OTA_VERIFYING;
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

/* Bytes of the head of a CBOR byte string of len bytes (RFC 8949 3.1;
 * manifests are < 64 KiB, TML_MAX_MANIFEST). */
static size_t
str_head_len(size_t len)
{
    return len < 24 ? 1 : len < 256 ? 2 : 3;
}

/* SHA-256 of Sig_structure = ["Signature1", protected, h'', payload]
 * (RFC 9052 4.4), streamed so no copy of the manifest is needed. The
 * protected header and the payload are hashed with their byte string heads
 * as they stand in the COSE_Sign1 just before them: the decoder accepts
 * only shortest-form heads, which are what the Sig_structure needs. */
static NOINLINE bool
sig_hash(struct tmla_agent *a, const struct tml_cose_sign1 *c,
         uint8_t out[TML_SHA256_LEN])
{
    static const uint8_t head[] = {0x84, 0x6a, 'S', 'i', 'g', 'n',
                                   'a',  't',  'u', 'r', 'e', '1'};
    static const uint8_t empty = 0x40;
    size_t hp = str_head_len(c->protected_hdr.len);
    size_t hq = str_head_len(c->payload.len);
    const uint8_t *part[4] = {head, c->protected_hdr.p - hp, &empty,
                              c->payload.p - hq};
    size_t len[4] = {sizeof head, c->protected_hdr.len + hp, 1,
                     c->payload.len + hq};
    union {
        uint64_t align;
        uint8_t b[TMLA_SHA256_CTX_SIZE];
    } ctx;
    void *u = a->port.user;
    bool ok = a->port.sha256_init(u, ctx.b) == 0;

    for (size_t i = 0; ok && i < 4; i++)
        ok = a->port.sha256_update(u, ctx.b, part[i], len[i]) == 0;
    return ok && a->port.sha256_final(u, ctx.b, out) == 0;
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
     * str_head_len needs). */
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

/* What the device cannot or must not take (S4, S5, S8); reset: a
 * rotation manifest, exempt from anti-rollback. */
static uint8_t
check_fit(const struct tmla_agent *a, const struct tml_manifest *m, bool reset)
{
    const struct tmla_config *c = &a->cfg;
    const struct tmla_model *act = tmla_active_model(a);
    uint32_t have = act != NULL ? act->version : 0;

    /* tml_manifest_decode already enforced version >= 1, size >= 1, a
     * name of at most TML_MAX_NAME bytes, and model_size + n_vectors *
     * (vector_input_len + 4) == size with vector_input_len >= 1 when there
     * are vectors. */
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
    if (reset)
        return TML_OTA_R_NONE;
    if (m->version == have)
        return TML_OTA_R_ALREADY_INSTALLED;
    if (m->version < a->ps.floor || m->version < have)
        return TML_OTA_R_ROLLBACK;
    return TML_OTA_R_NONE;
}

static void
request(struct tmla_agent *a, uint32_t now_ms)
{
    uint32_t len = a->ps.slot[dl_slot(a)].size - a->ota_offset;
    uint32_t want = a->cfg.ota_chunk * a->cfg.ota_window;

    if (len > want)
        len = want;
    a->ota_req_ms = now_ms;
    /* A request is DOWNLOADING at ota_offset for the gateway: it stands for
     * the status of that state (request() runs only in it). */
    if (len != 0 &&
        send_up(a, a->ota_offer_id, a->ota_version, len, 0, 0, 0) ==
            TMLA_PORT_OK) {
        a->ota_req_end = a->ota_offset + len;
        a->status_due = false;
        a->status_passed = 0;
    }
}

/* (Re)starts the download of slot d at ota_offset: the progress marks
 * from the header again if they are ahead of it or unusable, and the
 * stream hash over the bytes already in flash. False (and FAILED) on a
 * flash or hash error. */
static bool
restart(struct tmla_agent *a, uint8_t d)
{
    if (a->ota_marks > a->ota_offset / mark_step(a) + 1u)
        a->ota_marks = 0;
    marks_write(a, d, a->ps.slot[d].size, a->ota_offset);
    a->ota_hashing = hash_flash(a, d, a->ota_offset);
    if (!a->ota_hashing)
        fail(a, TML_OTA_R_FLASH);
    return a->ota_hashing;
}

static void
on_offer(struct tmla_agent *a, const struct tml_ota_down *o, uint32_t now_ms)
{
    struct tmla__pstate *ps = &a->ps;
    struct tml_manifest m;
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
        report(a, o->offer_id, 0, TML_OTA_FAILED, r);
        return;
    }
    /* Expiry (S6): against the clock if the port has one, and always
     * against the newest creation time seen in a verified manifest. */
    now_unix = a->port.unix_time != NULL ? a->port.unix_time(a->port.user) : 0;
    if (now_unix < ps->time_floor)
        now_unix = ps->time_floor;
    if (m.expires != 0 && now_unix >= m.expires) {
        report(a, o->offer_id, m.version, TML_OTA_FAILED, TML_OTA_R_EXPIRED);
        return;
    }
    /* Revocation (S12): a good signature by one trusted key may distrust
     * the others, never itself. */
    for (size_t i = 0; i < m.n_revoke; i++) {
        int k = find_key(a, m.revoke_kids[i].p, m.revoke_kids[i].len);

        if (k >= 0 && k != signer)
            revoke |= (uint8_t)(1u << k);
    }
    revoke &= (uint8_t)~ps->revoked; /* only what is new */
    /* A rotation manifest (newly revokes another key and sets
     * resets_floor) may lower the floor: recovery from a fast-forward
     * attack with the old key. Its revocation is stored with the accepted
     * download, so a replay later (the key already revoked) resets
     * nothing. A plain revocation is stored at once. */
    reset = m.resets_floor && revoke != 0;
    if (revoke != 0 && !reset) {
        ps->revoked |= revoke;
        tmla__state_commit(a);
    }
    r = check_fit(a, &m, reset);
    if (r == TML_OTA_R_ALREADY_INSTALLED && ps->trial) {
        /* The model on trial offered again (the gateway missed a status):
         * not confirmed yet, so report the trial, for this offer. */
        a->ota_offer_id = o->offer_id;
        a->status_due = true;
        return;
    }
    if (r == TML_OTA_R_NONE && a->ota_state == TML_OTA_DOWNLOADING &&
        ps->slot[d].version == m.version &&
        memcmp(ps->slot[d].sha256, m.sha256, TML_SHA256_LEN) == 0) {
        /* The same image under a new offer id (gateway restarted). */
        a->ota_offer_id = ps->dl_offer_id = o->offer_id;
        commit_update(a);
        request(a, now_ms);
        return;
    }
    /* Busy: a trial, or DOWNLOADING .. ACTIVATING. */
    if (r == TML_OTA_R_NONE &&
        (ps->trial || (uint8_t)(a->ota_state - TML_OTA_DOWNLOADING) <=
                          TML_OTA_ACTIVATING - TML_OTA_DOWNLOADING))
        r = TML_OTA_R_BUSY;
    if (r != TML_OTA_R_NONE) {
        report(a, o->offer_id, m.version, TML_OTA_FAILED, r);
        return;
    }

    /* Accept: one durable record that invalidates slot d before its first
     * erase, names the image, and raises the anti-rollback floor. */
    ps->valid &= (uint8_t) ~(1u << d);
    t = &ps->slot[d];
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
    ps->dl = 1;
    ps->dl_offer_id = o->offer_id;
    ps->dl_checkpoint = 0;
    ps->revoked |= revoke; /* the rotation's, if any */
    if (reset || m.version > ps->floor)
        ps->floor = m.version;
    if (m.created > ps->time_floor)
        ps->time_floor = m.created;
    ps->last_state = TML_OTA_DOWNLOADING;
    ps->last_reason = TML_OTA_R_NONE;
    ps->last_version = m.version;
    a->stats.update_state_writes = 1;
    if (tmla__state_save(a) != TML_OK) {
        /* Not durable: no byte of slot d may be written, and RAM goes back
         * to the durable record (the fallback slot stays valid, the floor
         * where it was): a refused offer changes no state. */
        tmla__state_load(a);
        report(a, o->offer_id, m.version, TML_OTA_FAILED, TML_OTA_R_FLASH);
        return;
    }
    /* A status still pending belongs to the previous offer. */
    flush_status(a);
    a->status_due = false;
    a->status_passed = 0;
    a->ota_offer_id = o->offer_id;
    a->ota_version = m.version;
    a->ota_offset = 0;
    a->carry_len = 0;
    a->ota_start_ms = now_ms;
    a->ota_start_off = 0;
    a->ota_marks = 0;
    set_state(a, TML_OTA_OFFERED, TML_OTA_R_NONE);
    set_state(a, TML_OTA_DOWNLOADING, TML_OTA_R_NONE);
    if (restart(a, d))
        request(a, now_ms);
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
    uint32_t written, cp;

    if (a->ota_state != TML_OTA_DOWNLOADING || !a->ota_hashing) {
        a->stats.chunks_rejected++;
        return;
    }
    if (c->offer_id != a->ota_offer_id) {
        /* S7: chunks are bound to the offer; report, keep downloading. */
        a->stats.chunks_rejected++;
        (void)send_up(a, c->offer_id, 0, 0, TML_OTA_FAILED,
                      TML_OTA_R_WRONG_OFFER, 0);
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
        if (!hash_matches(a, d)) {
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
    cp = written - written % interval(a, t->size);
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
    /* tml_ota_down_decode accepts only these three kinds. */
    if (m->kind == TML_OTA_DOWN_OFFER)
        on_offer(a, m, now_ms);
    else if (m->kind == TML_OTA_DOWN_CHUNK)
        on_chunk(a, m, now_ms);
    else if (a->ota_state == TML_OTA_DOWNLOADING &&
             m->offer_id == a->ota_offer_id)
        fail(a, TML_OTA_R_CANCELLED);
    flush_status(a);
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
    /* After a reboot in READY it is recorded already. */
    if (a->ps.dl) {
        a->ps.valid |= (uint8_t)(1u << d);
        a->ps.dl = 0;
        finish(a, TML_OTA_READY, TML_OTA_R_NONE);
    } else
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
    a->trial_ms = now_ms;
    tmla__tele_close(a, now_ms); /* summaries are per model */
    finish(a, TML_OTA_TRIAL, TML_OTA_R_NONE);
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
        /* After a reboot: marks and stream hash first. */
        if ((!a->ota_hashing && !restart(a, dl_slot(a))) || !a->connected)
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
        /* TRIAL always has ps.trial set (confirm and revert leave it). */
        if (!a->ps.vectors_ok) {
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
    flush_status(a);
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
