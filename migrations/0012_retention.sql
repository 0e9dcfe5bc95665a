-- Cheaper repeats and retention.
--
-- Raw bodies are stored once per distinct content (SHA-256 of the bytes) and deliveries refer to
-- them, so a sender repeating the same alert every few minutes stores who, when and from where,
-- not the same kilobytes again. Old rows leave through the pruner (src/store/retention.rs).

CREATE TABLE raw_bodies (
    id         INTEGER PRIMARY KEY,
    sha256     TEXT    NOT NULL UNIQUE,   -- of the body's bytes, lower-case hex
    body       TEXT    NOT NULL,
    first_seen TEXT    NOT NULL
);

-- deliveries.body becomes a reference. SQLite cannot change a column in place, so the table is
-- rebuilt with the same ids; the alerts and refused alerts that point at them stay valid (the
-- foreign key checks are deferred to the end of this migration's transaction, where they hold
-- again). Bodies stored before this migration stay inline in `legacy_body`: SQLite has no
-- SHA-256 to move them, and retention removes them in time.
PRAGMA defer_foreign_keys = ON;
CREATE TABLE deliveries_before_0012 AS SELECT id, received_at, source, actor, body FROM deliveries;
DROP TABLE deliveries;
CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY,
    received_at TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    body_id     INTEGER REFERENCES raw_bodies (id),
    legacy_body TEXT,
    CHECK ((body_id IS NULL) <> (legacy_body IS NULL))
);
INSERT INTO deliveries (id, received_at, source, actor, legacy_body)
    SELECT id, received_at, source, actor, body FROM deliveries_before_0012;
DROP TABLE deliveries_before_0012;
-- Whether a raw body is still referenced (retention).
CREATE INDEX deliveries_body ON deliveries (body_id);
-- Whether a delivery still has alerts (retention).
CREATE INDEX alerts_delivery ON alerts (delivery_id);

-- Every delivery with its exact body, as received: what operators and audits read.
CREATE VIEW delivery_bodies AS
    SELECT d.id, d.received_at, d.source, d.actor, COALESCE(r.body, d.legacy_body) AS body
    FROM deliveries d LEFT JOIN raw_bodies r ON r.id = d.body_id;

-- The audit trail stays append-only. Its rows leave only through the sanctioned path (export to
-- JSONL, then prune; src/store/retention.rs), which inserts this one-row permit naming the id
-- range it exported, deletes exactly that range, records `audit.pruned` and removes the permit,
-- all in one transaction. Any other DELETE is refused, as before.
CREATE TABLE audit_prune_permit (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    first_id INTEGER NOT NULL,
    last_id  INTEGER NOT NULL
);

DROP TRIGGER audit_events_refuse_delete;
CREATE TRIGGER audit_events_refuse_delete BEFORE DELETE ON audit_events
WHEN NOT EXISTS (
    SELECT 1 FROM audit_prune_permit WHERE old.id BETWEEN first_id AND last_id
)
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: old events leave only through runbookd audit export');
END;
