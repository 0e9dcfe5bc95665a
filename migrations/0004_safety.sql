-- Safety controls, persisted so a restart forgets none of them.

-- Operator switches: `paused` (the kill switch) and `dry_run`, as JSON values.
CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Every mutating action a run was allowed to take: cooldowns and the hourly budget count these.
CREATE TABLE actions (
    id     INTEGER PRIMARY KEY,
    action TEXT    NOT NULL,   -- e.g. restart_pbs
    target TEXT    NOT NULL,   -- e.g. pbs
    run_id INTEGER NOT NULL REFERENCES runs (id),
    at     TEXT    NOT NULL
);
CREATE INDEX actions_action_target ON actions (action, target, at);
CREATE INDEX actions_at ON actions (at);
