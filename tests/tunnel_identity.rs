//! Who may open a tunnel: a raw QUIC client presents certificates strait's
//! gateways must refuse (another CA, another trust domain, a workload ID,
//! an expired certificate); the gateway logs each refusal with the peer's
//! address and the reason, and keeps serving.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use quinn::crypto::rustls::QuicClientConfig;
use strait_ca::tls::{SvidVerifier, client_config};
use strait_ca::{
    CertificateAuthority, Identity, KeyType, Overwrite, PeerRequirement, SpiffeId, SvidRequest,
    TrustBundle, TrustDomain,
};
use support::mesh::{GatewayProcess, GatewaySpec, TestCa, echo_server};
use support::raw::raw_endpoint;

fn issue(ca_dir: &Path, id: &str, out: &Path, at: SystemTime, ttl: Duration) -> Identity {
    let ca = CertificateAuthority::load(ca_dir).unwrap();
    let mut req = SvidRequest::new(SpiffeId::parse(id).unwrap());
    req.ttl = ttl;
    ca.issue(&req, KeyType::P256, at)
        .unwrap()
        .write_to(out, Overwrite::Never)
        .unwrap();
    Identity::load(&out.join("cert.pem"), &out.join("key.pem")).unwrap()
}

/// Dials `addr` presenting `identity`; returns once the connection is
/// refused or closed (the server may only refuse after the client thinks
/// the handshake is done).
async fn dial(addr: SocketAddr, identity: &Identity, bundle: &TrustBundle) {
    let td = TrustDomain::parse("example.org").unwrap();
    let verifier = Arc::new(SvidVerifier::new(
        bundle.clone(),
        PeerRequirement::Gateway(td),
    ));
    let tls = client_config(identity, verifier, &[support::raw::ALPN]).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls).unwrap(),
    )));
    let attempt = async {
        if let Ok(conn) = endpoint.connect(addr, "gw").unwrap().await {
            conn.closed().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .expect("the gateway neither refused nor closed the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_that_are_not_ours_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ours = TestCa::new(d, "example.org");
    let theirs = TestCa::new(d, "other.org");
    let stranger = {
        let ca = d.join("ca-stranger");
        support::strait(
            d,
            &format!("ca init --trust-domain example.org --dir {}", ca.display()),
        )
        .ok();
        ca
    };
    ours.gateway("eu-west", "gw-a", &d.join("gw-a"));
    // The gateway trusts both roots, so other.org chains verify and the
    // trust-domain rule is what refuses them.
    let both = format!(
        "{}{}",
        std::fs::read_to_string(ours.dir.join("bundle.pem")).unwrap(),
        std::fs::read_to_string(theirs.dir.join("bundle.pem")).unwrap()
    );
    std::fs::write(d.join("gw-a/bundle.pem"), &both).unwrap();
    let mut spec = GatewaySpec::new("gw-a", "eu-west", d.join("gw-a"));
    spec.exports.push(("echo".into(), echo_server(), vec![]));
    let gw = GatewayProcess::start(d, &spec);
    let bundle = TrustBundle::load(&d.join("gw-a/bundle.pem")).unwrap();
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);

    let cases = [
        (
            stranger.clone(),
            "spiffe://example.org/region/us-east/gateway/x",
            now,
            day,
            "unknown issuer",
        ),
        (
            theirs.dir.clone(),
            "spiffe://other.org/region/us-east/gateway/x",
            now,
            day,
            "is not in trust domain example.org",
        ),
        (
            ours.dir.clone(),
            "spiffe://example.org/ns/shop/sa/web",
            now,
            day,
            "is not a gateway identity",
        ),
        (
            ours.dir.clone(),
            "spiffe://example.org/region/us-east/gateway/old",
            now - 2 * day,
            Duration::from_secs(3600),
            "certificate expired",
        ),
    ];
    for (i, (ca, id, at, ttl, reason)) in cases.into_iter().enumerate() {
        let identity = issue(&ca, id, &d.join(format!("client-{i}")), at, ttl);
        dial(spec.quic, &identity, &bundle).await;
        gw.wait_for_log(reason);
        assert_eq!(gw.peer_count(), 0, "{id} got a tunnel");
    }
    let log = gw.log_text();
    assert!(
        log.contains("peer refused") && log.contains("peer_addr=127.0.0.1:"),
        "{log}"
    );
    // Reasons as a person reads them, not rustls' Debug wrapper.
    assert!(!log.contains("OtherError"), "{log}");
    // Still serving: a proper gateway of our CA gets a tunnel.
    ours.gateway("us-east", "gw-b", &d.join("gw-b"));
    let mut b = GatewaySpec::new("gw-b", "us-east", d.join("gw-b"));
    b.peers.push(("eu-west".into(), spec.quic));
    let b = GatewayProcess::start(d, &b);
    b.wait_for_service("echo");
}

/// A raw client with a proper gateway identity speaks strait/1 by hand:
/// HELLO, then hostile streams, then a proper one on the same tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_streams_are_reset_and_the_tunnel_keeps_serving() {
    use bytes::BytesMut;
    use strait_core::frame::{self, Hello, Message, Open, StatusCode};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (spec, gw) = support::raw::echo_gateway(d);
    let endpoint = raw_endpoint(d);
    let conn = endpoint.connect(spec.quic, "gw").unwrap().await.unwrap();

    let encode = |m: &Message| {
        let mut b = BytesMut::new();
        frame::encode(m, &mut b).unwrap();
        b
    };
    let (mut control, mut control_rx) = conn.open_bi().await.unwrap();
    let hello = Message::Hello(Hello::new("gw-raw".into(), "us-east".into(), vec![]));
    control.write_all(&encode(&hello)).await.unwrap();
    let mut buf = BytesMut::new();
    let theirs = loop {
        if let Some(m) = frame::decode(&mut buf).unwrap() {
            break m;
        }
        let mut chunk = [0u8; 1024];
        let n = control_rx.read(&mut chunk).await.unwrap().unwrap();
        buf.extend_from_slice(&chunk[..n]);
    };
    assert!(matches!(theirs, Message::Hello(_)));

    // 1. Garbage where OPEN belongs; 2. an oversized length prefix; 3. a
    // valid frame that is not OPEN. Each stream is reset, nothing else.
    for hostile in [
        b"\x00\x00\x00\x05hello".to_vec(),
        vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        encode(&Message::Status(strait_core::frame::Status {
            code: StatusCode::Ok,
            message: String::new(),
        }))
        .to_vec(),
    ] {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&hostile).await.unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(1024))
            .await
            .expect("no answer");
        assert!(
            outcome.is_err(),
            "a hostile stream got an answer: {outcome:?}"
        );
    }

    // The same tunnel still carries a proper stream.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let open = Message::Open(Open {
        service: "echo".into(),
        trace_id: [1; 16],
        span_id: [2; 8],
        origin: None,
        ..Default::default()
    });
    let mut request = encode(&open);
    request.extend_from_slice(b"still serving");
    send.write_all(&request).await.unwrap();
    send.finish().unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(1 << 16))
        .await
        .unwrap()
        .unwrap();
    let mut answer = BytesMut::from(&answer[..]);
    match frame::decode(&mut answer).unwrap() {
        Some(Message::Status(s)) => assert_eq!(s.code, StatusCode::Ok),
        other => panic!("expected OK, got {other:?}"),
    }
    assert_eq!(&answer[..], b"still serving");
    assert!(conn.close_reason().is_none(), "the tunnel was closed");
    let log = gw.log_text();
    assert!(
        log.contains("bad stream start") || log.contains("did not start with OPEN"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_that_contradicts_the_certificate_is_refused() {
    use bytes::BytesMut;
    use strait_core::frame::{self, Hello, Message};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    support::raw::certificates(d);
    let spec = GatewaySpec::new("gw-a", "eu-west", d.join("gw-a"));
    let gw = GatewayProcess::start(d, &spec);
    let endpoint = raw_endpoint(d);
    let conn = endpoint.connect(spec.quic, "gw").unwrap().await.unwrap();
    let (mut control, _rx) = conn.open_bi().await.unwrap();
    // The certificate says gw-raw in us-east; HELLO claims another gateway.
    let mut hello = BytesMut::new();
    frame::encode(
        &Message::Hello(Hello::new("gw-impostor".into(), "ap-south".into(), vec![])),
        &mut hello,
    )
    .unwrap();
    control.write_all(&hello).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("tunnel not closed");
    assert!(closed.to_string().contains("HELLO says"), "{closed}");
    gw.wait_for_log("HELLO says gateway \"gw-impostor\"");
    assert_eq!(gw.peer_count(), 0);
}

/// The certificate a raw client sees when it dials `addr` now, as DER.
async fn served_certificate(addr: std::net::SocketAddr, d: &Path) -> (quinn::Connection, Vec<u8>) {
    let endpoint = raw_endpoint(d);
    let conn = endpoint.connect(addr, "gw").unwrap().await.unwrap();
    let certs = conn
        .peer_identity()
        .unwrap()
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .unwrap();
    let der = certs[0].to_vec();
    (conn, der)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_identity_files_are_reloaded_and_broken_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new(d, "example.org");
    ca.gateway("eu-west", "gw-a", &d.join("gw-a"));
    ca.gateway("us-east", "gw-raw", &d.join("gw-raw"));
    let spec = GatewaySpec::new("gw-a", "eu-west", d.join("gw-a"));
    let gw = GatewayProcess::start(d, &spec);
    let (old_conn, first) = served_certificate(spec.quic, d).await;

    // A renewed certificate (new key, new serial) written over the old one.
    support::strait(
        d,
        &format!(
            "cert issue --ca {} --gateway --region eu-west --name gw-a --out {} --ttl 2h --force",
            ca.dir.display(),
            d.join("gw-a").display()
        ),
    )
    .ok();
    gw.wait_for_log("identity reloaded");
    let (_new_conn, second) = served_certificate(spec.quic, d).await;
    assert_ne!(
        first, second,
        "new handshakes still get the old certificate"
    );
    assert!(
        old_conn.close_reason().is_none(),
        "the reload closed an open connection"
    );

    // A broken file is refused and the running identity stays.
    std::fs::write(
        d.join("gw-a/cert.pem"),
        "-----BEGIN CERTIFICATE-----\ntruncated",
    )
    .unwrap();
    gw.wait_for_log("do not load; keeping the running identity");
    let (_third_conn, third) = served_certificate(spec.quic, d).await;
    assert_eq!(second, third, "a broken reload changed the identity");
    let status = gw.status().unwrap();
    let kinds: Vec<&str> = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"certificate_reloaded") && kinds.contains(&"certificate_reload_failed"),
        "{kinds:?}"
    );
}

/// A gateway whose own address is among its peers refuses the tunnel to
/// itself, with that reason, instead of tunnelling to itself.
#[test]
fn a_gateway_refuses_a_tunnel_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new(d, "example.org");
    ca.gateway("eu-west", "gw-a", &d.join("gw-a"));
    let mut spec = GatewaySpec::new("gw-a", "eu-west", d.join("gw-a"));
    spec.peers.push(("eu-west".into(), spec.quic));
    let gw = GatewayProcess::start(d, &spec);
    gw.wait_for_log("is this gateway itself: is its own address listed as a peer?");
    assert_eq!(gw.peer_count(), 0);
}

/// A peer that completes TLS but grants no stream: the dialing gateway
/// gives up on the control stream and logs why, instead of waiting
/// silently for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_allows_no_control_stream_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    support::raw::certificates(d);
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(0u32.into());
    let endpoint = support::raw::raw_server(d, transport);
    let addr = endpoint.local_addr().unwrap();
    // Hold every connection open, answering nothing.
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Some(incoming) = endpoint.accept().await {
            if let Ok(conn) = incoming.await {
                conns.push(conn);
            }
        }
    });
    let mut spec = GatewaySpec::new("gw-a", "eu-west", d.join("gw-a"));
    spec.peers.push(("us-east".into(), addr));
    let d2 = d.to_owned();
    let gw = tokio::task::spawn_blocking(move || GatewayProcess::start(&d2, &spec))
        .await
        .unwrap();
    let needle = "the peer allowed no control stream within 10 s";
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while !gw.log_text().contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "{needle:?} never logged:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    held.abort();
}
