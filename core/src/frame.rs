//! The wire codec of ALPN `strait/1`: every message on a control or service
//! stream is a frame, a 4-byte big-endian length and a postcard-encoded
//! [`Message`]. Frames have a hard size limit; decoding returns `Ok(None)`
//! until a whole frame has arrived, and an error (never a panic) for
//! anything malformed, which closes that stream only.

use bytes::{Buf, BufMut, BytesMut};
use serde::{Deserialize, Serialize};

/// Version carried in HELLO; bumped with incompatible changes.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest frame body accepted or sent.
pub const MAX_FRAME: usize = 64 * 1024;
const LEN_PREFIX: usize = 4;

/// Everything that travels on strait streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    pub version: u16,
    pub name: String,
    pub region: String,
    pub services: Vec<ServiceAd>,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    pub service: String,
    /// W3C trace context of the stream.
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// SPIFFE ID of the client workload, when it presented one.
    pub origin: Option<String>,
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
    let body = postcard::to_allocvec(msg).map_err(|e| FrameError::Malformed(e.to_string()))?;
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
/// in `src` (on a service stream they are the client's first bytes).
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
    let (msg, rest) = postcard::take_from_bytes::<Message>(&body)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} bytes after the message",
            rest.len()
        )));
    }
    Ok(Some(msg))
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
                any::<u16>(),
                ".{0,30}",
                ".{0,30}",
                prop::collection::vec(ad.clone(), 0..8)
            )
                .prop_map(|(version, name, region, services)| Message::Hello(Hello {
                    version,
                    name,
                    region,
                    services
                })),
            prop::collection::vec(ad, 0..8)
                .prop_map(|services| Message::Update(Update { services })),
            ".{0,50}".prop_map(|reason| Message::GoAway(GoAway { reason })),
            (
                ".{0,40}",
                any::<[u8; 16]>(),
                any::<[u8; 8]>(),
                proptest::option::of(".{0,60}")
            )
                .prop_map(|(service, trace_id, span_id, origin)| Message::Open(Open {
                    service,
                    trace_id,
                    span_id,
                    origin
                })),
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
        ]
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
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = decode(&mut buf);
        }
    }
}

/// A probe carried in a QUIC datagram: one kind byte and a sequence number.
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

    /// `None` for anything that is not exactly a probe.
    pub fn decode(bytes: &[u8]) -> Option<Probe> {
        if bytes.len() != Probe::LEN {
            return None;
        }
        let seq = u64::from_be_bytes(bytes[1..].try_into().ok()?);
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
    }
}
