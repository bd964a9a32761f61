-- 0200_upstream: store-and-forward to the cloud (issue 8, daemon/upstream*.c).
--
-- The records themselves stay where the core stores them (tele, samples) or,
-- for device events, in upstream_events below: upstream keeps no copy. A
-- stream's progress is one cursor (the highest row id the cloud answered 2xx
-- for, or that was poisoned) and at most one pending batch, whose bounds are
-- committed BEFORE it is sent, so that a retry after a crash carries the
-- same rows and the same Idempotency-Key.

CREATE TABLE upstream_cursor (
    stream      TEXT PRIMARY KEY,           -- 'tele', 'samples', 'events'
    cursor      INTEGER NOT NULL DEFAULT 0, -- last row id delivered/poisoned
    cursor_at   INTEGER NOT NULL DEFAULT 0, -- recv_at of that row (unix s)
    epoch       INTEGER NOT NULL DEFAULT 0, -- bumped when row ids restart
    delivered   INTEGER NOT NULL DEFAULT 0, -- rows the cloud accepted
    dropped     INTEGER NOT NULL DEFAULT 0, -- rows deleted before upload
    poisoned    INTEGER NOT NULL DEFAULT 0  -- rows in poisoned batches
) WITHOUT ROWID;

-- The batch in flight per stream (at most one).
CREATE TABLE upstream_batch (
    stream      TEXT PRIMARY KEY,
    epoch       INTEGER NOT NULL,
    first_id    INTEGER NOT NULL,
    last_id     INTEGER NOT NULL,
    n_rows      INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Batches the cloud refused with a 4xx other than 408/429: kept (the rows
-- stay in their tables) and shown by upstream.status / upstream.poisoned;
-- never retried automatically.
CREATE TABLE upstream_poisoned (
    id          INTEGER PRIMARY KEY,
    stream      TEXT NOT NULL,
    epoch       INTEGER NOT NULL,
    first_id    INTEGER NOT NULL,
    last_id     INTEGER NOT NULL,
    n_rows      INTEGER NOT NULL,
    http_status INTEGER NOT NULL,
    message     TEXT NOT NULL DEFAULT '',   -- start of the response body
    at          INTEGER NOT NULL            -- unix s
);

-- Device events for the cloud: online/offline (up/state) and OTA results
-- (terminal up/ota statuses). Appended in rowid order, no index.
CREATE TABLE upstream_events (
    id          INTEGER PRIMARY KEY,
    device      TEXT NOT NULL,
    recv_at     INTEGER NOT NULL,           -- unix s
    kind        INTEGER NOT NULL,           -- 1 online, 2 offline, 3 ota
    offer_id    INTEGER NOT NULL DEFAULT 0,
    version     INTEGER NOT NULL DEFAULT 0,
    state       INTEGER NOT NULL DEFAULT 0, -- enum tml_ota_state
    reason      INTEGER NOT NULL DEFAULT 0  -- enum tml_ota_reason
);
