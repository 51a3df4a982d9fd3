//! Federated trust domains: two meshes with separate roots tunnel to each
//! other once each names the other in `[[federation]]` with its bundle (one
//! as a SPIFFE bundle document, one as PEM, both printed by `strait ca
//! bundle`); a partner opens only the exports whose `allow` names its trust
//! domain; removing the federation from a configuration cuts the tunnel.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::mesh::{GatewayProcess, GatewaySpec, TestCa, echo_server, free_tcp};

/// One request through `import`: the echo of `payload`, or why not.
fn echo(import: SocketAddr, payload: &[u8]) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect(import).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(payload).map_err(|e| e.to_string())?;
    let mut out = vec![0u8; payload.len()];
    s.read_exact(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn federation(trust_domain: &str, bundle: &std::path::Path) -> String {
    format!(
        "[[federation]]\ntrust_domain = \"{trust_domain}\"\nbundle = \"{}\"",
        bundle.display()
    )
}

#[test]
fn two_trust_domains_tunnel_after_exchanging_bundles_and_stop_when_one_withdraws() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ours = TestCa::new(d, "example.org");
    let partner = TestCa {
        dir: d.join("partner-ca"),
    };
    support::strait(
        d,
        &format!(
            "ca init --trust-domain partner.org --dir {}",
            partner.dir.display()
        ),
    )
    .ok();
    ours.gateway("us-east", "gw-1", &d.join("gw-e"));
    // The same gateway name and region on both sides: only the trust
    // domain tells them apart.
    partner.gateway("us-east", "gw-1", &d.join("gw-p"));
    // Each side prints its bundle for the other.
    let ours_pem = d.join("example.org.pem");
    let partner_json = d.join("partner.org.json");
    let print = |ca: &TestCa, format: &str, out: &std::path::Path| {
        let text = support::strait(
            d,
            &format!("ca bundle --ca {} --format {format}", ca.dir.display()),
        )
        .ok()
        .stdout;
        std::fs::write(out, text).unwrap();
    };
    print(&ours, "pem", &ours_pem);
    print(&partner, "spiffe", &partner_json);

    let mut p = GatewaySpec::new("gw-1", "us-east", d.join("gw-p"));
    p.exports.push((
        "shared".into(),
        echo_server(),
        vec!["spiffe://example.org/region/us-east/*".into()],
    ));
    p.exports.push(("internal".into(), echo_server(), vec![]));
    p.tables.push(federation("example.org", &ours_pem));
    let mut e = GatewaySpec::new("gw-1", "us-east", d.join("gw-e"));
    let (shared, internal) = (free_tcp(), free_tcp());
    e.imports = vec![("shared".into(), shared), ("internal".into(), internal)];
    e.tables.push(federation("partner.org", &partner_json));
    e.tables.push(format!(
        "[[peer]]\nregion = \"us-east\"\ntrust_domain = \"partner.org\"\naddresses = [\"{}\"]",
        p.quic
    ));
    // Each in a directory of its own: they share a name.
    for side in ["partner", "ours"] {
        std::fs::create_dir(d.join(side)).unwrap();
    }
    let pg = GatewayProcess::start(&d.join("partner"), &p);
    let eg = GatewayProcess::start(&d.join("ours"), &e);
    eg.wait_for("a tunnel to the partner", |s| {
        s["peers"].as_array().is_some_and(|peers| {
            peers.iter().any(|x| {
                x["id"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("spiffe://partner.org/"))
                    && x["state"] == "up"
            })
        })
    });
    eg.wait_for_service("shared");
    let payload: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    assert_eq!(echo(shared, &payload).unwrap(), payload, "byte-exact");
    // `internal` allows the partner's own gateways only (no allow list):
    // ours are refused.
    let refused = echo(internal, b"x");
    assert!(refused.is_err(), "internal answered a federated gateway");
    pg.wait_for_log("forbidden");

    // The partner withdraws the federation: the tunnel is cut at once, and
    // no new one forms.
    let config = std::fs::read_to_string(&pg.config).unwrap();
    let without = config.replace(&federation("example.org", &ours_pem), "");
    assert_ne!(config, without);
    std::fs::write(&pg.config, without).unwrap();
    pg.signal_hup();
    let cut = pg.wait_for_log("trust domain is no longer federated");
    assert!(
        cut.contains("spiffe://example.org/region/us-east/gateway/gw-1"),
        "{cut}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while echo(shared, b"after").is_ok() {
        assert!(Instant::now() < deadline, "the partner still serves us");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Our dials are refused with the reason.
    let log = eg.wait_for_log("not in trust domain");
    assert!(log.contains("example.org"), "{log}");
}

#[test]
fn a_peer_of_a_trust_domain_not_federated_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_ca, _west, mut east) = support::mesh::west_east(d);
    east.peers.clear();
    east.tables.push(
        "[[peer]]\nregion = \"eu-west\"\ntrust_domain = \"partner.org\"\naddresses = [\"127.0.0.1:1\"]"
            .into(),
    );
    let path = d.join("east.toml");
    std::fs::write(&path, east.toml()).unwrap();
    let out = support::strait(d, &format!("gateway check --config {}", path.display())).failed();
    assert!(
        out.contains("peer.trust_domain") && out.contains("\"partner.org\" is not federated"),
        "{out}"
    );
    // Federating our own trust domain is refused at start, with the reason.
    east.tables = vec![federation("example.org", &d.join("gw-e/bundle.pem"))];
    std::fs::write(&path, east.toml()).unwrap();
    let out = support::strait(d, &format!("gateway run --config {}", path.display())).failed();
    assert!(out.contains("this gateway's own trust domain"), "{out}");
}
