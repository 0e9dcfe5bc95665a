-- Notifications and one-tap links.

-- How far the notifier has read the audit trail (one row). A fresh cursor starts at the newest
-- event, so turning notifications on does not replay old history.
CREATE TABLE notify_cursor (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    last_event_id INTEGER NOT NULL
);

-- The key that signs one-tap links (one row): generated on first start and kept, so links
-- survive a restart. Never logged or returned.
CREATE TABLE link_keys (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    key        BLOB    NOT NULL,
    created_at TEXT    NOT NULL
);

-- Every link that was used: its random nonce is the primary key, so a link works once, even
-- when two requests race.
CREATE TABLE used_links (
    nonce       TEXT    PRIMARY KEY,
    approval_id INTEGER NOT NULL REFERENCES approvals (id),
    decision    TEXT    NOT NULL,   -- approve | reject
    sink        TEXT    NOT NULL,
    used_at     TEXT    NOT NULL
);

-- When a tripped circuit breaker was last announced per target: once per trip, not once per
-- blocked action.
CREATE TABLE breaker_notices (
    target      TEXT PRIMARY KEY,
    notified_at TEXT NOT NULL
);
