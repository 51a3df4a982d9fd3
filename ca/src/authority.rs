//! The certificate authority: creating one on disk, loading it, and issuing
//! X.509-SVIDs from it, either with a key it makes or from a CSR.
//!
//! A CA directory holds `ca.pem` and `ca-key.pem` (the root), optionally
//! `intermediate.pem` and `intermediate-key.pem`, and `bundle.pem` (the roots
//! peers trust; more than one during a rotation). When an intermediate is
//! present it signs everything, so `ca-key.pem` can be moved offline.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;

use crate::files::{self, KEY_MODE, Overwrite, PUBLIC_MODE};
use crate::issue::{BACKDATE, IssuedSvid, SvidRequest, key_matches, leaf_params, subject};
use crate::verify::uri_sans;
use crate::{CaError, KeyType, TrustBundle, TrustDomain};

pub const ROOT_CERT: &str = "ca.pem";
pub const ROOT_KEY: &str = "ca-key.pem";
pub const INTERMEDIATE_CERT: &str = "intermediate.pem";
pub const INTERMEDIATE_KEY: &str = "intermediate-key.pem";
pub const CA_BUNDLE: &str = "bundle.pem";

/// The URI SAN that makes an intermediate the regional CA of a region
/// (`urn:strait:ca-region:eu-west`): it may issue gateway identities of that
/// region only, and strait's verifier refuses a gateway certificate it
/// issued for another.
pub const REGION_URN_PREFIX: &str = "urn:strait:ca-region:";

/// Default validity of a new CA.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How to create a CA.
#[derive(Debug, Clone)]
pub struct CaOptions {
    pub trust_domain: TrustDomain,
    pub key_type: KeyType,
    pub validity: Duration,
    pub intermediate: bool,
}

impl CaOptions {
    pub fn new(trust_domain: TrustDomain) -> Self {
        CaOptions {
            trust_domain,
            key_type: KeyType::default(),
            validity: DEFAULT_CA_VALIDITY,
            intermediate: false,
        }
    }
}

/// The PEM files that make up a CA, as written by [`CertificateAuthority::init`].
#[derive(Debug, Clone)]
pub struct CaFiles {
    pub root_cert_pem: String,
    pub root_key_pem: String,
    pub intermediate: Option<(String, String)>,
    pub bundle_pem: String,
}

/// A loaded CA that can issue SVIDs.
pub struct CertificateAuthority {
    trust_domain: TrustDomain,
    signer: Issuer<'static, KeyPair>,
    signer_not_after: SystemTime,
    /// Certificates sent after an issued leaf: the intermediate, if any.
    intermediates: Vec<CertificateDer<'static>>,
    /// The root this CA's chains end in.
    root: CertificateDer<'static>,
    bundle: TrustBundle,
    /// For a regional CA, the only region it issues gateway identities of.
    region: Option<String>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("intermediates", &self.intermediates.len())
            .finish_non_exhaustive()
    }
}

fn ca_params(
    td: &TrustDomain,
    common_name: String,
    path_len: u8,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    // SPIFFE allows a signing certificate to carry the trust domain's ID;
    // strait reads the trust domain back from it when loading the CA.
    params.subject_alt_names = vec![rcgen::SanType::URI(td.id().try_into()?)];
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let serial = crate::issue::random_serial()?;
    // A short tag from the serial keeps two CAs of one trust domain apart by
    // name, so a chain from the wrong one reads as an unknown issuer.
    let tag: String = serial.to_bytes()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    params.distinguished_name = subject(&format!("{common_name} {tag}"));
    params.serial_number = Some(serial);
    params.not_before = crate::time::to_offset(not_before);
    params.not_after = crate::time::to_offset(not_after);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

impl CertificateAuthority {
    /// Creates a new CA in memory.
    pub fn create(opts: &CaOptions, now: SystemTime) -> Result<(Self, CaFiles), CaError> {
        let td = &opts.trust_domain;
        let not_before = now - BACKDATE;
        let not_after = now + opts.validity;
        let root_key = opts.key_type.generate()?;
        let root_params = ca_params(
            td,
            format!("strait root CA {td}"),
            u8::from(opts.intermediate),
            not_before,
            not_after,
        )?;
        let root_cert = root_params.self_signed(&root_key)?;
        let bundle = TrustBundle::from_roots(Path::new(CA_BUNDLE), vec![root_cert.der().clone()])?;
        let mut files = CaFiles {
            root_cert_pem: root_cert.pem(),
            root_key_pem: root_key.serialize_pem(),
            intermediate: None,
            bundle_pem: root_cert.pem(),
        };
        if !opts.intermediate {
            let signer = Issuer::new(root_params, root_key);
            let ca = CertificateAuthority {
                trust_domain: td.clone(),
                signer,
                signer_not_after: not_after,
                intermediates: Vec::new(),
                root: root_cert.der().clone(),
                bundle,
                region: None,
            };
            return Ok((ca, files));
        }
        let root_issuer = Issuer::new(root_params, root_key);
        let int_key = opts.key_type.generate()?;
        let int_params = ca_params(
            td,
            format!("strait intermediate CA {td}"),
            0,
            not_before,
            not_after,
        )?;
        let int_cert = int_params.signed_by(&int_key, &root_issuer)?;
        files.intermediate = Some((int_cert.pem(), int_key.serialize_pem()));
        let ca = CertificateAuthority {
            trust_domain: td.clone(),
            signer: Issuer::new(int_params, int_key),
            signer_not_after: not_after,
            intermediates: vec![int_cert.der().clone()],
            root: root_cert.der().clone(),
            bundle,
            region: None,
        };
        Ok((ca, files))
    }

    /// Makes the regional CA of `region` in `dir`: an intermediate signed by
    /// the root in `root_dir` (whose key is needed only now and can then go
    /// offline), which issues gateway identities of `region` only.
    /// `dir` gets the root certificate, the intermediate and its key, and
    /// the root's bundle; nothing is written if `dir` already holds a CA.
    pub fn init_regional(
        root_dir: &Path,
        dir: &Path,
        region: &str,
        validity: Duration,
        key_type: KeyType,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        refuse_existing_ca(dir)?;
        let root_path = root_dir.join(ROOT_CERT);
        if !root_path.exists() {
            return Err(CaError::NoCa {
                dir: root_dir.to_owned(),
                missing: root_path,
            });
        }
        let root_pem = std::fs::read_to_string(&root_path).map_err(|source| CaError::Io {
            path: root_path.clone(),
            source,
        })?;
        let root = first(files::read_certificates(&root_path)?);
        let root_key_path = root_dir.join(ROOT_KEY);
        let root_key = files::read_key_pair(&root_key_path)?;
        if !key_matches(&root_key, &root) {
            return Err(CaError::KeyMismatch {
                key: root_key_path,
                cert: root_path,
            });
        }
        let (td, root_not_after) = read_ca_facts(&root_path, &root)?;
        // The region must be one a gateway identity can name.
        crate::SpiffeId::gateway(&td, region, "regional-ca")?;
        {
            let (_, cert) = x509_parser::parse_x509_certificate(&root).map_err(|e| {
                CaError::BadCertificate {
                    path: root_path.clone(),
                    index: 1,
                    reason: e.to_string(),
                }
            })?;
            let path_len = cert
                .basic_constraints()
                .ok()
                .flatten()
                .and_then(|bc| bc.value.path_len_constraint);
            if path_len == Some(0) {
                return Err(CaError::RootCannotSignCas { path: root_path });
            }
        }
        let root_issuer =
            Issuer::from_ca_cert_der(&root, root_key).map_err(|e| CaError::BadCertificate {
                path: root_path.clone(),
                index: 1,
                reason: e.to_string(),
            })?;
        let not_after = (now + validity).min(root_not_after);
        let key = key_type.generate()?;
        let mut params = ca_params(
            &td,
            format!("strait regional CA {region} {td}"),
            0,
            now - BACKDATE,
            not_after,
        )?;
        params.subject_alt_names.push(rcgen::SanType::URI(
            format!("{REGION_URN_PREFIX}{region}").try_into()?,
        ));
        let cert = params.signed_by(&key, &root_issuer)?;
        let bundle_path = root_dir.join(CA_BUNDLE);
        let bundle_pem = if bundle_path.exists() {
            std::fs::read_to_string(&bundle_path).map_err(|source| CaError::Io {
                path: bundle_path.clone(),
                source,
            })?
        } else {
            root_pem.clone()
        };
        files::create_dir(dir)?;
        let write = |name: &str, contents: &str, mode| {
            files::write(&dir.join(name), contents.as_bytes(), mode, Overwrite::Never)
        };
        write(INTERMEDIATE_KEY, &key.serialize_pem(), KEY_MODE)?;
        write(INTERMEDIATE_CERT, &cert.pem(), PUBLIC_MODE)?;
        write(ROOT_CERT, &root_pem, PUBLIC_MODE)?;
        write(CA_BUNDLE, &bundle_pem, PUBLIC_MODE)?;
        Self::load(dir)
    }

    /// For a regional CA, the region whose gateway identities it issues.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// `list` as text signed by this CA's signing key (see
    /// [`crate::signed_deny`]): what gateways pass to each other.
    pub fn sign_deny_list(
        &self,
        list: &crate::DenyList,
        now: SystemTime,
    ) -> Result<String, CaError> {
        let signer = self.intermediates.first().unwrap_or(&self.root);
        crate::signed_deny::sign(&list.to_text(), signer, self.signer.key(), now)
    }

    /// Creates a CA and writes it into `dir`. An existing CA is never
    /// overwritten: if any CA file is present, nothing is written.
    pub fn init(dir: &Path, opts: &CaOptions, now: SystemTime) -> Result<Self, CaError> {
        refuse_existing_ca(dir)?;
        let (ca, pem) = Self::create(opts, now)?;
        files::create_dir(dir)?;
        let write = |name: &str, contents: &str, mode| {
            files::write(&dir.join(name), contents.as_bytes(), mode, Overwrite::Never)
        };
        write(ROOT_KEY, &pem.root_key_pem, KEY_MODE)?;
        write(ROOT_CERT, &pem.root_cert_pem, PUBLIC_MODE)?;
        if let Some((cert, key)) = &pem.intermediate {
            write(INTERMEDIATE_KEY, key, KEY_MODE)?;
            write(INTERMEDIATE_CERT, cert, PUBLIC_MODE)?;
        }
        write(CA_BUNDLE, &pem.bundle_pem, PUBLIC_MODE)?;
        Ok(ca)
    }

    /// Loads a CA directory written by [`CertificateAuthority::init`].
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let root_path = dir.join(ROOT_CERT);
        if !root_path.exists() {
            return Err(CaError::NoCa {
                dir: dir.to_owned(),
                missing: root_path,
            });
        }
        let root = first(files::read_certificates(&root_path)?);
        let int_path = dir.join(INTERMEDIATE_CERT);
        let (signer_path, key_path, intermediates) = if int_path.exists() {
            let int = first(files::read_certificates(&int_path)?);
            (int_path, dir.join(INTERMEDIATE_KEY), vec![int])
        } else {
            (root_path.clone(), dir.join(ROOT_KEY), Vec::new())
        };
        let signer_der = intermediates.first().unwrap_or(&root).clone();
        let key = files::read_key_pair(&key_path)?;
        if !key_matches(&key, &signer_der) {
            return Err(CaError::KeyMismatch {
                key: key_path,
                cert: signer_path,
            });
        }
        let (trust_domain, signer_not_after) = read_ca_facts(&signer_path, &signer_der)?;
        let region = ca_region(&signer_der);
        let bundle_path = dir.join(CA_BUNDLE);
        let bundle = if bundle_path.exists() {
            TrustBundle::load(&bundle_path)?
        } else {
            TrustBundle::from_roots(&root_path, vec![root.clone()])?
        };
        if !bundle.contains(&root) {
            return Err(CaError::RootNotInBundle {
                cert: root_path,
                bundle: bundle_path,
            });
        }
        let signer =
            Issuer::from_ca_cert_der(&signer_der, key).map_err(|e| CaError::BadCertificate {
                path: signer_path.clone(),
                index: 1,
                reason: e.to_string(),
            })?;
        Ok(CertificateAuthority {
            trust_domain,
            signer,
            signer_not_after,
            intermediates,
            root,
            bundle,
            region,
        })
    }

    /// The root certificate this CA's chains end in (what join tokens pin).
    pub fn root(&self) -> &CertificateDer<'static> {
        &self.root
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// When the certificate that signs SVIDs expires; no SVID may outlive it.
    pub fn not_after(&self) -> SystemTime {
        self.signer_not_after
    }

    /// Issues an SVID with a new private key of `key_type`.
    pub fn issue(
        &self,
        req: &SvidRequest,
        key_type: KeyType,
        now: SystemTime,
    ) -> Result<IssuedSvid, CaError> {
        let params = self.checked_params(req, now)?;
        let key = key_type.generate()?;
        let leaf = params.signed_by(&key, &self.signer)?;
        Ok(self.finish(req, leaf.der().clone(), Some(key.serialize_pem()), now))
    }

    /// Signs a PKCS#10 CSR. The CSR's signature must verify (the requester
    /// holds the key); its requested names and extensions are ignored: the
    /// SPIFFE ID and lifetime come from `req`. `csr_path` names the CSR in
    /// errors.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        csr_path: &Path,
        req: &SvidRequest,
        now: SystemTime,
    ) -> Result<IssuedSvid, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| match e {
            rcgen::Error::InvalidCertificationRequestSignature => CaError::CsrSignature {
                path: csr_path.to_owned(),
            },
            other => CaError::BadCsr {
                path: csr_path.to_owned(),
                reason: other.to_string(),
            },
        })?;
        let params = self.checked_params(req, now)?;
        let leaf = params.signed_by(&csr.public_key, &self.signer)?;
        Ok(self.finish(req, leaf.der().clone(), None, now))
    }

    fn checked_params(
        &self,
        req: &SvidRequest,
        now: SystemTime,
    ) -> Result<CertificateParams, CaError> {
        if req.id.trust_domain() != &self.trust_domain {
            return Err(CaError::ForeignTrustDomain {
                id: req.id.to_string(),
                trust_domain: self.trust_domain.to_string(),
            });
        }
        if let (Some(ca_region), crate::IdentityKind::Gateway { region, .. }) =
            (&self.region, req.id.kind())
            && region != ca_region
        {
            return Err(CaError::OutsideRegion {
                id: req.id.to_string(),
                ca_region: ca_region.clone(),
            });
        }
        if req.ttl.is_zero() {
            return Err(CaError::ZeroLifetime);
        }
        if now >= self.signer_not_after {
            return Err(CaError::CaExpired {
                not_after: self.signer_not_after,
            });
        }
        let not_after = now + req.ttl;
        if not_after > self.signer_not_after {
            return Err(CaError::LifetimeExceedsCa {
                requested_not_after: not_after,
                ca_not_after: self.signer_not_after,
            });
        }
        leaf_params(req, now - BACKDATE, not_after)
    }

    fn finish(
        &self,
        req: &SvidRequest,
        leaf: CertificateDer<'static>,
        key_pem: Option<String>,
        now: SystemTime,
    ) -> IssuedSvid {
        let mut chain = vec![leaf];
        chain.extend(self.intermediates.iter().cloned());
        IssuedSvid {
            id: req.id.clone(),
            chain,
            key_pem,
            bundle_pem: self.bundle.to_pem(),
            not_after: now + req.ttl,
        }
    }
}

fn first(mut certs: Vec<CertificateDer<'static>>) -> CertificateDer<'static> {
    certs.swap_remove(0)
}

/// The trust domain (from the CA certificate's `spiffe://<td>` URI SAN) and
/// expiry of a signing certificate.
/// An error naming the first CA file already in `dir`: a CA is never
/// overwritten.
fn refuse_existing_ca(dir: &Path) -> Result<(), CaError> {
    for name in [
        ROOT_CERT,
        ROOT_KEY,
        INTERMEDIATE_CERT,
        INTERMEDIATE_KEY,
        CA_BUNDLE,
    ] {
        let existing = dir.join(name);
        if existing.exists() {
            return Err(CaError::CaExists {
                dir: dir.to_owned(),
                existing,
            });
        }
    }
    Ok(())
}

/// The region a CA certificate is the regional CA of, if it is one.
pub fn ca_region(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    uri_sans(&cert)
        .ok()?
        .iter()
        .find_map(|u| u.strip_prefix(REGION_URN_PREFIX))
        .map(str::to_owned)
}

fn read_ca_facts(path: &Path, der: &[u8]) -> Result<(TrustDomain, SystemTime), CaError> {
    let bad = |reason: String| CaError::BadCertificate {
        path: path.to_owned(),
        index: 1,
        reason,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(e.to_string()))?;
    let uris = uri_sans(&cert).map_err(bad)?;
    let td = uris
        .iter()
        .find_map(|uri| uri.strip_prefix("spiffe://").map(TrustDomain::parse))
        .ok_or_else(|| CaError::CaWithoutTrustDomain {
            path: path.to_owned(),
        })??;
    let not_after = crate::time::from_unix(cert.validity().not_after.timestamp());
    Ok((td, not_after))
}
