//! `strait ca serve`: the CA as a network service.
//!
//! It signs CSRs for gateways that present a join token (first
//! certificate) or their own still-valid certificate (renewal), and hands
//! out the trust bundle and deny list. It speaks QUIC with mutual TLS, ALPN
//! `strait-ca/1`, rather than HTTPS: it reuses the gateways' own stack
//! (quinn, rustls and the SPIFFE verifier) with no HTTP server to add, a
//! firewall that lets the tunnels' UDP port through lets this through the
//! same way, and netsim's UDP relays can cut it in tests exactly like a
//! tunnel. Client certificates are optional at the TLS layer (a joining
//! gateway has none yet); each request then says what it needs.
//!
//! Token records, the bundle and the deny list are read from the CA
//! directory on every request, so `strait token create` and `strait ca
//! revoke` take effect without a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::CertificateDer;
use strait_ca::tls::SvidVerifier;
use strait_ca::{
    CertificateAuthority, DenyList, PeerRequirement, PeerRole, SpiffeId, SvidRequest, TokenStore,
    TrustBundle, TrustDomain,
};
use strait_core::enroll::{CA_ALPN, CaRequest, CaResponse, MAX_CA_MESSAGE};

use crate::EnrollError;

/// The path of the CA service's own SPIFFE ID in the trust domain.
pub const SERVICE_ID_PATH: &str = "/strait/ca";
/// Lifetime of the CA service's own certificate; it is replaced at half.
const SERVICE_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long one request may take to arrive.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The CA service's SPIFFE ID: `spiffe://<td>/strait/ca`.
pub fn service_id(td: &TrustDomain) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://{td}{SERVICE_ID_PATH}")).expect("a valid static path")
}

#[derive(Debug, Clone)]
pub struct CaServiceOptions {
    /// The CA directory (`strait ca init`).
    pub dir: PathBuf,
    pub listen: SocketAddr,
    /// Lifetime of the certificates it issues.
    pub validity: Duration,
}

struct CaService {
    ca: CertificateAuthority,
    dir: PathBuf,
    tokens: TokenStore,
    validity: Duration,
    /// Serialises token use so that a use count is never spent twice.
    token_lock: tokio::sync::Mutex<()>,
}

/// A CA service accepting connections.
pub struct RunningCaService {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningCaService {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes connections and waits for them to go.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.endpoint.close(0u32.into(), b"shutting down");
        self.endpoint.wait_idle().await;
    }
}

/// Loads the CA and starts serving it.
pub async fn serve(opts: CaServiceOptions) -> Result<RunningCaService, EnrollError> {
    let ca = CertificateAuthority::load(&opts.dir)?;
    let config = server_config(&ca, SystemTime::now())?;
    let endpoint =
        quinn::Endpoint::server(config, opts.listen).map_err(|source| EnrollError::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = endpoint.local_addr().unwrap_or(opts.listen);
    let service = Arc::new(CaService {
        tokens: TokenStore::new(&opts.dir),
        dir: opts.dir.clone(),
        validity: opts.validity,
        ca,
        token_lock: tokio::sync::Mutex::new(()),
    });
    tracing::info!(%addr, id = %service_id(service.ca.trust_domain()), "CA service listening");
    let accept = tokio::spawn(accept_loop(endpoint.clone(), service.clone()));
    let refresh = tokio::spawn(refresh_own_certificate(endpoint.clone(), service));
    Ok(RunningCaService {
        endpoint,
        addr,
        tasks: vec![accept, refresh],
    })
}

/// A server config with a fresh certificate for the service itself; the
/// chain it sends ends in the root, so a joining gateway can find the root
/// its token pins.
fn server_config(
    ca: &CertificateAuthority,
    now: SystemTime,
) -> Result<quinn::ServerConfig, EnrollError> {
    let mut req = SvidRequest::new(service_id(ca.trust_domain()));
    let left = ca.not_after().duration_since(now).unwrap_or_default();
    req.ttl = SERVICE_CERT_TTL.min(left);
    let issued = ca.issue(&req, strait_ca::KeyType::P256, now)?;
    let mut chain = issued.chain.clone();
    chain.push(ca.root().clone());
    let key_pem = issued.key_pem.as_deref().unwrap_or_default();
    let chain_pem = strait_ca::files::certificates_to_pem(&chain);
    let identity = strait_ca::Identity::from_pem(
        &chain_pem,
        key_pem,
        Path::new("CA service certificate"),
        Path::new("CA service key"),
    )?;
    let verifier = Arc::new(
        SvidVerifier::new(
            ca.bundle().clone(),
            PeerRequirement::Gateway(ca.trust_domain().clone()),
        )
        .client_auth_optional(),
    );
    let tls = strait_ca::tls::server_config(&identity, verifier, &[CA_ALPN])?;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| EnrollError::Quic {
        side: "the CA service",
        reason: e.to_string(),
    })?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(8u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(30)).expect("small timeout"),
    ));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

async fn refresh_own_certificate(endpoint: quinn::Endpoint, service: Arc<CaService>) {
    loop {
        tokio::time::sleep(SERVICE_CERT_TTL / 2).await;
        match server_config(&service.ca, SystemTime::now()) {
            Ok(config) => endpoint.set_server_config(Some(config)),
            Err(e) => tracing::error!("cannot renew the CA service's own certificate: {e}"),
        }
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, service: Arc<CaService>) {
    while let Some(incoming) = endpoint.accept().await {
        let service = service.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%remote, "CA service handshake failed: {e}");
                    return;
                }
            };
            let chain = conn.peer_identity().and_then(strait_ca::tls::peer_chain);
            while let Ok((send, recv)) = conn.accept_bi().await {
                let service = service.clone();
                let chain = chain.clone();
                tokio::spawn(async move {
                    service.answer(send, recv, chain.as_deref(), remote).await;
                });
            }
        });
    }
}

impl CaService {
    async fn answer(
        &self,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        chain: Option<&[CertificateDer<'static>]>,
        remote: SocketAddr,
    ) {
        let request =
            match tokio::time::timeout(REQUEST_TIMEOUT, recv.read_to_end(MAX_CA_MESSAGE)).await {
                Ok(Ok(bytes)) => {
                    strait_core::enroll::decode::<CaRequest>(&bytes).map_err(|e| e.to_string())
                }
                Ok(Err(e)) => Err(format!("reading the request: {e}")),
                Err(_) => Err(format!("no complete request within {REQUEST_TIMEOUT:?}")),
            };
        let response = match request {
            Ok(req) => self.handle(req, chain, remote).await,
            Err(reason) => refuse(remote, "request", reason),
        };
        match strait_core::enroll::encode(&response) {
            Ok(bytes) => {
                let _ = send.write_all(&bytes).await;
                let _ = send.finish();
                let _ = send.stopped().await;
            }
            Err(e) => tracing::error!(%remote, "cannot encode the CA service's answer: {e}"),
        }
    }

    async fn handle(
        &self,
        req: CaRequest,
        chain: Option<&[CertificateDer<'static>]>,
        remote: SocketAddr,
    ) -> CaResponse {
        let now = SystemTime::now();
        let (bundle_pem, deny, deny_text) = match self.bundle_and_deny() {
            Ok(b) => b,
            Err(e) => return refuse(remote, "any", format!("the CA cannot read its files: {e}")),
        };
        match req {
            CaRequest::Join {
                token_id,
                secret,
                name,
                region,
                csr_pem,
            } => {
                let _guard = self.token_lock.lock().await;
                let (record, id) = match self.tokens.check(
                    &token_id,
                    &secret,
                    region.as_deref(),
                    &name,
                    self.ca.trust_domain(),
                    now,
                ) {
                    Ok(r) => r,
                    Err(e) => return refuse(remote, "join", e.to_string()),
                };
                if let Some(entry) = deny.denies(&id, None) {
                    return refuse(remote, "join", format!("{id} is revoked (`{entry}`)"));
                }
                let issued = match self.sign(&csr_pem, id.clone(), now) {
                    Ok(i) => i,
                    Err(e) => return refuse(remote, "join", e),
                };
                if let Err(e) = self.tokens.consume(&record.id) {
                    return refuse(
                        remote,
                        "join",
                        format!("cannot record the token's use: {e}"),
                    );
                }
                tracing::info!(%remote, %id, token = %record.id, uses_left = record.uses_left.saturating_sub(1),
                    not_after = %strait_ca::time::rfc3339(issued.not_after), "joined: certificate issued");
                CaResponse::Issued {
                    chain_pem: issued.chain_pem(),
                    bundle_pem,
                    deny: deny_text.clone(),
                }
            }
            CaRequest::Renew { csr_pem } => {
                let id = match self.authenticate(chain, &deny, now) {
                    Ok(id) => id,
                    Err(e) => return refuse(remote, "renew", e),
                };
                let issued = match self.sign(&csr_pem, id.clone(), now) {
                    Ok(i) => i,
                    Err(e) => return refuse(remote, "renew", e),
                };
                tracing::info!(%remote, %id, not_after = %strait_ca::time::rfc3339(issued.not_after), "renewed");
                CaResponse::Issued {
                    chain_pem: issued.chain_pem(),
                    bundle_pem,
                    deny: deny_text.clone(),
                }
            }
            CaRequest::Bundle => match self.authenticate(chain, &deny, now) {
                Ok(_) => CaResponse::Bundle {
                    bundle_pem,
                    deny: deny_text.clone(),
                },
                Err(e) => refuse(remote, "bundle", e),
            },
        }
    }

    /// The bundle, the deny list, and the deny list's text as the CA
    /// wrote it: a signed list must reach gateways with its signature, so
    /// they can pass it on to each other.
    fn bundle_and_deny(&self) -> Result<(String, DenyList, String), strait_ca::CaError> {
        let bundle_path = self.dir.join(strait_ca::CA_BUNDLE);
        let bundle = if bundle_path.exists() {
            TrustBundle::load(&bundle_path)?
        } else {
            self.ca.bundle().clone()
        };
        let deny_path = self.dir.join(strait_ca::DENY_FILE);
        let deny = DenyList::load(&deny_path)?;
        let text = std::fs::read_to_string(&deny_path).unwrap_or_else(|_| deny.to_text());
        Ok((bundle.to_pem(), deny, text))
    }

    /// Who the connection's client certificate says it is: a gateway of
    /// the trust domain, valid now, not revoked.
    fn authenticate(
        &self,
        chain: Option<&[CertificateDer<'static>]>,
        deny: &DenyList,
        now: SystemTime,
    ) -> Result<SpiffeId, String> {
        let chain = chain.ok_or("this request needs the gateway's current certificate (mutual TLS); a gateway without one joins with a token")?;
        let id = strait_ca::verify_chain(
            chain,
            self.ca.bundle(),
            &PeerRequirement::Gateway(self.ca.trust_domain().clone()),
            PeerRole::Client,
            now,
        )
        .map_err(|e| e.to_string())?;
        if let Some(entry) = chain
            .first()
            .and_then(|leaf| deny.denies_certificate(&id, leaf))
        {
            return Err(format!("{id} is revoked (deny list entry `{entry}`)"));
        }
        Ok(id)
    }

    fn sign(
        &self,
        csr_pem: &str,
        id: SpiffeId,
        now: SystemTime,
    ) -> Result<strait_ca::IssuedSvid, String> {
        let mut req = SvidRequest::new(id);
        let left = self.ca.not_after().duration_since(now).unwrap_or_default();
        req.ttl = self.validity.min(left);
        self.ca
            .sign_csr(csr_pem, Path::new("the request's CSR"), &req, now)
            .map_err(|e| e.to_string())
    }
}

fn refuse(remote: SocketAddr, kind: &'static str, reason: String) -> CaResponse {
    tracing::warn!(%remote, request = kind, "CA service refused: {reason}");
    CaResponse::Refused { reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_ca::{CaOptions, Identity, IdentityPaths, KeyType};

    async fn service() -> (tempfile::TempDir, CertificateAuthority, RunningCaService) {
        let dir = tempfile::tempdir().unwrap();
        let td = TrustDomain::parse("example.org").unwrap();
        let ca = CertificateAuthority::init(
            &dir.path().join("ca"),
            &CaOptions::new(td),
            SystemTime::now(),
        )
        .unwrap();
        let running = serve(CaServiceOptions {
            dir: dir.path().join("ca"),
            listen: "127.0.0.1:0".parse().unwrap(),
            validity: Duration::from_secs(3600),
        })
        .await
        .unwrap();
        (dir, ca, running)
    }

    /// Sends raw bytes to the service without a client certificate.
    async fn raw(ca: &CertificateAuthority, addr: SocketAddr, bytes: &[u8]) -> CaResponse {
        let verifier = Arc::new(strait_ca::tls::PinnedRootVerifier::new(
            strait_ca::root_pin(ca.root()),
            PeerRequirement::Exactly(service_id(ca.trust_domain())),
        ));
        let tls = strait_ca::tls::anonymous_client_config(verifier, &[CA_ALPN]).unwrap();
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let conn = endpoint
            .connect_with(quinn::ClientConfig::new(Arc::new(crypto)), addr, "ca")
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(bytes).await.unwrap();
        send.finish().unwrap();
        let answer = recv.read_to_end(MAX_CA_MESSAGE).await.unwrap();
        strait_core::enroll::decode(&answer).unwrap()
    }

    fn refusal(answer: CaResponse) -> String {
        match answer {
            CaResponse::Refused { reason } => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn garbage_and_unauthenticated_requests_are_refused_and_the_service_goes_on() {
        let (_dir, ca, running) = service().await;
        let addr = running.local_addr();
        let reason = refusal(raw(&ca, addr, &[0xff; 40]).await);
        assert!(reason.contains("malformed CA service message"), "{reason}");
        let renew = strait_core::enroll::encode(&CaRequest::Renew {
            csr_pem: "x".into(),
        })
        .unwrap();
        let reason = refusal(raw(&ca, addr, &renew).await);
        assert!(
            reason.contains("needs the gateway's current certificate"),
            "{reason}"
        );
        let bundle = strait_core::enroll::encode(&CaRequest::Bundle).unwrap();
        let reason = refusal(raw(&ca, addr, &bundle).await);
        assert!(
            reason.contains("needs the gateway's current certificate"),
            "{reason}"
        );
        // Still serving: a proper join with a garbage token is answered.
        let join = strait_core::enroll::encode(&CaRequest::Join {
            token_id: "00ff".into(),
            secret: "00".into(),
            name: "gw-1".into(),
            region: None,
            csr_pem: "x".into(),
        })
        .unwrap();
        let reason = refusal(raw(&ca, addr, &join).await);
        assert!(reason.contains("unknown join token 00ff"), "{reason}");
        running.shutdown().await;
    }

    #[tokio::test]
    async fn a_workload_certificate_cannot_renew() {
        let (dir, ca, running) = service().await;
        let id = SpiffeId::parse("spiffe://example.org/ns/shop/sa/web").unwrap();
        let issued = ca
            .issue(&SvidRequest::new(id), KeyType::P256, SystemTime::now())
            .unwrap();
        let out = dir.path().join("web");
        issued.write_to(&out, strait_ca::Overwrite::Never).unwrap();
        let paths = IdentityPaths::in_dir(&out);
        let identity = Identity::load(&paths.cert, &paths.key).unwrap();
        let bundle = TrustBundle::load(&paths.bundle).unwrap();
        let err = crate::client::renew(&running.local_addr().to_string(), &identity, &bundle)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("refused: TLS handshake failed"), "{err}");
        running.shutdown().await;
    }
}
