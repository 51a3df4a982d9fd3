//! Workload mTLS on an import: the client presents an X.509-SVID of the
//! trust domain, its SPIFFE ID travels in OPEN as the origin, and the
//! export's `allow_workloads` decides on it.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use strait_ca::tls::{SvidVerifier, client_config};
use strait_ca::{Identity, PeerRequirement, TrustBundle, TrustDomain};
use support::mesh::{GatewayProcess, GatewaySpec, TestCa, echo_server, free_tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

/// Connects as the workload whose files are in `dir` (or with no client
/// certificate when `None`), sends a request and returns the echo, or the
/// error.
async fn request(
    addr: SocketAddr,
    workload: Option<&std::path::Path>,
    bundle: &std::path::Path,
) -> Result<Vec<u8>, String> {
    let td = TrustDomain::parse("example.org").unwrap();
    let verifier = Arc::new(SvidVerifier::new(
        TrustBundle::load(bundle).unwrap(),
        PeerRequirement::Gateway(td),
    ));
    let config = match workload {
        Some(dir) => {
            let id = Identity::load(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
            client_config(&id, verifier, &[]).unwrap()
        }
        None => rustls::ClientConfig::builder_with_provider(strait_ca::tls::crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("gateway").unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
        let mut out = [0u8; 5];
        tls.read_exact(&mut out).await.map_err(|e| e.to_string())?;
        Ok(out.to_vec())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "timed out".to_string())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_travel_in_open_and_exports_decide_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let ca = TestCa::new(&d, "example.org");
    ca.gateway("eu-west", "gw-w", &d.join("gw-w"));
    ca.gateway("us-east", "gw-e", &d.join("gw-e"));
    for (name, id) in [
        ("web", "spiffe://example.org/ns/shop/sa/web"),
        ("evil", "spiffe://example.org/ns/shop/sa/evil"),
    ] {
        support::strait(
            &d,
            &format!(
                "cert issue --ca {} --spiffe-id {id} --out {}",
                ca.dir.display(),
                d.join(name).display()
            ),
        )
        .ok();
    }
    let mut west = GatewaySpec::new("gw-w", "eu-west", d.join("gw-w"));
    let mut east = GatewaySpec::new("gw-e", "us-east", d.join("gw-e"));
    east.peers.push(("eu-west".into(), west.quic));
    west.exports.push(("shop".into(), echo_server(), vec![]));
    west.service_lines.push((
        "shop".into(),
        "allow_workloads = [\"spiffe://example.org/ns/shop/sa/web\"]".into(),
    ));
    let import = free_tcp();
    east.imports.push(("shop-in".into(), import));
    // The import has its own name so that its lines stay on east's side.
    west.exports.push(("shop-in".into(), echo_server(), vec![]));
    west.service_lines.push((
        "shop-in".into(),
        "allow_workloads = [\"spiffe://example.org/ns/shop/sa/web\"]".into(),
    ));
    east.service_lines
        .push(("shop-in".into(), "mtls = true".into()));
    let (w, e) = tokio::task::spawn_blocking(move || {
        let w = GatewayProcess::start(&d, &west);
        let e = GatewayProcess::start(&d, &east);
        e.wait_for_service("shop-in");
        (w, e)
    })
    .await
    .unwrap();
    let d = dir.path();
    let bundle = d.join("web/bundle.pem");
    assert_eq!(
        request(import, Some(&d.join("web")), &bundle)
            .await
            .unwrap(),
        b"hello"
    );
    let evil = request(import, Some(&d.join("evil")), &bundle).await;
    assert!(
        evil.is_err(),
        "a workload outside allow_workloads got through: {evil:?}"
    );
    let anonymous = request(import, None, &bundle).await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate got through"
    );
    let wl = w.log_text();
    assert!(
        wl.lines().any(|l| l.contains("stream open (export)")
            && l.contains("origin=\"spiffe://example.org/ns/shop/sa/web\"")),
        "{wl}"
    );
    assert!(
        wl.lines().any(|l| l.contains("stream refused")
            && l.contains("origin=\"spiffe://example.org/ns/shop/sa/evil\"")),
        "{wl}"
    );
    // Logged by the gateway once the handshake failed on its side, which
    // may be after the client gave up.
    e.wait_for_log("workload refused");
}

/// OpenSSL-based clients (curl, `openssl s_client`) parse the
/// CertificateRequest's CA names, which rustls clients ignore: each must
/// get through an mTLS import with a workload certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_openssl_pass_an_mtls_import() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let (ca, mut west, mut east) = support::mesh::west_east(&d);
    support::strait(
        &d,
        &format!(
            "cert issue --ca {} --spiffe-id spiffe://example.org/ns/shop/sa/web --out wl",
            ca.dir.display()
        ),
    )
    .ok();
    west.exports.push((
        "web".into(),
        support::mesh::http_server("hello from web"),
        vec![],
    ));
    let import = free_tcp();
    east.imports.push(("web".into(), import));
    east.service_lines
        .push(("web".into(), "mtls = true".into()));
    let gateways = tokio::task::spawn_blocking(move || {
        let w = GatewayProcess::start(&d, &west);
        let e = GatewayProcess::start(&d, &east);
        e.wait_for_service("web");
        (w, e)
    })
    .await
    .unwrap();
    let d = dir.path();
    let curl = support::run(
        d,
        &format!("curl -sS -k --max-time 10 --cert wl/cert.pem --key wl/key.pem https://{import}/"),
    );
    assert_eq!(
        curl.stdout,
        "hello from web",
        "{curl:?}\n{}",
        gateways.1.log_text()
    );

    let mut s_client = std::process::Command::new("openssl")
        .args(["s_client", "-ign_eof", "-connect", &import.to_string()])
        .args(["-cert", "wl/cert.pem", "-key", "wl/key.pem"])
        .args(["-CAfile", "wl/bundle.pem"])
        .current_dir(d)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run openssl (is it installed?)");
    use std::io::Write as _;
    s_client
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .unwrap();
    let out: support::Run = s_client.wait_with_output().unwrap().into();
    assert!(
        out.stdout.contains("hello from web"),
        "{out:?}\n{}",
        gateways.1.log_text()
    );
}

/// The certificate an mTLS import presents to a workload (its leaf, DER).
async fn presented_leaf(addr: SocketAddr, workload: &std::path::Path) -> Vec<u8> {
    let td = TrustDomain::parse("example.org").unwrap();
    let verifier = Arc::new(SvidVerifier::new(
        TrustBundle::load(&workload.join("bundle.pem")).unwrap(),
        PeerRequirement::Gateway(td),
    ));
    let id = Identity::load(&workload.join("cert.pem"), &workload.join("key.pem")).unwrap();
    let config = client_config(&id, verifier, &[]).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("gateway").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A renewed (or reloaded) gateway certificate is what an mTLS import
/// presents from then on: the import's listener used to keep the
/// certificate the gateway started with, and workloads were refused with
/// "certificate expired" once it ran out (found by the fault soak, whose
/// certificates live 45 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_import_presents_the_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let (ca, mut west, mut east) = support::mesh::west_east(&d);
    support::strait(
        &d,
        &format!(
            "cert issue --ca {} --spiffe-id spiffe://example.org/ns/shop/sa/web --out wl",
            ca.dir.display()
        ),
    )
    .ok();
    west.exports.push(("web".into(), echo_server(), vec![]));
    let import = free_tcp();
    east.imports.push(("web".into(), import));
    east.service_lines
        .push(("web".into(), "mtls = true".into()));
    let east_identity = east.identity.clone();
    let (_w, e) = tokio::task::spawn_blocking({
        let d = d.clone();
        move || {
            let w = GatewayProcess::start(&d, &west);
            let e = GatewayProcess::start(&d, &east);
            e.wait_for_service("web");
            (w, e)
        }
    })
    .await
    .unwrap();
    let before = presented_leaf(import, &d.join("wl")).await;
    support::strait(
        &d,
        &format!(
            "cert issue --ca {} --gateway --region us-east --name gw-e --force --out {}",
            ca.dir.display(),
            east_identity.display()
        ),
    )
    .ok();
    let e = tokio::task::spawn_blocking(move || {
        e.wait_for_log("identity reloaded");
        e
    })
    .await
    .unwrap();
    let renewed = pem::parse(std::fs::read(east_identity.join("cert.pem")).unwrap()).unwrap();
    let after = presented_leaf(import, &d.join("wl")).await;
    assert_ne!(
        after, before,
        "the import still presents the old certificate"
    );
    assert_eq!(
        after,
        renewed.contents(),
        "the import presents the certificate in force:\n{}",
        e.log_text()
    );
    assert_eq!(
        request(import, Some(&d.join("wl")), &d.join("wl/bundle.pem"))
            .await
            .unwrap(),
        b"hello"
    );
}
