//! What this gateway knows of the mesh's gateways (from HELLOs and
//! telemetry) and the dialing plan made from it, `strait_core::discovery`
//! behind one lock. The connection drivers feed it; the dialers read it.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use strait_core::discovery::{DialTarget, Discovery, DiscoveryConfig, GatewayRef};
use strait_core::frame::Telemetry;
use tokio::sync::watch;

use crate::handle::now;

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

    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Discovery) -> T) -> T {
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

impl Directory {
    /// Notified when news that may change the dialing plan arrives.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The plan for now, given the tunnels the plane holds.
    pub fn targets(&self, tunnels: Vec<(GatewayRef, bool)>) -> Vec<DialTarget> {
        let now = now();
        self.with(|d| {
            d.handle_tunnels(tunnels);
            d.targets(now)
        })
    }
}
