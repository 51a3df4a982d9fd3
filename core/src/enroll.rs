//! The CA service protocol (ALPN `strait-ca/1`): one request per QUIC
//! stream, one answer, both postcard-encoded and ended by the stream's FIN.
//!
//! A joining gateway has no certificate yet and proves itself with a join
//! token; a renewing gateway proves itself with the certificate it holds
//! (mutual TLS), so a renewal needs no secret on disk beyond the key.

use serde::{Deserialize, Serialize};

/// ALPN of the CA service.
pub const CA_ALPN: &[u8] = b"strait-ca/1";

/// Largest request or answer (a chain, a bundle with a few roots and a deny
/// list fit many times over).
pub const MAX_CA_MESSAGE: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaRequest {
    /// Sign `csr_pem` for gateway `name` in `region` (the token's region
    /// when `None`), paid for with a join token.
    Join {
        token_id: String,
        secret: String,
        name: String,
        region: Option<String>,
        csr_pem: String,
    },
    /// Sign `csr_pem` for the identity of the certificate this connection
    /// was authenticated with.
    Renew { csr_pem: String },
    /// The current trust bundle and deny list.
    Bundle,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaResponse {
    Issued {
        /// Leaf first, then intermediates.
        chain_pem: String,
        bundle_pem: String,
        deny: String,
    },
    Bundle {
        bundle_pem: String,
        deny: String,
    },
    Refused {
        reason: String,
    },
}

/// Why a CA message could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed CA service message: {0}")]
pub struct CaMessageError(String);

pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CaMessageError> {
    let bytes = postcard::to_allocvec(msg).map_err(|e| CaMessageError(e.to_string()))?;
    if bytes.len() > MAX_CA_MESSAGE {
        return Err(CaMessageError(format!(
            "{} bytes, more than the {MAX_CA_MESSAGE} allowed",
            bytes.len()
        )));
    }
    Ok(bytes)
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CaMessageError> {
    postcard::from_bytes(bytes).map_err(|e| CaMessageError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let req = CaRequest::Join {
            token_id: "ab".into(),
            secret: "cd".into(),
            name: "gw-1".into(),
            region: None,
            csr_pem: "-----BEGIN".into(),
        };
        assert_eq!(decode::<CaRequest>(&encode(&req).unwrap()).unwrap(), req);
        let resp = CaResponse::Refused {
            reason: "no".into(),
        };
        assert_eq!(decode::<CaResponse>(&encode(&resp).unwrap()).unwrap(), resp);
        assert!(decode::<CaRequest>(&[0xff, 0xff]).is_err());
    }

    /// The fuzz target's seeds are real messages of every kind: a seed that
    /// stopped decoding would leave the fuzzer starting from noise.
    #[test]
    fn the_fuzz_seeds_decode() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/ca_message");
        let mut requests = 0;
        let mut responses = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("request-") {
                decode::<CaRequest>(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                requests += 1;
            } else {
                decode::<CaResponse>(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                responses += 1;
            }
        }
        assert!(
            requests >= 3 && responses >= 3,
            "{requests} requests, {responses} responses in {}",
            dir.display()
        );
    }
}
