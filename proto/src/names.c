/*
 * names.c: constant English names for error, OTA state and OTA reason codes
 * (the same words PROTOCOL.md uses), for logs and tmlctl output.
 */
#include "internal.h"

static const char *const err_names[TML_ERR__COUNT] = {
    "ok",
    "truncated input",
    "trailing bytes",
    "indefinite length",
    "nesting too deep",
    "wrong type",
    "required field missing",
    "unknown critical field",
    "oversize",
    "non-minimal encoding",
    "duplicate map key",
    "value out of range",
    "unsupported protocol version",
    "unsupported CBOR item",
    "output buffer too small",
    "malformed topic or device id",
    "invalid argument",
};

static const char *const state_names[] = {
    "idle",     "offered",    "downloading", "verifying", "ready",
    "activating", "trial",    "confirmed",   "failed",    "reverted"};

static const char *const reason_names[TML_OTA_R__COUNT] = {
    "none",
    "bad manifest",
    "unknown key",
    "revoked key",
    "bad signature",
    "wrong hardware",
    "too large",
    "rollback",
    "already installed",
    "expired",
    "arena too small",
    "agent too old",
    "input shape unsupported",
    "bad hash",
    "bad chunk",
    "wrong offer",
    "flash error",
    "self-test failed",
    "trial timeout",
    "too slow",
    "cancelled",
    "busy",
};

const char *
tml_strerror(enum tml_err err)
{
    if ((unsigned)err >= TML_ERR__COUNT) {
        return "unknown error";
    }
    return err_names[err];
}

const char *
tml_ota_state_name(enum tml_ota_state s)
{
    if ((unsigned)s >= sizeof(state_names) / sizeof(state_names[0])) {
        return "?";
    }
    return state_names[s];
}

const char *
tml_ota_reason_name(enum tml_ota_reason r)
{
    if ((unsigned)r >= TML_OTA_R__COUNT) {
        return "?";
    }
    return reason_names[r];
}
