-- 0100_ota: signed model artifacts and rollouts (issue 5, daemon/ota*.c).
--
-- models: one row per stored bundle (content-addressed file
-- <state>/artifacts/<artifact>.tmlb). (name, version, hw) is unique: one
-- version number means one image, forever (anti-rollback relies on it).
CREATE TABLE models (
    id                INTEGER PRIMARY KEY,
    artifact          TEXT NOT NULL UNIQUE,  -- SHA-256 of the bundle file, hex
    name              TEXT NOT NULL,
    version           INTEGER NOT NULL,
    hw                TEXT NOT NULL,
    size              INTEGER NOT NULL,      -- image bytes
    sha256            TEXT NOT NULL,         -- SHA-256 of the image, hex
    key_id            TEXT NOT NULL,         -- signing key id, hex
    created           INTEGER NOT NULL,      -- manifest created, unix s
    expires           INTEGER NOT NULL DEFAULT 0,
    model_size        INTEGER NOT NULL DEFAULT 0,
    arena_size        INTEGER NOT NULL DEFAULT 0,
    min_agent_version INTEGER NOT NULL DEFAULT 0,
    bundle_len        INTEGER NOT NULL DEFAULT 0,
    stored_at         INTEGER NOT NULL,      -- unix s
    UNIQUE (name, version, hw)
);

-- One rollout of one artifact to a group (or a device list).
CREATE TABLE rollouts (
    id                INTEGER PRIMARY KEY,   -- also bits 16..30 of offer ids
    artifact          TEXT NOT NULL,
    rollback_artifact TEXT NOT NULL DEFAULT '',
    model             TEXT NOT NULL,
    version           INTEGER NOT NULL,
    grp               TEXT NOT NULL DEFAULT '',
    policy            TEXT NOT NULL,         -- JSON, see ota_db.c
    state             INTEGER NOT NULL,      -- enum rollout_state
    reason            TEXT NOT NULL DEFAULT '',
    cur_wave          INTEGER NOT NULL DEFAULT 0,
    tele_since_id     INTEGER NOT NULL DEFAULT 0,
    bytes_sent        INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);

CREATE TABLE waves (
    rollout_id  INTEGER NOT NULL,
    idx         INTEGER NOT NULL,
    pct         INTEGER NOT NULL,            -- cumulative share of targets
    state       INTEGER NOT NULL,            -- enum rollout_wave_state
    n_devices   INTEGER NOT NULL,
    gate_reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (rollout_id, idx)
) WITHOUT ROWID;

-- Per-device state of a rollout (enum rollout_dev_state / reasons).
CREATE TABLE rollout_devices (
    rollout_id INTEGER NOT NULL,
    device     TEXT NOT NULL,
    offer_id   INTEGER NOT NULL,
    wave       INTEGER NOT NULL,
    state      INTEGER NOT NULL,
    reason     INTEGER NOT NULL DEFAULT 0,
    offset     INTEGER NOT NULL DEFAULT 0,
    attempts   INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (rollout_id, device)
) WITHOUT ROWID;
