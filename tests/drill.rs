//! Drills against live gateways, without netsim: `strait drill run` tells
//! real gateways on loopback (through their admin endpoints) to black-hole
//! a region, the gateways drop those packets themselves and end the cut by
//! themselves, traffic moves to the other region and comes back, and the
//! drill shows in `/status`, the events and the metrics.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::mesh::{GatewayProcess, GatewaySpec, TestCa, admin_post, free_tcp, serve_each};

/// A target that answers each connection with its tag, then echoes.
fn tagged_target(tag: u8) -> SocketAddr {
    serve_each(move |mut s| {
        if s.write_all(&[tag]).is_err() {
            return;
        }
        let mut buf = [0u8; 256];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    })
}

/// Which region served one connection, or `None` if it failed.
fn served_by(import: SocketAddr) -> Option<u8> {
    let mut s = TcpStream::connect(import).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"x").ok()?;
    let mut out = [0u8; 2];
    s.read_exact(&mut out).ok()?;
    (out[1] == b'x').then_some(out[0])
}

struct Mesh {
    dir: tempfile::TempDir,
    /// eu-west (importing), us-east, ap-south.
    gateways: Vec<GatewayProcess>,
    import: SocketAddr,
}

impl Mesh {
    fn admins(&self) -> Vec<String> {
        self.gateways
            .iter()
            .map(|g| format!("http://{}", g.spec_admin))
            .collect()
    }

    fn scenario(&self, text: &str) -> std::path::PathBuf {
        let path = self.dir.path().join("drill.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn mesh() -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new(d, "example.org");
    let mut specs = Vec::new();
    for (region, name, tag) in [
        ("eu-west", "gw-e", None),
        ("us-east", "gw-u", Some(b'U')),
        ("ap-south", "gw-a", Some(b'A')),
    ] {
        ca.gateway(region, name, &d.join(name));
        let mut spec = GatewaySpec::new(name, region, d.join(name));
        if let Some(tag) = tag {
            spec.exports
                .push(("svc".into(), tagged_target(tag), vec![]));
        }
        spec.health = vec![
            "target_check = \"200ms\"".into(),
            "hold_down = \"2s\"".into(),
        ];
        spec.tunnel.push("discover = false".into());
        spec.tunnel.push("connections_per_peer = 1".into());
        specs.push(spec);
    }
    let (u, a) = (specs[1].quic, specs[2].quic);
    let import = free_tcp();
    let e = &mut specs[0];
    e.peers.push(("us-east".into(), u));
    e.peers.push(("ap-south".into(), a));
    e.imports.push(("svc".into(), import));
    e.prefer = vec!["us-east".into(), "ap-south".into()];
    e.service_lines
        .push(("svc".into(), "idempotent = true".into()));
    let gateways: Vec<GatewayProcess> = specs.iter().map(|s| GatewayProcess::start(d, s)).collect();
    gateways[0].wait_for("tunnels to us-east and ap-south offering svc", |s| {
        s["peers"].as_array().is_some_and(|p| {
            p.len() == 2
                && p.iter()
                    .all(|p| p["state"] == "up" && p["services"][0]["name"] == "svc")
        })
    });
    Mesh {
        dir,
        gateways,
        import,
    }
}

fn drill_command(mesh: &Mesh, scenario: &std::path::Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(support::strait_bin());
    cmd.args(["drill", "run"]).arg(scenario);
    for admin in mesh.admins() {
        cmd.args(["--admin", &admin]);
    }
    cmd.args(extra);
    cmd
}

#[test]
fn a_drill_cuts_a_region_and_the_gateways_end_it_by_themselves() {
    let mesh = mesh();
    let e = &mesh.gateways[0];
    assert_eq!(
        served_by(mesh.import),
        Some(b'U'),
        "before the drill, us-east serves"
    );
    let scenario = mesh.scenario(
        "[drill]\nname = \"eu-west loses us-east\"\nsettle = \"40s\"\n\n\
         [[step]]\nat = \"0s\"\nfault = \"partition\"\nfrom = \"eu-west\"\nto = \"us-east\"\nfor = \"5s\"\n",
    );
    let runner = drill_command(&mesh, &scenario, &["--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Clients open a connection every 50 ms through the drill; every one
    // must be served (the import is idempotent: a stream caught by the cut
    // is replayed on ap-south).
    let stop = Arc::new(AtomicBool::new(false));
    let import = mesh.import;
    let clients = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut served = Vec::new();
            while !stop.load(Ordering::SeqCst) && served.len() < 2_000 {
                served.push(served_by(import));
                std::thread::sleep(Duration::from_millis(50));
            }
            served
        })
    };

    let during = e.wait_for("the drill in force", |s| {
        s["drills"].as_array().is_some_and(|d| !d.is_empty())
    });
    let drill = &during["drills"][0];
    assert_eq!(drill["kind"], "blackhole");
    assert_eq!(drill["region"], "us-east");
    assert_eq!(drill["direction"], "both");
    assert!(drill["ends_in_ms"].as_u64().unwrap() <= 5_000, "{drill}");
    assert!(
        !drill["addresses"].as_array().unwrap().is_empty(),
        "the cut names the addresses it drops: {drill}"
    );
    let metrics = e.scrape_text();
    assert!(
        metrics.contains(
            "strait_drill_active{region=\"eu-west\",peer_region=\"us-east\",direction=\"both\"} 1"
        ),
        "{metrics}"
    );
    // us-east's gateway was told too (the cut is on both sides).
    mesh.gateways[1].wait_for("us-east's side of the cut", |s| {
        s["drills"][0]["region"] == "eu-west"
    });
    e.wait_for("traffic moved to ap-south", |_| {
        served_by(import) == Some(b'A')
    });

    let out = runner.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the drill failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop.store(true, Ordering::SeqCst);
    let served = clients.join().unwrap();

    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let step = &report[0];
    assert_eq!(step["routes_through_cut"], 1, "{step}");
    assert!(step["ok"].as_bool().unwrap(), "{step}");
    let failover = step["failover_s"].as_f64().expect("traffic left the cut");
    assert!(
        failover < 5.0,
        "it failed over while the cut lasted: {step}"
    );
    assert!(step["returned_s"].as_f64().is_some(), "{step}");
    assert_eq!(step["cuts"].as_array().unwrap().len(), 2, "{step}");

    assert!(
        served.iter().all(Option::is_some),
        "every connection through the drill was served: {served:?}"
    );
    assert!(
        served.contains(&Some(b'A')),
        "ap-south took over: {served:?}"
    );
    assert_eq!(served_by(mesh.import), Some(b'U'), "us-east serves again");

    let after = e.status().unwrap();
    assert!(after["drills"].as_array().unwrap().is_empty(), "{after}");
    let events: Vec<String> = after["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|ev| ev["kind"] == "drill")
        .map(|ev| ev["detail"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        events[0].starts_with("drill 1 started: black hole to region us-east (both) for 5s"),
        "{events:?}"
    );
    assert!(events[1].contains("ended by itself"), "{events:?}");
    let metrics = e.scrape_text();
    assert!(
        metrics.contains("strait_drills_total{region=\"eu-west\",kind=\"blackhole\",peer_region=\"us-east\",direction=\"both\"} 1"),
        "{metrics}"
    );
    let dropped = support::mesh::sum(
        &support::mesh::parse_metrics(&metrics),
        "strait_drill_dropped_packets_total",
        &[],
    );
    assert!(dropped > 0.0, "the drill dropped packets: {metrics}");
    assert!(!metrics.contains("strait_drill_active{"), "{metrics}");
}

#[test]
fn drill_requests_and_scenarios_are_checked_before_anything_is_cut() {
    let mesh = mesh();
    let admin = mesh.gateways[0].spec_admin;
    for (path, status, says) in [
        (
            "/drill/blackhole?region=us-east&direction=sideways&duration=5s",
            "400",
            "direction: direction \"sideways\" is not one of out, in, both",
        ),
        (
            "/drill/blackhole?region=us-east",
            "400",
            "duration= is missing",
        ),
        (
            "/drill/blackhole?region=us-east&duration=2h",
            "400",
            "a drill lasts at most 900s",
        ),
        (
            "/drill/blackhole?region=eu-west&duration=5s",
            "400",
            "is this gateway's own region",
        ),
        (
            "/drill/blackhole?region=mars&duration=5s",
            "400",
            "no gateway of region \"mars\" is known",
        ),
        ("/drill/end?id=99", "404", "no drill 99 is in force"),
        ("/drill/flood", "404", "not found"),
    ] {
        let (line, body) = admin_post(admin, path);
        assert!(line.contains(status), "{path}: {line} {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
    assert!(
        mesh.gateways[0].status().unwrap()["drills"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // A drill started by hand, ended by `strait drill end`.
    let (line, body) = admin_post(
        admin,
        "/drill/blackhole?region=ap-south&direction=out&duration=10m",
    );
    assert!(line.contains("200"), "{line} {body}");
    let out = Command::new(support::strait_bin())
        .args(["drill", "end", "--admin", &format!("http://{admin}")])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ended drill 1",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = mesh.gateways[0].status().unwrap()["events"].to_string();
    assert!(
        events.contains("drill 1 ended early by an admin request"),
        "{events}"
    );

    // Scenarios that live gateways cannot play are refused, naming the line.
    let kill = mesh.scenario(
        "[[step]]\nat = \"1s\"\nfault = \"partition\"\nfrom = \"eu-west\"\nto = \"us-east\"\nfor = \"2s\"\n\n\
         [[step]]\nat = \"5s\"\nfault = \"kill\"\ngateway = \"gw-u\"\nfor = \"3s\"\n",
    );
    let out = drill_command(&mesh, &kill, &[]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("drill.toml:8: step.fault: kill needs netsim or the soak's own processes"),
        "{err}"
    );
    let nowhere = mesh.scenario(
        "[[step]]\nat = \"1s\"\nfault = \"partition\"\nfrom = \"sa-east\"\nto = \"af-south\"\nfor = \"2s\"\n",
    );
    let out = drill_command(&mesh, &nowhere, &[]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no gateway given with --admin is in region sa-east or af-south (they are in ap-south, eu-west, us-east)"),
        "{err}"
    );
    // --dry-run prints the plan and cuts nothing.
    let flap = mesh.scenario(
        "[[step]]\nat = \"0s\"\nfault = \"flap\"\nfrom = \"eu-west\"\nto = \"ap-south\"\n",
    );
    let out = drill_command(&mesh, &flap, &["--dry-run"])
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{plan}");
    assert!(
        plan.contains("gw-e cuts ap-south (both); gw-a cuts eu-west (both)"),
        "{plan}"
    );
    assert!(
        mesh.gateways[0].status().unwrap()["drills"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}
