-- Idempotency keys: a retried request with the same key gets the first answer, not a second
-- effect (POST /api/v1/runs).
CREATE TABLE idempotency_keys (
    principal       TEXT    NOT NULL,   -- the caller's token name: keys are per caller
    key             TEXT    NOT NULL,
    request_hash    TEXT    NOT NULL,   -- SHA-256 of method, path and body
    response_status INTEGER,            -- NULL while the first request is in progress
    response_body   TEXT,
    created_at      TEXT    NOT NULL,
    PRIMARY KEY (principal, key)
);
