//! Wiring a gateway together: the QUIC endpoint (one UDP port, both dialing
//! and accepting), the dialers of configured peers, the acceptor, the import
//! listeners and the admin endpoint; and stopping them.

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
use crate::export::{Exports, serve_stream};
use crate::import::run_import;
use crate::tls::TlsIdentity;
use crate::tunnel::{Backoff, Registered, Registry, follow_control, handshake};
use crate::wire::code;

/// Shared by every task of a gateway.
struct Ctx {
    me: Hello,
    health: strait_core::health::ProbeConfig,
    registry: Arc<Registry>,
    exports: Arc<Exports>,
    settings: Arc<TunnelSettings>,
}

/// A configured peer address and the region its certificate must name.
type DialTarget = (Option<String>, String);

/// A running gateway. Dropping it does not stop it; call
/// [`RunningGateway::shutdown`].
pub struct RunningGateway {
    endpoint: quinn::Endpoint,
    /// Each import listener's task, with the configuration it runs.
    imports: Vec<(crate::config::ImportConfig, JoinHandle<()>)>,
    /// Each dialer's task, by (peer region, address).
    dialers: Vec<(DialTarget, JoinHandle<()>)>,
    config: GatewayConfig,
    ctx: Arc<Ctx>,
    identity: Arc<crate::reload::CurrentIdentity>,
    stop_rx: watch::Receiver<bool>,
    drain_grace: Duration,
    registry: Arc<Registry>,
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

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Drains, then shuts down: new client connections are refused at
    /// once, peers get GOAWAY (and stop sending new streams without waiting
    /// for probes to notice), `/readyz` turns not-ready, and active streams
    /// get up to the drain grace period to finish.
    pub async fn drain(self) {
        tracing::info!(grace = ?self.drain_grace, "draining");
        self.admin.draining.store(true, Ordering::SeqCst);
        for (_, import) in &self.imports {
            import.abort();
        }
        let goaway = strait_core::frame::Message::GoAway(strait_core::frame::GoAway {
            reason: "draining".into(),
        });
        for t in self.registry.tunnels() {
            t.send_control(&goaway).await;
        }
        let deadline = tokio::time::Instant::now() + self.drain_grace;
        loop {
            let active: usize = self
                .registry
                .tunnels()
                .iter()
                .map(|t| t.active_streams())
                .sum();
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
        for (_, dialer) in &self.dialers {
            dialer.abort();
        }
        self.admin.draining.store(true, Ordering::SeqCst);
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        self.registry.close_all();
        self.endpoint
            .close(code::SHUTDOWN, b"gateway shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// Starts a gateway from a validated configuration.
pub async fn start(mut config: GatewayConfig) -> Result<RunningGateway, GatewayError> {
    let tls = TlsIdentity::load(&config.identity)?;
    config.take_name_from(&tls);
    tls.require_gateway(&config.name, &config.region)?;
    let settings = Arc::new(config.tunnel.clone());
    let endpoint = endpoint(config.listen, &tls, &settings)?;
    let quic_addr = endpoint.local_addr().map_err(|source| GatewayError::Bind {
        what: "the QUIC listener",
        addr: config.listen,
        source,
    })?;
    let registry = Arc::new(Registry::new(
        tls.id().clone(),
        &config.name,
        &config.region,
    ));
    let exports = Arc::new(Exports::new(
        &config.exports,
        tls.trust_domain().as_str(),
        &config.region,
    ));
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
    let ctx = Arc::new(Ctx {
        me: Hello::new(config.name.clone(), config.region.clone(), exports.ads()),
        registry: registry.clone(),
        exports: exports.clone(),
        settings: settings.clone(),
        health: config.health.clone(),
    });
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let identity = Arc::new(crate::reload::CurrentIdentity::new(tls.clone()));
    let mut import_addrs = Vec::new();
    let mut imports = Vec::new();
    for import in &config.imports {
        let listener = bind_import(import).await?;
        let addr = listener.local_addr().unwrap_or(import.listen);
        import_addrs.push((import.service.clone(), addr));
        let task = spawn_import(listener, import, &config, &registry, &settings, &identity)?;
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
    let admin = Arc::new(AdminState {
        exports_state: exports.clone(),
        id: tls.id().to_string(),
        name: config.name.clone(),
        region: config.region.clone(),
        registry: registry.clone(),
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
                })
                .collect(),
        ),
        ready: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        identity: identity.clone(),
    });
    tasks.push(tokio::spawn(serve_admin(admin_listener, admin.clone())));
    tasks.push(tokio::spawn(accept_loop(endpoint.clone(), ctx.clone())));
    tasks.push(tokio::spawn(crate::telemetry::share(
        registry.mesh.clone(),
        registry.clone(),
        exports.clone(),
    )));
    tasks.push(tokio::spawn(exports.clone().check_targets(
        registry.clone(),
        config.target_check,
        settings.connect_timeout.min(config.target_check),
    )));
    let mut dialers = Vec::new();
    tasks.push(tokio::spawn(crate::reload::watch(
        config.health.interval,
        config.identity.clone(),
        config.name.clone(),
        config.region.clone(),
        identity.clone(),
        endpoint.clone(),
        settings.clone(),
        registry.clone(),
    )));
    tasks.push(tokio::spawn(crate::renew::report_expiry(
        identity.clone(),
        config.region.clone(),
        registry.clone(),
    )));
    if let Some(renewal) = &config.renewal {
        tasks.push(tokio::spawn(crate::renew::run(
            renewal.clone(),
            config.identity.clone(),
            identity.clone(),
            config.region.clone(),
            registry.clone(),
        )));
    }
    for peer in &config.peers {
        // Fail at start, not at the first dial, if the config cannot build.
        tls.client_config(peer.region.as_deref(), &settings)?;
        for address in &peer.addresses {
            let task = tokio::spawn(dial_loop(
                endpoint.clone(),
                peer.region.clone(),
                identity.clone(),
                address.clone(),
                ctx.clone(),
                stop_rx.clone(),
            ));
            dialers.push(((peer.region.clone(), address.clone()), task));
        }
    }
    admin.ready.store(true, Ordering::SeqCst);
    tracing::info!(
        id = %tls.id(), quic = %quic_addr, admin = %admin_addr,
        peers = config.peers.len(), exports = config.exports.len(), imports = config.imports.len(),
        "gateway started"
    );
    Ok(RunningGateway {
        endpoint,
        imports,
        dialers,
        config: config.clone(),
        ctx,
        identity,
        stop_rx,
        drain_grace: config.drain_grace,
        registry,
        admin,
        tasks,
        stop,
        quic_addr,
        admin_addr,
        import_addrs,
    })
}

async fn bind_import(import: &crate::config::ImportConfig) -> Result<TcpListener, GatewayError> {
    TcpListener::bind(import.listen)
        .await
        .map_err(|source| GatewayError::Bind {
            what: "an import listener",
            addr: import.listen,
            source,
        })
}

fn spawn_import(
    listener: TcpListener,
    import: &crate::config::ImportConfig,
    config: &GatewayConfig,
    registry: &Arc<Registry>,
    settings: &Arc<TunnelSettings>,
    identity: &crate::reload::CurrentIdentity,
) -> Result<JoinHandle<()>, GatewayError> {
    let mtls = if import.mtls {
        // Workloads of our trust domain, verified by strait-ca; the
        // gateway's own certificate serves as the listener's.
        let tls = identity.get();
        let verifier = Arc::new(strait_ca::tls::SvidVerifier::new(
            tls.bundle.clone(),
            strait_ca::PeerRequirement::AnyInTrustDomain(tls.trust_domain().clone()),
        ));
        let server = strait_ca::tls::server_config(&tls.identity, verifier, &[])?;
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
    } else {
        None
    };
    let route = crate::import::Route {
        service: import.service.clone(),
        prefer: import.prefer.clone(),
        own_region: config.region.clone(),
        hold_down: config.hold_down,
        limits: import.limits.clone(),
    };
    Ok(tokio::spawn(run_import(
        listener,
        route,
        registry.clone(),
        settings.clone(),
        mtls,
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
                &self.registry,
                &self.ctx.settings,
                &self.identity,
            )?;
            self.imports.push((import.clone(), task));
            summary.imports_added += 1;
        }
        if old.exports != new.exports {
            self.ctx.exports.replace(&new.exports);
            summary.exports_changed = true;
            let update = strait_core::frame::Message::Update(strait_core::frame::Update {
                services: self.ctx.exports.ads(),
            });
            for t in self.registry.tunnels() {
                t.send_control(&update).await;
            }
        }
        let wanted: Vec<DialTarget> = new
            .peers
            .iter()
            .flat_map(|p| {
                p.addresses
                    .iter()
                    .map(move |a| (p.region.clone(), a.clone()))
            })
            .collect();
        self.dialers.retain(|(key, task)| {
            let keep = wanted.contains(key);
            if !keep {
                task.abort();
                summary.peers_removed += 1;
            }
            keep
        });
        for key in wanted {
            if !self.dialers.iter().any(|(k, _)| *k == key) {
                let task = tokio::spawn(dial_loop(
                    self.endpoint.clone(),
                    key.0.clone(),
                    self.identity.clone(),
                    key.1.clone(),
                    self.ctx.clone(),
                    self.stop_rx.clone(),
                ));
                self.dialers.push((key, task));
                summary.peers_added += 1;
            }
        }
        *self.admin.imports.lock().unwrap_or_else(|p| p.into_inner()) =
            self.imports.iter().map(|(c, _)| c.clone()).collect();
        self.config = new;
        Ok(summary)
    }
}

/// The QUIC endpoint on a UDP socket with enlarged buffers.
fn endpoint(
    listen: SocketAddr,
    tls: &TlsIdentity,
    settings: &TunnelSettings,
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
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket.into(),
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bind_err)?;
    endpoint.set_default_client_config(tls.client_config(None, settings)?);
    Ok(endpoint)
}

async fn accept_loop(endpoint: quinn::Endpoint, ctx: Arc<Ctx>) {
    while let Some(incoming) = endpoint.accept().await {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => {
                    let _ = run_connection(conn, false, ctx).await;
                }
                Err(e) => {
                    let labels = [
                        ("region", ctx.me.region.clone()),
                        ("reason", "handshake".to_owned()),
                    ];
                    metrics::counter!(crate::metrics::PEERS_REFUSED, &labels).increment(1);
                    ctx.registry
                        .events
                        .record("peer_refused", format!("{remote}: {e}"));
                    tracing::warn!(peer_addr = %remote, "peer refused: {e}")
                }
            }
        });
    }
}

async fn dial_loop(
    endpoint: quinn::Endpoint,
    region: Option<String>,
    identity: Arc<crate::reload::CurrentIdentity>,
    address: String,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(ctx.settings.redial_min, ctx.settings.redial_max);
    loop {
        // The identity in force now: it may have been reloaded.
        let dialed = match identity
            .get()
            .client_config(region.as_deref(), &ctx.settings)
        {
            Ok(client) => dial_once(&endpoint, &client, &address, ctx.clone()).await,
            Err(e) => Err(e.to_string()),
        };
        match dialed {
            Ok(()) => backoff.reset(),
            Err(e) => tracing::warn!(peer_addr = %address, "cannot reach peer: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn dial_once(
    endpoint: &quinn::Endpoint,
    client: &quinn::ClientConfig,
    address: &str,
    ctx: Arc<Ctx>,
) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    let mut last = format!("{address} resolved to no address");
    for addr in addrs {
        let connecting = endpoint
            .connect_with(client.clone(), addr, "strait-gateway")
            .map_err(|e| e.to_string())?;
        match connecting.await {
            Ok(conn) => return run_connection(conn, true, ctx).await,
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

/// Runs one connection as a tunnel until it closes.
async fn run_connection(
    conn: quinn::Connection,
    dialed: bool,
    ctx: Arc<Ctx>,
) -> Result<(), String> {
    let remote = conn.remote_address();
    let (tunnel, control_send, control_recv, buf) = match handshake(
        conn.clone(),
        dialed,
        Hello {
            services: ctx.exports.ads(),
            ..ctx.me.clone()
        },
    )
    .await
    {
        Ok(t) => t,
        Err(e) => {
            let labels = [
                ("region", ctx.me.region.clone()),
                ("reason", "hello".to_owned()),
            ];
            metrics::counter!(crate::metrics::PEERS_REFUSED, &labels).increment(1);
            ctx.registry
                .events
                .record("peer_refused", format!("{remote}: {e}"));
            tracing::warn!(peer_addr = %remote, "peer refused: {e}");
            conn.close(code::BAD_HELLO, e.to_string().as_bytes());
            return Err(e.to_string());
        }
    };
    let duplicate_of = match ctx.registry.register(tunnel.clone()) {
        Registered::Kept => None,
        Registered::Duplicate(existing) => {
            tracing::debug!(peer = %tunnel.peer, dialed, "another tunnel to this peer is preferred; this one closes once idle");
            Some(existing)
        }
    };
    if duplicate_of.is_none() {
        ctx.registry.events.record(
            "tunnel_up",
            format!("{} ({}) at {remote}", tunnel.peer, tunnel.region),
        );
        tracing::info!(
        peer = %tunnel.peer, peer_addr = %remote, dialed,
            services = ?tunnel.services().iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            "tunnel up"
        );
    }
    tunnel.set_control(control_send).await;
    let control = tokio::spawn(follow_control(
        tunnel.clone(),
        ctx.registry.mesh.clone(),
        control_recv,
        buf,
    ));
    let prober = tokio::spawn(crate::probe::run(
        tunnel.clone(),
        ctx.health.clone(),
        ctx.me.region.clone(),
        ctx.registry.events.clone(),
    ));
    let reason = loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(serve_stream(
                    tunnel.clone(),
                    ctx.exports.clone(),
                    ctx.settings.clone(),
                    send,
                    recv,
                ));
            }
            Err(e) => break e,
        }
    };
    control.abort();
    prober.abort();
    ctx.registry.remove(&tunnel);
    match duplicate_of {
        None => {
            ctx.registry.events.record(
                "tunnel_down",
                format!("{} ({}): {reason}", tunnel.peer, tunnel.region),
            );
            tracing::info!(peer = %tunnel.peer, peer_addr = %remote, "tunnel down: {reason}")
        }
        Some(existing) => {
            tracing::debug!(peer = %tunnel.peer, "duplicate tunnel closed: {reason}");
            // Redial only once the tunnel that was preferred is gone.
            existing.conn.closed().await;
        }
    }
    Ok(())
}
