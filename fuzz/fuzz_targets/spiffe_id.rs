//! SPIFFE IDs and trust domains: what parses prints back as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strait_ca::{SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = SpiffeId::parse(text) {
        let again = SpiffeId::parse(&id.to_string()).expect("an ID we printed parses");
        assert_eq!(again, id);
    }
    if let Ok(td) = TrustDomain::parse(text) {
        let again = TrustDomain::parse(&td.to_string()).expect("a trust domain we printed parses");
        assert_eq!(again, td);
    }
});
