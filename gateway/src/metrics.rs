//! Every metric strait exports, as constants with their help text, so the
//! names live in one place (the README table is checked against
//! [`ALL`] by a test). Base units and Prometheus naming; labels are region,
//! peer, peer_region, service, side, outcome, never a connection.
//!
//! Recording goes through the `metrics` facade; [`install`] sets the
//! Prometheus recorder once per process and returns the handle `/metrics`
//! renders. Without it (library use, tests) recording is a no-op.

use std::sync::OnceLock;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const BUILD_INFO: &str = "strait_build_info";
pub const TUNNEL_STATE: &str = "strait_tunnel_state";
pub const PROBE_RTT: &str = "strait_probe_rtt_seconds";
pub const PROBE_LOSS: &str = "strait_probe_loss_ratio";
pub const PROBES: &str = "strait_probes_total";
pub const STREAMS: &str = "strait_streams_total";
pub const STREAMS_ACTIVE: &str = "strait_streams_active";
pub const STREAM_BYTES: &str = "strait_stream_bytes_total";
pub const STREAM_DURATION: &str = "strait_stream_duration_seconds";
pub const STREAM_OPEN: &str = "strait_stream_open_seconds";
pub const RETRIES: &str = "strait_stream_retries_total";
pub const FAILOVERS: &str = "strait_failovers_total";
pub const FAILBACKS: &str = "strait_failbacks_total";
pub const CIRCUIT_OPEN: &str = "strait_circuit_open";
pub const TARGET_UP: &str = "strait_target_up";
pub const CERT_EXPIRY: &str = "strait_certificate_expiry_timestamp_seconds";
pub const PEERS_REFUSED: &str = "strait_peers_refused_total";
pub const RELOADS_FAILED: &str = "strait_identity_reloads_failed_total";
pub const CONFIG_RELOADS_FAILED: &str = "strait_config_reloads_failed_total";
pub const CERT_REMAINING: &str = "strait_certificate_remaining_seconds";
pub const RENEWALS: &str = "strait_certificate_renewals_total";
pub const PEERS_REVOKED: &str = "strait_peers_revoked_total";
pub const RELAYED: &str = "strait_relayed_streams_total";
pub const BUNDLE_REFRESHES: &str = "strait_bundle_refreshes_total";
pub const HANDSHAKES: &str = "strait_handshakes_total";
pub const PEER_REGION_GATEWAYS: &str = "strait_peer_region_gateways";
pub const MESH_REPORT_AGE: &str = "strait_mesh_report_age_seconds";
pub const DRILLS: &str = "strait_drills_total";
pub const DENY_LISTS: &str = "strait_deny_lists_total";
pub const DRILL_ACTIVE: &str = "strait_drill_active";
pub const DRILL_DROPPED: &str = "strait_drill_dropped_packets_total";
pub const QUIC_RTT: &str = "strait_quic_rtt_seconds";
pub const QUIC_MIN_RTT: &str = "strait_quic_min_rtt_seconds";
pub const QUIC_CWND: &str = "strait_quic_congestion_window_bytes";
pub const QUIC_MTU: &str = "strait_quic_path_mtu_bytes";
pub const QUIC_SENT_PACKETS: &str = "strait_quic_sent_packets_total";
pub const QUIC_LOST_PACKETS: &str = "strait_quic_lost_packets_total";
pub const QUIC_SENT_BYTES: &str = "strait_quic_sent_bytes_total";
pub const QUIC_RECEIVED_BYTES: &str = "strait_quic_received_bytes_total";
pub const QUIC_LOST_BYTES: &str = "strait_quic_lost_bytes_total";
pub const QUIC_CONGESTION_EVENTS: &str = "strait_quic_congestion_events_total";

/// (name, kind, help) of every metric.
pub const ALL: &[(&str, &str, &str)] = &[
    (BUILD_INFO, "gauge", "Always 1; labels carry the version."),
    (
        PROBE_RTT,
        "histogram",
        "Round-trip time of answered probes.",
    ),
    (
        PROBE_LOSS,
        "gauge",
        "Share of the last 20 probes that went unanswered.",
    ),
    (PROBES, "counter", "Probes by result (answered, missed)."),
    (
        STREAMS,
        "counter",
        "Streams by side (import, export) and outcome (ok, reset, idle, reclaimed, refused, ambiguous, forbidden, no_such_service, target_unreachable, draining, overloaded, no_peer, protocol_error).",
    ),
    (
        STREAMS_ACTIVE,
        "gauge",
        "Streams in flight by side and service.",
    ),
    (
        STREAM_BYTES,
        "counter",
        "Bytes carried by direction (in: towards the client or target of this gateway, out: into the tunnel).",
    ),
    (
        STREAM_DURATION,
        "histogram",
        "Lifetime of finished streams.",
    ),
    (
        STREAM_OPEN,
        "histogram",
        "From a client connection to the exporting side's OK (import side).",
    ),
    (
        RETRIES,
        "counter",
        "Streams replayed on another peer before an answer.",
    ),
    (
        FAILOVERS,
        "counter",
        "A service's traffic moved to a less preferred region (from, to).",
    ),
    (
        FAILBACKS,
        "counter",
        "A service's traffic moved back to a more preferred region (from, to).",
    ),
    (
        RELOADS_FAILED,
        "counter",
        "Changed certificate, key or bundle files that did not load (the running identity stayed).",
    ),
    (
        CONFIG_RELOADS_FAILED,
        "counter",
        "Configuration reloads refused (the running configuration stayed).",
    ),
    (
        RELAYED,
        "counter",
        "Streams this gateway relayed for a gateway whose direct path was cut (from_region, to_region, outcome).",
    ),
    (
        CIRCUIT_OPEN,
        "gauge",
        "1 while the circuit breaker for (peer, service) is open.",
    ),
    (
        TARGET_UP,
        "gauge",
        "1 while an exported service's target answers its check.",
    ),
    (
        CERT_EXPIRY,
        "gauge",
        "When this gateway's certificate expires, Unix seconds.",
    ),
    (
        PEERS_REFUSED,
        "counter",
        "Handshakes refused by reason (handshake: certificate or TLS; hello: identity or HELLO; busy: max_handshakes in flight; strikes: its address failed 20 handshakes within 10 s, refused for 10 s).",
    ),
    (
        DENY_LISTS,
        "counter",
        "Signed deny lists offered to this gateway, by source (file: its own deny file; mesh: a peer) and result (applied: newer than the one held from its CA; stale; refused: forged, changed or signed by a stranger).",
    ),
    (
        DRILLS,
        "counter",
        "Drills started through the admin endpoint (kind=blackhole), by the region cut and direction.",
    ),
    (
        HANDSHAKES,
        "counter",
        "New QUIC handshakes by the gate's decision (accept; retry: asked to prove its address first; refuse: max_handshakes in flight or an address that keeps failing).",
    ),
    (
        CERT_REMAINING,
        "gauge",
        "Seconds until this gateway's certificate expires; negative once it has.",
    ),
    (
        RENEWALS,
        "counter",
        "Certificate renewals through the CA service by result (ok, error).",
    ),
    (
        PEERS_REVOKED,
        "counter",
        "Tunnels cut because the deny list names the peer's certificate.",
    ),
    (
        BUNDLE_REFRESHES,
        "counter",
        "Trust bundle and deny list fetches from the CA service by result (ok, error).",
    ),
];

/// (name, kind, help) of the metrics read from live state when `/metrics`
/// is scraped (`crate::scrape`), so that their series go with the tunnel
/// or gateway they describe.
pub const LIVE: &[(&str, &str, &str)] = &[
    (
        DRILL_ACTIVE,
        "gauge",
        "1 for each drill in force: tunnels to peer_region black-holed (direction=out|in|both); absent when none is.",
    ),
    (
        DRILL_DROPPED,
        "counter",
        "UDP datagrams dropped by drills, by direction (out: to the cut region; in: from it).",
    ),
    (
        TUNNEL_STATE,
        "gauge",
        "1 for the tunnel's current state (state=up|degraded|down, the best of its connections), 0 for the others; only while a tunnel is open.",
    ),
    (
        PEER_REGION_GATEWAYS,
        "gauge",
        "Gateways of each remote region (configured or with a tunnel) by the state of their tunnel from here; all 0 when none is reached.",
    ),
    (
        MESH_REPORT_AGE,
        "gauge",
        "Age of this gateway's latest figures from each gateway it has heard of (stale after 3 s, forgotten after 10 min).",
    ),
    (
        QUIC_RTT,
        "gauge",
        "Smoothed round-trip time QUIC measures on the tunnel.",
    ),
    (
        QUIC_MIN_RTT,
        "gauge",
        "Lowest round-trip time seen on the tunnel's path.",
    ),
    (
        QUIC_CWND,
        "gauge",
        "Congestion window: bytes the tunnel may have in flight.",
    ),
    (
        QUIC_MTU,
        "gauge",
        "Largest UDP payload the tunnel's path carries, as discovered.",
    ),
    (
        QUIC_SENT_PACKETS,
        "counter",
        "QUIC packets sent on the tunnel's connection.",
    ),
    (
        QUIC_LOST_PACKETS,
        "counter",
        "QUIC packets declared lost on the tunnel's connection.",
    ),
    (
        QUIC_SENT_BYTES,
        "counter",
        "UDP payload bytes sent on the tunnel's connection.",
    ),
    (
        QUIC_RECEIVED_BYTES,
        "counter",
        "UDP payload bytes received on the tunnel's connection.",
    ),
    (
        QUIC_LOST_BYTES,
        "counter",
        "Bytes in QUIC packets declared lost.",
    ),
    (
        QUIC_CONGESTION_EVENTS,
        "counter",
        "Times the congestion controller cut the window.",
    ),
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the Prometheus recorder for this process (once) and returns
/// the handle that renders `/metrics`.
pub fn install() -> Option<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Some(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_owned()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 300.0,
            ],
        )
        .ok()?
        .install_recorder()
        .ok()?;
    for (name, kind, help) in ALL {
        match *kind {
            "counter" => describe_counter!(*name, *help),
            "gauge" => describe_gauge!(*name, *help),
            _ => describe_histogram!(*name, Unit::Seconds, *help),
        }
    }
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // The recorder keeps every histogram sample until something folds them
    // into the buckets: a scrape, or this. Without it a gateway nobody
    // scrapes grows by two samples a stream, for ever.
    let kept = handle.clone();
    let _ = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                kept.run_upkeep();
            }
        });
    let _ = HANDLE.set(handle.clone());
    Some(handle)
}

/// The handle, if [`install`] ran in this process.
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE.get().cloned()
}

/// Counts a stream as active for as long as it lives.
pub struct ActiveStream {
    labels: [(&'static str, String); 3],
}

impl ActiveStream {
    pub fn new(region: &str, side: &'static str, service: &str) -> Self {
        let labels = [
            ("region", region.to_owned()),
            ("side", side.to_owned()),
            ("service", service.to_owned()),
        ];
        gauge!(STREAMS_ACTIVE, &labels).increment(1.0);
        ActiveStream { labels }
    }
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        gauge!(STREAMS_ACTIVE, &self.labels).decrement(1.0);
    }
}

/// A finished stream, as the metrics record it.
pub struct FinishedStream<'a> {
    pub region: &'a str,
    pub side: &'static str,
    pub service: &'a str,
    pub peer: &'a str,
    pub outcome: &'a str,
    /// Towards this gateway's client or target.
    pub bytes_in: u64,
    /// Into the tunnel.
    pub bytes_out: u64,
    pub duration: std::time::Duration,
}

impl FinishedStream<'_> {
    /// Records outcome, bytes each way and duration.
    pub fn record(&self) {
        let base = [
            ("region", self.region.to_owned()),
            ("side", self.side.to_owned()),
            ("service", self.service.to_owned()),
        ];
        let mut with_outcome = base.to_vec();
        with_outcome.push(("peer", self.peer.to_owned()));
        with_outcome.push(("outcome", self.outcome.to_owned()));
        counter!(STREAMS, &with_outcome).increment(1);
        for (direction, bytes) in [("in", self.bytes_in), ("out", self.bytes_out)] {
            let mut labels = base.to_vec();
            labels.push(("direction", direction.to_owned()));
            counter!(STREAM_BYTES, &labels).increment(bytes);
        }
        let mut dur = base.to_vec();
        dur.push(("outcome", self.outcome.to_owned()));
        metrics::histogram!(STREAM_DURATION, &dur).record(self.duration.as_secs_f64());
    }
}
