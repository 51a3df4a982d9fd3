//! The routing plane for async use: `strait_core::plane::Plane` behind one
//! lock, the live tunnels by connection id, and the drivers' way in. Every
//! call feeds the plane with tokio's `now`, then carries out what it asks
//! (close a duplicate or dead connection) and passes its typed events on to
//! whoever observes them (metrics, logs, the event log); this module never
//! records any of those itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use strait_core::attempt::AttemptState;
use strait_core::frame::ServiceAd;
use strait_core::plane::{
    Action, CloseReason, ConnId, Decision, Health, PeerInfo, Plane, PlaneConfig, PlaneEvent,
    PlaneView,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use crate::tunnel::Tunnel;
use crate::wire::code;

/// Stream counters of this gateway, for the mesh telemetry.
#[derive(Debug, Default)]
pub struct StreamCounters {
    pub total: AtomicU64,
    pub failed: AtomicU64,
}

impl StreamCounters {
    pub fn finished(&self, ok: bool) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Debug)]
struct Inner {
    plane: Plane,
    tunnels: HashMap<ConnId, Arc<Tunnel>>,
    /// When the timer task will next wake, if it sleeps on a deadline.
    #[allow(clippy::disallowed_types)]
    scheduled: Option<std::time::Instant>,
}

/// The plane and its tunnels, shared by every task of a gateway.
#[derive(Debug)]
pub struct PlaneHandle {
    inner: Mutex<Inner>,
    events: mpsc::UnboundedSender<PlaneEvent>,
    /// Bumped whenever a tunnel comes or goes.
    changed: watch::Sender<u64>,
    timer: Notify,
    pub counters: StreamCounters,
    region: String,
}

/// Counts a stream on its connection for as long as it lives.
pub struct StreamGuard {
    handle: Arc<PlaneHandle>,
    conn: ConnId,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let now = now();
        self.handle.with(|p| p.handle_stream_closed(self.conn, now));
    }
}

/// The two random numbers the plane's power of two choices takes.
pub fn coins() -> (u64, u64) {
    use rand::Rng;
    let mut rng = rand::rng();
    (rng.random(), rng.random())
}

/// tokio's clock (paused in tests) as the plane's `now`: the one place
/// where gateway code hands a std `Instant` to the sans-IO core.
#[allow(clippy::disallowed_types)]
pub fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl PlaneHandle {
    /// The handle and the receiving end of the plane's events.
    pub fn new(config: PlaneConfig) -> (Arc<Self>, mpsc::UnboundedReceiver<PlaneEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = Arc::new(PlaneHandle {
            region: config.own_region.clone(),
            inner: Mutex::new(Inner {
                plane: Plane::new(config),
                tunnels: HashMap::new(),
                scheduled: None,
            }),
            events: tx,
            changed: watch::channel(0).0,
            timer: Notify::new(),
            counters: StreamCounters::default(),
        });
        (handle, rx)
    }

    /// This gateway's region (the label of its metrics).
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Runs `f` on the plane, then carries out its actions and passes its
    /// events on.
    fn with<T>(&self, f: impl FnOnce(&mut Plane) -> T) -> T {
        self.with_inner(|inner| f(&mut inner.plane))
    }

    fn with_inner<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut inner);
        let mut changed = false;
        while let Some(Action::Close { conn, reason }) = inner.plane.poll_action() {
            if let Some(t) = inner.tunnels.get(&conn) {
                let (code_, why): (_, &[u8]) = match reason {
                    CloseReason::Duplicate => (code::DUPLICATE, b"duplicate tunnel"),
                    CloseReason::Replaced => (code::REPLACED, b"replaced by a newer connection"),
                    CloseReason::Dead => (code::DEAD, b"peer silent: tunnel down"),
                };
                t.conn.close(code_, why);
            }
            changed = true;
        }
        while let Some(event) = inner.plane.poll_event() {
            if matches!(
                event,
                PlaneEvent::TunnelUp { .. } | PlaneEvent::TunnelDown { .. }
            ) {
                changed = true;
            }
            let _ = self.events.send(event);
        }
        let wake_sooner = match (inner.plane.poll_timeout(), inner.scheduled) {
            (Some(next), Some(scheduled)) => next < scheduled,
            (Some(_), None) => true,
            (None, _) => false,
        };
        drop(inner);
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
        if wake_sooner {
            self.timer.notify_one();
        }
        out
    }

    /// A connection passed its handshake: the plane names it and settles
    /// duplicates; `make` builds the tunnel with that name.
    pub fn register(
        &self,
        peer: PeerInfo,
        dialed: bool,
        services: Vec<ServiceAd>,
        make: impl FnOnce(ConnId) -> Tunnel,
    ) -> Arc<Tunnel> {
        let now = now();
        self.with_inner(|inner| {
            let id = inner
                .plane
                .handle_connection_up(peer, dialed, services, now);
            let tunnel = Arc::new(make(id));
            inner.tunnels.insert(id, tunnel.clone());
            tunnel
        })
    }

    /// The connection is gone.
    pub fn closed(&self, conn: ConnId) {
        let now = now();
        self.with_inner(|inner| {
            inner.plane.handle_connection_closed(conn, now);
            inner.tunnels.remove(&conn);
        });
    }

    pub fn services(&self, conn: ConnId, services: Vec<ServiceAd>) {
        self.with(|plane| plane.handle_services(conn, services));
    }

    /// What the peer on `conn` says it would relay.
    pub fn relayable(&self, conn: ConnId, routes: Vec<strait_core::frame::RelayRoute>) {
        self.with(|plane| plane.handle_relayable(conn, routes));
    }

    pub fn goaway(&self, conn: ConnId) {
        self.with(|plane| plane.handle_goaway(conn));
    }

    pub fn health(&self, conn: ConnId, health: Health) {
        let now = now();
        self.with(|plane| plane.handle_health(conn, health, now));
    }

    /// Where the next stream of `service` goes, and the tunnel it names.
    pub fn route(
        &self,
        service: &str,
        prefer: &[String],
        tried: &[String],
        coins: (u64, u64),
    ) -> (Decision, Option<Arc<Tunnel>>) {
        let now = now();
        let decision = self.with(|plane| plane.route(service, prefer, tried, now, coins));
        let tunnel = decision.chosen.and_then(|c| self.tunnel(c));
        (decision, tunnel)
    }

    /// The same verdicts as [`PlaneHandle::route`], taking nothing: what
    /// `strait why` shows.
    pub fn plan(&self, service: &str, prefer: &[String], coins: (u64, u64)) -> Decision {
        let now = now();
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.plane.plan(service, prefer, &[], now, coins)
    }

    pub fn attempt(&self, conn: ConnId, service: &str, prefer: &[String], outcome: AttemptState) {
        let now = now();
        self.with(|plane| plane.handle_attempt(conn, service, prefer, outcome, now));
    }

    /// The local target of `service` at `address` passed or failed its
    /// health check.
    pub fn local(&self, service: &str, address: &str, healthy: bool) {
        let now = now();
        self.with(|plane| plane.handle_local(service, address, healthy, now));
    }

    pub fn forget_local(&self, service: &str) {
        self.with(|plane| plane.forget_local(service));
    }

    /// A stream of `service` went to its local target.
    pub fn local_served(&self, service: &str, prefer: &[String]) {
        self.with(|plane| plane.handle_local_served(service, prefer));
    }

    pub fn record_open(&self, service: &str) {
        let now = now();
        self.with(|plane| plane.record_open(service, now));
    }

    pub fn try_retry(&self, service: &str) -> bool {
        let now = now();
        self.with(|plane| plane.try_retry(service, now))
    }

    /// Counts a stream on `conn` until the guard drops.
    pub fn track_stream(self: &Arc<Self>, conn: ConnId) -> StreamGuard {
        self.with(|plane| plane.handle_stream_opened(conn));
        StreamGuard {
            handle: self.clone(),
            conn,
        }
    }

    /// Whether `conn` was found Down or is closing (or gone).
    pub fn is_down(&self, conn: ConnId) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.plane.is_down(conn)
    }

    /// Whether `peer` has a connection that takes new streams.
    pub fn has_active(&self, peer: &str, lane: u16) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.plane.has_active(peer, lane)
    }

    /// Whether a connection to `peer` on `lane` takes new streams and is
    /// not Down.
    pub fn has_live(&self, peer: &str, lane: u16) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.plane.has_live(peer, lane)
    }

    /// Whether the tunnel on quinn connection `conn` was found Down.
    pub fn quic_conn_down(&self, conn: &quinn::Connection) -> bool {
        let id = conn.stable_id();
        self.tunnels()
            .iter()
            .find(|t| t.conn.stable_id() == id)
            .is_some_and(|t| self.is_down(t.id))
    }

    pub fn tunnel(&self, conn: ConnId) -> Option<Arc<Tunnel>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.tunnels.get(&conn).cloned()
    }

    /// Every open tunnel (superseded ones too), by connection id.
    pub fn tunnels(&self) -> Vec<Arc<Tunnel>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<Arc<Tunnel>> = inner
            .plane
            .open_conns()
            .iter()
            .filter_map(|c| inner.tunnels.get(c).cloned())
            .collect();
        v.sort_by_key(|t| t.id);
        v
    }

    /// Streams in flight, either direction, on every tunnel.
    pub fn active_streams(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.plane.active_streams()
    }

    /// A copy of the plane for readers.
    pub fn view(&self) -> PlaneView {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.plane.view()
    }

    /// Notified whenever a tunnel comes or goes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Closes every tunnel.
    pub fn close_all(&self) {
        for t in self.tunnels() {
            t.conn.close(code::SHUTDOWN, b"gateway shutting down");
        }
    }

    /// Runs the plane's timers (superseded connections closing once idle)
    /// until the handle is dropped elsewhere.
    pub async fn run_timers(self: Arc<Self>) {
        loop {
            let wake = {
                let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                inner.scheduled = inner.plane.poll_timeout();
                inner.scheduled
            };
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {
                    let now = now();
                    self.with(|plane| plane.handle_timeout(now));
                }
                _ = self.timer.notified() => {}
            }
        }
    }
}
