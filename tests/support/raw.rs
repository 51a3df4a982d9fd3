//! A hand-rolled peer for tests that speak strait/1 themselves: a QUIC
//! client presenting a gateway certificate of the test CA, and frame
//! reading on its streams.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use quinn::crypto::rustls::QuicClientConfig;
use strait_ca::tls::{SvidVerifier, client_config};
use strait_ca::{Identity, PeerRequirement, TrustBundle, TrustDomain};
use strait_core::frame::{self, Message};

/// The ALPN identifier, spelled out: what goes on the wire is pinned here.
pub const ALPN: &[u8] = b"strait/1";

/// A CA of example.org with certificates for `gw-a` (eu-west) in `d/gw-a`
/// and `gw-raw` (us-east) in `d/gw-raw`.
pub fn certificates(d: &Path) {
    let ca = super::mesh::TestCa::new(d, "example.org");
    ca.gateway("eu-west", "gw-a", &d.join("gw-a"));
    ca.gateway("us-east", "gw-raw", &d.join("gw-raw"));
}

/// The gateway identity in `d/gw-raw`, and a verifier that accepts any
/// gateway of example.org.
fn raw_identity(d: &Path) -> (Identity, Arc<SvidVerifier>) {
    let identity = Identity::load(&d.join("gw-raw/cert.pem"), &d.join("gw-raw/key.pem")).unwrap();
    let bundle = TrustBundle::load(&d.join("gw-raw/bundle.pem")).unwrap();
    let td = TrustDomain::parse("example.org").unwrap();
    let verifier = Arc::new(SvidVerifier::new(bundle, PeerRequirement::Gateway(td)));
    (identity, verifier)
}

/// A QUIC server endpoint on loopback that presents `d/gw-raw`, with
/// `transport` (for peers that misbehave on purpose).
pub fn raw_server(d: &Path, transport: quinn::TransportConfig) -> quinn::Endpoint {
    use quinn::crypto::rustls::QuicServerConfig;
    let (identity, verifier) = raw_identity(d);
    let tls = strait_ca::tls::server_config(&identity, verifier, &[ALPN]).unwrap();
    let mut server =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).unwrap()));
    server.transport_config(Arc::new(transport));
    quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap()
}

/// A QUIC client endpoint that presents the gateway identity in
/// `d/gw-raw` and accepts any gateway of example.org.
pub fn raw_endpoint(d: &Path) -> quinn::Endpoint {
    let (identity, verifier) = raw_identity(d);
    let tls = client_config(&identity, verifier, &[ALPN]).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls).unwrap(),
    )));
    endpoint
}

/// `msg` as one frame.
pub fn encode(msg: &Message) -> BytesMut {
    let mut b = BytesMut::new();
    frame::encode(msg, &mut b).unwrap();
    b
}

/// `msg` as a newer version would send it: `extra` appended inside the
/// frame body, as fields this version does not know.
pub fn encode_with_appended(msg: &Message, extra: &[u8]) -> BytesMut {
    let frame = encode(msg);
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize + extra.len();
    let mut out = BytesMut::from(&(len as u32).to_be_bytes()[..]);
    out.extend_from_slice(&frame[4..]);
    out.extend_from_slice(extra);
    out
}

/// Reads one frame from `recv` (up to 10 s), buffering in `buf`.
pub async fn read_message(recv: &mut quinn::RecvStream, buf: &mut BytesMut) -> Message {
    let read = async {
        loop {
            if let Some(m) = frame::decode(buf).unwrap() {
                return m;
            }
            let mut chunk = [0u8; 1024];
            let n = recv
                .read(&mut chunk)
                .await
                .unwrap()
                .expect("stream ended before a frame");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no frame within 10 s")
}

/// A gateway `gw-a` of eu-west exporting `echo`, and a certificate for
/// `gw-raw` (us-east) in `d/gw-raw` for [`raw_endpoint`].
pub fn echo_gateway(
    d: &std::path::Path,
) -> (super::mesh::GatewaySpec, super::mesh::GatewayProcess) {
    use super::mesh::{GatewayProcess, GatewaySpec, echo_server};
    certificates(d);
    let mut spec = GatewaySpec::new("gw-a", "eu-west", d.join("gw-a"));
    spec.exports.push(("echo".into(), echo_server(), vec![]));
    let gw = GatewayProcess::start(d, &spec);
    (spec, gw)
}
