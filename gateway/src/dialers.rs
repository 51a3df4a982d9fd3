//! Keeps a dialer on every address discovery wants: the resolved addresses
//! of the configured seeds (re-resolved every 30 s) and the learned
//! gateways that fill each remote region to `tunnels_per_region`. What to
//! dial is decided by `strait_core::discovery`; this module only feeds it
//! (HELLOs, telemetry, the plane's tunnels, dial results) and starts and
//! retires the dial loops it names. A retired loop never cuts a tunnel it
//! holds; it just does not redial.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use strait_core::discovery::{Discovery, DiscoveryConfig, GatewayRef};
use strait_core::frame::Telemetry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::PeerConfig;
use crate::connection::{Drivers, dial_loop};
use crate::handle::now;

/// How often seed names are resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(30);
/// How often the plan is looked at when nothing changed.
const TICK: Duration = Duration::from_secs(1);

/// What this gateway knows of the mesh's gateways, behind one lock.
#[derive(Debug)]
pub struct Directory {
    inner: Mutex<Discovery>,
    /// Bumped when something that may change the plan arrived.
    changed: watch::Sender<u64>,
}

/// One learned gateway, for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct KnownGateway {
    pub region: String,
    pub name: String,
    pub instance: String,
    pub advertise: String,
    pub heard_ms_ago: u64,
}

impl Directory {
    pub fn new(config: DiscoveryConfig) -> Self {
        Directory {
            inner: Mutex::new(Discovery::new(config)),
            changed: watch::channel(0).0,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Discovery) -> T) -> T {
        let mut d = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut d)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// A HELLO (age zero) or a report named this gateway.
    pub fn heard(&self, gateway: GatewayRef, advertise: &str, age: Duration) {
        let now = now();
        self.with(|d| d.handle_gateway(gateway, advertise, age, now));
        self.bump();
    }

    /// Every gateway a peer's telemetry names, with the age of its news.
    pub fn heard_in(&self, t: &Telemetry) {
        let now = now();
        self.with(|d| {
            for r in std::iter::once(&t.origin).chain(&t.relayed) {
                let gateway = GatewayRef {
                    region: r.region.clone(),
                    name: r.gateway.clone(),
                    instance: r.instance.clone(),
                };
                d.handle_gateway(gateway, &r.advertise, Duration::from_millis(r.age_ms), now);
            }
        });
    }

    pub fn dialed(&self, address: &str, ok: bool) {
        let now = now();
        self.with(|d| d.handle_dial(address, ok, now));
        if !ok {
            self.bump();
        }
    }

    pub fn known(&self) -> Vec<KnownGateway> {
        let now = now();
        self.with(|d| d.known(now))
            .into_iter()
            .map(|(g, advertise, age)| KnownGateway {
                region: g.region,
                name: g.name,
                instance: g.instance,
                advertise,
                heard_ms_ago: age.as_millis() as u64,
            })
            .collect()
    }
}

struct Dialer {
    retire: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Runs the dialing plan until `stop`: resolves seeds, tells discovery
/// which tunnels exist, and starts or retires dial loops to match.
pub async fn run(
    endpoint: quinn::Endpoint,
    identity: Arc<crate::reload::CurrentIdentity>,
    drivers: Arc<Drivers>,
    mut seeds: watch::Receiver<Vec<PeerConfig>>,
    mut stop: watch::Receiver<bool>,
) {
    let directory = drivers.directory.clone();
    let mut dialers: HashMap<String, Dialer> = HashMap::new();
    let mut tunnels_changed = drivers.handle.subscribe();
    let mut heard = directory.changed.subscribe();
    let mut next_resolve = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_resolve || seeds.has_changed().unwrap_or(false) {
            let configured = seeds.borrow_and_update().clone();
            let v4 = endpoint.local_addr().map(|a| a.is_ipv4()).unwrap_or(true);
            resolve(&directory, &configured, v4).await;
            next_resolve = tokio::time::Instant::now() + RESOLVE_EVERY;
        }
        let tunnels: Vec<(GatewayRef, bool)> = drivers
            .handle
            .view()
            .conns
            .iter()
            .filter(|c| c.role == "active")
            .map(|c| {
                (
                    GatewayRef {
                        region: c.peer.region.clone(),
                        name: c.peer.name.clone(),
                        instance: c.peer.instance.clone(),
                    },
                    c.state != "down",
                )
            })
            .collect();
        let now = now();
        let targets = directory.with(|d| {
            d.handle_tunnels(tunnels);
            d.targets(now)
        });
        dialers.retain(|_, d| !d.task.is_finished());
        for (address, d) in &dialers {
            let wanted = targets.iter().any(|t| &t.address == address);
            d.retire.send_if_modified(|r| {
                let changed = *r == wanted;
                *r = !wanted;
                changed
            });
        }
        for target in targets {
            if dialers.contains_key(&target.address) {
                continue;
            }
            tracing::info!(peer_addr = %target.address, region = target.region.as_deref().unwrap_or("any"),
                reason = ?target.reason, "dialing");
            let (retire, retire_rx) = watch::channel(false);
            let task = tokio::spawn(dial_loop(
                endpoint.clone(),
                target.region.clone(),
                identity.clone(),
                target.address.clone(),
                drivers.clone(),
                stop.clone(),
                retire_rx,
            ));
            dialers.insert(target.address, Dialer { retire, task });
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            r = tunnels_changed.changed() => if r.is_err() { break },
            _ = heard.changed() => {}
            _ = seeds.changed() => {}
            _ = stop.changed() => break,
        }
    }
    for d in dialers.values() {
        d.task.abort();
    }
}

/// Resolves every configured seed address (keeping those of the QUIC
/// socket's address family); one that does not resolve now keeps the
/// addresses it had.
async fn resolve(directory: &Directory, seeds: &[PeerConfig], v4: bool) {
    let mut names = Vec::new();
    for peer in seeds {
        for address in &peer.addresses {
            names.push(address.clone());
            let resolved: Vec<String> = match tokio::net::lookup_host(address.as_str()).await {
                Ok(addrs) => {
                    let mut v: Vec<String> = addrs
                        .filter(|a| !v4 || a.is_ipv4())
                        .map(|a| a.to_string())
                        .collect();
                    v.sort();
                    v.dedup();
                    v
                }
                Err(e) => {
                    tracing::warn!(peer_addr = %address, "cannot resolve seed: {e}");
                    Vec::new()
                }
            };
            directory.with(|d| d.handle_seed(address, peer.region.as_deref(), resolved));
        }
    }
    directory.with(|d| d.retain_seeds(&names));
}
