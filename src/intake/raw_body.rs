//! A delivery's body as it arrived, and the deliveries intake parsed last, found again by
//! their body's digest.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hashlink::LinkedHashMap;
use sha2::{Digest, Sha256};

use super::{Delivery, Format, IntakeError, Source, parse};

/// A delivery's body as received, with the SHA-256 of its bytes: hashed where the body
/// arrives, so that the one writer, which every delivery waits for, only looks it up.
#[derive(Debug, Clone)]
pub struct RawBody {
    text: String,
    sha256: [u8; 32],
}

impl RawBody {
    pub fn new(text: String) -> Self {
        let sha256 = Sha256::digest(text.as_bytes()).into();
        Self { text, sha256 }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }
}

/// How many distinct bodies [`RecentParses`] remembers.
const RECENT_PARSES: usize = 16;

/// A larger body is parsed every time, so that what is remembered stays small: the deliveries
/// of at most [`RECENT_PARSES`] bodies of this size.
const REMEMBERED_BODY_BYTES: usize = 64 * 1024;

/// How a body was declared: by its route or `?source=`, or not at all (then it is sniffed).
type Declared = Option<(Source, Format)>;

/// Deliveries by their body's digest and declaration, the first parsed at the front.
type Parsed = LinkedHashMap<([u8; 32], Declared), Arc<Delivery>>;

/// The deliveries parsed from the last distinct bodies, by digest and declaration, the first
/// parsed forgotten first. A sender that repeats itself (Alertmanager's `repeat_interval`, an
/// HA pair, a retry) sends the same bytes, which parse to the same delivery: parsing was about
/// a tenth of the CPU a repeated alert cost under a storm.
#[derive(Debug, Default)]
pub struct RecentParses {
    remembered: Mutex<Parsed>,
}

impl RecentParses {
    /// [`parse`] of `body` as `declared`: the delivery parsed from the same bytes, declared the
    /// same, when it is remembered. A body that does not parse is not remembered (its error
    /// is worked out again each time).
    pub fn parse(&self, body: &RawBody, declared: Declared) -> Result<Arc<Delivery>, IntakeError> {
        let key = (body.sha256, declared);
        if let Some(delivery) = self.lock().get(&key) {
            return Ok(delivery.clone());
        }
        let delivery = Arc::new(parse(body.as_str().as_bytes(), key.1.clone())?);
        if body.text.len() <= REMEMBERED_BODY_BYTES {
            let mut remembered = self.lock();
            // Another request may have parsed the same body meanwhile: it keeps its place.
            remembered.replace(key, delivery.clone());
            if remembered.len() > RECENT_PARSES {
                remembered.pop_front();
            }
        }
        Ok(delivery)
    }

    /// Not held while a body is parsed; a panic cannot leave it half-updated.
    fn lock(&self) -> MutexGuard<'_, Parsed> {
        self.remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE: &str = include_str!("../../tests/fixtures/reference/alertmanager-v4.json");

    fn alertmanager() -> Declared {
        Some((Source::parse("alertmanager").unwrap(), Format::Alertmanager))
    }

    /// The reference body with another fingerprint: another distinct body.
    fn body(n: usize) -> RawBody {
        RawBody::new(REFERENCE.replace("5f1c2a9e7b3d4c10", &format!("{n:016x}")))
    }

    #[test]
    fn the_same_bytes_declared_the_same_are_parsed_once() {
        let parses = RecentParses::default();
        let first = parses.parse(&body(1), alertmanager()).unwrap();
        let again = parses.parse(&body(1), alertmanager()).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(
            first.entries[0].as_ref().unwrap().fingerprint.as_str(),
            "0000000000000001"
        );
        // Other bytes, or the same bytes sniffed rather than declared, are parsed anew.
        let other = parses.parse(&body(2), alertmanager()).unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(
            other.entries[0].as_ref().unwrap().fingerprint.as_str(),
            "0000000000000002"
        );
        assert!(!Arc::ptr_eq(&first, &parses.parse(&body(1), None).unwrap()));
    }

    #[test]
    fn the_oldest_is_forgotten_past_the_bound_and_errors_and_large_bodies_never_kept() {
        let parses = RecentParses::default();
        let first = parses.parse(&body(0), alertmanager()).unwrap();
        for n in 1..RECENT_PARSES {
            parses.parse(&body(n), alertmanager()).unwrap();
        }
        assert!(Arc::ptr_eq(
            &first,
            &parses.parse(&body(0), alertmanager()).unwrap()
        ));
        parses.parse(&body(RECENT_PARSES), alertmanager()).unwrap();
        assert!(!Arc::ptr_eq(
            &first,
            &parses.parse(&body(0), alertmanager()).unwrap()
        ));

        let bad = RawBody::new("{\"alerts\": 1}".into());
        assert!(parses.parse(&bad, alertmanager()).is_err());
        let padded = REFERENCE.replacen(
            '{',
            &format!("{{\"pad\": \"{}\",", "x".repeat(REMEMBERED_BODY_BYTES)),
            1,
        );
        let large = RawBody::new(padded);
        let once = parses.parse(&large, alertmanager()).unwrap();
        assert!(!Arc::ptr_eq(
            &once,
            &parses.parse(&large, alertmanager()).unwrap()
        ));
        assert_eq!(parses.lock().len(), RECENT_PARSES);
    }
}
