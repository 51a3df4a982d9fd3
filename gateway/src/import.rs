//! The importing side: a TCP listener per import; each client connection
//! becomes a service stream on a tunnel the routing plane chooses. The OPEN
//! frame and the client's first bytes leave at once, without waiting for
//! the answer: a new connection costs one round trip.
//!
//! The client's early bytes are kept (up to [`EARLY_MAX`]; past that the
//! client is not read until the answer) and replayed on the next candidate
//! only when `strait_core::attempt` says so: on proof that the peer did not
//! forward them (a refusal, or the reset code it uses only before touching
//! its target), or on any failure when the import is declared idempotent.
//! An ambiguous attempt on a non-idempotent import resets the client:
//! failing is better than delivering a payment twice. Retries come out of
//! the plane's retry budget; its breakers eject peers that keep failing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rand::RngCore;
use strait_core::attempt::{Ambiguity, Attempt, AttemptState};
use strait_core::frame::{self, Message, Open, StatusCode};
use strait_core::plane::LOCAL;
use strait_core::target::TargetHealth;
use strait_core::trace::TraceContext;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::admission::Silence;
use crate::config::TunnelSettings;
use crate::handle::PlaneHandle;
use crate::metrics as m;
use crate::note::{Note, NoteSender};
use crate::splice::{ClientConn, FirstByte};
use crate::tunnel::Tunnel;
use crate::wire::{WireError, code, read_frame};

/// Client bytes kept for replay before the answer arrives.
pub const EARLY_MAX: usize = 64 * 1024;
const HEALTH_POLL: Duration = Duration::from_millis(25);

/// Where an import's streams may go.
#[derive(Debug, Clone)]
pub struct Route {
    pub service: String,
    pub prefer: Vec<String>,
    pub own_region: String,
    /// Replaying a request that may have reached a target is harmless.
    pub idempotent: bool,
    pub limits: crate::admission::Limits,
    /// A target in our own region, used first while healthy.
    pub local: Option<String>,
    /// How often the local target is checked (TCP connect).
    pub check_every: Duration,
}

/// Per-import state shared by its client connections.
#[derive(Debug)]
pub struct RouteState {
    pub route: Route,
    admission: crate::admission::Admission,
    /// Hysteresis over the local target's checks (and failed connects).
    local_health: std::sync::Mutex<TargetHealth>,
}

impl RouteState {
    pub fn new(route: Route) -> Self {
        RouteState {
            admission: crate::admission::Admission::reclaiming(&route.limits),
            route,
            local_health: std::sync::Mutex::new(TargetHealth::default()),
        }
    }

    /// Feeds one connect to the local target into its health; tells the
    /// plane (and the observers) when the verdict changes.
    fn local_checked(&self, ok: bool, handle: &PlaneHandle, notes: &NoteSender) {
        let Some(address) = &self.route.local else {
            return;
        };
        let changed = self
            .local_health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .handle_check(ok);
        if let Some(healthy) = changed {
            handle.local(&self.route.service, address, healthy);
            let _ = notes.send(Note::LocalTargetHealth {
                service: self.route.service.clone(),
                target: address.clone(),
                healthy,
            });
        }
    }
}

/// Checks the local target of an import every `check_every` for as long as
/// the import runs.
async fn check_local(
    state: Arc<RouteState>,
    handle: Arc<PlaneHandle>,
    notes: NoteSender,
    timeout: Duration,
) {
    let Some(address) = state.route.local.clone() else {
        return;
    };
    handle.local(&state.route.service, &address, true);
    loop {
        let ok = matches!(
            tokio::time::timeout(timeout, TcpStream::connect(&address)).await,
            Ok(Ok(_))
        );
        state.local_checked(ok, &handle, &notes);
        tokio::time::sleep(state.route.check_every).await;
    }
}

/// The TLS side of an mTLS import: the identity in force serves as the
/// listener's certificate, and workloads of the trust domain are verified
/// against the bundle in force. Rebuilt whenever the identity changes
/// (renewal, reload, CA rotation), so an import never presents a
/// certificate that expired while the gateway ran.
pub struct WorkloadAcceptor {
    identity: Arc<crate::current::CurrentIdentity>,
    built: std::sync::Mutex<(Arc<crate::tls::TlsIdentity>, tokio_rustls::TlsAcceptor)>,
}

impl std::fmt::Debug for WorkloadAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadAcceptor").finish_non_exhaustive()
    }
}

impl WorkloadAcceptor {
    pub fn new(
        identity: Arc<crate::current::CurrentIdentity>,
    ) -> Result<Self, crate::GatewayError> {
        let tls = identity.get();
        let acceptor = Self::build(&tls)?;
        Ok(WorkloadAcceptor {
            identity,
            built: std::sync::Mutex::new((tls, acceptor)),
        })
    }

    fn build(
        tls: &crate::tls::TlsIdentity,
    ) -> Result<tokio_rustls::TlsAcceptor, crate::GatewayError> {
        let verifier = Arc::new(strait_ca::tls::SvidVerifier::new(
            tls.bundle.clone(),
            strait_ca::PeerRequirement::AnyInTrustDomain(tls.trust_domain().clone()),
        ));
        let server = strait_ca::tls::server_config(&tls.identity, verifier, &[])?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
    }

    /// The acceptor for the identity in force now.
    pub fn current(&self) -> tokio_rustls::TlsAcceptor {
        let tls = self.identity.get();
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&built.0, &tls) {
            match Self::build(&tls) {
                Ok(acceptor) => *built = (tls, acceptor),
                Err(e) => tracing::warn!(
                    "the identity in force does not make a workload TLS listener; the import keeps the previous one: {e}"
                ),
            }
        }
        built.1.clone()
    }
}

/// Accepts clients of one import until the listener is dropped.
pub async fn run_import(
    listener: TcpListener,
    route: Route,
    handle: Arc<PlaneHandle>,
    settings: Arc<TunnelSettings>,
    mtls: Option<Arc<WorkloadAcceptor>>,
    notes: NoteSender,
) {
    let state = Arc::new(RouteState::new(route));
    // Dropped with this task (the import removed by a reload): so is the
    // local target's check, and the plane forgets the target.
    let _checker = AbortOnDrop(tokio::spawn(check_local(
        state.clone(),
        handle.clone(),
        notes.clone(),
        settings.connect_timeout.min(state.route.check_every),
    )));
    let _forget = ForgetLocal(
        handle.clone(),
        state.route.service.clone(),
        state.route.local.is_some(),
    );
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
        let (state, handle, settings) = (state.clone(), handle.clone(), settings.clone());
        let notes = notes.clone();
        match &mtls {
            None => {
                tokio::spawn(serve_client(
                    client, None, from, state, handle, settings, notes,
                ));
            }
            Some(acceptor) => {
                let acceptor = acceptor.current();
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
                    serve_client(tls, origin, from, state, handle, settings, notes).await;
                });
            }
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes the import's local target from the plane when dropped.
struct ForgetLocal(Arc<PlaneHandle>, String, bool);

impl Drop for ForgetLocal {
    fn drop(&mut self) {
        if self.2 {
            self.0.forget_local(&self.1);
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

/// What one attempt left the client with.
enum Tried {
    Accepted {
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        leftover: BytesMut,
    },
    /// Refused or ambiguous; the state says which.
    Failed(AttemptState, String),
    /// The client went away; nothing more to do.
    ClientGone,
}

/// How a client connection that got no stream ended, for its log line
/// and metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoStream {
    /// No tunnel offers the service.
    NoPeer,
    /// Every candidate refused, or the retry budget ran out.
    Refused,
    /// The one attempt may have reached a target; not replayed.
    Ambiguous,
}

impl NoStream {
    fn as_str(self) -> &'static str {
        match self {
            NoStream::NoPeer => "no_peer",
            NoStream::Refused => "refused",
            NoStream::Ambiguous => "ambiguous",
        }
    }
}

async fn serve_client<C: ClientConn>(
    client: C,
    origin: Option<String>,
    from: SocketAddr,
    state: Arc<RouteState>,
    handle: Arc<PlaneHandle>,
    settings: Arc<TunnelSettings>,
    notes: NoteSender,
) {
    let started = Instant::now();
    let trace = new_trace();
    let route = &state.route;
    let service = route.service.clone();
    let permit = match state.admission.admit(Some(from.ip())).await {
        Ok(permit) => permit,
        Err(refusal) => {
            handle.counters.finished(false);
            m::FinishedStream {
                region: &route.own_region,
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
    let _active = m::ActiveStream::new(&route.own_region, "import", &service);
    let (mut cr, mut cw) = client.split();
    let mut early = Early::default();
    let mut tried: Vec<String> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    handle.record_open(&service);

    let mut failure = NoStream::NoPeer;
    let accepted = loop {
        if !tried.is_empty() && !handle.try_retry(&service) {
            reasons.push("retry budget exhausted".into());
            break None;
        }
        let coins = crate::handle::coins();
        let (decision, chosen) = handle.route(&service, &route.prefer, &tried, coins);
        if decision.local
            && let Some(address) = &route.local
        {
            tried.push(LOCAL.to_owned());
            match tokio::time::timeout(settings.connect_timeout, TcpStream::connect(address)).await
            {
                Ok(Ok(target)) => {
                    state.local_checked(true, &handle, &notes);
                    handle.local_served(&service, &route.prefer);
                    let local = Local {
                        address,
                        service: &service,
                        region: &route.own_region,
                        started,
                        silence: permit.silence(),
                    };
                    // Boxed: its state would otherwise be reserved in every
                    // stream's task, local or not.
                    if Box::pin(serve_locally(
                        target, &mut cr, &mut cw, &early, &trace, local, &handle, &settings,
                    ))
                    .await
                    {
                        C::reset(cr, cw);
                    }
                    return;
                }
                Ok(Err(e)) => {
                    state.local_checked(false, &handle, &notes);
                    reasons.push(format!("local target {address}: {e}"));
                }
                Err(_) => {
                    state.local_checked(false, &handle, &notes);
                    reasons.push(format!("local target {address}: connect timed out"));
                }
            }
            // Nothing reached the local target: the next candidate may
            // take the stream whatever the import's idempotence.
            failure = NoStream::Refused;
            tracing::warn!(%trace, %service, target = %address, "local target refused the stream; trying remote regions");
            continue;
        }
        let Some(tunnel) = chosen else {
            if tried.is_empty() {
                reasons.push("no tunnel offers the service".into());
            }
            break None;
        };
        tried.push(tunnel.key());
        let guard = handle.track_stream(tunnel.id);
        let open = Open {
            service: service.clone(),
            trace_id: trace.trace_id,
            span_id: trace.span_id,
            origin: origin.clone(),
            relay_to: decision.relay_to.clone().unwrap_or_default(),
            ..Default::default()
        };
        if let Some(region) = &decision.relay_to {
            tracing::info!(%trace, %service, relay = %tunnel.peer, to = %region,
                "no direct route works; asking a gateway of a third region to relay");
        }
        let outcome = attempt(
            &tunnel,
            &handle,
            &trace,
            &open,
            &mut cr,
            &mut early,
            &settings,
            route.idempotent,
        )
        .await;
        match outcome {
            Tried::Accepted {
                send,
                recv,
                leftover,
            } => {
                handle.attempt(tunnel.id, &service, &route.prefer, AttemptState::Accepted);
                let open_labels = [
                    ("region", route.own_region.clone()),
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
            Tried::Failed(state_, reason) => {
                handle.attempt(tunnel.id, &service, &route.prefer, state_);
                let replay = Attempt::from(state_).may_replay(route.idempotent);
                reasons.push(format!("{}: {reason}", tunnel.peer));
                if !replay {
                    failure = NoStream::Ambiguous;
                    tracing::warn!(%trace, %service, peer = %tunnel.peer, %reason, attempt = %state_,
                        "the peer may have forwarded the request; not replayed on another peer (the import is not idempotent)");
                    break None;
                }
                failure = NoStream::Refused;
                let retry_labels = [
                    ("region", route.own_region.clone()),
                    ("service", service.clone()),
                ];
                metrics::counter!(m::RETRIES, &retry_labels).increment(1);
                tracing::warn!(%trace, %service, peer = %tunnel.peer, %reason, attempt = %state_, "attempt failed; replaying on the next peer");
            }
            Tried::ClientGone => return,
        }
    };

    let Some((tunnel, _guard, mut send, mut recv, leftover)) = accepted else {
        handle.counters.finished(false);
        let outcome = failure.as_str();
        m::FinishedStream {
            region: &route.own_region,
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
            %trace, %service, client = %from, outcome,
            reasons = %reasons.join("; "),
            "no peer accepted the stream; resetting the client"
        );
        C::reset(cr, cw);
        return;
    };
    let peer = tunnel.peer.to_string();
    // The early bytes are delivered: keep their count, not the buffer (it
    // may be 64 KiB, for as long as the stream lives), nor the answer
    // buffer's spare room.
    let (early_len, early_eof) = (early.bytes.len() as u64, early.eof);
    drop(early);
    let leftover = bytes::Bytes::copy_from_slice(&leftover);
    let silent = early_len == 0 && leftover.is_empty();
    if !silent && let Some(silence) = permit.silence() {
        silence.spoke();
    }
    let moved = crate::splice::run(
        &mut cr,
        &mut cw,
        &mut send,
        &mut recv,
        crate::splice::SpliceOptions {
            first_to_quic: &[],
            first_to_tcp: &leftover,
            tcp_finished: early_eof,
            idle_timeout: settings.stream_idle_timeout,
            // Bytes already moved (the client's early ones, or the answer's
            // first) count as traffic.
            first_byte: if silent {
                FirstByte {
                    timeout: Some(settings.first_byte_timeout),
                    silence: permit.silence(),
                }
            } else {
                FirstByte::default()
            },
        },
    )
    .await;
    let (up_bytes, down_bytes, reset) = (
        moved.tcp_to_quic + early_len,
        moved.quic_to_tcp,
        moved.reset,
    );
    handle.counters.finished(!reset);
    if reset {
        C::reset(cr, cw);
    }
    let outcome = moved.outcome();
    m::FinishedStream {
        region: &route.own_region,
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

/// A stream served by the import's local target, for its log and metrics.
struct Local<'a> {
    address: &'a str,
    service: &'a str,
    region: &'a str,
    started: Instant,
    silence: Option<&'a Silence>,
}

/// Splices a client to the import's local target: no tunnel involved.
/// Returns whether the client must be reset.
#[allow(clippy::too_many_arguments)]
async fn serve_locally<R, W>(
    target: TcpStream,
    cr: &mut R,
    cw: &mut W,
    early: &Early,
    trace: &TraceContext,
    local: Local<'_>,
    handle: &PlaneHandle,
    settings: &TunnelSettings,
) -> bool
where
    R: crate::splice::Readable,
    W: tokio::io::AsyncWrite + Unpin,
{
    let Local {
        address,
        service,
        region,
        started,
        silence,
    } = local;
    let _ = target.set_nodelay(true);
    tracing::info!(%trace, %service, target = %address, "stream open (import, local target)");
    let moved = crate::splice::tcp_to_tcp(
        cr,
        cw,
        target,
        &early.bytes,
        early.eof,
        settings.stream_idle_timeout,
        FirstByte {
            timeout: Some(settings.first_byte_timeout),
            silence,
        },
    )
    .await;
    let up = moved.tcp_to_quic + early.bytes.len() as u64;
    handle.counters.finished(!moved.reset);
    let outcome = moved.outcome();
    m::FinishedStream {
        region,
        side: "import",
        service,
        peer: LOCAL,
        outcome,
        bytes_in: moved.quic_to_tcp,
        bytes_out: up,
        duration: started.elapsed(),
    }
    .record();
    tracing::info!(
        %trace, %service, peer = LOCAL, target = %address,
        bytes_out = up, bytes_in = moved.quic_to_tcp,
        duration_ms = started.elapsed().as_millis() as u64,
        outcome,
        "stream closed (import)"
    );
    moved.reset
}

/// Feeds a failed stream read into the attempt.
fn read_failed(a: &mut Attempt, e: &WireError) -> AttemptState {
    match e {
        WireError::Read(quinn::ReadError::Reset(c)) => {
            a.handle_reset(code::proves_not_forwarded(*c))
        }
        WireError::Read(quinn::ReadError::ConnectionLost(_)) => {
            a.handle_ambiguous(Ambiguity::TunnelDown)
        }
        WireError::Timeout(_) => a.handle_ambiguous(Ambiguity::NoAnswer),
        _ => a.handle_ambiguous(Ambiguity::Garbled),
    }
}

/// Feeds a failed stream write into the attempt.
fn write_failed(a: &mut Attempt, e: &quinn::WriteError) -> AttemptState {
    match e {
        quinn::WriteError::Stopped(c) => a.handle_reset(code::proves_not_forwarded(*c)),
        quinn::WriteError::ConnectionLost(_) => a.handle_ambiguous(Ambiguity::TunnelDown),
        _ => a.handle_ambiguous(Ambiguity::Reset),
    }
}

/// One try on `tunnel`: OPEN, the early bytes so far, then more client
/// bytes (up to the bound) while waiting for the answer.
#[allow(clippy::too_many_arguments)]
async fn attempt<R: tokio::io::AsyncRead + Unpin>(
    tunnel: &Arc<Tunnel>,
    handle: &PlaneHandle,
    trace: &TraceContext,
    open: &Open,
    cr: &mut R,
    early: &mut Early,
    settings: &TunnelSettings,
    idempotent: bool,
) -> Tried {
    let service = open.service.as_str();
    let mut a = Attempt::new();
    // The peer grants streams up to its max_streams; past that quinn waits
    // for one to close, which an idle stream may not do for an hour.
    let (mut send, mut recv) = match tokio::time::timeout(
        settings.open_timeout,
        tunnel.conn.open_bi(),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Tried::Failed(a.handle_open_failed(), format!("cannot open a stream: {e}"));
        }
        Err(_) => {
            return Tried::Failed(
                a.handle_open_failed(),
                format!(
                    "the peer allowed no new stream within {:?} (the connection carries as many as its max_streams)",
                    settings.open_timeout
                ),
            );
        }
    };
    let mut head = BytesMut::new();
    if let Err(e) = frame::encode(&Message::Open(open.clone()), &mut head) {
        return Tried::Failed(a.handle_open_failed(), e.to_string());
    }
    head.extend_from_slice(&early.bytes);
    a.handle_sent();
    if let Err(e) = send.write_all(&head).await {
        return Tried::Failed(write_failed(&mut a, &e), format!("sending OPEN: {e}"));
    }
    if early.eof {
        let _ = send.finish();
    }
    tracing::info!(%trace, %service, peer = %tunnel.peer, "stream opening (import)");
    let mut answer = BytesMut::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + settings.open_timeout;
    loop {
        let room = !early.eof && early.bytes.len() < EARLY_MAX;
        tokio::select! {
            frame = read_frame(&mut recv, &mut answer, settings.open_timeout) => {
                return match frame {
                    Ok(Message::Status(s)) if s.code == StatusCode::Ok => {
                        a.handle_status(StatusCode::Ok);
                        Tried::Accepted { send, recv, leftover: answer }
                    }
                    Ok(Message::Status(s)) => {
                        let _ = send.reset(code::REFUSED);
                        Tried::Failed(a.handle_status(s.code), format!("{}: {}", s.code, s.message))
                    }
                    Ok(other) => {
                        let _ = send.reset(code::PROTOCOL);
                        Tried::Failed(a.handle_ambiguous(Ambiguity::Garbled), format!("expected STATUS, got {other:?}"))
                    }
                    Err(e) => {
                        let _ = send.reset(code::RESET);
                        Tried::Failed(read_failed(&mut a, &e), e.to_string())
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
                        if let Err(e) = send.write_all(&chunk[..n]).await {
                            return Tried::Failed(write_failed(&mut a, &e), format!("sending: {e}"));
                        }
                    }
                    Err(_) => {
                        let _ = send.reset(code::RESET);
                        return Tried::ClientGone;
                    }
                }
            }
            _ = tokio::time::sleep(HEALTH_POLL) => {
                // A silent path: an attempt that may be replayed moves on
                // once the plane knows its tunnel Down, not on a guess; one
                // that may not waits on (the cut may heal) until the tunnel
                // closes or the open timeout.
                if tunnel.is_closed() || (idempotent && handle.is_down(tunnel.id)) {
                    let _ = send.reset(code::RESET);
                    return Tried::Failed(a.handle_ambiguous(Ambiguity::TunnelDown), "tunnel went down before the answer".into());
                }
                if Instant::now() >= deadline {
                    let _ = send.reset(code::RESET);
                    return Tried::Failed(a.handle_ambiguous(Ambiguity::NoAnswer), format!("no answer within {:?}", settings.open_timeout));
                }
            }
        }
    }
}
