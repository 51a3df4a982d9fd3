//! Federated trust domains: the bundles of other trust domains whose
//! gateways may tunnel to ours, and the SPIFFE bundle format (a JWK set
//! whose `x509-svid` keys carry their root certificates in `x5c`) that
//! partners exchange. A partner's roots vouch for identities of the
//! partner's trust domain only: the verifier picks the bundle by the trust
//! domain the presented leaf names.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use x509_parser::public_key::PublicKey;

use crate::{CaError, TrustBundle, TrustDomain};

/// The bundles of the trust domains federated with ours.
#[derive(Debug, Clone, Default)]
pub struct Federation {
    domains: Vec<(TrustDomain, TrustBundle)>,
}

impl Federation {
    /// Adds (or replaces) the bundle of `trust_domain`.
    pub fn insert(&mut self, trust_domain: TrustDomain, bundle: TrustBundle) {
        self.domains.retain(|(td, _)| *td != trust_domain);
        self.domains.push((trust_domain, bundle));
    }

    /// The bundle of `trust_domain`, if it is federated.
    pub fn bundle_for(&self, trust_domain: &TrustDomain) -> Option<&TrustBundle> {
        self.domains
            .iter()
            .find(|(td, _)| td == trust_domain)
            .map(|(_, b)| b)
    }

    pub fn contains(&self, trust_domain: &TrustDomain) -> bool {
        self.bundle_for(trust_domain).is_some()
    }

    pub fn trust_domains(&self) -> impl Iterator<Item = &TrustDomain> {
        self.domains.iter().map(|(td, _)| td)
    }

    pub fn bundles(&self) -> impl Iterator<Item = &TrustBundle> {
        self.domains.iter().map(|(_, b)| b)
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }
}

/// Whether bundle text is a SPIFFE bundle (JSON) rather than PEM.
pub fn is_spiffe_json(text: &[u8]) -> bool {
    text.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

/// The bundle as a SPIFFE bundle document: one `x509-svid` JWK per root,
/// with the root certificate in `x5c`; `refresh_hint` in seconds (how
/// often a partner should fetch it again).
pub fn to_spiffe_json(bundle: &TrustBundle, refresh_hint: u64) -> Result<String, CaError> {
    let mut keys = Vec::new();
    for (i, root) in bundle.roots().iter().enumerate() {
        let bad = |reason: String| CaError::BadCertificate {
            path: bundle.source().to_owned(),
            index: i + 1,
            reason,
        };
        let (_, cert) =
            x509_parser::parse_x509_certificate(root).map_err(|e| bad(e.to_string()))?;
        let spki = cert.public_key();
        let mut key = serde_json::Map::new();
        key.insert("use".into(), "x509-svid".into());
        match spki.parsed().map_err(|e| bad(e.to_string()))? {
            PublicKey::EC(point) => {
                let data = point.data();
                let (crv, len) = match data.len() {
                    65 => ("P-256", 32),
                    97 => ("P-384", 48),
                    n => {
                        return Err(bad(format!(
                            "an EC point of {n} bytes is not P-256 or P-384"
                        )));
                    }
                };
                key.insert("kty".into(), "EC".into());
                key.insert("crv".into(), crv.into());
                key.insert("x".into(), URL_SAFE_NO_PAD.encode(&data[1..1 + len]).into());
                key.insert("y".into(), URL_SAFE_NO_PAD.encode(&data[1 + len..]).into());
            }
            PublicKey::RSA(rsa) => {
                key.insert("kty".into(), "RSA".into());
                key.insert("n".into(), URL_SAFE_NO_PAD.encode(trim(rsa.modulus)).into());
                key.insert(
                    "e".into(),
                    URL_SAFE_NO_PAD.encode(trim(rsa.exponent)).into(),
                );
            }
            _ if spki.algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519 => {
                key.insert("kty".into(), "OKP".into());
                key.insert("crv".into(), "Ed25519".into());
                key.insert(
                    "x".into(),
                    URL_SAFE_NO_PAD
                        .encode(spki.subject_public_key.data.as_ref())
                        .into(),
                );
            }
            _ => return Err(bad("its key type cannot be written as a JWK".into())),
        }
        key.insert(
            "x5c".into(),
            serde_json::Value::Array(vec![STANDARD.encode(root.as_ref()).into()]),
        );
        keys.push(serde_json::Value::Object(key));
    }
    let doc = serde_json::json!({
        "keys": keys,
        "spiffe_refresh_hint": refresh_hint,
    });
    Ok(serde_json::to_string_pretty(&doc).expect("JSON values serialize") + "\n")
}

/// Big-endian integers without their sign-padding zero bytes, as JWK wants.
fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Reads a SPIFFE bundle document: the root of every `x509-svid` key
/// (`x5c`, first entry); keys for other uses (`jwt-svid`) are skipped.
pub fn from_spiffe_json(path: &Path, text: &[u8]) -> Result<TrustBundle, CaError> {
    let bad = |reason: String| CaError::Pem {
        path: path.to_owned(),
        reason: format!("not a SPIFFE bundle: {reason}"),
    };
    let doc: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| bad(format!("JSON: {e}")))?;
    let keys = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or_else(|| bad("no \"keys\" array".into()))?;
    let mut roots = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if key.get("use").and_then(|u| u.as_str()) != Some("x509-svid") {
            continue;
        }
        let der = key
            .get("x5c")
            .and_then(|c| c.as_array())
            .and_then(|c| c.first())
            .and_then(|c| c.as_str())
            .ok_or_else(|| bad(format!("keys[{i}] (x509-svid) has no \"x5c\" certificate")))?;
        let der = STANDARD
            .decode(der)
            .map_err(|e| bad(format!("keys[{i}].x5c[0] is not base64: {e}")))?;
        roots.push(der.into());
    }
    if roots.is_empty() {
        return Err(bad("no x509-svid key".into()));
    }
    TrustBundle::from_roots(path, roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CaOptions, CertificateAuthority};

    #[test]
    fn a_bundle_survives_the_spiffe_format() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::init(
            dir.path(),
            &CaOptions::new(TrustDomain::parse("partner.org").unwrap()),
            std::time::SystemTime::now(),
        )
        .unwrap();
        let bundle = ca.bundle();
        let json = to_spiffe_json(bundle, 300).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(doc["keys"][0]["use"], "x509-svid");
        assert!(doc["keys"][0]["kty"].is_string());
        assert!(is_spiffe_json(json.as_bytes()));
        let back = from_spiffe_json(Path::new("partner.json"), json.as_bytes()).unwrap();
        assert_eq!(back.roots(), bundle.roots());
    }

    #[test]
    fn a_document_without_x509_keys_is_refused_with_the_reason() {
        let e = from_spiffe_json(
            Path::new("p.json"),
            br#"{"keys":[{"use":"jwt-svid","kty":"EC"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("p.json") && e.contains("no x509-svid key"),
            "{e}"
        );
        let e = from_spiffe_json(Path::new("p.json"), br#"{"keys":[{"use":"x509-svid"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("keys[0]") && e.contains("x5c"), "{e}");
        let e = from_spiffe_json(Path::new("p.json"), b"{")
            .unwrap_err()
            .to_string();
        assert!(e.contains("JSON"), "{e}");
    }
}
