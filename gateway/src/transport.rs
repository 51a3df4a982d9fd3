//! Transport telemetry: what QUIC itself knows about each tunnel (smoothed
//! and minimum RTT, congestion window, path MTU, packets and bytes sent and
//! lost), read from quinn's connection statistics when `/metrics` or
//! `/status` asks. Probes say whether a peer answers; these figures say why
//! a tunnel that answers is slow (a shrunken congestion window after loss,
//! a small path MTU, a long minimum RTT).
//!
//! The figures are read at scrape time rather than recorded through the
//! `metrics` facade so that a closed connection's series disappear with it
//! instead of freezing at their last values. Each series belongs to one
//! connection (peer gateway and lane), so its counters start again from
//! zero when that lane reconnects, which Prometheus' `rate()` expects.

use std::time::Duration;

use serde::Serialize;

use crate::metrics as m;
use crate::scrape::{Family, Labels};

/// One connection's transport figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TransportStats {
    /// What carries the connection's datagrams: "quic" (UDP) or "tcp" (the
    /// TCP carrier, where UDP is blocked).
    pub kind: &'static str,
    /// Smoothed RTT, as QUIC's loss recovery uses it.
    #[serde(rename = "rtt_ms", serialize_with = "millis")]
    pub rtt: Duration,
    /// Lowest RTT seen on the path.
    #[serde(rename = "min_rtt_ms", serialize_with = "millis")]
    pub min_rtt: Duration,
    pub cwnd_bytes: u64,
    /// The largest UDP payload the path carries, as discovered.
    pub mtu_bytes: u16,
    pub sent_packets: u64,
    pub lost_packets: u64,
    /// Lost packets over sent packets since the connection opened.
    pub loss_ratio: f64,
    /// UDP payload bytes, both directions.
    pub sent_bytes: u64,
    pub received_bytes: u64,
    pub lost_bytes: u64,
    pub congestion_events: u64,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e3)
}

impl From<&quinn::ConnectionStats> for TransportStats {
    fn from(s: &quinn::ConnectionStats) -> Self {
        TransportStats {
            kind: "quic",
            rtt: s.path.rtt,
            min_rtt: s.path.min_rtt,
            cwnd_bytes: s.path.cwnd,
            mtu_bytes: s.path.current_mtu,
            sent_packets: s.path.sent_packets,
            lost_packets: s.path.lost_packets,
            loss_ratio: if s.path.sent_packets == 0 {
                0.0
            } else {
                s.path.lost_packets as f64 / s.path.sent_packets as f64
            },
            sent_bytes: s.udp_tx.bytes,
            received_bytes: s.udp_rx.bytes,
            lost_bytes: s.path.lost_bytes,
            congestion_events: s.path.congestion_events,
        }
    }
}

impl TransportStats {
    /// The figures of `conn`, and whether a TCP carrier carries it.
    pub fn of(conn: &quinn::Connection) -> Self {
        TransportStats {
            kind: crate::carrier::transport_of(&conn.remote_address()),
            ..TransportStats::from(&conn.stats())
        }
    }
}

/// The transport metrics of every open tunnel of `handle`, one series
/// per connection (peer gateway and lane).
pub fn families(handle: &crate::handle::PlaneHandle) -> Vec<Family> {
    let tunnels: Vec<(Labels, TransportStats)> = handle
        .tunnels()
        .iter()
        .filter(|t| !t.is_closed())
        .map(|t| {
            let stats = TransportStats::of(&t.conn);
            (
                vec![
                    ("region", handle.region().to_owned()),
                    ("peer", t.peer.to_string()),
                    ("peer_instance", t.instance.clone()),
                    ("peer_region", t.region.clone()),
                    ("lane", t.lane.to_string()),
                    ("transport", stats.kind.to_owned()),
                ],
                stats,
            )
        })
        .collect();
    per_connection(&tunnels)
}

/// One family per transport metric, a series per connection.
fn per_connection(tunnels: &[(Labels, TransportStats)]) -> Vec<Family> {
    TRANSPORT
        .iter()
        .map(|&name| {
            let mut f = Family::new(name);
            for (labels, stats) in tunnels {
                f.push(labels.clone(), value(name, stats));
            }
            f
        })
        .collect()
}

/// The transport metrics, in the order `/metrics` lists them.
pub const TRANSPORT: [&str; 10] = [
    m::QUIC_RTT,
    m::QUIC_MIN_RTT,
    m::QUIC_CWND,
    m::QUIC_MTU,
    m::QUIC_SENT_PACKETS,
    m::QUIC_LOST_PACKETS,
    m::QUIC_SENT_BYTES,
    m::QUIC_RECEIVED_BYTES,
    m::QUIC_LOST_BYTES,
    m::QUIC_CONGESTION_EVENTS,
];

/// The value of metric `name` in `s`.
fn value(name: &str, s: &TransportStats) -> f64 {
    match name {
        m::QUIC_RTT => s.rtt.as_secs_f64(),
        m::QUIC_MIN_RTT => s.min_rtt.as_secs_f64(),
        m::QUIC_CWND => s.cwnd_bytes as f64,
        m::QUIC_MTU => f64::from(s.mtu_bytes),
        m::QUIC_SENT_PACKETS => s.sent_packets as f64,
        m::QUIC_LOST_PACKETS => s.lost_packets as f64,
        m::QUIC_SENT_BYTES => s.sent_bytes as f64,
        m::QUIC_RECEIVED_BYTES => s.received_bytes as f64,
        m::QUIC_LOST_BYTES => s.lost_bytes as f64,
        m::QUIC_CONGESTION_EVENTS => s.congestion_events as f64,
        _ => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(lane: u16) -> Labels {
        vec![
            ("region", "eu-west".into()),
            (
                "peer",
                "spiffe://example.org/gateway/us-east/gw-\"2\"".into(),
            ),
            ("peer_instance", "10.0.0.2:15443".into()),
            ("peer_region", "us-east".into()),
            ("lane", lane.to_string()),
        ]
    }

    #[test]
    fn every_transport_metric_renders_one_series_per_connection() {
        let stats = TransportStats {
            kind: "quic",
            rtt: Duration::from_micros(80_400),
            min_rtt: Duration::from_millis(80),
            cwnd_bytes: 120_000,
            mtu_bytes: 1452,
            sent_packets: 1000,
            lost_packets: 20,
            loss_ratio: 0.02,
            sent_bytes: 1_400_000,
            received_bytes: 70_000,
            lost_bytes: 28_000,
            congestion_events: 3,
        };
        let text = crate::scrape::render(&per_connection(&[
            (labels(0), stats),
            (labels(1), TransportStats::default()),
        ]));
        for name in TRANSPORT {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{text}");
            assert_eq!(
                text.lines()
                    .filter(|l| l.starts_with(&format!("{name}{{")))
                    .count(),
                2,
                "{name}"
            );
        }
        assert!(text.contains(
            "strait_quic_rtt_seconds{region=\"eu-west\",peer=\"spiffe://example.org/gateway/us-east/gw-\\\"2\\\"\",peer_instance=\"10.0.0.2:15443\",peer_region=\"us-east\",lane=\"0\"} 0.0804\n"
        ), "{text}");
        assert!(text.contains("strait_quic_lost_packets_total{"));
        assert!(text.contains("lane=\"1\"} 0\n"));
        assert_eq!(crate::scrape::render(&per_connection(&[])), "");
    }

    #[test]
    fn status_shows_milliseconds() {
        let stats = TransportStats {
            rtt: Duration::from_micros(80_456),
            ..TransportStats::default()
        };
        let json = serde_json::to_value(stats).unwrap();
        assert_eq!(json["rtt_ms"], 80.456);
        assert_eq!(json["min_rtt_ms"], 0.0);
    }
}
