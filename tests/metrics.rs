//! Observability of real gateways: `/metrics` parses as Prometheus text,
//! its counters move with traffic, every metric in the README's table is
//! one strait defines, the trace id of a stream appears in both gateways'
//! logs, and `/readyz` turns not-ready while draining.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::mesh::{GatewayProcess, GatewaySpec, echo_server, free_tcp, http_get, sum, west_east};

fn echo(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(data).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

fn pair(dir: &std::path::Path) -> (GatewaySpec, GatewaySpec) {
    let (_ca, mut west, mut east) = west_east(dir);
    west.exports.push(("echo".into(), echo_server(), vec![]));
    east.imports.push(("echo".into(), free_tcp()));
    (west, east)
}

#[test]
fn metrics_move_with_traffic_and_match_the_readme() {
    let dir = tempfile::tempdir().unwrap();
    let (west, east) = pair(dir.path());
    let import = east.imports[0].1;
    let west = GatewayProcess::start(dir.path(), &west);
    let east = GatewayProcess::start(dir.path(), &east);
    east.wait_for_service("echo");
    let before = east.scrape();
    let ok_before = sum(
        &before,
        "strait_streams_total",
        &["side=\"import\"", "outcome=\"ok\""],
    );
    for _ in 0..5 {
        assert_eq!(echo(import, &[7u8; 10_000]), vec![7u8; 10_000]);
    }
    // Probes run every 250 ms; give the RTT histogram a few.
    std::thread::sleep(Duration::from_millis(600));
    let e = east.scrape();
    let w = west.scrape();
    assert_eq!(
        sum(
            &e,
            "strait_streams_total",
            &["side=\"import\"", "outcome=\"ok\""]
        ) - ok_before,
        5.0
    );
    assert_eq!(
        sum(
            &w,
            "strait_streams_total",
            &["side=\"export\"", "outcome=\"ok\""]
        ),
        5.0
    );
    assert_eq!(
        sum(
            &e,
            "strait_stream_bytes_total",
            &["side=\"import\"", "direction=\"out\""]
        ),
        50_000.0
    );
    assert_eq!(
        sum(
            &e,
            "strait_stream_bytes_total",
            &["side=\"import\"", "direction=\"in\""]
        ),
        50_000.0
    );
    assert_eq!(
        sum(
            &w,
            "strait_stream_bytes_total",
            &["side=\"export\"", "direction=\"in\""]
        ),
        50_000.0
    );
    assert_eq!(
        sum(
            &e,
            "strait_tunnel_state",
            &["state=\"up\"", "peer_region=\"eu-west\""]
        ),
        1.0
    );
    assert!(sum(&e, "strait_probe_rtt_seconds_count", &[]) > 0.0);
    assert!(sum(&e, "strait_probes_total", &["result=\"answered\""]) > 0.0);
    assert_eq!(sum(&w, "strait_target_up", &["service=\"echo\""]), 1.0);
    assert!(sum(&e, "strait_certificate_expiry_timestamp_seconds", &[]) > 1.7e9);
    assert_eq!(sum(&e, "strait_build_info", &[]), 1.0);
    assert!(sum(&e, "strait_stream_open_seconds_count", &[]) >= 5.0);
    assert!(sum(&w, "strait_stream_duration_seconds_count", &[]) >= 5.0);
    assert_eq!(sum(&e, "strait_streams_active", &["side=\"import\""]), 0.0);

    // The README's table and the code agree, and every metric the code
    // defines is documented.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let documented: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `strait_"))
        .filter_map(|l| l.split('`').next())
        .collect();
    let defined: Vec<String> = strait_metric_names();
    assert!(!documented.is_empty());
    for d in &documented {
        assert!(
            defined.contains(&format!("strait_{d}")),
            "README documents strait_{d}, which strait does not define"
        );
    }
    for name in &defined {
        assert!(
            documented.contains(&&name["strait_".len()..]),
            "{name} is missing from the README's table"
        );
    }
    // Every metric the traffic above must produce is in the scrapes.
    let seen: String = [&e, &w]
        .iter()
        .flat_map(|m| m.keys())
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    for name in [
        "strait_build_info",
        "strait_tunnel_state",
        "strait_probe_rtt_seconds",
        "strait_probe_loss_ratio",
        "strait_probes_total",
        "strait_streams_total",
        "strait_streams_active",
        "strait_stream_bytes_total",
        "strait_stream_duration_seconds",
        "strait_stream_open_seconds",
        "strait_target_up",
        "strait_certificate_expiry_timestamp_seconds",
    ] {
        assert!(seen.contains(name), "{name} not exported");
    }
}

/// The metric names strait-gateway defines, read from its source (the
/// test crate does not link the gateway library).
fn strait_metric_names() -> Vec<String> {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gateway/src/metrics.rs"
    ))
    .unwrap();
    src.lines()
        .filter(|l| l.starts_with("pub const ") && l.contains(": &str = \"strait_"))
        .filter_map(|l| l.split('"').nth(1))
        .map(str::to_owned)
        .collect()
}

#[test]
fn both_gateways_log_a_streams_trace_id() {
    let dir = tempfile::tempdir().unwrap();
    let (west, east) = pair(dir.path());
    let import = east.imports[0].1;
    let west = GatewayProcess::start(dir.path(), &west);
    let east = GatewayProcess::start(dir.path(), &east);
    east.wait_for_service("echo");
    echo(import, b"trace me");
    let deadline = Instant::now() + Duration::from_secs(10);
    let trace = loop {
        let log = east.log_text();
        if let Some(line) = log.lines().find(|l| l.contains("stream closed (import)")) {
            let t = line
                .split("trace=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
            break t;
        }
        assert!(Instant::now() < deadline, "no import log line:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(trace.len(), 32, "W3C trace ids are 32 hex digits: {trace}");
    while !west.log_text().contains(&format!("trace={trace}")) {
        assert!(
            Instant::now() < deadline,
            "export side never logged {trace}:\n{}",
            west.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn readyz_turns_not_ready_while_draining() {
    let dir = tempfile::tempdir().unwrap();
    let (mut west, east) = pair(dir.path());
    west.drain_grace = Some("10s".into());
    let import = east.imports[0].1;
    let mut west = GatewayProcess::start(dir.path(), &west);
    let east = GatewayProcess::start(dir.path(), &east);
    east.wait_for_service("echo");
    assert!(
        http_get(west.spec_admin, "/readyz").is_some(),
        "ready before draining"
    );
    // A stream stays open, so the drain lasts until it closes.
    let mut open = TcpStream::connect(import).unwrap();
    open.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    open.read_exact(&mut one).unwrap();
    west.signal_term();
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_get(west.spec_admin, "/readyz").is_some() {
        assert!(
            Instant::now() < deadline,
            "/readyz stayed ready while draining"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        http_get(west.spec_admin, "/healthz").is_some(),
        "alive while draining"
    );
    drop(open);
    assert!(west.wait_exit().success());
}

/// Bytes by direction on both sides of one asymmetric exchange: the
/// request goes out into the tunnel on the import side and in towards the
/// target on the export side; the answer the other way round.
#[test]
fn stream_bytes_count_by_direction_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, mut west, mut east) = west_east(dir.path());
    west.exports.push((
        "web".into(),
        support::mesh::http_server("a body far longer than the request it answers"),
        vec![],
    ));
    let import = free_tcp();
    east.imports.push(("web".into(), import));
    let w = GatewayProcess::start(dir.path(), &west);
    let e = GatewayProcess::start(dir.path(), &east);
    e.wait_for_service("web");
    let request = b"GET / HTTP/1.0\r\n\r\n";
    let answer = echo(import, request);
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    w.wait_for_log("stream closed (export)");
    e.wait_for_log("stream closed (import)");
    let (req, resp) = (request.len() as f64, answer.len() as f64);
    let bytes = |m: &std::collections::HashMap<String, f64>, side: &str, direction: &str| {
        sum(
            m,
            "strait_stream_bytes_total",
            &[
                &format!("side=\"{side}\""),
                &format!("direction=\"{direction}\""),
            ],
        )
    };
    let (em, wm) = (e.scrape(), w.scrape());
    assert_eq!(bytes(&em, "import", "out"), req);
    assert_eq!(bytes(&em, "import", "in"), resp);
    assert_eq!(bytes(&wm, "export", "in"), req);
    assert_eq!(bytes(&wm, "export", "out"), resp);
    let log = w.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("stream closed (export)"))
        .unwrap();
    assert!(
        line.contains(&format!("bytes_in={req} bytes_out={resp}")),
        "{line}"
    );
}

/// A gateway whose certificate ran out cannot open new tunnels, so it is
/// not ready; `/status` answers whatever query string it is given.
#[test]
fn readyz_turns_not_ready_once_the_certificate_expired() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = support::mesh::TestCa::new(d, "example.org");
    support::strait(
        d,
        &format!(
            "cert issue --ca {} --gateway --region eu-west --name gw-w --out west --ttl 3s",
            ca.dir.display()
        ),
    )
    .ok();
    let west = GatewayProcess::start(d, &GatewaySpec::new("gw-w", "eu-west", d.join("west")));
    assert!(http_get(west.spec_admin, "/status?x=1").is_some());
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(west.spec_admin, "/readyz").is_some() {
        assert!(
            Instant::now() < deadline,
            "/readyz stayed ready with an expired certificate"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(http_get(west.spec_admin, "/healthz").is_some());
}

/// QUIC's own view of a tunnel, scraped during a transfer through netsim
/// at 2% loss each way and 20 ms one-way latency: RTT near 40 ms, a
/// congestion window, a path MTU, and lost packets counted; `/status`
/// carries the same figures. Run with `--nocapture` to see the excerpt.
#[test]
fn transport_metrics_follow_a_lossy_transfer() {
    use strait_netsim::{LinkConfig, Network, UdpRelay};
    let rt = support::relay_runtime();
    let dir = tempfile::tempdir().unwrap();
    let (west, mut east) = pair(dir.path());
    let regions = ["eu-west", "us-east"].map(String::from);
    let net = Network::new(&regions, 7, |_, _| LinkConfig {
        latency: Duration::from_millis(20),
        loss: 0.02,
        ..Default::default()
    });
    let relay = rt
        .block_on(UdpRelay::bind(
            "127.0.0.1:0".parse().unwrap(),
            west.quic,
            net.link("us-east", "eu-west").unwrap(),
            net.link("eu-west", "us-east").unwrap(),
        ))
        .unwrap();
    east.peers = vec![("eu-west".into(), relay.local_addr())];
    east.tunnel.push("connections_per_peer = 1".into());
    let import = east.imports[0].1;
    let _west = GatewayProcess::start(dir.path(), &west);
    let east = GatewayProcess::start(dir.path(), &east);
    east.wait_for_service("echo");

    let total = 4 << 20;
    let mut s = TcpStream::connect(import).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let block = vec![0x5au8; 64 * 1024];
        for _ in 0..total / block.len() {
            w.write_all(&block).unwrap();
        }
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    // Scrape halfway through, while the window is in use.
    let mut got = vec![0u8; total / 2];
    s.read_exact(&mut got).unwrap();
    let during = east.scrape_text();
    let status = east.status().unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len() + rest.len(), total);
    assert!(got.iter().chain(&rest).all(|&b| b == 0x5a));

    let excerpt: Vec<&str> = during
        .lines()
        .filter(|l| l.starts_with("strait_quic_"))
        .collect();
    println!("{}", excerpt.join("\n"));
    let m = support::mesh::parse_metrics(&during);
    let lane0 = ["peer_region=\"eu-west\"", "lane=\"0\""];
    let rtt = sum(&m, "strait_quic_rtt_seconds", &lane0);
    assert!((0.035..1.0).contains(&rtt), "smoothed RTT {rtt}");
    let min_rtt = sum(&m, "strait_quic_min_rtt_seconds", &lane0);
    assert!((0.035..=rtt).contains(&min_rtt), "min RTT {min_rtt}");
    assert!(sum(&m, "strait_quic_congestion_window_bytes", &lane0) > 0.0);
    assert!(sum(&m, "strait_quic_path_mtu_bytes", &lane0) >= 1200.0);
    let sent = sum(&m, "strait_quic_sent_packets_total", &lane0);
    let lost = sum(&m, "strait_quic_lost_packets_total", &lane0);
    assert!(sent > 500.0, "sent {sent}");
    assert!(lost > 0.0, "2% loss and nothing lost of {sent} packets");
    assert!(sum(&m, "strait_quic_lost_bytes_total", &lane0) > 0.0);
    assert!(sum(&m, "strait_quic_sent_bytes_total", &lane0) > (total / 2) as f64);
    assert!(sum(&m, "strait_quic_received_bytes_total", &lane0) > (total / 4) as f64);
    assert!(sum(&m, "strait_quic_congestion_events_total", &lane0) > 0.0);

    let peer = &status["peers"][0];
    let t = &peer["transport"];
    assert!(t["rtt_ms"].as_f64().unwrap() >= 35.0, "{peer}");
    assert!(t["cwnd_bytes"].as_u64().unwrap() > 0, "{peer}");
    assert!(t["lost_packets"].as_u64().unwrap() > 0, "{peer}");
    let ratio = t["loss_ratio"].as_f64().unwrap();
    assert!((0.0..0.2).contains(&ratio), "{peer}");
    drop(relay);
}
