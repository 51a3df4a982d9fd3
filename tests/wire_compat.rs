//! Rolling upgrades: a hand-rolled "newer gateway" (a raw QUIC client with
//! a gateway certificate of the test CA) talks to a real `strait` gateway.
//! Its wider version range, unknown capability, appended fields and frame
//! of an unknown kind are taken in stride; version ranges that do not
//! overlap are refused with both ranges named.

mod support;

use bytes::BytesMut;
use strait_core::frame::{
    Hello, Message, Open, PROTOCOL_VERSION, SUPPORTED_VERSIONS, ServiceAd, StatusCode, Update,
    VersionRange,
};
use support::raw::{encode, encode_with_appended, raw_endpoint, read_message};

/// Fields a newer version appended: a string and a varint.
const APPENDED: &[u8] = b"\x06zone-b\x07";

fn newer_hello(versions: VersionRange) -> Message {
    Message::Hello(Hello {
        versions,
        name: "gw-raw".into(),
        region: "us-east".into(),
        services: vec![],
        capabilities: vec!["x-future".into()],
        instance: "i-raw".into(),
        advertise: String::new(),
        lane: 0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_gateway_is_understood_and_the_tunnel_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (spec, gw) = support::raw::echo_gateway(d);
    let endpoint = raw_endpoint(d);
    let conn = endpoint.connect(spec.quic, "gw").unwrap().await.unwrap();

    // HELLO of a version-3 gateway with fields appended, then a control
    // frame of a kind this version does not know, then an UPDATE (with an
    // appended field too) to show the control stream read on past it.
    let newer = VersionRange::new(1, PROTOCOL_VERSION + 2);
    let mut control_bytes = encode_with_appended(&newer_hello(newer), APPENDED);
    control_bytes.extend_from_slice(b"\x00\x00\x00\x08\x40\x05hello\x2a");
    control_bytes.extend_from_slice(&encode_with_appended(
        &Message::Update(Update {
            services: vec![ServiceAd {
                name: "from-the-future".into(),
                healthy: true,
            }],
        }),
        APPENDED,
    ));
    let (mut control, mut control_rx) = conn.open_bi().await.unwrap();
    control.write_all(&control_bytes).await.unwrap();
    let mut buf = BytesMut::new();
    match read_message(&mut control_rx, &mut buf).await {
        Message::Hello(h) => assert_eq!(h.versions, SUPPORTED_VERSIONS),
        other => panic!("expected HELLO, got {other:?}"),
    }

    // A service stream: OPEN with an appended field, then the client's bytes.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let open = Message::Open(Open {
        service: "echo".into(),
        trace_id: [3; 16],
        span_id: [4; 8],
        origin: None,
        ..Default::default()
    });
    let mut request = encode_with_appended(&open, APPENDED);
    request.extend_from_slice(b"bytes from a newer gateway");
    send.write_all(&request).await.unwrap();
    send.finish().unwrap();
    let mut answer = BytesMut::new();
    match read_message(&mut recv, &mut answer).await {
        Message::Status(s) => assert_eq!(s.code, StatusCode::Ok, "{}", s.message),
        other => panic!("expected STATUS, got {other:?}"),
    }
    let rest = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        recv.read_to_end(1 << 16),
    )
    .await
    .expect("no echo within 10 s")
    .unwrap();
    answer.extend_from_slice(&rest);
    assert_eq!(&answer[..], b"bytes from a newer gateway");

    // The tunnel is up, and the UPDATE after the unknown frame was applied.
    gw.wait_for("gw-raw offering from-the-future", |s| {
        s["peers"].as_array().is_some_and(|peers| {
            peers.iter().any(|p| {
                p["name"] == "gw-raw"
                    && p["services"]
                        .as_array()
                        .is_some_and(|v| v.iter().any(|svc| svc["name"] == "from-the-future"))
            })
        })
    });
    assert!(conn.close_reason().is_none(), "the tunnel was closed");
    let log = gw.wait_for_log("control frame of a kind this version does not know; ignored");
    assert!(log.contains("kind=64"), "{log}");
    let agreed = log
        .lines()
        .find(|l| l.contains("protocol agreed in HELLO"))
        .unwrap_or_else(|| panic!("no negotiation logged:\n{log}"));
    assert!(
        agreed.contains(&format!("version={PROTOCOL_VERSION}"))
            && agreed.contains("capabilities=[]"),
        "{agreed}"
    );
    assert!(!log.contains("unexpected control frame"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_ranges_that_do_not_overlap_are_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (spec, gw) = support::raw::echo_gateway(d);
    let endpoint = raw_endpoint(d);
    let conn = endpoint.connect(spec.quic, "gw").unwrap().await.unwrap();
    let theirs = VersionRange::new(PROTOCOL_VERSION + 4, PROTOCOL_VERSION + 6);
    let (mut control, _rx) = conn.open_bi().await.unwrap();
    control
        .write_all(&encode(&newer_hello(theirs)))
        .await
        .unwrap();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), conn.closed())
        .await
        .expect("the gateway did not refuse");
    let both = format!("this gateway speaks {SUPPORTED_VERSIONS}, the peer {theirs}");
    assert!(closed.to_string().contains(&both), "{closed}");
    let log = gw.wait_for_log("no common protocol version");
    let line = log
        .lines()
        .find(|l| l.contains("peer refused") && l.contains(&both))
        .unwrap_or_else(|| panic!("no refusal naming both ranges:\n{log}"));
    assert!(line.contains("peer_addr=127.0.0.1:"), "{line}");
    assert_eq!(gw.peer_count(), 0);
}
