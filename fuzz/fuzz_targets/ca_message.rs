//! The CA service's requests (what anyone who reaches its port sends) and
//! its answers (what a joining or renewing gateway reads).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strait_core::enroll::{self, CaRequest, CaResponse};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = enroll::decode::<CaRequest>(data)
        && let Ok(bytes) = enroll::encode(&req)
    {
        let back: CaRequest = enroll::decode(&bytes).expect("a request we encoded decodes");
        assert_eq!(back, req);
    }
    let _ = enroll::decode::<CaResponse>(data);
});
