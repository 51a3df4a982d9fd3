//! The one error type of the enrollment crate.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Loading the CA, issuing, making a key, or reading and writing
    /// identity files.
    #[error(transparent)]
    Ca(#[from] strait_ca::CaError),
    /// A join token that cannot be used for this request.
    #[error(transparent)]
    Token(#[from] strait_ca::TokenRefusal),
    #[error("cannot bind the CA service on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("QUIC configuration of {side} rejected: {reason}")]
    Quic { side: &'static str, reason: String },
    #[error("cannot reach the CA service at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("the CA service at {addr} refused: {reason}")]
    Refused { addr: String, reason: String },
}
