//! Health of an exported target, sans-IO: hysteresis over TCP connect
//! checks, so one slow connect does not make every importing gateway fail
//! over. Down after `down_after` failed checks in a row, Up at the first
//! success.

/// Consecutive failed connects before a target counts as down.
pub const TARGET_DOWN_AFTER: u32 = 2;

#[derive(Debug, Clone)]
pub struct TargetHealth {
    down_after: u32,
    failures: u32,
    healthy: bool,
}

impl Default for TargetHealth {
    fn default() -> Self {
        TargetHealth::new(TARGET_DOWN_AFTER)
    }
}

impl TargetHealth {
    /// Starts healthy.
    pub fn new(down_after: u32) -> Self {
        TargetHealth {
            down_after: down_after.max(1),
            failures: 0,
            healthy: true,
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Feeds one check; returns the new verdict when it changed.
    pub fn handle_check(&mut self, ok: bool) -> Option<bool> {
        self.failures = if ok { 0 } else { self.failures + 1 };
        let healthy = self.failures < self.down_after;
        (healthy != std::mem::replace(&mut self.healthy, healthy)).then_some(healthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_is_forgiven_two_are_not_one_success_heals() {
        let mut t = TargetHealth::default();
        assert_eq!(t.handle_check(false), None);
        assert_eq!(t.handle_check(true), None);
        assert_eq!(t.handle_check(false), None);
        assert_eq!(t.handle_check(false), Some(false));
        assert_eq!(t.handle_check(false), None);
        assert_eq!(t.handle_check(true), Some(true));
        assert!(t.healthy());
    }
}
