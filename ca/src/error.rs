//! The one error type of the CA crate, and the precise reasons it carries.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::spiffe::SpiffeIdError;

/// Everything that can go wrong while creating, loading or using a CA, or
/// while deciding who a peer is.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("{}: certificate #{index} is not a valid X.509 certificate: {reason}", path.display())]
    BadCertificate {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("{}: not a usable private key: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error(
        "a CA already exists in {}: {} is present; refusing to overwrite it",
        dir.display(),
        existing.display()
    )]
    CaExists { dir: PathBuf, existing: PathBuf },
    #[error("{} already exists; refusing to overwrite it (pass --force to replace it)", path.display())]
    FileExists { path: PathBuf },
    #[error("{}: no CA found (expected {})", dir.display(), missing.display())]
    NoCa { dir: PathBuf, missing: PathBuf },
    #[error("invalid SPIFFE ID {id:?}: {rule}")]
    InvalidSpiffeId { id: String, rule: SpiffeIdError },
    #[error("invalid trust domain {domain:?}: {rule}")]
    InvalidTrustDomain { domain: String, rule: SpiffeIdError },
    #[error("unknown key type {0:?} (expected p256, p384 or ed25519)")]
    UnknownKeyType(String),
    #[error(
        "requested lifetime ends at {}, after the issuing CA's certificate expires at {}",
        crate::time::rfc3339(*requested_not_after),
        crate::time::rfc3339(*ca_not_after)
    )]
    LifetimeExceedsCa {
        requested_not_after: SystemTime,
        ca_not_after: SystemTime,
    },
    #[error("the issuing CA's certificate expired at {}", crate::time::rfc3339(*not_after))]
    CaExpired { not_after: SystemTime },
    #[error("lifetime must be greater than zero")]
    ZeroLifetime,
    #[error("SPIFFE ID {id} is not in this CA's trust domain {trust_domain}")]
    ForeignTrustDomain { id: String, trust_domain: String },
    #[error("{}: the CSR's signature does not verify", path.display())]
    CsrSignature { path: PathBuf },
    #[error("{}: not a usable certificate signing request: {reason}", path.display())]
    BadCsr { path: PathBuf, reason: String },
    #[error(
        "private key {} does not match the certificate {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("{}: the CA certificate carries no spiffe:// trust domain URI", path.display())]
    CaWithoutTrustDomain { path: PathBuf },
    #[error("{}: the issuing CA's root is not in the trust bundle {}", cert.display(), bundle.display())]
    RootNotInBundle { cert: PathBuf, bundle: PathBuf },
    #[error("TLS configuration rejected: {0}")]
    Tls(String),
    #[error("{}:{line}: {reason}", path.display())]
    DenyList {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("bad token: {0}")]
    BadTokenPolicy(String),
    #[error(
        "this is the regional CA of {ca_region}: it issues gateway identities of {ca_region} only, not {id}"
    )]
    OutsideRegion { id: String, ca_region: String },
    #[error(
        "{}: this root was made without --intermediate, so its path length allows no CA below it; make the root with `strait ca init --intermediate`",
        path.display()
    )]
    RootCannotSignCas { path: PathBuf },
    #[error("the system random number generator failed")]
    Random,
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{context}: {reason}")]
    Verify {
        context: String,
        reason: VerifyError,
    },
}

/// Why a certificate chain does not prove a SPIFFE identity.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no certificate was presented")]
    EmptyChain,
    #[error("the leaf certificate cannot be parsed: {0}")]
    Malformed(String),
    #[error("not an X.509-SVID: the leaf has no URI SAN")]
    NoUriSan,
    #[error("not an X.509-SVID: the leaf has {count} URI SANs, exactly one is allowed")]
    MultipleUriSans { count: usize },
    #[error("not an X.509-SVID: the URI SAN {uri:?} is not a SPIFFE ID: {rule}")]
    InvalidSpiffeId { uri: String, rule: SpiffeIdError },
    #[error("not an X.509-SVID: the leaf has the CA flag set")]
    LeafIsCa,
    #[error("not an X.509-SVID: the leaf lacks the digitalSignature key usage")]
    MissingDigitalSignature,
    #[error("not an X.509-SVID: the leaf may sign certificates or CRLs (keyCertSign/cRLSign)")]
    LeafCanSign,
    #[error("certificate expired at {} (now {})", crate::time::rfc3339(*not_after), crate::time::rfc3339(*now))]
    Expired {
        not_after: SystemTime,
        now: SystemTime,
    },
    #[error("certificate is not valid until {} (now {})", crate::time::rfc3339(*not_before), crate::time::rfc3339(*now))]
    NotYetValid {
        not_before: SystemTime,
        now: SystemTime,
    },
    #[error("unknown issuer: the chain does not end in a root of the trust bundle")]
    UnknownIssuer,
    #[error("an intermediate certificate of the chain expired or is not yet valid")]
    IssuerNotValidNow,
    #[error(
        "a signature in the chain does not verify against the bundle (issued by another CA of the same name?)"
    )]
    BadSignature,
    #[error("the certificate is not valid for {usage} (extended key usage)")]
    WrongUsage { usage: &'static str },
    #[error("chain rejected: {0}")]
    Chain(String),
    #[error("{id} is not in trust domain {expected}")]
    WrongTrustDomain { id: String, expected: String },
    #[error("{id} is not a gateway identity (spiffe://<td>/region/<region>/gateway/<name>)")]
    NotAGateway { id: String },
    #[error("{id} is not a gateway of region {expected}")]
    WrongRegion { id: String, expected: String },
    #[error(
        "{id} was issued by the regional CA of {ca_region}, which may issue identities of {ca_region} only"
    )]
    IssuedOutsideRegion { id: String, ca_region: String },
    #[error("{id} is not {expected}")]
    NotExpected { id: String, expected: String },
    #[error("{id} is revoked (deny list entry `{entry}`)")]
    Revoked { id: String, entry: String },
}

/// Debug prints the reason as a person reads it: rustls and quinn print
/// handshake failures with Debug, and those lines reach operators' logs.
impl std::fmt::Debug for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
