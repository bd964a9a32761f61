-- 0006_seq_epochs: the numbering epoch (proto/PROTOCOL.md section 6,
-- docs/tmld.md "Sequence gaps"). Records carry the epoch of the device's
-- numbering; high-waters count within an epoch.
-- stream_hw.epoch: the epoch of the high-waters in that row (the one the
-- device's latest records carried); 0 = none seen yet (a new device, or an
-- agent without epochs).
-- stream_hw_epochs: the high-waters of the device's earlier epochs, so a
-- late record of an earlier life is checked against its own numbers, never
-- the current life's. Written only when a device's epoch changes (a wiped
-- device, or a late record of an earlier life), at most 8 rows per device.
ALTER TABLE stream_hw ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
CREATE TABLE stream_hw_epochs (
    device_id INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    tele_hw INTEGER NOT NULL,
    sample_hw INTEGER NOT NULL,
    left_at INTEGER NOT NULL, -- unix s when it stopped being the current one
    PRIMARY KEY (device_id, epoch)
) WITHOUT ROWID;
