//! Deny lists in their text form, as fetched from the CA service, read
//! from a file or sent by a peer (DENY): parsed, and their signature
//! checked against a real CA's bundle. A list that verifies is the
//! bundle's CA's, which the fuzzer cannot forge.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;
use std::time::SystemTime;
use strait_ca::{CaOptions, CertificateAuthority, DenyList, TrustBundle, TrustDomain};

fn bundle() -> &'static TrustBundle {
    static BUNDLE: OnceLock<TrustBundle> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let opts = CaOptions::new(TrustDomain::parse("example.org").unwrap());
        let (ca, _) = CertificateAuthority::create(&opts, SystemTime::now()).unwrap();
        ca.bundle().clone()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = DenyList::parse(Path::new("deny.txt"), text);
        assert!(
            strait_ca::signed_deny::verify(text, bundle()).is_err(),
            "a list the fuzzer made verified against a CA it never had"
        );
    }
});
