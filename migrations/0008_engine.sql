-- Each run pins the playbook it started with: the text it was created from, stored once under
-- its content hash, so editing or removing the file never changes a run in flight.
CREATE TABLE playbook_versions (
    hash          TEXT PRIMARY KEY,   -- SHA-256 of the text, lower-case hex
    name          TEXT NOT NULL,
    text          TEXT NOT NULL,
    first_used_at TEXT NOT NULL
);

-- NULL for runs created before pinning: those follow the playbook loaded under their name.
ALTER TABLE runs ADD COLUMN playbook_hash TEXT REFERENCES playbook_versions (hash);
