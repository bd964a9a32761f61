/*
 * state.c: the agent's persisted record and sequence-number reservations.
 *
 * The record (struct tmla__pstate) lives in two copies written alternately.
 * Each write carries a generation one higher than the last and a CRC-32 over
 * everything before the CRC, and is read back before the agent relies on it.
 * At boot the valid copy with the highest generation wins, so a write torn by
 * power loss, or one that silently failed, leaves the previous record in
 * force (S13, S15, S16). Sequence numbers are handed out only from a block
 * that is already durable, so a reboot skips numbers but never reuses one.
 */
#include <string.h>

#include "internal.h"

#define STATE_MAGIC 0x544d4c41u /* "TMLA" */
#define SAVE_TRIES 3

static uint32_t
crc32(const void *p, size_t len)
{
    const uint8_t *b = p;
    uint32_t c = 0xffffffffu;

    while (len-- > 0) {
        c ^= *b++;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static uint32_t
record_crc(const struct tmla__pstate *s)
{
    return crc32(s, offsetof(struct tmla__pstate, crc));
}

/* A record is used only if its CRC matches and every field the agent
 * indexes or reads flash with is in range: the CRC catches torn writes, the
 * range checks a record from a different flash geometry or a bug. */
static bool
record_valid(const struct tmla_agent *a, const struct tmla__pstate *s)
{
    uint8_t d = s->active == TMLA__NO_SLOT ? 0 : (uint8_t)(s->active ^ 1u);

    if (s->magic != STATE_MAGIC || s->crc != record_crc(s) ||
        (s->active != TMLA__NO_SLOT && s->active > 1) || s->valid > 3 ||
        s->dl > 1 || s->trial > 1 ||
        (s->dl && s->dl_checkpoint > s->slot[d].size))
        return false;
    for (uint8_t i = 0; i < 2; i++) {
        const struct tmla_model *m = &s->slot[i];
        uint64_t need =
            (uint64_t)m->model_size +
            (uint64_t)m->n_vectors * ((uint64_t)m->vector_input_len + 4u);

        if (m->slot != i || m->size > a->port.slot_size ||
            m->model_size > m->size || need > m->size)
            return false;
    }
    return true;
}

uint32_t
tmla__fresh(struct tmla_agent *a)
{
    /* The port's random, and the wall clock when there is one, for a PRNG
     * seeded the same every boot. */
    uint32_t r = a->port.random(a->port.user);

    if (a->port.unix_time != NULL)
        r ^= a->port.unix_time(a->port.user) * 2654435761u;
    return r;
}

void
tmla__state_load(struct tmla_agent *a)
{
    struct tmla__pstate tmp;
    int best = -1;

    for (uint8_t c = 0; c < 2; c++) {
        if (a->port.state_read(a->port.user, c, &tmp, sizeof tmp) != 0 ||
            !record_valid(a, &tmp))
            continue;
        if (best < 0 || tmp.gen > a->ps.gen) {
            a->ps = tmp;
            best = c;
        }
    }
    if (best < 0) {
        /* Factory state: no model, nothing reserved. */
        memset(&a->ps, 0, sizeof a->ps);
        a->ps.magic = STATE_MAGIC;
        a->ps.active = TMLA__NO_SLOT;
        a->ps.slot[1].slot = 1;
        a->ps_copy = 0;
    } else {
        a->ps_copy = (uint8_t)(best ^ 1);
    }
    /* A numbering that starts here (factory state, or a record of an agent
     * without epochs) gets its epoch now; it is durable with the first
     * save, which happens before any number is handed out. */
    if (a->ps.epoch == 0) {
        uint32_t r = tmla__fresh(a);

        a->ps.epoch = (uint16_t)(r ^ (r >> 16));
        if (a->ps.epoch == 0)
            a->ps.epoch = 1;
    }
    /* Names are NUL-terminated by construction; enforce it anyway since the
     * application prints them. */
    a->ps.slot[0].name[TML_MAX_NAME] = '\0';
    a->ps.slot[1].name[TML_MAX_NAME] = '\0';
}

enum tml_err
tmla__state_save(struct tmla_agent *a)
{
    struct tmla__pstate back;
    enum tml_err err = TML_ERR_NOSPACE;

    a->ps.magic = STATE_MAGIC;
    for (int i = 0; i < SAVE_TRIES && err != TML_OK; i++) {
        a->ps.gen++;
        a->ps.crc = record_crc(&a->ps);
        a->stats.state_writes++;
        if (a->port.state_write(a->port.user, a->ps_copy, &a->ps,
                                sizeof a->ps) == 0 &&
            a->port.state_read(a->port.user, a->ps_copy, &back, sizeof back) ==
                0 &&
            memcmp(&back, &a->ps, sizeof back) == 0) {
            /* The other copy now holds the older record: overwrite it next
             * time, never the one just written. */
            a->ps_copy ^= 1;
            err = TML_OK;
        } else {
            a->stats.state_write_fails++;
        }
    }
    if (err == TML_OK)
        a->persist_due = false;
    return err;
}

void
tmla__state_commit(struct tmla_agent *a)
{
    if (tmla__state_save(a) != TML_OK)
        a->persist_due = true;
}

uint32_t
tmla__seq_take(struct tmla_agent *a, int stream, uint32_t n)
{
    uint32_t *next =
        stream == TMLA__STREAM_TELE ? &a->tele_next : &a->sample_next;
    uint32_t first = *next;
    uint32_t last = first + n - 1;

    if (n == 0 || last < first || last > 0xfffffff0u - TMLA_SEQ_BLOCK)
        return 0; /* exhausted: 2^32 records, never wraps to reuse */
    if (last > a->ps.seq_hi[stream]) {
        uint32_t old = a->ps.seq_hi[stream];

        a->ps.seq_hi[stream] = last + TMLA_SEQ_BLOCK;
        if (tmla__state_save(a) != TML_OK) {
            a->ps.seq_hi[stream] = old;
            return 0;
        }
    }
    *next = last + 1;
    return first;
}
