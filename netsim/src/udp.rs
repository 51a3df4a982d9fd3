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
        let socket = Arc::new(UdpSocket::bind(listen).await?);
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

async fn forward_loop(
    socket: Arc<UdpSocket>,
    target: SocketAddr,
    forward: SharedLink,
    reverse: SharedLink,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut queue: DelayQueue<(Arc<UdpSocket>, Arc<[u8]>)> = DelayQueue::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = sleep_until(queue.next_due()) => {
                let now = Instant::now();
                while let Some((upstream, data)) = queue.pop_due(now) {
                    let _ = upstream.send(&data).await;
                }
            }
            received = socket.recv_from(&mut buf) => {
                let Ok((len, client)) = received else { continue };
                let upstream = match flows.get(&client) {
                    Some(u) => u.clone(),
                    None => match open_flow(&socket, client, target, &reverse, &shutdown, flows.len()).await {
                        Some(u) => {
                            flows.insert(client, u.clone());
                            u
                        }
                        None => continue,
                    },
                };
                let now = Instant::now();
                let fate = lock(&forward).admit(len, now);
                let copies = plan(fate, &mut queue, now, || (upstream.clone(), Arc::from(&buf[..len])));
                for _ in 0..copies {
                    let _ = upstream.send(&buf[..len]).await;
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
    let upstream = match UdpSocket::bind(bind).await {
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
                let Ok(len) = received else { continue };
                let now = Instant::now();
                let fate = lock(&reverse).admit(len, now);
                let copies = plan(fate, &mut queue, now, || Arc::from(&buf[..len]));
                for _ in 0..copies {
                    let _ = socket.send_to(&buf[..len], client).await;
                }
            }
        }
    }
}
