-- 0201_upstream_replay: poisoned batches an operator asked to send again
-- (verb upstream.retry_poisoned). A batch with replay = 1 is sent under its
-- original Idempotency-Key by its stream before the next regular batch; on
-- a 2xx its row is deleted, on another refusal replay goes back to 0.
ALTER TABLE upstream_poisoned ADD COLUMN replay INTEGER NOT NULL DEFAULT 0;
