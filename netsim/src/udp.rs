//! The UDP relay: a local socket that forwards datagrams to one target
//! through a link in each direction, with a separate upstream socket per
//! client address so that QUIC (or anything else) runs through unchanged.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::link::Fate;
use crate::network::{SharedLink, lock};
use crate::schedule::{DelayQueue, sleep_until};

/// At most this many client addresses per relay; datagrams from further
/// clients are dropped (and logged once each).
pub const MAX_FLOWS: usize = 4096;
const MAX_DATAGRAM: usize = 65_535;

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
        let socket = Arc::new(bind_socket(listen)?);
        let local = socket.local_addr()?;
        let (shutdown, rx) = watch::channel(false);
        tokio::spawn(forward_loop(socket, target, forward, reverse, rx));
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

/// Socket buffers asked for: bursts of a fast sender must not overflow the
/// default ~208 KB receive buffer while the relay task waits for a core.
/// The kernel caps the request at `net.core.rmem_max`/`wmem_max`.
const SOCKET_BUFFER: usize = 4 << 20;

fn bind_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Queues an admitted datagram for later, or says how many copies to send
/// right away (nothing waiting ahead of it and already due). `make` copies
/// the datagram only when it has to wait.
fn plan<T: Clone>(
    fate: Fate,
    queue: &mut DelayQueue<T>,
    now: Instant,
    make: impl FnOnce() -> T,
) -> usize {
    let Fate::Deliver { at, duplicate_at } = fate else {
        return 0;
    };
    let mut make = Some(make);
    let mut item: Option<T> = None;
    let mut send_now = 0;
    for at in std::iter::once(at).chain(duplicate_at) {
        if at <= now && queue.is_empty() {
            send_now += 1;
        } else if let Some(make) = make.take() {
            let it = item.insert(make());
            queue.push(at, it.clone());
        } else if let Some(it) = &item {
            queue.push(at, it.clone());
        }
    }
    send_now
}

/// Datagrams handled per wake-up before the task yields: draining the
/// socket without a round through the scheduler per datagram is what lets
/// one relay forward well over 100,000 datagrams a second.
const BURST: usize = 64;

/// The client-to-target side of a relay: its flows and delayed datagrams.
struct Forwarder {
    socket: Arc<UdpSocket>,
    target: SocketAddr,
    forward: SharedLink,
    reverse: SharedLink,
    shutdown: watch::Receiver<bool>,
    flows: HashMap<SocketAddr, Arc<UdpSocket>>,
    queue: DelayQueue<(Arc<UdpSocket>, Arc<[u8]>)>,
}

impl Forwarder {
    async fn handle(&mut self, data: &[u8], client: SocketAddr) {
        let upstream = match self.flows.get(&client) {
            Some(u) => u.clone(),
            None => {
                let opened = open_flow(
                    &self.socket,
                    client,
                    self.target,
                    &self.reverse,
                    &self.shutdown,
                    self.flows.len(),
                )
                .await;
                let Some(u) = opened else { return };
                self.flows.insert(client, u.clone());
                u
            }
        };
        let now = Instant::now();
        let fate = lock(&self.forward).admit(data.len(), now);
        let copies = plan(fate, &mut self.queue, now, || {
            (upstream.clone(), Arc::from(data))
        });
        for _ in 0..copies {
            let _ = upstream.send(data).await;
        }
    }
}

async fn forward_loop(
    socket: Arc<UdpSocket>,
    target: SocketAddr,
    forward: SharedLink,
    reverse: SharedLink,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut f = Forwarder {
        socket: socket.clone(),
        target,
        forward,
        reverse,
        shutdown: shutdown.clone(),
        flows: HashMap::new(),
        queue: DelayQueue::default(),
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = sleep_until(f.queue.next_due()) => {
                let now = Instant::now();
                while let Some((upstream, data)) = f.queue.pop_due(now) {
                    let _ = upstream.send(&data).await;
                }
            }
            received = socket.recv_from(&mut buf) => {
                let Ok((len, client)) = received else { continue };
                f.handle(&buf[..len], client).await;
                for _ in 1..BURST {
                    match socket.try_recv_from(&mut buf) {
                        Ok((len, client)) => f.handle(&buf[..len], client).await,
                        Err(_) => break,
                    }
                }
            }
        }
    }
}

async fn open_flow(
    socket: &Arc<UdpSocket>,
    client: SocketAddr,
    target: SocketAddr,
    reverse: &SharedLink,
    shutdown: &watch::Receiver<bool>,
    open: usize,
) -> Option<Arc<UdpSocket>> {
    if open >= MAX_FLOWS {
        tracing::warn!(%client, "relay has {MAX_FLOWS} flows already; dropping datagrams from a new client");
        return None;
    }
    let bind: SocketAddr = if target.is_ipv4() {
        ([127, 0, 0, 1], 0).into()
    } else {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    };
    let upstream = match bind_socket(bind) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(%client, "cannot open an upstream socket: {e}");
            return None;
        }
    };
    if let Err(e) = upstream.connect(target).await {
        tracing::warn!(%target, "cannot reach target: {e}");
        return None;
    }
    let upstream = Arc::new(upstream);
    tokio::spawn(reverse_loop(
        upstream.clone(),
        socket.clone(),
        client,
        reverse.clone(),
        shutdown.clone(),
    ));
    Some(upstream)
}

async fn reverse_loop(
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    reverse: SharedLink,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut queue: DelayQueue<Arc<[u8]>> = DelayQueue::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = sleep_until(queue.next_due()) => {
                let now = Instant::now();
                while let Some(data) = queue.pop_due(now) {
                    let _ = socket.send_to(&data, client).await;
                }
            }
            received = upstream.recv(&mut buf) => {
                // ECONNREFUSED here means the target was not listening when
                // an earlier datagram arrived; the flow stays, it may start.
                let Ok(mut len) = received else { continue };
                for _ in 0..BURST {
                    let now = Instant::now();
                    let fate = lock(&reverse).admit(len, now);
                    let copies = plan(fate, &mut queue, now, || Arc::from(&buf[..len]));
                    for _ in 0..copies {
                        let _ = socket.send_to(&buf[..len], client).await;
                    }
                    match upstream.try_recv(&mut buf) {
                        Ok(n) => len = n,
                        Err(_) => break,
                    }
                }
            }
        }
    }
}
