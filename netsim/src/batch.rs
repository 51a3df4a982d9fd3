//! UDP sockets that move datagrams in batches: `recvmmsg` (and GRO, which
//! hands over several datagrams of one sender in one buffer) on receive, and
//! GSO on send, through quinn-udp. A relay that made two system calls per
//! datagram would measure itself, not the links it simulates.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::Arc;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Socket buffers asked for: bursts of a fast sender must not overflow the
/// default ~208 KB receive buffer while the relay waits for a core. The
/// kernel caps the request at `net.core.rmem_max`/`wmem_max`.
const SOCKET_BUFFER: usize = 4 << 20;
/// Largest buffer GRO fills with coalesced datagrams.
pub const MAX_RECEIVE: usize = 64 * 1024;

/// A tokio UDP socket with quinn-udp's batched I/O.
#[derive(Debug)]
pub struct BatchSocket {
    io: UdpSocket,
    state: UdpSocketState,
}

impl BatchSocket {
    /// Binds `addr`, and connects to `peer` when given (so that only the
    /// peer's datagrams are received).
    pub fn bind(addr: SocketAddr, peer: Option<SocketAddr>) -> io::Result<BatchSocket> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        if let Some(peer) = peer {
            socket.connect(&peer.into())?;
        }
        let state = UdpSocketState::new((&socket).into())?;
        Ok(BatchSocket {
            io: UdpSocket::from_std(socket.into())?,
            state,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// Receives at least one datagram (buffer) into `bufs`; returns how many
    /// buffers were filled, described by `meta`.
    pub async fn recv(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        loop {
            self.io.readable().await?;
            match self.io.try_io(Interest::READABLE, || {
                self.state.recv((&self.io).into(), bufs, meta)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// Sends `contents` to `destination`, as one datagram or, with
    /// `segment_size`, as equal segments (the last may be shorter).
    pub async fn send(
        &self,
        destination: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) {
        let transmit = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size: segment_size.filter(|s| *s < contents.len()),
            src_ip: None,
        };
        loop {
            if self.io.writable().await.is_err() {
                return;
            }
            match self.io.try_io(Interest::WRITABLE, || {
                self.state.send((&self.io).into(), &transmit)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // Other errors (the peer went away) are a lost datagram, as
                // on any network.
                _ => return,
            }
        }
    }

    /// How many segments one send may carry (1 without GSO).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments().max(1)
    }
}

/// Datagrams waiting to leave together: consecutive datagrams for one
/// destination, all of one size but the last, go out in one GSO send.
#[derive(Debug)]
pub struct SendBatch {
    target: Option<(Arc<BatchSocket>, SocketAddr)>,
    segment: usize,
    count: usize,
    closed: bool,
    buf: Vec<u8>,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            target: None,
            segment: 0,
            count: 0,
            closed: false,
            buf: Vec::with_capacity(MAX_RECEIVE),
        }
    }
}

impl SendBatch {
    /// Adds a datagram, sending what is batched first if it cannot join.
    pub async fn push(&mut self, socket: &Arc<BatchSocket>, destination: SocketAddr, data: &[u8]) {
        let fits = match &self.target {
            Some((s, d)) => {
                Arc::ptr_eq(s, socket)
                    && *d == destination
                    && !self.closed
                    && data.len() <= self.segment
                    && self.count < socket.max_segments()
                    && self.buf.len() + data.len() <= MAX_RECEIVE
            }
            None => false,
        };
        if !fits {
            self.flush().await;
            self.target = Some((socket.clone(), destination));
            self.segment = data.len();
        }
        self.buf.extend_from_slice(data);
        self.count += 1;
        // Only the last segment of a GSO send may be shorter.
        self.closed = data.len() < self.segment;
    }

    /// Sends whatever is batched.
    pub async fn flush(&mut self) {
        if let Some((socket, destination)) = self.target.take() {
            let segment = (self.count > 1).then_some(self.segment);
            socket.send(destination, &self.buf, segment).await;
        }
        self.buf.clear();
        self.count = 0;
        self.closed = false;
    }
}
