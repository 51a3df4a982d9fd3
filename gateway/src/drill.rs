//! Drills: a gateway told by its admin endpoint to black-hole its tunnels
//! to a region, one way or both, for a bounded time that it ends by
//! itself. The cut is real at the packet level: [`FilteredSocket`] sits
//! between quinn and the UDP socket and drops datagrams to or from the
//! region's gateways, so probes, breakers, redials and replay meet the
//! same silence a partition makes, and nothing else in the gateway knows a
//! drill is on. What is in force, and when it ends, is decided by
//! `strait_core::drill::Drills`; this module keeps the address sets it
//! implies fresh (new tunnels and redials of the region are caught within
//! [`REFRESH`]) and records every start and end as an event and a metric.

use std::collections::HashSet;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use serde::Serialize;
use strait_core::drill::{BlackHole, Direction, DrillError, Drills};

use crate::directory::Directory;
use crate::events::EventLog;
use crate::handle::{PlaneHandle, now};
use crate::metrics as m;

/// How often the addresses of a cut region are looked up again while a
/// drill is in force.
pub const REFRESH: Duration = Duration::from_millis(200);

/// The addresses whose datagrams are dropped, and how many were.
#[derive(Debug, Default)]
pub struct PacketFilter {
    /// Set while any address is cut: the one thing the data path reads
    /// when no drill is in force.
    active: AtomicBool,
    out: RwLock<HashSet<SocketAddr>>,
    inbound: RwLock<HashSet<SocketAddr>>,
    dropped_out: AtomicU64,
    dropped_in: AtomicU64,
}

impl PacketFilter {
    fn set(&self, out: HashSet<SocketAddr>, inbound: HashSet<SocketAddr>) {
        let active = !out.is_empty() || !inbound.is_empty();
        *self.out.write().unwrap_or_else(|p| p.into_inner()) = out;
        *self.inbound.write().unwrap_or_else(|p| p.into_inner()) = inbound;
        self.active.store(active, Ordering::Release);
    }

    /// Whether a drill cuts `addr` (either way), or, with `any_port`, any
    /// address on its IP: a TCP carrier to or from a cut gateway would
    /// carry its tunnel around the drill.
    pub(crate) fn cuts(&self, addr: SocketAddr, any_port: bool) -> bool {
        if !self.active.load(Ordering::Acquire) {
            return false;
        }
        let hit = |set: &RwLock<HashSet<SocketAddr>>| {
            let set = set.read().unwrap_or_else(|p| p.into_inner());
            if any_port {
                set.iter().any(|a| a.ip() == addr.ip())
            } else {
                set.contains(&addr)
            }
        };
        hit(&self.out) || hit(&self.inbound)
    }

    fn drops_out(&self, to: SocketAddr) -> bool {
        self.active.load(Ordering::Acquire)
            && self
                .out
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&to)
    }

    /// Datagrams dropped so far, (outgoing, incoming).
    pub fn dropped(&self) -> (u64, u64) {
        (
            self.dropped_out.load(Ordering::Relaxed),
            self.dropped_in.load(Ordering::Relaxed),
        )
    }
}

/// quinn's UDP socket with the drill's filter in front of it.
#[derive(Debug)]
pub struct FilteredSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    filter: Arc<PacketFilter>,
}

impl FilteredSocket {
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, filter: Arc<PacketFilter>) -> Self {
        FilteredSocket { inner, filter }
    }
}

impl AsyncUdpSocket for FilteredSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if self.filter.drops_out(transmit.destination) {
            self.filter.dropped_out.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let n = ready!(self.inner.poll_recv(cx, bufs, meta))?;
            if !self.filter.active.load(Ordering::Acquire) {
                return Poll::Ready(Ok(n));
            }
            let cut = self
                .filter
                .inbound
                .read()
                .unwrap_or_else(|p| p.into_inner());
            let mut kept = 0;
            for i in 0..n {
                if cut.contains(&meta[i].addr) {
                    self.filter.dropped_in.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if kept != i {
                    let len = meta[i].len;
                    let (front, back) = bufs.split_at_mut(i);
                    front[kept][..len].copy_from_slice(&back[0][..len]);
                    meta[kept] = meta[i];
                }
                kept += 1;
            }
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
            // Everything read was dropped: read again, which registers the
            // waker once the socket is empty.
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// A drill in force, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DrillStatus {
    pub id: u64,
    pub kind: &'static str,
    pub region: String,
    pub direction: &'static str,
    /// Milliseconds until it ends by itself.
    pub ends_in_ms: u64,
    /// The addresses it cuts now.
    pub addresses: Vec<String>,
}

/// Why a drill request was refused.
#[derive(Debug, thiserror::Error)]
pub enum DrillRefused {
    #[error(transparent)]
    Drill(#[from] DrillError),
    #[error(
        "no gateway of region {0:?} is known to this gateway (no tunnel, seed or mesh report names it)"
    )]
    UnknownRegion(String),
}

/// A gateway's drills: what is in force and the filter that enforces it.
#[derive(Debug)]
pub struct DrillControl {
    drills: Mutex<Drills>,
    filter: Arc<PacketFilter>,
    region: String,
    handle: Arc<PlaneHandle>,
    directory: Arc<Directory>,
    events: Arc<EventLog>,
    /// Woken when a drill starts or ends early.
    changed: tokio::sync::Notify,
}

impl DrillControl {
    pub fn new(
        region: &str,
        filter: Arc<PacketFilter>,
        handle: Arc<PlaneHandle>,
        directory: Arc<Directory>,
        events: Arc<EventLog>,
    ) -> Self {
        DrillControl {
            drills: Mutex::new(Drills::new(region)),
            filter,
            region: region.to_owned(),
            handle,
            directory,
            events,
            changed: tokio::sync::Notify::new(),
        }
    }

    fn drills(&self) -> std::sync::MutexGuard<'_, Drills> {
        self.drills.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every address this gateway knows a gateway of `region` at: its
    /// tunnels' far ends, the seeds configured for the region and what the
    /// mesh says its gateways advertise.
    fn addresses_of(&self, region: &str) -> HashSet<SocketAddr> {
        let mut set: HashSet<SocketAddr> = self
            .handle
            .tunnels()
            .iter()
            .filter(|t| t.region == region)
            .map(|t| t.remote_address())
            .collect();
        let (seeds, known) = self.directory.with(|d| {
            (
                d.seed_addresses(region),
                d.known(now())
                    .into_iter()
                    .filter(|(g, _, _)| g.region == region)
                    .map(|(_, advertise, _)| advertise)
                    .collect::<Vec<_>>(),
            )
        });
        set.extend(
            seeds
                .iter()
                .chain(&known)
                .filter_map(|a| a.parse::<SocketAddr>().ok()),
        );
        set
    }

    /// Recomputes what the filter drops from the drills in force.
    fn refresh(&self) {
        let (out_regions, in_regions) = self.drills().cut_regions();
        let mut out = HashSet::new();
        let mut inbound = HashSet::new();
        for r in &out_regions {
            out.extend(self.addresses_of(r));
        }
        for r in &in_regions {
            inbound.extend(self.addresses_of(r));
        }
        self.filter.set(out, inbound);
    }

    /// Starts a black hole to `region`.
    pub fn start(
        &self,
        region: &str,
        direction: Direction,
        duration: Duration,
    ) -> Result<BlackHole, DrillRefused> {
        if region != self.region && self.addresses_of(region).is_empty() {
            return Err(DrillRefused::UnknownRegion(region.to_owned()));
        }
        let hole = self.drills().start(region, direction, duration, now())?;
        self.refresh();
        metrics::counter!(m::DRILLS, "region" => self.region.clone(), "kind" => "blackhole", "peer_region" => region.to_owned(), "direction" => direction.as_str()).increment(1);
        self.events.record(
            "drill",
            format!(
                "drill {} started: black hole to region {region} ({direction}) for {duration:?}",
                hole.id
            ),
        );
        tracing::warn!(drill = hole.id, peer_region = region, %direction, ?duration, "drill started: black-holing tunnels to a region");
        self.changed.notify_one();
        Ok(hole)
    }

    /// Ends drill `id` (every drill when `None`) before its time.
    pub fn end(&self, id: Option<u64>) -> Result<Vec<BlackHole>, DrillError> {
        let ended = match id {
            Some(id) => vec![self.drills().end(id)?],
            None => self.drills().end_all(),
        };
        self.refresh();
        for h in &ended {
            self.ended(h, "ended early by an admin request");
        }
        self.changed.notify_one();
        Ok(ended)
    }

    fn ended(&self, h: &BlackHole, how: &str) {
        self.events.record(
            "drill",
            format!(
                "drill {} {how}: black hole to region {} ({}) lifted",
                h.id, h.region, h.direction
            ),
        );
        tracing::warn!(
            drill = h.id,
            peer_region = h.region,
            "drill {how}: black hole lifted"
        );
    }

    /// The drills in force.
    pub fn status(&self) -> Vec<DrillStatus> {
        let now = now();
        let out = self.filter.out.read().unwrap_or_else(|p| p.into_inner());
        let inbound = self
            .filter
            .inbound
            .read()
            .unwrap_or_else(|p| p.into_inner());
        self.drills()
            .active()
            .iter()
            .map(|h| {
                let cut = self.addresses_of(&h.region);
                let mut addresses: Vec<String> = cut
                    .iter()
                    .filter(|a| out.contains(a) || inbound.contains(a))
                    .map(|a| a.to_string())
                    .collect();
                addresses.sort();
                DrillStatus {
                    id: h.id,
                    kind: "blackhole",
                    region: h.region.clone(),
                    direction: h.direction.as_str(),
                    ends_in_ms: h.until.saturating_duration_since(now).as_millis() as u64,
                    addresses,
                }
            })
            .collect()
    }

    /// `strait_drill_active` and `strait_drill_dropped_packets_total`, read
    /// at scrape time.
    pub fn families(&self) -> Vec<crate::scrape::Family> {
        let mut active = crate::scrape::Family::new(m::DRILL_ACTIVE);
        for h in self.drills().active() {
            active.push(
                vec![
                    ("region", self.region.clone()),
                    ("peer_region", h.region.clone()),
                    ("direction", h.direction.as_str().to_owned()),
                ],
                1.0,
            );
        }
        let mut dropped = crate::scrape::Family::new(m::DRILL_DROPPED);
        let (out, inbound) = self.filter.dropped();
        for (direction, n) in [("out", out), ("in", inbound)] {
            dropped.push(
                vec![
                    ("region", self.region.clone()),
                    ("direction", direction.to_owned()),
                ],
                n as f64,
            );
        }
        vec![active, dropped]
    }

    /// Ends drills when their time is up and keeps the cut addresses
    /// fresh while any is in force.
    pub async fn run(self: Arc<Self>) {
        loop {
            let next = self.drills().next_end();
            match next {
                None => self.changed.notified().await,
                Some(_) => {
                    tokio::select! {
                        _ = tokio::time::sleep(REFRESH) => {}
                        _ = self.changed.notified() => {}
                    }
                    let expired = self.drills().expire(now());
                    self.refresh();
                    for h in &expired {
                        self.ended(h, "ended by itself");
                    }
                }
            }
        }
    }
}
