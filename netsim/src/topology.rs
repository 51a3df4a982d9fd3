//! The topology file: regions, their gateways' real addresses, the RTT
//! between every pair of regions and the impairments of each link. Parsed
//! once into typed values; every error names the file, the line and the
//! field.
//!
//! ```toml
//! seed = 7                          # same seed, same packet fates
//! control = "127.0.0.1:15099"       # control API (default shown)
//! relay_base_port = 17000           # relays on consecutive ports (default: any free port)
//!
//! [defaults]                        # every link starts from these
//! jitter = "1ms"
//! loss = "0%"
//! rate = "1gbit"
//!
//! [[region]]
//! name = "eu-west"
//! gateways = { gw-1 = "127.0.0.1:16001" }
//!
//! [[region]]
//! name = "us-east"
//! gateways = { gw-2 = "127.0.0.1:16002" }
//!
//! [[link]]                          # one per pair of regions, none missing
//! between = ["eu-west", "us-east"]
//! rtt = "80ms"                      # one-way latency is half of it
//! loss = "0.1%"                     # overrides [defaults] for this pair
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::NetsimError;
use crate::link::{BurstLoss, LinkConfig};
use crate::units::{parse_duration, parse_rate, parse_ratio};

/// Where the control API listens unless the topology says otherwise.
pub const DEFAULT_CONTROL: &str = "127.0.0.1:15099";

/// A validated topology.
#[derive(Debug, Clone)]
pub struct Topology {
    pub seed: u64,
    pub control: SocketAddr,
    pub relay_base_port: Option<u16>,
    pub regions: Vec<Region>,
    /// Settings of every directed pair of distinct regions.
    pub links: BTreeMap<(String, String), LinkConfig>,
}

#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
    pub gateways: Vec<Gateway>,
}

#[derive(Debug, Clone)]
pub struct Gateway {
    pub name: String,
    pub region: String,
    pub addr: SocketAddr,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    seed: Option<u64>,
    control: Option<Spanned<String>>,
    relay_base_port: Option<Spanned<u16>>,
    #[serde(default)]
    defaults: Option<Spanned<RawLink>>,
    #[serde(default)]
    region: Vec<Spanned<RawRegion>>,
    #[serde(default)]
    link: Vec<Spanned<RawLink>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    name: Spanned<String>,
    #[serde(default)]
    gateways: BTreeMap<String, Spanned<String>>,
}

/// A `[[link]]` entry, or `[defaults]` (which takes no `between` or `rtt`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    between: Option<Spanned<Vec<Spanned<String>>>>,
    rtt: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    loss: Option<Spanned<String>>,
    burst_loss: Option<Spanned<String>>,
    burst_len: Option<Spanned<f64>>,
    duplicate: Option<Spanned<String>>,
    reorder: Option<Spanned<String>>,
    rate: Option<Spanned<String>>,
    queue_bytes: Option<Spanned<usize>>,
    mtu: Option<Spanned<usize>>,
    partitioned: Option<bool>,
}

/// Turns byte offsets into line numbers for messages.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        field: &str,
        message: impl Into<String>,
    ) -> Result<T, NetsimError> {
        Err(NetsimError::Topology {
            path: self.path.to_owned(),
            line: self.line(span.start),
            field: field.to_owned(),
            message: message.into(),
        })
    }

    fn value<T>(
        &self,
        v: &Spanned<String>,
        field: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, NetsimError> {
        parse(v.get_ref()).or_else(|m| self.err(v.span(), field, m))
    }
}

impl Topology {
    /// Reads and validates a topology file.
    pub fn load(path: &Path) -> Result<Topology, NetsimError> {
        let text = std::fs::read_to_string(path).map_err(|source| NetsimError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates topology text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Topology, NetsimError> {
        let raw: RawTopology = toml::from_str(text).map_err(|e| NetsimError::Toml {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let src = Source { path, text };
        let control = match &raw.control {
            Some(c) => src.value(c, "control", parse_loopback)?,
            None => DEFAULT_CONTROL.parse().expect("valid default"),
        };

        let defaults = match &raw.defaults {
            Some(d) => {
                if let Some(b) = &d.get_ref().between {
                    return src.err(
                        b.span(),
                        "defaults.between",
                        "[defaults] applies to every link; name pairs in [[link]]",
                    );
                }
                if let Some(r) = &d.get_ref().rtt {
                    return src.err(
                        r.span(),
                        "defaults.rtt",
                        "every pair needs its own rtt in [[link]]",
                    );
                }
                impairments(&src, d.get_ref(), LinkConfig::default(), "defaults")?
            }
            None => LinkConfig::default(),
        };

        let mut regions: Vec<Region> = Vec::new();
        let mut region_lines: HashMap<String, usize> = HashMap::new();
        let mut used: HashMap<SocketAddr, (usize, String)> = HashMap::new();
        let mut claim = |addr: SocketAddr, line: usize, what: String| -> Result<(), NetsimError> {
            if addr.port() == 0 {
                return Ok(());
            }
            if let Some((first_line, first)) = used.get(&addr) {
                return Err(NetsimError::Topology {
                    path: path.to_owned(),
                    line,
                    field: what,
                    message: format!("{addr} is already used by {first} on line {first_line}"),
                });
            }
            used.insert(addr, (line, what));
            Ok(())
        };
        claim(
            control,
            raw.control.as_ref().map_or(0, |c| src.line(c.span().start)),
            "control".into(),
        )?;

        for r in &raw.region {
            let r = r.get_ref();
            let name = r.name.get_ref().clone();
            let line = src.line(r.name.span().start);
            if let Err(m) = check_name(&name) {
                return src.err(r.name.span(), "region.name", m);
            }
            if let Some(first) = region_lines.insert(name.clone(), line) {
                return src.err(
                    r.name.span(),
                    "region.name",
                    format!("region {name:?} is already defined on line {first}"),
                );
            }
            let mut gateways = Vec::new();
            for (gw, addr) in &r.gateways {
                let field = format!("region.gateways.{gw}");
                if let Err(m) = check_name(gw) {
                    return src.err(addr.span(), &field, m);
                }
                let a = src.value(addr, &field, parse_loopback)?;
                claim(a, src.line(addr.span().start), format!("gateway {gw}"))?;
                gateways.push(Gateway {
                    name: gw.clone(),
                    region: name.clone(),
                    addr: a,
                });
            }
            regions.push(Region { name, gateways });
        }
        if regions.len() < 2 {
            return Err(NetsimError::Incomplete {
                path: path.to_owned(),
                message: format!(
                    "a topology needs at least two [[region]]s, found {}",
                    regions.len()
                ),
            });
        }

        let mut links = BTreeMap::new();
        let mut pair_lines: HashMap<(String, String), usize> = HashMap::new();
        for entry in &raw.link {
            let l = entry.get_ref();
            let Some(between) = &l.between else {
                return src.err(
                    entry.span(),
                    "link.between",
                    "every [[link]] needs between = [\"a\", \"b\"]",
                );
            };
            let ends = between.get_ref();
            if ends.len() != 2 {
                return src.err(
                    between.span(),
                    "link.between",
                    format!("names {} regions, a link joins exactly two", ends.len()),
                );
            }
            for end in ends {
                if !region_lines.contains_key(end.get_ref()) {
                    let known: Vec<&str> = regions.iter().map(|r| r.name.as_str()).collect();
                    return src.err(
                        end.span(),
                        "link.between",
                        format!(
                            "unknown region {:?} (known: {})",
                            end.get_ref(),
                            known.join(", ")
                        ),
                    );
                }
            }
            let (a, b) = (ends[0].get_ref().clone(), ends[1].get_ref().clone());
            if a == b {
                return src.err(
                    between.span(),
                    "link.between",
                    format!("{a:?} twice; a link joins two different regions"),
                );
            }
            let line = src.line(between.span().start);
            let key = if a < b {
                (a.clone(), b.clone())
            } else {
                (b.clone(), a.clone())
            };
            if let Some(first) = pair_lines.insert(key, line) {
                return src.err(
                    between.span(),
                    "link.between",
                    format!("{a} <-> {b} is already defined on line {first}"),
                );
            }
            let Some(rtt) = &l.rtt else {
                return src.err(
                    between.span(),
                    "link.rtt",
                    format!("link {a} <-> {b} needs an rtt"),
                );
            };
            let rtt = src.value(rtt, "link.rtt", parse_duration)?;
            let mut config = impairments(&src, l, defaults.clone(), "link")?;
            config.latency = rtt / 2;
            links.insert((a.clone(), b.clone()), config.clone());
            links.insert((b, a), config);
        }
        let mut missing = Vec::new();
        for (i, a) in regions.iter().enumerate() {
            for b in &regions[i + 1..] {
                if !links.contains_key(&(a.name.clone(), b.name.clone())) {
                    missing.push(format!("{} <-> {}", a.name, b.name));
                }
            }
        }
        if !missing.is_empty() {
            return Err(NetsimError::Incomplete {
                path: path.to_owned(),
                message: format!("the RTT matrix has no [[link]] for: {}", missing.join(", ")),
            });
        }

        if let Some(base) = &raw.relay_base_port {
            let line = src.line(base.span().start);
            let count = relay_pairs(&regions).count();
            let first = *base.get_ref() as usize;
            if first == 0 || first + count > u16::MAX as usize + 1 {
                return src.err(
                    base.span(),
                    "relay_base_port",
                    format!("{count} relays do not fit from port {first}"),
                );
            }
            for i in 0..count {
                let addr = SocketAddr::from(([127, 0, 0, 1], (first + i) as u16));
                claim(addr, line, format!("relay #{}", i + 1))?;
            }
        }

        Ok(Topology {
            seed: raw.seed.unwrap_or(0),
            control,
            relay_base_port: raw.relay_base_port.map(|p| *p.get_ref()),
            regions,
            links,
        })
    }

    /// The region names, in file order.
    pub fn region_names(&self) -> Vec<String> {
        self.regions.iter().map(|r| r.name.clone()).collect()
    }

    /// Every ordered pair of gateways in different regions: one relay each.
    pub fn relay_pairs(&self) -> impl Iterator<Item = (&Gateway, &Gateway)> {
        relay_pairs(&self.regions)
    }
}

fn relay_pairs(regions: &[Region]) -> impl Iterator<Item = (&Gateway, &Gateway)> {
    let all: Vec<&Gateway> = regions.iter().flat_map(|r| &r.gateways).collect();
    let mut pairs = Vec::new();
    for from in &all {
        for to in &all {
            if from.region != to.region {
                pairs.push((*from, *to));
            }
        }
    }
    pairs.into_iter()
}

fn impairments(
    src: &Source<'_>,
    raw: &RawLink,
    mut c: LinkConfig,
    section: &str,
) -> Result<LinkConfig, NetsimError> {
    let field = |name: &str| format!("{section}.{name}");
    if let Some(v) = &raw.jitter {
        c.jitter = src.value(v, &field("jitter"), parse_duration)?;
    }
    if let Some(v) = &raw.loss {
        c.loss = src.value(v, &field("loss"), parse_ratio)?;
    }
    if let Some(v) = &raw.burst_loss {
        let loss = src.value(v, &field("burst_loss"), parse_ratio)?;
        let len = raw.burst_len.as_ref().map_or(3.0, |l| *l.get_ref());
        if len < 1.0 {
            let span = raw.burst_len.as_ref().map_or(v.span(), |l| l.span());
            return src.err(
                span,
                &field("burst_len"),
                "mean burst length must be at least 1 packet",
            );
        }
        c.burst = (loss > 0.0).then(|| BurstLoss::from_mean(loss, len));
    }
    if let Some(v) = &raw.duplicate {
        c.duplicate = src.value(v, &field("duplicate"), parse_ratio)?;
    }
    if let Some(v) = &raw.reorder {
        c.reorder = src.value(v, &field("reorder"), parse_ratio)?;
    }
    if let Some(v) = &raw.rate {
        c.rate_bps = Some(src.value(v, &field("rate"), parse_rate)?);
    }
    if let Some(v) = &raw.queue_bytes {
        c.queue_bytes = *v.get_ref();
    }
    if let Some(v) = &raw.mtu {
        if *v.get_ref() < 1200 {
            return src.err(
                v.span(),
                &field("mtu"),
                "an MTU below 1200 bytes cannot carry QUIC",
            );
        }
        c.mtu = Some(*v.get_ref());
    }
    if let Some(p) = raw.partitioned {
        c.partitioned = p;
    }
    Ok(c)
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name may not be empty".into());
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        Some(c) => Err(format!(
            "{name:?} holds {c:?}; names use letters, digits, '-', '_' and '.'"
        )),
        None => Ok(()),
    }
}

/// A socket address on this machine; netsim never relays anywhere else.
pub fn parse_loopback(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an address such as 127.0.0.1:16001"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address; netsim only relays on this machine (127.0.0.0/8, ::1)"
        ));
    }
    Ok(addr)
}

/// Paths relative to a topology file resolve against its directory.
pub fn relative_to(file: &Path, p: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const GOOD: &str = r#"
seed = 7
control = "127.0.0.1:25099"

[defaults]
jitter = "1ms"
rate = "1gbit"

[[region]]
name = "eu-west"
gateways = { gw-1 = "127.0.0.1:26001" }

[[region]]
name = "us-east"
gateways = { gw-2 = "127.0.0.1:26002" }

[[region]]
name = "ap-south"
gateways = { gw-3 = "127.0.0.1:26003", gw-4 = "127.0.0.1:26004" }

[[link]]
between = ["eu-west", "us-east"]
rtt = "80ms"

[[link]]
between = ["eu-west", "ap-south"]
rtt = "150ms"
loss = "1%"

[[link]]
between = ["us-east", "ap-south"]
rtt = "200ms"
"#;

    fn parse(text: &str) -> Result<Topology, NetsimError> {
        Topology::parse(Path::new("topo.toml"), text)
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_a_full_topology() {
        let t = parse(GOOD).unwrap();
        assert_eq!(t.seed, 7);
        assert_eq!(t.regions.len(), 3);
        let ab = &t.links[&("eu-west".to_string(), "us-east".to_string())];
        assert_eq!(ab.latency, Duration::from_millis(40));
        assert_eq!(ab.jitter, Duration::from_millis(1));
        assert_eq!(ab.rate_bps, Some(1_000_000_000));
        let ea = &t.links[&("ap-south".to_string(), "eu-west".to_string())];
        assert_eq!(ea.loss, 0.01);
        assert_eq!(ea.latency, Duration::from_millis(75));
        // 4 gateways: gw-1 and gw-2 reach 3 foreign gateways each, gw-3 and gw-4 two each.
        assert_eq!(t.relay_pairs().count(), 10);
    }

    #[test]
    fn unknown_region_names_the_line() {
        let text = GOOD.replace(
            r#"between = ["us-east", "ap-south"]"#,
            r#"between = ["us-east", "mars"]"#,
        );
        let e = error(&text);
        assert!(
            e.starts_with("topo.toml:31: link.between: unknown region \"mars\""),
            "{e}"
        );
    }

    #[test]
    fn malformed_values_name_the_line_and_field() {
        let e = error(&GOOD.replace(r#"rtt = "150ms""#, r#"rtt = "150""#));
        assert!(e.starts_with("topo.toml:27: link.rtt:"), "{e}");
        let e = error(&GOOD.replace(r#"rate = "1gbit""#, r#"rate = "1gbps""#));
        assert!(
            e.starts_with("topo.toml:7: defaults.rate:") && e.contains("1gbit"),
            "{e}"
        );
        let e = error(&GOOD.replace(r#"loss = "1%""#, r#"loss = "12 percent""#));
        assert!(e.starts_with("topo.toml:28: link.loss:"), "{e}");
    }

    #[test]
    fn a_port_named_twice_is_refused() {
        let e = error(&GOOD.replace("127.0.0.1:26004", "127.0.0.1:26001"));
        assert!(
            e.contains("127.0.0.1:26001 is already used by gateway gw-1 on line 11"),
            "{e}"
        );
        let e = error(&GOOD.replace("127.0.0.1:26002", "127.0.0.1:25099"));
        assert!(e.contains("already used by control"), "{e}");
    }

    #[test]
    fn a_missing_pair_is_refused() {
        let text = GOOD.replace(
            "[[link]]\nbetween = [\"us-east\", \"ap-south\"]\nrtt = \"200ms\"\n",
            "",
        );
        let e = error(&text);
        assert!(
            e.contains("the RTT matrix has no [[link]] for: us-east <-> ap-south"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_and_foreign_addresses_are_refused() {
        let e = error(&GOOD.replace("seed = 7", "sede = 7"));
        assert!(
            e.contains("unknown field `sede`") && e.contains("line 2"),
            "{e}"
        );
        let e = error(&GOOD.replace("127.0.0.1:26003", "10.0.0.3:26003"));
        assert!(e.contains("not a loopback address"), "{e}");
        let e = error(&GOOD.replace(
            "rtt = \"80ms\"",
            "rtt = \"80ms\"\n[[link]]\nbetween = [\"us-east\", \"eu-west\"]\nrtt = \"1ms\"",
        ));
        assert!(e.contains("is already defined on line"), "{e}");
    }
}
