//! The TCP relay, for comparing TCP-based tunnels with strait's QUIC ones.
//!
//! It adds the link's latency to connection set-up (one round trip before
//! the first byte moves, like a real handshake) and to every chunk, applies
//! the bandwidth limit, and on a partition either stalls the byte stream
//! until the link heals or resets both connections.
//!
//! What it cannot model: loss, duplication and reordering inside TCP. The
//! relay terminates TCP on both sides, so the kernel's retransmission,
//! congestion control and head-of-line blocking never see the link; a lossy
//! link setting is ignored here. Use the UDP relay for loss.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};

use crate::network::{SharedLink, lock};

/// What a partition does to TCP connections through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionMode {
    /// Bytes wait until the link heals (a black hole that TCP rides out).
    #[default]
    Stall,
    /// Both connections are reset, and new ones refused, while cut.
    Reset,
}

const CHUNK: usize = 64 * 1024;
/// Chunks in flight per direction (16 MiB): bounds memory and gives
/// backpressure, yet holds a bandwidth-delay product of 3 Gbit/s at 40 ms
/// one way, so the relay is not what limits a TCP flow.
const IN_FLIGHT: usize = 256;
const PARTITION_POLL: Duration = Duration::from_millis(10);

/// A running TCP relay; dropping it stops accepting and ends every
/// connection through it.
#[derive(Debug)]
pub struct TcpRelay {
    local: SocketAddr,
    shutdown: watch::Sender<bool>,
}

impl TcpRelay {
    pub async fn bind(
        listen: SocketAddr,
        target: SocketAddr,
        forward: SharedLink,
        reverse: SharedLink,
        mode: PartitionMode,
    ) -> io::Result<TcpRelay> {
        let listener = TcpListener::bind(listen).await?;
        let local = listener.local_addr()?;
        let (shutdown, rx) = watch::channel(false);
        tokio::spawn(accept_loop(listener, target, forward, reverse, mode, rx));
        Ok(TcpRelay { local, shutdown })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    forward: SharedLink,
    reverse: SharedLink,
    mode: PartitionMode,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let (f, r, mut stop) = (forward.clone(), reverse.clone(), shutdown.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.changed() => {}
                        _ = relay_connection(client, target, f, r, mode) => {}
                    }
                });
            }
        }
    }
}

fn partitioned(link: &SharedLink) -> bool {
    lock(link).config().partitioned
}

async fn relay_connection(
    client: TcpStream,
    target: SocketAddr,
    forward: SharedLink,
    reverse: SharedLink,
    mode: PartitionMode,
) {
    let _ = client.set_nodelay(true);
    loop {
        let cut = partitioned(&forward) || partitioned(&reverse);
        if !cut {
            break;
        }
        if mode == PartitionMode::Reset {
            let _ = client.set_zero_linger();
            return;
        }
        tokio::time::sleep(PARTITION_POLL).await;
    }
    let rtt = lock(&forward).config().latency + lock(&reverse).config().latency;
    tokio::time::sleep(rtt).await;
    let upstream = match TcpStream::connect(target).await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(%target, "tcp relay cannot reach target: {e}");
            let _ = client.set_zero_linger();
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let reset = Arc::new(Notify::new());
    let (a, b) = tokio::join!(
        pump(cr, uw, forward, mode, reset.clone()),
        pump(ur, cw, reverse, mode, reset.clone()),
    );
    if a.reset || b.reset {
        for end in [a, b] {
            // A write half shuts down (FIN) when dropped; forgetting it
            // leaves the close to the read half, which then resets.
            end.write.forget();
            let _ = end.read.as_ref().set_zero_linger();
        }
    }
}

struct PumpEnd {
    reset: bool,
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
}

/// Moves bytes from `r` to `w` through `link`, half-closing `w` when `r`
/// ends. Ends early, asking for a reset, on a read/write error or (in
/// reset mode) a partition.
async fn pump(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    link: SharedLink,
    mode: PartitionMode,
    reset: Arc<Notify>,
) -> PumpEnd {
    // `None` is the end of a cleanly closed stream; a channel closed without
    // it means the reader failed, and the writer must not send a FIN.
    let (tx, mut rx) = mpsc::channel::<Option<(Instant, Vec<u8>)>>(IN_FLIGHT);
    let reader = async {
        let tx = tx;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = tokio::select! {
                read = r.read(&mut buf) => match read {
                    Ok(0) => return tx.send(None).await.is_err(),
                    Ok(n) => n,
                    Err(_) => return true,
                },
                _ = tokio::time::sleep(PARTITION_POLL), if mode == PartitionMode::Reset => {
                    if partitioned(&link) { return true }
                    continue;
                }
            };
            let at = loop {
                let admitted = lock(&link).admit_stream(n, Instant::now());
                match admitted {
                    Some(at) => break at,
                    None if mode == PartitionMode::Reset => return true,
                    None => tokio::time::sleep(PARTITION_POLL).await,
                }
            };
            if tx.send(Some((at, buf[..n].to_vec()))).await.is_err() {
                return true;
            }
        }
    };
    let writer = async {
        while let Some(msg) = rx.recv().await {
            let Some((at, chunk)) = msg else {
                return w.shutdown().await.is_err();
            };
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            if w.write_all(&chunk).await.is_err() {
                return true;
            }
        }
        true
    };
    let failed = tokio::select! {
        (read_failed, write_failed) = async { tokio::join!(reader, writer) } => {
            read_failed || write_failed
        }
        _ = reset.notified() => true,
    };
    if failed {
        reset.notify_waiters();
    }
    PumpEnd {
        reset: failed,
        read: r,
        write: w,
    }
}
