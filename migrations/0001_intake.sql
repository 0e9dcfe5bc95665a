-- Intake: every delivery as received, the alerts normalized from it, the incidents they
-- open or dedupe into, and the append-only audit trail.
-- Timestamps are RFC 3339 text in UTC, so they sort and compare as strings.

-- One row per accepted HTTP delivery; the raw body is kept verbatim for audit and replay.
CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY,
    received_at TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    body        TEXT    NOT NULL
);

-- One problem, keyed by fingerprint while it is open.
CREATE TABLE incidents (
    id          INTEGER PRIMARY KEY,
    fingerprint TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    labels      TEXT    NOT NULL,             -- JSON object of the opening alert's labels
    status      TEXT    NOT NULL,             -- open | resolved
    alert_count INTEGER NOT NULL,             -- firing notifications folded into this incident
    first_seen  TEXT    NOT NULL,
    last_seen   TEXT    NOT NULL,
    resolved_at TEXT
);
-- At most one open incident per fingerprint: the conflict target of the dedupe upsert.
CREATE UNIQUE INDEX incidents_open_fingerprint ON incidents (fingerprint) WHERE status = 'open';
CREATE INDEX incidents_status_id ON incidents (status, id);

-- Every normalized alert, duplicates included.
CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
    incident_id INTEGER REFERENCES incidents (id),   -- NULL for a resolve that matched nothing
    source      TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    status      TEXT    NOT NULL,             -- firing | resolved
    fingerprint TEXT    NOT NULL,
    labels      TEXT    NOT NULL,
    annotations TEXT    NOT NULL,
    starts_at   TEXT,
    ends_at     TEXT,
    received_at TEXT    NOT NULL
);
CREATE INDEX alerts_incident ON alerts (incident_id, id);

-- Append-only: every intake, transition and change, with its actor.
CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    incident_id INTEGER REFERENCES incidents (id),
    detail      TEXT    NOT NULL              -- JSON object
);
CREATE INDEX audit_events_incident ON audit_events (incident_id, id);

CREATE TRIGGER audit_events_refuse_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TRIGGER audit_events_refuse_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
