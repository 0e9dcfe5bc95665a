//! One-tap links: a token that carries one decision on one approval, for one sink, until an
//! expiry, signed with HMAC-SHA256 under a key kept in a file outside the database (see
//! [`load_or_create_key`]), so a copy of the database cannot make links.
//!
//! The token is `base64url(payload ‖ tag)`, where the payload is a version byte, the approval
//! id, the decision, the signing time and the expiry (Unix seconds), a random 16-byte nonce
//! (the single-use identity, recorded in `used_links` when the link is used) and the sink's
//! name, and the tag is the HMAC of the payload. Changing any byte (the decision, the expiry,
//! the approval) breaks the tag; ring compares tags in constant time. A link whose expiry is
//! further from its signing time than the configured lifetime is refused even when its tag is
//! good: no setting of this runbookd made it.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::secret_file::check_secret_file;
use crate::store::approvals::Decision;

/// 2: the signing time joined the payload, so the verifier can cap the expiry.
const VERSION: u8 = 2;
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 32;
/// Version, approval id, decision, signing time, expiry, nonce: everything before the sink name.
const FIXED_LEN: usize = 1 + 8 + 1 + 8 + 8 + NONCE_LEN;
/// The fewest key bytes accepted, and how many a new key file gets: HMAC-SHA256's output size.
pub const LINK_KEY_LEN: usize = 32;

/// What a link allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkClaims {
    pub approval_id: i64,
    pub decision: Decision,
    pub signed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The sink that carried the link: the decider is `link:<sink>`.
    pub sink: String,
    /// Hex of the random nonce: what marks the link used.
    pub nonce: String,
}

/// Why a token is not a link this runbookd would honour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkRejected {
    #[error("the link is not valid: it was changed, cut short or not made by this runbookd")]
    BadSignature,
    #[error("the link's expiry is further from its signing time than the link lifetime allows")]
    OverlongExpiry,
}

/// Signs and checks links. Holds the key; no `Debug`, so it cannot be logged by accident.
pub struct LinkSigner {
    key: hmac::Key,
    /// The longest a link may live (`notify.link_ttl_secs`): longer claims are refused.
    lifetime: chrono::Duration,
    random: SystemRandom,
}

impl LinkSigner {
    pub fn new(key: &[u8], lifetime: Duration) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            lifetime: chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::MAX),
            random: SystemRandom::new(),
        }
    }

    /// A fresh link token for `decision` on `approval_id`, carried by `sink`, signed at
    /// `signed_at`.
    pub fn sign(
        &self,
        approval_id: i64,
        decision: Decision,
        signed_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        sink: &str,
    ) -> anyhow::Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
        let mut payload = Vec::with_capacity(FIXED_LEN + sink.len() + TAG_LEN);
        payload.push(VERSION);
        payload.extend_from_slice(&approval_id.to_be_bytes());
        payload.push(match decision {
            Decision::Approve => b'a',
            Decision::Reject => b'r',
        });
        payload.extend_from_slice(&signed_at.timestamp().to_be_bytes());
        payload.extend_from_slice(&expires_at.timestamp().to_be_bytes());
        payload.extend_from_slice(&nonce);
        payload.extend_from_slice(sink.as_bytes());
        let tag = hmac::sign(&self.key, &payload);
        payload.extend_from_slice(tag.as_ref());
        Ok(URL_SAFE_NO_PAD.encode(payload))
    }

    /// The claims of a token this signer made, within the link lifetime.
    pub fn verify(&self, token: &str) -> Result<LinkClaims, LinkRejected> {
        use LinkRejected::BadSignature;
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| BadSignature)?;
        if bytes.len() < FIXED_LEN + TAG_LEN {
            return Err(BadSignature);
        }
        let (payload, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        hmac::verify(&self.key, payload, tag).map_err(|_| BadSignature)?;
        // Signed by us, so well formed; still parsed defensively.
        let (version, rest) = payload.split_first().ok_or(BadSignature)?;
        let (id, rest) = rest.split_first_chunk::<8>().ok_or(BadSignature)?;
        let (decision, rest) = rest.split_first().ok_or(BadSignature)?;
        let (signed, rest) = rest.split_first_chunk::<8>().ok_or(BadSignature)?;
        let (expiry, rest) = rest.split_first_chunk::<8>().ok_or(BadSignature)?;
        let (nonce, sink) = rest.split_first_chunk::<NONCE_LEN>().ok_or(BadSignature)?;
        if *version != VERSION {
            return Err(BadSignature);
        }
        let time = |bytes: &[u8; 8]| {
            DateTime::from_timestamp(i64::from_be_bytes(*bytes), 0).ok_or(BadSignature)
        };
        let claims = LinkClaims {
            approval_id: i64::from_be_bytes(*id),
            decision: match decision {
                b'a' => Decision::Approve,
                b'r' => Decision::Reject,
                _ => return Err(BadSignature),
            },
            signed_at: time(signed)?,
            expires_at: time(expiry)?,
            sink: String::from_utf8(sink.to_vec()).map_err(|_| BadSignature)?,
            nonce: hex::encode(nonce),
        };
        if claims.expires_at - claims.signed_at > self.lifetime {
            return Err(LinkRejected::OverlongExpiry);
        }
        Ok(claims)
    }
}

/// The link-signing key from `path`: at least [`LINK_KEY_LEN`] bytes, written as hex or
/// base64, in a file only its owner can read. A missing file is created (owner-only, fresh
/// random bytes), so `serve` works with no setup; replacing the file and restarting rotates
/// the key, and every link signed under the old one stops working.
pub fn load_or_create_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    if !path.exists() {
        let key: [u8; LINK_KEY_LEN] = ring::rand::generate(&SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("the system random source failed"))?
            .expose();
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(mut file) => {
                file.write_all(format!("{}\n", hex::encode(key)).as_bytes())
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("cannot write the link key {}", path.display()))?;
                tracing::info!(path = %path.display(), "created a new link-signing key");
                return Ok(key.to_vec());
            }
            // Another process made it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create the link key {}", path.display()));
            }
        }
    }
    read_key(path)
}

/// The key in an existing file, checked: owner-only, hex or base64, long enough.
pub fn read_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the link key {}", path.display()))?;
    check_secret_file(path).map_err(|e| anyhow::anyhow!("link key {e}"))?;
    let text = text.trim();
    let key = if text.len() % 2 == 0 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).ok()
    } else {
        STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text))
            .ok()
    };
    match key {
        Some(key) if key.len() >= LINK_KEY_LEN => Ok(key),
        _ => anyhow::bail!(
            "the link key {} must hold at least {LINK_KEY_LEN} random bytes as hex or base64; make one with `openssl rand -hex 32 > {}`",
            path.display(),
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_signed_link_verifies_and_any_changed_byte_does_not() {
        let signer = LinkSigner::new(&[7u8; 32], HOUR);
        let signed = DateTime::from_timestamp(1_899_999_000, 0).unwrap();
        let expires = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        let token = signer
            .sign(42, Decision::Approve, signed, expires, "phone")
            .unwrap();
        let claims = signer.verify(&token).unwrap();
        assert_eq!(
            (
                claims.approval_id,
                claims.decision,
                claims.signed_at,
                claims.expires_at
            ),
            (42, Decision::Approve, signed, expires)
        );
        assert_eq!(claims.sink, "phone");

        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 0x01;
            assert_eq!(
                signer.verify(&URL_SAFE_NO_PAD.encode(&changed)),
                Err(LinkRejected::BadSignature),
                "byte {i}"
            );
        }
        assert_eq!(
            LinkSigner::new(&[8u8; 32], HOUR).verify(&token),
            Err(LinkRejected::BadSignature),
            "another key"
        );
        assert_eq!(
            signer.verify("not base64!"),
            Err(LinkRejected::BadSignature)
        );
        assert_ne!(
            signer
                .sign(42, Decision::Approve, signed, expires, "phone")
                .unwrap(),
            token,
            "each link has its own nonce"
        );
    }

    #[test]
    fn a_well_signed_link_that_outlives_the_lifetime_is_refused() {
        let signer = LinkSigner::new(&[7u8; 32], HOUR);
        let signed = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        let token = |after: i64| {
            signer
                .sign(
                    1,
                    Decision::Approve,
                    signed,
                    signed + chrono::Duration::seconds(after),
                    "phone",
                )
                .unwrap()
        };
        assert!(signer.verify(&token(3600)).is_ok());
        assert_eq!(
            signer.verify(&token(3601)),
            Err(LinkRejected::OverlongExpiry)
        );
    }

    #[test]
    fn a_missing_key_file_is_created_owner_only_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("link-key");
        let key = load_or_create_key(&path).unwrap();
        assert_eq!(key.len(), LINK_KEY_LEN);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create_key(&path).unwrap(), key);

        std::fs::write(&path, "too-short\n").unwrap();
        let message = load_or_create_key(&path).unwrap_err().to_string();
        assert!(message.contains("openssl rand -hex 32"), "{message}");
        std::fs::write(&path, format!("{}\n", STANDARD.encode([9u8; 32]))).unwrap();
        assert_eq!(load_or_create_key(&path).unwrap(), [9u8; 32]);
    }
}
