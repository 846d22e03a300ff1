//! Waits between attempts to reach the control plane (registrations, and dials of the node
//! channel): exponential, capped, with full jitter, so that a fleet which lost its control plane
//! does not come back in lock-step.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

const BASE: Duration = Duration::from_secs(1);

pub struct Backoff {
    cap: Duration,
    random: SplitMix64,
}

impl Backoff {
    /// Waits never exceed `cap` (raised to 1 s if smaller).
    pub fn new(cap: Duration) -> Backoff {
        Backoff {
            cap: cap.max(BASE),
            random: SplitMix64::from_os(),
        }
    }

    /// The longest wait after attempt `attempt` (0 for the first): min(cap, 1 s · 2^attempt).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        BASE.checked_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// A uniformly random wait in [0, ceiling(attempt)].
    pub fn delay(&mut self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt).as_nanos() as u64;
        Duration::from_nanos(self.random.below(ceiling + 1))
    }
}

/// A small, fast generator (Steele, Lea and Flood's SplitMix64): jitter needs spread, not
/// secrecy.
struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeded from the OS through std's hash keys, which std draws from getrandom(2): no two
    /// agents, even started in the same instant from the same image, share a sequence.
    fn from_os() -> SplitMix64 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        SplitMix64(hasher.finish())
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, bound) (Lemire's multiply-shift; the bias is at most bound / 2^64).
    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(bound)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let backoff = Backoff::new(Duration::from_secs(30));
        let ceilings: Vec<u64> = (0..8).map(|n| backoff.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff.ceiling(200), Duration::from_secs(30));
    }

    #[test]
    fn cap_is_at_least_one_second() {
        let backoff = Backoff::new(Duration::from_millis(10));
        assert_eq!(backoff.ceiling(5), Duration::from_secs(1));
    }

    #[test]
    fn delays_stay_in_bounds_and_spread_out() {
        let mut backoff = Backoff::new(Duration::from_secs(8));
        for attempt in 0..10 {
            let ceiling = backoff.ceiling(attempt);
            let delays: Vec<Duration> = (0..2000).map(|_| backoff.delay(attempt)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling));
            // Full jitter: each quarter of the window gets a fair share of 2000 draws.
            for quarter in 0..4u32 {
                let low = ceiling * quarter / 4;
                let high = ceiling * (quarter + 1) / 4;
                let count = delays.iter().filter(|d| **d >= low && **d < high).count();
                assert!(
                    (350..650).contains(&count),
                    "attempt {attempt} quarter {quarter}: {count}"
                );
            }
        }
    }

    #[test]
    fn two_generators_differ() {
        assert_ne!(SplitMix64::from_os().next(), SplitMix64::from_os().next());
    }
}
