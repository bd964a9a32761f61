-- 0005_samples_bytes: the byte total of the samples table, kept by triggers
-- in the same transaction as every insert and delete, so that retention
-- checks [retention] samples_max by reading one row instead of summing
-- length(data) over the whole table (up to samples_max, 256 MB by default,
-- read inside the writer's transaction on every run).
-- One row, rewritten by each commit that adds or removes samples: one page.

CREATE TABLE samples_bytes (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    total INTEGER NOT NULL             -- sum(length(data)) of samples
);

INSERT INTO samples_bytes SELECT 1, coalesce(sum(length(data)), 0)
FROM samples;

CREATE TRIGGER samples_bytes_add AFTER INSERT ON samples BEGIN
    UPDATE samples_bytes SET total = total + length(NEW.data) WHERE id = 1;
END;

CREATE TRIGGER samples_bytes_del AFTER DELETE ON samples BEGIN
    UPDATE samples_bytes SET total = total - length(OLD.data) WHERE id = 1;
END;
