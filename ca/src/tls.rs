//! rustls glue: certificate verifiers that accept a peer only through
//! [`verify_chain`], and TLS 1.3 configs built from an [`Identity`].
//!
//! rustls' own WebPKI verifiers check the chain but never the SPIFFE ID, so
//! both directions of a handshake go through this crate's verifier instead.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    ServerConfig, SignatureScheme,
};

use crate::verify::{PeerRequirement, PeerRole, verify_chain};
use crate::{CaError, DenyList, Federation, Identity, SpiffeId, TrustBundle, VerifyError};

/// The crypto provider strait uses everywhere (ring), with TLS 1.3 suites
/// only and AES-128-GCM first: it is the fastest here (ChaCha20 measured 44%
/// slower) and QUIC needs it for its initial packets anyway. Configs are
/// built with it explicitly so that no process-wide default is needed.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// The handshake-signature methods every verifier here shares: they check
/// signatures with the provider's algorithms (`self.algorithms`).
macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    };
}

/// Verifies peers' X.509-SVIDs against a trust bundle and a
/// [`PeerRequirement`]; usable on both the client and the server side.
#[derive(Debug)]
pub struct SvidVerifier {
    bundle: TrustBundle,
    requirement: PeerRequirement,
    deny: DenyList,
    /// Other trust domains whose gateways are accepted, with their roots.
    federation: Federation,
    client_auth_optional: bool,
    algorithms: WebPkiSupportedAlgorithms,
    root_subjects: Vec<DistinguishedName>,
}

impl SvidVerifier {
    pub fn new(bundle: TrustBundle, requirement: PeerRequirement) -> Self {
        let root_subjects = bundle
            .anchors()
            .iter()
            // A trust anchor's subject is the Name's content without its
            // SEQUENCE header; CertificateRequest wants the whole Name.
            .map(|a| DistinguishedName::in_sequence(a.subject.as_ref()))
            .collect();
        SvidVerifier {
            bundle,
            requirement,
            deny: DenyList::default(),
            federation: Federation::default(),
            client_auth_optional: false,
            algorithms: crypto_provider().signature_verification_algorithms,
            root_subjects,
        }
    }

    /// Also refuses certificates the deny list names.
    pub fn with_deny_list(mut self, deny: DenyList) -> Self {
        self.deny = deny;
        self
    }

    /// As a client verifier: let clients without a certificate through
    /// (the CA service, where a joining gateway has none yet); a client that
    /// does present one is still verified in full.
    /// Also accepts gateways of the federated trust domains, each verified
    /// against its own domain's roots only.
    pub fn with_federation(mut self, federation: Federation) -> Self {
        for bundle in federation.bundles() {
            self.root_subjects.extend(
                bundle
                    .anchors()
                    .iter()
                    .map(|a| DistinguishedName::in_sequence(a.subject.as_ref())),
            );
        }
        self.federation = federation;
        self
    }

    pub fn client_auth_optional(mut self) -> Self {
        self.client_auth_optional = true;
        self
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        role: PeerRole,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        let now = UNIX_EPOCH + Duration::from_secs(now.as_secs());
        // The roots that may vouch for the leaf are those of the trust
        // domain it names: a partner's root never vouches for ours.
        let federated = SpiffeId::from_certificate(end_entity).ok().and_then(|id| {
            let td = id.trust_domain();
            Some((
                self.federation.bundle_for(td)?,
                self.requirement.for_federated(td),
            ))
        });
        let (bundle, requirement) = match &federated {
            Some((bundle, requirement)) => (*bundle, requirement),
            None => (&self.bundle, &self.requirement),
        };
        let id = verify_chain(&chain, bundle, requirement, role, now).map_err(to_rustls_error)?;
        match self.deny.denies_certificate(&id, end_entity) {
            Some(entry) => Err(to_rustls_error(VerifyError::Revoked {
                id: id.to_string(),
                entry: entry.to_string(),
            })),
            None => Ok(()),
        }
    }
}

/// Every reason travels as `Other`, so that the refusing side's log (rustls
/// and quinn print the error) says exactly why; the peer gets a generic
/// bad-certificate alert either way.
fn to_rustls_error(e: VerifyError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

impl ServerCertVerifier for SvidVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // SPIFFE authenticates by ID, not by DNS name: the requirement says
        // which IDs are acceptable.
        self.verify(end_entity, intermediates, PeerRole::Server, now)
            .map(|()| ServerCertVerified::assertion())
    }

    signature_checks!();
}

impl ClientCertVerifier for SvidVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.root_subjects
    }

    fn client_auth_mandatory(&self) -> bool {
        !self.client_auth_optional
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, PeerRole::Client, now)
            .map(|()| ClientCertVerified::assertion())
    }

    signature_checks!();
}

/// Verifies a server before any trust bundle is known: the server must
/// present (after its leaf) the root certificate whose SHA-256 is `pin`, and
/// its chain must verify against that root and meet `requirement`. This is
/// how a joining gateway checks the CA service named in its join token
/// before it sends the token's secret.
#[derive(Debug)]
pub struct PinnedRootVerifier {
    pin: String,
    requirement: PeerRequirement,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedRootVerifier {
    pub fn new(pin: String, requirement: PeerRequirement) -> Self {
        PinnedRootVerifier {
            pin: pin.to_ascii_lowercase(),
            requirement,
            algorithms: crypto_provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for PinnedRootVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let root = intermediates
            .iter()
            .find(|c| crate::root_pin(c) == self.pin)
            .ok_or_else(|| {
                to_rustls_error(VerifyError::Chain(format!(
                    "the server did not present the root pinned by the token (sha256 {})",
                    self.pin
                )))
            })?;
        let bundle = TrustBundle::from_roots(
            std::path::Path::new("pinned root"),
            vec![root.clone().into_owned()],
        )
        .map_err(|e| to_rustls_error(VerifyError::Chain(e.to_string())))?;
        let mut chain = vec![end_entity.clone()];
        chain.extend(
            intermediates
                .iter()
                .filter(|c| c.as_ref() != root.as_ref())
                .cloned(),
        );
        let now = UNIX_EPOCH + Duration::from_secs(now.as_secs());
        verify_chain(&chain, &bundle, &self.requirement, PeerRole::Server, now)
            .map(|_| ServerCertVerified::assertion())
            .map_err(to_rustls_error)
    }

    signature_checks!();
}

/// A TLS 1.3-only client config without a client certificate (joining).
pub fn anonymous_client_config(
    verifier: Arc<dyn ServerCertVerifier>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, CaError> {
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A TLS 1.3-only server config that requires and verifies client SVIDs.
pub fn server_config(
    identity: &Identity,
    verifier: Arc<SvidVerifier>,
    alpn: &[&[u8]],
) -> Result<ServerConfig, CaError> {
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(tls_error)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A TLS 1.3-only client config that presents `identity` and verifies the
/// server's SVID.
pub fn client_config(
    identity: &Identity,
    verifier: Arc<SvidVerifier>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, CaError> {
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(tls_error)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn tls_error(e: rustls::Error) -> CaError {
    CaError::Tls(e.to_string())
}

/// The strait reason inside a rustls error when a handshake failed on the
/// peer's identity, for logs that say why (rustls' own text prints Debug).
pub fn rejection_reason(err: &rustls::Error) -> Option<&VerifyError> {
    match err {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<VerifyError>()
        }
        _ => None,
    }
}

/// The chain (leaf first) a peer presented, from what a QUIC or TLS
/// session built on rustls reports as its peer identity (quinn's
/// `Connection::peer_identity`).
pub fn peer_chain(peer_identity: Box<dyn std::any::Any>) -> Option<Vec<CertificateDer<'static>>> {
    peer_identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()
        .map(|b| *b)
}

/// Handshake error text as quinn reports it, with the Debug wrapper
/// rustls puts around strait's reason (`invalid peer certificate:
/// Other(OtherError(REASON))`) taken off, for logs and events.
pub fn tidy_handshake_text(text: &str) -> String {
    const OPEN: &str = "Other(OtherError(";
    let Some(start) = text.find(OPEN) else {
        return text.to_owned();
    };
    let inner = &text[start + OPEN.len()..];
    match inner.rfind("))") {
        Some(end) => format!("{}{}{}", &text[..start], &inner[..end], &inner[end + 2..]),
        None => text.to_owned(),
    }
}

/// A readable message for a handshake error: strait's reason when there is
/// one, rustls' text otherwise.
pub fn describe_tls_error(err: &rustls::Error) -> String {
    match rejection_reason(err) {
        Some(reason) => format!("peer certificate rejected: {reason}"),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::tidy_handshake_text;

    #[test]
    fn the_debug_wrapper_around_a_reason_comes_off() {
        assert_eq!(
            tidy_handshake_text(
                "the cryptographic handshake failed: error 42: invalid peer certificate: Other(OtherError(certificate serial 5c is revoked (deny list: serial 5c)))"
            ),
            "the cryptographic handshake failed: error 42: invalid peer certificate: certificate serial 5c is revoked (deny list: serial 5c)"
        );
        assert_eq!(tidy_handshake_text("timed out"), "timed out");
    }
}
