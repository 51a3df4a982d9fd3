//! W3C trace context identifiers carried in OPEN, so both gateways log a
//! stream under the same trace id.

use std::fmt;

/// A trace id and span id; the importing gateway makes them, the exporting
/// one logs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

impl TraceContext {
    /// From random bytes (the caller owns the randomness); an all-zero id
    /// is invalid in W3C trace context, so a zero byte is nudged to one.
    pub fn from_random(mut trace_id: [u8; 16], mut span_id: [u8; 8]) -> Self {
        if trace_id.iter().all(|b| *b == 0) {
            trace_id[15] = 1;
        }
        if span_id.iter().all(|b| *b == 0) {
            span_id[7] = 1;
        }
        TraceContext { trace_id, span_id }
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// A `traceparent` header value (version 00, sampled).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_hex(), self.span_hex())
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.trace_hex())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_w3c() {
        let t = TraceContext::from_random([0xab; 16], [0x01; 8]);
        assert_eq!(
            t.traceparent(),
            format!("00-{}-0101010101010101-01", "ab".repeat(16))
        );
        let zero = TraceContext::from_random([0; 16], [0; 8]);
        assert_ne!(zero.trace_id, [0; 16]);
        assert_ne!(zero.span_id, [0; 8]);
    }
}
