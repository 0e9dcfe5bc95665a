-- The incident lifecycle: incidents are keyed by (source, fingerprint), so one sender cannot
-- resolve another's; they record how they ended, which earlier incident they repeat, and which
-- playbook took them (or why none did). A run covers every incident linked to it.

DROP INDEX incidents_open_fingerprint;
-- At most one open incident per sender and fingerprint: the conflict target of the dedupe upsert.
CREATE UNIQUE INDEX incidents_open_source_fingerprint ON incidents (source, fingerprint)
    WHERE status = 'open';
-- The latest incident of a fingerprint, open or not: recurrence, settle window, HA peers.
CREATE INDEX incidents_source_fingerprint ON incidents (source, fingerprint, id);

ALTER TABLE incidents ADD COLUMN starts_at TEXT;          -- the opening alert's startsAt, if sent
ALTER TABLE incidents ADD COLUMN resolved_by TEXT;        -- source | run | timeout
ALTER TABLE incidents ADD COLUMN resolved_by_run INTEGER REFERENCES runs (id);
ALTER TABLE incidents ADD COLUMN recurrence_of INTEGER REFERENCES incidents (id);
ALTER TABLE incidents ADD COLUMN playbook TEXT;           -- the playbook whose trigger matched
ALTER TABLE incidents ADD COLUMN unmatched_reason TEXT;   -- why no playbook took it

UPDATE incidents SET resolved_by = 'source' WHERE status = 'resolved';

-- Every incident a run covers: the one that started it and every one that attached to it.
CREATE TABLE run_incidents (
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    linked_at   TEXT    NOT NULL,
    PRIMARY KEY (run_id, incident_id)
);
CREATE INDEX run_incidents_incident ON run_incidents (incident_id, run_id);
INSERT INTO run_incidents (run_id, incident_id, linked_at)
    SELECT id, incident_id, created_at FROM runs WHERE incident_id IS NOT NULL;

-- Alerts of an accepted delivery that could not be accepted, with the reason: the delivery is
-- stored whole, and these are visible next to it.
CREATE TABLE refused_alerts (
    id          INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
    position    INTEGER NOT NULL,   -- index in the delivery's alerts
    name        TEXT,               -- the alert name, when it could be read
    reason      TEXT    NOT NULL,
    received_at TEXT    NOT NULL
);
CREATE INDEX refused_alerts_delivery ON refused_alerts (delivery_id);
