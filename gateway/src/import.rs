//! The importing side: a TCP listener per import; each client connection
//! becomes a service stream on a tunnel whose peer offers the service. The
//! OPEN frame and the client's first bytes leave at once, without waiting
//! for the answer: a new connection costs one round trip.
//!
//! Until the exporting side answers OK nothing has reached its target, so
//! the client's early bytes are kept (up to [`EARLY_MAX`]; past that the
//! client is not read until the answer) and replayed on the next candidate
//! when a peer refuses, resets, or its tunnel is found Down. Retries come
//! out of a retry budget; a circuit breaker per (peer, service) ejects
//! peers that keep failing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::RngCore;
use strait_ca::SpiffeId;
use strait_core::breaker::{BreakerConfig, BreakerTransition, CircuitBreaker};
use strait_core::budget::RetryBudget;
use strait_core::frame::{self, Message, Open, StatusCode};
use strait_core::health::TunnelHealth;
use strait_core::trace::TraceContext;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::config::TunnelSettings;
use crate::metrics as m;
use crate::splice::ClientConn;
use crate::tunnel::{Registry, Tunnel};
use crate::wire::{code, read_frame};

/// Client bytes kept for replay before the answer arrives.
pub const EARLY_MAX: usize = 64 * 1024;
const HEALTH_POLL: Duration = Duration::from_millis(25);

/// Where an import's streams may go.
#[derive(Debug, Clone)]
pub struct Route {
    pub service: String,
    pub prefer: Vec<String>,
    pub own_region: String,
    /// How long a tunnel that came up or back is passed over in favour of
    /// established ones.
    pub hold_down: Duration,
    pub limits: crate::admission::Limits,
}

/// Per-import routing state shared by its client connections.
#[derive(Debug)]
pub struct RouteState {
    pub route: Route,
    breakers: Mutex<HashMap<SpiffeId, CircuitBreaker>>,
    budget: Mutex<RetryBudget>,
    /// Region that served the last accepted stream, to count failovers.
    last_region: Mutex<Option<String>>,
    admission: crate::admission::Admission,
}

impl RouteState {
    pub fn new(route: Route) -> Self {
        RouteState {
            admission: crate::admission::Admission::new(&route.limits),
            route,
            breakers: Mutex::new(HashMap::new()),
            budget: Mutex::new(RetryBudget::default()),
            last_region: Mutex::new(None),
        }
    }

    fn breakers(&self) -> std::sync::MutexGuard<'_, HashMap<SpiffeId, CircuitBreaker>> {
        self.breakers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, RetryBudget> {
        self.budget.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next candidate: not tried yet for this client, circuit not open.
    fn choose(&self, registry: &Registry, tried: &[SpiffeId]) -> Option<Arc<Tunnel>> {
        let now = Instant::now();
        let tunnel = {
            let breakers = self.breakers();
            registry.pick(
                &self.route.service,
                &self.route.prefer,
                &self.route.own_region,
                self.route.hold_down,
                |t: &Tunnel| {
                    !tried.contains(&t.peer)
                        && breakers.get(&t.peer).is_none_or(|b| b.would_allow(now))
                },
            )?
        };
        self.breakers()
            .entry(tunnel.peer.clone())
            .or_insert_with(|| CircuitBreaker::new(BreakerConfig::default()))
            .allow(now);
        Some(tunnel)
    }

    fn record(&self, peer: &SpiffeId, ok: bool, events: &crate::events::EventLog) {
        let mut breakers = self.breakers();
        let b = breakers
            .entry(peer.clone())
            .or_insert_with(|| CircuitBreaker::new(BreakerConfig::default()));
        let transition = if ok {
            b.record_success()
        } else {
            b.record_failure(Instant::now())
        };
        let labels = [
            ("region", self.route.own_region.clone()),
            ("service", self.route.service.clone()),
            ("peer", peer.to_string()),
        ];
        match transition {
            BreakerTransition::Opened => {
                metrics::gauge!(m::CIRCUIT_OPEN, &labels).set(1.0);
                events.record(
                    "circuit_opened",
                    format!("{} for {}", peer, self.route.service),
                );
                tracing::warn!(service = %self.route.service, %peer, "circuit opened: peer ejected for this service")
            }
            BreakerTransition::Closed => {
                metrics::gauge!(m::CIRCUIT_OPEN, &labels).set(0.0);
                events.record(
                    "circuit_closed",
                    format!("{} for {}", peer, self.route.service),
                );
                tracing::info!(service = %self.route.service, %peer, "circuit closed")
            }
            BreakerTransition::None => {}
        }
    }

    /// Notes the region that served a stream; a move to a less preferred
    /// tier is a failover, back to a more preferred one a failback.
    fn served_by(&self, region: &str, events: &crate::events::EventLog) {
        let mut last = self.last_region.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(from) = last.as_deref()
            && from != region
        {
            let tier =
                |r: &str| strait_core::routing::tier(r, &self.route.prefer, &self.route.own_region);
            let (name, what) = if tier(region) > tier(from) {
                (m::FAILOVERS, "failover")
            } else {
                (m::FAILBACKS, "failback")
            };
            let labels = [
                ("region", self.route.own_region.clone()),
                ("service", self.route.service.clone()),
                ("from", from.to_owned()),
                ("to", region.to_owned()),
            ];
            metrics::counter!(name, &labels).increment(1);
            events.record(what, format!("{}: {from} -> {region}", self.route.service));
            tracing::warn!(service = %self.route.service, from, to = region, "{what}");
        }
        *last = Some(region.to_owned());
    }
}

/// Accepts clients of one import until the listener is dropped.
pub async fn run_import(
    listener: TcpListener,
    route: Route,
    registry: Arc<Registry>,
    settings: Arc<TunnelSettings>,
    mtls: Option<tokio_rustls::TlsAcceptor>,
) {
    let state = Arc::new(RouteState::new(route));
    loop {
        let (client, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(service = %state.route.service, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = client.set_nodelay(true);
        let (state, registry, settings) = (state.clone(), registry.clone(), settings.clone());
        match &mtls {
            None => {
                tokio::spawn(serve_client(client, None, from, state, registry, settings));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // The workload's certificate is verified by strait-ca in
                    // the handshake; its SPIFFE ID travels in OPEN.
                    let tls = match tokio::time::timeout(
                        settings.open_timeout,
                        acceptor.accept(client),
                    )
                    .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::warn!(service = %state.route.service, client = %from, "workload refused: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(service = %state.route.service, client = %from, "workload TLS handshake timed out");
                            return;
                        }
                    };
                    let origin = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|leaf| strait_ca::SpiffeId::from_certificate(leaf).ok())
                        .map(|id| id.to_string());
                    serve_client(tls, origin, from, state, registry, settings).await;
                });
            }
        }
    }
}

fn new_trace() -> TraceContext {
    let mut rng = rand::rng();
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    rng.fill_bytes(&mut trace_id);
    rng.fill_bytes(&mut span_id);
    TraceContext::from_random(trace_id, span_id)
}

/// The client bytes read before the answer, and whether the client has
/// finished sending.
#[derive(Debug, Default)]
struct Early {
    bytes: BytesMut,
    eof: bool,
}

/// How one attempt on one peer ended.
enum Attempt {
    Accepted {
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        leftover: BytesMut,
    },
    /// Worth trying elsewhere: nothing reached the target.
    Retry(String),
    /// The client went away; nothing more to do.
    ClientGone,
}

async fn serve_client<C: ClientConn>(
    client: C,
    origin: Option<String>,
    from: SocketAddr,
    state: Arc<RouteState>,
    registry: Arc<Registry>,
    settings: Arc<TunnelSettings>,
) {
    let started = Instant::now();
    let trace = new_trace();
    let service = state.route.service.clone();
    let _permit = match state.admission.admit().await {
        Ok(permit) => permit,
        Err(refusal) => {
            registry.mesh.counters.finished(false);
            m::FinishedStream {
                region: &state.route.own_region,
                side: "import",
                service: &service,
                peer: "-",
                outcome: "overloaded",
                bytes_in: 0,
                bytes_out: 0,
                duration: started.elapsed(),
            }
            .record();
            tracing::warn!(%trace, %service, client = %from, outcome = "overloaded", reason = refusal.as_str(), "client refused by the import's limits");
            let (r, w) = client.split();
            C::reset(r, w);
            return;
        }
    };
    let _active = m::ActiveStream::new(&state.route.own_region, "import", &service);
    let (mut cr, mut cw) = client.split();
    let mut early = Early::default();
    let mut tried: Vec<SpiffeId> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    state.budget().record_open(Instant::now());

    let accepted = loop {
        if !tried.is_empty() && !state.budget().try_retry(Instant::now()) {
            reasons.push("retry budget exhausted".into());
            break None;
        }
        let Some(tunnel) = state.choose(&registry, &tried) else {
            if tried.is_empty() {
                reasons.push("no tunnel offers the service".into());
            }
            break None;
        };
        tried.push(tunnel.peer.clone());
        let guard = tunnel.track_stream();
        match attempt(
            &tunnel,
            &trace,
            &service,
            &mut cr,
            origin.as_deref(),
            &mut early,
            &settings,
        )
        .await
        {
            Attempt::Accepted {
                send,
                recv,
                leftover,
            } => {
                state.record(&tunnel.peer, true, &registry.events);
                state.served_by(&tunnel.region, &registry.events);
                let open_labels = [
                    ("region", state.route.own_region.clone()),
                    ("service", service.clone()),
                    ("peer_region", tunnel.region.clone()),
                ];
                metrics::histogram!(m::STREAM_OPEN, &open_labels)
                    .record(started.elapsed().as_secs_f64());
                if tried.len() > 1 {
                    tracing::info!(%trace, %service, peer = %tunnel.peer, attempts = tried.len(), "stream retried and accepted");
                }
                break Some((tunnel, guard, send, recv, leftover));
            }
            Attempt::Retry(reason) => {
                state.record(&tunnel.peer, false, &registry.events);
                let retry_labels = [
                    ("region", state.route.own_region.clone()),
                    ("service", service.clone()),
                ];
                metrics::counter!(m::RETRIES, &retry_labels).increment(1);
                tracing::warn!(%trace, %service, peer = %tunnel.peer, %reason, "attempt failed before the answer; trying the next peer");
                reasons.push(format!("{}: {reason}", tunnel.peer));
            }
            Attempt::ClientGone => return,
        }
    };

    let Some((tunnel, _guard, mut send, mut recv, leftover)) = accepted else {
        registry.mesh.counters.finished(false);
        let outcome = if tried.is_empty() {
            "no_peer"
        } else {
            "refused"
        };
        m::FinishedStream {
            region: &state.route.own_region,
            side: "import",
            service: &service,
            peer: "-",
            outcome,
            bytes_in: 0,
            bytes_out: 0,
            duration: started.elapsed(),
        }
        .record();
        tracing::warn!(
            %trace, %service, client = %from, outcome = "refused",
            reasons = %reasons.join("; "),
            "no peer accepted the stream; resetting the client"
        );
        C::reset(cr, cw);
        return;
    };
    let peer = tunnel.peer.to_string();
    let moved = crate::splice::run(
        &mut cr,
        &mut cw,
        &mut send,
        &mut recv,
        crate::splice::SpliceOptions {
            first_to_quic: &[],
            first_to_tcp: &leftover,
            tcp_finished: early.eof,
            idle_timeout: settings.stream_idle_timeout,
        },
    )
    .await;
    let (up_bytes, down_bytes, reset) = (
        moved.tcp_to_quic + early.bytes.len() as u64,
        moved.quic_to_tcp,
        moved.reset,
    );
    registry.mesh.counters.finished(!reset);
    if reset {
        C::reset(cr, cw);
    }
    let outcome = match (moved.idle, reset) {
        (true, _) => "idle",
        (false, true) => "reset",
        (false, false) => "ok",
    };
    m::FinishedStream {
        region: &state.route.own_region,
        side: "import",
        service: &service,
        peer: &peer,
        outcome,
        bytes_in: down_bytes,
        bytes_out: up_bytes,
        duration: started.elapsed(),
    }
    .record();
    tracing::info!(
        %trace, %service, %peer,
        bytes_out = up_bytes, bytes_in = down_bytes,
        duration_ms = started.elapsed().as_millis() as u64,
        attempts = tried.len(),
        outcome,
        "stream closed (import)"
    );
}

/// One try on `tunnel`: OPEN, the early bytes so far, then more client
/// bytes (up to the bound) while waiting for the answer.
async fn attempt<R: tokio::io::AsyncRead + Unpin>(
    tunnel: &Arc<Tunnel>,
    trace: &TraceContext,
    service: &str,
    cr: &mut R,
    origin: Option<&str>,
    early: &mut Early,
    settings: &TunnelSettings,
) -> Attempt {
    let (mut send, mut recv) = match tunnel.conn.open_bi().await {
        Ok(s) => s,
        Err(e) => return Attempt::Retry(format!("cannot open a stream: {e}")),
    };
    let mut head = BytesMut::new();
    let open = Message::Open(Open {
        service: service.to_owned(),
        trace_id: trace.trace_id,
        span_id: trace.span_id,
        origin: origin.map(str::to_owned),
    });
    if let Err(e) = frame::encode(&open, &mut head) {
        return Attempt::Retry(e.to_string());
    }
    head.extend_from_slice(&early.bytes);
    if send.write_all(&head).await.is_err() {
        return Attempt::Retry("stream closed while sending OPEN".into());
    }
    if early.eof {
        let _ = send.finish();
    }
    tracing::info!(%trace, %service, peer = %tunnel.peer, "stream opening (import)");
    let mut answer = BytesMut::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + settings.open_timeout;
    loop {
        let room = !early.eof && early.bytes.len() < EARLY_MAX;
        tokio::select! {
            frame = read_frame(&mut recv, &mut answer, settings.open_timeout) => {
                return match frame {
                    Ok(Message::Status(s)) if s.code == StatusCode::Ok => Attempt::Accepted { send, recv, leftover: answer },
                    Ok(Message::Status(s)) => {
                        let _ = send.reset(code::REFUSED);
                        Attempt::Retry(format!("{}: {}", s.code, s.message))
                    }
                    Ok(other) => {
                        let _ = send.reset(code::PROTOCOL);
                        Attempt::Retry(format!("expected STATUS, got {other:?}"))
                    }
                    Err(e) => {
                        let _ = send.reset(code::RESET);
                        Attempt::Retry(e.to_string())
                    }
                };
            }
            read = cr.read(&mut chunk[..(EARLY_MAX - early.bytes.len()).clamp(1, 16 * 1024)]), if room => {
                match read {
                    Ok(0) => {
                        early.eof = true;
                        let _ = send.finish();
                    }
                    Ok(n) => {
                        early.bytes.extend_from_slice(&chunk[..n]);
                        if send.write_all(&chunk[..n]).await.is_err() {
                            return Attempt::Retry("stream closed while sending".into());
                        }
                    }
                    Err(_) => {
                        let _ = send.reset(code::RESET);
                        return Attempt::ClientGone;
                    }
                }
            }
            _ = tokio::time::sleep(HEALTH_POLL) => {
                // A silent path: give up on this peer once its tunnel is
                // known Down (or closed), not on a guess.
                if tunnel.health().state == TunnelHealth::Down || tunnel.conn.close_reason().is_some() {
                    let _ = send.reset(code::RESET);
                    return Attempt::Retry("tunnel went down before the answer".into());
                }
                if tokio::time::Instant::now() >= deadline {
                    let _ = send.reset(code::RESET);
                    return Attempt::Retry(format!("no answer within {:?}", settings.open_timeout));
                }
            }
        }
    }
}
