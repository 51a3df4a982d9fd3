//! The routing plane, sans-IO: where each new stream goes, decided in one
//! place. It holds the peers (gateways) and their connections (several per
//! peer may exist), what each advertises and its health, a circuit breaker
//! per (peer, service), a retry budget per service and who is draining.
//!
//! Inputs are `handle_*(…, now)` calls from the drivers (connection up and
//! closed, HELLO/UPDATE, GOAWAY, probe health, stream outcome). Outputs are
//! [`Plane::poll_event`] (typed, for metrics, logs and the event log),
//! [`Plane::poll_action`] (connections to close: duplicate and dead ones)
//! and [`Plane::poll_timeout`]. [`Plane::plan`] returns the choice with
//! every candidate's verdict; `strait why` prints exactly that. No I/O, no
//! clock, no randomness of its own: the caller passes `now` and the coins.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::attempt::AttemptState;
use crate::breaker::{BreakerConfig, BreakerState, BreakerTransition, CircuitBreaker};
use crate::budget::RetryBudget;
use crate::frame::{RelayRoute, ServiceAd};
use crate::health::TunnelHealth;
use crate::routing::{self, Candidate};

/// One connection to a peer gateway, named by the plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Who a peer gateway is, as its certificate and HELLO said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    /// Its SPIFFE ID.
    pub id: String,
    pub name: String,
    pub region: String,
    /// Which gateway of those sharing the SPIFFE ID (one certificate for a
    /// whole region) this is; empty from builds that do not say.
    pub instance: String,
    /// The SPIFFE ID and the instance: what the plane tells peers apart
    /// by. Two gateways with one certificate are two peers.
    pub key: String,
    /// Which of the peer's connections this is: the plane keeps one per
    /// peer and lane, and they share the peer's breakers and `tried`.
    pub lane: u16,
}

impl PeerInfo {
    pub fn new(id: &str, name: &str, region: &str, instance: &str) -> Self {
        PeerInfo {
            id: id.to_owned(),
            name: name.to_owned(),
            region: region.to_owned(),
            instance: instance.to_owned(),
            key: peer_key(id, instance),
            lane: 0,
        }
    }

    /// The same peer on another of its connections.
    pub fn with_lane(mut self, lane: u16) -> Self {
        self.lane = lane;
        self
    }
}

/// How the plane names a peer: its SPIFFE ID, and its instance if it said.
pub fn peer_key(id: &str, instance: &str) -> String {
    if instance.is_empty() {
        id.to_owned()
    } else {
        format!("{id}#{instance}")
    }
}

/// What the probes say about a connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Health {
    pub state: TunnelHealth,
    pub rtt: Option<Duration>,
    pub loss: f64,
    /// Probes missed in a row.
    pub missed: u32,
    /// How long nothing at all arrived on the connection.
    pub quiet: Duration,
}

impl Health {
    fn fresh() -> Self {
        Health {
            state: TunnelHealth::Up,
            rtt: None,
            loss: 0.0,
            missed: 0,
            quiet: Duration::ZERO,
        }
    }
}

/// Settings of the plane.
#[derive(Debug, Clone)]
pub struct PlaneConfig {
    /// This gateway's peer key (SPIFFE ID and instance, see
    /// [`peer_key`]): breaks the tie when both sides dial.
    pub me: String,
    pub own_region: String,
    /// How long a connection that came up (or back) is passed over in
    /// favour of established ones.
    pub hold_down: Duration,
    pub breaker: BreakerConfig,
    /// A superseded connection closes once it carried nothing this long.
    pub drain_idle: Duration,
    /// A Down connection on which nothing arrived this long is closed and
    /// its streams reset: the peer is gone, not slow.
    pub dead_after: Duration,
    /// A peer left without a connection is still shown (excluded, with the
    /// reason) for this long.
    pub forget_after: Duration,
}

impl PlaneConfig {
    pub fn new(me: &str, own_region: &str) -> Self {
        PlaneConfig {
            me: me.to_owned(),
            own_region: own_region.to_owned(),
            hold_down: Duration::from_secs(5),
            breaker: BreakerConfig::default(),
            drain_idle: Duration::from_secs(1),
            dead_after: Duration::from_millis(750),
            forget_after: Duration::from_secs(600),
        }
    }
}

/// Why the plane closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// Another connection to the same peer is kept; this one carried
    /// nothing for a while.
    Duplicate,
    /// A newer connection from the same peer replaced it: the peer
    /// restarted or lost this one.
    Replaced,
    /// Down and silent: its streams are reset now rather than at the idle
    /// timeout.
    Dead,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Duplicate => "duplicate",
            CloseReason::Replaced => "replaced",
            CloseReason::Dead => "dead",
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Close { conn: ConnId, reason: CloseReason },
}

/// What happened, for metrics, logs and the event log.
#[derive(Debug, Clone, PartialEq)]
pub enum PlaneEvent {
    TunnelUp {
        conn: ConnId,
        peer: PeerInfo,
        dialed: bool,
    },
    /// Gone from routing for good (it closed, or was superseded).
    TunnelDown {
        conn: ConnId,
        peer: PeerInfo,
        why: DownReason,
    },
    HealthChanged {
        conn: ConnId,
        peer: PeerInfo,
        from: TunnelHealth,
        to: TunnelHealth,
        loss: f64,
    },
    ServicesChanged {
        conn: ConnId,
        peer: PeerInfo,
        services: usize,
    },
    PeerDraining {
        conn: ConnId,
        peer: PeerInfo,
    },
    CircuitOpened {
        peer: String,
        service: String,
    },
    CircuitClosed {
        peer: String,
        service: String,
    },
    /// New streams of `service` moved to a less preferred tier.
    Failover {
        service: String,
        from: String,
        to: String,
    },
    /// And back to a more preferred one.
    Failback {
        service: String,
        from: String,
        to: String,
    },
}

/// Why a connection left routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownReason {
    Closed,
    Superseded,
    Closing(CloseReason),
}

/// Why a connection cannot take a new stream of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    Closed,
    Superseded,
    Draining,
    NotOffered,
    TargetDown,
    CircuitOpen,
    Tried,
    Down,
}

impl Exclusion {
    pub fn as_str(self) -> &'static str {
        match self {
            Exclusion::Closed => "closed",
            Exclusion::Superseded => "superseded",
            Exclusion::Draining => "draining",
            Exclusion::NotOffered => "not offered",
            Exclusion::TargetDown => "target down",
            Exclusion::CircuitOpen => "circuit open",
            Exclusion::Tried => "already tried",
            Exclusion::Down => "down",
        }
    }
}

/// How good an eligible candidate is, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Up, no missed probe, past its hold-down.
    Settled,
    /// Up, but came up or back within the hold-down.
    HeldDown,
    /// Up with a missed probe, or Degraded.
    Suspect,
}

/// A candidate's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Excluded {
        reason: Exclusion,
    },
    /// `rank` 1 is the best; the choice is made by power of two choices
    /// among the best class and tier, so it may be any of equal rank.
    Ranked {
        rank: usize,
        tier: usize,
        class: Class,
        rtt_us: Option<u64>,
    },
}

/// One connection as a candidate for a service; `conn` is `None` for a
/// peer that advertised the service but has no connection now (lost to a
/// cut or a crash, and redialed by the drivers).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidateRow {
    pub conn: Option<ConnId>,
    /// The peer's SPIFFE ID.
    pub peer: String,
    /// Its peer key (SPIFFE ID and instance): what `tried` lists.
    pub key: String,
    pub name: String,
    pub region: String,
    pub instance: String,
    /// Which of the peer's connections (0 for a local target or a lost peer).
    pub lane: u16,
    /// The import's local target (`name` is its address), not a gateway.
    pub local: bool,
    /// A route through this gateway to a gateway of that region.
    pub relay_to: Option<String>,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Where the next stream of a service goes, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub service: String,
    /// The connection the stream goes to, unless `local`.
    pub chosen: Option<ConnId>,
    /// The import's local target takes the stream.
    pub local: bool,
    /// The chosen gateway is asked to relay the stream to this region (no
    /// direct route works).
    pub relay_to: Option<String>,
    pub candidates: Vec<CandidateRow>,
}

impl Decision {
    pub fn chosen_row(&self) -> Option<&CandidateRow> {
        let chosen = self.chosen?;
        self.candidates
            .iter()
            .find(|c| c.conn == Some(chosen) && c.relay_to == self.relay_to)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    Active,
    /// Another connection to the peer is preferred: no new streams; closes
    /// once idle for `drain_idle`.
    Superseded {
        idle_since: Option<Instant>,
    },
    /// The plane asked for it to close; waiting for the driver to report.
    Closing(CloseReason),
}

/// What failover events and `last_region` call the local target.
pub const LOCAL: &str = "local";

/// An import's target in this gateway's own region, used before any
/// remote one while its health check passes.
#[derive(Debug, Clone)]
struct LocalTarget {
    address: String,
    healthy: bool,
    /// When it became healthy (or was configured): it waits out the
    /// hold-down before taking streams back from remote regions.
    since: Instant,
}

/// A peer whose last connection is gone.
#[derive(Debug, Clone)]
struct LostPeer {
    info: PeerInfo,
    services: Vec<ServiceAd>,
    reason: Exclusion,
    since: Instant,
}

#[derive(Debug, Clone)]
struct Conn {
    peer: PeerInfo,
    dialed: bool,
    state: ConnState,
    health: Health,
    up_since: Instant,
    services: Vec<ServiceAd>,
    /// What the peer would carry on to another region for us.
    relayable: Vec<RelayRoute>,
    draining: bool,
    active: usize,
}

/// A read-only copy of the plane for `/status` and telemetry.
#[derive(Debug, Clone, Serialize)]
pub struct PlaneView {
    pub conns: Vec<ConnView>,
    pub breakers: Vec<BreakerView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnView {
    pub conn: ConnId,
    pub peer: PeerInfo,
    pub dialed: bool,
    /// "active", "superseded" or "closing".
    pub role: &'static str,
    pub state: &'static str,
    pub rtt_us: Option<u64>,
    pub loss: f64,
    pub missed: u32,
    /// How long nothing arrived on it, at the last probe.
    pub quiet_ms: u64,
    pub draining: bool,
    pub active_streams: usize,
    pub services: Vec<ServiceAd>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BreakerView {
    pub peer: String,
    pub service: String,
    pub state: &'static str,
}

/// The routing plane. See the module doc.
#[derive(Debug)]
pub struct Plane {
    config: PlaneConfig,
    conns: BTreeMap<ConnId, Conn>,
    lost: BTreeMap<String, LostPeer>,
    next_conn: u64,
    breakers: HashMap<(String, String), CircuitBreaker>,
    budgets: HashMap<String, RetryBudget>,
    /// Region that served each service's last accepted stream
    /// ([`LOCAL`] for the local target).
    last_region: HashMap<String, String>,
    /// Local targets of imports (`[[import]] local`), by service.
    locals: BTreeMap<String, LocalTarget>,
    events: VecDeque<PlaneEvent>,
    actions: VecDeque<Action>,
}

impl Plane {
    pub fn new(config: PlaneConfig) -> Self {
        Plane {
            config,
            conns: BTreeMap::new(),
            lost: BTreeMap::new(),
            next_conn: 1,
            breakers: HashMap::new(),
            budgets: HashMap::new(),
            last_region: HashMap::new(),
            locals: BTreeMap::new(),
            events: VecDeque::new(),
            actions: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &PlaneConfig {
        &self.config
    }

    /// A connection passed the handshake (certificate and HELLO). Returns
    /// its id; settles duplicates, per peer and lane (connections on
    /// different lanes all carry streams): a newer connection dialed the same way
    /// replaces an older one (the peer restarted or lost it), one that is
    /// Down is replaced whatever its direction, and when both sides dialed
    /// at once the one dialed by the gateway whose ID sorts first is kept
    /// and the other superseded.
    pub fn handle_connection_up(
        &mut self,
        peer: PeerInfo,
        dialed: bool,
        services: Vec<ServiceAd>,
        now: Instant,
    ) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.lost.remove(&peer.key);
        let mut superseded_new = false;
        // A gateway with a working connection (another lane, or one this
        // replaces because its path moved, from the TCP carrier back to UDP
        // say) did not come back, it never left: the new connection takes
        // its standing rather than a hold-down.
        let up_since = self
            .conns
            .values()
            .filter(|c| {
                c.peer.key == peer.key
                    && c.state == ConnState::Active
                    && c.health.state != TunnelHealth::Down
            })
            .map(|c| c.up_since)
            .min()
            .unwrap_or(now)
            .min(now);
        let others: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.peer.key == peer.key && c.peer.lane == peer.lane && c.state == ConnState::Active
            })
            .map(|(id, _)| *id)
            .collect();
        for other in others {
            let (other_dialed, other_down) = {
                let c = &self.conns[&other];
                (c.dialed, c.health.state == TunnelHealth::Down)
            };
            // Both gateways dialed each other and both connections work:
            // both keep the one the lower ID dialed.
            if !other_down && other_dialed != dialed {
                let preferred_dialer_is_me = self.config.me < peer.key;
                if dialed == preferred_dialer_is_me {
                    self.supersede(other, now);
                } else {
                    superseded_new = true;
                }
                continue;
            }
            // The peer dialed again, or we did beside a Down connection: the
            // new one takes new streams, the old one keeps its own and drains
            // (a cut that healed). If the peer restarted instead, the old
            // one hears nothing more and QUIC's idle timeout (`dead_after`)
            // ends it and its streams.
            self.supersede(other, now);
        }
        self.conns.insert(
            id,
            Conn {
                peer: peer.clone(),
                dialed,
                state: if superseded_new {
                    ConnState::Superseded {
                        idle_since: Some(now),
                    }
                } else {
                    ConnState::Active
                },
                health: Health::fresh(),
                up_since,
                services,
                relayable: Vec::new(),
                draining: false,
                active: 0,
            },
        );
        if !superseded_new {
            self.events.push_back(PlaneEvent::TunnelUp {
                conn: id,
                peer,
                dialed,
            });
        }
        id
    }

    fn supersede(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.state != ConnState::Active {
            return;
        }
        // One that carries nothing drains from now.
        c.state = ConnState::Superseded {
            idle_since: (c.active == 0).then_some(now),
        };
        let peer = c.peer.clone();
        self.events.push_back(PlaneEvent::TunnelDown {
            conn,
            peer,
            why: DownReason::Superseded,
        });
    }

    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if matches!(c.state, ConnState::Closing(_)) {
            return;
        }
        let was_active = c.state == ConnState::Active;
        c.state = ConnState::Closing(reason);
        if was_active {
            let peer = c.peer.clone();
            self.events.push_back(PlaneEvent::TunnelDown {
                conn,
                peer,
                why: DownReason::Closing(reason),
            });
        }
        self.actions.push_back(Action::Close { conn, reason });
    }

    /// The connection is gone (closed by either side, or lost).
    pub fn handle_connection_closed(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if !self.conns.values().any(|o| o.peer.key == c.peer.key) {
            let reason = match c.state {
                ConnState::Closing(CloseReason::Dead) => Some(Exclusion::Down),
                ConnState::Closing(_) | ConnState::Superseded { .. } => None,
                ConnState::Active => Some(Exclusion::Closed),
            };
            if let Some(reason) = reason {
                self.lost.insert(
                    c.peer.key.clone(),
                    LostPeer {
                        info: c.peer.clone(),
                        services: c.services.clone(),
                        reason,
                        since: now,
                    },
                );
            }
        }
        if c.state == ConnState::Active {
            self.events.push_back(PlaneEvent::TunnelDown {
                conn,
                peer: c.peer,
                why: DownReason::Closed,
            });
        }
    }

    /// UPDATE: the peer's exports or their health changed.
    pub fn handle_services(&mut self, conn: ConnId, services: Vec<ServiceAd>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.services = services;
            let event = PlaneEvent::ServicesChanged {
                conn,
                peer: c.peer.clone(),
                services: c.services.len(),
            };
            self.events.push_back(event);
        }
    }

    /// The peer's telemetry said which services it can relay, and to
    /// which region.
    pub fn handle_relayable(&mut self, conn: ConnId, routes: Vec<RelayRoute>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.relayable = routes;
        }
    }

    /// GOAWAY: no new streams to this peer from now on.
    pub fn handle_goaway(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn)
            && !c.draining
        {
            c.draining = true;
            let event = PlaneEvent::PeerDraining {
                conn,
                peer: c.peer.clone(),
            };
            self.events.push_back(event);
        }
    }

    /// The probes' latest verdict on a connection.
    pub fn handle_health(&mut self, conn: ConnId, health: Health, now: Instant) {
        let dead_after = self.config.dead_after;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let from = c.health.state;
        if from == TunnelHealth::Down && health.state != TunnelHealth::Down {
            c.up_since = now;
        }
        c.health = health;
        if from != health.state {
            let event = PlaneEvent::HealthChanged {
                conn,
                peer: c.peer.clone(),
                from,
                to: health.state,
                loss: health.loss,
            };
            self.events.push_back(event);
        }
        if health.state == TunnelHealth::Down && health.quiet >= dead_after {
            self.close(conn, CloseReason::Dead);
        }
    }

    /// A stream (either direction) started on `conn`.
    pub fn handle_stream_opened(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.active += 1;
            if let ConnState::Superseded { idle_since } = &mut c.state {
                *idle_since = None;
            }
        }
    }

    /// A stream on `conn` ended.
    pub fn handle_stream_closed(&mut self, conn: ConnId, now: Instant) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.active = c.active.saturating_sub(1);
            if c.active == 0
                && let ConnState::Superseded { idle_since } = &mut c.state
            {
                *idle_since = Some(now);
            }
        }
    }

    /// How an attempt of `service` on `conn` ended: feeds the breaker of
    /// (peer, service) and, for an accepted stream, failover accounting.
    pub fn handle_attempt(
        &mut self,
        conn: ConnId,
        service: &str,
        prefer: &[String],
        outcome: AttemptState,
        now: Instant,
    ) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let (peer, region) = (c.peer.key.clone(), c.peer.region.clone());
        let breaker = self
            .breakers
            .entry((peer.clone(), service.to_owned()))
            .or_insert_with(|| CircuitBreaker::new(self.config.breaker.clone()));
        let transition = match outcome {
            AttemptState::Accepted => breaker.record_success(),
            AttemptState::Opening | AttemptState::Sent => return,
            AttemptState::Refused(_) | AttemptState::Ambiguous(_) => breaker.record_failure(now),
        };
        match transition {
            BreakerTransition::Opened => self.events.push_back(PlaneEvent::CircuitOpened {
                peer,
                service: service.to_owned(),
            }),
            BreakerTransition::Closed => self.events.push_back(PlaneEvent::CircuitClosed {
                peer,
                service: service.to_owned(),
            }),
            BreakerTransition::None => {}
        }
        if outcome == AttemptState::Accepted {
            self.served_by(service, prefer, region);
        }
    }

    /// A stream of `service` was accepted in `region` ([`LOCAL`] for the
    /// local target): a failover or failback when that changed.
    fn served_by(&mut self, service: &str, prefer: &[String], region: String) {
        let own = &self.config.own_region;
        let last = self.last_region.insert(service.to_owned(), region.clone());
        if let Some(from) = last
            && from != region
        {
            let tier = |r: &str| {
                if r == LOCAL {
                    0
                } else {
                    routing::tier(r, prefer, own) + 1
                }
            };
            let event = if tier(&region) > tier(&from) {
                PlaneEvent::Failover {
                    service: service.to_owned(),
                    from,
                    to: region,
                }
            } else {
                PlaneEvent::Failback {
                    service: service.to_owned(),
                    from,
                    to: region,
                }
            };
            self.events.push_back(event);
        }
    }

    /// Declares (or updates) the local target of `service` and whether its
    /// health check passes. A target declared healthy is used at once; one
    /// that comes back waits out the hold-down.
    pub fn handle_local(&mut self, service: &str, address: &str, healthy: bool, now: Instant) {
        let settled = now.checked_sub(self.config.hold_down).unwrap_or(now);
        let entry = self
            .locals
            .entry(service.to_owned())
            .or_insert_with(|| LocalTarget {
                address: address.to_owned(),
                healthy,
                since: settled,
            });
        if healthy && !entry.healthy {
            entry.since = now;
        }
        entry.healthy = healthy;
        entry.address = address.to_owned();
    }

    /// The import of `service` no longer has a local target.
    pub fn forget_local(&mut self, service: &str) {
        self.locals.remove(service);
    }

    /// A stream of `service` went to its local target.
    pub fn handle_local_served(&mut self, service: &str, prefer: &[String]) {
        self.served_by(service, prefer, LOCAL.to_owned());
    }

    /// A client connection of `service` arrived (a first attempt).
    pub fn record_open(&mut self, service: &str, now: Instant) {
        self.budgets
            .entry(service.to_owned())
            .or_default()
            .record_open(now);
    }

    /// Takes a retry of `service` from its budget, if there is one left.
    pub fn try_retry(&mut self, service: &str, now: Instant) -> bool {
        self.budgets
            .entry(service.to_owned())
            .or_default()
            .try_retry(now)
    }

    /// Why `c` cannot take a new stream of `service`: its state first,
    /// then `offer` (what it advertises, for a direct route), then Down,
    /// already tried, or an open circuit.
    fn exclusion(
        &self,
        c: &Conn,
        offer: Option<Exclusion>,
        service: &str,
        tried: &[String],
        now: Instant,
    ) -> Option<Exclusion> {
        match c.state {
            ConnState::Closing(_) => Some(Exclusion::Closed),
            ConnState::Superseded { .. } => Some(Exclusion::Superseded),
            ConnState::Active if c.draining => Some(Exclusion::Draining),
            ConnState::Active if offer.is_some() => offer,
            ConnState::Active if c.health.state == TunnelHealth::Down => Some(Exclusion::Down),
            ConnState::Active if tried.contains(&c.peer.key) => Some(Exclusion::Tried),
            ConnState::Active => self
                .breakers
                .get(&(c.peer.key.clone(), service.to_owned()))
                .filter(|b| !b.would_allow(now))
                .map(|_| Exclusion::CircuitOpen),
        }
    }

    /// An eligible connection as the router sees it, for a route ending in
    /// `region` (its own, or the one it relays to), and its class.
    fn candidate<'a>(&self, c: &'a Conn, region: &'a str, now: Instant) -> (Candidate<'a>, Class) {
        let candidate = Candidate {
            region,
            health: c.health.state,
            rtt: c.health.rtt,
            suspect: c.health.missed > 0,
            active: c.active,
            held: now.saturating_duration_since(c.up_since) < self.config.hold_down,
        };
        let class = match (candidate.health, candidate.suspect, candidate.held) {
            (TunnelHealth::Up, false, false) => Class::Settled,
            (TunnelHealth::Up, false, true) => Class::HeldDown,
            _ => Class::Suspect,
        };
        (candidate, class)
    }

    /// Every connection's verdict for a new stream of `service` and the
    /// one it would take. Read-only: `strait why` calls it as often as it
    /// likes. `tried` are peers (peer keys) this client already tried.
    pub fn plan(
        &self,
        service: &str,
        prefer: &[String],
        tried: &[String],
        now: Instant,
        coins: (u64, u64),
    ) -> Decision {
        let own = &self.config.own_region;
        let local = self.locals.get(service);
        // With a local target, it is tier 0 and the remote tiers follow.
        let base_tier = usize::from(local.is_some());
        let mut rows = Vec::new();
        let mut eligible: Vec<(usize, Candidate<'_>)> = Vec::new();
        for (id, c) in &self.conns {
            let ad = c.services.iter().find(|s| s.name == service);
            let offer = match ad {
                None => Some(Exclusion::NotOffered),
                Some(a) if !a.healthy => Some(Exclusion::TargetDown),
                Some(_) => None,
            };
            let exclusion = self.exclusion(c, offer, service, tried, now);
            let row = CandidateRow {
                conn: Some(*id),
                peer: c.peer.id.clone(),
                key: c.peer.key.clone(),
                name: c.peer.name.clone(),
                region: c.peer.region.clone(),
                instance: c.peer.instance.clone(),
                lane: c.peer.lane,
                local: false,
                relay_to: None,
                verdict: match exclusion {
                    Some(reason) => Verdict::Excluded { reason },
                    None => {
                        let (candidate, class) = self.candidate(c, &c.peer.region, now);
                        eligible.push((rows.len(), candidate));
                        Verdict::Ranked {
                            rank: 0,
                            tier: routing::tier(&c.peer.region, prefer, own) + base_tier,
                            class,
                            rtt_us: c.health.rtt.map(|r| r.as_micros() as u64),
                        }
                    }
                },
            };
            rows.push(row);
        }
        for lost in self.lost.values() {
            let offered = lost.services.iter().any(|s| s.name == service);
            let fresh = now.saturating_duration_since(lost.since) < self.config.forget_after;
            if offered && fresh {
                rows.push(CandidateRow {
                    conn: None,
                    peer: lost.info.id.clone(),
                    key: lost.info.key.clone(),
                    name: lost.info.name.clone(),
                    region: lost.info.region.clone(),
                    instance: lost.info.instance.clone(),
                    lane: 0,
                    local: false,
                    relay_to: None,
                    verdict: Verdict::Excluded {
                        reason: lost.reason,
                    },
                });
            }
        }
        // Lanes of one gateway share its path: they all count with the
        // best RTT any of them measured, so the fewer streams in flight
        // decide between them, not one probe's sample against another's.
        let mut path_rtt: HashMap<&str, Duration> = HashMap::new();
        for (i, c) in &eligible {
            if let Some(rtt) = c.rtt {
                path_rtt
                    .entry(rows[*i].key.as_str())
                    .and_modify(|best| *best = (*best).min(rtt))
                    .or_insert(rtt);
            }
        }
        let candidates: Vec<Candidate<'_>> = eligible
            .iter()
            .map(|(i, c)| Candidate {
                rtt: path_rtt.get(rows[*i].key.as_str()).copied().or(c.rtt),
                ..c.clone()
            })
            .collect();
        let mut chosen = routing::choose(&candidates, prefer, own, coins).map(|i| eligible[i].0);
        let class_of = |rows: &[CandidateRow], i: usize| match rows[i].verdict {
            Verdict::Ranked { class, .. } => Some(class),
            Verdict::Excluded { .. } => None,
        };
        // Routes through a third region, used only when no direct one is
        // as good: none at all, or only worse classes (the direct path Down,
        // suspect, or back but still in its hold-down).
        let mut relay_eligible: Vec<(usize, Candidate<'_>)> = Vec::new();
        for (id, c) in &self.conns {
            for r in c.relayable.iter().filter(|r| r.service == service) {
                if r.region == c.peer.region || &r.region == own {
                    continue;
                }
                let exclusion = self.exclusion(c, None, service, tried, now);
                let verdict = match exclusion {
                    Some(reason) => Verdict::Excluded { reason },
                    None => {
                        let (candidate, class) = self.candidate(c, &r.region, now);
                        relay_eligible.push((rows.len(), candidate));
                        Verdict::Ranked {
                            rank: 0,
                            tier: routing::tier(&r.region, prefer, own) + base_tier,
                            class,
                            rtt_us: c.health.rtt.map(|r| r.as_micros() as u64),
                        }
                    }
                };
                rows.push(CandidateRow {
                    conn: Some(*id),
                    peer: c.peer.id.clone(),
                    key: c.peer.key.clone(),
                    name: c.peer.name.clone(),
                    region: c.peer.region.clone(),
                    instance: c.peer.instance.clone(),
                    lane: c.peer.lane,
                    local: false,
                    relay_to: Some(r.region.clone()),
                    verdict,
                });
            }
        }
        let relay_candidates: Vec<Candidate<'_>> =
            relay_eligible.iter().map(|(_, c)| c.clone()).collect();
        let relay_choice =
            routing::choose(&relay_candidates, prefer, own, coins).map(|i| relay_eligible[i].0);
        let mut relay_to = None;
        if let Some(r) = relay_choice {
            let direct = chosen.and_then(|i| class_of(&rows, i));
            if direct.is_none_or(|d| class_of(&rows, r).is_some_and(|rc| rc < d)) {
                chosen = Some(r);
                relay_to = rows[r].relay_to.clone();
            }
        }
        let mut use_local = false;
        if let Some(l) = local {
            let verdict = if tried.iter().any(|t| t == LOCAL) {
                Verdict::Excluded {
                    reason: Exclusion::Tried,
                }
            } else if !l.healthy {
                Verdict::Excluded {
                    reason: Exclusion::TargetDown,
                }
            } else {
                let held = now.saturating_duration_since(l.since) < self.config.hold_down;
                Verdict::Ranked {
                    rank: 0,
                    tier: 0,
                    class: if held {
                        Class::HeldDown
                    } else {
                        Class::Settled
                    },
                    rtt_us: Some(0),
                }
            };
            // Local first, unless it is still in its hold-down and a remote
            // candidate is settled: then failback waits, as for a region.
            if let Verdict::Ranked { class, .. } = verdict {
                let remote_class = chosen.and_then(|i| class_of(&rows, i));
                if remote_class.is_none_or(|r| class <= r) {
                    use_local = true;
                    chosen = None;
                    relay_to = None;
                }
            }
            rows.insert(
                0,
                CandidateRow {
                    conn: None,
                    peer: LOCAL.to_owned(),
                    key: LOCAL.to_owned(),
                    name: l.address.clone(),
                    region: own.clone(),
                    instance: String::new(),
                    lane: 0,
                    local: true,
                    relay_to: None,
                    verdict,
                },
            );
            chosen = chosen.map(|i| i + 1);
        }
        // Ranks: by class, tier, then RTT (unknown last); equal keys share.
        // A gateway's lanes on the same route rank by its best lane's RTT,
        // so they share a rank.
        let mut best_rtt: HashMap<(&str, Option<&str>), u64> = HashMap::new();
        for r in &rows {
            if let Verdict::Ranked { rtt_us, .. } = r.verdict {
                let e = best_rtt
                    .entry((r.key.as_str(), r.relay_to.as_deref()))
                    .or_insert(u64::MAX);
                *e = (*e).min(rtt_us.unwrap_or(u64::MAX));
            }
        }
        let key = |r: &CandidateRow| match r.verdict {
            Verdict::Ranked { tier, class, .. } => Some((
                class,
                tier,
                best_rtt
                    .get(&(r.key.as_str(), r.relay_to.as_deref()))
                    .copied()
                    .unwrap_or(u64::MAX),
            )),
            Verdict::Excluded { .. } => None,
        };
        let mut keys: Vec<_> = rows.iter().filter_map(key).collect();
        keys.sort();
        keys.dedup();
        let ranks: Vec<Option<usize>> = rows
            .iter()
            .map(|r| key(r).map(|k| keys.iter().position(|x| *x == k).unwrap_or(0) + 1))
            .collect();
        for (row, r) in rows.iter_mut().zip(ranks) {
            if let Some(r) = r
                && let Verdict::Ranked { rank, .. } = &mut row.verdict
            {
                *rank = r;
            }
        }
        Decision {
            service: service.to_owned(),
            chosen: chosen.and_then(|i| rows[i].conn),
            local: use_local,
            relay_to,
            candidates: rows,
        }
    }

    /// Plans and takes the choice: a breaker past its cooldown gives its
    /// one trial to this stream.
    pub fn route(
        &mut self,
        service: &str,
        prefer: &[String],
        tried: &[String],
        now: Instant,
        coins: (u64, u64),
    ) -> Decision {
        let decision = self.plan(service, prefer, tried, now, coins);
        if let Some(row) = decision.chosen_row()
            && let Some(b) = self
                .breakers
                .get_mut(&(row.key.clone(), service.to_owned()))
        {
            b.allow(now);
        }
        decision
    }

    /// Whether the peer with key `peer` has a connection on `lane` that
    /// takes new streams.
    pub fn has_active(&self, peer: &str, lane: u16) -> bool {
        self.conns
            .values()
            .any(|c| c.peer.key == peer && c.peer.lane == lane && c.state == ConnState::Active)
    }

    /// The peer of a connection.
    pub fn peer(&self, conn: ConnId) -> Option<&PeerInfo> {
        self.conns.get(&conn).map(|c| &c.peer)
    }

    /// Whether a connection to `peer` on `lane` takes new streams and is
    /// not Down: a dialer with one has nothing to dial.
    pub fn has_live(&self, peer: &str, lane: u16) -> bool {
        self.conns.values().any(|c| {
            c.peer.key == peer
                && c.peer.lane == lane
                && c.state == ConnState::Active
                && c.health.state != TunnelHealth::Down
        })
    }

    /// Whether `conn` was found Down (or is closing).
    pub fn is_down(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_none_or(|c| {
            c.health.state == TunnelHealth::Down || matches!(c.state, ConnState::Closing(_))
        })
    }

    /// Connections still open (active or superseded), for GOAWAY,
    /// UPDATE, telemetry and revocation.
    pub fn open_conns(&self) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| !matches!(c.state, ConnState::Closing(_)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Streams in flight on every connection.
    pub fn active_streams(&self) -> usize {
        self.conns.values().map(|c| c.active).sum()
    }

    /// When [`Plane::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter_map(|c| match c.state {
                ConnState::Superseded {
                    idle_since: Some(t),
                } => Some(t + self.config.drain_idle),
                _ => None,
            })
            .min()
    }

    /// Closes superseded connections that stayed idle long enough, and
    /// forgets peers lost long ago.
    pub fn handle_timeout(&mut self, now: Instant) {
        let forget = self.config.forget_after;
        self.lost
            .retain(|_, l| now.saturating_duration_since(l.since) < forget);
        let idle: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                matches!(c.state, ConnState::Superseded { idle_since: Some(t) }
                    if now >= t + self.config.drain_idle)
            })
            .map(|(id, _)| *id)
            .collect();
        for conn in idle {
            self.close(conn, CloseReason::Duplicate);
        }
    }

    pub fn poll_event(&mut self) -> Option<PlaneEvent> {
        self.events.pop_front()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// A copy for readers.
    pub fn view(&self) -> PlaneView {
        PlaneView {
            conns: self
                .conns
                .iter()
                .map(|(id, c)| ConnView {
                    conn: *id,
                    peer: c.peer.clone(),
                    dialed: c.dialed,
                    role: match c.state {
                        ConnState::Active => "active",
                        ConnState::Superseded { .. } => "superseded",
                        ConnState::Closing(_) => "closing",
                    },
                    state: c.health.state.as_str(),
                    rtt_us: c.health.rtt.map(|r| r.as_micros() as u64),
                    loss: c.health.loss,
                    missed: c.health.missed,
                    quiet_ms: c.health.quiet.as_millis() as u64,
                    draining: c.draining,
                    active_streams: c.active,
                    services: c.services.clone(),
                })
                .collect(),
            breakers: {
                let mut b: Vec<BreakerView> = self
                    .breakers
                    .iter()
                    .filter(|(_, b)| b.state() != BreakerState::Closed)
                    .map(|((peer, service), b)| BreakerView {
                        peer: peer.clone(),
                        service: service.clone(),
                        state: b.state().as_str(),
                    })
                    .collect();
                b.sort_by(|x, y| (&x.peer, &x.service).cmp(&(&y.peer, &y.service)));
                b
            },
        }
    }
}

#[cfg(test)]
mod tests;
