//! The one function that decides an alert's fingerprint, the key incidents dedupe on.
//!
//! The sender's own fingerprint wins when it sends one (Alertmanager, the sweep and the
//! forwarder all do): it is what the sender uses to say "the same alert again". Otherwise the
//! fingerprint is a stable hash of the alert's name and all its labels, so the same alert sent
//! twice gets the same key whatever the order of its labels in the JSON.

use sha2::{Digest, Sha256};

use super::alert::{AlertName, Fingerprint, Labels};

const MAX_UPSTREAM_LEN: usize = 128;

/// Returns the fingerprint for an alert. An empty upstream value counts as absent.
pub fn fingerprint(
    upstream: Option<&str>,
    name: &AlertName,
    labels: &Labels,
) -> Result<Fingerprint, String> {
    match upstream.filter(|f| !f.is_empty()) {
        Some(given) => {
            let valid = given.len() <= MAX_UPSTREAM_LEN
                && given
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
            if valid {
                Ok(Fingerprint(given.to_owned()))
            } else {
                Err(format!(
                    "fingerprint '{}' must be 1-{MAX_UPSTREAM_LEN} characters of [A-Za-z0-9._:-]",
                    given.escape_debug()
                ))
            }
        }
        None => Ok(computed(name, labels)),
    }
}

/// SHA-256 over a length-prefixed encoding (so no two label sets collide by concatenation),
/// first 8 bytes in hex: the same width as Alertmanager's own fingerprints.
fn computed(name: &AlertName, labels: &Labels) -> Fingerprint {
    let mut hash = Sha256::new();
    let mut field = |text: &str| {
        hash.update((text.len() as u64).to_be_bytes());
        hash.update(text.as_bytes());
    };
    field("runbookd/v1");
    field(name.as_str());
    for (key, value) in labels.iter() {
        field(key);
        field(value);
    }
    Fingerprint(hex::encode(&hash.finalize()[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::parse(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        )
        .unwrap()
    }

    fn name(text: &str) -> AlertName {
        AlertName::parse(text).unwrap()
    }

    #[test]
    fn upstream_fingerprint_wins() {
        let fp = fingerprint(Some("5f1c2a9e7b3d4c10"), &name("A"), &labels(&[])).unwrap();
        assert_eq!(fp.as_str(), "5f1c2a9e7b3d4c10");
    }

    #[test]
    fn upstream_fingerprint_with_shell_text_is_refused() {
        assert!(fingerprint(Some("abc; rm -rf /"), &name("A"), &labels(&[])).is_err());
    }

    #[test]
    fn computed_fingerprint_is_stable_and_depends_on_every_label() {
        let a = fingerprint(None, &name("A"), &labels(&[("x", "1"), ("y", "2")])).unwrap();
        let again = fingerprint(Some(""), &name("A"), &labels(&[("y", "2"), ("x", "1")])).unwrap();
        assert_eq!(a, again);
        assert_eq!(a.as_str().len(), 16);
        let other_value =
            fingerprint(None, &name("A"), &labels(&[("x", "1"), ("y", "3")])).unwrap();
        let other_name = fingerprint(None, &name("B"), &labels(&[("x", "1"), ("y", "2")])).unwrap();
        assert_ne!(a, other_value);
        assert_ne!(a, other_name);
    }

    #[test]
    fn concatenation_does_not_collide() {
        let a = fingerprint(None, &name("A"), &labels(&[("ab", "c")])).unwrap();
        let b = fingerprint(None, &name("A"), &labels(&[("a", "bc")])).unwrap();
        assert_ne!(a, b);
    }
}
