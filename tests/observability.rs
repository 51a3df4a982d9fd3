//! The dashboard and alerting rules in `deploy/observability/` hold up:
//! promtool accepts the rules and their unit tests pass, and every metric
//! and label the dashboard and the rules name is one that real gateways
//! export. The gateways are driven through what the rules watch for (a
//! failover and a failback, an open circuit, failed renewals and trust
//! refreshes, a refused configuration reload, identity files that do not
//! load, a drill) so that the series exist to be compared with.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::mesh::{
    GatewayProcess, GatewaySpec, StoppableTarget, TestCa, admin_post, echo_server, free_tcp, sum,
};

fn observability_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/observability")
}

/// promtool, or why the test cannot run here. On CI (`CI` set) it must be
/// there: `.ci/run` installs it.
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing on CI: .ci/run installs the Debian package prometheus"
        );
        eprintln!("skipped: promtool not found (Debian package prometheus)");
        return None;
    }
    Some("promtool")
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let Some(promtool) = promtool() else { return };
    for args in [
        ["check", "rules", "alerts.yaml"],
        ["test", "rules", "alerts.test.yaml"],
    ] {
        let out = Command::new(promtool)
            .args(args)
            .current_dir(observability_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Labels that the scrape adds (Prometheus' target labels and the
/// histogram bucket bound), not the gateway.
const TARGET_LABELS: &[&str] = &["instance", "job", "le"];

/// Every PromQL expression of the dashboard, with its legend.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(observability_dir().join("dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard.json is JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().unwrap_or_else(|| {
            panic!("panel {:?} has no queries", panel["title"]);
        });
        assert!(!targets.is_empty(), "panel {:?} is empty", panel["title"]);
        for t in targets {
            out.push((
                t["expr"].as_str().unwrap().to_owned(),
                t["legendFormat"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    for var in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["definition"].as_str() {
            out.push((q.to_owned(), String::new()));
        }
    }
    out
}

/// Every alert's expression, with its annotations and labels as one text
/// (for `$labels.X`).
fn rule_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(observability_dir().join("alerts.yaml")).unwrap();
    let rules: serde_json::Value = serde_norway::from_str(&text).expect("alerts.yaml is YAML");
    let mut out = Vec::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            out.push((
                rule["expr"].as_str().unwrap().to_owned(),
                format!("{} {}", rule["annotations"], rule["labels"]),
            ));
        }
    }
    out
}

/// What a query names: metric names, and the labels it matches on,
/// groups by, or prints (`{{label}}`, `$labels.label`).
#[derive(Debug, Default)]
struct Named {
    metrics: BTreeSet<String>,
    /// Label -> the metric it was matched on (None: `by`, `without`, a
    /// legend or an annotation, which may name a label of any metric of
    /// the query).
    labels: Vec<(String, Option<String>)>,
}

fn words(s: &str) -> Vec<&str> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect()
}

fn named(expr: &str, text: &str) -> Named {
    let mut n = Named::default();
    let mut rest = expr;
    while let Some(i) = rest.find("strait_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let metric = &tail[..end];
        n.metrics.insert(metric.to_owned());
        let after = &tail[end..];
        if let Some(inner) = after.strip_prefix('{') {
            let matchers = &inner[..inner.find('}').unwrap()];
            for m in matchers.split(',') {
                let key = m.split(['=', '!']).next().unwrap().trim();
                n.labels.push((key.to_owned(), Some(metric.to_owned())));
            }
        }
        rest = after;
    }
    for clause in ["by (", "by(", "without (", "without("] {
        for part in expr.split(clause).skip(1) {
            for l in words(&part[..part.find(')').unwrap()]) {
                n.labels.push((l.to_owned(), None));
            }
        }
    }
    for part in text.split("{{").skip(1) {
        let inside = &part[..part.find("}}").unwrap_or(part.len())];
        let inside = inside.trim();
        let label = inside.strip_prefix("$labels.").unwrap_or(inside);
        if !label.starts_with('$') && !label.is_empty() {
            n.labels.push((words(label)[0].to_owned(), None));
        }
    }
    n
}

/// A histogram's series carry the family name plus a suffix.
fn family(metric: &str) -> &str {
    ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|s| metric.strip_suffix(s))
        .unwrap_or(metric)
}

/// Metric family -> labels, over every scrape.
fn exported(scrapes: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for text in scrapes {
        for line in text.lines().filter(|l| l.starts_with("strait_")) {
            let (series, _) = line.rsplit_once(' ').unwrap();
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let entry = out.entry(family(name).to_owned()).or_default();
            for pair in labels.trim_end_matches('}').split("\",") {
                if let Some((k, _)) = pair.split_once('=') {
                    entry.insert(k.to_owned());
                }
            }
        }
    }
    out
}

/// One request through an import: the bytes come back, or `None`.
fn request(import: SocketAddr) -> Option<()> {
    let mut s = TcpStream::connect(import).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"ping").ok()?;
    let mut got = [0u8; 4];
    s.read_exact(&mut got).ok()?;
    (&got == b"ping").then_some(())
}

/// Polls `gw`'s metrics until `ok` holds (up to 20 s).
fn wait_metrics(
    gw: &GatewayProcess,
    what: &str,
    ok: impl Fn(&std::collections::HashMap<String, f64>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok(&gw.scrape()) {
        assert!(
            Instant::now() < deadline,
            "never saw {what}:\n{}\nlog:\n{}",
            gw.scrape_text(),
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_dashboard_and_the_rules_name_only_what_gateways_export() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new(d, "example.org");
    ca.gateways(
        d,
        &[
            ("eu-west", "gw-w"),
            ("ap-south", "gw-s"),
            ("us-east", "gw-e"),
        ],
    );
    let fast_health = vec![
        "target_check = \"200ms\"".to_owned(),
        "hold_down = \"1s\"".to_owned(),
    ];
    let target = StoppableTarget::start("127.0.0.1:0".parse().unwrap(), None);
    let mut west = GatewaySpec::new("gw-w", "eu-west", d.join("gw-w"));
    west.exports.push(("svc".into(), target.addr, vec![]));
    // Nobody may open `guarded` here: each stream refused feeds the breaker.
    west.exports.push((
        "guarded".into(),
        echo_server(),
        vec!["spiffe://example.org/region/nowhere/*".into()],
    ));
    let mut south = GatewaySpec::new("gw-s", "ap-south", d.join("gw-s"));
    south.exports.push(("svc".into(), echo_server(), vec![]));
    south
        .exports
        .push(("guarded".into(), echo_server(), vec![]));
    let mut east = GatewaySpec::new("gw-e", "us-east", d.join("gw-e"));
    east.peers = vec![
        ("eu-west".into(), west.quic),
        ("ap-south".into(), south.quic),
    ];
    let (svc, guarded) = (free_tcp(), free_tcp());
    east.imports = vec![("svc".into(), svc), ("guarded".into(), guarded)];
    east.prefer = vec!["eu-west".into(), "ap-south".into()];
    for spec in [&mut west, &mut south, &mut east] {
        spec.health = fast_health.clone();
        spec.tunnel.push("discover = false".into());
    }
    // A gateway on its own whose CA service is gone: its renewals and
    // trust refreshes fail, and it is given a broken configuration and
    // broken certificate files to reload.
    support::strait(
        d,
        &format!(
            "cert issue --ca {} --gateway --region eu-west --name gw-l --out gw-l --ttl 6s",
            ca.dir.display()
        ),
    )
    .ok();
    let mut lonely = GatewaySpec::new("gw-l", "eu-west", d.join("gw-l"));
    lonely.identity_lines = vec![
        format!("ca_service = \"{}\"", free_tcp()),
        "refresh = \"1s\"".into(),
    ];
    lonely.health = fast_health;

    let w = GatewayProcess::start(d, &west);
    let s = GatewayProcess::start(d, &south);
    let e = GatewayProcess::start(d, &east);
    let l = GatewayProcess::start(d, &lonely);
    e.wait_for("tunnels to both regions", |st| {
        st["peers"].as_array().is_some_and(|p| {
            ["eu-west", "ap-south"]
                .iter()
                .all(|r| p.iter().any(|x| x["region"] == *r && x["state"] == "up"))
        })
    });
    e.wait_for_service("svc");
    e.wait_for_service("guarded");
    for _ in 0..3 {
        request(svc).expect("svc answers from eu-west");
    }
    // Refused at eu-west every time, answered by ap-south: the breaker
    // opens after three refusals.
    for _ in 0..5 {
        request(guarded).expect("guarded answers from ap-south");
    }
    wait_metrics(&e, "an open circuit", |m| {
        sum(m, "strait_circuit_open", &[]) >= 1.0
    });
    // eu-west's svc target goes away: svc fails over to ap-south ...
    target.stop();
    w.wait_for("svc target down", |st| {
        st["events"]
            .as_array()
            .is_some_and(|ev| ev.iter().any(|x| x["kind"] == "target_down"))
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while sum(&e.scrape(), "strait_failovers_total", &["service=\"svc\""]) < 1.0 {
        assert!(Instant::now() < deadline, "no failover:\n{}", e.log_text());
        let _ = request(svc);
        std::thread::sleep(Duration::from_millis(100));
    }
    // ... and back once it returns and the hold-down has passed.
    let _target = StoppableTarget::start(target.addr, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while sum(&e.scrape(), "strait_failbacks_total", &["service=\"svc\""]) < 1.0 {
        assert!(Instant::now() < deadline, "no failback:\n{}", e.log_text());
        let _ = request(svc);
        std::thread::sleep(Duration::from_millis(100));
    }
    // The lonely gateway: a broken configuration, then broken identity
    // files, both refused; renewals and refreshes fail by themselves.
    let config = std::fs::read_to_string(&l.config).unwrap();
    std::fs::write(&l.config, "[gateway\n").unwrap();
    l.signal_hup();
    wait_metrics(&l, "a refused reload", |m| {
        sum(m, "strait_config_reloads_failed_total", &[]) >= 1.0
    });
    std::fs::write(&l.config, config).unwrap();
    std::fs::write(d.join("gw-l/cert.pem"), "not a certificate\n").unwrap();
    wait_metrics(&l, "failed renewals, refreshes and identity reloads", |m| {
        sum(
            m,
            "strait_certificate_renewals_total",
            &["result=\"error\""],
        ) >= 1.0
            && sum(m, "strait_bundle_refreshes_total", &["result=\"error\""]) >= 1.0
            && sum(m, "strait_identity_reloads_failed_total", &[]) >= 1.0
    });
    // Telemetry has gone round at least once.
    wait_metrics(&e, "mesh ages", |m| {
        sum(
            m,
            "strait_mesh_report_age_seconds",
            &["gateway_region=\"ap-south\""],
        ) > 0.0
    });
    // A stream in flight, so that the active-streams gauge has a series.
    let mut held = TcpStream::connect(svc).unwrap();
    held.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    held.read_exact(&mut one).unwrap();

    // A drill in force at ap-south, cutting us-east: its gauge and the
    // packets it drops (probes) have series.
    let (line, body) = admin_post(
        s.spec_admin,
        "/drill/blackhole?region=us-east&direction=both&duration=1m",
    );
    assert!(line.contains(" 200 "), "{line}: {body}");
    wait_metrics(&s, "a drill dropping packets", |m| {
        sum(m, "strait_drill_dropped_packets_total", &[]) >= 1.0
    });

    let scrapes: Vec<String> = [&w, &s, &e, &l].iter().map(|g| g.scrape_text()).collect();
    let have = exported(&scrapes);
    let mut problems = Vec::new();
    for (source, queries) in [
        ("dashboard.json", dashboard_queries()),
        ("alerts.yaml", rule_queries()),
    ] {
        for (expr, text) in queries {
            let n = named(&expr, &text);
            assert!(!n.metrics.is_empty(), "{source}: {expr:?} names no metric");
            for metric in &n.metrics {
                if !have.contains_key(family(metric)) {
                    problems.push(format!("{source}: no gateway exports {metric} ({expr})"));
                }
            }
            for (label, on) in &n.labels {
                if TARGET_LABELS.contains(&label.as_str()) {
                    continue;
                }
                let metrics: Vec<&String> = match on {
                    Some(m) => vec![m],
                    None => n.metrics.iter().collect(),
                };
                let found = metrics.iter().any(|m| {
                    have.get(family(m))
                        .is_some_and(|labels| labels.contains(label))
                });
                if !found {
                    problems.push(format!(
                        "{source}: label {label:?} is not exported by {metrics:?} ({expr})"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nexported:\n{have:#?}",
        problems.join("\n")
    );
    drop(held);
}

#[test]
fn the_reader_of_queries_sees_metrics_and_labels() {
    let n = named(
        "sum by (region, peer_region) (rate(strait_quic_lost_packets_total{region=~\"$region\",state!=\"x\"}[5m]))",
        "{{region}} -> {{ $labels.peer_region }} {{ $value | humanize }}",
    );
    assert_eq!(
        n.metrics.iter().collect::<Vec<_>>(),
        ["strait_quic_lost_packets_total"]
    );
    let labels: Vec<&str> = n.labels.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        labels,
        [
            "region",
            "state",
            "region",
            "peer_region",
            "region",
            "peer_region"
        ]
    );
    assert_eq!(
        family("strait_probe_rtt_seconds_bucket"),
        "strait_probe_rtt_seconds"
    );
    let have = exported(&["strait_a{x=\"1\",y=\"a,b\"} 1\nstrait_b 2\n".to_owned()]);
    assert_eq!(have["strait_a"], ["x", "y"].map(String::from).into());
    assert!(have["strait_b"].is_empty());
}
