//! Who gets handshake work, sans-IO. Anyone who can reach a gateway's UDP
//! port can start a QUIC handshake, and each one costs the gateway a key
//! exchange and a certificate check before it knows the peer is a
//! stranger. While few handshakes are in flight every one is taken at
//! once; above `retry_above` a new one must first prove it owns its source
//! address with a QUIC Retry (one extra round trip, nothing computed for a
//! spoofed source); above `max_in_flight` new ones are refused outright
//! until the backlog drains. Peers that already hold tunnels are not
//! affected: their connections are established.
//!
//! A Retry costs a flood from real addresses nothing, so a source address
//! whose handshakes failed `strikes` times within `strike_window` (a
//! certificate nobody trusts, again and again) is refused without any
//! handshake work for `penalty`. A gateway of the mesh fails a handshake
//! only when misconfigured, and then it is refused anyway.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// When handshakes must validate their address, and when they are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateConfig {
    /// Handshakes in flight above which a new one from an address not yet
    /// validated gets a Retry. 0: always.
    pub retry_above: usize,
    /// Handshakes in flight at which new ones are refused.
    pub max_in_flight: usize,
    /// Failed handshakes from one address within `strike_window` after
    /// which it is refused for `penalty`; 0: never.
    pub strikes: u32,
    pub strike_window: Duration,
    pub penalty: Duration,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            retry_above: 16,
            max_in_flight: 256,
            strikes: 20,
            strike_window: Duration::from_secs(10),
            penalty: Duration::from_secs(10),
        }
    }
}

/// Addresses tracked at most; beyond it new ones are not (the gate then
/// fails open for them rather than grow without bound).
const MAX_TRACKED: usize = 16_384;

#[derive(Debug, Clone, Copy)]
struct Strikes {
    count: u32,
    first: Instant,
    /// Refused until then.
    until: Option<Instant>,
}

/// What to do with a new handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Do the handshake.
    Accept,
    /// Ask the client to prove its address first (QUIC Retry).
    Retry,
    /// Refuse it: too many handshakes in flight.
    RefuseBusy,
    /// Refuse it: its address failed too many handshakes lately.
    RefuseStrikes,
}

impl Admit {
    /// The gate's decision as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Admit::Accept => "accept",
            Admit::Retry => "retry",
            Admit::RefuseBusy | Admit::RefuseStrikes => "refuse",
        }
    }
}

/// Counts handshakes in flight and failures by address, and decides on
/// each new handshake.
#[derive(Debug, Default)]
pub struct HandshakeGate {
    config: GateConfig,
    in_flight: usize,
    strikes: HashMap<IpAddr, Strikes>,
}

impl HandshakeGate {
    pub fn new(config: GateConfig) -> Self {
        HandshakeGate {
            config,
            in_flight: 0,
            strikes: HashMap::new(),
        }
    }

    /// A new handshake arrived from `source`; `validated` when its address
    /// was proven (it answered a Retry), `may_retry` when a Retry can
    /// still be sent. An accepted handshake counts as in flight until
    /// [`HandshakeGate::handle_done`].
    pub fn handle_incoming(
        &mut self,
        source: IpAddr,
        validated: bool,
        may_retry: bool,
        now: Instant,
    ) -> Admit {
        if let Some(s) = self.strikes.get_mut(&source)
            && let Some(until) = s.until
        {
            if now < until {
                return Admit::RefuseStrikes;
            }
            self.strikes.remove(&source);
        }
        if self.in_flight >= self.config.max_in_flight {
            return Admit::RefuseBusy;
        }
        if !validated && may_retry && self.in_flight >= self.config.retry_above {
            return Admit::Retry;
        }
        self.in_flight += 1;
        Admit::Accept
    }

    /// An accepted handshake from `source` finished; `failed` when it did
    /// not become a connection (a refused certificate, a timeout).
    pub fn handle_done(&mut self, source: IpAddr, failed: bool, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if !failed || self.config.strikes == 0 {
            return;
        }
        let (window, penalty, strikes) = (
            self.config.strike_window,
            self.config.penalty,
            self.config.strikes,
        );
        if self.strikes.len() >= MAX_TRACKED && !self.strikes.contains_key(&source) {
            self.strikes.retain(|_, s| match s.until {
                Some(until) => now < until,
                None => now.saturating_duration_since(s.first) < window,
            });
            if self.strikes.len() >= MAX_TRACKED {
                return;
            }
        }
        let s = self.strikes.entry(source).or_insert(Strikes {
            count: 0,
            first: now,
            until: None,
        });
        if now.saturating_duration_since(s.first) >= window {
            *s = Strikes {
                count: 0,
                first: now,
                until: None,
            };
        }
        s.count += 1;
        if s.count >= strikes {
            s.until = Some(now + penalty);
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn config(retry_above: usize, max_in_flight: usize) -> GateConfig {
        GateConfig {
            retry_above,
            max_in_flight,
            ..GateConfig::default()
        }
    }

    #[test]
    fn few_handshakes_go_straight_through() {
        let now = Instant::now();
        let mut gate = HandshakeGate::new(config(2, 4));
        assert_eq!(gate.handle_incoming(A, false, true, now), Admit::Accept);
        assert_eq!(gate.handle_incoming(A, false, true, now), Admit::Accept);
        assert_eq!(gate.in_flight(), 2);
    }

    #[test]
    fn a_backlog_makes_strangers_prove_their_address_then_refuses() {
        let now = Instant::now();
        let mut gate = HandshakeGate::new(config(2, 4));
        gate.handle_incoming(A, false, true, now);
        gate.handle_incoming(A, false, true, now);
        assert_eq!(gate.handle_incoming(A, false, true, now), Admit::Retry);
        // A client that answered the Retry is taken.
        assert_eq!(gate.handle_incoming(A, true, false, now), Admit::Accept);
        // One that cannot be sent another Retry is taken too: refusing it
        // would only make it start over.
        assert_eq!(gate.handle_incoming(A, false, false, now), Admit::Accept);
        assert_eq!(gate.in_flight(), 4);
        assert_eq!(gate.handle_incoming(A, true, false, now), Admit::RefuseBusy);
        for _ in 0..3 {
            gate.handle_done(A, false, now);
        }
        assert_eq!(gate.handle_incoming(A, false, true, now), Admit::Accept);
    }

    #[test]
    fn retry_above_zero_always_validates() {
        let now = Instant::now();
        let mut gate = HandshakeGate::new(config(0, 4));
        assert_eq!(gate.handle_incoming(A, false, true, now), Admit::Retry);
        assert_eq!(gate.handle_incoming(A, true, false, now), Admit::Accept);
    }

    #[test]
    fn an_address_that_keeps_failing_is_refused_for_a_while() {
        let t0 = Instant::now();
        let mut gate = HandshakeGate::new(GateConfig {
            strikes: 3,
            ..config(16, 256)
        });
        for i in 0..3 {
            let now = t0 + Duration::from_millis(i);
            assert_eq!(gate.handle_incoming(A, false, true, now), Admit::Accept);
            gate.handle_done(A, true, now);
        }
        let soon = t0 + Duration::from_secs(1);
        assert_eq!(
            gate.handle_incoming(A, false, true, soon),
            Admit::RefuseStrikes
        );
        // Others are not affected, nor is a handshake that succeeds.
        assert_eq!(gate.handle_incoming(B, false, true, soon), Admit::Accept);
        gate.handle_done(B, false, soon);
        assert_eq!(gate.in_flight(), 0);
        // After the penalty it is heard again.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(gate.handle_incoming(A, false, true, later), Admit::Accept);
    }

    #[test]
    fn failures_spread_out_are_not_strikes() {
        let t0 = Instant::now();
        let mut gate = HandshakeGate::new(GateConfig {
            strikes: 3,
            ..config(16, 256)
        });
        for i in 0..10 {
            let now = t0 + Duration::from_secs(6 * i);
            assert_eq!(gate.handle_incoming(A, false, true, now), Admit::Accept);
            gate.handle_done(A, true, now);
        }
    }
}
