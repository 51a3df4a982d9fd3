//! Retry budget, sans-IO: retries may add at most `ratio` of the streams
//! opened over the last `window` (plus a small floor), so a failing region
//! cannot turn every client connection into a retry storm.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RetryBudget {
    ratio: f64,
    min_retries: u32,
    window: Duration,
    opens: VecDeque<Instant>,
    retries: VecDeque<Instant>,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(0.2, 10, Duration::from_secs(10))
    }
}

impl RetryBudget {
    pub fn new(ratio: f64, min_retries: u32, window: Duration) -> Self {
        RetryBudget {
            ratio,
            min_retries,
            window,
            opens: VecDeque::new(),
            retries: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Instant) {
        for q in [&mut self.opens, &mut self.retries] {
            while q
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) > self.window)
            {
                q.pop_front();
            }
        }
    }

    /// A first attempt was made.
    pub fn record_open(&mut self, now: Instant) {
        self.expire(now);
        self.opens.push_back(now);
    }

    /// Takes one retry from the budget if there is one.
    pub fn try_retry(&mut self, now: Instant) -> bool {
        self.expire(now);
        let allowed = (self.opens.len() as f64 * self.ratio) as usize + self.min_retries as usize;
        if self.retries.len() < allowed {
            self.retries.push_back(now);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_capped_at_a_share_of_opens_and_recover() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(0.2, 2, Duration::from_secs(10));
        for _ in 0..100 {
            b.record_open(t0);
        }
        let granted = (0..100).filter(|_| b.try_retry(t0)).count();
        assert_eq!(granted, 22, "20% of 100 plus the floor of 2");
        assert!(!b.try_retry(t0 + Duration::from_secs(5)));
        // Once the window has passed, only the floor is left.
        let later = t0 + Duration::from_secs(11);
        assert!(b.try_retry(later));
        assert!(b.try_retry(later));
        assert!(!b.try_retry(later));
    }
}
