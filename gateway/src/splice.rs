//! Moving bytes between a TCP connection and a QUIC stream, both ways, with
//! half-close carried across (a client that shuts its write side still gets
//! the whole response) and resets carried across. Memory is bounded by one
//! buffer per direction: a slow side slows the other through flow control.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::wire::code;

const BUF: usize = 256 * 1024;

/// How one direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Clean end of stream, passed on as FIN.
    Finished,
    /// Reset or failed, passed on as a reset.
    Reset,
}

/// Byte counts of a finished splice.
#[derive(Debug, Clone, Copy, Default)]
pub struct Moved {
    pub tcp_to_quic: u64,
    pub quic_to_tcp: u64,
    pub reset: bool,
}

/// TCP -> QUIC until EOF (then FIN) or error (then reset).
pub async fn tcp_to_quic(
    tcp: &mut OwnedReadHalf,
    send: &mut quinn::SendStream,
    first: &[u8],
) -> (End, u64) {
    let mut moved = 0u64;
    if !first.is_empty() {
        if send.write_all(first).await.is_err() {
            return (End::Reset, 0);
        }
        moved += first.len() as u64;
    }
    let mut buf = vec![0u8; BUF];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) => {
                let _ = send.finish();
                return (End::Finished, moved);
            }
            Ok(n) => {
                if send.write_all(&buf[..n]).await.is_err() {
                    return (End::Reset, moved);
                }
                moved += n as u64;
            }
            Err(_) => {
                let _ = send.reset(code::RESET);
                return (End::Reset, moved);
            }
        }
    }
}

/// QUIC -> TCP until the stream finishes (then shut down TCP's write side)
/// or is reset (then the caller resets TCP).
pub async fn quic_to_tcp(
    recv: &mut quinn::RecvStream,
    tcp: &mut OwnedWriteHalf,
    first: &[u8],
) -> (End, u64) {
    let mut moved = 0u64;
    if !first.is_empty() {
        if tcp.write_all(first).await.is_err() {
            let _ = recv.stop(code::RESET);
            return (End::Reset, 0);
        }
        moved += first.len() as u64;
    }
    let mut buf = vec![0u8; BUF];
    loop {
        match recv.read(&mut buf).await {
            Ok(Some(n)) => {
                if tcp.write_all(&buf[..n]).await.is_err() {
                    let _ = recv.stop(code::RESET);
                    return (End::Reset, moved);
                }
                moved += n as u64;
            }
            Ok(None) => {
                let _ = tcp.shutdown().await;
                return (End::Finished, moved);
            }
            Err(_) => return (End::Reset, moved),
        }
    }
}

/// Runs both directions; if either ends in a reset, the TCP side is reset
/// (RST, not FIN) and the QUIC side is reset and stopped.
pub async fn splice(
    tcp: tokio::net::TcpStream,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    first_to_quic: &[u8],
    first_to_tcp: &[u8],
) -> Moved {
    let (mut tr, mut tw) = tcp.into_split();
    let (stop_up, stop_down) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());
    let up = async {
        let r = tokio::select! {
            r = tcp_to_quic(&mut tr, &mut send, first_to_quic) => r,
            _ = stop_up.notified() => (End::Reset, 0),
        };
        if r.0 == End::Reset {
            stop_down.notify_one();
        }
        r
    };
    let down = async {
        let r = tokio::select! {
            r = quic_to_tcp(&mut recv, &mut tw, first_to_tcp) => r,
            _ = stop_down.notified() => (End::Reset, 0),
        };
        if r.0 == End::Reset {
            stop_up.notify_one();
        }
        r
    };
    let ((up_end, up_bytes), (down_end, down_bytes)) = tokio::join!(up, down);
    let was_reset = up_end == End::Reset || down_end == End::Reset;
    if was_reset {
        let _ = send.reset(code::RESET);
        let _ = recv.stop(code::RESET);
        reset_tcp(tr, tw);
    }
    Moved {
        tcp_to_quic: up_bytes,
        quic_to_tcp: down_bytes,
        reset: was_reset,
    }
}

/// Closes a TCP connection with RST instead of FIN.
pub fn reset_tcp(read: OwnedReadHalf, write: OwnedWriteHalf) {
    // Dropping a write half sends FIN; forgetting it leaves the close to
    // the read half, which resets with a zero linger.
    write.forget();
    let _ = read.as_ref().set_zero_linger();
}
