//! The identity in force (certificate, key, bundle, deny list), shared by
//! the endpoint's configs, the dialers, the mTLS imports and revocation;
//! `crate::reload` is the one place that changes it.

use std::sync::{Arc, RwLock};

use crate::config::FederationConfig;
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
    /// The `[[federation]]` entries of the configuration in force: the
    /// watcher loads their bundles (and again when a file changes).
    federation: RwLock<Vec<FederationConfig>>,
}

impl CurrentIdentity {
    pub fn new(tls: TlsIdentity, federation: Vec<FederationConfig>) -> Self {
        CurrentIdentity {
            tls: RwLock::new(Arc::new(tls)),
            files: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            federation: RwLock::new(federation),
        }
    }

    pub fn federation_sources(&self) -> Vec<FederationConfig> {
        self.federation
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A reloaded configuration federates other trust domains (or none):
    /// the watcher applies it at once.
    pub fn set_federation_sources(&self, sources: Vec<FederationConfig>) {
        *self.federation.write().unwrap_or_else(|p| p.into_inner()) = sources;
        self.wake.notify_one();
    }

    pub fn get(&self) -> Arc<TlsIdentity> {
        self.tls.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set(&self, tls: TlsIdentity) {
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tls);
    }
}
