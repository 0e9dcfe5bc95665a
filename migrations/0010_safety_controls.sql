-- Safety controls operators can see and reset; dry-run runs kept apart from live ones.

-- One active run per target AND mode: a dry run never attaches to a live run, nor a live run
-- to a dry one.
DROP INDEX IF EXISTS runs_one_active_per_target;
CREATE UNIQUE INDEX runs_one_active_per_target_and_mode ON runs (target, dry_run)
    WHERE state IN ('pending', 'running', 'waiting_approval');
-- The breaker counts a target's failed runs by when they finished.
CREATE INDEX runs_target_finished ON runs (target, finished_at);

-- An admin's reset of a target's circuit breaker: it counts only failures after the latest.
CREATE TABLE breaker_resets (
    id       INTEGER PRIMARY KEY,
    target   TEXT NOT NULL,
    reason   TEXT NOT NULL,
    reset_by TEXT NOT NULL,
    at       TEXT NOT NULL
);
CREATE INDEX breaker_resets_target ON breaker_resets (target, at);

-- When a booked action's cooldown ends (the step's cooldown at booking), so the cooldowns in
-- force can be shown. NULL for actions booked before this column existed.
ALTER TABLE actions ADD COLUMN cooldown_until TEXT;

-- Why an operator switch was last set, when the switch asks for one (dry-run does).
ALTER TABLE settings ADD COLUMN reason TEXT;
