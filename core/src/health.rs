//! Tunnel health from probes, sans-IO: the caller sends a PING when
//! [`ProbeTracker::poll_probe`] says so, feeds PONGs and timeouts back, and
//! reads state changes from [`ProbeTracker::poll_event`]. No clock is read:
//! `now` is always an argument, so tests script time.
//!
//! States have hysteresis: Down after `down_after` consecutive missed probes
//! (a late answer breaks the run), Up again after `up_after` consecutive
//! answered ones; Degraded while Up
//! but losing more than `degraded_loss` of the recent window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Probe settings (`[health]` in the gateway config).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    pub interval: Duration,
    pub down_after: u32,
    pub up_after: u32,
    /// Loss over the recent window above which an Up tunnel is Degraded.
    pub degraded_loss: f64,
    /// How many recent probes the loss ratio is taken over.
    pub window: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            interval: Duration::from_millis(250),
            down_after: 3,
            up_after: 2,
            degraded_loss: 0.2,
            window: 20,
        }
    }
}

/// What probes say about a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TunnelHealth {
    Up,
    Degraded,
    Down,
}

impl TunnelHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelHealth::Up => "up",
            TunnelHealth::Degraded => "degraded",
            TunnelHealth::Down => "down",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthEvent {
    Changed {
        from: TunnelHealth,
        to: TunnelHealth,
    },
}

/// Probe bookkeeping and the health state machine of one tunnel.
#[derive(Debug)]
pub struct ProbeTracker {
    config: ProbeConfig,
    state: TunnelHealth,
    next_seq: u64,
    next_probe_at: Instant,
    /// Probes sent and not yet answered or given up on, oldest first.
    outstanding: VecDeque<(u64, Instant)>,
    consecutive_missed: u32,
    consecutive_answered: u32,
    /// Probes counted as missed, kept so a late PONG still teaches the RTT.
    late: VecDeque<(u64, Instant)>,
    /// Recent outcomes, true = answered.
    recent: VecDeque<bool>,
    srtt: Option<Duration>,
    events: VecDeque<HealthEvent>,
}

impl ProbeTracker {
    /// A tracker for a tunnel that just came up (its handshake succeeded),
    /// seeded with the handshake's RTT when known, so that long paths are
    /// not judged by the probe interval alone.
    pub fn new(config: ProbeConfig, now: Instant, initial_rtt: Option<Duration>) -> Self {
        ProbeTracker {
            next_probe_at: now,
            config,
            state: TunnelHealth::Up,
            next_seq: 0,
            outstanding: VecDeque::new(),
            consecutive_missed: 0,
            consecutive_answered: 0,
            late: VecDeque::new(),
            recent: VecDeque::new(),
            srtt: initial_rtt,
            events: VecDeque::new(),
        }
    }

    pub fn state(&self) -> TunnelHealth {
        self.state
    }

    /// Probes missed in a row: one is not yet Down, but new streams have
    /// reason to prefer another path meanwhile.
    pub fn consecutive_missed(&self) -> u32 {
        self.consecutive_missed
    }

    /// Smoothed RTT (EWMA, 1/8 gain), once a PONG has arrived.
    pub fn rtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Share of recent probes that went unanswered.
    pub fn loss(&self) -> f64 {
        if self.recent.is_empty() {
            return 0.0;
        }
        self.recent.iter().filter(|ok| !**ok).count() as f64 / self.recent.len() as f64
    }

    /// How long a probe may go unanswered before it counts as missed: one
    /// interval, or twice the RTT plus a margin on long paths.
    pub fn probe_timeout(&self) -> Duration {
        let rtt_based = self
            .srtt
            .map_or(Duration::ZERO, |r| r * 2 + Duration::from_millis(50));
        self.config.interval.max(rtt_based)
    }

    /// The sequence number of a PING to send now, if one is due.
    pub fn poll_probe(&mut self, now: Instant) -> Option<u64> {
        if now < self.next_probe_at {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outstanding.push_back((seq, now));
        self.next_probe_at = now + self.config.interval;
        Some(seq)
    }

    /// A PONG for `seq` arrived; returns the RTT it measured, if it
    /// answered a probe still waiting (a late one only updates the RTT).
    pub fn handle_pong(&mut self, seq: u64, now: Instant) -> Option<Duration> {
        if let Some(i) = self.outstanding.iter().position(|(s, _)| *s == seq) {
            let (_, sent) = self.outstanding.remove(i).expect("index from position");
            let sample = now.saturating_duration_since(sent);
            self.sample_rtt(sample);
            self.record(true);
            Some(sample)
        } else if let Some(i) = self.late.iter().position(|(s, _)| *s == seq) {
            // Already counted missed (it stays lost in the loss ratio), but
            // it says how long the path is, and that it carries answers:
            // misses on either side of a late answer are not "in a row".
            // Busy peers answer late; a cut path does not answer at all.
            let (_, sent) = self.late.remove(i).expect("index from position");
            self.sample_rtt(now.saturating_duration_since(sent));
            self.consecutive_missed = 0;
            None
        } else {
            None
        }
    }

    fn sample_rtt(&mut self, sample: Duration) {
        self.srtt = Some(match self.srtt {
            None => sample,
            Some(s) => (s * 7 + sample) / 8,
        });
    }

    /// Counts every probe older than the timeout as missed; returns how
    /// many were.
    pub fn handle_timeout(&mut self, now: Instant) -> u32 {
        let timeout = self.probe_timeout();
        let mut missed = 0;
        while let Some(&(_, sent)) = self.outstanding.front() {
            if now.saturating_duration_since(sent) < timeout {
                break;
            }
            if let Some(missed) = self.outstanding.pop_front() {
                self.late.push_back(missed);
                while self.late.len() > self.config.window {
                    self.late.pop_front();
                }
            }
            self.record(false);
            missed += 1;
        }
        missed
    }

    /// The connection closed: Down at once.
    pub fn handle_closed(&mut self) {
        self.outstanding.clear();
        self.consecutive_answered = 0;
        self.set(TunnelHealth::Down);
    }

    /// When the caller must next call `poll_probe` / `handle_timeout`.
    pub fn poll_timeout(&self) -> Instant {
        let expiry = self
            .outstanding
            .front()
            .map(|&(_, sent)| sent + self.probe_timeout());
        match expiry {
            Some(e) => e.min(self.next_probe_at),
            None => self.next_probe_at,
        }
    }

    pub fn poll_event(&mut self) -> Option<HealthEvent> {
        self.events.pop_front()
    }

    fn record(&mut self, answered: bool) {
        self.recent.push_back(answered);
        while self.recent.len() > self.config.window {
            self.recent.pop_front();
        }
        if answered {
            self.consecutive_answered += 1;
            self.consecutive_missed = 0;
        } else {
            self.consecutive_missed += 1;
            self.consecutive_answered = 0;
        }
        let next = match self.state {
            _ if self.consecutive_missed >= self.config.down_after => TunnelHealth::Down,
            TunnelHealth::Down if self.consecutive_answered >= self.config.up_after => {
                self.up_or_degraded()
            }
            TunnelHealth::Down => TunnelHealth::Down,
            _ => self.up_or_degraded(),
        };
        self.set(next);
    }

    fn up_or_degraded(&self) -> TunnelHealth {
        if self.loss() > self.config.degraded_loss {
            TunnelHealth::Degraded
        } else {
            TunnelHealth::Up
        }
    }

    fn set(&mut self, to: TunnelHealth) {
        if to != self.state {
            self.events.push_back(HealthEvent::Changed {
                from: self.state,
                to,
            });
            self.state = to;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Drives a tracker over virtual time: every probe is answered after
    /// `rtt` while `link_up(t)` holds for its send time, else lost.
    struct Sim {
        t: ProbeTracker,
        now: Instant,
        start: Instant,
        in_flight: Vec<(u64, Instant)>,
        changes: Vec<(Duration, TunnelHealth)>,
    }

    impl Sim {
        fn new() -> Self {
            let start = Instant::now();
            Sim {
                t: ProbeTracker::new(ProbeConfig::default(), start, None),
                now: start,
                start,
                in_flight: Vec::new(),
                changes: Vec::new(),
            }
        }

        fn run(&mut self, until: Duration, rtt: Duration, link_up: impl Fn(Duration) -> bool) {
            self.run_by(until, |t| link_up(t).then_some(rtt));
        }

        /// As `run`, with the answer's delay (or its loss, `None`) chosen
        /// by the probe's send time.
        fn run_by(&mut self, until: Duration, answer: impl Fn(Duration) -> Option<Duration>) {
            let end = self.start + until;
            while self.now < end {
                let pong_at = self.in_flight.iter().map(|p| p.1).min();
                let next = pong_at
                    .map_or(self.t.poll_timeout(), |p| p.min(self.t.poll_timeout()))
                    .min(end);
                self.now = next.max(self.now);
                let due: Vec<u64> = self
                    .in_flight
                    .iter()
                    .filter(|p| p.1 <= self.now)
                    .map(|p| p.0)
                    .collect();
                self.in_flight.retain(|p| p.1 > self.now);
                for seq in due {
                    let _ = self.t.handle_pong(seq, self.now);
                }
                self.t.handle_timeout(self.now);
                while let Some(seq) = self.t.poll_probe(self.now) {
                    if let Some(rtt) = answer(self.now - self.start) {
                        self.in_flight.push((seq, self.now + rtt));
                    }
                }
                while let Some(HealthEvent::Changed { to, .. }) = self.t.poll_event() {
                    self.changes.push((self.now - self.start, to));
                }
                if self.now == end {
                    break;
                }
            }
        }
    }

    #[test]
    fn a_cut_is_down_within_a_second_and_back_up_after_two_probes() {
        let mut sim = Sim::new();
        let cut = Duration::from_secs(5);
        let heal = Duration::from_secs(8);
        sim.run(Duration::from_secs(12), 80 * MS, |t| t < cut || t >= heal);
        let down = sim
            .changes
            .iter()
            .find(|c| c.1 == TunnelHealth::Down)
            .expect("never went down")
            .0;
        assert!(
            down > cut && down - cut <= Duration::from_millis(1000),
            "down {:?} after the cut",
            down - cut
        );
        // Usable again two answered probes after healing: Degraded while the
        // loss of the outage is still in the window, then Up.
        let back = sim
            .changes
            .iter()
            .find(|c| c.1 != TunnelHealth::Down && c.0 > down)
            .expect("never came back")
            .0;
        assert!(
            back > heal && back - heal <= Duration::from_millis(750),
            "usable {:?} after healing",
            back - heal
        );
        assert_eq!(sim.t.state(), TunnelHealth::Up);
        let rtt = sim.t.rtt().unwrap();
        assert!(rtt >= 79 * MS && rtt <= 81 * MS, "{rtt:?}");
    }

    #[test]
    fn isolated_losses_do_not_flap_the_state() {
        let mut sim = Sim::new();
        // Every fourth probe lost: never three in a row.
        sim.run(Duration::from_secs(20), 20 * MS, |t| {
            (t.as_millis() / 250) % 4 != 3
        });
        assert!(
            sim.changes.iter().all(|c| c.1 != TunnelHealth::Down),
            "{:?}",
            sim.changes
        );
        // 25% loss is above the 20% degraded threshold.
        assert_eq!(sim.t.state(), TunnelHealth::Degraded);
        assert!((sim.t.loss() - 0.25).abs() < 0.06, "{}", sim.t.loss());
    }

    #[test]
    fn a_flapping_link_needs_two_good_probes_to_count_as_up() {
        let mut sim = Sim::new();
        // Down for 1 s, then up for one probe, then down again.
        sim.run(Duration::from_secs(6), 10 * MS, |t| {
            let ms = t.as_millis();
            !(1000..2000).contains(&ms) && !(2100..4000).contains(&ms)
        });
        assert!(
            sim.changes
                .iter()
                .skip_while(|c| c.1 != TunnelHealth::Down)
                .skip(1)
                .all(|c| c.0 >= Duration::from_millis(4000)),
            "one answered probe brought it back: {:?}",
            sim.changes
        );
        assert_ne!(sim.t.state(), TunnelHealth::Down);
    }

    #[test]
    fn slow_links_are_not_mistaken_for_dead_ones() {
        let mut sim = Sim::new();
        // 400 ms RTT, longer than the probe interval, known from the handshake.
        sim.t = ProbeTracker::new(ProbeConfig::default(), sim.start, Some(400 * MS));
        sim.run(Duration::from_secs(10), 400 * MS, |_| true);
        assert!(
            sim.changes.iter().all(|c| c.1 == TunnelHealth::Up),
            "{:?}",
            sim.changes
        );
        assert!(sim.t.probe_timeout() >= 800 * MS);
    }

    #[test]
    fn a_second_of_late_answers_is_not_a_cut() {
        // Both gateways busy for a second (thousands of streams opening at
        // once): every probe is answered, but 600 ms late.
        let mut sim = Sim::new();
        sim.run_by(Duration::from_secs(10), |t| {
            Some(if (5000..6000).contains(&t.as_millis()) {
                600 * MS
            } else {
                10 * MS
            })
        });
        assert!(
            sim.changes.iter().all(|c| c.1 != TunnelHealth::Down),
            "late answers called it Down: {:?}",
            sim.changes
        );
        // They were still late: counted lost all the same.
        assert!(sim.t.loss() > 0.0);
    }

    #[test]
    fn late_pongs_teach_the_rtt_without_a_seed() {
        let mut sim = Sim::new();
        sim.run(Duration::from_secs(10), 400 * MS, |_| true);
        // It may call the first probes missed, but learns the path and
        // settles: the last second has no state change and it is not Down.
        assert_ne!(sim.t.state(), TunnelHealth::Down, "{:?}", sim.changes);
        assert!(sim.t.probe_timeout() >= 800 * MS);
    }

    #[test]
    fn asymmetric_loss_shows_as_missed_probes() {
        // A probe whose PONG is lost is as missed as one whose PING is.
        let mut sim = Sim::new();
        sim.run(Duration::from_secs(3), 30 * MS, |t| {
            t < Duration::from_secs(1)
        });
        assert_eq!(sim.t.state(), TunnelHealth::Down);
    }

    #[test]
    fn a_closed_connection_is_down_at_once() {
        let now = Instant::now();
        let mut t = ProbeTracker::new(ProbeConfig::default(), now, None);
        t.handle_closed();
        assert_eq!(t.state(), TunnelHealth::Down);
        assert_eq!(
            t.poll_event(),
            Some(HealthEvent::Changed {
                from: TunnelHealth::Up,
                to: TunnelHealth::Down
            })
        );
    }
}
