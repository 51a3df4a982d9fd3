//! Limits on an import or an export: a bulkhead (at most `max_concurrent`
//! streams, a bounded queue with a wait timeout), at most `max_per_client`
//! streams from one client address (imports) and a new-connection rate
//! limit (token bucket with a burst). Beyond them a client is refused at
//! once (OVERLOADED), never parked; one service's limits never touch
//! another's. At the concurrency limit a new client first takes the slot
//! of the stream silent longest (no byte either way for [`RECLAIM_AFTER`]):
//! idle connections from many addresses cannot keep real clients out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use strait_core::limits::{SilentStreams, TokenBucket};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// How long a stream must have moved no byte before a new client may take
/// its slot at the concurrency limit.
pub const RECLAIM_AFTER: Duration = Duration::from_secs(1);

/// Limits as configured (`max_concurrent`, `queue`, `queue_timeout`,
/// `rate`, `burst` on an `[[import]]` or `[[export]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_concurrent: Option<usize>,
    /// Streams one client address may hold at once.
    pub max_per_client: Option<usize>,
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
            max_per_client: None,
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
    ClientLimit,
    QueueFull,
    QueueTimeout,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::RateLimited => "rate limited",
            Refusal::ClientLimit => "this client address holds max_per_client streams already",
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
    per_client: Option<(usize, ClientCounts)>,
    /// Where slots are reclaimed from silent streams (imports).
    silent: Option<Silent>,
}

/// Streams held per client address.
type ClientCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;
/// Admitted streams that have not moved a byte yet, and how to end each.
type Silent = Arc<Mutex<SilentStreams<Arc<Notify>>>>;

/// What an admitted stream holds until it ends: its slot, its place in its
/// client's count, and (under a concurrency limit) its place among the
/// silent streams.
#[derive(Debug)]
pub struct Admitted {
    _slot: Option<OwnedSemaphorePermit>,
    _client: Option<ClientSlot>,
    silence: Option<Silence>,
}

impl Admitted {
    /// Where the stream learns that a new client took its slot, while no
    /// byte has moved on it.
    pub fn silence(&self) -> Option<&Silence> {
        self.silence.as_ref()
    }
}

/// A stream's place among the silent ones, until it moves a byte.
#[derive(Debug)]
pub struct Silence {
    id: u64,
    silent: Silent,
    reclaim: Arc<Notify>,
    /// Out of the silent streams already (spoke, or ended).
    left: AtomicBool,
}

impl Silence {
    /// A byte moved: the stream keeps its slot.
    pub fn spoke(&self) {
        if !self.left.swap(true, Ordering::Relaxed) {
            lock(&self.silent).remove(self.id);
        }
    }

    /// Returns when a new client took the stream's slot.
    pub async fn reclaimed(&self) {
        self.reclaim.notified().await
    }
}

impl Drop for Silence {
    fn drop(&mut self) {
        self.spoke();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug)]
struct ClientSlot {
    ip: IpAddr,
    counts: ClientCounts,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
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
            per_client: limits
                .max_per_client
                .map(|n| (n, Arc::new(Mutex::new(HashMap::new())))),
            silent: None,
        }
    }

    /// Limits whose slots, at `max_concurrent`, go to new clients from the
    /// streams silent longest: the streams must watch [`Silence`].
    pub fn reclaiming(limits: &Limits) -> Self {
        Admission {
            silent: limits.max_concurrent.map(|_| Silent::default()),
            ..Admission::new(limits)
        }
    }

    /// Counts a stream against its client address; refused when that
    /// address holds its share already.
    fn take_client(&self, client: Option<IpAddr>) -> Result<Option<ClientSlot>, Refusal> {
        let (Some((max, counts)), Some(ip)) = (&self.per_client, client) else {
            return Ok(None);
        };
        let mut held = lock(counts);
        let n = held.entry(ip).or_insert(0);
        if *n >= *max {
            return Err(Refusal::ClientLimit);
        }
        *n += 1;
        Ok(Some(ClientSlot {
            ip,
            counts: counts.clone(),
        }))
    }

    /// Admits a stream from `client` (its address, where limits per
    /// client apply), possibly after waiting in the queue; what it returns
    /// must live as long as the stream.
    pub async fn admit(&self, client: Option<IpAddr>) -> Result<Admitted, Refusal> {
        let client = self.take_client(client)?;
        let slot = self.admit_slot().await?;
        let silence = self.silent.as_ref().map(|silent| {
            let reclaim = Arc::new(Notify::new());
            let id = lock(silent).insert(Instant::now().into_std(), reclaim.clone());
            Silence {
                id,
                silent: silent.clone(),
                reclaim,
                left: AtomicBool::new(false),
            }
        });
        Ok(Admitted {
            _slot: slot,
            _client: client,
            silence,
        })
    }

    async fn admit_slot(&self) -> Result<Option<OwnedSemaphorePermit>, Refusal> {
        if let Some(bucket) = &self.bucket {
            let took = lock(bucket).try_take(Instant::now().into_std());
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
        let silent_longest = self
            .silent
            .as_ref()
            .and_then(|silent| lock(silent).reclaim(Instant::now().into_std(), RECLAIM_AFTER));
        if let Some(stream) = silent_longest {
            // Its slot comes back as soon as its task has ended it.
            stream.notify_one();
            return match tokio::time::timeout(self.queue_timeout, slots.clone().acquire_owned())
                .await
            {
                Ok(Ok(permit)) => Ok(Some(permit)),
                _ => Err(Refusal::QueueTimeout),
            };
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
        let held = a.admit(None).await.unwrap();
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.admit(None).await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        assert_eq!(a.admit(None).await.unwrap_err(), Refusal::QueueFull);
        assert_eq!(waiter.await.unwrap().unwrap_err(), Refusal::QueueTimeout);
        drop(held);
        assert!(a.admit(None).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_refuses_and_recovers() {
        let a = Admission::new(&Limits {
            rate: Some(5.0),
            burst: Some(2),
            ..Default::default()
        });
        assert!(a.admit(None).await.is_ok());
        assert!(a.admit(None).await.is_ok());
        assert_eq!(a.admit(None).await.unwrap_err(), Refusal::RateLimited);
        // 5 a second: a token is back after 200 ms.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(a.admit(None).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_limit_a_new_client_takes_the_slot_of_the_stream_silent_longest() {
        let a = Arc::new(Admission::reclaiming(&Limits {
            max_concurrent: Some(2),
            ..Default::default()
        }));
        let first = a.admit(None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second = a.admit(None).await.unwrap();
        // Nobody silent for RECLAIM_AFTER yet: refused as before.
        assert_eq!(a.admit(None).await.unwrap_err(), Refusal::QueueFull);
        tokio::time::sleep(RECLAIM_AFTER).await;
        // The first spoke: the second is the one to give way.
        first.silence().unwrap().spoke();
        let newcomer = tokio::spawn({
            let a = a.clone();
            async move { a.admit(None).await.map(|_| ()) }
        });
        tokio::time::timeout(
            Duration::from_secs(1),
            second.silence().unwrap().reclaimed(),
        )
        .await
        .expect("the silent stream is told to end");
        drop(second);
        newcomer
            .await
            .unwrap()
            .expect("the newcomer takes the slot");
        drop(first);
    }

    #[tokio::test(start_paused = true)]
    async fn limits_that_do_not_reclaim_refuse_at_once_however_long_a_stream_was_silent() {
        let a = Admission::new(&Limits {
            max_concurrent: Some(1),
            ..Default::default()
        });
        let held = a.admit(None).await.unwrap();
        assert!(held.silence().is_none());
        tokio::time::sleep(RECLAIM_AFTER * 5).await;
        let started = Instant::now();
        assert_eq!(a.admit(None).await.unwrap_err(), Refusal::QueueFull);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn one_client_address_cannot_take_every_slot() {
        let a = Admission::new(&Limits {
            max_concurrent: Some(10),
            max_per_client: Some(2),
            ..Default::default()
        });
        let (flooder, other): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = a.admit(Some(flooder)).await.unwrap();
        let _second = a.admit(Some(flooder)).await.unwrap();
        assert_eq!(
            a.admit(Some(flooder)).await.unwrap_err(),
            Refusal::ClientLimit
        );
        assert!(a.admit(Some(other)).await.is_ok());
        drop(first);
        assert!(a.admit(Some(flooder)).await.is_ok(), "a slot came back");
    }
}
