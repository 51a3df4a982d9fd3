//! Keeps a dialer on every address discovery wants: the resolved addresses
//! of the configured seeds (re-resolved every 30 s) and the learned
//! gateways that fill each remote region to `tunnels_per_region`. What to
//! dial is decided by `strait_core::discovery` (see `directory`); this module
//! feeds it the seeds it resolved and the plane's tunnels, and starts and
//! retires the dial loops it names. A retired loop never cuts a tunnel it
//! holds; it just does not redial. Each address gets one loop per lane
//! (`connections_per_peer`); lanes beyond the first dial once the first
//! lane's HELLO said the peer takes them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use strait_core::discovery::GatewayRef;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::PeerConfig;
use crate::connection::{Drivers, Lane, dial_loop};
use crate::directory::Directory;

/// How often seed names are resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(30);
/// How often the plan is looked at when nothing changed.
const TICK: Duration = Duration::from_secs(1);

/// The dial loops of one address, lane 0 first.
struct Dialer {
    retire: watch::Sender<bool>,
    lanes: Vec<JoinHandle<()>>,
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
    let mut heard = directory.subscribe();
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
        let targets = directory.targets(tunnels);
        // Lane 0 ends only when retired with no tunnel (or at stop); lanes
        // still holding a tunnel then run on by themselves until it ends.
        dialers.retain(|_, d| !d.lanes[0].is_finished());
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
            let gate = Arc::new(watch::channel(false).0);
            let lanes = (0..drivers.settings.connections_per_peer.max(1))
                .map(|lane| {
                    tokio::spawn(dial_loop(
                        endpoint.clone(),
                        target.clone(),
                        identity.clone(),
                        Lane {
                            lane,
                            gate: gate.clone(),
                        },
                        drivers.clone(),
                        stop.clone(),
                        retire_rx.clone(),
                    ))
                })
                .collect();
            dialers.insert(target.address, Dialer { retire, lanes });
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
        for lane in &d.lanes {
            lane.abort();
        }
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
            directory.with(|d| {
                d.handle_seed_in(
                    address,
                    peer.trust_domain.as_deref(),
                    peer.region.as_deref(),
                    resolved,
                )
            });
        }
    }
    directory.with(|d| d.retain_seeds(&names));
}
