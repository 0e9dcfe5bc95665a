//! Who may call what: roles, bearer tokens and the constant-time token lookup.
//!
//! Tokens are loaded once at start-up (see [`crate::config`]); only a SHA-256 digest of each
//! secret is kept in memory, so a heap dump or a `Debug` print never shows one.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A token's role, as in DESIGN.md's contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Posts alerts.
    Ingest,
    /// Reads, diagnoses, starts and cancels runs; never approves.
    Agent,
    /// Decides approvals, and reads what they are about.
    Approver,
    /// Everything.
    Admin,
}

/// What a route needs. Routes declare a permission, never a list of roles, so the role table
/// lives in one place: [`Role::allows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Post alerts to the intake endpoints.
    Ingest,
    /// Read incidents, runs and approvals.
    Read,
    /// Start and cancel runs.
    Operate,
    /// Decide approvals.
    Decide,
    /// Pull the kill switch and release it (pause, resume).
    Control,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Ingest, Role::Agent, Role::Approver, Role::Admin];

    pub fn allows(self, permission: Permission) -> bool {
        match permission {
            Permission::Ingest => matches!(self, Role::Ingest | Role::Admin),
            Permission::Read => matches!(self, Role::Agent | Role::Approver | Role::Admin),
            Permission::Operate => matches!(self, Role::Agent | Role::Admin),
            Permission::Decide => matches!(self, Role::Approver | Role::Admin),
            Permission::Control => matches!(self, Role::Admin),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Agent => "agent",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

/// The caller of a request, as the audit trail names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's configured name, or `anonymous`.
    pub name: String,
    pub role: Role,
}

impl Principal {
    /// The caller of an intake endpoint when the config allows anonymous ingest.
    pub fn anonymous_ingest() -> Self {
        Self {
            name: "anonymous".to_owned(),
            role: Role::Ingest,
        }
    }
}

/// One configured token: its name, role and the digest of its secret.
#[derive(Clone)]
pub struct Token {
    name: String,
    role: Role,
    digest: [u8; 32],
}

impl Token {
    pub fn new(name: impl Into<String>, role: Role, secret: &str) -> Self {
        Self {
            name: name.into(),
            role,
            digest: digest(secret),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// What ties a web session to this token's secret: an HMAC of the secret's digest keyed
    /// with the session's id. Stored with the session, it ends the session when the secret
    /// changes, and without the id (kept only hashed) it tells a reader nothing.
    pub fn session_binding(&self, session_id: &[u8]) -> [u8; 32] {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, session_id);
        let tag = ring::hmac::sign(&key, &self.digest);
        tag.as_ref()
            .try_into()
            .expect("HMAC-SHA256 tags are 32 bytes")
    }

    pub fn principal(&self) -> Principal {
        Principal {
            name: self.name.clone(),
            role: self.role,
        }
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Every token the service accepts.
#[derive(Debug, Clone, Default)]
pub struct TokenTable {
    tokens: Vec<Token>,
}

impl TokenTable {
    pub fn new(tokens: Vec<Token>) -> Self {
        Self { tokens }
    }

    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// Finds the caller whose secret is `presented`.
    pub fn authenticate(&self, presented: &str) -> Option<Principal> {
        self.token_for(presented).map(Token::principal)
    }

    /// The token configured under `name`.
    pub fn named(&self, name: &str) -> Option<&Token> {
        self.tokens.iter().find(|token| token.name == name)
    }

    /// Finds the token whose secret is `presented`.
    ///
    /// Secrets are compared as fixed-length digests with [`ConstantTimeEq`], and every token is
    /// compared, so the time taken says nothing about how much of a secret was right.
    pub fn token_for(&self, presented: &str) -> Option<&Token> {
        let presented = digest(presented);
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.digest.ct_eq(&presented)) && found.is_none() {
                found = Some(token);
            }
        }
        found
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticate_finds_the_matching_token_only() {
        let table = TokenTable::new(vec![
            Token::new("am", Role::Ingest, "ingest-secret-0123456789"),
            Token::new("ops", Role::Admin, "admin-secret-0123456789"),
        ]);
        assert_eq!(
            table.authenticate("admin-secret-0123456789"),
            Some(Principal {
                name: "ops".into(),
                role: Role::Admin
            })
        );
        assert_eq!(table.authenticate("admin-secret-012345678"), None);
        assert_eq!(table.authenticate(""), None);
    }

    #[test]
    fn debug_never_shows_a_secret_or_its_digest() {
        let token = Token::new("am", Role::Ingest, "ingest-secret-0123456789");
        let printed = format!("{token:?}");
        assert!(!printed.contains("ingest-secret"));
        assert!(!printed.contains("digest"));
    }

    #[test]
    fn only_ingest_and_admin_may_ingest_and_ingest_may_not_read() {
        let ingest: Vec<_> = Role::ALL
            .into_iter()
            .filter(|r| r.allows(Permission::Ingest))
            .collect();
        assert_eq!(ingest, [Role::Ingest, Role::Admin]);
        assert!(!Role::Ingest.allows(Permission::Read));
    }
}
