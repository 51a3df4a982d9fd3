//! Circuit breaker per (peer, service), sans-IO: after `open_after`
//! consecutive failed opens the candidate is ejected for `cooldown`; then
//! one trial stream goes through, and its outcome closes the circuit or
//! opens it again.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    pub open_after: u32,
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            open_after: 3,
            cooldown: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open {
        until: Instant,
    },
    /// A trial is in flight; nothing else passes until it ends.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    failures: u32,
}

/// What the breaker did with an outcome, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerTransition {
    None,
    Opened,
    Closed,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker {
            config,
            state: BreakerState::Closed,
            failures: 0,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a new stream may go to this candidate now; after the
    /// cooldown the first caller gets the trial.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => false,
        }
    }

    /// Whether `allow` would pass, without taking the trial.
    pub fn would_allow(&self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { until } => now >= until,
            BreakerState::HalfOpen => false,
        }
    }

    pub fn record_success(&mut self) -> BreakerTransition {
        self.failures = 0;
        let was_open = self.state != BreakerState::Closed;
        self.state = BreakerState::Closed;
        if was_open {
            BreakerTransition::Closed
        } else {
            BreakerTransition::None
        }
    }

    pub fn record_failure(&mut self, now: Instant) -> BreakerTransition {
        self.failures += 1;
        let trip = self.state == BreakerState::HalfOpen || self.failures >= self.config.open_after;
        if trip && !matches!(self.state, BreakerState::Open { .. }) {
            self.state = BreakerState::Open {
                until: now + self.config.cooldown,
            };
            return BreakerTransition::Opened;
        }
        BreakerTransition::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_lets_one_trial_through() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        assert_eq!(b.record_failure(t0), BreakerTransition::None);
        assert_eq!(b.record_success(), BreakerTransition::None);
        assert_eq!(b.record_failure(t0), BreakerTransition::None);
        assert_eq!(b.record_failure(t0), BreakerTransition::None);
        assert_eq!(b.record_failure(t0), BreakerTransition::Opened);
        assert!(!b.allow(t0 + Duration::from_secs(4)));
        let after = t0 + Duration::from_secs(5);
        assert!(b.allow(after), "the trial");
        assert!(!b.allow(after), "only one trial at a time");
        assert_eq!(b.record_failure(after), BreakerTransition::Opened);
        assert!(!b.allow(after + Duration::from_secs(1)));
        let later = after + Duration::from_secs(5);
        assert!(b.allow(later));
        assert_eq!(b.record_success(), BreakerTransition::Closed);
        assert!(b.allow(later));
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
