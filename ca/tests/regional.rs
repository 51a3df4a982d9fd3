//! Regional CAs: intermediates of one root, each issuing the gateway
//! identities of its own region only, and a verifier that refuses a
//! gateway certificate a regional CA issued for another region.

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use strait_ca::{
    CaError, CaOptions, CertificateAuthority, KeyType, PeerRequirement, PeerRole, SpiffeId,
    SvidRequest, TrustBundle, TrustDomain, VerifyError, verify_chain,
};

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

fn root(dir: &Path, intermediate: bool) {
    let mut opts = CaOptions::new(td());
    opts.intermediate = intermediate;
    CertificateAuthority::init(dir, &opts, SystemTime::now()).unwrap();
}

fn regional(root: &Path, dir: &Path, region: &str) -> CertificateAuthority {
    CertificateAuthority::init_regional(
        root,
        dir,
        region,
        Duration::from_secs(30 * 86_400),
        KeyType::P256,
        SystemTime::now(),
    )
    .unwrap()
}

fn verify(
    chain: &[CertificateDer<'static>],
    bundle: &TrustBundle,
) -> Result<SpiffeId, VerifyError> {
    verify_chain(
        chain,
        bundle,
        &PeerRequirement::Gateway(td()),
        PeerRole::Client,
        SystemTime::now(),
    )
}

#[test]
fn a_regional_ca_issues_its_own_region_and_refuses_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    root(&d.join("root"), true);
    let eu = regional(&d.join("root"), &d.join("eu"), "eu-west");
    let us = regional(&d.join("root"), &d.join("us"), "us-east");
    assert_eq!(eu.region(), Some("eu-west"));
    // Loaded back from disk it is still regional, and the root key is not
    // in its directory.
    let eu_loaded = CertificateAuthority::load(&d.join("eu")).unwrap();
    assert_eq!(eu_loaded.region(), Some("eu-west"));
    assert!(!d.join("eu/ca-key.pem").exists());
    let bundle = TrustBundle::load(&d.join("root/bundle.pem")).unwrap();

    let now = SystemTime::now();
    let gw = |region, name| SvidRequest::new(SpiffeId::gateway(&td(), region, name).unwrap());
    let own = eu
        .issue(&gw("eu-west", "gw-1"), KeyType::P256, now)
        .unwrap();
    assert_eq!(
        verify(&own.chain, &bundle).unwrap().to_string(),
        "spiffe://example.org/region/eu-west/gateway/gw-1"
    );
    let theirs = us
        .issue(&gw("us-east", "gw-2"), KeyType::P256, now)
        .unwrap();
    assert!(
        verify(&theirs.chain, &bundle).is_ok(),
        "both regions chain to the one root"
    );

    let err = eu
        .issue(&gw("us-east", "gw-2"), KeyType::P256, now)
        .unwrap_err();
    assert!(matches!(err, CaError::OutsideRegion { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "this is the regional CA of eu-west: it issues gateway identities of eu-west only, not spiffe://example.org/region/us-east/gateway/gw-2"
    );
    // Workload identities are not regional.
    let workload = SvidRequest::new(SpiffeId::workload(&td(), "shop", "web").unwrap());
    assert!(eu.issue(&workload, KeyType::P256, now).is_ok());
}

/// What a stolen eu-west CA key could mint: a us-east gateway identity
/// signed by eu-west's regional CA, outside the CA's own checks.
fn forged_us_east_gateway(eu_dir: &Path) -> Vec<CertificateDer<'static>> {
    support::forged_gateway(
        &eu_dir.join("intermediate.pem"),
        &eu_dir.join("intermediate-key.pem"),
        "spiffe://example.org/region/us-east/gateway/gw-evil",
    )
    .to_vec()
}

#[test]
fn a_gateway_certificate_from_another_regions_ca_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    root(&d.join("root"), true);
    regional(&d.join("root"), &d.join("eu"), "eu-west");
    let bundle = TrustBundle::load(&d.join("root/bundle.pem")).unwrap();
    let forged = forged_us_east_gateway(&d.join("eu"));
    let err = verify(&forged, &bundle).unwrap_err();
    assert_eq!(
        err,
        VerifyError::IssuedOutsideRegion {
            id: "spiffe://example.org/region/us-east/gateway/gw-evil".into(),
            ca_region: "eu-west".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "spiffe://example.org/region/us-east/gateway/gw-evil was issued by the regional CA of eu-west, which may issue identities of eu-west only"
    );
}

#[test]
fn regional_cas_need_a_root_that_may_sign_cas_and_a_region_that_names_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    root(&d.join("flat"), false);
    let err = CertificateAuthority::init_regional(
        &d.join("flat"),
        &d.join("eu"),
        "eu-west",
        Duration::from_secs(86_400),
        KeyType::P256,
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(matches!(err, CaError::RootCannotSignCas { .. }), "{err}");
    assert!(
        err.to_string().contains("strait ca init --intermediate"),
        "{err}"
    );
    assert!(!d.join("eu").exists(), "nothing was written");
    root(&d.join("root"), true);
    let err = CertificateAuthority::init_regional(
        &d.join("root"),
        &d.join("eu"),
        "EU West",
        Duration::from_secs(86_400),
        KeyType::P256,
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("EU West"), "{err}");
    regional(&d.join("root"), &d.join("eu"), "eu-west");
    let err = CertificateAuthority::init_regional(
        &d.join("root"),
        &d.join("eu"),
        "eu-west",
        Duration::from_secs(86_400),
        KeyType::P256,
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(matches!(err, CaError::CaExists { .. }), "{err}");
}
