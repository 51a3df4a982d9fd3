//! Connection drivers: the acceptor and the dialer of one address on
//! the one QUIC endpoint, the HELLO exchange on each new connection, its
//! control stream (UPDATE, GOAWAY, TELEMETRY fed to the plane and the mesh
//! view) and the streams it carries. They only move frames and feed the
//! plane; which connection is kept, and which is closed, the plane decides.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use strait_ca::{IdentityKind, SpiffeId};
use strait_core::backoff::Backoff;
use strait_core::discovery::GatewayRef;
use strait_core::frame::{self, Hello, Message, Negotiated, ServiceAd, VersionMismatch};
use strait_core::plane::PeerInfo;
use tokio::sync::watch;

use crate::config::TunnelSettings;
use crate::directory::Directory;
use crate::export::Exports;
use crate::handle::PlaneHandle;
use crate::note::{Note, NoteSender};
use crate::tunnel::Tunnel;
use crate::wire::{code, read_frame, write_frame};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared by every connection task of a gateway.
pub struct Drivers {
    pub me: Hello,
    /// Ours: gateways of a federated trust domain are not learned from.
    pub trust_domain: strait_ca::TrustDomain,
    /// TCP carriers, for peers whose UDP is blocked.
    pub carriers: Arc<crate::carrier::Carriers>,
    /// The gateways this one knows of, and the dialing plan.
    pub directory: Arc<Directory>,
    pub health: strait_core::health::ProbeConfig,
    pub handle: Arc<PlaneHandle>,
    pub exports: Arc<Exports>,
    pub settings: Arc<TunnelSettings>,
    pub notes: NoteSender,
    /// Signed deny lists held and passed on.
    pub revocations: Arc<crate::revocation::Revocations>,
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
    #[error("{0} is this gateway itself: is its own address listed as a peer?")]
    Ourselves(SpiffeId),
    #[error("HELLO asks for lane {lane}; a gateway keeps at most {max} connections per peer")]
    LaneBeyond { lane: u16, max: u16 },
}

/// A connection that passed the HELLO exchange, not yet registered.
pub struct Handshaken {
    pub peer: SpiffeId,
    pub name: String,
    pub region: String,
    /// Which gateway of those sharing the certificate, and where it is
    /// dialed, as its HELLO said.
    pub instance: String,
    pub advertise: String,
    /// The connection's lane, as the dialer's HELLO said.
    pub lane: u16,
    pub services: Vec<ServiceAd>,
    pub agreed: Negotiated,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub buf: BytesMut,
}

/// Exchanges HELLO on a new connection. The dialer opens the control
/// stream and speaks first.
pub async fn handshake(
    conn: &quinn::Connection,
    dialed: bool,
    hello: Hello,
    trust_domain: &strait_ca::TrustDomain,
) -> Result<Handshaken, HandshakeError> {
    let peer = crate::tls::peer_id(conn).ok_or(HandshakeError::NoIdentity)?;
    let (name, region) = match peer.kind() {
        IdentityKind::Gateway { region, name } => (name.to_owned(), region.to_owned()),
        _ => return Err(HandshakeError::NotAGateway(peer)),
    };
    // A federated partner may name a gateway as we name ours.
    if peer.trust_domain() == trust_domain && name == hello.name && region == hello.region {
        return Err(HandshakeError::Ourselves(peer));
    }
    let control = |e: &dyn std::fmt::Display| HandshakeError::Control(e.to_string());
    // Bounded on the dialing side too: a peer that grants no stream, or no
    // window to write HELLO into, is refused with that reason, not waited on.
    let stalled = |what: &str| HandshakeError::Control(format!("{what} within 10 s"));
    let (mut send, mut recv) = if dialed {
        tokio::time::timeout(HELLO_TIMEOUT, conn.open_bi())
            .await
            .map_err(|_| stalled("the peer allowed no control stream"))?
            .map_err(|e| control(&e))?
    } else {
        tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi())
            .await
            .map_err(|_| HandshakeError::NoHello("no control stream within 10 s".into()))?
            .map_err(|e| control(&e))?
    };
    let mut buf = BytesMut::new();
    if dialed {
        tokio::time::timeout(
            HELLO_TIMEOUT,
            write_frame(&mut send, &Message::Hello(hello.clone())),
        )
        .await
        .map_err(|_| stalled("HELLO could not be sent (no flow-control window)"))?
        .map_err(|e| control(&e))?;
    }
    let theirs = match read_frame(&mut recv, &mut buf, HELLO_TIMEOUT).await {
        Ok(Message::Hello(h)) => h,
        Ok(other) => {
            return Err(HandshakeError::NoHello(format!(
                "first frame was {other:?}"
            )));
        }
        // The peer closed the connection (refused our certificate after
        // the handshake, say): its reason says more than the read error.
        Err(e) => {
            return Err(HandshakeError::NoHello(match conn.close_reason() {
                Some(reason) => reason.to_string(),
                None => e.to_string(),
            }));
        }
    };
    let agreed = frame::negotiate(&hello, &theirs).map_err(HandshakeError::Version)?;
    if theirs.name != name || theirs.region != region {
        return Err(HandshakeError::HelloMismatch {
            name: theirs.name,
            region: theirs.region,
            id: peer,
        });
    }
    // The dialer numbers the lanes; its HELLO says which this is.
    let lane = if dialed { hello.lane } else { theirs.lane };
    if lane >= crate::config::MAX_CONNECTIONS_PER_PEER {
        return Err(HandshakeError::LaneBeyond {
            lane,
            max: crate::config::MAX_CONNECTIONS_PER_PEER,
        });
    }
    tracing::debug!(%peer, version = agreed.version, capabilities = ?agreed.capabilities, lane, "protocol agreed in HELLO");
    if !dialed {
        tokio::time::timeout(
            HELLO_TIMEOUT,
            write_frame(&mut send, &Message::Hello(hello)),
        )
        .await
        .map_err(|_| stalled("HELLO could not be sent (no flow-control window)"))?
        .map_err(|e| control(&e))?;
    }
    Ok(Handshaken {
        peer,
        name,
        region,
        instance: theirs.instance,
        advertise: theirs.advertise,
        lane,
        services: theirs.services,
        agreed,
        send,
        recv,
        buf,
    })
}

/// Reads UPDATE, GOAWAY and TELEMETRY from a tunnel's control stream until
/// it ends, feeding the plane and the mesh view (and the directory, when
/// given: not for a federated partner); frames of a kind this version does
/// not know are skipped.
pub async fn follow_control(
    tunnel: Arc<Tunnel>,
    handle: Arc<PlaneHandle>,
    directory: Option<Arc<Directory>>,
    notes: NoteSender,
    revocations: Arc<crate::revocation::Revocations>,
    mut recv: quinn::RecvStream,
    mut buf: BytesMut,
) {
    loop {
        match read_frame(&mut recv, &mut buf, Duration::from_secs(24 * 3600)).await {
            Ok(Message::Telemetry(t)) => {
                if let Some(directory) = &directory {
                    directory.heard_in(&t);
                }
                handle.relayable(tunnel.id, t.origin.relayable.clone());
                let _ = notes.send(Note::Telemetry(t));
            }
            Ok(Message::Update(u)) => handle.services(tunnel.id, u.services),
            Ok(Message::Deny(d)) => revocations.received(&tunnel, d.signed_list).await,
            Ok(Message::GoAway(g)) => {
                tracing::info!(peer = %tunnel.peer, reason = %g.reason, "peer is draining");
                handle.goaway(tunnel.id);
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
            Err(e) => {
                // A closed connection ends its control stream too; only a
                // control stream that failed on a live tunnel is news.
                if tunnel.conn.close_reason().is_none() {
                    tracing::warn!(peer = %tunnel.peer, "control stream failed; no more UPDATEs from this peer: {e}");
                } else {
                    tracing::debug!(peer = %tunnel.peer, "control stream ended: {e}");
                }
                return;
            }
        }
    }
}

/// Accepts connections until the endpoint closes. Each new handshake goes
/// through the gate first (`strait_core::handshake`): under a backlog a
/// stranger proves its address with a QUIC Retry before any handshake work,
/// and beyond `max_handshakes` it is refused.
pub async fn accept_loop(endpoint: quinn::Endpoint, drivers: Arc<Drivers>) {
    use strait_core::handshake::Admit;
    let gate = crate::gate::handshake_gate(&drivers.settings);
    let region = drivers.handle.region().to_owned();
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        let admit = gate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .handle_incoming(
                remote.ip(),
                incoming.remote_address_validated(),
                incoming.may_retry(),
                tokio::time::Instant::now().into_std(),
            );
        metrics::counter!(
            crate::metrics::HANDSHAKES,
            "region" => region.clone(),
            "decision" => admit.as_str()
        )
        .increment(1);
        match admit {
            Admit::Retry => {
                // Fails only when a Retry was already sent; then it is
                // dropped like any other handshake we cannot take.
                if let Err(e) = incoming.retry() {
                    e.into_incoming().ignore();
                }
            }
            Admit::RefuseBusy | Admit::RefuseStrikes => {
                incoming.refuse();
                let (stage, reason) =
                    crate::gate::refusal(admit, "handshakes", &drivers.settings, remote);
                let _ = drivers.notes.send(Note::PeerRefused {
                    addr: remote,
                    stage,
                    reason,
                });
            }
            Admit::Accept => {
                let drivers = drivers.clone();
                let gate = gate.clone();
                tokio::spawn(async move {
                    let mut in_flight = crate::gate::InFlight::new(gate, remote.ip());
                    let result = incoming.await;
                    in_flight.failed = result.is_err();
                    drop(in_flight);
                    match result {
                        Ok(conn) => {
                            let _ = run_connection(conn, None, drivers).await;
                        }
                        Err(e) => {
                            let _ = drivers.notes.send(Note::PeerRefused {
                                addr: remote,
                                stage: "handshake",
                                reason: e.to_string(),
                            });
                        }
                    }
                });
            }
        }
    }
}

/// Which lane a dial loop keeps, and what tells it the peer takes lanes.
#[derive(Clone)]
pub struct Lane {
    pub lane: u16,
    /// Set by lane 0 once HELLO agreed `lanes` (cleared when a HELLO did
    /// not): the other lanes dial only while it is set, since an older
    /// peer would take their connections as replacements of lane 0's.
    pub gate: Arc<watch::Sender<bool>>,
}

/// How often a dialer looks whether its tunnel was found Down.
const DOWN_CHECK: Duration = Duration::from_millis(250);

/// With `[tunnel] transport = "auto"`: how long a QUIC handshake may go
/// unanswered before the tunnel is dialed over the TCP carrier instead.
pub const FALLBACK_AFTER: Duration = Duration::from_secs(3);

/// While a tunnel runs over the TCP carrier (auto): how often UDP is tried
/// again.
pub const QUIC_RETRY: Duration = Duration::from_secs(10);

/// Why a dial did not give a tunnel.
struct DialFailure {
    text: String,
    /// Nothing answered over UDP (worth trying the TCP carrier).
    unanswered: bool,
}

impl From<String> for DialFailure {
    fn from(text: String) -> Self {
        DialFailure {
            text,
            unanswered: false,
        }
    }
}

/// Dials `address` and keeps a tunnel to it on `lane`, redialing with
/// capped, jittered backoff, until `stop`, or until `retire` is set while it
/// holds no tunnel (a tunnel it holds is never cut for that). Over the TCP
/// carrier when `[tunnel] transport` says so, or (auto) once QUIC gave no
/// answer.
pub async fn dial_loop(
    endpoint: quinn::Endpoint,
    target: strait_core::discovery::DialTarget,
    identity: Arc<crate::reload::CurrentIdentity>,
    lane: Lane,
    drivers: Arc<Drivers>,
    mut stop: watch::Receiver<bool>,
    mut retire: watch::Receiver<bool>,
) {
    use crate::config::Transport;
    use rand::Rng;
    let address = &target.address;
    let transport = drivers.settings.transport;
    let mut carried = transport == Transport::Tcp;
    let mut backoff = Backoff::new(drivers.settings.redial_min, drivers.settings.redial_max);
    let mut gate = lane.gate.subscribe();
    loop {
        if *retire.borrow_and_update() {
            return;
        }
        if lane.lane > 0 && !*gate.borrow_and_update() {
            tokio::select! {
                r = gate.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
                r = retire.changed() => if r.is_err() { return },
            }
            continue;
        }
        // The identity in force now: it may have been reloaded.
        let tls = identity.get();
        let td = target.trust_domain.as_deref();
        let region = target.region.as_deref();
        let dialed = match tls.client_config_in(td, region, &drivers.settings) {
            Ok(client) if carried => {
                let carrier_tls = tls.rustls_client(td, region, crate::carrier::ALPN);
                match carrier_tls {
                    Ok(carrier_tls) => {
                        let quic_retry = (transport == Transport::Auto).then_some(&client);
                        dial_carried(
                            &endpoint,
                            &client,
                            carrier_tls,
                            address,
                            &lane,
                            &drivers,
                            &mut stop,
                            quic_retry,
                        )
                        .await
                        .map(|back_on_udp| {
                            if back_on_udp {
                                carried = false;
                            }
                        })
                    }
                    Err(e) => Err(e.to_string().into()),
                }
            }
            Ok(client) => {
                let patience = (transport == Transport::Auto).then_some(FALLBACK_AFTER);
                dial_once(
                    &endpoint, &client, address, &lane, &drivers, &mut stop, patience,
                )
                .await
            }
            Err(e) => Err(e.to_string().into()),
        };
        if lane.lane == 0 {
            drivers.directory.dialed(address, dialed.is_ok());
        }
        match dialed {
            Ok(()) => backoff.reset(),
            Err(e) if e.unanswered && transport == Transport::Auto && !carried => {
                tracing::warn!(peer_addr = %address, lane = lane.lane,
                    "no QUIC answer within {FALLBACK_AFTER:?} (UDP blocked?): dialing over the TCP carrier");
                carried = true;
                continue;
            }
            Err(e) => {
                let e = strait_ca::tls::tidy_handshake_text(&e.text);
                tracing::warn!(peer_addr = %address, lane = lane.lane, "cannot reach peer: {e}");
                // The carrier did not help either: UDP first again.
                if carried && transport == Transport::Auto {
                    carried = false;
                }
            }
        }
        let delay = backoff.next_delay(rand::rng().random::<f64>());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
            r = retire.changed() => if r.is_err() { return },
        }
    }
}

async fn resolve(address: &str) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{address} resolved to no address"));
    }
    Ok(addrs)
}

/// Dials QUIC over UDP and runs the tunnel (see [`run_dialed`]). With
/// `patience`, a handshake that gets no answer in that time is given up as
/// unanswered.
async fn dial_once(
    endpoint: &quinn::Endpoint,
    client: &quinn::ClientConfig,
    address: &str,
    lane: &Lane,
    drivers: &Arc<Drivers>,
    stop: &mut watch::Receiver<bool>,
    patience: Option<Duration>,
) -> Result<(), DialFailure> {
    let mut last = DialFailure::from(format!("{address} resolved to no address"));
    for addr in resolve(address).await? {
        let connecting = endpoint
            .connect_with(client.clone(), addr, "strait-gateway")
            .map_err(|e| e.to_string())?;
        let answered = match patience {
            Some(p) => tokio::time::timeout(p, connecting).await,
            None => Ok(connecting.await),
        };
        match answered {
            Ok(Ok(conn)) => return run_dialed(conn, lane, drivers, stop).await,
            Ok(Err(e)) => {
                last = DialFailure {
                    unanswered: matches!(e, quinn::ConnectionError::TimedOut),
                    text: format!("{addr}: {e}"),
                }
            }
            Err(_) => {
                last = DialFailure {
                    text: format!("{addr}: no QUIC answer within {patience:?}"),
                    unanswered: true,
                }
            }
        }
    }
    Err(last)
}

/// Dials QUIC over a TCP carrier to `address` and runs the tunnel. With
/// `quic_retry`, UDP is tried again every [`QUIC_RETRY`] meanwhile: once it
/// answers, the tunnel over UDP takes over (it supersedes the carried
/// connection, which keeps its streams until they end and then closes) and
/// this returns true.
#[allow(clippy::too_many_arguments)]
async fn dial_carried(
    endpoint: &quinn::Endpoint,
    client: &quinn::ClientConfig,
    carrier_tls: rustls::ClientConfig,
    address: &str,
    lane: &Lane,
    drivers: &Arc<Drivers>,
    stop: &mut watch::Receiver<bool>,
    quic_retry: Option<&quinn::ClientConfig>,
) -> Result<bool, DialFailure> {
    let real = resolve(address).await?[0];
    let virt = drivers.carriers.dial(real, carrier_tls).await?;
    let conn = match endpoint
        .connect_with(client.clone(), virt, "strait-gateway")
        .map_err(|e| e.to_string())
    {
        Ok(connecting) => connecting
            .await
            .map_err(|e| format!("{real} over TCP: {e}")),
        Err(e) => Err(e),
    };
    let conn = match conn {
        Ok(conn) => conn,
        Err(e) => {
            drivers.carriers.close(virt);
            return Err(e.into());
        }
    };
    // The carrier's TCP connection ends with the QUIC connection over it.
    tokio::spawn({
        let (conn, carriers) = (conn.clone(), drivers.carriers.clone());
        async move {
            conn.closed().await;
            carriers.close(virt);
        }
    });
    let carried = {
        let (lane, drivers, mut stop) = (lane.clone(), drivers.clone(), stop.clone());
        async move { run_dialed(conn, &lane, &drivers, &mut stop).await }
    };
    let Some(quic) = quic_retry else {
        return carried.await.map(|()| false);
    };
    let mut carried = Box::pin(carried);
    let udp = loop {
        tokio::select! {
            r = &mut carried => return r.map(|()| false),
            _ = tokio::time::sleep(QUIC_RETRY) => {}
        }
        let Ok(connecting) = endpoint.connect_with(quic.clone(), real, "strait-gateway") else {
            continue;
        };
        if let Ok(Ok(conn)) = tokio::time::timeout(FALLBACK_AFTER, connecting).await {
            break conn;
        }
    };
    tracing::info!(peer_addr = %address, lane = lane.lane,
        "QUIC answers over UDP again: new streams move to it, the TCP carrier closes once its streams end");
    tokio::spawn(carried);
    run_dialed(udp, lane, drivers, stop).await.map(|()| true)
}

/// Runs a dialed connection as a tunnel until it closes, is found Down (it
/// then runs on by itself, keeping its streams, while the caller dials
/// again beside it), or is superseded (this then waits until the one that
/// took its place is gone or Down).
async fn run_dialed(
    conn: quinn::Connection,
    lane: &Lane,
    drivers: &Arc<Drivers>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), DialFailure> {
    let mut run = Box::pin({
        let (conn, lane, drivers) = (conn.clone(), lane.clone(), drivers.clone());
        async move { run_connection(conn, Some(&lane), drivers).await }
    });
    let peer = loop {
        tokio::select! {
            peer = &mut run => break peer?,
            _ = tokio::time::sleep(DOWN_CHECK) => {
                // Found Down: the connection keeps its streams (a cut may
                // heal), and a new one is dialed beside it. If the cut
                // heals first the old one drains; if the peer restarted
                // the new one replaces it.
                if drivers.handle.quic_conn_down(&conn) {
                    tokio::spawn(async move {
                        let _ = run.await;
                    });
                    return Ok(());
                }
            }
        }
    };
    // Ours was replaced or superseded by another connection to the same
    // peer and lane: redial only once that one is gone or Down too, or two
    // dialers to one gateway would replace each other.
    let mut changed = drivers.handle.subscribe();
    while drivers.handle.has_live(&peer, lane.lane) {
        tokio::select! {
            r = changed.changed() => if r.is_err() { break },
            _ = stop.changed() => break,
        }
    }
    Ok(())
}

/// Runs one connection as a tunnel until it closes; returns the peer's
/// key (SPIFFE ID and instance). `dialed` is the lane this gateway dialed
/// it for; `None` for one it accepted.
async fn run_connection(
    conn: quinn::Connection,
    dialed: Option<&Lane>,
    drivers: Arc<Drivers>,
) -> Result<String, String> {
    let remote = conn.remote_address();
    let hello = Hello {
        services: drivers.exports.ads(),
        lane: dialed.map_or(0, |l| l.lane),
        ..drivers.me.clone()
    };
    let lane_gate = dialed.filter(|l| l.lane == 0).map(|l| l.gate.clone());
    let dialed = dialed.is_some();
    let shaken = match handshake(&conn, dialed, hello, &drivers.trust_domain).await {
        Ok(t) => t,
        Err(e) => {
            let _ = drivers.notes.send(Note::PeerRefused {
                addr: remote,
                stage: "hello",
                reason: e.to_string(),
            });
            conn.close(code::BAD_HELLO, e.to_string().as_bytes());
            return Err(e.to_string());
        }
    };
    let Handshaken {
        peer,
        name,
        region,
        instance,
        advertise,
        lane,
        services,
        agreed,
        send,
        recv,
        buf,
    } = shaken;
    if let Some(gate) = lane_gate {
        let takes_lanes = agreed.capabilities.iter().any(|c| c == frame::LANES);
        gate.send_if_modified(|open| std::mem::replace(open, takes_lanes) != takes_lanes);
    }
    let info = PeerInfo::new(&peer.to_string(), &name, &region, &instance).with_lane(lane);
    let key = info.key.clone();
    // A federated partner's gateways are dialed through its seeds only:
    // what it says of its mesh does not enter ours.
    let ours = peer.trust_domain() == &drivers.trust_domain;
    if ours {
        drivers.directory.heard(
            GatewayRef {
                region: region.clone(),
                name: name.clone(),
                instance: instance.clone(),
            },
            &advertise,
            Duration::ZERO,
        );
    }
    let tunnel = drivers.handle.register(info, dialed, services, |id| {
        Tunnel::new(id, peer, name, region, conn.clone(), dialed, agreed)
            .with_instance(instance, advertise)
            .with_lane(lane)
    });
    tunnel.set_control(send).await;
    drivers.revocations.greet(&tunnel).await;
    tokio::spawn(crate::windows::follow_path(
        conn.clone(),
        crate::windows::policy(&drivers.settings),
    ));
    let control = tokio::spawn(follow_control(
        tunnel.clone(),
        drivers.handle.clone(),
        ours.then(|| drivers.directory.clone()),
        drivers.notes.clone(),
        drivers.revocations.clone(),
        recv,
        buf,
    ));
    let prober = tokio::spawn(crate::probe::run(
        tunnel.clone(),
        drivers.handle.clone(),
        drivers.health.clone(),
    ));
    let reason = loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(crate::export::serve_stream(
                    tunnel.clone(),
                    drivers.handle.clone(),
                    drivers.exports.clone(),
                    drivers.settings.clone(),
                    send,
                    recv,
                ));
            }
            Err(e) => break e,
        }
    };
    control.abort();
    prober.abort();
    drivers.handle.closed(tunnel.id);
    // What QUIC saw of the path, for a tunnel that ended unasked.
    let stats = conn.stats();
    tracing::info!(
        peer = %tunnel.peer, peer_addr = %remote, conn = %tunnel.id, %reason,
        rtt_ms = stats.path.rtt.as_millis() as u64,
        cwnd = stats.path.cwnd,
        mtu = stats.path.current_mtu,
        sent_packets = stats.path.sent_packets,
        lost_packets = stats.path.lost_packets,
        black_holes = stats.path.black_holes_detected,
        datagrams_out = stats.udp_tx.datagrams,
        datagrams_in = stats.udp_rx.datagrams,
        "tunnel connection ended"
    );
    Ok(key)
}
