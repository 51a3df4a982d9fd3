//! The mesh as deployed: three regions of three gateways each, real
//! processes, netsim between the regions. Every gateway is configured with
//! one seed per remote region and learns the rest; us-east's three
//! gateways share one certificate (one per region), the others have one
//! per node. Each gateway advertises the address of a netsim relay that
//! puts the sender's region-to-region link on whatever dials it.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_netsim::{LinkConfig, Network, SharedLink, UdpRelay};
use support::mesh::{GatewayProcess, GatewaySpec, StoppableTarget, TestCa, free_tcp};

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

/// A target that answers each connection with `tag` and a newline, then
/// echoes.
fn tagged_target(tag: &str) -> SocketAddr {
    support::mesh::greeting_echo_server(format!("{tag}\n"))
}

/// Which target served one connection through `import`, or `None`.
fn served_by(import: SocketAddr, patience: Duration) -> Option<String> {
    let mut s = TcpStream::connect(import).ok()?;
    s.set_read_timeout(Some(patience)).ok()?;
    s.write_all(b"x").ok()?;
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\nx") {
        s.read_exact(&mut byte).ok()?;
        got.push(byte[0]);
    }
    let text = String::from_utf8(got).ok()?;
    Some(text.trim_end_matches("\nx").to_owned())
}

/// What a recording target received: the first line of each connection.
type Received = Arc<std::sync::Mutex<Vec<String>>>;

/// A target that reads one line (a request id), records it, then answers
/// with `tag` and echoes.
fn recording_target(tag: String, received: Received) -> SocketAddr {
    support::mesh::serve_each(move |mut s| {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\n") {
            if s.read_exact(&mut byte).is_err() {
                return;
            }
            line.push(byte[0]);
        }
        received
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&line).trim().to_owned());
        let _ = s.write_all(format!("{tag}\n").as_bytes());
    })
}

/// Sends request `id` through `import`; the tag of the target that
/// answered, or `None`.
fn request(import: SocketAddr, id: &str, patience: Duration) -> Option<String> {
    let mut s = TcpStream::connect(import).ok()?;
    s.set_read_timeout(Some(patience)).ok()?;
    s.write_all(format!("{id}\n").as_bytes()).ok()?;
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\n") {
        s.read_exact(&mut byte).ok()?;
        got.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&got).trim().to_owned())
}

struct Mesh {
    _dir: tempfile::TempDir,
    net: Arc<Network>,
    _relays: Vec<UdpRelay>,
    /// By label: w1..w3, e1..e3, a1..a3.
    gateways: BTreeMap<String, GatewayProcess>,
    /// w1's import of `svc` (us-east preferred, ap-south second).
    import: SocketAddr,
    /// w1's import of `only-e`, which only us-east exports; not idempotent.
    only_e: SocketAddr,
    /// The ids us-east's `only-e` targets received.
    only_e_received: Received,
    _rt: tokio::runtime::Runtime,
}

/// w1..w3 in eu-west, e1..e3 in us-east, a1..a3 in ap-south.
fn label(region: &str, i: usize) -> String {
    let letter = match region {
        "eu-west" => 'w',
        "us-east" => 'e',
        _ => 'a',
    };
    format!("{letter}{}", i + 1)
}

fn mesh() -> Mesh {
    let rt = support::relay_runtime();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new(d, "example.org");
    let regions = REGIONS.map(String::from);
    let net = Arc::new(Network::new(&regions, 9, |from, to| {
        let one_way = match (from, to) {
            ("eu-west", "us-east") | ("us-east", "eu-west") => 20,
            _ => 40,
        };
        LinkConfig {
            latency: Duration::from_millis(one_way),
            ..Default::default()
        }
    }));
    // One certificate for all of us-east, one per gateway elsewhere.
    ca.gateway("us-east", "gw-e", &d.join("id-e"));
    let mut specs: Vec<(String, GatewaySpec)> = Vec::new();
    for region in REGIONS {
        for i in 0..3 {
            let l = label(region, i);
            let spec = if region == "us-east" {
                let mut s = GatewaySpec::new(&l, region, d.join("id-e"));
                s.name_from_certificate = true;
                s
            } else {
                ca.gateway(region, &format!("gw-{l}"), &d.join(&l));
                let mut s = GatewaySpec::new(&l, region, d.join(&l));
                s.name = format!("gw-{l}");
                s
            };
            specs.push((l, spec));
        }
    }
    // The region of each gateway's QUIC socket, for the routed relays.
    let region_of: Arc<BTreeMap<SocketAddr, String>> = Arc::new(
        specs
            .iter()
            .map(|(_, s)| (s.quic, s.region.clone()))
            .collect(),
    );
    let mut relays = Vec::new();
    let mut advertised = BTreeMap::new();
    for (l, spec) in &specs {
        let (net, region_of, to) = (net.clone(), region_of.clone(), spec.region.clone());
        let route = Arc::new(
            move |client: SocketAddr| -> Option<(SharedLink, SharedLink)> {
                let from = region_of.get(&client)?;
                Some((net.link(from, &to).ok()?, net.link(&to, from).ok()?))
            },
        );
        let relay = rt
            .block_on(UdpRelay::bind_routed(
                "127.0.0.1:0".parse().unwrap(),
                spec.quic,
                route,
            ))
            .unwrap();
        advertised.insert(l.clone(), relay.local_addr());
        relays.push(relay);
    }
    let (import, only_e) = (free_tcp(), free_tcp());
    let only_e_received = Received::default();
    for (l, spec) in &mut specs {
        spec.gateway_lines
            .push(format!("advertise = \"{}\"", advertised[l.as_str()]));
        spec.health = vec![
            "target_check = \"200ms\"".into(),
            "hold_down = \"2s\"".into(),
        ];
        // One seed per remote region, chosen so that the seeds alone link
        // the nine gateways into one graph (w1-e1, e1-w2, a1-w3, ...): the
        // rest is learned from telemetry.
        let i: usize = l[1..].parse::<usize>().unwrap() - 1;
        let shift = REGIONS.iter().position(|r| *r == spec.region).unwrap();
        for region in REGIONS.iter().filter(|r| **r != spec.region) {
            let seed = label(region, (i + shift) % 3);
            spec.peers
                .push((region.to_string(), advertised[seed.as_str()]));
        }
        if spec.region != "eu-west" {
            spec.exports.push(("svc".into(), tagged_target(l), vec![]));
            if spec.region == "us-east" {
                let target = recording_target(l.clone(), only_e_received.clone());
                spec.exports.push(("only-e".into(), target, vec![]));
            }
        }
    }
    let w1 = &mut specs[0].1;
    w1.imports.push(("svc".into(), import));
    w1.imports.push(("only-e".into(), only_e));
    w1.prefer = vec!["us-east".into(), "ap-south".into()];
    w1.service_lines
        .push(("svc".into(), "idempotent = true".into()));
    let gateways = specs
        .iter()
        .map(|(l, s)| (l.clone(), GatewayProcess::start(d, s)))
        .collect();
    Mesh {
        _dir: dir,
        net,
        _relays: relays,
        gateways,
        import,
        only_e,
        only_e_received,
        _rt: rt,
    }
}

/// Distinct gateways (region, name, instance) with an Up tunnel, per
/// region, from `/status`.
fn up_gateways(status: &serde_json::Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in status["peers"].as_array().into_iter().flatten() {
        if p["state"] == "up" {
            out.entry(p["region"].as_str().unwrap_or("").to_owned())
                .or_default()
                .insert(format!("{}#{}", p["name"], p["instance"]));
        }
    }
    out
}

#[test]
fn every_gateway_learns_its_peers_and_a_frozen_gateway_yields_to_its_siblings() {
    let m = mesh();
    // Every gateway ends up with tunnels to at least two gateways of each
    // other region, though it was given one seed per region.
    let started = Instant::now();
    for (l, gw) in &m.gateways {
        let own = gw.status().unwrap()["region"].as_str().unwrap().to_owned();
        let status = gw.wait_for("tunnels to 2 gateways of every other region", |s| {
            let up = up_gateways(s);
            REGIONS
                .iter()
                .filter(|r| **r != own)
                .all(|r| up.get(*r).is_some_and(|g| g.len() >= 2))
        });
        let counts: Vec<String> = up_gateways(&status)
            .iter()
            .map(|(r, g)| format!("{r}: {}", g.len()))
            .collect();
        println!("{l}: tunnels to {}", counts.join(", "));
    }
    println!(
        "every gateway held 2+ tunnels per remote region {:.1} s after start",
        started.elapsed().as_secs_f64()
    );
    // us-east's gateways share a certificate, so they differ only by
    // instance: each is a peer of its own.
    let w1 = &m.gateways["w1"];
    let status = w1.status().unwrap();
    let east: Vec<&serde_json::Value> = status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["region"] == "us-east" && p["lane"] == 0)
        .collect();
    assert!(east.iter().all(|p| p["name"] == "gw-e"), "{east:?}");
    let instances: BTreeSet<&str> = east.iter().filter_map(|p| p["instance"].as_str()).collect();
    assert_eq!(instances.len(), east.len(), "{east:?}");

    // Streams spread over us-east (the preferred region), never ap-south.
    w1.wait_for("us-east offering svc on 2 tunnels", |s| {
        s["peers"].as_array().is_some_and(|p| {
            p.iter()
                .filter(|p| {
                    p["region"] == "us-east" && p["lane"] == 0 && p["services"][0]["name"] == "svc"
                })
                .count()
                >= 2
        })
    });
    std::thread::sleep(Duration::from_millis(2500)); // past the hold-down
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    let mut held = Vec::new();
    for _ in 0..60 {
        let mut s = TcpStream::connect(m.import).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut tag = [0u8; 3];
        s.read_exact(&mut tag).unwrap();
        let tag = String::from_utf8_lossy(&tag[..2]).into_owned();
        *by.entry(tag).or_default() += 1;
        held.push(s); // long-lived: counted as active streams
    }
    println!("60 held streams from w1: {by:?}");
    assert!(by.keys().all(|t| t.starts_with('e')), "{by:?}");
    assert!(by.len() >= 2, "streams not spread over us-east: {by:?}");
    let busiest = by.iter().max_by_key(|(_, n)| **n).unwrap().0.clone();

    // Freeze the busiest us-east gateway.
    m.gateways[&busiest].signal("STOP");
    let frozen = Instant::now();
    let mut first_sibling = None;
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    while frozen.elapsed() < Duration::from_secs(4) {
        match served_by(m.import, Duration::from_secs(5)) {
            Some(tag) => {
                if tag != busiest && tag.starts_with('e') && first_sibling.is_none() {
                    first_sibling = Some(frozen.elapsed());
                }
                *served.entry(tag).or_default() += 1;
            }
            None => failed += 1,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    m.gateways[&busiest].signal("CONT");
    println!(
        "froze {busiest}: first answer from a sibling {:?} later; then served {served:?}, {failed} failed",
        first_sibling
    );
    assert_eq!(failed, 0, "requests failed on an idempotent import");
    assert!(
        served.keys().all(|t| t.starts_with('e')),
        "streams left us-east although siblings were healthy: {served:?}"
    );
    assert!(first_sibling.is_some());
    // Once thawed, the frozen gateway says its probes ran late.
    let late = m.gateways[&busiest].wait_for_log("tunnel probing ran late");
    println!(
        "{}",
        late.lines()
            .find(|l| l.contains("ran late"))
            .unwrap_or_default()
    );
    drop(held);
}

/// The median of `samples` milliseconds.
fn median_ms(samples: &mut [Duration]) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

/// What w1's `/why` says for `only-e`: (relayed, chosen at all).
fn only_e_route(w1: &GatewayProcess) -> (bool, bool) {
    let body = support::mesh::http_get(w1.spec_admin, "/why?service=only-e").unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    (!v["relay_to"].is_null(), !v["chosen"].is_null())
}

#[test]
fn a_cut_between_two_regions_is_routed_through_the_third_and_nothing_is_delivered_twice() {
    let m = mesh();
    let w1 = &m.gateways["w1"];
    w1.wait_for("only-e offered by us-east", |s| {
        s["peers"].as_array().is_some_and(|p| {
            p.iter().any(|p| {
                p["region"] == "us-east"
                    && p["services"]
                        .as_array()
                        .is_some_and(|v| v.iter().any(|v| v["name"] == "only-e"))
            })
        })
    });
    std::thread::sleep(Duration::from_millis(2500)); // past the hold-down
    let mut n = 0;
    let mut next_id = || {
        n += 1;
        format!("r{n}")
    };
    let mut direct = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        assert!(request(m.only_e, &next_id(), Duration::from_secs(5)).is_some());
        direct.push(t.elapsed());
    }
    assert_eq!(only_e_route(w1), (false, true));

    m.net.partition("eu-west", "us-east", false).unwrap();
    let cut = Instant::now();
    let mut first_relayed = None;
    let mut relayed = Vec::new();
    let mut failed_during_cut = 0;
    while cut.elapsed() < Duration::from_secs(8) && relayed.len() < 20 {
        let t = Instant::now();
        match request(m.only_e, &next_id(), Duration::from_secs(5)) {
            Some(_) => {
                if only_e_route(w1).0 {
                    first_relayed.get_or_insert(cut.elapsed());
                    relayed.push(t.elapsed());
                }
            }
            None => failed_during_cut += 1,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        relayed.len() >= 10,
        "only-e was not carried through ap-south: {} relayed, {failed_during_cut} failed\n{}",
        relayed.len(),
        w1.log_text()
    );
    let relay_count: f64 = m
        .gateways
        .iter()
        .filter(|(l, _)| l.starts_with('a'))
        .map(|(_, g)| {
            support::mesh::sum(
                &g.scrape(),
                "strait_relayed_streams_total",
                &["outcome=\"ok\""],
            )
        })
        .sum();
    assert!(
        relay_count >= 10.0,
        "ap-south counted {relay_count} relayed streams"
    );
    // `strait why` shows the route through ap-south as the choice.
    let why = support::strait(
        m._dir.path(),
        &format!("why only-e --admin http://{}", w1.spec_admin),
    )
    .ok();
    println!("{}", why.stdout);
    assert!(
        why.stdout.lines().any(|l| l.starts_with("->")
            && l.contains("ap-south")
            && l.contains("relaying to us-east")),
        "{}",
        why.stdout
    );

    m.net.heal(None).unwrap();
    let healed = Instant::now();
    while only_e_route(w1) != (false, true) {
        assert!(
            healed.elapsed() < Duration::from_secs(30),
            "never direct again after healing"
        );
        assert!(
            request(m.only_e, &next_id(), Duration::from_secs(5)).is_some(),
            "a request failed after healing"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let back = healed.elapsed();
    for _ in 0..5 {
        assert!(request(m.only_e, &next_id(), Duration::from_secs(5)).is_some());
    }
    println!(
        "eu-west -> us-east cut: first stream relayed through ap-south {:?} after the cut; {failed_during_cut} failed while the cut was detected (not idempotent: not replayed); \
         median request {:.0} ms direct, {:.0} ms relayed ({} relayed, {relay_count} counted by ap-south); direct again {back:?} after healing",
        first_relayed,
        median_ms(&mut direct),
        median_ms(&mut relayed),
        relayed.len(),
    );
    // Never twice: every id the targets saw, they saw once.
    let received = m.only_e_received.lock().unwrap().clone();
    let mut seen = BTreeSet::new();
    let twice: Vec<&String> = received.iter().filter(|id| !seen.insert(*id)).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
}

#[test]
fn a_local_first_import_fails_over_to_the_remote_region_and_comes_back_after_the_hold_down() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_ca, mut west, mut east) = support::mesh::west_east(d);
    let local = StoppableTarget::start("127.0.0.1:0".parse().unwrap(), Some("local"));
    east.exports
        .push(("svc".into(), tagged_target("remote"), vec![]));
    let import = free_tcp();
    west.imports.push(("svc".into(), import));
    west.service_lines.push((
        "svc".into(),
        format!("local = \"{}\"\nidempotent = true", local.addr),
    ));
    for spec in [&mut west, &mut east] {
        spec.health = vec![
            "target_check = \"100ms\"".into(),
            "hold_down = \"2s\"".into(),
        ];
    }
    let gw_w = GatewayProcess::start(d, &west);
    let _gw_e = GatewayProcess::start(d, &east);
    gw_w.wait_for_service("svc");
    // Past the new tunnel's own hold-down, so only the local target's
    // decides below.
    std::thread::sleep(Duration::from_millis(2500));

    for _ in 0..5 {
        assert_eq!(
            served_by(import, Duration::from_secs(5)).as_deref(),
            Some("local")
        );
    }
    // `strait why` shows the local target first.
    let why = support::strait(d, &format!("why svc --admin http://{}", west.admin)).ok();
    assert!(
        why.stdout.contains(&local.addr.to_string()),
        "{}",
        why.stdout
    );

    local.stop();
    let stopped = Instant::now();
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    while stopped.elapsed() < Duration::from_secs(1) {
        match served_by(import, Duration::from_secs(5)) {
            Some(tag) => *served.entry(tag).or_default() += 1,
            None => failed += 1,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("local target stopped: served {served:?}, {failed} failed");
    assert_eq!(failed, 0);
    assert_eq!(served.keys().collect::<Vec<_>>(), ["remote"]);

    let local = StoppableTarget::start(local.addr, Some("local"));
    let restored = Instant::now();
    let back = loop {
        let tag = served_by(import, Duration::from_secs(5));
        assert!(
            tag.is_some(),
            "a request failed after the local target came back"
        );
        if tag.as_deref() == Some("local") {
            break restored.elapsed();
        }
        assert!(
            restored.elapsed() < Duration::from_secs(10),
            "never back to local"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("back to the local target {back:?} after it was restored (hold-down 2 s)");
    assert!(
        back >= Duration::from_secs(2),
        "back before the hold-down: {back:?}"
    );
    for _ in 0..5 {
        assert_eq!(
            served_by(import, Duration::from_secs(5)).as_deref(),
            Some("local")
        );
    }
    let log = gw_w.log_text();
    assert!(log.contains("local target unreachable"), "{log}");
    let metrics = gw_w.scrape();
    let moved = |name: &str| support::mesh::sum(&metrics, name, &["service=\"svc\""]);
    assert!(moved("strait_failovers_total") >= 1.0, "{metrics:?}");
    assert!(moved("strait_failbacks_total") >= 1.0, "{metrics:?}");
    drop(local);
}
