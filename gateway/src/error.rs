//! The one error type of the gateway crate.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Toml { path: PathBuf, message: String },
    #[error("{}:{line}: {key}: {message}", path.display())]
    Config {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
    #[error(transparent)]
    Identity(#[from] strait_ca::CaError),
    #[error(
        "the certificate says {id}, but the configuration says gateway {name:?} in region {region:?}"
    )]
    IdentityMismatch {
        id: String,
        name: String,
        region: String,
    },
    #[error("cannot bind {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{key} cannot change while running; restart the gateway to change it")]
    NeedsRestart { key: String },
    #[error("advertise address: {0}")]
    Advertise(String),
    #[error("QUIC configuration rejected: {0}")]
    Quic(String),
    #[error(transparent)]
    Enroll(#[from] strait_enroll::EnrollError),
}
