//! Join tokens as an operator pastes them (or a stranger forges them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strait_ca::JoinToken;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(token) = JoinToken::decode(text)
    {
        let again = JoinToken::decode(&token.encode()).expect("a token we encoded decodes");
        assert_eq!(again.encode(), token.encode());
    }
});
