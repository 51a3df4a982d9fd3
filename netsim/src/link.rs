//! The link model: what happens to one packet on one direction of a WAN
//! path. Sans-IO: it decides a packet's fate from its length and `now`, and
//! the relays carry the decision out. Decisions come from a seeded RNG, so
//! the same seed and the same packet sequence give the same fates.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Impairments of one direction of a link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Minimum one-way delay; no packet is delivered sooner.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..=jitter`. Delivery order is kept
    /// (a packet never overtakes an earlier one) unless `reorder` is set.
    pub jitter: Duration,
    /// Independent random loss, 0.0..=1.0.
    pub loss: f64,
    /// Bursty loss (Gilbert-Elliott), applied in addition to `loss`.
    pub burst: Option<BurstLoss>,
    /// Probability that a delivered packet is delivered twice.
    pub duplicate: f64,
    /// Probability that a packet is held back by `reorder_gap`, letting later
    /// packets overtake it.
    pub reorder: f64,
    pub reorder_gap: Duration,
    /// Bandwidth in bits per second; `None` is unlimited.
    pub rate_bps: Option<u64>,
    /// Bytes that may wait for the bandwidth limit; beyond it, tail drop.
    pub queue_bytes: usize,
    /// Largest datagram carried; larger ones are dropped.
    pub mtu: Option<usize>,
    /// Drop everything.
    pub partitioned: bool,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            burst: None,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_gap: Duration::from_millis(10),
            rate_bps: None,
            queue_bytes: 1 << 20,
            mtu: None,
            partitioned: false,
        }
    }
}

/// Gilbert-Elliott two-state loss: a good and a bad state, each with its own
/// loss probability, and per-packet transition probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstLoss {
    pub p_good_to_bad: f64,
    pub p_bad_to_good: f64,
    pub loss_in_good: f64,
    pub loss_in_bad: f64,
}

impl BurstLoss {
    /// Bursts of mean length `mean_burst` packets that lose `loss` of all
    /// packets on average (every packet in the bad state is lost).
    pub fn from_mean(loss: f64, mean_burst: f64) -> Self {
        let r = 1.0 / mean_burst.max(1.0);
        let loss = loss.clamp(0.0, 0.999);
        BurstLoss {
            p_good_to_bad: loss * r / (1.0 - loss),
            p_bad_to_good: r,
            loss_in_good: 0.0,
            loss_in_bad: 1.0,
        }
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropCause {
    Partition,
    Loss,
    BurstLoss,
    QueueFull,
    Mtu,
}

/// What happens to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Deliver {
        at: Instant,
        /// A second copy, when duplication struck.
        duplicate_at: Option<Instant>,
    },
    Drop(DropCause),
}

/// Counters of one link direction, by fate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStats {
    pub delivered_packets: u64,
    pub delivered_bytes: u64,
    pub duplicated_packets: u64,
    pub reordered_packets: u64,
    pub dropped_partition: u64,
    pub dropped_loss: u64,
    pub dropped_burst_loss: u64,
    pub dropped_queue_full: u64,
    pub dropped_mtu: u64,
}

impl LinkStats {
    pub fn dropped(&self) -> u64 {
        self.dropped_partition
            + self.dropped_loss
            + self.dropped_burst_loss
            + self.dropped_queue_full
            + self.dropped_mtu
    }

    fn count_drop(&mut self, cause: DropCause) {
        match cause {
            DropCause::Partition => self.dropped_partition += 1,
            DropCause::Loss => self.dropped_loss += 1,
            DropCause::BurstLoss => self.dropped_burst_loss += 1,
            DropCause::QueueFull => self.dropped_queue_full += 1,
            DropCause::Mtu => self.dropped_mtu += 1,
        }
    }
}

/// One direction of a link: its settings, its random state and its queue.
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    rng: ChaCha8Rng,
    in_bad_state: bool,
    /// Delivery time of the last in-order packet; keeps jitter from
    /// reordering.
    last_delivery: Option<Instant>,
    /// When the bandwidth limiter finishes sending what is queued.
    queue_free_at: Option<Instant>,
    stats: LinkStats,
}

impl Link {
    pub fn new(config: LinkConfig, seed: u64) -> Self {
        Link {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            in_bad_state: false,
            last_delivery: None,
            queue_free_at: None,
            stats: LinkStats::default(),
        }
    }

    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// New settings apply from the next packet; packets already admitted
    /// keep the fate they were given.
    pub fn set_config(&mut self, config: LinkConfig) {
        self.config = config;
    }

    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// Decides the fate of a datagram of `len` bytes offered at `now`.
    pub fn admit(&mut self, len: usize, now: Instant) -> Fate {
        let fate = self.decide(len, now);
        match fate {
            Fate::Deliver { duplicate_at, .. } => {
                self.stats.delivered_packets += 1;
                self.stats.delivered_bytes += len as u64;
                if duplicate_at.is_some() {
                    self.stats.duplicated_packets += 1;
                }
            }
            Fate::Drop(cause) => self.stats.count_drop(cause),
        }
        fate
    }

    fn decide(&mut self, len: usize, now: Instant) -> Fate {
        let c = &self.config;
        if c.partitioned {
            return Fate::Drop(DropCause::Partition);
        }
        if c.mtu.is_some_and(|mtu| len > mtu) {
            return Fate::Drop(DropCause::Mtu);
        }
        if let Some(burst) = c.burst {
            let flip = if self.in_bad_state {
                burst.p_bad_to_good
            } else {
                burst.p_good_to_bad
            };
            if self.rng.random::<f64>() < flip {
                self.in_bad_state = !self.in_bad_state;
            }
            let loss = if self.in_bad_state {
                burst.loss_in_bad
            } else {
                burst.loss_in_good
            };
            if self.rng.random::<f64>() < loss {
                return Fate::Drop(DropCause::BurstLoss);
            }
        }
        if c.loss > 0.0 && self.rng.random::<f64>() < c.loss {
            return Fate::Drop(DropCause::Loss);
        }
        let depart = match self.depart_time(len, now) {
            Some(t) => t,
            None => return Fate::Drop(DropCause::QueueFull),
        };
        let at = depart + self.config.latency + self.jitter();
        let c = &self.config;
        let at = if c.reorder > 0.0 && self.rng.random::<f64>() < c.reorder {
            self.stats.reordered_packets += 1;
            at + c.reorder_gap
        } else {
            let at = self.last_delivery.map_or(at, |last| at.max(last));
            self.last_delivery = Some(at);
            at
        };
        let duplicate_at = (self.config.duplicate > 0.0
            && self.rng.random::<f64>() < self.config.duplicate)
            .then_some(at);
        Fate::Deliver { at, duplicate_at }
    }

    /// Turns a delivery this link decided into a queue-full drop: the relay
    /// holding it has no room left for delayed datagrams.
    pub fn overflowed(&mut self, len: usize) {
        self.stats.delivered_packets = self.stats.delivered_packets.saturating_sub(1);
        self.stats.delivered_bytes = self.stats.delivered_bytes.saturating_sub(len as u64);
        self.stats.dropped_queue_full += 1;
    }

    /// Admission for a byte stream (the TCP relay): latency, jitter and
    /// bandwidth apply, never loss, duplication, reordering or tail drop
    /// (TCP would retransmit; the relay applies backpressure instead).
    /// `None` while partitioned.
    pub fn admit_stream(&mut self, len: usize, now: Instant) -> Option<Instant> {
        if self.config.partitioned {
            self.stats.count_drop(DropCause::Partition);
            return None;
        }
        let depart = match self.config.rate_bps {
            Some(rate) => {
                let start = self.queue_free_at.map_or(now, |t| t.max(now));
                let free = start + transmit_time(len, rate);
                self.queue_free_at = Some(free);
                free
            }
            None => now,
        };
        let at = depart + self.config.latency + self.jitter();
        let at = self.last_delivery.map_or(at, |last| at.max(last));
        self.last_delivery = Some(at);
        self.stats.delivered_packets += 1;
        self.stats.delivered_bytes += len as u64;
        Some(at)
    }

    fn jitter(&mut self) -> Duration {
        let j = self.config.jitter;
        if j.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.rng.random_range(0..=j.as_nanos() as u64))
        }
    }

    /// When a packet leaves the bandwidth limiter, or `None` if the queue
    /// in front of it is full.
    fn depart_time(&mut self, len: usize, now: Instant) -> Option<Instant> {
        let Some(rate) = self.config.rate_bps else {
            return Some(now);
        };
        let start = self.queue_free_at.map_or(now, |t| t.max(now));
        let backlog_bytes = (start - now).as_secs_f64() * rate as f64 / 8.0;
        if backlog_bytes + len as f64 > self.config.queue_bytes as f64 {
            return None;
        }
        let free = start + transmit_time(len, rate);
        self.queue_free_at = Some(free);
        Some(free)
    }
}

fn transmit_time(len: usize, rate_bps: u64) -> Duration {
    Duration::from_secs_f64(len as f64 * 8.0 / rate_bps as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn link(config: LinkConfig) -> Link {
        Link::new(config, 7)
    }

    #[test]
    fn never_delivers_before_the_latency() {
        let mut l = link(LinkConfig {
            latency: ms(40),
            jitter: ms(10),
            ..Default::default()
        });
        let start = Instant::now();
        let mut last = start;
        for i in 0..10_000u64 {
            let now = start + Duration::from_micros(i * 100);
            match l.admit(1200, now) {
                Fate::Deliver { at, .. } => {
                    assert!(at >= now + ms(40), "packet {i} early");
                    assert!(at <= now + ms(50), "packet {i} beyond latency + jitter");
                    assert!(at >= last, "packet {i} reordered without reorder set");
                    last = at;
                }
                Fate::Drop(c) => panic!("dropped {c:?}"),
            }
        }
    }

    #[test]
    fn random_loss_stays_within_statistical_bounds() {
        for (seed, loss) in [(1u64, 0.01), (2, 0.05), (3, 0.2)] {
            let mut l = Link::new(
                LinkConfig {
                    loss,
                    ..Default::default()
                },
                seed,
            );
            let now = Instant::now();
            let n = 10_000.0;
            let lost = (0..10_000)
                .filter(|_| matches!(l.admit(100, now), Fate::Drop(DropCause::Loss)))
                .count() as f64;
            // Binomial: mean n*p, standard deviation sqrt(n*p*(1-p)); allow 5 sigma.
            let sigma = (n * loss * (1.0 - loss)).sqrt();
            assert!(
                (lost - n * loss).abs() <= 5.0 * sigma,
                "loss {loss}: lost {lost}"
            );
            assert_eq!(l.stats().dropped_loss as f64, lost);
        }
    }

    #[test]
    fn burst_loss_has_the_requested_mean_and_bursts() {
        let mut l = link(LinkConfig {
            burst: Some(BurstLoss::from_mean(0.05, 4.0)),
            ..Default::default()
        });
        let now = Instant::now();
        let fates: Vec<bool> = (0..100_000)
            .map(|_| matches!(l.admit(100, now), Fate::Drop(_)))
            .collect();
        let lost = fates.iter().filter(|d| **d).count() as f64 / fates.len() as f64;
        assert!((0.035..0.065).contains(&lost), "mean loss {lost}");
        let bursts = fates.windows(2).filter(|w| !w[0] && w[1]).count() as f64;
        let mean_burst = fates.iter().filter(|d| **d).count() as f64 / bursts;
        assert!((3.0..5.0).contains(&mean_burst), "mean burst {mean_burst}");
    }

    #[test]
    fn partition_drops_everything_and_heal_restores() {
        let mut l = link(LinkConfig::default());
        let now = Instant::now();
        let mut cfg = l.config().clone();
        cfg.partitioned = true;
        l.set_config(cfg.clone());
        assert!((0..1000).all(|_| l.admit(100, now) == Fate::Drop(DropCause::Partition)));
        cfg.partitioned = false;
        l.set_config(cfg);
        assert!((0..1000).all(|_| matches!(l.admit(100, now), Fate::Deliver { .. })));
        assert_eq!(l.stats().dropped_partition, 1000);
        assert_eq!(l.stats().delivered_packets, 1000);
    }

    #[test]
    fn same_seed_same_fates() {
        let cfg = LinkConfig {
            latency: ms(5),
            jitter: ms(3),
            loss: 0.1,
            burst: Some(BurstLoss::from_mean(0.02, 3.0)),
            duplicate: 0.05,
            reorder: 0.05,
            rate_bps: Some(10_000_000),
            queue_bytes: 20_000,
            ..Default::default()
        };
        let start = Instant::now();
        let run = |seed| {
            let mut l = Link::new(cfg.clone(), seed);
            (0..5000u64)
                .map(|i| {
                    l.admit(
                        200 + (i as usize % 1000),
                        start + Duration::from_micros(i * 50),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn bandwidth_paces_and_tail_drops() {
        // 8 Mbit/s: a 1000-byte packet takes 1 ms to send.
        let mut l = link(LinkConfig {
            rate_bps: Some(8_000_000),
            queue_bytes: 10_000,
            ..Default::default()
        });
        let now = Instant::now();
        let fates: Vec<Fate> = (0..20).map(|_| l.admit(1000, now)).collect();
        for (i, fate) in fates.iter().take(10).enumerate() {
            assert_eq!(
                *fate,
                Fate::Deliver {
                    at: now + ms(i as u64 + 1),
                    duplicate_at: None
                }
            );
        }
        assert!(
            fates[10..]
                .iter()
                .all(|f| *f == Fate::Drop(DropCause::QueueFull))
        );
        // Once the queue drains, packets flow again.
        assert!(matches!(l.admit(1000, now + ms(10)), Fate::Deliver { .. }));
    }

    #[test]
    fn mtu_duplicate_and_reorder() {
        let mut l = link(LinkConfig {
            mtu: Some(1200),
            ..Default::default()
        });
        let now = Instant::now();
        assert_eq!(l.admit(1201, now), Fate::Drop(DropCause::Mtu));
        assert!(matches!(l.admit(1200, now), Fate::Deliver { .. }));

        let mut l = link(LinkConfig {
            duplicate: 1.0,
            ..Default::default()
        });
        assert!(matches!(
            l.admit(10, now),
            Fate::Deliver {
                duplicate_at: Some(_),
                ..
            }
        ));

        let mut l = link(LinkConfig {
            latency: ms(10),
            reorder: 0.5,
            reorder_gap: ms(5),
            ..Default::default()
        });
        let ats: Vec<Instant> = (0..1000u64)
            .filter_map(
                |i| match l.admit(10, now + Duration::from_micros(i * 100)) {
                    Fate::Deliver { at, .. } => Some(at),
                    Fate::Drop(_) => None,
                },
            )
            .collect();
        assert!(
            ats.windows(2).any(|w| w[1] < w[0]),
            "no packet was overtaken"
        );
        assert!(
            ats.iter()
                .enumerate()
                .all(|(i, at)| *at >= now + Duration::from_micros(i as u64 * 100) + ms(10))
        );
    }

    #[test]
    fn asymmetric_links_are_independent() {
        let now = Instant::now();
        let mut a_to_b = link(LinkConfig {
            partitioned: true,
            ..Default::default()
        });
        let mut b_to_a = link(LinkConfig::default());
        assert_eq!(a_to_b.admit(10, now), Fate::Drop(DropCause::Partition));
        assert!(matches!(b_to_a.admit(10, now), Fate::Deliver { .. }));
    }

    #[test]
    fn stream_admission_never_drops_but_waits_out_partitions() {
        let mut l = link(LinkConfig {
            latency: ms(20),
            loss: 1.0,
            rate_bps: Some(8_000_000),
            queue_bytes: 1,
            ..Default::default()
        });
        let now = Instant::now();
        assert_eq!(l.admit_stream(1000, now), Some(now + ms(21)));
        assert_eq!(l.admit_stream(1000, now), Some(now + ms(22)));
        let mut cfg = l.config().clone();
        cfg.partitioned = true;
        l.set_config(cfg);
        assert_eq!(l.admit_stream(1000, now), None);
    }
}
