//! Golden bytes: what this version puts on the wire for a fixed example of
//! every message kind, checked in under `tests/golden/`. Decoding a file
//! must give the example and encoding the example must give the file, so a
//! change to the wire cannot slip in unnoticed. The `future_*` files are
//! frames from a newer version, which this one must read as the extension
//! rule says.

use std::path::PathBuf;

use bytes::BytesMut;
use strait_core::frame::{
    self, GatewayReport, GoAway, Hello, Message, Open, PROTOCOL_VERSION, Probe, ServiceAd, Status,
    StatusCode, Telemetry, TunnelReport, Update, VersionRange,
};

fn path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(file)
}

/// The bytes of a golden file: hex digits, white space ignored, `#` to the
/// end of the line a comment.
fn golden(file: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(path(file))
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path(file).display()));
    let digits: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    assert!(
        digits.len().is_multiple_of(2),
        "{file}: odd number of hex digits"
    );
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&digits[i..i + 2], 16)
                .unwrap_or_else(|_| panic!("{file}: {:?} is not hex", &digits[i..i + 2]))
        })
        .collect()
}

/// A golden file's text for `bytes`: a comment, the first `head` bytes
/// (a frame's length) on a line of their own, then 16 bytes a line.
fn golden_text(what: &str, bytes: &[u8], head: usize) -> String {
    let mut out = format!("# {what}\n# protocol version {PROTOCOL_VERSION}\n");
    let (head, body) = bytes.split_at(head);
    for line in std::iter::once(head)
        .filter(|h| !h.is_empty())
        .chain(body.chunks(16))
    {
        let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
        out += &hex.join(" ");
        out.push('\n');
    }
    out
}

fn ad(name: &str, healthy: bool) -> ServiceAd {
    ServiceAd {
        name: name.into(),
        healthy,
    }
}

fn report(gateway: &str, region: &str, age_ms: u64) -> GatewayReport {
    GatewayReport {
        gateway: gateway.into(),
        region: region.into(),
        boot_id: 0x0123_4567_89ab_cdef,
        age_ms,
        tunnels: vec![TunnelReport {
            peer: "gw-b".into(),
            peer_region: "us-east".into(),
            state: "up".into(),
            rtt_us: 81_250,
            loss_permille: 12,
        }],
        services: vec![ad("echo", true)],
        streams_total: 1000,
        streams_failed: 3,
        instance: format!("{gateway}-1"),
        advertise: "10.0.0.5:15443".into(),
        relayable: vec![strait_core::frame::RelayRoute {
            service: "db".into(),
            region: "us-east".into(),
        }],
        seq: 42,
    }
}

/// (file, what the example is, the example): one per message kind.
fn frames() -> Vec<(&'static str, &'static str, Message)> {
    vec![
        (
            "hello.hex",
            "HELLO of gw-a in eu-west: versions 1..=1, two services, one capability, instance and advertise address, lane 2",
            Message::Hello(Hello {
                versions: VersionRange::new(1, 1),
                name: "gw-a".into(),
                region: "eu-west".into(),
                services: vec![ad("echo", true), ad("db", false)],
                capabilities: vec!["x-example".into()],
                instance: "10.0.0.5:15443".into(),
                advertise: "10.0.0.5:15443".into(),
                lane: 2,
            }),
        ),
        (
            "update.hex",
            "UPDATE: echo healthy",
            Message::Update(Update {
                services: vec![ad("echo", true)],
            }),
        ),
        (
            "deny.hex",
            "DENY: a signed deny list of one entry (signature shortened)",
            Message::Deny(frame::Deny {
                signed_list: "id spiffe://example.org/region/us-east/gateway/gw-3\n#! strait-signature issued=1764888000 signer=AA== sig=AA==\n".into(),
            }),
        ),
        (
            "goaway.hex",
            "GOAWAY: draining",
            Message::GoAway(GoAway {
                reason: "draining".into(),
            }),
        ),
        (
            "open.hex",
            "OPEN of payments with trace context and the client's SPIFFE ID",
            Message::Open(Open {
                service: "payments".into(),
                trace_id: std::array::from_fn(|i| i as u8),
                span_id: std::array::from_fn(|i| 0xa0 + i as u8),
                origin: Some("spiffe://example.org/ns/shop/sa/web".into()),
                ..Default::default()
            }),
        ),
        (
            "open_relayed.hex",
            "OPEN of payments, second leg of a stream relayed by gw-c for gw-a",
            Message::Open(Open {
                service: "payments".into(),
                trace_id: std::array::from_fn(|i| i as u8),
                span_id: std::array::from_fn(|i| 0xa0 + i as u8),
                origin: None,
                relay_to: String::new(),
                relayed_by: "spiffe://example.org/region/ap-south/gateway/gw-c".into(),
                origin_gateway: "spiffe://example.org/region/eu-west/gateway/gw-a".into(),
            }),
        ),
        (
            "status.hex",
            "STATUS FORBIDDEN",
            Message::Status(Status {
                code: StatusCode::Forbidden,
                message: "FORBIDDEN for payments".into(),
            }),
        ),
        (
            "telemetry.hex",
            "TELEMETRY of gw-a relaying gw-c",
            Message::Telemetry(Telemetry {
                origin: report("gw-a", "eu-west", 0),
                relayed: vec![report("gw-c", "ap-south", 1500)],
            }),
        ),
    ]
}

fn probes() -> Vec<(&'static str, &'static str, Probe)> {
    vec![
        ("ping.hex", "PING datagram, sequence 1", Probe::Ping(1)),
        (
            "pong.hex",
            "PONG datagram, sequence 0x0102030405060708",
            Probe::Pong(0x0102_0304_0506_0708),
        ),
    ]
}

#[test]
fn every_golden_file_decodes_to_its_example() {
    for (file, _, expected) in frames() {
        let mut buf = BytesMut::from(&golden(file)[..]);
        let got = frame::decode(&mut buf)
            .unwrap_or_else(|e| panic!("{file} no longer decodes: {e}"))
            .unwrap_or_else(|| panic!("{file} is not a whole frame"));
        assert_eq!(got, expected, "{file} decodes to something else");
        assert!(buf.is_empty(), "{file}: bytes after the frame");
    }
    for (file, _, expected) in probes() {
        assert_eq!(Probe::decode(&golden(file)), Some(expected), "{file}");
    }
}

#[test]
fn every_example_encodes_to_its_golden_file() {
    let mut changed = Vec::new();
    for (file, what, msg) in frames() {
        let mut buf = BytesMut::new();
        frame::encode(&msg, &mut buf).unwrap();
        if buf[..] != golden(file)[..] {
            changed.push((file, golden_text(what, &buf, 4)));
        }
    }
    for (file, what, probe) in probes() {
        let bytes = probe.encode();
        if bytes[..] != golden(file)[..] {
            changed.push((file, golden_text(what, &bytes, 0)));
        }
    }
    let report: String = changed
        .iter()
        .map(|(file, text)| format!("\n--- core/tests/golden/{file} would now be:\n{text}"))
        .collect();
    assert!(
        changed.is_empty(),
        "the wire changed: if intended, bump PROTOCOL_VERSION or record the change \
         (docs/wire.md), and replace the golden files below; a gateway of the previous \
         version must still read what this one sends.{report}"
    );
}

#[test]
fn every_kind_has_a_golden_file() {
    let covered: Vec<u64> = frames().iter().map(|(_, _, m)| m.kind()).collect();
    for kind in frame::kind::KNOWN {
        assert!(covered.contains(&kind), "kind {kind} has no golden file");
    }
}

/// A HELLO from a newer version: a wider range, a capability this version
/// does not know, a field appended to its service record and two appended
/// to HELLO itself. This version reads what it knows and skips the rest.
#[test]
fn a_hello_from_a_future_version_decodes_to_what_this_version_knows() {
    let mut buf = BytesMut::from(&golden("future_hello.hex")[..]);
    let got = frame::decode(&mut buf).unwrap().unwrap();
    assert_eq!(
        got,
        Message::Hello(Hello {
            versions: VersionRange::new(1, 3),
            name: "gw-b".into(),
            region: "us-east".into(),
            services: vec![ad("echo", true)],
            capabilities: vec!["x-future".into()],
            instance: "i-2".into(),
            advertise: "gw-b:15443".into(),
            lane: 1,
        })
    );
    assert!(buf.is_empty());
}

/// A frame of a kind this version does not know, followed by an UPDATE:
/// the first decodes as unknown with its body skipped, the second as usual.
#[test]
fn a_frame_of_a_future_kind_decodes_as_unknown() {
    let mut buf = BytesMut::from(&golden("future_kind.hex")[..]);
    assert_eq!(
        frame::decode(&mut buf).unwrap(),
        Some(Message::Unknown { kind: 64 })
    );
    assert_eq!(
        frame::decode(&mut buf).unwrap(),
        Some(Message::Update(Update {
            services: vec![ad("echo", true)],
        }))
    );
    assert!(buf.is_empty());
}

/// A HELLO from a build before `instance` and `advertise` were appended:
/// read with both empty, so that gateway is one peer keyed by its ID.
#[test]
fn a_hello_from_before_instance_and_advertise_decodes_with_them_empty() {
    let mut buf = BytesMut::from(&golden("older_hello.hex")[..]);
    let Message::Hello(got) = frame::decode(&mut buf).unwrap().unwrap() else {
        panic!("not a HELLO");
    };
    assert_eq!(
        (got.name.as_str(), got.region.as_str()),
        ("gw-a", "eu-west")
    );
    assert_eq!((got.instance.as_str(), got.advertise.as_str()), ("", ""));
    assert!(buf.is_empty());
}

/// TELEMETRY from a build before reports were numbered: read with `seq` 0,
/// which the receiver takes as "compare by age alone".
#[test]
fn telemetry_from_before_report_numbers_decodes_with_seq_zero() {
    let mut buf = BytesMut::from(&golden("older_telemetry.hex")[..]);
    let Message::Telemetry(got) = frame::decode(&mut buf).unwrap().unwrap() else {
        panic!("not a TELEMETRY");
    };
    assert_eq!(got.origin.seq, 0);
    assert_eq!(got.relayed[0].seq, 0);
    assert_eq!(
        got.origin.relayable.len(),
        1,
        "the fields before seq still read"
    );
    assert!(buf.is_empty());
}
