//! The set of links between regions: one [`Link`] per direction of every
//! region pair, shared by all relays that cross it, and the operations the
//! control API performs on them (partition, isolate, heal, set).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::NetsimError;
use crate::link::{BurstLoss, Link, LinkConfig, LinkStats};

/// A link direction shared between the relays that use it.
pub type SharedLink = Arc<Mutex<Link>>;

pub(crate) fn lock(link: &SharedLink) -> MutexGuard<'_, Link> {
    // A relay task that panicked mid-admission leaves a consistent Link
    // behind (admission is a handful of field updates), so poison is ignored.
    link.lock().unwrap_or_else(|p| p.into_inner())
}

/// A partial change to a link's settings; unset fields are kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkChange {
    #[serde(default, with = "opt_duration")]
    pub latency: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub jitter: Option<Duration>,
    pub loss: Option<f64>,
    /// Mean loss and mean burst length (packets) of bursty loss; a loss of
    /// zero turns bursty loss off.
    pub burst: Option<(f64, f64)>,
    pub duplicate: Option<f64>,
    pub reorder: Option<f64>,
    /// Bits per second; 0 means unlimited.
    pub rate_bps: Option<u64>,
    pub queue_bytes: Option<usize>,
    /// 0 means no MTU limit.
    pub mtu: Option<usize>,
}

impl LinkChange {
    /// Refuses values no link can have (the CLI parses them safely, but the
    /// control API also takes raw JSON).
    pub fn validate(&self) -> Result<(), NetsimError> {
        let ratio = |field: &'static str, v: Option<f64>| match v {
            Some(v) if !(0.0..=1.0).contains(&v) => Err(NetsimError::InvalidChange {
                field,
                message: format!("{v} is outside 0..=1"),
            }),
            _ => Ok(()),
        };
        ratio("loss", self.loss)?;
        ratio("duplicate", self.duplicate)?;
        ratio("reorder", self.reorder)?;
        if let Some((loss, len)) = self.burst {
            ratio("burst loss", Some(loss))?;
            if len.is_nan() || len < 1.0 {
                return Err(NetsimError::InvalidChange {
                    field: "burst length",
                    message: format!("{len} packets; it must be at least 1"),
                });
            }
        }
        if let Some(mtu) = self.mtu
            && mtu != 0
            && mtu < 1200
        {
            return Err(NetsimError::InvalidChange {
                field: "mtu",
                message: format!(
                    "{mtu} bytes cannot carry QUIC (at least 1200, or 0 for no limit)"
                ),
            });
        }
        Ok(())
    }

    pub fn apply(&self, c: &mut LinkConfig) {
        if let Some(v) = self.latency {
            c.latency = v;
        }
        if let Some(v) = self.jitter {
            c.jitter = v;
        }
        if let Some(v) = self.loss {
            c.loss = v;
        }
        if let Some((loss, len)) = self.burst {
            c.burst = (loss > 0.0).then(|| BurstLoss::from_mean(loss, len));
        }
        if let Some(v) = self.duplicate {
            c.duplicate = v;
        }
        if let Some(v) = self.reorder {
            c.reorder = v;
        }
        if let Some(v) = self.rate_bps {
            c.rate_bps = (v > 0).then_some(v);
        }
        if let Some(v) = self.queue_bytes {
            c.queue_bytes = v;
        }
        if let Some(v) = self.mtu {
            c.mtu = (v > 0).then_some(v);
        }
    }
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| crate::units::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// What `stats` reports for one link direction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkReport {
    pub from: String,
    pub to: String,
    pub latency_ms: f64,
    pub jitter_ms: f64,
    pub loss: f64,
    pub rate_bps: Option<u64>,
    pub partitioned: bool,
    pub stats: LinkStats,
}

/// All links between a set of regions.
#[derive(Debug)]
pub struct Network {
    regions: Vec<String>,
    links: BTreeMap<(String, String), SharedLink>,
}

impl Network {
    /// Builds a link for every ordered pair of distinct regions with the
    /// settings `config(from, to)`. Each link gets its own seed derived
    /// from `seed`, so runs with the same seed decide the same fates.
    pub fn new(
        regions: &[String],
        seed: u64,
        mut config: impl FnMut(&str, &str) -> LinkConfig,
    ) -> Self {
        let mut links = BTreeMap::new();
        let mut n = 0u64;
        for from in regions {
            for to in regions {
                if from == to {
                    continue;
                }
                n += 1;
                let link_seed = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let link = Link::new(config(from, to), link_seed);
                links.insert((from.clone(), to.clone()), Arc::new(Mutex::new(link)));
            }
        }
        Network {
            regions: regions.to_vec(),
            links,
        }
    }

    pub fn regions(&self) -> &[String] {
        &self.regions
    }

    fn check_region(&self, name: &str) -> Result<(), NetsimError> {
        if self.regions.iter().any(|r| r == name) {
            Ok(())
        } else {
            Err(NetsimError::UnknownRegion {
                name: name.to_owned(),
                known: self.regions.clone(),
            })
        }
    }

    /// The link carrying packets from `from` to `to`.
    pub fn link(&self, from: &str, to: &str) -> Result<SharedLink, NetsimError> {
        self.check_region(from)?;
        self.check_region(to)?;
        self.links
            .get(&(from.to_owned(), to.to_owned()))
            .cloned()
            .ok_or_else(|| NetsimError::SameRegion {
                a: from.to_owned(),
                b: to.to_owned(),
            })
    }

    /// The directions a command between `a` and `b` acts on.
    fn directions(&self, a: &str, b: &str, oneway: bool) -> Result<Vec<SharedLink>, NetsimError> {
        let mut out = vec![self.link(a, b)?];
        if !oneway {
            out.push(self.link(b, a)?);
        }
        Ok(out)
    }

    fn modify(links: &[SharedLink], f: impl Fn(&mut LinkConfig)) {
        for link in links {
            let mut guard = lock(link);
            let mut cfg = guard.config().clone();
            f(&mut cfg);
            guard.set_config(cfg);
        }
    }

    /// Cuts a->b, and b->a unless `oneway`.
    pub fn partition(&self, a: &str, b: &str, oneway: bool) -> Result<(), NetsimError> {
        Self::modify(&self.directions(a, b, oneway)?, |c| c.partitioned = true);
        Ok(())
    }

    /// Cuts every link into and out of `region`.
    pub fn isolate(&self, region: &str) -> Result<(), NetsimError> {
        self.check_region(region)?;
        let links: Vec<SharedLink> = self
            .links
            .iter()
            .filter(|((from, to), _)| from == region || to == region)
            .map(|(_, l)| l.clone())
            .collect();
        Self::modify(&links, |c| c.partitioned = true);
        Ok(())
    }

    /// Heals a->b and b->a, or every link when no pair is given.
    pub fn heal(&self, pair: Option<(&str, &str)>) -> Result<(), NetsimError> {
        let links = match pair {
            Some((a, b)) => self.directions(a, b, false)?,
            None => self.links.values().cloned().collect(),
        };
        Self::modify(&links, |c| c.partitioned = false);
        Ok(())
    }

    /// Changes settings of a->b, and b->a unless `oneway`.
    pub fn set(
        &self,
        a: &str,
        b: &str,
        oneway: bool,
        change: &LinkChange,
    ) -> Result<(), NetsimError> {
        change.validate()?;
        Self::modify(&self.directions(a, b, oneway)?, |c| change.apply(c));
        Ok(())
    }

    /// Settings and counters of every link direction.
    pub fn report(&self) -> Vec<LinkReport> {
        self.links
            .iter()
            .map(|((from, to), link)| {
                let l = lock(link);
                let c = l.config();
                LinkReport {
                    from: from.clone(),
                    to: to.clone(),
                    latency_ms: c.latency.as_secs_f64() * 1e3,
                    jitter_ms: c.jitter.as_secs_f64() * 1e3,
                    loss: c.loss,
                    rate_bps: c.rate_bps,
                    partitioned: c.partitioned,
                    stats: l.stats().clone(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::link::{DropCause, Fate};

    fn net() -> Network {
        let regions = ["a", "b", "c"].map(String::from);
        Network::new(&regions, 1, |_, _| LinkConfig::default())
    }

    fn fate(n: &Network, from: &str, to: &str) -> Fate {
        lock(&n.link(from, to).unwrap()).admit(100, Instant::now())
    }

    #[test]
    fn oneway_partition_cuts_one_direction() {
        let n = net();
        n.partition("a", "b", true).unwrap();
        assert_eq!(fate(&n, "a", "b"), Fate::Drop(DropCause::Partition));
        assert!(matches!(fate(&n, "b", "a"), Fate::Deliver { .. }));
        n.heal(Some(("b", "a"))).unwrap();
        assert!(matches!(fate(&n, "a", "b"), Fate::Deliver { .. }));
    }

    #[test]
    fn isolate_and_heal_all() {
        let n = net();
        n.isolate("c").unwrap();
        for (f, t) in [("a", "c"), ("c", "a"), ("b", "c"), ("c", "b")] {
            assert_eq!(fate(&n, f, t), Fate::Drop(DropCause::Partition), "{f}->{t}");
        }
        assert!(matches!(fate(&n, "a", "b"), Fate::Deliver { .. }));
        n.heal(None).unwrap();
        assert!(matches!(fate(&n, "c", "a"), Fate::Deliver { .. }));
    }

    #[test]
    fn unknown_regions_are_named() {
        let n = net();
        let err = n.partition("a", "mars", false).unwrap_err().to_string();
        assert!(
            err.contains("unknown region \"mars\" (known: a, b, c)"),
            "{err}"
        );
        assert!(n.partition("a", "a", false).is_err());
    }

    #[test]
    fn impossible_changes_are_refused() {
        let n = net();
        for change in [
            LinkChange {
                loss: Some(1.5),
                ..Default::default()
            },
            LinkChange {
                reorder: Some(-0.1),
                ..Default::default()
            },
            LinkChange {
                burst: Some((0.1, 0.5)),
                ..Default::default()
            },
            LinkChange {
                mtu: Some(500),
                ..Default::default()
            },
        ] {
            let err = n.set("a", "b", false, &change).unwrap_err().to_string();
            assert!(err.starts_with("invalid "), "{err}");
        }
        assert_eq!(
            lock(&n.link("a", "b").unwrap()).config(),
            &LinkConfig::default()
        );
    }

    #[test]
    fn set_changes_only_given_fields() {
        let n = net();
        let change = LinkChange {
            latency: Some(Duration::from_millis(40)),
            loss: Some(0.01),
            ..Default::default()
        };
        n.set("a", "b", false, &change).unwrap();
        let ab = lock(&n.link("a", "b").unwrap()).config().clone();
        assert_eq!(ab.latency, Duration::from_millis(40));
        assert_eq!(ab.loss, 0.01);
        assert_eq!(ab.jitter, Duration::ZERO);
        assert_eq!(
            lock(&n.link("b", "a").unwrap()).config().latency,
            Duration::from_millis(40)
        );
        assert_eq!(
            lock(&n.link("a", "c").unwrap()).config().latency,
            Duration::ZERO
        );
    }
}
