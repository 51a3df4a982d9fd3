//! What the CA's own checks never let out, made by hand for the verifier
//! to refuse.

use std::path::Path;

use rustls_pki_types::CertificateDer;

/// A gateway leaf for `id`, signed by the CA whose certificate and key are
/// the PEM files `cert` and `key`, with none of the issuing CA's checks (a
/// stolen key): returns the leaf and the issuing certificate.
pub fn forged_gateway(cert: &Path, key: &Path, id: &str) -> [CertificateDer<'static>; 2] {
    let ca_der = CertificateDer::from(
        pem::parse(std::fs::read_to_string(cert).unwrap())
            .unwrap()
            .into_contents(),
    );
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(key).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(&ca_der, ca_key).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(id.try_into().unwrap())];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
    [leaf.der().clone(), ca_der]
}
