//! The wire codec of ALPN `strait/1`: every message on a control or service
//! stream is a frame, a 4-byte big-endian length and a body: the message's
//! kind as a varint, then its fields (`frame/record.rs` has the encoding,
//! `frame/fields.rs` the order).
//! Frames have a hard size limit; decoding returns `Ok(None)` until a whole
//! frame has arrived, and an error (never a panic) for anything malformed,
//! which closes that stream only.
//!
//! The rule that lets the wire evolve: a record (a frame body, or a record
//! nested in one) only ever grows at its end. A reader takes the fields it
//! knows and skips the rest; a field added after version 1 is optional,
//! absent meaning its default; a kind this version does not know decodes as
//! [`Message::Unknown`]. `docs/wire.md` says which versions talk to which.

mod fields;
mod record;
mod version;

use bytes::{Buf, BufMut, BytesMut};
use serde::{Deserialize, Serialize};

use record::{Reader, Record, Writer};
pub use version::{
    CAPABILITIES, LANES, Negotiated, PROTOCOL_VERSION, SUPPORTED_VERSIONS, VersionMismatch,
    VersionRange, negotiate,
};

/// Largest frame body accepted or sent.
pub const MAX_FRAME: usize = 64 * 1024;
const LEN_PREFIX: usize = 4;

/// The kind numbers of frame bodies. A number is never reused for another
/// meaning; a new kind takes the next free one.
pub mod kind {
    pub const HELLO: u64 = 0;
    pub const UPDATE: u64 = 1;
    pub const GOAWAY: u64 = 2;
    pub const OPEN: u64 = 3;
    pub const STATUS: u64 = 4;
    pub const TELEMETRY: u64 = 5;
    pub const DENY: u64 = 6;
    /// Kinds this version knows.
    pub const KNOWN: [u64; 7] = [HELLO, UPDATE, GOAWAY, OPEN, STATUS, TELEMETRY, DENY];
}

/// Everything that travels on strait streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// First frame of a control stream, both ways.
    Hello(Hello),
    /// Exports or their health changed.
    Update(Update),
    /// The sender drains: no new streams to it.
    GoAway(GoAway),
    /// First frame of a service stream, from the importing side.
    Open(Open),
    /// The exporting side's answer to OPEN.
    Status(Status),
    /// A compact summary of the sender and of what it last heard from
    /// others, sent on the control stream every second.
    Telemetry(Telemetry),
    /// The newest deny list the sender holds, signed by the CA that issued
    /// it, on the control stream: revocations travel through any path.
    /// Older gateways skip it as an unknown kind.
    Deny(Deny),
    /// A frame of a kind this version does not know (from a newer one);
    /// its body is skipped. Encoding one sends the kind with an empty body.
    Unknown { kind: u64 },
}

impl Message {
    /// The kind number this message travels under.
    pub fn kind(&self) -> u64 {
        match self {
            Message::Hello(_) => kind::HELLO,
            Message::Update(_) => kind::UPDATE,
            Message::GoAway(_) => kind::GOAWAY,
            Message::Open(_) => kind::OPEN,
            Message::Status(_) => kind::STATUS,
            Message::Telemetry(_) => kind::TELEMETRY,
            Message::Deny(_) => kind::DENY,
            Message::Unknown { kind } => *kind,
        }
    }
}

/// What a gateway tells its peers about itself and the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Telemetry {
    /// The sender's own report (age 0).
    pub origin: GatewayReport,
    /// Reports the sender holds from other gateways, with their ages.
    pub relayed: Vec<GatewayReport>,
}

/// One gateway's summary. Ages, not timestamps: clocks differ between
/// regions, elapsed time does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayReport {
    pub gateway: String,
    pub region: String,
    /// Random per process start: a new value means the counters restarted.
    pub boot_id: u64,
    /// How old this report was when sent, in milliseconds.
    pub age_ms: u64,
    pub tunnels: Vec<TunnelReport>,
    pub services: Vec<ServiceAd>,
    /// Streams this gateway finished since it started, and how many failed.
    pub streams_total: u64,
    pub streams_failed: u64,
    /// Which gateway of those sharing `gateway` (one certificate per
    /// region) this is; empty from a gateway that does not say.
    pub instance: String,
    /// Where its peers dial it (`host:port`); empty when it does not know.
    pub advertise: String,
    /// Services it can carry on to another region for its peers: those its
    /// working tunnels offer. Empty when it does not relay.
    pub relayable: Vec<RelayRoute>,
    /// The number of this report within its gateway's boot, counting from
    /// 1; 0 from a gateway that does not say. A copy that comes back
    /// through other gateways carries the number it left with, so it is
    /// never taken for newer news than the report it repeats.
    pub seq: u64,
}

/// A service a gateway reaches in `region` and would relay to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRoute {
    pub service: String,
    pub region: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelReport {
    pub peer: String,
    pub peer_region: String,
    pub state: String,
    pub rtt_us: u64,
    /// Probe loss in thousandths.
    pub loss_permille: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol versions the sender speaks; HELLO's first fields, the
    /// same in every version, so any two can tell whether they overlap.
    pub versions: VersionRange,
    pub name: String,
    pub region: String,
    pub services: Vec<ServiceAd>,
    /// Optional features the sender offers; those both offer are agreed.
    pub capabilities: Vec<String>,
    /// Which gateway instance this is, beside its SPIFFE ID: gateways
    /// sharing one certificate differ here. Empty from older builds.
    pub instance: String,
    /// Where peers should dial the sender (`host:port`); empty when it
    /// does not know (it listens on an unspecified address).
    pub advertise: String,
    /// Which of the dialer's connections to this peer this one is (0 the
    /// first): gateways that both offer `lanes` keep several connections
    /// per peer, one per lane. 0 from older builds.
    pub lane: u16,
}

impl Hello {
    /// This build's HELLO: its versions and capabilities.
    pub fn new(name: String, region: String, services: Vec<ServiceAd>) -> Self {
        Hello {
            versions: SUPPORTED_VERSIONS,
            name,
            region,
            services,
            capabilities: CAPABILITIES.iter().map(|c| (*c).to_owned()).collect(),
            instance: String::new(),
            advertise: String::new(),
            lane: 0,
        }
    }
}

/// An exported service as advertised to peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAd {
    pub name: String,
    pub healthy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub services: Vec<ServiceAd>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoAway {
    pub reason: String,
}

/// A signed deny list, as text (see `strait_ca::signed_deny`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deny {
    pub signed_list: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    pub service: String,
    /// W3C trace context of the stream.
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// SPIFFE ID of the client workload, when it presented one.
    pub origin: Option<String>,
    /// Asks the receiver to carry the stream on to a gateway of this
    /// region that offers the service (a route through a third region);
    /// empty: serve it here.
    pub relay_to: String,
    /// On the second leg of a relayed stream: the SPIFFE ID of the gateway
    /// that relays it; empty when not relayed.
    pub relayed_by: String,
    /// On the second leg: the SPIFFE ID of the gateway the stream entered
    /// the mesh at, which export policy judges instead of the relay.
    pub origin_gateway: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub code: StatusCode,
    pub message: String,
}

/// The exporting side's verdict on an OPEN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StatusCode {
    Ok,
    NoSuchService,
    Forbidden,
    TargetUnreachable,
    Overloaded,
    Draining,
}

impl StatusCode {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusCode::Ok => "OK",
            StatusCode::NoSuchService => "NO_SUCH_SERVICE",
            StatusCode::Forbidden => "FORBIDDEN",
            StatusCode::TargetUnreachable => "TARGET_UNREACHABLE",
            StatusCode::Overloaded => "OVERLOADED",
            StatusCode::Draining => "DRAINING",
        }
    }
}

impl std::fmt::Display for StatusCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Appends `msg` as one frame.
pub fn encode(msg: &Message, dst: &mut BytesMut) -> Result<(), FrameError> {
    let mut w = Writer::default();
    w.varint(msg.kind());
    match msg {
        Message::Hello(m) => m.put(&mut w),
        Message::Update(m) => m.put(&mut w),
        Message::GoAway(m) => m.put(&mut w),
        Message::Open(m) => m.put(&mut w),
        Message::Status(m) => m.put(&mut w),
        Message::Telemetry(m) => m.put(&mut w),
        Message::Deny(m) => m.put(&mut w),
        Message::Unknown { kind } if kind::KNOWN.contains(kind) => {
            return Err(FrameError::Malformed(format!(
                "kind {kind} is known; it cannot be sent as unknown"
            )));
        }
        Message::Unknown { .. } => {}
    }
    let body = w.into_bytes();
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max: MAX_FRAME,
        });
    }
    dst.reserve(LEN_PREFIX + body.len());
    dst.put_u32(body.len() as u32);
    dst.put_slice(&body);
    Ok(())
}

/// Takes one frame off the front of `src`: `Ok(None)` while incomplete
/// (nothing consumed), the message once whole. Bytes after the frame stay
/// in `src` (on a service stream they are the client's first bytes); bytes
/// at the end of the frame body, after the fields this version knows, are
/// a newer version's and are skipped.
pub fn decode(src: &mut BytesMut) -> Result<Option<Message>, FrameError> {
    if src.len() < LEN_PREFIX {
        return Ok(None);
    }
    let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    if src.len() < LEN_PREFIX + len {
        return Ok(None);
    }
    src.advance(LEN_PREFIX);
    let body = src.split_to(len);
    decode_body(&body).map(Some)
}

fn decode_body(body: &[u8]) -> Result<Message, FrameError> {
    let mut r = Reader::new(body, "frame");
    let kind = r.varint("kind")?;
    // Whatever the record leaves unread is a newer version's and skipped.
    let msg = match kind {
        kind::HELLO => Message::Hello(Hello::take(&mut r.into_record("HELLO"))?),
        kind::UPDATE => Message::Update(Update::take(&mut r.into_record("UPDATE"))?),
        kind::GOAWAY => Message::GoAway(GoAway::take(&mut r.into_record("GOAWAY"))?),
        kind::OPEN => Message::Open(Open::take(&mut r.into_record("OPEN"))?),
        kind::STATUS => Message::Status(Status::take(&mut r.into_record("STATUS"))?),
        kind::TELEMETRY => Message::Telemetry(Telemetry::take(&mut r.into_record("TELEMETRY"))?),
        kind::DENY => Message::Deny(Deny::take(&mut r.into_record("DENY"))?),
        kind => Message::Unknown { kind },
    };
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn open() -> Message {
        Message::Open(Open {
            service: "payments".into(),
            trace_id: [7; 16],
            span_id: [9; 8],
            origin: Some("spiffe://example.org/ns/shop/sa/web".into()),
            ..Default::default()
        })
    }

    #[test]
    fn round_trip_with_trailing_bytes() {
        let mut buf = BytesMut::new();
        encode(&open(), &mut buf).unwrap();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(decode(&mut buf).unwrap(), Some(open()));
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn incomplete_input_consumes_nothing() {
        let mut full = BytesMut::new();
        encode(&open(), &mut full).unwrap();
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(decode(&mut part).unwrap(), None, "cut at {cut}");
            assert_eq!(part.len(), cut);
        }
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let mut huge = BytesMut::new();
        huge.put_u32((MAX_FRAME + 1) as u32);
        assert!(matches!(
            decode(&mut huge),
            Err(FrameError::TooLarge { .. })
        ));
        let mut garbage = BytesMut::new();
        garbage.put_u32(3);
        garbage.put_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            decode(&mut garbage),
            Err(FrameError::Malformed(_))
        ));
        let big = Message::GoAway(GoAway {
            reason: "x".repeat(MAX_FRAME),
        });
        assert!(matches!(
            encode(&big, &mut BytesMut::new()),
            Err(FrameError::TooLarge { .. })
        ));
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let ad = (".{0,20}", any::<bool>()).prop_map(|(name, healthy)| ServiceAd { name, healthy });
        prop_oneof![
            (
                (any::<u16>(), any::<u16>()),
                ".{0,30}",
                ".{0,30}",
                prop::collection::vec(ad.clone(), 0..8),
                prop::collection::vec(".{0,12}", 0..4),
                (".{0,12}", ".{0,21}", any::<u16>()),
            )
                .prop_map(
                    |(
                        (min, max),
                        name,
                        region,
                        services,
                        capabilities,
                        (instance, advertise, lane),
                    )| {
                        Message::Hello(Hello {
                            versions: VersionRange::new(min, max),
                            name,
                            region,
                            services,
                            capabilities,
                            instance,
                            advertise,
                            lane,
                        })
                    }
                ),
            prop::collection::vec(ad.clone(), 0..8)
                .prop_map(|services| Message::Update(Update { services })),
            ".{0,50}".prop_map(|reason| Message::GoAway(GoAway { reason })),
            ".{0,200}".prop_map(|signed_list| Message::Deny(Deny { signed_list })),
            (
                ".{0,40}",
                any::<[u8; 16]>(),
                any::<[u8; 8]>(),
                proptest::option::of(".{0,60}"),
                (".{0,10}", ".{0,60}", ".{0,60}"),
            )
                .prop_map(
                    |(
                        service,
                        trace_id,
                        span_id,
                        origin,
                        (relay_to, relayed_by, origin_gateway),
                    )| Message::Open(Open {
                        service,
                        trace_id,
                        span_id,
                        origin,
                        relay_to,
                        relayed_by,
                        origin_gateway,
                    })
                ),
            (0u8..6, ".{0,50}").prop_map(|(c, message)| Message::Status(Status {
                code: [
                    StatusCode::Ok,
                    StatusCode::NoSuchService,
                    StatusCode::Forbidden,
                    StatusCode::TargetUnreachable,
                    StatusCode::Overloaded,
                    StatusCode::Draining
                ][c as usize],
                message
            })),
            (
                arb_report(ad.clone()),
                prop::collection::vec(arb_report(ad), 0..3)
            )
                .prop_map(|(origin, relayed)| Message::Telemetry(Telemetry { origin, relayed })),
            (6u64..).prop_map(|kind| Message::Unknown { kind }),
        ]
    }

    fn arb_report(ad: impl Strategy<Value = ServiceAd>) -> impl Strategy<Value = GatewayReport> {
        let tunnel = (".{0,12}", ".{0,12}", ".{0,8}", any::<u64>(), any::<u16>()).prop_map(
            |(peer, peer_region, state, rtt_us, loss_permille)| TunnelReport {
                peer,
                peer_region,
                state,
                rtt_us,
                loss_permille,
            },
        );
        (
            (".{0,12}", ".{0,12}", any::<u64>(), any::<u64>()),
            prop::collection::vec(tunnel, 0..4),
            prop::collection::vec(ad, 0..4),
            (any::<u64>(), any::<u64>(), ".{0,12}", ".{0,21}"),
            prop::collection::vec(
                (".{0,8}", ".{0,8}").prop_map(|(service, region)| RelayRoute { service, region }),
                0..3,
            ),
            any::<u64>(),
        )
            .prop_map(
                |(
                    (gateway, region, boot_id, age_ms),
                    tunnels,
                    services,
                    (total, failed, instance, advertise),
                    relayable,
                    seq,
                )| {
                    GatewayReport {
                        gateway,
                        region,
                        boot_id,
                        age_ms,
                        tunnels,
                        services,
                        streams_total: total,
                        streams_failed: failed,
                        instance,
                        advertise,
                        relayable,
                        seq,
                    }
                },
            )
    }

    /// `frame` with `extra` appended inside its body, as a newer version
    /// that added fields would send it.
    fn with_appended(frame: &[u8], extra: &[u8]) -> BytesMut {
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize + extra.len();
        let mut out = BytesMut::new();
        out.put_u32(len as u32);
        out.put_slice(&frame[4..]);
        out.put_slice(extra);
        out
    }

    #[test]
    fn unknown_kinds_skip_their_body_and_the_next_frame_decodes() {
        let mut buf = BytesMut::new();
        buf.put_u32(4);
        buf.put_slice(&[0x4d, 1, 2, 3]);
        encode(&open(), &mut buf).unwrap();
        assert_eq!(
            decode(&mut buf).unwrap(),
            Some(Message::Unknown { kind: 77 })
        );
        assert_eq!(decode(&mut buf).unwrap(), Some(open()));
        assert!(buf.is_empty());
        // A known kind cannot pose as unknown; an empty body has no kind.
        let err = encode(&Message::Unknown { kind: kind::OPEN }, &mut BytesMut::new());
        assert!(matches!(err, Err(FrameError::Malformed(_))));
        let mut empty = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert!(matches!(decode(&mut empty), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn a_record_shorter_than_this_versions_fields_is_malformed() {
        let mut buf = BytesMut::new();
        encode(&open(), &mut buf).unwrap();
        // The three (empty) relay fields, then into the origin.
        let cut = buf.len() - 3 - 3;
        let mut short = BytesMut::new();
        short.put_u32((cut - 4) as u32);
        short.put_slice(&buf[4..cut]);
        let err = decode(&mut short).unwrap_err();
        assert!(err.to_string().contains("OPEN.origin"), "{err}");
    }

    /// The other direction of the extension rule: a newer reader that knows
    /// a field added after version 1 reads an older, shorter record with the
    /// field absent, and takes its default.
    #[test]
    fn a_newer_reader_reads_an_older_record_with_the_new_field_absent() {
        struct ServiceAdV2 {
            ad: ServiceAd,
            weight: Option<u64>,
        }
        impl Record for ServiceAdV2 {
            fn put(&self, w: &mut Writer) {
                self.ad.put(w);
                if let Some(weight) = self.weight {
                    w.varint(weight);
                }
            }
            fn take(r: &mut Reader<'_>) -> Result<Self, FrameError> {
                let ad = ServiceAd::take(r)?;
                let weight = if r.remaining() == 0 {
                    None
                } else {
                    Some(r.varint("weight")?)
                };
                Ok(ServiceAdV2 { ad, weight })
            }
        }
        let ad = ServiceAd {
            name: "echo".into(),
            healthy: true,
        };
        let mut old = Writer::default();
        old.record(&ad);
        let old = old.into_bytes();
        let v2: ServiceAdV2 = Reader::new(&old, "T").record("ad", "SERVICE").unwrap();
        assert_eq!((v2.ad, v2.weight), (ad.clone(), None));
        // And this version reads the newer record, skipping the weight.
        let mut new = Writer::default();
        new.record(&ServiceAdV2 {
            ad: ad.clone(),
            weight: Some(300),
        });
        let new = new.into_bytes();
        let v1: ServiceAd = Reader::new(&new, "T").record("ad", "SERVICE").unwrap();
        assert_eq!(v1, ad);
    }

    proptest! {
        #[test]
        fn any_message_round_trips(msgs in prop::collection::vec(arb_message(), 1..5)) {
            let mut buf = BytesMut::new();
            for m in &msgs {
                encode(m, &mut buf).unwrap();
            }
            for m in &msgs {
                let got = decode(&mut buf).unwrap();
                prop_assert_eq!(got.as_ref(), Some(m));
            }
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn any_message_with_appended_fields_still_decodes(
            msg in arb_message().prop_filter("unknown kinds carry no fields", |m| {
                !matches!(m, Message::Unknown { .. })
            }),
            extra in prop::collection::vec(any::<u8>(), 0..64),
            after in prop::collection::vec(any::<u8>(), 0..16),
        ) {
            let mut frame = BytesMut::new();
            encode(&msg, &mut frame).unwrap();
            let mut buf = with_appended(&frame, &extra);
            buf.extend_from_slice(&after);
            prop_assert_eq!(decode(&mut buf).unwrap(), Some(msg));
            prop_assert_eq!(&buf[..], &after[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = decode(&mut buf);
        }
    }
}

/// A probe carried in a QUIC datagram: one kind byte and a big-endian
/// sequence number. Datagrams are not frames: no length, no varints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Ping(u64),
    Pong(u64),
}

impl Probe {
    pub const LEN: usize = 9;

    pub fn encode(self) -> [u8; Probe::LEN] {
        let (kind, seq) = match self {
            Probe::Ping(s) => (0u8, s),
            Probe::Pong(s) => (1u8, s),
        };
        let mut out = [0u8; Probe::LEN];
        out[0] = kind;
        out[1..].copy_from_slice(&seq.to_be_bytes());
        out
    }

    /// `None` for anything that is not a probe (too short, or a kind this
    /// version does not know). Bytes after the sequence number are fields a
    /// newer version added, and are skipped.
    pub fn decode(bytes: &[u8]) -> Option<Probe> {
        let seq = u64::from_be_bytes(bytes.get(1..Probe::LEN)?.try_into().ok()?);
        match bytes[0] {
            0 => Some(Probe::Ping(seq)),
            1 => Some(Probe::Pong(seq)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod probe_tests {
    use super::Probe;

    #[test]
    fn probes_round_trip_and_junk_is_ignored() {
        for p in [Probe::Ping(0), Probe::Pong(u64::MAX), Probe::Ping(42)] {
            assert_eq!(Probe::decode(&p.encode()), Some(p));
        }
        assert_eq!(Probe::decode(&[2; 9]), None);
        assert_eq!(Probe::decode(&[0; 8]), None);
        assert_eq!(Probe::decode(&[]), None);
        let mut newer = Probe::Ping(7).encode().to_vec();
        newer.extend_from_slice(b"a newer field");
        assert_eq!(Probe::decode(&newer), Some(Probe::Ping(7)));
    }
}
