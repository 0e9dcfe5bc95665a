//! Idempotency keys, after zero-to-production: the first request with a key claims it with
//! `INSERT … ON CONFLICT DO NOTHING` and stores its answer when done; a repeat gets that
//! answer; a repeat with a different body is refused; a repeat while the first is still running
//! is told so. Keys belong to the caller (token name), so callers cannot collide.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{Store, StoreError};

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use: carry out the request, then [`Store::complete_idempotent`].
    New,
    /// Done before: answer this again.
    Done { status: u16, body: String },
    /// The first request with this key has not finished yet.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

/// The fingerprint of a request, to tell a retry from a different request with the same key.
pub fn request_hash(method: &str, path: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    for part in [method.as_bytes(), path.as_bytes(), body] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hex::encode(hash.finalize())
}

impl Store {
    pub async fn claim_idempotent(
        &self,
        principal: &str,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (principal, key, request_hash, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (principal, key) DO NOTHING",
        )
        .bind(principal)
        .bind(key)
        .bind(request_hash)
        .bind(now)
        .execute(&self.writer)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Claim::New);
        }
        let (hash, status, body): (String, Option<i64>, Option<String>) = sqlx::query_as(
            "SELECT request_hash, response_status, response_body FROM idempotency_keys
             WHERE principal = ? AND key = ?",
        )
        .bind(principal)
        .bind(key)
        .fetch_one(&self.writer)
        .await?;
        Ok(match (hash == request_hash, status, body) {
            (false, _, _) => Claim::Mismatch,
            (true, Some(status), Some(body)) => Claim::Done {
                status: u16::try_from(status).unwrap_or(500),
                body,
            },
            (true, _, _) => Claim::InProgress,
        })
    }

    /// Stores the answer to a claimed key.
    pub async fn complete_idempotent(
        &self,
        principal: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET response_status = ?, response_body = ?
             WHERE principal = ? AND key = ? AND response_status IS NULL",
        )
        .bind(i64::from(status))
        .bind(body)
        .bind(principal)
        .bind(key)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Releases a claimed key whose request failed before it had an answer worth keeping, so a
    /// retry can run.
    pub async fn release_idempotent(&self, principal: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE principal = ? AND key = ? AND response_status IS NULL")
            .bind(principal)
            .bind(key)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
