//! The CA service's client side: joining with a token, renewing with the
//! certificate in hand, and fetching the trust bundle and deny list.
//!
//! Every answer is checked before anything is written: the new chain must
//! name the identity asked for, carry the key made here, and verify against
//! the bundle that comes with it; on a join, that bundle must hold the root
//! the token pins.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use quinn::crypto::rustls::QuicClientConfig;
use strait_ca::tls::{PinnedRootVerifier, SvidVerifier};
use strait_ca::{
    DenyList, Identity, IdentityPaths, JoinToken, KeyType, Overwrite, PeerRequirement, PeerRole,
    SpiffeId, TrustBundle, TrustDomain,
};
use strait_core::enroll::{CA_ALPN, CaRequest, CaResponse, MAX_CA_MESSAGE};

use crate::EnrollError;
use crate::service::service_id;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate the CA service issued, with the key made for it here.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub identity: Identity,
    pub key_pem: String,
    pub chain_pem: String,
    pub bundle_pem: String,
    pub deny: String,
}

impl Enrolled {
    /// Writes key (0600), certificate, bundle and deny list. Each file is
    /// replaced atomically; with [`Overwrite::Never`] nothing is written if
    /// any exists.
    pub fn write(&self, paths: &IdentityPaths, overwrite: Overwrite) -> Result<(), EnrollError> {
        use strait_ca::files::{KEY_MODE, Output, PUBLIC_MODE, write_set};
        if let Some(dir) = paths.cert.parent() {
            strait_ca::files::create_dir(dir)?;
        }
        let out = |path: &Path, contents: &str, mode| Output {
            path: path.to_owned(),
            contents: contents.to_owned(),
            mode,
        };
        write_set(
            &[
                out(&paths.key, &self.key_pem, KEY_MODE),
                out(&paths.cert, &self.chain_pem, PUBLIC_MODE),
                out(&paths.bundle, &self.bundle_pem, PUBLIC_MODE),
                out(&paths.deny, &self.deny, PUBLIC_MODE),
            ],
            overwrite,
        )?;
        Ok(())
    }
}

/// Joins the mesh: makes a key, sends a CSR paid for with `token` for
/// gateway `name` (in the token's region unless `region` says otherwise)
/// and returns the checked result. The CA is reached at the token's
/// addresses in order; its chain must end in the root the token pins.
pub async fn join(
    token: &JoinToken,
    name: &str,
    region: Option<&str>,
) -> Result<Enrolled, EnrollError> {
    let td = TrustDomain::parse(&token.trust_domain)
        .map_err(|rule| strait_ca::TokenRefusal::Malformed(format!("trust domain: {rule}")))?;
    let want_region = region.unwrap_or(&token.region);
    let id = strait_ca::gateway_id(&td, want_region, name).map_err(|reason| {
        strait_ca::TokenRefusal::BadName {
            name: name.to_owned(),
            reason,
        }
    })?;
    let (key_pem, csr_pem) = strait_ca::generate_csr(&id, KeyType::P256)?;
    let verifier = Arc::new(PinnedRootVerifier::new(
        token.root_sha256.clone(),
        PeerRequirement::Exactly(service_id(&td)),
    ));
    let tls = strait_ca::tls::anonymous_client_config(verifier, &[CA_ALPN])?;
    let req = CaRequest::Join {
        token_id: token.id.clone(),
        secret: token.secret.clone(),
        name: name.to_owned(),
        region: region.map(str::to_owned),
        csr_pem,
    };
    let mut last = None;
    for addr in &token.ca {
        match request(addr, client_config(tls.clone())?, &req).await {
            Ok(answer) => {
                return issued(addr, answer, &id, key_pem.clone(), Some(&token.root_sha256));
            }
            Err(e @ EnrollError::Refused { .. }) => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| EnrollError::Unreachable {
        addr: String::new(),
        reason: "the token names no address".into(),
    }))
}

/// Renews `current` through the CA service at `ca`, with a new key; the
/// service must chain to `bundle`.
pub async fn renew(
    ca: &str,
    current: &Identity,
    bundle: &TrustBundle,
) -> Result<Enrolled, EnrollError> {
    let (key_pem, csr_pem) = strait_ca::generate_csr(&current.id, KeyType::P256)?;
    let config = authenticated(current, bundle)?;
    let answer = request(ca, config, &CaRequest::Renew { csr_pem }).await?;
    issued(ca, answer, &current.id, key_pem, None)
}

/// The CA's current bundle and deny list (PEM, text), asked for with
/// `current`; the service must chain to `bundle`.
pub async fn fetch_bundle(
    ca: &str,
    current: &Identity,
    bundle: &TrustBundle,
) -> Result<(String, String), EnrollError> {
    match request(ca, authenticated(current, bundle)?, &CaRequest::Bundle).await? {
        CaResponse::Bundle { bundle_pem, deny } => {
            TrustBundle::from_pem(Path::new("the CA's bundle"), bundle_pem.as_bytes())?;
            DenyList::parse(Path::new("the CA's deny list"), &deny)?;
            Ok((bundle_pem, deny))
        }
        other => Err(unexpected(ca, other)),
    }
}

/// A client config presenting `current` and accepting only the CA service
/// of its trust domain, chained to `bundle`.
fn authenticated(
    current: &Identity,
    bundle: &TrustBundle,
) -> Result<quinn::ClientConfig, EnrollError> {
    let verifier = Arc::new(SvidVerifier::new(
        bundle.clone(),
        PeerRequirement::Exactly(service_id(current.id.trust_domain())),
    ));
    let tls = strait_ca::tls::client_config(current, verifier, &[CA_ALPN])?;
    client_config(tls)
}

fn client_config(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig, EnrollError> {
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| EnrollError::Quic {
        side: "the CA client",
        reason: e.to_string(),
    })?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(ANSWER_TIMEOUT).expect("small timeout"),
    ));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Checks an `Issued` answer: the chain names `id`, holds the key made
/// here and verifies against the bundle that came with it, which holds the
/// root `pin` names (on a join).
fn issued(
    addr: &str,
    answer: CaResponse,
    id: &SpiffeId,
    key_pem: String,
    pin: Option<&str>,
) -> Result<Enrolled, EnrollError> {
    let (chain_pem, bundle_pem, deny) = match answer {
        CaResponse::Issued {
            chain_pem,
            bundle_pem,
            deny,
        } => (chain_pem, bundle_pem, deny),
        other => return Err(unexpected(addr, other)),
    };
    let bad = |reason: String| EnrollError::Refused {
        addr: addr.to_owned(),
        reason: format!("its answer does not check out: {reason}"),
    };
    let identity = Identity::from_pem(
        &chain_pem,
        &key_pem,
        Path::new("the issued certificate"),
        Path::new("the new key"),
    )
    .map_err(|e| bad(e.to_string()))?;
    if &identity.id != id {
        return Err(bad(format!("it certifies {}, not {id}", identity.id)));
    }
    let bundle = TrustBundle::from_pem(Path::new("the CA's bundle"), bundle_pem.as_bytes())
        .map_err(|e| bad(e.to_string()))?;
    if let Some(pin) = pin
        && !bundle.roots().iter().any(|r| strait_ca::root_pin(r) == pin)
    {
        return Err(EnrollError::Refused {
            addr: addr.to_owned(),
            reason: "the bundle it sent does not hold the root the token pins".into(),
        });
    }
    strait_ca::verify_chain(
        &identity.chain,
        &bundle,
        &PeerRequirement::Gateway(id.trust_domain().clone()),
        PeerRole::Client,
        SystemTime::now(),
    )
    .map_err(|e| bad(e.to_string()))?;
    DenyList::parse(Path::new("the CA's deny list"), &deny).map_err(|e| bad(e.to_string()))?;
    Ok(Enrolled {
        identity,
        key_pem,
        chain_pem,
        bundle_pem,
        deny,
    })
}

fn unexpected(addr: &str, answer: CaResponse) -> EnrollError {
    match answer {
        CaResponse::Refused { reason } => EnrollError::Refused {
            addr: addr.to_owned(),
            reason,
        },
        other => EnrollError::Refused {
            addr: addr.to_owned(),
            reason: format!("unexpected answer {other:?}"),
        },
    }
}

/// One request on a new connection.
async fn request(
    addr: &str,
    config: quinn::ClientConfig,
    req: &CaRequest,
) -> Result<CaResponse, EnrollError> {
    let unreachable = |reason: String| EnrollError::Unreachable {
        addr: addr.to_owned(),
        reason,
    };
    let target: SocketAddr = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| unreachable(format!("cannot resolve: {e}")))?
        .next()
        .ok_or_else(|| unreachable("resolves to no address".into()))?;
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("static")
    } else {
        "[::]:0".parse().expect("static")
    };
    let endpoint = quinn::Endpoint::client(bind).map_err(|e| unreachable(e.to_string()))?;
    let result: Result<CaResponse, EnrollError> = async {
        let connecting = endpoint
            .connect_with(config, target, "strait-ca")
            .map_err(|e| unreachable(e.to_string()))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| unreachable(format!("no handshake within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| handshake_error(addr, e))?;
        let exchange = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            let bytes = strait_core::enroll::encode(req).map_err(|e| e.to_string())?;
            send.write_all(&bytes).await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            let answer = recv
                .read_to_end(MAX_CA_MESSAGE)
                .await
                .map_err(|e| e.to_string())?;
            strait_core::enroll::decode::<CaResponse>(&answer).map_err(|e| e.to_string())
        };
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {ANSWER_TIMEOUT:?}")))?
            // The service checks a client certificate after the client's
            // side of the handshake is done: its refusal shows up here.
            .map_err(|e| match conn.close_reason() {
                Some(reason) => handshake_error(addr, reason),
                None => unreachable(e),
            })?;
        conn.close(0u32.into(), b"done");
        Ok(answer)
    }
    .await;
    endpoint.close(0u32.into(), b"done");
    match result? {
        CaResponse::Refused { reason } => Err(EnrollError::Refused {
            addr: addr.to_owned(),
            reason,
        }),
        answer => Ok(answer),
    }
}

/// A handshake that failed on TLS (a certificate refused by either side)
/// is a refusal with its reason; anything else means the CA is unreachable.
fn handshake_error(addr: &str, e: quinn::ConnectionError) -> EnrollError {
    let code = match &e {
        quinn::ConnectionError::TransportError(t) => Some(u64::from(t.code)),
        quinn::ConnectionError::ConnectionClosed(c) => Some(u64::from(c.error_code)),
        _ => None,
    };
    // QUIC carries TLS alerts as transport errors 0x100..=0x1ff.
    if code.is_some_and(|c| c & !0xff == 0x100) {
        EnrollError::Refused {
            addr: addr.to_owned(),
            reason: format!("TLS handshake failed: {e}"),
        }
    } else {
        EnrollError::Unreachable {
            addr: addr.to_owned(),
            reason: e.to_string(),
        }
    }
}
