//! The frame codec after the handshake: whatever a peer sends on a control
//! or service stream. Every frame decodes to a message or a clear error,
//! never a panic; a message that decodes encodes again and decodes to
//! itself; a probe datagram decodes or is ignored.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use strait_core::frame::{self, Probe};

fuzz_target!(|data: &[u8]| {
    let _ = Probe::decode(data);
    let mut src = BytesMut::from(data);
    // Frames back to back, as a stream carries them.
    while let Ok(Some(msg)) = frame::decode(&mut src) {
        let mut again = BytesMut::new();
        if frame::encode(&msg, &mut again).is_ok() {
            let back = frame::decode(&mut again)
                .expect("a frame we encoded decodes")
                .expect("a frame we encoded is whole");
            assert_eq!(back, msg, "a decoded message did not survive encoding");
            assert!(again.is_empty());
        }
    }
});
