-- 0004_seq_gaps: what the low-water rule and restart detection count
-- (proto/PROTOCOL.md section 6, docs/tmld.md "Sequence gaps").
-- tele_skipped / sample_skipped: sequence numbers given up because a record's
-- low-water said the device no longer holds them (lost at a reboot, or a
-- reserved block left unused): each is a record lost or a number never used,
-- never a record stored. seq_resets: times the device's numbering restarted
-- (hello's next seq at or below the high-water, from another boot).
-- They live next to the high-water they adjust, in the row the batch writes
-- anyway. devices.boot_id: the last hello's boot_id.
ALTER TABLE stream_hw ADD COLUMN tele_skipped INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stream_hw ADD COLUMN sample_skipped INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stream_hw ADD COLUMN seq_resets INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN boot_id INTEGER;
