//! The gateway configuration: every error names the file, line and field,
//! none panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use strait_gateway::GatewayConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(e) = GatewayConfig::parse_without_files(Path::new("gateway.toml"), text)
    {
        assert!(e.to_string().contains("gateway.toml"), "{e}");
    }
});
