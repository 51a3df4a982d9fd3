//! netsim's topology files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use strait_netsim::topology::Topology;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(e) = Topology::parse(Path::new("topology.toml"), text)
    {
        assert!(e.to_string().contains("topology.toml"), "{e}");
    }
});
