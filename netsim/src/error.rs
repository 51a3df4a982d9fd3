//! The one error type of netsim.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NetsimError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Toml { path: PathBuf, message: String },
    #[error("{}:{line}: {field}: {message}", path.display())]
    Topology {
        path: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    Incomplete { path: PathBuf, message: String },
    #[error("unknown region {name:?} (known: {})", known.join(", "))]
    UnknownRegion { name: String, known: Vec<String> },
    #[error("{a} and {b} are the same region; links join two different regions")]
    SameRegion { a: String, b: String },
    #[error("cannot bind {what} on {addr}")]
    Bind {
        what: String,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {field}: {message}")]
    InvalidChange {
        field: &'static str,
        message: String,
    },
    #[error("control API at {addr}: {message}")]
    Control {
        addr: std::net::SocketAddr,
        message: String,
    },
}
