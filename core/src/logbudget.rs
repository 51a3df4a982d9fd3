//! A budget of log lines for events a stranger can cause at will (refused
//! handshakes): the first `burst` of each `interval` are logged one by
//! one, the rest only counted, and once the interval is over the count is
//! handed back for one summary line. Metrics count every event; the budget
//! only keeps the logs (and the bounded event log of `/status`) from being
//! flooded. Sans-IO: `now` is an argument.

use std::time::{Duration, Instant};

/// Events kept out of the log since `since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed {
    pub count: u64,
    pub since: Instant,
}

#[derive(Debug, Clone)]
pub struct LogBudget {
    burst: u32,
    interval: Duration,
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogBudget {
    pub fn new(burst: u32, interval: Duration) -> Self {
        LogBudget {
            burst,
            interval,
            window_start: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// An event happened: `true` when it may be logged on its own line.
    /// Call [`LogBudget::poll_summary`] first, so that a finished
    /// interval's count is not lost.
    pub fn allow(&mut self, now: Instant) -> bool {
        let start = *self.window_start.get_or_insert(now);
        if now.saturating_duration_since(start) >= self.interval && self.suppressed == 0 {
            self.window_start = Some(now);
            self.logged = 0;
        }
        if self.logged < self.burst {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// The events suppressed in an interval that is over, once; the next
    /// interval starts now.
    pub fn poll_summary(&mut self, now: Instant) -> Option<Suppressed> {
        let start = self.window_start?;
        if now.saturating_duration_since(start) < self.interval || self.suppressed == 0 {
            return None;
        }
        let out = Suppressed {
            count: self.suppressed,
            since: start,
        };
        self.suppressed = 0;
        self.logged = 0;
        self.window_start = Some(now);
        Some(out)
    }

    /// When [`LogBudget::poll_summary`] will next have something to say.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.suppressed > 0).then(|| self.window_start.map(|s| s + self.interval))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_its_first_lines_then_one_summary_per_interval() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(3, Duration::from_secs(10));
        let logged = (0..1000)
            .filter(|i| b.allow(t0 + Duration::from_millis(*i)))
            .count();
        assert_eq!(logged, 3);
        assert_eq!(b.poll_summary(t0 + Duration::from_secs(5)), None);
        assert_eq!(b.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        let s = b.poll_summary(t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(
            s,
            Suppressed {
                count: 997,
                since: t0
            }
        );
        assert_eq!(b.poll_summary(t0 + Duration::from_secs(20)), None);
        // The next interval logs its first lines again.
        assert!(b.allow(t0 + Duration::from_secs(11)));
    }

    #[test]
    fn a_quiet_stretch_resets_the_budget_without_a_summary() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(2, Duration::from_secs(10));
        assert!(b.allow(t0));
        assert!(b.allow(t0));
        assert!(!b.allow(t0));
        assert!(b.poll_summary(t0 + Duration::from_secs(10)).is_some());
        assert!(b.allow(t0 + Duration::from_secs(30)));
        assert!(b.allow(t0 + Duration::from_secs(30)));
        assert_eq!(b.poll_timeout(), None);
        // Occasional events far apart are always logged.
        for i in 1..5 {
            assert!(b.allow(t0 + Duration::from_secs(30 + 11 * i)));
        }
    }
}
