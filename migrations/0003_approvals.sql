-- Approvals: a run asks a human before a risky step, and waits without holding a worker.
CREATE TABLE approvals (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES runs (id),
    step         TEXT    NOT NULL,
    status       TEXT    NOT NULL,   -- pending | approved | rejected | expired | cancelled
    command      TEXT    NOT NULL,   -- exactly what the step will run
    risk         TEXT    NOT NULL,   -- low | medium | high
    evidence     TEXT    NOT NULL,   -- JSON: why the run wants this
    on_timeout   TEXT    NOT NULL,   -- reject | approve
    requested_at TEXT    NOT NULL,
    expires_at   TEXT    NOT NULL,
    decided_by   TEXT,
    decided_at   TEXT,
    comment      TEXT
);
CREATE UNIQUE INDEX approvals_one_pending_per_step ON approvals (run_id, step) WHERE status = 'pending';
CREATE INDEX approvals_status ON approvals (status, expires_at);
