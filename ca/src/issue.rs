//! What an issued X.509-SVID is made of, and how it is written to disk.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;

use crate::files::{self, KEY_MODE, Output, Overwrite, PUBLIC_MODE};
use crate::{CaError, KeyType, SpiffeId};

/// Default lifetime of an issued SVID.
pub const DEFAULT_SVID_TTL: Duration = Duration::from_secs(24 * 3600);
/// How far `notBefore` is set back, so that a peer whose clock is slightly
/// behind still accepts a certificate issued a moment ago.
pub const BACKDATE: Duration = Duration::from_secs(60);

/// File names inside an `--out` directory.
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";
pub const BUNDLE_FILE: &str = "bundle.pem";
pub const CSR_FILE: &str = "csr.pem";

/// What the CA is asked to certify. The CA, not a CSR, decides all of it.
#[derive(Debug, Clone)]
pub struct SvidRequest {
    pub id: SpiffeId,
    pub dns_names: Vec<String>,
    pub ttl: Duration,
}

impl SvidRequest {
    pub fn new(id: SpiffeId) -> Self {
        SvidRequest {
            id,
            dns_names: Vec::new(),
            ttl: DEFAULT_SVID_TTL,
        }
    }
}

/// A freshly issued SVID: the chain (leaf first), the private key when the
/// CA generated it, and the trust bundle to verify peers with.
#[derive(Debug)]
pub struct IssuedSvid {
    pub id: SpiffeId,
    pub chain: Vec<CertificateDer<'static>>,
    pub key_pem: Option<String>,
    pub bundle_pem: String,
    pub not_after: SystemTime,
}

impl IssuedSvid {
    pub fn chain_pem(&self) -> String {
        files::certificates_to_pem(&self.chain)
    }

    /// Writes `cert.pem`, `key.pem` (0600, when there is a key) and
    /// `bundle.pem` into `dir`, creating it. With [`Overwrite::Never`]
    /// nothing is written if any of them already exists.
    pub fn write_to(&self, dir: &Path, overwrite: Overwrite) -> Result<(), CaError> {
        files::create_dir(dir)?;
        let output = |name: &str, contents: String, mode| Output {
            path: dir.join(name),
            contents,
            mode,
        };
        let mut outputs = Vec::with_capacity(3);
        if let Some(key) = &self.key_pem {
            outputs.push(output(KEY_FILE, key.clone(), KEY_MODE));
        }
        outputs.push(output(CERT_FILE, self.chain_pem(), PUBLIC_MODE));
        outputs.push(output(BUNDLE_FILE, self.bundle_pem.clone(), PUBLIC_MODE));
        files::write_set(&outputs, overwrite)
    }
}

/// A private key and a PKCS#10 CSR for `id`, made locally so the key never
/// leaves the requester.
pub fn generate_csr(id: &SpiffeId, key_type: KeyType) -> Result<(String, String), CaError> {
    let key = key_type.generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(id.short_name());
    params.subject_alt_names = vec![uri_san(id)?];
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

pub(crate) fn subject(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "strait");
    // X.520 caps a common name at 64 characters.
    let cn: String = common_name.chars().take(64).collect();
    dn.push(DnType::CommonName, cn);
    dn
}

pub(crate) fn uri_san(id: &SpiffeId) -> Result<SanType, CaError> {
    Ok(SanType::URI(id.to_string().try_into()?))
}

/// 126 random bits in 16 bytes whose first is 0x01-0x7f: DER encodes them
/// as a positive INTEGER of exactly 16 bytes (no sign byte, no leading zero
/// dropped), well inside RFC 5280's 20.
pub(crate) fn random_serial() -> Result<SerialNumber, CaError> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Generate(rcgen::Error::RingUnspecified))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Certificate parameters of an X.509-SVID leaf, per the SPIFFE standard.
pub(crate) fn leaf_params(
    req: &SvidRequest,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(req.id.short_name());
    params.subject_alt_names = vec![uri_san(&req.id)?];
    for name in &req.dns_names {
        params
            .subject_alt_names
            .push(SanType::DnsName(name.clone().try_into()?));
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.serial_number = Some(random_serial()?);
    params.not_before = crate::time::to_offset(not_before);
    params.not_after = crate::time::to_offset(not_after);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Whether a private key belongs to the public key of a certificate.
pub(crate) fn key_matches(key: &KeyPair, cert_der: &[u8]) -> bool {
    use rcgen::PublicKeyData;
    x509_parser::parse_x509_certificate(cert_der)
        .map(|(_, cert)| cert.public_key().subject_public_key.data.as_ref() == key.der_bytes())
        .unwrap_or(false)
}
