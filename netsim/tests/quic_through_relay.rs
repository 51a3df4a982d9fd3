//! A real quinn connection, mutually authenticated with strait-issued
//! SVIDs, through a UDP relay at 80 ms RTT with 1% loss each way: the
//! transfer must arrive byte-exact.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use strait_ca::tls::{SvidVerifier, client_config, server_config};
use strait_ca::{
    CaOptions, CertificateAuthority, Identity, KeyType, Overwrite, PeerRequirement, SpiffeId,
    SvidRequest, TrustDomain,
};
use strait_netsim::{LinkConfig, Network, UdpRelay};

const ALPN: &[u8] = b"strait/1";
const SIZE: usize = 2 << 20;

fn identity(ca: &CertificateAuthority, name: &str, dir: &std::path::Path) -> Identity {
    let id = SpiffeId::gateway(ca.trust_domain(), "test", name).unwrap();
    let out = dir.join(name);
    ca.issue(&SvidRequest::new(id), KeyType::P256, SystemTime::now())
        .unwrap()
        .write_to(&out, Overwrite::Never)
        .unwrap();
    Identity::load(&out.join("cert.pem"), &out.join("key.pem")).unwrap()
}

fn payload() -> Vec<u8> {
    // Deterministic and position-dependent, so a reordered or repeated
    // chunk cannot go unnoticed.
    (0..SIZE as u64)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

#[tokio::test]
async fn quic_transfer_is_byte_exact_at_80ms_rtt_and_1_percent_loss() {
    let dir = tempfile::tempdir().unwrap();
    let td = TrustDomain::parse("example.org").unwrap();
    let (ca, _) =
        CertificateAuthority::create(&CaOptions::new(td.clone()), SystemTime::now()).unwrap();
    let verifier = Arc::new(SvidVerifier::new(
        ca.bundle().clone(),
        PeerRequirement::Gateway(td),
    ));

    let server_tls = server_config(
        &identity(&ca, "server", dir.path()),
        verifier.clone(),
        &[ALPN],
    )
    .unwrap();
    let server_cfg =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server_tls).unwrap()));
    let server = quinn::Endpoint::server(server_cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let server_addr = server.local_addr().unwrap();

    let regions = ["a", "b"].map(String::from);
    let net = Network::new(&regions, 42, |_, _| LinkConfig {
        latency: Duration::from_millis(40),
        loss: 0.01,
        ..Default::default()
    });
    let relay = UdpRelay::bind(
        "127.0.0.1:0".parse().unwrap(),
        server_addr,
        net.link("a", "b").unwrap(),
        net.link("b", "a").unwrap(),
    )
    .await
    .unwrap();

    let expected = payload();
    let server_task = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let mut recv = conn.accept_uni().await.unwrap();
        let got = recv.read_to_end(SIZE + 1).await.unwrap();
        conn.close(0u32.into(), b"done");
        server.wait_idle().await;
        got
    });

    let client_tls =
        client_config(&identity(&ca, "client", dir.path()), verifier, &[ALPN]).unwrap();
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse::<SocketAddr>().unwrap()).unwrap();
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(client_tls).unwrap(),
    )));
    let transfer = async {
        let conn = client
            .connect(relay.local_addr(), "server")
            .unwrap()
            .await
            .unwrap();
        let mut send = conn.open_uni().await.unwrap();
        send.write_all(&expected).await.unwrap();
        send.finish().unwrap();
        server_task.await.unwrap()
    };
    let got = tokio::time::timeout(Duration::from_secs(120), transfer)
        .await
        .expect("transfer stalled");
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "payload differs");

    let report = net.report();
    let lost: u64 = report.iter().map(|l| l.stats.dropped_loss).sum();
    assert!(
        lost > 0,
        "1% loss over thousands of packets dropped nothing: {report:?}"
    );
}
