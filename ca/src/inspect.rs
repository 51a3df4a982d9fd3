//! Human- and machine-readable facts about a certificate, for `strait cert
//! inspect` and for logs.

use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::{CaError, files};

/// What `strait cert inspect` shows about one certificate.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateInfo {
    pub subject: String,
    pub issuer: String,
    pub spiffe_id: Option<String>,
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    /// Seconds from `now` until expiry; negative once expired.
    pub seconds_left: i64,
    pub key_type: String,
    pub is_ca: bool,
    pub key_usage: Vec<String>,
    pub extended_key_usage: Vec<String>,
    pub sha256_fingerprint: String,
}

/// Describes every certificate in a PEM file, in order.
pub fn inspect_file(path: &Path, now: SystemTime) -> Result<Vec<CertificateInfo>, CaError> {
    files::read_certificates(path)?
        .iter()
        .enumerate()
        .map(|(i, der)| {
            describe(der, now).map_err(|reason| CaError::BadCertificate {
                path: path.to_owned(),
                index: i + 1,
                reason,
            })
        })
        .collect()
}

/// Describes one DER certificate.
pub fn describe(der: &[u8], now: SystemTime) -> Result<CertificateInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let mut uri_sans = Vec::new();
    let mut dns_sans = Vec::new();
    if let Some(san) = cert.subject_alternative_name().map_err(|e| e.to_string())? {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uri_sans.push((*u).to_owned()),
                GeneralName::DNSName(d) => dns_sans.push((*d).to_owned()),
                _ => {}
            }
        }
    }
    let spiffe_id = match uri_sans.as_slice() {
        [one] if one.starts_with("spiffe://") => Some(one.clone()),
        _ => None,
    };
    let not_before = crate::time::from_unix(cert.validity().not_before.timestamp());
    let not_after_unix = cert.validity().not_after.timestamp();
    let now_unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let is_ca = cert
        .basic_constraints()
        .map_err(|e| e.to_string())?
        .is_some_and(|bc| bc.value.ca);
    Ok(CertificateInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        spiffe_id,
        uri_sans,
        dns_sans,
        // The one serial format: the deny list's, `status`'s and what
        // `ca revoke --serial` takes.
        serial: crate::normalize_serial(&cert.raw_serial_as_string())
            .unwrap_or_else(|| cert.raw_serial_as_string()),
        not_before: crate::time::rfc3339(not_before),
        not_after: crate::time::rfc3339(crate::time::from_unix(not_after_unix)),
        seconds_left: not_after_unix - now_unix,
        key_type: key_type(&cert),
        is_ca,
        key_usage: key_usage(&cert)?,
        extended_key_usage: extended_key_usage(&cert)?,
        sha256_fingerprint: crate::bundle::fingerprint(der),
    })
}

fn key_type(cert: &X509Certificate<'_>) -> String {
    let alg = &cert.public_key().algorithm;
    let param = alg
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    match (alg.algorithm.to_id_string().as_str(), param.as_deref()) {
        ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")) => "ECDSA P-256".to_owned(),
        ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => "ECDSA P-384".to_owned(),
        ("1.2.840.10045.2.1", Some("1.3.132.0.35")) => "ECDSA P-521".to_owned(),
        ("1.3.101.112", _) => "Ed25519".to_owned(),
        ("1.2.840.113549.1.1.1", _) => "RSA".to_owned(),
        (oid, _) => format!("unknown ({oid})"),
    }
}

fn key_usage(cert: &X509Certificate<'_>) -> Result<Vec<String>, String> {
    let Some(ku) = cert.key_usage().map_err(|e| e.to_string())? else {
        return Ok(Vec::new());
    };
    let ku = ku.value;
    Ok([
        (ku.digital_signature(), "digitalSignature"),
        (ku.non_repudiation(), "nonRepudiation"),
        (ku.key_encipherment(), "keyEncipherment"),
        (ku.data_encipherment(), "dataEncipherment"),
        (ku.key_agreement(), "keyAgreement"),
        (ku.key_cert_sign(), "keyCertSign"),
        (ku.crl_sign(), "cRLSign"),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .map(|(_, name)| name.to_owned())
    .collect())
}

fn extended_key_usage(cert: &X509Certificate<'_>) -> Result<Vec<String>, String> {
    let Some(eku) = cert.extended_key_usage().map_err(|e| e.to_string())? else {
        return Ok(Vec::new());
    };
    let eku = eku.value;
    let mut out: Vec<String> = [
        (eku.any, "any"),
        (eku.server_auth, "serverAuth"),
        (eku.client_auth, "clientAuth"),
        (eku.code_signing, "codeSigning"),
        (eku.email_protection, "emailProtection"),
        (eku.time_stamping, "timeStamping"),
        (eku.ocsp_signing, "OCSPSigning"),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .map(|(_, name)| name.to_owned())
    .collect();
    out.extend(eku.other.iter().map(|o| o.to_id_string()));
    Ok(out)
}
