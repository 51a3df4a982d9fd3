//! Wiring a gateway together: the QUIC endpoint (one UDP port, both dialing
//! and accepting), the routing plane and its observers, the dialers of
//! configured peers, the acceptor, the import listeners and the admin
//! endpoint; and stopping them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use strait_core::frame::Hello;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::GatewayError;
use crate::admin::{AdminState, serve_admin};
use crate::config::{GatewayConfig, TunnelSettings};
use crate::connection::{Drivers, accept_loop};
use crate::directory::Directory;
use crate::events::EventLog;
use crate::export::Exports;
use crate::handle::PlaneHandle;
use crate::import::run_import;
use crate::tls::TlsIdentity;
use crate::wire::code;

/// A running gateway. Dropping it does not stop it; call
/// [`RunningGateway::shutdown`].
pub struct RunningGateway {
    endpoint: quinn::Endpoint,
    /// Each import listener's task, with the configuration it runs.
    imports: Vec<(crate::config::ImportConfig, JoinHandle<()>)>,
    /// The configured seeds, read by the dialers' supervisor.
    seeds: watch::Sender<Vec<crate::config::PeerConfig>>,
    config: GatewayConfig,
    drivers: Arc<Drivers>,
    identity: Arc<crate::reload::CurrentIdentity>,
    drain_grace: Duration,
    handle: Arc<PlaneHandle>,
    events: Arc<EventLog>,
    admin: Arc<AdminState>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    quic_addr: SocketAddr,
    admin_addr: SocketAddr,
    import_addrs: Vec<(String, SocketAddr)>,
}

impl RunningGateway {
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where each import listens (service, address), in config order.
    pub fn import_addrs(&self) -> &[(String, SocketAddr)] {
        &self.import_addrs
    }

    /// The routing plane and its tunnels.
    pub fn handle(&self) -> &Arc<PlaneHandle> {
        &self.handle
    }

    /// The event log of `/status`.
    pub fn events(&self) -> &Arc<EventLog> {
        &self.events
    }

    /// Drains, then shuts down: new client connections are refused at
    /// once, peers get GOAWAY (and stop sending new streams without waiting
    /// for probes to notice), `/readyz` turns not-ready, and active streams
    /// get up to the drain grace period to finish.
    pub async fn drain(self) {
        tracing::info!(grace = ?self.drain_grace, "draining");
        self.admin.draining.store(true, Ordering::SeqCst);
        self.drivers.exports.set_draining();
        for (_, import) in &self.imports {
            import.abort();
        }
        let goaway = strait_core::frame::Message::GoAway(strait_core::frame::GoAway {
            reason: "draining".into(),
        });
        for t in self.handle.tunnels() {
            t.send_control(&goaway).await;
        }
        let deadline = tokio::time::Instant::now() + self.drain_grace;
        loop {
            let active = self.handle.active_streams();
            if active == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(active, "drain grace over; closing streams still open");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.shutdown().await;
    }

    /// Stops accepting, closes every tunnel and waits (briefly) for the
    /// peers to learn of it.
    pub async fn shutdown(self) {
        for (_, import) in &self.imports {
            import.abort();
        }
        self.admin.draining.store(true, Ordering::SeqCst);
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        self.handle.close_all();
        self.endpoint
            .close(code::SHUTDOWN, b"gateway shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// Raises the soft limit on open files to the hard one (as Go's runtime
/// and most servers do): every stream holds a socket, and the common soft
/// default of 1,024 would refuse streams long before any other limit.
/// Warns when even the hard limit is below what the imports may hold.
fn raise_fd_limit(config: &GatewayConfig) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!("cannot read or raise the open-file limit: {e}");
            return;
        }
    };
    let streams: u64 = config
        .imports
        .iter()
        .map(|i| i.limits.max_concurrent.unwrap_or(usize::MAX) as u64)
        .fold(0u64, u64::saturating_add);
    if limit < streams.saturating_add(256) {
        tracing::warn!(
            open_files = limit,
            import_streams = streams,
            "the open-file limit is below what the imports may carry at once (a socket per stream): streams past it are refused; raise the limit (ulimit -n, the container's nofile) or lower max_concurrent"
        );
    } else {
        tracing::info!(open_files = limit, "open-file limit");
    }
}

/// Starts a gateway from a validated configuration.
pub async fn start(mut config: GatewayConfig) -> Result<RunningGateway, GatewayError> {
    let tls = TlsIdentity::load(&config.identity)?.with_federation(&config.federation)?;
    config.take_name_from(tls.gateway_name_region().map(|(name, _)| name));
    tls.require_gateway(&config.name, &config.region)?;
    let settings = Arc::new(config.tunnel.clone());
    raise_fd_limit(&config);
    let packet_filter = Arc::new(crate::drill::PacketFilter::default());
    let carriers = Arc::new(crate::carrier::Carriers::new(packet_filter.clone()));
    let endpoint = endpoint(
        config.listen,
        &tls,
        &settings,
        packet_filter.clone(),
        carriers.clone(),
    )?;
    let quic_addr = endpoint.local_addr().map_err(|source| GatewayError::Bind {
        what: "the QUIC listener",
        addr: config.listen,
        source,
    })?;
    let advertise = config.advertise_address(std::env::var("STRAIT_ADVERTISE").ok(), quic_addr)?;
    // The advertised address tells apart gateways that share a certificate
    // and stays the same across restarts; without one, a random instance.
    let instance = advertise
        .clone()
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    let me = strait_core::discovery::GatewayRef {
        region: config.region.clone(),
        name: config.name.clone(),
        instance: instance.clone(),
    };
    let mut discovery = strait_core::discovery::DiscoveryConfig::new(me);
    discovery.tunnels_per_region = config.tunnel.tunnels_per_region;
    discovery.learn = config.tunnel.discover;
    let directory = Arc::new(Directory::new(discovery));
    let mut plane = strait_core::plane::PlaneConfig::new(
        &strait_core::plane::peer_key(&tls.id().to_string(), &instance),
        &config.region,
    );
    plane.hold_down = config.hold_down;
    // A cut that heals within the QUIC idle timeout costs new streams a
    // failover and established ones nothing: a Down tunnel is given up
    // (its streams reset) only when QUIC would give it up anyway.
    plane.dead_after = settings.idle_timeout;
    let (handle, plane_events) = PlaneHandle::new(plane);
    let (notes, notes_rx) = tokio::sync::mpsc::unbounded_channel();
    let events = Arc::new(EventLog::default());
    let mesh = Arc::new(crate::telemetry::MeshView::new(
        &config.name,
        &config.region,
        &instance,
        advertise.as_deref().unwrap_or(""),
    ));
    let exports = Arc::new(Exports::new(
        &config.exports,
        tls.trust_domain().as_str(),
        &config.region,
    ));
    exports.set_relay(config.relay);
    exports.set_id(&tls.id().to_string());
    let expiry = tls
        .identity
        .not_after
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let cert_labels = [
        ("region", config.region.clone()),
        ("id", tls.id().to_string()),
    ];
    metrics::gauge!(crate::metrics::CERT_EXPIRY, &cert_labels).set(expiry.as_secs_f64());
    let identity = Arc::new(crate::reload::CurrentIdentity::new(
        tls.clone(),
        config.federation.clone(),
    ));
    let revocations = Arc::new(crate::revocation::Revocations::new(
        identity.clone(),
        handle.clone(),
        events.clone(),
        &config.region,
    ));
    // The CA's signed list this gateway starts with, to pass on.
    if let Ok(text) = std::fs::read_to_string(&config.identity.deny) {
        revocations.from_file(&text).await;
    }
    let drivers = Arc::new(Drivers {
        trust_domain: tls.trust_domain().clone(),
        carriers: carriers.clone(),
        revocations: revocations.clone(),
        me: Hello {
            instance: instance.clone(),
            advertise: advertise.clone().unwrap_or_default(),
            ..Hello::new(config.name.clone(), config.region.clone(), exports.ads())
        },
        directory: directory.clone(),
        handle: handle.clone(),
        exports: exports.clone(),
        settings: settings.clone(),
        health: config.health.clone(),
        notes: notes.clone(),
    });
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let observers = crate::obs::Observers {
        region: config.region.clone(),
        events: events.clone(),
        mesh: mesh.clone(),
        refusals: crate::obs::Observers::refusal_budget(),
    };
    tasks.push(tokio::spawn(observers.run(plane_events, notes_rx)));
    tasks.push(tokio::spawn(handle.clone().run_timers()));

    let mut import_addrs = Vec::new();
    let mut imports = Vec::new();
    for import in &config.imports {
        let listener = bind_import(import).await?;
        let addr = listener.local_addr().unwrap_or(import.listen);
        import_addrs.push((import.service.clone(), addr));
        let task = spawn_import(
            listener, import, &config, &handle, &settings, &identity, &notes,
        )?;
        imports.push((import.clone(), task));
    }
    let admin_listener =
        TcpListener::bind(config.admin)
            .await
            .map_err(|source| GatewayError::Bind {
                what: "the admin endpoint",
                addr: config.admin,
                source,
            })?;
    let admin_addr = admin_listener.local_addr().unwrap_or(config.admin);
    let drills = Arc::new(crate::drill::DrillControl::new(
        &config.region,
        packet_filter,
        handle.clone(),
        directory.clone(),
        events.clone(),
    ));
    tasks.push(tokio::spawn(drills.clone().run()));
    let admin = Arc::new(AdminState {
        drills,
        exports_state: exports.clone(),
        id: tls.id().to_string(),
        name: config.name.clone(),
        region: config.region.clone(),
        instance: instance.clone(),
        advertise: advertise.clone().unwrap_or_default(),
        directory: directory.clone(),
        handle: handle.clone(),
        events: events.clone(),
        mesh: mesh.clone(),
        imports: std::sync::Mutex::new(
            import_addrs
                .iter()
                .zip(&config.imports)
                .map(|((service, listen), import)| crate::config::ImportConfig {
                    service: service.clone(),
                    listen: *listen,
                    prefer: import.prefer.clone(),
                    limits: import.limits.clone(),
                    mtls: import.mtls,
                    idempotent: import.idempotent,
                    local: import.local.clone(),
                })
                .collect(),
        ),
        peer_regions: std::sync::Mutex::new(config.peer_regions()),
        ready: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        identity: identity.clone(),
    });
    tasks.push(tokio::spawn(serve_admin(admin_listener, admin.clone())));
    tasks.push(tokio::spawn(accept_loop(endpoint.clone(), drivers.clone())));
    tasks.push(tokio::spawn(crate::telemetry::share(
        mesh.clone(),
        handle.clone(),
        exports.clone(),
    )));
    tasks.push(tokio::spawn(exports.clone().check_targets(
        handle.clone(),
        notes.clone(),
        config.target_check,
        settings.connect_timeout.min(config.target_check),
    )));
    tasks.push(tokio::spawn(crate::reload::watch(
        config.health.interval,
        config.identity.clone(),
        config.name.clone(),
        config.region.clone(),
        identity.clone(),
        endpoint.clone(),
        settings.clone(),
        handle.clone(),
        events.clone(),
        revocations.clone(),
    )));
    tasks.push(tokio::spawn(crate::renew::report_expiry(
        identity.clone(),
        config.region.clone(),
        events.clone(),
    )));
    if let Some(renewal) = &config.renewal {
        tasks.push(tokio::spawn(crate::renew::run(
            renewal.clone(),
            config.identity.clone(),
            identity.clone(),
            config.region.clone(),
            events.clone(),
        )));
    }
    for peer in &config.peers {
        // Fail at start, not at the first dial, if the config cannot build.
        tls.client_config(peer.region.as_deref(), &settings)?;
    }
    // The TCP carrier's listener, on the tunnel port's TCP twin: peers
    // whose UDP is blocked reach us through it.
    match tokio::net::TcpListener::bind(quic_addr).await {
        Ok(listener) => {
            tracing::info!(listen = %quic_addr, "TCP carrier listening (for peers that cannot use UDP)");
            tasks.push(tokio::spawn(carriers.clone().serve(
                listener,
                identity.clone(),
                drivers.settings.clone(),
                drivers.notes.clone(),
            )));
        }
        Err(e) => tracing::warn!(listen = %quic_addr,
            "no TCP carrier listener (peers whose UDP is blocked cannot reach this gateway): {e}"),
    }
    let (seeds, seeds_rx) = watch::channel(config.peers.clone());
    tasks.push(tokio::spawn(crate::dialers::run(
        endpoint.clone(),
        identity.clone(),
        drivers.clone(),
        seeds_rx,
        stop_rx.clone(),
    )));
    admin.ready.store(true, Ordering::SeqCst);
    tracing::info!(
        id = %tls.id(), quic = %quic_addr, admin = %admin_addr,
        instance = %instance, advertise = advertise.as_deref().unwrap_or("-"),
        peers = config.peers.len(), exports = config.exports.len(), imports = config.imports.len(),
        "gateway started"
    );
    Ok(RunningGateway {
        endpoint,
        imports,
        seeds,
        config: config.clone(),
        drivers,
        identity,
        drain_grace: config.drain_grace,
        handle,
        events,
        admin,
        tasks,
        stop,
        quic_addr,
        admin_addr,
        import_addrs,
    })
}

/// Connections the kernel completes for an import before the gateway
/// accepts them (capped by net.core.somaxconn). The usual 128 or 1,024
/// overflow when thousands of clients connect at once: the kernel then
/// drops their handshakes' last packet, and a client that waits for the
/// server to speak first hangs until its SYN-ACK is retried, or for good.
const IMPORT_BACKLOG: u32 = 8_192;

async fn bind_import(import: &crate::config::ImportConfig) -> Result<TcpListener, GatewayError> {
    let bind = || {
        let socket = match import.listen {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(import.listen)?;
        socket.listen(IMPORT_BACKLOG)
    };
    bind().map_err(|source| GatewayError::Bind {
        what: "an import listener",
        addr: import.listen,
        source,
    })
}

fn spawn_import(
    listener: TcpListener,
    import: &crate::config::ImportConfig,
    config: &GatewayConfig,
    handle: &Arc<PlaneHandle>,
    settings: &Arc<TunnelSettings>,
    identity: &Arc<crate::reload::CurrentIdentity>,
    notes: &crate::note::NoteSender,
) -> Result<JoinHandle<()>, GatewayError> {
    let mtls = if import.mtls {
        Some(Arc::new(crate::import::WorkloadAcceptor::new(
            identity.clone(),
        )?))
    } else {
        None
    };
    let route = crate::import::Route {
        service: import.service.clone(),
        prefer: import.prefer.clone(),
        own_region: config.region.clone(),
        idempotent: import.idempotent,
        limits: import.limits.clone(),
        local: import.local.clone(),
        check_every: config.target_check,
    };
    Ok(tokio::spawn(run_import(
        listener,
        route,
        handle.clone(),
        settings.clone(),
        mtls,
        notes.clone(),
    )))
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct ReloadSummary {
    pub imports_added: usize,
    pub imports_removed: usize,
    pub exports_changed: bool,
    pub peers_added: usize,
    pub peers_removed: usize,
    /// The federated trust domains changed (tunnels to one removed are
    /// cut).
    pub federation_changed: bool,
}

impl RunningGateway {
    /// Applies a new, validated configuration without touching what it
    /// does not change: imports and peer dialers are added and removed one
    /// by one (open streams of a removed import finish), exports are
    /// swapped (peers hear of it with UPDATE). Settings that need a restart
    /// (name, region, listen, admin, identity paths, tunnel, health) are
    /// refused with an error, and then nothing changes.
    pub async fn reload(&mut self, mut new: GatewayConfig) -> Result<ReloadSummary, GatewayError> {
        let old = &self.config;
        if new.name.is_empty() {
            new.name = old.name.clone();
        }
        let fixed = [
            ("gateway.name", old.name != new.name),
            ("gateway.region", old.region != new.region),
            ("gateway.listen", old.listen != new.listen),
            ("gateway.advertise", old.advertise != new.advertise),
            ("gateway.admin", old.admin != new.admin),
            (
                "identity",
                old.identity.cert != new.identity.cert
                    || old.identity.key != new.identity.key
                    || old.identity.bundle != new.identity.bundle
                    || old.identity.deny != new.identity.deny,
            ),
            ("identity.ca_service", old.renewal != new.renewal),
        ];
        if let Some((key, _)) = fixed.iter().find(|(_, changed)| *changed) {
            return Err(GatewayError::NeedsRestart {
                key: (*key).to_owned(),
            });
        }
        // Partner bundles must load before anything changes.
        let federation_changed = old.federation != new.federation;
        if federation_changed {
            (*self.identity.get())
                .clone()
                .with_federation(&new.federation)?;
        }
        let mut summary = ReloadSummary::default();
        // Bind new listeners first: a port that cannot be bound fails the
        // reload before anything changed, unless the port is being freed by
        // an import this reload removes.
        let removed: Vec<usize> = (0..self.imports.len())
            .filter(|i| !new.imports.contains(&self.imports[*i].0))
            .collect();
        let freed: Vec<SocketAddr> = removed.iter().map(|i| self.imports[*i].0.listen).collect();
        let added: Vec<&crate::config::ImportConfig> = new
            .imports
            .iter()
            .filter(|i| !self.imports.iter().any(|(c, _)| c == *i))
            .collect();
        let mut bound = Vec::new();
        for import in added.iter().filter(|i| !freed.contains(&i.listen)) {
            bound.push((*import, bind_import(import).await?));
        }
        for i in removed.iter().rev() {
            let (_, task) = self.imports.remove(*i);
            task.abort();
            summary.imports_removed += 1;
        }
        for import in added.iter().filter(|i| freed.contains(&i.listen)) {
            bound.push((*import, bind_import(import).await?));
        }
        for (import, listener) in bound {
            let task = spawn_import(
                listener,
                import,
                &new,
                &self.handle,
                &self.drivers.settings,
                &self.identity,
                &self.drivers.notes,
            )?;
            self.imports.push((import.clone(), task));
            summary.imports_added += 1;
        }
        self.drivers.exports.set_relay(new.relay);
        if old.exports != new.exports {
            self.drivers.exports.replace(&new.exports);
            summary.exports_changed = true;
            let update = strait_core::frame::Message::Update(strait_core::frame::Update {
                services: self.drivers.exports.ads(),
            });
            for t in self.handle.tunnels() {
                t.send_control(&update).await;
            }
        }
        let seeds = |c: &GatewayConfig| -> Vec<(Option<String>, String)> {
            c.peers
                .iter()
                .flat_map(|p| {
                    p.addresses
                        .iter()
                        .map(move |a| (p.region.clone(), a.clone()))
                })
                .collect()
        };
        let (before, after) = (seeds(old), seeds(&new));
        summary.peers_removed = before.iter().filter(|s| !after.contains(s)).count();
        summary.peers_added = after.iter().filter(|s| !before.contains(s)).count();
        if old.peers != new.peers {
            self.seeds.send_replace(new.peers.clone());
        }
        if federation_changed {
            self.identity.set_federation_sources(new.federation.clone());
            summary.federation_changed = true;
        }
        *self.admin.imports.lock().unwrap_or_else(|p| p.into_inner()) =
            self.imports.iter().map(|(c, _)| c.clone()).collect();
        *self
            .admin
            .peer_regions
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = new.peer_regions();
        self.config = new;
        Ok(summary)
    }
}

/// The QUIC endpoint on a UDP socket with enlarged buffers, behind the
/// drills' packet filter, with the TCP carriers beside it.
fn endpoint(
    listen: SocketAddr,
    tls: &TlsIdentity,
    settings: &TunnelSettings,
    filter: Arc<crate::drill::PacketFilter>,
    carriers: Arc<crate::carrier::Carriers>,
) -> Result<quinn::Endpoint, GatewayError> {
    let bind_err = |source| GatewayError::Bind {
        what: "the QUIC listener",
        addr: listen,
        source,
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(listen),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(bind_err)?;
    let _ = socket.set_recv_buffer_size(settings.udp_buffer);
    let _ = socket.set_send_buffer_size(settings.udp_buffer);
    socket.bind(&listen.into()).map_err(bind_err)?;
    let granted = (
        socket.recv_buffer_size().unwrap_or(0),
        socket.send_buffer_size().unwrap_or(0),
    );
    tracing::info!(
        requested = settings.udp_buffer,
        recv = granted.0,
        send = granted.1,
        "UDP socket buffers (the kernel caps them at net.core.rmem_max/wmem_max)"
    );
    let server = tls.server_config(settings)?;
    let mut endpoint_config = quinn::EndpointConfig::default();
    // What we tell peers we can receive; path MTU discovery finds what the
    // path carries below it.
    endpoint_config
        .max_udp_payload_size(crate::tls::MTU_PROBE_CEILING)
        .map_err(|e| GatewayError::Quic(e.to_string()))?;
    let runtime = Arc::new(quinn::TokioRuntime);
    let socket = quinn::Runtime::wrap_udp_socket(&*runtime, socket.into()).map_err(bind_err)?;
    let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
        endpoint_config,
        Some(server),
        // The drills' filter outermost: a drill cuts carried tunnels too.
        Arc::new(crate::drill::FilteredSocket::new(
            Arc::new(crate::carrier::CarrierSocket::new(socket, carriers)),
            filter,
        )),
        runtime,
    )
    .map_err(bind_err)?;
    endpoint.set_default_client_config(tls.client_config(None, settings)?);
    Ok(endpoint)
}
