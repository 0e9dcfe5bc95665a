-- A repeat finds its body among the last bodies intake stored (the intake writer
-- remembers them by digest and checks the row before it refers to it; see RecentBodies in
-- src/store/intake.rs), no longer through a unique index on raw_bodies.sha256. That index cost
-- every new body a random index page to look up and another to write, and measured as the
-- costliest part of storing a new alert. A body not seen lately is stored again.
--
-- SQLite cannot drop a column's UNIQUE constraint, so the table is rebuilt with the same ids.
-- Deliveries refer to it: dropping it leaves them without their bodies until the rows are back,
-- which the deferred foreign key checks allow within this migration's transaction.
PRAGMA defer_foreign_keys = ON;
DROP VIEW delivery_bodies;
CREATE TABLE raw_bodies_before_0017 AS SELECT id, sha256, body, first_seen FROM raw_bodies;
DROP TABLE raw_bodies;
CREATE TABLE raw_bodies (
    id         INTEGER PRIMARY KEY,
    sha256     TEXT    NOT NULL,   -- of the body's bytes, lower-case hex
    body       TEXT    NOT NULL,
    first_seen TEXT    NOT NULL
);
INSERT INTO raw_bodies (id, sha256, body, first_seen)
    SELECT id, sha256, body, first_seen FROM raw_bodies_before_0017;
DROP TABLE raw_bodies_before_0017;

-- As in 0012: every delivery with its exact body, as received.
CREATE VIEW delivery_bodies AS
    SELECT d.id, d.received_at, d.source, d.actor, COALESCE(r.body, d.legacy_body) AS body
    FROM deliveries d LEFT JOIN raw_bodies r ON r.id = d.body_id;
