//! Admission limits, sans-IO: a token bucket for new connections per
//! second (with a burst). The concurrency limit itself is a semaphore in
//! the async layer; this is the part with arithmetic worth testing alone.

use std::time::Instant;

/// `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Starts full.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_rate_then_recovery() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 5, t0);
        assert_eq!((0..20).filter(|_| b.try_take(t0)).count(), 5, "the burst");
        // 10 a second: one token every 100 ms.
        assert!(!b.try_take(t0 + Duration::from_millis(50)));
        assert!(b.try_take(t0 + Duration::from_millis(101)));
        // Over a quiet second it refills, but never past the burst.
        let later = t0 + Duration::from_secs(5);
        assert_eq!((0..20).filter(|_| b.try_take(later)).count(), 5);
    }
}
