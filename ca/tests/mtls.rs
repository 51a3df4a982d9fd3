//! Real TLS 1.3 handshakes over loopback TCP between rustls peers holding
//! strait-issued SVIDs, verified by `SvidVerifier` on both sides.

use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::ServerName;
use strait_ca::tls::{SvidVerifier, client_config, server_config};
use strait_ca::{
    CaOptions, CertificateAuthority, Identity, KeyType, Overwrite, PeerRequirement, SpiffeId,
    SvidRequest, TrustDomain,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const ALPN: &[u8] = b"strait/1";

fn issue(ca: &CertificateAuthority, id: SpiffeId) -> Identity {
    let dir = tempfile::tempdir().unwrap();
    ca.issue(&SvidRequest::new(id), KeyType::P256, SystemTime::now())
        .unwrap()
        .write_to(dir.path(), Overwrite::Never)
        .unwrap();
    Identity::load(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap()
}

fn ca(td: &str, intermediate: bool) -> CertificateAuthority {
    let mut opts = CaOptions::new(TrustDomain::parse(td).unwrap());
    opts.intermediate = intermediate;
    CertificateAuthority::create(&opts, SystemTime::now())
        .unwrap()
        .0
}

/// The readable reason behind a failed handshake, as a gateway would log it.
fn reason(e: std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => strait_ca::tls::describe_tls_error(tls),
        None => e.to_string(),
    }
}

fn gw(td: &str, region: &str, name: &str) -> SpiffeId {
    SpiffeId::gateway(&TrustDomain::parse(td).unwrap(), region, name).unwrap()
}

/// What each side concluded from one handshake attempt.
struct Outcome {
    server: Result<Vec<u8>, String>,
    client: Result<Vec<u8>, String>,
}

/// Runs one handshake: the server echoes what the client sends.
async fn handshake(
    server_id: &Identity,
    server_trust: &CertificateAuthority,
    client_id: &Identity,
    client_trust: &CertificateAuthority,
) -> Outcome {
    let td = TrustDomain::parse("example.org").unwrap();
    let server_verifier = Arc::new(SvidVerifier::new(
        server_trust.bundle().clone(),
        PeerRequirement::Gateway(td.clone()),
    ));
    let client_verifier = Arc::new(SvidVerifier::new(
        client_trust.bundle().clone(),
        PeerRequirement::GatewayInRegion(td, "us-east".into()),
    ));
    let acceptor = TlsAcceptor::from(Arc::new(
        server_config(server_id, server_verifier, &[ALPN]).unwrap(),
    ));
    let connector = TlsConnector::from(Arc::new(
        client_config(client_id, client_verifier, &[ALPN]).unwrap(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.map_err(reason)?;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN));
        let mut buf = vec![0u8; 5];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(&buf).await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(buf)
    });
    let client = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("gw.us-east.example.org").unwrap();
        let mut tls = connector.connect(name, tcp).await.map_err(reason)?;
        tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(buf)
    }
    .await;
    Outcome {
        server: server.await.unwrap(),
        client,
    }
}

#[tokio::test]
async fn mutual_tls_between_strait_svids() {
    for intermediate in [false, true] {
        let ca = ca("example.org", intermediate);
        let server = issue(&ca, gw("example.org", "us-east", "gw-1"));
        let client = issue(&ca, gw("example.org", "eu-west", "gw-2"));
        let out = handshake(&server, &ca, &client, &ca).await;
        assert_eq!(out.server.unwrap(), b"hello");
        assert_eq!(out.client.unwrap(), b"hello");
    }
}

#[tokio::test]
async fn client_from_another_ca_is_refused() {
    let ours = ca("example.org", false);
    let theirs = ca("example.org", false);
    let server = issue(&ours, gw("example.org", "us-east", "gw-1"));
    let intruder = issue(&theirs, gw("example.org", "eu-west", "gw-2"));
    let out = handshake(&server, &ours, &intruder, &ours).await;
    let err = out.server.unwrap_err();
    assert!(err.contains("unknown issuer"), "{err}");
    assert!(out.client.is_err());
}

#[tokio::test]
async fn server_of_another_trust_domain_is_refused() {
    let ours = ca("example.org", false);
    let foreign = ca("other.org", false);
    // The client trusts both roots but requires an example.org gateway.
    let mut roots = ours.bundle().roots().to_vec();
    roots.extend(foreign.bundle().roots().iter().cloned());
    let both = strait_ca::TrustBundle::from_roots(std::path::Path::new("both.pem"), roots).unwrap();
    let server = issue(&foreign, gw("other.org", "us-east", "gw-1"));
    let client = issue(&ours, gw("example.org", "eu-west", "gw-2"));
    let td = TrustDomain::parse("example.org").unwrap();
    let verifier = Arc::new(SvidVerifier::new(both, PeerRequirement::Gateway(td)));
    let connector =
        TlsConnector::from(Arc::new(client_config(&client, verifier, &[ALPN]).unwrap()));
    let acceptor = TlsAcceptor::from(Arc::new(
        server_config(
            &server,
            Arc::new(SvidVerifier::new(
                ours.bundle().clone(),
                PeerRequirement::AnyInTrustDomain(TrustDomain::parse("example.org").unwrap()),
            )),
            &[ALPN],
        )
        .unwrap(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = acceptor.accept(tcp).await;
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = connector
        .connect(ServerName::try_from("gw-1").unwrap(), tcp)
        .await
        .map(|_| ())
        .map_err(reason)
        .unwrap_err();
    assert!(err.contains("not in trust domain example.org"), "{err}");
}

#[tokio::test]
async fn workload_identity_cannot_act_as_a_gateway() {
    let ca = ca("example.org", false);
    let server = issue(&ca, gw("example.org", "us-east", "gw-1"));
    let td = TrustDomain::parse("example.org").unwrap();
    let workload = issue(&ca, SpiffeId::workload(&td, "shop", "web").unwrap());
    let out = handshake(&server, &ca, &workload, &ca).await;
    let err = out.server.unwrap_err();
    assert!(err.contains("not a gateway identity"), "{err}");
}

#[tokio::test]
async fn server_in_the_wrong_region_is_refused() {
    let ca = ca("example.org", false);
    // The client requires us-east; this server says eu-central.
    let server = issue(&ca, gw("example.org", "eu-central", "gw-1"));
    let client = issue(&ca, gw("example.org", "eu-west", "gw-2"));
    let out = handshake(&server, &ca, &client, &ca).await;
    let err = out.client.unwrap_err();
    assert!(err.contains("not a gateway of region us-east"), "{err}");
}
