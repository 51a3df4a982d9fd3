//! A per-task queue of packets waiting for their delivery time. Relays own
//! one per direction; the earliest entry tells the task when to wake.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Packets held until their delivery time, earliest first; ties keep
/// arrival order.
#[derive(Debug)]
pub struct DelayQueue<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    seq: u64,
    bytes: usize,
}

#[derive(Debug)]
struct Entry<T> {
    at: Instant,
    seq: u64,
    len: usize,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl<T> Default for DelayQueue<T> {
    fn default() -> Self {
        DelayQueue {
            heap: BinaryHeap::new(),
            seq: 0,
            bytes: 0,
        }
    }
}

impl<T> DelayQueue<T> {
    /// Queues `item` (of `len` bytes) for `at`.
    pub fn push(&mut self, at: Instant, len: usize, item: T) {
        self.seq += 1;
        self.bytes += len;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            len,
            item,
        }));
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// When the earliest packet is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Removes and returns the earliest packet if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.next_due()? <= now {
            self.heap.pop().map(|Reverse(e)| {
                self.bytes -= e.len;
                e.item
            })
        } else {
            None
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn earliest_first_ties_in_order() {
        let now = Instant::now();
        let mut q = DelayQueue::default();
        q.push(now + Duration::from_millis(5), 4, "late");
        q.push(now + Duration::from_millis(1), 5, "first");
        q.push(now + Duration::from_millis(1), 6, "second");
        assert_eq!(q.bytes(), 15);
        assert_eq!(q.pop_due(now), None);
        assert_eq!(q.pop_due(now + Duration::from_millis(1)), Some("first"));
        assert_eq!(q.pop_due(now + Duration::from_millis(1)), Some("second"));
        assert_eq!(q.next_due(), Some(now + Duration::from_millis(5)));
        assert_eq!(q.pop_due(now + Duration::from_secs(1)), Some("late"));
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }
}
