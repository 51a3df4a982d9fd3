//! The UDP relay: a local socket that forwards datagrams to one target
//! through a link in each direction, with a separate upstream socket per
//! client address so that QUIC (or anything else) runs through unchanged.
//! A routed relay picks the links per client address instead (the sender's
//! region to the target's), so one address can stand for a gateway that
//! gateways of every region dial, as an advertised address is.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn_udp::RecvMeta;
use tokio::sync::watch;

use crate::batch::{BatchSocket, MAX_RECEIVE, SendBatch};
use crate::link::Fate;
use crate::network::{SharedLink, lock};
use crate::schedule::{DelayQueue, sleep_until};

/// At most this many client addresses per relay; datagrams from further
/// clients are dropped (and logged).
pub const MAX_FLOWS: usize = 1024;
/// Receive buffers per batch: client side, and per flow on the target side.
const FORWARD_BATCH: usize = 8;
const REVERSE_BATCH: usize = 4;

/// The links of one client: towards the target and back. `None` drops
/// the client's datagrams (a sender of no known region).
pub type Router = Arc<dyn Fn(SocketAddr) -> Option<(SharedLink, SharedLink)> + Send + Sync>;

/// How a relay finds a client's links.
#[derive(Clone)]
enum Links {
    Fixed(SharedLink, SharedLink),
    Routed(Router),
}

impl Links {
    fn for_client(&self, client: SocketAddr) -> Option<(SharedLink, SharedLink)> {
        match self {
            Links::Fixed(f, r) => Some((f.clone(), r.clone())),
            Links::Routed(route) => route(client),
        }
    }
}

/// A running UDP relay; dropping it stops every task it started.
#[derive(Debug)]
pub struct UdpRelay {
    local: SocketAddr,
    target: SocketAddr,
    shutdown: watch::Sender<bool>,
}

impl UdpRelay {
    /// Binds `listen` and forwards what arrives there to `target` through
    /// `forward`; replies come back through `reverse`.
    pub async fn bind(
        listen: SocketAddr,
        target: SocketAddr,
        forward: SharedLink,
        reverse: SharedLink,
    ) -> io::Result<UdpRelay> {
        Self::start(listen, target, Links::Fixed(forward, reverse))
    }

    /// Binds `listen` and forwards to `target` through the links `route`
    /// gives for each client address (looked up once per client).
    pub async fn bind_routed(
        listen: SocketAddr,
        target: SocketAddr,
        route: Router,
    ) -> io::Result<UdpRelay> {
        Self::start(listen, target, Links::Routed(route))
    }

    fn start(listen: SocketAddr, target: SocketAddr, links: Links) -> io::Result<UdpRelay> {
        let socket = Arc::new(BatchSocket::bind(listen, None)?);
        let local = socket.local_addr()?;
        let (shutdown, rx) = watch::channel(false);
        let forwarder = Forwarder {
            socket,
            target,
            links,
            shutdown: rx,
            flows: HashMap::new(),
            queue: DelayQueue::default(),
            batch: SendBatch::default(),
        };
        tokio::spawn(forwarder.run());
        Ok(UdpRelay {
            local,
            target,
            shutdown,
        })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Most bytes one direction of a relay holds for later delivery; beyond
/// it (a long latency at a high rate) datagrams are dropped as queue-full.
const MAX_DELAYED_BYTES: usize = 64 << 20;
/// A flow whose client sent nothing for this long is forgotten, like a NAT
/// mapping; its upstream socket closes.
const FLOW_IDLE: Duration = Duration::from_secs(120);
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Queues an admitted datagram for later, or says how many copies to send
/// right away (nothing waiting ahead of it and already due). `make` copies
/// the datagram only when it has to wait. `None` when it had to wait and
/// the queue is full.
fn plan<T: Clone>(
    fate: Fate,
    queue: &mut DelayQueue<T>,
    now: Instant,
    len: usize,
    make: impl FnOnce() -> T,
) -> Option<usize> {
    let Fate::Deliver { at, duplicate_at } = fate else {
        return Some(0);
    };
    let mut make = Some(make);
    let mut item: Option<T> = None;
    let mut send_now = 0;
    for at in std::iter::once(at).chain(duplicate_at) {
        if at <= now && queue.is_empty() {
            send_now += 1;
            continue;
        }
        if queue.bytes() + len > MAX_DELAYED_BYTES {
            return if send_now > 0 { Some(send_now) } else { None };
        }
        if let Some(make) = make.take() {
            item = Some(make());
        }
        if let Some(it) = &item {
            queue.push(at, len, it.clone());
        }
    }
    Some(send_now)
}

/// Receive buffers for one socket, and the datagrams they hold.
struct Inbox {
    bufs: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
}

impl Inbox {
    fn new(n: usize) -> Self {
        Inbox {
            bufs: vec![vec![0u8; MAX_RECEIVE]; n],
            meta: vec![RecvMeta::default(); n],
        }
    }

    async fn recv(&mut self, socket: &BatchSocket) -> io::Result<usize> {
        let mut iovs: Vec<IoSliceMut<'_>> =
            self.bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        socket.recv(&mut iovs, &mut self.meta).await
    }

    /// The datagrams of the first `n` buffers: GRO may have put several of
    /// one sender, `stride` bytes apart, in one buffer.
    fn datagrams(&self, n: usize) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.meta[..n]
            .iter()
            .zip(&self.bufs)
            .flat_map(|(meta, buf)| {
                let stride = meta.stride.max(1);
                buf[..meta.len].chunks(stride).map(move |d| (meta.addr, d))
            })
    }
}

enum Wake {
    Shutdown,
    Due,
    Received(io::Result<usize>),
    Sweep,
}

/// The client-to-target side of a relay: its flows and delayed datagrams.
struct Forwarder {
    socket: Arc<BatchSocket>,
    target: SocketAddr,
    links: Links,
    shutdown: watch::Receiver<bool>,
    flows: HashMap<SocketAddr, Flow>,
    queue: DelayQueue<(Arc<BatchSocket>, Arc<[u8]>)>,
    batch: SendBatch,
}

/// One client address and its upstream socket.
struct Flow {
    upstream: Arc<BatchSocket>,
    forward: SharedLink,
    last_seen: Instant,
    reverse_task: tokio::task::AbortHandle,
}

impl Forwarder {
    async fn run(mut self) {
        let mut inbox = Inbox::new(FORWARD_BATCH);
        let mut shutdown = self.shutdown.clone();
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = tokio::select! {
                _ = shutdown.changed() => Wake::Shutdown,
                _ = sleep_until(self.queue.next_due()) => Wake::Due,
                n = inbox.recv(&self.socket) => Wake::Received(n),
                _ = sweep.tick() => Wake::Sweep,
            };
            match wake {
                Wake::Shutdown => {
                    for flow in self.flows.values() {
                        flow.reverse_task.abort();
                    }
                    return;
                }
                Wake::Sweep => {
                    let now = Instant::now();
                    self.flows.retain(|_, flow| {
                        let live = now.duration_since(flow.last_seen) < FLOW_IDLE;
                        if !live {
                            flow.reverse_task.abort();
                        }
                        live
                    });
                }
                Wake::Due => {
                    let now = Instant::now();
                    while let Some((upstream, data)) = self.queue.pop_due(now) {
                        self.batch.push(&upstream, self.target, &data).await;
                    }
                }
                Wake::Received(Ok(n)) => {
                    for (client, data) in inbox.datagrams(n) {
                        self.handle(client, data).await;
                    }
                }
                Wake::Received(Err(_)) => {}
            }
            self.batch.flush().await;
        }
    }

    async fn handle(&mut self, client: SocketAddr, data: &[u8]) {
        let now = Instant::now();
        let (upstream, forward) = match self.flows.get_mut(&client) {
            Some(flow) => {
                flow.last_seen = now;
                (flow.upstream.clone(), flow.forward.clone())
            }
            None => {
                let Some(flow) = self.open_flow(client, now) else {
                    return;
                };
                let found = (flow.upstream.clone(), flow.forward.clone());
                self.flows.insert(client, flow);
                found
            }
        };
        let fate = lock(&forward).admit(data.len(), now);
        let planned = plan(fate, &mut self.queue, now, data.len(), || {
            (upstream.clone(), Arc::from(data))
        });
        let Some(copies) = planned else {
            lock(&forward).overflowed(data.len());
            return;
        };
        for _ in 0..copies {
            self.batch.push(&upstream, self.target, data).await;
        }
    }

    fn open_flow(&self, client: SocketAddr, now: Instant) -> Option<Flow> {
        if self.flows.len() >= MAX_FLOWS {
            tracing::warn!(%client, "relay has {MAX_FLOWS} flows already; dropping datagrams from a new client");
            return None;
        }
        let Some((forward, reverse)) = self.links.for_client(client) else {
            tracing::debug!(%client, "no route for this client; dropping its datagrams");
            return None;
        };
        let bind: SocketAddr = if self.target.is_ipv4() {
            ([127, 0, 0, 1], 0).into()
        } else {
            (std::net::Ipv6Addr::LOCALHOST, 0).into()
        };
        let upstream = match BatchSocket::bind(bind, Some(self.target)) {
            Ok(u) => Arc::new(u),
            Err(e) => {
                tracing::warn!(%client, target = %self.target, "cannot open an upstream socket: {e}");
                return None;
            }
        };
        let flow = ReverseFlow {
            upstream: upstream.clone(),
            socket: self.socket.clone(),
            client,
            reverse,
            queue: DelayQueue::default(),
            batch: SendBatch::default(),
        };
        let task = tokio::spawn(flow.run(self.shutdown.clone()));
        Some(Flow {
            upstream,
            forward,
            last_seen: now,
            reverse_task: task.abort_handle(),
        })
    }
}

/// The target-to-client side of one flow.
struct ReverseFlow {
    upstream: Arc<BatchSocket>,
    socket: Arc<BatchSocket>,
    client: SocketAddr,
    reverse: SharedLink,
    queue: DelayQueue<Arc<[u8]>>,
    batch: SendBatch,
}

impl ReverseFlow {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut inbox = Inbox::new(REVERSE_BATCH);
        loop {
            let wake = tokio::select! {
                _ = shutdown.changed() => Wake::Shutdown,
                _ = sleep_until(self.queue.next_due()) => Wake::Due,
                n = inbox.recv(&self.upstream) => Wake::Received(n),
            };
            match wake {
                Wake::Shutdown | Wake::Sweep => return,
                Wake::Due => {
                    let now = Instant::now();
                    while let Some(data) = self.queue.pop_due(now) {
                        self.batch.push(&self.socket, self.client, &data).await;
                    }
                }
                Wake::Received(Ok(n)) => {
                    for (_, data) in inbox.datagrams(n) {
                        let now = Instant::now();
                        let fate = lock(&self.reverse).admit(data.len(), now);
                        let planned =
                            plan(fate, &mut self.queue, now, data.len(), || Arc::from(data));
                        let Some(copies) = planned else {
                            lock(&self.reverse).overflowed(data.len());
                            continue;
                        };
                        for _ in 0..copies {
                            self.batch.push(&self.socket, self.client, data).await;
                        }
                    }
                }
                // ECONNREFUSED: the target was not listening when an earlier
                // datagram arrived. The flow stays; the target may start.
                Wake::Received(Err(_)) => {}
            }
            self.batch.flush().await;
        }
    }
}
