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

/// Shorter bearer secrets are refused: a token is the only thing between the network and a
/// service that restarts backup servers. 32 hex characters are 128 random bits.
pub const MIN_TOKEN_LEN: usize = 32;
/// A run of this many of one character (`aaaaaaaa`) is a placeholder, not a random secret.
const MAX_RUN: usize = 8;
/// Fewer distinct characters than this (`abababab…`) is a pattern, not a random secret.
const MIN_DISTINCT: usize = 10;

/// A bearer secret that passed the strength rules; parsed once, where it is read. No `Debug`
/// and no way to print it: it only becomes a digest.
pub struct TokenSecret(String);

/// Why a secret is not accepted as a token; the message never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the secret is too weak: {0}; generate one with `openssl rand -hex 32`")]
pub struct WeakToken(&'static str);

impl TokenSecret {
    pub fn parse(secret: &str) -> Result<Self, WeakToken> {
        if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(WeakToken("it contains whitespace or control characters"));
        }
        if secret.chars().count() < MIN_TOKEN_LEN {
            return Err(WeakToken("it is shorter than 32 characters"));
        }
        let mut longest_run = 0;
        let mut run = 0;
        let mut previous = None;
        for c in secret.chars() {
            run = if previous == Some(c) { run + 1 } else { 1 };
            longest_run = longest_run.max(run);
            previous = Some(c);
        }
        if longest_run >= MAX_RUN {
            return Err(WeakToken(
                "it repeats one character 8 or more times in a row",
            ));
        }
        let distinct: std::collections::BTreeSet<char> = secret.chars().collect();
        if distinct.len() < MIN_DISTINCT {
            return Err(WeakToken("it has fewer than 10 different characters"));
        }
        Ok(Self(secret.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
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
    pub fn new(name: impl Into<String>, role: Role, secret: &TokenSecret) -> Self {
        Self {
            name: name.into(),
            role,
            digest: digest(&secret.0),
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

    fn secret(text: &str) -> TokenSecret {
        TokenSecret::parse(text).unwrap()
    }

    #[test]
    fn authenticate_finds_the_matching_token_only() {
        let table = TokenTable::new(vec![
            Token::new(
                "am",
                Role::Ingest,
                &secret("ingest-secret-0123456789abcdefgh"),
            ),
            Token::new(
                "ops",
                Role::Admin,
                &secret("admin-secret-0123456789abcdefghi"),
            ),
        ]);
        assert_eq!(
            table.authenticate("admin-secret-0123456789abcdefghi"),
            Some(Principal {
                name: "ops".into(),
                role: Role::Admin
            })
        );
        assert_eq!(table.authenticate("admin-secret-0123456789abcdefgh"), None);
        assert_eq!(table.authenticate(""), None);
    }

    #[test]
    fn debug_never_shows_a_secret_or_its_digest() {
        let token = Token::new(
            "am",
            Role::Ingest,
            &secret("ingest-secret-0123456789abcdefgh"),
        );
        let printed = format!("{token:?}");
        assert!(!printed.contains("ingest-secret"));
        assert!(!printed.contains("digest"));
    }

    #[test]
    fn weak_secrets_are_refused_with_how_to_make_a_strong_one() {
        for (weak, why) in [
            ("a".repeat(16), "shorter than 32"),
            ("a".repeat(64), "8 or more times"),
            (
                format!("{}aaaaaaaa", "0123456789abcdef0123456789"),
                "8 or more times",
            ),
            ("ab".repeat(32), "fewer than 10 different"),
            ("0123456789abcdef 0123456789abcdef".to_owned(), "whitespace"),
            ("short-but-varied-0123".to_owned(), "shorter than 32"),
        ] {
            let message = TokenSecret::parse(&weak).err().unwrap().to_string();
            assert!(
                message.contains(why) && message.contains("openssl rand -hex 32"),
                "{weak}: {message}"
            );
            assert!(!message.contains(&weak), "{message}");
        }
        // What `openssl rand -hex 32` prints.
        assert!(
            TokenSecret::parse("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
                .is_ok()
        );
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
