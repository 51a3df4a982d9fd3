//! The TCP carrier: where UDP to a peer is blocked (corporate egress,
//! on-premises firewalls), a tunnel's QUIC datagrams travel over TLS 1.3
//! over TCP to the peer's tunnel port, each framed by its length. QUIC runs
//! unchanged above it, so streams, probes, lanes, failover, replay and the
//! mesh behave as over UDP; the carrier is a path, not a second protocol.
//! Its TLS is mutual with the same identity checks as QUIC's, so only
//! gateways of the mesh (or a federated one) can open a carrier at all.
//!
//! quinn knows each carrier by a virtual address in 240.0.0.0/4 (reserved,
//! never routed): the socket in front of quinn hands datagrams for those
//! addresses to their carrier and passes the carriers' datagrams up as if
//! received from them. A tunnel's transport is therefore visible in its
//! remote address, and QUIC over UDP to the same peer is another path,
//! whose connection supersedes the carried one when UDP works again.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use std::pin::Pin;

use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::current::CurrentIdentity;

/// ALPN of the carrier's TLS.
pub const ALPN: &[u8] = b"strait-tcp/1";

/// Datagrams queued towards one carrier before more are dropped: loss,
/// which QUIC repairs and its congestion control answers.
const QUEUE: usize = 4096;

/// Time allowed for the TCP connect and for the TLS handshake.
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `addr` is a carrier's virtual address (the tunnel over it runs
/// over TCP).
pub fn is_carried(addr: &SocketAddr) -> bool {
    matches!(addr, SocketAddr::V4(a) if a.ip().octets()[0] >= 240)
}

/// "tcp" or "quic": how a tunnel to `remote` travels.
pub fn transport_of(remote: &SocketAddr) -> &'static str {
    if is_carried(remote) { "tcp" } else { "quic" }
}

/// Every open carrier, and the datagrams they received.
#[derive(Debug)]
pub struct Carriers {
    /// A drill's cut holds for carriers too.
    filter: Arc<crate::drill::PacketFilter>,
    /// Set while any carrier is open: the one thing the UDP data path
    /// reads when there is none.
    active: AtomicBool,
    out: RwLock<HashMap<SocketAddr, mpsc::Sender<Bytes>>>,
    inbound_tx: mpsc::Sender<(SocketAddr, Bytes)>,
    inbound_rx: Mutex<mpsc::Receiver<(SocketAddr, Bytes)>>,
    next: AtomicU32,
    /// quinn's waker while no carrier is open (its queue is not polled
    /// then: a channel poll on every receive cost a third of the
    /// throughput), woken when the first one opens.
    parked: Mutex<Option<Waker>>,
    /// A waker is parked (the endpoint's task keeps one waker, so one kept
    /// copy wakes it whenever it is needed).
    is_parked: AtomicBool,
}

impl Carriers {
    pub fn new(filter: Arc<crate::drill::PacketFilter>) -> Self {
        let (inbound_tx, inbound_rx) = mpsc::channel(QUEUE);
        Carriers {
            filter,
            active: AtomicBool::new(false),
            out: RwLock::new(HashMap::new()),
            inbound_tx,
            inbound_rx: Mutex::new(inbound_rx),
            next: AtomicU32::new(1),
            parked: Mutex::new(None),
            is_parked: AtomicBool::new(false),
        }
    }

    /// Keeps quinn's waker for when a carrier opens.
    fn park(&self, cx: &Context) {
        if self.is_parked.load(Ordering::Acquire) {
            return;
        }
        *self.parked.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        self.is_parked.store(true, Ordering::Release);
    }

    /// Takes over a TLS stream as a carrier; returns its virtual address.
    fn register<S>(self: &Arc<Self>, stream: S, peer: SocketAddr) -> SocketAddr
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let [_, a, b, c] = n.to_be_bytes();
        let virt = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(240, a, b, c), 15443));
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        {
            let mut out = self.out.write().unwrap_or_else(|p| p.into_inner());
            out.insert(virt, tx);
            self.active.store(true, Ordering::Release);
        }
        // quinn may be waiting on UDP alone: from now on it polls us too.
        let parked = self.parked.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.is_parked.store(false, Ordering::Release);
        if let Some(waker) = parked {
            waker.wake();
        }
        let (mut read, write) = tokio::io::split(stream);
        let carriers = self.clone();
        tokio::spawn(async move {
            let mut write = BufWriter::with_capacity(256 << 10, write);
            while let Some(datagram) = rx.recv().await {
                if write_frame(&mut write, &datagram).await.is_err() {
                    break;
                }
                // Everything queued goes in one write; then the flush.
                let mut failed = false;
                while let Ok(more) = rx.try_recv() {
                    if write_frame(&mut write, &more).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed || write.flush().await.is_err() {
                    break;
                }
            }
            let _ = write.shutdown().await;
            carriers.forget(virt);
        });
        let carriers = self.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; u16::MAX as usize];
            while let Ok(len) = read.read_u16().await {
                let len = usize::from(len);
                if read.read_exact(&mut buf[..len]).await.is_err() {
                    break;
                }
                let datagram = Bytes::copy_from_slice(&buf[..len]);
                if carriers.inbound_tx.send((virt, datagram)).await.is_err() {
                    break;
                }
            }
            tracing::debug!(%peer, carrier = %virt, "TCP carrier closed");
            carriers.forget(virt);
        });
        virt
    }

    /// Closes the carrier at `virt` (its TCP connection is shut down once
    /// what is queued was written).
    pub fn close(&self, virt: SocketAddr) {
        self.forget(virt);
    }

    fn forget(&self, virt: SocketAddr) {
        let mut out = self.out.write().unwrap_or_else(|p| p.into_inner());
        out.remove(&virt);
        self.active.store(!out.is_empty(), Ordering::Release);
    }

    /// Opens a carrier to the tunnel port at `to`: TCP, then TLS with
    /// `tls` (mutual, the peer's certificate checked as QUIC would).
    /// Returns the virtual address to dial QUIC to.
    pub async fn dial(
        self: &Arc<Self>,
        to: SocketAddr,
        tls: rustls::ClientConfig,
    ) -> Result<SocketAddr, String> {
        if self.filter.cuts(to, false) {
            return Err(format!("a drill cuts {to}"));
        }
        let tcp = tokio::time::timeout(SETUP_TIMEOUT, TcpStream::connect(to))
            .await
            .map_err(|_| format!("TCP to {to}: no answer within 5 s"))?
            .map_err(|e| format!("TCP to {to}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let name =
            rustls::pki_types::ServerName::try_from("strait-gateway").map_err(|e| e.to_string())?;
        let stream = tokio::time::timeout(SETUP_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| format!("TLS over TCP to {to}: no handshake within 5 s"))?
            .map_err(|e| format!("TLS over TCP to {to}: {}", describe(&e)))?;
        let virt = self.register(stream, to);
        tracing::info!(peer_addr = %to, carrier = %virt, "TCP carrier open (UDP gave no answer)");
        Ok(virt)
    }

    /// Accepts carriers on the tunnel port's TCP twin until the task is
    /// dropped. Each handshake uses the identity in force. Anyone can
    /// connect to the port, so TLS handshakes pass a gate of their own, as
    /// QUIC's do (`strait_core::handshake`): at most `max_handshakes` in
    /// flight, and an address whose handshakes keep failing is closed at
    /// once for a while. TCP proved the address, so there is no Retry; the
    /// gate is apart from QUIC's, so connections held open without a
    /// handshake cannot keep the mesh's QUIC handshakes out.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        identity: Arc<CurrentIdentity>,
        settings: Arc<crate::config::TunnelSettings>,
        notes: crate::note::NoteSender,
    ) {
        use crate::gate::{InFlight, handshake_gate, refusal};
        use strait_core::handshake::Admit;
        let gate = handshake_gate(&settings);
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if self.filter.cuts(peer, true) {
                continue;
            }
            let admit = gate
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .handle_incoming(
                    peer.ip(),
                    true,
                    false,
                    tokio::time::Instant::now().into_std(),
                );
            if matches!(admit, Admit::RefuseBusy | Admit::RefuseStrikes) {
                drop(tcp);
                let (stage, reason) = refusal(admit, "TCP carrier handshakes", &settings, peer);
                let _ = notes.send(crate::note::Note::PeerRefused {
                    addr: peer,
                    stage,
                    reason,
                });
                continue;
            }
            let mut in_flight = InFlight::new(gate.clone(), peer.ip());
            let _ = tcp.set_nodelay(true);
            let config = match identity.get().rustls_server(ALPN) {
                Ok(c) => c,
                Err(e) => {
                    // Ours to fix, not the peer's doing: no strike.
                    in_flight.failed = false;
                    tracing::warn!(%peer, "TCP carrier refused: no TLS configuration: {e}");
                    continue;
                }
            };
            let carriers = self.clone();
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
                match tokio::time::timeout(SETUP_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        in_flight.failed = false;
                        drop(in_flight);
                        let virt = carriers.register(stream, peer);
                        tracing::info!(%peer, carrier = %virt, "TCP carrier accepted");
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "TCP carrier refused: {}", describe(&e));
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TCP carrier refused: no TLS handshake within 5 s")
                    }
                }
            });
        }
    }

    /// Hands a transmit for a carrier to it; false when `transmit` is not
    /// for a carrier (it goes out over UDP).
    pub fn send(&self, transmit: &Transmit) -> bool {
        if !self.active.load(Ordering::Acquire) || !is_carried(&transmit.destination) {
            return false;
        }
        let out = self.out.read().unwrap_or_else(|p| p.into_inner());
        // A carrier gone: the datagrams are lost, as on a cut path.
        let Some(tx) = out.get(&transmit.destination) else {
            return true;
        };
        let size = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        for segment in transmit.contents.chunks(size) {
            let _ = tx.try_send(Bytes::copy_from_slice(segment));
        }
        true
    }

    /// Datagrams the carriers received, as quinn reads a socket; Pending
    /// (the waker kept) when none is waiting.
    pub fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut rx = self.inbound_rx.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            match rx.poll_recv(cx) {
                Poll::Ready(Some((from, datagram))) => {
                    let len = datagram.len().min(bufs[n].len());
                    bufs[n][..len].copy_from_slice(&datagram[..len]);
                    meta[n] = RecvMeta {
                        addr: from,
                        len,
                        stride: len,
                        ecn: None,
                        dst_ip: None,
                    };
                    n += 1;
                }
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        if n > 0 {
            Poll::Ready(Ok(n))
        } else {
            Poll::Pending
        }
    }

    /// Whether any carrier is open (the socket polls them only then).
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }
}

/// quinn's socket with the carriers beside it: datagrams for a carrier's
/// virtual address go to it, and what the carriers received is read
/// alongside the UDP socket (turn about, so neither starves the other).
#[derive(Debug)]
pub struct CarrierSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    carriers: Arc<Carriers>,
    carriers_first: AtomicBool,
}

impl CarrierSocket {
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, carriers: Arc<Carriers>) -> Self {
        CarrierSocket {
            inner,
            carriers,
            carriers_first: AtomicBool::new(false),
        }
    }
}

impl AsyncUdpSocket for CarrierSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if self.carriers.send(transmit) {
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
        // Both are polled whenever nothing is ready, so both wakers are set:
        // a carrier that opens while quinn waits on UDP wakes it.
        if !self.carriers.is_active() {
            let r = self.inner.poll_recv(cx, bufs, meta);
            if r.is_pending() {
                self.carriers.park(cx);
            }
            return r;
        }
        if self.carriers_first.fetch_xor(true, Ordering::Relaxed) {
            if let Poll::Ready(r) = self.carriers.poll_recv(cx, bufs, meta) {
                return Poll::Ready(r);
            }
            self.inner.poll_recv(cx, bufs, meta)
        } else {
            if let Poll::Ready(r) = self.inner.poll_recv(cx, bufs, meta) {
                return Poll::Ready(r);
            }
            self.carriers.poll_recv(cx, bufs, meta)
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

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, datagram: &[u8]) -> io::Result<()> {
    let len = u16::try_from(datagram.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "datagram over 64 KiB"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(datagram).await
}

/// The TLS reason behind a failed carrier handshake.
fn describe(e: &io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(tls) => strait_ca::tls::describe_tls_error(tls),
        None => e.to_string(),
    }
}
