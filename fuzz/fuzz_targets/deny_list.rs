//! Deny lists in their text form, as fetched from the CA service or read
//! from a file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use strait_ca::DenyList;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = DenyList::parse(Path::new("deny.txt"), text);
    }
});
