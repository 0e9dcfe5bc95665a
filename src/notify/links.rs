//! One-tap links: a token that carries one decision on one approval, for one sink, until an
//! expiry, signed with HMAC-SHA256 under a key kept in the database.
//!
//! The token is `base64url(payload ‖ tag)`, where the payload is a version byte, the approval
//! id, the decision, the expiry (Unix seconds), a random 16-byte nonce (the single-use
//! identity, recorded in `used_links` when the link is used) and the sink's name, and the tag
//! is the HMAC of the payload. Changing any byte (the decision, the expiry, the approval)
//! breaks the tag; ring compares tags in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::store::approvals::Decision;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 32;
/// Version, approval id, decision, expiry, nonce: everything before the sink name.
const FIXED_LEN: usize = 1 + 8 + 1 + 8 + NONCE_LEN;

/// What a link allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkClaims {
    pub approval_id: i64,
    pub decision: Decision,
    pub expires_at: DateTime<Utc>,
    /// The sink that carried the link: the decider is `link:<sink>`.
    pub sink: String,
    /// Hex of the random nonce: what marks the link used.
    pub nonce: String,
}

/// Why a token is not a link runbookd made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the link is not valid: it was changed, cut short or not made by this runbookd")]
pub struct BadSignature;

/// Signs and checks links. Holds the key; no `Debug`, so it cannot be logged by accident.
pub struct LinkSigner {
    key: hmac::Key,
    random: SystemRandom,
}

impl LinkSigner {
    pub fn new(key: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            random: SystemRandom::new(),
        }
    }

    /// A fresh link token for `decision` on `approval_id`, carried by `sink`.
    pub fn sign(
        &self,
        approval_id: i64,
        decision: Decision,
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
        payload.extend_from_slice(&expires_at.timestamp().to_be_bytes());
        payload.extend_from_slice(&nonce);
        payload.extend_from_slice(sink.as_bytes());
        let tag = hmac::sign(&self.key, &payload);
        payload.extend_from_slice(tag.as_ref());
        Ok(URL_SAFE_NO_PAD.encode(payload))
    }

    /// The claims of a token this signer made; anything else is [`BadSignature`].
    pub fn verify(&self, token: &str) -> Result<LinkClaims, BadSignature> {
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
        let (expiry, rest) = rest.split_first_chunk::<8>().ok_or(BadSignature)?;
        let (nonce, sink) = rest.split_first_chunk::<NONCE_LEN>().ok_or(BadSignature)?;
        if *version != VERSION {
            return Err(BadSignature);
        }
        Ok(LinkClaims {
            approval_id: i64::from_be_bytes(*id),
            decision: match decision {
                b'a' => Decision::Approve,
                b'r' => Decision::Reject,
                _ => return Err(BadSignature),
            },
            expires_at: DateTime::from_timestamp(i64::from_be_bytes(*expiry), 0)
                .ok_or(BadSignature)?,
            sink: String::from_utf8(sink.to_vec()).map_err(|_| BadSignature)?,
            nonce: hex::encode(nonce),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_link_verifies_and_any_changed_byte_does_not() {
        let signer = LinkSigner::new(&[7u8; 32]);
        let expires = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        let token = signer
            .sign(42, Decision::Approve, expires, "phone")
            .unwrap();
        let claims = signer.verify(&token).unwrap();
        assert_eq!(
            (claims.approval_id, claims.decision, claims.expires_at),
            (42, Decision::Approve, expires)
        );
        assert_eq!(claims.sink, "phone");

        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 0x01;
            assert_eq!(
                signer.verify(&URL_SAFE_NO_PAD.encode(&changed)),
                Err(BadSignature),
                "byte {i}"
            );
        }
        assert_eq!(
            LinkSigner::new(&[8u8; 32]).verify(&token),
            Err(BadSignature),
            "another key"
        );
        assert_eq!(signer.verify("not base64!"), Err(BadSignature));
        assert_ne!(
            signer
                .sign(42, Decision::Approve, expires, "phone")
                .unwrap(),
            token,
            "each link has its own nonce"
        );
    }
}
