//! Which gateways to keep tunnels to, sans-IO. A region is many gateways
//! (one per node); a `[[peer]]` entry only seeds the mesh. Gateways learn
//! every other gateway from HELLO and the mesh telemetry (region, name,
//! instance, the address it advertises) and keep tunnels to up to
//! `tunnels_per_region` distinct gateways of each remote region, replacing
//! one that is lost or Down with a sibling.
//!
//! Inputs: [`Discovery::handle_seed`] (a seed resolved), [`Discovery::handle_gateway`]
//! (heard of a gateway, with how old the news is), [`Discovery::handle_tunnels`]
//! (the plane's tunnels and whether each is Down) and
//! [`Discovery::handle_dial`] (a dial's result). Output: [`Discovery::targets`],
//! the addresses to keep a dialer on. Every resolved address of every seed
//! is a target; learned gateways are added, in an order particular to this
//! gateway (rendezvous hashing, so a region's gateways spread their tunnels
//! over the remote gateways), while the region has fewer than
//! `tunnels_per_region` gateways with a working tunnel, counting those that
//! dialed us. No I/O and no clock: the caller passes `now`.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use serde::Serialize;

/// One gateway, as discovery tells gateways apart: region, name and
/// instance (gateways sharing a certificate share the first two).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct GatewayRef {
    pub region: String,
    pub name: String,
    pub instance: String,
}

/// Settings of discovery.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    pub me: GatewayRef,
    /// Gateways of each remote region to keep a tunnel to (`[tunnel]
    /// tunnels_per_region`).
    pub tunnels_per_region: usize,
    /// A gateway not heard of for this long is forgotten.
    pub forget_after: Duration,
    /// A learned gateway whose dial failed is passed over for this long.
    pub retry_after: Duration,
    /// Dial learned gateways at all (`[tunnel] discover`); when false only
    /// the seeds are dialed, as in a static topology.
    pub learn: bool,
}

impl DiscoveryConfig {
    pub fn new(me: GatewayRef) -> Self {
        DiscoveryConfig {
            me,
            tunnels_per_region: 2,
            forget_after: Duration::from_secs(120),
            retry_after: Duration::from_secs(10),
            learn: true,
        }
    }
}

/// Why an address is dialed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A configured `[[peer]]` address (or one its name resolved to).
    Seed,
    /// A gateway learned from the mesh, dialed to reach the region's quota.
    Learned,
}

/// An address to keep a dialer on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DialTarget {
    pub address: String,
    /// The region its certificate must name, when known.
    pub region: Option<String>,
    /// The trust domain its certificate must name when not ours (a seed of
    /// a federated trust domain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    pub reason: Reason,
}

#[derive(Debug, Clone)]
struct Seed {
    region: Option<String>,
    /// Not ours: a federated trust domain's gateways.
    trust_domain: Option<String>,
    addresses: Vec<String>,
}

#[derive(Debug, Clone)]
struct Known {
    advertise: String,
    heard: Instant,
}

/// The dialing plan. See the module doc.
#[derive(Debug)]
pub struct Discovery {
    config: DiscoveryConfig,
    /// Each seed's region and the addresses it resolved to last.
    seeds: BTreeMap<String, Seed>,
    known: BTreeMap<GatewayRef, Known>,
    /// Gateways with a tunnel now, and whether one of them works (not Down).
    tunnels: BTreeMap<GatewayRef, bool>,
    /// Addresses whose last dial failed, and when.
    failed: BTreeMap<String, Instant>,
}

impl Discovery {
    pub fn new(config: DiscoveryConfig) -> Self {
        Discovery {
            config,
            seeds: BTreeMap::new(),
            known: BTreeMap::new(),
            tunnels: BTreeMap::new(),
            failed: BTreeMap::new(),
        }
    }

    /// A seed (`host:port` as configured) resolved to `addresses`; an empty
    /// list keeps the previous ones (a resolver hiccup must not drop
    /// tunnels).
    pub fn handle_seed(&mut self, seed: &str, region: Option<&str>, addresses: Vec<String>) {
        self.handle_seed_in(seed, None, region, addresses);
    }

    /// A seed of trust domain `trust_domain` (ours when `None`) resolved to
    /// `addresses`.
    pub fn handle_seed_in(
        &mut self,
        seed: &str,
        trust_domain: Option<&str>,
        region: Option<&str>,
        addresses: Vec<String>,
    ) {
        let entry = self.seeds.entry(seed.to_owned()).or_insert_with(|| Seed {
            region: region.map(str::to_owned),
            trust_domain: trust_domain.map(str::to_owned),
            addresses: Vec::new(),
        });
        if !addresses.is_empty() {
            entry.addresses = addresses;
        }
    }

    /// The resolved addresses of the seeds configured for `region`.
    pub fn seed_addresses(&self, region: &str) -> Vec<String> {
        self.seeds
            .values()
            .filter(|s| s.region.as_deref() == Some(region))
            .flat_map(|s| s.addresses.iter().cloned())
            .collect()
    }

    /// Seeds no longer configured.
    pub fn retain_seeds(&mut self, seeds: &[String]) {
        self.seeds.retain(|s, _| seeds.contains(s));
    }

    /// Heard of `gateway`, which advertises `advertise` (empty: it does
    /// not say), in news `age` old.
    pub fn handle_gateway(
        &mut self,
        gateway: GatewayRef,
        advertise: &str,
        age: Duration,
        now: Instant,
    ) {
        if gateway == self.config.me || gateway.region == self.config.me.region {
            return;
        }
        let heard = now.checked_sub(age).unwrap_or(now);
        match self.known.get_mut(&gateway) {
            Some(k) if k.heard >= heard => {}
            Some(k) => {
                k.heard = heard;
                if !advertise.is_empty() {
                    k.advertise = advertise.to_owned();
                }
            }
            None => {
                self.known.insert(
                    gateway,
                    Known {
                        advertise: advertise.to_owned(),
                        heard,
                    },
                );
            }
        }
    }

    /// The gateways with a tunnel now (either direction) and whether it
    /// works: `false` when every tunnel to it is Down.
    pub fn handle_tunnels(&mut self, tunnels: impl IntoIterator<Item = (GatewayRef, bool)>) {
        self.tunnels.clear();
        for (gateway, works) in tunnels {
            let entry = self.tunnels.entry(gateway).or_insert(false);
            *entry |= works;
        }
    }

    /// How a dial of `address` went.
    pub fn handle_dial(&mut self, address: &str, ok: bool, now: Instant) {
        if ok {
            self.failed.remove(address);
        } else {
            self.failed.insert(address.to_owned(), now);
        }
    }

    /// Gateways learned and still remembered, with the address each
    /// advertises, for `/status`.
    pub fn known(&self, now: Instant) -> Vec<(GatewayRef, String, Duration)> {
        self.known
            .iter()
            .map(|(g, k)| {
                (
                    g.clone(),
                    k.advertise.clone(),
                    now.saturating_duration_since(k.heard),
                )
            })
            .collect()
    }

    /// This gateway's order of preference among learned ones: rendezvous
    /// hashing on (me, them), so each gateway prefers different siblings.
    fn weight(&self, g: &GatewayRef) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.config.me.hash(&mut h);
        g.hash(&mut h);
        h.finish()
    }

    /// The addresses to keep a dialer on now.
    pub fn targets(&mut self, now: Instant) -> Vec<DialTarget> {
        let forget = self.config.forget_after;
        self.known
            .retain(|_, k| now.saturating_duration_since(k.heard) < forget);
        let retry = self.config.retry_after;
        self.failed
            .retain(|_, at| now.saturating_duration_since(*at) < retry);

        let mut out: Vec<DialTarget> = Vec::new();
        let mut addresses: BTreeSet<String> = BTreeSet::new();
        for seed in self.seeds.values() {
            for address in &seed.addresses {
                if addresses.insert(address.clone()) {
                    out.push(DialTarget {
                        address: address.clone(),
                        region: seed.region.clone(),
                        trust_domain: seed.trust_domain.clone(),
                        reason: Reason::Seed,
                    });
                }
            }
        }
        let regions: BTreeSet<&String> = if self.config.learn {
            self.known.keys().map(|g| &g.region).collect()
        } else {
            BTreeSet::new()
        };
        for region in regions {
            let mut have = self
                .tunnels
                .iter()
                .filter(|(g, works)| &g.region == region && **works)
                .count();
            let mut ranked: Vec<(&GatewayRef, &Known)> = self
                .known
                .iter()
                .filter(|(g, k)| &g.region == region && !k.advertise.is_empty())
                .collect();
            ranked.sort_by_key(|(g, _)| std::cmp::Reverse(self.weight(g)));
            for (g, k) in ranked {
                if have >= self.config.tunnels_per_region {
                    break;
                }
                if self.tunnels.contains_key(g) || self.failed.contains_key(&k.advertise) {
                    continue;
                }
                have += 1;
                if addresses.insert(k.advertise.clone()) {
                    out.push(DialTarget {
                        address: k.advertise.clone(),
                        region: Some(g.region.clone()),
                        trust_domain: None,
                        reason: Reason::Learned,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(region: &str, name: &str) -> GatewayRef {
        GatewayRef {
            region: region.into(),
            name: name.into(),
            instance: format!("{name}:15443"),
        }
    }

    fn plan() -> Discovery {
        Discovery::new(DiscoveryConfig::new(gw("eu-west", "w1")))
    }

    fn addrs(targets: &[DialTarget]) -> Vec<&str> {
        targets.iter().map(|t| t.address.as_str()).collect()
    }

    #[test]
    fn every_address_of_a_seed_is_dialed_and_a_failed_lookup_keeps_them() {
        let mut d = plan();
        let t0 = Instant::now();
        d.handle_seed(
            "east.example:15443",
            Some("us-east"),
            vec!["10.0.0.1:15443".into(), "10.0.0.2:15443".into()],
        );
        let t = d.targets(t0);
        assert_eq!(addrs(&t), ["10.0.0.1:15443", "10.0.0.2:15443"]);
        assert!(
            t.iter()
                .all(|t| t.reason == Reason::Seed && t.region.as_deref() == Some("us-east"))
        );
        d.handle_seed("east.example:15443", Some("us-east"), vec![]);
        assert_eq!(d.targets(t0).len(), 2);
        assert_eq!(d.seed_addresses("us-east").len(), 2);
        assert!(d.seed_addresses("ap-south").is_empty());
        d.retain_seeds(&[]);
        assert!(d.targets(t0).is_empty());
    }

    #[test]
    fn learned_gateways_fill_each_region_to_its_quota() {
        let mut d = plan();
        let t0 = Instant::now();
        d.handle_seed("e1:15443", Some("us-east"), vec!["e1:15443".into()]);
        d.handle_tunnels([(gw("us-east", "e1"), true)]);
        for name in ["e1", "e2", "e3"] {
            d.handle_gateway(
                gw("us-east", name),
                &format!("{name}:15443"),
                Duration::ZERO,
                t0,
            );
        }
        // Our own region is never dialed from what was learned.
        d.handle_gateway(gw("eu-west", "w2"), "w2:15443", Duration::ZERO, t0);
        let t = d.targets(t0);
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t[0].address, "e1:15443");
        assert_eq!(t[1].reason, Reason::Learned);
        assert_eq!(t[1].region.as_deref(), Some("us-east"));
        let learned = t[1].address.clone();
        assert_ne!(learned, "e1:15443");

        // Without discovery only the seed is dialed.
        let mut fixed = Discovery::new(DiscoveryConfig {
            learn: false,
            ..DiscoveryConfig::new(gw("eu-west", "w1"))
        });
        fixed.handle_seed("e1:15443", Some("us-east"), vec!["e1:15443".into()]);
        fixed.handle_gateway(gw("us-east", "e2"), "e2:15443", Duration::ZERO, t0);
        assert_eq!(addrs(&fixed.targets(t0)), ["e1:15443"]);

        // Once that tunnel is up the plan is stable.
        let name = learned.trim_end_matches(":15443");
        d.handle_tunnels([(gw("us-east", "e1"), true), (gw("us-east", name), true)]);
        assert_eq!(addrs(&d.targets(t0)), ["e1:15443"]);

        // It goes Down: the third gateway is dialed in its place, and the
        // Down one is not redialed while it holds a tunnel.
        d.handle_tunnels([(gw("us-east", "e1"), true), (gw("us-east", name), false)]);
        let t = d.targets(t0);
        assert_eq!(t.len(), 2);
        assert!(t[1].address != learned && t[1].address != "e1:15443");
    }

    #[test]
    fn gateways_that_dialed_us_count_and_failed_dials_are_passed_over() {
        let mut d = plan();
        let t0 = Instant::now();
        for name in ["a1", "a2", "a3"] {
            d.handle_gateway(
                gw("ap-south", name),
                &format!("{name}:1"),
                Duration::ZERO,
                t0,
            );
        }
        d.handle_tunnels([(gw("ap-south", "a1"), true), (gw("ap-south", "a3"), true)]);
        assert!(d.targets(t0).is_empty());

        d.handle_tunnels([]);
        let first = d.targets(t0);
        assert_eq!(first.len(), 2);
        d.handle_dial(&first[0].address, false, t0);
        let t = d.targets(t0);
        assert_eq!(t.len(), 2);
        assert!(!addrs(&t).contains(&first[0].address.as_str()));
        // After the retry delay it is a candidate again.
        let later = t0 + Duration::from_secs(11);
        for name in ["a1", "a2", "a3"] {
            d.handle_gateway(
                gw("ap-south", name),
                &format!("{name}:1"),
                Duration::ZERO,
                later,
            );
        }
        assert_eq!(addrs(&d.targets(later)), addrs(&first));
    }

    #[test]
    fn old_news_is_kept_out_and_silent_gateways_are_forgotten() {
        let mut d = plan();
        let t0 = Instant::now();
        d.handle_gateway(gw("us-east", "e1"), "e1:1", Duration::from_secs(5), t0);
        // Older news does not move `heard` back, nor change the address.
        d.handle_gateway(gw("us-east", "e1"), "old:1", Duration::from_secs(50), t0);
        let known = d.known(t0);
        assert_eq!(known.len(), 1);
        assert_eq!(known[0].1, "e1:1");
        assert_eq!(known[0].2, Duration::from_secs(5));
        assert_eq!(d.targets(t0 + Duration::from_secs(100)).len(), 1);
        assert!(d.targets(t0 + Duration::from_secs(116)).is_empty());
        assert!(d.known(t0 + Duration::from_secs(116)).is_empty());
        // Gateways that do not advertise an address are known, not dialed.
        d.handle_gateway(gw("us-east", "e9"), "", Duration::ZERO, t0);
        assert!(d.targets(t0).is_empty());
    }

    #[test]
    fn each_gateway_spreads_its_tunnels_differently() {
        let t0 = Instant::now();
        let mut chosen = BTreeSet::new();
        for me in ["w1", "w2", "w3", "w4", "w5", "w6"] {
            let mut d = Discovery::new(DiscoveryConfig {
                tunnels_per_region: 1,
                ..DiscoveryConfig::new(gw("eu-west", me))
            });
            for name in ["e1", "e2", "e3"] {
                d.handle_gateway(
                    gw("us-east", name),
                    &format!("{name}:1"),
                    Duration::ZERO,
                    t0,
                );
            }
            chosen.insert(d.targets(t0)[0].address.clone());
        }
        assert!(chosen.len() >= 2, "every gateway picked {chosen:?}");
    }
}
