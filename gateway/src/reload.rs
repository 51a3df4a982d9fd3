//! Certificate, key, bundle and deny list files are watched (polled once a
//! probe interval: no inotify dependency, and it works on the projected
//! volumes Kubernetes mounts secrets on) and reloaded when they change: new
//! handshakes use the new identity, open tunnels keep going, except those
//! to peers the deny list now names, or of a trust domain no longer
//! federated, which are cut at once. A set of files
//! that does not load (half-written, wrong key, wrong gateway) is refused,
//! logged and counted, and the running identity stays. Renewal writes the
//! files and wakes the watcher, so there is one way an identity changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::GatewayError;
use crate::config::{FederationConfig, IdentityPaths, TunnelSettings};
use crate::events::EventLog;
use crate::handle::PlaneHandle;
use crate::tls::TlsIdentity;
use crate::wire::code;

pub use crate::current::CurrentIdentity;

/// What the watched files looked like: (modified, length) of each, and
/// which trust domains are federated.
fn fingerprint(paths: &IdentityPaths, federation: &[FederationConfig]) -> Fingerprint {
    let files = [&paths.cert, &paths.key, &paths.bundle, &paths.deny]
        .into_iter()
        .chain(federation.iter().map(|f| &f.bundle))
        .map(|p: &PathBuf| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect();
    (files, federation.to_vec())
}

type Fingerprint = (Vec<Option<(SystemTime, u64)>>, Vec<FederationConfig>);

/// Watches the identity files every `poll` and swaps the identity in when
/// they change.
#[allow(clippy::too_many_arguments)]
pub async fn watch(
    poll: Duration,
    paths: IdentityPaths,
    name: String,
    region: String,
    current: Arc<CurrentIdentity>,
    endpoint: quinn::Endpoint,
    settings: Arc<TunnelSettings>,
    handle: Arc<PlaneHandle>,
    events: Arc<EventLog>,
    revocations: Arc<crate::revocation::Revocations>,
) {
    let mut seen = (
        fingerprint(&paths, &current.federation_sources()),
        revocations.generation(),
    );
    loop {
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = current.wake.notified() => {}
        }
        let files = current.files.lock().await;
        let federation = current.federation_sources();
        let now = fingerprint(&paths, &federation);
        if (&now, revocations.generation()) == (&seen.0, seen.1) {
            continue;
        }
        let files_changed = now != seen.0;
        let deny_text = files_changed
            .then(|| std::fs::read_to_string(&paths.deny).ok())
            .flatten();
        let loaded = load(&paths, &federation, &name, &region);
        drop(files);
        // A signed list in the deny file (the CA's) is held and passed on
        // like one from a peer.
        if let Some(text) = deny_text {
            revocations.from_file(&text).await;
        }
        seen = (now, revocations.generation());
        // In force: the deny file and every signed list held from the mesh.
        let loaded = loaded.map(|mut tls| {
            tls.deny.extend(&revocations.union());
            tls
        });
        match loaded.and_then(|tls| {
            let server = tls.server_config(&settings)?;
            let client = tls.client_config(None, &settings)?;
            Ok((tls, server, client))
        }) {
            Ok((tls, server, client)) => {
                let id = tls.id().to_string();
                let expiry = tls.identity.not_after;
                let deny = tls.deny.clone();
                let deny_changed = deny != current.get().deny;
                endpoint.set_server_config(Some(server));
                let mut endpoint = endpoint.clone();
                endpoint.set_default_client_config(client);
                current.set(tls);
                let unix = expiry
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                let labels = [("region", region.clone()), ("id", id.clone())];
                metrics::gauge!(crate::metrics::CERT_EXPIRY, &labels).set(unix.as_secs_f64());
                events.record(
                    "certificate_reloaded",
                    format!("{id}, valid until {}", strait_ca::time::rfc3339(expiry)),
                );
                tracing::info!(%id, not_after = %strait_ca::time::rfc3339(expiry), deny_entries = deny.len(), "identity reloaded; new handshakes use it, open tunnels keep going");
                if deny_changed {
                    tracing::info!(entries = deny.len(), "deny list loaded");
                }
                cut_revoked(&handle, &events, &deny, &region);
                cut_unfederated(&handle, &events, &current.get(), &region);
            }
            Err(e) => {
                let labels = [("region", region.clone())];
                metrics::counter!(crate::metrics::RELOADS_FAILED, &labels).increment(1);
                let e = e.with_causes();
                events.record("certificate_reload_failed", e.clone());
                tracing::error!(
                    "identity files changed but do not load; keeping the running identity: {e}"
                );
            }
        }
    }
}

/// Cuts the tunnels (superseded ones included) whose peer certificate
/// `deny` names, at once: their streams are reset, a revoked peer keeps
/// nothing. Returns how many; the metric and the event count each peer
/// once, however many connections (lanes) it had.
pub fn cut_revoked(
    handle: &PlaneHandle,
    events: &EventLog,
    deny: &strait_ca::DenyList,
    region: &str,
) -> usize {
    let mut cut = 0;
    let mut peers = std::collections::HashSet::new();
    for t in handle.tunnels() {
        if t.is_closed() {
            continue;
        }
        let Some(leaf) = crate::tls::peer_leaf(&t.conn) else {
            continue;
        };
        let Some(entry) = deny.denies_certificate(&t.peer, &leaf) else {
            continue;
        };
        t.conn.close(code::REVOKED, b"certificate revoked");
        cut += 1;
        if peers.insert(t.key()) {
            let labels = [("region", region.to_owned()), ("peer", t.name.clone())];
            metrics::counter!(crate::metrics::PEERS_REVOKED, &labels).increment(1);
            events.record(
                "peer_revoked",
                format!("{} cut: deny list entry `{entry}`", t.peer),
            );
        }
        tracing::warn!(peer = %t.peer, peer_region = %t.region, %entry, conn = %t.id,
            "tunnel cut: the deny list names the peer's certificate");
    }
    cut
}

/// Cuts the tunnels to gateways of a trust domain no longer federated (its
/// `[[federation]]` removed), at once: their streams are reset.
pub fn cut_unfederated(
    handle: &PlaneHandle,
    events: &EventLog,
    tls: &TlsIdentity,
    region: &str,
) -> usize {
    let mut cut = 0;
    let mut peers = std::collections::HashSet::new();
    for t in handle.tunnels() {
        if t.is_closed() || tls.accepts_trust_domain(t.peer.trust_domain()) {
            continue;
        }
        t.conn
            .close(code::NOT_FEDERATED, b"trust domain not federated");
        cut += 1;
        if peers.insert(t.key()) {
            events.record(
                "peer_unfederated",
                format!(
                    "{} cut: trust domain {} is no longer federated",
                    t.peer,
                    t.peer.trust_domain()
                ),
            );
        }
        tracing::warn!(peer = %t.peer, peer_region = %t.region, conn = %t.id, %region,
            "tunnel cut: its trust domain is no longer federated");
    }
    cut
}

fn load(
    paths: &IdentityPaths,
    federation: &[FederationConfig],
    name: &str,
    region: &str,
) -> Result<TlsIdentity, GatewayError> {
    let tls = TlsIdentity::load(paths)?.with_federation(federation)?;
    tls.require_gateway(name, region)?;
    Ok(tls)
}
