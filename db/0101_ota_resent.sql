-- 0101_ota_resent: tmld's re-sent accounting survives a restart (issue 5,
-- daemon/ota.c): image bytes served again (lost in flight or already
-- stored), requests that went back, interruptions seen (a reconnect or
-- reboot mid-transfer, a tmld restart), requests refused by the per-device
-- rate limit, and the highest image byte served to each device.
ALTER TABLE rollouts ADD COLUMN bytes_resent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollouts ADD COLUMN rewinds INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollouts ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollouts ADD COLUMN requests_limited INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollout_devices ADD COLUMN served_hi INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollout_devices ADD COLUMN resent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollout_devices ADD COLUMN rewinds INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollout_devices ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0;
