//! `strait status`: a gateway's view of the mesh from its admin endpoint,
//! as tables (like `linkerd multicluster gateways`), or JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::args::Status;

pub fn run(args: Status) -> anyhow::Result<ExitCode> {
    loop {
        let status = get_json(&args.admin, "/status")?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            if args.watch {
                // Clear the screen and go home, then redraw.
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", render(&status));
        }
        if !args.watch {
            return Ok(ExitCode::SUCCESS);
        }
        std::io::stdout().flush()?;
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// GET `path` as JSON from an admin address (`http://host:port` or
/// `host:port`).
pub(crate) fn get_json(admin: &str, path: &str) -> anyhow::Result<Value> {
    let body = admin_request(admin, "GET", path)?;
    serde_json::from_str(&body).with_context(|| format!("{admin}{path} is not JSON"))
}

/// Sends `method path` to an admin address and returns the body of a 200
/// answer; any other answer is an error that quotes it.
pub(crate) fn admin_request(admin: &str, method: &str, path: &str) -> anyhow::Result<String> {
    if let Some((scheme, _)) = admin.split_once("://") {
        anyhow::ensure!(
            scheme == "http",
            "{admin:?}: the admin endpoint speaks plain HTTP on loopback; write http://HOST:PORT or HOST:PORT, not {scheme}://"
        );
    }
    let authority = admin
        .trim_start_matches("http://")
        .split('/')
        .next()
        .filter(|a| !a.is_empty())
        .with_context(|| {
            format!("{admin:?} is not an admin address such as http://127.0.0.1:15000")
        })?;
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolved to no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).with_context(|| {
            format!("cannot reach the admin endpoint at {addr}; is the gateway running?")
        })?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("{addr} answered something that is not HTTP"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "{addr}{path}: {} {}",
        head.lines().next().unwrap_or_default(),
        body.trim()
    );
    Ok(body.to_owned())
}

/// QUIC packets lost over packets sent on the connection, or "-" from a
/// gateway that does not report transport figures (an older one).
fn packet_loss(transport: &Value) -> String {
    match transport["loss_ratio"].as_f64() {
        Some(r) => format!("{:.2}%", r * 100.0),
        None => "-".to_owned(),
    }
}

/// The tunnel's state, marked `/tcp` when the TCP carrier carries it
/// (UDP to the peer is blocked).
fn state(peer: &Value) -> String {
    let state = peer["state"].as_str().unwrap_or("-").to_owned();
    if peer["transport"]["kind"] == "tcp" {
        format!("{state}/tcp")
    } else {
        state
    }
}

/// The congestion window in readable units.
fn cwnd(transport: &Value) -> String {
    match transport["cwnd_bytes"].as_u64() {
        Some(b) if b >= 1 << 20 => format!("{:.1}MiB", b as f64 / f64::from(1u32 << 20)),
        Some(b) => format!("{}KiB", b / 1024),
        None => "-".to_owned(),
    }
}

fn render(s: &Value) -> String {
    let str_of = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let mut out = format!(
        "gateway {} ({})  {}  {}\n\n",
        str_of(&s["name"]),
        str_of(&s["region"]),
        str_of(&s["id"]),
        if s["draining"].as_bool() == Some(true) {
            "DRAINING"
        } else if s["ready"].as_bool() == Some(true) {
            "ready"
        } else {
            "not ready"
        }
    );
    if let Some(left) = s["certificate"]["remaining_seconds"].as_i64() {
        out += &format!(
            "certificate valid until {} ({}), serial {}, {} deny list entries\n\n",
            str_of(&s["certificate"]["not_after"]),
            super::time_left(left),
            str_of(&s["certificate"]["serial"]),
            s["certificate"]["deny_list_entries"].as_u64().unwrap_or(0)
        );
    }
    // Peers grouped by region: a region is many gateways.
    let mut by_region: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for p in s["peers"].as_array().into_iter().flatten() {
        by_region.entry(str_of(&p["region"])).or_default().push(p);
    }
    let known = |region: &str| {
        s["gateways"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|g| g["region"] == region)
            .count()
    };
    let mut served_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (region, peers) in &mut by_region {
        peers.sort_by_key(|p| {
            (
                str_of(&p["name"]),
                str_of(&p["instance"]),
                p["lane"].as_u64().unwrap_or(0),
            )
        });
        // A gateway is up when one of its connections (lanes) is.
        let gateway_of = |p: &Value| format!("{}#{}", str_of(&p["name"]), str_of(&p["instance"]));
        let gateways: BTreeSet<String> = peers.iter().map(|p| gateway_of(p)).collect();
        let up: BTreeSet<String> = peers
            .iter()
            .filter(|p| p["state"] == "up")
            .map(|p| gateway_of(p))
            .collect();
        out += &format!(
            "{region}: {} gateway(s) with a tunnel ({} connections), {} up, {} known\n",
            gateways.len(),
            peers.len(),
            up.len(),
            known(region).max(gateways.len())
        );
        out += &format!(
            "  {:<12} {:<22} {:>4} {:<9} {:>9} {:>6} {:>8} {:>9} {:>8}  {:<24} {:>10}\n",
            "GATEWAY",
            "INSTANCE",
            "LANE",
            "STATE",
            "RTT",
            "LOSS",
            "PKT-LOSS",
            "CWND",
            "STREAMS",
            "SERVICES",
            "LAST-SEEN"
        );
        for p in peers.iter() {
            let services: Vec<String> = p["services"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    let name = str_of(&v["name"]);
                    if v["healthy"].as_bool() == Some(true) {
                        let regions = served_by.entry(name.clone()).or_default();
                        if !regions.contains(region) {
                            regions.push(region.clone());
                        }
                        name
                    } else {
                        // Listed with no region rather than left out.
                        served_by.entry(name.clone()).or_default();
                        format!("{name}(down)")
                    }
                })
                .collect();
            out += &format!(
                "  {:<12} {:<22} {:>4} {:<9} {:>7.1}ms {:>5.0}% {:>8} {:>9} {:>8}  {:<24} {:>8.1}s ago\n",
                str_of(&p["name"]),
                str_of(&p["instance"]),
                p["lane"].as_u64().unwrap_or(0),
                state(p),
                p["rtt_ms"].as_f64().unwrap_or(0.0),
                p["probe_loss"].as_f64().unwrap_or(0.0) * 100.0,
                packet_loss(&p["transport"]),
                cwnd(&p["transport"]),
                p["active_streams"].as_u64().unwrap_or(0),
                services.join(","),
                p["last_seen_ms"].as_f64().unwrap_or(0.0) / 1e3,
            );
        }
        out += "\n";
    }
    if by_region.is_empty() {
        out += "no tunnels\n";
    }
    out += "\nSERVICE          SERVED BY (healthy, from here)\n";
    for (service, regions) in &served_by {
        let regions = if regions.is_empty() {
            "none".to_owned()
        } else {
            regions.join(", ")
        };
        out += &format!("{service:<16} {regions}\n");
    }
    out += "\nMESH (as this gateway last heard)\n";
    out += &format!(
        "{:<12} {:<12} {:<22} {:>9} {:>7} {:>9} {:>7}\n",
        "GATEWAY", "REGION", "INSTANCE", "AGE", "", "STREAMS", "FAILED"
    );
    for g in s["mesh"].as_array().into_iter().flatten() {
        let age = g["age_ms"].as_f64().unwrap_or(0.0) / 1e3;
        let flag = if g["stale"].as_bool() == Some(true) {
            "STALE"
        } else if g["direct"].as_bool() == Some(false) {
            "relayed"
        } else {
            ""
        };
        out += &format!(
            "{:<12} {:<12} {:<22} {:>8.1}s {:>7} {:>9} {:>7}\n",
            str_of(&g["gateway"]),
            str_of(&g["region"]),
            str_of(&g["instance"]),
            age,
            flag,
            g["streams_total"].as_u64().unwrap_or(0),
            g["streams_failed"].as_u64().unwrap_or(0),
        );
    }
    let events = s["events"].as_array().cloned().unwrap_or_default();
    out += &format!(
        "\nEVENTS (last {} of {})\n",
        events.len().min(10),
        events.len()
    );
    for e in events.iter().rev().take(10).rev() {
        out += &format!(
            "{}  {:<15} {}\n",
            str_of(&e["time"]),
            str_of(&e["kind"]),
            str_of(&e["detail"])
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn renders_peers_services_and_events() {
        let status = serde_json::json!({
            "id": "spiffe://example.org/region/eu-west/gateway/gw-1", "name": "gw-1", "region": "eu-west",
            "ready": true, "draining": false,
            "peers": [{"name": "gw-2", "region": "us-east", "instance": "10.0.0.2:15443", "lane": 0, "state": "up", "rtt_ms": 80.4, "probe_loss": 0.05,
                       "active_streams": 3, "last_seen_ms": 120,
                       "transport": {"kind": "tcp", "loss_ratio": 0.0213, "cwnd_bytes": 3_500_000u64},
                       "services": [{"name": "payments", "healthy": true}, {"name": "orders", "healthy": false}]},
                      {"name": "gw-2", "region": "us-east", "instance": "10.0.0.2:15443", "lane": 1, "state": "down", "rtt_ms": 80.4, "probe_loss": 1.0,
                       "active_streams": 0, "last_seen_ms": 3000,
                       "services": [{"name": "payments", "healthy": true}, {"name": "orders", "healthy": false}]}],
            "events": [{"time": "2026-11-23T12:00:00Z", "kind": "failover", "detail": "payments: us-east -> ap-south"}],
            "mesh": [{"gateway": "gw-2", "region": "us-east", "age_ms": 7400, "stale": true, "direct": true,
                      "streams_total": 12, "streams_failed": 1}]
        });
        let text = render(&status);
        assert!(
            text.contains("us-east: 1 gateway(s) with a tunnel (2 connections), 1 up, 1 known"),
            "{text}"
        );
        assert!(
            text.contains("  gw-2         10.0.0.2:15443            0 up/tcp"),
            "{text}"
        );
        assert!(
            text.contains("  gw-2         10.0.0.2:15443            1 down"),
            "{text}"
        );
        assert!(text.contains("80.4ms"), "{text}");
        assert!(text.contains("  2.13%    3.3MiB"), "{text}");
        // Lane 1 came from a gateway with no transport figures.
        assert!(text.contains("100%        -         -"), "{text}");
        assert!(text.contains("payments,orders(down)"), "{text}");
        assert!(text.contains("payments         us-east"), "{text}");
        assert!(text.contains("orders           none"), "{text}");
        assert!(
            text.contains("failover        payments: us-east -> ap-south"),
            "{text}"
        );
    }
}
