//! Tunnels: one QUIC connection per pair of gateways, whoever dialed it.
//! This module owns the set of live tunnels (deduplicated when both sides
//! dial), the HELLO/UPDATE exchange on the control stream, and the dialing
//! of configured peers with capped, jittered backoff.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::Rng;
use strait_ca::{IdentityKind, SpiffeId};

use strait_core::frame::{self, Hello, Message, ServiceAd, VersionMismatch};
use strait_core::health::TunnelHealth;
use strait_core::routing::{self, Candidate};
use tokio::sync::watch;

use crate::wire::{code, read_frame, write_frame};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_CHECK: Duration = Duration::from_millis(500);

/// A live tunnel to one peer gateway.
#[derive(Debug)]
pub struct Tunnel {
    pub peer: SpiffeId,
    pub name: String,
    pub region: String,
    pub conn: quinn::Connection,
    /// Whether this gateway dialed the connection.
    pub dialed: bool,
    /// The protocol version agreed in HELLO.
    pub version: u16,
    /// The capabilities both gateways offered in HELLO.
    pub capabilities: Vec<String>,
    services: RwLock<Vec<ServiceAd>>,
    /// Streams in flight on this connection, either direction.
    active: AtomicUsize,
    /// Another connection to the same peer is preferred: this one takes no
    /// new outgoing streams and closes once idle.
    superseded: AtomicBool,
    health: Mutex<HealthSnapshot>,
    /// Our side of the control stream, for UPDATE and GOAWAY.
    control: tokio::sync::Mutex<Option<quinn::SendStream>>,
}

/// What the probes last said about a tunnel.
#[derive(Debug, Clone, Copy)]
pub struct HealthSnapshot {
    pub state: TunnelHealth,
    pub rtt: Option<Duration>,
    pub loss: f64,
    /// Probes missed in a row.
    pub missed: u32,
    /// When the tunnel came up or last came back from Down.
    pub up_since: Instant,
    /// When the peer last answered a probe.
    pub last_seen: Instant,
}

/// Counts a stream as active on its tunnel for as long as it lives.
pub struct StreamGuard(Arc<Tunnel>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Tunnel {
    pub fn track_stream(self: &Arc<Self>) -> StreamGuard {
        self.active.fetch_add(1, Ordering::SeqCst);
        StreamGuard(self.clone())
    }

    /// Sends a frame on the control stream (UPDATE, GOAWAY); a failure
    /// means the tunnel is going away and is only logged.
    pub async fn send_control(&self, msg: &Message) {
        let mut guard = self.control.lock().await;
        if let Some(send) = guard.as_mut()
            && let Err(e) = crate::wire::write_frame(send, msg).await
        {
            tracing::debug!(peer = %self.peer, "control frame not sent: {e}");
        }
    }

    pub async fn set_control(&self, send: quinn::SendStream) {
        *self.control.lock().await = Some(send);
    }

    pub fn health(&self) -> HealthSnapshot {
        *self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_health(&self, h: HealthSnapshot) {
        *self.health.lock().unwrap_or_else(|p| p.into_inner()) = h;
    }

    pub fn active_streams(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    pub fn is_superseded(&self) -> bool {
        self.superseded.load(Ordering::SeqCst)
    }

    /// Takes this connection out of service without cutting a stream: it
    /// closes once nothing has flowed on it for a moment.
    pub fn supersede(self: &Arc<Self>) {
        if self.superseded.swap(true, Ordering::SeqCst) {
            return;
        }
        let t = self.clone();
        tokio::spawn(async move {
            let mut idle_checks = 0;
            while t.conn.close_reason().is_none() {
                tokio::time::sleep(DRAIN_CHECK).await;
                idle_checks = if t.active_streams() == 0 {
                    idle_checks + 1
                } else {
                    0
                };
                // Idle twice in a row: the peer has had time to switch too.
                if idle_checks >= 2 {
                    t.conn.close(code::DUPLICATE, b"duplicate tunnel");
                }
            }
        });
    }

    pub fn services(&self) -> Vec<ServiceAd> {
        self.services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn offers(&self, service: &str) -> bool {
        self.services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|s| s.name == service && s.healthy)
    }

    fn set_services(&self, services: Vec<ServiceAd>) {
        *self.services.write().unwrap_or_else(|p| p.into_inner()) = services;
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.conn.remote_address()
    }
}

/// The live tunnels, one per peer gateway.
#[derive(Debug)]
pub struct Registry {
    me: SpiffeId,
    /// The gateway's event log, reachable from everything that has the
    /// registry.
    pub events: Arc<crate::events::EventLog>,
    /// What this gateway knows of the mesh (telemetry from peers).
    pub mesh: Arc<crate::telemetry::MeshView>,
    tunnels: Mutex<HashMap<SpiffeId, Arc<Tunnel>>>,
    /// Superseded tunnels still serving their last streams: out of routing,
    /// but a revocation must reach them too.
    superseded: Mutex<Vec<std::sync::Weak<Tunnel>>>,
    changed: watch::Sender<u64>,
}

/// What happened to a tunnel offered to the registry.
pub enum Registered {
    Kept,
    /// A tunnel to the same peer is kept instead; this one must close.
    Duplicate(Arc<Tunnel>),
}

impl Registry {
    pub fn new(me: SpiffeId, name: &str, region: &str) -> Self {
        Registry {
            me,
            events: Arc::new(crate::events::EventLog::default()),
            mesh: Arc::new(crate::telemetry::MeshView::new(name, region)),
            tunnels: Mutex::new(HashMap::new()),
            superseded: Mutex::new(Vec::new()),
            changed: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SpiffeId, Arc<Tunnel>>> {
        self.tunnels.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Adds a tunnel. When both gateways dialed, both keep the connection
    /// dialed by the gateway whose SPIFFE ID sorts first, so they agree
    /// without talking. The other connection is superseded, never cut: it
    /// serves the streams it carries and closes once idle.
    pub fn register(&self, tunnel: Arc<Tunnel>) -> Registered {
        let mut map = self.lock();
        if let Some(existing) = map.get(&tunnel.peer).cloned()
            && existing.conn.close_reason().is_none()
        {
            let preferred_dialer_is_me = self.me < tunnel.peer;
            let prefer_new = tunnel.dialed == preferred_dialer_is_me
                && existing.dialed != preferred_dialer_is_me;
            if !prefer_new {
                drop(map);
                self.keep_superseded(&tunnel);
                tunnel.supersede();
                return Registered::Duplicate(existing);
            }
            map.insert(tunnel.peer.clone(), tunnel);
            drop(map);
            self.keep_superseded(&existing);
            existing.supersede();
            self.bump();
            return Registered::Kept;
        }
        map.insert(tunnel.peer.clone(), tunnel);
        drop(map);
        self.bump();
        Registered::Kept
    }

    /// Removes `tunnel` if it is still the registered one for its peer.
    pub fn remove(&self, tunnel: &Arc<Tunnel>) {
        let mut map = self.lock();
        if map
            .get(&tunnel.peer)
            .is_some_and(|t| Arc::ptr_eq(t, tunnel))
        {
            map.remove(&tunnel.peer);
            drop(map);
            self.bump();
        }
    }

    pub fn tunnels(&self) -> Vec<Arc<Tunnel>> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| a.peer.cmp(&b.peer));
        v
    }

    /// The tunnel a new stream for `service` goes to, chosen by
    /// `strait_core::routing` from the live, non-superseded tunnels whose
    /// peer offers it.
    pub fn pick(
        &self,
        service: &str,
        prefer: &[String],
        own_region: &str,
        hold_down: Duration,
        eligible: impl Fn(&Tunnel) -> bool,
    ) -> Option<Arc<Tunnel>> {
        let now = Instant::now();
        let offering: Vec<(Arc<Tunnel>, HealthSnapshot)> = self
            .lock()
            .values()
            .filter(|t| t.conn.close_reason().is_none() && !t.is_superseded() && t.offers(service))
            .filter(|t| eligible(t))
            .map(|t| (t.clone(), t.health()))
            .collect();
        let candidates: Vec<Candidate<'_>> = offering
            .iter()
            .map(|(t, h)| Candidate {
                region: &t.region,
                health: h.state,
                rtt: h.rtt,
                suspect: h.missed > 0,
                held: now.saturating_duration_since(h.up_since) < hold_down,
            })
            .collect();
        let mut rng = rand::rng();
        let coins = (rng.random::<u64>(), rng.random::<u64>());
        let chosen = routing::choose(&candidates, prefer, own_region, coins)?;
        Some(offering[chosen].0.clone())
    }

    /// Notified whenever a tunnel comes or goes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn keep_superseded(&self, tunnel: &Arc<Tunnel>) {
        if tunnel.is_superseded() {
            return;
        }
        let mut list = self.superseded.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| w.upgrade().is_some_and(|t| t.conn.close_reason().is_none()));
        list.push(Arc::downgrade(tunnel));
    }

    /// Cuts the tunnels (superseded ones included) whose peer certificate
    /// `deny` names, at once: their streams are reset, a revoked peer keeps
    /// nothing. Returns how many.
    pub fn cut_revoked(&self, deny: &strait_ca::DenyList, region: &str) -> usize {
        let mut cut = 0;
        let superseded: Vec<Arc<Tunnel>> = self
            .superseded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        let mut all = self.tunnels();
        all.extend(superseded);
        for t in all {
            if t.conn.close_reason().is_some() {
                continue;
            }
            let Some(leaf) = crate::tls::peer_leaf(&t.conn) else {
                continue;
            };
            let Some(entry) = deny.denies_certificate(&t.peer, &leaf) else {
                continue;
            };
            t.conn.close(code::REVOKED, b"certificate revoked");
            cut += 1;
            let labels = [("region", region.to_owned()), ("peer", t.name.clone())];
            metrics::counter!(crate::metrics::PEERS_REVOKED, &labels).increment(1);
            self.events.record(
                "peer_revoked",
                format!("{} cut: deny list entry `{entry}`", t.peer),
            );
            tracing::warn!(peer = %t.peer, peer_region = %t.region, %entry,
                active_streams = t.active_streams(), "tunnel cut: the deny list names the peer's certificate");
        }
        cut
    }

    /// Closes every tunnel.
    pub fn close_all(&self) {
        for t in self.tunnels() {
            t.conn.close(code::SHUTDOWN, b"gateway shutting down");
        }
    }
}

/// Why a connection did not become a tunnel.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("peer presented no SPIFFE ID")]
    NoIdentity,
    #[error("{0} is not a gateway identity")]
    NotAGateway(SpiffeId),
    #[error("no HELLO: {0}")]
    NoHello(String),
    #[error("HELLO says gateway {name:?} in {region:?}, the certificate says {id}")]
    HelloMismatch {
        name: String,
        region: String,
        id: SpiffeId,
    },
    #[error("{0}")]
    Version(VersionMismatch),
    #[error("control stream: {0}")]
    Control(String),
}

/// Exchanges HELLO on a new connection and returns the tunnel and the
/// control stream. The dialer opens the control stream and speaks first.
pub async fn handshake(
    conn: quinn::Connection,
    dialed: bool,
    hello: Hello,
) -> Result<(Arc<Tunnel>, quinn::SendStream, quinn::RecvStream, BytesMut), HandshakeError> {
    let peer = crate::tls::peer_id(&conn).ok_or(HandshakeError::NoIdentity)?;
    let (name, region) = match peer.kind() {
        IdentityKind::Gateway { region, name } => (name.to_owned(), region.to_owned()),
        _ => return Err(HandshakeError::NotAGateway(peer)),
    };
    let control = |e: &dyn std::fmt::Display| HandshakeError::Control(e.to_string());
    let (mut send, mut recv) = if dialed {
        conn.open_bi().await.map_err(|e| control(&e))?
    } else {
        tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi())
            .await
            .map_err(|_| HandshakeError::NoHello("no control stream within 10 s".into()))?
            .map_err(|e| control(&e))?
    };
    let mut buf = BytesMut::new();
    if dialed {
        write_frame(&mut send, &Message::Hello(hello.clone()))
            .await
            .map_err(|e| control(&e))?;
    }
    let theirs = match read_frame(&mut recv, &mut buf, HELLO_TIMEOUT).await {
        Ok(Message::Hello(h)) => h,
        Ok(other) => {
            return Err(HandshakeError::NoHello(format!(
                "first frame was {other:?}"
            )));
        }
        Err(e) => return Err(HandshakeError::NoHello(e.to_string())),
    };
    let agreed = frame::negotiate(&hello, &theirs).map_err(HandshakeError::Version)?;
    if theirs.name != name || theirs.region != region {
        return Err(HandshakeError::HelloMismatch {
            name: theirs.name,
            region: theirs.region,
            id: peer,
        });
    }
    tracing::debug!(%peer, version = agreed.version, capabilities = ?agreed.capabilities, "protocol agreed in HELLO");
    if !dialed {
        write_frame(&mut send, &Message::Hello(hello))
            .await
            .map_err(|e| control(&e))?;
    }
    let tunnel = Arc::new(Tunnel {
        peer,
        name,
        region,
        conn,
        dialed,
        version: agreed.version,
        capabilities: agreed.capabilities,
        services: RwLock::new(theirs.services),
        active: AtomicUsize::new(0),
        superseded: AtomicBool::new(false),
        health: Mutex::new(HealthSnapshot {
            state: TunnelHealth::Up,
            rtt: None,
            loss: 0.0,
            missed: 0,
            up_since: Instant::now(),
            last_seen: Instant::now(),
        }),
        control: tokio::sync::Mutex::new(None),
    });
    Ok((tunnel, send, recv, buf))
}

/// Reads UPDATE, GOAWAY and TELEMETRY from a tunnel's control stream until
/// it ends; frames of a kind this version does not know are skipped.
pub async fn follow_control(
    tunnel: Arc<Tunnel>,
    mesh: Arc<crate::telemetry::MeshView>,
    mut recv: quinn::RecvStream,
    mut buf: BytesMut,
) {
    loop {
        match read_frame(&mut recv, &mut buf, Duration::from_secs(24 * 3600)).await {
            Ok(Message::Telemetry(t)) => mesh.receive(t),
            Ok(Message::Update(u)) => {
                tracing::info!(peer = %tunnel.peer, services = u.services.len(), "peer updated its services");
                tunnel.set_services(u.services);
            }
            Ok(Message::GoAway(g)) => {
                tracing::info!(peer = %tunnel.peer, reason = %g.reason, "peer is draining");
                tunnel.set_services(Vec::new());
            }
            Ok(Message::Unknown { kind }) => {
                tracing::debug!(peer = %tunnel.peer, kind, "control frame of a kind this version does not know; ignored");
            }
            Ok(other) => {
                tracing::warn!(peer = %tunnel.peer, "unexpected control frame {other:?}; closing the tunnel");
                tunnel
                    .conn
                    .close(code::BAD_HELLO, b"unexpected control frame");
                return;
            }
            Err(crate::wire::WireError::Timeout(_)) => continue,
            Err(_) => return,
        }
    }
}

/// Capped exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// The next delay: uniform in [next/2, next], then `next` doubles up to
    /// the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let lo = d / 2;
        lo + Duration::from_nanos(rand::rng().random_range(0..=(d - lo).as_nanos() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
        assert!(delays[7] >= Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
