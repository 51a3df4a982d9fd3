//! Deny lists signed by the CA that issues them, so that a gateway can take
//! a revocation from any peer, not only from its CA service: a gateway cut
//! off from its CA but not from a revoked peer still learns of it.
//!
//! The signature rides in the list's own text as a last comment line, so a
//! signed list is still a deny list every strait build reads (older ones
//! skip the comment) and an operator can still read and diff it:
//!
//! ```text
//! id spiffe://example.org/region/eu-west/gateway/gw-3
//! #! strait-signature issued=1764888000 signer=MIIB... sig=MEUC...
//! ```
//!
//! What is signed is the text above that line and the `issued` time (Unix
//! seconds): a newer list from the same CA has a later `issued`, so a
//! replayed old list is told apart. The signer is the CA's signing
//! certificate (the root, or the intermediate that signs), and it must be a
//! root of the verifier's bundle or be signed by one.

use std::path::Path;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rcgen::SigningKey as _;
use rustls_pki_types::CertificateDer;

use crate::{CaError, DenyList, TrustBundle};

const TRAILER: &str = "#! strait-signature ";
const CONTEXT: &[u8] = b"strait-deny-list-v1\n";

/// A deny list whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDenyList {
    pub list: DenyList,
    /// When the CA signed it, Unix seconds: later is newer.
    pub issued: u64,
    /// SHA-256 fingerprint of the signing CA certificate: lists are newer
    /// or older than others of the same signer.
    pub signer: String,
    /// The whole text, signature line included, as it travels.
    pub text: String,
}

/// Why a deny list that claims to be signed is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DenyListRefused {
    #[error("the deny list carries no signature")]
    Unsigned,
    #[error("the deny list's signature line is malformed: {0}")]
    Malformed(String),
    #[error("the deny list was signed by a certificate that is not a CA of our trust bundle")]
    UnknownSigner,
    #[error("the deny list's signature does not verify (forged or changed after signing)")]
    BadSignature,
    #[error("the deny list does not parse: {0}")]
    Entries(String),
}

fn message(body: &str, issued: u64) -> Vec<u8> {
    let mut m = CONTEXT.to_vec();
    m.extend_from_slice(body.as_bytes());
    m.extend_from_slice(format!("\nissued={issued}").as_bytes());
    m
}

/// `body` with a signature line by `key`, the private key of the CA
/// certificate `signer`, issued at `now`. An older signature line in
/// `body` is dropped first.
pub fn sign(
    body: &str,
    signer: &CertificateDer<'_>,
    key: &rcgen::KeyPair,
    now: SystemTime,
) -> Result<String, CaError> {
    let body = strip_signature(body);
    let issued = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let sig = key.sign(&message(&body, issued))?;
    let mut out = body;
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!(
        "{TRAILER}issued={issued} signer={} sig={}\n",
        B64.encode(signer.as_ref()),
        B64.encode(sig)
    ));
    Ok(out)
}

/// The text without its signature line (everything above it).
pub fn strip_signature(text: &str) -> String {
    match text.rfind(TRAILER) {
        Some(at) if text[..at].is_empty() || text[..at].ends_with('\n') => text[..at].to_owned(),
        _ => text.to_owned(),
    }
}

/// Whether `text` carries a signature line at all.
pub fn is_signed(text: &str) -> bool {
    text.lines().any(|l| l.starts_with(TRAILER))
}

/// Checks the signature of `text` against the CAs of `bundle`.
pub fn verify(text: &str, bundle: &TrustBundle) -> Result<SignedDenyList, DenyListRefused> {
    let at = text.rfind(TRAILER).ok_or(DenyListRefused::Unsigned)?;
    let (body, line) = text.split_at(at);
    if !(body.is_empty() || body.ends_with('\n')) {
        return Err(DenyListRefused::Malformed(
            "the signature is not on a line of its own".into(),
        ));
    }
    let line = line[TRAILER.len()..].trim_end_matches('\n');
    if line.contains('\n') {
        return Err(DenyListRefused::Malformed(
            "lines follow the signature".into(),
        ));
    }
    let field = |name: &str| -> Result<&str, DenyListRefused> {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .ok_or_else(|| DenyListRefused::Malformed(format!("no {name}=")))
    };
    let issued: u64 = field("issued")?
        .parse()
        .map_err(|_| DenyListRefused::Malformed("issued= is not a number".into()))?;
    let signer = B64
        .decode(field("signer")?)
        .map_err(|e| DenyListRefused::Malformed(format!("signer=: {e}")))?;
    let sig = B64
        .decode(field("sig")?)
        .map_err(|e| DenyListRefused::Malformed(format!("sig=: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&signer)
        .map_err(|e| DenyListRefused::Malformed(format!("signer=: {e}")))?;
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    let trusted = is_ca
        && bundle.roots().iter().any(|root| {
            root.as_ref() == signer.as_slice()
                || x509_parser::parse_x509_certificate(root)
                    .is_ok_and(|(_, root)| cert.verify_signature(Some(root.public_key())).is_ok())
        });
    if !trusted {
        return Err(DenyListRefused::UnknownSigner);
    }
    let key = cert.public_key().subject_public_key.data.as_ref();
    let msg = message(body, issued);
    let verifies = [
        &ring::signature::ECDSA_P256_SHA256_ASN1 as &dyn ring::signature::VerificationAlgorithm,
        &ring::signature::ECDSA_P384_SHA384_ASN1,
        &ring::signature::ED25519,
    ]
    .into_iter()
    .any(|alg| {
        ring::signature::UnparsedPublicKey::new(alg, key)
            .verify(&msg, &sig)
            .is_ok()
    });
    if !verifies {
        return Err(DenyListRefused::BadSignature);
    }
    let list = DenyList::parse(Path::new("the signed deny list"), body)
        .map_err(|e| DenyListRefused::Entries(e.to_string()))?;
    Ok(SignedDenyList {
        list,
        issued,
        signer: crate::fingerprint(&signer),
        text: text.to_owned(),
    })
}
