//! Deciding who a peer is: the one place that turns a presented certificate
//! chain into a SPIFFE ID, or into the precise reason it does not prove one.
//!
//! The order of checks is chosen for the message: SVID shape and the leaf's
//! own validity first (they name the leaf's problem exactly), then its trust
//! domain, then the chain to the bundle through webpki, then the gateway
//! rules.

use std::time::SystemTime;

use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::spiffe::{IdentityKind, SpiffeId, TrustDomain, parse_id};
use crate::{TrustBundle, VerifyError, time};

/// Which side of a TLS handshake presented the chain; decides the extended
/// key usage the leaf must allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    Client,
    Server,
}

/// What a verified identity must also be, beyond a chain to the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRequirement {
    /// Any SPIFFE ID of the trust domain.
    AnyInTrustDomain(TrustDomain),
    /// A gateway of the trust domain, in any region.
    Gateway(TrustDomain),
    /// A gateway of the trust domain in the given region.
    GatewayInRegion(TrustDomain, String),
    /// Exactly this SPIFFE ID (the CA service, say).
    Exactly(SpiffeId),
}

impl PeerRequirement {
    pub fn trust_domain(&self) -> &TrustDomain {
        match self {
            PeerRequirement::AnyInTrustDomain(td)
            | PeerRequirement::Gateway(td)
            | PeerRequirement::GatewayInRegion(td, _) => td,
            PeerRequirement::Exactly(id) => id.trust_domain(),
        }
    }

    /// What a gateway of the federated trust domain `td` must be to pass
    /// where this is required: any gateway of `td` where any gateway of
    /// ours would do; a dial names its peer's trust domain itself, and
    /// workloads and the CA service are never federated.
    pub fn for_federated(&self, td: &TrustDomain) -> PeerRequirement {
        match self {
            PeerRequirement::Gateway(_) => PeerRequirement::Gateway(td.clone()),
            other => other.clone(),
        }
    }

    /// Checks an already chain-verified ID against this requirement.
    pub fn check(&self, id: &SpiffeId) -> Result<(), VerifyError> {
        if id.trust_domain() != self.trust_domain() {
            return Err(VerifyError::WrongTrustDomain {
                id: id.to_string(),
                expected: self.trust_domain().to_string(),
            });
        }
        match (self, id.kind()) {
            (PeerRequirement::AnyInTrustDomain(_), _) => Ok(()),
            (PeerRequirement::Exactly(want), _) if want == id => Ok(()),
            (PeerRequirement::Exactly(want), _) => Err(VerifyError::NotExpected {
                id: id.to_string(),
                expected: want.to_string(),
            }),
            (PeerRequirement::Gateway(_), IdentityKind::Gateway { .. }) => Ok(()),
            (PeerRequirement::GatewayInRegion(_, want), IdentityKind::Gateway { region, .. }) => {
                if region == want {
                    Ok(())
                } else {
                    Err(VerifyError::WrongRegion {
                        id: id.to_string(),
                        expected: want.clone(),
                    })
                }
            }
            _ => Err(VerifyError::NotAGateway { id: id.to_string() }),
        }
    }
}

/// Verifies `chain` (leaf first, then intermediates) against `bundle` at
/// `now`, and returns the leaf's SPIFFE ID once every rule holds.
pub fn verify_chain(
    chain: &[CertificateDer<'_>],
    bundle: &TrustBundle,
    requirement: &PeerRequirement,
    role: PeerRole,
    now: SystemTime,
) -> Result<SpiffeId, VerifyError> {
    let (leaf, intermediates) = chain.split_first().ok_or(VerifyError::EmptyChain)?;
    let id = check_leaf(leaf, now)?;
    // Another trust domain's leaf is named as such, not as an unknown
    // issuer: our bundle cannot know its roots.
    if id.trust_domain() != requirement.trust_domain() {
        requirement.check(&id)?;
    }
    verify_path(leaf, intermediates, bundle, role, now)?;
    check_issuing_region(leaf, intermediates, &id)?;
    requirement.check(&id)?;
    Ok(id)
}

/// A gateway certificate issued by a regional CA must name that CA's
/// region: a regional CA's key compromised mints identities of its own
/// region only.
fn check_issuing_region(
    leaf: &[u8],
    intermediates: &[CertificateDer<'_>],
    id: &SpiffeId,
) -> Result<(), VerifyError> {
    let IdentityKind::Gateway { region, .. } = id.kind() else {
        return Ok(());
    };
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let issuer = cert.issuer().as_raw();
    for der in intermediates {
        let Ok((_, ca)) = x509_parser::parse_x509_certificate(der) else {
            continue;
        };
        if ca.subject().as_raw() != issuer {
            continue;
        }
        if let Some(ca_region) = crate::authority::ca_region(der)
            && ca_region != region
        {
            return Err(VerifyError::IssuedOutsideRegion {
                id: id.to_string(),
                ca_region,
            });
        }
    }
    Ok(())
}

/// Checks the SVID rules and validity window of a leaf on its own, without
/// the chain, and returns its SPIFFE ID.
pub fn check_leaf(leaf: &[u8], now: SystemTime) -> Result<SpiffeId, VerifyError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let id = svid_id(&cert)?;
    let bc = cert
        .basic_constraints()
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    if bc.is_some_and(|bc| bc.value.ca) {
        return Err(VerifyError::LeafIsCa);
    }
    let ku = cert
        .key_usage()
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    match ku {
        Some(ku) if ku.value.key_cert_sign() || ku.value.crl_sign() => {
            return Err(VerifyError::LeafCanSign);
        }
        Some(ku) if ku.value.digital_signature() => {}
        _ => return Err(VerifyError::MissingDigitalSignature),
    }
    let not_before = time::from_unix(cert.validity().not_before.timestamp());
    let not_after = time::from_unix(cert.validity().not_after.timestamp());
    if now < not_before {
        return Err(VerifyError::NotYetValid { not_before, now });
    }
    if now > not_after {
        return Err(VerifyError::Expired { not_after, now });
    }
    Ok(id)
}

/// The SPIFFE ID of an X.509-SVID: exactly one URI SAN, a valid SPIFFE ID.
pub(crate) fn svid_id(cert: &X509Certificate<'_>) -> Result<SpiffeId, VerifyError> {
    let uris = uri_sans(cert).map_err(VerifyError::Malformed)?;
    match uris.as_slice() {
        [] => Err(VerifyError::NoUriSan),
        [uri] => parse_id(uri).map_err(|rule| VerifyError::InvalidSpiffeId {
            uri: (*uri).to_owned(),
            rule,
        }),
        more => Err(VerifyError::MultipleUriSans { count: more.len() }),
    }
}

pub(crate) fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Result<Vec<&'a str>, String> {
    let san = cert.subject_alternative_name().map_err(|e| e.to_string())?;
    Ok(san
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

fn verify_path(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    bundle: &TrustBundle,
    role: PeerRole,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let ee =
        webpki::EndEntityCert::try_from(leaf).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let usage = match role {
        PeerRole::Client => webpki::KeyUsage::client_auth(),
        PeerRole::Server => webpki::KeyUsage::server_auth(),
    };
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        bundle.anchors(),
        intermediates,
        time::to_unix_time(now),
        usage,
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| match e {
        webpki::Error::UnknownIssuer => VerifyError::UnknownIssuer,
        webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
            VerifyError::IssuerNotValidNow
        }
        webpki::Error::InvalidSignatureForPublicKey => VerifyError::BadSignature,
        webpki::Error::RequiredEkuNotFoundContext(_) => VerifyError::WrongUsage {
            usage: match role {
                PeerRole::Client => "TLS client authentication",
                PeerRole::Server => "TLS server authentication",
            },
        },
        webpki::Error::CaUsedAsEndEntity => VerifyError::LeafIsCa,
        other => VerifyError::Chain(format!("{other:?}")),
    })
}
