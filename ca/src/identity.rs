//! A workload's or gateway's own identity: its certificate chain and the
//! private key that belongs to it, checked to match when loaded.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::issue::key_matches;
use crate::{BUNDLE_FILE, CERT_FILE, CaError, DENY_FILE, KEY_FILE, SpiffeId, files};

/// A certificate chain (leaf first) with its private key.
#[derive(Debug)]
pub struct Identity {
    pub id: SpiffeId,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            id: self.id.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            not_before: self.not_before,
            not_after: self.not_after,
        }
    }
}

impl Identity {
    /// Loads `cert` (leaf then intermediates) and `key`, and checks that the
    /// key belongs to the leaf and that the leaf is an X.509-SVID.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, CaError> {
        let chain = files::read_certificates(cert)?;
        let key_der = files::read_private_key(key)?;
        Self::from_der(chain, key_der, cert, key)
    }

    /// The same from PEM text in memory; `cert` and `key` name the sources
    /// in errors.
    pub fn from_pem(
        chain_pem: &str,
        key_pem: &str,
        cert: &Path,
        key: &Path,
    ) -> Result<Self, CaError> {
        let chain = files::certificates_from_pem(cert, chain_pem.as_bytes())?;
        let key_der = files::private_key_from_pem(key, key_pem.as_bytes())?;
        Self::from_der(chain, key_der, cert, key)
    }

    fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key_der: PrivateKeyDer<'static>,
        cert: &Path,
        key: &Path,
    ) -> Result<Self, CaError> {
        let key_pair = rcgen::KeyPair::try_from(&key_der).map_err(|e| CaError::BadKey {
            path: key.to_owned(),
            reason: e.to_string(),
        })?;
        if !key_matches(&key_pair, &chain[0]) {
            return Err(CaError::KeyMismatch {
                key: key.to_owned(),
                cert: cert.to_owned(),
            });
        }
        let (id, not_before, not_after) =
            leaf_facts(&chain[0]).map_err(|reason| CaError::Verify {
                context: cert.display().to_string(),
                reason,
            })?;
        Ok(Identity {
            id,
            chain,
            key: key_der,
            not_before,
            not_after,
        })
    }
}

/// Where an identity's files live: its certificate chain, key, trust
/// bundle and deny list.
#[derive(Debug, Clone)]
pub struct IdentityPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub bundle: PathBuf,
    /// The deny list; next to the bundle unless configured. A missing file
    /// is an empty list.
    pub deny: PathBuf,
}

impl IdentityPaths {
    /// cert.pem, key.pem, bundle.pem and deny.txt in `dir`, as `strait
    /// gateway join` and `strait cert issue` write them.
    pub fn in_dir(dir: &Path) -> Self {
        IdentityPaths {
            cert: dir.join(CERT_FILE),
            key: dir.join(KEY_FILE),
            bundle: dir.join(BUNDLE_FILE),
            deny: dir.join(DENY_FILE),
        }
    }
}

fn leaf_facts(leaf: &[u8]) -> Result<(SpiffeId, SystemTime, SystemTime), crate::VerifyError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| crate::VerifyError::Malformed(e.to_string()))?;
    let id = crate::verify::svid_id(&cert)?;
    Ok((
        id,
        crate::time::from_unix(cert.validity().not_before.timestamp()),
        crate::time::from_unix(cert.validity().not_after.timestamp()),
    ))
}
