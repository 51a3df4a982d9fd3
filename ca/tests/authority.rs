//! The CA on disk and in memory: issuing, signing CSRs, and refusing bad input.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use strait_ca::{
    CaError, CaOptions, CertificateAuthority, Identity, KeyType, Overwrite, PeerRequirement,
    PeerRole, SpiffeId, SpiffeIdError, SvidRequest, TrustDomain, VerifyError, describe,
    generate_csr, verify_chain,
};

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

fn gateway_id(region: &str, name: &str) -> SpiffeId {
    SpiffeId::gateway(&td(), region, name).unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_keys_0600_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let mut opts = CaOptions::new(td());
    opts.intermediate = true;
    CertificateAuthority::init(&ca_dir, &opts, SystemTime::now()).unwrap();
    for key in ["ca-key.pem", "intermediate-key.pem"] {
        assert_eq!(mode(&ca_dir.join(key)), 0o600, "{key}");
    }
    let before: Vec<_> = ["ca.pem", "ca-key.pem", "intermediate-key.pem", "bundle.pem"]
        .iter()
        .map(|f| fs::read(ca_dir.join(f)).unwrap())
        .collect();

    let err =
        CertificateAuthority::init(&ca_dir, &CaOptions::new(td()), SystemTime::now()).unwrap_err();
    assert!(matches!(err, CaError::CaExists { .. }), "{err}");
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    let after: Vec<_> = ["ca.pem", "ca-key.pem", "intermediate-key.pem", "bundle.pem"]
        .iter()
        .map(|f| fs::read(ca_dir.join(f)).unwrap())
        .collect();
    assert_eq!(before, after, "an existing CA was modified");
}

#[test]
fn issued_svid_follows_the_spiffe_rules_for_every_key_type() {
    let now = SystemTime::now();
    for key_type in KeyType::ALL {
        for intermediate in [false, true] {
            let mut opts = CaOptions::new(td());
            opts.key_type = key_type;
            opts.intermediate = intermediate;
            let (ca, _) = CertificateAuthority::create(&opts, now).unwrap();
            let mut req = SvidRequest::new(gateway_id("eu-west", "gw-1"));
            req.dns_names = vec!["gw-1.eu-west.example.org".into()];
            let svid = ca.issue(&req, key_type, now).unwrap();
            assert_eq!(svid.chain.len(), 1 + usize::from(intermediate));

            let info = describe(&svid.chain[0], now).unwrap();
            assert_eq!(info.uri_sans, vec![req.id.to_string()]);
            assert_eq!(info.dns_sans, req.dns_names);
            assert!(!info.is_ca);
            assert_eq!(info.key_usage, vec!["digitalSignature"]);
            assert_eq!(info.extended_key_usage, vec!["serverAuth", "clientAuth"]);
            // 24 h default lifetime, give or take the test's own runtime.
            assert!(
                (86_000..=86_400).contains(&info.seconds_left),
                "{}",
                info.seconds_left
            );
            // A random serial of exactly 16 bytes (a leading zero byte
            // once made it 15 in one issuance of 256).
            let (_, cert) = x509_parser::parse_x509_certificate(&svid.chain[0]).unwrap();
            assert_eq!(cert.raw_serial().len(), 16, "{}", info.serial);
            // Printed as the deny list writes it: lower-case hex, no colons.
            assert_eq!(
                Some(info.serial.clone()),
                strait_ca::normalize_serial(&cert.raw_serial_as_string())
            );

            let id = verify_chain(
                &svid.chain,
                ca.bundle(),
                &PeerRequirement::GatewayInRegion(td(), "eu-west".into()),
                PeerRole::Server,
                now,
            )
            .unwrap();
            assert_eq!(id, req.id);
        }
    }
}

#[test]
fn serials_are_random() {
    let now = SystemTime::now();
    let (ca, _) = CertificateAuthority::create(&CaOptions::new(td()), now).unwrap();
    let req = SvidRequest::new(gateway_id("eu-west", "gw-1"));
    let a = describe(&ca.issue(&req, KeyType::P256, now).unwrap().chain[0], now).unwrap();
    let b = describe(&ca.issue(&req, KeyType::P256, now).unwrap().chain[0], now).unwrap();
    assert_ne!(a.serial, b.serial);
    // Every serial is 16 bytes: with a leading zero byte allowed, about 2
    // of these 512 would have been 15.
    for _ in 0..512 {
        let svid = ca.issue(&req, KeyType::P256, now).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&svid.chain[0]).unwrap();
        assert_eq!(
            cert.raw_serial().len(),
            16,
            "{}",
            cert.raw_serial_as_string()
        );
    }
}

#[test]
fn load_round_trips_and_keeps_issuing() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let mut opts = CaOptions::new(td());
    opts.intermediate = true;
    CertificateAuthority::init(dir.path(), &opts, now).unwrap();
    // The root key can go offline once an intermediate signs.
    fs::remove_file(dir.path().join("ca-key.pem")).unwrap();
    let ca = CertificateAuthority::load(dir.path()).unwrap();
    assert_eq!(ca.trust_domain(), &td());
    let svid = ca
        .issue(
            &SvidRequest::new(gateway_id("us-east", "gw-2")),
            KeyType::P384,
            now,
        )
        .unwrap();
    let out = dir.path().join("gw-2");
    svid.write_to(&out, Overwrite::Never).unwrap();
    assert_eq!(mode(&out.join("key.pem")), 0o600);
    let identity = Identity::load(&out.join("cert.pem"), &out.join("key.pem")).unwrap();
    assert_eq!(identity.id, svid.id);
    assert_eq!(identity.chain.len(), 2);
    assert_eq!(
        SpiffeId::from_certificate(&identity.chain[0]).unwrap(),
        svid.id
    );
    assert!(
        SpiffeId::from_certificate(&identity.chain[1]).is_ok(),
        "CA carries spiffe://<td>"
    );
    let err = svid.write_to(&out, Overwrite::Never).unwrap_err();
    assert!(matches!(err, CaError::FileExists { .. }), "{err}");
    svid.write_to(&out, Overwrite::Replace).unwrap();
}

#[test]
fn ttl_may_not_outlive_the_ca() {
    let now = SystemTime::now();
    let mut opts = CaOptions::new(td());
    opts.validity = Duration::from_secs(3600);
    let (ca, _) = CertificateAuthority::create(&opts, now).unwrap();
    let mut req = SvidRequest::new(gateway_id("eu-west", "gw-1"));
    req.ttl = Duration::from_secs(2 * 3600);
    let err = ca.issue(&req, KeyType::P256, now).unwrap_err();
    assert!(matches!(err, CaError::LifetimeExceedsCa { .. }), "{err}");
    assert!(err.to_string().contains("after the issuing CA"), "{err}");
    req.ttl = Duration::from_secs(1800);
    ca.issue(&req, KeyType::P256, now).unwrap();
    req.ttl = Duration::ZERO;
    assert!(matches!(
        ca.issue(&req, KeyType::P256, now),
        Err(CaError::ZeroLifetime)
    ));
}

#[test]
fn ids_of_another_trust_domain_are_not_issued() {
    let now = SystemTime::now();
    let (ca, _) = CertificateAuthority::create(&CaOptions::new(td()), now).unwrap();
    let other = SpiffeId::parse("spiffe://other.org/ns/a/sa/b").unwrap();
    let err = ca
        .issue(&SvidRequest::new(other), KeyType::P256, now)
        .unwrap_err();
    assert!(matches!(err, CaError::ForeignTrustDomain { .. }), "{err}");
}

#[test]
fn invalid_spiffe_id_names_the_rule() {
    let err = SpiffeId::parse("spiffe://example.org/ns/../sa").unwrap_err();
    match &err {
        CaError::InvalidSpiffeId { rule, .. } => assert_eq!(rule, &SpiffeIdError::DotSegment),
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("'.' or '..'"), "{err}");
}

#[test]
fn csr_is_signed_with_the_cas_choice_of_id() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let (ca, _) = CertificateAuthority::create(&CaOptions::new(td()), now).unwrap();
    // The requester asks for one ID; the CA decides another.
    let asked = SpiffeId::parse("spiffe://example.org/ns/shop/sa/admin").unwrap();
    let (key_pem, csr_pem) = generate_csr(&asked, KeyType::Ed25519).unwrap();
    let granted = SpiffeId::parse("spiffe://example.org/ns/shop/sa/web").unwrap();
    let svid = ca
        .sign_csr(
            &csr_pem,
            Path::new("csr.pem"),
            &SvidRequest::new(granted.clone()),
            now,
        )
        .unwrap();
    assert!(
        svid.key_pem.is_none(),
        "the CA never holds the requester's key"
    );
    svid.write_to(dir.path(), Overwrite::Never).unwrap();
    fs::write(dir.path().join("key.pem"), key_pem).unwrap();
    let identity =
        Identity::load(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap();
    assert_eq!(identity.id, granted);
}

#[test]
fn csr_with_a_bad_signature_is_refused() {
    let now = SystemTime::now();
    let (ca, _) = CertificateAuthority::create(&CaOptions::new(td()), now).unwrap();
    let id = SpiffeId::parse("spiffe://example.org/ns/shop/sa/web").unwrap();
    let (_, csr_pem) = generate_csr(&id, KeyType::P256).unwrap();
    let mut der = pem::parse(&csr_pem).unwrap().into_contents();
    // The signature BIT STRING ends the CSR: flipping its last byte breaks it.
    *der.last_mut().unwrap() ^= 0x01;
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let err = ca
        .sign_csr(
            &tampered,
            Path::new("bad/csr.pem"),
            &SvidRequest::new(id),
            now,
        )
        .unwrap_err();
    assert!(matches!(err, CaError::CsrSignature { .. }), "{err}");
    assert!(err.to_string().contains("bad/csr.pem"), "{err}");
}

#[test]
fn key_that_does_not_match_its_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let (ca, _) = CertificateAuthority::create(&CaOptions::new(td()), now).unwrap();
    let a = ca
        .issue(
            &SvidRequest::new(gateway_id("eu-west", "a")),
            KeyType::P256,
            now,
        )
        .unwrap();
    let b = ca
        .issue(
            &SvidRequest::new(gateway_id("eu-west", "b")),
            KeyType::P256,
            now,
        )
        .unwrap();
    a.write_to(&dir.path().join("a"), Overwrite::Never).unwrap();
    b.write_to(&dir.path().join("b"), Overwrite::Never).unwrap();
    let err = Identity::load(
        &dir.path().join("a/cert.pem"),
        &dir.path().join("b/key.pem"),
    )
    .unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("b/key.pem"), "{err}");

    // The same check guards a CA directory whose key was swapped.
    let ca_dir = dir.path().join("ca");
    CertificateAuthority::init(&ca_dir, &CaOptions::new(td()), now).unwrap();
    fs::copy(dir.path().join("a/key.pem"), ca_dir.join("ca-key.pem")).unwrap();
    let err = CertificateAuthority::load(&ca_dir).unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
}

#[test]
fn garbage_and_truncated_pem_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let (ca, _) = CertificateAuthority::create(&CaOptions::new(td()), now).unwrap();
    let svid = ca
        .issue(
            &SvidRequest::new(gateway_id("eu-west", "a")),
            KeyType::P256,
            now,
        )
        .unwrap();
    let pem = svid.chain_pem();

    let garbage = dir.path().join("garbage.pem");
    fs::write(&garbage, "this is not a certificate\n").unwrap();
    let truncated = dir.path().join("truncated.pem");
    fs::write(&truncated, &pem[..pem.len() / 2]).unwrap();
    let bad_der = dir.path().join("bad-der.pem");
    fs::write(
        &bad_der,
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();

    for (path, expect) in [
        (&garbage, "no \"BEGIN CERTIFICATE\""),
        (&truncated, "truncated PEM"),
        (&bad_der, "certificate #1 is not a valid X.509"),
    ] {
        let err = strait_ca::files::read_certificates(path).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(expect), "{msg}");
    }
    let err = Identity::load(&truncated, &garbage).unwrap_err();
    assert!(err.to_string().contains("truncated.pem"), "{err}");
}

#[test]
fn verification_gives_the_precise_reason() {
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let (ca, _) = CertificateAuthority::create(&CaOptions::new(td()), now - 10 * day).unwrap();
    let (other_ca, _) = CertificateAuthority::create(&CaOptions::new(td()), now).unwrap();
    let other_td = TrustDomain::parse("other.org").unwrap();
    let (foreign_ca, _) =
        CertificateAuthority::create(&CaOptions::new(other_td.clone()), now).unwrap();
    let gw = SvidRequest::new(gateway_id("eu-west", "gw-1"));
    let any_gw = PeerRequirement::Gateway(td());
    let check = |chain: &[_], bundle, req: &PeerRequirement, at| {
        verify_chain(chain, bundle, req, PeerRole::Client, at).unwrap_err()
    };

    let good = ca.issue(&gw, KeyType::P256, now).unwrap();
    let stranger = other_ca.issue(&gw, KeyType::P256, now).unwrap();
    assert_eq!(
        check(&stranger.chain, ca.bundle(), &any_gw, now),
        VerifyError::UnknownIssuer
    );

    let expired = ca.issue(&gw, KeyType::P256, now - 2 * day).unwrap();
    assert!(matches!(
        check(&expired.chain, ca.bundle(), &any_gw, now),
        VerifyError::Expired { .. }
    ));
    assert!(matches!(
        check(&good.chain, ca.bundle(), &any_gw, now - day),
        VerifyError::NotYetValid { .. }
    ));

    let workload = SvidRequest::new(SpiffeId::workload(&td(), "shop", "web").unwrap());
    let wl = ca.issue(&workload, KeyType::P256, now).unwrap();
    assert!(matches!(
        check(&wl.chain, ca.bundle(), &any_gw, now),
        VerifyError::NotAGateway { .. }
    ));
    assert!(matches!(
        check(
            &good.chain,
            ca.bundle(),
            &PeerRequirement::GatewayInRegion(td(), "us-east".into()),
            now
        ),
        VerifyError::WrongRegion { .. }
    ));

    // A bundle that trusts both roots still holds each ID to our trust domain.
    let foreign = foreign_ca
        .issue(
            &SvidRequest::new(SpiffeId::gateway(&other_td, "eu-west", "gw-1").unwrap()),
            KeyType::P256,
            now,
        )
        .unwrap();
    let mut roots = ca.bundle().roots().to_vec();
    roots.extend(foreign_ca.bundle().roots().iter().cloned());
    let both = strait_ca::TrustBundle::from_roots(Path::new("both.pem"), roots).unwrap();
    assert!(matches!(
        check(&foreign.chain, &both, &any_gw, now),
        VerifyError::WrongTrustDomain { .. }
    ));
    assert!(verify_chain(&good.chain, &both, &any_gw, PeerRole::Client, now).is_ok());
    assert_eq!(
        check(&[], ca.bundle(), &any_gw, now),
        VerifyError::EmptyChain
    );
}

/// Certificates strait would never issue, made with rcgen directly, to show
/// the verifier's SVID rules hold for external certificates too.
#[test]
fn non_svid_leaves_are_refused() {
    use rcgen::{
        CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };
    let now = SystemTime::now();
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
    root.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let root_cert = root.self_signed(&root_key).unwrap();
    let issuer = Issuer::new(root, root_key);
    let bundle =
        strait_ca::TrustBundle::from_roots(Path::new("x.pem"), vec![root_cert.der().clone()])
            .unwrap();
    let leaf = |uris: &[&str], ca: bool, usages: Vec<KeyUsagePurpose>| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().unwrap()))
            .collect();
        p.is_ca = if ca {
            IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        p.key_usages = usages;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        vec![p.signed_by(&key, &issuer).unwrap().der().clone()]
    };
    let req = PeerRequirement::AnyInTrustDomain(td());
    let ds = || vec![KeyUsagePurpose::DigitalSignature];
    let err =
        |chain: Vec<_>| verify_chain(&chain, &bundle, &req, PeerRole::Client, now).unwrap_err();

    assert!(
        verify_chain(
            &leaf(&["spiffe://example.org/x"], false, ds()),
            &bundle,
            &req,
            PeerRole::Client,
            now
        )
        .is_ok()
    );
    assert_eq!(
        err(leaf(
            &["spiffe://example.org/a", "spiffe://example.org/b"],
            false,
            ds()
        )),
        VerifyError::MultipleUriSans { count: 2 }
    );
    assert_eq!(err(leaf(&[], false, ds())), VerifyError::NoUriSan);
    assert_eq!(
        err(leaf(&["spiffe://example.org/x"], true, ds())),
        VerifyError::LeafIsCa
    );
    assert_eq!(
        err(leaf(
            &["spiffe://example.org/x"],
            false,
            vec![KeyUsagePurpose::KeyEncipherment]
        )),
        VerifyError::MissingDigitalSignature
    );
    assert!(matches!(
        err(leaf(&["https://example.org/x"], false, ds())),
        VerifyError::InvalidSpiffeId {
            rule: SpiffeIdError::WrongScheme,
            ..
        }
    ));
    // Client-auth only: refused as a server.
    let chain = leaf(&["spiffe://example.org/x"], false, ds());
    assert!(matches!(
        verify_chain(&chain, &bundle, &req, PeerRole::Server, now).unwrap_err(),
        VerifyError::WrongUsage { .. }
    ));
}
