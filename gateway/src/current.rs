//! The identity in force (certificate, key, bundle, deny list), shared by
//! the endpoint's configs, the dialers, the mTLS imports and revocation;
//! `crate::reload` is the one place that changes it.

use std::sync::{Arc, RwLock};

use crate::tls::TlsIdentity;

/// The identity in force, shared by the endpoint's configs and the dialers.
#[derive(Debug)]
pub struct CurrentIdentity {
    tls: RwLock<Arc<TlsIdentity>>,
    /// Held while the files are written (renewal) or read (reload), so a
    /// reload never sees a new key with an old certificate.
    pub files: tokio::sync::Mutex<()>,
    /// Wakes the watcher before its next poll.
    pub wake: tokio::sync::Notify,
}

impl CurrentIdentity {
    pub fn new(tls: TlsIdentity) -> Self {
        CurrentIdentity {
            tls: RwLock::new(Arc::new(tls)),
            files: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
        }
    }

    pub fn get(&self) -> Arc<TlsIdentity> {
        self.tls.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set(&self, tls: TlsIdentity) {
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tls);
    }
}
