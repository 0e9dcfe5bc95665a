//! The pieces of a web session that are not pages: the session id the cookie carries, and the
//! limit on failed sign-ins per client address.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// 256 random bits from the system's generator, hex-encoded: a session id or a sign-in form's
/// nonce.
pub(super) fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random number generator works");
    hex::encode(bytes)
}

/// What a session cookie carries: a random id, never the token. The database keeps only its
/// SHA-256.
#[derive(Clone)]
pub(super) struct SessionId(String);

impl SessionId {
    pub(super) fn generate() -> Self {
        Self(random_hex())
    }

    /// The id in a cookie, if it has the shape of one (a cookie of the old kind, the token
    /// itself, does not resolve to a session either way).
    pub(super) fn from_cookie(value: &str) -> Option<Self> {
        (value.len() == 64
            && value
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| Self(value.to_owned()))
    }

    pub(super) fn as_str(&self) -> &str {
        &self.0
    }

    pub(super) fn sha256(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

/// How many failed sign-ins an address may make in [`FailedLogins::WINDOW`]; the next attempt
/// is refused until the oldest leaves the window.
const FAILURES_PER_WINDOW: usize = 10;
/// Addresses tracked at most: past this, the addresses whose last failure is oldest are
/// forgotten first, so memory stays bounded under attempts from many addresses.
const TRACKED_ADDRESSES: usize = 10_000;

/// Failed sign-ins per client address (an IPv6 address's /64), over a sliding minute of the
/// app's clock. A successful sign-in is not counted.
#[derive(Default)]
pub(super) struct FailedLogins {
    by_address: Mutex<HashMap<IpAddr, VecDeque<DateTime<Utc>>>>,
}

impl FailedLogins {
    const WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

    /// Seconds until `address` may try again, if it has used up its failures.
    pub(super) fn wait(&self, address: IpAddr, now: DateTime<Utc>) -> Option<u64> {
        let mut by_address = self.by_address.lock().expect("the map is never poisoned");
        let failures = by_address.get_mut(&address)?;
        forget_before(failures, now - Self::WINDOW);
        if failures.len() < FAILURES_PER_WINDOW {
            return None;
        }
        let free_at = failures.front().copied()? + Self::WINDOW;
        Some(
            u64::try_from((free_at - now).num_seconds())
                .unwrap_or(0)
                .max(1),
        )
    }

    /// Counts a failed sign-in from `address`.
    pub(super) fn record(&self, address: IpAddr, now: DateTime<Utc>) {
        let mut by_address = self.by_address.lock().expect("the map is never poisoned");
        let since = now - Self::WINDOW;
        let failures = by_address.entry(address).or_default();
        forget_before(failures, since);
        failures.push_back(now);
        if failures.len() > FAILURES_PER_WINDOW {
            failures.pop_front();
        }
        if by_address.len() > TRACKED_ADDRESSES {
            by_address.retain(|_, failures| failures.back().is_some_and(|&at| at > since));
        }
        if by_address.len() > TRACKED_ADDRESSES {
            // Still full of recent failures: keep the most recent nine tenths.
            let mut last: Vec<DateTime<Utc>> = by_address
                .values()
                .filter_map(|failures| failures.back().copied())
                .collect();
            let drop = last.len() - TRACKED_ADDRESSES * 9 / 10;
            let (_, &mut cut, _) = last.select_nth_unstable(drop);
            by_address.retain(|_, failures| failures.back().is_some_and(|&at| at >= cut));
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.by_address.lock().unwrap().len()
    }
}

fn forget_before(failures: &mut VecDeque<DateTime<Utc>>, since: DateTime<Utc>) {
    while failures.front().is_some_and(|&at| at <= since) {
        failures.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use chrono::TimeZone;

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 3, 0, 0).unwrap()
    }

    #[test]
    fn the_eleventh_failure_in_a_minute_waits_for_the_first_to_age_out() {
        let limit = FailedLogins::default();
        let address = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        for second in 0..10 {
            let at = t0() + chrono::TimeDelta::seconds(second);
            assert_eq!(limit.wait(address, at), None, "failure {}", second + 1);
            limit.record(address, at);
        }
        let at = t0() + chrono::TimeDelta::seconds(20);
        assert_eq!(limit.wait(address, at), Some(40));
        let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 8));
        assert_eq!(limit.wait(other, at), None, "another address has its own");
        assert_eq!(
            limit.wait(address, t0() + chrono::TimeDelta::seconds(61)),
            None
        );
    }

    #[test]
    fn many_addresses_stay_bounded() {
        let limit = FailedLogins::default();
        for n in 0..(TRACKED_ADDRESSES as u32 + 5_000) {
            let at = t0() + chrono::TimeDelta::milliseconds(n.into());
            limit.record(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)), at);
        }
        assert!(limit.tracked() <= TRACKED_ADDRESSES, "{}", limit.tracked());
        // The newest address is still counted.
        let newest = IpAddr::V4(Ipv4Addr::from(
            0x0a00_0000 + TRACKED_ADDRESSES as u32 + 4_999,
        ));
        assert!(limit.by_address.lock().unwrap().contains_key(&newest));
    }
}
