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
    #[error(
        "[[federation]] trust_domain {trust_domain} is this gateway's own trust domain; its roots belong in [identity] bundle"
    )]
    FederatesItself { trust_domain: String },
    #[error("advertise address: {0}")]
    Advertise(String),
    #[error("QUIC configuration rejected: {0}")]
    Quic(String),
    #[error(transparent)]
    Enroll(#[from] strait_enroll::EnrollError),
}

impl GatewayError {
    /// The error and every cause under it (the OS reason of a bind or a
    /// read), for logs and events that have no room for a chain.
    pub fn with_causes(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            let more = c.to_string();
            if !text.ends_with(&more) {
                text = format!("{text}: {more}");
            }
            cause = c.source();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_kept() {
        let e = GatewayError::Bind {
            what: "an import listener",
            addr: "127.0.0.1:1".parse().unwrap(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert_eq!(
            e.with_causes(),
            "cannot bind an import listener on 127.0.0.1:1: address in use"
        );
        let missing = GatewayError::Identity(strait_ca::CaError::Io {
            path: "b.pem".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        assert_eq!(missing.with_causes(), "b.pem: entity not found");
    }
}
