//! Limits on an import or an export: a bulkhead (at most `max_concurrent`
//! streams, a bounded queue with a wait timeout) and a new-connection rate
//! limit (token bucket with a burst). Beyond them a client is refused at
//! once (OVERLOADED), never parked; one service's limits never touch
//! another's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use strait_core::limits::TokenBucket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits as configured (`max_concurrent`, `queue`, `queue_timeout`,
/// `rate`, `burst` on an `[[import]]` or `[[export]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_concurrent: Option<usize>,
    pub queue: usize,
    pub queue_timeout: Duration,
    /// New streams per second.
    pub rate: Option<f64>,
    pub burst: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent: None,
            queue: 0,
            queue_timeout: Duration::from_secs(1),
            rate: None,
            burst: None,
        }
    }
}

/// Why a stream was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    RateLimited,
    QueueFull,
    QueueTimeout,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::RateLimited => "rate limited",
            Refusal::QueueFull => "concurrency limit reached and queue full",
            Refusal::QueueTimeout => "waited too long for a concurrency slot",
        }
    }
}

/// The live state of one service's limits.
#[derive(Debug)]
pub struct Admission {
    slots: Option<Arc<Semaphore>>,
    waiting: AtomicUsize,
    queue: usize,
    queue_timeout: Duration,
    bucket: Option<Mutex<TokenBucket>>,
}

impl Admission {
    pub fn new(limits: &Limits) -> Self {
        Admission {
            slots: limits.max_concurrent.map(|n| Arc::new(Semaphore::new(n))),
            waiting: AtomicUsize::new(0),
            queue: limits.queue,
            queue_timeout: limits.queue_timeout,
            bucket: limits.rate.map(|rate| {
                let burst = limits.burst.unwrap_or_else(|| rate.ceil().max(1.0) as u32);
                Mutex::new(TokenBucket::new(rate, burst, Instant::now().into_std()))
            }),
        }
    }

    /// Admits a stream, possibly after waiting in the queue; the permit
    /// (if limits apply) must live as long as the stream.
    pub async fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, Refusal> {
        if let Some(bucket) = &self.bucket {
            let took = bucket
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .try_take(Instant::now().into_std());
            if !took {
                return Err(Refusal::RateLimited);
            }
        }
        let Some(slots) = &self.slots else {
            return Ok(None);
        };
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Ok(Some(permit));
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Refusal::QueueFull);
        }
        let waited = tokio::time::timeout(self.queue_timeout, slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match waited {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(Refusal::QueueTimeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bulkhead_queues_then_refuses() {
        let a = Arc::new(Admission::new(&Limits {
            max_concurrent: Some(1),
            queue: 1,
            queue_timeout: Duration::from_millis(300),
            ..Default::default()
        }));
        let held = a.admit().await.unwrap();
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.admit().await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        assert_eq!(a.admit().await.unwrap_err(), Refusal::QueueFull);
        assert_eq!(waiter.await.unwrap().unwrap_err(), Refusal::QueueTimeout);
        drop(held);
        assert!(a.admit().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_refuses_and_recovers() {
        let a = Admission::new(&Limits {
            rate: Some(5.0),
            burst: Some(2),
            ..Default::default()
        });
        assert!(a.admit().await.is_ok());
        assert!(a.admit().await.is_ok());
        assert_eq!(a.admit().await.unwrap_err(), Refusal::RateLimited);
        // 5 a second: a token is back after 200 ms.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(a.admit().await.is_ok());
    }
}
