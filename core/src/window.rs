//! Flow-control windows sized from the measured path, inside a memory
//! budget. A window smaller than the bandwidth-delay product (BDP) caps a
//! connection below what its path carries; a window far larger only lets a
//! slow reader pin memory. The policy keeps the connection's receive and
//! send windows at a multiple of the measured BDP, never below a floor (so
//! a connection can ramp up before anything is measured) and never above
//! the per-connection budget. Sans-IO: the caller measures RTT and the
//! delivery rate and applies the answer.

use std::time::Duration;

/// How windows follow the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowPolicy {
    /// Never smaller than this (bytes); also the window before any sample.
    pub floor: u64,
    /// Never larger than this (bytes): the memory one connection may hold
    /// for data received but not yet read, or sent but not yet acknowledged.
    pub budget: u64,
    /// The window is `headroom` times the BDP, so the sender's rate can
    /// grow (a window equal to the BDP only holds the current rate).
    pub headroom: u64,
}

impl Default for WindowPolicy {
    fn default() -> Self {
        WindowPolicy {
            floor: 16 << 20,
            budget: 256 << 20,
            headroom: 2,
        }
    }
}

/// The window a connection should have now, and whether it is worth
/// applying (a change under an eighth is left alone, so the peer is not
/// sent a flow-control update per sample).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WindowSizer {
    current: Option<u64>,
}

impl WindowPolicy {
    /// The window for a path of `rtt` that delivered `rate` bytes per
    /// second: `headroom` x BDP, clamped to `floor..=budget`.
    pub fn window(&self, rtt: Duration, rate_bytes_per_s: f64) -> u64 {
        let bdp = (rtt.as_secs_f64() * rate_bytes_per_s.max(0.0)) as u64;
        bdp.saturating_mul(self.headroom)
            .clamp(self.floor.min(self.budget), self.budget)
    }
}

impl WindowSizer {
    /// Feeds one sample; returns the window to apply, if it changed enough.
    /// The window only grows while the connection lives: shrinking a QUIC
    /// window does not take back credit already granted, and a path that
    /// once carried a rate is likely to carry it again.
    pub fn sample(&mut self, policy: &WindowPolicy, rtt: Duration, rate: f64) -> Option<u64> {
        let want = policy.window(rtt, rate);
        match self.current {
            Some(cur) if want <= cur + cur / 8 => None,
            _ => {
                self.current = Some(want);
                Some(want)
            }
        }
    }

    /// The window last returned.
    pub fn current(&self) -> Option<u64> {
        self.current
    }
}

/// Bytes per second between two readings of a byte counter `dt` apart.
pub fn rate(bytes_before: u64, bytes_after: u64, dt: Duration) -> f64 {
    if dt.is_zero() {
        return 0.0;
    }
    bytes_after.saturating_sub(bytes_before) as f64 / dt.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_long_fat_path_gets_twice_its_bdp() {
        let p = WindowPolicy::default();
        // 80 ms at 2.5 Gbit/s: BDP 25 MB, window 50 MB.
        assert_eq!(p.window(ms(80), 312_500_000.0), 50_000_000);
    }

    #[test]
    fn floor_before_samples_and_budget_caps() {
        let p = WindowPolicy {
            floor: 4 * MIB,
            budget: 32 * MIB,
            headroom: 2,
        };
        assert_eq!(p.window(ms(1), 1_000.0), 4 * MIB);
        assert_eq!(p.window(Duration::ZERO, 0.0), 4 * MIB);
        // 200 ms at 10 Gbit/s would want 500 MB.
        assert_eq!(p.window(ms(200), 1.25e9), 32 * MIB);
        // A floor above the budget yields to the budget.
        let tight = WindowPolicy {
            floor: 64 * MIB,
            ..p
        };
        assert_eq!(tight.window(ms(1), 1.0), 32 * MIB);
    }

    #[test]
    fn sizer_grows_in_steps_and_never_shrinks() {
        let p = WindowPolicy {
            floor: MIB,
            budget: 256 * MIB,
            headroom: 2,
        };
        let mut s = WindowSizer::default();
        assert_eq!(s.sample(&p, ms(80), 0.0), Some(MIB));
        // 80 ms at 100 MB/s: BDP 8 MB, window 16 MB.
        assert_eq!(s.sample(&p, ms(80), 100e6), Some(16_000_000));
        // A few per cent more is not worth an update.
        assert_eq!(s.sample(&p, ms(80), 105e6), None);
        // Idle: the window stays.
        assert_eq!(s.sample(&p, ms(80), 0.0), None);
        assert_eq!(s.current(), Some(16_000_000));
        assert_eq!(s.sample(&p, ms(80), 200e6), Some(32_000_000));
    }

    #[test]
    fn rate_from_counters() {
        assert_eq!(rate(1_000, 3_000, ms(500)), 4_000.0);
        assert_eq!(rate(3_000, 1_000, ms(500)), 0.0);
        assert_eq!(rate(0, 10, Duration::ZERO), 0.0);
    }
}
