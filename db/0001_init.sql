-- 0001_init: tmld's core schema (issue 4).
--
-- Write amplification is the design constraint (an SD card wears out):
-- tele and sample rows are appended in rowid order and carry NO secondary
-- index, so a group commit dirties only the tail pages of each table.
-- Deduplication is a per-device high-water sequence per stream (table
-- stream_hw, a few bytes per device) updated in the same transaction as the
-- rows: a UNIQUE(device_id, seq) index over interleaved devices dirtied one
-- index leaf per device per commit (measured 161 B -> 7.6 KB written per row).
-- Records are accepted only in sequence (seq = high-water + 1, go-back-N), so
-- "seq <= high-water" is exactly "already stored".

CREATE TABLE devices (
    id               INTEGER PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,       -- certificate CN
    first_seen       INTEGER NOT NULL,           -- unix s
    last_seen        INTEGER NOT NULL,           -- unix s
    online           INTEGER NOT NULL DEFAULT 0,
    agent_version    INTEGER NOT NULL DEFAULT 0, -- (major<<16)|(minor<<8)|patch
    hw               TEXT NOT NULL DEFAULT '',
    model            TEXT NOT NULL DEFAULT '',
    model_version    INTEGER NOT NULL DEFAULT 0,
    model_slot       INTEGER NOT NULL DEFAULT 0,
    slot_size        INTEGER NOT NULL DEFAULT 0,
    arena_size       INTEGER NOT NULL DEFAULT 0,
    chunk_max        INTEGER NOT NULL DEFAULT 0,
    boot_count       INTEGER NOT NULL DEFAULT 0,
    last_ota_state   INTEGER NOT NULL DEFAULT 0,
    last_ota_reason  INTEGER NOT NULL DEFAULT 0,
    last_ota_version INTEGER NOT NULL DEFAULT 0,
    version_floor    INTEGER NOT NULL DEFAULT 0,
    hello_at         INTEGER NOT NULL DEFAULT 0  -- unix s of the last hello
);

-- Groups a device declares in its hello (source 'fw'); operators may add
-- their own later (another source value).
CREATE TABLE device_groups (
    device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    grp       TEXT NOT NULL,
    source    TEXT NOT NULL DEFAULT 'fw',
    PRIMARY KEY (device_id, grp)
) WITHOUT ROWID;
CREATE INDEX device_groups_grp ON device_groups(grp);

-- Highest committed sequence number per device and stream.
CREATE TABLE stream_hw (
    device_id  INTEGER PRIMARY KEY,
    tele_hw    INTEGER NOT NULL DEFAULT 0,
    sample_hw  INTEGER NOT NULL DEFAULT 0
);

-- One inference summary (up/tele). Scalars the queries need are columns;
-- the per-class counts and histograms stay in the original CBOR (body).
CREATE TABLE tele (
    id            INTEGER PRIMARY KEY,
    device_id     INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    recv_at       INTEGER NOT NULL,   -- unix s
    model_version INTEGER NOT NULL,
    period_s      INTEGER NOT NULL,
    n_inferences  INTEGER NOT NULL,
    n_low_conf    INTEGER NOT NULL,
    n_flagged     INTEGER NOT NULL,
    n_errors      INTEGER NOT NULL,
    lat_mean_us   INTEGER NOT NULL,
    body          BLOB NOT NULL
);

-- Telemetry older than the retention window, rolled up per device, hour and
-- model version.
CREATE TABLE tele_hourly (
    device_id     INTEGER NOT NULL,
    hour          INTEGER NOT NULL,   -- unix s / 3600
    model_version INTEGER NOT NULL,
    summaries     INTEGER NOT NULL,
    n_inferences  INTEGER NOT NULL,
    n_low_conf    INTEGER NOT NULL,
    n_flagged     INTEGER NOT NULL,
    n_errors      INTEGER NOT NULL,
    lat_sum_us    INTEGER NOT NULL,   -- sum of lat_mean_us * n_inferences
    PRIMARY KEY (device_id, hour, model_version)
) WITHOUT ROWID;

-- One chunk of a captured input (up/sample).
CREATE TABLE samples (
    id            INTEGER PRIMARY KEY,
    device_id     INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    recv_at       INTEGER NOT NULL,
    sample_id     INTEGER NOT NULL,
    model_version INTEGER NOT NULL,
    reason        INTEGER NOT NULL,   -- enum tml_sample_reason
    predicted     INTEGER NOT NULL,
    confidence_bp INTEGER NOT NULL,
    expected      INTEGER,            -- NULL when unknown
    dtype         INTEGER NOT NULL,
    shape         TEXT NOT NULL,      -- "16000" or "96x96x1"
    rate_hz       INTEGER NOT NULL,
    total_len     INTEGER NOT NULL,
    offset        INTEGER NOT NULL,
    data          BLOB NOT NULL
);
