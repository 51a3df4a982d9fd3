//! Trust bundles: the set of roots a gateway accepts. A bundle holds several
//! roots while a CA is rotated.

use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, TrustAnchor};
use sha2::{Digest, Sha256};

use crate::{CaError, files};

/// One or more root certificates, read from a PEM file (or a SPIFFE
/// bundle document).
#[derive(Debug, Clone)]
pub struct TrustBundle {
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
    source: PathBuf,
}

impl TrustBundle {
    /// Reads a bundle file, PEM or a SPIFFE bundle document (JSON); every
    /// certificate in it becomes a trusted root.
    pub fn load(path: &Path) -> Result<Self, CaError> {
        let text = files::read(path)?;
        if crate::federation::is_spiffe_json(&text) {
            return crate::federation::from_spiffe_json(path, &text);
        }
        Self::from_pem(path, &text)
    }

    /// Parses bundle PEM; `path` is only used to name the source in errors.
    pub fn from_pem(path: &Path, pem: &[u8]) -> Result<Self, CaError> {
        Self::from_roots(path, files::certificates_from_pem(path, pem)?)
    }

    /// A bundle from DER roots.
    pub fn from_roots(path: &Path, roots: Vec<CertificateDer<'static>>) -> Result<Self, CaError> {
        let anchors = roots
            .iter()
            .enumerate()
            .map(|(i, root)| {
                webpki::anchor_from_trusted_cert(root)
                    .map(|a| a.to_owned())
                    .map_err(|e| CaError::BadCertificate {
                        path: path.to_owned(),
                        index: i + 1,
                        reason: format!("cannot be a trust anchor: {e}"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustBundle {
            roots,
            anchors,
            source: path.to_owned(),
        })
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// The file this bundle came from (for messages).
    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn contains(&self, cert: &CertificateDer<'_>) -> bool {
        self.roots.iter().any(|r| r.as_ref() == cert.as_ref())
    }

    /// SHA-256 fingerprints of the roots, hex, in order.
    pub fn fingerprints(&self) -> Vec<String> {
        self.roots.iter().map(|r| fingerprint(r)).collect()
    }

    pub fn to_pem(&self) -> String {
        files::certificates_to_pem(&self.roots)
    }
}

/// SHA-256 fingerprint of DER bytes as colon-separated upper-case hex, the
/// form `openssl x509 -fingerprint -sha256` prints.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
