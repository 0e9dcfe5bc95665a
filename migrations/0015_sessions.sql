-- Web page sessions. The browser's cookie carries a random id; only its SHA-256 is kept here,
-- so a copy of the database cannot be replayed as a cookie. A session names the token it was
-- opened with (never the token) and is bound to that token's secret by an HMAC keyed with the
-- session id, so a token removed, re-roled or given a new secret in the config ends it.
CREATE TABLE sessions (
    id_sha256 BLOB PRIMARY KEY NOT NULL,
    token_name TEXT NOT NULL,
    role TEXT NOT NULL,
    token_binding BLOB NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
