-- 0006_seq_epochs: the numbering epoch (proto/PROTOCOL.md section 6,
-- docs/tmld.md "Sequence gaps"). Records carry the epoch of the device's
-- numbering; high-waters count within an epoch.
-- stream_hw.epoch: the epoch of the high-waters in that row, the device's
-- newest life; 0 = none seen yet (a new device, or an agent without
-- epochs).
-- stream_hw_epochs: the high-waters of the device's earlier lives
-- ("parked"), so a late record of an earlier life is checked against its
-- own numbers, never the newest life's (and written back there). A row is
-- added when a new life starts (a wiped device); epoch 0 holds the numbers
-- of an agent without epochs that was updated and wiped. The 8 most
-- recently left lives per device are kept (left_order, a per-device
-- counter: no clock).
ALTER TABLE stream_hw ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
-- samples.epoch: a sample is (device, epoch, sample_id): a wiped device's
-- new life numbers its samples from 1 again (sample_id is the first chunk's
-- seq), so two lives' chunks must not be taken for one input. 0 = an agent
-- without epochs. (O(1): SQLite does not rewrite the table to add it.)
ALTER TABLE samples ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
-- devices.recent_boots: the boot_ids of the device's last 8 hellos (u32
-- little-endian, newest first): a hello of an earlier boot delivered again
-- is known by its boot_id, a wiped device that drew its epoch again is not.
ALTER TABLE devices ADD COLUMN recent_boots BLOB;
CREATE TABLE stream_hw_epochs (
    device_id INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    tele_hw INTEGER NOT NULL,
    sample_hw INTEGER NOT NULL,
    left_order INTEGER NOT NULL, -- per device: higher = left more recently
    PRIMARY KEY (device_id, epoch)
) WITHOUT ROWID;
