//! Revocation over the mesh: a revocation made at eu-west's regional CA
//! reaches a us-east gateway that cannot reach that CA (only through its
//! peers), which cuts the revoked peer; a tampered list is refused and
//! cannot take a revocation back.

mod support;

use std::time::Duration;

use support::mesh::{CaProcess, GatewayProcess, GatewaySpec, echo_server, parse_metrics, sum};
use support::strait;

#[test]
fn a_revocation_travels_through_peers_and_cuts_the_revoked_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // One root, offline; a CA per region.
    strait(
        d,
        "ca init --trust-domain example.org --dir root --intermediate",
    )
    .ok();
    for (region, name, ca) in [
        ("eu-west", "gw-e", "ca"),
        ("us-east", "gw-u", "ca-us"),
        ("ap-south", "gw-x", "ca-ap"),
    ] {
        strait(
            d,
            &format!("ca intermediate --root root --region {region} --dir {ca}"),
        )
        .ok();
        strait(
            d,
            &format!("cert issue --ca {ca} --gateway --region {region} --name {name} --out {name}"),
        )
        .ok();
    }
    // eu-west's CA service.
    let ca = CaProcess::start(d, "ca", "24h");
    // gw-e reaches the CA service; gw-u does not (no ca_service) and learns
    // of revocations only from its peers; gw-x is the one to revoke.
    let mut e = GatewaySpec::new("gw-e", "eu-west", d.join("gw-e"));
    e.identity_lines = vec![
        format!("ca_service = \"{}\"", ca.addr),
        "refresh = \"1s\"".into(),
    ];
    e.exports.push(("svc".into(), echo_server(), vec![]));
    let mut x = GatewaySpec::new("gw-x", "ap-south", d.join("gw-x"));
    x.exports.push(("other".into(), echo_server(), vec![]));
    let mut u = GatewaySpec::new("gw-u", "us-east", d.join("gw-u"));
    u.peers.push(("eu-west".into(), e.quic));
    u.peers.push(("ap-south".into(), x.quic));
    for s in [&mut e, &mut x, &mut u] {
        s.tunnel.push("connections_per_peer = 1".into());
    }
    let gw_e = GatewayProcess::start(d, &e);
    let _gw_x = GatewayProcess::start(d, &x);
    let gw_u = GatewayProcess::start(d, &u);
    gw_u.wait_for("tunnels to gw-e and gw-x", |s| {
        s["peers"].as_array().is_some_and(|p| {
            ["gw-e", "gw-x"]
                .iter()
                .all(|n| p.iter().any(|p| p["name"] == *n && p["state"] == "up"))
        })
    });

    let revoked = strait(
        d,
        "ca revoke --ca ca --id spiffe://example.org/region/ap-south/gateway/gw-x",
    )
    .ok();
    assert!(revoked.stdout.contains("signed by this CA"), "{revoked:?}");
    // gw-e fetches it from the CA and passes it on; gw-u takes it from gw-e
    // and cuts gw-x.
    gw_u.wait_for("gw-x cut", |s| {
        s["peers"]
            .as_array()
            .is_some_and(|p| !p.iter().any(|p| p["name"] == "gw-x"))
    });
    let status = gw_u.status().unwrap();
    let events = status["events"].to_string();
    assert!(
        events.contains("deny_list_applied") && events.contains("from gw-e (eu-west): 1 entries"),
        "{events}"
    );
    let metrics = parse_metrics(&gw_u.scrape_text());
    assert_eq!(
        sum(
            &metrics,
            "strait_deny_lists_total",
            &["source=\"mesh\"", "result=\"applied\""]
        ),
        1.0
    );
    // Handshakes refuse it from now on: it does not come back.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !gw_u.status().unwrap()["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "gw-x"),
        "the revoked gateway came back"
    );

    // A tampered list (the entry taken out, the signature kept) is refused,
    // and the revocation held stays in force.
    let deny_path = d.join("gw-e/deny.txt");
    let signed = std::fs::read_to_string(&deny_path).unwrap();
    let tampered = signed.replace("id spiffe://example.org/region/ap-south/gateway/gw-x\n", "");
    assert_ne!(tampered, signed);
    std::fs::write(&deny_path, tampered).unwrap();
    gw_e.wait_for("the tampered file refused", |s| {
        s["events"].to_string().contains("deny_list_refused")
    });
    let metrics = parse_metrics(&gw_e.scrape_text());
    assert!(
        sum(
            &metrics,
            "strait_deny_lists_total",
            &["source=\"file\"", "result=\"refused\""]
        ) >= 1.0,
        "{metrics:?}"
    );
    assert!(
        gw_e.log_text().contains("does not verify"),
        "{}",
        gw_e.log_text()
    );
}
