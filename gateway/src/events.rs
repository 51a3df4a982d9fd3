//! A bounded log of the events operators look for after the fact:
//! failovers and failbacks, circuits opened and closed, tunnels up and down,
//! health changes, refused peers, targets lost and found. Part of `/status`;
//! the oldest events fall off once it is full.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

/// Events kept.
pub const CAPACITY: usize = 200;

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// RFC 3339, UTC.
    pub time: String,
    pub kind: &'static str,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct EventLog {
    events: Mutex<VecDeque<Event>>,
}

impl EventLog {
    pub fn record(&self, kind: &'static str, detail: impl Into<String>) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() == CAPACITY {
            events.pop_front();
        }
        events.push_back(Event {
            time: strait_ca::time::rfc3339(SystemTime::now()),
            kind,
            detail: detail.into(),
        });
    }

    /// Oldest first.
    pub fn snapshot(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_events() {
        let log = EventLog::default();
        for i in 0..CAPACITY + 5 {
            log.record("failover", format!("#{i}"));
        }
        let events = log.snapshot();
        assert_eq!(events.len(), CAPACITY);
        assert_eq!(events[0].detail, "#5");
        assert_eq!(events.last().unwrap().detail, format!("#{}", CAPACITY + 4));
    }
}
