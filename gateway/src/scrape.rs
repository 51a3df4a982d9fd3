//! Metrics read from live state when `/metrics` is scraped, rather than
//! recorded as things happen: each tunnel's state and QUIC figures, how
//! many gateways of each remote region this gateway reaches, and how old
//! its news of every gateway is. Series that belong to something that can
//! go away (a connection, a gateway that left) go with it, instead of
//! freezing at their last values in the recorder, so an alert on them
//! tells the truth; the recorder keeps counters and histograms.
//!
//! Rendered in the Prometheus text format after what the recorder
//! renders; names and help live in `crate::metrics::LIVE`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use strait_core::health::TunnelHealth;
use strait_core::plane::ConnView;

use crate::metrics as m;

/// Label pairs of one series, in order.
pub type Labels = Vec<(&'static str, String)>;

/// The samples of one metric family.
#[derive(Debug, Default)]
pub struct Family {
    pub name: &'static str,
    pub samples: Vec<(Labels, f64)>,
}

impl Family {
    pub fn new(name: &'static str) -> Self {
        Family {
            name,
            samples: Vec::new(),
        }
    }

    pub fn push(&mut self, labels: Labels, value: f64) {
        self.samples.push((labels, value));
    }
}

/// Label values as the Prometheus text format wants them.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `families` in the Prometheus text format; a family with no samples is
/// left out (no HELP and TYPE with nothing under them).
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for family in families.iter().filter(|f| !f.samples.is_empty()) {
        let (kind, help) = m::LIVE
            .iter()
            .find(|(n, _, _)| *n == family.name)
            .map_or(("gauge", ""), |(_, k, h)| (*k, *h));
        let _ = writeln!(out, "# HELP {} {help}", family.name);
        let _ = writeln!(out, "# TYPE {} {kind}", family.name);
        for (labels, value) in &family.samples {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = writeln!(out, "{}{{{}}} {value}", family.name, labels.join(","));
        }
        out.push('\n');
    }
    out
}

fn rank(state: &str) -> u8 {
    match state {
        "up" => 2,
        "degraded" => 1,
        _ => 0,
    }
}

/// The best state of each peer gateway over its active connections
/// (lanes), keyed by (peer region, SPIFFE ID, instance).
fn peer_states(conns: &[ConnView]) -> BTreeMap<(String, String, String), &'static str> {
    let mut best: BTreeMap<(String, String, String), &'static str> = BTreeMap::new();
    for c in conns.iter().filter(|c| c.role == "active") {
        let key = (
            c.peer.region.clone(),
            c.peer.id.clone(),
            c.peer.instance.clone(),
        );
        let e = best.entry(key).or_insert(c.state);
        if rank(c.state) > rank(e) {
            *e = c.state;
        }
    }
    best
}

/// `strait_tunnel_state`: one series per state of every peer gateway with
/// an open tunnel, 1 for the best state of its lanes.
pub fn tunnel_state(region: &str, conns: &[ConnView]) -> Family {
    let mut f = Family::new(m::TUNNEL_STATE);
    for ((peer_region, peer, instance), state) in peer_states(conns) {
        for s in [TunnelHealth::Up, TunnelHealth::Degraded, TunnelHealth::Down] {
            f.push(
                vec![
                    ("region", region.to_owned()),
                    ("peer", peer.clone()),
                    ("peer_instance", instance.clone()),
                    ("peer_region", peer_region.clone()),
                    ("state", s.as_str().to_owned()),
                ],
                if s.as_str() == state { 1.0 } else { 0.0 },
            );
        }
    }
    f
}

/// `strait_peer_region_gateways`: for every remote region this gateway is
/// configured to reach (`wanted`) or has a tunnel to, how many of its
/// gateways are up, degraded or down from here. A region with no tunnel
/// at all has every count at 0, which is what an alert looks for.
pub fn region_gateways(region: &str, wanted: &[String], conns: &[ConnView]) -> Family {
    let mut counts: BTreeMap<String, [u32; 3]> = wanted
        .iter()
        .filter(|r| r.as_str() != region)
        .map(|r| (r.clone(), [0; 3]))
        .collect();
    for ((peer_region, _, _), state) in peer_states(conns) {
        counts.entry(peer_region).or_default()[usize::from(rank(state))] += 1;
    }
    let mut f = Family::new(m::PEER_REGION_GATEWAYS);
    for (peer_region, by_state) in counts {
        for (state, n) in ["down", "degraded", "up"].iter().zip(by_state) {
            f.push(
                vec![
                    ("region", region.to_owned()),
                    ("peer_region", peer_region.clone()),
                    ("state", (*state).to_owned()),
                ],
                f64::from(n),
            );
        }
    }
    f
}

/// `strait_mesh_report_age_seconds`: how old this gateway's figures of
/// every other gateway it has heard of are (until it forgets them).
pub fn mesh_ages(region: &str, mesh: &[crate::telemetry::MeshEntry]) -> Family {
    let mut f = Family::new(m::MESH_REPORT_AGE);
    // The first entry is this gateway itself.
    for e in mesh.iter().skip(1) {
        f.push(
            vec![
                ("region", region.to_owned()),
                ("gateway", e.gateway.clone()),
                ("gateway_instance", e.instance.clone()),
                ("gateway_region", e.region.clone()),
            ],
            e.age_ms as f64 / 1e3,
        );
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_core::plane::PeerInfo;

    fn conn(
        region: &str,
        name: &str,
        lane: u16,
        role: &'static str,
        state: &'static str,
    ) -> ConnView {
        ConnView {
            conn: strait_core::plane::ConnId(u64::from(lane) + name.len() as u64 * 10),
            peer: PeerInfo::new(
                &format!("spiffe://example.org/region/{region}/gateway/{name}"),
                name,
                region,
                "",
            )
            .with_lane(lane),
            dialed: true,
            role,
            state,
            rtt_us: None,
            loss: 0.0,
            missed: 0,
            quiet_ms: 0,
            draining: false,
            active_streams: 0,
            services: Vec::new(),
        }
    }

    #[test]
    fn a_peer_is_as_up_as_its_best_lane_and_superseded_connections_do_not_count() {
        let conns = vec![
            conn("us-east", "gw-b", 0, "active", "down"),
            conn("us-east", "gw-b", 1, "active", "up"),
            conn("ap-south", "gw-c", 0, "superseded", "up"),
            conn("ap-south", "gw-c", 1, "active", "down"),
        ];
        let text = render(&[tunnel_state("eu-west", &conns)]);
        assert!(
            text.contains("# TYPE strait_tunnel_state gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("peer_instance=\"\",peer_region=\"us-east\",state=\"up\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("peer_region=\"us-east\",state=\"down\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("peer_region=\"ap-south\",state=\"down\"} 1\n"),
            "{text}"
        );
        assert_eq!(text.lines().filter(|l| l.starts_with("strait_")).count(), 6);
    }

    #[test]
    fn a_wanted_region_without_a_tunnel_counts_zero_gateways() {
        let conns = vec![
            conn("us-east", "gw-b", 0, "active", "up"),
            conn("us-east", "gw-d", 0, "active", "degraded"),
        ];
        let wanted = ["us-east", "ap-south", "eu-west"].map(String::from);
        let f = region_gateways("eu-west", &wanted, &conns);
        let get = |r: &str, s: &str| {
            f.samples
                .iter()
                .find(|(l, _)| l[1].1 == r && l[2].1 == s)
                .map(|(_, v)| *v)
        };
        assert_eq!(get("us-east", "up"), Some(1.0));
        assert_eq!(get("us-east", "degraded"), Some(1.0));
        assert_eq!(get("ap-south", "up"), Some(0.0));
        assert_eq!(get("ap-south", "down"), Some(0.0));
        assert_eq!(
            get("eu-west", "up"),
            None,
            "our own region is not a peer region"
        );
    }

    #[test]
    fn empty_families_render_nothing_and_values_are_escaped() {
        assert_eq!(render(&[Family::new(m::TUNNEL_STATE)]), "");
        let mut f = Family::new(m::MESH_REPORT_AGE);
        f.push(vec![("gateway", "a\"b\\c".into())], 1.5);
        assert_eq!(
            render(&[f]).lines().nth(2),
            Some("strait_mesh_report_age_seconds{gateway=\"a\\\"b\\\\c\"} 1.5")
        );
    }
}
