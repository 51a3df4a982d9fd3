//! Admission limits, sans-IO: a token bucket for new connections per
//! second (with a burst), and the streams on which no byte has moved yet,
//! which give their slots to new clients when a concurrency limit is
//! reached. The concurrency limit itself is a semaphore in the async layer;
//! these are the parts with decisions worth testing alone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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

/// Streams admitted under a concurrency limit on which no byte has moved
/// either way yet, oldest first. When the limit is reached, the stream
/// silent longest (for at least a minimum age) is the one to reclaim: a
/// flood of idle connections from many addresses then cannot keep real
/// clients out until the first-byte timeout. `T` is what the async layer
/// needs to end the stream.
#[derive(Debug)]
pub struct SilentStreams<T> {
    next: u64,
    // Ids grow with time, so the first entry is the oldest.
    held: BTreeMap<u64, (Instant, T)>,
}

impl<T> Default for SilentStreams<T> {
    fn default() -> Self {
        SilentStreams {
            next: 0,
            held: BTreeMap::new(),
        }
    }
}

impl<T> SilentStreams<T> {
    /// A stream admitted at `now`; the id removes it again.
    pub fn insert(&mut self, now: Instant, stream: T) -> u64 {
        let id = self.next;
        self.next += 1;
        self.held.insert(id, (now, stream));
        id
    }

    /// The stream moved a byte, or ended.
    pub fn remove(&mut self, id: u64) -> Option<T> {
        self.held.remove(&id).map(|(_, t)| t)
    }

    /// Takes the stream silent longest, if it has been for `min_age`.
    pub fn reclaim(&mut self, now: Instant, min_age: Duration) -> Option<T> {
        let (&id, (since, _)) = self.held.first_key_value()?;
        if now.saturating_duration_since(*since) < min_age {
            return None;
        }
        self.remove(id)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_silent_longest_is_reclaimed_once_old_enough() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut silent = SilentStreams::default();
        let a = silent.insert(t0, "a");
        let b = silent.insert(t0 + ms(100), "b");
        silent.insert(t0 + ms(200), "c");
        assert_eq!(
            silent.reclaim(t0 + ms(900), ms(1000)),
            None,
            "none silent a second"
        );
        // "a" spoke: "b" is now the one silent longest.
        assert_eq!(silent.remove(a), Some("a"));
        assert_eq!(silent.reclaim(t0 + ms(1050), ms(1000)), None, "b: 950 ms");
        assert_eq!(silent.reclaim(t0 + ms(1100), ms(1000)), Some("b"));
        assert_eq!(silent.remove(b), None, "reclaimed once");
        assert_eq!(silent.reclaim(t0 + ms(5000), ms(1000)), Some("c"));
        assert!(silent.is_empty());
        assert_eq!(silent.reclaim(t0 + ms(9000), ms(0)), None);
    }

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
