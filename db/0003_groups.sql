-- 0003_groups: operator-made groups (issue 6, `tmlctl group create|delete|
-- add|remove|list`). Membership lives in device_groups with source 'op'
-- (a device's hello only replaces its 'fw' rows); this table lets a group
-- exist before it has members and tells operator groups from firmware ones.
CREATE TABLE op_groups (
    name       TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL      -- unix s
) WITHOUT ROWID;
