//! Certificate chains a peer presents, as arbitrary DER: the input is
//! split into certificates (two length bytes before each) and verified
//! against a real CA's bundle, as a gateway verifies a peer.
#![no_main]

use std::sync::OnceLock;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use rustls_pki_types::CertificateDer;
use strait_ca::{
    CaOptions, CertificateAuthority, PeerRequirement, PeerRole, TrustBundle, TrustDomain,
    check_leaf, verify_chain,
};

fn bundle() -> &'static (TrustBundle, TrustDomain) {
    static B: OnceLock<(TrustBundle, TrustDomain)> = OnceLock::new();
    B.get_or_init(|| {
        let td = TrustDomain::parse("example.org").unwrap();
        let (ca, _) = CertificateAuthority::create(&CaOptions::new(td.clone()), SystemTime::now())
            .expect("a CA");
        (ca.bundle().clone(), td)
    })
}

fuzz_target!(|data: &[u8]| {
    let (bundle, td) = bundle();
    let mut chain = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 && chain.len() < 4 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        chain.push(CertificateDer::from(rest[2..2 + len].to_vec()));
        rest = &rest[2 + len..];
    }
    let now = SystemTime::now();
    if let Some(leaf) = chain.first() {
        let _ = check_leaf(leaf, now);
    }
    for role in [PeerRole::Client, PeerRole::Server] {
        let _ = verify_chain(
            &chain,
            bundle,
            &PeerRequirement::Gateway(td.clone()),
            role,
            now,
        );
    }
});
