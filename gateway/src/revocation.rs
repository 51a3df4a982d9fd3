//! Revocation over the mesh. A deny list signed by the CA that issued it
//! (`strait_ca::signed_deny`) is passed from gateway to gateway on the
//! control streams, so a revocation reaches a gateway through any path, not
//! only from its CA service: a gateway cut off from its CA but not from a
//! revoked peer still learns of it and cuts that peer.
//!
//! Each gateway keeps the newest list of each signing CA. A list is taken
//! only if its signature verifies against the bundle in force and it is
//! newer than the one held from that CA; then the identity is rebuilt with
//! the union of the deny file and every list held (`crate::reload`), which
//! cuts the tunnels it names, and the list goes on to every other peer. A
//! list already held, or older, stops there; a forged or changed one is
//! refused, counted and logged with the peer that sent it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use strait_ca::DenyList;
use strait_ca::signed_deny::{self, DenyListRefused, SignedDenyList};
use strait_core::frame::{Deny, Message};

use crate::current::CurrentIdentity;
use crate::events::EventLog;
use crate::handle::PlaneHandle;
use crate::metrics as m;
use crate::tunnel::Tunnel;

/// What became of a signed list offered to this gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offered {
    /// Newer than the one held from its CA: in force now.
    Applied {
        entries: usize,
        issued: u64,
    },
    /// The same or an older list of its CA.
    Stale,
    Refused(DenyListRefused),
}

impl Offered {
    fn label(&self) -> &'static str {
        match self {
            Offered::Applied { .. } => "applied",
            Offered::Stale => "stale",
            Offered::Refused(_) => "refused",
        }
    }
}

/// The newest signed deny list of each CA this gateway has seen.
#[derive(Debug)]
pub struct Revocations {
    lists: Mutex<BTreeMap<String, SignedDenyList>>,
    /// Bumped whenever a list is taken: the identity watcher rebuilds.
    generation: AtomicU64,
    identity: Arc<CurrentIdentity>,
    handle: Arc<PlaneHandle>,
    events: Arc<EventLog>,
    region: String,
}

impl Revocations {
    pub fn new(
        identity: Arc<CurrentIdentity>,
        handle: Arc<PlaneHandle>,
        events: Arc<EventLog>,
        region: &str,
    ) -> Self {
        Revocations {
            lists: Mutex::new(BTreeMap::new()),
            generation: AtomicU64::new(0),
            identity,
            handle,
            events,
            region: region.to_owned(),
        }
    }

    fn lists(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SignedDenyList>> {
        self.lists.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes each time a list is taken.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Every entry of every list held.
    pub fn union(&self) -> DenyList {
        let mut all = DenyList::default();
        for l in self.lists().values() {
            all.extend(&l.list);
        }
        all
    }

    /// Checks `text` and takes it if it is the newest of its CA.
    pub fn offer(&self, text: &str) -> Offered {
        let signed = match signed_deny::verify(text, &self.identity.get().bundle) {
            Ok(s) => s,
            Err(e) => return Offered::Refused(e),
        };
        let mut lists = self.lists();
        if lists
            .get(&signed.signer)
            .is_some_and(|held| held.issued >= signed.issued)
        {
            return Offered::Stale;
        }
        let outcome = Offered::Applied {
            entries: signed.list.len(),
            issued: signed.issued,
        };
        lists.insert(signed.signer.clone(), signed);
        drop(lists);
        self.generation.fetch_add(1, Ordering::AcqRel);
        outcome
    }

    fn count(&self, source: &'static str, outcome: &Offered) {
        metrics::counter!(m::DENY_LISTS, "region" => self.region.clone(), "source" => source, "result" => outcome.label()).increment(1);
    }

    /// A signed list from this gateway's own deny file (its CA service's):
    /// taken like one from a peer, and passed on to every peer. An unsigned
    /// file (kept by hand) is not passed on.
    pub async fn from_file(&self, text: &str) {
        if !signed_deny::is_signed(text) {
            return;
        }
        let outcome = self.offer(text);
        self.count("file", &outcome);
        match outcome {
            Offered::Applied { .. } => self.pass_on(text, None).await,
            Offered::Refused(e) => {
                self.events
                    .record("deny_list_refused", format!("the deny file: {e}"));
                tracing::warn!("the signed deny file does not verify; not passed on: {e}");
            }
            Offered::Stale => {}
        }
    }

    /// A list a peer sent on its control stream.
    pub async fn received(&self, from: &Tunnel, text: String) {
        let outcome = self.offer(&text);
        self.count("mesh", &outcome);
        match &outcome {
            Offered::Applied { entries, issued } => {
                self.events.record(
                    "deny_list_applied",
                    format!(
                        "from {} ({}): {entries} entries, signed at {}",
                        from.name,
                        from.region,
                        strait_ca::time::rfc3339(strait_ca::time::from_unix(*issued as i64))
                    ),
                );
                tracing::info!(peer = %from.peer, entries, "signed deny list from a peer applied; passing it on");
                // The identity watcher rebuilds with it and cuts what it names.
                self.identity.wake.notify_one();
                self.pass_on(&text, Some(from.id)).await;
            }
            Offered::Stale => {
                tracing::debug!(peer = %from.peer, "deny list from a peer already held");
            }
            Offered::Refused(e) => {
                self.events.record(
                    "deny_list_refused",
                    format!("from {} ({}): {e}", from.name, from.region),
                );
                tracing::warn!(peer = %from.peer, "deny list from a peer refused: {e}");
            }
        }
    }

    /// Sends every list held to a tunnel that just came up.
    pub async fn greet(&self, tunnel: &Tunnel) {
        let texts: Vec<String> = self.lists().values().map(|l| l.text.clone()).collect();
        for text in texts {
            tunnel
                .send_control(&Message::Deny(Deny { signed_list: text }))
                .await;
        }
    }

    async fn pass_on(&self, text: &str, except: Option<strait_core::plane::ConnId>) {
        let msg = Message::Deny(Deny {
            signed_list: text.to_owned(),
        });
        for t in self.handle.tunnels() {
            if Some(t.id) != except {
                t.send_control(&msg).await;
            }
        }
    }
}
