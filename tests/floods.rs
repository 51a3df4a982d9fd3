//! A flood of strangers' handshakes (certificates of a CA nobody trusts)
//! against a gateway that carries traffic: every refusal is counted, the
//! log gets the first ten of each ten seconds and a summary line instead
//! of one line each, new handshakes prove their address with a QUIC Retry
//! first (`handshake_retry_above = 0` here: always) and the real peer's
//! tunnel, which goes through the same Retry, keeps serving. The TCP
//! carrier's listener gates its TLS handshakes the same way.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::crypto::rustls::QuicClientConfig;
use strait_ca::tls::{SvidVerifier, client_config};
use strait_ca::{Identity, PeerRequirement, TrustBundle, TrustDomain};
use support::mesh::{GatewayProcess, TestCa, echo_server, free_tcp, sum, west_east};

/// A QUIC client that trusts `bundle` (so the gateway does all its
/// handshake work) but presents `identity`, which the gateway does not
/// trust.
fn stranger(identity: &Path, bundle: &Path) -> quinn::Endpoint {
    let identity = Identity::load(&identity.join("cert.pem"), &identity.join("key.pem")).unwrap();
    let bundle = TrustBundle::load(bundle).unwrap();
    let td = TrustDomain::parse("example.org").unwrap();
    let verifier = Arc::new(SvidVerifier::new(bundle, PeerRequirement::Gateway(td)));
    let tls = client_config(&identity, verifier, &[strait_core::ALPN]).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls).unwrap(),
    )));
    endpoint
}

fn echo(import: SocketAddr) -> Duration {
    let start = Instant::now();
    let mut s = TcpStream::connect(import).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"still served").unwrap();
    let mut got = [0u8; 12];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still served");
    start.elapsed()
}

#[test]
fn a_flood_of_strangers_is_counted_summed_up_in_the_log_and_costs_no_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_ca, mut west, mut east) = west_east(d);
    west.exports.push(("echo".into(), echo_server(), vec![]));
    west.tunnel.push("handshake_retry_above = 0".into());
    let import = free_tcp();
    east.imports.push(("echo".into(), import));
    // Another CA of the same trust domain: its certificates are strangers.
    std::fs::create_dir_all(d.join("other")).unwrap();
    let other = TestCa::new(&d.join("other"), "example.org");
    other.gateway("us-east", "gw-x", &d.join("gw-x"));
    let w = GatewayProcess::start(d, &west);
    let e = GatewayProcess::start(d, &east);
    e.wait_for_service("echo");
    echo(import);

    let rt = support::relay_runtime();
    let target = west.quic;
    let attempts = 300usize;
    let (refused, took) = rt.block_on(async {
        let endpoint = stranger(&d.join("gw-x"), &d.join("gw-w/bundle.pem"));
        let start = Instant::now();
        let mut refused = 0;
        for batch in 0..attempts / 30 {
            let tries: Vec<_> = (0..30)
                .map(|_| {
                    let connecting = endpoint.connect(target, "gateway").unwrap();
                    tokio::spawn(async move {
                        match tokio::time::timeout(Duration::from_secs(5), connecting).await {
                            // The client may finish before the server has
                            // read its certificate; the server closes it.
                            Ok(Ok(conn)) => {
                                conn.closed().await;
                                true
                            }
                            Ok(Err(_)) => true,
                            Err(_) => false,
                        }
                    })
                })
                .collect();
            for t in tries {
                if t.await.unwrap() {
                    refused += 1;
                }
            }
            // The tunnel keeps serving in the middle of the flood.
            if batch == attempts / 60 {
                tokio::task::spawn_blocking(move || echo(import))
                    .await
                    .unwrap();
            }
        }
        (refused, start.elapsed())
    });
    assert_eq!(refused, attempts, "every stranger's handshake ended");
    eprintln!(
        "{attempts} handshakes refused in {took:?} ({:.0}/s)",
        attempts as f64 / took.as_secs_f64()
    );
    echo(import);

    let m = w.scrape();
    // Every one refused: the first ones after their handshake, the rest at
    // once, their address having failed twenty times within ten seconds
    // (a batch of 30 is in flight when the twentieth fails).
    let refused = sum(&m, "strait_peers_refused_total", &[]);
    assert!(refused >= attempts as f64, "{refused} refusals: {m:?}");
    let worked_on = sum(&m, "strait_peers_refused_total", &["reason=\"handshake\""]);
    assert!(
        (20.0..=60.0).contains(&worked_on),
        "{worked_on} handshakes worked on: {m:?}"
    );
    let struck = sum(&m, "strait_peers_refused_total", &["reason=\"strikes\""]);
    assert!(struck >= attempts as f64 - 60.0, "{struck} refused at once");
    // Every handshake worked on was first asked to prove its address.
    let retried = sum(&m, "strait_handshakes_total", &["decision=\"retry\""]);
    assert!(retried >= 20.0, "{retried} Retries");
    let lines = |log: &str| log.lines().filter(|l| l.contains("peer refused:")).count();
    let log = w.log_text();
    assert!(
        lines(&log) <= 10 * (1 + took.as_secs() as usize / 10),
        "{} refusal lines for {attempts} refusals:\n{log}",
        lines(&log)
    );
    // The summary comes when the ten seconds that began with the first
    // refusal are over.
    let deadline = Instant::now() + Duration::from_secs(15);
    let summary = loop {
        let log = w.log_text();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("more handshakes refused in the last"))
        {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no summary line:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        summary.contains("strait_peers_refused_total counts them all"),
        "{summary}"
    );
    eprintln!("{summary}");
    // The real peer's tunnel stayed up throughout.
    assert_eq!(
        sum(&e.scrape(), "strait_tunnel_state", &["state=\"up\""]),
        1.0
    );
    drop(rt);
}

/// What the gateway does with one TCP connection to its tunnel port's TCP
/// twin that sends `bytes` and waits: how long until the gateway closed it.
async fn closed_after(from: std::net::Ipv4Addr, to: SocketAddr, bytes: &[u8]) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    let mut s = socket.connect(to).await.unwrap();
    let start = Instant::now();
    let _ = s.write_all(bytes).await;
    let mut sink = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut sink)).await {
            Ok(Ok(1..)) => continue,
            Ok(_) => break start.elapsed(),
            Err(_) => panic!("the gateway kept a connection from {from} open for 10 s"),
        }
    }
}

#[test]
fn tcp_connections_to_the_tunnel_port_pass_a_handshake_gate_and_cost_no_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_ca, mut west, mut east) = west_east(d);
    west.exports.push(("echo".into(), echo_server(), vec![]));
    west.tunnel.push("max_handshakes = 16".into());
    let import = free_tcp();
    east.imports.push(("echo".into(), import));
    let w = GatewayProcess::start(d, &west);
    let e = GatewayProcess::start(d, &east);
    e.wait_for_service("echo");
    echo(import);
    let target = west.quic;
    let rt = support::relay_runtime();
    let (failing, idle) = (
        support::mesh::fresh_loopback_ip(),
        support::mesh::fresh_loopback_ip(),
    );
    rt.block_on(async {
        // One address whose handshakes fail (it speaks HTTP, not TLS): the
        // twentieth failure within 10 s gets it closed at once for 10 s.
        for _ in 0..40 {
            closed_after(failing, target, b"GET / HTTP/1.0\r\n\r\n").await;
        }
        // Another holds 64 connections open without a byte: 16 wait for
        // the 5 s handshake timeout, the others are closed at once.
        let held: Vec<_> = (0..64)
            .map(|_| tokio::spawn(closed_after(idle, target, b"")))
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Meanwhile the tunnel serves.
        tokio::task::spawn_blocking(move || echo(import))
            .await
            .unwrap();
        let mut at_once = 0;
        for h in held {
            if h.await.unwrap() < Duration::from_secs(2) {
                at_once += 1;
            }
        }
        assert!(
            (40..=48).contains(&at_once),
            "{at_once} of 64 idle connections closed at once"
        );
    });
    echo(import);
    let m = w.scrape();
    let struck = sum(&m, "strait_peers_refused_total", &["reason=\"strikes\""]);
    assert!(
        (15.0..=20.0).contains(&struck),
        "{struck} refused for their address: {m:?}"
    );
    let busy = sum(&m, "strait_peers_refused_total", &["reason=\"busy\""]);
    assert!(
        (40.0..=48.0).contains(&busy),
        "{busy} refused as busy: {m:?}"
    );
    // The log names why (its first ten refusals each ten seconds).
    assert!(
        w.log_text()
            .contains("20 failed TCP carrier handshakes from"),
        "{}",
        w.log_text()
    );
    assert_eq!(
        sum(&e.scrape(), "strait_tunnel_state", &["state=\"up\""]),
        1.0
    );
    drop(rt);
}
