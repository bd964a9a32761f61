-- 0002_query: what makes `tmlctl telemetry --since 24h` and friends answer in
-- milliseconds over millions of tele rows (issue 6), without giving up the
-- write-amplification rule of 0001 (only tail pages dirtied per commit).
--
-- tele_hour: tele summed per hour, device and model version, maintained by a
-- trigger in the same transaction as the tele row. Its key starts with the
-- hour, so every insert of the current hour lands in the last few leaf pages
-- (1000 devices x 1-2 versions = a few KB), not one page per device.
-- A query over [since, now) reads whole hours from here and only the part
-- of the first, partial hour from tele.
--
-- tele_hour_ids: the first and last tele id received in each hour, so that
-- partial hour is a rowid range of tele (a few pages read in order), not a
-- scan. tele keeps no secondary index at all (0001's rule); the row of the
-- current hour is the only one that changes.

CREATE TABLE tele_hour (
    hour          INTEGER NOT NULL,   -- recv_at / 3600
    device_id     INTEGER NOT NULL,
    model_version INTEGER NOT NULL,
    summaries     INTEGER NOT NULL,
    n_inferences  INTEGER NOT NULL,
    n_low_conf    INTEGER NOT NULL,
    n_flagged     INTEGER NOT NULL,
    n_errors      INTEGER NOT NULL,
    lat_sum_us    INTEGER NOT NULL,   -- sum of lat_mean_us * n_inferences
    PRIMARY KEY (hour, device_id, model_version)
) WITHOUT ROWID;

INSERT INTO tele_hour
SELECT recv_at / 3600, device_id, model_version, count(*), sum(n_inferences),
       sum(n_low_conf), sum(n_flagged), sum(n_errors),
       sum(lat_mean_us * n_inferences)
FROM tele GROUP BY 1, 2, 3;

CREATE TRIGGER tele_hour_add AFTER INSERT ON tele BEGIN
    INSERT INTO tele_hour VALUES (NEW.recv_at / 3600, NEW.device_id,
        NEW.model_version, 1, NEW.n_inferences, NEW.n_low_conf,
        NEW.n_flagged, NEW.n_errors, NEW.lat_mean_us * NEW.n_inferences)
    ON CONFLICT (hour, device_id, model_version) DO UPDATE SET
        summaries = summaries + 1,
        n_inferences = n_inferences + excluded.n_inferences,
        n_low_conf = n_low_conf + excluded.n_low_conf,
        n_flagged = n_flagged + excluded.n_flagged,
        n_errors = n_errors + excluded.n_errors,
        lat_sum_us = lat_sum_us + excluded.lat_sum_us;
END;

CREATE TABLE tele_hour_ids (
    hour     INTEGER PRIMARY KEY,     -- recv_at / 3600
    first_id INTEGER NOT NULL,        -- min(tele.id) received in the hour
    last_id  INTEGER NOT NULL         -- max(tele.id)
);

INSERT INTO tele_hour_ids
SELECT recv_at / 3600, min(id), max(id) FROM tele GROUP BY 1;

CREATE TRIGGER tele_hour_ids_add AFTER INSERT ON tele BEGIN
    INSERT INTO tele_hour_ids VALUES (NEW.recv_at / 3600, NEW.id, NEW.id)
    ON CONFLICT (hour) DO UPDATE SET
        first_id = min(first_id, excluded.first_id),
        last_id = max(last_id, excluded.last_id);
END;
