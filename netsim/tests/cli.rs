//! The `strait-netsim` binary as an operator uses it: run a topology, then
//! partition, inspect, set and heal it through the control API; and bad
//! input named by line or argument.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const TOPOLOGY: &str = r#"
seed = 3
control = "127.0.0.1:0"

[[region]]
name = "eu-west"
gateways = { gw-1 = "127.0.0.1:1" }

[[region]]
name = "us-east"
gateways = { gw-2 = "127.0.0.1:2" }

[[link]]
between = ["eu-west", "us-east"]
rtt = "80ms"
"#;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strait-netsim"))
}

/// A running `strait-netsim run`, killed when dropped.
struct Running {
    child: Child,
    control: String,
    stdout: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Running {
    std::fs::write(dir.join("topo.toml"), TOPOLOGY).unwrap();
    let mut child = bin()
        .args(["run", "topo.toml"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The header, a column line and one line per relay (2 here).
    let stdout: Vec<String> = (0..4).map_while(|_| lines.next()?.ok()).collect();
    let header = stdout.first().cloned().unwrap_or_default();
    let control = header
        .split("control API on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no control address in {stdout:?}"))
        .to_owned();
    Running {
        child,
        control,
        stdout,
    }
}

fn verb(control: &str, args: &[&str]) -> (bool, String, String) {
    let out = bin()
        .args(args)
        .args(["--control", control])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_prints_dial_addresses_and_obeys_verbs() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path());
    assert!(
        sim.stdout[0].contains("2 regions, 2 relays"),
        "{:?}",
        sim.stdout
    );
    assert!(
        sim.stdout
            .iter()
            .any(|l| l.starts_with("gw-1 (eu-west)") && l.contains("127.0.0.1:2")),
        "{:?}",
        sim.stdout
    );

    let (ok, out, err) = verb(
        &sim.control,
        &["partition", "eu-west", "us-east", "--oneway"],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "ok");
    let (_, stats, _) = verb(&sim.control, &["stats"]);
    let line = |from: &str| {
        stats
            .lines()
            .find(|l| l.starts_with(from))
            .unwrap()
            .to_owned()
    };
    assert!(line("eu-west -> us-east").contains("CUT"), "{stats}");
    assert!(line("us-east -> eu-west").contains(" up "), "{stats}");
    assert!(line("eu-west -> us-east").contains("40.0ms"), "{stats}");

    let (ok, _, err) = verb(
        &sim.control,
        &[
            "set", "eu-west", "us-east", "--rtt", "200ms", "--loss", "2%", "--rate", "10mbit",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = verb(&sim.control, &["heal"]);
    assert!(ok, "{err}");
    let (_, json, _) = verb(&sim.control, &["stats", "--json"]);
    let links: serde_json::Value = serde_json::from_str(&json).unwrap();
    for link in links.as_array().unwrap() {
        assert_eq!(link["partitioned"], false);
        assert_eq!(link["latency_ms"], 100.0);
        assert_eq!(link["loss"], 0.02);
        assert_eq!(link["rate_bps"], 10_000_000);
    }

    let (ok, _, err) = verb(&sim.control, &["isolate", "mars"]);
    assert!(!ok);
    assert!(
        err.contains("unknown region \"mars\" (known: eu-west, us-east)"),
        "{err}"
    );
}

#[test]
fn bad_arguments_are_named() {
    let (ok, _, err) = verb("127.0.0.1:9", &["set", "a", "b", "--rate", "fast"]);
    assert!(!ok);
    assert!(err.contains("--rate") && err.contains("100mbit"), "{err}");
    let (ok, _, err) = verb("127.0.0.1:9", &["set", "a", "b", "--latency", "80"]);
    assert!(!ok);
    assert!(err.contains("--latency"), "{err}");
    let (ok, _, err) = verb("127.0.0.1:9", &["set", "a", "b"]);
    assert!(!ok);
    assert!(err.contains("nothing to set"), "{err}");
    let out = bin()
        .args(["partition", "a", "b", "--control", "10.1.2.3:15099"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
}

#[test]
fn bad_topology_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = TOPOLOGY.replace(
        r#"rtt = "80ms""#,
        r#"rtt = "80ms"
loss = "one percent""#,
    );
    std::fs::write(dir.path().join("topo.toml"), bad).unwrap();
    let out = bin()
        .args(["run", "topo.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("topo.toml:16: link.loss:"), "{err}");
}
