//! Federated trust domains in the verifier: a partner's gateways are
//! accepted once its bundle is federated, each chain is checked against the
//! roots of the trust domain its leaf names (a partner's root never vouches
//! for an identity of ours), and a dial names the trust domain it expects.

mod support;

use std::path::Path;
use std::time::SystemTime;

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use strait_ca::tls::SvidVerifier;
use strait_ca::{
    CaOptions, CertificateAuthority, Federation, KeyType, PeerRequirement, SpiffeId, SvidRequest,
    TrustDomain,
};

fn td(s: &str) -> TrustDomain {
    TrustDomain::parse(s).unwrap()
}

fn ca(dir: &Path, domain: &str) -> CertificateAuthority {
    CertificateAuthority::init(dir, &CaOptions::new(td(domain)), SystemTime::now()).unwrap()
}

fn gateway_chain(
    ca: &CertificateAuthority,
    domain: &str,
    region: &str,
) -> Vec<CertificateDer<'static>> {
    let id = SpiffeId::gateway(&td(domain), region, "gw-1").unwrap();
    ca.issue(&SvidRequest::new(id), KeyType::P256, SystemTime::now())
        .unwrap()
        .chain
}

fn federation(domain: &str, ca: &CertificateAuthority) -> Federation {
    let mut f = Federation::default();
    f.insert(td(domain), ca.bundle().clone());
    f
}

fn check(verifier: &SvidVerifier, chain: &[CertificateDer<'static>]) -> Result<(), String> {
    verifier
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .map(|_| ())
        .map_err(|e| strait_ca::tls::describe_tls_error(&e))
}

#[test]
fn a_partners_gateways_are_accepted_only_once_its_bundle_is_federated() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ours = ca(a.path(), "example.org");
    let partner = ca(b.path(), "partner.org");
    let theirs = gateway_chain(&partner, "partner.org", "eu-west");
    let plain = SvidVerifier::new(
        ours.bundle().clone(),
        PeerRequirement::Gateway(td("example.org")),
    );
    let e = check(&plain, &theirs).unwrap_err();
    assert!(e.contains("not in trust domain example.org"), "{e}");

    let federated = SvidVerifier::new(
        ours.bundle().clone(),
        PeerRequirement::Gateway(td("example.org")),
    )
    .with_federation(federation("partner.org", &partner));
    check(&federated, &theirs).unwrap();
    // Ours still pass, against our own roots.
    check(&federated, &gateway_chain(&ours, "example.org", "us-east")).unwrap();
    // A partner's workload is no gateway.
    let workload = partner
        .issue(
            &SvidRequest::new(SpiffeId::workload(&td("partner.org"), "ns", "sa").unwrap()),
            KeyType::P256,
            SystemTime::now(),
        )
        .unwrap()
        .chain;
    let e = check(&federated, &workload).unwrap_err();
    assert!(e.contains("not a gateway"), "{e}");
}

#[test]
fn a_partners_root_never_vouches_for_an_identity_of_ours() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ours = ca(a.path(), "example.org");
    ca(b.path(), "partner.org");
    // The partner signs a leaf that claims to be one of our gateways.
    let [leaf, root] = support::forged_gateway(
        &b.path().join(strait_ca::ROOT_CERT),
        &b.path().join(strait_ca::ROOT_KEY),
        "spiffe://example.org/region/us-east/gateway/gw-evil",
    );
    let forged = vec![leaf];
    let partner_bundle =
        strait_ca::TrustBundle::from_roots(Path::new("partner"), vec![root]).unwrap();
    let mut f = Federation::default();
    f.insert(td("partner.org"), partner_bundle);
    let verifier = SvidVerifier::new(
        ours.bundle().clone(),
        PeerRequirement::Gateway(td("example.org")),
    )
    .with_federation(f);
    let e = check(&verifier, &forged).unwrap_err();
    assert!(e.contains("unknown issuer"), "{e}");
}

#[test]
fn a_dial_names_the_trust_domain_it_expects() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ours = ca(a.path(), "example.org");
    let partner = ca(b.path(), "partner.org");
    let to_partner = SvidVerifier::new(
        ours.bundle().clone(),
        PeerRequirement::GatewayInRegion(td("partner.org"), "eu-west".into()),
    )
    .with_federation(federation("partner.org", &partner));
    check(
        &to_partner,
        &gateway_chain(&partner, "partner.org", "eu-west"),
    )
    .unwrap();
    let e = check(&to_partner, &gateway_chain(&ours, "example.org", "eu-west")).unwrap_err();
    assert!(e.contains("not in trust domain partner.org"), "{e}");
    let e = check(
        &to_partner,
        &gateway_chain(&partner, "partner.org", "us-east"),
    )
    .unwrap_err();
    assert!(e.contains("not a gateway of region eu-west"), "{e}");
}
