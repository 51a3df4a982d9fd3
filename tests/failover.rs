//! Failover through netsim: a client in eu-west uses a service exported by
//! us-east (preferred) and ap-south. Cutting eu-west <-> us-east, in both
//! directions or in one, moves new connections to ap-south within a second;
//! healing brings them back.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_netsim::{LinkConfig, Network, UdpRelay};
use support::mesh::{GatewayProcess, GatewaySpec, TestCa, free_tcp};

/// A target that answers each connection with its tag, then echoes.
fn tagged_target(tag: u8) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                if s.write_all(&[tag]).is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Which region served one connection, or `None` if it failed or stalled
/// past `patience`.
fn served_by(import: SocketAddr, patience: Duration) -> Option<u8> {
    let mut s = TcpStream::connect(import).ok()?;
    s.set_read_timeout(Some(patience)).ok()?;
    s.write_all(b"x").ok()?;
    let mut out = [0u8; 2];
    s.read_exact(&mut out).ok()?;
    (out[1] == b'x').then_some(out[0])
}

struct Drill {
    _dir: tempfile::TempDir,
    net: Arc<Network>,
    _relays: Vec<UdpRelay>,
    _gateways: Vec<GatewayProcess>,
    import: SocketAddr,
    a: usize,
}

impl Drill {
    fn gateway(&self) -> &GatewayProcess {
        &self._gateways[self.a]
    }
}

fn drill(rt: &tokio::runtime::Runtime) -> Drill {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new(d, "example.org");
    for (region, name) in [
        ("eu-west", "gw-a"),
        ("us-east", "gw-b"),
        ("ap-south", "gw-c"),
    ] {
        ca.gateway(region, name, &d.join(name));
    }
    let regions = ["eu-west", "us-east", "ap-south"].map(String::from);
    let net = Arc::new(Network::new(&regions, 5, |from, to| {
        let one_way = match (from, to) {
            ("eu-west", "us-east") | ("us-east", "eu-west") => 40,
            _ => 75,
        };
        LinkConfig {
            latency: Duration::from_millis(one_way),
            ..Default::default()
        }
    }));
    let mut a = GatewaySpec::new("gw-a", "eu-west", d.join("gw-a"));
    let mut b = GatewaySpec::new("gw-b", "us-east", d.join("gw-b"));
    let mut c = GatewaySpec::new("gw-c", "ap-south", d.join("gw-c"));
    let relays: Vec<UdpRelay> = [(&b, "us-east"), (&c, "ap-south")]
        .into_iter()
        .map(|(spec, region)| {
            rt.block_on(UdpRelay::bind(
                "127.0.0.1:0".parse().unwrap(),
                spec.quic,
                net.link("eu-west", region).unwrap(),
                net.link(region, "eu-west").unwrap(),
            ))
            .unwrap()
        })
        .collect();
    a.peers.push(("us-east".into(), relays[0].local_addr()));
    a.peers.push(("ap-south".into(), relays[1].local_addr()));
    b.exports.push(("svc".into(), tagged_target(b'B'), vec![]));
    c.exports.push(("svc".into(), tagged_target(b'C'), vec![]));
    let import = free_tcp();
    a.imports.push(("svc".into(), import));
    a.prefer = vec!["us-east".into(), "ap-south".into()];
    let gateways: Vec<GatewayProcess> = [&b, &c, &a]
        .into_iter()
        .map(|s| GatewayProcess::start(d, s))
        .collect();
    let gw_a = &gateways[2];
    gw_a.wait_for("tunnels to us-east and ap-south offering svc", |s| {
        s["peers"].as_array().is_some_and(|p| {
            p.len() == 2
                && p.iter()
                    .all(|p| p["state"] == "up" && p["services"][0]["name"] == "svc")
        })
    });
    Drill {
        _dir: dir,
        net,
        _relays: relays,
        _gateways: gateways,
        import,
        a: 2,
    }
}

/// Cuts with `cut`, then measures how long until a new connection is
/// served by ap-south, checks that every connection after that is, heals,
/// and waits for traffic to come back to us-east.
fn cut_and_heal(drill: &Drill, cut: impl Fn(&Network)) {
    for _ in 0..5 {
        assert_eq!(
            served_by(drill.import, Duration::from_secs(5)),
            Some(b'B'),
            "before the cut, us-east serves"
        );
    }
    let cut_at = Instant::now();
    cut(&drill.net);
    let failover = loop {
        // Connections opened before the tunnel is seen Down go to us-east
        // and stall; give each little patience and move on.
        if served_by(drill.import, Duration::from_millis(300)) == Some(b'C') {
            break cut_at.elapsed();
        }
        assert!(
            cut_at.elapsed() < Duration::from_secs(10),
            "never failed over:\n{}",
            drill.gateway().log_text()
        );
    };
    eprintln!("failover: first connection served by ap-south {failover:?} after the cut");
    assert!(
        failover < Duration::from_secs(1),
        "failover took {failover:?}"
    );
    for _ in 0..20 {
        assert_eq!(
            served_by(drill.import, Duration::from_secs(5)),
            Some(b'C'),
            "during the cut, ap-south serves"
        );
    }
    let healed_at = Instant::now();
    drill.net.heal(None).unwrap();
    loop {
        if served_by(drill.import, Duration::from_secs(5)) == Some(b'B') {
            break;
        }
        assert!(
            healed_at.elapsed() < Duration::from_secs(10),
            "traffic never came back to us-east"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("failback: {:?} after healing", healed_at.elapsed());
    let log = drill.gateway().log_text();
    assert!(
        log.contains("tunnel health changed") && log.contains("to=\"down\""),
        "{log}"
    );
}

#[test]
fn a_hard_partition_fails_over_within_a_second_and_heals() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let d = drill(&rt);
    cut_and_heal(&d, |net| {
        net.partition("eu-west", "us-east", false).unwrap()
    });
}

#[test]
fn an_asymmetric_partition_is_detected_like_a_full_one() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let d = drill(&rt);
    // us-east -> eu-west dropped, eu-west -> us-east flowing: probes arrive,
    // answers do not.
    cut_and_heal(&d, |net| net.partition("us-east", "eu-west", true).unwrap());
}
