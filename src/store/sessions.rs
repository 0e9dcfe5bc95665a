//! Web page sessions: a row per signed-in browser, found by the SHA-256 of the cookie's id.
//! Opening one and auditing the sign-in share one transaction.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::audit::{AuditDetail, NewAuditEvent, SignIn, append};
use super::{Store, StoreError};

/// A session to open.
#[derive(Debug)]
pub struct NewSession<'a> {
    pub id_sha256: &'a [u8; 32],
    pub token_name: &'a str,
    pub role: &'a str,
    /// [`crate::auth::Token::session_binding`] of the token signed in with.
    pub token_binding: &'a [u8; 32],
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The client's address, for the audit trail.
    pub remote: &'a str,
}

/// A session that has not expired.
#[derive(Debug, FromRow)]
pub struct Session {
    pub token_name: String,
    pub role: String,
    pub token_binding: Vec<u8>,
}

impl Store {
    /// Opens a session and audits the sign-in; sessions that have expired go at the same time,
    /// so the table holds no more than the browsers signed in within one lifetime.
    pub async fn open_session(&self, session: NewSession<'_>) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(session.created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id_sha256, token_name, role, token_binding, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&session.id_sha256[..])
        .bind(session.token_name)
        .bind(session.role)
        .bind(&session.token_binding[..])
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await?;
        append(
            &mut tx,
            session.created_at,
            NewAuditEvent::of(
                session.token_name,
                AuditDetail::LoginSucceeded(SignIn {
                    remote: Some(session.remote.to_owned()),
                    role: Some(session.role.to_owned()),
                    reason: None,
                }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The session whose id hashes to `id_sha256`, unless it has expired by `now`.
    pub async fn session(
        &self,
        id_sha256: &[u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, StoreError> {
        let session = sqlx::query_as::<_, Session>(
            "SELECT token_name, role, token_binding FROM sessions
             WHERE id_sha256 = ? AND expires_at > ?",
        )
        .bind(&id_sha256[..])
        .bind(now)
        .fetch_optional(&self.reader)
        .await?;
        Ok(session)
    }

    /// Ends a session (signing out). Whether there was one.
    pub async fn end_session(&self, id_sha256: &[u8; 32]) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE id_sha256 = ?")
            .bind(&id_sha256[..])
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// At start-up: drops the sessions of tokens no longer configured, and expired ones.
    /// Returns how many went.
    pub async fn forget_sessions(
        &self,
        configured: impl IntoIterator<Item = &str>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let names: Vec<&str> = configured.into_iter().collect();
        let done = sqlx::query(
            "DELETE FROM sessions WHERE expires_at <= ?
                OR token_name NOT IN (SELECT value FROM json_each(?))",
        )
        .bind(now)
        .bind(serde_json::to_string(&names).expect("names serialise"))
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }
}
