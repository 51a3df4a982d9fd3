//! Deny lists signed by their CA: verified against the trust bundle,
//! refused when forged, changed or signed by a stranger.

use std::path::Path;
use std::time::{Duration, SystemTime};

use strait_ca::signed_deny::{DenyListRefused, is_signed, strip_signature, verify};
use strait_ca::{CaOptions, CertificateAuthority, DenyEntry, DenyList, SpiffeId, TrustDomain};

fn list() -> DenyList {
    let mut l = DenyList::default();
    l.insert(DenyEntry::Id(
        SpiffeId::parse("spiffe://example.org/region/us-east/gateway/gw-3").unwrap(),
    ));
    l
}

fn ca(intermediate: bool) -> CertificateAuthority {
    let mut opts = CaOptions::new(TrustDomain::parse("example.org").unwrap());
    opts.intermediate = intermediate;
    CertificateAuthority::create(&opts, SystemTime::now())
        .unwrap()
        .0
}

#[test]
fn a_signed_list_verifies_against_its_bundle_and_reads_as_a_deny_list() {
    for intermediate in [false, true] {
        let ca = ca(intermediate);
        let now = SystemTime::now();
        let text = ca.sign_deny_list(&list(), now).unwrap();
        assert!(is_signed(&text));
        // Any deny-list reader takes it (the signature is a comment).
        assert_eq!(
            DenyList::parse(Path::new("deny.txt"), &text).unwrap(),
            list()
        );
        let signed = verify(&text, ca.bundle()).unwrap();
        assert_eq!(signed.list, list());
        let later = ca
            .sign_deny_list(&list(), now + Duration::from_secs(5))
            .unwrap();
        let later = verify(&later, ca.bundle()).unwrap();
        assert!(later.issued > signed.issued);
        assert_eq!(later.signer, signed.signer);
        // Signing again replaces the old signature line.
        assert_eq!(strip_signature(&text), list().to_text());
    }
}

#[test]
fn forged_changed_unsigned_and_strangers_lists_are_refused() {
    let ca = ca(true);
    let text = ca.sign_deny_list(&list(), SystemTime::now()).unwrap();
    // An entry taken out after signing (a revoked gateway unrevoking itself).
    let changed = text.replace("id spiffe://example.org/region/us-east/gateway/gw-3\n", "");
    assert_eq!(
        verify(&changed, ca.bundle()),
        Err(DenyListRefused::BadSignature)
    );
    // A replayed list with its date moved forward.
    let issued = text
        .split("issued=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let redated = text.replace(
        &format!("issued={issued}"),
        &format!("issued={}", issued.parse::<u64>().unwrap() + 100),
    );
    assert_eq!(
        verify(&redated, ca.bundle()),
        Err(DenyListRefused::BadSignature)
    );
    assert_eq!(
        verify(&list().to_text(), ca.bundle()),
        Err(DenyListRefused::Unsigned)
    );
    let stranger = ca_signed_by_another_root();
    assert_eq!(
        verify(&stranger, ca.bundle()),
        Err(DenyListRefused::UnknownSigner)
    );
    let garbled = text.replace("sig=", "sig=!!");
    assert!(matches!(
        verify(&garbled, ca.bundle()),
        Err(DenyListRefused::Malformed(_))
    ));
}

fn ca_signed_by_another_root() -> String {
    ca(false)
        .sign_deny_list(&list(), SystemTime::now())
        .unwrap()
}
