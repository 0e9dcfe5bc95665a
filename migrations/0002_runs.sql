-- Runs: one execution of a playbook for an incident, a durable state machine with a lease.
-- Step attempts: written `started` before a side effect and `finished` after it.

CREATE TABLE runs (
    id               INTEGER PRIMARY KEY,
    incident_id      INTEGER REFERENCES incidents (id),
    playbook         TEXT    NOT NULL,
    -- What "one active run per target" is about, e.g. the PBS host.
    target           TEXT    NOT NULL,
    state            TEXT    NOT NULL,   -- pending | running | waiting_approval | resolved | escalated | cancelled
    step             TEXT,               -- the step the run is at
    facts            TEXT    NOT NULL,   -- JSON object
    dry_run          INTEGER NOT NULL,
    -- Fencing token: bumped on every lease acquisition; every write checks it.
    attempt          INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    heartbeat_at     TEXT,
    outcome          TEXT,               -- JSON: why it ended
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    finished_at      TEXT
);
CREATE UNIQUE INDEX runs_one_active_per_target ON runs (target)
    WHERE state IN ('pending', 'running', 'waiting_approval');
CREATE INDEX runs_state ON runs (state, lease_expires_at);
CREATE INDEX runs_incident ON runs (incident_id);

CREATE TABLE step_attempts (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES runs (id),
    step         TEXT    NOT NULL,
    -- The run's lease attempt that executed it.
    run_attempt  INTEGER NOT NULL,
    status       TEXT    NOT NULL,   -- started | finished
    host         TEXT,
    command      TEXT    NOT NULL,   -- the exact command or request, as sent
    exit_status  INTEGER,
    stdout       TEXT,               -- capped and redacted
    stderr       TEXT,
    error        TEXT,
    started_at   TEXT    NOT NULL,
    finished_at  TEXT,
    duration_ms  INTEGER
);
CREATE INDEX step_attempts_run ON step_attempts (run_id, id);

ALTER TABLE audit_events ADD COLUMN run_id INTEGER REFERENCES runs (id);
CREATE INDEX audit_events_run ON audit_events (run_id, id);
