//! Tunnels between real `strait gateway run` processes on loopback: bytes
//! both ways, half-close, refusals, and NAT.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use support::mesh::{GatewayProcess, GatewaySpec, TestCa, echo_server, free_tcp, sum};

/// Sends `data`, half-closes, and returns everything read back.
fn exchange(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut w = s.try_clone()?;
    let data = data.to_vec();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        w.write_all(&data)?;
        w.shutdown(std::net::Shutdown::Write)
    });
    let mut out = Vec::new();
    let read = s.read_to_end(&mut out);
    let wrote = writer.join().unwrap();
    read?;
    wrote?;
    Ok(out)
}

fn payload(n: usize, seed: u64) -> Vec<u8> {
    (0..n as u64)
        .map(|i| ((i ^ seed).wrapping_mul(0x9E37_79B9) >> 11) as u8)
        .collect()
}

/// Two gateways, each dialing the other: eu-west exports `echo`, us-east
/// imports it; us-east exports `echo-b`, eu-west imports it.
struct Pair {
    _dir: tempfile::TempDir,
    west: GatewayProcess,
    east: GatewayProcess,
    west_import: SocketAddr,
    east_import: SocketAddr,
}

fn pair(dir: &Path, west_allow: Vec<String>) -> (GatewaySpec, GatewaySpec) {
    let ca = TestCa::new(dir, "example.org");
    ca.gateway("eu-west", "gw-w", &dir.join("gw-w"));
    ca.gateway("us-east", "gw-e", &dir.join("gw-e"));
    let mut west = GatewaySpec::new("gw-w", "eu-west", dir.join("gw-w"));
    let mut east = GatewaySpec::new("gw-e", "us-east", dir.join("gw-e"));
    west.peers.push(("us-east".into(), east.quic));
    east.peers.push(("eu-west".into(), west.quic));
    west.exports
        .push(("echo".into(), echo_server(), west_allow));
    east.exports.push(("echo-b".into(), echo_server(), vec![]));
    east.imports.push(("echo".into(), free_tcp()));
    west.imports.push(("echo-b".into(), free_tcp()));
    for spec in [&mut west, &mut east] {
        spec.tunnel.push("connections_per_peer = 2".into());
    }
    (west, east)
}

fn start_pair(west_allow: Vec<String>) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let (west, east) = pair(dir.path(), west_allow);
    let (west_import, east_import) = (west.imports[0].1, east.imports[0].1);
    let west = GatewayProcess::start(dir.path(), &west);
    let east = GatewayProcess::start(dir.path(), &east);
    east.wait_for_service("echo");
    west.wait_for_service("echo-b");
    Pair {
        _dir: dir,
        west,
        east,
        west_import,
        east_import,
    }
}

#[test]
fn streams_flow_both_ways_over_one_tunnel() {
    let p = start_pair(vec![]);
    let data = payload(1 << 20, 1);
    assert!(
        exchange(p.east_import, &data).unwrap() == data,
        "east -> west echo differs"
    );
    let data = payload(300_000, 2);
    assert!(
        exchange(p.west_import, &data).unwrap() == data,
        "west -> east echo differs"
    );
    // Both dialed; exactly one connection per lane survives on each side
    // (`connections_per_peer` lanes, 2 here).
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.west.peer_count() != 2 || p.east.peer_count() != 2 {
        assert!(
            Instant::now() < deadline,
            "duplicate tunnels were not resolved: {} and {} connections",
            p.west.peer_count(),
            p.east.peer_count()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let w = p.west.status().unwrap();
    let e = p.east.status().unwrap();
    // Each surviving connection is the same one seen from both sides: one
    // side dialed it, the other accepted it.
    for lane in 0..2 {
        let dialed = |s: &serde_json::Value| {
            let peers = s["peers"].as_array().unwrap();
            let on: Vec<_> = peers.iter().filter(|p| p["lane"] == lane).collect();
            assert_eq!(on.len(), 1, "lane {lane}: {s}");
            on[0]["dialed"].clone()
        };
        assert_ne!(dialed(&w), dialed(&e), "lane {lane}\n{w}\n{e}");
    }
    // Streams spread over both lanes.
    let held: Vec<TcpStream> = (0..24)
        .map(|_| {
            let mut s = TcpStream::connect(p.east_import).unwrap();
            s.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            s
        })
        .collect();
    let e = p.east.status().unwrap();
    let per_lane: Vec<u64> = (0..2)
        .map(|lane| {
            e["peers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["lane"] == lane)
                .map(|p| p["active_streams"].as_u64().unwrap())
                .sum()
        })
        .collect();
    assert!(per_lane.iter().all(|n| *n >= 4), "{per_lane:?}\n{e}");
    drop(held);
}

#[test]
fn half_close_still_delivers_the_whole_response() {
    let p = start_pair(vec![]);
    let mut s = TcpStream::connect(p.east_import).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"request").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert_eq!(out, b"request");
}

/// A refused stream closes the client at once with a reset, and the tunnel
/// keeps carrying other streams.
fn assert_refused(addr: SocketAddr) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"hello");
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("a refused stream returned {n} bytes"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusal took {:?}",
        started.elapsed()
    );
}

#[test]
fn forbidden_peer_is_refused_and_the_tunnel_survives() {
    let p = start_pair(vec![
        "spiffe://example.org/region/ap-south/gateway/*".into(),
    ]);
    assert_refused(p.east_import);
    let log = p.west.log_text();
    assert!(
        log.contains("stream refused") && log.contains("outcome=\"forbidden\""),
        "{log}"
    );
    // The tunnel still carries the other direction.
    assert!(exchange(p.west_import, b"still here").unwrap() == b"still here");
}

#[test]
fn unreachable_target_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut west, east) = pair(dir.path(), vec![]);
    west.exports[0].1 = free_tcp(); // nothing listens there
    let east_import = east.imports[0].1;
    let west = GatewayProcess::start(dir.path(), &west);
    let east = GatewayProcess::start(dir.path(), &east);
    east.wait_for_service("echo");
    assert_refused(east_import);
    // The log names the outcome as the metric labels it.
    assert!(
        west.log_text().contains("outcome=\"target_unreachable\""),
        "{}",
        west.log_text()
    );
    assert!(
        sum(
            &west.scrape(),
            "strait_streams_total",
            &["side=\"export\"", "outcome=\"target_unreachable\""]
        ) >= 1.0
    );
}

#[test]
fn unknown_service_is_refused_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let (west, mut east) = pair(dir.path(), vec![]);
    let nothing = free_tcp();
    east.imports.push(("no-such-service".into(), nothing));
    let _west = GatewayProcess::start(dir.path(), &west);
    let east = GatewayProcess::start(dir.path(), &east);
    east.wait_for_service("echo");
    assert_refused(nothing);
    assert!(
        east.log_text().contains("no tunnel offers the service"),
        "{}",
        east.log_text()
    );
}

#[test]
fn a_gateway_behind_nat_that_only_dials_out_still_exports() {
    let dir = tempfile::tempdir().unwrap();
    let (mut west, east) = pair(dir.path(), vec![]);
    // west cannot reach east: it has no peer entry; east dials west.
    west.peers.clear();
    let (west_import, east_import) = (west.imports[0].1, east.imports[0].1);
    let west = GatewayProcess::start(dir.path(), &west);
    let east = GatewayProcess::start(dir.path(), &east);
    east.wait_for_service("echo");
    west.wait_for_service("echo-b");
    assert!(
        exchange(west_import, b"to the gateway behind NAT").unwrap()
            == b"to the gateway behind NAT"
    );
    assert!(exchange(east_import, b"from behind NAT").unwrap() == b"from behind NAT");
    assert_eq!(west.status().unwrap()["peers"][0]["dialed"], false);
}

#[test]
fn a_peer_in_the_wrong_region_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut west, east) = pair(dir.path(), vec![]);
    // west expects us-east at that address but finds... us-east; make it
    // expect ap-south instead.
    west.peers[0].0 = "ap-south".into();
    let mut east = east;
    east.peers.clear();
    let west = GatewayProcess::start(dir.path(), &west);
    let _east = GatewayProcess::start(dir.path(), &east);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !west.log_text().contains("not a gateway of region ap-south") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            west.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(west.peer_count(), 0);
}

#[test]
fn gateway_check_validates_config_and_identity() {
    let dir = tempfile::tempdir().unwrap();
    let (west, _) = pair(dir.path(), vec![]);
    let config = dir.path().join("check.toml");
    std::fs::write(&config, west.toml()).unwrap();
    let out = support::strait(
        dir.path(),
        &format!("gateway check --config {}", config.display()),
    )
    .ok();
    assert!(out.stdout.contains("gw-w in eu-west"), "{}", out.stdout);
    // A config naming another gateway than the certificate does.
    std::fs::write(
        &config,
        west.toml().replace("name = \"gw-w\"", "name = \"gw-x\""),
    )
    .unwrap();
    let err = support::strait(
        dir.path(),
        &format!("gateway check --config {}", config.display()),
    )
    .failed();
    assert!(
        err.contains("the certificate says spiffe://example.org/region/eu-west/gateway/gw-w"),
        "{err}"
    );
    // An unknown key names its line.
    std::fs::write(
        &config,
        west.toml().replace("[tunnel]", "[tunnel]\nspeed = 3"),
    )
    .unwrap();
    let err = support::strait(
        dir.path(),
        &format!("gateway check --config {}", config.display()),
    )
    .failed();
    assert!(
        err.contains("unknown field `speed`") && err.contains("line 13"),
        "{err}"
    );
}

/// A target that reads a little and then resets its connection.
fn resetting_target() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 5];
            let _ = s.read_exact(&mut buf);
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            drop(s);
        }
    });
    addr
}

#[test]
fn a_reset_by_the_target_reaches_the_client_as_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let (mut west, east) = pair(dir.path(), vec![]);
    west.exports[0].1 = resetting_target();
    let east_import = east.imports[0].1;
    let _west = GatewayProcess::start(dir.path(), &west);
    let east = GatewayProcess::start(dir.path(), &east);
    east.wait_for_service("echo");
    let mut s = TcpStream::connect(east_import).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"hello").unwrap();
    let mut buf = [0u8; 8];
    let err = s
        .read(&mut buf)
        .expect_err("a reset target must not look like a clean close");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

#[test]
fn tunnel_open_imports_without_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let (west, _) = pair(dir.path(), vec![]);
    let _west = GatewayProcess::start(dir.path(), &west);
    let listen = free_tcp();
    let id = dir.path().join("gw-e");
    let mut child = std::process::Command::new(support::strait_bin())
        .args([
            "tunnel",
            "open",
            "--peer",
            &west.quic.to_string(),
            "--peer-region",
            "eu-west",
        ])
        .args(["--service", "echo", "--listen", &listen.to_string()])
        .arg("--cert")
        .arg(id.join("cert.pem"))
        .arg("--key")
        .arg(id.join("key.pem"))
        .arg("--bundle")
        .arg(id.join("bundle.pem"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Until the tunnel is up, clients are refused; poll until one gets through.
    let deadline = Instant::now() + Duration::from_secs(20);
    let result = loop {
        match exchange(listen, b"ad hoc") {
            Ok(out) if out == b"ad hoc" => break Ok(()),
            other if Instant::now() > deadline => break Err(format!("{other:?}")),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result.unwrap();
}
