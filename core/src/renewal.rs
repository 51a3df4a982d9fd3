//! When to renew a certificate: at 2/3 of its lifetime, and after a failed
//! attempt again with capped exponential backoff, until it succeeds. Wall
//! clock time (`SystemTime`), because certificate validity is wall clock.
//!
//! CAs backdate `notBefore` to absorb clock skew (strait's by 60 s), which
//! for short certificates would move 2/3 of the lifetime to the moment of
//! issue. The lifetime therefore starts when the certificate was received,
//! if that is within [`BACKDATE_ALLOWANCE`] of `notBefore`, and at most that
//! allowance after `notBefore` otherwise (a certificate loaded long after it
//! was issued).

use std::time::{Duration, SystemTime};

/// Shortest wait after a failed attempt.
pub const MIN_RETRY: Duration = Duration::from_secs(1);
/// Longest wait after failed attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// How far a CA may have backdated `notBefore`.
pub const BACKDATE_ALLOWANCE: Duration = Duration::from_secs(60);

/// Seconds from `now` until `not_after`, negative once it has passed.
pub fn seconds_left(not_after: SystemTime, now: SystemTime) -> f64 {
    match not_after.duration_since(now) {
        Ok(left) => left.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[derive(Debug, Clone)]
pub struct RenewalSchedule {
    not_before: SystemTime,
    not_after: SystemTime,
    failures: u32,
    next: SystemTime,
}

impl RenewalSchedule {
    /// For a certificate valid from `not_before` to `not_after`, received
    /// (issued or loaded) at `received`.
    pub fn new(not_before: SystemTime, not_after: SystemTime, received: SystemTime) -> Self {
        let start = received
            .min(not_before + BACKDATE_ALLOWANCE)
            .max(not_before)
            .min(not_after);
        let mut s = RenewalSchedule {
            not_before: start,
            not_after,
            failures: 0,
            next: not_before,
        };
        s.next = s.renew_at();
        s
    }

    fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }

    /// Two thirds into the lifetime.
    pub fn renew_at(&self) -> SystemTime {
        self.not_before + self.lifetime() * 2 / 3
    }

    /// When the next attempt is due.
    pub fn next_attempt(&self) -> SystemTime {
        self.next
    }

    /// How long to wait from `now` for the next attempt (zero when due).
    pub fn wait(&self, now: SystemTime) -> Duration {
        self.next.duration_since(now).unwrap_or_default()
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Seconds until expiry, negative once expired.
    pub fn remaining(&self, now: SystemTime) -> f64 {
        seconds_left(self.not_after, now)
    }

    /// An attempt failed at `now`; `jitter` in [0, 1) spreads retries of
    /// many gateways apart. Returns when to try again: 1 s doubling per
    /// failure, capped at a tenth of the lifetime (within 1 s..300 s), so a
    /// short certificate is retried often enough to renew before it expires.
    pub fn failed(&mut self, now: SystemTime, jitter: f64) -> SystemTime {
        self.failures = self.failures.saturating_add(1);
        let cap = (self.lifetime() / 10).clamp(MIN_RETRY, MAX_RETRY);
        let exp = MIN_RETRY.saturating_mul(1u32 << self.failures.min(16).saturating_sub(1));
        let delay = exp.min(cap).mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        self.next = now + delay.max(Duration::from_millis(500));
        self.next
    }

    /// A new certificate arrived at `now`.
    pub fn renewed(&mut self, not_before: SystemTime, not_after: SystemTime, now: SystemTime) {
        *self = RenewalSchedule::new(not_before, not_after, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    #[test]
    fn a_backdated_short_certificate_is_renewed_two_thirds_after_it_arrived() {
        // Issued at T0 + 60 s, backdated to T0, valid until T0 + 90 s.
        let issued = T0 + secs(60);
        let s = RenewalSchedule::new(T0, T0 + secs(90), issued);
        assert_eq!(s.next_attempt(), issued + secs(20));
        // Loaded long after it was issued: at most the allowance is skipped.
        let s = RenewalSchedule::new(T0, T0 + secs(90), T0 + secs(80));
        assert_eq!(s.next_attempt(), issued + secs(20));
        // Not backdated at all.
        let s = RenewalSchedule::new(T0, T0 + secs(30), T0);
        assert_eq!(s.next_attempt(), T0 + secs(20));
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn renews_at_two_thirds() {
        let s = RenewalSchedule::new(T0, T0 + secs(24 * 3600), T0 + secs(3600));
        assert_eq!(s.next_attempt(), T0 + secs(16 * 3600 + 20));
        assert_eq!(s.wait(T0 + secs(15 * 3600)), secs(3620));
        assert_eq!(s.wait(T0 + secs(17 * 3600)), Duration::ZERO);
        assert_eq!(s.remaining(T0 + secs(24 * 3600 + 5)), -5.0);
    }

    #[test]
    fn backs_off_and_caps_at_a_tenth_of_the_lifetime() {
        let mut s = RenewalSchedule::new(T0, T0 + secs(30), T0);
        let mut now = s.next_attempt();
        assert_eq!(now, T0 + secs(20));
        let mut waits = Vec::new();
        for _ in 0..6 {
            let next = s.failed(now, 0.999_999);
            waits.push(next.duration_since(now).unwrap().as_millis());
            now = next;
        }
        // 1 s, 2 s, then capped at 3 s (a tenth of 30 s).
        assert_eq!(waits[..2], [999, 1_999]);
        assert!(
            waits[2..].iter().all(|w| (2_999..=3_000).contains(w)),
            "{waits:?}"
        );
        assert_eq!(s.failures(), 6);
        s.renewed(now, now + secs(30), now);
        assert_eq!(s.failures(), 0);
        assert_eq!(s.next_attempt(), now + secs(20));
    }

    #[test]
    fn long_lifetimes_cap_at_five_minutes_and_jitter_halves_at_most() {
        let mut s = RenewalSchedule::new(T0, T0 + secs(24 * 3600), T0);
        let now = s.next_attempt();
        for _ in 0..20 {
            s.failed(now, 0.999_999);
        }
        assert!(s.wait(now) <= MAX_RETRY && s.wait(now) > secs(299));
        s.failed(now, 0.0);
        assert_eq!(s.wait(now), secs(150));
    }
}
